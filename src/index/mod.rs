//! The ANN index: HNSW over L2-normalised embeddings, cosine similarity.
//!
//! - One arena holds every unit vector, slot after slot; the graph (`hnsw.rs`) stores slot
//!   numbers and the exact scans read the same arena: one copy of each vector in memory.
//! - Keys are the store's document keys. Deletes are tombstones, skipped *inside* the search;
//!   so are metadata filters, so a filtered query still fills `k` hits when `k` matching
//!   documents exist: a graph search that comes back short widens its beam and finally scans
//!   every vector exactly.
//! - A large collection opens with a *flat* index (exact scans, recall 1) while the graph is
//!   built in the background ([`AnnIndex::flat`], [`AnnIndex::catch_up`]), unless a saved
//!   snapshot ([`AnnIndex::snapshot`], [`AnnIndex::from_snapshot`]) can be loaded.
//! - Distance: `1 - dot(a, b)` on unit vectors, with an AVX2 kernel.
//!
//! Why not `hnsw_rs` (the design card's choice, used until 2026-12): it keeps its own copy of
//! every vector (the exact path needed a second), saves only to a pair of files (not into the
//! database file) and reloads into a graph that borrows its loader, and searched at about half
//! the speed of faiss's HNSW here; see docs/performance.md, "ANN index".

mod distance;
mod hnsw;
mod snapshot;

use std::collections::{HashMap, HashSet};

use parking_lot::{Mutex, RwLock};

pub use distance::dot;
use hnsw::{Graph, Vectors, Visited};
pub use snapshot::{IndexSnapshot, BLOCK_SLOTS};

/// Points inserted one at a time before parallel inserts are used: a young graph built by
/// many threads at once links poorly.
const SEQUENTIAL_PREFIX: usize = 1024;
/// Below this many points a search is an exact scan: as fast as the graph at this size, and
/// immune to its blind spots.
pub const EXACT_BELOW: usize = 10_000;
/// Widest beam a short search widens to before falling back to an exact scan.
const MAX_EF: usize = 4096;

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Links per node (layer 0 has twice as many), 2..=1024.
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Default beam width while searching.
    pub ef_search: usize,
    /// Expected number of elements (allocation hint).
    pub max_elements: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self { m: 16, ef_construction: 200, ef_search: 64, max_elements: 10_000 }
    }
}

/// Errors of the ANN index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector of the wrong length.
    #[error("embedding has {found} dimensions, the index {expected}")]
    Dimension {
        /// Index dimension.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// NaN or infinite components.
    #[error("embedding has non-finite components")]
    NonFinite,
    /// All-zero vector (no direction).
    #[error("embedding is the zero vector")]
    ZeroVector,
    /// Bad parameters.
    #[error("invalid index parameters: {0}")]
    Params(String),
    /// A snapshot that cannot be loaded (damaged, or from another index).
    #[error("index snapshot unusable: {0}")]
    Snapshot(String),
}

/// An HNSW index with tombstones. `Send + Sync`: searches share a read lock, inserts and
/// deletes take the write lock (a large batch is linked by several threads under it).
pub struct AnnIndex {
    dim: usize,
    params: IndexParams,
    layout: u64,
    state: RwLock<State>,
    /// Visited-lists of finished searches, reused by the next ones.
    visited: Mutex<Vec<Visited>>,
}

/// What the lock guards.
struct State {
    /// Unit vectors, `dim` floats per slot.
    vectors: Vec<f32>,
    /// Document key of each slot.
    keys: Vec<u64>,
    /// Current slot of each key.
    slot_of: HashMap<u64, u32>,
    /// Tombstone of each slot.
    deleted: Vec<bool>,
    /// Deleted slots.
    tombstones: usize,
    /// `None`: a flat index (every search an exact scan).
    graph: Option<Graph>,
    /// Slots a search for their own vector did not find: scanned exactly on every search.
    orphans: Vec<u32>,
}

impl State {
    fn empty(graph: Option<Graph>) -> Self {
        Self {
            vectors: Vec::new(),
            keys: Vec::new(),
            slot_of: HashMap::new(),
            deleted: Vec::new(),
            tombstones: 0,
            graph,
            orphans: Vec::new(),
        }
    }

    fn live(&self) -> usize {
        self.keys.len() - self.tombstones
    }
}

fn normalised(v: &[f32], dim: usize) -> Result<Vec<f32>, IndexError> {
    if v.len() != dim {
        return Err(IndexError::Dimension { expected: dim, found: v.len() });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::NonFinite);
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n == 0.0 || !n.is_finite() {
        return Err(IndexError::ZeroVector);
    }
    Ok(v.iter().map(|x| x / n).collect())
}

/// A new layout id: random, so two indexes never share one.
fn fresh_layout() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(n)
}

