//! rwkvdb: an embedded vector-and-state database for state-centric retrieval with EmbeddingRWKV.

pub mod checkpoint;
pub mod error;
pub mod model;
pub mod tokenizer;

pub use error::{Error, Result};
