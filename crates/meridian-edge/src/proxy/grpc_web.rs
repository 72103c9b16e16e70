//! gRPC-Web, bridged to gRPC: a browser's `application/grpc-web[-text][+fmt]` request to a
//! region whose backends speak HTTP/2 (`app_protocol = "http2"`) is sent to them as the gRPC
//! call it carries, and the answer comes back in gRPC-Web's framing — what Envoy's `grpc_web`
//! filter does, so a gRPC service behind the edge needs no gRPC-Web support of its own.
//!
//! The translation (the gRPC-Web protocol, grpc/grpc `doc/PROTOCOL-WEB.md`):
//! - request: the content type loses `-web` (and `-text`), `te: trailers` is added, and a
//!   `-text` body is base64-decoded (padding may close any 4-character group, as clients that
//!   send several chunks write it);
//! - response: the content type gains `-web` (`-web-text` for a text request), the gRPC
//!   messages pass as they are, and the HTTP/2 trailers (`grpc-status`, `grpc-message`, …)
//!   become one last frame of the body: flag byte `0x80`, a 4-byte big-endian length, then
//!   `name:value\r\n` lines. For a text request the whole body is base64-encoded, carrying
//!   the bytes that do not fill a 3-byte group to the next frame. A trailers-only answer (the
//!   status in the head) passes as it is: gRPC-Web clients read it there.
//!
//! Regions whose backends speak HTTP/1.1 get gRPC-Web requests unchanged: such an app serves
//! gRPC-Web itself, if at all.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

use crate::error::Error;
use crate::state::ProxyBody;

/// Flag byte of the frame that carries the trailers in a gRPC-Web body.
const TRAILERS_FLAG: u8 = 0x80;

/// A gRPC-Web request: binary or base64 text, and the format suffix of its content type
/// (`+proto`, `+json`, or none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GrpcWeb {
    text: bool,
    suffix: String,
}

impl GrpcWeb {
    /// The gRPC-Web request `headers` describe, if they are one (by `Content-Type`).
    pub(crate) fn of(headers: &HeaderMap) -> Option<GrpcWeb> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let rest = essence.strip_prefix("application/grpc-web")?;
        let (text, suffix) = match rest.strip_prefix("-text") {
            Some(s) => (true, s),
            None => (false, rest),
        };
        (suffix.is_empty() || suffix.starts_with('+')).then(|| GrpcWeb {
            text,
            suffix: suffix.to_string(),
        })
    }

    /// The gRPC request's head: its content type, `te: trailers`, and no `Content-Length`
    /// when the body's length changes (text).
    pub(crate) fn request_headers(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&format!("application/grpc{}", self.suffix)) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        if self.text {
            headers.remove(header::CONTENT_LENGTH);
        }
    }

    /// The gRPC request body of a whole gRPC-Web one; for text, what is wrong with its base64.
    pub(crate) fn request_bytes(&self, body: &Bytes) -> Result<Bytes, String> {
        if !self.text {
            return Ok(body.clone());
        }
        let mut decoder = Decoder::default();
        let out = decoder.push(body)?;
        decoder.finish()?;
        Ok(out.freeze())
    }

    /// The gRPC request body of a streamed gRPC-Web one.
    pub(crate) fn request_body(&self, body: ProxyBody) -> ProxyBody {
        if !self.text {
            return body;
        }
        RequestText {
            inner: body,
            decoder: Some(Decoder::default()),
        }
        .boxed()
    }

    /// The gRPC-Web answer to a gRPC backend's `resp`. An answer that is not gRPC (an error
    /// page of a proxy in front of the backend, say) passes as it is.
    pub(crate) fn response(&self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        let grpc = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.strip_prefix("application/grpc"))
            .filter(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
            .map(str::to_string);
        let Some(rest) = grpc else {
            return Response::from_parts(parts, body);
        };
        let web = if self.text {
            "application/grpc-web-text"
        } else {
            "application/grpc-web"
        };
        if let Ok(v) = HeaderValue::from_str(&format!("{web}{rest}")) {
            parts.headers.insert(header::CONTENT_TYPE, v);
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = WebBody {
            inner: body,
            text: self.text,
            carry: BytesMut::new(),
            done: false,
        };
        Response::from_parts(parts, body.boxed())
    }

    /// The 400 for a text body that is not base64.
    pub(crate) fn bad_text(message: &str) -> Response<ProxyBody> {
        super::json_error(
            StatusCode::BAD_REQUEST,
            "bad_grpc_web_text",
            &format!("the application/grpc-web-text body is not base64: {message}"),
            "send the request's gRPC frames base64-encoded (standard alphabet, padded), or use application/grpc-web",
        )
    }
}

