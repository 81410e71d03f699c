//! Zero-copy STUN message view.

use core::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::address::{decode_address, decode_xor_address};
use crate::{
    attr, be16, be32, pad4, Class, Error, MessageType, TransactionId, FINGERPRINT_XOR, HEADER_LEN,
    MAGIC_COOKIE,
};

/// Maximum USERNAME length in bytes (RFC 8489 §14.3).
const MAX_USERNAME: usize = 513;
/// Maximum length in bytes of REALM, NONCE, SOFTWARE and the ERROR-CODE reason phrase
/// ("fewer than 128 characters", up to 763 bytes, RFC 8489 §14).
const MAX_TEXT: usize = 763;

/// One attribute as found in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub typ: u16,
    /// Attribute value (without padding).
    pub value: &'a [u8],
    /// Offset of the 4-byte attribute header in the message.
    pub offset: usize,
}

/// Which integrity attribute was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated).
    Sha256,
}

/// Integrity verification failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityError {
    /// Neither MESSAGE-INTEGRITY nor MESSAGE-INTEGRITY-SHA256 is present.
    Missing,
    /// The HMAC does not match.
    Mismatch,
    /// The integrity attribute has an invalid length.
    Malformed,
}

impl core::fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IntegrityError::Missing => "STUN: message integrity missing",
            IntegrityError::Mismatch => "STUN: message integrity mismatch",
            IntegrityError::Malformed => "STUN: malformed message integrity attribute",
        })
    }
}

impl std::error::Error for IntegrityError {}

/// Address family (REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (0x01).
    V4,
    /// IPv6 (0x02).
    V6,
}

impl Family {
    /// The wire value (0x01 / 0x02).
    pub fn to_u8(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0x01 => Some(Family::V4),
            0x02 => Some(Family::V6),
            _ => None,
        }
    }
}

/// Iterator over all attributes of a [`Message`], in order.
#[derive(Clone, Debug)]
pub struct AttributeIter<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        let off = self.off;
        let typ = be16(self.buf, off)?;
        let len = usize::from(be16(self.buf, off.checked_add(2)?)?);
        let start = off.checked_add(4)?;
        let value = self.buf.get(start..start.checked_add(len)?)?;
        self.off = start.checked_add(pad4(len))?;
        Some(RawAttribute {
            typ,
            value,
            offset: off,
        })
    }
}

/// Iterator applying RFC 8489 §14.5–14.7: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256
/// and FINGERPRINT count, after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT, after FINGERPRINT
/// nothing.
#[derive(Clone, Debug)]
struct VisibleIter<'a> {
    inner: AttributeIter<'a>,
    /// 0: normal, 1: after MI, 2: after MI-SHA256, 3: after FINGERPRINT.
    state: u8,
}

impl<'a> Iterator for VisibleIter<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        loop {
            if self.state >= 3 {
                return None;
            }
            let a = self.inner.next()?;
            let allowed = match self.state {
                0 => true,
                1 => matches!(a.typ, attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT),
                _ => a.typ == attr::FINGERPRINT,
            };
            if !allowed {
                continue;
            }
            match a.typ {
                attr::MESSAGE_INTEGRITY => self.state = 1,
                attr::MESSAGE_INTEGRITY_SHA256 => self.state = 2,
                attr::FINGERPRINT => self.state = 3,
                _ => {}
            }
            return Some(a);
        }
    }
}

/// A validated, zero-copy view over exactly one STUN message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    tid: &'a TransactionId,
    typ: MessageType,
}

