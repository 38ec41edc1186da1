//! Firewall NF: a stateful L3/L4 packet filter. Ordered rules, first match
//! wins, and connection tracking so the replies of an allowed flow pass.
//!
//! # Rules
//!
//! A rule matches on any of: source and destination prefix (IPv4 or IPv6),
//! IP protocol, TCP/UDP source and destination port or port range, and the
//! packet's VLAN. A missing field matches anything; a rule with ports and no
//! protocol matches TCP and UDP. The first rule a packet matches decides
//! (`allow` forwards, `deny` drops); a packet no rule matches gets `default`.
//!
//! The packet's VLAN is the tag the NIC stripped ([`Packet::vlan`]) if its id
//! is non-zero, else the outermost 802.1Q/802.1ad tag left in the frame.
//!
//! # Rule lookup
//!
//! Rules are not tried one by one. At config time every rule field becomes
//! a range on its axis (a prefix is a range of addresses, a missing field the
//! whole axis), each axis is cut into the intervals the ranges make, and
//! each interval gets a bitmap of the rules that match there (the bit-vector
//! scheme of Lakshman and Stiliadis, SIGCOMM 1998). A packet finds its
//! interval on each of the six axes (direct tables for protocol, VLAN and
//! ports; a binary search for addresses), ANDs the six bitmaps and takes the
//! lowest set bit: the first matching rule, so first-match order holds by
//! construction. For 1000 rules that is two binary searches of 11 steps and
//! at most 16 words of ANDs, with an early exit at the first match. A test
//! checks the index against a rule-by-rule reference on random rule sets.
//! See `index.rs` for the memory bound.
//!
//! # Connection tracking
//!
//! TCP, UDP and ICMP/ICMPv6 echo flows that are allowed (by a rule or by an
//! `allow` default) are entered in a connection table, keyed by the 5-tuple
//! normalized so both directions share an entry (ICMP echo uses its
//! identifier as both ports). A packet of a tracked flow passes without
//! consulting the rules, in either direction: replies pass even where the
//! rules would deny them. For ICMP only the echo reply from the peer (or a
//! further request from the originator) counts; other ICMP types are
//! decided by the rules. A TCP RST does not open an entry, an echo reply
//! does not either.
//!
//! An entry expires after the protocol's idle timeout; every packet of the
//! flow restarts it. Once a TCP flow has seen a FIN its timeout is capped at
//! 120 s, once it has seen a RST at 10 s (the spirit of Linux conntrack's
//! `FIN_WAIT` and `CLOSE` states, without their state machine). The clock
//! is read once per batch.
//!
//! The table holds at most `max_entries`, allocated in full up front, so no
//! traffic can grow it and the packet path never allocates. When it is full
//! a new flow is still decided by the rules, but not tracked, and counted in
//! `conntrack_full`. Expired entries are reused by new flows on the same
//! probe chain and swept a few slots per batch.
//!
//! # A new config while running
//!
//! [`NetworkFunction::reconfigure`] takes new rules, a new default, new
//! `non_ip`/`malformed` policies and new timeouts in place, and keeps the
//! connection table: a flow tracked before the change keeps passing in both
//! directions until it goes idle, even where the new rules would not let it
//! open, as Linux conntrack does when a ruleset is replaced (an
//! `established` entry does not consult the rules). Only new flows meet the
//! new rules. To cut existing flows, restart the NF. An entry's deadline is
//! left as it was; its next packet sets it by the new timeout. A different
//! `conntrack.max_entries` would need a new table, so it is refused (`Err`)
//! and the host restarts the NF.
//!
//! Fragments: the first fragment is matched with its ports; later fragments
//! have none, so they match only rules without ports and are never part of a
//! tracked flow (there is no reassembly).
//!
//! # Frames that are not plain IP
//!
//! A well-formed frame that is not IPv4 or IPv6 (ARP, LLDP, ...) is counted
//! in `non_ip` and forwarded or dropped per `non_ip`. A frame that cannot be
//! parsed is counted in `malformed` and dropped or forwarded per
//! `malformed`: runts, truncated Ethernet/VLAN/IPv4/IPv6/TCP/UDP/ICMP
//! headers, IHL below 5, a total or payload length past the frame, a TCP
//! data offset out of range, more than two VLAN tags in the frame, tiny or
//! overlapping first TCP fragments (RFC 1858).
//!
//! # Config
//!
//! JSON, unknown fields rejected; an empty string means defaults (no rules,
//! default deny):
//!
//! ```json
//! {
//!   "rules": [
//!     { "action": "allow", "proto": "tcp", "dst": "10.0.0.0/8", "dport": "80" },
//!     { "action": "allow", "proto": "udp", "dport": "1000-2000", "vlan": 100 },
//!     { "action": "deny", "src": "2001:db8::/32" }
//!   ],
//!   "default": "deny",
//!   "conntrack": { "max_entries": 65536, "tcp_timeout_s": 300,
//!                  "udp_timeout_s": 30, "icmp_timeout_s": 10 },
//!   "non_ip": "forward",
//!   "malformed": "drop"
//! }
//! ```
//!
//! Rule fields: `action` (`allow`/`deny`, required), `src`, `dst` (a prefix
//! with no host bits set, or an address), `proto` (`tcp`, `udp`, `icmp`,
//! `icmpv6` or 0-255), `sport`, `dport` (`"80"`, `"1000-2000"` or a number;
//! TCP and UDP only), `vlan` (1-4094). At most 10 000 rules; `max_entries`
//! in `1..=1_000_000`, timeouts in seconds, `1..=604800`. Errors name the
//! field, like `rules[3].dport: port range 2000-1000 is reversed`.
//!
//! [`Packet::vlan`]: nf_sdk::Packet::vlan
#![forbid(unsafe_code)]

