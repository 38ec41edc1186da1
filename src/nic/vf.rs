//! One virtual function's configuration space.
//!
//! A VF's registers split the way they do on real SR-IOV NICs (and in
//! `ip link set PF vf N …`):
//! - **admin config**, written by the host through the PF: MAC, port VLAN and QoS,
//!   spoof check, trust, link state, TX rate limits, MTU and ring sizes. It survives a
//!   function-level reset because it lives in the PF driver, not in the VF.
//! - **function state**, owned by whoever drives the VF: bus-master enable and a MAC the
//!   VF driver chose for itself. A function-level reset (FLR) returns it to power-on.
//!
//! The MSI-X vector masks are function state too; they live with the interrupt
//! remapping entries in [`crate::nic::irq`], which reset masked as the MSI-X spec says.
//!
//! Every write is validated whole before anything changes: an invalid
//! [`VfUpdate`] returns a [`VfError`] and leaves the VF exactly as it was.

use thiserror::Error;

use super::types::{Link, MacAddr, Owner, VfId, VlanTag};

/// Smallest MTU accepted (RFC 791's minimum IPv4 datagram that must pass unfragmented).
pub const MTU_MIN: u32 = 68;
/// Largest MTU accepted (jumbo frames, as most 10/25/100G NICs).
pub const MTU_MAX: u32 = 9216;
/// Default MTU of a new VF.
pub const MTU_DEFAULT: u32 = 1500;
/// Smallest descriptor ring.
pub const RING_MIN: u32 = 64;
/// Largest descriptor ring.
pub const RING_MAX: u32 = 32768;
/// Default descriptor ring size.
pub const RING_DEFAULT: u32 = 1024;
/// Line rate of the emulated port in Mbit/s; no TX rate limit may exceed it.
pub const LINK_SPEED_MBPS: u32 = 100_000;
/// Largest VLAN id accepted (the 12-bit field; 0 means "no port VLAN").
pub const VLAN_MAX: u16 = 4095;
/// Largest 802.1p priority.
pub const QOS_MAX: u8 = 7;

/// Administrative link state of a VF (`ip link set … vf N state auto|enable|disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LinkState {
    /// Follow the PF's link.
    #[default]
    Auto,
    /// Always up, even when the PF's link is down (VF-to-VF traffic still flows).
    Enable,
    /// Always down: the VF neither sends nor receives.
    Disable,
}

/// Which descriptor ring a size refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// Receive (and its fill ring).
    Rx,
    /// Transmit (and its completion ring).
    Tx,
}

/// A rejected VF configuration write. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VfError {
    /// The MAC must be a unicast station address.
    #[error("MAC {0} is not a unicast address (group bit set or all zeros)")]
    MacNotUnicast(MacAddr),
    /// VLAN id beyond the 12-bit field.
    #[error("VLAN {0} is out of range 0-4095 (0 removes the port VLAN)")]
    VlanOutOfRange(u16),
    /// 802.1p priority beyond 3 bits.
    #[error("QoS {0} is out of range 0-7")]
    QosOutOfRange(u8),
    /// A priority only exists inside a VLAN tag.
    #[error("QoS {0} needs a port VLAN; set a VLAN 1-4095 with it")]
    QosWithoutVlan(u8),
    /// Minimum rate above maximum.
    #[error("min TX rate {min} Mbit/s is above max TX rate {max} Mbit/s")]
    TxRateInverted {
        /// Requested minimum.
        min: u32,
        /// Requested maximum.
        max: u32,
    },
    /// Rate above the port's line rate.
    #[error("TX rate {0} Mbit/s exceeds the link speed of 100000 Mbit/s")]
    TxRateAboveLink(u32),
    /// MTU outside 68-9216.
    #[error("MTU {0} is out of range 68-9216")]
    MtuOutOfRange(u32),
    /// Ring sizes are powers of two within bounds.
    #[error("{kind:?} ring size {size} must be a power of two in 64-32768")]
    RingSize {
        /// Which ring.
        kind: RingKind,
        /// Requested size.
        size: u32,
    },
    /// An untrusted VF tried to change a MAC that the host set.
    #[error("the host set this VF's MAC; only a trusted VF may change it")]
    AdminMacLocked,
}

