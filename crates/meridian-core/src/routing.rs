//! The edge's routing decision (DESIGN §3) as a pure function: client facts × health view ×
//! routing config → an ordered list of regions to try, with a human-readable explanation.
//!
//! Randomness (for `weighted`) comes in as a number, so a decision is replayable. Nothing here
//! does I/O or reads a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{AllDown, GeoMap, LatLon, Policy, Pool, Region, Routing, Topology, Writes};

/// What the edge knows about a request's client. Every field defaults to "unknown".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientFacts {
    /// The client address after trusted proxy hops were removed. Default: `None`.
    pub ip: Option<std::net::IpAddr>,
    /// Two-letter upper-case ISO country code from GeoIP or a trusted header. Default: `None`.
    pub country: Option<String>,
    /// Two-letter continent code (`EU`, `NA`, …). Default: `None`.
    pub continent: Option<String>,
    /// Where the client is; when unknown, `proximity` measures from the edge. Default: `None`.
    pub location: Option<LatLon>,
    /// Verified residency zone (token claim or trusted header). When set, no region outside
    /// the zone is ever returned. Default: `None`.
    pub zone: Option<String>,
    /// Verified home region claim, followed by writes when `writes = "home"`. Default: `None`.
    pub home: Option<String>,
    /// The region named by the client's sticky cookie. Default: `None`.
    pub cookie_region: Option<String>,
    /// The HTTP method, upper case (`GET`). Default: empty, treated as unsafe.
    pub method: String,
    /// Whether the request carries an `Idempotency-Key` header. Default: `false`.
    pub idempotency_key: bool,
}

impl ClientFacts {
    /// Whether the method is safe: `GET`, `HEAD` or `OPTIONS`.
    pub fn is_safe(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    /// Whether a failed attempt may be retried in another region once it may have reached the
    /// app: safe methods and requests with an `Idempotency-Key` only.
    pub fn retryable(&self) -> bool {
        self.is_safe() || self.idempotency_key
    }
}

/// The edge's current view of one region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionView {
    /// Whether the region is up (enough healthy backends, quorum applied). Default: `true`.
    pub up: bool,
    /// EWMA of measured round-trip time; `None` before any measurement. Default: `None`.
    pub rtt: Option<Duration>,
    /// Traffic dial in percent, 0..=100 (0 drains the region). Default: 100.
    pub weight: u8,
}

impl Default for RegionView {
    fn default() -> Self {
        RegionView {
            up: true,
            rtt: None,
            weight: 100,
        }
    }
}

/// The health view: region name → view. A region missing from the map has the default view.
pub type HealthView = BTreeMap<String, RegionView>;

/// How the decision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// At least one candidate region is up; `regions` lists the up ones.
    Routed,
    /// Every candidate is down and `all_down = "fail-open"`: `regions` lists them all anyway.
    FailOpen,
    /// Every candidate is down and `all_down = "fallback:<region>"`: `regions` is that region.
    Fallback,
    /// No region may serve: `regions` is empty and the edge answers 503.
    FailClosed,
}

/// The routing decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Regions to try, best first; every one allowed by the client's zone and the rules'
    /// `residency`. Empty only when
    /// `outcome` is [`Outcome::FailClosed`].
    pub regions: Vec<String>,
    /// How the list was reached.
    pub outcome: Outcome,
    /// One line per step of the decision, for `explain` and logs.
    pub explanation: Vec<String>,
}

/// Great-circle distance in kilometres (haversine, mean Earth radius 6371 km).
pub fn distance_km(a: LatLon, b: LatLon) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// A deterministic stream of numbers from one random input (splitmix64).
struct Draws(u64);

impl Draws {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Decides where a request goes.
///
/// * `edge_location`: where the deciding edge is (used by `proximity` when the client's
///   location is unknown).
/// * `random`: any random number; the same inputs and the same `random` give the same decision.
///
/// Steps, each explained: (1) candidates are the regions with app backends, in file order;
/// (2) a zone claim keeps only that zone's regions (an unknown zone keeps none), and so does
/// the rules' own `residency` (a pinned DNS record); (3) an unsafe
/// method under `writes = "primary:R"` keeps only R, under `writes = "home"` with a home claim
/// only the home; (4) the policy tree orders them (each pool's regions where the level above
/// ranked the pool, ordered by the pool's policy); drained regions (weight 0) go last; (5) a sticky
/// cookie naming an up, undrained candidate moves it first; (6) down regions are dropped; when
/// none is left `all_down` applies — but never to a region outside the zone.
pub fn decide(
    topology: &Topology,
    health: &HealthView,
    client: &ClientFacts,
    edge_location: Option<LatLon>,
    random: u64,
) -> Decision {
    decide_for(
        topology,
        &Ask::proxy(topology, true),
        health,
        client,
        edge_location,
        random,
    )
}

/// The same decision as [`decide`] with an empty `explanation`: the proxy's hot path, which
/// formats no text (it asks [`decide`] again only to explain a 503).
pub fn route(
    topology: &Topology,
    health: &HealthView,
    client: &ClientFacts,
    edge_location: Option<LatLon>,
    random: u64,
) -> Decision {
    decide_for(
        topology,
        &Ask::proxy(topology, false),
        health,
        client,
        edge_location,
        random,
    )
}

/// What a decision chooses among and by which rules. [`decide`] and [`route`] ask with the
/// topology's `[routing]` and the regions that have app backends; GeoDNS asks with a record's
/// own policy and the regions that have an address of the record's family.
pub struct Ask<'a> {
    /// The rules: policy, geo map, `all_down`, order, writes, stickiness.
    pub routing: &'a Routing,
    /// Which regions are candidates (step 1), kept in file order.
    pub candidate: &'a dyn Fn(&Region) -> bool,
    /// What step 1 says the candidates are, in the explanation.
    pub candidates_are: &'a str,
    /// Whether to write the explanation (off on hot paths).
    pub explain: bool,
}

