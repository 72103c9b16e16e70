//! Response bodies: [`UpstreamBody`] reads a backend's response body from the connection it
//! owns, by its framing (length, chunked with trailers, or to the close), and returns the
//! connection to the pool at the body's end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::{Body, Frame, SizeHint};

use super::conn::Conn;
use super::pool::checkin;
use super::{MAX_HEAD, MAX_HEADERS, invalid};
use crate::Error;

/// Longest chunk-size line (with extensions) of a chunked response body.
const MAX_CHUNK_LINE: usize = 4096;

/// Where a chunked body's reading is.
#[derive(Clone, Copy, Debug)]
pub(super) enum Chunk {
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
pub(super) enum State {
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
pub(super) struct UpstreamBody {
    pub(super) state: State,
    pub(super) key: u64,
    pub(super) keep_alive: bool,
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
                    if conn.read.is_empty() {
                        ready!(conn.poll_fill_or(
                            cx,
                            "the backend closed the connection before the end of the body"
                        ))?;
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
                            ready!(conn.poll_fill_or(
                                cx,
                                "the backend closed the connection inside a chunked body"
                            ))?;
                        }
                        Err(_) => {
                            return Poll::Ready(Some(Err(invalid("malformed chunk size"))));
                        }
                    },
                    Chunk::Data(left) => {
                        if conn.read.is_empty() {
                            ready!(conn.poll_fill_or(
                                cx,
                                "the backend closed the connection inside a chunk"
                            ))?;
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
                            ready!(conn.poll_fill_or(
                                cx,
                                "the backend closed the connection inside a chunked body"
                            ))?;
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
                                let what = "the backend closed the connection inside a chunked body's trailers";
                                ready!(conn.poll_fill_or(cx, what))?;
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
