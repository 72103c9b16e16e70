//! The request side of an exchange: how a request body is framed ([`Sending`]), the request
//! head's encoding, and the sending of the body ([`BodySender`]).

use std::io::{self, Write as _};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body_util::BodyExt as _;
use hyper::body::Body;

use super::conn::{Conn, Wrote};
use super::{COPY_BODY, Target, eof, invalid};
use crate::state::ProxyBody;

/// How a request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sending {
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
    pub(super) fn of(headers: &HeaderMap, body: &ProxyBody) -> Sending {
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
pub(super) fn encode_head(
    dst: &mut Vec<u8>,
    parts: &http::request::Parts,
    framing: Sending,
    target: &Target,
) {
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

/// Writes a request body with its framing, checking a `Content-Length` body's size.
pub(super) struct BodySender {
    pub(super) framing: Sending,
    /// Data bytes taken from the body so far.
    pub(super) sent: u64,
    /// Whether the body has no more frames.
    pub(super) done: bool,
    /// Whether the end of the body has been framed.
    pub(super) ended: bool,
}

impl BodySender {
    /// The body's next data (trailers are not sent), or `None` at its end; counts what it
    /// returns and fails once a `Content-Length` body has more than it said.
    pub(super) async fn next(&mut self, body: &mut ProxyBody) -> io::Result<Option<Bytes>> {
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
    pub(super) fn frame(&self, dst: &mut Vec<u8>, data: &[u8]) {
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
    pub(super) fn end(&mut self, dst: &mut Vec<u8>) -> io::Result<()> {
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
    pub(super) async fn rest(
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
