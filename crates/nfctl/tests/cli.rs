//! `nfctl` as a person runs it: the real binary, no nfhost. What needs an answer
//! from a server gets it from a scripted in-process double of the gRPC API on
//! `127.0.0.1:0`, so the tables, paging, and error reports are checked end to end.

mod common;

use std::convert::Infallible;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{serve_on_a_thread, stderr, stdout};
use nfhost_api::proto::{
    self, chain_service_server::ChainService, chain_service_server::ChainServiceServer,
    nf_service_server::NfService, nf_service_server::NfServiceServer, pf_service_server::PfService,
    pf_service_server::PfServiceServer, telemetry_service_server::TelemetryService,
    telemetry_service_server::TelemetryServiceServer, vf_service_server::VfService,
    vf_service_server::VfServiceServer,
};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http, tokio_stream};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

fn nfctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nfctl"))
        .args(args)
        .env_remove("NFHOST_SERVER")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("nfctl runs")
}

fn bad_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nfctl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

// ------------------------------------------------------------- without a server

#[test]
fn help_lists_the_commands() {
    let o = nfctl(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for command in [
        "pf", "vf", "nf", "chain", "stats", "events", "--server", "--output",
    ] {
        assert!(out.contains(command), "{command} missing from:\n{out}");
    }
    let o = nfctl(&["vf", "--help"]);
    for command in ["list", "get", "set", "reset"] {
        assert!(stdout(&o).contains(command), "vf {command}");
    }
}

#[test]
fn vf_set_without_settings_has_nothing_to_set() {
    let o = nfctl(&["vf", "set", "1"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).starts_with("nfctl: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to set"), "{}", stderr(&o));
}

#[test]
fn an_absent_server_is_named_with_what_to_do() {
    let o = nfctl(&[
        "chain",
        "apply",
        "examples/edge.toml",
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains("nfhost serve"), "{err}");

    // NFHOST_SERVER is used without --server; host:port gets http://.
    let o = Command::new(env!("CARGO_BIN_EXE_nfctl"))
        .args(["pf", "get"])
        .env("NFHOST_SERVER", "127.0.0.1:1")
        .output()
        .expect("nfctl runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("http://127.0.0.1:1"), "{}", stderr(&o));
}

#[test]
fn a_bad_chain_file_is_refused_naming_the_field_before_connecting() {
    for (text, expect) in [
        (
            "name = \"edge\"\n[classifier]\nvlan = 4095\n[[nf]]\nname = \"a\"\nkind = \"l2fwd\"\n",
            "classifier.vlan = 4095 (line 3, column 8): VLAN id must be 1-4094",
        ),
        (
            "name = \"edge\"\n[[nf]]\nname = \"a\"\nkind = \"l2fwd\"\n[[nf]]\nname = \"a\"\nkind = \"monitor\"\n",
            "nf[1].name = \"a\" (line 6, column 8): duplicate NF name",
        ),
        (
            "name = \"edge\"\ncolor = 1\n",
            "line 2, column 1: unknown field `color`",
        ),
        ("name = \"edge\"\n", "nf: a chain needs at least one [[nf]]"),
    ] {
        let path = bad_file("bad.toml", text);
        let path = path.to_string_lossy();
        // An address nothing listens on: the file must be refused before connecting.
        let o = nfctl(&["chain", "apply", &path, "--server", "http://127.0.0.1:1"]);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("nfctl: chain file {path}: ")),
            "{err}"
        );
        assert!(err.contains(expect), "{expect:?} not in {err}");
        assert!(!err.contains("connect"), "{err}");
    }
    let o = nfctl(&["chain", "apply", "/nonexistent/chain.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/chain.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn malformed_names_and_flags_are_usage_errors() {
    for args in [
        &["vf", "get", "pfs/0/vfs/x"][..],
        &["vf", "get", "-1"],
        &["vf", "set", "1", "--mac", "02:00:00:00:00"],
        &["vf", "set", "1", "--vlan", "4095"],
        &["vf", "set", "1", "--qos", "8"],
        &["vf", "set", "1", "--spoofchk", "yes"],
        &["nf", "get", "Fw"],
        &["nf", "create", "fw"],
        &["chain", "get", "chains/"],
        &["stats", "--interval-ms", "50"],
        &["events", "--limit", "0"],
    ] {
        let o = nfctl(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_bad_nf_config_file_is_refused_before_connecting() {
    let json = bad_file("config.json", "[1, 2]");
    let toml = bad_file("config.toml", "top = \n");
    for (path, expect) in [(json, "must be a JSON object"), (toml, "not TOML: line 1")] {
        let p = path.to_string_lossy();
        let o = nfctl(&[
            "nf",
            "create",
            "fw",
            "--kind",
            "monitor",
            "--config",
            &p,
            "--server",
            "http://127.0.0.1:1",
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(expect), "{}", stderr(&o));
    }
}

// ------------------------------------------------------------- against a double

/// What the double was asked, for the tests to check what nfctl sent.
#[derive(Debug, Default, Clone)]
struct Double {
    requests: Arc<Mutex<Vec<String>>>,
}

impl Double {
    fn record(&self, request: impl std::fmt::Debug) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(format!("{request:?}"));
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn vf(index: u32) -> proto::Vf {
    proto::Vf {
        name: format!("pfs/0/vfs/{index}"),
        index,
        mac: format!("02:4e:46:00:00:{:02x}", index + 1),
        link_state: proto::LinkState::Auto.into(),
        mtu: 1500,
        link_up: true,
        spoof_check: true,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl PfService for Double {
    async fn get_pf(&self, r: Request<proto::GetPfRequest>) -> Result<Response<proto::Pf>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(proto::Pf {
            name: "pfs/0".into(),
            mac: "02:4e:46:00:00:00".into(),
            link_up: true,
            total_vfs: 8,
            num_vfs: 4,
            assigned_vfs: 2,
            wire: "afxdp:veth0@100,afpacket:veth1@200".into(),
            wire_mtu: 1500,
            wire_links: vec![
                proto::WireLink {
                    link: "afxdp:veth0@100".into(),
                    xdp_mode: "copy".into(),
                },
                proto::WireLink {
                    link: "afpacket:veth1@200".into(),
                    xdp_mode: String::new(),
                },
            ],
        }))
    }

    async fn set_vf_count(
        &self,
        r: Request<proto::SetVfCountRequest>,
    ) -> Result<Response<proto::Pf>, Status> {
        let r = r.into_inner();
        self.record(r);
        Err(Status::with_error_details(
            Code::InvalidArgument,
            "num_vfs is above the PF's total of 8",
            ErrorDetails::with_bad_request_violation("num_vfs", "must be at most 8"),
        ))
    }
}

#[tonic::async_trait]
impl VfService for Double {
    async fn list_vfs(
        &self,
        r: Request<proto::ListVfsRequest>,
    ) -> Result<Response<proto::ListVfsResponse>, Status> {
        let r = r.into_inner();
        self.record(&r);
        // Two pages.
        let (vfs, next) = match r.page_token.as_str() {
            "" => (vec![vf(0), vf(1)], "page-2"),
            "page-2" => {
                let mut owned = vf(2);
                owned.owner = "nfs/mon".into();
                owned.chain = "chains/edge".into();
                owned.vlan = 100;
                (vec![owned, vf(3)], "")
            }
            other => return Err(Status::invalid_argument(format!("bad token {other}"))),
        };
        Ok(Response::new(proto::ListVfsResponse {
            vfs,
            next_page_token: next.into(),
        }))
    }

    async fn get_vf(&self, r: Request<proto::GetVfRequest>) -> Result<Response<proto::Vf>, Status> {
        let r = r.into_inner();
        self.record(&r);
        match r.name.as_str() {
            "pfs/0/vfs/3" => Ok(Response::new(vf(3))),
            name => Err(Status::not_found(format!("no VF {name}; the PF has 4"))),
        }
    }

    async fn update_vf(
        &self,
        r: Request<proto::UpdateVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        let r = r.into_inner();
        self.record(&r);
        let mut v = vf(3);
        if let Some(asked) = r.vf {
            v.mtu = asked.mtu;
            v.spoof_check = asked.spoof_check;
        }
        Ok(Response::new(v))
    }

    async fn reset_vf(
        &self,
        r: Request<proto::ResetVfRequest>,
    ) -> Result<Response<proto::Vf>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(vf(3)))
    }
}

fn nfs() -> Vec<proto::Nf> {
    vec![
        proto::Nf {
            name: "nfs/mon".into(),
            kind: "monitor".into(),
            vf: "pfs/0/vfs/2".into(),
            chain: "chains/edge".into(),
            restart_policy: proto::RestartPolicy::Always.into(),
            status: Some(proto::NfStatus {
                state: proto::NfState::Running.into(),
                pid: 4242,
                restarts: 0,
                ..Default::default()
            }),
            ..Default::default()
        },
        proto::Nf {
            name: "nfs/fw".into(),
            kind: "l2fwd".into(),
            vf: "pfs/0/vfs/5".into(),
            restart_policy: proto::RestartPolicy::OnFailure.into(),
            status: Some(proto::NfStatus {
                state: proto::NfState::Failed.into(),
                restarts: 5,
                last_exit: "exit status 1".into(),
                reason: "crash loop: 5 exits in 10s".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

#[tonic::async_trait]
impl NfService for Double {
    async fn create_nf(
        &self,
        r: Request<proto::CreateNfRequest>,
    ) -> Result<Response<proto::Nf>, Status> {
        let r = r.into_inner();
        self.record(&r);
        let mut nf = r.nf.unwrap_or_default();
        nf.vf = "pfs/0/vfs/6".into();
        Ok(Response::new(nf))
    }

    async fn get_nf(&self, r: Request<proto::GetNfRequest>) -> Result<Response<proto::Nf>, Status> {
        let r = r.into_inner();
        self.record(&r);
        nfs()
            .into_iter()
            .find(|nf| nf.name == r.name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no NF {}", r.name)))
    }

    async fn list_nfs(
        &self,
        r: Request<proto::ListNfsRequest>,
    ) -> Result<Response<proto::ListNfsResponse>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(proto::ListNfsResponse {
            nfs: nfs(),
            next_page_token: String::new(),
        }))
    }

    async fn delete_nf(
        &self,
        r: Request<proto::DeleteNfRequest>,
    ) -> Result<Response<proto::DeleteNfResponse>, Status> {
        let r = r.into_inner();
        self.record(&r);
        Err(Status::failed_precondition(format!(
            "{} is a hop of chains/edge; delete the chain",
            r.name
        )))
    }
}

#[tonic::async_trait]
impl ChainService for Double {
    async fn create_chain(
        &self,
        r: Request<proto::CreateChainRequest>,
    ) -> Result<Response<proto::Chain>, Status> {
        let r = r.into_inner();
        self.record(&r);
        let mut chain = r.chain.unwrap_or_default();
        if chain.nfs.iter().any(|nf| nf.kind == "nat64") {
            return Err(Status::with_error_details(
                Code::InvalidArgument,
                "the chain is not valid",
                ErrorDetails::with_bad_request_violation(
                    "chain.nfs[0].kind",
                    "unknown NF kind \"nat64\"",
                ),
            ));
        }
        if !r.validate_only {
            return Err(Status::already_exists(format!("{} exists", chain.name)));
        }
        chain.vfs = vec!["pfs/0/vfs/0".into(), "pfs/0/vfs/1".into()];
        Ok(Response::new(chain))
    }

    async fn get_chain(
        &self,
        r: Request<proto::GetChainRequest>,
    ) -> Result<Response<proto::Chain>, Status> {
        let r = r.into_inner();
        self.record(&r);
        // The one chain this server has.
        if r.name != "chains/edge" {
            return Err(Status::not_found(format!("{} not found", r.name)));
        }
        Ok(Response::new(stored_edge()?))
    }

    async fn update_chain(
        &self,
        r: Request<proto::UpdateChainRequest>,
    ) -> Result<Response<proto::UpdateChainResponse>, Status> {
        let r = r.into_inner();
        self.record(&r);
        let mut chain = r.chain.unwrap_or_default();
        let stored = stored_edge()?;
        let kinds = |c: &proto::Chain| c.nfs.iter().map(|nf| nf.kind.clone()).collect::<Vec<_>>();
        if kinds(&chain) != kinds(&stored) {
            return Err(Status::failed_precondition(
                "chains/edge: the hops differ: delete and re-create the chain to change its hops",
            ));
        }
        chain.vfs = stored.vfs.clone();
        // An NF whose config changed takes it in place (as the monitor does).
        let nfs = chain
            .nfs
            .iter()
            .zip(&stored.nfs)
            .map(|(new, old)| {
                let outcome = match (new.config == old.config, r.validate_only) {
                    (true, _) => proto::NfUpdateOutcome::Unchanged,
                    (false, true) => proto::NfUpdateOutcome::Reconfigure,
                    (false, false) => proto::NfUpdateOutcome::InPlace,
                };
                proto::NfUpdate {
                    nf: format!("nfs/{}", new.name),
                    outcome: outcome as i32,
                    reason: String::new(),
                }
            })
            .collect();
        Ok(Response::new(proto::UpdateChainResponse {
            chain: Some(chain),
            nfs,
        }))
    }

    async fn list_chains(
        &self,
        r: Request<proto::ListChainsRequest>,
    ) -> Result<Response<proto::ListChainsResponse>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(proto::ListChainsResponse::default()))
    }

    async fn delete_chain(
        &self,
        r: Request<proto::DeleteChainRequest>,
    ) -> Result<Response<proto::DeleteChainResponse>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(proto::DeleteChainResponse {}))
    }
}

/// `examples/edge.toml` as the double stores it, on VFs 2 and 3.
fn stored_edge() -> Result<proto::Chain, Status> {
    let mut chain =
        nfhost_api::chain_file::parse_chain(include_str!("../../../examples/edge.toml"))
            .map_err(|e| Status::internal(e.to_string()))?;
    chain.vfs = vec!["pfs/0/vfs/2".into(), "pfs/0/vfs/3".into()];
    Ok(chain)
}

/// Samples one second apart: VF 2 receives 1000 more packets each second.
fn sample(i: u64) -> proto::Stats {
    proto::Stats {
        time_ms: 1_700_000_000_000 + i as i64 * 1000,
        vfs: vec![proto::VfStats {
            vf: "pfs/0/vfs/2".into(),
            nf: "nfs/mon".into(),
            chain: "chains/edge".into(),
            rx_packets: 5000 + 1000 * i,
            tx_packets: 5000 + 500 * i,
            drops: [("ring_full".to_owned(), 3), ("spoof".to_owned(), 4)].into(),
            dma_copied_bytes: 3 * 1024 * 1024,
            ..Default::default()
        }],
        wire: Some(proto::WireStats {
            rx_packets: 9000 + 2000 * i,
            tx_packets: 100,
            ..Default::default()
        }),
    }
}

fn event(seq: u64) -> proto::Event {
    proto::Event {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        kind: proto::EventKind::DmaFault.into(),
        vf: "pfs/0/vfs/2".into(),
        nf: "nfs/mon".into(),
        message: format!("event {seq}"),
        dma_fault: Some(proto::DmaFault {
            iova: 0x1000,
            len: 64,
            access: "write".into(),
            reason: "unmapped".into(),
        }),
        principal: String::new(),
        tenant: String::new(),
    }
}

#[tonic::async_trait]
impl TelemetryService for Double {
    async fn get_stats(
        &self,
        r: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(sample(0)))
    }

    type WatchStatsStream = tokio_stream::Iter<std::vec::IntoIter<Result<proto::Stats, Status>>>;

    async fn watch_stats(
        &self,
        r: Request<proto::WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(tokio_stream::iter(
            (0..3).map(|i| Ok(sample(i))).collect::<Vec<_>>(),
        )))
    }

    type WatchEventsStream = tokio_stream::Iter<std::vec::IntoIter<Result<proto::Event, Status>>>;

    async fn watch_events(
        &self,
        r: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.record(r.into_inner());
        // Overlaps the listed events: 2 must be printed once.
        Ok(Response::new(tokio_stream::iter(vec![
            Ok(event(2)),
            Ok(event(3)),
        ])))
    }

    async fn list_events(
        &self,
        r: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        self.record(r.into_inner());
        Ok(Response::new(proto::ListEventsResponse {
            events: vec![event(1), event(2)],
        }))
    }
}

/// The double's five services behind one, by the service name in the request path
/// (`/nfhost.v1.PfService/GetPf`): tonic's own router is axum, which nfctl does not
/// link, not even for tests.
#[derive(Clone)]
struct Routes {
    pf: PfServiceServer<Double>,
    vf: VfServiceServer<Double>,
    nf: NfServiceServer<Double>,
    chain: ChainServiceServer<Double>,
    telemetry: TelemetryServiceServer<Double>,
}

impl Routes {
    fn new(double: Double) -> Self {
        Routes {
            pf: PfServiceServer::new(double.clone()),
            vf: VfServiceServer::new(double.clone()),
            nf: NfServiceServer::new(double.clone()),
            chain: ChainServiceServer::new(double.clone()),
            telemetry: TelemetryServiceServer::new(double),
        }
    }
}

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

impl Service<HttpRequest> for Routes {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<HttpResponse, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let service = request.uri().path().split('/').nth(1).unwrap_or_default();
        match service {
            <PfServiceServer<Double> as NamedService>::NAME => self.pf.call(request),
            <VfServiceServer<Double> as NamedService>::NAME => self.vf.call(request),
            <NfServiceServer<Double> as NamedService>::NAME => self.nf.call(request),
            <ChainServiceServer<Double> as NamedService>::NAME => self.chain.call(request),
            <TelemetryServiceServer<Double> as NamedService>::NAME => self.telemetry.call(request),
            _ => Box::pin(async { Ok(Status::unimplemented("no such service").into_http()) }),
        }
    }
}

/// Serves a double on `127.0.0.1:0` from a thread of its own for the rest of the test.
fn serve() -> (String, Double) {
    let double = Double::default();
    let served = double.clone();
    let addr = serve_on_a_thread(move |incoming| async move {
        tonic::transport::Server::builder()
            .serve_with_incoming(Routes::new(served), incoming)
            .await
            .expect("serve");
    });
    (format!("http://{addr}"), double)
}

fn against(server: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--server", server]);
    nfctl(&all)
}

#[test]
fn vf_list_pages_through_everything_into_one_table() {
    let (server, double) = serve();
    let o = against(&server, &["vf", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("VF  MAC "), "{out}");
    assert!(
        lines[3].contains("02:4e:46:00:00:03")
            && lines[3].contains("mon")
            && lines[3].contains("edge"),
        "{out}"
    );
    // Columns line up: every row's MAC starts where the header's does.
    let at = lines[0].find("MAC").unwrap_or(0);
    for line in &lines[1..] {
        assert_eq!(line.find("02:4e"), Some(at), "{out}");
    }
    let requests = double.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[1].contains("page_token: \"page-2\""),
        "{requests:?}"
    );

    let o = against(&server, &["vf", "list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(4));
    assert_eq!(json[2]["owner"], "nfs/mon");
}

#[test]
fn vf_set_sends_only_the_given_settings() {
    let (server, double) = serve();
    let o = against(
        &server,
        &[
            "vf",
            "set",
            "pfs/0/vfs/3",
            "--mtu",
            "9000",
            "--spoofchk",
            "off",
            "--dry-run",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("spoof_check, mtu is valid (dry run"),
        "{}",
        stdout(&o)
    );
    let sent = double.requests().join("\n");
    assert!(
        sent.contains("update_mask: [\"spoof_check\", \"mtu\"]"),
        "{sent}"
    );
    assert!(sent.contains("validate_only: true"), "{sent}");
    assert!(sent.contains("name: \"pfs/0/vfs/3\""), "{sent}");
}

#[test]
fn refusals_print_the_code_the_message_and_the_field_violations() {
    let (server, _) = serve();
    let o = against(&server, &["vf", "get", "7"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "nfctl: get pfs/0/vfs/7: NOT_FOUND: no VF pfs/0/vfs/7; the PF has 4\n"
    );

    let o = against(&server, &["pf", "set-vfs", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "nfctl: set pfs/0 to 9 VFs: INVALID_ARGUMENT: num_vfs is above the PF's total of 8\n  num_vfs: must be at most 8\n"
    );

    let path = bad_file(
        "nat64.toml",
        "name = \"nat\"\n[[nf]]\nname = \"x\"\nkind = \"nat64\"\n",
    );
    let o = against(&server, &["chain", "apply", &path.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("create chains/nat: INVALID_ARGUMENT: the chain is not valid\n  chain.nfs[0].kind: unknown NF kind \"nat64\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn applying_a_new_chain_creates_it() {
    let (server, double) = serve();
    let path = bad_file(
        "core.toml",
        "name = \"core\"\n[[nf]]\nname = \"x\"\nkind = \"l2fwd\"\n",
    );
    let o = against(
        &server,
        &["chain", "apply", &path.to_string_lossy(), "--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("chains/core: valid (dry run, nothing created)"),
        "{}",
        stdout(&o)
    );
    let sent = double.requests();
    assert!(
        sent.iter().any(|r| r.starts_with("GetChainRequest"))
            && sent
                .iter()
                .any(|r| r.starts_with("CreateChainRequest") && r.contains("validate_only: true")),
        "{sent:?}"
    );
    assert!(!sent.iter().any(|r| r.starts_with("UpdateChainRequest")));
}

#[test]
fn applying_an_existing_chain_updates_it_and_says_what_changed() {
    let (server, double) = serve();
    // The file as stored: nothing to do.
    let o = against(&server, &["chain", "apply", "examples/edge.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("chains/edge: unchanged\n"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("wire → mon → fwd → wire"),
        "{}",
        stdout(&o)
    );
    let sent = double.requests().join("\n");
    assert!(
        sent.contains("UpdateChainRequest")
            && sent.contains("update_mask: []")
            && sent.contains("allow_missing: false")
            && !sent.contains("CreateChainRequest"),
        "{sent}"
    );

    // The monitor's config edited: it is the one reconfigured.
    let edited = include_str!("../../../examples/edge.toml").replace("top = 5", "top = 2");
    let path = bad_file("edge-top2.toml", &edited);
    let o = against(
        &server,
        &["chain", "apply", &path.to_string_lossy(), "--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(
            "chains/edge: valid (dry run, nothing changed): would reconfigure mon (in place, or a restart on pfs/0/vfs/2 if its kind cannot); keep fwd\n"
        ),
        "{}",
        stdout(&o)
    );
    let o = against(&server, &["chain", "apply", &path.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(
            "chains/edge: updated: mon reconfigured in place (same process); fwd unchanged\n"
        ),
        "{}",
        stdout(&o)
    );
    assert!(
        double
            .requests()
            .join("\n")
            .contains("config: \"{\\\"top\\\":2}\""),
        "the new config was sent"
    );
    // What happened to each NF is the server's answer, not read from PIDs.
    assert!(
        !double.requests().join("\n").contains("GetNfRequest"),
        "nfctl reads the outcome from the reply"
    );

    // A different hop list: the server refuses, nfctl says what to do.
    let swapped = include_str!("../../../examples/edge.toml").replace("\"l2fwd\"", "\"firewall\"");
    let path = bad_file("edge-fw.toml", &swapped);
    let o = against(&server, &["chain", "apply", &path.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("nfctl: update chains/edge: FAILED_PRECONDITION: "),
        "{err}"
    );
    assert!(
        err.contains("nfctl chain delete edge")
            && err.contains(&format!("nfctl chain apply {}", path.display())),
        "{err}"
    );
}

#[test]
fn nf_list_shows_states_as_words_with_their_reason() {
    let (server, _) = serve();
    let o = against(&server, &["nf", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("mon ") && l.ends_with("running") && l.contains("4242")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("fw ")
            && l.ends_with("failed (crash loop: 5 exits in 10s)")
            && l.contains("on-failure")),
        "{out}"
    );
    let o = against(&server, &["nf", "delete", "nfs/mon"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "nfctl: delete nfs/mon: FAILED_PRECONDITION: nfs/mon is a hop of chains/edge; delete the chain\n"
    );
}

#[test]
fn nf_create_sends_a_toml_config_as_json() {
    let (server, double) = serve();
    let config = bad_file("mon.toml", "top = 3\n");
    let o = against(
        &server,
        &[
            "nf",
            "create",
            "mon2",
            "--kind",
            "monitor",
            "--config",
            &config.to_string_lossy(),
            "--vf",
            "6",
            "--restart",
            "never",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("nfs/mon2: created on pfs/0/vfs/6\n"),
        "{}",
        stdout(&o)
    );
    let sent = double.requests().join("\n");
    assert!(
        sent.contains("name: \"nfs/mon2\"") && sent.contains("config: \"{\\\"top\\\":3}\""),
        "{sent}"
    );
    assert!(
        sent.contains("vf: \"pfs/0/vfs/6\"") && sent.contains("restart_policy: Never"),
        "{sent}"
    );
}

#[test]
fn stats_watch_computes_rates_between_samples() {
    let (server, double) = serve();
    let o = against(
        &server,
        &["stats", "--watch", "--interval-ms", "1000", "--all"],
    );
    // The double's stream ends after three samples; a watch that ends is a failure.
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the server ended the stream"),
        "{}",
        stderr(&o)
    );
    let out = stdout(&o);
    let vf_rows: Vec<&str> = out.lines().filter(|l| l.contains("mon")).collect();
    assert_eq!(vf_rows.len(), 3, "{out}");
    let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    // VF NF CHAIN RX-PPS TX-PPS RX-PKTS TX-PKTS DROPS COPIED
    assert_eq!(
        cells(vf_rows[0])[..8],
        ["2", "mon", "edge", "-", "-", "5000", "5000", "7"]
    );
    assert_eq!(
        cells(vf_rows[2])[..8],
        ["2", "mon", "edge", "1000", "500", "7000", "6000", "7"]
    );
    assert!(vf_rows[2].ends_with("3.0 MiB"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("wire") && cells(l)[3] == "2000"),
        "{out}"
    );
    let sent = double.requests().join("\n");
    assert!(
        sent.contains("interval_ms: 1000") && sent.contains("active_only: false"),
        "{sent}"
    );
}

#[test]
fn events_watch_prints_each_event_once() {
    let (server, _) = serve();
    let o = against(&server, &["events", "--watch"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let seqs: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(seqs, ["1", "2", "3"], "{out}");
    assert!(out.contains("2023-11-14T22:13:20.001Z  dma-fault"), "{out}");
    assert!(
        out.contains("event 3 (write iova 0x1000 len 64: unmapped)"),
        "{out}"
    );
}

#[test]
fn get_views_and_json() {
    let (server, _) = serve();
    let o = against(&server, &["pf", "get"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("VFs:       4 of 8 total\n"),
        "{}",
        stdout(&o)
    );
    // An afxdp: link says whether the kernel copies its frames.
    assert!(
        stdout(&o).contains("Wire:      afxdp:veth0@100 (copy),afpacket:veth1@200, MTU 1500\n"),
        "{}",
        stdout(&o)
    );
    let o = against(&server, &["chain", "get", "chains/edge", "-o", "json"]);
    let chain: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(chain["name"], "chains/edge");
    assert_eq!(chain["nfs"][0]["config"], "{\"top\":5}");
    let o = against(&server, &["chain", "list"]);
    assert_eq!(stdout(&o), "no chains\n");
    let o = against(&server, &["chain", "delete", "edge"]);
    assert_eq!(stdout(&o), "chains/edge: deleted\n");
}
