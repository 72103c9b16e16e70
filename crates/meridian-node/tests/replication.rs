//! Three region nodes on loopback replicating to each other: convergence of every type, sync
//! quorum acknowledgement and refusal, residency, third-origin forwarding, authentication,
//! conflicts surfaced, catch-up after a restart, and reads forwarded for `session` and
//! `strong` consistency while replication into the reading region is held back.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use meridian_node::{Node, NodeConfig, clock::SystemClock};
use meridian_store::{Store, StoreOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

const SECRET: &str = "replication-test-secret-0123456789";
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

const TOPOLOGY: &str = r#"
[cluster]
name = "repl"

[zones]
eu = ["eu-west-1"]
us = ["us-east-1"]
apac = ["ap-southeast-1"]

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:1"

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:2"

[[region]]
name = "ap-southeast-1"
node = "http://127.0.0.1:3"

[[keyspace]]
name = "reg"
type = "register"

[[keyspace]]
name = "cnt"
type = "counter"

[[keyspace]]
name = "tags"
type = "set"

[[keyspace]]
name = "docs"
type = "map"

[[keyspace]]
name = "orders"
type = "register"
replication = "sync"
quorum = 2
sync_timeout = "700ms"

[[keyspace]]
name = "eu_only"
type = "register"
residency = "eu"

[[keyspace]]
name = "pair"
type = "register"
residency = ["us-east-1", "eu-west-1"]

[[keyspace]]
name = "scratch"
type = "register"
replication = "local"

[[keyspace]]
name = "accounts"
type = "register"
writer = "home"
forward = true

[[keyspace]]
name = "ledger"
type = "register"
writer = "home"

[limits]
session_wait = "300ms"
"#;

/// A running node; dropping `stop` shuts it down and releases its data directory.
struct Running {
    base: String,
    node: Node,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

struct World {
    dirs: BTreeMap<&'static str, tempfile::TempDir>,
    addrs: BTreeMap<&'static str, String>,
    nodes: BTreeMap<&'static str, Running>,
    /// The listeners that chose each region's address, held until its first start: dropped
    /// and bound again, a port could be taken by another test's listener in between.
    reserved: BTreeMap<&'static str, std::net::TcpListener>,
    client: reqwest::Client,
}

impl World {
    async fn new() -> World {
        let mut dirs = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut reserved = BTreeMap::new();
        for r in REGIONS {
            dirs.insert(r, tempfile::tempdir().expect("tempdir"));
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            addrs.insert(r, l.local_addr().expect("addr").to_string());
            reserved.insert(r, l);
        }
        let mut w = World {
            dirs,
            addrs,
            nodes: BTreeMap::new(),
            reserved,
            client: reqwest::Client::new(),
        };
        for r in REGIONS {
            w.start(r, &[]).await;
        }
        for r in REGIONS {
            w.wait_ready(r).await;
        }
        w
    }

    /// Waits until `region` answers `/health/ready` 200: new stores first join their peers.
    async fn wait_ready(&self, region: &str) {
        common::wait_ready(&self.client, &self.url(region, "")).await;
    }

    /// Starts `region`; peers listed in `cut` are given an unreachable URL (a partition of the
    /// links this node pulls on).
    async fn start(&mut self, region: &'static str, cut: &[&str]) {
        let via = cut
            .iter()
            .map(|p| (p.to_string(), "http://127.0.0.1:9".to_string()))
            .collect();
        self.start_via(region, via).await;
    }

    /// Starts `region`, reaching the peers named in `via` at the given URLs (a relay, a black
    /// hole) and the others directly, as `--peer REGION=URL` does.
    async fn start_via(&mut self, region: &'static str, via: BTreeMap<String, String>) {
        self.start_on(region, TOPOLOGY, &via).await;
    }

    /// [`World::start_via`] with the topology file `text` instead of [`TOPOLOGY`].
    async fn start_on(&mut self, region: &'static str, text: &str, via: &BTreeMap<String, String>) {
        let topology = meridian_core::config::parse("repl.toml", text).expect("topology");
        let peer_urls = REGIONS
            .iter()
            .filter(|p| **p != region)
            .map(|p| {
                let url = via
                    .get(*p)
                    .cloned()
                    .unwrap_or_else(|| format!("http://{}", self.addrs[p]));
                (p.to_string(), url)
            })
            .collect();
        let config = NodeConfig {
            secret: Some(SECRET.into()),
            peer_urls,
            ..NodeConfig::default()
        };
        let store = Store::open(self.dirs[region].path(), StoreOptions::default()).expect("store");
        let node = Node::new(
            Arc::new(topology),
            region,
            store,
            Arc::new(SystemClock),
            config,
        )
        .expect("node");
        let handle = node.clone();
        let listener = match self.reserved.remove(region) {
            Some(l) => {
                l.set_nonblocking(true).expect("nonblocking");
                tokio::net::TcpListener::from_std(l).expect("listener")
            }
            None => bind_retry(&self.addrs[region]).await,
        };
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            meridian_node::serve(node, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        let base = format!("http://{}", self.addrs[region]);
        self.nodes.insert(
            region,
            Running {
                base,
                node: handle,
                stop,
                done,
            },
        );
    }

    async fn stop(&mut self, region: &str) {
        let r = self.nodes.remove(region).expect("running");
        let _ = r.stop.send(());
        r.done.await.expect("server task");
    }

    /// Creates `path` (value `v1`) at `home`, naming it the key's home, and waits until every
    /// region has applied it (a marker counter written after it reaches 1 everywhere; call it
    /// once per world).
    async fn create_replicated(&self, home: &str, path: &str) {
        let r = self
            .client
            .put(self.url(home, path))
            .header("meridian-home", home)
            .body("v1")
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), StatusCode::CREATED);
        self.client
            .post(self.url(home, "/v1/kv/cnt/marker/incr"))
            .send()
            .await
            .expect("marker");
        self.converged("/v1/kv/cnt/marker", &json!(1)).await;
    }

    fn url(&self, region: &str, path: &str) -> String {
        format!("{}{path}", self.nodes[region].base)
    }

    /// `/v1/admin/status` of `region`, with the admin token.
    async fn status(&self, region: &str) -> Value {
        self.client
            .get(self.url(region, "/v1/admin/status"))
            .bearer_auth(SECRET)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status JSON")
    }

    /// The body of `GET path` at `region`, as text.
    async fn get_text(&self, region: &str, path: &str) -> String {
        self.client
            .get(self.url(region, path))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body")
    }

    async fn get_json(&self, region: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.url(region, path))
            .send()
            .await
            .expect("get");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until every running region gives the same 200 JSON for `path`, or panics.
    async fn converged(&self, path: &str, want: &Value) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut seen = Vec::new();
            for r in self.nodes.keys() {
                seen.push((r.to_string(), self.get_json(r, path).await));
            }
            if seen
                .iter()
                .all(|(_, (s, v))| *s == StatusCode::OK && v == want)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not converge to {want}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn bind_retry(addr: &str) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_converges_in_every_region() {
    let w = World::new().await;
    let c = &w.client;
    for (i, r) in REGIONS.iter().enumerate() {
        c.put(w.url(r, &format!("/v1/kv/reg/from-{r}")))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        for _ in 0..5 {
            c.post(w.url(r, "/v1/kv/cnt/likes/incr"))
                .body(r#"{"by":2}"#)
                .send()
                .await
                .unwrap();
        }
        c.post(w.url(r, "/v1/kv/tags/t/add"))
            .body(json!({"members": [r]}).to_string())
            .send()
            .await
            .unwrap();
        c.patch(w.url(r, "/v1/kv/docs/conv"))
            .body(json!({ format!("m-{r}"): i }).to_string())
            .send()
            .await
            .unwrap();
    }
    w.converged("/v1/kv/cnt/likes", &json!(30)).await;
    let mut all: Vec<&str> = REGIONS.to_vec();
    all.sort();
    w.converged("/v1/kv/tags/t", &json!(all)).await;
    w.converged(
        "/v1/kv/docs/conv",
        &json!({"m-us-east-1": 0, "m-eu-west-1": 1, "m-ap-southeast-1": 2}),
    )
    .await;
    for (i, r) in REGIONS.iter().enumerate() {
        for other in REGIONS {
            let body = c
                .get(w.url(other, &format!("/v1/kv/reg/from-{r}")))
                .send()
                .await
                .unwrap();
            assert_eq!(
                body.text().await.unwrap(),
                format!("v{i}"),
                "{r}'s write in {other}"
            );
        }
    }
    // A delete replicates: no region serves the key afterwards.
    c.delete(w.url("eu-west-1", "/v1/kv/reg/from-us-east-1"))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in REGIONS {
        loop {
            let s = c
                .get(w.url(r, "/v1/kv/reg/from-us-east-1"))
                .send()
                .await
                .unwrap()
                .status();
            if s == StatusCode::NOT_FOUND {
                break;
            }
            assert!(Instant::now() < deadline, "delete did not reach {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (code, _) = w.get_json("us-east-1", "/v1/admin/status").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "admin needs the token");
    // Every link comes up (a first connect may have found a peer not yet listening, then
    // backed off), reports the bytes it carried, and the peers acknowledge everything.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = w.status("us-east-1").await;
        let up = ["eu-west-1", "ap-southeast-1"].iter().all(|p| {
            status["peers"][p]["state"] == "up"
                && status["peers"][p]["bytes_sent"].as_u64().unwrap_or(0) > 0
                && status["peers"][p]["unacked_ops"] == 0
        });
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "links not all up and acknowledged: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_writes_wait_for_the_quorum_and_say_when_they_cannot() {
    let mut w = World::new().await;
    let c = w.client.clone();
    let started = Instant::now();
    let r = c
        .put(w.url("us-east-1", "/v1/kv/orders/o1"))
        .body("paid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert!(started.elapsed() < Duration::from_millis(700));
    // The quorum peer has it durably before the answer: read it there at once.
    let mut found = false;
    for peer in ["eu-west-1", "ap-southeast-1"] {
        let r = c.get(w.url(peer, "/v1/kv/orders/o1")).send().await.unwrap();
        found |= r.status() == StatusCode::OK;
    }
    assert!(
        found,
        "an acknowledged sync write must be on a second region"
    );

    w.stop("eu-west-1").await;
    w.stop("ap-southeast-1").await;
    let o2 = w.url("us-east-1", "/v1/kv/orders/o2");
    let send = || {
        c.put(&o2)
            .header("idempotency-key", "o2-once")
            .body("x")
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quorum_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown"),
        "{body}"
    );
    // A retry while the quorum is still missing says so again; once a peer is back it succeeds
    // as the same write (replayed, not applied twice).
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    w.start("eu-west-1", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = send().await.unwrap();
        if r.status() == StatusCode::CREATED {
            assert_eq!(r.headers()["idempotent-replayed"], "true");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "quorum never confirmed after the peer came back"
        );
    }
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/orders/o2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_and_local_keys_never_leave_their_regions() {
    let mut w = World::new().await;
    let c = w.client.clone();
    let canary = "CANARY-eu-only-7f3a91";
    let r = c
        .put(w.url("eu-west-1", "/v1/kv/eu_only/passport"))
        .body(canary)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let scratch = "CANARY-local-scratch-55aa";
    c.put(w.url("us-east-1", "/v1/kv/scratch/tmp"))
        .body(scratch)
        .send()
        .await
        .unwrap();
    // Markers written after both: entries apply in order per origin, so once the markers are
    // everywhere, every region has processed the pinned and the local write.
    c.post(w.url("eu-west-1", "/v1/kv/cnt/marker/incr"))
        .send()
        .await
        .unwrap();
    c.post(w.url("us-east-1", "/v1/kv/cnt/marker/incr"))
        .send()
        .await
        .unwrap();
    w.converged("/v1/kv/cnt/marker", &json!(2)).await;
    let r = c
        .get(w.url("us-east-1", "/v1/kv/eu_only/passport"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers()["meridian-allowed-region"], "eu-west-1");
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/scratch/tmp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "local keys stay home");
    for r in REGIONS {
        w.stop(r).await;
    }
    for (region, dir) in &w.dirs {
        let found_eu = grep_dir(dir.path(), canary.as_bytes());
        let found_local = grep_dir(dir.path(), scratch.as_bytes());
        assert_eq!(
            found_eu,
            *region == "eu-west-1",
            "eu canary in {region}'s files: {found_eu}"
        );
        assert_eq!(
            found_local,
            *region == "us-east-1",
            "local canary in {region}: {found_local}"
        );
    }
}

fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_a_region_that_cannot_reach_their_origin() {
    let mut w = World::new().await;
    // ap-southeast-1 cannot pull from us-east-1: us-east-1's writes must come through eu-west-1.
    w.stop("ap-southeast-1").await;
    w.start("ap-southeast-1", &["us-east-1"]).await;
    let c = w.client.clone();
    for i in 0..20 {
        c.post(w.url("us-east-1", "/v1/kv/cnt/relayed/incr"))
            .body(format!("{{\"by\":{i}}}"))
            .send()
            .await
            .unwrap();
    }
    w.converged("/v1/kv/cnt/relayed", &json!(190)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_peers_are_refused() {
    let w = World::new().await;
    let c = &w.client;
    let r = c
        .get(w.url("us-east-1", "/v1/repl/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let forged = meridian_node::repl::auth::header("not-the-cluster-secret", "eu-west-1", now_ms());
    let r = c
        .get(w.url("us-east-1", "/v1/repl/stream"))
        .header("authorization", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated_peer");
    let stranger = meridian_node::repl::auth::header(SECRET, "mars-1", now_ms());
    let r = c
        .get(w.url("us-east-1", "/v1/repl/stream"))
        .header("authorization", stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn now_ms() -> u64 {
    use meridian_node::clock::Clock as _;
    SystemClock.wall_ms()
}

/// Two regions write the same register while they cannot reach each other; after the heal both
/// hold the same winner (highest HLC, then origin) and the overwrite is listed as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overwrites_converge_and_are_reported() {
    let mut w = World::new().await;
    w.stop("us-east-1").await;
    w.stop("eu-west-1").await;
    w.start("us-east-1", &["eu-west-1", "ap-southeast-1"]).await;
    w.start("eu-west-1", &["us-east-1", "ap-southeast-1"]).await;
    w.stop("ap-southeast-1").await;
    let c = w.client.clone();
    c.put(w.url("us-east-1", "/v1/kv/reg/contested"))
        .body("from-us")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.put(w.url("eu-west-1", "/v1/kv/reg/contested"))
        .body("from-eu")
        .send()
        .await
        .unwrap();
    w.stop("us-east-1").await;
    w.stop("eu-west-1").await;
    w.start("us-east-1", &[]).await;
    w.start("eu-west-1", &[]).await;
    w.start("ap-southeast-1", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut vals = Vec::new();
        for r in REGIONS {
            let resp = c
                .get(w.url(r, "/v1/kv/reg/contested"))
                .send()
                .await
                .unwrap();
            vals.push(resp.text().await.unwrap());
        }
        if vals.iter().all(|v| v == "from-eu") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence on the later write: {vals:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reported = 0;
    for r in ["us-east-1", "eu-west-1"] {
        let (_, v) = w.get_json(r, "/v1/conflicts").await;
        reported += v["conflicts"].as_array().map(|a| a.len()).unwrap_or(0);
    }
    assert!(
        reported >= 1,
        "the overwrite of a concurrent write must be reported"
    );
    let mut in_status = 0;
    for r in ["us-east-1", "eu-west-1"] {
        let v = w.status(r).await;
        in_status += v["conflicts"]["reg"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        in_status as usize, reported,
        "status counts conflicts per keyspace"
    );
    // The same in the metrics (one recorder per test process, so at least these), with each
    // link's egress, unacknowledged ops and lag.
    let metrics = w.get_text("us-east-1", "/metrics").await;
    let sample = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert!(
        sample("meridian_conflicts_total{keyspace=\"reg\"}").unwrap_or(0.0) >= reported as f64,
        "{metrics}"
    );
    for peer in ["us-east-1", "eu-west-1"] {
        let sent = sample(&format!(
            "meridian_repl_sent_bytes_total{{peer=\"{peer}\"}}"
        ));
        assert!(sent.unwrap_or(0.0) > 0.0, "egress to {peer}: {metrics}");
        for gauge in ["meridian_repl_unacked_ops", "meridian_repl_lag_seconds"] {
            let value = sample(&format!("{gauge}{{peer=\"{peer}\"}}"));
            assert!(
                value.is_some_and(|v| v >= 0.0),
                "{gauge} of {peer}: {metrics}"
            );
        }
    }
}

/// Whether ap-southeast-1, which the pinned keyspaces exclude, keeps no digest of them.
fn ap_node_digests_nothing_pinned(w: &World) -> bool {
    let ap = &w.nodes["ap-southeast-1"].node;
    ["eu_only", "pair"]
        .iter()
        .all(|ks| ap.digests().get(ks).is_none())
}

/// A record that silently differs under the same version (as after a bit flip or a bad restore)
/// is found by digest comparison and repaired the same way on both sides — in a keyspace pinned
/// to two regions too, compared between those two only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_comparison_repairs_silent_divergence() {
    use meridian_core::record::{Record, Value};
    use meridian_node::repl::digest::{HttpPeer, SETTLE, compare_and_repair};
    let mut w = World::new().await;
    let c = w.client.clone();
    for ks in ["reg", "pair"] {
        c.put(w.url("us-east-1", &format!("/v1/kv/{ks}/k")))
            .body("original")
            .send()
            .await
            .unwrap();
    }
    c.post(w.url("us-east-1", "/v1/kv/cnt/marker/incr"))
        .send()
        .await
        .unwrap();
    w.converged("/v1/kv/cnt/marker", &json!(1)).await;
    let us_url = w.nodes["us-east-1"].base.clone();
    let started = std::time::Instant::now();
    let repair = |node: &meridian_node::Node, region: &str, url: &str| {
        let dialer = std::sync::Arc::new(meridian_node::repl::dial::TcpDialer);
        let (node, peer) = (
            node.clone(),
            HttpPeer::new(node.clone(), dialer, region, url).unwrap(),
        );
        async move {
            compare_and_repair(&node, &peer, SETTLE, &mut 0)
                .await
                .unwrap()
        }
    };
    let repaired = repair(&w.nodes["eu-west-1"].node, "us-east-1", &us_url).await;
    assert_eq!(repaired, 0, "converged replicas have nothing to repair");
    assert!(
        started.elapsed() < SETTLE,
        "equal digests at the first look need no second one"
    );

    w.stop("eu-west-1").await;
    {
        let store = Store::open(w.dirs["eu-west-1"].path(), StoreOptions::default()).unwrap();
        for ks in ["reg", "pair"] {
            let key = meridian_node::keys::data_key(ks, "k");
            let mut rec = Record::decode(
                &store
                    .get(meridian_store::Table::Data, &key)
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
            let Value::Register(r) = &mut rec.value else {
                panic!("a register")
            };
            r.value = Some(bytes::Bytes::from_static(b"bit-rotted"));
            let bytes = rec.encode();
            store
                .transact_blocking(move |txn| txn.put(meridian_store::Table::Data, &key, &bytes))
                .unwrap();
        }
    }
    w.start("eu-west-1", &[]).await;
    for ks in ["reg", "pair"] {
        let eu = w.get_text("eu-west-1", &format!("/v1/kv/{ks}/k")).await;
        assert_eq!(
            eu, "bit-rotted",
            "the divergence is in place before the repair"
        );
    }

    let us_node = w.nodes["us-east-1"].node.clone();
    let eu_node = w.nodes["eu-west-1"].node.clone();
    let eu_url = w.nodes["eu-west-1"].base.clone();
    // ap-southeast-1 is compared with, but nothing of the pinned keyspace is asked of it.
    let ap_url = w.nodes["ap-southeast-1"].base.clone();
    assert_eq!(repair(&us_node, "ap-southeast-1", &ap_url).await, 0);
    let a = repair(&us_node, "eu-west-1", &eu_url).await;
    let b = repair(&eu_node, "us-east-1", &us_url).await;
    assert!(a + b >= 2, "both divergent records must be repaired");
    let metrics = w.get_text("us-east-1", "/metrics").await;
    let counted = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("keyspace=\"reg\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(
        counted("meridian_repl_digest_records_fetched_total") >= 1.0
            && counted("meridian_repl_digest_keys_compared_total")
                >= counted("meridian_repl_digest_records_fetched_total"),
        "the comparison's traffic is counted: {metrics}"
    );
    for ks in ["reg", "pair"] {
        let us = w.get_text("us-east-1", &format!("/v1/kv/{ks}/k")).await;
        let eu = w.get_text("eu-west-1", &format!("/v1/kv/{ks}/k")).await;
        assert_eq!(us, eu, "both sides settle on the same value ({ks})");
    }
    let scanned = |n: &meridian_node::Node| {
        meridian_node::repl::digest::scan_digests(n.store(), "reg").unwrap()
    };
    assert_eq!(scanned(&us_node), scanned(&eu_node));
    for n in [&us_node, &eu_node] {
        assert_eq!(
            n.digests().get("reg"),
            Some(scanned(n)),
            "the kept digests follow the repair"
        );
    }
    // Nothing of a pinned keyspace is digested for a region it excludes (asked of a region
    // it excludes, or by one), so no digest of a pinned key leaves its zone.
    let ask = |at: &str, path: &str, by: &str| {
        c.get(w.url(at, path))
            .header(
                "authorization",
                meridian_node::repl::auth::header(SECRET, by, now_ms()),
            )
            .send()
    };
    for (at, path, by) in [
        ("us-east-1", "/v1/repl/digest/eu_only", "eu-west-1"),
        ("us-east-1", "/v1/repl/digest/pair", "ap-southeast-1"),
        ("us-east-1", "/v1/repl/hashes/pair/0,1", "ap-southeast-1"),
        ("ap-southeast-1", "/v1/repl/digest/pair", "us-east-1"),
    ] {
        let r = ask(at, path, by).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path} at {at} for {by}");
        assert_eq!(error_of(r).await.0, "not_digested");
    }
    assert!(ap_node_digests_nothing_pinned(&w));
    let r = ask("us-east-1", "/v1/repl/digest/pair", "eu-west-1")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "between the regions it allows");
    let as_peer = |path: &str| ask("us-east-1", path, "eu-west-1");
    // A page position that is not base64url is refused, saying what it should be.
    let r = as_peer("/v1/repl/hashes/reg/0,1?after=not*base64")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await.0, "bad_after");
    // A records request must be a list of at most RECORDS_PER_REQUEST keys.
    let records = |body: Vec<u8>| {
        c.post(w.url("us-east-1", "/v1/repl/records/reg"))
            .header(
                "authorization",
                meridian_node::repl::auth::header(SECRET, "eu-west-1", now_ms()),
            )
            .body(body)
            .send()
    };
    let r = records(vec![0xff; 3]).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await.0, "bad_keys");
    let mut trailing = postcard::to_stdvec(&[b"reg\0k".to_vec()]).unwrap();
    trailing.push(0);
    let r = records(trailing).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await.0, "bad_keys");
    let many = vec![b"reg\0k".to_vec(); meridian_node::repl::digest::RECORDS_PER_REQUEST + 1];
    let r = records(postcard::to_stdvec(&many).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await.0, "too_many_keys");
    let r = c
        .post(w.url("us-east-1", "/v1/repl/records/reg"))
        .body(postcard::to_stdvec(&many[..1]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "peers only");
}

/// A TTL is an absolute HLC expiry carried by the value: every region serves the key until the
/// same instant and none after it, including a region cut off from the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_at_the_same_instant_everywhere() {
    let mut w = World::new().await;
    let c = w.client.clone();
    let r = c
        .put(w.url("us-east-1", "/v1/kv/reg/session"))
        .header("meridian-ttl", "4s")
        .body("s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let written = Instant::now();
    c.post(w.url("us-east-1", "/v1/kv/cnt/marker/incr"))
        .send()
        .await
        .unwrap();
    w.converged("/v1/kv/cnt/marker", &json!(1)).await;
    // Cut ap-southeast-1 off from everyone: it must still expire the key on time.
    w.stop("ap-southeast-1").await;
    w.start("ap-southeast-1", &["us-east-1", "eu-west-1"]).await;
    for r in REGIONS {
        let s = c
            .get(w.url(r, "/v1/kv/reg/session"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, StatusCode::OK, "{r} serves the key before its expiry");
    }
    assert!(
        written.elapsed() < Duration::from_millis(3500),
        "the checks above took too long"
    );
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(written.elapsed())).await;
    for r in REGIONS {
        let s = c
            .get(w.url(r, "/v1/kv/reg/session"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "{r} serves the key after its expiry"
        );
    }
}

/// An expired set and counter are not only hidden but collected in every region, over the real
/// streams: the watermarks travel on them, the region that wrote the values last resets them,
/// and the reset's tombstone is collected like a delete's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sets_and_counters_are_collected_everywhere() {
    let w = World::new().await;
    let c = &w.client;
    let r = c
        .post(w.url("us-east-1", "/v1/kv/tags/expiring/add"))
        .header("meridian-ttl", "1s")
        .json(&json!({"members": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(w.url("eu-west-1", "/v1/kv/cnt/expiring/incr"))
        .header("meridian-ttl", "1s")
        .json(&json!({"by": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let held = |ks: &str| -> Vec<&str> {
        let key = meridian_node::keys::data_key(ks, "expiring");
        REGIONS
            .iter()
            .copied()
            .filter(|r| {
                let store = w.nodes[r].node.store();
                matches!(store.get(meridian_store::Table::Data, &key), Ok(Some(_)))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = (held("tags"), held("cnt"));
        if left.0.is_empty() && left.1.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s on, still held (set, counter): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in REGIONS {
        let s = c
            .get(w.url(r, "/v1/kv/tags/expiring"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, StatusCode::NOT_FOUND, "{r}");
        let status = w.status(r).await;
        for p in REGIONS.iter().filter(|p| **p != r) {
            let mark = status["peers"][p]["watermark_ms"].as_u64();
            assert!(mark.is_some(), "{r} shows {p}'s watermark: {status}");
        }
    }
}

/// A write to a `writer = "home"`, `forward = true` keyspace made in another region is forwarded
/// to the key's home and answered from there — once: a forwarded request is never forwarded on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_forwarded_to_the_home_region() {
    let w = World::new().await;
    let c = &w.client;
    w.create_replicated("eu-west-1", "/v1/kv/accounts/alice")
        .await;
    let r = c
        .put(w.url("us-east-1", "/v1/kv/accounts/alice"))
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "forwarded and applied at the home"
    );
    assert_eq!(r.headers()["meridian-region"], "eu-west-1");
    let at_home = c
        .get(w.url("eu-west-1", "/v1/kv/accounts/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        at_home.text().await.unwrap(),
        "v2",
        "the home has it at once"
    );
    let r = c
        .put(w.url("us-east-1", "/v1/kv/accounts/alice"))
        .header("meridian-forwarded", "ap-southeast-1")
        .body("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "no second hop");
}

/// A region's change feed carries the changes it applies from other regions, each naming the
/// region that made it, once durably applied there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feeds_carry_replicated_changes() {
    let w = World::new().await;
    let c = w.client.clone();
    let mut feeds = Vec::new();
    for region in ["eu-west-1", "ap-southeast-1"] {
        let r = c
            .get(w.url(region, "/v1/watch/docs?prefix=feed-"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        feeds.push((region, r));
    }
    let r = c
        .patch(w.url("us-east-1", "/v1/kv/docs/feed-1"))
        .body(r#"{"title":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    for (region, mut feed) in feeds {
        let mut seen = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains("feed-1") {
            let chunk = tokio::time::timeout_at(deadline, feed.chunk())
                .await
                .unwrap_or_else(|_| panic!("{region}: no event in time: {seen}"))
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(
            seen.contains("\"region\":\"us-east-1\""),
            "{region}: {seen}"
        );
        assert!(seen.contains(&etag), "{region} names the version: {seen}");
        let (_, body) = w.get_json(region, "/v1/kv/docs/feed-1").await;
        assert_eq!(body["title"], "hello", "{region} serves it once announced");
    }
}

/// A conditional write sent to a region that is not the key's home is refused there as
/// misdirected (421 naming the home) before its precondition is judged: that region's copy may
/// be older than the home's, and a 412 judged on it would refuse what the home accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_write_outside_the_home_is_misdirected_not_judged_on_a_stale_copy() {
    let mut w = World::new().await;
    let c = w.client.clone();
    w.create_replicated("eu-west-1", "/v1/kv/ledger/bob").await;
    // us-east-1 keeps v1: it no longer hears from the other regions.
    w.stop("us-east-1").await;
    w.start("us-east-1", &["eu-west-1", "ap-southeast-1"]).await;
    let r = c
        .put(w.url("eu-west-1", "/v1/kv/ledger/bob"))
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(w.get_text("us-east-1", "/v1/kv/ledger/bob").await, "v1");
    for (header, value) in [("if-match", etag.as_str()), ("if-none-match", "*")] {
        let r = c
            .put(w.url("us-east-1", "/v1/kv/ledger/bob"))
            .header(header, value)
            .body("v3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{header}");
        assert_eq!(r.headers()["meridian-home"], "eu-west-1");
    }
    let r = c
        .put(w.url("eu-west-1", "/v1/kv/ledger/bob"))
        .header("if-match", &etag)
        .body("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the home accepts it");
}

/// A create-only write (`If-None-Match: *`) of the same new keys sent to every region at once,
/// without `Meridian-Home`: each key's first write is taken once, at its default home (the
/// others are forwarded there and find it taken) — never once per region, as a "homed where
/// created" rule would let happen while replication lags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_is_created_once_whichever_regions_are_asked() {
    let w = World::new().await;
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"];
    for i in 0..12 {
        let key = format!("/v1/kv/accounts/new-{i}");
        let tries = regions.map(|region| {
            w.client
                .put(w.url(region, &key))
                .header("if-none-match", "*")
                .body(region)
                .send()
        });
        let statuses: Vec<StatusCode> = futures_util::future::join_all(tries)
            .await
            .into_iter()
            .map(|r| r.unwrap().status())
            .collect();
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        assert_eq!(created, 1, "{key}: {statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| [StatusCode::CREATED, StatusCode::PRECONDITION_FAILED].contains(s)),
            "{key}: {statuses:?}"
        );
    }
}

/// With every link up, a region's writes reach each peer once — from the region itself, not
/// again forwarded by a third region — so egress is not doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_crosses_each_link_once() {
    let w = World::new().await;
    let c = &w.client;
    // Values LZ4 cannot shrink, so byte counts reflect what crossed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        let value: String = (0..500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:02x}", x as u8)
            })
            .collect();
        let url = w.url("us-east-1", &format!("/v1/kv/reg/big-{i}"));
        c.put(url).body(value).send().await.unwrap();
    }
    c.post(w.url("us-east-1", "/v1/kv/cnt/marker/incr"))
        .send()
        .await
        .unwrap();
    w.converged("/v1/kv/cnt/marker", &json!(1)).await;
    let status = w.status("ap-southeast-1").await;
    let from_us = status["peers"]["us-east-1"]["bytes_received"]
        .as_u64()
        .unwrap();
    let from_eu = status["peers"]["eu-west-1"]["bytes_received"]
        .as_u64()
        .unwrap();
    assert!(
        from_us > 150_000,
        "us-east-1's writes come from us-east-1: {status}"
    );
    assert!(
        from_eu < from_us / 10,
        "and are not forwarded again by eu-west-1: {status}"
    );
}

/// An HTTP relay in front of one node, standing in for a WAN link that can be held: requests
/// pass through, except that while `hold` is set, replication (`/v1/repl/…`) is refused with 503
/// and open replication streams end. The node behind stays reachable for data API calls (the
/// forwarded reads) while replication from it is held back.
struct Relay {
    url: String,
    /// Data API requests (`/v1/kv/…`) passed through.
    kv_requests: Arc<AtomicUsize>,
}

struct RelayState {
    target: String,
    hold: watch::Receiver<bool>,
    kv_requests: Arc<AtomicUsize>,
    client: reqwest::Client,
}

async fn relay(target: &str, hold: watch::Receiver<bool>) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let kv_requests = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(RelayState {
        target: format!("http://{target}"),
        hold,
        kv_requests: kv_requests.clone(),
        client: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(pass).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Relay { url, kv_requests }
}

async fn pass(
    State(st): State<Arc<RelayState>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let repl = path.starts_with("/v1/repl/");
    if repl && *st.hold.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "held by the test relay").into_response();
    }
    if path.starts_with("/v1/kv/") {
        st.kv_requests.fetch_add(1, Ordering::SeqCst);
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    let sent = st
        .client
        .request(parts.method, format!("{}{path}", st.target))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(resp) = sent else {
        return (StatusCode::BAD_GATEWAY, "relay: target unreachable").into_response();
    };
    let status = resp.status();
    let mut headers = resp.headers().clone();
    headers.remove("transfer-encoding");
    headers.remove("connection");
    let upstream = resp.bytes_stream();
    let stream = futures_util::stream::unfold(
        (upstream, st.hold.clone()),
        move |(mut up, mut hold)| async move {
            let chunk = if repl {
                tokio::select! {
                    biased;
                    _ = hold.wait_for(|held| *held) => None,
                    c = up.next() => c,
                }
            } else {
                up.next().await
            };
            chunk.map(|c| (c.map_err(std::io::Error::other), (up, hold)))
        },
    );
    (status, headers, axum::body::Body::from_stream(stream)).into_response()
}

/// A listener that accepts connections and never answers: a region that is down without
/// refusing connections. Returns its URL.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// Three regions where eu-west-1 reaches its peers only through [`relay`]s sharing one hold
/// switch, starting as `held`: while it is set, nothing replicates into eu-west-1 (neither from
/// an origin nor through a third region), yet eu-west-1 can still forward reads to both.
async fn held_world(held: bool) -> (World, watch::Sender<bool>, BTreeMap<&'static str, Relay>) {
    let mut w = World::new().await;
    let (hold, rx) = watch::channel(held);
    let mut relays = BTreeMap::new();
    let mut via = BTreeMap::new();
    for peer in ["us-east-1", "ap-southeast-1"] {
        let r = relay(&w.addrs[peer], rx.clone()).await;
        via.insert(peer.to_string(), r.url.clone());
        relays.insert(peer, r);
    }
    w.stop("eu-west-1").await;
    w.start_via("eu-west-1", via).await;
    (w, hold, relays)
}

fn session_of(r: &reqwest::Response) -> String {
    r.headers()["meridian-session"]
        .to_str()
        .expect("token")
        .to_string()
}

async fn error_of(r: reqwest::Response) -> (String, String) {
    let v: Value = r.json().await.expect("JSON error");
    let text = |f: &str| v["error"][f].as_str().unwrap_or_default().to_string();
    (text("code"), text("hint"))
}

/// A session read in a region that has not yet received the session's write is answered by
/// the write's origin (never stale, never a 503 while the origin is reachable); a read that was
/// already forwarded is never forwarded again; a pinned key's read never leaves its zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_are_forwarded_to_the_origin_of_the_write() {
    let (w, _hold, relays) = held_world(true).await;
    let c = &w.client;
    let r = c
        .put(w.url("us-east-1", "/v1/kv/reg/cart"))
        .body("3 items")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = session_of(&r);
    let local = c
        .get(w.url("eu-west-1", "/v1/kv/reg/cart"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        local.status(),
        StatusCode::NOT_FOUND,
        "replication into eu-west-1 is held back"
    );
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/reg/cart?consistency=session"))
        .header("meridian-session", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["meridian-region"], "us-east-1");
    assert_eq!(r.text().await.unwrap(), "3 items");
    assert_eq!(relays["us-east-1"].kv_requests.load(Ordering::SeqCst), 1);

    // Already forwarded: answered from eu-west-1's own state at once, never sent on.
    let started = Instant::now();
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/reg/cart?consistency=session"))
        .header("meridian-session", &token)
        .header("meridian-forwarded", "ap-southeast-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(r).await.0, "session_not_visible");
    assert!(started.elapsed() < Duration::from_millis(300), "no wait");
    assert_eq!(relays["us-east-1"].kv_requests.load(Ordering::SeqCst), 1);

    // eu_only keys are held only in eu-west-1: the session's missing writes come from
    // us-east-1, outside the zone, so the read is refused rather than sent there.
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/eu_only/cart?consistency=session"))
        .header("meridian-session", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (code, hint) = error_of(r).await;
    assert_eq!(code, "session_not_visible");
    assert!(hint.contains("not forwarded"), "{hint}");
    let sent = |r: &str| relays[r].kv_requests.load(Ordering::SeqCst);
    assert_eq!(
        (sent("us-east-1"), sent("ap-southeast-1")),
        (1, 0),
        "no read but the first left eu-west-1"
    );

    let metrics = w.get_text("eu-west-1", "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("meridian_read_forwards_total")
                && l.contains("reason=\"session\"")
                && l.contains("outcome=\"relayed\"")),
        "{metrics}"
    );
}

/// Three regions where eu-west-1 reaches `reachable` only through a [`relay`] that holds back
/// replication (reads pass), and `down` not at all (a [`black_hole`]).
async fn eu_reaching(reachable: &str, down: &str) -> (World, Relay) {
    let mut w = World::new().await;
    // Held for good: the receiver keeps the last value once the switch is gone.
    let (_, rx) = watch::channel(true);
    let r = relay(&w.addrs[reachable], rx).await;
    let via = BTreeMap::from([
        (down.to_string(), black_hole().await),
        (reachable.to_string(), r.url.clone()),
    ]);
    w.stop("eu-west-1").await;
    w.start_via("eu-west-1", via).await;
    (w, r)
}

/// When the write's origin does not answer, a session read gives up after the session wait
/// plus one forward timeout — no blind retry loop — and says which region it tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_give_up_on_an_unreachable_origin_and_say_so() {
    let (w, ap) = eu_reaching("ap-southeast-1", "us-east-1").await;
    let c = &w.client;
    let r = c
        .put(w.url("us-east-1", "/v1/kv/reg/cart"))
        .body("3 items")
        .send()
        .await
        .unwrap();
    let token = session_of(&r);
    let started = Instant::now();
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/reg/cart?consistency=session"))
        .header("meridian-session", &token)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (code, hint) = error_of(r).await;
    assert_eq!(code, "session_not_visible");
    assert!(hint.contains("`us-east-1`"), "{hint}");
    let bound = Duration::from_millis(300) + meridian_node::read::FORWARD_TIMEOUT;
    assert!(
        took >= bound - Duration::from_millis(100) && took < bound + Duration::from_secs(1),
        "answered after {took:?}, expected about {bound:?}"
    );
    assert_eq!(
        ap.kv_requests.load(Ordering::SeqCst),
        0,
        "ap-southeast-1 is not an origin of the session"
    );
}

/// A session whose writes come from two origins: when the first origin (in token order) does
/// not answer, the read falls through to the second, which has applied both writes and answers
/// — after one forward timeout, never a stale read and never a 503 while one origin can vouch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_fall_through_to_the_next_origin() {
    let (w, us) = eu_reaching("us-east-1", "ap-southeast-1").await;
    let c = &w.client;
    let r = c
        .put(w.url("ap-southeast-1", "/v1/kv/reg/first"))
        .body("from ap")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = session_of(&r);
    let r = c
        .put(w.url("us-east-1", "/v1/kv/reg/second"))
        .header("meridian-session", &first)
        .body("from us")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let both = session_of(&r);
    assert!(
        both.contains("ap-southeast-1") && both.contains("us-east-1"),
        "{both}"
    );
    let started = Instant::now();
    while c
        .get(w.url("us-east-1", "/v1/kv/reg/first"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "us-east-1 never got ap's write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/reg/first?consistency=session"))
        .header("meridian-session", &both)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["meridian-region"], "us-east-1");
    assert_eq!(r.text().await.unwrap(), "from ap");
    assert!(
        took >= meridian_node::read::FORWARD_TIMEOUT,
        "ap-southeast-1 (first in token order) was tried first: {took:?}"
    );
    assert_eq!(us.kv_requests.load(Ordering::SeqCst), 1);
}

/// A strong read of a `writer = "home"` key is answered by its home — the latest value even
/// while replication to the reading region is held back; a multi-writer keyspace refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_are_answered_by_the_home_region() {
    let (w, hold, _relays) = held_world(false).await;
    let c = &w.client;
    let put = |region: &str, key: &str, v: &'static str| {
        c.put(w.url(region, &format!("/v1/kv/accounts/{key}")))
            .header("meridian-home", "us-east-1")
            .body(v)
            .send()
    };
    assert_eq!(
        put("us-east-1", "alice", "v1").await.unwrap().status(),
        StatusCode::CREATED
    );
    c.post(w.url("us-east-1", "/v1/kv/cnt/marker/incr"))
        .send()
        .await
        .unwrap();
    w.converged("/v1/kv/cnt/marker", &json!(1)).await;
    hold.send_replace(true);
    assert_eq!(
        put("us-east-1", "alice", "v2").await.unwrap().status(),
        StatusCode::OK
    );
    let local = c
        .get(w.url("eu-west-1", "/v1/kv/accounts/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.text().await.unwrap(), "v1", "eu-west-1 is held back");
    for region in ["eu-west-1", "us-east-1"] {
        let r = c
            .get(w.url(region, "/v1/kv/accounts/alice?consistency=strong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["meridian-region"], "us-east-1");
        assert_eq!(r.text().await.unwrap(), "v2", "read at {region}");
    }
    // A key eu-west-1 has never seen is found at the home the reader names.
    put("us-east-1", "bob", "b1").await.unwrap();
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/accounts/bob?consistency=strong"))
        .header("meridian-home", "us-east-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "b1");
    // And without a header at the key's default home, where its first write went.
    let topology = w.nodes["us-east-1"].node.topology();
    let accounts = topology.keyspace("accounts").unwrap();
    let carol = (0..)
        .map(|i| format!("carol{i}"))
        .find(|k| topology.default_home(accounts, k) == Some("us-east-1"))
        .unwrap();
    let r = c
        .put(w.url("us-east-1", &format!("/v1/kv/accounts/{carol}")))
        .body("c1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(w.url(
            "eu-west-1",
            &format!("/v1/kv/accounts/{carol}?consistency=strong"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "c1");
    let r = c
        .get(w.url("eu-west-1", "/v1/kv/reg/alice?consistency=strong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let (code, hint) = error_of(r).await;
    assert_eq!(code, "consistency_not_supported");
    assert!(hint.contains("writer = \"home\""), "{hint}");
}

/// Opens a replication stream from `region` as peer `as_peer` (a real puller's request, with
/// `versions` as its `Meridian-Repl-Versions` header when given) and reads frames until a batch
/// holding `key` arrives; returns the stream's announced version and every frame read.
async fn pull_until(
    w: &World,
    region: &str,
    as_peer: &str,
    versions: Option<&str>,
    key: &str,
) -> (String, Vec<meridian_core::wire::Frame>) {
    use meridian_core::wire::{FrameDecoder, FrameV1, LogBody};
    let mut req = w
        .client
        .get(w.url(region, "/v1/repl/stream"))
        .header(
            "authorization",
            meridian_node::repl::auth::header(SECRET, as_peer, now_ms()),
        )
        .header("meridian-from", "");
    if let Some(v) = versions {
        req = req.header("meridian-repl-versions", v);
    }
    let mut resp = req.send().await.expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let version = resp
        .headers()
        .get("meridian-repl-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("the batch arrives in time")
            .expect("read")
            .expect("the stream stays open");
        decoder.push(&chunk);
        while let Some(frame) = decoder.next_frame().expect("valid frames") {
            let found = matches!(
                frame.clone().into_message(),
                FrameV1::Batch(entries) if entries.iter().any(|e| matches!(
                    &e.body, LogBody::Op(p) if p.key == key
                ))
            );
            frames.push(frame);
            if found {
                return (version, frames);
            }
        }
    }
}

/// Current nodes stream version 3 to each other and converge; a puller that does not advertise
/// versions (one built before version 2) still gets a working version 1 stream, one built
/// before version 3 a version 2 stream, and one that names versions this build does not know
/// gets the newest both speak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_version_is_negotiated() {
    let mut w = World::new().await;
    let c = w.client.clone();
    for r in REGIONS {
        c.post(w.url(r, "/v1/kv/cnt/negotiated/incr"))
            .send()
            .await
            .unwrap();
    }
    w.converged("/v1/kv/cnt/negotiated", &json!(3)).await;
    for r in REGIONS {
        let status = w.status(r).await;
        for p in REGIONS.iter().filter(|p| **p != r) {
            assert_eq!(status["peers"][p]["wire_version"], json!(3), "{status}");
        }
    }
    // Stop the real eu-west-1 so what it acknowledged does not hide new writes from the
    // stand-in pullers below.
    w.stop("eu-west-1").await;
    c.put(w.url("us-east-1", "/v1/kv/reg/legacy"))
        .header("content-type", "text/plain")
        .body("for an old puller")
        .send()
        .await
        .unwrap();
    let (version, old) = pull_until(&w, "us-east-1", "eu-west-1", None, "legacy").await;
    assert_eq!(version, "1");
    assert!(old.iter().all(|f| f.version() == 1), "{old:?}");
    let (version, new) = pull_until(&w, "us-east-1", "eu-west-1", Some("1, 2,9,x"), "legacy").await;
    assert_eq!(version, "2");
    assert!(new.iter().all(|f| f.version() == 2), "{new:?}");
    let (version, newest) = pull_until(&w, "us-east-1", "eu-west-1", Some("3,1,2"), "legacy").await;
    assert_eq!(version, "3");
    assert!(newest.iter().all(|f| f.version() == 3), "{newest:?}");
    let batches = |frames: Vec<meridian_core::wire::Frame>| -> Vec<_> {
        frames
            .into_iter()
            .map(meridian_core::wire::Frame::into_message)
            .filter(|m| matches!(m, meridian_core::wire::FrameV1::Batch(_)))
            .collect()
    };
    assert_eq!(
        batches(old),
        batches(new.clone()),
        "both versions deliver the same entries"
    );
    assert_eq!(batches(new), batches(newest), "and version 3 too");
}

/// A region started with a topology that defines a keyspace differently, and one more: every
/// peer names the differences in its status and metric, and a write of the retyped keyspace
/// stops replication from its origin with an error naming the key and the cause, instead of
/// merging values of two types.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_with_different_topologies_are_reported_by_keyspace() {
    let mut w = World::new().await;
    w.stop("eu-west-1").await;
    let r = w
        .client
        .post(w.url("us-east-1", "/v1/kv/cnt/x/incr"))
        .send()
        .await
        .expect("incr");
    assert_eq!(r.status(), StatusCode::OK);
    let diverged = TOPOLOGY.replace(
        "name = \"cnt\"\ntype = \"counter\"",
        "name = \"cnt\"\ntype = \"register\"",
    ) + "\n[[keyspace]]\nname = \"extra\"\ntype = \"set\"\n";
    // Cut off, eu-west-1 writes cnt/x as the register its file says it is.
    let cut: BTreeMap<String, String> = REGIONS
        .iter()
        .filter(|r| **r != "eu-west-1")
        .map(|r| (r.to_string(), "http://127.0.0.1:9".to_string()))
        .collect();
    w.start_on("eu-west-1", &diverged, &cut).await;
    let r = w
        .client
        .put(w.url("eu-west-1", "/v1/kv/cnt/x"))
        .body("a register")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    w.stop("eu-west-1").await;
    w.start_on("eu-west-1", &diverged, &BTreeMap::new()).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let (us_view, eu_view, eu_error) = loop {
        let us = w.status("us-east-1").await;
        let eu = w.status("eu-west-1").await;
        let us_view = us["peers"]["eu-west-1"]["topology"].clone();
        let eu_view = eu["peers"]["us-east-1"]["topology"].clone();
        let eu_error = eu["peers"]["us-east-1"]["last_error"].clone();
        // us-east-1's view is "same" until its link to the restarted region reconnects.
        if us_view.is_string()
            && us_view != json!("same")
            && eu_view.is_string()
            && eu_error
                .as_str()
                .is_some_and(|e| e.contains("different types"))
        {
            break (us_view, eu_view, eu_error);
        }
        assert!(
            Instant::now() < deadline,
            "no report of the differences: us {us_view} eu {eu_view} error {eu_error}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        us_view,
        json!("defined differently: `cnt`; only there: `extra`")
    );
    assert_eq!(
        eu_view,
        json!("defined differently: `cnt`; only here: `extra`")
    );
    let eu_error = eu_error.as_str().expect("text");
    assert!(eu_error.contains("of us-east-1 for `cnt/x`"), "{eu_error}");
    let ap = w.status("ap-southeast-1").await;
    assert_eq!(ap["peers"]["us-east-1"]["topology"], json!("same"));
    // One recorder serves this process's three nodes: the series every node that sees
    // eu-west-1 sets alike is the one to read.
    let metrics = w.get_text("us-east-1", "/metrics").await;
    let line = "meridian_repl_topology_differs{peer=\"eu-west-1\"} 1";
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}`:\n{metrics}"
    );
    // Nothing merged values of two types: each side kept its own.
    assert_eq!(w.get_json("us-east-1", "/v1/kv/cnt/x").await.1, json!(1));
    assert_eq!(w.get_text("eu-west-1", "/v1/kv/cnt/x").await, "a register");
}
