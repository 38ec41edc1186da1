//! The attach-protocol server: what an NF asks of its VF over its socket (ARCHITECTURE.md §2),
//! and the configuration mailbox the control plane posts to.

use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use nfhost_sys::attach::pb::HelloReply;
use nfhost_sys::attach::{Code, Command, ProtoError, server};
use nfhost_sys::{BarLayout, Desc, EventFd, SharedMemory, VfConfig};
use tokio::sync::{Notify, mpsc};

use super::event_loop::read_doorbell;
use super::request::{Posted, Reply as AnswerTo};
use super::{Engine, EngineEvent};
use crate::dataplane::port::{FRAME_SIZE, Face, PortState, Queues, Rings};
use crate::nic::{Iova, Link, NicError, Owner, Perms, Region, TargetId, Vector, VfId};

/// What an attach socket's reader task reports to the loop.
pub(super) enum PortEvent {
    Command {
        vf: VfId,
        epoch: u64,
        command: Command,
    },
    Bad {
        vf: VfId,
        epoch: u64,
        error: ProtoError,
    },
    Closed {
        vf: VfId,
        epoch: u64,
    },
    /// A connection on an external NF's endpoint that has spoken (see `endpoint`).
    Incoming {
        vf: VfId,
        sock: OwnedFd,
        face: Face,
    },
    /// A memif client's message (see `memif`), or why it could not be read.
    Memif {
        vf: VfId,
        epoch: u64,
        msg: Result<vf_abi::memif::Msg, String>,
        fds: Vec<OwnedFd>,
    },
    /// A connection on an external NF's endpoint that stayed silent, now closed.
    Silent {
        vf: VfId,
    },
}

enum Reply {
    Ok,
    Hello(HelloReply, Option<Arc<SharedMemory>>),
    Config(u32, String),
}

fn target_id(vf: VfId, vector: Vector) -> TargetId {
    TargetId(u32::from(vf.0) << 8 | u32::from(vector.0))
}

impl Engine {
    pub(super) fn on_port_event(&mut self, event: PortEvent) {
        let (vf, epoch) = match &event {
            PortEvent::Command { vf, epoch, .. }
            | PortEvent::Bad { vf, epoch, .. }
            | PortEvent::Memif { vf, epoch, .. }
            | PortEvent::Closed { vf, epoch } => (*vf, *epoch),
            PortEvent::Incoming { .. } => {
                if let PortEvent::Incoming { vf, sock, face } = event {
                    self.on_incoming(vf, sock, face);
                }
                return;
            }
            PortEvent::Silent { vf } => {
                self.on_silent(*vf);
                return;
            }
        };
        if self.port(vf).is_none_or(|p| p.epoch != epoch) {
            return; // From a socket that is no longer attached.
        }
        match event {
            PortEvent::Command { command, .. } => self.on_command(vf, command),
            PortEvent::Memif { msg, fds, .. } => self.on_memif(vf, msg, fds),
            PortEvent::Bad { error, .. } => {
                if let (Some(port), Some(id)) = (self.port(vf), error.message_id()) {
                    let _ = server::reply_error(
                        port.sock.as_fd(),
                        id,
                        Code::InvalidArgument,
                        &error.to_string(),
                    );
                }
            }
            PortEvent::Incoming { .. } | PortEvent::Silent { .. } => {}
            PortEvent::Closed { .. } => {
                if let Some((owner, mappings)) = self.detach(vf) {
                    self.shared.push_event(EngineEvent::Detached {
                        vf,
                        owner,
                        mappings: mappings.len(),
                    });
                }
            }
        }
    }

