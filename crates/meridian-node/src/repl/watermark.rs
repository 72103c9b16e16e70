//! Watermarks: how a region learns that no write made anywhere before an HLC time can still
//! reach it — what collecting an expired record waits for ([`crate::repl::gc`]).
//!
//! A node takes its own watermark `(at, seq)` on the store's writer thread, in write order: it
//! advances its HLC to `at` and stores it (so no later write is stamped before `at`, even after
//! a restart), and `seq` is the last op-log sequence number handed out so far, so every write of
//! this region stamped before `at` is one of its writes `1..=seq`. Peers receive it on version 3
//! streams ([`meridian_core::wire::FrameV1::Watermark`]).
//!
//! A peer's watermark is *confirmed* here once this node has applied that peer's writes up to
//! its `seq`: from then on every write the peer made before `at` is here, and no other can come.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use meridian_core::hlc::Timestamp;
use meridian_core::version::VersionVector;

use crate::state::Node;

/// A region's watermark: nothing more of its writes is stamped before `at`, and those stamped
/// before are among its writes `1..=seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The HLC time.
    pub at: Timestamp,
    /// The region's last write stamped before `at` is at most its `seq`-th.
    pub seq: u64,
}

/// What one peer reported: the newest confirmed time, and up to two reports awaiting
/// confirmation (the oldest, so a steady stream of reports cannot starve it, and the newest).
#[derive(Debug, Default)]
struct PeerMarks {
    confirmed: Option<Timestamp>,
    oldest: Option<Mark>,
    newest: Option<Mark>,
}

impl PeerMarks {
    fn report(&mut self, mark: Mark) {
        if self.oldest.is_none() {
            self.oldest = Some(mark);
        } else {
            self.newest = Some(mark);
        }
    }

    /// Confirms what `applied` (this node's applied counter of the peer) covers; the confirmed
    /// time after that.
    fn confirm(&mut self, applied: u64) -> Option<Timestamp> {
        if let Some(mark) = self.newest.filter(|m| m.seq <= applied) {
            // The newest covers the oldest.
            self.confirmed = self.confirmed.max(Some(mark.at));
            self.oldest = None;
            self.newest = None;
        } else if let Some(mark) = self.oldest.filter(|m| m.seq <= applied) {
            self.confirmed = self.confirmed.max(Some(mark.at));
            self.oldest = self.newest.take();
        }
        self.confirmed
    }
}

/// This node's watermark and those its peers reported.
#[derive(Debug, Default)]
pub(crate) struct Watermarks(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    own: Option<Mark>,
    peers: BTreeMap<String, PeerMarks>,
}

impl Watermarks {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the marks are plain
        // values, always whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's newest watermark, if it took one since it started.
    pub(crate) fn own(&self) -> Option<Mark> {
        self.lock().own
    }

    /// The newest watermark of `peer` confirmed so far (by [`Watermarks::cutoff`]).
    pub(crate) fn confirmed(&self, peer: &str) -> Option<Timestamp> {
        self.lock().peers.get(peer).and_then(|p| p.confirmed)
    }

    /// Records that `peer` reported `mark`.
    pub(crate) fn report(&self, peer: &str, mark: Mark) {
        self.lock()
            .peers
            .entry(peer.to_string())
            .or_default()
            .report(mark);
    }

    /// The time before which every write of every one of `peers` is applied here (`applied`):
    /// the least of their confirmed watermarks. `None` while any of them has none confirmed.
    pub(crate) fn cutoff(&self, peers: &[&str], applied: &VersionVector) -> Option<Timestamp> {
        let mut state = self.lock();
        let mut least: Option<Timestamp> = None;
        for peer in peers {
            let confirmed = state
                .peers
                .entry((*peer).to_string())
                .or_default()
                .confirm(applied.get(peer))?;
            least = Some(least.map_or(confirmed, |l| l.min(confirmed)));
        }
        least
    }
}

/// Takes a new watermark of this node (see the module documentation); peers receive it on
/// their next heads.
pub async fn advance(node: &Node) -> Result<Mark, meridian_store::Error> {
    let n = node.clone();
    let mark = node
        .store()
        .transact(move |txn| {
            let at = n.with_hlc(|hlc, wall| hlc.now(wall));
            crate::write::store_hlc(txn, at);
            Mark {
                at,
                seq: n.last_seq(),
            }
        })
        .await?;
    node.watermarks().lock().own = Some(mark);
    Ok(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(at: u64, seq: u64) -> Mark {
        Mark {
            at: Timestamp(at),
            seq,
        }
    }

    fn vv(token: &str) -> VersionVector {
        VersionVector::parse_token(token).expect("token")
    }

    /// A report counts once the peer's writes up to its sequence number are applied; the
    /// cutoff is the least over the peers, and nothing while one has none confirmed.
    #[test]
    fn a_report_is_confirmed_by_applying_the_writes_it_covers() {
        let w = Watermarks::default();
        assert_eq!(w.cutoff(&["b"], &vv("b:9")), None, "nothing reported");
        w.report("b", mark(100, 5));
        w.report("c", mark(300, 2));
        assert_eq!(
            w.cutoff(&["b", "c"], &vv("b:4,c:9")),
            None,
            "b:5 not applied"
        );
        assert_eq!(w.cutoff(&["b", "c"], &vv("b:5,c:9")), Some(Timestamp(100)));
        assert_eq!(w.cutoff(&["c"], &vv("c:2")), Some(Timestamp(300)));
        // Confirmed stays confirmed; a newer report waits for its own writes.
        w.report("b", mark(200, 8));
        assert_eq!(w.cutoff(&["b"], &vv("b:5")), Some(Timestamp(100)));
        assert_eq!(w.cutoff(&["b"], &vv("b:8")), Some(Timestamp(200)));
    }

    /// Under a steady stream of reports, each ahead of what is applied, the oldest waiting one
    /// is still confirmed once its writes are in; the newest takes its place.
    #[test]
    fn a_steady_stream_of_reports_does_not_starve_confirmation() {
        let w = Watermarks::default();
        w.report("b", mark(100, 10));
        w.report("b", mark(200, 20));
        w.report("b", mark(300, 30));
        assert_eq!(w.cutoff(&["b"], &vv("b:15")), Some(Timestamp(100)));
        w.report("b", mark(400, 40));
        assert_eq!(w.cutoff(&["b"], &vv("b:35")), Some(Timestamp(300)));
        assert_eq!(w.cutoff(&["b"], &vv("b:39")), Some(Timestamp(300)));
        assert_eq!(w.cutoff(&["b"], &vv("b:40")), Some(Timestamp(400)));
    }
}
