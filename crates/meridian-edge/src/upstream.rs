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
//! passed on without a body (the edge does not upgrade connections) and ends the connection.
//!
//! Idle connections are dropped after [`IDLE_TIMEOUT`] (checked when a thread uses its pool)
//! or when the backend has closed them (seen without a system call from the event loop's
//! readiness; a connection idle for [`PROBE_AFTER`] or more is also read from, and dropped if
//! the backend sent anything); a thread keeps at most [`MAX_IDLE`] per backend.
//! [`send_once`], for rare calls, uses hyper's client on a connection of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{Future as _, poll_fn};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite as _, Interest};
use tokio::net::TcpStream;

use crate::Error;
use crate::state::ProxyBody;

/// How long an idle connection is kept for reuse.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections one thread keeps per backend.
pub(crate) const MAX_IDLE: usize = 256;
/// Largest response head (status line and header fields, or a chunked body's trailers)
/// accepted; a longer one fails the exchange.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head; more fail the exchange.
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) of a chunked response body.
const MAX_CHUNK_LINE: usize = 4096;
/// An idle connection that has been readable since its last response and is older than this
/// is read from before reuse, to find data or a close the event loop has not reported. Younger
/// ones are trusted: their readiness is almost always left over from their last response.
const PROBE_AFTER: Duration = Duration::from_secs(1);
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

/// One backend connection: the socket and its buffers.
struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// Bytes to write (kept between requests for its capacity).
    write: Vec<u8>,
    /// Size of the next read.
    read_size: usize,
}

impl Conn {
    fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::with_capacity(1024),
            read_size: READ_MIN,
        }
    }

    /// Whether this idle connection, idle for `idle`, may carry a request: the backend has not
    /// closed it (as far as the event loop has reported) and, when it was readable and idle for
    /// [`PROBE_AFTER`] or more, a read finds neither data nor a close.
    fn usable(&self, idle: Duration) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(self.io.ready(Interest::READABLE)).poll(&mut cx) {
            // Nothing reported since a read last found the socket empty.
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(r)) if r.is_read_closed() || r.is_error() => false,
            // Readable: almost always left from the last response (whose reads never had to
            // find the socket empty), so a young connection is trusted without a system call.
            Poll::Ready(Ok(_)) if idle < PROBE_AFTER => true,
            Poll::Ready(Ok(_)) => {
                let mut byte = [0u8; 1];
                matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has into `read`: `Ready(Ok(0))` when the backend closed it.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(self.read_size);
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            let spare = self.read.capacity() - self.read.len();
            match self.io.try_read_buf(&mut self.read) {
                Ok(n) => {
                    if n == spare && self.read_size < READ_MAX {
                        self.read_size *= 2;
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads more into `read`; the backend closing the connection is an error saying `what`
    /// was cut off.
    async fn fill(&mut self, what: &str) -> io::Result<()> {
        match poll_fn(|cx| self.poll_fill(cx)).await? {
            0 => Err(eof(what)),
            _ => Ok(()),
        }
    }

    /// Writes all of `data`, unless the backend answers while the socket takes no more (it
    /// may answer without reading the whole request): then [`Wrote::Answered`], with what it
    /// sent in `read`. A failure says whether any byte was written.
    async fn write_all(&mut self, data: &[u8]) -> Result<Wrote, (io::Error, bool)> {
        let mut done = 0;
        poll_fn(|cx| {
            while done < data.len() {
                match Pin::new(&mut self.io).poll_write(cx, &data[done..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((io::ErrorKind::WriteZero.into(), done > 0)));
                    }
                    Poll::Ready(Ok(n)) => done += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((e, done > 0))),
                    Poll::Pending => loop {
                        match self.poll_fill(cx) {
                            // A close without an answer: the write fails in its turn.
                            Poll::Pending | Poll::Ready(Ok(0)) => return Poll::Pending,
                            Poll::Ready(Ok(_)) if self.interim_only() => {}
                            Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Wrote::Answered)),
                            Poll::Ready(Err(e)) => return Poll::Ready(Err((e, done > 0))),
                        }
                    },
                }
            }
            Poll::Ready(Ok(Wrote::All))
        })
        .await
    }

    /// Drops complete interim heads (1xx but 101, such as `100 Continue`) from the start of
    /// `read`: whether what is left could still be one, so that it is no answer yet.
    fn interim_only(&mut self) -> bool {
        let interim = |code: u16| (100..200).contains(&code) && code != 101;
        loop {
            if self.read.is_empty() {
                return true;
            }
            let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                &self.read,
                &mut fields,
            );
            match parsed {
                Ok(httparse::Status::Complete(len)) if res.code.is_some_and(interim) => {
                    self.read.advance(len);
                }
                Ok(httparse::Status::Partial) => {
                    return self.read.len() < MAX_HEAD && res.code.is_none_or(interim);
                }
                _ => return false,
            }
        }
    }

    /// Whether the backend has sent something (read into `read`), without waiting.
    fn answered(&mut self) -> bool {
        if self.read.is_empty() {
            self.read.reserve(self.read_size);
            let _ = self.io.try_read_buf(&mut self.read);
        }
        !self.read.is_empty()
    }

    /// [`Conn::write_all`] of the write buffer, which is emptied.
    async fn flush(&mut self) -> Result<Wrote, (io::Error, bool)> {
        let out = std::mem::take(&mut self.write);
        let wrote = self.write_all(&out).await;
        self.write = out;
        self.write.clear();
        wrote
    }
}

