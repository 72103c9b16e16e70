//! Prometheus metrics of the node. Names are constants so code and dashboards cannot drift;
//! labels are bounded (route template, method, status, keyspace, op) — never a key.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;

use crate::state::Node;

/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "meridian_http_requests_total";
/// HTTP request latency, by route template and method.
pub const HTTP_DURATION: &str = "meridian_http_request_duration_seconds";
/// Durable writes, by keyspace and operation.
pub const KV_WRITES: &str = "meridian_kv_writes_total";
/// Clients' writes refused unqueued because `[limits] max_pending_writes` were waiting, by
/// keyspace.
pub const KV_WRITES_SHED: &str = "meridian_kv_writes_shed_total";
/// Clients' writes waiting for the store.
pub const KV_WRITES_PENDING: &str = "meridian_kv_writes_pending";
/// Mutations answered from a stored idempotent outcome, by keyspace.
pub const IDEMPOTENT_REPLAYS: &str = "meridian_idempotent_replays_total";
/// Keys removed by TTL expiry.
pub const EXPIRED: &str = "meridian_ttl_expired_total";
/// Replication bytes sent to a peer (egress), by peer.
pub const REPL_SENT_BYTES: &str = "meridian_repl_sent_bytes_total";
/// Replication bytes received from a peer, by peer.
pub const REPL_RECEIVED_BYTES: &str = "meridian_repl_received_bytes_total";
/// Remote op-log entries applied here.
pub const REPL_APPLIED: &str = "meridian_repl_applied_total";
/// 1 while a peer's topology differs from this node's in its zones or keyspaces (as of the
/// link's last connection), else 0; by peer.
pub const REPL_TOPOLOGY_DIFFERS: &str = "meridian_repl_topology_differs";
/// 1 while the link to a peer is up, by peer.
pub const REPL_LINK_UP: &str = "meridian_repl_link_up";
/// Catch-ups by copy from a peer (see `repl::catchup`), by `outcome` (`ok`, `error`).
pub const REPL_CATCH_UPS: &str = "meridian_repl_catch_ups_total";
/// Ops of this region a peer has not acknowledged, by peer.
pub const REPL_UNACKED: &str = "meridian_repl_unacked_ops";
/// Seconds since the oldest op a peer has not acknowledged was written, by peer.
pub const REPL_LAG: &str = "meridian_repl_lag_seconds";
/// Seconds from a write at its origin (its HLC time) until it was durably applied here, by
/// origin: the replication delay a reader in this region sees. Skew between the two regions'
/// clocks adds to (or takes from) it.
pub const REPL_DELAY: &str = meridian_telemetry::REPL_DELAY;
/// Replicated garbage removed, by `what`: `oplog` (entries every region applied),
/// `tombstones` (dead records no superseded write can reach any more) or `expired` (expired
/// records this region emptied with a replicated reset, to be collected as tombstones).
pub const GC_COLLECTED: &str = "meridian_gc_collected_total";
/// Peers that have not reported what they applied since this node started; while above 0
/// nothing is collected, and the op log and tombstones grow.
pub const GC_PEERS_UNHEARD: &str = "meridian_gc_peers_unheard";
/// Dead records waiting for collection when the last pass began, by `what`: `tombstones`
/// (indexed, waiting for every region to apply what killed them and what was reported by then)
/// or `expired` (expired maps, sets, counters and mvregisters waiting for every peer's
/// watermark to pass their expiry; those another region wrote last go when its reset
/// arrives). Each counts up to 8,192, the most one pass reads.
pub const GC_PENDING: &str = "meridian_gc_pending";
/// Concurrent writes where last-writer-wins overwrote one, by keyspace.
pub const CONFLICTS: &str = "meridian_conflicts_total";
/// Sync writes answered `quorum_unavailable`, by keyspace.
pub const QUORUM_TIMEOUTS: &str = "meridian_quorum_timeouts_total";
/// Remote timestamps further ahead of this node's clock than the allowed offset, by origin.
/// Counted, not refused: the HLC still moves past them, so this node's later writes are
/// ordered after what it applied.
pub const CLOCK_SKEW: &str = "meridian_clock_skew_rejections_total";
/// Records repaired by digest comparison, by keyspace.
pub const DIGEST_REPAIRS: &str = "meridian_repl_digest_repairs_total";
/// Keys whose hash a digest comparison fetched from a peer (buckets that differed), by
/// keyspace: the anti-entropy traffic, about 30 bytes each.
pub const DIGEST_KEYS_COMPARED: &str = "meridian_repl_digest_keys_compared_total";
/// Differing buckets a digest comparison left for a later one because they were still
/// changing, by keyspace.
pub const DIGEST_BUCKETS_DEFERRED: &str = "meridian_repl_digest_buckets_deferred_total";
/// Records a digest comparison fetched from a peer (missing here or hashing differently), by
/// keyspace; those that changed something also count in [`DIGEST_REPAIRS`].
pub const DIGEST_RECORDS_FETCHED: &str = "meridian_repl_digest_records_fetched_total";
/// Reads forwarded to another region, by reason (`session`, `strong`) and outcome (see
/// [`ForwardOutcome`]).
pub const READ_FORWARDS: &str = "meridian_read_forwards_total";
/// Transactions committed by the store.
pub const STORE_TRANSACTIONS: &str = "meridian_store_transactions_total";
/// Group commits (one fsync each in durable mode).
pub const STORE_GROUP_COMMITS: &str = "meridian_store_group_commits_total";
/// fsync calls made by the store.
pub const STORE_FSYNCS: &str = "meridian_store_fsyncs_total";
/// Syncs of table files the store made while fjall wrote them (one per 1 MiB), so group
/// commits do not wait behind a whole table's write-back.
pub const STORE_WRITEBACK_SYNCS: &str = "meridian_store_writeback_syncs_total";
/// Flushed memtables and superseded versions the store freed on its own thread, off the lock
/// every write takes.
pub const STORE_RECLAIMED: &str = "meridian_store_reclaimed_total";
/// Bytes of files the store's engine deleted that the store freed a slice at a time, so a
/// commit never waits for the trim of a whole table (on filesystems with online `discard`).
pub const STORE_TRASH_FREED: &str = "meridian_store_trash_freed_bytes_total";
/// Client connections the node serves now (sampled at the scrape).
pub const HTTP_CONNECTIONS: &str = "meridian_http_connections";
/// Times the node found every one of `[limits] max_connections` taken and stopped accepting
/// until a connection closed.
pub const HTTP_CONNECTIONS_LIMITED: &str = "meridian_http_connections_limited_total";
/// 1 once a commit to the store has failed (it then refuses every write until a restart), else 0.
pub const STORE_FAILED: &str = "meridian_store_failed";
/// 1 while the node's new store joins its peers (clients are answered 503 `joining`), else 0.
pub const NODE_JOINING: &str = "meridian_node_joining";
/// 1 once a peer reported writes of this region past any this store made (a new store that
/// took its start for the cluster's first): writes are refused from then on, else 0.
pub const SEQUENCE_CONFLICT: &str = "meridian_repl_sequence_conflict";
/// Record reads answered from the store's read cache.
pub const STORE_READ_CACHE_HITS: &str = "meridian_store_read_cache_hits_total";
/// Record reads that missed the store's read cache and read the engine.
pub const STORE_READ_CACHE_MISSES: &str = "meridian_store_read_cache_misses_total";

