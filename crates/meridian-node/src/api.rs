//! The HTTP data API of DESIGN §2: routes, extraction and validation of requests, and the
//! mapping of outcomes to responses. Every answer, error or not, is JSON unless it is a value.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_core::op::Op;
use meridian_core::record::Record;
use meridian_store::Table;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::input::{self, WriteHeaders, names};
use crate::state::{Join, Node};
use crate::write::{self, Mutation, Outcome};
use crate::{feed, keys, metrics, read, render};

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Page size of a scan when the request gives none.
pub const SCAN_DEFAULT_LIMIT: usize = 100;
/// Largest page size of a scan.
pub const SCAN_MAX_LIMIT: usize = 1_000;

/// The route of one key: GET, PUT, DELETE and PATCH of `{key}` in `{keyspace}`.
pub const KEY_ROUTE: &str = "/v1/kv/{keyspace}/{key}";

/// Builds the node's router. The cluster secret, when set, must be presented as
/// `Authorization: Bearer <secret>` on `/v1/admin/*`; peers authenticate on `/v1/repl/*`.
pub fn router(node: Node) -> Router {
    let admin_token = node.config().secret.clone();
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .route(
            "/openapi.json",
            get(|| async { ([("content-type", render::JSON)], OPENAPI) }),
        )
        .route("/v1/kv/{keyspace}", get(scan))
        .route(
            KEY_ROUTE,
            get(get_key)
                .put(put_key)
                .delete(delete_key)
                .patch(patch_key),
        )
        .route("/v1/kv/{keyspace}/{key}/incr", post(incr))
        .route("/v1/kv/{keyspace}/{key}/add", post(add))
        .route("/v1/kv/{keyspace}/{key}/remove", post(remove))
        .route("/v1/watch/{keyspace}", get(feed::watch))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/repl/stream", get(crate::repl::stream))
        .route("/v1/repl/digest/{keyspace}", get(crate::repl::digest))
        .route(
            "/v1/repl/hashes/{keyspace}/{list}",
            get(crate::repl::hashes),
        )
        .route("/v1/repl/records/{keyspace}", post(crate::repl::records))
        .route("/v1/repl/heads", post(crate::repl::heads))
        .route("/v1/repl/copy/{keyspace}/{table}", get(crate::repl::copy))
        .route(
            "/v1/admin/status",
            get(admin_status).layer(middleware::from_fn_with_state(admin_token, admin_auth)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(node.clone(), joining_gate))
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .with_state(node)
}

/// Records every request in the metrics and stamps `Meridian-Region` on every response.
async fn observe(State(node): State<Node>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    // A forwarded answer already names the region that served it.
    if !resp.headers().contains_key(names::REGION)
        && let Ok(v) = HeaderValue::from_str(node.region())
    {
        resp.headers_mut().insert(names::REGION, v);
    }
    metrics::request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

/// 503 `joining` while the node's new store joins its peers (see [`crate::repl::join`]).
fn joining(node: &Node) -> Option<ApiError> {
    (node.join_state() == Join::Running).then(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "joining",
            "this node's store is new and is still learning from its peers what it must hold",
            "retry in a moment or in another region; the node's log says which peers it waits for",
        )
        .with_header("retry-after", "1")
    })
}

/// Refuses clients' data requests (`/v1/kv/…`, `/v1/watch/…`) while the node joins: its
/// store may not hold yet what the peers hold, and a write made now could reuse the numbers of
/// one made before its data was lost.
/// 503 `sequence_conflict`: see [`Node::sequence_conflict`].
pub(crate) fn sequence_conflict(detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "sequence_conflict",
        format!("{detail}; this node refuses writes so that none is silently ignored"),
        "stop the node, delete its data directory and start it again while its peers are \
         reachable: it then joins them (docs/replication.md)",
    )
}

async fn joining_gate(State(node): State<Node>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if (path.starts_with("/v1/kv/") || path.starts_with("/v1/watch/"))
        && let Some(refused) = joining(&node)
    {
        return refused.into_response();
    }
    next.run(req).await
}

async fn admin_auth(State(token): State<Option<String>>, req: Request, next: Next) -> Response {
    if let Some(token) = token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !meridian_http::bearer_is(given, &token) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin calls need the cluster token",
                "send `Authorization: Bearer <contents of cluster.secret_file>`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("there is no endpoint {method} {}", uri.path()),
        "see /openapi.json for every endpoint",
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
        "see /openapi.json for the methods of each endpoint",
    )
}

