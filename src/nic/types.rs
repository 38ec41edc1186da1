//! Identifiers and small value types shared by every part of the device model.
//!
//! A raw `u16` that could be a VF index, a VLAN or a vector is a bug waiting to
//! happen, so each gets its own type (the rust-vmm `GuestAddress` habit).

use std::fmt;

pub use vf_abi::{MacAddr, ParseMacError};

/// Index of a physical function on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PfId(pub u16);

/// Index of a virtual function within its PF (0-based, as in `ip link set … vf N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VfId(pub u16);

impl VfId {
    /// The index as a `usize`, for table lookups.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for VfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vf{}", self.0)
    }
}

/// An I/O virtual address: what the device uses, translated by the IOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iova(pub u64);

impl fmt::Display for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// An MSI-X vector number of one VF. The VF contract uses 0 = rx, 1 = tx completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vector(pub u16);

impl Vector {
    /// Receive interrupt.
    pub const RX: Vector = Vector(0);
    /// Transmit-completion interrupt.
    pub const TX: Vector = Vector(1);
}

/// The NF instance that owns a VF, by its unique name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub String);

impl Owner {
    /// An owner from anything string-like.
    pub fn new(name: impl Into<String>) -> Self {
        Owner(name.into())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An 802.1Q tag as the switch sees it: VLAN id 1–4094 plus priority (PCP) 0–7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// VLAN identifier.
    pub vid: u16,
    /// Priority code point (QoS).
    pub pcp: u8,
}

impl VlanTag {
    /// The 802.1Q tag control information: PCP in the top 3 bits, VID in the low 12.
    pub fn tci(self) -> u16 {
        self.vid | u16::from(self.pcp) << 13
    }
}

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Carrier present.
    Up,
    /// No carrier.
    Down,
}

/// A monotonic timestamp in microseconds, passed into the model by its caller so that
/// every timer is deterministic under test (smoltcp's `poll(timestamp)` habit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub u64);
