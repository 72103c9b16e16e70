//! The data API through a real HTTP client: every endpoint, and every bad input refused with a
//! JSON error that changes nothing.

mod common;

use common::{TestNode, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn json_of(resp: reqwest::Response) -> Value {
    resp.json().await.expect("JSON body")
}

/// A node served with `Background` as `tune` leaves it (no digest repair), and its
/// `host:port`.
async fn served_with(tune: impl FnOnce(&mut meridian_node::Background)) -> (TestNode, String) {
    let mut background = meridian_node::Background {
        digest_every: None,
        ..meridian_node::Background::default()
    };
    tune(&mut background);
    let t = TestNode::start_full(None, Some(background)).await;
    let addr = t
        .base
        .strip_prefix("http://")
        .expect("http base")
        .to_string();
    (t, addr)
}

/// A client that does not finish a request's head within the header timeout (sending nothing
/// at all, part of a head, or part of the HTTP/2 preface), or stays idle that long after a
/// response, has its connection closed; one that does is served.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_after_the_header_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limit = Duration::from_millis(300);
    let (_t, addr) = served_with(|b| b.client_header_timeout = limit).await;
    // Reads until the node closes the connection: what it read, and after how long.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, Duration) {
        let started = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got));
        assert!(read.await.is_ok(), "still open after 5 s: {got:?}");
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    }

    // Silent (nothing sent: HTTP/1-or-2 detection would wait forever), a partial HTTP/2
    // preface, a partial HTTP/1 head.
    for sent in [
        &b""[..],
        b"PRI * HTTP/2",
        b"GET /health/live HTTP/1.1\r\nhost: x\r\n",
    ] {
        let mut slow = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        slow.write_all(sent).await.expect("write");
        let (_, after) = until_closed(&mut slow).await;
        assert!(
            after >= limit - Duration::from_millis(50),
            "closed after {after:?}"
        );
    }

    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, after) = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        after >= limit - Duration::from_millis(50),
        "closed after {after:?}"
    );
}

/// An HTTP/2 client that stops answering after a request (no FIN, no RST: it vanished) is
/// sent a PING after `http2_keepalive` of silence and, unanswered, has its connection closed;
/// a client that answers keeps its connection however long it idles.
#[tokio::test]
async fn vanished_http2_clients_are_closed_after_an_unanswered_ping() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ping = Duration::from_millis(300);
    let (_t, addr) = served_with(|b| b.http2_keepalive = ping).await;

    // A client that sends the preface, empty SETTINGS and one `GET /health/live`, then
    // nothing: it acknowledges no SETTINGS and answers no PING.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // HEADERS on stream 1, END_STREAM | END_HEADERS: :method GET, :scheme http, :path from
    // the literal "/health/live", :authority "a" (HPACK).
    let path = b"/health/live";
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend(path);
    block.extend([0x41, 1, b'a']);
    hello.extend([0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1]);
    hello.extend(block);
    stream.write_all(&hello).await.expect("send");
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the silent client's connection is still open after 5 s"
    );
    let closed = started.elapsed();
    // The frames the node sent: (type, flags, stream).
    let mut frames = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream_id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        frames.push((rest[3], rest[4], stream_id));
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(
        frames.iter().any(|&(kind, _, id)| kind == 1 && id == 1),
        "the request was answered: {frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|&(kind, flags, _)| kind == 6 && flags & 1 == 0),
        "a PING was sent: {frames:?}"
    );
    assert!(
        closed >= ping && closed < Duration::from_secs(3),
        "closed after {closed:?}"
    );

    // A client that answers PINGs (hyper's does) keeps its connection through four periods.
    let (mut send, conn) = h2_connect(&addr).await;
    let get = || h2_get(&addr, "/health/live");
    assert_eq!(send.send_request(get()).await.expect("first").status(), 200);
    tokio::time::sleep(ping * 4).await;
    assert!(!conn.is_finished(), "an answering client was cut off");
    assert_eq!(
        send.send_request(get())
            .await
            .expect("after idling")
            .status(),
        200
    );
}

