//! Prometheus metrics of the edge. Names are constants so code and dashboards cannot drift;
//! labels are bounded (region, status class, transition) — never a path or a client.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{Counter, Histogram};

/// Requests answered, by serving region (`none` when no region could serve) and status class.
pub const REQUESTS: &str = "meridian_edge_requests_total";
/// Request latency from accept to response head, by serving region.
pub const DURATION: &str = "meridian_edge_request_duration_seconds";
/// Attempts sent again after a failed one, by the region retried into.
pub const RETRIES: &str = "meridian_edge_retries_total";
/// Requests served by a region other than the decision's first choice, by serving region.
pub const FAILOVERS: &str = "meridian_edge_failovers_total";
/// Retries refused because the retry budget was spent.
pub const BUDGET_EXHAUSTED: &str = "meridian_edge_retry_budget_exhausted_total";
/// Requests replayed in another region on the app's `Meridian-Replay` answer, by target region.
pub const REPLAYS: &str = "meridian_edge_replays_total";
/// Backend health transitions (`down`, `up`, `ejected`), by region.
pub const HEALTH_TRANSITIONS: &str = "meridian_edge_health_transitions_total";
/// 1 while the edge routes to a region, 0 while it treats it as down; by region.
pub const REGION_UP: &str = "meridian_edge_region_up";
/// Requests that found every backend of a region with `[routing] max_requests_per_backend`
/// in flight and went on to the next region (or were answered 503 `overloaded`), by region.
pub const OVERFLOWS: &str = "meridian_edge_overflows_total";
/// Client connections the edge serves now, over every proxy thread.
pub const CONNECTIONS: &str = "meridian_edge_connections";
/// Times an accept loop found every one of the `[[edge]]`'s `max_connections` in use and
/// stopped accepting until one closed.
pub const CONNECTIONS_LIMITED: &str = "meridian_edge_connections_limited_total";
/// Connections that switched protocols (WebSocket, any `Upgrade`) and are spliced to a
/// backend now.
pub const UPGRADED_OPEN: &str = "meridian_edge_upgraded_connections";
/// Bytes copied over switched connections once they closed, by `direction` (`to_backend`,
/// `to_client`).
pub const UPGRADED_BYTES: &str = "meridian_edge_upgraded_bytes_total";
/// Switched connections the edge closed because no byte moved either way for the `[[edge]]`'s
/// `tunnel_idle_timeout`.
pub const UPGRADED_IDLE_CLOSED: &str = "meridian_edge_upgraded_idle_closed_total";

/// Installs the process's recorder; call once at start so early events are not lost.
pub fn install() {
    meridian_telemetry::install();
}

/// The Prometheus text exposition.
pub fn render() -> String {
    meridian_telemetry::render()
}

pub use ::metrics::{counter, gauge, histogram};

/// `1xx`, `2xx`, `3xx`, `4xx` or `5xx`.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_index(status)]
}

/// The status classes of [`status_class`], indexed by [`status_index`].
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: u16) -> usize {
    match status {
        0..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The per-request metric handles of one serving region (or `none`). Each series is
/// registered on its first use and its handle kept, so the hot path formats and hashes no
/// labels, and the exposition shows only series that happened.
#[derive(Debug)]
pub(crate) struct RegionMetrics {
    region: String,
    requests: [OnceLock<Counter>; 5],
    duration: OnceLock<Histogram>,
    failovers: OnceLock<Counter>,
    retries: OnceLock<Counter>,
    replays: OnceLock<Counter>,
    overflows: OnceLock<Counter>,
}

impl RegionMetrics {
    pub(crate) fn new(region: &str) -> Self {
        RegionMetrics {
            region: region.to_string(),
            requests: Default::default(),
            duration: OnceLock::new(),
            failovers: OnceLock::new(),
            retries: OnceLock::new(),
            replays: OnceLock::new(),
            overflows: OnceLock::new(),
        }
    }

    /// One answered request: [`REQUESTS`] by status class and [`DURATION`].
    pub(crate) fn request(&self, status: u16, elapsed: Duration) {
        let i = status_index(status);
        self.requests[i]
            .get_or_init(|| {
                counter!(REQUESTS, "region" => self.region.clone(), "status" => STATUS_CLASSES[i])
            })
            .increment(1);
        self.duration
            .get_or_init(|| histogram!(DURATION, "region" => self.region.clone()))
            .record(elapsed.as_secs_f64());
    }

    /// A request served here instead of the decision's first choice ([`FAILOVERS`]).
    pub(crate) fn failover(&self) {
        self.failovers
            .get_or_init(|| counter!(FAILOVERS, "region" => self.region.clone()))
            .increment(1);
    }

    /// An attempt sent here after a failed one ([`RETRIES`]).
    pub(crate) fn retry(&self) {
        self.retries
            .get_or_init(|| counter!(RETRIES, "region" => self.region.clone()))
            .increment(1);
    }

    /// A request that found every backend here at its limit of requests in flight
    /// ([`OVERFLOWS`]).
    pub(crate) fn overflow(&self) {
        self.overflows
            .get_or_init(|| counter!(OVERFLOWS, "region" => self.region.clone()))
            .increment(1);
    }

    /// A request replayed here on the app's answer ([`REPLAYS`]).
    pub(crate) fn replay(&self) {
        self.replays
            .get_or_init(|| counter!(REPLAYS, "region" => self.region.clone()))
            .increment(1);
    }
}
