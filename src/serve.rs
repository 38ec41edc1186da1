//! `nfhost serve`: the service. Opens the desired state, starts the NIC engine,
//! reconciles, and serves the gRPC API (plus the standard health and reflection
//! services) until SIGTERM or SIGINT.
//!
//! Health reports NOT_SERVING while starting (until the stored state has been
//! reconciled) and while shutting down.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::api::service::Api;
use crate::control::{ControlError, Controller, TICK};
use crate::dataplane::engine::{EngineConfig, EngineError, EngineHandle, WireConfig};
use crate::dataplane::r#gen::GenConfig;
use crate::dataplane::host_wire;
use crate::store::{Store, StoreError};
use nfhost_api::proto;

/// Default gRPC listen address.
pub const DEFAULT_GRPC: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051));
/// Default dashboard and /metrics listen address.
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "nfhost-data";
/// Default number of VFs to enable when the stored state has none.
pub const DEFAULT_VFS: u16 = 64;
/// Default wire.
pub const DEFAULT_WIRE: &str = "gen";
/// Default rate of the gen wire, packets per second.
pub const DEFAULT_GEN_RATE: u64 = 100_000;

/// `text [default: value]`, the way clap shows a default of its own: the values
/// come from the constants above (and [`GenConfig`], [`host_wire`]), so `--help`
/// and the settings in effect cannot disagree.
///
/// [`host_wire`]: crate::dataplane::host_wire
fn help(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// Settings of `nfhost serve`, one struct for both sources: its flags (clap) and
/// its `--config` TOML file (serde), whose keys are the flags' names with `_` for
/// `-` (`data_dir = "/var/lib/nfhost"`). A key the file does not know is an error
/// naming it. [`ServeSettings::with_flags`] puts the flags given over the file; what
/// neither sets is `None` here, and the accessors ([`ServeSettings::grpc_addr`],
/// …) fill in the defaults that `--help` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    #[arg(long, help = help("gRPC listen address", DEFAULT_GRPC))]
    pub grpc: Option<SocketAddr>,
    #[arg(long, help = help("Dashboard and /metrics listen address", DEFAULT_HTTP))]
    pub http: Option<SocketAddr>,
    #[arg(long, help = help("Where desired state lives", format!("./{DEFAULT_DATA_DIR}")))]
    pub data_dir: Option<PathBuf>,
    #[arg(long, help = help("VFs to enable when no count is stored", DEFAULT_VFS))]
    pub vfs: Option<u16>,
    #[arg(long, help = help(
        "The uplink: gen, none, or host interfaces: tap:NAME (a TAP device nfhost \
         opens or creates), afpacket:IFNAME (an existing interface, through a packet \
         socket) and afxdp:IFNAME (an existing interface, through an AF_XDP socket \
         and nfhost's XDP program), each optionally @VLAN to make it an access port \
         of that VLAN, comma-separated",
        DEFAULT_WIRE,
    ))]
    pub wire: Option<String>,
    #[arg(long, help = help(
        format!("MTU of a host wire's links, at most {}", host_wire::MAX_MTU).as_str(),
        host_wire::DEFAULT_MTU,
    ))]
    pub mtu: Option<u16>,
    #[arg(long, help = help("Generated packets per second, 0 = flat out", DEFAULT_GEN_RATE))]
    pub gen_rate: Option<u64>,
    #[arg(long, help = help(
        "Generated frame size in bytes, FCS included",
        GenConfig::default().frame_size,
    ))]
    pub gen_size: Option<usize>,
    #[arg(long, value_delimiter = ',', help = help("Comma-separated VLANs to generate on", "untagged"))]
    pub gen_vlans: Option<Vec<u16>>,
    #[arg(long, help = help("Distinct flows", GenConfig::default().flows))]
    pub gen_flows: Option<u32>,
    #[arg(long, help = help(
        "One destination ADDR:PORT for every generated flow, e.g. a load balancer's VIP",
        "a destination per flow",
    ))]
    pub gen_dst: Option<SocketAddrV4>,
    #[arg(long, value_name = "FILE", help = help(
        "Principals (admins and tenants) and the SHA-256 of their bearer tokens, TOML; \
         re-read on SIGHUP",
        "no authentication: every caller is an admin, on loopback only",
    ))]
    pub auth: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_key", help = help(
        "PEM certificate (chain) of both listeners: gRPC and the dashboard speak TLS",
        "cleartext",
    ))]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert", help = help(
        "PEM private key of --tls-cert",
        "none",
    ))]
    pub tls_key: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert", help = help(
        "PEM CA whose client certificates are accepted (mutual TLS); the subject CN \
         names the principal (with --auth, one of the file's; without, an admin)",
        "no client certificates",
    ))]
    pub client_ca: Option<PathBuf>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help = help(
        "Serve a non-loopback address without --auth or --client-ca (anyone who \
         reaches it is an admin)",
        "false",
    ))]
    pub insecure: Option<bool>,
    #[arg(long, value_name = "USER", help = help(
        "User (name or uid) NF processes run as when nfhost runs as root",
        crate::dataplane::sandbox::DEFAULT_NF_USER,
    ))]
    pub nf_user: Option<String>,
    #[arg(long, value_name = "GROUP", help = help(
        "Group (name or gid) NF processes run as",
        "the NF user's primary group",
    ))]
    pub nf_group: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help = help(
        "Let --nf-user be root (NF processes then keep every privilege)",
        "false",
    ))]
    pub allow_root_nfs: Option<bool>,
    #[arg(long, value_name = "MS", help = help(
        "Milliseconds frames may wait on an NF's rx ring while its heartbeat stands \
         still before the NF is unresponsive (and a process NF is restarted); 0 = never",
        crate::control::liveness::DEFAULT_TIMEOUT.as_millis(),
    ))]
    pub nf_liveness_ms: Option<u64>,
    #[arg(long, value_name = "DIR", help = help(
        "Where external NFs' endpoints live: a directory per VF with its attach socket",
        crate::control::endpoints::DEFAULT_RUN_DIR,
    ))]
    pub run_dir: Option<PathBuf>,
    #[arg(long, value_name = "GROUP", help = help(
        "Group (name or gid) that may connect to external NFs' endpoints (sockets 0660)",
        "root only (sockets 0600)",
    ))]
    pub endpoint_group: Option<String>,
    #[arg(long, value_name = "DIR", help = help(
        "The kubelet's device plugin directory (usually /var/lib/kubelet/device-plugins): \
         serve the pool of --k8s-vfs to pods as a device plugin",
        "off",
    ))]
    pub kubelet_dir: Option<PathBuf>,
    #[arg(long, value_name = "RANGE", help = help(
        "VFs set aside for Kubernetes pods, such as 32-63 (gRPC-created NFs and chains \
         never take them); needs --kubelet-dir",
        "none",
    ))]
    pub k8s_vfs: Option<String>,
    #[arg(long, value_name = "NAME", help = help(
        "The extended resource pods request",
        crate::k8s::DEFAULT_RESOURCE,
    ))]
    pub k8s_resource: Option<String>,
    #[arg(long, value_name = "SECONDS", help = help(
        "How often the kubelet's PodResources is asked which pods still hold a VF",
        crate::k8s::DEFAULT_RECLAIM_EVERY.as_secs(),
    ))]
    pub k8s_reclaim_every: Option<u64>,
}

