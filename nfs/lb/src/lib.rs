//! Load balancer NF: an L4 (TCP or UDP) load balancer for one virtual IP in
//! the style of Maglev (Eisenbud et al., NSDI 2016) and Katran, rewriting
//! addresses in place (DNAT) rather than encapsulating.
//!
//! - A packet to the **VIP** (IPv4, the configured protocol, destination
//!   address and port = `vip`) goes to a backend: its destination address and
//!   port become the backend's, the IPv4 and TCP/UDP checksums are updated
//!   incrementally (RFC 1624), and it is forwarded.
//! - A **reply** (the configured protocol, source = a backend's address and
//!   port) gets its source rewritten back to the VIP, so the client sees the
//!   address it connected to. Replies are rewritten statelessly: a backend's
//!   address is only ever reached through the VIP.
//! - **Other** packets (other hosts, other ports of the VIP's address, other
//!   protocols, IPv6, ARP and anything else that is not IPv4) are forwarded
//!   unchanged or dropped per `non_vip`, and counted there.
//! - **Malformed** frames (shorter than a header they announce, an IPv4
//!   version other than 4, IHL < 5, total length past the frame, a TCP data
//!   offset or UDP length that does not fit, a third VLAN tag) are dropped or
//!   forwarded unchanged per `malformed`, and counted.
//! - **Fragments** to the VIP's address or from a backend's address are
//!   dropped and counted: fragments after the first carry no ports, so they
//!   cannot follow their flow to a backend (Katran does the same).
//!
//! A new flow's backend comes from a [`Maglev`] table indexed by the hash of
//! its 5-tuple; the flow table then remembers it ([`FlowKey`]), so the flow
//! keeps its backend across a [`Lb::reconfigure`] for as long as it sends a
//! packet at least every `affinity_timeout_s` seconds. A flow whose backend is
//! removed moves to the backend the new table gives it. Time is passed in
//! ([`Lb::process_at`]); [`NetworkFunction::process`] reads the clock once per
//! batch.
//!
//! A new JSON config while running ([`NetworkFunction::reconfigure`]) may
//! change the backends and weights, `table_size`, `affinity_timeout_s`,
//! `non_vip` and `malformed` in place, as [`Lb::reconfigure`] does for the
//! backends. A new `vip` or `proto` is refused: the flows in the table and
//! the stateless reply rewrite belong to the old ones, so clients in the
//! middle of a connection would get replies from an address they never
//! talked to. A new `max_flows` is refused too (the flow table is allocated
//! in full and its slots hashed by its size). The host then restarts the NF.
//!
//! Up to two VLAN tags may remain in the frame (QinQ); they are left as they
//! are. The packet path does not allocate: the Maglev table, the flow table
//! and the backend maps are built with the configuration.
//!
//! Config (JSON, unknown fields rejected). `vip` and `backends` are required,
//! so an empty string, which means "all defaults" for every NF, reads as `{}`
//! and is rejected as missing `vip`:
//!
//! ```json
//! { "vip": "198.51.100.10:80", "proto": "tcp",
//!   "backends": [{ "addr": "10.0.1.1:8080", "weight": 1 }],
//!   "table_size": 65537, "affinity_timeout_s": 60, "max_flows": 65536,
//!   "non_vip": "forward", "malformed": "drop" }
//! ```
//!
//! - `vip`, `backends[].addr`: IPv4 address and port, port not 0; backends
//!   distinct and none equal to the VIP.
//! - `proto`: `"tcp"` (default) or `"udp"`.
//! - `backends`: 1 to 1000; `weight` in `1..=100`, default 1.
//! - `table_size`: the Maglev table size M, a prime, at least 10 per backend
//!   (the paper's M ≫ N, for a balanced table) and at most 2^24; default 65537.
//! - `affinity_timeout_s`: idle seconds before a flow is forgotten,
//!   `1..=86400`, default 60.
//! - `max_flows`: flow table size, `1..=1_000_000`, default 65536.
//! - `non_vip`: `"forward"` (default) or `"drop"`; `malformed`: `"drop"`
//!   (default) or `"forward"`.
#![forbid(unsafe_code)]

