//! Direct hops in `shared` chains (ARCHITECTURE.md §4): the NF of hop i feeds hop
//! i + 1 itself, on that hop's fill and rx rings, so a hop inside a chain costs the
//! engine nothing per packet. The engine grants and withdraws these links, counts
//! what crosses them from the feeding NF's `HOP_*` registers, and settles who holds
//! which frame when a hop stops (the swaps of a direct hop are not seen one by one).
//!
//! A link changes only in the answer to the feeding NF's `GetPeer`, which it sends
//! between batches, holding no frame: so no frame is ever on two producers' rings.
//! The engine asks for that question by changing the `PEER` register and waking
//! the NF. When a hop that took part in a link stops, every other NF of the chain
//! that can feed directly is asked the same way, and their answers are held until
//! all of them wait: then each frame of the chain is either on one of their rings
//! or was the stopped NF's, and the ownership table is rebuilt from the rings.

use std::os::fd::AsFd;

use nfhost_sys::attach::pb::Peer;
use nfhost_sys::attach::server;
use nfhost_sys::{IrqVector, RingKind};

use super::Engine;
use super::request::ChainFrames;
use crate::dataplane::counters::{Counters, Drop as DropReason};
use crate::dataplane::port::{Face, Port, PortState, Queues};
use crate::nic::iommu::DomainId;
use crate::nic::{Decision, Iova, TxSteer, VfId, VlanTag};

/// A chain whose NFs' answers are held until all of them wait.
#[derive(Debug, Default)]
pub(super) struct Settle {
    /// The hops that stopped while taking part in direct hops.
    stopped: Vec<VfId>,
}

impl Engine {
    /// The shared domain `vf` is a hop of, and the chain's hops.
    fn shared_chain(&self, vf: VfId) -> Option<(DomainId, Vec<VfId>)> {
        let domain = self.nic.iommu().domain_of(vf)?;
        Some((domain, self.chain_hops(domain)?))
    }

    /// The hops of the shared chain of `domain`, in order.
    fn chain_hops(&self, domain: DomainId) -> Option<Vec<VfId>> {
        self.umems.get(&domain).map(|u| u.hops().to_vec())
    }

    /// Whether `vf` has an NF that can take part in a direct hop now: attached
    /// natively, enabled, asked `GetPeer`, rx vector bound.
    fn can_link(&self, vf: VfId) -> bool {
        self.is_active(vf)
            && self.port(vf).is_some_and(|p| {
                p.state == PortState::Attached
                    && p.face == Face::Native
                    && p.hop.capable
                    && p.irq[usize::from(IrqVector::RX.index())].is_some()
            })
    }

    /// The hop `vf`'s NF should feed directly now, and the TCI of the rx
    /// descriptors (what the switch would give a frame `vf` sends to it).
    fn wanted_peer(&mut self, vf: VfId) -> Option<(VfId, u16)> {
        let (domain, hops) = self.shared_chain(vf)?;
        if !self.direct_hops || self.settling.contains_key(&domain) {
            return None;
        }
        let next = *hops.get(hops.iter().position(|h| *h == vf)? + 1)?;
        if self.nic.veb().tx_rule(vf) != Some(TxSteer::ToVf(next)) {
            return None;
        }
        if !self.can_link(vf) || !self.can_link(next) {
            return None;
        }
        let mac = self.nic.vf(vf).ok()?.mac().0;
        let mut header = [0u8; 14];
        header[..6].copy_from_slice(&mac);
        header[6..12].copy_from_slice(&mac);
        header[12..].copy_from_slice(&0x0800u16.to_be_bytes());
        match self.nic.switch_from_vf(vf, &header) {
            Decision::Forward(f) if f.uplink.is_none() && f.vfs.iter().eq([next]) => {
                Some((next, f.vlan.map_or(0, VlanTag::tci)))
            }
            _ => None,
        }
    }

