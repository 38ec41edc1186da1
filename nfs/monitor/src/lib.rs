//! Monitor NF: a passive tap that forwards every frame unchanged and counts
//! packets and bytes per flow, like a NetFlow/IPFIX metering process
//! (RFC 7011 §2) without the export.
//!
//! A flow is the IP 5-tuple: source and destination address, protocol, and
//! source and destination port (0 for anything but TCP and UDP). IPv4 and
//! IPv6 are parsed with etherparse, through any 802.1Q / QinQ tags left in
//! the frame and through IPv6 extension headers. Bytes are whole frame
//! lengths, Ethernet header included. Fragments carry no ports past the first
//! header etherparse can see, so they are counted with ports 0.
//!
//! Besides the flows it keeps totals over every frame, a count of well-formed
//! frames that are not IP (ARP, LLDP, ...) and a count of malformed frames
//! (runts, truncated or inconsistent IP/TCP/UDP headers), which belong to no
//! flow.
//!
//! The flow table is bounded: it holds at most `max_flows` flows and is
//! allocated for all of them up front, so the packet path never allocates
//! and traffic with random addresses cannot grow it. Once full, packets of
//! flows not already in it are counted in `untracked_packets`.
//!
//! Config (JSON, unknown fields rejected; an empty string means defaults):
//!
//! ```json
//! { "max_flows": 65536, "top": 10 }
//! ```
//!
//! `max_flows` is in `1..=1_000_000`, `top` (flows listed in the report) in
//! `1..=100`.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nf_sdk::{Batch, NetworkFunction, Verdict};
use serde::{Deserialize, Serialize, Serializer};

/// Default size of the flow table.
pub const DEFAULT_MAX_FLOWS: u64 = 65_536;
/// Largest flow table a config may ask for.
pub const MAX_FLOWS_LIMIT: u64 = 1_000_000;
/// Default number of flows in the report.
pub const DEFAULT_TOP: u64 = 10;
/// Most flows a report may list.
pub const TOP_LIMIT: u64 = 100;

/// Configuration of [`Monitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Most flows tracked at once, `1..=1_000_000`.
    pub max_flows: u64,
    /// Flows listed in [`NetworkFunction::report`], `1..=100`.
    pub top: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            max_flows: DEFAULT_MAX_FLOWS,
            top: DEFAULT_TOP,
        }
    }
}

/// An invalid monitor configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not describe a [`MonitorConfig`]. The serde message
    /// (unknown field, wrong type, syntax, with line and column) is the one a
    /// person needs, so it goes in the message.
    #[error("invalid monitor config: {0}")]
    Json(serde_json::Error),
    /// The JSON is not an object. serde would accept a struct written as an
    /// array of its fields, which nobody means in a config.
    #[error("invalid monitor config: expected a JSON object")]
    NotAnObject,
    /// `max_flows` out of range.
    #[error("invalid monitor config: max_flows must be in 1..={MAX_FLOWS_LIMIT}, got {0}")]
    MaxFlows(u64),
    /// `top` out of range.
    #[error("invalid monitor config: top must be in 1..={TOP_LIMIT}, got {0}")]
    Top(u64),
}

/// A valid monitor configuration that cannot be applied in place.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Fewer flows than the table holds: keeping some would make the
    /// evicted ones' packets vanish from the accounting.
    #[error(
        "monitor max_flows cannot shrink in place below the {tracked} flows tracked, got {max_flows}"
    )]
    Shrink {
        /// The new `max_flows`.
        max_flows: usize,
        /// Flows in the table.
        tracked: usize,
    },
    /// The larger table could not be allocated. The reason goes in the
    /// message: the host passes this on as a string.
    #[error("monitor cannot grow its flow table to {max_flows} flows in place: {reason}")]
    Grow {
        /// The new `max_flows`.
        max_flows: usize,
        /// The allocator's refusal.
        reason: std::collections::TryReserveError,
    },
}

impl MonitorConfig {
    /// Parses and validates the JSON config; empty (or blank) means defaults.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let json = json.trim_start();
        let config: Self = if json.is_empty() {
            Self::default()
        } else if json.starts_with('{') {
            serde_json::from_str(json).map_err(ConfigError::Json)?
        } else {
            return Err(ConfigError::NotAnObject);
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_FLOWS_LIMIT).contains(&self.max_flows) {
            return Err(ConfigError::MaxFlows(self.max_flows));
        }
        if !(1..=TOP_LIMIT).contains(&self.top) {
            return Err(ConfigError::Top(self.top));
        }
        Ok(())
    }
}

/// An IP protocol number (IANA "Assigned Internet Protocol Numbers"; the
/// IPv4 protocol field, or the last IPv6 next header).
///
/// Shown and serialized as a lowercase name for the common ones (`"tcp"`,
/// `"udp"`, `"icmp"`, `"icmpv6"`, ...) and as the decimal number otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpProto(pub u8);

impl IpProto {
    /// ICMP.
    pub const ICMP: Self = Self(1);
    /// TCP.
    pub const TCP: Self = Self(6);
    /// UDP.
    pub const UDP: Self = Self(17);
    /// ICMPv6.
    pub const ICMPV6: Self = Self(58);

