//! Replaying a request at another region's node and relaying its answer. Two callers: writes to
//! a `writer = "home"` keyspace that says `forward = true` (instead of answering 421, the write
//! goes to the key's home), and reads whose consistency this region cannot give on its own
//! (`session` reads whose token is not visible here, `strong` reads of a key homed elsewhere; see
//! [`crate::read`]). A forwarded request carries `Meridian-Forwarded` and is never forwarded
//! again, so a stale view cannot make requests loop.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::Node;

/// Header marking a forwarded request with the region that forwarded it.
pub const FORWARDED: &str = "meridian-forwarded";
/// How long a forwarded write may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
];

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// Whether `headers` mark the request as already forwarded by another region.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// The base URL of `region`'s node as this node reaches it (`--peer` overrides honoured);
/// `None` for this region itself or a region the topology does not have.
pub fn peer_url(node: &Node, region: &str) -> Option<String> {
    crate::repl::peer_urls(node)
        .into_iter()
        .find(|(r, _)| r == region)
        .map(|(_, url)| url)
}

/// Another node's complete answer, ready to be relayed as it is (its `Meridian-Region` names
/// the region that served it).
#[derive(Debug)]
pub struct Relayed {
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's headers, without hop-by-hop ones.
    pub headers: HeaderMap,
    /// The answer's body.
    pub body: Bytes,
}

impl Relayed {
    /// The `error.code` of a JSON error answer; `None` for any other answer.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["error"]["code"].as_str().map(str::to_string)
    }
}

impl IntoResponse for Relayed {
    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

/// Replays a request at the node whose base URL is `base`: same method, path, query, headers and
/// body, plus `Meridian-Forwarded: <this region>`; waits at most `timeout` for the whole answer.
/// Fails when the node cannot be reached or its answer does not arrive complete in time.
pub async fn replay(
    node: &Node,
    base: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Relayed, reqwest::Error> {
    let target = format!(
        "{base}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out.append(name, value.clone());
        }
    }
    if let Ok(v) = node.region().parse() {
        out.insert(FORWARDED, v);
    }
    let resp = client()
        .request(method, &target)
        .headers(out)
        .body(body)
        .timeout(timeout)
        .send()
        .await?;
    let status = resp.status();
    let mut relayed = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            relayed.append(name, value.clone());
        }
    }
    let body = resp.bytes().await?;
    Ok(Relayed {
        status,
        headers: relayed,
        body,
    })
}

/// Replays the request at the home region named by a `wrong_region` refusal and relays the
/// answer; the refusal itself when the home is not a peer; 502 `forward_failed` when the home
/// cannot be reached or its answer is lost (the outcome is then unknown).
pub async fn to_home(
    node: &Node,
    refusal: &ApiError,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Some(home) = refusal
        .headers
        .iter()
        .find(|(n, _)| *n == "meridian-home")
        .map(|(_, v)| v)
    else {
        return refusal.clone().into_response();
    };
    let Some(base) = peer_url(node, home) else {
        return refusal.clone().into_response();
    };
    match replay(node, &base, method, uri, headers, body, TIMEOUT).await {
        Ok(relayed) => relayed.into_response(),
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "forward_failed",
            format!("forwarding to the key's home region `{home}` failed: {e}"),
            format!(
                "retry (with the same Idempotency-Key: the home may have applied it), or send the write to region `{home}` directly"
            ),
        )
        .with_header("meridian-home", home.clone())
        .into_response(),
    }
}
