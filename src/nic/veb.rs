//! The NIC's embedded switch (VEB): one uplink (the wire) and one port per VF.
//!
//! The switch decides, it never moves packets: each method takes a frame's header and
//! returns a [`Decision`] (deliver to these VFs and/or the uplink, or drop with a
//! reason). The engine carries it out.
//!
//! Behaviour, as on SR-IOV NICs' embedded bridges:
//! - a forwarding table (destination MAC, VLAN) → VF, programmed from each VF's MAC and
//!   port VLAN (no learning: the host knows every VF's address);
//! - broadcast and multicast replicated to every VF in the frame's VLAN (and to the
//!   uplink when a VF sent it); unknown unicast from a VF goes to the uplink, from the
//!   wire it has nowhere to go;
//! - on VF transmit: MAC anti-spoof (source MAC must be the VF's, unless spoof check is
//!   off or the VF is trusted) and VLAN anti-spoof (a VF with a port VLAN may not send
//!   tagged frames; an untrusted VF without one may not either);
//! - a port VLAN is inserted on transmit and stripped on receive: the VF sees only
//!   untagged frames;
//! - a VF whose link is down neither sends nor receives;
//! - steering rules for chains override the table: wire frames matching {VLAN, dst MAC}
//!   go to a VF; frames a VF sends go to another VF, or to the wire re-tagged;
//! - two-way chains ("NF on a stick"): wire frames of both VLANs of a pair enter the
//!   same first hop, and the last hop's frames leave on the VLAN opposite to the one
//!   their source MAC was last seen on. For that the switch learns, for wire frames
//!   steered in on a two-way VLAN, (source MAC, VLAN) in a bounded table
//!   ([`LEARN_CAPACITY`] entries, CLOCK eviction): the only learning it does.

use std::collections::{HashMap, VecDeque};

use etherparse::{EtherType, Ethernet2HeaderSlice, SingleVlanHeaderSlice};
use thiserror::Error;

use super::types::{Link, MacAddr, VfId, VlanTag};

/// Largest number of VF ports (the PF's `total_vfs` limit).
pub const MAX_PORTS: usize = 256;

/// Most (source MAC, VLAN) pairs the switch remembers for two-way chains. A full table
/// evicts a pair not seen since the eviction hand last passed it (CLOCK), so a flood of
/// new sources cannot grow memory, and busy sources tend to stay.
pub const LEARN_CAPACITY: usize = 4096;

/// What the switch needs to know about one VF port. The PF keeps it in step with the
/// VF's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// The VF's MAC in effect.
    pub mac: MacAddr,
    /// Port VLAN inserted on transmit and stripped on receive.
    pub vlan: Option<VlanTag>,
    /// MAC anti-spoof enabled.
    pub spoof_check: bool,
    /// Trusted: may use any source MAC and send tagged frames.
    pub trust: bool,
    /// Link up as the VF sees it (admin state applied to the PF link).
    pub up: bool,
}

impl Port {
    /// The VLAN this port belongs to (`None` = untagged traffic).
    fn member_vid(&self) -> Option<u16> {
        self.vlan.map(|t| t.vid)
    }
}

/// The addresses and tag of a frame, read from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The outer 802.1Q tag, if the frame carries one.
    pub tag: Option<VlanTag>,
}

/// A frame too short to carry the headers it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("frame of {len} bytes is too short for its Ethernet/802.1Q header")]
pub struct HeaderError {
    /// The frame's length.
    pub len: usize,
}

impl FrameHeader {
    /// Reads the Ethernet header and an outer 802.1Q tag.
    pub fn parse(frame: &[u8]) -> Result<Self, HeaderError> {
        let err = HeaderError { len: frame.len() };
        let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| err)?;
        let tag = if eth.ether_type() == EtherType::VLAN_TAGGED_FRAME {
            let rest = frame.get(eth.slice().len()..).ok_or(err)?;
            let vlan = SingleVlanHeaderSlice::from_slice(rest).map_err(|_| err)?;
            Some(VlanTag {
                vid: vlan.vlan_identifier().value(),
                pcp: vlan.priority_code_point().value(),
            })
        } else {
            None
        };
        Ok(FrameHeader {
            dst: MacAddr(eth.destination()),
            src: MacAddr(eth.source()),
            tag,
        })
    }
}

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers.
    Malformed,
    /// No port for the destination (unknown unicast from the wire, empty flood).
    NoRoute,
    /// The sending or the only receiving port has no link.
    LinkDown,
    /// Source MAC is not the sending VF's.
    Spoof,
    /// VLAN anti-spoof: a tag this VF may not send.
    Vlan,
    /// Leaving a two-way chain, but the address that says which way (the source; for
    /// a frame reflected by the first hop, the destination) was never learned from the
    /// wire on either of the chain's VLANs, or was forgotten: an NF-originated frame,
    /// say. The switch cannot tell which side it is for.
    Unlearned,
}

impl DropReason {
    /// Every reason, for counters and labels.
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::NoRoute,
        DropReason::LinkDown,
        DropReason::Spoof,
        DropReason::Vlan,
        DropReason::Unlearned,
    ];

    /// A stable lowercase name (metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoRoute => "no_route",
            DropReason::LinkDown => "link_down",
            DropReason::Spoof => "spoof",
            DropReason::Vlan => "vlan",
            DropReason::Unlearned => "unlearned",
        }
    }
}

/// A set of VF ports (a bitmap over up to 256 VFs: no allocation per frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortSet([u64; MAX_PORTS / 64]);

impl PortSet {
    /// The empty set.
    pub const EMPTY: PortSet = PortSet([0; MAX_PORTS / 64]);

    /// A set of one. Each word is computed, not stored at a computed index: a store
    /// at a computed index makes the set live in memory, where the 16-byte copies
    /// that follow it stall on the 8-byte store (store forwarding fails); in some
    /// `perf` profiles of the engine at full rate that stall held 30–45% of its
    /// samples.
    pub fn one(vf: VfId) -> Self {
        let i = vf.index();
        let word = |w: usize| {
            if i < MAX_PORTS && i / 64 == w {
                1 << (i % 64)
            } else {
                0
            }
        };
        PortSet(std::array::from_fn(word))
    }

    /// Adds a VF.
    pub fn insert(&mut self, vf: VfId) {
        let i = vf.index();
        if i < MAX_PORTS {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    /// Whether a VF is in the set.
    pub fn contains(&self, vf: VfId) -> bool {
        let i = vf.index();
        i < MAX_PORTS && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Number of VFs.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// No VF.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The VFs, in index order (visits set bits only).
    pub fn iter(&self) -> impl Iterator<Item = VfId> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Some(VfId((w * 64) as u16 + bit as u16))
            })
        })
    }
}

/// Where a forwarded frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// VF ports to deliver to.
    pub vfs: PortSet,
    /// Deliver to the uplink too, leaving with this tag (`Some(None)` = untagged).
    pub uplink: Option<Option<VlanTag>>,
    /// The VLAN the frame travels in inside the switch.
    pub vlan: Option<VlanTag>,
}

