//! The NF runtime: attach to the VF, set up packet memory, and run the receive loop.
//!
//! The loop runs on its own thread in a tokio-uring runtime (ARCHITECTURE.md §3):
//! sleep on the rx interrupt (an io_uring read of the eventfd) → mask → drain the rx
//! ring in batches of up to [`MAX_BATCH`] (packets are views into the NF's own UMEM:
//! zero copy) → `process` → post forwarded frames to tx, dropped ones back to fill →
//! kick the doorbell if the NIC asked for a wakeup → when the ring is empty, unmask,
//! look once more, sleep. An idle NF blocks in the kernel and uses no CPU.
//!
//! An empty ring means sleep, unless the rate says the next batch is imminent: the
//! loop keeps a smoothed gap between batches, and only when that gap is shorter than
//! the busy-poll budget does it spin (a CPU spin hint, never a yield) for about one
//! gap before it sleeps, which saves an interrupt and a wake-up per batch at high
//! rates and costs nothing at low ones.
//!
//! In a `shared` chain the NF feeds the next hop directly (ARCHITECTURE.md §4): the
//! engine names the hop in its answer to `GetPeer`, which the loop sends after
//! `Enable` and whenever the BAR's `PEER` register changes, between batches. Then
//! forwarded frames go on the hop's rx ring, each swapped for a free frame from the
//! hop's fill ring, the hop is woken unless it masked its rx vector, and the loop
//! takes no more from its own rx ring than the hop has room for.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use nfhost_sys::bar::{Bar, Hop, IrqVector, Nf};
use nfhost_sys::fd::{EventFd, FdError};
use nfhost_sys::ring::{Consumer, Desc, Producer, RingError};
use nfhost_sys::shm::{SharedMemory, ShmError};
use nfhost_sys::umem::{FrameLender, LendError};

use crate::attach::client::{Attached, ClientError, PeerAnswer, VfClient};
use crate::nf::{Batch, MAX_BATCH, NetworkFunction, Packet, Verdict};

/// Where an NF maps its own UMEM in its VF's IOVA space.
pub const UMEM_IOVA: u64 = 0x10_0000_0000;
/// The page size DMA mappings are aligned to.
const PAGE: usize = 4096;
/// The shortest frame the NIC sends: an Ethernet header.
const MIN_FRAME: usize = 14;
/// How long the loop waits before it looks again when the hop it feeds directly
/// has no room (the hop's NF frees room without a signal).
const HOP_FULL_WAIT: Duration = Duration::from_micros(20);

/// A runtime failure. The NF process exits with it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The attach handshake or a later request failed.
    #[error("VF request failed")]
    Client(#[from] ClientError),
    /// Packet memory could not be created.
    #[error("creating packet memory failed")]
    Shm(#[from] ShmError),
    /// An eventfd could not be created or read.
    #[error("interrupt eventfd failed")]
    Fd(#[from] FdError),
    /// A ring misbehaved (the NIC published an impossible index).
    #[error("ring error")]
    Ring(#[from] RingError),
    /// The NIC handed out a frame outside this NF's memory.
    #[error("NIC descriptor points outside packet memory: IOVA {iova:#x}, {len} bytes")]
    BadDescriptor {
        /// IOVA.
        iova: u64,
        /// Length.
        len: u32,
    },
    /// The interrupt read failed.
    #[error("waiting for the rx interrupt failed")]
    Wait(#[source] std::io::Error),
    /// The NF could not be built from the configuration the host gave it.
    #[error("the NF refused its configuration: {0}")]
    Config(String),
}

/// Counters of the loop, reported to the host.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopStats {
    /// Packets received.
    pub rx: u64,
    /// Packets sent (forwarded or reflected).
    pub tx: u64,
    /// Packets the NF dropped.
    pub dropped: u64,
    /// Packets dropped because the tx ring was full.
    pub tx_full: u64,
    /// Batches processed.
    pub batches: u64,
    /// Wake-ups by interrupt.
    pub wakeups: u64,
    /// Nanoseconds spent in `process`.
    pub process_ns: u64,
}

/// Runtime options.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the NF's report is sent to the host.
    pub report_interval: Duration,
    /// The longest the loop polls an empty ring before unmasking and sleeping
    /// (NAPI's busy-poll budget). It polls only while batches have been arriving
    /// less than this far apart, and then for about one gap, so that at a high rate
    /// the next batch is taken without an interrupt and at a low rate the NF sleeps
    /// at once. Zero always sleeps at once.
    pub busy_poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            report_interval: Duration::from_secs(1),
            busy_poll: Duration::from_micros(20),
        }
    }
}

