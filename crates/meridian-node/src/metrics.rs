//! Prometheus metrics of the node. Names are constants so code and dashboards cannot drift;
//! labels are bounded (route template, method, status, keyspace, op) — never a key.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::Node;

/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "meridian_http_requests_total";
/// HTTP request latency, by route template and method.
pub const HTTP_DURATION: &str = "meridian_http_request_duration_seconds";
/// Durable writes, by keyspace and operation.
pub const KV_WRITES: &str = "meridian_kv_writes_total";
/// Mutations answered from a stored idempotent outcome, by keyspace.
pub const IDEMPOTENT_REPLAYS: &str = "meridian_idempotent_replays_total";
/// Keys removed by TTL expiry.
pub const EXPIRED: &str = "meridian_ttl_expired_total";
/// Transactions committed by the store.
pub const STORE_TRANSACTIONS: &str = "meridian_store_transactions_total";
/// Group commits (one fsync each in durable mode).
pub const STORE_GROUP_COMMITS: &str = "meridian_store_group_commits_total";
/// fsync calls made by the store.
pub const STORE_FSYNCS: &str = "meridian_store_fsyncs_total";

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ])
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // A second node in one process (tests) finds the recorder already installed and
                // shares it; that is the only way installing can fail.
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

/// `GET /metrics`: the Prometheus text exposition.
pub async fn render(State(node): State<Node>) -> ([(&'static str, &'static str); 1], String) {
    let stats = node.store().stats();
    metrics::counter!(STORE_TRANSACTIONS).absolute(stats.transactions_committed);
    metrics::counter!(STORE_GROUP_COMMITS).absolute(stats.group_commits);
    metrics::counter!(STORE_FSYNCS).absolute(stats.fsyncs);
    (
        [("content-type", "text/plain; version=0.0.4")],
        handle().render(),
    )
}

/// Counts one answered request.
pub fn request(route: &str, method: &str, status: u16, took: Duration) {
    metrics::counter!(HTTP_REQUESTS, "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route.to_string(), "method" => method.to_string()).record(took.as_secs_f64());
}

/// Counts one durable write.
pub fn write(keyspace: &str, op: &'static str) {
    metrics::counter!(KV_WRITES, "keyspace" => keyspace.to_string(), "op" => op).increment(1);
}

/// Counts one idempotent replay.
pub fn idempotent_replay(keyspace: &str) {
    metrics::counter!(IDEMPOTENT_REPLAYS, "keyspace" => keyspace.to_string()).increment(1);
}

/// Counts expired keys.
pub fn expired(keyspace: &str, n: u64) {
    metrics::counter!(EXPIRED, "keyspace" => keyspace.to_string()).increment(n);
}