impl AnnIndex {
    /// An empty graph index for `dim`-dimensional vectors.
    #[must_use]
    pub fn new(dim: usize, params: IndexParams) -> Self {
        let graph = Graph::new(params.m, params.ef_construction);
        Self::with_state(dim, params, fresh_layout(), State::empty(Some(graph)))
    }

    /// An empty flat index: it keeps the vectors and answers every search by an exact scan.
    #[must_use]
    pub fn flat(dim: usize, params: IndexParams) -> Self {
        Self::with_state(dim, params, fresh_layout(), State::empty(None))
    }

    fn with_state(dim: usize, params: IndexParams, layout: u64, state: State) -> Self {
        Self { dim, params, layout, state: RwLock::new(state), visited: Mutex::new(Vec::new()) }
    }

    /// Identifies the slot layout: it changes only when an index is built anew, so vector
    /// blocks saved under the same layout still hold the same vectors.
    #[must_use]
    pub fn layout(&self) -> u64 {
        self.layout
    }

    /// Whether searches use the HNSW graph (false: a flat index).
    pub fn has_graph(&self) -> bool {
        self.state.read().graph.is_some()
    }

    /// `(key, unit vector)` of the live entries whose key passes `keep`.
    fn entries(&self, keep: impl Fn(u64) -> bool) -> Vec<(u64, Vec<f32>)> {
        let st = self.state.read();
        st.keys
            .iter()
            .zip(st.vectors.chunks_exact(self.dim))
            .zip(&st.deleted)
            .filter(|((k, _), d)| !**d && keep(**k))
            .map(|((k, v), _)| (*k, v.to_vec()))
            .collect()
    }

    /// The live entries as `(key, unit vector)`: what a graph built now must hold.
    pub fn live_entries(&self) -> Vec<(u64, Vec<f32>)> {
        self.entries(|_| true)
    }

    /// Brings `self`, built from `base` (a [`Self::live_entries`] snapshot of `current`), up
    /// to date with what `current` received since: its new entries and its deletes. The caller
    /// keeps writers out meanwhile, then replaces `current` by `self`.
    pub fn catch_up(&self, base: &HashSet<u64>, current: &AnnIndex) -> Result<(), IndexError> {
        let new = current.entries(|k| !base.contains(&k));
        if !new.is_empty() {
            self.insert_batch(&new)?;
        }
        let gone: Vec<u64> = {
            let st = current.state.read();
            base.iter().filter(|k| st.slot_of.get(k).is_none_or(|&s| st.deleted[s as usize])).copied().collect()
        };
        for key in gone {
            self.delete(key);
        }
        Ok(())
    }

    /// Makes the index agree with `live`, the keys stored now: live entries whose key is not
    /// in it become tombstones. Returns how many, and the keys of `live` the index lacks.
    pub fn reconcile(&self, live: &HashSet<u64>) -> (usize, Vec<u64>) {
        let mut st = self.state.write();
        let State { keys, deleted, tombstones, slot_of, .. } = &mut *st;
        let mut gone = 0;
        for (key, dead) in keys.iter().zip(deleted.iter_mut()) {
            if !*dead && !live.contains(key) {
                *dead = true;
                gone += 1;
            }
        }
        *tombstones += gone;
        let mut missing: Vec<u64> =
            live.iter().filter(|k| slot_of.get(k).is_none_or(|&s| deleted[s as usize])).copied().collect();
        missing.sort_unstable();
        (gone, missing)
    }

    /// The parameters.
    pub fn params(&self) -> IndexParams {
        self.params
    }

    /// Builds a graph index from `(key, embedding)` pairs (linked by several threads).
    pub fn rebuild(
        items: impl Iterator<Item = (u64, Vec<f32>)>,
        dim: usize,
        params: IndexParams,
    ) -> Result<Self, IndexError> {
        let items: Vec<(u64, Vec<f32>)> = items.collect();
        let idx = Self::new(dim, params);
        idx.insert_batch(&items)?;
        Ok(idx)
    }

    /// Adds one vector under `key` (a key already present is replaced).
    pub fn insert(&self, key: u64, embedding: &[f32]) -> Result<(), IndexError> {
        self.insert_batch(&[(key, embedding.to_vec())])
    }

