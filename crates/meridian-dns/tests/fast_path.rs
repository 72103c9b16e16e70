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

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian_core::config::{Topology, parse};
use meridian_core::geodns::DnsClient;
use meridian_core::routing::{HealthView, RegionView};
use meridian_dns::{Authority, Backend, Transport, UdpCache};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use proptest::prelude::*;

const TOPO: &str = include_str!("zone.toml");
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// A backend whose health (bit i: region i down), clock and GeoIP are set by the test.
struct World {
    topology: Arc<Topology>,
    down: AtomicU64,
    now_s: AtomicU64,
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

    fn locate(&self, ip: IpAddr) -> DnsClient {
        let (country, continent, prefix) = match ip.to_string().as_str() {
            s if s.starts_with("81.2.69.") => ("GB", "EU", 27),
            s if s.starts_with("175.16.199.") => ("CN", "AS", 24),
            s if s.starts_with("216.160.83.") => ("US", "NA", 29),
            _ => return DnsClient::default(),
        };
        DnsClient {
            ip: Some(ip),
            country: Some(country.into()),
            continent: Some(continent.into()),
            location: None,
            network_prefix: Some(prefix),
        }
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
const NAMES: [&str; 21] = [
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
const SUBNETS: [(&str, u8); 5] = [
    ("81.2.69.160", 27),
    ("175.16.199.0", 24),
    ("216.160.83.56", 29),
    ("10.0.0.0", 8),
    ("0.0.0.0", 0),
];
const RESOLVERS: [&str; 3] = ["127.0.0.1", "81.2.69.161", "2001:db8::53"];

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
    (
        0..NAMES.len(),
        0..TYPES.len(),
        any::<u16>(),
        any::<bool>(),
        proptest::option::of((
            prop_oneof![Just(512u16), Just(1232), Just(4096), 0u16..2000],
            proptest::option::of(0..SUBNETS.len()),
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
    fn fast_path_answers_what_the_builder_answers(steps in proptest::collection::vec(step(), 1..120)) {
        let world = World {
            topology: Arc::new(parse("t.toml", TOPO).unwrap()),
            down: AtomicU64::new(0),
            now_s: AtomicU64::new(100),
        };
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
