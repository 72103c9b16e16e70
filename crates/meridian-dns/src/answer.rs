//! The answer builder: a query message and what the edge knows ([`Env`]) → a response
//! message. Pure apart from what `Env` returns; the wire I/O lives in [`crate::server`].
//!
//! What it answers (RFC 1034/1035, 2308, 4592, 6891, 7871):
//! - names outside the zone: REFUSED; classes other than IN: REFUSED;
//! - opcodes other than QUERY, and zone transfers: NOTIMP; not exactly one question, an OPT
//!   question, an undecodable message or a malformed Client Subnet option: FORMERR; EDNS
//!   versions above 0: BADVERS;
//! - SOA and NS at the apex, static records, policy A/AAAA records decided by
//!   [`meridian_core::geodns::answer`], CNAMEs followed inside the zone, wildcards, referrals
//!   below a delegated name;
//! - NXDOMAIN for a name that does not exist, NODATA (NOERROR, empty answer) for a name that
//!   exists without the type; both with the SOA in the authority section.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use meridian_core::config::{LatLon, Policy};
use meridian_core::geodns::{self, DnsClient, PolicyAnswer};
use meridian_core::routing::HealthView;
use serde::Serialize;

use crate::GeoScopes;
use crate::zone::{Found, RecordSet, Zone, address_data};

/// The UDP payload size this server advertises and the most it sends over UDP (the DNS flag
/// day 2020 value, which avoids IP fragmentation). A client advertising less gets less; one
/// without EDNS gets 512 bytes.
pub const UDP_PAYLOAD: u16 = 1232;

/// How many CNAMEs are followed inside the zone before giving up (answering what was found).
const MAX_CNAME_CHAIN: usize = 8;

/// What an answer may depend on besides the zone and the query: the edge's health view,
/// GeoIP, the state-aware TTL and randomness. Each is asked for only when a policy record
/// is answered.
pub trait Env {
    /// The health view routing decisions use.
    fn health(&self) -> HealthView;
    /// The TTL of policy answers given this view (see
    /// [`meridian_core::geodns::StateAwareTtl`]); never more than `configured`.
    fn policy_ttl(&self, health: &HealthView, configured: Duration) -> Duration;
    /// What GeoIP knows about `ip`, with the prefix length of its network.
    fn locate(&self, ip: IpAddr) -> DnsClient;
    /// Where the deciding edge is (for `proximity` when the client is not located).
    fn edge_location(&self) -> Option<LatLon>;
    /// A fresh random number (for `weighted`).
    fn random(&self) -> u64;
}

/// How the query arrived: UDP answers are truncated to the client's payload size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: at most the client's EDNS payload size (512 without EDNS, [`UDP_PAYLOAD`] at most).
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// One policy record set that was answered, for metrics and explain.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyTrace {
    /// The owner name answered.
    pub name: String,
    /// `A` or `AAAA`.
    pub rtype: String,
    /// The regions answered with.
    pub regions: Vec<String>,
    /// `routed`, `fail-open`, `fallback` or `fail-closed`.
    pub outcome: &'static str,
    /// The TTL given.
    pub ttl: u32,
    /// The ECS scope this answer is valid for.
    pub scope: u8,
    /// Whether the decision looked at where the client is (the record's routing has `geo`
    /// rules or `proximity` at some level; see `Routing::located`).
    pub located: bool,
    /// The widest-scope map the scope came from, if any (see [`crate::GeoScopes`]).
    #[serde(skip)]
    pub scopes: Option<Arc<dyn GeoScopes>>,
    /// The routing decision, step by step (only when explaining).
    pub explanation: Vec<String>,
}

/// What happened to one query: for metrics, logs and `explain`.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// The question's type, when there was exactly one question.
    pub qtype: Option<RecordType>,
    /// The response code.
    pub rcode: ResponseCode,
    /// Whether the query carried an EDNS Client Subnet option.
    pub ecs: bool,
    /// The scope prefix length answered in the ECS option (when the query had one).
    pub scope: Option<u8>,
    /// The client as located (only when a policy record was answered).
    pub client: Option<DnsClient>,
    /// The policy record sets answered.
    pub policy: Vec<PolicyTrace>,
    /// Whether the UDP answer was truncated (TC set, records dropped).
    pub truncated: bool,
}

