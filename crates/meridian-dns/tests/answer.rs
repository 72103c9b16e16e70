//! The answer builder, query by query: every record type, negative answers, refusals, errors,
//! EDNS and Client Subnet, TTLs, all_down modes; and malformed input never panics.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use meridian_core::config::{LatLon, parse};
use meridian_core::geodns::DnsClient;
use meridian_core::routing::{HealthView, RegionView};
use meridian_dns::Zone;
use meridian_dns::answer::{self, Env, Transport};
use proptest::prelude::*;

const TOPO: &str = include_str!("zone.toml");

/// A fixed world: a health view, a TTL rule, and GeoIP networks.
struct Fixed {
    down: Vec<&'static str>,
    ttl: Duration,
}

impl Fixed {
    fn up() -> Self {
        Fixed {
            down: Vec::new(),
            ttl: Duration::from_secs(300),
        }
    }
}

impl Env for Fixed {
    fn health(&self) -> HealthView {
        ["us-east-1", "eu-west-1", "ap-southeast-1"]
            .into_iter()
            .map(|r| {
                let v = RegionView {
                    up: !self.down.contains(&r),
                    ..RegionView::default()
                };
                (r.to_string(), v)
            })
            .collect()
    }

    fn policy_ttl(&self, _: &HealthView, configured: Duration) -> Duration {
        configured.min(self.ttl)
    }

    fn locate(&self, ip: IpAddr) -> DnsClient {
        let nets: [(&str, &str, &str); 3] = [
            ("81.2.69.160/27", "GB", "EU"),
            ("175.16.199.0/24", "CN", "AS"),
            ("216.160.83.56/29", "US", "NA"),
        ];
        for (net, country, continent) in nets {
            let (addr, len) = net.split_once('/').unwrap();
            let len: u8 = len.parse().unwrap();
            let base: IpAddr = addr.parse().unwrap();
            if answer_mask(ip, len) == base {
                return DnsClient {
                    ip: Some(ip),
                    country: Some(country.into()),
                    continent: Some(continent.into()),
                    location: None,
                    network_prefix: Some(len),
                };
            }
        }
        DnsClient {
            network_prefix: Some(8),
            ..DnsClient::default()
        }
    }

    fn edge_location(&self) -> Option<LatLon> {
        None
    }

    fn random(&self) -> u64 {
        7
    }
}

fn answer_mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        v6 => v6,
    }
}

fn zone() -> Zone {
    Zone::new(Arc::new(parse("t.toml", TOPO).unwrap())).unwrap()
}

const RESOLVER: &str = "198.51.100.1";

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn with_ecs(mut m: Message, subnet: &str) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::from_str(subnet).unwrap()));
    m.set_edns(e);
    m
}

fn ask(m: &Message, env: &Fixed) -> Message {
    let (resp, trace) = answer::respond(&zone(), m, RESOLVER.parse().unwrap(), env, false);
    assert_eq!(resp.response_code, trace.rcode);
    // Round-trip through the wire so what is checked is what a client would see.
    Message::from_vec(&resp.to_vec().unwrap()).unwrap()
}

fn data(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

fn ecs_scope(m: &Message) -> Option<u8> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
}

#[test]
fn apex_soa_and_ns() {
    let r = ask(&query("example.test.", RecordType::SOA), &Fixed::up());
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.authoritative);
    assert!(!r.recursion_available);
    assert!(r.recursion_desired, "RD is copied");
    assert_eq!(r.id, 4242);
    let RData::SOA(soa) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns1.example.test.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.example.test.");
    assert_eq!(r.answers[0].ttl, 300);
    let r = ask(&query("EXAMPLE.test.", RecordType::NS), &Fixed::up());
    assert_eq!(data(&r), ["ns1.example.test.", "ns2.example.test."]);
    assert_eq!(
        r.answers[0].name.to_ascii(),
        "EXAMPLE.test.",
        "the question's case is kept"
    );
    assert_eq!(
        data_of(&r.additionals),
        ["192.0.2.53"],
        "glue for the in-zone server"
    );
}

