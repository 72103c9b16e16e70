//! The edge's shared state: the topology and its backends behind an `ArcSwap` (read without
//! locks on the hot path), health state machines, admin weight overrides, peer views and the
//! retry budget.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use http::uri::Authority;
use http_body_util::combinators::BoxBody;
use ipnet::IpNet;
use meridian_core::config::{self, AppProtocol, Topology};
use meridian_core::health::{self, BackendHealth, Event, Ewma, PeerView, Thresholds, Transition};
use meridian_core::routing::{HealthView, RegionView, RetryBudget};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::metrics::{self, RegionMetrics};
use crate::upstream::{self, Target};
use crate::{Error, proxy};

/// The body type the proxy sends and answers with. Its errors say whose body broke off: a
/// client's request body ([`Error::RequestBody`]) or a backend's response body
/// ([`Error::ResponseBody`]).
pub type ProxyBody = BoxBody<Bytes, Error>;

/// Options of one edge process.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Which `[[edge]]` of the topology this process is. Required.
    pub name: String,
    /// The cluster secret: verifies residency tokens and protects the admin API. Default: `None`
    /// (no tokens verified, admin API open — loopback labs only).
    pub secret: Option<String>,
    /// Seed of the edge's random numbers (weighted draws). Default: 0; the binary passes a
    /// random one.
    pub seed: u64,
    /// How long to wait for a backend's response head. Default: 30s.
    pub upstream_timeout: Duration,
    /// How long an HTTP/1 client has to send a request's head, from when the connection is
    /// ready for it (accepted, or its previous response sent); past it the connection is
    /// closed, so idle or slow clients cannot hold connections open (haproxy's
    /// `timeout http-request`, nginx's `client_header_timeout`). Read when serving starts.
    /// Default: 30s; the binary passes the `[[edge]]`'s `client_header_timeout`.
    pub client_header_timeout: Duration,
    /// HTTP/2 clients: a connection that has received nothing for this long is sent a PING;
    /// one that does not answer within as long again is closed, so clients that vanished
    /// (no FIN, no RST: a phone that left coverage) do not hold connections. Read when serving
    /// starts. Default: [`HTTP2_KEEPALIVE`].
    pub http2_keepalive: Duration,
    /// How long a connection that switched protocols (WebSocket) may carry no byte either way
    /// before the edge closes both sides (haproxy's `timeout tunnel`). Default: 1h; the
    /// binary passes the `[[edge]]`'s `tunnel_idle_timeout`.
    pub tunnel_idle_timeout: Duration,
    /// At shutdown, how long in-flight requests and switched-protocol connections may take
    /// to finish before the edge closes them. Default: [`crate::DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// Largest request body buffered so the request can be retried or replayed; larger bodies
    /// stream through and are sent once. Default: 1 MiB.
    pub replay_limit: usize,
    /// TLS for the public listener (see [`crate::tls::server_config`]). Default: `None`
    /// (plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// GeoIP database locating clients for `geo` and `proximity` at start (the binary opens
    /// the edge's `geoip` file; [`Edge::reload_with_geoip`] replaces it). Default: `None`
    /// (clients are not located).
    pub geoip: Option<Arc<crate::geo::GeoIp>>,
    /// Public keys verifying residency tokens signed by an identity provider (`EdDSA`,
    /// `RS256`, `ES256`: see [`crate::token::PublicKey`]), from PEM files and JWKS files; a
    /// token is accepted when a key of its `alg` (and of its `kid`, when it names one)
    /// verifies it, so an old and a new key can be given while the provider rotates. The keys
    /// the edge starts with; [`Edge::set_token_keys`] replaces them. Default: none (only
    /// HS256 tokens with the cluster secret).
    pub token_public_keys: Vec<crate::token::NamedKey>,
    /// JWKS URLs (`https://`, or `http://`) of identity providers whose keys the edge fetches
    /// and keeps fresh beside [`EdgeOptions::token_public_keys`] (see [`crate::jwks`]'s
    /// behaviour in `docs/edge.md`). Checked when the edge is built. Default: none.
    pub token_jwks: Vec<String>,
    /// TLS towards `https://` JWKS URLs. Default: `None` (the system's trust store, as
    /// [`crate::tls::backend_client_config`] without a CA file).
    pub token_jwks_tls: Option<Arc<rustls::ClientConfig>>,
    /// How often each JWKS URL is fetched again. Default: 5 minutes (Envoy's
    /// `cache_duration`); never more often than `token_jwks_cooldown`.
    pub token_jwks_refresh: Duration,
    /// The soonest a JWKS URL is fetched again after its last fetch began when a token names
    /// an unknown `kid`. Default: [`crate::jwks::MIN_REFETCH`] (jose's `cooldownDuration`).
    pub token_jwks_cooldown: Duration,
    /// What identity providers' tokens must claim besides their signature (`iss`, `aud`).
    /// Default: nothing more.
    pub token_expect: crate::token::Expect,
    /// TLS towards `https://` app backends (see [`crate::tls::backend_client_config`]).
    /// Default: `None` (a topology with an `https://` backend is refused).
    pub backend_tls: Option<Arc<rustls::ClientConfig>>,
    /// Where a line per answered request goes (the binary opens the edge's `access_log`).
    /// Each proxy thread writes out its lines on its flush tick and when it stops; with
    /// [`crate::serve`] on a multi-thread runtime, lines gathered on a worker thread without
    /// a tick go out when it records a line a second after its last write, and its last ones
    /// are lost at shutdown. Default: `None` (no access log).
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Client connections served at once over every proxy thread; past them no more are
    /// accepted until one closes (see [`config::Edge::max_connections`]). Read when the edge
    /// is built. Default: [`config::EDGE_MAX_CONNECTIONS`]; the binary passes the
    /// `[[edge]]`'s.
    pub max_connections: usize,
}

