//! What callers hand to a collection and what they get back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::filter::Filter;
use crate::model::ModelState;

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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A document left out of a result or an import, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The document's id (`key N` when its record is unreadable).
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

/// Time a query spent per stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Tokenizing and embedding the query.
    pub embed_ms: f64,
    /// The ANN search.
    pub ann_ms: f64,
    /// Reading records and states, decoding states.
    pub load_ms: f64,
    /// Reranking.
    pub rerank_ms: f64,
}

/// What a query returns.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct QueryResult {
    /// Hits, best first.
    pub hits: Vec<Hit>,
    /// Candidates left out because their stored data failed a check.
    pub skipped: Vec<Skipped>,
    /// Time spent per stage.
    pub timings: Timings,
}

/// What an insert did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InsertReport {
    /// Ids written, in input order.
    pub ids: Vec<String>,
    /// Tokens embedded.
    pub tokens: usize,
    /// Ids that replaced an existing document (upsert only).
    pub replaced: usize,
}

/// What a delete did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteReport {
    /// Ids removed.
    pub deleted: Vec<String>,
    /// Ids that did not exist.
    pub missing: Vec<String>,
}

/// HNSW parameters of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswSettings {
    /// Links per node.
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Default candidate list size while searching.
    pub ef_search: usize,
}

/// Collection statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Embedder layers kept per state.
    pub state_layers: usize,
    /// The embedder layers the reranker reads.
    pub reranker_layers: Vec<usize>,
    /// HNSW parameters.
    pub hnsw: HnswSettings,
    /// Entries in the ANN index.
    pub index_entries: usize,
    /// Deleted entries the ANN index still holds (until its next rebuild).
    pub index_tombstones: usize,
    /// False while the HNSW graph of a large collection is still being built after opening;
    /// searches are exact scans meanwhile.
    pub index_graph_ready: bool,
    /// Heap bytes of the ANN index (vectors, keys, graph links).
    pub index_memory_bytes: usize,
    /// How the index was made when the collection opened: loaded from the saved copy (and
    /// how much was replayed), or built from the documents (and why).
    pub index_origin: String,
    /// Model fingerprint.
    pub fingerprint: String,
    /// On-disk format version.
    pub format_version: u32,
}

/// The ANN index of an open collection (see [`crate::Collection::index_status`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexStatus {
    /// Live entries.
    pub entries: usize,
    /// Deleted entries still in the graph (until its next rebuild).
    pub tombstones: usize,
    /// False while the graph is being built (searches are exact scans meanwhile).
    pub graph_ready: bool,
    /// Heap bytes: vectors, keys, graph links.
    pub memory_bytes: usize,
    /// Entries the graph cannot reach, scanned exactly on every search.
    pub unreachable: usize,
    /// How the index was made when the collection opened.
    pub origin: String,
}

/// What `check` found.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CheckReport {
    /// Documents examined.
    pub documents: u64,
    /// One line per problem, naming the document.
    pub problems: Vec<String>,
    /// Ids of damaged documents.
    pub damaged_ids: Vec<String>,
}

/// How [`crate::Collection::import`] works through its input.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Documents per insert batch (one write transaction each).
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { batch_size: 32 }
    }
}

/// Where an import stands, passed to its progress callback after every batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportProgress {
    /// Documents to insert (input minus those already stored and repeated ids).
    pub total: usize,
    /// Documents inserted so far.
    pub imported: usize,
    /// Tokens embedded so far.
    pub tokens: usize,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportReport {
    /// Documents inserted.
    pub imported: usize,
    /// Tokens embedded.
    pub tokens: usize,
    /// Documents whose id was already stored (a resumed import): left as they are.
    pub already_present: usize,
    /// Documents not imported: repeated ids in the input, and documents the collection refused.
    pub problems: Vec<Skipped>,
}
