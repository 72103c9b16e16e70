//! Opt-in, bounded, in-memory capture of the bytes relays forward, per connection and per
//! direction, for the residency audit ([`crate::audit`]) to search.
//!
//! Each direction of a captured connection appends what it delivers to its own buffer under a
//! mutex only that direction takes (the reader of [`super::Wan::captures`] takes it briefly to
//! copy); the byte budget is one atomic counter, so capturing adds a copy of each chunk and
//! nothing else to the relay's path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;

/// Which way bytes went through a relay for `from → to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Written by `from` (the connecting region), received by `to`.
    Request,
    /// Written by `to` (the connected region), received by `from`.
    Response,
}

/// The bytes one direction of one relayed connection delivered while capture was on, in order,
/// from the connection's first byte, cut short where the capture budget ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The region that opened the connection (the relay's `from`).
    pub from: String,
    /// The region the relay connects to (the relay's `to`).
    pub to: String,
    /// Which way the bytes went.
    pub direction: Direction,
    /// The connection's number, unique within its [`super::Wan`]; both directions of a
    /// connection share it.
    pub connection: u64,
    /// The bytes delivered, exactly as forwarded.
    pub bytes: Vec<u8>,
}

impl Capture {
    /// The region that received these bytes: `to` for a request, `from` for a response.
    pub fn receiver(&self) -> &str {
        match self.direction {
            Direction::Request => &self.to,
            Direction::Response => &self.from,
        }
    }

    /// The link's name as the report gives it, naming the receiving direction:
    /// `link SENDER→RECEIVER`.
    pub fn place(&self) -> String {
        match self.direction {
            Direction::Request => format!("link {}→{}", self.from, self.to),
            Direction::Response => format!("link {}→{}", self.to, self.from),
        }
    }
}

/// Totals of a capture: what was stored and what the budget turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// The budget given to [`super::Wan::enable_capture`].
    pub limit: u64,
    /// Bytes stored (at most `limit`).
    pub stored: u64,
    /// Bytes delivered while capture was on but not stored, the budget being spent.
    pub dropped: u64,
}

/// One capture session: its budget and every captured direction.
pub(crate) struct CaptureLog {
    limit: u64,
    /// Bytes offered so far; what was stored is `min(offered, limit)`.
    offered: AtomicU64,
    dropped: AtomicU64,
    streams: Mutex<Vec<Arc<Stream>>>,
}

/// One captured direction of one connection.
pub(crate) struct Stream {
    log: Arc<CaptureLog>,
    from: String,
    to: String,
    direction: Direction,
    connection: u64,
    bytes: Mutex<Vec<u8>>,
}

impl CaptureLog {
    pub(crate) fn new(limit: u64) -> Arc<CaptureLog> {
        Arc::new(CaptureLog {
            limit,
            offered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
        })
    }

    /// Registers one direction of a new connection.
    pub(crate) fn stream(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        direction: Direction,
        connection: u64,
    ) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            log: self.clone(),
            from: from.to_string(),
            to: to.to_string(),
            direction,
            connection,
            bytes: Mutex::new(Vec::new()),
        });
        lock(&self.streams).push(stream.clone());
        stream
    }

    pub(crate) fn captures(&self) -> Vec<Capture> {
        let streams: Vec<Arc<Stream>> = lock(&self.streams).clone();
        let mut out: Vec<Capture> = streams
            .iter()
            .map(|s| Capture {
                from: s.from.clone(),
                to: s.to.clone(),
                direction: s.direction,
                connection: s.connection,
                bytes: lock(&s.bytes).clone(),
            })
            .collect();
        out.sort_by_key(|c| (c.connection, c.direction));
        out
    }

    pub(crate) fn stats(&self) -> CaptureStats {
        CaptureStats {
            limit: self.limit,
            stored: self.offered.load(Ordering::Relaxed).min(self.limit),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Stream {
    /// Stores what the budget allows of a delivered chunk and counts the rest as dropped.
    pub(crate) fn record(&self, chunk: &[u8]) {
        let n = chunk.len() as u64;
        let before = self.log.offered.fetch_add(n, Ordering::Relaxed);
        let take = self.log.limit.saturating_sub(before).min(n);
        if take > 0 {
            // `take <= chunk.len()`, so the conversion and the slice cannot fail.
            let take = usize::try_from(take).unwrap_or(chunk.len());
            lock(&self.bytes).extend_from_slice(&chunk[..take]);
        }
        if take < n {
            self.log.dropped.fetch_add(n - take, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_cut_exactly() {
        let log = CaptureLog::new(10);
        let a = log.stream("a", "b", Direction::Request, 0);
        let b = log.stream("a", "b", Direction::Response, 0);
        a.record(b"1234");
        b.record(b"56789");
        a.record(b"abcd");
        b.record(b"zz");
        let c = log.captures();
        assert_eq!(c[0].bytes, b"1234a");
        assert_eq!(c[1].bytes, b"56789");
        assert_eq!(
            log.stats(),
            CaptureStats {
                limit: 10,
                stored: 10,
                dropped: 5
            }
        );
        assert_eq!(c[0].receiver(), "b");
        assert_eq!(c[1].receiver(), "a");
        assert_eq!(c[1].place(), "link b→a");
    }
}
