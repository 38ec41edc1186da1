//! The NAT's configuration: JSON in, a checked `Settings` out.
//!
//! Syntax and types are checked while deserializing (serde, with
//! `serde_path_to_error` naming the field); ranges and the relations between
//! fields (a forward's inside address must lie in `inside`, no two forwards
//! may share an outside or an inside endpoint, ...) by [`NatConfig::validate`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default bound on dynamic mappings.
pub const DEFAULT_MAX_MAPPINGS: u64 = 65_536;
/// Largest `max_mappings` a config may ask for. A mapping costs about 150
/// bytes up front (a 48-byte slot and two hash index entries at half load),
/// so a million is about 150 MB.
pub const MAX_MAPPINGS_LIMIT: u64 = 1_000_000;
/// Most addresses in the pool. Each address holds a free-port ring per
/// protocol, allocated up front (3 × 2 bytes × ports in `port_range`, so
/// 384 KiB per address for the default range); 64 bounds that at 24 MiB.
pub const POOL_LIMIT: usize = 64;
/// Most static forwards.
pub const FORWARDS_LIMIT: usize = 1024;
/// Longest timeout, in seconds (a day).
pub const TIMEOUT_LIMIT_S: u64 = 86_400;

/// An IPv4 prefix, `a.b.c.d/len`, with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    network: Ipv4Addr,
    len: u8,
}

/// A string that is not an IPv4 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `address/length`.
    #[error("expected an IPv4 prefix like \"10.0.0.0/8\", got {0:?}")]
    Syntax(String),
    /// Host bits set: almost always a typo for the network, so it is
    /// rejected rather than masked.
    #[error("{addr}/{len} has host bits set (the network is {network}/{len})")]
    HostBits {
        /// The address as written.
        addr: Ipv4Addr,
        /// The prefix length.
        len: u8,
        /// The address with its host bits cleared.
        network: Ipv4Addr,
    },
}

impl Ipv4Prefix {
    /// The prefix `network/len`; `len` is at most 32 and `network` has no host bits.
    pub fn new(network: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::Syntax(format!("{network}/{len}")));
        }
        let masked = Ipv4Addr::from(u32::from(network) & mask(len));
        if masked != network {
            return Err(PrefixError::HostBits {
                addr: network,
                len,
                network: masked,
            });
        }
        Ok(Self { network, len })
    }

    /// The network address.
    pub fn network(self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// Whether `addr` lies in the prefix.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.len) == u32::from(self.network)
    }

    /// Number of addresses in the prefix.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(syntax());
        }
        Self::new(addr, len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An inclusive range of ports (and ICMP echo identifiers), `"first-last"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// A string that is not a port range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not `first-last` with two numbers up to 65535.
    #[error("expected a port range like \"1024-65535\", got {0:?}")]
    Syntax(String),
    /// Port 0 is not a port (the sockets API reads it as "any").
    #[error("port 0 is not allowed in a range")]
    Zero,
    /// `first` above `last`.
    #[error("{first}-{last} is empty (first above last)")]
    Reversed {
        /// The first port.
        first: u16,
        /// The last port.
        last: u16,
    },
}

impl PortRange {
    /// The ports `first..=last`, both nonzero, `first <= last`.
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        if first == 0 {
            return Err(PortRangeError::Zero);
        }
        if first > last {
            return Err(PortRangeError::Reversed { first, last });
        }
        Ok(Self { first, last })
    }

    /// The first port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last port.
    pub fn last(self) -> u16 {
        self.last
    }

    /// Number of ports in the range (at least 1).
    pub fn count(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PortRangeError::Syntax(s.to_owned());
        let (first, last) = s.split_once('-').ok_or_else(syntax)?;
        let first = first.trim().parse().map_err(|_| syntax())?;
        let last = last.trim().parse().map_err(|_| syntax())?;
        Self::new(first, last)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// The outside addresses: a list (`["203.0.113.1", "203.0.113.2"]`) or a
/// prefix (`"203.0.113.0/30"`, every address of it, since a routed block has
/// no network or broadcast address to spare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pool {
    /// These addresses.
    Addresses(Vec<Ipv4Addr>),
    /// Every address of this prefix.
    Prefix(Ipv4Prefix),
}

impl Pool {
    /// The addresses in config order (a prefix's ascending). `None` if a
    /// prefix holds more than `limit`, so a `/0` never gets expanded.
    fn addresses(&self, limit: usize) -> Option<Vec<Ipv4Addr>> {
        match self {
            Self::Addresses(list) => Some(list.clone()),
            Self::Prefix(prefix) => {
                if prefix.size() > limit as u64 {
                    return None;
                }
                let base = u32::from(prefix.network());
                // At most `limit` (64) iterations, and no overflow: the
                // prefix's last address is base + size - 1 <= u32::MAX.
                Some(
                    (0..prefix.size() as u32)
                        .map(|i| Ipv4Addr::from(base + i))
                        .collect(),
                )
            }
        }
    }

    fn count(&self) -> u64 {
        match self {
            Self::Addresses(list) => list.len() as u64,
            Self::Prefix(prefix) => prefix.size(),
        }
    }
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Addresses(list) => list.serialize(serializer),
            Self::Prefix(prefix) => prefix.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Pool {
    // By hand rather than `#[serde(untagged)]`, whose only error is "did not
    // match any variant", which tells nobody what was wrong.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolVisitor;

        impl<'de> Visitor<'de> for PoolVisitor {
            type Value = Pool;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of IPv4 addresses or an IPv4 prefix")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Pool, E> {
                // A lone address is a pool of one.
                if let Ok(addr) = s.parse::<Ipv4Addr>() {
                    return Ok(Pool::Addresses(vec![addr]));
                }
                s.parse().map(Pool::Prefix).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pool, A::Error> {
                let mut list = Vec::new();
                while let Some(addr) = seq.next_element::<Ipv4Addr>()? {
                    if list.len() == POOL_LIMIT {
                        return Err(de::Error::custom(format_args!(
                            "more than {POOL_LIMIT} addresses"
                        )));
                    }
                    list.push(addr);
                }
                Ok(Pool::Addresses(list))
            }
        }

        deserializer.deserialize_any(PoolVisitor)
    }
}

