//! The HTTP API (docs/api.md): request bodies, and one handler per route, each a thin call into
//! the library run on the blocking pool.

use std::path::PathBuf;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rwkvdb::{Collection, CollectionConfig, Filter, ImportOptions, NewDocument, QueryOptions, Rerank};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::Server;

/// Every route of the API.
pub fn router(server: Server) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/v1/collections", get(list_collections).post(create_collection))
        .route("/v1/collections/{collection}", get(collection_stats).delete(drop_collection))
        .route("/v1/collections/{collection}/documents", post(insert).put(upsert))
        .route("/v1/collections/{collection}/documents/{id}", get(get_document).delete(delete_document))
        .route("/v1/collections/{collection}/import", post(import))
        .route("/v1/collections/{collection}/delete", post(delete_documents))
        .route("/v1/collections/{collection}/count", get(count))
        .route("/v1/collections/{collection}/query", post(query))
        .route("/v1/collections/{collection}/checkpoint", post(checkpoint))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_such_route", "no such route (see docs/api.md)") })
        .with_state(server)
}

/// A JSON request body whose errors (not JSON, wrong fields, too large) answer as [`ApiError`]s.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_body" };
            ApiError::new(status, code, e.body_text())
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("request body: {e}")))
    }
}

async fn health(State(server): State<Server>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "database": server.db.path().display().to_string(),
    }))
}

/// This API as `OpenAPI` 3 (`docs/openapi.json`, compiled in).
async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], include_str!("../../../docs/openapi.json"))
}

async fn list_collections(State(server): State<Server>) -> Result<Response, ApiError> {
    server.run(|db| Ok(Json(db.list_collections()?).into_response())).await
}

/// `POST /v1/collections`. Model paths are paths on the server's machine (relative ones are
/// resolved against the server's working directory).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub name: String,
    pub embedder: PathBuf,
    #[serde(default)]
    pub reranker: Option<PathBuf>,
    /// State precision preset (default: balanced).
    #[serde(default)]
    pub preset: Option<String>,
    /// Weight precision: f32, int8, int4.
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub max_doc_tokens: Option<usize>,
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Answer with the existing collection instead of 409 when the name is taken.
    #[serde(default)]
    pub exist_ok: bool,
}

async fn create_collection(
    State(server): State<Server>,
    JsonBody(req): JsonBody<CreateCollection>,
) -> Result<Response, ApiError> {
    server
        .run(move |db| {
            let mut cfg = CollectionConfig::new(req.embedder, req.reranker);
            if let Some(p) = req.preset {
                cfg.state_preset = p;
            }
            if let Some(p) = req.precision {
                cfg.precision = rwkvdb::model::Precision::parse(&p).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_config",
                        format!("unknown precision {p:?} (choose one of: f32, int8, int4)"),
                    )
                })?;
            }
            if let Some(n) = req.max_doc_tokens {
                cfg.max_doc_tokens = n;
            }
            if let Some(t) = req.truncate {
                cfg.truncate = t;
            }
            let existed = req.exist_ok && db.list_collections()?.iter().any(|c| c.name == req.name);
            let c = if req.exist_ok {
                db.get_or_create_collection(&req.name, cfg)?
            } else {
                db.create_collection(&req.name, cfg)?
            };
            let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
            let body = json!({ "name": req.name, "fingerprint": c.fingerprint(), "created": !existed });
            Ok((status, Json(body)).into_response())
        })
        .await
}

async fn collection_stats(State(server): State<Server>, Path(collection): Path<String>) -> Result<Response, ApiError> {
    server.on_collection(collection, Collection::stats).await
}

async fn drop_collection(State(server): State<Server>, Path(collection): Path<String>) -> Result<Response, ApiError> {
    server
        .run(move |db| {
            db.drop_collection(&collection)?;
            Ok(Json(json!({ "dropped": collection })).into_response())
        })
        .await
}

/// A batch of documents to insert, upsert or import.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Documents {
    pub documents: Vec<ApiDocument>,
}

impl Documents {
    /// The batch as the library takes it.
    fn into_library(self) -> Vec<NewDocument> {
        self.documents.into_iter().map(|d| NewDocument { id: d.id, text: d.text, metadata: d.metadata }).collect()
    }
}

/// One document of a request: [`NewDocument`], refusing unknown fields (a misspelt `metadata`
/// must not be dropped silently).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDocument {
    #[serde(default)]
    pub id: Option<String>,
    pub text: String,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl From<NewDocument> for ApiDocument {
    fn from(d: NewDocument) -> Self {
        Self { id: d.id, text: d.text, metadata: d.metadata }
    }
}

async fn insert(
    State(server): State<Server>,
    Path(collection): Path<String>,
    JsonBody(req): JsonBody<Documents>,
) -> Result<Response, ApiError> {
    server.on_collection(collection, |c| c.insert(req.into_library())).await
}

async fn upsert(
    State(server): State<Server>,
    Path(collection): Path<String>,
    JsonBody(req): JsonBody<Documents>,
) -> Result<Response, ApiError> {
    server.on_collection(collection, |c| c.upsert(req.into_library())).await
}

async fn import(
    State(server): State<Server>,
    Path(collection): Path<String>,
    JsonBody(req): JsonBody<Documents>,
) -> Result<Response, ApiError> {
    let opts = ImportOptions { batch_size: req.documents.len().max(1) };
    server.on_collection(collection, move |c| c.import(req.into_library(), &opts, |_| {})).await
}

async fn get_document(
    State(server): State<Server>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    server
        .run(move |db| match db.collection(&collection)?.get(&id)? {
            Some(d) => Ok(Json(d).into_response()),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_document",
                format!("no document {id:?} in collection {collection:?}"),
            )),
        })
        .await
}

async fn delete_document(
    State(server): State<Server>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    server.on_collection(collection, move |c| c.delete(&[id.as_str()])).await
}

/// `POST .../delete`: ids to delete.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    pub ids: Vec<String>,
}

async fn delete_documents(
    State(server): State<Server>,
    Path(collection): Path<String>,
    JsonBody(req): JsonBody<Ids>,
) -> Result<Response, ApiError> {
    server
        .on_collection(collection, move |c| {
            let ids: Vec<&str> = req.ids.iter().map(String::as_str).collect();
            c.delete(&ids)
        })
        .await
}

async fn count(State(server): State<Server>, Path(collection): Path<String>) -> Result<Response, ApiError> {
    server.on_collection(collection, |c| Ok(json!({ "count": c.count()? }))).await
}

/// `POST .../query`: what [`QueryOptions`] holds, with the same defaults.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub text: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub candidates: Option<usize>,
    #[serde(default)]
    pub rerank: Option<Rerank>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub ef: Option<usize>,
}

async fn query(
    State(server): State<Server>,
    Path(collection): Path<String>,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    let defaults = QueryOptions::default();
    let top_k = req.top_k.unwrap_or(defaults.top_k);
    if top_k == 0 {
        return Err(ApiError::bad_request("top_k must be at least 1"));
    }
    let opts = QueryOptions {
        top_k,
        candidates: req.candidates.unwrap_or(defaults.candidates),
        filter: req.filter.as_ref().map(Filter::from_json).transpose().map_err(rwkvdb::Error::from)?,
        rerank: req.rerank.unwrap_or(defaults.rerank),
        ef: req.ef,
    };
    server.on_collection(collection, move |c| c.query(&req.text, &opts)).await
}

async fn checkpoint(State(server): State<Server>, Path(collection): Path<String>) -> Result<Response, ApiError> {
    server.on_collection(collection, Collection::checkpoint).await
}
