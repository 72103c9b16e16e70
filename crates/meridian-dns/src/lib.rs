//! Meridian's GeoDNS (DESIGN §3): the topology's `[dns]` zone served authoritatively over UDP
//! and TCP, policy records answered with the same routing decisions (`meridian-core`) and the
//! same health view as the edge's proxy, EDNS Client Subnet, and state-aware TTLs.
//!
//! The crate depends only on `meridian-core`: whoever runs it (the edge) implements
//! [`Backend`] to give it the current topology, health view and GeoIP.

#![forbid(unsafe_code)]

pub mod answer;
mod error;
pub mod metrics;
pub mod server;
mod zone;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian_core::config::{LatLon, Topology};
use meridian_core::geodns::{DnsClient, StateAwareTtl};
use meridian_core::routing::HealthView;
use serde::Serialize;

pub use answer::{Env, PolicyTrace, Trace, Transport, UDP_PAYLOAD};
pub use error::Error;
pub use server::{bind_udp, serve};
pub use zone::Zone;

/// What GeoDNS needs from the process it runs in (the edge). Implementations must be cheap
/// to call: `health_view` and `locate` are called once per policy answer.
pub trait Backend: Send + Sync + 'static {
    /// The current topology; a new `Arc` (by pointer) rebuilds the zone.
    fn topology(&self) -> Arc<Topology>;
    /// Whether `topology` is (by pointer) the current one; an implementation may answer
    /// without taking a reference count. Default: compares with [`Backend::topology`].
    fn is_current(&self, topology: &Arc<Topology>) -> bool {
        Arc::ptr_eq(&self.topology(), topology)
    }
    /// The health view the proxy routes with.
    fn health_view(&self) -> HealthView;
    /// The health view GeoDNS answers with: [`Backend::health_view`], which an implementation
    /// may cache while nothing changed (returning the same `Arc`). Default: a fresh view.
    fn shared_health_view(&self) -> Arc<HealthView> {
        Arc::new(self.health_view())
    }
    /// What GeoIP knows about `ip`, with the prefix length of the database network holding
    /// it; [`DnsClient::default`] when there is no database.
    fn locate(&self, ip: IpAddr) -> DnsClient;
    /// Where this edge is. Default: `None`.
    fn edge_location(&self) -> Option<LatLon> {
        None
    }
    /// Monotonic time (same origin for every call), for the state-aware TTL.
    fn now(&self) -> Duration;
    /// A fresh random number, for `weighted` records.
    fn random(&self) -> u64;
}

/// The authoritative server's state: the zone (rebuilt when the backend's topology changes)
/// and the state-aware TTL. Shared by the UDP and TCP loops and by `explain`.
pub struct Authority {
    zone: ArcSwapOption<Zone>,
    ttl: Mutex<StateAwareTtl>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field(
                "zone",
                &self.zone.load().as_ref().map(|z| z.origin().to_ascii()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Authority {
    fn default() -> Self {
        Authority::new()
    }
}

/// [`Env`] over a backend and the authority's TTL state.
struct Live<'a> {
    backend: &'a dyn Backend,
    ttl: &'a Mutex<StateAwareTtl>,
}

impl Env for Live<'_> {
    fn health(&self) -> HealthView {
        HealthView::clone(&self.backend.shared_health_view())
    }

    fn policy_ttl(&self, health: &HealthView, configured: Duration) -> Duration {
        let now = self.backend.now();
        let mut t = self
            .ttl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.observe(now, health);
        t.ttl(now, configured)
    }

    fn locate(&self, ip: IpAddr) -> DnsClient {
        self.backend.locate(ip)
    }

    fn edge_location(&self) -> Option<LatLon> {
        self.backend.edge_location()
    }

    fn random(&self) -> u64 {
        self.backend.random()
    }
}

/// [`Env`] that remembers what an answer depended on: the health view and TTL it was given
/// and whether it drew a random number (then it cannot be reused).
struct Recording<'a> {
    live: Live<'a>,
    health: RefCell<Option<Arc<HealthView>>>,
    ttl: Cell<Option<Duration>>,
    random: Cell<bool>,
}

impl Env for Recording<'_> {
    fn health(&self) -> HealthView {
        let h = self.live.backend.shared_health_view();
        let view = HealthView::clone(&h);
        *self.health.borrow_mut() = Some(h);
        view
    }

    fn policy_ttl(&self, health: &HealthView, configured: Duration) -> Duration {
        let t = self.live.policy_ttl(health, configured);
        self.ttl.set(Some(t));
        t
    }

    fn locate(&self, ip: IpAddr) -> DnsClient {
        self.live.locate(ip)
    }

    fn edge_location(&self) -> Option<LatLon> {
        self.live.edge_location()
    }

    fn random(&self) -> u64 {
        self.random.set(true);
        self.live.random()
    }
}

