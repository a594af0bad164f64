//! `rwkvdb eval`: ranking quality on BEIR-format data, and layer-wise sentence embeddings
//! ([`super::eval_layers`]); docs/evaluation.md.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rwkvdb::eval::retrieval::{self, Agreement, ModeResult};
use rwkvdb::{Collection, CollectionConfig, Database, OpenOptions, PrecomputedDocument, QueryOptions, Rerank};
use serde::Serialize;

use super::CliResult;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Ranking quality of each rerank mode (and state preset) on BEIR-format data: nDCG@10,
    /// Recall@10/@100, MRR@10, MAP@100, latency, and how offline and online rerank agree.
    Retrieval(RetrievalArgs),
    /// Layer-wise zero-shot sentence embeddings on labelled pairs (MRPC, STS-B): Spearman
    /// correlation per layer and pooling, against the trained retrieval embedding and a GloVe
    /// average; time and memory per method; an SVG plot.
    Layers(super::eval_layers::LayersArgs),
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// BEIR corpus.jsonl (`_id`, `title`, `text`): indexed into a temporary database.
    #[arg(long, required_unless_present = "collection")]
    corpus: Option<PathBuf>,
    /// BEIR queries.jsonl (`_id`, `text`).
    #[arg(long)]
    queries: PathBuf,
    /// BEIR qrels TSV (`query-id`, `corpus-id`, `score`, with a header line).
    #[arg(long)]
    qrels: PathBuf,
    /// Evaluate documents already stored in this collection of --db instead of --corpus (its
    /// ids must be the qrels' corpus ids).
    #[arg(long, conflicts_with_all = ["corpus", "preset"])]
    collection: Option<String>,
    /// Database file of --collection.
    #[arg(long, env = "RWKVDB_PATH", default_value = "rwkvdb.redb")]
    db: PathBuf,
    /// Embedder checkpoint (with --corpus).
    #[arg(long, required_unless_present = "collection")]
    embedder: Option<PathBuf>,
    /// Reranker checkpoint (with --corpus; needed for offline and online rerank).
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// Rerank modes to run, comma separated: none, offline, online.
    #[arg(long, value_delimiter = ',', default_value = "none,offline")]
    rerank: Vec<String>,
    /// State presets to compare (with --corpus), comma separated: each gets its own collection
    /// filled from one model pass.
    #[arg(long, value_delimiter = ',', default_value = "balanced")]
    preset: Vec<String>,
    /// Hits kept per query (Recall@100 and MAP@100 need 100).
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// ANN candidates reranked per query (at least --top-k).
    #[arg(long, default_value_t = 100)]
    candidates: usize,
    /// Online rerank re-reads every candidate: it runs on the first N queries (by id) only.
    #[arg(long, default_value_t = 20)]
    online_sample: usize,
    /// Write one TREC run file per preset and mode: PREFIX.PRESET.MODE.trec.
    #[arg(long)]
    run: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// The results of one preset (or of the stored collection).
#[derive(Serialize)]
struct PresetResult {
    preset: String,
    modes: Vec<ModeResult>,
    /// Offline against online on the queries both ran (absent unless both were asked).
    offline_vs_online: Option<Agreement>,
}

#[derive(Serialize)]
struct Report {
    documents: u64,
    queries: usize,
    judged_queries: usize,
    top_k: usize,
    candidates: usize,
    results: Vec<PresetResult>,
}

pub fn run(cmd: EvalCommand) -> CliResult {
    match cmd {
        EvalCommand::Retrieval(a) => retrieval_cmd(a),
        EvalCommand::Layers(a) => super::eval_layers::run(a),
    }
}

fn parse_mode(m: &str) -> Result<Rerank, String> {
    match m.trim() {
        "none" => Ok(Rerank::None),
        "offline" => Ok(Rerank::Offline),
        "online" => Ok(Rerank::Online),
        other => Err(format!("--rerank: unknown mode {other:?} (choose from none, offline, online)")),
    }
}

