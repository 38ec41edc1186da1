//! The mapping table: which inside endpoint is which outside endpoint, the
//! free ports of every pool address, and the idle-expiry order.
//!
//! Everything is allocated when the table is built and never grows:
//!
//! - mappings live in a slab (`slots`) with a free list of slot indices;
//! - two hash indexes point into it, by inside and by outside endpoint,
//!   sized so hashbrown never needs to reallocate (see [`index_capacity`]);
//! - each (pool address, protocol) has a ring of free ports, a `VecDeque`
//!   holding the whole range: allocating pops the front, freeing pushes the
//!   back, O(1) both, and a freed port waits a full cycle before reuse, so
//!   a late packet of an old flow rarely meets a new one;
//! - each protocol has a doubly linked list of its dynamic mappings from
//!   least to most recently used, threaded through the slab: with one
//!   timeout per protocol the least recently used is the first to expire,
//!   so expiry looks only at list heads.
//!
//! Mappings are endpoint-independent (RFC 4787 REQ-1, RFC 5382 REQ-1): one
//! inside address and port maps to one outside address and port whatever
//! the remote end, so the mapping is reused for every flow from it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::config::{ForwardProto, PortRange, StaticForward};

/// A protocol the NAT translates, with an identifier to map: a port for TCP
/// and UDP, the echo identifier for ICMP (RFC 5508 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP echo.
    Icmp,
}

impl Proto {
    /// Every protocol, in index order.
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

    fn index(self) -> usize {
        self as usize
    }
}

impl From<ForwardProto> for Proto {
    fn from(proto: ForwardProto) -> Self {
        match proto {
            ForwardProto::Tcp => Proto::Tcp,
            ForwardProto::Udp => Proto::Udp,
        }
    }
}

/// One side of a mapping: protocol, address, and port (or echo identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The protocol.
    pub proto: Proto,
    /// The address.
    pub addr: Ipv4Addr,
    /// The port, or ICMP echo identifier.
    pub port: u16,
}

impl Endpoint {
    /// The endpoint `proto addr:port`.
    pub const fn new(proto: Proto, addr: Ipv4Addr, port: u16) -> Self {
        Self { proto, addr, port }
    }

    /// The address and port.
    pub fn socket(self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr, self.port)
    }

    fn packed(self) -> u64 {
        (u64::from(u32::from(self.addr)) << 24)
            | (u64::from(self.port) << 8)
            | self.proto.index() as u64
    }
}

impl Hash for Endpoint {
    // One write of the packed fields: a third of the hashing a derived impl
    // does, on the packet path. Consistent with the derived `Eq`: equal
    // endpoints pack equal.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.packed());
    }
}

/// What a lookup found: the endpoint on the other side, and whether the
/// mapping is a static forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The other side.
    pub to: Endpoint,
    /// A static forward (never expires), not a dynamic mapping.
    pub is_static: bool,
}

/// Why an outbound packet got no mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No free port on any pool address for the protocol.
    PoolExhausted,
    /// `max_mappings` dynamic mappings exist.
    TableFull,
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Mapping {
    inside: Endpoint,
    outside: Endpoint,
    /// Index of `outside.addr` in the pool: its port rings.
    pool: u16,
    /// Last packet; `None` for a static forward.
    last_seen: Option<Instant>,
    /// Neighbours in the protocol's LRU list.
    prev: u32,
    next: u32,
}

impl Mapping {
    const VACANT: Mapping = Mapping {
        inside: Endpoint::new(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 0),
        outside: Endpoint::new(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 0),
        pool: 0,
        last_seen: None,
        prev: NIL,
        next: NIL,
    };
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

/// The capacity to give a hash index that holds at most `n` entries with
/// removals in between, so it never reallocates.
///
/// hashbrown marks removed entries as tombstones; an insert that finds no
/// room left rehashes in place when the live entries fit in half the
/// table, and reallocates otherwise (`RawTable::reserve_rehash`). Room for
/// `2n` keeps `n` entries under half, so it always rehashes in place.
fn index_capacity(n: usize) -> usize {
    2 * n
}

/// The mapping table.
pub struct Table {
    slots: Vec<Mapping>,
    free: Vec<u32>,
    by_inside: HashMap<Endpoint, u32>,
    by_outside: HashMap<Endpoint, u32>,
    lru: [List; 3],
    timeouts: [Duration; 3],
    /// Free ports of pool address `i` and protocol `p` at `i * 3 + p`.
    ports: Vec<VecDeque<u16>>,
    /// Ascending, so [`Table::pool_index`] can binary-search.
    pool: Vec<Ipv4Addr>,
    dynamic: usize,
    max_dynamic: usize,
    /// Picks a pool address per inside address.
    pool_hasher: RandomState,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("pool", &self.pool)
            .field("dynamic", &self.dynamic)
            .field("max_dynamic", &self.max_dynamic)
            .field(
                "statics",
                &(self.slots.len() - self.free.len() - self.dynamic),
            )
            .finish_non_exhaustive()
    }
}

