//! Rate-limit NF: a token-bucket policer. Each bucket is the committed
//! bucket of RFC 2697's single-rate three-colour marker with no excess bucket
//! (EBS = 0), colour-blind: a green packet passes, a red one is dropped, and
//! nothing is queued or marked.
//!
//! Every frame of the VF meets one **aggregate** bucket; IP packets may also
//! meet a **per-flow** bucket, their flow being the 5-tuple or the source
//! prefix. A packet passes only if every bucket that applies to it holds
//! enough tokens, and then takes from all of them; otherwise it takes from
//! none and is dropped. A packet costs one token in a `pps` bucket and its
//! frame length × 8 in a `bps` bucket (the whole frame, Ethernet header
//! included, as the monitor counts bytes; a tag the NIC stripped is not in
//! the frame). A bucket starts full, refills at `rate` and holds at most
//! `burst`, so over any interval of `t` seconds a bucket lets through at most
//! `rate × t + burst`.
//!
//! Config (JSON, unknown fields rejected; an empty string means defaults):
//!
//! ```json
//! {
//!   "rate": { "pps": 10000 },
//!   "burst": 100,
//!   "per_flow": {
//!     "key": "src_prefix", "prefix_len": 24, "prefix_len_v6": 64,
//!     "rate": { "bps": 1000000 }, "burst": 12500,
//!     "max_flows": 65536, "idle_timeout_s": 60
//!   },
//!   "non_ip": "police",
//!   "malformed": "drop"
//! }
//! ```
//!
//! - `rate` is `{"pps": n}` (packets per second, `1..=10⁹`) or `{"bps": n}`
//!   (bits per second, `1..=10¹²`); default 10 000 pps.
//! - `burst` is in the rate's unit, packets (`1..=10⁹`) or bytes
//!   (`2048..=2·10⁹`: at least one 2 KiB UMEM frame, ARCHITECTURE.md §2, or long
//!   frames could never pass); default 10 ms of the rate, at least that
//!   minimum.
//! - `per_flow` is `null` (default) or a flow bucket: `key` `"5tuple"`
//!   (default) or `"src_prefix"`; for `src_prefix`, `prefix_len` (IPv4,
//!   `0..=32`, default 24) and `prefix_len_v6` (`0..=128`, default 64);
//!   `rate` (required) and `burst` as above; `max_flows` `1..=1_000_000`
//!   (default 65 536); `idle_timeout_s` `1..=86_400` (default 60).
//! - `non_ip` (well-formed frames that are not IPv4/IPv6: ARP, LLDP, ...):
//!   `"police"` (default: aggregate bucket only), `"forward"` (unpoliced) or
//!   `"drop"`.
//! - `malformed` (runts, truncated or inconsistent headers, more than two
//!   VLAN tags in the frame): `"drop"` (default) or `"forward"`. A forwarded
//!   malformed frame still meets the aggregate bucket: it has no key to trust,
//!   and skipping the VF limit would let anyone bypass it by breaking a header.
//!
//! The flow table holds at most `max_flows` flows and is allocated in full up
//! front, so the packet path never allocates. A flow not seen for
//! `idle_timeout_s` expires: a sweep looks at a few entries per batch, and an
//! insert that finds the table full first sweeps a few more. While the table
//! is full, packets of new flows meet the aggregate bucket only and count in
//! `flow_table_full`.
//!
//! When a packet fails both buckets its drop counts as `per_flow`, the more
//! specific reason. The policer reads no clock: [`Ratelimit::police`] and
//! [`Ratelimit::process_at`] take `now`; the [`NetworkFunction`] impl reads the
//! monotonic clock once per batch.
#![forbid(unsafe_code)]

mod bucket;
mod flow;
mod parse;

use std::fmt;
use std::time::Instant;

use nf_sdk::{Batch, NetworkFunction, Verdict};
use serde::{Deserialize, Serialize};

