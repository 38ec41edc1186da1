//! Memfd-backed shared memory: the BAR and UMEM regions shared between the
//! NIC engine and an NF.
//!
//! # How this crate touches shared memory
//!
//! A mapping shared with another process is outside what the Rust abstract
//! machine can see: the peer may write any byte at any time, and the peer may
//! be hostile. So safe code here never forms a reference (`&[u8]`,
//! `&mut [u8]`) into a mapping. Bytes move through raw-pointer copies
//! ([`SharedMemory::read_at`], [`SharedMemory::write_at`],
//! [`SharedMemory::copy_to`]), and ring indices and registers through atomics
//! (see [`crate::ring`]). A concurrent peer write can at worst tear the data
//! being copied; every byte pattern is a valid `u8`, and whoever consumes the
//! bytes validates them.
//!
//! The unsafe [`SharedMemory::slice`] and [`SharedMemory::slice_mut`] exist
//! for the NF side, which owns its UMEM and trusts the NIC to follow the ring
//! ownership protocol. The NIC engine must not use them on memory an NF can
//! write.
//!
//! # Truncation
//!
//! If the file behind a mapping shrinks, touching the lost pages raises
//! `SIGBUS`. A region created here is sealed against shrinking and growing
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, see `memfd_create(2)`), and
//! [`SharedMemory::from_fd`] refuses a file that does not carry
//! `F_SEAL_SHRINK`, so a peer can never pull pages out from under us.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

