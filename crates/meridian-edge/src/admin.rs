//! The admin API on the edge's `admin` listener. When the cluster has a secret, every call needs
//! `Authorization: Bearer <secret>`.
//!
//! - `GET /v1/status`: regions with health, weight, RTT and backends.
//! - `PUT /v1/regions/{region}/weight` body `{"weight": 0..100}`; `POST /v1/regions/{region}/drain`.
//! - `GET /v1/explain?ip=&method=&path=&token=&cookie=&zone=`: the routing decision for such a client.
//! - `GET /v1/explain/dns?name=&type=&ip=&subnet=`: the GeoDNS answer a resolver at `ip`
//!   (sending Client Subnet `subnet`, optional) gets for `name` (relative or absolute) and
//!   `type` (default `A`), and why.
//! - `GET /v1/views`: this edge's own region views (what other edges poll for the quorum).
//! - `GET /metrics`: Prometheus text.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue};
use meridian_core::routing;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics;
use crate::proxy::{COOKIE, ZONE_HEADER, facts};
use crate::state::Edge;

fn err(status: StatusCode, code: &str, message: String, hint: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message, "hint": hint}})),
    )
        .into_response()
}

async fn auth(State(edge): State<Edge>, req: Request, next: Next) -> Response {
    if let Some(secret) = &edge.options().secret {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !meridian_http::bearer_is(given, secret) {
            return err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin API needs the cluster secret as a bearer token".to_string(),
                "send `Authorization: Bearer <contents of cluster.secret_file>` (meridian ctl --token-file)",
            );
        }
    }
    next.run(req).await
}

/// The admin router for `edge`. Every call but `/health/live` and `/health/ready` (for load
/// balancers and orchestrators, which hold no token) needs the cluster secret when one is set.
pub fn router(edge: Edge) -> Router {
    let open = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(live));
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/views", get(views))
        .route("/v1/regions/{region}/weight", put(weight))
        .route("/v1/regions/{region}/drain", post(drain))
        .route("/v1/explain", get(explain))
        .route("/v1/explain/dns", get(explain_dns))
        .route("/metrics", get(render_metrics))
        .fallback(unknown_call)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(edge.clone(), auth))
        .merge(open)
        .with_state(edge)
}

/// `/metrics`: the Prometheus text, with the gauges sampled at the scrape.
async fn render_metrics(State(edge): State<Edge>) -> String {
    metrics::gauge!(metrics::CONNECTIONS).set(edge.open_connections() as f64);
    metrics::render()
}

/// `/health/live` and `/health/ready`: 200 naming the edge while it serves. The admin
/// listener closes with the proxy's at shutdown, so a probe then finds nothing and takes the
/// edge out of rotation while in-flight requests drain.
async fn live(State(edge): State<Edge>) -> Response {
    Json(json!({"status": "ok", "edge": edge.options().name})).into_response()
}

/// The calls, for the hints of the two fallbacks.
const CALLS: &str = "GET /v1/status, GET /v1/views, PUT /v1/regions/{region}/weight, \
                     POST /v1/regions/{region}/drain, GET /v1/explain, GET /v1/explain/dns, \
                     GET /metrics, GET /health/live, GET /health/ready";

async fn unknown_call(req: Request) -> Response {
    err(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("the admin API has no {} {}", req.method(), req.uri().path()),
        &format!("the calls are: {CALLS} (docs/edge.md)"),
    )
}

async fn wrong_method(req: Request) -> Response {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {}", req.uri().path(), req.method()),
        &format!("the calls are: {CALLS} (docs/edge.md)"),
    )
}

/// A call's query, or its refusal: 400 `bad_query` saying what was wrong, with `hint`.
fn query<T>(q: Result<Query<T>, QueryRejection>, hint: &str) -> Result<T, Box<Response>> {
    q.map(|Query(q)| q).map_err(|e| {
        Box::new(err(
            StatusCode::BAD_REQUEST,
            "bad_query",
            e.body_text(),
            hint,
        ))
    })
}

async fn status(State(edge): State<Edge>) -> Json<Value> {
    let routes = edge.routes();
    let view = edge.health_view();
    let now = edge.now();
    let regions: Vec<Value> = routes
        .regions
        .iter()
        .map(|(name, r)| {
            let v = view.get(name).copied().unwrap_or_default();
            let backends: Vec<Value> = r
                .backends
                .iter()
                .map(|b| {
                    let h = b.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    json!({
                        "url": b.url,
                        "state": h.state().as_str(),
                        "available": h.available(now),
                        "ejected_for_ms": h.ejected_until(now).map(|t| t.saturating_sub(now).as_millis() as u64),
                        "in_flight": b.in_flight(),
                    })
                })
                .collect();
            json!({
                "name": name,
                "up": v.up,
                "local_up": edge.local_up(name),
                "weight": v.weight,
                "rtt_ms": v.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "zone": routes.topology.zone_of(name),
                "backends": backends,
            })
        })
        .collect();
    let keys = edge.token_keys();
    let jwks: Vec<crate::jwks::Status> = edge.jwks_sources().iter().map(|s| s.status()).collect();
    Json(json!({
        "edge": routes.edge.name,
        "policy": routes.topology.routing.policy.as_str(),
        "regions": regions,
        "tokens": {
            "keys": keys.iter().map(|k| json!({"kid": k.kid, "alg": k.key.alg()})).collect::<Vec<_>>(),
            "jwks": jwks,
        },
    }))
}

