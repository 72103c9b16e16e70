//! One client connection, from its accept to its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;

/// What a client connection's requests have done, as [`serve_client`] reads it. The service
/// that answers the connection's requests holds an [`InFlight`] from each request's arrival
/// until its response head is out (or hyper dropped it).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Requests whose response head is not out yet.
    in_flight: AtomicUsize,
    /// Milliseconds from `origin` to the last response head (0 before the first).
    last: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

impl Activity {
    /// A connection accepted now, with no request yet.
    pub fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    /// A request reached the service. Paired with one [`answered`](Self::answered).
    fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request [`started`](Self::started) before is answered (its response head is out), or
    /// given up: the connection's idle time counts from now.
    fn answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Marks a request started; the returned guard marks it answered when dropped — when the
    /// service's future has its response, or when hyper drops that future (a reset HTTP/2
    /// stream, a vanished client).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.started();
        InFlight(self.clone())
    }

    /// Whether a request is waiting for its response head.
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// When the connection has been idle for `limit`, as far as is known now.
    fn idle_at(&self, limit: Duration) -> Instant {
        self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed)) + limit
    }
}

/// A request in flight on a connection (see [`Activity::request`]): answered when dropped.
#[derive(Debug)]
#[must_use = "the request counts as answered as soon as this is dropped"]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// Runs client connection `conn` (hyper's, serving a service that reports to `activity`) to
/// its end. Once no request has been in flight for `limit` since the accept or the last
/// response head, or when `stop` turns true, the connection is shut down gracefully: one
/// still sending nothing or part of its first request (whose HTTP/1-or-2 detection would
/// wait for it forever) is closed, HTTP/2 sends GOAWAY and lets open streams (a watch, a
/// tunnel) finish, HTTP/1 closes after the response in progress. An idle HTTP/2 client is
/// what no header timeout covers; an idle HTTP/1 one is closed by hyper's own header timeout
/// too, which should be `limit`.
///
/// `stop`'s receiver is dropped when this returns, so a server that hands every connection a
/// clone of one receiver waits for all of them with the sender's `closed()`.
pub async fn serve_client<C>(
    conn: C,
    activity: Arc<Activity>,
    limit: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let mut check_at = activity.idle_at(limit);
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            () = tokio::time::sleep_until(check_at), if !closing => {
                let now = Instant::now();
                let idle_at = activity.idle_at(limit);
                if activity.busy() {
                    // A request still running: look again a period later.
                    check_at = now + limit;
                } else if idle_at > now {
                    check_at = idle_at;
                } else {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
