//! The resolved topology: plain structs with every default filled in and every cross-reference
//! checked. A value of these types only comes out of [`parse`](super::parse), so code that holds a
//! `Topology` may rely on the guarantees documented here without checking again.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::KeyspaceType;

/// The whole topology file (`meridian.toml`), resolved.
///
/// Guarantees: at least one region; names of regions, zones, edges and keyspaces are unique in
/// their kind; every region name mentioned anywhere (zones, routing, residency, DNS) is defined;
/// no two listeners (edge `listen`/`admin`, region `node`, app backends, DNS `listen`) share an
/// address, except wildcard binds (`0.0.0.0:p`, `[::]:p`), which name no particular host.
#[derive(Clone, Debug)]
pub struct Topology {
    /// `[cluster]`: identity and shared secret.
    pub cluster: Cluster,
    /// `[zones]`: jurisdictions for data residency, in file order. Default: none.
    pub zones: Vec<Zone>,
    /// `[[region]]`: the regions, in file order. Never empty.
    pub regions: Vec<Region>,
    /// `[routing]`: how edges choose regions. Default: see [`Routing`].
    pub routing: Routing,
    /// `[[edge]]`: the points of presence, in file order. Default: none.
    pub edges: Vec<Edge>,
    /// `[health]`: active health checking of app backends. Default: see [`Health`].
    pub health: Health,
    /// `[[keyspace]]`: the keyspaces, in file order. Default: none.
    pub keyspaces: Vec<Keyspace>,
    /// `[dns]`: GeoDNS served by the edges; `None` when the section is absent.
    pub dns: Option<Dns>,
    /// `[limits]`: request size limits and retention. Default: see [`Limits`].
    pub limits: Limits,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name (`[a-z0-9][a-z0-9-]*`). Required.
    pub name: String,
    /// File holding the shared secret that authenticates region↔region and admin calls, as
    /// written (relative paths are relative to the config file; the binary resolves them).
    /// Default: `None` (no authentication — for loopback labs only).
    pub secret_file: Option<PathBuf>,
}

/// One `[zones]` entry: a jurisdiction and the regions in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The zone's name (`[a-z0-9][a-z0-9-]*`).
    pub name: String,
    /// Its regions, in file order: non-empty, each defined, none in another zone.
    pub regions: Vec<String>,
}

/// A point on the globe, in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatLon {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

/// One `[[region]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// The region's name (`[a-z0-9][a-z0-9-]*`), unique.
    pub name: String,
    /// Where the region is, for the `proximity` policy. Default: `None` (required by `proximity`).
    pub location: Option<LatLon>,
    /// URL of the region's data node, exactly as written; always `http://host:port` with an
    /// optional trailing `/`. Required.
    pub node: String,
    /// URLs of the app backends the edge sends this region's traffic to, as written; each is
    /// `http://host:port` or `https://host:port`. Default: empty (a data-only region).
    pub app: Vec<String>,
    /// The HTTP version the edge speaks to [`Region::app`]. Default: [`AppProtocol::Http1`].
    pub app_protocol: AppProtocol,
    /// What GeoDNS answers for this region. Default: empty.
    pub addresses: Vec<IpAddr>,
    /// Relative serving capacity, 1..=1_000_000: a `weighted` policy draws a region by its
    /// weight × capacity. Default: 100.
    pub capacity: u32,
}

impl Region {
    /// The `host:port` of [`Region::node`], for binding or connecting (IPv6 hosts keep their
    /// brackets, e.g. `[::1]:7601`).
    pub fn node_addr(&self) -> &str {
        let rest = self.node.strip_prefix("http://").unwrap_or(&self.node);
        rest.strip_suffix('/').unwrap_or(rest)
    }
}

/// The HTTP version an edge speaks to a region's app backends (`[[region]] app_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.1 over pooled keep-alive connections (`"http1"`).
    Http1,
    /// HTTP/2 (`"http2"`): with prior knowledge over `http://`, negotiated by ALPN over
    /// `https://`; one multiplexed connection per backend and proxy thread. For gRPC.
    Http2,
}

