//! The read path: embed the query → ANN candidates → load records (and states) → rerank →
//! assemble hits.

use std::time::{Duration, Instant};

use super::insert::normalise;
use super::{
    parse_metadata, Collection, Hit, QueryOptions, QueryResult, Rerank, Skipped, MAX_CANDIDATES, RERANK_CHUNK,
};
use crate::error::{Error, Result};
use crate::model::templates::{offline_query_text, online_text};
use crate::store::{CollectionReader, DocRecord, StoreError};
use crate::tokenizer::Tokenizer;

/// A candidate whose record was read.
struct Candidate {
    key: u64,
    record: DocRecord,
    similarity: f32,
}

impl Collection {
    /// Runs a query: ANN candidates, then reranking as `opts.rerank` says.
    pub fn query(&self, text: &str, opts: &QueryOptions) -> Result<QueryResult> {
        let mut result = QueryResult::default();
        if opts.top_k == 0 {
            return Ok(result);
        }
        if text.trim().is_empty() {
            return Err(Error::InvalidInput("empty query".into()));
        }
        let k = opts.candidates.max(opts.top_k);
        if k > MAX_CANDIDATES {
            // Memory per query grows with candidates x state size (~2 MB each at the 0.1B shape).
            let what = "query candidates (max of top_k and candidates)".to_string();
            return Err(Error::LimitExceeded { what, value: k, max: MAX_CANDIDATES });
        }
        if let Some(ef) = opts.ef.filter(|&ef| ef > MAX_CANDIDATES) {
            // The search allocates for `ef` results.
            return Err(Error::LimitExceeded {
                what: "query ef (HNSW search width)".into(),
                value: ef,
                max: MAX_CANDIDATES,
            });
        }
        if opts.rerank != Rerank::None && !self.inner.shape.has_reranker {
            return Err(crate::model::ModelError::NoReranker.into());
        }

        let start = Instant::now();
        let embedding = self.embed_query(text)?;
        let embedded = Instant::now();
        let found = self.ann_candidates(&embedding, k, opts)?;
        let searched = Instant::now();
        let reader = self.inner.read()?;
        let mut candidates = load_records(&reader, found, &mut result.skipped)?;
        let mut load = searched.elapsed();
        let logits = match opts.rerank {
            Rerank::None => None,
            Rerank::Offline => {
                Some(self.rerank_offline(&reader, text, &mut candidates, &mut result.skipped, &mut load)?)
            }
            Rerank::Online => Some(self.rerank_online(text, &candidates)?),
        };
        drop(reader);
        let reranked = Instant::now();

        result.hits = assemble(candidates, logits.as_deref(), opts.top_k);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        result.timings.embed_ms = ms(embedded - start);
        result.timings.ann_ms = ms(searched - embedded);
        result.timings.load_ms = ms(load);
        result.timings.rerank_ms = ms(reranked - searched) - ms(load);
        Ok(result)
    }

