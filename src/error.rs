//! The crate's public error type. Each layer has its own error enum (model runtime, checkpoint,
//! store, codec, index, filter); they convert into [`Error`], whose variants are facts a caller
//! can act on.

use std::path::PathBuf;

/// Any error rwkvdb returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model checkpoint could not be loaded or has the wrong shape.
    #[error("{}", model_file_message(path, source))]
    ModelFile {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::checkpoint::CheckpointError,
    },
    /// The model runtime failed (ONNX Runtime missing, inference error, ...).
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The storage layer failed or found damage.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A stored state could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The ANN index failed.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// A metadata filter is malformed.
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    /// A configuration value is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Input rejected before anything was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An id appears twice in a batch, or already exists on insert.
    #[error("duplicate document id {0:?}")]
    DuplicateId(String),
    /// A document exceeds the collection's token limit (and truncation is off).
    #[error(
        "document {id:?} has {tokens} tokens, the collection allows {max} (enable truncation or raise max_doc_tokens)"
    )]
    TooLong {
        /// Document id.
        id: String,
        /// Its token count including EOS.
        tokens: usize,
        /// The limit.
        max: usize,
    },
    /// A documented limit was exceeded (see `docs/reliability.md`, "Limits").
    #[error("{what}: {value} exceeds the limit of {max}")]
    LimitExceeded {
        /// What was measured (names the document where one is involved).
        what: String,
        /// The value found.
        value: usize,
        /// The limit.
        max: usize,
    },
    /// `create_collection` with a name already in use.
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    /// No collection of that name.
    #[error("no collection named {0:?}")]
    NoSuchCollection(String),
    /// The collection was built with a different model, tokenizer, template, layer selection or codec.
    #[error(
        "collection {collection:?} was created with model fingerprint {expected}, the model files now give {found}"
    )]
    ModelMismatch {
        /// Collection name.
        collection: String,
        /// Fingerprint stored in the file.
        expected: String,
        /// Fingerprint of the model now configured.
        found: String,
    },
}

impl Error {
    /// A stable, machine-readable name of the kind of error, for bindings and APIs that must
    /// tell kinds apart (`rwkvdb serve`'s error codes, the Python exception classes):
    /// `no_such_collection`, `collection_exists`, `duplicate_id`, `model_mismatch`,
    /// `invalid_input`, `invalid_filter`, `invalid_config`, `limit_exceeded`, `model_file`,
    /// `file_not_found`, `io`, `no_reranker`, `model`, `database_locked`, `storage`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoSuchCollection(_) => "no_such_collection",
            Error::CollectionExists(_) => "collection_exists",
            Error::DuplicateId(_) => "duplicate_id",
            Error::ModelMismatch { .. } => "model_mismatch",
            Error::InvalidInput(_) | Error::TooLong { .. } => "invalid_input",
            Error::Filter(_) => "invalid_filter",
            Error::Config(_) => "invalid_config",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::ModelFile { .. } => "model_file",
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "file_not_found",
            Error::Io { .. } => "io",
            Error::Model(crate::model::ModelError::NoReranker) => "no_reranker",
            Error::Model(_) => "model",
            Error::Store(crate::store::StoreError::Locked { .. }) => "database_locked",
            Error::Store(_) | Error::Codec(_) | Error::Index(_) => "storage",
        }
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `path: problem`, naming the path once when the problem is an I/O error that names it.
fn model_file_message(path: &std::path::Path, source: &crate::checkpoint::CheckpointError) -> String {
    match source {
        crate::checkpoint::CheckpointError::Io { path: p, .. } if p == path => source.to_string(),
        _ => format!("{}: {source}", path.display()),
    }
}
