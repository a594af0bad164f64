//! Collections: the insert and query pipelines.
//!
//! Insert: tokenize → batched embedding → offline state of the rerank index text (resumed from
//! the cached template-prefix state) → encode → one redb write transaction → index update.
//!
//! Query: embed → ANN candidates (filter and tombstones applied inside the search) → load and
//! decode states → one batched resume-and-score → sort.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{Preset, StateCodec};
use crate::db::{LoadedModel, ModelRegistry};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{AnnIndex, IndexParams, EXACT_BELOW};
use crate::model::{
    offline_document_text, offline_query_text, online_text, ModelShape, ModelState, Precision, Runtime,
    RERANK_INSTRUCTION,
};
use crate::store::{self, CollectionRecord, CollectionTables, DocRecord};
use crate::tokenizer::Tokenizer;

/// In non-durable mode, one write transaction in this many is committed durably.
pub const DURABLE_EVERY: u32 = 16;
/// Most documents in one insert batch (one write transaction).
pub const MAX_BATCH_DOCS: usize = 4096;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 1024;
/// Largest document text, in bytes (the token limit usually binds first).
pub const MAX_TEXT_BYTES: usize = 16 << 20;
/// Largest metadata of one document, as JSON text.
pub const MAX_METADATA_BYTES: usize = 64 << 10;
/// Upper bound on `top_k` and `candidates` of one query.
pub const MAX_CANDIDATES: usize = 10_000;
/// Documents whose f32 states are alive together, in a query's rerank (decode + resume) and in
/// an insert (compute + encode): bounds memory to `RERANK_CHUNK` decoded states (~2 MB each at
/// the 0.1B shape) whatever the number of candidates or the batch size.
pub const RERANK_CHUNK: usize = 128;

/// Weight precision of new collections: the fastest one within the fidelity bounds measured in
/// docs/performance.md ("Quantized weights").
pub const DEFAULT_PRECISION: Precision = Precision::F32;

/// How a collection is configured at creation (stored in the file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionConfig {
    /// Embedder checkpoint path.
    pub embedder: std::path::PathBuf,
    /// Reranker checkpoint path; without one the collection keeps no states.
    pub reranker: Option<std::path::PathBuf>,
    /// State precision preset name (see [`crate::codec::Preset`]).
    pub state_preset: String,
    /// Precision of the model's weight matrices (collections made before this setting: f32).
    #[serde(default)]
    pub precision: Precision,
    /// HNSW links per node.
    pub hnsw_m: usize,
    /// HNSW candidate list size while building.
    pub hnsw_ef_construction: usize,
    /// HNSW candidate list size while searching (default for queries).
    pub hnsw_ef_search: usize,
    /// Maximum tokens of a document's text.
    pub max_doc_tokens: usize,
    /// Over-long documents: `false` rejects the batch, `true` truncates to `max_doc_tokens`.
    pub truncate: bool,
}

impl CollectionConfig {
    /// A configuration with rwkvdb's defaults for the given model files.
    pub fn new(embedder: impl Into<std::path::PathBuf>, reranker: Option<std::path::PathBuf>) -> Self {
        Self {
            embedder: embedder.into(),
            reranker,
            state_preset: Preset::default().name().to_string(),
            precision: DEFAULT_PRECISION,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
            max_doc_tokens: 8192,
            truncate: false,
        }
    }
}

/// A document to insert.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewDocument {
    /// The caller's id; `None` generates one.
    #[serde(default)]
    pub id: Option<String>,
    /// The text (must not be empty).
    pub text: String,
    /// JSON metadata (filterable).
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// A document whose embedding and state were computed elsewhere (another machine, a GPU run, a
/// benchmark generator): inserted without running the model.
#[derive(Debug, Clone)]
pub struct PrecomputedDocument {
    /// The caller's id (must not be empty).
    pub id: String,
    /// The text.
    pub text: String,
    /// JSON metadata.
    pub metadata: Option<Value>,
    /// The embedding of `text` + EOS (normalised on insert).
    pub embedding: Vec<f32>,
    /// The offline index-template state (required when the collection keeps states).
    pub state: Option<ModelState>,
}

/// A stored document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Document {
    /// The caller's id.
    pub id: String,
    /// The text.
    pub text: String,
    /// Metadata (`null` when none).
    pub metadata: Value,
}

/// Which reranking a query uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rerank {
    /// Resume each candidate's cached state with the query (the fast path).
    #[default]
    Offline,
    /// Re-read every candidate with the query from scratch (for comparison).
    Online,
    /// ANN order only.
    None,
}

/// Query options.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Hits to return.
    pub top_k: usize,
    /// ANN candidates to rerank (at least `top_k`).
    pub candidates: usize,
    /// Metadata filter applied inside the ANN search.
    pub filter: Option<Filter>,
    /// Reranking mode.
    pub rerank: Rerank,
    /// HNSW search width; `None` uses the collection's default.
    pub ef: Option<usize>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self { top_k: 10, candidates: 50, filter: None, rerank: Rerank::Offline, ef: None }
    }
}

/// One query result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Document id.
    pub id: String,
    /// Cosine similarity of the embeddings.
    pub similarity: f32,
    /// Reranker logit (absent without reranking).
    pub logit: Option<f32>,
    /// `sigmoid(logit)`.
    pub probability: Option<f32>,
    /// Document text.
    pub text: String,
    /// Metadata.
    pub metadata: Value,
}

