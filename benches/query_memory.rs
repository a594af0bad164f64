//! Memory of one offline-reranked query against its number of candidates, at the 0.1B shape.
//! Writes `docs/bench/query_memory.json`.
//!
//!     cargo bench --bench query_memory
//!
//! Peak RSS is reset before each query (`/proc/self/clear_refs`, Linux) and read after it
//! (`VmHWM`): the growth is what the query itself needed. States are decoded and resumed
//! `RERANK_CHUNK` (128) candidates at a time, so the growth should stop rising past 128.

use std::time::Instant;

use rwkvdb::checkpoint::{synth, StoredDType};
use rwkvdb::model::offline_document_text;
use rwkvdb::tokenizer::Tokenizer;
use rwkvdb::{CollectionConfig, Database, OpenOptions, PrecomputedDocument, QueryOptions, Rerank};
use serde_json::json;

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn main() {
    let dir = std::env::temp_dir().join("rwkvdb-query-memory");
    std::fs::create_dir_all(&dir).expect("dir");
    let (emb, rr) = (dir.join("emb.pth"), dir.join("rr.pth"));
    synth::write_pair(&synth::SynthConfig::bench_0_1b(), &emb, &rr, StoredDType::F32).expect("write");
    let path = dir.join("q.redb");
    let _ = std::fs::remove_file(&path);
    let db = Database::open(&path, OpenOptions { durable: false, ..OpenOptions::default() }).expect("open");
    let c = db.create_collection("q", CollectionConfig::new(&emb, Some(rr))).expect("collection");

    // 16 real states and embeddings, copied into 600 documents.
    let texts: Vec<String> =
        (0..16).map(|i| format!("Document {i} describes a topic with some detail, number {}.", i * 37)).collect();
    let tok = Tokenizer::world();
    let rt = c.runtime().expect("runtime");
    let e: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_with_eos(t)).collect();
    let s: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(&offline_document_text(t))).collect();
    let embeddings = rt.embed(&e.iter().map(Vec::as_slice).collect::<Vec<_>>()).expect("embed");
    let states = rt.prefix_states(&s.iter().map(Vec::as_slice).collect::<Vec<_>>()).expect("states");
    for start in (0..600).step_by(100) {
        let docs = (start..start + 100)
            .map(|i| PrecomputedDocument {
                id: format!("d{i}"),
                text: texts[i % 16].clone(),
                metadata: None,
                embedding: embeddings[i % 16]
                    .iter()
                    .enumerate()
                    .map(|(j, x)| x + 1e-3 * ((i * j) % 7) as f32)
                    .collect(),
                state: Some(states[i % 16].clone()),
            })
            .collect();
        c.insert_precomputed(docs).expect("insert");
    }
    drop(states);

    println!("{:>10} {:>12} {:>16} {:>12}", "candidates", "query ms", "peak growth MB", "MB/candidate");
    let mut rows = Vec::new();
    for candidates in [16usize, 64, 128, 256, 512] {
        let opts = QueryOptions { top_k: 10, candidates, rerank: Rerank::Offline, ..QueryOptions::default() };
        c.query("a topic with detail", &opts).expect("warm-up");
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = status_kb("VmRSS:");
        let t = Instant::now();
        c.query("a topic with detail", &opts).expect("query");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let growth_mb = status_kb("VmHWM:").saturating_sub(base) as f64 / 1024.0;
        println!("{candidates:>10} {ms:>12.0} {growth_mb:>16.0} {:>12.2}", growth_mb / candidates as f64);
        rows.push(json!({"candidates": candidates, "query_ms": ms, "peak_rss_growth_mb": growth_mb}));
    }
    let out = json!({
        "command": "cargo bench --bench query_memory",
        "model": {"layers": 12, "width": 768, "reranker_layers": [1, 6, 10], "preset": "balanced"},
        "decoded_state_mb": 11.0 * (768.0 * 64.0 + 2.0 * 768.0) * 4.0 / (1024.0 * 1024.0),
        "rerank_chunk": rwkvdb::limits::RERANK_CHUNK,
        "runs": rows,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench/query_memory.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write");
    println!("wrote {}", path.display());
    let _ = std::fs::remove_dir_all(&dir);
}
