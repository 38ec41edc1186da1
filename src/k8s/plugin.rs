//! The `DevicePlugin` service nfhost serves to the kubelet: the pool's devices
//! and their health (`ListAndWatch`), and `Allocate`, which hands a pod its VFs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kubelet_api::deviceplugin as dp;
use kubelet_api::{HEALTHY, UNHEALTHY};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::control::Controller;
use crate::control::k8s::{Device, Grant};

/// Where a pod finds its VF's endpoint directory (one device), or the directories
/// of its VFs, one per device ID, below it (several).
pub const CONTAINER_DIR: &str = "/run/nfhost";
/// The annotation that describes a pod's VFs as JSON.
pub const ANNOTATION: &str = "nfhost.io/vfs";

/// The device plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    controller: Arc<Controller>,
    devices: watch::Receiver<Vec<Device>>,
    /// When each device was last allocated (reclaim spares recent allocations,
    /// which the kubelet may not list yet).
    pub(super) allocated_at: Arc<Mutex<BTreeMap<String, Instant>>>,
}

impl Plugin {
    /// A plugin over `controller`, whose device list `devices` follows.
    pub fn new(controller: Arc<Controller>, devices: watch::Receiver<Vec<Device>>) -> Self {
        Plugin {
            controller,
            devices,
            allocated_at: Arc::default(),
        }
    }
}

fn to_kubelet(devices: &[Device]) -> dp::ListAndWatchResponse {
    dp::ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|d| dp::Device {
                id: d.id.clone(),
                health: if d.healthy { HEALTHY } else { UNHEALTHY }.into(),
                topology: None,
            })
            .collect(),
    }
}