mod config;
mod conntrack;
mod index;
mod parse;

use std::fmt;
use std::time::Instant;

use nf_sdk::{Batch, NetworkFunction, Verdict};
use serde::Serialize;

pub use config::{
    Action, ConfigError, ConntrackConfig, DEFAULT_ICMP_TIMEOUT_S, DEFAULT_MAX_ENTRIES,
    DEFAULT_TCP_TIMEOUT_S, DEFAULT_UDP_TIMEOUT_S, Family, FieldError, FirewallConfig, FramePolicy,
    IpPrefix, MAX_ENTRIES_LIMIT, MAX_RULES, MAX_TIMEOUT_S, PortRange, Proto, RuleConfig,
    RuleConflict, VlanId,
};
use conntrack::{ConnKey, ConnTable, Entry, Probe};
use index::RuleIndex;
use parse::{IpPacket, Parsed, TCP_FIN, TCP_RST, Transport};

/// Rules listed in the report, by hits.
pub const REPORT_TOP_RULES: usize = 20;

/// Slots of the connection table swept for expired entries per batch; more
/// while the table is full, when freeing room matters.
const SWEEP_SLOTS: usize = 64;
const SWEEP_SLOTS_FULL: usize = 1024;

/// Cap on a TCP entry's timeout after a FIN, ms.
const TCP_FIN_TIMEOUT_MS: u64 = 120_000;
/// Cap on a TCP entry's timeout after a RST, ms.
const TCP_RST_TIMEOUT_MS: u64 = 10_000;

/// Counters over all frames seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Frames seen, of any kind.
    pub packets: u64,
    /// IP packets forwarded: by a rule, by the default, or as part of a
    /// tracked flow.
    pub allowed: u64,
    /// IP packets an `allow` rule forwarded.
    pub allowed_by_rule: u64,
    /// IP packets forwarded by an `allow` default.
    pub allowed_by_default: u64,
    /// IP packets dropped.
    pub denied: u64,
    /// IP packets a `deny` rule dropped.
    pub denied_by_rule: u64,
    /// IP packets dropped by a `deny` default.
    pub denied_by_default: u64,
    /// IP packets forwarded as part of a tracked flow, rules not consulted.
    pub conntrack_hits: u64,
    /// Connections in the table (expired ones until they are swept).
    pub conntrack_entries: u64,
    /// Allowed packets of new flows that found the table full (not tracked).
    pub conntrack_full: u64,
    /// Well-formed frames that are not IPv4 or IPv6.
    pub non_ip: u64,
    /// Frames that cannot be parsed.
    pub malformed: u64,
}

