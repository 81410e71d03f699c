//! Icebreaker server: the I/O around the sans-IO protocol crates.

pub mod client;
pub mod config;
pub mod credentials;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod tls;
