//! Behavioural tests of the TURN state machine (RFC 8656, RFC 8489, RFC 6156), driving `Server`
//! in memory with a fake relay provider and an explicit clock.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod allocate;
mod alternate;
mod auth;
mod binding;
mod channel;
mod data_path;
mod even_port;
mod expiry;
mod external;
mod family;
mod fuzz;
mod limits;
mod permission;
mod quota;
mod refresh;
mod shards;