/// One rule's hits, as listed by [`Firewall::top_rules`] and in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleHits {
    /// The rule's index in the config, from 0.
    pub rule: usize,
    /// Its action.
    pub action: Action,
    /// Packets it decided.
    pub hits: u64,
}

/// The report: counters, the rule count, the top rules by hits.
#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    counters: Counters,
    rules: usize,
    top_rules: Vec<RuleHits>,
}

/// Per-protocol idle timeouts, ms.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    tcp: u64,
    udp: u64,
    icmp: u64,
}

impl Timeouts {
    fn of(ct: &ConntrackConfig) -> Self {
        // Validated to be at most a week: no overflow.
        let ms = |s: u64| s * 1000;
        Self {
            tcp: ms(ct.tcp_timeout_s),
            udp: ms(ct.udp_timeout_s),
            icmp: ms(ct.icmp_timeout_s),
        }
    }
}

/// A valid firewall configuration that cannot be applied in place.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection table is allocated for `max_entries` up front;
    /// another size needs a new table, and so a restart.
    #[error(
        "firewall conntrack.max_entries cannot change in place: the table holds {current}, the new config asks for {new}"
    )]
    MaxEntries {
        /// The table's size.
        current: u64,
        /// The size asked for.
        new: u64,
    },
}

/// The firewall.
pub struct Firewall {
    index: RuleIndex,
    actions: Vec<Action>,
    hits: Vec<u64>,
    default: Action,
    non_ip: FramePolicy,
    malformed: FramePolicy,
    timeouts: Timeouts,
    conntrack: ConnTable,
    counters: Counters,
    /// Time 0 of the millisecond clock entries expire by.
    epoch: Instant,
}

