//! The rule index: finds the first rule a packet matches without trying the
//! rules one by one.
//!
//! It is the bit-vector scheme of Lakshman and Stiliadis ("High-speed
//! policy-based packet forwarding using efficient multi-dimensional range
//! matching", SIGCOMM 1998). Every rule field is a range on one axis: a
//! prefix is a range of addresses, a port range of ports, a protocol or VLAN
//! a range of one, and a missing field the whole axis. On each axis the rule
//! ranges cut the axis into elementary intervals, and every value inside one
//! interval is matched by the same set of rules. At config time each
//! interval gets that set as a bitmap over rule indices (bit `i` = rule `i`
//! matches on this axis). A packet looks up one interval per axis, ANDs the
//! six bitmaps word by word and takes the lowest set bit: the first rule that
//! matches on every axis, which is first-match order by construction. The
//! AND stops at the first non-zero word, so an early rule is found early.
//!
//! Lookups per axis: protocol (256), VLAN (4096) and both ports (65536) are
//! direct tables of bitmap ids; addresses are a binary search over interval
//! starts, one table per family and direction. With `n` rules a packet costs
//! four table reads, two binary searches of `log2(2n + 1)` steps and at most
//! `⌈n / 64⌉` six-way ANDs: for 1000 rules, 11 steps and 16 words.
//!
//! Memory: an axis has at most `2n + 1` intervals, each a bitmap of `⌈n/64⌉`
//! words, and identical bitmaps are stored once (most intervals of a sparse
//! axis share one). The worst case, every rule with its own ranges on all
//! four range axes, is `4 (2n + 1) ⌈n / 64⌉ · 8` bytes: 1 MiB for 1000 rules,
//! about 100 MiB at the 10 000-rule limit. [`RuleIndex::bytes`] tells the
//! actual figure.

use std::collections::HashMap;

use crate::config::{Family, PortRange, Proto, RuleConfig};

/// What the index matches on: one packet's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    /// IPv6, else IPv4.
    pub v6: bool,
    /// Source address (IPv4 in the low 32 bits).
    pub src: u128,
    /// Destination address (IPv4 in the low 32 bits).
    pub dst: u128,
    /// IP protocol.
    pub proto: u8,
    /// Source and destination port, for TCP and UDP when the header is in
    /// the packet (not for a non-first fragment).
    pub ports: Option<(u16, u16)>,
    /// The packet's VLAN id.
    pub vlan: Option<u16>,
}

/// An id of a bitmap in [`RuleIndex::pool`].
type SetId = u32;

/// Intervals of one address axis: `sets[i]` holds for `starts[i]..starts[i+1]`.
#[derive(Debug)]
struct Intervals<T> {
    /// Ascending, `starts[0] == 0`.
    starts: Vec<T>,
    sets: Vec<SetId>,
}

impl<T: Copy + Ord> Intervals<T> {
    fn find(&self, value: T) -> SetId {
        let i = self.starts.partition_point(|&s| s <= value);
        // `starts[0]` is 0, so `i >= 1`; an empty table (never built) is the
        // empty set 0.
        i.checked_sub(1)
            .and_then(|i| self.sets.get(i))
            .copied()
            .unwrap_or(0)
    }

    fn bytes(&self) -> usize {
        self.starts.len() * size_of::<T>() + self.sets.len() * size_of::<SetId>()
    }
}

/// The rule index; see the module docs.
#[derive(Debug)]
pub(crate) struct RuleIndex {
    /// Words per bitmap.
    words: usize,
    /// Every distinct bitmap, `words` words each; bitmap 0 is empty.
    pool: Vec<u64>,
    proto: Vec<SetId>,
    vlan: Vec<SetId>,
    /// Rules with no VLAN field, for untagged packets.
    vlan_none: SetId,
    sport: Vec<SetId>,
    dport: Vec<SetId>,
    /// Rules without the port fields, for packets without ports.
    sport_none: SetId,
    dport_none: SetId,
    src_v4: Intervals<u32>,
    dst_v4: Intervals<u32>,
    src_v6: Intervals<u128>,
    dst_v6: Intervals<u128>,
}

/// A set of rules on one axis over `lo..=hi`.
struct Span {
    lo: u128,
    hi: u128,
    rule: usize,
}

/// Interns bitmaps while the index is built.
struct Builder {
    words: usize,
    pool: Vec<u64>,
    ids: HashMap<Vec<u64>, SetId>,
}

impl Builder {
    fn new(rules: usize) -> Self {
        let words = rules.div_ceil(64);
        let mut builder = Self {
            words,
            pool: Vec::new(),
            ids: HashMap::new(),
        };
        builder.intern(&vec![0; words]);
        builder
    }

