//! Evaluation: numbers a user can compare against a reference.
//!
//! - [`model`]: `rwkvdb model eval`, embeddings and rerank logits computed the way the official
//!   `rwkv_emb` package computes them, for comparison with it.
//! - [`retrieval`]: `rwkvdb eval retrieval`, ranking quality on BEIR-format data per rerank mode.
//! - [`layers`]: `rwkvdb eval layers`, layer-wise zero-shot sentence embeddings on labelled pairs.

pub mod layers;
pub mod model;
pub mod retrieval;
