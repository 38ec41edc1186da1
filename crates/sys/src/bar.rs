//! The VF's BAR: one memfd created by the NIC holding the register page and
//! the four rings of queue pair 0 (ARCHITECTURE.md §2). The layout is `vf_abi::bar`;
//! this is the code that maps and drives it.
//!
//! ```text
//! 0x0000  register page (4 KiB, see `reg`)
//! fill        NF -> NIC  empty frames       (rx ring size)
//! rx          NIC -> NF  received frames    (rx ring size)
//! tx          NF -> NIC  frames to send     (tx ring size)
//! completion  NIC -> NF  sent frames        (tx ring size)
//! ```
//!
//! Each ring starts on a 4 KiB boundary, in that order, right after the
//! previous one; [`BarLayout`] computes the offsets. Static registers are
//! written by the NIC before the fd is shared and read once by the NF in
//! [`Bar::open`]; the NIC never reads them back. Live registers (MTU, link,
//! interrupt mask) are atomics on their own cache lines.
//!
//! The side is part of the type: [`Bar<Nic>`] hands out the NIC's ring ends,
//! [`Bar<Nf>`] the NF's.

use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::ring::{Consumer, Producer, RingError, RingLayout};
use crate::shm::{SharedMemory, ShmError};
pub use vf_abi::bar::{
    ABI_VERSION, BAR_MAGIC, BAR_PAGE, IrqVector, MAX_RING_SIZE, MIN_RING_SIZE, REGS_LEN, reg,
};

/// Errors from creating or opening a BAR.
#[derive(Debug, thiserror::Error)]
pub enum BarError {
    /// Creating the BAR memory failed.
    #[error("creating the BAR memory failed")]
    Shm(#[source] ShmError),
    /// Setting up a ring failed.
    #[error("BAR ring setup failed")]
    Ring(#[source] RingError),
    /// A ring size outside the ABI.
    #[error("ring size {0} is not a power of two in 64..=32768")]
    BadRingSize(u32),
    /// The region cannot even hold the register page.
    #[error("BAR of {0} bytes is smaller than the register page")]
    TooSmall(usize),
    /// The magic register is wrong: not a BAR.
    #[error("bad BAR magic {0:#010x}")]
    BadMagic(u32),
    /// A layout version this SDK does not speak.
    #[error("unsupported BAR ABI version {0}")]
    UnsupportedVersion(u32),
    /// An offset register disagrees with the layout implied by the ring sizes.
    #[error("BAR register {register} is {found:#x}, layout requires {expected:#x}")]
    LayoutMismatch {
        /// Register name.
        register: &'static str,
        /// Value implied by the ring sizes.
        expected: u64,
        /// Value found.
        found: u64,
    },
    /// The rings do not fit in the mapping.
    #[error("BAR needs {needed:#x} bytes but the memfd has {len:#x}")]
    Truncated {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes available.
        len: usize,
    },
}

/// Ring sizes of a VF and the BAR layout they imply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarLayout {
    rx_ring_size: u32,
    tx_ring_size: u32,
    fill: RingLayout,
    rx: RingLayout,
    tx: RingLayout,
    completion: RingLayout,
    len: usize,
}

fn page_round(len: usize) -> usize {
    len.div_ceil(BAR_PAGE) * BAR_PAGE
}

fn check_ring_size(size: u32) -> Result<(), BarError> {
    if size.is_power_of_two() && (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(BarError::BadRingSize(size))
    }
}

impl BarLayout {
    /// Layout for `rx_ring_size` (fill, rx) and `tx_ring_size` (tx,
    /// completion) slots; both powers of two in 64..=32768.
    pub fn new(rx_ring_size: u32, tx_ring_size: u32) -> Result<Self, BarError> {
        check_ring_size(rx_ring_size)?;
        check_ring_size(tx_ring_size)?;
        // At most 4 KiB + 4 * (192 + 16 * 32768) bytes: no overflow.
        let rx_span = page_round(RingLayout::bytes_for(rx_ring_size));
        let tx_span = page_round(RingLayout::bytes_for(tx_ring_size));
        let ring = |offset, size| RingLayout::new(offset, size).map_err(BarError::Ring);
        let fill = ring(REGS_LEN, rx_ring_size)?;
        let rx = ring(REGS_LEN + rx_span, rx_ring_size)?;
        let tx = ring(REGS_LEN + 2 * rx_span, tx_ring_size)?;
        let completion = ring(REGS_LEN + 2 * rx_span + tx_span, tx_ring_size)?;
        Ok(Self {
            rx_ring_size,
            tx_ring_size,
            fill,
            rx,
            tx,
            completion,
            len: REGS_LEN + 2 * rx_span + 2 * tx_span,
        })
    }