/// Most answers one [`UdpCache`] holds; when full it starts over.
const CACHE_ENTRIES: usize = 4096;
/// Longest query whose answer is cached.
const CACHE_QUERY: usize = 512;

/// Encoded UDP answers of one UDP thread, for [`Authority::handle_udp`], keyed by the query's
/// bytes after its ID (flags, question, EDNS and Client Subnet) with the question name in
/// lower case, and the resolver address: a seeded hash of both finds the entry, which is used
/// only when both equal its own (two keys with one hash share a slot, the newer answer
/// replacing the older). An answer whose records are all A, AAAA or OPT owned by the question
/// name (a compression pointer to it) or the root serves every spelling of the name (0x20
/// case mixing): the builder would answer the same bytes with the question as asked, which a
/// hit copies in. Any other answer serves only the exact spelling it was built for.
/// The reference builder ([`answer::handle`]) is a pure function of those, the zone and what
/// the backend says (health view, state-aware TTL, GeoIP of the located address, randomness):
/// an entry is reused only for the same zone and, for policy answers, the same health view and
/// TTL, and answers that drew a random number (`weighted`) are never cached. A hit patches the
/// ID into the stored bytes: the same bytes the builder would produce, without decoding,
/// deciding or encoding again.
///
/// Datagrams received together form a batch ([`UdpCache::end_batch`] closes it): within one,
/// hits read the topology, the health view and the state-aware TTL once, and their metrics are
/// counted when the batch ends (or the cache is dropped), in one addition per counter.
pub struct UdpCache {
    zone: Option<Arc<Zone>>,
    /// The seed of [`UdpCache::slot`]'s hash, random per cache: the keys (query bytes) cannot
    /// be chosen to collide.
    seed: u64,
    /// Entries by [`UdpCache::slot`] (already a hash: the map does not hash it again).
    entries: HashMap<u64, Cached, BuildHasherDefault<Prehashed>>,
    /// The current query's key: its bytes after the ID, the question name in lower case.
    key: Vec<u8>,
    /// The metric counters of each cached answer (`Cached::counters` indexes here), with the
    /// hits not yet counted in them.
    counters: Vec<(Vec<::metrics::Counter>, u64)>,
    /// Indexes into `counters` whose count is not zero.
    uncounted: Vec<usize>,
    /// The current batch's reading of the backend.
    batch: Batch,
}

/// What the hits of one batch read from the backend, once.
#[derive(Default)]
struct Batch {
    /// The cache's zone is the current topology's.
    zone_current: bool,
    /// The health view and policy TTL answers are decided with.
    policy: Option<(Arc<HealthView>, Duration)>,
}

impl UdpCache {
    /// Ends a batch of datagrams: counts its hits in the metrics, and the next query reads the
    /// topology, health view and TTL from the backend again. Call it once per receive call
    /// (a batch should span microseconds, not seconds: it is the freshness of hits).
    pub fn end_batch(&mut self) {
        self.flush_counters();
        self.batch = Batch::default();
    }

    /// Adds the uncounted hits to their metric counters.
    fn flush_counters(&mut self) {
        for i in self.uncounted.drain(..) {
            let (counters, n) = &mut self.counters[i];
            for c in counters.iter() {
                c.increment(*n);
            }
            *n = 0;
        }
    }

    /// The slot of a query (`packet[2..]`, see [`UdpCache`]) from `resolver`: xxh3 of the
    /// query bytes (one call on the whole slice, the fast path for short inputs), seeded with
    /// the cache's seed and the resolver address.
    fn slot(&self, query: &[u8], resolver: IpAddr) -> u64 {
        let r = match resolver {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let b = a.to_bits();
                (b >> 64) as u64 ^ b as u64 ^ (1 << 63)
            }
        };
        let seed = self.seed ^ r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        xxhash_rust::xxh3::xxh3_64_with_seed(query, seed)
    }

    /// Forgets every answer (their uncounted hits are counted first).
    fn clear(&mut self) {
        self.flush_counters();
        self.entries.clear();
        self.counters.clear();
    }
}

impl Drop for UdpCache {
    fn drop(&mut self) {
        self.flush_counters();
    }
}

impl Default for UdpCache {
    fn default() -> Self {
        use std::hash::BuildHasher as _;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        UdpCache {
            zone: None,
            seed,
            entries: HashMap::default(),
            key: Vec::new(),
            counters: Vec::new(),
            uncounted: Vec::new(),
            batch: Batch::default(),
        }
    }
}

