//! One backend connection ([`Conn`]): its socket (plain, or TLS for an `https://` backend) and
//! buffers, reading from the socket into them and writing to it, and telling whether an idle
//! one may still carry a request.

use std::future::{Future as _, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::io::poll_read_buf;

use super::{MAX_HEAD, MAX_HEADERS, READ_MAX, READ_MIN, eof};

/// A backend connection's transport.
pub(super) enum Io {
    /// Plain TCP (`http://`).
    Plain(TcpStream),
    /// TLS over TCP (`https://`); boxed, as its session state is large.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One backend connection: the socket and its buffers.
pub(super) struct Conn {
    io: Io,
    /// Bytes read and not yet consumed.
    pub(super) read: BytesMut,
    /// Bytes to write (kept between requests for its capacity).
    pub(super) write: Vec<u8>,
    /// Size of the next read.
    pub(super) read_size: usize,
}

impl Conn {
    /// The transport and what was read from it but not consumed, for a connection that
    /// switched protocols.
    pub(super) fn into_parts(self) -> (Io, BytesMut) {
        (self.io, self.read)
    }

    pub(super) fn new(io: Io) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::with_capacity(1024),
            read_size: READ_MIN,
        }
    }

    /// Whether this idle connection may carry a request: the backend has neither closed it nor
    /// sent anything since its last response. The last response's reads left the socket's
    /// readiness cleared ([`Conn::poll_fill`]), so the usual answer needs no system call; a
    /// socket reported readable since (unasked bytes such as a `408`, a close in flight, or a
    /// last read that filled the buffer exactly) is read from to tell.
    /// A TLS connection is asked its TLS stream instead, which takes in what the backend sent
    /// since (a TLS 1.3 session ticket is no answer) without waiting.
    pub(super) fn usable(&mut self) -> bool {
        let tcp = match &mut self.io {
            Io::Plain(tcp) => tcp,
            Io::Tls(_) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                let mut cx = Context::from_waker(Waker::noop());
                return Pin::new(&mut self.io)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending();
            }
        };
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(tcp.ready(Interest::READABLE)).poll(&mut cx) {
            // Nothing reported since a read last found the socket drained.
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(r)) if r.is_read_closed() || r.is_error() => false,
            Poll::Ready(Ok(_)) => {
                let mut byte = [0u8; 1];
                matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has into `read`: `Ready(Ok(0))` when the backend closed it. A read
    /// that leaves room in the buffer drained the socket, so the runtime forgets its readiness
    /// (tokio's `poll_read`): the next read waits for the backend's next bytes instead of
    /// first finding the socket empty with a system call, once per response.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(self.read_size);
        let spare = self.read.capacity() - self.read.len();
        let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))?;
        if n == spare && self.read_size < READ_MAX {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Reads more into `read`; the backend closing the connection is an error saying `what`
    /// was cut off.
    pub(super) fn poll_fill_or(
        &mut self,
        cx: &mut Context<'_>,
        what: &str,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(match ready!(self.poll_fill(cx))? {
            0 => Err(eof(what)),
            _ => Ok(()),
        })
    }

    /// [`Conn::poll_fill_or`] as a future.
    pub(super) async fn fill(&mut self, what: &str) -> io::Result<()> {
        poll_fn(|cx| self.poll_fill_or(cx, what)).await
    }

    /// Writes all of `data` (for TLS, through to the socket), unless the backend answers while
    /// the socket takes no more (it may answer without reading the whole request): then
    /// [`Wrote::Answered`], with what it sent in `read`. A failure says whether any byte was
    /// written.
    pub(super) async fn write_all(&mut self, data: &[u8]) -> Result<Wrote, (io::Error, bool)> {
        let mut done = 0;
        poll_fn(|cx| {
            loop {
                if done == data.len() {
                    // Plain TCP has nothing buffered; TLS may hold records the socket did not
                    // take yet.
                    match Pin::new(&mut self.io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => break,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err((e, done > 0))),
                        Poll::Pending => return self.poll_early_answer(cx, done > 0),
                    }
                }
                match Pin::new(&mut self.io).poll_write(cx, &data[done..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((io::ErrorKind::WriteZero.into(), done > 0)));
                    }
                    Poll::Ready(Ok(n)) => done += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((e, done > 0))),
                    Poll::Pending => return self.poll_early_answer(cx, done > 0),
                }
            }
            Poll::Ready(Ok(Wrote::All))
        })
        .await
    }

    /// While the socket takes no more of the request: [`Wrote::Answered`] when the backend
    /// has answered (interim 1xx heads aside), else pending (also when it closed without an
    /// answer: the write fails in its turn). `written`: whether any byte was written.
    fn poll_early_answer(
        &mut self,
        cx: &mut Context<'_>,
        written: bool,
    ) -> Poll<Result<Wrote, (io::Error, bool)>> {
        loop {
            match self.poll_fill(cx) {
                Poll::Pending | Poll::Ready(Ok(0)) => return Poll::Pending,
                Poll::Ready(Ok(_)) if self.interim_only() => {}
                Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Wrote::Answered)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err((e, written))),
            }
        }
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
    pub(super) fn answered(&mut self) -> bool {
        if self.read.is_empty() {
            self.read.reserve(self.read_size);
            match &mut self.io {
                Io::Plain(tcp) => {
                    let _ = tcp.try_read_buf(&mut self.read);
                }
                Io::Tls(_) => {
                    let mut cx = Context::from_waker(Waker::noop());
                    let _ = poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.read);
                }
            }
        }
        !self.read.is_empty()
    }

    /// [`Conn::write_all`] of the write buffer, which is emptied.
    pub(super) async fn flush(&mut self) -> Result<Wrote, (io::Error, bool)> {
        let out = std::mem::take(&mut self.write);
        let wrote = self.write_all(&out).await;
        self.write = out;
        self.write.clear();
        wrote
    }
}

/// How far a write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wrote {
    /// Everything was written.
    All,
    /// The backend answered before everything was written; the rest is not sent.
    Answered,
}
