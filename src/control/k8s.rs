//! The VFs set aside for Kubernetes pods (`--k8s-vfs`), as the device plugin
//! (`crate::k8s`) sees them: their devices and health, allocation, reclaim.
//!
//! A pod's VF is an `external` NF named `k8s-pf0-vf<N>` of the tenant
//! [`K8S_TENANT`], stored in sled like any NF: so it shows in nfctl, the dashboard
//! and `/metrics`, survives a restart of nfhost, and is never handed out twice (an
//! allocation of a VF that has one first deletes it: its VF is scrubbed, its
//! endpoint closed, and the new NF gets a fresh secret). NFs and chains created
//! over gRPC never take a pool VF.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use super::{Change, ControlError, Controller, Inner, event};
use crate::nic::VfId;
use nfhost_api::names::{parse_vf, vf_name};
use nfhost_api::proto;

/// The tenant that owns pods' VFs.
pub const K8S_TENANT: &str = "kubernetes";

/// VFs set aside for pods: an inclusive range of VF indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfPool(pub RangeInclusive<u16>);

impl VfPool {
    /// Parses `A-B` (or one index `A`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a VF range such as 32-63");
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text.trim(), text.trim()),
        };
        let a: u16 = a.parse().map_err(|_| bad())?;
        let b: u16 = b.parse().map_err(|_| bad())?;
        if a > b {
            return Err(format!("{text:?}: the first VF is after the last"));
        }
        Ok(VfPool(a..=b))
    }

    /// Whether `vf` is in the pool.
    pub fn contains(&self, vf: VfId) -> bool {
        self.0.contains(&vf.0)
    }
}

/// A pool VF as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `pf0-vf<N>`.
    pub id: String,
    /// Link up (the PF's link and the VF's link state), and its queue not halted
    /// by a broken ring.
    pub healthy: bool,
}

/// What a pod gets for one allocated VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The device ID.
    pub id: String,
    /// The VF's endpoint directory on the host.
    pub dir: std::path::PathBuf,
    /// Its secret.
    pub secret: String,
    /// Its MAC.
    pub mac: String,
}

/// A device ID from a VF.
pub fn device_id(vf: VfId) -> String {
    format!("pf0-vf{}", vf.0)
}

/// The VF of a device ID.
pub fn device_vf(id: &str) -> Option<VfId> {
    id.strip_prefix("pf0-vf")?.parse().ok().map(VfId)
}

/// The name of the NF that holds a pod's VF.
fn nf_id(vf: VfId) -> String {
    format!("k8s-pf0-vf{}", vf.0)
}

impl Controller {
    /// Sets aside `pool` for pods; `None`: no pool.
    pub fn set_k8s_pool(&self, pool: Option<VfPool>) {
        self.lock().k8s_pool = pool;
    }

    /// The pool's devices that exist (below the VF count), with their health.
    pub fn k8s_devices(&self) -> Vec<Device> {
        let inner = self.lock();
        let Some(pool) = inner.k8s_pool.clone() else {
            return Vec::new();
        };
        // One engine round trip for every VF: this runs on every event and tick.
        let vfs = inner.engine.vfs().unwrap_or_default();
        pool.0
            .filter_map(|v| Some((VfId(v), vfs.get(usize::from(v))?)))
            .map(|(vf, s)| Device {
                id: device_id(vf),
                healthy: s.link_up && !s.halted,
            })
            .collect()
    }

    /// Allocates the devices `ids` to a pod: each VF's earlier holder (a pod's NF
    /// from an earlier allocation) is deleted first, which scrubs the VF; then a new
    /// external NF with a fresh secret takes it. All or nothing: an unknown device
    /// or one held by an NF that is not a pod's refuses the whole request.
    pub fn k8s_allocate(&self, ids: &[String]) -> Result<Vec<Grant>, ControlError> {
        let mut inner = self.lock();
        let pool = inner
            .k8s_pool
            .clone()
            .ok_or_else(|| ControlError::FailedPrecondition("no --k8s-vfs pool".into()))?;
        let num_vfs = inner.engine.pf()?.num_vfs;
        let mut vfs = Vec::with_capacity(ids.len());
        for id in ids {
            let vf = device_vf(id)
                .filter(|vf| pool.contains(*vf) && vf.0 < num_vfs)
                .ok_or_else(|| {
                    ControlError::NotFound(format!("{id} is not a device of this plugin"))
                })?;
            if let Some(owner) = inner.owner_of(vf) {
                if owner != nf_id(vf) {
                    return Err(ControlError::FailedPrecondition(format!(
                        "{id} is held by nfs/{owner}, not by a pod"
                    )));
                }
            }
            vfs.push(vf);
        }
        // Earlier holders go first, in one batch: their VFs are scrubbed.
        let earlier: Vec<VfId> = vfs
            .iter()
            .copied()
            .filter(|vf| inner.owner_of(*vf).is_some())
            .collect();
        self.release_pods_vfs(
            &mut inner,
            &earlier,
            "allocated again: scrubbed and re-keyed",
        )?;
        let mut changes = Vec::new();
        let mut events = Vec::new();
        for vf in &vfs {
            // A VF that nobody held is reset too: no pod inherits any state.
            inner.engine.reset_vf(*vf)?;
            let (_, endpoint) =
                super::nfs::attach_parts("nf", nfhost_api::validate::EXTERNAL, None)?;
            changes.push(Change::PutNf(Box::new(proto::Nf {
                name: nf_id(*vf),
                kind: nfhost_api::validate::EXTERNAL.into(),
                vf: vf_name(vf.0),
                tenant: K8S_TENANT.into(),
                endpoint,
                ..Default::default()
            })));
            events.push(event(
                proto::EventKind::ConfigChanged,
                Some(*vf),
                &nf_id(*vf),
                format!("{} allocated to a pod", device_id(*vf)),
            ));
        }
        self.commit(&mut inner, changes, events)?;
        self.reconcile_locked(&mut inner);
        vfs.iter()
            .map(|vf| {
                let nf =
                    inner.desired.nfs.get(&nf_id(*vf)).ok_or_else(|| {
                        ControlError::NotFound(format!("{} vanished", nf_id(*vf)))
                    })?;
                Ok(Grant {
                    id: device_id(*vf),
                    dir: inner.endpoints.dir(*vf),
                    secret: nf
                        .endpoint
                        .as_ref()
                        .map(|e| e.secret.clone())
                        .unwrap_or_default(),
                    mac: inner.engine.vf(*vf).map(|s| s.mac.to_string())?,
                })
            })
            .collect()
    }

