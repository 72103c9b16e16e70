//! `meridian demo-app`: the sample application the lab deploys in every region, in front of
//! that region's data node. It talks to the node over plain HTTP, as any user's app would, and
//! answers JSON; every answer carries `Meridian-Region`, every refusal is
//! `{"error":{"code","message","hint"}}`.
//!
//! It uses four keyspaces of the topology, by these fixed names:
//!
//! | keyspace | type and policy | holds |
//! |---|---|---|
//! | `conversations` | `map` (per-field LWW), `async` | one key per conversation, one field per message |
//! | `orders` | `register`, `replication = "sync"`, `quorum = 2` | one key `o-<Idempotency-Key>` per checkout |
//! | `profiles` | `register`, `residency = "home-zone"` | one JSON object per user |
//! | `sessions` | `register`, `ttl`, `async` | one key per session, written with `Meridian-TTL: 30m` |
//!
//! Endpoints (ids are 1 to 128 characters of `[A-Za-z0-9._-]`, else 400 `bad_id`):
//!
//! - `GET /health/live` (200) and `GET /health/ready` (200 only if the node's `/health/ready`
//!   answers 200 within 500 ms, else 503, so an edge takes the region out when its node dies);
//! - `POST /conversations/{id}/messages` `{"author","text"}` [`Idempotency-Key`] → 201, and
//!   `GET /conversations/{id}` → the messages by `at_ms`, then id;
//! - `POST /checkout` `{"user","items","total_cents"}` with a required `Idempotency-Key` → 201
//!   `{"order","region"}`, and `GET /orders/{id}`;
//! - `PUT /profiles/{user}` (a JSON object) [`Meridian-Home`] and `GET /profiles/{user}`;
//! - `POST /sessions` `{"user"}` → 201 `{"session","region"}`, and `GET /sessions/{id}`.
//!
//! A client's `Meridian-Session` token is passed to every node request made for it (reads then
//! ask for `consistency=session`) and the node's newest token comes back in the answer, so a
//! user who fails over to another region still reads their own writes (see [`session`]).
//!
//! What the node answers decides the app's answer: 4xx pass through with the node's code; 421
//! (the key belongs to another region) becomes 421 with `Meridian-Replay: region=<there>`, which
//! the edge replays in that region; no answer within [`node::REQUEST_TIMEOUT`], or a 5xx (such
//! as a sync write that missed its quorum), becomes 503 `node_unavailable`, which the edge fails
//! over. The data routes of the node need no credentials, even with `cluster.secret_file` set.

pub mod clock;
mod conversations;
pub mod error;
pub mod node;
mod orders;
mod profiles;
mod session;
mod sessions;

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

pub use error::AppError;
use node::{IDEMPOTENT_REPLAYED, NodeClient, NodeReply};

use crate::LabError;

/// Keyspace of conversations: a `map`, one field per message.
pub const CONVERSATIONS: &str = "conversations";
/// Keyspace of orders: a `register` with `replication = "sync"`.
pub const ORDERS: &str = "orders";
/// Keyspace of profiles: a `register` with `residency = "home-zone"`.
pub const PROFILES: &str = "profiles";
/// Keyspace of sessions: a `register` whose values expire.
pub const SESSIONS: &str = "sessions";
/// Header naming the region that answered, on every response.
pub const REGION_HEADER: &str = "meridian-region";
/// Largest request body the app reads (256 KiB); beyond it the answer is 413 `body_too_large`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest id (conversation, message, order, user, session) the app accepts.
pub const MAX_ID_CHARS: usize = 128;
/// Longest `Idempotency-Key`: it becomes the order id `o-<key>`, itself an id.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = MAX_ID_CHARS - 2;

/// What one demo app serves: its region, and the data node it talks to.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The region this app runs in; named in `Meridian-Region` and the default home of profiles
    /// and sessions.
    pub region: String,
    /// Base URL of the region's data node, `http://host:port`, without a trailing slash.
    pub node: String,
    /// Seed of the generator of message and session ids. Default: 0; give each process its own.
    pub seed: u64,
    /// The wall clock, in milliseconds since the Unix epoch. Default: [`clock::system_ms`].
    pub now_ms: fn() -> u64,
}

impl AppOptions {
    /// Options for the app of `region` in front of the node at `node`, with seed 0 and the
    /// system clock. Refuses a region that is not a topology name and a node URL that is not
    /// `http://host:port` (see [`parse_node_url`]).
    pub fn new(region: &str, node: &str) -> Result<Self, LabError> {
        check_region(region)?;
        Ok(AppOptions {
            region: region.to_string(),
            node: parse_node_url(node)?,
            seed: 0,
            now_ms: clock::system_ms,
        })
    }
}