/// The host-set configuration of a VF. Survives FLR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfAdmin {
    /// MAC set by the host; `None` leaves the VF its power-on (or self-chosen) MAC.
    pub mac: Option<MacAddr>,
    /// Port VLAN, 0 = none. With a port VLAN the NIC inserts the tag on transmit and
    /// strips it on receive; the VF only ever sees untagged frames.
    pub vlan: u16,
    /// 802.1p priority used with the port VLAN.
    pub qos: u8,
    /// Drop transmitted frames whose source MAC is not the VF's.
    pub spoof_check: bool,
    /// A trusted VF may use other MACs and send tagged frames.
    pub trust: bool,
    /// Administrative link state.
    pub link_state: LinkState,
    /// Guaranteed TX rate in Mbit/s (0 = none).
    pub min_tx_rate: u32,
    /// TX rate cap in Mbit/s (0 = unlimited).
    pub max_tx_rate: u32,
    /// Largest L3 payload in bytes.
    pub mtu: u32,
    /// Receive (and fill) ring size.
    pub rx_ring: u32,
    /// Transmit (and completion) ring size.
    pub tx_ring: u32,
}

impl Default for VfAdmin {
    fn default() -> Self {
        VfAdmin {
            mac: None,
            vlan: 0,
            qos: 0,
            spoof_check: true,
            trust: false,
            link_state: LinkState::Auto,
            min_tx_rate: 0,
            max_tx_rate: 0,
            mtu: MTU_DEFAULT,
            rx_ring: RING_DEFAULT,
            tx_ring: RING_DEFAULT,
        }
    }
}

impl VfAdmin {
    /// Checks every register against its rules.
    pub fn validate(&self) -> Result<(), VfError> {
        if let Some(mac) = self.mac {
            if !mac.is_unicast() {
                return Err(VfError::MacNotUnicast(mac));
            }
        }
        if self.vlan > VLAN_MAX {
            return Err(VfError::VlanOutOfRange(self.vlan));
        }
        if self.qos > QOS_MAX {
            return Err(VfError::QosOutOfRange(self.qos));
        }
        if self.qos != 0 && self.vlan == 0 {
            return Err(VfError::QosWithoutVlan(self.qos));
        }
        for rate in [self.min_tx_rate, self.max_tx_rate] {
            if rate > LINK_SPEED_MBPS {
                return Err(VfError::TxRateAboveLink(rate));
            }
        }
        if self.max_tx_rate != 0 && self.min_tx_rate > self.max_tx_rate {
            return Err(VfError::TxRateInverted {
                min: self.min_tx_rate,
                max: self.max_tx_rate,
            });
        }
        if !(MTU_MIN..=MTU_MAX).contains(&self.mtu) {
            return Err(VfError::MtuOutOfRange(self.mtu));
        }
        for (kind, size) in [(RingKind::Rx, self.rx_ring), (RingKind::Tx, self.tx_ring)] {
            if !size.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&size) {
                return Err(VfError::RingSize { kind, size });
            }
        }
        Ok(())
    }

    /// The port VLAN tag, if one is set.
    pub fn port_vlan(&self) -> Option<VlanTag> {
        (self.vlan != 0).then_some(VlanTag {
            vid: self.vlan,
            pcp: self.qos,
        })
    }
}

/// A partial write of the admin config: `None` fields are left alone. Applied whole
/// or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfUpdate {
    /// New host MAC (`Some(None)` hands the MAC back to the VF).
    pub mac: Option<Option<MacAddr>>,
    /// New port VLAN (0 removes it).
    pub vlan: Option<u16>,
    /// New priority.
    pub qos: Option<u8>,
    /// Spoof check on or off.
    pub spoof_check: Option<bool>,
    /// Trust on or off.
    pub trust: Option<bool>,
    /// Link state.
    pub link_state: Option<LinkState>,
    /// Minimum TX rate, Mbit/s.
    pub min_tx_rate: Option<u32>,
    /// Maximum TX rate, Mbit/s.
    pub max_tx_rate: Option<u32>,
    /// MTU.
    pub mtu: Option<u32>,
    /// RX ring size.
    pub rx_ring: Option<u32>,
    /// TX ring size.
    pub tx_ring: Option<u32>,
}

