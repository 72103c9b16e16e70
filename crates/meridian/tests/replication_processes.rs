//! Three real `meridian region` processes replicating through delayed loopback links (a relay
//! per directed link from the lab's WAN emulator, 20/40/60 ms one way). Clients load every
//! region with counter increments, async register writes and quorum-2 sync writes while one
//! region is killed with SIGKILL and restarted on its data directory; then a checker demands:
//! the counter is exactly the number of acknowledged increments everywhere, every acknowledged
//! write is readable everywhere, every acknowledged sync write was on a second region when it
//! was acknowledged, every link is up with nothing unacknowledged, and an eu-pinned canary
//! exists nowhere outside eu-west-1.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

const SECRET: &str = "multi-process-replication-secret-0123456789";
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];
/// The region killed with SIGKILL mid-load.
const VICTIM: &str = "ap-southeast-1";
/// Key and value prefix of the eu-pinned canary: neither may reach another region's disk.
const CANARY_KEY: &str = "passport-7c1f";
const CANARY_VALUE: &str = "CANARY-eu-pinned-4b1d9e";

/// Node URLs in the file are unreachable on purpose: every inter-region byte must go through a
/// relay (`--peer`), and clients use the `--listen` addresses.
const TOPOLOGY: &str = r#"
[cluster]
name = "mproc"
secret_file = "cluster.secret"

[zones]
eu = ["eu-west-1"]

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
name = "hits"
type = "counter"

[[keyspace]]
name = "notes"
type = "register"

[[keyspace]]
name = "orders"
type = "register"
replication = "sync"
quorum = 2
sync_timeout = "2s"

[[keyspace]]
name = "passports"
type = "register"
residency = "eu"
"#;

/// Load phase; the victim is killed at `KILL_AT` and restarted at `RESTART_AT` after the start.
const LOAD: Duration = Duration::from_millis(3500);
const KILL_AT: Duration = Duration::from_millis(1500);
const RESTART_AT: Duration = Duration::from_millis(2500);
/// How long unacknowledged increments and sync writes are retried after the load.
const RETRY_FOR: Duration = Duration::from_secs(20);
/// Bound on convergence once retries are done.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Pause after a failed attempt, so clients of a dead region do not spin.
const PACE: Duration = Duration::from_millis(50);
const WORKERS_PER_KIND: usize = 2;
const MAX_OPS_PER_WORKER: u64 = 20_000;
/// Keys per register worker; writes cycle over them, so later values replace earlier ones.
const NOTE_KEYS: u64 = 25;

