//! Database commands: init, collection, import, query, get, delete, stats, check, compact.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rwkvdb::{
    Collection, CollectionConfig, Database, Filter, ImportOptions, NewDocument, OpenOptions, QueryOptions, Rerank,
};

use super::remote::{segment, Remote, ServerArg};
use super::serve::routes::{CreateCollection, Documents, Ids, QueryRequest};
use super::CliResult;

/// Where the database file is: `--db` or `$RWKVDB_PATH`.
#[derive(Args, Clone)]
pub struct DbArg {
    /// Database file.
    #[arg(long, env = "RWKVDB_PATH", global = true, default_value = "rwkvdb.redb")]
    pub db: PathBuf,
    /// Faster, non-durable commits (a crash may lose the last batches, never half of one).
    #[arg(long, global = true)]
    pub no_sync: bool,
}

impl DbArg {
    /// Open options from these arguments.
    pub fn open_options(&self, create: bool) -> OpenOptions {
        OpenOptions { create, durable: !self.no_sync, ..OpenOptions::default() }
    }

    fn open(&self, create: bool) -> Result<Database, rwkvdb::Error> {
        if !create && !self.db.exists() {
            return Err(rwkvdb::Error::Io {
                path: self.db.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such database (create it with `rwkvdb init`)",
                ),
            });
        }
        Database::open(&self.db, self.open_options(create))
    }
}

