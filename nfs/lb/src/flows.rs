//! The affinity table: which backend each live flow was sent to, so that a
//! flow keeps its backend when the Maglev table changes under it (paper §3.3,
//! "connection tracking").
//!
//! Bounded and allocated in full up front: exactly `max_flows` slots in
//! buckets of [`WAYS`]. A flow may live in either of two buckets chosen by its
//! hash ("two choices", Mitzenmacher 2001), which keeps the table usable
//! close to full. Entries expire after `timeout` seconds without a packet; an
//! expired slot is free for the next new flow, so nothing sweeps the table.
//!
//! When both buckets of a new flow hold only live flows the flow is not
//! tracked: its packets still go where the Maglev table says, they just lose
//! affinity across a reconfiguration. A flood of new flows therefore cannot
//! evict established ones.

use std::fmt;
use std::ops::Range;

use crate::maglev::{BackendIndex, mix64, reduce};

/// Slots per bucket: two 64-byte cache lines of 16-byte slots.
const WAYS: usize = 8;

/// Marks an unused slot.
const FREE: BackendIndex = BackendIndex::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// The flow, packed by [`crate::FlowKey::client_key`].
    key: u64,
    /// Seconds since the load balancer started, at the last packet.
    last_seen: u32,
    backend: BackendIndex,
}

impl Slot {
    /// Whether the slot holds a flow that saw a packet less than `timeout_s`
    /// seconds before `now`. A clock that went back counts as no time passed.
    fn live(&self, now: u32, timeout_s: u32) -> bool {
        self.backend != FREE && now.saturating_sub(self.last_seen) < timeout_s
    }
}

const FREE_SLOT: Slot = Slot {
    key: 0,
    last_seen: 0,
    backend: FREE,
};

/// What [`FlowTable::lookup_or_insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A live flow: its backend.
    Hit(BackendIndex),
    /// A new flow, now in the table.
    New(BackendIndex),
    /// A new flow the table had no room for.
    Full(BackendIndex),
}

pub(crate) struct FlowTable {
    slots: Box<[Slot]>,
    buckets: usize,
    timeout_s: u32,
}

