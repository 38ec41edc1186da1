//! The whole emulated NIC: the PF and its VFs, the embedded switch, DMA remapping and
//! interrupt remapping, kept consistent with each other.
//!
//! The parts are independent models; this type is what ties them: a VF's registers
//! program its switch port, an owner change clears what the previous owner set up, a
//! new VF count rebuilds every table. The engine and the control plane only ever hold a
//! [`Nic`].

use thiserror::Error;

use super::iommu::{
    Access, DmaFault, DomainError, DomainId, Iommu, MapError, Mapping, Perms, Region, Translation,
    UnmapError,
};
use super::irq::{InterruptSink, IrqError, IrqRemap, Raise};
use super::pf::{Pf, PfConfig, PfError};
use super::types::{Iova, Link, MacAddr, Micros, Owner, Vector, VfId};
use super::veb::{Decision, Port, SteerError, TxSteer, Veb, WireMatch};
use super::vf::{Vf, VfError, VfUpdate};

/// A refused NIC operation. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NicError {
    /// PF-level refusal (VF count, ownership, unknown VF).
    #[error(transparent)]
    Pf(#[from] PfError),
    /// A VF register write was refused.
    #[error("{vf}: {source}")]
    Vf {
        /// The VF.
        vf: VfId,
        /// Why.
        #[source]
        source: VfError,
    },
    /// Two VFs may not share a MAC: the switch could not tell them apart.
    #[error("MAC {mac} is already in use by {other}")]
    DuplicateMac {
        /// The MAC.
        mac: MacAddr,
        /// The VF that has it.
        other: VfId,
    },
    /// DMA mapping refused.
    #[error(transparent)]
    Map(#[from] MapError),
    /// DMA unmapping refused.
    #[error(transparent)]
    Unmap(#[from] UnmapError),
    /// IOMMU domain operation refused.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Interrupt table write refused.
    #[error(transparent)]
    Irq(#[from] IrqError),
    /// Steering rule refused.
    #[error(transparent)]
    Steer(#[from] SteerError),
}

/// What releasing a VF cleaned up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Who had it.
    pub owner: Option<Owner>,
    /// The mappings that were removed (the engine drops its references to the memory).
    pub mappings: Vec<Mapping>,
}

/// The emulated SR-IOV NIC.
#[derive(Debug, Clone)]
pub struct Nic {
    pf: Pf,
    veb: Veb,
    iommu: Iommu,
    irq: IrqRemap,
}

impl Nic {
    /// A NIC with SR-IOV disabled.
    pub fn new(config: &PfConfig) -> Result<Self, NicError> {
        Ok(Nic {
            pf: Pf::new(config)?,
            veb: Veb::new(0),
            iommu: Iommu::new(0),
            irq: IrqRemap::new(0),
        })
    }

    /// The PF and its VF table.
    pub fn pf(&self) -> &Pf {
        &self.pf
    }

    /// One VF.
    pub fn vf(&self, vf: VfId) -> Result<&Vf, NicError> {
        Ok(self.pf.vf(vf)?)
    }

    /// The switch.
    pub fn veb(&self) -> &Veb {
        &self.veb
    }

    /// DMA remapping.
    pub fn iommu(&self) -> &Iommu {
        &self.iommu
    }

    /// Interrupt remapping.
    pub fn irq(&self) -> &IrqRemap {
        &self.irq
    }

    /// Writes `sriov_numvfs` and rebuilds the switch, IOMMU and interrupt tables.
    pub fn set_num_vfs(&mut self, n: u16) -> Result<(), NicError> {
        if n == self.pf.num_vfs() {
            return Ok(());
        }
        self.pf.set_num_vfs(n)?;
        self.veb = Veb::new(n);
        self.veb.set_uplink(self.pf.link());
        self.iommu.reset(n);
        self.irq.reset(n);
        for i in 0..n {
            self.sync_port(VfId(i));
        }
        Ok(())
    }

    /// Sets the uplink's carrier; VFs in link state `auto` follow it.
    pub fn set_link(&mut self, link: Link) {
        self.pf.set_link(link);
        self.veb.set_uplink(link);
        for i in 0..self.pf.num_vfs() {
            self.sync_port(VfId(i));
        }
    }

    fn sync_port(&mut self, vf: VfId) {
        let pf_link = self.pf.link();
        let port = self.pf.vf(vf).ok().map(|v| Port {
            mac: v.mac(),
            vlan: v.admin().port_vlan(),
            spoof_check: v.admin().spoof_check,
            trust: v.admin().trust,
            up: v.link(pf_link) == Link::Up,
        });
        // The switch has a port for every enabled VF.
        let _ = self.veb.set_port(vf, port);
    }

    fn check_unique_mac(&self, vf: VfId, mac: MacAddr) -> Result<(), NicError> {
        match self
            .pf
            .vfs()
            .iter()
            .find(|v| v.id() != vf && v.mac() == mac)
        {
            Some(other) => Err(NicError::DuplicateMac {
                mac,
                other: other.id(),
            }),
            None => Ok(()),
        }
    }

    /// A host write to a VF's admin config (validated whole).
    pub fn update_vf(&mut self, vf: VfId, update: &VfUpdate) -> Result<(), NicError> {
        let current = self.pf.vf(vf)?;
        let next = update
            .applied_to(current.admin())
            .map_err(|source| NicError::Vf { vf, source })?;
        if let Some(mac) = next.mac {
            self.check_unique_mac(vf, mac)?;
        }
        self.pf
            .vf_mut(vf)?
            .apply(update)
            .map_err(|source| NicError::Vf { vf, source })?;
        self.sync_port(vf);
        Ok(())
    }

    /// The VF driver asks for its own MAC.
    pub fn request_mac(&mut self, vf: VfId, mac: MacAddr) -> Result<(), NicError> {
        self.check_unique_mac(vf, mac)?;
        self.pf
            .vf_mut(vf)?
            .request_mac(mac)
            .map_err(|source| NicError::Vf { vf, source })?;
        self.sync_port(vf);
        Ok(())
    }

    /// Sets a VF's bus-master enable.
    pub fn set_bus_master(&mut self, vf: VfId, enabled: bool) -> Result<(), NicError> {
        self.pf.vf_mut(vf)?.set_bus_master(enabled);
        Ok(())
    }

    /// Gives a VF to an NF.
    pub fn assign(&mut self, vf: VfId, owner: Owner) -> Result<(), NicError> {
        self.pf.assign(vf, owner.clone())?;
        self.irq.set_owner(vf, Some(owner))?;
        Ok(())
    }

    /// Gives the lowest free VF to an NF.
    pub fn assign_any(&mut self, owner: Owner) -> Result<VfId, NicError> {
        let vf = self.pf.assign_any(owner.clone())?;
        self.irq.set_owner(vf, Some(owner))?;
        Ok(vf)
    }

    /// Function-level reset: rings and function state back to power-on, vectors masked;
    /// admin config, mappings and vector bindings kept (the VF contract's `Reset`).
    pub fn flr(&mut self, vf: VfId) -> Result<(), NicError> {
        self.pf.vf_mut(vf)?.flr();
        self.irq.flr(vf)?;
        self.sync_port(vf);
        Ok(())
    }

    /// Cleans a VF whose NF is gone but which stays assigned (the NF will be restarted):
    /// FLR (no more DMA), every mapping in its private domain removed, every vector
    /// unbound. Steering and a shared chain domain stay, since the chain still exists.
    /// Returns the mappings removed.
    pub fn scrub(&mut self, vf: VfId) -> Result<Vec<Mapping>, NicError> {
        self.flr(vf)?;
        let domain = self.iommu.domain_of(vf).ok_or(DomainError::NoSuchVf(vf))?;
        let shared = self.iommu.members(domain).count() > 1;
        let mappings = if shared {
            Vec::new()
        } else {
            self.iommu.unmap_all(domain)
        };
        let owner = self.pf.vf(vf)?.owner().cloned();
        // Re-recording the owner through "nobody" unbinds every vector.
        self.irq.set_owner(vf, None)?;
        self.irq.set_owner(vf, owner)?;
        Ok(mappings)
    }

    /// Takes a VF back and cleans it: FLR (no more DMA), every mapping removed, every
    /// vector unbound, every steering rule that names it removed, a shared domain left.
    /// After this nothing the previous owner set up can be reached through the VF.
    pub fn release(&mut self, vf: VfId) -> Result<Released, NicError> {
        self.flr(vf)?;
        let domain = self.iommu.domain_of(vf).ok_or(DomainError::NoSuchVf(vf))?;
        let shared = self.iommu.members(domain).count() > 1;
        let mappings = if shared {
            self.iommu.detach_to_private(vf)?;
            Vec::new()
        } else {
            self.iommu.unmap_all(domain)
        };
        self.irq.set_owner(vf, None)?;
        self.veb.unsteer(vf);
        let owner = self.pf.release(vf)?;
        Ok(Released { owner, mappings })
    }

    /// Installs a DMA mapping in a VF's domain.
    pub fn map_dma(
        &mut self,
        vf: VfId,
        iova: Iova,
        size: u64,
        region: Region,
        offset: u64,
        perms: Perms,
    ) -> Result<(), NicError> {
        let domain = self.domain_of(vf)?;
        Ok(self.iommu.map(domain, iova, size, region, offset, perms)?)
    }

    /// Removes DMA mappings from a VF's domain.
    pub fn unmap_dma(&mut self, vf: VfId, iova: Iova, size: u64) -> Result<Vec<Mapping>, NicError> {
        let domain = self.domain_of(vf)?;
        Ok(self.iommu.unmap(domain, iova, size)?)
    }

    fn domain_of(&self, vf: VfId) -> Result<DomainId, NicError> {
        self.pf.vf(vf)?;
        Ok(self.iommu.domain_of(vf).ok_or(DomainError::NoSuchVf(vf))?)
    }

    /// Puts the VFs of a trusted chain into one new shared domain and returns it.
    pub fn share_domain(&mut self, vfs: &[VfId]) -> Result<DomainId, NicError> {
        for &vf in vfs {
            let domain = self.domain_of(vf)?;
            let mappings = self.iommu.mappings(domain).count();
            if mappings > 0 {
                return Err(DomainError::Busy { vf, mappings }.into());
            }
        }
        let shared = self.iommu.create_domain(super::iommu::DEFAULT_QUOTA);
        for &vf in vfs {
            self.iommu.attach(vf, shared)?;
        }
        Ok(shared)
    }

    /// Installs a mapping in a domain directly (the shared UMEM of a chain).
    pub fn map_domain(
        &mut self,
        domain: DomainId,
        iova: Iova,
        size: u64,
        region: Region,
        offset: u64,
        perms: Perms,
    ) -> Result<(), NicError> {
        Ok(self.iommu.map(domain, iova, size, region, offset, perms)?)
    }

    /// The NIC accesses memory on behalf of a VF (see [`Iommu::translate`]).
    pub fn translate(
        &mut self,
        vf: VfId,
        iova: Iova,
        len: u64,
        access: Access,
    ) -> Result<Translation, DmaFault> {
        self.iommu.translate(vf, iova, len, access)
    }

    /// Drains the fault log.
    pub fn take_faults(&mut self) -> Vec<DmaFault> {
        self.iommu.faults_mut().drain().collect()
    }

    /// Binds a vector on behalf of the VF's owner.
    pub fn bind_irq(
        &mut self,
        vf: VfId,
        vector: Vector,
        requester: &Owner,
        target: super::irq::TargetId,
    ) -> Result<(), NicError> {
        Ok(self.irq.bind(vf, vector, requester, target)?)
    }

    /// Masks or unmasks a vector.
    pub fn set_irq_masked(
        &mut self,
        vf: VfId,
        vector: Vector,
        masked: bool,
    ) -> Result<(), NicError> {
        Ok(self.irq.set_masked(vf, vector, masked)?)
    }

    /// Sets a vector's throttle interval.
    pub fn set_irq_itr(&mut self, vf: VfId, vector: Vector, itr_us: u32) -> Result<(), NicError> {
        Ok(self.irq.set_itr(vf, vector, itr_us)?)
    }

    /// The VF raises an interrupt.
    pub fn raise_irq(
        &mut self,
        vf: VfId,
        vector: Vector,
        now: Micros,
        sink: &mut dyn InterruptSink,
    ) -> Raise {
        self.irq.raise(vf, vector, now, sink)
    }

    /// Delivers coalesced interrupts that fell due.
    pub fn poll_irqs(&mut self, now: Micros, sink: &mut dyn InterruptSink) -> usize {
        self.irq.poll(now, sink)
    }

    /// Steers wire frames matching `m` to `vf`.
    pub fn steer_wire(&mut self, m: WireMatch, vf: VfId) -> Result<(), NicError> {
        self.pf.vf(vf)?;
        Ok(self.veb.steer_wire(m, vf)?)
    }

    /// Steers what `vf` sends.
    pub fn steer_tx(&mut self, vf: VfId, steer: TxSteer) -> Result<(), NicError> {
        self.pf.vf(vf)?;
        Ok(self.veb.steer_tx(vf, steer)?)
    }

    /// Removes the steering rules that name `vf`.
    pub fn unsteer(&mut self, vf: VfId) {
        self.veb.unsteer(vf);
    }

    /// Switches a frame from the wire.
    #[inline]
    pub fn switch_from_wire(&mut self, frame: &[u8]) -> Decision {
        self.veb.from_wire(frame)
    }

    /// Switches a frame a VF transmitted.
    #[inline]
    pub fn switch_from_vf(&mut self, vf: VfId, frame: &[u8]) -> Decision {
        self.veb.from_vf(vf, frame)
    }

    /// Switches a frame a VF sends back where its traffic came from.
    #[inline]
    pub fn reflect_from_vf(&mut self, vf: VfId, frame: &[u8]) -> Decision {
        self.veb.reflect_from_vf(vf, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::super::iommu::RegionId;
    use super::super::irq::TargetId;
    use super::super::vf::LinkState;
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<TargetId>);

    impl InterruptSink for Recorder {
        fn deliver(&mut self, _vf: VfId, _vector: Vector, target: TargetId) {
            self.0.push(target);
        }
    }

    fn nic(n: u16) -> Nic {
        let mut nic = Nic::new(&PfConfig::default()).unwrap();
        nic.set_num_vfs(n).unwrap();
        nic
    }

    #[test]
    fn vf_registers_program_the_switch() {
        let mut nic = nic(2);
        let mac = MacAddr([2, 0xab, 0, 0, 0, 1]);
        nic.update_vf(
            VfId(1),
            &VfUpdate {
                mac: Some(Some(mac)),
                vlan: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
        let port = nic.veb().port(VfId(1)).unwrap();
        assert_eq!(port.mac, mac);
        assert_eq!(port.vlan.map(|t| t.vid), Some(7));
    }

    #[test]
    fn duplicate_macs_are_refused() {
        let mut nic = nic(2);
        let mac0 = nic.vf(VfId(0)).unwrap().mac();
        let err = nic
            .update_vf(
                VfId(1),
                &VfUpdate {
                    mac: Some(Some(mac0)),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(
            err,
            NicError::DuplicateMac {
                mac: mac0,
                other: VfId(0)
            }
        );
        assert_ne!(nic.vf(VfId(1)).unwrap().mac(), mac0);
    }

    #[test]
    fn auto_link_follows_the_pf() {
        let mut nic = nic(2);
        nic.update_vf(
            VfId(1),
            &VfUpdate {
                link_state: Some(LinkState::Enable),
                ..Default::default()
            },
        )
        .unwrap();
        nic.set_link(Link::Down);
        assert!(!nic.veb().port(VfId(0)).unwrap().up);
        assert!(nic.veb().port(VfId(1)).unwrap().up);
        nic.set_link(Link::Up);
        assert!(nic.veb().port(VfId(0)).unwrap().up);
    }

    #[test]
    fn release_leaves_nothing_of_the_previous_owner() {
        let mut nic = nic(3);
        let owner = Owner::new("fw");
        nic.assign(VfId(1), owner.clone()).unwrap();
        nic.set_bus_master(VfId(1), true).unwrap();
        let region = Region {
            id: RegionId(1),
            len: 1 << 20,
        };
        nic.map_dma(VfId(1), Iova(0), 1 << 20, region, 0, Perms::RW)
            .unwrap();
        nic.bind_irq(VfId(1), Vector::RX, &owner, TargetId(4))
            .unwrap();
        nic.set_irq_masked(VfId(1), Vector::RX, false).unwrap();
        nic.steer_tx(VfId(1), TxSteer::ToVf(VfId(2))).unwrap();

        let released = nic.release(VfId(1)).unwrap();
        assert_eq!(released.owner, Some(owner));
        assert_eq!(released.mappings.len(), 1);
        assert!(!nic.vf(VfId(1)).unwrap().bus_master());
        assert_eq!(nic.vf(VfId(1)).unwrap().owner(), None);
        assert!(nic.translate(VfId(1), Iova(0), 64, Access::Write).is_err());
        let mut rec = Recorder::default();
        assert!(matches!(
            nic.raise_irq(VfId(1), Vector::RX, Micros(0), &mut rec),
            Raise::Blocked(_)
        ));
        assert!(rec.0.is_empty());
        assert_eq!(nic.veb().tx_rule(VfId(1)), None);

        // The next owner starts clean and can set it all up again.
        let next = Owner::new("nat");
        nic.assign(VfId(1), next.clone()).unwrap();
        nic.map_dma(VfId(1), Iova(0), 1 << 20, region, 0, Perms::RW)
            .unwrap();
        nic.bind_irq(VfId(1), Vector::RX, &next, TargetId(5))
            .unwrap();
    }

    #[test]
    fn scrub_cleans_but_keeps_the_assignment_and_steering() {
        let mut nic = nic(3);
        let owner = Owner::new("fw");
        nic.assign(VfId(1), owner.clone()).unwrap();
        let region = Region {
            id: RegionId(1),
            len: 1 << 20,
        };
        nic.map_dma(VfId(1), Iova(0), 1 << 20, region, 0, Perms::RW)
            .unwrap();
        nic.bind_irq(VfId(1), Vector::RX, &owner, TargetId(4))
            .unwrap();
        nic.steer_tx(VfId(1), TxSteer::ToVf(VfId(2))).unwrap();
        nic.set_bus_master(VfId(1), true).unwrap();
        let removed = nic.scrub(VfId(1)).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(nic.translate(VfId(1), Iova(0), 64, Access::Write).is_err());
        assert!(!nic.vf(VfId(1)).unwrap().bus_master());
        let mut rec = Recorder::default();
        nic.set_irq_masked(VfId(1), Vector::RX, false).unwrap();
        assert!(matches!(
            nic.raise_irq(VfId(1), Vector::RX, Micros(0), &mut rec),
            Raise::Blocked(_)
        ));
        assert_eq!(nic.vf(VfId(1)).unwrap().owner(), Some(&owner));
        assert_eq!(nic.veb().tx_rule(VfId(1)), Some(TxSteer::ToVf(VfId(2))));
        nic.bind_irq(VfId(1), Vector::RX, &owner, TargetId(5))
            .unwrap();
    }

    #[test]
    fn shared_chain_domains_are_left_on_release() {
        let mut nic = nic(3);
        let domain = nic.share_domain(&[VfId(0), VfId(1)]).unwrap();
        let region = Region {
            id: RegionId(1),
            len: 1 << 20,
        };
        nic.map_domain(domain, Iova(0), 1 << 20, region, 0, Perms::RW)
            .unwrap();
        assert!(nic.iommu().same_domain(VfId(0), VfId(1)));
        nic.assign(VfId(0), Owner::new("a")).unwrap();
        let released = nic.release(VfId(0)).unwrap();
        assert!(
            released.mappings.is_empty(),
            "the chain's shared UMEM stays for the others"
        );
        assert!(!nic.iommu().same_domain(VfId(0), VfId(1)));
        assert!(nic.translate(VfId(0), Iova(0), 64, Access::Write).is_err());
        assert!(nic.translate(VfId(1), Iova(0), 64, Access::Write).is_ok());
    }

    #[test]
    fn vf_count_changes_rebuild_every_table() {
        let mut nic = nic(4);
        nic.assign(VfId(0), Owner::new("a")).unwrap();
        assert!(matches!(
            nic.set_num_vfs(0),
            Err(NicError::Pf(PfError::VfsAssigned(_)))
        ));
        nic.release(VfId(0)).unwrap();
        nic.set_num_vfs(0).unwrap();
        assert!(nic.veb().port(VfId(0)).is_none());
        nic.set_num_vfs(8).unwrap();
        assert!(nic.veb().port(VfId(7)).is_some());
        assert!(nic.iommu().domain_of(VfId(7)).is_some());
    }

    #[test]
    fn errors_name_the_vf() {
        let mut nic = nic(1);
        let err = nic
            .update_vf(
                VfId(0),
                &VfUpdate {
                    mtu: Some(10),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "vf0: MTU 10 is out of range 68-9216");
        let err = nic.update_vf(VfId(5), &VfUpdate::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vf5 does not exist: this PF has 1 VFs enabled"
        );
    }
}
