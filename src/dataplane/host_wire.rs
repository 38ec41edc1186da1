//! The `tap:`, `afpacket:` and `afxdp:` wires (ARCHITECTURE.md §6): the PF's uplink
//! made of real host interfaces, driven by an io_uring ([`nfhost_sys::wire::WireRing`])
//! on the engine thread.
//!
//! A wire is one or more links. A link without a VLAN is a **trunk**: frames
//! cross it exactly as they are on the NIC's wire, 802.1Q tags included. A link
//! with `@VID` is an **access port** of that VLAN: its untagged frames enter the
//! wire tagged VID, and wire frames of VLAN VID leave on it untagged, the way a
//! switch port configured `access vlan VID` behaves. That lets one nfhost join
//! plain interfaces (a veth into a container, say) to VLAN-classified chains on
//! kernels without VLAN-aware bridges.
//!
//! Frames are limited by the wire's MTU (1500 by default): up to MTU + 14 bytes
//! untagged, MTU + 18 with one tag. Longer frames are dropped and counted as
//! `oversize` both ways. The PF's link is up while every link is up and running;
//! VFs whose link state is `auto` follow it.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use nfhost_sys::SharedMemory;
use nfhost_sys::wire::{Link, LinkKind, Received, SendError, WireError, WireRing};
use thiserror::Error;

use super::checksum;
use super::counters::{Counters, Drop};
use super::port::FRAME_SIZE;
use crate::nic::{Link as LinkState, Micros, VlanTag};

/// The default MTU of a host wire.
pub const DEFAULT_MTU: u16 = 1500;
/// The largest MTU: a tagged frame must fit one 2 KiB UMEM frame.
pub const MAX_MTU: u16 = FRAME_SIZE as u16 - 18;
/// The smallest MTU (IPv4's minimum).
pub const MIN_MTU: u16 = 68;
/// How often the links' state is read.
const STATUS_EVERY: Micros = Micros(200_000);

/// One link of a host wire, as written after `--wire`: `tap:NAME[@VID]`,
/// `afpacket:IFNAME[@VID]` or `afxdp:IFNAME[@VID]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// TAP, `AF_PACKET` or `AF_XDP`.
    pub kind: LinkKind,
    /// The interface name.
    pub name: String,
    /// An access port's VLAN; `None` for a trunk.
    pub access_vlan: Option<u16>,
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LinkKind::Tap => "tap",
            LinkKind::Packet => "afpacket",
            LinkKind::Xdp => "afxdp",
        };
        write!(f, "{kind}:{}", self.name)?;
        if let Some(vid) = self.access_vlan {
            write!(f, "@{vid}")?;
        }
        Ok(())
    }
}

/// A wire description that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireSpecError {
    /// Not `tap:`, `afpacket:` or `afxdp:`.
    #[error(
        "{0:?}: a link is tap:NAME, afpacket:IFNAME or afxdp:IFNAME, optionally followed by @VLAN"
    )]
    Syntax(String),
    /// An interface name the kernel would not take.
    #[error("{0:?}: an interface name is 1-15 characters without '/', ':', ',', '@' or spaces")]
    Name(String),
    /// A VLAN out of range.
    #[error("{0:?}: an access VLAN is 1-4094")]
    Vlan(String),
    /// Two access links of one VLAN.
    #[error("VLAN {0} has two access links; each VLAN leaves on one")]
    DuplicateVlan(u16),
    /// More than one trunk.
    #[error("{0} and {1} are both trunks (no @VLAN); a wire has at most one trunk")]
    TwoTrunks(String, String),
    /// One interface twice.
    #[error("{0} is listed twice")]
    DuplicateName(String),
    /// Too many links.
    #[error("a wire has 1 to {max} links, not {0}", max = nfhost_sys::wire::MAX_LINKS)]
    Count(usize),
    /// MTU out of range.
    #[error("MTU {0} is out of range {MIN_MTU}-{MAX_MTU} (a tagged frame must fit a 2 KiB buffer)")]
    Mtu(u16),
}