/// The transport protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for ForwardProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A static port forward (DNAT): packets to `outside_addr:outside_port` go
/// to `inside`, and the inside server's packets from `inside` leave as
/// `outside_addr:outside_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// TCP or UDP.
    pub proto: ForwardProto,
    /// The port outside hosts connect to.
    pub outside_port: u16,
    /// The inside server, `addr:port`; the address lies in `inside`.
    pub inside: SocketAddrV4,
    /// A pool address; the first pool address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_addr: Option<Ipv4Addr>,
}

/// Idle timeouts per protocol, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// TCP mappings.
    pub tcp_s: u64,
    /// UDP mappings.
    pub udp_s: u64,
    /// ICMP echo mappings.
    pub icmp_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_s: 300,
            udp_s: 30,
            icmp_s: 10,
        }
    }
}

/// What to do with a class of packets the NAT does not translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Send it on unchanged.
    Forward,
    /// Drop it.
    Drop,
}

/// Deserializes one of `names` as the matching one of `values`.
///
/// By hand rather than derived: a derived enum given `true` or `6` fails
/// with serde_json's bare "expected value"; this says what was expected.
fn one_of<'de, D: Deserializer<'de>, T: Copy>(
    deserializer: D,
    names: &'static [&'static str],
    values: &[T],
) -> Result<T, D::Error> {
    let s = String::deserialize(deserializer)?;
    names
        .iter()
        .zip(values)
        .find(|(name, _)| **name == s)
        .map(|(_, value)| *value)
        .ok_or_else(|| de::Error::unknown_variant(&s, names))
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_of(
            deserializer,
            &["forward", "drop"],
            &[Policy::Forward, Policy::Drop],
        )
    }
}

impl<'de> Deserialize<'de> for ForwardProto {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        one_of(
            deserializer,
            &["tcp", "udp"],
            &[ForwardProto::Tcp, ForwardProto::Udp],
        )
    }
}

/// Configuration of [`crate::Nat`], as written in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatConfig {
    /// Packets with a source in this prefix are outbound.
    pub inside: Ipv4Prefix,
    /// The outside addresses, at most [`POOL_LIMIT`].
    pub pool: Pool,
    /// Ports (and ICMP identifiers) handed out per pool address and protocol.
    pub port_range: PortRange,
    /// Static port forwards, at most [`FORWARDS_LIMIT`].
    pub forwards: Vec<Forward>,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Most dynamic mappings at once, `1..=1_000_000`.
    pub max_mappings: u64,
    /// Frames that are not IPv4 (ARP, IPv6, LLDP, ...).
    pub non_ip: Policy,
    /// Frames with truncated or inconsistent headers.
    pub malformed: Policy,
}

