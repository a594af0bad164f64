//! The write path: insert, upsert, insert of precomputed documents, delete.
//!
//! Everything expensive (tokenizing, embedding, computing and encoding states) happens before
//! the writer lock is taken; writers serialise only on the commit.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::{
    Collection, DeleteReport, InsertReport, NewDocument, PrecomputedDocument, MAX_BATCH_DOCS, MAX_ID_BYTES,
    MAX_METADATA_BYTES, MAX_TEXT_BYTES, RERANK_CHUNK,
};
use crate::error::{Error, Result};
use crate::model::{templates, ModelState, Runtime};
use crate::store::DocRecord;
use crate::tokenizer::{Tokenizer, EOS_TOKEN};

/// The template-prefix states: the instruction and `Document: ` never change, so their state is
/// computed once. Greedy tokenization may merge the last prefix tokens with the document's first
/// characters, so states are kept for the full prefix and its shorter versions, and a document
/// resumes from the longest one its tokens really start with.
pub(super) struct PrefixCache {
    tokens: Vec<u32>,
    states: Vec<(usize, ModelState)>,
}

impl PrefixCache {
    pub(super) fn build(rt: &Runtime) -> Result<Self> {
        let tokens = Tokenizer::world().encode(templates::OFFLINE_DOCUMENT_PREFIX);
        let lens: Vec<usize> = (tokens.len().saturating_sub(3).max(1)..=tokens.len()).rev().collect();
        let seqs: Vec<&[u32]> = lens.iter().map(|&l| &tokens[..l]).collect();
        let states = rt.prefix_states(&seqs)?;
        Ok(Self { tokens, states: lens.into_iter().zip(states).collect() })
    }

    /// The longest cached prefix of `doc` and its state.
    fn find(&self, doc: &[u32]) -> Option<&(usize, ModelState)> {
        let common = self.tokens.iter().zip(doc).take_while(|(a, b)| a == b).count();
        self.states.iter().find(|(len, _)| *len <= common && *len < doc.len())
    }
}

/// The offline index template of `text` as tokens, at most `max + 32` of them (truncation keeps
/// the template's trailing newline, so queries resume the same way).
fn state_tokens_of(tok: &Tokenizer, text: &str, max: usize) -> Vec<u32> {
    let mut s = tok.encode(&templates::offline_document_text(text));
    let limit = max + 32;
    if s.len() > limit {
        s.truncate(limit - 1);
        s.extend(tok.encode("\n"));
    }
    s
}

/// The states after reading each of `seqs`, resumed from the cached template prefix, computed
/// [`RERANK_CHUNK`] sequences at a time and handed to `each` in order.
fn offline_states(
    rt: &Runtime,
    prefix: &PrefixCache,
    seqs: &[Vec<u32>],
    mut each: impl FnMut(ModelState) -> Result<()>,
) -> Result<()> {
    for chunk in seqs.chunks(RERANK_CHUNK) {
        let mut starts = Vec::with_capacity(chunk.len());
        let mut rests: Vec<&[u32]> = Vec::with_capacity(chunk.len());
        for s in chunk {
            if let Some((len, st)) = prefix.find(s) {
                starts.push(st.clone());
                rests.push(&s[*len..]);
            } else {
                starts.push(ModelState::zeros(rt.state_layers(), rt.config().width));
                rests.push(s);
            }
        }
        for state in rt.resume_states(starts, &rests)? {
            each(state)?;
        }
    }
    Ok(())
}

/// A document ready to be written (everything computed outside the write lock).
struct Prepared {
    record: DocRecord,
    metadata: Value,
    state: Option<Vec<u8>>,
}

impl Collection {
    /// Inserts documents; fails (writing nothing) if any id already exists.
    pub fn insert(&self, docs: Vec<NewDocument>) -> Result<InsertReport> {
        self.embed_and_commit(docs, false)
    }

    /// Inserts or replaces documents by id.
    pub fn upsert(&self, docs: Vec<NewDocument>) -> Result<InsertReport> {
        self.embed_and_commit(docs, true)
    }

    fn embed_and_commit(&self, docs: Vec<NewDocument>, replace: bool) -> Result<InsertReport> {
        if docs.is_empty() {
            return Ok(InsertReport::default());
        }
        let prepared = self.prepare(docs)?;
        self.commit(prepared, replace)
    }

