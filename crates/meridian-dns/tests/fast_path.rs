//! The UDP fast path ([`Authority::handle_udp`] with its per-thread answer cache) against the
//! reference builder ([`Authority::handle`]): for random sequences of queries over the test
//! zone — names, types, case, IDs, flags, EDNS payloads, Client Subnets, resolvers — while
//! regions go down and up and time passes, names are spelled in mixed case (as resolvers doing
//! 0x20 mixing ask), both answer the same bytes (so the same rcode,
//! flags, records, TTLs and OPT) and count the same metrics.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian_core::config::{LatLon, Routing, Topology, parse};
use meridian_core::geodns::DnsClient;
use meridian_core::routing::{HealthView, RegionView};
use meridian_dns::{Authority, Backend, GeoScopes, Transport, UdpCache};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use proptest::prelude::*;

const TOPO: &str = include_str!("zone.toml");
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// A backend whose health (bit i: region i down), clock and GeoIP are set by the test.
struct World {
    topology: Arc<Topology>,
    down: AtomicU64,
    now_s: AtomicU64,
    scopes: Arc<dyn GeoScopes>,
}

/// Widest scopes: wider than the networks `World::locate` gives, none for 2.125.160.0/29.
#[derive(Debug)]
struct Scopes;

impl GeoScopes for Scopes {
    fn widest(&self, ip: IpAddr) -> Option<u8> {
        match ip.to_string().as_str() {
            s if s.starts_with("81.2.69.") => Some(20),
            s if s.starts_with("175.16.199.") => Some(9),
            s if s.starts_with("2.125.160.") => None,
            _ if ip.is_ipv4() => Some(3),
            _ => None,
        }
    }
}

impl World {
    fn new(topology: &str) -> World {
        World {
            topology: Arc::new(parse("t.toml", topology).unwrap()),
            down: AtomicU64::new(0),
            now_s: AtomicU64::new(100),
            scopes: Arc::new(Scopes),
        }
    }
}

impl Backend for World {
    fn topology(&self) -> Arc<Topology> {
        self.topology.clone()
    }

    fn health_view(&self) -> HealthView {
        let down = self.down.load(Ordering::SeqCst);
        REGIONS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v = RegionView {
                    up: down & (1 << i) == 0,
                    ..RegionView::default()
                };
                (r.to_string(), v)
            })
            .collect()
    }

    /// Two GB networks (same country, other coordinates and prefix), one each in CN and the
    /// US, one without coordinates; the rest unknown (a prefix, no facts) or IPv6 (nothing).
    fn locate(&self, ip: IpAddr) -> DnsClient {
        let (country, continent, at, prefix) = match ip.to_string().as_str() {
            s if s.starts_with("81.2.69.") => ("GB", "EU", Some((51.5, -0.13)), 27),
            // Same country, far away: `proximity` picks another region than for the first.
            s if s.starts_with("2.125.160.") => ("GB", "EU", Some((-7.3, 72.4)), 29),
            s if s.starts_with("175.16.199.") => ("CN", "AS", Some((43.88, 125.32)), 24),
            s if s.starts_with("216.160.83.") => ("US", "NA", Some((47.6, -122.3)), 29),
            s if s.starts_with("89.160.20.") => ("SE", "EU", None, 25),
            _ if ip.is_ipv4() => {
                return DnsClient {
                    ip: Some(ip),
                    network_prefix: Some(8),
                    ..DnsClient::default()
                };
            }
            _ => return DnsClient::default(),
        };
        DnsClient {
            ip: Some(ip),
            country: Some(country.into()),
            continent: Some(continent.into()),
            location: at.map(|(lat, lon)| LatLon { lat, lon }),
            network_prefix: Some(prefix),
        }
    }

    /// Every geo-located record gets the same scope map, whose blocks are wider than the
    /// networks above, unknown for one of them.
    fn geo_scopes(&self, _: &Routing) -> Option<Arc<dyn GeoScopes>> {
        Some(self.scopes.clone())
    }

    fn now(&self) -> Duration {
        Duration::from_secs(self.now_s.load(Ordering::SeqCst))
    }

    /// The same within a step (both paths draw the same), different across steps: a cached
    /// `weighted` answer would show.
    fn random(&self) -> u64 {
        self.now_s
            .load(Ordering::SeqCst)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Several spellings of some names (0x20 case mixing): a cached answer may serve another
/// spelling only when the builder would answer it alike.
const NAMES: [&str; 23] = [
    "www.example.test.",
    "WwW.Example.TEST.",
    "API.example.TEST.",
    "aPi.ExAmPlE.tEsT.",
    "ALIAS.example.test.",
    "Nope.Example.Test.",
    "X.CDN.example.test.",
    "Example.Test.",
    "CLOSED.example.test.",
    "example.test.",
    "api.example.test.",
    "closed.example.test.",
    "fb.example.test.",
    "open.example.test.",
    "w.example.test.",
    "alias.example.test.",
    "x.cdn.example.test.",
    "nope.example.test.",
    "deep.a.b.example.test.",
    "big.example.test.",
    "example.org.",
    "near.example.test.",
    "NEAR.Example.test.",
];
const TYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::TXT,
    RecordType::MX,
    RecordType::NS,
    RecordType::SOA,
    RecordType::ANY,
    RecordType::CNAME,
];
/// Client Subnets: several in each located network (answers shared by the second level,
/// with their own address and scope), unknown ones, IPv6, and the zero prefix.
const SUBNETS: [(&str, u8); 14] = [
    ("81.2.69.160", 27),
    ("81.2.69.0", 24),
    ("81.2.69.161", 32),
    ("81.2.69.170", 32),
    ("2.125.160.216", 29),
    ("2.125.160.218", 32),
    ("175.16.199.0", 24),
    ("175.16.199.7", 32),
    ("216.160.83.56", 29),
    ("89.160.20.130", 32),
    ("10.0.0.0", 8),
    ("198.51.100.0", 24),
    ("2001:db8:1::", 48),
    ("0.0.0.0", 0),
];
const RESOLVERS: [&str; 5] = [
    "127.0.0.1",
    "81.2.69.161",
    "2.125.160.217",
    "175.16.199.1",
    "2001:db8::53",
];
/// A record ranking by `proximity` (client coordinates), appended to the zone when asked.
const NEAR: &str = "\n[[dns.record]]\nname = \"near\"\ntype = \"A\"\npolicy = \"proximity\"\n";