/// The switch's verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver.
    Forward(Forward),
    /// Drop; the reason is counted on the sending port (or the wire).
    Drop(DropReason),
}

/// Which wire frames a chain takes in. `None` fields match anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireMatch {
    /// Outer VLAN id (0 = untagged frames only).
    pub vlan: Option<u16>,
    /// Destination MAC.
    pub dst: Option<MacAddr>,
}

impl WireMatch {
    fn matches(&self, header: &FrameHeader) -> bool {
        let vid = header.tag.map_or(0, |t| t.vid);
        self.vlan.is_none_or(|v| v == vid) && self.dst.is_none_or(|d| d == header.dst)
    }
}

/// Where frames a VF sends are steered, overriding the forwarding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxSteer {
    /// To another VF (the next hop of a chain).
    ToVf(VfId),
    /// To the wire, re-tagged with this VLAN, or keeping the frame's VLAN if `None`.
    ToWire(Option<VlanTag>),
    /// The last hop of a two-way chain between VLANs `a` and `b`: to the wire, tagged
    /// with the VLAN opposite to the one the frame's source MAC was last seen on
    /// coming in from the wire; dropped ([`DropReason::Unlearned`]) if it was seen on
    /// neither.
    ToWireTwoWay {
        /// One side (the chain's classifier VLAN).
        a: VlanTag,
        /// The other side (the chain's egress VLAN).
        b: VlanTag,
    },
}

/// A refused steering change. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SteerError {
    /// A VF beyond the switch's ports.
    #[error("{0} has no port on the switch")]
    NoSuchPort(VfId),
    /// Another rule already takes these frames.
    #[error("wire frames matching {0:?} are already steered to {1}")]
    WireConflict(WireMatch, VfId),
    /// The VF's transmit is already steered.
    #[error("frames sent by {0} are already steered")]
    TxConflict(VfId),
    /// A VF steered to itself.
    #[error("{0} cannot be steered to itself")]
    SelfLoop(VfId),
    /// A two-way pair that is not two distinct VLAN ids 1-4094.
    #[error("a two-way chain needs two different VLAN ids 1-4094, not {0} and {1}")]
    TwoWayVlans(u16, u16),
}

/// Per-port drop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// [`DropReason::Malformed`].
    pub malformed: u64,
    /// [`DropReason::NoRoute`].
    pub no_route: u64,
    /// [`DropReason::LinkDown`].
    pub link_down: u64,
    /// [`DropReason::Spoof`].
    pub spoof: u64,
    /// [`DropReason::Vlan`].
    pub vlan: u64,
    /// [`DropReason::Unlearned`].
    pub unlearned: u64,
}

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Malformed => self.malformed,
            DropReason::NoRoute => self.no_route,
            DropReason::LinkDown => self.link_down,
            DropReason::Spoof => self.spoof,
            DropReason::Vlan => self.vlan,
            DropReason::Unlearned => self.unlearned,
        }
    }

    fn bump(&mut self, reason: DropReason) {
        let slot = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::NoRoute => &mut self.no_route,
            DropReason::LinkDown => &mut self.link_down,
            DropReason::Spoof => &mut self.spoof,
            DropReason::Vlan => &mut self.vlan,
            DropReason::Unlearned => &mut self.unlearned,
        };
        *slot += 1;
    }
}

/// When a (source MAC, VLAN) pair was last seen, for the CLOCK eviction.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The learning sequence number at the last sighting: larger is later.
    seq: u64,
    /// Seen again since the eviction hand last passed: spared once.
    referenced: bool,
}

/// A set of VLAN ids 0-4095, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VidSet([u64; 64]);

impl Default for VidSet {
    fn default() -> Self {
        VidSet([0; 64])
    }
}

impl VidSet {
    fn insert(&mut self, vid: u16) {
        let i = usize::from(vid & 0x0fff);
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, vid: u16) -> bool {
        let i = usize::from(vid & 0x0fff);
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// The sources seen coming in from the wire on the VLANs of two-way chains.
///
/// Keyed by (MAC, VLAN) rather than MAC alone, so that one host (a router's MAC, say)
/// present on the VLANs of two unrelated chains does not confuse either; a chain
/// compares the pair's two entries and the later sighting wins.
#[derive(Debug, Clone, Default)]
struct Learned {
    seen: HashMap<(MacAddr, u16), Seen>,
    /// Every key of `seen`, in eviction-hand order.
    hand: VecDeque<(MacAddr, u16)>,
    /// VLAN ids to learn on: the sides of the two-way chains.
    vids: VidSet,
    seq: u64,
    evictions: u64,
}

impl Learned {
    /// Records a sighting of `mac` on `vid`, if `vid` is a two-way chain's side.
    fn learn(&mut self, mac: MacAddr, vid: u16) {
        if !self.vids.contains(vid) || !mac.is_unicast() {
            return;
        }
        self.seq += 1;
        let key = (mac, vid);
        if let Some(seen) = self.seen.get_mut(&key) {
            seen.seq = self.seq;
            seen.referenced = true;
            return;
        }
        if self.seen.len() >= LEARN_CAPACITY {
            self.evict_one();
        }
        // Capacity was reserved when the first two-way chain was steered: no
        // allocation per frame.
        self.seen.insert(
            key,
            Seen {
                seq: self.seq,
                referenced: false,
            },
        );
        self.hand.push_back(key);
    }

    /// CLOCK: the hand skips (and clears) referenced entries, evicts the first other.
    /// Ends within two turns, since a passed entry loses its reference.
    fn evict_one(&mut self) {
        while let Some(key) = self.hand.pop_front() {
            match self.seen.get_mut(&key) {
                Some(seen) if seen.referenced => {
                    seen.referenced = false;
                    self.hand.push_back(key);
                }
                Some(_) => {
                    self.seen.remove(&key);
                    self.evictions += 1;
                    return;
                }
                None => {}
            }
        }
    }

    /// Which of `a` and `b` `mac` was last seen on, if either.
    fn side(&self, mac: MacAddr, a: u16, b: u16) -> Option<u16> {
        let on_a = self.seen.get(&(mac, a)).map(|s| s.seq);
        let on_b = self.seen.get(&(mac, b)).map(|s| s.seq);
        match (on_a, on_b) {
            (Some(x), Some(y)) => Some(if x > y { a } else { b }),
            (Some(_), None) => Some(a),
            (None, Some(_)) => Some(b),
            (None, None) => None,
        }
    }

    /// Learns on exactly the sides of `rules`' two-way chains; forgets the rest.
    fn retarget(&mut self, rules: &[Option<TxSteer>]) {
        self.vids = VidSet::default();
        for rule in rules.iter().flatten() {
            if let TxSteer::ToWireTwoWay { a, b } = rule {
                self.vids.insert(a.vid);
                self.vids.insert(b.vid);
            }
        }
        let vids = self.vids;
        self.seen.retain(|(_, vid), _| vids.contains(*vid));
        self.hand.retain(|(_, vid)| vids.contains(*vid));
        if vids.is_empty() {
            // No two-way chain left: give the memory back.
            self.seen = HashMap::new();
            self.hand = VecDeque::new();
        } else {
            // Twice the entries: a table that churns at capacity then always rehashes
            // its tombstones in place and never grows, so learning never allocates.
            self.seen.reserve(2 * LEARN_CAPACITY - self.seen.len());
            self.hand.reserve(LEARN_CAPACITY - self.hand.len());
        }
    }
}

/// What the switch has learned for two-way chains, for counters and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnStats {
    /// (source MAC, VLAN) pairs remembered now, at most [`LEARN_CAPACITY`].
    pub entries: usize,
    /// Pairs forgotten to make room.
    pub evictions: u64,
}

/// The embedded switch of one PF.
#[derive(Debug, Clone, Default)]
pub struct Veb {
    ports: Vec<Option<Port>>,
    fdb: HashMap<(MacAddr, u16), VfId>,
    uplink_up: bool,
    wire_rules: Vec<(WireMatch, VfId)>,
    tx_rules: Vec<Option<TxSteer>>,
    port_drops: Vec<DropCounts>,
    wire_drops: DropCounts,
    learned: Learned,
}

impl Veb {
    /// A switch with `num_ports` VF ports, none configured, uplink up.
    pub fn new(num_ports: u16) -> Self {
        let n = usize::from(num_ports).min(MAX_PORTS);
        Veb {
            ports: vec![None; n],
            fdb: HashMap::new(),
            uplink_up: true,
            wire_rules: Vec::new(),
            tx_rules: vec![None; n],
            port_drops: vec![DropCounts::default(); n],
            wire_drops: DropCounts::default(),
            learned: Learned::default(),
        }
    }