/// A routing policy, chosen by name (`latency`, `proximity`, `geo`, `weighted`, `failover`).
/// Trees of policies are composed with pools ([`Pool`]): each level of the tree has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Lowest measured round-trip time (EWMA).
    Latency,
    /// Shortest great-circle distance; every region must have a `location`.
    Proximity,
    /// Country/continent map with a default (`[routing.geo]`).
    Geo,
    /// Random by `[routing.weights]`.
    Weighted,
    /// The first healthy region of `[routing] order`.
    Failover,
}

impl Policy {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Latency => "latency",
            Policy::Proximity => "proximity",
            Policy::Geo => "geo",
            Policy::Weighted => "weighted",
            Policy::Failover => "failover",
        }
    }
}

/// Where writes go (`[routing] writes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writes {
    /// `"any"`: every region accepts writes (the default).
    Any,
    /// `"home"`: follow the key's or user's home region.
    Home,
    /// `"primary:<region>"`: one writer region, reads everywhere.
    Primary(String),
}

/// What to do when every candidate region is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllDown {
    /// `"fail-open"`: ignore health and route as if every region were up (the default).
    FailOpen,
    /// `"fail-closed"`: answer an error (HTTP 503; DNS NODATA).
    FailClosed,
    /// `"fallback:<region>"`: send everything to this region.
    Fallback(String),
}

/// The seven continent codes of GeoIP databases (MaxMind's `continent.code`): Africa,
/// Antarctica, Asia, Europe, North America, Oceania, South America. As a bare geo map key each
/// means the continent, never the country with the same ISO code (Afghanistan `AF`, American
/// Samoa `AS`, Namibia `NA`, Saudi Arabia `SA`); those are written `country:NA`.
pub const CONTINENT_CODES: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// A country/continent → region map (`[routing.geo]`, or a DNS record's `geo`). Countries and
/// continents are separate namespaces, so a rule for one never catches a client of the other
/// that happens to share its code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoMap {
    /// Two-letter upper-case ISO 3166-1 country code (`DE`, `NA` for Namibia) → region name.
    pub countries: BTreeMap<String, String>,
    /// One of [`CONTINENT_CODES`] (`EU`, `NA` for North America) → region name.
    pub continents: BTreeMap<String, String>,
    /// The region for clients no rule matches (key `default`). Always set when the map is used
    /// by a `geo` policy.
    pub default: Option<String>,
}

impl GeoMap {
    /// The region for the client's country, else for its continent, else the default.
    pub fn lookup(&self, country: Option<&str>, continent: Option<&str>) -> Option<&str> {
        country
            .and_then(|c| self.countries.get(c))
            .or_else(|| continent.and_then(|c| self.continents.get(c)))
            .or(self.default.as_ref())
            .map(String::as_str)
    }

    /// Whether the map has no country or continent rule (at most a default).
    pub fn has_no_rules(&self) -> bool {
        self.countries.is_empty() && self.continents.is_empty()
    }

    /// Every rule as its key in the topology file (`DE`, `EU`, `country:NA`) and its region,
    /// countries first, each namespace in code order.
    pub fn rules(&self) -> impl Iterator<Item = (String, &str)> {
        let countries = self.countries.iter().map(|(code, region)| {
            let key = if CONTINENT_CODES.contains(&code.as_str()) {
                format!("country:{code}")
            } else {
                code.clone()
            };
            (key, region.as_str())
        });
        let continents = self
            .continents
            .iter()
            .map(|(code, region)| (code.clone(), region.as_str()));
        countries.chain(continents)
    }
}

/// [`Routing::max_requests_per_backend`] when the file gives none (Envoy's default).
pub const MAX_REQUESTS_PER_BACKEND: usize = 1024;

