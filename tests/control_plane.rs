//! The control plane against the real `nfhost serve` binary and a plain gRPC client:
//! every RPC, every refusal with its code and an unchanged store, chains carrying
//! traffic, the supervisor, restarts, and crash safety under SIGKILL.

#[path = "common/server.rs"]
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nfhost_api::proto;
use server::{
    Clients, Server, TempDir, events, nf_pids, read_store, runtime, state_dump, wait_until,
};
use tonic::Code;

use server::GEN;

fn edge_chain() -> proto::Chain {
    nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))
        .expect("example chain parses")
}

fn nf(name: &str, kind: &str) -> proto::Nf {
    proto::Nf {
        name: name.into(),
        kind: kind.into(),
        ..Default::default()
    }
}

/// The status code of a call (Ok when it was accepted).
fn ignore<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn nf_state(rt: &tokio::runtime::Runtime, c: &mut Clients, name: &str) -> proto::NfStatus {
    rt.block_on(c.nf.get_nf(proto::GetNfRequest { name: name.into() }))
        .expect("get nf")
        .into_inner()
        .status
        .unwrap_or_default()
}

fn vf_tx(rt: &tokio::runtime::Runtime, c: &mut Clients, vf: &str) -> u64 {
    let stats = rt
        .block_on(
            c.telemetry
                .get_stats(proto::GetStatsRequest { active_only: false }),
        )
        .expect("stats")
        .into_inner();
    stats
        .vfs
        .iter()
        .find(|s| s.vf == vf)
        .map_or(0, |s| s.tx_packets)
}