    /// The NF on `vf` asked `GetPeer` (request `id`): it stopped feeding any hop
    /// and waits for the answer.
    pub(super) fn on_get_peer(&mut self, vf: VfId, id: u64) {
        let Some(port) = self.port_mut(vf) else {
            return;
        };
        port.hop.capable = true;
        self.unlink(vf);
        let Some((domain, _)) = self.shared_chain(vf) else {
            self.answer_peer(vf, id);
            return;
        };
        if self.settling.contains_key(&domain) {
            if let Some(port) = self.port_mut(vf) {
                port.hop.pending = Some(id);
            }
            self.try_settle(domain);
            return;
        }
        self.answer_peer(vf, id);
        // This NF may complete a link for its upstream hop.
        self.relink(domain);
    }

    /// Answers `vf`'s `GetPeer` with the hop it should feed now, and makes the
    /// link if there is one.
    fn answer_peer(&mut self, vf: VfId, id: u64) {
        let wanted = self.wanted_peer(vf);
        if wanted.is_some() {
            // What the NF sent before it asked goes out before it feeds the hop
            // itself, so the hop's rx ring never has two producers. What the hop
            // has no room for stays, and is refused once the link stands.
            let now = self.now();
            while self.vf_tx(vf, now) > 0 {}
            self.raise_interrupts(now);
        }
        let Some(port) = self.port(vf) else { return };
        let generation = port.hop.generation;
        // Counting starts from what the registers say before the answer goes out:
        // the NF may feed (and count) the moment it has it.
        let counted = port
            .bar
            .as_ref()
            .map(|b| b.hop_counts())
            .unwrap_or_default();
        let hop = wanted.and_then(|(next, tci)| {
            let p = self.port(next)?;
            Some((
                next,
                tci,
                p.bar.as_ref()?,
                p.irq[usize::from(IrqVector::RX.index())].as_ref()?,
            ))
        });
        let linked = hop.as_ref().map(|h| h.0);
        let sent = match hop {
            Some((next, tci, bar, irq)) => {
                let peer = Peer {
                    generation,
                    vf_index: u32::from(next.0),
                    vlan: u32::from(tci),
                };
                server::reply_peer(port.sock.as_fd(), id, peer, bar.fd(), irq.as_fd())
            }
            None => server::reply_no_peer(port.sock.as_fd(), id, generation),
        };
        if let Err(error) = sent {
            tracing::warn!(%vf, %error, "nic-engine: GetPeer answer could not be sent");
            return;
        }
        let Some(next) = linked else { return };
        if let Some(port) = self.port_mut(vf) {
            port.hop.feeds = Some(next);
            port.hop.counted = counted;
        }
        if let Some(port) = self.port_mut(next) {
            port.hop.fed_by = Some(vf);
        }
        // The NIC no longer looks at the hop's fill ring: it is the feeding NF's.
        tracing::debug!(%vf, %next, "nic-engine: direct hop");
    }

    /// Asks every NF of `domain`'s chain whose link should change to ask again.
    pub(super) fn relink(&mut self, domain: DomainId) {
        let Some(hops) = self.chain_hops(domain) else {
            return;
        };
        for vf in hops {
            let stands = self
                .port(vf)
                .map(|p| (p.hop.capable, p.hop.feeds, p.hop.pending));
            let Some((true, feeds, None)) = stands else {
                continue;
            };
            if self.wanted_peer(vf).map(|(next, _)| next) != feeds {
                self.ask_again(vf);
            }
        }
    }

