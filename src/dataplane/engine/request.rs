//! The typed requests the control plane sends the engine thread, each with its reply
//! channel, and the one `match` that carries them out between two polls.
//!
//! A request is plain data: what to do to the device model or an NF's port, never
//! code. The engine thread owns the NIC; these are the only ways to change it from
//! outside, so every one of them is listed here.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::{ChainEgress, Engine, EngineError, Isolation};
use crate::dataplane::counters::{Counters, DROP_REASONS, Drop as DropReason, VfStats};
use crate::dataplane::r#gen::SinkStats;
use crate::dataplane::port::Face;
use crate::nic::iommu::FaultCounts;
use crate::nic::{Link, MacAddr, Nic, Owner, VfAdmin, VfId, VfUpdate, WireMatch};

/// Where the engine sends the answer to one request.
#[derive(Debug)]
pub struct Reply<T>(SyncSender<T>);

impl<T> Reply<T> {
    /// A reply channel and the receiver its answer arrives on.
    pub fn channel() -> (Reply<T>, Receiver<T>) {
        let (tx, rx) = sync_channel(1);
        (Reply(tx), rx)
    }

    /// Answers; a requester that stopped waiting is no error.
    pub fn send(self, answer: T) {
        let _ = self.0.send(answer);
    }
}

/// How an NF took a configuration posted to its mailbox: `Ok` applied in place,
/// `Err(why)` not (it must be restarted to take it).
pub type ConfigAnswer = Result<(), String>;

/// A configuration posted to an NF's mailbox.
#[derive(Debug)]
pub struct Posted {
    /// The generation the NF answers for.
    pub generation: u32,
    /// The NF's answer arrives here (the sender is dropped, without an answer, if
    /// the NF detaches or a newer configuration replaces this one).
    pub answer: Receiver<ConfigAnswer>,
}

/// What shows that the NF on a VF is alive: its heartbeat register and the
/// frames waiting on its rx ring, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    /// The VF.
    pub vf: VfId,
    /// The NF's heartbeat count.
    pub heartbeat: u32,
    /// Frames posted on rx that the NF has not taken.
    pub rx_waiting: u32,
}

/// The PF as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfStatus {
    /// Its MAC.
    pub mac: MacAddr,
    /// Its uplink.
    pub link: Link,
    /// VFs it can have.
    pub total_vfs: u16,
    /// VFs enabled.
    pub num_vfs: u16,
}

/// One VF as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfStatus {
    /// The host-set configuration.
    pub admin: VfAdmin,
    /// The MAC in effect (admin-set or assigned).
    pub mac: MacAddr,
    /// Whether the VF's link is up (its link state and the PF's link).
    pub link_up: bool,
    /// Whether its queue is halted: its NF broke a ring (an index that jumped)
    /// and has not reset the function since.
    pub halted: bool,
}

/// Every counter of the PF, read on the engine thread between two polls: one
/// consistent moment, so sums across counters hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// The uplink's.
    pub wire: WireStats,
    /// Each VF's, by index, for every VF the counters cover.
    pub vfs: Vec<VfStats>,
    /// The gen wire's sink; `None` on other wires.
    pub sink: Option<SinkStats>,
}

/// A snapshot of the uplink's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Frames received from the wire.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames sent to the wire.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub drops: [u64; DROP_REASONS],
    /// Frames sent by the VLAN id they left with (0 = untagged), where non-zero.
    pub tx_vlan: BTreeMap<u16, u64>,
}

