//! New stores join their peers before they serve, with real `meridian region` processes.
//!
//! A region that loses its disk: eu-west-1 killed with SIGKILL, its data directory deleted,
//! and started again on an empty one. Before new stores joined, it served at once: its new
//! writes reused the op-log sequence numbers its peers had already applied (so they never
//! replicated), an increment counted from nothing was hidden by the old total, and its data
//! came back only by digest comparison, 30 s later, or never (`home-zone` keyspaces). The
//! checker demands that, as soon as the node says it is ready, it holds everything it held —
//! every type, pinned keys from the other region of its zone, an idempotency outcome, a delete
//! — and that its new writes reach every region, counted exactly, with nothing pinned leaving
//! the zone.
//!
//! A new store that every peer refused for longer than `--join-wait` takes its start for the
//! cluster's first; once a peer that knew the lost store is back, the node sees the peer
//! ahead of it, refuses writes and is not ready — and the documented recovery (delete the
//! directory, start again with the peers up) brings it back whole.
//!
//! A region added to a running cluster (DynamoDB's "add a replica region"): two regions hold
//! data and have collected their op logs; the topology gains eu-central-1 in eu-west-1's zone,
//! the two restart on it, and the new region, once ready, holds everything it may hold.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::dns::{Kill, free_port};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "eu-central-1"];
/// The region whose disk is lost.
const VICTIM: &str = "eu-west-1";
const SECRET: &str = "lost-disk-test-secret-0123456789abcdef";
/// A session homed in us-east-1 (zone us): it must never reach a European disk.
const US_SESSION: &str = "US-ONLY-SESSION-77c1";
/// A pinned value that must never reach us-east-1's disk.
const CANARY: &str = "CANARY-eu-passport-93e1";

/// The test topology over `regions`: zone `us` holds us-east-1, zone `eu` those of them in
/// Europe.
fn topology(ports: &BTreeMap<&str, u16>, regions: &[&str]) -> String {
    let eu: Vec<String> = regions
        .iter()
        .filter(|r| r.starts_with("eu-"))
        .map(|r| format!("\"{r}\""))
        .collect();
    let mut t = format!(
        "[cluster]\nname = \"new-stores\"\nsecret_file = \"cluster.secret\"\n\n[zones]\nus = [\"us-east-1\"]\neu = [{}]\n",
        eu.join(", ")
    );
    for r in regions {
        t.push_str(&format!(
            "\n[[region]]\nname = \"{r}\"\nnode = \"http://127.0.0.1:{}\"\n",
            ports[*r]
        ));
    }
    t.push_str(
        r#"
[[keyspace]]
name = "hits"
type = "counter"

[[keyspace]]
name = "notes"
type = "map"

[[keyspace]]
name = "tags"
type = "set"

[[keyspace]]
name = "orders"
type = "register"
replication = "sync"
quorum = 2

[[keyspace]]
name = "passports"
type = "register"
residency = "eu"

[[keyspace]]
name = "sessions"
type = "register"
residency = "home-zone"
"#,
    );
    t
}

struct World {
    dir: tempfile::TempDir,
    ports: BTreeMap<&'static str, u16>,
    nodes: BTreeMap<&'static str, Kill>,
    client: reqwest::Client,
}

