//! The demo app's refusals: every one is a JSON body `{"error":{"code","message","hint"}}`, like
//! the region node's, with the HTTP status that tells the edge what to do next.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Header naming the region the edge should replay a request in (`region=<name>`); see
/// `meridian_edge::proxy::REPLAY_HEADER`.
pub const REPLAY_HEADER: &str = "meridian-replay";

/// An answer the app gives instead of doing what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Stable machine-readable code: the app's own (`bad_id`, `node_unavailable`, …) or the
    /// node's, passed through (`not_found`, `residency`, …).
    pub code: String,
    /// What was wrong, in a sentence.
    pub message: String,
    /// What would be right instead.
    pub hint: String,
    /// Extra response headers, e.g. [`REPLAY_HEADER`].
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl AppError {
    /// An error with a status, a code, a message and a hint, and no extra headers.
    pub fn new(
        status: StatusCode,
        code: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        AppError {
            status,
            code: code.into(),
            message: message.into(),
            hint: hint.into(),
            headers: Vec::new(),
        }
    }

    /// A 400 refusal of the request's input.
    pub fn bad_request(
        code: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message, hint)
    }

    /// 503 `node_unavailable`: the region's data node could not be reached, timed out or failed;
    /// the edge takes this as a reason to try another region.
    pub fn node_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unavailable",
            message,
            "retry, possibly in another region; a write may or may not have been applied, so retry it with the same Idempotency-Key",
        )
    }

    /// Adds a response header; a value that is not a valid header value is left out.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code, "message": self.message, "hint": self.hint}
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().extend(self.headers);
        resp
    }
}