impl VfUpdate {
    /// The admin config this update would produce from `base`, validated.
    pub fn applied_to(&self, base: &VfAdmin) -> Result<VfAdmin, VfError> {
        let mut next = base.clone();
        if let Some(mac) = self.mac {
            next.mac = mac;
        }
        let fields = [
            (&mut next.min_tx_rate, self.min_tx_rate),
            (&mut next.max_tx_rate, self.max_tx_rate),
            (&mut next.mtu, self.mtu),
            (&mut next.rx_ring, self.rx_ring),
            (&mut next.tx_ring, self.tx_ring),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                *field = v;
            }
        }
        next.vlan = self.vlan.unwrap_or(next.vlan);
        next.qos = self.qos.unwrap_or(next.qos);
        // Removing the port VLAN without naming a QoS also clears the priority it carried.
        if self.vlan == Some(0) && self.qos.is_none() {
            next.qos = 0;
        }
        next.spoof_check = self.spoof_check.unwrap_or(next.spoof_check);
        next.trust = self.trust.unwrap_or(next.trust);
        next.link_state = self.link_state.unwrap_or(next.link_state);
        next.validate()?;
        Ok(next)
    }
}

/// Power-on function state: reset by FLR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FunctionState {
    /// PCI command register's bus-master enable: without it the VF does no DMA.
    bus_master: bool,
    /// A MAC the VF driver chose (allowed when the host set none, or when trusted).
    mac_override: Option<MacAddr>,
}

/// One VF: its registers, its owner, its reset counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    id: VfId,
    power_on_mac: MacAddr,
    admin: VfAdmin,
    function: FunctionState,
    owner: Option<Owner>,
    resets: u64,
}

impl Vf {
    /// A VF in its power-on state with the given power-on MAC.
    pub fn new(id: VfId, power_on_mac: MacAddr) -> Self {
        Vf {
            id,
            power_on_mac,
            admin: VfAdmin::default(),
            function: FunctionState::default(),
            owner: None,
            resets: 0,
        }
    }

    /// This VF's index.
    pub fn id(&self) -> VfId {
        self.id
    }

    /// The host-set configuration.
    pub fn admin(&self) -> &VfAdmin {
        &self.admin
    }

    /// The MAC in effect: the host's, else the VF driver's, else the power-on MAC.
    pub fn mac(&self) -> MacAddr {
        self.admin
            .mac
            .or(self.function.mac_override)
            .unwrap_or(self.power_on_mac)
    }

    /// The NF that owns this VF, if any.
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// Whether bus mastering (DMA) is enabled.
    pub fn bus_master(&self) -> bool {
        self.function.bus_master
    }

    /// Function-level resets since creation.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Link as seen by the VF, given the PF's link.
    pub fn link(&self, pf_link: Link) -> Link {
        match self.admin.link_state {
            LinkState::Auto => pf_link,
            LinkState::Enable => Link::Up,
            LinkState::Disable => Link::Down,
        }
    }

    /// Applies a host write (validated whole; on error nothing changes).
    pub fn apply(&mut self, update: &VfUpdate) -> Result<(), VfError> {
        self.admin = update.applied_to(&self.admin)?;
        Ok(())
    }

    /// The VF driver asks for its own MAC (a mailbox request on real NICs). Allowed when
    /// the host set none, or when the VF is trusted.
    pub fn request_mac(&mut self, mac: MacAddr) -> Result<(), VfError> {
        if !mac.is_unicast() {
            return Err(VfError::MacNotUnicast(mac));
        }
        if self.admin.mac.is_some() && !self.admin.trust {
            return Err(VfError::AdminMacLocked);
        }
        if self.admin.mac.is_some() {
            // Trusted: the VF's choice wins until the host writes again.
            self.admin.mac = None;
        }
        self.function.mac_override = Some(mac);
        Ok(())
    }

    /// Sets bus-master enable (the VF driver does this once its rings are ready).
    pub fn set_bus_master(&mut self, enabled: bool) {
        self.function.bus_master = enabled;
    }

    /// Function-level reset: back to power-on except the host's admin config.
    pub fn flr(&mut self) {
        self.function = FunctionState::default();
        self.resets += 1;
    }

    pub(super) fn set_owner(&mut self, owner: Option<Owner>) {
        self.owner = owner;
    }

