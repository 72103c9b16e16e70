//! Forwarding of writes to a key's home region, for `writer = "home"` keyspaces that say
//! `forward = true`: instead of answering 421, the node replays the request at the home
//! region's node and relays its answer. A forwarded request carries `Meridian-Forwarded` and is
//! never forwarded again, so a stale view cannot make requests loop.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::Node;

/// Header marking a forwarded request with the region that forwarded it.
pub const FORWARDED: &str = "meridian-forwarded";
/// How long a forwarded request may take.
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

/// Replays the request at the home region named by a `wrong_region` refusal and relays the
/// answer; the refusal itself when the home cannot be reached (502 with the reason).
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
    let Some((_, base)) = crate::repl::peer_urls(node)
        .into_iter()
        .find(|(r, _)| r == home)
    else {
        return refusal.clone().into_response();
    };
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
    let sent = client()
        .request(method, &target)
        .headers(out)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "forward_failed",
                format!("forwarding to the key's home region `{home}` failed: {e}"),
                format!("retry, or send the write to region `{home}` directly"),
            )
            .with_header("meridian-home", home.clone())
            .into_response();
        }
    };
    let status = resp.status();
    let mut relayed = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            relayed.append(name, value.clone());
        }
    }
    let body = resp.bytes().await.unwrap_or_default();
    (status, relayed, body).into_response()
}
