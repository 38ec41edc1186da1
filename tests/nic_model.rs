//! The device model end to end through its public API: two tenants share one PF,
//! a chain is steered through the switch, a tenant misbehaves, a VF is released and
//! reused. Everything a later layer (engine, control plane) relies on.

use nfhost::nic::{
    Access, Decision, DropReason, FaultReason, InterruptSink, Iova, MacAddr, Micros, Nic, NicError,
    Owner, Perms, PfConfig, PfError, Raise, Region, RegionId, TargetId, TxSteer, Vector, VfId,
    VfUpdate, VlanTag, WireMatch,
};

const MIB: u64 = 1 << 20;

#[derive(Default)]
struct Recorder(Vec<(VfId, TargetId)>);

impl InterruptSink for Recorder {
    fn deliver(&mut self, vf: VfId, _vector: Vector, target: TargetId) {
        self.0.push((vf, target));
    }
}

fn frame(src: MacAddr, dst: MacAddr, vlan: Option<u16>) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2(src.0, dst.0);
    let ip = match vlan {
        Some(v) => eth
            .single_vlan(etherparse::VlanId::try_new(v).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
        None => eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
    };
    let b = ip.udp(1, 2);
    let mut out = Vec::new();
    b.write(&mut out, &[0u8; 18]).unwrap();
    out
}

/// Attaches an NF the way the engine will on its behalf: own VF, own UMEM, rx vector.
fn attach(nic: &mut Nic, vf: VfId, name: &str, region: u64, target: u32) -> Owner {
    let owner = Owner::new(name);
    nic.assign(vf, owner.clone()).unwrap();
    let umem = Region {
        id: RegionId(region),
        len: 4 * MIB,
    };
    nic.map_dma(vf, Iova(0x1000_0000), 4 * MIB, umem, 0, Perms::RW)
        .unwrap();
    nic.bind_irq(vf, Vector::RX, &owner, TargetId(target))
        .unwrap();
    nic.set_irq_masked(vf, Vector::RX, false).unwrap();
    nic.set_bus_master(vf, true).unwrap();
    owner
}

#[test]
fn tenants_are_isolated_and_a_released_vf_is_clean() {
    let mut nic = Nic::new(&PfConfig::default()).unwrap();
    nic.set_num_vfs(8).unwrap();
    let a = attach(&mut nic, VfId(0), "tenant-a", 100, 1);
    let _b = attach(&mut nic, VfId(1), "tenant-b", 200, 2);

    // Both tenants use the same IOVA; each lands in its own memory.
    let ta = nic
        .translate(VfId(0), Iova(0x1000_0800), 64, Access::Write)
        .unwrap();
    let tb = nic
        .translate(VfId(1), Iova(0x1000_0800), 64, Access::Write)
        .unwrap();
    assert_eq!((ta.region, tb.region), (RegionId(100), RegionId(200)));

    // Tenant A posts an address it never mapped: fault attributed to A, nothing moves.
    let fault = nic
        .translate(VfId(0), Iova(0x2000_0000), 64, Access::Write)
        .unwrap_err();
    assert_eq!((fault.vf, fault.reason), (VfId(0), FaultReason::Unmapped));
    assert_eq!(nic.iommu().fault_counts(VfId(0)).unmapped, 1);
    assert_eq!(nic.iommu().fault_counts(VfId(1)).total(), 0);

    // Tenant A cannot bind tenant B's vectors; B's interrupts reach B's target only.
    let err = nic
        .bind_irq(VfId(1), Vector::RX, &a, TargetId(1))
        .unwrap_err();
    assert!(matches!(err, NicError::Irq(_)), "{err}");
    let mut rec = Recorder::default();
    assert_eq!(
        nic.raise_irq(VfId(1), Vector::RX, Micros(0), &mut rec),
        Raise::Delivered
    );
    assert_eq!(rec.0, vec![(VfId(1), TargetId(2))]);

    // Tenant A cannot pretend to be B on the wire.
    let b_mac = nic.vf(VfId(1)).unwrap().mac();
    let spoofed = frame(b_mac, MacAddr::BROADCAST, None);
    assert_eq!(
        nic.switch_from_vf(VfId(0), &spoofed),
        Decision::Drop(DropReason::Spoof)
    );

    // SR-IOV cannot be switched off under the tenants.
    let err = nic.set_num_vfs(0).unwrap_err();
    assert!(matches!(err, NicError::Pf(PfError::VfsAssigned(ref o)) if o.len() == 2));

    // Release A: the next owner of VF 0 finds nothing of A's.
    let released = nic.release(VfId(0)).unwrap();
    assert_eq!(released.owner, Some(a));
    assert_eq!(released.mappings.len(), 1);
    assert!(
        nic.translate(VfId(0), Iova(0x1000_0800), 64, Access::Write)
            .is_err()
    );
    let mut rec = Recorder::default();
    assert!(matches!(
        nic.raise_irq(VfId(0), Vector::RX, Micros(1), &mut rec),
        Raise::Blocked(_)
    ));
    assert!(rec.0.is_empty());
    let c = attach(&mut nic, VfId(0), "tenant-c", 300, 3);
    assert_eq!(nic.vf(VfId(0)).unwrap().owner(), Some(&c));
}

