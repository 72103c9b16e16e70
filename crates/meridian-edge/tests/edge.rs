//! Integration tests: one or two edges in front of in-process upstream "regions" on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meridian_edge::{Edge, EdgeOptions};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Counters of one upstream app server.
#[derive(Default)]
struct Hits {
    probes: AtomicUsize,
    requests: AtomicUsize,
    posts: AtomicUsize,
    /// Probes seen before the first real request since the last restart (usize::MAX: none yet).
    probes_before_first_request: AtomicUsize,
}

/// An app backend of one region; `kill` closes the listener and every open connection.
struct Upstream {
    addr: SocketAddr,
    region: String,
    hits: Arc<Hits>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    async fn start(region: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut u = Upstream {
            addr: listener.local_addr().unwrap(),
            region: region.to_string(),
            hits: Arc::new(Hits::default()),
            task: None,
        };
        u.run(listener);
        u
    }

    fn run(&mut self, listener: TcpListener) {
        let region = self.region.clone();
        let hits = self.hits.clone();
        hits.probes.store(0, Ordering::SeqCst);
        hits.probes_before_first_request
            .store(usize::MAX, Ordering::SeqCst);
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let region = region.clone();
                let hits = hits.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| app(region.clone(), hits.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.run(listener);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn app(
    region: String,
    hits: Arc<Hits>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health/ready" {
        hits.probes.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    let probes = hits.probes.load(Ordering::SeqCst);
    let _ = hits.probes_before_first_request.compare_exchange(
        usize::MAX,
        probes,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    hits.requests.fetch_add(1, Ordering::SeqCst);
    if req.method() == hyper::Method::POST {
        hits.posts.fetch_add(1, Ordering::SeqCst);
    }
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let zone = req
        .headers()
        .get("meridian-zone")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let proto = req
        .headers()
        .get("x-forwarded-proto")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut resp = Response::builder()
        .header("x-seen-proto", proto)
        .header("x-seen-xff", xff)
        .header("x-seen-zone", zone);
    let text = match path.as_str() {
        "/fail" if region == "a" => {
            resp = resp.status(503);
            "failing".to_string()
        }
        "/replay" if region == "a" => {
            resp = resp.header("meridian-replay", "region=b");
            "wrong region".to_string()
        }
        // A region node's 421s, passed on by the app as they are.
        "/homed-in-c" if region != "c" => {
            resp = resp.status(421).header("meridian-home", "c");
            "wrong_region".to_string()
        }
        "/pinned-to-c" if region != "c" => {
            resp = resp.status(421).header("meridian-allowed-region", "c");
            "residency".to_string()
        }
        // Answers after a while: a request in flight to the backend for that long.
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            format!("{region}:slow")
        }
        "/misdirected" => {
            resp = resp.status(421);
            "misdirected, no region named".to_string()
        }
        // A key pinned to the region `/residency/<region>` names (`next`: the one after
        // this region, whichever it is); elsewhere, the region node's 421 `residency` naming
        // it in `Meridian-Allowed-Region`, passed on by the app as it is.
        p if pinned_to(p, &region).is_some_and(|allowed| allowed != region) => {
            let allowed = pinned_to(p, &region).unwrap_or_default();
            resp = resp
                .status(421)
                .header("content-type", "application/json")
                .header("meridian-allowed-region", allowed.as_str());
            serde_json::json!({"error": {
                "code": "residency",
                "message": format!("keys of keyspace `pinned` may not be held in region `{region}`"),
                "hint": format!("send the request to region `{allowed}`"),
            }})
            .to_string()
        }
        _ => format!("{region}:{}", String::from_utf8_lossy(&body)),
    };
    Ok(resp.body(Full::new(Bytes::from(text))).unwrap())
}

/// The region a `/residency/<region>` path pins its key to, as region `here` reads it
/// (`next`: a → b → c → a); `None` for any other path.
fn pinned_to(path: &str, here: &str) -> Option<String> {
    let named = path.strip_prefix("/residency/")?;
    let next = match here {
        "a" => "b",
        "b" => "c",
        _ => "a",
    };
    Some(if named == "next" { next } else { named }.to_string())
}

struct World {
    ups: Vec<Upstream>,
    proxy: String,
    admin: String,
    edge: Edge,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

const SECRET: &str = "0123456789abcdef0123";

fn config(ups: &[(&str, String)], edges: &[(&str, SocketAddr, SocketAddr)], extra: &str) -> String {
    let mut s =
        String::from("[cluster]\nname = \"t\"\n[zones]\neu = [\"a\"]\nus = [\"b\", \"c\"]\n");
    for (i, (name, url)) in ups.iter().enumerate() {
        s += &format!(
            "[[region]]\nname = \"{name}\"\nnode = \"http://127.0.0.1:{}\"\napp = [\"{url}\"]\n",
            7000 + i
        );
    }
    for (name, listen, admin) in edges {
        s += &format!(
            "[[edge]]\nname = \"{name}\"\nlisten = \"{listen}\"\nadmin = \"{admin}\"\n\
             trusted_proxies = [\"127.0.0.0/8\"]\n"
        );
    }
    s += "[health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\ndown_after = 3\nup_after = 3\n";
    s + extra
}

async fn world(extra: &str, secret: bool) -> World {
    world_with(extra, secret, None).await
}

async fn world_with(extra: &str, secret: bool, tls: Option<Arc<rustls::ServerConfig>>) -> World {
    world_tuned(extra, secret, |o| o.tls = tls).await
}

async fn world_geo(extra: &str, geoip: meridian_edge::geo::GeoIp) -> World {
    world_tuned(extra, false, |o| o.geoip = Some(Arc::new(geoip))).await
}

/// Three upstream regions behind edge `e1`, whose options `tune` sets past the defaults.
async fn world_tuned(extra: &str, secret: bool, tune: impl FnOnce(&mut EdgeOptions)) -> World {
    world_edited(extra, secret, |text| text, tune).await
}

/// [`world_tuned`] with the topology text passed through `edit` first.
async fn world_edited(
    extra: &str,
    secret: bool,
    edit: impl FnOnce(String) -> String,
    tune: impl FnOnce(&mut EdgeOptions),
) -> World {
    let ups = vec![
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (la, aa) = (l.local_addr().unwrap(), a.local_addr().unwrap());
    let names: Vec<(&str, String)> = ups.iter().map(|u| (u.region.as_str(), u.url())).collect();
    let text = edit(config(&names, &[("e1", la, aa)], extra));
    let topo = Arc::new(meridian_core::config::parse("t.toml", &text).unwrap());
    let mut opts = EdgeOptions::new("e1");
    opts.seed = 7;
    if secret {
        opts.secret = Some(SECRET.to_string());
    }
    tune(&mut opts);
    let edge = Edge::new(topo, opts).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(meridian_edge::serve(edge.clone(), l, a, async move {
        let _ = rx.await;
    }));
    World {
        ups,
        proxy: format!("http://{la}"),
        admin: format!("http://{aa}"),
        edge,
        stop: Some(tx),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The admin API's `GET /v1/status`, with the bearer `token` when the edge has a secret.
async fn admin_status(c: &reqwest::Client, admin: &str, token: Option<&str>) -> serde_json::Value {
    let mut req = c.get(format!("{admin}/v1/status"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// Region `region`'s (first) backend as the admin status shows it.
async fn first_backend(c: &reqwest::Client, admin: &str, region: &str) -> serde_json::Value {
    let s = admin_status(c, admin, None).await;
    let r = s["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == region)
        .unwrap();
    r["backends"][0].clone()
}

async fn backend_state(c: &reqwest::Client, admin: &str, region: &str) -> String {
    first_backend(c, admin, region).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

const FAILOVER: &str = "[routing]\npolicy = \"failover\"\norder = [\"a\", \"b\", \"c\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_a_region_mid_load_loses_no_idempotent_request() {
    let mut w = world(FAILOVER, false).await;
    let c = client();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
    let mut load = JoinSet::new();
    for worker in 0..4 {
        let (c, url, stop, failures, served) = (
            c.clone(),
            w.proxy.clone(),
            stop.clone(),
            failures.clone(),
            served.clone(),
        );
        load.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0..20_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                let req = if i % 2 == 0 {
                    c.get(format!("{url}/item/{worker}/{i}"))
                } else {
                    c.post(format!("{url}/order"))
                        .header("idempotency-key", format!("{worker}-{i}"))
                        .body("x")
                };
                match req.send().await {
                    Ok(r) if r.status() == 200 => {
                        let region = r.headers()["meridian-region"].to_str().unwrap().to_string();
                        served.lock().unwrap().push((Instant::now(), region));
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        w.ups[0].hits.requests.load(Ordering::SeqCst) > 0,
        "a serves first"
    );

    let killed = Instant::now();
    w.ups[0].kill();
    let detect_deadline = Duration::from_millis(3 * 200 + 100 + 250);
    loop {
        if backend_state(&c, &w.admin, "a").await == "down" {
            break;
        }
        assert!(
            killed.elapsed() < detect_deadline,
            "a not marked down in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detected = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let restarted = Instant::now();
    w.ups[0].restart().await;
    loop {
        let back = served
            .lock()
            .unwrap()
            .iter()
            .any(|(t, r)| *t > restarted && r == "a");
        if back {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "traffic never returned to a"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}

    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no safe or idempotent request failed"
    );
    let probes = w.ups[0]
        .hits
        .probes_before_first_request
        .load(Ordering::SeqCst);
    assert!(
        probes >= 3,
        "traffic returned after {probes} successful probes, want up_after = 3"
    );
    let served = served.lock().unwrap();
    let between: Vec<&String> = served
        .iter()
        .filter(|(t, _)| *t > killed + Duration::from_millis(50) && *t < restarted)
        .map(|(_, r)| r)
        .collect();
    assert!(
        !between.is_empty() && between.iter().all(|r| *r == "b"),
        "failed over to b"
    );
    eprintln!("detected in {detected:?}; {} requests served", served.len());
}

/// What only a trusted proxy may say is not believed from anyone else: a client outside
/// `trusted_proxies` is routed as itself whatever `X-Forwarded-For` says, its `Meridian-Zone`
/// claims no zone, and the app sees the edge's view (the client's own address, no zone).
#[tokio::test]
async fn untrusted_clients_cannot_claim_an_address_or_a_zone() {
    let w = world_edited(
        "[routing]\npolicy = \"failover\"\nall_down = \"fail-closed\"\n",
        true,
        |text| {
            let trusted = "trusted_proxies = [\"127.0.0.0/8\"]";
            assert!(text.contains(trusted));
            text.replace(trusted, "trusted_proxies = [\"10.0.0.0/8\"]")
        },
        |_| {},
    )
    .await;
    let r = client()
        .get(format!("{}/who", w.proxy))
        .header("meridian-zone", "us")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["meridian-region"],
        "a",
        "first in order, not zone us"
    );
    assert_eq!(r.headers()["x-seen-zone"], "");
    assert_eq!(r.headers()["x-seen-xff"], "127.0.0.1");

    // Located by its own address: an X-Forwarded-For naming a German client is not believed.
    let untrusted = |text: String| {
        text.replace(
            "trusted_proxies = [\"127.0.0.0/8\"]",
            "trusted_proxies = [\"10.0.0.0/8\"]",
        )
    };
    let extra = "[routing]\npolicy = \"geo\"\n[routing.geo]\nDE = \"c\"\ndefault = \"a\"\n";
    let geo = Arc::new(tiny_geoip());
    let w = world_edited(extra, false, untrusted, |o| o.geoip = Some(geo)).await;
    let r = client()
        .get(format!("{}/g", w.proxy))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["meridian-region"],
        "a",
        "the default, not DE's region"
    );
}

#[tokio::test]
async fn residency_never_leaves_the_zone_and_fails_closed() {
    let mut w = world(
        "[routing]\npolicy = \"failover\"\nall_down = \"fail-closed\"\n",
        true,
    )
    .await;
    let c = client();
    let tok = meridian_edge::token::sign(&serde_json::json!({"zone": "eu"}), SECRET.as_bytes());
    let r = c
        .get(format!("{}/x", w.proxy))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["meridian-region"], "a");
    assert_eq!(r.headers()["x-seen-zone"], "eu");
    // The scheme is case-insensitive (RFC 9110 §11.1): a lower-cased one keeps the claim.
    let r = c
        .get(format!("{}/x", w.proxy))
        .header("authorization", format!("bearer {tok}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-seen-zone"], "eu", "bearer in lower case");
    let us = c
        .get(format!("{}/x", w.proxy))
        .header("meridian-zone", "us")
        .send()
        .await
        .unwrap();
    assert_eq!(
        us.headers()["meridian-region"],
        "b",
        "zone header from a trusted proxy"
    );

    w.ups[0].kill();
    until_failed_closed(
        || c.get(format!("{}/x", w.proxy)).bearer_auth(&tok).send(),
        |region| region == "a",
        "an eu request is only ever sent to a",
    )
    .await;
    let forged =
        meridian_edge::token::sign(&serde_json::json!({"zone": "eu"}), b"not-the-secret-123");
    let r = c
        .get(format!("{}/x", w.proxy))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["meridian-region"],
        "b",
        "an unverified token carries no zone"
    );
}

#[tokio::test]
async fn unsafe_requests_are_not_retried_and_replay_moves_regions() {
    let w = world(FAILOVER, false).await;
    let c = client();
    let r = c
        .post(format!("{}/fail", w.proxy))
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["meridian-region"], "a");
    assert_eq!(
        w.ups[1].hits.posts.load(Ordering::SeqCst),
        0,
        "a POST without key is sent once"
    );

    let r = c.get(format!("{}/fail", w.proxy)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["meridian-region"], "b");
    let r = c
        .post(format!("{}/fail", w.proxy))
        .header("idempotency-key", "k1")
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["meridian-region"].clone()),
        (200, "b".parse().unwrap())
    );

    let r = c
        .put(format!("{}/replay", w.proxy))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["meridian-region"], "b");
    assert_eq!(
        r.text().await.unwrap(),
        "b:payload",
        "replayed with its body"
    );
    // A 421 naming a region (c, last in the failover order) is replayed there, even a POST
    // without a key (it was not processed); one naming none is the answer.
    let posts = |i: usize| w.ups[i].hits.posts.load(Ordering::SeqCst);
    for (path, to, i) in [("/homed-in-c", "c", 2), ("/pinned-to-c", "c", 2)] {
        let (all_before, to_before) = (posts(0) + posts(1) + posts(2), posts(i));
        let r = c
            .post(format!("{}{path}", w.proxy))
            .body("p")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["meridian-region"], to, "{path}");
        assert_eq!(r.text().await.unwrap(), format!("{to}:p"), "{path}");
        assert_eq!(posts(i), to_before + 1, "{path}: replayed once");
        assert_eq!(
            posts(0) + posts(1) + posts(2),
            all_before + 2,
            "{path}: the misdirected attempt and the replay"
        );
    }
    let r = c
        .post(format!("{}/misdirected", w.proxy))
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert_ne!(r.headers()["meridian-region"], "c", "not replayed");

    let r = c
        .get(format!("{}/who", w.proxy))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-seen-xff"], "203.0.113.9, 127.0.0.1");
    let served_by = r.headers()["meridian-region"].to_str().unwrap().to_string();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("meridian_region={served_by};")),
        "{cookie}"
    );
    let r = c
        .get(format!("{}/who", w.proxy))
        .header("cookie", "meridian_region=c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["meridian-region"], "c", "sticky cookie");
}

/// Under `writes = "home"`, a write without a home claim goes where its `Meridian-Home` says
/// (a region of the topology); reads, and writes naming no known region, follow the policy.
#[tokio::test]
async fn home_writes_follow_the_meridian_home_header() {
    let w = world(
        "[routing]\npolicy = \"failover\"\nwrites = \"home\"\n",
        false,
    )
    .await;
    let c = client();
    let served =
        |r: &reqwest::Response| r.headers()["meridian-region"].to_str().unwrap().to_string();
    let r = c
        .post(format!("{}/o", w.proxy))
        .header("meridian-home", "c")
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(served(&r), "c");
    let r = c
        .post(format!("{}/o", w.proxy))
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(served(&r), "a", "no home: the failover order");
    let r = c
        .post(format!("{}/o", w.proxy))
        .header("meridian-home", "mars-1")
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(served(&r), "a", "an unknown region is ignored");
    let r = c
        .get(format!("{}/o", w.proxy))
        .header("meridian-home", "c")
        .send()
        .await
        .unwrap();
    assert_eq!(served(&r), "a", "reads are not steered by it");
}

/// The region that answered `r` (its `Meridian-Region`).
/// Sends requests with `send` every 50 ms until the edge answers 503 `no_region_available`
/// (within 5 s), holding every answer that names its region to `allowed` (`why` if not).
async fn until_failed_closed<F, Fut>(send: F, allowed: impl Fn(&str) -> bool, why: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = reqwest::Result<reqwest::Response>>,
{
    let started = Instant::now();
    loop {
        let r = send().await.unwrap();
        if let Some(region) = r.headers().get(meridian_edge::REGION_HEADER) {
            assert!(allowed(region.to_str().unwrap()), "{why}: {region:?}");
        }
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "no_region_available");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never failed closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn served_by(r: &reqwest::Response) -> String {
    r.headers()[meridian_edge::REGION_HEADER]
        .to_str()
        .unwrap()
        .to_string()
}

/// The `meridian_region` cookies a response sets.
fn region_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|v| v.starts_with("meridian_region="))
        .collect()
}

/// A region node's 421 `residency` naming an allowed region in `Meridian-Allowed-Region` (passed
/// on by the app as it is) is replayed there, and the client gets that region's answer: for a
/// GET, a POST with an Idempotency-Key and a POST without one alike (a 421 means the request was
/// not processed), each replayed with its body, once, without spending the retry budget (0
/// here). The 421 itself is the answer when the request may not be replayed: a streamed body
/// (over `replay_limit`), a named region outside the client's zone, or a second 421 from the
/// region it was replayed in.
#[tokio::test]
async fn residency_421s_are_replayed_once_in_the_allowed_region() {
    let extra = format!("{FAILOVER}retry_budget = 0\n");
    let w = world_tuned(&extra, true, |o| o.replay_limit = 64).await;
    let c = client();
    let hits = || -> Vec<usize> {
        w.ups
            .iter()
            .map(|u| u.hits.requests.load(Ordering::SeqCst))
            .collect()
    };
    let url = |path: &str| format!("{}{path}", w.proxy);

    let replayed = [
        (c.get(url("/residency/b")), 1, "b:"),
        (
            c.post(url("/residency/c"))
                .header("idempotency-key", "order-1")
                .body("order-1"),
            2,
            "c:order-1",
        ),
        (c.post(url("/residency/b")).body("order-2"), 1, "b:order-2"),
    ];
    for (rb, to, answer) in replayed {
        let before = hits();
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200, "{answer}");
        assert_eq!(served_by(&r), ["a", "b", "c"][to], "{answer}");
        assert!(
            !r.headers().contains_key("meridian-allowed-region"),
            "{answer}: the 421 is not what the client gets"
        );
        assert_eq!(r.text().await.unwrap(), answer);
        let mut want = before.clone();
        want[0] += 1;
        want[to] += 1;
        assert_eq!(
            hits(),
            want,
            "{answer}: refused by a, then replayed once in the allowed region"
        );
    }

    // Each 421 that is the answer: (request, region that refused it, region it named).
    let us = meridian_edge::token::sign(&serde_json::json!({"zone": "us"}), SECRET.as_bytes());
    let refusals = [
        // Over the replay limit, the body streamed to a and cannot be sent again.
        (c.post(url("/residency/b")).body("x".repeat(100)), "a", "b"),
        // A client of zone us: b refuses, and a is outside the zone.
        (c.get(url("/residency/a")).bearer_auth(&us), "b", "a"),
        // a names b, and b, asked in turn, names c: one replay only.
        (c.get(url("/residency/next")), "b", "c"),
    ];
    for (rb, from, named) in refusals {
        let before = hits();
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 421, "{from} naming {named}");
        assert_eq!(served_by(&r), from);
        assert_eq!(r.headers()["meridian-allowed-region"], named);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "residency", "{body}");
        let i = |r: &str| usize::from(r.as_bytes()[0] - b'a');
        assert_eq!(
            hits()[i(named)],
            before[i(named)],
            "{from} naming {named}: not replayed in {named}"
        );
    }
}

/// Under `writes = "home"`, a write whose bearer token (HS256, signed with the cluster secret)
/// claims `"home": "c"` is sent to c only — the verified claim wins over a `Meridian-Home`
/// naming another region — while reads follow the policy. A token that does not verify
/// (another secret, or expired) claims no home: such a write follows `Meridian-Home` when it
/// has one, else the policy.
#[tokio::test]
async fn home_writes_follow_the_verified_home_claim() {
    let w = world(
        "[routing]\npolicy = \"failover\"\nwrites = \"home\"\n",
        true,
    )
    .await;
    let c = client();
    let sign = meridian_edge::token::sign;
    let home_c = sign(&serde_json::json!({"home": "c"}), SECRET.as_bytes());
    let forged = sign(&serde_json::json!({"home": "c"}), b"not-the-secret-123");
    let expired = sign(
        &serde_json::json!({"home": "c", "exp": 1}),
        SECRET.as_bytes(),
    );
    // A verified claim naming no region of the topology (one decommissioned since the token
    // was issued) is a placement hint that cannot be followed, as the header's would be.
    let unknown = sign(&serde_json::json!({"home": "mars-1"}), SECRET.as_bytes());
    let url = format!("{}/o", w.proxy);
    let posts = |i: usize| w.ups[i].hits.posts.load(Ordering::SeqCst);

    let r = c
        .post(&url)
        .bearer_auth(&home_c)
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&r), "c");
    assert_eq!(r.text().await.unwrap(), "c:p");
    assert_eq!(
        (posts(0), posts(1), posts(2)),
        (0, 0, 1),
        "sent to the home alone"
    );
    let r = c
        .post(&url)
        .bearer_auth(&home_c)
        .header("meridian-home", "b")
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&r), "c", "the claim, not the header");
    let r = c.delete(&url).bearer_auth(&home_c).send().await.unwrap();
    assert_eq!(served_by(&r), "c", "every unsafe method is a write");
    let r = c.get(&url).bearer_auth(&home_c).send().await.unwrap();
    assert_eq!(served_by(&r), "a", "reads are not steered by it");

    for (token, why) in [
        (&forged, "another secret"),
        (&expired, "expired"),
        (&unknown, "an unknown home"),
    ] {
        let r = c
            .post(&url)
            .bearer_auth(token)
            .body("p")
            .send()
            .await
            .unwrap();
        assert_eq!(served_by(&r), "a", "{why}: no home, the failover order");
        let r = c
            .post(&url)
            .bearer_auth(token)
            .header("meridian-home", "b")
            .body("p")
            .send()
            .await
            .unwrap();
        assert_eq!(
            served_by(&r),
            "b",
            "{why}: Meridian-Home, as without a token"
        );
    }
}