/// `[routing]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// The policy. Default: [`Policy::Latency`].
    pub policy: Policy,
    /// Where writes go. Default: [`Writes::Any`].
    pub writes: Writes,
    /// What to do when all regions are down. Default: [`AllDown::FailOpen`].
    pub all_down: AllDown,
    /// Whether the edge sets a region cookie for read-your-writes. Default: `true`.
    pub sticky: bool,
    /// `[routing.geo]`. Default: empty. Non-empty with a default when `policy = "geo"`.
    pub geo: GeoMap,
    /// `[routing.weights]`: percent 0..=100 for every region and pool (unlisted ones get 100);
    /// not every region 0. A pool's weight is its share when its level is `weighted`.
    pub weights: BTreeMap<String, u8>,
    /// Failover order of the top level of the tree: its members (regions outside every pool,
    /// and pools inside no other pool) named in `order` first, then every other in file order
    /// (a pool where its first region is). Always lists every top-level member exactly once;
    /// without pools, every region.
    pub order: Vec<String>,
    /// Retries across regions may be at most this percent of requests (key `retry_budget`),
    /// plus a reserve of 10, so a failover never multiplies the load on the survivors.
    /// 0..=100; 0 turns request-level retries off. Default: 20.
    pub retry_budget: u8,
    /// Requests an edge has in flight to one backend at most (from sending the request until
    /// its response head, or its failure); a request finding every backend of a region at the
    /// limit goes on to the next region of its decision before it is sent — no retry spent —
    /// and is answered 503 `overloaded` when no region has room (Envoy's circuit breaker
    /// `max_requests`). 1..=1000000. Default: [`MAX_REQUESTS_PER_BACKEND`].
    pub max_requests_per_backend: usize,
    /// `[routing.pool.<name>]`, in file order. Default: empty (a flat list of regions).
    pub pools: Vec<Pool>,
    /// The zone every decision stays inside, as if each client carried this zone claim. Set
    /// from a DNS record's `residency`; `[routing]` itself has no such key (a request's zone
    /// comes from its verified claim). Default: `None`.
    pub residency: Option<String>,
}

impl Routing {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pool that lists `member` (a region or a pool) among its members; `None` at the top
    /// level.
    pub fn parent_of(&self, member: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| p.members.iter().any(|m| m == member))
    }

    /// Whether a decision by these rules depends on where the client is: some level of the
    /// tree uses `proximity`, or `geo` with at least one country or continent rule.
    pub fn located(&self) -> bool {
        let level = |policy: Policy, geo: &GeoMap| match policy {
            Policy::Geo => !geo.has_no_rules(),
            Policy::Proximity => true,
            Policy::Latency | Policy::Weighted | Policy::Failover => false,
        };
        level(self.policy, &self.geo) || self.pools.iter().any(|p| level(p.policy, &p.geo))
    }

    /// The geo maps a decision by these rules consults, top level first. Guarantee: when the
    /// rules do not use coordinates ([`Routing::uses_coordinates`]), two clients for which
    /// every one of these maps looks up the same member get the same decision under the same
    /// health view — that is all a decision reads of where a client is.
    pub fn geo_levels(&self) -> impl Iterator<Item = &GeoMap> {
        let top = (self.policy == Policy::Geo).then_some(&self.geo);
        let pools = self.pools.iter().filter(|p| p.policy == Policy::Geo);
        top.into_iter().chain(pools.map(|p| &p.geo))
    }

    /// Whether a decision by these rules reads the client's coordinates (some level of the
    /// tree uses `proximity`); otherwise only its country and continent can matter.
    pub fn uses_coordinates(&self) -> bool {
        self.policy == Policy::Proximity || self.pools.iter().any(|p| p.policy == Policy::Proximity)
    }
}

/// `[routing.pool.<name>]`: regions (or smaller pools) that the level above ranks as one
/// member, ordered among themselves by the pool's own policy — how trees of policies are
/// composed (e.g. `geo` between continents, `latency` inside each).
///
/// Guarantees (checked when the file is read): the name is unique among regions and pools;
/// `members` is non-empty; every region and pool is a member of at most one pool and no pool
/// contains itself; `geo` names only members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name (`[a-z0-9][a-z0-9-]*`). Required.
    pub name: String,
    /// Regions and pools in the pool, in their failover order. Required.
    pub members: Vec<String>,
    /// How the members are ordered. Default: [`Policy::Latency`].
    pub policy: Policy,
    /// Country/continent → member, with a default (only and always with `policy = "geo"`).
    /// Default: empty.
    pub geo: GeoMap,
}

