//! ANN benchmark: rwkvdb's HNSW (M=16, `ef_construction=200`) over clustered unit vectors of
//! dimension 768: recall@10 against exact search and single-thread QPS per beam width, build
//! time and index memory; then, in the same run, the same vectors and queries through faiss's
//! `IndexHNSWFlat` (the `faiss-cpu` Python package, `scripts/ann_peer.py`) when Python can
//! import it. Writes docs/bench/ann.json with both and the QPS ratio at equal recall.
//!
//!     cargo bench --bench ann                   # 10K and 100K
//!     RWKVDB_ANN_MAX=10000 cargo bench --bench ann
//!     pip install faiss-cpu numpy               # for the peer rows

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rwkvdb::index::{dot, AnnIndex, IndexParams};
use serde_json::{json, Value};

const DIM: usize = 768;
const EFS: [usize; 8] = [16, 24, 32, 48, 64, 96, 128, 256];

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

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let bytes: Vec<u8> = rows.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write vectors");
}

/// Highest QPS among `runs` of size `n` reaching `recall`.
fn best_qps(runs: &[Value], n: usize, recall: f64) -> Option<f64> {
    runs.iter()
        .filter(|r| r["n"] == n && r["recall_at_10"].as_f64().unwrap_or(0.0) >= recall)
        .filter_map(|r| r["qps"].as_f64())
        .reduce(f64::max)
}

fn main() {
    let max: usize = std::env::var("RWKVDB_ANN_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data_dir = root.join("target/ann");
    std::fs::create_dir_all(&data_dir).expect("target/ann");
    let mut rng = Rng(42);
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| (0..DIM).map(|_| rng.f()).collect()).collect();
    let point = |rng: &mut Rng, i: usize| unit(centres[(i * 7919) % 1000].iter().map(|c| c + 0.6 * rng.f()).collect());
    let all: Vec<Vec<f32>> = (0..max).map(|i| point(&mut rng, i)).collect();
    let queries: Vec<Vec<f32>> = (0..1000).map(|i| point(&mut rng, i * 13 + 5)).collect();
    write_f32(&data_dir.join("queries.f32"), &queries);
    let mut runs = Vec::new();
    let mut builds = Vec::new();
    let mut sizes = Vec::new();
    println!("{:>8} {:>5} {:>12} {:>10}", "n", "ef", "recall@10", "QPS");
    for n in [10_000usize, 100_000].into_iter().filter(|&n| n <= max) {
        sizes.push(n);
        let truth: Vec<Vec<u64>> = queries
            .iter()
            .map(|q| {
                let mut s: Vec<(u64, f32)> =
                    all[..n].iter().enumerate().map(|(i, v)| (i as u64 + 1, dot(q, v))).collect();
                s.sort_by(|a, b| b.1.total_cmp(&a.1));
                s.into_iter().take(10).map(|x| x.0).collect()
            })
            .collect();
        write_f32(&data_dir.join(format!("base-{n}.f32")), &all[..n]);
        let truth_bytes: Vec<u8> = truth.iter().flatten().flat_map(|k| (*k as u32 - 1).to_le_bytes()).collect();
        std::fs::write(data_dir.join(format!("truth-{n}.u32")), truth_bytes).expect("write truth");
        let items: Vec<(u64, Vec<f32>)> = all[..n].iter().enumerate().map(|(i, v)| (i as u64 + 1, v.clone())).collect();
        let start = Instant::now();
        let idx = AnnIndex::rebuild(items.into_iter(), DIM, IndexParams::default()).expect("build");
        let build_s = start.elapsed().as_secs_f64();
        let mb = idx.memory_bytes() as f64 / 1e6;
        builds.push(json!({"system": "rwkvdb", "n": n, "build_s": build_s, "orphans": idx.orphans(),
            "index_mb": mb, "index_mb_per_100k": mb * 100_000.0 / n as f64}));
        println!("built {n} in {build_s:.1}s ({} orphans, {mb:.0} MB)", idx.orphans());
        for ef in EFS {
            let start = Instant::now();
            let mut found = 0;
            for (q, t) in queries.iter().zip(&truth) {
                let got = idx.search(q, 10, ef, None).expect("search");
                found += got.iter().filter(|(k, _)| t.contains(k)).count();
            }
            let qps = queries.len() as f64 / start.elapsed().as_secs_f64();
            let recall = found as f64 / (10 * queries.len()) as f64;
            println!("{n:>8} {ef:>5} {recall:>12.4} {qps:>10.0}");
            runs.push(json!({"system": "rwkvdb", "n": n, "ef": ef, "recall_at_10": recall, "qps": qps}));
        }
    }
    // The peer, on the same files, right after.
    let sizes_arg: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    let efs_arg: Vec<String> = EFS.iter().map(ToString::to_string).collect();
    let peer = Command::new("python3")
        .arg(root.join("scripts/ann_peer.py"))
        .arg(&data_dir)
        .arg(sizes_arg.join(","))
        .arg(efs_arg.join(","))
        .output();
    let mut peer_rows = Vec::new();
    let mut peer_builds = Vec::new();
    let mut peer_note = Value::Null;
    match peer {
        Ok(out) if out.status.success() => {
            let v: Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
            peer_rows = v["runs"].as_array().cloned().unwrap_or_default();
            peer_builds = v["builds"].as_array().cloned().unwrap_or_default();
            peer_note = v["peer"].clone();
            for r in &peer_rows {
                println!(
                    "{:>8} {:>5} {:>12.4} {:>10.0}  (faiss)",
                    r["n"],
                    r["ef"],
                    r["recall_at_10"].as_f64().unwrap_or(0.0),
                    r["qps"].as_f64().unwrap_or(0.0)
                );
            }
        }
        Ok(out) => println!("peer skipped: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")),
        Err(e) => println!("peer skipped: {e}"),
    }
    let mut ratios = Vec::new();
    for &n in &sizes {
        for recall in [0.95, 0.99] {
            let ours = best_qps(&runs, n, recall);
            let theirs = best_qps(&peer_rows, n, recall);
            let ratio = ours.zip(theirs).map(|(a, b)| a / b);
            if let Some(r) = ratio {
                println!(
                    "n={n} recall>={recall}: rwkvdb {:.0} QPS, faiss {:.0} QPS, ratio {r:.2}",
                    ours.unwrap_or(0.0),
                    theirs.unwrap_or(0.0)
                );
            }
            ratios.push(
                json!({"n": n, "recall_at_least": recall, "rwkvdb_qps": ours, "peer_qps": theirs, "qps_ratio": ratio}),
            );
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let out = json!({"command": "cargo bench --bench ann", "dim": DIM, "m": 16, "ef_construction": 200,
        "data": "1000 random centres + uniform noise, unit vectors; 1000 queries drawn the same way",
        "search": "one thread, one query at a time (rwkvdb: AnnIndex::search per query; faiss: one batch of 1000 with omp_set_num_threads(1))",
        "cpu": cpu, "builds": builds, "runs": runs, "peer": peer_note, "peer_builds": peer_builds, "peer_runs": peer_rows,
        "qps_ratio": ratios});
    let path = root.join("docs/bench/ann.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write ann.json");
    println!("wrote {}", path.display());
}
