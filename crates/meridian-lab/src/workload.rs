//! Virtual users: an open-loop load (requests start on schedule whether or not earlier ones
//! have finished, as real users do) from the cities of [`crate::cities`], each entering by its
//! nearest edge after its emulated access latency, driving the demo app's operations in the
//! scenario's mix. Every request is recorded with its outcome; every acknowledged write is
//! remembered so it can be read back after the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};

use crate::cities::City;
use crate::lock;
use crate::scenario::Operation;

/// Conversations shared by every city, so appends from several regions meet on the same keys.
pub const CONVERSATIONS: usize = 40;
/// Requests in flight at most; beyond that a request is recorded as failed without being sent.
pub const MAX_IN_FLIGHT: u64 = 4_000;
/// How long after its first message a conversation is read by others, s.
const KNOWN_AFTER_S: f64 = 1.0;
/// The header of a user's read-your-writes token.
const SESSION_HEADER: &str = "meridian-session";
/// How long a user waits for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Where a city's users enter.
#[derive(Debug, Clone)]
pub struct CityPlan {
    /// The city.
    pub city: City,
    /// Region of the edge its users enter by.
    pub edge_region: String,
    /// That edge's URL.
    pub edge_url: String,
    /// Emulated round trip to the edge.
    pub access_rtt: Duration,
    /// The residency zone of its users' profiles (the zone of the nearest region).
    pub zone: String,
    /// With GeoDNS: where its users resolve the service and where each answer leads.
    pub dns: Option<CityDns>,
}

/// How a city's users resolve the service with GeoDNS.
#[derive(Debug, Clone)]
pub struct CityDns {
    /// The DNS listener of the city's nearest edge (anycast, as it were).
    pub server: std::net::SocketAddr,
    /// The name to resolve.
    pub name: String,
    /// The name pinned requests resolve: only the addresses of the city's zone.
    pub zone_name: String,
    /// Each address GeoDNS may answer, with the entry it leads to.
    pub entries: BTreeMap<std::net::Ipv4Addr, Entry>,
}

/// An edge users may enter by.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The region the edge stands in.
    pub region: String,
    /// Its URL.
    pub edge_url: String,
    /// The emulated round trip from the city to it.
    pub access_rtt: Duration,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// No answer, a timeout, a 5xx, or an unexpected status.
    Error,
    /// A residency-pinned request answered 503 while its zone had no region up: the correct
    /// refusal, not an error.
    PinnedRefused,
}

/// A write the service acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct AckedWrite {
    /// Keyspace on the nodes.
    pub keyspace: &'static str,
    /// Key.
    pub key: String,
    /// Map field, for conversation messages.
    pub field: Option<String>,
    /// Region that acknowledged it (`Meridian-Region` of the answer).
    pub region: String,
    /// On a sync keyspace.
    pub sync: bool,
    /// Residency zone, for pinned writes.
    pub zone: Option<String>,
    /// The canary value it carries, for pinned writes.
    pub canary: Option<String>,
    /// When it was acknowledged, s since load start.
    pub acked_at_s: f64,
}

/// One request, as the user saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it started, s since load start.
    pub t_s: f64,
    /// Index into the plan's cities.
    pub city: usize,
    /// The operation.
    pub op: Operation,
    /// HTTP status, 0 when there was no answer.
    pub status: u16,
    /// Latency including the access round trip, ms.
    pub latency_ms: f64,
    /// Region that served it.
    pub region: Option<String>,
    /// Region of the edge it entered by.
    pub entry: String,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Which regions are down as far as users can tell, kept current by the run.
#[derive(Debug, Default)]
pub struct Availability {
    down: Mutex<BTreeSet<String>>,
}

impl Availability {
    /// Marks `region` down (killed, or not yet seen up again by the edges).
    pub fn set_down(&self, region: &str, down: bool) {
        let mut d = lock(&self.down);
        if down {
            d.insert(region.to_string());
        } else {
            d.remove(region);
        }
    }

