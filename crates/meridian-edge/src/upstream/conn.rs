//! One backend connection ([`Conn`]): its socket and buffers, reading from the socket into
//! them and writing to it, and telling whether an idle one may still carry a request.

use std::future::{Future as _, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncWrite as _, Interest};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::{MAX_HEAD, MAX_HEADERS, READ_MAX, READ_MIN, eof};

/// One backend connection: the socket and its buffers.
pub(super) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    pub(super) read: BytesMut,
    /// Bytes to write (kept between requests for its capacity).
    pub(super) write: Vec<u8>,
    /// Size of the next read.
    pub(super) read_size: usize,
}

impl Conn {
    pub(super) fn new(io: TcpStream) -> Conn {
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
    pub(super) fn usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(self.io.ready(Interest::READABLE)).poll(&mut cx) {
            // Nothing reported since a read last found the socket drained.
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(r)) if r.is_read_closed() || r.is_error() => false,
            Poll::Ready(Ok(_)) => {
                let mut byte = [0u8; 1];
                matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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

    /// Writes all of `data`, unless the backend answers while the socket takes no more (it
    /// may answer without reading the whole request): then [`Wrote::Answered`], with what it
    /// sent in `read`. A failure says whether any byte was written.
    pub(super) async fn write_all(&mut self, data: &[u8]) -> Result<Wrote, (io::Error, bool)> {
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
    pub(super) fn answered(&mut self) -> bool {
        if self.read.is_empty() {
            self.read.reserve(self.read_size);
            let _ = self.io.try_read_buf(&mut self.read);
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
