//! Opening a database written by an older rwkvdb upgrades it in place: the committed fixture
//! `tests/data/v1/fixture.redb` was written by the format-version-1 code (see migrations/v2.md).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use redb::{ReadableDatabase, TableHandle};
use rwkvdb::{Database, OpenOptions, QueryOptions, Rerank};

/// Where the fixture's collection recorded its model files when it was written.
const RECORDED_EMBEDDER: &str = "/tmp/v1model/emb.pth";
const RECORDED_RERANKER: &str = "/tmp/v1model/rr.pth";

#[test]
fn version_1_fixture_is_upgraded_and_fully_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.redb");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/v1/fixture.redb"), &path).unwrap();
    // The same synthetic model, written anew; the recorded paths are mapped to it.
    let (emb, rr) = common::write_small_pair(dir.path());
    let opts = || OpenOptions {
        model_paths: HashMap::from([
            (PathBuf::from(RECORDED_EMBEDDER), emb.clone()),
            (PathBuf::from(RECORDED_RERANKER), rr.clone()),
        ]),
        ..OpenOptions::default()
    };
    for reopen in 0..2 {
        let db = Database::open(&path, opts()).unwrap();
        let c = db.collection("docs").unwrap();
        assert_eq!(c.count().unwrap(), 11, "reopen {reopen}");
        let d = c.get("v1-4").unwrap().unwrap();
        assert_eq!(d.text, "Version one document 4 about subject 1.");
        assert_eq!(d.metadata["subject"], 1);
        assert!(c.get("v1-11").unwrap().is_none(), "a v1 delete stays deleted");
        let report = c.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(c.stats().unwrap().format_version, 2);
        // States moved to the chunked table still score like a fresh online rerank.
        let q = |rerank| QueryOptions { top_k: 11, candidates: 11, rerank, ..QueryOptions::default() };
        let off = c.query("subject 2", &q(Rerank::Offline)).unwrap();
        let on = c.query("subject 2", &q(Rerank::Online)).unwrap();
        assert_eq!(off.hits.len(), 11);
        assert!(off.skipped.is_empty());
        for h in &off.hits {
            let o = on.hits.iter().find(|x| x.id == h.id).unwrap();
            assert!((h.probability.unwrap() - o.probability.unwrap()).abs() < 0.01);
        }
    }
    // The old table is gone and the version record says 2.
    let raw = redb::Database::open(&path).unwrap();
    let r = raw.begin_read().unwrap();
    let names: Vec<String> = r.list_tables().unwrap().map(|h| h.name().to_string()).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    assert!(has("c1_state_chunks") && !has("c1_states") && !has("c1_meta"), "{names:?}");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("rwkvdb_meta");
    let v = r.open_table(meta).unwrap().get("format_version").unwrap().unwrap().value().to_vec();
    assert_eq!(v, 2u32.to_le_bytes());
}