/// One-way latency of the link between two regions (both directions).
fn one_way(a: &str, b: &str) -> Duration {
    let ms = match (a.min(b), a.max(b)) {
        ("eu-west-1", "us-east-1") => 20,
        ("ap-southeast-1", "eu-west-1") => 40,
        _ => 60,
    };
    Duration::from_millis(ms)
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The three processes. Dropping it kills every child (also on panic, then printing the tail of
/// each node's log).
struct Cluster {
    dir: tempfile::TempDir,
    addrs: BTreeMap<&'static str, SocketAddr>,
    /// `--peer REGION=URL` arguments of each region: its relays.
    peers: BTreeMap<&'static str, Vec<String>>,
    children: BTreeMap<&'static str, Child>,
}

impl Cluster {
    async fn new(relays: &mut Vec<meridian_lab::wan::Relay>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cluster.secret"), SECRET).expect("secret");
        std::fs::write(dir.path().join("meridian.toml"), TOPOLOGY).expect("topology");
        let addrs: BTreeMap<_, _> = REGIONS.iter().map(|r| (*r, free_addr())).collect();
        let mut peers = BTreeMap::new();
        let mut profile = meridian_lab::wan::Profile::default();
        for a in REGIONS {
            for b in REGIONS.iter().filter(|b| **b != a) {
                profile.set(a, b, one_way(a, b));
            }
        }
        let wan = meridian_lab::wan::Wan::new(profile, 1);
        for puller in REGIONS {
            let mut args = Vec::new();
            for source in REGIONS.iter().filter(|s| **s != puller) {
                let any = "127.0.0.1:0".parse().expect("addr");
                let link = wan
                    .relay(puller, source, any, addrs[source])
                    .await
                    .expect("relay");
                args.push(format!("{source}=http://{}", link.addr()));
                relays.push(link);
            }
            peers.insert(puller, args);
        }
        Cluster {
            dir,
            addrs,
            peers,
            children: BTreeMap::new(),
        }
    }

    fn data(&self, region: &str) -> PathBuf {
        self.dir.path().join("data").join(region)
    }

    fn log(&self, region: &str) -> PathBuf {
        self.dir.path().join(format!("{region}.log"))
    }

    fn spawn(&mut self, region: &'static str) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(region))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
        cmd.args(["region", "--config"])
            .arg(self.dir.path().join("meridian.toml"))
            .args(["--region", region, "--data"])
            .arg(self.data(region))
            .args(["--listen", &self.addrs[region].to_string()]);
        for p in &self.peers[region] {
            cmd.args(["--peer", p]);
        }
        let child = cmd
            .env("MERIDIAN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn meridian");
        self.children.insert(region, child);
    }

    fn kill(&mut self, region: &str) {
        let mut child = self.children.remove(region).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    fn base(&self, region: &str) -> String {
        format!("http://{}", self.addrs[region])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for r in REGIONS {
                let text = std::fs::read_to_string(self.log(r)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- last lines of {r}'s log ---");
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node at {base} not ready within 20 s");
}

/// Polls every region's `/v1/admin/status` until each peer link is `up` with no unacknowledged
/// op; panics with the last statuses after `within`.
async fn wait_links_settled(client: &reqwest::Client, cluster: &Cluster, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut statuses = BTreeMap::new();
        for r in REGIONS {
            let status = match client
                .get(format!("{}/v1/admin/status", cluster.base(r)))
                .bearer_auth(SECRET)
                .send()
                .await
            {
                Ok(resp) => resp.json::<Value>().await.unwrap_or(Value::Null),
                Err(e) => Value::String(e.to_string()),
            };
            statuses.insert(r, status);
        }
        let mut unsettled = Vec::new();
        for (r, s) in &statuses {
            for p in REGIONS.iter().filter(|p| *p != r) {
                let peer = &s["peers"][p];
                if peer["state"] != "up" || peer["unacked_ops"] != 0 {
                    unsettled.push(format!(
                        "{r} -> {p}: state {}, unacked_ops {}, last_error {}",
                        peer["state"], peer["unacked_ops"], peer["last_error"]
                    ));
                }
            }
        }
        if unsettled.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "links not all up with every op acknowledged within {within:?}:\n{}\nstatuses: {statuses:#?}",
            unsettled.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Incr,
    Note,
    Sync,
}

/// What the clients were told. Only acknowledged outcomes are expected to survive.
#[derive(Default)]
struct Ledger {
    /// Distinct increments (each with its own Idempotency-Key) and how many were acknowledged.
    incr_ids: u64,
    incr_acked: u64,
    /// Acknowledgements that were replays of an earlier, unanswered attempt.
    replays: u64,
    /// Register key → (origin, sequence number of the last acknowledged write).
    notes: BTreeMap<String, (&'static str, u64)>,
    /// Sync key → (origin, value), acknowledged with 201/200.
    orders: BTreeMap<String, (&'static str, String)>,
    /// 503 `quorum_unavailable` answers, by region.
    quorum_unavailable: BTreeMap<&'static str, u64>,
    /// Sync writes sent to a surviving region while the victim was down, and acknowledged.
    orders_while_down: u64,
    transport_errors: BTreeMap<&'static str, u64>,
    /// Acknowledged sync writes whose other regions could not all be asked right after.
    unverified: u64,
    /// Violations seen during the load: unexpected statuses, sync writes acknowledged but
    /// found on no second region, writes still unanswered when retries ran out.
    violations: Vec<String>,
}

struct Ctx {
    client: reqwest::Client,
    bases: BTreeMap<&'static str, String>,
    ledger: Mutex<Ledger>,
    victim_down: AtomicBool,
}

struct Op {
    region: &'static str,
    kind: Kind,
    key: String,
    value: String,
    idempotency_key: String,
    seq: u64,
}

enum Attempt {
    /// Acknowledged, or refused for good (recorded as a violation).
    Settled,
    /// Not acknowledged: retry with the same Idempotency-Key (notes are not retried).
    Unanswered,
}

fn note_value(key: &str, seq: u64) -> String {
    format!("{key}#{seq}#{}", "n".repeat(120))
}

/// The sequence number of a register value written by [`note_value`] for `key`.
fn note_seq(key: &str, value: &str) -> Option<u64> {
    let rest = value.strip_prefix(key)?.strip_prefix('#')?;
    rest.split('#').next()?.parse().ok()
}

impl Ctx {
    fn op(&self, region: &'static str, kind: Kind, worker: usize, i: u64) -> Op {
        let (key, value) = match kind {
            Kind::Incr => ("total".to_string(), r#"{"by":1}"#.to_string()),
            Kind::Note => {
                let key = format!("n-{region}-{worker}-{}", i % NOTE_KEYS);
                let value = note_value(&key, i);
                (key, value)
            }
            Kind::Sync => {
                let key = format!("o-{region}-{worker}-{i}");
                let value = format!("order {i} of {region}/{worker}");
                (key, value)
            }
        };
        if let Kind::Incr = kind {
            self.ledger.lock().expect("ledger").incr_ids += 1;
        }
        Op {
            region,
            kind,
            key,
            value,
            idempotency_key: format!("{kind:?}-{region}-{worker}-{i}"),
            seq: i,
        }
    }

    async fn attempt(&self, op: &Op) -> Attempt {
        let base = &self.bases[op.region];
        let req = match op.kind {
            Kind::Incr => self
                .client
                .post(format!("{base}/v1/kv/hits/{}/incr", op.key))
                .header("idempotency-key", &op.idempotency_key),
            Kind::Note => self.client.put(format!("{base}/v1/kv/notes/{}", op.key)),
            Kind::Sync => self
                .client
                .put(format!("{base}/v1/kv/orders/{}", op.key))
                .header("idempotency-key", &op.idempotency_key),
        };
        let during_outage = self.victim_down.load(Ordering::SeqCst);
        let resp = match req.body(op.value.clone()).send().await {
            Ok(r) => r,
            Err(_) => {
                *self
                    .ledger
                    .lock()
                    .expect("ledger")
                    .transport_errors
                    .entry(op.region)
                    .or_default() += 1;
                return Attempt::Unanswered;
            }
        };
        let status = resp.status();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        let body = resp.text().await.unwrap_or_default();
        match (op.kind, status.as_u16()) {
            (Kind::Incr, 200) => {
                let mut l = self.ledger.lock().expect("ledger");
                l.incr_acked += 1;
                l.replays += u64::from(replayed);
            }
            (Kind::Note, 200 | 201) => {
                let mut l = self.ledger.lock().expect("ledger");
                let e = l.notes.entry(op.key.clone()).or_insert((op.region, 0));
                e.1 = e.1.max(op.seq);
            }
            (Kind::Sync, 200 | 201) => {
                self.check_on_a_second_region(op).await;
                let mut l = self.ledger.lock().expect("ledger");
                l.replays += u64::from(replayed);
                if op.region != VICTIM && during_outage {
                    l.orders_while_down += 1;
                }
                l.orders
                    .insert(op.key.clone(), (op.region, op.value.clone()));
            }
            (Kind::Sync, 503) if body.contains("quorum_unavailable") => {
                *self
                    .ledger
                    .lock()
                    .expect("ledger")
                    .quorum_unavailable
                    .entry(op.region)
                    .or_default() += 1;
                return Attempt::Unanswered;
            }
            _ => self.ledger.lock().expect("ledger").violations.push(format!(
                "{} {:?} {}: unexpected {status}: {body}",
                op.region, op.kind, op.key
            )),
        }
        Attempt::Settled
    }

    /// An acknowledged sync write must already be readable in a second region (quorum 2).
    async fn check_on_a_second_region(&self, op: &Op) {
        let mut found = Vec::new();
        let mut unreachable = 0;
        for other in REGIONS.iter().filter(|r| **r != op.region) {
            let url = format!("{}/v1/kv/orders/{}", self.bases[other], op.key);
            match self.client.get(url).send().await {
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if status == StatusCode::OK && body == op.value {
                        return;
                    }
                    found.push(format!("{other}: {status} {body:?}"));
                }
                Err(_) => unreachable += 1,
            }
        }
        let mut l = self.ledger.lock().expect("ledger");
        if unreachable > 0 {
            // The quorum peer may be the region just killed; convergence checks it later.
            l.unverified += 1;
        } else {
            l.violations.push(format!(
                "orders/{} acknowledged by {} but on no other region right after: {found:?}",
                op.key, op.region
            ));
        }
    }
}

/// One client: loads until `stop_at`, then retries its unanswered increments and sync writes
/// with their Idempotency-Keys until acknowledged or `retry_until`.
async fn client(
    ctx: Arc<Ctx>,
    region: &'static str,
    kind: Kind,
    worker: usize,
    stop_at: Instant,
    retry_until: Instant,
) {
    let mut unanswered = Vec::new();
    let mut i = 0;
    while Instant::now() < stop_at && i < MAX_OPS_PER_WORKER {
        i += 1;
        let op = ctx.op(region, kind, worker, i);
        if let Attempt::Unanswered = ctx.attempt(&op).await {
            if !matches!(kind, Kind::Note) {
                unanswered.push(op);
            }
            tokio::time::sleep(PACE).await;
        }
    }
    for op in unanswered {
        while let Attempt::Unanswered = ctx.attempt(&op).await {
            if Instant::now() > retry_until {
                ctx.ledger.lock().expect("ledger").violations.push(format!(
                    "{region} {kind:?} {} ({}) never acknowledged within {RETRY_FOR:?} of retries",
                    op.key, op.idempotency_key
                ));
                break;
            }
            tokio::time::sleep(PACE).await;
        }
    }
}

/// Every live key of `keyspace` in `region` with its text value.
async fn scan(ctx: &Ctx, region: &str, keyspace: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    for _ in 0..1_000 {
        let url = format!(
            "{}/v1/kv/{keyspace}?limit=1000&values=true&after={after}",
            ctx.bases[region]
        );
        let page: Value = ctx
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        for item in page["items"].as_array().ok_or(format!("bad page {page}"))? {
            let key = item["key"].as_str().unwrap_or_default().to_string();
            out.insert(key, item["value"].as_str().unwrap_or_default().to_string());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => return Ok(out),
        }
    }
    Err(format!("{keyspace} in {region}: more than 1000 pages"))
}

/// What differs, in any region, from what the clients were acknowledged.
async fn divergences(ctx: &Ctx, want_total: u64) -> Vec<String> {
    let (notes, orders) = {
        let l = ctx.ledger.lock().expect("ledger");
        (l.notes.clone(), l.orders.clone())
    };
    let mut out = Vec::new();
    for region in REGIONS {
        let total = match ctx
            .client
            .get(format!("{}/v1/kv/hits/total", ctx.bases[region]))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if total != want_total.to_string() {
            out.push(format!(
                "{region}: hits/total: expected {want_total} (acknowledged increments), got {total}"
            ));
        }
        match scan(ctx, region, "notes").await {
            Err(e) => out.push(format!("{region}: scanning notes: {e}")),
            Ok(seen) => {
                for (key, (origin, seq)) in &notes {
                    let got = seen.get(key);
                    if got.and_then(|v| note_seq(key, v)).is_none_or(|s| s < *seq) {
                        out.push(format!(
                            "{region}: notes/{key}: expected write #{seq} of {origin} or later, got {:?}",
                            got.map(|v| v.split('#').take(2).collect::<Vec<_>>().join("#"))
                        ));
                    }
                }
            }
        }
        match scan(ctx, region, "orders").await {
            Err(e) => out.push(format!("{region}: scanning orders: {e}")),
            Ok(seen) => {
                for (key, (origin, value)) in &orders {
                    if seen.get(key) != Some(value) {
                        out.push(format!(
                            "{region}: orders/{key} (sync, acknowledged by {origin}): expected {value:?}, got {:?}",
                            seen.get(key)
                        ));
                    }
                }
            }
        }
    }
    out
}

/// True when some file under `dir` contains `needle`.
fn grep_dir(dir: &Path, needle: &[u8]) -> bool {
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
async fn three_processes_converge_through_a_sigkill() {
    let started = Instant::now();
    // Held to the end of the test: dropping a relay cuts its link.
    let mut relays = Vec::new();
    let mut cluster = Cluster::new(&mut relays).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for r in REGIONS {
        cluster.spawn(r);
    }
    for r in REGIONS {
        wait_ready(&http, &cluster.base(r)).await;
    }
    wait_links_settled(&http, &cluster, Duration::from_secs(15)).await;

    let ctx = Arc::new(Ctx {
        client: http.clone(),
        bases: REGIONS.iter().map(|r| (*r, cluster.base(r))).collect(),
        ledger: Mutex::new(Ledger::default()),
        victim_down: AtomicBool::new(false),
    });
    let t0 = Instant::now();
    let stop_at = t0 + LOAD;
    let mut clients = Vec::new();
    for region in REGIONS {
        for kind in [Kind::Incr, Kind::Note, Kind::Sync] {
            for worker in 0..WORKERS_PER_KIND {
                clients.push(tokio::spawn(client(
                    Arc::clone(&ctx),
                    region,
                    kind,
                    worker,
                    stop_at,
                    stop_at + RETRY_FOR,
                )));
            }
        }
    }
    let eu_base = cluster.base("eu-west-1");
    let canary = |n: u32| {
        let (http, base) = (http.clone(), eu_base.clone());
        async move {
            let r = http
                .put(format!("{base}/v1/kv/passports/{CANARY_KEY}-{n}"))
                .body(format!("{CANARY_VALUE}-{n}"))
                .send()
                .await
                .expect("canary write");
            assert_eq!(r.status(), StatusCode::CREATED, "canary {n}");
        }
    };
    tokio::time::sleep_until((t0 + KILL_AT / 3).into()).await;
    canary(1).await;
    tokio::time::sleep_until((t0 + KILL_AT).into()).await;
    cluster.kill(VICTIM);
    ctx.victim_down.store(true, Ordering::SeqCst);
    tokio::time::sleep_until((t0 + RESTART_AT).into()).await;
    cluster.spawn(VICTIM);
    wait_ready(&http, &cluster.base(VICTIM)).await;
    ctx.victim_down.store(false, Ordering::SeqCst);
    canary(2).await;
    for c in clients {
        c.await.expect("client task");
    }
    let retries_done = t0.elapsed();

    let (violations, want_total) = {
        let l = ctx.ledger.lock().expect("ledger");
        println!(
            "increments {} (acknowledged {}), registers {} keys, sync writes acknowledged {} \
             ({} sent while {VICTIM} was down, {} not checkable at once), 503 quorum_unavailable {:?}, \
             replays {}, transport errors {:?}; load and retries took {retries_done:?}",
            l.incr_ids,
            l.incr_acked,
            l.notes.len(),
            l.orders.len(),
            l.orders_while_down,
            l.unverified,
            l.quorum_unavailable,
            l.replays,
            l.transport_errors
        );
        assert!(
            l.transport_errors.keys().all(|r| *r == VICTIM),
            "only {VICTIM} was killed, yet: {:?}",
            l.transport_errors
        );
        assert!(
            l.incr_acked > 100 && l.notes.len() > 50 && l.orders.len() >= 20,
            "too little load to mean anything"
        );
        assert!(
            l.orders_while_down > 0,
            "two of three regions are a quorum: sync writes must succeed while {VICTIM} is down"
        );
        (l.violations.clone(), l.incr_ids)
    };
    assert!(
        violations.is_empty(),
        "{} violations during the load:\n{}",
        violations.len(),
        violations.join("\n")
    );
    // Every increment was acknowledged (after retries), so each region must count exactly them.
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let diff = divergences(&ctx, want_total).await;
        if diff.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within {CONVERGE_WITHIN:?}; {} divergences, first ones:\n{}",
            diff.len(),
            diff[..diff.len().min(20)].join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converged = t0.elapsed();
    wait_links_settled(&http, &cluster, Duration::from_secs(15)).await;

    for r in ["us-east-1", "ap-southeast-1"] {
        let resp = http
            .get(format!(
                "{}/v1/kv/passports/{CANARY_KEY}-1",
                cluster.base(r)
            ))
            .send()
            .await
            .expect("get canary");
        assert_eq!(
            resp.status(),
            StatusCode::MISDIRECTED_REQUEST,
            "canary at {r}"
        );
        assert_eq!(
            resp.headers()["meridian-allowed-region"],
            "eu-west-1",
            "canary at {r}"
        );
    }
    let resp = http
        .get(format!(
            "{}/v1/kv/passports/{CANARY_KEY}-2",
            cluster.base("eu-west-1")
        ))
        .send()
        .await
        .expect("get canary");
    assert_eq!(
        resp.text().await.expect("body"),
        format!("{CANARY_VALUE}-2")
    );

    for r in REGIONS {
        cluster.kill(r);
    }
    for r in REGIONS {
        let data = cluster.data(r);
        let found = [CANARY_KEY, CANARY_VALUE].map(|c| grep_dir(&data, c.as_bytes()));
        let home = r == "eu-west-1";
        assert_eq!(
            found,
            [home, home],
            "eu-pinned canary (key, value) in {r}'s data directory: {found:?}"
        );
    }
    println!(
        "converged {converged:?} after the load started; whole test {:?}",
        started.elapsed()
    );
}
