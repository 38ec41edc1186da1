//! The NIC engine's end of the attach protocol: typed commands in, replies
//! out. The engine's socket is typically nonblocking; [`read_command`] then
//! returns [`ProtoError::WouldBlock`] when nothing is queued.
//!
//! This layer only checks the shape of a request (body, fds, field ranges
//! that the types demand) and takes ownership of its fds. Whether the
//! request is allowed is the engine's call; it answers with [`reply_ok`],
//! [`reply_error`] or, for `Hello`, [`reply_hello`].

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::codec::{InvalidMessage, ProtoError, recv_request, request_kind, send_response};
use super::pb::{self, Response, request, response};
use crate::fd::EventFd;
use crate::shm::SharedMemory;

/// A request from an NF, checked for shape, owning the fds it came with.
pub enum Command {
    /// The NF introduces itself; answer with [`reply_hello`] or an error.
    Hello {
        /// Request id, to echo.
        id: u64,
        /// Protocol version the NF speaks ([`vf_abi::ABI_VERSION`] is ours).
        abi_version: u32,
        /// The attach token the NF presents. Not shown by `Debug`.
        token: String,
    },
    /// Map `size` bytes of `memory` at `offset` to `iova` in the VF's IOMMU
    /// domain.
    MapDma {
        /// Request id, to echo.
        id: u64,
        /// Start of the range in IOVA space.
        iova: u64,
        /// Length of the range (not yet checked against `memory`).
        size: u64,
        /// Byte offset in `memory` (not yet checked against it).
        offset: u64,
        /// The NIC may read the range.
        read: bool,
        /// The NIC may write the range.
        write: bool,
        /// The NF's memfd, sealed against shrinking and mapped.
        memory: SharedMemory,
    },
    /// Remove the mapping at `iova`.
    UnmapDma {
        /// Request id, to echo.
        id: u64,
        /// Start of the mapping.
        iova: u64,
        /// Length of the mapping.
        size: u64,
    },
    /// Bind MSI-X `vector` to `eventfd` (not yet checked against the VF's
    /// vector count).
    SetIrq {
        /// Request id, to echo.
        id: u64,
        /// MSI-X vector number.
        vector: u16,
        /// The NF's eventfd, now nonblocking.
        eventfd: EventFd,
    },
    /// Bus-master enable: the NF's rings are ready.
    Enable {
        /// Request id, to echo.
        id: u64,
    },
    /// Function-level reset.
    Reset {
        /// Request id, to echo.
        id: u64,
    },
    /// NF-specific state to show (not yet checked to be JSON).
    Report {
        /// Request id, to echo.
        id: u64,
        /// The document as sent.
        json: String,
    },
    /// The NF asks for the newest mailbox message; answer with [`reply_config`]
    /// or an error.
    FetchConfig {
        /// Request id, to echo.
        id: u64,
    },
    /// The NF asks for the configuration it runs with; answer with
    /// [`reply_config`] (generation 0) or an error.
    GetConfig {
        /// Request id, to echo.
        id: u64,
    },
    /// The NF asks which hop it feeds directly; answer with [`reply_peer`] or
    /// [`reply_no_peer`], possibly later.
    GetPeer {
        /// Request id, to echo.
        id: u64,
    },
    /// The NF applied (or could not apply) a configuration while running.
    ConfigApplied {
        /// Request id, to echo.
        id: u64,
        /// The `Config` generation.
        generation: u32,
        /// Empty if applied; else why not.
        error: String,
    },
}

impl Command {
    /// The request id, to echo in the reply.
    pub fn id(&self) -> u64 {
        match self {
            Self::Hello { id, .. }
            | Self::MapDma { id, .. }
            | Self::UnmapDma { id, .. }
            | Self::SetIrq { id, .. }
            | Self::Enable { id }
            | Self::Reset { id }
            | Self::Report { id, .. }
            | Self::FetchConfig { id }
            | Self::GetConfig { id }
            | Self::GetPeer { id }
            | Self::ConfigApplied { id, .. } => *id,
        }
    }
}

