//! The ANN index saved inside the database file: loaded when a collection opens, equal to the
//! index that was saved, caught up when stale, rebuilt when missing or damaged.

mod common;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rwkvdb::{CollectionConfig, Database, OpenOptions, PrecomputedDocument, QueryOptions, Rerank};

const N: usize = rwkvdb::index::EXACT_BELOW + 1500;

struct Fixture {
    dir: tempfile::TempDir,
    emb: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (emb, _) = common::write_small_pair(dir.path());
        Self { dir, emb }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("saved.redb")
    }
    fn open(&self) -> Database {
        Database::open(self.path(), OpenOptions::default()).unwrap()
    }
}

/// Clustered 128-d vectors (the small model's width): `n` documents `g0..`.
fn documents(n: usize, seed: u64) -> Vec<PrecomputedDocument> {
    let mut x = seed;
    let mut next = move || {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..40).map(|_| (0..128).map(|_| next()).collect()).collect();
    (0..n)
        .map(|i| PrecomputedDocument {
            id: format!("g{i}"),
            text: format!("generated document {i} about topic {}", i % 40),
            metadata: Some(serde_json::json!({"topic": i % 40})),
            embedding: centres[i % 40].iter().map(|c| c + 0.3 * next()).collect(),
            state: None,
        })
        .collect()
}

/// Beam wide enough that the graph search is exact here: a rebuilt graph answers the same.
const WIDE: Option<usize> = Some(3000);

