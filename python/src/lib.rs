//! Python bindings of rwkvdb (`import rwkvdb`): thin wrappers over the Rust library, nothing
//! computed here. Model work, search and I/O run with the GIL released; handles may be shared
//! between threads. Errors become the exceptions of `rwkvdb/errors.py`.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use parking_lot::RwLock;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use rwkvdb::model::ModelState;
use rwkvdb::{
    Collection, CollectionConfig, Database, Filter, ImportOptions, NewDocument, OpenOptions, PrecomputedDocument,
    QueryOptions, Rerank,
};
use serde_json::Value;

/// Why a call failed, decided without the GIL and raised with it.
enum Failure {
    Closed,
    Db(rwkvdb::Error),
    Py(PyErr),
}

impl From<rwkvdb::Error> for Failure {
    fn from(e: rwkvdb::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Py(e)
    }
}

/// The `rwkvdb.errors` class for a library error.
fn error_class(e: &rwkvdb::Error) -> &'static str {
    match e.code() {
        "no_such_collection" => "NoSuchCollectionError",
        "collection_exists" => "CollectionExistsError",
        "duplicate_id" => "DuplicateIdError",
        "model_mismatch" => "ModelMismatchError",
        "invalid_input" => "InvalidInputError",
        "limit_exceeded" => "LimitExceededError",
        "invalid_filter" => "FilterError",
        "invalid_config" => "ConfigError",
        "model_file" | "file_not_found" | "io" => "ModelFileError",
        "no_reranker" => "NoRerankerError",
        "model" => "ModelError",
        "database_locked" => "DatabaseLockedError",
        _ => "StorageError",
    }
}

fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py.import("rwkvdb.errors").and_then(|m| m.getattr(class)) {
        Ok(cls) => match cls.call1((message.clone(),)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}

impl Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Closed => raise(py, "DatabaseClosedError", "the database is closed".into()),
            Failure::Db(e) => raise(py, error_class(&e), e.to_string()),
            Failure::Py(e) => e,
        }
    }
}

type Shared = Arc<RwLock<Option<Database>>>;

/// Runs `f` on the open database with the GIL released.
fn on_db<T: Send>(py: Python<'_>, db: &Shared, f: impl FnOnce(&Database) -> Result<T, Failure> + Send) -> PyResult<T> {
    py.detach(|| {
        let guard = db.read();
        let database = guard.as_ref().ok_or(Failure::Closed)?;
        f(database)
    })
    .map_err(|e| e.into_py(py))
}

/// Python object -> JSON value (through the `json` module, so anything it accepts works).
fn to_json(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    let text: String = py.import("json")?.call_method("dumps", (obj,), Some(&kwargs))?.extract()?;
    serde_json::from_str(&text).map_err(|e| raise(py, "InvalidInputError", format!("metadata: {e}")))
}

/// JSON value -> Python object (built directly: this runs for every hit's metadata).
fn from_json(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any().unbind(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any().unbind(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(from_json(py, item)?)?;
            }
            list.into_any().unbind()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, from_json(py, item)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

fn to_py<T: serde::Serialize>(py: Python<'_>, v: &T) -> PyResult<Py<PyAny>> {
    let v = serde_json::to_value(v).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    from_json(py, &v)
}

/// A `str` or a list of `str` (never a lone `bytes` or other iterable of characters).
fn strings(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!("{what}: expected a list of str, got one str")));
    }
    let mut out = Vec::new();
    for item in obj.try_iter().map_err(|_| PyTypeError::new_err(format!("{what}: expected a list of str")))? {
        let item = item?;
        let s: String = item.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: expected str items, got {}",
                item.get_type().name().map_or("?".into(), |n| n.to_string())
            ))
        })?;
        out.push(s);
    }
    Ok(out)
}

