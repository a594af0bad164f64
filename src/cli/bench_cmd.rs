//! `rwkvdb bench`: the end-to-end benchmark. Everything runs through the public library API on
//! real database files: insert throughput with the model, query latency (no rerank, offline,
//! online) at each collection size, offline vs online rerank against document length, bytes per
//! document per precision preset and the cold open time of the largest collection.
//!
//! Large collections are built from *generated* documents so that building them takes minutes,
//! not days: each is a copy of a real corpus document (its text, its real offline state) with
//! the real embedding plus noise, so ANN search, state loading and reranking do the same work
//! as on embedded documents.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rwkvdb::checkpoint::{self, synth::SynthConfig, StoredDType};
use rwkvdb::codec::Preset;
use rwkvdb::model::{offline_document_text, ModelState};
use rwkvdb::tokenizer::Tokenizer;
use rwkvdb::{
    Collection, CollectionConfig, Database, NewDocument, OpenOptions, PrecomputedDocument, QueryOptions, Rerank,
};
use serde_json::{json, Value};

use super::demo::{bundled_corpus, QUESTIONS};
use super::CliResult;

#[derive(Args)]
pub struct BenchArgs {
    /// Working folder for model files and databases (needs tens of GB at the default sizes).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "docs/bench/e2e.json")]
    out: PathBuf,
    /// A small model and small collections: checks the machinery in seconds.
    #[arg(long)]
    quick: bool,
    /// Collection sizes for query latency (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// State preset for collections above 10,000 documents (keeps the file within disk space).
    #[arg(long, default_value = "tiny")]
    large_preset: String,
    /// Documents embedded for the insert throughput run (at least 3: two warm the model up).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(3..))]
    insert_docs: u64,
    /// Timed queries per mode and size (online rerank, the slow path, uses a quarter as many).
    #[arg(long, default_value_t = 20)]
    queries: usize,
    /// Keep the benchmark databases instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// Only the scale run: build a collection of this many documents through
    /// `insert_precomputed` (real embeddings plus noise and metadata; no reranker and no states,
    /// which would not fit the disk at a million), close it, and measure file size, cold open
    /// to first answer and to graph, memory, query latency and insert throughput at that size.
    /// The row is merged into --out (`scale` and `cold_open`).
    #[arg(long)]
    scale: Option<usize>,
}

/// Model shape and query settings of one run.
struct Plan {
    synth: SynthConfig,
    candidates: usize,
    /// Tokens per document for the insert and query runs.
    doc_tokens: usize,
    /// (document tokens, online candidates) of the speedup runs.
    doc_lengths: Vec<(usize, usize)>,
}

