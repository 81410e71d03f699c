//! (XOR-)address encoding, RFC 8489 §14.1 / §14.2.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::{array, attr, be16, Error, TransactionId, MAGIC_COOKIE};

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Decode a MAPPED-ADDRESS style value (family, port, address; 8 bytes for IPv4, 20 for IPv6).
///
/// Errors with `BadAttributeValue(attr::MAPPED_ADDRESS)`; the typed getters of [`crate::Message`]
/// report their own attribute type instead.
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, Error> {
    decode(value, None).ok_or(Error::BadAttributeValue(attr::MAPPED_ADDRESS))
}

/// Decode an XOR-MAPPED-ADDRESS style value (RFC 8489 §14.2) with the message's transaction ID.
///
/// Errors with `BadAttributeValue(attr::XOR_MAPPED_ADDRESS)`; the typed getters of
/// [`crate::Message`] report their own attribute type instead.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, Error> {
    decode(value, Some(tid)).ok_or(Error::BadAttributeValue(attr::XOR_MAPPED_ADDRESS))
}

fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    let (c, t) = mask.split_at_mut(4);
    c.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    t.copy_from_slice(tid);
    mask
}

fn decode(value: &[u8], tid: Option<&TransactionId>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = be16(value, 2)?;
    let mask = tid.map(xor_mask);
    if mask.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match (family, value.len()) {
        (FAMILY_V4, 8) => {
            let mut a: [u8; 4] = array(value, 4)?;
            if let Some(m) = &mask {
                a.iter_mut().zip(m).for_each(|(b, m)| *b ^= m);
            }
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port)))
        }
        (FAMILY_V6, 20) => {
            let mut a: [u8; 16] = array(value, 4)?;
            if let Some(m) = &mask {
                a.iter_mut().zip(m).for_each(|(b, m)| *b ^= m);
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// Encode an (XOR-)address value into `out`; returns the value length (8 or 20).
pub(crate) fn encode(addr: SocketAddr, tid: Option<&TransactionId>, out: &mut [u8; 20]) -> usize {
    let mask = tid.map(xor_mask);
    let mut port = addr.port();
    if mask.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let (family, ip, n): (u8, [u8; 16], usize) = match addr {
        SocketAddr::V4(a) => {
            let mut ip = [0u8; 16];
            for (d, s) in ip.iter_mut().zip(a.ip().octets()) {
                *d = s;
            }
            (FAMILY_V4, ip, 4)
        }
        SocketAddr::V6(a) => (FAMILY_V6, a.ip().octets(), 16),
    };
    let (head, rest) = out.split_at_mut(4);
    head.copy_from_slice(&[0, family, (port >> 8) as u8, port as u8]);
    for (i, (d, s)) in rest.iter_mut().zip(ip).enumerate().take(n) {
        *d = match &mask {
            Some(m) => s ^ m.get(i).copied().unwrap_or(0),
            None => s,
        };
    }
    4 + n
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let tid = [7u8; 12];
        for a in [
            "192.0.2.1:32853".parse::<SocketAddr>(),
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse(),
            "0.0.0.0:0".parse(),
            "[::]:65535".parse(),
        ] {
            let a = a.unwrap();
            let mut buf = [0u8; 20];
            let n = encode(a, Some(&tid), &mut buf);
            assert_eq!(decode_xor_address(&buf[..n], &tid), Ok(a));
            let n = encode(a, None, &mut buf);
            assert_eq!(decode_address(&buf[..n]), Ok(a));
        }
        assert!(decode_address(&[0, 1, 0, 0, 1, 2, 3]).is_err());
        assert!(decode_address(&[0, 3, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(decode_address(&[0, 2, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(decode_address(&[]).is_err());
    }
}
