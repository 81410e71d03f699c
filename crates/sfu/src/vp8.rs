//! The frame size of a VP8 keyframe (RFC 6386 §9.1), to know each simulcast layer's resolution.

/// Width and height of a VP8 key frame, from the first bytes of the frame (the depacketized
/// payload). `None` for interframes and anything malformed.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    // 3-byte frame tag: bit 0 of the first byte is 0 for a key frame.
    let tag = frame.get(..10)?;
    if tag[0] & 1 != 0 {
        return None;
    }
    // Start code.
    if tag[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([tag[6], tag[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([tag[8], tag[9]]) & 0x3fff);
    if w == 0 || h == 0 {
        return None;
    }
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keyframe_and_refuses_the_rest() {
        // Key frame tag (show_frame, version 0), start code, 640 × 480 with scale bits set.
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&(640u16 | 0x4000).to_le_bytes());
        f.extend_from_slice(&480u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        assert_eq!(keyframe_size(&f), Some((640, 480)));
        let mut inter = f.clone();
        inter[0] |= 1;
        assert_eq!(keyframe_size(&inter), None);
        let mut bad = f.clone();
        bad[4] = 0;
        assert_eq!(keyframe_size(&bad), None);
        assert_eq!(keyframe_size(&f[..9]), None);
        assert_eq!(keyframe_size(&[]), None);
    }
}
