//! The node's shared state: topology, store, clock, and the channels that carry changes out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use meridian_core::config::{Keyspace, Topology};
use meridian_core::hlc::{Hlc, Timestamp};
use meridian_core::op::Floor;
use meridian_core::version::{Dot, VersionVector};
use meridian_store::{Store, Table};
use tokio::sync::{broadcast, watch};

use crate::Error;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::keys;

/// Greatest clock offset accepted from a peer's timestamp, in milliseconds.
pub const MAX_CLOCK_OFFSET_MS: u64 = 1_000;
/// How many changes the watch feed buffers per subscriber before it drops a slow one.
pub const FEED_CAPACITY: usize = 4_096;

/// One change, as published on the watch feed after it is durable.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// Keyspace of the key.
    pub keyspace: String,
    /// The key.
    pub key: String,
    /// The operation: `put`, `delete`, `incr`, `add`, `remove`, `patch` or `expire`.
    pub op: &'static str,
    /// The new version of the key (absent for expiry).
    pub etag: Option<String>,
    /// Whether the key holds a value after the change.
    pub live: bool,
    /// The region where the change was made.
    pub region: String,
}

/// Where a node's store stands with its peers (see [`crate::repl::join`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The store knows what it holds: it existed before this start, or it has joined.
    Done,
    /// A new store in a topology with peers, not joined yet; [`crate::start`] joins it.
    Needed,
    /// Joining now: client requests are refused (503 `joining`) and the background work that
    /// reads or writes replicated state waits.
    Running,
}

/// How many recent conflicts `/v1/conflicts` keeps.
pub const CONFLICTS_KEPT: usize = 1_000;

/// Settings of a node beyond the topology.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The cluster secret: authenticates peers and admin calls. `None` leaves both open.
    pub secret: Option<String>,
    /// Base URL per peer region, overriding the region's `node` URL (the lab points these at
    /// its WAN emulator's relays).
    pub peer_urls: BTreeMap<String, String>,
    /// How long a new store waits for any peer to answer before it takes a start where every
    /// peer refuses connections for the cluster's first (see [`crate::repl::join`]); `None`:
    /// until one answers, for a disk lost while every peer was down would reuse the lost
    /// store's write numbers (`meridian region` without `--join-wait`). Zero by default, for
    /// tests that start one node of a larger topology.
    pub join_wait: Option<std::time::Duration>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            secret: None,
            peer_urls: BTreeMap::new(),
            join_wait: Some(std::time::Duration::ZERO),
        }
    }
}

/// A replication link to one peer, as this node sees it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PeerLink {
    /// `connecting`, `up` or `down`.
    pub state: &'static str,
    /// Why the link last failed.
    pub last_error: Option<String>,
    /// Replication bytes received from the peer.
    pub bytes_received: u64,
    /// Replication bytes sent to the peer (egress).
    pub bytes_sent: u64,
    /// Protocol version of the stream pulled from the peer at the last connection (`None`
    /// before the first one).
    pub wire_version: Option<u8>,
    /// How the peer's topology compares with this node's, as of the last connection: `same`,
    /// or each difference in words (`None` before the first connection, or when the peer
    /// does not state its terms).
    pub topology: Option<String>,
}