impl<'a> Ask<'a> {
    /// The proxy's question: `[routing]`, regions with app backends.
    pub fn proxy(topology: &'a Topology, explain: bool) -> Ask<'a> {
        Ask {
            routing: &topology.routing,
            candidate: &|r: &Region| !r.app.is_empty(),
            candidates_are: "regions with app backends",
            explain,
        }
    }
}

/// The decision of [`decide`] for any [`Ask`]: the same steps, with the ask's rules and
/// candidates. Decisions by `decide` and by `decide_for(Ask::proxy(..))` are identical.
pub fn decide_for(
    topology: &Topology,
    ask: &Ask<'_>,
    health: &HealthView,
    client: &ClientFacts,
    edge_location: Option<LatLon>,
    random: u64,
) -> Decision {
    decide_inner(topology, ask, health, client, edge_location, random)
}

/// The explanation being built; formats nothing when off.
struct Why {
    on: bool,
    lines: Vec<String>,
}

impl Why {
    fn push(&mut self, line: impl FnOnce() -> String) {
        if self.on {
            self.lines.push(line());
        }
    }
}

fn decide_inner(
    topology: &Topology,
    ask: &Ask<'_>,
    health: &HealthView,
    client: &ClientFacts,
    edge_location: Option<LatLon>,
    random: u64,
) -> Decision {
    let routing = ask.routing;
    let mut why = Why {
        on: ask.explain,
        lines: Vec::new(),
    };
    let view = |r: &str| health.get(r).copied().unwrap_or_default();

    let mut cands: Vec<&str> = topology
        .regions
        .iter()
        .filter(|r| (ask.candidate)(r))
        .map(|r| r.name.as_str())
        .collect();
    why.push(|| format!("candidates ({}): {}", ask.candidates_are, list(&cands)));

    let in_zone = |zone: &Option<String>, r: &str| {
        zone.as_deref()
            .is_none_or(|z| topology.zone_of(r) == Some(z))
    };
    let zone_allows = |r: &str| in_zone(&client.zone, r) && in_zone(&routing.residency, r);
    if let Some(z) = &client.zone {
        cands.retain(|r| in_zone(&client.zone, r));
        why.push(|| format!("residency zone `{z}` keeps: {}", list(&cands)));
    }
    if let Some(z) = &routing.residency {
        cands.retain(|r| in_zone(&routing.residency, r));
        why.push(|| format!("pinned to zone `{z}`: keeps {}", list(&cands)));
    }

    if !client.is_safe() {
        match (&routing.writes, &client.home) {
            (Writes::Primary(p), _) => {
                cands.retain(|r| r == p);
                why.push(|| {
                    format!(
                        "{} is a write and writes = \"primary:{p}\": keeps {}",
                        client.method,
                        list(&cands)
                    )
                });
            }
            (Writes::Home, Some(h)) => {
                cands.retain(|r| r == h);
                why.push(|| {
                    format!(
                        "{} is a write and writes = \"home\" with home `{h}`: keeps {}",
                        client.method,
                        list(&cands)
                    )
                });
            }
            _ => {}
        }
    }

    let mut ordered = order(
        topology,
        routing,
        &cands,
        health,
        client,
        edge_location,
        random,
        &mut why,
    );

    let (drained, mut active): (Vec<&str>, Vec<&str>) =
        ordered.drain(..).partition(|r| view(r).weight == 0);
    if !drained.is_empty() {
        why.push(|| format!("drained (weight 0), tried last: {}", drained.join(", ")));
    }

    if routing.sticky
        && let Some(c) = &client.cookie_region
        && let Some(pos) = active.iter().position(|r| r == c)
        && view(c).up
    {
        let r = active.remove(pos);
        active.insert(0, r);
        why.push(|| format!("sticky cookie names `{c}`, which is up: tried first"));
    }
    active.extend(drained);

    let all: Vec<&str> = active.clone();
    active.retain(|r| view(r).up);
    if all.len() != active.len() {
        why.push(|| {
            let down: Vec<&str> = all.iter().copied().filter(|r| !view(r).up).collect();
            format!("down, skipped: {}", down.join(", "))
        });
    }
    if !active.is_empty() {
        why.push(|| format!("order: {}", active.join(", ")));
        return Decision {
            regions: active.into_iter().map(str::to_string).collect(),
            outcome: Outcome::Routed,
            explanation: why.lines,
        };
    }

    let (regions, outcome) = match &routing.all_down {
        AllDown::FailOpen if !all.is_empty() => {
            why.push(|| {
                format!(
                    "every candidate is down; all_down = fail-open: {}",
                    all.join(", ")
                )
            });
            (all, Outcome::FailOpen)
        }
        AllDown::Fallback(f) if zone_allows(f) && topology.region(f).is_some() => {
            why.push(|| format!("every candidate is down; all_down = fallback:{f}"));
            (vec![f.as_str()], Outcome::Fallback)
        }
        other => {
            let mode = match other {
                AllDown::FailOpen => "fail-open with no candidate".to_string(),
                AllDown::FailClosed => "fail-closed".to_string(),
                AllDown::Fallback(f) => format!("fallback:{f} is outside the zone"),
            };
            if all.is_empty() {
                why.push(|| "no candidate is left (see above): answer 503".to_string());
            } else {
                why.push(|| format!("every candidate is down; {mode}: answer 503"));
            }
            (Vec::new(), Outcome::FailClosed)
        }
    };
    Decision {
        regions: regions.into_iter().map(str::to_string).collect(),
        outcome,
        explanation: why.lines,
    }
}

fn list(v: &[&str]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// What ordering needs besides the candidates, shared by every level of the tree.
struct Facts<'a, 'h> {
    topology: &'a Topology,
    routing: &'a Routing,
    health: &'h HealthView,
    client: &'h ClientFacts,
    edge_location: Option<LatLon>,
}

/// One level of the policy tree: the top (`[routing]`) or a pool.
struct Level<'a> {
    /// `None` at the top.
    pool: Option<&'a Pool>,
    policy: Policy,
    geo: &'a GeoMap,
    /// Failover order of the level's members.
    order: &'a [String],
}

/// The prefix of a level's explanation lines: `pool `eu`: ` for a pool, nothing at the top.
struct LevelLabel<'a>(Option<&'a Pool>);