    /// Unit-length embeddings of `texts`, computed as for the collection's documents and queries
    /// (text + EOS; over-long texts are refused or truncated as the collection's `truncate` says).
    /// Loads the model on first use.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tok = Tokenizer::world();
        let cfg = self.inner.record.read().config.clone();
        let max = cfg.max_doc_tokens.max(2);
        let mut tokens = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(Error::InvalidInput(format!("text {i} is empty")));
            }
            let mut t = tok.encode(text);
            if t.len() + 1 > max {
                if !cfg.truncate {
                    return Err(Error::TooLong { id: format!("text {i}"), tokens: t.len() + 1, max });
                }
                t.truncate(max - 1);
            }
            t.push(crate::tokenizer::EOS_TOKEN);
            tokens.push(t);
        }
        let model = self.inner.model()?;
        let mut out = Vec::with_capacity(texts.len());
        // Batches of RERANK_CHUNK bound the activations alive at once.
        for chunk in tokens.chunks(super::RERANK_CHUNK) {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            for mut e in model.runtime.embed(&refs)? {
                normalise(&mut e).map_err(|e| Error::InvalidInput(format!("embedding: {e}")))?;
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The query's unit-length embedding (text + EOS).
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let tokens = Tokenizer::world().encode_with_eos(text);
        let model = self.inner.model()?;
        let mut embedding = model.runtime.embed(&[&tokens])?.remove(0);
        normalise(&mut embedding).map_err(|e| Error::InvalidInput(format!("query: {e}")))?;
        Ok(embedding)
    }

    /// The `k` nearest live documents (filter applied inside the search): (key, similarity).
    fn ann_candidates(&self, embedding: &[f32], k: usize, opts: &QueryOptions) -> Result<Vec<(u64, f32)>> {
        let inner = &self.inner;
        let ef = opts.ef.unwrap_or(inner.record.read().config.hnsw_ef_search).max(k);
        let meta = inner.metadata.read();
        let index = inner.index.read();
        let found = match &opts.filter {
            Some(f) => {
                let keep = |key: u64| meta.get(&key).is_some_and(|m| f.matches(m));
                index.search(embedding, k, ef, Some(&keep))?
            }
            None => index.search(embedding, k, ef, None)?,
        };
        Ok(found)
    }

    /// Offline rerank: decode each candidate's stored state and resume it with the query, at
    /// most [`RERANK_CHUNK`] decoded states alive at a time (~2 MB each at the 0.1B shape).
    /// Candidates whose state is missing or damaged are moved to `skipped`; time spent reading
    /// and decoding states is added to `load`.
    fn rerank_offline(
        &self,
        reader: &CollectionReader,
        text: &str,
        candidates: &mut Vec<Candidate>,
        skipped: &mut Vec<Skipped>,
        load: &mut Duration,
    ) -> Result<Vec<f32>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let codec = inner.codec.as_ref().ok_or_else(|| Error::Config("this collection keeps no states".into()))?;
        let runtime = &inner.model()?.runtime;
        let query = Tokenizer::world().encode_with_eos(&offline_query_text(text));
        let mut logits = Vec::with_capacity(candidates.len());
        let mut usable = Vec::with_capacity(candidates.len());
        for chunk in candidates.chunks(RERANK_CHUNK) {
            let t = Instant::now();
            let mut states = Vec::with_capacity(chunk.len());
            for c in chunk {
                let decoded = match reader.state(c.key)? {
                    Some(blob) => codec.decode(&blob).map_err(|e| format!("state: {e}")),
                    None => Err("state missing".to_string()),
                };
                usable.push(decoded.is_ok());
                match decoded {
                    Ok(s) => states.push(s),
                    Err(reason) => skipped.push(Skipped { id: c.record.id.clone(), reason }),
                }
            }
            *load += t.elapsed();
            let queries = vec![query.as_slice(); states.len()];
            logits.extend(runtime.resume_and_score(states, &queries)?);
        }
        let mut keep = usable.into_iter();
        candidates.retain(|_| keep.next().unwrap_or(false));
        Ok(logits)
    }

    /// Online rerank: read every candidate with the query from scratch.
    fn rerank_online(&self, text: &str, candidates: &[Candidate]) -> Result<Vec<f32>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let tok = Tokenizer::world();
        let seqs: Vec<Vec<u32>> =
            candidates.iter().map(|c| tok.encode_with_eos(&online_text(&c.record.text, text))).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        Ok(self.inner.model()?.runtime.online_scores(&refs)?)
    }
}

/// Reads the candidates' records; a damaged one is moved to `skipped`, a vanished one (deleted
/// since the search) dropped.
fn load_records(
    reader: &CollectionReader,
    found: Vec<(u64, f32)>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::with_capacity(found.len());
    for (key, similarity) in found {
        match reader.doc(key) {
            Ok(Some(record)) => out.push(Candidate { key, record, similarity }),
            Ok(None) => {}
            Err(e @ StoreError::Corrupt { .. }) => {
                skipped.push(Skipped { id: format!("key {key}"), reason: e.to_string() });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Hits sorted best first (by logit when reranked, else by similarity), cut to `top_k`.
fn assemble(candidates: Vec<Candidate>, logits: Option<&[f32]>, top_k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = candidates
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let logit = logits.and_then(|l| l.get(i).copied());
            Hit {
                id: c.record.id,
                similarity: c.similarity,
                logit,
                probability: logit.map(sigmoid),
                metadata: parse_metadata(&c.record.metadata),
                text: c.record.text,
            }
        })
        .collect();
    hits.sort_by(|a, b| b.logit.unwrap_or(b.similarity).total_cmp(&a.logit.unwrap_or(a.similarity)));
    hits.truncate(top_k);
    hits
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
