//! TURN ChannelData (RFC 8656 §12.4).

use crate::{attr, be16, Error};

/// Lowest valid channel number.
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number accepted: 0x7FFF, the range of RFC 5766. RFC 8656 narrowed the range
/// to 0x4000..=0x7FFF ([`CHANNEL_MAX_RFC8656`]), but RFC 5766 clients still in use (coturn's
/// `turnutils_uclient` among them) pick numbers up to 0x7FFF, and on a TURN port nothing else
/// needs first bytes 0x50..=0x7F, so they are accepted for interoperability.
pub const CHANNEL_MAX: u16 = 0x7FFF;
/// Highest channel number of RFC 8656; what new clients should use.
pub const CHANNEL_MAX_RFC8656: u16 = 0x4FFF;

/// A ChannelData message: 2-byte channel number, 2-byte length, data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number (0x4000..=0x7FFF).
    pub channel: u16,
    /// Application data (without padding).
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parse a ChannelData message. `buf` may be longer than 4 + length (padding on UDP is
    /// allowed, extra bytes are ignored). Errors: fewer than 4 bytes → `TooShort`; channel not
    /// in 0x4000..=0x7FFF → `NotStun`; length exceeds `buf` → `BadLength`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let (Some(channel), Some(len)) = (be16(buf, 0), be16(buf, 2)) else {
            return Err(Error::TooShort);
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(Error::NotStun);
        }
        let data = buf.get(4..4 + usize::from(len)).ok_or(Error::BadLength)?;
        Ok(ChannelData { channel, data })
    }

    /// Length of the frame without padding (4 + data length).
    pub fn len(&self) -> usize {
        4 + self.data.len()
    }

    /// True if the data is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Write a ChannelData header for `len` bytes of data into `buf[0..4]`.
///
/// Errors: `buf` shorter than 4 → `BufferTooSmall`; channel outside 0x4000..=0x7FFF →
/// `BadAttributeValue(attr::CHANNEL_NUMBER)`; `len` > 0xFFFF → `BadLength`.
pub fn write_channel_data_header(buf: &mut [u8], channel: u16, len: usize) -> Result<(), Error> {
    let hdr = buf.get_mut(..4).ok_or(Error::BufferTooSmall)?;
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
        return Err(Error::BadAttributeValue(attr::CHANNEL_NUMBER));
    }
    let len = u16::try_from(len).map_err(|_| Error::BadLength)?;
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    hdr.copy_from_slice(&[c0, c1, l0, l1]);
    Ok(())
}
