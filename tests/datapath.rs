//! Issue #3 acceptance tests: the data path end to end, with the real NIC engine, the
//! `gen` wire, real NF child processes (`nfhost nf run`, self-exec) and, for the
//! isolation tests, hostile NFs written right here on top of `nf_sdk`'s VF client.
//!
//! Counter snapshots are taken on the engine thread ([`EngineHandle::read_counters`]), between
//! two polls, so that relations between counters hold exactly: the engine is their
//! only writer. Nothing here sleeps to assert timing; every wait polls with a deadline.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nf_sdk::runtime::UMEM_IOVA;
use nf_sdk::{ClientError, EventFd, SharedMemory, VfClient};
use nfhost::dataplane::counters::{Drop as Reason, VfStats};
use nfhost::dataplane::engine::request::ChainFrames;
use nfhost::dataplane::engine::{
    ChainEgress, EngineConfig, EngineEvent, EngineHandle, Isolation, WireConfig,
};
use nfhost::dataplane::r#gen::{DEFAULT_DST_MAC, GenConfig, SinkStats};
use nfhost::dataplane::runner::{NfSpec, Runner};
use nfhost::nic::{Access, DmaFault, FaultReason, Link, Owner, VfId, WireMatch};
use nfhost_sys::attach::{Code, socketpair};
use nfhost_sys::bar::{Bar, IrqVector, Nf};
use nfhost_sys::ring::{Consumer, Desc, PRODUCER_OFFSET, Producer};
use vf_abi::COMPLETION_ERROR;

/// VFs enabled on the PF in every test.
const NUM_VFS: u16 = 4;
/// The gen wire's rate: low enough that a loaded 2-core machine keeps up.
const RATE_PPS: u64 = 50_000;
/// A 64-byte frame on the wire is 60 bytes in memory (no FCS).
const GEN_LEN: u64 = 60;
/// Size of a UMEM frame (the engine's `FRAME_SIZE`).
const FRAME: u64 = 2048;
/// Frames an SDK NF owns: `min(rx_ring, tx_ring)` with the default 1024-slot rings
/// (`nf_sdk::runtime`, `VfLoop::attach`). Bounds the frames one NF can hold in flight.
const NF_FRAMES: u64 = 1024;
/// Every frame from the wire.
const EVERY_FRAME: WireMatch = WireMatch {
    vlan: None,
    dst: None,
};
/// Generous deadline for things that take milliseconds when healthy.
const DEADLINE: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn gen_wire(vlans: Vec<u16>) -> WireConfig {
    WireConfig::Gen(GenConfig {
        rate_pps: RATE_PPS,
        vlans,
        ..Default::default()
    })
}

fn start(wire: WireConfig) -> Runner {
    let config = EngineConfig {
        num_vfs: NUM_VFS,
        wire,
        ..Default::default()
    };
    Runner::start(config, PathBuf::from(env!("CARGO_BIN_EXE_nfhost"))).expect("engine starts")
}

/// Polls `probe` every 5 ms until it returns `Ok`; panics with the last `Err` (a
/// description of the state seen) after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The wire's counters.
#[derive(Debug, Clone, Copy, Default)]
struct WireStats {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    drops: [u64; nfhost::dataplane::counters::DROP_REASONS],
}

impl WireStats {
    fn drop_count(&self, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap();
        self.drops[i]
    }

    fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Every counter of the PF, read on the engine thread between two polls.
#[derive(Debug, Clone)]
struct Snap {
    wire: WireStats,
    vfs: Vec<VfStats>,
    sink: SinkStats,
}

impl Snap {
    fn vf(&self, vf: u16) -> &VfStats {
        &self.vfs[usize::from(vf)]
    }
}

fn snap(engine: &EngineHandle) -> Snap {
    let c = engine.read_counters().expect("engine running");
    Snap {
        wire: WireStats {
            rx_packets: c.wire.rx_packets,
            rx_bytes: c.wire.rx_bytes,
            tx_packets: c.wire.tx_packets,
            tx_bytes: c.wire.tx_bytes,
            drops: c.wire.drops,
        },
        vfs: c.vfs[..usize::from(NUM_VFS)].to_vec(),
        sink: c.sink.unwrap_or_default(),
    }
}

/// Drop reasons that mean a bug or an attack here, never load. (`NoBuffer` and
/// `RingFull` are what an NF descheduled on a busy machine legitimately causes;
/// `LinkDown` is what a VF without an attached NF gets.)
const NEVER_UNDER_LOAD: [Reason; 5] = [
    Reason::Spoof,
    Reason::Vlan,
    Reason::DmaFault,
    Reason::Malformed,
    Reason::NoRoute,
];

/// Engine events, accumulated (the view hands each out once).
#[derive(Debug, Default)]
struct Events(Vec<EngineEvent>);

impl Events {
    fn pull(&mut self, engine: &EngineHandle) -> &[EngineEvent] {
        self.0.extend(engine.view().take_events());
        &self.0
    }

    fn faults(&self) -> Vec<DmaFault> {
        self.0
            .iter()
            .filter_map(|e| match e {
                EngineEvent::DmaFault(f) => Some(*f),
                _ => None,
            })
            .collect()
    }
}

/// An NF driven by the test itself over the real attach protocol: it can behave, or
/// not. Holds the NF ends of its four rings.
struct TestNf {
    vf: VfId,
    client: VfClient,
    bar: Bar<Nf>,
    doorbell: EventFd,
    mac: [u8; 6],
    fill: Producer,
    rx: Consumer,
    tx: Producer,
    completion: Consumer,
    /// (IOVA, memory) of each mapping it made.
    memory: Vec<(u64, SharedMemory)>,
}

impl TestNf {
    /// Registers a socketpair for `vf` with the engine (as the runner does for a child)
    /// and says `Hello`.
    fn attach(engine: &EngineHandle, vf: VfId, name: &str) -> TestNf {
        let (host, nf) = socketpair().expect("socketpair");
        let token = format!("{name}-token");
        let (owner, t) = (Owner::new(name), token.clone());
        engine
            .attach(vf, owner, t, format!("{{\"nf\":\"{name}\"}}"), host)
            .expect("attach");
        let mut client = VfClient::new(nf).expect("client");
        let attached = client.hello(&token).expect("hello");
        assert_eq!(
            client.get_config().expect("config over the socket"),
            format!("{{\"nf\":\"{name}\"}}")
        );
        assert_eq!(attached.vf_index, vf.0);
        assert_eq!(u64::from(attached.frame_size), FRAME);
        assert!(attached.umem.is_none(), "a strict VF gets no host UMEM");
        let bar = attached.bar;
        TestNf {
            vf,
            fill: bar.fill_producer().expect("fill"),
            rx: bar.rx_consumer().expect("rx"),
            tx: bar.tx_producer().expect("tx"),
            completion: bar.completion_consumer().expect("completion"),
            bar,
            doorbell: attached.doorbell,
            mac: attached.mac,
            client,
            memory: Vec::new(),
        }
    }

