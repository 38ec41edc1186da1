//! nfhost as a Kubernetes device plugin (the kubelet's device plugin API
//! v1beta1): the VFs of `--k8s-vfs` are devices of the resource `--k8s-resource`,
//! which kubelet schedules pods onto (ARCHITECTURE.md §5, "Kubernetes").
//!
//! | module | job |
//! |---|---|
//! | [`plugin`] | the `DevicePlugin` service: devices and health, `Allocate` |
//! | [`kubelet`] | serving on `DIR/nfhost.sock`, registering on `DIR/kubelet.sock`, again after a kubelet restart |
//! | [`reclaim`] | PodResources: the VFs of pods that are gone go back to the pool |
//!
//! What a VF is and what allocating it does is the controller's
//! ([`crate::control::k8s`]); this module is the kubelet's side of it.

pub mod kubelet;
pub mod plugin;
pub mod reclaim;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubelet_api::deviceplugin as dp;

use crate::control::Controller;
use crate::control::k8s::{Device, VfPool};

/// The resource name when nothing else is said.
pub const DEFAULT_RESOURCE: &str = "nfhost.io/vf";
/// How often PodResources is asked when nothing else is said.
pub const DEFAULT_RECLAIM_EVERY: Duration = Duration::from_secs(10);
/// How often the devices' health is looked at besides on every event.
const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// How the plugin runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The kubelet's device plugin directory (`--kubelet-dir`).
    pub kubelet_dir: PathBuf,
    /// The VFs for pods (`--k8s-vfs`).
    pub pool: VfPool,
    /// The extended resource name (`--k8s-resource`).
    pub resource: String,
    /// How often PodResources is asked.
    pub reclaim_every: Duration,
}

impl Options {
    /// The PodResources socket: `pod-resources/kubelet.sock` beside the device
    /// plugin directory.
    pub fn pod_resources_socket(&self) -> PathBuf {
        self.kubelet_dir
            .parent()
            .unwrap_or(&self.kubelet_dir)
            .join("pod-resources")
            .join(kubelet_api::KUBELET_SOCKET)
    }
}

/// The plugin's options as it registers them.
fn options() -> dp::DevicePluginOptions {
    dp::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// Starts the plugin: the device list that follows the controller's state, the
/// kubelet's side, and reclaim; they end when `stop` fires. The controller's pool
/// is `options.pool` already ([`Controller::set_k8s_pool`], which `nfhost serve`
/// calls before it reconciles, so that no request ever sees a VF outside it).
pub fn start(
    controller: Arc<Controller>,
    options: Options,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (publish, devices) = tokio::sync::watch::channel(controller.k8s_devices());
    let plugin = plugin::Plugin::new(controller.clone(), devices);
    tracing::info!(dir = %options.kubelet_dir.display(), resource = %options.resource, vfs = ?options.pool.0, "k8s: device plugin on");
    vec![
        tokio::spawn(follow(controller.clone(), publish, stop.clone())),
        tokio::spawn(kubelet::run(
            options.kubelet_dir.clone(),
            options.resource.clone(),
            plugin.clone(),
            stop.clone(),
        )),
        tokio::spawn(reclaim::run(
            options.pod_resources_socket(),
            options.resource,
            options.reclaim_every,
            controller,
            plugin,
            stop,
        )),
    ]
}

/// Publishes the device list again whenever it changes: looked at on every event
/// (a VF's link set, an NF on one) and every [`HEALTH_EVERY`] (the PF's link, the
/// VF count).
async fn follow(
    controller: Arc<Controller>,
    publish: tokio::sync::watch::Sender<Vec<Device>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut events = controller.subscribe();
    loop {
        tokio::select! {
            _ = events.recv() => {}
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = stop.changed() => return,
        }
        let c = controller.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || c.k8s_devices()).await else {
            return;
        };
        publish.send_if_modified(|devices| {
            if *devices == now {
                return false;
            }
            let unhealthy: Vec<&str> = now
                .iter()
                .filter(|d| !d.healthy)
                .map(|d| d.id.as_str())
                .collect();
            tracing::info!(devices = now.len(), ?unhealthy, "k8s: device list changed");
            *devices = now;
            true
        });
    }
}