    fn on_command(&mut self, vf: VfId, command: Command) {
        let id = command.id();
        let attached = self
            .port(vf)
            .is_some_and(|p| p.state != PortState::AwaitHello);
        if let (Command::GetPeer { .. }, true) = (&command, attached) {
            // Answered now or, while the chain settles, later.
            self.on_get_peer(vf, id);
            return;
        }
        let hello = matches!(command, Command::Hello { .. });
        let result = self.execute(vf, command);
        let denied = hello && matches!(result, Err((Code::PermissionDenied, _)));
        let Some(port) = self.port(vf) else { return };
        let sent = match result {
            Ok(Reply::Ok) => server::reply_ok(port.sock.as_fd(), id),
            Ok(Reply::Hello(reply, umem)) => {
                let (Some(bar), Some(doorbell)) = (port.bar.as_ref(), port.doorbell.as_ref())
                else {
                    return;
                };
                let umem_fd = umem.as_ref().map(|u| u.fd());
                server::reply_hello(
                    port.sock.as_fd(),
                    id,
                    &reply,
                    bar.fd(),
                    doorbell.as_fd(),
                    umem_fd,
                )
            }
            Ok(Reply::Config(generation, config)) => {
                server::reply_config(port.sock.as_fd(), id, generation, &config)
            }
            Err((code, message)) => server::reply_error(port.sock.as_fd(), id, code, &message),
        };
        if let Err(error) = sent {
            // The NF is not reading its socket (its reader task will see the
            // close), or the reply could not be built.
            tracing::warn!(%vf, %error, "nic-engine: reply could not be sent");
        }
        if denied {
            // No second guess on the same connection.
            self.refuse_hello(vf);
        }
    }

    fn execute(&mut self, vf: VfId, command: Command) -> Result<Reply, (Code, String)> {
        let refuse = |code: Code, e: &dyn std::fmt::Display| (code, e.to_string());
        let owner = self
            .port(vf)
            .map(|p| p.owner.clone())
            .ok_or((Code::FailedPrecondition, format!("{vf} is not attached")))?;
        let attached = self
            .port(vf)
            .is_some_and(|p| p.state != PortState::AwaitHello);
        match command {
            Command::Hello {
                abi_version, token, ..
            } => {
                if attached {
                    return Err((
                        Code::FailedPrecondition,
                        "already attached: send Reset or reconnect".into(),
                    ));
                }
                if abi_version != vf_abi::ABI_VERSION {
                    return Err((
                        Code::FailedPrecondition,
                        format!("ABI version {abi_version} is not supported (this NIC speaks 1)"),
                    ));
                }
                let right = self
                    .port(vf)
                    .is_some_and(|p| p.token_matches(token.as_bytes()));
                if !right {
                    return Err((
                        Code::PermissionDenied,
                        format!("wrong token or secret for {vf}"),
                    ));
                }
                if self.settling(vf) {
                    return Err((
                        Code::FailedPrecondition,
                        "the chain is settling its frames after a hop stopped: attach again".into(),
                    ));
                }
                self.hello(vf)
            }
            _ if !attached => Err((Code::FailedPrecondition, "send Hello first".into())),
            Command::MapDma {
                iova,
                size,
                offset,
                read,
                write,
                memory,
                ..
            } => {
                let memory = Arc::new(memory);
                let len = memory.len() as u64;
                let region = self.add_region(memory);
                let perms = Perms { read, write };
                match self.nic.map_dma(
                    vf,
                    Iova(iova),
                    size,
                    Region { id: region, len },
                    offset,
                    perms,
                ) {
                    Ok(()) => {
                        if let Some(slot) = self.regions[region.0 as usize].as_mut() {
                            slot.mappings += 1;
                        }
                        Ok(Reply::Ok)
                    }
                    Err(e) => {
                        self.regions[region.0 as usize] = None;
                        let code = match e {
                            NicError::Map(crate::nic::iommu::MapError::QuotaExceeded {
                                ..
                            })
                            | NicError::Map(crate::nic::iommu::MapError::TooManyMappings) => {
                                Code::ResourceExhausted
                            }
                            _ => Code::InvalidArgument,
                        };
                        Err(refuse(code, &e))
                    }
                }
            }
            Command::UnmapDma { iova, size, .. } => {
                let removed = self
                    .nic
                    .unmap_dma(vf, Iova(iova), size)
                    .map_err(|e| refuse(Code::InvalidArgument, &e))?;
                for m in removed {
                    self.unref_region(m.region);
                }
                Ok(Reply::Ok)
            }
            Command::SetIrq {
                vector, eventfd, ..
            } => {
                let v = Vector(vector);
                self.nic
                    .bind_irq(vf, v, &owner, target_id(vf, v))
                    .map_err(|e| refuse(Code::InvalidArgument, &e))?;
                if let Some(slot) = self
                    .port_mut(vf)
                    .and_then(|p| p.irq.get_mut(usize::from(vector)))
                {
                    *slot = Some(eventfd);
                }
                Ok(Reply::Ok)
            }
            Command::Enable { .. } => {
                self.nic
                    .set_bus_master(vf, true)
                    .map_err(|e| refuse(Code::Internal, &e))?;
                if !self.active.contains(&vf) {
                    self.active.push(vf);
                }
                self.start_polling(vf);
                self.activated(vf);
                Ok(Reply::Ok)
            }
            Command::Reset { .. } => {
                let linked = self
                    .port(vf)
                    .is_some_and(|p| p.hop.feeds.is_some() || p.hop.fed_by.is_some());
                if linked {
                    return Err((
                        Code::FailedPrecondition,
                        "the VF takes part in a direct hop: its rings are shared with \
                         another NF of the chain"
                            .into(),
                    ));
                }
                self.active.retain(|v| *v != vf);
                self.stop_polling(vf);
                self.nic.flr(vf).map_err(|e| refuse(Code::Internal, &e))?;
                if let Some(port) = self.port_mut(vf) {
                    port.queues = None;
                    if let Some(bar) = port.bar.as_ref() {
                        bar.reset_rings().map_err(|e| refuse(Code::Internal, &e))?;
                        port.queues = Some(Queues::Native(
                            Rings::open(bar).map_err(|e| refuse(Code::Internal, &e))?,
                        ));
                    }
                    port.state = PortState::Attached;
                    port.rx_since_irq = 0;
                }
                Ok(Reply::Ok)
            }
            Command::Report { json, .. } => {
                if json.len() > 64 * 1024 {
                    return Err((Code::InvalidArgument, "report over 64 KiB".into()));
                }
                if let Ok(mut reports) = self.shared.reports.lock() {
                    reports.insert(vf.0, json);
                }
                Ok(Reply::Ok)
            }
            Command::FetchConfig { .. } => self
                .port(vf)
                .and_then(|p| p.mailbox.clone())
                .map(|(generation, config)| Reply::Config(generation, config))
                .ok_or((
                    Code::FailedPrecondition,
                    "the mailbox is empty: nothing was posted".into(),
                )),
            Command::GetConfig { .. } => self
                .port(vf)
                .map(|p| Reply::Config(0, p.config.to_string()))
                .ok_or((Code::FailedPrecondition, format!("{vf} is not attached"))),
            // Handled in `on_command` (its answer may wait).
            Command::GetPeer { .. } => Err((Code::FailedPrecondition, "send Hello first".into())),
            Command::ConfigApplied {
                generation, error, ..
            } => {
                let Some(port) = self.port_mut(vf) else {
                    return Err((Code::FailedPrecondition, format!("{vf} is not attached")));
                };
                if port.mailbox.as_ref().is_none_or(|(g, _)| *g != generation) {
                    return Err((
                        Code::InvalidArgument,
                        format!("generation {generation} is not the one in the mailbox"),
                    ));
                }
                if let Some((_, config)) = port.mailbox.take() {
                    if error.is_empty() {
                        port.config = config.into();
                    }
                }
                if let Some((g, waiter)) = self.answers.remove(&vf) {
                    if g == generation {
                        waiter.send(if error.is_empty() { Ok(()) } else { Err(error) });
                    }
                }
                Ok(Reply::Ok)
            }
        }
    }

