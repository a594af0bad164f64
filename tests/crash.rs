//! Crash safety: a child process inserts, upserts, deletes, rebuilds the index and compacts the
//! file in a loop and is `SIGKILLed` at random moments. After every kill the database must reopen with every acknowledged batch present and
//! queryable, nothing half-written, and store and index in agreement.
//!
//! The child is this same test binary, re-run with `RWKVDB_CRASH_CHILD` set (see `child_writer`).
//! `RWKVDB_CRASH_KILLS` sets the number of kills (default 20; `scripts/crash-test` runs 1,000),
//! `RWKVDB_CRASH_FRESH_EVERY` how many kills share one database file before a fresh one is
//! started (default 100).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rwkvdb::{CollectionConfig, Database, NewDocument, OpenOptions, QueryOptions, Rerank};

const BATCH: usize = 4;

fn batch_docs(b: u64) -> Vec<NewDocument> {
    (0..BATCH)
        .map(|i| NewDocument {
            id: Some(format!("b{b}-{i}")),
            text: format!("Batch {b} document {i}: some words to embed, number {}.", b * 31 + i as u64),
            metadata: Some(serde_json::json!({"batch": b})),
        })
        .collect()
}

/// The child: writes batches forever, printing `ACK <n>` after each committed one. Every fifth
/// batch also upserts a document of the previous batch and deletes one from two batches back;
/// every third rebuilds the ANN index; every other saves it (`checkpoint`); every sixth closes
/// the database (which saves the index too), compacts the file and reopens it.
#[test]
#[ignore = "run by crash_kill_loop as a child process"]
fn child_writer() {
    let Ok(dir) = std::env::var("RWKVDB_CRASH_CHILD") else { return };
    let path = PathBuf::from(dir).join("crash.redb");
    let open = || {
        let db = Database::open(&path, OpenOptions::default()).unwrap();
        let c = db.collection("c").unwrap();
        (db, c)
    };
    let (mut db, mut c) = open();
    let mut b: u64 = std::env::var("RWKVDB_CRASH_START").unwrap().parse().unwrap();
    println!("READY");
    loop {
        c.insert(batch_docs(b)).unwrap();
        println!("ACK insert {b}");
        if b % 5 == 0 && b >= 2 {
            let mut d = batch_docs(b - 1).remove(0);
            d.text = format!("Upserted text for batch {}", b - 1);
            c.upsert(vec![d]).unwrap();
            println!("ACK upsert {}", b - 1);
            c.delete(&[&format!("b{}-3", b - 2)]).unwrap();
            println!("ACK delete {}", b - 2);
        }
        if b % 3 == 0 {
            c.rebuild_index().unwrap();
            println!("ACK rebuild {b}");
        }
        if b % 2 == 1 {
            // Saving the index: a kill in the middle must leave the old saved copy or the new.
            c.checkpoint().unwrap();
            println!("ACK checkpoint {b}");
        }
        if b % 6 == 0 {
            drop(c);
            drop(db);
            Database::compact_file(&path).unwrap();
            (db, c) = open();
            println!("ACK compact {b}");
        }
        b += 1;
    }
}

#[derive(Default)]
struct Acked {
    inserted: Vec<u64>,
    upserted: Vec<u64>,
    deleted: Vec<u64>,
    rebuilds: usize,
    checkpoints: usize,
    compactions: usize,
}

impl Acked {
    /// Adds another database's counts (the long run's totals).
    fn add(&mut self, other: &Acked) {
        self.inserted.extend(&other.inserted);
        self.upserted.extend(&other.upserted);
        self.deleted.extend(&other.deleted);
        self.rebuilds += other.rebuilds;
        self.checkpoints += other.checkpoints;
        self.compactions += other.compactions;
    }
}

