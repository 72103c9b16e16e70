//! The source side: `GET /v1/repl/stream?from=<version vector>` streams, to an authenticated
//! peer, every op-log entry it lacks — of every origin but its own, so a write that reached only
//! this region before its origin died still reaches everyone — then keeps streaming new ones as
//! they commit. The op log is the queue: catch-up after a partition and live tailing are one
//! loop. A `Heads` frame (this node's applied version vector) precedes every batch when it has
//! changed and is sent each second on an idle stream: it is the peer's acknowledgement source
//! and keepalive. On version 3 streams a `Watermark` frame follows whenever this node took a
//! new one ([`super::watermark`]).
//!
//! The puller names the protocol versions it speaks in [`VERSIONS_HEADER`] (e.g. `1,2`); the
//! stream uses the newest one both speak — version 1 when the header is absent — and says which
//! in [`VERSION_HEADER`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meridian_core::config::Replication;
use meridian_core::record::Record;
use meridian_core::version::{Dot, VersionVector};
use meridian_core::wire::{
    Entry, Frame, FrameEncoder, FrameV1, LogBody, VERSIONS, decode_log_body,
};
use meridian_store::Table;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::state::Node;
use crate::{keys, metrics};

/// Most entries in one batch frame.
pub const BATCH_ENTRIES: usize = 512;
/// Interval of `Heads` frames on an idle stream.
pub const HEADS_EVERY: Duration = Duration::from_secs(1);

/// How long a peer's progress on a third region's writes may stall, while this node holds more
/// of them, before this node forwards them. A peer normally gets a region's writes from that
/// region itself; forwarding is for when it cannot (a cut link, a dead origin), and waiting for
/// a stall keeps every write from crossing the WAN twice.
pub const FORWARD_AFTER: Duration = Duration::from_secs(2);

/// Header carrying the puller's applied version vector: where the stream starts.
pub const FROM_HEADER: &str = "meridian-from";

/// Request header listing the protocol versions the puller speaks, comma-separated (`1,2`).
/// Absent: version 1 only. Entries this build does not know are ignored.
pub const VERSIONS_HEADER: &str = "meridian-repl-versions";

/// Response header naming the protocol version of the stream (`1`, `2` or `3`).
pub const VERSION_HEADER: &str = "meridian-repl-version";

/// Response header stating this node's replication terms (zones and keyspace definitions,
/// [`meridian_core::config::replication_terms`]) for the puller to compare with its own.
pub const TERMS_HEADER: &str = "meridian-topology-terms";

/// Header stating the sender's store incarnation ([`Node::incarnation`], decimal): on a
/// stream's answer, whose `Heads` frames it qualifies, and on a join's request.
pub const INCARNATION_HEADER: &str = "meridian-incarnation";

/// The longest [`TERMS_HEADER`] a node sends (well under the 400 KB hyper reads of a head).
const MAX_TERMS_BYTES: usize = 64 * 1024;

/// The newest protocol version both this build and the puller speak: the greatest entry of
/// [`VERSIONS_HEADER`] that is in [`VERSIONS`], else 1.
pub(crate) fn chosen_version(headers: &HeaderMap) -> u8 {
    headers
        .get_all(VERSIONS_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|v| v.trim().parse::<u8>().ok())
        .filter(|v| VERSIONS.contains(v))
        .max()
        .unwrap_or(1)
}

/// Authenticates a peer request; the region it is, or a 401 saying why not.
pub(crate) fn authenticate(node: &Node, headers: &HeaderMap) -> Result<String, ApiError> {
    let refuse = |why: String| {
        tracing::warn!(reason = %why, "refused a replication peer");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated_peer",
            format!("replication peer refused: {why}"),
            "peers must share this cluster's secret_file and agree on the time within 5 minutes",
        )
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let region = match &node.config().secret {
        Some(secret) => super::auth::verify(secret, given, node.wall_ms()).map_err(refuse)?,
        None => given
            .strip_prefix(super::auth::SCHEME)
            .and_then(|t| t.trim().split('.').nth(1))
            .map(str::to_string)
            .ok_or_else(|| refuse("no region named in the Authorization header".into()))?,
    };
    if region == node.region() || node.topology().region(&region).is_none() {
        return Err(refuse(format!(
            "`{region}` is not a peer region of this topology"
        )));
    }
    Ok(region)
}

