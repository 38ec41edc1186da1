//! memif on an external NF's endpoint (`memif.sock`), against two clients nobody
//! here wrote and one written to break the rules:
//!
//! - DPDK's own memif driver, in `dpdk-testpmd` (`macswap`, then `io`, one port
//!   looped), as the second hop of a shared chain fed by the gen wire: it carries
//!   the traffic, and once the chain's input is cut, testpmd's own RX and TX
//!   counters equal its VF's, exactly;
//! - a client from `tests/common/memif_client.rs`: a wrong secret, a region larger
//!   than its memfd, a second connection, descriptors outside its regions (on
//!   receive and on transmit) and a ring index that jumps, each refused or faulted
//!   and counted on its VF, while another external NF's memory stays the same byte
//!   for byte. It also shows an interrupt-mode client woken by its rx eventfd.
//!
//! `dpdk-testpmd` and its memif driver come from Debian's `dpdk-dev` and
//! `librte-net-memif23`, which `scripts/test.sh` installs; without them the first
//! test fails and says so.

#[path = "common/memif_client.rs"]
mod memif_client;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::time::Duration;

use memif_client::{Client, Control, reason};
use nfhost::testpmd::{Testpmd, memif_client as testpmd_client};
use nfhost_api::proto;
use server::{
    Clients, GEN, Server, TempDir, create_chain, external_hop, get_nf, runtime, set_vf_link,
    settled, vf_stats, wait_until,
};
use vf_abi::memif::{MemifDesc, Msg};

fn state(rt: &tokio::runtime::Runtime, c: &mut Clients, name: &str) -> i32 {
    get_nf(rt, c, name).status.unwrap_or_default().state
}

fn testpmd_exe() -> std::path::PathBuf {
    nfhost::testpmd::find().expect(
        "dpdk-testpmd is missing: scripts/test.sh installs it \
         (apt-get install dpdk-dev librte-net-memif23)",
    )
}

/// Starts testpmd on `endpoint`'s memif socket and waits until it forwards.
fn start_testpmd(endpoint: &proto::Endpoint, mode: &str) -> Testpmd {
    testpmd_client(
        &testpmd_exe(),
        &format!("nfhost-test-{}-{mode}", std::process::id()),
        Path::new(&endpoint.memif_socket),
        &endpoint.secret,
        &endpoint.mac,
        mode,
    )
    .expect("testpmd starts and forwards")
}

#[test]
fn testpmd_over_memif_is_a_chain_hop_with_exact_counters() {
    let data = TempDir::new("memif-testpmd");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));

    // The README's shared edge chain, its second hop a DPDK process.
    let mut chain = nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))
        .expect("example chain parses");
    chain.name = "chains/pmd".into();
    chain.nfs[1] = external_hop("pmd");
    let chain = create_chain(&rt, &mut c, chain);
    let (first, vf) = (chain.vfs[0].clone(), chain.vfs[1].clone());
    wait_until("the monitor runs", 20, || {
        state(&rt, &mut c, "mon") == proto::NfState::Running as i32
    });
    let endpoint = get_nf(&rt, &mut c, "pmd")
        .endpoint
        .expect("an external NF shows its endpoint");
    assert!(
        endpoint.memif_socket.ends_with("/pf0-vf1/memif.sock"),
        "{endpoint:?}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&endpoint.memif_socket)
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let mut before = vf_stats(&rt, &mut c, &vf);
    for mode in ["macswap", "io"] {
        set_vf_link(&rt, &mut c, &first, true);
        let mut pmd = start_testpmd(&endpoint, mode);
        wait_until("testpmd attached", 20, || {
            state(&rt, &mut c, "pmd") == proto::NfState::Running as i32
        });
        wait_until("traffic through testpmd", 30, || {
            vf_stats(&rt, &mut c, &vf).tx_packets > before.tx_packets + 2000
        });
        // Cut the chain's input, let the hop drain, and compare.
        set_vf_link(&rt, &mut c, &first, false);
        let after = settled(&rt, &mut c, &vf);
        let (rx, tx) = pmd.port_stats(0).expect("testpmd's counters");
        println!(
            "testpmd {mode}: RX {rx}, TX {tx}; its VF: rx {}, tx {}",
            after.rx_packets - before.rx_packets,
            after.tx_packets - before.tx_packets
        );
        assert_eq!(rx, after.rx_packets - before.rx_packets, "{mode}: RX");
        assert_eq!(tx, after.tx_packets - before.tx_packets, "{mode}: TX");
        assert!(tx > 2000, "{mode}: testpmd forwarded only {tx}");
        assert_eq!(after.ring_errors, 0);
        assert_eq!(after.dma_faults, 0);
        assert!(
            after.dma_copied_bytes > before.dma_copied_bytes,
            "frames reach a memif client by copy"
        );
        // testpmd goes: the VF is scrubbed and waits for the next client.
        drop(pmd);
        wait_until("waiting again", 20, || {
            state(&rt, &mut c, "pmd") == proto::NfState::Waiting as i32
        });
        before = after;
    }
    server.stop();
}

