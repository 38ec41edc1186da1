//! The desired-state store: what a person asked for, kept in sled so that it
//! survives a restart (ARCHITECTURE.md §5, "Desired state in sled").
//!
//! Every accepted change is one [`Store::apply`]: one `sled::Batch`, applied
//! atomically and flushed before the call returns, so a change that was
//! acknowledged is on disk. On start the service calls [`Store::load`] and
//! reconciles the running system to the [`State`] it returns.
//!
//! # Layout
//!
//! One tree, `state`, with ASCII keys. Values are the API's protobuf messages,
//! so the stored form and the wire form are the same schema.
//!
//! | key                    | value                                   |
//! |------------------------|-----------------------------------------|
//! | `meta/schema`          | `u32` big-endian, [`SCHEMA_VERSION`]    |
//! | `meta/boot`            | `u64` big-endian, bumped on every open  |
//! | `pf/0`                 | [`Pf`]                                  |
//! | `vf/NNN`               | [`Vf`], the VF index zero-padded to 3   |
//! | `nf/<id>`              | [`Nf`] without its runtime `status`     |
//! | `chain/<id>`           | [`Chain`]                               |
//! | `ev/<seq, 16 hex>`     | [`Event`], the newest [`EVENT_LOG_CAPACITY`] |
//!
//! # Names
//!
//! NFs and chains are keyed by their short id (`fw`), the last segment of the
//! resource name (`nfs/fw`, AIP-122). Wherever the store takes a name — the
//! `name` of a [`Change::PutNf`] / [`Change::PutChain`] message or the string
//! of a `Delete*` change — either form is accepted; the keys and the maps of
//! [`State`] use the short id. Stored messages are kept as given (apart from
//! the NF status), so a `name` of `nfs/fw` comes back as `nfs/fw`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use thiserror::Error;

use nfhost_api::proto::{Chain, Event, Nf, Pf, Vf};

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// How many events the log keeps; older ones are deleted by the batch that
/// pushes them out.
pub const EVENT_LOG_CAPACITY: usize = 1000;

const TREE: &str = "state";
/// sled's data file in the store directory, the one it locks.
const DB_FILE: &str = "db";
/// sled's settings file in the store directory.
const CONF_FILE: &str = "conf";
const KEY_SCHEMA: &str = "meta/schema";
const KEY_BOOT: &str = "meta/boot";
const KEY_PF: &str = "pf/0";
const PREFIX_VF: &str = "vf/";
const PREFIX_NF: &str = "nf/";
const PREFIX_CHAIN: &str = "chain/";
const PREFIX_EV: &str = "ev/";

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
        /// [`SCHEMA_VERSION`].
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

/// The desired state, as loaded on start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// The PF, once configured.
    pub pf: Option<Pf>,
    /// VF admin config by VF index.
    pub vfs: BTreeMap<u16, Vf>,
    /// NFs by short id (`fw`), without status.
    pub nfs: BTreeMap<String, Nf>,
    /// Chains by short id (`edge`).
    pub chains: BTreeMap<String, Chain>,
}

/// One change to the desired state; a request's changes go to [`Store::apply`]
/// together.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Stores the PF.
    PutPf(Pf),
    /// Stores VF `index`'s admin config.
    PutVf(u16, Vf),
    /// Forgets VF `index`.
    DeleteVf(u16),
    /// Stores an NF under the id of its `name`; its `status` is dropped.
    PutNf(Nf),
    /// Forgets an NF (`fw` or `nfs/fw`).
    DeleteNf(String),
    /// Stores a chain under the id of its `name`.
    PutChain(Chain),
    /// Forgets a chain (`edge` or `chains/edge`).
    DeleteChain(String),
    /// Appends an event; the store assigns its `seq`, and its `time_ms` if 0.
    Event(Event),
}

/// The event log's position, kept in memory after open.
#[derive(Debug)]
struct EventLog {
    /// The seq the next event gets.
    next_seq: u64,
    /// Events stored now.
    len: usize,
}