/// Errors from creating, importing or accessing a shared memory region.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// Creating the memfd failed.
    #[error("memfd_create failed")]
    Create(#[source] Errno),
    /// Setting the memfd size failed.
    #[error("setting the memfd size failed")]
    Truncate(#[source] Errno),
    /// Sealing the memfd failed.
    #[error("sealing the memfd failed")]
    Seal(#[source] Errno),
    /// Reading the seals failed; the fd is probably not a memfd.
    #[error("reading the file seals failed (not a memfd?)")]
    GetSeals(#[source] Errno),
    /// The file is not sealed against shrinking, so mapping it is unsafe.
    #[error("file is not sealed with F_SEAL_SHRINK")]
    NotSealed,
    /// `fstat` on the fd failed.
    #[error("fstat on the shared memory fd failed")]
    Stat(#[source] Errno),
    /// A region of zero bytes was requested or received.
    #[error("shared memory region has zero length")]
    Empty,
    /// The file size is negative or does not fit in this address space.
    #[error("shared memory size {0} is not mappable")]
    BadSize(i64),
    /// `mmap` failed.
    #[error("mapping the shared memory failed")]
    Map(#[source] std::io::Error),
    /// An access falls outside the region.
    #[error(
        "access of {len} bytes at offset {offset:#x} is outside the {region_len:#x}-byte region"
    )]
    OutOfBounds {
        /// Start of the access.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Length of the region.
        region_len: usize,
    },
}

/// A shared, read-write mapping of a sealed memfd.
///
/// Dropping it unmaps the region and closes the fd.
pub struct SharedMemory {
    // Field order: unmap before closing the fd (either order is valid for
    // mmap, this one is just the natural one).
    map: MmapRaw,
    fd: OwnedFd,
    len: usize,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("fd", &self.fd)
            .field("ptr", &self.map.as_mut_ptr())
            .field("len", &self.len)
            .finish()
    }
}

impl SharedMemory {
    /// Creates a `len`-byte memfd named `name` (a debugging label), seals its
    /// size and maps it.
    pub fn create(name: &str, len: usize) -> Result<Self, ShmError> {
        if len == 0 {
            return Err(ShmError::Empty);
        }
        // Lossless: usize is at most 64 bits on every Linux target.
        let len64 = len as u64;
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(ShmError::Create)?;
        rustix::fs::ftruncate(&fd, len64).map_err(ShmError::Truncate)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(ShmError::Seal)?;
        Self::map(fd, len)
    }

    /// Maps a memfd received from a peer. Its size comes from `fstat`; it must
    /// be non-empty and sealed with `F_SEAL_SHRINK`.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, ShmError> {
        // Seals first: once F_SEAL_SHRINK is present it cannot be removed, so
        // the size read afterwards can only stay or grow.
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(ShmError::GetSeals)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(ShmError::NotSealed);
        }
        let stat = rustix::fs::fstat(&fd).map_err(ShmError::Stat)?;
        if stat.st_size == 0 {
            return Err(ShmError::Empty);
        }
        let len = u64::try_from(stat.st_size)
            .ok()
            .and_then(|size| usize::try_from(size).ok())
            .ok_or(ShmError::BadSize(stat.st_size))?;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, ShmError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(ShmError::Map)?;
        Ok(Self { map, fd, len })
    }

    /// Length of the region in bytes (never zero).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty regions are rejected at construction.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, for passing to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Start of the mapping. Page-aligned, valid for [`len`](Self::len) bytes
    /// while `self` lives. See the module docs before dereferencing it.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Checks that `offset..offset + len` lies inside the region.
    pub fn check_range(&self, offset: usize, len: usize) -> Result<(), ShmError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ShmError::OutOfBounds {
                offset,
                len,
                region_len: self.len,
            }),
        }
    }

    /// Copies `src` into the region at `offset`.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        self.check_range(offset, src.len())?;
        // SAFETY: the destination range is inside the mapping (checked above)
        // and the mapping is writable. No reference into the mapping is
        // created. `src` cannot overlap the destination: a Rust slice into the
        // mapping can only come from `slice`/`slice_mut`, whose contract
        // forbids writing its range while that slice lives.
        unsafe {
            ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(offset), src.len());
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes from the region at `offset` into `dst`.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
        self.check_range(offset, dst.len())?;
        // SAFETY: the source range is inside the mapping (checked above); `dst`
        // is an exclusive Rust slice. They cannot overlap: a `&mut` slice into
        // the mapping can only come from `slice_mut`, whose contract forbids
        // any other access to its range while it lives.
        unsafe {
            ptr::copy_nonoverlapping(self.as_ptr().add(offset), dst.as_mut_ptr(), dst.len());
        }
        Ok(())
    }

    /// Copies `len` bytes from `src_off` to `dst_off` inside this region. The
    /// ranges may overlap.
    pub fn copy_within(&self, src_off: usize, dst_off: usize, len: usize) -> Result<(), ShmError> {
        self.copy_to(self, src_off, dst_off, len)
    }

    /// Copies `len` bytes from this region at `src_off` into `dst` at
    /// `dst_off` (the NIC's "DMA" between two VFs' memory). Both ranges are
    /// bounds-checked; `dst` may be `self`, and the ranges may overlap.
    pub fn copy_to(
        &self,
        dst: &SharedMemory,
        src_off: usize,
        dst_off: usize,
        len: usize,
    ) -> Result<(), ShmError> {
        self.check_range(src_off, len)?;
        dst.check_range(dst_off, len)?;
        // SAFETY: both ranges lie inside their mappings (checked above) and
        // the destination is writable. `ptr::copy` is a memmove, so overlap
        // (dst == self) is allowed. Only raw pointers are used.
        unsafe {
            ptr::copy(self.as_ptr().add(src_off), dst.as_ptr().add(dst_off), len);
        }
        Ok(())
    }

    /// Borrows `offset..offset + len` as a shared slice.
    ///
    /// # Safety
    ///
    /// The caller must own the range under the ring protocol for as long as
    /// the slice lives: nobody, in this process or the peer, writes to it.
    /// On the NF side that holds for a frame between taking it off the rx or
    /// completion ring and handing it back on the fill or tx ring, provided
    /// the NIC follows the protocol. The NIC engine must not call this on
    /// memory an NF can write.
    pub unsafe fn slice(&self, offset: usize, len: usize) -> Result<&[u8], ShmError> {
        self.check_range(offset, len)?;
        // SAFETY: the range is inside the live mapping (checked above), which
        // outlives the returned borrow of `self`. The caller guarantees no
        // concurrent writes for the slice's lifetime.
        Ok(unsafe { std::slice::from_raw_parts(self.as_ptr().add(offset), len) })
    }

    /// Borrows `offset..offset + len` as an exclusive slice.
    ///
    /// # Safety
    ///
    /// The caller must own the range exclusively under the ring protocol for
    /// as long as the slice lives: nobody else, in this process or the peer,
    /// reads or writes it, and no other slice of it exists. A frame is owned
    /// by exactly one side at a time and changes hands only through the
    /// rings; the NF may use this on a frame it owns (taken off the rx or
    /// completion ring, not yet put on the fill or tx ring). The NIC engine
    /// must not call this on memory an NF can write.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, offset: usize, len: usize) -> Result<&mut [u8], ShmError> {
        self.check_range(offset, len)?;
        // SAFETY: the range is inside the live, writable mapping (checked
        // above), which outlives the returned borrow of `self`. The caller
        // guarantees exclusive ownership of the range for the slice's
        // lifetime, so this is the only access path.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.as_ptr().add(offset), len) })
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(shm: &SharedMemory) -> OwnedFd {
        shm.fd().try_clone_to_owned().expect("dup")
    }

    #[test]
    fn create_write_read() {
        let shm = SharedMemory::create("t", 4096).expect("create");
        assert_eq!(shm.len(), 4096);
        assert!(!shm.is_empty());
        assert_eq!(shm.as_ptr() as usize % 4096, 0);
        shm.write_at(100, b"hello").expect("write");
        let mut buf = [0u8; 5];
        shm.read_at(100, &mut buf).expect("read");
        assert_eq!(&buf, b"hello");
        // Fresh memfd pages are zero.
        shm.read_at(4091, &mut buf).expect("read end");
        assert_eq!(buf, [0; 5]);
    }

    #[test]
    fn zero_length_rejected() {
        assert!(matches!(SharedMemory::create("t", 0), Err(ShmError::Empty)));
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .expect("memfd");
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).expect("seal");
        assert!(matches!(SharedMemory::from_fd(fd), Err(ShmError::Empty)));
    }

    #[test]
    fn bounds_checked() {
        let shm = SharedMemory::create("t", 64).expect("create");
        let mut buf = [0u8; 8];
        assert!(shm.read_at(57, &mut buf).is_err());
        assert!(shm.read_at(56, &mut buf).is_ok());
        assert!(shm.write_at(usize::MAX, &buf).is_err());
        assert!(shm.write_at(64, &[]).is_ok());
        assert!(shm.copy_within(0, 60, 8).is_err());
        assert!(shm.copy_within(usize::MAX, 0, 2).is_err());
        // SAFETY: single-threaded test, nobody else touches the region.
        assert!(unsafe { shm.slice(60, 8) }.is_err());
        // SAFETY: as above.
        assert!(unsafe { shm.slice_mut(usize::MAX, 2) }.is_err());
    }

    #[test]
    fn from_fd_shares_pages() {
        let a = SharedMemory::create("t", 8192).expect("create");
        let b = SharedMemory::from_fd(dup(&a)).expect("from_fd");
        assert_eq!(b.len(), 8192);
        a.write_at(5000, b"shared").expect("write");
        let mut buf = [0u8; 6];
        b.read_at(5000, &mut buf).expect("read");
        assert_eq!(&buf, b"shared");
    }

    #[test]
    fn size_is_sealed() {
        let a = SharedMemory::create("t", 4096).expect("create");
        assert_eq!(rustix::fs::ftruncate(a.fd(), 0), Err(Errno::PERM));
        assert_eq!(rustix::fs::ftruncate(a.fd(), 8192), Err(Errno::PERM));
    }

    #[test]
    fn unsealed_file_rejected() {
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("truncate");
        assert!(matches!(
            SharedMemory::from_fd(fd),
            Err(ShmError::NotSealed)
        ));
        let (sock, _other) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert!(matches!(
            SharedMemory::from_fd(sock.into()),
            Err(ShmError::GetSeals(_))
        ));
    }

    #[test]
    fn copy_between_regions() {
        let a = SharedMemory::create("a", 4096).expect("a");
        let b = SharedMemory::create("b", 2048).expect("b");
        a.write_at(10, b"frame").expect("write");
        a.copy_to(&b, 10, 2043, 5).expect("copy");
        let mut buf = [0u8; 5];
        b.read_at(2043, &mut buf).expect("read");
        assert_eq!(&buf, b"frame");
        assert!(a.copy_to(&b, 10, 2044, 5).is_err());
        assert!(b.copy_to(&a, 2044, 0, 5).is_err());
    }

    #[test]
    fn copy_within_overlapping() {
        let a = SharedMemory::create("a", 64).expect("a");
        a.write_at(0, b"abcdef").expect("write");
        a.copy_within(0, 2, 6).expect("copy");
        let mut buf = [0u8; 8];
        a.read_at(0, &mut buf).expect("read");
        assert_eq!(&buf, b"ababcdef");
    }

    #[test]
    fn slices_see_writes() {
        let a = SharedMemory::create("a", 64).expect("a");
        // SAFETY: single-threaded test; the slice is the only access to
        // 8..12 while it lives.
        let s = unsafe { a.slice_mut(8, 4) }.expect("slice");
        s.copy_from_slice(b"wxyz");
        let mut buf = [0u8; 4];
        a.read_at(8, &mut buf).expect("read");
        assert_eq!(&buf, b"wxyz");
        // SAFETY: single-threaded test, no writes while the slice lives.
        assert_eq!(unsafe { a.slice(8, 4) }.expect("slice"), b"wxyz");
    }
}
