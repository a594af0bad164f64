//! The Python binding's overhead: the same adds (batches of 32) and queries (rerank none and
//! offline, top 10 of 50 candidates) run through the Rust library and through `import rwkvdb`
//! (python/bench/overhead.py), alternating five rounds on one database file; medians compared.
//!
//! Needs the Python package built into target/pyenv (`scripts/test-python` does it).
//!
//!     cargo bench --bench binding        # writes docs/bench/binding.json

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rwkvdb::checkpoint::{synth, StoredDType};
use rwkvdb::{CollectionConfig, Database, NewDocument, OpenOptions, QueryOptions, Rerank};
use serde_json::{json, Value};

const ROUNDS: usize = 5;
const DOCS: usize = 512;
const QUERIES: usize = 120;

fn rust_round(db_path: &Path, emb: &Path, rr: &Path, name: &str, docs: &[NewDocument], queries: &[String]) -> Value {
    let db = Database::open(db_path, OpenOptions::default()).unwrap();
    let c = db.create_collection(name, CollectionConfig::new(emb, Some(rr.to_path_buf()))).unwrap();
    c.insert(vec![NewDocument { id: Some("warm".into()), text: "warm up the model".into(), metadata: None }]).unwrap();
    let start = Instant::now();
    for batch in docs.chunks(32) {
        c.insert(batch.to_vec()).unwrap();
    }
    let docs_per_s = docs.len() as f64 / start.elapsed().as_secs_f64();
    let (mut p50, mut untimed) = (serde_json::Map::new(), serde_json::Map::new());
    for (label, mode) in [("none", Rerank::None), ("offline", Rerank::Offline)] {
        let opts = QueryOptions { top_k: 10, candidates: 50, rerank: mode, ..QueryOptions::default() };
        c.query(&queries[0], &opts).unwrap();
        let (mut times, mut rest) = (Vec::new(), Vec::new());
        for q in queries {
            let t = Instant::now();
            let r = c.query(q, &opts).unwrap();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(r.hits.len(), 10);
            let s = r.timings;
            times.push(ms);
            // Wall time outside the stages the library times itself (as the Python half measures).
            rest.push(ms - (s.embed_ms + s.ann_ms + s.load_ms + s.rerank_ms));
        }
        p50.insert(label.into(), json!(median(&mut times)));
        untimed.insert(label.into(), json!(median(&mut rest)));
    }
    drop(c);
    db.close().unwrap();
    json!({ "docs_per_s": docs_per_s, "query_p50_ms": p50, "untimed_p50_ms": untimed })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pyenv/bin/python");
    assert!(python.exists(), "build the Python package first: scripts/test-python");
    let dir = root.join("target/binding-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (emb, rr) = (dir.join("emb.pth"), dir.join("rr.pth"));
    let cfg = synth::SynthConfig { layers: 4, width: 256, reranker_layers: vec![1, 2], ..Default::default() };
    synth::write_pair(&cfg, &emb, &rr, StoredDType::F32).unwrap();

    let corpus: Vec<String> = std::fs::read_to_string(root.join("docs/demo/corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let docs: Vec<NewDocument> = (0..DOCS)
        .map(|i| NewDocument {
            id: Some(format!("d{i}")),
            text: format!("{} (copy {i})", corpus[i % corpus.len()]),
            metadata: Some(json!({ "n": i })),
        })
        .collect();
    let queries: Vec<String> =
        (0..QUERIES).map(|i| corpus[(i * 7) % corpus.len()].chars().take(80).collect()).collect();
    let docs_json: Vec<Value> =
        docs.iter().map(|d| json!({ "id": d.id, "text": d.text, "metadata": d.metadata })).collect();
    std::fs::write(dir.join("docs.json"), serde_json::to_string(&docs_json).unwrap()).unwrap();
    std::fs::write(dir.join("queries.json"), serde_json::to_string(&queries).unwrap()).unwrap();
    let db_path = dir.join("bench.redb");

    let (mut rust, mut py) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        rust.push(rust_round(&db_path, &emb, &rr, &format!("rust{round}"), &docs, &queries));
        let out = Command::new(&python)
            .arg(root.join("python/bench/overhead.py"))
            .args([&db_path, &emb, &rr])
            .arg(format!("py{round}"))
            .args([dir.join("docs.json"), dir.join("queries.json")])
            .env("RWKVDB_CACHE_DIR", root.join("target/test-weight-cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        py.push(serde_json::from_slice::<Value>(&out.stdout).unwrap());
        eprintln!("round {round}: rust {} python {}", rust[round], py[round]);
    }
    let pick = |runs: &[Value], path: &[&str]| {
        let mut v: Vec<f64> = runs.iter().map(|r| path.iter().fold(r, |v, k| &v[*k]).as_f64().unwrap()).collect();
        median(&mut v)
    };
    let mut rows = Vec::new();
    println!("{:<28} {:>10} {:>10} {:>9}", "measure (median of rounds)", "rust", "python", "overhead");
    for (label, path, higher_is_better) in [
        ("add, docs/s (batches of 32)", vec!["docs_per_s"], true),
        ("query p50 ms, rerank none", vec!["query_p50_ms", "none"], false),
        ("query p50 ms, rerank offline", vec!["query_p50_ms", "offline"], false),
    ] {
        let (r, p) = (pick(&rust, &path), pick(&py, &path));
        let overhead = if higher_is_better { r / p - 1.0 } else { p / r - 1.0 };
        println!("{label:<28} {r:>10.2} {p:>10.2} {:>8.1}%", overhead * 100.0);
        rows.push(json!({ "measure": label, "rust": r, "python": p, "overhead": overhead }));
    }
    // The binding's own cost per query, free of the machine's noise on the model stages: the
    // wall time outside the library's timed stages, Python minus Rust, against the Rust latency.
    for mode in ["none", "offline"] {
        let extra = pick(&py, &["untimed_p50_ms", mode]) - pick(&rust, &["untimed_p50_ms", mode]);
        let share = extra / pick(&rust, &["query_p50_ms", mode]);
        let label = format!("binding ms per query, {mode}");
        println!("{label:<28} {extra:>21.3} {:>8.1}%", share * 100.0);
        rows.push(json!({ "measure": label, "binding_ms": extra, "overhead": share }));
    }
    let report = json!({
        "command": "cargo bench --bench binding",
        "model": "synthetic 4 layers x 256",
        "documents": DOCS,
        "queries": QUERIES,
        "rounds": ROUNDS,
        "rows": rows,
        "rust_runs": rust,
        "python_runs": py,
    });
    std::fs::write(root.join("docs/bench/binding.json"), serde_json::to_string_pretty(&report).unwrap() + "\n")
        .unwrap();
}
