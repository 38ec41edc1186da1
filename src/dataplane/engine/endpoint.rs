//! Endpoints of `external` NFs: a listening `SOCK_SEQPACKET` socket per VF, on which
//! a process started elsewhere connects and attaches with the VF's secret.
//!
//! The engine owns the accept side, so that "is someone attached" is decided on
//! the engine thread, between two polls, with no race. A connection is taken up
//! once it has said something (its `Hello`); one silent for [`HELLO_TIMEOUT`] is
//! closed and counted, so that no one holds a VF's endpoint by connecting and
//! waiting. A connection that speaks while the VF has one attached is refused and
//! counted; otherwise it becomes the VF's attach socket, with the secret as its
//! token. A
//! wrong secret is answered `PERMISSION_DENIED`, counted, logged (without the
//! secret) and the connection shut down. When the attached process goes away the
//! VF is scrubbed and the endpoint waits for the next one.
//!
//! Every endpoint has two sockets: `attach.sock` speaks nfhost's attach protocol,
//! `memif.sock` memif (see `memif`), on which nfhost speaks first (`HELLO`) and a
//! connection is taken up once it answers. Either holds the VF: one client at a
//! time, on whichever socket.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Engine;

/// How long a connection may stay silent before it is closed.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
use super::attach::PortEvent;
use crate::dataplane::port::Face;
use crate::nic::{Owner, VfId};

