//! The one error type of the node: every refusal becomes a JSON body
//! `{"error":{"code","message","hint"}}` with the right HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An answer the node gives instead of doing what was asked. Nothing was changed when a request
/// ends in an `ApiError`, except where the code says the outcome is unknown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `unknown_keyspace`.
    pub code: &'static str,
    /// What was wrong, in a sentence.
    pub message: String,
    /// What would be right instead.
    pub hint: String,
    /// Extra response headers (e.g. the region to retry in).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error with a status, a code, a message and a hint.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            hint: hint.into(),
            headers: Vec::new(),
        }
    }

    /// 400 with the given code.
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message, hint)
    }

    /// 500: the node itself failed; the request may be retried.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message,
            "this is a fault of the node, not of the request; retry, and report it if it persists",
        )
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message, "hint": self.hint}})
    }
}

impl From<meridian_store::Error> for ApiError {
    fn from(e: meridian_store::Error) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("the storage engine failed: {e}"),
            "the write was not acknowledged; retry, with the same Idempotency-Key if it mutates",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        for (name, value) in &self.headers {
            if let Ok(v) = axum::http::HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        resp
    }
}
