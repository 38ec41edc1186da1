//! NAT NF: IPv4 network address and port translation (NAPT, RFC 3022 §2.2)
//! between an inside prefix and a pool of outside addresses, with static
//! port forwards.
//!
//! - **Source NAT.** A TCP or UDP packet from an `inside` address is
//!   outbound: its source address and port become a pool address and a port
//!   allocated for it, and packets to that outside address and port are
//!   translated back. ICMP echo requests get their identifier mapped the
//!   same way (RFC 5508 §3.1), and echo replies are translated back.
//!   Mappings are endpoint-independent (RFC 4787 REQ-1, RFC 5382 REQ-1): one
//!   inside address and port keeps one outside address and port for every
//!   remote end, and any remote end may send to it (endpoint-independent
//!   filtering, RFC 4787 REQ-8's first option).
//! - **Static forwards (DNAT).** A packet to a forward's outside address and
//!   port goes to its inside server; the server's packets from that address
//!   and port leave as the forward's outside address and port. A forward is
//!   a mapping that never expires.
//! - **ICMP errors** (destination unreachable, time exceeded, parameter
//!   problem) are translated together with the packet they quote (RFC 5508
//!   §4.2, REQ-3), so path MTU discovery and traceroute work through the NAT.
//! - **Checksums** are updated incrementally (RFC 1624): the IPv4 header
//!   checksum, the TCP and UDP checksums (whose pseudo-header holds the
//!   addresses), the ICMP checksum when the identifier changes, and all of
//!   an ICMP error's quoted headers. A UDP checksum of 0 means "none" and
//!   stays 0 (RFC 768).
//!
//! Mappings expire after `timeouts` of idleness, counted from the last
//! packet in either direction. The table, the port rings and the indexes are
//! allocated for `max_mappings` when the NAT is built, so the packet path
//! never allocates; a packet that finds no free port is dropped and counted
//! in `pool_exhausted`, one that finds `max_mappings` mappings in
//! `table_full`.
//!
//! Frames are parsed through up to two VLAN tags (802.1Q, 802.1ad). A frame
//! that is not IPv4 (ARP, IPv6, ...) is `non_ip` and forwarded or dropped as
//! configured; a runt or a frame with a truncated or inconsistent IPv4, TCP,
//! UDP or ICMP header (or a third VLAN tag) is `malformed`, likewise.
//! Fragments are dropped and counted: without reassembly, non-first
//! fragments carry no ports to find a mapping by, so the datagram could
//! never arrive whole, and its first fragment is dropped too. IPv4 packets
//! neither from `inside` nor to a pool address are `foreign` and dropped;
//! outbound packets of other protocols are `unsupported` and dropped (they
//! would leak inside addresses).
//!
//! Not supported: hairpinning (an inside host reaching another through a
//! pool address), IPv4 options rewriting (options are carried unchanged),
//! TCP state tracking (a closed connection's mapping lives out its timeout).
//!
//! A new config while running ([`NetworkFunction::reconfigure`]) may change
//! `timeouts`, `non_ip` and `malformed` in place; every mapping stays. A new
//! `inside`, `pool`, `port_range`, `forwards` or `max_mappings` is refused
//! and the host restarts the NF: live mappings hold outside ports handed
//! out from the old pool and range to hosts of the old inside prefix, and
//! forwards own table slots and ports that a live dynamic mapping may hold
//! by now. See [`Nat::apply`].
//!
//! Config (JSON, unknown fields rejected; an empty string means defaults):
//!
//! ```json
//! { "inside": "10.0.0.0/8",
//!   "pool": ["203.0.113.1", "203.0.113.2"],
//!   "port_range": "1024-65535",
//!   "forwards": [{ "proto": "tcp", "outside_port": 8080, "inside": "10.0.0.5:80",
//!                  "outside_addr": "203.0.113.1" }],
//!   "timeouts": { "tcp_s": 300, "udp_s": 30, "icmp_s": 10 },
//!   "max_mappings": 65536,
//!   "non_ip": "forward",
//!   "malformed": "drop" }
//! ```
//!
//! `pool` may also be a prefix (`"203.0.113.0/30"`, all of its addresses);
//! see [`NatConfig`] for every field's default and range.
#![forbid(unsafe_code)]

