//! Finding NFs that hang: an NF is **unresponsive** when frames wait on its rx ring
//! and its heartbeat (a BAR register its loop stores on every turn, ARCHITECTURE.md
//! §2) has not moved for the liveness timeout. A stopped process (SIGSTOP), a
//! deadlock or an endless loop in `process` all look like that; an idle NF does
//! not (nothing waits), nor does a sleeping one (the rx interrupt wakes it as soon
//! as frames arrive, and its first turn moves the count).
//!
//! Pure: [`Watch::observe`] takes what the engine read ([`Pulse`]) and the time.

use std::time::{Duration, Instant};

use crate::dataplane::engine::request::Pulse;

/// The liveness timeout when nothing else is said.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What is known of one NF's heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// The count last seen, and since when frames have waited with it unchanged.
    stalled: Option<(u32, Instant)>,
    /// Whether this stall was already reported.
    reported: bool,
}

/// What one observation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Working, idle, or not stalled for long enough yet.
    Alive,
    /// Newly unresponsive: frames have waited this long with the heartbeat still.
    Unresponsive {
        /// How long the heartbeat has stood still with frames waiting.
        stalled: Duration,
        /// Frames waiting on rx.
        waiting: u32,
    },
}

impl Watch {
    /// Takes one reading at `now`; reports a stall once, when it first passes
    /// `timeout`. A zero timeout never reports.
    pub fn observe(&mut self, pulse: &Pulse, now: Instant, timeout: Duration) -> Verdict {
        if pulse.rx_waiting == 0 {
            *self = Watch::default();
            return Verdict::Alive;
        }
        match self.stalled {
            Some((beat, _)) if beat == pulse.heartbeat => {}
            _ => {
                self.stalled = Some((pulse.heartbeat, now));
                self.reported = false;
            }
        }
        let since = self.stalled.map_or(now, |(_, t)| t);
        let stalled = now.saturating_duration_since(since);
        if timeout.is_zero() || stalled < timeout || self.reported {
            return Verdict::Alive;
        }
        self.reported = true;
        Verdict::Unresponsive {
            stalled,
            waiting: pulse.rx_waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::VfId;

    fn pulse(heartbeat: u32, rx_waiting: u32) -> Pulse {
        Pulse {
            vf: VfId(1),
            heartbeat,
            rx_waiting,
        }
    }

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn a_still_heartbeat_with_frames_waiting_is_reported_once() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.observe(&pulse(7, 10), t0, T), Verdict::Alive);
        let later = t0 + Duration::from_millis(1900);
        assert_eq!(w.observe(&pulse(7, 12), later, T), Verdict::Alive);
        let past = t0 + Duration::from_millis(2100);
        assert_eq!(
            w.observe(&pulse(7, 12), past, T),
            Verdict::Unresponsive {
                stalled: Duration::from_millis(2100),
                waiting: 12
            }
        );
        let after = t0 + Duration::from_secs(5);
        assert_eq!(w.observe(&pulse(7, 12), after, T), Verdict::Alive, "once");
    }

    #[test]
    fn an_idle_nf_is_never_reported_however_old_its_heartbeat() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        for s in 0..100 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(w.observe(&pulse(3, 0), now, T), Verdict::Alive);
        }
        // Frames arrive after an hour asleep: the clock starts now, not at the
        // last beat.
        let now = t0 + Duration::from_secs(3600);
        assert_eq!(w.observe(&pulse(3, 5), now, T), Verdict::Alive);
        assert_eq!(w.observe(&pulse(4, 0), now + T, T), Verdict::Alive);
    }

    #[test]
    fn a_moving_heartbeat_under_load_is_alive() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        for s in 0..50u32 {
            let now = t0 + Duration::from_millis(u64::from(s) * 500);
            assert_eq!(w.observe(&pulse(s, 64), now, T), Verdict::Alive);
        }
    }

    #[test]
    fn a_stall_that_ends_and_comes_back_is_reported_again() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        w.observe(&pulse(1, 5), t0, T);
        assert!(matches!(
            w.observe(&pulse(1, 5), t0 + T, T),
            Verdict::Unresponsive { .. }
        ));
        w.observe(&pulse(2, 0), t0 + 2 * T, T);
        w.observe(&pulse(2, 5), t0 + 3 * T, T);
        assert!(matches!(
            w.observe(&pulse(2, 5), t0 + 4 * T, T),
            Verdict::Unresponsive { .. }
        ));
        assert_eq!(
            w.observe(&pulse(2, 5), t0 + 4 * T, Duration::ZERO),
            Verdict::Alive
        );
    }
}