mod flows;
mod maglev;
mod packet;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use nf_sdk::{Batch, NetworkFunction, Verdict};
use serde::{Deserialize, Serialize, Serializer};

use crate::flows::{FlowTable, Outcome};
use crate::maglev::mix64;
pub use crate::maglev::{BackendIndex, Maglev};
use crate::packet::{End, Ipv4Packet, Parsed};

/// Default Maglev table size (the paper's smaller example, a prime).
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;
/// Largest Maglev table a config may ask for (the largest valid one is the
/// prime 16_777_213): 32 MiB of entries.
pub const MAX_TABLE_SIZE: u64 = 1 << 24;
/// Table entries a config must allow per backend, at least.
pub const MIN_ENTRIES_PER_BACKEND: u64 = 10;
/// Most backends.
pub const MAX_BACKENDS: usize = 1000;
/// Largest backend weight.
pub const MAX_WEIGHT: u64 = 100;
/// Default backend weight.
pub const DEFAULT_WEIGHT: u64 = 1;
/// Default idle time before a flow loses its affinity.
pub const DEFAULT_AFFINITY_TIMEOUT_S: u64 = 60;
/// Longest idle time a config may ask for (a day).
pub const MAX_AFFINITY_TIMEOUT_S: u64 = 86_400;
/// Default size of the flow table.
pub const DEFAULT_MAX_FLOWS: u64 = 65_536;
/// Largest flow table a config may ask for.
pub const MAX_FLOWS_LIMIT: u64 = 1_000_000;

/// An IPv4 address and a port other than 0, written `"a.b.c.d:port"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Endpoint(pub SocketAddrV4);

impl Endpoint {
    /// `ip:port` packed into one integer, for hashing and maps.
    fn key(self) -> u64 {
        u64::from(u32::from(*self.0.ip())) << 16 | u64::from(self.0.port())
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.parse::<SocketAddrV4>() {
            Ok(addr) if addr.port() == 0 => Err(format!("port 0 in {value:?} is not usable")),
            Ok(addr) => Ok(Self(addr)),
            Err(_) => Err(format!(
                "expected an IPv4 address and port like \"10.0.1.1:8080\", got {value:?}"
            )),
        }
    }
}

impl From<SocketAddrV4> for Endpoint {
    fn from(addr: SocketAddrV4) -> Self {
        Self(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The transport protocol balanced.
///
/// Deserialized through a string so that a wrong type reads "expected a
/// string" rather than serde_json's bare "expected value" for enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Proto {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => packet::IPPROTO_TCP,
            Self::Udp => packet::IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl TryFrom<String> for Proto {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(format!(
                "unknown proto {value:?}, expected \"tcp\" or \"udp\""
            )),
        }
    }
}

/// What happens to a packet the load balancer does not rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Action {
    /// Forward it unchanged.
    Forward,
    /// Drop it.
    Drop,
}

impl Action {
    fn verdict(self) -> Verdict {
        match self {
            Self::Forward => Verdict::Forward,
            Self::Drop => Verdict::Drop,
        }
    }
}

impl TryFrom<String> for Action {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "forward" => Ok(Self::Forward),
            "drop" => Ok(Self::Drop),
            _ => Err(format!(
                "unknown action {value:?}, expected \"forward\" or \"drop\""
            )),
        }
    }
}

/// One backend server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Where its flows go.
    pub addr: Endpoint,
    /// Relative share of new flows, `1..=100`.
    #[serde(default = "default_weight")]
    pub weight: u64,
}

impl Backend {
    /// A backend at `addr` with weight `weight`.
    pub fn new(addr: SocketAddrV4, weight: u64) -> Self {
        Self {
            addr: Endpoint(addr),
            weight,
        }
    }
}