/// How far a write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrote {
    /// Everything was written.
    All,
    /// The backend answered before everything was written; the rest is not sent.
    Answered,
}

struct IdleConn {
    conn: Conn,
    since: Instant,
}

/// Hashes a pool key by one multiplication: keys are distinct counter values from
/// [`new_key`], chosen by no client, so SipHash's guard against chosen keys buys nothing.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Pool {
    idle: HashMap<u64, Vec<IdleConn>, BuildHasherDefault<KeyHasher>>,
    swept: Option<Instant>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

impl Pool {
    /// The most recently returned usable connection to `key`. Unusable ones met on the way are
    /// dropped, so a checkout takes constant time amortised, however many are idle.
    fn checkout(&mut self, key: u64, now: Instant) -> Option<Conn> {
        let list = self.idle.get_mut(&key)?;
        while let Some(c) = list.pop() {
            let idle = now.saturating_duration_since(c.since);
            if idle >= IDLE_TIMEOUT {
                // Returned in time order: every older one has expired too.
                list.clear();
                return None;
            }
            if c.conn.usable(idle) {
                return Some(c.conn);
            }
        }
        None
    }

    fn checkin(&mut self, key: u64, conn: Conn, now: Instant) {
        if self
            .swept
            .is_none_or(|at| now.duration_since(at) >= IDLE_TIMEOUT / 4)
        {
            self.swept = Some(now);
            self.idle.retain(|_, list| {
                list.retain(|c| {
                    now.duration_since(c.since) < IDLE_TIMEOUT && c.conn.usable(Duration::ZERO)
                });
                !list.is_empty()
            });
        }
        let list = self.idle.entry(key).or_default();
        if list.len() < MAX_IDLE {
            list.push(IdleConn { conn, since: now });
        }
    }
}

fn checkout(key: u64) -> Option<Conn> {
    POOL.try_with(|p| p.borrow_mut().checkout(key, Instant::now()))
        .ok()
        .flatten()
}

fn checkin(key: u64, mut conn: Conn) {
    if conn.read_size > READ_MIN {
        // A large body grew the reads: an idle connection keeps no large buffer.
        conn.read = BytesMut::new();
        conn.read_size = READ_MIN;
    }
    // During thread teardown the pool is gone and the connection is dropped instead.
    let _ = POOL.try_with(|p| p.borrow_mut().checkin(key, conn, Instant::now()));
}

/// How a request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// No body.
    Empty,
    /// Exactly this many bytes; `true` when the request's own `Content-Length` says so.
    Length(u64, bool),
    /// Chunked transfer coding.
    Chunked,
}

impl Sending {
    /// Framing for a request with these headers and body: none when the body is known to be
    /// empty, its `Content-Length` when it has a valid one, else the body's exact size, else
    /// chunked.
    fn of(headers: &HeaderMap, body: &ProxyBody) -> Sending {
        if body.is_end_stream() {
            return Sending::Empty;
        }
        let mut given = headers.get_all(header::CONTENT_LENGTH).iter();
        if let (Some(v), None) = (given.next(), given.next())
            && let Some(n) = std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        {
            return Sending::Length(n, true);
        }
        match body.size_hint().exact() {
            Some(0) => Sending::Empty,
            Some(n) => Sending::Length(n, false),
            None => Sending::Chunked,
        }
    }
}

