//! GeoDNS inside the edge: the edge is the [`meridian_dns::Backend`] — the same topology,
//! health view (local probes + peer quorum) and GeoIP as the proxy — and [`serve_dns`] runs the
//! authoritative server on the `[dns] listen` sockets.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::config::{LatLon, Routing, Topology};
use meridian_core::geodns::DnsClient;
use meridian_core::routing::HealthView;
use tokio::net::{TcpListener, UdpSocket};

use crate::Edge;

impl meridian_dns::Backend for Edge {
    fn topology(&self) -> Arc<Topology> {
        Edge::topology(self)
    }

    fn is_current(&self, topology: &Arc<Topology>) -> bool {
        self.is_current_topology(topology)
    }

    fn health_view(&self) -> HealthView {
        Edge::health_view(self)
    }

    fn shared_health_view(&self) -> Arc<HealthView> {
        Edge::shared_health_view(self)
    }

    fn locate(&self, ip: IpAddr) -> DnsClient {
        let geoip = self.geoip();
        let Some(g) = geoip.as_ref() else {
            return DnsClient::default();
        };
        let (l, network_prefix) = g.locate_network(ip);
        DnsClient {
            ip: Some(ip),
            country: l.country,
            continent: l.continent,
            location: l.location,
            network_prefix,
        }
    }

    fn geo_scopes(&self, routing: &Routing) -> Option<Arc<dyn meridian_dns::GeoScopes>> {
        let geoip = self.geoip();
        let g = geoip.as_ref()?;
        Some(g.scopes(routing.geo_levels().cloned().collect()))
    }

    fn edge_location(&self) -> Option<LatLon> {
        self.routes().edge.location
    }

    fn now(&self) -> Duration {
        Edge::now(self)
    }

    fn random(&self) -> u64 {
        Edge::random(self)
    }
}

/// Serves the topology's `[dns]` zone on `udp` and `tcp` (bound by the caller on
/// `[dns] listen`) until `shutdown` resolves, answering from this edge's health view and GeoIP.
/// Probes are run by [`crate::serve`]; without it every region stays up.
pub async fn serve_dns(
    edge: Edge,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    let authority = edge.dns_authority().clone();
    // The zone now rather than at the first query: its records' widest-scope maps start
    // building at once.
    if let Err(e) = authority.zone(&edge) {
        tracing::warn!(error = %e, "cannot build the DNS zone yet");
    }
    meridian_dns::serve(authority, Arc::new(edge), udp, tcp, shutdown).await;
}
