//! Connections that switched protocols (`101`, a WebSocket): the backend's side handed over in
//! the response ([`Tunnel`]) and [`splice`], which copies bytes both ways between it and the
//! client's upgraded connection until both close, one fails, or no byte has moved either way
//! for the idle timeout (haproxy's `timeout tunnel`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;

use super::conn::Io;

/// The backend's side of a connection that switched protocols (`101`): its transport and the
/// bytes it sent past the response head. [`splice`] takes it, once.
#[derive(Clone)]
pub(crate) struct Tunnel(pub(super) Arc<Mutex<Option<(Io, BytesMut)>>>);

/// How a spliced connection ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spliced {
    /// Bytes sent to the backend.
    pub up: u64,
    /// Bytes sent to the client (including what the backend sent with its `101`).
    pub down: u64,
    /// Closed by the edge after the idle timeout, not by either side.
    pub idle: bool,
}

/// Copies bytes both ways between the client's upgraded connection and the backend's side of
/// `tunnel`: first what the backend sent with its `101`, then everything each side sends, until
/// both have closed, one fails (`Err`), or nothing arrived from either side for `idle` — then
/// both connections are closed (dropped) and the result says so.
pub(crate) async fn splice(
    tunnel: Tunnel,
    client: hyper::upgrade::Upgraded,
    idle: Duration,
) -> io::Result<Spliced> {
    let taken = tunnel
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some((backend, early)) = taken else {
        return Ok(Spliced::default());
    };
    let mut client = TokioIo::new(client);
    client.write_all(&early).await?;
    let start = Instant::now();
    // Milliseconds from `start` to the last byte that arrived from either side.
    let seen = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(early.len() as u64));
    let mut client = Watched {
        io: client,
        read: &up,
        seen: &seen,
        start,
    };
    let mut backend = Watched {
        io: backend,
        read: &down,
        seen: &seen,
        start,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copy);
    let idle_closed = loop {
        let last = start + Duration::from_millis(seen.load(Ordering::Relaxed));
        tokio::select! {
            done = &mut copy => {
                done?;
                break false;
            }
            () = tokio::time::sleep_until(last + idle) => {
                let now = start + Duration::from_millis(seen.load(Ordering::Relaxed));
                if now == last {
                    break true;
                }
            }
        }
    };
    Ok(Spliced {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        idle: idle_closed,
    })
}

/// One side of a spliced connection: counts the bytes read from it into `read` and notes in
/// `seen` when the last arrived (milliseconds since `start`).
struct Watched<'a, T> {
    io: T,
    read: &'a AtomicU64,
    seen: &'a AtomicU64,
    start: Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.fetch_add(n as u64, Ordering::Relaxed);
            let ms = u64::try_from(this.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.seen.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
