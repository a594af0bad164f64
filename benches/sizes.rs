//! Every `EmbeddingRWKV` size at every weight precision, each measured in fresh processes:
//! cold start (new process to first embedding, warm page cache and weight cache), peak RSS,
//! weight bytes, embedding and offline-rerank throughput, and fidelity against f32 (embedding
//! cosine, offline logit and sigmoid deviations over deterministic pairs). Adds `sizes` to
//! docs/bench/runtime.json.
//!
//!     cargo bench --bench sizes                 # 0.1B, 0.4B and 1.4B (about 30 minutes)
//!     RWKVDB_SIZES=0.1B cargo bench --bench sizes
//!     RWKVDB_SIZES=1.4B RWKVDB_PRECISIONS=f32,bf16 cargo bench --bench sizes   # other rows kept
//!
//! Checkpoints are synthetic bf16 files in the official layout (`rwkvdb model synth`), kept in
//! target/bench-models; the weight cache lives in target/bench-weight-cache.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rwkvdb");

struct Shape {
    name: &'static str,
    layers: usize,
    width: usize,
    /// Pairs for the fidelity comparison (300 at 0.1B, fewer where each costs more).
    pairs: usize,
}

const SHAPES: [Shape; 3] = [
    Shape { name: "0.1B", layers: 12, width: 768, pairs: 300 },
    Shape { name: "0.4B", layers: 24, width: 1024, pairs: 64 },
    Shape { name: "1.4B", layers: 24, width: 2048, pairs: 32 },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rwkvdb(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("RWKVDB_CACHE_DIR", root().join("target/bench-weight-cache"));
    c
}

fn ensure_models(s: &Shape) -> (PathBuf, PathBuf) {
    let dir = root().join("target/bench-models");
    std::fs::create_dir_all(&dir).expect("model dir");
    let (e, r) = (dir.join(format!("emb-{}.pth", s.name)), dir.join(format!("rr-{}.pth", s.name)));
    if !e.exists() || !r.exists() {
        let (l, w) = (s.layers.to_string(), s.width.to_string());
        let ok = rwkvdb(&["model", "synth", "--layers", &l, "--width", &w, "--dtype", "bf16", "--seed", "7"])
            .args(["--embedder".as_ref(), e.as_os_str(), "--reranker".as_ref(), r.as_os_str()])
            .status()
            .expect("synth");
        assert!(ok.success(), "synth {}", s.name);
    }
    (e, r)
}

/// Runs `rwkvdb model bench` and returns (seconds from spawn to the first embedding, report).
fn bench_process(e: &Path, r: &Path, precision: &str, extra: &[&str]) -> (f64, Value) {
    let start = Instant::now();
    let mut child = rwkvdb(&["model", "bench", "--precision", precision])
        .args(["--embedder".as_ref(), e.as_os_str(), "--reranker".as_ref(), r.as_os_str()])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn rwkvdb model bench");
    let mut cold = 0.0;
    let mut report = Value::Null;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read");
        if line.starts_with("ready ") {
            cold = start.elapsed().as_secs_f64();
        } else if line.starts_with('{') {
            report = serde_json::from_str(&line).expect("report json");
        }
    }
    assert!(child.wait().expect("wait").success(), "model bench {precision} failed");
    (cold, report)
}