/// What a query returns.
#[derive(Debug, Clone, Serialize, Default)]
pub struct QueryResult {
    /// Hits, best first.
    pub hits: Vec<Hit>,
    /// Candidates left out because their stored data failed a check: (id, reason).
    pub skipped: Vec<(String, String)>,
    /// Time spent per stage, in milliseconds: embed, ann, load, rerank.
    pub timings_ms: [f64; 4],
}

/// What an insert did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InsertReport {
    /// Ids written, in input order.
    pub ids: Vec<String>,
    /// Tokens embedded.
    pub tokens: usize,
    /// Ids that replaced an existing document (upsert only).
    pub replaced: usize,
}

/// What a delete did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    /// Ids removed.
    pub deleted: Vec<String>,
    /// Ids that did not exist.
    pub missing: Vec<String>,
}

/// The template-prefix states: the instruction and `Document: ` never change, so their state is
/// computed once. Greedy tokenization may merge the last prefix tokens with the document's first
/// characters, so states are kept for the full prefix and its shorter versions, and a document
/// resumes from the longest one its tokens really start with.
struct PrefixCache {
    tokens: Vec<u32>,
    states: Vec<(usize, ModelState)>,
}

impl PrefixCache {
    fn build(rt: &Runtime, tok: &Tokenizer) -> Result<Self> {
        let tokens = tok.encode(&format!("{RERANK_INSTRUCTION}Document: "));
        let lens: Vec<usize> = (tokens.len().saturating_sub(3).max(1)..=tokens.len()).rev().collect();
        let seqs: Vec<&[u32]> = lens.iter().map(|&l| &tokens[..l]).collect();
        let states = rt.prefix_states(&seqs)?;
        Ok(Self { tokens, states: lens.into_iter().zip(states).collect() })
    }

    /// The longest cached prefix of `doc` and its state.
    fn find(&self, doc: &[u32]) -> Option<&(usize, ModelState)> {
        let common = self.tokens.iter().zip(doc).take_while(|(a, b)| a == b).count();
        self.states.iter().find(|(len, _)| *len <= common && *len < doc.len())
    }
}

/// Shared state of an open collection.
pub(crate) struct CollectionInner {
    pub db: Arc<Database>,
    pub record: RwLock<CollectionRecord>,
    pub tables: CollectionTables,
    /// The model, loaded on first use (see [`CollectionInner::model`]).
    model: ModelSlot,
    /// The model's shape, known without loading it.
    pub shape: ModelShape,
    pub codec: Option<StateCodec>,
    pub index: RwLock<AnnIndex>,
    /// Metadata of live documents, for filters evaluated inside the ANN search.
    pub metadata: RwLock<HashMap<u64, Arc<Value>>>,
    /// Serialises writers (redb allows one write transaction at a time anyway).
    write_lock: Mutex<()>,
    pub durable: bool,
    /// Write transactions begun; in non-durable mode every `DURABLE_EVERY`th is durable.
    lazy_commits: std::sync::atomic::AtomicU32,
}

/// A collection's model: nothing until the first call that needs it.
struct ModelSlot {
    registry: Arc<ModelRegistry>,
    ready: OnceLock<ReadyModel>,
    init: Mutex<()>,
}

/// A loaded, fingerprint-checked model and the collection's prefix states.
pub(crate) struct ReadyModel {
    pub runtime: Arc<Runtime>,
    prefix: Option<PrefixCache>,
}

impl CollectionInner {
    /// The collection's model, loaded and checked against the stored fingerprint on first use.
    /// A failure (files missing, different model) is returned every time until it is fixed.
    pub(crate) fn model(&self) -> Result<&ReadyModel> {
        if let Some(m) = self.model.ready.get() {
            return Ok(m);
        }
        let _one = self.model.init.lock();
        if let Some(m) = self.model.ready.get() {
            return Ok(m);
        }
        let record = self.record.read().clone();
        let loaded = self.model.registry.load_checked(&record)?;
        let ready = ReadyModel::new(&loaded)?;
        // Only this thread sets the slot (under `init`), so `set` cannot fail here.
        let _ = self.model.ready.set(ready);
        self.model.ready.get().ok_or_else(|| Error::Config("model slot left empty".into()))
    }

    /// A write transaction with the database's durability setting. In non-durable mode every
    /// [`DURABLE_EVERY`]th transaction is durable anyway: that bounds what a crash can lose, and
    /// redb only reuses pages freed since the last durable commit after the next one.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(store::StoreError::from)?;
        let n = self.lazy_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if !self.durable && n % DURABLE_EVERY != 0 {
            txn.set_durability(redb::Durability::None).map_err(|e| Error::Store(store::StoreError::Redb(e.into())))?;
        }
        Ok(txn)
    }

    /// Drops committed-away documents from the in-memory index and metadata.
    fn forget(&self, keys: &[u64]) {
        let index = self.index.read();
        let mut meta = self.metadata.write();
        for k in keys {
            index.delete(*k);
            meta.remove(k);
        }
    }
}

/// A collection's tables, open in one write transaction.
struct WriteTables<'t> {
    docs: redb::Table<'t, u64, &'static [u8]>,
    ids: redb::Table<'t, &'static str, u64>,
    states: redb::Table<'t, (u64, u32), &'static [u8]>,
}

