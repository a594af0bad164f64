//! Errors of checkpoint loading and validation.

use std::path::PathBuf;

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Neither a `PyTorch` zip checkpoint nor a safetensors file, or no state dict inside.
    #[error("not a model checkpoint (expected a PyTorch .pth state dict or a .safetensors file)")]
    NotACheckpoint,
    /// The zip container is damaged.
    #[error("zip: {0}")]
    Zip(String),
    /// The pickle could not be interpreted.
    #[error("pickle at byte {offset}: {message}")]
    Pickle {
        /// Byte offset in data.pkl.
        offset: usize,
        /// What went wrong.
        message: String,
    },
    /// The pickle references a global outside the whitelist (it would run code in Python).
    #[error("pickle references {module}.{name}, which rwkvdb does not execute")]
    UnsupportedGlobal {
        /// Module.
        module: String,
        /// Name.
        name: String,
    },
    /// A tensor element type rwkvdb cannot read.
    #[error("unsupported tensor type {0}")]
    UnsupportedDType(String),
    /// A tensor view reaches outside its storage.
    #[error("tensor {key} reaches outside its storage")]
    TensorOutOfBounds {
        /// Tensor key.
        key: String,
    },
    /// A tensor is larger than any plausible model tensor.
    #[error("tensor {key} is implausibly large")]
    TooLarge {
        /// Tensor key.
        key: String,
    },
    /// The safetensors container is damaged.
    #[error("safetensors: {0}")]
    Safetensors(String),
    /// A tensor the model needs is absent.
    #[error("checkpoint has no tensor {key}")]
    MissingKey {
        /// The full key.
        key: String,
    },
    /// A tensor has the wrong shape for the inferred configuration.
    #[error("tensor {key} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The full key.
        key: String,
        /// Expected shape (size-1 dimensions may be dropped).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
}
