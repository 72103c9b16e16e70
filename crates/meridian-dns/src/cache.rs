//! The UDP answer cache: [`UdpCache`], one per UDP thread, and [`Authority::handle_udp`],
//! which answers from it or from the reference builder ([`answer::handle`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use meridian_core::config::LatLon;
use meridian_core::geodns::DnsClient;
use meridian_core::routing::HealthView;

use meridian_core::routing::Outcome;

use crate::answer::{self, Env, PolicyTrace, Trace};
use crate::shape::Shape;
use crate::{Authority, Backend, GeoScopes, Live, Transport, Zone, metrics};

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
/// A second level serves queries that differ only in the Client Subnet address (clients of
/// one resolver, or of many: Google's resolvers send each client's /24) or in the resolver
/// address: an answer is stored under the query's *shape* (its key with the subnet address
/// zeroed; see [`Shape`]) and, when a policy record that looks at the client's location was
/// answered, the facts GeoIP gave for the located address that such a decision reads (country
/// and continent, and coordinates when a record ranks by `proximity`). A hit copies that
/// answer with the ID, the question as asked, the query's subnet address in the ECS echo and,
/// when the answer was routed by location, the ECS scope (the located address's GeoIP network
/// prefix) patched in — again the builder's bytes: its answer depends on the located address
/// only through those facts and that prefix. Only answers that serve every spelling are kept
/// there.
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
    /// Second-level entries by [`UdpCache::shaped_slot`].
    shaped: HashMap<u64, Shaped, BuildHasherDefault<Prehashed>>,
    /// The current query's shape key: [`UdpCache::key`] with the subnet address zeroed.
    shape_key: Vec<u8>,
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
    /// The zone this cache answers from; only after [`Authority`]'s UDP path has made it
    /// current for the batch.
    fn current_zone(&self) -> &Arc<Zone> {
        self.zone
            .as_ref()
            .expect("invariant: the UDP path sets the zone before reading it")
    }

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
        self.shaped.clear();
        self.counters.clear();
    }

    /// The second-level slot of a shape key ([`UdpCache::shape_key`]) with the client facts
    /// the answer depends on (`None`: it depends on none).
    fn shaped_slot(&self, key: &[u8], facts: Option<&Facts>) -> u64 {
        let seed = self.seed.rotate_left(29) ^ facts.map_or(0, Facts::hash);
        xxhash_rust::xxh3::xxh3_64_with_seed(key, seed)
    }

    /// Counts a hit of the answer whose metrics are at `i` (when the batch ends).
    fn count_hit(&mut self, i: usize) {
        let (_, n) = &mut self.counters[i];
        if *n == 0 {
            self.uncounted.push(i);
        }
        *n += 1;
    }

    /// A place in `counters` for a new answer's metrics: the `stale` answer's it replaces (its
    /// uncounted hits are counted first), else a new one.
    fn counters_at(&mut self, stale: Option<usize>, counters: Vec<::metrics::Counter>) -> usize {
        match stale {
            Some(i) => {
                self.flush_counters();
                self.counters[i] = (counters, 0);
                i
            }
            None => {
                self.counters.push((counters, 0));
                self.counters.len() - 1
            }
        }
    }

    /// Answers `q` into `out` from the second level when an answer for its shape (in
    /// [`UdpCache::shape_key`]) and `client` (its facts, GeoIP network prefix and address;
    /// `None`: look for an answer that depends on no client facts) is there and fresh.
    fn shaped_hit(
        &mut self,
        q: &ShapedQuery<'_>,
        client: Option<(&Facts, Option<u8>, IpAddr)>,
        live: &Live<'_>,
        zone_ttl: u32,
        out: &mut Vec<u8>,
    ) -> bool {
        let facts = client.map(|(f, _, _)| f);
        let slot = self.shaped_slot(&self.shape_key, facts);
        let Some(hit) = self.shaped.get_mut(&slot) else {
            return false;
        };
        if *hit.key != *self.shape_key
            || hit.facts.as_ref() != facts
            || !fresh(&mut hit.policy, &mut self.batch, live, zone_ttl)
        {
            return false;
        }
        out.clear();
        out.extend_from_slice(&hit.bytes);
        out[..2].copy_from_slice(&q.packet[..2]);
        out[12..q.name_end].copy_from_slice(&q.packet[12..q.name_end]);
        q.shape.patch_address(q.packet, out);
        if let (Some(at), Some((_, prefix, ip))) = (hit.scope_at, client) {
            out[at] = scope(hit.scopes.as_deref(), ip, prefix);
        }
        let i = hit.counters;
        self.count_hit(i);
        true
    }
}