impl<'t> WriteTables<'t> {
    fn open(txn: &'t redb::WriteTransaction, t: &CollectionTables) -> Result<Self> {
        let e = store::StoreError::from;
        Ok(Self {
            docs: txn.open_table(t.docs()).map_err(e)?,
            ids: txn.open_table(t.ids()).map_err(e)?,
            states: txn.open_table(t.states()).map_err(e)?,
        })
    }

    /// Removes a document's record and state (the id entry is the caller's business).
    fn remove_doc(&mut self, key: u64) -> Result<()> {
        let e = store::StoreError::from;
        self.docs.remove(key).map_err(e)?;
        store::remove_state(&mut self.states, key)?;
        Ok(())
    }
}

impl ReadyModel {
    fn new(loaded: &LoadedModel) -> Result<Self> {
        let runtime = loaded.runtime.clone();
        let prefix =
            if runtime.has_reranker() { Some(PrefixCache::build(&runtime, Tokenizer::world())?) } else { None };
        Ok(Self { runtime, prefix })
    }
}

/// A handle to an open collection; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Collection {
    pub(crate) inner: Arc<CollectionInner>,
}

/// A document prepared for writing (everything computed outside the write lock).
struct Prepared {
    id: String,
    record: DocRecord,
    metadata: Value,
    state: Option<Vec<u8>>,
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Collection {
    /// Opens a collection over its stored records. `loaded` is the model when the caller has
    /// it already (creation, or a record without a stored shape); otherwise it loads on first use.
    pub(crate) fn open(
        db: Arc<Database>,
        record: CollectionRecord,
        registry: Arc<ModelRegistry>,
        loaded: Option<Arc<LoadedModel>>,
        durable: bool,
    ) -> Result<Self> {
        let tables = CollectionTables::new(record.id);
        let ready = loaded.as_deref().map(ReadyModel::new).transpose()?;
        let shape = match (&record.shape, &ready) {
            (Some(shape), _) => shape.clone(),
            (None, Some(m)) => ModelShape::of(&m.runtime),
            (None, None) => return Err(Error::Config(format!("collection {:?}: model shape unknown", record.name))),
        };
        let codec = if shape.has_reranker {
            let preset = Preset::parse(&record.config.state_preset)
                .ok_or_else(|| Error::Config(format!("unknown state preset {:?}", record.config.state_preset)))?;
            Some(StateCodec::new(preset.config(), shape.width, shape.state_layers, &shape.reranker_layers)?)
        } else {
            None
        };
        let params = IndexParams {
            m: record.config.hnsw_m,
            ef_construction: record.config.hnsw_ef_construction,
            ef_search: record.config.hnsw_ef_search,
            ..IndexParams::default()
        };
        let slot = ModelSlot { registry, ready: OnceLock::new(), init: Mutex::new(()) };
        if let Some(m) = ready {
            let _ = slot.ready.set(m);
        }
        let inner = CollectionInner {
            db,
            record: RwLock::new(record),
            tables,
            model: slot,
            index: RwLock::new(AnnIndex::new(shape.width, params)),
            shape,
            codec,
            metadata: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            durable,
            lazy_commits: std::sync::atomic::AtomicU32::new(0),
        };
        let c = Self { inner: Arc::new(inner) };
        // The index and the metadata map come from the stored records (nothing is re-embedded):
        // the store is the source of truth, so after a crash they agree with what was committed.
        c.build_index_locked(true)?;
        Ok(c)
    }

    /// The collection's name.
    pub fn name(&self) -> String {
        self.inner.record.read().name.clone()
    }

    /// The stored configuration.
    pub fn config(&self) -> CollectionConfig {
        self.inner.record.read().config.clone()
    }

    /// Model fingerprint the collection was created with.
    pub fn fingerprint(&self) -> String {
        self.inner.record.read().fingerprint.clone()
    }

    /// The model runtime serving this collection (loaded now if it was not yet).
    pub fn runtime(&self) -> Result<Arc<Runtime>> {
        Ok(self.inner.model()?.runtime.clone())
    }

    /// Whether the model has been loaded (it loads on the first insert, query or `runtime()`).
    pub fn model_loaded(&self) -> bool {
        self.inner.model.ready.get().is_some()
    }

    /// Number of stored documents.
    pub fn count(&self) -> Result<u64> {
        let r = self.inner.db.begin_read().map_err(store::StoreError::from)?;
        let t = r.open_table(self.inner.tables.ids()).map_err(store::StoreError::from)?;
        Ok(t.len().map_err(store::StoreError::from)?)
    }

    /// Inserts documents; fails (writing nothing) if any id already exists.
    pub fn insert(&self, docs: Vec<NewDocument>) -> Result<InsertReport> {
        self.write(docs, false)
    }

    /// Inserts or replaces documents by id.
    pub fn upsert(&self, docs: Vec<NewDocument>) -> Result<InsertReport> {
        self.write(docs, true)
    }

    fn prepare(&self, docs: Vec<NewDocument>) -> Result<(Vec<Prepared>, usize)> {
        let inner = &self.inner;
        let tok = Tokenizer::world();
        let cfg = inner.record.read().config.clone();
        let ids = batch_ids(docs.iter().map(|d| (d.id.as_deref(), d.text.as_str(), d.metadata.as_ref())))?;

        // Embedding input: text + EOS. State input: the offline index template (no EOS).
        let max = cfg.max_doc_tokens.max(2);
        let mut embed_tokens = Vec::with_capacity(docs.len());
        let mut state_tokens = Vec::with_capacity(docs.len());
        for (d, id) in docs.iter().zip(&ids) {
            let mut t = tok.encode(&d.text);
            if t.len() + 1 > max {
                if !cfg.truncate {
                    return Err(Error::TooLong { id: id.clone(), tokens: t.len() + 1, max });
                }
                t.truncate(max - 1);
            }
            t.push(crate::tokenizer::EOS_TOKEN);
            embed_tokens.push(t);
            if inner.codec.is_some() {
                let mut s = tok.encode(&offline_document_text(&d.text));
                let limit = max + 32;
                if s.len() > limit {
                    // Truncation keeps the template's trailing newline so queries resume the same way.
                    s.truncate(limit - 1);
                    s.extend(tok.encode("\n"));
                }
                state_tokens.push(s);
            }
        }
        let refs: Vec<&[u32]> = embed_tokens.iter().map(Vec::as_slice).collect();
        let model = inner.model()?;
        let embeddings = model.runtime.embed(&refs)?;
        // States are computed and encoded RERANK_CHUNK documents at a time: only the encoded
        // blobs (a few hundred KB each) live for the whole batch.
        let mut encoded: Vec<Option<Vec<u8>>> = vec![None; docs.len()];
        if let (Some(codec), Some(prefix)) = (&inner.codec, &model.prefix) {
            let rt = &model.runtime;
            for (chunk_no, chunk) in state_tokens.chunks(RERANK_CHUNK).enumerate() {
                let mut starts = Vec::with_capacity(chunk.len());
                let mut rests: Vec<&[u32]> = Vec::with_capacity(chunk.len());
                for s in chunk {
                    match prefix.find(s) {
                        Some((len, st)) => {
                            starts.push(st.clone());
                            rests.push(&s[*len..]);
                        }
                        None => {
                            starts.push(ModelState::zeros(rt.state_layers(), rt.config().width));
                            rests.push(s);
                        }
                    }
                }
                for (i, state) in rt.resume_states(starts, &rests)?.iter().enumerate() {
                    encoded[chunk_no * RERANK_CHUNK + i] = Some(codec.encode(state)?);
                }
            }
        }
        let mut out = Vec::with_capacity(docs.len());
        let mut total_tokens = 0;
        let per_doc = docs.into_iter().zip(ids).zip(embeddings).zip(encoded);
        for (i, (((d, id), mut emb), state)) in per_doc.enumerate() {
            normalise(&mut emb);
            let metadata = d.metadata.unwrap_or(Value::Null);
            total_tokens += embed_tokens[i].len();
            out.push(Prepared {
                record: DocRecord {
                    id: id.clone(),
                    text: d.text,
                    metadata: metadata.to_string(),
                    embedding: emb,
                    tokens: embed_tokens[i].len() as u32,
                },
                id,
                metadata,
                state,
            });
        }
        Ok((out, total_tokens))
    }

    fn write(&self, docs: Vec<NewDocument>, replace: bool) -> Result<InsertReport> {
        if docs.is_empty() {
            return Ok(InsertReport::default());
        }
        // Model inference runs before taking the write lock: writers only serialise on the commit.
        let (prepared, tokens) = self.prepare(docs)?;
        self.commit(prepared, tokens, replace)
    }

    /// Inserts documents with embeddings and states computed elsewhere; fails (writing nothing)
    /// if any id already exists or any vector or state has the wrong shape.
    pub fn insert_precomputed(&self, docs: Vec<PrecomputedDocument>) -> Result<InsertReport> {
        if docs.is_empty() {
            return Ok(InsertReport::default());
        }
        let inner = &self.inner;
        batch_ids(docs.iter().map(|d| (Some(d.id.as_str()), d.text.as_str(), d.metadata.as_ref())))?;
        let dim = inner.shape.width;
        let tok = Tokenizer::world();
        let mut prepared = Vec::with_capacity(docs.len());
        let mut total_tokens = 0;
        for d in docs {
            if d.embedding.len() != dim || !d.embedding.iter().all(|x| x.is_finite()) {
                return Err(Error::InvalidInput(format!(
                    "document {}: embedding of {} values (finite values of dimension {dim} expected)",
                    d.id,
                    d.embedding.len()
                )));
            }
            let state = match (&inner.codec, &d.state) {
                (Some(codec), Some(st)) => Some(codec.encode(st)?),
                (Some(_), None) => {
                    return Err(Error::InvalidInput(format!("document {}: this collection keeps states", d.id)))
                }
                (None, _) => None,
            };
            let tokens = tok.encode(&d.text).len() + 1;
            total_tokens += tokens;
            let mut embedding = d.embedding;
            normalise(&mut embedding);
            // An all-zero vector (or one whose squares underflow) has no direction: the index
            // would refuse it after the commit, and on every later open.
            let norm = embedding.iter().map(|x| x * x).sum::<f32>();
            if !(norm > 0.5 && norm.is_finite()) {
                return Err(Error::InvalidInput(format!(
                    "document {}: the embedding has no direction (zero length)",
                    d.id
                )));
            }
            let metadata = d.metadata.unwrap_or(Value::Null);
            prepared.push(Prepared {
                record: DocRecord {
                    id: d.id.clone(),
                    text: d.text,
                    metadata: metadata.to_string(),
                    embedding,
                    tokens: tokens as u32,
                },
                id: d.id,
                metadata,
                state,
            });
        }
        self.commit(prepared, total_tokens, false)
    }

    /// Writes prepared documents in one transaction, then updates the index and metadata map.
    fn commit(&self, prepared: Vec<Prepared>, tokens: usize, replace: bool) -> Result<InsertReport> {
        let inner = &self.inner;
        let _w = inner.write_lock.lock();
        let mut record = inner.record.read().clone();
        let mut replaced_keys = Vec::new();
        let mut new_keys = Vec::with_capacity(prepared.len());
        let txn = inner.begin_write()?;
        {
            let mut t = WriteTables::open(&txn, &inner.tables)?;
            for p in &prepared {
                let old = t.ids.get(p.id.as_str()).map_err(store::StoreError::from)?.map(|v| v.value());
                if let Some(old) = old {
                    if !replace {
                        // Dropping the transaction without commit discards the whole batch.
                        return Err(Error::DuplicateId(p.id.clone()));
                    }
                    t.remove_doc(old)?;
                    replaced_keys.push(old);
                }
                let key = record.next_key;
                record.next_key += 1;
                t.docs.insert(key, p.record.encode().as_slice()).map_err(store::StoreError::from)?;
                t.ids.insert(p.id.as_str(), key).map_err(store::StoreError::from)?;
                if let Some(s) = &p.state {
                    store::put_state(&mut t.states, key, s)?;
                }
                new_keys.push(key);
            }
            let mut cols = txn.open_table(store::COLLECTIONS).map_err(store::StoreError::from)?;
            cols.insert(record.name.as_str(), store::collection_bytes(&record).as_slice())
                .map_err(store::StoreError::from)?;
        }
        txn.commit().map_err(store::StoreError::from)?;
        *inner.record.write() = record;

        // The store is committed; bring the in-memory index and metadata up to date.
        inner.forget(&replaced_keys);
        {
            let items: Vec<(u64, Vec<f32>)> =
                new_keys.iter().zip(&prepared).map(|(&k, p)| (k, p.record.embedding.clone())).collect();
            inner.index.read().insert_batch(&items)?;
            let mut meta = inner.metadata.write();
            for (k, p) in new_keys.iter().zip(&prepared) {
                meta.insert(*k, Arc::new(p.metadata.clone()));
            }
        }
        self.maybe_rebuild_index_locked()?;
        Ok(InsertReport { ids: prepared.into_iter().map(|p| p.id).collect(), tokens, replaced: replaced_keys.len() })
    }

    /// Deletes documents by id; unknown ids are reported, not an error.
    pub fn delete(&self, ids: &[&str]) -> Result<DeleteReport> {
        let inner = &self.inner;
        let _w = inner.write_lock.lock();
        let mut report = DeleteReport::default();
        let mut keys = Vec::new();
        let txn = inner.begin_write()?;
        {
            let mut t = WriteTables::open(&txn, &inner.tables)?;
            for id in ids {
                let key = t.ids.remove(*id).map_err(store::StoreError::from)?.map(|v| v.value());
                match key {
                    Some(key) => {
                        t.remove_doc(key)?;
                        keys.push(key);
                        report.deleted.push((*id).to_string());
                    }
                    None => report.missing.push((*id).to_string()),
                }
            }
        }
        txn.commit().map_err(store::StoreError::from)?;
        inner.forget(&keys);
        self.maybe_rebuild_index_locked()?;
        Ok(report)
    }

    /// Rebuilds the ANN index from the store when tombstones pass the index's threshold
    /// (the caller holds the write lock).
    fn maybe_rebuild_index_locked(&self) -> Result<()> {
        if !self.inner.index.read().needs_rebuild() {
            return Ok(());
        }
        self.build_index_locked(false)
    }

    /// Rebuilds the ANN index from the stored embeddings. Writers wait meanwhile (a document
    /// committed during the rebuild would be missing from the new index); queries go on.
    pub fn rebuild_index(&self) -> Result<()> {
        let _w = self.inner.write_lock.lock();
        self.build_index_locked(false)
    }

    /// Reads every record into a new index and the metadata map. With `background`, a large
    /// collection (at least [`EXACT_BELOW`] documents) gets a flat index at once (exact searches)
    /// and its graph is built on another thread, then swapped in: opening does not wait for it.
    fn build_index_locked(&self, background: bool) -> Result<()> {
        let inner = &self.inner;
        let r = inner.db.begin_read().map_err(store::StoreError::from)?;
        let docs = r.open_table(inner.tables.docs()).map_err(store::StoreError::from)?;
        let mut items = Vec::new();
        let mut metadata = HashMap::new();
        for e in docs.iter().map_err(store::StoreError::from)? {
            let (k, v) = e.map_err(store::StoreError::from)?;
            // A damaged record stays out of the index (`check` names it).
            if let Ok(rec) = DocRecord::decode(v.value(), || format!("document key {}", k.value())) {
                metadata.insert(k.value(), Arc::new(serde_json::from_str(&rec.metadata).unwrap_or(Value::Null)));
                items.push((k.value(), rec.embedding));
            }
        }
        let params = IndexParams { max_elements: items.len(), ..inner.index.read().params() };
        let dim = inner.shape.width;
        let in_background = background && items.len() >= EXACT_BELOW;
        *inner.metadata.write() = metadata;
        if in_background {
            let flat = AnnIndex::flat(dim, params);
            flat.insert_batch(&items)?;
            *inner.index.write() = flat;
            self.build_graph_in_background(items, params);
        } else {
            *inner.index.write() = AnnIndex::rebuild(items.into_iter(), dim, params)?;
        }
        Ok(())
    }

    /// Builds the HNSW graph of `snapshot` (the entries the current flat index was made from)
    /// on a new thread and swaps it in when done, with whatever writers added or deleted
    /// meanwhile. The thread holds no strong reference to the collection: closing the database
    /// stops it at the next step.
    fn build_graph_in_background(&self, snapshot: Vec<(u64, Vec<f32>)>, params: IndexParams) {
        let weak = Arc::downgrade(&self.inner);
        let dim = self.inner.shape.width;
        let build = move || {
            let base: HashSet<u64> = snapshot.iter().map(|(k, _)| *k).collect();
            let graph = AnnIndex::new(dim, params);
            for step in snapshot.chunks(EXACT_BELOW) {
                if weak.strong_count() == 0 || graph.insert_batch(step).is_err() {
                    return;
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            let _w = inner.write_lock.lock();
            let current = inner.index.read();
            // An explicit rebuild may have installed a graph meanwhile.
            if current.has_graph() || graph.catch_up(&base, &current).is_err() {
                return;
            }
            drop(current);
            *inner.index.write() = graph;
        };
        // Without a thread the flat index keeps answering (exactly); nothing is lost.
        let _ = std::thread::Builder::new().name("rwkvdb-index-build".into()).spawn(build);
    }

    /// Fetches a document by id.
    pub fn get(&self, id: &str) -> Result<Option<Document>> {
        let inner = &self.inner;
        let r = inner.db.begin_read().map_err(store::StoreError::from)?;
        let ids = match r.open_table(inner.tables.ids()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(store::StoreError::from(e).into()),
        };
        let Some(key) = ids.get(id).map_err(store::StoreError::from)?.map(|v| v.value()) else { return Ok(None) };
        let docs = r.open_table(inner.tables.docs()).map_err(store::StoreError::from)?;
        let Some(raw) = docs.get(key).map_err(store::StoreError::from)? else { return Ok(None) };
        let rec = DocRecord::decode(raw.value(), || format!("document {id:?}"))?;
        Ok(Some(Document {
            id: rec.id,
            text: rec.text,
            metadata: serde_json::from_str(&rec.metadata).unwrap_or(Value::Null),
        }))
    }

    /// Runs a query: ANN candidates, then reranking as `opts.rerank` says.
    pub fn query(&self, text: &str, opts: &QueryOptions) -> Result<QueryResult> {
        let inner = &self.inner;
        let mut result = QueryResult::default();
        if opts.top_k == 0 {
            return Ok(result);
        }
        if text.trim().is_empty() {
            return Err(Error::InvalidInput("empty query".into()));
        }
        if opts.candidates.max(opts.top_k) > MAX_CANDIDATES {
            // Memory per query grows with candidates x state size (~2 MB each at the 0.1B shape).
            let what = "query candidates (max of top_k and candidates)".to_string();
            return Err(Error::LimitExceeded { what, value: opts.candidates.max(opts.top_k), max: MAX_CANDIDATES });
        }
        let tok = Tokenizer::world();
        let t0 = Instant::now();
        let qtokens = tok.encode_with_eos(text);
        let model = inner.model()?;
        let mut q = model.runtime.embed(&[&qtokens])?.remove(0);
        normalise(&mut q);
        let t1 = Instant::now();

        let k = opts.candidates.max(opts.top_k);
        let ef = opts.ef.unwrap_or(inner.record.read().config.hnsw_ef_search).max(k);
        let candidates = {
            let meta = inner.metadata.read();
            let index = inner.index.read();
            match &opts.filter {
                Some(f) => {
                    let pred = |key: u64| meta.get(&key).is_some_and(|m| f.matches(m));
                    index.search(&q, k, ef, Some(&pred))?
                }
                None => index.search(&q, k, ef, None)?,
            }
        };
        let t2 = Instant::now();

        // Load records, then (offline rerank) states chunk by chunk, in one read transaction:
        // decoded f32 states are large (~2 MB each at the 0.1B shape), so at most
        // RERANK_CHUNK of them are alive at a time whatever the number of candidates.
        let r = inner.db.begin_read().map_err(store::StoreError::from)?;
        let docs = r.open_table(inner.tables.docs()).map_err(store::StoreError::from)?;
        let mut rows: Vec<(u64, DocRecord, f32)> = Vec::with_capacity(candidates.len());
        for (key, sim) in candidates {
            let Some(raw) = docs.get(key).map_err(store::StoreError::from)? else { continue };
            match DocRecord::decode(raw.value(), || format!("document key {key}")) {
                Ok(rec) => rows.push((key, rec, sim)),
                Err(e) => result.skipped.push((format!("key {key}"), e.to_string())),
            }
        }
        drop(docs);
        let t3 = Instant::now();
        let mut load_time = t3 - t2;

        let logits: Option<Vec<f32>> = match (opts.rerank, &inner.codec) {
            (Rerank::None, _) => None,
            _ if !model.runtime.has_reranker() => return Err(Error::Config("this collection has no reranker".into())),
            _ if rows.is_empty() => Some(Vec::new()),
            (Rerank::Offline, Some(codec)) => {
                let states_t = r.open_table(inner.tables.states()).map_err(store::StoreError::from)?;
                let q = tok.encode_with_eos(&offline_query_text(text));
                let mut logits = Vec::with_capacity(rows.len());
                let mut usable = Vec::with_capacity(rows.len());
                for chunk in rows.chunks(RERANK_CHUNK) {
                    let t = Instant::now();
                    let mut states = Vec::with_capacity(chunk.len());
                    for (key, rec, _) in chunk {
                        let decoded = match store::get_state(&states_t, *key)? {
                            Some(blob) => codec.decode(&blob).map_err(|e| format!("state: {e}")),
                            None => Err("state missing".to_string()),
                        };
                        usable.push(decoded.is_ok());
                        match decoded {
                            Ok(s) => states.push(s),
                            Err(reason) => result.skipped.push((rec.id.clone(), reason)),
                        }
                    }
                    load_time += t.elapsed();
                    let queries = vec![q.as_slice(); states.len()];
                    logits.extend(model.runtime.resume_and_score(states, &queries)?);
                }
                let mut keep = usable.into_iter();
                rows.retain(|_| keep.next().unwrap_or(false));
                Some(logits)
            }
            _ => {
                let seqs: Vec<Vec<u32>> =
                    rows.iter().map(|r| tok.encode_with_eos(&online_text(&r.1.text, text))).collect();
                let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
                Some(model.runtime.online_scores(&refs)?)
            }
        };
        drop(r);
        let t4 = Instant::now();

        let mut hits: Vec<Hit> = rows
            .into_iter()
            .enumerate()
            .map(|(i, (_, rec, sim))| {
                let logit = logits.as_ref().map(|l| l[i]);
                Hit {
                    id: rec.id,
                    similarity: sim,
                    logit,
                    probability: logit.map(sigmoid),
                    text: rec.text,
                    metadata: serde_json::from_str(&rec.metadata).unwrap_or(Value::Null),
                }
            })
            .collect();
        hits.sort_by(|a, b| {
            let ka = a.logit.unwrap_or(a.similarity);
            let kb = b.logit.unwrap_or(b.similarity);
            kb.total_cmp(&ka)
        });
        hits.truncate(opts.top_k);
        result.hits = hits;
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let load_ms = load_time.as_secs_f64() * 1e3;
        result.timings_ms = [ms(t0, t1), ms(t1, t2), load_ms, ms(t2, t4) - load_ms];
        Ok(result)
    }
}

/// Collection statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionStats {
    /// Collection name.
    pub name: String,
    /// Live documents.
    pub documents: u64,
    /// Mean bytes of a document record (text, metadata, embedding).
    pub doc_bytes_per_document: f64,
    /// Mean bytes of an encoded state.
    pub state_bytes_per_document: f64,
    /// Mean tokens per document.
    pub tokens_per_document: f64,
    /// State precision preset.
    pub state_preset: String,
    /// Embedder layers kept per state, and the layers the reranker reads.
    pub state_layers: usize,
    /// See `state_layers`.
    pub reranker_layers: Vec<usize>,
    /// HNSW parameters: M, ef_construction, ef_search.
    pub hnsw: [usize; 3],
    /// Entries and tombstones in the ANN index.
    pub index_entries: usize,
    /// See `index_entries`.
    pub index_tombstones: usize,
    /// False while the HNSW graph of a large collection is still being built after opening;
    /// searches are exact scans meanwhile.
    pub index_graph_ready: bool,
    /// Model fingerprint.
    pub fingerprint: String,
    /// On-disk format version.
    pub format_version: u32,
}

/// What `check` found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckReport {
    /// Documents examined.
    pub documents: u64,
    /// One line per problem, naming the document.
    pub problems: Vec<String>,
    /// Ids of damaged documents.
    pub damaged_ids: Vec<String>,
}

impl Collection {
    /// Whether a document with this id exists.
    pub fn contains(&self, id: &str) -> Result<bool> {
        let r = self.inner.db.begin_read().map_err(store::StoreError::from)?;
        let t = r.open_table(self.inner.tables.ids()).map_err(store::StoreError::from)?;
        Ok(t.get(id).map_err(store::StoreError::from)?.is_some())
    }

