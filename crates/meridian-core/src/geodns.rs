//! GeoDNS answer selection (DESIGN §3) as pure functions: which region addresses a policy
//! record answers with (the routing decision of [`crate::routing`], not a second one), the EDNS
//! Client Subnet scope that answer is valid for, and the state-aware TTL.
//!
//! Nothing here knows the DNS wire format; `meridian-dns` turns these answers into messages.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::{DnsRecord, LatLon, Region, Routing, Topology};
use crate::routing::{Ask, ClientFacts, HealthView, Outcome, decide_for};

/// The address family of an A (IPv4) or AAAA (IPv6) record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4: A records.
    V4,
    /// IPv6: AAAA records.
    V6,
}

impl Family {
    /// Whether `ip` is of this family.
    pub fn holds(self, ip: &IpAddr) -> bool {
        match self {
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }
}

/// The routing rules of a policy record: `[routing]` (pools included) with the record's
/// `policy`, its `geo` and `all_down` when set, and its `residency` zone. `None` for a static
/// record (no `policy`).
pub fn record_routing(topology: &Topology, record: &DnsRecord) -> Option<Routing> {
    let policy = record.policy?;
    let mut routing = topology.routing.clone();
    routing.policy = policy;
    if let Some(geo) = &record.geo {
        routing.geo = geo.clone();
    }
    if let Some(all_down) = &record.all_down {
        routing.all_down = all_down.clone();
    }
    routing.residency = record.residency.clone();
    Some(routing)
}

/// What a client looks like to GeoDNS: the located address (the ECS subnet's, else the
/// resolver's) and what GeoIP knows about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsClient {
    /// The address that was located. Default: `None` (nothing to locate).
    pub ip: Option<IpAddr>,
    /// ISO country code. Default: `None`.
    pub country: Option<String>,
    /// Continent code. Default: `None`.
    pub continent: Option<String>,
    /// Coordinates (City databases). Default: `None`.
    pub location: Option<LatLon>,
    /// Prefix length of the GeoIP network containing `ip`: every address in it is located
    /// alike. `None` when no database located it (then every address is alike).
    pub network_prefix: Option<u8>,
}

/// The answer of a policy record.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyAnswer {
    /// The addresses to answer with, of the record's family; empty means NODATA.
    pub addresses: Vec<IpAddr>,
    /// The regions whose addresses these are.
    pub regions: Vec<String>,
    /// How the routing decision ended.
    pub outcome: Outcome,
    /// The ECS scope prefix length the answer is valid for (see [`ecs_scope`]).
    pub scope: u8,
    /// The decision's explanation (empty unless asked for).
    pub explanation: Vec<String>,
}

/// Answers a policy record.
///
/// Candidates are the regions with an address of `family`; the decision is
/// [`crate::routing::decide_for`] with `routing` (see [`record_routing`]) for a safe request
/// of `client`. When a region is routed to, the answer is the first region's addresses (so
/// geo, latency and failover mean what they say); under `fail-open` every candidate's; under
/// `fallback:R`, R's (none when R has no address of the family); under `fail-closed`, none.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    topology: &Topology,
    routing: &Routing,
    family: Family,
    health: &HealthView,
    client: &DnsClient,
    edge_location: Option<LatLon>,
    random: u64,
    explain: bool,
) -> PolicyAnswer {
    let candidate = |r: &Region| r.addresses.iter().any(|a| family.holds(a));
    let candidates_are = match family {
        Family::V4 => "regions with an IPv4 address",
        Family::V6 => "regions with an IPv6 address",
    };
    let ask = Ask {
        routing,
        candidate: &candidate,
        candidates_are,
        explain,
    };
    let facts = ClientFacts {
        ip: client.ip,
        country: client.country.clone(),
        continent: client.continent.clone(),
        location: client.location,
        method: "GET".to_string(),
        ..ClientFacts::default()
    };
    let mut d = decide_for(topology, &ask, health, &facts, edge_location, random);
    let regions: Vec<String> = match d.outcome {
        Outcome::Routed => d.regions.into_iter().take(1).collect(),
        Outcome::FailOpen | Outcome::Fallback => d.regions,
        Outcome::FailClosed => Vec::new(),
    };
    let addresses: Vec<IpAddr> = regions
        .iter()
        .filter_map(|r| topology.region(r))
        .flat_map(|r| r.addresses.iter().copied().filter(|a| family.holds(a)))
        .collect();
    if explain {
        d.explanation.push(if addresses.is_empty() {
            "answer: no address (NODATA)".to_string()
        } else {
            let shown: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
            format!("answer: {} of {}", shown.join(", "), regions.join(", "))
        });
    }
    let scope = ecs_scope(routing, d.outcome, client.network_prefix);
    PolicyAnswer {
        addresses,
        regions,
        outcome: d.outcome,
        scope,
        explanation: d.explanation,
    }
}

