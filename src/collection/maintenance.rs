//! Statistics, the integrity check, and the ANN index builds (at open, after deletions, on
//! request).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{parse_metadata, CheckReport, Collection, CollectionStats, HnswSettings, IndexStatus};
use crate::error::Result;
use crate::index::{AnnIndex, IndexParams, EXACT_BELOW};
use crate::store::{DocRecord, FORMAT_VERSION};

impl Collection {
    /// Sizes, counts and parameters.
    pub fn stats(&self) -> Result<CollectionStats> {
        let inner = &self.inner;
        let r = inner.read()?;
        let (mut n, mut doc_bytes, mut tokens) = (0u64, 0u64, 0u64);
        r.for_each_doc(|_, raw| -> Result<()> {
            n += 1;
            doc_bytes += raw.len() as u64;
            if let Ok(rec) = DocRecord::decode(raw, String::new) {
                tokens += u64::from(rec.tokens);
            }
            Ok(())
        })?;
        let state_bytes = r.state_bytes()?;
        let per = |x: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let rec = inner.record.read().clone();
        let index = inner.index.read();
        Ok(CollectionStats {
            name: rec.name,
            documents: n,
            doc_bytes_per_document: per(doc_bytes),
            state_bytes_per_document: per(state_bytes),
            tokens_per_document: per(tokens),
            state_preset: rec.config.state_preset.clone(),
            state_layers: inner.shape.state_layers,
            reranker_layers: inner.shape.reranker_layers.clone(),
            hnsw: HnswSettings {
                m: rec.config.hnsw_m,
                ef_construction: rec.config.hnsw_ef_construction,
                ef_search: rec.config.hnsw_ef_search,
            },
            index_entries: index.len(),
            index_tombstones: index.tombstones(),
            index_graph_ready: index.has_graph(),
            index_memory_bytes: index.memory_bytes(),
            index_origin: inner.index_origin.read().clone(),
            fingerprint: rec.fingerprint,
            format_version: FORMAT_VERSION,
        })
    }

    /// The ANN index's state, without reading the store (unlike [`Self::stats`]).
    #[must_use]
    pub fn index_status(&self) -> IndexStatus {
        let index = self.inner.index.read();
        IndexStatus {
            entries: index.len(),
            tombstones: index.tombstones(),
            graph_ready: index.has_graph(),
            memory_bytes: index.memory_bytes(),
            unreachable: index.orphans(),
            origin: self.inner.index_origin.read().clone(),
        }
    }

    /// Verifies every record's checksum, every state, and that ids, documents and the ANN index
    /// agree. Damage is reported with the affected ids; nothing is modified.
    pub fn check(&self) -> Result<CheckReport> {
        let inner = &self.inner;
        let mut report = CheckReport::default();
        let r = inner.read()?;
        let mut ids_by_key = HashMap::new();
        r.for_each_id(|id, key| -> Result<()> {
            ids_by_key.insert(key, id.to_string());
            Ok(())
        })?;
        let mut doc_keys = HashSet::new();
        // Readable records are the ones the index holds: a damaged one cannot be indexed, unless
        // the index was loaded from a copy saved before the damage (its vector is intact there).
        let mut readable = 0;
        let mut unreadable = Vec::new();
        r.for_each_doc(|key, raw| -> Result<()> {
            doc_keys.insert(key);
            report.documents += 1;
            let id = ids_by_key.get(&key).cloned().unwrap_or_else(|| format!("key {key}"));
            let mut damaged = false;
            match DocRecord::decode(raw, || format!("document {id:?}")) {
                Ok(rec) if !indexable(&rec.embedding, inner.shape.width) => {
                    report.problems.push(format!(
                        "document {id:?}: its embedding ({} values) cannot be indexed",
                        rec.embedding.len()
                    ));
                    damaged = true;
                }
                Ok(rec) if rec.id != id => {
                    report.problems.push(format!("document {id:?}: record holds id {:?}", rec.id));
                    damaged = true;
                    readable += 1;
                }
                Ok(_) => readable += 1,
                Err(e) => {
                    report.problems.push(e.to_string());
                    damaged = true;
                    unreadable.push(key);
                }
            }
            if let Some(codec) = &inner.codec {
                if let Some(blob) = r.state(key)? {
                    if let Err(e) = codec.decode(&blob) {
                        report.problems.push(format!("state of document {id:?}: {e}"));
                        damaged = true;
                    }
                } else {
                    report.problems.push(format!("document {id:?} has no state"));
                    damaged = true;
                }
            }
            if !ids_by_key.contains_key(&key) {
                report.problems.push(format!("document key {key} has no id entry"));
            }
            if damaged {
                report.damaged_ids.push(id);
            }
            Ok(())
        })?;
        for (key, id) in &ids_by_key {
            if !doc_keys.contains(key) {
                report.problems.push(format!("id {id:?} points to missing document key {key}"));
            }
        }
        let index = inner.index.read();
        readable += unreadable.iter().filter(|k| index.contains(**k)).count();
        let live = index.len();
        if live != readable {
            report.problems.push(format!("ANN index holds {live} entries, the store {readable} readable documents"));
        }
        Ok(report)
    }

