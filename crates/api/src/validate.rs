//! Request validation: every problem with a request, as field violations a person can
//! act on (google.rpc.BadRequest), found before anything is stored.

use thiserror::Error;

use crate::names::{Collection, check_name, parse_vf};
use crate::proto;
use vf_abi::MacAddr;

/// The most NFs a chain has.
pub const MAX_NFS: usize = 16;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path in the request, e.g. `chain.nfs[1].kind`.
    pub field: String,
    /// What is wrong and what would be right.
    pub description: String,
}

/// Collects violations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    /// Records one violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a short resource id (`fw`, `edge`) by [`check_name`]'s rule.
pub fn check_id(v: &mut Violations, field: &str, id: &str) {
    if check_name(id).is_err() {
        v.add(
            field,
            format!(
                "{id:?} is not a valid name: use 1-63 characters of a-z, 0-9 and '-', starting with a letter"
            ),
        );
    }
}

/// The NF kinds a server runs, and whether a config suits one: the NF's own parser
/// answers, so this crate needs none of them.
pub trait NfKinds {
    /// Whether `kind` exists and takes `config` (JSON text, empty for defaults).
    fn check(&self, kind: &str, config: &str) -> Result<(), KindProblem>;
}

/// Why an NF kind or its config was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindProblem {
    /// No such kind; the message lists the known ones.
    Kind(String),
    /// The kind's parser refused the config; the message names the field.
    Config(String),
}

/// The kind of an NF nfhost runs from a user's binary ([`proto::ExecSpec`]).
pub const EXEC: &str = "exec";
/// The kind of an NF that a process started elsewhere attaches to (its endpoint).
pub const EXTERNAL: &str = "external";
/// Most arguments of an `exec` NF.
pub const MAX_EXEC_ARGS: usize = 256;
/// Most bytes of an `exec` NF's arguments and environment together.
pub const MAX_EXEC_BYTES: usize = 64 * 1024;

/// Whether `kind` is run by nfhost from a binary of its own (not a built-in kind).
pub fn is_user_kind(kind: &str) -> bool {
    kind == EXEC || kind == EXTERNAL
}

/// Checks what an NF of `kind` runs: `exec` needs an [`proto::ExecSpec`] with an
/// absolute path; every other kind must have none. (Whether the file exists is
/// the server's to check.)
pub fn check_exec(v: &mut Violations, field: &str, kind: &str, exec: Option<&proto::ExecSpec>) {
    let exec = exec.filter(|e| **e != proto::ExecSpec::default());
    let Some(exec) = exec else {
        if kind == EXEC {
            v.add(
                format!("{field}.exec.path"),
                "an exec NF needs the absolute path of its binary",
            );
        }
        return;
    };
    if kind != EXEC {
        v.add(
            format!("{field}.exec"),
            format!("only for kind \"exec\", not {kind:?}"),
        );
        return;
    }
    if !exec.path.starts_with('/') || exec.path.contains('\0') {
        v.add(
            format!("{field}.exec.path"),
            format!("{:?} is not an absolute path", exec.path),
        );
    }
    if exec.args.len() > MAX_EXEC_ARGS {
        v.add(
            format!("{field}.exec.args"),
            format!("{} arguments; at most {MAX_EXEC_ARGS}", exec.args.len()),
        );
    }
    if exec.args.iter().any(|a| a.contains('\0')) {
        v.add(
            format!("{field}.exec.args"),
            "an argument contains a NUL byte",
        );
    }
    for (key, value) in &exec.env {
        let bad_key = key.is_empty() || key.contains(['=', '\0']);
        if bad_key || value.contains('\0') {
            v.add(
                format!("{field}.exec.env"),
                format!("{key:?} is not a valid variable"),
            );
        } else if key.starts_with("NFHOST_") {
            v.add(
                format!("{field}.exec.env"),
                format!("{key} is set by nfhost itself"),
            );
        }
    }
    let bytes: usize = exec.args.iter().map(String::len).sum::<usize>()
        + exec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if bytes > MAX_EXEC_BYTES {
        v.add(
            format!("{field}.exec"),
            format!("arguments and environment are {bytes} bytes; at most {MAX_EXEC_BYTES}"),
        );
    }
}

/// Checks an NF kind and its config (the NF's own validation).
pub fn check_nf(v: &mut Violations, kinds: &dyn NfKinds, field: &str, kind: &str, config: &str) {
    let limit = vf_abi::attach::MAX_CONFIG;
    if config.len() > limit {
        v.add(
            format!("{field}.config"),
            format!(
                "is {} bytes; an NF config is at most {limit} bytes (1 MiB)",
                config.len()
            ),
        );
        return;
    }
    if is_user_kind(kind) {
        // The config is the user binary's own business: it asks for it over its
        // socket and judges it itself.
        return;
    }
    match kinds.check(kind, config) {
        Ok(()) => {}
        Err(KindProblem::Kind(message)) => v.add(format!("{field}.kind"), message),
        Err(KindProblem::Config(message)) => v.add(format!("{field}.config"), message),
    }
}