/// With `[routing] sticky = false` the edge neither sets a `meridian_region` cookie (not even
/// when a request fails over) nor follows one a client sends, in the proxy or in `explain`:
/// requests go by the policy alone. The same requests under the default (`sticky = true`) get
/// the cookie and are sent where it names.
#[tokio::test]
async fn without_sticky_no_region_cookie_is_set_or_followed() {
    let mut on = world(FAILOVER, false).await;
    let mut off = world(&format!("{FAILOVER}sticky = false\n"), false).await;
    let c = client();
    for (w, sticky) in [(&on, true), (&off, false)] {
        let r = c.get(format!("{}/who", w.proxy)).send().await.unwrap();
        assert_eq!(served_by(&r), "a", "sticky = {sticky}");
        let want: &[&str] = if sticky {
            &["meridian_region=a; Path=/; HttpOnly; SameSite=Lax"]
        } else {
            &[]
        };
        assert_eq!(region_cookies(&r), want, "sticky = {sticky}");

        for cookie in ["meridian_region=c", "theme=dark; meridian_region=c"] {
            let r = c
                .get(format!("{}/who", w.proxy))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let to = if sticky { "c" } else { "a" };
            assert_eq!(served_by(&r), to, "sticky = {sticky}, {cookie}");
            // Sticky: served where the cookie says, nothing to set. Not sticky: served
            // elsewhere, and still no cookie.
            assert!(region_cookies(&r).is_empty(), "sticky = {sticky}, {cookie}");
        }
        let e: serde_json::Value = c
            .get(format!("{}/v1/explain?ip=198.51.100.7&cookie=c", w.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let first = if sticky { "c" } else { "a" };
        assert_eq!(e["regions"][0], first, "sticky = {sticky}: {e}");
    }

    // A failover moves the cookie only when sticky.
    on.ups[0].kill();
    off.ups[0].kill();
    for (w, want) in [
        (
            &on,
            vec!["meridian_region=b; Path=/; HttpOnly; SameSite=Lax".to_string()],
        ),
        (&off, vec![]),
    ] {
        let r = c
            .get(format!("{}/who", w.proxy))
            .header("cookie", "meridian_region=a")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "b");
        assert_eq!(region_cookies(&r), want);
    }
}

/// A compact JWS of `claims` signed EdDSA (Ed25519) with `key`.
fn sign_eddsa(claims: &serde_json::Value, key: &ring::signature::Ed25519KeyPair) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"EdDSA","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    format!("{signed}.{}", b64(key.sign(signed.as_bytes()).as_ref()))
}