impl fmt::Debug for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firewall")
            .field("rules", &self.actions.len())
            .field("default", &self.default)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl Firewall {
    /// A firewall with `config`, its rule index built and its connection
    /// table allocated in full.
    pub fn new(config: FirewallConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let ct = config.conntrack;
        Ok(Self {
            index: RuleIndex::new(&config.rules),
            actions: config.rules.iter().map(|r| r.action).collect(),
            hits: vec![0; config.rules.len()],
            default: config.default,
            non_ip: config.non_ip,
            malformed: config.malformed,
            timeouts: Timeouts::of(&ct),
            // Lossless: validated to be at most 1_000_000.
            conntrack: ConnTable::new(ct.max_entries as usize),
            counters: Counters::default(),
            epoch: Instant::now(),
        })
    }

    /// A firewall from its JSON config; empty (or blank) means defaults.
    pub fn from_config(json: &str) -> Result<Self, ConfigError> {
        Self::new(FirewallConfig::from_json(json)?)
    }

    /// Applies `config` in place; see the crate docs, "A new config while
    /// running". On `Err` nothing changed.
    ///
    /// The counters carry over. Rule hits do not: they count per rule
    /// position, and rule 3 of the new list is not rule 3 of the old, so they
    /// start at 0 for the new rules.
    pub fn apply(&mut self, config: FirewallConfig) -> Result<(), ReconfigureError> {
        config.validate()?;
        let max_entries = config.conntrack.max_entries;
        let current = self.conntrack.max() as u64;
        if max_entries != current {
            return Err(ReconfigureError::MaxEntries {
                current,
                new: max_entries,
            });
        }
        // Everything built before anything is replaced.
        let index = RuleIndex::new(&config.rules);
        let actions = config.rules.iter().map(|r| r.action).collect();
        let hits = vec![0; config.rules.len()];
        self.index = index;
        self.actions = actions;
        self.hits = hits;
        self.default = config.default;
        self.non_ip = config.non_ip;
        self.malformed = config.malformed;
        self.timeouts = Timeouts::of(&config.conntrack);
        Ok(())
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        Counters {
            conntrack_entries: self.conntrack.len() as u64,
            ..self.counters
        }
    }

    /// Packets each rule decided, by rule index.
    pub fn rule_hits(&self) -> &[u64] {
        &self.hits
    }

    /// The `k` rules that decided the most packets, most first, ties to the
    /// earlier rule; rules that decided none are left out.
    pub fn top_rules(&self, k: usize) -> Vec<RuleHits> {
        let mut hit: Vec<RuleHits> = self
            .hits
            .iter()
            .zip(&self.actions)
            .enumerate()
            .filter(|&(_, (&hits, _))| hits > 0)
            .map(|(rule, (&hits, &action))| RuleHits { rule, action, hits })
            .collect();
        hit.sort_unstable_by_key(|r| (std::cmp::Reverse(r.hits), r.rule));
        hit.truncate(k);
        hit
    }

    /// Bytes of the rule index.
    pub fn index_bytes(&self) -> usize {
        self.index.bytes()
    }

    /// Handles one batch as of `now` (the clock [`NetworkFunction::process`]
    /// reads once per batch; tests pass their own).
    pub fn process_at(&mut self, batch: &mut Batch<'_>, now: Instant) {
        let now = self.millis(now);
        let budget = if self.conntrack.is_full() {
            SWEEP_SLOTS_FULL
        } else {
            SWEEP_SLOTS
        };
        self.conntrack.sweep(now, budget);
        for packet in batch.iter_mut() {
            let verdict = self.decide(packet.data(), packet.vlan(), now);
            packet.set_verdict(verdict);
        }
    }

    /// Milliseconds of the firewall's clock at `now`; 0 before its epoch.
    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn verdict(policy: FramePolicy) -> Verdict {
        match policy {
            FramePolicy::Forward => Verdict::Forward,
            FramePolicy::Drop => Verdict::Drop,
        }
    }

    /// The verdict on one frame, counted.
    fn decide(&mut self, frame: &[u8], tci: u16, now: u64) -> Verdict {
        self.counters.packets += 1;
        match parse::parse(frame, tci) {
            Parsed::Ip(packet) => self.decide_ip(&packet, now),
            Parsed::NonIp => {
                self.counters.non_ip += 1;
                Self::verdict(self.non_ip)
            }
            Parsed::Malformed => {
                self.counters.malformed += 1;
                Self::verdict(self.malformed)
            }
        }
    }

    fn decide_ip(&mut self, packet: &IpPacket, now: u64) -> Verdict {
        let conn = Conn::of(packet);
        let mut vacancy = None;
        if let Some(conn) = &conn {
            let hash = self.conntrack.hash(&conn.key);
            match self.conntrack.probe(&conn.key, hash, now) {
                Probe::Found(slot) => {
                    if self.refresh(slot, conn, now) {
                        self.counters.conntrack_hits += 1;
                        self.counters.allowed += 1;
                        return Verdict::Forward;
                    }
                }
                at @ Probe::Vacant { .. } => vacancy = Some((hash, at)),
            }
        }

        let action = match self.index.lookup(&packet.fields) {
            Some(rule) => {
                if let Some(hits) = self.hits.get_mut(rule) {
                    *hits += 1;
                }
                let action = self.actions.get(rule).copied().unwrap_or(self.default);
                match action {
                    Action::Allow => self.counters.allowed_by_rule += 1,
                    Action::Deny => self.counters.denied_by_rule += 1,
                }
                action
            }
            None => {
                match self.default {
                    Action::Allow => self.counters.allowed_by_default += 1,
                    Action::Deny => self.counters.denied_by_default += 1,
                }
                self.default
            }
        };
        if action == Action::Deny {
            self.counters.denied += 1;
            return Verdict::Drop;
        }
        self.counters.allowed += 1;
        if let (Some(conn), Some((hash, at))) = (conn, vacancy) {
            if conn.opens {
                let flags = conn.flags();
                let expires = now + self.timeout(conn.transport, flags);
                if !self.conntrack.insert(at, conn.key, hash, expires, flags) {
                    self.counters.conntrack_full += 1;
                }
            }
        }
        Verdict::Forward
    }

    /// Whether the packet `conn` belongs to the tracked entry at `slot`;
    /// if so, restarts its timeout and notes TCP FIN/RST.
    fn refresh(&mut self, slot: usize, conn: &Conn, now: u64) -> bool {
        let Some(entry) = self.conntrack.entry(slot) else {
            return false;
        };
        let from_origin = (entry.flags & Entry::ORIGIN_A != 0) == conn.src_is_a;
        let belongs = match conn.transport {
            // An echo request goes origin → peer, a reply peer → origin.
            Transport::Echo { request, .. } => request == from_origin,
            _ => true,
        };
        if !belongs {
            return false;
        }
        // Who opened the flow stays as it was; FIN and RST accumulate.
        let flags = entry.flags | (conn.flags() & (Entry::FIN | Entry::RST));
        let expires = now + self.timeout(conn.transport, flags);
        if let Some(entry) = self.conntrack.entry_mut(slot) {
            entry.flags = flags;
            entry.expires = expires;
        }
        true
    }

    fn timeout(&self, transport: Transport, flags: u8) -> u64 {
        match transport {
            Transport::Tcp { .. } if flags & Entry::RST != 0 => {
                self.timeouts.tcp.min(TCP_RST_TIMEOUT_MS)
            }
            Transport::Tcp { .. } if flags & Entry::FIN != 0 => {
                self.timeouts.tcp.min(TCP_FIN_TIMEOUT_MS)
            }
            Transport::Tcp { .. } => self.timeouts.tcp,
            Transport::Udp => self.timeouts.udp,
            Transport::Echo { .. } | Transport::Other => self.timeouts.icmp,
        }
    }
}

