//! The connection table: a fixed-size open-addressing hash table (linear
//! probing, backward-shift deletion) allocated in full when the firewall is
//! built, so the packet path never allocates and no traffic can grow it.
//!
//! Keys are hashed with the standard library's keyed SipHash (a random key
//! per table): an attacker who picks 5-tuples cannot aim them at one probe
//! chain. The table has at least a third more slots than entries, so probe
//! chains stay short.
//!
//! Expired entries are not removed when they expire: a lookup treats them as
//! absent, an insert reuses the first one on its probe chain, and
//! [`ConnTable::sweep`] walks a few slots per batch to free the rest.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

/// A connection, normalized so both directions have the same key: endpoint
/// `a` is the lower of (address, port) of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ConnKey {
    a: [u8; 16],
    b: [u8; 16],
    a_port: u16,
    b_port: u16,
    proto: u8,
    v6: bool,
}

impl ConnKey {
    /// The key of a packet from `(src, sport)` to `(dst, dport)`, and
    /// whether its source is endpoint `a`. ICMP echo uses its identifier as
    /// both ports.
    pub fn new(v6: bool, proto: u8, src: u128, sport: u16, dst: u128, dport: u16) -> (Self, bool) {
        let (src, dst) = (src.to_be_bytes(), dst.to_be_bytes());
        let src_is_a = (src, sport) <= (dst, dport);
        let ((a, a_port), (b, b_port)) = if src_is_a {
            ((src, sport), (dst, dport))
        } else {
            ((dst, dport), (src, sport))
        };
        let key = Self {
            a,
            b,
            a_port,
            b_port,
            proto,
            v6,
        };
        (key, src_is_a)
    }
}

impl Hash for ConnKey {
    /// The key as one 38-byte write: SipHash costs per call as well as per
    /// byte, and the derived impl would make six calls and hash two lengths.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut bytes = [0u8; 38];
        let (a, rest) = bytes.split_at_mut(16);
        let (b, rest) = rest.split_at_mut(16);
        a.copy_from_slice(&self.a);
        b.copy_from_slice(&self.b);
        rest.copy_from_slice(&[
            self.a_port.to_be_bytes()[0],
            self.a_port.to_be_bytes()[1],
            self.b_port.to_be_bytes()[0],
            self.b_port.to_be_bytes()[1],
            self.proto,
            u8::from(self.v6),
        ]);
        state.write(&bytes);
    }
}

/// One slot of the table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Entry {
    key: ConnKey,
    /// When it expires, in ms of the firewall's clock; 0 = free slot.
    pub expires: u64,
    /// The key's hash, to find its home slot when entries shift.
    hash: u64,
    /// [`Entry::ORIGIN_A`], [`Entry::FIN`], [`Entry::RST`].
    pub flags: u8,
}

impl Entry {
    /// Endpoint `a` opened the connection (sent the first packet).
    pub const ORIGIN_A: u8 = 1;
    /// A TCP FIN was seen.
    pub const FIN: u8 = 2;
    /// A TCP RST was seen.
    pub const RST: u8 = 4;
}

/// Where a key is, or where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The live entry for the key, at this slot.
    Found(usize),
    /// Not there (or expired); it would go at `slot`, over an expired entry
    /// if `reuse`.
    Vacant { slot: usize, reuse: bool },
}

/// The table.
#[derive(Debug)]
pub(crate) struct ConnTable {
    slots: Vec<Entry>,
    mask: usize,
    /// Occupied slots, live or expired.
    len: usize,
    max: usize,
    hasher: RandomState,
    /// Next slot [`ConnTable::sweep`] looks at.
    cursor: usize,
}