/// Installs the process's recorder; call once at start so early events are not lost.
pub fn install() {
    meridian_telemetry::install();
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn render(State(node): State<Node>) -> ([(&'static str, &'static str); 1], String) {
    crate::repl::peer_status(&node);
    let stats = node.store().stats();
    metrics::counter!(STORE_TRANSACTIONS).absolute(stats.transactions_committed);
    metrics::counter!(STORE_GROUP_COMMITS).absolute(stats.group_commits);
    metrics::counter!(STORE_FSYNCS).absolute(stats.fsyncs);
    metrics::counter!(STORE_WRITEBACK_SYNCS).absolute(stats.writeback_syncs);
    metrics::counter!(STORE_RECLAIMED).absolute(stats.reclaimed);
    metrics::counter!(STORE_TRASH_FREED).absolute(stats.trash_freed_bytes);
    metrics::counter!(STORE_READ_CACHE_HITS).absolute(stats.read_cache_hits);
    metrics::counter!(STORE_READ_CACHE_MISSES).absolute(stats.read_cache_misses);
    metrics::gauge!(KV_WRITES_PENDING).set(node.pending_writes() as f64);
    metrics::gauge!(HTTP_CONNECTIONS).set(node.connection_slots().open() as f64);
    metrics::gauge!(NODE_JOINING).set(if node.join_state() == crate::state::Join::Running {
        1.0
    } else {
        0.0
    });
    metrics::gauge!(SEQUENCE_CONFLICT).set(if node.sequence_conflict().is_some() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!(STORE_FAILED).set(if node.store().failure().is_some() {
        1.0
    } else {
        0.0
    });
    (
        [("content-type", "text/plain; version=0.0.4")],
        meridian_telemetry::render(),
    )
}

/// Counts one answered request of `route` (a route template, or `unmatched`). Methods outside
/// the standard ones share the label `other`, so no client can add series without bound.
pub fn request(route: &str, method: &axum::http::Method, status: u16, took: Duration) {
    let method = method_label(method);
    let record = |(requests, duration): &Series| {
        requests.increment(1);
        duration.record(took.as_secs_f64());
    };
    match find_series(&REQUEST_SERIES.load(), route, method, status) {
        Some(series) => record(series),
        None => record(&register_series(route, method, status)),
    }
}

/// The request counter and latency histogram of one route, method and status.
type Series = (metrics::Counter, metrics::Histogram);

/// Series by route template: each method and status seen with it, and its series.
type SeriesByRoute = HashMap<String, Vec<(&'static str, u16, Series)>>;

/// Series handles by route template, then method and status, registered on first use: the
/// recorder's registry lookup (labels built, hashed, compared) runs once per series instead of
/// once per request. Read without locking; a new series copies the map (a few dozen entries).
static REQUEST_SERIES: std::sync::LazyLock<arc_swap::ArcSwap<SeriesByRoute>> =
    std::sync::LazyLock::new(Default::default);

fn find_series<'m>(
    map: &'m SeriesByRoute,
    route: &str,
    method: &str,
    status: u16,
) -> Option<&'m Series> {
    map.get(route)?
        .iter()
        .find(|(m, s, _)| *m == method && *s == status)
        .map(|(_, _, series)| series)
}

fn register_series(route: &str, method: &'static str, status: u16) -> Series {
    let series: Series = (
        metrics::counter!(HTTP_REQUESTS, "route" => route.to_string(), "method" => method, "status" => status.to_string()),
        metrics::histogram!(HTTP_DURATION, "route" => route.to_string(), "method" => method),
    );
    REQUEST_SERIES.rcu(|map| {
        let mut map = HashMap::clone(map);
        if find_series(&map, route, method, status).is_none() {
            let entries = map.entry(route.to_string()).or_default();
            entries.push((method, status, series.clone()));
        }
        map
    });
    series
}

/// The label of `method`: its name for the standard methods, `other` for any other.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts one durable write.
pub fn write(keyspace: &str, op: &'static str) {
    metrics::counter!(KV_WRITES, "keyspace" => keyspace.to_string(), "op" => op).increment(1);
}

/// Counts one time every connection slot was found taken.
pub fn connections_limited() {
    metrics::counter!(HTTP_CONNECTIONS_LIMITED).increment(1);
}

/// Counts one write refused as overload.
pub fn write_shed(keyspace: &str) {
    metrics::counter!(KV_WRITES_SHED, "keyspace" => keyspace.to_string()).increment(1);
}

/// Counts one idempotent replay.
pub fn idempotent_replay(keyspace: &str) {
    metrics::counter!(IDEMPOTENT_REPLAYS, "keyspace" => keyspace.to_string()).increment(1);
}

/// Counts expired keys.
pub fn expired(keyspace: &str, n: u64) {
    metrics::counter!(EXPIRED, "keyspace" => keyspace.to_string()).increment(n);
}

/// Counts replication bytes sent to `peer`.
pub fn repl_sent(peer: &str, bytes: u64) {
    metrics::counter!(REPL_SENT_BYTES, "peer" => peer.to_string()).increment(bytes);
}

/// Counts replication bytes received from `peer`.
pub fn repl_received(peer: &str, bytes: u64) {
    metrics::counter!(REPL_RECEIVED_BYTES, "peer" => peer.to_string()).increment(bytes);
}

/// Counts one applied remote entry.
pub fn repl_applied() {
    metrics::counter!(REPL_APPLIED).increment(1);
}

/// Records that ops written at `origin` at `written_ms` (their HLC times) were durably applied
/// here at `applied_ms` (this node's clock); a write that seems to come from the future counts
/// as no delay. One metric lookup for all of them.
pub fn repl_delay(origin: &str, written_ms: impl Iterator<Item = u64>, applied_ms: u64) {
    let h = metrics::histogram!(REPL_DELAY, "origin" => origin.to_string());
    for ms in written_ms {
        h.record(applied_ms.saturating_sub(ms) as f64 / 1000.0);
    }
}

/// Counts a catch-up by copy that succeeded (`ok`) or failed.
pub fn catch_up(ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(REPL_CATCH_UPS, "outcome" => outcome).increment(1);
}

/// Sets the link state of `peer`.
pub fn link_up(peer: &str, up: bool) {
    metrics::gauge!(REPL_LINK_UP, "peer" => peer.to_string()).set(if up { 1.0 } else { 0.0 });
}

/// Records whether `peer`'s topology differs from this node's.
pub fn topology_differs(peer: &str, differs: bool) {
    metrics::gauge!(REPL_TOPOLOGY_DIFFERS, "peer" => peer.to_string()).set(if differs {
        1.0
    } else {
        0.0
    });
}

/// Sets the unacknowledged ops and lag of `peer`.
pub fn peer_lag(peer: &str, unacked: u64, lag_seconds: f64) {
    metrics::gauge!(REPL_UNACKED, "peer" => peer.to_string()).set(unacked as f64);
    metrics::gauge!(REPL_LAG, "peer" => peer.to_string()).set(lag_seconds);
}

/// Counts what one garbage-collection pass removed.
pub fn gc_collected(oplog: usize, tombstones: usize, expired: usize) {
    metrics::counter!(GC_COLLECTED, "what" => "oplog").increment(oplog as u64);
    metrics::counter!(GC_COLLECTED, "what" => "tombstones").increment(tombstones as u64);
    metrics::counter!(GC_COLLECTED, "what" => "expired").increment(expired as u64);
}

/// Sets how many dead records waited for collection when a pass began (each up to 8,192).
pub fn gc_pending(tombstones: usize, expired: usize) {
    metrics::gauge!(GC_PENDING, "what" => "tombstones").set(tombstones as f64);
    metrics::gauge!(GC_PENDING, "what" => "expired").set(expired as f64);
}

/// Sets how many peers have not reported what they applied since this node started.
pub fn gc_peers_unheard(n: usize) {
    metrics::gauge!(GC_PEERS_UNHEARD).set(n as f64);
}

/// Counts a conflict.
pub fn conflict(keyspace: &str) {
    metrics::counter!(CONFLICTS, "keyspace" => keyspace.to_string()).increment(1);
}

/// Counts a sync write whose quorum was not confirmed in time.
pub fn quorum_timeout(keyspace: &str) {
    metrics::counter!(QUORUM_TIMEOUTS, "keyspace" => keyspace.to_string()).increment(1);
}

/// Counts a remote timestamp beyond the allowed clock offset.
pub fn clock_skew(origin: &str) {
    metrics::counter!(CLOCK_SKEW, "origin" => origin.to_string()).increment(1);
}

/// Counts records repaired by digest comparison.
pub fn digest_repairs(keyspace: &str, n: u64) {
    metrics::counter!(DIGEST_REPAIRS, "keyspace" => keyspace.to_string()).increment(n);
}

/// Counts `n` differing buckets a digest comparison left for a later one.
pub fn digest_deferred(keyspace: &str, n: u64) {
    metrics::counter!(DIGEST_BUCKETS_DEFERRED, "keyspace" => keyspace.to_string()).increment(n);
}

/// Counts one page of a digest comparison: `compared` keys' hashes fetched, `fetched` records.
pub fn digest_page(keyspace: &str, compared: u64, fetched: u64) {
    metrics::counter!(DIGEST_KEYS_COMPARED, "keyspace" => keyspace.to_string()).increment(compared);
    metrics::counter!(DIGEST_RECORDS_FETCHED, "keyspace" => keyspace.to_string())
        .increment(fetched);
}

/// Why a read was forwarded to another region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardReason {
    /// A `consistency=session` read whose token is not visible here.
    Session,
    /// A `consistency=strong` read of a key homed in another region.
    Strong,
}