pub mod config;
mod packet;
mod table;

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use nf_sdk::{Batch, NetworkFunction, Verdict};
use serde::Serialize;

use config::Settings;
pub use config::{
    ConfigError, Forward, ForwardProto, Ipv4Prefix, NatConfig, Policy, Pool, PortRange, Timeouts,
};
use nf_sdk::checksum::{self, Delta};
use packet::{Frame, Transport, ipv4, l4, rd_addr, rd8, rd16, wr_addr, wr16};
pub use table::{Endpoint, Proto};
use table::{Refused, Table};

/// Counters, as reported. Every packet lands in exactly one of the counters
/// from `translated_out` to `unsupported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct NatStats {
    /// Frames seen.
    pub packets: u64,
    /// Outbound packets source-translated by a dynamic mapping (including
    /// outbound ICMP errors about such a flow).
    pub translated_out: u64,
    /// Inbound packets translated back by a dynamic mapping (including ICMP
    /// errors about such a flow).
    pub translated_in: u64,
    /// Inbound packets sent to a forward's inside server.
    pub dnat_in: u64,
    /// A forward's inside server's packets translated back.
    pub dnat_out: u64,
    /// Inbound packets to a pool address with no mapping; dropped.
    pub no_mapping_in: u64,
    /// Outbound ICMP errors quoting a packet with no mapping; dropped.
    pub no_mapping_out: u64,
    /// Outbound packets that found no free port; dropped.
    pub pool_exhausted: u64,
    /// Outbound packets that found `max_mappings` mappings; dropped.
    pub table_full: u64,
    /// Frames that are not IPv4.
    pub non_ip: u64,
    /// Frames with truncated or inconsistent headers.
    pub malformed: u64,
    /// IPv4 fragments; dropped.
    pub fragments: u64,
    /// IPv4 packets neither from inside nor to a pool address; dropped.
    pub foreign: u64,
    /// Outbound packets of a protocol (or ICMP type) not translated; dropped.
    pub unsupported: u64,
    /// Dynamic mappings now.
    pub mappings: u64,
    /// Dynamic mappings removed for idleness, in all.
    pub expired: u64,
}

/// A valid NAT configuration that cannot be applied in place; the host
/// restarts the NF with it.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A setting the live mappings or the table's layout depend on.
    #[error("nat {field} cannot change in place: {reason}")]
    Fixed {
        /// The config field.
        field: &'static str,
        /// Why it is fixed while running.
        reason: &'static str,
    },
}

/// The NAT.
#[derive(Debug)]
pub struct Nat {
    /// The config in effect, to tell what a new one changes.
    settings: Settings,
    inside: Ipv4Prefix,
    table: Table,
    non_ip: Verdict,
    malformed: Verdict,
    stats: NatStats,
    /// The latest `now` seen; time never goes back for the table.
    clock: Option<Instant>,
}

/// Which address and port of a packet a translation rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

impl Side {
    fn addr_at(self) -> usize {
        match self {
            Side::Src => ipv4::SRC,
            Side::Dst => ipv4::DST,
        }
    }

    /// Offset in the transport header of the port, or of the ICMP echo
    /// identifier, which stands for both ports.
    fn port_at(self, proto: Proto) -> usize {
        match (proto, self) {
            (Proto::Icmp, _) => l4::ICMP_ID,
            (_, Side::Src) => l4::SRC_PORT,
            (_, Side::Dst) => l4::DST_PORT,
        }
    }
}

/// Direction of a packet through the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Out,
    In,
}

/// What became of one packet; [`Nat::settle`] counts it and picks the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Out { is_static: bool },
    In { is_static: bool },
    NoMapping(Direction),
    Refused(Refused),
    NonIp,
    Malformed,
    Fragment,
    Foreign,
    Unsupported,
}

/// Idle timeouts indexed like [`Proto::ALL`].
fn timeouts_of(t: Timeouts) -> [Duration; 3] {
    [t.tcp_s, t.udp_s, t.icmp_s].map(Duration::from_secs)
}

fn verdict(policy: Policy) -> Verdict {
    match policy {
        Policy::Forward => Verdict::Forward,
        Policy::Drop => Verdict::Drop,
    }
}