/// The smoothed gap between batches, to tell whether the next one is imminent.
#[derive(Debug, Default, Clone, Copy)]
struct Gap {
    last: Option<Instant>,
    /// Exponentially weighted mean, nanoseconds (weight 1/8 to a new gap).
    mean_ns: u64,
}

impl Gap {
    /// A batch arrived at `now`. A gap counts for at most `cap`: one long pause (the
    /// NF was off the CPU, or traffic paused) should not make the next dozens of
    /// batches look far apart.
    fn batch(&mut self, now: Instant, cap: Duration) {
        if let Some(last) = self.last {
            let gap = now
                .duration_since(last)
                .min(cap)
                .as_nanos()
                .min(u128::from(u64::MAX)) as u64;
            self.mean_ns = if self.mean_ns == 0 {
                gap
            } else {
                self.mean_ns - self.mean_ns / 8 + gap / 8
            };
        }
        self.last = Some(now);
    }

    /// How long to poll an empty ring before sleeping: about one gap if batches come
    /// closer than `budget`, else nothing.
    fn spin(&self, budget: Duration) -> Duration {
        let mean = Duration::from_nanos(self.mean_ns);
        if self.last.is_none() || mean.is_zero() || mean > budget {
            Duration::ZERO
        } else {
            mean
        }
    }
}

/// Attaches to the VF behind `client` (presenting `token`) and runs `nf` until the
/// VF goes away; the configuration the host holds for this NF is not asked for
/// (see [`run_configured`]). Blocks the calling thread; the loop itself runs on a
/// thread of its own with a tokio-uring runtime.
pub fn run<N: NetworkFunction>(
    nf: N,
    client: VfClient,
    token: &str,
    options: Options,
) -> Result<(), RuntimeError> {
    run_configured(client, token, options, move |_| Ok::<_, String>(nf))
}

/// Attaches to the VF behind `client` (presenting `token`), asks the host for this
/// NF's configuration (`GetConfig`: a sealed memfd over the attach socket, never
/// argv or the environment), builds the NF from it with `build`, and runs it until
/// the VF goes away. A configuration `build` refuses ends the run with
/// [`RuntimeError::Config`] before the VF is enabled.
pub fn run_configured<N, E, B>(
    client: VfClient,
    token: &str,
    options: Options,
    build: B,
) -> Result<(), RuntimeError>
where
    N: NetworkFunction,
    E: std::fmt::Display,
    B: FnOnce(&str) -> Result<N, E> + Send + 'static,
{
    let token = token.to_owned();
    let thread = std::thread::Builder::new()
        .name("nf-rx".into())
        .spawn(move || -> Result<(), RuntimeError> {
            let (mut vf, mut nf) = VfLoop::attach(client, &token, build)?;
            tokio_uring::start(vf.run(&mut nf, &options))
        })
        .map_err(RuntimeError::Wait)?;
    thread.join().unwrap_or_else(|_| {
        Err(RuntimeError::Wait(std::io::Error::other(
            "NF loop panicked",
        )))
    })
}

struct Rings {
    fill: Producer,
    rx: Consumer,
    tx: Producer,
    completion: Consumer,
}

/// The hop this NF feeds directly (a `shared` chain, ARCHITECTURE.md §4): the NIC's
/// ends of its fill and rx rings, and its rx interrupt.
struct Link {
    /// Keeps the hop's BAR mapped; its `IRQ_MASK` says whether to wake it.
    bar: Bar<Hop>,
    /// The hop's free frames: each forwarded frame is swapped for one of them.
    fill: Consumer,
    rx: Producer,
    irq: EventFd,
    /// The TCI for rx descriptors (the hop's port VLAN).
    vlan: u16,
}

/// What one batch did with its packets.
#[derive(Default)]
struct Fed {
    frames: u32,
    bytes: u64,
    no_room: u32,
}