    /// Sets the uplink's carrier.
    pub fn set_uplink(&mut self, link: Link) {
        self.uplink_up = link == Link::Up;
    }

    /// Programs a VF port (`None` removes it from the switch).
    pub fn set_port(&mut self, vf: VfId, port: Option<Port>) -> Result<(), SteerError> {
        let slot = self
            .ports
            .get_mut(vf.index())
            .ok_or(SteerError::NoSuchPort(vf))?;
        *slot = port;
        self.rebuild_fdb();
        Ok(())
    }

    /// A port's programming.
    pub fn port(&self, vf: VfId) -> Option<&Port> {
        self.ports.get(vf.index()).and_then(Option::as_ref)
    }

    fn rebuild_fdb(&mut self) {
        self.fdb.clear();
        for (i, port) in self.ports.iter().enumerate() {
            if let Some(p) = port {
                // Lowest index wins on a duplicate MAC, deterministically.
                self.fdb
                    .entry((p.mac, p.member_vid().unwrap_or(0)))
                    .or_insert(VfId(i as u16));
            }
        }
    }

    /// Steers wire frames matching `m` to `vf`. Rules are tried in the order added. A
    /// VF may take several (a two-way chain's first hop takes both of its VLANs).
    pub fn steer_wire(&mut self, m: WireMatch, vf: VfId) -> Result<(), SteerError> {
        if vf.index() >= self.ports.len() {
            return Err(SteerError::NoSuchPort(vf));
        }
        if let Some((_, other)) = self.wire_rules.iter().find(|(r, _)| *r == m) {
            return Err(SteerError::WireConflict(m, *other));
        }
        self.wire_rules.push((m, vf));
        Ok(())
    }

    /// Steers what `vf` sends.
    pub fn steer_tx(&mut self, vf: VfId, steer: TxSteer) -> Result<(), SteerError> {
        if vf.index() >= self.ports.len() {
            return Err(SteerError::NoSuchPort(vf));
        }
        match steer {
            TxSteer::ToVf(to) => {
                if to.index() >= self.ports.len() {
                    return Err(SteerError::NoSuchPort(to));
                }
                if to == vf {
                    return Err(SteerError::SelfLoop(vf));
                }
            }
            TxSteer::ToWireTwoWay { a, b } => {
                let valid = |vid: u16| (1..=4094).contains(&vid);
                if a.vid == b.vid || !valid(a.vid) || !valid(b.vid) {
                    return Err(SteerError::TwoWayVlans(a.vid, b.vid));
                }
            }
            TxSteer::ToWire(_) => {}
        }
        let slot = &mut self.tx_rules[vf.index()];
        if slot.is_some() {
            return Err(SteerError::TxConflict(vf));
        }
        *slot = Some(steer);
        if matches!(steer, TxSteer::ToWireTwoWay { .. }) {
            self.learned.retarget(&self.tx_rules);
        }
        Ok(())
    }

    /// Removes every steering rule that mentions `vf` (its chain is gone). For the last
    /// hop of a two-way chain that includes what was learned on the chain's VLANs.
    pub fn unsteer(&mut self, vf: VfId) {
        self.wire_rules.retain(|(_, to)| *to != vf);
        let two_way = matches!(self.tx_rule(vf), Some(TxSteer::ToWireTwoWay { .. }));
        if let Some(slot) = self.tx_rules.get_mut(vf.index()) {
            *slot = None;
        }
        for slot in &mut self.tx_rules {
            if *slot == Some(TxSteer::ToVf(vf)) {
                *slot = None;
            }
        }
        if two_way {
            self.learned.retarget(&self.tx_rules);
        }
    }

    /// What is learned for two-way chains.
    pub fn learn_stats(&self) -> LearnStats {
        LearnStats {
            entries: self.learned.seen.len(),
            evictions: self.learned.evictions,
        }
    }

    /// Whether `mac` has been seen coming in from the wire on `vid` (and is still
    /// remembered). Only the VLANs of two-way chains are learned.
    pub fn has_learned(&self, mac: MacAddr, vid: u16) -> bool {
        self.learned.seen.contains_key(&(mac, vid))
    }

    /// The wire steering rules, in order.
    pub fn wire_rules(&self) -> &[(WireMatch, VfId)] {
        &self.wire_rules
    }

    /// The transmit steering of a VF.
    pub fn tx_rule(&self, vf: VfId) -> Option<TxSteer> {
        self.tx_rules.get(vf.index()).copied().flatten()
    }

    /// Drops counted against frames a VF sent.
    pub fn port_drops(&self, vf: VfId) -> DropCounts {
        self.port_drops.get(vf.index()).copied().unwrap_or_default()
    }

    /// Drops counted against frames from the wire.
    pub fn wire_drops(&self) -> DropCounts {
        self.wire_drops
    }

    /// The tag a frame should carry when written into `vf`'s buffer: none for a VF with
    /// a port VLAN (stripped; the rx descriptor reports it), else the switch VLAN.
    pub fn rx_tag(&self, vf: VfId, forward: &Forward) -> Option<VlanTag> {
        match self.port(vf) {
            Some(p) if p.vlan.is_some() => None,
            _ => forward.vlan,
        }
    }

    fn up_port(&self, vf: VfId) -> Option<&Port> {
        self.port(vf).filter(|p| p.up)
    }

