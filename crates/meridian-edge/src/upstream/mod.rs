//! Connections to app backends: an HTTP/1.1 client of the edge's own, driven inline by the task
//! of the request that uses it (no connection task, no channels), and a pool of idle
//! connections per thread, keyed by backend. A request checks a connection out of its own
//! thread's pool, writes its head and body, and reads the response head; the response body
//! owns the connection, reads it from the socket as it is polled and puts it back into the pool
//! of the thread polling it once the body has been read to its end. With one runtime per thread
//! a request and its upstream connection never leave the thread; with a multi-thread runtime a
//! connection may be returned to another thread's pool, which is still correct.
//!
//! Response framing follows RFC 9112 §6.3: no body for `HEAD` and for 1xx/204/304; a chunked
//! body when `Transfer-Encoding` ends in `chunked`; else a `Content-Length` body; else the body
//! runs to the connection's close. Interim 1xx responses are skipped, except `101`, which is
//! passed on without a body and hands the connection over as a [`Tunnel`] in the response's
//! extensions (the proxy splices it to the client's upgraded connection, or drops it).
//!
//! Idle connections are dropped after [`IDLE_TIMEOUT`] (checked when a thread uses its pool)
//! or when the backend has closed them or sent anything unasked (seen without a system call
//! from the event loop's readiness, which the last response's reads cleared; a socket reported
//! readable since is read from to tell); a thread keeps at most [`MAX_IDLE`] per backend.
//! [`send_once`], for rare calls, uses hyper's client on a connection of its own.

mod body;
mod conn;
mod h2;
mod head;
mod pool;
mod request;
#[cfg(test)]
mod tests;
mod tunnel;

pub(crate) use tunnel::{Spliced, Tunnel, splice};

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::state::ProxyBody;

use body::{Chunk, State, UpstreamBody};
use conn::{Conn, Io, Wrote};
use head::{Framing, read_head};
use pool::{checkin, checkout};
use request::{BodySender, Sending, encode_head};

/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections one thread keeps per backend.
const MAX_IDLE: usize = 256;
/// Largest response head (status line and header fields, or a chunked body's trailers)
/// accepted; a longer one fails the exchange.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head; more fail the exchange.
const MAX_HEADERS: usize = 100;
/// Request body data up to this size is copied behind the request head, so both go out in one
/// write.
const COPY_BODY: usize = 16 * 1024;
/// First size of a connection's reads; doubled while reads fill it, up to [`READ_MAX`].
const READ_MIN: usize = 8 * 1024;
/// Largest read.
const READ_MAX: usize = 256 * 1024;

