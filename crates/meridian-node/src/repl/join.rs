//! Joining: what a region's new store learns from its peers before the node serves.
//!
//! A store created where the topology has peers — a region's first start, a region added to a
//! running cluster, a region whose disk was lost or replaced — starts empty, while its peers
//! may hold data this region must hold and writes this region made under sequence numbers,
//! dots and counter totals the new store knows nothing of. Serving at once would lose writes:
//! new ones numbered again from 1 are taken by the peers for ones they already have, and an
//! increment counted from nothing is hidden by the old total. So a new store first joins:
//!
//! 1. It asks every peer `POST /v1/repl/heads`, stating its incarnation and what it has
//!    applied (nothing). A peer that knew another incarnation of this region forgets what that
//!    store had acknowledged (`Node::peer_heads`), so it collects nothing this store still
//!    lacks, and answers what it has applied, its HLC and whether it is joining itself. Peers
//!    that do not answer are asked again each second until every peer has answered — or, when
//!    none that answered holds a write of this region (a first start), until the rest are down
//!    (nothing listens) rather than silent — and, when none answered at all, for
//!    `NodeConfig::join_wait` ([`settled`]).
//! 2. When no peer that answered holds anything, this is the cluster's first start: done.
//! 3. Otherwise it copies, keyspace by keyspace, from the peer that holds most of this
//!    region's own writes among those holding every key of the keyspace this region may hold
//!    ([`plan`]), every record and idempotency outcome this region may hold
//!    (`GET /v1/repl/copy/{keyspace}/{table}`, pages of at most 4 MiB, residency checked per
//!    key by the peer), merging them in as digest repair does; a keyspace only a down peer
//!    could give waits for that peer ([`Plan::unsourced`]). It takes as applied the
//!    pointwise least of the copy sources' heads, asked again once every peer has been told
//!    (later writes the copy already brought are merged again harmlessly: every merge is
//!    idempotent), the highest sequence any peer holds of this region's writes for its next
//!    one, an HLC past everything the peers saw, and the floor of what it issued from the
//!    records it now holds. Replication resumes from there.
//!
//! Until the join is done the node answers clients 503 `joining`, `/health/ready` says so, and
//! the background work waits ([`Node::joined`]). A join cut short (a crash) starts again at the
//! next start: the store says `joining` until the end, when one transaction stores all of it.
//! A lost store taken for a first start (every peer down past the wait) is caught later, when
//! a peer reports more of this region's writes than the new store made
//! ([`Node::sequence_conflict`]).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::Method;
use meridian_core::config::{Keyspace, Replication, Residency, Topology};
use meridian_core::hlc::Timestamp;
use meridian_core::record::Record;
use meridian_core::version::{Dot, VersionVector};
use meridian_core::wire::{LogBody, encode_log_body, from_postcard_exact};
use meridian_store::{KeyValue, Table};
use serde::{Deserialize, Serialize};

use super::dial::Dialer;
use super::digest::{
    HttpPeer, MissingDead, PAGE_BYTES, PageQuery, blocking, merge_rows, page_response,
};
use crate::error::ApiError;
use crate::keys;
use crate::state::{Join, Node};
use crate::write::{StoredOutcome, put_idempotency};

/// How long one ask of a peer's heads may take before the peer is asked again.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between rounds of asking the peers that have not answered yet.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often a join waiting for peers says which.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a joining node states to a peer (postcard body of `POST /v1/repl/heads`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The joining store's incarnation.
    pub incarnation: u64,
    /// What it has applied.
    pub applied: VersionVector,
}

/// A peer's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    /// The peer's store incarnation.
    pub incarnation: u64,
    /// What the peer has applied: every origin's writes up to these sequences.
    pub applied: VersionVector,
    /// The peer's HLC: at or after every timestamp it has seen.
    pub hlc: u64,
    /// Whether the peer is joining itself (its data is not complete yet).
    pub joining: bool,
    /// The highest sequence of the asking region's writes the peer knows any store of that
    /// region to have made: what it applied of them, what that region's stores and every other
    /// region reported applying of them, and what its pending tombstone collections wait for
    /// of them. Carried in the [`CLAIMED_HEADER`] (the postcard body keeps its first layout);
    /// a peer that does not send it claims what it applied.
    #[serde(skip)]
    pub claimed: u64,
}

/// The response header of `POST /v1/repl/heads` carrying [`Heads::claimed`].
pub const CLAIMED_HEADER: &str = "meridian-claimed";

/// The tables a join copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyTable {
    /// Records.
    Data,
    /// Idempotency outcomes.
    Idempotency,
}

impl CopyTable {
    /// Both, in the order a join copies them.
    pub const ALL: [CopyTable; 2] = [CopyTable::Data, CopyTable::Idempotency];

    /// The name in the copy endpoint's path.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyTable::Data => "data",
            CopyTable::Idempotency => "idempotency",
        }
    }

    fn parse(s: &str) -> Option<CopyTable> {
        CopyTable::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What a join does, decided from the peers' answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per keyspace that `region` may hold and some peer holds in full, the peer to copy it
    /// from.
    pub sources: BTreeMap<String, String>,
    /// The highest sequence of `region`'s own writes any peer holds.
    pub last_seq: u64,
    /// The highest sequence of `region`'s writes any peer knows a store of it made (at least
    /// `last_seq`): its next write follows. The writes between are lost with the old store
    /// (no peer holds them), and the join fills their places with skips, so no sequence number
    /// is used twice and every region's version vector passes them.
    pub claimed: u64,
    /// The greatest HLC any peer stated.
    pub hlc: u64,
    /// When some peer holds data: each keyspace `region` may hold that no answering peer can
    /// be copied from, with the down peers that hold all of it. The join waits for them: its
    /// applied version vector would otherwise claim writes of the keyspace it never copied.
    pub unsourced: BTreeMap<String, Vec<String>>,
}