/// Documents from `texts`, optional `ids` and `metadatas` (same lengths).
fn documents(
    py: Python<'_>,
    texts: &Bound<'_, PyAny>,
    ids: Option<&Bound<'_, PyAny>>,
    metadatas: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<NewDocument>> {
    let texts = strings(texts, "texts")?;
    let ids = ids.filter(|i| !i.is_none()).map(|i| strings(i, "ids")).transpose()?;
    let metadatas: Option<Vec<Value>> = metadatas
        .filter(|m| !m.is_none())
        .map(|m| -> PyResult<Vec<Value>> {
            m.try_iter()?
                .map(|x| {
                    let x = x?;
                    // Metadata is a dict (what filters and LangChain read), or None.
                    if !x.is_none() && !x.is_instance_of::<PyDict>() {
                        let kind = x.get_type().name().map_or("?".into(), |n| n.to_string());
                        return Err(PyTypeError::new_err(format!(
                            "metadatas: expected dict or None items, got {kind}"
                        )));
                    }
                    to_json(py, &x)
                })
                .collect()
        })
        .transpose()?;
    for (what, n) in [("ids", ids.as_ref().map(Vec::len)), ("metadatas", metadatas.as_ref().map(Vec::len))] {
        if let Some(n) = n.filter(|&n| n != texts.len()) {
            return Err(raise(py, "InvalidInputError", format!("{} texts but {n} {what}", texts.len())));
        }
    }
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| NewDocument {
            id: ids.as_ref().map(|v| v[i].clone()),
            text,
            metadata: metadatas.as_ref().map(|m| m[i].clone()).filter(|m| !m.is_null()),
        })
        .collect())
}

fn parse_rerank(py: Python<'_>, mode: Option<&str>) -> PyResult<Rerank> {
    match mode {
        None | Some("none") => Ok(Rerank::None),
        Some("offline") => Ok(Rerank::Offline),
        Some("online") => Ok(Rerank::Online),
        Some(other) => Err(raise(
            py,
            "InvalidInputError",
            format!("unknown rerank mode {other:?} (choose \"offline\", \"online\" or None)"),
        )),
    }
}

/// A float32 array of `shape` from anything numpy can read (`__array__`, lists, torch CPU tensors).
fn float_array<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let np = py.import("numpy")?;
    let arr = np
        .call_method1("ascontiguousarray", (obj, "float32"))
        .map_err(|e| raise(py, "InvalidInputError", format!("{what}: not convertible to a float32 array ({e})")))?;
    arr.cast_into::<PyArrayDyn<f32>>().map_err(|_| raise(py, "InvalidInputError", format!("{what}: not an array")))
}

/// Where layer `l` of sequence `b` sits in the official `rwkv_emb` batched state (token shift
/// `[layers, 2, n, c]`, index 0 the time mix and 1 the channel mix; WKV `[layers, n, H, 64, 64]`)
/// and in a [`ModelState`] (`[layers, c]` shifts, `[layers, H, 64, 64]` WKV): flat ranges.
struct OfficialLayout {
    /// Sequences in the batch.
    n: usize,
    /// Model width.
    c: usize,
}

impl OfficialLayout {
    fn att_shift(&self, l: usize, b: usize) -> std::ops::Range<usize> {
        let start = (2 * l * self.n + b) * self.c;
        start..start + self.c
    }

    fn ffn_shift(&self, l: usize, b: usize) -> std::ops::Range<usize> {
        let start = ((2 * l + 1) * self.n + b) * self.c;
        start..start + self.c
    }

    fn wkv(&self, l: usize, b: usize) -> std::ops::Range<usize> {
        let w = self.c * 64;
        (l * self.n + b) * w..(l * self.n + b + 1) * w
    }

    fn own_shift(&self, l: usize) -> std::ops::Range<usize> {
        l * self.c..(l + 1) * self.c
    }

    fn own_wkv(&self, l: usize) -> std::ops::Range<usize> {
        let w = self.c * 64;
        l * w..(l + 1) * w
    }
}

/// An open database file. Safe to share between threads; `close()` (or leaving a `with` block)
/// saves the ANN indexes and releases the file.
#[pyclass(name = "Database", module = "rwkvdb", frozen)]
struct PyDatabase {
    db: Shared,
    path: PathBuf,
}