/// Whether an answer decided with `policy` (the health view and TTL of its policy records;
/// `None`: it has none) is what the builder would answer now: the batch's reading of the
/// backend (taken once per batch) is the same. An equal view is adopted by pointer, so the
/// next hits compare pointers only.
fn fresh(
    policy: &mut Option<(Arc<HealthView>, Duration)>,
    batch: &mut Batch,
    live: &Live<'_>,
    zone_ttl: u32,
) -> bool {
    let Some((health, ttl)) = policy else {
        return true;
    };
    let (now, now_ttl) = batch.policy.get_or_insert_with(|| {
        let now = live.backend.shared_health_view();
        let configured = Duration::from_secs(u64::from(zone_ttl));
        let ttl = live.policy_ttl(&now, configured);
        (now, ttl)
    });
    let same = Arc::ptr_eq(now, health) || **now == **health;
    if same {
        *health = now.clone();
    }
    same && *now_ttl == *ttl
}

/// A query with a shape, as a second-level hit patches it in.
struct ShapedQuery<'p> {
    shape: Shape,
    packet: &'p [u8],
    /// Where its question name ends.
    name_end: usize,
}

/// What GeoIP said about a client that a routing decision reads: country and continent, and
/// the coordinates (as bits) only when some policy record ranks by `proximity`.
#[derive(Clone, Debug, PartialEq)]
struct Facts {
    country: Option<String>,
    continent: Option<String>,
    coordinates: Option<(u64, u64)>,
}

impl Facts {
    fn of(client: DnsClient, coordinates: bool) -> Facts {
        Facts {
            country: client.country,
            continent: client.continent,
            coordinates: client
                .location
                .filter(|_| coordinates)
                .map(|l| (l.lat.to_bits(), l.lon.to_bits())),
        }
    }

    /// A hash of the facts (absent ones differ from empty ones), for [`UdpCache::shaped_slot`].
    fn hash(&self) -> u64 {
        let text = |t: &Option<String>, seed: u64| {
            t.as_deref().map_or(seed.rotate_left(7), |t| {
                xxhash_rust::xxh3::xxh3_64_with_seed(t.as_bytes(), seed)
            })
        };
        let (lat, lon) = self.coordinates.unwrap_or((u64::MAX, u64::MAX));
        text(&self.country, 1)
            ^ text(&self.continent, 2).rotate_left(21)
            ^ lat.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ lon.rotate_left(32).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
    }
}

/// A second-level answer (see [`UdpCache`]).
struct Shaped {
    /// The shape key it answers.
    key: Box<[u8]>,
    /// The client facts it was decided with; `None` when no decision read any.
    facts: Option<Facts>,
    /// The response, its ID, question, subnet address and (with `scope_at`) scope patched on
    /// each hit.
    bytes: Box<[u8]>,
    /// Where the ECS scope octet is when it depends on the located address (see [`scope`]).
    scope_at: Option<usize>,
    /// The widest-scope map of the located decision, if it has one.
    scopes: Option<Arc<dyn GeoScopes>>,
    /// Index of the metrics the query counts in `UdpCache::counters`.
    counters: usize,
    /// For policy answers: the health view and TTL they were decided with.
    policy: Option<(Arc<HealthView>, Duration)>,
}

impl Shaped {
    /// The second-level entry for the builder's `bytes` (ID zeroed) and `trace` answering a
    /// query of `miss`'s shape, whose ECS echo's scope octet is at `echo` (see
    /// [`Shape::echo`]); `None` when its located decisions have different scope maps or the
    /// scope it answered is not the one a hit would patch in. Its metrics and policy are to be
    /// set by the caller.
    fn new(
        miss: &ShapedMiss,
        echo: Option<usize>,
        trace: &Trace,
        bytes: &[u8],
        key: &[u8],
    ) -> Option<Shaped> {
        let located = trace.policy.iter().any(|p| p.located);
        let routed = answer::outcome_name(Outcome::Routed);
        let mut by_location = trace
            .policy
            .iter()
            .filter(|p| p.located && p.outcome == routed);
        let first = by_location.next();
        let scopes = first.and_then(|p| p.scopes.clone());
        let same = |p: &PolicyTrace| match (&p.scopes, &scopes) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !by_location.all(same) {
            return None;
        }
        let by_address = miss.shape.subnet.is_some_and(|s| s.source > 0) && first.is_some();
        let scope_at = match echo {
            Some(at) if by_address => {
                let want = scope(scopes.as_deref(), miss.located, miss.prefix);
                if bytes.get(at) != Some(&want) {
                    return None;
                }
                Some(at)
            }
            _ => None,
        };
        Some(Shaped {
            key: key.into(),
            facts: located.then(|| miss.facts.clone()),
            bytes: bytes.into(),
            scope_at,
            scopes,
            counters: 0,
            policy: None,
        })
    }
}

/// What a cache miss of [`Authority::handle_udp`] hands the builder to store its answer.
struct Miss<'c> {
    cache: &'c mut UdpCache,
    /// The first-level slot.
    slot: u64,
    name_end: Option<usize>,
    /// The query's shape and client, when it has a shape.
    shaped: Option<ShapedMiss>,
}