/// Rewrites the word at `at` with `f(old)`; returns old and new.
fn update(b: &mut [u8], at: usize, f: impl FnOnce(u16) -> u16) -> (u16, u16) {
    let old = rd16(b, at);
    let new = f(old);
    wr16(b, at, new);
    (old, new)
}

impl Nat {
    /// A NAT with `config`, its tables allocated in full.
    pub fn new(config: &NatConfig) -> Result<Self, ConfigError> {
        let settings = config.settings()?;
        let timeouts = timeouts_of(settings.timeouts);
        let seed = std::hash::RandomState::new().hash_one(0u64);
        let table = Table::new(
            settings.pool.clone(),
            settings.port_range,
            &settings.forwards,
            settings.max_mappings,
            timeouts,
            seed,
        );
        Ok(Self {
            inside: settings.inside,
            table,
            non_ip: verdict(settings.non_ip),
            malformed: verdict(settings.malformed),
            stats: NatStats::default(),
            clock: None,
            settings,
        })
    }

    /// Applies `config` in place if it changes only `timeouts`, `non_ip`
    /// and `malformed`; on `Err` nothing changed.
    ///
    /// Every mapping and counter stays. New timeouts count from each
    /// mapping's last packet and apply from the next batch: a mapping idle
    /// longer than its new timeout expires then. Forwards are compared as a
    /// set, so listing the same ones in another order is no change.
    pub fn apply(&mut self, config: &NatConfig) -> Result<(), ReconfigureError> {
        let new = config.settings()?;
        let old = &self.settings;
        let fixed = |field, reason| Err(ReconfigureError::Fixed { field, reason });
        if new.inside != old.inside {
            return fixed(
                "inside",
                "live mappings and forwards belong to hosts of the old prefix",
            );
        }
        if new.pool != old.pool {
            return fixed("pool", "live mappings hold ports of the old pool addresses");
        }
        if new.port_range != old.port_range {
            return fixed(
                "port_range",
                "live mappings hold ports handed out from the old range",
            );
        }
        let same_forwards = new.forwards.len() == old.forwards.len()
            && new.forwards.iter().all(|f| old.forwards.contains(f));
        if !same_forwards {
            return fixed(
                "forwards",
                "forwards own table slots and outside ports, which live mappings may hold",
            );
        }
        if new.max_mappings != old.max_mappings {
            return fixed("max_mappings", "the mapping table is allocated for it");
        }
        self.table.set_timeouts(timeouts_of(new.timeouts));
        self.non_ip = verdict(new.non_ip);
        self.malformed = verdict(new.malformed);
        self.settings = new;
        Ok(())
    }

    /// A NAT from its JSON config; empty (or blank) means defaults.
    pub fn from_config(json: &str) -> Result<Self, ConfigError> {
        Self::new(&NatConfig::from_json(json)?)
    }

    /// Counters so far.
    pub fn stats(&self) -> NatStats {
        NatStats {
            mappings: self.table.dynamic() as u64,
            ..self.stats
        }
    }

    /// The outside endpoint `inside` is mapped to, if any (no refresh).
    pub fn mapping(&self, inside: Endpoint) -> Option<Endpoint> {
        self.table.peek_inside(inside).map(|found| found.to)
    }

    /// Free ports (or ICMP identifiers) of pool address `addr` for `proto`;
    /// 0 if `addr` is not a pool address.
    pub fn free_ports(&self, addr: std::net::Ipv4Addr, proto: Proto) -> usize {
        self.table
            .pool_index(addr)
            .map_or(0, |pool| self.table.free_ports(pool, proto))
    }

    /// Advances the clock to `now` (never back) and expires idle mappings.
    pub fn expire(&mut self, now: Instant) -> Instant {
        let now = match self.clock {
            Some(clock) if clock > now => clock,
            _ => now,
        };
        self.clock = Some(now);
        self.stats.expired += self.table.expire(now);
        now
    }

    /// Translates one frame in place at time `now`; returns its verdict.
    pub fn process_frame(&mut self, frame: &mut [u8], now: Instant) -> Verdict {
        let now = self.expire(now);
        self.translate(frame, now)
    }

