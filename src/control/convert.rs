//! API messages to and from the device model's and the engine's types.

use crate::dataplane::engine::{ChainEgress, Isolation};
use crate::nic::{LinkState, MacAddr, VfAdmin, VfId, VfUpdate, VlanTag, WireMatch};
use nfhost_api::proto;

use super::ControlError;
use super::supervisor;
use nfhost_api::names::vf_name;
use nfhost_api::validate::Violations;

/// A VF write from an API message and its update mask (all writable fields if empty).
pub(super) fn update_from_mask(vf: &proto::Vf, mask: &[String]) -> Result<VfUpdate, ControlError> {
    const FIELDS: [&str; 9] = [
        "mac",
        "vlan",
        "qos",
        "spoof_check",
        "trust",
        "link_state",
        "min_tx_rate",
        "max_tx_rate",
        "mtu",
    ];
    let fields: Vec<&str> = if mask.is_empty() {
        FIELDS.to_vec()
    } else {
        mask.iter().map(String::as_str).collect()
    };
    let mut u = VfUpdate::default();
    let mut v = Violations::default();
    for field in fields {
        match field {
            "mac" => match vf.mac.as_str() {
                "" => u.mac = Some(None),
                text => match text.parse::<MacAddr>() {
                    Ok(mac) => u.mac = Some(Some(mac)),
                    Err(e) => v.add("vf.mac", e.to_string()),
                },
            },
            "vlan" => match u16::try_from(vf.vlan) {
                Ok(x) => u.vlan = Some(x),
                Err(_) => v.add(
                    "vf.vlan",
                    format!("VLAN {} is out of range 0-4095", vf.vlan),
                ),
            },
            "qos" => match u8::try_from(vf.qos) {
                Ok(x) => u.qos = Some(x),
                Err(_) => v.add("vf.qos", format!("QoS {} is out of range 0-7", vf.qos)),
            },
            "spoof_check" => u.spoof_check = Some(vf.spoof_check),
            "trust" => u.trust = Some(vf.trust),
            "link_state" => match link_state_from_proto(vf.link_state) {
                Some(link) => u.link_state = Some(link),
                None => v.add(
                    "vf.link_state",
                    "must be LINK_STATE_AUTO, LINK_STATE_ENABLE or LINK_STATE_DISABLE",
                ),
            },
            "min_tx_rate" => u.min_tx_rate = Some(vf.min_tx_rate),
            "max_tx_rate" => u.max_tx_rate = Some(vf.max_tx_rate),
            "mtu" => u.mtu = Some(vf.mtu),
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} is not a writable VF field ({})",
                    FIELDS.join(", ")
                ),
            ),
        }
    }
    if v.is_empty() {
        Ok(u)
    } else {
        Err(ControlError::Invalid(v))
    }
}

/// The stored form of a VF's admin config.
pub(super) fn admin_record(vf: VfId, a: &VfAdmin) -> proto::Vf {
    proto::Vf {
        name: vf_name(vf.0),
        index: u32::from(vf.0),
        mac: a.mac.map(|m| m.to_string()).unwrap_or_default(),
        vlan: u32::from(a.vlan),
        qos: u32::from(a.qos),
        spoof_check: a.spoof_check,
        trust: a.trust,
        link_state: link_state_to_proto(a.link_state) as i32,
        min_tx_rate: a.min_tx_rate,
        max_tx_rate: a.max_tx_rate,
        mtu: a.mtu,
        ..Default::default()
    }
}

/// A VF link state as the API spells it.
pub(super) fn link_state_to_proto(link: LinkState) -> proto::LinkState {
    match link {
        LinkState::Auto => proto::LinkState::Auto,
        LinkState::Enable => proto::LinkState::Enable,
        LinkState::Disable => proto::LinkState::Disable,
    }
}

/// The VF link state an API value names; `None` for unspecified or unknown values.
fn link_state_from_proto(value: i32) -> Option<LinkState> {
    match proto::LinkState::try_from(value) {
        Ok(proto::LinkState::Auto) => Some(LinkState::Auto),
        Ok(proto::LinkState::Enable) => Some(LinkState::Enable),
        Ok(proto::LinkState::Disable) => Some(LinkState::Disable),
        _ => None,
    }
}

/// The write that restores a stored admin config.
pub(super) fn update_from_record(r: &proto::Vf) -> VfUpdate {
    let link = link_state_from_proto(r.link_state).unwrap_or(LinkState::Auto);
    VfUpdate {
        mac: Some(r.mac.parse().ok()),
        vlan: u16::try_from(r.vlan).ok(),
        qos: u8::try_from(r.qos).ok(),
        spoof_check: Some(r.spoof_check),
        trust: Some(r.trust),
        link_state: Some(link),
        min_tx_rate: Some(r.min_tx_rate),
        max_tx_rate: Some(r.max_tx_rate),
        mtu: Some(r.mtu),
        rx_ring: None,
        tx_ring: None,
    }
}

/// `always`, `on-failure`, `never` for a stored restart policy.
pub(super) fn policy_name(value: i32) -> &'static str {
    supervisor::policy_word(
        proto::RestartPolicy::try_from(value).unwrap_or(proto::RestartPolicy::Always),
    )
}

/// The engine's egress action for a stored chain's egress.
pub(super) fn chain_egress(egress: Option<&proto::Egress>) -> ChainEgress {
    let tag = egress.filter(|e| e.vlan != 0).map(|e| VlanTag {
        vid: e.vlan as u16,
        pcp: 0,
    });
    match (egress.is_some_and(|e| e.two_way), tag) {
        (true, Some(back)) => ChainEgress::TwoWay(back),
        // Validation refuses two-way without a VLAN; keep to one way if one is stored.
        _ => ChainEgress::OneWay(tag),
    }
}

/// The switch match of a stored chain's classifier.
pub(super) fn wire_match(classifier: Option<&proto::Classifier>) -> WireMatch {
    let classifier = classifier.cloned().unwrap_or_default();
    WireMatch {
        vlan: (classifier.vlan != 0).then_some(classifier.vlan as u16),
        dst: classifier.dst_mac.parse::<MacAddr>().ok(),
    }
}

/// The engine's isolation for a stored chain's.
pub(super) fn isolation(value: i32) -> Isolation {
    if value == proto::Isolation::Shared as i32 {
        Isolation::Shared
    } else {
        Isolation::Strict
    }
}
