//! gRPC-Web bridged to gRPC through a served edge: a browser-style HTTP/1.1 client sends
//! `application/grpc-web[-text]+proto` calls to a region whose backend speaks only HTTP/2
//! gRPC, and gets gRPC-Web answers (the trailers as the body's last frame, base64 for text).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meridian_edge::{Edge, EdgeOptions};
use tokio::net::TcpListener;

/// A body of the frames given, one at a time.
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// One gRPC message frame (uncompressed) holding `payload`.
fn message(payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// gRPC-Web's trailers frame of `lines` (`name:value\r\n` each).
fn trailers_frame(lines: &str) -> Vec<u8> {
    let mut f = vec![0x80];
    f.extend_from_slice(&(lines.len() as u32).to_be_bytes());
    f.extend_from_slice(lines.as_bytes());
    f
}

/// An HTTP/2-only gRPC backend. `/echo.Echo/Say` answers `application/grpc+proto` with one
/// message `<content-type it got>|<te>|<request body>` sent in two data frames, then trailers
/// `grpc-status: 0`, `grpc-message: done`; `/echo.Echo/Fail` answers trailers-only with
/// `grpc-status: 5` (NOT_FOUND) in the head.
async fn grpc_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/echo.Echo/Fail" {
                        let mut resp =
                            Response::new(http_body_util::Either::Left(Full::new(Bytes::new())));
                        let h = resp.headers_mut();
                        h.insert("content-type", "application/grpc+proto".parse().unwrap());
                        h.insert("grpc-status", "5".parse().unwrap());
                        return Ok::<_, hyper::Error>(resp);
                    }
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
                    };
                    let seen = format!("{}|{}|", header("content-type"), header("te"));
                    let body = req.into_body().collect().await?.to_bytes();
                    let answer = message(&[seen.as_bytes(), &body[..]].concat());
                    let (first, second) = answer.split_at(3);
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("grpc-message", "done".parse().unwrap());
                    let body = Frames(
                        [
                            Frame::data(Bytes::copy_from_slice(first)),
                            Frame::data(Bytes::copy_from_slice(second)),
                            Frame::trailers(trailers),
                        ]
                        .into(),
                    );
                    let mut resp = Response::new(http_body_util::Either::Right(body));
                    resp.headers_mut()
                        .insert("content-type", "application/grpc+proto".parse().unwrap());
                    Ok(resp)
                });
                let http2 =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = http2.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    addr
}

/// An edge whose one region's backend is `app`, spoken to as `app_protocol`: its proxy address.
async fn edge(app: SocketAddr, app_protocol: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (la, aa) = (l.local_addr().unwrap(), a.local_addr().unwrap());
    let text = format!(
        "[cluster]\nname = \"t\"\n\
         [[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\napp = [\"http://{app}\"]\n\
         app_protocol = \"{app_protocol}\"\n\
         [[edge]]\nname = \"e1\"\nlisten = \"{la}\"\nadmin = \"{aa}\"\n"
    );
    let topo = Arc::new(meridian_core::config::parse("t.toml", &text).unwrap());
    let edge = Edge::new(topo, EdgeOptions::new("e1")).unwrap();
    tokio::spawn(meridian_edge::serve(edge, l, a, std::future::pending()));
    la
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A binary gRPC-Web call reaches the HTTP/2 backend as gRPC (its content type, `te:
/// trailers`, the same message), and its answer comes back as gRPC-Web: the messages, then
/// the trailers as a frame flagged 0x80.
#[tokio::test]
async fn binary_grpc_web_calls_are_bridged_to_grpc() {
    let proxy = edge(grpc_backend().await, "http2").await;
    let call = message(b"hi");
    let r = client()
        .post(format!("http://{proxy}/echo.Echo/Say"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(call.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    assert_eq!(r.headers()["meridian-region"], "a");
    let body = r.bytes().await.unwrap();
    let mut want = message(&[b"application/grpc+proto|trailers|".as_slice(), &call].concat());
    want.extend(trailers_frame("grpc-status:0\r\ngrpc-message:done\r\n"));
    assert_eq!(&body[..], &want[..]);
}

/// A text call (`application/grpc-web-text`): its base64 body — here two padded chunks, as a
/// client that encodes frame by frame sends them — is decoded for the backend, and the answer
/// is base64 of what a binary call would get; bad base64 is a 400 that reaches no backend.
#[tokio::test]
async fn text_grpc_web_calls_are_decoded_and_answered_in_base64() {
    let proxy = edge(grpc_backend().await, "http2").await;
    let call = message(b"hello");
    let (a, b) = call.split_at(4);
    let text = format!("{}{}", STANDARD.encode(a), STANDARD.encode(b));
    let r = client()
        .post(format!("http://{proxy}/echo.Echo/Say"))
        .header("content-type", "application/grpc-web-text")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/grpc-web-text+proto"
    );
    let body = r.text().await.unwrap();
    let decoded = STANDARD.decode(body.trim()).unwrap();
    let mut want = message(&[b"application/grpc|trailers|".as_slice(), &call].concat());
    want.extend(trailers_frame("grpc-status:0\r\ngrpc-message:done\r\n"));
    assert_eq!(decoded, want);

    let r = client()
        .post(format!("http://{proxy}/echo.Echo/Say"))
        .header("content-type", "application/grpc-web-text")
        .body("AAAA*not base64")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "bad_grpc_web_text");
}

/// A trailers-only answer (the status in the head) passes with its status in the head, where
/// gRPC-Web clients read it, and an empty body.
#[tokio::test]
async fn trailers_only_answers_keep_their_status_in_the_head() {
    let proxy = edge(grpc_backend().await, "http2").await;
    let r = client()
        .post(format!("http://{proxy}/echo.Echo/Fail"))
        .header("content-type", "application/grpc-web+proto")
        .body(message(b""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "5");
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    assert!(r.bytes().await.unwrap().is_empty());
}
