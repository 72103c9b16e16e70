//! Meridian's global front door (DESIGN §3): an HTTP reverse proxy in front of every region's
//! app backends, with routing decided by `meridian-core`, active and passive health, request
//! level failover under a retry budget, residency-safe routing, a token-protected admin API,
//! and GeoDNS (`meridian-dns`) answering from the same health view.

#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
mod dns;
mod error;
pub mod geo;
pub mod metrics;
mod probe;
mod proxy;
mod state;
pub mod tls;
pub mod token;
mod tunnels;
mod upstream;

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use dns::serve_dns;
pub use error::{Error, Origin, RetryClass};
pub use meridian_dns::bind_udp as bind_dns_udp;
pub use proxy::{COOKIE, REGION_HEADER, REPLAY_HEADER, ZONE_HEADER};
pub use state::{Edge, EdgeOptions, HTTP2_KEEPALIVE, ProxyBody};

/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests and open switched-protocol connections may take to finish
/// after shutdown begins, by default ([`EdgeOptions::drain_timeout`]).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the proxy on `listener` and the admin API on `admin` until `shutdown` resolves, then
/// stops accepting and lets in-flight requests and switched-protocol (WebSocket) connections
/// finish, for at most [`EdgeOptions::drain_timeout`]; those still open then are closed. Probes start
/// at once; until they report, every backend is up (health is derived from config). Everything
/// runs on the calling runtime; [`serve_threads`] serves on a runtime per thread.
pub async fn serve(
    edge: Edge,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run(edge, listener, Vec::new(), admin, shutdown).await
}

/// [`serve`] on one thread per listener of `listeners` (from [`bind_proxy`]): the first is
/// served on the calling runtime, beside the admin API and the probes; each other one on a
/// thread of its own running a current-thread runtime. A request is then handled, and its
/// backend connection driven and pooled, on the thread that accepted its client connection:
/// nothing is handed between threads. Fails when `listeners` is empty or a thread cannot start.
pub async fn serve_threads(
    edge: Edge,
    mut listeners: Vec<std::net::TcpListener>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listen_error = |source| Error::Listen {
        addr: "proxy".to_string(),
        source,
    };
    if listeners.is_empty() {
        return Err(listen_error(std::io::Error::other("no proxy listener")));
    }
    let first = listeners.remove(0);
    first.set_nonblocking(true).map_err(listen_error)?;
    let first = TcpListener::from_std(first).map_err(listen_error)?;
    run(edge, first, listeners, admin, shutdown).await
}

/// Binds the proxy's `addr` `threads` times for [`serve_threads`]: with `SO_REUSEPORT` (Unix),
/// so the kernel spreads new connections over the threads' listeners; elsewhere, clones of one
/// listener. Nonblocking. Fails (`AddrInUse`) when another socket already listens on `addr`,
/// even one that allows reuse, so two edges never share a port.
pub fn bind_proxy(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let threads = threads.max(1);
    if threads == 1 || cfg!(not(unix)) {
        let first = listener(addr, false)?;
        let mut all = Vec::with_capacity(threads);
        for _ in 1..threads {
            all.push(first.try_clone()?);
        }
        all.push(first);
        return Ok(all);
    }
    if addr.port() != 0 {
        // A plain bind fails if anyone listens there, with or without SO_REUSEPORT.
        drop(std::net::TcpListener::bind(addr)?);
    }
    let first = listener(addr, true)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..threads {
        all.push(listener(addr, true)?);
    }
    Ok(all)
}

/// A nonblocking listener on `addr` with a backlog of 1024 (as tokio's `bind`), with
/// `SO_REUSEPORT` when `reuse_port` (Unix only).
fn listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    {
        s.set_reuse_address(true)?;
        s.set_reuse_port(reuse_port)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

async fn run(
    edge: Edge,
    listener: TcpListener,
    others: Vec<std::net::TcpListener>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    metrics::install();
    let probes = tokio::spawn(probe::run(edge.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(
        axum::serve(admin, admin::router(edge.clone()))
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    let mut threads = Vec::with_capacity(others.len());
    let mut started = Ok(());
    for (i, l) in others.into_iter().enumerate() {
        match spawn_proxy_thread(i + 1, edge.clone(), l, stop_rx.clone()) {
            Ok(done) => threads.push(done),
            Err(source) => {
                started = Err(Error::Listen {
                    addr: "proxy".to_string(),
                    source,
                });
                break;
            }
        }
    }
    let local = tokio::spawn(accept_loop(edge, listener, stop_rx));
    if started.is_ok() {
        shutdown.await;
    }
    let _ = stop_tx.send(true);
    probes.abort();
    let _ = local.await;
    for done in threads {
        let _ = done.await;
    }
    started?;
    match admin_task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(Error::Listen {
            addr: "admin".to_string(),
            source,
        }),
        Err(_) => Ok(()),
    }
}

/// Starts thread `i` serving `listener` on a current-thread runtime of its own until `stop`
/// turns true; the receiver resolves once it has drained and ended.
fn spawn_proxy_thread(
    i: usize,
    edge: Edge,
    listener: std::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _entered = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("edge-proxy-{i}"))
        .spawn(move || {
            runtime.block_on(accept_loop(edge, listener, stop));
            drop(runtime);
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// Accepts client connections on `listener` and serves them on the current runtime until
/// `stop` turns true, then lets in-flight requests and every thread's switched-protocol
/// connections finish, for at most [`EdgeOptions::drain_timeout`].
async fn accept_loop(
    edge: Edge,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let graceful = GracefulShutdown::new();
    let header_timeout = edge.options().client_header_timeout;
    let ping = edge.options().http2_keepalive;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // A vanished HTTP/2 client (no FIN, no RST) would hold its connection forever: it is sent
    // a PING and, unanswered, closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(ping))
        .keep_alive_timeout(ping);
    let builder = std::sync::Arc::new(builder);
    let tls = edge
        .options()
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let conn = std::sync::Arc::new(proxy::Conn::new(edge.clone(), peer, tls.is_some()));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                let first = conn.clone();
                let svc = service_fn(move |req| proxy::handle(conn.clone(), req));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = watcher.watch(conn);
                tokio::spawn(serve_client(conn, first, peer, header_timeout));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let first = conn.clone();
                    let svc = service_fn(move |req| proxy::handle(conn.clone(), req));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    serve_client(watcher.watch(conn), first, peer, header_timeout).await;
                });
            }
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + edge.options().drain_timeout;
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(%addr, "in-flight requests still running after the drain timeout; closing them");
    }
    let cut = edge.tunnels().drain(deadline).await;
    if cut > 0 {
        tracing::warn!(%addr, cut, "switched-protocol connections still open after the drain timeout; closed them");
    }
}

/// Runs a client connection's future `conn` to its end, unless none of its requests has
/// reached the service ([`proxy::Conn`]'s `served`) within `limit` of the accept: then drops
/// it, closing the connection. hyper's header timeout starts only once hyper-util's
/// HTTP/1-or-2 detection has read the first bytes, so without this a client that connects and
/// sends nothing (or a partial HTTP/2 preface) would hold its connection forever
/// (hyperium/hyper#3756). The region node's accept loop does the same (the two crates share
/// no crate with tokio to hold one copy).
async fn serve_client<F, E>(
    conn: F,
    client: std::sync::Arc<proxy::Conn>,
    peer: std::net::SocketAddr,
    limit: Duration,
) where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = &mut conn => ended,
        () = tokio::time::sleep(limit) => {
            if !client.served.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(%peer, "no request within the header timeout");
                return;
            }
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
