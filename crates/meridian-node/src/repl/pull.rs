//! The receiving side's link to one peer: keeps a stream open from the peer, applies what
//! arrives, reconnects with backoff, and records link state and bytes for status and metrics.
//!
//! Reading and applying run side by side: a reader task decodes frames as they arrive (and
//! records the peer's heads at once), the link applies batches. While one apply commits, the
//! batches that arrive queue up and the next apply takes all of them in one transaction, so a
//! slow commit delays what follows by one commit, not by one commit per frame.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use meridian_core::wire::{Entry, FrameDecoder, FrameV1, VERSIONS};
use tokio::sync::mpsc;

use crate::metrics;

use super::dial::Dialer;
use super::serve::{
    FROM_HEADER, INCARNATION_HEADER, TERMS_HEADER, VERSION_HEADER, VERSIONS_HEADER,
};
use crate::state::Node;

/// First wait before reconnecting a failed link; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A stream silent for this long (the peer sends heads every second) is dead.
pub const SILENCE: Duration = Duration::from_secs(5);
/// Decoded batches the reader may hold before it stops reading (and TCP pushes back).
pub const QUEUED_BATCHES: usize = 64;
/// Most entries one apply takes from the queue; the rest wait for the next apply.
pub const MAX_APPLY_ENTRIES: usize = 4096;