impl ForwardReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardReason::Session => "session",
            ForwardReason::Strong => "strong",
        }
    }
}

/// How one forwarded read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// The target answered and its answer was relayed (`relayed`).
    Relayed,
    /// The target had not applied the session token either (`not_covered`).
    NotCovered,
    /// The target could not be reached, or did not answer in time (`unreachable`).
    Unreachable,
}

impl ForwardOutcome {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardOutcome::Relayed => "relayed",
            ForwardOutcome::NotCovered => "not_covered",
            ForwardOutcome::Unreachable => "unreachable",
        }
    }
}

/// Counts one read forwarded to another region.
pub fn read_forward(reason: ForwardReason, outcome: ForwardOutcome) {
    metrics::counter!(READ_FORWARDS, "reason" => reason.as_str(), "outcome" => outcome.as_str())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::Method;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::{HTTP_REQUESTS, request};
    use crate::testing::sample;

    /// Requests count under their route, method and status, and a method outside the standard
    /// ones under `other`.
    #[test]
    fn requests_count_by_route_method_and_status() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let odd = Method::from_bytes(b"BREW").expect("an extension method");
        for _ in 0..3 {
            request("/v1/kv/{keyspace}/{key}", &Method::GET, 200, Duration::ZERO);
        }
        request("/v1/kv/{keyspace}/{key}", &Method::GET, 404, Duration::ZERO);
        request("unmatched", &odd, 404, Duration::ZERO);
        let text = handle.render();
        let count = |route: &str, method: &str, status: &str| {
            let labels = [
                format!("route=\"{route}\""),
                format!("method=\"{method}\""),
                format!("status=\"{status}\""),
            ];
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            sample(&text, HTTP_REQUESTS, &labels)
        };
        assert_eq!(
            count("/v1/kv/{keyspace}/{key}", "GET", "200"),
            Some(3),
            "{text}"
        );
        assert_eq!(
            count("/v1/kv/{keyspace}/{key}", "GET", "404"),
            Some(1),
            "{text}"
        );
        assert_eq!(count("unmatched", "other", "404"), Some(1), "{text}");
        assert!(!text.contains("BREW"), "{text}");
    }
}