/// 503 `store_failed` once a group commit has failed: the store refuses every write until the
/// process restarts, so the node must neither get traffic nor be left running as it is.
fn store_failed(node: &Node) -> Option<ApiError> {
    node.store().failure().map(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            format!("a commit to the store failed ({error}), so it refuses every write"),
            "fix the disk (free space, I/O errors in the kernel log), then restart the node: \
             it replays its journal and keeps every acknowledged write",
        )
    })
}

async fn live(State(node): State<Node>) -> Response {
    match store_failed(&node) {
        Some(failed) => failed.into_response(),
        None => Json(json!({"status": "live"})).into_response(),
    }
}

async fn ready(State(node): State<Node>) -> Response {
    if let Some(failed) = store_failed(&node)
        .or_else(|| joining(&node))
        .or_else(|| node.sequence_conflict().map(sequence_conflict))
    {
        return failed.into_response();
    }
    match node.store().get(Table::Meta, keys::META_LAST_SEQ) {
        Ok(_) => Json(json!({"status": "ready", "region": node.region()})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store cannot be read: {e}"),
            "check the node's log and its data directory",
        )
        .into_response(),
    }
}

/// `{keyspace}/{key}` from the path, with a JSON error for anything the router could not decode.
fn key_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((ks, key)) = path.map_err(|e| {
        ApiError::bad_request(
            "bad_key",
            format!("the path could not be decoded: {}", e.body_text()),
            "keys must be valid UTF-8, percent-encoded in the URL",
        )
    })?;
    Ok((ks, key))
}

fn query<T>(q: Result<Query<T>, QueryRejection>, expected: &str) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::bad_request(
            "bad_query",
            format!("the query string is not valid: {}", e.body_text()),
            format!("use {expected}"),
        )
    })
}

async fn read_body(node: &Node, body: Body) -> Result<Bytes, ApiError> {
    let max = node.topology().limits.max_value_bytes;
    axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("the body is larger than the limit of {max} bytes"),
            "store large objects elsewhere and keep a reference here, or raise [limits] max_value_bytes",
        )
    })
}

macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return ApiError::into_response(e),
        }
    };
}

/// Everything a mutating call brings: gathered without refusing anything, so every refusal is
/// made (as JSON) by [`Mutate::run`].
struct Mutate {
    node: Node,
    method: Method,
    uri: axum::http::Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
}

impl axum::extract::FromRequest<Node> for Mutate {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, node: &Node) -> Result<Self, Self::Rejection> {
        use axum::extract::FromRequestParts as _;
        let (mut parts, body) = req.into_parts();
        let path = Path::<(String, String)>::from_request_parts(&mut parts, node).await;
        Ok(Mutate {
            node: node.clone(),
            method: parts.method,
            uri: parts.uri,
            path,
            headers: parts.headers,
            body,
        })
    }
}

/// How a mutating call's validated headers and body become an operation.
type ParseOp = fn(&WriteHeaders, &[u8]) -> Result<Op, ApiError>;

impl Mutate {
    /// Validates the call (path, key, headers, body), runs the operation durably, answers. A
    /// write refused because the key's home is elsewhere is forwarded there when the keyspace
    /// says `forward = true` (once: a forwarded request is never forwarded again).
    async fn run(self, op_name: &'static str, parse: ParseOp) -> Response {
        let Mutate {
            node,
            method,
            uri,
            path,
            headers,
            body,
        } = self;
        let body = try_resp!(read_body(&node, body).await);
        let forwards = path
            .as_ref()
            .ok()
            .and_then(|Path((ks, _))| node.topology().keyspace(ks))
            .is_some_and(|k| k.forward)
            && !headers.contains_key(crate::forward::FORWARDED);
        match execute(&node, &method, path, &headers, &body, op_name, parse).await {
            Ok(w) => outcome_response(w.outcome, w.replayed),
            Err(e) if forwards && e.code == "wrong_region" => {
                crate::forward::to_home(&node, &e, method, &uri, &headers, body).await
            }
            Err(e) => e.into_response(),
        }
    }
}

async fn execute(
    node: &Node,
    method: &Method,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    body: &[u8],
    op_name: &'static str,
    parse: ParseOp,
) -> Result<write::Written, ApiError> {
    let (ks_name, key) = key_path(path)?;
    let keyspace = node.keyspace(&ks_name)?.clone();
    input::check_key(&key, node.topology().limits.max_key_bytes)?;
    let wh = input::write_headers(headers, node.topology())?;
    let op = parse(&wh, body)?;
    let header = |n: &str| headers.get(n).map(|v| v.as_bytes()).unwrap_or_default();
    let fingerprint = write::fingerprint(&[
        method.as_str().as_bytes(),
        ks_name.as_bytes(),
        key.as_bytes(),
        op_name.as_bytes(),
        body,
        header("content-type"),
        header("if-match"),
        header("if-none-match"),
        header(names::TTL),
        header(names::HOME),
        header(names::CONTEXT),
    ]);
    let mutation = Mutation {
        keyspace,
        key,
        op,
        headers: wh,
        fingerprint,
    };
    write::write(node, mutation).await
}

