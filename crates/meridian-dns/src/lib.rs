//! Meridian's GeoDNS (DESIGN §3): the topology's `[dns]` zone served authoritatively over UDP
//! and TCP, policy records answered with the same routing decisions (`meridian-core`) and the
//! same health view as the edge's proxy, EDNS Client Subnet, and state-aware TTLs.
//!
//! The crate depends only on `meridian-core`: whoever runs it (the edge) implements
//! [`Backend`] to give it the current topology, health view and GeoIP.

#![forbid(unsafe_code)]

pub mod answer;
mod cache;
mod error;
pub mod metrics;
pub mod server;
mod shape;
mod zone;

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian_core::config::{LatLon, Routing, Topology};
use meridian_core::geodns::{DnsClient, StateAwareTtl};
use meridian_core::routing::HealthView;
use serde::Serialize;

pub use answer::{Env, PolicyTrace, Trace, Transport, UDP_PAYLOAD};
pub use cache::UdpCache;
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
    /// The widest-scope map for policy records with `routing` (located by geo maps only, no
    /// coordinates). Called when a zone is built. Default: `None` (the GeoIP network's prefix
    /// is the scope).
    fn geo_scopes(&self, routing: &Routing) -> Option<Arc<dyn GeoScopes>> {
        let _ = routing;
        None
    }
    /// Monotonic time (same origin for every call), for the state-aware TTL.
    fn now(&self) -> Duration;
    /// A fresh random number, for `weighted` records.
    fn random(&self) -> u64;
}

/// The widest ECS scopes of one record's located decision (see [`meridian_core::scope`]),
/// from the backend's GeoIP database.
pub trait GeoScopes: Send + Sync + std::fmt::Debug {
    /// The widest prefix length around `ip` over which every address gets the same decision
    /// (its geo maps look up the same members); `None` when not known (not built yet, or no
    /// such map for the address family) — then the GeoIP network's prefix is answered.
    fn widest(&self, ip: IpAddr) -> Option<u8>;
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
        let z = Arc::new(Zone::new(topology)?.with_scopes(|r| backend.geo_scopes(r)));
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