fn bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(len as u64) };
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn retrieval_cmd(a: RetrievalArgs) -> CliResult {
    let modes: Vec<Rerank> = a.rerank.iter().map(|m| parse_mode(m)).collect::<Result<_, _>>()?;
    if a.top_k == 0 {
        return Err("--top-k must be at least 1".into());
    }
    let mut queries = retrieval::read_beir_jsonl(&a.queries)?;
    let qrels = retrieval::read_qrels(&a.qrels)?;
    // Only judged queries can be measured; run them in id order (the online sample is a prefix).
    queries.retain(|(id, _)| qrels.contains_key(id));
    queries.sort();
    if queries.is_empty() {
        return Err(format!("no query of {} has judgments in {}", a.queries.display(), a.qrels.display()).into());
    }
    let quiet = a.json;

    // Collections to evaluate: the stored one, or one per preset built from the corpus.
    let _workdir;
    let db;
    let mut collections: Vec<(String, Collection)> = Vec::new();
    let mut corpus_docs = Vec::new();
    if let Some(name) = &a.collection {
        db = Database::open(&a.db, OpenOptions { create: false, ..OpenOptions::default() })?;
        let c = db.collection(name)?;
        collections.push((c.config().state_preset, c));
    } else {
        let (Some(corpus), Some(embedder)) = (&a.corpus, &a.embedder) else {
            return Err("give --corpus and --embedder, or --collection".into());
        };
        let docs = retrieval::read_beir_jsonl(corpus)?;
        let dir = tempfile_dir()?;
        db = Database::open(dir.join("eval.redb"), OpenOptions { durable: false, ..OpenOptions::default() })?;
        _workdir = TempDir(dir);
        for preset in &a.preset {
            let mut cfg = CollectionConfig::new(embedder, a.reranker.clone());
            cfg.state_preset.clone_from(preset);
            cfg.truncate = true;
            collections.push((preset.clone(), db.create_collection(&format!("eval-{preset}"), cfg)?));
        }
        corpus_docs = docs;
    }
    let reranks = modes.iter().any(|&m| m != Rerank::None);
    if reranks && collections.iter().any(|(_, c)| c.config().reranker.is_none()) {
        return Err("--rerank offline/online needs a reranker (give --reranker, or --rerank none)".into());
    }
    // Checked first: indexing the corpus is the long part.
    fill(&collections, &corpus_docs, quiet)?;
    let documents = collections.first().map(|(_, c)| c.count()).transpose()?.unwrap_or(0);

    let mut results = Vec::new();
    for (preset, c) in &collections {
        let mut modes_out = Vec::new();
        for &mode in &modes {
            let sample =
                if mode == Rerank::Online { &queries[..a.online_sample.min(queries.len())] } else { &queries[..] };
            let opts = QueryOptions {
                top_k: a.top_k,
                candidates: a.candidates.max(a.top_k),
                rerank: mode,
                ..QueryOptions::default()
            };
            let progress = bar(sample.len(), &format!("queries ({preset}, {mode:?})"), quiet);
            let r = retrieval::run_mode(c, sample, &qrels, &opts, || progress.inc(1))?;
            progress.finish_and_clear();
            if let Some(prefix) = &a.run {
                let path = PathBuf::from(format!("{}.{preset}.{}.trec", prefix.display(), r.mode));
                std::fs::write(&path, retrieval::trec_run_file(&r.runs, &format!("rwkvdb-{preset}-{}", r.mode)))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            modes_out.push(r);
        }
        let by_mode = |m: &str| modes_out.iter().find(|r| r.mode == m).map(|r| &r.runs);
        let offline_vs_online = match (by_mode("offline"), by_mode("online")) {
            (Some(off), Some(on)) => Some(retrieval::agreement(off, on)),
            _ => None,
        };
        results.push(PresetResult { preset: preset.clone(), modes: modes_out, offline_vs_online });
    }

    let report = Report {
        documents,
        queries: queries.len(),
        judged_queries: qrels.len(),
        top_k: a.top_k,
        candidates: a.candidates,
        results,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

/// Indexes `docs` into every collection from one model pass: the first collection embeds and
/// computes the states, every collection stores them with its own preset.
fn fill(collections: &[(String, Collection)], docs: &[(String, String)], quiet: bool) -> CliResult {
    let Some((_, first)) = collections.first() else { return Ok(()) };
    let keeps_states = first.config().reranker.is_some();
    let progress = bar(docs.len(), "documents", quiet);
    for batch in docs.chunks(32) {
        let texts: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
        let embeddings = first.embed(&texts)?;
        let states: Vec<Option<rwkvdb::model::ModelState>> = if keeps_states {
            first.document_states(&texts)?.into_iter().map(Some).collect()
        } else {
            vec![None; batch.len()]
        };
        for (_, c) in collections {
            let pre = batch
                .iter()
                .zip(&embeddings)
                .zip(&states)
                .map(|(((id, text), embedding), state)| PrecomputedDocument {
                    id: id.clone(),
                    text: text.clone(),
                    metadata: None,
                    embedding: embedding.clone(),
                    state: state.clone(),
                })
                .collect();
            c.insert_precomputed(pre)?;
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "{} documents, {} queries with judgments (top {} of {} candidates)",
        r.documents, r.queries, r.top_k, r.candidates
    );
    println!(
        "{:<10} {:<8} {:>7} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9}",
        "preset", "rerank", "queries", "nDCG@10", "R@10", "R@100", "MRR@10", "MAP@100", "p50 ms", "p99 ms"
    );
    for p in &r.results {
        for m in &p.modes {
            let x = m.measures;
            println!(
                "{:<10} {:<8} {:>7} {:>8.4} {:>7.4} {:>7.4} {:>7.4} {:>8.4} {:>9.1} {:>9.1}",
                p.preset,
                m.mode,
                m.queries,
                x.ndcg_10,
                x.recall_10,
                x.recall_100,
                x.mrr_10,
                x.map_100,
                m.latency_p50_ms,
                m.latency_p99_ms
            );
        }
        if let Some(g) = p.offline_vs_online {
            println!(
                "{:<10} offline vs online on {} queries: top-10 overlap {:.3}, same first hit {:.3}, mean |logit diff| {:.4}",
                p.preset, g.queries, g.top10_overlap, g.same_top1, g.mean_abs_score_diff
            );
        }
        if let Some(m) = p.modes.first().filter(|m| m.judged_without_relevant > 0) {
            println!(
                "{:<10} note: {} judged queries have no relevant document (they score 0)",
                p.preset, m.judged_without_relevant
            );
        }
    }
}

/// A fresh folder under the system's temporary directory.
fn tempfile_dir() -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!(
        "rwkvdb-eval-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes its folder when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
