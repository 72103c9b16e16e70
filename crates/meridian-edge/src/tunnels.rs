//! Connections that switched protocols (WebSocket), tracked so that shutdown drains them.
//!
//! A spliced connection leaves hyper's connection (and so its graceful shutdown) once the `101`
//! has gone out. Each runs in a task spawned here instead; at shutdown [`Tunnels::drain`] lets
//! them go on carrying bytes until both sides close or the drain deadline passes — Envoy's
//! drain period — and then closes the ones still open, so a client sees its connection end
//! rather than hang, and `serve` returns only once none is left.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long tunnels cut at the deadline get to let go of their connections.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// The open tunnels of one edge process, on every proxy thread.
#[derive(Default)]
pub(crate) struct Tunnels {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl Tunnels {
    /// Runs `tunnel` on the current runtime until it ends, or until [`Tunnels::drain`] cuts it
    /// (then it is dropped, closing its connections).
    pub(crate) fn spawn(&self, tunnel: impl Future<Output = ()> + Send + 'static) {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = tunnel => {}
                () = cut.cancelled() => {
                    tracing::debug!("switched-protocol connection closed at the drain deadline");
                }
            }
        });
    }

    /// Waits until every tunnel has ended or `deadline` passed, then cuts those still open and
    /// waits (briefly) for them to let go. Returns how many were cut. Safe to call from every
    /// proxy thread: each waits for all, so every thread's runtime keeps driving its own
    /// tunnels meanwhile.
    pub(crate) async fn drain(&self, deadline: Instant) -> usize {
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let open = self.tracker.len();
        self.cut.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, self.tracker.wait()).await;
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tunnels_that_end_and_cuts_the_rest_at_the_deadline() {
        let tunnels = Tunnels::default();
        assert_eq!(tunnels.drain(Instant::now()).await, 0, "nothing open");

        let tunnels = Tunnels::default();
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        tunnels.spawn(async move {
            let _ = ended.await;
        });
        let (dropped_tx, mut dropped) = tokio::sync::mpsc::channel::<()>(1);
        tunnels.spawn(async move {
            // Held until the task is dropped: `dropped` then sees the channel close.
            let _held = dropped_tx;
            std::future::pending::<()>().await;
        });
        assert_eq!(tunnels.tracker.len(), 2);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = end.send(());
        });
        let started = Instant::now();
        let cut = tunnels.drain(started + Duration::from_millis(300)).await;
        assert_eq!(cut, 1, "the tunnel that ended was not cut, the other was");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(dropped.recv().await.is_none(), "the cut tunnel was dropped");
        assert_eq!(tunnels.tracker.len(), 0);
    }
}
