//! The ANN index: HNSW (`hnsw_rs`) over L2-normalised embeddings, cosine similarity.
//!
//! - Ids are the store's document keys (`u64`, used directly as `hnsw_rs` data ids).
//! - hnsw_rs cannot remove points, so deletes are tombstones, skipped *inside* the search by
//!   its filter hook; so are metadata filters. A filtered query therefore still fills `k` hits
//!   when `k` matching documents exist: if the graph search comes back short, it retries with a
//!   wider beam and finally scans every vector exactly.
//! - The index lives in memory and is rebuilt from the stored embeddings when a collection is
//!   opened (nothing is re-embedded); `docs/performance.md` has the measured rebuild time.
//! - Distance: `1 - dot(a, b)` on unit vectors, clamped at 0 (hnsw_rs's own `DistDot` asserts
//!   on rounding), with an AVX2 kernel.

use std::collections::HashSet;

use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::prelude::Distance;
use parking_lot::RwLock;

/// HNSW parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Links per node (hnsw_rs allows up to 256).
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
    use std::arch::x86_64::*;
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
    pub fn new(dim: usize, params: IndexParams) -> Self {
        let m = params.m.clamp(2, 255);
        let hnsw = Hnsw::new(m, params.max_elements.max(1000), 16, params.ef_construction.max(m), DotDistance);
        Self { dim, params, hnsw, tombstones: RwLock::new(HashSet::new()), inserted: RwLock::new(HashSet::new()) }
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

    /// Adds vectors (in parallel for larger batches). Keys must be fresh: hnsw_rs cannot replace
    /// a point, so a new version of a document gets a new key (the store assigns one per write).
    pub fn insert_batch(&self, items: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        let normed: Vec<(Vec<f32>, usize)> = items
            .iter()
            .map(|(k, v)| Ok((normalised(v, self.dim)?, *k as usize)))
            .collect::<Result<_, IndexError>>()?;
        let refs: Vec<(&Vec<f32>, usize)> = normed.iter().map(|(v, k)| (v, *k)).collect();
        if refs.len() > 16 {
            self.hnsw.parallel_insert(&refs);
        } else {
            for (v, k) in &refs {
                self.hnsw.insert((v.as_slice(), *k));
            }
        }
        let mut ins = self.inserted.write();
        let mut tomb = self.tombstones.write();
        for (k, _) in items {
            ins.insert(*k);
            tomb.remove(k);
        }
        Ok(())
    }

    /// Marks a key deleted: it is never returned again.
    pub fn delete(&self, key: u64) {
        if self.inserted.read().contains(&key) {
            self.tombstones.write().insert(key);
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.inserted.read().len() - self.tombstones.read().len()
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
        let t = self.tombstones();
        t > 1000 && t * 5 > self.inserted.read().len()
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
        let tomb = self.tombstones.read();
        let keep = |id: &usize| !tomb.contains(&(*id as u64)) && filter.is_none_or(|f| f(*id as u64));
        let mut ef = ef.max(k);
        let mut hits;
        loop {
            hits = if tomb.is_empty() && filter.is_none() {
                self.hnsw.search(&q, k, ef)
            } else {
                self.hnsw.search_filter(&q, k, ef, Some(&keep))
            };
            // Short of k: widen the beam a few times before falling back to an exact scan.
            if hits.len() >= k || ef >= 4096 || ef >= self.inserted.read().len() {
                break;
            }
            ef *= 4;
        }
        if hits.len() < k && (filter.is_some() || !tomb.is_empty()) {
            return Ok(self.exact(&q, k, &keep));
        }
        Ok(hits.into_iter().map(|n| (n.d_id as u64, 1.0 - n.distance)).collect())
    }

    /// Exact search over every stored vector.
    fn exact(&self, q: &[f32], k: usize, keep: &dyn Fn(&usize) -> bool) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = Vec::new();
        let mut seen = HashSet::new();
        for p in self.hnsw.get_point_indexation() {
            let id = p.get_origin_id();
            if keep(&id) && seen.insert(id) {
                all.push((id as u64, dot(q, p.get_v())));
            }
        }
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        all
    }
}
