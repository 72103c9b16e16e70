//! Digest anti-entropy: catches silent divergence the op log cannot (a record that differs under
//! the same version — a restored backup, a merge bug). Each keyspace is cut into
//! [`BUCKETS`] buckets by key hash; a bucket's digest is the XOR of a hash of every (key,
//! record) in it, so it does not depend on order. Where a peer's buckets differ, this node
//! fetches the peer's (key, hash) pairs of those buckets (pages of at most [`PAGE_BYTES`]),
//! compares each page with its own pairs of the same key range, and fetches and merges only the
//! records that differ or are missing here ([`RECORDS_PER_REQUEST`] keys per request). The
//! bucket digests themselves are kept in memory ([`Digests`]): built by one scan when the node
//! starts, then changed by every transaction that writes or removes a record, once it has
//! committed (`transact`) — a comparison reads 256 numbers per keyspace, not every record. A
//! store changed while the node was stopped is seen at the next start; bit rot in the running
//! store's files fails the engine's block checksums at the read. Writes still in flight make
//! buckets differ all the time under load: a comparison walks only the buckets that differ and
//! stayed the same on both sides for [`SETTLE`] ([`buckets_to_compare`]), all of them after
//! [`MAX_DEFERRALS`] comparisons that left some out, and a walk costs a hash per key and the few
//! in-flight records, not every record of every differing bucket. Merging is
//! idempotent and commutative, so a repair never loses a write, and the peer repairs itself the
//! same way. Page scans stream over a snapshot on the blocking pool: memory stays bounded by a
//! page whatever the keyspace's size, and no runtime worker stalls. A keyspace pinned to a zone
//! or a list of regions is compared only between two regions it allows ([`digested_at`]), so
//! no digest, hash or record of a pinned key ever leaves them; `local` and `home-zone`
//! keyspaces (each key with its own allowed regions) are never digested.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use meridian_core::config::{Keyspace, Replication, Residency, Topology};
use meridian_core::record::Record;
use meridian_core::wire::from_postcard_exact;
use meridian_store::{KeyValue, Store, Table, Txn};

use super::dial::Dialer;
use super::pull::{LinkTask, Target};
use crate::error::ApiError;
use crate::state::Node;
use crate::{keys, metrics};

/// Buckets per keyspace.
pub const BUCKETS: usize = 256;
/// Most bytes (keys and hashes, or keys and records) in one answer of the hashes or records
/// endpoint; a hashes page that reaches it says where the next one starts.
pub const PAGE_BYTES: usize = 4 << 20;
/// Most pages one comparison fetches per keyspace; the next comparison goes on from scratch.
pub const MAX_PAGES: usize = 1024;
/// Most keys one request to the records endpoint may name.
pub const RECORDS_PER_REQUEST: usize = 1024;
/// Most key bytes one request to the records endpoint carries (under the server's 2 MiB body
/// limit, whatever `max_key_bytes` allows).
const REQUEST_KEY_BYTES: usize = 1 << 20;
/// Response header of a page cut at [`PAGE_BYTES`]: the last key sent (base64url), to be
/// given back as `?after=` for the next page.
pub const MORE_HEADER: &str = "meridian-more-after";

/// A data key and the hash of its stored record (`entry_hash`).
pub type KeyHash = (Vec<u8>, u64);
/// A data key and its stored record, `None` where it holds nothing.
pub type MaybeRecord = (Vec<u8>, Option<Vec<u8>>);

/// Whether `ks` is digested in `region`: it replicates, every region that holds it holds the
/// same keys — not `local`, not `home-zone` — and, when it is pinned, `region` may hold it. Two
/// regions compare a keyspace only when it is digested at both.
pub fn digested_at(topology: &Topology, ks: &Keyspace, region: &str) -> bool {
    if ks.replication == Replication::Local {
        return false;
    }
    match &ks.residency {
        None => true,
        Some(Residency::HomeZone) => false,
        Some(Residency::Regions(_) | Residency::Zone(_)) => topology
            .regions_for_key(ks, region)
            .is_some_and(|allowed| allowed.contains(&region)),
    }
}

fn bucket_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % BUCKETS as u64) as usize
}

fn entry_hash(key: &[u8], record: &[u8]) -> u64 {
    // Streamed: the same hash as one call over the concatenation, without copying the record
    // (two hashes per write).
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(record);
    h.digest()
}

