//! ANN benchmark: `hnsw_rs` (M=16, `ef_construction=200`) over clustered unit vectors of dimension 768.
//! Recall@10 against exact search and single-thread QPS per ef; build time. Writes docs/bench/ann.json.
//!
//!     cargo bench --bench ann            # 10K and 100K
//!     RWKVDB_ANN_MAX=10000 cargo bench --bench ann

use std::time::Instant;

use rwkvdb::index::{dot, AnnIndex, IndexParams};
use serde_json::json;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn main() {
    const DIM: usize = 768;
    let max: usize = std::env::var("RWKVDB_ANN_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut rng = Rng(42);
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| (0..DIM).map(|_| rng.f()).collect()).collect();
    let point = |rng: &mut Rng, i: usize| unit(centres[(i * 7919) % 1000].iter().map(|c| c + 0.6 * rng.f()).collect());
    let all: Vec<Vec<f32>> = (0..max).map(|i| point(&mut rng, i)).collect();
    let queries: Vec<Vec<f32>> = (0..1000).map(|i| point(&mut rng, i * 13 + 5)).collect();
    let mut runs = Vec::new();
    let mut builds = Vec::new();
    println!("{:>8} {:>5} {:>12} {:>10}", "n", "ef", "recall@10", "QPS");
    for n in [10_000usize, 100_000].into_iter().filter(|&n| n <= max) {
        let items: Vec<(u64, Vec<f32>)> = all[..n].iter().enumerate().map(|(i, v)| (i as u64 + 1, v.clone())).collect();
        let start = Instant::now();
        let idx = AnnIndex::rebuild(items.into_iter(), DIM, IndexParams::default()).expect("build");
        let build_s = start.elapsed().as_secs_f64();
        builds.push(json!({"n": n, "build_s": build_s, "orphans": idx.orphans()}));
        println!("built {n} in {build_s:.1}s ({} orphans)", idx.orphans());
        let truth: Vec<Vec<u64>> = queries
            .iter()
            .map(|q| {
                let mut s: Vec<(u64, f32)> =
                    all[..n].iter().enumerate().map(|(i, v)| (i as u64 + 1, dot(q, v))).collect();
                s.sort_by(|a, b| b.1.total_cmp(&a.1));
                s.into_iter().take(10).map(|x| x.0).collect()
            })
            .collect();
        for ef in [16usize, 32, 64, 128] {
            let start = Instant::now();
            let mut found = 0;
            for (q, t) in queries.iter().zip(&truth) {
                let got = idx.search(q, 10, ef, None).expect("search");
                found += got.iter().filter(|(k, _)| t.contains(k)).count();
            }
            let qps = queries.len() as f64 / start.elapsed().as_secs_f64();
            let recall = found as f64 / (10 * queries.len()) as f64;
            println!("{n:>8} {ef:>5} {recall:>12.4} {qps:>10.0}");
            runs.push(json!({"n": n, "ef": ef, "recall_at_10": recall, "qps": qps}));
        }
    }
    let out = json!({"command": "cargo bench --bench ann", "dim": DIM, "m": 16, "ef_construction": 200,
        "data": "1000 random centres + uniform noise, unit vectors; 1000 queries drawn the same way",
        "builds": builds, "runs": runs});
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench/ann.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write ann.json");
    println!("wrote {}", path.display());
}
