//! Replication between regions (DESIGN §2 "Replication"): every node pulls, from every peer,
//! the op-log entries it lacks over a long-lived authenticated HTTP stream, applies them
//! durably, and tells its peers what it has applied in the `Heads` frames of the streams they
//! pull. Those heads are the acknowledgements that `sync` writes wait for.

mod apply;
pub mod auth;
pub mod catchup;
pub mod dial;
pub mod digest;
pub mod gc;
pub mod join;
mod pull;
mod serve;
pub mod watermark;

use std::ops::ControlFlow;

use axum::http::StatusCode;
use meridian_core::config::Keyspace;

use crate::error::ApiError;
use crate::metrics;
use crate::state::Node;

pub(crate) use digest::{digest, hashes, records};
pub(crate) use join::{copy, heads};
pub(crate) use serve::stream;

/// The base URL of every peer: `--peer` overrides, else the region's `node` URL.
pub fn peer_urls(node: &Node) -> Vec<(String, String)> {
    node.topology()
        .regions
        .iter()
        .filter(|r| r.name != node.region())
        .map(|r| {
            let url = node
                .config()
                .peer_urls
                .get(&r.name)
                .cloned()
                .unwrap_or_else(|| r.node.trim_end_matches('/').to_string());
            (r.name.clone(), url)
        })
        .collect()
}

/// The `Authorization` header this node presents to its peers.
pub(crate) fn auth_header(node: &Node) -> String {
    match &node.config().secret {
        Some(secret) => auth::header(secret, node.region(), node.wall_ms()),
        None => format!("{} v1.{}.0.", auth::SCHEME, node.region()),
    }
}

/// Starts a link to every peer region, dialing through `background.dialer`, and the digest
/// comparison as often as `background.digest_every` says; the tasks run until aborted.
pub fn start(node: &Node, background: &crate::Background) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = peer_urls(node)
        .into_iter()
        .map(|(peer, url)| {
            let dialer = std::sync::Arc::clone(&background.dialer);
            tokio::spawn(pull::run(node.clone(), peer, url, dialer))
        })
        .collect();
    tasks.push(tokio::spawn(catchup::run(
        node.clone(),
        std::sync::Arc::clone(&background.dialer),
    )));
    if let Some(every) = background.digest_every {
        let dialer = std::sync::Arc::clone(&background.dialer);
        tasks.push(tokio::spawn(digest::run(node.clone(), every, dialer)));
    }
    tasks
}

/// How often a node compares digests with one of its peers (in turn).
pub const DIGEST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until `quorum` regions allowed to hold the key (this one included) have durably
/// applied this region's write number `seq`, at most the keyspace's `sync_timeout`. On timeout
/// the write is durable here and will still replicate, but the quorum is not confirmed: 503
/// `quorum_unavailable`, outcome unknown, safe to retry with the same Idempotency-Key.
pub async fn wait_quorum(
    node: &Node,
    keyspace: &Keyspace,
    home: Option<&str>,
    seq: u64,
) -> Result<(), ApiError> {
    let quorum = keyspace.quorum.unwrap_or(1);
    if quorum <= 1 {
        return Ok(());
    }
    let region = node.region().to_string();
    let peers: Vec<String> = match node
        .topology()
        .regions_for_key(keyspace, home.unwrap_or(&region))
    {
        Some(list) => list.into_iter().map(str::to_string).collect(),
        None => node
            .topology()
            .regions
            .iter()
            .map(|r| r.name.clone())
            .collect(),
    };
    let peers: Vec<String> = peers.into_iter().filter(|p| *p != region).collect();
    let needed = quorum - 1;
    let mut acked = node.acked();
    let reached =
        |m: &std::collections::BTreeMap<String, meridian_core::version::VersionVector>| {
            peers
                .iter()
                .filter(|p| m.get(*p).is_some_and(|vv| vv.get(&region) >= seq))
                .count()
                >= needed
        };
    let waited = tokio::time::timeout(keyspace.sync_timeout, acked.wait_for(reached)).await;
    if matches!(waited, Ok(Ok(_))) {
        return Ok(());
    }
    metrics::quorum_timeout(&keyspace.name);
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "quorum_unavailable",
        format!(
            "the write is durable in {region} but {needed} more of [{}] did not confirm it within {}; the outcome is unknown",
            peers.join(", "),
            meridian_core::config::format_duration(keyspace.sync_timeout)
        ),
        "retry with the same Idempotency-Key: it is safe, and answers once the quorum is confirmed",
    ))
}

