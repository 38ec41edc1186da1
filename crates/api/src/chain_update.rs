//! Updating a chain in place: what an `UpdateChain` request changes against the stored
//! chain, and whether that can change in place. Pure; the controller stores and
//! applies the [`Plan`].
//!
//! What may change in place is what a running chain can take without moving a hop:
//! each NF's `config` (its NF restarts on the same VF) and the `restart_policy` (read
//! by the supervisor at the next exit). The hops themselves (their number, names,
//! order and kinds), the classifier, the egress and the isolation decide which VF
//! does what and how the NIC steers between them, so changing them means a new chain.

use crate::proto;
use crate::validate::{self, NfKinds, Violations};

/// The fields of `Chain` an update mask may name.
pub const MASK_FIELDS: [&str; 5] = ["nfs", "restart_policy", "isolation", "classifier", "egress"];

/// What to tell a person who wants to change what cannot change in place.
const RECREATE: &str = "delete and re-create the chain to change its hops";

/// Why an update is refused. Nothing changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Bad input: an unknown field in the mask, a config its kind refuses.
    Invalid(Violations),
    /// A valid request for a change that cannot be made in place; the message says
    /// what differs and what to do instead.
    NotInPlace(String),
}

/// What an accepted update does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The chain as it will be stored.
    pub chain: proto::Chain,
    /// Hops whose config changed, by index: their NFs restart with the new config.
    pub reconfigured: Vec<usize>,
    /// The chain's restart policy changed (no NF restarts for that).
    pub restart_policy_changed: bool,
}

impl Plan {
    /// Nothing changes: nothing to store, nothing to restart.
    pub fn is_noop(&self) -> bool {
        self.reconfigured.is_empty() && !self.restart_policy_changed
    }
}

/// Plans the update of `stored` by `request`, writing the fields `mask` names (all of
/// them if it is empty or `*`, AIP-134). The request's `name` and `vfs` are not
/// looked at: the caller found `stored` by the name, and `vfs` is output only.
pub fn plan(
    stored: &proto::Chain,
    request: &proto::Chain,
    mask: &[String],
    kinds: &dyn NfKinds,
) -> Result<Plan, Refusal> {
    let mut v = Violations::default();
    for path in mask {
        match path.as_str() {
            "*" => {}
            p if MASK_FIELDS.contains(&p) => {}
            "vfs" => v.add("update_mask", "vfs is output only"),
            "tenant" => v.add("update_mask", "tenant is output only"),
            "name" => v.add(
                "update_mask",
                "name says which chain to update; a chain cannot be renamed",
            ),
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} is not a field of Chain that can be updated ({})",
                    MASK_FIELDS.join(", ")
                ),
            ),
        }
    }
    if !v.is_empty() {
        return Err(Refusal::Invalid(v));
    }
    let all = mask.is_empty() || mask.iter().any(|m| m == "*");
    let take = |field: &str| all || mask.iter().any(|m| m == field);
    let mut next = stored.clone();
    if take("nfs") {
        next.nfs = request.nfs.clone();
    }
    if take("restart_policy") {
        next.restart_policy = request.restart_policy;
    }
    if take("isolation") {
        next.isolation = request.isolation;
    }
    if take("classifier") {
        next.classifier = request.classifier.clone();
    }
    if take("egress") {
        next.egress = request.egress;
    }
    // Exactly the checks of a create: names, kinds, each kind's typed config.
    let v = validate::check_chain(&next, kinds);
    if !v.is_empty() {
        return Err(Refusal::Invalid(v));
    }
    if next.isolation == proto::Isolation::Unspecified as i32 {
        // What a create stores for "unspecified".
        next.isolation = proto::Isolation::Strict as i32;
    }
    check_in_place(stored, &next).map_err(Refusal::NotInPlace)?;
    let mut reconfigured = Vec::new();
    for (i, (old, new)) in stored.nfs.iter().zip(next.nfs.iter_mut()).enumerate() {
        if same_config(&old.config, &new.config) {
            // The same JSON written differently is no change: keep what runs.
            new.config.clone_from(&old.config);
        } else {
            reconfigured.push(i);
        }
    }
    Ok(Plan {
        restart_policy_changed: next.restart_policy != stored.restart_policy,
        chain: next,
        reconfigured,
    })
}