/// `GET /v1/repl/stream` with `Meridian-From: <version vector token>` and optionally
/// `Meridian-Repl-Versions: 1,2`.
pub(crate) async fn stream(State(node): State<Node>, headers: HeaderMap) -> Response {
    let peer = match authenticate(&node, &headers) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let from = match crate::input::token_header(&headers, FROM_HEADER) {
        Ok(vv) => vv.unwrap_or_default(),
        Err(e) => return e.into_response(),
    };
    let version = chosen_version(&headers);
    // Stated only while it fits a header any peer reads (about 1,800 keyspaces); past that
    // the peer reports the comparison as unknown rather than failing the stream.
    let terms = Some(node.replication_terms())
        .filter(|t| t.len() <= MAX_TERMS_BYTES)
        .and_then(|t| axum::http::HeaderValue::from_str(t).ok());
    tracing::info!(%peer, from = %from.to_token(), version, "replication stream opened");
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(feed(node.clone(), peer, from, version, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = (
        [
            ("content-type", "application/x-meridian-repl".to_string()),
            (VERSION_HEADER, version.to_string()),
            (INCARNATION_HEADER, node.incarnation().to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response();
    if let Some(v) = terms {
        resp.headers_mut().insert(TERMS_HEADER, v);
    }
    resp
}

async fn feed(
    node: Node,
    peer: String,
    mut sent: VersionVector,
    version: u8,
    tx: mpsc::Sender<Bytes>,
) {
    let mut encoder = FrameEncoder::default();
    let mut encode = |message: FrameV1| encoder.encode(&Frame::of_version(version, message));
    let mut applied = node.applied();
    let mut last_heads: Option<VersionVector> = None;
    let mut last_mark = None;
    let mut progress = Progress::default();
    loop {
        // Mark the current state seen *before* reading the log: a commit after this point
        // wakes the wait below, so nothing waits a whole keepalive interval.
        let heads = applied.borrow_and_update().clone();
        let theirs = node
            .acked()
            .borrow()
            .get(&peer)
            .cloned()
            .unwrap_or_default();
        // What the peer reports having, it need not be sent.
        sent.merge(&theirs);
        let forward = progress.stalled(&node, &peer, &heads, &theirs, Instant::now());
        let own = node.region().to_string();
        let eligible = |origin: &str| origin == own || forward.iter().any(|f| f == origin);
        let batch = match collect(&node, &peer, &mut sent, BATCH_ENTRIES, eligible) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%peer, error = %e, "reading the op log for a peer failed");
                return;
            }
        };
        let idle = batch.is_empty();
        let mut frames = Vec::new();
        // Heads go first: they are the acknowledgements sync writes wait on, and must not queue
        // behind a batch the peer has to apply durably before it reads the next frame.
        if idle || last_heads.as_ref() != Some(&heads) {
            frames.push(encode(FrameV1::Heads(heads.clone())));
            last_heads = Some(heads);
        }
        let mark = node.watermarks().own();
        if version >= 3
            && mark != last_mark
            && let Some(m) = mark
        {
            frames.push(encode(FrameV1::Watermark {
                at: m.at,
                seq: m.seq,
            }));
            last_mark = mark;
        }
        if !idle {
            frames.push(encode(FrameV1::Batch(batch)));
        }
        for f in frames {
            let n = f.len() as u64;
            if tx.send(Bytes::from(f)).await.is_err() {
                tracing::info!(%peer, "replication stream closed by the peer");
                return;
            }
            metrics::repl_sent(&peer, n);
            node.link(&peer, |l| l.bytes_sent += n);
        }
        if idle {
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep(HEADS_EVERY) => {}
                _ = node.closed() => return,
            }
        }
    }
}

/// When the peer's applied counter of each third region last moved.
#[derive(Default)]
struct Progress {
    seen: BTreeMap<String, (u64, Instant)>,
}

impl Progress {
    /// Third regions whose writes this node should forward to the peer now: the peer lacks some
    /// this node has, and its counter has not moved for [`FORWARD_AFTER`].
    fn stalled(
        &mut self,
        node: &Node,
        peer: &str,
        ours: &VersionVector,
        theirs: &VersionVector,
        now: Instant,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for r in &node.topology().regions {
            let origin = r.name.as_str();
            if origin == peer || origin == node.region() {
                continue;
            }
            let at = theirs.get(origin);
            let entry = self.seen.entry(origin.to_string()).or_insert((at, now));
            if entry.0 != at {
                *entry = (at, now);
            }
            if ours.get(origin) > at && now.duration_since(entry.1) >= FORWARD_AFTER {
                out.push(origin.to_string());
            }
        }
        out
    }
}

/// The next entries `peer` lacks, of the origins `eligible` accepts, at most `max`, advancing
/// `sent`.
pub(crate) fn collect(
    node: &Node,
    peer: &str,
    sent: &mut VersionVector,
    max: usize,
    eligible: impl Fn(&str) -> bool,
) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for region in &node.topology().regions {
        let origin = region.name.as_str();
        if origin == peer || !eligible(origin) {
            continue;
        }
        let prefix = [origin.as_bytes(), &[0]].concat();
        let after = keys::oplog_key(origin, sent.get(origin));
        let room = max.saturating_sub(out.len());
        if room == 0 {
            break;
        }
        let rows = node.store().scan(Table::OpLog, &prefix, Some(&after), room);
        for (k, v) in rows.map_err(|e| e.to_string())? {
            let Some((_, seq)) = keys::parse_oplog_key(&k) else {
                break;
            };
            if seq != sent.get(origin) + 1 {
                break;
            }
            let body = decode_log_body(&v).map_err(|e| e.to_string())?;
            let Some(body) = for_peer(node, origin, body, peer) else {
                break;
            };
            out.push(Entry {
                origin: origin.to_string(),
                seq,
                body,
            });
            sent.add(&Dot {
                origin: origin.to_string(),
                counter: seq,
            });
        }
    }
    Ok(out)
}