/// The gRPC-Web frame that carries `trailers`: `0x80`, the length, `name:value\r\n` lines.
fn trailers_frame(trailers: &HeaderMap) -> Bytes {
    let mut lines = BytesMut::new();
    for (name, value) in trailers {
        lines.put_slice(name.as_str().as_bytes());
        lines.put_u8(b':');
        lines.put_slice(value.as_bytes());
        lines.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + lines.len());
    frame.put_u8(TRAILERS_FLAG);
    // A header block larger than 4 GiB cannot come from an HTTP/2 peer (hyper bounds it).
    frame.put_u32(u32::try_from(lines.len()).unwrap_or(u32::MAX));
    frame.put_slice(&lines);
    frame.freeze()
}

/// A gRPC answer's body in gRPC-Web's framing: the messages as they come, the trailers as the
/// last frame; base64 for text, each frame's bytes beyond a whole 3-byte group carried to the
/// next, padding only at the end.
struct WebBody {
    inner: ProxyBody,
    text: bool,
    carry: BytesMut,
    done: bool,
}

impl WebBody {
    /// `bytes` as this body sends them: as they are, or base64 with the carry.
    fn out(&mut self, bytes: &[u8], last: bool) -> Bytes {
        if !self.text {
            return Bytes::copy_from_slice(bytes);
        }
        self.carry.extend_from_slice(bytes);
        let whole = if last {
            self.carry.len()
        } else {
            self.carry.len() - self.carry.len() % 3
        };
        let chunk = self.carry.split_to(whole);
        Bytes::from(STANDARD.encode(&chunk))
    }
}

impl Body for WebBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    self.done = true;
                    if self.text && !self.carry.is_empty() {
                        let tail = self.out(&[], true);
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let out = if self.text {
                        self.out(&data, false)
                    } else {
                        data
                    };
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.done = true;
                        let out = self.out(&trailers_frame(&trailers), true);
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Base64 text decoded as it comes: whole 4-character groups at a time, a group that ends in
/// padding decoded alone (so padded chunks may follow one another), ASCII whitespace skipped.
#[derive(Default)]
struct Decoder {
    carry: Vec<u8>,
}

impl Decoder {
    /// The bytes of `text` and what was carried, up to the last whole group.
    fn push(&mut self, text: &[u8]) -> Result<BytesMut, String> {
        self.carry
            .extend(text.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.carry.len() - self.carry.len() % 4;
        let mut out = BytesMut::with_capacity(whole / 4 * 3);
        let mut start = 0;
        for (i, group) in self.carry[..whole].chunks(4).enumerate() {
            if group.contains(&b'=') {
                let end = i * 4 + 4;
                decode_into(&self.carry[start..end], &mut out)?;
                start = end;
            }
        }
        decode_into(&self.carry[start..whole], &mut out)?;
        self.carry.drain(..whole);
        Ok(out)
    }

    /// Fails when the text ended inside a group.
    fn finish(&self) -> Result<(), String> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "it ends with {} characters of an unfinished 4-character group",
                self.carry.len()
            ))
        }
    }
}

fn decode_into(text: &[u8], out: &mut BytesMut) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let bytes = STANDARD.decode(text).map_err(|e| e.to_string())?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// A streamed `-text` request body, decoded as it comes; bad base64 fails the body.
struct RequestText {
    inner: ProxyBody,
    decoder: Option<Decoder>,
}