/// Two writes to one key made without either seeing the other, where one overwrote the other.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conflict {
    /// Keyspace of the key.
    pub keyspace: String,
    /// The key.
    pub key: String,
    /// ETag of the write that won (highest HLC, then origin).
    pub winner: String,
    /// ETag of the write that lost.
    pub loser: String,
    /// HLC time (ms) when this region saw it.
    pub detected_ms: u64,
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Arc<Topology>,
    region: String,
    store: Store,
    clock: Arc<dyn Clock>,
    hlc: Mutex<Hlc>,
    last_seq: AtomicU64,
    /// See [`Node::floor`].
    floor: Mutex<Floor>,
    changes: broadcast::Sender<Change>,
    applied: watch::Sender<VersionVector>,
    config: NodeConfig,
    acked: watch::Sender<BTreeMap<String, VersionVector>>,
    links: Mutex<BTreeMap<String, PeerLink>>,
    conflicts: Mutex<VecDeque<Conflict>>,
    closing: watch::Sender<bool>,
    /// Bumped when the node caught up by copy: its links reopen with their new heads.
    resyncs: watch::Sender<u64>,
    oplog_start: crate::repl::gc::OpLogStart,
    watermarks: crate::repl::watermark::Watermarks,
    digests: crate::repl::digest::Digests,
    /// Clients' writes between [`Node::admit_write`] and their store's answer.
    pending_writes: AtomicUsize,
    /// See [`Node::replication_terms`].
    terms: String,
    /// See [`Node::connection_slots`].
    connections: meridian_http::Slots,
    /// See [`Node::incarnation`].
    incarnation: u64,
    /// See [`Node::join_state`]: read on every client request, so an atomic (a [`Join`] as
    /// `u8`); `join_changed` wakes [`Node::joined`].
    join: std::sync::atomic::AtomicU8,
    join_changed: watch::Sender<()>,
    /// The incarnation each peer last stated (see [`Node::peer_heads`]).
    peer_incarnations: Mutex<BTreeMap<String, u64>>,
    /// Per peer whose store was replaced, the highest sequence of its own writes an old store
    /// of it reported applying (see [`Node::lost_claim`]).
    lost_claims: Mutex<BTreeMap<String, u64>>,
    /// See [`Node::sequence_conflict`].
    sequence_conflict: std::sync::OnceLock<String>,
}

/// One client write's place among those waiting for the store (see [`Node::admit_write`]);
/// dropping it frees the place. The write's transaction holds it, so a write whose client
/// gave up keeps its place until the store has run it.
pub(crate) struct PendingWrite(Node);

