//! The model runtime: checkpoint weights, ONNX graph emission, the WKV custom operator and
//! ONNX Runtime sessions.

pub(crate) mod bf16;
mod device;
pub(crate) mod graph;
pub(crate) mod onnx;
pub(crate) mod ort_env;
mod prepared;
pub(crate) mod quant;
mod quant_ops;
mod runtime;
mod state;
pub mod templates;
pub mod weight_cache;
pub mod weights;
pub(crate) mod wkv;

pub use bf16::amx_available;
pub use device::Device;
pub use prepared::{Precision, PreparedMeta, PreparedModel};
pub use runtime::{LayerPass, PooledHidden, Runtime, RuntimeOptions};
pub use state::ModelState;
pub use templates::{offline_document_text, offline_query_text, online_text, RERANK_INSTRUCTION};
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
    #[error("no reranker: the collection (or model) has none, so it keeps no states and cannot rerank; query with rerank none")]
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