/// Decodes `packet`, answers it from `zone` and encodes the response, truncated to the
/// transport's size. `None` when nothing should be sent back: the packet is shorter than a
/// header or is itself a response. Never panics on any input.
pub fn handle(
    zone: &Zone,
    packet: &[u8],
    resolver: IpAddr,
    transport: Transport,
    env: &dyn Env,
) -> Option<(Vec<u8>, Trace)> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let decoded = Message::from_vec(packet)
        .ok()
        .filter(|req| req.edns.is_none() || !subnet_overlong(packet));
    let (resp, mut trace, limit) = match decoded {
        Some(req) => {
            let limit = match transport {
                Transport::Tcp => usize::from(u16::MAX),
                Transport::Udp => usize::from(
                    req.edns
                        .as_ref()
                        .map_or(512, |e| e.max_payload().clamp(512, UDP_PAYLOAD)),
                ),
            };
            let (resp, trace) = respond(zone, &req, resolver, env, false);
            (resp, trace, limit)
        }
        None => {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let op = OpCode::from_u8((packet[2] >> 3) & 0x0f);
            let mut resp = Message::error_msg(id, op, ResponseCode::FormErr);
            resp.metadata.recursion_desired = packet[2] & 0x01 != 0;
            let trace = Trace {
                rcode: ResponseCode::FormErr,
                ..Trace::default()
            };
            (resp, trace, 512)
        }
    };
    let bytes = match resp.to_vec() {
        Ok(b) if b.len() <= limit => b,
        Ok(_) => {
            trace.truncated = true;
            resp.truncate().to_vec().ok()?
        }
        Err(e) => {
            tracing::warn!(error = %e, "encoding a DNS answer failed; answering SERVFAIL");
            trace.rcode = ResponseCode::ServFail;
            Message::error_msg(resp.id, resp.op_code, ResponseCode::ServFail)
                .to_vec()
                .ok()?
        }
    };
    Some((bytes, trace))
}

/// Whether a Client Subnet option of the decodable query `packet` carries more ADDRESS octets
/// than its source prefix needs. hickory's decoder reads the octets the prefix needs and skips
/// the rest, so this looks at the option lengths on the wire (records read with hickory's
/// decoder; the OPT record's data is a list of code, length, data). RFC 7871 §6: such an
/// option SHOULD get FORMERR ("too few" octets already fail to decode).
fn subnet_overlong(packet: &[u8]) -> bool {
    use hickory_proto::op::Header;
    use hickory_proto::rr::Name;
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

    let mut d = BinDecoder::new(packet);
    let Ok(header) = Header::read(&mut d) else {
        return false;
    };
    let c = header.counts;
    for _ in 0..c.queries {
        if hickory_proto::op::Query::read(&mut d).is_err() {
            return false;
        }
    }
    let records = u32::from(c.answers) + u32::from(c.authorities) + u32::from(c.additionals);
    for _ in 0..records {
        let start = d.index();
        if Name::read(&mut d).is_err() {
            return false;
        }
        let Ok(fixed) = d.read_slice(10) else {
            return false;
        };
        let fixed = fixed.unverified(/*only compared and used as a length below*/);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Ok(data) = d.read_slice(rdlen) else {
            return false;
        };
        let is_opt = u16::from_be_bytes([fixed[0], fixed[1]]) == u16::from(RecordType::OPT);
        if is_opt && packet[start] == 0 && options_overlong(data.unverified(/*walked with bounds*/))
        {
            return true;
        }
    }
    false
}

/// Whether the OPT record data `opt` holds a Client Subnet option (code 8) longer than
/// 4 octets plus the octets its source prefix needs.
fn options_overlong(mut opt: &[u8]) -> bool {
    while let [c0, c1, l0, l1, rest @ ..] = opt {
        let (code, len) = (
            u16::from_be_bytes([*c0, *c1]),
            usize::from(u16::from_be_bytes([*l0, *l1])),
        );
        let Some(data) = rest.get(..len) else {
            return false;
        };
        if code == u16::from(EdnsCode::Subnet)
            && data
                .get(2)
                .is_some_and(|&prefix| len > 4 + usize::from(prefix).div_ceil(8))
        {
            return true;
        }
        opt = &rest[len..];
    }
    false
}

