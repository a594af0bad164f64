//! The ANN index: HNSW (`hnsw_rs`) over L2-normalised embeddings, cosine similarity.
//!
//! - Ids are the store's document keys (`u64`, used directly as `hnsw_rs` data ids).
//! - `hnsw_rs` cannot remove points, so deletes are tombstones, skipped *inside* the search by
//!   its filter hook; so are metadata filters. A filtered query therefore still fills `k` hits
//!   when `k` matching documents exist: if the graph search comes back short, it retries with a
//!   wider beam and finally scans every vector exactly.
//! - The index lives in memory and is rebuilt from the stored embeddings when a collection is
//!   opened (nothing is re-embedded). A large collection opens with a *flat* index (exact scans,
//!   recall 1) while the graph is built in the background ([`AnnIndex::flat`], [`AnnIndex::catch_up`]);
//!   `docs/performance.md` has the measured times.
//! - Distance: `1 - dot(a, b)` on unit vectors, clamped at 0 (`hnsw_rs`'s own `DistDot` asserts
//!   on rounding), with an AVX2 kernel.

use std::collections::HashSet;

use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::prelude::Distance;
use parking_lot::RwLock;

/// Points inserted one at a time before parallel inserts are used.
const SEQUENTIAL_PREFIX: usize = 512;
/// Below this many points a search is an exact scan: as fast as the graph at this size, and
/// immune to its blind spots.
pub const EXACT_BELOW: usize = 10_000;

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Links per node (`hnsw_rs` allows up to 256).
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
}

/// `1 - dot` for unit vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct DotDistance;

