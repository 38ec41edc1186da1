//! Tenants against the real service (`nfhost serve --auth FILE`): every RPC and
//! every HTTP route, called by tenant blue, tenant red and admin ops on blue's,
//! red's, the admin's and nobody's objects, each answer the expected one, and
//! the stored state unchanged after every refusal; bad credentials are
//! UNAUTHENTICATED; quotas hold under 20 racing clients; events name who caused
//! them; no token reaches the log; an unauthenticated non-loopback listener is
//! refused at start.

#[path = "common/http.rs"]
mod http;
#[path = "common/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use nfhost::auth::principals::token_digest_hex;
use nfhost_api::proto;
use server::{Clients, Server, TempDir, free_port, runtime, state_dump};
use tonic::Code;

const OPS: &str = "ops-token-0d1f2b9c7a";
const BLUE: &str = "blue-token-5e8a1c3f92";
const RED: &str = "red-token-77b04d2e1a";
const GREEN: &str = "green-token-a9c3e5f701";

/// The principals file: an admin, two tenants, and a small tenant for the quota race.
fn principals() -> String {
    format!(
        "[[admin]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n\n\
         [[tenant]]\nname = \"blue\"\ntoken_sha256 = \"{}\"\nmax_vfs = 6\nmax_chains = 2\n\n\
         [[tenant]]\nname = \"red\"\ntoken_sha256 = \"{}\"\n\n\
         [[tenant]]\nname = \"green\"\ntoken_sha256 = \"{}\"\nmax_vfs = 8\nmax_chains = 1\n",
        token_digest_hex(OPS.as_bytes()),
        token_digest_hex(BLUE.as_bytes()),
        token_digest_hex(RED.as_bytes()),
        token_digest_hex(GREEN.as_bytes()),
    )
}

/// `message` with `authorization: Bearer token` (none for an empty token).
fn req<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if !token.is_empty() {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    r
}

fn nf(name: &str) -> proto::Nf {
    proto::Nf {
        name: format!("nfs/{name}"),
        kind: "l2fwd".into(),
        ..Default::default()
    }
}

fn chain(name: &str, hop: &str, vlan: u32) -> proto::Chain {
    proto::Chain {
        name: format!("chains/{name}"),
        classifier: Some(proto::Classifier {
            vlan,
            dst_mac: String::new(),
        }),
        nfs: vec![proto::ChainNf {
            name: hop.into(),
            kind: "l2fwd".into(),
            config: String::new(),
            exec: None,
        }],
        ..Default::default()
    }
}

/// `message` with this exact `authorization` value, if any.
fn raw<T>(authorization: Option<&str>, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(v) = authorization {
        r.metadata_mut()
            .insert("authorization", v.parse().expect("ascii"));
    }
    r
}

