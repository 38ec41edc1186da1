use super::*;
use nfhost_api::proto::{ChainNf, Classifier, NfState, NfStatus};
use std::path::PathBuf;
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
        tenant: "blue".into(),
        exec: Some(nfhost_api::proto::ExecSpec {
            path: "/opt/nf/bin/mine".into(),
            args: vec!["-v".into()],
            env: [("MODE".to_owned(), "fast".to_owned())].into(),
        }),
        // An external NF's secret is stored with it, to survive a restart.
        endpoint: Some(nfhost_api::proto::Endpoint {
            secret: "AbCdEfGhIjKlMnOpQrStUvWx".into(),
            ..Default::default()
        }),
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
            exec: None,
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
                Change::PutNf(Box::new(nf("fw"))),
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
            Change::PutNf(Box::new(nf("a"))),
            Change::PutNf(Box::new(nf("b"))),
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
            Change::PutNf(Box::new(nf("c"))),
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
        store
            .apply(&[Change::PutNf(Box::new(nf("fw")))])
            .expect("apply");
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
        msg.contains(&format!("PID {}", std::process::id())) && msg.contains("holds the lock on"),
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
        .apply(&[Change::PutPf(pf()), Change::PutNf(Box::new(nf("fw")))])
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
    store
        .apply(&[Change::PutNf(Box::new(running))])
        .expect("apply");
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