/// One attached VF, NF side.
struct VfLoop {
    client: VfClient,
    bar: Bar<Nf>,
    rings: Rings,
    /// The UMEM's frames, lent to `process` as the rx ring hands them over.
    frames: FrameLender,
    irq: EventFd,
    doorbell: EventFd,
    stats: LoopStats,
    /// The mailbox generation last fetched (or present at attach).
    mailbox_seen: u32,
    /// Turns of the loop, published in the BAR's heartbeat register.
    beats: u32,
    /// The hop fed directly, if any.
    link: Option<Link>,
    /// The `PEER` generation of the last `GetPeer` answer; `None` while the
    /// engine does not take part in direct hops.
    peer_seen: Option<u32>,
    /// The last poll left frames on rx: the hop fed directly had no room.
    hop_full: bool,
}

impl VfLoop {
    fn attach<N, E, B>(
        mut client: VfClient,
        token: &str,
        build: B,
    ) -> Result<(Self, N), RuntimeError>
    where
        E: std::fmt::Display,
        B: FnOnce(&str) -> Result<N, E>,
    {
        let Attached {
            bar,
            doorbell,
            rx_ring_size,
            tx_ring_size,
            frame_size,
            umem,
            ..
        } = client.hello(token)?;
        let config = client.get_config()?;
        let nf = build(&config).map_err(|e| RuntimeError::Config(e.to_string()))?;
        let frame_size = frame_size as usize;
        let rings = Rings {
            fill: bar.fill_producer()?,
            rx: bar.rx_consumer()?,
            tx: bar.tx_producer()?,
            completion: bar.completion_consumer()?,
        };
        let (umem, umem_iova, own_frames) = match umem {
            // A shared chain: the host's memory, our frames arrive as completions.
            Some((memory, iova)) => (Arc::new(memory), iova, 0),
            None => {
                let frames = rx_ring_size.min(tx_ring_size) as usize;
                let len = (frames * frame_size).div_ceil(PAGE) * PAGE;
                let memory = SharedMemory::create("nf-umem", len)?;
                client.map_dma(UMEM_IOVA, len as u64, &memory, 0, true, true)?;
                (Arc::new(memory), UMEM_IOVA, frames)
            }
        };
        // A message posted for an earlier instance on this VF is not ours.
        let mailbox_seen = bar.mailbox();
        let mut vf = VfLoop {
            client,
            bar,
            rings,
            frames: FrameLender::new(umem, umem_iova, frame_size),
            irq: EventFd::new()?,
            doorbell,
            stats: LoopStats::default(),
            mailbox_seen,
            beats: 0,
            link: None,
            peer_seen: None,
            hop_full: false,
        };
        for i in 0..own_frames {
            let d = Desc {
                iova: umem_iova + (i * frame_size) as u64,
                ..Desc::default()
            };
            vf.rings.fill.produce(&d)?;
        }
        // One eventfd wakes the loop for both received frames and completed sends.
        vf.client
            .set_irq(u16::from(IrqVector::RX.index()), &vf.irq)?;
        vf.client
            .set_irq(u16::from(IrqVector::TX.index()), &vf.irq)?;
        vf.client.enable()?;
        // A shared chain's frames came as completions: on fill first, so that an
        // NF that starts feeding this one at once finds free frames.
        vf.recycle_completions()?;
        // Says this NF can feed a hop directly, and learns whether it does.
        vf.ask_peer()?;
        Ok((vf, nf))
    }

