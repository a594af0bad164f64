//! The database engine end to end: real redb files in temporary folders, real ONNX Runtime
//! sessions on a small synthetic model, the real HNSW index.

mod common;

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableHandle};

use rwkvdb::model::Precision;
use rwkvdb::{CollectionConfig, Database, Error, Filter, NewDocument, OpenOptions, QueryOptions, Rerank};
use serde_json::json;

fn doc(id: &str, text: &str, meta: serde_json::Value) -> NewDocument {
    NewDocument { id: Some(id.into()), text: text.into(), metadata: Some(meta) }
}

fn corpus() -> Vec<NewDocument> {
    (0..40)
        .map(|i| {
            doc(
                &format!("d{i}"),
                &format!("Document number {i} talks about topic {} and the number {}.", i % 4, i * 7),
                json!({"topic": format!("t{}", i % 4), "n": i}),
            )
        })
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    emb: std::path::PathBuf,
    rr: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(dir.path());
    Fixture { dir, emb, rr }
}

impl Fixture {
    fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("test.redb")
    }
    fn open(&self) -> Database {
        Database::open(self.db_path(), OpenOptions::default()).unwrap()
    }
    /// Exact f32 weights, whatever this machine's default precision: results are compared
    /// with the scalar reference.
    fn config(&self) -> CollectionConfig {
        CollectionConfig { precision: Precision::F32, ..CollectionConfig::new(&self.emb, Some(self.rr.clone())) }
    }
}

/// `docs` with embeddings and states computed elsewhere.
fn precomputed(
    docs: &[NewDocument],
    embeddings: Vec<Vec<f32>>,
    states: Vec<rwkvdb::model::ModelState>,
) -> Vec<rwkvdb::PrecomputedDocument> {
    docs.iter()
        .zip(embeddings)
        .zip(states)
        .map(|((d, embedding), state)| rwkvdb::PrecomputedDocument {
            id: d.id.clone().unwrap(),
            text: d.text.clone(),
            metadata: d.metadata.clone(),
            embedding,
            state: Some(state),
        })
        .collect()
}

/// Every offline hit scores like the same document's online hit (within the default preset's
/// quantisation error).
fn assert_scores_agree(off: &rwkvdb::QueryResult, on: &rwkvdb::QueryResult) {
    for h in &off.hits {
        let o = on.hits.iter().find(|x| x.id == h.id).unwrap();
        assert!((h.probability.unwrap() - o.probability.unwrap()).abs() < 0.01, "{h:?} vs {o:?}");
    }
}

#[test]
fn insert_get_query_delete_upsert_and_reopen() {
    let f = fixture();
    {
        let db = f.open();
        let c = db.create_collection("docs", f.config()).unwrap();
        assert_eq!(c.count().unwrap(), 0);
        assert!(c.query("anything", &QueryOptions::default()).unwrap().hits.is_empty(), "empty collection");
        let r = c.insert(corpus()).unwrap();
        assert_eq!(r.ids.len(), 40);
        assert_eq!(c.count().unwrap(), 40);
        let d = c.get("d3").unwrap().unwrap();
        assert_eq!(d.metadata["n"], 3);

        // The document's own text ranks itself first without reranking (cosine 1).
        let own = corpus()[5].text.clone();
        let r = c.query(&own, &QueryOptions { top_k: 3, rerank: Rerank::None, ..QueryOptions::default() }).unwrap();
        assert_eq!(r.hits[0].id, "d5");
        assert!((r.hits[0].similarity - 1.0).abs() < 1e-4);

        // Offline and online rerank agree on scores (states stored with the default preset).
        let opts = |rerank| QueryOptions { top_k: 10, candidates: 10, rerank, ..QueryOptions::default() };
        let off = c.query("topic 2", &opts(Rerank::Offline)).unwrap();
        let on = c.query("topic 2", &opts(Rerank::Online)).unwrap();
        assert_eq!(off.hits.len(), 10);
        assert_scores_agree(&off, &on);

        // top_k beyond the count returns everything.
        let all = c.query("topic", &QueryOptions { top_k: 100, candidates: 100, ..QueryOptions::default() }).unwrap();
        assert_eq!(all.hits.len(), 40);

        let del = c.delete(&["d1", "d2", "nope"]).unwrap();
        assert_eq!(del.deleted, vec!["d1", "d2"]);
        assert_eq!(del.missing, vec!["nope"]);
        assert!(c.get("d1").unwrap().is_none());
        let r = c
            .query("Document number 1 talks", &QueryOptions { top_k: 40, candidates: 40, ..QueryOptions::default() })
            .unwrap();
        assert!(r.hits.iter().all(|h| h.id != "d1" && h.id != "d2"));
        assert_eq!(r.hits.len(), 38);

        let up = c.upsert(vec![doc("d3", "A replaced text about something else.", json!({"topic": "new"}))]).unwrap();
        assert_eq!(up.replaced, 1);
        assert_eq!(c.get("d3").unwrap().unwrap().text, "A replaced text about something else.");
        assert_eq!(c.count().unwrap(), 38);
        assert!(c.check().unwrap().problems.is_empty());
    }
    // Reopen: everything is still there, the index is rebuilt from the store.
    let db = f.open();
    let c = db.collection("docs").unwrap();
    assert_eq!(c.count().unwrap(), 38);
    assert_eq!(db.list_collections().unwrap().len(), 1);
    let exact = QueryOptions { top_k: 1, rerank: Rerank::None, ..QueryOptions::default() };
    let r = c.query("A replaced text about something else.", &exact).unwrap();
    assert_eq!(r.hits[0].id, "d3");
    assert!(c.check().unwrap().problems.is_empty());
}

