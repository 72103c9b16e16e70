//! Replication benchmark driver for `bench/repl/run.sh`: loads running region nodes (which
//! replicate through a `meridian wan` emulator) and measures, with one clock in one process:
//!
//! 1. async replication lag — a write's acknowledgement at its origin until its `/v1/watch`
//!    event in each other region — and the replication bytes per op from the nodes' `/metrics`;
//! 2. sync (quorum = 2) write latency from closed-loop clients;
//! 3. convergence after a partition: one region isolated through the emulator's control port
//!    while every region keeps writing, then healed; the time from the heal until every region's
//!    applied version vector is the same (and until every acknowledged write was seen on the
//!    other regions' watch feeds).
//!
//! Every loop is bounded in count and time. Arguments (all required):
//! `--node REGION=URL` ×N, `--delay A:B:MS` per pair, `--control ADDR`, `--rate WRITES_PER_S`,
//! `--secs S`, `--sync-secs S`, `--partition-secs S`, `--isolate REGION`, `--secret-file F`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use meridian_node::metrics::{REPL_DELAY, REPL_SENT_BYTES};
use meridian_store::COMMIT_SECONDS;

/// Bytes of every value.
const VALUE_BYTES: usize = 256;
/// Most writes in flight per region (one HTTP/1.1 connection each); a tick finding no
/// connection free counts a skipped write.
const IN_FLIGHT: usize = 128;
/// Longest wait for one async write's answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Closed-loop clients per region for sync writes.
const SYNC_CLIENTS: usize = 8;
/// How long to wait for replication to finish after a phase.
const DRAIN: Duration = Duration::from_secs(60);
/// A drain gives up early when this long passes without a new delivery.
const STALL: Duration = Duration::from_secs(5);
/// Most subscriptions of one watch stream.
const RESUBSCRIBE: usize = 50;
/// Longest wait for the regions' applied version vectors to agree after a heal.
const CONVERGE: Duration = Duration::from_secs(120);

type Args = BTreeMap<String, Vec<String>>;

struct Bench {
    client: reqwest::Client,
    nodes: BTreeMap<String, String>,
    /// Acknowledgement instant per async key.
    acks: Mutex<HashMap<String, Instant>>,
    /// (key, region where seen, instant) of every remote change observed.
    seen: Mutex<Vec<(String, String, Instant)>>,
    /// Watch streams that ended (lagged or failed).
    watch_failures: Mutex<Vec<String>>,
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run(args))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected `{flag}`"))?;
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        args.entry(name.to_string()).or_default().push(value);
    }
    Ok(args)
}

fn one(args: &Args, name: &str) -> Result<String, String> {
    args.get(name)
        .and_then(|v| v.last().cloned())
        .ok_or_else(|| format!("--{name} is required"))
}

fn num(args: &Args, name: &str) -> Result<u64, String> {
    one(args, name)?
        .parse()
        .map_err(|_| format!("--{name}: not a number"))
}

