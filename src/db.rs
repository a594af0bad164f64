//! The database: one redb file holding any number of collections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use redb::{Database as RedbDatabase, ReadableTable};

use crate::checkpoint;
use crate::collection::{Collection, CollectionConfig};
use crate::error::{Error, Result};
use crate::model::{EmbedderWeights, RerankerWeights, Runtime, RuntimeOptions};
use crate::store::{self, CollectionRecord, CollectionTables};

/// Options for [`Database::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the file if it does not exist (default true).
    pub create: bool,
    /// Durable commits: an acknowledged write survives a crash or power loss (default true).
    /// `false` is a faster bulk-load mode: a crash may lose the batches since the last durable
    /// commit (never half of one); every 16th write is durable (`collection::DURABLE_EVERY`).
    pub durable: bool,
    /// Model runtime options (ONNX Runtime location, threads, device).
    pub runtime: RuntimeOptions,
    /// redb's page cache, in bytes (default 256 MiB). Reads of state blobs and records go
    /// through it; it is most of a long-running process's memory beyond the model.
    pub cache_bytes: usize,
    /// Override model file locations recorded in collections (e.g. after moving the files).
    /// Keys are the recorded paths. The fingerprint check still applies.
    pub model_paths: HashMap<PathBuf, PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            create: true,
            durable: true,
            cache_bytes: 256 << 20,
            runtime: RuntimeOptions::default(),
            model_paths: HashMap::new(),
        }
    }
}

fn file_err(p: &Path) -> impl FnOnce(checkpoint::CheckpointError) -> Error + '_ {
    move |source| Error::ModelFile { path: p.to_path_buf(), source }
}

/// Embedder and reranker paths identifying a loaded model.
type ModelKey = (PathBuf, Option<PathBuf>);

/// A loaded model pair and its fingerprint, shared by the collections that use it.
struct LoadedModel {
    runtime: Arc<Runtime>,
    weights_hash: String,
}

/// An open rwkvdb database file. `Send + Sync`: share it with `Arc`.
pub struct Database {
    path: PathBuf,
    db: Arc<RedbDatabase>,
    opts: OpenOptions,
    models: Mutex<HashMap<ModelKey, Arc<LoadedModel>>>,
    open: Mutex<HashMap<String, Collection>>,
}

