//! Where the service's log lines go: `tracing` events, written to stderr by
//! `tracing-subscriber`, filtered by `RUST_LOG` (default `info`), as text for
//! people or as one JSON object per line for log collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// Installs the process's subscriber. `RUST_LOG` picks what is logged, with
/// `tracing_subscriber`'s directives (`info`, `nfhost=debug,tonic=warn`, ...); a
/// malformed `RUST_LOG` falls back to `info` and says so.
pub fn init(format: LogFormat) {
    let (filter, bad) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) => {
            let bad = std::env::var("RUST_LOG").ok().map(|value| (value, e));
            (EnvFilter::new("info"), bad)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests run several services in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some((value, e)) = bad.filter(|(value, _)| !value.is_empty()) {
        tracing::warn!(rust_log = %value, error = %e, "RUST_LOG is not a valid filter; logging at info");
    }
}