impl<'a> Message<'a> {
    /// Validates the header (top bits, cookie, length % 4, length == buf.len() - 20) and that all
    /// attributes frame exactly (each padded to 4). Does not validate attribute contents.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::TooShort);
        }
        let raw = be16(buf, 0).ok_or(Error::TooShort)?;
        if raw & 0xC000 != 0 || be32(buf, 4) != Some(MAGIC_COOKIE) {
            return Err(Error::NotStun);
        }
        let len = usize::from(be16(buf, 2).ok_or(Error::TooShort)?);
        if len % 4 != 0 || Some(len) != buf.len().checked_sub(HEADER_LEN) {
            return Err(Error::BadLength);
        }
        let tid: &TransactionId = buf
            .get(8..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::TooShort)?;
        let mut off = HEADER_LEN;
        while off < buf.len() {
            let alen = usize::from(be16(buf, off + 2).ok_or(Error::BadAttribute)?);
            let end = off + 4 + pad4(alen);
            if end > buf.len() {
                return Err(Error::BadAttribute);
            }
            off = end;
        }
        Ok(Message {
            buf,
            tid,
            typ: MessageType::from_raw(raw),
        })
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Message type.
    pub fn typ(&self) -> MessageType {
        self.typ
    }

    /// Method (12 bits).
    pub fn method(&self) -> u16 {
        self.typ.method()
    }

    /// Class.
    pub fn class(&self) -> Class {
        self.typ.class()
    }

    /// Transaction ID.
    pub fn transaction_id(&self) -> &'a TransactionId {
        self.tid
    }

    /// All attributes in order, including any after MESSAGE-INTEGRITY/FINGERPRINT.
    pub fn attributes(&self) -> AttributeIter<'a> {
        AttributeIter {
            buf: self.buf,
            off: HEADER_LEN,
        }
    }

    /// Attributes that count per RFC 8489 (anything after MESSAGE-INTEGRITY except
    /// MESSAGE-INTEGRITY-SHA256/FINGERPRINT, after MESSAGE-INTEGRITY-SHA256 except FINGERPRINT,
    /// and after FINGERPRINT is ignored).
    fn visible(&self) -> VisibleIter<'a> {
        VisibleIter {
            inner: self.attributes(),
            state: 0,
        }
    }

    /// First occurrence of an attribute, ignoring attributes that follow MESSAGE-INTEGRITY
    /// (except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT), MESSAGE-INTEGRITY-SHA256 (except
    /// FINGERPRINT) and FINGERPRINT (RFC 8489 §14.5–14.7).
    pub fn get(&self, typ: u16) -> Option<RawAttribute<'a>> {
        self.visible().find(|a| a.typ == typ)
    }

    fn text(&self, typ: u16, max: usize) -> Result<Option<&'a str>, Error> {
        match self.get(typ) {
            None => Ok(None),
            Some(a) if a.value.len() > max => Err(Error::BadAttributeValue(typ)),
            Some(a) => core::str::from_utf8(a.value)
                .map(Some)
                .map_err(|_| Error::BadUtf8(typ)),
        }
    }

    fn fixed<const N: usize>(&self, typ: u16) -> Result<Option<[u8; N]>, Error> {
        match self.get(typ) {
            None => Ok(None),
            Some(a) => a
                .value
                .try_into()
                .map(Some)
                .map_err(|_| Error::BadAttributeValue(typ)),
        }
    }

    /// USERNAME (UTF-8, at most 513 bytes).
    pub fn username(&self) -> Result<Option<&'a str>, Error> {
        self.text(attr::USERNAME, MAX_USERNAME)
    }

    /// REALM (UTF-8, at most 763 bytes).
    pub fn realm(&self) -> Result<Option<&'a str>, Error> {
        self.text(attr::REALM, MAX_TEXT)
    }

    /// NONCE (raw bytes, at most 763).
    pub fn nonce(&self) -> Result<Option<&'a [u8]>, Error> {
        match self.get(attr::NONCE) {
            None => Ok(None),
            Some(a) if a.value.len() > MAX_TEXT => Err(Error::BadAttributeValue(attr::NONCE)),
            Some(a) => Ok(Some(a.value)),
        }
    }

    /// SOFTWARE (UTF-8, at most 763 bytes).
    pub fn software(&self) -> Result<Option<&'a str>, Error> {
        self.text(attr::SOFTWARE, MAX_TEXT)
    }

    /// ERROR-CODE as (code 300..=699, reason phrase).
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, Error> {
        const T: u16 = attr::ERROR_CODE;
        let Some(a) = self.get(T) else {
            return Ok(None);
        };
        let (Some(&class), Some(&number), Some(reason)) =
            (a.value.get(2), a.value.get(3), a.value.get(4..))
        else {
            return Err(Error::BadAttributeValue(T));
        };
        let class = class & 0x07;
        if !(3..=6).contains(&class) || number > 99 || reason.len() > MAX_TEXT {
            return Err(Error::BadAttributeValue(T));
        }
        let reason = core::str::from_utf8(reason).map_err(|_| Error::BadUtf8(T))?;
        Ok(Some((u16::from(class) * 100 + u16::from(number), reason)))
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> Result<Option<u32>, Error> {
        Ok(self.fixed::<4>(attr::LIFETIME)?.map(u32::from_be_bytes))
    }

    /// REQUESTED-TRANSPORT protocol number (17 = UDP, 6 = TCP).
    pub fn requested_transport(&self) -> Result<Option<u8>, Error> {
        Ok(self
            .fixed::<4>(attr::REQUESTED_TRANSPORT)?
            .map(|[p, _, _, _]| p))
    }

    /// CHANNEL-NUMBER (not range-checked; see [`crate::CHANNEL_MIN`]).
    pub fn channel_number(&self) -> Result<Option<u16>, Error> {
        Ok(self
            .fixed::<4>(attr::CHANNEL_NUMBER)?
            .map(|[a, b, _, _]| u16::from_be_bytes([a, b])))
    }

    /// DATA value.
    pub fn data(&self) -> Option<&'a [u8]> {
        self.get(attr::DATA).map(|a| a.value)
    }

    /// EVEN-PORT: `Some(reserve_next)` (the R bit).
    pub fn even_port(&self) -> Result<Option<bool>, Error> {
        Ok(self.fixed::<1>(attr::EVEN_PORT)?.map(|[b]| b & 0x80 != 0))
    }

    /// RESERVATION-TOKEN.
    pub fn reservation_token(&self) -> Result<Option<[u8; 8]>, Error> {
        self.fixed::<8>(attr::RESERVATION_TOKEN)
    }

    fn family(&self, typ: u16) -> Result<Option<Family>, Error> {
        match self.fixed::<4>(typ)? {
            None => Ok(None),
            Some([f, _, _, _]) => Family::from_u8(f)
                .map(Some)
                .ok_or(Error::BadAttributeValue(typ)),
        }
    }

    /// REQUESTED-ADDRESS-FAMILY (0x01 V4, 0x02 V6, anything else is `BadAttributeValue`).
    pub fn requested_address_family(&self) -> Result<Option<Family>, Error> {
        self.family(attr::REQUESTED_ADDRESS_FAMILY)
    }

    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
    pub fn additional_address_family(&self) -> Result<Option<Family>, Error> {
        self.family(attr::ADDITIONAL_ADDRESS_FAMILY)
    }

    /// DONT-FRAGMENT present.
    pub fn dont_fragment(&self) -> bool {
        self.get(attr::DONT_FRAGMENT).is_some()
    }

    fn xor_addr(&self, typ: u16) -> Result<Option<SocketAddr>, Error> {
        match self.get(typ) {
            None => Ok(None),
            Some(a) => decode_xor_address(a.value, self.tid)
                .map(Some)
                .map_err(|_| Error::BadAttributeValue(typ)),
        }
    }

    fn xor_addrs(&self, typ: u16) -> impl Iterator<Item = Result<SocketAddr, Error>> + 'a {
        let tid = self.tid;
        self.visible().filter(move |a| a.typ == typ).map(move |a| {
            decode_xor_address(a.value, tid).map_err(|_| Error::BadAttributeValue(typ))
        })
    }

    /// XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, Error> {
        self.xor_addr(attr::XOR_MAPPED_ADDRESS)
    }

    /// First XOR-RELAYED-ADDRESS.
    pub fn xor_relayed_address(&self) -> Result<Option<SocketAddr>, Error> {
        self.xor_addr(attr::XOR_RELAYED_ADDRESS)
    }

    /// All XOR-RELAYED-ADDRESS attributes (dual allocation, RFC 8656 §18.6).
    pub fn xor_relayed_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, Error>> + 'a {
        self.xor_addrs(attr::XOR_RELAYED_ADDRESS)
    }

    /// All XOR-PEER-ADDRESS attributes.
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, Error>> + 'a {
        self.xor_addrs(attr::XOR_PEER_ADDRESS)
    }

    /// ALTERNATE-SERVER (300 Try Alternate), if present.
    pub fn alternate_server(&self) -> Result<Option<SocketAddr>, Error> {
        match self.get(attr::ALTERNATE_SERVER) {
            None => Ok(None),
            Some(a) => decode_address(a.value)
                .map(Some)
                .map_err(|_| Error::BadAttributeValue(attr::ALTERNATE_SERVER)),
        }
    }

    /// MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, Error> {
        match self.get(attr::MAPPED_ADDRESS) {
            None => Ok(None),
            Some(a) => decode_address(a.value)
                .map(Some)
                .map_err(|_| Error::BadAttributeValue(attr::MAPPED_ADDRESS)),
        }
    }

    /// Contents of UNKNOWN-ATTRIBUTES (empty if absent; a trailing odd byte is ignored).
    pub fn unknown_attributes(&self) -> impl Iterator<Item = u16> + 'a {
        self.get(attr::UNKNOWN_ATTRIBUTES)
            .map(|a| a.value)
            .unwrap_or(&[])
            .chunks_exact(2)
            .filter_map(|c| match *c {
                [a, b] => Some(u16::from_be_bytes([a, b])),
                _ => None,
            })
    }

    /// Comprehension-required attribute types (< 0x8000, among the attributes that count, see
    /// [`Message::get`]) for which `known(t)` is false, deduplicated, in message order. Writes up
    /// to `out.len()` of them into `out` and returns how many were written.
    pub fn unknown_comprehension_required(
        &self,
        known: impl Fn(u16) -> bool,
        out: &mut [u16],
    ) -> usize {
        let mut n = 0;
        for a in self.visible() {
            if n >= out.len() {
                break;
            }
            if !attr::is_comprehension_required(a.typ) || known(a.typ) {
                continue;
            }
            if out.get(..n).is_some_and(|w| w.contains(&a.typ)) {
                continue;
            }
            if let Some(slot) = out.get_mut(n) {
                *slot = a.typ;
                n += 1;
            }
        }
        n
    }

    /// FINGERPRINT present (among the attributes that count, see [`Message::get`]).
    pub fn has_fingerprint(&self) -> bool {
        self.get(attr::FINGERPRINT).is_some()
    }

    /// True only if FINGERPRINT is present, is the last attribute, and its CRC matches.
    pub fn check_fingerprint(&self) -> bool {
        let Some(a) = self.get(attr::FINGERPRINT) else {
            return false;
        };
        let Ok(value) = <[u8; 4]>::try_from(a.value) else {
            return false;
        };
        if a.offset + 8 != self.buf.len() {
            return false;
        }
        let Some(covered) = self.buf.get(..a.offset) else {
            return false;
        };
        crc32fast::hash(covered) ^ FINGERPRINT_XOR == u32::from_be_bytes(value)
    }

    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 present (among the attributes that count).
    pub fn has_integrity(&self) -> bool {
        self.visible().any(|a| {
            matches!(
                a.typ,
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256
            )
        })
    }

    /// Verify MESSAGE-INTEGRITY (HMAC-SHA1) or MESSAGE-INTEGRITY-SHA256 with `key` (long-term key
    /// = MD5(user:realm:pass), see [`crate::long_term_key`]; short-term = password bytes).
    ///
    /// When both are present, MESSAGE-INTEGRITY-SHA256 is checked (RFC 8489 §9.1.3 / §9.2.4:
    /// "If the MESSAGE-INTEGRITY-SHA256 attribute is present ... Otherwise MESSAGE-INTEGRITY").
    /// MESSAGE-INTEGRITY-SHA256 may be truncated to 16..=32 bytes (multiple of 4).
    /// Constant-time compare; no allocation (the header length field is adjusted by hashing
    /// it piecewise).
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, IntegrityError> {
        let mut sha1 = None;
        let mut sha256 = None;
        for a in self.visible() {
            match a.typ {
                attr::MESSAGE_INTEGRITY if sha1.is_none() => sha1 = Some(a),
                attr::MESSAGE_INTEGRITY_SHA256 if sha256.is_none() => sha256 = Some(a),
                _ => {}
            }
        }
        if let Some(a) = sha256 {
            let n = a.value.len();
            if !(16..=32).contains(&n) || n % 4 != 0 {
                return Err(IntegrityError::Malformed);
            }
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .map_err(|_| IntegrityError::Malformed)?;
            self.hash_prefix(&mut mac, a)?;
            let tag = mac.finalize().into_bytes();
            let ok = tag.get(..n).map(|t| t.ct_eq(a.value));
            match ok {
                Some(c) if bool::from(c) => Ok(IntegrityKind::Sha256),
                _ => Err(IntegrityError::Mismatch),
            }
        } else if let Some(a) = sha1 {
            if a.value.len() != 20 {
                return Err(IntegrityError::Malformed);
            }
            let mut mac =
                <Hmac<Sha1> as Mac>::new_from_slice(key).map_err(|_| IntegrityError::Malformed)?;
            self.hash_prefix(&mut mac, a)?;
            let tag = mac.finalize().into_bytes();
            if bool::from(tag.as_slice().ct_eq(a.value)) {
                Ok(IntegrityKind::Sha1)
            } else {
                Err(IntegrityError::Mismatch)
            }
        } else {
            Err(IntegrityError::Missing)
        }
    }

    /// Feed the message up to (excluding) the integrity attribute `a` to `mac`, with the header
    /// length field set as if `a` were the last attribute.
    fn hash_prefix(&self, mac: &mut impl Mac, a: RawAttribute<'a>) -> Result<(), IntegrityError> {
        let end = a.offset + 4 + pad4(a.value.len());
        let adj = end
            .checked_sub(HEADER_LEN)
            .and_then(|l| u16::try_from(l).ok())
            .ok_or(IntegrityError::Malformed)?;
        let (Some(typ), Some(rest)) = (self.buf.get(..2), self.buf.get(4..a.offset)) else {
            return Err(IntegrityError::Malformed);
        };
        mac.update(typ);
        mac.update(&adj.to_be_bytes());
        mac.update(rest);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::{method, MessageWriter};

    /// Write USERNAME then a MESSAGE-INTEGRITY-SHA256 truncated to `n` bytes, computed
    /// independently of the verifier (HMAC over the message with its final length).
    fn truncated(n: usize, key: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(method::BINDING, Class::Request),
            &[1; 12],
        )
        .unwrap();
        w.attr(attr::USERNAME, b"user").unwrap();
        let start = w.len();
        w.attr_slot(attr::MESSAGE_INTEGRITY_SHA256, n).unwrap();
        let len = w.finish();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(&buf[..start]);
        let tag = mac.finalize().into_bytes();
        buf[start + 4..start + 4 + n].copy_from_slice(&tag[..n]);
        buf[..len].to_vec()
    }

    #[test]
    fn truncated_sha256_integrity() {
        for n in [16, 20, 24, 28, 32] {
            let b = truncated(n, b"key");
            let m = Message::parse(&b).unwrap();
            assert_eq!(m.verify_integrity(b"key"), Ok(IntegrityKind::Sha256), "{n}");
            assert_eq!(m.verify_integrity(b"kex"), Err(IntegrityError::Mismatch));
            let mut t = b.clone();
            *t.last_mut().unwrap() ^= 1;
            let m = Message::parse(&t).unwrap();
            assert_eq!(m.verify_integrity(b"key"), Err(IntegrityError::Mismatch));
        }
        // Full writer output equals the independent computation.
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(method::BINDING, Class::Request),
            &[1; 12],
        )
        .unwrap();
        w.attr(attr::USERNAME, b"user").unwrap();
        w.message_integrity_sha256(b"key").unwrap();
        let n = w.finish();
        assert_eq!(&buf[..n], &truncated(32, b"key")[..]);
        for n in [12, 14, 18, 30] {
            let b = truncated(n, b"key");
            let m = Message::parse(&b).unwrap();
            assert_eq!(
                m.verify_integrity(b"key"),
                Err(IntegrityError::Malformed),
                "{n}"
            );
        }
    }
}
