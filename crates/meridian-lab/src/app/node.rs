//! The app's client of its region's data node: plain HTTP, as any user's app would talk to it,
//! and the translation of the node's answers into the app's.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, StatusCode};

use super::error::{AppError, REPLAY_HEADER};
use crate::LabError;

/// How long connecting to the node may take before the app answers 503.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one request to the node may take in all; sync writes wait for a quorum over a WAN.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the node's `/health/ready` may take before the app calls itself not ready.
pub const READY_TIMEOUT: Duration = Duration::from_millis(500);

/// Header the node sets on an answer replayed from a stored idempotent outcome.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A successful (2xx) answer of the node.
#[derive(Debug)]
pub struct NodeReply {
    /// The node's status (200, 201, 204).
    pub status: StatusCode,
    /// Whether the node replayed a stored outcome (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// The body as received.
    pub body: Bytes,
}

/// A client of one data node's HTTP API; cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    base: String,
    http: reqwest::Client,
}

impl NodeClient {
    /// A client of the node at `base` (`http://host:port`, no trailing slash) with
    /// [`CONNECT_TIMEOUT`] and [`REQUEST_TIMEOUT`].
    pub fn new(base: String) -> Result<Self, LabError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| LabError::Client {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(NodeClient { base, http })
    }

    /// A request for `/v1/kv/{keyspace}/{key}`. Keys are app ids (`[A-Za-z0-9._-]`), which
    /// need no percent-encoding.
    pub fn kv(
        &self,
        method: reqwest::Method,
        keyspace: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/kv/{keyspace}/{key}", self.base))
    }

    /// Whether the node answers `/health/ready` with 200 within [`READY_TIMEOUT`]; the reason
    /// when it does not.
    pub async fn ready(&self) -> Result<(), String> {
        let resp = self
            .http
            .get(format!("{}/health/ready", self.base))
            .timeout(READY_TIMEOUT)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            s => Err(format!("the node's /health/ready answered {s}")),
        }
    }

    /// Sends `req` and returns the node's 2xx answer, or the app's answer to anything else:
    /// 4xx passed through with the node's code (421 also naming the region to replay in), and
    /// 503 `node_unavailable` for no answer, a timeout or a 5xx (with the node's error).
    ///
    /// Within a client's request carrying `Meridian-Session`, the token goes along (and a GET
    /// asks for `consistency=session`), and the node's new token is kept for the answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<NodeReply, AppError> {
        let req = match super::session::current() {
            Some(token) => {
                let mut built = req.build().map_err(|e| {
                    AppError::node_unavailable(format!("building a node request: {e}"))
                })?;
                if built.method() == reqwest::Method::GET {
                    built
                        .url_mut()
                        .query_pairs_mut()
                        .append_pair("consistency", "session");
                }
                built
                    .headers_mut()
                    .insert(super::session::SESSION_HEADER, token);
                self.http.execute(built).await
            }
            None => req.send().await,
        };
        let resp = req.map_err(|e| {
            tracing::debug!(node = %self.base, error = %describe(&e), "node request failed");
            AppError::node_unavailable(format!(
                "the region's data node at {} did not answer: {}",
                self.base,
                describe(&e)
            ))
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if let Some(token) = headers.get(super::session::SESSION_HEADER) {
            super::session::remember(token);
        }
        let body = resp.bytes().await.map_err(|e| {
            AppError::node_unavailable(format!(
                "the region's data node at {} broke off its answer: {}",
                self.base,
                describe(&e)
            ))
        })?;
        if status.is_success() {
            let replayed = headers
                .get(IDEMPOTENT_REPLAYED)
                .is_some_and(|v| v.as_bytes() == b"true");
            return Ok(NodeReply {
                status,
                replayed,
                body,
            });
        }
        Err(refusal(&self.base, status, &headers, &body))
    }
}

/// The app's answer to a non-2xx answer of the node.
fn refusal(base: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> AppError {
    let node_error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")?.as_str()?.to_string(),
                e.get("hint")
                    .and_then(|h| h.as_str())
                    .unwrap_or("")
                    .to_string(),
            ))
        });
    if !status.is_client_error() {
        let what = match &node_error {
            Some((code, message, _)) => format!("{status} {code}: {message}"),
            None => format!("{status}: {}", String::from_utf8_lossy(body).trim()),
        };
        return AppError::node_unavailable(format!(
            "the region's data node at {base} answered {what}"
        ));
    }
    let (code, message, hint) = node_error.unwrap_or_else(|| {
        (
            "node_error".to_string(),
            format!(
                "the region's data node answered {status}: {}",
                String::from_utf8_lossy(body).trim()
            ),
            String::new(),
        )
    });
    let err = AppError::new(status, code, message, hint);
    if status != StatusCode::MISDIRECTED_REQUEST {
        return err;
    }
    let target = ["meridian-allowed-region", "meridian-home"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok());
    match target {
        Some(region) => err.with_header(
            HeaderName::from_static(REPLAY_HEADER),
            &format!("region={region}"),
        ),
        None => err,
    }
}

/// A reqwest error with its causes, e.g. `connection refused` rather than only the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_residency_refusal_names_the_region_to_replay_in() {
        let mut h = HeaderMap::new();
        h.insert(
            "meridian-allowed-region",
            "eu-west-1".parse().expect("value"),
        );
        let body = br#"{"error":{"code":"residency","message":"m","hint":"h"}}"#;
        let e = refusal("http://n", StatusCode::MISDIRECTED_REQUEST, &h, body);
        assert_eq!(e.code, "residency");
        assert_eq!(e.headers[0].0, REPLAY_HEADER);
        assert_eq!(e.headers[0].1, "region=eu-west-1");
    }

    #[test]
    fn a_server_error_is_node_unavailable_with_the_nodes_error() {
        let body = br#"{"error":{"code":"quorum_unavailable","message":"only 1 of 2","hint":"h"}}"#;
        let e = refusal(
            "http://n",
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            body,
        );
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "node_unavailable");
        assert!(e.message.contains("quorum_unavailable"), "{}", e.message);
    }

    #[test]
    fn a_client_error_keeps_the_nodes_code_and_status() {
        let body = br#"{"error":{"code":"idempotency_key_reused","message":"m","hint":"h"}}"#;
        let e = refusal(
            "http://n",
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            body,
        );
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code, "idempotency_key_reused");
        assert!(e.headers.is_empty());
    }
}
