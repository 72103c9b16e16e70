//! Any bytes, as a DNS query over UDP and over TCP, through GeoDNS's answer builder with the
//! zone of `crates/meridian-dns/tests/zone.toml` (static and policy records, every type):
//! never a panic, and every reply decodes and fits its transport.

#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use meridian_core::config::{LatLon, parse};
use meridian_core::geodns::DnsClient;
use meridian_core::routing::{HealthView, RegionView};
use meridian_dns::Zone;
use meridian_dns::answer::{self, Env, Transport};

/// Half the regions down, every client located in a /24 of GB.
struct Fixed;

impl Env for Fixed {
    fn health(&self) -> HealthView {
        ["us-east-1", "eu-west-1", "ap-southeast-1"]
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let v = RegionView {
                    up: i % 2 == 0,
                    ..RegionView::default()
                };
                (r.to_string(), v)
            })
            .collect()
    }

    fn policy_ttl(&self, _: &HealthView, configured: Duration) -> Duration {
        configured.min(Duration::from_secs(5))
    }

    fn locate(&self, ip: IpAddr) -> DnsClient {
        DnsClient {
            ip: Some(ip),
            country: Some("GB".into()),
            continent: Some("EU".into()),
            location: Some(LatLon {
                lat: 51.5,
                lon: -0.1,
            }),
            network_prefix: Some(24),
        }
    }

    fn edge_location(&self) -> Option<LatLon> {
        None
    }

    fn random(&self) -> u64 {
        7
    }
}

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let text = include_str!("../../crates/meridian-dns/tests/zone.toml");
        let topology = parse("zone.toml", text).expect("the test zone parses");
        Zone::new(Arc::new(topology)).expect("the test zone builds")
    })
}

fuzz_target!(|bytes: &[u8]| {
    let resolver: IpAddr = [198, 51, 100, 1].into();
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some((reply, _)) = answer::handle(zone(), bytes, resolver, transport, &Fixed) {
            assert!(
                Message::from_vec(&reply).is_ok(),
                "a reply that does not decode"
            );
            if transport == Transport::Udp {
                assert!(
                    reply.len() <= usize::from(answer::UDP_PAYLOAD),
                    "oversized UDP reply"
                );
            }
        }
    }
});