impl ConnTable {
    /// A table for `max` entries (at least 1), all slots allocated now.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        // A power of two with a free quarter at least, so a probe always
        // meets a free slot and chains stay short.
        let slots = (max + max.div_ceil(3)).next_power_of_two();
        Self {
            slots: vec![Entry::default(); slots],
            mask: slots - 1,
            len: 0,
            max,
            hasher: RandomState::new(),
            cursor: 0,
        }
    }

    /// Entries held, live or expired.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Most entries it holds (its `max_entries`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether it holds `max` entries (some may be expired).
    pub fn is_full(&self) -> bool {
        self.len >= self.max
    }

    /// Slots allocated.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The key's hash.
    pub fn hash(&self, key: &ConnKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn home(&self, hash: u64) -> usize {
        // Truncation intended: the mask keeps the low bits.
        hash as usize & self.mask
    }

    /// Looks `key` up at time `now`.
    pub fn probe(&self, key: &ConnKey, hash: u64, now: u64) -> Probe {
        let mut i = self.home(hash);
        let mut reuse = None;
        for _ in 0..self.slots.len() {
            let Some(e) = self.slots.get(i) else { break };
            if e.expires == 0 {
                return match reuse {
                    Some(slot) => Probe::Vacant { slot, reuse: true },
                    None => Probe::Vacant {
                        slot: i,
                        reuse: false,
                    },
                };
            }
            let expired = e.expires <= now;
            if e.hash == hash && e.key == *key {
                return if expired {
                    Probe::Vacant {
                        slot: i,
                        reuse: true,
                    }
                } else {
                    Probe::Found(i)
                };
            }
            if expired && reuse.is_none() {
                reuse = Some(i);
            }
            i = (i + 1) & self.mask;
        }
        // Unreachable while `len <= max < slots`; a full scan still answers.
        match reuse {
            Some(slot) => Probe::Vacant { slot, reuse: true },
            None => Probe::Vacant {
                slot: usize::MAX,
                reuse: false,
            },
        }
    }

    /// The entry at `slot` (from [`Probe::Found`]).
    pub fn entry_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        self.slots.get_mut(slot)
    }

    /// The entry at `slot`.
    pub fn entry(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot)
    }

    /// Puts `key` where [`ConnTable::probe`] said it would go. Returns false,
    /// and stores nothing, if that needs a free slot and the table already
    /// holds `max` entries.
    pub fn insert(&mut self, at: Probe, key: ConnKey, hash: u64, expires: u64, flags: u8) -> bool {
        let Probe::Vacant { slot, reuse } = at else {
            return false;
        };
        if !reuse && self.len >= self.max {
            return false;
        }
        let Some(e) = self.slots.get_mut(slot) else {
            return false;
        };
        *e = Entry {
            key,
            expires: expires.max(1),
            hash,
            flags,
        };
        if !reuse {
            self.len += 1;
        }
        true
    }

    /// Frees the entry at `slot` and shifts the rest of its probe chain back
    /// (Knuth, TAOCP vol. 3, §6.4, Algorithm R), so no tombstones pile up.
    fn remove(&mut self, slot: usize) {
        let Some(e) = self.slots.get_mut(slot) else {
            return;
        };
        if e.expires == 0 {
            return;
        }
        e.expires = 0;
        self.len -= 1;
        let mut hole = slot;
        let mut j = slot;
        loop {
            j = (j + 1) & self.mask;
            let Some(&next) = self.slots.get(j) else {
                return;
            };
            if next.expires == 0 {
                return;
            }
            // `next` may fill the hole if its home is not cyclically inside
            // (hole, j]: then the hole lies on its probe path.
            let home = self.home(next.hash);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = next;
                self.slots[j].expires = 0;
                hole = j;
            }
        }
    }

    /// Frees expired entries in the next slots, `budget` steps of looking
    /// at one slot (a slot an entry was shifted into is looked at again).
    pub fn sweep(&mut self, now: u64, budget: usize) {
        for _ in 0..budget {
            let i = self.cursor;
            let expired = self
                .slots
                .get(i)
                .is_some_and(|e| e.expires != 0 && e.expires <= now);
            if expired {
                // The shift may have moved another entry into `i`: look at it
                // again on the next step.
                self.remove(i);
            } else {
                self.cursor = (i + 1) & self.mask;
            }
        }
    }

    /// Every live entry's key, for tests.
    #[cfg(test)]
    pub fn live_keys(&self, now: u64) -> Vec<ConnKey> {
        self.slots
            .iter()
            .filter(|e| e.expires > now)
            .map(|e| e.key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn key(n: u16) -> ConnKey {
        ConnKey::new(false, 17, 0x0a00_0001, n, 0x0a00_0002, 53).0
    }

    #[test]
    fn both_directions_share_a_key() {
        let (k1, a1) = ConnKey::new(false, 6, 0x0a00_0001, 1234, 0x0a00_0002, 80);
        let (k2, a2) = ConnKey::new(false, 6, 0x0a00_0002, 80, 0x0a00_0001, 1234);
        assert_eq!(k1, k2);
        assert_ne!(a1, a2);
        let (k3, _) = ConnKey::new(false, 17, 0x0a00_0001, 1234, 0x0a00_0002, 80);
        assert_ne!(k1, k3, "the protocol is part of the key");
    }

    #[test]
    fn slots_leave_room() {
        for (max, slots) in [
            (1, 2),
            (3, 4),
            (4, 8),
            (65_536, 131_072),
            (100_000, 262_144),
        ] {
            let t = ConnTable::new(max);
            assert_eq!(t.slots(), slots, "max {max}");
            assert!(t.slots() > max);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u64),
        Advance(u64),
        Sweep(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                4 => (0..40u16, 1..50u64).prop_map(|(k, t)| Op::Insert(k, t)),
                1 => (1..20u64).prop_map(Op::Advance),
                1 => (1..40usize).prop_map(Op::Sweep),
            ],
            1..300,
        )
    }

    proptest! {
        /// The table against a `HashMap` model: same live keys, never more
        /// than `max` held, and a key is found iff it is live.
        #[test]
        fn table_matches_a_model(max in 1..24usize, ops in ops()) {
            let mut t = ConnTable::new(max);
            let mut model: HashMap<ConnKey, u64> = HashMap::new();
            let mut now = 1;
            for op in ops {
                match op {
                    Op::Insert(k, ttl) => {
                        let k = key(k);
                        let h = t.hash(&k);
                        let at = t.probe(&k, h, now);
                        if let Probe::Found(slot) = at {
                            prop_assert_eq!(model.get(&k).copied().map(|e| e > now), Some(true));
                            t.entry_mut(slot).expect("slot").expires = now + ttl;
                            model.insert(k, now + ttl);
                        } else {
                            prop_assert!(model.get(&k).is_none_or(|&e| e <= now));
                            if t.insert(at, k, h, now + ttl, 0) {
                                model.insert(k, now + ttl);
                            } else {
                                prop_assert_eq!(t.len(), max);
                            }
                        }
                    }
                    Op::Advance(d) => now += d,
                    Op::Sweep(n) => t.sweep(now, n),
                }
                prop_assert!(t.len() <= max);
                model.retain(|_, e| *e > now);
                let mut live = t.live_keys(now);
                live.sort_by_key(|k| k.a_port);
                let mut want: Vec<_> = model.keys().copied().collect();
                want.sort_by_key(|k| k.a_port);
                prop_assert_eq!(live, want);
                for (k, _) in model.iter() {
                    let found = matches!(t.probe(k, t.hash(k), now), Probe::Found(_));
                    prop_assert!(found);
                }
            }
        }
    }

    #[test]
    fn full_sweep_frees_everything_expired() {
        let mut t = ConnTable::new(100);
        for n in 0..100 {
            let k = key(n);
            let h = t.hash(&k);
            let at = t.probe(&k, h, 1);
            assert!(t.insert(at, k, h, 10 + u64::from(n % 2) * 100, 0));
        }
        assert_eq!(t.len(), 100);
        let k = key(500);
        let h = t.hash(&k);
        let at = t.probe(&k, h, 1);
        assert!(!t.insert(at, k, h, 50, 0), "full");
        t.sweep(50, 2 * t.slots());
        assert_eq!(t.len(), 50, "the even ones expired at 10");
        assert_eq!(t.live_keys(50).len(), 50);
    }
}