#[derive(Subcommand)]
pub enum CollectionCommand {
    /// Create a collection bound to a model pair.
    Create(CreateArgs),
    /// List collections.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Drop a collection and all its documents.
    Drop {
        /// Collection name.
        name: String,
    },
    /// Point a collection at moved or copied model files (they must be the same model: the
    /// fingerprint is checked before anything is changed).
    SetModel {
        /// Collection name.
        name: String,
        /// The embedder checkpoint's new location.
        #[arg(long)]
        embedder: PathBuf,
        /// The reranker checkpoint's new location (required exactly when the collection has one).
        #[arg(long)]
        reranker: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Collection name.
    name: String,
    /// Embedder checkpoint (.pth or .safetensors).
    #[arg(long)]
    embedder: PathBuf,
    /// Reranker checkpoint; without it the collection keeps no states and cannot rerank.
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// State precision preset: exact, balanced (default), compact, tiny.
    #[arg(long, default_value = "balanced")]
    preset: String,
    /// Weight precision of the model: f32 (exact), bf16 (exact weights of bf16 checkpoints,
    /// bf16 activations: ~2x faster on CPUs with AMX-BF16), int8 or int4 (quantized, faster or
    /// smaller); fidelity in docs/performance.md. Default: bf16 where the CPU has AMX-BF16,
    /// else f32.
    #[arg(long, value_enum)]
    precision: Option<super::model_cmd::PrecisionArg>,
    /// Maximum tokens per document.
    #[arg(long, default_value_t = 8192)]
    max_doc_tokens: usize,
    /// Truncate longer documents instead of rejecting them.
    #[arg(long)]
    truncate: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RerankArg {
    Offline,
    Online,
    None,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    server: ServerArg,
    /// Collection name.
    #[arg(short, long)]
    collection: String,
    /// A JSONL file (`{"id","text","metadata"}` per line) or a folder of .txt/.md files.
    source: PathBuf,
    /// Documents per write transaction.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    server: ServerArg,
    /// Collection name.
    #[arg(short, long)]
    collection: String,
    /// The query text.
    text: String,
    /// Hits to show.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// ANN candidates to rerank.
    #[arg(long, default_value_t = 50)]
    candidates: usize,
    /// Reranking mode.
    #[arg(long, value_enum, default_value_t = RerankArg::Offline)]
    rerank: RerankArg,
    /// Metadata filter, e.g. '{"topic":"music","year":{"$gte":1900}}'.
    #[arg(long)]
    filter: Option<String>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

pub fn init(db: &DbArg) -> CliResult {
    let existed = db.db.exists();
    let database = db.open(true)?;
    if existed {
        let n = database.list_collections()?.len();
        println!("{} already exists ({n} collection(s)); left as it is", db.db.display());
    } else {
        println!("initialised {}", db.db.display());
    }
    Ok(())
}

pub fn collection(db: &DbArg, server: &ServerArg, cmd: CollectionCommand) -> CliResult {
    if let Some(remote) = server.client() {
        return remote_collection(&remote, cmd);
    }
    let database = db.open(false)?;
    match cmd {
        CollectionCommand::Create(a) => {
            let mut cfg = CollectionConfig::new(a.embedder, a.reranker);
            cfg.state_preset = a.preset;
            if let Some(p) = a.precision {
                cfg.precision = p.into();
            }
            cfg.max_doc_tokens = a.max_doc_tokens;
            cfg.truncate = a.truncate;
            let c = database.create_collection(&a.name, cfg)?;
            println!("created collection {} (fingerprint {})", a.name, c.fingerprint());
        }
        CollectionCommand::List { json } => {
            print_collections(&database.list_collections()?, json, &db.db.display().to_string())?;
        }
        CollectionCommand::Drop { name } => {
            database.drop_collection(&name)?;
            println!("dropped {name}");
        }
        CollectionCommand::SetModel { name, embedder, reranker } => {
            database.set_model_paths(&name, &embedder, reranker.as_deref())?;
            let c = database.collection(&name)?.config();
            let rr = c.reranker.as_ref().map_or("-".to_string(), |p| p.display().to_string());
            println!("{name}: embedder={} reranker={rr} (fingerprint checked)", c.embedder.display());
        }
    }
    Ok(())
}

fn print_collections(list: &[rwkvdb::CollectionRecord], json: bool, place: &str) -> CliResult {
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        eprintln!("no collections in {place} (create one with `rwkvdb collection create`)");
    } else {
        for c in list {
            let rr = c.config.reranker.as_ref().map_or("-".to_string(), |p| p.display().to_string());
            println!(
                "{}\tembedder={}\treranker={}\tpreset={}\tprecision={}",
                c.name,
                c.config.embedder.display(),
                rr,
                c.config.state_preset,
                c.config.precision
            );
        }
    }
    Ok(())
}

/// `collection ...` against a server. Model paths are sent absolute: the server resolves
/// relative ones against its own working directory.
fn remote_collection(remote: &Remote, cmd: CollectionCommand) -> CliResult {
    match cmd {
        CollectionCommand::Create(a) => {
            let req = CreateCollection {
                name: a.name.clone(),
                embedder: std::path::absolute(&a.embedder)?,
                reranker: a.reranker.as_deref().map(std::path::absolute).transpose()?,
                preset: Some(a.preset),
                precision: a.precision.map(|p| rwkvdb::model::Precision::from(p).to_string()),
                max_doc_tokens: Some(a.max_doc_tokens),
                truncate: Some(a.truncate),
                exist_ok: false,
            };
            let r: serde_json::Value = remote.post("/v1/collections", &req)?;
            println!("created collection {} (fingerprint {})", a.name, r["fingerprint"].as_str().unwrap_or("?"));
        }
        CollectionCommand::List { json } => {
            let list: Vec<rwkvdb::CollectionRecord> = remote.get("/v1/collections")?;
            print_collections(&list, json, "the server's database")?;
        }
        CollectionCommand::Drop { name } => {
            let _: serde_json::Value = remote.delete(&format!("/v1/collections/{}", segment(&name)))?;
            println!("dropped {name}");
        }
        CollectionCommand::SetModel { .. } => {
            return Err(
                "`collection set-model` works on the file only: stop the server, run it with --db, restart".into()
            )
        }
    }
    Ok(())
}

/// The API path of a collection.
fn collection_path(name: &str) -> String {
    format!("/v1/collections/{}", segment(name))
}

/// Reads import sources one document at a time, collecting per-line problems instead of stopping.
fn read_source(
    path: &Path,
    problems: &mut Vec<String>,
) -> Result<Vec<NewDocument>, Box<dyn std::error::Error + Send + Sync>> {
    if path.is_dir() {
        let (docs, bad) = rwkvdb::import::read_folder(path).map_err(|e| format!("{}: {e}", path.display()))?;
        problems.extend(bad.iter().map(ToString::to_string));
        return Ok(docs);
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut docs = Vec::new();
    for item in rwkvdb::import::read_jsonl(std::io::BufReader::new(file), &path.display().to_string(), &stem) {
        match item {
            Ok(d) => docs.push(d),
            Err(p) => problems.push(p.to_string()),
        }
    }
    Ok(docs)
}

/// Where a command's collections are: in the file, or behind a running server.
enum Target {
    File(Database),
    Server(Remote),
}

impl Target {
    fn of(db: &DbArg, server: &ServerArg) -> Result<Self, rwkvdb::Error> {
        match server.client() {
            Some(remote) => Ok(Target::Server(remote)),
            None => Ok(Target::File(db.open(false)?)),
        }
    }
}

pub fn import(a: ImportArgs) -> CliResult {
    let target = Target::of(&a.db, &a.server)?;
    if let Target::File(database) = &target {
        // A missing collection is reported before the source is read (the handle is cached).
        database.collection(&a.collection)?;
    }
    let mut problems = Vec::new();
    let docs = read_source(&a.source, &mut problems)?;
    let bar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} docs  {per_sec}  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let opts = ImportOptions { batch_size: a.batch_size };
    // Ids already stored are skipped (a re-run resumes); a failed batch is retried one by one.
    let show = |p: &rwkvdb::ImportProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.imported as u64);
        bar.set_message(format!("{:.0} tokens/s", p.tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)));
    };
    let report = match &target {
        Target::File(database) => database.collection(&a.collection)?.import(docs, &opts, show)?,
        Target::Server(remote) => remote_import(remote, &a.collection, docs, a.batch_size, show)?,
    };
    bar.finish_and_clear();
    let (done, tokens, skipped) = (report.imported, report.tokens, report.already_present);
    problems.extend(report.problems.iter().map(|p| format!("{}: {}", p.id, p.reason)));
    let secs = start.elapsed().as_secs_f64();
    println!(
        "imported {done} documents ({tokens} tokens) in {secs:.1}s: {:.1} docs/s, {:.0} tokens/s; {skipped} already present",
        done as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9)
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("warning: {p}");
        }
        return Err(format!("{} item(s) were not imported (see warnings above)", problems.len()).into());
    }
    Ok(())
}