/// [`EdgeOptions::http2_keepalive`] by default (nginx's `http2_idle_timeout` checks idle
/// HTTP/2 connections at a similar scale; Envoy pings when configured to), and the PING
/// period of the edge's HTTP/2 connections to backends.
pub const HTTP2_KEEPALIVE: Duration = Duration::from_secs(20);

/// [`EdgeOptions::token_jwks_refresh`] by default.
pub const TOKEN_JWKS_REFRESH: Duration = Duration::from_secs(300);

impl EdgeOptions {
    /// Options with every default, for edge `name`.
    pub fn new(name: &str) -> Self {
        EdgeOptions {
            name: name.to_string(),
            secret: None,
            seed: 0,
            upstream_timeout: config::EDGE_UPSTREAM_TIMEOUT,
            client_header_timeout: config::EDGE_CLIENT_HEADER_TIMEOUT,
            tunnel_idle_timeout: config::EDGE_TUNNEL_IDLE_TIMEOUT,
            http2_keepalive: HTTP2_KEEPALIVE,
            drain_timeout: crate::DRAIN_TIMEOUT,
            replay_limit: 1 << 20,
            tls: None,
            geoip: None,
            token_public_keys: Vec::new(),
            token_jwks: Vec::new(),
            token_jwks_tls: None,
            token_jwks_refresh: TOKEN_JWKS_REFRESH,
            token_jwks_cooldown: crate::jwks::MIN_REFETCH,
            token_expect: crate::token::Expect::default(),
            backend_tls: None,
            access_log: None,
            max_connections: config::EDGE_MAX_CONNECTIONS,
        }
    }
}

/// One app backend.
#[derive(Debug)]
pub(crate) struct Backend {
    pub region: String,
    pub url: String,
    /// `host:port` of `url` (`http://` or `https://`), parsed once.
    pub authority: Authority,
    /// Where to connect, from `authority`.
    pub target: Target,
    /// This backend's key in the per-thread connection pools (kept across reloads).
    pub key: u64,
    pub health: Mutex<BackendHealth>,
    /// Requests sent to it whose response head has not arrived (see [`Busy`]).
    in_flight: AtomicUsize,
}

impl Backend {
    /// Takes a place among the backend's requests in flight when fewer than `max` are; the
    /// place is held until the returned guard drops.
    fn take(self: &Arc<Self>, max: usize) -> Option<Busy> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let busy = Busy(Arc::clone(self));
        (before < max).then_some(busy)
    }

    /// Requests in flight to this backend now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One request in flight to a backend, from its sending until its response head or failure.
pub(crate) struct Busy(Arc<Backend>);