impl FromStr for LinkSpec {
    type Err = WireSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = if let Some(rest) = s.strip_prefix("tap:") {
            (LinkKind::Tap, rest)
        } else if let Some(rest) = s.strip_prefix("afpacket:") {
            (LinkKind::Packet, rest)
        } else if let Some(rest) = s.strip_prefix("afxdp:") {
            (LinkKind::Xdp, rest)
        } else {
            return Err(WireSpecError::Syntax(s.to_owned()));
        };
        let (name, vlan) = match rest.split_once('@') {
            Some((name, vid)) => {
                let vid: u16 = vid
                    .parse()
                    .ok()
                    .filter(|v| (1..=4094).contains(v))
                    .ok_or_else(|| WireSpecError::Vlan(s.to_owned()))?;
                (name, Some(vid))
            }
            None => (rest, None),
        };
        if name.is_empty() || name.len() > 15 || name.contains(['/', ':', ',', '@', ' ', '\0']) {
            return Err(WireSpecError::Name(s.to_owned()));
        }
        Ok(LinkSpec {
            kind,
            name: name.to_owned(),
            access_vlan: vlan,
        })
    }
}

/// A whole host wire: its links (comma-separated on the command line) and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostWireConfig {
    /// The links, in order.
    pub links: Vec<LinkSpec>,
    /// The MTU of every link.
    pub mtu: u16,
}

impl HostWireConfig {
    /// Parses `tap:a,afpacket:b@100,…` and checks the set as a whole.
    pub fn parse(spec: &str, mtu: u16) -> Result<Self, WireSpecError> {
        let links = spec
            .split(',')
            .map(str::trim)
            .map(LinkSpec::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        let config = HostWireConfig { links, mtu };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), WireSpecError> {
        if self.links.is_empty() || self.links.len() > nfhost_sys::wire::MAX_LINKS {
            return Err(WireSpecError::Count(self.links.len()));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(WireSpecError::Mtu(self.mtu));
        }
        let mut vlans = HashMap::new();
        let mut trunk: Option<&LinkSpec> = None;
        for (i, link) in self.links.iter().enumerate() {
            if self.links[..i].iter().any(|l| l.name == link.name) {
                return Err(WireSpecError::DuplicateName(link.name.clone()));
            }
            match link.access_vlan {
                Some(vid) => {
                    if vlans.insert(vid, i).is_some() {
                        return Err(WireSpecError::DuplicateVlan(vid));
                    }
                }
                None => {
                    if let Some(first) = trunk {
                        return Err(WireSpecError::TwoTrunks(
                            first.to_string(),
                            link.to_string(),
                        ));
                    }
                    trunk = Some(link);
                }
            }
        }
        Ok(())
    }

    /// The largest frame: MTU plus an Ethernet header and one 802.1Q tag.
    pub fn frame_cap(&self) -> usize {
        max_frame(self.mtu, true)
    }
}

impl fmt::Display for HostWireConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, link) in self.links.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{link}")?;
        }
        Ok(())
    }
}

/// Opening the links failed.
#[derive(Debug, Error)]
#[error("opening wire link {link}")]
pub struct OpenError {
    /// The link.
    pub link: String,
    /// Why.
    #[source]
    pub source: WireError,
}

/// Opens every link (in the caller's thread, so that a bad name fails the start).
pub fn open_links(config: &HostWireConfig) -> Result<Vec<Link>, OpenError> {
    config
        .links
        .iter()
        .map(|spec| {
            let opened = match spec.kind {
                LinkKind::Tap => Link::tap(&spec.name),
                LinkKind::Packet => Link::packet(&spec.name),
                LinkKind::Xdp => Link::xdp(&spec.name),
            };
            let link = opened.map_err(|source| OpenError {
                link: spec.to_string(),
                source,
            })?;
            if let Some((mode, why)) = link.xdp_mode() {
                tracing::info!(
                    link = %spec,
                    mode = %mode,
                    program = nfhost_sys::wire::XDP_PROGRAM_NAME,
                    why_not_zero_copy = why.unwrap_or(""),
                    "AF_XDP socket bound to queue 0, XDP program attached"
                );
                let queues = link.rx_queues();
                if queues > 1 {
                    tracing::warn!(
                        link = %spec,
                        queues,
                        "the interface has {queues} receive queues and nfhost hears queue 0 only; \
                         frames on the others reach the kernel's stack (`ethtool -L {} combined 1` \
                         gives it one)",
                        spec.name
                    );
                }
            }
            Ok(link)
        })
        .collect()
}