    /// Publishes a new `PEER` generation to `vf` and wakes its NF, which then
    /// asks `GetPeer` between two batches.
    fn ask_again(&mut self, vf: VfId) {
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return;
        };
        let Some(bar) = port.bar.as_ref() else { return };
        port.hop.generation = port.hop.generation.wrapping_add(1);
        bar.set_peer_generation(port.hop.generation);
        if port.rx_since_irq == 0 && port.tx_since_irq == 0 {
            self.touched.push(vf);
        }
        port.rx_since_irq += 1;
        let now = self.now();
        self.raise_interrupts(now);
    }

    /// Ends the link `vf` feeds, if any: what crossed it is counted, and the hop's
    /// fill and rx rings are the NIC's again, taken up where the NF left them.
    fn unlink(&mut self, vf: VfId) {
        self.count_hop(vf);
        let Some(next) = self.port_mut(vf).and_then(|p| p.hop.feeds.take()) else {
            return;
        };
        self.give_back_rings(next);
    }

    /// The NIC takes `vf`'s fill and rx rings back from the NF that fed it.
    fn give_back_rings(&mut self, vf: VfId) {
        let Some(port) = self.port_mut(vf) else {
            return;
        };
        port.hop.fed_by = None;
        let (Some(bar), Some(Queues::Native(rings))) = (port.bar.as_ref(), port.queues.as_mut())
        else {
            return;
        };
        match (bar.fill_consumer(), bar.rx_producer()) {
            (Ok(fill), Ok(rx)) => {
                rings.fill = fill;
                rings.rx = rx;
            }
            (Err(error), _) | (_, Err(error)) => {
                // The feeding NF left the indices impossible: the queue halts
                // until the NF resets, as for any ring error.
                tracing::warn!(%vf, %error, "nic-engine: a direct hop left a ring broken");
                port.state = PortState::Halted;
                self.counters.vf(vf).ring_errors.add(1);
            }
        }
    }

    /// Adds what the NF on `vf` counted on its direct hop since the last time to
    /// both VFs' counters.
    pub(super) fn count_hop(&mut self, vf: VfId) {
        count_link(&mut self.ports, &self.counters, vf);
    }

    /// Counts every direct hop (before counters are published). Only the hops of
    /// shared chains are looked at: other attached VFs cost nothing here.
    pub(super) fn count_hops(&mut self) {
        let Engine {
            umems,
            ports,
            counters,
            ..
        } = self;
        for umem in umems.values() {
            for &vf in umem.hops() {
                count_link(ports, counters, vf);
            }
        }
    }

    /// The NF on `vf` detached (its port is already gone; `feeds` and `fed_by`
    /// were its links). Its neighbours stop using it, and if it took part in a
    /// direct hop and its VF gets another NF (`settle`), the chain settles its
    /// frames.
    pub(super) fn hop_detached(
        &mut self,
        vf: VfId,
        feeds: Option<VfId>,
        fed_by: Option<VfId>,
        settle: bool,
    ) {
        let Some((domain, hops)) = self.shared_chain(vf) else {
            return;
        };
        if let Some(next) = feeds {
            // Its process is gone: nobody produces on the hop's rx ring now.
            self.give_back_rings(next);
        }
        // The NF that fed it (`fed_by`) feeds a ring nobody reads now: it is asked
        // again below, and its link ends when it asks.
        let linked = feeds.is_some() || fed_by.is_some();
        if !settle || (!linked && !self.settling.contains_key(&domain)) {
            self.relink(domain);
            return;
        }
        tracing::info!(%vf, "nic-engine: a hop fed directly stopped; settling the chain's frames");
        self.settling.entry(domain).or_default().stopped.push(vf);
        for hop in hops {
            let asked = self
                .port(hop)
                .is_some_and(|p| p.hop.capable && p.hop.pending.is_none());
            if asked {
                self.ask_again(hop);
            }
        }
        self.try_settle(domain);
    }

    /// Every shared chain's frames, for a snapshot.
    pub(super) fn chain_frames(&self) -> Vec<ChainFrames> {
        self.umems
            .iter()
            .map(|(domain, umem)| {
                let hops = umem.hops().to_vec();
                let recorded = hops.iter().map(|h| (*h, umem.count_of(*h))).collect();
                let mut on_rings = Vec::new();
                let mut links = Vec::new();
                for &vf in &hops {
                    let Some(port) = self.port(vf) else { continue };
                    if let Some(next) = port.hop.feeds {
                        links.push((vf, next));
                    }
                    let Some(bar) = port.bar.as_ref() else {
                        continue;
                    };
                    on_rings.push((vf, frames_on_rings(vf, bar)));
                }
                ChainFrames {
                    hops,
                    recorded,
                    on_rings,
                    links,
                    settling: self.settling.contains_key(domain),
                }
            })
            .collect()
    }

    /// Whether `vf` may attach now: not while its chain settles (its frames are
    /// not known yet).
    pub(super) fn settling(&self, vf: VfId) -> bool {
        self.nic
            .iommu()
            .domain_of(vf)
            .is_some_and(|d| self.settling.contains_key(&d))
    }

    /// Finishes settling `domain` once every NF of the chain that can feed
    /// directly waits for its answer: rebuilds frame ownership from their rings
    /// and answers them.
    fn try_settle(&mut self, domain: DomainId) {
        let Some(hops) = self.chain_hops(domain) else {
            return;
        };
        let waiting: Vec<VfId> = hops
            .iter()
            .copied()
            .filter(|h| self.port(*h).is_some_and(|p| p.hop.capable))
            .collect();
        if waiting
            .iter()
            .any(|h| self.port(*h).is_some_and(|p| p.hop.pending.is_none()))
        {
            return;
        }
        let Some(settle) = self.settling.remove(&domain) else {
            return;
        };
        let mut holders = Vec::with_capacity(waiting.len());
        for &vf in &waiting {
            let Some(bar) = self.port(vf).and_then(|p| p.bar.as_ref()) else {
                continue;
            };
            let frames: Vec<Iova> = frames_on_rings(vf, bar).into_iter().map(Iova).collect();
            holders.push((vf, frames));
        }
        if let Some(umem) = self.umems.get_mut(&domain) {
            umem.settle(&holders, &settle.stopped);
            for vf in &settle.stopped {
                tracing::info!(%vf, frames = umem.count_of(*vf), "nic-engine: settled: frames kept for the stopped hop's next NF");
            }
        }
        for vf in waiting {
            if let Some(id) = self.port_mut(vf).and_then(|p| p.hop.pending.take()) {
                self.answer_peer(vf, id);
            }
        }
        self.relink(domain);
    }
}