    /// Rebuilds the ANN index from the stored embeddings now. Writers wait meanwhile (a document
    /// committed during the rebuild would be missing from the new index); queries go on. (Inserts
    /// and deletes never wait for a rebuild: the one deletions call for runs in the background.)
    pub fn rebuild_index(&self) -> Result<()> {
        let _w = self.inner.write_lock.lock();
        self.build_index_locked(false)
    }

    /// Once tombstones pass the index's threshold, starts a rebuild of the graph from the live
    /// entries in the background (the caller holds the write lock, briefly: the snapshot is
    /// taken from memory). The current index answers meanwhile; at most one such rebuild runs.
    pub(super) fn maybe_rebuild_index_locked(&self) {
        let inner = &self.inner;
        let index = inner.index.read();
        if !index.needs_rebuild() || inner.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let snapshot = index.live_entries();
        let params = IndexParams { max_elements: snapshot.len(), ..index.params() };
        drop(index);
        self.build_graph_in_background(snapshot, params);
    }

    /// Reads every record into a new index and the metadata map. With `background`, a large
    /// collection (at least [`EXACT_BELOW`] documents) gets a flat index at once (exact searches)
    /// and its graph is built on another thread, then swapped in: opening does not wait for it.
    pub(super) fn build_index_locked(&self, background: bool) -> Result<()> {
        let inner = &self.inner;
        let dim = inner.shape.width;
        let params = inner.index.read().params();
        if background {
            // Opening: a saved index, brought up to date, spares building the graph.
            match self.load_saved_index(params)? {
                Ok(origin) => {
                    *inner.index_origin.write() = origin;
                    return Ok(());
                }
                Err(why) => *inner.index_origin.write() = format!("built from the documents ({why})"),
            }
        } else {
            *inner.index_origin.write() = "built from the documents (rebuild requested)".into();
        }
        let mut items = Vec::new();
        let mut metadata = HashMap::new();
        inner.read()?.for_each_doc(|key, raw| -> Result<()> {
            // A damaged record, or one whose embedding the index cannot hold, stays out of the
            // index (`check` names it): one bad record must not make the collection unopenable.
            let rec = DocRecord::decode(raw, String::new).ok().filter(|rec| indexable(&rec.embedding, dim));
            if let Some(rec) = rec {
                metadata.insert(key, Arc::new(parse_metadata(&rec.metadata)));
                items.push((key, rec.embedding));
            }
            Ok(())
        })?;
        let params = IndexParams { max_elements: items.len(), ..inner.index.read().params() };
        *inner.metadata.write() = metadata;
        let in_background = background && items.len() >= EXACT_BELOW;
        let index = if in_background {
            let flat = AnnIndex::flat(dim, params);
            flat.insert_batch(&items)?;
            flat
        } else {
            AnnIndex::rebuild(std::mem::take(&mut items).into_iter(), dim, params)?
        };
        *inner.index.write() = index;
        inner.index_generation.fetch_add(1, Ordering::AcqRel);
        if in_background && !inner.rebuilding.swap(true, Ordering::AcqRel) {
            self.build_graph_in_background(items, params);
        }
        Ok(())
    }