#[test]
fn every_rpc_works_and_every_refusal_has_its_code_and_changes_nothing() {
    let data = TempDir::new("rpc");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));

    // PF.
    let pf = rt
        .block_on(c.pf.get_pf(proto::GetPfRequest {
            name: "pfs/0".into(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!((pf.num_vfs, pf.total_vfs, pf.wire.as_str()), (8, 64, "gen"));
    // VFs: list with paging, get, update, reset.
    let page1 = rt
        .block_on(c.vf.list_vfs(proto::ListVfsRequest {
            parent: "pfs/0".into(),
            page_size: 5,
            page_token: String::new(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(page1.vfs.len(), 5);
    let page2 = rt
        .block_on(c.vf.list_vfs(proto::ListVfsRequest {
            parent: "pfs/0".into(),
            page_size: 5,
            page_token: page1.next_page_token,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(page2.vfs.len(), 3);
    assert!(page2.next_page_token.is_empty());
    let updated = rt
        .block_on(c.vf.update_vf(proto::UpdateVfRequest {
            vf: Some(proto::Vf {
                name: "pfs/0/vfs/7".into(),
                vlan: 42,
                mtu: 9000,
                ..Default::default()
            }),
            update_mask: vec!["vlan".into(), "mtu".into()],
            validate_only: false,
        }))
        .unwrap()
        .into_inner();
    assert_eq!((updated.vlan, updated.mtu), (42, 9000));
    rt.block_on(c.vf.reset_vf(proto::ResetVfRequest {
        name: "pfs/0/vfs/7".into(),
    }))
    .unwrap();
    let vf7 = rt
        .block_on(c.vf.get_vf(proto::GetVfRequest {
            name: "pfs/0/vfs/7".into(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(vf7.vlan, 42, "admin config survives FLR");
    // NFs and chains.
    let created = rt
        .block_on(c.nf.create_nf(proto::CreateNfRequest {
            nf: Some(nf("solo", "l2fwd")),
            validate_only: false,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(created.name, "nfs/solo");
    let chain = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(edge_chain()),
            validate_only: false,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(chain.vfs.len(), 2);
    let nfs = rt
        .block_on(c.nf.list_nfs(proto::ListNfsRequest::default()))
        .unwrap()
        .into_inner()
        .nfs;
    assert_eq!(nfs.len(), 3);
    let chains = rt
        .block_on(c.chain.list_chains(proto::ListChainsRequest::default()))
        .unwrap()
        .into_inner()
        .chains;
    assert_eq!(chains.len(), 1);
    rt.block_on(c.chain.get_chain(proto::GetChainRequest {
        name: "chains/edge".into(),
    }))
    .unwrap();
    wait_until("NFs running", 10, || {
        nf_state(&rt, &mut c, "nfs/solo").state == proto::NfState::Running as i32
    });
    // Telemetry: stats, a stats stream, events.
    let mut watch = rt
        .block_on(c.telemetry.watch_stats(proto::WatchStatsRequest {
            interval_ms: 100,
            active_only: true,
        }))
        .unwrap()
        .into_inner();
    let first = rt
        .block_on(watch.message())
        .unwrap()
        .expect("a stats sample");
    assert!(first.vfs.iter().any(|v| v.nf == "nfs/solo"));
    assert!(
        events(&rt, &mut c)
            .iter()
            .any(|e| e.kind == proto::EventKind::NfStarted as i32)
    );
    drop(watch);
    server.stop();
    let before = state_dump(&data.0);
    let events_before = read_store(&data.0, |store| store.events(1000).unwrap().len());

    // Every refusal: the right code, and nothing stored.
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    let cases: Vec<(&str, Code, Code)> = vec![
        (
            "count above total",
            Code::InvalidArgument,
            ignore(rt.block_on(c.pf.set_vf_count(proto::SetVfCountRequest {
                name: "pfs/0".into(),
                num_vfs: 65,
                validate_only: false,
            }))),
        ),
        (
            "count busy",
            Code::FailedPrecondition,
            ignore(rt.block_on(c.pf.set_vf_count(proto::SetVfCountRequest {
                name: "pfs/0".into(),
                num_vfs: 4,
                validate_only: false,
            }))),
        ),
        (
            "count 0 while assigned",
            Code::FailedPrecondition,
            ignore(rt.block_on(c.pf.set_vf_count(proto::SetVfCountRequest {
                name: "pfs/0".into(),
                num_vfs: 0,
                validate_only: false,
            }))),
        ),
        (
            "unknown pf",
            Code::NotFound,
            ignore(rt.block_on(c.pf.get_pf(proto::GetPfRequest {
                name: "pfs/9".into(),
            }))),
        ),
        (
            "unknown vf",
            Code::NotFound,
            ignore(rt.block_on(c.vf.get_vf(proto::GetVfRequest {
                name: "pfs/0/vfs/99".into(),
            }))),
        ),
        (
            "bad mac",
            Code::InvalidArgument,
            ignore(rt.block_on(c.vf.update_vf(proto::UpdateVfRequest {
                vf: Some(proto::Vf {
                    name: "pfs/0/vfs/6".into(),
                    mac: "ff:ff:ff:ff:ff:ff".into(),
                    ..Default::default()
                }),
                update_mask: vec!["mac".into()],
                validate_only: false,
            }))),
        ),
        (
            "bad vlan",
            Code::InvalidArgument,
            ignore(rt.block_on(c.vf.update_vf(proto::UpdateVfRequest {
                vf: Some(proto::Vf {
                    name: "pfs/0/vfs/6".into(),
                    vlan: 5000,
                    ..Default::default()
                }),
                update_mask: vec!["vlan".into()],
                validate_only: false,
            }))),
        ),
        (
            "bad mtu",
            Code::InvalidArgument,
            ignore(rt.block_on(c.vf.update_vf(proto::UpdateVfRequest {
                vf: Some(proto::Vf {
                    name: "pfs/0/vfs/6".into(),
                    mtu: 10,
                    ..Default::default()
                }),
                update_mask: vec!["mtu".into()],
                validate_only: false,
            }))),
        ),
        (
            "bad mask",
            Code::InvalidArgument,
            ignore(rt.block_on(c.vf.update_vf(proto::UpdateVfRequest {
                vf: Some(proto::Vf {
                    name: "pfs/0/vfs/6".into(),
                    ..Default::default()
                }),
                update_mask: vec!["owner".into()],
                validate_only: false,
            }))),
        ),
        (
            "unknown kind",
            Code::InvalidArgument,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(nf("x", "teleport")),
                validate_only: false,
            }))),
        ),
        (
            "bad name",
            Code::InvalidArgument,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(nf("Bad_Name", "l2fwd")),
                validate_only: false,
            }))),
        ),
        (
            "bad config",
            Code::InvalidArgument,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(proto::Nf {
                    config: "{\"top\": 0}".into(),
                    ..nf("m", "monitor")
                }),
                validate_only: false,
            }))),
        ),
        (
            "duplicate nf",
            Code::AlreadyExists,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(nf("solo", "l2fwd")),
                validate_only: false,
            }))),
        ),
        (
            "owned vf",
            Code::FailedPrecondition,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(proto::Nf {
                    vf: "pfs/0/vfs/0".into(),
                    ..nf("other", "l2fwd")
                }),
                validate_only: false,
            }))),
        ),
        (
            "vf out of range",
            Code::NotFound,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(proto::Nf {
                    vf: "pfs/0/vfs/40".into(),
                    ..nf("other", "l2fwd")
                }),
                validate_only: false,
            }))),
        ),
        (
            "unknown nf",
            Code::NotFound,
            ignore(rt.block_on(c.nf.get_nf(proto::GetNfRequest {
                name: "nfs/ghost".into(),
            }))),
        ),
        (
            "delete chain hop",
            Code::FailedPrecondition,
            ignore(rt.block_on(c.nf.delete_nf(proto::DeleteNfRequest {
                name: "nfs/mon".into(),
            }))),
        ),
        (
            "duplicate chain",
            Code::AlreadyExists,
            ignore(rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
                chain: Some(edge_chain()),
                validate_only: false,
            }))),
        ),
        (
            "update changing a chain's hops",
            Code::FailedPrecondition,
            ignore(rt.block_on(c.chain.update_chain(proto::UpdateChainRequest {
                chain: Some(proto::Chain {
                    nfs: edge_chain().nfs.into_iter().rev().collect(),
                    ..edge_chain()
                }),
                update_mask: vec![],
                validate_only: false,
                allow_missing: false,
            }))),
        ),
        (
            "update with a bad config",
            Code::InvalidArgument,
            ignore(rt.block_on(c.chain.update_chain(proto::UpdateChainRequest {
                chain: Some(proto::Chain {
                    nfs: vec![
                        proto::ChainNf {
                            config: "{\"top\": 0}".into(),
                            exec: None,
                            ..edge_chain().nfs[0].clone()
                        },
                        edge_chain().nfs[1].clone(),
                    ],
                    ..edge_chain()
                }),
                update_mask: vec![],
                validate_only: false,
                allow_missing: false,
            }))),
        ),
        (
            "update of an unknown chain",
            Code::NotFound,
            ignore(rt.block_on(c.chain.update_chain(proto::UpdateChainRequest {
                chain: Some(proto::Chain {
                    name: "chains/ghost".into(),
                    ..edge_chain()
                }),
                update_mask: vec![],
                validate_only: false,
                allow_missing: false,
            }))),
        ),
        (
            "chain without nfs",
            Code::InvalidArgument,
            ignore(rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
                chain: Some(proto::Chain {
                    name: "chains/empty".into(),
                    ..Default::default()
                }),
                validate_only: false,
            }))),
        ),
        (
            "no free vf",
            Code::ResourceExhausted,
            ignore(
                rt.block_on(
                    c.chain.create_chain(proto::CreateChainRequest {
                        chain: Some(proto::Chain {
                            name: "chains/big".into(),
                            classifier: Some(proto::Classifier {
                                vlan: 300,
                                dst_mac: String::new(),
                            }),
                            nfs: (0..6)
                                .map(|i| proto::ChainNf {
                                    name: format!("big{i}"),
                                    kind: "l2fwd".into(),
                                    config: String::new(),
                                    exec: None,
                                })
                                .collect(),
                            ..Default::default()
                        }),
                        validate_only: false,
                    }),
                ),
            ),
        ),
        (
            "unknown chain",
            Code::NotFound,
            ignore(rt.block_on(c.chain.delete_chain(proto::DeleteChainRequest {
                name: "chains/ghost".into(),
            }))),
        ),
        (
            "validate only",
            Code::Ok,
            ignore(rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                nf: Some(nf("dry", "l2fwd")),
                validate_only: true,
            }))),
        ),
    ];
    for (what, want, got) in cases {
        assert_eq!(got, want, "{what}");
    }
    // Field-level details on INVALID_ARGUMENT.
    let err = rt
        .block_on(c.nf.create_nf(proto::CreateNfRequest {
            nf: Some(nf("x", "teleport")),
            validate_only: false,
        }))
        .unwrap_err();
    let details =
        tonic_types::StatusExt::get_details_bad_request(&err).expect("BadRequest details");
    assert_eq!(details.field_violations[0].field, "nf.kind");
    server.stop();
    assert_eq!(
        state_dump(&data.0),
        before,
        "a refused request changed the stored state"
    );
    let added: Vec<_> = read_store(&data.0, |store| {
        store
            .events(1000)
            .unwrap()
            .into_iter()
            .skip(events_before)
            .collect()
    });
    // A restart logs the service and its NFs starting; a refused request logs nothing.
    assert!(
        added
            .iter()
            .all(|e| e.kind != proto::EventKind::ConfigChanged as i32),
        "refused requests logged config changes: {added:?}"
    );
}

