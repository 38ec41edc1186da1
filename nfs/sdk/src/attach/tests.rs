//! Client and server over a real socketpair.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread;

use proptest::prelude::*;
use prost::Message;
use rustix::fs::MemfdFlags;
use rustix::net::SendFlags;

use super::pb::{self, Request, request};
use super::*;
use crate::FRAME_SIZE;
use nfhost_sys::attach::{
    Command, InheritedFdError, InvalidMessage, MAX_PACKET, claim_inherited_socket as claim_fd,
    read_command, reply_error, reply_hello, reply_no_peer, reply_ok, reply_peer, send_request,
};
use nfhost_sys::bar::{Bar, BarLayout, Nic, VfConfig};
use nfhost_sys::fd::{EventFd, send_with_fds};
use nfhost_sys::shm::{SharedMemory, ShmError};

const CONFIG: VfConfig = VfConfig {
    vf_index: 5,
    mac: [0x02, 0, 0, 0, 0, 5],
    mtu: 1500,
    link_up: true,
};

fn hello_reply(bar: &Bar<Nic>) -> pb::HelloReply {
    pb::HelloReply {
        vf_index: bar.vf_index().into(),
        mac: bar.mac().to_vec(),
        mtu: 1500,
        rx_ring_size: bar.layout().rx_ring_size(),
        tx_ring_size: bar.layout().tx_ring_size(),
        frame_size: FRAME_SIZE,
        ..Default::default()
    }
}

/// A server that answers every command with Ok (Hello with the BAR), sends
/// each command to the test, and hands back its doorbell at the end.
fn spawn_server(sock: OwnedFd) -> (mpsc::Receiver<Command>, thread::JoinHandle<EventFd>) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let layout = BarLayout::new(256, 128).expect("layout");
        let bar = Bar::create(layout, &CONFIG).expect("bar");
        let doorbell = EventFd::new().expect("doorbell");
        loop {
            let cmd = match read_command(sock.as_fd()) {
                Ok(cmd) => cmd,
                Err(ProtoError::Closed) => return doorbell,
                Err(e) => panic!("server: {e}"),
            };
            let id = cmd.id();
            match &cmd {
                Command::Hello { .. } => {
                    reply_hello(
                        sock.as_fd(),
                        id,
                        &hello_reply(&bar),
                        bar.fd(),
                        doorbell.as_fd(),
                        None,
                    )
                    .expect("reply hello");
                }
                _ => reply_ok(sock.as_fd(), id).expect("reply ok"),
            }
            tx.send(cmd).expect("to test");
        }
    });
    (rx, handle)
}