async fn run(args: Args) -> Result<(), String> {
    let nodes: BTreeMap<String, String> = args
        .get("node")
        .ok_or("--node REGION=URL is required")?
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(r, u)| (r.to_string(), u.to_string()))
                .ok_or_else(|| format!("--node {s}: expected REGION=URL"))
        })
        .collect::<Result<_, _>>()?;
    let mut delays: BTreeMap<(String, String), f64> = BTreeMap::new();
    for d in args.get("delay").ok_or("--delay A:B:MS is required")? {
        let p: Vec<&str> = d.split(':').collect();
        let [a, b, ms] = p.as_slice() else {
            return Err(format!("--delay {d}: expected A:B:MS"));
        };
        let ms: f64 = ms.parse().map_err(|_| format!("--delay {d}: bad ms"))?;
        delays.insert((a.to_string(), b.to_string()), ms);
        delays.insert((b.to_string(), a.to_string()), ms);
    }
    let control = one(&args, "control")?;
    let rate = num(&args, "rate")?;
    let secs = num(&args, "secs")?;
    let sync_secs = num(&args, "sync-secs")?;
    let partition_secs = num(&args, "partition-secs")?;
    let isolate = one(&args, "isolate")?;
    let secret_file = one(&args, "secret-file")?;
    let secret = std::fs::read_to_string(&secret_file)
        .map_err(|e| format!("--secret-file {secret_file}: {e}"))?
        .trim()
        .to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let bench = Arc::new(Bench {
        client,
        nodes,
        acks: Mutex::new(HashMap::new()),
        seen: Mutex::new(Vec::new()),
        watch_failures: Mutex::new(Vec::new()),
    });
    let regions: Vec<String> = bench.nodes.keys().cloned().collect();
    for r in &regions {
        for origin in regions.iter().filter(|o| *o != r) {
            tokio::spawn(watch(bench.clone(), r.clone(), origin.clone()));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 1: async writes at `rate` per region.
    println!("## async: {rate} writes/s per region for {secs} s, {VALUE_BYTES} B values");
    let bytes_before = repl_sent_bytes(&bench).await?;
    let wan_before = wan_bytes(&control).await?;
    let commits_before = histogram_buckets(&bench, COMMIT_SECONDS).await?;
    let delay_before = histogram_buckets(&bench, REPL_DELAY).await?;
    let counts = write_phase(&bench, &regions, "a", rate, Duration::from_secs(secs)).await;
    let keys_a = acked_with(&bench, ".a.");
    drain(&bench, &regions, &keys_a).await;
    let bytes_after = repl_sent_bytes(&bench).await?;
    let wan_after = wan_bytes(&control).await?;
    let commits_after = histogram_buckets(&bench, COMMIT_SECONDS).await?;
    let delay_after = histogram_buckets(&bench, REPL_DELAY).await?;
    report_counts(&counts, secs);
    report_lag(&bench, &keys_a, &delays);
    report_delay(&delay_before, &delay_after, &delays);
    report_commits(&commits_before, &commits_after);
    let ops = keys_a.len() as f64;
    let sent = (bytes_after - bytes_before) as f64;
    let per_op_link = sent / (ops * (regions.len() - 1) as f64);
    let wan = (wan_after - wan_before) as f64 / (ops * (regions.len() - 1) as f64);
    let key_bytes = keys_a.iter().map(|(k, _)| k.len()).sum::<usize>() as f64 / ops;
    let meta = per_op_link - VALUE_BYTES as f64;
    println!(
        "wire: {sent:.0} replication bytes for {ops:.0} ops × {} peers = {per_op_link:.1} B per op per link \
         (stream versions {}); on the emulated wire incl. HTTP framing and the other direction: {wan:.1} B",
        regions.len() - 1,
        stream_versions(&bench, &secret).await?
    );
    println!(
        "metadata beyond the {VALUE_BYTES} B value: {meta:.1} B per op including the key \
         (target ≤ 16: ratio {:.2}); {:.1} B excluding the key's {key_bytes:.1} B (mean length)",
        meta / 16.0,
        meta - key_bytes
    );

    // Phase 2: sync writes.
    println!(
        "## sync: quorum = 2, {SYNC_CLIENTS} closed-loop clients per region for {sync_secs} s"
    );
    sync_phase(&bench, &regions, &delays, Duration::from_secs(sync_secs)).await;

    // Phase 3: partition, heal, convergence.
    println!(
        "## partition: {isolate} cut from every region for {partition_secs} s while all write at {rate}/s"
    );
    control_cmd(&control, &format!("isolate {isolate}")).await?;
    let counts = write_phase(
        &bench,
        &regions,
        "p",
        rate,
        Duration::from_secs(partition_secs),
    )
    .await;
    report_counts(&counts, partition_secs);
    let keys_p = acked_with(&bench, ".p.");
    let healed = Instant::now();
    control_cmd(&control, "heal").await?;
    match converged(&bench, &secret).await? {
        Some(t) => println!(
            "convergence after heal: {:.2} s until every region's applied version vector is the same",
            t.saturating_duration_since(healed).as_secs_f64()
        ),
        None => println!("NOT converged: applied version vectors still differ after {CONVERGE:?}"),
    }
    let missing = drain(&bench, &regions, &keys_p).await;
    let seen = bench.seen.lock().expect("invariant: not poisoned").clone();
    let last = seen
        .iter()
        .filter(|(k, _, _)| k.contains(".p."))
        .map(|(_, _, t)| *t)
        .max();
    match (missing, last) {
        (0, Some(t)) => println!(
            "  … and every acknowledged write visible via /v1/watch: {:.2} s after the heal ({} acknowledged writes, every one visible in every other region)",
            t.saturating_duration_since(healed).as_secs_f64(),
            keys_p.len()
        ),
        (m, _) => println!(
            "  {m} (key, region) deliveries not seen on /v1/watch (a feed that dropped this slow subscriber misses changes; see below)"
        ),
    }
    let failures = bench
        .watch_failures
        .lock()
        .expect("invariant: not poisoned");
    if !failures.is_empty() {
        println!("watch streams that ended: {failures:?}");
    }
    Ok(())
}

/// Follows region `at`'s watch feed for keys written in `origin`, recording each arrival;
/// resubscribes (at most [`RESUBSCRIBE`] times) when the feed drops a subscriber that fell
/// behind — the changes it missed then count as missing deliveries, not as lag.
async fn watch(bench: Arc<Bench>, at: String, origin: String) {
    for _ in 0..RESUBSCRIBE {
        watch_once(&bench, &at, &origin).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one field of a watch event the bench reads.
#[derive(serde::Deserialize)]
struct WatchEvent<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
}

async fn watch_once(bench: &Bench, at: &str, origin: &str) {
    let url = format!("{}/v1/watch/notes?prefix={origin}.", bench.nodes[at]);
    let resp = reqwest::Client::new().get(&url).send().await;
    let mut resp = match resp {
        Ok(r) if r.status().is_success() => r,
        other => {
            bench
                .watch_failures
                .lock()
                .expect("invariant: not poisoned")
                .push(format!("{url}: {other:?}"));
            return;
        }
    };
    let mut buf = String::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            end => {
                bench
                    .watch_failures
                    .lock()
                    .expect("invariant: not poisoned")
                    .push(format!("{url}: ended {end:?}"));
                return;
            }
        };
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            if line.starts_with("event: lagged") {
                bench
                    .watch_failures
                    .lock()
                    .expect("invariant: not poisoned")
                    .push(format!("{url}: lagged"));
            }
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            if let Ok(event) = serde_json::from_str::<WatchEvent<'_>>(data.trim()) {
                bench.seen.lock().expect("invariant: not poisoned").push((
                    event.key.to_string(),
                    at.to_string(),
                    now,
                ));
            }
        }
    }
}