/// The two-way example chain: stored as sent, its rules refused with field
/// violations, its return VLAN clashing with other chains' classifiers both ways,
/// and every refusal leaving the store as it was.
#[test]
fn two_way_chains_are_validated_and_their_return_vlan_clashes_like_a_classifier() {
    let data = TempDir::new("two-way");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    let stick = nfhost_api::chain_file::parse_chain(include_str!("../examples/stick.toml"))
        .expect("example parses");
    rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
        chain: Some(stick.clone()),
        validate_only: false,
    }))
    .expect("two-way chain created");
    let stored = rt
        .block_on(c.chain.get_chain(proto::GetChainRequest {
            name: "chains/stick".into(),
        }))
        .expect("get")
        .into_inner();
    assert_eq!(
        stored.egress,
        Some(proto::Egress {
            vlan: 200,
            two_way: true
        })
    );
    server.stop();
    let before = state_dump(&data.0);

    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    let one = |name: &str| proto::ChainNf {
        name: name.into(),
        kind: "l2fwd".into(),
        config: String::new(),
        exec: None,
    };
    let chain = |name: &str, vlan: u32, dst_mac: &str, egress: u32, two_way: bool| proto::Chain {
        name: format!("chains/{name}"),
        classifier: Some(proto::Classifier {
            vlan,
            dst_mac: dst_mac.into(),
        }),
        egress: Some(proto::Egress {
            vlan: egress,
            two_way,
        }),
        nfs: vec![one(&format!("{name}-nf"))],
        ..Default::default()
    };
    let mut create = |chain: proto::Chain| {
        rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(chain),
            validate_only: false,
        }))
        .expect_err("refused")
    };
    for (what, refused, field) in [
        (
            "no classifier VLAN",
            create(chain("a", 0, "", 300, true)),
            "chain.classifier.vlan",
        ),
        (
            "no egress VLAN",
            create(chain("b", 300, "", 0, true)),
            "chain.egress.vlan",
        ),
        (
            "one VLAN twice",
            create(chain("c", 300, "", 300, true)),
            "chain.egress.vlan",
        ),
        (
            "a MAC classifier",
            create(chain("d", 300, "02:00:00:00:ff:01", 400, true)),
            "chain.classifier.dst_mac",
        ),
    ] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}");
        let details =
            tonic_types::StatusExt::get_details_bad_request(&refused).expect("BadRequest details");
        assert_eq!(details.field_violations[0].field, field, "{what}");
    }
    for (what, refused, says) in [
        (
            "a classifier on stick's return VLAN",
            create(chain("e", 200, "", 0, false)),
            "chains/stick already takes wire frames of VLAN 200 (its two-way return direction (egress.vlan)), which this chain's classifier needs",
        ),
        (
            "a return VLAN on stick's classifier",
            create(chain("f", 300, "", 100, true)),
            "chains/stick already takes wire frames of VLAN 100 (its classifier), which this chain's two-way return direction (egress.vlan) needs",
        ),
        (
            "a return VLAN on stick's return VLAN",
            create(chain("g", 300, "", 200, true)),
            "chains/stick already takes wire frames of VLAN 200 (its two-way return direction (egress.vlan)), which this chain's two-way return direction (egress.vlan) needs",
        ),
    ] {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{what}");
        assert_eq!(refused.message(), says, "{what}");
    }
    server.stop();
    assert_eq!(
        state_dump(&data.0),
        before,
        "a refused request changed the stored state"
    );

    // Deleting the two-way chain frees both of its VLANs.
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    rt.block_on(c.chain.delete_chain(proto::DeleteChainRequest {
        name: "chains/stick".into(),
    }))
    .expect("deleted");
    rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
        chain: Some(chain("e", 200, "", 0, false)),
        validate_only: false,
    }))
    .expect("VLAN 200 is free again");
    server.stop();
}