/// Checks a chain as submitted.
pub fn check_chain(chain: &proto::Chain, kinds: &dyn NfKinds) -> Violations {
    let mut v = Violations::default();
    check_id(&mut v, "chain.name", Collection::Chains.short(&chain.name));
    if proto::Isolation::try_from(chain.isolation).is_err() {
        v.add(
            "chain.isolation",
            "must be ISOLATION_STRICT or ISOLATION_SHARED",
        );
    }
    if proto::RestartPolicy::try_from(chain.restart_policy).is_err() {
        v.add("chain.restart_policy", "unknown restart policy");
    }
    if let Some(c) = &chain.classifier {
        if c.vlan > 4094 {
            v.add(
                "chain.classifier.vlan",
                format!("VLAN {} is out of range 1-4094 (0 = any)", c.vlan),
            );
        }
        if !c.dst_mac.is_empty() && c.dst_mac.parse::<MacAddr>().is_err() {
            v.add(
                "chain.classifier.dst_mac",
                format!("{:?} is not a MAC address", c.dst_mac),
            );
        }
    }
    if let Some(e) = &chain.egress {
        if e.vlan > 4094 {
            v.add(
                "chain.egress.vlan",
                format!("VLAN {} is out of range 1-4094 (0 = keep)", e.vlan),
            );
        }
        if e.two_way {
            check_two_way(&mut v, chain.classifier.as_ref(), e);
        }
    }
    if chain.nfs.is_empty() {
        v.add("chain.nfs", "a chain needs at least one NF");
    }
    if chain.nfs.len() > MAX_NFS {
        v.add(
            "chain.nfs",
            format!("{} NFs: a chain has at most {MAX_NFS}", chain.nfs.len()),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, nf) in chain.nfs.iter().enumerate() {
        let field = format!("chain.nfs[{i}]");
        check_id(&mut v, &format!("{field}.name"), &nf.name);
        if !seen.insert(nf.name.as_str()) {
            v.add(
                format!("{field}.name"),
                format!("{:?} appears twice in the chain", nf.name),
            );
        }
        check_nf(&mut v, kinds, &field, &nf.kind, &nf.config);
        check_exec(&mut v, &field, &nf.kind, nf.exec.as_ref());
    }
    v
}

/// Why a chain cannot be two-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TwoWayError {
    /// No `classifier.vlan`.
    #[error("a two-way chain needs classifier.vlan, the VLAN of one side")]
    NoClassifierVlan,
    /// No `egress.vlan`.
    #[error("a two-way chain needs egress.vlan, the VLAN of the other side")]
    NoEgressVlan,
    /// `classifier.vlan` equals `egress.vlan`.
    #[error(
        "classifier.vlan and egress.vlan are both {0}: a two-way chain joins two different VLANs"
    )]
    SameVlan(u32),
    /// A `classifier.dst_mac`.
    #[error(
        "a two-way chain matches its VLANs alone (replies are not addressed to the classifier's MAC); remove classifier.dst_mac"
    )]
    DstMac,
}

impl TwoWayError {
    /// The chain field at fault.
    pub fn field(self) -> &'static str {
        match self {
            TwoWayError::NoClassifierVlan => "classifier.vlan",
            TwoWayError::NoEgressVlan | TwoWayError::SameVlan(_) => "egress.vlan",
            TwoWayError::DstMac => "classifier.dst_mac",
        }
    }
}

/// The one rule of a two-way chain ("NF on a stick"): two different VLANs, one on
/// each side, and a classifier of a VLAN alone. Every problem, in field order.
pub fn two_way_problems(classifier_vlan: u32, dst_mac: &str, egress_vlan: u32) -> Vec<TwoWayError> {
    let mut out = Vec::new();
    if classifier_vlan == 0 {
        out.push(TwoWayError::NoClassifierVlan);
    }
    if egress_vlan == 0 {
        out.push(TwoWayError::NoEgressVlan);
    } else if egress_vlan == classifier_vlan {
        out.push(TwoWayError::SameVlan(egress_vlan));
    }
    if !dst_mac.is_empty() {
        out.push(TwoWayError::DstMac);
    }
    out
}

