//! One protobuf message and its fds per `SOCK_SEQPACKET` packet.
//!
//! Everything received is checked before it is returned: the length prefix
//! must cover exactly the rest of the packet, the message must decode, it
//! must have a body, and it must carry exactly the fds its kind takes (see
//! `attach.proto`). Fds that arrive with a rejected packet are closed. No
//! byte sequence a peer can send makes these functions panic, and a rejected
//! packet never desynchronizes the stream: the next packet is read afresh.

use std::os::fd::{BorrowedFd, OwnedFd};

use prost::Message;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use super::MAX_PACKET;
use super::pb::{Request, Response, request, response};
use crate::fd::{FdError, recv_with_fds, send_with_fds};
use crate::shm::ShmError;

/// Fds a receive makes room for: more than any message carries, so that a
/// request with a few extra fds is still read whole and can be answered
/// with its id. A packet with more than this is dropped (its fds closed)
/// and reported as [`ProtoError::Transport`].
const RECV_MAX_FDS: usize = 8;

/// Errors moving attach messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer closed its end of the socket.
    #[error("the peer closed the attach socket")]
    Closed,
    /// Nothing is queued on a nonblocking socket; try again when it is
    /// readable.
    #[error("no message queued on the nonblocking attach socket")]
    WouldBlock,
    /// A nonblocking socket's send buffer is full because the peer is not
    /// reading; the message was not sent.
    #[error("the attach socket's send buffer is full: the peer is not reading; message not sent")]
    SendWouldBlock,
    /// The peer sent a packet of zero bytes. Every message has at least its
    /// length prefix, so this is a misbehaving peer.
    #[error("received an empty packet (every message has a length prefix)")]
    EmptyPacket,
    /// The length prefix is unreadable.
    #[error("bad length prefix on a {len}-byte packet")]
    BadLength {
        /// Packet length.
        len: usize,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },
    /// The length prefix does not match the packet.
    #[error("length prefix says {declared} bytes but {actual} follow it")]
    LengthMismatch {
        /// Length in the prefix.
        declared: usize,
        /// Bytes after the prefix.
        actual: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed {kind} message")]
    Decode {
        /// `"Request"` or `"Response"`.
        kind: &'static str,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },
    /// A message to send does not fit in one packet.
    #[error("encoded {kind} is {len} bytes, over the 65536-byte packet limit")]
    TooLarge {
        /// `"Request"` or `"Response"`.
        kind: &'static str,
        /// Encoded length, prefix included.
        len: usize,
    },
    /// A config to send is over [`vf_abi::attach::MAX_CONFIG`] bytes.
    #[error("a config of {0} bytes is over the {max}-byte limit", max = vf_abi::attach::MAX_CONFIG)]
    ConfigTooLarge(usize),
    /// A config's sealed memfd could not be made or read.
    #[error("config memfd")]
    Sealed(#[source] crate::sealed::SealedError),
    /// A request (sent or received) has the wrong shape; received fds were
    /// closed. The receiving engine should answer `id` with
    /// `INVALID_ARGUMENT`.
    #[error("request {id} is invalid")]
    BadRequest {
        /// Id of the request.
        id: u64,
        /// What is wrong with it.
        #[source]
        reason: InvalidMessage,
    },
    /// A response (sent or received) has the wrong shape; received fds were
    /// closed.
    #[error("response {id} is invalid")]
    BadResponse {
        /// Id of the response.
        id: u64,
        /// What is wrong with it.
        #[source]
        reason: InvalidMessage,
    },
    /// Sending or receiving on the socket failed (including a packet over
    /// 64 KiB or with too many fds, which is dropped whole).
    #[error("attach socket I/O failed")]
    Transport(#[source] FdError),
    /// Checking whether the peer hung up failed.
    #[error("polling the attach socket failed")]
    Poll(#[source] Errno),
    /// Creating the socketpair failed.
    #[error("creating the attach socketpair failed")]
    Socketpair(#[source] Errno),
}

impl ProtoError {
    /// The id of the request or response this error is about, if it got far
    /// enough to have one: a server answers a [`ProtoError::BadRequest`]
    /// with an error reply to that id.
    pub fn message_id(&self) -> Option<u64> {
        match self {
            Self::BadRequest { id, .. } | Self::BadResponse { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Why a well-formed protobuf message is not a valid attach message.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMessage {
    /// The `body` oneof is unset (or set to a kind this SDK does not know).
    #[error("message has no body (or one this SDK does not know)")]
    MissingBody,
    /// The message carries the wrong number of fds.
    #[error("{kind} must carry {expected} fds, got {got}")]
    FdCount {
        /// Message kind.
        kind: &'static str,
        /// Fds this kind takes.
        expected: usize,
        /// Fds that came.
        got: usize,
    },
    /// An MSI-X vector number that does not fit in 16 bits.
    #[error("MSI-X vector {0} is over 65535")]
    VectorOutOfRange(u32),
    /// A MAC address that is not 6 bytes.
    #[error("MAC address has {0} bytes, not 6")]
    MacLength(usize),
    /// The `MapDma` fd is not a usable memfd (not a memfd, not sealed with
    /// `F_SEAL_SHRINK`, empty, or not mappable).
    #[error("MapDma fd is not a usable sealed memfd")]
    Memory(#[source] ShmError),
    /// The `SetIrq` fd is not an eventfd (the `/proc/self/fd` link target
    /// is shown).
    #[error("SetIrq fd is {0:?}, not an eventfd")]
    NotAnEventFd(String),
    /// The `SetIrq` fd could not be set up as an eventfd.
    #[error("SetIrq fd could not be used as an eventfd")]
    EventFd(#[source] FdError),
}

/// Name and fd count of a request body.
pub fn request_kind(body: &request::Body) -> (&'static str, usize) {
    match body {
        request::Body::Hello(_) => ("Hello", 0),
        request::Body::MapDma(_) => ("MapDma", 1),
        request::Body::UnmapDma(_) => ("UnmapDma", 0),
        request::Body::SetIrq(_) => ("SetIrq", 1),
        request::Body::Enable(_) => ("Enable", 0),
        request::Body::Reset(_) => ("Reset", 0),
        request::Body::Report(_) => ("Report", 0),
        request::Body::FetchConfig(_) => ("FetchConfig", 0),
        request::Body::ConfigApplied(_) => ("ConfigApplied", 0),
        request::Body::GetConfig(_) => ("GetConfig", 0),
        request::Body::GetPeer(_) => ("GetPeer", 0),
    }
}

/// Name and fd count of a response body.
pub fn response_kind(body: &response::Body) -> (&'static str, usize) {
    match body {
        response::Body::Error(_) => ("Error", 0),
        // BAR and doorbell, plus the chain's UMEM for a shared chain.
        response::Body::Hello(h) => ("HelloReply", if h.umem_size > 0 { 3 } else { 2 }),
        response::Body::Ok(_) => ("Ok", 0),
        // The sealed memfd holding the config.
        response::Body::Config(_) => ("Config", 1),
        // The hop's BAR and the eventfd of its rx vector.
        response::Body::Peer(_) => ("Peer", 2),
        response::Body::NoPeer(_) => ("NoPeer", 0),
    }
}

fn check_fds(kind: (&'static str, usize), got: usize) -> Result<(), InvalidMessage> {
    let (kind, expected) = kind;
    if got == expected {
        Ok(())
    } else {
        Err(InvalidMessage::FdCount {
            kind,
            expected,
            got,
        })
    }
}

fn check_request(msg: &Request, fds: usize) -> Result<(), ProtoError> {
    let shape = match &msg.body {
        None => Err(InvalidMessage::MissingBody),
        Some(body) => check_fds(request_kind(body), fds),
    };
    shape.map_err(|reason| ProtoError::BadRequest { id: msg.id, reason })
}

fn check_response(msg: &Response, fds: usize) -> Result<(), ProtoError> {
    let shape = match &msg.body {
        None => Err(InvalidMessage::MissingBody),
        Some(response::Body::Hello(reply)) if reply.mac.len() != 6 => {
            Err(InvalidMessage::MacLength(reply.mac.len()))
        }
        Some(body) => check_fds(response_kind(body), fds),
    };
    shape.map_err(|reason| ProtoError::BadResponse { id: msg.id, reason })
}

/// Sends a request with its fds. The request must have a body and exactly
/// the fds its kind takes ([`ProtoError::BadRequest`] otherwise, nothing
/// sent).
pub fn send_request(
    sock: BorrowedFd<'_>,
    msg: &Request,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    check_request(msg, fds.len())?;
    send_message(sock, "Request", msg, fds)
}

/// Sends a response with its fds. The response must have a body, a
/// `HelloReply` a 6-byte MAC, and exactly the fds its kind takes
/// ([`ProtoError::BadResponse`] otherwise, nothing sent).
pub fn send_response(
    sock: BorrowedFd<'_>,
    msg: &Response,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    check_response(msg, fds.len())?;
    send_message(sock, "Response", msg, fds)
}

/// Receives one request and the fds that came with it. On a nonblocking
/// socket with nothing queued: [`ProtoError::WouldBlock`]. A returned
/// request has a body and exactly the fds its kind takes.
pub fn recv_request(sock: BorrowedFd<'_>) -> Result<(Request, Vec<OwnedFd>), ProtoError> {
    let (msg, fds) = recv_message::<Request>(sock, "Request")?;
    check_request(&msg, fds.len())?;
    Ok((msg, fds))
}

/// Receives one response and the fds that came with it. A returned response
/// has a body, a `HelloReply` a 6-byte MAC, and exactly the fds its kind
/// takes.
pub fn recv_response(sock: BorrowedFd<'_>) -> Result<(Response, Vec<OwnedFd>), ProtoError> {
    let (msg, fds) = recv_message::<Response>(sock, "Response")?;
    check_response(&msg, fds.len())?;
    Ok((msg, fds))
}

fn send_message<M: Message>(
    sock: BorrowedFd<'_>,
    kind: &'static str,
    msg: &M,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    let body_len = msg.encoded_len();
    let len = prost::length_delimiter_len(body_len) + body_len;
    if len > MAX_PACKET {
        return Err(ProtoError::TooLarge { kind, len });
    }
    let bytes = msg.encode_length_delimited_to_vec();
    send_with_fds(sock, &bytes, fds).map_err(|e| match e {
        FdError::Send(Errno::AGAIN) => ProtoError::SendWouldBlock,
        FdError::Send(Errno::PIPE | Errno::CONNRESET) => ProtoError::Closed,
        other => ProtoError::Transport(other),
    })
}

fn recv_message<M: Message + Default>(
    sock: BorrowedFd<'_>,
    kind: &'static str,
) -> Result<(M, Vec<OwnedFd>), ProtoError> {
    // A control message, not a packet on the data path: one allocation per
    // message is fine.
    let mut buf = vec![0u8; MAX_PACKET];
    let (n, fds) = recv_with_fds(sock, &mut buf, RECV_MAX_FDS).map_err(|e| match e {
        FdError::Recv(Errno::AGAIN) => ProtoError::WouldBlock,
        FdError::Recv(Errno::CONNRESET) => ProtoError::Closed,
        other => ProtoError::Transport(other),
    })?;
    if n == 0 {
        // On SOCK_SEQPACKET an empty packet and end-of-file both read as 0
        // bytes; only the hang-up flag tells them apart.
        return Err(if peer_hung_up(sock)? {
            ProtoError::Closed
        } else {
            ProtoError::EmptyPacket
        });
    }
    let mut rest = buf.get(..n).unwrap_or_default();
    let declared = prost::decode_length_delimiter(&mut rest)
        .map_err(|source| ProtoError::BadLength { len: n, source })?;
    if declared != rest.len() {
        return Err(ProtoError::LengthMismatch {
            declared,
            actual: rest.len(),
        });
    }
    let msg = M::decode(rest).map_err(|source| ProtoError::Decode { kind, source })?;
    Ok((msg, fds))
}

/// Whether the peer has closed (or shut down writing on) the socket.
fn peer_hung_up(sock: BorrowedFd<'_>) -> Result<bool, ProtoError> {
    let mut pfd = [PollFd::from_borrowed_fd(
        sock,
        PollFlags::IN | PollFlags::RDHUP,
    )];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut pfd, Some(&zero)) {
            Ok(_) => break,
            Err(Errno::INTR) => {}
            Err(e) => return Err(ProtoError::Poll(e)),
        }
    }
    Ok(pfd[0]
        .revents()
        .intersects(PollFlags::HUP | PollFlags::RDHUP))
}
