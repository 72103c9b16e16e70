//! `serve_client` around a real hyper server on loopback, spoken to by hyper's client and by
//! raw sockets.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meridian_http::{Activity, serve_client};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// The header timeout (`limit`) of the test servers but the one stopped.
const LIMIT: Duration = Duration::from_millis(300);

/// A server on loopback whose connections are run by `serve_client` with `limit`: `/` is
/// answered at once, `/slow` after 1 s, `/never` never. Its address and the sender that stops
/// it (the accept loop's receiver ends with it).
async fn server(limit: Duration) -> (String, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopping) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limit);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut stopped = stopping.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted.unwrap().0,
                _ = stopped.wait_for(|s| *s) => return,
            };
            let activity = Arc::new(Activity::new());
            let seen = activity.clone();
            let service = hyper::service::service_fn(move |req: Request<_>| {
                let in_flight = seen.request();
                async move {
                    match req.uri().path() {
                        "/slow" => tokio::time::sleep(Duration::from_secs(1)).await,
                        "/never" => std::future::pending().await,
                        _ => {}
                    }
                    drop(in_flight);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(serve_client(conn, activity, limit, stopping.clone()));
        }
    });
    (addr, stop)
}

/// An HTTP/2 connection to `addr` (hyper's client, which answers PINGs): its sender and the
/// task driving it.
async fn h2_connect(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

fn get(addr: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Waits up to 3 s for the HTTP/2 connection driven by `conn` to end cleanly (the server sent
/// GOAWAY and closed it); how long that took.
async fn ended_with_goaway(conn: tokio::task::JoinHandle<hyper::Result<()>>) -> Duration {
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the connection ended within 3 s");
    assert!(matches!(ended, Ok(Ok(()))), "closed cleanly: {ended:?}");
    started.elapsed()
}

/// A client that connects and sends nothing, or only part of an HTTP/2 preface (hyper-util's
/// HTTP/1-or-2 detection waits for more), is closed once `limit` has passed.
#[tokio::test]
async fn clients_that_send_no_request_are_closed_after_the_limit() {
    let (addr, _stop) = server(LIMIT).await;
    for sent in [&b""[..], b"PRI * HTTP/2"] {
        let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
        silent.write_all(sent).await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), silent.read_to_end(&mut got));
        assert!(read.await.is_ok(), "{sent:?}: still open after 3 s");
        let after = started.elapsed();
        assert!(
            after >= LIMIT - Duration::from_millis(50),
            "{sent:?}: closed after {after:?}"
        );
    }
}

/// An HTTP/2 connection with no request for `limit` after its last response is sent GOAWAY;
/// one that keeps asking keeps its connection.
#[tokio::test]
async fn idle_http2_connections_are_sent_goaway_and_busy_ones_are_not() {
    let (addr, _stop) = server(LIMIT).await;
    let (mut busy, busy_conn) = h2_connect(&addr).await;
    let (mut idle, idle_conn) = h2_connect(&addr).await;
    assert_eq!(
        idle.send_request(get(&addr, "/")).await.unwrap().status(),
        200
    );
    let answered = Instant::now();
    // 1.2 s: a request every 100 ms on one connection, nothing on the other.
    for _ in 0..12 {
        assert_eq!(
            busy.send_request(get(&addr, "/")).await.unwrap().status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !busy_conn.is_finished(),
        "a client that keeps asking was cut off"
    );
    ended_with_goaway(idle_conn).await;
    assert!(answered.elapsed() >= LIMIT);
}

/// A request that takes longer than `limit` keeps its connection open: GOAWAY comes only
/// `limit` after its response.
#[tokio::test]
async fn a_request_in_flight_keeps_its_connection() {
    let (addr, _stop) = server(LIMIT).await;
    let (mut send, conn) = h2_connect(&addr).await;
    assert_eq!(
        send.send_request(get(&addr, "/slow"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!conn.is_finished(), "closed while a request was in flight");
    let after = ended_with_goaway(conn).await;
    assert!(
        after >= LIMIT - Duration::from_millis(50),
        "GOAWAY {after:?} after the response"
    );
}

/// A request hyper drops (the client reset its stream) no longer counts as in flight: the
/// connection goes idle and is sent GOAWAY.
#[tokio::test]
async fn a_request_given_up_by_its_client_is_no_longer_in_flight() {
    let (addr, _stop) = server(LIMIT).await;
    let (mut send, conn) = h2_connect(&addr).await;
    let given_up = tokio::time::timeout(
        Duration::from_millis(100),
        send.send_request(get(&addr, "/never")),
    )
    .await;
    assert!(given_up.is_err(), "/never answered");
    ended_with_goaway(conn).await;
}

/// A stop lets a request in flight finish, then ends its connection (GOAWAY on HTTP/2) and an
/// idle HTTP/1 one, long before their idle limit; the stop's sender sees every connection's
/// end.
#[tokio::test]
async fn a_stop_lets_requests_finish_and_ends_every_connection() {
    let (addr, stop) = server(Duration::from_secs(10)).await;
    let (mut send, conn) = h2_connect(&addr).await;
    let slow = tokio::spawn(send.send_request(get(&addr, "/slow")));
    let mut h1 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    h1.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    h1.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), h1.read_to_end(&mut rest));
    assert!(
        read.await.is_ok(),
        "the idle HTTP/1 connection is still open"
    );
    let resp = slow
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(resp.status(), 200);
    ended_with_goaway(conn).await;
    let all = tokio::time::timeout(Duration::from_secs(3), stop.closed()).await;
    assert!(all.is_ok(), "a connection's task outlived its connection");
}