impl std::fmt::Display for LevelLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "pool `{}`: ", p.name),
            None => Ok(()),
        }
    }
}

/// A member of a level with candidates below it: a region, or a pool and its candidate regions.
struct Member<'a> {
    name: &'a str,
    /// Empty for a region.
    regions: Vec<&'a str>,
    pool: Option<&'a Pool>,
}

impl Member<'_> {
    fn regions(&self) -> &[&str] {
        if self.pool.is_some() {
            &self.regions
        } else {
            std::slice::from_ref(&self.name)
        }
    }
}

/// Orders the candidates by the policy tree: the top level's policy ranks its members
/// (regions, and pools as one), and each pool's regions take its place, ordered by the pool's
/// own policy. Without pools, the top-level policy orders the regions.
#[allow(clippy::too_many_arguments)]
fn order<'a>(
    topology: &'a Topology,
    routing: &'a Routing,
    cands: &[&'a str],
    health: &HealthView,
    client: &ClientFacts,
    edge_location: Option<LatLon>,
    random: u64,
    why: &mut Why,
) -> Vec<&'a str> {
    let facts = Facts {
        topology,
        routing,
        health,
        client,
        edge_location,
    };
    let top = Level {
        pool: None,
        policy: routing.policy,
        geo: &routing.geo,
        order: &routing.order,
    };
    let mut out = Vec::with_capacity(cands.len());
    order_level(&facts, &top, cands, &mut Draws(random), why, &mut out);
    out
}

/// The member of `level` (`None`: the top) that `region` is at or below, if any.
fn member_of<'a>(routing: &'a Routing, region: &'a str, level: Option<&str>) -> Option<&'a str> {
    let mut cur = region;
    loop {
        let parent = routing.parent_of(cur).map(|p| p.name.as_str());
        if parent == level {
            return Some(cur);
        }
        cur = parent?;
    }
}

