//! The engine's loop: one pass over the wire and every active VF, then sleep on
//! doorbells, sockets, the control channel and the next deadline when there is no work.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use nfhost_sys::{Desc, EventFd, IrqVector};
use std::os::fd::AsFd;
use tokio::sync::{Notify, mpsc};

use super::attach::PortEvent;
use super::handle::Msg;
use super::{BATCH, Engine, EngineEvent};
use crate::dataplane::host_wire::HostWire;
use crate::dataplane::port::{Port, PortState};
use crate::nic::{InterruptSink, Micros, Raise, TargetId, Vector, VfId};

/// Polls without work before the engine goes to sleep.
const IDLE_SPINS: u32 = 64;

/// Delivers interrupts by writing the NF's eventfd.
struct FdSink<'a> {
    ports: &'a [Option<Port>],
}

impl InterruptSink for FdSink<'_> {
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
    ) {
        let mut idle = 0u32;
        let mut polls = 0u64;
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
            let now = self.now();
            let work = self.poll_once(now);
            polls += 1;
            if polls % 1024 == 0 {
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
            // Going to sleep: ask every NF for a doorbell, then look once more so a
            // transmit posted in between is not missed.
            self.set_tx_wakeup(true);
            fence(Ordering::SeqCst);
            if self.tx_pending() || self.host_pending() {
                self.set_tx_wakeup(false);
                continue;
            }
            self.publish();
            let deadline = self.next_deadline(now);
            let wake = self.wake.clone();
            let sleep = async {
                match deadline {
                    Some(d) => {
                        tokio::time::sleep(Duration::from_micros(d.0.saturating_sub(now.0))).await
                    }
                    None => std::future::pending::<()>().await,
                }
            };
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
                _ = wire_readable(self.host_wake.as_ref()) => {}
                _ = sleep => {}
            }
            self.set_tx_wakeup(false);
            idle = 0;
        }
    }

    fn next_deadline(&self, now: Micros) -> Option<Micros> {
        let generated = self.wire.as_ref().and_then(|w| w.pacer.next_due(now));
        let irq = self.nic.irq().next_deadline();
        let link_status = self.host.as_ref().map(HostWire::next_status);
        // While any NF is attached, wake at least every 100 ms to publish counters.
        let tick = Some(Micros(now.0 + 100_000));
        [generated, irq, link_status, tick]
            .into_iter()
            .flatten()
            .min()
    }

    fn set_tx_wakeup(&self, on: bool) {
        for vf in &self.active {
            if let Some(rings) = self.port(*vf).and_then(|p| p.rings.as_ref()) {
                if on {
                    rings.tx.set_need_wakeup();
                } else {
                    rings.tx.clear_need_wakeup();
                }
            }
        }
    }

    fn tx_pending(&mut self) -> bool {
        let active = self.active.clone();
        active.into_iter().any(|vf| {
            self.port_mut(vf)
                .and_then(|p| p.rings.as_mut())
                .is_some_and(|r| r.tx.available().is_ok_and(|n| n > 0))
        })
    }

    fn publish(&mut self) {
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
        let ring = host.ring_mut();
        ring.clear_wakeup();
        if let Err(e) = ring.flush() {
            tracing::warn!(error = %e, "nic-engine: wire flush failed");
        }
        ring.has_completions()
    }

    /// One pass over the wire and every active VF. Returns the frames handled.
    fn poll_once(&mut self, now: Micros) -> u32 {
        let mut work = self.wire_rx(now) + self.host_rx(now);
        for i in 0..self.active.len() {
            let vf = self.active[i];
            work += self.vf_tx(vf, now);
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
        let n = wire.pacer.allowance(now, BATCH);
        let scratch = uplink.scratch;
        for _ in 0..n {
            let Some(len) = wire.generator.write_next(scratch, now) else {
                break;
            };
            let frame = &scratch[..len];
            dma.counters.wire.rx_packets.add(1);
            dma.counters.wire.rx_bytes.add(len as u64);
            let backlogged = dma.receive_from_wire(frame);
            // Flat out (rate 0), the generator follows the receiver like a port
            // honouring flow control: a full receiver ends this burst.
            if backlogged && wire.pacer.rate_pps() == 0 {
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
        let rings = self
            .ports
            .get_mut(vf.index())
            .and_then(Option::as_mut)
            .filter(|p| p.state == PortState::Attached)?
            .rings
            .as_mut()?;
        let fill = rings.fill.available().ok()?;
        let free = rings.rx.free().ok()?;
        Some(fill.min(free))
    }

    fn vf_tx(&mut self, vf: VfId, now: Micros) -> u32 {
        // A chain hop sends only what the next hop can take: the backlog stays in this
        // hop's tx ring, so an overloaded chain drops at its ingress, before any NF has
        // spent work on a frame, never in the middle.
        let budget = match self.nic.veb().tx_rule(vf) {
            Some(crate::nic::TxSteer::ToVf(next)) => self.rx_budget(next).unwrap_or(BATCH),
            _ => BATCH,
        }
        .min(BATCH);
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
            let Some(rings) = port.rings.as_mut() else {
                return 0;
            };
            match rings.tx.peek(budget) {
                Ok(n) => {
                    for (i, d) in descs.iter_mut().enumerate().take(n as usize) {
                        *d = rings.tx.read(i as u32);
                    }
                    // Descriptors are copied out; the frames stay the NIC's until completion.
                    rings.tx.release(n);
                    n
                }
                Err(_) => {
                    port.state = PortState::Halted;
                    self.counters.vf(vf).ring_errors.add(1);
                    return 0;
                }
            }
        };
        if n == 0 {
            return 0;
        }
        let (mut dma, mut uplink) = self.dma();
        let mut completions = [Desc::default(); BATCH as usize];
        for (i, desc) in descs[..n as usize].iter().enumerate() {
            completions[i] = dma.transmit(vf, *desc, now, &mut uplink);
        }
        let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
            return n;
        };
        let Some(rings) = port.rings.as_mut() else {
            return n;
        };
        let granted = rings.completion.reserve(n).unwrap_or(0);
        for (i, c) in completions[..granted as usize].iter().enumerate() {
            rings.completion.write(i as u32, c);
        }
        rings.completion.submit(granted);
        port.tx_since_irq += granted;
        if granted < n {
            self.counters.vf(vf).ring_errors.add(u64::from(n - granted));
        }
        n
    }

    /// Raises the rx vector of every VF that received frames and the tx-completion
    /// vector of every VF that got completions, since the last poll.
    pub(super) fn raise_interrupts(&mut self, now: Micros) {
        // Pairs with the NF's fence between unmasking and re-checking its rings: either
        // the NF sees the new descriptors or the NIC sees the vector unmasked.
        fence(Ordering::SeqCst);
        for i in 0..self.active.len() {
            let vf = self.active[i];
            let Some(port) = self.ports.get_mut(vf.index()).and_then(Option::as_mut) else {
                continue;
            };
            let pending = [
                (
                    Vector::RX,
                    IrqVector::RX,
                    std::mem::take(&mut port.rx_since_irq),
                ),
                (
                    Vector::TX,
                    IrqVector::TX,
                    std::mem::take(&mut port.tx_since_irq),
                ),
            ];
            let masks = pending.map(|(_, bar_vector, _)| {
                port.bar.as_ref().is_none_or(|b| b.irq_masked(bar_vector))
            });
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
        }
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

/// Sleeps on a VF's doorbell (an io_uring read of its eventfd) and wakes the loop.
pub(super) async fn read_doorbell(doorbell: Arc<EventFd>, wake: Rc<Notify>, _epoch: u64) {
    let Ok(fd) = doorbell.as_fd().try_clone_to_owned() else {
        return;
    };
    let file = tokio_uring::fs::File::from_std(std::fs::File::from(fd));
    let mut buf = vec![0u8; 8];
    loop {
        // Once the engine drops the port, this task holds the last reference.
        if Arc::strong_count(&doorbell) == 1 {
            break;
        }
        let (res, b) = file.read_at(buf, 0).await;
        buf = b;
        if res.is_err() {
            break;
        }
        wake.notify_one();
    }
}
