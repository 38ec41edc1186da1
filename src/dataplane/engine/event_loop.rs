//! The engine's loop: one pass over the wire and the VFs with work, then sleep on
//! doorbells, sockets, the control channel and the next deadline when there is none.
//!
//! Work is found, not searched for: a VF is *polled* (its transmit ring looked at
//! every pass) while it has work (frames were delivered to it, it sent recently, or
//! it rang its doorbell); after [`QUIET_VISITS`] visits without a send it leaves the
//! polled set with `NEED_WAKEUP` set on its transmit ring, and its NF rings the
//! doorbell when it next sends. Interrupts are raised for the VFs that got work this
//! pass, not for every VF. So a pass costs the VFs with traffic, and idle VFs cost
//! nothing however many are attached.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use nfhost_sys::{Desc, EventFd, IrqVector, RingKind, TimerFd};
use std::os::fd::AsFd;
use tokio::sync::mpsc;

use super::attach::PortEvent;
use super::handle::Msg;
use super::{BATCH, Engine, EngineEvent};
use crate::dataplane::host_wire::HostWire;
use crate::dataplane::port::{Port, PortState};
use crate::nic::{InterruptSink, Micros, Raise, TargetId, Vector, VfId};

/// Passes without work before the engine goes to sleep.
const IDLE_SPINS: u32 = 16;
/// Visits without a send before a VF leaves the polled set.
pub(super) const QUIET_VISITS: u32 = 64;
/// Busy passes between two turns of the runtime (doorbell and socket tasks).
const YIELD_EVERY: u64 = 64;
/// At a paced rate, the gen wire hands frames over at most this often (µs) unless a
/// whole batch is due: frames land in bursts, as a NIC's receive interrupts come in
/// moderated bursts, instead of waking the engine for every frame. Frames carry the
/// time they were due, so the wait is part of the latency measured.
pub(super) const GEN_TICK_US: u64 = crate::dataplane::moderation::MAX_ITR_US as u64;

/// Delivers interrupts by writing the NF's eventfd.
struct FdSink<'a> {
    ports: &'a [Option<Port>],
}

impl InterruptSink for FdSink<'_> {
    fn current_mask(&self, vf: VfId, vector: Vector) -> Option<bool> {
        let port = self.ports.get(vf.index())?.as_ref()?;
        let bit = match vector {
            Vector::RX => IrqVector::RX,
            Vector::TX => IrqVector::TX,
            _ => return None,
        };
        Some(port.irq_masked(bit))
    }

    fn deliver(&mut self, vf: VfId, vector: Vector, _target: TargetId) {
        let fd = self
            .ports
            .get(vf.index())
            .and_then(Option::as_ref)
            .and_then(|p| p.irq.get(usize::from(vector.0)))
            .and_then(Option::as_ref);
        if let Some(fd) = fd {
            // A full eventfd counter means the NF has a wake-up pending anyway.
            let _ = fd.notify();
        }
    }
}

