//! A region node on a loopback port with a throwaway data directory, for HTTP tests.

#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use meridian_node::{Background, Node, NodeConfig, clock::SystemClock};
use meridian_store::{Store, StoreOptions};

pub const TOPOLOGY: &str = r#"
[cluster]
name = "test"

[zones]
eu = ["eu-west-1"]
us = ["us-east-1"]

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:17601"
app = ["http://127.0.0.1:18601"]

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:17602"
app = ["http://127.0.0.1:18602"]

[[keyspace]]
name = "reg"
type = "register"

[[keyspace]]
name = "homed"
type = "register"
writer = "home"

[[keyspace]]
name = "mv"
type = "mvregister"

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
name = "eu_only"
type = "register"
residency = "eu"

[[keyspace]]
name = "profiles"
type = "register"
residency = "home-zone"

[[keyspace]]
name = "short"
type = "register"
ttl = "1s"

[limits]
max_key_bytes = 64
max_value_bytes = 1024
session_wait = "300ms"
"#;

pub struct TestNode {
    pub base: String,
    pub client: reqwest::Client,
    pub node: Node,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(None).await
    }

    pub async fn start_with(admin_token: Option<String>) -> TestNode {
        Self::start_full(admin_token, None).await
    }

    /// A node served as `background` says; `None` serves it as `meridian region` does.
    pub async fn start_full(
        admin_token: Option<String>,
        background: Option<Background>,
    ) -> TestNode {
        Self::start_on(TOPOLOGY, admin_token, background).await
    }

    /// [`TestNode::start_full`] for region us-east-1 of the topology `text`.
    pub async fn start_on(
        text: &str,
        admin_token: Option<String>,
        background: Option<Background>,
    ) -> TestNode {
        let topology = meridian_core::config::parse("test.toml", text).expect("test topology");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let config = NodeConfig {
            secret: admin_token,
            ..NodeConfig::default()
        };
        let node = Node::new(
            Arc::new(topology),
            "us-east-1",
            store,
            Arc::new(SystemClock),
            config,
        )
        .expect("node");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let n = node.clone();
        let server = tokio::spawn(async move {
            let forever = std::future::pending();
            match background {
                None => meridian_node::serve(n, listener, forever).await,
                Some(b) => meridian_node::serve_on(n, listener, &b, forever).await,
            }
        });
        let t = TestNode {
            base,
            client: reqwest::Client::new(),
            node,
            _dir: dir,
            _server: server,
        };
        t.wait_ready().await;
        t
    }

    /// Waits until `/health/ready` answers 200: a new store first joins its peers (none of the
    /// test topology's answers, so that takes a moment).
    pub async fn wait_ready(&self) {
        wait_ready(&self.client, &self.base).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The first key `{stem}{i}` of `keyspace` (a `writer = "home"` one) whose default home —
    /// the home of its first write when no `Meridian-Home` names one — is `region`.
    pub fn key_homed_at(&self, keyspace: &str, region: &str, stem: &str) -> String {
        let topology = self.node.topology();
        let ks = topology
            .keyspace(keyspace)
            .expect("keyspace of the test topology");
        (0..)
            .map(|i| format!("{stem}{i}"))
            .find(|k| topology.default_home(ks, k) == Some(region))
            .expect("some key is homed in each region")
    }
}

/// The `error.code` of a JSON error response (panics with the body if it is not one).
pub async fn error_code(resp: reqwest::Response) -> String {
    let text = resp.text().await.expect("body");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
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

/// Waits until the node at `base` answers `/health/ready` 200 (a new store first joins its
/// peers); panics after 20 s.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .map(|r| r.status());
        if status.as_ref().is_ok_and(|s| s.is_success()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{base} is not ready: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
