//! The records rwkvdb persists, and their binary encoding.
//!
//! Both record kinds are `[kind version u8][CRC-32 of the body, u32 LE][body]`, the body being
//! the record's fields in declaration order, encoded by bincode (standard configuration:
//! little-endian, variable-length integers). A field added, removed or reordered is a new
//! format version with a migration (`migrations.rs`); `serde` attributes such as `default`
//! do not apply to this encoding.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::codec::Preset;
use crate::model::{ModelShape, Precision};

/// Weight precision of new collections on this machine: the fastest one within the fidelity
/// bounds measured in docs/performance.md ("Model sizes and weight precisions"): bf16 where the
/// CPU has AMX-BF16 (about 2x f32 there), else f32 (bf16 would run at f32 speed with more
/// memory). A collection keeps the precision it was created with on every machine.
#[must_use]
pub fn default_precision() -> Precision {
    if crate::model::amx_available() {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// How a collection is configured at creation (stored in the file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionConfig {
    /// Embedder checkpoint path.
    pub embedder: PathBuf,
    /// Reranker checkpoint path; without one the collection keeps no states.
    pub reranker: Option<PathBuf>,
    /// State precision preset name (see [`crate::codec::Preset`]).
    pub state_preset: String,
    /// Precision of the model's weight matrices (`default`: JSON records of format version 2
    /// and older, made before this setting, were f32).
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
    pub fn new(embedder: impl Into<PathBuf>, reranker: Option<PathBuf>) -> Self {
        Self {
            embedder: embedder.into(),
            reranker,
            state_preset: Preset::default().name().to_string(),
            precision: default_precision(),
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
            max_doc_tokens: 8192,
            truncate: false,
        }
    }
}

/// A collection's persistent description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionRecord {
    /// Numeric id used in table names (never reused within a file).
    pub id: u64,
    /// The user-facing name.
    pub name: String,
    /// The configuration it was created with.
    pub config: CollectionConfig,
    /// Fingerprint of model weights, tokenizer, templates, layer selection and codec.
    pub fingerprint: String,
    /// Next document key to assign.
    pub next_key: u64,
    /// The model's shape, so the collection opens without loading the model (absent in
    /// collections created before it was recorded: those load the model to open).
    #[serde(default)]
    pub shape: Option<ModelShape>,
}

/// One stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// The caller's id.
    pub id: String,
    /// The document text.
    pub text: String,
    /// Metadata as JSON text (`null` when none).
    pub metadata: String,
    /// The retrieval embedding, L2-normalised.
    pub embedding: Vec<f32>,
    /// Tokens the document was embedded with (for statistics).
    pub tokens: u32,
}

/// Version byte of a document record (format version 3; version-2 files used 1).
const DOC_VERSION: u8 = 2;
/// Version byte of a collection record (format version 3; before, records were unchecked JSON).
const COLLECTION_VERSION: u8 = 1;
/// Largest body a record may claim: bounds what decoding a damaged length can allocate. Far
/// above the largest valid document (16 MiB text + 64 KiB metadata + the embedding).
const MAX_RECORD_BYTES: usize = 64 << 20;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// `[version][crc32][bincode body]`.
fn encode<T: Serialize>(version: u8, value: &T, what: impl Fn() -> String) -> Result<Vec<u8>, StoreError> {
    let body = bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|e| StoreError::Unencodable { what: what(), detail: e.to_string() })?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(version);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks version and checksum, then decodes the body; the whole input must be consumed.
fn decode<T: serde::de::DeserializeOwned>(
    version: u8,
    bytes: &[u8],
    what: impl Fn() -> String,
) -> Result<T, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { what: what(), detail };
    let (&found, rest) = bytes.split_first().ok_or_else(|| corrupt("empty record".into()))?;
    if found != version {
        return Err(corrupt(format!("unknown record version {found}")));
    }
    if rest.len() < 4 {
        return Err(corrupt("truncated".into()));
    }
    let (crc, body) = rest.split_at(4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let (value, used) =
        bincode::serde::decode_from_slice(body, bincode_config()).map_err(|e| corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(corrupt(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(value)
}

impl DocRecord {
    /// The stored bytes.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        encode(DOC_VERSION, self, || format!("document {:?}", self.id))
    }

    /// Parses and checks a record; `what` names it in errors.
    pub fn decode(bytes: &[u8], what: impl Fn() -> String) -> Result<Self, StoreError> {
        decode(DOC_VERSION, bytes, what)
    }
}

impl CollectionRecord {
    /// The stored bytes (fails for a model path that is not valid UTF-8).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        encode(COLLECTION_VERSION, self, || format!("collection record {:?}", self.name))
    }

    /// Parses and checks a record.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        decode(COLLECTION_VERSION, bytes, || format!("collection record {name:?}"))
    }
}

/// Size and checksum of one part of a saved index.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartInfo {
    /// Length in bytes.
    pub bytes: u64,
    /// xxh3-64 of the bytes.
    pub xxh3: u64,
}

impl PartInfo {
    /// The size and checksum of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self { bytes: bytes.len() as u64, xxh3: xxhash_rust::xxh3::xxh3_64(bytes) }
    }
}

/// What a collection's saved ANN index holds: written last, in the same transaction as its
/// parts, so a header always describes parts that are all there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexHeader {
    /// The index's slot layout (see `AnnIndex::layout`).
    pub layout: u64,
    /// Vector dimension.
    pub dim: u32,
    /// Slots, live and deleted.
    pub slots: u64,
    /// Highest document key in the index.
    pub max_key: Option<u64>,
    /// Keys, tombstones and graph.
    pub core: PartInfo,
    /// Metadata of the indexed documents.
    pub metadata: PartInfo,
    /// Vector blocks, in order.
    pub blocks: Vec<PartInfo>,
}

/// Version byte of an index header.
const INDEX_HEADER_VERSION: u8 = 1;

impl IndexHeader {
    /// The stored bytes.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        encode(INDEX_HEADER_VERSION, self, || "index snapshot header".into())
    }

    /// Parses and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode(INDEX_HEADER_VERSION, bytes, || "index snapshot header".into())
    }
}