    fn intern(&mut self, set: &[u64]) -> SetId {
        if let Some(&id) = self.ids.get(set) {
            return id;
        }
        // At most 1 + 8 tables · (2 · MAX_RULES + 1) distinct bitmaps.
        let id = SetId::try_from(self.ids.len()).unwrap_or(SetId::MAX);
        self.pool.extend_from_slice(set);
        self.ids.insert(set.to_vec(), id);
        id
    }

    fn bitmap(&self, rules: impl Iterator<Item = usize>) -> Vec<u64> {
        let mut set = vec![0; self.words];
        for rule in rules {
            if let Some(word) = set.get_mut(rule / 64) {
                *word |= 1 << (rule % 64);
            }
        }
        set
    }

    /// The elementary intervals of `0..=max` cut by `spans`, each with the
    /// rules of `everywhere` plus those of the spans covering it, as
    /// `(start, set)` with equal neighbours merged. A sweep over the sorted
    /// span ends: O(spans · log spans + intervals · words).
    fn intervals(&mut self, everywhere: &[u64], spans: &[Span], max: u128) -> Vec<(u128, SetId)> {
        // (position, adds, rule): a span's rule joins at `lo` and leaves
        // after `hi`. One rule's spans on an axis never overlap.
        let mut events: Vec<(u128, bool, usize)> = Vec::with_capacity(2 * spans.len());
        for span in spans {
            events.push((span.lo, true, span.rule));
            if span.hi < max {
                events.push((span.hi + 1, false, span.rule));
            }
        }
        events.sort_unstable_by_key(|&(at, _, _)| at);
        let mut current = everywhere.to_vec();
        let mut out: Vec<(u128, SetId)> = Vec::new();
        let mut next = 0;
        let mut at = 0;
        loop {
            while let Some(&(pos, adds, rule)) = events.get(next) {
                if pos != at {
                    break;
                }
                let bit = 1 << (rule % 64);
                if let Some(word) = current.get_mut(rule / 64) {
                    if adds {
                        *word |= bit;
                    } else {
                        *word &= !bit;
                    }
                }
                next += 1;
            }
            let id = self.intern(&current);
            if out.last().is_none_or(|&(_, last)| last != id) {
                out.push((at, id));
            }
            match events.get(next) {
                Some(&(pos, _, _)) => at = pos,
                None => break,
            }
        }
        out
    }

    /// A direct table over `0..=max` (a small axis), or an empty one if no
    /// rule constrains the axis: then every value has the set `everywhere`.
    fn table(&mut self, everywhere: &[u64], spans: &[Span], max: usize) -> Vec<SetId> {
        if spans.is_empty() {
            return Vec::new();
        }
        let mut table = Vec::with_capacity(max + 1);
        let intervals = self.intervals(everywhere, spans, max as u128);
        for (i, &(start, id)) in intervals.iter().enumerate() {
            let end = intervals
                .get(i + 1)
                .map_or(max as u128 + 1, |&(next, _)| next);
            table.extend((start..end).map(|_| id));
        }
        table
    }

    fn addresses<T: TryFrom<u128>>(
        &mut self,
        everywhere: &[u64],
        spans: &[Span],
        max: u128,
    ) -> Intervals<T> {
        let (starts, sets) = self
            .intervals(everywhere, spans, max)
            .into_iter()
            // Every start is at most `max`, which fits `T`.
            .filter_map(|(start, id)| Some((T::try_from(start).ok()?, id)))
            .unzip();
        Intervals { starts, sets }
    }
}

impl RuleIndex {
    /// Indexes `rules` (checked by [`crate::FirewallConfig::validate`]).
    pub fn new(rules: &[RuleConfig]) -> Self {
        let mut b = Builder::new(rules.len());
        let all = || 0..rules.len();

        // Protocol: a rule with ports but no protocol means TCP and UDP.
        let mut spans = Vec::new();
        let mut any = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match rule.proto {
                Some(p) => spans.push(Span {
                    lo: p.0.into(),
                    hi: p.0.into(),
                    rule: i,
                }),
                None if rule.has_ports() => {
                    for p in [Proto::TCP, Proto::UDP] {
                        spans.push(Span {
                            lo: p.0.into(),
                            hi: p.0.into(),
                            rule: i,
                        });
                    }
                }
                None => any.push(i),
            }
        }
        let everywhere = b.bitmap(any.into_iter());
        let mut proto = b.table(&everywhere, &spans, 255);
        if proto.is_empty() {
            let id = b.intern(&everywhere);
            proto = vec![id; 256];
        }

        // VLAN.
        let unconstrained = b.bitmap(all().filter(|&i| rules[i].vlan.is_none()));
        let spans: Vec<Span> = all()
            .filter_map(|i| {
                let id = u128::from(rules[i].vlan?.get());
                Some(Span {
                    lo: id,
                    hi: id,
                    rule: i,
                })
            })
            .collect();
        let vlan = b.table(&unconstrained, &spans, 4095);
        let vlan_none = b.intern(&unconstrained);