impl Distance<f32> for DotDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product with 16 independent accumulators (vectorises) or AVX2 + FMA when available.
#[must_use]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; 16];
    let chunks = n / 16;
    for c in 0..chunks {
        for l in 0..16 {
            acc[l] += a[c * 16 + l] * b[c * 16 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 16..n {
        s += a[i] * b[i];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: all loads stay below `n`, the length of both slices.
    while i + 32 <= n {
        for (j, a_j) in acc.iter_mut().enumerate() {
            *a_j = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j)), *a_j);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
    let mut s: f32 = lanes.iter().sum();
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// An HNSW index with tombstones. `Send + Sync`; inserts and searches may run concurrently.
pub struct AnnIndex {
    dim: usize,
    params: IndexParams,
    hnsw: Hnsw<'static, f32, DotDistance>,
    /// Deleted keys still in the graph.
    tombstones: RwLock<HashSet<u64>>,
    /// Keys ever inserted (live + tombstoned).
    inserted: RwLock<HashSet<u64>>,
    /// Points the graph cannot reach (a search for their own vector misses them): `hnsw_rs`'s
    /// pruning can leave a newly inserted outlier with no incoming link. They are scanned exactly
    /// on every search and merged in.
    orphans: RwLock<HashSet<u64>>,
    /// Our own copy of the unit vectors, for exact scans. (Iterating `hnsw_rs`'s points takes
    /// nested read locks that deadlock against a concurrent insert, so the graph's copy is not
    /// used for that.)
    vectors: RwLock<Vectors>,
    /// False for a flat index: vectors only, every search an exact scan.
    graph: bool,
}

/// Unit vectors by key, stored contiguously for fast scans.
#[derive(Default)]
struct Vectors {
    keys: Vec<u64>,
    flat: Vec<f32>,
    slot: std::collections::HashMap<u64, usize>,
}

impl Vectors {
    fn get(&self, key: u64, dim: usize) -> Option<&[f32]> {
        self.slot.get(&key).and_then(|&i| self.flat.get(i * dim..(i + 1) * dim))
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
    if n == 0.0 {
        return Err(IndexError::ZeroVector);
    }
    Ok(v.iter().map(|x| x / n).collect())
}

impl AnnIndex {
    /// An empty index for `dim`-dimensional vectors.
    #[must_use]
    pub fn new(dim: usize, params: IndexParams) -> Self {
        Self::empty(dim, params, true)
    }

    /// An empty flat index: it keeps the vectors and answers every search by an exact scan.
    #[must_use]
    pub fn flat(dim: usize, params: IndexParams) -> Self {
        Self::empty(dim, params, false)
    }

    fn empty(dim: usize, params: IndexParams, graph: bool) -> Self {
        let m = params.m.clamp(2, 255);
        let capacity = if graph { params.max_elements.max(1000) } else { 1000 };
        let hnsw = Hnsw::new(m, capacity, 16, params.ef_construction.max(m), DotDistance);
        Self {
            dim,
            params,
            hnsw,
            tombstones: RwLock::new(HashSet::new()),
            inserted: RwLock::new(HashSet::new()),
            orphans: RwLock::new(HashSet::new()),
            vectors: RwLock::new(Vectors::default()),
            graph,
        }
    }

    /// Whether searches use the HNSW graph (false: a flat index).
    pub fn has_graph(&self) -> bool {
        self.graph
    }

    /// `(key, unit vector)` of the stored vectors whose key passes `keep`.
    fn entries(&self, keep: impl Fn(&u64) -> bool) -> Vec<(u64, Vec<f32>)> {
        let vs = self.vectors.read();
        vs.keys
            .iter()
            .zip(vs.flat.chunks_exact(self.dim))
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (*k, v.to_vec()))
            .collect()
    }

    /// The live entries as `(key, unit vector)`: what a graph built now must hold.
    pub fn live_entries(&self) -> Vec<(u64, Vec<f32>)> {
        // Lock order as in `search`: `tombstones` before `vectors`.
        let tomb = self.tombstones.read();
        self.entries(|k| !tomb.contains(k))
    }

    /// Brings `self`, built from `base` (a [`Self::live_entries`] snapshot of `current`), up
    /// to date with what `current` received since: its new entries and its deletes. The caller
    /// keeps writers out meanwhile, then replaces `current` by `self`.
    pub fn catch_up(&self, base: &HashSet<u64>, current: &AnnIndex) -> Result<(), IndexError> {
        // Lock order as in `search`: `tombstones` before `vectors`. Entries deleted before the
        // snapshot are in neither `base` nor the result: they are not carried over.
        let tomb = current.tombstones.read();
        let new = current.entries(|k| !base.contains(k) && !tomb.contains(k));
        if !new.is_empty() {
            self.insert_batch(&new)?;
        }
        for key in tomb.iter().filter(|k| base.contains(k)) {
            self.delete(*key);
        }
        Ok(())
    }

    /// The parameters.
    pub fn params(&self) -> IndexParams {
        self.params
    }

    /// Builds an index from `(key, embedding)` pairs (parallel insert).
    pub fn rebuild(
        items: impl Iterator<Item = (u64, Vec<f32>)>,
        dim: usize,
        params: IndexParams,
    ) -> Result<Self, IndexError> {
        let items: Vec<(u64, Vec<f32>)> = items.collect();
        let params = IndexParams { max_elements: params.max_elements.max(items.len()), ..params };
        let idx = Self::new(dim, params);
        idx.insert_batch(&items)?;
        Ok(idx)
    }

    /// Adds (or re-adds) one vector under `key`.
    pub fn insert(&self, key: u64, embedding: &[f32]) -> Result<(), IndexError> {
        self.insert_batch(&[(key, embedding.to_vec())])
    }

    /// Adds vectors (in parallel for larger batches). Keys must be fresh: `hnsw_rs` cannot replace
    /// a point, so a new version of a document gets a new key (the store assigns one per write).
    pub fn insert_batch(&self, items: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        let normed: Vec<(Vec<f32>, usize)> = items
            .iter()
            .map(|(k, v)| Ok((normalised(v, self.dim)?, *k as usize)))
            .collect::<Result<_, IndexError>>()?;
        {
            let mut vs = self.vectors.write();
            for (v, k) in &normed {
                let key = *k as u64;
                if let Some(&i) = vs.slot.get(&key) {
                    vs.flat[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
                } else {
                    let i = vs.keys.len();
                    vs.keys.push(key);
                    vs.flat.extend_from_slice(v);
                    vs.slot.insert(key, i);
                }
            }
        }
        if self.graph {
            let refs: Vec<(&Vec<f32>, usize)> = normed.iter().map(|(v, k)| (v, *k)).collect();
            // hnsw_rs's parallel insert into a young graph can leave points unreachable (seen with
            // tightly clustered vectors): the first SEQUENTIAL_PREFIX points go in one by one.
            let sequential = SEQUENTIAL_PREFIX.saturating_sub(self.hnsw.get_nb_point()).min(refs.len());
            for (v, k) in &refs[..sequential] {
                self.hnsw.insert((v.as_slice(), *k));
            }
            if refs.len() > sequential {
                self.hnsw.parallel_insert(&refs[sequential..]);
            }
        }
        {
            let mut ins = self.inserted.write();
            let mut tomb = self.tombstones.write();
            for (k, _) in items {
                ins.insert(*k);
                tomb.remove(k);
            }
        }
        if self.graph {
            self.find_orphans(&normed);
        }
        Ok(())
    }

    /// Searches the graph for each new vector; those that do not find themselves are orphans.
    fn find_orphans(&self, items: &[(Vec<f32>, usize)]) {
        use rayon::prelude::*;
        let ef = self.params.ef_search.max(16);
        let lost: Vec<u64> = items
            .par_iter()
            .filter(|(v, k)| {
                let hit = self.hnsw.search(v, 1, ef);
                // An identical vector under another key is as good as finding itself.
                hit.first().is_none_or(|n| n.d_id != *k && n.distance > 1e-6)
            })
            .map(|(_, k)| *k as u64)
            .collect();
        if !lost.is_empty() {
            self.orphans.write().extend(lost);
        }
    }

    /// Points found unreachable in the graph (scanned exactly on every search).
    pub fn orphans(&self) -> usize {
        self.orphans.read().len()
    }

    /// Marks a key deleted: it is never returned again.
    pub fn delete(&self, key: u64) {
        if self.inserted.read().contains(&key) {
            self.tombstones.write().insert(key);
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        let inserted = self.inserted.read().len();
        inserted - self.tombstones.read().len()
    }

    /// True when no live entry exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deleted entries still in the graph.
    pub fn tombstones(&self) -> usize {
        self.tombstones.read().len()
    }

    /// Whether tombstones exceed 20% of the graph (and 1,000 entries): time to rebuild.
    pub fn needs_rebuild(&self) -> bool {
        let inserted = self.inserted.read().len();
        let t = self.tombstones();
        t > 1000 && t * 5 > inserted
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
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        // Lock order everywhere: `inserted` before `tombstones`.
        let inserted = self.inserted.read().len();
        let tomb = self.tombstones.read();
        let keep = |id: &usize| !tomb.contains(&(*id as u64)) && filter.is_none_or(|f| f(*id as u64));
        if inserted < EXACT_BELOW || !self.graph {
            return Ok(self.exact(&q, k, &keep));
        }
        let mut ef = ef.max(k);
        let mut hits;
        loop {
            hits = if tomb.is_empty() && filter.is_none() {
                self.hnsw.search(&q, k, ef)
            } else {
                self.hnsw.search_filter(&q, k, ef, Some(&keep))
            };
            // Short of k: widen the beam a few times before falling back to an exact scan.
            if hits.len() >= k || ef >= 4096 || ef >= inserted {
                break;
            }
            ef *= 4;
        }
        if hits.len() < k && (filter.is_some() || !tomb.is_empty()) {
            return Ok(self.exact(&q, k, &keep));
        }
        let mut out: Vec<(u64, f32)> = hits.into_iter().map(|n| (n.d_id as u64, 1.0 - n.distance)).collect();
        let orphans = self.orphans.read();
        if !orphans.is_empty() {
            let seen: HashSet<u64> = out.iter().map(|h| h.0).collect();
            let vs = self.vectors.read();
            for &key in orphans.iter() {
                if let Some(v) = vs.get(key, self.dim).filter(|_| keep(&(key as usize)) && !seen.contains(&key)) {
                    out.push((key, dot(&q, v)));
                }
            }
            out.sort_by(|a, b| b.1.total_cmp(&a.1));
            out.truncate(k);
        }
        Ok(out)
    }

    /// Exact search over every stored vector.
    fn exact(&self, q: &[f32], k: usize, keep: &dyn Fn(&usize) -> bool) -> Vec<(u64, f32)> {
        let vs = self.vectors.read();
        let mut all: Vec<(u64, f32)> = vs
            .keys
            .iter()
            .zip(vs.flat.chunks_exact(self.dim))
            .filter(|(key, _)| keep(&(**key as usize)))
            .map(|(key, v)| (*key, dot(q, v)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        all
    }
}