    /// Creates `frames` frames of memory, fills byte `i` with `pattern(i)` and maps it
    /// at `iova` with the given NIC permissions.
    fn map(&mut self, iova: u64, frames: u64, read: bool, write: bool, pattern: fn(usize) -> u8) {
        let len = (frames * FRAME) as usize;
        let memory = SharedMemory::create("test-nf-umem", len).expect("memfd");
        let bytes: Vec<u8> = (0..len).map(pattern).collect();
        memory.write_at(0, &bytes).expect("pattern");
        self.client
            .map_dma(iova, len as u64, &memory, 0, read, write)
            .expect("map_dma");
        self.memory.push((iova, memory));
    }

    /// Binds the rx vector to a new eventfd and unmasks it.
    fn bind_rx(&mut self) -> EventFd {
        let irq = EventFd::new().expect("eventfd");
        self.client.set_irq(0, &irq).expect("set_irq rx");
        self.bar.unmask_irq(IrqVector::RX);
        irq
    }

    fn enable(&mut self, engine: &EngineHandle) {
        self.client.enable().expect("enable");
        let vf = self.vf;
        assert!(engine.is_active(vf).unwrap());
    }

    fn post_fill(&mut self, iovas: impl IntoIterator<Item = u64>) {
        for iova in iovas {
            let d = Desc {
                iova,
                ..Desc::default()
            };
            self.fill.produce(&d).expect("fill ring has room");
        }
    }

    fn post_tx(&mut self, descs: &[Desc]) {
        for d in descs {
            self.tx.produce(d).expect("tx ring has room");
        }
        // Rung unconditionally: harmless when the NIC is polling.
        self.doorbell.notify().expect("doorbell");
    }

    fn drain(ring: &mut Consumer) -> Vec<Desc> {
        let mut out = Vec::new();
        while let Some(d) = ring.consume_one().expect("ring index sane") {
            out.push(d);
        }
        out
    }

    /// Waits until `n` completions arrived and returns them.
    fn completions(&mut self, n: usize) -> Vec<Desc> {
        let mut got = Vec::new();
        wait_for("completions", DEADLINE, || {
            got.extend(Self::drain(&mut self.completion));
            if got.len() >= n {
                Ok(())
            } else {
                Err(format!("{} of {n} completions: {got:?}", got.len()))
            }
        });
        got
    }
}

fn tx(iova: u64, len: u32) -> Desc {
    Desc {
        iova,
        len,
        flags: 0,
        vlan: 0,
    }
}

/// A 60-byte UDP frame.
fn udp_frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
        .udp(4000, 4001);
    let mut out = Vec::new();
    builder.write(&mut out, &[0u8; 18]).expect("frame");
    assert_eq!(out.len() as u64, GEN_LEN);
    out
}

/// The victim's recognisable memory pattern.
fn victim_pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ 0x5a
}

fn zeros(_: usize) -> u8 {
    0
}

// ---------------------------------------------------------------------------------
// 1. Counts match end to end
// ---------------------------------------------------------------------------------

/// Frames generated but neither sent to the wire nor counted as dropped: the ones
/// still inside VF 0's rings or NF (a 1-hop chain on VF 0).
fn in_flight_1hop(s: &Snap) -> i128 {
    let v = s.vf(0);
    i128::from(s.wire.rx_packets)
        - i128::from(s.wire.total_drops())
        - i128::from(v.total_drops())
        - i128::from(v.tx_packets)
}