impl WireStats {
    fn read(counters: &Counters) -> WireStats {
        let w = &counters.wire;
        WireStats {
            rx_packets: w.rx_packets.get(),
            rx_bytes: w.rx_bytes.get(),
            tx_packets: w.tx_packets.get(),
            tx_bytes: w.tx_bytes.get(),
            drops: DropReason::ALL.map(|r| w.drops(r)),
            tx_vlan: (0..4096)
                .map(|vid| (vid, w.tx_vlan_packets(vid)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// Drops for one reason.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .zip(self.drops)
            .find_map(|(r, n)| (*r == reason).then_some(n))
            .unwrap_or(0)
    }

    /// Frames sent to the wire with VLAN id `vid` (0 = untagged).
    pub fn tx_vlan_packets(&self, vid: u16) -> u64 {
        self.tx_vlan.get(&vid).copied().unwrap_or(0)
    }
}

/// A copy of the device model and the engine's view of its ports, for inspection.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The NIC: VFs, switch, IOMMU, interrupt remapping.
    pub nic: Nic,
    /// VFs with an attached NF whose DMA is enabled.
    pub active: Vec<VfId>,
    /// Each `shared` chain's frames: who holds them, by the host's record and by
    /// what the hops' rings hold.
    pub shared_chains: Vec<ChainFrames>,
}

/// The frames of one `shared` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFrames {
    /// Its hops, in order.
    pub hops: Vec<VfId>,
    /// How many frames the host records for each hop (its NF holds them, or its
    /// next NF gets them).
    pub recorded: Vec<(VfId, usize)>,
    /// The frames on each attached hop's four rings right now, by IOVA. When no
    /// frame is in flight, every frame of the chain is on exactly one ring.
    pub on_rings: Vec<(VfId, Vec<u64>)>,
    /// Which hop each hop's NF feeds directly.
    pub links: Vec<(VfId, VfId)>,
    /// Whether the chain is settling its frames after a hop stopped (its NFs'
    /// `GetPeer` answers wait, and a new NF's `Hello` is refused).
    pub settling: bool,
}

/// What the control plane asks of the engine.
#[derive(Debug)]
pub enum EngineRequest {
    /// The PF's MAC, link and VF counts.
    Pf {
        /// The answer.
        reply: Reply<PfStatus>,
    },
    /// Enables `num_vfs` VFs; a different non-zero count is reached through 0.
    SetVfCount {
        /// VFs to enable.
        num_vfs: u16,
        /// The answer.
        reply: Reply<Result<(), EngineError>>,
    },
    /// Sets the PF's uplink state.
    SetLink {
        /// Up or down.
        link: Link,
        /// Done.
        reply: Reply<()>,
    },
    /// One VF's configuration and link.
    Vf {
        /// The VF.
        vf: VfId,
        /// The answer.
        reply: Reply<Result<VfStatus, EngineError>>,
    },
    /// Every enabled VF's status, by index: one round trip for all of them.
    Vfs {
        /// The answer.
        reply: Reply<Vec<VfStatus>>,
    },
    /// Writes VF admin fields; with `dry_run`, to a copy of the device model only
    /// (the same rules as the real write, nothing changed).
    UpdateVf {
        /// The VF.
        vf: VfId,
        /// The fields to write.
        update: VfUpdate,
        /// Check only.
        dry_run: bool,
        /// The admin config after the write.
        reply: Reply<Result<VfAdmin, EngineError>>,
    },
    /// Function-level reset: the NF is detached and the VF scrubbed and reset.
    ResetVf {
        /// The VF.
        vf: VfId,
        /// Done.
        reply: Reply<()>,
    },
    /// Registers an NF's socket for `vf`, assigning the VF to `owner` if free; the NF
    /// then attaches with `Hello { token }`.
    Attach {
        /// The VF.
        vf: VfId,
        /// The NF.
        owner: Owner,
        /// What the NF must say in `Hello`.
        token: String,
        /// The NF's configuration, answered to `GetConfig` (never in argv).
        config: String,
        /// The host end of the NF's attach socket.
        sock: OwnedFd,
        /// The answer.
        reply: Reply<Result<(), EngineError>>,
    },
    /// Opens the endpoint of an external NF on `vf` (assigning the VF to `owner`):
    /// connections on `listener` attach with `secret` as their token, and
    /// memif clients on `memif_listener` with it as their memif secret.
    Listen {
        /// The VF.
        vf: VfId,
        /// The NF.
        owner: Owner,
        /// The VF's secret.
        secret: String,
        /// The NF's configuration, answered to `GetConfig`.
        config: String,
        /// A bound, listening, nonblocking `SOCK_SEQPACKET` socket.
        listener: OwnedFd,
        /// The same, for memif.
        memif_listener: OwnedFd,
        /// The answer.
        reply: Reply<Result<(), EngineError>>,
    },
    /// Detaches the NF on `vf` and scrubs the VF; the VF stays assigned.
    Detach {
        /// The VF.
        vf: VfId,
        /// Done.
        reply: Reply<()>,
    },
    /// Detaches and unassigns a VF (its NF was deleted).
    Release {
        /// The VF.
        vf: VfId,
        /// The answer.
        reply: Reply<Result<(), EngineError>>,
    },
    /// Programs the switch (and, for `shared`, one IOMMU domain) for a chain over
    /// `hops`: wire frames matching `classifier` → hop 1 → … → last hop → wire, as
    /// `egress` says. Hops get spoof check off and the classifier's VLAN as their
    /// port VLAN. Send before the hops' NFs attach. On an error nothing is left
    /// half-installed.
    InstallChain {
        /// The chain's VFs, in order.
        hops: Vec<VfId>,
        /// How its NFs share memory.
        isolation: Isolation,
        /// The wire frames it takes.
        classifier: WireMatch,
        /// How frames leave it.
        egress: ChainEgress,
        /// The answer.
        reply: Reply<Result<(), EngineError>>,
    },
    /// Takes a chain down: its VFs released and unsteered, and back to power-on
    /// switching config (VLAN 0, spoof check on) for their next owner.
    RemoveChain {
        /// The chain's VFs.
        hops: Vec<VfId>,
        /// Done.
        reply: Reply<()>,
    },
    /// Posts a configuration to the mailbox of the NF on `vf`; `None` if no NF is
    /// attached there with DMA enabled.
    PostConfig {
        /// The VF.
        vf: VfId,
        /// The NF's configuration (JSON).
        config: String,
        /// The answer.
        reply: Reply<Option<Posted>>,
    },
    /// The [`Pulse`] of every VF whose NF is attached with DMA enabled.
    Pulses {
        /// The answer.
        reply: Reply<Vec<Pulse>>,
    },
    /// Whether an NF is attached to `vf` with DMA enabled.
    IsActive {
        /// The VF.
        vf: VfId,
        /// The answer.
        reply: Reply<bool>,
    },
    /// Answers once an NF is attached to `vf` with DMA enabled, at once if one is;
    /// dropped unanswered if the NF on `vf` detaches first.
    WhenActive {
        /// The VF.
        vf: VfId,
        /// Answered when the NF enables DMA.
        reply: Reply<()>,
    },
    /// DMA faults of each enabled VF, by reason.
    FaultCounts {
        /// One entry per enabled VF, by index.
        reply: Reply<Vec<FaultCounts>>,
    },
    /// Every counter at one moment.
    Counters {
        /// The answer.
        reply: Reply<CountersSnapshot>,
    },
    /// A copy of the device model.
    Snapshot {
        /// The answer.
        reply: Reply<Snapshot>,
    },
}

impl Engine {
    /// Carries out one request.
    pub(super) fn handle(&mut self, request: EngineRequest) {
        match request {
            EngineRequest::Pf { reply } => {
                let pf = self.nic.pf();
                reply.send(PfStatus {
                    mac: pf.mac(),
                    link: pf.link(),
                    total_vfs: pf.total_vfs(),
                    num_vfs: pf.num_vfs(),
                });
            }
            EngineRequest::SetVfCount { num_vfs, reply } => {
                reply.send(self.set_vf_count(num_vfs));
            }
            EngineRequest::SetLink { link, reply } => {
                self.nic.set_link(link);
                reply.send(());
            }
            EngineRequest::Vf { vf, reply } => reply.send(self.vf_status(vf)),
            EngineRequest::Vfs { reply } => reply.send(
                (0..self.nic.pf().num_vfs())
                    .map_while(|i| self.vf_status(VfId(i)).ok())
                    .collect(),
            ),
            EngineRequest::UpdateVf {
                vf,
                update,
                dry_run,
                reply,
            } => {
                let result = if dry_run {
                    update_vf(&mut self.nic.clone(), vf, &update)
                } else {
                    update_vf(&mut self.nic, vf, &update)
                };
                reply.send(result);
            }
            EngineRequest::ResetVf { vf, reply } => {
                self.detach(vf);
                // An unassigned or disabled VF has nothing to reset.
                let _ = self.nic.flr(vf);
                reply.send(());
            }
            EngineRequest::Attach {
                vf,
                owner,
                token,
                config,
                sock,
                reply,
            } => reply.send(self.attach(vf, owner, token, config, sock, Face::Native)),
            EngineRequest::Listen {
                vf,
                owner,
                secret,
                config,
                listener,
                memif_listener,
                reply,
            } => reply.send(self.listen(vf, owner, secret, config, listener, memif_listener)),
            EngineRequest::Detach { vf, reply } => {
                self.detach(vf);
                reply.send(());
            }
            EngineRequest::Release { vf, reply } => reply.send(self.release(vf)),
            EngineRequest::InstallChain {
                hops,
                isolation,
                classifier,
                egress,
                reply,
            } => reply.send(self.install_chain(&hops, isolation, classifier, egress)),
            EngineRequest::RemoveChain { hops, reply } => {
                self.remove_chain(&hops);
                reply.send(());
            }
            EngineRequest::PostConfig { vf, config, reply } => {
                reply.send(self.post_config(vf, config));
            }
            EngineRequest::IsActive { vf, reply } => reply.send(self.is_active(vf)),
            EngineRequest::Pulses { reply } => reply.send(self.pulses()),
            EngineRequest::WhenActive { vf, reply } => {
                if self.is_active(vf) {
                    reply.send(());
                } else {
                    self.activation.push((vf, reply));
                }
            }
            EngineRequest::FaultCounts { reply } => {
                let iommu = self.nic.iommu();
                let counts = (0..self.nic.pf().num_vfs())
                    .map(|i| iommu.fault_counts(VfId(i)))
                    .collect();
                reply.send(counts);
            }
            EngineRequest::Counters { reply } => {
                // What crossed direct hops since the last pass counts too.
                self.count_hops();
                let c = &self.counters;
                reply.send(CountersSnapshot {
                    wire: WireStats::read(c),
                    vfs: (0..c.len())
                        .map(|i| c.vf(VfId(i as u16)).snapshot())
                        .collect(),
                    sink: self.sink_stats(),
                });
            }
            EngineRequest::Snapshot { reply } => reply.send(Snapshot {
                nic: self.nic.clone(),
                active: self.active.clone(),
                shared_chains: self.chain_frames(),
            }),
        }
    }

    fn set_vf_count(&mut self, num_vfs: u16) -> Result<(), EngineError> {
        let current = self.nic.pf().num_vfs();
        if current == num_vfs {
            return Ok(());
        }
        if current != 0 && num_vfs != 0 {
            self.nic.set_num_vfs(0)?;
        }
        Ok(self.nic.set_num_vfs(num_vfs)?)
    }

    fn vf_status(&self, vf: VfId) -> Result<VfStatus, EngineError> {
        let v = self.nic.vf(vf)?;
        Ok(VfStatus {
            admin: v.admin().clone(),
            mac: v.mac(),
            link_up: v.link(self.nic.pf().link()) == Link::Up,
            halted: self
                .port(vf)
                .is_some_and(|p| p.state == crate::dataplane::port::PortState::Halted),
        })
    }
}

fn update_vf(nic: &mut Nic, vf: VfId, update: &VfUpdate) -> Result<VfAdmin, EngineError> {
    nic.update_vf(vf, update)?;
    Ok(nic.vf(vf)?.admin().clone())
}