/// A two-way chain's extra rules, as violations of the submitted chain.
fn check_two_way(v: &mut Violations, classifier: Option<&proto::Classifier>, e: &proto::Egress) {
    let (vlan, dst_mac) = classifier.map_or((0, ""), |c| (c.vlan, c.dst_mac.as_str()));
    for problem in two_way_problems(vlan, dst_mac, e.vlan) {
        v.add(format!("chain.{}", problem.field()), problem.to_string());
    }
}

/// One kind of wire frames a chain takes in: VLAN (0 = any) and destination MAC
/// (lowercase, empty = any), and which of the chain's fields asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireIntake {
    /// VLAN id, 0 = any.
    pub vlan: u32,
    /// Destination MAC in lowercase, empty = any.
    pub dst_mac: String,
    /// `classifier`, or `egress` for a two-way chain's return direction.
    pub field: &'static str,
}

impl WireIntake {
    /// The same frames as `other`, whichever field asked for them.
    pub fn clashes(&self, other: &WireIntake) -> bool {
        self.vlan == other.vlan && self.dst_mac == other.dst_mac
    }
}

/// The wire frames a chain takes in: its classifier, and for a two-way chain the
/// return VLAN too. Two chains may not take the same frames; the NIC's steering
/// refuses it as well.
pub fn wire_intake(chain: &proto::Chain) -> Vec<WireIntake> {
    let classifier = chain.classifier.clone().unwrap_or_default();
    let mut out = vec![WireIntake {
        vlan: classifier.vlan,
        dst_mac: classifier.dst_mac.to_ascii_lowercase(),
        field: "classifier",
    }];
    if let Some(e) = chain.egress.as_ref().filter(|e| e.two_way) {
        out.push(WireIntake {
            vlan: e.vlan,
            dst_mac: String::new(),
            field: "egress",
        });
    }
    out
}

/// Checks a standalone NF as submitted.
pub fn check_new_nf(nf: &proto::Nf, kinds: &dyn NfKinds) -> Violations {
    let mut v = Violations::default();
    check_id(&mut v, "nf.name", Collection::Nfs.short(&nf.name));
    check_nf(&mut v, kinds, "nf", &nf.kind, &nf.config);
    check_exec(&mut v, "nf", &nf.kind, nf.exec.as_ref());
    if nf.endpoint.is_some() {
        v.add(
            "nf.endpoint",
            "output only: nfhost opens the endpoint of an external NF",
        );
    }
    if !nf.vf.is_empty() && parse_vf(&nf.vf).is_none() {
        v.add(
            "nf.vf",
            format!("{:?} is not a VF name such as pfs/0/vfs/3", nf.vf),
        );
    }
    if !nf.chain.is_empty() {
        v.add(
            "nf.chain",
            "output only: NFs of a chain are created with the chain",
        );
    }
    if proto::RestartPolicy::try_from(nf.restart_policy).is_err() {
        v.add("nf.restart_policy", "unknown restart policy");
    }
    v
}

#[cfg(test)]
/// The kinds of a server that runs the six built-in kinds, whose monitor refuses
/// `top = 0` as the real one does (the real catalog is tested in nfhost).
pub(crate) struct Kinds;

