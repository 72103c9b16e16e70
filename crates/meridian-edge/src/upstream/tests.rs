//! Tests of the upstream client, against backends scripted on local sockets.

use super::*;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderValue};
use http_body_util::Full;
use hyper::body::{Body, Frame};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::Error;

fn get(host: &str) -> Request<ProxyBody> {
    request(
        Method::GET,
        host,
        Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
    )
}

/// A GET through [`send`] with the pool `key` to `target`, which must get an answer.
async fn get_ok(key: u64, target: &Target) -> Response<ProxyBody> {
    send(key, target, Duration::from_secs(1), get("a"))
        .await
        .unwrap()
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
        tls: None,
        http2: false,
    }
}

/// Sends two GETs to a backend answering `answer` to each (closing after it when `close`):
/// both bodies are `want`, and the second request needed a connection of its own.
async fn twice_on_new_connections(answer: &'static [u8], close: bool, want: &str) {
    let (addr, _, mut conns) = scripted(vec![answer].leak(), None, close).await;
    let key = new_key();
    for _ in 0..2 {
        let (_, body) = exchange(key, addr, get("a")).await.unwrap();
        assert_eq!(body.unwrap().to_bytes(), want);
    }
    assert_eq!(
        connections(&mut conns),
        2,
        "the second request needed a new connection"
    );
}

/// How many connections the backend accepted since the last call.
fn connections(conns: &mut UnboundedReceiver<()>) -> usize {
    std::iter::from_fn(|| conns.try_recv().ok()).count()
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
    let resp = get_ok(new_key(), &target(addr)).await;
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
    assert_eq!(connections(&mut conns), 1, "one connection served both");
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close_and_its_connection_is_not_reused() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it";
    twice_on_new_connections(ANSWER, true, "all of it").await;
}

#[tokio::test]
async fn head_204_and_304_answers_have_no_body_and_keep_the_connection() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n";
    const NOT_MODIFIED: &[u8] = b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, _, mut conns) = scripted(&[HEAD, NO_CONTENT, NOT_MODIFIED, OK], None, false).await;
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
    assert_eq!(connections(&mut conns), 1, "one connection served all four");
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
    let resp = get_ok(key, &target(addr)).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "ab");
    drop(body);
    // A new connection gets the first answer again, not the old one's next answer.
    let again = get_ok(key, &target(addr)).await;
    assert_eq!(again.headers()[header::TRANSFER_ENCODING], "chunked");
    assert_eq!(
        connections(&mut conns),
        2,
        "the second request needed a new connection"
    );
}

/// The error of an exchange with a backend answering `answer`, at the head or in the body.
async fn failure(answer: &'static [u8]) -> String {
    let (addr, _, _) = scripted(std::slice::from_ref(&answer).to_vec().leak(), None, true).await;
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
    twice_on_new_connections(ANSWER, false, "ok").await;
}

#[tokio::test]
async fn http_1_0_answers_keep_the_connection_only_when_asked() {
    const CLOSE: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok";
    const KEEP: &[u8] = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok";
    const CLOSE_11: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
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
        assert_eq!(connections(&mut conns), conns_wanted);
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
    assert_eq!(
        connections(&mut conns),
        2,
        "the second request needed a new connection"
    );
}

#[tokio::test]
async fn a_connection_that_received_data_while_idle_is_not_reused() {
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
    // The unasked bytes arrive 100 ms after the answer: well before the connection is old.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, body) = exchange(key, addr, get("a")).await.unwrap();
    assert_eq!(body.unwrap().to_bytes(), "ok");
    assert_eq!(
        connections(&mut conns),
        2,
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
    assert_eq!(
        connections(&mut conns),
        2,
        "the second request needed a new connection"
    );
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_was_read() {
    let (addr, mut accepted) = backend("hi").await;
    let key = new_key();
    let t = target(addr);
    for _ in 0..3 {
        let resp = get_ok(key, &t).await;
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
    let first = get_ok(key, &t).await;
    drop(first);
    let second = get_ok(key, &t).await;
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
        let resp = get_ok(key, &t).await;
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.await.unwrap();
}
