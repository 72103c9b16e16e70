//! The WAN emulator (DESIGN §4): a relay per directed region pair on loopback that delays each
//! chunk by the pair's one-way latency, with jitter, a bandwidth cap and partitions switched at
//! run time, counting the bytes each directed pair carries (the basis of egress cost).
//!
//! A relay for `from → to` listens for connections opened by `from` and connects each to `to`'s
//! upstream address. Bytes `from` writes take the `from → to` pair's shape; the answer bytes take
//! the `to → from` pair's. Pairs are shared by every relay and connection that uses them, so a
//! bandwidth cap is per direction, not per connection.
//!
//! Partitions hold bytes back rather than drop them: a cut direction delivers nothing until it is
//! healed, then delivers what it held (one delay after the heal, in order). That is what TCP over
//! a dead path looks like to the application — silence, then retransmitted data — whereas
//! dropping bytes in a user-space relay would deliver a stream with holes, something no real
//! network does to a TCP connection. Applications still see the cut as their own timeouts
//! (e.g. a replication stream's silence timer) and reconnect; a new connection is not connected
//! upstream while either direction of its pair is cut (its handshake could not complete). The
//! handshake itself is not delayed: connects complete at loopback speed.
//!
//! Capture is off by default. [`Wan::enable_capture`] makes every connection accepted from then
//! on keep a copy of the bytes it delivers, each direction apart, up to a total budget; see
//! [`capture`].

pub mod capture;
pub mod control;
pub mod profile;
mod relay;
pub mod shape;
pub mod spec;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use capture::{Capture, CaptureStats, Direction};
pub use profile::Profile;
pub use relay::Relay;
pub use shape::{Shape, TokenBucket};

use crate::error::LabError;

/// Bucket depth for a bandwidth cap: this many milliseconds of the rate, at least one chunk.
const BURST_MS: u64 = 10;
/// Largest chunk a relay reads at once.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// One directed pair's state, shared by every connection carrying it.
pub(crate) struct Pair {
    shape: Mutex<Shape>,
    bucket: Mutex<Option<TokenBucket>>,
    /// `true` while the direction passes bytes; `false` while it is cut.
    up: watch::Sender<bool>,
    bytes: AtomicU64,
}

use crate::lock;

impl Pair {
    fn new(shape: Shape) -> Pair {
        Pair {
            bucket: Mutex::new(shape.bandwidth.map(bucket_for)),
            shape: Mutex::new(shape),
            up: watch::channel(true).0,
            bytes: AtomicU64::new(0),
        }
    }

    pub(crate) fn shape(&self) -> Shape {
        *lock(&self.shape)
    }