impl ServeSettings {
    /// The device plugin's options, if `--kubelet-dir` is given; refuses the k8s
    /// flags without it, and it without a pool.
    pub fn k8s(&self) -> Result<Option<crate::k8s::Options>, ServeError> {
        let bad = |why: &str| Err(ServeError::Security(why.to_owned()));
        let Some(kubelet_dir) = self.kubelet_dir.clone() else {
            if self.k8s_vfs.is_some() || self.k8s_resource.is_some() {
                return bad("--k8s-vfs and --k8s-resource need --kubelet-dir");
            }
            return Ok(None);
        };
        let Some(range) = &self.k8s_vfs else {
            return bad("--kubelet-dir needs --k8s-vfs: the VFs to offer pods");
        };
        let pool = crate::control::k8s::VfPool::parse(range)
            .map_err(|e| ServeError::Security(format!("--k8s-vfs: {e}")))?;
        let reclaim_every =
            self.k8s_reclaim_every
                .map_or(Ok(crate::k8s::DEFAULT_RECLAIM_EVERY), |s| match s {
                    0 => Err(ServeError::Security(
                        "--k8s-reclaim-every 0: give at least 1 second".into(),
                    )),
                    s => Ok(std::time::Duration::from_secs(s)),
                })?;
        Ok(Some(crate::k8s::Options {
            kubelet_dir,
            pool,
            resource: self
                .k8s_resource
                .clone()
                .unwrap_or_else(|| crate::k8s::DEFAULT_RESOURCE.to_owned()),
            reclaim_every,
        }))
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ServeError::ParseConfig {
            path: path.to_owned(),
            source,
        })
    }

    /// `self` (read from a file) with every flag given in `flags` over it; `flags`
    /// are the matches of a command built with these settings' arguments.
    pub fn with_flags(mut self, flags: &clap::ArgMatches) -> Result<Self, ServeError> {
        // clap's derived update sets only the fields whose flags were given: they
        // have no clap default, so a flag left out leaves the file's value.
        clap::FromArgMatches::update_from_arg_matches(&mut self, flags)
            .map_err(ServeError::Flags)?;
        Ok(self)
    }

    /// The gRPC address in effect.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.unwrap_or(DEFAULT_GRPC)
    }

    /// The dashboard address in effect.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.unwrap_or(DEFAULT_HTTP)
    }

    /// The data directory in effect.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The VF count to enable when the stored state has none.
    pub fn num_vfs(&self) -> u16 {
        self.vfs.unwrap_or(DEFAULT_VFS)
    }

    /// Checks the security settings: TLS files in pairs, and no unauthenticated
    /// listener beyond loopback unless `--insecure`. Warns of what is allowed
    /// but risky.
    pub fn check_security(&self) -> Result<(), ServeError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServeError::Security(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
        if self.client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ServeError::Security(
                "--client-ca needs --tls-cert and --tls-key: client certificates come with TLS"
                    .into(),
            ));
        }
        let authenticated = self.auth.is_some() || self.client_ca.is_some();
        let insecure = self.insecure.unwrap_or(false);
        for (flag, addr) in [("--grpc", self.grpc_addr()), ("--http", self.http_addr())] {
            if let Some(why) = crate::auth::listen::refusal(flag, &addr, authenticated, insecure) {
                return Err(ServeError::Security(why));
            }
            if !crate::auth::listen::is_loopback(&addr) {
                if !authenticated {
                    tracing::warn!(%addr, flag, "--insecure: serving without authentication beyond loopback; anyone who reaches it is an admin");
                } else if self.tls_cert.is_none() {
                    tracing::warn!(%addr, flag, "serving beyond loopback without TLS: bearer tokens cross the network in cleartext; give --tls-cert and --tls-key");
                }
            }
        }
        Ok(())
    }

    /// Where external NFs' endpoints live, from `--run-dir` and `--endpoint-group`.
    pub fn endpoints(&self) -> Result<crate::control::endpoints::Endpoints, ServeError> {
        let group = match &self.endpoint_group {
            None => None,
            Some(g) => Some(crate::dataplane::sandbox::group_id(g)?),
        };
        Ok(crate::control::endpoints::Endpoints {
            run_dir: self
                .run_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::control::endpoints::DEFAULT_RUN_DIR)),
            group,
        })
    }

    /// The liveness timeout in effect ([`crate::control::liveness`]).
    pub fn nf_liveness_timeout(&self) -> std::time::Duration {
        self.nf_liveness_ms.map_or(
            crate::control::liveness::DEFAULT_TIMEOUT,
            std::time::Duration::from_millis,
        )
    }

    /// Who NF processes run as, from `--nf-user`, `--nf-group` and
    /// `--allow-root-nfs`; `None` when they keep nfhost's own user.
    pub fn nf_user(&self) -> Result<Option<crate::dataplane::sandbox::NfUser>, ServeError> {
        let user = self
            .nf_user
            .as_deref()
            .unwrap_or(crate::dataplane::sandbox::DEFAULT_NF_USER);
        let allow_root = self.allow_root_nfs.unwrap_or(false);
        let resolved =
            crate::dataplane::sandbox::resolve(user, self.nf_group.as_deref(), allow_root)?;
        match resolved {
            Some(u) => tracing::info!(
                user,
                uid = u.uid,
                gid = u.gid,
                "NF processes run unprivileged"
            ),
            None if rustix::process::geteuid().is_root() => {
                tracing::warn!(user, "--allow-root-nfs: NF processes run as root")
            }
            None => tracing::info!(
                uid = rustix::process::geteuid().as_raw(),
                "nfhost is not root: NF processes run as its own user"
            ),
        }
        Ok(resolved)
    }

    /// Who may call, from `--auth` and `--client-ca`.
    pub fn authenticator(&self) -> Result<crate::auth::Authenticator, ServeError> {
        use crate::auth::Authenticator;
        match (&self.auth, &self.client_ca) {
            (Some(path), _) => Ok(Authenticator::from_file(path.clone())?),
            (None, Some(_)) => Ok(Authenticator::certificates_only()),
            (None, None) => Ok(Authenticator::open()),
        }
    }

    /// The TLS files, read and checked; `None` without `--tls-cert`.
    pub fn tls(&self) -> Result<Option<crate::auth::tls::TlsMaterial>, ServeError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        // Without --auth a client certificate is the only credential.
        let required = self.auth.is_none();
        Ok(Some(crate::auth::tls::TlsMaterial::load(
            cert,
            key,
            self.client_ca.as_deref(),
            required,
        )?))
    }

    /// The wire's name in effect, as given (`gen`, `none`, or host links).
    pub fn wire_name(&self) -> &str {
        self.wire.as_deref().unwrap_or(DEFAULT_WIRE)
    }

    /// The wire in effect.
    pub fn wire_config(&self) -> Result<WireConfig, ServeError> {
        match self.wire_name() {
            "none" => Ok(WireConfig::None),
            "gen" => {
                let d = GenConfig::default();
                Ok(WireConfig::Gen(GenConfig {
                    rate_pps: self.gen_rate.unwrap_or(DEFAULT_GEN_RATE),
                    frame_size: self.gen_size.unwrap_or(d.frame_size),
                    vlans: self.gen_vlans.clone().unwrap_or_default(),
                    flows: self.gen_flows.unwrap_or(d.flows),
                    dst: self.gen_dst.map(|a| (a.ip().octets(), a.port())),
                    ..d
                }))
            }
            links => {
                let mtu = self.mtu.unwrap_or(host_wire::DEFAULT_MTU);
                host_wire::HostWireConfig::parse(links, mtu)
                    .map(WireConfig::Host)
                    .map_err(|source| ServeError::Wire {
                        wire: links.to_owned(),
                        source,
                    })
            }
        }
    }
}