fn default_weight() -> u64 {
    DEFAULT_WEIGHT
}
fn default_table_size() -> u64 {
    DEFAULT_TABLE_SIZE
}
fn default_affinity_timeout_s() -> u64 {
    DEFAULT_AFFINITY_TIMEOUT_S
}
fn default_max_flows() -> u64 {
    DEFAULT_MAX_FLOWS
}
fn default_non_vip() -> Action {
    Action::Forward
}
fn default_malformed() -> Action {
    Action::Drop
}

/// Configuration of [`Lb`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    /// The virtual address and port clients connect to.
    pub vip: Endpoint,
    /// Transport protocol balanced.
    #[serde(default)]
    pub proto: Proto,
    /// The backends, 1 to 1000, distinct.
    pub backends: Vec<Backend>,
    /// Maglev table size M: a prime, at least 10 per backend, at most 2^24.
    #[serde(default = "default_table_size")]
    pub table_size: u64,
    /// Idle seconds before a flow loses its affinity, `1..=86400`.
    #[serde(default = "default_affinity_timeout_s")]
    pub affinity_timeout_s: u64,
    /// Flows remembered at once, `1..=1_000_000`.
    #[serde(default = "default_max_flows")]
    pub max_flows: u64,
    /// What to do with packets that are neither to the VIP nor replies.
    #[serde(default = "default_non_vip")]
    pub non_vip: Action,
    /// What to do with malformed frames.
    #[serde(default = "default_malformed")]
    pub malformed: Action,
}

impl LbConfig {
    /// `vip` and `backends` with every other field at its default.
    pub fn new(vip: SocketAddrV4, backends: &[Backend]) -> Self {
        Self {
            vip: Endpoint(vip),
            proto: Proto::default(),
            backends: backends.to_vec(),
            table_size: DEFAULT_TABLE_SIZE,
            affinity_timeout_s: DEFAULT_AFFINITY_TIMEOUT_S,
            max_flows: DEFAULT_MAX_FLOWS,
            non_vip: default_non_vip(),
            malformed: default_malformed(),
        }
    }

    /// Parses and validates a JSON config. An empty (or blank) string stands
    /// for `{}`, which lacks the required `vip` and `backends`.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let json = json.trim_start();
        let json = if json.is_empty() {
            "{}"
        } else if json.starts_with('{') {
            json
        } else {
            return Err(ConfigError::NotAnObject);
        };
        let mut de = serde_json::Deserializer::from_str(json);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(ConfigError::Field)?;
        de.end().map_err(ConfigError::Syntax)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value (the backends as [`Lb::reconfigure`] would).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_backends(self.vip, &self.backends, self.table_size)?;
        if !(1..=MAX_AFFINITY_TIMEOUT_S).contains(&self.affinity_timeout_s) {
            return Err(ConfigError::AffinityTimeout(self.affinity_timeout_s));
        }
        if !(1..=MAX_FLOWS_LIMIT).contains(&self.max_flows) {
            return Err(ConfigError::MaxFlows(self.max_flows));
        }
        Ok(())
    }
}