/// The bucket digests of a keyspace in `store`, from one streaming scan (call it from a
/// blocking context: it reads the whole keyspace).
pub fn scan_digests(store: &Store, keyspace: &str) -> Result<Vec<u64>, meridian_store::Error> {
    let mut out = vec![0u64; BUCKETS];
    let prefix = keys::data_key(keyspace, "");
    store.scan_each(Table::Data, &prefix, None, |k, v| {
        out[bucket_of(k)] ^= entry_hash(k, v);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// The bucket digests of every digested keyspace of a node, as [`scan_digests`] would find
/// them once every committed transaction's `Changes` are applied. A digest is an XOR of
/// entry hashes, so changes apply in any order, and at once from any thread.
pub struct Digests(HashMap<String, Box<[AtomicU64]>>);

impl Digests {
    /// Scans every keyspace of `topology` that is [`digested_at`] `region`. Must run before
    /// anything writes to `store`: a transaction committed during the scan would be counted
    /// twice, or not at all.
    pub(crate) fn build(
        store: &Store,
        topology: &Topology,
        region: &str,
    ) -> Result<Digests, meridian_store::Error> {
        let started = std::time::Instant::now();
        let mut by_keyspace = HashMap::new();
        for ks in topology
            .keyspaces
            .iter()
            .filter(|k| digested_at(topology, k, region))
        {
            let buckets = scan_digests(store, &ks.name)?
                .into_iter()
                .map(AtomicU64::new)
                .collect();
            by_keyspace.insert(ks.name.clone(), buckets);
        }
        let took = started.elapsed();
        if took >= std::time::Duration::from_secs(1) {
            tracing::info!(
                seconds = took.as_secs_f64(),
                keyspaces = by_keyspace.len(),
                "digests built from a scan of the store"
            );
        }
        Ok(Digests(by_keyspace))
    }

    /// The bucket digests of `keyspace`; `None` when it is not digested.
    pub fn get(&self, keyspace: &str) -> Option<Vec<u64>> {
        let buckets = self.0.get(keyspace)?;
        Some(buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect())
    }

    fn apply(&self, changes: &Changes) {
        for (keyspace, bucket, flip) in &changes.0 {
            if let Some(b) = self.0.get(keyspace).and_then(|b| b.get(*bucket)) {
                b.fetch_xor(*flip, Ordering::Relaxed);
            }
        }
    }
}

/// How one transaction changes the digests, applied by [`transact`] once it has committed.
/// Records are written and removed through it ([`Changes::put`], [`Changes::delete`]), so no
/// change to a record can miss the digests.
#[derive(Default)]
pub(crate) struct Changes(Vec<(String, usize, u64)>);

impl Changes {
    /// Stores `new` as the record at `data_key`, which held `old` (`None`: no record).
    pub(crate) fn put(
        &mut self,
        txn: &mut Txn<'_>,
        data_key: &[u8],
        old: Option<&[u8]>,
        new: &[u8],
    ) {
        txn.put(Table::Data, data_key, new);
        self.note(data_key, old, Some(new));
    }

    /// Removes the record at `data_key`, which held `old`.
    pub(crate) fn delete(&mut self, txn: &mut Txn<'_>, data_key: &[u8], old: &[u8]) {
        txn.delete(Table::Data, data_key);
        self.note(data_key, Some(old), None);
    }

    /// Notes that the record at `data_key` goes from `old` to `new` (`None`: no record).
    fn note(&mut self, data_key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        if old == new {
            return;
        }
        let Some((keyspace, _)) = keys::split_data_key(data_key) else {
            return;
        };
        let hash = |record: Option<&[u8]>| record.map_or(0, |r| entry_hash(data_key, r));
        self.0.push((
            keyspace.to_string(),
            bucket_of(data_key),
            hash(old) ^ hash(new),
        ));
    }
}

/// Runs `f` as one transaction of the node's store and, once it has committed, applies the
/// digest [`Changes`] through which `f` wrote and removed records. Every transaction that
/// writes or removes a record goes through here.
pub(crate) async fn transact<R, F>(node: &Node, f: F) -> Result<R, meridian_store::Error>
where
    F: FnOnce(&mut Txn<'_>, &mut Changes) -> R + Send + 'static,
    R: Send + 'static,
{
    let (out, changes) = node
        .store()
        .transact(move |txn| {
            let mut changes = Changes::default();
            let out = f(txn, &mut changes);
            (out, changes)
        })
        .await?;
    node.digests().apply(&changes);
    Ok(out)
}

/// One page of the (key, hash) pairs of `keyspace` in any of `buckets` with keys after
/// `after`, from one streaming scan: pairs until their bytes reach `max_bytes` (at least one),
/// and the last key sent when more may follow.
fn hash_page(
    node: &Node,
    keyspace: &str,
    buckets: &[bool],
    after: Option<&[u8]>,
    max_bytes: usize,
) -> Result<(Vec<KeyHash>, Option<Vec<u8>>), String> {
    let prefix = keys::data_key(keyspace, "");
    let (mut rows, mut bytes, mut cut) = (Vec::new(), 0, false);
    node.store()
        .scan_each(Table::Data, &prefix, after, |k, v| {
            if bytes >= max_bytes {
                cut = true;
                return ControlFlow::Break(());
            }
            if buckets[bucket_of(k)] {
                bytes += k.len() + 8;
                rows.push((k.to_vec(), entry_hash(k, v)));
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    let more = cut.then(|| rows.last().map(|(k, _)| k.clone())).flatten();
    Ok((rows, more))
}

/// The keys of `theirs` (a peer's hash page of `buckets`, keys after `after`, ascending) whose
/// record here is missing or hashes differently: one streaming scan of this node's keys over
/// the same range, walked beside the page. Keys only this node holds are left out (the peer
/// fetches them in its own comparison).
fn differing_keys(
    node: &Node,
    keyspace: &str,
    buckets: &[bool],
    after: Option<&[u8]>,
    theirs: &[KeyHash],
) -> Result<Vec<Vec<u8>>, String> {
    let Some((last, _)) = theirs.last() else {
        return Ok(Vec::new());
    };
    let prefix = keys::data_key(keyspace, "");
    let (mut wanted, mut i) = (Vec::new(), 0);
    node.store()
        .scan_each(Table::Data, &prefix, after, |k, v| {
            if k > last.as_slice() {
                return ControlFlow::Break(());
            }
            if !buckets[bucket_of(k)] {
                return ControlFlow::Continue(());
            }
            while let Some((key, _)) = theirs.get(i).filter(|(key, _)| key.as_slice() < k) {
                wanted.push(key.clone());
                i += 1;
            }
            if let Some((key, hash)) = theirs.get(i).filter(|(key, _)| key.as_slice() == k) {
                if *hash != entry_hash(k, v) {
                    wanted.push(key.clone());
                }
                i += 1;
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    wanted.extend(theirs[i..].iter().map(|(k, _)| k.clone()));
    Ok(wanted)
}

/// The records of `wanted` (data keys of `keyspace`), in order, until their bytes reach
/// `max_bytes` (at least one key answered): one entry per key answered, `None` where the key
/// holds nothing. Keys outside the keyspace are answered `None`.
fn records_of(
    node: &Node,
    keyspace: &str,
    wanted: &[Vec<u8>],
    max_bytes: usize,
) -> Result<Vec<MaybeRecord>, String> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for k in wanted {
        if bytes >= max_bytes {
            break;
        }
        let record = match keys::user_key(keyspace, k) {
            Some(_) => node
                .store()
                .get(Table::Data, k)
                .map_err(|e| e.to_string())?,
            None => None,
        };
        bytes += k.len() + record.as_ref().map_or(0, Vec::len);
        out.push((k.clone(), record));
    }
    Ok(out)
}

/// Runs `f` on the blocking pool (scans of a whole keyspace must not hold a runtime worker).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("digest scan failed: {e}"))?
}

/// Refuses a digest request of `peer` for `keyspace` unless the keyspace is digested both
/// here and at the peer: nothing of a pinned keyspace is answered to a region it excludes.
fn digested_keyspace(node: &Node, keyspace: &str, peer: &str) -> Result<(), ApiError> {
    let topology = node.topology();
    match topology.keyspace(keyspace) {
        Some(ks) if digested_at(topology, ks, node.region()) && digested_at(topology, ks, peer) => {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_digested",
            format!(
                "keyspace `{keyspace}` is unknown, local, home-zone, or pinned to regions that exclude `{peer}` or `{}`, and is not digested between them",
                node.region()
            ),
            "digests cover replicated keyspaces, pinned ones between the regions they allow",
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
        let peer = super::serve::authenticate(&node, &headers)?;
        digested_keyspace(&node, &ks, &peer)?;
        let d = node.digest(&ks).await.map_err(ApiError::internal)?;
        Ok::<_, ApiError>(octets(
            postcard::to_stdvec(&d).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Query of a paged endpoint (hashes, a join's copy).
#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    /// Base64url of the last key of the previous page.
    after: Option<String>,
}

impl PageQuery {
    /// The key the page starts after; a 400 when it is not base64url.
    pub(super) fn after(&self) -> Result<Option<Vec<u8>>, ApiError> {
        self.after
            .as_ref()
            .map(|a| {
                URL_SAFE_NO_PAD.decode(a.as_bytes()).map_err(|e| {
                    ApiError::bad_request(
                        "bad_after",
                        format!("`after` is not base64url: {e}"),
                        format!("the {MORE_HEADER} header of the previous page, as it was"),
                    )
                })
            })
            .transpose()
    }
}

/// A page's answer: `rows` in postcard, with [`MORE_HEADER`] naming `more` (base64url) when
/// another page follows.
pub(super) fn page_response<T: serde::Serialize>(
    rows: &T,
    more: Option<Vec<u8>>,
) -> Result<Response, ApiError> {
    let mut resp =
        octets(postcard::to_stdvec(rows).map_err(|e| ApiError::internal(e.to_string()))?);
    if let Some(last) = more
        && let Ok(v) = URL_SAFE_NO_PAD.encode(last).parse()
    {
        resp.headers_mut().insert(MORE_HEADER, v);
    }
    Ok(resp)
}

/// `GET /v1/repl/hashes/{keyspace}/{list}?after=K`: postcard `Vec<(data key, hash)>` of the
/// buckets in `list` (comma-separated numbers) with keys after `K` (base64url), ascending, at
/// most [`PAGE_BYTES`] of them; when cut there, [`MORE_HEADER`] names the last key sent.
pub(crate) async fn hashes(
    State(node): State<Node>,
    headers: HeaderMap,
    Path((ks, list)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
) -> Response {
    let run = async {
        let peer = super::serve::authenticate(&node, &headers)?;
        digested_keyspace(&node, &ks, &peer)?;
        let wanted = bucket_list(&list)?;
        let after = page.after()?;
        let (rows, more) = node
            .hashes(&ks, &wanted, after.as_deref())
            .await
            .map_err(ApiError::internal)?;
        page_response(&rows, more)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The buckets named by `list` (comma-separated numbers below [`BUCKETS`]), as a membership
/// table; a 400 naming the first entry that is not a bucket.
fn bucket_list(list: &str) -> Result<Vec<bool>, ApiError> {
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
    Ok(wanted)
}

/// `POST /v1/repl/records/{keyspace}` with a postcard `Vec<data key>` body (at most
/// [`RECORDS_PER_REQUEST`] keys): postcard `Vec<(data key, Option<record>)>` answering the keys
/// in order until the records reach [`PAGE_BYTES`] (at least one); the caller asks again for
/// the keys not answered.
pub(crate) async fn records(
    State(node): State<Node>,
    headers: HeaderMap,
    Path(ks): Path<String>,
    body: Bytes,
) -> Response {
    let run = async {
        let peer = super::serve::authenticate(&node, &headers)?;
        digested_keyspace(&node, &ks, &peer)?;
        let hint = format!(
            "a postcard list of at most {RECORDS_PER_REQUEST} data keys of the keyspace, as the \
             hashes endpoint names them"
        );
        let wanted: Vec<Vec<u8>> = from_postcard_exact(&body, "keys").map_err(|e| {
            ApiError::bad_request(
                "bad_keys",
                format!("the body is not a list of keys: {e}"),
                hint.clone(),
            )
        })?;
        if wanted.len() > RECORDS_PER_REQUEST {
            return Err(ApiError::bad_request(
                "too_many_keys",
                format!("{} keys asked for in one request", wanted.len()),
                hint,
            ));
        }
        let rows = node
            .records(&ks, &wanted)
            .await
            .map_err(ApiError::internal)?;
        Ok::<_, ApiError>(octets(
            postcard::to_stdvec(&rows).map_err(|e| ApiError::internal(e.to_string()))?,
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// How long a comparison waits between its two looks at both sides' digests (only when a
/// keyspace differed at the first).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
/// How many comparisons with a peer in a row may leave out buckets that kept changing before
/// one compares every differing bucket.
pub const MAX_DEFERRALS: u32 = 10;

/// The buckets a comparison walks, from both sides' digests at a first look and at a second
/// one [`SETTLE`] later: those that differ at the second look and changed on neither side
/// since the first (writes still in flight keep changing a bucket; a divergence does not), or
/// every one that differs when `all`. Also how many differing buckets were left out.
pub fn buckets_to_compare(
    first: (&[u64], &[u64]),
    second: (&[u64], &[u64]),
    all: bool,
) -> (Vec<bool>, u64) {
    let mut deferred = 0;
    let wanted = (0..BUCKETS)
        .map(|b| {
            let (theirs, ours) = (second.0.get(b), second.1.get(b));
            if theirs == ours {
                return false;
            }
            let wanted = all || (first.0.get(b) == theirs && first.1.get(b) == ours);
            deferred += u64::from(!wanted);
            wanted
        })
        .collect();
    (wanted, deferred)
}

/// What a digest comparison asks of the peer it compares with, one method per endpoint of the
/// replication API. A [`Node`] answers for itself (the endpoints' handlers use it, and a
/// simulation compares nodes through it directly); an [`HttpPeer`] asks a peer over the API.
pub trait DigestPeer {
    /// The peer, as errors and logs name it.
    fn name(&self) -> &str;

    /// The peer's region: only keyspaces digested there too are compared with it.
    fn region(&self) -> &str;

    /// The bucket digests of `keyspace`.
    fn digest(&self, keyspace: &str) -> impl Future<Output = Result<Vec<u64>, String>> + Send;

    /// One page of the peer's (key, hash) pairs of `keyspace` in `buckets` with keys after
    /// `after`, ascending, and the last key sent when more may follow.
    fn hashes(
        &self,
        keyspace: &str,
        buckets: &[bool],
        after: Option<&[u8]>,
    ) -> impl Future<Output = Result<(Vec<KeyHash>, Option<Vec<u8>>), String>> + Send;

    /// The peer's records of `keys`, in order: at least one key answered when any is asked,
    /// possibly fewer than asked.
    fn records(
        &self,
        keyspace: &str,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = Result<Vec<MaybeRecord>, String>> + Send;
}

impl DigestPeer for Node {
    fn name(&self) -> &str {
        self.region()
    }

    fn region(&self) -> &str {
        Node::region(self)
    }

    async fn digest(&self, keyspace: &str) -> Result<Vec<u64>, String> {
        self.digests()
            .get(keyspace)
            .ok_or_else(|| format!("no digests of `{keyspace}`"))
    }

    async fn hashes(
        &self,
        keyspace: &str,
        buckets: &[bool],
        after: Option<&[u8]>,
    ) -> Result<(Vec<KeyHash>, Option<Vec<u8>>), String> {
        let (node, ks, buckets) = (self.clone(), keyspace.to_string(), buckets.to_vec());
        let after = after.map(<[u8]>::to_vec);
        blocking(move || hash_page(&node, &ks, &buckets, after.as_deref(), PAGE_BYTES)).await
    }

    async fn records(&self, keyspace: &str, keys: &[Vec<u8>]) -> Result<Vec<MaybeRecord>, String> {
        let (node, ks, keys) = (self.clone(), keyspace.to_string(), keys.to_vec());
        blocking(move || records_of(&node, &ks, &keys, PAGE_BYTES)).await
    }
}

/// How long [`HttpPeer`] waits for an answer, and then for its body.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a request to a peer failed.
#[derive(Debug)]
pub(super) struct AskError {
    /// Nothing answered at the peer's address: the connection was refused, or closed before
    /// any answer.
    pub(super) unreachable: bool,
    /// The peer's status, when it answered with an error.
    pub(super) status: Option<StatusCode>,
    message: String,
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<AskError> for String {
    fn from(e: AskError) -> String {
        e.message
    }
}

/// A peer reached over the replication API, asked as `node` (its authorization header), over
/// one HTTP/1.1 connection from a [`Dialer`] kept between requests and opened again after a
/// failure.
pub struct HttpPeer {
    node: Node,
    region: String,
    dialer: Arc<dyn Dialer>,
    target: Target,
    url: String,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

/// An open connection to a peer: its request sender and the task that drives it.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    _driver: LinkTask,
}

impl HttpPeer {
    /// The node of `region` at base URL `url` (`http://host[:port][/path]`), reached through
    /// `dialer` as `node`; an error says why the URL is not one.
    pub fn new(
        node: Node,
        dialer: Arc<dyn Dialer>,
        region: &str,
        url: &str,
    ) -> Result<HttpPeer, String> {
        Ok(HttpPeer {
            node,
            region: region.to_string(),
            dialer,
            target: Target::parse(url)?,
            url: url.trim_end_matches('/').to_string(),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Sends `method` `path` (under the peer's base path) with `body` as this node's
    /// replication identity; answers the decoded postcard body and the [`MORE_HEADER`], if
    /// any. A failed connection is dropped, and the next request opens another.
    pub(super) async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(T, HeaderMap), AskError> {
        let url = format!("{}{path}", self.url);
        let failed = |unreachable: bool, e: &dyn std::fmt::Display| AskError {
            unreachable,
            status: None,
            message: format!("{url}: {e}"),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.target.base_path))
            .header(HOST, &self.target.authority)
            .header(AUTHORIZATION, super::auth_header(&self.node))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(false, &e))?;
        let mut conn = self.conn.lock().await;
        let answer = async {
            let usable = match conn.as_mut() {
                Some(c) => c.sender.ready().await.is_ok(),
                None => false,
            };
            if !usable {
                *conn = Some(self.connect().await?);
            }
            let open = conn.as_mut().ok_or((false, "no connection".to_string()))?;
            let resp = open.sender.send_request(req).await.map_err(|e| {
                // Closed before any answer: nothing serves there (a relay whose upstream is
                // down accepts, then closes).
                (e.is_incomplete_message() || e.is_closed(), e.to_string())
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.answer_limit())
                .collect()
                .await
                .map_err(|e| (false, e.to_string()))?
                .to_bytes();
            Ok::<_, (bool, String)>((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err((unreachable, e))) => {
                *conn = None;
                return Err(failed(unreachable, &e));
            }
            Err(_) => {
                *conn = None;
                return Err(failed(
                    false,
                    &format!("no answer within {REQUEST_TIMEOUT:?}"),
                ));
            }
        };
        drop(conn);
        if !parts.status.is_success() {
            return Err(AskError {
                unreachable: false,
                status: Some(parts.status),
                message: format!(
                    "{url} answered {}: {}",
                    parts.status,
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
            });
        }
        let value = from_postcard_exact(&body, "answer").map_err(|e| failed(false, &e))?;
        Ok((value, parts.headers))
    }

    /// The page of the paged endpoint at `path` that starts after key `after` (the first page
    /// when `None`), and the key the next one starts after, if any.
    pub(super) async fn page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        after: Option<&[u8]>,
    ) -> Result<(T, Option<Vec<u8>>), String> {
        let path = match after {
            Some(a) => format!("{path}?after={}", URL_SAFE_NO_PAD.encode(a)),
            None => path.to_string(),
        };
        let (page, headers) = self.send(Method::GET, &path, Vec::new()).await?;
        let more = headers
            .get(MORE_HEADER)
            .map(|m| URL_SAFE_NO_PAD.decode(m.as_bytes()))
            .transpose()
            .map_err(|e| format!("{}: the page position is not base64url: {e}", self.url))?;
        Ok((page, more))
    }

    /// The most bytes an answer may have: a page and the one record that may take it past the
    /// page, bounded as a replication frame is ([`meridian_core::wire::MAX_FRAME_BYTES`]) — a
    /// record can encode to more than `[limits] max_value_bytes`: concurrent writes of several
    /// regions merge past it, and a set's or a map's metadata adds to its data.
    fn answer_limit(&self) -> usize {
        let limits = &self.node.topology().limits;
        (PAGE_BYTES + limits.max_value_bytes + limits.max_key_bytes + 64 * 1024)
            .max(meridian_core::wire::MAX_FRAME_BYTES)
    }

    /// A new connection to the peer; the error says whether the peer refused it (nothing
    /// listens there) and why.
    async fn connect(&self) -> Result<Connection, (bool, String)> {
        let io = self
            .dialer
            .dial(&self.target.authority)
            .await
            .map_err(|e| {
                (
                    e.kind() == std::io::ErrorKind::ConnectionRefused,
                    format!("connect: {e}"),
                )
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| (false, format!("connect: {e}")))?;
        let driver = LinkTask(tokio::spawn(async move {
            // A failed connection shows in the next request's answer.
            let _ = conn.await;
        }));
        Ok(Connection {
            sender,
            _driver: driver,
        })
    }
}

impl DigestPeer for HttpPeer {
    fn name(&self) -> &str {
        &self.url
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn digest(&self, keyspace: &str) -> Result<Vec<u64>, String> {
        let path = format!("/v1/repl/digest/{keyspace}");
        Ok(self.send(Method::GET, &path, Vec::new()).await?.0)
    }

    async fn hashes(
        &self,
        keyspace: &str,
        buckets: &[bool],
        after: Option<&[u8]>,
    ) -> Result<(Vec<KeyHash>, Option<Vec<u8>>), String> {
        let list: Vec<String> = (0..BUCKETS)
            .filter(|b| buckets.get(*b) == Some(&true))
            .map(|b| b.to_string())
            .collect();
        let path = format!("/v1/repl/hashes/{keyspace}/{}", list.join(","));
        self.page(&path, after).await
    }

    async fn records(&self, keyspace: &str, keys: &[Vec<u8>]) -> Result<Vec<MaybeRecord>, String> {
        let body = postcard::to_stdvec(keys).map_err(|e| e.to_string())?;
        let path = format!("/v1/repl/records/{keyspace}");
        Ok(self.send(Method::POST, &path, body).await?.0)
    }
}

/// Compares every digested keyspace with `peer` and, in the buckets that differ and have
/// settled ([`buckets_to_compare`], a second look `settle` after the first), merges in the
/// peer's records that are missing here or hash differently. `deferred` counts the comparisons
/// with this peer in a row that left out a bucket still changing; at [`MAX_DEFERRALS`] it
/// compares every differing bucket. Returns how many records changed here.
pub async fn compare_and_repair<P: DigestPeer>(
    node: &Node,
    peer: &P,
    settle: std::time::Duration,
    deferred: &mut u32,
) -> Result<usize, String> {
    let mut repaired = 0;
    let topology = node.topology();
    let keyspaces: Vec<String> = topology
        .keyspaces
        .iter()
        .filter(|k| {
            digested_at(topology, k, node.region()) && digested_at(topology, k, peer.region())
        })
        .map(|k| k.name.clone())
        .collect();
    let look = |ks: String| async move {
        let theirs = peer.digest(&ks).await?;
        let ours = DigestPeer::digest(node, &ks).await?;
        Ok::<_, String>((theirs, ours))
    };
    // Keyspaces equal at the first look need no second one: in a quiet cluster a comparison
    // costs two small requests and no wait.
    let mut first = Vec::with_capacity(keyspaces.len());
    for ks in keyspaces {
        let (theirs, ours) = look(ks.clone()).await?;
        if theirs != ours {
            first.push((ks, (theirs, ours)));
        }
    }
    if first.is_empty() {
        *deferred = 0;
        return Ok(0);
    }
    tokio::time::sleep(settle).await;
    let all = *deferred >= MAX_DEFERRALS;
    let mut left_out = false;
    for (ks, (first_theirs, first_ours)) in first {
        let (theirs, ours) = look(ks.clone()).await?;
        let (wanted, deferred_here) =
            buckets_to_compare((&first_theirs, &first_ours), (&theirs, &ours), all);
        if deferred_here > 0 {
            metrics::digest_deferred(&ks, deferred_here);
            left_out = true;
        }
        let buckets = wanted.iter().filter(|w| **w).count();
        if buckets == 0 {
            continue;
        }
        let mut n = 0;
        let mut after: Option<Vec<u8>> = None;
        for _ in 0..MAX_PAGES {
            let (page, more) = peer.hashes(&ks, &wanted, after.as_deref()).await?;
            let compared = page.len() as u64;
            let (nn, name, buckets) = (node.clone(), ks.clone(), wanted.clone());
            let keys =
                blocking(move || differing_keys(&nn, &name, &buckets, after.as_deref(), &page))
                    .await?;
            metrics::digest_page(&ks, compared, keys.len() as u64);
            n += fetch_and_merge(node, peer, &ks, keys).await?;
            match more {
                Some(m) => after = Some(m),
                None => break,
            }
        }
        if n > 0 {
            metrics::digest_repairs(&ks, n as u64);
            tracing::warn!(keyspace = %ks, peer = peer.name(), buckets, records = n, "digest comparison repaired divergent records");
        }
        repaired += n;
    }
    *deferred = if left_out { *deferred + 1 } else { 0 };
    Ok(repaired)
}

/// Fetches the peer's records of `keys` (data keys of `ks`) and merges them in, in requests of
/// at most [`RECORDS_PER_REQUEST`] keys and [`REQUEST_KEY_BYTES`] of them (at least one key).
/// Returns how many records changed here.
async fn fetch_and_merge<P: DigestPeer>(
    node: &Node,
    peer: &P,
    ks: &str,
    keys: Vec<Vec<u8>>,
) -> Result<usize, String> {
    let mut changed = 0;
    let mut rest = keys.as_slice();
    while !rest.is_empty() {
        let mut bytes = 0;
        let fit = rest
            .iter()
            .take(RECORDS_PER_REQUEST)
            .take_while(|k| {
                bytes += k.len();
                bytes <= REQUEST_KEY_BYTES
            })
            .count()
            .max(1);
        let ask = &rest[..fit];
        let rows = peer.records(ks, ask).await?;
        if rows.is_empty() || rows.len() > ask.len() {
            return Err(format!(
                "{} answered {} records for {} keys",
                peer.name(),
                rows.len(),
                ask.len()
            ));
        }
        rest = &rest[rows.len()..];
        let present: Vec<KeyValue> = rows
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        changed += merge_rows(node, ks, present, MissingDead::Skip).await?;
    }
    Ok(changed)
}

/// What [`merge_rows`] does with a peer's dead record ([`super::gc::collectable`]) for a key
/// that has no record here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MissingDead {
    /// Not stored (digest repair): no record reads the same, and this node may have
    /// collected that very tombstone already (peers collect a few seconds apart) — storing
    /// it again would keep it forever, for it would not be indexed for collection a second
    /// time. The op that made it still reaches this node, or has.
    Skip,
    /// Stored (a join's copy): the join takes the source's heads as applied, so the op that
    /// made the record is not coming again, and a write older than it still on its way (from
    /// an origin past those heads) would otherwise live here alone — and be spread back to
    /// every region by digest repair once they collected the tombstone.
    Store,
}

/// Merges a peer's records `rows` (data keys of `ks`) into this node's; returns how many changed
/// here. A peer's dead record for a key without a record here is stored or not as `missing`
/// says.
///
/// A record the merge leaves deleted, or with an expiry, is indexed for collection or the
/// sweep like one a replicated op writes ([`repair_anchor`]), so a repair never leaves a dead
/// record behind for good. When that op is not known yet, the record waits in the
/// `reanchor/` index until it is ([`super::gc`] resolves it): the op that gave the record its
/// version may have been applied here already, with the record left live by an older change
/// it lacked — the repair brings that change, and the op is not coming again.
pub(super) async fn merge_rows(
    node: &Node,
    ks: &str,
    rows: Vec<KeyValue>,
    missing: MissingDead,
) -> Result<usize, String> {
    let ks = ks.to_string();
    let now = node.now();
    let here = node.clone();
    transact(node, move |txn, digests| -> Result<usize, String> {
        let mut changed = 0;
        for (k, theirs) in rows {
            // Only records of this keyspace; never trust a peer with other keys.
            if keys::user_key(&ks, &k).is_none() {
                continue;
            }
            let theirs = Record::decode(&theirs).map_err(|e| e.to_string())?;
            let stored = txn.get(Table::Data, &k).map_err(|e| e.to_string())?;
            let merged = match &stored {
                Some(bytes) => {
                    let mut ours = Record::decode(bytes).map_err(|e| e.to_string())?;
                    ours.merge(&theirs).map_err(|e| e.to_string())?;
                    let encoded = ours.encode();
                    (encoded != *bytes).then_some((ours, encoded))
                }
                None if missing == MissingDead::Skip && super::gc::collectable(&theirs, now) => {
                    None
                }
                None => {
                    let encoded = theirs.encode();
                    Some((theirs, encoded))
                }
            };
            if let Some((record, encoded)) = merged {
                digests.put(txn, &k, stored.as_deref(), &encoded);
                match repair_anchor(&here, &record) {
                    Some((origin, seq)) => {
                        super::gc::index_repaired(txn, &k, &record, &origin, seq)
                    }
                    None => super::gc::reanchor_later(txn, &k, &record),
                }
                changed += 1;
            }
        }
        Ok(changed)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The op a repaired record is indexed by for collection (see `gc`): one at or after the op
/// of `record.version.origin` that gave it its version, which the tombstone rule then waits
/// for every region to have applied (after which no region can make a write older than the
/// version). Known when this region made that write (its last op), or when the origin's
/// confirmed watermark is past the version's time (the origin's op is among those applied
/// here). A reset (no origin region) needs no such wait — every region's watermark was past
/// its expiry before it was made, so no write older than it can be made any more — and is
/// indexed by this region's last op. `None` otherwise, until the watermark passes (see
/// [`super::gc::reanchor_later`]).
pub(super) fn repair_anchor(node: &Node, record: &Record) -> Option<(String, u64)> {
    let origin = record.version.origin.as_str();
    if origin == node.region() || origin.is_empty() {
        return Some((node.region().to_string(), node.last_seq()));
    }
    let confirmed = node.watermarks().confirmed(origin)?;
    (record.version.ts < confirmed)
        .then(|| (origin.to_string(), node.applied().borrow().get(origin)))
}

/// Every `every`, compares with one peer (in turn, over connections from `dialer`) and
/// repairs; runs until dropped. A peer whose URL is not plain HTTP is left out, with a warning.
pub async fn run(node: Node, every: std::time::Duration, dialer: Arc<dyn Dialer>) {
    node.joined().await;
    let peers: Vec<(String, HttpPeer)> = super::peer_urls(&node)
        .into_iter()
        .filter_map(|(name, url)| {
            match HttpPeer::new(node.clone(), Arc::clone(&dialer), &name, &url) {
                Ok(peer) => Some((name, peer)),
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "no digest comparison with this peer");
                    None
                }
            }
        })
        .collect();
    if peers.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut deferred = vec![0u32; peers.len()];
    for (i, (name, peer)) in peers.iter().enumerate().cycle() {
        tick.tick().await;
        if let Err(e) = compare_and_repair(&node, peer, SETTLE, &mut deferred[i]).await {
            tracing::debug!(peer = %name, error = %e, "digest comparison skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_store::Table;

    use super::{
        BUCKETS, bucket_of, differing_keys, entry_hash, hash_page, records_of, scan_digests,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use meridian_core::op::Op;
    use meridian_core::version::VersionVector;

    use crate::Node;
    use crate::input::WriteHeaders;
    use crate::keys;
    use crate::testing::{TWO_REGIONS, mutation, node, node_with_keys, put};
    use crate::write::write;

    /// A differing bucket is compared once it stayed the same on both sides between the two
    /// looks; one still changing on either side waits (and says so), unless all are wanted.
    #[test]
    fn only_settled_differing_buckets_are_compared_unless_all_are() {
        let base = vec![7u64; BUCKETS];
        let mut theirs = base.clone();
        theirs[1] = 1; // differs, settled
        theirs[2] = 2; // differs, changed here (theirs) between the looks
        theirs[3] = 3; // differs, changed on our side between the looks
        let mut first_theirs = theirs.clone();
        first_theirs[2] = 20;
        let mut first_ours = base.clone();
        first_ours[3] = 30;
        let first = (first_theirs.as_slice(), first_ours.as_slice());
        let second = (theirs.as_slice(), base.as_slice());

        let (wanted, deferred) = super::buckets_to_compare(first, second, false);
        let picked: Vec<usize> = (0..BUCKETS).filter(|b| wanted[*b]).collect();
        assert_eq!(picked, [1]);
        assert_eq!(deferred, 2, "buckets 2 and 3 were left out");

        let (wanted, deferred) = super::buckets_to_compare(first, second, true);
        let picked: Vec<usize> = (0..BUCKETS).filter(|b| wanted[*b]).collect();
        assert_eq!(picked, [1, 2, 3]);
        assert_eq!(deferred, 0);

        let same = (base.as_slice(), base.as_slice());
        let (wanted, deferred) = super::buckets_to_compare(first, same, false);
        assert!(
            !wanted.contains(&true) && deferred == 0,
            "equal buckets are never compared"
        );
    }

    /// Asserts that the digests `node` keeps of `rep` are those a scan of its store finds.
    fn kept_as_scanned(node: &Node, after: &str) {
        let scanned = scan_digests(node.store(), "rep").expect("scan");
        assert_eq!(node.digests().get("rep"), Some(scanned), "after {after}");
    }

    /// The digests kept in memory are those a scan finds after every kind of change to the
    /// records: local writes, overwrites and deletes, ops applied from a peer, a digest repair,
    /// a collected tombstone, and an expired record the sweep reclaims.
    #[tokio::test]
    async fn kept_digests_follow_every_kind_of_record_change() {
        let t0 = 1_700_000_000_000;
        let (at_a, at_b) = (Arc::new(AtomicU64::new(t0)), Arc::new(AtomicU64::new(t0)));
        let (a, b) = (node(TWO_REGIONS, "a", &at_a), node(TWO_REGIONS, "b", &at_b));
        let none = WriteHeaders::default;
        for i in 0..40 {
            write(&a, put(&a, "rep", &format!("k{i}"), none()))
                .await
                .expect("write");
        }
        kept_as_scanned(&a, "writes");
        write(&a, put(&a, "rep", "k1", none()))
            .await
            .expect("write");
        let delete = Op::Delete { context: None };
        write(&a, mutation(&a, "rep", "k2", delete, none()))
            .await
            .expect("delete");
        kept_as_scanned(&a, "an overwrite and a delete");

        let entries =
            crate::repl::serve::collect(&a, "b", &mut VersionVector::default(), 1_000, |_| true)
                .expect("collect");
        crate::repl::apply::apply_batch(&b, entries)
            .await
            .expect("apply");
        kept_as_scanned(&b, "applying the peer's ops");
        assert_eq!(
            a.digests().get("rep"),
            b.digests().get("rep"),
            "same records"
        );

        write(&a, put(&a, "rep", "only-a", none()))
            .await
            .expect("write");
        let rows = a
            .store()
            .scan(Table::Data, &keys::data_key("rep", "only"), None, 10)
            .expect("scan");
        assert_eq!(
            super::merge_rows(&b, "rep", rows, super::MissingDead::Skip)
                .await
                .expect("merge"),
            1
        );
        kept_as_scanned(&b, "a digest repair");

        let everything = VersionVector::parse_token("a:43").expect("vv");
        a.peer_heads("b", None, &everything);
        let gc = crate::repl::gc::collect;
        assert_eq!(gc(&a).await.expect("gc").tombstones, 0, "phase one notes");
        assert_eq!(
            gc(&a).await.expect("gc").tombstones,
            1,
            "phase two collects"
        );
        kept_as_scanned(&a, "collecting the deleted record");

        let one_region = "[cluster]\nname = \"t\"\n\n[[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\n\n[[keyspace]]\nname = \"rep\"\ntype = \"register\"\n";
        let alone = node(one_region, "a", &at_a);
        let ttl = WriteHeaders {
            ttl: Some(std::time::Duration::from_secs(1)),
            ..WriteHeaders::default()
        };
        write(&alone, put(&alone, "rep", "brief", ttl))
            .await
            .expect("write");
        at_a.fetch_add(1_500, Ordering::SeqCst);
        assert_eq!(crate::expiry::sweep_once(&alone).await.expect("sweep"), 1);
        assert!(
            alone
                .digests()
                .get("rep")
                .is_some_and(|d| d.iter().all(|b| *b == 0))
        );
        kept_as_scanned(&alone, "the sweep reclaiming an expired record");
    }

    /// An entry's hash is xxh3 of the key's length, the key and the record, one after another:
    /// streamed, it must stay the value peers of earlier builds compute in one call.
    #[test]
    fn the_entry_hash_is_that_of_the_concatenation() {
        let (key, record) = (b"rep/k".as_slice(), vec![7u8; 300]);
        let whole = [&(key.len() as u64).to_le_bytes(), key, &record].concat();
        assert_eq!(entry_hash(key, &record), xxhash_rust::xxh3::xxh3_64(&whole));
    }

    /// Paging through the hashes endpoint's scan yields every key of the wanted buckets exactly
    /// once, in key order, with its record's hash, whatever the page size; the digests fold the
    /// same hashes.
    #[tokio::test]
    async fn pages_cover_the_wanted_buckets_exactly_once() {
        let node = node_with_keys(300).await;
        let all = node
            .store()
            .scan(Table::Data, &keys::data_key("rep", ""), None, usize::MAX)
            .expect("scan");
        let wanted: Vec<bool> = (0..BUCKETS).map(|b| b % 3 == 0).collect();
        let expected: Vec<_> = all
            .iter()
            .filter(|(k, _)| wanted[bucket_of(k)])
            .map(|(k, v)| (k.clone(), entry_hash(k, v)))
            .collect();
        assert!(expected.len() > 50, "enough records to page");

        for max_bytes in [1, 500, 5_000, usize::MAX] {
            let (mut got, mut after, mut pages) = (Vec::new(), None::<Vec<u8>>, 0);
            loop {
                let (rows, more) =
                    hash_page(&node, "rep", &wanted, after.as_deref(), max_bytes).expect("page");
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
        assert_eq!(scan_digests(node.store(), "rep").expect("digests"), folded);
        assert_eq!(node.digests().get("rep"), Some(folded), "kept as scanned");
    }

    /// The keys to fetch from a peer's hash page are exactly those missing here or hashing
    /// differently, in the page's key range and buckets; keys only this node holds are not.
    #[tokio::test]
    async fn differing_keys_are_the_missing_and_the_changed() {
        let node = node_with_keys(100).await;
        let k = |i: usize| keys::data_key("rep", &format!("k{i:03}"));
        let all = vec![true; BUCKETS];
        let (mine, more) = hash_page(&node, "rep", &all, None, usize::MAX).expect("page");
        assert!(more.is_none() && mine.len() == 100);
        assert!(
            differing_keys(&node, "rep", &all, None, &mine)
                .expect("diff")
                .is_empty(),
            "the same page differs nowhere"
        );

        // Theirs: the first 60 keys (k000-k059) with k005 changed, k010 missing (only here),
        // and k000a and k050a that only they hold.
        let mut theirs: Vec<_> = mine[..60].to_vec();
        theirs[5].1 ^= 1;
        theirs.retain(|(key, _)| *key != k(10));
        let only_theirs = [
            keys::data_key("rep", "k000a"),
            keys::data_key("rep", "k050a"),
        ];
        for key in &only_theirs {
            theirs.push((key.clone(), 7));
        }
        theirs.sort();
        let got = differing_keys(&node, "rep", &all, None, &theirs).expect("diff");
        let mut expect = vec![k(5), only_theirs[0].clone(), only_theirs[1].clone()];
        expect.sort();
        assert_eq!(got, expect);

        // A page that starts after k020 only covers its own range.
        let from = k(20);
        let page: Vec<_> = theirs
            .iter()
            .filter(|(key, _)| *key > from)
            .cloned()
            .collect();
        let got = differing_keys(&node, "rep", &all, Some(&from), &page).expect("diff");
        assert_eq!(got, vec![only_theirs[1].clone()]);

        // Buckets outside the comparison are not looked at here.
        let none = vec![false; BUCKETS];
        let got = differing_keys(&node, "rep", &none, None, &theirs).expect("diff");
        assert_eq!(got.len(), theirs.len(), "nothing of ours to match against");
    }

    /// The records endpoint answers keys in order, `None` for absent keys and keys of other
    /// keyspaces, and stops once the records reach the size limit (after at least one).
    #[tokio::test]
    async fn records_answer_in_order_up_to_the_limit() {
        let node = node_with_keys(0).await;
        for key in ["x", "y"] {
            write(&node, put(&node, "rep", key, WriteHeaders::default()))
                .await
                .expect("write");
        }
        let ask = vec![
            keys::data_key("rep", "x"),
            keys::data_key("rep", "absent"),
            keys::data_key("other", "x"),
            keys::data_key("rep", "y"),
        ];
        let got = records_of(&node, "rep", &ask, usize::MAX).expect("records");
        let present: Vec<bool> = got.iter().map(|(_, r)| r.is_some()).collect();
        assert_eq!(present, [true, false, false, true]);
        assert_eq!(got.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), ask);
        let got = records_of(&node, "rep", &ask, 1).expect("records");
        assert_eq!(got.len(), 1, "one record reaches the limit");
    }

    /// A record a repair deletes, or gives an expiry, is indexed for collection and the sweep
    /// by an op known to be at or after the write that gave it its version: this region's last
    /// one when it made that write, the origin's applied ops once its watermark is past the
    /// write; not before — it is noted, and the next collection pass indexes it once the
    /// watermark has passed (its op may have been applied here already, and not come again).
    /// A reset is indexed at once.
    #[tokio::test]
    async fn a_record_a_repair_deletes_or_gives_an_expiry_is_indexed() {
        use meridian_core::hlc::Timestamp;
        use meridian_core::record::{Record, Value};
        let node = node_with_keys(5).await;
        let dk = |i: usize| keys::data_key("rep", &format!("k{i:03}"));
        let record = |i: usize| {
            let bytes = node.store().get(Table::Data, &dk(i)).expect("get");
            Record::decode(&bytes.expect("stored")).expect("record")
        };
        let tombstoned = |i: usize| {
            let key = [keys::TOMB_PREFIX, &dk(i)].concat();
            node.store().get(Table::Meta, &key).expect("get").is_some()
        };
        let newer = |i: usize, origin: &str, delete: bool| {
            let mut rec = record(i);
            let Value::Register(r) = &mut rec.value else {
                panic!("a register")
            };
            if delete {
                r.value = None;
            }
            r.version.ts = Timestamp(r.version.ts.0 + 1);
            r.version.origin = origin.to_string();
            rec.version = r.version.clone();
            (dk(i), rec)
        };
        let merge = |rows: Vec<(Vec<u8>, Record)>| {
            let rows = rows.into_iter().map(|(k, r)| (k, r.encode())).collect();
            super::merge_rows(&node, "rep", rows, super::MissingDead::Skip)
        };

        let (own, peer) = (newer(0, "a", true), newer(1, "b", true));
        assert_eq!(merge(vec![own, peer]).await.expect("merge"), 2);
        assert!(tombstoned(0), "deleted by this region's write");
        assert!(
            !tombstoned(1),
            "b's delete is not known to be applied here yet"
        );
        let note = [keys::REANCHOR_PREFIX, &dk(1)].concat();
        let noted = || node.store().get(Table::Meta, &note).expect("get").is_some();
        assert!(noted(), "noted until it is known");

        let (_, late) = newer(2, "b", true);
        let mark = super::super::watermark::Mark {
            at: Timestamp(late.version.ts.0 + 1),
            seq: 0,
        };
        node.watermarks().report("b", mark);
        let applied = node.applied().borrow().clone();
        assert_eq!(node.watermarks().cutoff(&["b"], &applied), Some(mark.at));
        assert_eq!(merge(vec![(dk(2), late)]).await.expect("merge"), 1);
        assert!(tombstoned(2), "b's watermark is past its delete");
        super::super::gc::collect(&node).await.expect("collect");
        assert!(
            tombstoned(1) && !noted(),
            "the pass after the watermark indexes what was noted"
        );

        let (key, mut reset) = newer(4, "", true);
        reset.expires = None;
        assert_eq!(merge(vec![(key, reset)]).await.expect("merge"), 1);
        assert!(tombstoned(4), "a reset is indexed at once");

        let (key, mut expiring) = newer(3, "a", false);
        let at = Timestamp(expiring.version.ts.0 + 1_000_000);
        expiring.expires = Some(at);
        assert_eq!(merge(vec![(key, expiring)]).await.expect("merge"), 1);
        let index = keys::expiry_key(at, keys::ExpiryKind::Data, &dk(3));
        assert!(
            node.store()
                .get(Table::Meta, &index)
                .expect("get")
                .is_some(),
            "the repaired expiry is swept"
        );
    }

    /// An answer larger than a page and a record can be is refused, not read into memory
    /// whole; the connection is dropped and the next request opens another.
    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let node = node_with_keys(1).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = super::HttpPeer::new(
            node.clone(),
            Arc::new(super::super::dial::TcpDialer),
            "b",
            &format!("http://{addr}"),
        )
        .expect("peer");
        let too_big = peer.answer_limit() + 1;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = s.read(&mut request).await.expect("read");
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {too_big}\r\n\r\n");
            s.write_all(head.as_bytes()).await.expect("head");
            // The client stops reading at its limit and closes: a write may then fail.
            let _ = s.write_all(&vec![0u8; too_big]).await;
        });
        let err = super::DigestPeer::digest(&peer, "rep")
            .await
            .expect_err("refused");
        assert!(err.contains("length limit"), "{err}");
        server.await.expect("server");
    }

    /// A peer's dead register missing here is not stored (it may be one this node collected);
    /// a live one is, and so is a dead one that lands on a record held here.
    #[tokio::test]
    async fn a_dead_record_missing_here_is_not_stored() {
        use meridian_core::record::{Record, Value};
        let node = node_with_keys(2).await;
        let stored = |i: usize| {
            node.store()
                .get(Table::Data, &keys::data_key("rep", &format!("k{i:03}")))
                .expect("get")
        };
        let live = Record::decode(&stored(0).expect("k000")).expect("record");
        let mut dead = live.clone();
        let Value::Register(r) = &mut dead.value else {
            panic!("a register")
        };
        r.value = None;
        r.version.ts = meridian_core::hlc::Timestamp(r.version.ts.0 + 1);
        dead.version = r.version.clone();
        let row =
            |i: usize, rec: &Record| (keys::data_key("rep", &format!("k{i:03}")), rec.encode());

        let changed = super::merge_rows(
            &node,
            "rep",
            vec![row(7, &dead), row(8, &live)],
            super::MissingDead::Skip,
        )
        .await
        .expect("merge");
        assert_eq!(changed, 1);
        assert!(stored(7).is_none(), "the dead one missing here");
        assert!(stored(8).is_some(), "the live one missing here");

        let changed =
            super::merge_rows(&node, "rep", vec![row(0, &dead)], super::MissingDead::Skip)
                .await
                .expect("merge");
        assert_eq!(changed, 1, "a newer delete of a record held here");
        let here = Record::decode(&stored(0).expect("k000")).expect("record");
        assert!(!here.is_live(node.now()));
    }
}