fn collection_config(
    py: Python<'_>,
    embedder: PathBuf,
    reranker: Option<PathBuf>,
    preset: &str,
    precision: Option<&str>,
    max_doc_tokens: usize,
    truncate: bool,
) -> PyResult<CollectionConfig> {
    let mut cfg = CollectionConfig::new(embedder, reranker);
    cfg.state_preset = preset.to_string();
    if let Some(precision) = precision {
        cfg.precision = rwkvdb::model::Precision::parse(precision).ok_or_else(|| {
            raise(py, "ConfigError", format!("unknown precision {precision:?} (choose one of: f32, bf16, int8, int4)"))
        })?;
    }
    cfg.max_doc_tokens = max_doc_tokens;
    cfg.truncate = truncate;
    Ok(cfg)
}

#[pymethods]
impl PyDatabase {
    /// Opens (or creates) a database file.
    ///
    /// durable=False: faster non-durable commits (a crash may lose the last batches, never half
    /// of one). threads: threads per model run (0: all cores). sessions: model runs in parallel.
    /// ort_library: path of libonnxruntime.so (default: $ORT_DYLIB_PATH, then the onnxruntime
    /// package's library).
    #[new]
    #[pyo3(signature = (path, *, create=true, durable=true, threads=0, sessions=1, ort_library=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        durable: bool,
        threads: usize,
        sessions: usize,
        ort_library: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mut opts = OpenOptions { create, durable, ..OpenOptions::default() };
        opts.runtime.threads = threads;
        opts.runtime.sessions = sessions.max(1);
        opts.runtime.ort_library = ort_library;
        let p = path.clone();
        let db = py.detach(|| Database::open(&p, opts)).map_err(|e| Failure::Db(e).into_py(py))?;
        Ok(Self { db: Arc::new(RwLock::new(Some(db))), path })
    }

    /// The database file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// True once `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.db.read().is_none()
    }

    /// Creates a collection bound to an embedder (and optionally a reranker) checkpoint.
    ///
    /// preset: state precision (exact, balanced, compact, tiny). precision: weight precision
    /// (f32, bf16, int8, int4; None: bf16 where the CPU has AMX-BF16, else f32). Without a
    /// reranker the collection keeps no states and cannot rerank.
    #[pyo3(signature = (name, embedder, reranker=None, *, preset="balanced", precision=None, max_doc_tokens=8192, truncate=false))]
    #[allow(clippy::too_many_arguments)]
    fn create_collection(
        &self,
        py: Python<'_>,
        name: String,
        embedder: PathBuf,
        reranker: Option<PathBuf>,
        preset: &str,
        precision: Option<&str>,
        max_doc_tokens: usize,
        truncate: bool,
    ) -> PyResult<PyCollection> {
        let cfg = collection_config(py, embedder, reranker, preset, precision, max_doc_tokens, truncate)?;
        on_db(py, &self.db, |db| Ok(db.create_collection(&name, cfg)?))?;
        Ok(PyCollection { db: self.db.clone(), name })
    }

    /// Opens the collection `name`, creating it with these settings if it does not exist.
    #[pyo3(signature = (name, embedder, reranker=None, *, preset="balanced", precision=None, max_doc_tokens=8192, truncate=false))]
    #[allow(clippy::too_many_arguments)]
    fn get_or_create_collection(
        &self,
        py: Python<'_>,
        name: String,
        embedder: PathBuf,
        reranker: Option<PathBuf>,
        preset: &str,
        precision: Option<&str>,
        max_doc_tokens: usize,
        truncate: bool,
    ) -> PyResult<PyCollection> {
        let cfg = collection_config(py, embedder, reranker, preset, precision, max_doc_tokens, truncate)?;
        on_db(py, &self.db, |db| Ok(db.get_or_create_collection(&name, cfg)?))?;
        Ok(PyCollection { db: self.db.clone(), name })
    }

    /// An existing collection (NoSuchCollectionError otherwise).
    fn collection(&self, py: Python<'_>, name: String) -> PyResult<PyCollection> {
        on_db(py, &self.db, |db| Ok(db.collection(&name)?))?;
        Ok(PyCollection { db: self.db.clone(), name })
    }

    /// Every collection: a list of dicts (name, config, fingerprint, ...).
    fn list_collections(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = on_db(py, &self.db, |db| Ok(db.list_collections()?))?;
        to_py(py, &list)
    }

    /// Drops a collection and all its documents.
    fn drop_collection(&self, py: Python<'_>, name: String) -> PyResult<()> {
        on_db(py, &self.db, |db| Ok(db.drop_collection(&name)?))
    }

    /// Saves the ANN indexes and closes the file (waits for calls in progress). Later calls on
    /// this handle or its collections raise DatabaseClosedError. Closing twice is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = py.detach(|| self.db.write().take());
        match taken {
            Some(db) => py.detach(|| db.close()).map_err(|e| Failure::Db(e).into_py(py)),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<rwkvdb.Database {:?} ({state})>", self.path.display().to_string())
    }
}

