//! STUN message writer into caller buffers.

use core::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::{
    address, attr, pad4, Error, MessageType, TransactionId, FINGERPRINT_XOR, HEADER_LEN,
    MAGIC_COOKIE,
};

/// Largest value of the 16-bit header length field that is a multiple of 4.
const MAX_BODY: usize = 0xFFFC;

/// Writes one STUN message into a caller buffer.
///
/// Every method returns `Err(Error::BufferTooSmall)` when the attribute does not fit (nothing is
/// written in that case), `Err(Error::BadLength)` when the message would exceed the 16-bit length
/// field, and `Err(Error::AfterIntegrity)` for an attribute RFC 8489 does not allow after
/// MESSAGE-INTEGRITY (only MESSAGE-INTEGRITY-SHA256 / FINGERPRINT), MESSAGE-INTEGRITY-SHA256
/// (only FINGERPRINT) or FINGERPRINT (nothing). The header length is kept up to date after each
/// call, so [`MessageWriter::as_bytes`] is always a complete message.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    /// 0: normal, 1: after MI, 2: after MI-SHA256, 3: after FINGERPRINT.
    state: u8,
    pad: u8,
}

impl<'b> MessageWriter<'b> {
    /// Start a message: writes the 20-byte header with length 0.
    pub fn new(buf: &'b mut [u8], typ: MessageType, tid: &TransactionId) -> Result<Self, Error> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let (t, rest) = header.split_at_mut(2);
        t.copy_from_slice(&typ.raw().to_be_bytes());
        let (l, rest) = rest.split_at_mut(2);
        l.copy_from_slice(&[0, 0]);
        let (c, id) = rest.split_at_mut(4);
        c.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        id.copy_from_slice(tid);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            state: 0,
            pad: 0,
        })
    }

    /// Byte used to pad attribute values to a multiple of 4 (default 0; RFC 8489 lets senders
    /// use any value, RFC 5769 test vectors use 0x20).
    pub fn set_padding(&mut self, byte: u8) {
        self.pad = byte;
    }

    /// Append an attribute header for a `vlen`-byte value plus padding, update the header length
    /// and return the offset of the value. Nothing is modified on error.
    fn begin(&mut self, typ: u16, vlen: usize) -> Result<usize, Error> {
        let allowed = match self.state {
            0 => true,
            1 => matches!(typ, attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT),
            2 => typ == attr::FINGERPRINT,
            _ => false,
        };
        if !allowed {
            return Err(Error::AfterIntegrity);
        }
        let vlen16 = u16::try_from(vlen).map_err(|_| Error::BadLength)?;
        let start = self.len;
        let value_start = start + 4;
        let end = value_start + pad4(vlen);
        let body = end - HEADER_LEN;
        if body > MAX_BODY {
            return Err(Error::BadLength);
        }
        let body16 = u16::try_from(body).map_err(|_| Error::BadLength)?;
        let region = self.buf.get_mut(start..end).ok_or(Error::BufferTooSmall)?;
        let (hdr, rest) = region.split_at_mut(4);
        let [t0, t1] = typ.to_be_bytes();
        let [l0, l1] = vlen16.to_be_bytes();
        hdr.copy_from_slice(&[t0, t1, l0, l1]);
        if let Some(padding) = rest.get_mut(vlen..) {
            padding.fill(self.pad);
        }
        if let Some(l) = self.buf.get_mut(2..4) {
            l.copy_from_slice(&body16.to_be_bytes());
        }
        self.len = end;
        match typ {
            attr::MESSAGE_INTEGRITY => self.state = 1,
            attr::MESSAGE_INTEGRITY_SHA256 => self.state = 2,
            attr::FINGERPRINT => self.state = 3,
            _ => {}
        }
        Ok(value_start)
    }

    /// Append an attribute (value padded to a multiple of 4).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> Result<(), Error> {
        self.attr_slot(typ, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Reserve `len` bytes for an attribute value and return them to be filled in place
    /// (zero-copy DATA). The slot is *not* cleared: it holds whatever the buffer held before
    /// (so data received in place at the right offset survives); padding is written.
    pub fn attr_slot(&mut self, typ: u16, len: usize) -> Result<&mut [u8], Error> {
        let at = self.begin(typ, len)?;
        self.buf.get_mut(at..at + len).ok_or(Error::BufferTooSmall)
    }

    /// Append a 4-byte big-endian attribute (LIFETIME, PRIORITY, ...).
    pub fn u32_attr(&mut self, typ: u16, v: u32) -> Result<(), Error> {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Append an XOR-*-ADDRESS attribute (RFC 8489 §14.2).
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), Error> {
        let mut v = [0u8; 20];
        let mut tid = [0u8; 12];
        if let Some(t) = self.buf.get(8..HEADER_LEN) {
            tid.copy_from_slice(t);
        }
        let n = address::encode(addr, Some(&tid), &mut v);
        self.attr(typ, v.get(..n).ok_or(Error::BufferTooSmall)?)
    }

    /// Append a MAPPED-ADDRESS style (non-XOR) address attribute.
    pub fn address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), Error> {
        let mut v = [0u8; 20];
        let n = address::encode(addr, None, &mut v);
        self.attr(typ, v.get(..n).ok_or(Error::BufferTooSmall)?)
    }

    /// Append ERROR-CODE. `code` must be 300..=699 and `reason` at most 763 bytes, else
    /// `Err(BadAttributeValue(attr::ERROR_CODE))`.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        if !(300..=699).contains(&code) || reason.len() > 763 {
            return Err(Error::BadAttributeValue(attr::ERROR_CODE));
        }
        let slot = self.attr_slot(attr::ERROR_CODE, 4 + reason.len())?;
        let (head, tail) = slot.split_at_mut(4);
        head.copy_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        tail.copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// Append UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), Error> {
        let n = types.len().checked_mul(2).ok_or(Error::BadLength)?;
        let slot = self.attr_slot(attr::UNKNOWN_ATTRIBUTES, n)?;
        for (d, t) in slot.chunks_exact_mut(2).zip(types) {
            d.copy_from_slice(&t.to_be_bytes());
        }
        Ok(())
    }

    /// Append CHANNEL-NUMBER (not range-checked).
    pub fn channel_number(&mut self, ch: u16) -> Result<(), Error> {
        let [a, b] = ch.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    /// Append REQUESTED-TRANSPORT.
    pub fn requested_transport(&mut self, proto: u8) -> Result<(), Error> {
        self.attr(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0])
    }

    /// Append LIFETIME.
    pub fn lifetime(&mut self, secs: u32) -> Result<(), Error> {
        self.u32_attr(attr::LIFETIME, secs)
    }

    /// Append MESSAGE-INTEGRITY: HMAC-SHA1 with `key` over the message so far (the header length
    /// already counting this attribute).
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), Error> {
        let mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
            .map_err(|_| Error::BadAttributeValue(attr::MESSAGE_INTEGRITY))?;
        self.mac_attr(attr::MESSAGE_INTEGRITY, mac)
    }

    /// Append MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), Error> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|_| Error::BadAttributeValue(attr::MESSAGE_INTEGRITY_SHA256))?;
        self.mac_attr(attr::MESSAGE_INTEGRITY_SHA256, mac)
    }

    fn mac_attr<M: Mac>(&mut self, typ: u16, mut mac: M) -> Result<(), Error> {
        let n = <M as hmac::digest::OutputSizeUser>::output_size();
        let at = self.begin(typ, n)?;
        mac.update(self.buf.get(..at - 4).ok_or(Error::BufferTooSmall)?);
        let tag = mac.finalize().into_bytes();
        self.buf
            .get_mut(at..at + n)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(&tag);
        Ok(())
    }

    /// Append FINGERPRINT (CRC-32 of the message so far XOR 0x5354554e). Must be last.
    pub fn fingerprint(&mut self) -> Result<(), Error> {
        let at = self.begin(attr::FINGERPRINT, 4)?;
        let crc =
            crc32fast::hash(self.buf.get(..at - 4).ok_or(Error::BufferTooSmall)?) ^ FINGERPRINT_XOR;
        self.buf
            .get_mut(at..at + 4)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Total length written so far (header included).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The message written so far (always a complete, parseable message).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Finish; returns the total length written.
    pub fn finish(self) -> usize {
        self.len
    }
}