fn read_outputs(p: &Path) -> (Vec<Vec<f32>>, Vec<f32>) {
    let v: Value = serde_json::from_slice(&std::fs::read(p).expect("fidelity file")).expect("json");
    let floats = |v: &Value| {
        v.as_array().map(|a| a.iter().filter_map(Value::as_f64).map(|x| x as f32).collect()).unwrap_or_default()
    };
    let embs = v["embeddings"].as_array().map(|a| a.iter().map(floats).collect()).unwrap_or_default();
    (embs, floats(&v["logits"]))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

fn main() {
    let wanted = std::env::var("RWKVDB_SIZES").unwrap_or_default();
    let flags = rwkvdb::gemm_probe::cpu_flags(&[
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "amx_bf16",
        "avx512_bf16",
    ]);
    println!("CPU flags: {flags}");
    println!(
        "\n{:>5} {:>5} {:>8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "size",
        "prec",
        "cold_s",
        "rss_MB",
        "weight_MB",
        "tok/s 32x128",
        "tok/s 64x16",
        "offline/s",
        "min_cos",
        "max_dlog",
        "max_dsig",
        "query_ms"
    );
    let mut rows = Vec::new();
    for s in SHAPES.iter().filter(|s| wanted.is_empty() || wanted.split(',').any(|w| w == s.name)) {
        let (e, r) = ensure_models(s);
        let mut reference: Option<(Vec<Vec<f32>>, Vec<f32>)> = None;
        // RWKVDB_PRECISIONS=f32,bf16 measures only those (f32 first: the others are compared to it).
        let only = std::env::var("RWKVDB_PRECISIONS").unwrap_or_default();
        for precision in
            ["f32", "bf16", "int8", "int4"].into_iter().filter(|p| only.is_empty() || only.split(',').any(|o| o == *p))
        {
            // First process: fills the weight cache (not timed). Second: the measured one.
            bench_process(&e, &r, precision, &["--load-only"]);
            let fid = root().join(format!("target/bench-models/fidelity-{}-{precision}.json", s.name));
            let pairs = s.pairs.to_string();
            let mut extra = vec!["--fidelity-out", fid.to_str().expect("utf-8 path"), "--pairs", &pairs];
            if s.name == "0.1B" {
                extra.push("--query");
            }
            let (cold, report) = bench_process(&e, &r, precision, &extra);
            let (embs, logits) = read_outputs(&fid);
            let (min_cos, max_dlogit, max_dsig) = match &reference {
                None => (1.0, 0.0, 0.0),
                Some((re, rl)) => (
                    re.iter().zip(&embs).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min),
                    rl.iter().zip(&logits).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max),
                    rl.iter().zip(&logits).map(|(a, b)| (sigmoid(*a) - sigmoid(*b)).abs()).fold(0.0, f64::max),
                ),
            };
            if precision == "f32" {
                reference = Some((embs, logits));
            }
            let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:>5} {:>5} {:>8.2} {:>8.0} {:>9.0} {:>10.1} {:>10.1} {:>10.1} {:>9.5} {:>9.4} {:>9.5} {:>9.0}",
                s.name,
                precision,
                cold,
                f("peak_rss_mb"),
                f("weight_bytes") / 1e6,
                f("embed_tokens_per_s_32x128"),
                f("embed_tokens_per_s_64x16"),
                f("offline_pairs_per_s"),
                min_cos,
                max_dlogit,
                max_dsig,
                f("query_p50_ms_100_candidates"),
            );
            rows.push(json!({
                "size": s.name, "layers": s.layers, "width": s.width, "precision": precision, "cpu_flags": flags,
                "cold_start_s": cold, "peak_rss_mb": report["peak_rss_mb"], "peak_rss_mb_at_first_embedding": report["ready_peak_rss_mb"], "weight_bytes": report["weight_bytes"],
                "embed_tokens_per_s": {"batch32x128": report["embed_tokens_per_s_32x128"], "batch64x16": report["embed_tokens_per_s_64x16"]},
                "offline_pairs_per_s": report["offline_pairs_per_s"],
                "fidelity_pairs": s.pairs, "min_embedding_cos": min_cos, "max_logit_dev": max_dlogit, "max_sigmoid_dev": max_dsig,
                "query_p50_ms_100_candidates": report["query_p50_ms_100_candidates"],
            }));
        }
    }
    let path = root().join("docs/bench/runtime.json");
    let mut doc: Value =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| json!({}));
    // Rows of (size, precision) not measured in this run are kept.
    let key = |r: &Value| (r["size"].clone(), r["precision"].clone());
    let measured: Vec<(Value, Value)> = rows.iter().map(key).collect();
    let mut kept: Vec<Value> = doc["sizes"]["rows"]
        .as_array()
        .map(|a| a.iter().filter(|r| !measured.contains(&key(r))).cloned().collect())
        .unwrap_or_default();
    kept.extend(rows);
    doc["sizes"] = json!({"command": "cargo bench --bench sizes", "cpu_flags": flags, "rows": kept});
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write runtime.json");
    println!("\nwrote {}", path.display());
}
