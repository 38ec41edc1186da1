//! Adaptive interrupt moderation, per VF: the throttle interval (ITR) of a VF's
//! vectors follows the rate the NIC delivers work to it, as dynamic interrupt
//! moderation does on real NICs (Linux `net_dim`, the adaptive ITR of Intel's drivers).
//!
//! The rule: aim for [`TARGET_BATCH`] frames per interrupt, but never hold an
//! interrupt longer than [`MAX_ITR_US`]. At a trickle the interval is what the rate
//! implies, capped, and since the throttle only spaces deliveries, a frame after a
//! quiet spell is signalled at once; at a high rate the interval shrinks so that a
//! batch of `TARGET_BATCH` frames is never kept waiting for the cap. Either way an NF
//! wakes once per batch, not once per frame. The rate is measured over windows of
//! [`WINDOW_US`] and smoothed, so one burst does not swing it.
//!
//! Pure arithmetic, time passed in: the engine feeds it and programs the result
//! into the device model's interrupt table.

use crate::nic::Micros;

/// Frames one interrupt should carry when the rate allows it.
pub const TARGET_BATCH: u64 = 16;
/// The longest an interrupt is held back, µs: the latency moderation may add.
pub const MAX_ITR_US: u32 = 50;
/// How long one rate measurement lasts, µs.
pub const WINDOW_US: u64 = 1_000;

/// The moderation state of one VF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moderation {
    window_start: Option<Micros>,
    frames: u64,
    /// Smoothed rate, frames per second.
    rate_pps: u64,
    itr_us: u32,
}

impl Moderation {
    /// Records `frames` of work delivered at `now` (received frames plus
    /// completions). Returns the new interval when it changed.
    pub fn record(&mut self, frames: u32, now: Micros) -> Option<u32> {
        let start = *self.window_start.get_or_insert(now);
        self.frames += u64::from(frames);
        let elapsed = now.0.saturating_sub(start.0);
        if elapsed < WINDOW_US {
            return None;
        }
        let sample = self.frames.saturating_mul(1_000_000) / elapsed;
        // A quiet spell longer than a window says nothing about the rate before it.
        self.rate_pps = if elapsed > 4 * WINDOW_US || self.rate_pps == 0 {
            sample
        } else {
            (3 * self.rate_pps + sample) / 4
        };
        self.window_start = Some(now);
        self.frames = 0;
        let itr = itr_for(self.rate_pps);
        (itr != self.itr_us).then(|| {
            self.itr_us = itr;
            itr
        })
    }

    /// The smoothed rate, frames per second.
    pub fn rate_pps(&self) -> u64 {
        self.rate_pps
    }

    /// The interval last chosen, µs.
    pub fn itr_us(&self) -> u32 {
        self.itr_us
    }
}

/// The throttle interval for a rate: `TARGET_BATCH` frames' worth, at most
/// `MAX_ITR_US`; 0 (every interrupt at once) when nothing flows.
pub fn itr_for(rate_pps: u64) -> u32 {
    if rate_pps == 0 {
        return 0;
    }
    let us = TARGET_BATCH.saturating_mul(1_000_000) / rate_pps;
    us.min(u64::from(MAX_ITR_US)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `rate_pps` in 10 µs steps for `ms` milliseconds from `from`.
    fn feed(m: &mut Moderation, rate_pps: u64, from: u64, ms: u64) -> u64 {
        let per_step = rate_pps / 100_000;
        let mut t = from;
        for _ in 0..ms * 100 {
            t += 10;
            m.record(per_step as u32, Micros(t));
        }
        t
    }

    #[test]
    fn interval_follows_the_rate_within_the_cap() {
        assert_eq!(itr_for(0), 0);
        assert_eq!(itr_for(20_000), MAX_ITR_US, "a trickle: capped");
        assert_eq!(itr_for(200_000), MAX_ITR_US);
        assert_eq!(itr_for(1_000_000), 16, "16 frames' worth");
        assert_eq!(itr_for(8_000_000), 2);
        assert_eq!(itr_for(100_000_000), 0);
    }

    #[test]
    fn measured_rate_converges_and_sets_the_interval() {
        let mut m = Moderation::default();
        let t = feed(&mut m, 1_000_000, 0, 20);
        assert!(
            (950_000..=1_050_000).contains(&m.rate_pps()),
            "{}",
            m.rate_pps()
        );
        assert!((15..=17).contains(&m.itr_us()), "{}", m.itr_us());
        // Traffic drops to 200 kpps: the interval grows to the cap.
        feed(&mut m, 200_000, t, 20);
        assert!((190_000..=210_000).contains(&m.rate_pps()));
        assert_eq!(m.itr_us(), MAX_ITR_US);
    }

    #[test]
    fn a_quiet_spell_resets_the_estimate() {
        let mut m = Moderation::default();
        let t = feed(&mut m, 1_000_000, 0, 10);
        // Nothing for a second, then one frame: the estimate is what that second
        // carried (the frames of the unfinished window and this one), not a blend
        // with the old rate.
        m.record(1, Micros(t + 1_000_000));
        assert!(m.rate_pps() <= 1_000, "{}", m.rate_pps());
        assert_eq!(m.itr_us(), MAX_ITR_US);
    }

    #[test]
    fn reports_only_changes() {
        let mut m = Moderation::default();
        assert_eq!(m.record(10, Micros(0)), None, "inside the first window");
        assert_eq!(m.record(10, Micros(1_000)), Some(MAX_ITR_US));
        assert_eq!(m.record(20, Micros(2_000)), None, "same interval");
    }
}