    /// Translates a batch at time `now` (expiring once, not per packet).
    pub fn process_at(&mut self, batch: &mut Batch<'_>, now: Instant) {
        let now = self.expire(now);
        for packet in batch.iter_mut() {
            let verdict = self.translate(packet.data_mut(), now);
            packet.set_verdict(verdict);
        }
    }

    fn translate(&mut self, frame: &mut [u8], now: Instant) -> Verdict {
        let outcome = match packet::parse(frame) {
            Frame::NonIp => Outcome::NonIp,
            Frame::Malformed => Outcome::Malformed,
            Frame::Fragment => Outcome::Fragment,
            Frame::Ipv4(packet) => match frame.get_mut(packet.l3..packet.end) {
                Some(ip) => self.translate_ipv4(ip, packet.l4, packet.transport, now),
                None => Outcome::Malformed,
            },
        };
        self.settle(outcome)
    }

    fn settle(&mut self, outcome: Outcome) -> Verdict {
        let s = &mut self.stats;
        s.packets += 1;
        let (counter, verdict) = match outcome {
            Outcome::Out { is_static: false } => (&mut s.translated_out, Verdict::Forward),
            Outcome::Out { is_static: true } => (&mut s.dnat_out, Verdict::Forward),
            Outcome::In { is_static: false } => (&mut s.translated_in, Verdict::Forward),
            Outcome::In { is_static: true } => (&mut s.dnat_in, Verdict::Forward),
            Outcome::NoMapping(Direction::In) => (&mut s.no_mapping_in, Verdict::Drop),
            Outcome::NoMapping(Direction::Out) => (&mut s.no_mapping_out, Verdict::Drop),
            Outcome::Refused(Refused::PoolExhausted) => (&mut s.pool_exhausted, Verdict::Drop),
            Outcome::Refused(Refused::TableFull) => (&mut s.table_full, Verdict::Drop),
            Outcome::NonIp => (&mut s.non_ip, self.non_ip),
            Outcome::Malformed => (&mut s.malformed, self.malformed),
            Outcome::Fragment => (&mut s.fragments, Verdict::Drop),
            Outcome::Foreign => (&mut s.foreign, Verdict::Drop),
            Outcome::Unsupported => (&mut s.unsupported, Verdict::Drop),
        };
        *counter += 1;
        verdict
    }

    /// `ip` is a validated IPv4 packet whose transport header starts at `l4`.
    fn translate_ipv4(
        &mut self,
        ip: &mut [u8],
        l4: usize,
        transport: Transport,
        now: Instant,
    ) -> Outcome {
        if self.inside.contains(rd_addr(ip, ipv4::SRC)) {
            self.outbound(ip, l4, transport, now)
        } else if self.table.pool_index(rd_addr(ip, ipv4::DST)).is_some() {
            self.inbound(ip, l4, transport, now)
        } else {
            Outcome::Foreign
        }
    }

    fn outbound(
        &mut self,
        ip: &mut [u8],
        l4: usize,
        transport: Transport,
        now: Instant,
    ) -> Outcome {
        let proto = match transport {
            Transport::Tcp => Proto::Tcp,
            Transport::Udp => Proto::Udp,
            Transport::Icmp => match rd8(ip, l4) {
                packet::ICMP_ECHO_REQUEST => Proto::Icmp,
                packet::ICMP_DEST_UNREACHABLE
                | packet::ICMP_TIME_EXCEEDED
                | packet::ICMP_PARAMETER_PROBLEM => {
                    return self.icmp_error(ip, l4, Direction::Out);
                }
                _ => return Outcome::Unsupported,
            },
            Transport::Other => return Outcome::Unsupported,
        };
        let side = Side::Src;
        let inside = Endpoint::new(
            proto,
            rd_addr(ip, ipv4::SRC),
            rd16(ip, l4 + side.port_at(proto)),
        );
        match self.table.outbound(inside, now) {
            Ok(found) => {
                rewrite(ip, l4, side, found.to);
                Outcome::Out {
                    is_static: found.is_static,
                }
            }
            Err(refused) => Outcome::Refused(refused),
        }
    }