/// Where a frame leaving for the wire goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Out of `link`, carrying this tag (or untagged).
    Link(usize, Option<VlanTag>),
    /// No link takes it.
    Nowhere,
}

/// Each link's role: which VLAN's access port it is, or the trunk.
#[derive(Debug, Clone)]
struct Roles {
    access: Vec<Option<u16>>,
    trunk: Option<usize>,
    by_vlan: HashMap<u16, usize>,
}

impl Roles {
    fn new(config: &HostWireConfig) -> Self {
        let access: Vec<Option<u16>> = config.links.iter().map(|l| l.access_vlan).collect();
        Roles {
            trunk: access.iter().position(Option::is_none),
            by_vlan: access
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|vid| (vid, i)))
                .collect(),
            access,
        }
    }

    /// Where a frame leaving with `tag` goes: the access port of its VLAN
    /// (untagged), else the trunk (tagged as it is).
    fn egress(&self, tag: Option<VlanTag>) -> Egress {
        match tag {
            Some(t) => match self.by_vlan.get(&t.vid) {
                Some(&link) => Egress::Link(link, None),
                None => self
                    .trunk
                    .map_or(Egress::Nowhere, |link| Egress::Link(link, Some(t))),
            },
            None => self
                .trunk
                .map_or(Egress::Nowhere, |link| Egress::Link(link, None)),
        }
    }
}

/// The running host wire: the ring and each link's role and state.
#[derive(Debug)]
pub struct HostWire {
    ring: WireRing,
    roles: Roles,
    mtu: u16,
    up: Vec<bool>,
    reported: Option<bool>,
    next_status: Micros,
}

impl HostWire {
    /// Starts driving `links` (opened by [`open_links`] from `config`).
    pub fn new(config: &HostWireConfig, links: Vec<Link>) -> Result<Self, WireError> {
        let ring = WireRing::new(links, config.frame_cap())?;
        let wire = HostWire {
            ring,
            roles: Roles::new(config),
            mtu: config.mtu,
            up: vec![false; config.links.len()],
            reported: None,
            next_status: Micros(0),
        };
        for link in wire.ring.links() {
            if let Ok(status) = link.status() {
                if status.mtu > u32::from(config.mtu) {
                    tracing::warn!(
                        link = link.name(),
                        link_mtu = status.mtu,
                        wire_mtu = config.mtu,
                        "wire link's MTU is above the wire's: longer frames are dropped \
                         (set --mtu, or `ip link set {} mtu {}`)",
                        link.name(),
                        config.mtu
                    );
                }
            }
        }
        Ok(wire)
    }

    /// The ring's wakeup eventfd, registered with the current reactor to sleep on.
    pub fn wakeup(&self) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, WireError> {
        let fd = self.ring.wakeup_fd()?;
        nfhost_sys::async_fd(fd)
            .map_err(|e| WireError::Uring("registering the wire's eventfd with the reactor", e))
    }

    /// Frames the wire can take now, at most `max` (the fewest any link can):
    /// a VF sending to the wire sends no more, and keeps the rest in its tx ring,
    /// rather than have them dropped as `wire_busy`.
    pub fn tx_room(&mut self, max: usize) -> usize {
        self.ring.tx_room(max)
    }

    /// The ring (for flushing and completions).
    pub fn ring_mut(&mut self) -> &mut WireRing {
        &mut self.ring
    }

    /// Reads every link's state (and the frames the kernel dropped for want of
    /// socket buffer, counted as `overrun`) if it is time; returns the PF link state
    /// when it changed (up while every link is up and running).
    pub fn poll_status(&mut self, now: Micros, counters: &Counters) -> Option<LinkState> {
        if now < self.next_status {
            return None;
        }
        self.next_status = Micros(now.0 + STATUS_EVERY.0);
        let mut changed = false;
        for (i, link) in self.ring.links().iter().enumerate() {
            let overrun = link.take_drops().unwrap_or(0);
            if overrun > 0 {
                counters.wire.rx_packets.add(overrun);
                counters.wire.drop(Drop::Overrun, overrun);
            }
            let up = link.status().is_ok_and(|s| s.up);
            if up != self.up[i] {
                tracing::info!(
                    link = link.name(),
                    state = if up { "up" } else { "down" },
                    "wire link state changed"
                );
                self.up[i] = up;
                changed = true;
            }
        }
        let after = self.up.iter().all(|u| *u);
        if changed && after {
            // Receives that failed while the link was down wait for this.
            let _ = self.ring.rearm();
        }
        if self.reported == Some(after) {
            return None;
        }
        self.reported = Some(after);
        Some(if after {
            LinkState::Up
        } else {
            LinkState::Down
        })
    }

