//! Why a store cannot be used, told so that a person can act: a file where the
//! directory should be, a lock another process holds (named from `/proc/locks`), a
//! store that cannot be read, damaged data. Each cause is its own [`StoreError`].

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::DB_FILE;

/// Errors of the desired-state store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store directory could not be created.
    #[error("cannot create the store directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store path, or a directory on the way to it, is a file.
    #[error(
        "the store directory {} cannot be used: {} is not a directory; \
         give --data-dir a directory, or move the file aside",
        path.display(),
        file.display()
    )]
    NotADirectory {
        /// The store directory asked for.
        path: PathBuf,
        /// The file in the way: `path` itself or one of its parents.
        file: PathBuf,
    },
    /// Another process has the store open: sled locks its `db` file exclusively.
    #[error(
        "{holder} holds the lock on {}: the store is in use; stop that process, \
         or give this nfhost another --data-dir",
        path.display()
    )]
    Locked {
        /// The locked file, `<dir>/db`.
        path: PathBuf,
        /// Who holds the lock, as far as `/proc/locks` tells.
        holder: LockHolder,
    },
    /// The store's files cannot be opened, read or written.
    #[error(
        "cannot read or write the store's files in {}: check that nfhost's user may read \
         and write them and that the filesystem is mounted read-write and not full",
        path.display()
    )]
    Unreadable {
        /// The store directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// sled found damaged data in its files (a checksum or a header that does not
    /// hold).
    #[error(
        "the store's files in {} are damaged: restore the directory from a backup, \
         or move it aside to start with an empty store",
        path.display()
    )]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What sled found.
        #[source]
        source: sled::Error,
    },
    /// The store held data, but sled could read none of it back. sled takes what it
    /// cannot read at the end of its log for a write torn by a crash and drops it,
    /// so a damaged data file opens as an empty database rather than as an error.
    #[error(
        "the store in {} held data but none of it can be read back: its files are \
         damaged; restore the directory from a backup, or move it aside to start with \
         an empty store",
        path.display()
    )]
    Emptied {
        /// The store directory.
        path: PathBuf,
    },
    /// sled refused to open the store for another reason.
    #[error("cannot open the store in {}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: sled::Error,
    },
    /// The store was written by a build with another layout.
    #[error(
        "the store has schema version {found}, this nfhost supports version {supported}: \
         run a matching nfhost, or move the store directory aside to start empty"
    )]
    Schema {
        /// The version on disk.
        found: u32,
        /// [`SCHEMA_VERSION`](super::SCHEMA_VERSION).
        supported: u32,
    },
    /// A stored record is not the message its key says it is: sled read it intact,
    /// but it does not decode.
    #[error(
        "stored record {key} in {} cannot be decoded: restore the store directory from \
         a backup, or move it aside to start with an empty store",
        path.display()
    )]
    Decode {
        /// The store directory.
        path: PathBuf,
        /// The record's key.
        key: String,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },
    /// A `meta/` value has the wrong length.
    #[error("stored value {key} is {len} bytes, expected {expected}: the store is damaged")]
    CorruptMeta {
        /// The key.
        key: &'static str,
        /// Its length on disk.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
    /// A key of the `state` tree does not follow the layout.
    #[error("stored key {key:?} is not part of the store layout: the store is damaged")]
    BadKey {
        /// The key, lossily as text.
        key: String,
    },
    /// A name given to the store cannot be a key.
    #[error(
        "{what} name {name:?} is not valid: expected a short id like `fw` or a resource name \
         like `nfs/fw`, of printable ASCII without spaces"
    )]
    InvalidName {
        /// `NF` or `chain`.
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// sled failed reading the store.
    #[error("reading the store failed")]
    Read(#[source] sled::Error),
    /// sled failed writing the store; the change may not be durable.
    #[error("writing the store failed")]
    Write(#[source] sled::Error),
}

/// Who holds the lock on a store, for [`StoreError::Locked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockHolder {
    /// A process `/proc/locks` names, with its command name when readable.
    Process {
        /// Its PID (in the PID namespace of `/proc`).
        pid: u32,
        /// `/proc/PID/comm`, e.g. `nfhost`.
        name: Option<String>,
    },
    /// The lock is held, but `/proc/locks` does not say by whom.
    Unknown,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockHolder::Process {
                pid,
                name: Some(name),
            } => write!(f, "another process (PID {pid}, {name})"),
            LockHolder::Process { pid, name: None } => write!(f, "another process (PID {pid})"),
            LockHolder::Unknown => f.write_str("another process"),
        }
    }
}