#[test]
fn a_chain_is_steered_wire_to_hops_to_wire() {
    let mut nic = Nic::new(&PfConfig::default()).unwrap();
    nic.set_num_vfs(4).unwrap();
    let hops = [VfId(1), VfId(2), VfId(3)];
    for (i, vf) in hops.into_iter().enumerate() {
        attach(&mut nic, vf, &format!("hop{i}"), i as u64, i as u32);
        nic.update_vf(
            vf,
            &VfUpdate {
                vlan: Some(100),
                spoof_check: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    }
    nic.steer_wire(
        WireMatch {
            vlan: Some(100),
            dst: None,
        },
        hops[0],
    )
    .unwrap();
    nic.steer_tx(hops[0], TxSteer::ToVf(hops[1])).unwrap();
    nic.steer_tx(hops[1], TxSteer::ToVf(hops[2])).unwrap();
    let out_tag = VlanTag { vid: 200, pcp: 0 };
    nic.steer_tx(hops[2], TxSteer::ToWire(Some(out_tag)))
        .unwrap();

    let outside = MacAddr([0x02, 0xee, 0, 0, 0, 1]);
    let server = MacAddr([0x02, 0xee, 0, 0, 0, 2]);
    let Decision::Forward(f) = nic.switch_from_wire(&frame(outside, server, Some(100))) else {
        panic!("classifier did not take the frame");
    };
    assert_eq!(f.vfs.iter().collect::<Vec<_>>(), vec![hops[0]]);
    assert_eq!(nic.veb().rx_tag(hops[0], &f), None, "stripped for the NF");

    // The NFs see and send untagged frames; the port VLAN travels in the switch.
    let inner = frame(outside, server, None);
    let mut at = hops[0];
    for next in &hops[1..] {
        let Decision::Forward(f) = nic.switch_from_vf(at, &inner) else {
            panic!("hop {at} dropped");
        };
        assert_eq!(f.vfs.iter().collect::<Vec<_>>(), vec![*next]);
        at = *next;
    }
    let Decision::Forward(f) = nic.switch_from_vf(at, &inner) else {
        panic!("last hop dropped");
    };
    assert_eq!(f.uplink, Some(Some(out_tag)));

    // Untagged wire traffic does not enter the chain.
    assert_eq!(
        nic.switch_from_wire(&frame(outside, server, None)),
        Decision::Drop(DropReason::NoRoute)
    );

    // Releasing a hop tears its steering down.
    nic.release(hops[1]).unwrap();
    assert_eq!(nic.veb().tx_rule(hops[0]), None);
    assert_eq!(nic.veb().tx_rule(hops[1]), None);
}