    /// Tokenizes, embeds and computes the states of a batch.
    fn prepare(&self, docs: Vec<NewDocument>) -> Result<Vec<Prepared>> {
        let inner = &self.inner;
        let tok = Tokenizer::world();
        let cfg = inner.record.read().config.clone();
        let ids = batch_ids(docs.iter().map(|d| (d.id.as_deref(), d.text.as_str(), d.metadata.as_ref())))?;

        // Embedding input: text + EOS. State input: the offline index template (no EOS).
        let max = cfg.max_doc_tokens.max(2);
        let mut embed_tokens = Vec::with_capacity(docs.len());
        let mut state_tokens = Vec::with_capacity(docs.len());
        for (d, id) in docs.iter().zip(&ids) {
            let mut t = tok.encode(&d.text);
            if t.len() + 1 > max {
                if !cfg.truncate {
                    return Err(Error::TooLong { id: id.clone(), tokens: t.len() + 1, max });
                }
                t.truncate(max - 1);
            }
            t.push(EOS_TOKEN);
            embed_tokens.push(t);
            if inner.codec.is_some() {
                state_tokens.push(state_tokens_of(tok, &d.text, max));
            }
        }
        let refs: Vec<&[u32]> = embed_tokens.iter().map(Vec::as_slice).collect();
        let model = inner.model()?;
        let embeddings = model.runtime.embed(&refs)?;
        let states = match (&inner.codec, &model.prefix) {
            (Some(codec), Some(prefix)) => {
                // Only the encoded blobs (a few hundred KB each) live for the whole batch.
                let mut encoded = Vec::with_capacity(docs.len());
                offline_states(&model.runtime, prefix, &state_tokens, |state| {
                    encoded.push(Some(codec.encode(&state)?));
                    Ok(())
                })?;
                encoded
            }
            _ => vec![None; docs.len()],
        };
        let per_doc = docs.into_iter().zip(ids).zip(embeddings).zip(states).zip(embed_tokens);
        let mut out = Vec::with_capacity(per_doc.len());
        for ((((d, id), mut embedding), state), tokens) in per_doc {
            normalise(&mut embedding).map_err(|e| Error::InvalidInput(format!("document {id}: {e}")))?;
            let metadata = d.metadata.unwrap_or(Value::Null);
            let record = DocRecord {
                id,
                text: d.text,
                metadata: metadata.to_string(),
                embedding,
                tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            };
            out.push(Prepared { record, metadata, state });
        }
        Ok(out)
    }

    /// The states an insert of `texts` would store (before encoding): the embedder's state
    /// after reading each text in the offline document template, for the layers the collection
    /// keeps. For exporting, comparing with states computed elsewhere, and
    /// [`Self::insert_precomputed`]. Fails with `NoReranker` on a collection that keeps no states.
    pub fn document_states(&self, texts: &[&str]) -> Result<Vec<ModelState>> {
        let model = self.inner.model()?;
        let prefix = model.prefix.as_ref().ok_or(crate::model::ModelError::NoReranker)?;
        let tok = Tokenizer::world();
        let max = self.inner.record.read().config.max_doc_tokens.max(2);
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| state_tokens_of(tok, t, max)).collect();
        let mut out = Vec::with_capacity(texts.len());
        offline_states(&model.runtime, prefix, &seqs, |state| {
            out.push(state);
            Ok(())
        })?;
        Ok(out)
    }

    /// Inserts documents with embeddings and states computed elsewhere; fails (writing nothing)
    /// if any id already exists or any vector or state has the wrong shape. A degenerate
    /// embedding (wrong length, non-finite values, zero length, or a norm that under- or
    /// overflows) is refused before anything is written.
    pub fn insert_precomputed(&self, docs: Vec<PrecomputedDocument>) -> Result<InsertReport> {
        if docs.is_empty() {
            return Ok(InsertReport::default());
        }
        let inner = &self.inner;
        batch_ids(docs.iter().map(|d| (Some(d.id.as_str()), d.text.as_str(), d.metadata.as_ref())))?;
        let dim = inner.shape.width;
        let tok = Tokenizer::world();
        let mut prepared = Vec::with_capacity(docs.len());
        for d in docs {
            if d.embedding.len() != dim {
                return Err(Error::InvalidInput(format!(
                    "document {}: embedding of {} values, the collection's dimension is {dim}",
                    d.id,
                    d.embedding.len()
                )));
            }
            let mut embedding = d.embedding;
            normalise(&mut embedding).map_err(|e| Error::InvalidInput(format!("document {}: {e}", d.id)))?;
            let state = match (&inner.codec, &d.state) {
                (Some(codec), Some(st)) => Some(codec.encode(st)?),
                (Some(_), None) => {
                    return Err(Error::InvalidInput(format!("document {}: this collection keeps states", d.id)))
                }
                (None, _) => None,
            };
            let tokens = tok.encode(&d.text).len() + 1;
            let metadata = d.metadata.unwrap_or(Value::Null);
            let record = DocRecord {
                id: d.id,
                text: d.text,
                metadata: metadata.to_string(),
                embedding,
                tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
            };
            prepared.push(Prepared { record, metadata, state });
        }
        self.commit(prepared, false)
    }

    /// Writes prepared documents in one transaction, then updates the index and metadata map.
    fn commit(&self, prepared: Vec<Prepared>, replace: bool) -> Result<InsertReport> {
        let inner = &self.inner;
        let _w = inner.write_lock.lock();
        let mut record = inner.record.read().clone();
        let (new_keys, replaced_keys) = inner.write(|w| {
            let mut replaced = Vec::new();
            let mut keys = Vec::with_capacity(prepared.len());
            for p in &prepared {
                if let Some(old) = w.key_of(&p.record.id)? {
                    if !replace {
                        // Returning an error discards the whole batch.
                        return Err(Error::DuplicateId(p.record.id.clone()));
                    }
                    w.remove_doc(old)?;
                    replaced.push(old);
                }
                let key = record.next_key;
                record.next_key += 1;
                w.put_doc(key, &p.record, p.state.as_deref())?;
                keys.push(key);
            }
            w.put_record(&record)?;
            Ok((keys, replaced))
        })?;
        *inner.record.write() = record;

        // The store is committed; bring the in-memory index and metadata up to date.
        inner.forget(&replaced_keys);
        let items: Vec<(u64, Vec<f32>)> =
            new_keys.iter().zip(&prepared).map(|(&k, p)| (k, p.record.embedding.clone())).collect();
        inner.index.read().insert_batch(&items)?;
        {
            let mut meta = inner.metadata.write();
            for (k, p) in new_keys.iter().zip(&prepared) {
                meta.insert(*k, Arc::new(p.metadata.clone()));
            }
        }
        inner.changes.fetch_add((new_keys.len() + replaced_keys.len()) as u64, Ordering::AcqRel);
        self.maybe_rebuild_index_locked();
        self.maybe_save_index_in_background();
        let tokens = prepared.iter().map(|p| p.record.tokens as usize).sum();
        let ids = prepared.into_iter().map(|p| p.record.id).collect();
        Ok(InsertReport { ids, tokens, replaced: replaced_keys.len() })
    }

    /// Deletes documents by id; unknown ids are reported, not an error.
    pub fn delete(&self, ids: &[&str]) -> Result<DeleteReport> {
        let inner = &self.inner;
        let _w = inner.write_lock.lock();
        let (report, keys) = inner.write(|w| {
            let mut report = DeleteReport::default();
            let mut keys = Vec::new();
            for id in ids {
                match w.remove_id(id)? {
                    Some(key) => {
                        w.remove_doc(key)?;
                        keys.push(key);
                        report.deleted.push((*id).to_string());
                    }
                    None => report.missing.push((*id).to_string()),
                }
            }
            Ok((report, keys))
        })?;
        inner.forget(&keys);
        inner.changes.fetch_add(keys.len() as u64, Ordering::AcqRel);
        self.maybe_rebuild_index_locked();
        self.maybe_save_index_in_background();
        Ok(report)
    }
}