/// Writes the request line and header fields of `parts` for `framing` into `dst`: the target in
/// origin form, the fields as given except `Transfer-Encoding` (and `Content-Length` when the
/// framing supplies its own), a `Host` from `target` when the request has none.
fn encode_head(dst: &mut Vec<u8>, parts: &http::request::Parts, framing: Sending, target: &Target) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    dst.extend_from_slice(parts.method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(path.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    let own_length = matches!(framing, Sending::Length(_, false) | Sending::Chunked);
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING || (own_length && name == header::CONTENT_LENGTH) {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::HOST) {
        // Writing into a Vec cannot fail.
        let _ = match (target.host.contains(':'), target.port) {
            (true, 80) => write!(dst, "host: [{}]\r\n", target.host),
            (true, p) => write!(dst, "host: [{}]:{p}\r\n", target.host),
            (false, 80) => write!(dst, "host: {}\r\n", target.host),
            (false, p) => write!(dst, "host: {}:{p}\r\n", target.host),
        };
    }
    match framing {
        Sending::Length(n, false) => {
            let _ = write!(dst, "content-length: {n}\r\n");
        }
        Sending::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Sending::Empty | Sending::Length(_, true) => {}
    }
    dst.extend_from_slice(b"\r\n");
}

/// Sends `req` (origin-form URI, with a `Host` header) to the backend `key` at `target`: on an
/// idle pooled connection if one is usable, else on a new one opened within `connect_timeout`.
/// A request none of whose bytes could be written on a pooled connection is sent on the next
/// one (or a new one), so only a failure of a fresh connection is a connect failure. Returns
/// once the response head has arrived; the body streams from the connection.
pub(crate) async fn send(
    key: u64,
    target: &Target,
    connect_timeout: Duration,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Failure> {
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

/// Writes a request body with its framing, checking a `Content-Length` body's size.
struct BodySender {
    framing: Sending,
    /// Data bytes taken from the body so far.
    sent: u64,
    /// Whether the body has no more frames.
    done: bool,
    /// Whether the end of the body has been framed.
    ended: bool,
}

impl BodySender {
    /// The body's next data (trailers are not sent), or `None` at its end; counts what it
    /// returns and fails once a `Content-Length` body has more than it said.
    async fn next(&mut self, body: &mut ProxyBody) -> io::Result<Option<Bytes>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(frame) = body.frame().await else {
                self.done = true;
                return Ok(None);
            };
            let frame = frame.map_err(io::Error::other)?;
            self.done = body.is_end_stream();
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                self.sent += data.len() as u64;
                if let Sending::Length(n, _) = self.framing
                    && self.sent > n
                {
                    return Err(invalid(format!(
                        "the request body is longer than its length {n}"
                    )));
                }
                return Ok(Some(data));
            }
        }
    }

    /// Appends `data` with its framing to `dst`.
    fn frame(&self, dst: &mut Vec<u8>, data: &[u8]) {
        if self.framing == Sending::Chunked {
            let _ = write!(dst, "{:x}\r\n", data.len());
            dst.extend_from_slice(data);
            dst.extend_from_slice(b"\r\n");
        } else {
            dst.extend_from_slice(data);
        }
    }

    /// Appends the end of the body to `dst` (the last chunk), or fails when a `Content-Length`
    /// body ended short.
    fn end(&mut self, dst: &mut Vec<u8>) -> io::Result<()> {
        self.ended = true;
        match self.framing {
            Sending::Chunked => dst.extend_from_slice(b"0\r\n\r\n"),
            Sending::Length(n, _) if self.sent != n => {
                return Err(eof("the request body ended before its length"));
            }
            Sending::Length(..) | Sending::Empty => {}
        }
        Ok(())
    }

    /// Writes `data` without copying it into the write buffer.
    async fn write_large(&self, conn: &mut Conn, data: Bytes) -> io::Result<Wrote> {
        if self.framing == Sending::Chunked {
            let _ = write!(conn.write, "{:x}\r\n", data.len());
        }
        if conn.flush().await.map_err(|(e, _)| e)? == Wrote::Answered {
            return Ok(Wrote::Answered);
        }
        let wrote = conn.write_all(&data).await.map_err(|(e, _)| e)?;
        if self.framing == Sending::Chunked {
            conn.write.extend_from_slice(b"\r\n");
        }
        Ok(wrote)
    }

    /// Writes `large` (data taken from the body but not yet written), the rest of `body` and
    /// its end, or stops early when the backend answers meanwhile.
    async fn rest(
        &mut self,
        conn: &mut Conn,
        mut large: Option<Bytes>,
        body: &mut ProxyBody,
    ) -> io::Result<Wrote> {
        if self.framing == Sending::Empty || self.ended {
            return Ok(Wrote::All);
        }
        loop {
            let data = match large.take() {
                Some(data) => data,
                None => match self.next(body).await? {
                    Some(data) => data,
                    None => break,
                },
            };
            let wrote = if data.len() <= COPY_BODY {
                self.frame(&mut conn.write, &data);
                conn.flush().await.map_err(|(e, _)| e)?
            } else {
                self.write_large(conn, data).await?
            };
            if wrote == Wrote::Answered {
                return Ok(wrote);
            }
        }
        self.end(&mut conn.write)?;
        conn.flush().await.map_err(|(e, _)| e)
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    reason: Option<hyper::ext::ReasonPhrase>,
    framing: Framing,
    /// Whether the connection may carry another request once the body has ended.
    keep_alive: bool,
}

/// Reads response heads until a final one (interim 1xx ones other than 101 are skipped).
async fn read_head(conn: &mut Conn, method: &Method) -> io::Result<Head> {
    loop {
        if !conn.read.is_empty() {
            if let Some(head) = parse_head(&mut conn.read, method)? {
                return Ok(head);
            }
            if conn.read.len() >= MAX_HEAD {
                return Err(invalid("the response head is larger than 64 KiB"));
            }
        }
        conn.fill("the backend closed the connection before its response")
            .await?;
    }
}

/// Parses one response head at the start of `buf` and consumes it: `None` when `buf` holds no
/// complete final head yet (complete interim heads are consumed), an error when it is malformed.
fn parse_head(buf: &mut BytesMut, method: &Method) -> io::Result<Option<Head>> {
    loop {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(format!("malformed response head: {e}"))),
        };
        if len > MAX_HEAD {
            return Err(invalid("the response head is larger than 64 KiB"));
        }
        let (Some(code), Some(minor)) = (res.code, res.version) else {
            return Err(invalid("malformed response head: no status"));
        };
        let status = StatusCode::from_u16(code)
            .map_err(|e| invalid(format!("malformed response head: {e}")))?;
        if status.is_informational() && code != 101 {
            buf.advance(len);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let version = match minor {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let reason = res
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
        // Where each field lies in `buf`, so the values can share the head's bytes.
        // (Offsets fit in `u32`: the head is at most `MAX_HEAD` long.)
        let base = buf.as_ptr() as usize;
        let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
        let mut spans = [[0u32; 4]; MAX_HEADERS];
        let count = res.headers.len();
        for (span, f) in spans.iter_mut().zip(res.headers.iter()) {
            let (name, value) = (offset(f.name.as_bytes()), offset(f.value));
            *span = [
                name,
                name + f.name.len() as u32,
                value,
                value + f.value.len() as u32,
            ];
        }
        let bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        let mut fields = Fields::default();
        for &[n0, n1, v0, v1] in &spans[..count] {
            let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
            let name = HeaderName::from_bytes(&bytes[n0..n1])
                .map_err(|e| invalid(format!("malformed response header name: {e}")))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(v0..v1))
                .map_err(|e| invalid(format!("malformed response header value: {e}")))?;
            fields.see(&name, value.as_bytes());
            headers.append(name, value);
        }
        let upgraded = code == 101 || (*method == Method::CONNECT && status.is_success());
        let framing = if upgraded || code == 204 || code == 304 || *method == Method::HEAD {
            Framing::Empty
        } else if fields.transfer_encoding {
            if version == Version::HTTP_10 {
                return Err(invalid("an HTTP/1.0 response with Transfer-Encoding"));
            }
            if fields.chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match fields.length {
                Length::None => Framing::Close,
                Length::Is(0) => Framing::Empty,
                Length::Is(n) => Framing::Length(n),
                Length::Invalid => {
                    return Err(invalid("invalid or conflicting Content-Length values"));
                }
            }
        };
        let persistent = match version {
            Version::HTTP_10 => fields.keep_alive && !fields.close,
            _ => !fields.close,
        };
        let keep_alive = persistent
            && !upgraded
            && framing != Framing::Close
            && !(fields.transfer_encoding && fields.length != Length::None);
        return Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            framing,
            keep_alive,
        }));
    }
}

