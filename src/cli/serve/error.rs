//! HTTP errors: every failure is a JSON body `{"error": {"code", "message"}}` with a status that
//! says whose fault it is (4xx: the request, nothing changed; 5xx: the server).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (documented in docs/api.md).
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server's request queue is full; retry after the time in Retry-After",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<rwkvdb::Error> for ApiError {
    fn from(e: rwkvdb::Error) -> Self {
        let code = e.code();
        let status = match code {
            "no_such_collection" => StatusCode::NOT_FOUND,
            "collection_exists" | "duplicate_id" | "model_mismatch" => StatusCode::CONFLICT,
            "limit_exceeded" => StatusCode::PAYLOAD_TOO_LARGE,
            // Model files are named by requests (collection creation): the caller's to fix.
            "invalid_input" | "invalid_filter" | "invalid_config" | "model_file" | "file_not_found" | "no_reranker" => {
                StatusCode::BAD_REQUEST
            }
            _ => return Self::internal(e.to_string()),
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            eprintln!("rwkvdb serve: {} {}: {}", self.status.as_u16(), self.code, self.message);
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
