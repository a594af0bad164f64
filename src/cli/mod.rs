//! Command-line parsing and dispatch. Exit codes: 0 success, 1 error (message on stderr),
//! 2 usage error (from clap).

mod bench_cmd;
mod db_cmd;
mod demo;
mod eval_cmd;
mod eval_layers;
mod model_bench;
mod model_cmd;
mod remote;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rwkvdb: an embedded vector-and-state database for `EmbeddingRWKV`.
#[derive(Parser)]
#[command(name = "rwkvdb", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  rwkvdb demo                                   # end-to-end demo on a bundled corpus
  rwkvdb init --db my.redb
  rwkvdb collection create notes --db my.redb --embedder emb.pth --reranker rr.pth
  rwkvdb import --db my.redb -c notes notes.jsonl
  rwkvdb query --db my.redb -c notes \"what is a black hole?\" --top-k 5
  rwkvdb query --db my.redb -c notes \"black holes\" --filter '{\"topic\":\"astronomy\"}' --json
  rwkvdb model eval --embedder emb.pth --reranker rr.pth --input in.json --output out.json
  rwkvdb bench --quick --out /tmp/e2e.json        # end-to-end benchmark (full run: see docs/performance.md)
  rwkvdb eval retrieval --db my.redb --collection notes --queries q.jsonl --qrels qrels.tsv
  rwkvdb serve --db my.redb                       # HTTP/JSON API on 127.0.0.1:8750 (docs/api.md)
  rwkvdb query --server http://127.0.0.1:8750 -c notes \"black holes\"

The commands that use a database take --db (default: $RWKVDB_PATH, else rwkvdb.redb) and --no-sync;
collection, import, query, get, delete, stats and checkpoint take --server URL (or $RWKVDB_SERVER)
to talk to a running `rwkvdb serve` instead.";

#[derive(Subcommand)]
enum Command {
    /// Create an empty database file (an existing one is left as it is).
    Init {
        #[command(flatten)]
        db: db_cmd::DbArg,
    },
    /// Create, list, drop or repoint collections.
    Collection {
        #[command(flatten)]
        db: db_cmd::DbArg,
        #[command(flatten)]
        server: remote::ServerArg,
        #[command(subcommand)]
        command: db_cmd::CollectionCommand,
    },
    /// Import a JSONL file or a folder of .txt/.md files (re-running skips stored ids).
    Import(db_cmd::ImportArgs),
    /// Query a collection.
    Query(db_cmd::QueryArgs),
    /// Print one document.
    Get {
        #[command(flatten)]
        db: db_cmd::DbArg,
        #[command(flatten)]
        server: remote::ServerArg,
        /// Collection name.
        #[arg(short, long)]
        collection: String,
        /// Document id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete documents by id.
    Delete {
        #[command(flatten)]
        db: db_cmd::DbArg,
        #[command(flatten)]
        server: remote::ServerArg,
        /// Collection name.
        #[arg(short, long)]
        collection: String,
        /// Document ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Collection statistics: documents, bytes per document, index parameters, fingerprint.
    Stats {
        #[command(flatten)]
        db: db_cmd::DbArg,
        #[command(flatten)]
        server: remote::ServerArg,
        /// Collection name.
        #[arg(short, long)]
        collection: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Verify checksums and that store and index agree (exit 1 when damage is found).
    Check {
        #[command(flatten)]
        db: db_cmd::DbArg,
        /// Only this collection.
        #[arg(short, long)]
        collection: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Save the ANN index into the database file, so the next open loads it instead of
    /// building the graph (waits for a graph still being built). Saves also happen when a
    /// command that changed a collection ends, before `compact`, and in the background.
    Checkpoint {
        #[command(flatten)]
        db: db_cmd::DbArg,
        #[command(flatten)]
        server: remote::ServerArg,
        /// Only this collection (default: all).
        #[arg(short, long)]
        collection: Option<String>,
    },
    /// Save every collection's ANN index, then reclaim free space in the database file (needs
    /// it to itself).
    Compact {
        #[command(flatten)]
        db: db_cmd::DbArg,
    },
    /// Serve the database over HTTP/JSON (docs/api.md) to other processes and languages.
    Serve(serve::ServeArgs),
    /// Evaluate ranking quality (BEIR-format data) per rerank mode and state preset, and
    /// layer-wise sentence embeddings on labelled pairs.
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
    /// Inspect, synthesise and evaluate model checkpoints.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Run the end-to-end demo on the bundled corpus.
    Demo(demo::DemoArgs),
    /// End-to-end benchmark: insert throughput, query latency, rerank speedup, bytes per document.
    Bench(bench_cmd::BenchArgs),
}

/// Parses arguments, runs the command, prints errors to stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { db } => db_cmd::init(&db),
        Command::Collection { db, server, command } => db_cmd::collection(&db, &server, command),
        Command::Import(a) => db_cmd::import(a),
        Command::Query(a) => db_cmd::query(a),
        Command::Get { db, server, collection, id, json } => db_cmd::get(&db, &server, &collection, &id, json),
        Command::Delete { db, server, collection, ids } => db_cmd::delete(&db, &server, &collection, &ids),
        Command::Stats { db, server, collection, json } => db_cmd::stats(&db, &server, &collection, json),
        Command::Check { db, collection, json } => db_cmd::check(&db, collection.as_deref(), json),
        Command::Checkpoint { db, server, collection } => db_cmd::checkpoint(&db, &server, collection.as_deref()),
        Command::Serve(a) => serve::run(a),
        Command::Compact { db } => db_cmd::compact(&db),
        Command::Eval(cmd) => eval_cmd::run(cmd),
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut said = e.to_string();
            eprintln!("error: {said}");
            let mut source = std::error::Error::source(&*e);
            while let Some(s) = source {
                // Many errors already include their cause's text: print only what is new.
                let text = s.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                    said = text;
                }
                source = s.source();
            }
            ExitCode::from(1)
        }
    }
}

/// Errors of CLI commands: anything displayable.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
