//! The firewall's configuration, typed: what the JSON says and every check on
//! it. A value of these types is valid by construction ([`IpPrefix::new`],
//! [`PortRange::new`], [`VlanId::new`] check their input, and deserializing
//! goes through the same checks), so what is left for
//! [`FirewallConfig::validate`] is the rule count, the conntrack ranges and
//! the fields of one rule that contradict each other.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Most rules a config may hold.
pub const MAX_RULES: usize = 10_000;
/// Default size of the connection table.
pub const DEFAULT_MAX_ENTRIES: u64 = 65_536;
/// Largest connection table a config may ask for.
pub const MAX_ENTRIES_LIMIT: u64 = 1_000_000;
/// Default idle timeout of a TCP connection, seconds.
pub const DEFAULT_TCP_TIMEOUT_S: u64 = 300;
/// Default idle timeout of a UDP flow, seconds.
pub const DEFAULT_UDP_TIMEOUT_S: u64 = 30;
/// Default idle timeout of an ICMP echo exchange, seconds.
pub const DEFAULT_ICMP_TIMEOUT_S: u64 = 10;
/// Longest idle timeout a config may ask for: a week, seconds.
pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// What a rule, or the default, does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward it (and track its flow).
    Allow,
    /// Drop it.
    Deny,
}

/// What happens to a frame the rules do not apply to (not IP, or malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FramePolicy {
    /// Send it on.
    Forward,
    /// Drop it.
    Drop,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A value of one rule field that cannot be what it says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Neither an address nor `address/length`.
    #[error("`{0}` is not an IP address or prefix (like 10.0.0.0/8 or 2001:db8::/32)")]
    Prefix(String),
    /// A prefix longer than the address.
    #[error("prefix length {len} is longer than an {family} address ({max} bits)")]
    PrefixLen {
        /// The length asked for.
        len: u32,
        /// The address family.
        family: Family,
        /// Bits in its addresses.
        max: u8,
    },
    /// Bits set past the prefix length: `10.0.0.1/8` is ambiguous, so it is
    /// refused rather than silently widened.
    #[error("{addr}/{len} has host bits set: the network is {network}/{len}")]
    HostBits {
        /// The address given.
        addr: IpAddr,
        /// The prefix length given.
        len: u8,
        /// The address with the host bits cleared.
        network: IpAddr,
    },
    /// Not a port or a `low-high` range of ports.
    #[error("`{0}` is not a port (0-65535) or a port range like 1000-2000")]
    Port(String),
    /// A range whose low end is above its high end.
    #[error("port range {lo}-{hi} is reversed")]
    PortRangeReversed {
        /// The low end given.
        lo: u16,
        /// The high end given.
        hi: u16,
    },
    /// An unknown protocol name or a number past 255.
    #[error("unknown protocol `{0}`: expected tcp, udp, icmp, icmpv6 or a number 0-255")]
    Proto(String),
    /// A VLAN id outside 1..=4094 (0 means untagged and 4095 is reserved,
    /// IEEE 802.1Q §9.6).
    #[error("VLAN id must be in 1..=4094, got {0}")]
    Vlan(u64),
}

/// An IP prefix: an address and how many of its leading bits a packet must
/// share. A bare address is a prefix of its full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix `addr/len`; `addr` must have no bits set past `len`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, FieldError> {
        let (family, max) = match addr {
            IpAddr::V4(_) => (Family::V4, 32),
            IpAddr::V6(_) => (Family::V6, 128),
        };
        if len > max {
            return Err(FieldError::PrefixLen {
                len: len.into(),
                family,
                max,
            });
        }
        let prefix = Self { addr, len };
        let network = prefix.network();
        if network != addr {
            return Err(FieldError::HostBits { addr, len, network });
        }
        Ok(prefix)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is `/0`, which every address of its family matches.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address family.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The addresses the prefix covers as an inclusive range of integers
    /// (IPv4 in the low 32 bits).
    pub(crate) fn range(&self) -> (u128, u128) {
        let (value, bits) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let host_bits = u32::from(bits - self.len.min(bits));
        // `checked_shr(128)` is `None`: no host bits, an empty mask.
        let host_mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        (value & !host_mask, value | host_mask)
    }

    fn network(&self) -> IpAddr {
        let (lo, _) = self.range();
        match self.addr {
            // Lossless: an IPv4 range lies in the low 32 bits.
            IpAddr::V4(_) => IpAddr::V4((lo as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(lo.into()),
        }
    }
}

impl FromStr for IpPrefix {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FieldError::Prefix(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => {
                // `u8::from_str` takes a leading `+`; a prefix length does not.
                if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let len: u32 = len.parse().map_err(|_| bad())?;
                match u8::try_from(len) {
                    Ok(len) if len <= max_len(addr) => (addr, len),
                    _ => {
                        return Err(FieldError::PrefixLen {
                            len,
                            family: family_of(addr),
                            max: max_len(addr),
                        });
                    }
                }
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| bad())?;
                (addr, max_len(addr))
            }
        };
        Self::new(addr, len)
    }
}

fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PrefixVisitor;
        impl Visitor<'_> for PrefixVisitor {
            type Value = IpPrefix;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP prefix string like \"10.0.0.0/8\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IpPrefix, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PrefixVisitor)
    }
}

/// An inclusive range of TCP/UDP ports; one port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// Ports `lo..=hi`.
    pub fn new(lo: u16, hi: u16) -> Result<Self, FieldError> {
        if lo > hi {
            return Err(FieldError::PortRangeReversed { lo, hi });
        }
        Ok(Self { lo, hi })
    }

    /// Just `port`.
    pub fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    /// The lowest port.
    pub fn lo(&self) -> u16 {
        self.lo
    }

    /// The highest port.
    pub fn hi(&self) -> u16 {
        self.hi
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FieldError::Port(s.to_owned()));
            }
            p.parse::<u16>().map_err(|_| FieldError::Port(s.to_owned()))
        };
        match s.split_once('-') {
            Some((lo, hi)) => Self::new(port(lo)?, port(hi)?),
            None => Ok(Self::single(port(s)?)),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port like \"80\" or a port range like \"1000-2000\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| E::custom(FieldError::Port(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(FieldError::Port(v.to_string()))),
                }
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// An IP protocol number (IANA "Assigned Internet Protocol Numbers": the IPv4
/// protocol field, or the IPv6 next header after the extension headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proto(pub u8);

impl Proto {
    /// ICMP (for IPv4).
    pub const ICMP: Self = Self(1);
    /// TCP.
    pub const TCP: Self = Self(6);
    /// UDP.
    pub const UDP: Self = Self(17);
    /// ICMPv6.
    pub const ICMPV6: Self = Self(58);

    /// Whether packets of this protocol carry ports.
    pub fn has_ports(self) -> bool {
        self == Self::TCP || self == Self::UDP
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::ICMP => "icmp",
            Self::TCP => "tcp",
            Self::UDP => "udp",
            Self::ICMPV6 => "icmpv6",
            _ => return None,
        })
    }
}

impl FromStr for Proto {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "icmp" => Self::ICMP,
            "tcp" => Self::TCP,
            "udp" => Self::UDP,
            "icmpv6" => Self::ICMPV6,
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                Self(s.parse().map_err(|_| FieldError::Proto(s.to_owned()))?)
            }
            _ => return Err(FieldError::Proto(s.to_owned())),
        })
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Proto {
    /// The name for the four the config knows by name, the number otherwise.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProtoVisitor;
        impl Visitor<'_> for ProtoVisitor {
            type Value = Proto;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"tcp\", \"udp\", \"icmp\", \"icmpv6\" or a protocol number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Proto, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Proto, E> {
                u8::try_from(v)
                    .map(Proto)
                    .map_err(|_| E::custom(FieldError::Proto(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Proto, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(FieldError::Proto(v.to_string()))),
                }
            }
        }
        deserializer.deserialize_any(ProtoVisitor)
    }
}

/// An 802.1Q VLAN id, 1..=4094.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct VlanId(u16);

impl VlanId {
    /// The VLAN `id`.
    pub fn new(id: u16) -> Result<Self, FieldError> {
        if (1..=4094).contains(&id) {
            Ok(Self(id))
        } else {
            Err(FieldError::Vlan(id.into()))
        }
    }

