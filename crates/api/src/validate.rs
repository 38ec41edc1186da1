//! Request validation: every problem with a request, as field violations a person can
//! act on (google.rpc.BadRequest), found before anything is stored.

use crate::api::proto;
use crate::nic::MacAddr;

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

/// Checks a short resource id (`fw`, `edge`): an RFC 1123 label, 1-63 characters of
/// `a-z`, `0-9` and `-`, starting with a letter and not ending with `-`.
pub fn check_id(v: &mut Violations, field: &str, id: &str) {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        v.add(
            field,
            format!(
                "{id:?} is not a valid name: use 1-63 characters of a-z, 0-9 and '-', starting with a letter"
            ),
        );
    }
}

/// The short id of a resource name: `nfs/fw` or `fw` → `fw` (for collection `nfs`).
pub fn short_id<'a>(collection: &str, name: &'a str) -> &'a str {
    name.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(name)
}

/// Parses a VF name (`pfs/0/vfs/3` or `3`) into its index.
pub fn parse_vf(name: &str) -> Option<u16> {
    name.strip_prefix("pfs/0/vfs/").unwrap_or(name).parse().ok()
}

/// The resource name of a VF.
pub fn vf_name(index: u16) -> String {
    format!("pfs/0/vfs/{index}")
}

/// Checks an NF kind and its config by building it (the NF's own validation).
pub fn check_nf(v: &mut Violations, field: &str, kind: &str, config: &str) {
    if let Err(e) = crate::nf_kinds::build(kind, config) {
        let sub = match e {
            crate::nf_kinds::KindError::Unknown(_) => "kind",
            crate::nf_kinds::KindError::Config { .. } => "config",
        };
        v.add(format!("{field}.{sub}"), e.to_string());
    }
}

/// Checks a chain as submitted.
pub fn check_chain(chain: &proto::Chain) -> Violations {
    let mut v = Violations::default();
    check_id(&mut v, "chain.name", short_id("chains", &chain.name));
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
    if chain.nfs.len() > 16 {
        v.add(
            "chain.nfs",
            format!("{} NFs: a chain has at most 16", chain.nfs.len()),
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
        check_nf(&mut v, &field, &nf.kind, &nf.config);
    }
    v
}

/// A two-way chain's extra rules: two different VLANs, the classifier a VLAN alone.
fn check_two_way(v: &mut Violations, classifier: Option<&proto::Classifier>, e: &proto::Egress) {
    let (vlan, dst_mac) = classifier.map_or((0, ""), |c| (c.vlan, c.dst_mac.as_str()));
    if vlan == 0 {
        v.add(
            "chain.classifier.vlan",
            "a two-way chain (egress.two_way) needs the VLAN of one side here, 1-4094",
        );
    }
    if e.vlan == 0 {
        v.add(
            "chain.egress.vlan",
            "a two-way chain (egress.two_way) needs the VLAN of the other side here, 1-4094",
        );
    } else if e.vlan == vlan {
        v.add(
            "chain.egress.vlan",
            format!(
                "VLAN {vlan} is the classifier's too: a two-way chain joins two different VLANs"
            ),
        );
    }
    if !dst_mac.is_empty() {
        v.add(
            "chain.classifier.dst_mac",
            format!(
                "a two-way chain matches its VLANs alone: replies are not addressed to {dst_mac}; \
                 remove dst_mac, or egress.two_way"
            ),
        );
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
pub fn check_new_nf(nf: &proto::Nf) -> Violations {
    let mut v = Violations::default();
    check_id(&mut v, "nf.name", short_id("nfs", &nf.name));
    check_nf(&mut v, "nf", &nf.kind, &nf.config);
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

    #[test]
    fn names_and_vfs_parse() {
        assert_eq!(short_id("nfs", "nfs/fw"), "fw");
        assert_eq!(short_id("nfs", "fw"), "fw");
        assert_eq!(parse_vf("pfs/0/vfs/12"), Some(12));
        assert_eq!(parse_vf("3"), Some(3));
        assert_eq!(parse_vf("pfs/1/vfs/x"), None);
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
        assert!(check_chain(&two_way(vlan(100), 200)).is_empty());
        assert_eq!(
            fields(check_chain(&two_way(vlan(0), 200))),
            ["chain.classifier.vlan"]
        );
        assert_eq!(
            fields(check_chain(&two_way(vlan(100), 0))),
            ["chain.egress.vlan"]
        );
        let same = check_chain(&two_way(vlan(100), 100));
        assert!(
            same.0[0].description.contains("two different VLANs"),
            "{same:?}"
        );
        assert_eq!(fields(same), ["chain.egress.vlan"]);
        let mac = check_chain(&two_way(
            proto::Classifier {
                vlan: 100,
                dst_mac: "02:00:00:00:ff:01".into(),
            },
            200,
        ));
        assert!(mac.0[0].description.contains("VLANs alone"), "{mac:?}");
        assert_eq!(fields(mac), ["chain.classifier.dst_mac"]);
        // Without two_way, the same fields are fine.
        let mut one_way = two_way(vlan(100), 100);
        one_way.egress = Some(proto::Egress {
            vlan: 100,
            two_way: false,
        });
        assert!(check_chain(&one_way).is_empty());
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
                },
                proto::ChainNf {
                    name: "a".into(),
                    kind: "monitor".into(),
                    config: "{\"top\": 0}".into(),
                },
            ],
            ..Default::default()
        };
        let fields: Vec<String> = check_chain(&chain).0.into_iter().map(|v| v.field).collect();
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