impl Table {
    /// A table over `pool` (ascending, no duplicates, at most `u16::MAX`
    /// addresses) handing out `range`, holding `statics` and at most
    /// `max_dynamic` dynamic mappings, expiring them after `timeouts`
    /// (indexed like [`Proto::ALL`]). The statics must not collide (the
    /// config validation guarantees it).
    pub fn new(
        pool: Vec<Ipv4Addr>,
        range: PortRange,
        statics: &[StaticForward],
        max_dynamic: usize,
        timeouts: [Duration; 3],
        seed: u64,
    ) -> Self {
        let total = statics.len() + max_dynamic;
        let mut table = Table {
            slots: vec![Mapping::VACANT; total],
            free: Vec::with_capacity(total),
            by_inside: HashMap::with_capacity(index_capacity(total)),
            by_outside: HashMap::with_capacity(index_capacity(total)),
            lru: [List::EMPTY; 3],
            timeouts,
            ports: Vec::with_capacity(pool.len() * 3),
            pool,
            dynamic: 0,
            max_dynamic,
            pool_hasher: RandomState::new(),
        };
        for (slot, forward) in statics.iter().enumerate() {
            let proto = Proto::from(forward.proto);
            let inside = Endpoint::new(proto, *forward.inside.ip(), forward.inside.port());
            let outside = Endpoint::new(proto, *forward.outside.ip(), forward.outside.port());
            let pool = table.pool_index(outside.addr).unwrap_or(0);
            table.slots[slot] = Mapping {
                inside,
                outside,
                pool: pool as u16,
                ..Mapping::VACANT
            };
            table.by_inside.insert(inside, slot as u32);
            table.by_outside.insert(outside, slot as u32);
        }
        // Popped from the end: lowest slot first.
        table
            .free
            .extend((statics.len()..total).rev().map(|i| i as u32));

        let mut rng = XorShift::new(seed);
        for index in 0..table.pool.len() {
            for proto in Proto::ALL {
                // Ports a static forward holds on this address never enter
                // the ring.
                let mut taken: Vec<u16> = statics
                    .iter()
                    .filter(|f| {
                        Proto::from(f.proto) == proto && *f.outside.ip() == table.pool[index]
                    })
                    .map(|f| f.outside.port())
                    .collect();
                taken.sort_unstable();
                let mut ring = VecDeque::with_capacity(range.count());
                ring.extend(
                    (range.first()..=range.last()).filter(|p| taken.binary_search(p).is_err()),
                );
                // A random permutation: sequential outside ports would undo
                // the source-port randomization of the hosts behind the NAT
                // (RFC 6056 §1, RFC 5452 §9.2 on DNS spoofing).
                let ring_slice = ring.make_contiguous();
                for i in (1..ring_slice.len()).rev() {
                    let j = rng.below(i + 1);
                    ring_slice.swap(i, j);
                }
                table.ports.push(ring);
            }
        }
        table
    }

    /// Sets the idle timeouts (indexed like [`Proto::ALL`]). Idleness is
    /// always measured from a mapping's last packet, so the new ones apply
    /// to every mapping at the next [`Table::expire`]; each protocol's LRU
    /// list stays in order, since one timeout applies to all of it.
    pub fn set_timeouts(&mut self, timeouts: [Duration; 3]) {
        self.timeouts = timeouts;
    }

    /// The pool address's index, if `addr` is one.
    pub fn pool_index(&self, addr: Ipv4Addr) -> Option<usize> {
        self.pool.binary_search(&addr).ok()
    }

    /// Dynamic mappings in the table.
    pub fn dynamic(&self) -> usize {
        self.dynamic
    }

    /// Capacities of the slab, free list and indexes, for tests that check
    /// nothing grew.
    #[cfg(test)]
    pub(crate) fn capacities(&self) -> [usize; 4] {
        [
            self.slots.capacity(),
            self.free.capacity(),
            self.by_inside.capacity(),
            self.by_outside.capacity(),
        ]
    }

    /// Free ports of pool address `pool` for `proto`.
    pub fn free_ports(&self, pool: usize, proto: Proto) -> usize {
        self.ports
            .get(pool * 3 + proto.index())
            .map_or(0, VecDeque::len)
    }

    /// The mapping of an outbound packet from `inside`, created if there is
    /// none; refreshes it.
    pub fn outbound(&mut self, inside: Endpoint, now: Instant) -> Result<Found, Refused> {
        if let Some(found) = self.lookup_inside(inside, Some(now)) {
            return Ok(found);
        }
        if self.dynamic >= self.max_dynamic {
            return Err(Refused::TableFull);
        }
        let slot = self.free.last().copied().ok_or(Refused::TableFull)?;
        let (pool, port) = self.allocate(inside)?;
        self.free.pop();
        let outside = Endpoint::new(inside.proto, self.pool[pool], port);
        self.slots[slot as usize] = Mapping {
            inside,
            outside,
            pool: pool as u16,
            last_seen: Some(now),
            prev: NIL,
            next: NIL,
        };
        self.by_inside.insert(inside, slot);
        self.by_outside.insert(outside, slot);
        self.push_back(slot);
        self.dynamic += 1;
        Ok(Found {
            to: outside,
            is_static: false,
        })
    }