/// What a call answered: OK or the status code.
fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Everything the store holds that a request could change, as an admin reads it
/// (NF status left out: it is the running system's, not stored).
fn snapshot(rt: &tokio::runtime::Runtime, c: &mut Clients) -> String {
    let nfs: Vec<proto::Nf> = rt
        .block_on(c.nf.list_nfs(req(OPS, proto::ListNfsRequest::default())))
        .expect("list nfs")
        .into_inner()
        .nfs
        .into_iter()
        .map(|nf| proto::Nf { status: None, ..nf })
        .collect();
    let chains = rt
        .block_on(
            c.chain
                .list_chains(req(OPS, proto::ListChainsRequest::default())),
        )
        .expect("list chains")
        .into_inner()
        .chains;
    let vfs = rt
        .block_on(c.vf.list_vfs(req(
            OPS,
            proto::ListVfsRequest {
                page_size: 256,
                ..Default::default()
            },
        )))
        .expect("list vfs")
        .into_inner()
        .vfs
        .into_iter()
        .map(|v| proto::Vf {
            link_up: false,
            ..v
        })
        .collect::<Vec<_>>();
    let pf = rt
        .block_on(c.pf.get_pf(req(OPS, proto::GetPfRequest::default())))
        .expect("get pf")
        .into_inner();
    let events = rt
        .block_on(
            c.telemetry
                .list_events(req(OPS, proto::ListEventsRequest { limit: 1000 })),
        )
        .expect("events")
        .into_inner()
        .events;
    format!("{nfs:?}\n{chains:?}\n{vfs:?}\n{pf:?}\n{events:?}")
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> BTreeSet<String> {
    items.iter().map(|i| name(i).to_owned()).collect()
}

/// The service, its log file and the objects of each principal.
struct World {
    _data: TempDir,
    /// The service's logs, one per start.
    logs: Vec<std::path::PathBuf>,
    server: Option<Server>,
    http: u16,
    rt: tokio::runtime::Runtime,
    c: Clients,
    /// A second connection, the admin's, to look at the stored state with.
    snap: Clients,
    /// VF names: blue's NF, blue's chain hop, red's NF, red's hop, the admin's NF, a free one.
    vf: std::collections::BTreeMap<&'static str, String>,
}

/// Starts `nfhost serve --auth` on `data`'s state, logging to a new file.
fn serve(data: &TempDir, http: u16, logs: &mut Vec<std::path::PathBuf>) -> Server {
    let auth = data.0.join("principals.toml");
    let log = data.0.join(format!("serve-{}.log", logs.len()));
    let server = Server::spawn(
        &data.0.join("state"),
        &[
            "--auth",
            auth.to_str().unwrap(),
            "--wire",
            "none",
            "--vfs",
            "32",
            "--http",
            &format!("127.0.0.1:{http}"),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    logs.push(log);
    server.wait_serving();
    server
}

/// Waits until `n` NFs run, so that no start is still to be recorded while a
/// test compares the stored state.
fn wait_running(rt: &tokio::runtime::Runtime, c: &mut Clients, n: usize) {
    server::wait_until("every NF running", 30, || {
        let nfs = rt
            .block_on(c.nf.list_nfs(req(OPS, proto::ListNfsRequest::default())))
            .expect("list")
            .into_inner()
            .nfs;
        nfs.len() == n
            && nfs
                .iter()
                .all(|n| n.status.as_ref().map(|s| s.state) == Some(proto::NfState::Running as i32))
    });
}

impl World {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("the service runs")
    }

    /// Stops the service, reads every stored key and value but the event log
    /// (and the boot counter), and starts it again.
    fn restart_dumping(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.server.take().expect("running").stop();
        let dump = state_dump(&self._data.0.join("state"));
        let server = serve(&self._data, self.http, &mut self.logs);
        self.c = Clients::new(server.channel(&self.rt));
        self.snap = Clients::new(server.channel(&self.rt));
        self.server = Some(server);
        wait_running(&self.rt, &mut self.c, 5);
        dump
    }
}

fn start() -> World {
    let data = TempDir::new("tenants");
    std::fs::write(data.0.join("principals.toml"), principals()).unwrap();
    let http = free_port();
    let mut logs = Vec::new();
    let server = serve(&data, http, &mut logs);
    let rt = runtime();
    let mut c = Clients::new(server.channel(&rt));
    let mut vf = std::collections::BTreeMap::new();
    for (token, name, hop, vlan, key) in
        [(BLUE, "a1", "ah", 10, "blue"), (RED, "b1", "bh", 20, "red")]
    {
        let created = rt
            .block_on(c.nf.create_nf(req(
                token,
                proto::CreateNfRequest {
                    nf: Some(nf(name)),
                    validate_only: false,
                },
            )))
            .expect("tenant creates an NF")
            .into_inner();
        assert_eq!(created.tenant, key, "the NF records its tenant");
        vf.insert(if key == "blue" { "blue" } else { "red" }, created.vf);
        let ch = rt
            .block_on(c.chain.create_chain(req(
                token,
                proto::CreateChainRequest {
                    chain: Some(chain(&format!("{}c", &name[..1]), hop, vlan)),
                    validate_only: false,
                },
            )))
            .expect("tenant creates a chain")
            .into_inner();
        assert_eq!(ch.tenant, key);
        vf.insert(
            if key == "blue" { "blue-hop" } else { "red-hop" },
            ch.vfs[0].clone(),
        );
    }
    let o1 = rt
        .block_on(c.nf.create_nf(req(
            OPS,
            proto::CreateNfRequest {
                nf: Some(nf("o1")),
                validate_only: false,
            },
        )))
        .expect("admin creates an NF")
        .into_inner();
    assert_eq!(o1.tenant, "", "an admin's NF is no tenant's");
    vf.insert("ops", o1.vf);
    vf.insert("free", "pfs/0/vfs/31".into());
    wait_running(&rt, &mut c, 5);
    let snap = Clients::new(server.channel(&rt));
    World {
        _data: data,
        logs,
        server: Some(server),
        http,
        rt,
        c,
        snap,
        vf,
    }
}

/// One row of the matrix: a call by `who` and the code it must get.
struct Row {
    who: &'static str,
    what: String,
    got: Code,
    want: Code,
}

#[test]
fn tenant_matrix_over_every_rpc_and_route() {
    let mut w = start();
    let stored = w.restart_dumping();
    let before = snapshot(&w.rt, &mut w.c);
    let mut rows = Vec::new();
    let tokens = [("blue", BLUE), ("red", RED), ("ops", OPS)];
    // Names by owner: NF, chain, chain hop, VF.
    let nf_of = |owner: &str| match owner {
        "blue" => "nfs/a1",
        "red" => "nfs/b1",
        "ops" => "nfs/o1",
        _ => "nfs/nobody",
    };
    let chain_of = |owner: &str| match owner {
        "blue" => "chains/ac",
        "red" => "chains/bc",
        _ => "chains/nobody",
    };
    for (who, token) in tokens {
        let admin = who == "ops";
        // What `who` gets for an object of `owner`: its own or any for an admin
        // (`ok`), nobody's NOT_FOUND for an admin, PERMISSION_DENIED otherwise.
        let expect = |owner: &str, ok: Code| {
            if owner == who || (admin && owner != "nobody") {
                ok
            } else if admin {
                Code::NotFound
            } else {
                Code::PermissionDenied
            }
        };
        let c = &mut w.c;
        let rt = &w.rt;
        let snap = &mut w.snap;
        let mut row = |what: String, got: Code, want: Code| {
            // After every refusal, the stored state as it was.
            if got != Code::Ok {
                assert_eq!(
                    snapshot(rt, snap),
                    before,
                    "{who} {what}: refused with {got:?}, and the stored state changed"
                );
            }
            rows.push(Row {
                who,
                what,
                got,
                want,
            })
        };

        // PF: everyone reads it; only admins set the VF count.
        row(
            "GetPf".into(),
            code(rt.block_on(c.pf.get_pf(req(token, proto::GetPfRequest::default())))),
            Code::Ok,
        );
        row(
            "SetVfCount".into(),
            code(rt.block_on(c.pf.set_vf_count(req(
                token,
                proto::SetVfCountRequest {
                    name: "pfs/0".into(),
                    num_vfs: 32,
                    validate_only: true,
                },
            )))),
            if admin {
                Code::Ok
            } else {
                Code::PermissionDenied
            },
        );

        // VFs: a tenant reads those its NFs hold; knobs are the admin's.
        for (owner, key) in [
            ("blue", "blue"),
            ("blue", "blue-hop"),
            ("red", "red"),
            ("red", "red-hop"),
            ("ops", "ops"),
            ("nobody", "free"),
        ] {
            let vf = w.vf[key].clone();
            let read = if admin || owner == who {
                Code::Ok
            } else {
                Code::PermissionDenied
            };
            row(
                format!("GetVf {key}"),
                code(
                    rt.block_on(c.vf.get_vf(req(token, proto::GetVfRequest { name: vf.clone() }))),
                ),
                read,
            );
            row(
                format!("UpdateVf {key}"),
                code(rt.block_on(c.vf.update_vf(req(
                    token,
                    proto::UpdateVfRequest {
                        vf: Some(proto::Vf {
                            name: vf.clone(),
                            trust: true,
                            ..Default::default()
                        }),
                        update_mask: vec!["trust".into()],
                        validate_only: true,
                    },
                )))),
                if admin {
                    Code::Ok
                } else {
                    Code::PermissionDenied
                },
            );
            if !admin {
                // An admin's reset really resets: the last phase does one.
                row(
                    format!("ResetVf {key}"),
                    code(
                        rt.block_on(c.vf.reset_vf(req(token, proto::ResetVfRequest { name: vf }))),
                    ),
                    Code::PermissionDenied,
                );
            }
        }
        let vfs = rt
            .block_on(c.vf.list_vfs(req(
                token,
                proto::ListVfsRequest {
                    page_size: 256,
                    ..Default::default()
                },
            )))
            .expect("ListVfs")
            .into_inner()
            .vfs;
        let want_vfs: BTreeSet<String> = if admin {
            (0..32).map(|i| format!("pfs/0/vfs/{i}")).collect()
        } else {
            [w.vf[who].clone(), w.vf[&*format!("{who}-hop")].clone()].into()
        };
        assert_eq!(names(&vfs, |v| &v.name), want_vfs, "{who}: ListVfs");

        // NFs.
        for owner in ["blue", "red", "ops", "nobody"] {
            let name = nf_of(owner);
            row(
                format!("GetNf {name}"),
                code(
                    rt.block_on(c.nf.get_nf(req(token, proto::GetNfRequest { name: name.into() }))),
                ),
                expect(owner, Code::Ok),
            );
            // Creating an NF of that name: one's own is ALREADY_EXISTS, another's
            // PERMISSION_DENIED (not ALREADY_EXISTS: that would tell it exists).
            row(
                format!("CreateNf {name}"),
                code(rt.block_on(c.nf.create_nf(req(
                    token,
                    proto::CreateNfRequest {
                        nf: Some(nf(name.trim_start_matches("nfs/"))),
                        validate_only: true,
                    },
                )))),
                match owner {
                    "nobody" => Code::Ok,
                    o if o == who || admin => Code::AlreadyExists,
                    _ => Code::PermissionDenied,
                },
            );
            // Deleting another's: refused (an admin's delete is the last phase's).
            if owner != who && !(admin && owner != "nobody") {
                row(
                    format!("DeleteNf {name}"),
                    code(rt.block_on(
                        c.nf.delete_nf(req(token, proto::DeleteNfRequest { name: name.into() })),
                    )),
                    expect(owner, Code::Ok),
                );
            }
        }
        let nfs = rt
            .block_on(c.nf.list_nfs(req(token, proto::ListNfsRequest::default())))
            .expect("ListNfs")
            .into_inner()
            .nfs;
        let want_nfs: BTreeSet<String> = match who {
            "blue" => ["nfs/a1", "nfs/ah"].map(String::from).into(),
            "red" => ["nfs/b1", "nfs/bh"].map(String::from).into(),
            _ => ["nfs/a1", "nfs/ah", "nfs/b1", "nfs/bh", "nfs/o1"]
                .map(String::from)
                .into(),
        };
        assert_eq!(names(&nfs, |n| &n.name), want_nfs, "{who}: ListNfs");

        // Chains.
        for owner in ["blue", "red", "nobody"] {
            let name = chain_of(owner);
            row(
                format!("GetChain {name}"),
                code(
                    rt.block_on(
                        c.chain
                            .get_chain(req(token, proto::GetChainRequest { name: name.into() })),
                    ),
                ),
                expect(owner, Code::Ok),
            );
            let stored = if owner == "nobody" {
                chain("nobody", "nobody-hop", 99)
            } else {
                rt.block_on(
                    c.chain
                        .get_chain(req(OPS, proto::GetChainRequest { name: name.into() })),
                )
                .expect("admin reads it")
                .into_inner()
            };
            row(
                format!("UpdateChain {name}"),
                code(rt.block_on(c.chain.update_chain(req(
                    token,
                    proto::UpdateChainRequest {
                        chain: Some(stored),
                        update_mask: vec![],
                        validate_only: true,
                        allow_missing: false,
                    },
                )))),
                expect(owner, Code::Ok),
            );
            if owner != who && !(admin && owner != "nobody") {
                row(
                    format!("DeleteChain {name}"),
                    code(rt.block_on(c.chain.delete_chain(req(
                        token,
                        proto::DeleteChainRequest { name: name.into() },
                    )))),
                    expect(owner, Code::Ok),
                );
            }
        }
        // A new chain: fine; one reusing another's chain or NF name: not.
        for (what, ch, want) in [
            ("CreateChain new", chain("fresh", "fresh-hop", 30), Code::Ok),
            (
                "CreateChain over red's chain name",
                chain("bc", "x-hop", 31),
                if who == "red" || admin {
                    Code::AlreadyExists
                } else {
                    Code::PermissionDenied
                },
            ),
            (
                "CreateChain with blue's NF as a hop",
                chain("y", "a1", 32),
                if who == "blue" || admin {
                    Code::AlreadyExists
                } else {
                    Code::PermissionDenied
                },
            ),
        ] {
            row(
                what.into(),
                code(rt.block_on(c.chain.create_chain(req(
                    token,
                    proto::CreateChainRequest {
                        chain: Some(ch),
                        validate_only: true,
                    },
                )))),
                want,
            );
        }
        let chains = rt
            .block_on(
                c.chain
                    .list_chains(req(token, proto::ListChainsRequest::default())),
            )
            .expect("ListChains")
            .into_inner()
            .chains;
        let want_chains: BTreeSet<String> = match who {
            "blue" => ["chains/ac".to_owned()].into(),
            "red" => ["chains/bc".to_owned()].into(),
            _ => ["chains/ac", "chains/bc"].map(String::from).into(),
        };
        assert_eq!(
            names(&chains, |c| &c.name),
            want_chains,
            "{who}: ListChains"
        );

        // Telemetry: a tenant's VFs and events only, and not the wire.
        let stats = rt
            .block_on(
                c.telemetry
                    .get_stats(req(token, proto::GetStatsRequest::default())),
            )
            .expect("GetStats")
            .into_inner();
        assert_eq!(names(&stats.vfs, |v| &v.vf), want_vfs, "{who}: GetStats");
        assert_eq!(
            stats.wire.is_some(),
            admin,
            "{who}: wire counters are the admin's"
        );
        let mut watch = rt
            .block_on(c.telemetry.watch_stats(req(
                token,
                proto::WatchStatsRequest {
                    interval_ms: 100,
                    active_only: false,
                },
            )))
            .expect("WatchStats")
            .into_inner();
        let first = rt
            .block_on(watch.message())
            .expect("a sample")
            .expect("a sample");
        assert_eq!(names(&first.vfs, |v| &v.vf), want_vfs, "{who}: WatchStats");
        drop(watch);
        let events = rt
            .block_on(
                c.telemetry
                    .list_events(req(token, proto::ListEventsRequest { limit: 1000 })),
            )
            .expect("ListEvents")
            .into_inner()
            .events;
        assert!(!events.is_empty(), "{who}: its creations are events");
        if !admin {
            assert!(
                events.iter().all(|e| e.tenant == who),
                "{who}: ListEvents shows another's: {events:?}"
            );
        }
        let mut stream = rt
            .block_on(
                c.telemetry
                    .watch_events(req(token, proto::WatchEventsRequest { replay: true })),
            )
            .expect("WatchEvents")
            .into_inner();
        for want in &events {
            let got = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), stream.message()).await
                })
                .expect("replayed in time")
                .expect("stream")
                .expect("event");
            assert_eq!(
                &got, want,
                "{who}: WatchEvents replays what ListEvents lists"
            );
        }
    }

    let failures: Vec<String> = rows
        .iter()
        .filter(|r| r.got != r.want)
        .map(|r| format!("{} {}: got {:?}, want {:?}", r.who, r.what, r.got, r.want))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} calls answered wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert!(
        rows.len() > 100,
        "the matrix is whole: {} calls",
        rows.len()
    );
    println!(
        "tenant matrix: {} calls, {} refused, each answered as expected",
        rows.len(),
        rows.iter().filter(|r| r.want != Code::Ok).count()
    );
    assert_eq!(
        snapshot(&w.rt, &mut w.c),
        before,
        "refusals and validate_only calls changed the stored state"
    );

    // The HTTP side: the same principals, the same scoping.
    http_matrix(&w);
    assert_eq!(
        w.restart_dumping(),
        stored,
        "the store is not byte for byte what it was before the matrix"
    );

    // Changes are recorded with who made them.
    let rt = &w.rt;
    let c = &mut w.c;
    rt.block_on(c.chain.delete_chain(req(
        BLUE,
        proto::DeleteChainRequest {
            name: "chains/ac".into(),
        },
    )))
    .expect("blue deletes its chain");
    rt.block_on(c.nf.delete_nf(req(
        OPS,
        proto::DeleteNfRequest {
            name: "nfs/b1".into(),
        },
    )))
    .expect("an admin deletes red's NF");
    rt.block_on(c.vf.reset_vf(req(
        OPS,
        proto::ResetVfRequest {
            name: w.vf["red-hop"].clone(),
        },
    )))
    .expect("an admin resets red's VF");
    let events = rt
        .block_on(
            c.telemetry
                .list_events(req(OPS, proto::ListEventsRequest { limit: 1000 })),
        )
        .unwrap()
        .into_inner()
        .events;
    let find = |text: &str| {
        events
            .iter()
            .rev()
            .find(|e| e.message.contains(text))
            .unwrap_or_else(|| panic!("no event {text:?} in {events:?}"))
    };
    let e = find("chain chains/ac deleted");
    assert_eq!((e.principal.as_str(), e.tenant.as_str()), ("blue", "blue"));
    let e = find("NF nfs/b1 deleted");
    assert_eq!((e.principal.as_str(), e.tenant.as_str()), ("ops", "red"));
    let e = find("function-level reset");
    assert_eq!((e.principal.as_str(), e.tenant.as_str()), ("ops", "red"));
    let e = find("NF nfs/a1 (l2fwd) created");
    assert_eq!((e.principal.as_str(), e.tenant.as_str()), ("blue", "blue"));
    // Red sees the deletion of its NF, blue does not.
    let red = rt
        .block_on(
            c.telemetry
                .list_events(req(RED, proto::ListEventsRequest { limit: 1000 })),
        )
        .unwrap()
        .into_inner()
        .events;
    assert!(red.iter().any(|e| e.message.contains("NF nfs/b1 deleted")));
    assert!(red.iter().all(|e| !e.message.contains("chains/ac")));

    no_token_in_log(w);
}