        // Ports.
        let port_axis = |b: &mut Builder, field: fn(&RuleConfig) -> Option<PortRange>| {
            let unconstrained = b.bitmap(all().filter(|&i| field(&rules[i]).is_none()));
            let spans: Vec<Span> = all()
                .filter_map(|i| {
                    let range = field(&rules[i])?;
                    Some(Span {
                        lo: range.lo().into(),
                        hi: range.hi().into(),
                        rule: i,
                    })
                })
                .collect();
            let table = b.table(&unconstrained, &spans, u16::MAX.into());
            (table, b.intern(&unconstrained))
        };
        let (sport, sport_none) = port_axis(&mut b, |r| r.sport);
        let (dport, dport_none) = port_axis(&mut b, |r| r.dport);

        // Addresses, one table per family: a rule of the other family (by
        // either of its prefixes) is in no interval of it.
        let address_axis = |b: &mut Builder, family: Family, max: u128, src: bool| {
            let in_family = |i: &usize| rules[*i].family().is_none_or(|f| f == family);
            let prefix = |i: usize| if src { rules[i].src } else { rules[i].dst };
            let unconstrained = b.bitmap(all().filter(in_family).filter(|&i| prefix(i).is_none()));
            let spans: Vec<Span> = all()
                .filter(in_family)
                .filter_map(|i| {
                    let (lo, hi) = prefix(i)?.range();
                    Some(Span { lo, hi, rule: i })
                })
                .collect();
            (unconstrained, spans, max)
        };
        let (e, s, m) = address_axis(&mut b, Family::V4, u32::MAX.into(), true);
        let src_v4 = b.addresses(&e, &s, m);
        let (e, s, m) = address_axis(&mut b, Family::V4, u32::MAX.into(), false);
        let dst_v4 = b.addresses(&e, &s, m);
        let (e, s, m) = address_axis(&mut b, Family::V6, u128::MAX, true);
        let src_v6 = b.addresses(&e, &s, m);
        let (e, s, m) = address_axis(&mut b, Family::V6, u128::MAX, false);
        let dst_v6 = b.addresses(&e, &s, m);

        let mut pool = b.pool;
        pool.shrink_to_fit();
        Self {
            words: b.words,
            pool,
            proto,
            vlan,
            vlan_none,
            sport,
            dport,
            sport_none,
            dport_none,
            src_v4,
            dst_v4,
            src_v6,
            dst_v6,
        }
    }

    fn set(&self, id: SetId) -> &[u64] {
        let start = id as usize * self.words;
        self.pool.get(start..start + self.words).unwrap_or(&[])
    }

    /// The index of the first rule `f` matches.
    pub fn lookup(&self, f: &Fields) -> Option<usize> {
        let (src, dst) = if f.v6 {
            (self.src_v6.find(f.src), self.dst_v6.find(f.dst))
        } else {
            // Lossless: an IPv4 address is in the low 32 bits.
            (
                self.src_v4.find(f.src as u32),
                self.dst_v4.find(f.dst as u32),
            )
        };
        let proto = self.proto.get(usize::from(f.proto)).copied().unwrap_or(0);
        // An empty table means no rule constrains the axis: every value has
        // the set of the unconstrained rules.
        let vlan = f.vlan.map_or(self.vlan_none, |id| {
            self.vlan
                .get(usize::from(id))
                .copied()
                .unwrap_or(self.vlan_none)
        });
        let (sport, dport) = match f.ports {
            Some((s, d)) => (
                self.sport
                    .get(usize::from(s))
                    .copied()
                    .unwrap_or(self.sport_none),
                self.dport
                    .get(usize::from(d))
                    .copied()
                    .unwrap_or(self.dport_none),
            ),
            None => (self.sport_none, self.dport_none),
        };
        let words = self
            .set(proto)
            .iter()
            .zip(self.set(vlan))
            .zip(self.set(src))
            .zip(self.set(dst))
            .zip(self.set(sport))
            .zip(self.set(dport));
        for (w, (((((a, b), c), d), e), g)) in words.enumerate() {
            let hits = a & b & c & d & e & g;
            if hits != 0 {
                return Some(w * 64 + hits.trailing_zeros() as usize);
            }
        }
        None
    }

    /// Bytes the index holds.
    pub fn bytes(&self) -> usize {
        let tables = self.proto.len() + self.vlan.len() + self.sport.len() + self.dport.len();
        self.pool.len() * size_of::<u64>()
            + tables * size_of::<SetId>()
            + self.src_v4.bytes()
            + self.dst_v4.bytes()
            + self.src_v6.bytes()
            + self.dst_v6.bytes()
    }
}

#[cfg(test)]
mod tests;
