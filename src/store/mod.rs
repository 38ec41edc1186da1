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

mod error;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use nfhost_api::names::{Collection, check_name};
use nfhost_api::proto::{Chain, Event, Nf, Pf, Vf};

pub use error::{LockHolder, StoreError};
use error::{create_dir, open_error, read_error};

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// How many events the log keeps; older ones are deleted by the batch that
/// pushes them out.
pub const EVENT_LOG_CAPACITY: usize = 1000;

const TREE: &str = "state";
/// sled's data file in the store directory, the one it locks.
pub(crate) const DB_FILE: &str = "db";
/// sled's settings file in the store directory.
const CONF_FILE: &str = "conf";
const KEY_SCHEMA: &str = "meta/schema";
const KEY_BOOT: &str = "meta/boot";
const KEY_PF: &str = "pf/0";
const PREFIX_VF: &str = "vf/";
const PREFIX_NF: &str = "nf/";
const PREFIX_CHAIN: &str = "chain/";
const PREFIX_EV: &str = "ev/";

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
    /// Stores an NF under the id of its `name`; its `status` is dropped. (Boxed:
    /// an NF is the largest record.)
    PutNf(Box<Nf>),
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

/// Who has the store in `dir` open (holds sled's lock on its data file), or `None`
/// if nobody does or there is no store there. A process lets go of it a moment
/// after it drops its [`Store`]: sled's I/O threads close the file, with no signal.
pub fn holder(dir: &Path) -> Option<LockHolder> {
    error::lock_holder(&dir.join(DB_FILE))
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
                        ..(**nf).clone()
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

fn vf_key(index: u16) -> String {
    format!("{PREFIX_VF}{index:03}")
}

fn ev_key(seq: u64) -> String {
    format!("{PREFIX_EV}{seq:016x}")
}

fn nf_key(name: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{PREFIX_NF}{}",
        short_id("NF", Collection::Nfs, name)?
    ))
}

fn chain_key(name: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{PREFIX_CHAIN}{}",
        short_id("chain", Collection::Chains, name)?
    ))
}

/// `fw` from `fw` or `nfs/fw`, by the API's one name rule: anything else would not
/// make a clean key.
fn short_id<'a>(
    what: &'static str,
    collection: Collection,
    name: &'a str,
) -> Result<&'a str, StoreError> {
    let id = collection.short(name);
    check_name(id).map_err(|_| StoreError::InvalidName {
        what,
        name: name.to_owned(),
    })?;
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
mod tests;
