//! Response heads: reading and parsing a backend's response head (skipping interim ones), and
//! what its header fields say about the body's framing ([`Framing`]) and the connection's reuse.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf as _, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::conn::Conn;
use super::{MAX_HEAD, MAX_HEADERS, invalid};

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
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
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) reason: Option<hyper::ext::ReasonPhrase>,
    pub(super) framing: Framing,
    /// Whether the connection may carry another request once the body has ended.
    pub(super) keep_alive: bool,
}

/// Reads response heads until a final one (interim 1xx ones other than 101 are skipped).
pub(super) async fn read_head(conn: &mut Conn, method: &Method) -> io::Result<Head> {
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