/// An invalid load balancer configuration. Every message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or trailing characters after the object.
    #[error("invalid lb config: {0}")]
    Syntax(serde_json::Error),
    /// The JSON does not describe an [`LbConfig`]: a missing, unknown or
    /// mistyped field, with its path (`backends[2].weight: ...`).
    #[error("invalid lb config: {0}")]
    Field(serde_path_to_error::Error<serde_json::Error>),
    /// The JSON is not an object. serde would accept a struct written as an
    /// array of its fields, which nobody means in a config.
    #[error("invalid lb config: expected a JSON object")]
    NotAnObject,
    /// Too few or too many backends.
    #[error("invalid lb config: backends must list 1..={MAX_BACKENDS} backends, got {0}")]
    BackendCount(usize),
    /// A weight out of range.
    #[error(
        "invalid lb config: backends[{index}].weight must be in 1..={MAX_WEIGHT}, got {weight}"
    )]
    Weight {
        /// Position in `backends`.
        index: usize,
        /// The weight given.
        weight: u64,
    },
    /// Two backends with one address.
    #[error("invalid lb config: backends[{index}].addr {addr} repeats backends[{first}].addr")]
    DuplicateBackend {
        /// Position of the repeat.
        index: usize,
        /// Position of the first one.
        first: usize,
        /// The address.
        addr: Endpoint,
    },
    /// A backend at the VIP: its replies could not be told from requests.
    #[error("invalid lb config: backends[{index}].addr {addr} is the vip")]
    BackendIsVip {
        /// Position in `backends`.
        index: usize,
        /// The address.
        addr: Endpoint,
    },
    /// A table size that is not prime: some backends' permutations would not
    /// cover the table (Maglev §3.4).
    #[error("invalid lb config: table_size must be a prime, got {0}")]
    TableSizeNotPrime(u64),
    /// A table too small for the backends to share evenly.
    #[error(
        "invalid lb config: table_size must be at least {MIN_ENTRIES_PER_BACKEND} per backend ({min}), got {size}"
    )]
    TableSizeTooSmall {
        /// The size given.
        size: u64,
        /// The smallest allowed for this many backends.
        min: u64,
    },
    /// A table too large.
    #[error("invalid lb config: table_size must be at most {MAX_TABLE_SIZE}, got {0}")]
    TableSizeTooLarge(u64),
    /// `affinity_timeout_s` out of range.
    #[error(
        "invalid lb config: affinity_timeout_s must be in 1..={MAX_AFFINITY_TIMEOUT_S}, got {0}"
    )]
    AffinityTimeout(u64),
    /// `max_flows` out of range.
    #[error("invalid lb config: max_flows must be in 1..={MAX_FLOWS_LIMIT}, got {0}")]
    MaxFlows(u64),
}

/// A valid load balancer config that cannot be applied in place; the host
/// restarts the NF with it.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Tracked flows and the reply rewrite belong to the current VIP.
    #[error(
        "lb vip cannot change in place: flows and their replies belong to {current}, the new config asks for {new}"
    )]
    Vip {
        /// The VIP in effect.
        current: Endpoint,
        /// The VIP asked for.
        new: Endpoint,
    },
    /// Tracked flows and the reply rewrite belong to the current protocol.
    #[error(
        "lb proto cannot change in place: flows and their replies are {current}, the new config asks for {new}"
    )]
    Proto {
        /// The protocol in effect.
        current: Proto,
        /// The protocol asked for.
        new: Proto,
    },
    /// The flow table is allocated in full, its slots placed by its size.
    #[error(
        "lb max_flows cannot change in place: the flow table holds {current}, the new config asks for {new}"
    )]
    MaxFlows {
        /// The table's size.
        current: u64,
        /// The size asked for.
        new: u64,
    },
}

fn validate_backends(
    vip: Endpoint,
    backends: &[Backend],
    table_size: u64,
) -> Result<(), ConfigError> {
    Maglev::validate(backends, table_size)?;
    let mut seen = HashMap::with_capacity(backends.len());
    for (index, backend) in backends.iter().enumerate() {
        let addr = backend.addr;
        if addr == vip {
            return Err(ConfigError::BackendIsVip { index, addr });
        }
        if let Some(&first) = seen.get(&addr) {
            return Err(ConfigError::DuplicateBackend { index, first, addr });
        }
        seen.insert(addr, index);
    }
    Ok(())
}

/// A flow to the VIP: its 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The client's address and port (the packet's source).
    pub client: SocketAddrV4,
    /// The VIP (the packet's destination).
    pub vip: SocketAddrV4,
    /// Transport protocol.
    pub proto: Proto,
}

// Arbitrary (digits of pi, continued from maglev's seeds).
const FLOW_SEED: u64 = 0xa409_3822_299f_31d0;