/// One `[[edge]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// The edge's name (`[a-z0-9][a-z0-9-]*`), unique.
    pub name: String,
    /// Public listener. Required.
    pub listen: SocketAddr,
    /// Admin API listener. Required.
    pub admin: SocketAddr,
    /// Where the edge is. Default: `None`.
    pub location: Option<LatLon>,
    /// MaxMind database path, as written. Default: `None` (no GeoIP).
    pub geoip: Option<PathBuf>,
    /// CIDR prefixes (as written, validated, no host bits set) whose `X-Forwarded-For` is
    /// believed. Default: empty.
    pub trusted_proxies: Vec<String>,
    /// How long an HTTP/1 client of the edge has to send each request's head (from the
    /// accept, or from its previous response) before its connection is closed, 1s..=1h.
    /// Default: 30s (haproxy's `timeout http-request`, nginx's `client_header_timeout`).
    pub client_header_timeout: Duration,
    /// How long a connection that switched protocols (a WebSocket) may carry no byte either
    /// way before the edge closes both sides, 1s..=1d. Default: 1h (haproxy's `timeout
    /// tunnel`, Envoy's stream idle timeout for upgrades).
    pub tunnel_idle_timeout: Duration,
    /// How long the edge waits for a backend's response head (from sending the request) before
    /// the attempt counts as failed (a retry elsewhere when safe, else 504), 100ms..=1h.
    /// Default: 30s.
    pub upstream_timeout: Duration,
    /// Where the edge writes a JSON line per request, as written (`-`: standard output; a
    /// relative path is relative to the topology file). Default: `None` (no access log).
    pub access_log: Option<PathBuf>,
    /// Client connections the edge serves at once, over all its threads, 1..=1000000; past
    /// them it accepts no more until one closes (new ones wait in the kernel's listen
    /// backlog), so a flood of clients cannot take the file descriptors its backend
    /// connections need (haproxy's `maxconn`). Default: [`EDGE_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

/// [`Edge::max_connections`] when the file gives none.
pub const EDGE_MAX_CONNECTIONS: usize = 10_000;
/// [`Edge::client_header_timeout`] when the file gives none.
pub const EDGE_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// [`Edge::upstream_timeout`] when the file gives none.
pub const EDGE_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// [`Edge::tunnel_idle_timeout`] when the file gives none.
pub const EDGE_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// `[health]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Path probed on every app backend. Default: `/health/ready`.
    pub path: String,
    /// Time between probes. Default: 1s. Never zero.
    pub interval: Duration,
    /// Probe timeout. Default: 500ms. Never zero, never more than `interval`.
    pub timeout: Duration,
    /// Consecutive failures before a backend is marked down. Default: 3. At least 1.
    pub down_after: u32,
    /// Consecutive successes before it is marked up again. Default: 5. At least 1.
    pub up_after: u32,
    /// Status codes a probe counts as healthy (key `expect`, like `"200-299,304"`): inclusive
    /// ranges within 100..=599, in the order written. Default: 200–299. Never empty.
    pub expect: Vec<(u16, u16)>,
    /// When set, backends of regions with `app_protocol = "http2"` are probed with the gRPC
    /// health-checking protocol (`grpc.health.v1.Health/Check`) for this service (`""`: the
    /// server as a whole) instead of `GET path`: healthy is `SERVING`. Default: `None`.
    pub grpc_service: Option<String>,
}

impl Health {
    /// Whether a probe answered with `status` counts as a success.
    pub fn expects(&self, status: u16) -> bool {
        self.expect
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// How a keyspace's writes replicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Acknowledged after a durable local commit, then shipped (the default).
    Async,
    /// Acknowledged after `quorum` regions have durably applied it.
    Sync,
    /// Never leaves the region.
    Local,
}

impl Replication {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Async => "async",
            Replication::Sync => "sync",
            Replication::Local => "local",
        }
    }
}

/// Which regions accept writes to a keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// Every region (multi-writer; the default).
    Any,
    /// Only the key's home region.
    Home,
}

impl Writer {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Writer::Any => "any",
            Writer::Home => "home",
        }
    }
}

/// Where a keyspace's keys may be held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Only these regions (defined, no duplicates, non-empty).
    Regions(Vec<String>),
    /// Only the regions of this zone (defined).
    Zone(String),
    /// Only the regions of the key's home region's zone (`"home-zone"`; zones are defined).
    HomeZone,
}

