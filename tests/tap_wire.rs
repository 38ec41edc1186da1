//! The `tap:` wire against the real service: nfhost creates the TAP device, and the
//! test stands on the kernel's side of it with an `AF_PACKET` socket.
//!
//! Checked: the TAP's link state is the PF's (down until `ip link set up`, down
//! again after `ip link set down`) and VFs in link state `auto` follow it; a trunk
//! keeps 802.1Q tags on the wire (a frame in on VLAN 100 comes out of the chain
//! re-tagged 200 with every payload byte intact, at the full MTU);
//! a frame above the wire's MTU is dropped and counted as `oversize`.
//!
//! Needs root (CAP_NET_ADMIN for the TAP), as CI runs it.

#[path = "common/server.rs"]
mod server;

use std::process::Command;
use std::time::{Duration, Instant};

use nfhost_api::proto;
use nfhost_sys::wire::{Link, Received, WireRing};
use server::{Clients, Server, TempDir, runtime, wait_until};

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {args:?} failed");
}

fn frame(vid: u16, pcp: u8, payload: usize) -> Vec<u8> {
    let builder =
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x0c], [2, 0, 0, 0, 0, 0x5e])
            .vlan(etherparse::VlanHeader::Single(
                etherparse::SingleVlanHeader {
                    pcp: etherparse::VlanPcp::try_new(pcp).unwrap(),
                    drop_eligible_indicator: false,
                    vlan_id: etherparse::VlanId::try_new(vid).unwrap(),
                    ether_type: etherparse::EtherType::IPV4,
                },
            ))
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 5000);
    let body: Vec<u8> = (0..payload).map(|i| i as u8).collect();
    let mut out = Vec::with_capacity(builder.size(body.len()));
    builder.write(&mut out, &body).unwrap();
    out
}

fn send(ring: &mut WireRing, bytes: &[u8]) {
    ring.send_with(0, bytes.len(), |b| {
        b.copy_from_slice(bytes);
        true
    })
    .expect("send");
    ring.flush().expect("flush");
}

/// Frames the kernel side hears within `wait`.
fn hear(ring: &mut WireRing, wait: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let end = Instant::now() + wait;
    while Instant::now() < end {
        ring.receive(64, |_, r| {
            if let Received::Frame(f) = r {
                got.push(f.bytes().to_vec());
            }
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    got
}

#[test]
fn a_tap_trunk_carries_tags_at_the_mtu_and_its_link_state_is_the_pfs() {
    let tap = format!("nfht{}", std::process::id() % 100_000);
    let data = TempDir::new("tap-wire");
    let wire = format!("tap:{tap}");
    let server = Server::start(&data.0, &["--vfs", "4", "--wire", &wire, "--mtu", "1500"]);
    let rt = runtime();
    let mut c = Clients::new(server.channel(&rt));
    let pf = rt
        .block_on(c.pf.get_pf(proto::GetPfRequest {
            name: "pfs/0".into(),
        }))
        .expect("GetPf")
        .into_inner();
    assert_eq!((pf.wire.as_str(), pf.wire_mtu), (wire.as_str(), 1500));

    let mut pf_link = || {
        rt.block_on(c.pf.get_pf(proto::GetPfRequest {
            name: "pfs/0".into(),
        }))
        .expect("GetPf")
        .into_inner()
        .link_up
    };

    // A TAP nfhost created is down until someone brings it up.
    wait_until("the PF link to read down", 5, || !pf_link());
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1");
    ip(&["link", "set", &tap, "up", "mtu", "1600"]);
    wait_until("the PF link to follow the TAP up", 5, &mut pf_link);

    let chain = r#"
name = "trunk"
[classifier]
vlan = 100
[egress]
vlan = 200
[[nf]]
name = "pass"
kind = "l2fwd"
[nf.config]
mac_rewrite = "none"
"#;
    let path = data.0.join("trunk.toml");
    std::fs::write(&path, chain).unwrap();
    let out = Command::new(server::nfctl_bin())
        .args(["--server", &server.url(), "chain", "apply"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut kernel_side = WireRing::new(
        vec![Link::packet(&tap).expect("AF_PACKET on the TAP")],
        2048,
    )
    .unwrap();
    // A full-MTU frame: 1500 bytes of IP, 1518 on the wire with its tag.
    let full = frame(100, 0, 1500 - 28);
    assert_eq!(full.len(), 1518);
    let mut sent_ok = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sent_ok && Instant::now() < deadline {
        send(&mut kernel_side, &full);
        let heard = hear(&mut kernel_side, Duration::from_millis(300));
        let mut want = full.clone();
        // Re-tagged VLAN 200.
        want[14..16].copy_from_slice(&200u16.to_be_bytes());
        sent_ok = heard.contains(&want);
    }
    assert!(sent_ok, "the frame did not come back re-tagged 200, intact");

    // One byte of IP more than the MTU: dropped at the wire, counted.
    let stats = |c: &mut Clients| {
        rt.block_on(
            c.telemetry
                .get_stats(proto::GetStatsRequest { active_only: true }),
        )
        .expect("GetStats")
        .into_inner()
        .wire
        .expect("wire stats")
    };
    let before = stats(&mut c).drops.get("oversize").copied().unwrap_or(0);
    send(&mut kernel_side, &frame(100, 0, 1500 - 28 + 1));
    wait_until("the oversize frame to be counted", 5, || {
        stats(&mut c).drops.get("oversize").copied().unwrap_or(0) == before + 1
    });

    // An auto VF follows the PF link down and up again.
    let mut vf_link = || {
        rt.block_on(c.vf.get_vf(proto::GetVfRequest {
            name: "pfs/0/vfs/3".into(),
        }))
        .expect("GetVf")
        .into_inner()
        .link_up
    };
    assert!(vf_link());
    ip(&["link", "set", &tap, "down"]);
    wait_until("the PF and an auto VF to go down", 5, || !vf_link());
    ip(&["link", "set", &tap, "up"]);
    wait_until("the VF to come back up", 5, &mut vf_link);
    drop(kernel_side);
    server.stop();
    // nfhost created the TAP; it goes with nfhost.
    let left = Command::new("ip")
        .args(["link", "show", &tap])
        .output()
        .unwrap();
    assert!(!left.status.success(), "TAP {tap} outlived nfhost");
}