impl Busy {
    /// The backend the request is in flight to.
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`Edge::pick_backend`] found in a region.
pub(crate) enum Pick {
    /// A backend, with the request's place among its requests in flight.
    Backend(Busy),
    /// Every backend it would use has `max_requests_per_backend` requests in flight.
    Full,
    /// The region is not in this edge's topology (or has no backend).
    Unknown,
}

/// One region's backends and measurements, and what its answers carry (built once per
/// topology, so serving a request formats none of it).
#[derive(Debug)]
pub(crate) struct RegionState {
    pub backends: Vec<Arc<Backend>>,
    pub rtt: Mutex<Ewma>,
    next: AtomicUsize,
    /// `Meridian-Region` value; `None` when the name is not a valid header value.
    pub region_header: Option<HeaderValue>,
    /// The sticky `Set-Cookie` value: `[plain HTTP, TLS (Secure)]`.
    pub cookie: Option<[HeaderValue; 2]>,
    /// Per-request metrics of requests this region served.
    pub metrics: RegionMetrics,
}

/// What one topology resolves to for this edge.
#[derive(Debug)]
pub(crate) struct Routes {
    pub topology: Arc<Topology>,
    pub edge: config::Edge,
    pub trusted: Vec<IpNet>,
    pub thresholds: Thresholds,
    pub regions: BTreeMap<String, Arc<RegionState>>,
}

/// A running edge's state; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

struct Inner {
    opts: EdgeOptions,
    routes: ArcSwap<Routes>,
    weights: Mutex<BTreeMap<String, u8>>,
    budget: Mutex<RetryBudget>,
    rng: AtomicU64,
    origin: tokio::time::Instant,
    /// How long opening a backend connection may take: the probe timeout, at least 1 s.
    connect_timeout: Duration,
    peers: Mutex<BTreeMap<String, BTreeMap<String, PeerView>>>,
    dns: Arc<meridian_dns::Authority>,
    /// The GeoIP database in use: [`EdgeOptions::geoip`] until a reload replaces it.
    geoip: arc_swap::ArcSwapOption<crate::geo::GeoIp>,
    /// Bumped by every event that may change the health view (transitions, RTTs, peer
    /// views, weights, reloads); see [`Edge::shared_health_view`].
    health_gen: AtomicU64,
    /// The last health view computed for the proxy and GeoDNS.
    health_cache: arc_swap::ArcSwapOption<CachedHealth>,
    /// Per-request metrics of requests no region served (`region="none"`).
    unserved: RegionMetrics,
    /// Connections that switched protocols, on every proxy thread.
    tunnels: crate::tunnels::Tunnels,
    /// One slot per client connection being served, over every proxy thread.
    connections: meridian_http::Slots,
    /// The identity providers' keys in use (see [`Edge::token_keys`]): the files' keys
    /// followed by every JWKS URL's.
    token_keys: ArcSwap<Vec<crate::token::NamedKey>>,
    /// Where `token_keys` comes from.
    token_sources: Mutex<TokenSources>,
    /// The JWKS URLs fetched.
    jwks: Vec<Arc<crate::jwks::Source>>,
    /// Woken when a token names a `kid` no key has.
    jwks_wanted: tokio::sync::Notify,
}

/// The parts of [`Edge::token_keys`].
struct TokenSources {
    /// From files: [`EdgeOptions::token_public_keys`], then [`Edge::set_token_keys`].
    files: Vec<crate::token::NamedKey>,
    /// From each JWKS URL's last good fetch.
    fetched: BTreeMap<String, Vec<crate::token::NamedKey>>,
}

/// A health view computed at `at` (edge time) while the generation was `generation`.
struct CachedHealth {
    generation: u64,
    at: Duration,
    view: Arc<HealthView>,
}