    /// Disabling SR-IOV destroys the function; re-enabling creates a fresh one.
    pub(super) fn power_on_mac(&self) -> MacAddr {
        self.power_on_mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vf() -> Vf {
        Vf::new(VfId(3), MacAddr([2, 0, 0, 0, 0, 3]))
    }

    #[test]
    fn power_on_defaults_match_the_kernel() {
        let vf = vf();
        assert!(vf.admin().spoof_check, "spoof check defaults on");
        assert!(!vf.admin().trust, "trust defaults off");
        assert_eq!(vf.admin().link_state, LinkState::Auto);
        assert_eq!(vf.admin().mtu, MTU_DEFAULT);
        assert!(!vf.bus_master());
        assert_eq!(vf.mac(), MacAddr([2, 0, 0, 0, 0, 3]));
        assert!(vf.admin().validate().is_ok());
    }

    #[test]
    fn each_invalid_write_is_rejected_with_its_reason() {
        let cases: Vec<(VfUpdate, VfError)> = vec![
            (
                VfUpdate {
                    mac: Some(Some(MacAddr::BROADCAST)),
                    ..Default::default()
                },
                VfError::MacNotUnicast(MacAddr::BROADCAST),
            ),
            (
                VfUpdate {
                    mac: Some(Some(MacAddr::ZERO)),
                    ..Default::default()
                },
                VfError::MacNotUnicast(MacAddr::ZERO),
            ),
            (
                VfUpdate {
                    vlan: Some(4096),
                    ..Default::default()
                },
                VfError::VlanOutOfRange(4096),
            ),
            (
                VfUpdate {
                    vlan: Some(5),
                    qos: Some(8),
                    ..Default::default()
                },
                VfError::QosOutOfRange(8),
            ),
            (
                VfUpdate {
                    qos: Some(3),
                    ..Default::default()
                },
                VfError::QosWithoutVlan(3),
            ),
            (
                VfUpdate {
                    min_tx_rate: Some(500),
                    max_tx_rate: Some(100),
                    ..Default::default()
                },
                VfError::TxRateInverted { min: 500, max: 100 },
            ),
            (
                VfUpdate {
                    max_tx_rate: Some(100_001),
                    ..Default::default()
                },
                VfError::TxRateAboveLink(100_001),
            ),
            (
                VfUpdate {
                    mtu: Some(67),
                    ..Default::default()
                },
                VfError::MtuOutOfRange(67),
            ),
            (
                VfUpdate {
                    mtu: Some(9217),
                    ..Default::default()
                },
                VfError::MtuOutOfRange(9217),
            ),
            (
                VfUpdate {
                    rx_ring: Some(1000),
                    ..Default::default()
                },
                VfError::RingSize {
                    kind: RingKind::Rx,
                    size: 1000,
                },
            ),
            (
                VfUpdate {
                    tx_ring: Some(32),
                    ..Default::default()
                },
                VfError::RingSize {
                    kind: RingKind::Tx,
                    size: 32,
                },
            ),
            (
                VfUpdate {
                    tx_ring: Some(65536),
                    ..Default::default()
                },
                VfError::RingSize {
                    kind: RingKind::Tx,
                    size: 65536,
                },
            ),
        ];
        for (update, want) in cases {
            let mut vf = vf();
            let before = vf.clone();
            assert_eq!(vf.apply(&update), Err(want), "{update:?}");
            assert_eq!(vf, before, "a rejected write changed the VF");
        }
    }

    #[test]
    fn a_write_with_one_bad_field_changes_nothing() {
        let mut vf = vf();
        let before = vf.clone();
        let update = VfUpdate {
            mac: Some(Some(MacAddr([2, 1, 1, 1, 1, 1]))),
            vlan: Some(100),
            mtu: Some(9),
            ..Default::default()
        };
        assert!(vf.apply(&update).is_err());
        assert_eq!(vf, before);
    }

    #[test]
    fn unlimited_max_rate_allows_any_min() {
        let mut vf = vf();
        let update = VfUpdate {
            min_tx_rate: Some(1000),
            ..Default::default()
        };
        assert_eq!(vf.apply(&update), Ok(()));
    }

    #[test]
    fn removing_the_vlan_clears_its_priority() {
        let mut vf = vf();
        vf.apply(&VfUpdate {
            vlan: Some(100),
            qos: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(vf.admin().port_vlan(), Some(VlanTag { vid: 100, pcp: 5 }));
        vf.apply(&VfUpdate {
            vlan: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(vf.admin().port_vlan(), None);
        assert_eq!(vf.admin().qos, 0);
    }

    #[test]
    fn flr_keeps_admin_config_and_resets_function_state() {
        let mut vf = vf();
        let admin_mac = MacAddr([2, 0xaa, 0, 0, 0, 1]);
        vf.apply(&VfUpdate {
            mac: Some(Some(admin_mac)),
            vlan: Some(42),
            trust: Some(true),
            mtu: Some(9000),
            ..Default::default()
        })
        .unwrap();
        vf.set_bus_master(true);
        vf.set_owner(Some(Owner::new("fw")));
        let admin = vf.admin().clone();
        vf.flr();
        assert_eq!(vf.admin(), &admin, "admin config survives FLR");
        assert_eq!(vf.mac(), admin_mac);
        assert!(!vf.bus_master(), "FLR clears bus master");
        assert_eq!(vf.owner(), Some(&Owner::new("fw")), "FLR does not unassign");
        assert_eq!(vf.resets(), 1);
    }

    #[test]
    fn a_vf_chosen_mac_is_lost_on_flr() {
        let mut vf = vf();
        let own = MacAddr([2, 9, 9, 9, 9, 9]);
        vf.request_mac(own).unwrap();
        assert_eq!(vf.mac(), own);
        vf.flr();
        assert_eq!(vf.mac(), MacAddr([2, 0, 0, 0, 0, 3]));
    }

    #[test]
    fn an_untrusted_vf_cannot_override_the_host_mac() {
        let mut vf = vf();
        let host = MacAddr([2, 0xaa, 0, 0, 0, 1]);
        vf.apply(&VfUpdate {
            mac: Some(Some(host)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            vf.request_mac(MacAddr([2, 6, 6, 6, 6, 6])),
            Err(VfError::AdminMacLocked)
        );
        assert_eq!(vf.mac(), host);
        vf.apply(&VfUpdate {
            trust: Some(true),
            ..Default::default()
        })
        .unwrap();
        vf.request_mac(MacAddr([2, 6, 6, 6, 6, 6])).unwrap();
        assert_eq!(vf.mac(), MacAddr([2, 6, 6, 6, 6, 6]));
    }

    #[test]
    fn link_follows_admin_state() {
        let mut vf = vf();
        assert_eq!(vf.link(Link::Down), Link::Down);
        assert_eq!(vf.link(Link::Up), Link::Up);
        vf.apply(&VfUpdate {
            link_state: Some(LinkState::Enable),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(vf.link(Link::Down), Link::Up);
        vf.apply(&VfUpdate {
            link_state: Some(LinkState::Disable),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(vf.link(Link::Up), Link::Down);
    }

    pub(crate) fn arb_update() -> impl Strategy<Value = VfUpdate> {
        let mac = prop_oneof![
            Just(None),
            Just(Some(None)),
            any::<[u8; 6]>().prop_map(|b| Some(Some(MacAddr(b)))),
        ];
        let link = prop_oneof![
            Just(LinkState::Auto),
            Just(LinkState::Enable),
            Just(LinkState::Disable)
        ];
        (
            mac,
            proptest::option::of(0u16..4200),
            proptest::option::of(0u8..10),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(link),
            proptest::option::of(0u32..120_000),
            proptest::option::of(0u32..120_000),
            proptest::option::of(0u32..10_000),
            proptest::option::of(prop_oneof![
                Just(1000u32),
                0u32..70_000,
                Just(64),
                Just(4096)
            ]),
            proptest::option::of(prop_oneof![Just(1024u32), 0u32..70_000, Just(32768)]),
        )
            .prop_map(
                |(mac, vlan, qos, spoof_check, trust, link_state, min, max, mtu, rx, tx)| {
                    VfUpdate {
                        mac,
                        vlan,
                        qos,
                        spoof_check,
                        trust,
                        link_state,
                        min_tx_rate: min,
                        max_tx_rate: max,
                        mtu,
                        rx_ring: rx,
                        tx_ring: tx,
                    }
                },
            )
    }

    proptest! {
        /// Any sequence of config writes, valid or not, leaves the VF valid, and a
        /// rejected write leaves it unchanged.
        #[test]
        fn any_write_sequence_leaves_the_vf_valid(updates in proptest::collection::vec(arb_update(), 1..40)) {
            let mut vf = vf();
            for update in &updates {
                let before = vf.clone();
                match vf.apply(update) {
                    Ok(()) => {}
                    Err(_) => prop_assert_eq!(&vf, &before),
                }
                prop_assert!(vf.admin().validate().is_ok(), "invalid state after {:?}", update);
                prop_assert!(vf.mac().is_unicast());
            }
        }
    }
}
