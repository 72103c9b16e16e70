//! The active health plane: every `[health] interval`, one probe per backend (answered with a
//! status of `[health] expect` within `timeout` is a success), and one at once for a backend
//! that real traffic just got ejected (as haproxy's `on-error fastinter`), so a dead backend is
//! marked down up to an interval sooner; RTTs feed the `latency` policy. With other edges in the
//! topology, their views are fetched on the same beat for the quorum.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, header};
use meridian_core::grpc_health;
use meridian_core::health::Event;
use tokio::task::JoinSet;

use crate::proxy::full;
use crate::state::{Backend, Edge};
use crate::upstream::{self, Target};

/// Runs the probe loop until the task is dropped.
pub(crate) async fn run(edge: Edge) {
    loop {
        let routes = edge.routes();
        let interval = routes.topology.health.interval;
        let tick = tokio::time::Instant::now();
        let mut set = JoinSet::new();
        for b in routes.regions.values().flat_map(|r| r.backends.iter()) {
            set.spawn(probe(edge.clone(), b.clone()));
        }
        for peer in routes
            .topology
            .edges
            .iter()
            .filter(|e| e.name != routes.edge.name)
        {
            set.spawn(fetch_peer(edge.clone(), peer.name.clone(), peer.admin));
        }
        while set.join_next().await.is_some() {}
        let update: Vec<(String, bool)> = edge
            .health_view()
            .into_iter()
            .map(|(r, v)| (r, v.up))
            .collect();
        for (r, up) in update {
            crate::metrics::gauge!(crate::metrics::REGION_UP, "region" => r).set(if up {
                1.0
            } else {
                0.0
            });
        }
        tokio::time::sleep_until(tick + interval).await;
    }
}

/// Probes one backend now (the beat's probes, and the one a passive ejection asks for):
/// `GET [health] path`, or for a backend of an HTTP/2 region when `[health] grpc_service` is
/// set, a gRPC health check of that service.
pub(crate) async fn probe(edge: Edge, b: Arc<Backend>) {
    let h = edge.topology().health.clone();
    let grpc = h.grpc_service.as_deref().filter(|_| b.target.http2);
    let req = match grpc {
        None => Request::get(h.path.as_str()),
        Some(_) => Request::post(grpc_health::CHECK_PATH)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers"),
    };
    let body = grpc.map_or_else(Vec::new, grpc_health::check_request);
    let Ok(req) = req
        .header(header::HOST, b.authority.as_str())
        .header(header::USER_AGENT, "meridian-edge-probe")
        .body(full(body))
    else {
        edge.observe(&b, Event::ProbeFail);
        return;
    };
    let start = Instant::now();
    let answered = async {
        let resp = edge.send(&b, req).await.ok()?;
        match grpc {
            None => Some(h.expects(resp.status().as_u16())),
            Some(_) => Some(serving(resp).await),
        }
    };
    let ok = matches!(
        tokio::time::timeout(h.timeout, answered).await,
        Ok(Some(true))
    );
    if ok {
        edge.observe_rtt(&b.region, start.elapsed());
        edge.observe(&b, Event::ProbeOk);
    } else {
        edge.observe(&b, Event::ProbeFail);
    }
}

/// Whether a gRPC health check's answer says `SERVING`: HTTP 200, `grpc-status` 0 (in the
/// trailers, or in the head of a trailers-only answer), and one `HealthCheckResponse`.
async fn serving(resp: http::Response<crate::state::ProxyBody>) -> bool {
    let status_ok = |h: &http::HeaderMap| h.get("grpc-status").is_some_and(|v| v == "0");
    if resp.status() != http::StatusCode::OK {
        return false;
    }
    if resp.headers().contains_key("grpc-status") {
        // Trailers-only: an error has no message; a success would carry none either.
        return false;
    }
    let limited = http_body_util::Limited::new(resp.into_body(), grpc_health::MAX_ANSWER);
    let Ok(answer) = http_body_util::BodyExt::collect(limited).await else {
        return false;
    };
    if !answer.trailers().is_some_and(status_ok) {
        return false;
    }
    match grpc_health::serving_status(&answer.to_bytes()) {
        Ok(status) => status == grpc_health::ServingStatus::Serving,
        Err(e) => {
            tracing::debug!(error = %e, "gRPC health check");
            false
        }
    }
}

async fn fetch_peer(edge: Edge, name: String, admin: SocketAddr) {
    let timeout = edge.topology().health.timeout;
    let mut req = Request::get("/v1/views").header(header::HOST, admin.to_string());
    if let Some(s) = &edge.options().secret {
        req = req.header(header::AUTHORIZATION, format!("Bearer {s}"));
    }
    let Ok(req) = req.body(full(bytes::Bytes::new())) else {
        return;
    };
    let fetched = async {
        let target = Target {
            host: admin.ip().to_string(),
            port: admin.port(),
            tls: None,
            http2: false,
        };
        let resp = upstream::send_once(&target, edge.connect_timeout(), req)
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .ok()?
            .to_bytes();
        serde_json::from_slice::<BTreeMap<String, bool>>(&body).ok()
    };
    if let Ok(Some(views)) = tokio::time::timeout(timeout, fetched).await {
        edge.record_peer_views(&name, &views);
    }
}
