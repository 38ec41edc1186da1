//! VFs: their admin config and function-level reset.

use super::convert::{admin_record, update_from_mask};
use super::{
    Change, ControlError, Controller, Inner, admins_only, audited, event, invalid, not_yours,
};
use crate::auth::Principal;
use crate::dataplane::engine::EngineError;
use crate::nic::VfId;
use nfhost_api::names::{nf_name_or_none, parse_vf, vf_name};
use nfhost_api::proto;

impl Controller {
    /// Every VF `who` may see: all for an admin, those its NFs hold for a tenant.
    pub fn list_vfs(&self, who: &Principal) -> Result<Vec<proto::Vf>, ControlError> {
        let inner = self.lock();
        let n = inner.engine.pf()?.num_vfs;
        (0..n)
            .map(VfId)
            .filter(|vf| inner.sees_vf(who, *vf))
            .map(|vf| inner.vf_message(vf))
            .collect()
    }

    /// One VF.
    pub fn get_vf(&self, who: &Principal, name: &str) -> Result<proto::Vf, ControlError> {
        let inner = self.lock();
        let vf = match inner.vf_by_name(name) {
            Ok(vf) if inner.sees_vf(who, vf) => vf,
            _ if !who.is_admin() => return Err(not_yours(who, name)),
            other => other?,
        };
        inner.vf_message(vf)
    }

    /// Writes VF admin config fields.
    pub fn update_vf(
        &self,
        who: &Principal,
        vf: &proto::Vf,
        mask: &[String],
        validate_only: bool,
    ) -> Result<proto::Vf, ControlError> {
        if !who.is_admin() {
            return Err(admins_only(who, "changing a VF's config"));
        }
        let mut inner = self.lock();
        let id = inner.vf_by_name(&vf.name)?;
        let update = update_from_mask(vf, mask)?;
        // Dry-run on a copy of the device model: the same rules as the real write.
        match inner.engine.update_vf(id, update.clone(), true) {
            Err(EngineError::Nic(err)) => return Err(invalid("vf", err.to_string())),
            other => other?,
        };
        if validate_only {
            return inner.vf_message(id);
        }
        let admin = inner.engine.update_vf(id, update, false)?;
        let record = admin_record(id, &admin);
        let ev = event(
            proto::EventKind::ConfigChanged,
            Some(id),
            "",
            format!("VF config updated: {}", mask_text(mask, vf)),
        );
        let tenant = inner.vf_tenant(id).unwrap_or_default();
        let ev = audited(ev, who, &tenant);
        self.commit(&mut inner, vec![Change::PutVf(id.0, record)], vec![ev])?;
        inner.vf_message(id)
    }

    /// Function-level reset of a VF; its NF (if any) is restarted on a clean VF.
    pub fn reset_vf(&self, who: &Principal, name: &str) -> Result<proto::Vf, ControlError> {
        if !who.is_admin() {
            return Err(admins_only(who, "resetting a VF"));
        }
        let mut inner = self.lock();
        let id = inner.vf_by_name(name)?;
        let owner = inner.owner_of(id);
        inner.engine.reset_vf(id)?;
        if let Some(nf) = owner {
            if let Some(run) = inner.runs.get_mut(&nf) {
                run.expect_exit = true;
                if let Some(p) = &run.process {
                    let _ = p.signal(rustix::process::Signal::KILL);
                }
            }
        }
        let ev = event(
            proto::EventKind::ConfigChanged,
            Some(id),
            "",
            "function-level reset".into(),
        );
        let tenant = inner.vf_tenant(id).unwrap_or_default();
        let ev = audited(ev, who, &tenant);
        self.commit(&mut inner, vec![], vec![ev])?;
        inner.vf_message(id)
    }
}

impl Inner {
    fn vf_by_name(&self, name: &str) -> Result<VfId, ControlError> {
        let index = parse_vf(name).ok_or_else(|| {
            invalid(
                "name",
                format!("{name:?} is not a VF name such as pfs/0/vfs/3"),
            )
        })?;
        let n = self.engine.pf()?.num_vfs;
        if index >= n {
            return Err(ControlError::NotFound(format!(
                "{} does not exist: this PF has {n} VFs enabled",
                vf_name(index)
            )));
        }
        Ok(VfId(index))
    }

    fn vf_message(&self, vf: VfId) -> Result<proto::Vf, ControlError> {
        let owner = self.owner_of(vf).unwrap_or_default();
        let chain = self
            .desired
            .nfs
            .get(&owner)
            .map(|n| n.chain.clone())
            .unwrap_or_default();
        let v = self.engine.vf(vf)?;
        // The admin config as stored, with what only the running VF knows: the MAC
        // in effect (the host's or the one the VF chose), its owner and its link.
        Ok(proto::Vf {
            mac: v.mac.to_string(),
            owner: nf_name_or_none(&owner),
            chain,
            link_up: v.link_up,
            ..admin_record(vf, &v.admin)
        })
    }
}

fn mask_text(mask: &[String], vf: &proto::Vf) -> String {
    if mask.is_empty() {
        return format!("all fields of {}", vf.name);
    }
    mask.join(", ")
}
