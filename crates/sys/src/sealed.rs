//! Sealed read-only blobs: bytes handed to another process in a memfd that no one
//! can change afterwards (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`,
//! `memfd_create(2)`). An NF's configuration travels this way, so that it is never
//! in argv or the environment (where `ps` and `/proc` show it) and is not bounded
//! by the attach socket's packet size.
//!
//! The receiver checks the seals before it reads: a blob that is not write-sealed
//! could change under it between the check and the use.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

/// The seals a sealed blob carries.
const SEALS: SealFlags = SealFlags::WRITE
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A sealed blob could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    /// A system call failed.
    #[error("{call} failed")]
    Sys {
        /// Which call.
        call: &'static str,
        /// Why.
        #[source]
        errno: Errno,
    },
    /// The file is not sealed against writing, growing and shrinking.
    #[error("the blob is not sealed (F_SEAL_WRITE, F_SEAL_SHRINK and F_SEAL_GROW are required)")]
    NotSealed,
    /// The blob is larger than the reader accepts.
    #[error("the blob is {len} bytes; at most {limit} are accepted")]
    TooLarge {
        /// Its size.
        len: u64,
        /// The reader's limit.
        limit: u64,
    },
    /// The blob's size is not the one announced with it.
    #[error("the blob is {actual} bytes, not the {expected} announced")]
    WrongSize {
        /// Announced.
        expected: u64,
        /// Found.
        actual: u64,
    },
}

fn sys(call: &'static str) -> impl FnOnce(Errno) -> SealedError {
    move |errno| SealedError::Sys { call, errno }
}

/// Writes `bytes` into a new memfd named `name` and seals it.
pub fn seal(name: &str, bytes: &[u8]) -> Result<OwnedFd, SealedError> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(sys("memfd_create"))?;
    let mut written = 0;
    while written < bytes.len() {
        let n =
            rustix::io::pwrite(&fd, &bytes[written..], written as u64).map_err(sys("pwrite"))?;
        written += n;
    }
    rustix::fs::fcntl_add_seals(&fd, SEALS).map_err(sys("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

/// Reads a sealed blob of `expected` bytes (at most `limit`), checking its seals
/// first.
pub fn read(fd: impl AsFd, expected: u64, limit: u64) -> Result<Vec<u8>, SealedError> {
    let fd = fd.as_fd();
    let seals = rustix::fs::fcntl_get_seals(fd).map_err(sys("fcntl(F_GET_SEALS)"))?;
    let required = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW;
    if !seals.contains(required) {
        return Err(SealedError::NotSealed);
    }
    let actual = rustix::fs::fstat(fd).map_err(sys("fstat"))?.st_size as u64;
    if actual > limit {
        return Err(SealedError::TooLarge { len: actual, limit });
    }
    if actual != expected {
        return Err(SealedError::WrongSize { expected, actual });
    }
    let mut bytes = vec![0u8; actual as usize];
    let mut read = 0;
    while read < bytes.len() {
        match rustix::io::pread(fd, &mut bytes[read..], read as u64).map_err(sys("pread"))? {
            0 => {
                return Err(SealedError::WrongSize {
                    expected,
                    actual: read as u64,
                });
            }
            n => read += n,
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_blob_reads_back_and_cannot_change() {
        let text = "x".repeat(300_000);
        let fd = seal("test-blob", text.as_bytes()).unwrap();
        assert_eq!(read(&fd, 300_000, 1 << 20).unwrap(), text.as_bytes());
        assert!(rustix::io::pwrite(&fd, b"y", 0).is_err(), "write-sealed");
        assert!(rustix::fs::ftruncate(&fd, 1).is_err(), "shrink-sealed");
        assert!(matches!(
            read(&fd, 300_000, 1000),
            Err(SealedError::TooLarge {
                len: 300_000,
                limit: 1000
            })
        ));
        assert!(matches!(
            read(&fd, 5, 1 << 20),
            Err(SealedError::WrongSize { expected: 5, .. })
        ));
    }

    #[test]
    fn an_unsealed_file_is_refused() {
        let fd = rustix::fs::memfd_create("open", MemfdFlags::CLOEXEC).unwrap();
        rustix::io::pwrite(&fd, b"{}", 0).unwrap();
        assert!(matches!(read(&fd, 2, 100), Err(SealedError::NotSealed)));
    }

    #[test]
    fn an_empty_blob_is_fine() {
        let fd = seal("empty", b"").unwrap();
        assert_eq!(read(&fd, 0, 10).unwrap(), b"");
    }
}