    /// The protocol's short name, if it is a common one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "icmp",
            2 => "igmp",
            6 => "tcp",
            17 => "udp",
            47 => "gre",
            50 => "esp",
            51 => "ah",
            58 => "icmpv6",
            132 => "sctp",
            _ => return None,
        })
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for IpProto {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The 5-tuple that identifies a flow.
///
/// Ordered by field, which only serves as the tie-break in [`Monitor::top_flows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub proto: IpProto,
    /// TCP/UDP source port, 0 for other protocols.
    pub sport: u16,
    /// TCP/UDP destination port, 0 for other protocols.
    pub dport: u16,
}

impl FlowKey {
    /// The flow of a parsed frame; `None` if it is not IP.
    fn of(packet: &SlicedPacket<'_>) -> Option<Self> {
        let (src, dst, payload) = match packet.net.as_ref()? {
            NetSlice::Ipv4(ip) => {
                let header = ip.header();
                (
                    IpAddr::V4(header.source_addr()),
                    IpAddr::V4(header.destination_addr()),
                    ip.payload(),
                )
            }
            NetSlice::Ipv6(ip) => {
                let header = ip.header();
                (
                    IpAddr::V6(header.source_addr()),
                    IpAddr::V6(header.destination_addr()),
                    ip.payload(),
                )
            }
            _ => return None,
        };
        let (sport, dport) = match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => (tcp.source_port(), tcp.destination_port()),
            Some(TransportSlice::Udp(udp)) => (udp.source_port(), udp.destination_port()),
            _ => (0, 0),
        };
        Some(Self {
            src,
            dst,
            proto: IpProto(payload.ip_number.0),
            sport,
            dport,
        })
    }
}

/// Counters of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FlowCounters {
    packets: u64,
    bytes: u64,
}

/// One flow and its counters, as listed by [`Monitor::top_flows`] and in the
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub proto: IpProto,
    /// TCP/UDP source port, 0 for other protocols.
    pub sport: u16,
    /// TCP/UDP destination port, 0 for other protocols.
    pub dport: u16,
    /// Packets seen.
    pub packets: u64,
    /// Frame bytes seen.
    pub bytes: u64,
}

impl FlowStats {
    fn new(key: FlowKey, counters: FlowCounters) -> Self {
        Self {
            src: key.src,
            dst: key.dst,
            proto: key.proto,
            sport: key.sport,
            dport: key.dport,
            packets: counters.packets,
            bytes: counters.bytes,
        }
    }

    /// The flow's 5-tuple.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
        }
    }
}

/// Counters over all frames seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Totals {
    /// Frames seen, of any kind.
    pub packets: u64,
    /// Bytes of all frames seen.
    pub bytes: u64,
    /// Well-formed frames that are not IPv4 or IPv6.
    pub non_ip: u64,
    /// Frames etherparse rejects: runts, truncated or inconsistent headers.
    pub malformed: u64,
    /// Flows in the table.
    pub flows: u64,
    /// IP packets of flows that found the table full.
    pub untracked_packets: u64,
}

/// The report: totals, then the top flows by bytes.
#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    totals: Totals,
    protocols: Vec<ProtocolStats>,
    top: Vec<FlowStats>,
}

/// The monitor.
pub struct Monitor {
    flows: HashMap<FlowKey, FlowCounters>,
    max_flows: usize,
    top: usize,
    totals: Totals,
    /// Packets and bytes by IP protocol number (a fixed table: no allocation).
    protocols: Box<[FlowCounters; 256]>,
}

