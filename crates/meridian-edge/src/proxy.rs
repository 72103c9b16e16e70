//! The reverse proxy: client facts from the request, a routing decision from `meridian-core`,
//! then attempts region by region under the retry budget.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use meridian_core::config::Writes;
use meridian_core::health::Event;
use meridian_core::routing::{self, ClientFacts, Decision, Outcome};

use crate::state::{Edge, Pick, ProxyBody, Routes};
use crate::{Error, RetryClass, access_log, clock, metrics, upstream};

mod grpc_web;
mod switch;

/// Name of the sticky region cookie.
pub const COOKIE: &str = "meridian_region";
/// Response header naming the region that served the request.
pub const REGION_HEADER: &str = "meridian-region";
/// Header carrying a residency zone from a trusted proxy (and to the app, once verified).
pub const ZONE_HEADER: &str = "meridian-zone";
/// App response header asking the edge to replay the request in another region.
pub const REPLAY_HEADER: &str = "meridian-replay";

const REGION: HeaderName = HeaderName::from_static(REGION_HEADER);
const ZONE: HeaderName = HeaderName::from_static(ZONE_HEADER);
const REPLAY: HeaderName = HeaderName::from_static(REPLAY_HEADER);
/// A key's home region: on a request, where `writes = "home"` sends it without a home
/// claim; on a region node's 421, the home it belongs to (`writer = "home"`).
const HOME: HeaderName = HeaderName::from_static("meridian-home");
/// On a region node's 421: a region allowed to hold the pinned key.
const MISDIRECTED_ALLOWED: HeaderName = HeaderName::from_static("meridian-allowed-region");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// A gRPC call's status, in the trailers, or in the head of a trailers-only answer.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What the proxy knows of one client connection, computed once when it is accepted so its
/// requests format none of it.
pub(crate) struct Conn {
    /// The edge serving it (one reference per connection, not per request).
    edge: Edge,
    peer: SocketAddr,
    tls: bool,
    /// The peer's address as text.
    peer_text: String,
    /// This hop's `Forwarded` element: `for=<peer>;proto=<http|https>`.
    forwarded_text: String,
    /// `X-Forwarded-For` naming only the peer.
    xff: HeaderValue,
    /// `Forwarded` with only this hop's element.
    forwarded: HeaderValue,
}

impl Conn {
    /// A connection from `peer` to `edge`, over TLS when `tls`.
    pub(crate) fn new(edge: Edge, peer: SocketAddr, tls: bool) -> Conn {
        let peer_text = peer.ip().to_string();
        let for_node = if peer.is_ipv6() {
            format!("\"[{peer_text}]\"")
        } else {
            peer_text.clone()
        };
        let forwarded_text = format!("for={for_node};proto={}", proto(tls));
        Conn {
            edge,
            peer,
            tls,
            xff: HeaderValue::from_str(&peer_text)
                .expect("invariant: an IP address's text is a valid header value"),
            forwarded: HeaderValue::from_str(&forwarded_text)
                .expect("invariant: `for=<IP>;proto=<scheme>` is a valid header value"),
            peer_text,
            forwarded_text,
        }
    }
}