/// Missing, malformed and unknown credentials: UNAUTHENTICATED for every service.
#[test]
fn bad_credentials_are_unauthenticated() {
    let mut w = start();
    let before = snapshot(&w.rt, &mut w.c);
    let rt = &w.rt;
    let c = &mut w.c;
    let digest = format!("Bearer {}", token_digest_hex(OPS.as_bytes()));
    for (what, value) in [
        ("no token", None),
        ("wrong token", Some("Bearer not-a-token")),
        ("a token of another scheme", Some("Basic b3BzOm9wcw==")),
        ("an empty bearer", Some("Bearer ")),
        ("the digest instead of the token", Some(digest.as_str())),
    ] {
        let codes = [
            code(rt.block_on(c.pf.get_pf(raw(value, proto::GetPfRequest::default())))),
            code(rt.block_on(c.vf.list_vfs(raw(value, proto::ListVfsRequest::default())))),
            code(rt.block_on(c.nf.create_nf(raw(
                value,
                proto::CreateNfRequest {
                    nf: Some(nf("intruder")),
                    validate_only: false,
                },
            )))),
            code(rt.block_on(c.chain.delete_chain(raw(
                value,
                proto::DeleteChainRequest {
                    name: "chains/ac".into(),
                },
            )))),
            code(
                rt.block_on(
                    c.telemetry
                        .list_events(raw(value, proto::ListEventsRequest::default())),
                ),
            ),
        ];
        assert!(
            codes.iter().all(|c| *c == Code::Unauthenticated),
            "{what}: {codes:?}"
        );
    }
    // Health needs no credentials (probes).
    let mut health = tonic_health::pb::health_client::HealthClient::new(w.server().channel(&w.rt));
    assert!(
        w.rt.block_on(health.check(tonic_health::pb::HealthCheckRequest::default()))
            .is_ok()
    );
    assert_eq!(snapshot(&w.rt, &mut w.c), before, "nothing changed");
    // And on the HTTP side: 401 with a Bearer challenge.
    for path in ["/api/v1/nfs", "/api/v1/stream", "/metrics"] {
        let (status, head, _) = http_get(w.http, path, Some("Bearer nope"));
        assert_eq!(status, 401, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        let (status, _, _) = http_get(w.http, path, None);
        assert_eq!(status, 401, "{path} without a token");
    }
    no_token_in_log(w);
}

/// 20 clients of one tenant race to create NFs: exactly its max_vfs succeed, the
/// rest are RESOURCE_EXHAUSTED naming the quota.
#[test]
fn quotas_hold_under_concurrency() {
    let w = start();
    let url = w.server().url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<Result<proto::Nf, tonic::Status>> = rt.block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                // Each client on its own connection.
                let channel = tonic::transport::Channel::from_shared(url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut nfs = proto::nf_service_client::NfServiceClient::new(channel);
                nfs.create_nf(req(
                    GREEN,
                    proto::CreateNfRequest {
                        nf: Some(nf(&format!("g{i}"))),
                        validate_only: false,
                    },
                ))
                .await
                .map(tonic::Response::into_inner)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 8, "max_vfs = 8: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");
        assert!(r.message().contains("max_vfs"), "{}", r.message());
    }
    let mut w = w;
    let listed =
        w.rt.block_on(
            w.c.nf
                .list_nfs(req(GREEN, proto::ListNfsRequest::default())),
        )
        .unwrap()
        .into_inner()
        .nfs;
    assert_eq!(listed.len(), 8);
    // A chain would need one more VF: over the quota too, and nothing is created.
    let err =
        w.rt.block_on(w.c.chain.create_chain(req(
            GREEN,
            proto::CreateChainRequest {
                chain: Some(chain("gc", "gh", 40)),
                validate_only: false,
            },
        )))
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // After deleting two, a chain fits; a second chain is over max_chains. Which
    // eight were created is up to the race: delete two of those listed.
    for held in &listed[..2] {
        w.rt.block_on(w.c.nf.delete_nf(req(
            GREEN,
            proto::DeleteNfRequest {
                name: held.name.clone(),
            },
        )))
        .unwrap_or_else(|e| panic!("{} is deleted: {e:?}", held.name));
    }
    let mut chains = 0;
    for (name, hop, vlan) in [("gc", "gh", 40), ("gd", "gi", 41)] {
        let r = w.rt.block_on(w.c.chain.create_chain(req(
            GREEN,
            proto::CreateChainRequest {
                chain: Some(chain(name, hop, vlan)),
                validate_only: false,
            },
        )));
        match r {
            Ok(_) => chains += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("max_chains"), "{}", e.message());
            }
        }
    }
    assert_eq!(chains, 1, "max_chains = 1");
    no_token_in_log(w);
}

