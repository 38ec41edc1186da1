//! Per-flow buckets: the flow key of a packet and a bounded table of buckets.
//!
//! The table is open addressing with linear probing over a power-of-two
//! array of slots at most half full, with backward-shift deletion (no
//! tombstones, so probe sequences stay short however flows come and go).
//! Slots hold a hash and an index into a dense array of entries; both arrays
//! are allocated in full when the table is made, so the packet path never
//! allocates. The hash is keyed with random seeds per table, so a sender who
//! picks addresses and ports cannot aim them at one probe chain.

use std::hash::{BuildHasher, RandomState};

use crate::FlowKeyKind;
use crate::bucket::{Bucket, Nanos};
use crate::parse::IpFields;

/// What identifies a flow, packed into words for hashing and comparing.
///
/// Words 0–1 are the source address, 2–3 the destination (IPv4 in the low 32
/// bits of words 1 and 3), word 4 the family, protocol and ports. A source
/// prefix key keeps only the masked source and the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey([u64; 5]);

impl FlowKey {
    /// Equality without a branch per word nor a `memcmp` call (the derived
    /// `==` on the array calls one; this is the probe loop's hot compare).
    #[inline]
    fn same(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// How to make a key from a packet: the validated `per_flow.key` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySpec {
    FiveTuple,
    SrcPrefix { v4_mask: u32, v6_mask: u128 },
}

impl KeySpec {
    /// The spec for `kind`, with prefix lengths already range-checked.
    pub(crate) fn new(kind: FlowKeyKind, prefix_len: u8, prefix_len_v6: u8) -> Self {
        match kind {
            FlowKeyKind::FiveTuple => Self::FiveTuple,
            FlowKeyKind::SrcPrefix => Self::SrcPrefix {
                v4_mask: u32::MAX
                    .checked_shl(32 - u32::from(prefix_len).min(32))
                    .unwrap_or(0),
                v6_mask: u128::MAX
                    .checked_shl(128 - u32::from(prefix_len_v6).min(128))
                    .unwrap_or(0),
            },
        }
    }

    /// The key of an IP packet.
    ///
    /// Fragments carry ports only in the first one, so the parser gives
    /// ports 0 for every fragment and all of a datagram's fragments share
    /// one key.
    #[inline]
    pub(crate) fn key_of(&self, ip: &IpFields) -> FlowKey {
        let family: u64 = if ip.v6 { 6 << 56 } else { 4 << 56 };
        let words = match *self {
            Self::FiveTuple => {
                let tail = family
                    | u64::from(ip.proto) << 32
                    | u64::from(ip.sport) << 16
                    | u64::from(ip.dport);
                [
                    (ip.src >> 64) as u64,
                    ip.src as u64,
                    (ip.dst >> 64) as u64,
                    ip.dst as u64,
                    tail,
                ]
            }
            Self::SrcPrefix { v4_mask, v6_mask } => {
                let mask = if ip.v6 { v6_mask } else { u128::from(v4_mask) };
                let src = ip.src & mask;
                [(src >> 64) as u64, src as u64, 0, 0, family]
            }
        };
        FlowKey(words)
    }
}

/// Marks an empty slot.
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The key's hash; its low bits are the slot the key wants.
    hash: u32,
    /// Index into `entries`, or [`EMPTY`].
    idx: u32,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FlowKey,
    hash: u32,
    bucket: Bucket,
}

/// A bounded table of flow buckets.
pub(crate) struct FlowTable {
    slots: Box<[Slot]>,
    /// Dense: entry `i` for `i < len`; removal moves the last one into the gap.
    entries: Vec<Entry>,
    max: usize,
    seeds: [u64; 4],
    /// Where the idle sweep goes on.
    hand: usize,
}

impl FlowTable {
    /// A table for up to `max` flows (at most 1_000_000, validated), with
    /// fresh random hash seeds.
    pub(crate) fn new(max: usize) -> Self {
        let state = RandomState::new();
        Self::with_seeds(max, std::array::from_fn(|i| state.hash_one(i)))
    }

    fn with_seeds(max: usize, seeds: [u64; 4]) -> Self {
        // At most half full: linear probing stays short and a probe always
        // meets an empty slot.
        let slots = max.saturating_mul(2).max(2).next_power_of_two();
        Self {
            slots: vec![
                Slot {
                    hash: 0,
                    idx: EMPTY
                };
                slots
            ]
            .into_boxed_slice(),
            entries: Vec::with_capacity(max),
            max,
            seeds,
            hand: 0,
        }
    }

