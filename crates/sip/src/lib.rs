//! Sans-IO SIP and SDP for Icebreaker's WebRTC ↔ SIP gateway.
//!
//! No sockets, no clock, no randomness: the caller passes bytes in and gets bytes (or typed
//! values) out, and supplies whatever a protocol step needs from the outside world (tags,
//! branches, cnonces, addresses). Parsing is strict and bounded ([`Limits`]), and no input can
//! make it panic: every malformed message is an [`Error`] whose [`Error::status_code`] is the
//! answer to send (400, 505, 513).
//!
//! * [`Message`] (RFC 3261 §7, §20, §25): parse one message from a datagram or WebSocket frame
//!   ([`Message::parse`]), or frame a TCP/TLS stream ([`frame`], with RFC 5626 CRLF
//!   keep-alives); headers kept in order with their original names ([`Headers`]); typed
//!   getters ([`Message::call_id`], [`Message::cseq`], [`Message::vias`], [`Message::contacts`],
//!   …); what an edge proxy and a UA do to a message ([`Message::push_via`],
//!   [`Message::pop_via`], [`Message::push_route`], [`Message::pop_route`],
//!   [`Message::add_record_route`], [`Message::add_path`],
//!   [`Message::decrement_max_forwards`], [`Message::response`], [`error_response`]);
//!   serialization back to bytes ([`Message::to_bytes`], Content-Length recomputed).
//! * [`SipUri`] (RFC 3261 §19.1): `sip:`/`sips:` URIs, parse and display.
//! * [`digest`]: HTTP digest authentication (RFC 2617, RFC 8760: MD5 and SHA-256,
//!   `qop=auth`), client answers and server-side verification.
//! * [`sdp`]: session descriptions (RFC 8866) that keep every line in order, and the two steps
//!   of the media bridge: a plain-RTP offer from a WebRTC offer, and the chosen codec and
//!   remote address from a plain answer.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod digest;
mod header;
mod message;
pub mod sdp;
mod text;
mod uri;

use core::fmt;

pub use header::{
    canonical_name, split_list, CSeq, Contact, Contacts, Header, Headers, NameAddr, Params, Via,
};
pub use message::{
    error_response, frame, keep_alive, reason_phrase, Framed, KeepAlive, Limits, MaxForwards,
    Message, Method, StartLine,
};
pub use text::{quote, unescape};
pub use uri::{Scheme, SipUri, Uri};

/// Everything that can go wrong, on every path of this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The message (or stream frame) is larger than [`Limits::max_message`].
    TooLarge,
    /// More header lines than [`Limits::max_headers`].
    TooManyHeaders,
    /// A header (unfolded) or start line is longer than [`Limits::max_line`].
    LineTooLong,
    /// The header section does not end with an empty line.
    NoHeaderEnd,
    /// A line of the head is not UTF-8, or has a bare CR.
    BadLine,
    /// The request or status line is malformed.
    BadStartLine,
    /// The SIP version is not `SIP/2.0` (answer 505).
    BadVersion,
    /// A header line has no colon or its name is not a token.
    BadHeaderName,
    /// A required header is missing.
    MissingHeader(&'static str),
    /// A header's value does not match its grammar (the header's name).
    BadHeader(&'static str),
    /// CSeq's method differs from the request's.
    CSeqMismatch,
    /// Content-Length is malformed, or is larger than the body that came with it.
    BadContentLength,
    /// A stream message has no Content-Length.
    MissingContentLength,
    /// A URI does not match RFC 3261 §19.1 / RFC 3986.
    BadUri,
    /// An SDP body is malformed (what).
    BadSdp(&'static str),
    /// A digest challenge or credentials are malformed (what).
    BadDigest(&'static str),
    /// A digest algorithm or qop this crate does not implement.
    UnsupportedDigest,
    /// The offer has no usable audio section.
    NoAudio,
    /// No codec both sides can do without transcoding.
    NoCommonCodec,
}

impl Error {
    /// The SIP status code to answer a request that failed with this error: 505 for a version
    /// other than 2.0, 513 for an oversized message, 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::BadVersion => 505,
            Error::TooLarge => 513,
            _ => 400,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge => f.write_str("SIP: message too large"),
            Error::TooManyHeaders => f.write_str("SIP: too many headers"),
            Error::LineTooLong => f.write_str("SIP: line too long"),
            Error::NoHeaderEnd => f.write_str("SIP: header section does not end"),
            Error::BadLine => f.write_str("SIP: bad line (not UTF-8 or bare CR)"),
            Error::BadStartLine => f.write_str("SIP: malformed start line"),
            Error::BadVersion => f.write_str("SIP: version not supported"),
            Error::BadHeaderName => f.write_str("SIP: malformed header line"),
            Error::MissingHeader(h) => write!(f, "SIP: missing {h}"),
            Error::BadHeader(h) => write!(f, "SIP: malformed {h}"),
            Error::CSeqMismatch => f.write_str("SIP: CSeq method does not match"),
            Error::BadContentLength => f.write_str("SIP: bad Content-Length"),
            Error::MissingContentLength => f.write_str("SIP: Content-Length required on streams"),
            Error::BadUri => f.write_str("SIP: malformed URI"),
            Error::BadSdp(w) => write!(f, "SDP: malformed {w}"),
            Error::BadDigest(w) => write!(f, "digest: malformed {w}"),
            Error::UnsupportedDigest => f.write_str("digest: unsupported algorithm or qop"),
            Error::NoAudio => f.write_str("SDP: no audio section"),
            Error::NoCommonCodec => f.write_str("SDP: no common codec"),
        }
    }
}

impl std::error::Error for Error {}