    fn hello(&mut self, vf: VfId) -> Result<Reply, (Code, String)> {
        let internal = |e: &dyn std::fmt::Display| (Code::Internal, e.to_string());
        let v = self.nic.vf(vf).map_err(|e| internal(&e))?;
        let admin = v.admin().clone();
        let mac = v.mac();
        let up = v.link(self.nic.pf().link()) == Link::Up;
        let layout = BarLayout::new(admin.rx_ring, admin.tx_ring).map_err(|e| internal(&e))?;
        let config = VfConfig {
            vf_index: vf.0,
            mac: mac.0,
            mtu: admin.mtu,
            link_up: up,
        };
        let doorbell = Arc::new(EventFd::new().map_err(|e| internal(&e))?);
        let umem = self
            .nic
            .iommu()
            .domain_of(vf)
            .and_then(|d| self.umems.get(&d))
            .map(|u| (u.memory().clone(), u.iova(), u.frames_of(vf)));
        let port = self
            .port_mut(vf)
            .ok_or((Code::Internal, "port vanished".into()))?;
        port.bring_up(layout, &config).map_err(|e| internal(&e))?;
        port.doorbell = Some(doorbell.clone());
        // A shared chain's frames are handed to the NF as completions: free frames.
        if let (Some((_, _, frames)), Some(Queues::Native(rings))) =
            (umem.as_ref(), port.queues.as_mut())
        {
            for iova in frames {
                let d = Desc {
                    iova: iova.0,
                    len: 0,
                    flags: 0,
                    vlan: 0,
                };
                rings.completion.produce(&d).map_err(|e| internal(&e))?;
            }
        }
        let epoch = port.epoch;
        let rung = self.doorbells.clone();
        tokio_uring::spawn(read_doorbell(doorbell, vf, epoch, rung));
        self.shared.push_event(EngineEvent::Attached {
            vf,
            owner: self
                .port(vf)
                .map(|p| p.owner.clone())
                .unwrap_or_else(|| Owner::new("?")),
        });
        let reply = HelloReply {
            vf_index: u32::from(vf.0),
            mac: mac.0.to_vec(),
            mtu: admin.mtu,
            rx_ring_size: admin.rx_ring,
            tx_ring_size: admin.tx_ring,
            frame_size: FRAME_SIZE,
            umem_iova: umem.as_ref().map_or(0, |u| u.1.0),
            umem_size: umem.as_ref().map_or(0, |u| u.0.len() as u64),
        };
        Ok(Reply::Hello(reply, umem.map(|u| u.0)))
    }