/// A response's `Content-Length`, as far as its fields say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Length {
    #[default]
    None,
    Is(u64),
    Invalid,
}

/// What the framing and persistence of a response depend on in its header fields.
#[derive(Default)]
struct Fields {
    length: Length,
    transfer_encoding: bool,
    /// Whether the last transfer coding is `chunked`.
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

impl Fields {
    fn see(&mut self, name: &HeaderName, value: &[u8]) {
        if name == header::CONTENT_LENGTH {
            for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let n = std::str::from_utf8(t)
                    .ok()
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|t| t.parse::<u64>().ok());
                self.length = match (self.length, n) {
                    (Length::None, Some(n)) => Length::Is(n),
                    (Length::Is(m), Some(n)) if m == n => Length::Is(n),
                    _ => Length::Invalid,
                };
            }
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            if let Some(last) = tokens(value).last() {
                self.chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name == header::CONNECTION {
            for t in tokens(value) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
}

/// Where a chunked body's reading is.
#[derive(Clone, Copy, Debug)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// Before the CRLF ending a chunk's data.
    DataEnd,
    /// Before the trailer section.
    Trailers,
}

/// A response body's reading state; every state but `Done` owns the connection.
enum State {
    /// A `Content-Length` body with this many bytes left.
    Length(u64, Conn),
    /// A chunked body.
    Chunk(Chunk, Conn),
    /// A body running to the connection's close.
    Close(Conn),
    /// Ended (or failed), with the trailers still to return, if any.
    Done(Option<HeaderMap>),
}

/// A backend's response body: reads the connection it owns as it is polled, yields data as it
/// arrives, and puts the connection back into the pool once it has ended cleanly and the
/// response allowed keep-alive. A body dropped before its end, or failed, drops its connection.
/// A body cut short or malformed yields an error frame, never a silently shorter body.
struct UpstreamBody {
    state: State,
    key: u64,
    keep_alive: bool,
}

impl UpstreamBody {
    /// Ends the body: the connection goes back to the pool when it can carry another request.
    fn finish(&mut self, conn: Conn, trailers: Option<HeaderMap>) {
        self.state = State::Done(trailers);
        if self.keep_alive && conn.read.is_empty() {
            checkin(self.key, conn);
        }
    }