impl fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.slots.len())
            .field("timeout_s", &self.timeout_s)
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// A table of `max_flows` (≥ 1) slots whose entries live `timeout_s`
    /// seconds past their last packet.
    pub(crate) fn new(max_flows: usize, timeout_s: u32) -> Self {
        let max_flows = max_flows.max(1);
        Self {
            slots: vec![FREE_SLOT; max_flows].into_boxed_slice(),
            buckets: max_flows.div_ceil(WAYS),
            timeout_s,
        }
    }

    /// Slots of bucket `b`; the last bucket may be short.
    fn bucket(&self, b: usize) -> Range<usize> {
        let start = b * WAYS;
        start..(start + WAYS).min(self.slots.len())
    }

    /// The backend of flow `key` (of hash `hash`) if it is live, refreshing
    /// its idle timer; otherwise records it with the backend `pick` returns.
    pub(crate) fn lookup_or_insert(
        &mut self,
        key: u64,
        hash: u64,
        now: u32,
        pick: impl FnOnce() -> BackendIndex,
    ) -> Outcome {
        let first = reduce(hash, self.buckets);
        let timeout_s = self.timeout_s;
        let mut free = None;
        for choice in 0..2 {
            let b = if choice == 0 {
                first
            } else {
                // The second bucket, from the same hash, only on a miss.
                match reduce(mix64(hash), self.buckets) {
                    second if second == first => break,
                    second => second,
                }
            };
            let range = self.bucket(b);
            let start = range.start;
            let Some(slots) = self.slots.get_mut(range) else {
                break;
            };
            for (i, slot) in slots.iter_mut().enumerate() {
                let live = slot.live(now, timeout_s);
                if live && slot.key == key {
                    slot.last_seen = now;
                    return Outcome::Hit(slot.backend);
                }
                // An expired entry of this very flow is the slot to reuse,
                // so a flow never sits in the table twice.
                if !live && (free.is_none() || slot.key == key) {
                    free = Some(start + i);
                }
            }
        }
        let backend = pick();
        match free.and_then(|i| self.slots.get_mut(i)) {
            Some(slot) => {
                *slot = Slot {
                    key,
                    last_seen: now,
                    backend,
                };
                Outcome::New(backend)
            }
            None => Outcome::Full(backend),
        }
    }

    /// Renumbers backends after a reconfiguration: `map[old]` is the new
    /// index, or `None` for a removed backend, whose flows are forgotten.
    pub(crate) fn remap(&mut self, map: &[Option<BackendIndex>]) {
        for slot in self.slots.iter_mut().filter(|s| s.backend != FREE) {
            match map.get(usize::from(slot.backend)).copied().flatten() {
                Some(backend) => slot.backend = backend,
                None => *slot = FREE_SLOT,
            }
        }
    }

    /// Counts live flows per backend into `per_backend`; returns the total.
    /// O(capacity), for reports.
    pub(crate) fn count_live(&self, now: u32, per_backend: &mut [u64]) -> u64 {
        let mut total = 0;
        for slot in self.slots.iter().filter(|s| s.live(now, self.timeout_s)) {
            total += 1;
            if let Some(n) = per_backend.get_mut(usize::from(slot.backend)) {
                *n += 1;
            }
        }
        total
    }

    /// Sets the idle timeout. Liveness is always "last packet less than the
    /// timeout ago", so the new one applies to every entry at once: a
    /// shorter one may expire entries, a longer one may keep alive entries
    /// whose slot no new flow has taken yet (with the backend they had).
    pub(crate) fn set_timeout(&mut self, timeout_s: u32) {
        self.timeout_s = timeout_s;
    }

    /// Slots, live or not.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_refresh_and_expiry() {
        let mut t = FlowTable::new(16, 60);
        assert_eq!(t.lookup_or_insert(1, 11, 0, || 3), Outcome::New(3));
        assert_eq!(t.lookup_or_insert(1, 11, 59, || 4), Outcome::Hit(3));
        // Each hit restarts the 60 s: gone 60 s after the last packet.
        assert_eq!(t.lookup_or_insert(1, 11, 118, || 4), Outcome::Hit(3));
        assert_eq!(t.lookup_or_insert(1, 11, 178, || 5), Outcome::New(5));
        assert_eq!(t.count_live(178, &mut [0; 8]), 1);
    }

    #[test]
    fn full_buckets_refuse_new_flows_until_entries_expire() {
        // One bucket of 3 slots: both choices are bucket 0.
        let mut t = FlowTable::new(3, 10);
        for key in 0..3 {
            assert_eq!(t.lookup_or_insert(key, key * 7, 0, || 1), Outcome::New(1));
        }
        assert_eq!(t.lookup_or_insert(9, 99, 5, || 2), Outcome::Full(2));
        let mut per = [0; 3];
        assert_eq!(t.count_live(5, &mut per), 3);
        assert_eq!(per, [0, 3, 0]);
        assert_eq!(t.lookup_or_insert(9, 99, 10, || 2), Outcome::New(2));
        assert_eq!(t.capacity(), 3);
    }

    #[test]
    fn remap_renumbers_and_forgets() {
        let mut t = FlowTable::new(64, 10);
        for key in 0..30u64 {
            let backend = (key % 3) as BackendIndex;
            t.lookup_or_insert(key, mix64(key), 0, || backend);
        }
        // Backend 0 removed, 1 → 0, 2 → 1.
        t.remap(&[None, Some(0), Some(1)]);
        let mut per = [0; 3];
        assert_eq!(t.count_live(0, &mut per), 20);
        assert_eq!(per, [10, 10, 0]);
        assert_eq!(t.lookup_or_insert(4, mix64(4), 1, || 9), Outcome::Hit(0));
        assert_eq!(t.lookup_or_insert(3, mix64(3), 1, || 9), Outcome::New(9));
    }
}