    /// Stops feeding the current hop, if any, and asks which hop to feed. Called
    /// between batches: no frame is in hand. An engine that refuses the question
    /// does not do direct hops, and is not asked again.
    fn ask_peer(&mut self) -> Result<(), RuntimeError> {
        self.link = None;
        match self.client.get_peer() {
            Ok(PeerAnswer::None { generation }) => self.peer_seen = Some(generation),
            Ok(PeerAnswer::Peer(peer)) => {
                self.peer_seen = Some(peer.generation);
                self.link = Some(Link {
                    fill: peer.bar.fill_consumer()?,
                    rx: peer.bar.rx_producer()?,
                    bar: peer.bar,
                    irq: peer.irq,
                    vlan: peer.vlan,
                });
            }
            Err(ClientError::Refused { .. }) if self.peer_seen.is_none() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Whether the engine published a new direct-hop generation.
    fn peer_changed(&self) -> bool {
        self.peer_seen
            .is_some_and(|seen| seen != self.bar.peer_generation())
    }

    async fn run<N: NetworkFunction>(
        &mut self,
        nf: &mut N,
        options: &Options,
    ) -> Result<(), RuntimeError> {
        let fd = self
            .irq
            .as_fd()
            .try_clone_to_owned()
            .map_err(RuntimeError::Wait)?;
        let irq = tokio_uring::fs::File::from_std(std::fs::File::from(fd));
        // The host never speaks unasked: the socket turning readable while the
        // loop sleeps means nfhost closed it (the VF was released or nfhost
        // stopped), and the NF ends instead of sleeping for ever.
        let hangup = self
            .client
            .socket()
            .try_clone_to_owned()
            .and_then(nfhost_sys::async_fd)
            .map_err(RuntimeError::Wait)?;
        let mut buf = vec![0u8; 8];
        // The first report goes out on the first pass: the host shows the NF's
        // state as soon as it runs, not a second later.
        let mut last_report = Instant::now()
            .checked_sub(options.report_interval)
            .unwrap_or_else(Instant::now);
        let mut gap = Gap::default();
        loop {
            self.bar.mask_irq(IrqVector::RX);
            self.bar.mask_irq(IrqVector::TX);
            let mut quiet_since: Option<Instant> = None;
            loop {
                self.beat();
                self.check_mailbox(nf);
                if self.peer_changed() {
                    self.ask_peer()?;
                }
                let before = self.stats.batches;
                if self.poll(nf)? > 0 {
                    quiet_since = None;
                    if self.stats.batches != before {
                        gap.batch(Instant::now(), 4 * options.busy_poll);
                    }
                    if last_report.elapsed() >= options.report_interval {
                        self.report(nf);
                        last_report = Instant::now();
                    }
                    continue;
                }
                if self.hop_full {
                    // Frames wait, and the hop fed directly has no room for them:
                    // its NF needs the CPU to make some. Nothing signals room, so
                    // look again shortly.
                    std::thread::sleep(HOP_FULL_WAIT);
                    continue;
                }
                let quiet = *quiet_since.get_or_insert_with(Instant::now);
                if quiet.elapsed() >= gap.spin(options.busy_poll) {
                    break;
                }
                std::hint::spin_loop();
            }
            self.bar.unmask_irq(IrqVector::RX);
            self.bar.unmask_irq(IrqVector::TX);
            // Pairs with the NIC's fence between posting rx and reading the mask.
            fence(Ordering::SeqCst);
            if self.rings.rx.available()? > 0
                || self.rings.completion.available()? > 0
                || self.bar.mailbox() != self.mailbox_seen
                || self.peer_changed()
            {
                continue;
            }
            if last_report.elapsed() >= options.report_interval {
                self.report(nf);
                last_report = Instant::now();
            }
            let (res, b) = tokio::select! {
                read = irq.read_at(buf, 0) => read,
                _ = hangup.readable() => return Err(RuntimeError::Client(ClientError::Closed)),
            };
            buf = b;
            res.map_err(RuntimeError::Wait)?;
            self.stats.wakeups += 1;
        }
    }

    /// Proves the loop is turning: the host finds an NF unresponsive when frames
    /// wait on its rx ring and this count stands still.
    fn beat(&mut self) {
        self.beats = self.beats.wrapping_add(1);
        self.bar.set_heartbeat(self.beats);
    }

    /// Takes a new configuration from the host's mailbox, if its doorbell shows
    /// one not fetched yet, applies it in place and says how that went. The host
    /// restarts the NF if it could not.
    fn check_mailbox<N: NetworkFunction>(&mut self, nf: &mut N) {
        let posted = self.bar.mailbox();
        if posted == self.mailbox_seen {
            return;
        }
        self.mailbox_seen = posted;
        // Nothing waiting after all (the host withdrew it): nothing to do.
        let Ok((generation, config)) = self.client.fetch_config() else {
            return;
        };
        self.mailbox_seen = generation;
        let error = nf.reconfigure(&config).err().unwrap_or_default();
        // A lost answer only makes the host fall back to a restart.
        let _ = self.client.config_applied(generation, &error);
    }

    fn report<N: NetworkFunction>(&mut self, nf: &N) {
        let s = self.stats;
        let json = format!(
            "{{\"nf\":{},\"runtime\":{{\"rx\":{},\"tx\":{},\"dropped\":{},\"tx_full\":{},\"batches\":{},\"wakeups\":{},\"process_ns\":{}}}}}",
            nf.report().unwrap_or_else(|| "null".into()),
            s.rx,
            s.tx,
            s.dropped,
            s.tx_full,
            s.batches,
            s.wakeups,
            s.process_ns
        );
        // A refused or failed report is not worth stopping the data path for.
        let _ = self.client.report(&json);
    }

    /// Returns free frames to fill and handles one rx batch. Returns the work done.
    fn poll<N: NetworkFunction>(&mut self, nf: &mut N) -> Result<u32, RuntimeError> {
        let freed = self.recycle_completions()?;
        // Back-pressure: take only what the hop fed directly can take, so that an
        // overloaded chain backs up to its ingress instead of dropping in the middle.
        let limit = match self.link.as_mut() {
            Some(link) => link.fill.available()?.min(link.rx.free()?),
            None => MAX_BATCH as u32,
        };
        self.hop_full = limit == 0 && self.rings.rx.available()? > 0;
        let mut descs: ArrayVec<Desc, MAX_BATCH> = ArrayVec::new();
        let buffers = self
            .frames
            .lend_up_to(&mut self.rings.rx, &mut descs, limit)
            .map_err(|e| match e {
                LendError::Ring(e) => RuntimeError::Ring(e),
                LendError::NotAFrame { iova, len } | LendError::Twice { iova, len } => {
                    RuntimeError::BadDescriptor { iova, len }
                }
            })?;
        if descs.is_empty() {
            return Ok(freed);
        }
        let n = descs.len() as u32;
        let packets: ArrayVec<Packet<'_>, MAX_BATCH> = buffers
            .into_iter()
            .zip(&descs)
            .map(|(buf, d)| Packet::new(buf, d.len as usize, d.vlan))
            .collect();
        self.rings.rx.release(n);
        let started = Instant::now();
        let mut batch = Batch::from_packets(packets);
        nf.process(&mut batch);
        self.stats.process_ns += started.elapsed().as_nanos() as u64;
        self.stats.batches += 1;
        self.stats.rx += u64::from(n);

        // Forwarded frames go straight to the hop fed directly, if there is one
        // (frames too short for a header go to the NIC, which refuses them);
        // everything else that leaves goes on tx.
        let direct = |p: &Packet<'_>, linked: bool| {
            linked && p.verdict() == Verdict::Forward && p.len() >= MIN_FRAME
        };
        let linked = self.link.is_some();
        let (mut to_hop, mut to_tx) = (0u32, 0u32);
        for p in batch.iter() {
            if direct(p, linked) {
                to_hop += 1;
            } else if p.verdict() != Verdict::Drop {
                to_tx += 1;
            }
        }
        let granted = self.rings.tx.reserve(to_tx)?;
        let hop_room = match self.link.as_mut() {
            Some(link) if to_hop > 0 => {
                let free = link.fill.peek(to_hop)?;
                link.rx.reserve(free)?
            }
            _ => 0,
        };
        let mut slot = 0;
        let mut fed = Fed::default();
        for (p, &Desc { iova, .. }) in batch.iter().zip(&descs) {
            if let Some(link) = self.link.as_mut().filter(|_| direct(p, linked)) {
                let back = if fed.frames < hop_room {
                    // Swap: the hop gets this frame, this NF one of its free ones.
                    let free = link.fill.read(fed.frames);
                    let d = Desc {
                        iova,
                        len: p.len() as u32,
                        flags: 0,
                        vlan: link.vlan,
                    };
                    link.rx.write(fed.frames, &d);
                    fed.frames += 1;
                    fed.bytes += p.len() as u64;
                    free.iova
                } else {
                    fed.no_room += 1;
                    iova
                };
                self.rings.fill.produce(&Desc {
                    iova: back,
                    ..Desc::default()
                })?;
                continue;
            }
            let flags = match p.verdict() {
                Verdict::Drop => None,
                Verdict::Forward => Some(0),
                Verdict::Reflect => Some(vf_abi::TX_REFLECT),
            };
            match flags {
                Some(flags) if slot < granted => {
                    let d = Desc {
                        iova,
                        len: p.len() as u32,
                        flags,
                        vlan: 0,
                    };
                    self.rings.tx.write(slot, &d);
                    slot += 1;
                    self.stats.tx += 1;
                }
                other => {
                    if other.is_some() {
                        self.stats.tx_full += 1;
                    } else {
                        self.stats.dropped += 1;
                    }
                    let d = Desc {
                        iova,
                        ..Desc::default()
                    };
                    self.rings.fill.produce(&d)?;
                }
            }
        }
        drop(batch);
        if let Some(mut link) = self.link.take() {
            self.feed(&mut link, &fed, hop_room);
            self.link = Some(link);
        }
        if granted > 0 {
            self.rings.tx.submit(granted);
            // Pairs with the NIC's fence between setting need-wakeup and its last look.
            fence(Ordering::SeqCst);
            if self.rings.tx.needs_wakeup() {
                let _ = self.doorbell.notify();
            }
        }
        Ok(n + freed)
    }

    /// Publishes what a batch put on the direct hop's rings, wakes the hop unless
    /// it is polling, and counts it in the BAR for the NIC.
    fn feed(&mut self, link: &mut Link, fed: &Fed, reserved: u32) {
        // Counted before the frames are published: a frame the hop can see (and
        // send on, and the NIC count at the wire) is already counted here.
        self.bar
            .count_hop(u64::from(fed.frames), fed.bytes, u64::from(fed.no_room));
        self.stats.tx += u64::from(fed.frames);
        self.stats.tx_full += u64::from(fed.no_room);
        if reserved > 0 {
            // Publishes what was written and gives back the rest of the slots.
            link.rx.submit(fed.frames);
        }
        if fed.frames > 0 {
            link.fill.release(fed.frames);
            // Pairs with the hop's fence between unmasking and its last look.
            fence(Ordering::SeqCst);
            if !link.bar.irq_masked(IrqVector::RX) {
                let _ = link.irq.notify();
            }
        }
    }

    /// Moves sent frames from completion back to fill.
    fn recycle_completions(&mut self) -> Result<u32, RuntimeError> {
        let n = self.rings.completion.peek(MAX_BATCH as u32)?;
        if n == 0 {
            return Ok(0);
        }
        let granted = self.rings.fill.reserve(n)?;
        for i in 0..granted {
            let c = self.rings.completion.read(i);
            self.rings.fill.write(
                i,
                &Desc {
                    iova: c.iova,
                    ..Desc::default()
                },
            );
        }
        self.rings.fill.submit(granted);
        self.rings.completion.release(granted);
        Ok(granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_micros(80);

    fn gaps(us: &[u64]) -> Gap {
        let mut gap = Gap::default();
        let mut t = Instant::now();
        gap.batch(t, CAP);
        for &g in us {
            t += Duration::from_micros(g);
            gap.batch(t, CAP);
        }
        gap
    }

    #[test]
    fn spins_only_when_batches_come_closer_than_the_budget() {
        let budget = Duration::from_micros(20);
        assert_eq!(Gap::default().spin(budget), Duration::ZERO, "no history");
        assert_eq!(gaps(&[]).spin(budget), Duration::ZERO, "one batch");
        assert_eq!(gaps(&[5; 16]).spin(budget), Duration::from_micros(5));
        assert_eq!(gaps(&[50; 16]).spin(budget), Duration::ZERO, "a trickle");
        assert_eq!(gaps(&[5; 16]).spin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn one_pause_does_not_stop_the_spinning_but_a_trickle_does() {
        let budget = Duration::from_micros(20);
        // Saturation, then a pause of a millisecond (the NF was off the CPU): it
        // counts as 80 µs, and a saturated NF keeps polling, for about the mean gap.
        let mut history = vec![2; 32];
        history.push(1_000);
        let spin = gaps(&history).spin(budget);
        assert!(spin > Duration::ZERO && spin < budget, "{spin:?}");
        // Batches a millisecond apart from then on: it sleeps.
        history.extend([1_000; 8]);
        assert_eq!(gaps(&history).spin(budget), Duration::ZERO);
    }
}