/// The EDNS Client Subnet scope prefix length of a policy answer: the widest prefix over which
/// the same question gets the same answer.
///
/// * `latency`, `weighted`, `failover`, and `geo` with no rule but a default: the answer does
///   not depend on where the client is → 0.
/// * Every candidate down (`fail-open`, `fallback`, `fail-closed`): the answer is the same for
///   everyone → 0.
/// * `geo` and `proximity` otherwise, at any level of the policy tree: the answer depends on what GeoIP says, which is the same
///   for every address of the GeoIP network containing the client → that network's prefix
///   length (0 when no database located the client: then it says the same for everyone).
pub fn ecs_scope(routing: &Routing, outcome: Outcome, network_prefix: Option<u8>) -> u8 {
    if outcome != Outcome::Routed {
        return 0;
    }
    if routing.located() {
        network_prefix.unwrap_or(0)
    } else {
        0
    }
}

/// State-aware TTL: policy answers carry a short TTL for a while after any region's state (up,
/// weight) changed — and after start, when nothing has settled — and the configured TTL once
/// the view has been stable that long. Resolvers then come back soon while things move, and
/// rarely while they do not.
///
/// Guarantees: [`StateAwareTtl::ttl`] is never more than the configured TTL; it is
/// `min(configured, short)` from a change until `settle` later.
#[derive(Clone, Debug, PartialEq)]
pub struct StateAwareTtl {
    short: Duration,
    settle: Duration,
    last: Option<BTreeMap<String, (bool, u8)>>,
    changed_at: Duration,
}

/// TTL of policy answers near a transition (see [`StateAwareTtl`]).
pub const TRANSITION_TTL: Duration = Duration::from_secs(5);
/// How long the view must be stable before policy answers get the configured TTL again.
pub const SETTLE: Duration = Duration::from_secs(30);

impl Default for StateAwareTtl {
    /// [`TRANSITION_TTL`] for [`SETTLE`] after a change.
    fn default() -> Self {
        StateAwareTtl::new(TRANSITION_TTL, SETTLE)
    }
}

impl StateAwareTtl {
    /// TTL at most `short` until `settle` after a change.
    pub fn new(short: Duration, settle: Duration) -> Self {
        StateAwareTtl {
            short,
            settle,
            last: None,
            changed_at: Duration::ZERO,
        }
    }

    /// Records the health view seen at `now` (monotonic); a change of any region's `up` or
    /// `weight` (RTT changes do not count) or the first view starts the short-TTL period.
    pub fn observe(&mut self, now: Duration, health: &HealthView) {
        let same = self.last.as_ref().is_some_and(|last| {
            last.len() == health.len()
                && last
                    .iter()
                    .zip(health)
                    .all(|((a, s), (b, v))| a == b && *s == (v.up, v.weight))
        });
        if !same {
            let state = health
                .iter()
                .map(|(r, v)| (r.clone(), (v.up, v.weight)))
                .collect();
            self.last = Some(state);
            self.changed_at = now;
        }
    }