impl std::fmt::Debug for UdpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpCache")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// A [`Hasher`] for keys that are already hashes ([`UdpCache::slot`]): `u64` keys pass through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Other keys (none here) fold their bytes in.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

struct Cached {
    /// The query's key (see [`UdpCache::key`]) and the resolver address.
    key: Box<[u8]>,
    resolver: IpAddr,
    /// The query bytes after the ID as asked, when the answer serves only that spelling.
    exact: Option<Box<[u8]>>,
    /// The response, its ID to be patched.
    bytes: Box<[u8]>,
    /// Index of the metrics the query counts in `UdpCache::counters`.
    counters: usize,
    /// For policy answers: the health view and TTL they were decided with.
    policy: Option<(Arc<HealthView>, Duration)>,
}

/// Which answer a resolver gets, and why (`GET /v1/explain/dns`).
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The question's name.
    pub name: String,
    /// The question's type.
    pub qtype: String,
    /// The resolver address.
    pub resolver: IpAddr,
    /// The Client Subnet sent, if any (`addr/prefix`).
    pub subnet: Option<String>,
    /// The address that was located (the subnet's, else the resolver's).
    pub located: Option<IpAddr>,
    /// GeoIP's country for it.
    pub country: Option<String>,
    /// GeoIP's continent for it.
    pub continent: Option<String>,
    /// Prefix length of the GeoIP network holding it.
    pub network_prefix: Option<u8>,
    /// The response code (`NOERROR`, `NXDOMAIN`, …).
    pub rcode: &'static str,
    /// Whether the answer is authoritative.
    pub authoritative: bool,
    /// The answer section, one record per line in presentation format.
    pub answers: Vec<String>,
    /// The authority section.
    pub authority: Vec<String>,
    /// The ECS scope prefix length answered (with a subnet only).
    pub scope: Option<u8>,
    /// Each policy record set answered, with its decision.
    pub policy: Vec<PolicyTrace>,
}

impl Authority {
    /// An authority with no zone yet (built on first use) and a fresh TTL state (the start
    /// counts as a transition).
    pub fn new() -> Self {
        Authority {
            zone: ArcSwapOption::empty(),
            ttl: Mutex::new(StateAwareTtl::default()),
        }
    }

    /// The zone for the backend's current topology, rebuilt when it changed.
    pub fn zone(&self, backend: &dyn Backend) -> Result<Arc<Zone>, Error> {
        let topology = backend.topology();
        if let Some(z) = self.zone.load_full()
            && Arc::ptr_eq(z.topology(), &topology)
        {
            return Ok(z);
        }
        let z = Arc::new(Zone::new(topology)?);
        self.zone.store(Some(z.clone()));
        Ok(z)
    }

