//! Standalone NFs, and starting any NF's process on its VF.

use crate::nf_kinds::Catalog;
use std::time::Instant;

use super::{Change, ControlError, Controller, Inner, audited, event, not_yours};
use crate::auth::Principal;
use crate::dataplane::nf_process::UserBinary;
use crate::dataplane::runner::{NfSpec, spawn_attached};
use crate::nic::VfId;
use nfhost_api::names::{Collection, nf_name, parse_vf, vf_name};
use nfhost_api::proto;
use nfhost_api::validate::{self};

impl Controller {
    /// Creates a standalone NF, owned by `who`'s tenant.
    pub fn create_nf(
        &self,
        who: &Principal,
        nf: &proto::Nf,
        validate_only: bool,
    ) -> Result<proto::Nf, ControlError> {
        let v = validate::check_new_nf(nf, &Catalog);
        if !v.is_empty() {
            return Err(ControlError::Invalid(v));
        }
        let mut inner = self.lock();
        let id = Collection::Nfs.short(&nf.name).to_owned();
        if let Some(existing) = inner.desired.nfs.get(&id) {
            if !who.owns(&existing.tenant) {
                return Err(not_yours(who, &nf_name(&id)));
            }
            return Err(ControlError::AlreadyExists(format!(
                "{} already exists",
                nf_name(&id)
            )));
        }
        inner.check_quota(who, 1, 0)?;
        let num_vfs = inner.engine.pf()?.num_vfs;
        let owned = inner.owned_vfs();
        let vf = if nf.vf.is_empty() {
            inner.free_vfs(num_vfs, 1)?[0]
        } else {
            let vf = VfId(parse_vf(&nf.vf).unwrap_or(u16::MAX));
            if vf.0 >= num_vfs {
                return Err(ControlError::NotFound(format!(
                    "{} does not exist: this PF has {num_vfs} VFs enabled",
                    nf.vf
                )));
            }
            if let Some(owner) = owned.get(&vf) {
                return Err(ControlError::FailedPrecondition(format!(
                    "{} is already owned by nfs/{owner}",
                    vf_name(vf.0)
                )));
            }
            if inner.in_k8s_pool(vf) {
                return Err(ControlError::FailedPrecondition(format!(
                    "{} is set aside for Kubernetes pods (--k8s-vfs)",
                    vf_name(vf.0)
                )));
            }
            vf
        };
        let (exec, endpoint) = attach_parts("nf", &nf.kind, nf.exec.as_ref())?;
        let record = proto::Nf {
            name: id.clone(),
            kind: nf.kind.clone(),
            config: nf.config.clone(),
            vf: vf_name(vf.0),
            restart_policy: nf.restart_policy,
            chain: String::new(),
            status: None,
            tenant: who.tenant_of_new(),
            exec,
            endpoint,
        };
        if !validate_only {
            let ev = event(
                proto::EventKind::ConfigChanged,
                Some(vf),
                &id,
                format!("NF nfs/{id} ({}) created", nf.kind),
            );
            let ev = audited(ev, who, &record.tenant);
            self.commit(
                &mut inner,
                vec![Change::PutNf(Box::new(record.clone()))],
                vec![ev],
            )?;
            self.reconcile_locked(&mut inner);
        }
        Ok(inner.nf_message(&record))
    }

    /// One NF with its status.
    pub fn get_nf(&self, who: &Principal, name: &str) -> Result<proto::Nf, ControlError> {
        let inner = self.lock();
        let nf = inner.nf_of(who, Collection::Nfs.short(name))?;
        Ok(inner.nf_message(nf))
    }

    /// Every NF `who` may see.
    pub fn list_nfs(&self, who: &Principal) -> Vec<proto::Nf> {
        let inner = self.lock();
        inner
            .desired
            .nfs
            .values()
            .filter(|nf| who.owns(&nf.tenant))
            .map(|nf| inner.nf_message(nf))
            .collect()
    }

    /// Deletes a standalone NF: stops it, resets and frees its VF.
    pub fn delete_nf(&self, who: &Principal, name: &str) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let id = Collection::Nfs.short(name).to_owned();
        let nf = inner.nf_of(who, &id)?;
        let tenant = nf.tenant.clone();
        if !nf.chain.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "{} is a hop of {}; delete the chain instead",
                nf_name(&id),
                nf.chain
            )));
        }
        let vf = parse_vf(&nf.vf).map(VfId);
        let ev = event(
            proto::EventKind::ConfigChanged,
            vf,
            &id,
            format!("NF nfs/{id} deleted"),
        );
        let ev = audited(ev, who, &tenant);
        self.commit(&mut inner, vec![Change::DeleteNf(id)], vec![ev])?;
        self.reconcile_locked(&mut inner);
        Ok(())
    }
}

