//! The NF side of nfhost: a VF driver and, later, the NF runtime.
//!
//! A VF reaches its NF as two shared memory regions and a few eventfds
//! (DESIGN.md §2, modelled on AF_XDP and memif):
//!
//! - the **BAR** ([`Bar`]), a memfd created by the NIC engine with the VF
//!   registers and four descriptor rings: fill and tx (NF → NIC), rx and
//!   completion (NIC → NF);
//! - the **UMEM**, a memfd of packet frames the NF allocates and maps for DMA
//!   ([`SharedMemory`]);
//! - interrupt and doorbell **eventfds** ([`EventFd`]), passed over a Unix
//!   socket with `SCM_RIGHTS` ([`send_with_fds`], [`recv_with_fds`]).
//!
//! Both the engine and the NF link this crate: the engine creates the BAR
//! and drives the NIC ends of the rings, the NF opens it and drives the other
//! ends. Neither trusts what the other writes into shared memory; a corrupt
//! index or register is a typed error, never a panic or an out-of-bounds
//! access.
//!
//! This is the only crate of the project that contains `unsafe`: in [`shm`],
//! [`ring`], [`bar`], the packet views of [`runtime`], the inherited socket of
//! [`attach::client`] and the kernel interface of the host's [`wire`], each block with its `SAFETY` argument.
//! Linux only.

pub mod attach;
pub mod bar;
pub mod checksum;
pub mod fd;
pub mod nf;
pub mod ring;
pub mod runtime;
pub mod shm;
pub mod wire;

pub use attach::{Attached, ClientError, Command, ProtoError, VfClient};
pub use bar::{Bar, BarError, BarLayout, IrqVector, Nf, Nic, VfConfig};
pub use fd::{EventFd, FdError, async_fd, recv_with_fds, send_with_fds};
pub use nf::{Batch, EthernetFrame, MAX_BATCH, NetworkFunction, Packet, Verdict};
pub use ring::{Consumer, Desc, Producer, RingError, RingLayout};
pub use shm::{SharedMemory, ShmError};
pub use vf_abi::{FRAME_SIZE, MacAddr};