    /// Adds vectors; a key already present is replaced (its old slot becomes a tombstone).
    /// Every vector is checked before anything changes.
    pub fn insert_batch(&self, items: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        let normed: Vec<Vec<f32>> = items.iter().map(|(_, v)| normalised(v, self.dim)).collect::<Result<_, _>>()?;
        let mut st = self.state.write();
        let first = st.keys.len();
        if first + items.len() > u32::MAX as usize {
            return Err(IndexError::Params("more than 2^32 slots".into()));
        }
        st.vectors.reserve(items.len() * self.dim);
        for ((key, _), v) in items.iter().zip(&normed) {
            #[allow(clippy::cast_possible_truncation)]
            let slot = st.keys.len() as u32;
            if let Some(old) = st.slot_of.insert(*key, slot) {
                if !std::mem::replace(&mut st.deleted[old as usize], true) {
                    st.tombstones += 1;
                }
            }
            st.keys.push(*key);
            st.deleted.push(false);
            st.vectors.extend_from_slice(v);
        }
        let State { vectors, keys, graph, orphans, .. } = &mut *st;
        if let Some(graph) = graph.as_mut() {
            graph.grow(keys[first..].iter().map(|&k| hnsw::level_of(k, self.params.m)));
            let v = Vectors { data: vectors.as_slice(), dim: self.dim };
            #[allow(clippy::cast_possible_truncation)]
            let new_slots = first as u32..keys.len() as u32;
            self.link(graph, v, new_slots.clone());
            orphans.extend(self.unreachable(graph, v, new_slots));
        }
        Ok(())
    }

    /// Links `slots` into `graph`: one by one while the graph is young, then in parallel.
    fn link(&self, graph: &Graph, v: Vectors<'_>, slots: std::ops::Range<u32>) {
        use rayon::prelude::*;
        #[allow(clippy::cast_possible_truncation)]
        let sequential_end = slots.end.min(slots.start.max(SEQUENTIAL_PREFIX as u32));
        let mut visited = self.take_visited();
        for s in slots.start..sequential_end {
            graph.insert(v, s, &mut visited);
        }
        self.give_visited(visited);
        (sequential_end..slots.end).into_par_iter().for_each_init(Visited::new, |vis, s| graph.insert(v, s, vis));
    }

    /// The `slots` that a search for their own vector does not find (their vector identical to
    /// another's counts as found).
    fn unreachable(&self, graph: &Graph, v: Vectors<'_>, slots: std::ops::Range<u32>) -> Vec<u32> {
        use rayon::prelude::*;
        let ef = self.params.ef_search.max(16);
        slots
            .into_par_iter()
            .map_init(Visited::new, |vis, s| {
                let hit = graph.search(v, v.get(s), ef, vis, None);
                let found = hit.first().is_some_and(|n| n.slot == s || n.distance <= 1e-6);
                (!found).then_some(s)
            })
            .flatten()
            .collect()
    }

    fn take_visited(&self) -> Visited {
        self.visited.lock().pop().unwrap_or_else(Visited::new)
    }

    fn give_visited(&self, v: Visited) {
        let mut pool = self.visited.lock();
        if pool.len() < 64 {
            pool.push(v);
        }
    }

    /// Heap bytes the index holds: vectors, keys, the key map, tombstones and graph links.
    pub fn memory_bytes(&self) -> usize {
        let st = self.state.read();
        // A hash map entry: key, slot and one control byte, at the map's capacity.
        let map = st.slot_of.capacity() * (std::mem::size_of::<(u64, u32)>() + 1);
        st.vectors.capacity() * 4
            + st.keys.capacity() * 8
            + map
            + st.deleted.capacity()
            + st.orphans.capacity() * 4
            + st.graph.as_ref().map_or(0, Graph::memory_bytes)
    }

    /// Points found unreachable in the graph (scanned exactly on every search).
    pub fn orphans(&self) -> usize {
        self.state.read().orphans.len()
    }

    /// Marks a key deleted: it is never returned again.
    pub fn delete(&self, key: u64) {
        let mut st = self.state.write();
        if let Some(&slot) = st.slot_of.get(&key) {
            if !std::mem::replace(&mut st.deleted[slot as usize], true) {
                st.tombstones += 1;
            }
        }
    }

    /// Whether `key` is a live entry.
    pub fn contains(&self, key: u64) -> bool {
        let st = self.state.read();
        st.slot_of.get(&key).is_some_and(|&s| !st.deleted[s as usize])
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.state.read().live()
    }

    /// True when no live entry exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deleted entries still in the graph.
    pub fn tombstones(&self) -> usize {
        self.state.read().tombstones
    }

    /// Whether tombstones exceed 20% of the slots (and 1,000 entries): time to rebuild.
    pub fn needs_rebuild(&self) -> bool {
        let st = self.state.read();
        st.tombstones > 1000 && st.tombstones * 5 > st.keys.len()
    }

