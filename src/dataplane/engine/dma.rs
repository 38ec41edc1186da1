//! The per-packet DMA: a wire frame or a VF's transmit delivered into a VF's fill
//! buffer through the IOMMU (a copy), or handed over inside one shared domain.

use std::collections::HashMap;

use nfhost_sys::{Desc, SharedMemory};

use vf_abi::{COMPLETION_ERROR, TX_REFLECT};

use super::{Engine, GenWire};
use crate::dataplane::counters::{Counters, Drop as DropReason};
use crate::dataplane::host_wire::HostWire;
use crate::dataplane::port::{FRAME_SIZE, Port, PortState, Queues, RegionSlot};
use crate::dataplane::queues::Buffer;
use crate::dataplane::shared_umem::SharedUmem;
use crate::nic::iommu::DomainId;
use crate::nic::{Access, Decision, Iova, Micros, Nic, VfId, VlanTag};

/// The header bytes the NIC reads of a transmitted frame sampled for latency.
const HEADER_READ: usize = 128;
/// The header bytes the switch needs: Ethernet plus one 802.1Q tag.
const SWITCH_HEADER: usize = 18;
/// One egress frame in 64 is parsed for its latency stamp; the rest are only counted.
const SINK_SAMPLE: u64 = 64;

/// The engine's fields the per-packet path needs, borrowed separately so that a
/// frame's source memory and its destination VF can be used at once (no reference
/// counting per packet).
pub(super) struct Dma<'a> {
    nic: &'a mut Nic,
    ports: &'a mut [Option<Port>],
    regions: &'a [Option<RegionSlot>],
    pub(super) counters: &'a Counters,
    umems: &'a mut HashMap<DomainId, SharedUmem>,
    /// VFs that got frames since interrupts were last raised.
    touched: &'a mut Vec<VfId>,
}

/// The uplinks, borrowed next to [`Dma`]: frames come from and go to them.
pub(super) struct Uplink<'a> {
    pub(super) wire: Option<&'a mut GenWire>,
    pub(super) host: Option<&'a mut HostWire>,
    /// Where the generator writes a frame.
    pub(super) scratch: &'a mut [u8],
}

impl Engine {
    /// Splits the engine into the per-packet path's borrows and the uplinks.
    pub(super) fn dma(&mut self) -> (Dma<'_>, Uplink<'_>) {
        let Engine {
            nic,
            ports,
            regions,
            counters,
            umems,
            wire,
            host,
            scratch,
            touched,
            ..
        } = self;
        let dma = Dma {
            nic,
            ports,
            regions,
            counters,
            umems,
            touched,
        };
        let uplink = Uplink {
            wire: wire.as_mut(),
            host: host.as_mut(),
            scratch,
        };
        (dma, uplink)
    }
}

