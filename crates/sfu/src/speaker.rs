//! Active-speaker detection from the audio-level header extension (RFC 6464).
//!
//! Each packet's level is `-dBov` (0 = loudest, 127 = silence). A participant's *loudness* is
//! `127 - level` smoothed with a short exponential moving average (time constant
//! [`SMOOTHING`]), and counts only above [`VOICE_THRESHOLD`] (background noise stays below it).
//! Every tick the loudest voice is the candidate; it becomes the active speaker once it has been
//! the candidate for [`HOLD`] in a row, so that a cough or a single loud word does not flip
//! the room's layout. When nobody speaks the last speaker stays.

use std::time::{Duration, Instant};

/// Time constant of the loudness average.
pub const SMOOTHING: Duration = Duration::from_millis(300);
/// Loudness (127 − dBov) under which a participant does not count as speaking (−60 dBov).
pub const VOICE_THRESHOLD: f64 = 67.0;
/// How long a new candidate must stay the loudest before it becomes the speaker.
pub const HOLD: Duration = Duration::from_millis(800);
/// Loudness within this of the loudest counts as "as loud" (two people talking at once do not
/// reset each other's claim).
pub const MARGIN: f64 = 4.0;

/// One participant's smoothed loudness.
#[derive(Debug, Clone, Default)]
pub struct Loudness {
    value: f64,
    at: Option<Instant>,
}

impl Loudness {
    /// Adds one packet's level (`-dBov`, 0..=127; larger values are clamped).
    pub fn add(&mut self, now: Instant, level: i8) {
        let loud = 127.0 - f64::from(level.clamp(0, 127));
        self.value = match self.at {
            None => loud,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let a = 1.0 - (-dt / SMOOTHING.as_secs_f64()).exp();
                self.value + a * (loud - self.value)
            }
        };
        self.at = Some(now);
    }

    /// The loudness at `now` (decays to 0 when no packet arrives: a muted or gone sender).
    pub fn value(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.value * (-dt / SMOOTHING.as_secs_f64()).exp()
            }
        }
    }
}

/// The room's speaker state machine, over participant keys `K`.
#[derive(Debug, Clone)]
pub struct SpeakerDetector<K> {
    current: Option<K>,
    candidate: Option<(K, Instant)>,
}

impl<K> Default for SpeakerDetector<K> {
    fn default() -> Self {
        SpeakerDetector {
            current: None,
            candidate: None,
        }
    }
}

impl<K: Copy + PartialEq> SpeakerDetector<K> {
    /// The active speaker.
    pub fn current(&self) -> Option<K> {
        self.current
    }

    /// One tick with every participant's loudness now; returns the new speaker when it changed.
    pub fn tick(&mut self, now: Instant, levels: &[(K, f64)]) -> Option<K> {
        let level_of = |k: K| {
            levels
                .iter()
                .find(|(x, _)| *x == k)
                .map_or(0.0, |(_, v)| *v)
        };
        let mut loudest: Option<(K, f64)> = None;
        for &(k, v) in levels {
            if v >= VOICE_THRESHOLD && loudest.is_none_or(|(_, best)| v > best) {
                loudest = Some((k, v));
            }
        }
        let Some((mut k, best)) = loudest else {
            self.candidate = None;
            return None;
        };
        // As loud as the loudest: the current speaker keeps the floor, a running candidate
        // keeps its claim.
        if let Some(c) = self.current {
            if level_of(c) >= best - MARGIN {
                self.candidate = None;
                return None;
            }
        }
        if let Some((c, _)) = self.candidate {
            if level_of(c) >= best - MARGIN && level_of(c) >= VOICE_THRESHOLD {
                k = c;
            }
        }
        if self.current == Some(k) {
            self.candidate = None;
            return None;
        }
        match self.candidate {
            Some((c, since)) if c == k => {
                if now.saturating_duration_since(since) >= HOLD {
                    self.current = Some(k);
                    self.candidate = None;
                    return Some(k);
                }
            }
            _ => self.candidate = Some((k, now)),
        }
        None
    }

    /// Forgets `k` (it left). Returns true when it was the speaker (now none).
    pub fn remove(&mut self, k: K) -> bool {
        if self.candidate.is_some_and(|(c, _)| c == k) {
            self.candidate = None;
        }
        if self.current == Some(k) {
            self.current = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn loudness_smooths_and_decays() {
        let t0 = Instant::now();
        let mut l = Loudness::default();
        l.add(t0, 30); // loud voice: 97
        assert!((l.value(t0) - 97.0).abs() < 1e-9);
        for i in 1..=10 {
            l.add(t0 + ms(20 * i), 127); // silence
        }
        assert!(l.value(t0 + ms(200)) < 97.0 * 0.6);
        assert!(l.value(t0 + ms(5000)) < 1.0, "decays without packets");
    }

    #[test]
    fn speaker_needs_hold_and_ignores_noise() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::<u32>::default();
        // Noise only: nobody.
        assert_eq!(d.tick(t0, &[(1, 40.0), (2, 50.0)]), None);
        // 2 speaks: after HOLD it becomes the speaker, once.
        assert_eq!(d.tick(t0, &[(1, 40.0), (2, 90.0)]), None);
        assert_eq!(d.tick(t0 + ms(400), &[(2, 90.0)]), None);
        assert_eq!(d.tick(t0 + HOLD, &[(2, 90.0)]), Some(2));
        assert_eq!(d.tick(t0 + HOLD + ms(250), &[(2, 90.0)]), None);
        // A short burst from 1 does not flip it.
        let t1 = t0 + ms(2000);
        assert_eq!(d.tick(t1, &[(1, 100.0), (2, 90.0)]), None);
        assert_eq!(d.tick(t1 + ms(250), &[(1, 60.0), (2, 90.0)]), None);
        assert_eq!(d.current(), Some(2));
        // Silence keeps the last speaker.
        assert_eq!(d.tick(t1 + ms(500), &[(1, 0.0), (2, 0.0)]), None);
        assert_eq!(d.current(), Some(2));
        assert!(d.remove(2));
        assert_eq!(d.current(), None);
    }

    #[test]
    fn two_voices_at_once_do_not_stall_the_choice() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::<u32>::default();
        // 1 and 2 equally loud, the loudest alternating by a hair: one of them wins after HOLD.
        let mut won = None;
        for i in 0..8u64 {
            let (a, b) = if i % 2 == 0 {
                (90.0, 89.0)
            } else {
                (89.0, 90.0)
            };
            if let Some(k) = d.tick(t0 + ms(250 * i), &[(1, a), (2, b)]) {
                won = Some(k);
            }
        }
        assert_eq!(won, Some(1));
        // 2 is not clearly louder: 1 keeps the floor.
        assert_eq!(d.tick(t0 + ms(3000), &[(1, 88.0), (2, 90.0)]), None);
        assert_eq!(d.current(), Some(1));
    }
}
