//! `nfhost model`: the device model alone, no packet memory and no NF processes.
//!
//! It builds the default emulated NIC (64 VFs), sets up what the control plane will
//! set up for a two-hop chain and one standalone NF, then feeds built-in traffic
//! through the switch, the IOMMU and interrupt remapping exactly as the engine will,
//! and prints per-VF counts plus the DMA fault a misbehaving NF causes.

use std::time::Instant;

use clap::Args as ClapArgs;
use etherparse::PacketBuilder;

use nfhost::nic::{
    Access, Decision, DropReason, InterruptSink, Iova, MacAddr, Micros, Nic, NicError, Owner,
    Perms, PfConfig, Region, RegionId, TargetId, TxSteer, Vector, VfId, VfUpdate, VlanTag,
    WireMatch,
};

/// Options of `nfhost model`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Frames to generate on the wire.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// VFs to enable.
    #[arg(long, default_value_t = 64)]
    vfs: u16,
}

const UMEM: u64 = 4 << 20;
const FRAME: u64 = 2048;

#[derive(Default, Clone, Copy)]
struct VfCounts {
    rx: u64,
    tx: u64,
    irqs: u64,
}

struct Wakeups<'a>(&'a mut [VfCounts]);

impl InterruptSink for Wakeups<'_> {
    fn deliver(&mut self, vf: VfId, _vector: Vector, _target: TargetId) {
        self.0[vf.index()].irqs += 1;
    }
}

fn udp_frame(src: MacAddr, dst: MacAddr, vlan: Option<u16>, flow: u16) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src.0, dst.0);
    let ip = match vlan.and_then(|v| etherparse::VlanId::try_new(v).ok()) {
        Some(v) => eth
            .single_vlan(v)
            .ipv4([198, 51, 100, 1], [203, 0, 113, 7], 64),
        None => eth.ipv4([198, 51, 100, 1], [203, 0, 113, 7], 64),
    };
    let builder = ip.udp(10_000 + flow, 80);
    let payload = [0u8; 18];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut out, &payload);
    out
}

