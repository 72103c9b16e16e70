//! The node's shared state: topology, store, clock, and the channels that carry changes out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use meridian_core::config::{Keyspace, Topology};
use meridian_core::hlc::{Hlc, Timestamp};
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
    changes: broadcast::Sender<Change>,
    applied: watch::Sender<VersionVector>,
}

impl Node {
    /// A node for `region` of `topology` over an opened store. Restores the HLC and the op-log
    /// sequence from the store, so timestamps and sequences never repeat across restarts.
    pub fn new(
        topology: Arc<Topology>,
        region: &str,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Node, Error> {
        if topology.region(region).is_none() {
            return Err(Error::UnknownRegion {
                region: region.to_string(),
                known: topology.regions.iter().map(|r| r.name.clone()).collect(),
            });
        }
        let read_u64 = |k: &[u8]| -> Result<u64, Error> {
            Ok(store
                .get(Table::Meta, k)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0))
        };
        let last_seq = read_u64(keys::META_LAST_SEQ)?;
        let mut hlc = Hlc::new(MAX_CLOCK_OFFSET_MS);
        hlc.restore(Timestamp(read_u64(keys::META_HLC)?));
        let mut vv = VersionVector::default();
        vv.add(&Dot {
            origin: region.to_string(),
            counter: last_seq,
        });
        let (changes, _) = broadcast::channel(FEED_CAPACITY);
        let (applied, _) = watch::channel(vv);
        Ok(Node {
            inner: Arc::new(Inner {
                topology,
                region: region.to_string(),
                store,
                clock,
                hlc: Mutex::new(hlc),
                last_seq: AtomicU64::new(last_seq),
                changes,
                applied,
            }),
        })
    }

    /// The topology this node was started with.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// This node's region name.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
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

    /// Reserves the next op-log sequence number. Called only on the store's writer thread, so
    /// sequence order equals commit order.
    pub(crate) fn next_seq(&self) -> u64 {
        self.inner.last_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// After a failed group commit the reserved sequence numbers were not written: reload the
    /// last durable one so the op log stays contiguous.
    pub(crate) fn reload_seq(&self) {
        if let Ok(Some(v)) = self.inner.store.get(Table::Meta, keys::META_LAST_SEQ)
            && let Ok(b) = <[u8; 8]>::try_from(v.as_slice())
        {
            self.inner
                .last_seq
                .store(u64::from_be_bytes(b), Ordering::SeqCst);
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

    /// Publishes an expiry to the watch feed.
    pub(crate) fn publish_expiry(&self, change: Change) {
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
}
