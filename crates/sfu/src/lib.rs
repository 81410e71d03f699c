//! SFU