    /// The next frame; `Err` leaves the state to the caller.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            match &mut self.state {
                State::Done(trailers) => {
                    return Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                State::Length(left, conn) => {
                    if conn.read.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(eof(
                            "the backend closed the connection before the end of the body",
                        ))));
                    }
                    let n =
                        usize::try_from(*left).map_or(conn.read.len(), |l| l.min(conn.read.len()));
                    let data = conn.read.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        self.end(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close(conn) => {
                    if conn.read.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        self.state = State::Done(None);
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.read.split().freeze()))));
                }
                State::Chunk(chunk, conn) => match *chunk {
                    Chunk::Size => match httparse::parse_chunk_size(&conn.read) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            conn.read.advance(used);
                            *chunk = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if conn.read.len() > MAX_CHUNK_LINE => {
                            return Poll::Ready(Some(Err(invalid(
                                "a chunk-size line is too long",
                            ))));
                        }
                        Ok(httparse::Status::Partial) => {
                            if ready!(conn.poll_fill(cx))? == 0 {
                                return Poll::Ready(Some(Err(eof(
                                    "the backend closed the connection inside a chunked body",
                                ))));
                            }
                        }
                        Err(_) => {
                            return Poll::Ready(Some(Err(invalid("malformed chunk size"))));
                        }
                    },
                    Chunk::Data(left) => {
                        if conn.read.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                            return Poll::Ready(Some(Err(eof(
                                "the backend closed the connection inside a chunk",
                            ))));
                        }
                        let n = usize::try_from(left)
                            .map_or(conn.read.len(), |l| l.min(conn.read.len()));
                        let data = conn.read.split_to(n).freeze();
                        *chunk = match left - n as u64 {
                            0 => Chunk::DataEnd,
                            l => Chunk::Data(l),
                        };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Chunk::DataEnd => {
                        if conn.read.len() < 2 {
                            if ready!(conn.poll_fill(cx))? == 0 {
                                return Poll::Ready(Some(Err(eof(
                                    "the backend closed the connection inside a chunked body",
                                ))));
                            }
                            continue;
                        }
                        if &conn.read[..2] != b"\r\n" {
                            return Poll::Ready(Some(Err(invalid(
                                "a chunk's data does not end with CRLF",
                            ))));
                        }
                        conn.read.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        match httparse::parse_headers(&conn.read, &mut fields) {
                            Ok(httparse::Status::Complete((used, list))) => {
                                let fields = trailers(list)?;
                                conn.read.advance(used);
                                self.end(fields);
                            }
                            Ok(httparse::Status::Partial) if conn.read.len() >= MAX_HEAD => {
                                return Poll::Ready(Some(Err(invalid(
                                    "the trailers are larger than 64 KiB",
                                ))));
                            }
                            Ok(httparse::Status::Partial) => {
                                if ready!(conn.poll_fill(cx))? == 0 {
                                    return Poll::Ready(Some(Err(eof(
                                        "the backend closed the connection inside a chunked body's trailers",
                                    ))));
                                }
                            }
                            Err(e) => {
                                return Poll::Ready(Some(Err(invalid(format!(
                                    "malformed trailers: {e}"
                                )))));
                            }
                        }
                    }
                },
            }
        }
    }

    /// Ends the body, taking the connection out of the state.
    fn end(&mut self, trailers: Option<HeaderMap>) {
        let state = std::mem::replace(&mut self.state, State::Done(None));
        if let State::Length(_, conn) | State::Chunk(_, conn) | State::Close(conn) = state {
            self.finish(conn, trailers);
        }
    }
}