// By hand so that the token never reaches a log.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello {
                id, abi_version, ..
            } => f
                .debug_struct("Hello")
                .field("id", id)
                .field("abi_version", abi_version)
                .field("token", &"<redacted>")
                .finish(),
            Self::MapDma {
                id,
                iova,
                size,
                offset,
                read,
                write,
                memory,
            } => f
                .debug_struct("MapDma")
                .field("id", id)
                .field("iova", &format_args!("{iova:#x}"))
                .field("size", &format_args!("{size:#x}"))
                .field("offset", &format_args!("{offset:#x}"))
                .field("read", read)
                .field("write", write)
                .field("memory", memory)
                .finish(),
            Self::UnmapDma { id, iova, size } => f
                .debug_struct("UnmapDma")
                .field("id", id)
                .field("iova", &format_args!("{iova:#x}"))
                .field("size", &format_args!("{size:#x}"))
                .finish(),
            Self::SetIrq {
                id,
                vector,
                eventfd,
            } => f
                .debug_struct("SetIrq")
                .field("id", id)
                .field("vector", vector)
                .field("eventfd", eventfd)
                .finish(),
            Self::Enable { id } => f.debug_struct("Enable").field("id", id).finish(),
            Self::Reset { id } => f.debug_struct("Reset").field("id", id).finish(),
            Self::Report { id, json } => f
                .debug_struct("Report")
                .field("id", id)
                .field("json", json)
                .finish(),
            Self::FetchConfig { id } => f.debug_struct("FetchConfig").field("id", id).finish(),
            Self::GetConfig { id } => f.debug_struct("GetConfig").field("id", id).finish(),
            Self::GetPeer { id } => f.debug_struct("GetPeer").field("id", id).finish(),
            Self::ConfigApplied {
                id,
                generation,
                error,
            } => f
                .debug_struct("ConfigApplied")
                .field("id", id)
                .field("generation", generation)
                .field("error", error)
                .finish(),
        }
    }
}

/// Receives one request and turns it into a [`Command`].
///
/// A request that decodes but has the wrong shape (no body, the wrong number
/// of fds, a vector over 16 bits, a `MapDma` fd that is not a sealed,
/// non-empty memfd, a `SetIrq` fd that is not an eventfd) is
/// [`ProtoError::BadRequest`] with its id, to be answered with
/// [`reply_error`]; its fds are closed. Other errors mean the packet could
/// not be read as a request at all (see [`ProtoError`]); the socket stays
/// usable unless it is [`ProtoError::Closed`].
pub fn read_command(sock: BorrowedFd<'_>) -> Result<Command, ProtoError> {
    let (msg, fds) = recv_request(sock)?;
    let id = msg.id;
    let bad = |reason| ProtoError::BadRequest { id, reason };
    let Some(body) = msg.body else {
        return Err(bad(InvalidMessage::MissingBody));
    };
    let kind = request_kind(&body);
    // recv_request has checked the count; this keeps the no-panic promise
    // without relying on it.
    let one_fd = |fds: Vec<OwnedFd>| -> Result<OwnedFd, ProtoError> {
        let got = fds.len();
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(fd), None) => Ok(fd),
            _ => Err(bad(InvalidMessage::FdCount {
                kind: kind.0,
                expected: kind.1,
                got,
            })),
        }
    };
    Ok(match body {
        request::Body::Hello(hello) => Command::Hello {
            id,
            abi_version: hello.abi_version,
            token: hello.token,
        },
        request::Body::MapDma(map) => {
            let memory =
                SharedMemory::from_fd(one_fd(fds)?).map_err(|e| bad(InvalidMessage::Memory(e)))?;
            Command::MapDma {
                id,
                iova: map.iova,
                size: map.size,
                offset: map.offset,
                read: map.read,
                write: map.write,
                memory,
            }
        }
        request::Body::UnmapDma(unmap) => Command::UnmapDma {
            id,
            iova: unmap.iova,
            size: unmap.size,
        },
        request::Body::SetIrq(set_irq) => {
            let fd = one_fd(fds)?;
            let Ok(vector) = u16::try_from(set_irq.vector) else {
                return Err(bad(InvalidMessage::VectorOutOfRange(set_irq.vector)));
            };
            check_eventfd(&fd).map_err(bad)?;
            let eventfd = EventFd::from_owned(fd).map_err(|e| bad(InvalidMessage::EventFd(e)))?;
            Command::SetIrq {
                id,
                vector,
                eventfd,
            }
        }
        request::Body::Enable(pb::Enable {}) => Command::Enable { id },
        request::Body::Reset(pb::Reset {}) => Command::Reset { id },
        request::Body::Report(report) => Command::Report {
            id,
            json: report.json,
        },
        request::Body::FetchConfig(pb::FetchConfig {}) => Command::FetchConfig { id },
        request::Body::GetConfig(pb::GetConfig {}) => Command::GetConfig { id },
        request::Body::GetPeer(pb::GetPeer {}) => Command::GetPeer { id },
        request::Body::ConfigApplied(applied) => Command::ConfigApplied {
            id,
            generation: applied.generation,
            error: applied.error,
        },
    })
}