impl Body for RequestText {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let bad = |message: String| Error::GrpcWebText { message };
        loop {
            if self.decoder.is_none() {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    let decoder = self.decoder.take();
                    return match decoder.map(|d| d.finish()) {
                        Some(Err(e)) => Poll::Ready(Some(Err(bad(e)))),
                        _ => Poll::Ready(None),
                    };
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let Some(decoder) = self.decoder.as_mut() else {
                return Poll::Ready(None);
            };
            match decoder.push(&data) {
                Ok(out) if out.is_empty() => {}
                Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out.freeze())))),
                Err(e) => {
                    self.decoder = None;
                    return Poll::Ready(Some(Err(bad(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    #[test]
    fn content_types_of_grpc_web_and_only_those() {
        let web = |text: bool, suffix: &str| {
            Some(GrpcWeb {
                text,
                suffix: suffix.to_string(),
            })
        };
        assert_eq!(GrpcWeb::of(&ct("application/grpc-web")), web(false, ""));
        assert_eq!(
            GrpcWeb::of(&ct("application/grpc-web+proto")),
            web(false, "+proto")
        );
        assert_eq!(
            GrpcWeb::of(&ct("Application/gRPC-Web-Text+json; charset=x")),
            web(true, "+json")
        );
        for other in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-webby",
            "text/plain",
        ] {
            assert_eq!(GrpcWeb::of(&ct(other)), None, "{other}");
        }
        assert_eq!(GrpcWeb::of(&HeaderMap::new()), None);
        let mut h = ct("application/grpc-web-text+proto");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("8"));
        GrpcWeb::of(&h).expect("web").request_headers(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(h[header::TE], "trailers");
        assert!(
            !h.contains_key(header::CONTENT_LENGTH),
            "text changes the length"
        );
    }

    /// Padded groups may follow one another (chunks encoded one by one); a group cut short or
    /// a character outside the alphabet is an error.
    #[test]
    fn text_bodies_decode_chunk_by_chunk() {
        let text = GrpcWeb::of(&ct("application/grpc-web-text")).expect("web");
        let whole = STANDARD.encode(b"\0\0\0\0\x02hi");
        assert_eq!(
            text.request_bytes(&Bytes::from(whole)).expect("decodes"),
            &b"\0\0\0\0\x02hi"[..]
        );
        let chunks = format!("{}{}", STANDARD.encode(b"ab"), STANDARD.encode(b"cde"));
        assert_eq!(
            text.request_bytes(&Bytes::from(chunks)).expect("decodes"),
            &b"abcde"[..]
        );
        let mut d = Decoder::default();
        let mut out = d.push(b"YW").expect("partial");
        assert!(out.is_empty());
        out = d.push(b"Jj\r\nZA==").expect("rest");
        assert_eq!(&out[..], b"abcd");
        d.finish().expect("whole");
        assert!(text.request_bytes(&Bytes::from_static(b"YWJ")).is_err());
        assert!(text.request_bytes(&Bytes::from_static(b"YW*j")).is_err());
        let binary = GrpcWeb::of(&ct("application/grpc-web")).expect("web");
        assert_eq!(
            binary
                .request_bytes(&Bytes::from_static(b"YWJ"))
                .expect("as is"),
            &b"YWJ"[..]
        );
    }

    /// A body of the given chunks, one frame each.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> ProxyBody {
        Chunks(parts.iter().map(|p| Bytes::from_static(p)).collect()).boxed()
    }

    /// A streamed text body is decoded whatever its chunks cut; bad base64 or a body that ends
    /// inside a group fails it.
    #[tokio::test]
    async fn streamed_text_bodies_decode_across_chunks() {
        let text = GrpcWeb::of(&ct("application/grpc-web-text")).expect("web");
        let body = text.request_body(chunks(&[b"Y", b"WJj", b"ZA", b"==ZWY="]));
        let got = body.collect().await.expect("decodes").to_bytes();
        assert_eq!(&got[..], b"abcdef");
        let cut = text.request_body(chunks(&[b"YWJjZA=", b""]));
        assert!(matches!(
            cut.collect().await,
            Err(Error::GrpcWebText { .. })
        ));
        let bad = text.request_body(chunks(&[b"YW!j"]));
        assert!(matches!(
            bad.collect().await,
            Err(Error::GrpcWebText { .. })
        ));
    }

    #[test]
    fn trailers_become_the_last_frame() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("grpc-message", HeaderValue::from_static("ok"));
        let frame = trailers_frame(&t);
        let lines = b"grpc-status:0\r\ngrpc-message:ok\r\n";
        assert_eq!(frame[0], 0x80);
        assert_eq!(&frame[1..5], &(lines.len() as u32).to_be_bytes());
        assert_eq!(&frame[5..], &lines[..]);
    }
}