#[test]
fn the_example_chain_carries_traffic_and_comes_back_after_a_restart() {
    let data = TempDir::new("chain");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    let chain = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(edge_chain()),
            validate_only: false,
        }))
        .unwrap()
        .into_inner();
    let last = chain.vfs.last().cloned().unwrap();
    wait_until("traffic through the chain", 10, || {
        vf_tx(&rt, &mut c, &last) > 1000
    });
    // Restart the service: the chain comes back with traffic, with no request.
    server.stop();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    wait_until("traffic after restart", 10, || {
        vf_tx(&rt, &mut c, &last) > 1000
    });
    for hop in ["mon", "fwd"] {
        assert_eq!(nf_pids(hop).len(), 1, "{hop} runs exactly once");
    }
    server.stop();
    for hop in ["mon", "fwd"] {
        wait_until("NFs gone with the service", 5, || nf_pids(hop).is_empty());
    }
}

#[test]
fn the_supervisor_restarts_a_killed_nf_and_gives_up_on_a_crash_loop() {
    let data = TempDir::new("supervisor");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));
    let mut chain = edge_chain();
    chain.name = "chains/sup".into();
    chain.nfs[0].name = "supmon".into();
    chain.nfs[1].name = "supfwd".into();
    let chain = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(chain),
            validate_only: false,
        }))
        .unwrap()
        .into_inner();
    let last = chain.vfs.last().cloned().unwrap();
    wait_until("traffic", 10, || vf_tx(&rt, &mut c, &last) > 500);

    // Killed from outside: restarted, and the chain carries traffic again.
    let pid = nf_state(&rt, &mut c, "supfwd").pid;
    assert!(pid > 0);
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait_until("a new process", 10, || {
        let s = nf_state(&rt, &mut c, "supfwd");
        s.state == proto::NfState::Running as i32 && s.pid != pid && s.pid != 0
    });
    assert_eq!(nf_state(&rt, &mut c, "supfwd").restarts, 1);
    let before = vf_tx(&rt, &mut c, &last);
    wait_until("traffic again", 10, || {
        vf_tx(&rt, &mut c, &last) > before + 500
    });

    // Killed every time it comes back: a crash loop ends failed, with the reason.
    let mut killed = BTreeSet::new();
    wait_until("failed", 30, || {
        let s = nf_state(&rt, &mut c, "supfwd");
        if s.state == proto::NfState::Failed as i32 {
            return true;
        }
        if s.pid != 0 && killed.insert(s.pid) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &s.pid.to_string()])
                .status();
        }
        false
    });
    let status = nf_state(&rt, &mut c, "supfwd");
    assert!(status.reason.starts_with("crash loop"), "{}", status.reason);
    assert!(status.last_exit.contains("SIGKILL"), "{}", status.last_exit);
    assert!(
        events(&rt, &mut c)
            .iter()
            .any(|e| e.kind == proto::EventKind::NfFailed as i32 && e.nf == "nfs/supfwd"),
        "no failure event"
    );
    server.stop();
}