    /// Slots in the fill and rx rings.
    pub fn rx_ring_size(&self) -> u32 {
        self.rx_ring_size
    }

    /// Slots in the tx and completion rings.
    pub fn tx_ring_size(&self) -> u32 {
        self.tx_ring_size
    }

    /// Fill ring (NF → NIC).
    pub fn fill(&self) -> RingLayout {
        self.fill
    }

    /// Rx ring (NIC → NF).
    pub fn rx(&self) -> RingLayout {
        self.rx
    }

    /// Tx ring (NF → NIC).
    pub fn tx(&self) -> RingLayout {
        self.tx
    }

    /// Completion ring (NIC → NF).
    pub fn completion(&self) -> RingLayout {
        self.completion
    }

    /// Total BAR length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Register values the NIC sets when it creates a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfConfig {
    /// VF index on its PF.
    pub vf_index: u16,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU in bytes.
    pub mtu: u32,
    /// Link state.
    pub link_up: bool,
}

/// Marker: the NIC engine's view of a BAR.
#[derive(Debug)]
pub struct Nic;

/// Marker: the NF's view of a BAR.
#[derive(Debug)]
pub struct Nf;

/// Marker: the view of the NF that feeds this VF directly (a direct hop in a
/// `shared` chain, ARCHITECTURE.md §4): it takes the NIC's place on the fill and
/// rx rings, and nothing else.
#[derive(Debug)]
pub struct Hop;

/// What an NF counted on its direct hop (the `HOP_*` registers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HopCounts {
    /// Frames put on the hop's rx ring.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames forwarded that the hop had no room for.
    pub no_room: u64,
}

impl HopCounts {
    /// What was counted since `earlier` (wrapping, as the registers do).
    pub fn since(self, earlier: HopCounts) -> HopCounts {
        HopCounts {
            frames: self.frames.wrapping_sub(earlier.frames),
            bytes: self.bytes.wrapping_sub(earlier.bytes),
            no_room: self.no_room.wrapping_sub(earlier.no_room),
        }
    }
}

/// One of the four rings of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// NF → NIC, empty frames.
    Fill,
    /// NIC → NF, received frames.
    Rx,
    /// NF → NIC, frames to send.
    Tx,
    /// NIC → NF, sent frames.
    Completion,
}

/// A mapped VF BAR, seen from side `S` ([`Nic`] or [`Nf`]).
#[derive(Debug)]
pub struct Bar<S> {
    shm: Arc<SharedMemory>,
    layout: BarLayout,
    vf_index: u16,
    mac: [u8; 6],
    _side: PhantomData<S>,
}

impl<S> Bar<S> {
    /// The BAR memfd, to send to the NF.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.shm.fd()
    }

    /// Ring layout.
    pub fn layout(&self) -> &BarLayout {
        &self.layout
    }

    /// VF index.
    pub fn vf_index(&self) -> u16 {
        self.vf_index
    }

    /// MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether `vector` is masked in the interrupt mask register.
    pub fn irq_masked(&self, vector: IrqVector) -> bool {
        self.reg32(reg::IRQ_MASK).load(Ordering::Acquire) & vector.bit() != 0
    }

    /// A live 32-bit register. Only called with the `reg` constants above.
    fn reg32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset % 4 == 0 && offset + 4 <= REGS_LEN);
        // SAFETY: offset + 4 <= REGS_LEN <= shm.len() (checked by `create` /
        // `open`), the mapping is page-aligned so the word is 4-aligned, and
        // `self.shm` keeps the mapping alive as long as the borrow. The live
        // registers are only accessed atomically by this crate.
        unsafe { AtomicU32::from_ptr(self.shm.as_ptr().add(offset).cast::<u32>()) }
    }

    /// A live 64-bit register. Only called with the `reg` constants above.
    fn reg64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= REGS_LEN);
        // SAFETY: offset + 8 <= REGS_LEN <= shm.len() (checked by `create` /
        // `open`), the mapping is page-aligned so the word is 8-aligned, and
        // `self.shm` keeps the mapping alive as long as the borrow. The live
        // registers are only accessed atomically by this crate.
        unsafe { AtomicU64::from_ptr(self.shm.as_ptr().add(offset).cast::<u64>()) }
    }

    fn producer(&self, ring: RingLayout) -> Result<Producer, RingError> {
        ring.producer(Arc::clone(&self.shm))
    }

    fn consumer(&self, ring: RingLayout) -> Result<Consumer, RingError> {
        ring.consumer(Arc::clone(&self.shm))
    }
}