    /// The TTL of a policy answer at `now` for a record whose configured TTL is `configured`.
    pub fn ttl(&self, now: Duration, configured: Duration) -> Duration {
        if self.last.is_some() && now.saturating_sub(self.changed_at) >= self.settle {
            configured
        } else {
            configured.min(self.short)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllDown, Policy, parse};
    use crate::routing::RegionView;
    use proptest::prelude::*;

    const TOPO: &str = r#"
[cluster]
name = "t"
[[region]]
name = "us-east-1"
node = "http://127.0.0.1:7601"
app = ["http://127.0.0.1:8601"]
location = { lat = 38.9, lon = -77.4 }
addresses = ["192.0.2.10", "2001:db8::10"]
[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:7602"
app = ["http://127.0.0.1:8602"]
location = { lat = 53.3, lon = -6.3 }
addresses = ["192.0.2.20"]
[[region]]
name = "ap-southeast-1"
node = "http://127.0.0.1:7604"
app = ["http://127.0.0.1:8604"]
location = { lat = 1.3, lon = 103.8 }
addresses = ["192.0.2.30", "192.0.2.31"]
[routing]
policy = "failover"
order = ["eu-west-1", "us-east-1", "ap-southeast-1"]
[routing.geo]
EU = "eu-west-1"
AS = "ap-southeast-1"
default = "us-east-1"
[dns]
listen = "127.0.0.1:5353"
zone = "example.test."
nameservers = ["ns1.example.test."]
[[dns.record]]
name = "geo"
type = "A"
policy = "geo"
[[dns.record]]
name = "closed"
type = "A"
policy = "failover"
all_down = "fail-closed"
[[dns.record]]
name = "fb"
type = "A"
policy = "failover"
all_down = "fallback:ap-southeast-1"
[[dns.record]]
name = "geo6"
type = "AAAA"
policy = "geo"
"#;

    fn topo() -> Topology {
        parse("t.toml", TOPO).unwrap()
    }

    fn routing_of(t: &Topology, name: &str) -> Routing {
        let rec = t
            .dns
            .as_ref()
            .unwrap()
            .records
            .iter()
            .find(|r| r.name == name)
            .unwrap();
        record_routing(t, rec).unwrap()
    }

    fn down(names: &[&str]) -> HealthView {
        names
            .iter()
            .map(|n| {
                let v = RegionView {
                    up: false,
                    ..RegionView::default()
                };
                (n.to_string(), v)
            })
            .collect()
    }

    fn located(country: &str, continent: &str, prefix: u8) -> DnsClient {
        DnsClient {
            ip: Some("81.2.69.160".parse().unwrap()),
            country: Some(country.into()),
            continent: Some(continent.into()),
            location: None,
            network_prefix: Some(prefix),
        }
    }

    #[test]
    fn a_pinned_record_answers_only_inside_its_zone() {
        let text = format!(
            "{TOPO}[[dns.record]]\nname = \"pinned\"\ntype = \"A\"\npolicy = \"latency\"\n\
             residency = \"apac\"\n[zones]\napac = [\"ap-southeast-1\"]\n"
        );
        let t = parse("t.toml", &text).unwrap();
        let mut r = routing_of(&t, "pinned");
        let ask = |r: &Routing, h: &HealthView| {
            answer(
                &t,
                r,
                Family::V4,
                h,
                &located("DE", "EU", 24),
                None,
                0,
                true,
            )
        };
        let a = ask(&r, &HealthView::new());
        assert_eq!(a.regions, ["ap-southeast-1"], "{:?}", a.explanation);
        let ap_down = down(&["ap-southeast-1"]);
        let a = ask(&r, &ap_down);
        assert_eq!(
            (a.outcome, a.regions.clone()),
            (Outcome::FailOpen, vec!["ap-southeast-1".to_string()])
        );
        r.all_down = AllDown::Fallback("us-east-1".into());
        let a = ask(&r, &ap_down);
        assert_eq!(a.outcome, Outcome::FailClosed, "{:?}", a.explanation);
        assert!(a.addresses.is_empty());
    }

    #[test]
    fn a_geo_pool_below_a_flat_policy_still_scopes_by_network() {
        let mut r = routing_of(&topo(), "closed");
        assert_eq!(ecs_scope(&r, Outcome::Routed, Some(27)), 0);
        r.pools.push(crate::config::Pool {
            name: "world".into(),
            members: vec!["eu-west-1".into(), "us-east-1".into()],
            policy: Policy::Geo,
            geo: r.geo.clone(),
        });
        assert_eq!(ecs_scope(&r, Outcome::Routed, Some(27)), 27);
    }

    #[test]
    fn record_overrides_routing() {
        let t = topo();
        let r = routing_of(&t, "closed");
        assert_eq!(r.policy, Policy::Failover);
        assert_eq!(r.all_down, AllDown::FailClosed);
        assert_eq!(r.order, t.routing.order);
        let static_rec = DnsRecord {
            policy: None,
            ..t.dns.as_ref().unwrap().records[0].clone()
        };
        assert_eq!(record_routing(&t, &static_rec), None);
    }

    #[test]
    fn geo_answers_the_mapped_region_with_the_network_scope() {
        let t = topo();
        let r = routing_of(&t, "geo");
        let h = HealthView::new();
        let a = answer(
            &t,
            &r,
            Family::V4,
            &h,
            &located("GB", "EU", 27),
            None,
            0,
            true,
        );
        assert_eq!(a.regions, ["eu-west-1"]);
        assert_eq!(a.addresses, ["192.0.2.20".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.scope, 27);
        assert!(
            a.explanation
                .last()
                .unwrap()
                .starts_with("answer: 192.0.2.20")
        );
        let a = answer(
            &t,
            &r,
            Family::V4,
            &h,
            &located("SG", "AS", 24),
            None,
            0,
            false,
        );
        assert_eq!(a.regions, ["ap-southeast-1"]);
        assert_eq!(a.addresses.len(), 2);
        assert!(a.explanation.is_empty());
        let a = answer(
            &t,
            &r,
            Family::V4,
            &h,
            &DnsClient::default(),
            None,
            0,
            false,
        );
        assert_eq!((a.regions[0].as_str(), a.scope), ("us-east-1", 0));
    }

    #[test]
    fn aaaa_candidates_are_regions_with_ipv6() {
        let t = topo();
        let r = routing_of(&t, "geo6");
        let a = answer(
            &t,
            &r,
            Family::V6,
            &HealthView::new(),
            &located("GB", "EU", 27),
            None,
            0,
            true,
        );
        assert_eq!(a.regions, ["us-east-1"], "{:?}", a.explanation);
        assert_eq!(a.addresses, ["2001:db8::10".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn down_regions_leave_the_answer_and_all_down_modes_apply() {
        let t = topo();
        let c = DnsClient::default();
        let all = down(&["us-east-1", "eu-west-1", "ap-southeast-1"]);
        let fo = routing_of(&t, "geo");
        let a = answer(
            &t,
            &fo,
            Family::V4,
            &down(&["us-east-1"]),
            &c,
            None,
            0,
            false,
        );
        assert_eq!(a.regions, ["eu-west-1"], "default down: next in order");
        let a = answer(&t, &fo, Family::V4, &all, &c, None, 0, false);
        assert_eq!(a.outcome, Outcome::FailOpen);
        assert_eq!(a.addresses.len(), 4, "fail-open: every candidate's address");
        assert_eq!(a.scope, 0);
        let closed = routing_of(&t, "closed");
        let a = answer(&t, &closed, Family::V4, &all, &c, None, 0, false);
        assert_eq!((a.outcome, a.addresses.len()), (Outcome::FailClosed, 0));
        let fb = routing_of(&t, "fb");
        let a = answer(&t, &fb, Family::V4, &all, &c, None, 0, false);
        assert_eq!(a.outcome, Outcome::Fallback);
        assert_eq!(a.regions, ["ap-southeast-1"]);
        assert_eq!(a.addresses.len(), 2);
    }

    #[test]
    fn scope_rule() {
        let t = topo();
        let mut r = routing_of(&t, "geo");
        assert_eq!(ecs_scope(&r, Outcome::Routed, Some(16)), 16);
        assert_eq!(ecs_scope(&r, Outcome::Routed, None), 0);
        assert_eq!(ecs_scope(&r, Outcome::FailOpen, Some(16)), 0);
        r.geo.countries.clear();
        r.geo.continents.clear();
        assert_eq!(ecs_scope(&r, Outcome::Routed, Some(16)), 0, "default only");
        for p in [Policy::Latency, Policy::Weighted, Policy::Failover] {
            r.policy = p;
            assert_eq!(ecs_scope(&r, Outcome::Routed, Some(16)), 0);
        }
        r.policy = Policy::Proximity;
        assert_eq!(ecs_scope(&r, Outcome::Routed, Some(20)), 20);
    }

    #[test]
    fn ttl_shrinks_after_a_change_and_recovers() {
        let s = Duration::from_secs;
        let mut g = StateAwareTtl::default();
        let cfg = s(300);
        assert_eq!(g.ttl(s(0), cfg), s(5), "before any view");
        g.observe(s(0), &HealthView::new());
        assert_eq!(g.ttl(s(29), cfg), s(5), "start counts as a change");
        assert_eq!(g.ttl(s(30), cfg), cfg);
        g.observe(s(40), &HealthView::new());
        assert_eq!(g.ttl(s(40), cfg), cfg, "same view: stable");
        g.observe(s(50), &down(&["eu-west-1"]));
        assert_eq!(g.ttl(s(50), cfg), s(5));
        assert_eq!(g.ttl(s(50), s(2)), s(2), "never above the configured TTL");
        let mut rtt_only = down(&["eu-west-1"]);
        rtt_only.get_mut("eu-west-1").unwrap().rtt = Some(s(1));
        g.observe(s(79), &rtt_only);
        assert_eq!(g.ttl(s(79), cfg), s(5));
        assert_eq!(g.ttl(s(80), cfg), cfg, "an RTT change is not a transition");
        let mut drained = HealthView::new();
        drained.insert(
            "eu-west-1".into(),
            RegionView {
                weight: 0,
                ..RegionView::default()
            },
        );
        g.observe(s(90), &drained);
        assert_eq!(g.ttl(s(91), cfg), s(5), "a weight change is a transition");
        g.observe(s(200), &drained);
        assert_eq!(g.ttl(s(200), cfg), cfg);
        drained.insert("us-east-1".into(), RegionView::default());
        g.observe(s(201), &drained);
        assert_eq!(g.ttl(s(201), cfg), s(5), "a new region is a transition");
    }

    fn any_health() -> impl Strategy<Value = HealthView> {
        proptest::collection::vec((any::<bool>(), 0u8..=100), 3).prop_map(|v| {
            ["us-east-1", "eu-west-1", "ap-southeast-1"]
                .into_iter()
                .zip(v)
                .map(|(n, (up, weight))| {
                    let view = RegionView {
                        up,
                        weight,
                        rtt: None,
                    };
                    (n.to_string(), view)
                })
                .collect()
        })
    }

    proptest! {
        /// Answers only hold addresses of the asked family, of up regions when any candidate
        /// is up, and a non-zero scope only for a routed located decision.
        #[test]
        fn answers_are_consistent(
            h in any_health(),
            rec in proptest::sample::select(vec!["geo", "closed", "fb", "geo6"]),
            country in proptest::sample::select(vec!["GB", "SG", "US", "BR"]),
            prefix in proptest::option::of(0u8..=32),
            random in any::<u64>(),
        ) {
            let t = topo();
            let r = routing_of(&t, rec);
            let family = if rec == "geo6" { Family::V6 } else { Family::V4 };
            let c = DnsClient { network_prefix: prefix, ..located(country, "EU", 0) };
            let a = answer(&t, &r, family, &h, &c, None, random, false);
            prop_assert!(a.addresses.iter().all(|ip| family.holds(ip)));
            if a.outcome == Outcome::Routed {
                prop_assert_eq!(a.regions.len(), 1);
                prop_assert!(h[&a.regions[0]].up);
                prop_assert!(!a.addresses.is_empty());
            } else {
                prop_assert_eq!(a.scope, 0);
            }
            if a.scope != 0 {
                prop_assert_eq!(Some(a.scope), prefix);
            }
            prop_assert_eq!(a.addresses.is_empty(), a.outcome == Outcome::FailClosed);
        }
    }
}
