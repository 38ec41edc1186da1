//! The PF and its VF count.

use super::{Change, ControlError, Controller, admins_only, audited, event, invalid};
use crate::auth::Principal;
use nfhost_api::names::vf_name;
use nfhost_api::proto;

impl Controller {
    /// The PF (every principal may read it).
    pub fn get_pf(&self) -> Result<proto::Pf, ControlError> {
        let inner = self.lock();
        let wire = inner.wire.clone();
        let wire_mtu = inner.wire_mtu;
        let assigned = inner.owned_vfs().len() as u32;
        let wire_links = inner
            .engine
            .wire_links()
            .iter()
            .map(|l| proto::WireLink {
                link: l.link.clone(),
                xdp_mode: l.xdp_mode.map(|m| m.to_string()).unwrap_or_default(),
            })
            .collect();
        let pf = inner.engine.pf()?;
        Ok(proto::Pf {
            name: "pfs/0".into(),
            mac: pf.mac.to_string(),
            link_up: pf.link == crate::nic::Link::Up,
            total_vfs: u32::from(pf.total_vfs),
            num_vfs: u32::from(pf.num_vfs),
            assigned_vfs: assigned,
            wire,
            wire_mtu,
            wire_links,
        })
    }

    /// Sets the VF count.
    pub fn set_vf_count(
        &self,
        caller: &Principal,
        name: &str,
        num_vfs: u32,
        validate_only: bool,
    ) -> Result<proto::Pf, ControlError> {
        if !caller.is_admin() {
            return Err(admins_only(caller, "setting the VF count"));
        }
        if name != "pfs/0" {
            return Err(ControlError::NotFound(format!(
                "{name:?} not found: this host has one PF, pfs/0"
            )));
        }
        {
            let mut inner = self.lock();
            if num_vfs > u32::from(self.total_vfs) {
                return Err(invalid(
                    "num_vfs",
                    format!(
                        "{num_vfs} is above this PF's total_vfs of {}",
                        self.total_vfs
                    ),
                ));
            }
            let n = num_vfs as u16;
            let current = inner.engine.pf()?.num_vfs;
            if n != current {
                if current != 0 && n != 0 {
                    return Err(ControlError::FailedPrecondition(format!(
                        "{current} VFs are enabled; set the count to 0 before changing it to {n}"
                    )));
                }
                let owned = inner.owned_vfs();
                if n == 0 && !owned.is_empty() {
                    let who: Vec<String> = owned
                        .iter()
                        .map(|(vf, nf)| format!("{} owned by nfs/{nf}", vf_name(vf.0)))
                        .collect();
                    return Err(ControlError::FailedPrecondition(format!(
                        "cannot disable VFs while assigned: {}; delete those NFs first",
                        who.join(", ")
                    )));
                }
                if !validate_only {
                    let mut changes = vec![Change::PutPf(proto::Pf {
                        name: "pfs/0".into(),
                        num_vfs,
                        ..Default::default()
                    })];
                    changes.extend(inner.desired.vfs.keys().map(|i| Change::DeleteVf(*i)));
                    let ev = event(
                        proto::EventKind::ConfigChanged,
                        None,
                        "",
                        format!("VF count {current} -> {n}"),
                    );
                    let ev = audited(ev, caller, "");
                    self.commit(&mut inner, changes, vec![ev])?;
                    inner.engine.set_vf_count(n)?;
                }
            }
        }
        self.get_pf()
    }
}