#[test]
fn full_exchange() {
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    let (commands, server) = spawn_server(nic_end);
    let mut client = VfClient::new(nf_end).expect("client");

    let attached = client.hello("secret-token").expect("hello");
    assert_eq!(attached.vf_index, 5);
    assert_eq!(attached.mac, CONFIG.mac);
    assert_eq!(
        (
            attached.mtu,
            attached.rx_ring_size,
            attached.tx_ring_size,
            attached.frame_size
        ),
        (1500, 256, 128, FRAME_SIZE)
    );
    assert_eq!(attached.bar.mtu(), 1500);
    let cmd = commands.recv().expect("hello");
    assert!(format!("{cmd:?}").contains("<redacted>"));
    assert!(!format!("{cmd:?}").contains("secret"));
    match cmd {
        Command::Hello {
            id,
            abi_version,
            token,
        } => {
            assert_eq!((id, abi_version, token.as_str()), (1, 1, "secret-token"));
        }
        other => panic!("expected Hello, got {other:?}"),
    }

    // A UMEM of 16 frames, the first 8 mapped.
    let umem = SharedMemory::create("umem", 16 * FRAME_SIZE as usize).expect("umem");
    let mapped = 8 * u64::from(FRAME_SIZE);
    client
        .map_dma(0x10_0000, mapped, &umem, 4096, true, false)
        .expect("map_dma");
    match commands.recv().expect("map") {
        Command::MapDma {
            id,
            iova,
            size,
            offset,
            read,
            write,
            memory,
        } => {
            assert_eq!(
                (id, iova, size, offset, read, write),
                (2, 0x10_0000, mapped, 4096, true, false)
            );
            assert_eq!(memory.len(), umem.len());
            memory.write_at(4096, b"frame from the NIC").expect("write");
            let mut back = [0u8; 18];
            umem.read_at(4096, &mut back).expect("read");
            assert_eq!(&back, b"frame from the NIC");
        }
        other => panic!("expected MapDma, got {other:?}"),
    }

    let rx_irq = EventFd::new().expect("eventfd");
    client.set_irq(0, &rx_irq).expect("set_irq");
    match commands.recv().expect("irq") {
        Command::SetIrq {
            id,
            vector,
            eventfd,
        } => {
            assert_eq!((id, vector), (3, 0));
            eventfd.notify().expect("notify");
            assert_eq!(rx_irq.try_read().expect("read"), Some(1));
        }
        other => panic!("expected SetIrq, got {other:?}"),
    }

    client.enable().expect("enable");
    assert!(matches!(commands.recv(), Ok(Command::Enable { id: 4 })));
    client.report(r#"{"flows":3}"#).expect("report");
    match commands.recv().expect("report") {
        Command::Report { id, json } => assert_eq!((id, json.as_str()), (5, r#"{"flows":3}"#)),
        other => panic!("expected Report, got {other:?}"),
    }
    client.unmap_dma(0x10_0000, mapped).expect("unmap");
    assert!(matches!(
        commands.recv(),
        Ok(Command::UnmapDma {
            id: 6,
            iova: 0x10_0000,
            size: 16384
        })
    ));
    client.reset().expect("reset");
    assert!(matches!(commands.recv(), Ok(Command::Reset { id: 7 })));

    // The doorbell the NF got is the server's.
    attached.doorbell.notify().expect("ring");
    drop(client);
    let doorbell = server.join().expect("server");
    assert_eq!(doorbell.try_read().expect("read"), Some(1));
}

#[test]
fn get_peer_gives_the_hops_rings_or_nothing() {
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    let server = thread::spawn(move || {
        let hop = Bar::create(BarLayout::new(256, 128).unwrap(), &CONFIG).expect("bar");
        let irq = EventFd::new().expect("irq");
        let cmd = read_command(nic_end.as_fd()).expect("command");
        assert!(matches!(cmd, Command::GetPeer { .. }), "{cmd:?}");
        reply_no_peer(nic_end.as_fd(), cmd.id(), 3).expect("reply");
        let cmd = read_command(nic_end.as_fd()).expect("command");
        let peer = pb::Peer {
            generation: 4,
            vf_index: 5,
            vlan: 100,
        };
        reply_peer(nic_end.as_fd(), cmd.id(), peer, hop.fd(), irq.as_fd()).expect("reply");
        // A Peer naming another VF than its BAR is refused by the client.
        let cmd = read_command(nic_end.as_fd()).expect("command");
        let peer = pb::Peer {
            generation: 5,
            vf_index: 6,
            vlan: 0,
        };
        reply_peer(nic_end.as_fd(), cmd.id(), peer, hop.fd(), irq.as_fd()).expect("reply");
        // The NIC end of the hop's rx ring sees what the client produced.
        let mut rx = hop.rx_producer().expect("rx");
        assert_eq!(rx.free().expect("free"), 255);
        (irq, hop)
    });
    let mut client = VfClient::new(nf_end).expect("client");
    assert!(matches!(
        client.get_peer(),
        Ok(PeerAnswer::None { generation: 3 })
    ));
    let Ok(PeerAnswer::Peer(peer)) = client.get_peer() else {
        panic!("expected a peer");
    };
    assert_eq!(
        (peer.generation, peer.vlan, peer.bar.vf_index()),
        (4, 100, 5)
    );
    let mut rx = peer.bar.rx_producer().expect("the hop's rx ring");
    rx.produce(&nfhost_sys::ring::Desc::default())
        .expect("produce");
    assert!(matches!(
        client.get_peer(),
        Err(ClientError::BarMismatch {
            field: "vf_index",
            ..
        })
    ));
    drop(client);
    let (irq, _hop) = server.join().expect("server");
    peer.irq.notify().expect("raise the hop's rx vector");
    assert_eq!(irq.try_read().expect("raised"), Some(1));
}

#[test]
fn refused_request() {
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    let server = thread::spawn(move || {
        let cmd = read_command(nic_end.as_fd()).expect("command");
        assert!(matches!(cmd, Command::MapDma { iova: 0x1001, .. }));
        reply_error(
            nic_end.as_fd(),
            cmd.id(),
            Code::InvalidArgument,
            "iova 0x1001 is not 4 KiB aligned",
        )
        .expect("reply");
        // A reply of the wrong kind, and one for another id.
        let cmd = read_command(nic_end.as_fd()).expect("command");
        reply_ok(nic_end.as_fd(), cmd.id()).expect("reply");
        let cmd = read_command(nic_end.as_fd()).expect("command");
        reply_ok(nic_end.as_fd(), cmd.id() + 10).expect("reply");
    });
    let mut client = VfClient::new(nf_end).expect("client");
    let umem = SharedMemory::create("umem", 4096).expect("umem");
    let err = client
        .map_dma(0x1001, 4096, &umem, 0, true, true)
        .expect_err("refused");
    match &err {
        ClientError::Refused { code, message } => {
            assert_eq!(*code, Code::InvalidArgument);
            assert_eq!(message, "iova 0x1001 is not 4 KiB aligned");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(err.to_string().contains("not 4 KiB aligned"));
    assert!(matches!(
        client.hello("t"),
        Err(ClientError::UnexpectedReply {
            request: "Hello",
            reply: "Ok"
        })
    ));
    assert!(matches!(
        client.enable(),
        Err(ClientError::IdMismatch { sent: 3, got: 13 })
    ));
    server.join().expect("server");
}

fn encode(id: u64, body: Option<request::Body>) -> Vec<u8> {
    Request { id, body }.encode_length_delimited_to_vec()
}

fn bad_request(result: Result<Command, ProtoError>) -> (u64, InvalidMessage) {
    match result {
        Err(ProtoError::BadRequest { id, reason }) => (id, reason),
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

/// A stream end whose peer goes out with the fds of a rejected request: it
/// reads EOF once the server has closed its copy.
fn witness() -> (UnixStream, UnixStream) {
    let (ours, sent) = UnixStream::pair().expect("pair");
    ours.set_nonblocking(true).expect("nonblocking");
    (ours, sent)
}

fn assert_closed(witness: &mut UnixStream) {
    let mut buf = [0u8; 1];
    assert_eq!(witness.read(&mut buf).expect("EOF, not WouldBlock"), 0);
}

#[test]
fn garbage_never_panics_and_stream_recovers() {
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    rustix::io::ioctl_fionbio(&nic_end, true).expect("nonblocking");
    let nic = nic_end.as_fd();
    let nf = nf_end.as_fd();

    assert!(matches!(read_command(nic), Err(ProtoError::WouldBlock)));

    // Not protobuf at all.
    send_with_fds(nf, &[0xff; 40], &[]).expect("send");
    assert!(matches!(
        read_command(nic),
        Err(ProtoError::BadLength { len: 40, .. })
    ));
    send_with_fds(nf, &[3, 0xff, 0xff, 0xff], &[]).expect("send");
    assert!(matches!(
        read_command(nic),
        Err(ProtoError::Decode {
            kind: "Request",
            ..
        })
    ));
    // A prefix that does not match the packet.
    let mut long = encode(1, Some(request::Body::Enable(pb::Enable {})));
    long.push(0);
    send_with_fds(nf, &long, &[]).expect("send");
    assert!(matches!(
        read_command(nic),
        Err(ProtoError::LengthMismatch { .. })
    ));

    // A zero-length packet, while the peer is alive.
    rustix::net::send(nf, &[], SendFlags::NOSIGNAL).expect("send empty");
    assert!(matches!(read_command(nic), Err(ProtoError::EmptyPacket)));

    // A valid request with an extra fd: rejected with its id, fd closed.
    let (mut seen, extra) = witness();
    send_with_fds(
        nf,
        &encode(7, Some(request::Body::Enable(pb::Enable {}))),
        &[extra.as_fd()],
    )
    .expect("send");
    drop(extra);
    let (id, reason) = bad_request(read_command(nic));
    assert_eq!(id, 7);
    assert!(matches!(
        reason,
        InvalidMessage::FdCount {
            kind: "Enable",
            expected: 0,
            got: 1
        }
    ));
    assert_closed(&mut seen);

    // MapDma without its memfd.
    let map = || {
        Some(request::Body::MapDma(pb::MapDma {
            iova: 0,
            size: 4096,
            offset: 0,
            read: true,
            write: true,
        }))
    };
    send_with_fds(nf, &encode(8, map()), &[]).expect("send");
    let (id, reason) = bad_request(read_command(nic));
    assert_eq!(id, 8);
    assert!(matches!(
        reason,
        InvalidMessage::FdCount {
            kind: "MapDma",
            expected: 1,
            got: 0
        }
    ));

    // MapDma with an unsealed memfd, and with a socket.
    let unsealed = rustix::fs::memfd_create("u", MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&unsealed, 4096).expect("size");
    send_with_fds(nf, &encode(9, map()), &[unsealed.as_fd()]).expect("send");
    let (_, reason) = bad_request(read_command(nic));
    assert!(matches!(
        reason,
        InvalidMessage::Memory(ShmError::NotSealed)
    ));
    let (mut seen, extra) = witness();
    send_with_fds(nf, &encode(10, map()), &[extra.as_fd()]).expect("send");
    drop(extra);
    let (_, reason) = bad_request(read_command(nic));
    assert!(matches!(
        reason,
        InvalidMessage::Memory(ShmError::GetSeals(_))
    ));
    assert_closed(&mut seen);

    // SetIrq with a vector over 16 bits, and with a memfd for an eventfd.
    let efd = EventFd::new().expect("eventfd");
    let irq = |vector| Some(request::Body::SetIrq(pb::SetIrq { vector }));
    send_with_fds(nf, &encode(11, irq(70_000)), &[efd.as_fd()]).expect("send");
    let (_, reason) = bad_request(read_command(nic));
    assert!(matches!(reason, InvalidMessage::VectorOutOfRange(70_000)));
    let umem = SharedMemory::create("umem", 4096).expect("umem");
    send_with_fds(nf, &encode(12, irq(1)), &[umem.fd()]).expect("send");
    let (_, reason) = bad_request(read_command(nic));
    assert!(
        matches!(&reason, InvalidMessage::NotAnEventFd(t) if t.starts_with("/memfd:umem")),
        "{reason:?}"
    );

    // No body.
    send_with_fds(nf, &encode(13, None), &[]).expect("send");
    let (id, reason) = bad_request(read_command(nic));
    assert_eq!(id, 13);
    assert!(matches!(reason, InvalidMessage::MissingBody));

    // More fds than a receive makes room for: the packet is dropped whole.
    let many: Vec<EventFd> = (0..12).map(|_| EventFd::new().expect("efd")).collect();
    let many: Vec<_> = many.iter().map(AsFd::as_fd).collect();
    send_with_fds(nf, &encode(14, irq(0)), &many).expect("send");
    assert!(matches!(read_command(nic), Err(ProtoError::Transport(_))));

    // Oversized packet: dropped whole.
    send_with_fds(nf, &vec![0u8; MAX_PACKET + 1], &[]).expect("send");
    assert!(matches!(read_command(nic), Err(ProtoError::Transport(_))));

    // After all that, the next good request reads fine.
    send_with_fds(nf, &encode(15, irq(1)), &[efd.as_fd()]).expect("send");
    match read_command(nic) {
        Ok(Command::SetIrq {
            id: 15,
            vector: 1,
            eventfd,
        }) => {
            eventfd.notify().expect("notify");
            assert_eq!(efd.try_read().expect("read"), Some(1));
        }
        other => panic!("expected SetIrq, got {other:?}"),
    }
    assert!(matches!(read_command(nic), Err(ProtoError::WouldBlock)));

    // An empty packet followed by a close reads as Closed.
    rustix::net::send(nf, &[], SendFlags::NOSIGNAL).expect("send empty");
    drop(nf_end);
    assert!(matches!(read_command(nic), Err(ProtoError::Closed)));
    assert!(matches!(read_command(nic), Err(ProtoError::Closed)));
}

#[test]
fn sender_checks_shape() {
    let (a, _b) = socketpair().expect("socketpair");
    let efd = EventFd::new().expect("eventfd");
    let msg = Request {
        id: 1,
        body: Some(request::Body::Reset(pb::Reset {})),
    };
    assert!(matches!(
        send_request(a.as_fd(), &msg, &[efd.as_fd()]),
        Err(ProtoError::BadRequest {
            id: 1,
            reason: InvalidMessage::FdCount { .. }
        })
    ));
    let reply = pb::HelloReply {
        mac: vec![1, 2, 3],
        ..Default::default()
    };
    assert!(matches!(
        reply_hello(a.as_fd(), 2, &reply, efd.as_fd(), efd.as_fd(), None),
        Err(ProtoError::BadResponse {
            id: 2,
            reason: InvalidMessage::MacLength(3)
        })
    ));
    assert!(matches!(
        reply_error(a.as_fd(), 3, Code::Internal, &"x".repeat(MAX_PACKET)),
        Err(ProtoError::TooLarge {
            kind: "Response",
            ..
        })
    ));
}

#[test]
fn peer_close_is_closed() {
    // Server side: the NF goes away.
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    drop(nf_end);
    assert!(matches!(
        read_command(nic_end.as_fd()),
        Err(ProtoError::Closed)
    ));
    assert!(matches!(
        reply_ok(nic_end.as_fd(), 1),
        Err(ProtoError::Closed)
    ));

    // Client side: the engine goes away before, and while, answering.
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    let mut client = VfClient::new(nf_end).expect("client");
    let server = thread::spawn(move || {
        let cmd = read_command(nic_end.as_fd()).expect("command");
        assert!(matches!(cmd, Command::Enable { id: 1 }));
        drop(nic_end);
    });
    assert!(matches!(client.enable(), Err(ClientError::Closed)));
    server.join().expect("server");
    assert!(matches!(client.reset(), Err(ClientError::Closed)));
}

#[test]
fn client_rejects_bad_hello_replies() {
    let (nic_end, nf_end) = socketpair().expect("socketpair");
    let server = thread::spawn(move || {
        let bar = Bar::create(BarLayout::new(64, 64).expect("layout"), &CONFIG).expect("bar");
        let doorbell = EventFd::new().expect("doorbell");
        // A reply whose ring size disagrees with the BAR.
        let cmd = read_command(nic_end.as_fd()).expect("hello");
        let mut reply = hello_reply(&bar);
        reply.rx_ring_size = 128;
        reply_hello(
            nic_end.as_fd(),
            cmd.id(),
            &reply,
            bar.fd(),
            doorbell.as_fd(),
            None,
        )
        .expect("reply");
        // The doorbell where the BAR should be.
        let cmd = read_command(nic_end.as_fd()).expect("hello");
        let reply = hello_reply(&bar);
        reply_hello(
            nic_end.as_fd(),
            cmd.id(),
            &reply,
            doorbell.as_fd(),
            bar.fd(),
            None,
        )
        .expect("reply");
    });
    let mut client = VfClient::new(nf_end).expect("client");
    assert!(matches!(
        client.hello("t"),
        Err(ClientError::BarMismatch {
            field: "rx_ring_size",
            ..
        })
    ));
    assert!(matches!(
        client.hello("t"),
        Err(ClientError::BarMemory(ShmError::GetSeals(_)))
    ));
    server.join().expect("server");
}

#[test]
fn client_wants_seqpacket() {
    let (a, _b) = UnixStream::pair().expect("pair");
    assert!(matches!(
        VfClient::new(a.into()),
        Err(ClientError::SocketType(rustix::net::SocketType::STREAM))
    ));
    let umem = SharedMemory::create("x", 4096).expect("umem");
    let fd = umem.fd().try_clone_to_owned().expect("dup");
    assert!(matches!(
        VfClient::new(fd),
        Err(ClientError::SocketSetup(_))
    ));
}

#[test]
fn claim_inherited_fd() {
    let taken = AtomicBool::new(false);
    assert!(matches!(
        claim_fd("seven", &taken),
        Err(InheritedFdError::Invalid { .. })
    ));
    assert!(matches!(
        claim_fd("-1", &taken),
        Err(InheritedFdError::NotOpen { fd: -1, .. })
    ));
    assert!(matches!(
        claim_fd("1000000", &taken),
        Err(InheritedFdError::NotOpen { .. })
    ));
    let umem = SharedMemory::create("x", 4096).expect("umem");
    assert!(matches!(
        claim_fd(&umem.fd().as_raw_fd().to_string(), &taken),
        Err(InheritedFdError::NotSocket { .. })
    ));

    let (nic_end, nf_end) = socketpair().expect("socketpair");
    let raw = nf_end.into_raw_fd().to_string();
    let fd = claim_fd(&raw, &taken).expect("claim");
    assert!(matches!(
        claim_fd(&raw, &taken),
        Err(InheritedFdError::Taken(_))
    ));
    let mut client = VfClient::new(fd).expect("client");
    let server = thread::spawn(move || {
        let cmd = read_command(nic_end.as_fd()).expect("command");
        reply_ok(nic_end.as_fd(), cmd.id()).expect("reply");
    });
    client.enable().expect("enable");
    server.join().expect("server");
}

#[test]
fn from_env_without_variable() {
    // The test harness never sets NFHOST_VF_FD.
    if std::env::var_os(ENV_VF_FD).is_none() {
        assert!(matches!(
            VfClient::from_env(),
            Err(ClientError::EnvFdMissing(_))
        ));
    }
}

proptest! {
    /// Any bytes, with or without a matching length prefix and a stray fd,
    /// give a command or an error, never a panic, and leave the socket
    /// ready for the next packet.
    #[test]
    fn prop_any_packet_is_handled(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        framed in any::<bool>(),
        with_fd in any::<bool>(),
    ) {
        let (nic_end, nf_end) = socketpair().expect("socketpair");
        let mut packet = bytes;
        if framed {
            let mut framed_packet = Vec::new();
            prost::encode_length_delimiter(packet.len(), &mut framed_packet).expect("prefix");
            framed_packet.extend_from_slice(&packet);
            packet = framed_packet;
        }
        let efd = EventFd::new().expect("eventfd");
        let fds = if with_fd { vec![efd.as_fd()] } else { vec![] };
        if packet.is_empty() {
            rustix::net::send(&nf_end, &[], SendFlags::NOSIGNAL).expect("send");
        } else {
            send_with_fds(nf_end.as_fd(), &packet, &fds).expect("send");
        }
        let _ = read_command(nic_end.as_fd());
        send_with_fds(
            nf_end.as_fd(),
            &encode(42, Some(request::Body::Reset(pb::Reset {}))),
            &[],
        )
        .expect("send");
        let next = read_command(nic_end.as_fd());
        prop_assert!(matches!(next, Ok(Command::Reset { id: 42 })), "{:?}", next);
    }
}
