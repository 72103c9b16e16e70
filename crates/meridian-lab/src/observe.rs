//! What the lab watches while a run goes on, from outside the world (direct loopback, not
//! through the WAN): replication-lag probes and the edges' view of region health.
//!
//! Lag: every [`PROBE_INTERVAL`] the lab writes `lab/probe-<region>` in each running region and
//! watches every region's change feed (`/v1/watch/lab`). A probe acknowledged by `from` at `t`
//! and announced by `to`'s feed at `t'` is a lag sample `t' - t` — the user-visible replication
//! delay, exact to the feed's delivery. Because a region applies each origin's writes in order,
//! `to` having a probe of `from` acknowledged after `t` means it has every write `from`
//! acknowledged before `t`; that is how convergence is timed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::task::JoinSet;

use crate::lock;

/// Time between probe writes in each region.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Time between polls of the edges' health views.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// A probe write acknowledged by its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeWrite {
    /// Origin region.
    pub from: String,
    /// Its version, as the feed names it.
    pub etag: String,
    /// Acknowledged at, s since load start (negative before the load).
    pub acked_s: f64,
}

/// A probe seen on a region's feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSeen {
    /// The region whose feed announced it.
    pub at: String,
    /// Its version.
    pub etag: String,
    /// Seen at, s since load start.
    pub seen_s: f64,
}

/// One poll of one edge's view of one region.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeView {
    /// Poll time, s since load start.
    pub t_s: f64,
    /// The edge (by the region it is placed in).
    pub edge: String,
    /// The region it judged.
    pub region: String,
    /// Whether the edge routes to it.
    pub up: bool,
}

/// Everything observed.
#[derive(Debug, Default)]
pub struct Observations {
    /// Probe writes.
    pub writes: Vec<ProbeWrite>,
    /// Probe sightings.
    pub seen: Vec<ProbeSeen>,
    /// Edge views.
    pub views: Vec<EdgeView>,
}

/// Where the observers connect.
#[derive(Debug, Clone)]
pub struct Targets {
    /// region → node URL.
    pub nodes: BTreeMap<String, String>,
    /// region → admin URL of the edge placed there.
    pub admins: BTreeMap<String, String>,
    /// Admin bearer token.
    pub secret: String,
}

/// Running observers; [`Observer::stop`] returns what they saw.
pub struct Observer {
    data: Arc<Mutex<Observations>>,
    tasks: JoinSet<()>,
}

fn since(start: Instant) -> f64 {
    let now = Instant::now();
    if now >= start {
        now.duration_since(start).as_secs_f64()
    } else {
        -start.duration_since(now).as_secs_f64()
    }
}

fn unquote(s: &str) -> String {
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

impl Observer {
    /// Starts probing and polling; times are relative to `start` (the load's start).
    pub fn start(targets: Targets, start: Instant) -> Observer {
        let data = Arc::new(Mutex::new(Observations::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_millis(300))
            .build()
            // invariant: a client without TLS or proxies always builds
            .expect("an HTTP client");
        let mut tasks = JoinSet::new();
        for (region, url) in &targets.nodes {
            tasks.spawn(probe_writer(
                client.clone(),
                region.clone(),
                url.clone(),
                start,
                data.clone(),
            ));
            tasks.spawn(feed_watcher(
                region.clone(),
                url.clone(),
                start,
                data.clone(),
            ));
        }
        for (edge, url) in &targets.admins {
            tasks.spawn(status_poller(
                client.clone(),
                edge.clone(),
                url.clone(),
                targets.secret.clone(),
                start,
                data.clone(),
            ));
        }
        Observer { data, tasks }
    }

    /// A copy of what has been observed so far.
    pub fn snapshot(&self) -> Observations {
        let d = lock(&self.data);
        Observations {
            writes: d.writes.clone(),
            seen: d.seen.clone(),
            views: d.views.clone(),
        }
    }

    /// Whether every edge's latest view has `region` up (false before any view).
    pub fn edges_see_up(&self, region: &str) -> bool {
        let d = lock(&self.data);
        let mut latest: BTreeMap<&str, bool> = BTreeMap::new();
        for v in d.views.iter().rev().filter(|v| v.region == region) {
            latest.entry(v.edge.as_str()).or_insert(v.up);
        }
        !latest.is_empty() && latest.values().all(|up| *up)
    }

    /// Stops every observer and returns the observations.
    pub async fn stop(mut self) -> Observations {
        self.tasks.shutdown().await;
        std::mem::take(&mut *lock(&self.data))
    }
}

async fn probe_writer(
    client: reqwest::Client,
    region: String,
    node: String,
    start: Instant,
    data: Arc<Mutex<Observations>>,
) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    loop {
        tick.tick().await;
        seq += 1;
        let url = format!("{node}/v1/kv/lab/probe-{region}");
        let Ok(resp) = client.put(&url).body(seq.to_string()).send().await else {
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        if let Some(etag) = resp.headers().get("etag").and_then(|v| v.to_str().ok()) {
            lock(&data).writes.push(ProbeWrite {
                from: region.clone(),
                etag: unquote(etag),
                acked_s: since(start),
            });
        }
    }
}

async fn feed_watcher(
    region: String,
    node: String,
    start: Instant,
    data: Arc<Mutex<Observations>>,
) {
    // No overall timeout: the feed is a long-lived stream.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(300))
        .build()
        // invariant: a client without TLS or proxies always builds
        .expect("an HTTP client");
    loop {
        let url = format!("{node}/v1/watch/lab?prefix=probe-");
        if let Ok(resp) = client.get(&url).send().await
            && resp.status().is_success()
        {
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    for line in event.lines() {
                        let Some(json) = line.strip_prefix("data:") else {
                            continue;
                        };
                        let Ok(change) = serde_json::from_str::<serde_json::Value>(json.trim())
                        else {
                            continue;
                        };
                        let origin = change["region"].as_str().unwrap_or_default();
                        if let (Some(etag), true) = (change["etag"].as_str(), origin != region) {
                            lock(&data).seen.push(ProbeSeen {
                                at: region.clone(),
                                etag: unquote(etag),
                                seen_s: since(start),
                            });
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_poller(
    client: reqwest::Client,
    edge: String,
    admin: String,
    secret: String,
    start: Instant,
    data: Arc<Mutex<Observations>>,
) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let url = format!("{admin}/v1/status");
        let Ok(resp) = client.get(&url).bearer_auth(&secret).send().await else {
            continue;
        };
        let Ok(body) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let t_s = since(start);
        let mut d = lock(&data);
        for r in body["regions"].as_array().into_iter().flatten() {
            if let Some(name) = r["name"].as_str() {
                d.views.push(EdgeView {
                    t_s,
                    edge: edge.clone(),
                    region: name.to_string(),
                    up: r["up"].as_bool().unwrap_or(false),
                });
            }
        }
    }
}
