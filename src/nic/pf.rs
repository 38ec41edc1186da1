//! The physical function: the port, its MAC and link, and the table of VFs it carves.
//!
//! Changing the VF count follows the kernel's `sriov_numvfs` rules
//! (Documentation/PCI/pci-iov-howto.rst and `sriov_numvfs_store()`): a count above
//! `sriov_totalvfs` is refused, and going from one non-zero count to another is
//! `-EBUSY`: write 0 first. nfhost adds what libvirt's hostdev pools enforce: VFs that
//! are still assigned to an NF cannot be destroyed.

use thiserror::Error;

use super::types::{Link, MacAddr, Owner, PfId, VfId};
use super::vf::Vf;

/// Default `sriov_totalvfs` of the emulated NIC.
pub const TOTAL_VFS_DEFAULT: u16 = 64;
/// Largest `sriov_totalvfs` the emulated NIC may be built with (the 8-bit
/// routing-ID space of one bus, as on real devices).
pub const TOTAL_VFS_MAX: u16 = 256;

/// How to build a PF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfConfig {
    /// Which PF this is.
    pub id: PfId,
    /// The port's MAC; VF power-on MACs are derived from it.
    pub mac: MacAddr,
    /// How many VFs the device can expose.
    pub total_vfs: u16,
}

impl Default for PfConfig {
    fn default() -> Self {
        PfConfig {
            id: PfId(0),
            mac: MacAddr([0x02, 0x4e, 0x46, 0x00, 0x00, 0x00]),
            total_vfs: TOTAL_VFS_DEFAULT,
        }
    }
}

/// A PF operation that was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PfError {
    /// The device cannot be built with that many VFs.
    #[error("total_vfs {0} is out of range 1-256")]
    TotalVfsOutOfRange(u16),
    /// The PF MAC must be unicast.
    #[error("PF MAC {0} is not a unicast address")]
    MacNotUnicast(MacAddr),
    /// More VFs than the device has.
    #[error("cannot enable {requested} VFs: this PF supports at most {total}")]
    TooManyVfs {
        /// Requested count.
        requested: u16,
        /// `sriov_totalvfs`.
        total: u16,
    },
    /// Non-zero to another non-zero count.
    #[error("{current} VFs are enabled; set the count to 0 before changing it to {requested}")]
    Busy {
        /// Current count.
        current: u16,
        /// Requested count.
        requested: u16,
    },
    /// VFs still have owners.
    #[error("cannot disable VFs while assigned: {}", describe_owners(.0))]
    VfsAssigned(Vec<(VfId, Owner)>),
    /// No such VF on this PF.
    #[error("{vf} does not exist: this PF has {num_vfs} VFs enabled")]
    NoSuchVf {
        /// Requested VF.
        vf: VfId,
        /// Enabled count.
        num_vfs: u16,
    },
    /// The VF already belongs to another NF.
    #[error("{vf} is already assigned to {owner}")]
    AlreadyAssigned {
        /// The VF.
        vf: VfId,
        /// Its current owner.
        owner: Owner,
    },
    /// Every enabled VF is assigned.
    #[error("no free VF: all {0} enabled VFs are assigned")]
    NoFreeVf(u16),
}

