//! What happens when an NF process exits: restart (after a backoff that doubles with
//! each quick failure), or give up. The policy is pure, time passed in
//! ([`decide`]); the supervisor tick ([`Controller::tick`]) applies it.

use std::time::{Duration, Instant};

use super::{Controller, Inner, event};
use crate::dataplane::nf_process::NfProcess;
use crate::nic::VfId;
use nfhost_api::names::{nf_name, parse_vf};
use nfhost_api::proto::{self, RestartPolicy};

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

impl Controller {
    /// One supervisor pass: reap exited NFs, restart those whose backoff ended, and
    /// store what the engine reported (DMA faults, detaches).
    pub fn tick(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let names: Vec<String> = inner.runs.keys().cloned().collect();
        let mut events = Vec::new();
        for name in names {
            events.extend(inner.supervise(&name, now));
        }
        events.extend(inner.check_liveness(now));
        events.extend(inner.engine_events());
        if !events.is_empty() {
            let _ = self.commit(&mut inner, vec![], events);
        }
    }

    /// Stops every NF (service shutdown).
    pub fn stop_all(&self) {
        let mut inner = self.lock();
        let runs = std::mem::take(&mut inner.runs);
        for (_, mut run) in runs {
            if let Some(p) = run.process.take() {
                let _ = p.signal(rustix::process::Signal::TERM);
                drop(p);
            }
        }
    }
}

impl Inner {
    /// Reads every NF's heartbeat ([`super::liveness`]); an NF newly found
    /// unresponsive gets an event, a count in its status, and, since it runs as
    /// a process nfhost started, SIGKILL: its exit then goes through the restart
    /// policy like any other.
    fn check_liveness(&mut self, now: Instant) -> Vec<proto::Event> {
        let timeout = self.liveness_timeout;
        if timeout.is_zero() {
            return Vec::new();
        }
        let Ok(pulses) = self.engine.pulses() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for pulse in pulses {
            let Some((name, run)) = self.runs.iter_mut().find(|(_, r)| r.vf == pulse.vf) else {
                continue;
            };
            let verdict = run.watch.observe(&pulse, now, timeout);
            let super::liveness::Verdict::Unresponsive { stalled, waiting } = verdict else {
                continue;
            };
            run.status.unresponsive += 1;
            let reason = format!(
                "unresponsive: {waiting} frames waited on its rx ring for {} ms while its heartbeat stood still",
                stalled.as_millis()
            );
            tracing::warn!(nf = %name, vf = %pulse.vf, waiting, stalled_ms = stalled.as_millis() as u64, "NF unresponsive; killing it for a restart per its policy");
            if let Some(process) = run.process.as_ref() {
                if process.signal(rustix::process::Signal::KILL).is_ok() {
                    run.killed_unresponsive = true;
                }
            }
            run.status.reason = reason.clone();
            events.push(event(
                proto::EventKind::NfUnresponsive,
                Some(pulse.vf),
                name,
                format!("{} is {reason}", nf_name(name)),
            ));
        }
        events
    }

    /// Applies the policy to the NF `name`: reaps its exit, restarts it when its
    /// backoff ended. Returns the events to store.
    fn supervise(&mut self, name: &str, now: Instant) -> Vec<proto::Event> {
        let mut events = Vec::new();
        let Some(nf) = self.desired.nfs.get(name).cloned() else {
            return events;
        };
        let policy = proto::RestartPolicy::try_from(nf.restart_policy)
            .unwrap_or(proto::RestartPolicy::Always);
        let Some(run) = self.runs.get_mut(name) else {
            return events;
        };
        let exited = match run.process.as_mut().map(NfProcess::try_wait) {
            Some(Ok(Some(status))) => Some(status),
            _ => None,
        };
        if let Some(status) = exited {
            run.process = None;
            let mut exit = Exit::from_status(status);
            if std::mem::take(&mut run.killed_unresponsive) {
                exit.description =
                    format!("killed after it was unresponsive ({})", exit.description);
            }
            run.status.pid = 0;
            run.status.last_exit = exit.description.clone();
            if std::mem::take(&mut run.expect_exit) {
                run.restart_at = Some(now);
                run.status.state = proto::NfState::Restarting as i32;
                return events;
            }
            let (decision, failures) = decide(policy, &exit, now - run.started_at, run.failures);
            run.failures = failures;
            events.push(event(
                proto::EventKind::NfExited,
                Some(run.vf),
                name,
                format!("{} exited: {}", nf_name(name), exit.description),
            ));
            match decision {
                Decision::Restart { after } => {
                    run.status.state = proto::NfState::Restarting as i32;
                    run.status.reason = format!(
                        "restarting in {} ms after {}",
                        after.as_millis(),
                        exit.description
                    );
                    run.restart_at = Some(now + after);
                }
                Decision::Fail { reason } => {
                    run.status.state = proto::NfState::Failed as i32;
                    run.status.reason = reason.clone();
                    run.restart_at = None;
                    events.push(event(
                        proto::EventKind::NfFailed,
                        Some(run.vf),
                        name,
                        format!("{} failed: {reason}", nf_name(name)),
                    ));
                }
            }
        }
        let due = self
            .runs
            .get(name)
            .and_then(|r| r.restart_at)
            .is_some_and(|t| t <= now);
        if due {
            if let Some(run) = self.runs.get_mut(name) {
                run.restart_at = None;
                run.status.restarts += 1;
            }
            if let Some(e) = self.start(&nf) {
                events.push(e);
            }
            events.push(event(
                proto::EventKind::NfRestarted,
                parse_vf(&nf.vf).map(VfId),
                name,
                format!("{} restarted", nf_name(name)),
            ));
        }
        events
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
