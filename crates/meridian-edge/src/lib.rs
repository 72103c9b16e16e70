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
mod upstream;

use std::future::{Future, IntoFuture as _};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use dns::serve_dns;
pub use error::{Error, Origin, RetryClass};
pub use meridian_dns::bind_udp as bind_dns_udp;
pub use proxy::{COOKIE, REGION_HEADER, REPLAY_HEADER, ZONE_HEADER};
pub use state::{Edge, EdgeOptions, ProxyBody};

/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the proxy on `listener` and the admin API on `admin` until `shutdown` resolves, then
/// stops accepting and lets in-flight requests finish (at most [`DRAIN_TIMEOUT`]). Probes start
/// at once; until they report, every backend is up (health is derived from config).
pub async fn serve(
    edge: Edge,
    listener: TcpListener,
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
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let graceful = GracefulShutdown::new();
    let builder = std::sync::Arc::new(auto::Builder::new(TokioExecutor::new()));
    let tls = edge
        .options()
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
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
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let conn = std::sync::Arc::new(proxy::Conn::new(peer, tls.is_some()));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                let svc = service_fn(move |req| proxy::handle(edge.clone(), conn.clone(), req));
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = watcher.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
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
                    let svc = service_fn(move |req| proxy::handle(edge.clone(), conn.clone(), req));
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    probes.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after the drain timeout; closing them");
    }
    match admin_task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(Error::Listen {
            addr: "admin".to_string(),
            source,
        }),
        Err(_) => Ok(()),
    }
}