impl FlowKey {
    /// The hash that picks the flow's Maglev entry and flow-table buckets:
    /// stable across builds and restarts, like the table itself.
    pub fn flow_hash(&self) -> u64 {
        let client = u64::from(u32::from(*self.client.ip())) << 32
            | u64::from(self.client.port()) << 16
            | u64::from(self.proto.number());
        let vip = Endpoint(self.vip).key();
        mix64(mix64(client ^ FLOW_SEED) ^ vip)
    }

    /// The flow within one load balancer, whose VIP and protocol are fixed:
    /// the client's address and port.
    fn client_key(&self) -> u64 {
        Endpoint(self.client).key()
    }
}

/// A cheap hasher for the backend maps, whose keys come from the config,
/// not from the wire (no flooding concern), and are already integers.
#[derive(Debug, Clone, Copy, Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<MixHasher>>;

/// Counters of one backend. They survive a reconfiguration that keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct BackendCounters {
    packets: u64,
    bytes: u64,
    reply_packets: u64,
    reply_bytes: u64,
    new_flows: u64,
    affinity_hits: u64,
}

/// The backends and everything built from them; replaced whole on
/// reconfiguration.
#[derive(Debug)]
struct Pool {
    backends: Vec<Backend>,
    counters: Vec<BackendCounters>,
    /// [`Endpoint::key`] → index, to recognize replies.
    by_addr: FastMap<u64, BackendIndex>,
    /// Backend addresses, to recognize their fragments.
    ips: FastSet<u64>,
    maglev: Maglev,
}

impl Pool {
    fn new(vip: Endpoint, backends: &[Backend], table_size: u64) -> Result<Self, ConfigError> {
        validate_backends(vip, backends, table_size)?;
        let maglev = Maglev::new(backends, table_size)?;
        let mut by_addr = FastMap::default();
        let mut ips = FastSet::default();
        for (i, b) in backends.iter().enumerate() {
            // Lossless: validated to be at most 1000 backends.
            by_addr.insert(b.addr.key(), i as BackendIndex);
            ips.insert(u64::from(u32::from(*b.addr.0.ip())));
        }
        Ok(Self {
            backends: backends.to_vec(),
            counters: vec![BackendCounters::default(); backends.len()],
            by_addr,
            ips,
            maglev,
        })
    }

    fn index_of(&self, addr: Endpoint) -> Option<BackendIndex> {
        self.by_addr.get(&addr.key()).copied()
    }
}

/// Counters over all frames seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Totals {
    /// Frames seen, of any kind.
    pub packets: u64,
    /// Bytes of all frames seen.
    pub bytes: u64,
    /// Live flows in the flow table.
    pub flows: u64,
    /// Flows that entered the flow table.
    pub new_flows: u64,
    /// Packets whose backend came from the flow table.
    pub affinity_hits: u64,
    /// Packets to the VIP rewritten to a backend.
    pub to_backends: u64,
    /// Replies rewritten back to the VIP.
    pub replies: u64,
    /// Packets neither to the VIP nor replies, non-IPv4 ones included.
    pub non_vip: u64,
    /// Malformed frames.
    pub malformed: u64,
    /// Fragments to the VIP or from a backend, dropped.
    pub fragments: u64,
    /// Packets of new flows that found the flow table full; they went to the
    /// backend the Maglev table gives, without affinity.
    pub flow_table_full: u64,
}

/// Counters and state of one backend, as in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    /// Its address.
    pub addr: Endpoint,
    /// Its weight.
    pub weight: u64,
    /// Maglev table entries it holds.
    pub table_entries: u64,
    /// Live flows the flow table sends it.
    pub flows: u64,
    /// Flows that entered the flow table for it.
    pub new_flows: u64,
    /// Packets sent to it because the flow table said so.
    pub affinity_hits: u64,
    /// Packets sent to it.
    pub packets: u64,
    /// Bytes sent to it.
    pub bytes: u64,
    /// Replies from it rewritten to come from the VIP.
    pub reply_packets: u64,
    /// Bytes of those replies.
    pub reply_bytes: u64,
}

/// The report.
#[derive(Serialize)]
struct Report {
    vip: Endpoint,
    proto: Proto,
    table_size: usize,
    #[serde(flatten)]
    totals: Totals,
    backends: Vec<BackendStats>,
}

