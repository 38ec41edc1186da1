//! DMA remapping: every address the NIC uses on behalf of a VF is an IOVA, translated
//! through that VF's domain before a single byte moves (the VT-d second-level tables,
//! or VFIO type1's `VFIO_IOMMU_MAP_DMA`).
//!
//! A domain is a set of mappings IOVA → (region, offset, length, permissions). By
//! default each VF has its own domain, so an NF can only make the NIC touch memory it
//! mapped itself. A trusted chain may put several VFs in one shared domain (ARCHITECTURE.md §4),
//! which is what lets a hop hand a descriptor over without a copy.
//!
//! The model holds no memory: a [`RegionId`] names a memory object (a memfd) that the
//! engine resolves. A failed translation is a [`DmaFault`], recorded with the VF, IOVA,
//! length, access and reason in a bounded log and in per-VF counters; nothing is
//! transferred.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use thiserror::Error;

use super::types::{Iova, VfId};

/// Mapping granularity, as the IOMMU's page tables.
pub const PAGE_SIZE: u64 = 4096;
/// Most mappings one domain may hold (VFIO type1's default `dma_entry_limit` is 65535).
pub const MAX_MAPPINGS: usize = 65_535;
/// Default byte quota of a domain.
pub const DEFAULT_QUOTA: u64 = 4 << 30;
/// Default number of faults kept in the log.
pub const FAULT_LOG_CAPACITY: usize = 1024;

/// One IOMMU domain (one set of page tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub u32);

/// A memory object that mappings point into; the engine resolves it to real memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u64);

/// A memory object and its size, as offered to [`Iommu::map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Which object.
    pub id: RegionId,
    /// Its length in bytes.
    pub len: u64,
}

/// The direction of one device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The device reads memory (transmit).
    Read,
    /// The device writes memory (receive).
    Write,
}

/// What a mapping allows the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Device may read.
    pub read: bool,
    /// Device may write.
    pub write: bool,
}

impl Perms {
    /// Read and write.
    pub const RW: Perms = Perms {
        read: true,
        write: true,
    };
    /// Read only (frames the device transmits).
    pub const RO: Perms = Perms {
        read: true,
        write: false,
    };
    /// Write only.
    pub const WO: Perms = Perms {
        read: false,
        write: true,
    };

    /// Whether `access` is allowed.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }
}

/// One installed mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First IOVA.
    pub iova: Iova,
    /// Length in bytes.
    pub size: u64,
    /// The memory behind it.
    pub region: RegionId,
    /// Offset of `iova` within the region.
    pub offset: u64,
    /// Allowed accesses.
    pub perms: Perms,
}

impl Mapping {
    fn end(&self) -> u64 {
        // Validated at map time: iova + size does not wrap.
        self.iova.0 + self.size
    }
}

/// Where a translated access lands: `len` bytes at `offset` of `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Memory object.
    pub region: RegionId,
    /// Byte offset within it.
    pub offset: u64,
    /// Length of the access.
    pub len: u64,
}

/// Why a translation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// No mapping covers the IOVA (or the VF has no domain).
    Unmapped,
    /// A mapping covers it but forbids this access.
    Permission,
    /// The access starts inside a mapping and runs past its end.
    CrossesMappingEnd,
}

impl FaultReason {
    /// Every reason, for counters and metric labels.
    pub const ALL: [FaultReason; 3] = [
        FaultReason::Unmapped,
        FaultReason::Permission,
        FaultReason::CrossesMappingEnd,
    ];

    /// A stable lowercase name (metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            FaultReason::Unmapped => "unmapped",
            FaultReason::Permission => "permission",
            FaultReason::CrossesMappingEnd => "crosses_mapping_end",
        }
    }
}

/// A DMA access that was refused: who, where, how much, which way, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("DMA fault on {vf}: {access:?} of {len} bytes at IOVA {iova}: {}", .reason.as_str())]
pub struct DmaFault {
    /// The VF on whose behalf the NIC accessed memory.
    pub vf: VfId,
    /// First IOVA of the access.
    pub iova: Iova,
    /// Length of the access.
    pub len: u64,
    /// Direction.
    pub access: Access,
    /// Why it was refused.
    pub reason: FaultReason,
}