    /// VFs that receive a flood in VLAN `vid`, except `except`.
    fn flood_set(&self, vid: Option<u16>, except: Option<VfId>) -> PortSet {
        let mut set = PortSet::EMPTY;
        for (i, port) in self.ports.iter().enumerate() {
            let vf = VfId(i as u16);
            if let Some(p) = port {
                if p.up && p.member_vid() == vid && Some(vf) != except {
                    set.insert(vf);
                }
            }
        }
        set
    }

    /// Decides where a frame received on the wire goes. A frame steered into a chain
    /// on a two-way chain's VLAN also teaches the switch where its source is.
    ///
    /// This and the other per-frame decisions are inlined into the engine's loop: a
    /// [`Decision`] returned through memory is written field by field and read back
    /// in wider loads, and each such read stalls (store forwarding fails); inlined,
    /// it stays in registers.
    #[inline]
    pub fn from_wire(&mut self, frame: &[u8]) -> Decision {
        let (decision, steered) = self.decide_wire(frame);
        match decision {
            Decision::Drop(reason) => self.wire_drops.bump(reason),
            Decision::Forward(_) => {
                if let Some(header) = steered {
                    let vid = header.tag.map_or(0, |t| t.vid);
                    self.learned.learn(header.src, vid);
                }
            }
        }
        decision
    }

    /// The decision, and the frame's header if a steering rule took it.
    #[inline]
    fn decide_wire(&self, frame: &[u8]) -> (Decision, Option<FrameHeader>) {
        let Ok(header) = FrameHeader::parse(frame) else {
            return (Decision::Drop(DropReason::Malformed), None);
        };
        let vlan = header.tag;
        let vid = vlan.map(|t| t.vid);
        let deliver_one = |vf: VfId| match self.up_port(vf) {
            Some(_) => Decision::Forward(Forward {
                vfs: PortSet::one(vf),
                uplink: None,
                vlan,
            }),
            None => Decision::Drop(DropReason::LinkDown),
        };
        if let Some((_, vf)) = self.wire_rules.iter().find(|(m, _)| m.matches(&header)) {
            return (deliver_one(*vf), Some(header));
        }
        if header.dst.is_multicast() {
            let vfs = self.flood_set(vid, None);
            if vfs.is_empty() {
                return (Decision::Drop(DropReason::NoRoute), None);
            }
            let forward = Forward {
                vfs,
                uplink: None,
                vlan,
            };
            return (Decision::Forward(forward), None);
        }
        let decision = match self.fdb.get(&(header.dst, vid.unwrap_or(0))) {
            Some(vf) => deliver_one(*vf),
            None => Decision::Drop(DropReason::NoRoute),
        };
        (decision, None)
    }

    /// Decides where a frame transmitted by `vf` goes, after anti-spoof checks.
    #[inline]
    pub fn from_vf(&mut self, vf: VfId, frame: &[u8]) -> Decision {
        let decision = self.decide_vf(vf, frame);
        if let (Decision::Drop(reason), Some(counts)) =
            (decision, self.port_drops.get_mut(vf.index()))
        {
            counts.bump(reason);
        }
        decision
    }

    /// Decides where a frame that `vf` reflects goes: back where the VF's traffic came
    /// from (the previous hop of its chain, else the wire), after the same anti-spoof
    /// checks as any transmit.
    #[inline]
    pub fn reflect_from_vf(&mut self, vf: VfId, frame: &[u8]) -> Decision {
        let decision = self.decide_vf_as(vf, frame, true);
        if let (Decision::Drop(reason), Some(counts)) =
            (decision, self.port_drops.get_mut(vf.index()))
        {
            counts.bump(reason);
        }
        decision
    }

    /// The VF whose transmit is steered into `vf` (its previous hop), if any.
    fn previous_hop(&self, vf: VfId) -> Option<VfId> {
        self.tx_rules
            .iter()
            .position(|r| *r == Some(TxSteer::ToVf(vf)))
            .map(|i| VfId(i as u16))
    }

    /// The VLAN pair of the two-way chain `vf` is a hop of, found by following the
    /// chain's steering to its last hop.
    fn two_way_pair(&self, vf: VfId) -> Option<(VlanTag, VlanTag)> {
        let mut at = vf;
        // A chain visits each port at most once; the bound only guards against a loop.
        for _ in 0..=self.tx_rules.len() {
            match self.tx_rule(at)? {
                TxSteer::ToVf(next) => at = next,
                TxSteer::ToWireTwoWay { a, b } => return Some((a, b)),
                TxSteer::ToWire(_) => return None,
            }
        }
        None
    }

    #[inline]
    fn decide_vf(&self, vf: VfId, frame: &[u8]) -> Decision {
        self.decide_vf_as(vf, frame, false)
    }

    #[inline]
    fn decide_vf_as(&self, vf: VfId, frame: &[u8], reflect: bool) -> Decision {
        let Some(port) = self.up_port(vf) else {
            return Decision::Drop(DropReason::LinkDown);
        };
        let Ok(header) = FrameHeader::parse(frame) else {
            return Decision::Drop(DropReason::Malformed);
        };
        if port.spoof_check && !port.trust && header.src != port.mac {
            return Decision::Drop(DropReason::Spoof);
        }
        let vlan = match (port.vlan, header.tag) {
            (Some(_), Some(_)) => return Decision::Drop(DropReason::Vlan),
            (None, Some(_)) if !port.trust => return Decision::Drop(DropReason::Vlan),
            (Some(pv), None) => Some(pv),
            (None, tag) => tag,
        };
        let vid = vlan.map(|t| t.vid);
        let to_uplink = |tag: Option<VlanTag>| {
            if self.uplink_up {
                Decision::Forward(Forward {
                    vfs: PortSet::EMPTY,
                    uplink: Some(tag),
                    vlan,
                })
            } else {
                Decision::Drop(DropReason::LinkDown)
            }
        };
        let to_vf = |to: VfId| match self.up_port(to) {
            Some(_) => Decision::Forward(Forward {
                vfs: PortSet::one(to),
                uplink: None,
                vlan,
            }),
            None => Decision::Drop(DropReason::LinkDown),
        };
        // The tag of the side of a two-way pair that `mac` was last seen on.
        let learned_side = |mac: MacAddr, (a, b): (VlanTag, VlanTag)| {
            self.learned
                .side(mac, a.vid, b.vid)
                .map(|vid| if vid == a.vid { a } else { b })
        };
        if reflect {
            return match self.previous_hop(vf) {
                Some(prev) => to_vf(prev),
                // The first hop of a two-way chain: back to the side the frame is
                // addressed to (where its original source was seen).
                None => match self.two_way_pair(vf) {
                    Some(pair) => match learned_side(header.dst, pair) {
                        Some(side) => to_uplink(Some(side)),
                        None => Decision::Drop(DropReason::Unlearned),
                    },
                    None => to_uplink(vlan),
                },
            };
        }
        match self.tx_rule(vf) {
            Some(TxSteer::ToVf(to)) => return to_vf(to),
            Some(TxSteer::ToWire(retag)) => return to_uplink(retag.or(vlan)),
            Some(TxSteer::ToWireTwoWay { a, b }) => {
                return match learned_side(header.src, (a, b)) {
                    Some(side) if side == a => to_uplink(Some(b)),
                    Some(_) => to_uplink(Some(a)),
                    None => Decision::Drop(DropReason::Unlearned),
                };
            }
            None => {}
        }
        if header.dst.is_multicast() {
            let vfs = self.flood_set(vid, Some(vf));
            let uplink = self.uplink_up.then_some(vlan);
            if vfs.is_empty() && uplink.is_none() {
                return Decision::Drop(DropReason::LinkDown);
            }
            return Decision::Forward(Forward { vfs, uplink, vlan });
        }
        match self.fdb.get(&(header.dst, vid.unwrap_or(0))) {
            Some(&to) if to != vf => to_vf(to),
            _ => to_uplink(vlan),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    pub(crate) fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    /// A UDP frame built with etherparse, tagged when `vid` is given.
    pub(crate) fn frame(src: MacAddr, dst: MacAddr, vid: Option<u16>) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(src.0, dst.0);
        let ip = match vid {
            Some(v) => eth
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
            None => eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
        };
        let builder = ip.udp(1000, 2000);
        let payload = [0u8; 18];
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, &payload).unwrap();
        out
    }

