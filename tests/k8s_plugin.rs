//! nfhost as a Kubernetes device plugin, against a fake kubelet written here: a
//! `Registration` server on `DIR/kubelet.sock` and a `PodResourcesLister` on
//! `pod-resources/kubelet.sock` beside `DIR`, tonic on both sides, over Unix
//! sockets in a temporary directory (no real kubelet runs here).
//!
//! Checked: registration (version, endpoint, resource); `ListAndWatch` shows the
//! pool and follows a VF's link within 1 s; `Allocate` answers the mount, the
//! environment and the annotation, and the socket it names takes an attach with
//! the secret it gives; allocating the device again re-keys it (the old secret is
//! refused); gRPC-created NFs never take a pool VF; a restarted nfhost keeps the
//! allocation and registers again; a restarted kubelet (its sockets deleted) gets
//! a new `Register` within 5 s; a pod gone from PodResources has its VF reclaimed.

#[path = "common/memif_client.rs"]
mod memif_client;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubelet_api::deviceplugin as dp;
use kubelet_api::podresources as pr;
use nfhost_api::proto;
use server::{Clients, Server, TempDir, get_nf, set_vf_link, wait_until};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

const RESOURCE: &str = "nfhost.io/vf";

/// The kubelet's `Registration` service: every request goes to the test.
struct Registration(mpsc::UnboundedSender<dp::RegisterRequest>);

#[tonic::async_trait]
impl dp::registration_server::Registration for Registration {
    async fn register(
        &self,
        request: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(dp::Empty {}))
    }
}

/// The kubelet's PodResources: the pods the test says exist.
#[derive(Clone, Default)]
struct Pods(Arc<Mutex<Vec<pr::PodResources>>>);