fn run_child(dir: &Path, start: u64, kill_after: Duration, acked: &mut Acked) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_writer", "--nocapture", "--test-threads", "1"])
        .env("RWKVDB_CRASH_CHILD", dir)
        .env("RWKVDB_CRASH_START", start.to_string())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("child-stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for READY (model loaded), then kill at the chosen moment.
    let mut deadline: Option<Instant> = None;
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut last = start;
    loop {
        assert!(Instant::now() < give_up, "the child never became ready");
        let timeout = deadline.map_or(Duration::from_secs(60), |d| d.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(timeout) {
            // libtest prints "test child_writer ... " without a newline first.
            Ok(line) if line.ends_with("READY") => deadline = Some(Instant::now() + kill_after),
            Ok(line) => {
                let mut parts = line.split_whitespace();
                if let (Some("ACK"), Some(kind), Some(n)) = (parts.next(), parts.next(), parts.next()) {
                    let n: u64 = n.parse().unwrap();
                    match kind {
                        "insert" => {
                            acked.inserted.push(n);
                            last = n + 1;
                        }
                        "upsert" => acked.upserted.push(n),
                        "delete" => acked.deleted.push(n),
                        "rebuild" => acked.rebuilds += 1,
                        "checkpoint" => acked.checkpoints += 1,
                        _ => acked.compactions += 1,
                    }
                }
            }
            Err(_) => break,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines already printed before the kill count as acknowledged too.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        if let Some(n) = line.strip_prefix("ACK insert ") {
            let n: u64 = n.parse().unwrap();
            acked.inserted.push(n);
            last = last.max(n + 1);
        }
    }
    last
}

#[test]
fn crash_kill_loop() {
    let kills: usize = std::env::var("RWKVDB_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(dir.path());
    // A long run starts a fresh database every `fresh_every` kills: each round's checks read the
    // whole database, so an ever-growing file would make 1,000 kills take hours.
    let fresh_every: usize =
        std::env::var("RWKVDB_CRASH_FRESH_EVERY").ok().and_then(|v| v.parse().ok()).unwrap_or(100).max(1);
    let fresh_database = || {
        let _ = std::fs::remove_file(dir.path().join("crash.redb"));
        let db = Database::open(dir.path().join("crash.redb"), OpenOptions::default()).unwrap();
        db.create_collection("c", CollectionConfig::new(&emb, Some(rr.clone()))).unwrap();
    };
    let mut acked = Acked::default();
    let mut total = Acked::default();
    let mut next = 0u64;
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..kills {
        if round % fresh_every == 0 {
            total.add(&acked);
            acked = Acked::default();
            next = 0;
            fresh_database();
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let kill_after = Duration::from_millis(20 + (seed >> 33) % 1200);
        next = run_child(dir.path(), next, kill_after, &mut acked);

        let db = Database::open(dir.path().join("crash.redb"), OpenOptions::default()).unwrap();
        let c = db.collection("c").unwrap();
        // Every acknowledged insert is there (unless a later acknowledged delete removed it).
        for &b in &acked.inserted {
            for i in 0..BATCH {
                let present = c.get(&format!("b{b}-{i}")).unwrap().is_some();
                if i == 3 && acked.deleted.contains(&b) {
                    assert!(!present, "round {round}: acknowledged delete of b{b}-3 undone");
                } else if !(i == 3 && b % 5 == 3) {
                    // (b{b}-3 of such batches may also be gone through a delete that committed
                    // but was killed before its acknowledgement was printed.)
                    assert!(present, "round {round}: acknowledged b{b}-{i} lost");
                }
            }
        }
        for &b in &acked.upserted {
            assert!(c.get(&format!("b{b}-0")).unwrap().unwrap().text.starts_with("Upserted"), "round {round}");
        }
        // Nothing half-written: each batch is all there or all absent (but for its acked delete).
        let count = c.count().unwrap() as usize;
        let mut present = 0;
        // The child may have committed batch `next` without acknowledging it: resume after it.
        let mut resume = next;
        for b in 0..=next {
            let n = (0..BATCH).filter(|i| c.get(&format!("b{b}-{i}")).unwrap().is_some()).count();
            // Batches b with b % 5 == 3 may have lost document 3 to a (possibly unacknowledged) delete.
            let third_gone = c.get(&format!("b{b}-3")).unwrap().is_none();
            let whole = n == 0 || n == BATCH || (n == BATCH - 1 && b % 5 == 3 && third_gone);
            assert!(whole, "round {round}: batch {b} is half-written ({n} of {BATCH})");
            present += n;
            if n > 0 {
                resume = resume.max(b + 1);
            }
        }
        next = resume;
        assert_eq!(present, count, "round {round}: stray documents");
        let report = c.check().unwrap();
        assert!(report.problems.is_empty(), "round {round}: {:?}", report.problems);
        // The saved index is whole (a kill during a save leaves the previous copy): it loads,
        // or is missing (nothing saved yet), never damaged.
        let origin = c.stats().unwrap().index_origin;
        assert!(origin.starts_with("saved index") || origin.contains("no saved index"), "round {round}: {origin}");
        if count > 0 {
            let q = c.query(
                "Batch document",
                &QueryOptions { top_k: 3, rerank: Rerank::Offline, ..QueryOptions::default() },
            );
            assert!(!q.unwrap().hits.is_empty());
        }
    }
    total.add(&acked);
    let acked = total;
    assert!(acked.inserted.len() >= kills / 2, "the child made too little progress: {}", acked.inserted.len());
    eprintln!(
        "{kills} kills ({} databases): {} batches, {} upserts, {} deletes, {} index rebuilds, {} index saves, {} compactions acknowledged",
        kills.div_ceil(fresh_every),
        acked.inserted.len(),
        acked.upserted.len(),
        acked.deleted.len(),
        acked.rebuilds,
        acked.checkpoints,
        acked.compactions
    );
    let log = std::fs::read_to_string(dir.path().join("child-stderr.log")).unwrap_or_default();
    assert!(
        acked.rebuilds > 0 && acked.checkpoints > 0 && acked.compactions > 0,
        "no rebuild or compaction between kills; last child said:\n{log}"
    );
}

/// Child for `bulk_load_mode_keeps_every_durable_commit`: 20 non-durable insert batches into a
/// fresh collection, then waits to be killed.
#[test]
#[ignore = "run by bulk_load_mode_keeps_every_durable_commit as a child process"]
fn child_bulk_loader() {
    let Ok(dir) = std::env::var("RWKVDB_BULK_CHILD") else { return };
    let opts = OpenOptions { durable: false, ..OpenOptions::default() };
    let db = Database::open(PathBuf::from(dir).join("bulk.redb"), opts).unwrap();
    let c = db.collection("c").unwrap();
    for b in 0..20 {
        c.insert(batch_docs(b)).unwrap();
    }
    println!("DONE");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn bulk_load_mode_keeps_every_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(dir.path());
    let path = dir.path().join("bulk.redb");
    Database::open(&path, OpenOptions::default())
        .unwrap()
        .create_collection("c", CollectionConfig::new(&emb, Some(rr)))
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_bulk_loader", "--nocapture", "--test-threads", "1"])
        .env("RWKVDB_BULK_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok).any(|l| l.ends_with("DONE"));
    assert!(done, "the child did not finish its batches");
    child.kill().unwrap();
    child.wait().unwrap();
    // Transaction 16 is durable (rwkvdb::limits::DURABLE_EVERY): batches 0..16 survive the
    // kill; the 4 non-durable ones after it were only in the dead process's memory.
    assert_eq!(rwkvdb::limits::DURABLE_EVERY, 16);
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.count().unwrap() as usize, 16 * BATCH);
    assert!(c.contains("b15-3").unwrap() && !c.contains("b16-0").unwrap());
    assert!(c.check().unwrap().problems.is_empty());
}