/// A query's shape, its located address and what GeoIP said about it.
struct ShapedMiss {
    shape: Shape,
    facts: Facts,
    prefix: Option<u8>,
    located: IpAddr,
}

/// The ECS scope of an answer routed by where the client at `ip` is, whose GeoIP network has
/// `prefix`: what the builder answers ([`answer::scope_prefix`], 0 when unknown).
fn scope(scopes: Option<&dyn GeoScopes>, ip: IpAddr, prefix: Option<u8>) -> u8 {
    answer::scope_prefix(scopes, ip, prefix).unwrap_or(0)
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
            shaped: HashMap::default(),
            shape_key: Vec::new(),
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

impl Authority {
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
        // Read from the zone without taking a reference: hits need only these.
        let (zone_ttl, coordinates) = {
            let zone = cache.current_zone();
            (zone.ttl(), zone.uses_coordinates())
        };
        let live = Live {
            backend,
            ttl: &self.ttl,
        };
        let cacheable = (12..=CACHE_QUERY).contains(&packet.len()) && packet[2] & 0x80 == 0;
        let name_end = question_name_end(packet);
        if !cacheable {
            let zone = Arc::clone(cache.current_zone());
            return self.build_udp(&zone, live, packet, resolver, None, out);
        }
        cache.key.clear();
        cache.key.extend_from_slice(&packet[2..]);
        if let Some(end) = name_end {
            cache.key[10..end - 2].make_ascii_lowercase();
        }
        let slot = cache.slot(&cache.key, resolver);
        if let Some(hit) = cache.entries.get_mut(&slot)
            && hit.resolver == resolver
            && *hit.key == *cache.key
            && hit.exact.as_deref().is_none_or(|q| *q == packet[2..])
            && fresh(&mut hit.policy, &mut cache.batch, &live, zone_ttl)
        {
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
            cache.count_hit(i);
            return true;
        }
        // The second level: the answer for this query's shape and where GeoIP puts its client.
        let shape = name_end.and_then(|end| Some((Shape::of(packet, end)?, end)));
        let mut shaped = None;
        if let Some((shape, end)) = shape {
            cache.shape_key.clear();
            cache.shape_key.extend_from_slice(&cache.key);
            shape.mask_key(&mut cache.shape_key);
            let q = ShapedQuery {
                shape,
                packet,
                name_end: end,
            };
            if cache.shaped_hit(&q, None, &live, zone_ttl, out) {
                return true;
            }
            let located = shape.located(resolver);
            let client = backend.locate(located);
            let prefix = client.network_prefix;
            let facts = Facts::of(client, coordinates);
            if cache.shaped_hit(&q, Some((&facts, prefix, located)), &live, zone_ttl, out) {
                return true;
            }
            shaped = Some(ShapedMiss {
                shape,
                facts,
                prefix,
                located,
            });
        }
        let zone = Arc::clone(cache.current_zone());
        let miss = Miss {
            cache,
            slot,
            name_end,
            shaped,
        };
        self.build_udp(&zone, live, packet, resolver, Some(miss), out)
    }

    /// The reference builder for [`Authority::handle_udp`], storing the answer in the cache
    /// of `miss` when it may be reused (see [`UdpCache`]).
    fn build_udp(
        &self,
        zone: &Zone,
        live: Live<'_>,
        packet: &[u8],
        resolver: IpAddr,
        miss: Option<Miss<'_>>,
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
        let Some(Miss {
            cache,
            slot,
            name_end,
            shaped,
        }) = miss
        else {
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
        if !keep {
            return true;
        }
        if cache.entries.len() >= CACHE_ENTRIES || cache.shaped.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        let mut bytes = bytes.into_boxed_slice();
        bytes[..2].copy_from_slice(&[0, 0]);
        let spelled = name_end.is_some_and(|end| any_spelling(&bytes, &packet[..end]));
        if let Some(miss) = shaped
            && spelled
            && let Some(echo) = miss.shape.echo(packet, &bytes)
            && let Some(shaped) = Shaped::new(&miss, echo, &trace, &bytes, &cache.shape_key)
        {
            let slot = cache.shaped_slot(&shaped.key, shaped.facts.as_ref());
            let stale = cache.shaped.get(&slot).map(|s| s.counters);
            let counters = cache.counters_at(stale, counters.clone());
            cache.shaped.insert(
                slot,
                Shaped {
                    counters,
                    policy: policy.clone(),
                    ..shaped
                },
            );
        }
        let stale = cache.entries.get(&slot).map(|c| c.counters);
        let counters = cache.counters_at(stale, counters);
        cache.entries.insert(
            slot,
            Cached {
                key: cache.key.as_slice().into(),
                resolver,
                exact: (!spelled).then(|| packet[2..].into()),
                bytes,
                counters,
                policy,
            },
        );
        true
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