    /// When the link state is next read.
    pub fn next_status(&self) -> Micros {
        self.next_status
    }

    /// Hands up to `max` received frames to `f`, access-port frames tagged with
    /// their VLAN. Oversize frames and tagged frames on access ports are dropped
    /// and counted on the wire. A transport checksum the sender left to an
    /// offload is completed first ([`checksum`]).
    pub fn receive(&mut self, max: usize, counters: &Counters, mut f: impl FnMut(&[u8])) -> usize {
        let access = &self.roles.access;
        let mtu = self.mtu;
        self.ring.receive(max, |link, r| {
            let wire = &counters.wire;
            let len = match &r {
                Received::Oversize(len) => *len,
                Received::Frame(frame) => frame.bytes().len(),
            };
            wire.rx_packets.add(1);
            wire.rx_bytes.add(len as u64);
            let Received::Frame(mut frame) = r else {
                wire.drop(Drop::Oversize, 1);
                return;
            };
            let tagged = is_tagged(frame.bytes());
            if len > max_frame(mtu, tagged) {
                wire.drop(Drop::Oversize, 1);
                return;
            }
            // A packet socket says when a checksum is partial; AF_XDP cannot, so
            // its TCP and UDP frames are checked.
            match frame.partial_checksum() {
                Some(false) => {}
                known => {
                    checksum::complete(frame.bytes_mut(), known == Some(true));
                }
            }
            if let Some(vid) = access[link] {
                // An access port carries untagged frames only.
                if tagged || !frame.push_tag(0x8100, vid) {
                    wire.drop(Drop::Vlan, 1);
                    return;
                }
            }
            f(frame.bytes());
        })
    }