fn order_level<'a>(
    f: &Facts<'a, '_>,
    level: &Level<'a>,
    cands: &[&'a str],
    draws: &mut Draws,
    why: &mut Why,
    out: &mut Vec<&'a str>,
) {
    let routing = f.routing;
    let mut v: Vec<Member<'a>> = Vec::with_capacity(cands.len());
    if routing.pools.is_empty() {
        v.extend(cands.iter().map(|r| Member {
            name: r,
            regions: Vec::new(),
            pool: None,
        }));
    } else {
        let here = level.pool.map(|p| p.name.as_str());
        for r in cands {
            let Some(m) = member_of(routing, r, here) else {
                continue;
            };
            match v.iter_mut().find(|x| x.name == m) {
                Some(x) => x.regions.push(r),
                None => {
                    let pool = routing.pool(m);
                    v.push(Member {
                        name: m,
                        regions: if pool.is_some() { vec![*r] } else { Vec::new() },
                        pool,
                    });
                }
            }
        }
        if let Some(p) = level.pool {
            v.sort_by_key(|m| p.members.iter().position(|x| x == m.name));
        }
    }
    // Formatted only when an explanation line is written (never on the proxy's hot path).
    let label = LevelLabel(level.pool);
    let view = |r: &str| f.health.get(r).copied().unwrap_or_default();
    let by_order = |v: &mut Vec<Member<'a>>| {
        v.sort_by_key(|m| {
            level
                .order
                .iter()
                .position(|o| o == m.name)
                .unwrap_or(usize::MAX)
        });
    };
    // A pool is as close or as fast as its best up region (its best region when none is up).
    let best = |m: &Member<'_>, key: &dyn Fn(&str) -> Option<f64>| {
        let regions = m.regions();
        let up = regions.iter().any(|r| view(r).up);
        regions
            .iter()
            .filter(|r| !up || view(r).up)
            .filter_map(|r| key(r))
            .min_by(f64::total_cmp)
    };
    match level.policy {
        Policy::Failover => {
            by_order(&mut v);
            why.push(|| {
                let what = if level.pool.is_some() {
                    "members"
                } else {
                    "[routing] order"
                };
                format!("{label}policy failover: {what}")
            });
        }
        Policy::Latency => {
            let ms = |r: &str| view(r).rtt.map(|d| d.as_secs_f64() * 1000.0);
            let key = |m: &Member<'_>| best(m, &ms);
            v.sort_by(|a, b| match (key(a), key(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (a, b) => b.is_some().cmp(&a.is_some()),
            });
            why.push(|| {
                let shown: Vec<String> = v
                    .iter()
                    .map(|m| match key(m) {
                        Some(d) => format!("{} {d:.1}ms", m.name),
                        None => format!("{} unmeasured", m.name),
                    })
                    .collect();
                format!("{label}policy latency (EWMA RTT): {}", shown.join(", "))
            });
        }
        Policy::Proximity => {
            let from = f.client.location.or(f.edge_location);
            let km = |r: &str| {
                let loc = f.topology.region(r).and_then(|r| r.location);
                match (from, loc) {
                    (Some(a), Some(b)) => Some(distance_km(a, b)),
                    _ => None,
                }
            };
            let key = |m: &Member<'_>| best(m, &km).unwrap_or(f64::INFINITY);
            v.sort_by(|a, b| key(a).total_cmp(&key(b)));
            let src = if f.client.location.is_some() {
                "client"
            } else {
                "edge"
            };
            why.push(|| {
                let shown: Vec<String> = v
                    .iter()
                    .map(|m| format!("{} {:.0}km", m.name, key(m)))
                    .collect();
                format!(
                    "{label}policy proximity from the {src}: {}",
                    shown.join(", ")
                )
            });
        }
        Policy::Geo => {
            by_order(&mut v);
            let pick = level
                .geo
                .lookup(f.client.country.as_deref(), f.client.continent.as_deref());
            if let Some(p) = pick
                && let Some(pos) = v.iter().position(|m| m.name == p)
            {
                let m = v.remove(pos);
                v.insert(0, m);
            }
            why.push(|| {
                let then = if level.pool.is_some() {
                    "members"
                } else {
                    "[routing] order"
                };
                format!(
                    "{label}policy geo: country {} continent {} → {}, then {then}",
                    f.client.country.as_deref().unwrap_or("?"),
                    f.client.continent.as_deref().unwrap_or("?"),
                    pick.unwrap_or("no rule")
                )
            });
        }
        Policy::Weighted => {
            // A member's share is its dial times its capacity; a pool counts with the mean
            // capacity of its regions, so with equal capacities its dial alone is its share.
            let dial = |m: &Member<'_>| match m.pool {
                Some(p) => f64::from(routing.weights.get(&p.name).copied().unwrap_or(100)),
                None => f64::from(view(m.name).weight),
            };
            let capacity = |m: &Member<'_>| {
                let regions = m.regions();
                let sum: f64 = regions
                    .iter()
                    .map(|r| f64::from(f.topology.region(r).map_or(100, |x| x.capacity)))
                    .sum();
                if regions.is_empty() {
                    100.0
                } else {
                    sum / regions.len() as f64
                }
            };
            let w = |m: &Member<'_>| dial(m) * capacity(m);
            let shown = if why.on {
                let s: Vec<String> = v
                    .iter()
                    .map(|m| {
                        let c = capacity(m);
                        if c == 100.0 {
                            format!("{} {}%", m.name, dial(m))
                        } else {
                            format!("{} {}% × capacity {c}", m.name, dial(m))
                        }
                    })
                    .collect();
                s.join(", ")
            } else {
                String::new()
            };
            // Each member's weight once, not once per draw.
            let mut pool: Vec<(Member<'a>, f64)> = std::mem::take(&mut v)
                .into_iter()
                .map(|m| {
                    let weight = w(&m);
                    (m, weight)
                })
                .collect();
            while !pool.is_empty() {
                let total: f64 = pool.iter().map(|(_, weight)| weight).sum();
                let idx = if total <= 0.0 {
                    0
                } else {
                    let mut x = draws.next_unit() * total;
                    let mut chosen = pool.len() - 1;
                    for (i, (_, weight)) in pool.iter().enumerate() {
                        if x < *weight {
                            chosen = i;
                            break;
                        }
                        x -= weight;
                    }
                    chosen
                };
                v.push(pool.remove(idx).0);
            }
            why.push(|| {
                let drawn: Vec<&str> = v.iter().map(|m| m.name).collect();
                format!("{label}policy weighted ({shown}): drew {}", list(&drawn))
            });
        }
    }
    for m in v {
        match m.pool {
            Some(p) => {
                let inner = Level {
                    pool: Some(p),
                    policy: p.policy,
                    geo: &p.geo,
                    order: &p.members,
                };
                order_level(f, &inner, &m.regions, draws, why, out);
            }
            None => out.push(m.name),
        }
    }
}