/// Who may attach on a VF's endpoint, and with what.
pub(super) struct Seat {
    /// The NF that owns the VF.
    pub(super) owner: Owner,
    /// The VF's secret (the `Hello` token). Never logged.
    pub(super) secret: String,
    /// The config `GetConfig` answers.
    pub(super) config: Arc<str>,
    /// The accept tasks: attach socket, memif socket.
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Engine {
    /// Opens `vf`'s endpoint: connections on `listener` and `memif_listener`
    /// (bound, listening, nonblocking `SOCK_SEQPACKET` sockets) attach as `owner`
    /// with `secret`. The VF is assigned to `owner` now, so it stays the NF's while
    /// no one is attached.
    pub(super) fn listen(
        &mut self,
        vf: VfId,
        owner: Owner,
        secret: String,
        config: String,
        listener: OwnedFd,
        memif_listener: OwnedFd,
    ) -> Result<(), super::EngineError> {
        self.unlisten(vf);
        if self.nic.vf(vf).ok().and_then(|v| v.owner()) != Some(&owner) {
            self.nic.assign(vf, owner.clone())?;
        }
        let listener = nfhost_sys::async_fd(listener).map_err(super::EngineError::Socket)?;
        let memif_listener =
            nfhost_sys::async_fd(memif_listener).map_err(super::EngineError::Socket)?;
        let tasks =
            [(listener, Face::Native), (memif_listener, Face::Memif)].map(|(listener, face)| {
                let (events, wake) = (self.events.clone(), self.wake.clone());
                tokio_uring::spawn(accept(vf, face, listener, events, wake))
            });
        self.listeners.insert(
            vf,
            Seat {
                owner,
                secret,
                config: config.into(),
                tasks,
            },
        );
        tracing::info!(%vf, "nic-engine: endpoint open for an external NF");
        Ok(())
    }

    /// Closes `vf`'s endpoint, if it has one (the attached NF, if any, stays until
    /// detached or released).
    pub(super) fn unlisten(&mut self, vf: VfId) {
        if let Some(seat) = self.listeners.remove(&vf) {
            for task in seat.tasks {
                task.abort();
            }
        }
    }

    /// A connection arrived on `vf`'s endpoint.
    pub(super) fn on_incoming(&mut self, vf: VfId, sock: OwnedFd, face: Face) {
        let Some(seat) = self.listeners.get(&vf) else {
            return; // Closed meanwhile: dropping the socket refuses it.
        };
        if self.port(vf).is_some() {
            self.counters.vf(vf).attach_refused.add(1);
            tracing::warn!(%vf, owner = %seat.owner.0, ?face, "nic-engine: refused a second connection to an endpoint while one is attached");
            if face == Face::Memif {
                // Its INIT is read first: closing a socket with unread data resets
                // the peer, which would then not read the reason.
                let mut discard = [0u8; vf_abi::memif::MSG_LEN];
                let _ = nfhost_sys::recv_with_fds(sock.as_fd(), &mut discard, 1);
                super::memif::disconnect(sock.as_fd(), "Already connected");
            }
            let _ = rustix::net::shutdown(&sock, rustix::net::Shutdown::Both);
            return;
        }
        let (owner, secret, config) = (
            seat.owner.clone(),
            seat.secret.clone(),
            seat.config.to_string(),
        );
        if let Err(e) = self.attach(vf, owner, secret, config, sock, face) {
            tracing::warn!(%vf, error = %crate::error_chain(&e), "nic-engine: an endpoint connection could not be attached");
        }
    }

    /// A connection on `vf`'s endpoint said nothing within [`HELLO_TIMEOUT`] and
    /// was closed.
    pub(super) fn on_silent(&mut self, vf: VfId) {
        self.counters.vf(vf).attach_refused.add(1);
        tracing::warn!(%vf, timeout_s = HELLO_TIMEOUT.as_secs(), "nic-engine: closed an endpoint connection that sent no Hello in time");
    }

    /// A `Hello` with the wrong secret on an endpoint connection: counted, logged,
    /// and the connection shut down (its reader sees the end and reports it).
    pub(super) fn refuse_hello(&mut self, vf: VfId) {
        self.counters.vf(vf).attach_refused.add(1);
        if let Some(port) = self.port(vf) {
            tracing::warn!(%vf, owner = %port.owner.0, "nic-engine: refused an attach with a wrong secret");
            let _ = rustix::net::shutdown(port.sock.as_fd(), rustix::net::Shutdown::Both);
        }
        self.detach(vf);
    }
}

/// Accepts connections on an endpoint and hands each to the loop (a memif
/// connection gets nfhost's `HELLO` first).
async fn accept(
    vf: VfId,
    face: Face,
    listener: tokio::io::unix::AsyncFd<OwnedFd>,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: std::rc::Rc<tokio::sync::Notify>,
) {
    loop {
        let Ok(mut guard) = listener.readable().await else {
            return;
        };
        let flags = rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK;
        match rustix::net::accept_with(listener.get_ref(), flags) {
            Ok(sock) => {
                if face == Face::Memif {
                    if let Err(error) = super::memif::send(sock.as_fd(), &super::memif::hello()) {
                        tracing::warn!(%vf, %error, "nic-engine: a memif client went away before HELLO");
                        continue;
                    }
                }
                tokio_uring::spawn(first_word(vf, face, sock, events.clone(), wake.clone()));
            }
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => {}
            Err(e) => {
                tracing::error!(%vf, error = %e, "nic-engine: accepting on an endpoint failed; it is closed");
                return;
            }
        }
    }
}

/// Hands a new connection to the loop once it has something to say, or reports it
/// silent (and closes it) after [`HELLO_TIMEOUT`].
async fn first_word(
    vf: VfId,
    face: Face,
    sock: OwnedFd,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: std::rc::Rc<tokio::sync::Notify>,
) {
    let Ok(pending) = nfhost_sys::async_fd(sock) else {
        return;
    };
    let spoke = matches!(
        tokio::time::timeout(HELLO_TIMEOUT, pending.readable()).await,
        Ok(Ok(_))
    );
    let sock = pending.into_inner();
    let event = if spoke {
        PortEvent::Incoming { vf, sock, face }
    } else {
        let _ = rustix::net::shutdown(&sock, rustix::net::Shutdown::Both);
        PortEvent::Silent { vf }
    };
    if events.send(event).is_ok() {
        wake.notify_one();
    }
}
