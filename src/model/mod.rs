//! The model runtime: checkpoint weights, ONNX graph emission, the WKV custom operator and
//! ONNX Runtime sessions.

pub mod device;
pub mod eval;
pub mod gemm;
pub mod graph;
pub mod onnx;
pub mod ort_env;
pub mod prepared;
pub mod quant;
pub mod quant_ops;
pub mod runtime;
pub mod weight_cache;
pub mod weights;
pub mod wkv;

pub use prepared::{Precision, PreparedModel};
pub use runtime::{Device, ModelState, Runtime, RuntimeOptions};
pub use weights::{EmbedderConfig, EmbedderWeights, RerankerWeights};

/// What a collection needs to know of its model without loading it: widths and the layers a
/// stored state holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelShape {
    /// Model width `C` (the embedding dimension).
    pub width: usize,
    /// Embedder layers.
    pub layers: usize,
    /// Embedder layers an offline rerank state holds (`max(selected) + 1`; 0 without reranker).
    pub state_layers: usize,
    /// Embedder layers the reranker reads.
    pub reranker_layers: Vec<usize>,
    /// Whether a reranker is part of the model.
    pub has_reranker: bool,
}

impl ModelShape {
    /// The shape of a loaded runtime.
    pub fn of(rt: &Runtime) -> Self {
        Self {
            width: rt.config().width,
            layers: rt.config().layers,
            state_layers: rt.state_layers(),
            reranker_layers: rt.reranker_layers().to_vec(),
            has_reranker: rt.has_reranker(),
        }
    }
}

/// Instruction prefix shared by the online and offline rerank templates.
pub const RERANK_INSTRUCTION: &str = "Instruct: Given a query, retrieve documents that answer the query\n";

/// Online rerank text: instruction, document and query in one sequence (EOS appended).
pub fn online_text(document: &str, query: &str) -> String {
    format!("{RERANK_INSTRUCTION}Document: {document}\nQuery: {query}")
}

/// Offline index text of a document (no EOS: the query continues it later).
pub fn offline_document_text(document: &str) -> String {
    format!("{RERANK_INSTRUCTION}Document: {document}\n")
}

/// Offline query text that resumes a document state (EOS appended).
pub fn offline_query_text(query: &str) -> String {
    format!("Query: {query}")
}

/// Errors from the model runtime.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The ONNX Runtime library could not be found or loaded.
    #[error("{0}")]
    OrtNotFound(String),
    /// ONNX Runtime reported an error.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// CUDA was requested but cannot be used.
    #[error("CUDA execution provider unavailable: {0}")]
    CudaUnavailable(String),
    /// Embedder and reranker (or state and model) do not belong together.
    #[error("model mismatch: {0}")]
    Mismatch(String),
    /// A reranker operation was requested but no reranker is loaded.
    #[error("no reranker is loaded")]
    NoReranker,
    /// A token sequence was empty.
    #[error("empty token sequence")]
    EmptySequence,
    /// A token id is outside the embedding table.
    #[error("token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The offending id.
        token: u32,
        /// Rows of the embedding table.
        vocab: usize,
    },
    /// Embedding input must end with exactly one EOS token.
    #[error("an embedded sequence must end with the EOS token (65535) and contain no other EOS")]
    EosPlacement,
    /// Prepared weights are malformed (a damaged or stale cache file is rebuilt, not used).
    #[error("prepared weights: {0}")]
    PreparedWeights(String),
    /// A state does not have the layers/width this model needs.
    #[error("state holds {found:?} (layers, width), the model needs {expected:?}")]
    StateShape {
        /// (layers, width) needed.
        expected: (usize, usize),
        /// (layers, width) given.
        found: (usize, usize),
    },
}