#[test]
fn counts_match_end_to_end() {
    let mut runner = start(gen_wire(Vec::new()));
    // `run_chain` in two steps, so that the frames generated before the wire is
    // steered (dropped as no_route) are known exactly: read in the same engine call.
    let c = runner.engine().counters().clone();
    runner
        .engine()
        .install_chain(
            &[VfId(0)],
            Isolation::Strict,
            EVERY_FRAME,
            ChainEgress::OneWay(None),
        )
        .expect("chain installed");
    // Once steered, no generated frame is dropped as no_route again.
    let no_route_before = c.wire.drops(Reason::NoRoute);
    runner
        .run_nf(VfId(0), &NfSpec::new("fwd", "l2fwd"))
        .expect("l2fwd up");
    let engine = runner.engine();

    // Mid-traffic: every generated frame is delivered, dropped with a reason, or in
    // flight inside the one NF, which cannot hold more frames than it owns.
    let mid = wait_out(engine, 20_000);
    let in_flight = in_flight_1hop(&mid);
    assert!(
        (0..=i128::from(NF_FRAMES)).contains(&in_flight),
        "mid-traffic: {in_flight} frames unaccounted for (allowed 0..={NF_FRAMES}): {mid:?}"
    );

    // No engine API pauses the gen wire, so stop it at the PF: with the uplink down the
    // switch drops every generated frame (counted on the wire as link_down), and the
    // frames still inside the NF drain out (to the wire, or dropped as link_down).
    engine.set_link(Link::Down).expect("engine running");
    let end = wait_for("in-flight frames to drain", DEADLINE, || {
        let s = snap(engine);
        if in_flight_1hop(&s) == 0 {
            Ok(s)
        } else {
            Err(format!("in flight {}: {s:?}", in_flight_1hop(&s)))
        }
    });
    // And it stays at zero while the generator keeps going.
    let later = wait_for("2000 more frames generated", DEADLINE, || {
        let s = snap(engine);
        if s.wire.rx_packets >= end.wire.rx_packets + 2_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    for s in [&end, &later] {
        let v = s.vf(0);
        println!(
            "generated {}, to wire {}, wire drops {:?}, vf0 drops {:?}",
            s.wire.rx_packets, s.wire.tx_packets, s.wire.drops, v.drops
        );
        // Every generated frame is accounted for, exactly.
        assert_eq!(
            s.wire.rx_packets,
            s.wire.tx_packets + s.wire.total_drops() + v.total_drops(),
            "generated != delivered + dropped: {s:?}"
        );
        assert_eq!(v.tx_packets, s.wire.tx_packets, "{s:?}");
        assert_eq!(v.ring_errors, 0, "{s:?}");
        // Frames are dropped only for want of an NF (link_down: before it attached,
        // after the stop), for want of buffers (a descheduled NF), or before the wire
        // was steered (no_route); never for anything else.
        assert_eq!(s.wire.drop_count(Reason::NoRoute), no_route_before, "{s:?}");
        for reason in NEVER_UNDER_LOAD {
            if reason != Reason::NoRoute {
                assert_eq!(s.wire.drop_count(reason), 0, "wire {reason:?}: {s:?}");
            }
            assert_eq!(v.drop_count(reason), 0, "vf0 {reason:?}: {s:?}");
        }
        // The sink saw exactly what the NIC sent, intact: every frame it parsed carried
        // the generator's stamp (it may parse only a sample).
        assert_eq!(s.sink.packets, s.wire.tx_packets, "{s:?}");
        assert!(s.sink.stamped > 0, "{s:?}");
        assert_eq!(s.sink.unstamped, 0, "{s:?}");
        assert_eq!(s.sink.foreign, 0, "{s:?}");
        assert_eq!(s.wire.rx_bytes, s.wire.rx_packets * GEN_LEN);
        assert_eq!(s.wire.tx_bytes, s.wire.tx_packets * GEN_LEN);
        assert_eq!(v.tx_bytes, v.tx_packets * GEN_LEN);
        assert_eq!(s.sink.bytes, s.sink.packets * GEN_LEN);
    }
    // Nothing reached VF 0 or the wire after the stop: the delivered count did not move.
    assert_eq!(later.wire.tx_packets, end.wire.tx_packets);
    assert_eq!(later.vf(0).rx_packets, end.vf(0).rx_packets);
    assert!(end.wire.tx_packets >= mid.wire.tx_packets);
}

// ---------------------------------------------------------------------------------
// 2. shared vs strict copies
// ---------------------------------------------------------------------------------

fn run_3hop(isolation: Isolation) -> Snap {
    let (_runner, s) = start_3hop(isolation);
    s
}

/// A chain of three l2fwd hops on VFs 0-2, once 5000 frames have crossed it.
fn start_3hop(isolation: Isolation) -> (Runner, Snap) {
    let runner = chain_3hop(gen_wire(Vec::new()), isolation);
    let engine = runner.engine();
    let s = wait_out(engine, 5_000);
    (runner, s)
}

/// A chain of three l2fwd hops on VFs 0-2 taking every frame of `wire`.
fn chain_3hop(wire: WireConfig, isolation: Isolation) -> Runner {
    let mut runner = start(wire);
    let hops = [VfId(0), VfId(1), VfId(2)];
    let nfs = [
        NfSpec::new("hop1", "l2fwd"),
        NfSpec::new("hop2", "l2fwd"),
        NfSpec::new("hop3", "l2fwd"),
    ];
    runner
        .run_chain(
            &hops,
            &nfs,
            isolation,
            EVERY_FRAME,
            ChainEgress::OneWay(None),
        )
        .expect("chain up");
    runner
}

/// The first shared chain's frames, as the engine sees them.
fn chain_frames(engine: &EngineHandle) -> ChainFrames {
    let mut chains = engine.snapshot().expect("engine running").shared_chains;
    assert_eq!(chains.len(), 1, "{chains:?}");
    chains.remove(0)
}

/// Waits until `n` more frames than in `from` have left by the wire.
fn wait_more_out(engine: &EngineHandle, from: &Snap, n: u64) -> Snap {
    wait_out(engine, from.wire.tx_packets + n)
}

/// Waits until `total` frames have left by the wire.
fn wait_out(engine: &EngineHandle, total: u64) -> Snap {
    wait_for(&format!("{total} frames out by the wire"), DEADLINE, || {
        let s = snap(engine);
        if s.wire.tx_packets >= total {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
}

/// The links of a 3-hop shared chain on VFs 0-2 once its NFs feed each other.
const DIRECT: [(VfId, VfId); 2] = [(VfId(0), VfId(1)), (VfId(1), VfId(2))];

/// Waits until hops 1 and 2 of the 3-hop shared chain feed the next hop directly.
fn wait_linked(engine: &EngineHandle) -> ChainFrames {
    wait_for("both direct hops", DEADLINE, || {
        let f = chain_frames(engine);
        if f.links == DIRECT {
            Ok(f)
        } else {
            Err(format!("{f:?}"))
        }
    })
}

#[test]
fn a_shared_chain_settles_its_frames_when_a_hop_fed_directly_dies() {
    let (mut runner, _) = start_3hop(Isolation::Shared);
    let frames = wait_linked(runner.engine());
    let total: usize = frames.recorded.iter().map(|(_, n)| n).sum();

    // The middle hop dies while it feeds hop 3 and is fed by hop 1.
    let nf = runner.process(VfId(1)).expect("NF on VF 1");
    nf.signal(rustix::process::Signal::KILL).expect("kill");
    wait_for("the NF to die", DEADLINE, || {
        nf.try_wait().unwrap().ok_or_else(|| "running".to_owned())
    });
    // The chain settles: hop 1 stops feeding the dead hop, every frame is
    // recorded for exactly one hop, and the dead hop keeps about its share.
    let settled = wait_for("the chain to settle", DEADLINE, || {
        let f = chain_frames(runner.engine());
        if f.links.is_empty() && f.on_rings.len() == 2 && !f.settling {
            Ok(f)
        } else {
            Err(format!("{f:?}"))
        }
    });
    let recorded: usize = settled.recorded.iter().map(|(_, n)| n).sum();
    assert_eq!(recorded, total, "{settled:?}");
    let per_hop = total / 3;
    let dead = settled.recorded[1].1;
    assert!(
        dead + 2 * 64 >= per_hop && dead <= per_hop + 2 * 64,
        "the dead hop's frames: {settled:?}"
    );

    // Its next NF gets them back, the links are made again, and frames flow.
    runner
        .run_nf(VfId(1), &NfSpec::new("hop2", "l2fwd"))
        .expect("restart hop 2");
    let engine = runner.engine();
    wait_linked(engine);
    wait_more_out(engine, &snap(engine), 5_000);
    let f = chain_frames(engine);
    assert_eq!(f.links, DIRECT, "{f:?}");

    // Traffic stops; once the chain is drained, every frame of the chain sits on
    // exactly one ring: none was lost, none is held twice.
    engine.set_link(Link::Down).expect("link down");
    let quiet = wait_for("the chain to drain", DEADLINE, || {
        let f = chain_frames(engine);
        let on: usize = f.on_rings.iter().map(|(_, r)| r.len()).sum();
        if on == total {
            Ok(f)
        } else {
            Err(format!("{on} of {total} frames on rings: {f:?}"))
        }
    });
    let mut all: Vec<u64> = quiet
        .on_rings
        .iter()
        .flat_map(|(_, r)| r.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "a frame on two rings: {quiet:?}");
    let s = snap(engine);
    for hop in 0..3 {
        assert_eq!(s.vf(hop).ring_errors, 0, "hop {hop}: {s:?}");
        assert_eq!(s.vf(hop).copied_bytes, 0, "hop {hop}: {s:?}");
    }
    assert_eq!(s.sink.foreign, 0, "{s:?}");
}

#[test]
fn shared_chain_copies_nothing_strict_chain_copies_every_hop() {
    let s = run_3hop(Isolation::Shared);
    println!("shared: {s:?}");
    for hop in 0..3 {
        assert_eq!(s.vf(hop).copied_bytes, 0, "shared hop {hop}: {s:?}");
        assert_eq!(s.vf(hop).ring_errors, 0, "shared hop {hop}: {s:?}");
    }
    // Hop 1 gets its frames from the wire by DMA; hops 2 and 3 only by hand-over.
    assert_eq!(s.vf(0).handed_over, 0, "{s:?}");
    for hop in 1..3 {
        assert!(s.vf(hop).handed_over > 0, "shared hop {hop}: {s:?}");
        assert_eq!(
            s.vf(hop).handed_over,
            s.vf(hop).rx_packets,
            "shared hop {hop}: every frame received was handed over: {s:?}"
        );
    }
    assert!(s.wire.tx_packets > 0);
    assert_eq!(s.wire.tx_packets, s.vf(2).tx_packets, "{s:?}");
    assert_eq!(s.sink.foreign, 0, "{s:?}");
    // Hops 1 and 2 feed the next hop directly: the engine does not look at their
    // transmit rings per packet (it does at the last hop's, which leaves by the
    // wire).
    for hop in 0..2 {
        assert!(
            s.vf(hop).visits < s.vf(hop).tx_packets / 4,
            "hop {hop} visited per packet: {s:?}"
        );
        // Counts stay exact across direct hops: every frame a hop sent reached the
        // next or is counted as dropped there (link_down before it attached).
        assert_eq!(
            s.vf(hop).tx_packets,
            s.vf(hop + 1).rx_packets + s.vf(hop + 1).total_drops(),
            "hop {hop}: {s:?}"
        );
    }

    let s = run_3hop(Isolation::Strict);
    println!("strict: {s:?}");
    assert_eq!(s.vf(0).copied_bytes, 0, "hop 1 is written by DMA: {s:?}");
    for hop in 0..3 {
        assert_eq!(s.vf(hop).handed_over, 0, "strict hop {hop}: {s:?}");
        assert_eq!(s.vf(hop).ring_errors, 0, "strict hop {hop}: {s:?}");
    }
    for hop in 1..3 {
        assert!(s.vf(hop).rx_bytes > 0, "strict hop {hop}: {s:?}");
        assert_eq!(
            s.vf(hop).copied_bytes,
            s.vf(hop).rx_bytes,
            "strict hop {hop}: every byte received was a copy: {s:?}"
        );
        assert_eq!(s.vf(hop).rx_bytes, s.vf(hop).rx_packets * GEN_LEN);
    }
    assert_eq!(s.wire.tx_packets, s.vf(2).tx_packets, "{s:?}");
    assert_eq!(s.sink.foreign, 0, "{s:?}");
}

// ---------------------------------------------------------------------------------
// 3. Isolation: DMA
// ---------------------------------------------------------------------------------

const ROGUE_IOVA: u64 = 0x20_0000_0000;
const ROGUE_FRAMES: u64 = 8;
const ROGUE_WO_IOVA: u64 = 0x30_0000_0000;
const UNMAPPED: u64 = 0xdead_0000;

#[test]
fn dma_isolation_a_rogue_vf_cannot_touch_other_memory() {
    let mut runner = start(gen_wire(Vec::new()));
    // Wire traffic goes to VF 0 (and back out), before anyone attaches there.
    runner
        .engine()
        .install_chain(
            &[VfId(0)],
            Isolation::Strict,
            EVERY_FRAME,
            ChainEgress::OneWay(None),
        )
        .expect("steer the wire to VF 0");
    // A well-behaved NF on VF 1 (its UMEM sits at UMEM_IOVA in its own domain).
    runner
        .run_nf(VfId(1), &NfSpec::new("good", "l2fwd"))
        .expect("l2fwd on VF 1");
    let engine = runner.engine();
    let mut events = Events::default();

    // The victim on VF 2: maps a UMEM with a known pattern where every SDK NF maps it,
    // enables DMA, posts nothing.
    let victim_frames = 16;
    let mut victim = TestNf::attach(engine, VfId(2), "victim");
    victim.map(UMEM_IOVA, victim_frames, true, true, victim_pattern);
    victim.enable(engine);

    // The rogue on VF 0: a small UMEM of its own, plus one write-only page.
    let mut rogue = TestNf::attach(engine, VfId(0), "rogue");
    rogue.map(ROGUE_IOVA, ROGUE_FRAMES, true, true, zeros);
    rogue.map(ROGUE_WO_IOVA, 2, false, true, zeros);
    let _irq = rogue.bind_rx();
    // Fill descriptors: the victim's (and VF 1's) IOVAs, an address nobody mapped, one
    // that starts in its own UMEM but runs past its end; then 4 honest ones.
    let stolen: Vec<u64> = (0..8).map(|i| UMEM_IOVA + i * FRAME).collect();
    let straddle = ROGUE_IOVA + ROGUE_FRAMES * FRAME - GEN_LEN / 2;
    rogue.post_fill(stolen.iter().copied());
    rogue.post_fill([UNMAPPED, straddle]);
    let honest: Vec<u64> = (0..4).map(|i| ROGUE_IOVA + i * FRAME).collect();
    rogue.post_fill(honest.iter().copied());
    // Transmit descriptors: the victim's frames, nowhere, its own write-only page.
    let bad_tx = [
        tx(UMEM_IOVA, GEN_LEN as u32),
        tx(UMEM_IOVA + FRAME, GEN_LEN as u32),
        tx(UNMAPPED, GEN_LEN as u32),
        tx(ROGUE_WO_IOVA, GEN_LEN as u32),
    ];
    rogue.post_tx(&bad_tx);
    rogue.enable(engine);

    // Expected faults, all on VF 0: 10 writes (8 stolen + unmapped + straddle),
    // 4 reads (3 unmapped, 1 permission).
    let expect_unmapped = stolen.len() as u64 + 1 + 3;
    let expect_total = expect_unmapped + 1 + 1;
    let counts = |engine: &EngineHandle| {
        let f = engine.fault_counts().unwrap();
        (f[0], f[1], f[2])
    };
    wait_for("the rogue's faults and honest frames", DEADLINE, || {
        let (f0, ..) = counts(engine);
        let s = snap(engine);
        if f0.total() >= expect_total && s.vf(0).rx_packets >= 4 {
            Ok(())
        } else {
            Err(format!("faults {f0:?}, {s:?}"))
        }
    });
    // Let plenty more traffic hit VF 0 (its fill ring is now empty): nothing changes.
    let base = snap(engine).wire.rx_packets;
    let s = wait_for("2000 more frames", DEADLINE, || {
        let s = snap(engine);
        if s.wire.rx_packets >= base + 2_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    let (f0, f1, f2) = counts(engine);
    println!("rogue faults {f0:?}; {s:?}");
    assert_eq!(f0.unmapped, expect_unmapped, "{f0:?}");
    assert_eq!(f0.permission, 1, "{f0:?}");
    assert_eq!(f0.crosses_mapping_end, 1, "{f0:?}");
    assert_eq!(f0.get(FaultReason::Unmapped), expect_unmapped);
    assert_eq!(s.vf(0).drop_count(Reason::DmaFault), expect_total, "{s:?}");
    assert_eq!(
        s.vf(0).rx_packets,
        4,
        "only the honest fills got frames: {s:?}"
    );
    assert_eq!(s.vf(0).tx_packets, 0, "{s:?}");
    assert_eq!(s.wire.tx_packets, 0, "nothing the rogue sent left: {s:?}");
    assert!(s.vf(0).drop_count(Reason::NoBuffer) > 0, "{s:?}");
    // The other VFs: no faults, nothing received, nothing dropped.
    assert_eq!(f1.total(), 0);
    assert_eq!(f2.total(), 0);
    for vf in [1, 2] {
        assert_eq!(s.vf(vf).drop_count(Reason::DmaFault), 0, "VF {vf}: {s:?}");
        assert_eq!(s.vf(vf).rx_packets, 0, "VF {vf}: {s:?}");
        assert_eq!(s.vf(vf).ring_errors, 0, "VF {vf}: {s:?}");
    }

    // The refused transmits come back as errored completions, in order.
    let done = rogue.completions(bad_tx.len());
    assert_eq!(done.len(), bad_tx.len(), "{done:?}");
    for (c, d) in done.iter().zip(&bad_tx) {
        assert_eq!(c.iova, d.iova, "{done:?}");
        assert_eq!(c.flags & COMPLETION_ERROR, COMPLETION_ERROR, "{done:?}");
    }
    // The honest frames landed in the rogue's own memory, in fill order.
    let rx = TestNf::drain(&mut rogue.rx);
    assert_eq!(rx.iter().map(|d| d.iova).collect::<Vec<_>>(), honest);
    for d in &rx {
        assert_eq!(u64::from(d.len), GEN_LEN);
        let mut dst = [0u8; 6];
        let off = (d.iova - ROGUE_IOVA) as usize;
        rogue.memory[0].1.read_at(off, &mut dst).unwrap();
        assert_eq!(dst, DEFAULT_DST_MAC.0, "a generated frame at {:#x}", d.iova);
    }

    // The engine reported every fault, attributed to VF 0, with the right direction.
    let faults = wait_for("DmaFault events", DEADLINE, || {
        events.pull(engine);
        let faults = events.faults();
        if faults.len() as u64 >= expect_total {
            Ok(faults)
        } else {
            Err(format!("{faults:?}"))
        }
    });
    assert_eq!(faults.len() as u64, expect_total, "{faults:?}");
    assert!(faults.iter().all(|f| f.vf == VfId(0)), "{faults:?}");
    let writes: Vec<u64> = faults
        .iter()
        .filter(|f| f.access == Access::Write)
        .map(|f| f.iova.0)
        .collect();
    let mut expect_writes = stolen.clone();
    expect_writes.extend([UNMAPPED, straddle]);
    assert_eq!(writes, expect_writes, "{faults:?}");
    let reads: Vec<u64> = faults
        .iter()
        .filter(|f| f.access == Access::Read)
        .map(|f| f.iova.0)
        .collect();
    assert_eq!(reads, bad_tx.map(|d| d.iova).to_vec(), "{faults:?}");

    // Not one byte of the victim's memory changed.
    let len = (victim_frames * FRAME) as usize;
    let mut now = vec![0u8; len];
    victim.memory[0].1.read_at(0, &mut now).unwrap();
    let first_diff = (0..len).find(|&i| now[i] != victim_pattern(i));
    assert_eq!(first_diff, None, "victim memory changed");
    assert!(TestNf::drain(&mut victim.rx).is_empty());
}

// ---------------------------------------------------------------------------------
// 4. Isolation: interrupts
// ---------------------------------------------------------------------------------

#[test]
fn irq_isolation_vectors_are_per_vf_and_range_checked() {
    let runner = start(gen_wire(Vec::new()));
    let engine = runner.engine();
    engine
        .install_chain(
            &[VfId(0)],
            Isolation::Strict,
            EVERY_FRAME,
            ChainEgress::OneWay(None),
        )
        .expect("steer the wire to VF 0");

    // The victim on VF 2: ready to receive, rx vector bound and unmasked.
    let mut victim = TestNf::attach(engine, VfId(2), "victim");
    victim.map(UMEM_IOVA, 16, true, true, zeros);
    victim.post_fill((0..16).map(|i| UMEM_IOVA + i * FRAME));
    let victim_irq = victim.bind_rx();
    victim.enable(engine);

    let mut rogue = TestNf::attach(engine, VfId(0), "rogue");
    rogue.map(ROGUE_IOVA, 64, true, true, zeros);
    // Vectors beyond the VF's MSI-X table are refused.
    let stray = EventFd::new().unwrap();
    for vector in [4, 7, u16::MAX] {
        match rogue.client.set_irq(vector, &stray) {
            Err(ClientError::Refused { code, .. }) => {
                assert_eq!(code, Code::InvalidArgument, "vector {vector}")
            }
            other => panic!("set_irq({vector}) was not refused: {other:?}"),
        }
    }
    // Its socket speaks for VF 0 only: it cannot say Hello again as someone else.
    match rogue.client.hello("victim-token") {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, Code::FailedPrecondition),
        other => panic!("second hello was not refused: {other:?}"),
    }
    let irq = EventFd::new().unwrap();
    rogue.client.set_irq(0, &irq).expect("rx vector");

    // Phase 1: vector bound but masked (as the BAR resets): frames arrive, no interrupt.
    rogue.post_fill((0..8).map(|i| ROGUE_IOVA + i * FRAME));
    rogue.enable(engine);
    let s1 = wait_for("8 frames on VF 0", DEADLINE, || {
        let s = snap(engine);
        if s.vf(0).rx_packets == 8 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert_eq!(s1.vf(0).irq_delivered, 0, "{s1:?}");
    assert!(s1.vf(0).irq_blocked > 0, "{s1:?}");
    assert_eq!(irq.try_read().unwrap(), None);

    // Phase 2: unmasked: interrupts reach the rogue's eventfd, and only it.
    rogue.bar.unmask_irq(IrqVector::RX);
    rogue.post_fill((8..64).map(|i| ROGUE_IOVA + i * FRAME));
    let mut woken = 0u64;
    let s2 = wait_for("64 frames on VF 0", DEADLINE, || {
        woken += irq.try_read().unwrap().unwrap_or(0);
        let s = snap(engine);
        if s.vf(0).rx_packets == 64 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    // The fill ring is empty now: no more frames, no more interrupts. Let the engine
    // pass many more polls, then count.
    let base = s2.wire.rx_packets;
    let s = wait_for("1000 more frames", DEADLINE, || {
        let s = snap(engine);
        if s.wire.rx_packets >= base + 1_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    woken += irq.try_read().unwrap().unwrap_or(0);
    let nic = engine.snapshot().unwrap().nic;
    let model = (nic.irq().counts(VfId(0)), nic.irq().counts(VfId(2)));
    println!("woken {woken}, model {model:?}, {s:?}");
    assert_eq!(s.vf(0).rx_packets, 64, "{s:?}");
    assert!(s.vf(0).irq_delivered > 0, "{s:?}");
    assert_eq!(
        woken,
        s.vf(0).irq_delivered,
        "every delivered interrupt, and nothing else, reached the rogue's eventfd"
    );
    assert_eq!(model.0.delivered, s.vf(0).irq_delivered);
    // The victim: no interrupt raised, delivered or blocked; its eventfd never written.
    assert_eq!(s.vf(2).rx_packets, 0, "{s:?}");
    assert_eq!(s.vf(2).irq_delivered, 0, "{s:?}");
    assert_eq!(s.vf(2).irq_coalesced, 0, "{s:?}");
    assert_eq!(s.vf(2).irq_blocked, 0, "{s:?}");
    assert_eq!(model.1.raised, 0, "{:?}", model.1);
    assert_eq!(victim_irq.try_read().unwrap(), None);
    // The stray eventfd offered with the refused vectors was never written either.
    assert_eq!(stray.try_read().unwrap(), None);
}

// ---------------------------------------------------------------------------------
// 5. Ring errors
// ---------------------------------------------------------------------------------

#[test]
fn ring_errors_bad_length_and_jumping_index() {
    let mut runner = start(gen_wire(Vec::new()));
    // Another tenant's traffic flows through VF 1 all along.
    runner
        .run_chain(
            &[VfId(1)],
            &[NfSpec::new("other", "l2fwd")],
            Isolation::Strict,
            EVERY_FRAME,
            ChainEgress::OneWay(None),
        )
        .expect("chain on VF 1");
    let engine = runner.engine();

    let mut rogue = TestNf::attach(engine, VfId(0), "rogue");
    rogue.map(ROGUE_IOVA, 16, true, true, zeros);
    rogue.enable(engine);
    let frame = udp_frame(rogue.mac, [0x02, 0xee, 0, 0, 0, 1]);
    for i in 0..16 {
        rogue.memory[0]
            .1
            .write_at(i * FRAME as usize, &frame)
            .unwrap();
    }

    // A valid transmit goes out.
    rogue.post_tx(&[tx(ROGUE_IOVA, GEN_LEN as u32)]);
    let c = rogue.completions(1);
    assert_eq!(c[0].flags, 0, "{c:?}");
    let s = snap(engine);
    assert_eq!(s.vf(0).tx_packets, 1, "{s:?}");
    assert_eq!(s.vf(0).ring_errors, 0, "{s:?}");

    // Lengths over the frame (or under a header) are ring errors: refused, not sent.
    let bad = [
        tx(ROGUE_IOVA + FRAME, 2049),
        tx(ROGUE_IOVA + 2 * FRAME, 4000),
        tx(ROGUE_IOVA + 3 * FRAME, 0),
    ];
    rogue.post_tx(&bad);
    let c = rogue.completions(bad.len());
    for (c, d) in c.iter().zip(&bad) {
        assert_eq!(c.iova, d.iova);
        assert_eq!(c.flags & COMPLETION_ERROR, COMPLETION_ERROR, "{c:?}");
    }
    let s = snap(engine);
    assert_eq!(s.vf(0).ring_errors, 3, "{s:?}");
    assert_eq!(s.vf(0).tx_packets, 1, "{s:?}");
    assert_eq!(s.vf(0).total_drops(), 0, "{s:?}");
    let faults = engine.fault_counts().unwrap()[0];
    assert_eq!(faults.total(), 0, "length is checked before translation");
    assert_eq!(s.wire.tx_packets, s.vf(0).tx_packets + s.vf(1).tx_packets);

    // A producer index that jumps: written straight into the BAR through a second
    // mapping, as a wild pointer in the NF would.
    let bar = SharedMemory::from_fd(rogue.bar.fd().try_clone_to_owned().unwrap()).unwrap();
    let prod_at = rogue.bar.layout().tx().offset() + PRODUCER_OFFSET;
    let mut word = [0u8; 4];
    bar.read_at(prod_at, &mut word).unwrap();
    let prod = u32::from_ne_bytes(word);
    assert_eq!(prod, 4, "four descriptors were produced so far");
    bar.write_at(prod_at, &(prod + 5_000).to_ne_bytes())
        .unwrap();
    rogue.doorbell.notify().unwrap();
    wait_for("the ring error", DEADLINE, || {
        let s = snap(engine);
        if s.vf(0).ring_errors == 4 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    // Put back a sane index with one valid descriptor behind it: the NIC no longer
    // obeys this ring (the queue is halted until the NF resets the function).
    let slot = rogue.bar.layout().tx().offset() + nfhost_sys::ring::DESCS_OFFSET + 4 * 16;
    let mut desc = Vec::new();
    desc.extend_from_slice(&(ROGUE_IOVA + 4 * FRAME).to_ne_bytes());
    desc.extend_from_slice(&(GEN_LEN as u32).to_ne_bytes());
    desc.extend_from_slice(&[0u8; 4]);
    bar.write_at(slot, &desc).unwrap();
    bar.write_at(prod_at, &(prod + 1).to_ne_bytes()).unwrap();
    rogue.doorbell.notify().unwrap();
    let base = snap(engine);
    let s = wait_for("VF 1 to forward 2000 more frames", DEADLINE, || {
        let s = snap(engine);
        if s.vf(1).tx_packets >= base.vf(1).tx_packets + 2_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    println!("after the jump: {s:?}");
    assert_eq!(s.vf(0).ring_errors, 4, "counted once, then ignored: {s:?}");
    assert_eq!(s.vf(0).tx_packets, 1, "nothing more sent from VF 0: {s:?}");
    assert!(TestNf::drain(&mut rogue.completion).is_empty());
    // The other tenant did not notice.
    assert_eq!(s.vf(1).ring_errors, 0, "{s:?}");
    for reason in NEVER_UNDER_LOAD {
        assert_eq!(s.vf(1).drop_count(reason), 0, "VF 1 {reason:?}: {s:?}");
    }
    assert_eq!(s.wire.tx_packets, s.vf(0).tx_packets + s.vf(1).tx_packets);
    assert_eq!(s.sink.packets, s.wire.tx_packets, "{s:?}");

    // A function-level reset brings the queue back.
    rogue.client.reset().expect("reset");
    rogue.fill = rogue.bar.fill_producer().unwrap();
    rogue.rx = rogue.bar.rx_consumer().unwrap();
    rogue.tx = rogue.bar.tx_producer().unwrap();
    rogue.completion = rogue.bar.completion_consumer().unwrap();
    rogue.enable(engine);
    rogue.post_tx(&[tx(ROGUE_IOVA + 5 * FRAME, GEN_LEN as u32)]);
    let c = rogue.completions(1);
    assert_eq!(c[0].flags, 0, "{c:?}");
    let s = snap(engine);
    assert_eq!(s.vf(0).tx_packets, 2, "{s:?}");
    assert_eq!(s.vf(0).ring_errors, 4, "{s:?}");
}

// ---------------------------------------------------------------------------------
// 6. SIGKILL mid-traffic
// ---------------------------------------------------------------------------------

#[test]
fn sigkill_mid_traffic_scrubs_the_vf_and_spares_the_other_chain() {
    let mut runner = start(gen_wire(vec![100, 200]));
    let vlan = |vid| WireMatch {
        vlan: Some(vid),
        dst: None,
    };
    runner
        .run_chain(
            &[VfId(0)],
            &[NfSpec::new("fwd0", "l2fwd")],
            Isolation::Strict,
            vlan(100),
            ChainEgress::OneWay(None),
        )
        .expect("chain on VF 0");
    runner
        .run_chain(
            &[VfId(1)],
            &[NfSpec::new("fwd1", "l2fwd")],
            Isolation::Strict,
            vlan(200),
            ChainEgress::OneWay(None),
        )
        .expect("chain on VF 1");
    let mut events = Events::default();
    let s0 = wait_for("both chains forwarding", DEADLINE, || {
        let s = snap(runner.engine());
        if s.vf(0).tx_packets >= 2_000 && s.vf(1).tx_packets >= 2_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    for vf in [0, 1] {
        assert_eq!(s0.vf(vf).drop_count(Reason::Vlan), 0, "VF {vf}: {s0:?}");
    }

    // Crash VF 0's NF.
    let nf = runner.process(VfId(0)).expect("NF on VF 0");
    nf.signal(rustix::process::Signal::KILL).expect("kill");
    let status = wait_for("the NF to die", DEADLINE, || {
        nf.try_wait().unwrap().ok_or_else(|| "running".to_owned())
    });
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let engine = runner.engine();
    wait_for("Detached for VF 0", DEADLINE, || {
        let seen = events.pull(engine);
        if seen
            .iter()
            .any(|e| matches!(e, EngineEvent::Detached { vf: VfId(0), .. }))
        {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let detached: Vec<_> = events
        .0
        .iter()
        .filter(|e| matches!(e, EngineEvent::Detached { .. }))
        .cloned()
        .collect();
    assert_eq!(
        detached,
        vec![EngineEvent::Detached {
            vf: VfId(0),
            owner: Owner::new("fwd0"),
            mappings: 1,
        }]
    );
    // The device model: VF 0 scrubbed (no DMA, no mappings), still assigned for a restart.
    let (active, bus_master, mappings, owner, vf1_mappings) = {
        let snapshot = engine.snapshot().unwrap();
        let nic = &snapshot.nic;
        let iommu = nic.iommu();
        let count = |vf| iommu.mappings(iommu.domain_of(vf).unwrap()).count();
        (
            snapshot.active.contains(&VfId(0)),
            nic.vf(VfId(0)).unwrap().bus_master(),
            count(VfId(0)),
            nic.vf(VfId(0)).unwrap().owner().cloned(),
            count(VfId(1)),
        )
    };
    assert!(!active);
    assert!(!bus_master, "bus master still on after the NF died");
    assert_eq!(mappings, 0, "VF 0's domain still has mappings");
    assert_eq!(owner, Some(Owner::new("fwd0")));
    assert_eq!(vf1_mappings, 1, "VF 1's mapping untouched");

    // VF 1 keeps going, with no new drops; VLAN 100 frames are counted as dropped.
    let a = snap(engine);
    let b = wait_for("VF 1 to forward 5000 more frames", DEADLINE, || {
        let s = snap(engine);
        if s.vf(1).tx_packets >= a.vf(1).tx_packets + 5_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    println!("VF 0 down: {a:?}\n -> {b:?}");
    assert_eq!(b.vf(1).drops, a.vf(1).drops, "new drops on VF 1");
    assert_eq!(b.vf(1).ring_errors, 0);
    assert_eq!(
        b.vf(0).rx_packets,
        a.vf(0).rx_packets,
        "delivered to a dead VF"
    );
    assert_eq!(b.vf(0).tx_packets, a.vf(0).tx_packets);
    // Every frame generated in the window went to VF 1 or was counted as dropped.
    assert_eq!(
        b.wire.rx_packets - a.wire.rx_packets,
        (b.vf(1).rx_packets - a.vf(1).rx_packets)
            + (b.vf(0).total_drops() - a.vf(0).total_drops())
            + (b.wire.total_drops() - a.wire.total_drops()),
    );
    assert!(
        b.vf(0).drop_count(Reason::LinkDown) > a.vf(0).drop_count(Reason::LinkDown),
        "VLAN 100 frames while VF 0 is down should count as link_down: {b:?}"
    );

    // The VF can be attached again, and forwards again.
    runner
        .run_nf(VfId(0), &NfSpec::new("fwd0", "l2fwd"))
        .expect("restart on VF 0");
    let engine = runner.engine();
    let c = snap(engine);
    wait_for("VF 0 to forward again", DEADLINE, || {
        let s = snap(engine);
        if s.vf(0).tx_packets >= c.vf(0).tx_packets + 2_000 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let seen = events.pull(engine);
    assert!(
        seen.iter().any(|e| *e
            == EngineEvent::Attached {
                vf: VfId(0),
                owner: Owner::new("fwd0")
            }),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------------
// 6b. A VLAN-classified chain forwards its tagged traffic
// ---------------------------------------------------------------------------------

/// The chain as a user would create it: a VLAN classifier and default VF config. Its
/// hop must not drop, as a VLAN violation, the tagged frames its classifier let in
/// (it did before 7da7d88: the hop got them tagged and, untrusted, could not send them
/// back tagged).
#[test]
fn vlan_classified_chain_forwards_tagged_frames() {
    let mut runner = start(gen_wire(vec![100]));
    runner
        .run_chain(
            &[VfId(0)],
            &[NfSpec::new("fwd", "l2fwd")],
            Isolation::Strict,
            WireMatch {
                vlan: Some(100),
                dst: None,
            },
            ChainEgress::OneWay(None),
        )
        .expect("chain up");
    let engine = runner.engine();
    let s = wait_for("2000 frames through the chain", DEADLINE, || {
        let s = snap(engine);
        if s.wire.tx_packets >= 2_000 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    for reason in NEVER_UNDER_LOAD {
        assert_eq!(s.vf(0).drop_count(reason), 0, "VF 0 {reason:?}: {s:?}");
    }
    assert_eq!(s.wire.tx_packets, s.vf(0).tx_packets, "{s:?}");
    assert_eq!(s.sink.foreign, 0, "{s:?}");
}

// ---------------------------------------------------------------------------------
// 7. Idle NF CPU
// ---------------------------------------------------------------------------------

#[test]
fn idle_nf_uses_no_cpu() {
    let mut runner = start(WireConfig::None);
    runner
        .run_nf(VfId(0), &NfSpec::new("idle", "l2fwd"))
        .expect("l2fwd attaches");
    // Past start-up (exec, attach, first report).
    std::thread::sleep(Duration::from_millis(300));
    let nf = runner.process(VfId(0)).unwrap();
    let (c0, t0) = (nf.cpu_time().expect("cpu time"), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (c1, t1) = (nf.cpu_time().expect("cpu time"), Instant::now());
    let percent = (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64() * 100.0;
    println!(
        "idle l2fwd: {:?} CPU over {:?} = {percent:.2}% of one core",
        c1 - c0,
        t1 - t0
    );
    assert!(
        percent < 5.0,
        "an idle NF used {percent:.1}% of a core: a busy-polling loop?"
    );
}

/// While a chain settles, liveness must judge the NF the settle waits for (it shows
/// a frame waiting, so a heartbeat that stands still gets it restarted) and not the
/// NFs that wait for the settle (they wait for the engine).
#[test]
fn while_a_chain_settles_liveness_judges_the_hop_it_waits_for_not_the_waiting_ones() {
    let (mut runner, _) = start_3hop(Isolation::Shared);
    wait_linked(runner.engine());
    // Hop 3 stops answering (SIGSTOP: its heartbeat stands still); then hop 2 dies.
    let hop3 = runner.process(VfId(2)).expect("NF on VF 2");
    hop3.signal(rustix::process::Signal::STOP).expect("stop");
    let tasks = format!("/proc/{}/task", hop3.pid());
    wait_for("every thread of hop 3 to be stopped", DEADLINE, || {
        let mut states = Vec::new();
        for task in std::fs::read_dir(&tasks).map_err(|e| e.to_string())? {
            let stat = task.map_err(|e| e.to_string())?.path().join("stat");
            let s = std::fs::read_to_string(stat).map_err(|e| e.to_string())?;
            // The state follows the command name, which is in parentheses.
            states.push(
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.trim_start().chars().next()),
            );
        }
        if states.iter().all(|s| *s == Some('T')) {
            Ok(())
        } else {
            Err(format!("states {states:?}"))
        }
    });
    let hop2 = runner.process(VfId(1)).expect("NF on VF 1");
    hop2.signal(rustix::process::Signal::KILL).expect("kill");
    wait_for("hop 2 to die", DEADLINE, || {
        hop2.try_wait().unwrap().ok_or_else(|| "running".to_owned())
    });
    let engine = runner.engine();
    let pulse = |vf: VfId| {
        let pulses = engine.pulses().expect("engine running");
        pulses.into_iter().find(|p| p.vf == vf)
    };
    wait_for("the settle to wait for hop 3 only", DEADLINE, || {
        match (pulse(VfId(0)), pulse(VfId(2))) {
            (Some(waiting), Some(hung)) if waiting.rx_waiting == 0 && hung.rx_waiting > 0 => Ok(()),
            other => Err(format!("{other:?} {:?}", chain_frames(engine))),
        }
    });
    let held = pulse(VfId(2)).expect("hop 3").heartbeat;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        pulse(VfId(2)).expect("hop 3").heartbeat,
        held,
        "a stopped NF beat"
    );
    let f = chain_frames(engine);
    assert!(f.settling && f.links.is_empty(), "{f:?}");

    // Hop 3 answers again: the settle finishes, hop 2's next NF attaches, and the
    // chain is whole.
    let hop3 = runner.process(VfId(2)).expect("NF on VF 2");
    hop3.signal(rustix::process::Signal::CONT)
        .expect("continue");
    wait_for("the settle to finish", DEADLINE, || {
        let f = chain_frames(runner.engine());
        if f.settling {
            Err(format!("{f:?}"))
        } else {
            Ok(())
        }
    });
    runner
        .run_nf(VfId(1), &NfSpec::new("hop2", "l2fwd"))
        .expect("restart hop 2");
    let engine = runner.engine();
    wait_linked(engine);
    wait_more_out(engine, &snap(engine), 5_000);
}

/// At saturation a fed hop's frames can all sit on its completion ring while the NF
/// feeding it waits for free ones: the NIC must see that fill ring run low (it
/// did not: its own index of a ring an NF consumes is stale) and raise the
/// completion vector, or the chain stops for good.
#[test]
fn a_saturated_shared_chain_keeps_flowing_through_its_direct_hops() {
    let runner = chain_3hop(WireConfig::Gen(GenConfig::default()), Isolation::Shared);
    let engine = runner.engine();
    wait_linked(engine);
    let a = snap(engine);
    let b = wait_more_out(engine, &a, 20_000);
    // They crossed both direct hops, counted on both sides of each.
    for hop in 1..3 {
        assert!(
            b.vf(hop).handed_over >= a.vf(hop).handed_over + 20_000,
            "hop {hop}: {b:?}"
        );
    }
    assert_eq!(b.sink.foreign, 0, "{b:?}");
}