pub use bucket::Nanos;
use bucket::{Bucket, Limit, NANO};
use flow::{FlowTable, KeySpec};
use parse::{Class, IpFields};

/// Most packets per second a rate may ask for.
pub const MAX_PPS: u64 = 1_000_000_000;
/// Most bits per second a rate may ask for (1 Tbit/s).
pub const MAX_BPS: u64 = 1_000_000_000_000;
/// Largest burst in packets.
pub const MAX_BURST_PACKETS: u64 = 1_000_000_000;
/// Smallest burst in bytes: one UMEM frame (2 KiB, ARCHITECTURE.md §2), the
/// longest frame an NF can receive.
pub const MIN_BURST_BYTES: u64 = nf_sdk::FRAME_SIZE as u64;
/// Largest burst in bytes (keeps a full bucket of nano-bits within `u64`).
pub const MAX_BURST_BYTES: u64 = 2_000_000_000;
/// The default rate.
pub const DEFAULT_RATE: Rate = Rate::Pps(10_000);
/// Default size of the flow table.
pub const DEFAULT_MAX_FLOWS: u64 = 65_536;
/// Largest flow table a config may ask for.
pub const MAX_FLOWS_LIMIT: u64 = 1_000_000;
/// Default idle time after which a flow expires.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 60;
/// Longest idle timeout (a day).
pub const MAX_IDLE_TIMEOUT_S: u64 = 86_400;
/// Default IPv4 source prefix length of the `src_prefix` key.
pub const DEFAULT_PREFIX_LEN: u8 = 24;
/// Default IPv6 source prefix length of the `src_prefix` key.
pub const DEFAULT_PREFIX_LEN_V6: u8 = 64;

/// Flow entries the idle sweep looks at per batch.
const SWEEP_PER_BATCH: usize = 64;
/// Flow entries looked at when an insert finds the table full.
const SWEEP_WHEN_FULL: usize = 16;

/// A rate, written `{"pps": n}` or `{"bps": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "RateRepr")]
pub enum Rate {
    /// Packets per second.
    Pps(u64),
    /// Bits per second, of whole frames (bytes × 8).
    Bps(u64),
}

/// The JSON shape of a [`Rate`]: an object with exactly one of the two keys.
/// Read through this rather than as an externally tagged enum so that two
/// keys, or none, get a message that says so.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rate, {\"pps\": packets per second} or {\"bps\": bits per second}"
)]
struct RateRepr {
    pps: Option<u64>,
    bps: Option<u64>,
}

impl TryFrom<RateRepr> for Rate {
    type Error = &'static str;

    fn try_from(repr: RateRepr) -> Result<Self, Self::Error> {
        match (repr.pps, repr.bps) {
            (Some(pps), None) => Ok(Self::Pps(pps)),
            (None, Some(bps)) => Ok(Self::Bps(bps)),
            (Some(_), Some(_)) => Err("a rate is either pps or bps, not both"),
            (None, None) => Err("a rate needs pps or bps"),
        }
    }
}

impl Rate {
    /// The burst a config gets when it names none: 10 ms of the rate, at
    /// least one packet or one UMEM frame.
    pub fn default_burst(self) -> u64 {
        match self {
            Self::Pps(pps) => (pps / 100).max(1),
            // bits/s × 10 ms / 8 bits per byte.
            Self::Bps(bps) => (bps / 800).max(MIN_BURST_BYTES),
        }
    }
}

/// What makes two packets the same flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub enum FlowKeyKind {
    /// Source and destination address, protocol, and TCP/UDP ports (0 for
    /// other protocols and for fragments).
    #[default]
    #[serde(rename = "5tuple")]
    FiveTuple,
    /// The source address's prefix: all hosts of a subnet share a bucket.
    #[serde(rename = "src_prefix")]
    SrcPrefix,
}

