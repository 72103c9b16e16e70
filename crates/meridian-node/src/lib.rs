//! The region node: Meridian's durable, typed key-value store behind the HTTP data API of
//! DESIGN §2. It composes the storage engine (`meridian-store`) with the merge rules of
//! `meridian-core`; every acknowledged write is on disk before the answer leaves.

pub mod api;
pub mod clock;
pub mod error;
pub mod expiry;
mod feed;
pub mod forward;
pub mod hot;
pub mod input;
pub mod keys;
pub mod metrics;
pub mod read;
pub mod render;
pub mod repl;
pub mod state;
#[cfg(test)]
mod testing;
pub mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;
pub use state::{Node, NodeConfig};

/// How often replicated garbage (applied op-log entries, settled tombstones) is collected.
pub const GC_INTERVAL: Duration = Duration::from_secs(1);
/// How often the TTL sweeper reclaims expired records.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--region` names a region that the topology does not have.
    #[error("region `{region}` is not in the topology; its regions are: {}", known.join(", "))]
    UnknownRegion {
        /// The region asked for.
        region: String,
        /// The regions the topology has.
        known: Vec<String>,
    },
    /// The store failed to open or read.
    #[error(transparent)]
    Store(#[from] meridian_store::Error),
}

/// What a serving node needs from its surroundings: for its background work, and for its
/// clients.
#[derive(Clone)]
pub struct Background {
    /// Opens the connections of the replication links. Default: [`repl::dial::TcpDialer`].
    pub dialer: Arc<dyn repl::dial::Dialer>,
    /// How often digest anti-entropy compares with one peer in turn (over connections from
    /// `dialer`); `None` turns it off. Default: [`repl::DIGEST_INTERVAL`].
    pub digest_every: Option<std::time::Duration>,
    /// How long an HTTP/1 client has to send each request's head (from the accept, or from
    /// its previous response) before its connection is closed, so idle and slow clients do
    /// not hold connections open. Default: `[limits] client_header_timeout`'s default (60 s,
    /// longer than [`repl::DIGEST_INTERVAL`], so a peer's kept digest connection is never
    /// closed between two comparisons); [`serve`] uses the topology's.
    pub client_header_timeout: Duration,
    /// HTTP/2 clients: a connection that has received nothing for this long is sent a PING,
    /// and one that does not answer within as long again is closed, so a client that vanished
    /// (no FIN, no RST) does not hold its connection. Default: [`HTTP2_KEEPALIVE`].
    pub http2_keepalive: Duration,
}

/// [`Background::http2_keepalive`] by default, as the edge's.
pub const HTTP2_KEEPALIVE: Duration = Duration::from_secs(20);

impl Default for Background {
    fn default() -> Self {
        Background {
            dialer: Arc::new(repl::dial::TcpDialer),
            digest_every: Some(repl::DIGEST_INTERVAL),
            client_header_timeout: meridian_core::config::Limits::default().client_header_timeout,
            http2_keepalive: HTTP2_KEEPALIVE,
        }
    }
}

/// Starts a node's background work: the join of a new store to its peers first when it needs
/// one ([`repl::join`]; clients are refused and the rest waits until it is done), the
/// replication links to every peer (and digest repair, as `background` says), the TTL sweeper
/// and replicated garbage collection. The tasks run until aborted.
pub fn start(node: &Node, background: &Background) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if node.join_state() == state::Join::Needed {
        // Before anything is served: no client request may see the store before it joined.
        node.set_join(state::Join::Running);
        let dialer = Arc::clone(&background.dialer);
        tasks.push(tokio::spawn(repl::join::run(node.clone(), dialer)));
    }
    tasks.extend(repl::start(node, background));
    tasks.push(tokio::spawn(expiry::run(node.clone(), SWEEP_INTERVAL)));
    tasks.push(tokio::spawn(repl::gc::run(node.clone(), GC_INTERVAL)));
    tasks
}

/// Serves the data API of `node` on `listener` until `shutdown` completes, then finishes
/// in-flight requests, closing HTTP/1 connections idle past `[limits] client_header_timeout`.
/// The TTL sweeper and the replication links to every peer run alongside.
/// Accepted connections send at once (`TCP_NODELAY`): a watch feed's event or a replication
/// frame must not wait for the client's delayed acknowledgement of the previous one (up to
/// 40 ms on Linux).
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set on a connection");
        }
    });
    let background = Background {
        client_header_timeout: node.topology().limits.client_header_timeout,
        ..Background::default()
    };
    serve_on(node, listener, &background, shutdown).await
}

