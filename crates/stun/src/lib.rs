//! Sans-IO STUN/TURN codec for Icebreaker.
//!
//! * [`Message`] is a zero-copy, validated view over one STUN message (RFC 8489) in a `&[u8]`,
//!   with typed getters for the STUN, TURN (RFC 8656, 6156, 6062) and ICE (RFC 8445) attributes.
//! * [`MessageWriter`] writes a message into a caller-provided buffer, including
//!   MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
//! * [`ChannelData`] handles TURN ChannelData framing (RFC 8656 §12.4).
//! * [`is_stun`], [`is_channel_data`] and [`stream_frame_len`] demultiplex datagrams and streams.
//! * [`long_term_key`] and [`rest_password`] derive credentials.
//!
//! Nothing on the parse / verify / write paths allocates, and no input can make it panic.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
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

mod address;
mod channel;
mod credentials;
mod message;
mod writer;

use core::fmt;

pub use address::{decode_address, decode_xor_address};
pub use channel::{
    write_channel_data_header, ChannelData, CHANNEL_MAX, CHANNEL_MAX_RFC8656, CHANNEL_MIN,
};
pub use credentials::{long_term_key, long_term_key_sha256, rest_password};
pub use message::{AttributeIter, Family, IntegrityError, IntegrityKind, Message, RawAttribute};
pub use writer::MessageWriter;

/// The fixed magic cookie of RFC 5389/8489 (bytes 4..8 of every STUN message).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN message header.
pub const HEADER_LEN: usize = 20;
/// The 96-bit transaction ID.
pub type TransactionId = [u8; 12];

/// The value XORed into the CRC-32 of FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// STUN / TURN method numbers.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656).
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh (RFC 8656).
    pub const REFRESH: u16 = 0x004;
    /// Send indication (RFC 8656).
    pub const SEND: u16 = 0x006;
    /// Data indication (RFC 8656).
    pub const DATA: u16 = 0x007;
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: u16 = 0x009;
    /// Connect (RFC 6062).
    pub const CONNECT: u16 = 0x000A;
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: u16 = 0x000B;
    /// ConnectionAttempt (RFC 6062).
    pub const CONNECTION_ATTEMPT: u16 = 0x000C;

    /// Human-readable name of a method ("ALLOCATE", ...), "unknown" otherwise.
    pub fn name(m: u16) -> &'static str {
        match m {
            BINDING => "BINDING",
            ALLOCATE => "ALLOCATE",
            REFRESH => "REFRESH",
            SEND => "SEND",
            DATA => "DATA",
            CREATE_PERMISSION => "CREATE-PERMISSION",
            CHANNEL_BIND => "CHANNEL-BIND",
            CONNECT => "CONNECT",
            CONNECTION_BIND => "CONNECTION-BIND",
            CONNECTION_ATTEMPT => "CONNECTION-ATTEMPT",
            _ => "unknown",
        }
    }
}