/// Per region: (attempted, acknowledged, failed, skipped because IN_FLIGHT were busy).
type Counts = BTreeMap<String, (u64, u64, u64, u64)>;

/// An HTTP/1.1 connection of the async write phase: hyper's connection-level client, without
/// a pool or URL parsing, so the driver's own CPU stays small beside the nodes it measures.
type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a connection to the node at `base` (`http://host:port`).
async fn connect(base: &str) -> Result<Conn, String> {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// PUTs `value` at `key` of the `notes` keyspace on `conn`: whether a 2xx came back within
/// [`WRITE_TIMEOUT`] (the body read to its end, so the connection can be reused).
async fn put_note(conn: &mut Conn, key: &str, value: Vec<u8>) -> bool {
    let req = hyper::Request::put(format!("/v1/kv/notes/{key}"))
        .header(hyper::header::HOST, "meridian")
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(value)));
    let Ok(req) = req else {
        return false;
    };
    let exchange = async {
        conn.ready().await.ok()?;
        let resp = conn.send_request(req).await.ok()?;
        let ok = resp.status().is_success();
        resp.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, exchange).await,
        Ok(Some(true))
    )
}

/// Paced async writes (keys `{origin}.{phase}.{n}`) from every region at once, each region
/// over [`IN_FLIGHT`] connections.
async fn write_phase(
    bench: &Arc<Bench>,
    regions: &[String],
    phase: &str,
    rate: u64,
    secs: Duration,
) -> Counts {
    let mut tasks = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let bench = bench.clone();
        let (r, phase) = (r.clone(), phase.to_string());
        tasks.push(tokio::spawn(async move {
            let base = bench.nodes[&r].clone();
            let (idle_tx, mut idle) = tokio::sync::mpsc::unbounded_channel::<Conn>();
            let mut open = 0;
            for _ in 0..IN_FLIGHT {
                match connect(&base).await {
                    Ok(c) => {
                        open += 1;
                        let _ = idle_tx.send(c);
                    }
                    Err(e) => eprintln!("{r}: a writer connection failed: {e}"),
                }
            }
            let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64)));
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64 + phase.len() as u64 * 7);
            let tick = Duration::from_millis(10);
            let mut ticker = tokio::time::interval(tick);
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < secs {
                ticker.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due.min(rate * secs.as_secs()) {
                    n += 1;
                    let Ok(mut conn) = idle.try_recv() else {
                        counts.lock().expect("invariant: not poisoned").3 += 1;
                        continue;
                    };
                    let key = format!("{r}.{phase}.{n}");
                    let mut value = vec![0u8; VALUE_BYTES];
                    rng.fill(&mut value[..]);
                    let (bench, counts, idle_tx, base) =
                        (bench.clone(), counts.clone(), idle_tx.clone(), base.clone());
                    tokio::spawn(async move {
                        let ok = put_note(&mut conn, &key, value).await;
                        let at = Instant::now();
                        if ok {
                            bench
                                .acks
                                .lock()
                                .expect("invariant: not poisoned")
                                .insert(key, at);
                        }
                        {
                            let mut c = counts.lock().expect("invariant: not poisoned");
                            c.0 += 1;
                            if ok {
                                c.1 += 1;
                            } else {
                                c.2 += 1;
                            }
                        }
                        // A failed exchange may leave the connection unusable: open another.
                        let conn = if ok {
                            Some(conn)
                        } else {
                            connect(&base).await.ok()
                        };
                        if let Some(conn) = conn {
                            let _ = idle_tx.send(conn);
                        }
                    });
                }
            }
            // Wait for the writes in flight (each bounded by WRITE_TIMEOUT and one connect).
            drop(idle_tx);
            let deadline = Instant::now() + WRITE_TIMEOUT * 2;
            for _ in 0..open {
                if tokio::time::timeout_at(deadline, idle.recv())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let c = *counts.lock().expect("invariant: not poisoned");
            (r, c)
        }));
    }
    let mut out = Counts::new();
    for t in tasks {
        if let Ok((r, c)) = t.await {
            out.insert(r, c);
        }
    }
    out
}