/// An RS256 token of `claims`, signed with the test RSA key (`tests/keys/rsa2048.key`).
fn sign_rs256(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rsa2048.key");
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{signed}.{}", b64(&sig))
}

/// A new Ed25519 key pair.
fn ed25519_key() -> ring::signature::Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// An EdDSA (Ed25519) token verified with `EdgeOptions::token_public_key`, beside HS256 tokens
/// of the cluster secret, carries its `zone` claim: the app sees the zone in `Meridian-Zone`,
/// and the request stays in that zone as its regions fail — never sent to another, even the
/// first in the failover order — until none is left (503 under fail-closed). A token that key
/// does not verify (signed by another key, expired, or HS256 with the public key as the secret)
/// carries no zone.
#[tokio::test]
async fn eddsa_tokens_keep_requests_in_their_zone() {
    use ring::signature::KeyPair as _;
    let key = ed25519_key();
    let public = key.public_key().as_ref().to_vec();
    let rsa_pub = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rsa2048.pub");
    let keys = vec![
        meridian_edge::token::PublicKey::from_pem(&rsa_pub)
            .unwrap()
            .into(),
        meridian_edge::token::PublicKey::Ed25519(public.clone()).into(),
    ];
    let extra = "[routing]\npolicy = \"failover\"\nall_down = \"fail-closed\"\n";
    let mut w = world_tuned(extra, true, |o| o.token_public_keys = keys).await;
    let c = client();
    let us = serde_json::json!({"zone": "us"});
    let eddsa_us = sign_eddsa(&us, &key);
    let get = |token: Option<String>| {
        let mut rb = c.get(format!("{}/z", w.proxy));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let zone_seen =
        |r: &reqwest::Response| r.headers()["x-seen-zone"].to_str().unwrap().to_string();

    let r = get(None).await.unwrap();
    assert_eq!((served_by(&r), zone_seen(&r)), ("a".into(), "".into()));
    let hs256_us = meridian_edge::token::sign(&us, SECRET.as_bytes());
    let rs256_us = sign_rs256(&us);
    for (token, kind) in [
        (&eddsa_us, "EdDSA"),
        (&hs256_us, "HS256"),
        (&rs256_us, "RS256, a second key"),
    ] {
        let r = get(Some(token.clone())).await.unwrap();
        assert_eq!(
            (served_by(&r), zone_seen(&r)),
            ("b".into(), "us".into()),
            "{kind}"
        );
    }
    let unverified = [
        (sign_eddsa(&us, &ed25519_key()), "another key"),
        (
            sign_eddsa(&serde_json::json!({"zone": "us", "exp": 1}), &key),
            "expired",
        ),
        (
            meridian_edge::token::sign(&us, &public),
            "HS256 keyed with the public key",
        ),
    ];
    for (token, why) in unverified {
        let r = get(Some(token)).await.unwrap();
        assert_eq!(
            (served_by(&r), zone_seen(&r)),
            ("a".into(), "".into()),
            "{why}: no zone"
        );
    }

    // b down: the zone's other region; then none: 503, never a.
    w.ups[1].kill();
    let r = get(Some(eddsa_us.clone())).await.unwrap();
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "c".into()));
    w.ups[2].kill();
    until_failed_closed(
        || get(Some(eddsa_us.clone())),
        |region| region != "a",
        "a us request is never sent to eu",
    )
    .await;
    assert_eq!(
        served_by(&get(None).await.unwrap()),
        "a",
        "others still served"
    );
}