impl Bar<Nic> {
    /// Creates a BAR: a sealed memfd with the registers filled in, empty
    /// rings, and every interrupt vector masked.
    pub fn create(layout: BarLayout, config: &VfConfig) -> Result<Self, BarError> {
        let name = format!("nfhost-vf{}-bar", config.vf_index);
        let shm = SharedMemory::create(&name, layout.len()).map_err(BarError::Shm)?;
        let mut regs = [0u8; reg::STATIC_END];
        let mut put = |offset: usize, bytes: &[u8]| {
            regs[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(reg::MAGIC, &BAR_MAGIC.to_ne_bytes());
        put(reg::ABI_VERSION, &ABI_VERSION.to_ne_bytes());
        put(reg::VF_INDEX, &config.vf_index.to_ne_bytes());
        put(reg::MAC, &config.mac);
        put(reg::RX_RING_SIZE, &layout.rx_ring_size.to_ne_bytes());
        put(reg::TX_RING_SIZE, &layout.tx_ring_size.to_ne_bytes());
        // usize -> u64 is lossless on Linux targets.
        put(
            reg::FILL_OFFSET,
            &(layout.fill.offset() as u64).to_ne_bytes(),
        );
        put(reg::RX_OFFSET, &(layout.rx.offset() as u64).to_ne_bytes());
        put(reg::TX_OFFSET, &(layout.tx.offset() as u64).to_ne_bytes());
        put(
            reg::COMPLETION_OFFSET,
            &(layout.completion.offset() as u64).to_ne_bytes(),
        );
        put(reg::BAR_LEN, &(layout.len as u64).to_ne_bytes());
        shm.write_at(0, &regs).map_err(BarError::Shm)?;
        for ring in [layout.fill, layout.rx, layout.tx, layout.completion] {
            ring.init(&shm, 0).map_err(BarError::Ring)?;
        }
        let bar = Self {
            shm: Arc::new(shm),
            layout,
            vf_index: config.vf_index,
            mac: config.mac,
            _side: PhantomData,
        };
        bar.set_mtu(config.mtu);
        bar.set_link_up(config.link_up);
        bar.reg32(reg::IRQ_MASK).store(u32::MAX, Ordering::Release);
        Ok(bar)
    }

    /// Function-level reset of the queues: every ring emptied (indices to 0, flags
    /// cleared). Both sides must drop their ring handles first and open new ones after.
    pub fn reset_rings(&self) -> Result<(), RingError> {
        for ring in [
            self.layout.fill(),
            self.layout.rx(),
            self.layout.tx(),
            self.layout.completion(),
        ] {
            ring.init(&self.shm, 0)?;
        }
        Ok(())
    }

    /// Publishes a new MTU.
    pub fn set_mtu(&self, mtu: u32) {
        self.reg32(reg::MTU).store(mtu, Ordering::Release);
    }

    /// Publishes the link state.
    pub fn set_link_up(&self, up: bool) {
        self.reg32(reg::LINK_UP)
            .store(u32::from(up), Ordering::Release);
    }

    /// Rings the mailbox doorbell: a message of `generation` (non-zero) waits.
    pub fn post_mailbox(&self, generation: u32) {
        self.reg32(reg::MAILBOX)
            .store(generation, Ordering::Release);
    }

    /// The generation last posted, 0 = none.
    pub fn posted_mailbox(&self) -> u32 {
        self.reg32(reg::MAILBOX).load(Ordering::Acquire)
    }

    /// The NF's heartbeat count, as it last stored it.
    pub fn heartbeat(&self) -> u32 {
        self.reg32(reg::HEARTBEAT).load(Ordering::Acquire)
    }

    /// Consumer end of the fill ring (empty frames from the NF).
    pub fn fill_consumer(&self) -> Result<Consumer, RingError> {
        self.consumer(self.layout.fill)
    }

    /// Publishes a new generation of the VF's direct hop (`PEER`).
    pub fn set_peer_generation(&self, generation: u32) {
        self.reg32(reg::PEER).store(generation, Ordering::Release);
    }

    /// What the NF counted on its direct hop.
    pub fn hop_counts(&self) -> HopCounts {
        HopCounts {
            frames: self.reg64(reg::HOP_FRAMES).load(Ordering::Acquire),
            bytes: self.reg64(reg::HOP_BYTES).load(Ordering::Acquire),
            no_room: self.reg64(reg::HOP_NO_ROOM).load(Ordering::Acquire),
        }
    }

    /// The addresses of the frames `ring` holds now: its descriptors from the
    /// consumer index up to the producer index, both as published. Meant for a
    /// ring no one moves while it is read (its NF waits for an answer); an index
    /// pair that cannot be is an [`RingError::IndexJump`].
    pub fn ring_frames(&self, ring: RingKind) -> Result<Vec<u64>, RingError> {
        self.ring_layout(ring).outstanding(&self.shm)
    }

    /// How many frames `ring` holds now, by its published indices (for a ring
    /// whose other end is not the NIC's, as a ring an NF feeds directly).
    pub fn ring_len(&self, ring: RingKind) -> Result<u32, RingError> {
        self.ring_layout(ring).outstanding_len(&self.shm)
    }

    fn ring_layout(&self, ring: RingKind) -> RingLayout {
        match ring {
            RingKind::Fill => self.layout.fill,
            RingKind::Rx => self.layout.rx,
            RingKind::Tx => self.layout.tx,
            RingKind::Completion => self.layout.completion,
        }
    }

    /// Producer end of the rx ring (received frames to the NF).
    pub fn rx_producer(&self) -> Result<Producer, RingError> {
        self.producer(self.layout.rx)
    }

    /// Consumer end of the tx ring (frames the NF sends).
    pub fn tx_consumer(&self) -> Result<Consumer, RingError> {
        self.consumer(self.layout.tx)
    }

    /// Producer end of the completion ring (sent frames back to the NF).
    pub fn completion_producer(&self) -> Result<Producer, RingError> {
        self.producer(self.layout.completion)
    }
}

fn u32_at(regs: &[u8; reg::STATIC_END], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&regs[offset..offset + 4]);
    u32::from_ne_bytes(b)
}

fn u64_at(regs: &[u8; reg::STATIC_END], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&regs[offset..offset + 8]);
    u64::from_ne_bytes(b)
}

