//! The data path: the NIC engine thread, the PF's wire, and NF processes.
//!
//! | module | what |
//! |---|---|
//! | [`engine`] | the engine thread (tokio-uring): DMA, switching, interrupts |
//! | [`counters`] | per-VF hot-path counters (single-writer atomics) |
//! | [`gen`] | the `gen` wire: traffic generator and sink |
//! | [`host_wire`] | the `tap:` and `afpacket:` wires: host interfaces over io_uring |
//! | [`moderation`] | adaptive interrupt moderation: a VF's throttle interval from its rate |
//! | [`port`] | the engine's state of one attached VF |
//! | [`queues`] | a VF's queue pair, native rings or a memif client's |
//! | [`shared_umem`] | packet memory of a `shared` chain and its frame ownership |
//! | [`nf_process`] | NF child processes (self-exec) |
//! | [`sandbox`] | who NF processes run as, and the privileges they drop |
//! | [`secret`] | random attach tokens and endpoint secrets |
//! | [`runner`] | an engine plus its NF processes: spawn, attach, chain |

pub mod checksum;
pub mod counters;
pub mod engine;
pub mod r#gen;
pub mod host_wire;
pub mod moderation;
pub mod nf_process;
pub mod port;
pub mod queues;
pub mod runner;
pub mod sandbox;
pub mod secret;
pub mod shared_umem;