#[cfg(test)]
impl NfKinds for Kinds {
    fn check(&self, kind: &str, config: &str) -> Result<(), KindProblem> {
        match kind {
            "l2fwd" | "firewall" | "nat" | "lb" | "ratelimit" => Ok(()),
            "monitor" => {
                let top = serde_json::from_str::<serde_json::Value>(config)
                    .ok()
                    .and_then(|v| v.get("top").and_then(serde_json::Value::as_u64));
                match top {
                    Some(0) => Err(KindProblem::Config("top: must be at least 1".into())),
                    _ => Ok(()),
                }
            }
            other => Err(KindProblem::Kind(format!("unknown NF kind {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_rfc_1123_labels() {
        let mut v = Violations::default();
        for good in ["fw", "edge-1", "a"] {
            check_id(&mut v, "x", good);
        }
        assert!(v.is_empty(), "{v:?}");
        for bad in ["", "Fw", "1fw", "fw-", "f_w", &"a".repeat(64)] {
            let mut v = Violations::default();
            check_id(&mut v, "x", bad);
            assert_eq!(v.0.len(), 1, "{bad:?} accepted");
        }
    }

    /// A kind catalog that accepts any config, to see the size limit alone.
    struct AnyConfig;
    impl NfKinds for AnyConfig {
        fn check(&self, _: &str, _: &str) -> Result<(), KindProblem> {
            Ok(())
        }
    }

    #[test]
    fn a_config_over_one_mib_is_refused_naming_the_limit() {
        let mut v = Violations::default();
        let at_limit = "x".repeat(vf_abi::attach::MAX_CONFIG);
        check_nf(&mut v, &AnyConfig, "nf", "l2fwd", &at_limit);
        assert!(v.is_empty(), "{v:?}");
        let over = "x".repeat(vf_abi::attach::MAX_CONFIG + 1);
        check_nf(&mut v, &AnyConfig, "nf", "l2fwd", &over);
        assert_eq!(v.0.len(), 1, "{v:?}");
        let text = format!("{v:?}");
        assert!(text.contains("nf.config"), "{text}");
        assert!(
            text.contains("1048577 bytes") && text.contains("at most 1048576"),
            "{text}"
        );
    }

    fn two_way(classifier: proto::Classifier, egress_vlan: u32) -> proto::Chain {
        proto::Chain {
            name: "chains/stick".into(),
            classifier: Some(classifier),
            egress: Some(proto::Egress {
                vlan: egress_vlan,
                two_way: true,
            }),
            nfs: vec![proto::ChainNf {
                name: "fw".into(),
                kind: "l2fwd".into(),
                config: String::new(),
                exec: None,
            }],
            ..Default::default()
        }
    }

    fn fields(v: Violations) -> Vec<String> {
        v.0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_two_way_chain_needs_two_different_vlans_and_no_mac() {
        let vlan = |vlan| proto::Classifier {
            vlan,
            dst_mac: String::new(),
        };
        assert!(check_chain(&two_way(vlan(100), 200), &Kinds).is_empty());
        assert_eq!(
            fields(check_chain(&two_way(vlan(0), 200), &Kinds)),
            ["chain.classifier.vlan"]
        );
        assert_eq!(
            fields(check_chain(&two_way(vlan(100), 0), &Kinds)),
            ["chain.egress.vlan"]
        );
        let same = check_chain(&two_way(vlan(100), 100), &Kinds);
        assert!(
            same.0[0].description.contains("two different VLANs"),
            "{same:?}"
        );
        assert_eq!(fields(same), ["chain.egress.vlan"]);
        let mac = check_chain(
            &two_way(
                proto::Classifier {
                    vlan: 100,
                    dst_mac: "02:00:00:00:ff:01".into(),
                },
                200,
            ),
            &Kinds,
        );
        assert!(mac.0[0].description.contains("VLANs alone"), "{mac:?}");
        assert_eq!(fields(mac), ["chain.classifier.dst_mac"]);
        // Without two_way, the same fields are fine.
        let mut one_way = two_way(vlan(100), 100);
        one_way.egress = Some(proto::Egress {
            vlan: 100,
            two_way: false,
        });
        assert!(check_chain(&one_way, &Kinds).is_empty());
    }

    #[test]
    fn a_two_way_chain_takes_its_return_vlan_from_the_wire() {
        let chain = two_way(
            proto::Classifier {
                vlan: 100,
                dst_mac: String::new(),
            },
            200,
        );
        let intake = wire_intake(&chain);
        assert_eq!(
            intake.iter().map(|w| (w.vlan, w.field)).collect::<Vec<_>>(),
            [(100, "classifier"), (200, "egress")]
        );
        let other = proto::Chain {
            classifier: Some(proto::Classifier {
                vlan: 200,
                dst_mac: String::new(),
            }),
            ..Default::default()
        };
        assert!(intake[1].clashes(&wire_intake(&other)[0]));
        assert!(!intake[0].clashes(&wire_intake(&other)[0]));
        let by_mac = proto::Chain {
            classifier: Some(proto::Classifier {
                vlan: 200,
                dst_mac: "02:AA:00:00:00:01".into(),
            }),
            ..Default::default()
        };
        assert!(
            !intake[1].clashes(&wire_intake(&by_mac)[0]),
            "a MAC classifier is more specific: exact matches clash, as in the NIC"
        );
        assert_eq!(wire_intake(&by_mac)[0].dst_mac, "02:aa:00:00:00:01");
    }

    #[test]
    fn a_bad_chain_reports_every_field() {
        let chain = proto::Chain {
            name: "chains/Edge".into(),
            isolation: 9,
            classifier: Some(proto::Classifier {
                vlan: 5000,
                dst_mac: "nope".into(),
            }),
            nfs: vec![
                proto::ChainNf {
                    name: "a".into(),
                    kind: "teleport".into(),
                    config: String::new(),
                    exec: None,
                },
                proto::ChainNf {
                    name: "a".into(),
                    kind: "monitor".into(),
                    config: "{\"top\": 0}".into(),
                    exec: None,
                },
            ],
            ..Default::default()
        };
        let fields: Vec<String> = check_chain(&chain, &Kinds)
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "chain.name",
                "chain.isolation",
                "chain.classifier.vlan",
                "chain.classifier.dst_mac",
                "chain.nfs[0].kind",
                "chain.nfs[1].name",
                "chain.nfs[1].config"
            ]
        );
    }
}
