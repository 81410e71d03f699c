//! ChannelData and stream framing.
#![allow(clippy::unwrap_used)]

mod common;

use icebreaker_stun::{
    is_channel_data, stream_frame_len, write_channel_data_header, ChannelData, Error, CHANNEL_MAX,
    CHANNEL_MIN,
};
use proptest::prelude::*;

#[test]
fn channel_data_parse_and_write() {
    let mut buf = [0u8; 16];
    write_channel_data_header(&mut buf, 0x4001, 5).unwrap();
    buf[4..9].copy_from_slice(b"hello");
    assert_eq!(&buf[..4], &[0x40, 0x01, 0x00, 0x05]);
    assert!(is_channel_data(&buf));
    // UDP: trailing padding / garbage is ignored.
    let cd = ChannelData::parse(&buf).unwrap();
    assert_eq!(cd.channel, 0x4001);
    assert_eq!(cd.data, b"hello");
    assert_eq!(cd.len(), 9);
    assert!(!cd.is_empty());
    assert_eq!(ChannelData::parse(&buf[..9]).unwrap(), cd);
    assert_eq!(ChannelData::parse(&buf[..8]), Err(Error::BadLength));
    assert_eq!(ChannelData::parse(&buf[..3]), Err(Error::TooShort));
    assert_eq!(ChannelData::parse(&[]), Err(Error::TooShort));
    // Empty data.
    let cd = ChannelData::parse(&[0x4f, 0xff, 0, 0]).unwrap();
    assert_eq!((cd.channel, cd.data), (0x4fff, &[][..]));
    assert!(cd.is_empty());
    // Channel out of range.
    for ch in [0x0000u16, 0x3fff, 0x8000, 0xbfff, 0xffff] {
        let b = [(ch >> 8) as u8, ch as u8, 0, 0];
        assert_eq!(ChannelData::parse(&b), Err(Error::NotStun), "{ch:#x}");
        assert_eq!(
            write_channel_data_header(&mut buf, ch, 0),
            Err(Error::BadAttributeValue(
                icebreaker_stun::attr::CHANNEL_NUMBER
            ))
        );
    }
    assert_eq!(
        write_channel_data_header(&mut buf[..3], CHANNEL_MIN, 0),
        Err(Error::BufferTooSmall)
    );
    assert_eq!(
        write_channel_data_header(&mut buf, CHANNEL_MIN, 65_536),
        Err(Error::BadLength)
    );
    write_channel_data_header(&mut buf, CHANNEL_MIN, 65_535).unwrap();
    assert_eq!(&buf[..4], &[0x40, 0x00, 0xff, 0xff]);
}

#[test]
fn stream_frame_len_stun_channel_data_and_garbage() {
    // STUN: 20 + length.
    for v in [
        common::RFC5769_REQUEST,
        common::RFC5769_IPV4_RESPONSE,
        common::RFC5769_IPV6_RESPONSE,
        common::RFC5769_LONG_TERM_REQUEST,
    ] {
        for avail in 4..=v.len() {
            assert_eq!(stream_frame_len(&v[..avail]), Ok(Some(v.len())));
        }
        assert_eq!(stream_frame_len(&v[..3]), Ok(None));
        // Two frames back to back: the first one is reported.
        let mut two = v.to_vec();
        two.extend_from_slice(v);
        assert_eq!(stream_frame_len(&two), Ok(Some(v.len())));
    }
    // ChannelData: padded to 4 on streams.
    for (len, frame) in [
        (0usize, 4usize),
        (1, 8),
        (3, 8),
        (4, 8),
        (5, 12),
        (65_535, 65_540),
    ] {
        let mut b = [0u8; 4];
        write_channel_data_header(&mut b, 0x4abc, len).unwrap();
        assert_eq!(stream_frame_len(&b), Ok(Some(frame)), "len {len}");
    }
    // Not enough to decide.
    assert_eq!(stream_frame_len(&[]), Ok(None));
    assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00]), Ok(None));
    assert_eq!(stream_frame_len(&[0x00]), Ok(None));
    // Garbage.
    assert_eq!(
        stream_frame_len(b"\xffOST / HTTP/1.1\r\n"),
        Err(Error::NotStun)
    );
    // Note: "GET " (0x47...) is indistinguishable from a ChannelData header by its first bytes.
    assert_eq!(
        stream_frame_len(b"GET / HTTP/1.1\r\n"),
        Ok(Some(4 + 0x5420))
    );
    assert_eq!(
        stream_frame_len(&[0x16, 0x03, 0x01, 0x02, 0x00]),
        Err(Error::NotStun)
    ); // TLS (len%4)
    assert_eq!(
        stream_frame_len(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]),
        Err(Error::NotStun)
    );
    assert_eq!(stream_frame_len(&[0x80]), Err(Error::NotStun));
    assert_eq!(stream_frame_len(&[0x80, 0, 0, 0]), Err(Error::NotStun));
    assert_eq!(stream_frame_len(&[0xff, 0xff]), Err(Error::NotStun));
}

proptest! {
    #[test]
    fn channel_data_roundtrip(ch in CHANNEL_MIN..=CHANNEL_MAX, data in proptest::collection::vec(any::<u8>(), 0..300), extra in 0usize..4) {
        let mut buf = vec![0u8; 4 + data.len() + extra];
        write_channel_data_header(&mut buf, ch, data.len()).unwrap();
        buf[4..4 + data.len()].copy_from_slice(&data);
        let cd = ChannelData::parse(&buf).unwrap();
        prop_assert_eq!(cd.channel, ch);
        prop_assert_eq!(cd.data, &data[..]);
        prop_assert_eq!(stream_frame_len(&buf), Ok(Some((4 + data.len() + 3) & !3)));
    }

    #[test]
    fn channel_data_random_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(cd) = ChannelData::parse(&b) {
            prop_assert!(cd.data.len() + 4 <= b.len());
            prop_assert!((CHANNEL_MIN..=CHANNEL_MAX).contains(&cd.channel));
        }
        if let Ok(Some(n)) = stream_frame_len(&b) {
            prop_assert!(n >= 4);
        }
    }
}