/// Runs the link to `peer` at `url`, dialing through `dialer`, until the task is aborted.
pub(crate) async fn run(node: Node, peer: String, url: String, dialer: Arc<dyn Dialer>) {
    node.joined().await;
    let mut backoff = MIN_BACKOFF;
    loop {
        node.link(&peer, |l| l.state = "connecting");
        let result = pull(&node, dialer.as_ref(), &peer, &url, &mut backoff).await;
        let why = match result {
            Ok(()) => "the stream ended".to_string(),
            Err(e) => e,
        };
        tracing::warn!(%peer, %url, reason = %why, retry_in = ?backoff, "replication link down");
        node.link(&peer, |l| {
            l.state = "down";
            l.last_error = Some(why);
        });
        metrics::link_up(&peer, false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Where a peer's base URL points: `host:port` to dial and the path the API is under.
pub(super) struct Target {
    pub(super) authority: String,
    pub(super) base_path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`; the port defaults to 80. Links speak plain HTTP/1.1.
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("peer URL `{url}` is invalid: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("peer URL `{url}` is not http://"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("peer URL `{url}` names no host"))?;
        Ok(Target {
            authority: format!("{host}:{}", uri.port_u16().unwrap_or(80)),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// A task that ends with the link (the connection's driver, the frame reader): aborted when
/// the link's attempt returns.
pub(super) struct LinkTask(pub(super) tokio::task::JoinHandle<()>);

impl Drop for LinkTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn pull(
    node: &Node,
    dialer: &dyn Dialer,
    peer: &str,
    url: &str,
    backoff: &mut Duration,
) -> Result<(), String> {
    // Subscribed before the heads are read: a catch-up after this reopens the link.
    let mut resyncs = node.resyncs();
    let from = node.applied().borrow().to_token();
    let versions: Vec<String> = VERSIONS.iter().map(u8::to_string).collect();
    let target = Target::parse(url).map_err(|e| format!("connect: {e}"))?;
    let req = Request::get(format!("{}/v1/repl/stream", target.base_path))
        .header(HOST, &target.authority)
        .header(FROM_HEADER, from)
        .header(VERSIONS_HEADER, versions.join(","))
        .header(AUTHORIZATION, super::auth_header(node))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("connect: {e}"))?;
    let io = dialer
        .dial(&target.authority)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _conn = LinkTask(tokio::spawn(async move {
        // The link notices a failed connection through the request or the body.
        let _ = conn.await;
    }));
    // A peer answers the headers at once; one that stays silent this long (its host gone, or
    // the answer lost on a path that broke after the connection opened) is dead, as is a
    // silent stream below. Unbounded, the link would wait for it forever.
    let resp = tokio::time::timeout(SILENCE, sender.send_request(req))
        .await
        .map_err(|_| format!("no answer for {} s", SILENCE.as_secs()))?
        .map_err(|e| format!("connect: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = tokio::time::timeout(SILENCE, resp.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(format!("peer answered {status}: {body}"));
    }
    // A peer that does not name the version predates negotiation: version 1.
    let version = resp
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u8>().ok())
        .unwrap_or(1);
    let topology = topology_of(node, peer, resp.headers());
    // A build before incarnations states none: its heads only ever add up.
    let incarnation = resp
        .headers()
        .get(INCARNATION_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = resp.into_body();
    tracing::info!(%peer, version, "replication link up");
    node.link(peer, |l| {
        l.state = "up";
        l.last_error = None;
        l.wire_version = Some(version);
        l.topology = topology;
    });
    metrics::link_up(peer, true);
    *backoff = MIN_BACKOFF;
    let (queue, mut batches) = mpsc::channel(QUEUED_BATCHES);
    let _reader = LinkTask(tokio::spawn(read(
        node.clone(),
        peer.to_string(),
        incarnation,
        body,
        queue,
    )));
    loop {
        let first = tokio::select! {
            batch = batches.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
            _ = resyncs.changed() => {
                return Err("caught up by copy from a peer; reopening from the new heads".into());
            }
        };
        let mut entries = first?;
        let mut ended = None;
        while entries.len() < MAX_APPLY_ENTRIES {
            match batches.try_recv() {
                Ok(Ok(more)) => entries.extend(more),
                Ok(Err(e)) => {
                    ended = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        let applied = super::apply::apply_batch(node, entries).await?;
        for c in applied.changes {
            node.publish_change(c);
        }
        if let Some(origin) = applied.gap {
            return Err(format!("gap in the entries of {origin}; resyncing"));
        }
        if let Some(e) = ended {
            return Err(e);
        }
    }
    Ok(())
}

/// How `peer`'s topology, as its stream's [`TERMS_HEADER`] states it, compares with this
/// node's: recorded in the metric, and a warning naming each difference when there is one.
/// `None` when the peer states no terms (a build before them).
fn topology_of(node: &Node, peer: &str, headers: &hyper::HeaderMap) -> Option<String> {
    let theirs = headers.get(TERMS_HEADER)?;
    let compared = theirs
        .to_str()
        .map_err(|_| "not text".to_string())
        .and_then(|t| meridian_core::config::compare_terms(node.replication_terms(), t));
    let described = match compared {
        Ok(diff) if diff.is_empty() => {
            metrics::topology_differs(peer, false);
            return Some(diff.to_string());
        }
        Ok(diff) => diff.to_string(),
        Err(e) => format!("unreadable terms ({e})"),
    };
    metrics::topology_differs(peer, true);
    tracing::warn!(
        %peer,
        differences = %described,
        "the peer's topology differs from this node's: replicated writes of a keyspace \
         defined differently may merge differently (a type change stops replication from \
         the peer at its first such write); give every region the same topology file"
    );
    Some(described)
}

/// Reads `body`'s frames as they arrive: records the peer's heads at once and queues each
/// batch, in order, for the link to apply. Queues the error that ends the stream, if any;
/// a stream that ends cleanly just closes the queue.
async fn read(
    node: Node,
    peer: String,
    incarnation: Option<u64>,
    mut body: Incoming,
    queue: mpsc::Sender<Result<Vec<Entry>, String>>,
) {
    let mut decoder = FrameDecoder::default();
    let failed = loop {
        let frame = match tokio::time::timeout(SILENCE, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => break format!("read: {e}"),
            Ok(None) => return,
            Err(_) => break format!("no frame for {} s", SILENCE.as_secs()),
        };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        metrics::repl_received(&peer, chunk.len() as u64);
        node.link(&peer, |l| l.bytes_received += chunk.len() as u64);
        decoder.push(&chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match frame.into_message() {
                    FrameV1::Batch(entries) => {
                        if queue.send(Ok(entries)).await.is_err() {
                            return;
                        }
                    }
                    FrameV1::Heads(vv) => node.peer_heads(&peer, incarnation, &vv),
                    FrameV1::Watermark { at, seq } => node
                        .watermarks()
                        .report(&peer, super::watermark::Mark { at, seq }),
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = queue.send(Err(e.to_string())).await;
                    return;
                }
            }
        }
    };
    let _ = queue.send(Err(failed)).await;
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn a_peer_url_gives_the_address_to_dial_and_the_base_path() {
        let t = Target::parse("http://10.0.0.7:7900").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("10.0.0.7:7900", "")
        );
        let t = Target::parse("http://relay.example/eu/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("relay.example:80", "/eu")
        );
        let t = Target::parse("http://[::1]:7901").unwrap();
        assert_eq!(t.authority, "[::1]:7901");
    }

    #[test]
    fn a_peer_url_that_is_not_plain_http_is_refused() {
        for url in ["https://peer:7900", "peer:7900", "http://", "not a url"] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }
}