/// SIGKILL the service at random moments during a stream of creates and deletes; after
/// each restart every acknowledged change is there, no VF has two owners, no NF runs
/// twice, and the NFs that run are the stored ones.
#[test]
fn crash_safety_under_sigkill() {
    let data = TempDir::new("crash");
    let rt = runtime();
    let flags = &["--wire", "none", "--vfs", "6"];
    // What the service acknowledged: name → present.
    let mut acked: BTreeMap<String, bool> = BTreeMap::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..30 {
        let server = Server::start(&data.0, flags);
        let mut c = Clients::new(server.channel(&rt));
        // Check the previous rounds' acknowledged changes.
        let nfs = rt
            .block_on(c.nf.list_nfs(proto::ListNfsRequest::default()))
            .unwrap()
            .into_inner()
            .nfs;
        let stored: BTreeSet<String> = nfs
            .iter()
            .map(|n| n.name.trim_start_matches("nfs/").to_owned())
            .collect();
        for (name, present) in &acked {
            if *present {
                assert!(
                    stored.contains(name),
                    "round {round}: acknowledged nfs/{name} lost"
                );
            } else {
                assert!(
                    !stored.contains(name),
                    "round {round}: acknowledged delete of nfs/{name} undone"
                );
            }
        }
        let vfs: Vec<&String> = nfs.iter().map(|n| &n.vf).collect();
        let unique: BTreeSet<&String> = vfs.iter().copied().collect();
        assert_eq!(
            unique.len(),
            vfs.len(),
            "round {round}: a VF has two owners: {vfs:?}"
        );
        wait_until("stored NFs running, once each", 10, || {
            stored.iter().all(|name| nf_pids(name).len() == 1)
        });
        // A burst of changes, killed at a random moment.
        let kill_after = Duration::from_millis(next() % 300);
        let started = std::time::Instant::now();
        let mut i = 0;
        while started.elapsed() < kill_after {
            i += 1;
            let name = format!("n{}", next() % 8);
            let result = if stored.contains(&name) || acked.get(&name) == Some(&true) {
                rt.block_on(c.nf.delete_nf(proto::DeleteNfRequest { name: name.clone() }))
                    .map(|_| false)
            } else {
                rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
                    nf: Some(nf(&name, "l2fwd")),
                    validate_only: false,
                }))
                .map(|_| true)
            };
            match result {
                Ok(present) => {
                    acked.insert(name, present);
                }
                Err(s)
                    if matches!(
                        s.code(),
                        Code::NotFound | Code::AlreadyExists | Code::ResourceExhausted
                    ) => {}
                Err(s) => panic!("round {round}, request {i}: {s}"),
            }
        }
        server.kill();
        // The service's NFs die with it.
        for name in acked.keys() {
            wait_until("NFs gone with the killed service", 5, || {
                nf_pids(name).is_empty()
            });
        }
    }
}