    /// Builds the HNSW graph of `snapshot` (the live entries of the current index) on a new
    /// thread and swaps it in when done, caught up with whatever writers added or deleted
    /// meanwhile; if the index was replaced in the meantime (an explicit rebuild), the result is
    /// dropped. The caller has set `rebuilding`; it is cleared when the thread ends. The thread
    /// holds no strong reference to the collection: closing the database stops it at the next
    /// step.
    fn build_graph_in_background(&self, snapshot: Vec<(u64, Vec<f32>)>, params: IndexParams) {
        let weak = Arc::downgrade(&self.inner);
        let dim = self.inner.shape.width;
        let generation = self.inner.index_generation.load(Ordering::Acquire);
        let build = move || {
            let build_and_swap = || {
                let base: HashSet<u64> = snapshot.iter().map(|(k, _)| *k).collect();
                let graph = AnnIndex::new(dim, params);
                for step in snapshot.chunks(EXACT_BELOW) {
                    if weak.strong_count() == 0 || graph.insert_batch(step).is_err() {
                        return;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                let _w = inner.write_lock.lock();
                if inner.index_generation.load(Ordering::Acquire) != generation {
                    return;
                }
                let current = inner.index.read();
                if graph.catch_up(&base, &current).is_err() {
                    return;
                }
                drop(current);
                *inner.index.write() = graph;
                inner.index_generation.fetch_add(1, Ordering::AcqRel);
            };
            build_and_swap();
            if let Some(inner) = weak.upgrade() {
                inner.rebuilding.store(false, Ordering::Release);
            }
        };
        // Without a thread the current index keeps answering (exactly, or with tombstones
        // filtered); nothing is lost, and the next write tries again.
        if std::thread::Builder::new().name("rwkvdb-index-build".into()).spawn(build).is_err() {
            self.inner.rebuilding.store(false, Ordering::Release);
        }
    }
}

/// Whether the index can hold `v`: the collection's dimension, finite, unit length (as every
/// insert path stores it).
pub(super) fn indexable(v: &[f32], dim: usize) -> bool {
    let norm: f32 = v.iter().map(|x| x * x).sum();
    v.len() == dim && v.iter().all(|x| x.is_finite()) && (0.5..2.0).contains(&norm)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::db::ModelRegistry;
    use crate::model::ModelShape;
    use crate::store::{CollectionConfig, CollectionRecord, CollectionTables, DocRecord, Store};
    use crate::{Collection, OpenOptions};

    /// Records whose embedding the index cannot hold (written past the insert checks, as a
    /// damaged or foreign file could hold them) are left out of the index and reported; the
    /// collection still opens, and its good documents are indexed. No model is needed.
    #[test]
    fn unindexable_records_do_not_make_a_collection_unopenable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db.redb"), true, 1 << 20).unwrap());
        let shape =
            ModelShape { width: 4, layers: 1, state_layers: 0, reranker_layers: Vec::new(), has_reranker: false };
        let record = store
            .create_collection("c", |id| CollectionRecord {
                id,
                name: "c".into(),
                config: CollectionConfig::new("/absent/emb.pth", None),
                fingerprint: "f".into(),
                next_key: 10,
                shape: Some(shape),
            })
            .unwrap()
            .unwrap();
        let doc = |id: &str, embedding: Vec<f32>| DocRecord {
            id: id.into(),
            text: format!("text of {id}"),
            metadata: "null".into(),
            embedding,
            tokens: 3,
        };
        let docs = [
            doc("good", vec![0.6, 0.8, 0.0, 0.0]),
            doc("zero", vec![0.0; 4]),
            doc("nan", vec![f32::NAN, 0.0, 0.0, 1.0]),
            doc("short", vec![1.0, 0.0]),
            doc("unnormalised", vec![3.0, 4.0, 0.0, 0.0]),
        ];
        store
            .write(&CollectionTables::new(record.id), true, |w| {
                for (key, d) in (1..).zip(&docs) {
                    w.put_doc(key, d, None)?;
                }
                Ok::<_, crate::Error>(())
            })
            .unwrap();
        let registry = Arc::new(ModelRegistry::new(&OpenOptions::default()));
        let c = Collection::open(store, record, registry, None, true).unwrap();
        assert_eq!(c.count().unwrap(), 5);
        let stats = c.stats().unwrap();
        assert_eq!(stats.index_entries, 1);
        let report = c.check().unwrap();
        let mut damaged = report.damaged_ids.clone();
        damaged.sort();
        assert_eq!(damaged, ["nan", "short", "unnormalised", "zero"], "{:?}", report.problems);
        assert!(report.problems.iter().any(|p| p.contains("\"zero\"") && p.contains("cannot be indexed")));
        assert_eq!(c.get("good").unwrap().unwrap().text, "text of good");
        assert!(!c.model_loaded());
    }
}