    /// The `k` nearest live entries to `query` passing `filter`, as `(key, cosine similarity)`,
    /// best first.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        let q = normalised(query, self.dim)?;
        let st = self.state.read();
        if k == 0 || st.live() == 0 {
            return Ok(Vec::new());
        }
        let keep = |slot: u32| !st.deleted[slot as usize] && filter.is_none_or(|f| f(st.keys[slot as usize]));
        let Some(graph) = st.graph.as_ref().filter(|_| st.keys.len() >= EXACT_BELOW) else {
            return Ok(self.exact(&st, &q, k, &keep));
        };
        let v = Vectors { data: &st.vectors, dim: self.dim };
        let mut visited = self.take_visited();
        let mut ef = ef.max(k);
        // Without a filter or tombstones every node qualifies: skip the per-node check.
        let keep_all = filter.is_none() && st.tombstones == 0;
        let mut hits = loop {
            let hits = graph.search(v, &q, ef, &mut visited, if keep_all { None } else { Some(&keep) });
            // Short of k: widen the beam a few times before falling back to an exact scan.
            if hits.len() >= k || ef >= MAX_EF || ef >= st.keys.len() {
                break hits;
            }
            ef *= 4;
        };
        self.give_visited(visited);
        if hits.len() < k && (filter.is_some() || st.tombstones > 0) {
            return Ok(self.exact(&st, &q, k, &keep));
        }
        for &o in &st.orphans {
            if keep(o) && !hits.iter().any(|h| h.slot == o) {
                hits.push(hnsw::Near { distance: v.distance(&q, o), slot: o });
            }
        }
        if !st.orphans.is_empty() {
            hits.sort_unstable();
        }
        hits.truncate(k);
        Ok(hits.into_iter().map(|h| (st.keys[h.slot as usize], 1.0 - h.distance)).collect())
    }

    /// Exact search over every stored vector passing `keep`.
    fn exact(&self, st: &State, q: &[f32], k: usize, keep: &dyn Fn(u32) -> bool) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = st
            .vectors
            .chunks_exact(self.dim)
            .enumerate()
            .filter_map(|(s, v)| {
                #[allow(clippy::cast_possible_truncation)]
                let slot = s as u32;
                keep(slot).then(|| (st.keys[s], dot(q, v)))
            })
            .collect();
        let by_score = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if all.len() > k {
            all.select_nth_unstable_by(k, by_score);
            all.truncate(k);
        }
        all.sort_unstable_by(by_score);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<(u64, Vec<f32>)> {
        let mut x = seed;
        let mut next = move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_precision_loss)]
            let f = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            f
        };
        (0..n).map(|i| (i as u64 + 1, (0..dim).map(|_| next()).collect())).collect()
    }

    #[test]
    fn snapshot_round_trip_keeps_every_answer() {
        let items = unit_rows(EXACT_BELOW + 500, 16, 5);
        let idx = AnnIndex::rebuild(items.clone().into_iter(), 16, IndexParams::default()).unwrap();
        for k in (1..200).step_by(3) {
            idx.delete(k);
        }
        let snap = idx.snapshot(0).unwrap();
        let blocks: Vec<&[u8]> = snap.blocks.iter().map(|(_, b)| b.as_slice()).collect();
        let back = AnnIndex::from_snapshot(16, idx.params(), snap.layout, &snap.core, &blocks).unwrap();
        assert_eq!((back.len(), back.tombstones(), back.layout()), (idx.len(), idx.tombstones(), idx.layout()));
        for (_, q) in items.iter().step_by(97) {
            assert_eq!(back.search(q, 10, 64, None).unwrap(), idx.search(q, 10, 64, None).unwrap());
        }
        // Every byte of the core matters: a flipped count or link is refused, never a panic.
        for at in [0, 9, 13, 20, snap.core.len() / 2, snap.core.len() - 3] {
            let mut bad = snap.core.clone();
            bad[at] ^= 0x5a;
            let _ = AnnIndex::from_snapshot(16, idx.params(), snap.layout, &bad, &blocks);
        }
        assert!(AnnIndex::from_snapshot(16, idx.params(), 1, &snap.core[..snap.core.len() - 1], &blocks).is_err());
        assert!(AnnIndex::from_snapshot(16, idx.params(), 1, &snap.core, &blocks[..blocks.len() - 1]).is_err());
        assert!(AnnIndex::from_snapshot(8, idx.params(), 1, &snap.core, &blocks).is_err());
    }

    #[test]
    fn flat_index_has_no_snapshot() {
        let idx = AnnIndex::flat(4, IndexParams::default());
        idx.insert(1, &[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!(idx.snapshot(0).is_none());
    }

    #[test]
    fn re_inserting_a_key_replaces_its_vector() {
        let idx = AnnIndex::new(2, IndexParams::default());
        idx.insert(7, &[1.0, 0.0]).unwrap();
        idx.insert(7, &[0.0, 1.0]).unwrap();
        assert_eq!((idx.len(), idx.tombstones()), (1, 1));
        let hit = idx.search(&[0.0, 1.0], 1, 16, None).unwrap();
        assert_eq!(hit[0].0, 7);
        assert!((hit[0].1 - 1.0).abs() < 1e-6);
    }
}