impl World {
    /// A world whose topology file has `regions` (each of [`REGIONS`] has a port).
    fn new(regions: &[&str]) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: BTreeMap<_, _> = REGIONS.iter().map(|r| (*r, free_port())).collect();
        std::fs::write(dir.path().join("cluster.secret"), SECRET).expect("secret");
        let w = World {
            dir,
            ports,
            nodes: BTreeMap::new(),
            client: reqwest::Client::new(),
        };
        w.set_regions(regions);
        w
    }

    /// A world of `regions`, each started and ready.
    async fn started(regions: &[&'static str]) -> World {
        let mut w = World::new(regions);
        for r in regions {
            w.start(r);
        }
        for r in regions {
            w.wait_ready(r).await;
        }
        w
    }

    /// In each of `regions` (the i-th): `hits/h` incremented by 10 + i, field `by-<region>`
    /// of `notes/n` set to i.
    async fn count_and_note(&self, regions: &[&str]) {
        for (i, r) in regions.iter().enumerate() {
            self.ok(r, "POST", "/v1/kv/hits/h/incr", json!({"by": 10 + i}))
                .await;
            self.ok(
                r,
                "PATCH",
                "/v1/kv/notes/n",
                json!({ format!("by-{r}"): i }),
            )
            .await;
        }
    }

    /// Rewrites the topology file with `regions` (nodes read it when they start).
    fn set_regions(&self, regions: &[&str]) {
        std::fs::write(
            self.dir.path().join("meridian.toml"),
            topology(&self.ports, regions),
        )
        .expect("topology");
    }

    fn data(&self, region: &str) -> PathBuf {
        self.dir.path().join("data").join(region)
    }

    fn start(&mut self, region: &'static str) {
        self.start_with(region, &[]);
    }

    /// Starts `region` with `args` added to its command line.
    fn start_with(&mut self, region: &'static str, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{region}.log")))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["region", "--config"])
            .arg(self.dir.path().join("meridian.toml"))
            .args(["--region", region, "--data"])
            .arg(self.data(region))
            .args(args)
            .env("MERIDIAN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn meridian region");
        self.nodes.insert(region, Kill(child));
    }

    fn url(&self, region: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[region])
    }

    /// Waits for `/health/ready` 200; returns the distinct non-200 answers seen on the way.
    async fn wait_ready(&self, region: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            match self
                .client
                .get(self.url(region, "/health/ready"))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return seen,
                Ok(r) => {
                    let code = r
                        .json::<Value>()
                        .await
                        .ok()
                        .map(|b| b["error"]["code"].to_string());
                    let code = code.unwrap_or_default();
                    if !seen.contains(&code) {
                        seen.push(code);
                    }
                }
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "{region} never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn send(&self, region: &str, method: &str, path: &str, body: Value) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(region, path));
        if !body.is_null() {
            req = req.body(body.to_string());
        }
        req.send().await.expect("request")
    }

    async fn ok(&self, region: &str, method: &str, path: &str, body: Value) {
        let r = self.send(region, method, path, body).await;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {path} at {region}: {status} {text}"
        );
    }

    /// The victim's sync write of order `o1`, under one idempotency key each time.
    async fn order(&self) -> reqwest::Response {
        self.client
            .put(self.url(VICTIM, "/v1/kv/orders/o1"))
            .header("idempotency-key", "order-o1")
            .body("\"paid\"")
            .send()
            .await
            .expect("sync write")
    }

    /// The JSON at `path` in `region`, or `None` when it is 404.
    async fn get(&self, region: &str, path: &str) -> Option<Value> {
        let r = self.send(region, "GET", path, Value::Null).await;
        if r.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert!(
            r.status().is_success(),
            "GET {path} at {region}: {}",
            r.status()
        );
        Some(r.json().await.expect("json"))
    }

    /// Waits until `path` reads `want` in every region listed.
    async fn converge(&self, regions: &[&str], path: &str, want: &Option<Value>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for r in regions {
            loop {
                let got = self.get(r, path).await;
                if &got == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path} at {r}: {got:?}, want {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn grep_dir(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            grep_dir(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_lost_its_disk_rejoins_with_everything_it_held() {
    let mut w = World::started(&REGIONS).await;

    // Before the loss: writes of every kind in every region, the victim's own among them.
    w.count_and_note(&REGIONS).await;
    for r in REGIONS {
        w.ok(
            r,
            "POST",
            "/v1/kv/tags/t/add",
            json!({"members": [format!("tag-{r}")]}),
        )
        .await;
    }
    w.ok(VICTIM, "PUT", "/v1/kv/passports/p1", json!(CANARY))
        .await;
    w.ok(VICTIM, "PUT", "/v1/kv/sessions/s1", json!("signed-in"))
        .await;
    w.ok(VICTIM, "PUT", "/v1/kv/notes/gone", json!({"x": 1}))
        .await;
    let r = w.order().await;
    assert_eq!(r.status(), StatusCode::CREATED);
    w.ok(VICTIM, "DELETE", "/v1/kv/notes/gone", Value::Null)
        .await;
    let total = Some(json!(10 + 11 + 12));
    w.converge(&REGIONS, "/v1/kv/hits/h", &total).await;
    w.converge(
        &["eu-central-1"],
        "/v1/kv/sessions/s1",
        &Some(json!("signed-in")),
    )
    .await;
    w.converge(
        &["eu-central-1"],
        "/v1/kv/passports/p1",
        &Some(json!(CANARY)),
    )
    .await;
    w.converge(&REGIONS, "/v1/kv/notes/gone", &None).await;
    let notes = w.get("us-east-1", "/v1/kv/notes/n").await;
    let tags = w.get("us-east-1", "/v1/kv/tags/t").await;
    w.converge(&REGIONS, "/v1/kv/notes/n", &notes).await;
    w.converge(&REGIONS, "/v1/kv/tags/t", &tags).await;

    // The loss: SIGKILL, the data directory gone, a start on an empty one.
    w.nodes.remove(VICTIM);
    std::fs::remove_dir_all(w.data(VICTIM)).expect("remove the victim's data");
    w.start(VICTIM);
    let refusals = w.wait_ready(VICTIM).await;
    assert!(
        refusals.iter().all(|c| c == "\"joining\""),
        "before ready the node may only say it is joining: {refusals:?}"
    );

    // Ready means whole: everything is there at once, no digest comparison waited for.
    assert_eq!(w.get(VICTIM, "/v1/kv/hits/h").await, total);
    assert_eq!(w.get(VICTIM, "/v1/kv/notes/n").await, notes);
    assert_eq!(w.get(VICTIM, "/v1/kv/tags/t").await, tags);
    assert_eq!(
        w.get(VICTIM, "/v1/kv/notes/gone").await,
        None,
        "a delete came back"
    );
    assert_eq!(
        w.get(VICTIM, "/v1/kv/passports/p1").await,
        Some(json!(CANARY))
    );
    assert_eq!(
        w.get(VICTIM, "/v1/kv/sessions/s1").await,
        Some(json!("signed-in"))
    );
    let retry = w.order().await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "the retry was not recognised"
    );

    // New writes of the new store reach every region, and count exactly.
    w.ok(VICTIM, "POST", "/v1/kv/hits/h/incr", json!({"by": 100}))
        .await;
    w.ok(VICTIM, "PATCH", "/v1/kv/notes/after", json!({"f": "new"}))
        .await;
    w.ok(
        VICTIM,
        "POST",
        "/v1/kv/tags/t/add",
        json!({"members": ["after-loss"]}),
    )
    .await;
    w.converge(&REGIONS, "/v1/kv/hits/h", &Some(json!(133)))
        .await;
    w.converge(&REGIONS, "/v1/kv/notes/after", &Some(json!({"f": "new"})))
        .await;
    let tags = w.get(VICTIM, "/v1/kv/tags/t").await;
    assert!(
        tags.as_ref()
            .and_then(Value::as_array)
            .is_some_and(|t| t.len() == 4),
        "{tags:?}"
    );
    w.converge(&REGIONS, "/v1/kv/tags/t", &tags).await;

    // Nothing pinned to the EU left it, through the copy or otherwise.
    assert!(
        !grep_dir(&w.data("us-east-1"), CANARY.as_bytes()),
        "the canary is on us-east-1's disk"
    );
    assert!(
        grep_dir(&w.data(VICTIM), CANARY.as_bytes()),
        "the canary is not on the victim's disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_added_to_a_running_cluster_holds_everything_it_may_hold() {
    const OLD: [&str; 2] = ["us-east-1", "eu-west-1"];
    const NEW: &str = "eu-central-1";
    let mut w = World::started(&OLD).await;
    w.count_and_note(&OLD).await;
    w.ok("eu-west-1", "PUT", "/v1/kv/passports/p1", json!(CANARY))
        .await;
    w.ok("eu-west-1", "PUT", "/v1/kv/sessions/s1", json!("signed-in"))
        .await;
    w.ok("us-east-1", "PUT", "/v1/kv/sessions/s2", json!(US_SESSION))
        .await;
    w.converge(&OLD, "/v1/kv/hits/h", &Some(json!(21))).await;
    let notes = w.get("us-east-1", "/v1/kv/notes/n").await;
    w.converge(&OLD, "/v1/kv/notes/n", &notes).await;
    // Long enough for both regions to collect the op-log entries both have applied: the new
    // region cannot be brought up to date from the logs.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The topology gains eu-central-1 (in eu-west-1's zone); the running regions restart on
    // it, then the new one starts on an empty data directory.
    w.set_regions(&REGIONS);
    for r in OLD {
        w.nodes.remove(r);
        w.start(r);
    }
    w.start(NEW);
    for r in REGIONS {
        w.wait_ready(r).await;
    }
    assert_eq!(w.get(NEW, "/v1/kv/hits/h").await, Some(json!(21)));
    assert_eq!(w.get(NEW, "/v1/kv/notes/n").await, notes);
    assert_eq!(w.get(NEW, "/v1/kv/passports/p1").await, Some(json!(CANARY)));
    assert_eq!(
        w.get(NEW, "/v1/kv/sessions/s1").await,
        Some(json!("signed-in"))
    );
    assert_eq!(
        w.get(NEW, "/v1/kv/sessions/s2").await,
        None,
        "a session homed in zone us was copied out of it"
    );

    w.ok(NEW, "POST", "/v1/kv/hits/h/incr", json!({"by": 100}))
        .await;
    w.converge(&REGIONS, "/v1/kv/hits/h", &Some(json!(121)))
        .await;
    assert!(
        !grep_dir(&w.data("us-east-1"), CANARY.as_bytes()),
        "the canary is on us-east-1's disk"
    );
    assert!(
        grep_dir(&w.data(NEW), CANARY.as_bytes()),
        "the canary was not copied to {NEW}"
    );
    assert!(
        !grep_dir(&w.data(NEW), US_SESSION.as_bytes()),
        "a us session is on {NEW}'s disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_disk_taken_for_a_first_start_is_caught_and_recovered() {
    let mut w = World::started(&REGIONS).await;
    w.count_and_note(&REGIONS).await;
    // The lost store made more writes than the new one will before the peers are back (the
    // check compares the two stores' sequences).
    for _ in 0..5 {
        w.ok(VICTIM, "PATCH", "/v1/kv/notes/v", json!({"x": 1}))
            .await;
    }
    w.converge(&REGIONS, "/v1/kv/hits/h", &Some(json!(33)))
        .await;
    w.converge(&REGIONS, "/v1/kv/notes/v", &Some(json!({"x": 1})))
        .await;
    // Every peer down, then the victim's disk lost: with a short --join-wait, the new store
    // takes its start for the cluster's first.
    for r in REGIONS {
        w.nodes.remove(r);
    }
    std::fs::remove_dir_all(w.data(VICTIM)).expect("remove the victim's data");
    w.start_with(VICTIM, &["--join-wait", "1s"]);
    w.wait_ready(VICTIM).await;
    assert_eq!(
        w.get(VICTIM, "/v1/kv/hits/h").await,
        None,
        "nothing to copy from"
    );
    w.ok(VICTIM, "POST", "/v1/kv/hits/h/incr", json!({"by": 100}))
        .await;
    // The peers come back: their heads are past anything the new store made.
    for r in REGIONS.iter().filter(|r| **r != VICTIM) {
        w.start(r);
    }
    // Seen once a peer's heads arrive: not ready, and writes refused with the way out.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = w.send(VICTIM, "GET", "/health/ready", Value::Null).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = r.json().await.expect("json");
            if body["error"]["code"] == "sequence_conflict" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the conflict was never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = w
        .send(VICTIM, "POST", "/v1/kv/hits/h/incr", json!({"by": 1}))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let refusal: Value = r.json().await.expect("json");
    assert_eq!(refusal["error"]["code"], "sequence_conflict", "{refusal}");
    assert!(
        refusal["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("delete its data directory")),
        "{refusal}"
    );

    // The recovery the answer gives: a new directory, started with the peers up.
    w.nodes.remove(VICTIM);
    std::fs::remove_dir_all(w.data(VICTIM)).expect("remove the victim's data");
    w.start(VICTIM);
    w.wait_ready(VICTIM).await;
    assert_eq!(w.get(VICTIM, "/v1/kv/hits/h").await, Some(json!(33)));
    w.ok(VICTIM, "POST", "/v1/kv/hits/h/incr", json!({"by": 100}))
        .await;
    w.converge(&REGIONS, "/v1/kv/hits/h", &Some(json!(133)))
        .await;
}