/// The service could not start or failed.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The NF user could not be resolved, or is root without `--allow-root-nfs`.
    #[error(transparent)]
    Sandbox(#[from] crate::dataplane::sandbox::SandboxError),
    /// The settings file could not be read.
    #[error("reading settings {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The settings file is not valid.
    #[error("settings {path} are invalid")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A wire that cannot be used.
    #[error(
        "wire {wire:?} refused (use gen, none, or tap:NAME / afpacket:IFNAME / afxdp:IFNAME links with an optional @VLAN, comma-separated)"
    )]
    Wire {
        /// As given.
        wire: String,
        /// Why.
        #[source]
        source: crate::dataplane::host_wire::WireSpecError,
    },
    /// The flags could not be taken over the settings file (a clap bug: the
    /// flags were parsed by these settings' own arguments).
    #[error("reading the flags")]
    Flags(#[source] clap::Error),
    /// The desired state could not be opened.
    #[error("opening desired state")]
    Store(#[from] StoreError),
    /// The engine failed to start.
    #[error("starting the NIC engine")]
    Engine(#[from] EngineError),
    /// The controller failed to start.
    #[error("starting the control plane")]
    Control(#[from] ControlError),
    /// The gRPC address could not be bound.
    #[error("listening for gRPC on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Security settings that cannot be served.
    #[error("{0}")]
    Security(String),
    /// The principals file could not be used.
    #[error("authentication")]
    Principals(#[from] crate::auth::principals::PrincipalsError),
    /// The TLS files could not be used.
    #[error("TLS")]
    Tls(#[from] crate::auth::tls::TlsError),
    /// The gRPC server failed.
    #[error("gRPC server")]
    Grpc(#[from] tonic::transport::Error),
    /// Runtime setup failed.
    #[error("runtime")]
    Io(#[from] std::io::Error),
}

/// The longest a gRPC call may take before it is answered DEADLINE_EXCEEDED
/// (UpdateChain waits up to 5 s for in-place reconfiguration, then restarts).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Calls one connection may have in flight; beyond that a call is shed with
/// RESOURCE_EXHAUSTED rather than queued.
pub const CONCURRENT_CALLS_PER_CONNECTION: usize = 64;

/// How long in-flight calls may take to finish at shutdown.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A started control plane, ready to serve.
#[derive(Debug)]
pub struct Started {
    /// The controller.
    pub controller: Arc<Controller>,
    /// Where desired state lives.
    pub data_dir: PathBuf,
    /// VFs enabled.
    pub num_vfs: u16,
    /// Who may call (both listeners).
    pub authenticator: Arc<crate::auth::Authenticator>,
    /// TLS of both listeners, if any.
    pub tls: Option<crate::auth::tls::TlsMaterial>,
    /// The device plugin, if `--kubelet-dir` is given (its pool is the
    /// controller's already).
    pub k8s: Option<crate::k8s::Options>,
}

/// Opens the desired state, starts the engine and the controller (blocking; call it
/// outside an async runtime).
pub fn start(settings: &ServeSettings, exe: PathBuf) -> Result<Started, ServeError> {
    settings.check_security()?;
    // Credentials before anything starts: a bad file stops the service here.
    let authenticator = Arc::new(settings.authenticator()?);
    let launcher = crate::dataplane::nf_process::Launcher {
        exe,
        user: settings.nf_user()?,
    };
    let tls = settings.tls()?;
    let data_dir = settings.data_dir();
    let store = Store::open(&data_dir)?;
    let stored = store.load()?;
    let num_vfs = stored
        .pf
        .as_ref()
        .map_or(settings.num_vfs(), |pf| pf.num_vfs as u16);
    let wire = settings.wire_config()?;
    let (wire_name, wire_mtu) = match &wire {
        WireConfig::Host(host) => (host.to_string(), u32::from(host.mtu)),
        _ => (settings.wire_name().to_owned(), 0),
    };
    let engine = EngineHandle::start(EngineConfig {
        num_vfs,
        wire,
        ..Default::default()
    })?;
    let controller = Arc::new(Controller::new(
        store, engine, launcher, wire_name, wire_mtu,
    )?);
    controller.set_liveness_timeout(settings.nf_liveness_timeout());
    controller.set_endpoints(settings.endpoints()?);
    let k8s = settings.k8s()?;
    controller.set_k8s_pool(k8s.as_ref().map(|k| k.pool.clone()));
    Ok(Started {
        controller,
        data_dir,
        num_vfs,
        authenticator,
        tls,
        k8s,
    })
}

/// Runs the service until SIGTERM or SIGINT.
pub fn serve(settings: ServeSettings, exe: PathBuf) -> Result<(), ServeError> {
    let started = start(&settings, exe)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
            Ok::<(), std::io::Error>(())
        };
        run(&settings, &started, shutdown).await
    });
    // The engine stops when the last controller reference goes, outside the runtime.
    drop(runtime);
    result
}

/// Serves the API for `started` until `shutdown` completes.
pub async fn run(
    settings: &ServeSettings,
    started: &Started,
    shutdown: impl Future<Output = std::io::Result<()>>,
) -> Result<(), ServeError> {
    let controller = started.controller.clone();
    let addr = settings.grpc_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let api = Api::new(controller.clone());
    let auth = crate::auth::grpc::Authenticate::new(started.authenticator.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(
            crate::api::limits::OversizeIsExhausted,
        ))
        .timeout(REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(CONCURRENT_CALLS_PER_CONNECTION)
        .load_shed(true);
    if let Some(tls) = &started.tls {
        builder = builder.tls_config(tls.grpc())?;
    }
    // Health and reflection stay open (probes, grpcurl's schema); nfhost's own
    // services authenticate every call.
    let server = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(proto::pf_service_server::PfServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(proto::vf_service_server::VfServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        // The two services that take NF configs say the request limit aloud (it
        // is tonic's default, and the other services' too).
        .add_service(tonic::service::interceptor::InterceptedService::new(
            proto::nf_service_server::NfServiceServer::new(api.clone())
                .max_decoding_message_size(crate::api::limits::MAX_REQUEST),
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            proto::chain_service_server::ChainServiceServer::new(api.clone())
                .max_decoding_message_size(crate::api::limits::MAX_REQUEST),
            auth.clone(),
        ))
        .add_service(
            proto::telemetry_service_server::TelemetryServiceServer::with_interceptor(api, auth),
        )
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: a reply is one small write that Nagle's algorithm
            // would hold back until the client's delayed ACK (40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    let mut server = tokio::spawn(server);

    // Dashboard and /metrics: counters sampled once a second.
    let metrics = Arc::new(crate::web::metrics::Metrics::new());
    let http_addr = settings.http_addr();
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: http_addr,
            source,
        })?;
    let http_bound = http_listener.local_addr()?;
    let router = crate::web::router(
        controller.clone(),
        metrics.clone(),
        started.authenticator.clone(),
    );
    let http_tls = started.tls.as_ref().map(|t| t.http());
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(crate::web::listener::serve(
        http_listener,
        http_tls,
        router,
        async {
            let _ = http_stop_rx.await;
        },
    ));
    let reloader = {
        let authenticator = started.authenticator.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match authenticator.reload() {
                    Ok(n) => tracing::info!(principals = n, "SIGHUP: principals re-read"),
                    Err(e) => tracing::warn!(
                        error = %crate::error_chain(&e),
                        "SIGHUP: principals file not taken; the previous principals stay"
                    ),
                }
            }
        })
    };
    let sampler = {
        let c = controller.clone();
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                ticker.tick().await;
                let (c, m) = (c.clone(), m.clone());
                let _ = tokio::task::spawn_blocking(move || m.sample(&c)).await;
            }
        })
    };
    let scheme = if started.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        grpc = %format_args!("{scheme}://{bound}"),
        dashboard = %format_args!("{scheme}://{http_bound}/"),
        metrics = %format_args!("{scheme}://{http_bound}/metrics"),
        authentication = if started.authenticator.enforced() { "required" } else { "none (loopback)" },
        mutual_tls = started.tls.as_ref().is_some_and(|t| t.verifies_clients()),
        data_dir = %started.data_dir.display(),
        vfs = started.num_vfs,
        "listening"
    );

    // Bring up what was acknowledged before, then report serving.
    let c = controller.clone();
    tokio::task::spawn_blocking(move || {
        let _ = c.record_start();
        c.reconcile();
    })
    .await
    .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tracing::info!("ready: serving gRPC and HTTP");
    let (k8s_stop, k8s_stopped) = tokio::sync::watch::channel(false);
    let k8s = match started.k8s.clone() {
        Some(options) => crate::k8s::start(controller.clone(), options, k8s_stopped),
        None => Vec::new(),
    };

    let c = controller.clone();
    let supervisor = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(TICK);
        loop {
            ticker.tick().await;
            let c = c.clone();
            let _ = tokio::task::spawn_blocking(move || c.tick()).await;
        }
    });

    let result = shutdown.await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    supervisor.abort();
    let _ = k8s_stop.send(true);
    for task in k8s {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, task).await;
    }
    sampler.abort();
    reloader.abort();
    let _ = http_stop_tx.send(());
    let _ = stop_tx.send(());
    // The live stream never ends by itself: give the dashboard the same grace.
    if tokio::time::timeout(SHUTDOWN_GRACE, http).await.is_err() {
        tracing::info!("dashboard clients still connected; closing them");
    }
    // In-flight calls get a grace period; idle or stuck clients do not hold us up.
    let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(served) => served,
        Err(_) => {
            tracing::info!(grace = ?SHUTDOWN_GRACE, "gRPC clients still connected after the grace period; closing them");
            server.abort();
            Ok(Ok(()))
        }
    };
    let c = controller.clone();
    let _ = tokio::task::spawn_blocking(move || c.stop_all()).await;
    result?;
    served.map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matches of `serve ARGS…` as the binary parses them.
    fn flags(args: &[&str]) -> clap::ArgMatches {
        command()
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap()
    }

    fn command() -> clap::Command {
        <ServeSettings as clap::Args>::augment_args(clap::Command::new("serve"))
    }

    #[test]
    fn without_file_or_flags_every_default_is_the_one_help_shows() {
        let s = <ServeSettings as clap::FromArgMatches>::from_arg_matches(&flags(&[])).unwrap();
        assert_eq!(s, ServeSettings::default());
        let help = command().render_help().to_string();
        for (flag, default) in [
            ("--grpc", s.grpc_addr().to_string()),
            ("--http", s.http_addr().to_string()),
            ("--data-dir", format!("./{}", s.data_dir().display())),
            ("--vfs", s.num_vfs().to_string()),
            ("--wire", s.wire_name().to_owned()),
            ("--mtu", host_wire::DEFAULT_MTU.to_string()),
            ("--gen-rate", DEFAULT_GEN_RATE.to_string()),
            ("--gen-size", GenConfig::default().frame_size.to_string()),
            ("--gen-vlans", "untagged".to_owned()),
            ("--gen-flows", GenConfig::default().flows.to_string()),
            ("--gen-dst", "a destination per flow".to_owned()),
        ] {
            let line = help
                .lines()
                .skip_while(|l| !l.trim_start().starts_with(flag))
                .take_while(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                line.contains(&format!("[default: {default}]")),
                "{flag}: {line:?} in\n{help}"
            );
        }
        match s.wire_config().unwrap() {
            WireConfig::Gen(g) => assert_eq!(g.rate_pps, DEFAULT_GEN_RATE),
            other => panic!("gen expected, got {other:?}"),
        }
    }

    #[test]
    fn settings_come_from_toml_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("nfhost-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nfhost.toml");
        std::fs::write(
            &path,
            "grpc = \"127.0.0.1:6000\"\ndata_dir = \"/srv/nfhost\"\nvfs = 16\nwire = \"gen\"\ngen_rate = 5000\ngen_vlans = [100, 200]\n",
        )
        .unwrap();
        let file = ServeSettings::from_file(&path).unwrap();
        let s = file.clone().with_flags(&flags(&["--vfs", "32"])).unwrap();
        assert_eq!(s.grpc_addr(), SocketAddr::from(([127, 0, 0, 1], 6000)));
        assert_eq!(s.vfs, Some(32), "a flag beats the file");
        assert_eq!(
            s.gen_rate,
            Some(5000),
            "a flag not given leaves the file's value"
        );
        let vlans = file.with_flags(&flags(&["--gen-vlans", "7,8"])).unwrap();
        assert_eq!(vlans.gen_vlans, Some(vec![7, 8]));
        assert_eq!(vlans.vfs, Some(16), "the file's, no flag given");
        assert_eq!(s.data_dir(), PathBuf::from("/srv/nfhost"));
        assert_eq!(
            s.http_addr(),
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "loopback default"
        );
        match s.wire_config().unwrap() {
            WireConfig::Gen(g) => assert_eq!((g.rate_pps, g.vlans), (5000, vec![100, 200])),
            other => panic!("gen expected, got {other:?}"),
        }
        let host = ServeSettings {
            wire: Some("tap:nfh0,afpacket:veth1@100".into()),
            mtu: Some(1400),
            ..Default::default()
        };
        match host.wire_config().unwrap() {
            WireConfig::Host(h) => {
                assert_eq!((h.links.len(), h.mtu), (2, 1400));
                assert_eq!(h.to_string(), "tap:nfh0,afpacket:veth1@100");
            }
            other => panic!("host links expected, got {other:?}"),
        }
        std::fs::write(&path, "grpc = \"127.0.0.1:6000\"\nwhatever = 1\n").unwrap();
        let err = ServeSettings::from_file(&path).unwrap_err();
        assert!(
            crate::error_chain(&err).contains("unknown field `whatever`"),
            "{}",
            crate::error_chain(&err)
        );
        let bad = ServeSettings {
            wire: Some("carrier-pigeon".into()),
            ..Default::default()
        };
        let err = bad.wire_config().unwrap_err();
        assert!(crate::error_chain(&err).contains("tap:NAME, afpacket:IFNAME or afxdp:IFNAME"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