/// Seconds as the flow table keeps them; u32 lasts 136 years.
fn secs(now: Duration) -> u32 {
    u32::try_from(now.as_secs()).unwrap_or(u32::MAX)
}

/// The load balancer.
#[derive(Debug)]
pub struct Lb {
    vip: Endpoint,
    proto: Proto,
    non_vip: Action,
    malformed: Action,
    table_size: u64,
    pool: Pool,
    flows: FlowTable,
    totals: Totals,
    /// Origin of the time passed to [`Lb::process_at`] by
    /// [`NetworkFunction::process`].
    started: Instant,
    /// Time of the last batch, in seconds, for reports.
    now_s: u32,
}

impl Lb {
    /// A load balancer with `config`, its tables allocated in full.
    pub fn new(config: LbConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let pool = Pool::new(config.vip, &config.backends, config.table_size)?;
        Ok(Self {
            vip: config.vip,
            proto: config.proto,
            non_vip: config.non_vip,
            malformed: config.malformed,
            table_size: config.table_size,
            pool,
            // Lossless: validated to be at most 1_000_000 and 86_400.
            flows: FlowTable::new(config.max_flows as usize, config.affinity_timeout_s as u32),
            totals: Totals::default(),
            started: Instant::now(),
            now_s: 0,
        })
    }

    /// A load balancer from its JSON config. An empty (or blank) string
    /// stands for `{}`, which lacks the required `vip` and `backends`.
    pub fn from_config(json: &str) -> Result<Self, ConfigError> {
        Self::new(LbConfig::from_json(json)?)
    }

    /// A load balancer for `vip` over `backends`, every other setting at its
    /// default (TCP, M = 65537, ...).
    pub fn with_backends(vip: SocketAddrV4, backends: &[Backend]) -> Result<Self, ConfigError> {
        Self::new(LbConfig::new(vip, backends))
    }

    /// Replaces the backends (validated as in the config) and rebuilds the
    /// Maglev table. Flows in the flow table keep their backend if it stays;
    /// flows of removed backends are forgotten and move on their next
    /// packet. Counters of backends that stay carry over. On error nothing
    /// changes.
    pub fn reconfigure(&mut self, backends: &[Backend]) -> Result<(), ConfigError> {
        let pool = Pool::new(self.vip, backends, self.table_size)?;
        self.replace_pool(pool);
        Ok(())
    }

    /// Applies a whole new config in place: the backends as
    /// [`Lb::reconfigure`] does (with the new `table_size`), and the new
    /// `affinity_timeout_s`, `non_vip` and `malformed`. A new `vip`, `proto`
    /// or `max_flows` is an error (see the crate docs). Totals carry over.
    /// On error nothing changes.
    pub fn apply(&mut self, config: LbConfig) -> Result<(), ReconfigureError> {
        config.validate()?;
        if config.vip != self.vip {
            return Err(ReconfigureError::Vip {
                current: self.vip,
                new: config.vip,
            });
        }
        if config.proto != self.proto {
            return Err(ReconfigureError::Proto {
                current: self.proto,
                new: config.proto,
            });
        }
        let max_flows = self.flows.capacity() as u64;
        if config.max_flows != max_flows {
            return Err(ReconfigureError::MaxFlows {
                current: max_flows,
                new: config.max_flows,
            });
        }
        let pool = Pool::new(self.vip, &config.backends, config.table_size)?;
        self.replace_pool(pool);
        self.table_size = config.table_size;
        // Lossless: validated to be at most 86_400.
        self.flows.set_timeout(config.affinity_timeout_s as u32);
        self.non_vip = config.non_vip;
        self.malformed = config.malformed;
        Ok(())
    }

