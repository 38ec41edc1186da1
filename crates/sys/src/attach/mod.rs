//! The attach protocol's transport, both ends (ARCHITECTURE.md §2), in the style
//! of vfio-user: one connected `SOCK_SEQPACKET` socket per VF ([`socketpair`] for
//! a child process, which finds its end in [`ENV_VF_FD`]), one protobuf message
//! per packet of at most [`MAX_PACKET`] bytes, file descriptors beside it with
//! `SCM_RIGHTS`, an exact number per message kind, checked on both ends.
//!
//! [`codec`] moves one message and its fds and checks its shape; [`server`] (the
//! NIC engine's end) turns a request into a typed [`Command`] owning its fds. The
//! NF's end, a request/response driver, is `nf_sdk::VfClient`. Policy (is the
//! token right, is the mapping aligned, is the vector in range for this VF)
//! belongs to the engine, which answers with [`Code`]s.

use std::num::ParseIntError;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use thiserror::Error;

pub mod codec;
pub mod server;

pub use codec::{
    InvalidMessage, ProtoError, recv_request, recv_response, request_kind, response_kind,
    send_request, send_response,
};
pub use pb::error::Code;
pub use server::{
    Command, read_command, reply_error, reply_hello, reply_no_peer, reply_ok, reply_peer,
};
pub use vf_abi::attach::{ENV_VF_FD, MAX_PACKET, pb};

/// Creates a connected, close-on-exec `SOCK_SEQPACKET` socketpair: one end for
/// the engine, one for the NF. A child process that is to inherit its end
/// must clear `FD_CLOEXEC` on it (or `dup2` it) between fork and exec.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd), ProtoError> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(ProtoError::Socketpair)
}

/// The attach socket a process inherited could not be claimed.
#[derive(Debug, Error)]
pub enum InheritedFdError {
    /// The variable's value is not a file descriptor number.
    #[error("NFHOST_VF_FD={value:?} is not a file descriptor number")]
    Invalid {
        /// The value as found.
        value: String,
        /// Why it did not parse.
        #[source]
        source: ParseIntError,
    },
    /// The fd is not open in this process (the parent probably left
    /// `FD_CLOEXEC` set on it).
    #[error("fd {fd} from NFHOST_VF_FD is not open in this process (inherited with FD_CLOEXEC?)")]
    NotOpen {
        /// The number.
        fd: RawFd,
        /// Why `/proc/self/fd/N` could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The descriptor is open but is not a socket.
    #[error("fd {fd} from NFHOST_VF_FD is {target:?}, not a socket")]
    NotSocket {
        /// The number.
        fd: RawFd,
        /// What it refers to.
        target: PathBuf,
    },
    /// An earlier caller in this process already took the inherited socket.
    #[error("the NFHOST_VF_FD socket (fd {0}) was already taken by an earlier VfClient::from_env")]
    Taken(RawFd),
}

/// Takes ownership of the socket whose number is `value`, once per `taken`
/// flag, after checking through `/proc/self/fd` that it is an open socket.
pub fn claim_inherited_socket(
    value: &str,
    taken: &AtomicBool,
) -> Result<OwnedFd, InheritedFdError> {
    let fd: RawFd = value
        .trim()
        .parse()
        .map_err(|source| InheritedFdError::Invalid {
            value: value.to_owned(),
            source,
        })?;
    // A negative number has no /proc entry and fails here too.
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|source| InheritedFdError::NotOpen { fd, source })?;
    if !target
        .as_os_str()
        .as_encoded_bytes()
        .starts_with(b"socket:")
    {
        return Err(InheritedFdError::NotSocket { fd, target });
    }
    if taken.swap(true, Ordering::AcqRel) {
        return Err(InheritedFdError::Taken(fd));
    }
    // SAFETY: `fd` is open (its /proc/self/fd entry exists) and is a socket.
    // Ownership: by the NFHOST_VF_FD contract the parent hands this fd to the
    // process's attach client and nothing else in the process uses it, and
    // `taken` lets only one caller claim it, so this OwnedFd is its only
    // owner and closing it on drop is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