#[tonic::async_trait]
impl pr::pod_resources_lister_server::PodResourcesLister for Pods {
    async fn list(
        &self,
        _: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources: self.0.lock().unwrap().clone(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get(
        &self,
        _: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

impl Pods {
    fn set(&self, devices: &[&str]) {
        let pods = devices
            .iter()
            .map(|id| pr::PodResources {
                name: format!("pod-{id}"),
                namespace: "default".into(),
                containers: vec![pr::ContainerResources {
                    name: "nf".into(),
                    devices: vec![pr::ContainerDevices {
                        resource_name: RESOURCE.into(),
                        device_ids: vec![(*id).to_owned()],
                        topology: None,
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        *self.0.lock().unwrap() = pods;
    }
}

/// A fake kubelet: its sockets, and the registrations it got.
struct Kubelet {
    registered: mpsc::UnboundedReceiver<dp::RegisterRequest>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Kubelet {
    /// Serves `kubelet.sock` in `dir` (and PodResources beside it, if `pods`).
    fn start(rt: &tokio::runtime::Runtime, dir: &Path, pods: Option<Pods>) -> Kubelet {
        let (tx, registered) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let _guard = rt.enter();
        let sock = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let pod_listener = pods.map(|pods| {
            let pr_dir = dir.parent().unwrap().join("pod-resources");
            std::fs::create_dir_all(&pr_dir).unwrap();
            let pr_sock = pr_dir.join("kubelet.sock");
            let _ = std::fs::remove_file(&pr_sock);
            (tokio::net::UnixListener::bind(&pr_sock).unwrap(), pods)
        });
        rt.spawn(async move {
            let (stop_pr, stopped_pr) = tokio::sync::oneshot::channel::<()>();
            if let Some((listener, pods)) = pod_listener {
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(
                            pr::pod_resources_lister_server::PodResourcesListerServer::new(pods),
                        )
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::UnixListenerStream::new(listener),
                            async {
                                let _ = stopped_pr.await;
                            },
                        ),
                );
            }
            let _ = tonic::transport::Server::builder()
                .add_service(dp::registration_server::RegistrationServer::new(
                    Registration(tx),
                ))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
            let _ = stop_pr.send(());
        });
        Kubelet {
            registered,
            stop: Some(stop),
        }
    }

    /// The next registration, waiting at most `secs`.
    fn next_registration(
        &mut self,
        rt: &tokio::runtime::Runtime,
        secs: u64,
    ) -> dp::RegisterRequest {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(secs), self.registered.recv()).await
        })
        .unwrap_or_else(|_| panic!("no Register within {secs} s"))
        .expect("registration channel open")
    }

    /// Stops, and deletes every socket in `dir` as a restarting kubelet does.
    fn restart_deleting_sockets(mut self, dir: &Path) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn plugin(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
) -> dp::device_plugin_client::DevicePluginClient<tonic::transport::Channel> {
    let channel = rt
        .block_on(nfhost::k8s::kubelet::unix_channel(&dir.join("nfhost.sock")))
        .expect("the plugin's socket");
    dp::device_plugin_client::DevicePluginClient::new(channel)
}

fn allocate(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    ids: &[&str],
) -> dp::ContainerAllocateResponse {
    let mut client = plugin(rt, dir);
    let mut r = rt
        .block_on(client.allocate(dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            }],
        }))
        .expect("Allocate")
        .into_inner();
    r.container_responses.remove(0)
}

fn nf_names(rt: &tokio::runtime::Runtime, c: &mut Clients) -> Vec<(String, String)> {
    rt.block_on(c.nf.list_nfs(proto::ListNfsRequest::default()))
        .unwrap()
        .into_inner()
        .nfs
        .into_iter()
        .map(|n| (n.name, n.vf))
        .collect()
}

#[test]
fn nfhost_is_a_device_plugin_to_a_fake_kubelet() {
    let data = TempDir::new("k8s");
    let root = data.0.join("kubelet");
    let dir: PathBuf = root.join("device-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pods = Pods::default();
    let mut kubelet = Kubelet::start(&rt, &dir, Some(pods.clone()));
    let dir_arg = dir.display().to_string();
    let flags = [
        "--wire",
        "gen",
        "--vfs",
        "8",
        "--kubelet-dir",
        &dir_arg,
        "--k8s-vfs",
        "4-7",
        "--k8s-reclaim-every",
        "1",
    ];
    let server = Server::start(&data.0, &flags);
    let mut c = Clients::new(server.channel(&rt));

    // Registration.
    let r = kubelet.next_registration(&rt, 10);
    assert_eq!(r.version, "v1beta1");
    assert_eq!(r.endpoint, "nfhost.sock");
    assert_eq!(r.resource_name, RESOURCE);

    // ListAndWatch: the pool, healthy; a link down shows within 1 s, and up again.
    let mut watch = rt
        .block_on(plugin(&rt, &dir).list_and_watch(dp::Empty {}))
        .unwrap()
        .into_inner();
    let mut next = |within: Duration| {
        rt.block_on(async { tokio::time::timeout(within, watch.message()).await })
            .expect("a device list in time")
            .unwrap()
            .expect("the stream goes on")
            .devices
    };
    let devices = next(Duration::from_secs(5));
    let ids: Vec<_> = devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["pf0-vf4", "pf0-vf5", "pf0-vf6", "pf0-vf7"]);
    assert!(devices.iter().all(|d| d.health == "Healthy"), "{devices:?}");
    set_vf_link(&rt, &mut c, "pfs/0/vfs/5", false);
    let devices = next(Duration::from_secs(1));
    let vf5 = devices.iter().find(|d| d.id == "pf0-vf5").unwrap();
    assert_eq!(vf5.health, "Unhealthy");
    set_vf_link(&rt, &mut c, "pfs/0/vfs/5", true);
    let devices = next(Duration::from_secs(1));
    assert!(devices.iter().all(|d| d.health == "Healthy"), "{devices:?}");

    // Allocate: the mount, the environment, the annotation; the socket takes the
    // secret.
    pods.set(&["pf0-vf4"]);
    let first = allocate(&rt, &dir, &["pf0-vf4"]);
    assert_eq!(first.mounts.len(), 1);
    assert_eq!(first.mounts[0].container_path, "/run/nfhost");
    let host_dir = PathBuf::from(&first.mounts[0].host_path);
    assert!(host_dir.ends_with("pf0-vf4"), "{host_dir:?}");
    assert_eq!(first.envs["NFHOST_VF"], "pf0-vf4");
    assert_eq!(first.envs["NFHOST_VF_SOCKET"], "/run/nfhost/attach.sock");
    assert_eq!(
        first.envs["NFHOST_VF_MEMIF_SOCKET"],
        "/run/nfhost/memif.sock"
    );
    assert_eq!(first.envs["NFHOST_VF_MAC"].len(), 17);
    let secret = first.envs["NFHOST_VF_SECRET"].clone();
    assert_eq!(secret.len(), 23);
    let described: serde_json::Value =
        serde_json::from_str(&first.annotations["nfhost.io/vfs"]).unwrap();
    assert_eq!(described[0]["secret"], secret.as_str());
    let memif = host_dir.join("memif.sock");
    let client = memif_client::connect(&memif, &secret);
    let nf = get_nf(&rt, &mut c, "k8s-pf0-vf4");
    assert_eq!(nf.tenant, "kubernetes");
    wait_until("the pod's NF runs", 10, || {
        get_nf(&rt, &mut c, "k8s-pf0-vf4").status.unwrap().state == proto::NfState::Running as i32
    });

    // Allocated again (the kubelet moved it): scrubbed, a new secret; the old one
    // is refused, the new one taken.
    let again = allocate(&rt, &dir, &["pf0-vf4"]);
    let new_secret = again.envs["NFHOST_VF_SECRET"].clone();
    assert_ne!(new_secret, secret);
    wait_until("the old client cut off", 10, || {
        client.control.recv().is_none()
    });
    let (old, _) = memif_client::Control::connect(&memif);
    assert_eq!(memif_client::reason(old.init(&secret)), "Incorrect secret");
    let mut client = memif_client::connect(&memif, &new_secret);
    // A pod whose NF breaks its ring: the device is unhealthy until the VF is
    // scrubbed (here, when the client goes).
    let jump = client.tx_head.wrapping_add(1000);
    client.s2m.store_head(jump);
    client.tx_irq.notify().unwrap();
    let devices = next(Duration::from_secs(1));
    let vf4 = devices.iter().find(|d| d.id == "pf0-vf4").unwrap();
    assert_eq!(vf4.health, "Unhealthy", "a halted queue");
    client.tx_head = jump;
    let held: Vec<_> = nf_names(&rt, &mut c)
        .into_iter()
        .filter(|(_, vf)| vf == "pfs/0/vfs/4")
        .collect();
    assert_eq!(held.len(), 1, "one holder of VF 4: {held:?}");
    drop(client);
    let devices = next(Duration::from_secs(2));
    assert!(devices.iter().all(|d| d.health == "Healthy"), "{devices:?}");

    // gRPC-created NFs take VFs 0-3 and no pool VF.
    for i in 0..4 {
        rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
            nf: Some(proto::Nf {
                name: format!("nfs/grpc{i}"),
                kind: "l2fwd".into(),
                ..Default::default()
            }),
            validate_only: false,
        }))
        .expect("a non-pool VF");
    }
    let full = rt
        .block_on(c.nf.create_nf(proto::CreateNfRequest {
            nf: Some(proto::Nf {
                name: "nfs/grpc4".into(),
                kind: "l2fwd".into(),
                ..Default::default()
            }),
            validate_only: false,
        }))
        .unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");
    let pooled = rt
        .block_on(c.nf.create_nf(proto::CreateNfRequest {
            nf: Some(proto::Nf {
                name: "nfs/grpc5".into(),
                kind: "l2fwd".into(),
                vf: "pfs/0/vfs/6".into(),
                ..Default::default()
            }),
            validate_only: false,
        }))
        .unwrap_err();
    assert_eq!(pooled.code(), tonic::Code::FailedPrecondition, "{pooled:?}");
    assert!(pooled.message().contains("Kubernetes"), "{pooled:?}");
    let mut chain = nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))
        .expect("example chain parses");
    chain.nfs.truncate(1);
    let no_chain = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(chain),
            validate_only: false,
        }))
        .unwrap_err();
    assert_eq!(
        no_chain.code(),
        tonic::Code::ResourceExhausted,
        "{no_chain:?}"
    );
    for (_, vf) in nf_names(&rt, &mut c) {
        let n: u16 = vf.rsplit('/').next().unwrap().parse().unwrap();
        assert!(n < 4 || vf == "pfs/0/vfs/4", "{vf} taken outside a pod");
    }

    // nfhost restarted: registers again, and the pod keeps its VF and secret.
    server.stop();
    let server = Server::start(&data.0, &flags);
    let mut c = Clients::new(server.channel(&rt));
    let r = kubelet.next_registration(&rt, 10);
    assert_eq!(r.resource_name, RESOURCE);
    let nf = get_nf(&rt, &mut c, "k8s-pf0-vf4");
    assert_eq!(nf.endpoint.unwrap().secret, new_secret);
    let client = memif_client::connect(&memif, &new_secret);
    drop(client);

    // The kubelet restarted (every socket deleted): Register within 5 s.
    kubelet.restart_deleting_sockets(&dir);
    let t0 = Instant::now();
    let mut kubelet = Kubelet::start(&rt, &dir, Some(pods.clone()));
    let r = kubelet.next_registration(&rt, 5);
    assert_eq!(r.version, "v1beta1");
    println!(
        "registered again {:?} after the kubelet restarted",
        t0.elapsed()
    );
    assert!(dir.join("nfhost.sock").exists());
    assert!(
        get_nf(&rt, &mut c, "k8s-pf0-vf4").endpoint.is_some(),
        "the allocation survives"
    );

    // The pod is gone from PodResources: its VF is reclaimed.
    pods.set(&[]);
    wait_until("the VF reclaimed", 15, || {
        !nf_names(&rt, &mut c)
            .iter()
            .any(|(name, _)| name == "nfs/k8s-pf0-vf4")
    });
    assert!(!host_dir.exists(), "the endpoint is gone with it");
    drop(kubelet);
    server.stop();
}