    /// Posts a new configuration in the mailbox of the NF on `vf` and rings its
    /// doorbell: the BAR's MAILBOX register gets a new generation, and the rx vector
    /// is raised through interrupt remapping (a masked NF is polling and sees the
    /// register itself). The NF fetches it, applies it in place or not, and says so
    /// with `ConfigApplied`: the answer goes to [`Posted::answer`]. `None` if no NF
    /// is attached and enabled.
    pub(super) fn post_config(&mut self, vf: VfId, config: String) -> Option<Posted> {
        if !self.is_active(vf) {
            return None;
        }
        let port = self.ports.get_mut(vf.index()).and_then(Option::as_mut)?;
        let bar = port.bar.as_ref()?;
        let generation = match bar.posted_mailbox().wrapping_add(1) {
            0 => 1,
            g => g,
        };
        bar.post_mailbox(generation);
        port.mailbox = Some((generation, config));
        if port.rx_since_irq == 0 && port.tx_since_irq == 0 {
            self.touched.push(vf);
        }
        port.rx_since_irq += 1;
        let (waiter, answer) = AnswerTo::channel();
        // A waiter for an older generation gets no answer: that one was superseded.
        self.answers.insert(vf, (generation, waiter));
        let now = self.now();
        self.raise_interrupts(now);
        Some(Posted { generation, answer })
    }
}

/// What one read of an NF's socket gave.
pub(super) enum Read {
    /// Something for the loop.
    Event(PortEvent),
    /// Nothing yet.
    WouldBlock,
    /// The peer closed the socket.
    Closed,
}

/// Reads an NF's socket with `read`, one message at a time as it becomes
/// readable, and forwards each event to the engine loop; then reports the socket
/// closed. Serves both faces: the attach protocol and memif.
pub(super) async fn forward(
    vf: VfId,
    epoch: u64,
    sock: OwnedFd,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: Rc<Notify>,
    mut read: impl FnMut(std::os::fd::BorrowedFd<'_>) -> Read,
) {
    if let Ok(afd) = nfhost_sys::async_fd(sock) {
        while let Ok(mut guard) = afd.readable().await {
            match read(afd.get_ref().as_fd()) {
                Read::Event(event) => {
                    let _ = events.send(event);
                    wake.notify_one();
                }
                Read::WouldBlock => guard.clear_ready(),
                Read::Closed => break,
            }
        }
    }
    let _ = events.send(PortEvent::Closed { vf, epoch });
    wake.notify_one();
}

/// Reads an NF's attach socket and forwards each request to the engine loop.
pub(super) async fn read_socket(
    vf: VfId,
    epoch: u64,
    sock: OwnedFd,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: Rc<Notify>,
) {
    forward(
        vf,
        epoch,
        sock,
        events,
        wake,
        |fd| match server::read_command(fd) {
            Ok(command) => Read::Event(PortEvent::Command { vf, epoch, command }),
            Err(ProtoError::WouldBlock) => Read::WouldBlock,
            Err(ProtoError::Closed) => Read::Closed,
            Err(error) => Read::Event(PortEvent::Bad { vf, epoch, error }),
        },
    )
    .await;
}