/// What one container gets for its `grants`: a mount of each VF's directory, the
/// environment (comma-separated lists in the grants' order) and an annotation.
pub fn container_response(grants: &[Grant]) -> dp::ContainerAllocateResponse {
    let single = grants.len() == 1;
    let inside = |g: &Grant| {
        if single {
            CONTAINER_DIR.to_owned()
        } else {
            format!("{CONTAINER_DIR}/{}", g.id)
        }
    };
    let list = |f: &dyn Fn(&Grant) -> String| grants.iter().map(f).collect::<Vec<_>>().join(",");
    let mut envs = HashMap::new();
    envs.insert("NFHOST_VF".to_owned(), list(&|g| g.id.clone()));
    envs.insert(
        "NFHOST_VF_SOCKET".to_owned(),
        list(&|g| format!("{}/attach.sock", inside(g))),
    );
    envs.insert(
        "NFHOST_VF_MEMIF_SOCKET".to_owned(),
        list(&|g| format!("{}/memif.sock", inside(g))),
    );
    envs.insert("NFHOST_VF_SECRET".to_owned(), list(&|g| g.secret.clone()));
    envs.insert("NFHOST_VF_MAC".to_owned(), list(&|g| g.mac.clone()));
    let described: Vec<serde_json::Value> = grants
        .iter()
        .map(|g| {
            serde_json::json!({
                "vf": g.id,
                "socket": format!("{}/attach.sock", inside(g)),
                "memif_socket": format!("{}/memif.sock", inside(g)),
                "secret": g.secret,
                "mac": g.mac,
            })
        })
        .collect();
    let mut annotations = HashMap::new();
    annotations.insert(
        ANNOTATION.to_owned(),
        serde_json::Value::Array(described).to_string(),
    );
    dp::ContainerAllocateResponse {
        envs,
        mounts: grants
            .iter()
            .map(|g| dp::Mount {
                container_path: inside(g),
                host_path: path_text(&g.dir),
                read_only: false,
            })
            .collect(),
        devices: Vec::new(),
        annotations,
        cdi_devices: Vec::new(),
    }
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

#[tonic::async_trait]
impl dp::device_plugin_server::DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<dp::DevicePluginOptions>, Status> {
        Ok(Response::new(super::options()))
    }

    type ListAndWatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<dp::ListAndWatchResponse, Status>> + Send>,
    >;

    async fn list_and_watch(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        // The current list at once, then each new one.
        let stream = tokio_stream::wrappers::WatchStream::new(self.devices.clone())
            .map(|devices| Ok(to_kubelet(&devices)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<dp::PreferredAllocationRequest>,
    ) -> Result<Response<dp::PreferredAllocationResponse>, Status> {
        // The devices it must have, then the lowest-numbered available ones.
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|r| {
                let mut chosen = r.must_include_device_i_ds.clone();
                let mut rest: Vec<_> = r
                    .available_device_i_ds
                    .into_iter()
                    .filter(|d| !chosen.contains(d))
                    .collect();
                rest.sort_by_key(|d| crate::control::k8s::device_vf(d).map(|v| v.0));
                let want = usize::try_from(r.allocation_size).unwrap_or(0);
                chosen.extend(rest.into_iter().take(want.saturating_sub(chosen.len())));
                dp::ContainerPreferredAllocationResponse {
                    device_i_ds: chosen,
                }
            })
            .collect();
        Ok(Response::new(dp::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<dp::AllocateRequest>,
    ) -> Result<Response<dp::AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for container in request.into_inner().container_requests {
            let ids = container.devices_ids;
            let controller = self.controller.clone();
            let asked = ids.clone();
            let grants = tokio::task::spawn_blocking(move || controller.k8s_allocate(&asked))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| {
                    tracing::warn!(devices = ?ids, error = %crate::error_chain(&e), "k8s: Allocate refused");
                    crate::api::service::status(e)
                })?;
            if let Ok(mut at) = self.allocated_at.lock() {
                for id in &ids {
                    at.insert(id.clone(), Instant::now());
                }
            }
            tracing::info!(devices = ?ids, "k8s: allocated to a pod (scrubbed, new secret)");
            container_responses.push(container_response(&grants));
        }
        Ok(Response::new(dp::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<dp::PreStartContainerRequest>,
    ) -> Result<Response<dp::PreStartContainerResponse>, Status> {
        Ok(Response::new(dp::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(n: u16) -> Grant {
        Grant {
            id: format!("pf0-vf{n}"),
            dir: format!("/run/nfhost/pf0-vf{n}").into(),
            secret: format!("s{n}"),
            mac: format!("02:00:00:00:00:{n:02x}"),
        }
    }

    #[test]
    fn one_device_is_mounted_at_run_nfhost() {
        let r = container_response(&[grant(33)]);
        assert_eq!(r.mounts.len(), 1);
        assert_eq!(r.mounts[0].container_path, "/run/nfhost");
        assert_eq!(r.mounts[0].host_path, "/run/nfhost/pf0-vf33");
        assert_eq!(r.envs["NFHOST_VF"], "pf0-vf33");
        assert_eq!(r.envs["NFHOST_VF_SOCKET"], "/run/nfhost/attach.sock");
        assert_eq!(r.envs["NFHOST_VF_MEMIF_SOCKET"], "/run/nfhost/memif.sock");
        assert_eq!(r.envs["NFHOST_VF_SECRET"], "s33");
        let described: serde_json::Value =
            serde_json::from_str(&r.annotations[ANNOTATION]).unwrap();
        assert_eq!(described[0]["memif_socket"], "/run/nfhost/memif.sock");
        assert_eq!(described[0]["mac"], "02:00:00:00:00:21");
    }

    #[test]
    fn several_devices_get_a_directory_each_and_lists_in_order() {
        let r = container_response(&[grant(33), grant(40)]);
        let paths: Vec<_> = r.mounts.iter().map(|m| m.container_path.as_str()).collect();
        assert_eq!(paths, ["/run/nfhost/pf0-vf33", "/run/nfhost/pf0-vf40"]);
        assert_eq!(r.envs["NFHOST_VF"], "pf0-vf33,pf0-vf40");
        assert_eq!(
            r.envs["NFHOST_VF_SOCKET"],
            "/run/nfhost/pf0-vf33/attach.sock,/run/nfhost/pf0-vf40/attach.sock"
        );
        assert_eq!(r.envs["NFHOST_VF_SECRET"], "s33,s40");
    }
}
