//! The receiving side's link to one peer: keeps a stream open from the peer, applies what
//! arrives, reconnects with backoff, and records link state and bytes for status and metrics.

use std::time::Duration;

use meridian_core::wire::{FrameDecoder, FrameV1, VERSIONS};

use crate::metrics;

use super::serve::{FROM_HEADER, VERSION_HEADER, VERSIONS_HEADER};
use crate::state::Node;

/// First wait before reconnecting a failed link; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A stream silent for this long (the peer sends heads every second) is dead.
pub const SILENCE: Duration = Duration::from_secs(5);

/// Runs the link to `peer` at `url` until the task is aborted.
pub(crate) async fn run(node: Node, peer: String, url: String) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot build the replication client");
            return;
        }
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        node.link(&peer, |l| l.state = "connecting");
        let result = pull(&node, &client, &peer, &url, &mut backoff).await;
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

async fn pull(
    node: &Node,
    client: &reqwest::Client,
    peer: &str,
    url: &str,
    backoff: &mut Duration,
) -> Result<(), String> {
    let from = node.applied().borrow().to_token();
    let versions: Vec<String> = VERSIONS.iter().map(u8::to_string).collect();
    let mut req = client
        .get(format!("{url}/v1/repl/stream"))
        .header(FROM_HEADER, from)
        .header(VERSIONS_HEADER, versions.join(","));
    let auth = super::auth_header(node);
    req = req.header("authorization", auth);
    let mut resp = req.send().await.map_err(|e| format!("connect: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("peer answered {status}: {body}"));
    }
    // A peer that does not name the version predates negotiation: version 1.
    let version = resp
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u8>().ok())
        .unwrap_or(1);
    tracing::info!(%peer, version, "replication link up");
    node.link(peer, |l| {
        l.state = "up";
        l.last_error = None;
        l.wire_version = Some(version);
    });
    metrics::link_up(peer, true);
    *backoff = MIN_BACKOFF;
    let mut decoder = FrameDecoder::default();
    loop {
        let chunk = tokio::time::timeout(SILENCE, resp.chunk())
            .await
            .map_err(|_| format!("no frame for {} s", SILENCE.as_secs()))?
            .map_err(|e| format!("read: {e}"))?;
        let Some(chunk) = chunk else { return Ok(()) };
        metrics::repl_received(peer, chunk.len() as u64);
        node.link(peer, |l| l.bytes_received += chunk.len() as u64);
        decoder.push(&chunk);
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            match frame.into_message() {
                FrameV1::Batch(entries) => {
                    let applied = super::apply::apply_batch(node, entries).await?;
                    for c in applied.changes {
                        node.publish_change(c);
                    }
                    if let Some(origin) = applied.gap {
                        return Err(format!("gap in the entries of {origin}; resyncing"));
                    }
                }
                FrameV1::Heads(vv) => node.peer_heads(peer, &vv),
            }
        }
    }
}
