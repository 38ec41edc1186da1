//! The NF kinds nfhost can run, by name. Each kind is a library crate under `nfs/`
//! built on `nf-sdk`; an NF process builds one from its kind and JSON config.

use nf_sdk::NetworkFunction;
use nfhost_api::validate::{KindProblem, NfKinds};
use thiserror::Error;

/// The built-in kinds.
pub const KINDS: &[&str] = &["l2fwd", "monitor", "firewall", "nat", "lb", "ratelimit"];

/// An NF could not be built.
#[derive(Debug, Error)]
pub enum KindError {
    /// No such kind.
    #[error("unknown NF kind {0:?}; known kinds: l2fwd, monitor, firewall, nat, lb, ratelimit")]
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

fn boxed<N: NetworkFunction, E: std::fmt::Display>(
    kind: &'static str,
    built: Result<N, E>,
) -> Result<Box<dyn NetworkFunction>, KindError> {
    built
        .map(|nf| Box::new(nf) as Box<dyn NetworkFunction>)
        .map_err(|e| KindError::Config {
            kind,
            message: e.to_string(),
        })
}

/// Builds an NF of `kind` from its JSON config (empty for defaults).
pub fn build(kind: &str, config: &str) -> Result<Box<dyn NetworkFunction>, KindError> {
    match kind {
        "l2fwd" => boxed("l2fwd", nf_l2fwd::L2Fwd::from_config(config)),
        "monitor" => boxed("monitor", nf_monitor::Monitor::from_config(config)),
        "firewall" => boxed("firewall", nf_firewall::Firewall::from_config(config)),
        "nat" => boxed("nat", nf_nat::Nat::from_config(config)),
        "lb" => boxed("lb", nf_lb::Lb::from_config(config)),
        "ratelimit" => boxed("ratelimit", nf_ratelimit::Ratelimit::from_config(config)),
        other => Err(KindError::Unknown(other.to_owned())),
    }
}

/// The built-in kinds as the API validator asks for them: each kind's own parser
/// judges its config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Catalog;

impl NfKinds for Catalog {
    fn check(&self, kind: &str, config: &str) -> Result<(), KindProblem> {
        build(kind, config).map(drop).map_err(|e| match e {
            KindError::Unknown(_) => KindProblem::Kind(e.to_string()),
            KindError::Config { .. } => KindProblem::Config(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_chain_is_valid_with_the_real_kinds() {
        for text in [
            include_str!("../examples/edge.toml"),
            include_str!("../examples/stick.toml"),
            include_str!("../examples/nf-library.toml"),
        ] {
            let chain = nfhost_api::chain_file::parse_chain(text).expect("example parses");
            let v = nfhost_api::validate::check_chain(&chain, &Catalog);
            assert!(v.is_empty(), "{}: {v:?}", chain.name);
        }
    }

    #[test]
    fn every_listed_kind_builds() {
        // Kinds whose defaults are not a working NF need a minimal config.
        let minimal = |kind: &str| match kind {
            "nat" => r#"{"inside": "10.0.0.0/8", "pool": ["203.0.113.1"]}"#,
            "lb" => r#"{"vip": "198.51.100.10:80", "backends": [{"addr": "10.0.1.1:8080"}]}"#,
            _ => "",
        };
        for kind in KINDS {
            if let Err(e) = build(kind, minimal(kind)) {
                panic!("{kind}: {e}");
            }
        }
    }

    #[test]
    fn unknown_kinds_and_bad_configs_are_refused() {
        let err = build("nat64", "").err().unwrap();
        assert_eq!(
            err.to_string(),
            "unknown NF kind \"nat64\"; known kinds: l2fwd, monitor, firewall, nat, lb, ratelimit"
        );
        let err = build("monitor", r#"{"max_flows": 0}"#).err().unwrap();
        assert!(
            err.to_string().starts_with("invalid monitor config:"),
            "{err}"
        );
    }
}