/// Attribute types of RFC 8489, 8656, 6156, 6062 and 8445 (ICE).
pub mod attr {
    /// MAPPED-ADDRESS (RFC 8489).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME (RFC 8489).
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (RFC 8489).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE (RFC 8489).
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES (RFC 8489).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER (RFC 8656).
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (RFC 8656).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS (RFC 8656).
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA (RFC 8656).
    pub const DATA: u16 = 0x0013;
    /// REALM (RFC 8489).
    pub const REALM: u16 = 0x0014;
    /// NONCE (RFC 8489).
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS (RFC 8656).
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 / 6156).
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT (RFC 8656).
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT (RFC 8656).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT (RFC 8656).
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM (RFC 8489).
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH (RFC 8489).
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS (RFC 8489).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN (RFC 8656).
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// PRIORITY (RFC 8445).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (RFC 8445).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// PADDING (RFC 5780).
    pub const PADDING: u16 = 0x0026;
    /// RESPONSE-PORT (RFC 5780).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// CONNECTION-ID (RFC 6062).
    pub const CONNECTION_ID: u16 = 0x002A;
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656).
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    /// ADDRESS-ERROR-CODE (RFC 8656).
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// PASSWORD-ALGORITHMS (RFC 8489).
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    /// ALTERNATE-DOMAIN (RFC 8489).
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    /// ICMP (RFC 8656).
    pub const ICMP: u16 = 0x8004;
    /// SOFTWARE (RFC 8489).
    pub const SOFTWARE: u16 = 0x8022;
    /// ALTERNATE-SERVER (RFC 8489).
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// FINGERPRINT (RFC 8489).
    pub const FINGERPRINT: u16 = 0x8028;
    /// ICE-CONTROLLED (RFC 8445).
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE-CONTROLLING (RFC 8445).
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// RESPONSE-ORIGIN (RFC 5780).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780).
    pub const OTHER_ADDRESS: u16 = 0x802C;

    /// Comprehension-required range (0x0000..=0x7FFF), RFC 8489 §14.
    pub fn is_comprehension_required(t: u16) -> bool {
        t < 0x8000
    }

    /// Human-readable name of an attribute type ("XOR-PEER-ADDRESS", ...), "unknown" otherwise.
    pub fn name(t: u16) -> &'static str {
        match t {
            MAPPED_ADDRESS => "MAPPED-ADDRESS",
            USERNAME => "USERNAME",
            MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
            ERROR_CODE => "ERROR-CODE",
            UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
            CHANNEL_NUMBER => "CHANNEL-NUMBER",
            LIFETIME => "LIFETIME",
            XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
            DATA => "DATA",
            REALM => "REALM",
            NONCE => "NONCE",
            XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
            REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
            EVEN_PORT => "EVEN-PORT",
            REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
            DONT_FRAGMENT => "DONT-FRAGMENT",
            MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
            PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
            USERHASH => "USERHASH",
            XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
            RESERVATION_TOKEN => "RESERVATION-TOKEN",
            PRIORITY => "PRIORITY",
            USE_CANDIDATE => "USE-CANDIDATE",
            PADDING => "PADDING",
            RESPONSE_PORT => "RESPONSE-PORT",
            CONNECTION_ID => "CONNECTION-ID",
            ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
            ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
            PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
            ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
            ICMP => "ICMP",
            SOFTWARE => "SOFTWARE",
            ALTERNATE_SERVER => "ALTERNATE-SERVER",
            FINGERPRINT => "FINGERPRINT",
            ICE_CONTROLLED => "ICE-CONTROLLED",
            ICE_CONTROLLING => "ICE-CONTROLLING",
            RESPONSE_ORIGIN => "RESPONSE-ORIGIN",
            OTHER_ADDRESS => "OTHER-ADDRESS",
            _ => "unknown",
        }
    }
}

/// Message class (the C1/C0 bits of the message type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Request (0b00).
    Request,
    /// Indication (0b01).
    Indication,
    /// Success response (0b10).
    Success,
    /// Error response (0b11).
    Error,
}

/// The 14-bit STUN message type (method + class interleaved, RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType(u16);

impl MessageType {
    /// Combine a 12-bit method (higher bits are dropped) and a class.
    pub const fn new(method: u16, class: Class) -> Self {
        let m = method & 0x0FFF;
        let c: u16 = match class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        let raw = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7);
        MessageType(raw)
    }

    /// From the first two bytes of a message. The two top bits (always zero in STUN) are masked off.
    pub fn from_raw(raw: u16) -> Self {
        MessageType(raw & 0x3FFF)
    }

    /// The 14-bit wire value.
    pub fn raw(self) -> u16 {
        self.0
    }

    /// The 12-bit method.
    pub fn method(self) -> u16 {
        let r = self.0;
        (r & 0x000F) | ((r >> 1) & 0x0070) | ((r >> 2) & 0x0F80)
    }

    /// The class.
    pub fn class(self) -> Class {
        match ((self.0 >> 4) & 0b01) | ((self.0 >> 7) & 0b10) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Codec errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than a header.
    TooShort,
    /// Not a STUN message (top bits or magic cookie wrong), or not a ChannelData / STUN frame.
    NotStun,
    /// Header length field does not match the buffer, is not a multiple of 4, or the message
    /// would exceed the 16-bit length field; ChannelData length exceeds the buffer.
    BadLength,
    /// An attribute TLV overruns the message.
    BadAttribute,
    /// Typed getter / writer: an attribute value has the wrong size or content (attribute type).
    BadAttributeValue(u16),
    /// Writer: the output buffer is too small.
    BufferTooSmall,
    /// A text attribute is not valid UTF-8 (attribute type).
    BadUtf8(u16),
    /// Writer: an attribute after MESSAGE-INTEGRITY(-SHA256)/FINGERPRINT where RFC 8489 forbids it.
    AfterIntegrity,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooShort => f.write_str("STUN: message too short"),
            Error::NotStun => f.write_str("STUN: not a STUN message"),
            Error::BadLength => f.write_str("STUN: bad length"),
            Error::BadAttribute => f.write_str("STUN: attribute overruns message"),
            Error::BadAttributeValue(t) => {
                write!(f, "STUN: malformed {} ({t:#06x}) attribute", attr::name(*t))
            }
            Error::BufferTooSmall => f.write_str("STUN: output buffer too small"),
            Error::BadUtf8(t) => write!(f, "STUN: {} ({t:#06x}) is not UTF-8", attr::name(*t)),
            Error::AfterIntegrity => {
                f.write_str("STUN: attribute not allowed after MESSAGE-INTEGRITY/FINGERPRINT")
            }
        }
    }
}

