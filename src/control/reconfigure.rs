//! The NFs of an updated chain: each running one is offered its new config through
//! its VF's mailbox and answers whether it took it in place; the others, and those
//! that cannot, restart on their own VFs.

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::Instant;

use super::supervisor::Exit;
use super::{Controller, IN_PLACE_WAIT, Inner, event};
use nfhost_api::proto;

/// How an NF of an updated chain takes its new config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Taken {
    /// In place: the same process.
    InPlace,
    /// By a restart on its own VF, for this reason.
    Restart(String),
}

impl Controller {
    /// Offers each running NF of `names` its new (stored) config through its VF's
    /// mailbox, and waits up to [`IN_PLACE_WAIT`] for the answers, without holding
    /// the controller. Returns the controller again, how each NF takes its config
    /// (a restart if it is not running, not attached, refused because its kind
    /// cannot take that change in place, or silent) and the events saying so.
    pub(super) fn reconfigure_in_place<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        names: &[String],
    ) -> (
        MutexGuard<'a, Inner>,
        BTreeMap<String, Taken>,
        Vec<proto::Event>,
    ) {
        let mut taken = BTreeMap::new();
        let mut posted = Vec::new();
        let mut events = Vec::new();
        let not_running = || Taken::Restart("it was not running".into());
        for name in names {
            let (Some(run), Some(nf)) = (inner.runs.get(name), inner.desired.nfs.get(name)) else {
                taken.insert(name.clone(), not_running());
                continue;
            };
            if run.process.is_none() {
                taken.insert(name.clone(), not_running());
                continue;
            }
            let (vf, config) = (run.vf, nf.config.clone());
            match inner.engine.post_config(vf, config) {
                Ok(Some(p)) => posted.push((name.clone(), vf, p.answer)),
                _ => {
                    events.push(event(
                        proto::EventKind::ConfigChanged,
                        Some(vf),
                        name,
                        format!("nf {name} is not attached to its VF yet: restarting it"),
                    ));
                    let why = "it was not attached to its VF yet".into();
                    taken.insert(name.clone(), Taken::Restart(why));
                }
            }
        }
        let mut answers = Vec::with_capacity(posted.len());
        if !posted.is_empty() {
            drop(inner);
            let deadline = Instant::now() + IN_PLACE_WAIT;
            for (name, vf, answer) in posted {
                // No answer in time, or none coming (the NF detached): restart it.
                let wait = deadline.saturating_duration_since(Instant::now());
                answers.push((name, vf, answer.recv_timeout(wait).ok()));
            }
            inner = self.lock();
        }
        for (name, vf, answer) in answers {
            let (message, how) = match answer {
                Some(Ok(())) => (
                    format!("nf {name} took its new config in place (same process)"),
                    Taken::InPlace,
                ),
                Some(Err(why)) => (
                    format!("nf {name} cannot take its new config in place ({why}): restarting it"),
                    Taken::Restart(why),
                ),
                None => {
                    let ms = IN_PLACE_WAIT.as_millis();
                    (
                        format!(
                            "nf {name} did not answer its new config within {ms} ms: restarting it"
                        ),
                        Taken::Restart(format!("it did not answer within {ms} ms")),
                    )
                }
            };
            taken.insert(name.clone(), how);
            events.push(event(
                proto::EventKind::ConfigChanged,
                Some(vf),
                &name,
                message,
            ));
        }
        (inner, taken, events)
    }

    /// Restarts NFs on their own VFs with their stored (new) config: the VF is
    /// scrubbed first, as after an exit, and the restart is no failure (the crash-loop
    /// count starts over: a new config deserves a fresh start). An NF that was not
    /// running (failed, or waiting out a backoff) starts now.
    /// `events` (what happened before, such as the in-place attempts) are stored with
    /// the restarts' own, in one batch.
    pub(super) fn restart_reconfigured(
        &self,
        inner: &mut Inner,
        names: &[String],
        mut events: Vec<proto::Event>,
    ) {
        let mut missing = false;
        for name in names {
            let Some(nf) = inner.desired.nfs.get(name).cloned() else {
                continue;
            };
            let Some(run) = inner.runs.get_mut(name) else {
                // Never started: the reconciler starts it, with the stored config.
                missing = true;
                continue;
            };
            let vf = run.vf;
            let old = run.process.take();
            run.failures = 0;
            run.restart_at = None;
            run.expect_exit = false;
            // The old process is gone before its VF is scrubbed: in a `shared`
            // chain it may feed the next hop's rings directly, and the engine
            // settles the chain's frames only once nothing writes them any more.
            // The scrub still comes before the successor attaches.
            if let Some(mut process) = old {
                let _ = process.signal(rustix::process::Signal::KILL);
                let ended = process.wait().map(Exit::from_status);
                if let (Ok(exit), Some(run)) = (ended, inner.runs.get_mut(name)) {
                    run.status.last_exit =
                        format!("stopped for a new config ({})", exit.description);
                }
            }
            let _ = inner.engine.detach(vf);
            if let Some(e) = inner.start(&nf) {
                events.push(e);
            }
        }
        if !events.is_empty() {
            let _ = self.commit(inner, vec![], events);
        }
        if missing {
            self.reconcile_locked(inner);
        }
    }
}