impl Engine {
    pub(super) async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Msg>,
        mut port_events: mpsc::UnboundedReceiver<PortEvent>,
        mut doorbells: mpsc::UnboundedReceiver<(VfId, u64)>,
    ) {
        let mut idle = 0u32;
        let mut passes = 0u64;
        loop {
            loop {
                match control.try_recv() {
                    Ok(Msg::Request(request)) => self.handle(request),
                    Ok(Msg::Shutdown) | Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.shut_down();
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            while let Ok(event) = port_events.try_recv() {
                self.on_port_event(event);
            }
            while let Ok((vf, epoch)) = doorbells.try_recv() {
                self.doorbell_rung(vf, epoch);
            }
            let now = self.now();
            let work = self.poll_once(now);
            passes += 1;
            if passes % YIELD_EVERY == 0 {
                self.publish();
                // Let the socket and doorbell tasks run.
                tokio::task::yield_now().await;
            }
            if work > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_SPINS {
                continue;
            }
            // Going to sleep: ask every polled NF for a doorbell, then look once more so
            // a transmit posted in between is not missed.
            self.set_tx_wakeup(true);
            fence(Ordering::SeqCst);
            let pending = self.tx_pending();
            if pending == Pending::Ready || self.host_pending() {
                self.set_tx_wakeup(false);
                continue;
            }
            self.publish();
            let mut deadline = self.next_deadline(now);
            if pending == Pending::Blocked {
                // A hop's backlog waits for room in the next hop, whose NF may free
                // it without sending anything: look again soon.
                deadline = deadline.min(Micros(now.0 + GEN_TICK_US));
            }
            // Re-arming costs a system call (and, in a VM, an exit): a timer already
            // set for no later than this deadline stays, and an early expiry only
            // makes the loop look and sleep again.
            let fresh = self.now();
            if !self.armed.is_some_and(|a| a > fresh && a <= deadline) {
                let after = Duration::from_micros(deadline.0.saturating_sub(fresh.0));
                match self.timer.get_ref().arm(after) {
                    Ok(()) => self.armed = Some(deadline),
                    Err(e) => tracing::warn!(error = %e, "nic-engine: arming the timer failed"),
                }
            }
            let wake = self.wake.clone();
            tokio::select! {
                _ = wake.notified() => {}
                msg = control.recv() => match msg {
                    Some(Msg::Request(request)) => self.handle(request),
                    Some(Msg::Shutdown) | None => {
                        self.shut_down();
                        return;
                    }
                },
                event = port_events.recv() => if let Some(event) = event {
                    self.on_port_event(event);
                },
                rung = doorbells.recv() => if let Some((vf, epoch)) = rung {
                    self.doorbell_rung(vf, epoch);
                },
                _ = wire_readable(self.host_wake.as_ref()) => {}
                _ = expired(&self.timer) => self.armed = None,
            }
            self.set_tx_wakeup(false);
            idle = 0;
        }
    }

    /// The NF on `vf` rang its doorbell: it sent while its VF was not polled.
    fn doorbell_rung(&mut self, vf: VfId, epoch: u64) {
        if self.port(vf).is_some_and(|p| p.epoch == epoch) && self.is_active(vf) {
            self.start_polling(vf);
        }
    }

    /// Puts `vf` in the polled set (if it is not there) and clears its transmit
    /// ring's `NEED_WAKEUP`: the engine looks at it every pass from now on.
    pub(super) fn start_polling(&mut self, vf: VfId) {
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return;
        };
        port.quiet = 0;
        if port.polled {
            return;
        }
        port.polled = true;
        if let Some(queues) = port.queues.as_ref() {
            queues.want_tx_wakeup(false);
        }
        self.polled.push(vf);
    }

    /// Takes `vf` out of the polled set (a detach or reset: its rings are gone).
    pub(super) fn stop_polling(&mut self, vf: VfId) {
        self.polled.retain(|v| *v != vf);
        if let Some(port) = self.port_mut(vf) {
            port.polled = false;
        }
    }

    /// After a visit that found nothing to send: counts it, and after
    /// [`QUIET_VISITS`] of them asks the NF for a doorbell and lets the VF go, unless
    /// a send arrived meanwhile. True if the VF left the polled set.
    fn quiet_visit(&mut self, vf: VfId) -> bool {
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return true;
        };
        port.quiet += 1;
        if port.quiet < QUIET_VISITS || port.rx_since_irq > 0 || port.tx_since_irq > 0 {
            return false;
        }
        let Some(queues) = port.queues.as_mut() else {
            port.polled = false;
            return true;
        };
        queues.want_tx_wakeup(true);
        // Pairs with the NF's fence between submitting and reading the flag.
        fence(Ordering::SeqCst);
        if queues.tx_waiting().is_ok_and(|n| n > 0) {
            queues.want_tx_wakeup(false);
            port.quiet = 0;
            return false;
        }
        port.polled = false;
        true
    }

    fn next_deadline(&self, now: Micros) -> Micros {
        let generated = self.wire.as_ref().and_then(|w| {
            let due = w.pacer.next_due(now)?;
            Some(due.max(Micros(w.last_pass.0 + GEN_TICK_US)))
        });
        let irq = self.nic.irq().next_deadline();
        let link_status = self.host.as_ref().map(HostWire::next_status);
        // Wake at least every 100 ms to publish counters.
        let tick = Micros(now.0 + 100_000);
        [generated, irq, link_status]
            .into_iter()
            .flatten()
            .fold(tick, Micros::min)
    }

    fn set_tx_wakeup(&self, on: bool) {
        for vf in &self.polled {
            if let Some(queues) = self.port(*vf).and_then(|p| p.queues.as_ref()) {
                queues.want_tx_wakeup(on);
            }
        }
    }

    /// Whether a polled VF has sends waiting, and whether the engine can carry
    /// any of them now.
    fn tx_pending(&mut self) -> Pending {
        let mut pending = Pending::None;
        for i in 0..self.polled.len() {
            let vf = self.polled[i];
            let waiting = self
                .port_mut(vf)
                .and_then(|p| p.queues.as_mut())
                .is_some_and(|q| q.tx_waiting().is_ok_and(|n| n > 0));
            if !waiting {
                continue;
            }
            if self.hop_budget(vf) > 0 {
                return Pending::Ready;
            }
            pending = Pending::Blocked;
        }
        pending
    }

    fn publish(&mut self) {
        self.count_hops();
        if let Some(wire) = &self.wire {
            if let Ok(mut s) = self.shared.sink.lock() {
                *s = wire.sink.stats();
            }
        }
        for fault in self.nic.take_faults() {
            self.shared.push_event(EngineEvent::DmaFault(fault));
        }
    }

    fn shut_down(&mut self) {
        let vfs: Vec<VfId> = self.ports.iter().flatten().map(|p| p.vf).collect();
        for vf in vfs {
            self.detach(vf);
        }
    }

    /// Before sleeping: submits what is queued on the host wire and tells whether
    /// completions arrived meanwhile (the wakeup eventfd is reset first, so one
    /// that arrives after this check wakes the loop).
    fn host_pending(&mut self) -> bool {
        let Some(host) = self.host.as_mut() else {
            return false;
        };
        match host.ring_mut().prepare_to_sleep() {
            Ok(waiting) => waiting,
            Err(e) => {
                // Sleeps anyway: the next deadline (at most the link-state poll,
                // 200 ms) wakes the loop, rather than a failing ring spinning it.
                tracing::warn!(error = %e, "nic-engine: wire flush failed");
                false
            }
        }
    }

    /// One pass over the wire and the polled VFs. Returns the frames handled.
    fn poll_once(&mut self, now: Micros) -> u32 {
        let mut work = self.wire_rx(now) + self.host_rx(now);
        let mut i = 0;
        while i < self.polled.len() {
            let vf = self.polled[i];
            let sent = self.vf_tx(vf, now);
            work += sent;
            if sent == 0 && self.quiet_visit(vf) {
                self.polled.swap_remove(i);
                continue;
            }
            i += 1;
        }
        if let Some(host) = self.host.as_mut() {
            if let Err(e) = host.ring_mut().flush() {
                tracing::warn!(error = %e, "nic-engine: wire flush failed");
            }
        }
        self.raise_interrupts(now);
        self.nic.poll_irqs(now, &mut FdSink { ports: &self.ports });
        work
    }

    fn wire_rx(&mut self, now: Micros) -> u32 {
        let (mut dma, uplink) = self.dma();
        let Some(wire) = uplink.wire else {
            return 0;
        };
        let paced = wire.pacer.rate_pps() > 0;
        if paced
            && now.0 < wire.last_pass.0 + GEN_TICK_US
            && wire.pacer.due_frames(now) < u64::from(BATCH)
        {
            return 0;
        }
        let n = wire.pacer.allowance(now, BATCH);
        if n > 0 {
            wire.last_pass = now;
        }
        let scratch = uplink.scratch;
        for j in 0..n {
            let due = wire.pacer.due_at(now, n, j);
            let Some(len) = wire.generator.write_next(scratch, due) else {
                break;
            };
            let frame = &scratch[..len];
            dma.counters.wire.rx_packets.add(1);
            dma.counters.wire.rx_bytes.add(len as u64);
            let backlogged = dma.receive_from_wire(frame);
            // Flat out (rate 0), the generator follows the receiver like a port
            // honouring flow control: a full receiver ends this burst.
            if backlogged && !paced {
                break;
            }
        }
        n
    }

    /// Frames from the host wire's links, switched and delivered like generated
    /// ones; and, when it is time, the links' state as the PF's link.
    fn host_rx(&mut self, now: Micros) -> u32 {
        let Some(host) = self.host.as_mut() else {
            return 0;
        };
        if let Some(link) = host.poll_status(now, &self.counters) {
            self.nic.set_link(link);
        }
        let (mut dma, uplink) = self.dma();
        let Some(host) = uplink.host else {
            return 0;
        };
        let counters = dma.counters;
        host.receive(BATCH as usize, counters, |frame| {
            dma.receive_from_wire(frame);
        }) as u32
    }

    /// How many frames `vf` can take right now (free fill buffers and rx slots), or
    /// `None` if it is not attached (frames to it are dropped and counted as usual).
    fn rx_budget(&mut self, vf: VfId) -> Option<u32> {
        self.ports
            .get_mut(vf.index())
            .and_then(Option::as_mut)
            .filter(|p| p.state == PortState::Attached)?
            .queues
            .as_mut()?
            .rx_room()
            .ok()
    }

    /// How many frames `vf` may send now: a chain hop sends only what the next hop
    /// can take, so the backlog stays in this hop's tx ring and an overloaded chain
    /// drops at its ingress, before any NF has spent work on a frame, never in the
    /// middle. The same holds for the last hop and a host wire's send buffers.
    fn hop_budget(&mut self, vf: VfId) -> u32 {
        match self.nic.veb().tx_rule(vf) {
            Some(crate::nic::TxSteer::ToVf(next)) => self.rx_budget(next).unwrap_or(BATCH),
            // To the host wire: what its links' send buffers can take.
            _ => self
                .host
                .as_mut()
                .map_or(BATCH, |h| h.tx_room(BATCH as usize) as u32),
        }
        .min(BATCH)
    }

    pub(super) fn vf_tx(&mut self, vf: VfId, now: Micros) -> u32 {
        self.counters.vf(vf).visits.add(1);
        let budget = self.hop_budget(vf);
        if budget == 0 {
            return 0;
        }
        let mut descs = [Desc::default(); BATCH as usize];
        let n = {
            let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
                return 0;
            };
            if port.state != PortState::Attached {
                return 0;
            }
            let Some(queues) = port.queues.as_mut() else {
                return 0;
            };
            match queues.tx_take(&mut descs[..budget as usize]) {
                Ok(0) => return 0,
                Ok(n) => n,
                Err(_) => {
                    port.state = PortState::Halted;
                    self.counters.vf(vf).ring_errors.add(1);
                    return 0;
                }
            }
        };
        let (mut dma, mut uplink) = self.dma();
        let mut completions = [Desc::default(); BATCH as usize];
        for (i, desc) in descs[..n as usize].iter().enumerate() {
            completions[i] = dma.transmit(vf, *desc, now, &mut uplink);
        }
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return n;
        };
        let Some(queues) = port.queues.as_mut() else {
            return n;
        };
        let granted = queues.tx_done(&completions[..n as usize]);
        if port.rx_since_irq == 0 && port.tx_since_irq == 0 && granted > 0 {
            self.touched.push(vf);
        }
        port.tx_since_irq += granted;
        if granted < n {
            self.counters.vf(vf).ring_errors.add(u64::from(n - granted));
        }
        n
    }

    /// Raises the rx vector of every VF that received frames and the tx-completion
    /// vector of every VF that got completions, since the last poll, after feeding
    /// each VF's interrupt moderation. Only VFs that got work are visited; a VF that
    /// received frames is polled from now on, since it will likely send.
    pub(super) fn raise_interrupts(&mut self, now: Micros) {
        if self.touched.is_empty() {
            return;
        }
        // Pairs with the NF's fence between unmasking and re-checking its rings: either
        // the NF sees the new descriptors or the NIC sees the vector unmasked.
        fence(Ordering::SeqCst);
        let mut touched = std::mem::take(&mut self.touched);
        for &vf in &touched {
            let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
                continue;
            };
            let rx = std::mem::take(&mut port.rx_since_irq);
            let tx = std::mem::take(&mut port.tx_since_irq);
            // Completions matter to an NF when it needs its frames back to keep
            // receiving: its fill ring is below a quarter. Until then they wait for
            // its next poll, which an rx interrupt or its own sends bring, and cost
            // no wake-up of their own.
            // The fill ring's level is read from its published indices, right whether
            // the NIC or an NF feeding this VF directly consumes it. A memif client
            // (no BAR) is never short: its buffers come back by the `tail` alone.
            let fill_low = match port.bar.as_ref() {
                Some(bar) => !bar
                    .ring_len(RingKind::Fill)
                    .is_ok_and(|n| n >= bar.layout().rx_ring_size() / 4),
                None => port.queues.is_none(),
            };
            let moderated = port.moderation.record(rx + tx, now);
            let tx = if fill_low { tx } else { 0 };
            if let Some(itr) = moderated {
                for vector in [Vector::RX, Vector::TX] {
                    let _ = self.nic.set_irq_itr(vf, vector, itr);
                }
            }
            let Some(port) = self.ports.get(vf.index()).and_then(Option::as_ref) else {
                continue;
            };
            let pending = [
                (Vector::RX, IrqVector::RX, rx),
                (Vector::TX, IrqVector::TX, tx),
            ];
            let masks = pending.map(|(_, bar_vector, _)| port.irq_masked(bar_vector));
            // An NF that feeds its next hop directly sends little on tx (reflects),
            // and rings its doorbell for that: receiving does not make it polled.
            let feeds_directly = port.hop.feeds.is_some();
            for ((vector, _, count), masked) in pending.into_iter().zip(masks) {
                if count == 0 {
                    continue;
                }
                let _ = self.nic.set_irq_masked(vf, vector, masked);
                let outcome =
                    self.nic
                        .raise_irq(vf, vector, now, &mut FdSink { ports: &self.ports });
                let c = self.counters.vf(vf);
                match outcome {
                    Raise::Delivered => c.irq_delivered.add(1),
                    Raise::Coalesced => c.irq_coalesced.add(1),
                    Raise::Blocked(_) => c.irq_blocked.add(1),
                }
            }
            if rx > 0 && !feeds_directly && self.is_active(vf) {
                self.start_polling(vf);
            }
        }
        // Keep the allocation: nothing is allocated per pass.
        touched.clear();
        self.touched = touched;
    }
}