/// A packet's connection, if it belongs to a kind that is tracked.
struct Conn {
    key: ConnKey,
    src_is_a: bool,
    transport: Transport,
    /// Whether an allowed packet like this one opens an entry.
    opens: bool,
}

impl Conn {
    fn of(packet: &IpPacket) -> Option<Self> {
        let f = &packet.fields;
        let (sport, dport, opens) = match packet.transport {
            Transport::Tcp { flags } => {
                let (s, d) = f.ports?;
                (s, d, flags & TCP_RST == 0)
            }
            Transport::Udp => {
                let (s, d) = f.ports?;
                (s, d, true)
            }
            Transport::Echo { request, id } => (id, id, request),
            Transport::Other => return None,
        };
        let (key, src_is_a) = ConnKey::new(f.v6, f.proto, f.src, sport, f.dst, dport);
        Some(Self {
            key,
            src_is_a,
            transport: packet.transport,
            opens,
        })
    }

    /// The entry flags this packet sets: who opened it, FIN, RST.
    fn flags(&self) -> u8 {
        let mut flags = if self.src_is_a { Entry::ORIGIN_A } else { 0 };
        if let Transport::Tcp { flags: tcp } = self.transport {
            if tcp & TCP_FIN != 0 {
                flags |= Entry::FIN;
            }
            if tcp & TCP_RST != 0 {
                flags |= Entry::RST;
            }
        }
        flags
    }
}

impl NetworkFunction for Firewall {
    fn process(&mut self, batch: &mut Batch<'_>) {
        self.process_at(batch, Instant::now());
    }

    /// `{"packets":..,"allowed":..,"allowed_by_rule":..,"allowed_by_default":..,
    /// "denied":..,"denied_by_rule":..,"denied_by_default":..,
    /// "conntrack_hits":..,"conntrack_entries":..,"conntrack_full":..,
    /// "non_ip":..,"malformed":..,"rules":..,
    /// "top_rules":[{"rule":..,"action":..,"hits":..},..]}`, the top 20 rules
    /// by hits.
    fn report(&self) -> Option<String> {
        let report = Report {
            counters: self.counters(),
            rules: self.actions.len(),
            top_rules: self.top_rules(REPORT_TOP_RULES),
        };
        serde_json::to_string(&report).ok()
    }

    /// New rules, default, frame policies and timeouts apply in place and
    /// the tracked connections stay (see the crate docs); a new
    /// `conntrack.max_entries` is `Err`. Counters carry over, rule hits
    /// restart with the new rules ([`Firewall::apply`]).
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let config = FirewallConfig::from_json(config).map_err(|e| e.to_string())?;
        self.apply(config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