impl Default for NatConfig {
    /// Inside `10.0.0.0/8`, one outside address `203.0.113.1` (RFC 5737
    /// documentation space: a placeholder, real deployments name theirs),
    /// ports 1024-65535, no forwards.
    fn default() -> Self {
        Self {
            inside: Ipv4Prefix {
                network: Ipv4Addr::new(10, 0, 0, 0),
                len: 8,
            },
            pool: Pool::Addresses(vec![Ipv4Addr::new(203, 0, 113, 1)]),
            port_range: PortRange {
                first: 1024,
                last: 65535,
            },
            forwards: Vec::new(),
            timeouts: Timeouts::default(),
            max_mappings: DEFAULT_MAX_MAPPINGS,
            non_ip: Policy::Forward,
            malformed: Policy::Drop,
        }
    }
}

/// An invalid NAT configuration. Every message starts with
/// `invalid nat config: ` and names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not describe a [`NatConfig`]; `path` is the field
    /// (`forwards[0].proto`), the serde message says what was wrong.
    #[error("invalid nat config: {}{error}", at(path))]
    Json {
        /// Where in the document, `.` for the top level.
        path: String,
        /// What serde found.
        error: serde_json::Error,
    },
    /// The JSON is not an object. serde would accept a struct written as an
    /// array of its fields, which nobody means in a config.
    #[error("invalid nat config: expected a JSON object")]
    NotAnObject,
    /// A number out of its range.
    #[error("invalid nat config: {field} must be in {min}..={max}, got {got}")]
    Range {
        /// The field.
        field: &'static str,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
        /// The value given.
        got: u64,
    },
    /// No outside address.
    #[error("invalid nat config: pool has no addresses")]
    PoolEmpty,
    /// Too many outside addresses.
    #[error("invalid nat config: pool has {0} addresses, at most {POOL_LIMIT} are supported")]
    PoolTooLarge(u64),
    /// An address listed twice.
    #[error("invalid nat config: pool lists {0} twice")]
    PoolDuplicate(Ipv4Addr),
    /// An outside address inside the inside prefix: its packets would be
    /// taken for outbound ones.
    #[error("invalid nat config: pool address {addr} lies in inside {inside}")]
    PoolInside {
        /// The pool address.
        addr: Ipv4Addr,
        /// The inside prefix.
        inside: Ipv4Prefix,
    },
    /// Too many forwards.
    #[error("invalid nat config: forwards has {0} entries, at most {FORWARDS_LIMIT} are supported")]
    TooManyForwards(usize),
    /// A forward's `outside_port` is 0.
    #[error("invalid nat config: forwards[{0}].outside_port: port 0 is not allowed")]
    ForwardPortZero(usize),
    /// A forward's `inside` port is 0.
    #[error("invalid nat config: forwards[{0}].inside: port 0 is not allowed")]
    ForwardInsidePortZero(usize),
    /// A forward's `outside_addr` is not in the pool.
    #[error("invalid nat config: forwards[{index}].outside_addr: {addr} is not a pool address")]
    ForwardNotInPool {
        /// Index in `forwards`.
        index: usize,
        /// The address given.
        addr: Ipv4Addr,
    },
    /// A forward's inside server is not inside: its replies would not be
    /// taken for outbound packets, so they would never be translated back.
    #[error("invalid nat config: forwards[{index}].inside: {addr} does not lie in inside {inside}")]
    ForwardNotInside {
        /// Index in `forwards`.
        index: usize,
        /// The server address.
        addr: Ipv4Addr,
        /// The inside prefix.
        inside: Ipv4Prefix,
    },
    /// Two forwards for the same outside endpoint.
    #[error(
        "invalid nat config: forwards[{index}]: {proto} {outside} is already forwarded by forwards[{first}]"
    )]
    ForwardDuplicateOutside {
        /// Index of the second forward.
        index: usize,
        /// Index of the first one.
        first: usize,
        /// Their protocol.
        proto: ForwardProto,
        /// The shared outside endpoint.
        outside: SocketAddrV4,
    },
    /// Two forwards to the same inside server: the server's replies could
    /// not be told apart.
    #[error(
        "invalid nat config: forwards[{index}].inside: {proto} {inside} is already the target of forwards[{first}]"
    )]
    ForwardDuplicateInside {
        /// Index of the second forward.
        index: usize,
        /// Index of the first one.
        first: usize,
        /// Their protocol.
        proto: ForwardProto,
        /// The shared inside endpoint.
        inside: SocketAddrV4,
    },
}

fn at(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// A forward with its outside address resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StaticForward {
    pub proto: ForwardProto,
    pub outside: SocketAddrV4,
    pub inside: SocketAddrV4,
}

