//! The mechanics under nfhost's VF contract, and the host's kernel interfaces:
//! the one crate of the project that contains `unsafe`, each block with its
//! `SAFETY` argument (clippy's `undocumented_unsafe_blocks` is denied). Every
//! other crate says `#![forbid(unsafe_code)]` and builds on the safe types here.
//!
//! A VF reaches its NF as two shared memory regions and a few eventfds
//! (ARCHITECTURE.md §2, modelled on AF_XDP and memif), laid out as `vf_abi`
//! defines:
//!
//! - the **BAR** ([`Bar`]), created by the NIC engine, holding the VF registers and
//!   four descriptor rings ([`ring`]): fill and tx (NF → NIC), rx and completion
//!   (NIC → NF);
//! - the **UMEM** ([`SharedMemory`]), the packet frames the NF allocates and maps
//!   for DMA, lent out frame by frame as the rings hand them over ([`umem`]);
//! - interrupt and doorbell **eventfds** ([`EventFd`]), passed with the attach
//!   protocol's messages over a Unix socket with `SCM_RIGHTS` ([`attach`], [`fd`]).
//!
//! Neither side trusts what the other writes into shared memory: a corrupt index
//! or register is a typed error, never a panic or an out-of-bounds access.
//!
//! A VF's second face, memif ([`memif`]), drives rings that live in the NF's own
//! memory, as DPDK's and VPP's memif clients lay them out.
//!
//! The host's links to real networks ([`wire`]: TAP devices and `AF_PACKET`
//! sockets on one io_uring) live here too, for the engine, apart from the SDK
//! that NFs are written against. Linux only.

pub mod attach;
pub mod bar;
pub mod fd;
pub mod memif;
pub mod ring;
pub mod sealed;
pub mod shm;
pub mod umem;
pub mod wire;

pub use bar::{Bar, BarError, BarLayout, Hop, HopCounts, IrqVector, Nf, Nic, RingKind, VfConfig};
pub use fd::{EventFd, FdError, TimerFd, async_fd, recv_with_fds, send_with_fds, set_timer_slack};
pub use memif::{M2sRing, MemifRing, MemifRingError, S2mRing};
pub use ring::{Consumer, Desc, Producer, RingError, RingLayout};
pub use shm::{SharedMemory, ShmError};
pub use umem::{FrameLender, LendError};