/// A refused map request. Nothing was installed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    /// The domain does not exist.
    #[error("IOMMU domain {0:?} does not exist")]
    NoSuchDomain(DomainId),
    /// Zero-length mapping.
    #[error("mapping size is 0")]
    ZeroSize,
    /// IOVA, size or region offset not page aligned.
    #[error("IOVA {iova}, size {size:#x} and region offset {offset:#x} must be multiples of 4096")]
    Unaligned {
        /// Requested IOVA.
        iova: Iova,
        /// Requested size.
        size: u64,
        /// Requested offset.
        offset: u64,
    },
    /// IOVA + size past 2^64.
    #[error("mapping at IOVA {iova} of {size:#x} bytes wraps past the top of the address space")]
    Wraps {
        /// Requested IOVA.
        iova: Iova,
        /// Requested size.
        size: u64,
    },
    /// The mapping does not fit in its region.
    #[error(
        "region offset {offset:#x} + size {size:#x} exceeds the region's {region_len:#x} bytes"
    )]
    OutsideRegion {
        /// Requested offset.
        offset: u64,
        /// Requested size.
        size: u64,
        /// The region's length.
        region_len: u64,
    },
    /// Neither read nor write.
    #[error("mapping grants no access (neither read nor write)")]
    NoAccess,
    /// Overlaps an existing mapping.
    #[error("IOVA range {iova}+{size:#x} overlaps the mapping at {} of {:#x} bytes", .existing.iova, .existing.size)]
    Overlap {
        /// Requested IOVA.
        iova: Iova,
        /// Requested size.
        size: u64,
        /// The mapping in the way.
        existing: Mapping,
    },
    /// The domain has [`MAX_MAPPINGS`] already.
    #[error("domain already holds the maximum of 65535 mappings")]
    TooManyMappings,
    /// The domain's byte quota would be exceeded.
    #[error(
        "mapping {requested} bytes would exceed the domain quota ({used} of {quota} bytes used)"
    )]
    QuotaExceeded {
        /// Requested size.
        requested: u64,
        /// Already mapped.
        used: u64,
        /// The quota.
        quota: u64,
    },
}

/// A refused unmap request. Nothing was removed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnmapError {
    /// The domain does not exist.
    #[error("IOMMU domain {0:?} does not exist")]
    NoSuchDomain(DomainId),
    /// No mapping lies in the range.
    #[error("nothing is mapped in IOVA range {iova}+{size:#x}")]
    NotMapped {
        /// Requested IOVA.
        iova: Iova,
        /// Requested size.
        size: u64,
    },
    /// The range would cut a mapping in two (VFIO type1 v2 refuses this too).
    #[error("IOVA range {iova}+{size:#x} covers only part of the mapping at {}", .mapping.iova)]
    SplitsMapping {
        /// Requested IOVA.
        iova: Iova,
        /// Requested size.
        size: u64,
        /// The mapping that would be split.
        mapping: Mapping,
    },
}

/// A refused domain operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The VF is beyond the IOMMU's VF table.
    #[error("{0} is not known to the IOMMU")]
    NoSuchVf(VfId),
    /// The domain does not exist.
    #[error("IOMMU domain {0:?} does not exist")]
    NoSuchDomain(DomainId),
    /// Moving a VF with live mappings in its private domain would orphan them.
    #[error("{vf} still has {mappings} mappings in its domain; unmap them first")]
    Busy {
        /// The VF.
        vf: VfId,
        /// How many mappings remain.
        mappings: usize,
    },
    /// The quota is below what is already mapped.
    #[error("quota {quota} is below the {used} bytes already mapped")]
    QuotaBelowUsage {
        /// Requested quota.
        quota: u64,
        /// Mapped bytes.
        used: u64,
    },
}

/// Faults by reason, for one VF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// [`FaultReason::Unmapped`].
    pub unmapped: u64,
    /// [`FaultReason::Permission`].
    pub permission: u64,
    /// [`FaultReason::CrossesMappingEnd`].
    pub crosses_mapping_end: u64,
}

impl FaultCounts {
    /// The count for one reason.
    pub fn get(&self, reason: FaultReason) -> u64 {
        match reason {
            FaultReason::Unmapped => self.unmapped,
            FaultReason::Permission => self.permission,
            FaultReason::CrossesMappingEnd => self.crosses_mapping_end,
        }
    }

    fn bump(&mut self, reason: FaultReason) {
        let slot = match reason {
            FaultReason::Unmapped => &mut self.unmapped,
            FaultReason::Permission => &mut self.permission,
            FaultReason::CrossesMappingEnd => &mut self.crosses_mapping_end,
        };
        *slot += 1;
    }

    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.unmapped + self.permission + self.crosses_mapping_end
    }
}

/// The newest faults, bounded; older ones are overwritten and counted.
#[derive(Clone)]
pub struct FaultLog {
    entries: VecDeque<DmaFault>,
    capacity: usize,
    overwritten: u64,
}

impl fmt::Debug for FaultLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLog")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
            .field("overwritten", &self.overwritten)
            .finish()
    }
}

impl FaultLog {
    fn new(capacity: usize) -> Self {
        FaultLog {
            entries: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            overwritten: 0,
        }
    }

    fn push(&mut self, fault: DmaFault) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.overwritten += 1;
        }
        self.entries.push_back(fault);
    }

    /// Faults kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &DmaFault> + ExactSizeIterator {
        self.entries.iter()
    }

    /// Faults that fell out of the log.
    pub fn overwritten(&self) -> u64 {
        self.overwritten
    }

    /// Faults ever recorded.
    pub fn total(&self) -> u64 {
        self.overwritten + self.entries.len() as u64
    }

    /// Removes and returns the kept faults, oldest first (for the engine to publish).
    pub fn drain(&mut self) -> impl Iterator<Item = DmaFault> + '_ {
        self.entries.drain(..)
    }
}