/// Server reflection (v1 and v1alpha) lists the API's services and health, so grpcurl
/// and friends work without the proto files.
#[test]
fn reflection_lists_every_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let data = TempDir::new("reflection");
    let rt = runtime();
    let server = Server::start(&data.0, &["--wire", "none", "--vfs", "2"]);
    let channel = server.channel(&rt);
    let expected = [
        "grpc.health.v1.Health",
        "nfhost.v1.ChainService",
        "nfhost.v1.NfService",
        "nfhost.v1.PfService",
        "nfhost.v1.TelemetryService",
        "nfhost.v1.VfService",
    ];
    let v1_names: Vec<String> = rt.block_on(async {
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection v1")
            .into_inner();
        match responses
            .message()
            .await
            .expect("a response")
            .and_then(|r| r.message_response)
        {
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    });
    let v1alpha_names: Vec<String> = rt.block_on(async {
        let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        match responses
            .message()
            .await
            .expect("a response")
            .and_then(|r| r.message_response)
        {
            Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(
                list,
            )) => list.service.into_iter().map(|s| s.name).collect(),
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    });
    for names in [&v1_names, &v1alpha_names] {
        for service in expected {
            assert!(
                names.iter().any(|n| n == service),
                "{service} missing from reflection: {names:?}"
            );
        }
    }
    server.stop();
}

#[test]
fn a_second_server_on_the_same_data_dir_names_the_first() {
    let data = TempDir::new("locked");
    let first = Server::start(&data.0, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nfhost"))
        .args(["serve", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data.0)
        .output()
        .expect("nfhost serve runs");
    assert!(!out.status.success(), "the second server started");
    let said = String::from_utf8_lossy(&out.stderr);
    let pid = first.child.id();
    assert!(
        said.contains(&format!(
            "another process (PID {pid}, nfhost) holds the lock on"
        )) && said.contains(&data.0.join("db").display().to_string())
            && said.contains("another --data-dir"),
        "{said}"
    );
    first.stop();
}

#[test]
fn serve_reads_its_config_file_and_flags_given_win() {
    let data = TempDir::new("config");
    let config = data.0.join("nfhost.toml");
    // An address no local socket can bind: the server only starts if the --grpc
    // flag (which Server::start passes) wins over it.
    std::fs::write(
        &config,
        "grpc = \"192.0.2.1:1\"\nvfs = 4\nwire = \"none\"\n",
    )
    .expect("config");
    let store = data.0.join("store");
    let config_arg = config.display().to_string();
    let server = Server::start(&store, &["--config", &config_arg]);
    let rt = runtime();
    let mut c = Clients::new(server.channel(&rt));
    let pf = rt
        .block_on(c.pf.get_pf(proto::GetPfRequest {
            name: "pfs/0".into(),
        }))
        .expect("get pf")
        .into_inner();
    assert_eq!((pf.num_vfs, pf.wire.as_str()), (4, "none"), "from the file");
    server.stop();
}
