//! Re-applying a chain to reconfigure its NFs in place, against the real `nfhost serve`:
//! the changed NF takes its new config in the same process (through its VF's mailbox),
//! or, where its kind cannot take that change in place, restarts on its own VF with
//! it; the others keep running untouched; the change is stored and survives a
//! restart; reconfiguring is no failure; and what cannot change in place is refused
//! with nothing changed.

#[path = "common/http.rs"]
mod http;
#[path = "common/server.rs"]
mod server;

use nfhost_api::proto;
use server::{
    Clients, Server, TempDir, events, free_port, read_store, runtime, state_dump, wait_until,
};
use tokio::runtime::Runtime;
use tonic::Code;

/// The gen wire feeding `examples/edge.toml` (VLAN 100, its destination MAC), plus a
/// dashboard port of our own for the NF reports.
fn start(data: &std::path::Path, http: u16) -> Server {
    let http = format!("127.0.0.1:{http}");
    let mut flags = server::GEN.to_vec();
    flags.extend(["--http", &http]);
    Server::start(data, &flags)
}

/// `examples/edge.toml` with the monitor listing its `top` busiest flows.
fn edge(top: u32) -> proto::Chain {
    let text = include_str!("../examples/edge.toml").replace("top = 5", &format!("top = {top}"));
    nfhost_api::chain_file::parse_chain(&text).expect("example chain parses")
}

fn update(
    rt: &Runtime,
    c: &mut Clients,
    chain: proto::Chain,
    mask: &[&str],
) -> Result<proto::Chain, tonic::Status> {
    update_with_outcomes(rt, c, chain, mask).map(|(chain, _)| chain)
}

/// What an update did to one NF: `(nf, outcome, reason)`.
type Outcome = (String, proto::NfUpdateOutcome, String);

/// The chain as stored after the update, and what happened to each NF.
fn update_with_outcomes(
    rt: &Runtime,
    c: &mut Clients,
    chain: proto::Chain,
    mask: &[&str],
) -> Result<(proto::Chain, Vec<Outcome>), tonic::Status> {
    let r = rt
        .block_on(c.chain.update_chain(proto::UpdateChainRequest {
            chain: Some(chain),
            update_mask: mask.iter().map(|m| (*m).to_owned()).collect(),
            validate_only: false,
            allow_missing: false,
        }))?
        .into_inner();
    let outcomes = r
        .nfs
        .into_iter()
        .map(|nf| (nf.outcome(), nf))
        .map(|(outcome, nf)| (nf.nf, outcome, nf.reason))
        .collect();
    Ok((r.chain.unwrap_or_default(), outcomes))
}

fn get_chain(rt: &Runtime, c: &mut Clients) -> proto::Chain {
    rt.block_on(c.chain.get_chain(proto::GetChainRequest {
        name: "chains/edge".into(),
    }))
    .expect("get chain")
    .into_inner()
}

fn get_nf(rt: &Runtime, c: &mut Clients, name: &str) -> proto::Nf {
    rt.block_on(c.nf.get_nf(proto::GetNfRequest { name: name.into() }))
        .expect("get nf")
        .into_inner()
}

fn status(nf: &proto::Nf) -> proto::NfStatus {
    nf.status.clone().unwrap_or_default()
}

fn running(rt: &Runtime, c: &mut Clients, name: &str) -> bool {
    let s = status(&get_nf(rt, c, name));
    s.state == proto::NfState::Running as i32 && s.pid != 0
}