/// Whether two NF configs say the same: equal text, or equal JSON values (key order
/// and spacing aside). An empty config (the kind's defaults) equals only itself.
pub fn same_config(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let parse = |s: &str| {
        (!s.trim().is_empty())
            .then(|| serde_json::from_str::<serde_json::Value>(s).ok())
            .flatten()
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses a difference in what cannot change in place, saying what differs.
fn check_in_place(stored: &proto::Chain, next: &proto::Chain) -> Result<(), String> {
    let names = |c: &proto::Chain| {
        c.nfs
            .iter()
            .map(|nf| nf.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if stored.nfs.len() != next.nfs.len() {
        return Err(format!(
            "it has {} NFs ({}), the request {} ({}): a chain's hops cannot be added or removed in place; {RECREATE}",
            stored.nfs.len(),
            names(stored),
            next.nfs.len(),
            names(next)
        ));
    }
    for (i, (old, new)) in stored.nfs.iter().zip(&next.nfs).enumerate() {
        if old.name != new.name {
            return Err(format!(
                "nfs[{i}] is {:?}, the request has {:?} there: a chain's hops cannot be renamed or reordered in place; {RECREATE}",
                old.name, new.name
            ));
        }
        if old.kind != new.kind {
            return Err(format!(
                "nfs[{i}] ({}) is a {:?} NF, the request makes it a {:?}: an NF's kind cannot change in place; {RECREATE}",
                old.name, old.kind, new.kind
            ));
        }
    }
    if stored.isolation != next.isolation {
        return Err(format!(
            "its isolation is {}, the request says {}: isolation cannot change in place; {RECREATE}",
            isolation(stored.isolation),
            isolation(next.isolation)
        ));
    }
    let classifier = |c: &proto::Chain| {
        let c = c.classifier.clone().unwrap_or_default();
        (c.vlan, c.dst_mac.to_ascii_lowercase())
    };
    if classifier(stored) != classifier(next) {
        let show = |(vlan, mac): (u32, String)| {
            let vlan = if vlan == 0 {
                "any VLAN".to_owned()
            } else {
                format!("VLAN {vlan}")
            };
            let mac = if mac.is_empty() {
                "any MAC".into()
            } else {
                mac
            };
            format!("{vlan}, {mac}")
        };
        return Err(format!(
            "its classifier is {}, the request's {}: the classifier cannot change in place; {RECREATE}",
            show(classifier(stored)),
            show(classifier(next))
        ));
    }
    let egress = |c: &proto::Chain| c.egress.unwrap_or_default();
    if egress(stored) != egress(next) {
        let show = |e: proto::Egress| match (e.vlan, e.two_way) {
            (0, _) => "keep VLAN".to_owned(),
            (vlan, false) => format!("VLAN {vlan}"),
            (vlan, true) => format!("VLAN {vlan}, two-way"),
        };
        return Err(format!(
            "its egress is {}, the request's {}: the egress cannot change in place; {RECREATE}",
            show(egress(stored)),
            show(egress(next))
        ));
    }
    Ok(())
}

fn isolation(value: i32) -> &'static str {
    match proto::Isolation::try_from(value) {
        Ok(proto::Isolation::Shared) => "shared",
        _ => "strict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Kinds;

    fn hop(name: &str, kind: &str, config: &str) -> proto::ChainNf {
        proto::ChainNf {
            name: name.into(),
            kind: kind.into(),
            config: config.into(),
            exec: None,
        }
    }

    /// As stored: `mon` (monitor, top 5) → `fwd` (l2fwd), VLAN 100 → 200.
    fn stored() -> proto::Chain {
        proto::Chain {
            name: "chains/edge".into(),
            isolation: proto::Isolation::Shared as i32,
            classifier: Some(proto::Classifier {
                vlan: 100,
                dst_mac: "02:00:00:00:ff:01".into(),
            }),
            egress: Some(proto::Egress {
                vlan: 200,
                two_way: false,
            }),
            nfs: vec![
                hop("mon", "monitor", r#"{"top":5}"#),
                hop("fwd", "l2fwd", ""),
            ],
            vfs: vec!["pfs/0/vfs/0".into(), "pfs/0/vfs/1".into()],
            restart_policy: proto::RestartPolicy::Always as i32,
            tenant: "blue".into(),
        }
    }

    /// The stored chain as a chain file sends it: no VFs, no tenant.
    fn request() -> proto::Chain {
        proto::Chain {
            vfs: Vec::new(),
            tenant: String::new(),
            ..stored()
        }
    }

    fn not_in_place(r: Result<Plan, Refusal>) -> String {
        match r {
            Err(Refusal::NotInPlace(m)) => m,
            other => panic!("expected a not-in-place refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_same_chain_changes_nothing() {
        let planned = plan(&stored(), &request(), &[], &Kinds).expect("accepted");
        assert!(planned.is_noop());
        assert_eq!(planned.chain, stored(), "VFs kept, nothing else touched");
    }

    #[test]
    fn a_changed_config_reconfigures_that_hop_only() {
        let mut r = request();
        r.nfs[0].config = r#"{"top":2}"#.into();
        let planned = plan(&stored(), &r, &[], &Kinds).expect("accepted");
        assert_eq!(planned.reconfigured, [0]);
        assert!(!planned.restart_policy_changed);
        assert_eq!(planned.chain.nfs[0].config, r#"{"top":2}"#);
        assert_eq!(planned.chain.vfs, stored().vfs);
        assert_eq!(planned.chain.tenant, "blue", "the owner is the stored one");
        // Back to the kind's defaults is a change too.
        let mut r = request();
        r.nfs[0].config = String::new();
        assert_eq!(
            plan_of(&r).reconfigured,
            [0],
            "empty means defaults, a change"
        );
    }

    fn plan_of(r: &proto::Chain) -> Plan {
        plan(&stored(), r, &[], &Kinds).expect("accepted")
    }

    #[test]
    fn the_same_json_written_differently_is_no_change() {
        let mut r = request();
        r.nfs[0].config = "{ \"top\" : 5 }".into();
        let planned = plan_of(&r);
        assert!(planned.is_noop(), "{planned:?}");
        assert_eq!(
            planned.chain.nfs[0].config, r#"{"top":5}"#,
            "stored text kept"
        );
        assert!(same_config(r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#));
        assert!(!same_config("", "{}"));
        assert!(same_config("{", "{"), "equal text is equal");
        assert!(
            !same_config("{", "{ "),
            "neither is JSON, and the text differs"
        );
    }

    #[test]
    fn a_restart_policy_changes_in_place_without_restarts() {
        let mut r = request();
        r.restart_policy = proto::RestartPolicy::Never as i32;
        let planned = plan_of(&r);
        assert!(planned.restart_policy_changed && planned.reconfigured.is_empty());
        assert_eq!(
            planned.chain.restart_policy,
            proto::RestartPolicy::Never as i32
        );
    }

    #[test]
    fn hops_added_removed_renamed_moved_or_of_another_kind_are_refused() {
        let mut added = request();
        added.nfs.push(hop("fw", "firewall", ""));
        let m = not_in_place(plan(&stored(), &added, &[], &Kinds));
        assert!(
            m.starts_with("it has 2 NFs (mon, fwd), the request 3 (mon, fwd, fw)")
                && m.ends_with("delete and re-create the chain to change its hops"),
            "{m}"
        );
        let mut removed = request();
        removed.nfs.pop();
        assert!(not_in_place(plan(&stored(), &removed, &[], &Kinds)).contains("added or removed"));
        let mut moved = request();
        moved.nfs.swap(0, 1);
        assert!(
            not_in_place(plan(&stored(), &moved, &[], &Kinds))
                .starts_with("nfs[0] is \"mon\", the request has \"fwd\" there")
        );
        let mut renamed = request();
        renamed.nfs[1].name = "fwd2".into();
        assert!(
            not_in_place(plan(&stored(), &renamed, &[], &Kinds)).contains("renamed or reordered")
        );
        let mut kind = request();
        kind.nfs[1].kind = "monitor".into();
        assert_eq!(
            not_in_place(plan(&stored(), &kind, &[], &Kinds)),
            "nfs[1] (fwd) is a \"l2fwd\" NF, the request makes it a \"monitor\": an NF's kind \
             cannot change in place; delete and re-create the chain to change its hops"
        );
    }

    #[test]
    fn classifier_egress_and_isolation_are_refused() {
        let mut c = request();
        c.classifier = Some(proto::Classifier {
            vlan: 300,
            dst_mac: String::new(),
        });
        assert!(not_in_place(plan(&stored(), &c, &[], &Kinds)).starts_with(
            "its classifier is VLAN 100, 02:00:00:00:ff:01, the request's VLAN 300, any MAC"
        ));
        // The MAC's case is no change.
        let mut upper = request();
        upper.classifier = Some(proto::Classifier {
            vlan: 100,
            dst_mac: "02:00:00:00:FF:01".into(),
        });
        assert!(plan(&stored(), &upper, &[], &Kinds).is_ok());
        let mut e = request();
        e.egress = Some(proto::Egress {
            vlan: 200,
            two_way: true,
        });
        e.classifier = Some(proto::Classifier {
            vlan: 100,
            dst_mac: String::new(),
        });
        // Two changes: the first found is named.
        assert!(not_in_place(plan(&stored(), &e, &[], &Kinds)).starts_with("its classifier"));
        e.classifier = stored().classifier;
        e.egress = Some(proto::Egress {
            vlan: 300,
            two_way: false,
        });
        assert!(
            not_in_place(plan(&stored(), &e, &[], &Kinds))
                .starts_with("its egress is VLAN 200, the request's VLAN 300")
        );
        let mut i = request();
        i.isolation = proto::Isolation::Unspecified as i32;
        assert!(
            not_in_place(plan(&stored(), &i, &[], &Kinds))
                .starts_with("its isolation is shared, the request says strict"),
            "unspecified means strict, as on create"
        );
    }

    #[test]
    fn an_invalid_config_is_a_field_violation() {
        let mut r = request();
        r.nfs[0].config = r#"{"top":0}"#.into();
        match plan(&stored(), &r, &[], &Kinds) {
            Err(Refusal::Invalid(v)) => {
                assert_eq!(v.0.len(), 1);
                assert_eq!(v.0[0].field, "chain.nfs[0].config");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_mask_writes_only_what_it_names() {
        // A request with only the restart policy set, masked to it: the NFs stay.
        let r = proto::Chain {
            restart_policy: proto::RestartPolicy::OnFailure as i32,
            ..Default::default()
        };
        let planned = plan(&stored(), &r, &["restart_policy".into()], &Kinds).expect("accepted");
        assert!(planned.restart_policy_changed && planned.reconfigured.is_empty());
        assert_eq!(planned.chain.nfs, stored().nfs);
        // Masked to nfs: a different classifier in the request is not looked at.
        let mut r = request();
        r.nfs[1].config = r#"{"mac_rewrite":"none"}"#.into();
        r.classifier = None;
        let planned = plan(&stored(), &r, &["nfs".into()], &Kinds).expect("accepted");
        assert_eq!(planned.reconfigured, [1]);
        assert_eq!(planned.chain.classifier, stored().classifier);
        // Naming an immutable field is fine while it is unchanged, refused otherwise.
        assert!(plan_masked(&request(), &["classifier", "nfs"]).is_ok());
        let mut c = request();
        c.isolation = proto::Isolation::Strict as i32;
        assert!(matches!(
            plan_masked(&c, &["isolation"]),
            Err(Refusal::NotInPlace(_))
        ));
        assert!(plan_masked(&c, &["*"]).is_err(), "* is everything");
    }

    fn plan_masked(r: &proto::Chain, mask: &[&str]) -> Result<Plan, Refusal> {
        let mask: Vec<String> = mask.iter().map(|m| (*m).to_owned()).collect();
        plan(&stored(), r, &mask, &Kinds)
    }

    #[test]
    fn unknown_output_only_and_identifying_mask_fields_are_refused() {
        for (field, says) in [
            ("owner", "is not a field of Chain that can be updated"),
            ("vfs", "output only"),
            ("name", "cannot be renamed"),
        ] {
            match plan_masked(&request(), &[field]) {
                Err(Refusal::Invalid(v)) => {
                    assert_eq!(v.0[0].field, "update_mask");
                    assert!(v.0[0].description.contains(says), "{field}: {v:?}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