impl TryFrom<String> for FlowKeyKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "5tuple" => Ok(Self::FiveTuple),
            "src_prefix" => Ok(Self::SrcPrefix),
            _ => Err(format!(
                "unknown per_flow.key {value:?}, expected \"5tuple\" or \"src_prefix\""
            )),
        }
    }
}

/// What happens to well-formed frames that are not IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NonIpPolicy {
    /// Policed by the aggregate bucket.
    #[default]
    Police,
    /// Passed unpoliced (and uncounted against any bucket).
    Forward,
    /// Dropped.
    Drop,
}

impl TryFrom<String> for NonIpPolicy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "police" => Ok(Self::Police),
            "forward" => Ok(Self::Forward),
            "drop" => Ok(Self::Drop),
            _ => Err(format!(
                "unknown non_ip {value:?}, expected \"police\", \"forward\" or \"drop\""
            )),
        }
    }
}

/// What happens to malformed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum MalformedPolicy {
    /// Dropped.
    #[default]
    Drop,
    /// Passed on if the aggregate bucket allows.
    Forward,
}

impl TryFrom<String> for MalformedPolicy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "drop" => Ok(Self::Drop),
            "forward" => Ok(Self::Forward),
            _ => Err(format!(
                "unknown malformed {value:?}, expected \"drop\" or \"forward\""
            )),
        }
    }
}

/// Per-flow buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerFlowConfig {
    /// What a flow is.
    #[serde(default)]
    pub key: FlowKeyKind,
    /// IPv4 source prefix length, `src_prefix` only (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    /// IPv6 source prefix length, `src_prefix` only (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len_v6: Option<u8>,
    /// Each flow's rate.
    pub rate: Rate,
    /// Each flow's burst, in the rate's unit (default 10 ms of the rate).
    #[serde(default)]
    pub burst: Option<u64>,
    /// Most flows tracked at once.
    #[serde(default = "default_max_flows")]
    pub max_flows: u64,
    /// Seconds without a packet after which a flow is forgotten.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
}

fn default_max_flows() -> u64 {
    DEFAULT_MAX_FLOWS
}

fn default_idle_timeout_s() -> u64 {
    DEFAULT_IDLE_TIMEOUT_S
}

/// Configuration of [`Ratelimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RatelimitConfig {
    /// The aggregate rate of the VF.
    pub rate: Rate,
    /// The aggregate burst, in the rate's unit (default 10 ms of the rate).
    pub burst: Option<u64>,
    /// Per-flow buckets, if any.
    pub per_flow: Option<PerFlowConfig>,
    /// Frames that are not IP.
    pub non_ip: NonIpPolicy,
    /// Malformed frames.
    pub malformed: MalformedPolicy,
}

impl Default for RatelimitConfig {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RATE,
            burst: None,
            per_flow: None,
            non_ip: NonIpPolicy::default(),
            malformed: MalformedPolicy::default(),
        }
    }
}

/// An invalid rate-limit configuration. Each message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not describe a [`RatelimitConfig`]. The serde message
    /// (unknown field, wrong type, syntax, with line and column) is the one a
    /// person needs, so it goes in the message.
    #[error("invalid ratelimit config: {0}")]
    Json(serde_json::Error),
    /// The JSON is not an object. serde would accept a struct written as an
    /// array of its fields, which nobody means in a config.
    #[error("invalid ratelimit config: expected a JSON object")]
    NotAnObject,
    /// A rate out of range.
    #[error("invalid ratelimit config: {field} must be in 1..={max}, got {got}")]
    Rate {
        /// `rate.pps`, `per_flow.rate.bps`, ...
        field: &'static str,
        /// The largest allowed.
        max: u64,
        /// What the config said.
        got: u64,
    },
    /// A burst out of range.
    #[error("invalid ratelimit config: {field} must be in {min}..={max} {unit}, got {got}")]
    Burst {
        /// `burst` or `per_flow.burst`.
        field: &'static str,
        /// `packets` or `bytes`, after the rate's unit.
        unit: &'static str,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
        /// What the config said.
        got: u64,
    },
    /// A prefix length out of range.
    #[error("invalid ratelimit config: {field} must be in 0..={max}, got {got}")]
    PrefixLen {
        /// `per_flow.prefix_len` or `per_flow.prefix_len_v6`.
        field: &'static str,
        /// The address's length in bits.
        max: u8,
        /// What the config said.
        got: u8,
    },
    /// A prefix length given for a key that has no prefix.
    #[error("invalid ratelimit config: {0} applies only to per_flow.key \"src_prefix\"")]
    PrefixLenWithoutPrefix(&'static str),
    /// `per_flow.max_flows` out of range.
    #[error(
        "invalid ratelimit config: per_flow.max_flows must be in 1..={MAX_FLOWS_LIMIT}, got {0}"
    )]
    MaxFlows(u64),
    /// `per_flow.idle_timeout_s` out of range.
    #[error(
        "invalid ratelimit config: per_flow.idle_timeout_s must be in 1..={MAX_IDLE_TIMEOUT_S}, got {0}"
    )]
    IdleTimeout(u64),
}