/// Opens a BAR the NIC created, from either NF-side view.
fn open_checked<S>(shm: SharedMemory) -> Result<Bar<S>, BarError> {
    if shm.len() < REGS_LEN {
        return Err(BarError::TooSmall(shm.len()));
    }
    let mut regs = [0u8; reg::STATIC_END];
    shm.read_at(0, &mut regs).map_err(BarError::Shm)?;
    let magic = u32_at(&regs, reg::MAGIC);
    if magic != BAR_MAGIC {
        return Err(BarError::BadMagic(magic));
    }
    let version = u32_at(&regs, reg::ABI_VERSION);
    if version != ABI_VERSION {
        return Err(BarError::UnsupportedVersion(version));
    }
    let layout = BarLayout::new(
        u32_at(&regs, reg::RX_RING_SIZE),
        u32_at(&regs, reg::TX_RING_SIZE),
    )?;
    let expected = [
        ("fill offset", reg::FILL_OFFSET, layout.fill.offset()),
        ("rx offset", reg::RX_OFFSET, layout.rx.offset()),
        ("tx offset", reg::TX_OFFSET, layout.tx.offset()),
        (
            "completion offset",
            reg::COMPLETION_OFFSET,
            layout.completion.offset(),
        ),
        ("BAR length", reg::BAR_LEN, layout.len),
    ];
    for (register, offset, value) in expected {
        let found = u64_at(&regs, offset);
        if found != value as u64 {
            return Err(BarError::LayoutMismatch {
                register,
                expected: value as u64,
                found,
            });
        }
    }
    if shm.len() < layout.len {
        return Err(BarError::Truncated {
            needed: layout.len,
            len: shm.len(),
        });
    }
    let mut vf_index = [0u8; 2];
    vf_index.copy_from_slice(&regs[reg::VF_INDEX..reg::VF_INDEX + 2]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&regs[reg::MAC..reg::MAC + 6]);
    Ok(Bar {
        shm: Arc::new(shm),
        layout,
        vf_index: u16::from_ne_bytes(vf_index),
        mac,
        _side: PhantomData,
    })
}