    /// A free port for `inside`: on the pool address its address hashes to,
    /// so one host's flows share an outside address ("paired" pooling, RFC
    /// 4787 REQ-2), or on the next address with ports left once that one
    /// runs out.
    fn allocate(&mut self, inside: Endpoint) -> Result<(usize, u16), Refused> {
        let n = self.pool.len();
        let preferred = (self.pool_hasher.hash_one(inside.addr) % n as u64) as usize;
        for k in 0..n {
            let pool = (preferred + k) % n;
            if let Some(port) = self.ports[pool * 3 + inside.proto.index()].pop_front() {
                return Ok((pool, port));
            }
        }
        Err(Refused::PoolExhausted)
    }

    /// The outside endpoint mapped to `inside`, if any; refreshed when
    /// `now` is given.
    pub fn lookup_inside(&mut self, inside: Endpoint, now: Option<Instant>) -> Option<Found> {
        let slot = *self.by_inside.get(&inside)?;
        Some(self.hit(slot, now, |m| m.outside))
    }

    /// The mapping of `inside`, if any, without refreshing it.
    pub fn peek_inside(&self, inside: Endpoint) -> Option<Found> {
        let slot = *self.by_inside.get(&inside)?;
        let mapping = self.slots[slot as usize];
        Some(Found {
            to: mapping.outside,
            is_static: mapping.last_seen.is_none(),
        })
    }

    /// The inside endpoint mapped to `outside`, if any; refreshed when
    /// `now` is given.
    pub fn lookup_outside(&mut self, outside: Endpoint, now: Option<Instant>) -> Option<Found> {
        let slot = *self.by_outside.get(&outside)?;
        Some(self.hit(slot, now, |m| m.inside))
    }

    fn hit(&mut self, slot: u32, now: Option<Instant>, side: fn(&Mapping) -> Endpoint) -> Found {
        let mapping = self.slots[slot as usize];
        let is_static = mapping.last_seen.is_none();
        if let (Some(now), false) = (now, is_static) {
            self.slots[slot as usize].last_seen = Some(now);
            self.unlink(slot);
            self.push_back(slot);
        }
        Found {
            to: side(&mapping),
            is_static,
        }
    }

    /// Removes the dynamic mappings idle for their protocol's timeout at
    /// `now`; returns how many. Callers pass a `now` that never goes back.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        for proto in Proto::ALL {
            let timeout = self.timeouts[proto.index()];
            loop {
                let head = self.lru[proto.index()].head;
                if head == NIL {
                    break;
                }
                let idle = self.slots[head as usize]
                    .last_seen
                    .map_or(Duration::ZERO, |seen| now.saturating_duration_since(seen));
                if idle < timeout {
                    break;
                }
                self.remove(head);
                expired += 1;
            }
        }
        expired
    }

    fn remove(&mut self, slot: u32) {
        let mapping = self.slots[slot as usize];
        self.unlink(slot);
        self.by_inside.remove(&mapping.inside);
        self.by_outside.remove(&mapping.outside);
        let ring = usize::from(mapping.pool) * 3 + mapping.outside.proto.index();
        self.ports[ring].push_back(mapping.outside.port);
        self.slots[slot as usize] = Mapping::VACANT;
        self.free.push(slot);
        self.dynamic -= 1;
    }

    fn push_back(&mut self, slot: u32) {
        let list = &mut self.lru[self.slots[slot as usize].inside.proto.index()];
        let old_tail = list.tail;
        list.tail = slot;
        if old_tail == NIL {
            list.head = slot;
        }
        if old_tail != NIL {
            self.slots[old_tail as usize].next = slot;
        }
        let mapping = &mut self.slots[slot as usize];
        mapping.prev = old_tail;
        mapping.next = NIL;
    }

    fn unlink(&mut self, slot: u32) {
        let Mapping {
            prev, next, inside, ..
        } = self.slots[slot as usize];
        let list = &mut self.lru[inside.proto.index()];
        if prev == NIL {
            list.head = next;
        }
        if next == NIL {
            list.tail = prev;
        }
        if prev != NIL {
            self.slots[prev as usize].next = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        let mapping = &mut self.slots[slot as usize];
        mapping.prev = NIL;
        mapping.next = NIL;
    }
}

/// xorshift64*: enough to shuffle the port rings once (not cryptographic;
/// the seed is random per process).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for `n` up to 65536.
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}