fn report_counts(counts: &Counts, secs: u64) {
    for (r, (tried, acked, failed, skipped)) in counts {
        println!(
            "  {r}: {acked} acknowledged ({:.0}/s), {failed} failed, {skipped} skipped (client saturated), {tried} sent",
            *acked as f64 / secs as f64
        );
    }
}

fn acked_with(bench: &Bench, infix: &str) -> Vec<(String, String)> {
    bench
        .acks
        .lock()
        .expect("invariant: not poisoned")
        .keys()
        .filter(|k| k.contains(infix))
        .map(|k| (k.clone(), k.split('.').next().unwrap_or("").to_string()))
        .collect()
}

/// Waits (at most [`DRAIN`]) until every key was seen in every region but its origin; returns
/// how many (key, region) deliveries are still missing.
async fn drain(bench: &Bench, regions: &[String], keys: &[(String, String)]) -> usize {
    let start = Instant::now();
    let (mut last_missing, mut progress_at) = (usize::MAX, Instant::now());
    loop {
        let missing = {
            let seen = bench.seen.lock().expect("invariant: not poisoned");
            let have: std::collections::HashSet<(&str, &str)> = seen
                .iter()
                .map(|(k, r, _)| (k.as_str(), r.as_str()))
                .collect();
            keys.iter()
                .flat_map(|(k, o)| {
                    regions
                        .iter()
                        .filter(move |r| *r != o)
                        .map(move |r| (k.as_str(), r.as_str()))
                })
                .filter(|kr| !have.contains(kr))
                .count()
        };
        if missing < last_missing {
            (last_missing, progress_at) = (missing, Instant::now());
        }
        if missing == 0 || start.elapsed() > DRAIN || progress_at.elapsed() > STALL {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report_lag(bench: &Bench, keys: &[(String, String)], delays: &BTreeMap<(String, String), f64>) {
    let acks = bench.acks.lock().expect("invariant: not poisoned");
    let seen = bench.seen.lock().expect("invariant: not poisoned");
    let origin_of: HashMap<&str, &str> =
        keys.iter().map(|(k, o)| (k.as_str(), o.as_str())).collect();
    let mut lags: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    // Per link, how many arrivals missed the p99 target in each second of the phase (from the
    // first acknowledgement): whether the tail is spread out or comes in bursts.
    let start = acks.values().min().copied();
    let mut late: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    let mut early = 0u64;
    for (k, at, t) in seen.iter() {
        let (Some(origin), Some(ack)) = (origin_of.get(k.as_str()), acks.get(k)) else {
            continue;
        };
        if t < ack {
            early += 1;
        }
        let ms = t.saturating_duration_since(*ack).as_secs_f64() * 1000.0;
        let link = (origin.to_string(), at.clone());
        let one_way = delays.get(&link).copied().unwrap_or(f64::INFINITY);
        if ms > one_way + 25.0
            && let Some(start) = start
        {
            let second = ack.saturating_duration_since(start).as_secs() as usize;
            let counts = late.entry(link.clone()).or_default();
            if counts.len() <= second {
                counts.resize(second + 1, 0);
            }
            counts[second] += 1;
        }
        lags.entry(link).or_default().push(ms);
    }
    println!("async lag (ack at origin → visible via /v1/watch in the other region):");
    println!(
        "  | link | one-way ms | n | p50 ms | p99 ms | p50 − one-way | p99 − one-way | targets +5 / +25 |"
    );
    for ((o, r), v) in lags.iter_mut() {
        v.sort_by(f64::total_cmp);
        let d = delays
            .get(&(o.clone(), r.clone()))
            .copied()
            .unwrap_or(f64::NAN);
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!(
            "  | {o} → {r} | {d:.0} | {} | {p50:.1} | {p99:.1} | {:+.1} | {:+.1} | {} / {} |",
            v.len(),
            p50 - d,
            p99 - d,
            if p50 - d <= 5.0 { "met" } else { "missed" },
            if p99 - d <= 25.0 { "met" } else { "missed" },
        );
    }
    if early > 0 {
        println!("  ({early} events arrived before the client saw the origin's ack; counted as 0)");
    }
    println!("writes over one-way + 25 ms, by second of the phase their acknowledgement fell in:");
    for ((o, r), counts) in &late {
        println!("  {o} → {r}: {counts:?}");
    }
}

async fn sync_phase(
    bench: &Arc<Bench>,
    regions: &[String],
    delays: &BTreeMap<(String, String), f64>,
    secs: Duration,
) {
    let mut tasks = Vec::new();
    for r in regions {
        for w in 0..SYNC_CLIENTS {
            let bench = bench.clone();
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let start = Instant::now();
                let mut i = 0u64;
                while start.elapsed() < secs && i < 100_000 {
                    i += 1;
                    let url = format!("{}/v1/kv/orders/{r}.s.{w}.{i}", bench.nodes[&r]);
                    let t = Instant::now();
                    let res = bench
                        .client
                        .put(url)
                        .header("content-type", "application/octet-stream")
                        .body(vec![b'o'; VALUE_BYTES])
                        .send()
                        .await;
                    match res {
                        Ok(resp) if resp.status().is_success() => {
                            lat.push(t.elapsed().as_secs_f64() * 1000.0)
                        }
                        _ => errors += 1,
                    }
                }
                (r, lat, errors)
            }));
        }
    }
    let mut per: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
    for t in tasks {
        if let Ok((r, lat, e)) = t.await {
            let entry = per.entry(r).or_default();
            entry.0.extend(lat);
            entry.1 += e;
        }
    }
    println!(
        "  | region | n | errors | p50 ms | p99 ms | nearest peer RTT ms | p50 target | ratio |"
    );
    for (r, (mut v, e)) in per {
        v.sort_by(f64::total_cmp);
        let nearest = regions
            .iter()
            .filter(|p| **p != r)
            .filter_map(|p| delays.get(&(r.clone(), p.clone())))
            .fold(f64::INFINITY, |a, b| a.min(2.0 * b));
        let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
        println!(
            "  | {r} | {} | {e} | {p50:.1} | {p99:.1} | {nearest:.0} | ≤ {:.0} | {:.2} |",
            v.len(),
            nearest + 3.0,
            p50 / (nearest + 3.0)
        );
    }
}

