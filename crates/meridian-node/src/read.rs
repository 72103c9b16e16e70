//! Read consistency beyond `local` (DESIGN §2). A `session` read waits, at most
//! `[limits] session_wait`, until every write its `Meridian-Session` token names is applied here,
//! then is forwarded to a region that has them: the token's origins each hold at least their own
//! writes. A `strong` read of a `writer = "home"` keyspace is answered by the key's home region,
//! the only region that writes the key, so it sees every acknowledged write and agrees with
//! compare-and-set. A forwarded read is never forwarded again, each forward is bounded by
//! [`FORWARD_TIMEOUT`], and nothing is retried blindly: a read is answered by a region that can
//! vouch for it, or refused (503) — never served stale.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use meridian_core::config::{Keyspace, Writer};
use meridian_core::record::Record;
use meridian_core::version::VersionVector;
use meridian_store::Table;

use crate::error::ApiError;
use crate::forward::{self, Relayed};
use crate::metrics::{self, ForwardOutcome, ForwardReason};
use crate::state::Node;
use crate::{input, keys, write};

/// How long one forwarded read may take, connection and whole answer included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Who answers a read.
#[derive(Debug)]
pub enum Answer {
    /// This region: its state gives the consistency asked for.
    Here,
    /// Another region, whose answer is relayed as it is.
    There(Relayed),
}

/// The stored record of `key` in keyspace `ks`, live or not; `None` when there is none.
pub fn load(node: &Node, ks: &str, key: &str) -> Result<Option<Record>, ApiError> {
    let Some(bytes) = node.store().get(Table::Data, &keys::data_key(ks, key))? else {
        return Ok(None);
    };
    Record::decode(&bytes)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("stored record of `{key}` is unreadable: {e}")))
}

/// The key's home as a write made here would see it: the live record's home, else
/// [`write::new_key_home`], else this region.
fn key_home(
    node: &Node,
    ks: &Keyspace,
    key: &str,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let now = node.now();
    let stored = load(node, &ks.name, key)?
        .filter(|r| r.is_live(now))
        .and_then(|r| r.home);
    if let Some(home) = stored {
        return Ok(home);
    }
    let named = input::home_header(headers, node.topology())?;
    Ok(write::new_key_home(node, ks, key, named).unwrap_or_else(|| node.region().to_string()))
}

/// Why a transport failure happened, in a few words, with its causes.
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {}",
            meridian_core::config::format_duration(FORWARD_TIMEOUT)
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// A `strong` read: answered here when this region is the key's home, else forwarded to the
/// home. Refused with 409 `consistency_not_supported` on a multi-writer keyspace (no region is
/// an authority there); 421 `wrong_region` naming the home when the read was already forwarded
/// once; 503 `home_unavailable` naming the home when it cannot be reached in time.
pub async fn strong(
    node: &Node,
    ks: &Keyspace,
    key: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Answer, ApiError> {
    if ks.writer != Writer::Home {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "consistency_not_supported",
            format!(
                "keyspace `{}` takes writes in every region (writer = \"any\"), so no single region has every acknowledged write and no read of it can be strong",
                ks.name
            ),
            "set writer = \"home\" on the keyspace to get strong reads from each key's home region, or read with consistency=session and the Meridian-Session token of your writes",
        ));
    }
    let home = key_home(node, ks, key, headers)?;
    if home == node.region() {
        return Ok(Answer::Here);
    }
    if forward::is_forwarded(headers) {
        return Err(write::wrong_region(ks, &home));
    }
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "home_unavailable",
            format!(
                "a strong read is answered by the key's home region `{home}`, which cannot be reached: {why}"
            ),
            format!(
                "retry, read at region `{home}` directly, or read with consistency=session or local"
            ),
        )
        .with_header(input::names::HOME, home.clone())
    };
    let Some(base) = forward::peer_url(node, &home) else {
        return Err(unavailable("it is not a peer of this node".into()));
    };
    let sent = forward::replay(
        node,
        &base,
        Method::GET,
        uri,
        headers,
        Bytes::new(),
        FORWARD_TIMEOUT,
    )
    .await;
    match sent {
        Ok(relayed) => {
            metrics::read_forward(ForwardReason::Strong, ForwardOutcome::Relayed);
            Ok(Answer::There(relayed))
        }
        Err(e) => {
            metrics::read_forward(ForwardReason::Strong, ForwardOutcome::Unreachable);
            tracing::warn!(%home, error = %e, "strong read: the key's home cannot be reached");
            Err(unavailable(reason(&e)))
        }
    }
}

/// Whether every write `token` names is applied here, waiting at most `wait` for it.
async fn visible_within(node: &Node, token: &VersionVector, wait: Duration) -> bool {
    if node.applied().borrow().dominates(token) {
        return true;
    }
    if wait.is_zero() {
        return false;
    }
    let mut applied = node.applied();
    let waited = tokio::time::timeout(wait, applied.wait_for(|vv| vv.dominates(token))).await;
    matches!(waited, Ok(Ok(_)))
}

/// The origins named in `token` whose writes `applied` lacks, other than `region` itself.
pub fn missing_origins<'a>(
    token: &'a VersionVector,
    applied: &VersionVector,
    region: &str,
) -> Vec<&'a str> {
    token
        .iter()
        .filter(|(origin, counter)| *origin != region && applied.get(origin) < *counter)
        .map(|(origin, _)| origin)
        .collect()
}