/// [`Heads::claimed`] for `region`, as this node knows it now.
async fn claimed_of(node: &Node, region: &str) -> Result<u64, ApiError> {
    let applied = node.applied().borrow().get(region);
    let reported = node
        .acked()
        .borrow()
        .values()
        .map(|vv| vv.get(region))
        .max()
        .unwrap_or(0);
    let (here, owned) = (node.clone(), region.to_string());
    let noted = blocking(move || super::gc::noted_max(&here, &owned))
        .await
        .map_err(ApiError::internal)?;
    Ok(applied
        .max(reported)
        .max(noted)
        .max(node.lost_claim(region)))
}

/// Whether `peer` holds every key of `ks` that `region` may hold: every region holds an
/// unpinned keyspace; a pinned one, the regions it allows; a `home-zone` one, each region the
/// keys homed in its zone (so a region of `region`'s zone). `local` keyspaces are never copied.
pub fn holds_all_of(topology: &Topology, ks: &Keyspace, region: &str, peer: &str) -> bool {
    if ks.replication == Replication::Local {
        return false;
    }
    match &ks.residency {
        None => true,
        Some(Residency::HomeZone) => {
            topology.zone_of(region).is_some() && topology.zone_of(region) == topology.zone_of(peer)
        }
        Some(_) => {
            let allowed = topology.allowed_regions(ks);
            allowed.contains(&region) && allowed.contains(&peer)
        }
    }
}

/// The join of `region` given each peer's answer (`None`: down). Copies come only from peers
/// that are not joining themselves and hold something; of those, each keyspace from the one
/// that [`holds_all_of`] it with the most of `region`'s writes, then the most writes in all,
/// then the first by name. A first start (no answering peer holds anything) copies nothing.
pub fn plan(topology: &Topology, region: &str, answers: &BTreeMap<String, Option<Heads>>) -> Plan {
    let answered: Vec<(&String, &Heads)> = answers
        .iter()
        .filter_map(|(peer, heads)| Some((peer, heads.as_ref()?)))
        .collect();
    let last_seq = answered
        .iter()
        .map(|(_, h)| h.applied.get(region))
        .max()
        .unwrap_or(0);
    let claimed = answered
        .iter()
        .map(|(_, h)| h.claimed)
        .max()
        .unwrap_or(0)
        .max(last_seq);
    let hlc = answered.iter().map(|(_, h)| h.hlc).max().unwrap_or(0);
    let mut ranked: Vec<(&String, &Heads)> = answered
        .into_iter()
        .filter(|(_, h)| !h.joining && !h.applied.is_empty())
        .collect();
    let total = |h: &Heads| h.applied.iter().map(|(_, n)| u128::from(n)).sum::<u128>();
    ranked.sort_by(|(a, ha), (b, hb)| {
        (hb.applied.get(region), total(hb))
            .cmp(&(ha.applied.get(region), total(ha)))
            .then_with(|| a.cmp(b))
    });
    let sources: BTreeMap<String, String> = topology
        .keyspaces
        .iter()
        .filter_map(|ks| {
            let (peer, _) = ranked
                .iter()
                .find(|(peer, _)| holds_all_of(topology, ks, region, peer))?;
            Some((ks.name.clone(), (*peer).clone()))
        })
        .collect();
    let unsourced = topology
        .keyspaces
        .iter()
        .filter(|ks| !ranked.is_empty() && !sources.contains_key(&ks.name))
        .filter_map(|ks| {
            let down: Vec<String> = answers
                .iter()
                .filter(|(peer, heads)| heads.is_none() && holds_all_of(topology, ks, region, peer))
                .map(|(peer, _)| peer.clone())
                .collect();
            (!down.is_empty()).then(|| (ks.name.clone(), down))
        })
        .collect();
    Plan {
        sources,
        last_seq,
        claimed,
        hlc,
        unsourced,
    }
}

/// What the node takes as applied after copying from sources whose heads were `heads`: the
/// pointwise least of them for every other origin (the copies hold at least that of each), and
/// `last_seq` for `region` itself.
pub fn adopted(
    region: &str,
    origins: &[&str],
    heads: &[&VersionVector],
    last_seq: u64,
) -> VersionVector {
    let mut out = VersionVector::default();
    for origin in origins.iter().filter(|o| **o != region) {
        let least = heads.iter().map(|h| h.get(origin)).min().unwrap_or(0);
        out.add(&Dot {
            origin: (*origin).to_string(),
            counter: least,
        });
    }
    out.add(&Dot {
        origin: region.to_string(),
        counter: last_seq,
    });
    out
}