impl Bar<Hop> {
    /// Opens the BAR of the VF this NF feeds directly, with the same checks
    /// the NF's own BAR gets.
    pub fn open(shm: SharedMemory) -> Result<Self, BarError> {
        open_checked(shm)
    }

    /// The NIC's end of the hop's fill ring (its free frames).
    pub fn fill_consumer(&self) -> Result<Consumer, RingError> {
        self.consumer(self.layout.fill)
    }

    /// The NIC's end of the hop's rx ring.
    pub fn rx_producer(&self) -> Result<Producer, RingError> {
        self.producer(self.layout.rx)
    }
}

impl Bar<Nf> {
    /// Opens a BAR received from the NIC, checking magic, version, ring
    /// sizes and that every ring lies inside the mapping.
    pub fn open(shm: SharedMemory) -> Result<Self, BarError> {
        open_checked(shm)
    }

    /// Current MTU.
    pub fn mtu(&self) -> u32 {
        self.reg32(reg::MTU).load(Ordering::Acquire)
    }

    /// Current link state.
    pub fn link_up(&self) -> bool {
        self.reg32(reg::LINK_UP).load(Ordering::Acquire) != 0
    }

    /// The generation of the host's newest mailbox message, 0 = none yet.
    pub fn mailbox(&self) -> u32 {
        self.reg32(reg::MAILBOX).load(Ordering::Acquire)
    }

    /// The generation of this VF's direct hop, as the NIC last published it.
    pub fn peer_generation(&self) -> u32 {
        self.reg32(reg::PEER).load(Ordering::Acquire)
    }

