//! Giving VFs back to the pool when the pods that held them are gone: the device
//! plugin API has no "free", so the kubelet's PodResources API (`v1`, `List`) is
//! asked which devices pods hold, every `interval`; an allocated device no pod
//! holds is reclaimed (its NF deleted, its VF scrubbed). A device allocated within
//! the last two intervals is spared: the kubelet may not list its pod yet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kubelet_api::podresources as pr;

use super::kubelet::unix_channel;
use super::plugin::Plugin;
use crate::control::Controller;

/// The devices of `resource` that pods hold, from the PodResources socket.
async fn in_use(socket: &Path, resource: &str) -> Result<BTreeSet<String>, String> {
    let channel = unix_channel(socket).await.map_err(|e| e.to_string())?;
    let mut client = pr::pod_resources_lister_client::PodResourcesListerClient::new(channel);
    let pods = client
        .list(pr::ListPodResourcesRequest {})
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner()
        .pod_resources;
    Ok(pods
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
        .filter(|d| d.resource_name == resource)
        .flat_map(|d| d.device_ids.iter().cloned())
        .collect())
}

/// Reclaims every `interval` until `stop` fires.
pub async fn run(
    socket: PathBuf,
    resource: String,
    interval: Duration,
    controller: Arc<Controller>,
    plugin: Plugin,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut available = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let held = match in_use(&socket, &resource).await {
            Ok(held) => held,
            Err(e) => {
                if available != Some(false) {
                    tracing::warn!(socket = %socket.display(), error = %e, "k8s: PodResources is not available: allocated VFs stay allocated until allocated again");
                }
                available = Some(false);
                continue;
            }
        };
        if available != Some(true) {
            tracing::info!(socket = %socket.display(), every_s = interval.as_secs_f64(), "k8s: reclaiming the VFs of pods that are gone, from PodResources");
        }
        available = Some(true);
        let spare: BTreeSet<String> = plugin
            .allocated_at
            .lock()
            .map(|at| {
                at.iter()
                    .filter(|(_, when)| when.elapsed() < interval * 2)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let c = controller.clone();
        let reclaimed = tokio::task::spawn_blocking(move || c.k8s_reclaim(&held, &spare))
            .await
            .unwrap_or_default();
        for id in reclaimed {
            tracing::info!(device = %id, "k8s: reclaimed: no pod holds it; scrubbed and back in the pool");
        }
    }
}
