//! The ANN index saved inside the database file, and loaded back when a collection opens.
//!
//! A saved index is a cache of what the documents table says: redb stays the source of truth.
//! Loading checks every part against the header's sizes and xxh3 checksums, then reconciles
//! the index with the stored ids (documents deleted since become tombstones, documents stored
//! since are read and inserted), so a stale copy is as good as a fresh one, only slower to
//! catch up. Anything unusable (missing, damaged, another dimension) is reported and the index
//! is rebuilt from the documents, as before saved indexes existed.
//!
//! Saved: by [`Collection::checkpoint`], when the database handle closes, before compaction,
//! and in the background once enough changed ([`SAVE_AFTER_CHANGES`]). Each save is one redb
//! transaction (the header last), so a crash leaves the old copy or the new one. Vector blocks
//! already saved under the same index layout are not written again.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{parse_metadata, Collection};
use crate::error::{Error, Result};
use crate::index::{AnnIndex, IndexParams, BLOCK_SLOTS};
use crate::store::{IndexHeader, PartInfo, INDEX_CORE, INDEX_FIRST_BLOCK, INDEX_METADATA};

/// A background save starts once this many documents were inserted or deleted since the last
/// save, and at least a tenth of the collection.
pub const SAVE_AFTER_CHANGES: u64 = 1_000;

/// What [`Collection::checkpoint`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// False when the saved index was already current.
    pub saved: bool,
    /// Index slots saved (live and deleted entries).
    pub slots: usize,
    /// Bytes written.
    pub bytes_written: u64,
    /// Vector blocks written.
    pub blocks_written: usize,
    /// Vector blocks kept from the previous save: saved whole under the same index layout,
    /// they still hold the same vectors.
    pub blocks_kept: usize,
    /// Wall time, including waiting for a graph still being built.
    pub seconds: f64,
}

/// The saved index as of the last save or load.
#[derive(Debug, Default)]
pub(super) struct SavedIndex {
    /// Layout of the index saved (`None`: nothing usable saved).
    layout: Option<u64>,
    /// `CollectionInner::changes` when it was taken.
    changes: u64,
}

impl Collection {
    /// Saves the ANN index (graph, vectors, the indexed documents' metadata) into the database
    /// file, so that the next open loads it instead of rebuilding the graph. Waits for a graph
    /// still being built in the background. Does nothing when the saved copy is current.
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        let start = Instant::now();
        self.wait_for_graph()?;
        let mut report = self.save_index()?.unwrap_or_default();
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Saves the index if it changed and has its graph (what closing the database does).
    pub(crate) fn save_index_on_close(&self) -> Result<()> {
        self.save_index().map(drop)
    }