impl Dma<'_> {
    /// Switches one frame from the wire and delivers it. True if a receiver had no
    /// room (the frame was dropped as `no_buffer` or `ring_full` there).
    pub(super) fn receive_from_wire(&mut self, frame: &[u8]) -> bool {
        let mut backlogged = false;
        match self.nic.switch_from_wire(frame) {
            Decision::Drop(reason) => self.counters.wire.drop(reason.into(), 1),
            Decision::Forward(f) => {
                let tagged = f.vlan.is_some()
                    && crate::nic::FrameHeader::parse(frame).is_ok_and(|h| h.tag.is_some());
                let tci = f.vlan.map_or(0, VlanTag::tci);
                for vf in f.vfs.iter() {
                    let strip = tagged && self.nic.veb().rx_tag(vf, &f).is_none();
                    if let Err(reason) = self.deliver(vf, DeliverFrom::Bytes(frame, strip), tci) {
                        self.counters.vf(vf).drop(reason, 1);
                        backlogged |= matches!(reason, DropReason::NoBuffer | DropReason::RingFull);
                    }
                }
            }
        }
        backlogged
    }

    /// Puts one frame into `vf`'s next empty buffer and posts it to the NF.
    fn deliver(&mut self, vf: VfId, from: DeliverFrom<'_>, tci: u16) -> Result<(), DropReason> {
        let len = from.len();
        let enabled = self.nic.vf(vf).is_ok_and(|v| v.bus_master());
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return Err(DropReason::LinkDown);
        };
        if !enabled || port.state != PortState::Attached {
            return Err(DropReason::LinkDown);
        }
        if port.hop.fed_by.is_some() {
            // An NF feeds this VF directly: its rx ring has one producer.
            return Err(DropReason::NoRoute);
        }
        let Some(queues) = port.queues.as_mut() else {
            return Err(DropReason::LinkDown);
        };
        if len > FRAME_SIZE as usize {
            return Err(DropReason::NoBuffer);
        }
        match queues.rx_slot() {
            Ok(true) => {}
            Ok(false) => return Err(DropReason::RingFull),
            Err(_) => {
                port.state = PortState::Halted;
                self.counters.vf(vf).ring_errors.add(1);
                return Err(DropReason::RingFull);
            }
        }
        let buffer = match queues.take_buffer() {
            Ok(Some(b)) => b,
            Ok(None) => return Err(DropReason::NoBuffer),
            Err(_) => {
                port.state = PortState::Halted;
                self.counters.vf(vf).ring_errors.add(1);
                return Err(DropReason::NoBuffer);
            }
        };
        let written = self.write_frame(vf, buffer, &from);
        let Some(queues) = self
            .ports
            .get_mut(vf.index())
            .and_then(Option::as_mut)
            .and_then(|p| p.queues.as_mut())
        else {
            return Err(DropReason::LinkDown);
        };
        if let Err(reason) = written {
            queues.return_buffer();
            return Err(reason);
        }
        if queues.post_rx(buffer, len as u32, tci).is_err() {
            return Err(DropReason::RingFull);
        }
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return Err(DropReason::LinkDown);
        };
        if port.rx_since_irq == 0 && port.tx_since_irq == 0 {
            self.touched.push(vf);
        }
        port.rx_since_irq += 1;
        let c = self.counters.vf(vf);
        c.rx_packets.add(1);
        c.rx_bytes.add(len as u64);
        if matches!(from, DeliverFrom::Region { .. }) {
            c.copied_bytes.add(len as u64);
        }
        Ok(())
    }

    /// The DMA write of one frame into `buffer`, through `vf`'s IOMMU domain.
    fn write_frame(
        &mut self,
        vf: VfId,
        buffer: Buffer,
        from: &DeliverFrom<'_>,
    ) -> Result<(), DropReason> {
        let len = from.len();
        if len > buffer.cap as usize {
            return Err(DropReason::NoBuffer);
        }
        let t = self
            .nic
            .translate(vf, Iova(buffer.iova), len as u64, Access::Write)
            .map_err(|_| DropReason::DmaFault)?;
        let Some(dst) = self
            .regions
            .get(t.region.0 as usize)
            .and_then(Option::as_ref)
            .map(|r| &*r.memory)
        else {
            return Err(DropReason::DmaFault);
        };
        let off = t.offset as usize;
        let written = match *from {
            DeliverFrom::Bytes(frame, false) => dst.write_at(off, frame),
            DeliverFrom::Bytes(frame, true) => dst
                .write_at(off, &frame[..12])
                .and_then(|()| dst.write_at(off + 12, &frame[16..])),
            DeliverFrom::Region { src, offset, len } => src.copy_to(dst, offset, off, len),
        };
        written.map_err(|_| DropReason::DmaFault)
    }

    /// Carries out one transmit descriptor; returns the completion to post.
    pub(super) fn transmit(
        &mut self,
        vf: VfId,
        desc: Desc,
        now: Micros,
        uplink: &mut Uplink<'_>,
    ) -> Desc {
        let refused = Desc {
            flags: COMPLETION_ERROR,
            ..desc
        };
        let len = desc.len as usize;
        if !(14..=FRAME_SIZE as usize).contains(&len) {
            self.counters.vf(vf).ring_errors.add(1);
            return refused;
        }
        let Ok(t) = self
            .nic
            .translate(vf, Iova(desc.iova), len as u64, Access::Read)
        else {
            self.counters.vf(vf).drop(DropReason::DmaFault, 1);
            return refused;
        };
        let regions = self.regions;
        let Some(src) = regions
            .get(t.region.0 as usize)
            .and_then(Option::as_ref)
            .map(|r| &*r.memory)
        else {
            self.counters.vf(vf).drop(DropReason::DmaFault, 1);
            return refused;
        };
        // The switch needs the Ethernet and 802.1Q headers only.
        let mut header = [0u8; HEADER_READ];
        let hlen = len.min(SWITCH_HEADER);
        if src.read_at(t.offset as usize, &mut header[..hlen]).is_err() {
            self.counters.vf(vf).drop(DropReason::DmaFault, 1);
            return refused;
        }
        let decision = if desc.flags & TX_REFLECT != 0 {
            self.nic.reflect_from_vf(vf, &header[..hlen])
        } else {
            self.nic.switch_from_vf(vf, &header[..hlen])
        };
        let f = match decision {
            Decision::Drop(reason) => {
                self.counters.vf(vf).drop(reason.into(), 1);
                return desc;
            }
            Decision::Forward(f) => f,
        };
        let c = self.counters.vf(vf);
        c.tx_packets.add(1);
        c.tx_bytes.add(len as u64);
        if let (Some(tag), Some(host)) = (f.uplink, uplink.host.as_deref_mut()) {
            let tagged =
                crate::nic::FrameHeader::parse(&header[..hlen]).is_ok_and(|h| h.tag.is_some());
            match host.send(src, t.offset as usize, len, tagged, tag) {
                Ok(sent) => {
                    self.counters.wire.sent_on_vlan(tag.map_or(0, |t| t.vid));
                    self.counters.wire.tx_packets.add(1);
                    self.counters.wire.tx_bytes.add(sent as u64);
                }
                Err(reason) => self.counters.wire.drop(reason, 1),
            }
        } else if let Some(tag) = f.uplink {
            self.counters.wire.sent_on_vlan(tag.map_or(0, |t| t.vid));
            let wire_tx = &self.counters.wire.tx_packets;
            wire_tx.add(1);
            self.counters.wire.tx_bytes.add(len as u64);
            if let Some(wire) = uplink.wire.as_deref_mut() {
                let full = len.min(HEADER_READ);
                let sampled = wire_tx.get() % SINK_SAMPLE == 0
                    && src.read_at(t.offset as usize, &mut header[..full]).is_ok();
                if sampled {
                    wire.sink.receive(&header[..full], len, now);
                } else {
                    wire.sink.count(len);
                }
            }
        }
        let tci = f.vlan.map_or(0, VlanTag::tci);
        let mut completion = desc;
        let single = f.vfs.len() == 1 && f.uplink.is_none();
        for to in f.vfs.iter() {
            if single && self.nic.iommu().same_domain(vf, to) && self.both_native(vf, to) {
                match self.hand_over(vf, to, desc, tci) {
                    Ok(swapped) => completion = swapped,
                    Err(reason) => self.counters.vf(to).drop(reason, 1),
                }
                continue;
            }
            let from = DeliverFrom::Region {
                src,
                offset: t.offset as usize,
                len,
            };
            if let Err(reason) = self.deliver(to, from, tci) {
                self.counters.vf(to).drop(reason, 1);
            }
        }
        completion
    }

    /// Whether both VFs' NFs attached with the native face (a memif client's
    /// buffers are its own: frames reach it by copy).
    fn both_native(&self, a: VfId, b: VfId) -> bool {
        [a, b].iter().all(|vf| {
            self.ports
                .get(vf.index())
                .and_then(Option::as_ref)
                .and_then(|p| p.queues.as_ref())
                .is_some_and(Queues::is_native)
        })
    }

    /// Zero-copy hop inside one shared domain: the receiver gets the sender's frame,
    /// the sender gets one of the receiver's free frames in exchange.
    fn hand_over(
        &mut self,
        from: VfId,
        to: VfId,
        desc: Desc,
        tci: u16,
    ) -> Result<Desc, DropReason> {
        let enabled = self.nic.vf(to).is_ok_and(|v| v.bus_master());
        let port = self.ports.get_mut(to.index()).and_then(Option::as_mut);
        let Some(port) = port.filter(|p| enabled && p.state == PortState::Attached) else {
            return Err(DropReason::LinkDown);
        };
        if port.hop.fed_by.is_some() {
            return Err(DropReason::NoRoute);
        }
        let Some(Queues::Native(rings)) = port.queues.as_mut() else {
            return Err(DropReason::LinkDown);
        };
        if !rings.rx.free().is_ok_and(|n| n > 0) {
            return Err(DropReason::RingFull);
        }
        let fill = match rings.fill.consume_one() {
            Ok(Some(d)) => d,
            Ok(None) => return Err(DropReason::NoBuffer),
            Err(_) => {
                port.state = PortState::Halted;
                return Err(DropReason::NoBuffer);
            }
        };
        let rx = Desc {
            iova: desc.iova,
            len: desc.len,
            flags: 0,
            vlan: tci,
        };
        if rings.rx.produce(&rx).is_err() {
            return Err(DropReason::RingFull);
        }
        if port.rx_since_irq == 0 && port.tx_since_irq == 0 {
            self.touched.push(to);
        }
        port.rx_since_irq += 1;
        if let Some(domain) = self.nic.iommu().domain_of(to) {
            if let Some(umem) = self.umems.get_mut(&domain) {
                umem.transfer(Iova(desc.iova), to);
                umem.transfer(Iova(fill.iova), from);
            }
        }
        let c = self.counters.vf(to);
        c.rx_packets.add(1);
        c.rx_bytes.add(u64::from(desc.len));
        c.handed_over.add(1);
        Ok(Desc {
            iova: fill.iova,
            len: 0,
            flags: 0,
            vlan: 0,
        })
    }
}

/// Where a delivered frame comes from.
enum DeliverFrom<'a> {
    /// Bytes the NIC holds (the wire); strip the outer VLAN tag if `true`.
    Bytes(&'a [u8], bool),
    /// Another VF's memory (a strict hop: a DMA copy).
    Region {
        src: &'a SharedMemory,
        offset: usize,
        len: usize,
    },
}

impl DeliverFrom<'_> {
    fn len(&self) -> usize {
        match self {
            DeliverFrom::Bytes(f, strip) => f.len() - if *strip { 4 } else { 0 },
            DeliverFrom::Region { len, .. } => *len,
        }
    }
}