    fn inbound(&mut self, ip: &mut [u8], l4: usize, transport: Transport, now: Instant) -> Outcome {
        let proto = match transport {
            Transport::Tcp => Proto::Tcp,
            Transport::Udp => Proto::Udp,
            Transport::Icmp => match rd8(ip, l4) {
                packet::ICMP_ECHO_REPLY => Proto::Icmp,
                packet::ICMP_DEST_UNREACHABLE
                | packet::ICMP_TIME_EXCEEDED
                | packet::ICMP_PARAMETER_PROBLEM => {
                    return self.icmp_error(ip, l4, Direction::In);
                }
                _ => return Outcome::NoMapping(Direction::In),
            },
            Transport::Other => return Outcome::NoMapping(Direction::In),
        };
        let side = Side::Dst;
        let outside = Endpoint::new(
            proto,
            rd_addr(ip, ipv4::DST),
            rd16(ip, l4 + side.port_at(proto)),
        );
        match self.table.lookup_outside(outside, Some(now)) {
            Some(found) => {
                rewrite(ip, l4, side, found.to);
                Outcome::In {
                    is_static: found.is_static,
                }
            }
            None => Outcome::NoMapping(Direction::In),
        }
    }

    /// Translates an ICMP error and the packet it quotes (RFC 5508 §4.2):
    /// the quoted packet travelled the other way, so an inbound error quotes
    /// what the NAT sent out (the outside endpoint is its source) and an
    /// outbound error quotes what the NAT delivered (the inside endpoint is
    /// its destination). An error does not refresh the mapping: it is no
    /// sign the flow is alive, and a forged one must not keep it so (RFC
    /// 5508 §4.2). One whose ICMP checksum fails is malformed (RFC 5508
    /// REQ-3: the NAT SHOULD drop it rather than translate it).
    fn icmp_error(&mut self, ip: &mut [u8], l4: usize, direction: Direction) -> Outcome {
        let no_mapping = Outcome::NoMapping(direction);
        // `ip` ends where the IPv4 total length says: the ICMP message is
        // all of the rest. Errors are rare, so a full sum costs nothing.
        if !ip.get(l4..).is_some_and(checksum::verifies) {
            return Outcome::Malformed;
        }
        // The quoted IPv4 header and at least 8 bytes after it (RFC 792):
        // enough for the ports, the UDP checksum and the echo identifier.
        let inner = l4 + l4::ICMP_LEN;
        let Some((inner_ihl, _)) = ip.get(inner..).and_then(packet::ipv4_lengths) else {
            return Outcome::Malformed;
        };
        let inner_l4 = inner + inner_ihl;
        if ip.len() < inner_l4 + 8 {
            return Outcome::Malformed;
        }
        if rd16(ip, inner + ipv4::FLAGS_FRAGMENT) & ipv4::OFFSET_MASK != 0 {
            // A non-first fragment quotes no ports.
            return no_mapping;
        }
        let (inner_side, outer_side) = match direction {
            Direction::In => (Side::Src, Side::Dst),
            Direction::Out => (Side::Dst, Side::Src),
        };
        let proto = match rd8(ip, inner + ipv4::PROTOCOL) {
            packet::IPPROTO_TCP => Proto::Tcp,
            packet::IPPROTO_UDP => Proto::Udp,
            // Only echo carries an identifier the NAT maps; and no ICMP
            // error is ever sent about an ICMP error (RFC 1122 §3.2.2).
            packet::IPPROTO_ICMP
                if rd8(ip, inner_l4)
                    == match direction {
                        Direction::In => packet::ICMP_ECHO_REQUEST,
                        Direction::Out => packet::ICMP_ECHO_REPLY,
                    } =>
            {
                Proto::Icmp
            }
            _ => return no_mapping,
        };
        let inner_addr_at = inner + inner_side.addr_at();
        let inner_port_at = inner_l4 + inner_side.port_at(proto);
        let quoted = Endpoint::new(proto, rd_addr(ip, inner_addr_at), rd16(ip, inner_port_at));
        let found = match direction {
            // The error must come to the address the quoted packet left from.
            Direction::In if rd_addr(ip, ipv4::DST) != quoted.addr => None,
            Direction::In => self.table.lookup_outside(quoted, None),
            Direction::Out => self.table.lookup_inside(quoted, None),
        };
        let Some(found) = found else {
            return no_mapping;
        };
        let to = found.to;

        // The outer header: its address only. ICMP has no pseudo-header.
        let outer_at = outer_side.addr_at();
        let mut outer = Delta::default();
        outer.addr(rd_addr(ip, outer_at), to.addr);
        wr_addr(ip, outer_at, to.addr);
        update(ip, ipv4::CHECKSUM, |c| outer.apply(c));

        // The quoted packet. The ICMP checksum covers all of it, so every
        // word changed in it, checksums included, goes into `icmp` too.
        let mut addr = Delta::default();
        addr.addr(quoted.addr, to.addr);
        wr_addr(ip, inner_addr_at, to.addr);
        let mut port = Delta::default();
        port.word(quoted.port, to.port);
        wr16(ip, inner_port_at, to.port);
        let mut icmp = addr + port;
        let (old, new) = update(ip, inner + ipv4::CHECKSUM, |c| addr.apply(c));
        icmp.word(old, new);
        let (at, delta) = match proto {
            Proto::Tcp => (inner_l4 + l4::TCP_CHECKSUM, addr + port),
            Proto::Udp => (inner_l4 + l4::UDP_CHECKSUM, addr + port),
            Proto::Icmp => (inner_l4 + l4::ICMP_CHECKSUM, port),
        };
        // A quoted TCP header may stop before its checksum.
        if at + 2 <= ip.len() {
            let (old, new) = update(ip, at, |c| match proto {
                Proto::Udp => delta.apply_udp(c),
                _ => delta.apply(c),
            });
            icmp.word(old, new);
        }
        update(ip, l4 + l4::ICMP_CHECKSUM, |c| icmp.apply(c));

        match direction {
            Direction::Out => Outcome::Out {
                is_static: found.is_static,
            },
            Direction::In => Outcome::In {
                is_static: found.is_static,
            },
        }
    }
}

