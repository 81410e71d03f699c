//! TURN (RFC 8656, RFC 6156) and STUN Binding server logic, sans-IO.
//!
//! No sockets and no clock: the I/O layer hands in each packet with its 5-tuple and the current time
//! ([`Now`]), and gets back what to send, written into buffers it owns. Relay sockets are bound
//! through the [`RelayProvider`] trait, so this crate decides *when* a relay address is needed and
//! the I/O layer decides *how* to get one.
//!
//! The packet path ([`Server::handle_client`] with ChannelData, [`Server::handle_peer`]) allocates
//! nothing.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod filter;
pub mod group;
pub mod limit;
mod server;

pub use auth::{AuthFailure, Credentials, NonceIssuer};
pub use filter::{Denied, PeerFilter};
pub use group::{Alternates, Group};
pub use icebreaker_stun::Family;
pub use limit::{Rate, RateTable};
pub use server::{
    ClientOutput, Config, ExternalMap, FiveTuple, Now, PeerOutput, RelayBinding, RelayError,
    RelayId, RelayProvider, RelayRequest, Server, Stats, Transport, PEER_HEADROOM,
};