#[test]
fn filters_run_inside_the_search_and_fill_k() {
    let f = fixture();
    let db = f.open();
    let c = db.create_collection("docs", f.config()).unwrap();
    c.insert(corpus()).unwrap();
    let filter = Filter::parse(r#"{"topic": "t1", "n": {"$gte": 10}}"#).unwrap();
    let r = c
        .query("Document", &QueryOptions { top_k: 5, candidates: 5, filter: Some(filter), ..QueryOptions::default() })
        .unwrap();
    // t1 with n >= 10: n in {13, 17, 21, 25, 29, 33, 37} -> 7 matches, so 5 hits.
    assert_eq!(r.hits.len(), 5);
    for h in &r.hits {
        assert_eq!(h.metadata["topic"], "t1");
        assert!(h.metadata["n"].as_i64().unwrap() >= 10);
    }
    let rare = Filter::parse(r#"{"n": {"$in": [7, 8]}}"#).unwrap();
    let r = c.query("x", &QueryOptions { top_k: 10, filter: Some(rare), ..QueryOptions::default() }).unwrap();
    let mut ids: Vec<_> = r.hits.iter().map(|h| h.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["d7", "d8"]);
}

#[test]
fn bad_input_is_rejected_and_nothing_of_the_batch_is_written() {
    type Case = (Vec<NewDocument>, fn(&Error) -> bool);
    let f = fixture();
    let db = f.open();
    let mut cfg = f.config();
    cfg.max_doc_tokens = 50;
    let c = db.create_collection("docs", cfg).unwrap();
    c.insert(vec![doc("a", "first", json!(null))]).unwrap();

    let cases: Vec<Case> = vec![
        (vec![doc("b", "ok", json!(null)), doc("c", "   ", json!(null))], |e| matches!(e, Error::InvalidInput(_))),
        (vec![doc("b", "ok", json!(null)), doc("b", "dup", json!(null))], |e| matches!(e, Error::DuplicateId(_))),
        (vec![doc("b", "ok", json!(null)), doc("a", "exists", json!(null))], |e| matches!(e, Error::DuplicateId(_))),
        (vec![doc("b", "ok", json!(null)), doc("c", &"word ".repeat(200), json!(null))], |e| {
            matches!(e, Error::TooLong { .. })
        }),
        // Limits (docs/reliability.md): metadata size, id length, batch size.
        (vec![doc("b", "ok", json!(null)), doc("c", "fine text", json!({"blob": "x".repeat(70_000)}))], |e| {
            matches!(e, Error::LimitExceeded { max: 65_536, .. })
        }),
        (vec![doc("b", "ok", json!(null)), doc(&"i".repeat(1025), "fine text", json!(null))], |e| {
            matches!(e, Error::LimitExceeded { max: 1024, .. })
        }),
        ((0..4097).map(|i| doc(&format!("x{i}"), "t", json!(null))).collect(), |e| {
            matches!(e, Error::LimitExceeded { value: 4097, max: 4096, .. })
        }),
    ];
    for (batch, is_expected) in cases {
        let e = c.insert(batch).unwrap_err();
        assert!(is_expected(&e), "unexpected error {e}");
        assert_eq!(c.count().unwrap(), 1, "a failed batch must write nothing");
        assert!(c.get("b").unwrap().is_none());
    }
    assert!(matches!(c.query("", &QueryOptions::default()), Err(Error::InvalidInput(_))));
    let too_many = QueryOptions { candidates: 10_001, ..QueryOptions::default() };
    assert!(matches!(c.query("q", &too_many), Err(Error::LimitExceeded { max: 10_000, .. })));
    assert!(matches!(db.create_collection("docs", f.config()), Err(Error::CollectionExists(_))));
    assert!(matches!(db.collection("missing"), Err(Error::NoSuchCollection(_))));

    // Truncation by option instead of rejection.
    let mut cfg = f.config();
    cfg.max_doc_tokens = 50;
    cfg.truncate = true;
    let t = db.create_collection("trunc", cfg).unwrap();
    let r = t.insert(vec![doc("long", &"word ".repeat(200), json!(null))]).unwrap();
    assert_eq!(r.tokens, 50);
}

#[test]
fn other_model_is_refused_and_foreign_files_are_errors() {
    let f = fixture();
    {
        let db = f.open();
        db.create_collection("docs", f.config()).unwrap();
    }
    // Replace the embedder file with a different model: the fingerprint check must refuse it.
    let other = rwkvdb::checkpoint::synth::SynthConfig { seed: 99, ..common::small_config() };
    rwkvdb::checkpoint::pth::write(
        &f.emb,
        &rwkvdb::checkpoint::synth::synth_embedder(&other),
        rwkvdb::checkpoint::StoredDType::F32,
    )
    .unwrap();
    let db = f.open();
    // The collection opens without its model; the first call that needs the model refuses it.
    let c = db.collection("docs").unwrap();
    assert!(!c.model_loaded());
    assert!(matches!(c.query("anything", &QueryOptions::default()), Err(Error::ModelMismatch { .. })));
    let e = c.insert(vec![doc("x", "some text", json!(null))]).unwrap_err();
    assert!(matches!(e, Error::ModelMismatch { .. }), "{e}");
    assert_eq!(c.count().unwrap(), 0);
    drop((c, db));

    let junk = f.dir.path().join("junk.redb");
    std::fs::write(&junk, b"this is not a database at all, just some bytes").unwrap();
    let e = Database::open(&junk, OpenOptions::default()).err().unwrap();
    assert!(matches!(e, Error::Store(rwkvdb::StoreError::NotADatabase { .. })), "{e}");

    // A redb file of another application, and one written by a newer rwkvdb.
    let foreign = f.dir.path().join("foreign.redb");
    {
        let raw = redb::Database::create(&foreign).unwrap();
        let w = raw.begin_write().unwrap();
        w.open_table(redb::TableDefinition::<u64, u64>::new("other_app")).unwrap().insert(1, 2).unwrap();
        w.commit().unwrap();
    }
    let e = Database::open(&foreign, OpenOptions::default()).err().unwrap();
    assert!(matches!(e, Error::Store(rwkvdb::StoreError::ForeignDatabase { .. })), "{e}");
    {
        let raw = redb::Database::open(f.db_path()).unwrap();
        let w = raw.begin_write().unwrap();
        w.open_table(redb::TableDefinition::<&str, &[u8]>::new("rwkvdb_meta"))
            .unwrap()
            .insert("format_version", 99u32.to_le_bytes().as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let e = Database::open(f.db_path(), OpenOptions::default()).err().unwrap();
    assert!(matches!(e, Error::Store(rwkvdb::StoreError::UnsupportedVersion { found: 99, .. })), "{e}");

    let missing = f.dir.path().join("none.redb");
    let opts = OpenOptions { create: false, ..OpenOptions::default() };
    assert!(Database::open(&missing, opts).is_err());

    // A model file of the wrong shape is a typed error naming the tensor.
    let mut sd = common::small_pair().0;
    sd.tensors.get_mut("rwkv.blocks.1.att.key.weight").unwrap().shape = vec![64, 256];
    let e = rwkvdb::model::EmbedderWeights::from_state_dict(&sd).err().unwrap();
    assert!(e.to_string().contains("rwkv.blocks.1.att.key.weight"), "{e}");
}

/// The store's key of document `id` in collection 1, read through redb itself.
fn stored_key(w: &redb::WriteTransaction, id: &str) -> u64 {
    let ids: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("c1_ids");
    w.open_table(ids).unwrap().get(id).unwrap().unwrap().value()
}

/// Flips a byte inside a document's stored state through redb itself (collection 1).
fn corrupt_state(path: &std::path::Path, id: &str) {
    let raw = redb::Database::open(path).unwrap();
    let w = raw.begin_write().unwrap();
    {
        let states: redb::TableDefinition<(u64, u32), &[u8]> = redb::TableDefinition::new("c1_state_chunks");
        let key = stored_key(&w, id);
        let mut t = w.open_table(states).unwrap();
        let mut blob = t.get((key, 0)).unwrap().unwrap().value().to_vec();
        let mid = blob.len() / 2;
        blob[mid] ^= 0x40;
        t.insert((key, 0), blob.as_slice()).unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn offline_rerank_runs_in_chunks_matches_online_and_skips_damage() {
    let f = fixture();
    let n = 2 * rwkvdb::limits::RERANK_CHUNK + 30;
    {
        let db = f.open();
        let c = db.create_collection("docs", f.config()).unwrap();
        let docs: Vec<NewDocument> = (0..n)
            .map(|i| {
                doc(&format!("d{i}"), &format!("Entry {i} is about theme {} and value {}.", i % 9, i * 13), json!({}))
            })
            .collect();
        c.insert(docs).unwrap();
    }
    for id in ["d7", "d150", "d280"] {
        corrupt_state(&f.db_path(), id);
    }
    let db = f.open();
    let c = db.collection("docs").unwrap();
    let opts = |rerank| QueryOptions { top_k: n, candidates: n, rerank, ..QueryOptions::default() };
    let off = c.query("theme 4 and value", &opts(Rerank::Offline)).unwrap();
    let on = c.query("theme 4 and value", &opts(Rerank::Online)).unwrap();
    let mut skipped: Vec<&str> = off.skipped.iter().map(|s| s.id.as_str()).collect();
    skipped.sort_unstable();
    assert_eq!(skipped, ["d150", "d280", "d7"]);
    assert_eq!(off.hits.len(), n - 3);
    assert_eq!(on.hits.len(), n);
    assert_scores_agree(&off, &on);
}

#[test]
fn corrupted_state_is_skipped_and_reported() {
    let f = fixture();
    let db = f.open();
    let c = db.create_collection("docs", f.config()).unwrap();
    c.insert(corpus()).unwrap();
    drop(c);
    drop(db);
    corrupt_state(&f.db_path(), "d4");
    let db = f.open();
    let c = db.collection("docs").unwrap();
    let r =
        c.query("Document number 4", &QueryOptions { top_k: 40, candidates: 40, ..QueryOptions::default() }).unwrap();
    assert_eq!(r.hits.len(), 39);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].id, "d4");
    let report = c.check().unwrap();
    assert_eq!(report.damaged_ids, vec!["d4"]);
}

#[test]
fn readers_query_while_a_writer_inserts_and_deletes() {
    let f = fixture();
    let db = Arc::new(f.open());
    let c = db.create_collection("docs", f.config()).unwrap();
    c.insert(corpus()).unwrap();
    std::thread::scope(|s| {
        let writer = c.clone();
        s.spawn(move || {
            for round in 0..5 {
                let batch: Vec<_> = (0..8)
                    .map(|i| doc(&format!("w{round}-{i}"), &format!("Writer round {round} item {i}"), json!({})))
                    .collect();
                writer.insert(batch).unwrap();
                writer.delete(&[&format!("w{round}-0")]).unwrap();
            }
        });
        for _ in 0..2 {
            let reader = c.clone();
            s.spawn(move || {
                for _ in 0..6 {
                    let r =
                        reader.query("Document number", &QueryOptions { top_k: 5, ..QueryOptions::default() }).unwrap();
                    assert_eq!(r.hits.len(), 5);
                    assert!(r.skipped.is_empty());
                }
            });
        }
    });
    assert_eq!(c.count().unwrap(), 40 + 5 * 7);
    assert!(c.check().unwrap().problems.is_empty());
}

#[test]
fn drop_collection_removes_everything() {
    let f = fixture();
    let db = f.open();
    let c = db.create_collection("docs", f.config()).unwrap();
    c.insert(corpus()).unwrap();
    db.drop_collection("docs").unwrap();
    assert!(db.list_collections().unwrap().is_empty());
    assert!(matches!(db.collection("docs"), Err(Error::NoSuchCollection(_))));
    let c = db.create_collection("docs", f.config()).unwrap();
    assert_eq!(c.count().unwrap(), 0);
}

#[test]
fn a_handle_outliving_its_dropped_collection_changes_nothing() {
    let f = fixture();
    let db = f.open();
    let stale = db.create_collection("docs", f.config()).unwrap();
    stale.insert(corpus()[..2].to_vec()).unwrap();
    db.drop_collection("docs").unwrap();
    let is_gone =
        |r: Result<(), Error>| assert!(matches!(r, Err(Error::NoSuchCollection(ref n)) if n == "docs"), "{r:?}");
    // Neither writes (which would bring the record back) nor reads work through the old handle.
    is_gone(stale.insert(corpus()[2..4].to_vec()).map(|_| ()));
    is_gone(stale.delete(&["a"]).map(|_| ()));
    is_gone(stale.get("a").map(|_| ()));
    is_gone(stale.query("anything", &QueryOptions::default()).map(|_| ()));
    assert!(db.list_collections().unwrap().is_empty(), "the dropped collection stayed dropped");

    // A new collection of the same name is not touched by the old handle.
    let fresh = db.create_collection("docs", f.config()).unwrap();
    fresh.insert(corpus()[..1].to_vec()).unwrap();
    is_gone(stale.upsert(corpus()[..3].to_vec()).map(|_| ()));
    assert_eq!(fresh.count().unwrap(), 1);
    let records = db.list_collections().unwrap();
    assert_eq!(records.len(), 1);
    assert_ne!(records[0].id, 1, "the new collection has a new id");
    drop((stale, fresh));
    drop(db);
    // Nothing of the old collection's tables was recreated in the file.
    let raw = redb::Database::open(f.db_path()).unwrap();
    let txn = raw.begin_read().unwrap();
    let names: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_string()).collect();
    assert!(!names.iter().any(|n| n.starts_with("c1_")), "{names:?}");
}

#[test]
fn cached_template_prefix_gives_the_same_scores_as_online() {
    // With lossless states, offline (resumed from the cached "Instruct…Document: " state) and
    // online scores must agree, also for texts whose first characters merge with the template's
    // last token under greedy tokenization.
    let f = fixture();
    let db = f.open();
    let mut cfg = f.config();
    cfg.state_preset = "exact".into();
    let c = db.create_collection("exact", cfg).unwrap();
    let texts =
        [" leading space", "  two spaces", "Plain start.", "東京は首都。", "\nnewline first", "-dash", "'quote'"];
    let docs: Vec<NewDocument> = texts.iter().enumerate().map(|(i, t)| doc(&format!("x{i}"), t, json!({}))).collect();
    c.insert(docs).unwrap();
    let opts = |rerank| QueryOptions { top_k: 10, candidates: 10, rerank, ..QueryOptions::default() };
    let off = c.query("which one?", &opts(Rerank::Offline)).unwrap();
    let on = c.query("which one?", &opts(Rerank::Online)).unwrap();
    assert_eq!(off.hits.len(), texts.len());
    for h in &off.hits {
        let o = on.hits.iter().find(|x| x.id == h.id).unwrap();
        assert!(
            (h.logit.unwrap() - o.logit.unwrap()).abs() < 1e-4,
            "{}: offline {:?} online {:?}",
            h.id,
            h.logit,
            o.logit
        );
    }
}

#[test]
fn precomputed_documents_query_like_embedded_ones() {
    let f = fixture();
    let db = f.open();
    let embedded = db.create_collection("embedded", f.config()).unwrap();
    let pre = db.create_collection("pre", f.config()).unwrap();
    let docs = corpus();
    embedded.insert(docs.clone()).unwrap();

    // Compute embeddings and full offline states outside the collection (no prefix cache).
    let rt = pre.runtime().unwrap();
    let tok = rwkvdb::tokenizer::Tokenizer::world();
    let emb_tokens: Vec<Vec<u32>> = docs.iter().map(|d| tok.encode_with_eos(&d.text)).collect();
    let state_tokens: Vec<Vec<u32>> =
        docs.iter().map(|d| tok.encode(&rwkvdb::model::offline_document_text(&d.text))).collect();
    let embeddings = rt.embed(&emb_tokens.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    let states = rt.prefix_states(&state_tokens.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
    let batch = precomputed(&docs, embeddings, states);

    // Bad shapes are refused and nothing is written.
    let mut bad = batch.clone();
    bad[3].embedding.pop();
    assert!(matches!(pre.insert_precomputed(bad), Err(Error::InvalidInput(_))));
    let mut bad = batch.clone();
    bad[5].state = None;
    assert!(matches!(pre.insert_precomputed(bad), Err(Error::InvalidInput(_))));
    // A zero vector (or one whose squares underflow) has no direction: refused before commit,
    // so the collection still opens and the batch can be retried.
    // The same for non-finite values and a squared length that overflows.
    for degenerate in [0.0f32, 1e-30, f32::NAN, f32::INFINITY, -f32::INFINITY, 1e30] {
        let mut bad = batch.clone();
        bad[2].embedding.iter_mut().for_each(|x| *x = degenerate);
        assert!(matches!(pre.insert_precomputed(bad), Err(Error::InvalidInput(_))), "{degenerate}");
    }
    let mut bad = batch.clone();
    bad[7].embedding[0] = f32::NAN;
    assert!(matches!(pre.insert_precomputed(bad), Err(Error::InvalidInput(_))));
    assert_eq!(pre.count().unwrap(), 0);

    pre.insert_precomputed(batch.clone()).unwrap();
    assert_eq!(pre.count().unwrap(), 40);
    assert!(matches!(pre.insert_precomputed(batch[..1].to_vec()), Err(Error::DuplicateId(_))));
    let opts = QueryOptions { top_k: 10, candidates: 20, ..QueryOptions::default() };
    let a = embedded.query("topic 3 and the number", &opts).unwrap();
    let b = pre.query("topic 3 and the number", &opts).unwrap();
    assert_eq!(a.hits.len(), 10);
    for (x, y) in a.hits.iter().zip(&b.hits) {
        assert_eq!(x.id, y.id);
        assert!((x.similarity - y.similarity).abs() < 1e-5);
        assert!((x.probability.unwrap() - y.probability.unwrap()).abs() < 1e-3, "{x:?} vs {y:?}");
    }
    assert!(pre.check().unwrap().problems.is_empty());
}

#[test]
fn large_states_are_stored_in_pieces() {
    use rwkvdb::checkpoint::{self, synth, StoredDType};
    let dir = tempfile::tempdir().unwrap();
    // Width 256: a default-preset state is ~82 KB, more than one piece.
    let cfg = synth::SynthConfig { layers: 3, width: 256, reranker_layers: vec![1, 2], seed: 9, ..Default::default() };
    let (emb, rr) = (dir.path().join("emb.pth"), dir.path().join("rr.pth"));
    checkpoint::pth::write(&emb, &synth::synth_embedder(&cfg), StoredDType::F32).unwrap();
    checkpoint::pth::write(&rr, &synth::synth_reranker(&cfg), StoredDType::F32).unwrap();
    let path = dir.path().join("wide.redb");
    {
        let db = Database::open(&path, OpenOptions::default()).unwrap();
        let c = db.create_collection("docs", CollectionConfig::new(&emb, Some(rr.clone()))).unwrap();
        c.insert(corpus()[..12].to_vec()).unwrap();
        let per_doc = c.stats().unwrap().state_bytes_per_document;
        assert!(per_doc > rwkvdb::limits::STATE_CHUNK_BYTES as f64, "{per_doc}");

        c.delete(&["d0"]).unwrap();
        c.upsert(vec![doc("d1", "A replaced text for d1.", json!({}))]).unwrap();
    }
    // Every live document has its pieces, full but for the last; the deleted one has none.
    let pieces: Vec<((u64, u32), usize)> = {
        let raw = redb::Database::open(&path).unwrap();
        let r = redb::ReadableDatabase::begin_read(&raw).unwrap();
        let t = r.open_table(redb::TableDefinition::<(u64, u32), &[u8]>::new("c1_state_chunks")).unwrap();
        t.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value(), v.value().len())).collect()
    };
    let full = rwkvdb::limits::STATE_CHUNK_BYTES;
    let docs: std::collections::BTreeSet<u64> = pieces.iter().map(|((k, _), _)| *k).collect();
    assert_eq!(docs.len(), 11);
    for doc in docs {
        let mine: Vec<&((u64, u32), usize)> = pieces.iter().filter(|((k, _), _)| *k == doc).collect();
        assert!(mine.len() >= 2);
        for (i, ((_, n), len)) in mine.iter().enumerate() {
            assert_eq!(*n as usize, i);
            assert!(if i + 1 < mine.len() { *len == full } else { *len <= full && *len > 0 });
        }
    }
    // Damage in a second piece is found and named.
    {
        let raw = redb::Database::open(&path).unwrap();
        let w = raw.begin_write().unwrap();
        {
            let key = stored_key(&w, "d5");
            let mut t = w.open_table(redb::TableDefinition::<(u64, u32), &[u8]>::new("c1_state_chunks")).unwrap();
            let mut piece = t.get((key, 1)).unwrap().unwrap().value().to_vec();
            piece[10] ^= 1;
            t.insert((key, 1), piece.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    let c = db.collection("docs").unwrap();
    assert_eq!(c.check().unwrap().damaged_ids, vec!["d5"]);
    let q = |rerank| QueryOptions { top_k: 11, candidates: 11, rerank, ..QueryOptions::default() };
    let off = c.query("topic 1", &q(Rerank::Offline)).unwrap();
    let on = c.query("topic 1", &q(Rerank::Online)).unwrap();
    assert_eq!(off.skipped.len(), 1);
    assert_eq!(off.hits.len(), 10);
    assert_scores_agree(&off, &on);
}

#[test]
fn corrupted_document_record_is_named_and_the_rest_stays_queryable() {
    let f = fixture();
    {
        let db = f.open();
        db.create_collection("docs", f.config()).unwrap().insert(corpus()).unwrap();
    }
    {
        let raw = redb::Database::open(f.db_path()).unwrap();
        let w = raw.begin_write().unwrap();
        {
            let key = stored_key(&w, "d6");
            let mut t = w.open_table(redb::TableDefinition::<u64, &[u8]>::new("c1_docs")).unwrap();
            let mut rec = t.get(key).unwrap().unwrap().value().to_vec();
            let mid = rec.len() / 2;
            rec[mid] ^= 0x08;
            t.insert(key, rec.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let db = f.open();
    let c = db.collection("docs").unwrap();
    let report = c.check().unwrap();
    assert_eq!(report.damaged_ids, vec!["d6"]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(matches!(c.get("d6"), Err(Error::Store(_))));
    // Everything else answers, filters included; the damaged document is simply not a candidate.
    let r = c.query("topic 2", &QueryOptions { top_k: 40, candidates: 40, ..QueryOptions::default() }).unwrap();
    assert_eq!(r.hits.len(), 39);
    assert!(r.hits.iter().all(|h| h.id != "d6"));
    let filtered = QueryOptions {
        top_k: 10,
        filter: Some(Filter::parse(r#"{"topic": "t2"}"#).unwrap()),
        ..QueryOptions::default()
    };
    let r = c.query("topic", &filtered).unwrap();
    assert_eq!(r.hits.len(), 9, "d6 is topic t2: 10 minus the damaged one");
    // Deleting the damaged document clears the report.
    c.delete(&["d6"]).unwrap();
    assert!(c.check().unwrap().problems.is_empty());
}

#[test]
fn a_large_collection_opens_at_once_and_gets_its_graph_in_the_background() {
    let f = fixture();
    let n = rwkvdb::index::EXACT_BELOW + 2000;
    let mut rng = 7u64;
    let mut next = move || {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((rng >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    // Without a reranker the collection keeps no states: cheap to fill with given embeddings.
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| (0..128).map(|_| next()).collect()).collect();
    {
        let db = f.open();
        let c = db.create_collection("big", CollectionConfig::new(&f.emb, None)).unwrap();
        for (b, chunk) in vectors.chunks(4000).enumerate() {
            let docs = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| rwkvdb::PrecomputedDocument {
                    id: format!("g{}", b * 4000 + i),
                    text: format!("generated {}", b * 4000 + i),
                    metadata: None,
                    embedding: v.clone(),
                    state: None,
                })
                .collect();
            c.insert_precomputed(docs).unwrap();
        }
    }
    // Without its saved index (as in files from before it was saved)...
    common::remove_saved_index(&f.db_path(), 1);
    let db = f.open();
    let c = db.collection("big").unwrap();
    // ... open returns before the graph exists; queries are exact scans meanwhile.
    let stats = c.stats().unwrap();
    assert!(!stats.index_graph_ready);
    assert!(stats.index_origin.contains("no saved index"), "{}", stats.index_origin);
    let q = QueryOptions { top_k: 5, rerank: Rerank::None, ..QueryOptions::default() };
    let before = c.query("generated", &q).unwrap();
    assert_eq!(before.hits.len(), 5);
    // Writes during the background build are not lost.
    c.insert_precomputed(vec![rwkvdb::PrecomputedDocument {
        id: "late".into(),
        text: "inserted while the graph was building".into(),
        metadata: None,
        embedding: vectors[5].iter().map(|x| -x).collect(),
        state: None,
    }])
    .unwrap();
    c.delete(&["g3"]).unwrap();
    let start = std::time::Instant::now();
    while !c.stats().unwrap().index_graph_ready {
        assert!(start.elapsed() < std::time::Duration::from_secs(300), "the graph never arrived");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let stats = c.stats().unwrap();
    assert_eq!(stats.index_entries, n, "n - 1 deleted + 1 inserted");
    assert!(c.check().unwrap().problems.is_empty());
    // The graph answers like the exact scan did (same query, same data but g3 and "late").
    // (A wide beam: random 128-d vectors are the graph's hardest case.)
    let after = c.query("generated", &QueryOptions { ef: Some(2000), ..q.clone() }).unwrap();
    let ids = |r: &rwkvdb::QueryResult| r.hits.iter().map(|h| h.id.clone()).filter(|id| id != "g3").collect::<Vec<_>>();
    assert_eq!(ids(&after)[..4], ids(&before)[..4]);
}

#[test]
fn reading_and_maintenance_work_without_the_model_files() {
    let f = fixture();
    {
        let db = f.open();
        let c = db.create_collection("docs", f.config()).unwrap();
        c.insert(vec![
            doc("a", "water boils at sea level", json!({"t": 1})),
            doc("b", "cats sleep a lot", json!(null)),
        ])
        .unwrap();
    }
    std::fs::remove_file(&f.emb).unwrap();
    std::fs::remove_file(&f.rr).unwrap();
    let db = f.open();
    let c = db.collection("docs").unwrap();
    assert_eq!(c.get("a").unwrap().unwrap().text, "water boils at sea level");
    assert_eq!(c.stats().unwrap().documents, 2);
    let report = c.check().unwrap();
    assert_eq!((report.documents, report.problems.len()), (2, 0), "{:?}", report.problems);
    c.delete(&["b"]).unwrap();
    assert_eq!(c.count().unwrap(), 1);
    assert!(!c.model_loaded(), "none of these calls needs the model");
    // A query does need it: a clear error that names the missing file, and nothing changes.
    let e = c.query("water", &QueryOptions::default()).unwrap_err();
    assert!(e.to_string().contains("emb.pth"), "{e}");
    assert_eq!(c.count().unwrap(), 1);
}

/// Deleting past the index's tombstone threshold starts a graph rebuild in the background: the
/// deletes return at once, queries go on meanwhile (never returning a deleted document), and
/// the rebuilt graph is swapped in with the writes made during the build.
#[test]
fn deletions_rebuild_the_graph_in_the_background() {
    let f = fixture();
    let db = f.open();
    let c = db.create_collection("plain", CollectionConfig::new(&f.emb, None)).unwrap();
    let dim = 128; // the small test model's width
    let mut seed = 7u64;
    let mut vector = || -> Vec<f32> {
        (0..dim)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    };
    let n = 5000;
    let docs: Vec<rwkvdb::PrecomputedDocument> = (0..n)
        .map(|i| rwkvdb::PrecomputedDocument {
            id: format!("p{i}"),
            text: format!("precomputed {i}"),
            metadata: None,
            embedding: vector(),
            state: None,
        })
        .collect();
    for batch in docs.chunks(1000) {
        c.insert_precomputed(batch.to_vec()).unwrap();
    }
    // 1,600 of 5,000 deleted (32%): past the threshold (more than 1,000 and 20%).
    let deleted: Vec<String> = (0..n).filter(|i| i % 3 == 0).take(1600).map(|i| format!("p{i}")).collect();
    for chunk in deleted.chunks(400) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        assert_eq!(c.delete(&refs).unwrap().deleted.len(), chunk.len());
    }
    // Writes during the build are carried into the new graph.
    c.insert_precomputed(vec![rwkvdb::PrecomputedDocument {
        id: "late".into(),
        text: "inserted while the graph is rebuilt".into(),
        metadata: None,
        embedding: vector(),
        state: None,
    }])
    .unwrap();
    c.delete(&["p1"]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let stats = c.stats().unwrap();
        let hits = c
            .query(
                "precomputed",
                &QueryOptions { top_k: 50, candidates: 50, rerank: Rerank::None, ..QueryOptions::default() },
            )
            .unwrap();
        assert!(hits.hits.iter().all(|h| !deleted.contains(&h.id) && h.id != "p1"), "a deleted document was returned");
        assert_eq!(stats.index_entries, n - 1600 - 1 + 1);
        // The rebuild started at the third chunk (1,200 tombstones): the new graph holds only
        // the deletes made after its snapshot (at most 401) as tombstones.
        if stats.index_tombstones <= 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the background rebuild did not finish: {stats:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(c.check().unwrap().problems.is_empty());
    assert!(c.get("late").unwrap().is_some());
}

/// Compaction needs the file to itself: with a handle open it says so (and changes nothing);
/// once the handle is closed it runs and every document is still there.
#[test]
fn compaction_needs_exclusive_access_and_says_so() {
    let f = fixture();
    let db = f.open();
    let c = db.create_collection("docs", f.config()).unwrap();
    c.insert(corpus()).unwrap();
    let err = Database::compact_file(f.db_path()).unwrap_err();
    assert!(matches!(&err, Error::Store(rwkvdb::StoreError::NeedsExclusiveAccess { .. })), "{err:?}");
    assert!(err.to_string().contains("needs exclusive access"), "{err}");
    assert_eq!(c.count().unwrap(), 40);
    drop(c);
    drop(db);
    Database::compact_file(f.db_path()).unwrap();
    let db = f.open();
    assert_eq!(db.collection("docs").unwrap().count().unwrap(), 40);
}

/// `get_or_create_collection` creates once and opens afterwards (the README's pattern: a
/// program run twice must not fail with `CollectionExists`).
#[test]
fn get_or_create_collection_creates_once() {
    let f = fixture();
    for run in 0..2 {
        let db = f.open();
        let c = db.get_or_create_collection("notes", f.config()).unwrap();
        c.upsert(vec![doc("n1", "Water boils at 100 degrees.", json!(null))]).unwrap();
        assert_eq!(c.count().unwrap(), 1, "run {run}");
        assert_eq!(db.list_collections().unwrap().len(), 1);
    }
}

#[test]
fn embed_matches_the_reference_model_and_the_stored_similarities() {
    let f = fixture();
    let db = f.open();
    let c = db.create_collection("docs", f.config()).unwrap();
    let texts = ["Water boils at 100 degrees.", "A violin has four strings."];
    let got = c.embed(&texts).unwrap();
    let (emb, _) = common::small_pair();
    let tok = rwkvdb::tokenizer::Tokenizer::world();
    for (text, e) in texts.iter().zip(&got) {
        let want: Vec<f32> =
            common::reference::embed(&emb, &tok.encode_with_eos(text)).iter().map(|&x| x as f32).collect();
        assert!(common::max_diff(e, &common::unit(&want)) < 1e-4, "{text}");
    }
    // The query path uses the same embedding: a document queried by its own text scores 1.
    c.insert(vec![doc("w", texts[0], json!(null))]).unwrap();
    let hit = &c.query(texts[0], &QueryOptions { rerank: Rerank::None, ..QueryOptions::default() }).unwrap().hits[0];
    assert!((hit.similarity - 1.0).abs() < 1e-5);
    assert!(matches!(c.embed(&["  "]), Err(Error::InvalidInput(_))));
    assert!(c.embed(&[]).unwrap().is_empty());
}

#[test]
fn exported_states_inserted_elsewhere_rank_like_the_inserted_documents() {
    let f = fixture();
    let db = f.open();
    let own = db.create_collection("own", f.config()).unwrap();
    let imported = db.create_collection("imported", f.config()).unwrap();
    let docs = corpus();
    own.insert(docs.clone()).unwrap();
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let embeddings = own.embed(&texts).unwrap();
    let states = own.document_states(&texts).unwrap();
    assert_eq!(states[0].layers, own.runtime().unwrap().state_layers());
    imported.insert_precomputed(precomputed(&docs, embeddings, states)).unwrap();
    let opts = QueryOptions { top_k: 5, ..QueryOptions::default() };
    let a = own.query("a question about music", &opts).unwrap();
    let b = imported.query("a question about music", &opts).unwrap();
    for (x, y) in a.hits.iter().zip(&b.hits) {
        assert_eq!(x.id, y.id);
        assert!((x.logit.unwrap() - y.logit.unwrap()).abs() < 1e-5, "{} {:?} {:?}", x.id, x.logit, y.logit);
    }
}
