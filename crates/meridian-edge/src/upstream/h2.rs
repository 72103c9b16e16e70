//! HTTP/2 to the app backends of a region with `app_protocol = "http2"` (gRPC among them):
//! with prior knowledge over `http://`, negotiated by ALPN `h2` over `https://`. Each thread
//! keeps one connection per backend and multiplexes every request it sends there over it;
//! hyper's client drives the connection in a task on the thread's runtime. A connection that
//! has closed (GOAWAY, an error, the backend gone) is replaced at the next request; one this
//! thread has not used for [`IDLE_TIMEOUT`] (a backend gone from the topology, say) is let go.
//! Trailers (gRPC's status) stream back with the body.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use http::header;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::conn::Io;
use super::{Failure, IDLE_TIMEOUT, Target, transport};
use crate::Error;
use crate::state::ProxyBody;

/// This thread's connection to each HTTP/2 backend, by backend key, with when it was last
/// used; and when unused ones were last let go.
#[derive(Default)]
struct Conns {
    by_key: HashMap<u64, (SendRequest<ProxyBody>, Instant)>,
    swept: Option<Instant>,
}

impl Conns {
    /// The connection to `key` if it is still open, marked used now.
    fn take_open(&mut self, key: u64, now: Instant) -> Option<SendRequest<ProxyBody>> {
        self.sweep(now);
        let (sender, used) = self.by_key.get_mut(&key)?;
        if sender.is_closed() {
            self.by_key.remove(&key);
            return None;
        }
        *used = now;
        Some(sender.clone())
    }

    /// Every [`IDLE_TIMEOUT`]/4 at most: drops the connections unused for [`IDLE_TIMEOUT`]
    /// (hyper closes one once its last sender is gone and its streams have ended).
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < IDLE_TIMEOUT / 4)
        {
            return;
        }
        self.swept = Some(now);
        self.by_key
            .retain(|_, (_, used)| now.duration_since(*used) < IDLE_TIMEOUT);
    }
}

thread_local! {
    static CONNS: RefCell<Conns> = RefCell::new(Conns::default());
}

/// Sends `req` (origin-form URI, with a `Host` header) to the HTTP/2 backend `key` at `target`,
/// over this thread's connection to it, opened within `connect_timeout` when there is none
/// usable. Returns once the response head has arrived; the body (and its trailers) stream.
pub(crate) async fn send(
    key: u64,
    target: &Target,
    connect_timeout: Duration,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Failure> {
    let req = absolute(req, target);
    let cached = CONNS.with(|c| c.borrow_mut().take_open(key, Instant::now()));
    let mut sender = match cached {
        Some(s) => s,
        None => connect(key, target, connect_timeout).await?,
    };
    if sender.ready().await.is_err() {
        // Closed since it was stored: nothing of this request went out on it.
        sender = connect(key, target, connect_timeout).await?;
        sender
            .ready()
            .await
            .map_err(|e| Failure::Connect(io::Error::other(e)))?;
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Exchange(io::Error::other(e)))?;
    Ok(resp.map(|body| {
        body.map_err(|e| Error::ResponseBody {
            source: io::Error::other(e),
        })
        .boxed()
    }))
}

/// `req` with the absolute URI HTTP/2 carries in `:scheme` and `:authority` (the client's
/// `Host`, else the backend's address), and no `Host` header.
fn absolute(mut req: Request<ProxyBody>, target: &Target) -> Request<ProxyBody> {
    let host = req.headers_mut().remove(header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| target.authority().ok());
    let scheme = if target.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    match Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => {
            // Not expressible (no path): keep the request as it was; hyper refuses it.
            if let Some(h) = host {
                req.headers_mut().insert(header::HOST, h);
            }
        }
    }
    req
}

/// A new HTTP/2 connection to `target` (its transport opened as HTTP/1.1's is, then ALPN
/// checked over TLS), stored as this thread's connection to `key`.
async fn connect(
    key: u64,
    target: &Target,
    timeout: Duration,
) -> Result<SendRequest<ProxyBody>, Failure> {
    let started = tokio::time::Instant::now();
    let io = transport(target, timeout).await?;
    if let Io::Tls(tls) = &io
        && tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice())
    {
        return Err(Failure::Connect(io::Error::other(
            "the backend did not agree to HTTP/2 in the TLS handshake (ALPN h2); \
             its region needs app_protocol = \"http1\"",
        )));
    }
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(crate::HTTP2_KEEPALIVE)
        .keep_alive_timeout(crate::HTTP2_KEEPALIVE);
    let handshake = builder.handshake(TokioIo::new(io));
    let (sender, conn) = match tokio::time::timeout_at(started + timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(Failure::Connect(io::Error::other(e))),
        Err(_) => {
            return Err(Failure::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no HTTP/2 connection within {timeout:?}"),
            )));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 backend connection ended with an error");
        }
    });
    CONNS.with(|c| {
        c.borrow_mut()
            .by_key
            .insert(key, (sender.clone(), Instant::now()))
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender on a connection over an in-memory pipe whose other end (returned, to be kept
    /// open) nobody answers.
    async fn sender() -> (SendRequest<ProxyBody>, tokio::io::DuplexStream) {
        let (io, peer) = tokio::io::duplex(64 * 1024);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .expect("handshake over a pipe");
        tokio::spawn(conn);
        (sender, peer)
    }

    /// A connection used within [`IDLE_TIMEOUT`] is kept; one unused for longer is let go at the
    /// next sweep, and sweeps come at most every quarter of it.
    #[tokio::test]
    async fn unused_connections_are_let_go_after_the_idle_timeout() {
        let start = Instant::now();
        let mut conns = Conns::default();
        let ((one, _pipe1), (two, _pipe2)) = (sender().await, sender().await);
        conns.by_key.insert(1, (one, start));
        conns.by_key.insert(2, (two, start));
        let later = start + IDLE_TIMEOUT / 2;
        assert!(
            conns.take_open(1, later).is_some(),
            "kept within the timeout"
        );
        // Too soon after that sweep for another: 2 stays although it is now past the timeout.
        let past = start + IDLE_TIMEOUT + Duration::from_secs(1);
        conns.swept = Some(past - IDLE_TIMEOUT / 8);
        conns.sweep(past);
        assert!(conns.by_key.contains_key(&2));
        let swept = past + IDLE_TIMEOUT / 4;
        conns.sweep(swept);
        assert!(
            !conns.by_key.contains_key(&2),
            "unused for the timeout: let go"
        );
        assert!(conns.by_key.contains_key(&1), "used at {later:?}: kept");
    }
}