pub fn run(mut a: BenchArgs) -> CliResult {
    let plan = if a.quick {
        if a.sizes == [10_000, 100_000] {
            a.sizes = vec![300, 1000];
        }
        a.insert_docs = a.insert_docs.min(40);
        a.queries = a.queries.min(6);
        Plan {
            synth: SynthConfig { layers: 2, width: 128, reranker_layers: vec![1], seed: 5, ..SynthConfig::default() },
            candidates: 10,
            doc_tokens: 64,
            doc_lengths: vec![(64, 10), (256, 10)],
        }
    } else {
        Plan {
            synth: SynthConfig::bench_0_1b(),
            candidates: 50,
            doc_tokens: 256,
            doc_lengths: vec![(128, 50), (512, 50), (2048, 20), (4096, 10)],
        }
    };
    let large_preset = Preset::parse(&a.large_preset).ok_or_else(|| format!("unknown preset {:?}", a.large_preset))?;
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let s = &plan.synth;
    let (embedder, reranker) = (
        a.dir.join(format!("emb-{}x{}.pth", s.layers, s.width)),
        a.dir.join(format!("rr-{}x{}.pth", s.layers, s.width)),
    );
    if !embedder.exists() || !reranker.exists() {
        eprintln!("writing a synthetic {}x{} model to {}", s.layers, s.width, a.dir.display());
        checkpoint::synth::write_pair(s, &embedder, &reranker, StoredDType::F32)?;
    }
    if let Some(n) = a.scale {
        return scale_run(&a, &embedder, n);
    }
    let config = |preset: Preset| CollectionConfig {
        state_preset: preset.name().to_string(),
        ..CollectionConfig::new(&embedder, Some(reranker.clone()))
    };
    let corpus = bundled_corpus()?;

    // Documents of a chosen length: distinct windows of the concatenated corpus.
    let tok = Tokenizer::world();
    let long_text: String = corpus.iter().map(|d| d.text.as_str()).collect::<Vec<_>>().join("\n");
    let long_tokens = tok.encode(&long_text);
    let window = |i: usize, doc_tokens: usize| -> String {
        let start = (i * 997) % long_tokens.len().saturating_sub(doc_tokens).max(1);
        let end = (start + doc_tokens).min(long_tokens.len());
        // A window may cut a multi-byte character at either end: decode lossily.
        let bytes = tok.decode_bytes(&long_tokens[start..end]).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };

    // 1. Insert throughput: the whole pipeline, model included, durable commits.
    let db_path = a.dir.join("bench-insert.redb");
    remove_db(&db_path);
    let db = Database::open(&db_path, OpenOptions::default())?;
    let c = db.create_collection("insert", config(Preset::default()))?;
    let docs: Vec<NewDocument> = (0..a.insert_docs as usize)
        .map(|i| NewDocument { id: Some(format!("d{i}")), text: window(i, plan.doc_tokens), metadata: None })
        .collect();
    // Warm-up batch (session creation), not timed.
    c.insert(docs[..2].to_vec())?;
    let t = Instant::now();
    let mut tokens = 0;
    for batch in docs[2..].chunks(32) {
        tokens += c.insert(batch.to_vec())?.tokens;
    }
    let secs = t.elapsed().as_secs_f64();
    let inserted = docs.len() - 2;
    let insert = json!({"docs": inserted, "tokens": tokens, "doc_tokens": plan.doc_tokens, "batch": 32, "seconds": secs,
        "docs_per_s": inserted as f64 / secs, "tokens_per_s": tokens as f64 / secs});
    eprintln!(
        "insert: {inserted} docs, {tokens} tokens in {secs:.1}s ({:.1} docs/s, {:.0} tokens/s)",
        inserted as f64 / secs,
        tokens as f64 / secs
    );

    // 2. A pool of real embeddings and offline states to build large collections from.
    let rt = c.runtime()?;
    let pool_texts: Vec<String> =
        (0..if a.quick { 20 } else { 64 }).map(|i| window(1000 + i, plan.doc_tokens)).collect();
    let seqs: Vec<Vec<u32>> = pool_texts.iter().map(|t| tok.encode_with_eos(t)).collect();
    let mut embeddings = rt.embed(&seqs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
    for e in &mut embeddings {
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        for x in e.iter_mut() {
            *x /= norm;
        }
    }
    let seqs: Vec<Vec<u32>> = pool_texts.iter().map(|t| tok.encode(&offline_document_text(t))).collect();
    let states = rt.prefix_states(&seqs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
    let pool = Pool { texts: pool_texts, embeddings, states };
    drop(c);
    drop(db);
    remove_db(&db_path);

    // 3. Query latency per collection size; cold open of the largest.
    let mut queries = Vec::new();
    let mut cold_open = Vec::new();
    let largest = a.sizes.iter().copied().max().unwrap_or(0);
    for &n in &a.sizes {
        let preset = if n > 10_000 { large_preset } else { Preset::default() };
        let path = a.dir.join(format!("bench-{n}.redb"));
        remove_db(&path);
        {
            let db = Database::open(&path, OpenOptions { durable: false, ..OpenOptions::default() })?;
            let c = db.create_collection("bench", config(preset))?;
            fill(&c, &pool, n, |i| pool.texts[i % pool.texts.len()].clone())?;
            for rerank in [Rerank::None, Rerank::Offline, Rerank::Online] {
                let count = if rerank == Rerank::Online { a.queries.div_ceil(4) } else { a.queries };
                let opts = QueryOptions { top_k: 10, candidates: plan.candidates, rerank, ..QueryOptions::default() };
                let mut ms = latencies(&c, &opts, count)?;
                let (p50, p99) = percentiles(&mut ms);
                eprintln!("query n={n} {rerank:?}: p50 {p50:.1} ms, p99 {p99:.1} ms ({count} queries)");
                queries.push(json!({"n_docs": n, "rerank": rerank, "preset": preset.name(),
                    "candidates": plan.candidates, "top_k": 10, "queries": count, "p50_ms": p50, "p99_ms": p99}));
            }
        }
        if n == largest {
            // Cold open: until the collection answers (a flat index for large collections),
            // then until its HNSW graph is built in the background.
            let t = Instant::now();
            let db = Database::open(&path, OpenOptions::default())?;
            let c = db.collection("bench")?;
            let secs = t.elapsed().as_secs_f64();
            let opts = QueryOptions { top_k: 10, rerank: Rerank::None, ..QueryOptions::default() };
            let mut early = latencies(&c, &opts, 5)?;
            let (early_p50, _) = percentiles(&mut early);
            while !c.stats()?.index_graph_ready {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            let graph_secs = t.elapsed().as_secs_f64();
            eprintln!(
                "cold open of {} documents: answering after {secs:.1}s ({early_p50:.0} ms per query meanwhile), graph after {graph_secs:.1}s",
                c.count()?
            );
            cold_open.push(json!({"n_docs": n, "seconds": secs, "graph_ready_s": graph_secs,
                "query_p50_ms_before_graph": early_p50}));
        }
        if !a.keep {
            remove_db(&path);
        }
    }

    // 4. Offline vs online rerank against document length.
    let mut speedup = Vec::new();
    for &(doc_tokens, online_candidates) in &plan.doc_lengths {
        let path = a.dir.join(format!("bench-len{doc_tokens}.redb"));
        remove_db(&path);
        let db = Database::open(&path, OpenOptions { durable: false, ..OpenOptions::default() })?;
        let c = db.create_collection("len", config(Preset::default()))?;
        let n = plan.candidates.max(online_candidates);
        fill(&c, &pool, n, |i| window(i, doc_tokens - 1))?;
        let pairs_per_s = |candidates: usize, rerank: Rerank| -> Result<f64, rwkvdb::Error> {
            let opts = QueryOptions { top_k: candidates, candidates, rerank, ..QueryOptions::default() };
            c.query(QUESTIONS[0], &opts)?; // warm-up
            let t = Instant::now();
            c.query(QUESTIONS[1], &opts)?;
            Ok(candidates as f64 / t.elapsed().as_secs_f64())
        };
        let offline = pairs_per_s(plan.candidates, Rerank::Offline)?;
        let online = pairs_per_s(online_candidates, Rerank::Online)?;
        eprintln!(
            "doc {doc_tokens} tokens: offline {offline:.1} pairs/s, online {online:.2} pairs/s ({:.1}x)",
            offline / online
        );
        speedup.push(json!({"doc_tokens": doc_tokens, "offline_candidates": plan.candidates,
            "online_candidates": online_candidates, "offline_pairs_per_s": offline,
            "online_pairs_per_s": online, "speedup": offline / online}));
        drop(c);
        drop(db);
        remove_db(&path);
    }

    // 5. Bytes per document on disk, per preset (file size over documents, after compaction).
    let mut bytes = Vec::new();
    let n = if a.quick { 20 } else { 200 };
    for preset in Preset::ALL {
        let path = a.dir.join(format!("bench-preset-{}.redb", preset.name()));
        remove_db(&path);
        {
            let db = Database::open(&path, OpenOptions::default())?;
            let c = db.create_collection("p", config(preset))?;
            fill(&c, &pool, n, |i| pool.texts[i % pool.texts.len()].clone())?;
            let st = c.stats()?;
            bytes.push(json!({"preset": preset.name(), "default": preset == Preset::default(),
                "state_bytes_per_doc": st.state_bytes_per_document, "doc_bytes_per_doc": st.doc_bytes_per_document}));
        }
        Database::compact_file(&path)?;
        let file = std::fs::metadata(&path).map_or(0, |m| m.len());
        if let Some(Value::Object(row)) = bytes.last_mut() {
            row.insert("file_bytes_per_doc".into(), json!(file as f64 / n as f64));
        }
        remove_db(&path);
    }

    let out = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "doc_tokens": plan.doc_tokens,
        "model": {"layers": s.layers, "width": s.width, "reranker_layers": s.reranker_layers, "synthetic": true},
        "threads": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "insert": insert,
        "query": queries,
        "speedup": speedup,
        "bytes_per_doc": bytes,
        "cold_open": cold_open,
        "cold_open_s_100k": cold_open.iter().find(|r| r["n_docs"] == 100_000).map(|r| r["seconds"].clone()),
        "notes": "Collections for query latency and speedup are built from generated documents: copies of real \
                  corpus documents with their real offline states and noisy real embeddings. Collections above \
                  10,000 documents store states with the large preset to fit on disk.",
    });
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&out)?).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// Real embeddings and states of a few corpus documents.
struct Pool {
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    states: Vec<ModelState>,
}