    /// Whether every region of `zone_regions` is down.
    pub fn all_down(&self, zone_regions: &[String]) -> bool {
        let d = lock(&self.down);
        zone_regions.iter().all(|r| d.contains(r))
    }
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests finished.
    pub done: AtomicU64,
    /// Of which failed.
    pub errors: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
}

/// What the users did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every request.
    pub records: Vec<Record>,
    /// Every acknowledged write.
    pub writes: Vec<AckedWrite>,
    /// GeoDNS lookups made (cache misses).
    pub dns_lookups: u64,
    /// Of which failed (the user then entered by the nearest edge).
    pub dns_failures: u64,
}

/// An address GeoDNS answered and until when it may be used (its TTL).
type Resolved = (std::net::Ipv4Addr, Instant);

#[derive(Default)]
struct Shared {
    recorded: Mutex<Recorded>,
    /// Per city: acknowledged sessions and profiles, for reads.
    sessions: Mutex<Vec<Vec<String>>>,
    profiles: Mutex<Vec<Vec<String>>>,
    /// Conversations with an acknowledged message, and when the first was acknowledged.
    conversations: Mutex<BTreeMap<usize, f64>>,
    /// Per city: the newest `Meridian-Session` token its users got, sent with every request so
    /// reads after a failover still see the city's own writes.
    tokens: Mutex<Vec<Option<String>>>,
    /// Per city, for the service name and the zone name: the address GeoDNS last answered and
    /// until when it may be used (its TTL).
    resolved: Mutex<Vec<[Option<Resolved>; 2]>>,
    dns_lookups: AtomicU64,
    dns_failures: AtomicU64,
}

/// The load: cities, mix, rate, and the zones for residency classification.
pub struct Workload {
    /// Cities and their edges.
    pub cities: Vec<CityPlan>,
    /// Operation weights.
    pub mix: Vec<(Operation, u32)>,
    /// Requests per second.
    pub rate: f64,
    /// Seed of every choice.
    pub seed: u64,
    /// zone → its regions.
    pub zones: Vec<(String, Vec<String>)>,
}