/// Runs the walkthrough.
pub fn run(args: &Args) -> Result<(), NicError> {
    println!("nfhost model: the device model alone (switch, IOMMU, interrupt remapping),");
    println!("no packet memory and no NF processes: `nfhost demo` runs the real data path.\n");

    let mut nic = Nic::new(&PfConfig::default())?;
    nic.set_num_vfs(args.vfs)?;
    let (hop1, hop2, web) = (VfId(0), VfId(1), VfId(2));
    let chain_vfs = [hop1, hop2];
    for (i, vf) in [hop1, hop2, web].into_iter().enumerate() {
        let owner = Owner::new(["mon", "fwd", "web"][i]);
        nic.assign(vf, owner.clone())?;
        let region = Region {
            id: RegionId(i as u64),
            len: UMEM,
        };
        nic.map_dma(vf, Iova(0), UMEM, region, 0, Perms::RW)?;
        nic.bind_irq(vf, Vector::RX, &owner, TargetId(i as u32))?;
        nic.set_irq_masked(vf, Vector::RX, false)?;
        nic.set_irq_itr(vf, Vector::RX, 50)?;
        nic.set_bus_master(vf, true)?;
    }
    // Chain "edge": VLAN 100 from the wire → mon → fwd → wire re-tagged 200.
    for vf in chain_vfs {
        nic.update_vf(
            vf,
            &VfUpdate {
                vlan: Some(100),
                spoof_check: Some(false),
                ..Default::default()
            },
        )?;
    }
    nic.steer_wire(
        WireMatch {
            vlan: Some(100),
            dst: None,
        },
        hop1,
    )?;
    nic.steer_tx(hop1, TxSteer::ToVf(hop2))?;
    nic.steer_tx(hop2, TxSteer::ToWire(Some(VlanTag { vid: 200, pcp: 0 })))?;
    let web_mac = nic.vf(web)?.mac();
    let outside = MacAddr([0x02, 0xee, 0, 0, 0, 1]);

    let traffic = [
        udp_frame(outside, MacAddr([0x02, 0xaa, 0, 0, 0, 9]), Some(100), 1),
        udp_frame(outside, web_mac, None, 2),
        udp_frame(outside, MacAddr::BROADCAST, None, 3),
        udp_frame(outside, MacAddr([0x02, 0xbb, 0, 0, 0, 1]), None, 4),
    ];

    let stripped = [udp_frame(
        outside,
        MacAddr([0x02, 0xaa, 0, 0, 0, 9]),
        None,
        1,
    )];
    let mut counts = vec![VfCounts::default(); usize::from(args.vfs)];
    let (mut wire_out, mut wire_drops, mut faults, mut not_enabled) = (0u64, 0u64, 0u64, 0u64);
    let mut work: Vec<VfId> = Vec::with_capacity(usize::from(args.vfs));
    let started = Instant::now();
    for n in 0..args.frames {
        let now = Micros(n / 10);
        let kind = (n % traffic.len() as u64) as usize;
        let frame = &traffic[kind];
        let slot = Iova((n % (UMEM / FRAME)) * FRAME);
        work.clear();
        match nic.switch_from_wire(frame) {
            Decision::Forward(f) => work.extend(f.vfs.iter()),
            Decision::Drop(_) => {
                wire_drops += 1;
                continue;
            }
        }
        // Each delivery: DMA into the VF's own buffer, rx interrupt, the NF forwards it.
        while let Some(vf) = work.pop() {
            if !nic.vf(vf)?.bus_master() {
                not_enabled += 1;
                continue;
            }
            if nic
                .translate(vf, slot, frame.len() as u64, Access::Write)
                .is_err()
            {
                faults += 1;
                continue;
            }
            counts[vf.index()].rx += 1;
            nic.raise_irq(vf, Vector::RX, now, &mut Wakeups(&mut counts));
            if !chain_vfs.contains(&vf) {
                continue;
            }
            counts[vf.index()].tx += 1;
            // A port-VLAN VF receives frames with the tag stripped, and sends them so.
            let sent = if frame.len() == stripped[0].len() + 4 {
                &stripped[0]
            } else {
                frame
            };
            match nic.switch_from_vf(vf, sent) {
                Decision::Forward(f) if f.uplink.is_some() => wire_out += 1,
                Decision::Forward(f) => work.extend(f.vfs.iter()),
                Decision::Drop(_) => {}
            }
        }
        nic.poll_irqs(now, &mut Wakeups(&mut counts));
    }
    let elapsed = started.elapsed().as_secs_f64();

    println!(
        "{:<6} {:<6} {:>12} {:>12} {:>12}",
        "VF", "owner", "rx frames", "tx frames", "wakeups"
    );
    for vf in nic.pf().vfs() {
        let c = counts[vf.id().index()];
        if c.rx + c.tx == 0 {
            continue;
        }
        let owner = vf.owner().map_or("-".to_owned(), ToString::to_string);
        println!(
            "{:<6} {:<6} {:>12} {:>12} {:>12}",
            vf.id().to_string(),
            owner,
            c.rx,
            c.tx,
            c.irqs
        );
    }
    let idle = counts.iter().filter(|c| c.rx + c.tx == 0).count();
    println!("({idle} VFs carried nothing: {not_enabled} flooded copies found no NF attached)\n");
    let drops = nic.veb().wire_drops();
    println!(
        "wire: {} frames in, {wire_out} out through the chain, {wire_drops} dropped ({} no route), {faults} DMA faults",
        args.frames,
        drops.get(DropReason::NoRoute)
    );
    println!(
        "model decisions: {:.2} M frames/s on one core ({elapsed:.2} s)\n",
        args.frames as f64 / elapsed / 1e6
    );

    // A misbehaving NF: "web" posts a buffer address that belongs to the chain's memory
    // layout but is not mapped in its own domain. The NIC refuses and says who did it.
    if let Err(fault) = nic.translate(web, Iova(UMEM + FRAME), 64, Access::Write) {
        println!("isolation check: {fault}");
    }
    let released = nic.release(web)?;
    println!(
        "released {web}: owner {:?}, {} mapping(s) removed, vectors unbound",
        released.owner.map(|o| o.0),
        released.mappings.len()
    );
    Ok(())
}