#[derive(Clone, Debug)]
struct Step {
    name: usize,
    qtype: usize,
    id: u16,
    rd: bool,
    /// EDNS payload size and Client Subnet (index into SUBNETS).
    edns: Option<(u16, Option<usize>)>,
    resolver: usize,
    /// New health (bit i: region i down).
    down: u64,
    /// Seconds passing before the query.
    advance: u64,
}

fn step() -> impl Strategy<Value = Step> {
    // Policy names, A questions and one payload size more often than the rest, so that many
    // queries share a shape and differ in their subnet or resolver (second-level hits).
    let policy_names = vec![2usize, 3, 8, 10, 12, 13, 21, 22];
    (
        prop_oneof![1 => 0..NAMES.len(), 2 => proptest::sample::select(policy_names)],
        prop_oneof![1 => 0..TYPES.len(), 2 => Just(0usize)],
        any::<u16>(),
        any::<bool>(),
        proptest::option::of((
            prop_oneof![1 => Just(512u16), 4 => Just(1232), 1 => Just(4096), 1 => 0u16..2000],
            proptest::option::weighted(0.8, 0..SUBNETS.len()),
        )),
        0..RESOLVERS.len(),
        prop_oneof![8 => Just(0u64), 1 => 0u64..8],
        prop_oneof![8 => Just(0u64), 1 => 0u64..40],
    )
        .prop_map(
            |(name, qtype, id, rd, edns, resolver, down, advance)| Step {
                name,
                qtype,
                id,
                rd,
                edns,
                resolver,
                down,
                advance,
            },
        )
}