    /// When `bytes` read at `now` may leave, per the bandwidth cap.
    pub(crate) fn depart(&self, now: Instant, bytes: usize) -> Instant {
        match lock(&self.bucket).as_mut() {
            Some(b) => b.reserve(now, bytes as u64),
            None => now,
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    pub(crate) fn count(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

fn bucket_for(rate: u64) -> TokenBucket {
    TokenBucket::new(rate, (rate * BURST_MS / 1000).max(CHUNK_BYTES as u64))
}

/// The emulated WAN: the profile, every directed pair's shape, cut state and byte counter.
/// Cheap to clone (shared state); relays started from it stop when their [`Relay`] is dropped.
#[derive(Clone)]
pub struct Wan {
    inner: Arc<Inner>,
}

struct Inner {
    profile: Profile,
    seed: u64,
    connections: AtomicU64,
    pairs: Mutex<BTreeMap<(String, String), Arc<Pair>>>,
    capture: Mutex<Option<Arc<capture::CaptureLog>>>,
}

impl Wan {
    /// A WAN whose pairs take their delay from `profile` (no jitter, no cap, all links up)
    /// when first used; `seed` seeds the jitter of every connection (connection `n` of the run
    /// uses `seed + n`), so a run with the same seed and order of connections replays.
    pub fn new(profile: Profile, seed: u64) -> Wan {
        Wan {
            inner: Arc::new(Inner {
                profile,
                seed,
                connections: AtomicU64::new(0),
                pairs: Mutex::new(BTreeMap::new()),
                capture: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn pair(&self, from: &str, to: &str) -> Result<Arc<Pair>, LabError> {
        let mut pairs = lock(&self.inner.pairs);
        let key = (from.to_string(), to.to_string());
        if let Some(p) = pairs.get(&key) {
            return Ok(p.clone());
        }
        let delay = self.inner.profile.one_way(from, to)?;
        let pair = Arc::new(Pair::new(Shape {
            delay,
            ..Shape::default()
        }));
        pairs.insert(key, pair.clone());
        Ok(pair)
    }

    /// The next connection's number and jitter seed.
    pub(crate) fn next_connection(&self) -> (u64, u64) {
        let n = self.inner.connections.fetch_add(1, Ordering::Relaxed);
        (n, self.inner.seed.wrapping_add(n))
    }

    /// The capture session connections accepted now join, if capture is on.
    pub(crate) fn capture_log(&self) -> Option<Arc<capture::CaptureLog>> {
        lock(&self.inner.capture).clone()
    }

    /// Starts a fresh capture (forgetting any earlier one) of at most `limit_bytes` in total
    /// across every pair, connection and direction. Connections accepted from now on store the
    /// bytes they deliver, from their first byte; connections already open are not captured.
    /// Once the budget is spent, further bytes are counted in [`CaptureStats::dropped`] and not
    /// stored. Relaying is unchanged (the bytes are copied after delivery).
    pub fn enable_capture(&self, limit_bytes: u64) {
        *lock(&self.inner.capture) = Some(capture::CaptureLog::new(limit_bytes));
    }

    /// Stops capturing and forgets what was captured: connections accepted from now on are
    /// relayed without any copy. Connections captured before keep filling the forgotten
    /// session (within its budget) until they close, which frees it.
    pub fn disable_capture(&self) {
        *lock(&self.inner.capture) = None;
    }

    /// A copy of every captured direction so far, sorted by connection then direction
    /// (request first); empty when capture is off. Directions that delivered nothing yet are
    /// included with no bytes.
    pub fn captures(&self) -> Vec<Capture> {
        self.capture_log().map(|l| l.captures()).unwrap_or_default()
    }

    /// The capture's totals; `None` when capture is off.
    pub fn capture_stats(&self) -> Option<CaptureStats> {
        self.capture_log().map(|l| l.stats())
    }

    /// Starts a relay for the directed pair `from → to` on `listen` (port 0 picks a free one)
    /// to `upstream`. Fails when the address cannot be bound or the pair has no delay.
    pub async fn relay(
        &self,
        from: &str,
        to: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<Relay, LabError> {
        relay::start(self.clone(), from, to, listen, upstream).await
    }

    /// The current shape of `from → to`.
    pub fn shape(&self, from: &str, to: &str) -> Result<Shape, LabError> {
        Ok(self.pair(from, to)?.shape())
    }

    /// Replaces the shape of `from → to`; chunks already scheduled keep their times. A change
    /// of bandwidth starts a fresh (full) bucket.
    pub fn set_shape(&self, from: &str, to: &str, shape: Shape) -> Result<(), LabError> {
        let pair = self.pair(from, to)?;
        let mut current = lock(&pair.shape);
        if current.bandwidth != shape.bandwidth {
            *lock(&pair.bucket) = shape.bandwidth.map(bucket_for);
        }
        *current = shape;
        Ok(())
    }

    /// Sets the one-way delay of `from → to`, keeping its jitter and bandwidth.
    pub fn set_delay(&self, from: &str, to: &str, delay: Duration) -> Result<(), LabError> {
        let shape = Shape {
            delay,
            ..self.shape(from, to)?
        };
        self.set_shape(from, to, shape)
    }

    /// Cuts one direction: bytes `from → to` are held until [`Wan::heal`].
    pub fn cut(&self, from: &str, to: &str) -> Result<(), LabError> {
        self.pair(from, to)?.up.send_replace(false);
        Ok(())
    }

    /// Heals one direction: held bytes are delivered one delay later, in order.
    pub fn heal(&self, from: &str, to: &str) -> Result<(), LabError> {
        self.pair(from, to)?.up.send_replace(true);
        Ok(())
    }

    /// Cuts both directions between `a` and `b` (a full partition of the pair).
    pub fn partition(&self, a: &str, b: &str) -> Result<(), LabError> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Cuts every known pair to and from `region` (pairs become known when a relay uses them or
    /// a shape is set).
    pub fn isolate(&self, region: &str) {
        for ((from, to), pair) in lock(&self.inner.pairs).iter() {
            if from == region || to == region {
                pair.up.send_replace(false);
            }
        }
    }

    /// Heals every known pair.
    pub fn heal_all(&self) {
        for pair in lock(&self.inner.pairs).values() {
            pair.up.send_replace(true);
        }
    }

    /// Whether `from → to` currently passes bytes.
    pub fn is_up(&self, from: &str, to: &str) -> Result<bool, LabError> {
        Ok(*self.pair(from, to)?.up.borrow())
    }

    /// Bytes delivered `from → to` so far, over every connection (0 for an unknown pair).
    pub fn bytes(&self, from: &str, to: &str) -> u64 {
        lock(&self.inner.pairs)
            .get(&(from.to_string(), to.to_string()))
            .map_or(0, |p| p.bytes.load(Ordering::Relaxed))
    }

    /// Bytes delivered per known directed pair, sorted by pair.
    pub fn counters(&self) -> Vec<((String, String), u64)> {
        lock(&self.inner.pairs)
            .iter()
            .map(|(k, p)| (k.clone(), p.bytes.load(Ordering::Relaxed)))
            .collect()
    }
}
