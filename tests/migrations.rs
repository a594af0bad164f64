//! Opening a database written by an older rwkvdb upgrades it in place: the committed fixtures
//! `tests/data/v1/fixture.redb` and `tests/data/v2/fixture.redb` were written by the
//! format-version-1 and -2 code (see migrations/v2.md, migrations/v3.md).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, TableHandle};
use rwkvdb::{Database, OpenOptions, QueryOptions, Rerank};

/// A copy of `tests/data/{version}/fixture.redb` in a new temporary folder, and open options
/// mapping the model paths the fixture recorded (`/tmp/{version}model/emb.pth`, `rr.pth`) to
/// the same synthetic model written anew.
fn fixture(version: &str) -> (tempfile::TempDir, PathBuf, OpenOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{version}.redb"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{version}/fixture.redb"));
    std::fs::copy(source, &path).unwrap();
    let (emb, rr) = common::write_small_pair(dir.path());
    let recorded = PathBuf::from(format!("/tmp/{version}model"));
    let opts = OpenOptions {
        model_paths: HashMap::from([(recorded.join("emb.pth"), emb), (recorded.join("rr.pth"), rr)]),
        ..OpenOptions::default()
    };
    (dir, path, opts)
}

/// An upgraded collection of `n` documents: `check` clean, format version 3, and offline
/// rerank (from the stored states) agreeing with online rerank for every document.
fn upgraded_collection_is_clean_and_scores(c: &rwkvdb::Collection, n: usize) {
    let report = c.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(c.stats().unwrap().format_version, 3);
    let q = |rerank| QueryOptions { top_k: n, candidates: n, rerank, ..QueryOptions::default() };
    let off = c.query("subject 2", &q(Rerank::Offline)).unwrap();
    let on = c.query("subject 2", &q(Rerank::Online)).unwrap();
    assert_eq!(off.hits.len(), n);
    assert!(off.skipped.is_empty());
    for h in &off.hits {
        let o = on.hits.iter().find(|x| x.id == h.id).unwrap();
        assert!((h.probability.unwrap() - o.probability.unwrap()).abs() < 0.01);
    }
}

#[test]
fn version_1_fixture_is_upgraded_and_fully_usable() {
    let (_dir, path, opts) = fixture("v1");
    let opts = || opts.clone();
    for reopen in 0..2 {
        let db = Database::open(&path, opts()).unwrap();
        let c = db.collection("docs").unwrap();
        assert_eq!(c.count().unwrap(), 11, "reopen {reopen}");
        let d = c.get("v1-4").unwrap().unwrap();
        assert_eq!(d.text, "Version one document 4 about subject 1.");
        assert_eq!(d.metadata["subject"], 1);
        assert!(c.get("v1-11").unwrap().is_none(), "a v1 delete stays deleted");
        // States moved to the chunked table still score like a fresh online rerank.
        upgraded_collection_is_clean_and_scores(&c, 11);
    }
    // The old table is gone and the version record says 3.
    let raw = redb::Database::open(&path).unwrap();
    let r = raw.begin_read().unwrap();
    let names: Vec<String> = r.list_tables().unwrap().map(|h| h.name().to_string()).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    assert!(has("c1_state_chunks") && !has("c1_states") && !has("c1_meta"), "{names:?}");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("rwkvdb_meta");
    let v = r.open_table(meta).unwrap().get("format_version").unwrap().unwrap().value().to_vec();
    assert_eq!(v, 3u32.to_le_bytes());
}

/// Version 3 re-encodes collection records (JSON -> bincode + CRC) and document records (the
/// hand-written layout -> bincode + CRC). Everything the version-2 code wrote reads back the
/// same: records, configuration, metadata, deletes, upserts, states, fingerprints.
#[test]
fn version_2_fixture_is_upgraded_and_fully_usable() {
    let (_dir, path, opts) = fixture("v2");
    let opts = || opts.clone();
    for reopen in 0..2 {
        let db = Database::open(&path, opts()).unwrap();
        let mut names: Vec<String> = db.list_collections().unwrap().into_iter().map(|c| c.name).collect();
        names.sort();
        assert_eq!(names, ["docs", "plain"], "reopen {reopen}");

        let plain = db.collection("plain").unwrap();
        let cfg = plain.config();
        assert_eq!((cfg.hnsw_m, cfg.truncate, cfg.max_doc_tokens), (12, true, 64));
        assert_eq!(cfg.reranker, None);
        assert_eq!(plain.count().unwrap(), 3);
        assert_eq!(plain.get("p1").unwrap().unwrap().text, "Plain document number 1.");

        let c = db.collection("docs").unwrap();
        assert_eq!(c.config().embedder, PathBuf::from("/tmp/v2model/emb.pth"));
        assert_eq!(c.count().unwrap(), 11);
        let d = c.get("v2-4").unwrap().unwrap();
        assert_eq!(d.text, "Version two document 4 about subject 1.");
        assert_eq!(d.metadata, serde_json::json!({"subject": 1, "n": 4}));
        assert!(c.get("v2-11").unwrap().is_none(), "a v2 delete stays deleted");
        let up = c.get("v2-5").unwrap().unwrap();
        assert_eq!(up.text, "Version two document 5, replaced, about subject 2.");
        assert_eq!(up.metadata, serde_json::Value::Null);
        // The fingerprint the v2 code recorded matches the model files (queries load the
        // model), and the re-encoded records rerank like a fresh online rerank.
        upgraded_collection_is_clean_and_scores(&c, 11);
        let q = |rerank| QueryOptions { top_k: 11, candidates: 11, rerank, ..QueryOptions::default() };
        let filtered = c
            .query(
                "subject",
                &QueryOptions { filter: Some(rwkvdb::Filter::parse(r#"{"subject": 0}"#).unwrap()), ..q(Rerank::None) },
            )
            .unwrap();
        let mut ids: Vec<&str> = filtered.hits.iter().map(|h| h.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["v2-0", "v2-3", "v2-6", "v2-9"]);
    }
}