/// Whether polled VFs have sends waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// None.
    None,
    /// Some, but every one waits for room in its next hop.
    Blocked,
    /// Some the engine can carry now.
    Ready,
}

/// Waits until the engine's timer expires, and resets it.
async fn expired(timer: &tokio::io::unix::AsyncFd<TimerFd>) {
    if let Ok(mut guard) = timer.readable().await {
        let _ = timer.get_ref().try_read();
        guard.clear_ready();
    }
}

/// Waits until the host wire's ring signals a completion (never, without one).
async fn wire_readable(wake: Option<&tokio::io::unix::AsyncFd<OwnedFd>>) {
    match wake {
        Some(fd) => {
            if let Ok(mut guard) = fd.readable().await {
                // The loop resets the eventfd itself before it next sleeps.
                guard.clear_ready();
            }
        }
        None => std::future::pending().await,
    }
}

/// Waits on a VF's doorbell and tells the loop which VF rang, with the attachment
/// it belongs to. The eventfd is watched through the reactor (epoll), which the
/// runtime also polls when the busy loop yields, so a doorbell is heard under load
/// too (an io_uring read would be resubmitted only when the runtime parks).
pub(super) async fn read_doorbell(
    doorbell: Arc<EventFd>,
    vf: VfId,
    epoch: u64,
    rung: mpsc::UnboundedSender<(VfId, u64)>,
) {
    let Ok(afd) = doorbell
        .as_fd()
        .try_clone_to_owned()
        .and_then(nfhost_sys::async_fd)
    else {
        return;
    };
    loop {
        let Ok(mut guard) = afd.readable().await else {
            break;
        };
        // Once the engine drops the port, this task holds the last reference.
        if Arc::strong_count(&doorbell) == 1 {
            break;
        }
        match doorbell.try_read() {
            Ok(Some(_)) => {
                if rung.send((vf, epoch)).is_err() {
                    break;
                }
            }
            Ok(None) => guard.clear_ready(),
            Err(_) => break,
        }
    }
}