    /// Puts `pool` in place of the current one: flows keep their backend if
    /// it stays, counters of kept backends carry over.
    fn replace_pool(&mut self, mut pool: Pool) {
        let remap: Vec<Option<BackendIndex>> = self
            .pool
            .backends
            .iter()
            .zip(&self.pool.counters)
            .map(|(old, counters)| {
                let new = pool.index_of(old.addr)?;
                if let Some(c) = pool.counters.get_mut(usize::from(new)) {
                    *c = *counters;
                }
                Some(new)
            })
            .collect();
        self.flows.remap(&remap);
        self.pool = pool;
    }

    /// The current backends.
    pub fn backends(&self) -> &[Backend] {
        &self.pool.backends
    }

    /// The current Maglev table.
    pub fn maglev(&self) -> &Maglev {
        &self.pool.maglev
    }

    /// The backend the Maglev table gives `flow`, regardless of the flow
    /// table (where a new flow would go).
    pub fn pick(&self, flow: &FlowKey) -> Endpoint {
        let i = self.pool.maglev.lookup(flow.flow_hash());
        // Table entries index the backends they were built from.
        self.pool.backends[usize::from(i)].addr
    }

    /// The totals, as of the last batch.
    pub fn totals(&self) -> Totals {
        Totals {
            flows: self.flows.count_live(self.now_s, &mut []),
            ..self.totals
        }
    }

    /// Per-backend counters, in configuration order, as of the last batch.
    pub fn backend_stats(&self) -> Vec<BackendStats> {
        let mut flows = vec![0; self.pool.backends.len()];
        self.flows.count_live(self.now_s, &mut flows);
        let pool = &self.pool;
        pool.backends
            .iter()
            .zip(&pool.counters)
            .zip(pool.maglev.entries())
            .zip(flows)
            .map(|(((b, c), &entries), flows)| BackendStats {
                addr: b.addr,
                weight: b.weight,
                table_entries: u64::from(entries),
                flows,
                new_flows: c.new_flows,
                affinity_hits: c.affinity_hits,
                packets: c.packets,
                bytes: c.bytes,
                reply_packets: c.reply_packets,
                reply_bytes: c.reply_bytes,
            })
            .collect()
    }

    /// Flow table slots (`max_flows`).
    pub fn flow_capacity(&self) -> usize {
        self.flows.capacity()
    }

    /// Handles one batch at time `now` (since the load balancer started, or
    /// any other fixed origin, as long as it does not go back).
    pub fn process_at(&mut self, batch: &mut Batch<'_>, now: Duration) {
        let now = secs(now);
        self.now_s = now;
        for packet in batch.iter_mut() {
            let verdict = self.handle(packet.data_mut(), now);
            packet.set_verdict(verdict);
        }
    }

    fn handle(&mut self, frame: &mut [u8], now: u32) -> Verdict {
        self.totals.packets += 1;
        self.totals.bytes += frame.len() as u64;
        let packet = match packet::parse(frame) {
            Parsed::Ipv4(packet) => packet,
            Parsed::NotIpv4 => return self.non_vip(),
            Parsed::Malformed => {
                self.totals.malformed += 1;
                return self.malformed.verdict();
            }
        };
        if packet.proto != self.proto.number() {
            return self.non_vip();
        }
        let vip = self.vip.0;
        if packet.dst == *vip.ip() {
            return match packet.ports {
                Some((_, dport)) if dport != vip.port() => self.non_vip(),
                _ if packet.fragment => self.fragment(),
                Some((sport, _)) => {
                    self.balance(frame, &packet, SocketAddrV4::new(packet.src, sport), now)
                }
                // Unfragmented TCP and UDP always have ports.
                None => self.non_vip(),
            };
        }
        let from_backend = match packet.ports {
            Some((sport, _)) => self
                .pool
                .by_addr
                .get(&Endpoint(SocketAddrV4::new(packet.src, sport)).key())
                .copied(),
            None => None,
        };
        match from_backend {
            Some(_) if packet.fragment => self.fragment(),
            Some(backend) => self.reply(frame, &packet, backend),
            None if packet.fragment
                && packet.ports.is_none()
                && self.pool.ips.contains(&u64::from(u32::from(packet.src))) =>
            {
                self.fragment()
            }
            None => self.non_vip(),
        }
    }

