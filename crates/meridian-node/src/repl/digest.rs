//! Digest anti-entropy: catches silent divergence the op log cannot (a record that differs under
//! the same version — a bit flip, a restored backup, a bug). Each keyspace is cut into
//! [`BUCKETS`] buckets by key hash; a bucket's digest is the XOR of a hash of every (key,
//! record) in it, so it does not depend on order. Where a peer's buckets differ, this node
//! fetches the peer's records of all of them (pages of at most [`PAGE_BYTES`], each one scan)
//! and merges them in — merging is idempotent and commutative, so a repair never loses a write,
//! and the peer repairs itself the same way. Scans stream over a snapshot on the blocking pool:
//! memory stays bounded by a page whatever the keyspace's size, and no runtime worker stalls.
//! Keyspaces that are pinned (`residency`) or `local` are never digested: no digest of a pinned
//! key ever leaves its zone.

use std::ops::ControlFlow;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meridian_core::config::{Keyspace, Replication};
use meridian_core::record::Record;
use meridian_store::{KeyValue, Table};

use crate::error::ApiError;
use crate::state::Node;
use crate::{keys, metrics};

/// Buckets per keyspace.
pub const BUCKETS: usize = 256;
/// Most record bytes (keys and values) in one answer of the buckets endpoint; a page that
/// reaches it says where the next one starts.
pub const PAGE_BYTES: usize = 4 << 20;
/// Most pages one comparison fetches per keyspace; the next comparison goes on from scratch.
pub const MAX_PAGES: usize = 1024;
/// Response header of a page cut at [`PAGE_BYTES`]: the last key sent (base64url), to be
/// given back as `?after=` for the next page.
pub const MORE_HEADER: &str = "meridian-more-after";

/// Whether a keyspace takes part in digest comparison.
pub fn digested(ks: &Keyspace) -> bool {
    ks.residency.is_none() && ks.replication != Replication::Local
}

fn bucket_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % BUCKETS as u64) as usize
}

fn entry_hash(key: &[u8], record: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&[&(key.len() as u64).to_le_bytes(), key, record].concat())
}

