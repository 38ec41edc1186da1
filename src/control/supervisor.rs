//! What happens when an NF process exits: restart (after a backoff that doubles with
//! each quick failure), or give up. Pure policy, time passed in; the controller
//! applies it.

use std::time::Duration;

use nfhost_api::proto::RestartPolicy;

/// First restart delay.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran at least this long before exiting was healthy: its failure
/// count starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// This many quick failures in a row is a crash loop: the NF is marked failed.
pub const CRASH_LOOP_LIMIT: u32 = 5;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit status 0.
    pub success: bool,
    /// For a person: `exit status 1`, `signal 9 (SIGKILL)`.
    pub description: String,
}

impl Exit {
    /// From a child's exit status.
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let description = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
            _ => "unknown exit".to_owned(),
        };
        Exit {
            success: status.success(),
            description,
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `after`.
    Restart {
        /// The backoff.
        after: Duration,
    },
    /// Stop trying; the NF is failed for `reason`.
    Fail {
        /// For a person.
        reason: String,
    },
}

/// Decides what follows an exit. `failures` counts the quick failures before this
/// one; the returned count is the one to keep.
pub fn decide(
    policy: RestartPolicy,
    exit: &Exit,
    ran_for: Duration,
    failures: u32,
) -> (Decision, u32) {
    let quick = ran_for < STABLE_AFTER;
    let failures = if quick { failures + 1 } else { 1 };
    let restart = match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !exit.success,
        RestartPolicy::Always | RestartPolicy::Unspecified => true,
    };
    if !restart {
        let reason = format!(
            "{} (restart policy {})",
            exit.description,
            policy_word(policy)
        );
        return (Decision::Fail { reason }, failures);
    }
    if failures >= CRASH_LOOP_LIMIT {
        let reason = format!(
            "crash loop: exited {failures} times in a row within {}s of starting; last: {}",
            STABLE_AFTER.as_secs(),
            exit.description
        );
        return (Decision::Fail { reason }, failures);
    }
    let after = BACKOFF_START
        .saturating_mul(1 << (failures - 1).min(16))
        .min(BACKOFF_MAX);
    (Decision::Restart { after }, failures)
}

/// The restart policy as a chain file writes it: `always`, `on-failure`, `never`.
pub fn policy_word(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Never => "never",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always | RestartPolicy::Unspecified => "always",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed() -> Exit {
        Exit {
            success: false,
            description: "signal 9 (SIGKILL)".into(),
        }
    }

    #[test]
    fn backoff_doubles_then_a_crash_loop_fails() {
        let mut failures = 0;
        let mut delays = Vec::new();
        loop {
            let (d, f) = decide(
                RestartPolicy::Always,
                &killed(),
                Duration::from_millis(50),
                failures,
            );
            failures = f;
            match d {
                Decision::Restart { after } => delays.push(after.as_millis()),
                Decision::Fail { reason } => {
                    assert!(reason.starts_with("crash loop: exited 5 times"), "{reason}");
                    assert!(reason.ends_with("last: signal 9 (SIGKILL)"), "{reason}");
                    break;
                }
            }
        }
        assert_eq!(delays, [100, 200, 400, 800]);
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let (d, f) = decide(RestartPolicy::Always, &killed(), Duration::from_secs(60), 4);
        assert_eq!(f, 1);
        assert_eq!(
            d,
            Decision::Restart {
                after: BACKOFF_START
            }
        );
    }

    #[test]
    fn policies() {
        let clean = Exit {
            success: true,
            description: "exit status 0".into(),
        };
        let ran = Duration::from_secs(1);
        assert!(matches!(
            decide(RestartPolicy::Never, &killed(), ran, 0).0,
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(RestartPolicy::OnFailure, &clean, ran, 0).0,
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(RestartPolicy::OnFailure, &killed(), ran, 0).0,
            Decision::Restart { .. }
        ));
        assert!(matches!(
            decide(RestartPolicy::Always, &clean, ran, 0).0,
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn exit_descriptions() {
        use std::os::unix::process::ExitStatusExt;
        let s = std::process::ExitStatus::from_raw(9);
        assert_eq!(Exit::from_status(s).description, "signal 9 (SIGKILL)");
        let s = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(Exit::from_status(s).description, "exit status 1");
    }
}