/// What of an entry `peer` may receive: the write itself, a bare `Skip` when the key may not be
/// held there, or `None` when this node cannot serve it (a write the peer may hold, which this
/// node itself only knows as a skip — the peer will get it from a region that holds it).
fn for_peer(node: &Node, origin: &str, body: LogBody, peer: &str) -> Option<LogBody> {
    match body {
        LogBody::Skip { allowed } => {
            (!allowed.iter().any(|r| r == peer)).then_some(LogBody::Skip { allowed })
        }
        LogBody::Op(p) => {
            let Some(ks) = node.topology().keyspace(&p.keyspace) else {
                return Some(LogBody::Op(p));
            };
            if ks.replication == Replication::Local {
                return Some(LogBody::Skip {
                    allowed: vec![origin.to_string()],
                });
            }
            if ks.residency.is_none() {
                return Some(LogBody::Op(p));
            }
            let home = Record::decode(&p.delta).ok().and_then(|r| r.home);
            let allowed = node
                .topology()
                .regions_for_key(ks, home.as_deref().unwrap_or(origin));
            match allowed {
                Some(list) if !list.contains(&peer) => Some(LogBody::Skip {
                    allowed: list.into_iter().map(str::to_string).collect(),
                }),
                _ => Some(LogBody::Op(p)),
            }
        }
    }
}
