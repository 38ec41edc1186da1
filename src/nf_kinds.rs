//! The NF kinds nfhost can run, by name. Each kind is a library crate under `nfs/`
//! built on `nf-sdk`; an NF process builds one from its kind and JSON config.

use nf_sdk::NetworkFunction;
use thiserror::Error;

/// The built-in kinds.
pub const KINDS: &[&str] = &["l2fwd", "monitor"];

/// An NF could not be built.
#[derive(Debug, Error)]
pub enum KindError {
    /// No such kind.
    #[error("unknown NF kind {0:?}; known kinds: l2fwd, monitor")]
    Unknown(String),
    /// The kind refused its configuration.
    #[error("invalid {kind} config: {message}")]
    Config {
        /// Which kind.
        kind: &'static str,
        /// The NF's own explanation.
        message: String,
    },
}

/// Builds an NF of `kind` from its JSON config (empty for defaults).
pub fn build(kind: &str, config: &str) -> Result<Box<dyn NetworkFunction>, KindError> {
    match kind {
        "l2fwd" => nf_l2fwd::L2Fwd::from_config(config)
            .map(|nf| Box::new(nf) as Box<dyn NetworkFunction>)
            .map_err(|e| KindError::Config {
                kind: "l2fwd",
                message: e.to_string(),
            }),
        "monitor" => nf_monitor::Monitor::from_config(config)
            .map(|nf| Box::new(nf) as Box<dyn NetworkFunction>)
            .map_err(|e| KindError::Config {
                kind: "monitor",
                message: e.to_string(),
            }),
        other => Err(KindError::Unknown(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kind_builds_with_defaults() {
        for kind in KINDS {
            assert!(build(kind, "").is_ok(), "{kind}");
        }
    }

    #[test]
    fn unknown_kinds_and_bad_configs_are_refused() {
        let err = build("nat64", "").err().unwrap();
        assert_eq!(
            err.to_string(),
            "unknown NF kind \"nat64\"; known kinds: l2fwd, monitor"
        );
        let err = build("monitor", r#"{"max_flows": 0}"#).err().unwrap();
        assert!(
            err.to_string().starts_with("invalid monitor config:"),
            "{err}"
        );
    }
}