impl Workload {
    /// Runs the load from `start` for `duration` and returns what happened once every request
    /// has finished (at most [`REQUEST_TIMEOUT`] after the end).
    pub async fn run(
        &self,
        start: Instant,
        duration: Duration,
        availability: Arc<Availability>,
        counters: Arc<Counters>,
    ) -> Recorded {
        let shared = Arc::new(Shared {
            sessions: Mutex::new(vec![Vec::new(); self.cities.len()]),
            profiles: Mutex::new(vec![Vec::new(); self.cities.len()]),
            tokens: Mutex::new(vec![None; self.cities.len()]),
            resolved: Mutex::new(vec![[None; 2]; self.cities.len()]),
            ..Shared::default()
        });
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(256)
            .build()
            // invariant: a client without TLS or proxies always builds
            .expect("an HTTP client");
        let mut rng = StdRng::seed_from_u64(self.seed);
        let city_total: u32 = self.cities.iter().map(|c| c.city.weight).sum();
        let mix_total: u32 = self.mix.iter().map(|(_, w)| w).sum();
        let count = (duration.as_secs_f64() * self.rate).floor() as u64;
        let mut tasks = tokio::task::JoinSet::new();
        for seq in 0..count {
            let at = start + Duration::from_secs_f64(seq as f64 / self.rate);
            tokio::time::sleep_until(at.into()).await;
            while tasks.try_join_next().is_some() {}
            let city = pick(
                &mut rng,
                city_total,
                self.cities.iter().map(|c| c.city.weight),
            );
            let op = self.mix[pick(&mut rng, mix_total, self.mix.iter().map(|(_, w)| *w))].0;
            let plan = self.cities[city].clone();
            let zone_regions = self
                .zones
                .iter()
                .find(|(z, _)| *z == plan.zone)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            let choice = rng.next_u64();
            let t_s = at.duration_since(start).as_secs_f64();
            if counters.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                counters.done.fetch_add(1, Ordering::Relaxed);
                counters.errors.fetch_add(1, Ordering::Relaxed);
                lock(&shared.recorded).records.push(Record {
                    t_s,
                    city,
                    op,
                    status: 0,
                    latency_ms: 0.0,
                    region: None,
                    entry: self.cities[city].edge_region.clone(),
                    outcome: Outcome::Error,
                });
                continue;
            }
            counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let request = Request {
                client: client.clone(),
                shared: shared.clone(),
                plan,
                city,
                op,
                seq,
                choice,
                t_s,
                start,
            };
            let availability = availability.clone();
            let counters = counters.clone();
            tasks.spawn(async move {
                let record = request.send(&availability, &zone_regions).await;
                counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                counters.done.fetch_add(1, Ordering::Relaxed);
                if record.outcome == Outcome::Error {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                lock(&request.shared.recorded).records.push(record);
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut recorded = std::mem::take(&mut *lock(&shared.recorded));
        recorded.dns_lookups = shared.dns_lookups.load(Ordering::Relaxed);
        recorded.dns_failures = shared.dns_failures.load(Ordering::Relaxed);
        recorded.records.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        recorded
            .writes
            .sort_by(|a, b| a.acked_at_s.total_cmp(&b.acked_at_s));
        recorded
    }
}

/// Index chosen with probability proportional to its weight.
fn pick(rng: &mut StdRng, total: u32, weights: impl Iterator<Item = u32>) -> usize {
    let mut x = rng.random_range(0..total.max(1));
    for (i, w) in weights.enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    0
}

struct Request {
    client: reqwest::Client,
    shared: Arc<Shared>,
    plan: CityPlan,
    city: usize,
    op: Operation,
    seq: u64,
    choice: u64,
    t_s: f64,
    start: Instant,
}

/// What to send, and what an acknowledgement means.
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<serde_json::Value>,
    headers: Vec<(&'static str, String)>,
    pinned: bool,
    ack: Option<Ack>,
}

enum Ack {
    Message { conversation: usize },
    Order,
    Profile { key: String, canary: String },
    Session,
}

impl Request {
    fn call(&self) -> Call {
        let user = format!("u{}-{}", self.city, self.choice % 1000);
        let pick_from = |list: &Mutex<Vec<Vec<String>>>| {
            let l = lock(list);
            let own = &l[self.city];
            (!own.is_empty()).then(|| own[(self.choice % own.len() as u64) as usize].clone())
        };
        let zone = ("meridian-zone", self.plan.zone.clone());
        match self.op {
            Operation::ConversationAppend => {
                let c = (self.choice % CONVERSATIONS as u64) as usize;
                Call {
                    method: reqwest::Method::POST,
                    path: format!("/conversations/c-{c:02}/messages"),
                    body: Some(serde_json::json!({
                        "author": user,
                        "text": format!("hello from {} #{}", self.plan.city.name, self.seq),
                    })),
                    headers: vec![("idempotency-key", format!("m-{}", self.seq))],
                    pinned: false,
                    ack: Some(Ack::Message { conversation: c }),
                }
            }
            Operation::ConversationRead => {
                // Readers learn of a conversation some time after it starts (a link, a
                // notification): only those written at least KNOWN_AFTER_S ago are read.
                let known: Vec<usize> = lock(&self.shared.conversations)
                    .iter()
                    .filter(|(_, at)| **at <= self.t_s - KNOWN_AFTER_S)
                    .map(|(c, _)| *c)
                    .collect();
                if known.is_empty() {
                    return self.health();
                }
                let c = known[(self.choice % known.len() as u64) as usize];
                Call {
                    method: reqwest::Method::GET,
                    path: format!("/conversations/c-{c:02}"),
                    body: None,
                    headers: Vec::new(),
                    pinned: false,
                    ack: None,
                }
            }
            Operation::Checkout => Call {
                method: reqwest::Method::POST,
                path: "/checkout".into(),
                body: Some(serde_json::json!({
                    "user": user,
                    "items": ["sku-1", format!("sku-{}", self.choice % 97)],
                    "total_cents": 1000 + self.choice % 9000,
                })),
                headers: vec![("idempotency-key", format!("ck-{}", self.seq))],
                pinned: false,
                ack: Some(Ack::Order),
            },
            Operation::ProfileWrite => {
                let key = format!("p{}-{}", self.city, self.seq);
                let canary = format!("MRDNCANARY{:016x}{:08x}", self.choice, self.seq);
                Call {
                    method: reqwest::Method::PUT,
                    path: format!("/profiles/{key}"),
                    body: Some(serde_json::json!({
                        "name": user,
                        "city": self.plan.city.name,
                        "canary": canary,
                    })),
                    headers: vec![zone],
                    pinned: true,
                    ack: Some(Ack::Profile { key, canary }),
                }
            }
            Operation::ProfileRead => match pick_from(&self.shared.profiles) {
                Some(key) => Call {
                    method: reqwest::Method::GET,
                    path: format!("/profiles/{key}"),
                    body: None,
                    headers: vec![zone],
                    pinned: true,
                    ack: None,
                },
                None => self.health(),
            },
            Operation::SessionCreate => Call {
                method: reqwest::Method::POST,
                path: "/sessions".into(),
                body: Some(serde_json::json!({ "user": user })),
                headers: vec![("idempotency-key", format!("s-{}", self.seq))],
                pinned: false,
                ack: Some(Ack::Session),
            },
            Operation::SessionRead => match pick_from(&self.shared.sessions) {
                Some(id) => Call {
                    method: reqwest::Method::GET,
                    path: format!("/sessions/{id}"),
                    body: None,
                    headers: Vec::new(),
                    pinned: false,
                    ack: None,
                },
                None => self.health(),
            },
        }
    }

    /// Before a city has anything to read, its read is a readiness check of the app.
    fn health(&self) -> Call {
        Call {
            method: reqwest::Method::GET,
            path: "/health/ready".into(),
            body: None,
            headers: Vec::new(),
            pinned: false,
            ack: None,
        }
    }

    async fn send(&self, availability: &Availability, zone_regions: &[String]) -> Record {
        let call = self.call();
        let begun = Instant::now();
        let entry = self.entry(call.pinned).await;
        let half = entry.access_rtt / 2;
        tokio::time::sleep(half).await;
        let mut req = self.client.request(
            call.method.clone(),
            format!("{}{}", entry.edge_url, call.path),
        );
        for (k, v) in &call.headers {
            req = req.header(*k, v);
        }
        if let Some(token) = lock(&self.shared.tokens)[self.city].clone() {
            req = req.header(SESSION_HEADER, token);
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let answer = req.send().await;
        let (status, region, body) = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let region = resp
                    .headers()
                    .get("meridian-region")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(token) = resp
                    .headers()
                    .get(SESSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                {
                    lock(&self.shared.tokens)[self.city] = Some(token.to_string());
                }
                let body = resp.json::<serde_json::Value>().await.ok();
                (status, region, body)
            }
            Err(_) => (0, None, None),
        };
        tokio::time::sleep(half).await;
        let latency_ms = begun.elapsed().as_secs_f64() * 1000.0;
        let ok = (200..300).contains(&status);
        let outcome = if ok {
            Outcome::Ok
        } else if call.pinned && status == 503 && availability.all_down(zone_regions) {
            Outcome::PinnedRefused
        } else {
            Outcome::Error
        };
        if ok {
            self.remember(&call, region.as_deref(), body.as_ref());
        }
        Record {
            t_s: self.t_s,
            city: self.city,
            op: self.op,
            status,
            latency_ms,
            region,
            entry: entry.region,
            outcome,
        }
    }

    /// The edge to enter by: the nearest, or with GeoDNS the one of the answered region
    /// (resolved at the nearest edge's DNS, one access round trip, when the city's cached
    /// answer has expired; on a failed lookup, the nearest). Pinned requests resolve their
    /// zone's name.
    async fn entry(&self, pinned: bool) -> Entry {
        let nearest = Entry {
            region: self.plan.edge_region.clone(),
            edge_url: self.plan.edge_url.clone(),
            access_rtt: self.plan.access_rtt,
        };
        let Some(dns) = &self.plan.dns else {
            return nearest;
        };
        let slot = usize::from(pinned);
        let name = if pinned { &dns.zone_name } else { &dns.name };
        let cached = lock(&self.shared.resolved)[self.city][slot]
            .filter(|(_, until)| *until > Instant::now())
            .and_then(|(addr, _)| dns.entries.get(&addr).cloned());
        if let Some(e) = cached {
            return e;
        }
        self.shared.dns_lookups.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.plan.access_rtt).await;
        let answer = crate::resolve::lookup_a(dns.server, name, self.seq as u16).await;
        match answer {
            Ok((addrs, ttl)) => {
                if let Some((addr, e)) = addrs
                    .iter()
                    .find_map(|a| dns.entries.get(a).map(|e| (*a, e.clone())))
                {
                    lock(&self.shared.resolved)[self.city][slot] =
                        Some((addr, Instant::now() + ttl));
                    return e;
                }
                self.shared.dns_failures.fetch_add(1, Ordering::Relaxed);
                nearest
            }
            Err(why) => {
                tracing::debug!(city = self.plan.city.name, %why, "GeoDNS lookup failed");
                self.shared.dns_failures.fetch_add(1, Ordering::Relaxed);
                nearest
            }
        }
    }

    fn remember(&self, call: &Call, region: Option<&str>, body: Option<&serde_json::Value>) {
        let Some(ack) = &call.ack else { return };
        let region = region.unwrap_or("unknown").to_string();
        let acked_at_s = self.start.elapsed().as_secs_f64();
        let field = |name: &str| body.and_then(|b| b[name].as_str()).map(str::to_string);
        let write = match ack {
            Ack::Message { conversation } => {
                lock(&self.shared.conversations)
                    .entry(*conversation)
                    .or_insert(acked_at_s);
                AckedWrite {
                    keyspace: "conversations",
                    key: format!("c-{conversation:02}"),
                    field: field("message"),
                    region,
                    sync: false,
                    zone: None,
                    canary: None,
                    acked_at_s,
                }
            }
            Ack::Order => AckedWrite {
                keyspace: "orders",
                key: field("order").unwrap_or_default(),
                field: None,
                region,
                sync: true,
                zone: None,
                canary: None,
                acked_at_s,
            },
            Ack::Profile { key, canary } => {
                lock(&self.shared.profiles)[self.city].push(key.clone());
                AckedWrite {
                    keyspace: "profiles",
                    key: key.clone(),
                    field: None,
                    region,
                    sync: false,
                    zone: Some(self.plan.zone.clone()),
                    canary: Some(canary.clone()),
                    acked_at_s,
                }
            }
            Ack::Session => {
                let id = field("session").unwrap_or_default();
                lock(&self.shared.sessions)[self.city].push(id.clone());
                AckedWrite {
                    keyspace: "sessions",
                    key: id,
                    field: None,
                    region,
                    sync: false,
                    zone: None,
                    canary: None,
                    acked_at_s,
                }
            }
        };
        lock(&self.shared.recorded).writes.push(write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_follows_the_weights() {
        let mut rng = StdRng::seed_from_u64(7);
        let weights = [1u32, 0, 3];
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            counts[pick(&mut rng, 4, weights.iter().copied())] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((2700..3300).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn availability_tracks_whole_zones() {
        let a = Availability::default();
        let zone = vec!["eu-west-1".to_string(), "eu-central-1".to_string()];
        a.set_down("eu-west-1", true);
        assert!(!a.all_down(&zone));
        a.set_down("eu-central-1", true);
        assert!(a.all_down(&zone));
        a.set_down("eu-west-1", false);
        assert!(!a.all_down(&zone));
    }
}