/// A fresh key for [`send`]: one per backend (kept across reloads with the backend).
pub(crate) fn new_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where a backend listens: host (without IPv6 brackets) and port, and how to speak TLS to it
/// for an `https://` backend.
#[derive(Clone)]
pub(crate) struct Target {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (80 when the URL names none, 443 for `https://`).
    pub port: u16,
    /// For an `https://` backend: the client configuration and the name its certificate must
    /// carry (the URL's host, also sent as SNI).
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Whether the backend is spoken to in HTTP/2 (its region's `app_protocol`); its `tls`
    /// then offers only `h2` by ALPN.
    pub http2: bool,
}

impl Target {
    /// `host:port`, with an IPv6 host in brackets.
    fn authority(&self) -> Result<http::uri::Authority, http::uri::InvalidUri> {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port).parse()
        } else {
            format!("{}:{}", self.host, self.port).parse()
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("http2", &self.http2)
            .finish()
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection could be opened (or it failed before any byte of the request was
    /// written): nothing reached the backend.
    Connect(io::Error),
    /// The exchange failed after the request may have been written: a write or read failed,
    /// the backend closed the connection, or its response head was malformed.
    Exchange(io::Error),
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}

/// Sends `req` (origin-form URI, with a `Host` header) to the backend `key` at `target`: on an
/// idle pooled connection if one is usable, else on a new one opened within `connect_timeout`.
/// A request none of whose bytes could be written on a pooled connection is sent on the next
/// one (or a new one), so only a failure of a fresh connection is a connect failure. Returns
/// once the response head has arrived; the body streams from the connection. An HTTP/2
/// backend gets it over this thread's connection to it instead (see `h2`).
pub(crate) async fn send(
    key: u64,
    target: &Target,
    connect_timeout: Duration,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Failure> {
    if target.http2 {
        return h2::send(key, target, connect_timeout, req).await;
    }
    let (parts, mut body) = req.into_parts();
    let framing = Sending::of(&parts.headers, &body);
    let (mut conn, mut fresh) = match checkout(key) {
        Some(c) => (c, false),
        None => (connect(target, connect_timeout).await?, true),
    };
    let mut out = std::mem::take(&mut conn.write);
    out.clear();
    encode_head(&mut out, &parts, framing, target);
    let mut sender = BodySender {
        framing,
        sent: 0,
        done: framing == Sending::Empty,
        ended: false,
    };
    // Small first data goes out with the head.
    let mut large = None;
    if !sender.done {
        match sender.next(&mut body).await.map_err(Failure::Exchange)? {
            Some(data) if data.len() <= COPY_BODY => sender.frame(&mut out, &data),
            Some(data) => large = Some(data),
            None => {}
        }
        if sender.done && large.is_none() {
            sender.end(&mut out).map_err(Failure::Exchange)?;
        }
    }
    conn.write = out;
    let wrote = loop {
        let (e, written) = match conn.flush().await {
            Ok(wrote) => break wrote,
            Err(failed) => failed,
        };
        if written {
            return Err(Failure::Exchange(e));
        }
        if fresh {
            return Err(Failure::Connect(e));
        }
        let unsent = std::mem::take(&mut conn.write);
        (conn, fresh) = match checkout(key) {
            Some(c) => (c, false),
            None => (connect(target, connect_timeout).await?, true),
        };
        conn.write = unsent;
    };
    let complete = match wrote {
        Wrote::Answered => false,
        Wrote::All => match sender.rest(&mut conn, large, &mut body).await {
            Ok(wrote) => wrote == Wrote::All,
            // A backend that answered and closed without reading the whole request: its
            // answer is passed on all the same.
            Err(_) if conn.answered() => false,
            Err(e) => return Err(Failure::Exchange(e)),
        },
    };
    drop(body);
    let mut head = read_head(&mut conn, &parts.method)
        .await
        .map_err(Failure::Exchange)?;
    // After a request cut short, the connection is in no state for another.
    head.keep_alive &= complete;
    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
        let mut resp = Response::new(ProxyBody::default());
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        resp.extensions_mut()
            .insert(Tunnel(Arc::new(Mutex::new(Some(conn.into_parts())))));
        return Ok(resp);
    }
    let state = match head.framing {
        Framing::Empty => {
            if head.keep_alive && conn.read.is_empty() {
                checkin(key, conn);
            }
            State::Done(None)
        }
        Framing::Length(n) => State::Length(n, conn),
        Framing::Chunked => State::Chunk(Chunk::Size, conn),
        Framing::Close => State::Close(conn),
    };
    let mut resp = Response::new(
        UpstreamBody {
            state,
            key,
            keep_alive: head.keep_alive,
        }
        .boxed(),
    );
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    if let Some(reason) = head.reason {
        resp.extensions_mut().insert(reason);
    }
    Ok(resp)
}

/// Sends `req` on a connection of its own, closed after the answer (for rare calls such as
/// fetching another edge's views).
pub(crate) async fn send_once(
    target: &Target,
    connect_timeout: Duration,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, Failure> {
    let stream = open(target, connect_timeout)
        .await
        .map_err(Failure::Connect)?;
    let (mut tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connect(io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    tx.send_request(req)
        .await
        .map_err(|e| Failure::Exchange(io::Error::other(e)))
}

/// A new connection to `target` for [`send`] ([`transport`]'s): no byte of a request was
/// sent on a failure.
async fn connect(target: &Target, timeout: Duration) -> Result<Conn, Failure> {
    transport(target, timeout).await.map(Conn::new)
}

/// A new transport to `target`: TCP, with its TLS handshake done for an `https://` backend,
/// within `timeout` in all. A failed handshake is a connect failure.
async fn transport(target: &Target, timeout: Duration) -> Result<Io, Failure> {
    let started = tokio::time::Instant::now();
    let tcp = open(target, timeout).await.map_err(Failure::Connect)?;
    let Some((connector, name)) = &target.tls else {
        return Ok(Io::Plain(tcp));
    };
    let handshake = connector.connect(name.clone(), tcp);
    match tokio::time::timeout_at(started + timeout, handshake).await {
        Ok(Ok(tls)) => Ok(Io::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(Failure::Connect(io::Error::new(
            e.kind(),
            format!("TLS handshake: {e}"),
        ))),
        Err(_) => Err(Failure::Connect(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {timeout:?}"),
        ))),
    }
}

/// A TCP connection to `target` (no Nagle delay) opened within `timeout`.
async fn open(target: &Target, timeout: Duration) -> io::Result<TcpStream> {
    let connecting = TcpStream::connect((target.host.as_str(), target.port));
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
