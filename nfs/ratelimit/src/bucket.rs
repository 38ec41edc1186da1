//! The token bucket, in integers.
//!
//! Tokens are kept in nano-units: a bucket of `rate` units per second gains
//! exactly `rate` nano-units per elapsed nanosecond, so refilling is one
//! multiplication, never a division, and no rounding accumulates however the
//! arrivals are spaced. A packet costs 10⁹ nano-packets, or `len × 8 × 10⁹`
//! nano-bits. The validated limits of [`crate::RatelimitConfig`] keep a full
//! bucket below `u64::MAX`; every operation saturates anyway, so no input
//! can overflow.

use crate::Rate;

/// Nano-units per unit.
pub(crate) const NANO: u64 = 1_000_000_000;

/// A point in time, in nanoseconds on a monotonic clock whose origin does not
/// matter. The policer never reads a clock itself: the caller passes `now`,
/// so tests are deterministic (smoltcp's `poll(timestamp, ..)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(NANO))
    }

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    /// `us` microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    /// Nanoseconds from `earlier` to `self`, 0 if `earlier` is later (a clock
    /// that steps back never refills a bucket nor panics).
    pub const fn since(self, earlier: Nanos) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Packets,
    Bits,
}

/// A validated rate and burst, in the bucket's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) unit: Unit,
    /// Units per second, which is nano-units per nanosecond.
    rate: u64,
    /// Burst in nano-units.
    capacity: u64,
}

impl Limit {
    /// The limit of `rate` with `burst` packets (pps) or bytes (bps).
    pub(crate) fn new(rate: Rate, burst: u64) -> Self {
        match rate {
            Rate::Pps(pps) => Self {
                unit: Unit::Packets,
                rate: pps,
                capacity: burst.saturating_mul(NANO),
            },
            Rate::Bps(bps) => Self {
                unit: Unit::Bits,
                rate: bps,
                capacity: burst.saturating_mul(8 * NANO),
            },
        }
    }

    /// What a frame of `len` bytes costs, in nano-units.
    pub(crate) fn cost(&self, len: u64) -> u64 {
        match self.unit {
            Unit::Packets => NANO,
            Unit::Bits => len.saturating_mul(8 * NANO),
        }
    }
}

/// One bucket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Nano-units available.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    pub(crate) last: Nanos,
}

impl Bucket {
    /// A full bucket, as of `now`.
    pub(crate) fn full(limit: &Limit, now: Nanos) -> Self {
        Self {
            tokens: limit.capacity,
            last: now,
        }
    }

    /// Adds the tokens earned since the last refill, up to the burst.
    #[inline]
    pub(crate) fn refill(&mut self, limit: &Limit, now: Nanos) {
        if now > self.last {
            let earned = now.since(self.last).saturating_mul(limit.rate);
            self.tokens = self.tokens.saturating_add(earned).min(limit.capacity);
            self.last = now;
        }
    }

    /// Whether `cost` nano-units are available.
    #[inline]
    pub(crate) fn has(&self, cost: u64) -> bool {
        self.tokens >= cost
    }

    /// Takes `cost` nano-units (after [`Bucket::has`] said they are there).
    #[inline]
    pub(crate) fn take(&mut self, cost: u64) {
        self.tokens = self.tokens.saturating_sub(cost);
    }

    /// Carries the bucket over from limit `old` to `new` at `now`: tokens
    /// earned so far are credited at the old rate, then kept (clipped to the
    /// new burst) if the unit is the same; a bucket that changes unit starts
    /// full, as a new one does, since packets do not convert to bits.
    pub(crate) fn carry_over(&mut self, old: &Limit, new: &Limit, now: Nanos) {
        self.refill(old, now);
        if old.unit == new.unit {
            self.tokens = self.tokens.min(new.capacity);
        } else {
            *self = Self::full(new, now.max(self.last));
        }
    }

    /// Tokens available, in nano-units.
    #[cfg(test)]
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_is_exact_over_uneven_steps() {
        // 3 pps, burst 10: 1/3 s does not divide into nanoseconds, but 3
        // tokens per second must still come out exact over any split.
        let limit = Limit::new(Rate::Pps(3), 10);
        let mut b = Bucket::full(&limit, Nanos(0));
        for _ in 0..10 {
            b.take(NANO);
        }
        assert_eq!(b.tokens(), 0);
        let mut t = 0;
        for step in [1, 333_333_333, 7, 2, 666_666_657] {
            t += step;
            b.refill(&limit, Nanos(t));
        }
        assert_eq!(t, NANO);
        assert_eq!(b.tokens(), 3 * NANO);
    }

    #[test]
    fn refill_saturates_at_the_burst_and_ignores_time_going_back() {
        let limit = Limit::new(Rate::Bps(1_000_000_000_000), 2_000_000_000);
        let mut b = Bucket::full(&limit, Nanos(5));
        b.take(limit.cost(1500));
        b.refill(&limit, Nanos(u64::MAX));
        assert_eq!(b.tokens(), 2_000_000_000 * 8 * NANO);
        b.take(limit.cost(1500));
        let before = b;
        b.refill(&limit, Nanos(1));
        assert_eq!(b, before);
        assert_eq!(limit.cost(u64::MAX), u64::MAX);
    }

    #[test]
    fn carry_over_keeps_tokens_of_the_same_unit_only() {
        let old = Limit::new(Rate::Pps(1000), 100);
        let new = Limit::new(Rate::Pps(10), 5);
        let mut b = Bucket::full(&old, Nanos(0));
        for _ in 0..98 {
            b.take(NANO);
        }
        // 2 left, 1 more earned in the next millisecond at the old rate.
        b.carry_over(&old, &new, Nanos::from_millis(1));
        assert_eq!(b.tokens(), 3 * NANO);
        let bits = Limit::new(Rate::Bps(8000), 3000);
        b.carry_over(&new, &bits, Nanos::from_millis(2));
        assert_eq!(b.tokens(), 3000 * 8 * NANO);
    }
}