/// Checks that `name` is a region name of the topology: `[a-z0-9][a-z0-9-]*`, at most 63
/// characters.
pub fn check_region(name: &str) -> Result<(), LabError> {
    if is_region_name(name) {
        Ok(())
    } else {
        Err(LabError::Parse {
            input: name.to_string(),
            reason: "a region name is 1 to 63 characters of a-z, 0-9 and `-`, starting with a letter or digit, e.g. us-east-1".to_string(),
        })
    }
}

/// The base URL of a data node from `http://host:port[/]`: the trailing `/` removed. Refuses
/// other schemes (the node speaks plain HTTP), a missing port, a path, a query or credentials.
pub fn parse_node_url(url: &str) -> Result<String, LabError> {
    let bad = |reason: &str| LabError::Parse {
        input: url.to_string(),
        reason: format!("{reason}; expected the node's URL, e.g. http://127.0.0.1:7601"),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad("the data node speaks plain http://"));
    }
    if parsed.port().is_none() {
        return Err(bad("no port"));
    }
    if parsed.path() != "/"
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(bad(
            "a path, query, fragment or credentials are not allowed",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Serves the demo app on `listener` until `shutdown` completes, then lets in-flight requests
/// finish. Fails only if the HTTP client cannot be built or the listener fails.
pub async fn serve(
    opts: AppOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LabError> {
    let what = match listener.local_addr() {
        Ok(a) => format!("serving the demo app on {a}"),
        Err(_) => "serving the demo app".to_string(),
    };
    let app = router(App::new(opts)?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| LabError::Io { what, source })
}

/// The state every handler shares; cheap to clone.
#[derive(Clone)]
struct App(Arc<Inner>);

struct Inner {
    region: String,
    region_header: HeaderValue,
    node: NodeClient,
    rng: Mutex<StdRng>,
    now_ms: fn() -> u64,
}

impl App {
    fn new(opts: AppOptions) -> Result<Self, LabError> {
        check_region(&opts.region)?;
        let region_header = HeaderValue::from_str(&opts.region).map_err(|e| LabError::Parse {
            input: opts.region.clone(),
            reason: e.to_string(),
        })?;
        Ok(App(Arc::new(Inner {
            region: opts.region,
            region_header,
            node: NodeClient::new(opts.node)?,
            rng: Mutex::new(StdRng::seed_from_u64(opts.seed)),
            now_ms: opts.now_ms,
        })))
    }

    fn region(&self) -> &str {
        &self.0.region
    }

    fn node(&self) -> &NodeClient {
        &self.0.node
    }

    fn now_ms(&self) -> u64 {
        (self.0.now_ms)()
    }

    /// `bytes` random bytes in lower-case hex.
    fn random_hex(&self, bytes: usize) -> String {
        let mut rng = self
            .0
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (0..bytes)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route(
            "/conversations/{id}/messages",
            post(conversations::post_message),
        )
        .route("/conversations/{id}", get(conversations::get))
        .route("/checkout", post(orders::checkout))
        .route("/orders/{id}", get(orders::get))
        .route("/profiles/{id}", put(profiles::put).get(profiles::get))
        .route("/sessions", post(sessions::create))
        .route("/sessions/{id}", get(sessions::get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(session::scope))
        .layer(axum::middleware::from_fn_with_state(app.clone(), stamp))
        .with_state(app)
}

/// Adds `Meridian-Region` to every answer and logs each request at debug level.
async fn stamp(State(app): State<App>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = tokio::time::Instant::now();
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(REGION_HEADER, app.0.region_header.clone());
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

async fn live(State(app): State<App>) -> Response {
    let body = serde_json::json!({"status": "live", "region": app.region()});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn ready(State(app): State<App>) -> Result<Response, AppError> {
    app.node().ready().await.map_err(|reason| {
        AppError::node_unavailable(format!("the region's data node is not ready: {reason}"))
    })?;
    let body = serde_json::json!({"status": "ready", "region": app.region()});
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

async fn not_found(req: Request) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        format!("there is no {} {}", req.method(), req.uri().path()),
        "routes: /health/live, /health/ready, /conversations/{id}[/messages], /checkout, /orders/{id}, /profiles/{user}, /sessions[/{id}]",
    )
}

async fn method_not_allowed(req: Request) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not served on {}", req.method(), req.uri().path()),
        "see the module documentation or docs/lab.md for each route's methods",
    )
}

fn is_region_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_id(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Checks an id of kind `what` (`conversation`, `user`, …): 400 `bad_id` unless it is 1 to
/// [`MAX_ID_CHARS`] characters of `[A-Za-z0-9._-]`.
fn check_id(what: &str, id: &str) -> Result<(), AppError> {
    if is_id(id, MAX_ID_CHARS) {
        return Ok(());
    }
    let shown: String = id.chars().take(40).collect();
    Err(AppError::bad_request(
        "bad_id",
        format!("`{shown}` is not a valid {what} id"),
        format!("a {what} id is 1 to {MAX_ID_CHARS} characters of A-Z, a-z, 0-9, `.`, `_` and `-`"),
    ))
}

/// The `{id}` of the path, checked with [`check_id`].
fn id_path(what: &str, path: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    let Path(id) = path.map_err(|e| {
        AppError::bad_request(
            "bad_id",
            format!("the {what} id could not be decoded: {}", e.body_text()),
            "ids are 1 to 128 characters of A-Z, a-z, 0-9, `.`, `_` and `-`",
        )
    })?;
    check_id(what, &id)?;
    Ok(id)
}

/// The request's `Idempotency-Key`, if any: 1 to [`MAX_IDEMPOTENCY_KEY_CHARS`] characters of
/// `[A-Za-z0-9._-]`, else 400 `bad_idempotency_key`.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if is_id(k, MAX_IDEMPOTENCY_KEY_CHARS) => Ok(Some(k.to_string())),
        _ => Err(AppError::bad_request(
            "bad_idempotency_key",
            "the Idempotency-Key header is not a valid key",
            format!(
                "send 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters of A-Z, a-z, 0-9, `.`, `_` and `-`, e.g. a UUID"
            ),
        )),
    }
}

/// Reads the body, at most [`MAX_BODY_BYTES`], as JSON of type `T`.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    example: &str,
) -> Result<T, AppError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body could not be read within {MAX_BODY_BYTES} bytes"),
                "send a smaller body",
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        AppError::bad_request(
            "bad_body",
            format!("the body is not the JSON expected: {e}"),
            format!("send e.g. {example}"),
        )
    })
}