impl Drop for PendingWrite {
    fn drop(&mut self) {
        self.0.inner.pending_writes.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Node {
    /// A node for `region` of `topology` over an opened store. Restores the HLC and the op-log
    /// sequence from the store, so timestamps and sequences never repeat across restarts.
    pub fn new(
        topology: Arc<Topology>,
        region: &str,
        store: Store,
        clock: Arc<dyn Clock>,
        config: NodeConfig,
    ) -> Result<Node, Error> {
        if topology.region(region).is_none() {
            return Err(Error::UnknownRegion {
                region: region.to_string(),
                known: topology.regions.iter().map(|r| r.name.clone()).collect(),
            });
        }
        let last_seq = meta_u64(&store, keys::META_LAST_SEQ)?;
        let (incarnation, join) = identity(&store, topology.regions.len() > 1, clock.wall_ms())?;
        let floor = stored_floor(&store, region)?;
        let mut hlc = Hlc::new(MAX_CLOCK_OFFSET_MS);
        hlc.restore(Timestamp(meta_u64(&store, keys::META_HLC)?));
        let mut vv = VersionVector::default();
        for (k, v) in store.scan(Table::Meta, keys::META_VV_PREFIX, None, usize::MAX)? {
            let origin = String::from_utf8_lossy(&k[keys::META_VV_PREFIX.len()..]).into_owned();
            if let Some(counter) = keys::decode_u64(&v) {
                vv.add(&Dot { origin, counter });
            }
        }
        vv.add(&Dot {
            origin: region.to_string(),
            counter: last_seq,
        });
        // Before anything can write: every later change to a record is applied to these.
        let digests = crate::repl::digest::Digests::build(&store, &topology, region)?;
        let (changes, _) = broadcast::channel(FEED_CAPACITY);
        let (applied, _) = watch::channel(vv);
        let terms = meridian_core::config::replication_terms(&topology);
        let connections =
            meridian_http::Slots::new(topology.limits.max_connections, "[limits] max_connections");
        Ok(Node {
            inner: Arc::new(Inner {
                topology,
                region: region.to_string(),
                store,
                clock,
                hlc: Mutex::new(hlc),
                last_seq: AtomicU64::new(last_seq),
                floor: Mutex::new(floor),
                changes,
                applied,
                config,
                acked: watch::channel(BTreeMap::new()).0,
                links: Mutex::new(BTreeMap::new()),
                conflicts: Mutex::new(VecDeque::new()),
                closing: watch::channel(false).0,
                resyncs: watch::channel(0).0,
                oplog_start: crate::repl::gc::OpLogStart::default(),
                watermarks: crate::repl::watermark::Watermarks::default(),
                digests,
                pending_writes: AtomicUsize::new(0),
                terms,
                connections,
                incarnation,
                join: std::sync::atomic::AtomicU8::new(join as u8),
                join_changed: watch::channel(()).0,
                peer_incarnations: Mutex::new(BTreeMap::new()),
                lost_claims: Mutex::new(BTreeMap::new()),
                sequence_conflict: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A place for one client write among those waiting for the store, or `None` when
    /// `[limits] max_pending_writes` are already waiting: the caller then refuses the write
    /// before it reaches the store, so the store's queue (and every write's latency) stays
    /// bounded under overload.
    pub(crate) fn admit_write(&self) -> Option<PendingWrite> {
        let before = self.inner.pending_writes.fetch_add(1, Ordering::Relaxed);
        let place = PendingWrite(self.clone());
        (before < self.inner.topology.limits.max_pending_writes).then_some(place)
    }

    /// What this node's topology says about the zones and every keyspace, condensed
    /// ([`meridian_core::config::replication_terms`]), for peers to compare with theirs.
    pub fn replication_terms(&self) -> &str {
        &self.inner.terms
    }

    /// The slots of the connections this node serves (`[limits] max_connections`): the
    /// accept loop takes one before each accept and the connection holds it until it ends.
    pub fn connection_slots(&self) -> &meridian_http::Slots {
        &self.inner.connections
    }

    /// Clients' writes waiting for the store now.
    pub fn pending_writes(&self) -> usize {
        self.inner.pending_writes.load(Ordering::Relaxed)
    }

    /// The topology this node was started with.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// This node's region name.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The bucket digests of the digested keyspaces, current with every committed change to a
    /// record (see [`crate::repl::digest`]).
    pub fn digests(&self) -> &crate::repl::digest::Digests {
        &self.inner.digests
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where garbage collection knows each origin's op log to start.
    pub(crate) fn oplog_start(&self) -> &crate::repl::gc::OpLogStart {
        &self.inner.oplog_start
    }

    /// The keyspace called `name`, or a 404 that lists the known ones.
    pub fn keyspace(&self, name: &str) -> Result<&Keyspace, ApiError> {
        self.inner.topology.keyspace(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .inner
                .topology
                .keyspaces
                .iter()
                .map(|k| k.name.as_str())
                .collect();
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "unknown_keyspace",
                format!("there is no keyspace `{name}`"),
                format!("known keyspaces: {}", known.join(", ")),
            )
        })
    }

    /// The current HLC time without advancing the clock: what reads compare expiry against.
    pub fn now(&self) -> Timestamp {
        let wall = self.inner.clock.wall_ms();
        self.lock_hlc().peek(wall)
    }

    fn lock_hlc(&self) -> std::sync::MutexGuard<'_, Hlc> {
        // A poisoned lock only means a panic elsewhere while holding it; the HLC itself is
        // always in a valid state (every method leaves it consistent), so keep using it.
        self.inner
            .hlc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's watermark and its peers' (see [`crate::repl::watermark`]).
    pub(crate) fn watermarks(&self) -> &crate::repl::watermark::Watermarks {
        &self.inner.watermarks
    }

    /// The last op-log sequence number reserved. On the store's writer thread, every write
    /// made before has at most this one.
    pub(crate) fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::SeqCst)
    }

    /// Reserves the next op-log sequence number. Called only on the store's writer thread, so
    /// sequence order equals commit order.
    pub(crate) fn next_seq(&self) -> u64 {
        self.inner.last_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// What this region has issued on any key (see [`Floor`]): where a write to a key holding
    /// nothing of this region's starts its dots or totals.
    pub(crate) fn floor(&self) -> Floor {
        *self.lock_floor()
    }

    /// Raises the floor to cover what `record` holds of this region's and returns it, for the
    /// caller to store in the same transaction as the write; `None` for a type without dots or
    /// totals. (After a failed group commit it may be above anything made durable: a floor
    /// above every dot is still one. Stored with every such write, not only when it rises, so
    /// the stored floor never lags a dot made durable after that failure.)
    pub(crate) fn raise_floor(&self, record: &meridian_core::record::Record) -> Option<Floor> {
        let mut floor = self.lock_floor();
        raise(&mut floor, record, &self.inner.region).then_some(*floor)
    }

    fn lock_floor(&self) -> std::sync::MutexGuard<'_, Floor> {
        // A poisoned lock only means a panic elsewhere while holding it; the floor itself is
        // a plain value that is always whole.
        self.inner
            .floor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a failed group commit the reserved sequence numbers were not written: reload the
    /// last durable one so the op log stays contiguous.
    pub(crate) fn reload_seq(&self) {
        if let Ok(seq) = meta_u64(&self.inner.store, keys::META_LAST_SEQ) {
            self.inner.last_seq.store(seq, Ordering::SeqCst);
        }
    }

    /// Publishes a durable change: to the watch feed and to the applied version vector.
    pub(crate) fn published(&self, change: Option<Change>, seq: Option<u64>) {
        if let Some(seq) = seq {
            let dot = Dot {
                origin: self.inner.region.clone(),
                counter: seq,
            };
            self.inner.applied.send_modify(|vv| vv.add(&dot));
        }
        if let Some(c) = change {
            // No subscriber is not an error: the feed is best effort for watchers.
            let _ = self.inner.changes.send(c);
        }
    }

    /// Publishes a change that carries no op-log sequence of this region (an expiry, a
    /// replicated write) to the watch feed.
    pub(crate) fn publish_change(&self, change: Change) {
        let _ = self.inner.changes.send(change);
    }

    /// A new subscription to the change feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The version vector of everything applied here; changes wake waiters.
    pub fn applied(&self) -> watch::Receiver<VersionVector> {
        self.inner.applied.subscribe()
    }

    /// Runs `f` with the HLC locked (used by the writer to stamp a write).
    pub(crate) fn with_hlc<R>(&self, f: impl FnOnce(&mut Hlc, u64) -> R) -> R {
        let wall = self.inner.clock.wall_ms();
        f(&mut self.lock_hlc(), wall)
    }

    /// Wall-clock milliseconds, from the node's clock.
    pub fn wall_ms(&self) -> u64 {
        self.inner.clock.wall_ms()
    }

    /// The node's settings beyond the topology.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Records remote writes applied here (durably), waking session and quorum waiters.
    pub(crate) fn applied_remote(&self, vv: &VersionVector) {
        self.inner.applied.send_modify(|applied| applied.merge(vv));
    }

    /// Records what `peer` says it has applied, as of its store `incarnation` when it states
    /// one. What a peer says only grows — except when it names a new incarnation: its old store
    /// is gone (a lost disk), so what that one had applied is forgotten, and garbage
    /// collection and sync writes go by what the new one has.
    pub(crate) fn peer_heads(&self, peer: &str, incarnation: Option<u64>, vv: &VersionVector) {
        let renewed = incarnation.is_some_and(|new| {
            let mut known = self
                .inner
                .peer_incarnations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            known
                .insert(peer.to_string(), new)
                .is_some_and(|old| old != new)
        });
        if renewed {
            tracing::warn!(
                %peer,
                "the peer runs on a new store (its data directory was lost or replaced): what its \
                 old store had applied is forgotten until the new one reports it"
            );
        }
        // Checked before the report is recorded: a peer that applied writes numbered like
        // this store's new ones, made by a store of this region since lost, must not count
        // as having applied the new ones (a sync write's quorum, collection).
        let theirs = vv.get(&self.inner.region);
        let ours = self.last_seq();
        if theirs > ours && self.join_state() != Join::Running {
            let detail = format!(
                "peer `{peer}` has applied writes of this region up to sequence {theirs}, past \
                 the {ours} this store has made: the store is new and took its start for the \
                 cluster's first while the peers that knew the lost one were unreachable, so \
                 its writes reuse that store's sequence numbers"
            );
            if self.inner.sequence_conflict.set(detail.clone()).is_ok() {
                tracing::error!(
                    %peer,
                    theirs,
                    ours,
                    "{detail}; this node refuses writes and is not ready from now on: stop it, \
                     delete its data directory and start it while the peers are reachable"
                );
            }
        }
        if self.sequence_conflict().is_some() {
            return;
        }
        self.inner.acked.send_modify(|m| {
            let known = m.entry(peer.to_string()).or_default();
            if renewed {
                let made = known.get(peer);
                self.inner
                    .lost_claims
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(peer.to_string())
                    .and_modify(|c| *c = (*c).max(made))
                    .or_insert(made);
                *known = vv.clone();
            } else {
                known.merge(vv);
            }
        });
    }

    /// The highest sequence of `peer`'s own writes that a store of it since replaced reported
    /// applying, as far as this process heard (0: none): a join of `peer`'s new store numbers
    /// its writes past it (`repl::join`'s `Heads::claimed`), however often it asks.
    pub(crate) fn lost_claim(&self, peer: &str) -> u64 {
        self.inner
            .lost_claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(peer)
            .copied()
            .unwrap_or(0)
    }

    /// Why this node's writes would reuse sequence numbers a peer has already applied, once a
    /// peer reported writes of this region past any this store made (see
    /// `Node::peer_heads`): its writes are refused and `/health/ready` fails from then on.
    pub fn sequence_conflict(&self) -> Option<&str> {
        self.inner.sequence_conflict.get().map(String::as_str)
    }

    /// This store's incarnation: a random number chosen when the store was created and kept
    /// with it, so peers tell a region's new store (a lost or replaced disk) from the old one.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// Where the store stands with its peers.
    pub fn join_state(&self) -> Join {
        match self.inner.join.load(Ordering::Acquire) {
            x if x == Join::Running as u8 => Join::Running,
            x if x == Join::Needed as u8 => Join::Needed,
            _ => Join::Done,
        }
    }

    /// Moves the join to `state`.
    pub(crate) fn set_join(&self, state: Join) {
        self.inner.join.store(state as u8, Ordering::Release);
        self.inner.join_changed.send_replace(());
    }

    /// Resolves once no join is running: background work that reads or writes replicated
    /// state waits here, so it never acts on a store that has not learnt what it must hold.
    pub async fn joined(&self) {
        let mut rx = self.inner.join_changed.subscribe();
        // An error means the sender is gone, which only happens when the node is dropped.
        let _ = rx.wait_for(|()| self.join_state() != Join::Running).await;
    }

    /// Takes what a join learnt: the op-log sequence this region's next write follows, the
    /// HLC it must stamp after, the floor of what it issued, and the state it now holds
    /// (`applied`, with this region's own entry the sequence).
    pub(crate) fn adopt(
        &self,
        last_seq: u64,
        hlc: Timestamp,
        floor: Floor,
        applied: &VersionVector,
    ) {
        self.inner.last_seq.fetch_max(last_seq, Ordering::SeqCst);
        self.lock_hlc().restore(hlc);
        *self.lock_floor() = floor;
        self.inner.applied.send_modify(|vv| vv.merge(applied));
    }

    /// Changes each time the node caught up by copy (see `repl::catchup`): a replication link
    /// then reopens, so the peer serves it from the heads it holds now.
    pub(crate) fn resyncs(&self) -> watch::Receiver<u64> {
        self.inner.resyncs.subscribe()
    }

    /// Makes every replication link reopen (see [`Node::resyncs`]).
    pub(crate) fn resync(&self) {
        self.inner.resyncs.send_modify(|n| *n += 1);
    }

    /// What each peer has said it applied.
    pub fn acked(&self) -> watch::Receiver<BTreeMap<String, VersionVector>> {
        self.inner.acked.subscribe()
    }

    /// Updates the link record of `peer`.
    pub(crate) fn link(&self, peer: &str, f: impl FnOnce(&mut PeerLink)) {
        let mut links = self
            .inner
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(links.entry(peer.to_string()).or_default());
    }

    /// Every peer link as this node sees it.
    pub fn links(&self) -> BTreeMap<String, PeerLink> {
        self.inner
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Remembers a conflict (the oldest are dropped past [`CONFLICTS_KEPT`]).
    pub(crate) fn conflict(&self, c: Conflict) {
        let mut list = self
            .inner
            .conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if list.len() == CONFLICTS_KEPT {
            list.pop_front();
        }
        list.push_back(c);
    }

    /// Recent conflicts, oldest first.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.inner
            .conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Starts closing: long-lived streams (replication, watch feeds) end so that a graceful
    /// shutdown does not wait on them forever.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`Node::close`] has been called.
    pub async fn closed(&self) {
        let mut rx = self.inner.closing.subscribe();
        // An error means the sender is gone, which only happens when the node is dropped.
        let _ = rx.wait_for(|closing| *closing).await;
    }
}

/// Raises `floor` to cover what `record` holds of `region`'s: its dots (sets, mvregisters) or
/// its totals (counters). False for the types that have neither (registers, maps).
fn raise(floor: &mut Floor, record: &meridian_core::record::Record, region: &str) -> bool {
    use meridian_core::record::Value;
    match &record.value {
        Value::Set(s) => floor.dot = floor.dot.max(s.max_counter(region)),
        Value::MvRegister(r) => floor.dot = floor.dot.max(r.context().get(region)),
        Value::Counter(c) => {
            let e = c.entry(region);
            floor.count.p = floor.count.p.max(e.p);
            floor.count.n = floor.count.n.max(e.n);
        }
        Value::Register(_) | Value::Map(_) => return false,
    }
    true
}

/// The stored [`keys::META_FLOOR`]; when a store written before it existed has none, what
/// `region` holds in every record, found once by a scan and stored.
fn stored_floor(store: &Store, region: &str) -> Result<Floor, meridian_store::Error> {
    if let Some(v) = store.get(Table::Meta, keys::META_FLOOR)?
        && let Some(floor) = keys::decode_floor(&v)
    {
        return Ok(floor);
    }
    let floor = scan_floor(store, region)?;
    let bytes = keys::encode_floor(&floor);
    store.transact_blocking(move |txn| txn.put(Table::Meta, keys::META_FLOOR, &bytes))?;
    Ok(floor)
}

/// The store's incarnation, chosen and stored when absent, and whether it must join its peers:
/// a store created now (nothing in it) in a topology `with_peers` must; one that was joining
/// when the node stopped still must; one that holds anything else (written before joins
/// existed) is taken as joined.
fn identity(
    store: &Store,
    with_peers: bool,
    wall_ms: u64,
) -> Result<(u64, Join), meridian_store::Error> {
    let stored = meta_u64(store, keys::META_INCARNATION)?;
    let incarnation = match stored {
        0 => new_incarnation(wall_ms),
        known => known,
    };
    let state = store.get(Table::Meta, keys::META_JOIN)?;
    let join = match state.as_deref() {
        Some(keys::JOINED) => Join::Done,
        Some(_) => Join::Needed,
        None => {
            let fresh = store.scan(Table::Meta, b"", None, 2)?.len() <= 1
                && store.scan(Table::Data, b"", None, 1)?.is_empty();
            if fresh && with_peers {
                Join::Needed
            } else {
                Join::Done
            }
        }
    };
    let marker = if join == Join::Done {
        keys::JOINED
    } else {
        keys::JOINING
    };
    if state.as_deref() != Some(marker) || stored != incarnation {
        store.transact_blocking(move |txn| {
            txn.put(
                Table::Meta,
                keys::META_INCARNATION,
                &incarnation.to_be_bytes(),
            );
            txn.put(Table::Meta, keys::META_JOIN, marker);
        })?;
    }
    Ok((incarnation, join))
}

/// A new store's incarnation: random, never 0 (which stands for none).
fn new_incarnation(wall_ms: u64) -> u64 {
    use rand::TryRngCore as _;
    rand::rngs::OsRng
        .try_next_u64()
        .unwrap_or_else(|_| {
            // Without the OS's randomness, the time and the process tell stores apart well enough.
            let seed = [
                wall_ms.to_le_bytes(),
                u64::from(std::process::id()).to_le_bytes(),
            ]
            .concat();
            xxhash_rust::xxh3::xxh3_64(&seed)
        })
        .max(1)
}

/// What `region` holds in every record of `store` (see [`Floor`]), found by a scan.
pub(crate) fn scan_floor(store: &Store, region: &str) -> Result<Floor, meridian_store::Error> {
    let mut floor = Floor::default();
    store.scan_each(Table::Data, b"", None, |_, v| {
        if let Ok(record) = meridian_core::record::Record::decode(v) {
            raise(&mut floor, &record, region);
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(floor)
}

/// A counter kept in `Table::Meta`; 0 when absent.
fn meta_u64(store: &Store, key: &[u8]) -> Result<u64, meridian_store::Error> {
    Ok(store
        .get(Table::Meta, key)?
        .as_deref()
        .and_then(keys::decode_u64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_store::{Store, StoreOptions, Table};

    use super::{Join, Node};
    use crate::clock::SystemClock;
    use crate::keys;
    use crate::testing::TWO_REGIONS;

    fn node_on(store: &Store, topology: &str) -> Node {
        let t = meridian_core::config::parse("t.toml", topology).expect("topology");
        Node::new(
            Arc::new(t),
            "a",
            store.clone(),
            Arc::new(SystemClock),
            Default::default(),
        )
        .expect("node")
    }

    /// A new store with peers must join, and still must after a restart until it has; its
    /// incarnation is chosen once and kept. A store holding data from before joins existed,
    /// and one with no peers, are taken as joined.
    #[test]
    fn a_new_store_with_peers_must_join_and_keeps_its_incarnation() {
        let store = Store::in_memory(StoreOptions::default());
        let first = node_on(&store, TWO_REGIONS);
        assert_eq!(first.join_state(), Join::Needed);
        let again = node_on(&store, TWO_REGIONS);
        assert_eq!(
            again.join_state(),
            Join::Needed,
            "a join cut short starts over"
        );
        assert_eq!(again.incarnation(), first.incarnation());
        assert_ne!(first.incarnation(), 0);
        let other = node_on(&Store::in_memory(StoreOptions::default()), TWO_REGIONS);
        assert_ne!(other.incarnation(), first.incarnation());

        let old = Store::in_memory(StoreOptions::default());
        old.transact_blocking(|txn| txn.put(Table::Data, &keys::data_key("rep", "k"), b"x"))
            .expect("write");
        assert_eq!(node_on(&old, TWO_REGIONS).join_state(), Join::Done);

        let alone = TWO_REGIONS.replace(
            "[[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\n",
            "",
        );
        let single = node_on(&Store::in_memory(StoreOptions::default()), &alone);
        assert_eq!(single.join_state(), Join::Done);
    }
}