/// Answers a decoded query. `resolver` is the address the query came from; `explain` fills
/// the decision explanations of the trace.
pub fn respond(
    zone: &Zone,
    req: &Message,
    resolver: IpAddr,
    env: &dyn Env,
    explain: bool,
) -> (Message, Trace) {
    let mut resp = Message::response(req.id, req.op_code);
    resp.metadata.recursion_desired = req.recursion_desired;
    resp.metadata.checking_disabled = req.checking_disabled;
    resp.add_queries(req.queries.iter().take(1).cloned());
    let mut trace = Trace {
        qtype: (req.queries.len() == 1).then(|| req.queries[0].query_type()),
        ..Trace::default()
    };
    if let Some(e) = &req.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        resp.set_edns(edns);
        if e.version() > 0 {
            return finish(resp, &mut trace, ResponseCode::BADVERS);
        }
    }
    let ecs = match client_subnet(req) {
        Ok(ecs) => ecs,
        Err(()) => return finish(resp, &mut trace, ResponseCode::FormErr),
    };
    trace.ecs = ecs.is_some();
    if req.message_type != MessageType::Query || req.op_code != OpCode::Query {
        return finish(resp, &mut trace, ResponseCode::NotImp);
    }
    let [query] = req.queries.as_slice() else {
        return finish(resp, &mut trace, ResponseCode::FormErr);
    };
    let qtype = query.query_type();
    match qtype {
        RecordType::OPT => return finish(resp, &mut trace, ResponseCode::FormErr),
        RecordType::AXFR | RecordType::IXFR => {
            return finish(resp, &mut trace, ResponseCode::NotImp);
        }
        _ => {}
    }
    if query.query_class() != DNSClass::IN || !zone.contains(query.name()) {
        return finish(resp, &mut trace, ResponseCode::Refused);
    }
    resp.metadata.authoritative = true;

    let located_ip = located(ecs.map(|e| (e.addr(), e.source_prefix())), resolver);
    let mut ctx = Ctx {
        zone,
        env,
        explain,
        located_ip,
        health: None,
        client: None,
        trace: &mut trace,
    };
    let rcode = ctx.answer(&mut resp, query.name().clone(), qtype);
    let scope = trace.policy.iter().map(|p| p.scope).max().unwrap_or(0);
    if let (Some(e), Some(edns)) = (ecs, resp.edns.as_mut()) {
        let scope = if e.source_prefix() == 0 { 0 } else { scope };
        let echo = ClientSubnet::new(e.addr(), e.source_prefix(), scope);
        edns.options_mut().insert(EdnsOption::Subnet(echo));
        trace.scope = Some(scope);
    }
    finish(resp, &mut trace, rcode)
}

fn finish(mut resp: Message, trace: &mut Trace, rcode: ResponseCode) -> (Message, Trace) {
    resp.metadata.response_code = rcode;
    trace.rcode = rcode;
    (resp, std::mem::take(trace))
}

/// The query's Client Subnet option: `Err` when it is malformed (address bits set beyond the
/// source prefix, or a prefix longer than the address).
fn client_subnet(req: &Message) -> Result<Option<ClientSubnet>, ()> {
    let Some(EdnsOption::Subnet(ecs)) = req.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
    else {
        return Ok(None);
    };
    let masked = mask(ecs.addr(), ecs.source_prefix()).ok_or(())?;
    if masked != ecs.addr() {
        return Err(());
    }
    Ok(Some(*ecs))
}

/// The address a query is located by: its Client Subnet's (`addr`, source prefix) when the
/// prefix is not 0, else the resolver's. The UDP cache's second level uses the same rule.
pub(crate) fn located(subnet: Option<(IpAddr, u8)>, resolver: IpAddr) -> IpAddr {
    match subnet {
        Some((addr, source)) if source > 0 => addr,
        _ => resolver,
    }
}

/// The prefix a located decision's ECS scope is made of for the client at `ip` whose GeoIP
/// network has `network_prefix`: the widest block of `scopes` around it when known, else the
/// network's. The UDP cache's second level patches scopes with the same rule.
pub(crate) fn scope_prefix(
    scopes: Option<&dyn GeoScopes>,
    ip: IpAddr,
    network_prefix: Option<u8>,
) -> Option<u8> {
    scopes.and_then(|s| s.widest(ip)).or(network_prefix)
}

/// `ip` with every bit after the first `prefix` cleared; `None` when `prefix` is too long.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if prefix <= 32 => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V4((u32::from(v4) & m).into()))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V6((u128::from(v6) & m).into()))
        }
        _ => None,
    }
}

struct Ctx<'a> {
    zone: &'a Zone,
    env: &'a dyn Env,
    explain: bool,
    located_ip: IpAddr,
    health: Option<(HealthView, u32)>,
    client: Option<DnsClient>,
    trace: &'a mut Trace,
}

