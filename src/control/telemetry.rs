//! Telemetry: per-VF counters, NF self-reports, the wire sink, stored events, and
//! what the engine reported (DMA faults, detaches) turned into events.

use super::{ControlError, Controller, Inner, event, now_ms};
use crate::auth::Principal;
use crate::dataplane::counters::Drop as DropReason;
use crate::dataplane::engine::EngineEvent;
use crate::nic::VfId;
use nfhost_api::names::{Collection, nf_name_or_none, parse_vf, vf_name};
use nfhost_api::proto;

impl Controller {
    /// Per-VF counters of the VFs `who` may see; the wire's only for an admin.
    pub fn stats(&self, who: &Principal, active_only: bool) -> Result<proto::Stats, ControlError> {
        let inner = self.lock();
        let n = inner.engine.pf()?.num_vfs;
        let faults = inner.engine.fault_counts()?;
        let owners = inner.owned_vfs();
        let c = &self.counters;
        let mut vfs = Vec::new();
        for i in 0..n {
            let vf = VfId(i);
            if !inner.sees_vf(who, vf) {
                continue;
            }
            let s = c.vf(vf).snapshot();
            let owner = owners.get(&vf).cloned().unwrap_or_default();
            if active_only && owner.is_empty() && s.rx_packets + s.tx_packets + s.total_drops() == 0
            {
                continue;
            }
            let chain = inner
                .desired
                .nfs
                .get(&owner)
                .map(|nf| nf.chain.clone())
                .unwrap_or_default();
            vfs.push(proto::VfStats {
                vf: vf_name(i),
                nf: nf_name_or_none(&owner),
                chain,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                drops: DropReason::ALL
                    .iter()
                    .map(|d| (d.as_str().to_owned(), s.drop_count(*d)))
                    .collect(),
                interrupts_delivered: s.irq_delivered,
                interrupts_coalesced: s.irq_coalesced,
                interrupts_blocked: s.irq_blocked,
                dma_copied_bytes: s.copied_bytes,
                ring_errors: s.ring_errors,
                attach_refused: s.attach_refused,
                dma_faults: faults.get(usize::from(i)).map_or(0, |f| f.total()),
                dma_faults_by_reason: crate::nic::FaultReason::ALL
                    .iter()
                    .map(|r| {
                        let count = faults.get(usize::from(i)).map_or(0, |f| f.get(*r));
                        (r.as_str().to_owned(), count)
                    })
                    .collect(),
            });
        }
        let w = &c.wire;
        Ok(proto::Stats {
            time_ms: now_ms(),
            vfs,
            wire: who.is_admin().then(|| proto::WireStats {
                rx_packets: w.rx_packets.get(),
                rx_bytes: w.rx_bytes.get(),
                tx_packets: w.tx_packets.get(),
                tx_bytes: w.tx_bytes.get(),
                drops: DropReason::ALL
                    .iter()
                    .map(|d| (d.as_str().to_owned(), w.drops(*d)))
                    .collect(),
            }),
        })
    }

    /// The latest self-report (JSON) of the NF `name`, such as a monitor's top
    /// talkers; `None` until it sends one.
    pub fn nf_report(&self, who: &Principal, name: &str) -> Result<Option<String>, ControlError> {
        let inner = self.lock();
        let nf = inner.nf_of(who, Collection::Nfs.short(name))?;
        Ok(parse_vf(&nf.vf).and_then(|vf| inner.engine.view().report(VfId(vf))))
    }