/// Checks a free-text field: 1 to `max` characters, no control characters.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    let n = value.chars().count();
    if (1..=max).contains(&n) && !value.chars().any(char::is_control) {
        return Ok(());
    }
    Err(AppError::bad_request(
        "bad_body",
        format!("`{field}` must be 1 to {max} characters without control characters (it has {n})"),
        format!("send a non-empty `{field}` of at most {max} characters"),
    ))
}

/// The node's answer body as JSON; 500 `bad_stored_value` if what is stored is not JSON (it was
/// not written by this app).
fn stored_json(
    keyspace: &str,
    key: &str,
    reply: &NodeReply,
) -> Result<serde_json::Value, AppError> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_stored_value",
            format!("the value of `{key}` in keyspace `{keyspace}` is not JSON: {e}"),
            "the key was written by something other than the demo app; rewrite or delete it",
        )
    })
}

/// A JSON answer, with `Idempotent-Replayed: true` when the node replayed a stored outcome.
fn answer(status: StatusCode, body: serde_json::Value, replayed: bool) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    if replayed {
        resp.headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(is_id("a.B_c-9", MAX_ID_CHARS));
        assert!(is_id(&"x".repeat(128), MAX_ID_CHARS));
        assert!(!is_id(&"x".repeat(129), MAX_ID_CHARS));
        assert!(!is_id("", MAX_ID_CHARS));
        assert!(!is_id("a/b", MAX_ID_CHARS));
        assert!(!is_id("é", MAX_ID_CHARS));
    }

    #[test]
    fn node_urls_and_regions_are_checked() {
        assert_eq!(
            parse_node_url("http://127.0.0.1:7601/").expect("valid"),
            "http://127.0.0.1:7601"
        );
        for bad in [
            "127.0.0.1:7601",
            "https://n:1",
            "http://n",
            "http://n:1/v1",
            "http://n:1?x",
        ] {
            assert!(parse_node_url(bad).is_err(), "{bad}");
        }
        assert!(check_region("us-east-1").is_ok());
        for bad in ["", "US", "-a", "a b", &"a".repeat(64)] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
    }
}