/// How many flows the monitor's latest report lists.
fn top_listed(http: u16) -> Option<usize> {
    let (code, body) = http::get(http, "/api/v1/nfs/mon/report");
    if code != 200 {
        return None;
    }
    let report: serde_json::Value = serde_json::from_str(&body).ok()?;
    report["nf"]["top"].as_array().map(Vec::len)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn reapplying_a_chain_reconfigures_only_the_changed_nf_in_its_own_process() {
    let data = TempDir::new("update");
    let http = free_port();
    let rt = runtime();
    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    let created = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(edge(5)),
            validate_only: false,
        }))
        .expect("created")
        .into_inner();
    wait_until("both NFs running", 10, || {
        running(&rt, &mut c, "mon") && running(&rt, &mut c, "fwd")
    });
    wait_until("the monitor reporting its top 5", 10, || {
        top_listed(http) == Some(5)
    });
    let (mon, fwd) = (get_nf(&rt, &mut c, "mon"), get_nf(&rt, &mut c, "fwd"));

    // A dry run changes nothing.
    let dry = rt
        .block_on(c.chain.update_chain(proto::UpdateChainRequest {
            chain: Some(edge(2)),
            update_mask: Vec::new(),
            validate_only: true,
            allow_missing: false,
        }))
        .expect("valid")
        .into_inner();
    let dry = dry.chain.expect("the chain");
    assert_eq!(dry.nfs[0].config, r#"{"top":2}"#);
    assert_eq!(get_chain(&rt, &mut c).nfs[0].config, r#"{"top":5}"#);
    assert_eq!(status(&get_nf(&rt, &mut c, "mon")).pid, status(&mon).pid);

    // The same chain again changes nothing either.
    assert_eq!(
        update(&rt, &mut c, edge(5), &[]).expect("accepted"),
        created
    );
    assert_eq!(status(&get_nf(&rt, &mut c, "mon")).pid, status(&mon).pid);

    // The monitor's config changed: it takes it in place, same process, same VF.
    let (updated, outcomes) =
        update_with_outcomes(&rt, &mut c, edge(2), &[]).expect("reconfigured");
    assert_eq!(
        outcomes,
        [
            (
                "nfs/mon".into(),
                proto::NfUpdateOutcome::InPlace,
                String::new()
            ),
            (
                "nfs/fwd".into(),
                proto::NfUpdateOutcome::Unchanged,
                String::new()
            ),
        ],
        "the reply says which NF took its config in place"
    );
    assert_eq!(updated.vfs, created.vfs, "every hop keeps its VF");
    assert_eq!(updated.nfs[0].config, r#"{"top":2}"#);
    let (mon2, fwd2) = (get_nf(&rt, &mut c, "mon"), get_nf(&rt, &mut c, "fwd"));
    assert_eq!(mon2.vf, mon.vf, "same VF");
    assert_eq!(mon2.config, r#"{"top":2}"#);
    assert_eq!(status(&mon2).pid, status(&mon).pid, "the same process");
    assert_eq!(status(&mon2).restarts, 0, "not counted as a restart");
    // The forwarder was not touched.
    assert_eq!(
        (status(&fwd2).pid, status(&fwd2).restarts, fwd2.vf.as_str()),
        (status(&fwd).pid, 0, fwd.vf.as_str())
    );
    assert!(alive(status(&fwd).pid));
    // The running monitor uses the new config: it lists two flows.
    wait_until("the monitor reporting its top 2", 10, || {
        top_listed(http) == Some(2)
    });
    // And traffic still flows through the chain.
    let mut out = || -> u64 {
        let stats = rt
            .block_on(
                c.telemetry
                    .get_stats(proto::GetStatsRequest { active_only: true }),
            )
            .expect("stats")
            .into_inner();
        stats.wire.map_or(0, |w| w.tx_packets)
    };
    let before = out();
    wait_until("traffic through the reconfigured chain", 10, || {
        out() > before + 1000
    });
    let events = events(&rt, &mut c);
    assert!(
        events
            .iter()
            .any(|e| e.message == "chain edge: nf mon reconfigured" && e.nf == "nfs/mon"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.nf == "nfs/mon"
            && e.message == "nf mon took its new config in place (same process)"),
        "{events:?}"
    );
    let mon_starts = events
        .iter()
        .filter(|e| e.nf == "nfs/mon" && e.kind == proto::EventKind::NfStarted as i32)
        .count();
    assert_eq!(mon_starts, 1, "the monitor started once: {events:?}");
    let fwd_starts = events
        .iter()
        .filter(|e| e.nf == "nfs/fwd" && e.kind == proto::EventKind::NfStarted as i32)
        .count();
    assert_eq!(fwd_starts, 1, "the forwarder started once: {events:?}");

    // Stored before the reply: it survives a restart of the service.
    server.stop();
    let state = read_store(&data.0, |store| store.load().expect("loads"));
    assert_eq!(state.chains["edge"].nfs[0].config, r#"{"top":2}"#);
    assert_eq!(state.nfs["mon"].config, r#"{"top":2}"#);
    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    assert_eq!(get_chain(&rt, &mut c).nfs[0].config, r#"{"top":2}"#);
    wait_until("the monitor back with top 2", 15, || {
        top_listed(http) == Some(2)
    });
    server.stop();
}

/// A one-hop NAT chain on the gen wire's VLAN 100, translating to `pool`.
fn nat_chain(pool: &str) -> proto::Chain {
    let text = format!(
        "name = \"natc\"\n[classifier]\nvlan = 100\n[[nf]]\nname = \"nat\"\nkind = \"nat\"\n\
         [nf.config]\ninside = \"10.0.0.0/8\"\npool = [\"{pool}\"]\n"
    );
    nfhost_api::chain_file::parse_chain(&text).expect("NAT chain parses")
}

/// A NAT cannot move its existing mappings to another pool in place: it refuses
/// the new config, and nfhost restarts it on its own VF with it, which is no failure.
#[test]
fn a_change_an_nf_cannot_take_in_place_restarts_it_on_its_own_vf() {
    let data = TempDir::new("update-restart");
    let http = free_port();
    let rt = runtime();
    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    let created = rt
        .block_on(c.chain.create_chain(proto::CreateChainRequest {
            chain: Some(nat_chain("203.0.113.1")),
            validate_only: false,
        }))
        .expect("created")
        .into_inner();
    wait_until("the NAT running", 10, || running(&rt, &mut c, "nat"));
    // Attached to its VF and in its loop: it has reported.
    wait_until("the NAT reporting", 10, || {
        http::get(http, "/api/v1/nfs/nat/report").0 == 200
    });
    let before = get_nf(&rt, &mut c, "nat");
    let (updated, outcomes) =
        update_with_outcomes(&rt, &mut c, nat_chain("203.0.113.2"), &[]).expect("accepted");
    assert_eq!(updated.vfs, created.vfs, "the hop keeps its VF");
    assert!(
        matches!(&outcomes[..], [(nf, proto::NfUpdateOutcome::Restarted, why)]
            if nf == "nfs/nat" && !why.is_empty()),
        "the reply says the NAT restarted, and why: {outcomes:?}"
    );
    wait_until("the NAT running again", 10, || running(&rt, &mut c, "nat"));
    let after = get_nf(&rt, &mut c, "nat");
    assert_eq!(after.vf, before.vf, "same VF");
    assert_ne!(status(&after).pid, status(&before).pid, "a new process");
    assert!(!alive(status(&before).pid), "the old process is gone");
    assert_eq!(status(&after).restarts, 0, "not counted as a restart");
    assert!(
        status(&after)
            .last_exit
            .starts_with("stopped for a new config"),
        "{:?}",
        status(&after)
    );
    assert!(after.config.contains("203.0.113.2"), "{}", after.config);
    let events = events(&rt, &mut c);
    assert!(
        events.iter().any(|e| e.nf == "nfs/nat"
            && e.message
                .starts_with("nf nat cannot take its new config in place (")),
        "{events:?}"
    );
    server.stop();
}

/// Reconfiguring is no failure: more quick reconfigurations than the crash-loop limit
/// leave the NF running, and a changed restart policy applies in place without
/// restarting anything.
#[test]
fn reconfiguring_often_is_no_crash_loop_and_the_restart_policy_changes_in_place() {
    let data = TempDir::new("update-often");
    let http = free_port();
    let rt = runtime();
    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
        chain: Some(edge(5)),
        validate_only: false,
    }))
    .expect("created");
    wait_until("the monitor running", 10, || running(&rt, &mut c, "mon"));
    let limit = nfhost::control::supervisor::CRASH_LOOP_LIMIT;
    for i in 0..=limit {
        update(&rt, &mut c, edge(2 + i % 2), &[]).expect("reconfigured");
        assert!(running(&rt, &mut c, "mon"), "reconfiguration {i}");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mon = status(&get_nf(&rt, &mut c, "mon"));
    assert_eq!(
        (mon.state, mon.restarts),
        (proto::NfState::Running as i32, 0),
        "{mon:?}"
    );

    // Only the restart policy, through a mask: no NF restarts.
    let pids = (
        status(&get_nf(&rt, &mut c, "mon")).pid,
        status(&get_nf(&rt, &mut c, "fwd")).pid,
    );
    let policy = proto::Chain {
        name: "chains/edge".into(),
        restart_policy: proto::RestartPolicy::Never as i32,
        ..Default::default()
    };
    let updated = update(&rt, &mut c, policy, &["restart_policy"]).expect("accepted");
    assert_eq!(updated.restart_policy, proto::RestartPolicy::Never as i32);
    assert_eq!(updated.nfs.len(), 2, "the NFs were not in the mask");
    for name in ["mon", "fwd"] {
        assert_eq!(
            get_nf(&rt, &mut c, name).restart_policy,
            proto::RestartPolicy::Never as i32
        );
    }
    assert_eq!(
        pids,
        (
            status(&get_nf(&rt, &mut c, "mon")).pid,
            status(&get_nf(&rt, &mut c, "fwd")).pid
        )
    );
    server.stop();
}

#[test]
fn what_cannot_change_in_place_is_refused_and_nothing_changes() {
    let data = TempDir::new("update-refused");
    let http = free_port();
    let rt = runtime();
    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    rt.block_on(c.chain.create_chain(proto::CreateChainRequest {
        chain: Some(edge(5)),
        validate_only: false,
    }))
    .expect("created");
    server.stop();
    let before = state_dump(&data.0);

    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    wait_until("both NFs running", 10, || {
        running(&rt, &mut c, "mon") && running(&rt, &mut c, "fwd")
    });
    let pids = |c: &mut Clients| {
        (
            status(&get_nf(&rt, c, "mon")).pid,
            status(&get_nf(&rt, c, "fwd")).pid,
        )
    };
    let running_pids = pids(&mut c);
    let with = |f: &dyn Fn(&mut proto::Chain)| {
        let mut chain = edge(2);
        f(&mut chain);
        chain
    };
    let hop = |name: &str, kind: &str| proto::ChainNf {
        name: name.into(),
        kind: kind.into(),
        config: String::new(),
        exec: None,
    };
    let cases: Vec<(&str, proto::Chain, Vec<&str>, Code, &str)> = vec![
        (
            "a hop added",
            with(&|c| c.nfs.push(hop("extra", "l2fwd"))),
            vec![],
            Code::FailedPrecondition,
            "delete and re-create the chain to change its hops",
        ),
        (
            "a hop removed",
            with(&|c| {
                c.nfs.pop();
            }),
            vec![],
            Code::FailedPrecondition,
            "cannot be added or removed in place",
        ),
        (
            "hops reordered",
            with(&|c| c.nfs.swap(0, 1)),
            vec![],
            Code::FailedPrecondition,
            "renamed or reordered",
        ),
        (
            "a kind changed",
            with(&|c| c.nfs[1].kind = "monitor".into()),
            vec![],
            Code::FailedPrecondition,
            "an NF's kind cannot change in place",
        ),
        (
            "the classifier changed",
            with(&|c| {
                c.classifier = Some(proto::Classifier {
                    vlan: 300,
                    dst_mac: String::new(),
                })
            }),
            vec![],
            Code::FailedPrecondition,
            "the classifier cannot change in place",
        ),
        (
            "the egress changed",
            with(&|c| {
                c.egress = Some(proto::Egress {
                    vlan: 300,
                    two_way: false,
                })
            }),
            vec![],
            Code::FailedPrecondition,
            "the egress cannot change in place",
        ),
        (
            "the isolation changed",
            with(&|c| c.isolation = proto::Isolation::Strict as i32),
            vec![],
            Code::FailedPrecondition,
            "isolation cannot change in place",
        ),
        (
            "a config the kind refuses",
            with(&|c| c.nfs[0].config = r#"{"top":0}"#.into()),
            vec![],
            Code::InvalidArgument,
            "chain.nfs[0].config",
        ),
        (
            "an unknown mask field",
            edge(2),
            vec!["vfs"],
            Code::InvalidArgument,
            "update_mask",
        ),
        (
            "no such chain",
            with(&|c| c.name = "chains/ghost".into()),
            vec![],
            Code::NotFound,
            "chains/ghost not found",
        ),
    ];
    for (what, chain, mask, code, says) in cases {
        let err = update(&rt, &mut c, chain, &mask).expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        let text = match tonic_types::StatusExt::get_details_bad_request(&err) {
            Some(bad) => bad
                .field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; "),
            None => err.message().to_owned(),
        };
        assert!(text.contains(says), "{what}: {text}");
    }
    assert_eq!(pids(&mut c), running_pids, "no NF was restarted");
    server.stop();
    assert_eq!(
        state_dump(&data.0),
        before,
        "a refused update changed the stored state"
    );
    let logged = read_store(&data.0, |store| store.events(1000).expect("events"));
    assert!(
        !logged.iter().any(|e| e.message.contains("reconfigured")),
        "a refused update logged a change"
    );

    // allow_missing creates what is not there.
    let server = start(&data.0, http);
    let mut c = Clients::new(server.channel(&rt));
    let mut ghost = proto::Chain {
        name: "chains/ghost".into(),
        classifier: Some(proto::Classifier {
            vlan: 300,
            dst_mac: String::new(),
        }),
        ..Default::default()
    };
    ghost.nfs.push(hop("ghost-fwd", "l2fwd"));
    let created = rt
        .block_on(c.chain.update_chain(proto::UpdateChainRequest {
            chain: Some(ghost),
            update_mask: Vec::new(),
            validate_only: false,
            allow_missing: true,
        }))
        .expect("created")
        .into_inner();
    assert_eq!(
        created
            .nfs
            .iter()
            .map(|nf| nf.outcome())
            .collect::<Vec<_>>(),
        [proto::NfUpdateOutcome::Created]
    );
    let created = created.chain.expect("the chain");
    assert_eq!(created.vfs.len(), 1);
    server.stop();
}
