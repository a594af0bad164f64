//! Collections: the handle, and the pipelines by concern.
//!
//! - `insert`: validate → tokenize → embed → offline state of the rerank index text (resumed
//!   from the cached template-prefix state) → encode → one write transaction → index update.
//! - `query`: embed → ANN candidates (filter and tombstones applied inside the search) → load
//!   records and states → rerank → assemble.
//! - `maintenance`: statistics, integrity check, index (re)builds.
//! - `import`: reading JSONL files and folders, and the resumable bulk import.

mod import;
mod insert;
mod maintenance;
mod query;
mod snapshot;
mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

pub use import::{read_folder, read_jsonl, ImportProblem, JsonlDocuments};
pub use snapshot::CheckpointReport;
pub use types::{
    CheckReport, CollectionStats, DeleteReport, Document, Hit, HnswSettings, ImportOptions, ImportProgress,
    ImportReport, IndexStatus, InsertReport, NewDocument, PrecomputedDocument, QueryOptions, QueryResult, Rerank,
    Skipped, Timings,
};

use crate::codec::{Preset, StateCodec};
use crate::db::{LoadedModel, ModelRegistry};
use crate::error::{Error, Result};
use crate::index::{AnnIndex, IndexParams};
use crate::model::{ModelShape, Runtime};
use crate::store::{
    CollectionConfig, CollectionReader, CollectionRecord, CollectionTables, CollectionWriter, Store, StoreError,
};

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
/// Upper bound on `top_k`, `candidates` and `ef` of one query.
pub const MAX_CANDIDATES: usize = 10_000;
/// Documents whose f32 states are alive together, in a query's rerank (decode + resume) and in
/// an insert (compute + encode): bounds memory to `RERANK_CHUNK` decoded states (~2 MB each at
/// the 0.1B shape) whatever the number of candidates or the batch size.
pub const RERANK_CHUNK: usize = 128;

/// A handle to an open collection; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Collection {
    inner: Arc<CollectionInner>,
}

/// Shared state of an open collection.
struct CollectionInner {
    store: Arc<Store>,
    record: RwLock<CollectionRecord>,
    tables: CollectionTables,
    /// The model, loaded on first use (see [`CollectionInner::model`]).
    model: ModelSlot,
    /// The model's shape, known without loading it.
    shape: ModelShape,
    /// The state codec (`None` without a reranker: no states are kept).
    codec: Option<StateCodec>,
    index: RwLock<AnnIndex>,
    /// Metadata of live documents, for filters evaluated inside the ANN search.
    metadata: RwLock<HashMap<u64, Arc<Value>>>,
    /// Serialises writers (redb allows one write transaction at a time anyway).
    write_lock: Mutex<()>,
    durable: bool,
    /// Write transactions begun; in non-durable mode every `DURABLE_EVERY`th is durable.
    writes: AtomicU32,
    /// Bumped whenever `index` is replaced: a background build swaps its graph in only if the
    /// index it was built from is still the current one.
    index_generation: AtomicU64,
    /// Whether a background graph build is running (at most one at a time).
    rebuilding: AtomicBool,
    /// Documents inserted or deleted since the collection opened (and replayed into a loaded
    /// index): compared with [`snapshot::SavedIndex`] to know whether the saved index is current.
    changes: AtomicU64,
    /// The saved index as of the last save or load.
    saved: Mutex<snapshot::SavedIndex>,
    /// Serialises saves.
    saving: Mutex<()>,
    /// Whether a background save is running (shared with its thread, which clears it after
    /// dropping its handle: see [`Collection::wait_for_background_save`]).
    saving_in_background: Arc<AtomicBool>,
    /// Where the index came from when the collection opened (for `stats`).
    index_origin: RwLock<String>,
}

/// A collection's model: nothing until the first call that needs it.
struct ModelSlot {
    registry: Arc<ModelRegistry>,
    ready: OnceLock<ReadyModel>,
    init: Mutex<()>,
}

/// A loaded, fingerprint-checked model and the collection's prefix states.
struct ReadyModel {
    runtime: Arc<Runtime>,
    prefix: Option<insert::PrefixCache>,
}

impl ReadyModel {
    fn new(loaded: &LoadedModel) -> Result<Self> {
        let runtime = loaded.runtime.clone();
        let prefix = if runtime.has_reranker() { Some(insert::PrefixCache::build(&runtime)?) } else { None };
        Ok(Self { runtime, prefix })
    }
}