/// An import through the server, one request per batch (each batch is resumable the same way:
/// ids already stored are skipped).
fn remote_import(
    remote: &Remote,
    collection: &str,
    docs: Vec<NewDocument>,
    batch_size: usize,
    mut progress: impl FnMut(&rwkvdb::ImportProgress),
) -> Result<rwkvdb::ImportReport, super::remote::RemoteError> {
    let path = format!("{}/import", collection_path(collection));
    let mut total = rwkvdb::ImportReport::default();
    let mut state = rwkvdb::ImportProgress { total: docs.len(), ..Default::default() };
    progress(&state);
    for batch in docs.chunks(batch_size.clamp(1, rwkvdb::limits::MAX_BATCH_DOCS)) {
        let r: rwkvdb::ImportReport =
            remote.post(&path, &Documents { documents: batch.iter().cloned().map(Into::into).collect() })?;
        total.imported += r.imported;
        total.tokens += r.tokens;
        total.already_present += r.already_present;
        total.problems.extend(r.problems);
        state.imported += r.imported;
        state.tokens += r.tokens;
        progress(&state);
    }
    Ok(total)
}

pub fn query(a: QueryArgs) -> CliResult {
    if a.top_k == 0 {
        return Err("--top-k must be at least 1".into());
    }
    if a.candidates < a.top_k {
        eprintln!("note: --candidates {} is below --top-k; {} candidates are reranked", a.candidates, a.top_k);
    }
    if let Some(remote) = a.server.client() {
        let req = QueryRequest {
            text: a.text,
            top_k: Some(a.top_k),
            candidates: Some(a.candidates),
            rerank: Some(rerank_mode(a.rerank)),
            filter: a.filter.as_deref().map(serde_json::from_str).transpose().map_err(|e| format!("--filter: {e}"))?,
            ef: None,
        };
        let r: rwkvdb::QueryResult = remote.post(&format!("{}/query", collection_path(&a.collection)), &req)?;
        return show_result(&r, a.json);
    }
    let database = a.db.open(false)?;
    let c = database.collection(&a.collection)?;
    let opts = QueryOptions {
        top_k: a.top_k,
        candidates: a.candidates,
        filter: a.filter.as_deref().map(Filter::parse).transpose()?,
        rerank: rerank_mode(a.rerank),
        ef: None,
    };
    let r = c.query(&a.text, &opts)?;
    if r.hits.is_empty() && opts.filter.is_some() && c.count()? > 0 {
        eprintln!("note: no document matched the filter (a field no document has matches nothing; see the README's filter section)");
    }
    show_result(&r, a.json)
}

fn rerank_mode(arg: RerankArg) -> Rerank {
    match arg {
        RerankArg::Offline => Rerank::Offline,
        RerankArg::Online => Rerank::Online,
        RerankArg::None => Rerank::None,
    }
}

fn show_result(r: &rwkvdb::QueryResult, json: bool) -> CliResult {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print_hits(r);
    }
    Ok(())
}