/// Adds `n` generated documents: document `i` copies pool entry `i % pool` (state, unit
/// embedding plus noise of norm ~0.3) with the text `text(i)`.
fn fill(c: &Collection, pool: &Pool, n: usize, text: impl Fn(usize) -> String) -> Result<(), rwkvdb::Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} docs, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("building {n}"));
    let k = pool.states.len();
    let noise = 0.5 / (pool.embeddings[0].len() as f32).sqrt();
    for start in (0..n).step_by(500) {
        let batch = (start..(start + 500).min(n))
            .map(|i| PrecomputedDocument {
                id: format!("g{i}"),
                text: text(i),
                metadata: Some(json!({"n": i})),
                embedding: pool.embeddings[i % k].iter().map(|x| x + noise * rng.gen_range(-1.0f32..1.0)).collect(),
                state: Some(pool.states[i % k].clone()),
            })
            .collect::<Vec<_>>();
        c.insert_precomputed(batch)?;
        bar.set_position((start + 500).min(n) as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Wall-clock milliseconds of `count` queries (after one warm-up query).
fn latencies(c: &Collection, opts: &QueryOptions, count: usize) -> Result<Vec<f64>, rwkvdb::Error> {
    c.query("warm-up", opts)?;
    let mut ms = Vec::with_capacity(count);
    for q in QUESTIONS.iter().cycle().take(count) {
        let t = Instant::now();
        c.query(q, opts)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// (p50, p99) by the nearest-rank method.
fn percentiles(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    if ms.is_empty() {
        (0.0, 0.0)
    } else {
        (rank(0.50), rank(0.99))
    }
}

/// Deletes a database file if present (the benchmark starts from empty files).
fn remove_db(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The scale run (`--scale N`): see [`BenchArgs::scale`].
fn scale_run(a: &BenchArgs, embedder: &Path, n: usize) -> CliResult {
    const BATCH: usize = 1000;
    let path = a.dir.join(format!("bench-scale-{n}.redb"));
    remove_db(&path);
    let config = CollectionConfig::new(embedder, None);
    // Real embeddings of corpus windows; every document is one of them plus noise.
    let corpus = bundled_corpus()?;
    let fill_start = Instant::now();
    let (fill_s, close_s, dim) = {
        let db = Database::open(&path, OpenOptions { durable: false, ..OpenOptions::default() })?;
        let c = db.create_collection("scale", config)?;
        let rt = c.runtime()?;
        let tok = Tokenizer::world();
        let seqs: Vec<Vec<u32>> = corpus.iter().take(64).map(|d| tok.encode_with_eos(&d.text)).collect();
        let pool = rt.embed(&seqs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        let noise = 0.5 / (pool[0].len() as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
        let bar = ProgressBar::new(n as u64).with_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} docs, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("building {n}"));
        for start in (0..n).step_by(BATCH) {
            let batch = (start..(start + BATCH).min(n))
                .map(|i| PrecomputedDocument {
                    id: format!("g{i}"),
                    text: format!("generated document {i}, a copy of corpus entry {}", i % pool.len()),
                    metadata: Some(json!({"n": i, "bucket": i % 10})),
                    embedding: pool[i % pool.len()].iter().map(|x| x + noise * rng.gen_range(-1.0f32..1.0)).collect(),
                    state: None,
                })
                .collect::<Vec<_>>();
            c.insert_precomputed(batch)?;
            bar.set_position((start + BATCH).min(n) as u64);
        }
        bar.finish_and_clear();
        let fill_s = fill_start.elapsed().as_secs_f64();
        drop(c);
        // Closing saves the index.
        let t = Instant::now();
        db.close()?;
        (fill_s, t.elapsed().as_secs_f64(), pool[0].len())
    };
    let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    eprintln!(
        "built {n} documents in {fill_s:.0}s; closing (saving the index) took {close_s:.1}s; file {:.2} GB",
        file_bytes as f64 / 1e9
    );

    // Cold open (the page cache may still hold the file: see the JSON's note).
    let t = Instant::now();
    let db = Database::open(&path, OpenOptions::default())?;
    let c = db.collection("scale")?;
    let open_s = t.elapsed().as_secs_f64();
    let status = c.index_status();
    let graph_ready_s = if status.graph_ready {
        open_s
    } else {
        while !c.index_status().graph_ready {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        t.elapsed().as_secs_f64()
    };
    let plain = QueryOptions { top_k: 10, rerank: Rerank::None, ..QueryOptions::default() };
    let t_first = Instant::now();
    c.query(QUESTIONS[0], &plain)?;
    let first_query_s = t_first.elapsed().as_secs_f64();
    // Wall time per query (embedding the question included) and the ANN search's share.
    let timed = |opts: &QueryOptions| -> Result<(Vec<f64>, Vec<f64>), rwkvdb::Error> {
        let (mut wall, mut ann) = (Vec::new(), Vec::new());
        for q in QUESTIONS.iter().cycle().take(a.queries.max(20)) {
            let t = Instant::now();
            let r = c.query(q, opts)?;
            wall.push(t.elapsed().as_secs_f64() * 1e3);
            ann.push(r.timings.ann_ms);
        }
        Ok((wall, ann))
    };
    let (mut ms, mut ann) = timed(&plain)?;
    let (p50, p99) = percentiles(&mut ms);
    let (ann_p50, ann_p99) = percentiles(&mut ann);
    let filtered = QueryOptions { filter: Some(rwkvdb::Filter::parse(r#"{"bucket": 3}"#)?), ..plain.clone() };
    let (mut fms, mut fann) = timed(&filtered)?;
    let (fp50, fp99) = percentiles(&mut fms);
    let (fann_p50, fann_p99) = percentiles(&mut fann);
    let (rss, peak) = rss_mb();
    let index_mb = c.index_status().memory_bytes as f64 / 1e6;
    let unreachable = c.index_status().unreachable;
    eprintln!(
        "cold open: answering after {open_s:.2}s (graph {graph_ready_s:.2}s; {}), first query {first_query_s:.1}s (loads the model), p50 {p50:.1} ms (ANN {ann_p50:.2} ms), p99 {p99:.1} ms, filtered p50 {fp50:.1} ms (ANN {fann_p50:.2} ms); RSS {rss:.0} MB, index {index_mb:.0} MB, {unreachable} unreachable",
        status.origin
    );
    // Inserts at that size: durable batches of 500.
    let extra = 5_000;
    let t = Instant::now();
    for start in (0..extra).step_by(500) {
        let batch = (start..start + 500)
            .map(|i| PrecomputedDocument {
                id: format!("x{i}"),
                text: format!("added at size {n}: {i}"),
                metadata: None,
                embedding: (0..dim).map(|d| ((i * 31 + d * 7) % 101) as f32 / 101.0 - 0.5).collect(),
                state: None,
            })
            .collect();
        c.insert_precomputed(batch)?;
    }
    let insert_docs_per_s = extra as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let saved = c.checkpoint()?;
    let checkpoint_s = t.elapsed().as_secs_f64();
    eprintln!("insert at size: {insert_docs_per_s:.0} docs/s; checkpoint after {extra} inserts: {checkpoint_s:.2}s ({} of {} vector blocks written)", saved.blocks_written, saved.blocks_written + saved.blocks_kept);
    drop(c);
    drop(db);
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let row = json!({"n_docs": n, "states": false, "seconds": open_s, "graph_ready_s": graph_ready_s,
        "first_query_s": first_query_s, "index_origin": status.origin, "file_bytes": file_bytes,
        "file_bytes_per_doc": file_bytes as f64 / n as f64, "fill_s": fill_s, "fill_docs_per_s": n as f64 / fill_s,
        "close_save_s": close_s, "query_p50_ms": p50, "query_p99_ms": p99, "filtered_p50_ms": fp50,
        "filtered_p99_ms": fp99, "ann_p50_ms": ann_p50, "ann_p99_ms": ann_p99, "filtered_ann_p50_ms": fann_p50,
        "filtered_ann_p99_ms": fann_p99, "rss_mb": rss, "peak_rss_mb": peak, "index_mb": index_mb, "unreachable": unreachable,
        "index_mb_per_100k": index_mb * 100_000.0 / n as f64, "insert_docs_per_s_at_size": insert_docs_per_s,
        "checkpoint_after_inserts_s": checkpoint_s, "cpu": cpu,
        "command": std::env::args().collect::<Vec<_>>().join(" ")});
    // Merge into --out: replace this size's rows.
    let mut out: Value =
        std::fs::read_to_string(&a.out).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(json!({}));
    for key in ["scale", "cold_open"] {
        let mut rows: Vec<Value> = out[key].as_array().cloned().unwrap_or_default();
        rows.retain(|r| r["n_docs"] != n);
        rows.push(row.clone());
        rows.sort_by_key(|r| r["n_docs"].as_u64());
        out[key] = Value::Array(rows);
    }
    if n == 100_000 {
        out["cold_open_s_100k"] = row["seconds"].clone();
    }
    out["scale_note"] = json!(
        "Scale rows (`rwkvdb bench --scale N`): a collection without reranker or states, filled \
        through insert_precomputed in non-durable batches of 1,000, then closed (which saves the ANN index) and \
        reopened in the same process: the page cache may hold the file, so `seconds` is a warm-cache open. \
        `seconds`: Database::open + collection() until it answers; `graph_ready_s`: until the HNSW graph is in; \
        `first_query_s`: the first query, which loads the model. RSS includes the model."
    );
    std::fs::write(&a.out, serde_json::to_string_pretty(&out)?).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("merged into {}", a.out.display());
    if !a.keep {
        remove_db(&path);
    }
    Ok(())
}