/// One `[[keyspace]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace {
    /// The keyspace's name (`[a-z0-9][a-z0-9_-]*`), unique.
    pub name: String,
    /// The value type (key `type`). Required.
    pub kind: KeyspaceType,
    /// Default: [`Replication::Async`].
    pub replication: Replication,
    /// For `sync` keyspaces always `Some(n)` with 1 <= n <= the regions that may hold a key
    /// (for `home-zone`, the smallest zone); default the majority of them. `None` otherwise.
    pub quorum: Option<usize>,
    /// How long a sync write waits for its quorum. Default: 2s. Never zero.
    pub sync_timeout: Duration,
    /// Default: [`Writer::Any`].
    pub writer: Writer,
    /// Whether a non-home region forwards writes to the home region instead of answering 421.
    /// Only `true` with `writer = "home"`. Default: `false`.
    pub forward: bool,
    /// Default time to live of values. Default: `None` (values live until deleted). Never zero.
    pub ttl: Option<Duration>,
    /// Where keys may be held. Default: `None` (every region).
    pub residency: Option<Residency>,
}

/// A DNS record type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Alias to another name.
    Cname,
    /// Text.
    Txt,
    /// Mail exchanger (`"<preference> <host>"`).
    Mx,
    /// Name server.
    Ns,
}

impl RecordType {
    /// The name used in the file (`A`, `AAAA`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Txt => "TXT",
            RecordType::Mx => "MX",
            RecordType::Ns => "NS",
        }
    }
}

/// One `[[dns.record]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// Owner name relative to the zone; `@` is the apex. Required.
    pub name: String,
    /// The record type (key `type`). Required.
    pub kind: RecordType,
    /// Static answers, validated for the type (A: IPv4, AAAA: IPv6, CNAME: exactly one name,
    /// MX: `"<preference> <host>"`, NS: names, TXT: up to 255 bytes each). Non-empty unless
    /// `policy` is set; empty when it is.
    pub values: Vec<String>,
    /// When set (A/AAAA only), answers with the addresses of the regions this policy picks.
    /// Default: `None` (static values).
    pub policy: Option<Policy>,
    /// Geo map overriding `[routing.geo]` (only with `policy = "geo"`). Default: `None`.
    pub geo: Option<GeoMap>,
    /// Overrides `[routing] all_down` (only with a policy). Default: `None` (use routing's).
    pub all_down: Option<AllDown>,
    /// Residency-pinned answers (only with a policy): the name of a `[zones]` zone; answers
    /// only ever name that zone's regions, even when all of them are down. Default: `None`.
    pub residency: Option<String>,
}

/// `[dns]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// UDP and TCP listener. Required.
    pub listen: SocketAddr,
    /// The authoritative zone, absolute (ends with `.`). Required.
    pub zone: String,
    /// TTL of answers. Default: 30s. Never zero.
    pub ttl: Duration,
    /// Names of the zone's name servers, absolute. Required, non-empty.
    pub nameservers: Vec<String>,
    /// The records, in file order. Default: empty.
    pub records: Vec<DnsRecord>,
    /// How many threads answer UDP, each on its own socket, 1..=64. Read when the server
    /// starts. Default (`None`): one per core, at most 8.
    pub udp_threads: Option<usize>,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes, 1..=65536. Default: 1024.
    pub max_key_bytes: usize,
    /// Largest value in bytes, 1..=67108864 (64 MiB). Default: 1048576 (1 MiB).
    pub max_value_bytes: usize,
    /// How long an `Idempotency-Key` outcome is kept, 1s..=30d. Default: 24h.
    pub idempotency_ttl: Duration,
    /// How long a `consistency=session` read may wait for its token's writes, 0..=60s
    /// (0: forward at once). Default: 2s.
    pub session_wait: Duration,
    /// Bytes of records a region node keeps in memory for reads, 0..=68719476736 (64 GiB; 0:
    /// no cache). Default: 67108864 (64 MiB).
    pub read_cache_bytes: usize,
    /// How long an HTTP/1 client of a region node has to send each request's head (from the
    /// accept, or from its previous response) before its connection is closed, 1s..=1h.
    /// Default: 60s — longer than the 30 s between a peer's digest comparisons on its kept
    /// connection.
    pub client_header_timeout: Duration,
    /// Clients' writes a region node lets wait for its store at once, 1..=1000000; a write
    /// beyond them is refused at once (503 `overloaded`, `Retry-After`) and changes nothing.
    /// Replication and the node's own upkeep are not counted. Default: 10000.
    pub max_pending_writes: usize,
    /// Client connections a region node serves at once, 1..=1000000; past them it accepts no
    /// more until one closes (new ones wait in the listen backlog), so a flood of clients
    /// cannot take the file descriptors its store needs. Peers' replication connections count
    /// too (a few per peer). Default: 10000.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1_048_576,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            session_wait: Duration::from_secs(2),
            read_cache_bytes: 64 << 20,
            client_header_timeout: Duration::from_secs(60),
            max_pending_writes: 10_000,
            max_connections: 10_000,
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/health/ready".to_string(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            down_after: 3,
            up_after: 5,
            expect: vec![(200, 299)],
            grpc_service: None,
        }
    }
}

