//! L2 forwarder NF: sends every frame on with its source and destination MAC
//! swapped, in place (the classic DPDK `l2fwd`/`testpmd macswap` workload, the
//! simplest NF that still touches every packet).
//!
//! Frames shorter than an Ethernet header (14 bytes) cannot be addressed and
//! are dropped and counted. Nothing else is inspected: VLAN tags, EtherType
//! and payload stay byte-identical.
//!
//! Config (JSON, unknown fields rejected; an empty string means defaults):
//!
//! ```json
//! { "mac_rewrite": "swap" }
//! ```
//!
//! `"mac_rewrite"` is `"swap"` (default) or `"none"` (forward unchanged).
#![forbid(unsafe_code)]

use nf_sdk::{Batch, EthernetFrame, NetworkFunction, Verdict};
use serde::{Deserialize, Serialize};

/// What the forwarder does to the Ethernet addresses.
///
/// Deserialized through a string so that a wrong type reads "expected a
/// string" rather than serde_json's bare "expected value" for enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum MacRewrite {
    /// Swap source and destination MAC.
    #[default]
    Swap,
    /// Leave the frame untouched.
    None,
}

impl TryFrom<String> for MacRewrite {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "swap" => Ok(Self::Swap),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown mac_rewrite {value:?}, expected \"swap\" or \"none\""
            )),
        }
    }
}

/// Configuration of [`L2Fwd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct L2FwdConfig {
    /// Address rewrite applied to every forwarded frame.
    pub mac_rewrite: MacRewrite,
}

impl L2FwdConfig {
    /// Parses the JSON config; empty (or blank) means defaults.
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
}

/// An invalid L2 forwarder configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not describe an [`L2FwdConfig`]. The serde message
    /// (unknown field, bad variant, syntax, with line and column) is the one a
    /// person needs, so it goes in the message.
    #[error("invalid l2fwd config: {0}")]
    Json(serde_json::Error),
    /// The JSON is not an object. serde would accept a struct written as an
    /// array of its fields, which nobody means in a config.
    #[error("invalid l2fwd config: expected a JSON object")]
    NotAnObject,
}

/// Packet counters of an [`L2Fwd`], as reported to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Frames forwarded.
    pub forwarded: u64,
    /// Frames dropped for being shorter than an Ethernet header.
    pub dropped_runts: u64,
}

/// The L2 forwarder.
#[derive(Debug, Clone, Default)]
pub struct L2Fwd {
    config: L2FwdConfig,
    counters: Counters,
}

impl L2Fwd {
    /// A forwarder with `config`.
    pub fn new(config: L2FwdConfig) -> Self {
        Self {
            config,
            counters: Counters::default(),
        }
    }

    /// A forwarder from its JSON config; empty (or blank) means defaults.
    pub fn from_config(json: &str) -> Result<Self, ConfigError> {
        L2FwdConfig::from_json(json).map(Self::new)
    }

    /// The configuration in effect.
    pub fn config(&self) -> L2FwdConfig {
        self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

impl NetworkFunction for L2Fwd {
    fn process(&mut self, batch: &mut Batch<'_>) {
        for packet in batch.iter_mut() {
            match EthernetFrame::new_checked(packet.data_mut()) {
                Ok(mut frame) => {
                    if self.config.mac_rewrite == MacRewrite::Swap {
                        frame.swap_addresses();
                    }
                    packet.set_verdict(Verdict::Forward);
                    self.counters.forwarded += 1;
                }
                Err(_) => {
                    packet.set_verdict(Verdict::Drop);
                    self.counters.dropped_runts += 1;
                }
            }
        }
    }

    /// `{"forwarded":N,"dropped_runts":N}`.
    fn report(&self) -> Option<String> {
        serde_json::to_string(&self.counters).ok()
    }

    /// Any valid config applies in place: the next batch sees the new
    /// `mac_rewrite`; the counters keep counting. An invalid one changes
    /// nothing and returns the parse error.
    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        self.config = L2FwdConfig::from_json(config).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