    /// The id.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for VlanId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = u64::deserialize(deserializer)?;
        u16::try_from(id)
            .map_err(|_| FieldError::Vlan(id))
            .and_then(VlanId::new)
            .map_err(de::Error::custom)
    }
}

/// One rule: the packet fields it matches (all given ones must match; a
/// missing one matches anything) and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What a matching packet gets.
    pub action: Action,
    /// Source prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpPrefix>,
    /// Destination prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpPrefix>,
    /// IP protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// TCP/UDP source ports. Without `proto`, the rule matches TCP and UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<PortRange>,
    /// TCP/UDP destination ports. Without `proto`, the rule matches TCP and UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<PortRange>,
    /// The packet's VLAN id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanId>,
}

impl RuleConfig {
    /// A rule that matches every packet.
    pub fn any(action: Action) -> Self {
        Self {
            action,
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            vlan: None,
        }
    }

    /// The family the rule's prefixes restrict it to, if any.
    pub fn family(&self) -> Option<Family> {
        self.src.or(self.dst).map(|p| p.family())
    }

    /// Whether the rule constrains ports (and so matches only TCP and UDP).
    pub fn has_ports(&self) -> bool {
        self.sport.is_some() || self.dport.is_some()
    }

    /// Fields that contradict each other, which would make a rule that
    /// silently never matches.
    fn check(&self) -> Result<(), (&'static str, RuleConflict)> {
        if let (Some(src), Some(dst)) = (self.src, self.dst) {
            if src.family() != dst.family() {
                return Err((
                    "dst",
                    RuleConflict::Family {
                        src: src.family(),
                        dst: dst.family(),
                    },
                ));
            }
        }
        if let Some(proto) = self.proto {
            if !proto.has_ports() {
                if self.sport.is_some() {
                    return Err(("sport", RuleConflict::PortsNeedTcpOrUdp(proto)));
                }
                if self.dport.is_some() {
                    return Err(("dport", RuleConflict::PortsNeedTcpOrUdp(proto)));
                }
            }
            if let Some(family) = self.family() {
                if matches!(
                    (proto, family),
                    (Proto::ICMP, Family::V6) | (Proto::ICMPV6, Family::V4)
                ) {
                    return Err(("proto", RuleConflict::IcmpFamily { proto, family }));
                }
            }
        }
        Ok(())
    }
}

/// Fields of one rule that cannot hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleConflict {
    /// An IPv4 source with an IPv6 destination or the other way round.
    #[error("src is {src} but dst is {dst}, so the rule could never match")]
    Family {
        /// The source's family.
        src: Family,
        /// The destination's family.
        dst: Family,
    },
    /// Ports with a protocol that has none.
    #[error("ports apply only to tcp and udp, but proto is {0}")]
    PortsNeedTcpOrUdp(Proto),
    /// ICMP with IPv6 prefixes, or ICMPv6 with IPv4 ones (RFC 4443 §1: IPv6
    /// uses next header 58, not 1).
    #[error("{proto} does not run over {family}: ICMP is for IPv4, icmpv6 for IPv6")]
    IcmpFamily {
        /// The protocol given.
        proto: Proto,
        /// The rule's family.
        family: Family,
    },
}

/// Connection-tracking limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConntrackConfig {
    /// Most connections tracked at once, `1..=1_000_000`.
    pub max_entries: u64,
    /// Idle timeout of a TCP connection, seconds.
    pub tcp_timeout_s: u64,
    /// Idle timeout of a UDP flow, seconds.
    pub udp_timeout_s: u64,
    /// Idle timeout of an ICMP echo exchange, seconds.
    pub icmp_timeout_s: u64,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            tcp_timeout_s: DEFAULT_TCP_TIMEOUT_S,
            udp_timeout_s: DEFAULT_UDP_TIMEOUT_S,
            icmp_timeout_s: DEFAULT_ICMP_TIMEOUT_S,
        }
    }
}

