//! Token-bucket rate limiting with time passed in.

use std::time::Instant;

/// Default `--signal-rate`: messages per second per connection.
pub const DEFAULT_RATE: f64 = 50.0;
/// Default burst.
pub const DEFAULT_BURST: f64 = 100.0;
/// Refusals in a row after which a transport closes the connection.
pub const MAX_REFUSALS_IN_A_ROW: u32 = 10;

/// A token bucket: `burst` tokens, refilled at `rate_per_sec`; each allowed message takes one.
/// Also counts refusals in a row (for "repeated abuse closes").
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    refused_in_a_row: u32,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`. Non-finite or negative values
    /// count as 0; a burst below 1 refuses everything.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let burst = clean(burst);
        RateLimiter {
            rate: clean(rate_per_sec),
            burst,
            tokens: burst,
            last: None,
            refused_in_a_row: 0,
        }
    }

    /// Takes one token if there is one at `now`. Time going backwards is treated as no time.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        match self.last {
            Some(last) if last >= now => {}
            _ => self.last = Some(now),
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
            false
        }
    }

    /// Refusals since the last allowed message.
    pub fn refused_in_a_row(&self) -> u32 {
        self.refused_in_a_row
    }

    /// Whether the connection should be closed ([`MAX_REFUSALS_IN_A_ROW`] refusals in a row).
    pub fn abusive(&self) -> bool {
        self.refused_in_a_row >= MAX_REFUSALS_IN_A_ROW
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(DEFAULT_RATE, DEFAULT_BURST)
    }
}