fn outcome_response(o: Outcome, replayed: bool) -> Response {
    let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, o.body).into_response();
    let h = resp.headers_mut();
    let mut set = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    if let Some(e) = o.etag {
        set("etag", format!("\"{e}\""));
    }
    if let Some(s) = o.session {
        set(names::SESSION, s);
    }
    if let Some(ct) = o.content_type {
        set("content-type", ct);
    }
    if replayed {
        set(names::IDEMPOTENT_REPLAYED, "true".into());
    }
    resp
}

async fn put_key(m: Mutate) -> Response {
    m.run("put", |wh, b| {
        Ok(Op::Put {
            value: Bytes::copy_from_slice(b),
            content_type: wh.content_type.clone(),
            context: wh.context.clone(),
        })
    })
    .await
}

async fn delete_key(m: Mutate) -> Response {
    m.run("delete", |wh, _| {
        Ok(Op::Delete {
            context: wh.context.clone(),
        })
    })
    .await
}

async fn patch_key(m: Mutate) -> Response {
    m.run("patch", |_, b| {
        Ok(Op::Patch {
            fields: input::json_body(b, r#"{"field": "value", "removed": null}"#)?,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrBody {
    #[serde(default = "one")]
    by: i64,
}

fn one() -> i64 {
    1
}

async fn incr(m: Mutate) -> Response {
    m.run("incr", |_, b| {
        let by = if b.iter().all(u8::is_ascii_whitespace) {
            1
        } else {
            input::json_body::<IncrBody>(b, r#"{"by": 5}"#)?.by
        };
        Ok(Op::Incr { by })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    members: Vec<String>,
}

fn members(b: &[u8]) -> Result<Vec<String>, ApiError> {
    let m = input::json_body::<MembersBody>(b, r#"{"members": ["a", "b"]}"#)?.members;
    if m.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_value",
            "`members` is empty",
            "name at least one member",
        ));
    }
    Ok(m)
}

async fn add(m: Mutate) -> Response {
    m.run("add", |_, b| {
        Ok(Op::Add {
            members: members(b)?,
        })
    })
    .await
}

async fn remove(m: Mutate) -> Response {
    m.run("remove", |_, b| {
        Ok(Op::Remove {
            members: members(b)?,
        })
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GetParams {
    consistency: Option<Consistency>,
}

/// Read consistency asked for (default `local`). `session` and `strong` are answered by
/// another region when this one cannot give them (see [`crate::read`]).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Consistency {
    Local,
    Session,
    Strong,
}

async fn get_key(
    State(node): State<Node>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<GetParams>, QueryRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (ks_name, key) = try_resp!(key_path(path));
    let params = try_resp!(query(q, "?consistency=local|session|strong"));
    let ks = try_resp!(node.keyspace(&ks_name));
    try_resp!(input::check_key(&key, node.topology().limits.max_key_bytes));
    // A pinned key is never held here if this region may not hold it: say where to go, at
    // once, whatever the consistency (nothing is forwarded for it from here).
    try_resp!(write::check_residency(&node, ks, None));
    let answer = match params.consistency {
        Some(Consistency::Strong) => try_resp!(read::strong(&node, ks, &key, &uri, &headers).await),
        Some(Consistency::Session) => {
            match try_resp!(input::token_header(&headers, names::SESSION)) {
                Some(token) => {
                    try_resp!(read::session(&node, ks, &key, &uri, &headers, &token).await)
                }
                None => read::Answer::Here,
            }
        }
        Some(Consistency::Local) | None => read::Answer::Here,
    };
    if let read::Answer::There(relayed) = answer {
        return relayed.into_response();
    }
    let record = try_resp!(read::load(&node, &ks.name, &key));
    let now = node.now();
    let Some(record) = record.filter(|r| r.is_live(now)) else {
        // A `home-zone` key absent here whose home (as the client names it) is in another zone
        // is never held here: say where it is instead of 404.
        let named = try_resp!(input::home_header(&headers, node.topology()));
        try_resp!(write::check_residency(&node, ks, named.as_deref()));
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("keyspace `{}` has no key `{key}` (or it expired)", ks.name),
            "write it first; GET /v1/kv/{keyspace}?prefix= lists the keys that exist",
        )
        .into_response();
    };
    render::get_response(&record)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanParams {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default, deserialize_with = "flag")]
    values: bool,
}

/// A query flag: `true`/`1`, or present without a value (`?values`), is on; `false`/`0` off.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    match text.to_ascii_lowercase().as_str() {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "`{other}` is not a flag value: use true, false, 1 or 0"
        ))),
    }
}

async fn scan(
    State(node): State<Node>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ScanParams>, QueryRejection>,
) -> Response {
    let Path(ks_name) = try_resp!(path.map_err(|e| ApiError::bad_request(
        "bad_path",
        e.body_text(),
        "GET /v1/kv/{keyspace}?prefix=&after=&limit=&values=true"
    )));
    let p = try_resp!(query(
        q,
        "?prefix=<text>&after=<key>&limit=1..1000&values=true|false|1|0"
    ));
    let ks = try_resp!(node.keyspace(&ks_name));
    // A keyspace pinned to regions that exclude this one holds nothing here: the list is asked
    // of an allowed region (421 naming one), not answered empty.
    try_resp!(write::check_residency(&node, ks, None));
    let limit = p.limit.unwrap_or(SCAN_DEFAULT_LIMIT);
    if limit == 0 || limit > SCAN_MAX_LIMIT {
        return ApiError::bad_request(
            "bad_query",
            format!("limit = {limit} is out of range"),
            format!("use a limit from 1 to {SCAN_MAX_LIMIT}"),
        )
        .into_response();
    }
    let prefix = keys::data_key(&ks.name, &p.prefix);
    let mut after = p.after.as_deref().map(|a| keys::data_key(&ks.name, a));
    let now = node.now();
    let mut items = Vec::new();
    let mut more = false;
    // Dead records (deleted or expired, not yet swept) are skipped, so read in pages until
    // `limit` live items are found or the range ends.
    'pages: loop {
        let page = try_resp!(
            node.store()
                .scan(Table::Data, &prefix, after.as_deref(), limit + 1)
                .map_err(ApiError::from)
        );
        let exhausted = page.len() <= limit;
        for (k, v) in &page {
            after = Some(k.clone());
            let Ok(record) = Record::decode(v) else {
                continue;
            };
            if !record.is_live(now) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break 'pages;
            }
            let Some(key) = keys::user_key(&ks.name, k) else {
                continue;
            };
            let mut item = serde_json::Map::new();
            item.insert("key".into(), json!(key));
            item.insert("etag".into(), json!(record.version.etag()));
            if p.values {
                render::item_value(&record, &mut item);
            }
            items.push(serde_json::Value::Object(item));
        }
        if exhausted {
            break;
        }
    }
    let next = if more {
        items.last().and_then(|i| i.get("key").cloned())
    } else {
        None
    };
    Json(json!({"items": items, "next": next})).into_response()
}