/// One peer as `/v1/admin/status` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    /// The link as this node sees it.
    #[serde(flatten)]
    pub link: crate::state::PeerLink,
    /// Ops of this region the peer has not acknowledged.
    pub unacked_ops: u64,
    /// Seconds since the oldest unacknowledged op was written (0 when none).
    pub lag_seconds: f64,
    /// What the peer last said it has applied.
    pub applied: String,
    /// The peer's confirmed watermark, HLC milliseconds: every write it made before that time
    /// is applied here (`None`: none yet). Expired maps, sets, counters and mvregisters are
    /// reset once every peer's has passed their expiry.
    pub watermark_ms: Option<u64>,
}

/// Status of every peer; also refreshes the lag and unacked gauges.
pub fn peer_status(node: &Node) -> std::collections::BTreeMap<String, PeerStatus> {
    let links = node.links();
    let acked = node.acked().borrow().clone();
    let own = node.applied().borrow().get(node.region());
    let now_ms = node.now().millis();
    node.topology()
        .regions
        .iter()
        .filter(|r| r.name != node.region())
        .map(|r| {
            let vv = acked.get(&r.name).cloned().unwrap_or_default();
            let done = vv.get(node.region());
            let unacked = own.saturating_sub(done);
            let lag_seconds = if unacked == 0 {
                0.0
            } else {
                oldest_unacked_ms(node, done + 1)
                    .map(|ms| now_ms.saturating_sub(ms) as f64 / 1000.0)
                    .unwrap_or(0.0)
            };
            metrics::peer_lag(&r.name, unacked, lag_seconds);
            let status = PeerStatus {
                link: links.get(&r.name).cloned().unwrap_or_default(),
                unacked_ops: unacked,
                lag_seconds,
                applied: vv.to_token(),
                watermark_ms: node.watermarks().confirmed(&r.name).map(|t| t.millis()),
            };
            (r.name.clone(), status)
        })
        .collect()
}

/// HLC milliseconds of this region's write number `seq`, from its op log — or of the first
/// write after it, among the next few entries, when it is the reset of an expired record (stamped
/// at the expiry, not when it was made; see [`gc`]).
fn oldest_unacked_ms(node: &Node, seq: u64) -> Option<u64> {
    let prefix = [node.region().as_bytes(), &[0]].concat();
    let from = crate::keys::oplog_key(node.region(), seq.saturating_sub(1));
    let (mut found, mut looked) = (None, 0);
    let read = node.store().scan_each(
        meridian_store::Table::OpLog,
        &prefix,
        Some(&from),
        |_, bytes| {
            looked += 1;
            found = stamped_ms(bytes);
            if found.is_some() || looked == 64 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    read.ok().and(found)
}

/// The HLC milliseconds an op-log entry's write was stamped at, unless it is a skip or a reset
/// of an expired record (stamped at the expiry).
fn stamped_ms(entry: &[u8]) -> Option<u64> {
    match meridian_core::wire::decode_log_body(entry).ok()? {
        meridian_core::wire::LogBody::Op(p) => meridian_core::record::Record::decode(&p.delta)
            .ok()
            .filter(|r| !r.version.origin.is_empty())
            .map(|r| r.version.ts.millis()),
        meridian_core::wire::LogBody::Skip { .. } => None,
    }
}

/// One delivery from `source` to `dest` without the network: at most `max_entries` of the
/// entries `dest` lacks, of every origin (a stream waits for a stall before forwarding a third
/// region's writes — a bandwidth choice, not a correctness one), residency-filtered, applied durably
/// at `dest`, then `source`'s heads recorded at `dest` as the stream's next `Heads` frame would
/// be — possibly ahead of what was delivered, as on a real stream with more batches pending —
/// and its watermark, if it took one.
/// Returns how many entries moved. This is the seam deterministic simulations drive; the links
/// in [`start`] do the same over HTTP.
pub async fn exchange(source: &Node, dest: &Node, max_entries: usize) -> Result<usize, String> {
    let mut sent = dest.applied().borrow().clone();
    let entries = serve::collect(source, dest.region(), &mut sent, max_entries, |_| true)?;
    let moved = entries.len();
    if moved > 0 {
        let applied = apply::apply_batch(dest, entries).await?;
        for c in applied.changes {
            dest.publish_change(c);
        }
        if let Some(origin) = applied.gap {
            return Err(format!("gap in the entries of {origin}"));
        }
    }
    let heads = source.applied().borrow().clone();
    dest.peer_heads(source.region(), Some(source.incarnation()), &heads);
    if let Some(mark) = source.watermarks().own() {
        dest.watermarks().report(source.region(), mark);
    }
    Ok(moved)
}
