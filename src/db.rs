//! The database: one redb file holding any number of collections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::collection::Collection;
use crate::error::{Error, Result};
use crate::model::{weight_cache, ModelShape, Precision, Runtime, RuntimeOptions};
use crate::store::{CollectionConfig, CollectionRecord, Store};

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

/// `p` made absolute against the working directory (unchanged if that cannot be read).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Embedder and reranker paths and the precision identifying a loaded model.
type ModelKey = (PathBuf, Option<PathBuf>, Precision);

/// A loaded model pair and its fingerprint, shared by the collections that use it.
pub(crate) struct LoadedModel {
    pub runtime: Arc<Runtime>,
    pub weights_hash: String,
}

/// The models of one database handle: loaded on first use, shared by collections.
pub(crate) struct ModelRegistry {
    runtime: RuntimeOptions,
    model_paths: HashMap<PathBuf, PathBuf>,
    loaded: Mutex<HashMap<ModelKey, Arc<LoadedModel>>>,
    /// Serialises loads, so two threads needing the same model prepare it once.
    loading: Mutex<()>,
}

impl ModelRegistry {
    pub(crate) fn new(opts: &OpenOptions) -> Self {
        Self {
            runtime: opts.runtime.clone(),
            model_paths: opts.model_paths.clone(),
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        self.model_paths.get(p).cloned().unwrap_or_else(|| p.to_path_buf())
    }

    /// The model a configuration names (paths resolved through `model_paths`).
    pub(crate) fn load(&self, cfg: &CollectionConfig) -> Result<Arc<LoadedModel>> {
        let embedder = self.resolve(&cfg.embedder);
        let reranker = cfg.reranker.as_deref().map(|p| self.resolve(p));
        let key = (embedder, reranker, cfg.precision);
        if let Some(m) = self.loaded.lock().get(&key) {
            return Ok(m.clone());
        }
        let _one_at_a_time = self.loading.lock();
        if let Some(m) = self.loaded.lock().get(&key) {
            return Ok(m.clone());
        }
        let (prepared, _) = weight_cache::load(&self.runtime.cache, &key.0, key.1.as_deref(), key.2)?;
        let weights_hash = prepared.meta().weights_hash.clone();
        let runtime = Arc::new(Runtime::from_prepared(Arc::new(prepared), &self.runtime)?);
        let m = Arc::new(LoadedModel { runtime, weights_hash });
        self.loaded.lock().insert(key, m.clone());
        Ok(m)
    }

    /// The model of a stored collection, refused unless its fingerprint is the recorded one.
    pub(crate) fn load_checked(&self, record: &CollectionRecord) -> Result<Arc<LoadedModel>> {
        let model = self.load(&record.config)?;
        let found = crate::fingerprint::collection(&model.weights_hash, &record.config, &model.runtime);
        if found != record.fingerprint {
            return Err(Error::ModelMismatch {
                collection: record.name.clone(),
                expected: record.fingerprint.clone(),
                found,
            });
        }
        Ok(model)
    }
}

/// An open rwkvdb database file. `Send + Sync`: share it with `Arc`.
pub struct Database {
    store: Arc<Store>,
    opts: OpenOptions,
    models: Arc<ModelRegistry>,
    open: Mutex<HashMap<String, Collection>>,
}

impl Database {
    /// Opens (or creates) a database file.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let store = Store::open(path.as_ref(), opts.create, opts.cache_bytes)?;
        Ok(Self::with_store(store, opts))
    }

    /// Opens (or initialises) a database over a custom redb storage backend, e.g. one that
    /// injects I/O faults in tests. `label` stands for the path in errors and compaction is not
    /// available. After any I/O error the handle must be dropped and the database reopened.
    pub fn open_with_backend(
        label: impl AsRef<Path>,
        backend: impl redb::StorageBackend,
        opts: OpenOptions,
    ) -> Result<Self> {
        let store = Store::open_backend(backend, label.as_ref(), opts.cache_bytes)?;
        Ok(Self::with_store(store, opts))
    }