async fn conflicts(State(node): State<Node>) -> Json<serde_json::Value> {
    Json(json!({"region": node.region(), "conflicts": node.conflicts()}))
}

/// Recent conflicts (those `/v1/conflicts` still lists), counted per keyspace.
fn conflicts_by_keyspace(node: &Node) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in node.conflicts() {
        *out.entry(c.keyspace).or_insert(0) += 1;
    }
    out
}

async fn admin_status(State(node): State<Node>) -> Json<serde_json::Value> {
    let stats = node.store().stats();
    let keyspaces: BTreeMap<&str, serde_json::Value> = node
        .topology()
        .keyspaces
        .iter()
        .map(|k| {
            (
                k.name.as_str(),
                json!({"type": k.kind.as_str(), "replication": k.replication.as_str()}),
            )
        })
        .collect();
    Json(json!({
        "region": node.region(),
        "hlc": node.now().0,
        "applied": node.applied().borrow().to_token(),
        "peers": crate::repl::peer_status(&node),
        "conflicts": conflicts_by_keyspace(&node),
        "keyspaces": keyspaces,
        "load": {
            "pending_writes": node.pending_writes(),
            "max_pending_writes": node.topology().limits.max_pending_writes,
            "connections": node.connection_slots().open(),
            "max_connections": node.connection_slots().max(),
        },
        "store": {
            "transactions": stats.transactions_committed,
            "group_commits": stats.group_commits,
            "fsyncs": stats.fsyncs,
            "writeback_syncs": stats.writeback_syncs,
            "reclaimed": stats.reclaimed,
            "trash_freed_bytes": stats.trash_freed_bytes,
            "bytes_written": stats.bytes_written,
            "read_cache_hits": stats.read_cache_hits,
            "read_cache_misses": stats.read_cache_misses,
            "failure": node.store().failure().map(|e| e.to_string()),
            "incarnation": node.incarnation().to_string(),
            "joining": node.join_state() == Join::Running,
            "sequence_conflict": node.sequence_conflict(),
        },
    }))
}