/// Creates the store directory if need be. A file where it or one of its parents
/// should be is [`StoreError::NotADirectory`], naming the file.
pub(super) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| {
        let file = dir
            .ancestors()
            .find(|p| p.metadata().is_ok_and(|m| !m.is_dir()));
        match file {
            Some(file) => StoreError::NotADirectory {
                path: dir.to_owned(),
                file: file.to_owned(),
            },
            None => StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            },
        }
    })
}

/// Tells why sled could not open the store in `dir`.
pub(super) fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        // `Unsupported` at open is sled's reading of a `conf` that is not UTF-8 as
        // "written by sled before 0.29"; nfhost never used one, so it is damage.
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => StoreError::Corrupt {
            path: dir.to_owned(),
            source: e,
        },
        // sled reports a lock it could not take as an I/O error like any other
        // (`config.rs`, `try_lock`): ask the lock itself.
        sled::Error::Io(source) => {
            let db = dir.join(DB_FILE);
            match lock_holder(&db) {
                Some(holder) => StoreError::Locked { path: db, holder },
                None => StoreError::Unreadable {
                    path: dir.to_owned(),
                    source,
                },
            }
        }
        other => StoreError::Open {
            path: dir.to_owned(),
            source: other,
        },
    }
}

/// How a failed read of the open store is reported: damaged data and I/O errors
/// by their cause, the rest as [`StoreError::Read`].
pub(super) fn read_error(dir: &Path) -> impl Fn(sled::Error) -> StoreError + '_ {
    move |e| match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            path: dir.to_owned(),
            source: e,
        },
        sled::Error::Io(source) => StoreError::Unreadable {
            path: dir.to_owned(),
            source,
        },
        other => StoreError::Read(other),
    }
}

/// Who holds a lock on `file`, or `None` if nobody does (or the file cannot be
/// opened to ask). sled takes an exclusive `flock` (through `fs2`); a shared probe
/// fails exactly while someone holds it, and is released when the probe's file
/// is closed.
pub(super) fn lock_holder(file: &Path) -> Option<LockHolder> {
    use rustix::fs::{FlockOperation, flock};
    let probe = std::fs::File::open(file).ok()?;
    match flock(&probe, FlockOperation::NonBlockingLockShared) {
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Some(lock_owner(&probe).unwrap_or(LockHolder::Unknown))
        }
        _ => None,
    }
}

/// The PID that `/proc/locks` gives for a `FLOCK` on `file`'s inode. Its lines
/// read `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF` (device as hex
/// major:minor, then the inode; `proc(5)`); waiters' lines carry `->` and are
/// skipped. `None` when there is no such line or `/proc` is not there.
fn lock_owner(file: &std::fs::File) -> Option<LockHolder> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(meta.dev()),
        rustix::fs::minor(meta.dev()),
        meta.ino()
    );
    let find = |locks: &str| {
        locks.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "FLOCK", _, _, pid, inode, ..] if *inode == want => pid.parse::<u32>().ok(),
                _ => None,
            }
        })
    };
    // The kernel lists the locks a page at a time, and a line can be skipped when
    // other locks come and go between two pages (a busy host, other stores opening
    // beside this one): a lock known to be held is looked for in a few listings.
    let pid = (0..4).find_map(|_| find(&std::fs::read_to_string("/proc/locks").ok()?))?;
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|n| n.trim_end().to_owned());
    Some(LockHolder::Process { pid, name })
}
