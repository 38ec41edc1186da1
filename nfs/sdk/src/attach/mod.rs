//! The attach protocol between an NF and the NIC engine (DESIGN.md §2), in
//! the style of vfio-user: the NF asks for its VF (`Hello`), maps its UMEM
//! for DMA, binds interrupt vectors to eventfds, and enables the VF, all over
//! one Unix socket.
//!
//! - Transport: a connected `SOCK_SEQPACKET` socket ([`socketpair`] for a
//!   child process, which finds its end in [`ENV_VF_FD`]). One message per
//!   packet, at most [`MAX_PACKET`] bytes.
//! - Framing: protobuf (`proto/nfhost/vf/v1/attach.proto`, generated into
//!   [`pb`]), length-delimited.
//! - File descriptors ride on the same packet with `SCM_RIGHTS`. Each message
//!   kind carries an exact number of them, checked on both ends.
//!
//! The layers, thin to thick: [`codec`] moves one message and its fds and
//! checks its shape; [`server`] (the NIC engine's end) turns a request into a
//! typed [`Command`] owning its fds; [`client`] (the NF's end) is a blocking
//! request/response driver, [`VfClient`]. Policy (is the token right, is the
//! mapping aligned, is the vector in range for this VF) belongs to the
//! engine, which answers with [`Code`]s.

use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

pub mod client;
pub mod codec;
pub mod server;

#[cfg(test)]
mod tests;

pub use vf_abi::attach::{ENV_VF_FD, MAX_PACKET, pb};

pub use client::{Attached, ClientError, VfClient};
pub use codec::{
    InvalidMessage, ProtoError, recv_request, recv_response, send_request, send_response,
};
pub use pb::error::Code;
pub use server::{Command, read_command, reply_error, reply_hello, reply_ok};

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