/// One stored document.
#[pyclass(name = "Document", module = "rwkvdb", frozen, get_all)]
struct PyDocument {
    /// The document's id.
    id: String,
    /// Its text.
    text: String,
    /// Its metadata (None when it has none).
    metadata: Py<PyAny>,
}

#[pymethods]
impl PyDocument {
    /// {"id", "text", "metadata"}.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("text", &self.text)?;
        d.set_item("metadata", self.metadata.bind(py))?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("Document(id={:?}, text={:?})", self.id, self.text.chars().take(60).collect::<String>())
    }
}

/// One query hit.
#[pyclass(name = "Hit", module = "rwkvdb", frozen, get_all)]
struct PyHit {
    /// Document id.
    id: String,
    /// Document text.
    text: String,
    /// Document metadata (None when it has none).
    metadata: Py<PyAny>,
    /// Cosine similarity of the embeddings.
    similarity: f32,
    /// Reranker logit (None without reranking).
    logit: Option<f32>,
    /// sigmoid(logit) (None without reranking).
    probability: Option<f32>,
}

#[pymethods]
impl PyHit {
    /// {"id", "text", "metadata", "similarity", "logit", "probability"}.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("text", &self.text)?;
        d.set_item("metadata", self.metadata.bind(py))?;
        d.set_item("similarity", self.similarity)?;
        d.set_item("logit", self.logit)?;
        d.set_item("probability", self.probability)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let p = self.probability.map_or("None".into(), |p| format!("{p:.4}"));
        format!("Hit(id={:?}, similarity={:.4}, probability={p})", self.id, self.similarity)
    }
}

/// What a query returns: the hits (iterate or index it like a list), the candidates skipped
/// because their stored data failed a check, and the time per stage in milliseconds.
#[pyclass(name = "QueryResult", module = "rwkvdb", frozen)]
struct PyQueryResult {
    hits: Vec<Py<PyHit>>,
    /// [{"id", "reason"}] of candidates left out.
    #[pyo3(get)]
    skipped: Py<PyAny>,
    /// {"embed_ms", "ann_ms", "load_ms", "rerank_ms"}.
    #[pyo3(get)]
    timings: Py<PyAny>,
}

#[pymethods]
impl PyQueryResult {
    /// The hits, best first.
    #[getter]
    fn hits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.hits.iter().map(|h| h.clone_ref(py)))
    }

    fn __len__(&self) -> usize {
        self.hits.len()
    }

    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<Py<PyHit>> {
        let n = self.hits.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(pyo3::exceptions::PyIndexError::new_err("hit index out of range"));
        }
        Ok(self.hits[j as usize].clone_ref(py))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.hits(py)?.into_any().try_iter()?.into_any())
    }

    fn __repr__(&self) -> String {
        format!("<rwkvdb.QueryResult: {} hits>", self.hits.len())
    }
}

/// A collection of documents bound to one model pair.
#[pyclass(name = "Collection", module = "rwkvdb", frozen)]
struct PyCollection {
    db: Shared,
    name: String,
}

