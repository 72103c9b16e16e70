//! GeoIP networks and the ECS scope: for every IPv4 network of MaxMind's test databases
//! (`testdata/geoip/`), the lookup's prefix is the network's, and the first, middle and last
//! addresses locate alike — so answering a geo decision with that prefix as the Client Subnet
//! scope is correct for every address it covers.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use meridian_edge::geo::GeoIp;

/// The repository's copy of the test databases.
fn geoip_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip")
}

#[test]
fn lookup_prefix_is_the_network_and_covers_it() {
    let dir = geoip_dir();
    let csv = std::fs::read_to_string(dir.join("geoip_test_networks.csv")).expect("csv");
    let mut checked = 0;
    for db_name in ["GeoIP2-City-Test", "GeoLite2-Country-Test"] {
        let db = GeoIp::open(&dir.join(format!("{db_name}.mmdb"))).expect("open");
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f[0] != db_name || f[2].is_empty() {
                continue;
            }
            let (addr, len) = f[2].split_once('/').expect("cidr");
            let base: Ipv4Addr = addr.parse().expect("addr");
            let len: u8 = len.parse().expect("len");
            let size = 1u64 << (32 - u32::from(len));
            let first = u64::from(u32::from(base));
            for a in [first, first + size / 2, first + size - 1] {
                let ip = IpAddr::V4(Ipv4Addr::from(u32::try_from(a).expect("v4")));
                let (located, prefix) = db.locate_network(ip);
                assert_eq!(prefix, Some(len), "{db_name} {ip} in {}", f[2]);
                assert_eq!(
                    located.country.as_deref().unwrap_or(""),
                    f[3],
                    "{db_name} {ip}"
                );
                assert_eq!(located.continent.as_deref().unwrap_or(""), f[4]);
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} addresses checked");
}