/// A recorder's samples, one line each, sorted (the exposition's order is not fixed).
fn samples(recorder: &PrometheusRecorder) -> Vec<String> {
    let mut lines: Vec<String> = recorder
        .handle()
        .render()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn packet(s: &Step) -> Vec<u8> {
    let mut m = Message::new(s.id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = s.rd;
    m.add_query(Query::query(
        Name::from_ascii(NAMES[s.name]).unwrap(),
        TYPES[s.qtype],
    ));
    if let Some((payload, subnet)) = s.edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        if let Some(i) = subnet {
            let (addr, prefix) = SUBNETS[i];
            let net = ClientSubnet::new(addr.parse().unwrap(), prefix, 0);
            e.options_mut().insert(EdnsOption::Subnet(net));
        }
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fast_path_answers_what_the_builder_answers(
        steps in proptest::collection::vec(step(), 1..120),
        proximity in any::<bool>(),
    ) {
        let text = if proximity { format!("{TOPO}{NEAR}") } else { TOPO.to_string() };
        let world = World::new(&text);
        // Two authorities with their own TTL state and metrics, fed the same views at the
        // same times.
        let (reference, fast) = (Authority::new(), Authority::new());
        let reference_metrics = PrometheusBuilder::new().build_recorder();
        let fast_metrics = PrometheusBuilder::new().build_recorder();
        let mut cache = UdpCache::default();
        let mut out = Vec::new();
        let mut asked: Vec<Vec<u8>> = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            world.down.store(s.down, Ordering::SeqCst);
            world.now_s.fetch_add(s.advance, Ordering::SeqCst);
            let resolver: IpAddr = RESOLVERS[s.resolver].parse().unwrap();
            asked.push(packet(s));
            // This step's query, then an earlier one again in today's state (cache hits).
            for q in [&asked[i], &asked[i / 2]] {
                let want = metrics::with_local_recorder(&reference_metrics, || {
                    reference.handle(&world, q, resolver, Transport::Udp)
                });
                let answered = metrics::with_local_recorder(&fast_metrics, || {
                    fast.handle_udp(&world, q, resolver, &mut cache, &mut out)
                });
                prop_assert_eq!(answered, want.is_some(), "{:?}", s);
                if let Some(want) = want
                    && out != want
                {
                    let (a, b) = (Message::from_vec(&out), Message::from_vec(&want));
                    prop_assert!(false, "{:?}\nfast: {:?}\nreference: {:?}", s, a, b);
                }
            }
            // The world changes between steps: a new batch.
            cache.end_batch();
        }
        prop_assert_eq!(samples(&fast_metrics), samples(&reference_metrics));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A query with bytes of its question tail or OPT record changed (a Client Subnet with
    /// bits past its prefix, a wrong length, another option, trailing bytes…) right after the
    /// valid query it came from (whose answer is then cached for its shape) gets the
    /// builder's answer: a malformed query never takes a cached answer.
    #[test]
    fn changed_queries_answer_what_the_builder_answers(
        base in step(),
        edits in proptest::collection::vec((any::<u16>(), 1u8.., any::<bool>()), 1..4),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let world = World::new(&format!("{TOPO}{NEAR}"));
        let (reference, fast) = (Authority::new(), Authority::new());
        let mut cache = UdpCache::default();
        let mut out = Vec::new();
        let resolver: IpAddr = RESOLVERS[base.resolver].parse().unwrap();
        let valid = packet(&base);
        let mut changed = valid.clone();
        // The bytes after the question name: type, class and the OPT record.
        let tail = 12 + NAMES[base.name].len() + 1;
        for (at, flip, near_end) in edits {
            // Half the changes in the last bytes: the subnet's address and prefix.
            let span = if near_end { 3.min(changed.len() - tail) } else { changed.len() - tail };
            let i = changed.len() - span + usize::from(at) % span;
            changed[i] ^= flip;
        }
        changed.extend_from_slice(&extra);
        for q in [&valid, &changed, &valid, &changed] {
            let want = reference.handle(&world, q, resolver, Transport::Udp);
            let answered = fast.handle_udp(&world, q, resolver, &mut cache, &mut out);
            prop_assert_eq!(answered, want.is_some());
            if let Some(want) = want {
                prop_assert_eq!(&out, &want, "{:?} {:?}", q, Message::from_vec(&want));
            }
        }
    }
}

/// A Client Subnet with a bit set past its prefix is FORMERR (RFC 7871 §6), even right after
/// a valid query of the same shape and network was answered and cached.
#[test]
fn a_subnet_with_bits_past_its_prefix_is_not_answered_from_the_cache() {
    let world = World::new(TOPO);
    let fast = Authority::new();
    let mut cache = UdpCache::default();
    let mut out = Vec::new();
    let step = Step {
        name: 10,
        qtype: 0,
        id: 7,
        rd: false,
        edns: Some((1232, Some(0))),
        resolver: 0,
        down: 0,
        advance: 0,
    };
    let valid = packet(&step);
    let mut past = valid.clone();
    // 81.2.69.160/27 → 81.2.69.161/27.
    *past.last_mut().unwrap() |= 1;
    let resolver: IpAddr = RESOLVERS[0].parse().unwrap();
    assert!(fast.handle_udp(&world, &valid, resolver, &mut cache, &mut out));
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::NoError
    );
    assert!(fast.handle_udp(&world, &past, resolver, &mut cache, &mut out));
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
}