#[test]
fn an_unauthenticated_listener_beyond_loopback_is_refused() {
    let data = TempDir::new("tenants-refuse");
    for flags in [
        vec!["--grpc".to_owned(), format!("0.0.0.0:{}", free_port())],
        vec!["--http".to_owned(), format!("0.0.0.0:{}", free_port())],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nfhost"))
            .arg("serve")
            .args(&flags)
            .arg("--data-dir")
            .arg(data.0.join("state"))
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{flags:?} was served without auth");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to serve")
                && err.contains("--auth")
                && err.contains("--insecure"),
            "{flags:?}: {err}"
        );
    }
    // Nothing was started: no store was created.
    assert!(
        !data.0.join("state").exists(),
        "refused before opening the store"
    );
}

/// A GET with an optional `Authorization` value: status, head, body. The live
/// stream, which never ends, is read for 3 s.
fn http_get(port: u16, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let (status, head, body, _) = http::get_with(port, path, &headers, Duration::from_secs(3));
    (status, head, body)
}

fn http_matrix(w: &World) {
    let bearer = |t: &str| format!("Bearer {t}");
    // The page is public.
    let (status, _, _) = http_get(w.http, "/", None);
    assert_eq!(status, 200);
    for (who, token) in [("blue", BLUE), ("red", RED), ("ops", OPS)] {
        let auth = bearer(token);
        let json = |path: &str| -> serde_json::Value {
            let (status, _, body) = http_get(w.http, path, Some(&auth));
            assert_eq!(status, 200, "{who} {path}: {body}");
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{who} {path}: {e}: {body}"))
        };
        let list = |v: &serde_json::Value, key: &str| -> BTreeSet<String> {
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let nfs = list(&json("/api/v1/nfs"), "nfs");
        let chains = list(&json("/api/v1/chains"), "chains");
        let vfs = json("/api/v1/vfs")["vfs"].as_array().unwrap().len();
        let stats = json("/api/v1/stats");
        let events = json("/api/v1/events?limit=1000");
        json("/api/v1/pf");
        match who {
            "ops" => {
                assert_eq!(nfs.len(), 5);
                assert_eq!(chains.len(), 2);
                assert_eq!(vfs, 32);
                assert!(!stats["wire"].is_null());
            }
            tenant => {
                let mine = if tenant == "blue" {
                    ["nfs/a1", "nfs/ah"]
                } else {
                    ["nfs/b1", "nfs/bh"]
                };
                assert_eq!(nfs, mine.map(String::from).into(), "{who} /api/v1/nfs");
                assert_eq!(chains.len(), 1, "{who} /api/v1/chains");
                assert_eq!(vfs, 2, "{who} /api/v1/vfs");
                assert_eq!(stats["vfs"].as_array().unwrap().len(), 2);
                assert!(stats["wire"].is_null(), "{who}: the wire is the admin's");
                for e in events["events"].as_array().unwrap() {
                    assert_eq!(e["tenant"], tenant, "{who} /api/v1/events: {e}");
                }
            }
        }
        // Another's NF report: 403 for a tenant.
        let other = if who == "blue" { "b1" } else { "a1" };
        let (status, _, _) = http_get(w.http, &format!("/api/v1/nfs/{other}/report"), Some(&auth));
        if who == "ops" {
            assert!(status == 200 || status == 404, "ops report: {status}");
        } else {
            assert_eq!(status, 403, "{who} reads another's report");
        }
        // /metrics is the admin's.
        let (status, _, _) = http_get(w.http, "/metrics", Some(&auth));
        assert_eq!(
            status,
            if who == "ops" { 200 } else { 403 },
            "{who} /metrics"
        );
    }
    // The live stream, as blue: rates of blue's VFs only (read for 3 s: a few frames).
    let (status, _, body) = http_get(w.http, "/api/v1/stream", Some(&bearer(BLUE)));
    assert_eq!(status, 200, "{body}");
    let frames: Vec<serde_json::Value> = body
        .split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: stats"))
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).expect("a stats frame is JSON"))
        .collect();
    assert!(!frames.is_empty(), "no stats frame in 3 s: {body}");
    let blue_vfs: BTreeSet<String> = [w.vf["blue"].clone(), w.vf["blue-hop"].clone()].into();
    for f in &frames {
        let vfs: BTreeSet<String> = f["vfs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["vf"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(vfs, blue_vfs, "blue's stream shows other VFs: {f}");
    }
    // Bodies over the limit: 413.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /api/v1/nfs HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A chunked body without a length: 413 once the limit is passed.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /api/v1/nfs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..8 {
        // The server may answer and close before all of it is sent.
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Stops the service and checks that no token reached its log.
fn no_token_in_log(w: World) {
    let World { server, logs, .. } = w;
    server.expect("running").stop();
    for log in logs {
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(
            text.contains("listening"),
            "the log is the service's: {text}"
        );
        for token in [OPS, BLUE, RED, GREEN, "blue-token-rotated-3f7c"] {
            assert!(!text.contains(token), "a token is in {}", log.display());
        }
    }
}

/// nfctl, as a tenant would use it: `chain apply` creates the chain (the name is
/// nobody's), applies it again unchanged, and another tenant's apply of the same
/// file is refused without touching it; the token travels in NFHOST_TOKEN.
#[test]
fn nfctl_applies_a_tenants_chain_and_another_tenant_cannot() {
    let mut w = start();
    let url = w.server().url();
    let nfctl = |token: &str, args: &[&str]| {
        let out = Command::new(server::nfctl_bin())
            .args(["--server", &url])
            .args(args)
            .env("NFHOST_TOKEN", token)
            .output()
            .expect("nfctl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            token.is_empty() || !text.contains(token),
            "nfctl printed its token"
        );
        (out.status.success(), text)
    };
    let (ok, text) = nfctl(BLUE, &["chain", "apply", "examples/edge.toml"]);
    assert!(ok, "{text}");
    assert!(text.contains("chains/edge: created"), "{text}");
    let (ok, text) = nfctl(BLUE, &["chain", "apply", "examples/edge.toml"]);
    assert!(ok && text.contains("unchanged"), "{text}");
    let (ok, text) = nfctl(BLUE, &["chain", "get", "edge"]);
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("Tenant:") && l.ends_with("blue")),
        "{text}"
    );
    let (ok, text) = nfctl(BLUE, &["events"]);
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(" blue ") && l.contains("chain chains/edge created")),
        "the event says who: {text}"
    );
    let before = snapshot(&w.rt, &mut w.c);
    let (ok, text) = nfctl(RED, &["chain", "apply", "examples/edge.toml"]);
    assert!(!ok, "red applied blue's chain: {text}");
    assert!(text.contains("PERMISSION_DENIED"), "{text}");
    let (ok, text) = nfctl(RED, &["chain", "delete", "edge"]);
    assert!(!ok && text.contains("PERMISSION_DENIED"), "{text}");
    let (ok, text) = nfctl("", &["nf", "list"]);
    assert!(!ok && text.contains("UNAUTHENTICATED"), "{text}");
    assert_eq!(
        snapshot(&w.rt, &mut w.c),
        before,
        "red's attempts changed nothing"
    );
    let chain =
        w.rt.block_on(w.c.chain.get_chain(req(
            BLUE,
            proto::GetChainRequest {
                name: "chains/edge".into(),
            },
        )))
        .expect("blue's")
        .into_inner();
    assert_eq!(chain.tenant, "blue");
    no_token_in_log(w);
}

