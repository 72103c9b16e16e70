//! The demo app in front of real in-process region nodes on loopback: conversations, idempotent
//! checkout on a sync keyspace (and its refusal without a quorum), residency replays, readiness
//! following the node, and bad input refused with JSON errors.

#[path = "common/node_ready.rs"]
mod node_ready;

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_lab::app::{AppOptions, serve};
use meridian_node::NodeConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

const TOPOLOGY: &str = r#"
[cluster]
name = "demo"

[zones]
eu = ["eu-west-1"]
us = ["us-east-1"]

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:1"

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:2"

[[keyspace]]
name = "conversations"
type = "map"

[[keyspace]]
name = "orders"
type = "register"
replication = "sync"
quorum = 2
sync_timeout = "700ms"

[[keyspace]]
name = "profiles"
type = "register"
residency = "home-zone"

[[keyspace]]
name = "sessions"
type = "register"
ttl = "1h"
"#;

/// A running region node; dropping it stops the node.
struct RunningNode {
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// An address nothing listens on.
async fn closed_port() -> String {
    let l = loopback().await;
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

impl RunningNode {
    /// Waits until the node answers `/health/ready` 200: a new store first joins its peers.
    async fn wait_ready(&self) {
        node_ready::wait_ready(&self.base).await;
    }
}

async fn start_node(
    region: &str,
    listener: TcpListener,
    peers: BTreeMap<String, String>,
) -> RunningNode {
    let topology = meridian_core::config::parse("demo.toml", TOPOLOGY).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        secret: None,
        peer_urls: peers,
        ..NodeConfig::default()
    };
    let node = meridian_node::open(Arc::new(topology), region, dir.path(), config).expect("node");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        meridian_node::serve(node, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    RunningNode {
        base,
        _stop: stop,
        _dir: dir,
    }
}

/// Starts the app of us-east-1 in front of `node` and returns its base URL.
async fn start_app(node: &str) -> String {
    start_app_with_clock(node, meridian_lab::app::clock::system_ms).await
}

/// Starts the app of us-east-1 in front of `node`, reading the time from `now_ms`.
async fn start_app_with_clock(node: &str, now_ms: fn() -> u64) -> String {
    let listener = loopback().await;
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut opts = AppOptions::new(US, node).expect("options");
    opts.seed = 7;
    opts.now_ms = now_ms;
    tokio::spawn(async move {
        serve(opts, listener, std::future::pending())
            .await
            .expect("app serves");
    });
    base
}

/// The app of us-east-1 in front of its node, which replicates with eu-west-1's node (or, with
/// `eu = false`, has its eu-west-1 peer unreachable, so sync writes miss their quorum).
struct World {
    app: String,
    client: reqwest::Client,
    _nodes: Vec<RunningNode>,
}

impl World {
    async fn new(eu: bool) -> World {
        let us_listener = loopback().await;
        let us_url = format!("http://{}", us_listener.local_addr().expect("addr"));
        let mut nodes = Vec::new();
        let eu_url = if eu {
            let eu_listener = loopback().await;
            let url = format!("http://{}", eu_listener.local_addr().expect("addr"));
            let peers = BTreeMap::from([(US.to_string(), us_url.clone())]);
            nodes.push(start_node(EU, eu_listener, peers).await);
            url
        } else {
            closed_port().await
        };
        let peers = BTreeMap::from([(EU.to_string(), eu_url)]);
        let us = start_node(US, us_listener, peers).await;
        nodes.push(us);
        for n in &nodes {
            n.wait_ready().await;
        }
        let app = start_app(&nodes[nodes.len() - 1].base).await;
        World {
            app,
            client: reqwest::Client::new(),
            _nodes: nodes,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app)
    }
}

/// The `error.code` of a JSON error response; panics unless it has a code, message and hint.
async fn error_code(resp: reqwest::Response) -> String {
    assert_eq!(
        resp.headers()["meridian-region"],
        US,
        "errors name the region too"
    );
    let text = resp.text().await.expect("body");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let err = &v["error"];
    assert!(
        err["message"].is_string() && err["hint"].is_string(),
        "error without message/hint: {v}"
    );
    err["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {v}"))
        .to_string()
}

#[tokio::test]
async fn messages_are_appended_and_read_back_in_order() {
    let w = World::new(true).await;
    let post = |text: &str, key: Option<&str>| {
        let mut req = w
            .client
            .post(w.url("/conversations/c-1/messages"))
            .json(&json!({"author": "ada", "text": text}));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.send()
    };
    // Posted in an order that differs from the ids' order, a few ms apart: read back by time.
    let r = post("first", Some("m-b")).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["meridian-region"], US);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"conversation": "c-1", "message": "m-b", "region": US})
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = post("second", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let second: Value = r.json().await.unwrap();
    let second_id = second["message"].as_str().unwrap().to_string();
    assert_eq!(second_id.len(), 16, "a random message id is 16 hex digits");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = post("third", Some("m-a")).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A retry under the same key is the first outcome, not another message.
    let r = post("first", Some("m-b")).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    // The same key for another message is refused.
    let r = post("not the first", Some("m-b")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(r).await, "idempotency_key_reused");

    let r = w
        .client
        .get(w.url("/conversations/c-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["conversation"], "c-1");
    let messages = body["messages"].as_array().unwrap();
    let ids: Vec<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m-b", second_id.as_str(), "m-a"], "{body}");
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second", "third"]);
    assert!(messages.iter().all(|m| m["author"] == "ada"));
    assert!(messages[0]["at_ms"].as_u64().unwrap() < messages[1]["at_ms"].as_u64().unwrap());

    let r = w
        .client
        .get(w.url("/conversations/none"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "not_found");
}

#[tokio::test]
async fn messages_of_the_same_millisecond_are_ordered_by_id() {
    let node = start_node(US, loopback().await, BTreeMap::new()).await;
    node.wait_ready().await;
    let app = start_app_with_clock(&node.base, || 1_700_000_000_000).await;
    let client = reqwest::Client::new();
    for key in ["m-c", "m-a", "m-b"] {
        let r = client
            .post(format!("{app}/conversations/c-2/messages"))
            .header("idempotency-key", key)
            .json(&json!({"author": "ada", "text": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let body: Value = client
        .get(format!("{app}/conversations/c-2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m-a", "m-b", "m-c"], "{body}");
    assert_eq!(body["messages"][0]["at_ms"], 1_700_000_000_000u64);
}

#[tokio::test]
async fn checkout_with_the_same_key_is_the_same_order() {
    let w = World::new(true).await;
    let order = json!({"user": "ada", "items": ["book", "pen"], "total_cents": 1299});
    let checkout = |body: Value| {
        w.client
            .post(w.url("/checkout"))
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
    };
    let r = checkout(order.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(!r.headers().contains_key("idempotent-replayed"));
    let first: Value = r.json().await.unwrap();
    assert_eq!(first, json!({"order": "o-k-1", "region": US}));

    let r = checkout(order.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap(), first);

    let r = checkout(json!({"user": "ada", "items": ["car"], "total_cents": 1}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(r).await, "idempotency_key_reused");

    let r = w.client.get(w.url("/orders/o-k-1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["total_cents"], 1299);
    assert_eq!(stored["items"], json!(["book", "pen"]));
}

#[tokio::test]
async fn checkout_without_a_key_is_refused() {
    let w = World::new(true).await;
    let r = w
        .client
        .post(w.url("/checkout"))
        .json(&json!({"user": "ada", "items": ["book"], "total_cents": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "idempotency_key_required");
}

#[tokio::test]
async fn checkout_without_a_quorum_is_not_a_success() {
    let w = World::new(false).await;
    let r = w
        .client
        .post(w.url("/checkout"))
        .header("idempotency-key", "k-2")
        .json(&json!({"user": "ada", "items": ["book"], "total_cents": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "node_unavailable", "{v}");
    assert!(
        text.contains("quorum_unavailable"),
        "the node's error is in the message: {text}"
    );
}

#[tokio::test]
async fn a_profile_homed_in_another_zone_is_replayed_there() {
    let w = World::new(true).await;
    let r = w
        .client
        .put(w.url("/profiles/ada"))
        .header("meridian-home", EU)
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-replay"], "region=eu-west-1");
    assert_eq!(error_code(r).await, "residency");

    // Homed here, it is written and read here.
    let r = w
        .client
        .put(w.url("/profiles/bob"))
        .json(&json!({"name": "Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = w.client.get(w.url("/profiles/bob")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"name": "Bob"}));

    // A read of a profile not held here, whose client names its home, is replayed there too.
    let r = w
        .client
        .get(w.url("/profiles/ada"))
        .header("meridian-home", EU)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-replay"], "region=eu-west-1");

    let r = w
        .client
        .put(w.url("/profiles/ada"))
        .json(&json!(["not", "an", "object"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "bad_body");
}

#[tokio::test]
async fn sessions_are_created_and_read() {
    let w = World::new(true).await;
    let r = w
        .client
        .post(w.url("/sessions"))
        .json(&json!({"user": "ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let id = body["session"].as_str().unwrap();
    assert_eq!(id.len(), 24, "{body}");
    assert_eq!(body["region"], US);
    let r = w
        .client
        .get(w.url(&format!("/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let session: Value = r.json().await.unwrap();
    assert_eq!(session["user"], "ada");
    assert_eq!(session["region"], US);
}

#[tokio::test]
async fn ready_follows_the_node() {
    let w = World::new(true).await;
    let r = w.client.get(w.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let app = start_app(&closed_port().await).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{app}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["meridian-region"], US);
    let r = client
        .get(format!("{app}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await, "node_unavailable");
    // Data requests fail the same way, so the edge fails over.
    let r = client
        .get(format!("{app}/orders/o-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await, "node_unavailable");
}

#[tokio::test]
async fn bad_input_is_refused_with_json_errors() {
    let w = World::new(true).await;
    let long = "x".repeat(129);
    for path in [
        "/conversations/a%2Fb".to_string(),
        "/conversations/%FF".to_string(),
        format!("/conversations/{long}"),
        "/orders/a%20b".to_string(),
        "/sessions/%C3%A9".to_string(),
    ] {
        let r = w.client.get(w.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_code(r).await, "bad_id", "{path}");
    }
    let r = w
        .client
        .post(w.url("/conversations/c/messages"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "bad_body");
    let r = w
        .client
        .post(w.url("/conversations/c/messages"))
        .json(&json!({"author": "", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_body");
    let r = w
        .client
        .post(w.url("/checkout"))
        .header("idempotency-key", "a b")
        .json(&json!({"user": "ada", "items": ["book"], "total_cents": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "bad_idempotency_key");
    let r = w
        .client
        .post(w.url("/sessions"))
        .json(&json!({"user": "a/b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "bad_id");
    let r = w
        .client
        .post(w.url("/checkout"))
        .header("idempotency-key", "k")
        .body(vec![b'x'; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "body_too_large");
    let r = w.client.get(w.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "no_such_route");
    let r = w.client.delete(w.url("/checkout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "method_not_allowed");
}

#[tokio::test]
async fn the_session_token_goes_to_the_node_and_comes_back() {
    let w = World::new(true).await;
    let r = w
        .client
        .post(w.url("/conversations/c-9/messages"))
        .json(&json!({"author": "ada", "text": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = r.headers()["meridian-session"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(token.contains(US), "{token}");

    // The token covers the write: the session read is served here, with the token back.
    let r = w
        .client
        .get(w.url("/conversations/c-9"))
        .header("meridian-session", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("meridian-session"));

    // A token naming writes neither region has is never answered with what is here: the app
    // passed it on and the node asked for them (waited, forwarded, refused).
    let begun = std::time::Instant::now();
    let r = w
        .client
        .get(w.url("/conversations/c-9"))
        .header("meridian-session", format!("{token},{EU}:999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session_not_visible"),
        "{body}"
    );
    assert!(begun.elapsed() >= std::time::Duration::from_secs(1));

    // Without a token the same read is a plain local read.
    let r = w
        .client
        .get(w.url("/conversations/c-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