/// The bucket digests of a keyspace at this node, from one streaming scan (call it from a
/// blocking context: it reads the whole keyspace).
pub fn digests(node: &Node, keyspace: &str) -> Result<Vec<u64>, String> {
    let mut out = vec![0u64; BUCKETS];
    let prefix = keys::data_key(keyspace, "");
    node.store()
        .scan_each(Table::Data, &prefix, None, |k, v| {
            out[bucket_of(k)] ^= entry_hash(k, v);
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// One page of the records of `keyspace` in any of `buckets` with keys after `after`, from
/// one streaming scan: records until their bytes reach `max_bytes` (at least one), and the
/// last key sent when more may follow.
fn bucket_page(
    node: &Node,
    keyspace: &str,
    buckets: &[bool],
    after: Option<&[u8]>,
    max_bytes: usize,
) -> Result<(Vec<KeyValue>, Option<Vec<u8>>), String> {
    let prefix = keys::data_key(keyspace, "");
    let (mut rows, mut bytes, mut cut) = (Vec::new(), 0, false);
    node.store()
        .scan_each(Table::Data, &prefix, after, |k, v| {
            if bytes >= max_bytes {
                cut = true;
                return ControlFlow::Break(());
            }
            if buckets[bucket_of(k)] {
                bytes += k.len() + v.len();
                rows.push((k.to_vec(), v.to_vec()));
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    let more = cut.then(|| rows.last().map(|(k, _)| k.clone())).flatten();
    Ok((rows, more))
}

/// Runs `f` on the blocking pool (scans of a whole keyspace must not hold a runtime worker).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("digest scan failed: {e}"))?
}

fn digested_keyspace(node: &Node, keyspace: &str) -> Result<(), ApiError> {
    match node.topology().keyspace(keyspace) {
        Some(ks) if digested(ks) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_digested",
            format!("keyspace `{keyspace}` is unknown, pinned or local, and is never digested"),
            "digests cover replicated keyspaces without residency",
        )),
    }
}

fn octets(bytes: Vec<u8>) -> Response {
    (
        [("content-type", "application/octet-stream")],
        Bytes::from(bytes),
    )
        .into_response()
}

/// `GET /v1/repl/digest/{keyspace}`: postcard `Vec<u64>` of the bucket digests.
pub(crate) async fn digest(
    State(node): State<Node>,
    headers: HeaderMap,
    Path(ks): Path<String>,
) -> Response {
    let run = async {
        super::serve::authenticate(&node, &headers)?;
        digested_keyspace(&node, &ks)?;
        let n = node.clone();
        let d = blocking(move || digests(&n, &ks))
            .await
            .map_err(ApiError::internal)?;
        Ok::<_, ApiError>(octets(
            postcard::to_stdvec(&d).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Query of the buckets endpoint.
#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    /// Base64url of the last key of the previous page.
    after: Option<String>,
}

/// `GET /v1/repl/buckets/{keyspace}/{list}?after=K`: postcard `Vec<(data key, record)>` of the
/// buckets in `list` (comma-separated numbers) with keys after `K` (base64url), at most
/// [`PAGE_BYTES`] of them; when cut there, [`MORE_HEADER`] names the last key sent.
pub(crate) async fn buckets(
    State(node): State<Node>,
    headers: HeaderMap,
    Path((ks, list)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
) -> Response {
    let run = async {
        super::serve::authenticate(&node, &headers)?;
        digested_keyspace(&node, &ks)?;
        let mut wanted = vec![false; BUCKETS];
        for b in list.split(',') {
            match b.parse::<usize>() {
                Ok(b) if b < BUCKETS => wanted[b] = true,
                _ => {
                    return Err(ApiError::bad_request(
                        "bad_bucket",
                        format!("`{b}` is not a bucket"),
                        format!("comma-separated numbers from 0 to {}", BUCKETS - 1),
                    ));
                }
            }
        }
        let after = match page.after {
            Some(a) => Some(URL_SAFE_NO_PAD.decode(a.as_bytes()).map_err(|e| {
                ApiError::bad_request(
                    "bad_after",
                    format!("`after` is not base64url: {e}"),
                    format!("the {MORE_HEADER} header of the previous page, as it was"),
                )
            })?),
            None => None,
        };
        let n = node.clone();
        let (rows, more) =
            blocking(move || bucket_page(&n, &ks, &wanted, after.as_deref(), PAGE_BYTES))
                .await
                .map_err(ApiError::internal)?;
        let mut resp =
            octets(postcard::to_stdvec(&rows).map_err(|e| ApiError::internal(e.to_string()))?);
        if let Some(last) = more
            && let Ok(v) = URL_SAFE_NO_PAD.encode(last).parse()
        {
            resp.headers_mut().insert(MORE_HEADER, v);
        }
        Ok(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Compares every digested keyspace with the peer at `url` and merges in the peer's records of
/// every bucket that differs. Returns how many records changed here.
pub async fn compare_and_repair(
    node: &Node,
    client: &reqwest::Client,
    url: &str,
) -> Result<usize, String> {
    let mut repaired = 0;
    let keyspaces: Vec<String> = node
        .topology()
        .keyspaces
        .iter()
        .filter(|k| digested(k))
        .map(|k| k.name.clone())
        .collect();
    for ks in keyspaces {
        let (theirs, _): (Vec<u64>, _) =
            fetch(node, client, &format!("{url}/v1/repl/digest/{ks}")).await?;
        let n = node.clone();
        let name = ks.clone();
        let ours = blocking(move || digests(&n, &name)).await?;
        let differing: Vec<String> = (0..BUCKETS)
            .filter(|b| theirs.get(*b) != ours.get(*b))
            .map(|b| b.to_string())
            .collect();
        if differing.is_empty() {
            continue;
        }
        let list = differing.join(",");
        let mut n = 0;
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
            let (rows, more): (Vec<KeyValue>, _) = fetch(
                node,
                client,
                &format!("{url}/v1/repl/buckets/{ks}/{list}{query}"),
            )
            .await?;
            n += merge_rows(node, &ks, rows).await?;
            match more {
                Some(m) => after = Some(m),
                None => break,
            }
        }
        if n > 0 {
            metrics::digest_repairs(&ks, n as u64);
            tracing::warn!(keyspace = %ks, buckets = differing.len(), records = n, "digest comparison repaired divergent records");
        }
        repaired += n;
    }
    Ok(repaired)
}

/// GETs `url` as this node's replication identity: the decoded postcard body and the
/// [`MORE_HEADER`], if any.
async fn fetch<T: serde::de::DeserializeOwned>(
    node: &Node,
    client: &reqwest::Client,
    url: &str,
) -> Result<(T, Option<String>), String> {
    let resp = client
        .get(url)
        .header("authorization", super::auth_header(node))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let more = resp
        .headers()
        .get(MORE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let value = postcard::from_bytes(&body).map_err(|e| format!("{url}: {e}"))?;
    Ok((value, more))
}

async fn merge_rows(node: &Node, ks: &str, rows: Vec<KeyValue>) -> Result<usize, String> {
    let ks = ks.to_string();
    node.store()
        .transact(move |txn| -> Result<usize, String> {
            let mut changed = 0;
            for (k, theirs) in rows {
                // Only records of this keyspace; never trust a peer with other keys.
                if keys::user_key(&ks, &k).is_none() {
                    continue;
                }
                let theirs = Record::decode(&theirs).map_err(|e| e.to_string())?;
                let merged = match txn.get(Table::Data, &k).map_err(|e| e.to_string())? {
                    Some(bytes) => {
                        let mut ours = Record::decode(&bytes).map_err(|e| e.to_string())?;
                        let before = ours.encode();
                        ours.merge(&theirs).map_err(|e| e.to_string())?;
                        (ours.encode() != before).then_some(ours)
                    }
                    None => Some(theirs),
                };
                if let Some(m) = merged {
                    txn.put(Table::Data, &k, &m.encode());
                    changed += 1;
                }
            }
            Ok(changed)
        })
        .await
        .map_err(|e| e.to_string())?
}

/// Every `every`, compares with one peer (in turn) and repairs; runs until dropped.
pub async fn run(node: Node, every: std::time::Duration) {
    let Ok(client) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
    else {
        return;
    };
    let peers = super::peer_urls(&node);
    if peers.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    for (peer, url) in peers.iter().cycle() {
        tick.tick().await;
        if let Err(e) = compare_and_repair(&node, &client, url).await {
            tracing::debug!(%peer, error = %e, "digest comparison skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use meridian_store::Table;

    use super::{BUCKETS, bucket_of, bucket_page, digests, entry_hash};
    use crate::input::WriteHeaders;
    use crate::keys;
    use crate::testing::{TWO_REGIONS as TOPOLOGY, node, put};
    use crate::write::write;

    /// Paging through the buckets endpoint's scan yields every record of the wanted buckets
    /// exactly once, in key order, whatever the page size; the digests fold the same records.
    #[tokio::test]
    async fn pages_cover_the_wanted_buckets_exactly_once() {
        let node = node(TOPOLOGY, "a", &Arc::new(AtomicU64::new(1_700_000_000_000)));
        for i in 0..300 {
            let key = format!("k{i:03}");
            write(&node, put(&node, "rep", &key, WriteHeaders::default()))
                .await
                .expect("write");
        }
        let all = node
            .store()
            .scan(Table::Data, &keys::data_key("rep", ""), None, usize::MAX)
            .expect("scan");
        let wanted: Vec<bool> = (0..BUCKETS).map(|b| b % 3 == 0).collect();
        let expected: Vec<_> = all
            .iter()
            .filter(|(k, _)| wanted[bucket_of(k)])
            .cloned()
            .collect();
        assert!(expected.len() > 50, "enough records to page");

        for max_bytes in [1, 500, 5_000, usize::MAX] {
            let (mut got, mut after, mut pages) = (Vec::new(), None::<Vec<u8>>, 0);
            loop {
                let (rows, more) =
                    bucket_page(&node, "rep", &wanted, after.as_deref(), max_bytes).expect("page");
                got.extend(rows);
                pages += 1;
                match more {
                    Some(m) => after = Some(m),
                    None => break,
                }
                assert!(pages <= all.len(), "paging ends");
            }
            assert_eq!(got, expected, "pages of {max_bytes} bytes");
            if max_bytes == 1 {
                assert!(
                    pages >= expected.len(),
                    "one record per page at the smallest size"
                );
            }
        }

        let mut folded = vec![0u64; BUCKETS];
        for (k, v) in &all {
            folded[bucket_of(k)] ^= entry_hash(k, v);
        }
        assert_eq!(digests(&node, "rep").expect("digests"), folded);
    }
}