    /// Adds to the counts of the direct hop (plain stores: the NF's loop is the
    /// only writer).
    pub fn count_hop(&self, frames: u64, bytes: u64, no_room: u64) {
        for (offset, n) in [
            (reg::HOP_FRAMES, frames),
            (reg::HOP_BYTES, bytes),
            (reg::HOP_NO_ROOM, no_room),
        ] {
            if n > 0 {
                let r = self.reg64(offset);
                r.store(r.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
            }
        }
    }

    /// Stores the loop's heartbeat count (a plain store: one writer).
    pub fn set_heartbeat(&self, beats: u32) {
        self.reg32(reg::HEARTBEAT).store(beats, Ordering::Release);
    }

    /// Masks `vector` (the NF is polling).
    pub fn mask_irq(&self, vector: IrqVector) {
        self.reg32(reg::IRQ_MASK)
            .fetch_or(vector.bit(), Ordering::AcqRel);
    }

    /// Unmasks `vector` (the NF is about to sleep). Check the ring again
    /// afterwards: the NIC does not replay an interrupt suppressed while
    /// masked.
    pub fn unmask_irq(&self, vector: IrqVector) {
        self.reg32(reg::IRQ_MASK)
            .fetch_and(!vector.bit(), Ordering::SeqCst);
    }

    /// Producer end of the fill ring (empty frames to the NIC).
    pub fn fill_producer(&self) -> Result<Producer, RingError> {
        self.producer(self.layout.fill)
    }

    /// Consumer end of the rx ring (received frames).
    pub fn rx_consumer(&self) -> Result<Consumer, RingError> {
        self.consumer(self.layout.rx)
    }

    /// Producer end of the tx ring (frames to send).
    pub fn tx_producer(&self) -> Result<Producer, RingError> {
        self.producer(self.layout.tx)
    }

    /// Consumer end of the completion ring (sent frames, free again).
    pub fn completion_consumer(&self) -> Result<Consumer, RingError> {
        self.consumer(self.layout.completion)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ring::Desc;

    const CONFIG: VfConfig = VfConfig {
        vf_index: 3,
        mac: [0x02, 0, 0, 0, 0, 3],
        mtu: 1500,
        link_up: true,
    };

    fn share(bar: &Bar<Nic>) -> SharedMemory {
        let fd = bar.fd().try_clone_to_owned().expect("dup");
        SharedMemory::from_fd(fd).expect("from_fd")
    }

    fn d(iova: u64) -> Desc {
        Desc {
            iova,
            len: 60,
            flags: 0,
            vlan: 0,
        }
    }

    #[test]
    fn layout_offsets() {
        let l = BarLayout::new(1024, 1024).expect("layout");
        assert_eq!(l.fill().offset(), 0x1000);
        assert_eq!(l.rx().offset(), 0x6000);
        assert_eq!(l.tx().offset(), 0xB000);
        assert_eq!(l.completion().offset(), 0x10000);
        assert_eq!(l.len(), 0x15000);
        let small = BarLayout::new(64, 32768).expect("layout");
        assert_eq!(small.rx().offset(), 0x2000);
        assert_eq!(small.tx().offset(), 0x3000);
        assert_eq!(small.completion().offset(), 0x84000);
        assert_eq!(small.len(), 0x105000);
        for bad in [0, 32, 100, 65536] {
            assert!(matches!(
                BarLayout::new(bad, 64),
                Err(BarError::BadRingSize(s)) if s == bad
            ));
            assert!(matches!(
                BarLayout::new(64, bad),
                Err(BarError::BadRingSize(_))
            ));
        }
    }

    #[test]
    fn nic_and_nf_share_rings_and_registers() {
        let nic = Bar::create(BarLayout::new(256, 128).expect("layout"), &CONFIG).expect("bar");
        let nf = Bar::<Nf>::open(share(&nic)).expect("open");
        assert_eq!(nf.layout(), nic.layout());
        assert_eq!(nf.vf_index(), 3);
        assert_eq!(nf.mac(), CONFIG.mac);
        assert_eq!(nf.mtu(), 1500);
        assert!(nf.link_up());

        let mut fill = nf.fill_producer().expect("fill");
        let mut nic_fill = nic.fill_consumer().expect("fill");
        fill.produce(&d(0x1000)).expect("produce");
        assert_eq!(nic_fill.consume_one(), Ok(Some(d(0x1000))));

        let mut rx = nic.rx_producer().expect("rx");
        let mut nf_rx = nf.rx_consumer().expect("rx");
        rx.produce(&d(0x1000)).expect("produce");
        assert_eq!(nf_rx.consume_one(), Ok(Some(d(0x1000))));

        let mut tx = nf.tx_producer().expect("tx");
        let mut nic_tx = nic.tx_consumer().expect("tx");
        assert_eq!(tx.free(), Ok(128));
        tx.produce(&d(0x2000)).expect("produce");
        assert_eq!(nic_tx.consume_one(), Ok(Some(d(0x2000))));

        let mut comp = nic.completion_producer().expect("comp");
        let mut nf_comp = nf.completion_consumer().expect("comp");
        comp.produce(&d(0x2000)).expect("produce");
        assert_eq!(nf_comp.consume_one(), Ok(Some(d(0x2000))));

        nic.set_link_up(false);
        nic.set_mtu(9000);
        assert!(!nf.link_up());
        assert_eq!(nf.mtu(), 9000);
    }

    #[test]
    fn a_feeding_nf_takes_the_nics_place_on_the_hops_fill_and_rx_rings() {
        let nic = Bar::create(BarLayout::new(64, 64).expect("layout"), &CONFIG).expect("bar");
        let hop_nf = Bar::<Nf>::open(share(&nic)).expect("the hop's own view");
        let feeder = Bar::<Hop>::open(share(&nic)).expect("the feeding NF's view");
        assert_eq!(feeder.vf_index(), 3);
        // The hop's NF posts free frames; the feeding NF swaps a frame for one.
        let mut fill = hop_nf.fill_producer().expect("fill");
        for iova in [0x1000, 0x1800, 0x2000] {
            fill.produce(&d(iova)).expect("produce");
        }
        let mut free = feeder.fill_consumer().expect("fill");
        let mut rx = feeder.rx_producer().expect("rx");
        assert_eq!(free.consume_one(), Ok(Some(d(0x1000))));
        rx.produce(&d(0x9000)).expect("produce");
        // What the rings hold, as the NIC reads it while nobody moves.
        assert_eq!(nic.ring_frames(RingKind::Fill), Ok(vec![0x1800, 0x2000]));
        assert_eq!(nic.ring_frames(RingKind::Rx), Ok(vec![0x9000]));
        assert_eq!(nic.ring_frames(RingKind::Tx), Ok(vec![]));
        assert_eq!(nic.ring_len(RingKind::Fill), Ok(2));
        // The NIC takes the rings back where the feeding NF left them.
        drop((free, rx));
        let mut nic_fill = nic.fill_consumer().expect("fill");
        assert_eq!(nic_fill.consume_one(), Ok(Some(d(0x1800))));
        let mut nf_rx = hop_nf.rx_consumer().expect("rx");
        assert_eq!(nf_rx.consume_one(), Ok(Some(d(0x9000))));
        assert!(hop_nf.irq_masked(IrqVector::RX) && feeder.irq_masked(IrqVector::RX));
    }

    #[test]
    fn hop_counts_and_the_peer_generation_cross_the_bar() {
        let nic = Bar::create(BarLayout::new(64, 64).expect("layout"), &CONFIG).expect("bar");
        let nf = Bar::<Nf>::open(share(&nic)).expect("open");
        assert_eq!(nf.peer_generation(), 0);
        nic.set_peer_generation(7);
        assert_eq!(nf.peer_generation(), 7);
        let start = nic.hop_counts();
        assert_eq!(start, HopCounts::default());
        nf.count_hop(3, 180, 0);
        nf.count_hop(2, 120, 1);
        let now = nic.hop_counts();
        assert_eq!(
            now.since(start),
            HopCounts {
                frames: 5,
                bytes: 300,
                no_room: 1
            }
        );
        assert_eq!(now.since(now), HopCounts::default());
    }

    #[test]
    fn a_ring_whose_indices_cannot_be_holds_nothing_readable() {
        let nic = Bar::create(BarLayout::new(64, 64).expect("layout"), &CONFIG).expect("bar");
        let nf = Bar::<Nf>::open(share(&nic)).expect("open");
        let mut tx = nf.tx_producer().expect("tx");
        tx.produce(&d(0x1000)).expect("produce");
        assert_eq!(nic.ring_frames(RingKind::Tx), Ok(vec![0x1000]));
        // A producer index 1000 ahead of the consumer on a 64-slot ring.
        let tx_ring = nic.layout().tx();
        nic.shm
            .write_at(tx_ring.offset(), &1000u32.to_ne_bytes())
            .expect("write");
        assert!(matches!(
            nic.ring_frames(RingKind::Tx),
            Err(RingError::IndexJump { .. })
        ));
    }

    #[test]
    fn vectors_reset_masked() {
        let nic = Bar::create(BarLayout::new(64, 64).expect("layout"), &CONFIG).expect("bar");
        let nf = Bar::<Nf>::open(share(&nic)).expect("open");
        let v31 = IrqVector::new(31).expect("vector");
        for v in [IrqVector::RX, IrqVector::TX, v31] {
            assert!(nic.irq_masked(v));
        }
        assert_eq!(IrqVector::new(32), None);
        nf.unmask_irq(IrqVector::RX);
        assert!(!nic.irq_masked(IrqVector::RX));
        assert!(nic.irq_masked(IrqVector::TX));
        nf.mask_irq(IrqVector::RX);
        assert!(nic.irq_masked(IrqVector::RX));
    }

    #[test]
    fn corrupt_bars_rejected() {
        let layout = BarLayout::new(64, 64).expect("layout");
        let nic = Bar::create(layout, &CONFIG).expect("bar");
        let scribble = share(&nic);

        let poke = |offset: usize, bytes: &[u8]| {
            let mut saved = vec![0u8; bytes.len()];
            scribble.read_at(offset, &mut saved).expect("save");
            scribble.write_at(offset, bytes).expect("poke");
            let result = Bar::<Nf>::open(share(&nic));
            scribble.write_at(offset, &saved).expect("restore");
            result.err()
        };
        assert!(matches!(
            poke(reg::MAGIC, b"XXXX"),
            Some(BarError::BadMagic(_))
        ));
        assert!(matches!(
            poke(reg::ABI_VERSION, &2u32.to_ne_bytes()),
            Some(BarError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            poke(reg::RX_RING_SIZE, &100u32.to_ne_bytes()),
            Some(BarError::BadRingSize(100))
        ));
        assert!(matches!(
            poke(reg::TX_OFFSET, &u64::MAX.to_ne_bytes()),
            Some(BarError::LayoutMismatch {
                register: "tx offset",
                ..
            })
        ));
        assert!(matches!(
            poke(reg::RX_RING_SIZE, &32768u32.to_ne_bytes()),
            Some(BarError::LayoutMismatch { .. })
        ));
        assert!(Bar::<Nf>::open(share(&nic)).is_ok());
    }

    #[test]
    fn truncated_bars_rejected() {
        let layout = BarLayout::new(64, 64).expect("layout");
        let nic = Bar::create(layout, &CONFIG).expect("bar");
        let mut regs = vec![0u8; REGS_LEN];
        share(&nic).read_at(0, &mut regs).expect("regs");

        let short = SharedMemory::create("short", layout.len() - BAR_PAGE).expect("shm");
        short.write_at(0, &regs).expect("copy");
        assert!(matches!(
            Bar::<Nf>::open(short),
            Err(BarError::Truncated { needed, .. }) if needed == layout.len()
        ));
        let tiny = SharedMemory::create("tiny", 100).expect("shm");
        tiny.write_at(0, &regs[..100]).expect("copy");
        assert!(matches!(
            Bar::<Nf>::open(tiny),
            Err(BarError::TooSmall(100))
        ));
    }

    proptest! {
        /// Whatever the register page holds, open never panics, and a BAR it
        /// accepts yields working ring handles.
        #[test]
        fn prop_open_never_panics(
            regs in prop::collection::vec(any::<u8>(), reg::STATIC_END),
            keep_magic in any::<bool>(),
            sizes in (6u32..=15, 6u32..=15),
            pages in 1usize..300,
        ) {
            let mut regs = regs;
            if keep_magic {
                regs[..4].copy_from_slice(&BAR_MAGIC.to_ne_bytes());
                regs[4..8].copy_from_slice(&ABI_VERSION.to_ne_bytes());
                regs[0x14..0x18].copy_from_slice(&(1u32 << sizes.0).to_ne_bytes());
                regs[0x18..0x1C].copy_from_slice(&(1u32 << sizes.1).to_ne_bytes());
                let layout = BarLayout::new(1 << sizes.0, 1 << sizes.1).expect("layout");
                let offsets = [
                    layout.fill().offset(), layout.rx().offset(),
                    layout.tx().offset(), layout.completion().offset(), layout.len(),
                ];
                for (i, value) in offsets.into_iter().enumerate() {
                    let at = reg::FILL_OFFSET + 8 * i;
                    regs[at..at + 8].copy_from_slice(&(value as u64).to_ne_bytes());
                }
            }
            let shm = SharedMemory::create("fuzz", pages * BAR_PAGE).expect("shm");
            shm.write_at(0, &regs).expect("regs");
            if let Ok(bar) = Bar::<Nf>::open(shm) {
                prop_assert!(bar.layout().len() <= pages * BAR_PAGE);
                let mut fill = bar.fill_producer().expect("fill");
                prop_assert_eq!(fill.free(), Ok(bar.layout().rx_ring_size()));
                bar.rx_consumer().expect("rx");
                bar.tx_producer().expect("tx");
                bar.completion_consumer().expect("completion");
            }
        }
    }
}
