//! rwkvdb: an embedded vector-and-state database for state-centric retrieval with `EmbeddingRWKV`.
//!
//! An application opens a database file, creates or opens a collection bound to an `EmbeddingRWKV`
//! embedder + reranker pair, inserts documents and queries them. Inserting runs the model once per
//! document and keeps the embedding (in an HNSW index) and the model's recurrent state after
//! reading the document (quantized, compressed, in redb). A query takes the ANN top-k and reranks
//! the candidates by resuming each cached state with only the query tokens: the rerank cost does
//! not depend on document length.
//!
//! Guarantees: an insert batch is one redb write transaction (wholly visible or wholly absent
//! after a crash; durable once acknowledged unless `OpenOptions::durable` is off); a collection
//! refuses to open with a model whose fingerprint differs; every stored record carries a checksum.
//!
//! The example runs as a doc test on a small synthetic model pair (hidden lines write it into
//! `dir`); with real weights, point `CollectionConfig::new` at `rwkv0b1-emb-curriculum.pth` and
//! `rwkv0b1-reranker.pth`.
//!
//! ```
//! use rwkvdb::{CollectionConfig, Database, NewDocument, OpenOptions, QueryOptions};
//! # use rwkvdb::checkpoint::{synth, StoredDType};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("rwkvdb-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let cfg = synth::SynthConfig { layers: 2, width: 128, reranker_layers: vec![1], ..Default::default() };
//! # synth::write_pair(&cfg, &dir.join("emb.pth"), &dir.join("rr.pth"), StoredDType::F32)?;
//!
//! let db = Database::open(dir.join("my.redb"), OpenOptions::default())?;
//! let config = CollectionConfig::new(dir.join("emb.pth"), Some(dir.join("rr.pth")));
//! let docs = db.create_collection("notes", config)?;
//! docs.insert(vec![NewDocument { id: Some("n1".into()), text: "Water boils at 100 °C at sea level.".into(), metadata: None }])?;
//! let result = docs.query("At what temperature does water boil?", &QueryOptions::default())?;
//! for hit in &result.hits {
//!     println!("{} {:?} {}", hit.id, hit.probability, hit.text);
//! }
//! assert_eq!(result.hits[0].id, "n1");
//! # drop(docs);
//! # drop(db);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

// The database: what an application uses.
pub use collection::{
    CheckReport, CheckpointReport, Collection, CollectionStats, DeleteReport, Document, Hit, HnswSettings,
    ImportOptions, ImportProgress, ImportReport, IndexStatus, InsertReport, NewDocument, PrecomputedDocument,
    QueryOptions, QueryResult, Rerank, Skipped, Timings,
};
pub use db::{Database, OpenOptions};
pub use error::{Error, Result};
pub use filter::{Filter, FilterError};
/// Metadata values are `serde_json::Value`; the crate is re-exported so callers need no extra dependency.
pub use serde_json;
pub use store::{CollectionConfig, CollectionRecord, StoreError};

// Building blocks, public for tools, benchmarks and advanced use (loading checkpoints, running
// the model or the state codec directly).
pub mod checkpoint;
pub mod codec;
pub mod eval;
pub mod gemm_probe;
pub mod index;
pub mod memory;
pub mod model;
pub mod tokenizer;

/// Reading documents to import: JSONL files and folders of text files (see
/// [`Collection::import`] for the resumable bulk import).
pub mod import {
    pub use crate::collection::{read_folder, read_jsonl, ImportProblem, JsonlDocuments};
}

/// The documented limits and fixed parameters (docs/reliability.md, "Limits").
pub mod limits {
    pub use crate::collection::{
        DURABLE_EVERY, MAX_BATCH_DOCS, MAX_CANDIDATES, MAX_ID_BYTES, MAX_METADATA_BYTES, MAX_TEXT_BYTES, RERANK_CHUNK,
    };
    pub use crate::store::{default_precision, FORMAT_VERSION, STATE_CHUNK_BYTES};
}

#[doc(hidden)]
pub mod fuzzing;

/// The README's code, compiled by `cargo test` as a doc test so it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod collection;
mod db;
mod error;
mod filter;
mod fingerprint;
mod store;