    /// Sizes, counts and parameters.
    pub fn stats(&self) -> Result<CollectionStats> {
        let inner = &self.inner;
        let r = inner.db.begin_read().map_err(store::StoreError::from)?;
        let docs = r.open_table(inner.tables.docs()).map_err(store::StoreError::from)?;
        let states = r.open_table(inner.tables.states()).map_err(store::StoreError::from)?;
        let (mut n, mut doc_bytes, mut tokens) = (0u64, 0u64, 0u64);
        for e in docs.iter().map_err(store::StoreError::from)? {
            let (_, v) = e.map_err(store::StoreError::from)?;
            n += 1;
            doc_bytes += v.value().len() as u64;
            if let Ok(rec) = DocRecord::decode(v.value(), String::new) {
                tokens += u64::from(rec.tokens);
            }
        }
        let mut state_bytes = 0u64;
        for e in states.iter().map_err(store::StoreError::from)? {
            let (_, piece) = e.map_err(store::StoreError::from)?;
            state_bytes += piece.value().len() as u64;
        }
        let per = |x: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let rec = inner.record.read().clone();
        let index = inner.index.read();
        Ok(CollectionStats {
            name: rec.name,
            documents: n,
            doc_bytes_per_document: per(doc_bytes),
            state_bytes_per_document: per(state_bytes),
            tokens_per_document: per(tokens),
            state_preset: rec.config.state_preset.clone(),
            state_layers: inner.shape.state_layers,
            reranker_layers: inner.shape.reranker_layers.clone(),
            hnsw: [rec.config.hnsw_m, rec.config.hnsw_ef_construction, rec.config.hnsw_ef_search],
            index_entries: index.len(),
            index_tombstones: index.tombstones(),
            index_graph_ready: index.has_graph(),
            fingerprint: rec.fingerprint,
            format_version: store::FORMAT_VERSION,
        })
    }