fn text(h: &HeaderMap, name: HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn proto(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// The sticky cookie naming `region`, as set over plain HTTP and over TLS (`Secure`); `None`
/// when the name cannot be a header value.
pub(crate) fn sticky_cookies(region: &str) -> Option<[HeaderValue; 2]> {
    let plain = format!("{COOKIE}={region}; Path=/; HttpOnly; SameSite=Lax");
    let secure = format!("{plain}; Secure");
    Some([
        HeaderValue::from_str(&plain).ok()?,
        HeaderValue::from_str(&secure).ok()?,
    ])
}

pub(crate) fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 and those `Connection` names. Most
/// messages carry none: one pass over their names then replaces a hashed lookup of each.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    if h.contains_key(header::CONNECTION) {
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
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// The client address: walking `X-Forwarded-For` from the right while hops are trusted.
pub(crate) fn client_ip(routes: &Routes, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !Edge::trusted(routes, peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all(X_FORWARDED_FOR)
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
/// a `Meridian-Zone` header from a trusted proxy), home region (token claim, else
/// `Meridian-Home` under `writes = "home"`), sticky cookie, method, idempotency key.
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
        idempotency_key: headers.contains_key(IDEMPOTENCY_KEY),
        cookie_region: cookie_region(headers),
        ..Default::default()
    };
    if let Some(g) = edge.geoip().as_ref() {
        let l = g.locate(ip);
        f.country = l.country;
        f.continent = l.continent;
        f.location = l.location;
    }
    let bearer = meridian_http::bearer_token(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    if let Some(c) = bearer.and_then(|t| edge.token_claims(t, clock::unix_now())) {
        f.zone = c.zone;
        // A home the topology does not know (a region since removed) cannot be followed:
        // like such a `Meridian-Home`, it is no claim. An unknown zone stays — nothing may
        // then serve the request, which is what residency asks.
        f.home = c.home.filter(|h| routes.topology.region(h).is_some());
    }
    if f.zone.is_none() && Edge::trusted(routes, peer) {
        f.zone = headers
            .get(ZONE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    // Without a home claim, `writes = "home"` follows the key's home as the client names it for
    // the region node (`Meridian-Home`): a placement hint, not a residency claim — the zone
    // still bounds where the request may go.
    if f.home.is_none() && routes.topology.routing.writes == Writes::Home {
        f.home = headers
            .get(HOME)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|r| routes.topology.region(r).is_some())
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

/// Where an app's answer asks the edge to send the request instead: `Meridian-Replay:
/// region=<name>`, or a 421 (the request was not processed, RFC 9110 §15.5.20) naming the
/// region in `Meridian-Home` or `Meridian-Allowed-Region`, as a region node answers for a key
/// homed or pinned elsewhere and an app may pass on as it is.
fn replay_target(status: StatusCode, h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get(REPLAY) {
        let v = v.to_str().ok()?;
        return v
            .split(';')
            .find_map(|p| p.trim().strip_prefix("region="))
            .map(|r| r.trim().to_string());
    }
    if status != StatusCode::MISDIRECTED_REQUEST {
        return None;
    }
    let named = h.get(HOME).or_else(|| h.get(MISDIRECTED_ALLOWED))?;
    named.to_str().ok().map(|r| r.trim().to_string())
}

/// Serves one request. Never fails: every problem becomes a response.
pub(crate) async fn handle(
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let edge = &conn.edge;
    let started = Instant::now();
    let logged = edge.options().access_log.as_ref().map(|_| Logged::of(&req));
    let switch = match switch::Switch::take(edge, &mut req) {
        Ok(s) => s,
        Err(connect) => {
            let refused = connect.refusal();
            let metrics = edge.unserved_metrics();
            metrics.request(refused.status().as_u16(), started.elapsed());
            if let Some(l) = logged {
                l.write(edge, conn.peer.ip(), refused.status(), None, started);
            }
            return Ok(refused);
        }
    };
    let routes = edge.routes();
    let facts = facts(
        edge,
        &routes,
        conn.peer.ip(),
        req.method().as_str(),
        req.headers(),
    );
    let random = edge.random();
    let location = routes.edge.location;
    let decision = edge.with_health_view(|health| {
        let d = routing::route(&routes.topology, health, &facts, location, random);
        if d.outcome == Outcome::FailClosed {
            // Again with the explanation the 503 carries.
            return routing::decide(&routes.topology, health, &facts, location, random);
        }
        d
    });
    let (region, mut resp) = forward(edge, &routes, &conn, &facts, &decision, req, switch).await;
    // `forward` names only regions it picked a backend in, so each has a `RegionState`.
    let served = region
        .as_deref()
        .and_then(|r| Some((r, routes.regions.get(r)?)));
    let failover =
        served.is_some_and(|(r, _)| decision.regions.first().map(String::as_str) != Some(r));
    let metrics = match served {
        Some((r, state)) => {
            if let Some(v) = &state.region_header {
                resp.headers_mut().insert(REGION, v.clone());
            }
            if routes.topology.routing.sticky
                && facts.cookie_region.as_deref() != Some(r)
                && let Some(cookies) = &state.cookie
            {
                let v = cookies[usize::from(conn.tls)].clone();
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            if failover {
                state.metrics.failover();
            }
            &state.metrics
        }
        None => edge.unserved_metrics(),
    };
    metrics.request(resp.status().as_u16(), started.elapsed());
    if let Some(l) = logged {
        let client = facts.ip.unwrap_or(conn.peer.ip());
        let region = served.map(|(r, _)| (r, failover));
        l.write(edge, client, resp.status(), region, started);
    }
    Ok(resp)
}

/// What the access log says of a request, taken as it arrives (an extended CONNECT is logged
/// as the CONNECT it was).
struct Logged {
    method: String,
    host: String,
    path: String,
    proto: &'static str,
    user_agent: String,
}

impl Logged {
    fn of(req: &Request<Incoming>) -> Logged {
        let h = req.headers();
        let host = text(h, header::HOST)
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(ToString::to_string))
            .unwrap_or_default();
        Logged {
            method: req.method().to_string(),
            host,
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), ToString::to_string),
            proto: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            user_agent: text(h, header::USER_AGENT).unwrap_or_default().to_string(),
        }
    }

    /// The request's line, answered with `status` by `region` (and whether that was a
    /// failover), to `edge`'s access log.
    fn write(
        self,
        edge: &Edge,
        client: IpAddr,
        status: StatusCode,
        region: Option<(&str, bool)>,
        started: Instant,
    ) {
        let Some(log) = &edge.options().access_log else {
            return;
        };
        log.record(&access_log::Entry {
            ts: clock::unix_now_f64(),
            client,
            method: &self.method,
            host: &self.host,
            path: &self.path,
            proto: self.proto,
            status: status.as_u16(),
            region: region.map(|(r, _)| r),
            failover: region.is_some_and(|(_, f)| f),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            user_agent: &self.user_agent,
        });
    }
}

/// The request's body, buffered when it may need to be sent more than once.
enum Body {
    Buffered(Bytes),
    Stream(Option<Incoming>),
}

async fn forward(
    edge: &Edge,
    routes: &Routes,
    conn: &Conn,
    facts: &ClientFacts,
    decision: &Decision,
    req: Request<Incoming>,
    mut switch: Option<switch::Switch>,
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

    // gRPC's `te: trailers` is the one `TE` an HTTP/2 backend may get.
    let te_trailers = parts.headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|t| {
            t.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop(&mut parts.headers);
    if let Some(s) = &switch {
        // The one hop-by-hop pair that must reach the backend: what to switch to.
        s.ask_backend(&mut parts.headers);
    }
    let h = &mut parts.headers;
    if Edge::trusted(routes, conn.peer.ip()) {
        // Behind a trusted proxy: append this hop to what it forwarded.
        let xff = text(h, X_FORWARDED_FOR).map(|p| format!("{p}, {}", conn.peer_text));
        let fwd = text(h, header::FORWARDED).map(|p| format!("{p}, {}", conn.forwarded_text));
        for (k, v, own) in [
            (X_FORWARDED_FOR, xff, &conn.xff),
            (header::FORWARDED, fwd, &conn.forwarded),
        ] {
            match v.map(HeaderValue::try_from) {
                Some(Ok(v)) => h.insert(k, v),
                Some(Err(_)) => None,
                None => h.insert(k, own.clone()),
            };
        }
    } else {
        h.insert(X_FORWARDED_FOR, conn.xff.clone());
        h.insert(header::FORWARDED, conn.forwarded.clone());
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto(conn.tls)));
    h.remove(ZONE);
    if let Some(z) = &facts.zone
        && let Ok(v) = HeaderValue::from_str(z)
    {
        h.insert(ZONE, v);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
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
    // A browser's gRPC-Web call, bridged to gRPC for regions whose backends speak HTTP/2.
    let web = grpc_web::GrpcWeb::of(&parts.headers);
    let retryable = facts.retryable();
    let timeout = edge.options().upstream_timeout;

    let mut kept = Some(parts);
    edge.budget_request();
    let mut queue: std::collections::VecDeque<String> = decision.regions.iter().cloned().collect();
    let mut sent_any = false;
    let mut replayed = false;
    let mut free_next = false;
    let mut last: Option<(String, Response<ProxyBody>)> = None;
    // What went wrong with the last attempt that got no answer, for the 502 when none is left.
    let mut last_failure: Option<String> = None;
    // Regions skipped because every backend had `max_requests_per_backend` in flight.
    let mut saturated: Vec<String> = Vec::new();
    while let Some(region) = queue.pop_front() {
        let busy = match edge.pick_backend(routes, &region) {
            Pick::Backend(busy) => busy,
            Pick::Full => {
                if let Some(r) = routes.regions.get(&region) {
                    r.metrics.overflow();
                }
                saturated.push(region);
                continue;
            }
            Pick::Unknown => continue,
        };
        let backend = Arc::clone(busy.backend());
        if sent_any && !std::mem::take(&mut free_next) {
            if !edge.budget_retry() {
                metrics::counter!(metrics::BUDGET_EXHAUSTED).increment(1);
                break;
            }
            if let Some(r) = routes.regions.get(&region) {
                r.metrics.retry();
            }
        }
        let bridge = web.as_ref().filter(|_| backend.target.http2);
        let out_body = match (&mut body, bridge) {
            (Body::Buffered(b), None) => full(b.clone()),
            (Body::Buffered(b), Some(web)) => match web.request_bytes(b) {
                Ok(grpc) => full(grpc),
                Err(e) => return (None, grpc_web::GrpcWeb::bad_text(&e)),
            },
            (Body::Stream(s), _) => match s.take() {
                Some(b) => {
                    let b = b.map_err(|source| Error::RequestBody { source }).boxed();
                    match bridge {
                        Some(web) => web.request_body(b),
                        None => b,
                    }
                }
                None => break,
            },
        };
        // The parts are cloned only while another attempt may need them: a retry in a
        // region still queued, or a replay (possible with more than one region).
        let again = matches!(body, Body::Buffered(_))
            && (!queue.is_empty() || (!replayed && routes.regions.len() > 1));
        let out_parts = match (again, &mut kept) {
            (true, Some(p)) => p.clone(),
            (false, kept) => match kept.take() {
                Some(p) => p,
                None => break,
            },
            (true, None) => break,
        };
        let mut out = Request::from_parts(out_parts, out_body);
        *out.uri_mut() = Uri::from(path.clone());
        if !out.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(backend.authority.as_str())
        {
            out.headers_mut().insert(header::HOST, v);
        }
        if te_trailers && backend.target.http2 {
            out.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(web) = bridge {
            web.request_headers(out.headers_mut());
        }
        sent_any = true;
        let attempt = tokio::time::timeout(timeout, edge.send(&backend, out))
            .await
            .map(|sent| {
                sent.map(|resp| match bridge {
                    Some(web) => web.response(resp),
                    None => resp,
                })
            });
        drop(busy);
        let err = match attempt {
            Ok(Ok(resp)) if resp.status().is_server_error() || grpc_unavailable(&resp) => {
                edge.observe(&backend, Event::TrafficFail);
                let resp = finish(resp);
                if retryable && !queue.is_empty() && matches!(body, Body::Buffered(_)) {
                    last = Some((region, resp));
                    continue;
                }
                return (Some(region), resp);
            }
            Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                edge.observe(&backend, Event::TrafficOk);
                return (
                    Some(region),
                    switch::switch_protocols(edge, resp, switch.take()),
                );
            }
            Ok(Ok(resp)) => {
                edge.observe(&backend, Event::TrafficOk);
                if switch
                    .as_ref()
                    .is_some_and(|s| s.refuses_success(resp.status()))
                {
                    return (Some(region), switch::not_switched(resp.status()));
                }
                if let (Some(target), Body::Buffered(_), false) = (
                    replay_target(resp.status(), resp.headers()),
                    &body,
                    replayed,
                ) && target != region
                    && allowed(routes, facts, &target)
                {
                    replayed = true;
                    free_next = true;
                    if let Some(r) = routes.regions.get(&target) {
                        r.metrics.replay();
                    }
                    queue.push_front(target);
                    last = Some((region, finish(resp)));
                    continue;
                }
                return (Some(region), finish(resp));
            }
            Ok(Err(upstream::Failure::Connect(source))) => Error::Connect {
                backend: backend.url.clone(),
                source,
            },
            Ok(Err(upstream::Failure::Exchange(source))) => Error::Exchange {
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
        last_failure = Some(format!("{region}: {err}"));
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
        None if !sent_any && !saturated.is_empty() => {
            let mut resp = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                &format!(
                    "every backend of {} has [routing] max_requests_per_backend ({}) requests \
                     in flight, so the request was not sent",
                    saturated.join(", "),
                    routes.topology.routing.max_requests_per_backend
                ),
                "retry after the Retry-After delay, with backoff",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (None, resp)
        }
        None => {
            let message = match last_failure {
                Some(f) => format!(
                    "every region tried failed, or the retry budget is spent; last failure: {f}"
                ),
                None => "every region tried failed, or the retry budget is spent".to_string(),
            };
            (
                None,
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    &message,
                    "retry later",
                ),
            )
        }
    }
}

/// Whether `resp` is a gRPC call's `UNAVAILABLE` (status 14) in a trailers-only answer (the
/// status in the head): the server could not take the call, which gRPC clients retry — so it
/// counts as a 5xx does, for passive health and for a retry in the next region.
fn grpc_unavailable(resp: &Response<ProxyBody>) -> bool {
    resp.headers()
        .get(GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == b"14")
}

fn allowed(routes: &Routes, facts: &ClientFacts, region: &str) -> bool {
    routes.topology.region(region).is_some()
        && facts
            .zone
            .as_deref()
            .is_none_or(|z| routes.topology.zone_of(region) == Some(z))
}

fn finish(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut().remove(REPLAY);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Edge {
        let text = "[cluster]\nname = \"t\"\n[[region]]\nname = \"r\"\nnode = \"http://127.0.0.1:1\"\n\
                    app = [\"http://127.0.0.1:2\"]\n[[edge]]\nname = \"e\"\n\
                    listen = \"127.0.0.1:3\"\nadmin = \"127.0.0.1:4\"\n";
        let topology = meridian_core::config::parse("t.toml", text).unwrap();
        Edge::new(Arc::new(topology), crate::EdgeOptions::new("e")).unwrap()
    }

    #[test]
    fn connection_facts_are_formatted_once_as_before() {
        let v4 = Conn::new(edge(), "192.0.2.7:5000".parse().unwrap(), false);
        assert_eq!(v4.xff, "192.0.2.7");
        assert_eq!(v4.forwarded, "for=192.0.2.7;proto=http");
        let v6 = Conn::new(edge(), "[2001:db8::1]:443".parse().unwrap(), true);
        assert_eq!(v6.xff, "2001:db8::1");
        assert_eq!(v6.forwarded, "for=\"[2001:db8::1]\";proto=https");
        assert_eq!(v6.forwarded_text, "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn sticky_cookie_is_secure_only_over_tls() {
        let [plain, secure] = sticky_cookies("eu-west-1").unwrap();
        assert_eq!(
            plain,
            "meridian_region=eu-west-1; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            secure,
            "meridian_region=eu-west-1; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(sticky_cookies("bad\nname").is_none());
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::HOST], "example.com");
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1, "{plain:?}");
        let mut none = HeaderMap::new();
        none.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        none.insert("x-keep-alive", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut none);
        assert_eq!(
            none.len(),
            2,
            "nothing hop-by-hop, nothing removed: {none:?}"
        );
    }

    #[test]
    fn a_finished_response_loses_the_replay_request_and_hop_by_hop_headers() {
        let mut resp = Response::new(full("x"));
        let h = resp.headers_mut();
        h.insert(REPLAY, HeaderValue::from_static("region=eu"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let resp = finish(resp);
        let names: Vec<&str> = resp.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
        let mut only_replay = Response::new(full("x"));
        only_replay
            .headers_mut()
            .insert(REPLAY, HeaderValue::from_static("region=eu"));
        assert!(finish(only_replay).headers().is_empty());
    }
}