/// How long the proxy and GeoDNS reuse a health view when no event changed it: what changes
/// with time alone (an ejection ending, a peer's view ageing out) shows within this.
pub const HEALTH_VIEW_MAX_AGE: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Edge {
    /// Builds the edge `opts.name` of `topology`. Fails when the topology has no such edge or
    /// a backend URL cannot be served (this build speaks plain HTTP to backends).
    pub fn new(topology: Arc<Topology>, opts: EdgeOptions) -> Result<Edge, Error> {
        let routes = build_routes(topology, &opts, None)?;
        let budget = retry_budget(&routes.topology);
        let connect_timeout = routes.topology.health.timeout.max(Duration::from_secs(1));
        let connections =
            meridian_http::Slots::new(opts.max_connections, "[[edge]] max_connections");
        let token_keys = ArcSwap::from_pointee(opts.token_public_keys.clone());
        let token_sources = Mutex::new(TokenSources {
            files: opts.token_public_keys.clone(),
            fetched: BTreeMap::new(),
        });
        let jwks = if opts.token_jwks.is_empty() {
            Vec::new()
        } else {
            let tls = match &opts.token_jwks_tls {
                Some(tls) => Arc::clone(tls),
                None => crate::tls::backend_client_config(None, None)?,
            };
            opts.token_jwks
                .iter()
                .map(|url| crate::jwks::Source::new(url, &tls).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Edge {
            inner: Arc::new(Inner {
                token_keys,
                token_sources,
                jwks,
                jwks_wanted: tokio::sync::Notify::new(),
                rng: AtomicU64::new(opts.seed),
                geoip: arc_swap::ArcSwapOption::new(opts.geoip.clone()),
                opts,
                routes: ArcSwap::from_pointee(routes),
                weights: Mutex::new(BTreeMap::new()),
                budget: Mutex::new(budget),
                origin: tokio::time::Instant::now(),
                connect_timeout,
                peers: Mutex::new(BTreeMap::new()),
                dns: Arc::new(meridian_dns::Authority::new()),
                health_gen: AtomicU64::new(0),
                health_cache: arc_swap::ArcSwapOption::empty(),
                unserved: RegionMetrics::new("none"),
                tunnels: crate::tunnels::Tunnels::default(),
                connections,
            }),
        })
    }

    /// Swaps in a new topology. Backends whose region and URL are unchanged keep their health;
    /// in-flight requests finish on the old one. Refused (old topology kept) when the new one
    /// cannot be served by this edge.
    pub fn reload(&self, topology: Arc<Topology>) -> Result<(), Error> {
        self.swap(topology, None)
    }

    /// [`Edge::reload`] with a new GeoIP database (`None`: clients are no longer located),
    /// swapped in only when the topology is accepted — and before it, so GeoDNS rebuilds its
    /// zone (and drops its cached answers) after the new database is in place.
    pub fn reload_with_geoip(
        &self,
        topology: Arc<Topology>,
        geoip: Option<Arc<crate::geo::GeoIp>>,
    ) -> Result<(), Error> {
        self.swap(topology, Some(geoip))
    }

    fn swap(
        &self,
        topology: Arc<Topology>,
        geoip: Option<Option<Arc<crate::geo::GeoIp>>>,
    ) -> Result<(), Error> {
        let old = self.inner.routes.load_full();
        let routes = build_routes(topology, &self.inner.opts, Some(&old))?;
        if let Some(g) = geoip {
            self.inner.geoip.store(g);
        }
        if routes.topology.routing.retry_budget != old.topology.routing.retry_budget {
            *lock(&self.inner.budget) = retry_budget(&routes.topology);
        }
        self.inner.routes.store(Arc::new(routes));
        self.health_changed();
        Ok(())
    }

    /// The GeoIP database in use, if any.
    pub(crate) fn geoip(&self) -> arc_swap::Guard<Option<Arc<crate::geo::GeoIp>>> {
        self.inner.geoip.load()
    }

    /// The options the edge was built with.
    pub fn options(&self) -> &EdgeOptions {
        &self.inner.opts
    }

    /// The slots of client connections ([`EdgeOptions::max_connections`] in all): the
    /// accept loops take one before each accept and the connection holds it until it ends.
    pub(crate) fn connection_slots(&self) -> &meridian_http::Slots {
        &self.inner.connections
    }

    /// The public keys residency tokens are verified with now: those of files
    /// ([`EdgeOptions::token_public_keys`] until [`Edge::set_token_keys`] replaces them), then
    /// those of each JWKS URL's last good fetch.
    pub fn token_keys(&self) -> Arc<Vec<crate::token::NamedKey>> {
        self.inner.token_keys.load_full()
    }

    /// Verifies tokens with `keys` (and the JWKS URLs' keys) from now on, all at once: a
    /// request sees the old set or the new one; e.g. after an identity provider rotated its key.
    pub fn set_token_keys(&self, keys: Vec<crate::token::NamedKey>) {
        let mut sources = lock(&self.inner.token_sources);
        sources.files = keys;
        self.combine_token_keys(&sources);
    }

    /// Replaces the keys of JWKS URL `url` with those of its latest fetch.
    pub(crate) fn set_fetched_keys(&self, url: &str, keys: Vec<crate::token::NamedKey>) {
        let mut sources = lock(&self.inner.token_sources);
        sources.fetched.insert(url.to_string(), keys);
        self.combine_token_keys(&sources);
        let fetched: usize = sources.fetched.values().map(Vec::len).sum();
        // Key counts are far below f64's exact integers.
        #[allow(clippy::cast_precision_loss)]
        crate::metrics::gauge!(crate::jwks::KEYS).set(fetched as f64);
    }

    fn combine_token_keys(&self, sources: &TokenSources) {
        let all = sources
            .files
            .iter()
            .chain(sources.fetched.values().flatten())
            .cloned()
            .collect();
        self.inner.token_keys.store(Arc::new(all));
    }

    /// The residency claims of a bearer token: an HS256 token of the cluster secret, else one
    /// an identity provider's key verifies and whose claims meet
    /// [`EdgeOptions::token_expect`]. `None` when it verifies with neither (it may be the
    /// app's own token); one naming an unknown `kid` asks the JWKS URLs to be fetched again.
    pub(crate) fn token_claims(&self, token: &str, now_unix: u64) -> Option<crate::token::Claims> {
        let opts = &self.inner.opts;
        if let Some(claims) = opts
            .secret
            .as_ref()
            .and_then(|s| crate::token::verify(token, s.as_bytes(), now_unix).ok())
        {
            return Some(claims);
        }
        let keys = self.inner.token_keys.load();
        if keys.is_empty() && self.inner.jwks.is_empty() {
            return None;
        }
        match crate::token::verify_public(token, &keys, &opts.token_expect, now_unix) {
            Ok(claims) => Some(claims),
            Err(Error::TokenKeyUnknown { .. }) => {
                self.inner.jwks_wanted.notify_waiters();
                None
            }
            Err(_) => None,
        }
    }

    /// The JWKS URLs this edge fetches.
    pub(crate) fn jwks_sources(&self) -> &[Arc<crate::jwks::Source>] {
        &self.inner.jwks
    }

    /// Resolves when a token names a `kid` no key has (see [`Edge::token_claims`]).
    pub(crate) fn jwks_wanted(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.jwks_wanted.notified()
    }

    /// Client connections being served now, over every proxy thread.
    pub fn open_connections(&self) -> usize {
        self.inner.connections.open()
    }

    /// The connections that switched protocols, for shutdown to drain.
    pub(crate) fn tunnels(&self) -> &crate::tunnels::Tunnels {
        &self.inner.tunnels
    }

    /// The GeoDNS authority of this edge (zone and state-aware TTL), shared by the DNS
    /// listeners and the admin API's explain.
    pub fn dns_authority(&self) -> &Arc<meridian_dns::Authority> {
        &self.inner.dns
    }

    /// The current topology.
    pub fn topology(&self) -> Arc<Topology> {
        self.inner.routes.load().topology.clone()
    }

    /// Whether `topology` is (by pointer) the current one, without a reference count.
    pub(crate) fn is_current_topology(&self, topology: &Arc<Topology>) -> bool {
        Arc::ptr_eq(&self.inner.routes.load().topology, topology)
    }

    pub(crate) fn routes(&self) -> Arc<Routes> {
        self.inner.routes.load_full()
    }

    /// Metrics of requests that no region served.
    pub(crate) fn unserved_metrics(&self) -> &RegionMetrics {
        &self.inner.unserved
    }

    /// Sends `req` (origin-form URI, `Host` set) to `backend` over this thread's pooled
    /// connections (see [`upstream::send`]).
    pub(crate) async fn send(
        &self,
        backend: &Backend,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<ProxyBody>, upstream::Failure> {
        upstream::send(
            backend.key,
            &backend.target,
            self.inner.connect_timeout,
            req,
        )
        .await
    }

    /// How long opening a backend connection may take.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// Monotonic time since the edge started; the `now` of every health decision.
    pub fn now(&self) -> Duration {
        self.inner.origin.elapsed()
    }

    /// A fresh random number (splitmix64 over the seed).
    pub(crate) fn random(&self) -> u64 {
        let mut z = self
            .inner
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The weight of a region: the admin override if set, else `[routing.weights]` (100 when
    /// unlisted).
    pub fn weight(&self, region: &str) -> u8 {
        weight_of(&lock(&self.inner.weights), &self.topology(), region)
    }

    /// Sets a region's weight (0..=100; 0 drains it: new requests go elsewhere while others
    /// are up, in-flight ones finish). Overrides survive reloads until the edge restarts.
    pub fn set_weight(&self, region: &str, weight: u8) -> Result<(), Error> {
        if self.topology().region(region).is_none() {
            return Err(Error::Config {
                message: format!("no region `{region}` in the topology"),
            });
        }
        if weight > 100 {
            return Err(Error::Config {
                message: format!("weight {weight} for `{region}`: use a percent, 0..=100"),
            });
        }
        lock(&self.inner.weights).insert(region.to_string(), weight);
        self.health_changed();
        tracing::info!(region, weight, "region weight set");
        Ok(())
    }

    /// Whether this edge alone sees the region up: at least one backend available.
    pub fn local_up(&self, region: &str) -> bool {
        let now = self.now();
        self.routes()
            .regions
            .get(region)
            .is_some_and(|r| region_local_up(r, now))
    }

    /// Every region's local view, as shared with other edges.
    pub fn local_views(&self) -> BTreeMap<String, bool> {
        let names: Vec<String> = self.routes().regions.keys().cloned().collect();
        names
            .into_iter()
            .map(|n| {
                let up = self.local_up(&n);
                (n, up)
            })
            .collect()
    }

    /// Records another edge's views, received now.
    pub fn record_peer_views(&self, edge: &str, views: &BTreeMap<String, bool>) {
        let at = self.now();
        let map = views
            .iter()
            .map(|(r, &up)| (r.clone(), PeerView { up, at }))
            .collect();
        lock(&self.inner.peers).insert(edge.to_string(), map);
        self.health_changed();
    }

    /// The health view routing decisions use: a region is up unless this edge sees it down
    /// and a majority of the live edge views agree ([`health::quorum_down`]; views older than
    /// three probe intervals have no vote).
    pub fn health_view(&self) -> HealthView {
        let routes = self.routes();
        let now = self.now();
        let max_age = routes.topology.health.interval * 3;
        let peers = lock(&self.inner.peers);
        let weights = lock(&self.inner.weights);
        routes
            .regions
            .iter()
            .map(|(name, r)| {
                let local = region_local_up(r, now);
                let views: Vec<PeerView> = peers
                    .values()
                    .filter_map(|m| m.get(name).copied())
                    .collect();
                let up = !health::quorum_down(local, &views, now, max_age);
                let rtt = lock(&r.rtt).value();
                let view = RegionView {
                    up,
                    rtt,
                    weight: weight_of(&weights, &routes.topology, name),
                };
                (name.clone(), view)
            })
            .collect()
    }

    /// [`Edge::health_view`] for the proxy and GeoDNS, computed again only after an event that
    /// may change it (a transition, an availability flip, an RTT, peer views, a weight, a
    /// reload) or [`HEALTH_VIEW_MAX_AGE`]: the same `Arc` until then, so requests do not rebuild
    /// it and DNS answers decided with it can be reused.
    pub fn shared_health_view(&self) -> Arc<HealthView> {
        let generation = self.inner.health_gen.load(Ordering::Acquire);
        let now = self.now();
        if let Some(c) = &*self.inner.health_cache.load()
            && c.generation == generation
            && now.saturating_sub(c.at) < HEALTH_VIEW_MAX_AGE
        {
            return c.view.clone();
        }
        let view = Arc::new(self.health_view());
        self.inner.health_cache.store(Some(Arc::new(CachedHealth {
            generation,
            at: now,
            view: view.clone(),
        })));
        view
    }

    /// Calls `f` with the view [`Edge::shared_health_view`] would return, without taking a
    /// reference count on it while it is fresh (threads share its count).
    pub(crate) fn with_health_view<R>(&self, f: impl FnOnce(&HealthView) -> R) -> R {
        let generation = self.inner.health_gen.load(Ordering::Acquire);
        let now = self.now();
        if let Some(c) = &*self.inner.health_cache.load()
            && c.generation == generation
            && now.saturating_sub(c.at) < HEALTH_VIEW_MAX_AGE
        {
            return f(&c.view);
        }
        f(&self.shared_health_view())
    }

    /// Marks the health view as possibly changed.
    fn health_changed(&self) {
        self.inner.health_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The next available backend of a region (round robin) with room for one more request
    /// in flight; with none available (all down, the region tried anyway), the next backend
    /// in turn, if it has room.
    pub(crate) fn pick_backend(&self, routes: &Routes, region: &str) -> Pick {
        let Some(r) = routes.regions.get(region) else {
            return Pick::Unknown;
        };
        let n = r.backends.len();
        if n == 0 {
            return Pick::Unknown;
        }
        let max = routes.topology.routing.max_requests_per_backend;
        let start = r.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        let mut any_available = false;
        for i in 0..n {
            let b = &r.backends[(start + i) % n];
            if lock(&b.health).available(now) {
                any_available = true;
                if let Some(busy) = b.take(max) {
                    return Pick::Backend(busy);
                }
            }
        }
        if any_available {
            return Pick::Full;
        }
        match r.backends[start % n].take(max) {
            Some(busy) => Pick::Backend(busy),
            None => Pick::Full,
        }
    }

    /// Feeds one observation into a backend's state machine; logs and counts transitions.
    pub(crate) fn observe(&self, backend: &Backend, event: Event) {
        let routes = self.inner.routes.load();
        let now = self.now();
        let (tr, flipped) = {
            let mut h = lock(&backend.health);
            let before = h.available(now);
            let tr = h.on_event(&routes.thresholds, now, event);
            (tr, h.available(now) != before)
        };
        if tr.is_some() || flipped {
            self.health_changed();
        }
        let Some(tr) = tr else { return };
        let label = match tr {
            Transition::MarkedDown => "down",
            Transition::MarkedUp => "up",
            Transition::Ejected { .. } => "ejected",
        };
        match tr {
            Transition::Ejected { until } => {
                tracing::warn!(
                    region = %backend.region, backend = %backend.url,
                    for_ms = until.saturating_sub(now).as_millis() as u64,
                    "backend ejected after failed requests"
                );
                // Real traffic says it is failing: ask the probes now, not at the next beat.
                let same = routes.regions.get(&backend.region).and_then(|r| {
                    r.backends
                        .iter()
                        .find(|b| std::ptr::eq(b.as_ref(), backend))
                });
                if let (Some(b), Ok(rt)) = (same, tokio::runtime::Handle::try_current()) {
                    rt.spawn(crate::probe::probe(self.clone(), b.clone()));
                }
            }
            Transition::MarkedDown => {
                tracing::warn!(region = %backend.region, backend = %backend.url, "backend marked down")
            }
            Transition::MarkedUp => {
                tracing::info!(region = %backend.region, backend = %backend.url, "backend marked up")
            }
        }
        metrics::counter!(metrics::HEALTH_TRANSITIONS, "region" => backend.region.clone(), "transition" => label)
            .increment(1);
    }

    pub(crate) fn observe_rtt(&self, region: &str, rtt: Duration) {
        if let Some(r) = self.routes().regions.get(region) {
            lock(&r.rtt).observe(rtt);
            self.health_changed();
        }
    }

    pub(crate) fn budget_request(&self) {
        lock(&self.inner.budget).on_request();
    }

    pub(crate) fn budget_retry(&self) -> bool {
        lock(&self.inner.budget).try_retry()
    }

    /// Whether `peer` is one of the trusted proxies.
    pub(crate) fn trusted(routes: &Routes, ip: IpAddr) -> bool {
        routes.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// The retry budget `[routing] retry_budget` asks for: that percent of requests, a reserve of
/// 10 retries (none when the budget is 0: retries off), at most 100 saved up.
fn retry_budget(topology: &Topology) -> RetryBudget {
    let percent = topology.routing.retry_budget;
    let reserve = if percent == 0 { 0 } else { 10 };
    RetryBudget::new(f64::from(percent) / 100.0, reserve, 100)
}

/// A region's weight: the admin override if set, else `[routing.weights]` (100 when unlisted).
fn weight_of(overrides: &BTreeMap<String, u8>, topology: &Topology, region: &str) -> u8 {
    overrides
        .get(region)
        .or_else(|| topology.routing.weights.get(region))
        .copied()
        .unwrap_or(100)
}

/// Whether this edge alone sees the region up at `now`: at least one backend available.
fn region_local_up(r: &RegionState, now: Duration) -> bool {
    let available = r
        .backends
        .iter()
        .filter(|b| lock(&b.health).available(now))
        .count();
    health::region_up(available, r.backends.len(), 1)
}

fn build_routes(
    topology: Arc<Topology>,
    opts: &EdgeOptions,
    old: Option<&Routes>,
) -> Result<Routes, Error> {
    let name = opts.name.as_str();
    let Some(edge) = topology.edge(name).cloned() else {
        let known: Vec<&str> = topology.edges.iter().map(|e| e.name.as_str()).collect();
        return Err(Error::Config {
            message: format!(
                "no edge `{name}` in the topology; its edges are: {}",
                if known.is_empty() {
                    "none (add an [[edge]])".to_string()
                } else {
                    known.join(", ")
                }
            ),
        });
    };
    let trusted = edge
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|e| Error::Config {
                    message: format!("trusted_proxies `{p}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut regions = BTreeMap::new();
    for r in &topology.regions {
        let old_region = old.and_then(|o| o.regions.get(&r.name));
        let mut backends = Vec::new();
        for url in &r.app {
            let bad = |what: String| Error::Config {
                message: format!("region `{}`: app backend {url}: {what}", r.name),
            };
            let trimmed = url.trim_end_matches('/');
            let (host_port, https) = match trimmed.strip_prefix("http://") {
                Some(rest) => (rest, false),
                None => match trimmed.strip_prefix("https://") {
                    Some(rest) => (rest, true),
                    None => return Err(bad("give http://host:port or https://host:port".into())),
                },
            };
            let authority = host_port
                .parse::<Authority>()
                .map_err(|e| bad(e.to_string()))?;
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let http2 = r.app_protocol == AppProtocol::Http2;
            let tls = match (https, &opts.backend_tls) {
                (false, _) => None,
                (true, None) => {
                    return Err(bad(
                        "this edge was given no TLS client configuration for https:// backends"
                            .into(),
                    ));
                }
                (true, Some(config)) => {
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| bad(format!("`{host}` cannot name a TLS server: {e}")))?;
                    let config = if http2 {
                        let mut h2 = (**config).clone();
                        h2.alpn_protocols = vec![b"h2".to_vec()];
                        Arc::new(h2)
                    } else {
                        config.clone()
                    };
                    Some((TlsConnector::from(config), name))
                }
            };
            let target = Target {
                host,
                port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
                tls,
                http2,
            };
            // Kept across a reload with its health, unless it is now spoken to differently.
            let kept = old_region.and_then(|o| {
                o.backends
                    .iter()
                    .find(|b| b.url == *url && b.target.http2 == http2)
            });
            backends.push(match kept {
                Some(b) => b.clone(),
                None => Arc::new(Backend {
                    region: r.name.clone(),
                    url: url.clone(),
                    authority,
                    target,
                    key: upstream::new_key(),
                    health: Mutex::new(BackendHealth::new()),
                    in_flight: AtomicUsize::new(0),
                }),
            });
        }
        let rtt = old_region.map_or(Ewma::new(0.3), |o| *lock(&o.rtt));
        regions.insert(
            r.name.clone(),
            Arc::new(RegionState {
                backends,
                rtt: Mutex::new(rtt),
                next: AtomicUsize::new(0),
                region_header: HeaderValue::from_str(&r.name).ok(),
                cookie: proxy::sticky_cookies(&r.name),
                metrics: RegionMetrics::new(&r.name),
            }),
        );
    }
    Ok(Routes {
        thresholds: Thresholds::from_config(&topology.health),
        topology,
        edge,
        trusted,
        regions,
    })
}
