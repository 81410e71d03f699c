//! Icebreaker server: the I/O around the sans-IO protocol crates.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod credentials;
pub mod gate;
pub mod history;
pub mod http;
pub mod metrics;
mod relay;
pub mod serve;
pub mod sfu;
pub mod signal;
pub mod sip;
pub mod sys;
pub mod tls;
mod udp;
pub mod web;
