//! `rwkvdb model eval`: embeddings, tokens and online/offline rerank logits for a JSON input,
//! computed the way the official `rwkv_emb` package computes them.
//!
//! Input: `{"documents":[{"id","text"}], "queries":[{"id","text"}], "pairs":[["q1","d1"]]}`.
//! Output: `{"embeddings":{id:[...]}, "tokens":{id:[...]}, "scores":[{"query","document",
//! "online_logit","offline_logit"}]}`. Embeddings are the package's raw retrieval-head output
//! (not normalised) of `text + EOS`; tokens are those ids.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::templates::{offline_document_text, offline_query_text, online_text};
use crate::model::{ModelError, Runtime};
use crate::tokenizer::Tokenizer;

/// A text with an id.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Item {
    /// Caller's id.
    pub id: String,
    /// The text.
    pub text: String,
}

/// The eval input file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct EvalInput {
    /// Documents to embed (and rerank against queries).
    #[serde(default)]
    pub documents: Vec<Item>,
    /// Queries to embed.
    #[serde(default)]
    pub queries: Vec<Item>,
    /// `[query_id, document_id]` pairs to score.
    #[serde(default)]
    pub pairs: Vec<(String, String)>,
}

/// One scored pair.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PairScore {
    /// Query id.
    pub query: String,
    /// Document id.
    pub document: String,
    /// Reranker logit of the online template (`Instruct…Document…Query…` + EOS from scratch).
    pub online_logit: f32,
    /// Reranker logit of the cached document state resumed with `Query: …` + EOS.
    pub offline_logit: f32,
}

/// The eval output file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct EvalOutput {
    /// Raw retrieval embedding of every document and query.
    pub embeddings: BTreeMap<String, Vec<f32>>,
    /// Token ids (with EOS) of every embedded text.
    pub tokens: BTreeMap<String, Vec<u32>>,
    /// Scores of the requested pairs, in input order.
    pub scores: Vec<PairScore>,
}

/// Errors of an eval run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An id appears twice among documents and queries.
    #[error("duplicate id {0:?} in the eval input")]
    DuplicateId(String),
    /// A pair names an unknown id.
    #[error("pair names unknown {kind} id {id:?}")]
    UnknownId {
        /// "query" or "document".
        kind: &'static str,
        /// The id.
        id: String,
    },
}

fn as_refs(v: &[Vec<u32>]) -> Vec<&[u32]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Runs the eval on `rt` (which needs a reranker when `input.pairs` is not empty).
pub fn run(rt: &Runtime, tok: &Tokenizer, input: &EvalInput) -> Result<EvalOutput, EvalError> {
    let mut out = EvalOutput::default();
    let mut seen = HashMap::new();
    for item in input.documents.iter().chain(&input.queries) {
        if seen.insert(item.id.as_str(), item.text.as_str()).is_some() {
            return Err(EvalError::DuplicateId(item.id.clone()));
        }
    }

    let items: Vec<&Item> = input.documents.iter().chain(&input.queries).collect();
    let tokens: Vec<Vec<u32>> = items.iter().map(|it| tok.encode_with_eos(&it.text)).collect();
    let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let embeddings = rt.embed(&refs)?;
    for ((it, t), e) in items.iter().zip(tokens).zip(embeddings) {
        out.tokens.insert(it.id.clone(), t);
        out.embeddings.insert(it.id.clone(), e);
    }

    if input.pairs.is_empty() {
        return Ok(out);
    }
    let docs: HashMap<&str, &str> = input.documents.iter().map(|d| (d.id.as_str(), d.text.as_str())).collect();
    let queries: HashMap<&str, &str> = input.queries.iter().map(|q| (q.id.as_str(), q.text.as_str())).collect();
    let mut online = Vec::new();
    let mut doc_prefix = Vec::new();
    let mut query_suffix = Vec::new();
    for (q, d) in &input.pairs {
        let qt = queries.get(q.as_str()).ok_or_else(|| EvalError::UnknownId { kind: "query", id: q.clone() })?;
        let dt = docs.get(d.as_str()).ok_or_else(|| EvalError::UnknownId { kind: "document", id: d.clone() })?;
        online.push(tok.encode_with_eos(&online_text(dt, qt)));
        doc_prefix.push(tok.encode(&offline_document_text(dt)));
        query_suffix.push(tok.encode_with_eos(&offline_query_text(qt)));
    }
    let online_logits = rt.online_scores(&as_refs(&online))?;
    let states = rt.prefix_states(&as_refs(&doc_prefix))?;
    let offline_logits = rt.resume_and_score(states, &as_refs(&query_suffix))?;
    for (i, (q, d)) in input.pairs.iter().enumerate() {
        out.scores.push(PairScore {
            query: q.clone(),
            document: d.clone(),
            online_logit: online_logits[i],
            offline_logit: offline_logits[i],
        });
    }
    Ok(out)
}
