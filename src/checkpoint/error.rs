//! TEMPORARY placeholder, replaced by the checkpoint I/O work.
/// Checkpoint errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Missing key.
    #[error("checkpoint has no tensor {key}")]
    MissingKey { key: String },
    /// Wrong shape.
    #[error("tensor {key} has shape {found:?}, expected {expected:?}")]
    Shape { key: String, expected: Vec<usize>, found: Vec<usize> },
}