    /// Sends `len` bytes of a frame at `offset` in `src` (whose own tag, if any,
    /// is replaced) out of the wire with `tag`. The one copy from NF memory goes
    /// straight into a transmit buffer of the ring.
    pub fn send(
        &mut self,
        src: &SharedMemory,
        offset: usize,
        len: usize,
        src_tagged: bool,
        tag: Option<VlanTag>,
    ) -> Result<usize, Drop> {
        let (link, out_tag) = match self.roles.egress(tag) {
            Egress::Link(link, out_tag) => (link, out_tag),
            Egress::Nowhere => return Err(Drop::NoRoute),
        };
        let inner = if src_tagged { 16 } else { 12 };
        if len < inner {
            return Err(Drop::Malformed);
        }
        let tag_len = if out_tag.is_some() { 4 } else { 0 };
        let out_len = 12 + tag_len + (len - inner);
        if out_len > max_frame(self.mtu, out_tag.is_some()) {
            return Err(Drop::Oversize);
        }
        let sent = self.ring.send_with(link, out_len, |buf| {
            if src.read_at(offset, &mut buf[..12]).is_err() {
                return false;
            }
            let mut at = 12;
            if let Some(t) = out_tag {
                buf[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                buf[14..16].copy_from_slice(&t.tci().to_be_bytes());
                at = 16;
            }
            src.read_at(offset + inner, &mut buf[at..]).is_ok()
        });
        match sent {
            Ok(()) => Ok(out_len),
            Err(SendError::Busy) => Err(Drop::WireBusy),
            Err(SendError::TooLong(_)) => Err(Drop::Oversize),
            Err(SendError::Abandoned) => Err(Drop::DmaFault),
            Err(SendError::NoSuchLink(_)) => Err(Drop::NoRoute),
        }
    }
}

/// The longest frame an MTU allows: the Ethernet header, plus one 802.1Q tag
/// if the frame carries one.
fn max_frame(mtu: u16, tagged: bool) -> usize {
    usize::from(mtu) + 14 + if tagged { 4 } else { 0 }
}

fn is_tagged(frame: &[u8]) -> bool {
    frame.len() >= 14 && matches!(u16::from_be_bytes([frame[12], frame[13]]), 0x8100 | 0x88a8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_specs_parse_and_print_back() {
        let w = HostWireConfig::parse(
            "tap:nfh0, afpacket:veth-c@100,afpacket:veth-s@200,afxdp:veth-x@300",
            1500,
        )
        .unwrap();
        assert_eq!(w.links[0].kind, LinkKind::Tap);
        assert_eq!(w.links[0].access_vlan, None);
        assert_eq!(w.links[1].access_vlan, Some(100));
        assert_eq!(w.links[3].kind, LinkKind::Xdp);
        assert_eq!(
            w.to_string(),
            "tap:nfh0,afpacket:veth-c@100,afpacket:veth-s@200,afxdp:veth-x@300"
        );
        assert_eq!(w.frame_cap(), 1518);
    }

    #[test]
    fn bad_wires_are_refused_with_the_reason() {
        let cases: &[(&str, u16, WireSpecError)] = &[
            ("eth0", 1500, WireSpecError::Syntax("eth0".into())),
            ("tap:", 1500, WireSpecError::Name("tap:".into())),
            ("afxdp:", 1500, WireSpecError::Name("afxdp:".into())),
            ("xdp:eth0", 1500, WireSpecError::Syntax("xdp:eth0".into())),
            (
                "afpacket:a-very-long-interface",
                1500,
                WireSpecError::Name("afpacket:a-very-long-interface".into()),
            ),
            ("tap:a@0", 1500, WireSpecError::Vlan("tap:a@0".into())),
            ("tap:a@4095", 1500, WireSpecError::Vlan("tap:a@4095".into())),
            ("tap:a@x", 1500, WireSpecError::Vlan("tap:a@x".into())),
            (
                "tap:a@5,afpacket:b@5",
                1500,
                WireSpecError::DuplicateVlan(5),
            ),
            (
                "tap:a,afpacket:b",
                1500,
                WireSpecError::TwoTrunks("tap:a".into(), "afpacket:b".into()),
            ),
            (
                "tap:a@1,tap:a@2",
                1500,
                WireSpecError::DuplicateName("a".into()),
            ),
            ("tap:a", 2100, WireSpecError::Mtu(2100)),
            ("tap:a", 60, WireSpecError::Mtu(60)),
        ];
        for (spec, mtu, want) in cases {
            assert_eq!(
                HostWireConfig::parse(spec, *mtu).as_ref(),
                Err(want),
                "{spec}"
            );
        }
        let nine = (0..9)
            .map(|i| format!("tap:t{i}@{}", i + 1))
            .collect::<Vec<_>>();
        assert_eq!(
            HostWireConfig::parse(&nine.join(","), 1500),
            Err(WireSpecError::Count(9))
        );
    }

    #[test]
    fn frames_leave_on_their_vlans_access_port_else_the_trunk() {
        let tag = |vid| Some(VlanTag { vid, pcp: 3 });
        let roles = Roles::new(&HostWireConfig::parse("tap:t,tap:a@100,tap:b@200", 1500).unwrap());
        assert_eq!(roles.egress(tag(100)), Egress::Link(1, None));
        assert_eq!(roles.egress(tag(200)), Egress::Link(2, None));
        assert_eq!(roles.egress(tag(300)), Egress::Link(0, tag(300)));
        assert_eq!(roles.egress(None), Egress::Link(0, None));
        let access_only = Roles::new(&HostWireConfig::parse("tap:a@100", 1500).unwrap());
        assert_eq!(access_only.egress(tag(300)), Egress::Nowhere);
        assert_eq!(access_only.egress(None), Egress::Nowhere);
    }

    #[test]
    fn tagged_frames_are_recognised() {
        let mut f = vec![0u8; 20];
        assert!(!is_tagged(&f));
        f[12] = 0x81;
        assert!(is_tagged(&f));
        assert!(!is_tagged(&f[..13]));
    }
}