    fn with_store(store: Store, opts: OpenOptions) -> Self {
        let models = Arc::new(ModelRegistry::new(&opts));
        Self { store: Arc::new(store), opts, models, open: Mutex::new(HashMap::new()) }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Creates a collection; the model files are loaded and fingerprinted now, and their paths
    /// recorded as absolute paths.
    pub fn create_collection(&self, name: &str, mut config: CollectionConfig) -> Result<Collection> {
        // Model paths are stored absolute, so the collection opens from any working directory.
        config.embedder = absolute(&config.embedder);
        config.reranker = config.reranker.as_deref().map(absolute);
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!("invalid collection name {name:?}")));
        }
        if crate::codec::Preset::parse(&config.state_preset).is_none() {
            let names: Vec<&str> = crate::codec::Preset::ALL.iter().map(|p| p.name()).collect();
            return Err(Error::Config(format!(
                "unknown state preset {:?} (choose one of: {})",
                config.state_preset,
                names.join(", ")
            )));
        }
        let model = self.models.load(&config)?;
        let shape = ModelShape::of(&model.runtime);
        let fingerprint = crate::fingerprint::collection(&model.weights_hash, &config, &model.runtime);
        let record = self
            .store
            .create_collection(name, |id| CollectionRecord {
                id,
                name: name.to_string(),
                config,
                fingerprint,
                next_key: 1,
                shape: Some(shape),
            })?
            .ok_or_else(|| Error::CollectionExists(name.to_string()))?;
        let c = Collection::open(self.store.clone(), record, self.models.clone(), Some(&model), self.opts.durable)?;
        self.open.lock().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Opens the collection `name`, creating it with `config` if it does not exist (`config` is
    /// not compared with an existing collection's: use [`Collection::config`] for that).
    pub fn get_or_create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        match self.collection(name) {
            Err(Error::NoSuchCollection(_)) => match self.create_collection(name, config) {
                // Another thread or process created it in between.
                Err(Error::CollectionExists(_)) => self.collection(name),
                other => other,
            },
            other => other,
        }
    }

    /// Points a collection at moved or copied model files. The files are loaded and must give
    /// the fingerprint the collection was created with (`ModelMismatch` otherwise; nothing is
    /// changed); their absolute paths are then recorded. Handles opened before keep the old
    /// paths: open the collection again.
    pub fn set_model_paths(&self, name: &str, embedder: &Path, reranker: Option<&Path>) -> Result<()> {
        let mut record = self.store.collection(name)?.ok_or_else(|| Error::NoSuchCollection(name.to_string()))?;
        if record.config.reranker.is_some() != reranker.is_some() {
            let has = if record.config.reranker.is_some() { "has" } else { "has no" };
            return Err(Error::InvalidInput(format!(
                "collection {name:?} {has} a reranker: give --reranker exactly when it has one"
            )));
        }
        record.config.embedder = absolute(embedder);
        record.config.reranker = reranker.map(absolute);
        // Checked against the stored fingerprint with the new paths, without any remapping.
        let direct = ModelRegistry::new(&OpenOptions { runtime: self.opts.runtime.clone(), ..OpenOptions::default() });
        direct.load_checked(&record)?;
        if !self.store.update_collection(&record)? {
            return Err(Error::NoSuchCollection(name.to_string()));
        }
        self.open.lock().remove(name);
        Ok(())
    }

    /// Opens an existing collection. Its model is loaded (and its fingerprint checked) on the
    /// first call that needs it: insert, query, embed. Reading, deleting, `stats` and `check`
    /// never load it, so they work when the model files are absent.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        if let Some(c) = self.open.lock().get(name) {
            return Ok(c.clone());
        }
        let record = self.store.collection(name)?.ok_or_else(|| Error::NoSuchCollection(name.to_string()))?;
        // Collections from before the shape was recorded need the model to open.
        let model = if record.shape.is_none() { Some(self.models.load_checked(&record)?) } else { None };
        let c = Collection::open(self.store.clone(), record, self.models.clone(), model.as_deref(), self.opts.durable)?;
        self.open.lock().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Names and configurations of all collections.
    pub fn list_collections(&self) -> Result<Vec<CollectionRecord>> {
        Ok(self.store.collections()?)
    }

    /// Drops a collection and all its data.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        if !self.store.drop_collection(name)? {
            return Err(Error::NoSuchCollection(name.to_string()));
        }
        self.open.lock().remove(name);
        Ok(())
    }

    /// Saves the ANN index of every collection this handle opened whose saved copy is not
    /// current (see [`Collection::checkpoint`]), then closes the database. Dropping the handle
    /// does the same but cannot report errors.
    pub fn close(self) -> Result<()> {
        self.save_indexes()
    }

    fn save_indexes(&self) -> Result<()> {
        let open: Vec<Collection> = self.open.lock().values().cloned().collect();
        let mut first_error = None;
        for c in open {
            // A graph still being built is not waited for: the next open builds it again.
            c.wait_for_background_save();
            if let Err(e) = c.save_index_on_close() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Compacts a database file (no other handle may have it open): saves every collection's
    /// ANN index first (waiting for graphs still being built), then redb reclaims free pages.
    pub fn compact_file(path: impl AsRef<Path>) -> Result<bool> {
        let path = path.as_ref();
        {
            let db = match Self::open(path, OpenOptions { create: false, ..OpenOptions::default() }) {
                Err(Error::Store(crate::store::StoreError::Locked { .. })) => {
                    return Err(crate::store::StoreError::NeedsExclusiveAccess {
                        path: path.to_path_buf(),
                        operation: "compaction",
                    }
                    .into())
                }
                other => other?,
            };
            for record in db.list_collections()? {
                // A collection that cannot open (its model needed and missing) keeps its old copy.
                if let Ok(c) = db.collection(&record.name) {
                    c.checkpoint()?;
                }
            }
        }
        Ok(Store::compact_file(path, OpenOptions::default().cache_bytes)?)
    }
}

impl Drop for Database {
    /// Saves the ANN indexes that changed (errors are dropped: use [`Database::close`] to see them).
    fn drop(&mut self) {
        let _ = self.save_indexes();
    }
}