impl Database {
    /// Opens (or creates) a database file.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = store::open_file(&path, opts.create, opts.cache_bytes)?;
        Ok(Self { path, db: Arc::new(db), opts, models: Mutex::new(HashMap::new()), open: Mutex::new(HashMap::new()) })
    }

    /// Opens (or initialises) a database over a custom redb storage backend, e.g. one that
    /// injects I/O faults in tests. `label` stands for the path in errors and compaction is not
    /// available. After any I/O error the handle must be dropped and the database reopened.
    pub fn open_with_backend(
        label: impl AsRef<Path>,
        backend: impl redb::StorageBackend,
        opts: OpenOptions,
    ) -> Result<Self> {
        let path = label.as_ref().to_path_buf();
        let db = store::open_backend(backend, &path, opts.cache_bytes)?;
        Ok(Self { path, db: Arc::new(db), opts, models: Mutex::new(HashMap::new()), open: Mutex::new(HashMap::new()) })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        self.opts.model_paths.get(p).cloned().unwrap_or_else(|| p.to_path_buf())
    }

    fn load_model(&self, embedder: &Path, reranker: Option<&Path>) -> Result<Arc<LoadedModel>> {
        let key = (embedder.to_path_buf(), reranker.map(Path::to_path_buf));
        if let Some(m) = self.models.lock().get(&key) {
            return Ok(m.clone());
        }
        let e_sd = checkpoint::load(embedder).map_err(file_err(embedder))?;
        let emb = EmbedderWeights::from_state_dict(&e_sd).map_err(file_err(embedder))?;
        drop(e_sd);
        let rr = match reranker {
            Some(p) => {
                let sd = checkpoint::load(p).map_err(file_err(p))?;
                Some(RerankerWeights::from_state_dict(&sd).map_err(file_err(p))?)
            }
            None => None,
        };
        let weights_hash = crate::fingerprint::weights(&emb, rr.as_ref());
        let runtime = Arc::new(Runtime::new(emb, rr, &self.opts.runtime)?);
        let m = Arc::new(LoadedModel { runtime, weights_hash });
        self.models.lock().insert(key, m.clone());
        Ok(m)
    }

    /// Creates a collection; the model files are loaded and fingerprinted now.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!("invalid collection name {name:?}")));
        }
        if crate::codec::Preset::parse(&config.state_preset).is_none() {
            return Err(Error::Config(format!("unknown state preset {:?}", config.state_preset)));
        }
        let model = self.load_model(
            &self.resolve(&config.embedder),
            config.reranker.as_deref().map(|p| self.resolve(p)).as_deref(),
        )?;
        let fingerprint = crate::fingerprint::collection(&model.weights_hash, &config, &model.runtime);
        let txn = self.db.begin_write().map_err(store::StoreError::from)?;
        let record = {
            let mut cols = txn.open_table(store::COLLECTIONS).map_err(store::StoreError::from)?;
            if cols.get(name).map_err(store::StoreError::from)?.is_some() {
                return Err(Error::CollectionExists(name.to_string()));
            }
            let mut meta = txn.open_table(store::META).map_err(store::StoreError::from)?;
            let next_id = meta
                .get("next_collection_id")
                .map_err(store::StoreError::from)?
                .and_then(|v| v.value().get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes))
                .unwrap_or(1);
            meta.insert("next_collection_id", (next_id + 1).to_le_bytes().as_slice())
                .map_err(store::StoreError::from)?;
            let record = CollectionRecord { id: next_id, name: name.to_string(), config, fingerprint, next_key: 1 };
            cols.insert(name, store::collection_bytes(&record).as_slice()).map_err(store::StoreError::from)?;
            let t = CollectionTables::new(next_id);
            txn.open_table(t.docs()).map_err(store::StoreError::from)?;
            txn.open_table(t.ids()).map_err(store::StoreError::from)?;
            txn.open_table(t.states()).map_err(store::StoreError::from)?;
            record
        };
        txn.commit().map_err(store::StoreError::from)?;
        let c = Collection::open(self.db.clone(), record, model.runtime.clone(), self.opts.durable)?;
        self.open.lock().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Opens an existing collection, checking its model fingerprint.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        if let Some(c) = self.open.lock().get(name) {
            return Ok(c.clone());
        }
        let record = store::get_collection(&self.db, name)?.ok_or_else(|| Error::NoSuchCollection(name.to_string()))?;
        let cfg = &record.config;
        let model =
            self.load_model(&self.resolve(&cfg.embedder), cfg.reranker.as_deref().map(|p| self.resolve(p)).as_deref())?;
        let found = crate::fingerprint::collection(&model.weights_hash, cfg, &model.runtime);
        if found != record.fingerprint {
            return Err(Error::ModelMismatch {
                collection: name.to_string(),
                expected: record.fingerprint.clone(),
                found,
            });
        }
        let c = Collection::open(self.db.clone(), record, model.runtime.clone(), self.opts.durable)?;
        self.open.lock().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Names and configurations of all collections.
    pub fn list_collections(&self) -> Result<Vec<CollectionRecord>> {
        Ok(store::list_collections(&self.db)?)
    }

    /// Drops a collection and all its data.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let record = store::get_collection(&self.db, name)?.ok_or_else(|| Error::NoSuchCollection(name.to_string()))?;
        let t = CollectionTables::new(record.id);
        let txn = self.db.begin_write().map_err(store::StoreError::from)?;
        {
            let mut cols = txn.open_table(store::COLLECTIONS).map_err(store::StoreError::from)?;
            cols.remove(name).map_err(store::StoreError::from)?;
        }
        txn.delete_table(t.docs()).map_err(store::StoreError::from)?;
        txn.delete_table(t.ids()).map_err(store::StoreError::from)?;
        txn.delete_table(t.states()).map_err(store::StoreError::from)?;
        txn.commit().map_err(store::StoreError::from)?;
        self.open.lock().remove(name);
        Ok(())
    }

    /// Compacts a database file (no other handle may have it open): redb reclaims free pages.
    pub fn compact_file(path: impl AsRef<Path>) -> Result<bool> {
        let path = path.as_ref();
        let mut db = store::open_file(path, false, OpenOptions::default().cache_bytes)?;
        let done = db.compact().map_err(|e| store::StoreError::Redb(e.into()))?;
        Ok(done)
    }
}