/// A checked rate and burst, ready for a bucket.
fn limit(
    rate: Rate,
    burst: Option<u64>,
    fields: [&'static str; 3],
) -> Result<(Limit, u64), ConfigError> {
    let [pps_field, bps_field, burst_field] = fields;
    let (field, max, got, unit, min_burst, max_burst) = match rate {
        Rate::Pps(pps) => (pps_field, MAX_PPS, pps, "packets", 1, MAX_BURST_PACKETS),
        Rate::Bps(bps) => (
            bps_field,
            MAX_BPS,
            bps,
            "bytes",
            MIN_BURST_BYTES,
            MAX_BURST_BYTES,
        ),
    };
    if !(1..=max).contains(&got) {
        return Err(ConfigError::Rate { field, max, got });
    }
    let burst = burst.unwrap_or_else(|| rate.default_burst());
    if !(min_burst..=max_burst).contains(&burst) {
        return Err(ConfigError::Burst {
            field: burst_field,
            unit,
            min: min_burst,
            max: max_burst,
            got: burst,
        });
    }
    Ok((Limit::new(rate, burst), burst))
}

/// A validated configuration, with every default filled in.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// The config with defaults made explicit, as reported.
    config: RatelimitConfig,
    aggregate: Limit,
    per_flow: Option<FlowSettings>,
}

#[derive(Debug, Clone, Copy)]
struct FlowSettings {
    limit: Limit,
    spec: KeySpec,
    max_flows: usize,
    idle: u64,
}