impl Topology {
    /// The region with this name.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The keyspace with this name.
    pub fn keyspace(&self, name: &str) -> Option<&Keyspace> {
        self.keyspaces.iter().find(|k| k.name == name)
    }

    /// The edge with this name.
    pub fn edge(&self, name: &str) -> Option<&Edge> {
        self.edges.iter().find(|e| e.name == name)
    }

    /// The zone a region belongs to (a region is in at most one zone).
    pub fn zone_of(&self, region: &str) -> Option<&str> {
        self.zones
            .iter()
            .find(|z| z.regions.iter().any(|r| r == region))
            .map(|z| z.name.as_str())
    }

    /// The regions that may hold one key of `keyspace` whose home region is `home`: `None` when
    /// the keyspace is not pinned (every region may); for `home-zone`, the regions of the home's
    /// zone — none at all when the home is in no zone, so such a key can be held nowhere.
    pub fn regions_for_key<'a>(
        &'a self,
        keyspace: &'a Keyspace,
        home: &str,
    ) -> Option<Vec<&'a str>> {
        let zone = match keyspace.residency.as_ref()? {
            Residency::Regions(list) => return Some(list.iter().map(String::as_str).collect()),
            Residency::Zone(z) => Some(z.as_str()),
            Residency::HomeZone => self.zone_of(home),
        };
        Some(
            self.zones
                .iter()
                .filter(|z| Some(z.name.as_str()) == zone)
                .flat_map(|z| z.regions.iter().map(String::as_str))
                .collect(),
        )
    }

    /// The home of a new key of a `writer = "home"` keyspace that no write has named one for:
    /// one of `allowed_regions(keyspace)`, chosen by rendezvous hashing of the key with each
    /// region's name (xxh3, a fixed algorithm). Every region computes the same answer from the
    /// same topology without talking to the others, so two regions can never both take a key's
    /// first write as its home — which a "homed where created" rule would let happen while
    /// replication lags. Adding or removing a region moves only the keys it wins or won; the order
    /// of `[[region]]` does not matter. `None` for other keyspaces and when no region may hold
    /// the key.
    pub fn default_home<'a>(&'a self, keyspace: &'a Keyspace, key: &str) -> Option<&'a str> {
        if keyspace.writer != Writer::Home {
            return None;
        }
        self.allowed_regions(keyspace)
            .into_iter()
            .max_by_key(|region| (rendezvous_score(region, key), *region))
    }

    /// The regions that may hold keys of `keyspace`, in file order of `[[region]]`: every region
    /// when unpinned; the listed ones; the zone's; for `home-zone`, every region in some zone
    /// (a given key is narrower: its home region's zone).
    pub fn allowed_regions(&self, keyspace: &Keyspace) -> Vec<&str> {
        self.regions
            .iter()
            .map(|r| r.name.as_str())
            .filter(|r| match &keyspace.residency {
                None => true,
                Some(Residency::Regions(list)) => list.iter().any(|l| l == r),
                Some(Residency::Zone(z)) => self.zone_of(r) == Some(z.as_str()),
                Some(Residency::HomeZone) => self.zone_of(r).is_some(),
            })
            .collect()
    }
}

/// A region's score for a key in [`Topology::default_home`]: xxh3 of the region's name, a zero
/// byte (names have none, so no two (region, key) pairs share an input) and the key.
fn rendezvous_score(region: &str, key: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(region.as_bytes());
    hasher.update(&[0]);
    hasher.update(key.as_bytes());
    hasher.digest()
}
