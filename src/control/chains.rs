//! Chains: created whole, updated in place, deleted whole.

use super::convert::policy_name;
use super::reconfigure::Taken;
use super::{Change, ControlError, Controller, Inner, audited, event, not_yours};
use crate::auth::Principal;
use crate::nf_kinds::Catalog;
use crate::nic::VfId;
use nfhost_api::chain_update;
use nfhost_api::names::{Collection, chain_name, nf_name, parse_vf, vf_name};
use nfhost_api::proto::{self, NfUpdateOutcome};
use nfhost_api::validate::{self};

impl Controller {
    /// Creates a chain whole, owned (with its NFs) by `who`'s tenant.
    pub fn create_chain(
        &self,
        who: &Principal,
        chain: &proto::Chain,
        validate_only: bool,
    ) -> Result<proto::Chain, ControlError> {
        let v = validate::check_chain(chain, &Catalog);
        if !v.is_empty() {
            return Err(ControlError::Invalid(v));
        }
        let mut inner = self.lock();
        let id = Collection::Chains.short(&chain.name).to_owned();
        if let Some(existing) = inner.desired.chains.get(&id) {
            if !who.owns(&existing.tenant) {
                return Err(not_yours(who, &chain_name(&id)));
            }
            return Err(ControlError::AlreadyExists(format!(
                "{} already exists; update it (UpdateChain) to reconfigure its NFs, or delete it first to replace it",
                chain_name(&id)
            )));
        }
        for nf in &chain.nfs {
            if let Some(existing) = inner.desired.nfs.get(&nf.name) {
                if !who.owns(&existing.tenant) {
                    return Err(not_yours(who, &nf_name(&nf.name)));
                }
                return Err(ControlError::AlreadyExists(format!(
                    "{} already exists; chain NF names must be unused",
                    nf_name(&nf.name)
                )));
            }
        }
        inner.check_intake(who, chain)?;
        inner.check_quota(who, chain.nfs.len(), 1)?;
        let num_vfs = inner.engine.pf()?.num_vfs;
        let vfs = inner.free_vfs(num_vfs, chain.nfs.len())?;
        let mut record = chain.clone();
        record.name = chain_name(&id);
        record.vfs = vfs.iter().map(|v| vf_name(v.0)).collect();
        record.tenant = who.tenant_of_new();
        if record.isolation == proto::Isolation::Unspecified as i32 {
            record.isolation = proto::Isolation::Strict as i32;
        }
        let parts = chain
            .nfs
            .iter()
            .enumerate()
            .map(|(i, hop)| {
                let field = format!("chain.nfs[{i}]");
                super::nfs::attach_parts(&field, &hop.kind, hop.exec.as_ref())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if validate_only {
            return Ok(record);
        }
        let mut changes = vec![Change::PutChain(record.clone())];
        for ((hop, vf), (exec, endpoint)) in chain.nfs.iter().zip(&vfs).zip(parts) {
            changes.push(Change::PutNf(Box::new(proto::Nf {
                name: hop.name.clone(),
                kind: hop.kind.clone(),
                config: hop.config.clone(),
                vf: vf_name(vf.0),
                restart_policy: chain.restart_policy,
                chain: record.name.clone(),
                status: None,
                tenant: record.tenant.clone(),
                exec,
                endpoint,
            })));
        }
        let ev = event(
            proto::EventKind::ConfigChanged,
            None,
            "",
            format!(
                "chain {} created over {}",
                record.name,
                record.vfs.join(", ")
            ),
        );
        let ev = audited(ev, who, &record.tenant);
        self.commit(&mut inner, changes, vec![ev])?;
        self.reconcile_locked(&mut inner);
        Ok(record)
    }

    /// Updates a chain in place (see [`chain_update`]): the NFs whose config changed
    /// take it in place or restart on their own VFs, the others keep running. A
    /// missing chain is created when `allow_missing` says so. The reply says which
    /// way each NF went (with `validate_only`, which way it would).
    pub fn update_chain(
        &self,
        who: &Principal,
        chain: &proto::Chain,
        mask: &[String],
        validate_only: bool,
        allow_missing: bool,
    ) -> Result<proto::UpdateChainResponse, ControlError> {
        let mut inner = self.lock();
        let id = Collection::Chains.short(&chain.name).to_owned();
        let Some(stored) = inner.desired.chains.get(&id).cloned() else {
            if allow_missing {
                drop(inner);
                let created = self.create_chain(who, chain, validate_only)?;
                let nfs = outcomes(&created, |_| (NfUpdateOutcome::Created, String::new()));
                return Ok(proto::UpdateChainResponse {
                    chain: Some(created),
                    nfs,
                });
            }
            if !who.is_admin() {
                return Err(not_yours(who, &chain_name(&id)));
            }
            return Err(ControlError::NotFound(format!(
                "{} not found; create it first (or set allow_missing)",
                chain_name(&id)
            )));
        };
        if !who.owns(&stored.tenant) {
            return Err(not_yours(who, &chain_name(&id)));
        }
        let plan = chain_update::plan(&stored, chain, mask, &Catalog).map_err(|r| match r {
            chain_update::Refusal::Invalid(v) => ControlError::Invalid(v),
            chain_update::Refusal::NotInPlace(why) => {
                ControlError::FailedPrecondition(format!("{}: {why}", chain_name(&id)))
            }
        })?;
        if validate_only || plan.is_noop() {
            let nfs = outcomes(&plan.chain, |i| {
                let outcome = if plan.reconfigured.contains(&i) {
                    NfUpdateOutcome::Reconfigure
                } else {
                    NfUpdateOutcome::Unchanged
                };
                (outcome, String::new())
            });
            return Ok(proto::UpdateChainResponse {
                chain: Some(plan.chain),
                nfs,
            });
        }
        let mut changes = vec![Change::PutChain(plan.chain.clone())];
        let mut events = Vec::new();
        for (i, hop) in plan.chain.nfs.iter().enumerate() {
            let reconfigured = plan.reconfigured.contains(&i);
            if !reconfigured && !plan.restart_policy_changed {
                continue;
            }
            let Some(mut nf) = inner.desired.nfs.get(&hop.name).cloned() else {
                continue;
            };
            nf.config.clone_from(&hop.config);
            nf.restart_policy = plan.chain.restart_policy;
            if reconfigured {
                events.push(audited(
                    event(
                        proto::EventKind::ConfigChanged,
                        parse_vf(&nf.vf).map(VfId),
                        &hop.name,
                        format!("chain {id}: nf {} reconfigured", hop.name),
                    ),
                    who,
                    &stored.tenant,
                ));
            }
            changes.push(Change::PutNf(Box::new(nf)));
        }
        if plan.restart_policy_changed {
            events.push(audited(
                event(
                    proto::EventKind::ConfigChanged,
                    None,
                    "",
                    format!(
                        "chain {id}: restart policy {} -> {}",
                        policy_name(stored.restart_policy),
                        policy_name(plan.chain.restart_policy)
                    ),
                ),
                who,
                &stored.tenant,
            ));
        }
        self.commit(&mut inner, changes, events)?;
        let reconfigured: Vec<String> = plan
            .reconfigured
            .iter()
            .filter_map(|i| plan.chain.nfs.get(*i))
            .map(|hop| hop.name.clone())
            .collect();
        let (mut inner, taken, events) = self.reconfigure_in_place(inner, &reconfigured);
        let restart: Vec<String> = taken
            .iter()
            .filter(|(_, how)| matches!(how, Taken::Restart(_)))
            .map(|(name, _)| name.clone())
            .collect();
        self.restart_reconfigured(&mut inner, &restart, events);
        let nfs = outcomes(&plan.chain, |i| {
            let how = plan.chain.nfs.get(i).and_then(|hop| taken.get(&hop.name));
            match how {
                None => (NfUpdateOutcome::Unchanged, String::new()),
                Some(Taken::InPlace) => (NfUpdateOutcome::InPlace, String::new()),
                Some(Taken::Restart(why)) => (NfUpdateOutcome::Restarted, why.clone()),
            }
        });
        Ok(proto::UpdateChainResponse {
            chain: Some(plan.chain),
            nfs,
        })
    }

    /// One chain.
    pub fn get_chain(&self, who: &Principal, name: &str) -> Result<proto::Chain, ControlError> {
        let inner = self.lock();
        inner.chain_of(who, Collection::Chains.short(name)).cloned()
    }

    /// Every chain `who` may see.
    pub fn list_chains(&self, who: &Principal) -> Vec<proto::Chain> {
        self.lock()
            .desired
            .chains
            .values()
            .filter(|c| who.owns(&c.tenant))
            .cloned()
            .collect()
    }

    /// Deletes a chain whole.
    pub fn delete_chain(&self, who: &Principal, name: &str) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let id = Collection::Chains.short(name).to_owned();
        let chain = inner.chain_of(who, &id)?.clone();
        let mut changes = vec![Change::DeleteChain(id.clone())];
        changes.extend(
            chain
                .nfs
                .iter()
                .map(|hop| Change::DeleteNf(hop.name.clone())),
        );
        let ev = event(
            proto::EventKind::ConfigChanged,
            None,
            "",
            format!("chain chains/{id} deleted"),
        );
        let ev = audited(ev, who, &chain.tenant);
        self.commit(&mut inner, changes, vec![ev])?;
        self.reconcile_locked(&mut inner);
        Ok(())
    }
}

impl Inner {
    /// The chain `id` if `who` may see it (as [`Inner::nf_of`] for NFs).
    fn chain_of(&self, who: &Principal, id: &str) -> Result<&proto::Chain, ControlError> {
        match self.desired.chains.get(id) {
            Some(c) if who.owns(&c.tenant) => Ok(c),
            _ if !who.is_admin() => Err(not_yours(who, &chain_name(id))),
            _ => Err(ControlError::NotFound(format!(
                "{} not found",
                chain_name(id)
            ))),
        }
    }