/// A retry budget: retries may not exceed `ratio` × requests plus a small `reserve`, so a
/// failover never multiplies the load on the surviving regions.
///
/// Guarantees: over any history, `retries ≤ reserve + ratio × requests` (the balance never
/// goes negative and never exceeds `reserve` + what requests deposited).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Thousandths of a retry deposited per request.
    per_request: u64,
    /// Most thousandths that may be saved up.
    cap: u64,
    /// Thousandths available now.
    balance: u64,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request (default used by the edge: 0.2) with `reserve`
    /// retries available at start and at most `cap` saved up (the edge uses 10 and 100).
    /// Counted in thousandths of a retry, so `ratio` is rounded to 0.001.
    pub fn new(ratio: f64, reserve: u32, cap: u32) -> Self {
        let per_request = if ratio.is_finite() {
            (ratio.max(0.0) * 1000.0).round() as u64
        } else {
            0
        };
        RetryBudget {
            per_request,
            cap: u64::from(cap.max(reserve)) * 1000,
            balance: u64::from(reserve) * 1000,
        }
    }

    /// Records one request (first attempt).
    pub fn on_request(&mut self) {
        self.balance = (self.balance + self.per_request).min(self.cap);
    }

    /// Takes one retry from the budget; `false` when the budget is spent.
    pub fn try_retry(&mut self) -> bool {
        if self.balance >= 1000 {
            self.balance -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use proptest::prelude::*;

    const BASE: &str = r#"
[cluster]
name = "t"
[zones]
eu = ["eu-west-1", "eu-central-1"]
us = ["us-east-1"]
[[region]]
name = "us-east-1"
node = "http://127.0.0.1:7601"
app = ["http://127.0.0.1:8601"]
location = { lat = 38.9, lon = -77.4 }
[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:7602"
app = ["http://127.0.0.1:8602"]
location = { lat = 53.3, lon = -6.3 }
[[region]]
name = "eu-central-1"
node = "http://127.0.0.1:7603"
app = ["http://127.0.0.1:8603"]
location = { lat = 50.1, lon = 8.7 }
[[region]]
name = "ap-southeast-1"
node = "http://127.0.0.1:7604"
app = ["http://127.0.0.1:8604"]
location = { lat = 1.3, lon = 103.8 }
"#;

    fn topo(routing: &str) -> Topology {
        parse("t.toml", &format!("{BASE}\n{routing}")).unwrap()
    }

    fn get() -> ClientFacts {
        ClientFacts {
            method: "GET".into(),
            ..Default::default()
        }
    }

    fn down(names: &[&str]) -> HealthView {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    RegionView {
                        up: false,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    const EU_POOL: &str = "[routing.pool.eu]\nmembers = [\"eu-west-1\", \"eu-central-1\"]\n";

    fn rtts(ms: &[(&str, u64)]) -> HealthView {
        ms.iter()
            .map(|(n, ms)| {
                let rtt = Some(Duration::from_millis(*ms));
                (
                    n.to_string(),
                    RegionView {
                        rtt,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn geo_between_pools_then_latency_inside() {
        let t = topo(&format!(
            "[routing]\npolicy = \"geo\"\norder = [\"us-east-1\"]\n\
             [routing.geo]\nEU = \"eu\"\ndefault = \"us-east-1\"\n{EU_POOL}policy = \"latency\""
        ));
        assert_eq!(t.routing.order, ["us-east-1", "eu", "ap-southeast-1"]);
        let h = rtts(&[("eu-west-1", 30), ("eu-central-1", 12), ("us-east-1", 5)]);
        let de = ClientFacts {
            country: Some("DE".into()),
            continent: Some("EU".into()),
            ..get()
        };
        let d = decide(&t, &h, &de, None, 0);
        assert_eq!(
            d.regions,
            ["eu-central-1", "eu-west-1", "us-east-1", "ap-southeast-1"],
            "{:?}",
            d.explanation
        );
        assert!(
            d.explanation
                .iter()
                .any(|l| l.starts_with("pool `eu`: policy latency"))
        );
        let us = ClientFacts {
            country: Some("US".into()),
            continent: Some("NA".into()),
            ..get()
        };
        let d = decide(&t, &h, &us, None, 0);
        assert_eq!(
            d.regions,
            ["us-east-1", "eu-central-1", "eu-west-1", "ap-southeast-1"]
        );
    }

    #[test]
    fn a_pool_is_as_fast_as_its_best_up_region() {
        let t = topo(&format!(
            "[routing]\npolicy = \"latency\"\n{EU_POOL}policy = \"failover\""
        ));
        let mut h = rtts(&[
            ("eu-west-1", 10),
            ("eu-central-1", 40),
            ("us-east-1", 20),
            ("ap-southeast-1", 90),
        ]);
        let d = decide(&t, &h, &get(), None, 0);
        assert_eq!(
            d.regions,
            ["eu-west-1", "eu-central-1", "us-east-1", "ap-southeast-1"]
        );
        h.get_mut("eu-west-1").unwrap().up = false;
        let d = decide(&t, &h, &get(), None, 0);
        assert_eq!(
            d.regions,
            ["us-east-1", "eu-central-1", "ap-southeast-1"],
            "{:?}",
            d.explanation
        );
    }

    #[test]
    fn nested_pools_expand_in_place() {
        let t = topo(&format!(
            "[routing]\npolicy = \"failover\"\norder = [\"ap-southeast-1\"]\n\
             {EU_POOL}policy = \"failover\"\n\
             [routing.pool.west]\nmembers = [\"us-east-1\", \"eu\"]\npolicy = \"proximity\""
        ));
        assert_eq!(t.routing.order, ["ap-southeast-1", "west"]);
        let paris = ClientFacts {
            location: Some(LatLon {
                lat: 48.9,
                lon: 2.4,
            }),
            ..get()
        };
        let d = decide(&t, &HealthView::new(), &paris, None, 0);
        assert_eq!(
            d.regions,
            ["ap-southeast-1", "eu-west-1", "eu-central-1", "us-east-1"]
        );
        let d = decide(&t, &down(&["ap-southeast-1"]), &paris, None, 0);
        assert_eq!(
            d.regions,
            ["eu-west-1", "eu-central-1", "us-east-1"],
            "{:?}",
            d.explanation
        );
    }

    #[test]
    fn pool_weights_share_traffic_between_pools() {
        let t = topo(&format!(
            "[routing]\npolicy = \"weighted\"\n[routing.weights]\neu = 75\n\
             {EU_POOL}policy = \"failover\""
        ));
        let n = 4000u64;
        let mut draws = Draws(7);
        let mut eu = 0u64;
        for _ in 0..n {
            let r = (draws.next_unit() * u64::MAX as f64) as u64;
            let d = decide(&t, &HealthView::new(), &get(), None, r);
            if d.regions[0].starts_with("eu-") {
                assert_eq!(d.regions[0], "eu-west-1", "failover inside the pool");
                eu += 1;
            }
        }
        // A pool's weight comes from the file; a region's from the health view (100 here):
        // eu 75 against us-east-1 and ap-southeast-1 at 100 each.
        let p = 75.0 / 275.0;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (eu as f64 - p * n as f64).abs() < 5.0 * sd,
            "eu first {eu} of {n}"
        );
    }

    #[test]
    fn a_pinned_record_never_leaves_its_zone() {
        let mut t = topo("[routing]\npolicy = \"latency\"\nall_down = \"fallback:us-east-1\"");
        t.routing.residency = Some("eu".into());
        let d = decide(&t, &HealthView::new(), &get(), None, 0);
        assert_eq!(d.regions, ["eu-west-1", "eu-central-1"]);
        let d = decide(&t, &down(&["eu-west-1", "eu-central-1"]), &get(), None, 0);
        assert_eq!((d.outcome, d.regions.len()), (Outcome::FailClosed, 0));
        t.routing.all_down = AllDown::FailOpen;
        let d = decide(&t, &down(&["eu-west-1", "eu-central-1"]), &get(), None, 0);
        assert_eq!(d.regions, ["eu-west-1", "eu-central-1"]);
        assert_eq!(d.outcome, Outcome::FailOpen);
    }

    #[test]
    fn failover_skips_down_regions() {
        let t = topo("[routing]\npolicy = \"failover\"\norder = [\"eu-west-1\", \"us-east-1\"]");
        let d = decide(&t, &down(&["eu-west-1"]), &get(), None, 0);
        assert_eq!(d.regions, ["us-east-1", "eu-central-1", "ap-southeast-1"]);
        assert_eq!(d.outcome, Outcome::Routed);
    }

    #[test]
    fn proximity_and_geo() {
        let t = topo("[routing]\npolicy = \"proximity\"");
        let c = ClientFacts {
            location: Some(LatLon {
                lat: 48.8,
                lon: 2.3,
            }),
            ..get()
        };
        let d = decide(&t, &HealthView::new(), &c, None, 0);
        assert_eq!(d.regions[0], "eu-central-1");
        assert_eq!(d.regions[3], "ap-southeast-1");

        let t = topo(
            "[routing]\npolicy = \"geo\"\n[routing.geo]\nDE = \"eu-central-1\"\nEU = \"eu-west-1\"\ndefault = \"us-east-1\"",
        );
        let c = |country: &str| ClientFacts {
            country: Some(country.into()),
            continent: Some("EU".into()),
            ..get()
        };
        assert_eq!(
            decide(&t, &HealthView::new(), &c("DE"), None, 0).regions[0],
            "eu-central-1"
        );
        assert_eq!(
            decide(&t, &HealthView::new(), &c("FR"), None, 0).regions[0],
            "eu-west-1"
        );
        assert_eq!(
            decide(&t, &HealthView::new(), &get(), None, 0).regions[0],
            "us-east-1"
        );
    }

    #[test]
    fn latency_orders_by_rtt() {
        let t = topo("");
        let mut h = HealthView::new();
        for (r, ms) in [("us-east-1", 80), ("eu-central-1", 20)] {
            h.insert(
                r.into(),
                RegionView {
                    rtt: Some(Duration::from_millis(ms)),
                    ..Default::default()
                },
            );
        }
        let d = decide(&t, &h, &get(), None, 0);
        assert_eq!(
            d.regions,
            ["eu-central-1", "us-east-1", "eu-west-1", "ap-southeast-1"]
        );
    }

    #[test]
    fn primary_writes_and_residency() {
        let t = topo("[routing]\nwrites = \"primary:us-east-1\"\nall_down = \"fail-closed\"");
        let post = ClientFacts {
            method: "POST".into(),
            ..Default::default()
        };
        assert_eq!(
            decide(&t, &HealthView::new(), &post, None, 0).regions,
            ["us-east-1"]
        );
        let eu_post = ClientFacts {
            zone: Some("eu".into()),
            ..post
        };
        let d = decide(&t, &HealthView::new(), &eu_post, None, 0);
        assert_eq!(d.outcome, Outcome::FailClosed, "{:?}", d.explanation);
        let eu_get = ClientFacts {
            zone: Some("eu".into()),
            ..get()
        };
        let d = decide(&t, &down(&["eu-west-1", "eu-central-1"]), &eu_get, None, 0);
        assert_eq!(d.outcome, Outcome::FailClosed);
        assert!(d.regions.is_empty());
    }

    #[test]
    fn fallback_outside_zone_is_refused() {
        let t = topo("[routing]\nall_down = \"fallback:us-east-1\"");
        let eu = ClientFacts {
            zone: Some("eu".into()),
            ..get()
        };
        let d = decide(&t, &down(&["eu-west-1", "eu-central-1"]), &eu, None, 0);
        assert_eq!(d.outcome, Outcome::FailClosed);
        let last = d.explanation.last().cloned().unwrap_or_default();
        assert!(last.starts_with("every candidate is down"), "{last}");
        // A zone no region belongs to leaves nothing to try: said so, not "down".
        let nowhere = ClientFacts {
            zone: Some("mars".into()),
            ..get()
        };
        let d = decide(&t, &down(&[]), &nowhere, None, 0);
        assert_eq!(d.outcome, Outcome::FailClosed);
        let last = d.explanation.last().cloned().unwrap_or_default();
        assert!(last.starts_with("no candidate is left"), "{last}");
        let d = decide(&t, &down(&["eu-west-1", "eu-central-1"]), &get(), None, 0);
        assert_eq!(d.outcome, Outcome::Routed);
        let all = down(&["eu-west-1", "eu-central-1", "us-east-1", "ap-southeast-1"]);
        let d = decide(&t, &all, &get(), None, 0);
        assert_eq!(
            (d.outcome, d.regions.as_slice()),
            (Outcome::Fallback, &["us-east-1".into()][..])
        );
    }

    #[test]
    fn sticky_cookie_and_drain() {
        let t = topo("[routing]\npolicy = \"failover\"");
        let c = ClientFacts {
            cookie_region: Some("eu-central-1".into()),
            ..get()
        };
        assert_eq!(
            decide(&t, &HealthView::new(), &c, None, 0).regions[0],
            "eu-central-1"
        );
        let d = decide(&t, &down(&["eu-central-1"]), &c, None, 0);
        assert_eq!(d.regions[0], "us-east-1", "cookie moves on failover");
        let mut h = HealthView::new();
        h.insert(
            "us-east-1".into(),
            RegionView {
                weight: 0,
                ..Default::default()
            },
        );
        let d = decide(&t, &h, &get(), None, 0);
        assert_eq!(d.regions.last().map(String::as_str), Some("us-east-1"));
    }

    #[test]
    fn retry_budget_bounds_retries() {
        let mut b = RetryBudget::new(0.2, 2, 100);
        assert!(b.try_retry() && b.try_retry() && !b.try_retry());
        for _ in 0..10 {
            b.on_request();
        }
        assert!(b.try_retry() && b.try_retry() && !b.try_retry());
    }

    fn names() -> Vec<&'static str> {
        vec!["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-1"]
    }

    fn any_topo() -> impl Strategy<Value = Topology> {
        let policy = prop_oneof![
            Just("latency"),
            Just("proximity"),
            Just("geo"),
            Just("weighted"),
            Just("failover")
        ];
        let all_down = prop_oneof![
            Just("fail-open".to_string()),
            Just("fail-closed".to_string()),
            proptest::sample::select(names()).prop_map(|r| format!("fallback:{r}")),
        ];
        let writes = prop_oneof![
            Just("any".to_string()),
            Just("home".to_string()),
            proptest::sample::select(names()).prop_map(|r| format!("primary:{r}")),
        ];
        let order = (0usize..3).prop_flat_map(|shape| {
            let top: Vec<&'static str> = match shape {
                0 => names(),
                1 => vec!["us-east-1", "eu", "ap-southeast-1"],
                _ => vec!["west", "ap-southeast-1"],
            };
            (Just(shape), Just(top).prop_shuffle())
        });
        (policy.clone(), all_down, writes, order, policy.clone(), policy).prop_map(
            |(p, a, w, (shape, order), p1, p2)| {
                let eu_rule = if shape == 0 { "eu-west-1" } else { order[0] };
                let order: Vec<String> = order.iter().map(|o| format!("\"{o}\"")).collect();
                topo(&format!(
                    "[routing]\npolicy = \"{p}\"\nall_down = \"{a}\"\nwrites = \"{w}\"\norder = [{}]\n\
                     [routing.geo]\nEU = \"{eu_rule}\"\ndefault = \"ap-southeast-1\"\n{}",
                    order.join(", "),
                    pools_of(shape, p1, p2)
                ))
            },
        )
    }

    /// Shape 0: no pools; 1: `eu` = the two EU regions; 2: `west` = `eu` and us-east-1.
    fn pools_of(shape: usize, p1: &str, p2: &str) -> String {
        let eu = format!(
            "[routing.pool.eu]\nmembers = [\"eu-west-1\", \"eu-central-1\"]\npolicy = \"{p1}\"\n{}",
            if p1 == "geo" {
                "geo = { DE = \"eu-central-1\", default = \"eu-west-1\" }\n"
            } else {
                ""
            }
        );
        let west = format!(
            "[routing.pool.west]\nmembers = [\"us-east-1\", \"eu\"]\npolicy = \"{p2}\"\n{}",
            if p2 == "geo" {
                "geo = { EU = \"eu\", default = \"us-east-1\" }\n"
            } else {
                ""
            }
        );
        match shape {
            0 => String::new(),
            1 => eu,
            _ => format!("{eu}{west}"),
        }
    }

    fn any_health() -> impl Strategy<Value = HealthView> {
        proptest::collection::vec(
            (any::<bool>(), 0u8..=100, proptest::option::of(0u64..300)),
            4,
        )
        .prop_map(|v| {
            names()
                .into_iter()
                .zip(v)
                .map(|(n, (up, weight, rtt))| {
                    let rtt = rtt.map(Duration::from_millis);
                    (n.to_string(), RegionView { up, rtt, weight })
                })
                .collect()
        })
    }

    fn any_client() -> impl Strategy<Value = ClientFacts> {
        let opt_region = proptest::option::of(proptest::sample::select(names()));
        (
            proptest::option::of(proptest::sample::select(vec!["eu", "us", "mars"])),
            opt_region.clone(),
            opt_region,
            proptest::sample::select(vec!["GET", "POST", "PUT", "HEAD", "DELETE"]),
            any::<bool>(),
            proptest::option::of((-90.0f64..90.0, -180.0f64..180.0)),
        )
            .prop_map(|(zone, home, cookie, method, idem, loc)| ClientFacts {
                zone: zone.map(str::to_string),
                home: home.map(str::to_string),
                cookie_region: cookie.map(str::to_string),
                method: method.to_string(),
                idempotency_key: idem,
                location: loc.map(|(lat, lon)| LatLon { lat, lon }),
                country: Some("FR".into()),
                continent: Some("EU".into()),
                ip: None,
            })
    }

    proptest! {
        /// Never a region outside the claimed zone, whatever the policy, health or all_down.
        #[test]
        fn never_outside_the_zone(
            t in any_topo(), h in any_health(), c in any_client(), r in any::<u64>()
        ) {
            let d = decide(&t, &h, &c, None, r);
            if let Some(z) = &c.zone {
                for region in &d.regions {
                    prop_assert_eq!(t.zone_of(region), Some(z.as_str()), "{:?}", d.explanation);
                }
            }
            prop_assert_eq!(d.regions.is_empty(), d.outcome == Outcome::FailClosed);
            let quiet = route(&t, &h, &c, None, r);
            prop_assert_eq!((&quiet.regions, quiet.outcome), (&d.regions, d.outcome));
            prop_assert!(quiet.explanation.is_empty() && !d.explanation.is_empty());
            let mut seen = d.regions.clone();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), d.regions.len(), "no region twice");
            if d.outcome == Outcome::Routed {
                prop_assert!(d.regions.iter().all(|r| h[r].up));
            }
        }

        /// An ask's candidate filter holds: only candidates are returned, except the
        /// `fallback:<region>` of an all-down decision.
        #[test]
        fn only_candidates_are_chosen(
            t in any_topo(), h in any_health(), c in any_client(), r in any::<u64>(),
            keep in proptest::collection::vec(any::<bool>(), 4),
        ) {
            let kept: Vec<&str> = names().into_iter().zip(&keep)
                .filter(|(_, k)| **k).map(|(n, _)| n).collect();
            let filter = |reg: &Region| kept.contains(&reg.name.as_str());
            let ask = Ask { routing: &t.routing, candidate: &filter, candidates_are: "kept", explain: true };
            let d = decide_for(&t, &ask, &h, &c, None, r);
            if d.outcome != Outcome::Fallback {
                prop_assert!(d.regions.iter().all(|x| kept.contains(&x.as_str())), "{:?}", d.explanation);
            }
            prop_assert!(d.explanation[0].starts_with("candidates (kept)"));
        }

        /// The same inputs give the same decision; failover follows `order` among up regions.
        #[test]
        fn failover_order_is_deterministic(t in any_topo(), h in any_health(), r in any::<u64>()) {
            let c = get();
            prop_assert_eq!(decide(&t, &h, &c, None, r), decide(&t, &h, &c, None, r));
            let mut t = t;
            t.routing.policy = Policy::Failover;
            let d = decide(&t, &h, &c, None, r);
            if d.outcome == Outcome::Routed && t.routing.pools.is_empty() {
                let undrained: Vec<&String> = t.routing.order.iter()
                    .filter(|o| h[*o].up && h[*o].weight > 0).collect();
                let got: Vec<&String> = d.regions.iter().take(undrained.len()).collect();
                prop_assert_eq!(got, undrained);
            }
        }

        /// Whatever the tree and its policies: every up candidate is routed to exactly once, and
        /// each pool's regions come one after another (the level above ranks the pool as one).
        #[test]
        fn pools_keep_their_regions_together(
            t in any_topo(), h in any_health(), r in any::<u64>(),
            loc in proptest::option::of((-90.0f64..90.0, -180.0f64..180.0)),
        ) {
            let h: HealthView = h.into_iter()
                .map(|(n, v)| (n, RegionView { weight: 100, ..v })).collect();
            let c = ClientFacts {
                location: loc.map(|(lat, lon)| LatLon { lat, lon }),
                country: Some("DE".into()),
                continent: Some("EU".into()),
                ..get()
            };
            let d = decide(&t, &h, &c, None, r);
            let mut up: Vec<&str> = names().into_iter().filter(|n| h[*n].up).collect();
            if up.is_empty() {
                return Ok(());
            }
            let mut got: Vec<&str> = d.regions.iter().map(String::as_str).collect();
            got.sort_unstable();
            up.sort_unstable();
            prop_assert_eq!(got, up, "{:?}", d.explanation);
            for p in &t.routing.pools {
                let below: Vec<usize> = d.regions.iter().enumerate()
                    .filter(|(_, x)| member_of(&t.routing, x, Some(p.name.as_str())).is_some())
                    .map(|(i, _)| i).collect();
                if let (Some(first), Some(last)) = (below.first(), below.last()) {
                    prop_assert_eq!(last - first + 1, below.len(),
                        "pool {} split: {:?}", p.name, d.explanation);
                }
            }
        }

        /// The share of first choices follows weight × capacity within statistical bounds.
        #[test]
        fn weights_are_honoured(
            w in proptest::collection::vec(1u8..=100, 4),
            c in proptest::collection::vec(1u32..=400, 4),
            seed in any::<u64>(),
        ) {
            let mut text = format!("{BASE}\n[routing]\npolicy = \"weighted\"");
            for (i, cap) in c.iter().enumerate() {
                let node = format!("node = \"http://127.0.0.1:760{}\"", i + 1);
                text = text.replace(&node, &format!("{node}\ncapacity = {cap}"));
            }
            let t = parse("t.toml", &text).unwrap();
            let h: HealthView = names().into_iter().zip(&w).map(|(n, &weight)| {
                (n.to_string(), RegionView { weight, ..Default::default() })
            }).collect();
            let n = 4000u64;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut draws = Draws(seed);
            for _ in 0..n {
                let r = (draws.next_unit() * u64::MAX as f64) as u64;
                let d = decide(&t, &h, &get(), None, r);
                *counts.entry(d.regions[0].clone()).or_default() += 1;
            }
            let share = |i: usize| f64::from(w[i]) * f64::from(c[i]);
            let total: f64 = (0..4).map(share).sum();
            for (i, (name, &weight)) in names().iter().zip(&w).enumerate() {
                let p = share(i) / total;
                let expected = p * n as f64;
                let sd = (n as f64 * p * (1.0 - p)).sqrt();
                let got = *counts.get(*name).unwrap_or(&0) as f64;
                prop_assert!((got - expected).abs() <= 5.0 * sd + 1.0,
                    "{name}: weight {weight} got {got} expected {expected:.0}±{sd:.0}");
            }
        }
    }
}