    /// Verifies every record's checksum, every state, and that ids, documents and the ANN index
    /// agree. Damage is reported with the affected ids; nothing is modified.
    pub fn check(&self) -> Result<CheckReport> {
        let inner = &self.inner;
        let mut report = CheckReport::default();
        let r = inner.db.begin_read().map_err(store::StoreError::from)?;
        let docs = r.open_table(inner.tables.docs()).map_err(store::StoreError::from)?;
        let ids = r.open_table(inner.tables.ids()).map_err(store::StoreError::from)?;
        let states = r.open_table(inner.tables.states()).map_err(store::StoreError::from)?;
        let mut keys_by_ids = HashMap::new();
        for e in ids.iter().map_err(store::StoreError::from)? {
            let (k, v) = e.map_err(store::StoreError::from)?;
            keys_by_ids.insert(v.value(), k.value().to_string());
        }
        let mut doc_keys = HashSet::new();
        // Readable records are the ones the index holds (a damaged one cannot be indexed).
        let mut readable = 0;
        for e in docs.iter().map_err(store::StoreError::from)? {
            let (k, v) = e.map_err(store::StoreError::from)?;
            let key = k.value();
            doc_keys.insert(key);
            report.documents += 1;
            let id = keys_by_ids.get(&key).cloned().unwrap_or_else(|| format!("key {key}"));
            let mut damaged = false;
            match DocRecord::decode(v.value(), || format!("document {id:?}")) {
                Ok(rec) if rec.id != id => {
                    report.problems.push(format!("document {id:?}: record holds id {:?}", rec.id));
                    damaged = true;
                    readable += 1;
                }
                Ok(_) => readable += 1,
                Err(e) => {
                    report.problems.push(e.to_string());
                    damaged = true;
                }
            }
            if let Some(codec) = &inner.codec {
                match store::get_state(&states, key)? {
                    Some(blob) => {
                        if let Err(e) = codec.decode(&blob) {
                            report.problems.push(format!("state of document {id:?}: {e}"));
                            damaged = true;
                        }
                    }
                    None => {
                        report.problems.push(format!("document {id:?} has no state"));
                        damaged = true;
                    }
                }
            }
            if !keys_by_ids.contains_key(&key) {
                report.problems.push(format!("document key {key} has no id entry"));
            }
            if damaged {
                report.damaged_ids.push(id);
            }
        }
        for (key, id) in &keys_by_ids {
            if !doc_keys.contains(key) {
                report.problems.push(format!("id {id:?} points to missing document key {key}"));
            }
        }
        let live = inner.index.read().len();
        if live != readable {
            report.problems.push(format!("ANN index holds {live} entries, the store {readable} readable documents"));
        }
        Ok(report)
    }
}

/// Checks a batch against the limits and returns its ids (given or generated): no empty text,
/// no empty or repeated id, nothing over [`MAX_BATCH_DOCS`], [`MAX_ID_BYTES`],
/// [`MAX_TEXT_BYTES`] or [`MAX_METADATA_BYTES`].
fn batch_ids<'a>(
    docs: impl ExactSizeIterator<Item = (Option<&'a str>, &'a str, Option<&'a Value>)>,
) -> Result<Vec<String>> {
    // The error text is only built when a limit is exceeded.
    let limit = |value: usize, max: usize, what: &dyn Fn() -> String| {
        if value > max {
            Err(Error::LimitExceeded { what: what(), value, max })
        } else {
            Ok(())
        }
    };
    limit(docs.len(), MAX_BATCH_DOCS, &|| "documents in one batch".into())?;
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for (i, (id, text, metadata)) in docs.enumerate() {
        let name = || format!("document {} (batch position {i})", id.unwrap_or("?"));
        if text.trim().is_empty() {
            return Err(Error::InvalidInput(format!("{} has empty text", name())));
        }
        limit(text.len(), MAX_TEXT_BYTES, &|| format!("{}: text bytes", name()))?;
        if let Some(m) = metadata {
            limit(m.to_string().len(), MAX_METADATA_BYTES, &|| format!("{}: metadata JSON bytes", name()))?;
        }
        let id = match id {
            Some("") => return Err(Error::InvalidInput(format!("batch position {i}: empty id"))),
            Some(id) => {
                limit(id.len(), MAX_ID_BYTES, &|| format!("batch position {i}: id bytes"))?;
                id.to_string()
            }
            None => generate_id(),
        };
        if !seen.insert(id.clone()) {
            return Err(Error::DuplicateId(id));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// A random 128-bit hex id for documents inserted without one.
fn generate_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