    /// Refuses a chain that would take wire frames another stored chain takes (by
    /// classifier or, for two-way chains, by return VLAN). Another tenant's chain
    /// is not named to a tenant.
    fn check_intake(&self, who: &Principal, chain: &proto::Chain) -> Result<(), ControlError> {
        let name = chain_name(Collection::Chains.short(&chain.name));
        for mine in validate::wire_intake(chain) {
            for other in self.desired.chains.values().filter(|c| c.name != name) {
                let Some(theirs) = validate::wire_intake(other)
                    .into_iter()
                    .find(|t| t.clashes(&mine))
                else {
                    continue;
                };
                let frames = match (mine.vlan, mine.dst_mac.as_str()) {
                    (0, "") => "every wire frame".to_owned(),
                    (0, mac) => format!("wire frames to {mac}"),
                    (vlan, "") => format!("wire frames of VLAN {vlan}"),
                    (vlan, mac) => format!("wire frames of VLAN {vlan} to {mac}"),
                };
                let whose = |field: &str| match field {
                    "egress" => "two-way return direction (egress.vlan)",
                    _ => "classifier",
                };
                let other_name = if who.owns(&other.tenant) {
                    other.name.clone()
                } else {
                    "another tenant's chain".to_owned()
                };
                return Err(ControlError::FailedPrecondition(format!(
                    "{other_name} already takes {frames} (its {}), which this chain's {} needs",
                    whose(theirs.field),
                    whose(mine.field)
                )));
            }
        }
        Ok(())
    }
}

/// One outcome per hop of `chain`, in order, as `of` (given the hop's index) says.
fn outcomes(
    chain: &proto::Chain,
    of: impl Fn(usize) -> (NfUpdateOutcome, String),
) -> Vec<proto::NfUpdate> {
    chain
        .nfs
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            let (outcome, reason) = of(i);
            proto::NfUpdate {
                nf: nf_name(&hop.name),
                outcome: outcome as i32,
                reason,
            }
        })
        .collect()
}