/// Refuses anything but an eventfd, which the engine will write 8 bytes to
/// on every interrupt. Where `/proc` is not mounted the check is skipped;
/// a wrong fd kind then only makes interrupts go nowhere.
fn check_eventfd(fd: &OwnedFd) -> Result<(), InvalidMessage> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::read_link(link) {
        Ok(target) if target.as_os_str() != "anon_inode:[eventfd]" => Err(
            InvalidMessage::NotAnEventFd(target.to_string_lossy().into_owned()),
        ),
        _ => Ok(()),
    }
}

/// Answers request `id` with success.
pub fn reply_ok(sock: BorrowedFd<'_>, id: u64) -> Result<(), ProtoError> {
    let msg = Response {
        id,
        body: Some(response::Body::Ok(pb::Ok {})),
    };
    send_response(sock, &msg, &[])
}

/// Refuses request `id`. `message` should tell the NF's author what to
/// change; keep it well under the 64 KiB packet limit.
pub fn reply_error(
    sock: BorrowedFd<'_>,
    id: u64,
    code: pb::error::Code,
    message: &str,
) -> Result<(), ProtoError> {
    let msg = Response {
        id,
        body: Some(response::Body::Error(pb::Error {
            code: code.into(),
            message: message.to_owned(),
        })),
    };
    send_response(sock, &msg, &[])
}

/// Answers `FetchConfig` or `GetConfig` request `id` with `config` of
/// `generation`, in a sealed memfd ([`crate::sealed`]). A config over
/// [`vf_abi::attach::MAX_CONFIG`] is refused here, before anything is sent.
pub fn reply_config(
    sock: BorrowedFd<'_>,
    id: u64,
    generation: u32,
    config: &str,
) -> Result<(), ProtoError> {
    if config.len() > vf_abi::attach::MAX_CONFIG {
        return Err(ProtoError::ConfigTooLarge(config.len()));
    }
    let blob =
        crate::sealed::seal("nfhost-nf-config", config.as_bytes()).map_err(ProtoError::Sealed)?;
    let msg = Response {
        id,
        body: Some(response::Body::Config(pb::Config {
            generation,
            size: config.len() as u64,
        })),
    };
    send_response(sock, &msg, &[blob.as_fd()])
}

/// Answers `Hello` request `id`, handing over the BAR memfd and the doorbell
/// eventfd. `reply.mac` must be 6 bytes.
pub fn reply_hello(
    sock: BorrowedFd<'_>,
    id: u64,
    reply: &pb::HelloReply,
    bar_fd: BorrowedFd<'_>,
    doorbell_fd: BorrowedFd<'_>,
    umem_fd: Option<BorrowedFd<'_>>,
) -> Result<(), ProtoError> {
    let msg = Response {
        id,
        body: Some(response::Body::Hello(reply.clone())),
    };
    match umem_fd {
        Some(umem) => send_response(sock, &msg, &[bar_fd, doorbell_fd, umem]),
        None => send_response(sock, &msg, &[bar_fd, doorbell_fd]),
    }
}

/// Answers `GetPeer`: the NF feeds VF `vf_index` directly, through its BAR and
/// the eventfd bound to its rx vector.
pub fn reply_peer(
    sock: BorrowedFd<'_>,
    id: u64,
    peer: pb::Peer,
    bar_fd: BorrowedFd<'_>,
    irq_fd: BorrowedFd<'_>,
) -> Result<(), ProtoError> {
    let msg = Response {
        id,
        body: Some(response::Body::Peer(peer)),
    };
    send_response(sock, &msg, &[bar_fd, irq_fd])
}

/// Answers `GetPeer`: the NF feeds no hop directly.
pub fn reply_no_peer(sock: BorrowedFd<'_>, id: u64, generation: u32) -> Result<(), ProtoError> {
    let msg = Response {
        id,
        body: Some(response::Body::NoPeer(pb::NoPeer { generation })),
    };
    send_response(sock, &msg, &[])
}
