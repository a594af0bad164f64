//! `rwkvdb demo`: the quickstart. Creates a database, imports the bundled corpus, runs a few
//! queries with offline and online rerank and prints both rankings with timings.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use rwkvdb::checkpoint::{self, synth::SynthConfig, StoredDType};
use rwkvdb::{CollectionConfig, Database, NewDocument, OpenOptions, QueryOptions, Rerank};

use super::CliResult;

/// The bundled demo corpus (origin and licence: docs/demo/README.md).
const CORPUS: &str = include_str!("../../docs/demo/corpus.jsonl");

/// Questions about the corpus: the demo asks the first four, `rwkvdb bench` all of them.
pub(super) const QUESTIONS: &[&str] = &[
    "How do I compress data?",
    "How can I read and write CSV files?",
    "Which module implements a priority queue?",
    "How do I compute a SHA-256 hash?",
    "parse a date from a string",
    "generate random numbers",
    "open a network socket",
    "run a subprocess and capture its output",
    "serialise objects to bytes",
    "work with temporary files",
    "format text to a fixed width",
    "match regular expressions",
    "read a configuration file",
    "measure elapsed time",
    "copy a directory tree",
    "decode base64 data",
    "send an email",
    "schedule a function to run later",
    "compare two sequences and show differences",
    "how are decimal numbers rounded?",
];

/// The bundled corpus as documents.
pub(super) fn bundled_corpus() -> Result<Vec<NewDocument>, String> {
    rwkvdb::import::read_jsonl(CORPUS.as_bytes(), "docs/demo/corpus.jsonl", "corpus")
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bundled corpus: {e}"))
}

#[derive(Args)]
pub struct DemoArgs {
    /// Working folder (database and synthetic model files).
    #[arg(long, default_value = "target/demo")]
    dir: PathBuf,
    /// Real embedder checkpoint (e.g. rwkv0b1-emb-curriculum.pth); default: a synthetic model.
    #[arg(long, env = "RWKVDB_EMBEDDER")]
    embedder: Option<PathBuf>,
    /// Real reranker checkpoint (e.g. rwkv0b1-reranker.pth).
    #[arg(long, env = "RWKVDB_RERANKER")]
    reranker: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> CliResult {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let (embedder, reranker, synthetic) = match (a.embedder, a.reranker) {
        (Some(e), Some(r)) => (e, r, false),
        (None, None) => {
            let e = a.dir.join("synthetic-emb.pth");
            let r = a.dir.join("synthetic-reranker.pth");
            if !e.exists() || !r.exists() {
                let cfg = SynthConfig {
                    layers: 4,
                    width: 256,
                    reranker_layers: vec![1, 2],
                    seed: 7,
                    ..SynthConfig::default()
                };
                checkpoint::synth::write_pair(&cfg, &e, &r, StoredDType::F32)?;
            }
            (e, r, true)
        }
        _ => return Err("pass both --embedder and --reranker (or neither for the synthetic model)".into()),
    };
    if synthetic {
        println!("NOTE: no model given, using a small SYNTHETIC model (random weights): the rankings below are");
        println!("      meaningless, they only show the machinery. See README.md for the real weights.\n");
    }

    let db_path = a.dir.join("demo.redb");
    let _ = std::fs::remove_file(&db_path);
    let db = Database::open(&db_path, OpenOptions::default())?;
    let c = db.create_collection("demo", CollectionConfig::new(&embedder, Some(reranker)))?;

    let docs = bundled_corpus()?;
    let n = docs.len();
    let t0 = Instant::now();
    let mut tokens = 0;
    for batch in docs.chunks(32) {
        tokens += c.insert(batch.to_vec())?.tokens;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "imported {n} documents ({tokens} tokens) in {secs:.1}s ({:.0} docs/s); state {:.0} bytes/doc\n",
        n as f64 / secs,
        c.stats()?.state_bytes_per_document
    );

    for q in &QUESTIONS[..4] {
        println!("query: {q}");
        for mode in [Rerank::Offline, Rerank::Online] {
            let opts = QueryOptions { top_k: 3, candidates: 20, rerank: mode, ..QueryOptions::default() };
            let t = Instant::now();
            let r = c.query(q, &opts)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            println!("  {mode:?} rerank of 20 candidates: {ms:.0} ms");
            let width = r.hits.iter().map(|h| h.id.chars().count()).max().unwrap_or(0);
            for (i, h) in r.hits.iter().enumerate() {
                // The corpus texts start with their id ("abc.ABC: ..."): show the rest.
                let text = h.text.strip_prefix(&format!("{}: ", h.id)).unwrap_or(&h.text);
                let snippet: String = text.chars().take(70).collect();
                println!("    {}. [{:.3}] {:<width$}  {}", i + 1, h.probability.unwrap_or(0.0), h.id, snippet);
            }
        }
        println!();
    }
    println!(
        "database: {} (try: rwkvdb query --db {} -c demo \"your question\")",
        db_path.display(),
        db_path.display()
    );
    Ok(())
}