fn data_of(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rs.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn static_records_of_every_type() {
    let env = Fixed::up();
    let r = ask(&query("www.example.test.", RecordType::A), &env);
    assert_eq!(data(&r), ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(r.answers[0].ttl, 300);
    let r = ask(&query("www.example.test.", RecordType::AAAA), &env);
    assert_eq!(data(&r), ["2001:db8::1"]);
    let r = ask(&query("example.test.", RecordType::TXT), &env);
    assert_eq!(data(&r), ["v=spf1 -all", "hello world"]);
    let r = ask(&query("example.test.", RecordType::MX), &env);
    assert_eq!(data(&r), ["10 mail.example.test.", "20 mail.example.org."]);
    assert_eq!(data_of(&r.additionals), ["192.0.2.25"]);
    let r = ask(&query("alias.example.test.", RecordType::CNAME), &env);
    assert_eq!(data(&r), ["www.example.test."]);
    let r = ask(&query("xcdn.example.test.", RecordType::A), &env);
    assert_eq!(r.response_code, ResponseCode::NXDomain, "not below *.cdn");
    let r = ask(&query("cdn.example.test.", RecordType::A), &env);
    assert_eq!(
        (r.response_code, r.answers.len()),
        (ResponseCode::NoError, 0),
        "the wildcard's parent exists, empty"
    );
    let r = ask(&query("x.y.cdn.example.test.", RecordType::A), &env);
    assert_eq!(data(&r), ["192.0.2.77"], "wildcard");
    assert_eq!(r.answers[0].name.to_ascii(), "x.y.cdn.example.test.");
}

#[test]
fn cname_is_followed_inside_the_zone() {
    let r = ask(&query("alias.example.test.", RecordType::A), &Fixed::up());
    assert_eq!(data(&r), ["www.example.test.", "192.0.2.1", "192.0.2.2"]);
    let r = ask(&query("out.example.test.", RecordType::A), &Fixed::up());
    assert_eq!(data(&r), ["elsewhere.example.org."]);
    assert_eq!(r.response_code, ResponseCode::NoError);
    let r = ask(&query("alias.example.test.", RecordType::MX), &Fixed::up());
    assert_eq!(data(&r), ["www.example.test."]);
    assert_eq!(r.name_servers_len(), 1, "NODATA at the target: SOA");
}

trait Authorities {
    fn name_servers_len(&self) -> usize;
}

impl Authorities for Message {
    fn name_servers_len(&self) -> usize {
        self.authorities.len()
    }
}

#[test]
fn nxdomain_nodata_and_empty_non_terminals() {
    let env = Fixed::up();
    let r = ask(&query("nope.example.test.", RecordType::A), &env);
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert!(r.authoritative && r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = ask(&query("www.example.test.", RecordType::MX), &env);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = ask(&query("a.b.example.test.", RecordType::A), &env);
    assert_eq!(
        (r.response_code, r.answers.len(), r.authorities.len()),
        (ResponseCode::NoError, 0, 1),
        "an empty non-terminal exists: NODATA, not NXDOMAIN"
    );
    let r = ask(&query("deep.a.b.example.test.", RecordType::A), &env);
    assert_eq!(data(&r), ["192.0.2.99"]);
    let r = ask(&query("www.example.test.", RecordType::SRV), &env);
    assert_eq!(
        (r.response_code, r.answers.len()),
        (ResponseCode::NoError, 0)
    );
}

#[test]
fn refused_notimp_formerr() {
    let env = Fixed::up();
    let r = ask(&query("www.example.org.", RecordType::A), &env);
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert!(!r.authoritative);
    let r = ask(&query("test.", RecordType::SOA), &env);
    assert_eq!(
        r.response_code,
        ResponseCode::Refused,
        "the parent is not ours"
    );
    let mut q = query("www.example.test.", RecordType::TXT);
    q.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(ask(&q, &env).response_code, ResponseCode::Refused);
    let r = ask(&query("example.test.", RecordType::AXFR), &env);
    assert_eq!(r.response_code, ResponseCode::NotImp);
    let mut q = query("example.test.", RecordType::SOA);
    q.metadata.op_code = OpCode::Status;
    assert_eq!(ask(&q, &env).response_code, ResponseCode::NotImp);
    let mut q = query("example.test.", RecordType::SOA);
    q.add_query(Query::query(
        Name::from_str("www.example.test.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(ask(&q, &env).response_code, ResponseCode::FormErr);
    let mut q = query("example.test.", RecordType::SOA);
    q.queries.clear();
    assert_eq!(ask(&q, &env).response_code, ResponseCode::FormErr);
}

#[test]
fn referral_below_a_delegation() {
    let r = ask(
        &query("host.sub.example.test.", RecordType::A),
        &Fixed::up(),
    );
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(!r.authoritative && r.answers.is_empty());
    assert_eq!(data_of(&r.authorities), ["ns.sub.example.test."]);
    assert_eq!(data_of(&r.additionals), ["192.0.2.54"]);
}

#[test]
fn policy_answers_follow_geo_and_the_ecs_subnet() {
    let env = Fixed::up();
    let r = ask(
        &with_ecs(query("api.example.test.", RecordType::A), "81.2.69.160/28"),
        &env,
    );
    assert_eq!(data(&r), ["192.0.2.20"], "GB → EU → eu-west-1");
    assert_eq!(
        ecs_scope(&r),
        Some(27),
        "the GeoIP network's prefix, not the /28 sent"
    );
    let r = ask(
        &with_ecs(query("api.example.test.", RecordType::A), "175.16.199.0/24"),
        &env,
    );
    assert_eq!(data(&r), ["192.0.2.30"]);
    assert_eq!(ecs_scope(&r), Some(24));
    let r = ask(
        &with_ecs(query("api.example.test.", RecordType::A), "10.0.0.0/8"),
        &env,
    );
    assert_eq!(data(&r), ["192.0.2.10"], "unknown → default");
    let r = ask(&query("api.example.test.", RecordType::A), &env);
    assert_eq!(data(&r), ["192.0.2.10"], "no ECS: the resolver is located");
    assert_eq!(ecs_scope(&r), None, "no ECS in, no ECS out");
    let r = ask(
        &with_ecs(query("api.example.test.", RecordType::A), "0.0.0.0/0"),
        &env,
    );
    assert_eq!(ecs_scope(&r), Some(0), "source 0: scope 0");
    let r = ask(
        &with_ecs(query("api.example.test.", RecordType::AAAA), "81.2.69.0/24"),
        &env,
    );
    assert_eq!(data(&r), ["2001:db8::10"], "only us-east-1 has IPv6");
}

#[test]
fn ecs_scope_is_zero_when_the_answer_does_not_depend_on_the_client() {
    let env = Fixed::up();
    for name in ["www", "open", "w", "nope"] {
        let q = with_ecs(
            query(&format!("{name}.example.test."), RecordType::A),
            "81.2.69.0/24",
        );
        assert_eq!(ecs_scope(&ask(&q, &env)), Some(0), "{name}");
    }
}

#[test]
fn malformed_ecs_is_formerr() {
    let mut q = query("api.example.test.", RecordType::A);
    let mut e = Edns::new();
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        "81.2.69.0".parse().unwrap(),
        20,
        0,
    )));
    q.set_edns(e);
    let bytes = q.to_vec().unwrap();
    let (out, trace) = answer::handle(
        &zone(),
        &bytes,
        RESOLVER.parse().unwrap(),
        Transport::Udp,
        &Fixed::up(),
    )
    .unwrap();
    assert_eq!(
        trace.rcode,
        ResponseCode::FormErr,
        "host bits beyond the source prefix"
    );
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.id, 4242);
    assert!(
        m.edns.is_some(),
        "an EDNS query gets an OPT back, even with FORMERR"
    );
}

#[test]
fn down_regions_and_all_down_modes() {
    let one_down = Fixed {
        down: vec!["us-east-1"],
        ..Fixed::up()
    };
    let r = ask(&query("open.example.test.", RecordType::A), &one_down);
    assert_eq!(data(&r), ["192.0.2.20"], "failover to the next in order");
    let all = Fixed {
        down: vec!["us-east-1", "eu-west-1", "ap-southeast-1"],
        ..Fixed::up()
    };
    let r = ask(&query("open.example.test.", RecordType::A), &all);
    assert_eq!(
        data(&r),
        ["192.0.2.10", "192.0.2.20", "192.0.2.30"],
        "fail-open: all"
    );
    let r = ask(&query("closed.example.test.", RecordType::A), &all);
    assert_eq!(
        (r.response_code, r.answers.len(), r.authorities.len()),
        (ResponseCode::NoError, 0, 1),
        "fail-closed: NODATA with the SOA"
    );
    let r = ask(&query("fb.example.test.", RecordType::A), &all);
    assert_eq!(data(&r), ["192.0.2.30"], "fallback region");
}

#[test]
fn policy_ttl_is_the_envs_and_static_ttl_is_configured() {
    let shrinking = Fixed {
        ttl: Duration::from_secs(5),
        ..Fixed::up()
    };
    let r = ask(&query("open.example.test.", RecordType::A), &shrinking);
    assert_eq!(r.answers[0].ttl, 5);
    let r = ask(&query("www.example.test.", RecordType::A), &shrinking);
    assert_eq!(
        r.answers[0].ttl, 300,
        "static records keep the configured TTL"
    );
    let r = ask(&query("open.example.test.", RecordType::A), &Fixed::up());
    assert_eq!(r.answers[0].ttl, 300);
}

#[test]
fn edns_payload_truncation_and_badvers() {
    let env = Fixed::up();
    let resolver: IpAddr = RESOLVER.parse().unwrap();
    let big = query("big.example.test.", RecordType::TXT);
    let (out, trace) = answer::handle(
        &zone(),
        &big.to_vec().unwrap(),
        resolver,
        Transport::Udp,
        &env,
    )
    .unwrap();
    let m = Message::from_vec(&out).unwrap();
    assert!(
        m.truncation && m.answers.is_empty() && trace.truncated,
        "> 512 without EDNS"
    );
    assert!(out.len() <= 512);
    let mut edns = big.clone();
    let mut e = Edns::new();
    e.set_max_payload(4096);
    edns.set_edns(e);
    let (out, _) = answer::handle(
        &zone(),
        &edns.to_vec().unwrap(),
        resolver,
        Transport::Udp,
        &env,
    )
    .unwrap();
    let m = Message::from_vec(&out).unwrap();
    assert!(
        !m.truncation && m.answers.len() == 3,
        "fits in the EDNS payload"
    );
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), answer::UDP_PAYLOAD);
    let (out, _) = answer::handle(
        &zone(),
        &big.to_vec().unwrap(),
        resolver,
        Transport::Tcp,
        &env,
    )
    .unwrap();
    let m = Message::from_vec(&out).unwrap();
    assert!(!m.truncation && m.answers.len() == 3, "TCP: whole");
    let mut v1 = query("www.example.test.", RecordType::A);
    let mut e = Edns::new();
    e.set_version(1);
    v1.set_edns(e);
    let (out, _) = answer::handle(
        &zone(),
        &v1.to_vec().unwrap(),
        resolver,
        Transport::Udp,
        &env,
    )
    .unwrap();
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(
        u16::from(m.response_code),
        16,
        "BADVERS (16, shares its code with BADSIG)"
    );
}

