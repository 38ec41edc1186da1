//! Making the running system match the stored state, one resource at a time, in an
//! order that frees before it takes: PF VF count, VF admin config, NFs stopped, chains
//! unsteered, chains steered, NFs started.

use std::time::Instant;

use super::convert::{chain_egress, isolation, update_from_record, wire_match};
use super::{Controller, Inner, NfRun, event};
use crate::nic::VfId;
use nfhost_api::names::{Collection, nf_name, parse_vf};
use nfhost_api::proto;

impl Controller {
    /// Makes the running system match the stored state.
    pub fn reconcile(&self) {
        let mut inner = self.lock();
        self.reconcile_locked(&mut inner);
    }

    /// [`Controller::reconcile`] with the lock held; stores what happened as events.
    pub(super) fn reconcile_locked(&self, inner: &mut Inner) {
        inner.apply_vf_count();
        inner.apply_vf_admin();
        let mut events = inner.stop_deleted_nfs();
        inner.unsteer_deleted_chains();
        events.extend(inner.steer_new_chains());
        events.extend(inner.start_missing_nfs());
        if !events.is_empty() {
            let _ = self.commit(inner, vec![], events);
        }
    }
}

impl Inner {
    /// The stored VF count, enabled again from 0 if it differs.
    fn apply_vf_count(&self) {
        if let Some(pf) = &self.desired.pf {
            let _ = self.engine.set_vf_count(pf.num_vfs as u16);
        }
    }

    /// Every stored VF admin config, written again.
    fn apply_vf_admin(&self) {
        for (index, record) in &self.desired.vfs {
            let update = update_from_record(record);
            let _ = self.engine.update_vf(VfId(*index), update, false);
        }
    }

    /// Stops the NFs no longer stored and releases their VFs.
    fn stop_deleted_nfs(&mut self) -> Vec<proto::Event> {
        let gone: Vec<String> = self
            .runs
            .keys()
            .filter(|name| !self.desired.nfs.contains_key(*name))
            .cloned()
            .collect();
        let mut events = Vec::new();
        for name in gone {
            let Some(mut run) = self.runs.remove(&name) else {
                continue;
            };
            let vf = run.vf;
            if let Some(mut p) = run.process.take() {
                let _ = p.signal(rustix::process::Signal::KILL);
                let _ = p.wait();
            }
            let _ = self.engine.release(vf);
            // An external NF's endpoint goes with it (a no-op for the others).
            self.endpoints.remove(vf);
            events.push(event(
                proto::EventKind::NfExited,
                Some(vf),
                &name,
                format!("{} stopped: deleted", nf_name(&name)),
            ));
        }
        events
    }

    /// Takes down the steering of chains no longer stored.
    fn unsteer_deleted_chains(&mut self) {
        let old: Vec<String> = self
            .installed_chains
            .keys()
            .filter(|c| !self.desired.chains.contains_key(*c))
            .cloned()
            .collect();
        for name in old {
            if let Some(vfs) = self.installed_chains.remove(&name) {
                let _ = self.engine.remove_chain(&vfs);
            }
        }
    }

    /// Steers the stored chains not yet installed; a refusal becomes an event.
    fn steer_new_chains(&mut self) -> Vec<proto::Event> {
        let new: Vec<proto::Chain> = self
            .desired
            .chains
            .iter()
            .filter(|(id, _)| !self.installed_chains.contains_key(*id))
            .map(|(_, c)| c.clone())
            .collect();
        let mut events = Vec::new();
        for chain in new {
            let id = Collection::Chains.short(&chain.name).to_owned();
            let hops: Vec<VfId> = chain
                .vfs
                .iter()
                .filter_map(|v| parse_vf(v))
                .map(VfId)
                .collect();
            let installed = self.engine.install_chain(
                &hops,
                isolation(chain.isolation),
                wire_match(chain.classifier.as_ref()),
                chain_egress(chain.egress.as_ref()),
            );
            match installed {
                Ok(()) => {
                    self.installed_chains.insert(id, hops);
                }
                Err(err) => events.push(event(
                    proto::EventKind::ConfigChanged,
                    None,
                    "",
                    format!(
                        "chain {} could not be steered: {}",
                        chain.name,
                        crate::error_chain(&err)
                    ),
                )),
            }
        }
        events
    }

    /// Starts the stored NFs that have no run yet.
    fn start_missing_nfs(&mut self) -> Vec<proto::Event> {
        let missing: Vec<proto::Nf> = self
            .desired
            .nfs
            .values()
            .filter(|nf| !self.runs.contains_key(&nf.name))
            .cloned()
            .collect();
        let mut events = Vec::new();
        for nf in missing {
            let Some(vf) = parse_vf(&nf.vf).map(VfId) else {
                continue;
            };
            self.runs.insert(
                nf.name.clone(),
                NfRun {
                    vf,
                    process: None,
                    status: proto::NfStatus {
                        state: proto::NfState::Pending as i32,
                        ..Default::default()
                    },
                    started_at: Instant::now(),
                    failures: 0,
                    restart_at: None,
                    expect_exit: false,
                    watch: super::liveness::Watch::default(),
                    killed_unresponsive: false,
                },
            );
            if let Some(e) = self.start(&nf) {
                events.push(e);
            }
        }
        events
    }
}
