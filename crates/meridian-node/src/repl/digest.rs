//! Digest anti-entropy: catches silent divergence the op log cannot (a record that differs under
//! the same version — a bit flip, a restored backup, a bug). Each keyspace is cut into
//! [`BUCKETS`] buckets by key hash; a bucket's digest is the XOR of a hash of every (key,
//! record) in it, so it does not depend on order. Where a peer's buckets differ, this node
//! fetches the peer's records of all of them (one request, one scan) and merges them in — merging is idempotent and
//! commutative, so a repair never loses a write, and the peer repairs itself the same way.
//! Keyspaces that are pinned (`residency`) or `local` are never digested: no digest of a pinned
//! key ever leaves its zone.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meridian_core::config::{Keyspace, Replication};
use meridian_core::record::Record;
use meridian_store::{KeyValue, Table};

use crate::error::ApiError;
use crate::state::Node;
use crate::{keys, metrics};

/// Buckets per keyspace.
pub const BUCKETS: usize = 256;

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

/// The bucket digests of a keyspace at this node.
pub fn digests(node: &Node, keyspace: &str) -> Result<Vec<u64>, String> {
    let mut out = vec![0u64; BUCKETS];
    let prefix = keys::data_key(keyspace, "");
    for (k, v) in node
        .store()
        .scan(Table::Data, &prefix, None, usize::MAX)
        .map_err(|e| e.to_string())?
    {
        out[bucket_of(&k)] ^= entry_hash(&k, &v);
    }
    Ok(out)
}

/// The records of `keyspace` in any of `buckets`, from one scan.
fn bucket_entries(node: &Node, keyspace: &str, buckets: &[bool]) -> Result<Vec<KeyValue>, String> {
    let prefix = keys::data_key(keyspace, "");
    let rows = node
        .store()
        .scan(Table::Data, &prefix, None, usize::MAX)
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter(|(k, _)| buckets[bucket_of(k)])
        .collect())
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
    let run = || -> Result<Response, ApiError> {
        super::serve::authenticate(&node, &headers)?;
        digested_keyspace(&node, &ks)?;
        let d = digests(&node, &ks).map_err(ApiError::internal)?;
        Ok(octets(
            postcard::to_stdvec(&d).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/repl/buckets/{keyspace}/{list}`: postcard `Vec<(data key, record)>` of the
/// buckets in `list` (comma-separated numbers), read with one scan.
pub(crate) async fn buckets(
    State(node): State<Node>,
    headers: HeaderMap,
    Path((ks, list)): Path<(String, String)>,
) -> Response {
    let run = || -> Result<Response, ApiError> {
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
        let rows = bucket_entries(&node, &ks, &wanted).map_err(ApiError::internal)?;
        Ok(octets(
            postcard::to_stdvec(&rows).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    };
    run().unwrap_or_else(IntoResponse::into_response)
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
        let theirs: Vec<u64> = fetch(node, client, &format!("{url}/v1/repl/digest/{ks}")).await?;
        let ours = digests(node, &ks)?;
        let differing: Vec<String> = (0..BUCKETS)
            .filter(|b| theirs.get(*b) != ours.get(*b))
            .map(|b| b.to_string())
            .collect();
        if differing.is_empty() {
            continue;
        }
        let list = differing.join(",");
        let rows: Vec<KeyValue> =
            fetch(node, client, &format!("{url}/v1/repl/buckets/{ks}/{list}")).await?;
        let n = merge_rows(node, &ks, rows).await?;
        if n > 0 {
            metrics::digest_repairs(&ks, n as u64);
            tracing::warn!(keyspace = %ks, buckets = differing.len(), records = n, "digest comparison repaired divergent records");
        }
        repaired += n;
    }
    Ok(repaired)
}

async fn fetch<T: serde::de::DeserializeOwned>(
    node: &Node,
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let resp = client
        .get(url)
        .header("authorization", super::auth_header(node))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    postcard::from_bytes(&body).map_err(|e| format!("{url}: {e}"))
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