/// Where a session read goes when `token` is not visible here, in token order: each of the
/// [`missing_origins`] that is a peer (`peers`: region and base URL) and, for a pinned key, one
/// of the regions `allowed` to hold it — a read is never forwarded where the key may not be.
pub fn session_targets(
    token: &VersionVector,
    applied: &VersionVector,
    region: &str,
    peers: &[(String, String)],
    allowed: Option<&[&str]>,
) -> Vec<(String, String)> {
    missing_origins(token, applied, region)
        .into_iter()
        .filter(|origin| allowed.is_none_or(|a| a.contains(origin)))
        .filter_map(|origin| peers.iter().find(|(p, _)| p == origin).cloned())
        .collect()
}

fn not_visible(node: &Node, token: &VersionVector, wait: Duration, hint: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "session_not_visible",
        format!(
            "the writes of this session ({}) are not visible in region `{}` after {}",
            token.to_token(),
            node.region(),
            meridian_core::config::format_duration(wait)
        ),
        hint,
    )
}

/// A `session` read: answered here once every write the token names is applied here (waiting
/// up to `[limits] session_wait`); otherwise forwarded, one after the other, to the token's
/// origins this region lacks that may hold the key, and the first answer that is not
/// `session_not_visible` is relayed. A forwarded read is checked at once and never forwarded
/// again. 503 `session_not_visible` when no region could vouch for the token; its hint names the
/// regions tried and why each failed.
pub async fn session(
    node: &Node,
    ks: &Keyspace,
    key: &str,
    uri: &Uri,
    headers: &HeaderMap,
    token: &VersionVector,
) -> Result<Answer, ApiError> {
    let forwarded = forward::is_forwarded(headers);
    let wait = if forwarded {
        Duration::ZERO
    } else {
        node.topology().limits.session_wait
    };
    if visible_within(node, token, wait).await {
        return Ok(Answer::Here);
    }
    if forwarded {
        return Err(not_visible(
            node,
            token,
            wait,
            "this read was forwarded here and is not forwarded again; the forwarding region tries the next one".into(),
        ));
    }
    let home = key_home(node, ks, key, headers)?;
    let allowed = node.topology().regions_for_key(ks, &home);
    let applied = node.applied().borrow().clone();
    let peers = crate::repl::peer_urls(node);
    let targets = session_targets(token, &applied, node.region(), &peers, allowed.as_deref());
    let mut tried = Vec::new();
    for (region, base) in targets {
        let sent = forward::replay(
            node,
            &base,
            Method::GET,
            uri,
            headers,
            Bytes::new(),
            FORWARD_TIMEOUT,
        )
        .await;
        match sent {
            Ok(r)
                if r.status == StatusCode::SERVICE_UNAVAILABLE
                    && r.error_code().as_deref() == Some("session_not_visible") =>
            {
                metrics::read_forward(ForwardReason::Session, ForwardOutcome::NotCovered);
                tried.push(format!(
                    "`{region}` (has not applied the whole token either)"
                ));
            }
            Ok(r) => {
                metrics::read_forward(ForwardReason::Session, ForwardOutcome::Relayed);
                return Ok(Answer::There(r));
            }
            Err(e) => {
                metrics::read_forward(ForwardReason::Session, ForwardOutcome::Unreachable);
                tracing::warn!(%region, error = %e, "session read: forwarding failed");
                tried.push(format!("`{region}` ({})", reason(&e)));
            }
        }
    }
    // Replication may have caught up while the forwards failed.
    if node.applied().borrow().dominates(token) {
        return Ok(Answer::Here);
    }
    let hint = if tried.is_empty() {
        let missing = missing_origins(token, &applied, node.region())
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "the missing writes were made in {missing}, where this key may not be held (residency) or which is not a peer, so the read was not forwarded; retry later, or read with consistency=local"
        )
    } else {
        format!(
            "tried forwarding to {}; retry later, or read with consistency=local",
            tried.join(", ")
        )
    };
    Err(not_visible(node, token, wait, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(token: &str) -> VersionVector {
        VersionVector::parse_token(token).expect("test token")
    }

    fn peers() -> Vec<(String, String)> {
        ["us", "eu", "ap"]
            .iter()
            .map(|r| (r.to_string(), format!("http://{r}")))
            .collect()
    }

    #[test]
    fn only_origins_whose_writes_are_missing_are_targets() {
        let token = vv("ap:2,eu:5,us:9");
        let applied = vv("ap:2,eu:4,us:1");
        let names = |t: Vec<(String, String)>| t.into_iter().map(|(r, _)| r).collect::<Vec<_>>();
        assert_eq!(
            names(session_targets(&token, &applied, "ap", &peers(), None)),
            ["eu", "us"]
        );
        assert_eq!(missing_origins(&token, &vv("eu:5,us:9"), "eu"), ["ap"]);
        assert!(
            session_targets(&token, &vv("eu:5,us:9"), "ap", &peers(), None).is_empty(),
            "this region's own writes are never looked for elsewhere"
        );
    }

    #[test]
    fn pinned_keys_are_only_forwarded_to_allowed_regions() {
        let token = vv("eu:5,us:9");
        let targets = session_targets(&token, &vv(""), "ap", &peers(), Some(&["eu", "ap"]));
        assert_eq!(targets, [("eu".to_string(), "http://eu".to_string())]);
        assert!(session_targets(&token, &vv(""), "ap", &peers(), Some(&["ap"])).is_empty());
    }

    #[test]
    fn origins_that_are_not_peers_are_skipped() {
        let targets = session_targets(&vv("gone:3,eu:1"), &vv(""), "ap", &peers(), None);
        assert_eq!(targets, [("eu".to_string(), "http://eu".to_string())]);
    }
}
