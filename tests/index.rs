//! The HNSW index with tombstones, filters and the exact fallbacks.

use rwkvdb::index::{AnnIndex, IndexParams, EXACT_BELOW};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    /// Clustered data: `centres` random centres, points = centre + noise.
    fn clustered(&mut self, n: usize, dim: usize, centres: usize) -> Vec<(u64, Vec<f32>)> {
        let cs: Vec<Vec<f32>> = (0..centres).map(|_| (0..dim).map(|_| self.f()).collect()).collect();
        (0..n).map(|i| (i as u64 + 1, cs[i % centres].iter().map(|c| c + 0.25 * self.f()).collect())).collect()
    }
}

fn exact_top(items: &[(u64, Vec<f32>)], q: &[f32], k: usize, keep: impl Fn(u64) -> bool) -> Vec<u64> {
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<_>>()
    };
    let qn = unit(q);
    let mut s: Vec<(u64, f32)> =
        items.iter().filter(|(k, _)| keep(*k)).map(|(k, v)| (*k, rwkvdb::index::dot(&qn, &unit(v)))).collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1));
    s.into_iter().take(k).map(|x| x.0).collect()
}

#[test]
fn small_index_is_exact_with_tombstones_and_filters() {
    let mut r = Rng(1);
    let items = r.clustered(2000, 64, 20);
    let idx = AnnIndex::rebuild(items.clone().into_iter(), 64, IndexParams::default()).unwrap();
    assert_eq!(idx.len(), 2000);
    for key in 1..=100 {
        idx.delete(key);
    }
    assert_eq!((idx.len(), idx.tombstones()), (1900, 100));
    for (_, q) in items.iter().step_by(97) {
        let got: Vec<u64> = idx.search(q, 10, 64, None).unwrap().into_iter().map(|x| x.0).collect();
        assert_eq!(got, exact_top(&items, q, 10, |k| k > 100));
        let f = |k: u64| k % 10 == 3;
        let got: Vec<u64> = idx.search(q, 10, 64, Some(&f)).unwrap().into_iter().map(|x| x.0).collect();
        assert_eq!(got, exact_top(&items, q, 10, |k| k > 100 && k % 10 == 3));
    }
}

#[test]
fn graph_search_finds_outliers_and_fills_k_under_selective_filters() {
    let mut r = Rng(2);
    let n = EXACT_BELOW + 2000;
    let mut items = r.clustered(n, 32, 50);
    let idx =
        AnnIndex::rebuild(items.clone().into_iter(), 32, IndexParams { ef_construction: 64, ..IndexParams::default() })
            .unwrap();
    // Outliers inserted one by one into the big graph must still be found.
    for i in 0..20 {
        let far: Vec<f32> = (0..32).map(|_| r.f() * 10.0).collect();
        let key = 1_000_000 + i;
        idx.insert(key, &far).unwrap();
        items.push((key, far.clone()));
        assert_eq!(idx.search(&far, 1, 64, None).unwrap()[0].0, key, "outlier {i} unreachable");
    }
    // A filter matching 0.2% of the items still yields k hits, all matching.
    let f = |k: u64| k % 500 == 7;
    let (_, q) = &items[123];
    let got = idx.search(q, 10, 64, Some(&f)).unwrap();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(k, _)| k % 500 == 7));
    // Recall of the plain graph search on this clustered set.
    let mut found = 0;
    for (_, q) in items.iter().step_by(211).take(40) {
        let want = exact_top(&items, q, 10, |_| true);
        let got: Vec<u64> = idx.search(q, 10, 64, None).unwrap().into_iter().map(|x| x.0).collect();
        found += want.iter().filter(|k| got.contains(k)).count();
    }
    assert!(found as f32 / 400.0 > 0.9, "recall@10 {}", found as f32 / 400.0);
    // A search width far beyond the entries searches them all instead of allocating for it.
    let wide = idx.search(q_of(&items), 10, usize::MAX / 4, None).unwrap();
    assert_eq!(wide.len(), 10);
}

fn q_of(items: &[(u64, Vec<f32>)]) -> &[f32] {
    &items[7].1
}

#[test]
fn bad_vectors_are_rejected() {
    let idx = AnnIndex::new(4, IndexParams::default());
    assert!(idx.insert(1, &[1.0, 2.0]).is_err());
    assert!(idx.insert(1, &[0.0; 4]).is_err());
    assert!(idx.insert(1, &[f32::NAN, 0.0, 0.0, 1.0]).is_err());
    assert!(idx.search(&[1.0, 0.0, 0.0], 1, 10, None).is_err());
    assert!(idx.search(&[1.0, 0.0, 0.0, 0.0], 5, 10, None).unwrap().is_empty());
}

#[test]
fn concurrent_searches_while_inserting() {
    let mut r = Rng(3);
    let items = r.clustered(3000, 32, 10);
    let idx = AnnIndex::rebuild(items[..1000].iter().cloned(), 32, IndexParams::default()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in items[1000..].chunks(100) {
                idx.insert_batch(chunk).unwrap();
            }
        });
        for t in 0..2 {
            let (idx, items) = (&idx, &items);
            s.spawn(move || {
                for (_, q) in items.iter().skip(t).step_by(50) {
                    assert_eq!(idx.search(q, 5, 32, None).unwrap().len(), 5);
                }
            });
        }
    });
    assert_eq!(idx.len(), 3000);
}

#[test]
fn graph_built_from_a_snapshot_catches_up_with_a_flat_index() {
    let mut r = Rng(11);
    let dim = 32;
    let all = r.clustered(EXACT_BELOW + 3000, dim, 50);
    let (first, later) = all.split_at(EXACT_BELOW + 1000);
    // The flat index answers exactly from the start.
    let flat = AnnIndex::flat(dim, IndexParams::default());
    flat.insert_batch(first).unwrap();
    assert!(!flat.has_graph());
    let snapshot = flat.live_entries();
    let base: std::collections::HashSet<u64> = snapshot.iter().map(|(k, _)| *k).collect();
    // While the graph is built from the snapshot, writers add and delete on the flat index.
    let graph = AnnIndex::new(dim, IndexParams::default());
    graph.insert_batch(&snapshot).unwrap();
    flat.insert_batch(later).unwrap();
    let deleted: Vec<u64> = (1..=400).map(|i| i * 29).collect();
    for k in &deleted {
        flat.delete(*k);
    }
    graph.catch_up(&base, &flat).unwrap();
    assert!(graph.has_graph());
    assert_eq!(graph.len(), flat.len());
    assert_eq!(graph.len(), all.len() - deleted.len());
    let live = |k: u64| !deleted.contains(&k);
    let (mut found, mut total) = (0, 0);
    for (_, q) in all.iter().step_by(131) {
        let want = exact_top(&all, q, 10, live);
        assert_eq!(flat.search(q, 10, 64, None).unwrap().iter().map(|h| h.0).collect::<Vec<_>>(), want);
        let got: Vec<u64> = graph.search(q, 10, 64, None).unwrap().iter().map(|h| h.0).collect();
        assert!(got.iter().all(|k| live(*k)), "a deleted key came back");
        found += got.iter().filter(|k| want.contains(k)).count();
        total += want.len();
    }
    let recall = found as f64 / total as f64;
    assert!(recall > 0.95, "recall {recall}");
    // Entries added during the build are reachable in the graph.
    for (k, v) in later.iter().step_by(50) {
        if live(*k) {
            assert_eq!(graph.search(v, 1, 64, None).unwrap()[0].0, *k);
        }
    }
}