impl PyCollection {
    /// Runs `f` on the collection with the GIL released.
    fn on<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Collection) -> Result<T, Failure> + Send) -> PyResult<T> {
        let name = &self.name;
        on_db(py, &self.db, |db| f(&db.collection(name)?))
    }

    /// Inserts (or upserts) in batches, calling `progress(done, total)` after each.
    fn write(
        &self,
        py: Python<'_>,
        docs: Vec<NewDocument>,
        replace: bool,
        batch_size: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let total = docs.len();
        let size = batch_size.unwrap_or(total).max(1);
        let mut report = rwkvdb::InsertReport::default();
        let mut rest = docs;
        // One call even for no documents, so a closed database or dropped collection is reported.
        loop {
            let tail = rest.split_off(size.min(rest.len()));
            let batch = std::mem::replace(&mut rest, tail);
            let r = self.on(py, |c| Ok(if replace { c.upsert(batch)? } else { c.insert(batch)? }))?;
            report.ids.extend(r.ids);
            report.tokens += r.tokens;
            report.replaced += r.replaced;
            if let Some(cb) = progress {
                cb.call1((total - rest.len(), total))?;
            }
            if rest.is_empty() {
                break;
            }
        }
        to_py(py, &report)
    }
}

#[pymethods]
impl PyCollection {
    /// The collection's name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The stored configuration (a dict: embedder, reranker, state_preset, precision, ...).
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let cfg = self.on(py, |c| Ok(c.config()))?;
        to_py(py, &cfg)
    }

    /// Adds documents; ids are generated where `ids` is None. Without `batch_size` the call is
    /// one transaction (all or nothing; at most 4096 documents). With it, each batch is one
    /// transaction, `progress(done, total)` is called after each, and an error leaves the
    /// batches before it stored. Returns {"ids", "tokens", "replaced"}.
    /// DuplicateIdError if an id is already stored (see `upsert`).
    #[pyo3(signature = (texts, ids=None, metadatas=None, *, batch_size=None, progress=None))]
    fn add(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        ids: Option<&Bound<'_, PyAny>>,
        metadatas: Option<&Bound<'_, PyAny>>,
        batch_size: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let docs = documents(py, texts, ids, metadatas)?;
        self.write(py, docs, false, batch_size, progress)
    }

    /// Like `add`, replacing documents whose id is already stored.
    #[pyo3(signature = (texts, ids=None, metadatas=None, *, batch_size=None, progress=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        ids: Option<&Bound<'_, PyAny>>,
        metadatas: Option<&Bound<'_, PyAny>>,
        batch_size: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let docs = documents(py, texts, ids, metadatas)?;
        self.write(py, docs, true, batch_size, progress)
    }

    /// Deletes documents by id; returns {"deleted": [...], "missing": [...]}.
    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let ids = strings(ids, "ids")?;
        let report = self.on(py, |c| {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            Ok(c.delete(&refs)?)
        })?;
        to_py(py, &report)
    }

    /// One document by id (a str) -> Document or None; several (a list) -> a list of them.
    fn get(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let one = ids.is_instance_of::<PyString>();
        let wanted: Vec<String> = if one { vec![ids.extract()?] } else { strings(ids, "ids")? };
        let found =
            self.on(py, |c| wanted.iter().map(|id| c.get(id).map_err(Failure::from)).collect::<Result<Vec<_>, _>>())?;
        let mut out = Vec::with_capacity(found.len());
        for d in found {
            out.push(match d {
                Some(d) => {
                    let doc = PyDocument { id: d.id, text: d.text, metadata: from_json(py, &d.metadata)? };
                    Py::new(py, doc)?.into_any()
                }
                None => py.None(),
            });
        }
        if one {
            return Ok(out.pop().unwrap_or_else(|| py.None()));
        }
        Ok(PyList::new(py, out)?.into_any().unbind())
    }

    /// Live documents.
    fn count(&self, py: Python<'_>) -> PyResult<u64> {
        self.on(py, |c| Ok(c.count()?))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.count(py)? as usize)
    }

    /// Queries: the ANN top `candidates`, reranked as `rerank` says ("offline": resume each
    /// candidate's stored state with the query; "online": re-read each candidate with the
    /// query; None: ANN order), best `top_k` returned. `where` filters on metadata:
    /// {"topic": "physics"}, {"year": {"$gte": 2000}}, {"lang": {"$in": ["en", "de"]}}.
    #[pyo3(
        signature = (text, top_k=10, candidates=50, rerank=Some("offline"), r#where=None, ef=None),
        text_signature = "(self, /, text, top_k=10, candidates=50, rerank='offline', where=None, ef=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        py: Python<'_>,
        text: String,
        top_k: usize,
        candidates: usize,
        rerank: Option<&str>,
        r#where: Option<&Bound<'_, PyAny>>,
        ef: Option<usize>,
    ) -> PyResult<PyQueryResult> {
        if top_k == 0 {
            return Err(raise(py, "InvalidInputError", "top_k must be at least 1".into()));
        }
        let filter = match r#where.filter(|w| !w.is_none()) {
            Some(w) => Some(Filter::from_json(&to_json(py, w)?).map_err(|e| Failure::Db(e.into()).into_py(py))?),
            None => None,
        };
        let opts = QueryOptions { top_k, candidates, filter, rerank: parse_rerank(py, rerank)?, ef };
        let r = self.on(py, |c| Ok(c.query(&text, &opts)?))?;
        let mut hits = Vec::with_capacity(r.hits.len());
        for h in r.hits {
            let hit = PyHit {
                id: h.id,
                text: h.text,
                metadata: from_json(py, &h.metadata)?,
                similarity: h.similarity,
                logit: h.logit,
                probability: h.probability,
            };
            hits.push(Py::new(py, hit)?);
        }
        Ok(PyQueryResult { hits, skipped: to_py(py, &r.skipped)?, timings: to_py(py, &r.timings)? })
    }

    /// Unit-length embeddings of `texts` as the collection computes them: float32 [N, C].
    fn embed<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let texts = strings(texts, "texts")?;
        let (width, rows) = self.on(py, |c| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok((c.runtime()?.config().width, c.embed(&refs)?))
        })?;
        let n = rows.len();
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Ok(PyArray1::from_vec(py, flat).reshape([n, width])?.into_any())
    }

    /// The states an `add` of `texts` stores, in the official rwkv_emb layout: a tuple
    /// (token_shift [layers, 2, N, C], wkv [layers, N, H, 64, 64]) of float32 arrays, for the
    /// layers the collection keeps.
    fn document_states<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let texts = strings(texts, "texts")?;
        let states = self.on(py, |c| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(c.document_states(&refs)?)
        })?;
        let n = states.len();
        let (layers, width) = states.first().map_or((0, 0), |s| (s.layers, s.width));
        let heads = width / 64;
        let mut shift = vec![0f32; layers * 2 * n * width];
        let mut wkv = vec![0f32; layers * n * width * 64];
        let at = OfficialLayout { n, c: width };
        for (b, s) in states.iter().enumerate() {
            for l in 0..layers {
                shift[at.att_shift(l, b)].copy_from_slice(&s.att_shift[at.own_shift(l)]);
                shift[at.ffn_shift(l, b)].copy_from_slice(&s.ffn_shift[at.own_shift(l)]);
                wkv[at.wkv(l, b)].copy_from_slice(&s.wkv[at.own_wkv(l)]);
            }
        }
        let shift = PyArray1::from_vec(py, shift).reshape([layers, 2, n, width])?;
        let wkv = PyArray1::from_vec(py, wkv).reshape([layers, n, heads, 64, 64])?;
        PyTuple::new(py, [shift.into_any(), wkv.into_any()])
    }

    /// Adds documents whose embeddings and states were computed elsewhere (e.g. by the official
    /// rwkv_emb package on GPUs). `embeddings`: [N, C]. `states`: (token_shift [L, 2, N, C],
    /// wkv [L, N, H, 64, 64]) as `EmbeddingRWKV.forward` returns after reading
    /// "Instruct: ...\nDocument: {text}\n" without EOS; layers above those the collection keeps
    /// are dropped. Anything numpy can read works (CPU torch tensors too). One transaction.
    #[pyo3(signature = (ids, texts, embeddings, states=None, metadatas=None))]
    fn add_precomputed(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        texts: &Bound<'_, PyAny>,
        embeddings: &Bound<'_, PyAny>,
        states: Option<&Bound<'_, PyAny>>,
        metadatas: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let bad = |m: String| raise(py, "InvalidInputError", m);
        let docs = documents(py, texts, Some(ids), metadatas)?;
        let n = docs.len();
        let (keep, width) = self.on(py, |c| {
            let rt = c.runtime()?;
            Ok((if c.config().reranker.is_some() { rt.state_layers() } else { 0 }, rt.config().width))
        })?;
        let emb = float_array(py, embeddings, "embeddings")?;
        if emb.shape() != [n, width] {
            return Err(bad(format!("embeddings: shape {:?}, expected [{n}, {width}]", emb.shape())));
        }
        let emb = emb.readonly();
        let emb = emb.as_slice().map_err(|e| bad(e.to_string()))?;
        let mut model_states: Vec<Option<ModelState>> = vec![None; n];
        match (states.filter(|s| !s.is_none()), keep) {
            (Some(_), 0) => return Err(bad("this collection keeps no states (it has no reranker)".into())),
            (None, k) if k > 0 => {
                return Err(bad("this collection keeps states: pass states=(token_shift, wkv)".into()))
            }
            (None, _) => {}
            (Some(st), _) => {
                let parts: Vec<Bound<'_, PyAny>> = st.try_iter()?.collect::<PyResult<_>>()?;
                let [shift, wkv] = parts.as_slice() else {
                    return Err(bad(format!("states: expected (token_shift, wkv), got {} items", parts.len())));
                };
                let shift = float_array(py, shift, "token_shift")?;
                let wkv = float_array(py, wkv, "wkv")?;
                let layers = shift.shape().first().copied().unwrap_or(0);
                let heads = width / 64;
                if shift.shape() != [layers, 2, n, width] || layers < keep {
                    return Err(bad(format!(
                        "token_shift: shape {:?}, expected [layers >= {keep}, 2, {n}, {width}]",
                        shift.shape()
                    )));
                }
                if wkv.shape() != [layers, n, heads, 64, 64] {
                    return Err(bad(format!(
                        "wkv: shape {:?}, expected [{layers}, {n}, {heads}, 64, 64]",
                        wkv.shape()
                    )));
                }
                let (shift, wkv) = (shift.readonly(), wkv.readonly());
                let (shift, wkv) = (
                    shift.as_slice().map_err(|e| bad(e.to_string()))?,
                    wkv.as_slice().map_err(|e| bad(e.to_string()))?,
                );
                let at = OfficialLayout { n, c: width };
                for (b, slot) in model_states.iter_mut().enumerate() {
                    let mut s = ModelState::zeros(keep, width);
                    for l in 0..keep {
                        s.att_shift[at.own_shift(l)].copy_from_slice(&shift[at.att_shift(l, b)]);
                        s.ffn_shift[at.own_shift(l)].copy_from_slice(&shift[at.ffn_shift(l, b)]);
                        s.wkv[at.own_wkv(l)].copy_from_slice(&wkv[at.wkv(l, b)]);
                    }
                    *slot = Some(s);
                }
            }
        }
        let pre: Vec<PrecomputedDocument> = docs
            .into_iter()
            .zip(model_states)
            .enumerate()
            .map(|(i, (d, state))| PrecomputedDocument {
                id: d.id.unwrap_or_default(),
                text: d.text,
                metadata: d.metadata,
                embedding: emb[i * width..(i + 1) * width].to_vec(),
                state,
            })
            .collect();
        let report = self.on(py, |c| Ok(c.insert_precomputed(pre)?))?;
        to_py(py, &report)
    }

    /// Imports a JSONL file ({"id", "text", "metadata"} per line) the resumable way: ids already
    /// stored are skipped, a bad line or document is reported in "problems" and the rest is
    /// imported. `progress(done, total)` is called after each batch. Returns {"imported",
    /// "tokens", "already_present", "problems"}.
    #[pyo3(signature = (path, *, batch_size=32, progress=None))]
    fn import_jsonl(
        &self,
        py: Python<'_>,
        path: PathBuf,
        batch_size: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let file = std::fs::File::open(&path)
            .map_err(|e| raise(py, "InvalidInputError", format!("{}: {e}", path.display())))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let label = path.display().to_string();
        let mut callback_error = None;
        let report = self.on(py, |c| {
            let mut problems = Vec::new();
            let mut docs = Vec::new();
            for item in rwkvdb::import::read_jsonl(std::io::BufReader::new(file), &label, &stem) {
                match item {
                    Ok(d) => docs.push(d),
                    Err(p) => problems.push(rwkvdb::Skipped { id: p.location, reason: p.reason }),
                }
            }
            let mut report = c.import(docs, &ImportOptions { batch_size }, |p| {
                if let (Some(cb), None) = (&progress, &callback_error) {
                    callback_error = Python::attach(|py| cb.call1(py, (p.imported, p.total)).err());
                }
            })?;
            problems.append(&mut report.problems);
            report.problems = problems;
            Ok(report)
        })?;
        if let Some(e) = callback_error {
            return Err(e);
        }
        to_py(py, &report)
    }

    /// Statistics (a dict, as `rwkvdb stats --json`).
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = self.on(py, |c| Ok(c.stats()?))?;
        to_py(py, &s)
    }

    /// Saves the ANN index into the file now (also done on close); returns what it did.
    fn checkpoint(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let r = self.on(py, |c| Ok(c.checkpoint()?))?;
        to_py(py, &r)
    }

    fn __repr__(&self) -> String {
        format!("<rwkvdb.Collection {:?}>", self.name)
    }
}

