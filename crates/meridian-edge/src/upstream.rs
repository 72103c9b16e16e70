//! Connections to app backends: HTTP/1.1 over TCP (`hyper::client::conn::http1`), each driven
//! by a task on the runtime thread that opened it, and a pool of idle connections per thread,
//! keyed by backend. A request checks a connection out of its own thread's pool and the
//! response body puts it back once the body has been read to its end, so with one runtime per
//! thread a request and its upstream connection never leave the thread. With a multi-thread
//! runtime a connection may be returned to another thread's pool; that is still correct.
//!
//! Idle connections are dropped after [`IDLE_TIMEOUT`] (checked when a thread uses its pool)
//! or as soon as the backend closes them; a thread keeps at most [`MAX_IDLE`] per backend.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::state::ProxyBody;

/// How long an idle connection is kept for reuse.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections one thread keeps per backend.
pub(crate) const MAX_IDLE: usize = 256;
/// How many of the most recently returned connections a checkout looks at for a ready one.
const READY_SCAN: usize = 4;

/// A fresh key for [`send`]: one per backend (kept across reloads with the backend).
pub(crate) fn new_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where a backend listens: host (without IPv6 brackets) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection could be opened (or it died before the request was written): nothing
    /// reached the backend.
    Connect(io::Error),
    /// The exchange failed after the request may have been written.
    Exchange(hyper::Error),
}

struct IdleConn {
    tx: SendRequest<ProxyBody>,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<u64, Vec<IdleConn>>,
    swept: Option<Instant>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

impl Pool {
    /// A recently returned live connection to `key`: the first ready at once among the last
    /// [`READY_SCAN`] returned (a connection whose task has not yet seen its last response end
    /// is not), else the last one still open. Constant time, however many are idle.
    fn checkout(&mut self, key: u64, now: Instant) -> Option<SendRequest<ProxyBody>> {
        let list = self.idle.get_mut(&key)?;
        let fresh = |c: &IdleConn| now.duration_since(c.since) < IDLE_TIMEOUT;
        let scan = list.len().saturating_sub(READY_SCAN);
        if let Some(i) = (scan..list.len())
            .rev()
            .find(|&i| list[i].tx.is_ready() && fresh(&list[i]))
        {
            return Some(list.swap_remove(i).tx);
        }
        while let Some(c) = list.pop() {
            if !c.tx.is_closed() && fresh(&c) {
                return Some(c.tx);
            }
        }
        None
    }

    fn checkin(&mut self, key: u64, tx: SendRequest<ProxyBody>, now: Instant) {
        if self
            .swept
            .is_none_or(|at| now.duration_since(at) >= IDLE_TIMEOUT / 4)
        {
            self.swept = Some(now);
            self.idle.retain(|_, list| {
                list.retain(|c| !c.tx.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = self.idle.entry(key).or_default();
        if list.len() < MAX_IDLE {
            list.push(IdleConn { tx, since: now });
        }
    }
}

fn checkout(key: u64) -> Option<SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|p| p.checkout(key, Instant::now()))
}

fn checkin(key: u64, tx: SendRequest<ProxyBody>) {
    if !tx.is_closed() {
        POOL.with_borrow_mut(|p| p.checkin(key, tx, Instant::now()));
    }
}

/// Sends `req` (origin-form URI, with a `Host` header) to the backend `key` at `target`: on an
/// idle pooled connection if one is alive, else on a new one opened within `connect_timeout`.
/// A request that comes back unsent from a pooled connection (the backend closed it meanwhile)
/// is sent on the next one, so only a failure of a fresh connection is a connect failure.
pub(crate) async fn send(
    key: u64,
    target: &Target,
    connect_timeout: Duration,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Failure> {
    while let Some(mut tx) = checkout(key) {
        if tx.ready().await.is_err() {
            continue;
        }
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok(pooled(resp, key, tx)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(Failure::Exchange(e.into_error())),
            },
        }
    }
    let mut tx = connect(target, connect_timeout)
        .await
        .map_err(Failure::Connect)?;
    match tx.try_send_request(req).await {
        Ok(resp) => Ok(pooled(resp, key, tx)),
        Err(mut e) => match e.take_message() {
            Some(_) => Err(Failure::Connect(io::Error::other(e.into_error()))),
            None => Err(Failure::Exchange(e.into_error())),
        },
    }
}

/// Sends `req` on a connection of its own, closed after the answer (for rare calls such as
/// fetching another edge's views).
pub(crate) async fn send_once(
    target: &Target,
    connect_timeout: Duration,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, Failure> {
    let mut tx = connect(target, connect_timeout)
        .await
        .map_err(Failure::Connect)?;
    tx.send_request(req).await.map_err(Failure::Exchange)
}

async fn connect(target: &Target, timeout: Duration) -> io::Result<SendRequest<ProxyBody>> {
    let connecting = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    Ok(tx)
}

fn pooled(resp: Response<Incoming>, key: u64, tx: SendRequest<ProxyBody>) -> Response<ProxyBody> {
    resp.map(|inner| {
        PooledBody {
            inner,
            done: false,
            conn: Some((key, tx)),
        }
        .boxed()
    })
}

/// A backend's response body that returns its connection to the pool once read to its end.
/// Dropped before then, the connection is dropped too (hyper closes it: the rest of the body
/// would otherwise be read as the next response).
struct PooledBody {
    inner: Incoming,
    done: bool,
    conn: Option<(u64, SendRequest<ProxyBody>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((key, tx)) = self.conn.take() {
            checkin(key, tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => {
                this.done = true;
                this.release();
            }
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.done || self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use http_body_util::Full;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn get(host: &str) -> Request<ProxyBody> {
        Request::get("/")
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
            .unwrap()
    }

    /// A backend answering every request on a connection with `body`; counts connections.
    async fn backend(body: &'static str) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = tx.send(());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    fn target(addr: SocketAddr) -> Target {
        Target {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_was_read() {
        let (addr, mut accepted) = backend("hi").await;
        let key = new_key();
        let t = target(addr);
        for _ in 0..3 {
            let resp = send(key, &t, Duration::from_secs(1), get("a"))
                .await
                .unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "hi");
        }
        assert!(accepted.try_recv().is_ok());
        assert!(
            accepted.try_recv().is_err(),
            "one connection served all three"
        );
    }

    #[tokio::test]
    async fn an_unread_body_does_not_return_its_connection() {
        let (addr, mut accepted) = backend("hello").await;
        let key = new_key();
        let t = target(addr);
        let first = send(key, &t, Duration::from_secs(1), get("a"))
            .await
            .unwrap();
        drop(first);
        let second = send(key, &t, Duration::from_secs(1), get("a"))
            .await
            .unwrap();
        let body = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert!(accepted.try_recv().is_ok());
        assert!(
            accepted.try_recv().is_ok(),
            "the second request needed a new connection"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let out = send(new_key(), &target(addr), Duration::from_secs(1), get("a")).await;
        assert!(matches!(out, Err(Failure::Connect(_))), "{out:?}");
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_reused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                // Close while the client keeps the connection idle.
                drop(s);
            }
        });
        let key = new_key();
        let t = target(addr);
        for _ in 0..2 {
            let resp = send(key, &t, Duration::from_secs(1), get("a"))
                .await
                .unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.await.unwrap();
    }
}
