//! Fault injection: a redb storage backend over a real file that fails reads, writes, syncs or
//! growth (a full disk) at a chosen operation. Every fault must reach the caller as a typed
//! error, never a panic, and after it the database must reopen with every acknowledged batch
//! intact, the failed batch wholly present or wholly absent, and `check` clean.

mod common;

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io::ErrorKind;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use rwkvdb::{CollectionConfig, Database, Error, NewDocument, OpenOptions, QueryOptions, Rerank};

/// Which backend operation fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
    Sync,
    SetLen,
}

/// Shared switches of a [`FaultyBackend`].
#[derive(Debug, Default)]
struct Faults {
    /// The operation that fails, once armed.
    op: parking_lot::Mutex<Option<Op>>,
    /// Matching operations left before the failure (negative: disarmed).
    countdown: AtomicI64,
    /// Set when the fault fired.
    fired: AtomicBool,
    /// Full-disk mode: growing the file beyond this many bytes fails with `StorageFull`.
    capacity: AtomicU64,
}

impl Faults {
    fn arm(&self, op: Op, after: i64) {
        *self.op.lock() = Some(op);
        self.countdown.store(after, Ordering::SeqCst);
        self.fired.store(false, Ordering::SeqCst);
    }
    fn check(&self, op: Op) -> std::io::Result<()> {
        if *self.op.lock() == Some(op) && self.countdown.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.fired.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(format!("injected {op:?} fault")));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.faults.check(Op::Read)?;
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.faults.check(Op::SetLen)?;
        let cap = self.faults.capacity.load(Ordering::SeqCst);
        if cap > 0 && len > cap && len > self.inner.len()? {
            self.faults.fired.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(ErrorKind::StorageFull, "injected: no space left on device"));
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.faults.check(Op::Sync)?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    // File locking is the real file's: forwarded unchanged.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
}

fn open_faulty(path: &Path, faults: &Arc<Faults>) -> Result<Database, Error> {
    let file: File = FsOpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
    let backend = FaultyBackend { inner: FileBackend::new(file).unwrap(), faults: faults.clone() };
    Database::open_with_backend(path, backend, OpenOptions::default())
}

fn batch(b: usize) -> Vec<NewDocument> {
    (0..4)
        .map(|i| NewDocument {
            id: Some(format!("b{b}-{i}")),
            text: format!("Batch {b} document {i}: notes about subject {} with detail {}.", (b + i) % 5, b * 31 + i),
            metadata: Some(serde_json::json!({"batch": b})),
        })
        .collect()
}

/// Inserts batches until one fails; returns (acknowledged batches, the batch that failed).
fn insert_until_fault(db: &Database, faults: &Faults, first: usize) -> (Vec<usize>, Option<usize>) {
    let c = match db.collection("docs") {
        Ok(c) => c,
        Err(e) => {
            assert!(faults.fired.load(Ordering::SeqCst), "error without a fault: {e}");
            return (vec![], None);
        }
    };
    let mut acked = Vec::new();
    for b in first..first + 6 {
        match c.insert(batch(b)) {
            Ok(_) => acked.push(b),
            Err(e) => {
                assert!(faults.fired.load(Ordering::SeqCst), "error without a fault: {e}");
                assert!(matches!(e, Error::Store(_)), "fault surfaced as an untyped error: {e:?}");
                return (acked, Some(b));
            }
        }
    }
    (acked, None)
}

/// Reopens without faults and checks every acknowledged batch; returns the failed batch's fate.
fn verify(path: &Path, acked: &[usize], failed: Option<usize>) {
    let db = Database::open(path, OpenOptions::default()).unwrap();
    let c = db.collection("docs").unwrap();
    for &b in acked {
        for d in batch(b) {
            assert!(c.get(d.id.as_deref().unwrap()).unwrap().is_some(), "acknowledged {:?} lost", d.id);
        }
    }
    if let Some(b) = failed {
        let present = batch(b).iter().filter(|d| c.contains(d.id.as_deref().unwrap()).unwrap()).count();
        assert!(present == 0 || present == 4, "batch {b} half-written: {present} of 4");
    }
    let report = c.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let hits =
        c.query("notes about subject 3", &QueryOptions { top_k: 5, rerank: Rerank::Offline, ..Default::default() });
    assert!(!hits.unwrap().hits.is_empty());
}

fn setup(dir: &Path) -> (std::path::PathBuf, CollectionConfig) {
    let (emb, rr) = common::write_small_pair(dir);
    let path = dir.join("faults.redb");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    db.create_collection("docs", CollectionConfig::new(&emb, Some(rr.clone()))).unwrap().insert(batch(0)).unwrap();
    (path, CollectionConfig::new(emb, Some(rr)))
}

#[test]
fn every_injected_io_fault_is_a_typed_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = setup(dir.path());
    let mut acked_all = vec![0];
    let mut next = 1;
    let mut fired = 0;
    let mut surfaced = 0;
    let plan: [(Op, &[i64]); 4] = [
        (Op::Write, &[0, 1, 3, 8, 21, 34]),
        (Op::Sync, &[0, 1, 2, 3, 5]),
        // The file grows rarely: only the first growths are reached.
        (Op::SetLen, &[0, 1]),
        // Opening reads the whole collection (index rebuild): faults land there.
        (Op::Read, &[0, 5, 50, 500]),
    ];
    for (op, points) in plan {
        for &after in points {
            let faults = Arc::new(Faults::default());
            faults.arm(op, after);
            let (acked, failed) = match open_faulty(&path, &faults) {
                Ok(db) => insert_until_fault(&db, &faults, next),
                Err(e) => {
                    // Opening itself may hit the fault: a typed error, nothing to verify but the file.
                    assert!(faults.fired.load(Ordering::SeqCst), "open failed without a fault: {e}");
                    assert!(matches!(e, Error::Store(_)), "{e:?}");
                    (vec![], None)
                }
            };
            fired += usize::from(faults.fired.load(Ordering::SeqCst));
            surfaced += usize::from(failed.is_some());
            next += 7;
            acked_all.extend(&acked);
            verify(&path, &acked_all, failed);
            // A failed batch that did land counts as written from now on.
            if let Some(b) = failed {
                let db = Database::open(&path, OpenOptions::default()).unwrap();
                if db.collection("docs").unwrap().contains(&format!("b{b}-0")).unwrap() {
                    acked_all.push(b);
                }
            }
        }
    }
    // A fault may also fire while the handle closes (redb then cannot report it): most must
    // fire during open or an insert and come back as errors.
    assert!(fired >= 14, "only {fired} of 17 fault points fired");
    assert!(surfaced >= 8, "only {surfaced} faults failed an insert");
}

#[test]
fn a_full_disk_fails_the_batch_and_the_database_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = setup(dir.path());
    let faults = Arc::new(Faults::default());
    let size = std::fs::metadata(&path).unwrap().len();
    faults.capacity.store(size + 64 * 1024, Ordering::SeqCst);
    let db = open_faulty(&path, &faults).unwrap();
    let c = db.collection("docs").unwrap();
    let mut acked = vec![0];
    let mut failed = None;
    for b in 1..200 {
        match c.insert(batch(b)) {
            Ok(_) => acked.push(b),
            Err(e) => {
                assert!(faults.fired.load(Ordering::SeqCst));
                assert!(format!("{e}").contains("no space left"), "full disk not named: {e}");
                failed = Some(b);
                break;
            }
        }
    }
    assert!(failed.is_some(), "the disk never filled");
    drop(c);
    drop(db);
    verify(&path, &acked, failed);
}