    /// The devices allocated to pods (their NFs are stored).
    pub fn k8s_allocated(&self) -> Vec<String> {
        let inner = self.lock();
        inner.k8s_nfs().map(|(_, vf)| device_id(vf)).collect()
    }

    /// Reclaims every allocated device not in `in_use` (the kubelet's
    /// PodResources says no pod holds it): its NF is deleted, its VF scrubbed and
    /// back in the pool. Returns the devices reclaimed.
    pub fn k8s_reclaim(&self, in_use: &BTreeSet<String>, spare: &BTreeSet<String>) -> Vec<String> {
        let mut inner = self.lock();
        let gone: Vec<VfId> = inner
            .k8s_nfs()
            .map(|(_, vf)| vf)
            .filter(|vf| !in_use.contains(&device_id(*vf)) && !spare.contains(&device_id(*vf)))
            .collect();
        let why = "reclaimed: no pod holds it any more; scrubbed";
        if let Err(e) = self.release_pods_vfs(&mut inner, &gone, why) {
            tracing::warn!(error = %crate::error_chain(&e), "k8s: reclaiming VFs failed");
            return Vec::new();
        }
        gone.into_iter().map(device_id).collect()
    }

    /// Deletes the pods' NFs on `vfs` in one batch, each with an event saying
    /// `why`, and reconciles: the VFs are scrubbed and their endpoints closed.
    fn release_pods_vfs(
        &self,
        inner: &mut Inner,
        vfs: &[VfId],
        why: &str,
    ) -> Result<(), ControlError> {
        if vfs.is_empty() {
            return Ok(());
        }
        let changes = vfs.iter().map(|vf| Change::DeleteNf(nf_id(*vf))).collect();
        let events = vfs
            .iter()
            .map(|vf| {
                let message = format!("{} {why}", device_id(*vf));
                event(
                    proto::EventKind::ConfigChanged,
                    Some(*vf),
                    &nf_id(*vf),
                    message,
                )
            })
            .collect();
        self.commit(inner, changes, events)?;
        self.reconcile_locked(inner);
        Ok(())
    }
}

impl Inner {
    /// Pods' NFs and their VFs.
    fn k8s_nfs(&self) -> impl Iterator<Item = (&proto::Nf, VfId)> {
        self.desired.nfs.values().filter_map(|nf| {
            let vf = VfId(parse_vf(&nf.vf)?);
            (nf.tenant == K8S_TENANT && nf.name == nf_id(vf)).then_some((nf, vf))
        })
    }

    /// Whether `vf` is set aside for pods.
    pub(super) fn in_k8s_pool(&self, vf: VfId) -> bool {
        self.k8s_pool.as_ref().is_some_and(|p| p.contains(vf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse_and_bad_ones_say_why() {
        assert_eq!(VfPool::parse("32-63").unwrap(), VfPool(32..=63));
        assert_eq!(VfPool::parse("5").unwrap(), VfPool(5..=5));
        assert!(VfPool::parse("9-3").unwrap_err().contains("after"));
        assert!(VfPool::parse("a-b").unwrap_err().contains("VF range"));
        assert!(VfPool::parse("1-70000").is_err());
        assert!(VfPool(32..=63).contains(VfId(40)));
        assert!(!VfPool(32..=63).contains(VfId(31)));
    }

    #[test]
    fn device_ids_name_vfs_both_ways() {
        assert_eq!(device_id(VfId(33)), "pf0-vf33");
        assert_eq!(device_vf("pf0-vf33"), Some(VfId(33)));
        assert_eq!(device_vf("pf1-vf3"), None);
        assert_eq!(device_vf("pf0-vfx"), None);
    }
}
