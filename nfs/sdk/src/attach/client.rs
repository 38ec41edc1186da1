//! The NF's end of the attach protocol: a blocking client that sends one
//! request at a time and waits for its answer.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicBool;

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::net::SocketType;

use nfhost_sys::attach::pb::{self, Request, request, response};
use nfhost_sys::attach::{
    ENV_VF_FD, InheritedFdError, InvalidMessage, ProtoError, claim_inherited_socket, recv_response,
    response_kind, send_request,
};
use nfhost_sys::bar::{Bar, BarError, Hop, Nf};
use nfhost_sys::fd::{EventFd, FdError};
use nfhost_sys::shm::{SharedMemory, ShmError};
use vf_abi::ABI_VERSION;

/// Set once [`VfClient::from_env`] has taken ownership of the inherited fd,
/// so that a second call cannot make two owners of one fd.
static ENV_FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// Errors of the NF's attach client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The NIC engine closed the socket (it is shutting down, or it dropped
    /// this NF for a protocol violation).
    #[error("the NIC engine closed the attach socket")]
    Closed,
    /// The NIC engine refused the request. Codes this SDK does not know read
    /// as [`Code::Unspecified`](pb::error::Code::Unspecified).
    #[error("the NIC engine refused the request ({code:?}): {message}")]
    Refused {
        /// Class of failure.
        code: pb::error::Code,
        /// The engine's explanation.
        message: String,
    },
    /// Sending, receiving or decoding a message failed.
    #[error("attach protocol failure")]
    Protocol(#[source] ProtoError),
    /// The answer is for another request: the engine is not following the
    /// one-answer-per-request protocol.
    #[error("sent request {sent} but the answer is for request {got}")]
    IdMismatch {
        /// Id of the request sent.
        sent: u64,
        /// Id in the answer.
        got: u64,
    },
    /// The answer is of the wrong kind for the request.
    #[error("{request} was answered with {reply}")]
    UnexpectedReply {
        /// Request kind.
        request: &'static str,
        /// Answer kind.
        reply: &'static str,
    },
    /// The BAR memfd from `HelloReply` cannot be mapped.
    #[error("the BAR memfd from the NIC engine cannot be mapped")]
    BarMemory(#[source] ShmError),
    /// The BAR from `HelloReply` is not a valid VF BAR.
    #[error("the BAR from the NIC engine is invalid")]
    Bar(#[source] BarError),
    /// `HelloReply` and the BAR registers disagree.
    #[error("HelloReply says {field} is {reply} but the BAR says {bar}")]
    BarMismatch {
        /// Which value.
        field: &'static str,
        /// Value in `HelloReply`.
        reply: String,
        /// Value in the BAR registers.
        bar: String,
    },
    /// The config memfd from `Config` is not sealed, too large, unreadable or
    /// not UTF-8.
    #[error("the config from the NIC engine is unusable: {0}")]
    Config(String),
    /// The doorbell fd from `HelloReply` cannot be used as an eventfd.
    #[error("the doorbell fd from the NIC engine is unusable")]
    Doorbell(#[source] FdError),
    /// The attach socket is not `SOCK_SEQPACKET`.
    #[error("the attach socket is {0:?}, expected SOCK_SEQPACKET")]
    SocketType(SocketType),
    /// Inspecting or configuring the attach socket failed (it may not be a
    /// socket at all).
    #[error("inspecting or configuring the attach socket failed (is it a socket?)")]
    SocketSetup(#[source] Errno),
    /// The endpoint socket could not be reached (no such file, no permission,
    /// nfhost not listening).
    #[error("connecting to the VF endpoint {} failed", path.display())]
    Connect {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        errno: Errno,
    },
    /// `NFHOST_VF_FD` is not set: the process was not started by nfhost.
    #[error("NFHOST_VF_FD is not set: start this NF through nfhost, or use VfClient::new")]
    EnvFdMissing(#[source] std::env::VarError),
    /// The socket named by `NFHOST_VF_FD` could not be claimed.
    #[error(transparent)]
    EnvFd(#[from] InheritedFdError),
}

impl From<ProtoError> for ClientError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Closed => Self::Closed,
            other => Self::Protocol(other),
        }
    }
}

/// What `Hello` gives an NF: its VF.
#[derive(Debug)]
pub struct Attached {
    /// VF index on its PF.
    pub vf_index: u16,
    /// MAC address of the VF.
    pub mac: [u8; 6],
    /// MTU at attach time (the BAR's MTU register has the live value).
    pub mtu: u32,
    /// Slots in the fill and rx rings.
    pub rx_ring_size: u32,
    /// Slots in the tx and completion rings.
    pub tx_ring_size: u32,
    /// Size of one UMEM frame in bytes.
    pub frame_size: u32,
    /// The VF's registers and rings, opened and checked.
    pub bar: Bar<Nf>,
    /// Written by the NF when the tx ring asks for a wakeup.
    pub doorbell: EventFd,
    /// A shared chain's UMEM and its IOVA, when the host provides the memory.
    pub umem: Option<(SharedMemory, u64)>,
}

/// The NF's attach client over a blocking `SOCK_SEQPACKET` socket. Each
/// method sends one request and waits for its answer; ids start at 1 and
/// increase.
#[derive(Debug)]
pub struct VfClient {
    sock: OwnedFd,
    next_id: u64,
}

impl VfClient {
    /// Wraps a connected `SOCK_SEQPACKET` socket, switching it to blocking
    /// mode.
    pub fn new(sock: OwnedFd) -> Result<Self, ClientError> {
        let kind = rustix::net::sockopt::socket_type(&sock).map_err(ClientError::SocketSetup)?;
        if kind != SocketType::SEQPACKET {
            return Err(ClientError::SocketType(kind));
        }
        let flags = rustix::fs::fcntl_getfl(&sock).map_err(ClientError::SocketSetup)?;
        if flags.contains(OFlags::NONBLOCK) {
            rustix::fs::fcntl_setfl(&sock, flags - OFlags::NONBLOCK)
                .map_err(ClientError::SocketSetup)?;
        }
        Ok(Self { sock, next_id: 1 })
    }

    /// Takes the attach socket a child NF process inherited, whose number is
    /// in [`ENV_VF_FD`] (`NFHOST_VF_FD`). Succeeds at most once per process.
    /// Needs `/proc` to check the fd before taking ownership of it.
    pub fn from_env() -> Result<Self, ClientError> {
        let value = std::env::var(ENV_VF_FD).map_err(ClientError::EnvFdMissing)?;
        Self::new(claim_inherited_socket(&value, &ENV_FD_TAKEN)?)
    }

    /// Connects to an `external` NF's endpoint: the VF's attach socket (a
    /// `SOCK_SEQPACKET` Unix socket, `endpoint.socket` of `nfctl -o json nf get`).
    /// Then [`VfClient::hello`] with the endpoint's secret.
    pub fn connect(path: &std::path::Path) -> Result<Self, ClientError> {
        let sock = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(ClientError::SocketSetup)?;
        let addr = rustix::net::SocketAddrUnix::new(path).map_err(ClientError::SocketSetup)?;
        rustix::net::connect(&sock, &addr).map_err(|errno| ClientError::Connect {
            path: path.to_owned(),
            errno,
        })?;
        Self::new(sock)
    }

    /// The socket, for polling.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Introduces the NF with its attach `token` and receives its VF: the
    /// BAR (opened and checked against the reply) and the doorbell.
    pub fn hello(&mut self, token: &str) -> Result<Attached, ClientError> {
        let body = request::Body::Hello(pb::Hello {
            abi_version: ABI_VERSION,
            token: token.to_owned(),
        });
        let (id, reply, fds) = self.call(body, &[])?;
        let response::Body::Hello(reply) = reply else {
            return Err(unexpected("Hello", &reply));
        };
        let got = fds.len();
        let mut fds = fds.into_iter();
        let shared = reply.umem_size > 0;
        let (Some(bar_fd), Some(doorbell_fd), umem_fd, None) = (
            fds.next(),
            fds.next(),
            fds.next().filter(|_| shared),
            fds.next(),
        ) else {
            // recv_response has checked this; kept so that no reply can panic.
            return Err(ClientError::Protocol(ProtoError::BadResponse {
                id,
                reason: InvalidMessage::FdCount {
                    kind: "HelloReply",
                    expected: if shared { 3 } else { 2 },
                    got,
                },
            }));
        };
        let Ok(mac) = <[u8; 6]>::try_from(reply.mac.as_slice()) else {
            return Err(ClientError::Protocol(ProtoError::BadResponse {
                id,
                reason: InvalidMessage::MacLength(reply.mac.len()),
            }));
        };
        let shm = SharedMemory::from_fd(bar_fd).map_err(ClientError::BarMemory)?;
        let bar = Bar::<Nf>::open(shm).map_err(ClientError::Bar)?;
        let doorbell = EventFd::from_owned(doorbell_fd).map_err(ClientError::Doorbell)?;
        let umem = match umem_fd {
            Some(fd) => {
                let memory = SharedMemory::from_fd(fd).map_err(ClientError::BarMemory)?;
                if (memory.len() as u64) < reply.umem_size {
                    return Err(ClientError::BarMismatch {
                        field: "umem_size",
                        reply: reply.umem_size.to_string(),
                        bar: memory.len().to_string(),
                    });
                }
                Some((memory, reply.umem_iova))
            }
            None => None,
        };
        let layout = bar.layout();
        let checks = [
            (
                "vf_index",
                reply.vf_index.to_string(),
                bar.vf_index().to_string(),
            ),
            ("mac", format!("{mac:02x?}"), format!("{:02x?}", bar.mac())),
            (
                "rx_ring_size",
                reply.rx_ring_size.to_string(),
                layout.rx_ring_size().to_string(),
            ),
            (
                "tx_ring_size",
                reply.tx_ring_size.to_string(),
                layout.tx_ring_size().to_string(),
            ),
        ];
        for (field, reply, bar) in checks {
            if reply != bar {
                return Err(ClientError::BarMismatch { field, reply, bar });
            }
        }
        Ok(Attached {
            vf_index: bar.vf_index(),
            mac,
            mtu: reply.mtu,
            rx_ring_size: reply.rx_ring_size,
            tx_ring_size: reply.tx_ring_size,
            frame_size: reply.frame_size,
            bar,
            doorbell,
            umem,
        })
    }

    /// Asks the NIC to map `size` bytes of `memory`, starting `offset` bytes
    /// in, at `iova` in the VF's DMA domain, readable and/or writable by the
    /// NIC.
    pub fn map_dma(
        &mut self,
        iova: u64,
        size: u64,
        memory: &SharedMemory,
        offset: u64,
        read: bool,
        write: bool,
    ) -> Result<(), ClientError> {
        let body = request::Body::MapDma(pb::MapDma {
            iova,
            size,
            offset,
            read,
            write,
        });
        self.call_ok(body, &[memory.fd()])
    }

    /// Asks the NIC to remove the mapping at `iova`; on success the NIC no
    /// longer touches it.
    pub fn unmap_dma(&mut self, iova: u64, size: u64) -> Result<(), ClientError> {
        self.call_ok(request::Body::UnmapDma(pb::UnmapDma { iova, size }), &[])
    }

    /// Binds MSI-X `vector` of the VF to `eventfd` (0 = rx, 1 = tx
    /// completion).
    pub fn set_irq(&mut self, vector: u16, eventfd: &EventFd) -> Result<(), ClientError> {
        let body = request::Body::SetIrq(pb::SetIrq {
            vector: vector.into(),
        });
        self.call_ok(body, &[eventfd.as_fd()])
    }

    /// Bus-master enable: tells the NIC the rings are ready.
    pub fn enable(&mut self) -> Result<(), ClientError> {
        self.call_ok(request::Body::Enable(pb::Enable {}), &[])
    }

    /// Function-level reset: rings emptied, frames returned, mappings and
    /// vectors kept.
    pub fn reset(&mut self) -> Result<(), ClientError> {
        self.call_ok(request::Body::Reset(pb::Reset {}), &[])
    }

    /// Publishes NF-specific state (a JSON document) for the host to show.
    pub fn report(&mut self, json: &str) -> Result<(), ClientError> {
        let body = request::Body::Report(pb::Report {
            json: json.to_owned(),
        });
        self.call_ok(body, &[])
    }

    /// Fetches the newest message of the host's mailbox: its generation and the
    /// configuration it carries.
    pub fn fetch_config(&mut self) -> Result<(u32, String), ClientError> {
        let body = request::Body::FetchConfig(pb::FetchConfig {});
        self.config("FetchConfig", body)
    }

    /// The configuration this NF instance runs with (JSON; empty for the
    /// kind's defaults): what an NF asks for right after [`VfClient::hello`],
    /// before it builds itself. nfhost never puts a config in argv or the
    /// environment.
    pub fn get_config(&mut self) -> Result<String, ClientError> {
        let body = request::Body::GetConfig(pb::GetConfig {});
        self.config("GetConfig", body).map(|(_, config)| config)
    }

    /// A `Config` answer: its generation and the text of its sealed memfd.
    fn config(
        &mut self,
        kind: &'static str,
        body: request::Body,
    ) -> Result<(u32, String), ClientError> {
        let (config, fds) = match self.call(body, &[])? {
            (_, response::Body::Config(c), fds) => (c, fds),
            (_, other, _) => return Err(unexpected(kind, &other)),
        };
        let [fd] = <[OwnedFd; 1]>::try_from(fds)
            .map_err(|fds| ClientError::Config(format!("{} fds came with it, not 1", fds.len())))?;
        let limit = vf_abi::attach::MAX_CONFIG as u64;
        let bytes = nfhost_sys::sealed::read(&fd, config.size, limit)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ClientError::Config("the config is not UTF-8".into()))?;
        Ok((config.generation, text))
    }

    /// Asks which hop this NF feeds directly (ARCHITECTURE.md §4). Sent between
    /// batches, holding no frame: the engine may hold the answer while it settles
    /// the chain's frames.
    pub fn get_peer(&mut self) -> Result<PeerAnswer, ClientError> {
        let body = request::Body::GetPeer(pb::GetPeer {});
        match self.call(body, &[])? {
            (_, response::Body::NoPeer(p), _) => Ok(PeerAnswer::None {
                generation: p.generation,
            }),
            (id, response::Body::Peer(p), fds) => {
                let got = fds.len();
                let Ok([bar_fd, irq_fd]) = <[OwnedFd; 2]>::try_from(fds) else {
                    // recv_response has checked this; kept so that no reply can panic.
                    return Err(ClientError::Protocol(ProtoError::BadResponse {
                        id,
                        reason: InvalidMessage::FdCount {
                            kind: "Peer",
                            expected: 2,
                            got,
                        },
                    }));
                };
                let shm = SharedMemory::from_fd(bar_fd).map_err(ClientError::BarMemory)?;
                let bar = Bar::<Hop>::open(shm).map_err(ClientError::Bar)?;
                if u32::from(bar.vf_index()) != p.vf_index {
                    return Err(ClientError::BarMismatch {
                        field: "vf_index",
                        reply: p.vf_index.to_string(),
                        bar: bar.vf_index().to_string(),
                    });
                }
                let irq = EventFd::from_owned(irq_fd).map_err(ClientError::Doorbell)?;
                Ok(PeerAnswer::Peer(Peer {
                    generation: p.generation,
                    vlan: u16::try_from(p.vlan).unwrap_or(0),
                    bar,
                    irq,
                }))
            }
            (_, other, _) => Err(unexpected("GetPeer", &other)),
        }
    }

    /// Tells the host whether the configuration of `generation` was applied
    /// (`error` empty) or not (why).
    pub fn config_applied(&mut self, generation: u32, error: &str) -> Result<(), ClientError> {
        let body = request::Body::ConfigApplied(pb::ConfigApplied {
            generation,
            error: error.to_owned(),
        });
        self.call_ok(body, &[])
    }

    fn call_ok(&mut self, body: request::Body, fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        let kind = nfhost_sys::attach::request_kind(&body).0;
        match self.call(body, fds)? {
            (_, response::Body::Ok(pb::Ok {}), _) => Ok(()),
            (_, other, _) => Err(unexpected(kind, &other)),
        }
    }

    /// Sends one request and returns the id, the answer and its fds. An
    /// `Error` answer becomes [`ClientError::Refused`].
    fn call(
        &mut self,
        body: request::Body,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(u64, response::Body, Vec<OwnedFd>), ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let msg = Request {
            id,
            body: Some(body),
        };
        send_request(self.sock.as_fd(), &msg, fds)?;
        let (reply, fds) = recv_response(self.sock.as_fd())?;
        if reply.id != id {
            return Err(ClientError::IdMismatch {
                sent: id,
                got: reply.id,
            });
        }
        match reply.body {
            Some(response::Body::Error(error)) => Err(ClientError::Refused {
                code: pb::error::Code::try_from(error.code).unwrap_or_default(),
                message: error.message,
            }),
            Some(body) => Ok((id, body, fds)),
            // recv_response has checked this; kept so that no reply can panic.
            None => Err(ClientError::Protocol(ProtoError::BadResponse {
                id,
                reason: InvalidMessage::MissingBody,
            })),
        }
    }
}

/// The answer to [`VfClient::get_peer`].
#[derive(Debug)]
pub enum PeerAnswer {
    /// Feed this hop directly.
    Peer(Peer),
    /// Feed no hop directly: send everything on the tx ring.
    None {
        /// The `PEER` generation answered.
        generation: u32,
    },
}

/// The hop an NF feeds directly: the NIC's side of its fill and rx rings, and its
/// rx interrupt.
#[derive(Debug)]
pub struct Peer {
    /// The `PEER` generation answered.
    pub generation: u32,
    /// The TCI to put in rx descriptors (the hop's port VLAN; 0 = none).
    pub vlan: u16,
    /// The hop's BAR.
    pub bar: Bar<Hop>,
    /// The eventfd bound to the hop's rx vector.
    pub irq: EventFd,
}

fn unexpected(request: &'static str, reply: &response::Body) -> ClientError {
    ClientError::UnexpectedReply {
        request,
        reply: response_kind(reply).0,
    }
}
