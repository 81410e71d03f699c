//! G.711 (ITU-T G.711, 1988) µ-law and A-law companding between 8-bit codes and 16-bit linear
//! PCM, as the media bridge needs it to mix a group's browsers toward a phone.
//!
//! The arithmetic is that of ITU-T G.711 (the reference of ITU-T G.191's software tools and
//! of the classic Sun `g711.c`): µ-law on 14-bit magnitudes with a bias of 33, A-law on 13-bit
//! magnitudes with 13-segment companding; decoding gives the middle of each quantization step,
//! scaled to 16 bits. The decoding tables are computed at compile time; encoding is table-free.
//!
//! Every code decodes to a value that encodes back to the same code, except µ-law's "negative
//! zero" `0x7F`, which decodes to 0 like `0xFF` and so encodes back as `0xFF`.

/// µ-law code of silence (linear 0).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code of silence (the smallest positive step, linear +8).
pub const ALAW_SILENCE: u8 = 0xD5;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0f) as i32) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut out = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    out
}

static ULAW_TABLE: [i16; 256] = table(false);
static ALAW_TABLE: [i16; 256] = table(true);

/// The linear sample of a µ-law code.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// The linear sample of an A-law code.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// The segment (0–7) of a magnitude whose segment `s` ends at `first_end << s`, or 8 beyond.
#[inline]
fn segment(magnitude: i32, first_end: i32) -> u8 {
    // Segment s holds magnitudes up to first_end * 2^s (first_end = 2^k - 1).
    let m = (magnitude | first_end) as u32; // >= first_end: segment 0 at least
    let bits = 32 - m.leading_zeros(); // bit length
    let first_bits = 32 - (first_end as u32).leading_zeros();
    (bits - first_bits).min(8) as u8
}

/// The µ-law code of a linear sample.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7f
    } else {
        0xff
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, 0x3f);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let code = (seg << 4) | ((v >> (seg + 1)) & 0x0f) as u8;
    code ^ mask
}

/// The A-law code of a linear sample.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, 0x1f);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let shift = if seg < 2 { 1 } else { seg };
    let code = (seg << 4) | ((v >> shift) & 0x0f) as u8;
    code ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x7f), 0, "negative zero");
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xfe), 8);
        assert_eq!(ulaw_decode(0x7e), -8);
        assert_eq!(ulaw_decode(0xce), 988);
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(1000), 0xce);
        assert_eq!(ulaw_encode(-1000), 0x4e);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(32124), 0x80);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xaa);
        assert_eq!(alaw_encode(i16::MIN), 0x2a);
        assert_eq!(alaw_encode(1000), 0xfa);
        assert_eq!(alaw_decode(0xfa), 1008);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let a = alaw_encode(alaw_decode(c));
            assert_eq!(a, c, "A-law {c:#04x}");
            let u = ulaw_encode(ulaw_decode(c));
            if c == 0x7f {
                assert_eq!(u, 0xff);
            } else {
                assert_eq!(u, c, "µ-law {c:#04x}");
            }
        }
    }

    #[test]
    fn every_sample_quantizes_within_its_step() {
        // Monotonic, and the error is at most half a step (the step grows with the segment).
        let (mut prev_u, mut prev_a) = (i16::MIN, i16::MIN);
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            assert!(u >= prev_u && a >= prev_a, "monotonic at {s}");
            prev_u = u;
            prev_a = a;
            // The step is about 1/16 of the magnitude (at least 16), the decoded value its
            // middle; both laws clip near full scale (µ-law at 32124, A-law at 32256).
            let mag = i32::from(s).abs();
            let bound = if mag > 32000 { 700 } else { (mag / 16).max(16) };
            let u_err = (i32::from(u) - i32::from(s)).abs();
            let a_err = (i32::from(a) - i32::from(s)).abs();
            assert!(u_err <= bound, "µ-law {s} → {u}");
            assert!(a_err <= bound, "A-law {s} → {a}");
        }
    }

    /// Fingerprints of every encoding and decoding, computed with an independent G.711
    /// implementation (CPython's `audioop`): `h = (h * 31 + x) mod 2^61` over all inputs in order.
    #[test]
    fn matches_an_independent_implementation() {
        fn fold(h: u64, x: u64) -> u64 {
            ((u128::from(h) * 31 + u128::from(x)) % (1 << 61)) as u64
        }
        let (mut eu, mut ea) = (0u64, 0u64);
        for s in i16::MIN..=i16::MAX {
            eu = fold(eu, u64::from(ulaw_encode(s)));
            ea = fold(ea, u64::from(alaw_encode(s)));
        }
        assert_eq!((eu, ea), (499975221767368896, 1232707667603357696));
        let (mut du, mut da) = (0u64, 0u64);
        for c in 0..=255u8 {
            du = fold(du, u64::from(ulaw_decode(c) as u16));
            da = fold(da, u64::from(alaw_decode(c) as u16));
        }
        assert_eq!((du, da), (327396752116350976, 2039393524683636736));
    }

    #[test]
    fn silence_codes() {
        assert_eq!(ulaw_encode(0), ULAW_SILENCE);
        assert_eq!(alaw_encode(0), ALAW_SILENCE);
    }
}