/// Human-readable result table.
pub fn print_hits(r: &rwkvdb::QueryResult) {
    println!("{:>4}  {:<24} {:>7} {:>8} {:>6}  text", "rank", "id", "cosine", "logit", "prob");
    for (i, h) in r.hits.iter().enumerate() {
        let snippet: String = h.text.chars().take(60).map(|c| if c.is_control() { ' ' } else { c }).collect();
        let logit = h.logit.map_or("-".into(), |l| format!("{l:.3}"));
        let prob = h.probability.map_or("-".into(), |p| format!("{p:.3}"));
        println!("{:>4}  {:<24} {:>7.4} {:>8} {:>6}  {}", i + 1, h.id, h.similarity, logit, prob, snippet);
    }
    for s in &r.skipped {
        eprintln!("warning: skipped {}: {}", s.id, s.reason);
    }
    let t = r.timings;
    println!(
        "time: embed {:.1} ms, ann {:.1} ms, load {:.1} ms, rerank {:.1} ms",
        t.embed_ms, t.ann_ms, t.load_ms, t.rerank_ms
    );
}

pub fn get(db: &DbArg, server: &ServerArg, collection: &str, id: &str, json: bool) -> CliResult {
    let d: rwkvdb::Document = match Target::of(db, server)? {
        Target::Server(remote) => remote.get(&format!("{}/documents/{}", collection_path(collection), segment(id)))?,
        Target::File(database) => {
            database.collection(collection)?.get(id)?.ok_or_else(|| format!("no document {id:?} in {collection}"))?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        println!("id: {}\nmetadata: {}\n\n{}", d.id, d.metadata, d.text);
    }
    Ok(())
}

pub fn delete(db: &DbArg, server: &ServerArg, collection: &str, ids: &[String]) -> CliResult {
    let r: rwkvdb::DeleteReport = match Target::of(db, server)? {
        Target::Server(remote) => {
            remote.post(&format!("{}/delete", collection_path(collection)), &Ids { ids: ids.to_vec() })?
        }
        Target::File(database) => {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            database.collection(collection)?.delete(&refs)?
        }
    };
    println!("deleted {}", r.deleted.len());
    for m in &r.missing {
        eprintln!("warning: no document {m:?}");
    }
    Ok(())
}

pub fn stats(db: &DbArg, server: &ServerArg, collection: &str, json: bool) -> CliResult {
    let s: rwkvdb::CollectionStats = match Target::of(db, server)? {
        Target::Server(remote) => remote.get(&collection_path(collection))?,
        Target::File(database) => database.collection(collection)?.stats()?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        for (k, v) in serde_json::to_value(&s)?.as_object().into_iter().flatten() {
            println!("{k:>24}: {v}");
        }
    }
    Ok(())
}

pub fn check(db: &DbArg, collection: Option<&str>, json: bool) -> CliResult {
    let database = db.open(false)?;
    let names: Vec<String> = match collection {
        Some(n) => vec![n.to_string()],
        None => database.list_collections()?.into_iter().map(|c| c.name).collect(),
    };
    let mut bad = 0;
    for name in names {
        let c: Collection = database.collection(&name)?;
        let report = c.check()?;
        bad += report.problems.len();
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{name}: {} documents checked, {} problem(s)", report.documents, report.problems.len());
            for p in &report.problems {
                println!("  {p}");
            }
        }
    }
    if bad > 0 {
        return Err(format!("{bad} problem(s) found").into());
    }
    Ok(())
}

pub fn checkpoint(db: &DbArg, server: &ServerArg, collection: Option<&str>) -> CliResult {
    let target = Target::of(db, server)?;
    let names: Vec<String> = match (collection, &target) {
        (Some(n), _) => vec![n.to_string()],
        (None, Target::File(database)) => database.list_collections()?.into_iter().map(|c| c.name).collect(),
        (None, Target::Server(remote)) => {
            remote.get::<Vec<rwkvdb::CollectionRecord>>("/v1/collections")?.into_iter().map(|c| c.name).collect()
        }
    };
    for name in names {
        let r: rwkvdb::CheckpointReport = match &target {
            Target::File(database) => database.collection(&name)?.checkpoint()?,
            Target::Server(remote) => remote.post(&format!("{}/checkpoint", collection_path(&name)), &())?,
        };
        if r.saved {
            println!(
                "{name}: saved the index ({} entries, {:.1} MB written) in {:.2}s",
                r.slots,
                r.bytes_written as f64 / 1e6,
                r.seconds
            );
        } else {
            println!("{name}: the saved index is current");
        }
    }
    Ok(())
}

pub fn compact(db: &DbArg) -> CliResult {
    let before = std::fs::metadata(&db.db).map_or(0, |m| m.len());
    Database::compact_file(&db.db)?;
    let after = std::fs::metadata(&db.db).map_or(0, |m| m.len());
    println!("compacted {}: {before} -> {after} bytes", db.db.display());
    Ok(())
}