#[derive(Debug, Clone)]
struct Domain {
    /// Mappings keyed by first IOVA; never overlapping.
    mappings: BTreeMap<u64, Mapping>,
    bytes: u64,
    quota: u64,
}

impl Domain {
    fn new(quota: u64) -> Self {
        Domain {
            mappings: BTreeMap::new(),
            bytes: 0,
            quota,
        }
    }

    /// The mapping containing `iova`, if any.
    fn containing(&self, iova: u64) -> Option<&Mapping> {
        self.mappings
            .range(..=iova)
            .next_back()
            .map(|(_, m)| m)
            .filter(|m| iova < m.end())
    }

    /// The first mapping that intersects `[start, end)`.
    fn first_overlap(&self, start: u64, end: u64) -> Option<&Mapping> {
        if let Some(m) = self.containing(start) {
            return Some(m);
        }
        self.mappings.range(start..end).next().map(|(_, m)| m)
    }
}

/// The IOMMU of one PF: domains, the VF → domain table, the fault log.
#[derive(Debug, Clone)]
pub struct Iommu {
    domains: BTreeMap<DomainId, Domain>,
    next_domain: u32,
    vf_domain: Vec<DomainId>,
    fault_counts: Vec<FaultCounts>,
    faults: FaultLog,
    /// The IOTLB: the mapping each VF used last, as VT-d caches translations. Every
    /// change to any mapping or domain membership flushes it whole (a global
    /// invalidation), so a cached entry is never stale.
    iotlb: Vec<Option<Mapping>>,
}

impl Default for Iommu {
    fn default() -> Self {
        Iommu::new(0)
    }
}

impl Iommu {
    /// An IOMMU with a private domain for each of `num_vfs` VFs.
    pub fn new(num_vfs: u16) -> Self {
        let mut iommu = Iommu {
            domains: BTreeMap::new(),
            next_domain: 0,
            vf_domain: Vec::new(),
            fault_counts: Vec::new(),
            faults: FaultLog::new(FAULT_LOG_CAPACITY),
            iotlb: Vec::new(),
        };
        iommu.reset(num_vfs);
        iommu
    }

    /// Throws away every domain and mapping and gives each of `num_vfs` VFs a fresh
    /// private domain (the VF count changed: the old functions are gone).
    pub fn reset(&mut self, num_vfs: u16) {
        self.iotlb = vec![None; usize::from(num_vfs)];
        self.domains.clear();
        self.vf_domain.clear();
        self.fault_counts = vec![FaultCounts::default(); usize::from(num_vfs)];
        for _ in 0..num_vfs {
            let domain = self.create_domain(DEFAULT_QUOTA);
            self.vf_domain.push(domain);
        }
    }

    /// Sets how many faults the log keeps (the newest are kept).
    pub fn set_fault_log_capacity(&mut self, capacity: usize) {
        let mut log = FaultLog::new(capacity);
        log.overwritten = self.faults.overwritten;
        for fault in self.faults.entries.drain(..) {
            log.push(fault);
        }
        self.faults = log;
    }

    /// A new empty domain with the given byte quota.
    pub fn create_domain(&mut self, quota: u64) -> DomainId {
        let id = DomainId(self.next_domain);
        self.next_domain += 1;
        self.domains.insert(id, Domain::new(quota));
        id
    }

    /// The domain a VF's accesses are translated in.
    pub fn domain_of(&self, vf: VfId) -> Option<DomainId> {
        self.vf_domain.get(vf.index()).copied()
    }