/// SIGHUP re-reads the principals file: a rotated token works at once on the
/// same connection, the old one is refused; a broken file keeps the principals.
#[test]
fn sighup_rotates_tokens_without_dropping_connections() {
    let mut w = start();
    let auth = w._data.0.join("principals.toml");
    let list = |w: &mut World, token: &str| {
        code(
            w.rt.block_on(
                w.c.nf
                    .list_nfs(req(token, proto::ListNfsRequest::default())),
            ),
        )
    };
    assert_eq!(list(&mut w, BLUE), Code::Ok);
    let rotated = "blue-token-rotated-3f7c";
    std::fs::write(
        &auth,
        principals().replace(
            &token_digest_hex(BLUE.as_bytes()),
            &token_digest_hex(rotated.as_bytes()),
        ),
    )
    .unwrap();
    let hup = |w: &World| {
        let status = Command::new("kill")
            .args(["-HUP", &w.server().child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup(&w);
    // The reload is asynchronous to the signal: wait for its effect.
    server::wait_until("the rotated token to be taken", 10, || {
        list(&mut w, rotated) == Code::Ok
    });
    assert_eq!(
        list(&mut w, BLUE),
        Code::Unauthenticated,
        "the old token still works"
    );
    // A broken file: the principals stay as they were.
    std::fs::write(&auth, "[[admin]]\nname = 42\n").unwrap();
    hup(&w);
    server::wait_until("the log to say the file was not taken", 10, || {
        std::fs::read_to_string(&w.logs[0]).is_ok_and(|l| l.contains("principals file not taken"))
    });
    assert_eq!(
        list(&mut w, rotated),
        Code::Ok,
        "a broken file dropped the principals"
    );
    assert_eq!(list(&mut w, OPS), Code::Ok);
    no_token_in_log(w);
}