/// Configuration of [`Firewall`](crate::Firewall).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallConfig {
    /// The rules, first match wins.
    pub rules: Vec<RuleConfig>,
    /// What a packet no rule matches gets.
    pub default: Action,
    /// Connection tracking.
    pub conntrack: ConntrackConfig,
    /// What frames that are not IPv4 or IPv6 get (ARP, LLDP, ...).
    pub non_ip: FramePolicy,
    /// What frames that cannot be parsed get.
    pub malformed: FramePolicy,
}

impl Default for FirewallConfig {
    /// No rules, default deny, default conntrack, non-IP forwarded,
    /// malformed dropped.
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            default: Action::Deny,
            conntrack: ConntrackConfig::default(),
            non_ip: FramePolicy::Forward,
            malformed: FramePolicy::Drop,
        }
    }
}

/// An invalid firewall configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not describe a [`FirewallConfig`]: syntax, an unknown
    /// field, a wrong type, or a field value that cannot be (a bad prefix, a
    /// reversed port range, an unknown protocol). `location` names the field,
    /// like `rules[3].dport: `; serde's message says the rest, with line and
    /// column.
    #[error("invalid firewall config: {location}{error}")]
    Json {
        /// The path to the failing field and `: `, empty at the top level.
        location: String,
        /// What serde found wrong there.
        error: serde_json::Error,
    },
    /// The JSON is not an object. serde would accept a struct written as an
    /// array of its fields, which nobody means in a config.
    #[error("invalid firewall config: expected a JSON object")]
    NotAnObject,
    /// More rules than [`MAX_RULES`].
    #[error("invalid firewall config: {0} rules, at most {MAX_RULES} allowed")]
    TooManyRules(usize),
    /// Two fields of one rule contradict each other.
    #[error("invalid firewall config: rules[{index}].{field}: {conflict}")]
    Rule {
        /// The rule's position in `rules`, from 0.
        index: usize,
        /// The field found wrong.
        field: &'static str,
        /// What is wrong with it.
        conflict: RuleConflict,
    },
    /// `conntrack.max_entries` out of range.
    #[error(
        "invalid firewall config: conntrack.max_entries must be in 1..={MAX_ENTRIES_LIMIT}, got {0}"
    )]
    MaxEntries(u64),
    /// A conntrack timeout out of range.
    #[error(
        "invalid firewall config: conntrack.{field} must be in 1..={MAX_TIMEOUT_S}, got {value}"
    )]
    Timeout {
        /// Which timeout.
        field: &'static str,
        /// The value given.
        value: u64,
    },
}

impl FirewallConfig {
    /// Parses a JSON config; empty (or blank) means [`FirewallConfig::default`].
    /// Checks everything [`FirewallConfig::validate`] does.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let json = json.trim_start();
        if json.is_empty() {
            return Ok(Self::default());
        }
        if !json.starts_with('{') {
            return Err(ConfigError::NotAnObject);
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let location = if e.path().iter().len() == 0 {
                String::new()
            } else {
                format!("{}: ", e.path())
            };
            ConfigError::Json {
                location,
                error: e.into_inner(),
            }
        })?;
        // `from_str` would do this; the path-tracking deserializer does not.
        de.end().map_err(|error| ConfigError::Json {
            location: String::new(),
            error,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rule count, the conntrack ranges and each rule's fields
    /// against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rules.len() > MAX_RULES {
            return Err(ConfigError::TooManyRules(self.rules.len()));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            rule.check()
                .map_err(|(field, conflict)| ConfigError::Rule {
                    index,
                    field,
                    conflict,
                })?;
        }
        let ct = &self.conntrack;
        if !(1..=MAX_ENTRIES_LIMIT).contains(&ct.max_entries) {
            return Err(ConfigError::MaxEntries(ct.max_entries));
        }
        for (field, value) in [
            ("tcp_timeout_s", ct.tcp_timeout_s),
            ("udp_timeout_s", ct.udp_timeout_s),
            ("icmp_timeout_s", ct.icmp_timeout_s),
        ] {
            if !(1..=MAX_TIMEOUT_S).contains(&value) {
                return Err(ConfigError::Timeout { field, value });
            }
        }
        Ok(())
    }
}
