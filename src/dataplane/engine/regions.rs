//! NF memory and VF ownership on the engine: registering an NF's socket for a VF,
//! detaching and releasing it, and the slots of the memory regions NFs map.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nfhost_sys::SharedMemory;

use super::attach::read_socket;
use super::memif::read_memif;
use super::{Engine, EngineError};
use crate::dataplane::port::{Face, Port, RegionSlot};
use crate::nic::iommu::Mapping;
use crate::nic::{Owner, RegionId, VfId};

impl Engine {
    /// Registers an NF's socket for `vf` (assigning the VF to `owner` if free). The NF
    /// then attaches with `Hello { token }` (native face), or a memif client sets up
    /// with `token` as its secret (memif face).
    pub fn attach(
        &mut self,
        vf: VfId,
        owner: Owner,
        token: String,
        config: String,
        sock: OwnedFd,
        face: Face,
    ) -> Result<(), EngineError> {
        if self.port(vf).is_some() {
            self.detach(vf);
        }
        self.nic.assign(vf, owner.clone())?;
        rustix::io::ioctl_fionbio(&sock, true).map_err(|e| EngineError::Socket(e.into()))?;
        let reader = sock.try_clone().map_err(EngineError::Socket)?;
        self.epoch += 1;
        let epoch = self.epoch;
        let events = self.events.clone();
        let wake = self.wake.clone();
        match face {
            Face::Native => tokio_uring::spawn(read_socket(vf, epoch, reader, events, wake)),
            Face::Memif => tokio_uring::spawn(read_memif(vf, epoch, reader, events, wake)),
        };
        let mut port = Port::new(vf, owner, token, config.into(), sock, face);
        port.epoch = epoch;
        if let Some(slot) = self.ports.get_mut(vf.index()) {
            *slot = Some(port);
        }
        Ok(())
    }

    /// Detaches the NF on `vf` and scrubs the VF: DMA stopped, rings and frames
    /// dropped, mappings and vectors removed. The VF stays assigned to its owner (for
    /// a restart); [`Engine::release`] gives it back.
    pub fn detach(&mut self, vf: VfId) -> Option<(Owner, Vec<Mapping>)> {
        self.detach_for(vf, Next::Successor)
    }

    /// [`Engine::detach`], for a VF whose NF gets a successor or none (the VF is
    /// released: its frames in a shared chain need no settling).
    fn detach_for(&mut self, vf: VfId, next: Next) -> Option<(Owner, Vec<Mapping>)> {
        self.stop_polling(vf);
        // What its NF put on a hop it fed directly, up to now.
        self.count_hop(vf);
        let port = self.ports.get_mut(vf.index())?.take()?;
        let settle = next == Next::Successor;
        self.hop_detached(vf, port.hop.feeds, port.hop.fed_by, settle);
        self.active.retain(|v| *v != vf);
        // Whoever waits for this NF's answer to a configuration, or for it to enable
        // DMA, gets none.
        self.answers.remove(&vf);
        self.activation.retain(|(v, _)| *v != vf);
        // Wake the doorbell reader so it sees the port is gone and exits.
        if let Some(doorbell) = &port.doorbell {
            let _ = doorbell.notify();
        }
        // End the connection for both sides: the socket reader (which holds a
        // duplicate) sees the end and exits, and a live NF learns it has no VF.
        let _ = rustix::net::shutdown(&port.sock, rustix::net::Shutdown::Both);
        let mut mappings = self.unmap_memif(vf);
        mappings.extend(self.nic.scrub(vf).unwrap_or_default());
        for m in &mappings {
            self.unref_region(m.region);
        }
        // In a shared chain its frames stay recorded as this VF's (settled first if
        // it fed or was fed directly): its next NF gets them back at `Hello`.
        Some((port.owner, mappings))
    }

    /// Detaches and unassigns a VF (its NF was deleted).
    pub fn release(&mut self, vf: VfId) -> Result<(), EngineError> {
        self.unlisten(vf);
        self.detach_for(vf, Next::None);
        let removed = self.nic.release(vf)?;
        for m in &removed.mappings {
            self.unref_region(m.region);
        }
        Ok(())
    }

    pub(super) fn add_region(&mut self, memory: Arc<SharedMemory>) -> RegionId {
        let slot = RegionSlot {
            memory,
            mappings: 0,
        };
        if let Some(i) = self.regions.iter().position(Option::is_none) {
            self.regions[i] = Some(slot);
            return RegionId(i as u64);
        }
        self.regions.push(Some(slot));
        RegionId(self.regions.len() as u64 - 1)
    }

    pub(super) fn unref_region(&mut self, id: RegionId) {
        if let Some(entry) = self.regions.get_mut(id.0 as usize) {
            if let Some(slot) = entry.as_mut() {
                slot.mappings = slot.mappings.saturating_sub(1);
                if slot.mappings == 0 {
                    *entry = None;
                }
            }
        }
    }
}

/// Whether a detached VF's NF gets a successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A restart, or the next external process.
    Successor,
    /// None: the VF is released.
    None,
}