impl RatelimitConfig {
    /// The config of a JSON text; empty (or blank) means defaults. Shape
    /// only: ranges are checked by [`RatelimitConfig::validate`].
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let json = json.trim_start();
        if json.is_empty() {
            Ok(Self::default())
        } else if json.starts_with('{') {
            serde_json::from_str(json).map_err(ConfigError::Json)
        } else {
            Err(ConfigError::NotAnObject)
        }
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(|_| ())
    }

    /// This config with its defaults made explicit (the bursts, and the
    /// prefix lengths of a `src_prefix` key), as [`Ratelimit::config`] and
    /// the report show it.
    pub fn effective(&self) -> Result<Self, ConfigError> {
        self.settings().map(|s| s.config)
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        let mut config = *self;
        let (aggregate, burst) = limit(self.rate, self.burst, ["rate.pps", "rate.bps", "burst"])?;
        config.burst = Some(burst);
        let per_flow = match self.per_flow {
            None => None,
            Some(pf) => {
                let (limit, burst) = limit(
                    pf.rate,
                    pf.burst,
                    ["per_flow.rate.pps", "per_flow.rate.bps", "per_flow.burst"],
                )?;
                let (v4, v6) = match pf.key {
                    FlowKeyKind::FiveTuple => {
                        if pf.prefix_len.is_some() {
                            return Err(ConfigError::PrefixLenWithoutPrefix("per_flow.prefix_len"));
                        }
                        if pf.prefix_len_v6.is_some() {
                            return Err(ConfigError::PrefixLenWithoutPrefix(
                                "per_flow.prefix_len_v6",
                            ));
                        }
                        (None, None)
                    }
                    FlowKeyKind::SrcPrefix => {
                        let v4 = pf.prefix_len.unwrap_or(DEFAULT_PREFIX_LEN);
                        let v6 = pf.prefix_len_v6.unwrap_or(DEFAULT_PREFIX_LEN_V6);
                        if v4 > 32 {
                            return Err(ConfigError::PrefixLen {
                                field: "per_flow.prefix_len",
                                max: 32,
                                got: v4,
                            });
                        }
                        if v6 > 128 {
                            return Err(ConfigError::PrefixLen {
                                field: "per_flow.prefix_len_v6",
                                max: 128,
                                got: v6,
                            });
                        }
                        (Some(v4), Some(v6))
                    }
                };
                if !(1..=MAX_FLOWS_LIMIT).contains(&pf.max_flows) {
                    return Err(ConfigError::MaxFlows(pf.max_flows));
                }
                if !(1..=MAX_IDLE_TIMEOUT_S).contains(&pf.idle_timeout_s) {
                    return Err(ConfigError::IdleTimeout(pf.idle_timeout_s));
                }
                config.per_flow = Some(PerFlowConfig {
                    prefix_len: v4,
                    prefix_len_v6: v6,
                    burst: Some(burst),
                    ..pf
                });
                Some(FlowSettings {
                    limit,
                    spec: KeySpec::new(pf.key, v4.unwrap_or(0), v6.unwrap_or(0)),
                    // Lossless: at most 1_000_000.
                    max_flows: pf.max_flows as usize,
                    idle: pf.idle_timeout_s * NANO,
                })
            }
        };
        Ok(Settings {
            config,
            aggregate,
            per_flow,
        })
    }
}

/// Packets dropped, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Dropped {
    /// The aggregate bucket was short.
    pub aggregate: u64,
    /// The packet's flow bucket was short.
    pub per_flow: u64,
    /// Malformed, with `malformed: "drop"`.
    pub malformed: u64,
    /// Not IP, with `non_ip: "drop"`.
    pub non_ip: u64,
}

/// Counters since the policer was made (reconfiguration keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Packets passed.
    pub passed_packets: u64,
    /// Frame bytes passed.
    pub passed_bytes: u64,
    /// Packets dropped, by reason.
    pub dropped: Dropped,
    /// Packets of new flows that found the flow table full (policed by the
    /// aggregate bucket only).
    pub flow_table_full: u64,
    /// Flows forgotten after `idle_timeout_s`.
    pub flows_expired: u64,
}

/// The report: the config in effect, the flow count and the counters.
#[derive(Serialize)]
struct Report<'a> {
    config: &'a RatelimitConfig,
    flows: u64,
    #[serde(flatten)]
    counters: Counters,
}

/// The per-flow part of a policer.
struct PerFlow {
    settings: FlowSettings,
    table: FlowTable,
}

/// The policer.
pub struct Ratelimit {
    config: RatelimitConfig,
    aggregate_limit: Limit,
    aggregate: Bucket,
    per_flow: Option<PerFlow>,
    counters: Counters,
    /// Origin of the clock the [`NetworkFunction`] impl passes as `now`.
    epoch: Instant,
}