/// What a new NF record of `kind` carries besides its config: an `exec` NF's
/// binary (checked to be an executable file here, on the host), an `external`
/// NF's endpoint with a fresh secret.
pub(super) fn attach_parts(
    field: &str,
    kind: &str,
    exec: Option<&proto::ExecSpec>,
) -> Result<(Option<proto::ExecSpec>, Option<proto::Endpoint>), ControlError> {
    match kind {
        validate::EXEC => {
            let exec = exec.cloned().unwrap_or_default();
            let runnable = std::fs::metadata(&exec.path).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            });
            if !runnable {
                let mut v = validate::Violations::default();
                v.add(
                    format!("{field}.exec.path"),
                    format!("{} is not an executable file on this host", exec.path),
                );
                return Err(ControlError::Invalid(v));
            }
            Ok((Some(exec), None))
        }
        validate::EXTERNAL => {
            let secret = crate::dataplane::secret::new_secret().map_err(|e| {
                ControlError::FailedPrecondition(format!("no random secret could be drawn: {e}"))
            })?;
            let endpoint = proto::Endpoint {
                secret,
                ..Default::default()
            };
            Ok((None, Some(endpoint)))
        }
        _ => Ok((None, None)),
    }
}

/// An NF that could not `what`: failed, with the reason in its status and event.
fn failed(
    run: &mut super::NfRun,
    vf: VfId,
    name: &str,
    what: &str,
    reason: String,
) -> proto::Event {
    run.status.state = proto::NfState::Failed as i32;
    let message = format!("{} could not {what}: {reason}", nf_name(name));
    run.status.reason = reason;
    event(proto::EventKind::NfFailed, Some(vf), name, message)
}

impl Inner {
    fn nf_message(&self, nf: &proto::Nf) -> proto::Nf {
        let mut status =
            self.runs
                .get(&nf.name)
                .map(|r| r.status.clone())
                .unwrap_or(proto::NfStatus {
                    state: proto::NfState::Pending as i32,
                    ..Default::default()
                });
        status.report = parse_vf(&nf.vf)
            .and_then(|vf| self.engine.view().report(VfId(vf)))
            .unwrap_or_default();
        let vf = parse_vf(&nf.vf).map(VfId);
        let endpoint = nf.endpoint.as_ref().zip(vf).map(|(e, vf)| proto::Endpoint {
            socket: self.endpoints.socket(vf).display().to_string(),
            memif_socket: self.endpoints.memif_socket(vf).display().to_string(),
            secret: e.secret.clone(),
            mac: self
                .engine
                .vf(vf)
                .map(|s| s.mac.to_string())
                .unwrap_or_default(),
        });
        proto::Nf {
            name: nf_name(&nf.name),
            status: Some(status),
            endpoint,
            ..nf.clone()
        }
    }

    /// Opens an external NF's endpoint: the socket file, and the engine's accept
    /// side with the NF's secret. The NF then waits for a process to attach.
    fn open_endpoint(&mut self, nf: &proto::Nf, vf: VfId) -> Option<proto::Event> {
        let secret = nf
            .endpoint
            .as_ref()
            .map(|e| e.secret.clone())
            .unwrap_or_default();
        let path = self.endpoints.socket(vf);
        let opened = if secret.is_empty() {
            Err("the NF has no secret stored".to_owned())
        } else {
            self.endpoints
                .open(vf)
                .map_err(|e| format!("opening {}: {e}", path.display()))
                .and_then(|(listener, memif_listener)| {
                    self.engine
                        .listen(
                            vf,
                            crate::nic::Owner::new(&nf.name),
                            secret,
                            nf.config.clone(),
                            listener,
                            memif_listener,
                        )
                        .map_err(|e| crate::error_chain(&e))
                })
        };
        let run = self.runs.get_mut(&nf.name)?;
        run.started_at = Instant::now();
        match opened {
            Ok(()) => {
                run.status.state = proto::NfState::Waiting as i32;
                run.status.pid = 0;
                run.status.reason =
                    format!("waiting for a process to attach at {}", path.display());
                Some(event(
                    proto::EventKind::NfStarted,
                    Some(vf),
                    &nf.name,
                    format!(
                        "{} waits on {} for an external NF to attach at {}",
                        nf_name(&nf.name),
                        vf_name(vf.0),
                        path.display()
                    ),
                ))
            }
            Err(reason) => Some(failed(run, vf, &nf.name, "open its endpoint", reason)),
        }
    }

    /// Spawns the NF's process and attaches it to its VF.
    pub(super) fn start(&mut self, nf: &proto::Nf) -> Option<proto::Event> {
        let vf = parse_vf(&nf.vf).map(VfId)?;
        if nf.kind == validate::EXTERNAL {
            return self.open_endpoint(nf, vf);
        }
        let spec = NfSpec {
            name: nf.name.clone(),
            kind: nf.kind.clone(),
            config: nf.config.clone(),
            binary: nf.exec.as_ref().map(|e| UserBinary {
                path: e.path.clone().into(),
                args: e.args.clone(),
                env: e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            }),
        };
        let spawned = spawn_attached(&self.engine, &self.launcher, vf, &spec)
            .map_err(|e| crate::error_chain(&e));
        let run = self.runs.get_mut(&nf.name)?;
        run.started_at = Instant::now();
        match spawned {
            Ok(process) => {
                run.status.state = proto::NfState::Running as i32;
                run.status.pid = process.pid();
                run.status.reason.clear();
                let pid = process.pid();
                run.process = Some(process);
                Some(event(
                    proto::EventKind::NfStarted,
                    Some(vf),
                    &nf.name,
                    format!(
                        "{} started on {} (pid {pid})",
                        nf_name(&nf.name),
                        vf_name(vf.0)
                    ),
                ))
            }
            Err(reason) => Some(failed(run, vf, &nf.name, "start", reason)),
        }
    }
}
