//! `rwkvdb serve`: an HTTP/JSON server holding one open database and its loaded models, so that
//! several processes, and programs in any language, share the file (redb lets one process open
//! it). The API is in docs/api.md.
//!
//! Work runs on tokio's blocking pool, at most `--workers` requests at once; up to `--queue` more
//! wait, and any beyond that are answered 503 with `Retry-After` at once instead of queueing
//! without bound. SIGTERM or SIGINT stops accepting connections, lets every request in flight
//! finish (a write is acknowledged only after its commit), then saves the ANN indexes and closes
//! the file.

mod error;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use rwkvdb::{Collection, Database};
use tokio::sync::Semaphore;

pub use error::ApiError;

use super::db_cmd::DbArg;
use super::CliResult;

/// The port `rwkvdb serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8750;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    db: DbArg,
    /// Address to listen on. Anything but a loopback address needs an API key.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer KEY`). Prefer the
    /// environment variable: a command line is visible to other users of the machine.
    #[arg(long, env = "RWKVDB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests executed at once (model runs share `--sessions` sessions).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Requests that may wait for a worker; beyond that the server answers 503 + Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Largest request body, in bytes (a batch of documents is one body).
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// ONNX Runtime sessions per model graph: model runs executed in parallel.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Threads per model run (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// What every handler shares.
#[derive(Clone)]
pub struct Server {
    db: Arc<Database>,
    /// Requests executing or waiting: at most workers + queue.
    admitted: Arc<Semaphore>,
    /// Requests executing: at most workers.
    running: Arc<Semaphore>,
    api_key: Option<Arc<str>>,
}

impl Server {
    /// Runs `work` on the blocking pool once a worker is free; 503 when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| ApiError::overloaded())?;
        let running = self.running.clone().acquire_owned().await.map_err(|_| ApiError::overloaded())?;
        let db = self.db.clone();
        // The permits move into the task: a client that hangs up does not free its worker
        // before the work is done, so shutdown can wait for all of it.
        tokio::task::spawn_blocking(move || {
            let result = work(&db);
            drop(db);
            drop((running, admitted));
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("request failed: {e}")))?
    }

    /// Runs `work` on collection `name` (see [`Self::run`]) and answers its result as JSON.
    pub async fn on_collection<T: serde::Serialize>(
        &self,
        name: String,
        work: impl FnOnce(&Collection) -> rwkvdb::Result<T> + Send + 'static,
    ) -> Result<Response, ApiError> {
        self.run(move |db| Ok(axum::Json(work(&db.collection(&name)?)?).into_response())).await
    }
}

/// Refuses requests without the API key (when one is set).
async fn require_key(State(server): State<Server>, req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(key) = &server.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = given.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if !constant_time_eq(token.as_bytes(), key.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong API key (send `Authorization: Bearer KEY`)",
            ));
        }
    }
    Ok(next.run(req).await)
}

/// Gives the errors axum answers by itself (405, a path that is not UTF-8...) the JSON body of
/// every other error, keeping their headers (`Allow`).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.map(|b| String::from_utf8_lossy(&b).into_owned());
    let message = match text {
        Ok(t) if !t.trim().is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::NOT_FOUND => "no_such_route",
        s if s.is_server_error() => "internal",
        _ => "invalid_input",
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn run(a: ServeArgs) -> CliResult {
    if a.workers == 0 || a.sessions == 0 {
        return Err("--workers and --sessions must be at least 1".into());
    }
    let api_key = a.api_key.filter(|k| !k.is_empty()).map(Arc::<str>::from);
    if !a.listen.ip().is_loopback() && api_key.is_none() {
        return Err(format!(
            "listening on {} (not a loopback address) needs an API key: set RWKVDB_API_KEY (or --api-key)",
            a.listen
        )
        .into());
    }
    let mut opts = a.db.open_options(true);
    opts.runtime.sessions = a.sessions;
    opts.runtime.threads = a.threads;
    let db = Arc::new(Database::open(&a.db.db, opts)?);
    // Open every collection now (loading or building its index), not in the first request.
    for record in db.list_collections()? {
        match db.collection(&record.name) {
            Ok(c) => eprintln!("rwkvdb serve: collection {} ({} documents)", record.name, c.count()?),
            Err(e) => eprintln!("rwkvdb serve: collection {} cannot open yet: {e}", record.name),
        }
    }
    let server = Server {
        db,
        admitted: Arc::new(Semaphore::new(a.workers + a.queue)),
        running: Arc::new(Semaphore::new(a.workers)),
        api_key,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(a.workers + 2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(server, a.listen, a.max_body_bytes, a.workers))
}

async fn serve(server: Server, listen: SocketAddr, max_body_bytes: usize, workers: usize) -> CliResult {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let app = routes::router(server.clone())
        .layer(axum::middleware::from_fn_with_state(server.clone(), require_key))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(json_errors));
    let auth = if server.api_key.is_some() { "API key required" } else { "no API key" };
    // The first line on stdout is the address (tests and scripts read it; port 0 picks one).
    println!("rwkvdb serve: listening on http://{} ({auth})", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;

    eprintln!("rwkvdb serve: stopping; finishing requests in flight");
    // Every worker permit back means no blocking task still uses the database.
    let _all = server.running.acquire_many(workers as u32).await?;
    let mut db = server.db;
    let db = loop {
        match Arc::try_unwrap(db) {
            Ok(db) => break db,
            Err(shared) => {
                db = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    db.close()?;
    eprintln!("rwkvdb serve: database closed");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