#[test]
fn hostile_memif_clients_are_refused_or_faulted_and_touch_no_other_vf() {
    let data = TempDir::new("memif-hostile");
    let rt = runtime();
    let server = Server::start(&data.0, GEN);
    let mut c = Clients::new(server.channel(&rt));

    // The victim: an external NF with no traffic, its memory set to a pattern.
    rt.block_on(c.nf.create_nf(proto::CreateNfRequest {
        nf: Some(proto::Nf {
            name: "nfs/victim".into(),
            kind: "external".into(),
            ..Default::default()
        }),
        validate_only: false,
    }))
    .expect("external NF created");
    wait_until("the victim waits", 20, || {
        state(&rt, &mut c, "victim") == proto::NfState::Waiting as i32
    });
    let victim_nf = get_nf(&rt, &mut c, "victim");
    let victim_ep = victim_nf.endpoint.unwrap();
    let mut victim = memif_client::connect(Path::new(&victim_ep.memif_socket), &victim_ep.secret);
    victim
        .region
        .write_at(
            memif_client::BUFFERS_AT as usize,
            &vec![0x5A; (memif_client::REGION - memif_client::BUFFERS_AT) as usize],
        )
        .unwrap();
    victim.post_good_buffers(memif_client::SLOTS);
    let pattern = victim.buffers();
    wait_until("the victim attached", 20, || {
        state(&rt, &mut c, "victim") == proto::NfState::Running as i32
    });

    // The attacker: the only hop of a chain the gen wire feeds.
    let mut chain = nfhost_api::chain_file::parse_chain(include_str!("../examples/edge.toml"))
        .expect("example chain parses");
    chain.name = "chains/hostile".into();
    chain.isolation = proto::Isolation::Strict as i32;
    chain.nfs = vec![external_hop("attacker")];
    let chain = create_chain(&rt, &mut c, chain);
    let vf = chain.vfs[0].clone();
    let ep = get_nf(&rt, &mut c, "attacker").endpoint.unwrap();
    let path = Path::new(&ep.memif_socket);

    // A wrong secret.
    let (control, hello) = Control::connect(path);
    assert!(
        matches!(
            hello,
            Msg::Hello {
                max_m2s_ring: 0,
                ..
            }
        ),
        "{hello:?}"
    );
    assert_eq!(reason(control.init("not-the-secret")), "Incorrect secret");
    assert_eq!(control.recv(), None, "the connection is closed");
    assert_eq!(vf_stats(&rt, &mut c, &vf).attach_refused, 1);

    // A region that claims more than its memfd holds.
    let (control, _) = Control::connect(path);
    assert_eq!(control.init(&ep.secret), Some(Msg::Ack));
    let small = nfhost_sys::SharedMemory::create("small", 64 * 1024).unwrap();
    let fd = small.fd().try_clone_to_owned().unwrap();
    let why = reason(control.ask(
        &Msg::AddRegion {
            index: 0,
            size: 1 << 20,
        },
        Some(&fd),
    ));
    assert!(why.contains("outside its"), "{why}");
    assert_eq!(control.recv(), None);
    assert_eq!(vf_stats(&rt, &mut c, &vf).attach_refused, 2);

    // A proper client, in interrupt mode: woken by its rx eventfd.
    let mut attacker = memif_client::connect(path, &ep.secret);
    wait_until("the attacker attached", 20, || {
        state(&rt, &mut c, "attacker") == proto::NfState::Running as i32
    });
    attacker.interrupts(true);
    attacker.post_good_buffers(memif_client::SLOTS);
    assert!(
        attacker.wait_rx_irq(Duration::from_secs(10)),
        "no rx interrupt"
    );
    let got = attacker.take_received();
    assert!(
        !got.is_empty() && got.iter().all(|(_, len)| *len > 14),
        "{got:?}"
    );
    // It sends one back: counted as sent.
    let mut frame = vec![0u8; 64];
    attacker
        .region
        .read_at(Client::rx_buffer(got[0].0) as usize, &mut frame)
        .unwrap();
    let tx0 = vf_stats(&rt, &mut c, &vf).tx_packets;
    let d = attacker.tx_frame(0, &frame);
    attacker.send(&[d]);
    wait_until("the frame sent", 10, || {
        vf_stats(&rt, &mut c, &vf).tx_packets == tx0 + 1
    });

    // A second connection while it is attached.
    let (control, _) = Control::connect(path);
    assert_eq!(reason(control.init(&ep.secret)), "Already connected");
    assert_eq!(vf_stats(&rt, &mut c, &vf).attach_refused, 3);

    // Receive buffers outside its regions: a region never added, and an offset past
    // the end of region 0. Each frame meant for them is a DMA fault on this VF.
    let faults0 = vf_stats(&rt, &mut c, &vf).dma_faults;
    attacker.interrupts(false);
    attacker.take_received();
    attacker.post_buffers(8, |i| MemifDesc {
        region: if i % 2 == 0 { 7 } else { 0 },
        offset: if i % 2 == 0 {
            0
        } else {
            memif_client::REGION + 4096
        },
        length: memif_client::BUFFER,
        ..MemifDesc::default()
    });
    wait_until("receive faults counted", 20, || {
        vf_stats(&rt, &mut c, &vf).dma_faults >= faults0 + 8
    });
    // The slots come back unused.
    wait_until("the bad buffers returned", 10, || {
        attacker.take_received().iter().all(|(_, len)| *len == 0)
            && attacker.m2s.tail() == attacker.m2s.head()
    });

    // A transmit descriptor outside its regions: faulted, not sent, given back.
    let before = vf_stats(&rt, &mut c, &vf);
    attacker.send(&[MemifDesc {
        region: 0,
        offset: memif_client::REGION - 8,
        length: 64,
        ..MemifDesc::default()
    }]);
    wait_until("the transmit fault counted", 10, || {
        vf_stats(&rt, &mut c, &vf).dma_faults == before.dma_faults + 1
    });
    assert_eq!(vf_stats(&rt, &mut c, &vf).tx_packets, before.tx_packets);
    wait_until("the buffer given back", 10, || {
        attacker.s2m.tail() == attacker.tx_head
    });

    // A ring index that jumps: the queue halts, counted.
    attacker.s2m.store_head(attacker.tx_head.wrapping_add(1000));
    attacker.tx_irq.notify().unwrap();
    wait_until("the ring error counted", 10, || {
        vf_stats(&rt, &mut c, &vf).ring_errors >= 1
    });

    // Nothing of this reached the victim.
    assert_eq!(victim.buffers(), pattern, "the victim's memory changed");
    assert!(victim.take_received().is_empty());
    let victim_stats = vf_stats(&rt, &mut c, &victim_nf.vf);
    assert_eq!(victim_stats.rx_packets, 0);
    assert_eq!(victim_stats.dma_faults, 0);
    drop(victim);
    server.stop();
}