impl CollectionInner {
    /// The collection's model, loaded and checked against the stored fingerprint on first use.
    /// A failure (files missing, different model) is returned every time until it is fixed.
    fn model(&self) -> Result<&ReadyModel> {
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

    /// A read snapshot of the collection's tables.
    fn read(&self) -> Result<CollectionReader> {
        self.store.read(&self.tables).map_err(|e| {
            // Tables gone because the collection was dropped after this handle opened.
            let name = self.record.read().name.clone();
            match self.store.collection(&name) {
                Ok(Some(r)) if r.id == self.tables.id => Error::Store(e),
                Ok(_) => Error::NoSuchCollection(name),
                Err(_) => Error::Store(e),
            }
        })
    }

    /// Runs `f` in one write transaction (committed if it returns `Ok`) with the database's
    /// durability setting. In non-durable mode every [`DURABLE_EVERY`]th transaction is durable
    /// anyway: that bounds what a crash can lose, and redb only reuses pages freed since the
    /// last durable commit after the next one.
    fn write<T>(&self, f: impl FnOnce(&mut CollectionWriter<'_>) -> Result<T>) -> Result<T> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let durable = self.durable || n % DURABLE_EVERY == 0;
        self.store.write(&self.tables, durable, f).map_err(|e| self.dropped_is_missing(e))
    }

    /// A write refused because the collection was dropped since this handle opened is, to the
    /// caller, a collection that no longer exists.
    fn dropped_is_missing(&self, e: Error) -> Error {
        match e {
            Error::Store(StoreError::CollectionDropped { .. }) => {
                Error::NoSuchCollection(self.record.read().name.clone())
            }
            e => e,
        }
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

impl Collection {
    /// Opens a collection over its stored records. `loaded` is the model when the caller has
    /// it already (creation, or a record without a stored shape); otherwise it loads on first use.
    pub(crate) fn open(
        store: Arc<Store>,
        record: CollectionRecord,
        registry: Arc<ModelRegistry>,
        loaded: Option<&LoadedModel>,
        durable: bool,
    ) -> Result<Self> {
        let tables = CollectionTables::new(record.id);
        let ready = loaded.map(ReadyModel::new).transpose()?;
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
            store,
            record: RwLock::new(record),
            tables,
            model: slot,
            index: RwLock::new(AnnIndex::new(shape.width, params)),
            shape,
            codec,
            metadata: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            durable,
            writes: AtomicU32::new(0),
            index_generation: AtomicU64::new(0),
            rebuilding: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            saved: Mutex::new(snapshot::SavedIndex::default()),
            saving: Mutex::new(()),
            saving_in_background: Arc::new(AtomicBool::new(false)),
            index_origin: RwLock::new(String::new()),
        };
        let c = Self { inner: Arc::new(inner) };
        // The index and the metadata map come from the stored records (nothing is re-embedded):
        // the store is the source of truth, so after a crash they agree with what was committed.
        c.build_index_locked(true)?;
        Ok(c)
    }

    /// The collection's name.
    #[must_use]
    pub fn name(&self) -> String {
        self.inner.record.read().name.clone()
    }

    /// The stored configuration.
    #[must_use]
    pub fn config(&self) -> CollectionConfig {
        self.inner.record.read().config.clone()
    }

    /// Model fingerprint the collection was created with.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        self.inner.record.read().fingerprint.clone()
    }

    /// The model runtime serving this collection (loaded now if it was not yet).
    pub fn runtime(&self) -> Result<Arc<Runtime>> {
        Ok(self.inner.model()?.runtime.clone())
    }

    /// Whether the model has been loaded (it loads on the first insert, query or `runtime()`).
    #[must_use]
    pub fn model_loaded(&self) -> bool {
        self.inner.model.ready.get().is_some()
    }

    /// Number of stored documents.
    pub fn count(&self) -> Result<u64> {
        Ok(self.inner.read()?.count()?)
    }

    /// Whether a document with this id exists.
    pub fn contains(&self, id: &str) -> Result<bool> {
        Ok(self.inner.read()?.key_of(id)?.is_some())
    }

    /// Fetches a document by id.
    pub fn get(&self, id: &str) -> Result<Option<Document>> {
        let r = self.inner.read()?;
        let Some(key) = r.key_of(id)? else { return Ok(None) };
        let Some(rec) = r.doc(key)? else { return Ok(None) };
        Ok(Some(Document { id: rec.id, metadata: parse_metadata(&rec.metadata), text: rec.text }))
    }
}

/// Stored metadata JSON as a value (`null` if it does not parse: the record's checksum passed,
/// so that cannot happen short of a bug).
fn parse_metadata(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}