/// An identity provider's JWKS endpoint: answers `GET /jwks.json` with the status and body
/// set last, and counts the fetches.
struct Idp {
    url: String,
    answer: Arc<std::sync::Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(body: String) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let answer = Arc::new(std::sync::Mutex::new((200, body)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (a, f) = (answer.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (a, f) = (a.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (status, body) = a.lock().unwrap().clone();
                        if req.uri().path() == "/jwks.json" {
                            f.fetch_add(1, Ordering::SeqCst);
                        }
                        async move {
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Idp {
            url,
            answer,
            fetches,
        }
    }

    fn set(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A JWKS document of Ed25519 keys under their `kid`s.
fn jwks_of(keys: &[(&str, &ring::signature::Ed25519KeyPair)]) -> String {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, pair)| {
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            })
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// An EdDSA token of `claims` whose header names key `kid`.
fn sign_eddsa_kid(
    claims: &serde_json::Value,
    kid: &str,
    key: &ring::signature::Ed25519KeyPair,
) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({"alg": "EdDSA", "kid": kid}).to_string();
    let signed = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{signed}.{}", b64(key.sign(signed.as_bytes()).as_ref()))
}

/// Keys from a JWKS URL (`EdgeOptions::token_jwks`): a token whose `kid` the fetched set has
/// carries its zone once the set is in, if its `iss` and `aud` are the expected ones; after
/// the provider rotates to a new key, the first token naming it makes the edge fetch again
/// (at most once per cooldown, however many such tokens come), and the new key's tokens count
/// while the withdrawn key's no longer do; when the provider then fails, the last good keys
/// stay in use and the admin API says why the fetch failed.
#[tokio::test]
async fn jwks_keys_are_fetched_refetched_for_a_new_kid_and_kept_when_the_provider_fails() {
    let (k1, k2) = (ed25519_key(), ed25519_key());
    let idp = Idp::start(jwks_of(&[("k1", &k1)])).await;
    let w = world_tuned(FAILOVER, true, |o| {
        o.token_jwks = vec![idp.url.clone()];
        o.token_jwks_cooldown = Duration::from_secs(1);
        o.token_expect = meridian_edge::token::Expect {
            issuer: Some("https://idp.test".into()),
            audiences: vec!["meridian".into()],
        };
    })
    .await;
    let c = client();
    let region_for = |token: String| {
        let req = c.get(format!("{}/j", w.proxy)).bearer_auth(token);
        async move { served_by(&req.send().await.unwrap()) }
    };
    // Zone `us` is regions b and c; without a zone the failover order starts at a.
    let claims = serde_json::json!({"zone": "us", "iss": "https://idp.test", "aud": "meridian"});
    let t1 = sign_eddsa_kid(&claims, "k1", &k1);
    let started = Instant::now();
    while region_for(t1.clone()).await != "b" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the key set was not fetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (claims, why) in [
        (
            serde_json::json!({"zone": "us", "iss": "https://idp.test", "aud": "another-app"}),
            "a token for another audience",
        ),
        (
            serde_json::json!({"zone": "us", "iss": "https://other.test", "aud": "meridian"}),
            "a token of another issuer",
        ),
    ] {
        assert_eq!(
            region_for(sign_eddsa_kid(&claims, "k1", &k1)).await,
            "a",
            "{why} carries no zone"
        );
    }

    // The provider rotates: only k2 from now on.
    idp.set(200, jwks_of(&[("k2", &k2)]));
    let before = idp.fetches();
    let t2 = sign_eddsa_kid(&claims, "k2", &k2);
    // Made-up kids: each asks for a fetch, and the cooldown keeps them to one a second.
    let t3 = sign_eddsa_kid(&claims, "k3", &k2);
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(region_for(t3.clone()).await, "a", "no key has kid k3");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while region_for(t2.clone()).await != "b" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new key was not fetched"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fetched = idp.fetches() - before;
    let allowed = started.elapsed().as_secs() as usize + 2;
    assert!(
        (1..=allowed).contains(&fetched),
        "{fetched} fetches for 20 tokens naming an unknown kid in {:?} (cooldown 1 s)",
        started.elapsed()
    );
    assert_eq!(region_for(t1.clone()).await, "a", "the withdrawn key");

    // The provider fails: k2 stays in use, and the status says why.
    idp.set(500, "down for maintenance".into());
    let before = idp.fetches();
    let started = Instant::now();
    while idp.fetches() == before {
        assert_eq!(region_for(t3.clone()).await, "a", "no key has kid k3");
        assert!(started.elapsed() < Duration::from_secs(5), "no fetch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let jwks = loop {
        let s = admin_status(&c, &w.admin, Some(SECRET)).await;
        let jwks = s["tokens"]["jwks"][0].clone();
        if !jwks["error"].is_null() {
            break jwks;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(jwks["error"].as_str().unwrap().contains("500"), "{jwks}");
    assert_eq!(jwks["keys"], 1, "{jwks}");
    assert_eq!(region_for(t2).await, "b", "the last good keys stay in use");
}

#[tokio::test]
async fn admin_api_weights_explain_and_metrics() {
    let w = world(
        "[routing]\npolicy = \"failover\"\nwrites = \"primary:c\"\n",
        true,
    )
    .await;
    let c = client();
    let r = c
        .get(format!("{}/v1/status", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Load balancers and orchestrators probe without the token.
    for path in ["/health/live", "/health/ready"] {
        let r = c.get(format!("{}{path}", w.admin)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["edge"], "e1", "{path}");
    }
    let r = c
        .get(format!("{}/health/other", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "only the two health calls are open");
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(SECRET);

    let r = auth(c.post(format!("{}/v1/regions/a/drain", w.admin)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{}/x", w.proxy)).send().await.unwrap();
    assert_eq!(r.headers()["meridian-region"], "b", "a is drained");
    let r = auth(c.put(format!("{}/v1/regions/a/weight", w.admin)))
        .json(&serde_json::json!({"weight": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(w.edge.weight("a"), 100);
    let r = auth(c.put(format!("{}/v1/regions/zz/weight", w.admin)))
        .json(&serde_json::json!({"weight": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Every refusal is a JSON error with a code and a hint, like the node's.
    let refused = [
        (
            auth(c.put(format!("{}/v1/regions/a/weight", w.admin))).body("{\"weight\": 300}"),
            400,
            "bad_weight",
        ),
        (
            auth(c.get(format!("{}/v1/explain?ip=not-an-ip", w.admin))),
            400,
            "bad_query",
        ),
        (
            auth(c.get(format!("{}/v1/explain/dns?ip=192.0.2.1", w.admin))),
            400,
            "bad_query",
        ),
        (
            auth(c.get(format!("{}/v1/nothing", w.admin))),
            404,
            "not_found",
        ),
        (
            auth(c.delete(format!("{}/v1/status", w.admin))),
            405,
            "method_not_allowed",
        ),
    ];
    for (rb, status, code) in refused {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), status, "{code}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["hint"]
                .as_str()
                .is_some_and(|h| !h.is_empty()),
            "{body}"
        );
    }
    assert_eq!(w.edge.weight("a"), 100, "a refused weight changes nothing");

    let e: serde_json::Value = auth(c.get(format!(
        "{}/v1/explain?ip=198.51.100.7&method=POST&path=/o",
        w.admin
    )))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(e["regions"], serde_json::json!(["c"]), "{e}");
    assert!(
        e["explanation"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("primary:c"))
    );

    let s: serde_json::Value = auth(c.get(format!("{}/v1/status", w.admin)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["regions"].as_array().unwrap().len(), 3);
    assert_eq!(
        s["regions"][0]["backends"][0]["state"], "up",
        "up from config at start"
    );

    let m = auth(c.get(format!("{}/metrics", w.admin)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("meridian_edge_requests_total"), "{m}");
    assert!(m.contains("meridian_edge_request_duration_seconds_bucket"));
}

async fn region_up(c: &reqwest::Client, admin: &str, region: &str) -> (bool, bool) {
    let s = admin_status(c, admin, None).await;
    let r = s["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == region)
        .unwrap();
    (r["up"].as_bool().unwrap(), r["local_up"].as_bool().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edge_that_cannot_reach_a_region_does_not_fail_it_over() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut listeners = Vec::new();
    for _ in 0..4 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let edges = [("e1", addrs[0], addrs[1]), ("e2", addrs[2], addrs[3])];
    // e1's network cannot reach region a (its URL for a's backend is dead); e2's can.
    let (b, c) = (("b", ups[1].url()), ("c", ups[2].url()));
    let e1_text = config(&[("a", dead_url), b.clone(), c.clone()], &edges, FAILOVER);
    let e2_text = config(&[("a", ups[0].url()), b, c], &edges, FAILOVER);
    let mut stops = Vec::new();
    let mut listeners = listeners.into_iter();
    for (name, text) in [("e1", e1_text), ("e2", e2_text)] {
        let topo = Arc::new(meridian_core::config::parse("t.toml", &text).unwrap());
        let edge = Edge::new(topo, EdgeOptions::new(name)).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (l, a) = (listeners.next().unwrap(), listeners.next().unwrap());
        tokio::spawn(meridian_edge::serve(edge, l, a, async move {
            let _ = rx.await;
        }));
        stops.push(tx);
    }
    let c = client();
    let e1_admin = format!("http://{}", addrs[1]);
    // Well past down_after × interval: e1 alone sees a down, but e2 outvotes it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(region_up(&c, &e1_admin, "a").await, (true, false));
    let r = c
        .get(format!("http://{}/x", addrs[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "e1 still routes to a, and retries a refused connection in b"
    );

    // Without e2's vote (its views expire after 3 intervals), e1 decides alone.
    let e2_stop = stops.pop().unwrap();
    let _ = e2_stop.send(());
    let started = Instant::now();
    while region_up(&c, &e1_admin, "a").await.0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "e1 never failed a over alone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .get(format!("http://{}/x", addrs[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["meridian-region"], "b");
}

/// An HTTP/2 (prior knowledge) client connection to `addr`, driven by a task of its own:
/// its sender and that task.
async fn h2_client(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    (send, tokio::spawn(conn))
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let w = world(FAILOVER, false).await;
    let addr = w.proxy.strip_prefix("http://").unwrap().to_string();
    let (mut send, _) = h2_client(&addr).await;
    let req = Request::get(format!("http://{addr}/h2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["meridian-region"], "a");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"a:");
}

/// An HTTP/2 client that vanishes after a request (its bytes stop arriving, the connection
/// stays open: no FIN, no RST) is sent a PING and, unanswered, has its connection closed after
/// about twice `http2_keepalive`; an answering client keeps it.
#[tokio::test]
async fn vanished_http2_clients_are_closed_after_an_unanswered_ping() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world_tuned(FAILOVER, false, |o| {
        o.http2_keepalive = Duration::from_millis(300);
    })
    .await;
    let edge_addr = w.proxy.strip_prefix("http://").unwrap().to_string();
    // A relay between the client and the edge whose client-to-edge direction can be cut
    // (bytes read and dropped); it reports when the edge closes its side.
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Instant>();
    let cut_in_relay = cut.clone();
    tokio::spawn(async move {
        let (client, _) = relay.accept().await.unwrap();
        let edge = tokio::net::TcpStream::connect(&edge_addr).await.unwrap();
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_edge, mut to_edge) = edge.into_split();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from_client.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                if !cut_in_relay.load(Ordering::SeqCst)
                    && to_edge.write_all(&buf[..n]).await.is_err()
                {
                    return;
                }
            }
        });
        let mut buf = [0u8; 4096];
        loop {
            match from_edge.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = closed_tx.send(Instant::now());
        // Keep the client's side open: it must not see the close.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(to_client);
    });
    let (mut send, _) = h2_client(&relay_addr.to_string()).await;
    let mut closed_rx = closed_rx;
    // Answering client: idle 1.2 s (four keep-alive periods), its PING answers pass.
    let req = || {
        Request::get(format!("http://{relay_addr}/h2"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(send.send_request(req()).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        closed_rx.try_recv().is_err(),
        "an answering client was cut off"
    );
    assert_eq!(send.send_request(req()).await.unwrap().status(), 200);
    // Vanished client: nothing of it reaches the edge any more.
    cut.store(true, Ordering::SeqCst);
    let vanished = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the edge closed the connection within 5 s")
        .unwrap();
    let after = closed - vanished;
    assert!(
        after < Duration::from_secs(3),
        "closed {after:?} after the client vanished"
    );
}

/// A client that does not finish a request's head within `client_header_timeout` (sending
/// nothing at all, part of a head, or part of the HTTP/2 preface), or stays idle that long
/// after a response (HTTP/1: closed; HTTP/2: sent GOAWAY), has its connection closed; one
/// that does is served.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limit = Duration::from_millis(300);
    let w = world_tuned(FAILOVER, false, |o| o.client_header_timeout = limit).await;
    let addr = w.proxy.strip_prefix("http://").unwrap().to_string();
    // Reads until the edge closes the connection; what it read and when the close came.
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
        b"GET /slow HTTP/1.1\r\nhost: x\r\n",
    ] {
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(sent).await.unwrap();
        let (_, after) = until_closed(&mut slow).await;
        assert!(
            after >= limit - Duration::from_millis(50),
            "closed after {after:?}"
        );
    }

    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /idle HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, after) = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("a:"),
        "the whole response came first: {answer}"
    );
    assert!(
        after >= limit - Duration::from_millis(50),
        "closed after {after:?}"
    );

    let (mut send, conn) = h2_client(&addr).await;
    let req = Request::get(format!("http://{addr}/idle"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    let answered = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    let after = answered.elapsed();
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the idle HTTP/2 connection ended cleanly (GOAWAY) within 3 s: {ended:?}"
    );
    assert!(
        after >= limit - Duration::from_millis(50),
        "GOAWAY {after:?} after the response"
    );
}

/// With an access log, every answered request becomes one JSON line (within the 250 ms flush
/// tick): who asked what, the status, the region that served it (none for a refusal), how
/// long the head took; a region that failed over is marked.
#[tokio::test]
async fn access_log_has_a_json_line_per_request() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = Arc::new(meridian_edge::access_log::AccessLog::open(&path).unwrap());
    let mut w = world_tuned(FAILOVER, false, |o| o.access_log = Some(log)).await;
    let c = client();
    let r = c
        .get(format!("{}/first?q=1", w.proxy))
        .header("user-agent", "test-agent \"quoted\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    w.ups[0].kill();
    let r = c.get(format!("{}/second", w.proxy)).send().await.unwrap();
    assert_eq!(r.headers()["meridian-region"], "b");
    let addr = w.proxy.strip_prefix("http://").unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let (first, second, refused) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/first?q=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["region"], "a");
    assert_eq!(first["failover"], false);
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["proto"], "HTTP/1.1");
    assert_eq!(first["user_agent"], "test-agent \"quoted\"");
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(first["ts"].as_f64().unwrap() > 1.7e9);
    assert_eq!(second["region"], "b");
    assert_eq!(second["failover"], true);
    assert_eq!(refused["method"], "CONNECT");
    assert_eq!(refused["status"], 405);
    assert_eq!(refused["region"], serde_json::Value::Null);
}

#[tokio::test]
async fn terminates_tls_from_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let der = write_cert(&cert, &key);
    assert!(
        meridian_edge::tls::server_config(&key, &key).is_err(),
        "a key is no certificate"
    );
    let config = meridian_edge::tls::server_config(&cert, &key).unwrap();
    let w = world_with(FAILOVER, false, Some(config)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let addr = w.proxy.strip_prefix("http://").unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/secure")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["meridian-region"], "a");
    assert_eq!(resp.headers()["x-seen-proto"], "https");
}

/// A certificate and key for `localhost`, written to `cert` and `key`; returns the
/// certificate's DER bytes.
fn write_cert(cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(cert, ck.cert.pem()).unwrap();
    std::fs::write(key, ck.key_pair.serialize_pem()).unwrap();
    ck.cert.der().to_vec()
}

/// The DER certificate the edge's TLS listener presents to a new connection.
async fn presented_cert(proxy: &str) -> Vec<u8> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let addr = proxy.strip_prefix("http://").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A renewed certificate is presented to new connections after `CertFiles::reload` (what
/// SIGHUP calls); a broken pair on disk is refused and the last good one kept.
#[tokio::test]
async fn tls_certificates_reload_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let first = write_cert(&cert, &key);
    let files = meridian_edge::tls::CertFiles::load(&cert, &key).unwrap();
    let w = world_with(FAILOVER, false, Some(files.server_config().unwrap())).await;
    assert_eq!(presented_cert(&w.proxy).await, first);

    let second = write_cert(&cert, &key);
    assert_ne!(first, second);
    files.reload().unwrap();
    assert_eq!(presented_cert(&w.proxy).await, second);

    std::fs::write(&key, "not a key").unwrap();
    let err = files.reload().unwrap_err().to_string();
    assert!(err.contains("k.pem: bad key"), "{err}");
    assert_eq!(
        presented_cert(&w.proxy).await,
        second,
        "the last good pair stays"
    );
}

/// `GET /v1/explain?ip=` of the world's admin API.
async fn explain(c: &reqwest::Client, w: &World, ip: &str) -> serde_json::Value {
    c.get(format!("{}/v1/explain?ip={ip}", w.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The tiny GeoIP database, opened (read into memory): 203.0.113.0/24 is in DE.
fn tiny_geoip() -> meridian_edge::geo::GeoIp {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.mmdb");
    std::fs::write(&db, tiny_mmdb()).unwrap();
    meridian_edge::geo::GeoIp::open(&db).unwrap()
}

/// A real MaxMind DB file (format 2.0, IPv4 tree, 24-bit records) holding one network,
/// `203.0.113.0/24` → country DE, continent EU, location Frankfurt.
fn tiny_mmdb() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.push((2 << 5) | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    fn map(out: &mut Vec<u8>, n: u8) {
        out.push((7 << 5) | n);
    }
    fn uint(out: &mut Vec<u8>, kind: u8, v: u64, width: usize) {
        let bytes = &v.to_be_bytes()[8 - width..];
        if kind <= 7 {
            out.push((kind << 5) | width as u8);
        } else {
            out.push(width as u8);
            out.push(kind - 7);
        }
        out.extend_from_slice(bytes);
    }
    fn double(out: &mut Vec<u8>, v: f64) {
        out.push((3 << 5) | 8);
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut data = Vec::new();
    map(&mut data, 3);
    string(&mut data, "country");
    map(&mut data, 1);
    string(&mut data, "iso_code");
    string(&mut data, "DE");
    string(&mut data, "continent");
    map(&mut data, 1);
    string(&mut data, "code");
    string(&mut data, "EU");
    string(&mut data, "location");
    map(&mut data, 2);
    string(&mut data, "latitude");
    double(&mut data, 50.1);
    string(&mut data, "longitude");
    double(&mut data, 8.7);

    let net: u32 = u32::from(std::net::Ipv4Addr::new(203, 0, 113, 0));
    let nodes: u32 = 24;
    let mut out = Vec::new();
    for i in 0..nodes {
        let bit = (net >> (31 - i)) & 1;
        let next = if i + 1 == nodes { nodes + 16 } else { i + 1 };
        let (left, right) = if bit == 0 {
            (next, nodes)
        } else {
            (nodes, next)
        };
        out.extend_from_slice(&left.to_be_bytes()[1..]);
        out.extend_from_slice(&right.to_be_bytes()[1..]);
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    map(&mut meta, 9);
    string(&mut meta, "node_count");
    uint(&mut meta, 6, u64::from(nodes), 4);
    string(&mut meta, "record_size");
    uint(&mut meta, 5, 24, 2);
    string(&mut meta, "ip_version");
    uint(&mut meta, 5, 4, 2);
    string(&mut meta, "database_type");
    string(&mut meta, "Meridian-Test");
    string(&mut meta, "languages");
    meta.extend_from_slice(&[0, 4]);
    string(&mut meta, "binary_format_major_version");
    uint(&mut meta, 5, 2, 2);
    string(&mut meta, "binary_format_minor_version");
    uint(&mut meta, 5, 0, 2);
    string(&mut meta, "build_epoch");
    uint(&mut meta, 9, 1_700_000_000, 8);
    string(&mut meta, "description");
    map(&mut meta, 0);
    out.extend_from_slice(&meta);
    out
}

#[tokio::test]
async fn geoip_locates_clients_for_the_geo_policy() {
    let geo = tiny_geoip();
    let de = geo.locate("203.0.113.9".parse().unwrap());
    assert_eq!(
        (de.country.as_deref(), de.continent.as_deref()),
        (Some("DE"), Some("EU"))
    );
    assert_eq!(de.location.map(|l| l.lat), Some(50.1));
    assert_eq!(
        geo.locate("198.51.100.1".parse().unwrap()),
        Default::default()
    );
    let extra = "[routing]\npolicy = \"geo\"\n[routing.geo]\nDE = \"c\"\ndefault = \"a\"\n";
    let w = world_geo(extra, geo).await;
    let c = client();
    let via = |ip: &'static str| {
        c.get(format!("{}/g", w.proxy))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(
        via("203.0.113.9").await.unwrap().headers()["meridian-region"],
        "c"
    );
    assert_eq!(
        via("198.51.100.1").await.unwrap().headers()["meridian-region"],
        "a"
    );
    let e = explain(&c, &w, "203.0.113.77").await;
    assert_eq!(e["client"]["country"], "DE");
    assert_eq!(e["regions"][0], "c");
}

/// A composed tree through the real proxy: `geo` between the pool `bc` (for DE) and `a`,
/// `failover` inside the pool; when `b` goes down, German clients stay in the pool (`c`)
/// instead of leaving for `a`, and `explain` shows both levels.
#[tokio::test]
async fn a_policy_tree_keeps_clients_inside_their_pool() {
    let extra = "[routing]\npolicy = \"geo\"\n[routing.geo]\nDE = \"bc\"\ndefault = \"a\"\n\
                 [routing.pool.bc]\nmembers = [\"b\", \"c\"]\npolicy = \"failover\"\n";
    let mut w = world_geo(extra, tiny_geoip()).await;
    let c = client();
    let region_for = |ip: &'static str| {
        let req = c
            .get(format!("{}/t", w.proxy))
            .header("x-forwarded-for", ip)
            .send();
        async move { req.await.unwrap().headers()["meridian-region"].clone() }
    };
    assert_eq!(region_for("203.0.113.9").await, "b");
    assert_eq!(region_for("198.51.100.1").await, "a");

    w.ups[1].kill();
    let killed = Instant::now();
    while backend_state(&c, &w.admin, "b").await != "down" {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "b never marked down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(region_for("203.0.113.9").await, "c");
    assert_eq!(region_for("198.51.100.1").await, "a");
    let e = explain(&c, &w, "203.0.113.9").await;
    assert_eq!(e["regions"], serde_json::json!(["c", "a"]), "{e}");
    let lines = e["explanation"].to_string();
    assert!(
        lines.contains("policy geo") && lines.contains("pool `bc`: policy failover"),
        "{e}"
    );
}

/// `[health] expect` decides what a probe counts as healthy: backends answering 200 are
/// marked down when only 204 is expected, and stay up under the default (200-299).
#[tokio::test]
async fn probes_count_only_the_expected_statuses() {
    let strict = world("expect = \"204\"\n", false).await;
    let relaxed = world("expect = \"200,204\"\n", false).await;
    let c = client();
    let started = Instant::now();
    while backend_state(&c, &strict.admin, "a").await != "down" {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a never marked down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend_state(&c, &relaxed.admin, "a").await, "up");
}

/// `[routing] retry_budget = 0` turns request-level retries off: a GET that fails in the
/// first region is answered with the failure, not retried in the next.
#[tokio::test]
async fn a_zero_retry_budget_never_retries() {
    let extra = "[routing]\npolicy = \"failover\"\norder = [\"a\", \"b\", \"c\"]\n";
    let mut off = world(&format!("{extra}retry_budget = 0\n"), false).await;
    let mut on = world(extra, false).await;
    let c = client();
    for w in [&off, &on] {
        let r = c.get(format!("{}/x", w.proxy)).send().await.unwrap();
        assert_eq!(r.headers()["meridian-region"], "a");
    }
    off.ups[0].kill();
    on.ups[0].kill();
    let r = c.get(format!("{}/x", on.proxy)).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), &r.headers()["meridian-region"]),
        (200, &"b".parse().unwrap())
    );
    let r = c.get(format!("{}/x", off.proxy)).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(off.ups[1].hits.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn proxy_listeners_share_a_port_no_other_socket_may_take() {
    let ls = meridian_edge::bind_proxy("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    assert_eq!(ls.len(), 3);
    let addr = ls[0].local_addr().unwrap();
    assert!(ls.iter().all(|l| l.local_addr().unwrap() == addr));
    let again = meridian_edge::bind_proxy(addr, 2).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
    assert!(meridian_edge::bind_proxy(addr, 1).is_err());
}

#[tokio::test]
async fn every_proxy_thread_serves_and_all_stop_on_shutdown() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    // Three listeners on three ports, so each thread can be asked on its own.
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .flat_map(|_| meridian_edge::bind_proxy("127.0.0.1:0".parse().unwrap(), 1).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let aa = a.local_addr().unwrap();
    let names: Vec<(&str, String)> = ups.iter().map(|u| (u.region.as_str(), u.url())).collect();
    let text = config(&names, &[("e1", addrs[0], aa)], FAILOVER);
    let topo = Arc::new(meridian_core::config::parse("t.toml", &text).unwrap());
    let edge = Edge::new(topo, EdgeOptions::new("e1")).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(meridian_edge::serve_threads(
        edge,
        listeners,
        a,
        async move {
            let _ = rx.await;
        },
    ));
    let c = client();
    for addr in &addrs {
        for i in 0..5 {
            let r = c.get(format!("http://{addr}/t{i}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["meridian-region"], "a");
            assert_eq!(r.text().await.unwrap(), "a:");
        }
    }
    assert!(
        ups[0].hits.requests.load(Ordering::SeqCst) >= 15,
        "every thread reached the backend"
    );
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve_threads returns after shutdown")
        .unwrap()
        .unwrap();
    for addr in &addrs {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts after shutdown"
        );
    }
}

/// A backend that real traffic gets ejected is probed at once, not at the next beat: with
/// 5 s probes and `down_after = 1`, a killed region is marked down well before the next
/// regular probe would have run.
#[tokio::test]
async fn an_ejected_backend_is_probed_at_once() {
    let mut w = world(FAILOVER, false).await;
    let mut t = (*w.edge.topology()).clone();
    t.health.interval = Duration::from_secs(5);
    t.health.timeout = Duration::from_secs(1);
    t.health.down_after = 1;
    w.edge.reload(Arc::new(t)).unwrap();
    // The probe loop finishes its 200 ms beat, probes once more, then sleeps 5 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client();
    let r = c.get(format!("{}/x", w.proxy)).send().await.unwrap();
    assert_eq!(r.headers()["meridian-region"], "a");

    w.ups[0].kill();
    let killed = Instant::now();
    loop {
        let r = c.get(format!("{}/x", w.proxy)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GETs fail over to b");
        if backend_state(&c, &w.admin, "a").await == "down" {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "a was not probed before the next 5 s beat"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A new CA certificate (written to `path` as PEM) and its key.
fn new_ca(path: &std::path::Path) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    std::fs::write(path, ca.pem()).unwrap();
    (ca, key)
}

/// A private CA, written to `path` as PEM, and a certificate it signs for 127.0.0.1 with its
/// key, as a TLS server configuration.
fn private_ca(path: &std::path::Path) -> Arc<rustls::ServerConfig> {
    let (ca, ca_key) = new_ca(path);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

/// An HTTPS app backend answering `tls:<method>:<body>`; counts the TCP connections it accepts.
async fn https_backend(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let method = req.method().to_string();
                    let body = req.into_body().collect().await?.to_bytes();
                    let text = format!("tls:{method}:{}", String::from_utf8_lossy(&body));
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// An edge in front of one region `a` whose one app backend is `app`, with `tls` as its
/// backend TLS configuration: its proxy's address, or why it refused the topology.
async fn one_backend_edge(
    app: String,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<SocketAddr, meridian_edge::Error> {
    let mut opts = EdgeOptions::new("e1");
    opts.backend_tls = tls;
    one_backend_edge_with(app, opts).await
}

/// [`one_backend_edge`] with the given options.
async fn one_backend_edge_with(
    app: String,
    opts: EdgeOptions,
) -> Result<SocketAddr, meridian_edge::Error> {
    let (la, _served) = one_backend_edge_until(app, opts, std::future::pending()).await?;
    Ok(la)
}

/// A served edge: its proxy's address and the task of `serve`.
type Served = (
    SocketAddr,
    tokio::task::JoinHandle<Result<(), meridian_edge::Error>>,
);

/// [`one_backend_edge_with`] served until `shutdown`.
async fn one_backend_edge_until(
    app: String,
    opts: EdgeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Served, meridian_edge::Error> {
    served_edge(&app, "", opts, shutdown).await
}

/// [`one_backend_edge_until`] with `lines` added to region `a`'s table.
async fn served_edge(
    app: &str,
    lines: &str,
    opts: EdgeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Served, meridian_edge::Error> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (la, aa) = (l.local_addr().unwrap(), a.local_addr().unwrap());
    let app_line = format!("app = [\"{app}\"]\n");
    let text = config(&[("a", app.to_string())], &[("e1", la, aa)], "")
        .replace("us = [\"b\", \"c\"]\n", "")
        .replace(&app_line, &format!("{app_line}{lines}"));
    let topo = Arc::new(meridian_core::config::parse("t.toml", &text).unwrap());
    let edge = Edge::new(topo, opts)?;
    Ok((la, tokio::spawn(meridian_edge::serve(edge, l, a, shutdown))))
}

/// An HTTP/2-only app backend (prior knowledge, or ALPN `h2` over `tls`): answers every
/// request 200 with `METHOD:PATH:VERSION:TE:` and the request's body, then trailers
/// `grpc-status: 0`. Its address, the connections it accepted, and the edge's probes it got.
async fn h2_backend(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    grpc_backend(tls, None).await
}

/// [`h2_backend`] that, given `health`, also serves `grpc.health.v1.Health/Check`: a check of
/// service `shop.Cart` is answered with the status in `health` (1 SERVING, 2 NOT_SERVING),
/// one of another service with 3 (SERVICE_UNKNOWN).
async fn grpc_backend(
    tls: Option<Arc<rustls::ServerConfig>>,
    health: Option<Arc<std::sync::atomic::AtomicU8>>,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, probes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (count, probed) = (accepted.clone(), probes.clone());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (acceptor, probed, health) = (acceptor.clone(), probed.clone(), health.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (probed, health) = (probed.clone(), health.clone());
                    async move {
                        let h = req.headers();
                        if h.get("user-agent")
                            .is_some_and(|v| v == "meridian-edge-probe")
                        {
                            probed.fetch_add(1, Ordering::SeqCst);
                        }
                        if req.uri().path() == "/shop.Cart/Unavailable" {
                            let mut resp = Response::new(
                                Full::new(Bytes::new()).with_trailers(std::future::ready(None)),
                            );
                            resp.headers_mut()
                                .insert("grpc-status", "14".parse().unwrap());
                            return Ok(resp);
                        }
                        if let Some(health) = health
                            && req.uri().path() == meridian_core::grpc_health::CHECK_PATH
                        {
                            let asked = req.into_body().collect().await?.to_bytes();
                            let status = if asked[..]
                                == meridian_core::grpc_health::check_request("shop.Cart")[..]
                            {
                                health.load(Ordering::SeqCst)
                            } else {
                                3
                            };
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let message = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                            let body = Full::new(message)
                                .with_trailers(std::future::ready(Some(Ok(trailers))));
                            return Ok(Response::new(body));
                        }
                        let te = h.get("te").map_or("-".into(), |v| {
                            String::from_utf8_lossy(v.as_bytes()).into_owned()
                        });
                        let head = format!(
                            "{}:{}:{:?}:{te}:",
                            req.method(),
                            req.uri().path(),
                            req.version()
                        );
                        let body = req.into_body().collect().await?.to_bytes();
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let body = Full::new(Bytes::from([head.as_bytes(), &body[..]].concat()))
                            .with_trailers(std::future::ready(Some(Ok(trailers))));
                        Ok::<_, hyper::Error>(Response::new(body))
                    }
                });
                let http2 =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = match acceptor {
                    None => http2.serve_connection(TokioIo::new(tcp), svc).await,
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        http2.serve_connection(TokioIo::new(tls), svc).await
                    }
                };
            });
        }
    });
    (addr, accepted, probes)
}

/// A region with `app_protocol = "http2"` is spoken to in HTTP/2 with prior knowledge: a
/// gRPC-style call (HTTP/2 client, `te: trailers`, a body) reaches the backend with its
/// `te`, and the backend's trailers reach the client; an HTTP/1.1 client is served too (its
/// request carried over HTTP/2). Requests and probes share one connection per thread, and the
/// probes speak HTTP/2 (an HTTP/1.1 probe would fail against this backend).
#[tokio::test]
async fn http2_backends_carry_grpc_calls_with_their_trailers() {
    let (addr, accepted, probes) = h2_backend(None).await;
    let (la, _) = served_edge(
        &format!("http://{addr}"),
        "app_protocol = \"http2\"\n",
        EdgeOptions::new("e1"),
        std::future::pending(),
    )
    .await
    .unwrap();
    let (mut send, _) = h2_client(&la.to_string()).await;
    let call = Request::post(format!("http://{la}/shop.Cart/Add"))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let resp = send.send_request(call).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["meridian-region"], "a");
    let got = resp.into_body().collect().await.unwrap();
    let trailers = got.trailers().cloned().expect("the backend's trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        &got.to_bytes()[..],
        b"POST:/shop.Cart/Add:HTTP/2.0:trailers:\0\0\0\0\x02hi"
    );

    for i in 0..20 {
        let r = client()
            .get(format!("http://{la}/x{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), format!("GET:/x{i}:HTTP/2.0:-:"));
    }
    // The first call and the first probe may each open one.
    let conns = accepted.load(Ordering::SeqCst);
    assert!(
        conns <= 2,
        "{conns} connections for 21 requests on one thread"
    );
    let started = Instant::now();
    while probes.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no HTTP/2 probe came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An edge (failover policy) in front of region `a`, HTTP/2 to a [`grpc_backend`] with
/// `health` and `[health] grpc_service = "shop.Cart"`, then region `b`, an HTTP/1.1
/// [`Upstream`]: the proxy's address, the gRPC backend's probe count, and `b` (kept running).
async fn grpc_then_http(
    health: Option<Arc<std::sync::atomic::AtomicU8>>,
) -> (SocketAddr, Arc<AtomicUsize>, Upstream) {
    let (a, _, probes) = grpc_backend(None, health).await;
    let b = Upstream::start("b").await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let adm = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (la, aa) = (l.local_addr().unwrap(), adm.local_addr().unwrap());
    let a_line = format!("app = [\"http://{a}\"]\n");
    let text = config(
        &[("a", format!("http://{a}")), ("b", b.url())],
        &[("e1", la, aa)],
        "grpc_service = \"shop.Cart\"\n[routing]\npolicy = \"failover\"\n",
    )
    .replace(&a_line, &format!("{a_line}app_protocol = \"http2\"\n"))
    .replace("us = [\"b\", \"c\"]\n", "us = [\"b\"]\n");
    let topo = Arc::new(meridian_core::config::parse("t.toml", &text).unwrap());
    let edge = Edge::new(topo, EdgeOptions::new("e1")).unwrap();
    tokio::spawn(meridian_edge::serve(edge, l, adm, std::future::pending()));
    (la, probes, b)
}

/// A gRPC call answered `UNAVAILABLE` (14) in a trailers-only answer counts as a 5xx: with an
/// Idempotency-Key it is retried in the next region; without one (it may have reached the
/// app) the client gets that answer.
#[tokio::test]
async fn grpc_unavailable_is_retried_in_the_next_region_when_safe() {
    let (la, _, _b) = grpc_then_http(None).await;
    let call = |key: Option<&str>| {
        let mut rb = client()
            .post(format!("http://{la}/shop.Cart/Unavailable"))
            .header("content-type", "application/grpc")
            .body(&b"\0\0\0\0\0"[..]);
        if let Some(k) = key {
            rb = rb.header("idempotency-key", k);
        }
        rb.send()
    };
    let r = call(Some("k1")).await.unwrap();
    assert_eq!(r.headers()["meridian-region"], "b", "retried in b");
    let r = call(None).await.unwrap();
    assert_eq!(r.headers()["meridian-region"], "a");
    assert_eq!(r.headers()["grpc-status"], "14");
}

/// With `[health] grpc_service`, backends of an HTTP/2 region are probed with the gRPC
/// health-checking protocol: `NOT_SERVING` takes the region out (traffic fails over to the
/// next), `SERVING` brings it back after `up_after` checks.
#[tokio::test]
async fn grpc_health_checks_take_a_not_serving_region_out_and_back() {
    let health = Arc::new(std::sync::atomic::AtomicU8::new(1));
    let (la, probes, _b) = grpc_then_http(Some(health.clone())).await;
    let served_by = || async {
        let r = client().get(format!("http://{la}/x")).send().await.unwrap();
        r.headers()["meridian-region"].to_str().unwrap().to_string()
    };
    // Until `want` serves (checked every 50 ms, for up to 3 s).
    let until = |want: &'static str| async move {
        let started = Instant::now();
        while served_by().await != want {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{want} never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    until("a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(probes.load(Ordering::SeqCst) >= 2, "gRPC checks arrive");
    assert_eq!(served_by().await, "a", "SERVING keeps the region up");
    health.store(2, Ordering::SeqCst);
    until("b").await;
    health.store(1, Ordering::SeqCst);
    until("a").await;
}

/// Over `https://`, HTTP/2 is negotiated by ALPN: a backend offering `h2` serves; one that does
/// not is a connect failure (502) whose message names ALPN.
#[tokio::test]
async fn http2_over_tls_needs_the_backend_to_agree_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let plain = private_ca(&ca);
    let mut h2 = (*plain).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let client_tls = meridian_edge::tls::backend_client_config(Some(&ca), None).unwrap();
    for (server, ok) in [(Arc::new(h2), true), (plain, false)] {
        let (addr, _, _) = h2_backend(Some(server)).await;
        let mut opts = EdgeOptions::new("e1");
        opts.backend_tls = Some(client_tls.clone());
        let (la, _) = served_edge(
            &format!("https://{addr}"),
            "app_protocol = \"http2\"\n",
            opts,
            std::future::pending(),
        )
        .await
        .unwrap();
        let r = client()
            .get(format!("http://{la}/tls"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if ok {
            assert_eq!(
                (status.as_u16(), text.as_str()),
                (200, "GET:/tls:HTTP/2.0:-:")
            );
        } else {
            assert_eq!(status, 502, "{text}");
            assert!(text.contains("ALPN"), "{text}");
        }
    }
}

/// [`one_backend_edge`] for the `https://` backend at `addr`: its proxy's URL.
async fn https_edge(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<String, meridian_edge::Error> {
    let la = one_backend_edge(format!("https://{addr}"), tls).await?;
    Ok(format!("http://{la}"))
}

/// A backend that asks for a client certificate gets the one the edge was given (mutual TLS);
/// an edge without one fails the handshake, which is a connection failure (502).
#[tokio::test]
async fn presents_a_client_certificate_to_backends_that_ask_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (ca, ca_key) = new_ca(&path("ca.pem"));
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = issue("127.0.0.1");
    let (client_cert, client_key) = issue("edge.example");
    std::fs::write(path("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(path("client-key.pem"), client_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    let (addr, _) = https_backend(Arc::new(server)).await;
    let ca = path("ca.pem");
    let (cert, key) = (path("client.pem"), path("client-key.pem"));
    let with = meridian_edge::tls::backend_client_config(Some(&ca), Some((&cert, &key))).unwrap();
    let without = meridian_edge::tls::backend_client_config(Some(&ca), None).unwrap();
    let c = client();
    let proxy = https_edge(addr, Some(with)).await.unwrap();
    let r = c.get(format!("{proxy}/m")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls:GET:");
    let proxy = https_edge(addr, Some(without)).await.unwrap();
    let r = c.get(format!("{proxy}/m")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        meridian_edge::tls::backend_client_config(Some(&ca), Some((&key, &key))).is_err(),
        "a key is no certificate"
    );
}

/// An `https://` app backend: the edge checks its certificate against the CA it is given,
/// keeps the TLS connection pooled across requests (a TLS 1.3 session ticket is no answer),
/// and a certificate that CA did not sign is a connection failure, not an answer.
#[tokio::test]
async fn proxies_to_https_backends_and_verifies_their_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    let (addr, accepted) = https_backend(private_ca(&ca)).await;
    private_ca(&other_ca);
    let start = |ca: Option<&std::path::Path>| {
        let tls = ca.map(|ca| meridian_edge::tls::backend_client_config(Some(ca), None).unwrap());
        https_edge(addr, tls)
    };
    let refused = start(None).await.unwrap_err().to_string();
    assert!(refused.contains("no TLS client configuration"), "{refused}");

    let proxy = start(Some(&ca)).await.unwrap();
    let c = client();
    for _ in 0..5 {
        let r = c.get(format!("{proxy}/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["meridian-region"], "a");
        assert_eq!(r.text().await.unwrap(), "tls:GET:");
    }
    let r = c
        .post(format!("{proxy}/x"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "tls:POST:hello");
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        opened <= 2,
        "{opened} TLS connections for six requests and the probes"
    );

    let proxy = start(Some(&other_ca)).await.unwrap();
    let r = c.get(format!("{proxy}/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("TLS handshake"), "{body}");
}

/// A backend that reads each request head and answers it with what `reply` makes of it (the
/// head as sent): bytes to write and whether the connection then switched, when it echoes
/// every chunk it reads in capitals until the client closes.
async fn switching_server(
    reply: impl Fn(&str) -> (String, bool) + Send + Sync + 'static,
) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (answer, switched) = reply(&String::from_utf8_lossy(&head));
                if s.write_all(answer.as_bytes()).await.is_err() || !switched {
                    return;
                }
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A backend's 400 to a request it does not switch.
const NOT_SWITCHED: &str = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";

/// A backend that switches to an "echo" protocol when asked with `Upgrade: echo`: it sends
/// `!` with its 101, then answers each chunk it reads in capitals. Anything else gets a 400.
async fn switching_backend() -> SocketAddr {
    switching_server(|head| {
        let head = head.to_ascii_lowercase();
        if head.contains("\r\nupgrade: echo\r\n") && head.contains("connection: upgrade") {
            let switch = "HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n\
                          connection: upgrade\r\n\r\n!";
            (switch.to_string(), true)
        } else {
            (NOT_SWITCHED.to_string(), false)
        }
    })
    .await
}

/// Opens a connection to the edge at `la` and switches it to the echo protocol of
/// [`switching_backend`]: returns it once the 101 head (checked) and the backend's `!` are in.
async fn switch_to_echo(la: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(la).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    // The head, then the byte the backend sent with its 101.
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"!")) {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&got)
        );
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: echo") && head.contains("meridian-region: a"),
        "{head}"
    );
    s
}

/// Echoes `word` through a connection (or HTTP/2 stream) switched to the echo protocol.
async fn echo<S>(s: &mut S, word: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(word.as_bytes()).await.unwrap();
    let mut echoed = Vec::new();
    let mut buf = [0u8; 64];
    while echoed.len() < word.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed");
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echoed, word.to_ascii_uppercase().as_bytes());
}

/// Waits (up to 5 s) for the edge to close switched connection `s`: its next read is the end.
async fn closed_by_edge(s: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the edge closed the connection");
}

/// A switched connection that carries bytes stays open past `tunnel_idle_timeout`; once no
/// byte moves either way for that long, the edge closes it (the client reads its end).
#[tokio::test]
async fn idle_switched_connections_are_closed_after_the_tunnel_idle_timeout() {
    let addr = switching_backend().await;
    let mut opts = EdgeOptions::new("e1");
    opts.tunnel_idle_timeout = Duration::from_millis(600);
    let la = one_backend_edge_with(format!("http://{addr}"), opts)
        .await
        .unwrap();
    let mut s = switch_to_echo(la).await;
    // 1.2 s of traffic every 200 ms: never idle for 600 ms.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        echo(&mut s, "ping").await;
    }
    let quiet = Instant::now();
    closed_by_edge(&mut s).await;
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(550) && after < Duration::from_secs(3),
        "closed {after:?} after the last byte"
    );
    let closed = meridian_edge::metrics::render()
        .lines()
        .any(|l| l.starts_with("meridian_edge_upgraded_idle_closed_total") && !l.ends_with(" 0"));
    assert!(closed, "counted as closed for idleness");
}

/// At shutdown, connections that switched protocols keep carrying bytes through the drain:
/// `serve` waits for them, returns once the last has closed by itself or the drain timeout
/// closed it, and a client whose connection is still open at the deadline reads its end.
#[tokio::test]
async fn switched_connections_are_drained_at_shutdown() {
    let backend = switching_backend().await;
    let mut opts = EdgeOptions::new("e1");
    let drain = Duration::from_millis(1500);
    opts.drain_timeout = drain;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (la, served) = one_backend_edge_until(format!("http://{backend}"), opts, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let mut ends = switch_to_echo(la).await;
    let mut stays = switch_to_echo(la).await;
    echo(&mut ends, "one").await;

    let _ = stop.send(());
    let stopping = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Shut for new clients, still carrying the open connections.
    assert!(
        tokio::net::TcpStream::connect(la).await.is_err(),
        "still accepting"
    );
    echo(&mut ends, "two").await;
    echo(&mut stays, "three").await;
    assert!(
        !served.is_finished(),
        "serve returned with connections open"
    );
    drop(ends);
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo(&mut stays, "four").await;
    assert!(
        !served.is_finished(),
        "serve returned with a connection open"
    );

    // The deadline closes the one left open; serve returns.
    closed_by_edge(&mut stays).await;
    let closed = stopping.elapsed();
    assert!(
        closed >= drain - Duration::from_millis(100) && closed < drain + Duration::from_secs(2),
        "closed {closed:?} after shutdown began (drain {drain:?})"
    );
    tokio::time::timeout(Duration::from_secs(3), served)
        .await
        .expect("serve returns after the drain")
        .unwrap()
        .unwrap();
}

/// How [`websocket_backend`] answers a WebSocket handshake.
#[derive(Clone, Copy)]
enum Handshake {
    /// `101` with the `Sec-WebSocket-Accept` that answers the key.
    Right,
    /// `101` with an accept for another key.
    WrongAccept,
    /// `200`, not switching.
    NoSwitch,
}

/// A WebSocket app backend (HTTP/1.1): a `GET` with `Upgrade: websocket`, `Connection:
/// upgrade`, `Sec-WebSocket-Version: 13` and a key is answered as `handshake` says (a `101`
/// carries a `!` after its head), then every byte is echoed in capitals (no framing: the edge
/// reads none); anything else gets a 400. Its address and the heads it received (lower-cased).
async fn websocket_backend(
    handshake: Handshake,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use base64::Engine as _;
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    let addr = switching_server(move |raw| {
        // The key as sent (base64 is case-sensitive), the rest lower-cased.
        let key = raw.lines().find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.to_string())
        });
        let head = raw.to_ascii_lowercase();
        seen.lock().unwrap().push(head.clone());
        let asks = head.starts_with("get /chat http/1.1\r\n")
            && head.contains("\r\nupgrade: websocket\r\n")
            && head.contains("\r\nconnection: upgrade\r\n")
            && head.contains("\r\nsec-websocket-version: 13\r\n");
        let (true, Some(key)) = (asks, key) else {
            return (NOT_SWITCHED.to_string(), false);
        };
        let answered = match handshake {
            Handshake::NoSwitch => {
                return (
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno".to_string(),
                    false,
                );
            }
            Handshake::Right => key,
            Handshake::WrongAccept => format!("{key}x"),
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(answered.as_bytes());
        ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let accept = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
        let switch = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
             connection: upgrade\r\nsec-websocket-accept: {accept}\r\n\
             sec-websocket-protocol: chat\r\n\r\n!"
        );
        (switch, true)
    })
    .await;
    (addr, heads)
}

/// Sends an HTTP/2 extended CONNECT (RFC 8441) for `protocol` to `/chat` of the edge at
/// `la`: the edge's answer, and the sender whose connection carries the stream.
async fn extended_connect(
    la: SocketAddr,
    protocol: &'static str,
) -> (
    Response<hyper::body::Incoming>,
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
) {
    let addr = la.to_string();
    let (mut send, _) = h2_client(&addr).await;
    // A first exchange lets the edge's SETTINGS, which enable extended CONNECT, arrive.
    let warm = Request::get(format!("http://{addr}/warm"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send.send_request(warm).await.unwrap();
    let mut req = Request::connect(format!("http://{addr}/chat"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    let resp = send.send_request(req).await.unwrap();
    (resp, send)
}

/// A WebSocket over HTTP/2 (extended CONNECT, RFC 8441) reaches an HTTP/1.1 backend as
/// WebSocket's HTTP/1.1 handshake with a key of the edge's; the backend's 101, once its
/// `Sec-WebSocket-Accept` answers that key, becomes the 200 that opens the client's stream,
/// and bytes flow both ways through it. Another protocol is bridged the same way, without
/// the key.
#[tokio::test]
async fn websockets_over_http2_are_bridged_to_http1_backends() {
    let (addr, heads) = websocket_backend(Handshake::Right).await;
    let la = one_backend_edge(format!("http://{addr}"), None)
        .await
        .unwrap();
    let (resp, _send) = extended_connect(la, "websocket").await;
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert_eq!(resp.headers()["meridian-region"], "a");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    assert!(
        !resp.headers().contains_key("sec-websocket-accept"),
        "HTTP/2 has no accept: {:?}",
        resp.headers()
    );
    let mut stream = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
        .await
        .unwrap();
    assert_eq!(
        &first, b"!",
        "what the backend sent with its 101 comes first"
    );
    for word in ["hello", "again"] {
        echo(&mut stream, word).await;
    }
    let head = heads.lock().unwrap().last().cloned().unwrap();
    assert!(head.contains("sec-websocket-key: "), "{head}");
    assert!(head.contains("sec-websocket-protocol: chat"), "{head}");

    // Another protocol: `Upgrade: echo`, no WebSocket key.
    let echo_addr = switching_backend().await;
    let la = one_backend_edge(format!("http://{echo_addr}"), None)
        .await
        .unwrap();
    let (resp, _send) = extended_connect(la, "echo").await;
    assert_eq!(resp.status(), 200);
    let mut stream = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
        .await
        .unwrap();
    echo(&mut stream, "bridged").await;
}

/// An extended CONNECT whose backend does not switch (a 200), or switches with an accept
/// that does not answer the edge's key, gets a 502 saying so — never a 200 that would open a
/// stream to nothing. A CONNECT to another host (HTTP/1.1, or HTTP/2 without `:protocol`) is
/// refused with a 405.
#[tokio::test]
async fn bridged_websockets_that_do_not_switch_get_502_and_plain_connect_405() {
    for (handshake, code) in [
        (Handshake::NoSwitch, "upstream_did_not_switch"),
        (Handshake::WrongAccept, "upstream_bad_handshake"),
    ] {
        let (addr, _) = websocket_backend(handshake).await;
        let la = one_backend_edge(format!("http://{addr}"), None)
            .await
            .unwrap();
        let (resp, _send) = extended_connect(la, "websocket").await;
        assert_eq!(resp.status(), 502, "{code}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], code);
    }

    let (addr, heads) = websocket_backend(Handshake::Right).await;
    let la = one_backend_edge(format!("http://{addr}"), None)
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(la).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 405");
    let addr = la.to_string();
    let (mut send, _) = h2_client(&addr).await;
    let req = Request::connect("example.com:443")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 405);
    let heads = heads.lock().unwrap();
    assert!(
        heads.iter().all(|h| !h.starts_with("connect")),
        "a CONNECT reached the app: {heads:?}"
    );
}

/// An HTTP/1.1 request to switch protocols (WebSocket's handshake) reaches the backend with its
/// `Upgrade` and `Connection: upgrade`; after the backend's 101 the client's connection and the
/// backend's are spliced, bytes flowing both ways, including what the backend sent with its 101.
#[tokio::test]
async fn upgraded_connections_are_spliced_to_the_backend() {
    let addr = switching_backend().await;
    let la = one_backend_edge(format!("http://{addr}"), None)
        .await
        .unwrap();

    let mut s = switch_to_echo(la).await;
    for word in ["hello", "again"] {
        echo(&mut s, word).await;
    }
    // Other tests of this binary may hold switched connections at the same time.
    let open = meridian_edge::metrics::render()
        .lines()
        .filter_map(|l| l.strip_prefix("meridian_edge_upgraded_connections "))
        .any(|v| v.parse::<f64>().is_ok_and(|n| n >= 1.0));
    assert!(open, "the spliced connection is counted open");

    // Without `Connection: upgrade` the header is hop-by-hop and stripped: no switch.
    let r = client()
        .get(format!("http://{la}/chat"))
        .header("upgrade", "echo")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// With every one of `max_connections` in use the edge accepts no more: a new client waits
/// (in the listen backlog) and is served as soon as a connection closes.
#[tokio::test]
async fn past_max_connections_new_clients_wait_for_a_free_slot() {
    let w = world_tuned(FAILOVER, false, |o| o.max_connections = 2).await;
    let proxy = w.proxy.trim_start_matches("http://").to_string();
    let first = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    let _second = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.edge.open_connections() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_millis(700))
            .build()
            .unwrap()
    };
    let waited = fresh().get(format!("{}/", w.proxy)).send().await;
    assert!(
        waited.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a third client was served while two held every slot: {waited:?}"
    );
    assert_eq!(w.edge.open_connections(), 2);
    let limited = meridian_edge::metrics::render()
        .lines()
        .filter_map(|l| l.strip_prefix("meridian_edge_connections_limited_total "))
        .any(|v| v.parse::<f64>().is_ok_and(|n| n >= 1.0));
    assert!(limited, "the accept loop's wait is counted");
    // The admin listener is not limited.
    let status = client()
        .get(format!("{}/v1/status", w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);

    drop(first);
    let served = client().get(format!("{}/", w.proxy)).send().await.unwrap();
    assert_eq!(served.status(), 200, "served once a slot was free");
}

/// Requests in flight to region `region`'s backend, from the admin status.
async fn in_flight(admin: &str, region: &str) -> u64 {
    first_backend(&client(), admin, region).await["in_flight"]
        .as_u64()
        .unwrap()
}

/// With `max_requests_per_backend` requests in flight to a region's backend, the next
/// request goes to the next region at once (no retry spent, never sent to the full one);
/// with every region full it is answered 503 `overloaded` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_backend_sends_requests_on_and_all_full_is_overloaded() {
    let w = world(&format!("{FAILOVER}max_requests_per_backend = 2\n"), false).await;
    let mut held = JoinSet::new();
    let mut fill = |n: usize| {
        for _ in 0..n {
            let url = format!("{}/slow", w.proxy);
            held.spawn(async move { client().get(url).send().await.unwrap().status() });
        }
    };
    fill(2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight(&w.admin, "a").await < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow requests did not reach a"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let begun = Instant::now();
    let r = client().get(format!("{}/x", w.proxy)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["meridian-region"], "b", "a is full: b serves");
    assert!(
        begun.elapsed() < Duration::from_millis(1000),
        "it waited for a"
    );
    assert_eq!(
        in_flight(&w.admin, "a").await,
        2,
        "nothing more was sent to a"
    );

    // Fill b and c as well: four more slow requests spill over a to them.
    fill(4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight(&w.admin, "b").await < 2 || in_flight(&w.admin, "c").await < 2 {
        assert!(Instant::now() < deadline, "b and c did not fill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = client().get(format!("{}/x", w.proxy)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("a, b, c"), "{message}");
    let overflows = meridian_edge::metrics::render()
        .lines()
        .any(|l| l.starts_with("meridian_edge_overflows_total{region=\"a\"}"));
    assert!(overflows, "the overflow is counted");
    while let Some(status) = held.join_next().await {
        assert_eq!(status.unwrap(), 200, "every held request was answered");
    }
    assert_eq!(in_flight(&w.admin, "a").await, 0, "places are given back");
}