/// A query for `api.example.test.` A whose OPT record carries `options` as written on the wire.
fn with_raw_options(options: &[u8]) -> Vec<u8> {
    let mut q = query("api.example.test.", RecordType::A);
    q.set_edns(Edns::new());
    let mut bytes = q.to_vec().unwrap();
    let n = bytes.len();
    assert_eq!(
        bytes[n - 2..],
        [0, 0],
        "an OPT record without options ends the message"
    );
    bytes[n - 2..].copy_from_slice(&u16::try_from(options.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(options);
    bytes
}

#[test]
fn ecs_with_more_address_octets_than_its_prefix_needs_is_formerr() {
    let resolver: IpAddr = RESOLVER.parse().unwrap();
    let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let exact = [0, 8, 0, 7, 0, 1, 24, 0, 81, 2, 69];
    let long = [0, 8, 0, 8, 0, 1, 24, 0, 81, 2, 69, 0];
    for (options, rcode) in [
        (exact.to_vec(), ResponseCode::NoError),
        ([&cookie[..], &exact].concat(), ResponseCode::NoError),
        (long.to_vec(), ResponseCode::FormErr),
        ([&cookie[..], &long].concat(), ResponseCode::FormErr),
    ] {
        let bytes = with_raw_options(&options);
        let (out, trace) =
            answer::handle(&zone(), &bytes, resolver, Transport::Udp, &Fixed::up()).unwrap();
        assert_eq!(trace.rcode, rcode, "options {options:?}");
        let m = Message::from_vec(&out).unwrap();
        assert_eq!((m.id, m.response_code), (4242, rcode));
    }
}

#[test]
fn garbage_and_responses() {
    let env = Fixed::up();
    let resolver: IpAddr = RESOLVER.parse().unwrap();
    assert!(answer::handle(&zone(), &[1, 2, 3], resolver, Transport::Udp, &env).is_none());
    let mut resp = query("www.example.test.", RecordType::A);
    resp.metadata.message_type = MessageType::Response;
    let bytes = resp.to_vec().unwrap();
    assert!(answer::handle(&zone(), &bytes, resolver, Transport::Udp, &env).is_none());
    let mut bytes = query("www.example.test.", RecordType::A).to_vec().unwrap();
    bytes.truncate(bytes.len() - 3);
    let (out, trace) = answer::handle(&zone(), &bytes, resolver, Transport::Udp, &env).unwrap();
    assert_eq!(trace.rcode, ResponseCode::FormErr);
    let m = Message::from_vec(&out).unwrap();
    assert_eq!((m.id, m.response_code), (4242, ResponseCode::FormErr));
}

fn valid_queries() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (n, t) in [
        ("www.example.test.", RecordType::A),
        ("api.example.test.", RecordType::AAAA),
        ("alias.example.test.", RecordType::A),
        ("example.test.", RecordType::ANY),
        ("x.cdn.example.test.", RecordType::MX),
    ] {
        v.push(query(n, t).to_vec().unwrap());
        v.push(with_ecs(query(n, t), "81.2.69.0/24").to_vec().unwrap());
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes never panic the handler, and whatever it answers decodes.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let z = zone();
        for t in [Transport::Udp, Transport::Tcp] {
            if let Some((out, _)) = answer::handle(&z, &bytes, RESOLVER.parse().unwrap(), t, &Fixed::up()) {
                prop_assert!(Message::from_vec(&out).is_ok());
                prop_assert!(t == Transport::Tcp || out.len() <= usize::from(answer::UDP_PAYLOAD));
            }
        }
    }

    /// Valid queries with bytes flipped, cut or inserted never panic the handler.
    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..10,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = valid_queries()[which].clone();
        for (at, b, kind) in edits {
            let i = usize::from(at) % (bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                _ => bytes.truncate(i.max(1)),
            }
        }
        let z = zone();
        if let Some((out, _)) = answer::handle(&z, &bytes, RESOLVER.parse().unwrap(), Transport::Udp, &Fixed::up()) {
            prop_assert!(Message::from_vec(&out).is_ok());
        }
    }
}