    /// Answers one packet from `resolver` (see [`answer::handle`]) and counts it in the
    /// metrics. `None`: send nothing.
    pub fn handle(
        &self,
        backend: &dyn Backend,
        packet: &[u8],
        resolver: IpAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let zone = match self.zone(backend) {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!(error = %e, "no zone to answer from");
                return None;
            }
        };
        let live = Live {
            backend,
            ttl: &self.ttl,
        };
        match answer::handle(&zone, packet, resolver, transport, &live) {
            Some((bytes, trace)) => {
                metrics::record(&trace);
                Some(bytes)
            }
            None => {
                metrics::dropped();
                None
            }
        }
    }

    /// [`Authority::handle`] for UDP through the thread's `cache`: the answer is written to
    /// `out` (`false`: send nothing). Byte for byte what [`Authority::handle`] would answer at
    /// the start of the cache's batch, with the same metrics once the batch ends (see
    /// [`UdpCache`]).
    pub fn handle_udp(
        &self,
        backend: &dyn Backend,
        packet: &[u8],
        resolver: IpAddr,
        cache: &mut UdpCache,
        out: &mut Vec<u8>,
    ) -> bool {
        // The zone of the current topology: what `zone()` would return, checked without
        // reference counting once per batch.
        let current = cache.batch.zone_current
            || cache
                .zone
                .as_ref()
                .is_some_and(|z| backend.is_current(z.topology()));
        if !current {
            match self.zone(backend) {
                Ok(z) => {
                    cache.clear();
                    cache.zone = Some(z);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no zone to answer from");
                    return false;
                }
            }
        }
        cache.batch.zone_current = true;
        let zone_ttl = cache
            .zone
            .as_ref()
            .expect("invariant: the current zone was set above")
            .ttl();
        let live = Live {
            backend,
            ttl: &self.ttl,
        };
        let cacheable = (12..=CACHE_QUERY).contains(&packet.len()) && packet[2] & 0x80 == 0;
        let name_end = question_name_end(packet);
        if cacheable {
            cache.key.clear();
            cache.key.extend_from_slice(&packet[2..]);
            if let Some(end) = name_end {
                cache.key[10..end - 2].make_ascii_lowercase();
            }
        }
        let slot = cacheable.then(|| cache.slot(&cache.key, resolver));
        if let Some(slot) = slot
            && let Some(hit) = cache.entries.get_mut(&slot)
            && hit.resolver == resolver
            && *hit.key == *cache.key
            && hit.exact.as_deref().is_none_or(|q| *q == packet[2..])
        {
            let fresh = match &mut hit.policy {
                None => true,
                Some((health, ttl)) => {
                    // What the builder asks for a policy answer, once per batch.
                    let (now, now_ttl) = cache.batch.policy.get_or_insert_with(|| {
                        let now = backend.shared_health_view();
                        let configured = Duration::from_secs(u64::from(zone_ttl));
                        let ttl = live.policy_ttl(&now, configured);
                        (now, ttl)
                    });
                    let same = Arc::ptr_eq(now, health) || **now == **health;
                    if same {
                        // The next hits compare pointers only.
                        *health = now.clone();
                    }
                    same && *now_ttl == *ttl
                }
            };
            if fresh {
                out.clear();
                out.extend_from_slice(&hit.bytes);
                out[..2].copy_from_slice(&packet[..2]);
                if hit.exact.is_none()
                    && let Some(end) = name_end
                {
                    // The question as asked (the builder echoes the query's).
                    out[12..end].copy_from_slice(&packet[12..end]);
                }
                let i = hit.counters;
                let (_, n) = &mut cache.counters[i];
                if *n == 0 {
                    cache.uncounted.push(i);
                }
                *n += 1;
                return true;
            }
            // Stale: the builder below asks the backend again (as a miss would).
        }
        let zone = cache
            .zone
            .clone()
            .expect("invariant: the current zone was set above");
        let slot = slot.map(|s| (cache, s, name_end));
        self.build_udp(&zone, live, packet, resolver, slot, out)
    }

    /// The reference builder for [`Authority::handle_udp`], storing the answer in `cache` at
    /// its slot (for the key in [`UdpCache::key`]; the question name ends at the offset given,
    /// when known) when it may be reused (see [`UdpCache`]).
    fn build_udp(
        &self,
        zone: &Zone,
        live: Live<'_>,
        packet: &[u8],
        resolver: IpAddr,
        cache: Option<(&mut UdpCache, u64, Option<usize>)>,
        out: &mut Vec<u8>,
    ) -> bool {
        let rec = Recording {
            live,
            health: RefCell::new(None),
            ttl: Cell::new(None),
            random: Cell::new(false),
        };
        let Some((bytes, trace)) = answer::handle(zone, packet, resolver, Transport::Udp, &rec)
        else {
            metrics::dropped();
            return false;
        };
        let counters = metrics::counters(&trace);
        for c in &counters {
            c.increment(1);
        }
        out.clear();
        out.extend_from_slice(&bytes);
        let Some((cache, slot, name_end)) = cache else {
            return true;
        };
        let policy = match (rec.health.into_inner(), rec.ttl.get()) {
            (None, None) => None,
            (Some(h), Some(t)) => Some((h, t)),
            _ => return true,
        };
        let keep = !rec.random.get()
            && matches!(
                trace.rcode,
                ResponseCode::NoError | ResponseCode::NXDomain | ResponseCode::Refused
            )
            && bytes.len() >= 2;
        if let Some(p) = &policy {
            // The newest reading: the batch's next hits are decided with it.
            cache.batch.policy = Some(p.clone());
        }
        if keep {
            if cache.entries.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            let mut bytes = bytes.into_boxed_slice();
            bytes[..2].copy_from_slice(&[0, 0]);
            let index = match cache.entries.get(&slot) {
                // A stale (or colliding) answer's place: its own uncounted hits are counted
                // first.
                Some(stale) => {
                    let i = stale.counters;
                    cache.flush_counters();
                    cache.counters[i] = (counters, 0);
                    i
                }
                None => {
                    cache.counters.push((counters, 0));
                    cache.counters.len() - 1
                }
            };
            cache.entries.insert(
                slot,
                Cached {
                    key: cache.key.as_slice().into(),
                    resolver,
                    exact: (!name_end.is_some_and(|end| any_spelling(&bytes, &packet[..end])))
                        .then(|| packet[2..].into()),
                    bytes,
                    counters: index,
                    policy,
                },
            );
        }
        true
    }

    /// Which answer a resolver at `resolver` gets for `name`/`qtype` (`A` when `None`), with
    /// Client Subnet `subnet` (`addr/prefix`, or a bare address meaning /32 or /128) when
    /// given, and why. The same code path as a real query; the health view and TTL state are
    /// the live ones.
    pub fn explain(
        &self,
        backend: &dyn Backend,
        name: &str,
        qtype: Option<&str>,
        resolver: IpAddr,
        subnet: Option<&str>,
    ) -> Result<Explanation, Error> {
        let zone = self.zone(backend)?;
        let bad = |message: String| Error::BadQuestion { message };
        let qname = Name::from_ascii(name).map_err(|e| {
            bad(format!(
                "name `{name}`: {e}; give a name like `www.example.test.`"
            ))
        })?;
        let qname = if qname.is_fqdn() {
            qname
        } else {
            zone::absolute(name, zone.origin())?
        };
        let qtype_text = qtype.unwrap_or("A").to_ascii_uppercase();
        let rtype = RecordType::from_str(&qtype_text).map_err(|_| {
            bad(format!(
                "type `{qtype_text}`: give A, AAAA, CNAME, TXT, MX, NS, SOA or ANY"
            ))
        })?;
        let mut req = Message::new(0, MessageType::Query, OpCode::Query);
        req.add_query(Query::query(qname.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        let ecs = match subnet {
            Some(s) => {
                let net = parse_subnet(s).ok_or_else(|| {
                    bad(format!(
                        "subnet `{s}`: give an address or a prefix like 81.2.69.0/24"
                    ))
                })?;
                edns.options_mut().insert(EdnsOption::Subnet(net));
                Some(net)
            }
            None => None,
        };
        req.set_edns(edns);
        let live = Live {
            backend,
            ttl: &self.ttl,
        };
        let (resp, trace) = answer::respond(&zone, &req, resolver, &live, true);
        let client = trace.client.clone().unwrap_or_default();
        Ok(Explanation {
            name: qname.to_ascii(),
            qtype: rtype.to_string(),
            resolver,
            subnet: ecs.map(|e| format!("{}/{}", e.addr(), e.source_prefix())),
            located: client.ip,
            country: client.country,
            continent: client.continent,
            network_prefix: client.network_prefix,
            rcode: metrics::rcode_label(trace.rcode),
            authoritative: resp.authoritative,
            answers: resp.answers.iter().map(ToString::to_string).collect(),
            authority: resp.authorities.iter().map(ToString::to_string).collect(),
            scope: trace.scope,
            policy: trace.policy,
        })
    }
}

/// Where the question name of a query with one question ends (the offset after its root
/// label); `None` when the packet has not exactly one question or its name is cut short,
/// compressed or has a label longer than 63 bytes (so no name byte but letters is `A`-`Z`).
fn question_name_end(packet: &[u8]) -> Option<usize> {
    if packet.get(4..6)? != [0, 1] {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*packet.get(i)?);
        if len == 0 {
            return Some(i + 1);
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
}

/// Whether `response` answers every spelling of the question name alike apart from the
/// question: it echoes the one question of `query` (given up to the end of its name) and each
/// record is A, AAAA or OPT, owned by the root or by a compression pointer to the question name
/// (offset 12), so no byte after the question depends on the name's case.
fn any_spelling(response: &[u8], query: &[u8]) -> bool {
    let name_end = query.len();
    if response.get(12..name_end) != query.get(12..) {
        return false;
    }
    let count = |at: usize| {
        response
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (Some(1), Some(an), Some(ns), Some(ar)) = (count(4), count(6), count(8), count(10)) else {
        return false;
    };
    let mut i = name_end + 4;
    for _ in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        let owner = match response.get(i) {
            Some(0) => 1,
            Some(0xC0) if response.get(i + 1) == Some(&12) => 2,
            _ => return false,
        };
        i += owner;
        let Some(rtype) = count(i) else {
            return false;
        };
        if !matches!(rtype, 1 | 28 | 41) {
            return false;
        }
        let Some(rdlength) = count(i + 8) else {
            return false;
        };
        i += 10 + usize::from(rdlength);
    }
    i == response.len()
}

/// `addr/prefix` (host bits cleared) or a bare address (a full-length prefix) as a Client
/// Subnet option.
fn parse_subnet(s: &str) -> Option<ClientSubnet> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let addr = answer::mask(addr, prefix)?;
    Some(ClientSubnet::new(addr, prefix, 0))
}