/// Writes a synthetic embedder + reranker pair (random weights in the official checkpoint
/// layout) as `.pth` files: for trying rwkvdb out and for tests. Scores are meaningless.
#[pyfunction]
#[pyo3(signature = (embedder, reranker, *, layers=2, width=128, reranker_layers=None, seed=42))]
fn write_synthetic_model(
    py: Python<'_>,
    embedder: PathBuf,
    reranker: PathBuf,
    layers: usize,
    width: usize,
    reranker_layers: Option<Vec<usize>>,
    seed: u64,
) -> PyResult<()> {
    use rwkvdb::checkpoint::{pth, synth, StoredDType};
    let bad = |m: String| raise(py, "InvalidInputError", m);
    if layers == 0 || width == 0 || width % 64 != 0 {
        return Err(bad(format!("layers must be at least 1 and width a multiple of 64 (got {layers} and {width})")));
    }
    let reranker_layers = reranker_layers.unwrap_or_else(|| vec![layers - 1]);
    if reranker_layers.is_empty() || reranker_layers.iter().any(|&l| l >= layers) {
        return Err(bad(format!("reranker_layers {reranker_layers:?} must name layers below {layers}")));
    }
    let cfg = synth::SynthConfig { layers, width, reranker_layers, seed, ..Default::default() };
    py.detach(|| -> Result<(), String> {
        for (path, dict) in [(&embedder, synth::synth_embedder(&cfg)), (&reranker, synth::synth_reranker(&cfg))] {
            pth::write(path, &dict, StoredDType::F32).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    })
    .map_err(|m| raise(py, "ModelFileError", m))
}

/// The text whose state a collection keeps for `document` (the official offline template,
/// without EOS): what `EmbeddingRWKV.forward` must read to make states for `add_precomputed`.
#[pyfunction]
fn offline_document_text(document: &str) -> String {
    rwkvdb::model::offline_document_text(document)
}

/// The compiled part of the `rwkvdb` package.
#[pymodule]
fn _rwkvdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDatabase>()?;
    m.add_class::<PyCollection>()?;
    m.add_class::<PyDocument>()?;
    m.add_class::<PyHit>()?;
    m.add_class::<PyQueryResult>()?;
    m.add_function(wrap_pyfunction!(write_synthetic_model, m)?)?;
    m.add_function(wrap_pyfunction!(offline_document_text, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