/// Traffic of one IP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProtocolStats {
    /// The protocol.
    pub proto: IpProto,
    /// IP packets.
    pub packets: u64,
    /// Their bytes (whole frames).
    pub bytes: u64,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("max_flows", &self.max_flows)
            .field("top", &self.top)
            .field("totals", &self.totals())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor with `config`, its flow table allocated in full.
    pub fn new(config: MonitorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // Lossless: both are validated to be at most 1_000_000.
        Ok(Self::with_limits(
            config.max_flows as usize,
            config.top as usize,
        ))
    }

    fn with_limits(max_flows: usize, top: usize) -> Self {
        Self {
            // `with_capacity(n)` holds at least n entries without
            // reallocating, and `count` never inserts past n nor removes, so
            // the table never grows on the packet path.
            flows: HashMap::with_capacity(max_flows),
            max_flows,
            top,
            totals: Totals::default(),
            protocols: Box::new([FlowCounters::default(); 256]),
        }
    }

    /// Packets and bytes per IP protocol seen, busiest first.
    pub fn protocols(&self) -> Vec<ProtocolStats> {
        let mut out: Vec<ProtocolStats> = self
            .protocols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.packets > 0)
            .map(|(p, c)| ProtocolStats {
                proto: IpProto(p as u8),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.proto.0.cmp(&b.proto.0)));
        out
    }

    /// A monitor from its JSON config; empty (or blank) means defaults.
    pub fn from_config(json: &str) -> Result<Self, ConfigError> {
        Self::new(MonitorConfig::from_json(json)?)
    }

    /// The configuration in effect.
    pub fn config(&self) -> MonitorConfig {
        MonitorConfig {
            max_flows: self.max_flows as u64,
            top: self.top as u64,
        }
    }

    /// Applies `config` in place, keeping every flow and counter; see
    /// [`NetworkFunction::reconfigure`] on [`Monitor`]. On `Err` nothing
    /// changed.
    pub fn apply(&mut self, config: MonitorConfig) -> Result<(), ReconfigureError> {
        config.validate()?;
        // Lossless: both are validated to be at most 1_000_000.
        let (max_flows, top) = (config.max_flows as usize, config.top as usize);
        let tracked = self.flows.len();
        if max_flows < tracked {
            return Err(ReconfigureError::Shrink { max_flows, tracked });
        }
        if max_flows > self.max_flows {
            // `reserve(n)` makes room for `len + n` entries, so the table
            // again holds `max_flows` flows without growing on the packet
            // path (`count` never removes). On failure the table is as it was.
            self.flows
                .try_reserve(max_flows - tracked)
                .map_err(|reason| ReconfigureError::Grow { max_flows, reason })?;
        } else {
            // Gives back what a smaller table no longer needs; keeps room for
            // `max_flows` entries.
            self.flows.shrink_to(max_flows);
        }
        self.max_flows = max_flows;
        self.top = top;
        Ok(())
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        Totals {
            flows: self.flows.len() as u64,
            ..self.totals
        }
    }

    /// The `k` flows with the most bytes, most first; ties go to more
    /// packets, then to the smaller 5-tuple. O(flows · log k).
    pub fn top_flows(&self, k: usize) -> Vec<FlowStats> {
        if k == 0 {
            return Vec::new();
        }
        // A min-heap of the best k seen so far: its top is the one to evict.
        let mut best = BinaryHeap::with_capacity(k.min(self.flows.len()));
        for (key, counters) in &self.flows {
            let rank = Reverse((counters.bytes, counters.packets, Reverse(key)));
            if best.len() < k {
                best.push(rank);
            } else if let Some(mut worst) = best.peek_mut() {
                if rank < *worst {
                    *worst = rank;
                }
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse((bytes, packets, Reverse(key)))| {
                FlowStats::new(*key, FlowCounters { packets, bytes })
            })
            .collect()
    }

    /// Accounts one frame.
    fn count(&mut self, frame: &[u8]) {
        let len = frame.len() as u64;
        self.totals.packets += 1;
        self.totals.bytes += len;
        let key = match SlicedPacket::from_ethernet(frame) {
            Ok(packet) => match FlowKey::of(&packet) {
                Some(key) => key,
                None => {
                    self.totals.non_ip += 1;
                    return;
                }
            },
            Err(_) => {
                self.totals.malformed += 1;
                return;
            }
        };
        let per_proto = &mut self.protocols[usize::from(key.proto.0)];
        per_proto.packets += 1;
        per_proto.bytes += len;
        // Not `entry()`: it reserves room for the new key even when we then
        // decline to insert, which would grow a full table.
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.packets += 1;
            flow.bytes += len;
        } else if self.flows.len() < self.max_flows {
            self.flows.insert(
                key,
                FlowCounters {
                    packets: 1,
                    bytes: len,
                },
            );
        } else {
            self.totals.untracked_packets += 1;
        }
    }
}

impl Default for Monitor {
    /// A monitor with [`MonitorConfig::default`].
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_FLOWS as usize, DEFAULT_TOP as usize)
    }
}

impl NetworkFunction for Monitor {
    fn process(&mut self, batch: &mut Batch<'_>) {
        for packet in batch.iter_mut() {
            self.count(packet.data());
            packet.set_verdict(Verdict::Forward);
        }
    }

    /// `{"packets":..,"bytes":..,"non_ip":..,"malformed":..,"flows":..,
    /// "untracked_packets":..,"protocols":[{"proto":"udp","packets":..,"bytes":..},..],
    /// "top":[{"src":..,"dst":..,"proto":..,"sport":..,
    /// "dport":..,"packets":..,"bytes":..},..]}`, top `top` flows by bytes.
    fn report(&self) -> Option<String> {
        let report = Report {
            totals: self.totals(),
            protocols: self.protocols(),
            top: self.top_flows(self.top),
        };
        serde_json::to_string(&report).ok()
    }

    /// Applies a new `top` and `max_flows` in place; the flow table, the
    /// per-protocol counts and the totals carry over, so the next report
    /// lists the new number of flows over everything seen so far.
    ///
    /// A larger `max_flows` reserves room for the extra flows (flows that
    /// found the table full so far stay in `untracked_packets`; from now on
    /// they may enter it, counted from their next packet). A smaller one is
    /// taken as long as it still holds every flow tracked; below that it is
    /// `Err`, because dropping flows would lose their counts, and a restart
    /// at least says so by starting from zero.
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let config = MonitorConfig::from_json(config).map_err(|e| e.to_string())?;
        self.apply(config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