impl fmt::Debug for Ratelimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ratelimit")
            .field("config", &self.config)
            .field("flows", &self.flows())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Ratelimit {
    /// A policer with `config`, its buckets full and its flow table allocated
    /// in full.
    pub fn new(config: RatelimitConfig) -> Result<Self, ConfigError> {
        let settings = config.settings()?;
        Ok(Self {
            config: settings.config,
            aggregate_limit: settings.aggregate,
            aggregate: Bucket::full(&settings.aggregate, Nanos(0)),
            per_flow: settings.per_flow.map(|settings| PerFlow {
                settings,
                table: FlowTable::new(settings.max_flows),
            }),
            counters: Counters::default(),
            epoch: Instant::now(),
        })
    }

    /// A policer from its JSON config; empty (or blank) means defaults.
    pub fn from_config(json: &str) -> Result<Self, ConfigError> {
        Self::new(RatelimitConfig::from_json(json)?)
    }

    /// Applies a new JSON config (empty means defaults) now, keeping bucket
    /// state where it still applies; see [`Ratelimit::reconfigure_at`].
    pub fn reconfigure(&mut self, config_json: &str) -> Result<(), ConfigError> {
        let now = self.now();
        self.reconfigure_at(config_json, now)
    }

    /// Applies a new JSON config at `now`. On error nothing changes.
    ///
    /// What carries over:
    /// - The counters, always.
    /// - The aggregate bucket: tokens earned up to `now` are credited at the
    ///   old rate, then kept, clipped to the new burst, if the unit (pps or
    ///   bps) stays; a change of unit starts the bucket full.
    /// - The flow table, if the flow key stays the same (`key` and, for
    ///   `src_prefix`, both prefix lengths): each flow's bucket carries over
    ///   as the aggregate's does. A new `max_flows` rebuilds the table
    ///   (allocating), keeping the most recently seen flows that fit. Any
    ///   other key, or `per_flow` turned off, drops the flows; `per_flow`
    ///   turned on starts an empty table.
    pub fn reconfigure_at(&mut self, config_json: &str, now: Nanos) -> Result<(), ConfigError> {
        let settings = RatelimitConfig::from_json(config_json)?.settings()?;
        self.aggregate
            .carry_over(&self.aggregate_limit, &settings.aggregate, now);
        self.aggregate_limit = settings.aggregate;
        self.per_flow = match (self.per_flow.take(), settings.per_flow) {
            (Some(mut old), Some(new)) if old.settings.spec == new.spec => {
                for bucket in old.table.buckets_mut() {
                    bucket.carry_over(&old.settings.limit, &new.limit, now);
                }
                if old.table.max() != new.max_flows {
                    old.table = old.table.resized(new.max_flows);
                }
                old.settings = new;
                Some(old)
            }
            (_, Some(new)) => Some(PerFlow {
                settings: new,
                table: FlowTable::new(new.max_flows),
            }),
            (_, None) => None,
        };
        self.config = settings.config;
        Ok(())
    }

    /// The config in effect, defaults made explicit.
    pub fn config(&self) -> RatelimitConfig {
        self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Flows in the flow table (0 without `per_flow`).
    pub fn flows(&self) -> u64 {
        self.per_flow.as_ref().map_or(0, |pf| pf.table.len() as u64)
    }

    /// The time on the clock [`NetworkFunction::process`] uses.
    fn now(&self) -> Nanos {
        Nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Polices one batch at `now`: sets each packet's verdict, after an idle
    /// sweep of a few flow entries.
    pub fn process_at(&mut self, batch: &mut Batch<'_>, now: Nanos) {
        if let Some(pf) = &mut self.per_flow {
            self.counters.flows_expired += pf.table.expire(now, pf.settings.idle, SWEEP_PER_BATCH);
        }
        for packet in batch.iter_mut() {
            let verdict = self.police(packet.data(), now);
            packet.set_verdict(verdict);
        }
    }

    /// Polices one frame arriving at `now`: `Forward` or `Drop`, counted.
    pub fn police(&mut self, frame: &[u8], now: Nanos) -> Verdict {
        let len = frame.len() as u64;
        let verdict = match parse::classify(frame) {
            Class::Ip(ip) => self.police_ip(&ip, len, now),
            Class::NonIp => match self.config.non_ip {
                NonIpPolicy::Police => self.police_aggregate(len, now),
                NonIpPolicy::Forward => Verdict::Forward,
                NonIpPolicy::Drop => {
                    self.counters.dropped.non_ip += 1;
                    Verdict::Drop
                }
            },
            Class::Malformed => match self.config.malformed {
                MalformedPolicy::Forward => self.police_aggregate(len, now),
                MalformedPolicy::Drop => {
                    self.counters.dropped.malformed += 1;
                    Verdict::Drop
                }
            },
        };
        if verdict == Verdict::Forward {
            self.counters.passed_packets += 1;
            self.counters.passed_bytes += len;
        }
        verdict
    }

    /// The aggregate bucket alone.
    fn police_aggregate(&mut self, len: u64, now: Nanos) -> Verdict {
        self.aggregate.refill(&self.aggregate_limit, now);
        let cost = self.aggregate_limit.cost(len);
        if self.aggregate.has(cost) {
            self.aggregate.take(cost);
            Verdict::Forward
        } else {
            self.counters.dropped.aggregate += 1;
            Verdict::Drop
        }
    }

    /// An IP packet: its flow's bucket, if it has one, and the aggregate.
    fn police_ip(&mut self, ip: &IpFields, len: u64, now: Nanos) -> Verdict {
        let Some(pf) = &mut self.per_flow else {
            return self.police_aggregate(len, now);
        };
        let key = pf.settings.spec.key_of(ip);
        let hash = pf.table.hash(&key);
        let limit = pf.settings.limit;
        let idx = match pf.table.find(&key, hash) {
            Some(idx) => {
                if let Some(bucket) = pf.table.bucket_mut(idx) {
                    // Idle long enough to be swept: start over as a new flow.
                    if now.since(bucket.last) >= pf.settings.idle {
                        *bucket = Bucket::full(&limit, now);
                        self.counters.flows_expired += 1;
                    }
                }
                Some(idx)
            }
            None => {
                let fresh = Bucket::full(&limit, now);
                pf.table.insert(key, hash, fresh).or_else(|| {
                    self.counters.flows_expired +=
                        pf.table.expire(now, pf.settings.idle, SWEEP_WHEN_FULL);
                    pf.table.insert(key, hash, fresh)
                })
            }
        };
        let Some(flow) = idx.and_then(|idx| pf.table.bucket_mut(idx)) else {
            self.counters.flow_table_full += 1;
            return self.police_aggregate(len, now);
        };
        flow.refill(&limit, now);
        self.aggregate.refill(&self.aggregate_limit, now);
        let flow_cost = limit.cost(len);
        let aggregate_cost = self.aggregate_limit.cost(len);
        if !flow.has(flow_cost) {
            self.counters.dropped.per_flow += 1;
            Verdict::Drop
        } else if !self.aggregate.has(aggregate_cost) {
            self.counters.dropped.aggregate += 1;
            Verdict::Drop
        } else {
            flow.take(flow_cost);
            self.aggregate.take(aggregate_cost);
            Verdict::Forward
        }
    }
}

impl NetworkFunction for Ratelimit {
    fn process(&mut self, batch: &mut Batch<'_>) {
        let now = self.now();
        self.process_at(batch, now);
    }

    /// `{"config":{..effective config..},"flows":..,"passed_packets":..,
    /// "passed_bytes":..,"dropped":{"aggregate":..,"per_flow":..,
    /// "malformed":..,"non_ip":..},"flow_table_full":..,"flows_expired":..}`.
    fn report(&self) -> Option<String> {
        let report = Report {
            config: &self.config,
            flows: self.flows(),
            counters: self.counters,
        };
        serde_json::to_string(&report).ok()
    }

    /// [`Ratelimit::reconfigure`] at the batch clock: any valid config
    /// applies in place, buckets and flows carried over as
    /// [`Ratelimit::reconfigure_at`] says, counters kept. An invalid one
    /// changes nothing.
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        Ratelimit::reconfigure(self, config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
