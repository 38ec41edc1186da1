//! The memif face of an external NF's endpoint: nfhost as the memif server
//! (protocol 2.0, `vf_abi::memif`) on `memif.sock`, interface id 0, with the VF's
//! secret as memif's secret (ARCHITECTURE.md §2, "memif").
//!
//! The client's set-up maps onto the VF contract, checked as the attach protocol
//! checks its requests:
//!
//! | client sends | nfhost does |
//! |---|---|
//! | `INIT{version, id, mode, secret}` | version 2.0, id 0, Ethernet, the secret compared in constant time; a wrong one is refused, counted (`attach_refused`) and logged without it |
//! | `ADD_REGION{index, size}` + memfd | a DMA mapping of the region in the VF's domain at [`memif_iova`](crate::dataplane::queues::memif_iova), validated as `MapDma` (sealed memfd, size within it, quota, overlap) |
//! | `ADD_RING{S2M or M2S, region, offset, log2 size}` + eventfd | the ring inside its region; S2M's eventfd is the VF's doorbell, M2S's is bound to the rx vector through interrupt remapping |
//! | `CONNECT` | cookies checked, bus mastering on, `CONNECTED` |
//! | `DISCONNECT` | the VF is scrubbed, as when the socket closes |
//!
//! Each set-up message is acknowledged, as DPDK's server does; anything out of
//! order or invalid is answered `DISCONNECT` with the reason, counted as a refused
//! attach, and the VF is scrubbed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use nfhost_sys::{EventFd, M2sRing, MemifRing, S2mRing, SharedMemory};
use tokio::sync::{Notify, mpsc};
use vf_abi::memif::{
    MAX_LOG2_RING_SIZE, MODE_ETHERNET, MSG_LEN, Msg, RING_FLAG_S2M, SECRET_LEN, VERSION,
};

use super::attach::{PortEvent, Read, forward};
use super::event_loop::read_doorbell;
use super::{Engine, EngineEvent};
use crate::dataplane::port::PortState;
use crate::dataplane::queues::{MemifRings, Queues, memif_base, memif_iova};
use crate::nic::iommu::PAGE_SIZE;
use crate::nic::{Iova, Perms, Region, TargetId, Vector, VfId};

/// Highest region index a client may add.
const MAX_REGION: u16 = crate::dataplane::queues::MEMIF_MAX_REGIONS - 1;
/// Largest ring offered, as log2 of its slots.
const MAX_LOG2: u8 = 14;
/// A memif region is at most 4 GiB (its offsets are 32 bits).
const MAX_REGION_SIZE: u64 = 1 << 32;

/// The `HELLO` nfhost sends first on every memif connection.
pub(super) fn hello() -> Msg {
    Msg::Hello {
        name: "nfhost".into(),
        min_version: VERSION,
        max_version: VERSION,
        max_region: MAX_REGION,
        max_m2s_ring: 0,
        max_s2m_ring: 0,
        max_log2_ring_size: MAX_LOG2.min(MAX_LOG2_RING_SIZE),
    }
}

/// Sends one memif message (without fds).
pub(super) fn send(sock: BorrowedFd<'_>, msg: &Msg) -> Result<(), nfhost_sys::FdError> {
    nfhost_sys::send_with_fds(sock, &msg.encode(), &[])
}

/// Tells a client why it is refused (`DISCONNECT`); it may be gone already.
pub(super) fn disconnect(sock: BorrowedFd<'_>, reason: &str) {
    let bye = Msg::Disconnect {
        code: 0,
        reason: reason.to_owned(),
    };
    let _ = send(sock, &bye);
}

/// Where a client's set-up stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for `INIT`.
    #[default]
    Init,
    /// Regions and rings arriving.
    Setup,
    /// `CONNECTED` sent: frames flow.
    Connected,
}

/// A ring announced with `ADD_RING`.
struct RingSpec {
    ring: MemifRing,
    eventfd: EventFd,
}

/// A memif client's set-up on one VF.
#[derive(Default)]
pub(super) struct Setup {
    stage: Stage,
    /// The regions added, by index, with the bytes mapped for each.
    regions: Vec<(Arc<SharedMemory>, u64)>,
    m2s: Option<RingSpec>,
    s2m: Option<RingSpec>,
}

/// Why a client is refused: the `DISCONNECT` reason (at most 95 bytes).
type Refusal = String;

impl Engine {
    /// A memif client's message (or a broken one) on `vf`.
    pub(super) fn on_memif(&mut self, vf: VfId, msg: Result<Msg, String>, fds: Vec<OwnedFd>) {
        let outcome = msg.and_then(|msg| self.memif_step(vf, msg, fds));
        match outcome {
            Ok(Some(reply)) => {
                let sent = self.port(vf).map(|p| send(p.sock.as_fd(), &reply));
                if let Some(Err(error)) = sent {
                    tracing::warn!(%vf, %error, "nic-engine: a memif reply could not be sent");
                }
            }
            Ok(None) => {}
            Err(reason) => self.refuse_memif(vf, &reason),
        }
    }