    /// VFs translated through `domain`.
    pub fn members(&self, domain: DomainId) -> impl Iterator<Item = VfId> + '_ {
        self.vf_domain
            .iter()
            .enumerate()
            .filter(move |(_, d)| **d == domain)
            .map(|(i, _)| VfId(i as u16))
    }

    /// Whether two VFs translate through the same domain (so an IOVA means the same
    /// memory to both, and a descriptor may pass between them without a copy).
    pub fn same_domain(&self, a: VfId, b: VfId) -> bool {
        match (self.domain_of(a), self.domain_of(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }

    /// Moves a VF into `domain` (a shared chain domain). Its old domain must hold no
    /// mappings if the VF was its only member; an empty memberless domain is removed.
    pub fn attach(&mut self, vf: VfId, domain: DomainId) -> Result<(), DomainError> {
        self.flush_iotlb();
        let old = self.domain_of(vf).ok_or(DomainError::NoSuchVf(vf))?;
        if !self.domains.contains_key(&domain) {
            return Err(DomainError::NoSuchDomain(domain));
        }
        if old == domain {
            return Ok(());
        }
        let sole_member = self.members(old).count() == 1;
        let mappings = self.domains.get(&old).map_or(0, |d| d.mappings.len());
        if sole_member && mappings > 0 {
            return Err(DomainError::Busy { vf, mappings });
        }
        self.vf_domain[vf.index()] = domain;
        if sole_member {
            self.domains.remove(&old);
        }
        Ok(())
    }

    /// Gives a VF a fresh private domain again (leaving a shared one).
    pub fn detach_to_private(&mut self, vf: VfId) -> Result<DomainId, DomainError> {
        self.flush_iotlb();
        let old = self.domain_of(vf).ok_or(DomainError::NoSuchVf(vf))?;
        if self.members(old).count() == 1 {
            // Already private; drop whatever it mapped, as a new domain would start empty.
            self.unmap_all(old);
            return Ok(old);
        }
        let fresh = self.create_domain(DEFAULT_QUOTA);
        self.vf_domain[vf.index()] = fresh;
        Ok(fresh)
    }

    /// Changes a domain's byte quota.
    pub fn set_quota(&mut self, domain: DomainId, quota: u64) -> Result<(), DomainError> {
        let d = self
            .domains
            .get_mut(&domain)
            .ok_or(DomainError::NoSuchDomain(domain))?;
        if quota < d.bytes {
            return Err(DomainError::QuotaBelowUsage {
                quota,
                used: d.bytes,
            });
        }
        d.quota = quota;
        Ok(())
    }

    /// Installs a mapping, after checking alignment, size, wrap, region bounds, overlap,
    /// mapping count and quota. On error nothing changes.
    pub fn map(
        &mut self,
        domain: DomainId,
        iova: Iova,
        size: u64,
        region: Region,
        offset: u64,
        perms: Perms,
    ) -> Result<(), MapError> {
        self.flush_iotlb();
        let d = self
            .domains
            .get_mut(&domain)
            .ok_or(MapError::NoSuchDomain(domain))?;
        if size == 0 {
            return Err(MapError::ZeroSize);
        }
        if iova.0 % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || offset % PAGE_SIZE != 0 {
            return Err(MapError::Unaligned { iova, size, offset });
        }
        let end = iova
            .0
            .checked_add(size)
            .ok_or(MapError::Wraps { iova, size })?;
        if offset.checked_add(size).is_none_or(|e| e > region.len) {
            return Err(MapError::OutsideRegion {
                offset,
                size,
                region_len: region.len,
            });
        }
        if !perms.read && !perms.write {
            return Err(MapError::NoAccess);
        }
        if let Some(existing) = d.first_overlap(iova.0, end) {
            return Err(MapError::Overlap {
                iova,
                size,
                existing: *existing,
            });
        }
        if d.mappings.len() >= MAX_MAPPINGS {
            return Err(MapError::TooManyMappings);
        }
        if d.bytes.saturating_add(size) > d.quota {
            return Err(MapError::QuotaExceeded {
                requested: size,
                used: d.bytes,
                quota: d.quota,
            });
        }
        d.mappings.insert(
            iova.0,
            Mapping {
                iova,
                size,
                region: region.id,
                offset,
                perms,
            },
        );
        d.bytes += size;
        Ok(())
    }

    /// Removes every mapping inside `[iova, iova+size)`. The range must contain at least
    /// one mapping and must not cut one in two. Returns what was removed.
    pub fn unmap(
        &mut self,
        domain: DomainId,
        iova: Iova,
        size: u64,
    ) -> Result<Vec<Mapping>, UnmapError> {
        self.flush_iotlb();
        let d = self
            .domains
            .get_mut(&domain)
            .ok_or(UnmapError::NoSuchDomain(domain))?;
        let end = iova.0.saturating_add(size);
        if size == 0 {
            return Err(UnmapError::NotMapped { iova, size });
        }
        if let Some(m) = d.containing(iova.0) {
            if m.iova.0 < iova.0 {
                return Err(UnmapError::SplitsMapping {
                    iova,
                    size,
                    mapping: *m,
                });
            }
        }
        let inside: Vec<Mapping> = d.mappings.range(iova.0..end).map(|(_, m)| *m).collect();
        if let Some(last) = inside.last() {
            if last.end() > end {
                return Err(UnmapError::SplitsMapping {
                    iova,
                    size,
                    mapping: *last,
                });
            }
        }
        if inside.is_empty() {
            return Err(UnmapError::NotMapped { iova, size });
        }
        for m in &inside {
            d.mappings.remove(&m.iova.0);
            d.bytes -= m.size;
        }
        Ok(inside)
    }

    /// Removes every mapping of a domain (the owner is gone). Returns what was removed.
    pub fn unmap_all(&mut self, domain: DomainId) -> Vec<Mapping> {
        self.flush_iotlb();
        match self.domains.get_mut(&domain) {
            Some(d) => {
                d.bytes = 0;
                std::mem::take(&mut d.mappings).into_values().collect()
            }
            None => Vec::new(),
        }
    }

    /// The mappings of a domain, by IOVA.
    pub fn mappings(&self, domain: DomainId) -> impl Iterator<Item = &Mapping> + '_ {
        self.domains
            .get(&domain)
            .into_iter()
            .flat_map(|d| d.mappings.values())
    }

    /// Bytes mapped in a domain.
    pub fn mapped_bytes(&self, domain: DomainId) -> u64 {
        self.domains.get(&domain).map_or(0, |d| d.bytes)
    }

    /// Translates an access of `len` bytes at `iova` by the NIC on behalf of `vf`. A
    /// refused access is recorded (log and counters) and returned as a [`DmaFault`].
    pub fn translate(
        &mut self,
        vf: VfId,
        iova: Iova,
        len: u64,
        access: Access,
    ) -> Result<Translation, DmaFault> {
        let cached = self
            .iotlb
            .get(vf.index())
            .copied()
            .flatten()
            .filter(|m| m.iova.0 <= iova.0 && iova.0 < m.end());
        let result = match cached {
            Some(m) => check_access(&m, iova, len, access),
            None => self.lookup(vf, iova, len, access),
        };
        match result {
            Ok((t, m)) => {
                if let Some(slot) = self.iotlb.get_mut(vf.index()) {
                    *slot = Some(m);
                }
                Ok(t)
            }
            Err(reason) => {
                let fault = DmaFault {
                    vf,
                    iova,
                    len,
                    access,
                    reason,
                };
                if let Some(counts) = self.fault_counts.get_mut(vf.index()) {
                    counts.bump(reason);
                }
                self.faults.push(fault);
                Err(fault)
            }
        }
    }

    fn flush_iotlb(&mut self) {
        self.iotlb.iter_mut().for_each(|e| *e = None);
    }

    fn lookup(
        &self,
        vf: VfId,
        iova: Iova,
        len: u64,
        access: Access,
    ) -> Result<(Translation, Mapping), FaultReason> {
        let domain = self.domain_of(vf).ok_or(FaultReason::Unmapped)?;
        let d = self.domains.get(&domain).ok_or(FaultReason::Unmapped)?;
        let m = d.containing(iova.0).ok_or(FaultReason::Unmapped)?;
        check_access(m, iova, len, access)
    }

    /// Faults recorded against one VF, by reason.
    pub fn fault_counts(&self, vf: VfId) -> FaultCounts {
        self.fault_counts
            .get(vf.index())
            .copied()
            .unwrap_or_default()
    }

    /// The fault log.
    pub fn faults(&self) -> &FaultLog {
        &self.faults
    }

    /// The fault log, to drain it.
    pub fn faults_mut(&mut self) -> &mut FaultLog {
        &mut self.faults
    }
}