fn describe_owners(owners: &[(VfId, Owner)]) -> String {
    owners
        .iter()
        .map(|(vf, owner)| format!("{vf} owned by {owner}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The physical function and its VF table.
#[derive(Debug, Clone)]
pub struct Pf {
    id: PfId,
    mac: MacAddr,
    link: Link,
    total_vfs: u16,
    vfs: Vec<Vf>,
}

impl Pf {
    /// A PF with SR-IOV disabled (no VFs) and its link up.
    pub fn new(config: &PfConfig) -> Result<Self, PfError> {
        if config.total_vfs == 0 || config.total_vfs > TOTAL_VFS_MAX {
            return Err(PfError::TotalVfsOutOfRange(config.total_vfs));
        }
        if !config.mac.is_unicast() {
            return Err(PfError::MacNotUnicast(config.mac));
        }
        Ok(Pf {
            id: config.id,
            mac: config.mac,
            link: Link::Up,
            total_vfs: config.total_vfs,
            vfs: Vec::new(),
        })
    }

    /// Which PF.
    pub fn id(&self) -> PfId {
        self.id
    }

    /// The port MAC.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The uplink's carrier.
    pub fn link(&self) -> Link {
        self.link
    }

    /// `sriov_totalvfs`.
    pub fn total_vfs(&self) -> u16 {
        self.total_vfs
    }

    /// `sriov_numvfs`.
    pub fn num_vfs(&self) -> u16 {
        // Never above total_vfs (≤ 256), so it fits.
        self.vfs.len() as u16
    }

    /// The enabled VFs, by index.
    pub fn vfs(&self) -> &[Vf] {
        &self.vfs
    }

    /// One VF.
    pub fn vf(&self, vf: VfId) -> Result<&Vf, PfError> {
        self.vfs.get(vf.index()).ok_or(PfError::NoSuchVf {
            vf,
            num_vfs: self.num_vfs(),
        })
    }

    /// One VF, for writing.
    pub fn vf_mut(&mut self, vf: VfId) -> Result<&mut Vf, PfError> {
        let num_vfs = self.num_vfs();
        self.vfs
            .get_mut(vf.index())
            .ok_or(PfError::NoSuchVf { vf, num_vfs })
    }

    /// Sets the uplink's carrier.
    pub fn set_link(&mut self, link: Link) {
        self.link = link;
    }

    /// Writes `sriov_numvfs`. New VFs come up in their power-on state.
    pub fn set_num_vfs(&mut self, requested: u16) -> Result<(), PfError> {
        let current = self.num_vfs();
        if requested == current {
            return Ok(());
        }
        if requested > self.total_vfs {
            return Err(PfError::TooManyVfs {
                requested,
                total: self.total_vfs,
            });
        }
        if current != 0 && requested != 0 {
            return Err(PfError::Busy { current, requested });
        }
        if requested == 0 {
            let owners: Vec<(VfId, Owner)> = self
                .vfs
                .iter()
                .filter_map(|vf| vf.owner().map(|o| (vf.id(), o.clone())))
                .collect();
            if !owners.is_empty() {
                return Err(PfError::VfsAssigned(owners));
            }
            self.vfs.clear();
        } else {
            self.vfs = (0..requested)
                .map(|i| Vf::new(VfId(i), MacAddr::derived(self.mac, i)))
                .collect();
        }
        Ok(())
    }

    /// Gives a VF to an NF. Assigning a VF to its current owner again is a no-op.
    pub fn assign(&mut self, vf: VfId, owner: Owner) -> Result<(), PfError> {
        let slot = self.vf_mut(vf)?;
        match slot.owner() {
            Some(current) if *current == owner => Ok(()),
            Some(current) => Err(PfError::AlreadyAssigned {
                vf,
                owner: current.clone(),
            }),
            None => {
                slot.set_owner(Some(owner));
                Ok(())
            }
        }
    }

    /// Assigns the lowest free VF.
    pub fn assign_any(&mut self, owner: Owner) -> Result<VfId, PfError> {
        let num_vfs = self.num_vfs();
        let vf = self
            .vfs
            .iter_mut()
            .find(|vf| vf.owner().is_none())
            .ok_or(PfError::NoFreeVf(num_vfs))?;
        vf.set_owner(Some(owner));
        Ok(vf.id())
    }

    /// Takes a VF back from its owner; returns who had it.
    pub fn release(&mut self, vf: VfId) -> Result<Option<Owner>, PfError> {
        let slot = self.vf_mut(vf)?;
        let previous = slot.owner().cloned();
        slot.set_owner(None);
        Ok(previous)
    }

    /// The power-on MAC a VF would get (for checks that a host MAC is not a duplicate).
    pub fn power_on_mac(&self, vf: VfId) -> Result<MacAddr, PfError> {
        Ok(self.vf(vf)?.power_on_mac())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pf {
        Pf::new(&PfConfig::default()).unwrap()
    }

    #[test]
    fn total_vfs_is_bounded() {
        for bad in [0, 257] {
            let config = PfConfig {
                total_vfs: bad,
                ..Default::default()
            };
            assert_eq!(
                Pf::new(&config).unwrap_err(),
                PfError::TotalVfsOutOfRange(bad)
            );
        }
        let config = PfConfig {
            total_vfs: 256,
            ..Default::default()
        };
        let mut pf = Pf::new(&config).unwrap();
        pf.set_num_vfs(256).unwrap();
        assert_eq!(pf.num_vfs(), 256);
    }

    #[test]
    fn defaults_to_64_total_and_none_enabled() {
        let pf = pf();
        assert_eq!(pf.total_vfs(), 64);
        assert_eq!(pf.num_vfs(), 0);
        assert_eq!(pf.link(), Link::Up);
    }

    #[test]
    fn num_vfs_above_total_is_refused() {
        let mut pf = pf();
        assert_eq!(
            pf.set_num_vfs(65),
            Err(PfError::TooManyVfs {
                requested: 65,
                total: 64
            })
        );
        assert_eq!(pf.num_vfs(), 0);
    }

    #[test]
    fn changing_a_nonzero_count_is_busy() {
        let mut pf = pf();
        pf.set_num_vfs(8).unwrap();
        assert_eq!(
            pf.set_num_vfs(4),
            Err(PfError::Busy {
                current: 8,
                requested: 4
            })
        );
        assert_eq!(pf.num_vfs(), 8);
        pf.set_num_vfs(8).unwrap();
        pf.set_num_vfs(0).unwrap();
        pf.set_num_vfs(4).unwrap();
        assert_eq!(pf.num_vfs(), 4);
    }

    #[test]
    fn disabling_with_assigned_vfs_names_the_owners() {
        let mut pf = pf();
        pf.set_num_vfs(4).unwrap();
        pf.assign(VfId(1), Owner::new("fw")).unwrap();
        pf.assign(VfId(3), Owner::new("nat")).unwrap();
        let err = pf.set_num_vfs(0).unwrap_err();
        assert_eq!(
            err,
            PfError::VfsAssigned(vec![
                (VfId(1), Owner::new("fw")),
                (VfId(3), Owner::new("nat"))
            ])
        );
        assert_eq!(
            err.to_string(),
            "cannot disable VFs while assigned: vf1 owned by fw, vf3 owned by nat"
        );
        assert_eq!(pf.num_vfs(), 4);
        pf.release(VfId(1)).unwrap();
        pf.release(VfId(3)).unwrap();
        pf.set_num_vfs(0).unwrap();
    }

    #[test]
    fn a_vf_has_one_owner() {
        let mut pf = pf();
        pf.set_num_vfs(2).unwrap();
        pf.assign(VfId(0), Owner::new("a")).unwrap();
        pf.assign(VfId(0), Owner::new("a")).unwrap();
        assert_eq!(
            pf.assign(VfId(0), Owner::new("b")),
            Err(PfError::AlreadyAssigned {
                vf: VfId(0),
                owner: Owner::new("a")
            })
        );
        assert_eq!(pf.assign_any(Owner::new("b")), Ok(VfId(1)));
        assert_eq!(pf.assign_any(Owner::new("c")), Err(PfError::NoFreeVf(2)));
        assert_eq!(pf.release(VfId(0)), Ok(Some(Owner::new("a"))));
        assert_eq!(pf.assign_any(Owner::new("c")), Ok(VfId(0)));
    }

    #[test]
    fn unknown_vfs_are_reported_with_the_count() {
        let mut pf = pf();
        pf.set_num_vfs(2).unwrap();
        let err = pf.vf(VfId(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vf2 does not exist: this PF has 2 VFs enabled"
        );
    }

    #[test]
    fn every_vf_has_its_own_power_on_mac() {
        let mut pf = pf();
        pf.set_num_vfs(64).unwrap();
        let mut macs: Vec<_> = pf.vfs().iter().map(Vf::mac).collect();
        macs.sort();
        macs.dedup();
        assert_eq!(macs.len(), 64);
        assert!(!macs.contains(&pf.mac()));
    }
}