/// An HTTP/2 client with no request in flight for the header timeout after its last
/// response is sent GOAWAY and its connection closed (no header timeout covers HTTP/2); one
/// that keeps asking keeps its connection.
#[tokio::test]
async fn idle_http2_clients_are_sent_goaway() {
    use std::time::Duration;
    let limit = Duration::from_millis(300);
    let (_t, addr) = served_with(|b| b.client_header_timeout = limit).await;
    let get = || h2_get(&addr, "/health/live");
    let (mut busy, busy_conn) = h2_connect(&addr).await;
    let (mut idle, idle_conn) = h2_connect(&addr).await;
    assert_eq!(
        idle.send_request(get()).await.expect("idle's").status(),
        200
    );
    // 1.2 s: a request every 100 ms on one connection, nothing on the other.
    for _ in 0..12 {
        assert_eq!(
            busy.send_request(get()).await.expect("busy's").status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !busy_conn.is_finished(),
        "a client that keeps asking was cut off"
    );
    ended_with_goaway(idle_conn, "the idle connection").await;

    // A request the client gives up on (its stream reset while the node waits for a session
    // it has not seen) is no longer in flight: that connection goes idle too.
    let (mut reset, reset_conn) = h2_connect(&addr).await;
    let mut waits = h2_get(&addr, "/v1/kv/reg/s?consistency=session");
    waits.headers_mut().insert(
        "meridian-session",
        axum::http::HeaderValue::from_static("eu-west-1:5"),
    );
    let given_up =
        tokio::time::timeout(Duration::from_millis(100), reset.send_request(waits)).await;
    assert!(
        given_up.is_err(),
        "the session read answered before the client gave up"
    );
    ended_with_goaway(reset_conn, "the connection of the reset request").await;
}

/// An HTTP/2 connection to `addr` (hyper's client, which answers PINGs): its sender and the
/// task driving it.
async fn h2_connect(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<axum::body::Body>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    (send, tokio::spawn(conn))
}

/// `GET path` of the node at `addr`.
fn h2_get(addr: &str, path: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get(format!("http://{addr}{path}"))
        .body(axum::body::Body::empty())
        .expect("request")
}

/// Asserts that the HTTP/2 connection driven by `conn` ends cleanly (the node sent GOAWAY and
/// closed it) within 3 s.
async fn ended_with_goaway(conn: tokio::task::JoinHandle<hyper::Result<()>>, what: &str) {
    let ended = tokio::time::timeout(std::time::Duration::from_secs(3), conn)
        .await
        .unwrap_or_else(|_| panic!("{what} ended within 3 s"));
    assert!(
        matches!(ended, Ok(Ok(()))),
        "{what} closed cleanly (GOAWAY): {ended:?}"
    );
}

#[tokio::test]
async fn register_put_get_replace_delete() {
    let t = TestNode::start().await;
    let url = t.url("/v1/kv/reg/user%2F1");
    let r = t
        .client
        .put(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["meridian-region"], "us-east-1");
    let etag1 = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(r.headers().contains_key("meridian-session"));

    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = t.client.put(&url).body("again").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(
        r.headers()["etag"].to_str().unwrap(),
        etag1,
        "a write must change the version"
    );

    let r = t.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "not_found");
    // Deleting what is not there is still 204 (idempotent).
    let r = t.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_keys_and_sizes_are_refused() {
    let t = TestNode::start().await;
    let r = t
        .client
        .put(t.url("/v1/kv/nope/k"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("unknown_keyspace") && body.contains("reg"),
        "should list keyspaces: {body}"
    );

    let long = "k".repeat(65);
    let r = t
        .client
        .put(t.url(&format!("/v1/kv/reg/{long}")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "key_too_large");

    let r = t
        .client
        .put(t.url("/v1/kv/reg/big"))
        .body(vec![b'x'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "value_too_large");
    let r = t
        .client
        .put(t.url("/v1/kv/reg/big"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "exactly the limit is allowed"
    );

    let r = t
        .client
        .put(t.url("/v1/kv/reg/%FF%FE"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "bad_key");
    let r = t
        .client
        .put(t.url("/v1/kv/reg/a%00b"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "bad_key");

    let r = t
        .client
        .get(t.url("/v1/kv/reg?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = t
        .client
        .get(t.url("/v1/kv/reg?bogus=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_query");
    let r = t
        .client
        .get(t.url("/v1/kv/reg/k?consistency=eventual"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_query");
}

#[tokio::test]
async fn conditional_writes_only_on_home_keyspaces() {
    let t = TestNode::start().await;
    let r = t
        .client
        .put(t.url("/v1/kv/reg/k"))
        .header("if-none-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "cas_not_supported");
    let r = t.client.get(t.url("/v1/kv/reg/k")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a refused write changes nothing"
    );

    let url = t.url(&format!(
        "/v1/kv/homed/{}",
        t.key_homed_at("homed", "us-east-1", "k")
    ));
    let r = t
        .client
        .put(&url)
        .header("if-none-match", "*")
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = t
        .client
        .put(&url)
        .header("if-none-match", "*")
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        etag,
        "412 tells the current version"
    );

    let r = t
        .client
        .put(&url)
        .header("if-match", &etag)
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = t
        .client
        .put(&url)
        .header("if-match", &etag)
        .body("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "stale ETag must lose"
    );
    let r = t
        .client
        .put(&url)
        .header("if-match", "garbage")
        .body("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_header");
    assert_eq!(
        t.client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v2"
    );

    let r = t
        .client
        .delete(&url)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = t
        .client
        .put(t.url("/v1/kv/homed/other"))
        .header("meridian-home", "eu-west-1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-home"], "eu-west-1");
    let r = t
        .client
        .put(t.url("/v1/kv/homed/other"))
        .header("meridian-home", "mars-1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "unknown_region");
}

#[tokio::test]
async fn counter_incr_and_wrong_operations() {
    let t = TestNode::start().await;
    let url = t.url("/v1/kv/cnt/likes");
    let r = t
        .client
        .post(format!("{url}/incr"))
        .body(r#"{"by":5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await, json!(5));
    let r = t
        .client
        .post(format!("{url}/incr"))
        .body(r#"{"by":-2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, json!(3));
    let r = t.client.post(format!("{url}/incr")).send().await.unwrap();
    assert_eq!(
        json_of(r).await,
        json!(4),
        "an empty body increments by one"
    );
    assert_eq!(
        json_of(t.client.get(&url).send().await.unwrap()).await,
        json!(4)
    );

    for bad in [
        r#"{"by":"x"}"#,
        r#"{"by":1,"extra":2}"#,
        "{",
        r#"{"by": 1.5}"#,
    ] {
        let r = t
            .client
            .post(format!("{url}/incr"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "body {bad}");
        assert_eq!(error_code(r).await, "bad_json");
    }
    let r = t.client.put(&url).body("7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "wrong_type");
    let r = t
        .client
        .post(t.url("/v1/kv/reg/x/incr"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "wrong_type");
    assert_eq!(
        json_of(t.client.get(&url).send().await.unwrap()).await,
        json!(4),
        "refusals change nothing"
    );

    let r = t.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.client.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = t
        .client
        .post(format!("{url}/incr"))
        .body(r#"{"by":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        json!(2),
        "a deleted counter starts again from zero"
    );
}

#[tokio::test]
async fn set_add_remove_replace() {
    let t = TestNode::start().await;
    let url = t.url("/v1/kv/tags/post");
    let r = t
        .client
        .post(format!("{url}/add"))
        .body(r#"{"members":["b","a"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, json!(["a", "b"]));
    let r = t
        .client
        .post(format!("{url}/remove"))
        .body(r#"{"members":["a"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, json!(["b"]));
    let r = t
        .client
        .put(&url)
        .body(r#"["x","y"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        json_of(t.client.get(&url).send().await.unwrap()).await,
        json!(["x", "y"])
    );
    let r = t
        .client
        .put(&url)
        .body(r#"{"not":"an array"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "invalid_value");
    let r = t
        .client
        .post(format!("{url}/add"))
        .body(r#"{"members":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "invalid_value");
    let r = t
        .client
        .post(format!("{url}/add"))
        .body(r#"{"members":[1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_json");
    assert_eq!(
        json_of(t.client.get(&url).send().await.unwrap()).await,
        json!(["x", "y"])
    );
}

#[tokio::test]
async fn map_patch_and_replace() {
    let t = TestNode::start().await;
    let url = t.url("/v1/kv/docs/c1");
    let r = t
        .client
        .patch(&url)
        .body(r#"{"m1":{"text":"hi"},"m2":"yo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await, json!({"m1":{"text":"hi"},"m2":"yo"}));
    let r = t
        .client
        .patch(&url)
        .body(r#"{"m2":null,"m3":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, json!({"m1":{"text":"hi"},"m3":3}));
    let r = t.client.patch(&url).body("[1,2]").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = t.client.patch(&url).body("{oops").send().await.unwrap();
    assert_eq!(error_code(r).await, "bad_json");
    let r = t
        .client
        .put(&url)
        .body(r#"{"only":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        json_of(t.client.get(&url).send().await.unwrap()).await,
        json!({"only":true})
    );
    let r = t
        .client
        .patch(t.url("/v1/kv/reg/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "wrong_type");
}

/// `[limits] max_value_bytes` (1024 here) bounds the data a value holds, not just one request's
/// body: a PATCH, an `add` or a context-less mvregister PUT that would take a value past it is
/// 413 `value_too_large` and changes nothing; one that shrinks the value is taken.
#[tokio::test]
async fn values_grown_by_patch_add_or_siblings_stay_within_max_value_bytes() {
    let t = TestNode::start().await;
    let send = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap() };
    let url = t.url("/v1/kv/docs/grown");
    let field = |name: &str, len: usize| json!({ name: "x".repeat(len) }).to_string();
    // `a` and a 500-byte JSON text, then `b` likewise: 1,002 bytes; `c` would add 103.
    for name in ["a", "b"] {
        let r = send(t.client.patch(&url).body(field(name, 498))).await;
        assert_eq!(r.status(), StatusCode::OK, "{name}");
    }
    let before = json_of(send(t.client.get(&url)).await).await;
    let r = send(
        t.client
            .patch(&url)
            .header("idempotency-key", "grow-1")
            .body(field("c", 100)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = json_of(r).await;
    assert_eq!(body["error"]["code"], "value_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1105 bytes") && message.contains("1024"),
        "{message}"
    );
    assert!(
        body["error"]["hint"].as_str().unwrap().contains("null"),
        "{body}"
    );
    assert_eq!(
        json_of(send(t.client.get(&url)).await).await,
        before,
        "nothing changed"
    );
    // Removing a field while adding a smaller one fits.
    let r = send(t.client.patch(&url).body(r#"{"a":null,"c":"small"}"#)).await;
    assert_eq!(r.status(), StatusCode::OK);

    let url = t.url("/v1/kv/tags/grown");
    let add = |m: Vec<String>| json!({ "members": m }).to_string();
    let r = send(
        t.client
            .post(format!("{url}/add"))
            .body(add(vec!["m".repeat(1000)])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(
        t.client
            .post(format!("{url}/add"))
            .body(add(vec!["n".repeat(25)])),
    )
    .await;
    assert_eq!(error_code(r).await, "value_too_large");
    let r = send(
        t.client
            .post(format!("{url}/add"))
            .body(add(vec!["n".repeat(24)])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "exactly the limit is allowed");

    // Writes without a context keep the siblings they do not know of.
    let url = t.url("/v1/kv/mv/grown");
    for _ in 0..2 {
        let r = send(t.client.put(&url).body("s".repeat(500))).await;
        assert!(r.status().is_success(), "{}", r.status());
    }
    let r = send(t.client.put(&url).body("s".repeat(500))).await;
    assert_eq!(error_code(r).await, "value_too_large");
    let r = send(t.client.get(&url)).await;
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let ctx = r.headers()["meridian-context"]
        .to_str()
        .unwrap()
        .to_string();
    let r = send(
        t.client
            .put(&url)
            .header("meridian-context", ctx)
            .body("s".repeat(1000)),
    )
    .await;
    assert!(
        r.status().is_success(),
        "a write that resolves them fits: {}",
        r.status()
    );
}

#[tokio::test]
async fn mvregister_siblings_and_resolution() {
    let t = TestNode::start().await;
    let url = t.url("/v1/kv/mv/doc");
    t.client.put(&url).body("one").send().await.unwrap();
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ctx = r.headers()["meridian-context"]
        .to_str()
        .unwrap()
        .to_string();
    // A write without context is concurrent with what exists: both are kept.
    t.client.put(&url).body("two").send().await.unwrap();
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let v = json_of(r).await;
    let mut vals: Vec<_> = v["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap().to_string())
        .collect();
    vals.sort();
    assert_eq!(vals, ["one", "two"]);
    let full_ctx = v["context"].as_str().unwrap().to_string();
    assert_ne!(ctx, full_ctx);
    // Writing with the full context resolves both.
    t.client
        .put(&url)
        .header("meridian-context", &full_ctx)
        .body("merged")
        .send()
        .await
        .unwrap();
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "merged");
    let r = t
        .client
        .put(&url)
        .header("meridian-context", "bad token!")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_header");
}

#[tokio::test]
async fn ttl_expires_values() {
    let t = TestNode::start().await;
    let r = t
        .client
        .put(t.url("/v1/kv/reg/t"))
        .header("meridian-ttl", "1s")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    t.client
        .put(t.url("/v1/kv/short/d"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.client
            .get(t.url("/v1/kv/reg/t"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        t.client
            .get(t.url("/v1/kv/reg/t"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.client
            .get(t.url("/v1/kv/short/d"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND,
        "keyspace default ttl"
    );
    let page = json_of(t.client.get(t.url("/v1/kv/reg")).send().await.unwrap()).await;
    assert_eq!(page["items"], json!([]), "expired keys are not listed");
    // A new write after expiry starts fresh.
    let r = t
        .client
        .put(t.url("/v1/kv/reg/t"))
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    for bad in ["soon", "0s", "-1s", "99999d"] {
        let r = t
            .client
            .put(t.url("/v1/kv/reg/b"))
            .header("meridian-ttl", bad)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "ttl {bad}");
        assert_eq!(error_code(r).await, "bad_ttl");
    }
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse() {
    let t = TestNode::start().await;
    let url = t.url("/v1/kv/cnt/orders");
    let send = |body: &'static str| {
        t.client
            .post(format!("{url}/incr"))
            .header("idempotency-key", "req-1")
            .body(body)
            .send()
    };
    let a = send(r#"{"by":10}"#).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert!(!a.headers().contains_key("idempotent-replayed"));
    let etag = a.headers()["etag"].clone();
    assert_eq!(json_of(a).await, json!(10));
    let b = send(r#"{"by":10}"#).await.unwrap();
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    assert_eq!(b.headers()["etag"], etag);
    assert_eq!(json_of(b).await, json!(10));
    assert_eq!(
        json_of(t.client.get(&url).send().await.unwrap()).await,
        json!(10),
        "applied once"
    );
    let c = send(r#"{"by":11}"#).await.unwrap();
    assert_eq!(c.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(c).await, "idempotency_key_reused");

    let r = t
        .client
        .put(t.url("/v1/kv/reg/i"))
        .header("idempotency-key", "")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_header");
    let r = t
        .client
        .put(t.url("/v1/kv/reg/i"))
        .header("idempotency-key", "k".repeat(300))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_header");
}

#[tokio::test]
async fn scan_pages_through_keys() {
    let t = TestNode::start().await;
    for i in 0..7 {
        t.client
            .put(t.url(&format!("/v1/kv/reg/user-{i}")))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
    }
    t.client
        .put(t.url("/v1/kv/reg/other"))
        .body("o")
        .send()
        .await
        .unwrap();
    t.client
        .delete(t.url("/v1/kv/reg/user-3"))
        .send()
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut u = t.url("/v1/kv/reg?prefix=user-&limit=2&values=true");
        if let Some(a) = &after {
            u.push_str(&format!("&after={a}"));
        }
        let page = json_of(t.client.get(u).send().await.unwrap()).await;
        for item in page["items"].as_array().unwrap() {
            let k = item["key"].as_str().unwrap().to_string();
            assert_eq!(item["value"], json!(format!("v{}", &k[5..])));
            assert!(item["etag"].is_string());
            keys.push(k);
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        keys,
        ["user-0", "user-1", "user-2", "user-4", "user-5", "user-6"]
    );
    let r = t
        .client
        .get(t.url("/v1/kv/cnt?values=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["items"], json!([]));
    // The flag as APIs write it: `values`, `values=1`, `values=TRUE` on; `0`, `false` off.
    for (query, with_value) in [
        ("values", true),
        ("values=1", true),
        ("values=TRUE", true),
        ("values=0", false),
        ("values=false", false),
    ] {
        let r = t
            .client
            .get(t.url(&format!("/v1/kv/reg?prefix=user-0&{query}")))
            .send()
            .await
            .unwrap();
        let item = json_of(r).await["items"][0].clone();
        assert_eq!(item["key"], "user-0", "{query}");
        assert_eq!(item.get("value").is_some(), with_value, "{query}: {item}");
    }
    let r = t
        .client
        .get(t.url("/v1/kv/reg?values=yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json_of(r).await;
    assert_eq!(body["error"]["code"], "bad_query");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("`yes`"),
        "{body}"
    );
}

#[tokio::test]
async fn sessions_and_consistency() {
    let t = TestNode::start().await;
    let r = t
        .client
        .get(t.url("/v1/kv/reg/s?consistency=strong"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "strong on a multi-writer keyspace is refused, never served stale"
    );
    assert_eq!(error_code(r).await, "consistency_not_supported");
    let r = t
        .client
        .put(t.url("/v1/kv/reg/s"))
        .body("x")
        .send()
        .await
        .unwrap();
    let token = r.headers()["meridian-session"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("us-east-1:"), "token {token}");
    let r = t
        .client
        .get(t.url("/v1/kv/reg/s?consistency=session"))
        .header("meridian-session", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A session that saw a write this region has not applied: bounded wait, then a clear 503.
    let started = std::time::Instant::now();
    let r = t
        .client
        .get(t.url("/v1/kv/reg/s?consistency=session"))
        .header("meridian-session", "eu-west-1:5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_not_visible");
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("`eu-west-1`"),
        "the hint names the region tried: {body}"
    );
    let r = t
        .client
        .get(t.url("/v1/kv/reg/s?consistency=session"))
        .header("meridian-session", "###")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_header");
    // The next write's token covers the session's earlier token.
    let r = t
        .client
        .put(t.url("/v1/kv/reg/s2"))
        .header("meridian-session", "eu-west-1:5")
        .body("x")
        .send()
        .await
        .unwrap();
    let t2 = r.headers()["meridian-session"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        t2.contains("eu-west-1:5") && t2.contains("us-east-1:"),
        "token {t2}"
    );
}

/// Strong reads of a `writer = "home"` keyspace are served by the key's home: here when this
/// region is the home (the stored home, else `Meridian-Home`, else the key's default home); a
/// home that cannot be reached is a 503 naming it, never a local (possibly stale) answer.
#[tokio::test]
async fn strong_reads_are_served_by_the_home() {
    let t = TestNode::start().await;
    let h = t.key_homed_at("homed", "us-east-1", "h");
    let url = t.url(&format!("/v1/kv/homed/{h}?consistency=strong"));
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "absent, homed here");
    t.client
        .put(t.url(&format!("/v1/kv/homed/{h}")))
        .body("a")
        .send()
        .await
        .unwrap();
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["meridian-region"], "us-east-1");
    assert_eq!(r.text().await.unwrap(), "a");
    // The stored home wins over the header, as for writes.
    let r = t
        .client
        .get(&url)
        .header("meridian-home", "eu-west-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // An absent key homed elsewhere: the home (nothing listens there) is asked, not this region.
    let r = t
        .client
        .get(t.url("/v1/kv/homed/elsewhere?consistency=strong"))
        .header("meridian-home", "eu-west-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["meridian-home"], "eu-west-1");
    assert_eq!(error_code(r).await, "home_unavailable");
    // No header: an absent key's default home is asked.
    let away = t.key_homed_at("homed", "eu-west-1", "away");
    let r = t
        .client
        .get(t.url(&format!("/v1/kv/homed/{away}?consistency=strong")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["meridian-home"], "eu-west-1");
    // Already forwarded once: say where the home is instead of forwarding again.
    let r = t
        .client
        .get(t.url("/v1/kv/homed/elsewhere?consistency=strong"))
        .header("meridian-home", "eu-west-1")
        .header("meridian-forwarded", "eu-west-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(error_code(r).await, "wrong_region");
    let r = t
        .client
        .get(t.url("/v1/kv/homed/x?consistency=strong"))
        .header("meridian-home", "mars-1")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "unknown_region");
}

#[tokio::test]
async fn residency_sends_requests_to_allowed_regions() {
    let t = TestNode::start().await;
    let r = t
        .client
        .put(t.url("/v1/kv/eu_only/p"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-allowed-region"], "eu-west-1");
    assert_eq!(error_code(r).await, "residency");
    let r = t
        .client
        .get(t.url("/v1/kv/eu_only/p"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    // Nor is a list or a change feed of the keyspace answered (empty) here.
    for path in [
        "/v1/kv/eu_only",
        "/v1/kv/eu_only?prefix=p",
        "/v1/watch/eu_only",
    ] {
        let r = t.client.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
        assert_eq!(
            r.headers()["meridian-allowed-region"],
            "eu-west-1",
            "{path}"
        );
    }
    // A home-zone keyspace lists what this region holds.
    let r = t.client.get(t.url("/v1/kv/profiles")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // home-zone: a profile homed in the EU may not be written in us-east-1; one homed here may.
    let r = t
        .client
        .put(t.url("/v1/kv/profiles/u1"))
        .header("meridian-home", "eu-west-1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let r = t
        .client
        .put(t.url("/v1/kv/profiles/u2"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // A read of a profile homed in the EU is sent there, not answered 404; one homed here that
    // does not exist is a 404, and a stored profile is served whatever home the reader names.
    let read = |key: &str, home: &'static str| {
        t.client
            .get(t.url(&format!("/v1/kv/profiles/{key}")))
            .header("meridian-home", home)
            .send()
    };
    let r = read("u1", "eu-west-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-allowed-region"], "eu-west-1");
    assert_eq!(error_code(r).await, "residency");
    let r = read("u3", "us-east-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = read("u2", "eu-west-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = read("u3", "mars-1").await.unwrap();
    assert_eq!(error_code(r).await, "unknown_region");
    // A session read of a key this region may not hold is sent on at once, not waited for.
    let started = std::time::Instant::now();
    let r = t
        .client
        .get(t.url("/v1/kv/eu_only/p?consistency=session"))
        .header("meridian-session", "eu-west-1:5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert!(started.elapsed() < std::time::Duration::from_millis(300));
    // A profile homed here is held only in this zone: the session's missing writes were made
    // in eu-west-1, outside it, so the read is not forwarded there.
    let r = t
        .client
        .get(t.url("/v1/kv/profiles/u2?consistency=session"))
        .header("meridian-session", "eu-west-1:5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_not_visible");
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("not forwarded"),
        "{body}"
    );
}

#[tokio::test]
async fn watch_streams_durable_changes() {
    let t = TestNode::start().await;
    let mut resp = t
        .client
        .get(t.url("/v1/watch/reg?prefix=w"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    t.client
        .put(t.url("/v1/kv/reg/nope"))
        .body("x")
        .send()
        .await
        .unwrap();
    t.client
        .put(t.url("/v1/kv/reg/w1"))
        .body("x")
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.contains("w1") {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: put"), "{seen}");
    assert!(!seen.contains("\"nope\""), "prefix filter: {seen}");
    let r = t
        .client
        .get(t.url("/v1/watch/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "unknown_keyspace");
}

#[tokio::test]
async fn health_metrics_and_routing_errors() {
    let t = TestNode::start().await;
    assert_eq!(
        t.client
            .get(t.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        t.client
            .get(t.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    t.client
        .put(t.url("/v1/kv/reg/m"))
        .body("x")
        .send()
        .await
        .unwrap();
    // The first read fills the store's read cache, the second is answered from it.
    for _ in 0..2 {
        let r = t.client.get(t.url("/v1/kv/reg/m")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "x");
    }
    let r = t
        .client
        .get(t.url("/v1/kv/reg/absent"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let m = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "meridian_http_requests_total",
        "meridian_kv_writes_total",
        "meridian_http_request_duration_seconds",
        "meridian_store_fsyncs_total",
        "meridian_store_writeback_syncs_total",
        "meridian_store_reclaimed_total",
        "meridian_store_commit_seconds_bucket",
    ] {
        assert!(m.contains(name), "metric {name} missing from:\n{m}");
    }
    let hits = m
        .lines()
        .find_map(|l| l.strip_prefix("meridian_store_read_cache_hits_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(hits >= Some(1), "read cache hits counted: {hits:?}\n{m}");
    assert!(m.contains("meridian_store_read_cache_misses_total"));
    // Each route, method and status is its own series, counted once per request.
    let count = |status: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("meridian_http_requests_total{")
                    && l.contains(r#"route="/v1/kv/{keyspace}/{key}""#)
                    && l.contains(r#"method="GET""#)
                    && l.contains(&format!(r#"status="{status}""#))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    // (Other tests of this binary share the process's recorder: at least, not exactly.)
    assert!(count("200") >= Some(2), "{m}");
    assert!(count("404") >= Some(1), "{m}");
    let r = t.client.get(t.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "no_route");
    let r = t.client.post(t.url("/v1/kv/reg/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "method_not_allowed");
    let conflicts = json_of(t.client.get(t.url("/v1/conflicts")).send().await.unwrap()).await;
    assert_eq!(conflicts["conflicts"], json!([]));
}

#[tokio::test]
async fn admin_status_needs_the_token() {
    let t = TestNode::start_with(Some("s3cret-token-for-tests".into())).await;
    let r = t
        .client
        .get(t.url("/v1/admin/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "unauthorized");
    let r = t
        .client
        .get(t.url("/v1/admin/status"))
        .bearer_auth("s3cret-token-for-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = json_of(r).await;
    assert_eq!(v["region"], "us-east-1");
    assert_eq!(v["keyspaces"]["cnt"]["type"], "counter");
    // This call's own connection holds a slot (the client may keep another); no write waits.
    let load = &v["load"];
    assert_eq!(load["pending_writes"], 0, "{v}");
    assert_eq!(load["max_pending_writes"], 10_000, "{v}");
    assert_eq!(load["max_connections"], 10_000, "{v}");
    assert!(
        (1..=2).contains(&load["connections"].as_u64().unwrap_or(0)),
        "{v}"
    );
    assert_eq!(v["store"]["failure"], Value::Null);
    assert_eq!(v["store"]["joining"], false, "ready, so joined");
    assert_eq!(v["store"]["incarnation"], t.node.incarnation().to_string());
}

/// The OpenAPI document matches the server: every documented path and method is routed (the
/// answer is never the router's `no_route`/`method_not_allowed`), and every route is documented.
#[tokio::test]
async fn openapi_matches_the_router() {
    let t = TestNode::start().await;
    let doc = json_of(t.client.get(t.url("/openapi.json")).send().await.unwrap()).await;
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path.replace("{keyspace}", "reg").replace("{key}", "k");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let req = t.client.request(m, t.url(&concrete)).send();
            let r = req.await.unwrap();
            if r.headers()
                .get("content-type")
                .is_some_and(|v| v == "text/event-stream")
            {
                continue; // an open event stream: routed
            }
            let body = r.text().await.unwrap_or_default();
            assert!(
                !body.contains("no_route") && !body.contains("method_not_allowed"),
                "{method} {path} is documented but not routed: {body}"
            );
        }
    }
    documented.sort();
    let expected = [
        "DELETE /v1/kv/{keyspace}/{key}",
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /openapi.json",
        "GET /v1/admin/status",
        "GET /v1/conflicts",
        "GET /v1/kv/{keyspace}",
        "GET /v1/kv/{keyspace}/{key}",
        "GET /v1/watch/{keyspace}",
        "PATCH /v1/kv/{keyspace}/{key}",
        "POST /v1/kv/{keyspace}/{key}/add",
        "POST /v1/kv/{keyspace}/{key}/incr",
        "POST /v1/kv/{keyspace}/{key}/remove",
        "PUT /v1/kv/{keyspace}/{key}",
    ];
    assert_eq!(
        documented, expected,
        "the router's routes (api.rs) and openapi.json differ"
    );
}

/// A new key of a `writer = "home"` keyspace is homed where `Meridian-Home` says, else at its
/// default home — the same region whichever region is asked, so no two regions take its first
/// write; once it exists, its stored home decides and a header naming another cannot move it.
#[tokio::test]
async fn new_home_keys_go_to_their_default_home_unless_named() {
    let t = TestNode::start().await;
    let here = t.key_homed_at("homed", "us-east-1", "h");
    let url = t.url(&format!("/v1/kv/homed/{here}"));
    assert_eq!(
        t.client.put(&url).body("a").send().await.unwrap().status(),
        StatusCode::CREATED
    );
    let r = t
        .client
        .put(&url)
        .header("meridian-home", "eu-west-1")
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "an existing key keeps its home");
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "b");

    let away = t.key_homed_at("homed", "eu-west-1", "h");
    let url = t.url(&format!("/v1/kv/homed/{away}"));
    let r = t
        .client
        .put(&url)
        .header("if-none-match", "*")
        .body("c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-home"], "eu-west-1");
    assert_eq!(error_code(r).await, "wrong_region");
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a refused write changes nothing"
    );
    let r = t
        .client
        .put(&url)
        .header("meridian-home", "us-east-1")
        .body("d")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "a named home wins over the default"
    );
}

/// Past `[limits] max_pending_writes` waiting for the store, a write is refused at once with
/// 503 `overloaded` and `Retry-After`, and it changed nothing; every acknowledged one is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_max_pending_writes_are_shed_and_change_nothing() {
    let topology = common::TOPOLOGY.replace(
        "session_wait = \"300ms\"",
        "session_wait = \"300ms\"\nmax_pending_writes = 1",
    );
    let t = TestNode::start_on(&topology, None, None).await;
    let mut writers = Vec::new();
    for w in 0..48 {
        let client = t.client.clone();
        let base = t.base.clone();
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..20 {
                let key = format!("o-{w}-{i}");
                let resp = client
                    .put(format!("{base}/v1/kv/reg/{key}"))
                    .body(key.clone())
                    .send()
                    .await
                    .expect("PUT");
                let retry_after = resp.headers().get("retry-after").cloned();
                let status = resp.status();
                let code = if status == StatusCode::SERVICE_UNAVAILABLE {
                    error_code(resp).await
                } else {
                    String::new()
                };
                outcomes.push((key, status, code, retry_after));
            }
            outcomes
        }));
    }
    let (mut acked, mut shed) = (Vec::new(), Vec::new());
    for w in writers {
        for (key, status, code, retry_after) in w.await.expect("writer") {
            match status {
                StatusCode::CREATED => acked.push(key),
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(code, "overloaded", "{key}");
                    assert_eq!(
                        retry_after.as_ref().and_then(|v| v.to_str().ok()),
                        Some("1")
                    );
                    shed.push(key);
                }
                other => panic!("{key}: unexpected {other}"),
            }
        }
    }
    assert!(
        !shed.is_empty(),
        "48 concurrent writers never exceeded 1 pending write"
    );
    assert!(!acked.is_empty(), "no write was admitted");
    for key in &acked {
        let resp = t
            .client
            .get(t.url(&format!("/v1/kv/reg/{key}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "acknowledged {key}");
        assert_eq!(resp.text().await.expect("body"), *key);
    }
    for key in &shed {
        let resp = t
            .client
            .get(t.url(&format!("/v1/kv/reg/{key}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "shed {key} was written"
        );
    }
    let metrics = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    let metrics = metrics.text().await.expect("metrics body");
    let line = format!(
        "meridian_kv_writes_shed_total{{keyspace=\"reg\"}} {}",
        shed.len()
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}` in:\n{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "meridian_kv_writes_pending 0"),
        "{metrics}"
    );
}

/// With `[limits] max_connections` connections open the node accepts no more: a new client
/// waits (in the listen backlog) and is served once a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_clients_wait_for_a_free_slot() {
    let topology = common::TOPOLOGY.replace(
        "session_wait = \"300ms\"",
        "session_wait = \"300ms\"\nmax_connections = 2",
    );
    let t = TestNode::start_on(&topology, None, None).await;
    let addr = t.base.trim_start_matches("http://").to_string();
    let first = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let _second = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while t.node.connection_slots().open() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two connections were not accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let waited = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(700))
        .build()
        .expect("client")
        .get(t.url("/health/live"))
        .send()
        .await;
    assert!(
        waited.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a third client was served while two held every slot: {waited:?}"
    );
    drop(first);
    let metrics = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .expect("served once a slot was free")
        .text()
        .await
        .expect("metrics");
    let limited = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("meridian_http_connections_limited_total "))
        .any(|v| v.parse::<f64>().is_ok_and(|n| n >= 1.0));
    assert!(limited, "the wait is counted:\n{metrics}");
}
