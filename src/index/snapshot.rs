//! The index as bytes: a core part (keys, deletions, graph) and vector blocks, so that a caller
//! storing them can skip blocks it saved before (a block's vectors never change while the
//! index keeps its layout).

use super::hnsw::Graph;
use super::{AnnIndex, IndexError, IndexParams, State};

/// Slots per vector block.
pub const BLOCK_SLOTS: usize = 4096;
/// Start of the core part.
const MAGIC: &[u8; 8] = b"RWKVHNSW";
/// Version of the core part's layout.
const VERSION: u32 = 1;

/// A graph index in parts, for [`AnnIndex::from_snapshot`].
#[derive(Debug, Clone)]
pub struct IndexSnapshot {
    /// Identifies the index's slot layout (see [`AnnIndex::layout`]).
    pub layout: u64,
    /// Slots, live and deleted.
    pub slots: usize,
    /// Highest key the index holds (live or deleted); `None` when empty.
    pub max_key: Option<u64>,
    /// Keys, deletion marks, orphans and the graph.
    pub core: Vec<u8>,
    /// `(block number, vectors as f32 little-endian)` from the requested block on; every block
    /// but the last holds [`BLOCK_SLOTS`] vectors.
    pub blocks: Vec<(usize, Vec<u8>)>,
}

/// Bounds-checked little-endian reads.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("ends early ({n} bytes wanted, {} left)", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn u32s(&mut self, n: usize) -> Result<Vec<u32>, String> {
        let b = self.bytes(n.checked_mul(4).ok_or("length overflows")?)?;
        Ok(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    fn u64s(&mut self, n: usize) -> Result<Vec<u64>, String> {
        let b = self.bytes(n.checked_mul(8).ok_or("length overflows")?)?;
        Ok(b.chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect())
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl AnnIndex {
    /// The index in parts, vector blocks from `from_block` on; `None` for a flat index (it has
    /// no graph to save). Taken under the read lock: searches go on, writers wait for the copy.
    #[must_use]
    pub fn snapshot(&self, from_block: usize) -> Option<IndexSnapshot> {
        let st = self.state.read();
        let graph = st.graph.as_ref()?;
        let slots = st.keys.len();
        let mut core = Vec::with_capacity(32 + slots * (9 + 4 * (2 * self.params.m + 1)));
        core.extend_from_slice(MAGIC);
        core.extend_from_slice(&VERSION.to_le_bytes());
        #[allow(clippy::cast_possible_truncation)]
        core.extend_from_slice(&(self.dim as u32).to_le_bytes());
        core.extend_from_slice(&(slots as u64).to_le_bytes());
        for k in &st.keys {
            core.extend_from_slice(&k.to_le_bytes());
        }
        core.extend(st.deleted.iter().map(|&d| u8::from(d)));
        #[allow(clippy::cast_possible_truncation)]
        core.extend_from_slice(&(st.orphans.len() as u32).to_le_bytes());
        for o in &st.orphans {
            core.extend_from_slice(&o.to_le_bytes());
        }
        graph.encode(&mut core);
        let per_block = BLOCK_SLOTS * self.dim;
        let blocks = st
            .vectors
            .chunks(per_block)
            .enumerate()
            .skip(from_block)
            .map(|(b, vs)| (b, vs.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        Some(IndexSnapshot { layout: self.layout, slots, max_key: st.keys.iter().copied().max(), core, blocks })
    }

    /// Rebuilds a graph index from a snapshot's `core` and all its vector `blocks` (in order),
    /// with the `layout` it was saved under. Everything is checked: lengths, links, keys, and
    /// that every vector has unit length; any mismatch is [`IndexError::Snapshot`].
    pub fn from_snapshot(
        dim: usize,
        params: IndexParams,
        layout: u64,
        core: &[u8],
        blocks: &[&[u8]],
    ) -> Result<Self, IndexError> {
        let bad = IndexError::Snapshot;
        let mut r = Reader::new(core);
        if r.bytes(8).map_err(bad)? != MAGIC {
            return Err(IndexError::Snapshot("not an index snapshot".into()));
        }
        let version = r.u32().map_err(bad)?;
        if version != VERSION {
            return Err(IndexError::Snapshot(format!("snapshot version {version}, expected {VERSION}")));
        }
        let stored_dim = r.u32().map_err(bad)? as usize;
        if stored_dim != dim {
            return Err(IndexError::Snapshot(format!("snapshot of {stored_dim}-dimensional vectors, expected {dim}")));
        }
        let slots = usize::try_from(r.u64().map_err(bad)?).map_err(|_| bad("slot count overflows".into()))?;
        // Every slot takes at least 9 bytes here: a count beyond that is damage, not a size.
        if slots > core.len() / 9 || slots > u32::MAX as usize {
            return Err(bad(format!("{slots} slots cannot fit in {} bytes", core.len())));
        }
        let keys = r.u64s(slots).map_err(bad)?;
        let deleted: Vec<bool> = r.bytes(slots).map_err(bad)?.iter().map(|&b| b != 0).collect();
        let n_orphans = r.u32().map_err(bad)? as usize;
        let orphans = r.u32s(n_orphans).map_err(bad)?;
        if orphans.iter().any(|&o| o as usize >= slots) {
            return Err(bad("orphan slot out of range".into()));
        }
        let graph = Graph::decode(&mut r, slots).map_err(bad)?;
        if !r.is_empty() {
            return Err(bad("trailing bytes after the graph".into()));
        }
        let mut vectors = Vec::with_capacity(slots * dim);
        for (b, block) in blocks.iter().enumerate() {
            let want = BLOCK_SLOTS.min(slots.saturating_sub(b * BLOCK_SLOTS)) * dim * 4;
            if block.len() != want {
                return Err(bad(format!("vector block {b} has {} bytes, expected {want}", block.len())));
            }
            vectors.extend(block.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        if vectors.len() != slots * dim {
            return Err(bad(format!("{} vector blocks for {slots} slots", blocks.len())));
        }
        if vectors.chunks_exact(dim.max(1)).any(|v| !(0.98..1.02).contains(&v.iter().map(|x| x * x).sum::<f32>())) {
            return Err(bad("a stored vector is not of unit length".into()));
        }
        let mut slot_of = std::collections::HashMap::with_capacity(slots);
        for (s, k) in keys.iter().enumerate() {
            // A key added again lives in its newest slot; the older one must be deleted.
            #[allow(clippy::cast_possible_truncation)]
            if let Some(old) = slot_of.insert(*k, s as u32) {
                if !deleted[old as usize] {
                    return Err(bad(format!("key {k} live in two slots")));
                }
            }
        }
        let tombstones = deleted.iter().filter(|d| **d).count();
        let state = State { vectors, keys, slot_of, deleted, tombstones, graph: Some(graph), orphans };
        Ok(Self::with_state(dim, params, layout, state))
    }
}