    /// Flows held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Most flows it holds.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Room of the entry array, which must never grow.
    #[cfg(test)]
    pub(crate) fn entry_capacity(&self) -> usize {
        self.entries.capacity()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The keyed hash of `key`: folded 64×64→128 multiplies of the key words
    /// with secret seeds (the construction of foldhash, hashbrown's default).
    pub(crate) fn hash(&self, key: &FlowKey) -> u32 {
        fn fold(a: u64, b: u64) -> u64 {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        }
        let [s0, s1, s2, s3] = self.seeds;
        let [k0, k1, k2, k3, k4] = key.0;
        let a = fold(k0 ^ s0, k1 ^ s1);
        let b = fold(k2 ^ s2, k3 ^ s3);
        let c = fold(k4 ^ s0, a ^ s3);
        let h = fold(b ^ s1, c ^ s2);
        (h ^ (h >> 32)) as u32
    }

    /// The entry of `key`, whose hash is `hash`.
    #[inline]
    pub(crate) fn find(&self, key: &FlowKey, hash: u32) -> Option<usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        // Bounded, though an empty slot always ends the probe first.
        for _ in 0..self.slots.len() {
            let slot = self.slots[i];
            if slot.idx == EMPTY {
                return None;
            }
            if slot.hash == hash
                && self
                    .entries
                    .get(slot.idx as usize)
                    .is_some_and(|e| e.key.same(key))
            {
                return Some(slot.idx as usize);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Adds `key` (not in the table) with `bucket`; `None` if the table is full.
    pub(crate) fn insert(&mut self, key: FlowKey, hash: u32, bucket: Bucket) -> Option<usize> {
        if self.entries.len() >= self.max {
            return None;
        }
        let idx = self.entries.len();
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..self.slots.len() {
            if self.slots[i].idx == EMPTY {
                self.slots[i] = Slot {
                    hash,
                    idx: idx as u32,
                };
                // Within the capacity reserved in `new`: no reallocation.
                self.entries.push(Entry { key, hash, bucket });
                return Some(idx);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The bucket of entry `idx`.
    #[inline]
    pub(crate) fn bucket_mut(&mut self, idx: usize) -> Option<&mut Bucket> {
        self.entries.get_mut(idx).map(|e| &mut e.bucket)
    }

    /// Every bucket, to carry over to a new limit.
    pub(crate) fn buckets_mut(&mut self) -> impl Iterator<Item = &mut Bucket> {
        self.entries.iter_mut().map(|e| &mut e.bucket)
    }

    /// The slot that points at entry `idx` (whose hash is `hash`).
    fn slot_of(&self, idx: usize, hash: u32) -> Option<usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..self.slots.len() {
            let slot = self.slots[i];
            if slot.idx as usize == idx {
                return Some(i);
            }
            if slot.idx == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Removes entry `idx`; the last entry moves into its place.
    fn remove(&mut self, idx: usize) {
        let Some(hash) = self.entries.get(idx).map(|e| e.hash) else {
            return;
        };
        if let Some(slot) = self.slot_of(idx, hash) {
            self.clear_slot(slot);
        }
        let last = self.entries.len() - 1;
        self.entries.swap_remove(idx);
        if idx != last {
            let moved = self.entries[idx].hash;
            if let Some(slot) = self.slot_of(last, moved) {
                self.slots[slot].idx = idx as u32;
            }
        }
    }

    /// Empties slot `hole` and shifts back the slots after it that may move
    /// closer to where they want to be, so no probe meets a false end.
    fn clear_slot(&mut self, mut hole: usize) {
        let mask = self.mask();
        self.slots[hole].idx = EMPTY;
        let mut j = hole;
        for _ in 0..self.slots.len() {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot.idx == EMPTY {
                return;
            }
            let home = slot.hash as usize & mask;
            // `slot` may fill the hole unless it wants a place in (hole, j].
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                self.slots[j].idx = EMPTY;
                hole = j;
            }
        }
    }

    /// Looks at up to `budget` entries, going round the table, and removes
    /// those idle for `idle` ns or more. Returns how many it removed.
    pub(crate) fn expire(&mut self, now: Nanos, idle: u64, budget: usize) -> u64 {
        let mut removed = 0;
        for _ in 0..budget {
            if self.entries.is_empty() {
                break;
            }
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            if now.since(self.entries[self.hand].bucket.last) >= idle {
                // The last entry moves to `hand`: look at it next.
                self.remove(self.hand);
                removed += 1;
            } else {
                self.hand += 1;
            }
        }
        removed
    }

    /// A table for up to `max` flows holding this one's entries, the most
    /// recently seen first if they do not all fit. Allocates: for
    /// reconfiguration only.
    pub(crate) fn resized(&self, max: usize) -> Self {
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| std::cmp::Reverse(e.bucket.last));
        let mut table = Self::with_seeds(max, self.seeds);
        for e in entries.into_iter().take(max) {
            table.insert(e.key, e.hash, e.bucket);
        }
        table
    }

    /// Checks the table's invariants: every entry reachable from its hash
    /// through one slot, every used slot pointing at a distinct entry.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let used = self.slots.iter().filter(|s| s.idx != EMPTY).count();
        assert_eq!(used, self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.hash, self.hash(&e.key));
            assert_eq!(self.find(&e.key, e.hash), Some(i));
        }
        assert!(self.entries.len() <= self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rate;
    use crate::bucket::Limit;

    fn key(i: u64) -> FlowKey {
        FlowKey([0, i, 0, 0, 4 << 56])
    }

    fn bucket(t: u64) -> Bucket {
        Bucket::full(&Limit::new(Rate::Pps(1), 1), Nanos(t))
    }

    #[test]
    fn insert_find_remove_under_collisions() {
        // Zero seeds and a tiny table: many keys share probe chains, and
        // removal must shift the chains back without losing anyone.
        let mut t = FlowTable::with_seeds(8, [0; 4]);
        for i in 0..8 {
            let k = key(i);
            assert_eq!(t.insert(k, t.hash(&k), bucket(i)), Some(i as usize));
        }
        assert_eq!(t.insert(key(99), t.hash(&key(99)), bucket(0)), None);
        t.check();
        // Entries seen at t < 4 are idle at 10 for an idle time of 7.
        assert_eq!(t.expire(Nanos(10), 7, 100), 4);
        t.check();
        assert_eq!(t.len(), 4);
        for i in 0..8 {
            assert_eq!(t.find(&key(i), t.hash(&key(i))).is_some(), i >= 4, "{i}");
        }
        for i in 10..14 {
            let k = key(i);
            assert!(t.insert(k, t.hash(&k), bucket(10)).is_some());
        }
        t.check();
        assert_eq!(t.entry_capacity(), 8);
    }

    #[test]
    fn random_churn_keeps_the_invariants() {
        let mut t = FlowTable::new(64);
        let mut now = 0;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % 3;
            let k = key(x % 200);
            let h = t.hash(&k);
            match t.find(&k, h) {
                Some(i) => t.bucket_mut(i).expect("entry").last = Nanos(now),
                None => {
                    let _ = t.insert(k, h, bucket(now));
                }
            }
            t.expire(Nanos(now), 40, 3);
            if round % 97 == 0 {
                t.check();
            }
        }
        t.check();
        assert_eq!(t.entry_capacity(), 64);
    }

    #[test]
    fn resizing_keeps_the_most_recent() {
        let mut t = FlowTable::new(10);
        for i in 0..10 {
            let k = key(i);
            t.insert(k, t.hash(&k), bucket(i));
        }
        let small = t.resized(3);
        small.check();
        let kept: Vec<bool> = (0..10)
            .map(|i| small.find(&key(i), small.hash(&key(i))).is_some())
            .collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), 3);
        assert!(kept[7] && kept[8] && kept[9]);
        let big = t.resized(1000);
        big.check();
        assert_eq!(big.len(), 10);
        assert_eq!(big.max(), 1000);
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(
            KeySpec::new(FlowKeyKind::SrcPrefix, 24, 64),
            KeySpec::SrcPrefix {
                v4_mask: 0xffff_ff00,
                v6_mask: u128::MAX << 64
            }
        );
        assert_eq!(
            KeySpec::new(FlowKeyKind::SrcPrefix, 0, 128),
            KeySpec::SrcPrefix {
                v4_mask: 0,
                v6_mask: u128::MAX
            }
        );
        assert_eq!(
            KeySpec::new(FlowKeyKind::SrcPrefix, 32, 0),
            KeySpec::SrcPrefix {
                v4_mask: u32::MAX,
                v6_mask: 0
            }
        );
    }
}