/// Adds what the NF on `vf` counted on its direct hop since the last time to both
/// VFs' counters.
fn count_link(ports: &mut [Option<Port>], counters: &Counters, vf: VfId) {
    let Some(port) = ports.get_mut(vf.index()).and_then(Option::as_mut) else {
        return;
    };
    let (Some(next), Some(bar)) = (port.hop.feeds, port.bar.as_ref()) else {
        return;
    };
    let now = bar.hop_counts();
    let d = now.since(port.hop.counted);
    port.hop.counted = now;
    let sent = counters.vf(vf);
    sent.tx_packets.add(d.frames);
    sent.tx_bytes.add(d.bytes);
    let got = counters.vf(next);
    got.rx_packets.add(d.frames);
    got.rx_bytes.add(d.bytes);
    got.handed_over.add(d.frames);
    got.drop(DropReason::NoBuffer, d.no_room);
}

/// The frames on the four rings of `vf`'s BAR, by IOVA. A broken ring (indices
/// that cannot be) holds none, and is logged.
fn frames_on_rings(vf: VfId, bar: &nfhost_sys::Bar<nfhost_sys::Nic>) -> Vec<u64> {
    let mut frames = Vec::new();
    for ring in [
        RingKind::Fill,
        RingKind::Rx,
        RingKind::Tx,
        RingKind::Completion,
    ] {
        match bar.ring_frames(ring) {
            Ok(on) => frames.extend(on),
            Err(error) => tracing::warn!(%vf, ?ring, %error, "nic-engine: a ring is broken"),
        }
    }
    frames
}
