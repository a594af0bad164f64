//! `rwkvdb model bench`: what one model costs in one fresh process: time to the first
//! embedding, peak memory, weight bytes, embedding and offline-rerank throughput, and (optionally)
//! the outputs the fidelity comparison between precisions reads. `cargo bench --bench sizes` runs
//! it once per shape and precision.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::model_cmd::PrecisionArg;
use super::CliResult;
use rwkvdb::model::{weight_cache, Precision, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::EOS_TOKEN as EOS;
use rwkvdb::{CollectionConfig, Database, NewDocument, OpenOptions, QueryOptions, Rerank};

#[derive(Args)]
pub struct BenchArgs {
    /// Embedder checkpoint.
    #[arg(long)]
    embedder: PathBuf,
    /// Reranker checkpoint.
    #[arg(long)]
    reranker: PathBuf,
    /// Weight precision.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Only load the model (fills the weight cache) and exit.
    #[arg(long)]
    load_only: bool,
    /// Write embeddings and offline logits of `--pairs` deterministic (query, document) pairs here.
    #[arg(long)]
    fidelity_out: Option<PathBuf>,
    /// Pairs for `--fidelity-out`.
    #[arg(long, default_value_t = 300)]
    pairs: usize,
    /// Also time offline queries over 100 candidates in a collection (110 documents).
    #[arg(long)]
    query: bool,
}

/// Deterministic pseudo-text tokens (ids 1..65000), `n` of them.
fn tokens(n: usize, seed: usize) -> Vec<u32> {
    (0..n).map(|j| ((seed * 7919 + j * 104_729) % 65_000) as u32 + 1).collect()
}

fn with_eos(mut t: Vec<u32>) -> Vec<u32> {
    t.push(EOS);
    t
}

/// Tokens per second of embedding `batch` sequences of `len` tokens (one untimed warm-up run
/// at the same shape first: ONNX Runtime plans memory on the first run of a shape).
fn embed_rate(rt: &Runtime, batch: usize, len: usize) -> Result<f64, rwkvdb::Error> {
    let seqs: Vec<Vec<u32>> = (0..batch).map(|i| with_eos(tokens(len - 1, i))).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    rt.embed(&refs)?;
    let start = Instant::now();
    rt.embed(&refs)?;
    Ok((batch * len) as f64 / start.elapsed().as_secs_f64())
}

pub fn run(a: BenchArgs) -> CliResult {
    let start = Instant::now();
    let precision: Precision = a.precision.into();
    let opts = RuntimeOptions::default();
    let (prepared, from) = weight_cache::load(&opts.cache, &a.embedder, Some(&a.reranker), precision)?;
    let weight_bytes = prepared.weight_bytes();
    let rt = Runtime::from_prepared(Arc::new(prepared), &opts)?;
    rt.embed(&[&with_eos(tokens(8, 1))])?;
    let ready_s = start.elapsed().as_secs_f64();
    let ready_rss_mb = rwkvdb::memory::peak_rss_mb();
    println!("ready {ready_s:.3}");
    std::io::stdout().flush()?;
    if a.load_only {
        println!("{}", json!({"ready_s": ready_s, "loaded_from": format!("{from:?}")}));
        return Ok(());
    }

    let long = embed_rate(&rt, 32, 128)?;
    let short = embed_rate(&rt, 64, 16)?;
    // Offline rerank: 100 candidates (states of 4 documents of 128 tokens), a 16-token query.
    let docs: Vec<Vec<u32>> = (0..4).map(|i| tokens(128, 100 + i)).collect();
    let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
    let states = rt.prefix_states(&refs)?;
    let query = with_eos(tokens(15, 999));
    let queries: Vec<&[u32]> = (0..100).map(|_| query.as_slice()).collect();
    let batch = |(): ()| (0..100).map(|i| states[i % 4].clone()).collect::<Vec<_>>();
    rt.resume_and_score(batch(()), &queries)?;
    let t = Instant::now();
    rt.resume_and_score(batch(()), &queries)?;
    let offline = 100.0 / t.elapsed().as_secs_f64();

    if let Some(path) = &a.fidelity_out {
        let docs: Vec<Vec<u32>> = (0..a.pairs).map(|i| tokens(48 + i % 32, 5000 + i)).collect();
        let qs: Vec<Vec<u32>> = (0..a.pairs).map(|i| with_eos(tokens(8 + i % 8, 9000 + i))).collect();
        let doc_eos: Vec<Vec<u32>> = docs.iter().map(|d| with_eos(d.clone())).collect();
        let embeddings = rt.embed(&doc_eos.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        let mut logits = Vec::with_capacity(a.pairs);
        for (d, q) in docs.chunks(64).zip(qs.chunks(64)) {
            let st = rt.prefix_states(&d.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
            logits.extend(rt.resume_and_score(st, &q.iter().map(Vec::as_slice).collect::<Vec<_>>())?);
        }
        std::fs::write(path, serde_json::to_vec(&json!({"embeddings": embeddings, "logits": logits}))?)?;
    }

    let query_p50 = if a.query { Some(query_p50_ms(&a, precision)?) } else { None };
    let out = json!({
        "precision": precision.name(),
        "ready_s": ready_s,
        "loaded_from": format!("{from:?}"),
        "weight_bytes": weight_bytes,
        "embed_tokens_per_s_32x128": long,
        "embed_tokens_per_s_64x16": short,
        "offline_pairs_per_s": offline,
        "query_p50_ms_100_candidates": query_p50,
        "ready_peak_rss_mb": ready_rss_mb,
        "peak_rss_mb": rwkvdb::memory::peak_rss_mb(),
    });
    println!("{out}");
    Ok(())
}

/// Median latency of an offline query over 100 candidates in a fresh collection of 110 short
/// documents (the state size, hence the rerank cost, does not depend on document length).
fn query_p50_ms(a: &BenchArgs, precision: Precision) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile_dir()?;
    let result = (|| -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
        let db = Database::open(dir.join("bench.redb"), OpenOptions { durable: false, ..OpenOptions::default() })?;
        let mut cfg = CollectionConfig::new(&a.embedder, Some(a.reranker.clone()));
        cfg.precision = precision;
        let c = db.create_collection("bench", cfg)?;
        let words = ["state", "water", "river", "model", "query", "graph", "paper", "light", "stone", "cloud"];
        let docs: Vec<NewDocument> = (0..110)
            .map(|i| NewDocument {
                id: Some(format!("d{i}")),
                text: (0..12).map(|j| words[(i * 7 + j * 3) % words.len()]).collect::<Vec<_>>().join(" "),
                metadata: None,
            })
            .collect();
        c.insert(docs)?;
        let opts = QueryOptions { top_k: 10, candidates: 100, rerank: Rerank::Offline, ..Default::default() };
        c.query("which stone is near the river?", &opts)?;
        let mut ms: Vec<f64> = (0..9)
            .map(|i| {
                let t = Instant::now();
                c.query(&format!("which {} is near the {}?", words[i], words[9 - i]), &opts)
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rwkvdb-model-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