    /// Wire sink figures (gen wire): packets back out and their latency.
    pub fn sink_stats(&self) -> crate::dataplane::r#gen::SinkStats {
        self.lock().engine.view().sink()
    }

    /// The latest `limit` stored events `who` may see, oldest first.
    pub fn events(&self, who: &Principal, limit: usize) -> Result<Vec<proto::Event>, ControlError> {
        let inner = self.lock();
        if who.is_admin() {
            return Ok(inner.store.events(limit)?);
        }
        // A tenant's are among all stored ones: filter the whole log, keep the last.
        let mut mine: Vec<_> = inner
            .store
            .events(crate::store::EVENT_LOG_CAPACITY)?
            .into_iter()
            .filter(|e| sees_event(who, e))
            .collect();
        let skip = mine.len().saturating_sub(limit);
        mine.drain(..skip);
        Ok(mine)
    }

    /// Records that the service started (boot id in the message).
    pub fn record_start(&self) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let boot = inner.store.boot_id();
        let ev = event(
            proto::EventKind::ServiceStarted,
            None,
            "",
            format!("nfhost started (boot {boot})"),
        );
        self.commit(&mut inner, vec![], vec![ev])
    }
}

impl Inner {
    /// What the engine saw since the last call, as events to store: DMA faults (a
    /// sample of them in a storm) and NFs detached.
    pub(super) fn engine_events(&mut self) -> Vec<proto::Event> {
        let mut events = Vec::new();
        let engine_events = self.engine.view().take_events();
        let mut faults = 0usize;
        for e in engine_events {
            match e {
                EngineEvent::DmaFault(f) => {
                    faults += 1;
                    if faults > 50 {
                        continue; // The rest are counted; the log keeps a sample.
                    }
                    let owner = self.owner_of(f.vf).unwrap_or_default();
                    let mut ev = event(
                        proto::EventKind::DmaFault,
                        Some(f.vf),
                        &owner,
                        f.to_string(),
                    );
                    ev.dma_fault = Some(proto::DmaFault {
                        iova: f.iova.0,
                        len: f.len,
                        access: match f.access {
                            crate::nic::Access::Read => "read".into(),
                            crate::nic::Access::Write => "write".into(),
                        },
                        reason: f.reason.as_str().into(),
                    });
                    events.push(ev);
                }
                EngineEvent::Detached {
                    vf,
                    owner,
                    mappings,
                } => {
                    events.push(event(
                        proto::EventKind::NfExited,
                        Some(vf),
                        &owner.0,
                        format!("{} scrubbed after nfs/{} detached: DMA stopped, {mappings} mapping(s) removed", vf_name(vf.0), owner.0),
                    ));
                    // An external NF waits for the next process.
                    if let Some(run) = self.external_run(&owner.0) {
                        run.status.state = proto::NfState::Waiting as i32;
                        run.status.reason =
                            "its process detached; waiting for the next to attach".into();
                    }
                }
                EngineEvent::Attached { vf, owner } => {
                    if let Some(run) = self.external_run(&owner.0) {
                        run.status.state = proto::NfState::Running as i32;
                        run.status.reason.clear();
                        run.started_at = std::time::Instant::now();
                        events.push(event(
                            proto::EventKind::NfStarted,
                            Some(vf),
                            &owner.0,
                            format!(
                                "an external process attached to nfs/{} on {}",
                                owner.0,
                                vf_name(vf.0)
                            ),
                        ));
                    }
                }
            }
        }
        if faults > 50 {
            events.push(event(
                proto::EventKind::DmaFault,
                None,
                "",
                format!("{} more DMA faults not logged individually", faults - 50),
            ));
        }
        events
    }
}

impl Inner {
    /// The run of the external NF `name`, if it is one.
    fn external_run(&mut self, name: &str) -> Option<&mut super::NfRun> {
        let external = self
            .desired
            .nfs
            .get(name)
            .is_some_and(|nf| nf.kind == nfhost_api::validate::EXTERNAL);
        if external {
            self.runs.get_mut(name)
        } else {
            None
        }
    }
}

/// Whether `who` may see `event`: an admin every one, a tenant those about its
/// own objects.
pub fn sees_event(who: &Principal, event: &proto::Event) -> bool {
    who.is_admin() || (!event.tenant.is_empty() && who.owns(&event.tenant))
}