    /// Returns once the index has its graph (building it here if no background build runs).
    fn wait_for_graph(&self) -> Result<()> {
        let inner = &self.inner;
        loop {
            if inner.index.read().has_graph() {
                return Ok(());
            }
            if !inner.rebuilding.load(Ordering::Acquire) {
                let _w = inner.write_lock.lock();
                if !inner.index.read().has_graph() {
                    self.build_index_locked(false)?;
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Saves the index unless the saved copy is current or the index has no graph yet;
    /// `None` then.
    pub(super) fn save_index(&self) -> Result<Option<CheckpointReport>> {
        let inner = &self.inner;
        let _one = inner.saving.lock();
        let start = Instant::now();
        let changes = inner.changes.load(Ordering::Acquire);
        let layout = inner.index.read().layout();
        {
            // Checked before anything is read: closing a database calls this for every
            // collection it opened.
            let saved = inner.saved.lock();
            if saved.layout == Some(layout) && saved.changes == changes {
                return Ok(None);
            }
        }
        let old = match inner.store.read_index(&inner.tables)? {
            Some(r) => r.header().ok().flatten(),
            None => None,
        };
        let dim = inner.shape.width;
        let index = inner.index.read();
        // A rebuild may have swapped a new index in since the check: save that one.
        let layout = index.layout();
        // Blocks saved whole under this layout still hold the same vectors.
        let full_block = (BLOCK_SLOTS * dim * 4) as u64;
        let kept: Vec<PartInfo> = match &old {
            Some(h) if h.layout == layout && h.dim as usize == dim => {
                h.blocks.iter().take_while(|b| b.bytes == full_block).copied().collect()
            }
            _ => Vec::new(),
        };
        let Some(snap) = index.snapshot(kept.len()) else { return Ok(None) };
        drop(index);
        let metadata = encode_metadata(&inner.metadata.read())?;
        let mut blocks = kept;
        let first_new = blocks.len();
        blocks.extend(snap.blocks.iter().map(|(_, b)| PartInfo::of(b)));
        let header = IndexHeader {
            layout,
            dim: u32::try_from(dim).map_err(|_| Error::Config("dimension overflows".into()))?,
            slots: snap.slots as u64,
            max_key: snap.max_key,
            core: PartInfo::of(&snap.core),
            metadata: PartInfo::of(&metadata),
            blocks,
        };
        let mut parts: Vec<(u32, &[u8])> = vec![(INDEX_CORE, &snap.core), (INDEX_METADATA, &metadata)];
        for (b, bytes) in &snap.blocks {
            let part = u32::try_from(*b).ok().and_then(|b| INDEX_FIRST_BLOCK.checked_add(b));
            parts.push((part.ok_or_else(|| Error::Config("too many vector blocks".into()))?, bytes));
        }
        let drop_from = INDEX_FIRST_BLOCK.saturating_add(u32::try_from(first_new).unwrap_or(u32::MAX));
        inner
            .store
            .write_index(&inner.tables, inner.durable, &header, &parts, drop_from)
            .map_err(|e| inner.dropped_is_missing(e.into()))?;
        *inner.saved.lock() = SavedIndex { layout: Some(layout), changes };
        let bytes_written = parts.iter().map(|(_, b)| b.len() as u64).sum();
        Ok(Some(CheckpointReport {
            saved: true,
            slots: snap.slots,
            bytes_written,
            blocks_written: snap.blocks.len(),
            blocks_kept: first_new,
            seconds: start.elapsed().as_secs_f64(),
        }))
    }

    /// After a write (the caller holds the write lock): starts a background save once enough
    /// changed since the last one. At most one runs; errors only cost the next open its time.
    pub(super) fn maybe_save_index_in_background(&self) {
        let inner = &self.inner;
        let since = inner.changes.load(Ordering::Acquire).saturating_sub(inner.saved.lock().changes);
        let live = inner.index.read().len() as u64;
        if since < SAVE_AFTER_CHANGES.max(live / 10) || inner.saving_in_background.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let running = inner.saving_in_background.clone();
        let save = move || {
            if let Some(inner) = weak.upgrade() {
                let _ = (Collection { inner }).save_index();
            }
            // Cleared only now that this thread holds no handle: once it reads false, closing
            // the database closes the file.
            running.store(false, Ordering::Release);
        };
        if std::thread::Builder::new().name("rwkvdb-index-save".into()).spawn(save).is_err() {
            inner.saving_in_background.store(false, Ordering::Release);
        }
    }

    /// Waits for a background save to finish (closing the database must not leave the file
    /// open in a thread: reopening it at once would find it "already open").
    pub(crate) fn wait_for_background_save(&self) {
        while self.inner.saving_in_background.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Loads the saved index and brings it up to date with the stored documents. `Ok(Err(why))`
    /// when there is none or it cannot be used; then nothing was changed.
    pub(super) fn load_saved_index(&self, params: IndexParams) -> Result<std::result::Result<String, String>> {
        let inner = &self.inner;
        let dim = inner.shape.width;
        let Some(reader) = inner.store.read_index(&inner.tables)? else { return Ok(Err("no saved index".into())) };
        let header = match reader.header() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Err("no saved index".into())),
            Err(e) => return Ok(Err(e.to_string())),
        };
        if header.dim as usize != dim {
            return Ok(Err(format!("saved index has dimension {}, the model {dim}", header.dim)));
        }
        let part = |n: u32, info: &PartInfo, what: &str| -> std::result::Result<Vec<u8>, String> {
            let bytes = reader.part(n).map_err(|e| e.to_string())?.unwrap_or_default();
            if PartInfo::of(&bytes) == *info {
                Ok(bytes)
            } else {
                Err(format!("saved index: {what} fails its checksum"))
            }
        };
        let loaded = (|| {
            let core = part(INDEX_CORE, &header.core, "graph")?;
            let metadata = part(INDEX_METADATA, &header.metadata, "metadata")?;
            let mut blocks = Vec::with_capacity(header.blocks.len());
            for (b, info) in header.blocks.iter().enumerate() {
                let n =
                    u32::try_from(b).ok().and_then(|b| INDEX_FIRST_BLOCK.checked_add(b)).ok_or("too many blocks")?;
                blocks.push(part(n, info, &format!("vector block {b}"))?);
            }
            let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
            let index = AnnIndex::from_snapshot(dim, params, header.layout, &core, &refs).map_err(|e| e.to_string())?;
            let metadata = decode_metadata(&metadata)?;
            Ok::<_, String>((index, metadata))
        })();
        drop(reader);
        let (index, saved_metadata) = match loaded {
            Ok(x) => x,
            Err(why) => return Ok(Err(why)),
        };
        // Reconcile with the documents stored now.
        let r = inner.read()?;
        let mut live = HashSet::new();
        r.for_each_id(|_, key| -> Result<()> {
            live.insert(key);
            Ok(())
        })?;
        let (deleted, missing) = index.reconcile(&live);
        let mut metadata: std::collections::HashMap<u64, Arc<serde_json::Value>> = saved_metadata
            .into_iter()
            .filter(|(k, _)| live.contains(k))
            .map(|(k, json)| (k, Arc::new(parse_metadata(&json))))
            .collect();
        let mut items = Vec::with_capacity(missing.len());
        for key in missing {
            // A damaged or unindexable record stays out, as in a rebuild (`check` names it).
            if let Ok(Some(rec)) = r.doc(key) {
                if super::maintenance::indexable(&rec.embedding, dim) {
                    metadata.insert(key, Arc::new(parse_metadata(&rec.metadata)));
                    items.push((key, rec.embedding));
                }
            }
        }
        index.insert_batch(&items)?;
        *inner.metadata.write() = metadata;
        *inner.index.write() = index;
        inner.index_generation.fetch_add(1, Ordering::AcqRel);
        // What was replayed is not in the saved copy yet.
        let replayed = (deleted + items.len()) as u64;
        let changes = inner.changes.fetch_add(replayed, Ordering::AcqRel) + replayed;
        *inner.saved.lock() = SavedIndex { layout: Some(header.layout), changes: changes - replayed };
        Ok(Ok(format!("saved index ({} documents added and {deleted} deleted since it was saved)", items.len())))
    }
}

/// The metadata map as `(key, JSON text)` pairs (bincode); `null` metadata is left out.
fn encode_metadata(map: &std::collections::HashMap<u64, Arc<serde_json::Value>>) -> Result<Vec<u8>> {
    let pairs: Vec<(u64, String)> =
        map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (*k, v.to_string())).collect();
    bincode::serde::encode_to_vec(&pairs, bincode::config::standard())
        .map_err(|e| Error::Config(format!("encoding metadata: {e}")))
}

fn decode_metadata(bytes: &[u8]) -> std::result::Result<Vec<(u64, String)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (pairs, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| format!("saved index metadata: {e}"))?;
    if used != bytes.len() {
        return Err("saved index metadata: trailing bytes".into());
    }
    Ok(pairs)
}