async fn views(State(edge): State<Edge>) -> Json<BTreeMap<String, bool>> {
    Json(edge.local_views())
}

#[derive(Deserialize)]
struct WeightBody {
    weight: u8,
}

async fn weight(
    State(edge): State<Edge>,
    Path(region): Path<String>,
    body: Result<Json<WeightBody>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => set(&edge, &region, b.weight),
        Err(e) => err(
            StatusCode::BAD_REQUEST,
            "bad_weight",
            e.body_text(),
            "send a JSON body like {\"weight\": 50} (0..=100) with Content-Type: application/json",
        ),
    }
}

async fn drain(State(edge): State<Edge>, Path(region): Path<String>) -> Response {
    set(&edge, &region, 0)
}

fn set(edge: &Edge, region: &str, w: u8) -> Response {
    match edge.set_weight(region, w) {
        Ok(()) => Json(json!({"region": region, "weight": w})).into_response(),
        Err(e) => err(
            StatusCode::BAD_REQUEST,
            "bad_weight",
            e.to_string(),
            "name a region of the topology and a weight 0..=100",
        ),
    }
}

#[derive(Deserialize)]
struct ExplainQuery {
    ip: IpAddr,
    method: Option<String>,
    path: Option<String>,
    token: Option<String>,
    cookie: Option<String>,
    zone: Option<String>,
    idempotency_key: Option<bool>,
}

async fn explain(
    State(edge): State<Edge>,
    q: Result<Query<ExplainQuery>, QueryRejection>,
) -> Response {
    let q = match query(
        q,
        "ip=203.0.113.9 (required), and optionally method=, path=, token=, cookie=, zone=, \
         idempotency_key=true",
    ) {
        Ok(q) => q,
        Err(refused) => return *refused,
    };
    let routes = edge.routes();
    let mut h = HeaderMap::new();
    let mut put = |k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    if let Some(t) = &q.token {
        put(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(c) = &q.cookie {
        put(header::COOKIE, format!("{COOKIE}={c}"));
    }
    if let Some(z) = &q.zone {
        put(header::HeaderName::from_static(ZONE_HEADER), z.clone());
    }
    if q.idempotency_key == Some(true) {
        put(
            header::HeaderName::from_static("idempotency-key"),
            "explain".to_string(),
        );
    }
    let method = q.method.unwrap_or_else(|| "GET".to_string());
    let f = facts(&edge, &routes, q.ip, &method, &h);
    let d = routing::decide(
        &routes.topology,
        &edge.health_view(),
        &f,
        routes.edge.location,
        edge.random(),
    );
    let outcome = match d.outcome {
        routing::Outcome::Routed => "routed",
        routing::Outcome::FailOpen => "fail-open",
        routing::Outcome::Fallback => "fallback",
        routing::Outcome::FailClosed => "fail-closed",
    };
    Json(json!({
        "client": {"ip": q.ip, "method": f.method, "path": q.path.unwrap_or_else(|| "/".to_string()),
                   "zone": f.zone, "home": f.home, "cookie_region": f.cookie_region,
                   "country": f.country, "continent": f.continent,
                   "retryable": f.retryable()},
        "regions": d.regions,
        "outcome": outcome,
        "explanation": d.explanation,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ExplainDnsQuery {
    name: String,
    #[serde(rename = "type")]
    qtype: Option<String>,
    ip: IpAddr,
    subnet: Option<String>,
}

async fn explain_dns(
    State(edge): State<Edge>,
    q: Result<Query<ExplainDnsQuery>, QueryRejection>,
) -> Response {
    let q = match query(
        q,
        "name=www&ip=192.0.2.1 (both required), and optionally type=A, subnet=81.2.69.0/24",
    ) {
        Ok(q) => q,
        Err(refused) => return *refused,
    };
    if edge.topology().dns.is_none() {
        return err(
            StatusCode::NOT_FOUND,
            "no_dns",
            "this topology has no [dns] section".to_string(),
            "add a [dns] section (docs/config.md) to serve GeoDNS",
        );
    }
    match edge.dns_authority().explain(
        &edge,
        &q.name,
        q.qtype.as_deref(),
        q.ip,
        q.subnet.as_deref(),
    ) {
        Ok(e) => Json(e).into_response(),
        Err(e) => err(
            StatusCode::BAD_REQUEST,
            "bad_question",
            e.to_string(),
            "name=www&type=A&ip=192.0.2.1&subnet=81.2.69.0/24",
        ),
    }
}