impl std::error::Error for Error {}

// ---------------------------------------------------------------------------------------------
// Small non-panicking byte helpers.

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(s.try_into().ok()?))
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

#[inline]
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Round up to a multiple of 4.
#[inline]
pub(crate) const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

// ---------------------------------------------------------------------------------------------
// Demultiplexing.

/// The standard reason phrase of a STUN/TURN error code (RFC 8489 §14.8, RFC 8656 §18.8,
/// RFC 6062, RFC 8445); `""` for a code with none.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Mobility Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        487 => "Role Conflict",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "",
    }
}

/// Cheap STUN check on the first bytes (RFC 7983 / RFC 8656 §12): at least 20 bytes, the two
/// top bits zero and the magic cookie present. Does not validate the rest.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && matches!(buf.first(), Some(b) if b & 0xC0 == 0)
        && be32(buf, 4) == Some(MAGIC_COOKIE)
}

/// Cheap ChannelData check: at least 4 bytes and the first byte in 0x40..=0x7F
/// (channel numbers 0x4000..=0x7FFF, see [`CHANNEL_MAX`]).
pub fn is_channel_data(buf: &[u8]) -> bool {
    buf.len() >= 4 && matches!(buf.first(), Some(0x40..=0x7F))
}

/// Stream framing (TURN over TCP/TLS): total length of the frame at the start of `buf`
/// (STUN: 20 + length; ChannelData: 4 + length rounded up to a multiple of 4).
///
/// Returns `Ok(None)` if fewer than 4 bytes are available to decide, and `Err(Error::NotStun)`
/// for bytes that are neither (first byte not `0b00xxxxxx` / `0x40..=0x7F`, STUN length not a
/// multiple of 4, or — once 8 bytes are available — a wrong magic cookie).
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let is_stun_start = b0 & 0xC0 == 0;
    let is_cd_start = (0x40..=0x7F).contains(&b0);
    if !is_stun_start && !is_cd_start {
        return Err(Error::NotStun);
    }
    let Some(len) = be16(buf, 2) else {
        return Ok(None);
    };
    let len = usize::from(len);
    if is_stun_start {
        if len % 4 != 0 {
            return Err(Error::NotStun);
        }
        if let Some(cookie) = be32(buf, 4) {
            if cookie != MAGIC_COOKIE {
                return Err(Error::NotStun);
            }
        }
        Ok(Some(HEADER_LEN + len))
    } else {
        Ok(Some(pad4(4 + len)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn message_type_roundtrip_all() {
        for raw in 0u16..0x4000 {
            let t = MessageType::from_raw(raw);
            assert_eq!(MessageType::new(t.method(), t.class()), t);
        }
        let t = MessageType::new(method::ALLOCATE, Class::Error);
        assert_eq!(t.raw(), 0x0113);
        assert_eq!(
            MessageType::new(method::BINDING, Class::Success).raw(),
            0x0101
        );
        assert_eq!(
            MessageType::new(method::SEND, Class::Indication).raw(),
            0x0016
        );
        assert_eq!(
            MessageType::new(method::DATA, Class::Indication).raw(),
            0x0017
        );
        assert_eq!(MessageType::new(0x0FFF, Class::Error).raw(), 0x3FFF);
    }

    #[test]
    fn demux() {
        let mut b = [0u8; 20];
        b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(is_stun(&b));
        assert!(!is_stun(&b[..19]));
        b[0] = 0x80;
        assert!(!is_stun(&b));
        assert!(is_channel_data(&[0x40, 0, 0, 0]));
        assert!(is_channel_data(&[0x4F, 0xFF, 0, 0]));
        assert!(is_channel_data(&[0x7F, 0xFF, 0, 0]));
        assert!(!is_channel_data(&[0x80, 0, 0, 0]));
        assert!(!is_channel_data(&[0x40, 0, 0]));
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&[]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0x00, 0x07]),
            Err(Error::NotStun)
        );
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42]),
            Ok(Some(28))
        );
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x43]),
            Err(Error::NotStun)
        );
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x4F, 0xFF, 0x00, 0x00]), Ok(Some(4)));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x08]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0xFF]), Err(Error::NotStun));
        assert_eq!(stream_frame_len(&[0x80, 0, 0, 0]), Err(Error::NotStun));
        assert_eq!(stream_frame_len(&[0x80, 0, 0, 0]), Err(Error::NotStun));
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0xFF, 0xFC]),
            Ok(Some(20 + 0xFFFC))
        );
        assert_eq!(
            stream_frame_len(&[0x40, 0x01, 0xFF, 0xFF]),
            Ok(Some(0x10004))
        );
    }
}