    fn port(last: u8, vlan: Option<u16>) -> Port {
        Port {
            mac: mac(last),
            vlan: vlan.map(|vid| VlanTag { vid, pcp: 0 }),
            spoof_check: true,
            trust: false,
            up: true,
        }
    }

    /// vf0, vf1 untagged; vf2, vf3 in VLAN 100.
    fn veb() -> Veb {
        let mut veb = Veb::new(4);
        veb.set_port(VfId(0), Some(port(10, None))).unwrap();
        veb.set_port(VfId(1), Some(port(11, None))).unwrap();
        veb.set_port(VfId(2), Some(port(12, Some(100)))).unwrap();
        veb.set_port(VfId(3), Some(port(13, Some(100)))).unwrap();
        veb
    }

    fn forward(d: Decision) -> Forward {
        match d {
            Decision::Forward(f) => f,
            other => panic!("expected forward, got {other:?}"),
        }
    }

    const OUTSIDE: MacAddr = MacAddr([0x02, 0xee, 0, 0, 0, 1]);

    #[test]
    fn a_set_of_one_holds_that_port_only() {
        for i in [0u16, 1, 63, 64, 127, 128, 200, 255] {
            let set = PortSet::one(VfId(i));
            let mut inserted = PortSet::EMPTY;
            inserted.insert(VfId(i));
            assert_eq!(set, inserted, "VF {i}");
            assert_eq!(set.iter().collect::<Vec<_>>(), vec![VfId(i)], "VF {i}");
        }
        // Beyond the bitmap, as `insert` does: nothing.
        assert_eq!(PortSet::one(VfId(MAX_PORTS as u16)), PortSet::EMPTY);
    }

    #[test]
    fn parses_addresses_and_tag() {
        let f = frame(mac(1), mac(2), Some(100));
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!((h.src, h.dst), (mac(1), mac(2)));
        assert_eq!(h.tag, Some(VlanTag { vid: 100, pcp: 0 }));
        assert_eq!(FrameHeader::parse(&f[..13]), Err(HeaderError { len: 13 }));
        assert_eq!(FrameHeader::parse(&f[..16]), Err(HeaderError { len: 16 }));
    }

    #[test]
    fn wire_unicast_follows_mac_and_vlan() {
        let mut veb = veb();
        let f = forward(veb.from_wire(&frame(OUTSIDE, mac(11), None)));
        assert_eq!(f.vfs, PortSet::one(VfId(1)));
        let f = forward(veb.from_wire(&frame(OUTSIDE, mac(12), Some(100))));
        assert_eq!(f.vfs, PortSet::one(VfId(2)));
        assert_eq!(
            veb.rx_tag(VfId(2), &f),
            None,
            "port VLAN is stripped on receive"
        );
        // Right MAC, wrong VLAN: no route.
        assert_eq!(
            veb.from_wire(&frame(OUTSIDE, mac(12), None)),
            Decision::Drop(DropReason::NoRoute)
        );
        assert_eq!(
            veb.from_wire(&frame(OUTSIDE, mac(11), Some(100))),
            Decision::Drop(DropReason::NoRoute)
        );
        assert_eq!(veb.wire_drops().no_route, 2);
    }

    #[test]
    fn broadcast_floods_the_vlan_only() {
        let mut veb = veb();
        let f = forward(veb.from_wire(&frame(OUTSIDE, MacAddr::BROADCAST, Some(100))));
        assert_eq!(f.vfs.iter().collect::<Vec<_>>(), vec![VfId(2), VfId(3)]);
        assert_eq!(f.uplink, None, "never back out the wire");
        let f = forward(veb.from_vf(VfId(0), &frame(mac(10), MacAddr::BROADCAST, None)));
        assert_eq!(
            f.vfs.iter().collect::<Vec<_>>(),
            vec![VfId(1)],
            "not back to the sender"
        );
        assert_eq!(f.uplink, Some(None));
    }

