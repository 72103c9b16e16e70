//! The reverse proxy: client facts from the request, a routing decision from `meridian-core`,
//! then attempts region by region under the retry budget.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use meridian_core::health::Event;
use meridian_core::routing::{self, ClientFacts, Decision, Outcome};

use crate::state::{Edge, ProxyBody, Routes};
use crate::{Error, RetryClass, clock, metrics, token};

/// Name of the sticky region cookie.
pub const COOKIE: &str = "meridian_region";
/// Response header naming the region that served the request.
pub const REGION_HEADER: &str = "meridian-region";
/// Header carrying a residency zone from a trusted proxy (and to the app, once verified).
pub const ZONE_HEADER: &str = "meridian-zone";
/// App response header asking the edge to replay the request in another region.
pub const REPLAY_HEADER: &str = "meridian-replay";

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// The client address: walking `X-Forwarded-For` from the right while hops are trusted.
pub(crate) fn client_ip(routes: &Routes, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !Edge::trusted(routes, peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !Edge::trusted(routes, hop) {
            break;
        }
    }
    client
}

fn cookie_region(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Client facts of a request as the edge sees it: address, residency (verified token claim, or
/// a `Meridian-Zone` header from a trusted proxy), sticky cookie, method, idempotency key.
pub(crate) fn facts(
    edge: &Edge,
    routes: &Routes,
    peer: IpAddr,
    method: &str,
    headers: &HeaderMap,
) -> ClientFacts {
    let ip = client_ip(routes, peer, headers);
    let mut f = ClientFacts {
        ip: Some(ip),
        method: method.to_ascii_uppercase(),
        idempotency_key: headers.contains_key("idempotency-key"),
        cookie_region: cookie_region(headers),
        ..Default::default()
    };
    if let Some(g) = &edge.options().geoip {
        let l = g.locate(ip);
        f.country = l.country;
        f.continent = l.continent;
        f.location = l.location;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(t) = bearer.map(str::trim) {
        let opts = edge.options();
        let now = clock::unix_now();
        let claims = opts
            .secret
            .as_ref()
            .and_then(|s| token::verify(t, s.as_bytes(), now).ok())
            .or_else(|| {
                let key = opts.token_public_key.as_ref()?;
                token::verify_with(t, token::Key::Ed25519(key), now).ok()
            });
        if let Some(c) = claims {
            f.zone = c.zone;
            f.home = c.home;
        }
    }
    if f.zone.is_none() && Edge::trusted(routes, peer) {
        f.zone = headers
            .get(ZONE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    f
}

fn json_error(status: StatusCode, code: &str, message: &str, hint: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": {"code": code, "message": message, "hint": hint}});
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn replay_target(h: &HeaderMap) -> Option<String> {
    let v = h.get(REPLAY_HEADER)?.to_str().ok()?;
    v.split(';')
        .find_map(|p| p.trim().strip_prefix("region="))
        .map(|r| r.trim().to_string())
}

/// Serves one request. Never fails: every problem becomes a response.
pub(crate) async fn handle(
    edge: Edge,
    peer: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let routes = edge.routes();
    let facts = facts(
        &edge,
        &routes,
        peer.ip(),
        req.method().as_str(),
        req.headers(),
    );
    let health = edge.health_view();
    let random = edge.random();
    let location = routes.edge.location;
    let mut decision = routing::route(&routes.topology, &health, &facts, location, random);
    if decision.outcome == Outcome::FailClosed {
        decision = routing::decide(&routes.topology, &health, &facts, location, random);
    }
    let (region, resp) = forward(&edge, &routes, peer, tls, &facts, &decision, req).await;
    let mut resp = resp;
    let label = region.clone().unwrap_or_else(|| "none".to_string());
    if let Some(r) = &region {
        if let Ok(v) = HeaderValue::from_str(r) {
            resp.headers_mut().insert(REGION_HEADER, v);
        }
        if routes.topology.routing.sticky && facts.cookie_region.as_deref() != Some(r.as_str()) {
            let secure = if tls { "; Secure" } else { "" };
            let c = format!("{COOKIE}={r}; Path=/; HttpOnly; SameSite=Lax{secure}");
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        if decision.regions.first() != Some(r) {
            metrics::counter!(metrics::FAILOVERS, "region" => r.clone()).increment(1);
        }
    }
    metrics::counter!(metrics::REQUESTS, "region" => label.clone(),
        "status" => metrics::status_class(resp.status().as_u16()))
    .increment(1);
    metrics::histogram!(metrics::DURATION, "region" => label)
        .record(started.elapsed().as_secs_f64());
    Ok(resp)
}

/// The request's body, buffered when it may need to be sent more than once.
enum Body {
    Buffered(Bytes),
    Stream(Option<Incoming>),
}

async fn forward(
    edge: &Edge,
    routes: &Routes,
    peer: SocketAddr,
    tls: bool,
    facts: &ClientFacts,
    decision: &Decision,
    req: Request<Incoming>,
) -> (Option<String>, Response<ProxyBody>) {
    if decision.outcome == Outcome::FailClosed {
        let why = decision.explanation.join("; ");
        return (
            None,
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_region_available",
                &format!("no region may serve this request: {why}"),
                "retry later; the edge answers again as soon as an allowed region is healthy",
            ),
        );
    }
    let (mut parts, incoming) = req.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let limit = edge.options().replay_limit;
    let mut body = match (length, chunked) {
        (None, false) | (Some(0), _) => Body::Buffered(Bytes::new()),
        (Some(n), false) if n <= limit => match incoming.collect().await {
            Ok(b) => Body::Buffered(b.to_bytes()),
            Err(e) => {
                let e = Error::RequestBody { source: e };
                return (
                    None,
                    json_error(
                        StatusCode::BAD_REQUEST,
                        "bad_request_body",
                        &e.to_string(),
                        "resend the request",
                    ),
                );
            }
        },
        _ => Body::Stream(Some(incoming)),
    };

    strip_hop_by_hop(&mut parts.headers);
    let peer_trusted = Edge::trusted(routes, peer.ip());
    let peer_s = peer.ip().to_string();
    let xff = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) if peer_trusted => format!("{prev}, {peer_s}"),
        _ => peer_s.clone(),
    };
    let for_node = if peer.is_ipv6() {
        format!("\"[{peer_s}]\"")
    } else {
        peer_s.clone()
    };
    let proto = if tls { "https" } else { "http" };
    let fwd = match parts
        .headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) if peer_trusted => format!("{prev}, for={for_node};proto={proto}"),
        _ => format!("for={for_node};proto={proto}"),
    };
    let h = &mut parts.headers;
    for (k, v) in [
        ("x-forwarded-for", xff),
        ("forwarded", fwd),
        ("x-forwarded-proto", proto.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    h.remove(ZONE_HEADER);
    if let Some(z) = &facts.zone
        && let Ok(v) = HeaderValue::from_str(z)
    {
        h.insert(ZONE_HEADER, v);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // HTTP/2 clients name the host in the URI's authority; backends get HTTP/1.1 with `Host`.
    if !parts.headers.contains_key(header::HOST)
        && let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    parts.version = http::Version::HTTP_11;
    let retryable = facts.retryable();
    let timeout = edge.options().upstream_timeout;

    edge.budget_request();
    let mut queue: std::collections::VecDeque<String> = decision.regions.iter().cloned().collect();
    let mut sent_any = false;
    let mut replayed = false;
    let mut free_next = false;
    let mut last: Option<(String, Response<ProxyBody>)> = None;
    while let Some(region) = queue.pop_front() {
        let Some(backend) = edge.pick_backend(routes, &region) else {
            continue;
        };
        if sent_any && !std::mem::take(&mut free_next) {
            if !edge.budget_retry() {
                metrics::counter!(metrics::BUDGET_EXHAUSTED).increment(1);
                break;
            }
            metrics::counter!(metrics::RETRIES, "region" => region.clone()).increment(1);
        }
        let out_body = match &mut body {
            Body::Buffered(b) => full(b.clone()),
            Body::Stream(s) => match s.take() {
                Some(b) => b.boxed(),
                None => break,
            },
        };
        let mut out = Request::from_parts(parts.clone(), out_body);
        match format!("{}{}", backend.base, path).parse() {
            Ok(uri) => *out.uri_mut() = uri,
            Err(_) => break,
        }
        sent_any = true;
        let attempt = tokio::time::timeout(timeout, edge.client().request(out)).await;
        let err = match attempt {
            Ok(Ok(resp)) if resp.status().is_server_error() => {
                edge.observe(&backend, Event::TrafficFail);
                let resp = finish(resp);
                if retryable && !queue.is_empty() && matches!(body, Body::Buffered(_)) {
                    last = Some((region, resp));
                    continue;
                }
                return (Some(region), resp);
            }
            Ok(Ok(resp)) => {
                edge.observe(&backend, Event::TrafficOk);
                if let (Some(target), Body::Buffered(_), false) =
                    (replay_target(resp.headers()), &body, replayed)
                    && target != region
                    && allowed(routes, facts, &target)
                {
                    replayed = true;
                    free_next = true;
                    metrics::counter!(metrics::REPLAYS, "region" => target.clone()).increment(1);
                    queue.push_front(target);
                    last = Some((region, finish(resp)));
                    continue;
                }
                return (Some(region), finish(resp));
            }
            Ok(Err(source)) if source.is_connect() => Error::Connect {
                backend: backend.url.clone(),
                source,
            },
            Ok(Err(source)) => Error::Exchange {
                backend: backend.url.clone(),
                source,
            },
            Err(_) => Error::Timeout {
                backend: backend.url.clone(),
                timeout,
            },
        };
        edge.observe(&backend, Event::TrafficFail);
        tracing::debug!(%region, error = %err, "attempt failed");
        let may_retry = matches!(body, Body::Buffered(_))
            && (err.retry_class() == RetryClass::NotSent || retryable);
        if !may_retry {
            let status = if matches!(err, Error::Timeout { .. }) {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            let hint = if retryable {
                "the request may be retried"
            } else {
                "the request may have reached the app: retry only if it is safe to repeat, or send an Idempotency-Key"
            };
            return (
                Some(region),
                json_error(status, "upstream_failed", &err.to_string(), hint),
            );
        }
    }
    match last {
        Some((region, resp)) => (Some(region), resp),
        None => (
            None,
            json_error(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                "every region tried failed, or the retry budget is spent",
                "retry later",
            ),
        ),
    }
}

fn allowed(routes: &Routes, facts: &ClientFacts, region: &str) -> bool {
    routes.topology.region(region).is_some()
        && facts
            .zone
            .as_deref()
            .is_none_or(|z| routes.topology.zone_of(region) == Some(z))
}

fn finish(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(REPLAY_HEADER);
    Response::from_parts(parts, body.boxed())
}
