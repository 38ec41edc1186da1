//! The JSON shapes of the dashboard API: the gRPC messages as they are, plus the short
//! name of each enum field beside its number, so the page needs no copy of the proto.

use serde::Serialize;

use nfhost_api::proto;

/// The short, lowercase name of an enum value: `NF_STATE_RUNNING` → `running`.
/// Values this build does not know (a newer peer) are `unknown`.
fn short_name(name: Option<&str>, prefix: &str) -> String {
    name.map_or_else(
        || "unknown".to_owned(),
        |n| n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
    )
}

fn nf_state(state: i32) -> String {
    short_name(
        proto::NfState::try_from(state)
            .ok()
            .map(|s| s.as_str_name()),
        "NF_STATE_",
    )
}

fn restart_policy(policy: i32) -> String {
    short_name(
        proto::RestartPolicy::try_from(policy)
            .ok()
            .map(|p| p.as_str_name()),
        "RESTART_POLICY_",
    )
}

/// A VF with its link state's name.
#[derive(Debug, Serialize)]
pub(super) struct VfView {
    #[serde(flatten)]
    vf: proto::Vf,
    link_state_name: String,
}

impl From<proto::Vf> for VfView {
    fn from(vf: proto::Vf) -> Self {
        let link_state_name = short_name(
            proto::LinkState::try_from(vf.link_state)
                .ok()
                .map(|s| s.as_str_name()),
            "LINK_STATE_",
        );
        VfView {
            vf,
            link_state_name,
        }
    }
}

/// An NF with its state's and restart policy's names and its latest self-report.
#[derive(Debug, Serialize)]
pub(super) struct NfView {
    #[serde(flatten)]
    nf: proto::Nf,
    state_name: String,
    restart_policy_name: String,
    /// The NF's latest report, when it is JSON: the engine's `{"nf": …, "runtime": …}`,
    /// what the NF said (the monitor lists its top flows under `nf.top`) beside the
    /// runtime's own figures.
    report: Option<serde_json::Value>,
}

impl NfView {
    pub(super) fn new(nf: proto::Nf, report: Option<&str>) -> Self {
        let state = nf.status.as_ref().map_or(0, |s| s.state);
        NfView {
            state_name: nf_state(state),
            restart_policy_name: restart_policy(nf.restart_policy),
            report: report.and_then(|r| serde_json::from_str(r).ok()),
            nf,
        }
    }
}

/// A chain with its isolation's and restart policy's names.
#[derive(Debug, Serialize)]
pub(super) struct ChainView {
    #[serde(flatten)]
    chain: proto::Chain,
    isolation_name: String,
    restart_policy_name: String,
}

impl From<proto::Chain> for ChainView {
    fn from(chain: proto::Chain) -> Self {
        ChainView {
            isolation_name: short_name(
                proto::Isolation::try_from(chain.isolation)
                    .ok()
                    .map(|i| i.as_str_name()),
                "ISOLATION_",
            ),
            restart_policy_name: restart_policy(chain.restart_policy),
            chain,
        }
    }
}

/// An event with its kind's name.
#[derive(Debug, Serialize)]
pub(super) struct EventView {
    #[serde(flatten)]
    event: proto::Event,
    kind_name: String,
}

impl From<proto::Event> for EventView {
    fn from(event: proto::Event) -> Self {
        EventView {
            kind_name: short_name(
                proto::EventKind::try_from(event.kind)
                    .ok()
                    .map(|k| k.as_str_name()),
                "EVENT_KIND_",
            ),
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_fields_keep_their_number_and_gain_a_name() {
        let nf = proto::Nf {
            name: "nfs/mon".into(),
            restart_policy: proto::RestartPolicy::OnFailure as i32,
            status: Some(proto::NfStatus {
                state: proto::NfState::Running as i32,
                restarts: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(NfView::new(nf, Some(r#"{"top":[]}"#))).unwrap();
        assert_eq!(v["name"], "nfs/mon");
        assert_eq!(v["status"]["state"], 2);
        assert_eq!(v["status"]["restarts"], 2);
        assert_eq!(v["state_name"], "running");
        assert_eq!(v["restart_policy_name"], "on_failure");
        assert_eq!(v["report"]["top"], serde_json::json!([]));

        let e = proto::Event {
            kind: proto::EventKind::DmaFault as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(EventView::from(e)).unwrap();
        assert_eq!(v["kind"], 1);
        assert_eq!(v["kind_name"], "dma_fault");
    }

    #[test]
    fn unknown_enum_values_and_bad_reports_do_not_fail() {
        let nf = proto::Nf {
            status: Some(proto::NfStatus {
                state: 99,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(NfView::new(nf, Some("not json"))).unwrap();
        assert_eq!(v["state_name"], "unknown");
        assert!(v["report"].is_null());
    }
}