/// [`serve`] on any listener axum accepts (a simulated network's, say), as `background`
/// describes. Stops the background work when serving stops.
pub async fn serve_on<L>(
    node: Node,
    listener: L,
    background: &Background,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener,
{
    metrics::install();
    let max = node.connection_slots().max();
    meridian_http::fd_limit::check(
        (max as u64).saturating_add(1024),
        &format!(
            "[limits] max_connections = {max} (plus 1024 for the store's files and the \
             replication links)"
        ),
    );
    let tasks = start(&node, background);
    let app = api::router(node.clone());
    let hot = hot::HotRead::new(node.clone());
    let closing = node.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    accept_loop(
        listener,
        node.connection_slots(),
        app,
        hot,
        background,
        shutdown,
    )
    .await;
    for t in tasks {
        t.abort();
    }
}

/// Serves `app` on every connection `listener` accepts (HTTP/1.1 or HTTP/2), each request
/// that `hot` answers by it, until `shutdown` completes, then waits for the connections to
/// finish their requests. An HTTP/1 connection whose next request head does not arrive within
/// `background`'s `client_header_timeout` is closed, an HTTP/2 one with no request in flight
/// for as long is sent GOAWAY (see [`meridian_http::serve_client`]), and one that does not
/// answer a PING after `http2_keepalive` of silence is closed.
async fn accept_loop<L>(
    mut listener: L,
    slots: &meridian_http::Slots,
    app: axum::Router,
    hot: hot::HotRead,
    background: &Background,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener,
{
    use futures_util::future::Either;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    let header_timeout = background.client_header_timeout;
    let ping = background.http2_keepalive;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(ping))
        .keep_alive_timeout(ping);
    // Every connection's task holds a receiver: `closed()` resolves once all have ended.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Accepted only with a slot to serve it; without one, new connections wait in the
        // kernel's backlog until a served one closes.
        let slot = tokio::select! {
            slot = slots.take(metrics::connections_limited) => slot,
            () = &mut shutdown => break,
        };
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        let inner = hyper_util::service::TowerToHyperService::new(app.clone());
        let hot = hot.clone();
        let activity = Arc::new(meridian_http::Activity::new());
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let in_flight = seen.request();
            match hot.answer(&req) {
                Some(resp) => {
                    drop(in_flight);
                    Either::Left(std::future::ready(Ok(resp)))
                }
                None => {
                    let routed = hyper::service::Service::call(&inner, req);
                    // Answered when the head is out, or when hyper drops the request (a reset
                    // HTTP/2 stream): either way it is no longer in flight.
                    Either::Right(async move {
                        let resp = routed.await;
                        drop(in_flight);
                        resp
                    })
                }
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let served = meridian_http::serve_client(conn, activity, header_timeout, stopping.clone());
        tokio::spawn(async move {
            served.await;
            drop(slot);
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    stop.closed().await;
}

/// Opens the store at `data_dir` and builds the node for `region`.
pub fn open(
    topology: Arc<meridian_core::config::Topology>,
    region: &str,
    data_dir: &std::path::Path,
    config: NodeConfig,
) -> Result<Node, Error> {
    let options = meridian_store::StoreOptions {
        read_cache_bytes: topology.limits.read_cache_bytes,
        ..meridian_store::StoreOptions::default()
    };
    let store = meridian_store::Store::open(data_dir, options)?;
    Node::new(
        topology,
        region,
        store,
        Arc::new(clock::SystemClock),
        config,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_store::Table;

    /// `[limits] read_cache_bytes` sizes the opened store's read cache; 0 turns it off.
    #[test]
    fn open_sizes_the_read_cache_from_the_topology() {
        // The topology's default is the store's own, written twice (the config crate does not
        // depend on the store).
        assert_eq!(
            meridian_core::config::Limits::default().read_cache_bytes,
            meridian_store::DEFAULT_READ_CACHE_BYTES
        );
        for (limits, cached) in [("", true), ("\n[limits]\nread_cache_bytes = 0\n", false)] {
            let text = format!("{}{limits}", crate::testing::TWO_REGIONS);
            let topology = meridian_core::config::parse("t.toml", &text).expect("topology");
            let dir = tempfile::tempdir().expect("tempdir");
            let node =
                super::open(Arc::new(topology), "a", dir.path(), Default::default()).expect("node");
            for _ in 0..2 {
                assert_eq!(node.store().get(Table::Data, b"rep/k").expect("get"), None);
            }
            let hits = node.store().stats().read_cache_hits;
            assert_eq!(hits > 0, cached, "{limits:?}: {hits} hits");
        }
    }
}