/// The desired-state store. Cloning is cheap; clones share the database.
#[derive(Clone)]
pub struct Store {
    // Kept so the database (and sled's flusher) lives as long as any clone.
    _db: sled::Db,
    tree: sled::Tree,
    /// The store directory, for error messages.
    dir: Arc<Path>,
    boot_id: u64,
    /// Held across seq assignment and `apply_batch`, so two concurrent applies
    /// cannot give out the same seq or trim the log from a stale length.
    log: Arc<Mutex<EventLog>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` and counts one more boot.
    ///
    /// A store of another [`SCHEMA_VERSION`] is refused before anything is written.
    ///
    /// A store that cannot be opened is reported by its cause, each with what to do:
    /// [`StoreError::NotADirectory`], [`StoreError::Locked`] (another process has it
    /// open), [`StoreError::Unreadable`], [`StoreError::Corrupt`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_dir(dir)?;
        // sled writes `conf` on its first open, and this function then the schema
        // record; a store with the one and not the other lost its data (or crashed
        // within its first open: moving it aside loses nothing then).
        let existed = dir.join(CONF_FILE).exists();
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = db.open_tree(TREE).map_err(|e| open_error(dir, e))?;
        let read_err = read_error(dir);

        match tree.get(KEY_SCHEMA).map_err(&read_err)? {
            Some(v) => {
                let found = u32::from_be_bytes(fixed(KEY_SCHEMA, &v)?);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None if existed => {
                return Err(StoreError::Emptied {
                    path: dir.to_owned(),
                });
            }
            None => {
                tree.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(StoreError::Write)?;
            }
        }

        let last_boot = match tree.get(KEY_BOOT).map_err(&read_err)? {
            Some(v) => u64::from_be_bytes(fixed(KEY_BOOT, &v)?),
            None => 0,
        };
        let boot_id = last_boot.wrapping_add(1);
        tree.insert(KEY_BOOT, &boot_id.to_be_bytes())
            .map_err(StoreError::Write)?;
        tree.flush().map_err(StoreError::Write)?;

        let mut len = 0;
        let mut last_seq = 0;
        for kv in tree.scan_prefix(PREFIX_EV) {
            let (k, _) = kv.map_err(&read_err)?;
            last_seq = parse_seq(&k)?;
            len += 1;
        }

        Ok(Store {
            _db: db,
            dir: dir.into(),
            tree,
            boot_id,
            log: Arc::new(Mutex::new(EventLog {
                next_seq: last_seq + 1,
                len,
            })),
        })
    }

    /// How many times this store has been opened, this open included (1 on a
    /// fresh store). Tells one run of the service from the next.
    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// Reads the whole desired state.
    pub fn load(&self) -> Result<State, StoreError> {
        let read_err = read_error(&self.dir);
        let mut state = State::default();
        if let Some(v) = self.tree.get(KEY_PF).map_err(&read_err)? {
            state.pf = Some(self.decode(KEY_PF, &v)?);
        }
        for kv in self.tree.scan_prefix(PREFIX_VF) {
            let (k, v) = kv.map_err(&read_err)?;
            let key = key_text(&k)?;
            let index = key[PREFIX_VF.len()..]
                .parse::<u16>()
                .map_err(|_| StoreError::BadKey { key: key.into() })?;
            state.vfs.insert(index, self.decode(key, &v)?);
        }
        for kv in self.tree.scan_prefix(PREFIX_NF) {
            let (k, v) = kv.map_err(&read_err)?;
            let key = key_text(&k)?;
            state
                .nfs
                .insert(key[PREFIX_NF.len()..].to_owned(), self.decode(key, &v)?);
        }
        for kv in self.tree.scan_prefix(PREFIX_CHAIN) {
            let (k, v) = kv.map_err(&read_err)?;
            let key = key_text(&k)?;
            state
                .chains
                .insert(key[PREFIX_CHAIN.len()..].to_owned(), self.decode(key, &v)?);
        }
        Ok(state)
    }

    /// Applies `changes` as one atomic batch and flushes it to disk before
    /// returning: on `Ok` the changes survive a crash. On an invalid name
    /// nothing is written.
    ///
    /// Events get consecutive seqs after the last stored one, and the same
    /// batch deletes the oldest events beyond [`EVENT_LOG_CAPACITY`].
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut events = Vec::new();
        for change in changes {
            match change {
                Change::PutPf(pf) => batch.insert(KEY_PF, pf.encode_to_vec()),
                Change::PutVf(index, vf) => {
                    batch.insert(vf_key(*index).into_bytes(), vf.encode_to_vec())
                }
                Change::DeleteVf(index) => batch.remove(vf_key(*index).into_bytes()),
                Change::PutNf(nf) => {
                    let nf = Nf {
                        status: None,
                        ..nf.clone()
                    };
                    batch.insert(nf_key(&nf.name)?.into_bytes(), nf.encode_to_vec());
                }
                Change::DeleteNf(name) => batch.remove(nf_key(name)?.into_bytes()),
                Change::PutChain(chain) => {
                    batch.insert(chain_key(&chain.name)?.into_bytes(), chain.encode_to_vec());
                }
                Change::DeleteChain(name) => batch.remove(chain_key(name)?.into_bytes()),
                Change::Event(ev) => events.push(ev),
            }
        }

        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let now = now_ms();
            // Of the new events only the newest CAPACITY can stay; the older
            // ones still use up their seq, so seqs never repeat.
            let skip_new = events.len().saturating_sub(EVENT_LOG_CAPACITY);
            for (i, ev) in events.iter().enumerate() {
                let seq = log.next_seq + i as u64;
                if i < skip_new {
                    continue;
                }
                let ev = Event {
                    seq,
                    time_ms: if ev.time_ms == 0 { now } else { ev.time_ms },
                    ..(*ev).clone()
                };
                batch.insert(ev_key(seq).into_bytes(), ev.encode_to_vec());
            }
            let kept_new = events.len() - skip_new;
            let trim = (log.len + kept_new).saturating_sub(EVENT_LOG_CAPACITY);
            for kv in self.tree.scan_prefix(PREFIX_EV).take(trim) {
                let (k, _) = kv.map_err(read_error(&self.dir))?;
                batch.remove(k);
            }
            self.tree.apply_batch(batch).map_err(StoreError::Write)?;
            log.next_seq += events.len() as u64;
            log.len = log.len + kept_new - trim;
        }
        // Outside the lock: flush covers every batch applied so far, so
        // concurrent callers share the disk write.
        self.tree.flush().map_err(StoreError::Write)?;
        Ok(())
    }

    /// The newest `limit` stored events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(EVENT_LOG_CAPACITY));
        for kv in self.tree.scan_prefix(PREFIX_EV).rev().take(limit) {
            let (k, v) = kv.map_err(read_error(&self.dir))?;
            out.push(self.decode(key_text(&k)?, &v)?);
        }
        out.reverse();
        Ok(out)
    }

    fn decode<M: Message + Default>(&self, key: &str, v: &[u8]) -> Result<M, StoreError> {
        M::decode(v).map_err(|source| StoreError::Decode {
            path: self.dir.to_path_buf(),
            key: key.to_owned(),
            source,
        })
    }

    /// Every stored key and value except `meta/boot`, in key order: lets a
    /// test check that a refused request left the store byte-for-byte unchanged.
    ///
    /// # Panics
    ///
    /// If sled cannot read the tree (an I/O error); this is a test aid, not a
    /// service path.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.tree
            .iter()
            .map(|kv| kv.expect("reading the store for dump failed"))
            .filter(|(k, _)| k.as_ref() != KEY_BOOT.as_bytes())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }
}

/// Creates the store directory if need be. A file where it or one of its parents
/// should be is [`StoreError::NotADirectory`], naming the file.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
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
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
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
fn read_error(dir: &Path) -> impl Fn(sled::Error) -> StoreError + '_ {
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
fn lock_holder(file: &Path) -> Option<LockHolder> {
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
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, inode, ..] if *inode == want => pid.parse::<u32>().ok(),
            _ => None,
        }
    })?;
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|n| n.trim_end().to_owned());
    Some(LockHolder::Process { pid, name })
}

fn vf_key(index: u16) -> String {
    format!("{PREFIX_VF}{index:03}")
}

fn ev_key(seq: u64) -> String {
    format!("{PREFIX_EV}{seq:016x}")
}

fn nf_key(name: &str) -> Result<String, StoreError> {
    Ok(format!("{PREFIX_NF}{}", short_id("NF", "nfs/", name)?))
}

fn chain_key(name: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{PREFIX_CHAIN}{}",
        short_id("chain", "chains/", name)?
    ))
}

/// `fw` from `fw` or `nfs/fw`; refuses anything that would not make a clean key.
fn short_id<'a>(
    what: &'static str,
    collection: &str,
    name: &'a str,
) -> Result<&'a str, StoreError> {
    let id = name.strip_prefix(collection).unwrap_or(name);
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(id)
}

fn key_text(k: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(k).map_err(|_| StoreError::BadKey {
        key: String::from_utf8_lossy(k).into_owned(),
    })
}

fn parse_seq(k: &[u8]) -> Result<u64, StoreError> {
    let key = key_text(k)?;
    let hex = &key[PREFIX_EV.len()..];
    match u64::from_str_radix(hex, 16) {
        Ok(seq) if hex.len() == 16 => Ok(seq),
        _ => Err(StoreError::BadKey { key: key.into() }),
    }
}

fn fixed<const N: usize>(key: &'static str, v: &[u8]) -> Result<[u8; N], StoreError> {
    v.try_into().map_err(|_| StoreError::CorruptMeta {
        key,
        len: v.len(),
        expected: N,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfhost_api::proto::{ChainNf, Classifier, NfState, NfStatus};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "nfhost-store-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Opens a store this process had open before. sled releases the lock on its
    /// data file when the last of its I/O threads lets go of the file, which can be
    /// a moment after the `Db` is dropped, and sled gives no signal for it: wait for
    /// it, while the lock is still this process's.
    fn reopen(dir: &Path) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Err(StoreError::Locked { holder, .. })
                    if std::time::Instant::now() < deadline
                        && match holder {
                            LockHolder::Process { pid, .. } => pid == std::process::id(),
                            // Released between sled's attempt and the look at /proc.
                            LockHolder::Unknown => true,
                        } =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn pf() -> Pf {
        Pf {
            name: "pfs/0".into(),
            mac: "02:4e:46:00:00:00".into(),
            total_vfs: 64,
            num_vfs: 8,
            wire: "gen".into(),
            ..Pf::default()
        }
    }

    fn vf(index: u32) -> Vf {
        Vf {
            name: format!("pfs/0/vfs/{index}"),
            index,
            mac: format!("02:4e:46:00:01:{index:02x}"),
            vlan: 100,
            spoof_check: true,
            mtu: 1500,
            ..Vf::default()
        }
    }

    fn nf(name: &str) -> Nf {
        Nf {
            name: format!("nfs/{name}"),
            kind: "l2fwd".into(),
            config: "{}".into(),
            vf: "pfs/0/vfs/3".into(),
            restart_policy: 2,
            chain: "chains/edge".into(),
            status: None,
        }
    }

    fn chain(name: &str) -> Chain {
        Chain {
            name: format!("chains/{name}"),
            isolation: 1,
            classifier: Some(Classifier {
                vlan: 10,
                dst_mac: String::new(),
            }),
            nfs: vec![ChainNf {
                name: "fw".into(),
                kind: "l2fwd".into(),
                config: String::new(),
            }],
            vfs: vec!["pfs/0/vfs/3".into()],
            ..Chain::default()
        }
    }

    fn event(message: &str) -> Change {
        Change::Event(Event {
            kind: 7,
            message: message.into(),
            ..Event::default()
        })
    }

    #[test]
    fn every_record_kind_round_trips_through_reopen() {
        let dir = TempDir::new();
        {
            let store = Store::open(&dir.0).expect("open");
            store
                .apply(&[
                    Change::PutPf(pf()),
                    Change::PutVf(3, vf(3)),
                    Change::PutVf(12, vf(12)),
                    Change::PutNf(nf("fw")),
                    Change::PutChain(chain("edge")),
                    event("hello"),
                ])
                .expect("apply");
        }
        let store = reopen(&dir.0).expect("reopen");
        let state = store.load().expect("load");
        let want = State {
            pf: Some(pf()),
            vfs: BTreeMap::from([(3, vf(3)), (12, vf(12))]),
            nfs: BTreeMap::from([("fw".to_owned(), nf("fw"))]),
            chains: BTreeMap::from([("edge".to_owned(), chain("edge"))]),
        };
        assert_eq!(state, want);
        let events = store.events(10).expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].message, "hello");
        assert_eq!(events[0].seq, 1);
        assert!(events[0].time_ms > 0, "time_ms is filled in");
        let keys: Vec<_> = store.dump().into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&b"vf/003".to_vec()) && keys.contains(&b"nf/fw".to_vec()));
    }

    #[test]
    fn a_batch_lands_together_and_deletes_work() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        store
            .apply(&[
                Change::PutVf(1, vf(1)),
                Change::PutVf(2, vf(2)),
                Change::PutNf(nf("a")),
                Change::PutNf(nf("b")),
                Change::PutChain(chain("edge")),
            ])
            .expect("apply");
        // Short ids and resource names name the same record.
        store
            .apply(&[
                Change::DeleteVf(1),
                Change::DeleteNf("a".into()),
                Change::DeleteNf("nfs/b".into()),
                Change::DeleteChain("chains/edge".into()),
                Change::PutNf(nf("c")),
            ])
            .expect("apply");
        drop(store);
        let state = reopen(&dir.0).expect("reopen").load().expect("load");
        assert_eq!(state.vfs.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(state.nfs.keys().collect::<Vec<_>>(), ["c"]);
        assert!(state.chains.is_empty());
    }

    #[test]
    fn an_invalid_name_refuses_the_whole_batch() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let before = store.dump();
        let err = store
            .apply(&[
                Change::PutVf(1, vf(1)),
                event("x"),
                Change::DeleteNf("nfs/".into()),
            ])
            .expect_err("empty id");
        assert!(
            matches!(err, StoreError::InvalidName { what: "NF", .. }),
            "{err}"
        );
        assert_eq!(store.dump(), before);
        // The refused event did not use up a seq.
        store.apply(&[event("y")]).expect("apply");
        assert_eq!(store.events(1).expect("events")[0].seq, 1);
    }

    #[test]
    fn boot_id_increments_across_opens() {
        let dir = TempDir::new();
        let first = reopen(&dir.0).expect("open").boot_id();
        let second = reopen(&dir.0).expect("open").boot_id();
        let third = reopen(&dir.0).expect("open").boot_id();
        assert_eq!((first, second, third), (1, 2, 3));
    }

    #[test]
    fn another_schema_version_is_refused() {
        let dir = TempDir::new();
        {
            let db = sled::open(&dir.0).expect("sled");
            let tree = db.open_tree(TREE).expect("tree");
            tree.insert(KEY_SCHEMA, &99u32.to_be_bytes())
                .expect("insert");
            tree.flush().expect("flush");
        }
        let err = reopen(&dir.0).expect_err("schema 99");
        assert!(
            matches!(
                err,
                StoreError::Schema {
                    found: 99,
                    supported: SCHEMA_VERSION
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("99") && msg.contains(&SCHEMA_VERSION.to_string()),
            "{msg}"
        );
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_key() {
        let dir = TempDir::new();
        {
            let store = Store::open(&dir.0).expect("open");
            store.apply(&[Change::PutNf(nf("fw"))]).expect("apply");
            // A field header announcing more bytes than there are.
            store
                .tree
                .insert("nf/bad", &[0x0a, 0x20, b'x'])
                .expect("insert");
            store.tree.flush().expect("flush");
        }
        let err = reopen(&dir.0).expect("reopen").load().expect_err("corrupt");
        match &err {
            StoreError::Decode { key, .. } => assert_eq!(key, "nf/bad"),
            other => panic!("expected Decode, got {other:?}"),
        }
        assert!(err.to_string().contains("nf/bad"));
        assert!(
            std::error::Error::source(&err).is_some(),
            "the cause is kept"
        );
    }

    #[test]
    fn a_file_where_the_directory_should_be_is_named() {
        let dir = TempDir::new();
        std::fs::write(&dir.0, b"not a directory").expect("write");
        let err = Store::open(&dir.0).expect_err("a file");
        match &err {
            StoreError::NotADirectory { path, file } => {
                assert_eq!((path, file), (&dir.0, &dir.0));
            }
            other => panic!("expected NotADirectory, got {other:?}"),
        }
        assert!(err.to_string().contains("is not a directory"), "{err}");
        // A path through the file: the file is the one named.
        let below = dir.0.join("state");
        let err = Store::open(&below).expect_err("below a file");
        match &err {
            StoreError::NotADirectory { path, file } => {
                assert_eq!((path, file), (&below, &dir.0));
            }
            other => panic!("expected NotADirectory, got {other:?}"),
        }
    }

    #[test]
    fn a_store_open_elsewhere_is_locked_and_the_holder_named() {
        let dir = TempDir::new();
        // The first open holds sled's lock on `db`, as another nfhost would; /proc
        // names this process as the holder.
        let first = Store::open(&dir.0).expect("open");
        let err = Store::open(&dir.0).expect_err("locked");
        match &err {
            StoreError::Locked { path, holder } => {
                assert_eq!(path, &dir.0.join(DB_FILE));
                match holder {
                    LockHolder::Process { pid, .. } => assert_eq!(*pid, std::process::id()),
                    LockHolder::Unknown => panic!("the holder is not found in /proc/locks"),
                }
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("PID {}", std::process::id()))
                && msg.contains("holds the lock on"),
            "{msg}"
        );
        // Closed, the store opens again.
        drop(first);
        reopen(&dir.0).expect("open after the holder closed it");
    }

    #[test]
    fn store_files_that_cannot_be_opened_are_unreadable() {
        // Tests run as root, which ignores permission bits, so `chmod 000` cannot
        // make the files unreadable. What fails for root too: a directory where
        // sled's data file should be (open(2) for writing gives EISDIR).
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.0.join(DB_FILE)).expect("mkdir");
        let err = Store::open(&dir.0).expect_err("unreadable");
        match &err {
            StoreError::Unreadable { path, source } => {
                assert_eq!(path, &dir.0);
                assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory, "{source}");
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
        assert!(err.to_string().contains("cannot read or write"), "{err}");
    }

    /// A store with a PF and an NF in `dir`, closed.
    fn written(dir: &Path) {
        let store = Store::open(dir).expect("open");
        store
            .apply(&[Change::PutPf(pf()), Change::PutNf(nf("fw"))])
            .expect("apply");
    }

    /// Bytes sled never wrote, as long as the file was.
    fn overwrite_with_garbage(file: &Path) {
        let len = std::fs::metadata(file).expect("file").len() as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(file, garbage).expect("write");
    }

    fn assert_damaged(err: &StoreError, dir: &Path) {
        let path = match err {
            StoreError::Corrupt { path, .. } | StoreError::Emptied { path } => path,
            other => panic!("expected Corrupt or Emptied, got {other:?}"),
        };
        assert_eq!(path, dir);
        let msg = err.to_string();
        assert!(
            msg.contains("damaged") && msg.contains("backup") && msg.contains("move it aside"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_in_sleds_settings_is_corrupt() {
        // Text that is not sled's `key: value` lines: sled's own corruption error
        // ("Read corrupted data at file offset None").
        let dir = TempDir::new();
        written(&dir.0);
        std::fs::write(dir.0.join(CONF_FILE), b"this is not sled's config file\n").expect("write");
        let err = reopen(&dir.0).expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert_damaged(&err, &dir.0);
    }

    #[test]
    fn garbage_in_every_file_is_corrupt() {
        let dir = TempDir::new();
        written(&dir.0);
        for entry in std::fs::read_dir(&dir.0).expect("dir").flatten() {
            if entry.path().is_file() {
                overwrite_with_garbage(&entry.path());
            }
        }
        let err = reopen(&dir.0).expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert_damaged(&err, &dir.0);
    }

    #[test]
    fn a_damaged_data_file_is_not_taken_for_an_empty_store() {
        // sled opens a data file it cannot read as an empty database; the store
        // notices that its schema record is gone.
        let dir = TempDir::new();
        written(&dir.0);
        overwrite_with_garbage(&dir.0.join(DB_FILE));
        let err = reopen(&dir.0).expect_err("emptied");
        assert!(matches!(err, StoreError::Emptied { .. }), "{err:?}");
        assert_damaged(&err, &dir.0);
        // Still refused the next time: nothing was written over it.
        assert!(matches!(reopen(&dir.0), Err(StoreError::Emptied { .. })));
    }

    #[test]
    fn event_seq_is_monotonic_across_reopen_and_the_log_is_bounded() {
        let dir = TempDir::new();
        {
            let store = Store::open(&dir.0).expect("open");
            let batch: Vec<_> = (0..998).map(|i| event(&format!("e{i}"))).collect();
            store.apply(&batch).expect("apply");
            assert_eq!(store.events(usize::MAX).expect("events").len(), 998);
        }
        let store = reopen(&dir.0).expect("reopen");
        for i in 998..1005 {
            store.apply(&[event(&format!("e{i}"))]).expect("apply");
        }
        let events = store.events(usize::MAX).expect("events");
        assert_eq!(events.len(), EVENT_LOG_CAPACITY);
        assert_eq!(events[0].seq, 6);
        assert_eq!(events[0].message, "e5");
        assert_eq!(events.last().map(|e| e.seq), Some(1005));
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(
            store
                .events(3)
                .expect("events")
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [1003, 1004, 1005]
        );
        drop(store);

        // One batch larger than the log keeps its newest CAPACITY, and seqs go on.
        let store = reopen(&dir.0).expect("reopen");
        let batch: Vec<_> = (0..1005).map(|i| event(&format!("f{i}"))).collect();
        store.apply(&batch).expect("apply");
        let events = store.events(usize::MAX).expect("events");
        assert_eq!(events.len(), EVENT_LOG_CAPACITY);
        assert_eq!(events[0].seq, 1005 + 6);
        assert_eq!(events[0].message, "f5");
        assert_eq!(events.last().map(|e| e.seq), Some(2010));
    }

    #[test]
    fn concurrent_applies_never_share_a_seq() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = store.clone();
                s.spawn(move || {
                    for i in 0..10 {
                        store.apply(&[event(&format!("{t}/{i}"))]).expect("apply");
                    }
                });
            }
        });
        let seqs: Vec<_> = store
            .events(100)
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn nf_status_is_not_stored() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let running = Nf {
            status: Some(NfStatus {
                state: NfState::Running as i32,
                pid: 4242,
                restarts: 3,
                ..NfStatus::default()
            }),
            ..nf("fw")
        };
        store.apply(&[Change::PutNf(running)]).expect("apply");
        let state = store.load().expect("load");
        assert_eq!(state.nfs["fw"], nf("fw"));
        assert_eq!(state.nfs["fw"].status, None);
    }

    #[test]
    fn dump_excludes_the_boot_counter() {
        let dir = TempDir::new();
        {
            let store = Store::open(&dir.0).expect("open");
            store
                .apply(&[Change::PutPf(pf()), Change::PutVf(0, vf(0)), event("e")])
                .expect("apply");
        }
        let first = reopen(&dir.0).expect("open").dump();
        let second = reopen(&dir.0).expect("open").dump();
        assert_eq!(first, second);
        assert!(
            first
                .iter()
                .all(|(k, _)| k.as_slice() != KEY_BOOT.as_bytes())
        );
        assert!(
            first
                .iter()
                .any(|(k, _)| k.as_slice() == KEY_SCHEMA.as_bytes())
        );
    }
}