/// Ids of the top 10 for a few text queries, plain and filtered, with beam `ef` (`None`: the
/// collection's default).
fn answers(c: &rwkvdb::Collection, ef: Option<usize>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for q in ["generated document 17", "topic 3", "about topic 22 and more", "document 9000"] {
        let plain = QueryOptions { top_k: 10, rerank: Rerank::None, ef, ..QueryOptions::default() };
        let filtered =
            QueryOptions { filter: Some(rwkvdb::Filter::parse(r#"{"topic": 5}"#).unwrap()), ..plain.clone() };
        for opts in [plain, filtered] {
            out.push(c.query(q, &opts).unwrap().hits.into_iter().map(|h| h.id).collect());
        }
    }
    out
}

/// A fixture with one collection "big" of [`N`] documents, 200 of them deleted, closed (which
/// saves its index); returns the answers before closing, with the default and a wide beam.
fn saved_collection(f: &Fixture) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let db = f.open();
    let c = db.create_collection("big", CollectionConfig::new(&f.emb, None)).unwrap();
    let mut docs = documents(N, 3);
    while !docs.is_empty() {
        let rest = docs.split_off(docs.len().min(3000));
        c.insert_precomputed(std::mem::replace(&mut docs, rest)).unwrap();
    }
    let gone: Vec<String> = (0..200).map(|i| format!("g{}", i * 7)).collect();
    c.delete(&gone.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let answers = (answers(&c, None), answers(&c, WIDE));
    db.close().unwrap();
    answers
}

fn index_table(id: u64) -> String {
    common::saved_index_table(id)
}

/// All rows of collection 1's saved index.
fn saved_rows(path: &std::path::Path) -> Vec<((u32, u32), Vec<u8>)> {
    let db = redb::Database::open(path).unwrap();
    let name = index_table(1);
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(TableDefinition::<(u32, u32), &[u8]>::new(&name)).unwrap();
    t.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value(), v.value().to_vec())).collect()
}

/// Replaces collection 1's saved index by `rows`.
fn put_saved_rows(path: &std::path::Path, rows: &[((u32, u32), Vec<u8>)]) {
    let db = redb::Database::open(path).unwrap();
    let name = index_table(1);
    let txn = db.begin_write().unwrap();
    {
        let def = TableDefinition::<(u32, u32), &[u8]>::new(&name);
        txn.delete_table(def).unwrap();
        let mut t = txn.open_table(def).unwrap();
        for (k, v) in rows {
            t.insert(*k, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn wait_for_graph(c: &rwkvdb::Collection) {
    let start = std::time::Instant::now();
    while !c.stats().unwrap().index_graph_ready {
        assert!(start.elapsed().as_secs() < 300, "the graph never arrived");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_saved_index_loads_at_open_and_answers_as_the_one_saved() {
    let f = Fixture::new();
    let (before, _) = saved_collection(&f);
    let db = f.open();
    let c = db.collection("big").unwrap();
    let stats = c.stats().unwrap();
    assert!(stats.index_graph_ready, "the graph is there at once");
    assert!(stats.index_origin.starts_with("saved index (0 documents added and 0 deleted"), "{}", stats.index_origin);
    assert_eq!(stats.index_entries, N - 200);
    assert_eq!(answers(&c, None), before, "same neighbours as the index that was saved");
    // Nothing changed: closing writes nothing, and an explicit checkpoint says so.
    assert!(!c.checkpoint().unwrap().saved);
}

#[test]
fn a_stale_saved_index_catches_up_with_the_documents() {
    let f = Fixture::new();
    saved_collection(&f);
    let stale = saved_rows(&f.path());
    // Change the collection (closing saves again), then put the old copy back.
    let after = {
        let db = f.open();
        let c = db.collection("big").unwrap();
        c.delete(&["g1", "g2", "g3"]).unwrap();
        c.insert_precomputed(documents(N + 50, 9).split_off(N)).unwrap();
        let mut late = documents(1, 11);
        late[0].id = "g5".into(); // an upsert-like replacement: delete then insert under a new key
        c.delete(&["g5"]).unwrap();
        c.insert_precomputed(late).unwrap();
        let a = answers(&c, WIDE);
        db.close().unwrap();
        a
    };
    assert_ne!(saved_rows(&f.path()), stale, "closing saved the changes");
    put_saved_rows(&f.path(), &stale);
    let db = f.open();
    let c = db.collection("big").unwrap();
    let stats = c.stats().unwrap();
    assert!(stats.index_origin.starts_with("saved index (51 documents added and 4 deleted"), "{}", stats.index_origin);
    assert_eq!(stats.index_entries as u64, c.count().unwrap());
    assert!(c.check().unwrap().problems.is_empty());
    assert_eq!(answers(&c, WIDE), after);
    for id in ["g1", "g2", "g3"] {
        let own = QueryOptions { top_k: 1, rerank: Rerank::None, ..QueryOptions::default() };
        assert!(c.query(&format!("generated document {}", &id[1..]), &own).unwrap().hits.iter().all(|h| h.id != id));
    }
}

#[test]
fn a_missing_or_damaged_saved_index_is_rebuilt_from_the_documents() {
    let f = Fixture::new();
    let (_, before) = saved_collection(&f);
    let good = saved_rows(&f.path());
    // Damage one byte of each kind of part in turn: header (0), graph (1), a vector block (16).
    for part in [0u32, 1, 16] {
        let mut rows = good.clone();
        let row = rows.iter_mut().find(|((p, _), _)| *p == part).unwrap();
        let at = row.1.len() / 2;
        row.1[at] ^= 0x10;
        put_saved_rows(&f.path(), &rows);
        let db = f.open();
        let c = db.collection("big").unwrap();
        let origin = c.stats().unwrap().index_origin;
        assert!(origin.starts_with("built from the documents ("), "part {part}: {origin}");
        wait_for_graph(&c);
        // Same documents, rebuilt graph: the same answers (clustered data, default beam).
        assert_eq!(answers(&c, WIDE), before, "part {part}");
        drop((c, db));
        // Closing saved the rebuilt index: the next open loads it.
        let db = f.open();
        let origin = db.collection("big").unwrap().stats().unwrap().index_origin;
        assert!(origin.starts_with("saved index"), "part {part}: {origin}");
        drop(db);
    }
    // A missing one.
    common::remove_saved_index(&f.path(), 1);
    let db = f.open();
    let c = db.collection("big").unwrap();
    assert!(c.stats().unwrap().index_origin.contains("no saved index"));
    // `checkpoint` waits for the graph and saves it.
    let r = c.checkpoint().unwrap();
    assert!(r.saved && r.slots == N - 200, "{r:?}");
    assert_eq!(answers(&c, WIDE), before);
}

#[test]
fn checkpoints_write_only_new_vector_blocks() {
    let f = Fixture::new();
    saved_collection(&f);
    let db = f.open();
    let c = db.collection("big").unwrap();
    c.insert_precomputed(documents(N + 10, 5).split_off(N)).unwrap();
    let r = c.checkpoint().unwrap();
    assert!(r.saved);
    // Blocks 0 and 1 (4,096 vectors each) were saved whole before: only block 2 is written.
    assert_eq!(N / rwkvdb::index::BLOCK_SLOTS, 2);
    assert_eq!((r.blocks_kept, r.blocks_written), (2, 1), "{r:?}");
    drop((c, db));
    let db = f.open();
    let c = db.collection("big").unwrap();
    assert!(c.stats().unwrap().index_origin.starts_with("saved index (0 documents added"));
    assert_eq!(c.stats().unwrap().index_entries, N - 200 + 10);
}
