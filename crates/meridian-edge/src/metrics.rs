//! Prometheus metrics of the edge. Names are constants so code and dashboards cannot drift;
//! labels are bounded (region, status class, transition) — never a path or a client.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ])
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Another component of the same process (tests) may have installed a recorder
                // first; that is the only way installing can fail, and then it is shared.
                let _ = metrics::set_global_recorder(recorder);
                handle
            }
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Installs the recorder; call once at start so early events are not lost.
pub fn install() {
    handle();
}

/// The Prometheus text exposition.
pub fn render() -> String {
    handle().render()
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