    /// Refuses the memif client on `vf`: `DISCONNECT` with `reason`, counted,
    /// logged, and the VF scrubbed.
    fn refuse_memif(&mut self, vf: VfId, reason: &str) {
        self.counters.vf(vf).attach_refused.add(1);
        let Some(port) = self.port(vf) else { return };
        tracing::warn!(%vf, owner = %port.owner.0, %reason, "nic-engine: refused a memif client");
        disconnect(port.sock.as_fd(), reason);
        let connected = self
            .memif
            .get(&vf)
            .is_some_and(|s| s.stage == Stage::Connected);
        self.end_memif(vf, connected);
    }

    /// Scrubs `vf` after its memif client went away or was refused; tells the
    /// control plane if it had connected.
    fn end_memif(&mut self, vf: VfId, connected: bool) {
        if let Some((owner, mappings)) = self.detach(vf) {
            if connected {
                self.shared.push_event(EngineEvent::Detached {
                    vf,
                    owner,
                    mappings: mappings.len(),
                });
            }
        }
    }

    /// One message of the set-up; the reply to send, if any.
    fn memif_step(
        &mut self,
        vf: VfId,
        msg: Msg,
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Msg>, Refusal> {
        let stage = self.memif.get(&vf).map(|s| s.stage).unwrap_or_default();
        if fds.len() != msg.fds() {
            return Err(format!(
                "{} fds with a message that carries {}",
                fds.len(),
                msg.fds()
            ));
        }
        match (stage, msg) {
            (
                Stage::Init,
                Msg::Init {
                    version,
                    id,
                    mode,
                    secret,
                    name,
                },
            ) => {
                if version != VERSION {
                    return Err("Incompatible memif version".into());
                }
                if id != 0 {
                    return Err(format!("ID {id} not found (nfhost serves id 0)"));
                }
                if mode != MODE_ETHERNET {
                    return Err("Only ethernet mode supported".into());
                }
                if !self.memif_secret_matches(vf, &secret) {
                    return Err("Incorrect secret".into());
                }
                tracing::info!(%vf, client = %name, "nic-engine: memif client accepted");
                self.memif.entry(vf).or_default().stage = Stage::Setup;
                Ok(Some(Msg::Ack))
            }
            (Stage::Setup, Msg::AddRegion { index, size }) => {
                self.memif_region(vf, index, size, fds)?;
                Ok(Some(Msg::Ack))
            }
            (
                Stage::Setup,
                Msg::AddRing {
                    flags,
                    index,
                    region,
                    offset,
                    log2_ring_size,
                    private_hdr_size,
                },
            ) => {
                if index != 0 {
                    return Err(format!("Invalid ring index {index} (one queue pair)"));
                }
                if private_hdr_size != 0 {
                    return Err("private headers are not supported".into());
                }
                if log2_ring_size > MAX_LOG2 {
                    return Err(format!(
                        "ring of 2^{log2_ring_size} slots is over the 2^{MAX_LOG2} offered"
                    ));
                }
                let setup = self.memif.entry(vf).or_default();
                let (memory, _) = setup
                    .regions
                    .get(usize::from(region))
                    .ok_or_else(|| format!("ring in region {region}, which was not added"))?;
                let ring = MemifRing::new(memory.clone(), offset as usize, log2_ring_size)
                    .map_err(|e| format!("bad ring: {e}"))?;
                let eventfd = fds
                    .into_iter()
                    .next()
                    .map(EventFd::from_owned)
                    .ok_or("Missing interrupt fd")?
                    .map_err(|e| format!("bad interrupt fd: {e}"))?;
                let slot = if flags & RING_FLAG_S2M != 0 {
                    &mut setup.s2m
                } else {
                    &mut setup.m2s
                };
                if slot.is_some() {
                    return Err("ring added twice".into());
                }
                *slot = Some(RingSpec { ring, eventfd });
                Ok(Some(Msg::Ack))
            }
            (Stage::Setup, Msg::Connect { if_name }) => {
                self.memif_connect(vf)?;
                tracing::info!(%vf, interface = %if_name, "nic-engine: memif client connected");
                Ok(Some(Msg::Connected {
                    if_name: format!("pf0-vf{}", vf.0),
                }))
            }
            (_, Msg::Disconnect { reason, .. }) => {
                tracing::info!(%vf, %reason, "nic-engine: memif client disconnected");
                self.end_memif(vf, stage == Stage::Connected);
                Ok(None)
            }
            (_, Msg::Ack) => Ok(None),
            (stage, msg) => Err(format!("Unexpected message {msg:?} in stage {stage:?}")
                .chars()
                .take(95)
                .collect()),
        }
    }

    /// Whether `INIT`'s secret (NUL-padded, as DPDK compares it) is the VF's.
    fn memif_secret_matches(&self, vf: VfId, secret: &[u8; SECRET_LEN]) -> bool {
        let given = secret
            .iter()
            .position(|b| *b == 0)
            .map_or(&secret[..], |end| &secret[..end]);
        self.port(vf).is_some_and(|p| p.token_matches(given))
    }

    /// `ADD_REGION`: maps the client's memfd in the VF's domain.
    fn memif_region(
        &mut self,
        vf: VfId,
        index: u16,
        size: u64,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Refusal> {
        let added = self.memif.get(&vf).map_or(0, |s| s.regions.len());
        if usize::from(index) != added || index > MAX_REGION {
            return Err(format!("Invalid region index {index}"));
        }
        let fd = fds.into_iter().next().ok_or("Missing region fd")?;
        let memory =
            Arc::new(SharedMemory::from_fd(fd).map_err(|e| format!("bad region memfd: {e}"))?);
        let len = memory.len() as u64;
        if size == 0 || size > len || size > MAX_REGION_SIZE {
            return Err(format!(
                "region {index} of {size} bytes is outside its {len}-byte memfd"
            ));
        }
        let id = self.add_region(memory.clone());
        let size = size.next_multiple_of(PAGE_SIZE);
        let mapped = self.nic.map_dma(
            vf,
            Iova(memif_iova(memif_base(vf.0), index, 0)),
            size,
            Region {
                id,
                len: len.next_multiple_of(PAGE_SIZE),
            },
            0,
            Perms::RW,
        );
        match mapped {
            Ok(()) => {
                if let Some(slot) = self.regions[id.0 as usize].as_mut() {
                    slot.mappings += 1;
                }
                self.memif
                    .entry(vf)
                    .or_default()
                    .regions
                    .push((memory, size));
                Ok(())
            }
            Err(e) => {
                self.regions[id.0 as usize] = None;
                Err(format!("region {index} refused: {e}"))
            }
        }
    }

    /// `CONNECT`: the rings become the VF's queues and DMA starts.
    fn memif_connect(&mut self, vf: VfId) -> Result<(), Refusal> {
        let setup = self.memif.entry(vf).or_default();
        let (Some(m2s), Some(s2m)) = (setup.m2s.take(), setup.s2m.take()) else {
            return Err("CONNECT before both rings were added".into());
        };
        for spec in [&m2s, &s2m] {
            spec.ring.check_cookie().map_err(|e| e.to_string())?;
        }
        let owner = self
            .port(vf)
            .map(|p| p.owner.clone())
            .ok_or("port vanished")?;
        let target = TargetId(u32::from(vf.0) << 8);
        self.nic
            .bind_irq(vf, Vector::RX, &owner, target)
            .map_err(|e| e.to_string())?;
        let doorbell = Arc::new(s2m.eventfd);
        let Some(port) = self.port_mut(vf) else {
            return Err("port vanished".into());
        };
        port.queues = Some(Queues::Memif(MemifRings {
            base: memif_base(vf.0),
            m2s: M2sRing::new(m2s.ring),
            s2m: S2mRing::new(s2m.ring),
        }));
        port.irq[usize::from(Vector::RX.0)] = Some(m2s.eventfd);
        port.doorbell = Some(doorbell.clone());
        port.state = PortState::Attached;
        let epoch = port.epoch;
        tokio_uring::spawn(read_doorbell(doorbell, vf, epoch, self.doorbells.clone()));
        self.nic
            .set_bus_master(vf, true)
            .map_err(|e| e.to_string())?;
        if !self.active.contains(&vf) {
            self.active.push(vf);
        }
        self.start_polling(vf);
        self.activated(vf);
        if let Some(setup) = self.memif.get_mut(&vf) {
            setup.stage = Stage::Connected;
        }
        self.shared.push_event(EngineEvent::Attached { vf, owner });
        Ok(())
    }
}

impl Engine {
    /// Unmaps the regions of the memif client on `vf`, if it has one, and returns
    /// the mappings removed (part of a scrub: in a `shared` chain's domain, the
    /// scrub itself keeps the chain's mappings).
    pub(super) fn unmap_memif(&mut self, vf: VfId) -> Vec<crate::nic::iommu::Mapping> {
        let Some(setup) = self.memif.remove(&vf) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for (index, (_, size)) in setup.regions.iter().enumerate() {
            let iova = Iova(memif_iova(memif_base(vf.0), index as u16, 0));
            removed.extend(self.nic.unmap_dma(vf, iova, *size).unwrap_or_default());
        }
        removed
    }
}

/// Reads a memif client's control socket and forwards each message to the loop.
pub(super) async fn read_memif(
    vf: VfId,
    epoch: u64,
    sock: OwnedFd,
    events: mpsc::UnboundedSender<PortEvent>,
    wake: Rc<Notify>,
) {
    // One byte over a message, so that a longer one is seen as such.
    let mut buf = [0u8; MSG_LEN + 1];
    forward(vf, epoch, sock, events, wake, |fd| {
        let (msg, fds) = match nfhost_sys::recv_with_fds(fd, &mut buf, 1) {
            Ok((0, _)) => return Read::Closed,
            Ok((n, fds)) => (Msg::decode(&buf[..n]).map_err(|e| e.to_string()), fds),
            Err(nfhost_sys::FdError::Recv(rustix::io::Errno::AGAIN)) => return Read::WouldBlock,
            Err(e) => (Err(format!("unreadable message: {e}")), Vec::new()),
        };
        Read::Event(PortEvent::Memif {
            vf,
            epoch,
            msg,
            fds,
        })
    })
    .await;
}