/// The trailer fields of `list`, `None` when there are none.
fn trailers(list: &[httparse::Header<'_>]) -> io::Result<Option<HeaderMap>> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::with_capacity(list.len());
    for f in list {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|e| invalid(format!("malformed trailer name: {e}")))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|e| invalid(format!("malformed trailer value: {e}")))?;
        map.append(name, value);
    }
    Ok(Some(map))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match ready!(this.step(cx)) {
            Some(Err(source)) => {
                // The connection goes with the failed state.
                this.state = State::Done(None);
                Poll::Ready(Some(Err(Error::ResponseBody { source })))
            }
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n, _) => SizeHint::with_exact(n),
            State::Done(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
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

/// A new connection to `target` for [`send`].
async fn connect(target: &Target, timeout: Duration) -> Result<Conn, Failure> {
    open(target, timeout)
        .await
        .map(Conn::new)
        .map_err(Failure::Connect)
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
#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use http_body_util::Full;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::mpsc::UnboundedReceiver;

    fn get(host: &str) -> Request<ProxyBody> {
        request(
            Method::GET,
            host,
            Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
        )
    }

    fn request(method: Method, host: &str, body: ProxyBody) -> Request<ProxyBody> {
        Request::builder()
            .method(method)
            .uri("/")
            .header(http::header::HOST, host)
            .body(body)
            .unwrap()
    }

    /// A backend answering every request on a connection with `body`; counts connections.
    async fn backend(body: &'static str) -> (SocketAddr, UnboundedReceiver<()>) {
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

    /// A backend that reads each request (head, and a body ending in `until` when given) and
    /// writes `answers` in turn on a connection, then waits for the next request (or closes
    /// when `close`); requests are sent to the returned channel, connections counted.
    async fn scripted(
        answers: &'static [&'static [u8]],
        until: Option<&'static [u8]>,
        close: bool,
    ) -> (
        SocketAddr,
        UnboundedReceiver<Vec<u8>>,
        UnboundedReceiver<()>,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = conn_tx.send(());
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    for answer in answers {
                        loop {
                            let head = seen.windows(4).position(|w| w == b"\r\n\r\n");
                            let done = match (head, until) {
                                (None, _) => None,
                                (Some(h), None) => Some(h + 4),
                                (Some(h), Some(end)) => seen[h + 4..]
                                    .windows(end.len())
                                    .position(|w| w == end)
                                    .map(|at| h + 4 + at + end.len()),
                            };
                            if let Some(n) = done {
                                let _ = seen_tx.send(seen.drain(..n).collect());
                                break;
                            }
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    if !close {
                        let _ = s.read(&mut buf).await;
                    }
                });
            }
        });
        (addr, seen_rx, conn_rx)
    }

    fn target(addr: SocketAddr) -> Target {
        Target {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// Sends `req` to a fresh key's backend at `addr` and collects the answer, within 5 s.
    async fn exchange(
        key: u64,
        addr: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<
        (
            Response<()>,
            Result<http_body_util::Collected<Bytes>, Error>,
        ),
        Failure,
    > {
        tokio::time::timeout(Duration::from_secs(5), async {
            let resp = send(key, &target(addr), Duration::from_secs(1), req).await?;
            let (parts, body) = resp.into_parts();
            Ok((Response::from_parts(parts, ()), body.collect().await))
        })
        .await
        .expect("no hang")
    }

    /// A request body of unknown length yielding `parts` in turn.
    struct Parts(Vec<Bytes>);

    impl Body for Parts {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            if self.0.is_empty() {
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
        }
    }

    #[tokio::test]
    async fn a_content_length_body_streams_in_pieces_and_whole() {
        static BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".to_vec();
            a.extend((0..1_000_000u32).map(|i| (i % 251) as u8));
            a
        });
        let (addr, _, _) = scripted(
            std::slice::from_ref(&BODY.as_slice()).to_vec().leak(),
            None,
            false,
        )
        .await;
        let resp = send(new_key(), &target(addr), Duration::from_secs(1), get("a"))
            .await
            .unwrap();
        assert_eq!(resp.body().size_hint().exact(), Some(1_000_000));
        let mut body = resp.into_body();
        let mut frames = 0;
        let mut total = Vec::new();
        while let Some(f) = body.frame().await {
            frames += 1;
            total.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert!(frames > 1, "the body arrived in pieces");
        assert_eq!(total, BODY[BODY.len() - 1_000_000..]);
    }

    #[tokio::test]
    async fn a_chunked_body_with_extensions_and_trailers_is_decoded_and_reused() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\n1\r\n \r\n5;a;b=\"c\"\r\nworld\r\n\
            0\r\nx-check: 1\r\nx-other: two\r\n\r\n";
        let (addr, _, mut conns) = scripted(&[ANSWER, ANSWER], None, false).await;
        let key = new_key();
        for _ in 0..2 {
            let (resp, body) = exchange(key, addr, get("a")).await.unwrap();
            assert_eq!(resp.headers()[header::TRANSFER_ENCODING], "chunked");
            let body = body.unwrap();
            let trailers = body.trailers().cloned().unwrap();
            assert_eq!(trailers["x-check"], "1");
            assert_eq!(trailers["x-other"], "two");
            assert_eq!(body.to_bytes(), "hello world");
        }
        assert!(conns.try_recv().is_ok());
        assert!(conns.try_recv().is_err(), "one connection served both");
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close_and_its_connection_is_not_reused() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it";
        let (addr, _, mut conns) = scripted(&[ANSWER], None, true).await;
        let key = new_key();
        for _ in 0..2 {
            let (_, body) = exchange(key, addr, get("a")).await.unwrap();
            assert_eq!(body.unwrap().to_bytes(), "all of it");
        }
        assert!(conns.try_recv().is_ok());
        assert!(
            conns.try_recv().is_ok(),
            "the second request needed a new connection"
        );
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body_and_keep_the_connection() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n";
        const NOT_MODIFIED: &[u8] = b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n";
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, _, mut conns) =
            scripted(&[HEAD, NO_CONTENT, NOT_MODIFIED, OK], None, false).await;
        let key = new_key();
        let empty = || Full::new(Bytes::new()).map_err(|n| match n {}).boxed();
        let (resp, body) = exchange(key, addr, request(Method::HEAD, "a", empty()))
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "5");
        assert!(body.unwrap().to_bytes().is_empty());
        for status in [204, 304] {
            let (resp, body) = exchange(key, addr, get("a")).await.unwrap();
            assert_eq!(resp.status(), status);
            assert!(body.unwrap().to_bytes().is_empty());
        }
        let (_, body) = exchange(key, addr, get("a")).await.unwrap();
        assert_eq!(body.unwrap().to_bytes(), "ok");
        assert!(conns.try_recv().is_ok());
        assert!(conns.try_recv().is_err(), "one connection served all four");
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        const ANSWER: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\
            link: </s.css>\r\n\r\nHTTP/1.1 200 Fine\r\ncontent-length: 2\r\n\r\nok";
        let (addr, _, _) = scripted(&[ANSWER], None, false).await;
        let (resp, body) = exchange(new_key(), addr, get("a")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(!resp.headers().contains_key(header::LINK));
        let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(reason.as_bytes(), b"Fine");
        assert_eq!(body.unwrap().to_bytes(), "ok");
    }

    #[tokio::test]
    async fn a_body_of_known_length_is_sent_with_its_length() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, mut seen, _) = scripted(&[OK], Some(b"abc"), false).await;
        let body = Full::new(Bytes::from_static(b"abc"))
            .map_err(|n| match n {})
            .boxed();
        let mut req = request(Method::POST, "a", body);
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let (_, body) = exchange(new_key(), addr, req).await.unwrap();
        assert_eq!(body.unwrap().to_bytes(), "ok");
        let sent = String::from_utf8(seen.recv().await.unwrap()).unwrap();
        assert_eq!(
            sent,
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc"
        );
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_sent_chunked() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, mut seen, _) = scripted(&[OK], Some(b"0\r\n\r\n"), false).await;
        let big = Bytes::from(vec![b'x'; COPY_BODY + 1]);
        let body = Parts(vec![
            Bytes::from_static(b"abc"),
            big.clone(),
            Bytes::from_static(b"defg"),
        ]);
        let (_, body) = exchange(new_key(), addr, request(Method::PUT, "a", body.boxed()))
            .await
            .unwrap();
        assert_eq!(body.unwrap().to_bytes(), "ok");
        let sent = String::from_utf8(seen.recv().await.unwrap()).unwrap();
        let big = String::from_utf8(big.to_vec()).unwrap();
        assert_eq!(
            sent,
            format!(
                "PUT / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n\
                 3\r\nabc\r\n{:x}\r\n{big}\r\n4\r\ndefg\r\n0\r\n\r\n",
                COPY_BODY + 1
            )
        );
    }

    #[tokio::test]
    async fn a_partly_read_body_does_not_return_its_connection() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n";
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, _, mut conns) = scripted(&[ANSWER, OK], None, false).await;
        let key = new_key();
        let resp = send(key, &target(addr), Duration::from_secs(1), get("a"))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        drop(body);
        // A new connection gets the first answer again, not the old one's next answer.
        let again = send(key, &target(addr), Duration::from_secs(1), get("a"))
            .await
            .unwrap();
        assert_eq!(again.headers()[header::TRANSFER_ENCODING], "chunked");
        assert!(conns.try_recv().is_ok());
        assert!(
            conns.try_recv().is_ok(),
            "the second request needed a new connection"
        );
    }

    /// The error of an exchange with a backend answering `answer`, at the head or in the body.
    async fn failure(answer: &'static [u8]) -> String {
        let (addr, _, _) =
            scripted(std::slice::from_ref(&answer).to_vec().leak(), None, true).await;
        match exchange(new_key(), addr, get("a")).await {
            Err(Failure::Exchange(e)) => e.to_string(),
            Ok((_, Err(e))) => e.to_string(),
            other => panic!("no error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_answers_are_errors() {
        let oversize: &'static [u8] = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(MAX_HEAD)
        )
        .into_bytes()
        .leak();
        let many: &'static [u8] = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x-n: 1\r\n".repeat(MAX_HEADERS + 1)
        )
        .into_bytes()
        .leak();
        for (answer, says) in [
            (&b"HTTP/1.1 abc OK\r\n\r\n"[..], "malformed response head"),
            (b"SMTP ready\r\n\r\n", "malformed response head"),
            (oversize, "larger than 64 KiB"),
            (many, "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
                "malformed chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
                "CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
                "conflicting Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
                "before the end of the body",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
                "inside a chunk",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-le", "before its response"),
            (b"", "before its response"),
        ] {
            let err = failure(answer).await;
            assert!(
                err.contains(says),
                "{err} for {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(80)])
            );
        }
    }

    #[tokio::test]
    async fn content_length_with_transfer_encoding_is_chunked_and_not_reused() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\
            transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let (addr, _, mut conns) = scripted(&[ANSWER], None, false).await;
        let key = new_key();
        for _ in 0..2 {
            let (_, body) = exchange(key, addr, get("a")).await.unwrap();
            assert_eq!(body.unwrap().to_bytes(), "ok");
        }
        assert!(conns.try_recv().is_ok());
        assert!(
            conns.try_recv().is_ok(),
            "the second request needed a new connection"
        );
    }

    #[tokio::test]
    async fn http_1_0_answers_keep_the_connection_only_when_asked() {
        const CLOSE: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok";
        const KEEP: &[u8] =
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok";
        const CLOSE_11: &[u8] =
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        for (answers, conns_wanted) in [
            (&[CLOSE, CLOSE][..], 2),
            (&[KEEP, KEEP][..], 1),
            (&[CLOSE_11, CLOSE_11][..], 2),
        ] {
            let answers: &'static [&'static [u8]] = answers.to_vec().leak();
            let (addr, _, mut conns) = scripted(answers, None, false).await;
            let key = new_key();
            for _ in 0..2 {
                let out = exchange(key, addr, get("a")).await;
                // A closing answer's connection stays open on the backend's side here, and the
                // second request must not go on it.
                assert_eq!(out.unwrap().1.unwrap().to_bytes(), "ok");
            }
            let mut n = 0;
            while conns.try_recv().is_ok() {
                n += 1;
            }
            assert_eq!(n, conns_wanted);
        }
    }

    #[tokio::test]
    async fn a_connection_with_bytes_after_its_answer_is_not_reused() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK";
        let (addr, _, mut conns) = scripted(&[ANSWER, ANSWER], None, false).await;
        let key = new_key();
        for _ in 0..2 {
            let (_, body) = exchange(key, addr, get("a")).await.unwrap();
            assert_eq!(body.unwrap().to_bytes(), "ok");
        }
        assert!(conns.try_recv().is_ok());
        assert!(
            conns.try_recv().is_ok(),
            "the second request needed a new connection"
        );
    }

    #[tokio::test]
    async fn a_connection_idle_a_while_that_received_data_is_not_reused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (conn_tx, mut conns) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = conn_tx.send(());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    // Unasked bytes on the idle connection, which stays open.
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad")
                        .await;
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        let key = new_key();
        let (_, body) = exchange(key, addr, get("a")).await.unwrap();
        assert_eq!(body.unwrap().to_bytes(), "ok");
        tokio::time::sleep(PROBE_AFTER + Duration::from_millis(200)).await;
        let (_, body) = exchange(key, addr, get("a")).await.unwrap();
        assert_eq!(body.unwrap().to_bytes(), "ok");
        assert!(conns.try_recv().is_ok());
        assert!(
            conns.try_recv().is_ok(),
            "the second request needed a new connection"
        );
    }

    /// A backend that reads a request's head only, answers 413 and then, when `close`, closes
    /// the connection, else keeps it open without reading.
    async fn refusing(close: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
                .await
                .unwrap();
            if close {
                drop(s);
            } else {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_request_body_is_passed_on() {
        for close in [false, true] {
            let addr = refusing(close).await;
            let frames = (0..64).map(|_| Bytes::from(vec![b'x'; 1 << 20])).collect();
            let req = request(Method::POST, "a", Parts(frames).boxed());
            let (resp, body) = exchange(new_key(), addr, req).await.unwrap();
            assert_eq!(resp.status(), 413, "close: {close}");
            assert_eq!(body.unwrap().to_bytes(), "big!");
        }
    }

    #[tokio::test]
    async fn an_interim_answer_while_the_body_is_sent_does_not_stop_it() {
        const SIZE: usize = 32 << 20;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut seen = Vec::new();
            let end = loop {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
            // Let the client's writes stall on full buffers first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut got = seen.len() - end;
            while got < SIZE {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the whole body arrives");
                got += n;
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nall")
                .await
                .unwrap();
        });
        let body = Full::new(Bytes::from(vec![b'x'; SIZE]))
            .map_err(|n| match n {})
            .boxed();
        let mut req = request(Method::POST, "a", body);
        req.headers_mut()
            .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let (resp, body) = exchange(new_key(), addr, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body.unwrap().to_bytes(), "all");
    }

    #[tokio::test]
    async fn switching_protocols_is_passed_on_without_body_and_ends_the_connection() {
        const ANSWER: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
            connection: upgrade\r\n\r\n";
        let (addr, _, mut conns) = scripted(&[ANSWER, ANSWER], None, false).await;
        let key = new_key();
        for _ in 0..2 {
            let (resp, body) = exchange(key, addr, get("a")).await.unwrap();
            assert_eq!(resp.status(), 101);
            assert!(body.unwrap().to_bytes().is_empty());
        }
        assert!(conns.try_recv().is_ok());
        assert!(
            conns.try_recv().is_ok(),
            "the second request needed a new connection"
        );
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