/// A validated configuration, in the shapes the NAT uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub inside: Ipv4Prefix,
    /// Ascending, no duplicates, 1..=POOL_LIMIT.
    pub pool: Vec<Ipv4Addr>,
    pub port_range: PortRange,
    pub forwards: Vec<StaticForward>,
    pub timeouts: Timeouts,
    /// 1..=MAX_MAPPINGS_LIMIT.
    pub max_mappings: usize,
    pub non_ip: Policy,
    pub malformed: Policy,
}

fn range(field: &'static str, got: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(ConfigError::Range {
            field,
            min,
            max,
            got,
        })
    }
}

impl NatConfig {
    /// Parses a JSON config; empty (or blank) means [`NatConfig::default`].
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let json = json.trim_start();
        if json.is_empty() {
            return Ok(Self::default());
        }
        if !json.starts_with('{') {
            return Err(ConfigError::NotAnObject);
        }
        let json_error = |error: serde_path_to_error::Error<serde_json::Error>| {
            let path = error.path().to_string();
            ConfigError::Json {
                path,
                error: error.into_inner(),
            }
        };
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let config = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
        // Trailing characters: `from_str` checks them, a bare Deserializer
        // only when asked.
        deserializer.end().map_err(|error| ConfigError::Json {
            path: ".".to_owned(),
            error,
        })?;
        Ok(config)
    }

    /// Checks every range and the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }

    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        range("max_mappings", self.max_mappings, 1, MAX_MAPPINGS_LIMIT)?;
        let t = self.timeouts;
        range("timeouts.tcp_s", t.tcp_s, 1, TIMEOUT_LIMIT_S)?;
        range("timeouts.udp_s", t.udp_s, 1, TIMEOUT_LIMIT_S)?;
        range("timeouts.icmp_s", t.icmp_s, 1, TIMEOUT_LIMIT_S)?;

        let count = self.pool.count();
        if count == 0 {
            return Err(ConfigError::PoolEmpty);
        }
        let in_order = self
            .pool
            .addresses(POOL_LIMIT)
            .filter(|list| list.len() <= POOL_LIMIT)
            .ok_or(ConfigError::PoolTooLarge(count))?;
        for &addr in &in_order {
            if self.inside.contains(addr) {
                return Err(ConfigError::PoolInside {
                    addr,
                    inside: self.inside,
                });
            }
        }
        let mut pool = in_order.clone();
        pool.sort_unstable();
        if let Some(pair) = pool.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(ConfigError::PoolDuplicate(pair[0]));
        }
        // Non-empty: checked above.
        let first_addr = in_order[0];

        if self.forwards.len() > FORWARDS_LIMIT {
            return Err(ConfigError::TooManyForwards(self.forwards.len()));
        }
        let mut forwards: Vec<StaticForward> = Vec::with_capacity(self.forwards.len());
        for (index, forward) in self.forwards.iter().enumerate() {
            if forward.outside_port == 0 {
                return Err(ConfigError::ForwardPortZero(index));
            }
            if forward.inside.port() == 0 {
                return Err(ConfigError::ForwardInsidePortZero(index));
            }
            if !self.inside.contains(*forward.inside.ip()) {
                return Err(ConfigError::ForwardNotInside {
                    index,
                    addr: *forward.inside.ip(),
                    inside: self.inside,
                });
            }
            let outside_addr = forward.outside_addr.unwrap_or(first_addr);
            if pool.binary_search(&outside_addr).is_err() {
                return Err(ConfigError::ForwardNotInPool {
                    index,
                    addr: outside_addr,
                });
            }
            let resolved = StaticForward {
                proto: forward.proto,
                outside: SocketAddrV4::new(outside_addr, forward.outside_port),
                inside: forward.inside,
            };
            // Quadratic, over at most FORWARDS_LIMIT entries, once.
            for (first, earlier) in forwards.iter().enumerate() {
                if earlier.proto != resolved.proto {
                    continue;
                }
                if earlier.outside == resolved.outside {
                    return Err(ConfigError::ForwardDuplicateOutside {
                        index,
                        first,
                        proto: resolved.proto,
                        outside: resolved.outside,
                    });
                }
                if earlier.inside == resolved.inside {
                    return Err(ConfigError::ForwardDuplicateInside {
                        index,
                        first,
                        proto: resolved.proto,
                        inside: resolved.inside,
                    });
                }
            }
            forwards.push(resolved);
        }

        Ok(Settings {
            inside: self.inside,
            pool,
            port_range: self.port_range,
            forwards,
            timeouts: self.timeouts,
            // Lossless: at most 1_000_000.
            max_mappings: self.max_mappings as usize,
            non_ip: self.non_ip,
            malformed: self.malformed,
        })
    }
}