impl Ctx<'_> {
    /// Fills the answer, authority and additional sections; returns the response code.
    fn answer(&mut self, resp: &mut Message, qname: Name, qtype: RecordType) -> ResponseCode {
        let mut name = qname;
        for _ in 0..=MAX_CNAME_CHAIN {
            match self.zone.find(&name) {
                Found::NxDomain => {
                    self.negative(resp);
                    return ResponseCode::NXDomain;
                }
                Found::EmptyNonTerminal => {
                    self.negative(resp);
                    return ResponseCode::NoError;
                }
                Found::Referral { cut, ns } => {
                    resp.metadata.authoritative = false;
                    for set in ns {
                        let records = self.records(set, cut);
                        self.glue(resp, &records);
                        resp.add_authorities(records);
                    }
                    return ResponseCode::NoError;
                }
                Found::Node(sets) => {
                    let cname = sets.iter().find(|s| s.rtype() == RecordType::CNAME);
                    if let Some(set) = cname
                        && !matches!(qtype, RecordType::CNAME | RecordType::ANY)
                    {
                        let records = self.records(set, &name);
                        let target = records.first().and_then(|r| match &r.data {
                            RData::CNAME(c) => Some(c.0.clone()),
                            _ => None,
                        });
                        resp.add_answers(records);
                        match target {
                            Some(t) if self.zone.contains(&t) => {
                                name = t;
                                continue;
                            }
                            _ => return ResponseCode::NoError,
                        }
                    }
                    let mut any = false;
                    for set in sets {
                        if qtype == RecordType::ANY || set.rtype() == qtype {
                            let records = self.records(set, &name);
                            if matches!(set.rtype(), RecordType::NS | RecordType::MX) {
                                self.glue(resp, &records);
                            }
                            any |= !records.is_empty();
                            resp.add_answers(records);
                        }
                    }
                    if !any {
                        self.negative(resp);
                    }
                    return ResponseCode::NoError;
                }
            }
        }
        ResponseCode::NoError
    }

    /// The SOA in the authority section of a negative answer (RFC 2308), its TTL capped by
    /// the SOA minimum (here both are the zone TTL).
    fn negative(&self, resp: &mut Message) {
        resp.add_authority(self.zone.soa().clone());
    }

    /// In-zone static addresses of NS and MX targets, in the additional section.
    fn glue(&self, resp: &mut Message, records: &[Record]) {
        for r in records {
            let target = match &r.data {
                RData::NS(ns) => &ns.0,
                RData::MX(mx) => &mx.exchange,
                _ => continue,
            };
            if !self.zone.contains(target) {
                continue;
            }
            for rtype in [RecordType::A, RecordType::AAAA] {
                for d in self.zone.static_addresses(target, rtype) {
                    let glue = Record::from_rdata(target.clone(), self.zone.ttl(), d.clone());
                    if !resp.additionals.contains(&glue) {
                        resp.add_additional(glue);
                    }
                }
            }
        }
    }

    /// The records of one set at `owner`; a policy set asks the routing decision.
    fn records(&mut self, set: &RecordSet, owner: &Name) -> Vec<Record> {
        match set {
            RecordSet::Static { data, .. } => data
                .iter()
                .map(|d| Record::from_rdata(owner.clone(), self.zone.ttl(), d.clone()))
                .collect(),
            RecordSet::Policy {
                family,
                routing,
                scopes,
            } => {
                let client = self.client().clone();
                // The scope: the widest block around the located address that every
                // decision of these maps treats alike, else the GeoIP network.
                let scoped = DnsClient {
                    network_prefix: scope_prefix(
                        scopes.as_deref(),
                        self.located_ip,
                        client.network_prefix,
                    ),
                    ..client.clone()
                };
                let (zone, env, explain) = (self.zone, self.env, self.explain);
                let (health, ttl) = self.health_and_ttl();
                let ttl = *ttl;
                // Only `weighted` draws; not asking otherwise keeps other answers reusable
                // (see `UdpCache`).
                let random = if matches!(routing.policy, Policy::Weighted) {
                    env.random()
                } else {
                    0
                };
                let a: PolicyAnswer = geodns::answer(
                    zone.topology(),
                    routing,
                    *family,
                    health,
                    &scoped,
                    env.edge_location(),
                    random,
                    explain,
                );
                self.trace.client = Some(client);
                self.trace.policy.push(PolicyTrace {
                    name: owner.to_ascii(),
                    rtype: set.rtype().to_string(),
                    regions: a.regions,
                    outcome: outcome_name(a.outcome),
                    ttl,
                    scope: a.scope,
                    located: routing.located(),
                    scopes: scopes.clone(),
                    explanation: a.explanation,
                });
                a.addresses
                    .into_iter()
                    .map(|ip| Record::from_rdata(owner.clone(), ttl, address_data(ip)))
                    .collect()
            }
        }
    }

    fn health_and_ttl(&mut self) -> &(HealthView, u32) {
        let (env, configured) = (self.env, Duration::from_secs(u64::from(self.zone.ttl())));
        self.health.get_or_insert_with(|| {
            let h = env.health();
            let ttl = env.policy_ttl(&h, configured).min(configured).as_secs();
            (h, u32::try_from(ttl).unwrap_or(u32::MAX).max(1))
        })
    }

    fn client(&mut self) -> &DnsClient {
        let (env, ip) = (self.env, self.located_ip);
        self.client.get_or_insert_with(|| {
            let mut c = env.locate(ip);
            c.ip = Some(ip);
            c
        })
    }
}

/// The name of a decision's outcome, as in explain output.
pub fn outcome_name(o: meridian_core::routing::Outcome) -> &'static str {
    use meridian_core::routing::Outcome;
    match o {
        Outcome::Routed => "routed",
        Outcome::FailOpen => "fail-open",
        Outcome::Fallback => "fallback",
        Outcome::FailClosed => "fail-closed",
    }
}