/// Scales `v` to unit length. Refuses a degenerate vector, so none is ever committed (the
/// index could not hold it, on this insert or on any later open): non-finite values, or a
/// squared length (in f32, as the index computes it) that is zero, underflows or overflows.
pub(super) fn normalise(v: &mut [f32]) -> std::result::Result<(), String> {
    if !v.iter().all(|x| x.is_finite()) {
        return Err("the embedding holds non-finite values".into());
    }
    let squared: f32 = v.iter().map(|x| x * x).sum();
    if squared == 0.0 {
        return Err("the embedding has no direction (zero length, or its squares underflow)".into());
    }
    if !squared.is_normal() {
        return Err(format!("the embedding's squared length {squared} under- or overflows f32"));
    }
    let norm = squared.sqrt();
    for x in v.iter_mut() {
        *x /= norm;
    }
    Ok(())
}

/// Checks a batch against the limits and returns its ids (given or generated): no empty text,
/// no empty or repeated id, nothing over [`MAX_BATCH_DOCS`], [`MAX_ID_BYTES`],
/// [`MAX_TEXT_BYTES`] or [`MAX_METADATA_BYTES`].
fn batch_ids<'a>(
    docs: impl ExactSizeIterator<Item = (Option<&'a str>, &'a str, Option<&'a Value>)>,
) -> Result<Vec<String>> {
    // The error text is only built when a limit is exceeded.
    let limit = |value: usize, max: usize, what: &dyn Fn() -> String| {
        if value > max {
            Err(Error::LimitExceeded { what: what(), value, max })
        } else {
            Ok(())
        }
    };
    limit(docs.len(), MAX_BATCH_DOCS, &|| "documents in one batch".into())?;
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for (i, (id, text, metadata)) in docs.enumerate() {
        let name = || format!("document {} (batch position {i})", id.unwrap_or("?"));
        if text.trim().is_empty() {
            return Err(Error::InvalidInput(format!("{} has empty text", name())));
        }
        limit(text.len(), MAX_TEXT_BYTES, &|| format!("{}: text bytes", name()))?;
        if let Some(m) = metadata {
            limit(m.to_string().len(), MAX_METADATA_BYTES, &|| format!("{}: metadata JSON bytes", name()))?;
        }
        let id = match id {
            Some("") => return Err(Error::InvalidInput(format!("batch position {i}: empty id"))),
            Some(id) => {
                limit(id.len(), MAX_ID_BYTES, &|| format!("batch position {i}: id bytes"))?;
                id.to_string()
            }
            None => generate_id(),
        };
        if !seen.insert(id.clone()) {
            return Err(Error::DuplicateId(id));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// A random 128-bit hex id for documents inserted without one.
fn generate_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().fold(String::with_capacity(32), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}