    fn non_vip(&mut self) -> Verdict {
        self.totals.non_vip += 1;
        self.non_vip.verdict()
    }

    fn fragment(&mut self) -> Verdict {
        self.totals.fragments += 1;
        Verdict::Drop
    }

    /// DNAT of a packet from `client` to the VIP.
    fn balance(
        &mut self,
        frame: &mut [u8],
        packet: &Ipv4Packet,
        client: SocketAddrV4,
        now: u32,
    ) -> Verdict {
        let flow = FlowKey {
            client,
            vip: self.vip.0,
            proto: self.proto,
        };
        let hash = flow.flow_hash();
        let maglev = &self.pool.maglev;
        let outcome = self
            .flows
            .lookup_or_insert(flow.client_key(), hash, now, || maglev.lookup(hash));
        let backend = match outcome {
            Outcome::Hit(b) | Outcome::New(b) | Outcome::Full(b) => b,
        };
        // Indices in the flow table are remapped on every reconfiguration
        // and Maglev's come from the current backends, so both are in range.
        let (Some(addr), Some(counters)) = (
            self.pool.backends.get(usize::from(backend)).map(|b| b.addr),
            self.pool.counters.get_mut(usize::from(backend)),
        ) else {
            return Verdict::Drop;
        };
        match outcome {
            Outcome::Hit(_) => {
                self.totals.affinity_hits += 1;
                counters.affinity_hits += 1;
            }
            Outcome::New(_) => {
                self.totals.new_flows += 1;
                counters.new_flows += 1;
            }
            Outcome::Full(_) => self.totals.flow_table_full += 1,
        }
        counters.packets += 1;
        counters.bytes += frame.len() as u64;
        self.totals.to_backends += 1;
        match packet::rewrite(frame, packet, End::Dst, addr.0) {
            Some(()) => Verdict::Forward,
            None => Verdict::Drop,
        }
    }

    /// Source NAT of a reply from backend `backend` back to the VIP.
    fn reply(&mut self, frame: &mut [u8], packet: &Ipv4Packet, backend: BackendIndex) -> Verdict {
        if let Some(counters) = self.pool.counters.get_mut(usize::from(backend)) {
            counters.reply_packets += 1;
            counters.reply_bytes += frame.len() as u64;
        }
        self.totals.replies += 1;
        match packet::rewrite(frame, packet, End::Src, self.vip.0) {
            Some(()) => Verdict::Forward,
            None => Verdict::Drop,
        }
    }
}

impl NetworkFunction for Lb {
    fn process(&mut self, batch: &mut Batch<'_>) {
        let now = self.started.elapsed();
        self.process_at(batch, now);
    }

    /// `{"vip":..,"proto":..,"table_size":..,"packets":..,"bytes":..,
    /// "flows":..,"new_flows":..,"affinity_hits":..,"to_backends":..,
    /// "replies":..,"non_vip":..,"malformed":..,"fragments":..,
    /// "flow_table_full":..,"backends":[{"addr":..,"weight":..,
    /// "table_entries":..,"flows":..,"new_flows":..,"affinity_hits":..,
    /// "packets":..,"bytes":..,"reply_packets":..,"reply_bytes":..},..]}`.
    fn report(&self) -> Option<String> {
        let report = Report {
            vip: self.vip,
            proto: self.proto,
            table_size: self.pool.maglev.size(),
            totals: self.totals(),
            backends: self.backend_stats(),
        };
        serde_json::to_string(&report).ok()
    }

    /// [`Lb::apply`] of the parsed config: new backends, weights,
    /// `table_size`, `affinity_timeout_s`, `non_vip` and `malformed` apply
    /// in place, live flows keeping their backend if it stays; a new `vip`,
    /// `proto` or `max_flows` is `Err`.
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let config = LbConfig::from_json(config).map_err(|e| e.to_string())?;
        self.apply(config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