/// Checks an access against the mapping that contains its first byte.
fn check_access(
    m: &Mapping,
    iova: Iova,
    len: u64,
    access: Access,
) -> Result<(Translation, Mapping), FaultReason> {
    if !m.perms.allows(access) {
        return Err(FaultReason::Permission);
    }
    // A zero-length access still needs its first byte mapped, which the caller checked.
    let last = iova
        .0
        .checked_add(len)
        .ok_or(FaultReason::CrossesMappingEnd)?;
    if last > m.end() {
        return Err(FaultReason::CrossesMappingEnd);
    }
    let t = Translation {
        region: m.region,
        offset: m.offset + (iova.0 - m.iova.0),
        len,
    };
    Ok((t, *m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn region(id: u64, len: u64) -> Region {
        Region {
            id: RegionId(id),
            len,
        }
    }

    fn iommu_with_vf0_map() -> (Iommu, DomainId) {
        let mut iommu = Iommu::new(4);
        let d = iommu.domain_of(VfId(0)).unwrap();
        iommu
            .map(
                d,
                Iova(0x10_0000),
                2 * MIB,
                region(7, 4 * MIB),
                MIB,
                Perms::RW,
            )
            .unwrap();
        (iommu, d)
    }

    #[test]
    fn each_vf_starts_in_its_own_empty_domain() {
        let iommu = Iommu::new(3);
        let domains: Vec<_> = (0..3).map(|i| iommu.domain_of(VfId(i)).unwrap()).collect();
        assert_ne!(domains[0], domains[1]);
        assert_ne!(domains[1], domains[2]);
        assert!(!iommu.same_domain(VfId(0), VfId(1)));
        assert_eq!(iommu.mappings(domains[0]).count(), 0);
        assert_eq!(iommu.domain_of(VfId(3)), None);
    }

    #[test]
    fn translation_lands_at_the_mapped_offset() {
        let (mut iommu, _) = iommu_with_vf0_map();
        let t = iommu
            .translate(VfId(0), Iova(0x10_0000 + 0x800), 64, Access::Write)
            .unwrap();
        assert_eq!(
            t,
            Translation {
                region: RegionId(7),
                offset: MIB + 0x800,
                len: 64
            }
        );
    }

    #[test]
    fn every_bad_map_is_refused_with_its_reason_and_changes_nothing() {
        let (mut iommu, d) = iommu_with_vf0_map();
        let r = region(1, 64 * MIB);
        let cases = [
            (Iova(0x4000_0000), 0, 0, Perms::RW, MapError::ZeroSize),
            (
                Iova(0x4000_0100),
                PAGE_SIZE,
                0,
                Perms::RW,
                MapError::Unaligned {
                    iova: Iova(0x4000_0100),
                    size: PAGE_SIZE,
                    offset: 0,
                },
            ),
            (
                Iova(0x4000_0000),
                100,
                0,
                Perms::RW,
                MapError::Unaligned {
                    iova: Iova(0x4000_0000),
                    size: 100,
                    offset: 0,
                },
            ),
            (
                Iova(u64::MAX - PAGE_SIZE + 1),
                2 * PAGE_SIZE,
                0,
                Perms::RW,
                MapError::Wraps {
                    iova: Iova(u64::MAX - PAGE_SIZE + 1),
                    size: 2 * PAGE_SIZE,
                },
            ),
            (
                Iova(0x4000_0000),
                PAGE_SIZE,
                64 * MIB,
                Perms::RW,
                MapError::OutsideRegion {
                    offset: 64 * MIB,
                    size: PAGE_SIZE,
                    region_len: 64 * MIB,
                },
            ),
            (
                Iova(0x4000_0000),
                PAGE_SIZE,
                0,
                Perms {
                    read: false,
                    write: false,
                },
                MapError::NoAccess,
            ),
        ];
        for (iova, size, offset, perms, want) in cases {
            let before: Vec<Mapping> = iommu.mappings(d).copied().collect();
            assert_eq!(iommu.map(d, iova, size, r, offset, perms), Err(want));
            assert_eq!(iommu.mappings(d).copied().collect::<Vec<_>>(), before);
        }
    }

    #[test]
    fn overlapping_maps_are_refused_from_either_side() {
        let (mut iommu, d) = iommu_with_vf0_map();
        let r = region(1, 64 * MIB);
        // Starts inside, starts before and ends inside, covers it whole.
        for (iova, size) in [(0x20_0000, MIB), (0x0, 2 * MIB), (0x0, 8 * MIB)] {
            let err = iommu.map(d, Iova(iova), size, r, 0, Perms::RW).unwrap_err();
            assert!(matches!(err, MapError::Overlap { .. }), "{err:?}");
        }
        // Adjacent on both sides is fine.
        iommu.map(d, Iova(0x0), MIB, r, 0, Perms::RW).unwrap();
        iommu.map(d, Iova(0x30_0000), MIB, r, 0, Perms::RW).unwrap();
    }

    #[test]
    fn quota_and_mapping_count_are_enforced() {
        let mut iommu = Iommu::new(1);
        let d = iommu.domain_of(VfId(0)).unwrap();
        iommu.set_quota(d, 2 * PAGE_SIZE).unwrap();
        let r = region(1, MIB);
        iommu.map(d, Iova(0), PAGE_SIZE, r, 0, Perms::RW).unwrap();
        assert_eq!(
            iommu.map(d, Iova(PAGE_SIZE), 2 * PAGE_SIZE, r, 0, Perms::RW),
            Err(MapError::QuotaExceeded {
                requested: 2 * PAGE_SIZE,
                used: PAGE_SIZE,
                quota: 2 * PAGE_SIZE
            })
        );
        assert_eq!(
            iommu.set_quota(d, 0),
            Err(DomainError::QuotaBelowUsage {
                quota: 0,
                used: PAGE_SIZE
            })
        );

        let mut iommu = Iommu::new(1);
        let d = iommu.domain_of(VfId(0)).unwrap();
        let r = region(1, PAGE_SIZE);
        for i in 0..MAX_MAPPINGS as u64 {
            iommu
                .map(d, Iova(i * PAGE_SIZE), PAGE_SIZE, r, 0, Perms::RW)
                .unwrap();
        }
        assert_eq!(
            iommu.map(d, Iova(1 << 40), PAGE_SIZE, r, 0, Perms::RW),
            Err(MapError::TooManyMappings)
        );
    }

    #[test]
    fn faults_carry_who_where_and_why() {
        let (mut iommu, d) = iommu_with_vf0_map();
        let r = region(9, MIB);
        iommu
            .map(d, Iova(0x100_0000), PAGE_SIZE, r, 0, Perms::RO)
            .unwrap();

        let unmapped = iommu.translate(VfId(0), Iova(0x9000_0000), 64, Access::Write);
        let perm = iommu.translate(VfId(0), Iova(0x100_0000), 64, Access::Write);
        let cross = iommu.translate(VfId(0), Iova(0x10_0000 + 2 * MIB - 10), 64, Access::Read);
        let other_vf = iommu.translate(VfId(1), Iova(0x10_0000), 64, Access::Write);
        assert_eq!(unmapped.unwrap_err().reason, FaultReason::Unmapped);
        assert_eq!(perm.unwrap_err().reason, FaultReason::Permission);
        assert_eq!(cross.unwrap_err().reason, FaultReason::CrossesMappingEnd);
        let fault = other_vf.unwrap_err();
        assert_eq!(fault.vf, VfId(1), "a VF cannot reach another VF's mapping");
        assert_eq!(fault.reason, FaultReason::Unmapped);
        assert_eq!(
            fault.to_string(),
            "DMA fault on vf1: Write of 64 bytes at IOVA 0x100000: unmapped"
        );
        assert_eq!(iommu.fault_counts(VfId(0)).total(), 3);
        assert_eq!(iommu.fault_counts(VfId(0)).permission, 1);
        assert_eq!(iommu.fault_counts(VfId(1)).unmapped, 1);
        assert_eq!(iommu.faults().total(), 4);
    }

    #[test]
    fn the_fault_log_keeps_the_newest() {
        let mut iommu = Iommu::new(1);
        iommu.set_fault_log_capacity(3);
        for i in 0..5 {
            let _ = iommu.translate(VfId(0), Iova(i * PAGE_SIZE), 1, Access::Read);
        }
        let kept: Vec<u64> = iommu
            .faults()
            .iter()
            .map(|f| f.iova.0 / PAGE_SIZE)
            .collect();
        assert_eq!(kept, vec![2, 3, 4]);
        assert_eq!(iommu.faults().overwritten(), 2);
        assert_eq!(iommu.faults().total(), 5);
        assert_eq!(iommu.faults_mut().drain().count(), 3);
        assert_eq!(iommu.faults().total(), 2);
    }

    #[test]
    fn unmap_removes_whole_mappings_only() {
        let (mut iommu, d) = iommu_with_vf0_map();
        assert_eq!(
            iommu.unmap(d, Iova(0x9000_0000), PAGE_SIZE),
            Err(UnmapError::NotMapped {
                iova: Iova(0x9000_0000),
                size: PAGE_SIZE
            })
        );
        let err = iommu.unmap(d, Iova(0x10_0000), PAGE_SIZE).unwrap_err();
        assert!(matches!(err, UnmapError::SplitsMapping { .. }), "{err:?}");
        let err = iommu
            .unmap(d, Iova(0x10_0000 + PAGE_SIZE), 4 * MIB)
            .unwrap_err();
        assert!(matches!(err, UnmapError::SplitsMapping { .. }), "{err:?}");
        assert_eq!(
            iommu.mappings(d).count(),
            1,
            "refused unmaps remove nothing"
        );
        let removed = iommu.unmap(d, Iova(0), 64 * MIB).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(iommu.mapped_bytes(d), 0);
        assert!(
            iommu
                .translate(VfId(0), Iova(0x10_0000), 1, Access::Read)
                .is_err()
        );
    }

    #[test]
    fn shared_domains_give_members_the_same_view() {
        let mut iommu = Iommu::new(3);
        let shared = iommu.create_domain(DEFAULT_QUOTA);
        iommu.attach(VfId(0), shared).unwrap();
        iommu.attach(VfId(1), shared).unwrap();
        assert!(iommu.same_domain(VfId(0), VfId(1)));
        assert!(!iommu.same_domain(VfId(0), VfId(2)));
        iommu
            .map(shared, Iova(0), MIB, region(3, MIB), 0, Perms::RW)
            .unwrap();
        let a = iommu
            .translate(VfId(0), Iova(0x800), 64, Access::Write)
            .unwrap();
        let b = iommu
            .translate(VfId(1), Iova(0x800), 64, Access::Write)
            .unwrap();
        assert_eq!(a, b);
        assert!(
            iommu
                .translate(VfId(2), Iova(0x800), 64, Access::Write)
                .is_err()
        );

        let private = iommu.detach_to_private(VfId(1)).unwrap();
        assert_ne!(private, shared);
        assert!(
            iommu
                .translate(VfId(1), Iova(0x800), 64, Access::Write)
                .is_err()
        );
    }

    #[test]
    fn the_iotlb_never_serves_a_removed_or_foreign_mapping() {
        // Unmap: a cached translation must not survive.
        let (mut iommu, d) = iommu_with_vf0_map();
        assert!(
            iommu
                .translate(VfId(0), Iova(0x10_0000), 64, Access::Read)
                .is_ok()
        );
        iommu.unmap(d, Iova(0x10_0000), 2 * MIB).unwrap();
        assert!(
            iommu
                .translate(VfId(0), Iova(0x10_0000), 64, Access::Read)
                .is_err()
        );

        // Moving a VF from one populated shared domain to another.
        let mut iommu = Iommu::new(3);
        let a = iommu.create_domain(DEFAULT_QUOTA);
        let b = iommu.create_domain(DEFAULT_QUOTA);
        for vf in [0, 1] {
            iommu.attach(VfId(vf), a).unwrap();
        }
        iommu.attach(VfId(2), b).unwrap();
        iommu
            .map(a, Iova(0), MIB, region(1, MIB), 0, Perms::RW)
            .unwrap();
        assert!(
            iommu
                .translate(VfId(0), Iova(0x800), 64, Access::Read)
                .is_ok()
        );
        iommu.attach(VfId(0), b).unwrap();
        let fault = iommu
            .translate(VfId(0), Iova(0x800), 64, Access::Read)
            .unwrap_err();
        assert_eq!(
            fault.reason,
            FaultReason::Unmapped,
            "served from domain a after moving to b"
        );
    }

    #[test]
    fn a_vf_with_live_mappings_cannot_change_domain() {
        let (mut iommu, _) = iommu_with_vf0_map();
        let shared = iommu.create_domain(DEFAULT_QUOTA);
        assert_eq!(
            iommu.attach(VfId(0), shared),
            Err(DomainError::Busy {
                vf: VfId(0),
                mappings: 1
            })
        );
        assert_eq!(
            iommu.attach(VfId(9), shared),
            Err(DomainError::NoSuchVf(VfId(9)))
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Map {
            vf: u16,
            page: u64,
            pages: u64,
            region: u64,
            perms: Perms,
        },
        Unmap {
            vf: u16,
            page: u64,
            pages: u64,
        },
        /// Unmaps exactly one existing mapping (picked by index), so that successful
        /// unmaps are common.
        UnmapExisting {
            vf: u16,
            pick: usize,
        },
        Translate {
            vf: u16,
            iova: u64,
            len: u64,
            write: bool,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let perms = prop_oneof![Just(Perms::RW), Just(Perms::RO), Just(Perms::WO)];
        prop_oneof![
            (0u16..4, 0u64..64, 1u64..8, 0u64..4, perms).prop_map(
                |(vf, page, pages, region, perms)| Op::Map {
                    vf,
                    page,
                    pages,
                    region,
                    perms
                }
            ),
            (0u16..4, 0u64..64, 1u64..8).prop_map(|(vf, page, pages)| Op::Unmap {
                vf,
                page,
                pages
            }),
            (0u16..4, any::<usize>()).prop_map(|(vf, pick)| Op::UnmapExisting { vf, pick }),
            (0u16..5, 0u64..(72 * PAGE_SIZE), 0u64..10_000, any::<bool>()).prop_map(
                |(vf, iova, len, write)| Op::Translate {
                    vf,
                    iova,
                    len,
                    write
                }
            ),
        ]
    }

    proptest! {
        /// No translation ever returns memory outside the VF's own mappings: whatever
        /// the sequence of maps and unmaps, a successful translation for VF v lies
        /// entirely inside one mapping that v's own domain holds, with the right
        /// permission, and a refused one is logged against v.
        #[test]
        fn translations_stay_inside_the_vfs_own_mappings(ops in proptest::collection::vec(arb_op(), 1..200)) {
            let mut iommu = Iommu::new(4);
            // Each VF maps its own region ids (vf * 10 + n), so the region names the owner.
            for op in ops {
                match op {
                    Op::Map { vf, page, pages, region: r, perms } => {
                        let d = iommu.domain_of(VfId(vf)).unwrap();
                        let reg = region(u64::from(vf) * 10 + r, 64 * PAGE_SIZE);
                        let _ = iommu.map(d, Iova(page * PAGE_SIZE), pages * PAGE_SIZE, reg, 0, perms);
                    }
                    Op::Unmap { vf, page, pages } => {
                        let d = iommu.domain_of(VfId(vf)).unwrap();
                        let _ = iommu.unmap(d, Iova(page * PAGE_SIZE), pages * PAGE_SIZE);
                    }
                    Op::UnmapExisting { vf, pick } => {
                        let d = iommu.domain_of(VfId(vf)).unwrap();
                        let ms: Vec<Mapping> = iommu.mappings(d).copied().collect();
                        if !ms.is_empty() {
                            let m = ms[pick % ms.len()];
                            prop_assert!(iommu.unmap(d, m.iova, m.size).is_ok());
                            // Nothing of it may translate any more (IOTLB included).
                            let t = iommu.translate(VfId(vf), m.iova, 1, Access::Read);
                            prop_assert!(t.is_err(), "translated through a removed mapping");
                        }
                    }
                    Op::Translate { vf, iova, len, write } => {
                        let access = if write { Access::Write } else { Access::Read };
                        let faults_before = iommu.faults().total();
                        match iommu.translate(VfId(vf), Iova(iova), len, access) {
                            Ok(t) => {
                                let d = iommu.domain_of(VfId(vf)).expect("translated without a domain");
                                let m = iommu
                                    .mappings(d)
                                    .find(|m| m.iova.0 <= iova && iova + len <= m.iova.0 + m.size)
                                    .copied();
                                let m = m.expect("translation outside every mapping of the VF");
                                prop_assert!(m.perms.allows(access));
                                prop_assert_eq!(t.region, m.region);
                                prop_assert_eq!(t.region.0 / 10, u64::from(vf), "another VF's region");
                                prop_assert_eq!(t.offset, m.offset + (iova - m.iova.0));
                                prop_assert!(t.offset + t.len <= 64 * PAGE_SIZE);
                            }
                            Err(fault) => {
                                prop_assert_eq!(fault.vf, VfId(vf));
                                prop_assert_eq!(iommu.faults().total(), faults_before + 1);
                            }
                        }
                    }
                }
                // Mappings in a domain never overlap and the byte count matches.
                for vf in 0..4 {
                    let d = iommu.domain_of(VfId(vf)).unwrap();
                    let ms: Vec<Mapping> = iommu.mappings(d).copied().collect();
                    for w in ms.windows(2) {
                        prop_assert!(w[0].iova.0 + w[0].size <= w[1].iova.0);
                    }
                    prop_assert_eq!(iommu.mapped_bytes(d), ms.iter().map(|m| m.size).sum::<u64>());
                }
            }
        }
    }
}
