//! Prometheus metrics of the edge. Names are constants so code and dashboards cannot drift;
//! labels are bounded (region, status class, transition) — never a path or a client.

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
    match status {
        0..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
