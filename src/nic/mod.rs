//! The emulated SR-IOV NIC's device model.
//!
//! Plain synchronous Rust: no I/O, no async, no `unsafe`, time passed in. Each part is
//! its own module and its own model; [`Nic`] ties them together:
//!
//! | module | models |
//! |---|---|
//! | [`pf`] | the physical function: port MAC, link, `sriov_totalvfs` / `sriov_numvfs` |
//! | [`vf`] | one VF's configuration space: admin config and function state, FLR |
//! | [`veb`] | the embedded switch: forwarding, flooding, anti-spoof, VLANs, chain steering |
//! | [`iommu`] | DMA remapping: domains, mappings, translation, DMA faults |
//! | [`irq`] | interrupt remapping: (VF, vector) → target, masks, throttling |
//!
//! The real-hardware backend shares the same validation (the same types reject the
//! same bad writes), so the control plane cannot tell which one it drives.

pub mod device;
pub mod iommu;
pub mod irq;
pub mod pf;
pub mod types;
pub mod veb;
pub mod vf;

pub use device::{Nic, NicError, Released};
pub use iommu::{Access, DmaFault, FaultReason, Iommu, Mapping, Perms, Region, RegionId};
pub use irq::{InterruptSink, IrqCounts, IrqRemap, Raise, TargetId};
pub use pf::{Pf, PfConfig, PfError};
pub use types::{Iova, Link, MacAddr, Micros, Owner, PfId, Vector, VfId, VlanTag};
pub use veb::{
    Decision, DropReason, Forward, FrameHeader, LearnStats, PortSet, TxSteer, Veb, WireMatch,
};
pub use vf::{LinkState, Vf, VfAdmin, VfError, VfUpdate};