/// `POST /v1/repl/heads` with a postcard [`Hello`]: records what the joining peer states (a
/// new incarnation makes this node forget what the peer's old store had acknowledged) and
/// answers postcard [`Heads`].
pub(crate) async fn heads(State(node): State<Node>, headers: HeaderMap, body: Bytes) -> Response {
    let run = async {
        let peer = super::serve::authenticate(&node, &headers)?;
        let hello: Hello = from_postcard_exact(&body, "hello").map_err(|e| {
            ApiError::bad_request(
                "bad_hello",
                format!("the body is not a join's hello: {e}"),
                "a postcard Hello: the joining store's incarnation and applied version vector",
            )
        })?;
        // Before the hello makes this node forget what the peer's old store reported.
        let claimed = claimed_of(&node, &peer).await?;
        node.peer_heads(&peer, Some(hello.incarnation), &hello.applied);
        let answer = Heads {
            incarnation: node.incarnation(),
            applied: node.applied().borrow().clone(),
            hlc: node.now().0,
            joining: node.join_state() != Join::Done,
            claimed,
        };
        let mut resp = page_response(&answer, None)?;
        resp.headers_mut()
            .insert(CLAIMED_HEADER, axum::http::HeaderValue::from(claimed));
        Ok::<_, ApiError>(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/repl/copy/{keyspace}/{table}?after=K`: postcard `Vec<(table key, value)>` of the
/// keyspace's records (`data`) or idempotency outcomes (`idempotency`) that the asking peer
/// may hold, keys after `K` (base64url) ascending, at most [`PAGE_BYTES`] of them; when cut
/// there, the `Meridian-More-After` header names the last key read. Records of a pinned
/// keyspace are each checked against the regions their key may be held in; the idempotency
/// outcomes of a `home-zone` keyspace are not sent (they do not name their key).
pub(crate) async fn copy(
    State(node): State<Node>,
    headers: HeaderMap,
    Path((ks, table)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
) -> Response {
    let run = async {
        let peer = super::serve::authenticate(&node, &headers)?;
        let topology = node.topology();
        let keyspace = topology
            .keyspace(&ks)
            .filter(|k| holds_all_of(topology, k, &peer, node.region()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_copied",
                    format!(
                        "keyspace `{ks}` is unknown, local, or pinned so that `{}` does not hold \
                         every key of it `{peer}` may hold",
                        node.region()
                    ),
                    "a join copies a keyspace from a region that holds all of it the joining \
                     region may hold",
                )
            })?
            .clone();
        let table = CopyTable::parse(&table).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_table",
                format!("`{table}` is not a table a join copies"),
                "`data` or `idempotency`",
            )
        })?;
        let after = page.after()?;
        let here = node.clone();
        let (rows, more) = blocking(move || {
            copy_page(&here, &keyspace, table, &peer, after.as_deref(), PAGE_BYTES)
        })
        .await
        .map_err(ApiError::internal)?;
        page_response(&rows, more)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// One page of [`copy`], from one streaming scan: rows until their bytes reach `max_bytes`
/// (at least one), and the last key read when more may follow.
fn copy_page(
    node: &Node,
    ks: &Keyspace,
    table: CopyTable,
    peer: &str,
    after: Option<&[u8]>,
    max_bytes: usize,
) -> Result<(Vec<KeyValue>, Option<Vec<u8>>), String> {
    let topology = node.topology();
    let (store_table, prefix) = match table {
        CopyTable::Data => (Table::Data, keys::data_key(&ks.name, "")),
        CopyTable::Idempotency => (Table::Idempotency, keys::idempotency_key(&ks.name, "")),
    };
    if table == CopyTable::Idempotency && ks.residency == Some(Residency::HomeZone) {
        return Ok((Vec::new(), None));
    }
    let (mut rows, mut bytes, mut last, mut cut) = (Vec::new(), 0, None, false);
    node.store()
        .scan_each(store_table, &prefix, after, |k, v| {
            if bytes >= max_bytes {
                cut = true;
                return ControlFlow::Break(());
            }
            last = Some(k.to_vec());
            let send = match table {
                CopyTable::Idempotency => true,
                CopyTable::Data => Record::decode(v).is_ok_and(|r| {
                    let home = r.home.as_deref().unwrap_or(&r.version.origin);
                    topology
                        .regions_for_key(ks, home)
                        .is_none_or(|allowed| allowed.contains(&peer))
                }),
            };
            if send {
                bytes += k.len() + v.len();
                rows.push((k.to_vec(), v.to_vec()));
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    Ok((rows, if cut { last } else { None }))
}

/// Joins the node's new store to its peers (see the module documentation), retrying until it
/// is done, then lets the node serve. Runs once, from [`crate::start`].
pub async fn run(node: Node, dialer: Arc<dyn Dialer>) {
    let started = Instant::now();
    tracing::info!(
        incarnation = node.incarnation(),
        "a new store: asking the peers what this region must hold before serving"
    );
    let mut warned: Option<Instant> = None;
    loop {
        match join(&node, &dialer).await {
            Ok((records, outcomes)) => {
                tracing::info!(
                    records,
                    idempotency_outcomes = outcomes,
                    seconds = started.elapsed().as_secs_f64(),
                    next_seq = node.last_seq() + 1,
                    "joined the peers; serving"
                );
                break;
            }
            Err(e) => {
                if warned.is_none_or(|w| w.elapsed() >= PROGRESS_EVERY) {
                    tracing::warn!(error = %e, "joining the peers failed; starting over each second");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    node.set_join(Join::Done);
}

/// One attempt: asks every peer, copies, stores the outcome. Returns the records and
/// idempotency outcomes copied.
async fn join(node: &Node, dialer: &Arc<dyn Dialer>) -> Result<(usize, usize), String> {
    let answers = ask_all(node, dialer).await;
    let topology = node.topology();
    let plan = plan(topology, node.region(), &answers);
    if !plan.unsourced.is_empty() {
        let waiting: Vec<String> = plan
            .unsourced
            .iter()
            .map(|(ks, down)| format!("`{ks}` (held by {}, down)", down.join(", ")))
            .collect();
        return Err(format!(
            "no region that answered can give this region all it holds of {}; waiting for one",
            waiting.join(", ")
        ));
    }
    let mut copied = (0, 0);
    let mut heads: BTreeMap<String, VersionVector> = BTreeMap::new();
    for (ks, source) in &plan.sources {
        let peer = peer_of(node, dialer, source)?;
        if !heads.contains_key(source) {
            // Asked again now that every peer has been told: from here on no peer collects
            // what this store lacks, so what the source holds beyond these heads still arrives.
            heads.insert(source.clone(), ask_heads(node, &peer).await?.applied);
        }
        for table in CopyTable::ALL {
            let n = copy_from(node, &peer, ks, table).await?;
            match table {
                CopyTable::Data => copied.0 += n,
                CopyTable::Idempotency => copied.1 += n,
            }
        }
        tracing::info!(keyspace = %ks, %source, "copied");
    }
    let origins: Vec<&str> = topology.regions.iter().map(|r| r.name.as_str()).collect();
    let from: Vec<&VersionVector> = heads.values().collect();
    let held = plan.last_seq.max(node.last_seq());
    // An outcome a copy brought may name a write of the lost store no peer holds any more
    // (its holder lost its disk after an earlier attempt copied from it): past it too.
    let here = node.clone();
    let outcomes = blocking(move || own_outcome_max(&here)).await?;
    let next = plan.claimed.max(held).max(outcomes);
    if next > held {
        tracing::warn!(
            held,
            claimed = next,
            "writes {}..={next} of this region are gone with its old store (no peer holds them): \
             their places are skipped",
            held + 1
        );
    }
    let applied = adopted(node.region(), &origins, &from, next);
    finish(node, &applied, Timestamp(plan.hlc), held + 1..=next).await?;
    Ok(copied)
}

/// `peer`'s answer to the joining node's [`Hello`].
pub(super) async fn ask_heads(
    node: &Node,
    peer: &HttpPeer,
) -> Result<Heads, super::digest::AskError> {
    let hello = Hello {
        incarnation: node.incarnation(),
        applied: node.applied().borrow().clone(),
    };
    // invariant: postcard serialization of plain structs into a Vec cannot fail
    let body = postcard::to_stdvec(&hello).unwrap_or_default();
    let (mut heads, headers): (Heads, _) = peer.send(Method::POST, "/v1/repl/heads", body).await?;
    heads.claimed = headers
        .get(CLAIMED_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| heads.applied.get(node.region()));
    Ok(heads)
}

pub(super) fn peer_of(
    node: &Node,
    dialer: &Arc<dyn Dialer>,
    region: &str,
) -> Result<HttpPeer, String> {
    let url = super::peer_urls(node)
        .into_iter()
        .find(|(r, _)| r == region)
        .map(|(_, url)| url)
        .ok_or_else(|| format!("`{region}` is not a peer"))?;
    HttpPeer::new(node.clone(), Arc::clone(dialer), region, &url)
}

/// Every peer's answer, `None` for those nothing answers for; asks again, each [`RETRY`], the
/// peers that did not answer until [`settled`] says the join may go on.
async fn ask_all(node: &Node, dialer: &Arc<dyn Dialer>) -> BTreeMap<String, Option<Heads>> {
    let peers = super::peer_urls(node);
    let mut answered: BTreeMap<String, Heads> = BTreeMap::new();
    // What an earlier attempt learnt stays learnt (seed 3016741: a peer holding writes of this
    // region answered one attempt and was down for the next, which took a first start).
    let mut lost = matches!(
        node.store().get(Table::Meta, keys::META_JOIN_LOST),
        Ok(Some(_))
    );
    let started = tokio::time::Instant::now();
    let mut reported = Instant::now();
    loop {
        let asks =
            peers
                .iter()
                .filter(|(region, _)| !answered.contains_key(region))
                .map(|(region, url)| async move {
                    (region.clone(), ask(node, dialer, region, url).await)
                });
        let (mut down, mut silent) = (Vec::new(), Vec::new());
        for (region, asked) in futures_util::future::join_all(asks).await {
            match asked {
                Asked::Answered(heads) => {
                    tracing::info!(peer = %region, applied = %heads.applied.to_token(), claimed = heads.claimed, joining = heads.joining, "a peer answered the join");
                    answered.insert(region, heads);
                }
                Asked::Down(why) => down.push(format!("{region} ({why})")),
                Asked::Failed(why) => silent.push(format!("{region} ({why})")),
            }
        }
        let waited = node
            .config()
            .join_wait
            .is_some_and(|wait| started.elapsed() >= wait);
        let region = node.region();
        if !lost
            && answered
                .values()
                .any(|h| h.applied.get(region) > 0 || h.claimed > 0)
        {
            lost = true;
            if let Err(e) = node
                .store()
                .transact(|txn| txn.put(Table::Meta, keys::META_JOIN_LOST, b"1"))
                .await
            {
                tracing::warn!(error = %e, "joining: could not store that this store replaces a lost one");
            }
        }
        if settled(region, &answered, down.len(), silent.len(), waited, lost) {
            if !down.is_empty() {
                tracing::info!(down = %down.join("; "), "peers are down and no peer that answered holds a write of this region (a first start): joining without them");
            }
            let mut answers: BTreeMap<String, Option<Heads>> =
                peers.iter().map(|(r, _)| (r.clone(), None)).collect();
            answers.extend(answered.into_iter().map(|(r, h)| (r, Some(h))));
            return answers;
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            let alone = answered.is_empty() && silent.is_empty();
            tracing::warn!(
                waiting = %[down, silent].concat().join("; "),
                "joining: waiting for peers to say what they hold (any of them may hold writes \
                 of this region that no other holds; a region gone for good leaves the topology \
                 file){}",
                if alone {
                    "; no peer is running: if this is the first region of a new cluster, start \
                     the others, or restart this one with --join-wait 5s to start it alone"
                } else {
                    ""
                }
            );
            reported = Instant::now();
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Whether a join may go on with the peers `answered` so far, `down` peers nothing answers
/// for (refused or closed connections) and `silent` ones that may be up but did not answer:
/// when every peer answered; or, when none that answered holds a write of `region` (the
/// cluster's first start, or a region new to it), when the rest are down — provided a peer
/// that is not joining itself answered (a joining peer's empty answer vouches for nothing: it
/// may be a lost store too, seed 5014953), or once the node has `waited` its `join_wait`. Once some peer holds a
/// write of `region` — or knows one was made ([`Heads::claimed`]: another peer, down now,
/// reported applying it) — its store was lost, and every peer must answer: any of them may
/// hold writes of it that the others lack, whose sequence numbers a new write must not reuse.
pub fn settled(
    region: &str,
    answered: &BTreeMap<String, Heads>,
    down: usize,
    silent: usize,
    waited: bool,
    lost: bool,
) -> bool {
    if down == 0 && silent == 0 {
        return true;
    }
    !lost
        && silent == 0
        && answered
            .values()
            .all(|h| h.applied.get(region) == 0 && h.claimed == 0)
        && (waited || answered.values().any(|h| !h.joining))
}

/// One peer's answer to a join's ask.
enum Asked {
    Answered(Heads),
    /// Nothing answers for it (or it predates joins): why.
    Down(String),
    /// It may be up but did not answer: why.
    Failed(String),
}

async fn ask(node: &Node, dialer: &Arc<dyn Dialer>, region: &str, url: &str) -> Asked {
    let peer = match HttpPeer::new(node.clone(), Arc::clone(dialer), region, url) {
        Ok(p) => p,
        Err(e) => return Asked::Down(format!("its URL is not one a join can use: {e}")),
    };
    match tokio::time::timeout(ASK_TIMEOUT, ask_heads(node, &peer)).await {
        Ok(Ok(heads)) => Asked::Answered(heads),
        Ok(Err(e)) if e.unreachable || e.status == Some(StatusCode::NOT_FOUND) => {
            Asked::Down(e.to_string())
        }
        Ok(Err(e)) => Asked::Failed(e.to_string()),
        Err(_) => Asked::Failed(format!("no answer within {ASK_TIMEOUT:?}")),
    }
}

/// Copies `table` of keyspace `ks` from `peer`, page by page; returns the entries written.
pub(super) async fn copy_from(
    node: &Node,
    peer: &HttpPeer,
    ks: &str,
    table: CopyTable,
) -> Result<usize, String> {
    let mut written = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let path = format!("/v1/repl/copy/{ks}/{}", table.as_str());
        let (rows, more): (Vec<KeyValue>, _) = peer.page(&path, after.as_deref()).await?;
        written += match table {
            CopyTable::Data => merge_rows(node, ks, rows, MissingDead::Store).await?,
            CopyTable::Idempotency => store_outcomes(node, ks, rows).await?,
        };
        match more {
            Some(m) if Some(&m) != after.as_ref() => after = Some(m),
            Some(_) => return Err(format!("{ks}: the copy's pages did not advance")),
            None => return Ok(written),
        }
    }
}

/// Stores the idempotency outcomes of `rows` (keys of `ks`) that are not here and have not
/// expired; returns how many.
async fn store_outcomes(node: &Node, ks: &str, rows: Vec<KeyValue>) -> Result<usize, String> {
    let prefix = keys::idempotency_key(ks, "");
    let now = node.now();
    node.store()
        .transact(move |txn| -> Result<usize, String> {
            let mut stored = 0;
            for (k, v) in rows {
                // Only outcomes of this keyspace; never trust a peer with other keys.
                if !k.starts_with(&prefix)
                    || txn
                        .get(Table::Idempotency, &k)
                        .map_err(|e| e.to_string())?
                        .is_some()
                {
                    continue;
                }
                let outcome = StoredOutcome::decode(&v).map_err(|e| e.message)?;
                if outcome.expires > now {
                    put_idempotency(txn, &k, &outcome);
                    stored += 1;
                }
            }
            Ok(stored)
        })
        .await
        .map_err(|e| e.to_string())?
}

/// Stages `vv` as applied for every origin but `region`, where it is ahead of what is stored;
/// returns what it raised.
pub(super) fn raise_applied(
    txn: &mut meridian_store::Txn<'_>,
    region: &str,
    vv: &VersionVector,
) -> Result<VersionVector, String> {
    let mut raised = VersionVector::default();
    for (origin, seq) in vv.iter().filter(|(o, _)| *o != region) {
        let key = keys::vv_key(origin);
        let had = txn
            .get(Table::Meta, &key)
            .map_err(|e| e.to_string())?
            .as_deref()
            .and_then(keys::decode_u64)
            .unwrap_or(0);
        if seq > had {
            txn.put(Table::Meta, &key, &seq.to_be_bytes());
            raised.add(&Dot {
                origin: origin.to_string(),
                counter: seq,
            });
        }
    }
    Ok(raised)
}

/// The highest sequence of this region's writes that an idempotency outcome held here names.
fn own_outcome_max(node: &Node) -> Result<u64, String> {
    let mut max = 0;
    node.store()
        .scan_each(Table::Idempotency, b"", None, |_, v| {
            if let Ok(StoredOutcome {
                seq: Some((origin, seq)),
                ..
            }) = StoredOutcome::decode(v)
                && origin == node.region()
            {
                max = max.max(seq);
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    Ok(max)
}

/// Stores what the join learnt, with the store's `joined` mark, in one transaction, and hands
/// it to the node; `skipped` are this region's sequence numbers its lost store used for writes
/// no peer holds, each logged as a bare skip that no region holds (replicated like any entry).
async fn finish(
    node: &Node,
    applied: &VersionVector,
    hlc: Timestamp,
    skipped: std::ops::RangeInclusive<u64>,
) -> Result<(), String> {
    let here = node.clone();
    let floor = blocking(move || {
        crate::state::scan_floor(here.store(), here.region()).map_err(|e| e.to_string())
    })
    .await?;
    let region = node.region().to_string();
    let vv = applied.clone();
    let last_seq = applied.get(&region);
    node.store()
        .transact(move |txn| -> Result<(), String> {
            raise_applied(txn, &region, &vv)?;
            let skip = encode_log_body(&LogBody::Skip {
                allowed: Vec::new(),
            });
            if !skipped.is_empty() {
                let mut lost: Vec<(u64, u64)> = txn
                    .get(Table::Meta, keys::META_LOST_SEQS)
                    .map_err(|e| e.to_string())?
                    .and_then(|b| postcard::from_bytes(&b).ok())
                    .unwrap_or_default();
                lost.push((*skipped.start(), *skipped.end()));
                // invariant: postcard serialization of a Vec of pairs cannot fail
                let bytes = postcard::to_stdvec(&lost).unwrap_or_default();
                txn.put(Table::Meta, keys::META_LOST_SEQS, &bytes);
            }
            for seq in skipped {
                txn.put(Table::OpLog, &keys::oplog_key(&region, seq), &skip);
            }
            txn.put(Table::Meta, keys::META_LAST_SEQ, &last_seq.to_be_bytes());
            let had = txn
                .get(Table::Meta, keys::META_HLC)
                .map_err(|e| e.to_string())?
                .as_deref()
                .and_then(keys::decode_u64)
                .unwrap_or(0);
            txn.put(Table::Meta, keys::META_HLC, &had.max(hlc.0).to_be_bytes());
            txn.put(Table::Meta, keys::META_FLOOR, &keys::encode_floor(&floor));
            txn.put(Table::Meta, keys::META_JOIN, keys::JOINED);
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
    node.adopt(last_seq, hlc, floor, applied);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Three regions, two of them in zone `eu`; a keyspace of each placement.
    const TOPOLOGY: &str = r#"
[cluster]
name = "t"

[zones]
eu = ["eu-west-1", "eu-central-1"]

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:1"

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:2"

[[region]]
name = "eu-central-1"
node = "http://127.0.0.1:3"

[[keyspace]]
name = "open"
type = "register"

[[keyspace]]
name = "eu"
type = "register"
residency = "eu"

[[keyspace]]
name = "homes"
type = "register"
residency = "home-zone"

[[keyspace]]
name = "mine"
type = "register"
replication = "local"
"#;

    fn topology() -> Topology {
        meridian_core::config::parse("t.toml", TOPOLOGY).expect("topology")
    }

    fn heads(applied: &str, hlc: u64, joining: bool) -> Option<Heads> {
        Some(Heads {
            incarnation: 1,
            applied: VersionVector::parse_token(applied).expect("token"),
            hlc,
            joining,
            claimed: 0,
        })
    }

    fn sources(plan: &Plan) -> Vec<(&str, &str)> {
        plan.sources
            .iter()
            .map(|(k, p)| (k.as_str(), p.as_str()))
            .collect()
    }

    #[test]
    fn a_first_start_copies_nothing() {
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), heads("", 5, true)),
            ("eu-central-1".to_string(), None),
        ]);
        let plan = plan(&topology(), "eu-west-1", &answers);
        assert!(plan.sources.is_empty(), "{plan:?}");
        assert_eq!((plan.last_seq, plan.hlc), (0, 5));
    }

    #[test]
    fn each_keyspace_comes_from_a_peer_holding_all_of_it_that_has_most_of_this_regions_writes() {
        let answers = BTreeMap::from([
            (
                "us-east-1".to_string(),
                heads("eu-west-1:9,us-east-1:50", 70, false),
            ),
            (
                "eu-central-1".to_string(),
                heads("eu-west-1:7,eu-central-1:3", 90, false),
            ),
        ]);
        let plan = plan(&topology(), "eu-west-1", &answers);
        // us-east-1 has more of eu-west-1's writes, but may hold neither pinned keyspace.
        assert_eq!(
            sources(&plan),
            [
                ("eu", "eu-central-1"),
                ("homes", "eu-central-1"),
                ("open", "us-east-1")
            ]
        );
        assert_eq!((plan.last_seq, plan.hlc), (9, 90));
    }

    #[test]
    fn peers_still_joining_or_empty_are_no_source_but_their_heads_count() {
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), heads("eu-west-1:12", 1, true)),
            ("eu-central-1".to_string(), heads("eu-west-1:4", 2, false)),
        ]);
        let plan = plan(&topology(), "eu-west-1", &answers);
        assert_eq!(
            sources(&plan),
            [
                ("eu", "eu-central-1"),
                ("homes", "eu-central-1"),
                ("open", "eu-central-1")
            ]
        );
        assert_eq!(
            plan.last_seq, 12,
            "the next write follows every sequence any peer holds"
        );
    }

    /// A peer that knows the lost store made writes no peer holds (it reported them, or a
    /// tombstone collection waits for them) moves the next write past them; claims below what
    /// a peer holds change nothing.
    #[test]
    fn the_next_write_follows_every_sequence_a_peer_knows_the_old_store_made() {
        let claiming =
            |applied: &str, claimed: u64| heads(applied, 0, false).map(|h| Heads { claimed, ..h });
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), claiming("eu-west-1:12", 30)),
            ("eu-central-1".to_string(), claiming("eu-west-1:20", 20)),
        ]);
        let p = plan(&topology(), "eu-west-1", &answers);
        assert_eq!((p.last_seq, p.claimed), (20, 30));
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), claiming("eu-west-1:12", 0)),
            ("eu-central-1".to_string(), None),
        ]);
        let p = plan(&topology(), "eu-west-1", &answers);
        assert_eq!((p.last_seq, p.claimed), (12, 12));
    }

    #[test]
    fn ties_go_to_the_most_writes_then_the_name() {
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), heads("eu-west-1:3,x:1", 0, false)),
            (
                "eu-central-1".to_string(),
                heads("eu-west-1:3,x:1", 0, false),
            ),
        ]);
        assert_eq!(
            plan(&topology(), "eu-west-1", &answers).sources["open"],
            "eu-central-1"
        );
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), heads("eu-west-1:3,x:2", 0, false)),
            (
                "eu-central-1".to_string(),
                heads("eu-west-1:3,x:1", 0, false),
            ),
        ]);
        assert_eq!(
            plan(&topology(), "eu-west-1", &answers).sources["open"],
            "us-east-1"
        );
    }

    #[test]
    fn a_region_alone_in_no_zone_copies_no_home_zone_keyspace() {
        let t = topology();
        let homes = t.keyspace("homes").expect("homes");
        assert!(!holds_all_of(&t, homes, "us-east-1", "eu-west-1"));
        assert!(holds_all_of(&t, homes, "eu-central-1", "eu-west-1"));
        let local = t.keyspace("mine").expect("mine");
        assert!(!holds_all_of(&t, local, "eu-central-1", "eu-west-1"));
    }

    #[test]
    fn a_keyspace_only_a_down_peer_holds_in_full_is_waited_for() {
        let answers = BTreeMap::from([
            ("us-east-1".to_string(), heads("us-east-1:50", 0, false)),
            ("eu-central-1".to_string(), None),
        ]);
        let plan = plan(&topology(), "eu-west-1", &answers);
        assert_eq!(sources(&plan), [("open", "us-east-1")]);
        let unsourced: Vec<(&str, Vec<String>)> = plan
            .unsourced
            .iter()
            .map(|(k, d)| (k.as_str(), d.clone()))
            .collect();
        assert_eq!(
            unsourced,
            [
                ("eu", vec!["eu-central-1".to_string()]),
                ("homes", vec!["eu-central-1".to_string()])
            ]
        );
        // No data anywhere that answered: a first start, nothing to wait for.
        let empty = BTreeMap::from([
            ("us-east-1".to_string(), heads("", 0, false)),
            ("eu-central-1".to_string(), None),
        ]);
        assert!(plan_of(&empty).unsourced.is_empty());
        // Its zone partner answered, joining too: what only the zone held is gone, no wait.
        let both_lost = BTreeMap::from([
            ("us-east-1".to_string(), heads("us-east-1:50", 0, false)),
            ("eu-central-1".to_string(), heads("", 0, true)),
        ]);
        assert!(plan_of(&both_lost).unsourced.is_empty());
    }

    fn plan_of(answers: &BTreeMap<String, Option<Heads>>) -> Plan {
        plan(&topology(), "eu-west-1", answers)
    }

    #[test]
    fn a_lost_store_waits_for_every_peer_a_first_start_only_for_silent_ones() {
        let knows = BTreeMap::from([("a".to_string(), heads("eu-west-1:3", 0, false).expect("h"))]);
        let fresh = BTreeMap::from([("a".to_string(), heads("a:9", 0, false).expect("h"))]);
        let none = BTreeMap::new();
        let r = "eu-west-1";
        assert!(settled(r, &knows, 0, 0, false, false));
        assert!(
            !settled(r, &knows, 1, 0, true, false),
            "a down peer may hold more of ours"
        );
        assert!(!settled(r, &knows, 0, 1, true, false));
        assert!(
            settled(r, &fresh, 2, 0, false, false),
            "a first start goes on without down peers"
        );
        assert!(
            !settled(r, &fresh, 1, 1, true, false),
            "but waits for silent ones"
        );
        let heard = BTreeMap::from([(
            "a".to_string(),
            Heads {
                claimed: 4,
                ..heads("a:9", 0, false).expect("h")
            },
        )]);
        assert!(
            !settled(r, &heard, 1, 0, true, false),
            "a peer heard a down one apply writes of ours: that one may hold them alone"
        );
        let joining = BTreeMap::from([("a".to_string(), heads("", 0, true).expect("h"))]);
        assert!(
            !settled(r, &joining, 1, 0, false, false),
            "a joining peer's empty answer does not vouch that the down ones hold nothing"
        );
        assert!(
            settled(r, &joining, 1, 0, true, false),
            "but --join-wait opts in"
        );
        assert!(
            settled(r, &joining, 0, 0, false, false),
            "and every peer answering settles"
        );
        assert!(
            !settled(r, &fresh, 2, 0, true, true),
            "an earlier attempt met a peer holding writes of ours: every peer, however long"
        );
        assert!(settled(r, &fresh, 0, 0, false, true));
        assert!(
            !settled(r, &none, 2, 0, false, false),
            "no answer at all: wait"
        );
        assert!(settled(r, &none, 2, 0, true, false), "for join_wait");
    }

    #[test]
    fn what_is_adopted_is_the_least_of_the_sources_and_the_own_sequence() {
        let a = VersionVector::parse_token("us-east-1:10,eu-central-1:4,eu-west-1:2").expect("a");
        let b = VersionVector::parse_token("us-east-1:7,eu-central-1:9").expect("b");
        let origins = ["us-east-1", "eu-west-1", "eu-central-1"];
        let vv = adopted("eu-west-1", &origins, &[&a, &b], 11);
        assert_eq!(vv.to_token(), "eu-central-1:4,eu-west-1:11,us-east-1:7");
    }

    /// A join stores every record it copies, deleted ones too: it takes the source's heads as
    /// applied, so the delete's op is not coming again, and an older write still on its way
    /// would otherwise live here alone (seed 5013250 of the turmoil test). And the places of
    /// writes its lost store made that no peer holds are logged as bare skips no region holds.
    #[tokio::test]
    async fn a_join_keeps_copied_tombstones_and_skips_the_lost_stores_unheld_writes() {
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let source = crate::testing::node(TOPOLOGY, "eu-central-1", &clock);
        for key in ["live", "gone"] {
            let m = crate::testing::put(&source, "open", key, Default::default());
            crate::write::write(&source, m).await.expect("put");
        }
        let delete = meridian_core::op::Op::Delete { context: None };
        let m = crate::testing::mutation(&source, "open", "gone", delete, Default::default());
        crate::write::write(&source, m).await.expect("delete");
        let keyspace = source.topology().keyspace("open").expect("open").clone();
        let (rows, more) = copy_page(
            &source,
            &keyspace,
            CopyTable::Data,
            "eu-west-1",
            None,
            1 << 20,
        )
        .expect("page");
        assert_eq!(
            (rows.len(), more),
            (2, None),
            "the copy sends the tombstone"
        );

        let fresh = crate::testing::node(TOPOLOGY, "eu-west-1", &clock);
        let stored = merge_rows(&fresh, "open", rows.clone(), MissingDead::Store)
            .await
            .expect("merge");
        assert_eq!(stored, 2, "the live record and the tombstone");
        let gone = fresh
            .store()
            .get(Table::Data, &keys::data_key("open", "gone"))
            .expect("get")
            .expect("the tombstone is stored");
        assert!(!Record::decode(&gone).expect("record").is_live(fresh.now()));
        let repaired = crate::testing::node(TOPOLOGY, "eu-west-1", &clock);
        let stored = merge_rows(&repaired, "open", rows, MissingDead::Skip)
            .await
            .expect("merge");
        assert_eq!(stored, 1, "digest repair leaves a tombstone it lacks alone");

        let applied = VersionVector::parse_token("eu-central-1:3,eu-west-1:7").expect("vv");
        finish(&fresh, &applied, Timestamp(0), 5..=7)
            .await
            .expect("finish");
        assert_eq!(fresh.last_seq(), 7);
        let log = fresh
            .store()
            .scan(Table::OpLog, b"", None, 100)
            .expect("scan");
        let entries: Vec<(String, u64, LogBody)> = log
            .iter()
            .map(|(k, v)| {
                let (origin, seq) = keys::parse_oplog_key(k).expect("key");
                let body = meridian_core::wire::decode_log_body(v).expect("body");
                (origin.to_string(), seq, body)
            })
            .collect();
        let skip = LogBody::Skip {
            allowed: Vec::new(),
        };
        assert_eq!(
            entries,
            (5..=7)
                .map(|seq| ("eu-west-1".to_string(), seq, skip.clone()))
                .collect::<Vec<_>>()
        );
    }

    /// A store made by this node's writes, copied page by page into a new one: the copy holds
    /// the same records, and the pinned keyspace's records only where the asker may hold them.
    #[tokio::test]
    async fn pages_cover_every_record_the_asker_may_hold_exactly_once() {
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let node = crate::testing::node(TOPOLOGY, "eu-central-1", &clock);
        for i in 0..50 {
            let m = crate::testing::put(&node, "open", &format!("k{i:02}"), Default::default());
            crate::write::write(&node, m).await.expect("write");
            let m = crate::testing::put(&node, "eu", &format!("k{i:02}"), Default::default());
            crate::write::write(&node, m).await.expect("write");
        }
        let t = node.topology().clone();
        for (asker, ks, want) in [
            ("eu-west-1", "open", 50),
            ("eu-west-1", "eu", 50),
            ("us-east-1", "eu", 0),
        ] {
            let keyspace = t.keyspace(ks).expect("keyspace");
            let (mut all, mut after) = (Vec::new(), None::<Vec<u8>>);
            for _ in 0..100 {
                let (rows, more) = copy_page(
                    &node,
                    keyspace,
                    CopyTable::Data,
                    asker,
                    after.as_deref(),
                    300,
                )
                .expect("page");
                all.extend(rows);
                match more {
                    Some(m) => after = Some(m),
                    None => break,
                }
            }
            assert_eq!(all.len(), want, "{asker} {ks}");
            let mut keys: Vec<&Vec<u8>> = all.iter().map(|(k, _)| k).collect();
            keys.dedup();
            assert_eq!(keys.len(), want, "{asker} {ks}: a key twice");
        }
    }
}
