//! Meridian's global front door (DESIGN §3): an HTTP reverse proxy in front of every region's
//! app backends, with routing decided by `meridian-core`, active and passive health, request
//! level failover under a retry budget, residency-safe routing, a token-protected admin API,
//! and GeoDNS (`meridian-dns`) answering from the same health view.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod clock;
mod dns;
mod error;
pub mod geo;
pub mod jwks;
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
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
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
    let max = edge.options().max_connections;
    meridian_http::fd_limit::check(
        (max as u64).saturating_mul(2).saturating_add(256),
        &format!(
            "[[edge]] max_connections = {max} (a client and a backend connection each, plus \
             256 for listeners, probes, logs and DNS)"
        ),
    );
    let probes = tokio::spawn(probe::run(edge.clone()));
    let fetchers: Vec<_> = edge
        .jwks_sources()
        .iter()
        .map(|source| tokio::spawn(jwks::run(edge.clone(), Arc::clone(source))))
        .collect();
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
    for f in &fetchers {
        f.abort();
    }
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

/// The service answering client connection `conn`'s requests, each marked in flight on
/// `activity` until its response head is out or hyper drops it (a reset HTTP/2 stream).
fn client_service(
    conn: std::sync::Arc<proxy::Conn>,
    activity: std::sync::Arc<meridian_http::Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<ProxyBody>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<hyper::Response<ProxyBody>, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let in_flight = activity.request();
        let resp = proxy::handle(conn.clone(), req);
        async move {
            let resp = resp.await;
            drop(in_flight);
            resp
        }
    })
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
    // Every connection's task holds a receiver: `closed()` resolves once all have ended.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let header_timeout = edge.options().client_header_timeout;
    let ping = edge.options().http2_keepalive;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // A vanished HTTP/2 client (no FIN, no RST) would hold its connection forever: it is sent
    // a PING and, unanswered, closed. Extended CONNECT (RFC 8441) carries WebSockets.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(ping))
        .keep_alive_timeout(ping)
        .enable_connect_protocol();
    let builder = std::sync::Arc::new(builder);
    let tls = edge
        .options()
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    // This thread's access-log lines go out on a tick of its own.
    let flusher = edge.options().access_log.clone().map(|log| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(access_log::FLUSH_EVERY);
            loop {
                tick.tick().await;
                log.flush();
            }
        })
    });
    loop {
        // A connection is accepted only with a slot to serve it; without one, new
        // connections wait in the kernel's backlog until a served one closes.
        let slot = tokio::select! {
            slot = edge.connection_slots().take(|| {
                metrics::counter!(metrics::CONNECTIONS_LIMITED).increment(1);
            }) => slot,
            () = &mut stopped => break,
        };
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
        let closing = closing_rx.clone();
        match tls.clone() {
            None => {
                let activity = std::sync::Arc::new(meridian_http::Activity::new());
                let svc = client_service(conn, activity.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let served = meridian_http::serve_client(conn, activity, header_timeout, closing);
                tokio::spawn(async move {
                    served.await;
                    drop(slot);
                });
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
                    let activity = std::sync::Arc::new(meridian_http::Activity::new());
                    let svc = client_service(conn, activity.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    meridian_http::serve_client(conn, activity, header_timeout, closing).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    drop(closing_rx);
    let deadline = tokio::time::Instant::now() + edge.options().drain_timeout;
    let _ = closing.send(true);
    if tokio::time::timeout_at(deadline, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!(%addr, "in-flight requests still running after the drain timeout; closing them");
    }
    let cut = edge.tunnels().drain(deadline).await;
    if cut > 0 {
        tracing::warn!(%addr, cut, "switched-protocol connections still open after the drain timeout; closed them");
    }
    if let Some(f) = flusher {
        f.abort();
    }
    if let Some(log) = &edge.options().access_log {
        log.flush();
    }
}