    #[test]
    fn vf_transmit_hairpins_or_goes_up() {
        let mut veb = veb();
        let f = forward(veb.from_vf(VfId(0), &frame(mac(10), mac(11), None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::one(VfId(1)), None));
        let f = forward(veb.from_vf(VfId(0), &frame(mac(10), OUTSIDE, None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::EMPTY, Some(None)));
        // Port VLAN inserted on the way out.
        let f = forward(veb.from_vf(VfId(2), &frame(mac(12), OUTSIDE, None)));
        assert_eq!(f.uplink, Some(Some(VlanTag { vid: 100, pcp: 0 })));
        let f = forward(veb.from_vf(VfId(2), &frame(mac(12), mac(13), None)));
        assert_eq!(f.vfs, PortSet::one(VfId(3)));
        // Addressed to itself: not reflected, goes up like unknown unicast.
        let f = forward(veb.from_vf(VfId(0), &frame(mac(10), mac(10), None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::EMPTY, Some(None)));
    }

    #[test]
    fn spoofed_frames_are_dropped_and_counted_unless_allowed() {
        let mut veb = veb();
        let spoofed = frame(mac(11), OUTSIDE, None);
        assert_eq!(
            veb.from_vf(VfId(0), &spoofed),
            Decision::Drop(DropReason::Spoof)
        );
        assert_eq!(veb.port_drops(VfId(0)).spoof, 1);

        let mut p = *veb.port(VfId(0)).unwrap();
        p.spoof_check = false;
        veb.set_port(VfId(0), Some(p)).unwrap();
        assert!(matches!(
            veb.from_vf(VfId(0), &spoofed),
            Decision::Forward(_)
        ));

        p.spoof_check = true;
        p.trust = true;
        veb.set_port(VfId(0), Some(p)).unwrap();
        assert!(matches!(
            veb.from_vf(VfId(0), &spoofed),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn vlan_anti_spoof() {
        let mut veb = veb();
        // Port-VLAN VF sending a tag, untrusted VF sending a tag: both dropped.
        assert_eq!(
            veb.from_vf(VfId(2), &frame(mac(12), OUTSIDE, Some(100))),
            Decision::Drop(DropReason::Vlan)
        );
        assert_eq!(
            veb.from_vf(VfId(0), &frame(mac(10), mac(12), Some(100))),
            Decision::Drop(DropReason::Vlan)
        );
        assert_eq!(veb.port_drops(VfId(0)).vlan, 1);
        // A trusted VF may send tagged frames into a VLAN.
        let mut p = *veb.port(VfId(0)).unwrap();
        p.trust = true;
        veb.set_port(VfId(0), Some(p)).unwrap();
        let f = forward(veb.from_vf(VfId(0), &frame(mac(10), mac(12), Some(100))));
        assert_eq!(f.vfs, PortSet::one(VfId(2)));
        assert_eq!(veb.rx_tag(VfId(2), &f), None);
    }

    #[test]
    fn a_vf_with_link_down_neither_sends_nor_receives() {
        let mut veb = veb();
        let mut p = *veb.port(VfId(1)).unwrap();
        p.up = false;
        veb.set_port(VfId(1), Some(p)).unwrap();
        assert_eq!(
            veb.from_vf(VfId(1), &frame(mac(11), OUTSIDE, None)),
            Decision::Drop(DropReason::LinkDown)
        );
        assert_eq!(
            veb.from_wire(&frame(OUTSIDE, mac(11), None)),
            Decision::Drop(DropReason::LinkDown)
        );
        let f = forward(veb.from_wire(&frame(OUTSIDE, MacAddr::BROADCAST, None)));
        assert_eq!(f.vfs, PortSet::one(VfId(0)));
        assert_eq!(
            veb.from_vf(VfId(0), &frame(mac(10), mac(11), None)),
            Decision::Drop(DropReason::LinkDown)
        );
    }

    #[test]
    fn uplink_down_stops_egress() {
        let mut veb = veb();
        veb.set_uplink(Link::Down);
        assert_eq!(
            veb.from_vf(VfId(0), &frame(mac(10), OUTSIDE, None)),
            Decision::Drop(DropReason::LinkDown)
        );
        // VF-to-VF still works.
        assert!(matches!(
            veb.from_vf(VfId(0), &frame(mac(10), mac(11), None)),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn runts_are_malformed() {
        let mut veb = veb();
        assert_eq!(
            veb.from_wire(&[0u8; 10]),
            Decision::Drop(DropReason::Malformed)
        );
        assert_eq!(
            veb.from_vf(VfId(0), &[0u8; 10]),
            Decision::Drop(DropReason::Malformed)
        );
        assert_eq!(veb.wire_drops().malformed, 1);
        assert_eq!(veb.port_drops(VfId(0)).malformed, 1);
    }

    #[test]
    fn chain_steering_overrides_the_table() {
        let mut veb = veb();
        let classifier = WireMatch {
            vlan: Some(100),
            dst: None,
        };
        veb.steer_wire(classifier, VfId(2)).unwrap();
        veb.steer_tx(VfId(2), TxSteer::ToVf(VfId(3))).unwrap();
        let retag = VlanTag { vid: 200, pcp: 0 };
        veb.steer_tx(VfId(3), TxSteer::ToWire(Some(retag))).unwrap();

        // Wire, VLAN 100, any destination → hop 1.
        let f = forward(veb.from_wire(&frame(OUTSIDE, mac(13), Some(100))));
        assert_eq!(f.vfs, PortSet::one(VfId(2)));
        // Hop 1 → hop 2, even when addressed to the outside.
        let f = forward(veb.from_vf(VfId(2), &frame(mac(12), OUTSIDE, None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::one(VfId(3)), None));
        // Hop 2 → wire, re-tagged.
        let f = forward(veb.from_vf(VfId(3), &frame(mac(13), mac(12), None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::EMPTY, Some(Some(retag))));

        assert_eq!(
            veb.steer_wire(classifier, VfId(0)),
            Err(SteerError::WireConflict(classifier, VfId(2)))
        );
        assert_eq!(
            veb.steer_tx(VfId(2), TxSteer::ToWire(None)),
            Err(SteerError::TxConflict(VfId(2)))
        );
        assert_eq!(
            veb.steer_tx(VfId(1), TxSteer::ToVf(VfId(1))),
            Err(SteerError::SelfLoop(VfId(1)))
        );
        assert_eq!(
            veb.steer_tx(VfId(1), TxSteer::ToVf(VfId(9))),
            Err(SteerError::NoSuchPort(VfId(9)))
        );

        // Reflecting goes back where the traffic came from.
        let f = forward(veb.reflect_from_vf(VfId(3), &frame(mac(13), mac(12), None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::one(VfId(2)), None));
        let f = forward(veb.reflect_from_vf(VfId(2), &frame(mac(12), OUTSIDE, None)));
        assert_eq!(f.uplink, Some(Some(VlanTag { vid: 100, pcp: 0 })));

        veb.unsteer(VfId(2));
        veb.unsteer(VfId(3));
        assert!(veb.wire_rules().is_empty());
        assert_eq!(veb.tx_rule(VfId(2)), None);
        assert_eq!(
            veb.from_wire(&frame(OUTSIDE, mac(11), Some(100))),
            Decision::Drop(DropReason::NoRoute)
        );
    }

    const CLIENT: MacAddr = MacAddr([0x02, 0xc1, 0, 0, 0, 1]);
    const SERVER: MacAddr = MacAddr([0x02, 0x5e, 0, 0, 0, 1]);

    fn tag(vid: u16) -> VlanTag {
        VlanTag { vid, pcp: 0 }
    }

    /// A two-way chain between VLANs 100 and 200 over vf2 → vf3, set up as the engine
    /// does: both hops in VLAN 100 (nominal inside the chain), spoof check off.
    fn two_way() -> Veb {
        let mut veb = veb();
        for vf in [VfId(2), VfId(3)] {
            let mut p = *veb.port(vf).unwrap();
            p.spoof_check = false;
            veb.set_port(vf, Some(p)).unwrap();
        }
        let side = |vid| WireMatch {
            vlan: Some(vid),
            dst: None,
        };
        veb.steer_wire(side(100), VfId(2)).unwrap();
        veb.steer_wire(side(200), VfId(2)).unwrap();
        veb.steer_tx(VfId(2), TxSteer::ToVf(VfId(3))).unwrap();
        veb.steer_tx(
            VfId(3),
            TxSteer::ToWireTwoWay {
                a: tag(100),
                b: tag(200),
            },
        )
        .unwrap();
        veb
    }

    #[test]
    fn two_way_forward_direction_leaves_on_the_other_vlan() {
        let mut veb = two_way();
        let f = forward(veb.from_wire(&frame(CLIENT, SERVER, Some(100))));
        assert_eq!(f.vfs, PortSet::one(VfId(2)));
        assert_eq!(veb.rx_tag(VfId(2), &f), None, "stripped for the NF");
        assert!(veb.has_learned(CLIENT, 100));
        let f = forward(veb.from_vf(VfId(2), &frame(CLIENT, SERVER, None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::one(VfId(3)), None));
        let f = forward(veb.from_vf(VfId(3), &frame(CLIENT, SERVER, None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::EMPTY, Some(Some(tag(200)))));
    }

    #[test]
    fn two_way_return_direction_enters_the_same_hop_and_leaves_on_the_first_vlan() {
        let mut veb = two_way();
        veb.from_wire(&frame(CLIENT, SERVER, Some(100)));
        let f = forward(veb.from_wire(&frame(SERVER, CLIENT, Some(200))));
        assert_eq!(f.vfs, PortSet::one(VfId(2)), "same first hop");
        assert_eq!(f.vlan, Some(tag(200)));
        assert_eq!(
            veb.rx_tag(VfId(2), &f),
            None,
            "stripped like forward frames"
        );
        let f = forward(veb.from_vf(VfId(3), &frame(SERVER, CLIENT, None)));
        assert_eq!(f.uplink, Some(Some(tag(100))));
        // The client's frames still go the other way.
        let f = forward(veb.from_vf(VfId(3), &frame(CLIENT, SERVER, None)));
        assert_eq!(f.uplink, Some(Some(tag(200))));
    }

    #[test]
    fn two_way_broadcast_from_the_client_reaches_the_server_side() {
        let mut veb = two_way();
        // An ARP request: steered into the chain, not flooded to VLAN 100's VFs.
        let f = forward(veb.from_wire(&frame(CLIENT, MacAddr::BROADCAST, Some(100))));
        assert_eq!((f.vfs, f.uplink), (PortSet::one(VfId(2)), None));
        let f = forward(veb.from_vf(VfId(3), &frame(CLIENT, MacAddr::BROADCAST, None)));
        assert_eq!((f.vfs, f.uplink), (PortSet::EMPTY, Some(Some(tag(200)))));
    }

    #[test]
    fn two_way_drops_frames_from_unlearned_sources_and_counts_them() {
        let mut veb = two_way();
        // An NF-originated frame: its source never came in from the wire.
        assert_eq!(
            veb.from_vf(VfId(3), &frame(mac(13), SERVER, None)),
            Decision::Drop(DropReason::Unlearned)
        );
        // Seen, but on a VLAN that is not one of the pair: still unknown.
        let mut other = veb.clone();
        other
            .steer_wire(
                WireMatch {
                    vlan: Some(300),
                    dst: None,
                },
                VfId(0),
            )
            .unwrap();
        forward(other.from_wire(&frame(CLIENT, SERVER, Some(300))));
        assert!(!other.has_learned(CLIENT, 300), "300 is no two-way side");
        assert_eq!(
            other.from_vf(VfId(3), &frame(CLIENT, SERVER, None)),
            Decision::Drop(DropReason::Unlearned)
        );
        assert_eq!(veb.port_drops(VfId(3)).unlearned, 1);
        assert_eq!(veb.port_drops(VfId(3)).get(DropReason::Unlearned), 1);
    }

    #[test]
    fn two_way_last_sighting_wins() {
        let mut veb = two_way();
        veb.from_wire(&frame(CLIENT, SERVER, Some(100)));
        veb.from_wire(&frame(CLIENT, SERVER, Some(200)));
        let f = forward(veb.from_vf(VfId(3), &frame(CLIENT, SERVER, None)));
        assert_eq!(f.uplink, Some(Some(tag(100))));
        veb.from_wire(&frame(CLIENT, SERVER, Some(100)));
        let f = forward(veb.from_vf(VfId(3), &frame(CLIENT, SERVER, None)));
        assert_eq!(f.uplink, Some(Some(tag(200))));
    }

    #[test]
    fn two_way_reflect_at_the_first_hop_goes_back_to_the_sender_side() {
        let mut veb = two_way();
        veb.from_wire(&frame(SERVER, CLIENT, Some(200)));
        // The NF answers the server: the reply is addressed to the server.
        let f = forward(veb.reflect_from_vf(VfId(2), &frame(CLIENT, SERVER, None)));
        assert_eq!(f.uplink, Some(Some(tag(200))));
        assert_eq!(
            veb.reflect_from_vf(VfId(2), &frame(SERVER, CLIENT, None)),
            Decision::Drop(DropReason::Unlearned),
            "the client was never seen"
        );
    }

    #[test]
    fn two_way_learning_is_bounded_and_spares_busy_sources() {
        let mut veb = two_way();
        let host = |i: usize| MacAddr([0x02, 0xaa, 0, 0, (i >> 8) as u8, i as u8]);
        for i in 0..LEARN_CAPACITY {
            veb.from_wire(&frame(host(i), SERVER, Some(100)));
        }
        assert_eq!(
            veb.learn_stats(),
            LearnStats {
                entries: LEARN_CAPACITY,
                evictions: 0
            }
        );
        // host(0) is busy; host(1) is not.
        veb.from_wire(&frame(host(0), SERVER, Some(100)));
        veb.from_wire(&frame(host(LEARN_CAPACITY), SERVER, Some(100)));
        assert!(veb.has_learned(host(0), 100), "a busy source is spared");
        assert!(!veb.has_learned(host(1), 100), "the oldest idle one goes");
        assert!(veb.has_learned(host(LEARN_CAPACITY), 100));
        for i in LEARN_CAPACITY + 1..LEARN_CAPACITY + 100 {
            veb.from_wire(&frame(host(i), SERVER, Some(200)));
        }
        assert_eq!(
            veb.learn_stats(),
            LearnStats {
                entries: LEARN_CAPACITY,
                evictions: 100
            }
        );
        // Broadcast and multicast sources are never learned.
        veb.from_wire(&frame(MacAddr::BROADCAST, SERVER, Some(100)));
        assert!(!veb.has_learned(MacAddr::BROADCAST, 100));
    }

    #[test]
    fn two_way_unsteer_removes_both_classifiers_and_what_was_learned() {
        let mut veb = two_way();
        veb.from_wire(&frame(CLIENT, SERVER, Some(100)));
        veb.from_wire(&frame(SERVER, CLIENT, Some(200)));
        assert_eq!(veb.learn_stats().entries, 2);
        veb.unsteer(VfId(2));
        assert!(veb.wire_rules().is_empty(), "both classifiers gone");
        veb.unsteer(VfId(3));
        assert_eq!(veb.tx_rule(VfId(3)), None);
        assert_eq!(veb.learn_stats().entries, 0);
        assert!(!veb.has_learned(CLIENT, 100));
        assert_eq!(
            veb.from_wire(&frame(SERVER, CLIENT, Some(200))),
            Decision::Drop(DropReason::NoRoute)
        );
        assert_eq!(veb.learn_stats().entries, 0, "nothing learned any more");
    }

    #[test]
    fn two_way_return_classifier_clashes_like_any_classifier() {
        let mut veb = two_way();
        let server_side = WireMatch {
            vlan: Some(200),
            dst: None,
        };
        assert_eq!(
            veb.steer_wire(server_side, VfId(0)),
            Err(SteerError::WireConflict(server_side, VfId(2)))
        );
    }

    #[test]
    fn two_way_needs_two_distinct_valid_vlans() {
        let mut veb = veb();
        for (a, b) in [(100, 100), (0, 200), (100, 4095)] {
            assert_eq!(
                veb.steer_tx(
                    VfId(3),
                    TxSteer::ToWireTwoWay {
                        a: tag(a),
                        b: tag(b)
                    }
                ),
                Err(SteerError::TwoWayVlans(a, b))
            );
        }
        assert_eq!(veb.tx_rule(VfId(3)), None, "nothing half-applied");
    }

    #[test]
    fn port_set_basics() {
        let mut s = PortSet::EMPTY;
        assert!(s.is_empty());
        s.insert(VfId(0));
        s.insert(VfId(63));
        s.insert(VfId(64));
        s.insert(VfId(255));
        s.insert(VfId(256));
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.iter().map(|v| v.0).collect::<Vec<_>>(),
            vec![0, 63, 64, 255]
        );
    }

    fn arb_port() -> impl Strategy<Value = Option<Port>> {
        proptest::option::weighted(
            0.9,
            (
                0u8..4,
                proptest::option::of(prop_oneof![Just(100u16), Just(200)]),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(m, vlan, spoof_check, trust, up)| Port {
                    mac: mac(10 + m),
                    vlan: vlan.map(|vid| VlanTag { vid, pcp: 0 }),
                    spoof_check,
                    trust,
                    up,
                }),
        )
    }

    fn arb_frame() -> impl Strategy<Value = (Option<u16>, u8, u8, bool)> {
        // (source VF or wire, src mac, dst mac index (255 = broadcast), tagged with 100/200/none)
        (
            proptest::option::of(0u16..6),
            0u8..6,
            prop_oneof![0u8..6, Just(255)],
            any::<bool>(),
        )
    }

    /// One step of the two-way proptest: a wire frame (source, VLAN, broadcast?), or
    /// a frame the last hop sends (source).
    #[derive(Debug, Clone)]
    enum Step {
        Wire(u8, Option<u16>, bool),
        Send(u8),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (
                0u8..6,
                prop_oneof![
                    Just(None),
                    Just(Some(100u16)),
                    Just(Some(200)),
                    Just(Some(300))
                ],
                any::<bool>()
            )
                .prop_map(|(src, vid, bcast)| Step::Wire(src, vid, bcast)),
            (0u8..6).prop_map(Step::Send),
        ]
    }

    proptest! {
        /// A two-way chain never sends a frame out on the VLAN its source was last seen
        /// coming in on, always sends it out on the other one, and drops (never guesses)
        /// when the source was not seen on either: checked against a plain map of last
        /// sightings, for a one-hop and a two-hop chain.
        #[test]
        fn two_way_chains_send_each_frame_to_the_other_side(
            one_hop in any::<bool>(),
            steps in proptest::collection::vec(arb_step(), 1..80),
        ) {
            let mut veb = if one_hop {
                let mut veb = veb();
                let mut p = *veb.port(VfId(3)).unwrap();
                p.spoof_check = false;
                veb.set_port(VfId(3), Some(p)).unwrap();
                for vid in [100, 200] {
                    veb.steer_wire(WireMatch { vlan: Some(vid), dst: None }, VfId(3)).unwrap();
                }
                veb.steer_tx(VfId(3), TxSteer::ToWireTwoWay { a: tag(100), b: tag(200) }).unwrap();
                veb
            } else {
                two_way()
            };
            let host = |i: u8| MacAddr([0x02, 0xaa, 0, 0, 0, i]);
            let mut last_seen: HashMap<MacAddr, u16> = HashMap::new();
            for step in steps {
                match step {
                    Step::Wire(src, vid, bcast) => {
                        let dst = if bcast { MacAddr::BROADCAST } else { SERVER };
                        let d = veb.from_wire(&frame(host(src), dst, vid));
                        if let Some(v @ (100 | 200)) = vid {
                            prop_assert!(matches!(d, Decision::Forward(_)), "{:?}", d);
                            last_seen.insert(host(src), v);
                        }
                    }
                    Step::Send(src) => {
                        let d = veb.from_vf(VfId(3), &frame(host(src), SERVER, None));
                        match (last_seen.get(&host(src)), d) {
                            (Some(&came_in), Decision::Forward(f)) => {
                                let out = f.uplink.flatten().map(|t| t.vid);
                                prop_assert_ne!(out, Some(came_in), "back out where it came in");
                                prop_assert_eq!(out, Some(if came_in == 100 { 200 } else { 100 }));
                                prop_assert!(f.vfs.is_empty());
                            }
                            (None, d) => prop_assert_eq!(d, Decision::Drop(DropReason::Unlearned)),
                            (Some(_), d) => prop_assert!(false, "dropped a learned source: {:?}", d),
                        }
                    }
                }
            }
        }
    }

    proptest! {
        /// Without steering rules the VEB never delivers a frame to a VF outside the
        /// frame's VLAN, and never lets a spoofed frame out of a checked VF.
        #[test]
        fn never_crosses_vlans_and_never_leaks_spoofed_frames(
            ports in proptest::collection::vec(arb_port(), 6),
            frames in proptest::collection::vec((arb_frame(), prop_oneof![Just(None), Just(Some(100u16)), Just(Some(200))]), 1..60),
        ) {
            let mut veb = Veb::new(6);
            for (i, p) in ports.iter().enumerate() {
                veb.set_port(VfId(i as u16), *p).unwrap();
            }
            for ((from, src, dst, _), tag) in frames {
                let dst = if dst == 255 { MacAddr::BROADCAST } else { mac(10 + dst) };
                let f = frame(mac(10 + src), dst, tag);
                let (decision, switch_vid) = match from {
                    None => (veb.from_wire(&f), tag),
                    Some(vf) => {
                        let d = veb.from_vf(VfId(vf), &f);
                        let p = veb.port(VfId(vf)).copied();
                        if let (Decision::Forward(_), Some(p)) = (d, p) {
                            prop_assert!(p.up, "a down VF sent a frame");
                            if p.spoof_check && !p.trust {
                                prop_assert_eq!(mac(10 + src), p.mac, "spoofed frame let out");
                            }
                            if !p.trust {
                                prop_assert!(tag.is_none(), "untrusted VF sent a tagged frame");
                            }
                        }
                        (d, p.and_then(|p| p.vlan.map(|t| t.vid)).or(tag))
                    }
                };
                if let Decision::Forward(fwd) = decision {
                    prop_assert_eq!(fwd.vlan.map(|t| t.vid), switch_vid);
                    for vf in fwd.vfs.iter() {
                        let p = veb.port(vf).copied().expect("delivered to a port that does not exist");
                        prop_assert!(p.up, "delivered to a down VF");
                        prop_assert_eq!(p.vlan.map(|t| t.vid), switch_vid, "{} is outside the frame's VLAN", vf);
                        prop_assert_ne!(Some(vf.0), from, "reflected to the sender");
                    }
                }
            }
        }
    }
}