/// When every node's `applied` version vector (`/v1/admin/status`) is the same, polled every
/// 20 ms for at most [`CONVERGE`].
async fn converged(bench: &Bench, secret: &str) -> Result<Option<Instant>, String> {
    let start = Instant::now();
    while start.elapsed() < CONVERGE {
        let mut tokens = Vec::new();
        for url in bench.nodes.values() {
            let status: serde_json::Value = bench
                .client
                .get(format!("{url}/v1/admin/status"))
                .bearer_auth(secret)
                .send()
                .await
                .map_err(|e| format!("{url}/v1/admin/status: {e}"))?
                .json()
                .await
                .map_err(|e| format!("{url}/v1/admin/status: {e}"))?;
            tokens.push(status["applied"].as_str().unwrap_or("").to_string());
        }
        if tokens.windows(2).all(|w| w[0] == w[1]) && !tokens[0].is_empty() {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// The protocol versions of every node's replication links (`/v1/admin/status`), e.g. `[2]`.
async fn stream_versions(bench: &Bench, secret: &str) -> Result<String, String> {
    let mut versions = std::collections::BTreeSet::new();
    for url in bench.nodes.values() {
        let status: serde_json::Value = bench
            .client
            .get(format!("{url}/v1/admin/status"))
            .bearer_auth(secret)
            .send()
            .await
            .map_err(|e| format!("{url}/v1/admin/status: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url}/v1/admin/status: {e}"))?;
        if let Some(peers) = status["peers"].as_object() {
            versions.extend(peers.values().map(|p| p["wire_version"].to_string()));
        }
    }
    Ok(format!("{versions:?}"))
}

/// The Prometheus text of the node at `url`.
async fn metrics_text(bench: &Bench, url: &str) -> Result<String, String> {
    bench
        .client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| format!("{url}/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| e.to_string())
}

/// Sum of `meridian_repl_sent_bytes_total` over every node.
async fn repl_sent_bytes(bench: &Bench) -> Result<u64, String> {
    let mut total = 0.0;
    for url in bench.nodes.values() {
        let text = metrics_text(bench, url).await?;
        total += text
            .lines()
            .filter(|l| l.starts_with(REPL_SENT_BYTES))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total as u64)
}

/// Per (region, series labels other than `le`): the cumulative buckets of one histogram
/// (upper bound in seconds, count), ascending.
type Buckets = BTreeMap<(String, String), Vec<(f64, f64)>>;

async fn histogram_buckets(bench: &Bench, metric: &str) -> Result<Buckets, String> {
    let prefix = format!("{metric}_bucket{{");
    let mut out = Buckets::new();
    for (region, url) in &bench.nodes {
        let text = metrics_text(bench, url).await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let Some((labels, count)) = rest.rsplit_once("} ") else {
                continue;
            };
            let (mut le, mut others) = (None, Vec::new());
            for label in labels.split(',') {
                match label.strip_prefix("le=\"") {
                    Some(v) => le = Some(v.trim_end_matches('"')),
                    None => others.push(label),
                }
            }
            let le = match le {
                Some("+Inf") => f64::INFINITY,
                Some(v) => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                None => continue,
            };
            let Ok(count) = count.trim().parse::<f64>() else {
                continue;
            };
            out.entry((region.clone(), others.join(",")))
                .or_default()
                .push((le, count));
        }
    }
    for b in out.values_mut() {
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(out)
}

/// One series' observations between two snapshots: their count, the bucket bound under which
/// each of `quantiles` falls, and how many exceeded `over` seconds.
fn histogram_delta(
    before: Option<&Vec<(f64, f64)>>,
    end: &[(f64, f64)],
    quantiles: &[f64],
    over: f64,
) -> (f64, Vec<f64>, f64) {
    let at = |i: usize, le: f64| {
        let base = before
            .and_then(|b| b.iter().find(|(l, _)| *l == le))
            .map_or(0.0, |(_, c)| *c);
        end[i].1 - base
    };
    let Some(&(inf, _)) = end.last() else {
        return (0.0, vec![f64::NAN; quantiles.len()], 0.0);
    };
    let total = at(end.len() - 1, inf);
    let bounds = quantiles
        .iter()
        .map(|q| {
            end.iter()
                .enumerate()
                .find(|(i, (le, _))| at(*i, *le) >= total * q)
                .map_or(f64::NAN, |(_, (le, _))| *le)
        })
        .collect();
    let within = end
        .iter()
        .enumerate()
        .find(|(_, (le, _))| *le >= over)
        .map_or(total, |(i, (le, _))| at(i, *le));
    (total, bounds, total - within)
}

/// The group commits (write + fsync) of each region during a phase: how many, the bucket
/// bound their 99th percentile falls under, and how many took over 25 ms — the disk's share
/// of the lag tail (a replicated write is visible only once its apply has committed).
fn report_commits(before: &Buckets, after: &Buckets) {
    println!("group commits (write + fsync) per region during the phase:");
    for (series, end) in after {
        let (total, p, over) = histogram_delta(before.get(series), end, &[0.99], 0.025);
        println!(
            "  {}: {total:.0} commits, p99 ≤ {:.1} ms, {over:.0} over 25 ms",
            series.0,
            p[0] * 1000.0
        );
    }
}

/// The nodes' own view of the lag: `meridian_repl_delay_seconds` per link during a phase,
/// from a write's HLC time at its origin until it was durably applied in the other region —
/// no client in the path, but one bucket of resolution (a few ms).
fn report_delay(before: &Buckets, after: &Buckets, delays: &BTreeMap<(String, String), f64>) {
    println!(
        "replication delay inside the nodes (written at origin → durably applied; bucket bounds):"
    );
    println!("  | link | one-way ms | n | p50 ≤ ms | p99 ≤ ms | p99 − one-way | target +25 |");
    for (series, end) in after {
        let Some(origin) = series
            .1
            .strip_prefix("origin=\"")
            .map(|o| o.trim_end_matches('"'))
        else {
            continue;
        };
        let d = delays
            .get(&(origin.to_string(), series.0.clone()))
            .copied()
            .unwrap_or(f64::NAN);
        let (n, p, _) = histogram_delta(before.get(series), end, &[0.5, 0.99], f64::INFINITY);
        let (p50, p99) = (p[0] * 1000.0, p[1] * 1000.0);
        println!(
            "  | {origin} → {} | {d:.0} | {n:.0} | {p50:.0} | {p99:.0} | ≤ {:+.0} | {} |",
            series.0,
            p99 - d,
            if p99 - d <= 25.0 { "met" } else { "missed" },
        );
    }
}

async fn control_cmd(addr: &str, cmd: &str) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("control {addr}: {e}"))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = tokio::io::BufReader::new(read).lines();
    let answer = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .map_err(|_| "control: no answer".to_string())?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if !answer.starts_with("ok") {
        return Err(format!("control `{cmd}`: {answer}"));
    }
    Ok(answer)
}

/// Bytes the emulator carried over every directed pair.
async fn wan_bytes(addr: &str) -> Result<u64, String> {
    let answer = control_cmd(addr, "bytes").await?;
    Ok(answer
        .split_whitespace()
        .filter_map(|w| w.split_once('=')?.1.parse::<u64>().ok())
        .sum())
}