/// Rewrites the `side` address and port (or echo identifier) of the
/// validated IPv4 packet `ip`, whose transport header starts at `l4`, to
/// `to`, and updates the checksums that cover them.
fn rewrite(ip: &mut [u8], l4: usize, side: Side, to: Endpoint) {
    let addr_at = side.addr_at();
    let port_at = l4 + side.port_at(to.proto);
    let mut addr = Delta::default();
    addr.addr(rd_addr(ip, addr_at), to.addr);
    wr_addr(ip, addr_at, to.addr);
    update(ip, ipv4::CHECKSUM, |c| addr.apply(c));
    let mut port = Delta::default();
    port.word(rd16(ip, port_at), to.port);
    wr16(ip, port_at, to.port);
    match to.proto {
        // The pseudo-header holds the addresses (RFC 793 §3.1, RFC 768).
        Proto::Tcp => update(ip, l4 + l4::TCP_CHECKSUM, |c| (addr + port).apply(c)),
        Proto::Udp => update(ip, l4 + l4::UDP_CHECKSUM, |c| (addr + port).apply_udp(c)),
        Proto::Icmp => update(ip, l4 + l4::ICMP_CHECKSUM, |c| port.apply(c)),
    };
}

impl NetworkFunction for Nat {
    fn process(&mut self, batch: &mut Batch<'_>) {
        self.process_at(batch, Instant::now());
    }

    /// `{"packets":..,"translated_out":..,"translated_in":..,"dnat_in":..,
    /// "dnat_out":..,"no_mapping_in":..,"no_mapping_out":..,
    /// "pool_exhausted":..,"table_full":..,"non_ip":..,"malformed":..,
    /// "fragments":..,"foreign":..,"unsupported":..,"mappings":..,"expired":..}`
    fn report(&self) -> Option<String> {
        serde_json::to_string(&self.stats()).ok()
    }

    /// [`Nat::apply`] of the parsed config: new `timeouts`, `non_ip` and
    /// `malformed` apply in place, keeping every mapping and counter; any
    /// other change is `Err` and the host restarts the NF.
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let config = NatConfig::from_json(config).map_err(|e| e.to_string())?;
        self.apply(&config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
