//! GeoIP: locating a client address with a MaxMind database (Country or City), read once at
//! start into memory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use meridian_core::config::LatLon;
use serde::Deserialize;

use crate::Error;

/// A MaxMind database in memory.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a database says about an address. Every field is `None` when unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Located {
    /// ISO country code (`DE`).
    pub country: Option<String>,
    /// Continent code (`EU`).
    pub continent: Option<String>,
    /// Coordinates (City databases only).
    pub location: Option<LatLon>,
}

#[derive(Deserialize)]
struct Record {
    country: Option<Country>,
    continent: Option<Continent>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Country {
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct Continent {
    code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoIp {
    /// Reads a MaxMind database file (GeoLite2/GeoIP2 Country or City, or any database with
    /// the same `country.iso_code`, `continent.code`, `location` fields).
    pub fn open(path: &Path) -> Result<GeoIp, Error> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| Error::Config {
            message: format!(
                "{}: cannot read the GeoIP database: {e}; give a MaxMind .mmdb file \
                 (e.g. GeoLite2-Country.mmdb)",
                path.display()
            ),
        })?;
        Ok(GeoIp {
            reader,
            path: path.to_path_buf(),
        })
    }

    /// Where `ip` is, as far as the database knows; nothing when it does not know or the
    /// record is malformed.
    pub fn locate(&self, ip: IpAddr) -> Located {
        self.locate_network(ip).0
    }

    /// [`GeoIp::locate`], with the prefix length of the database network containing `ip`:
    /// every address of that network is located alike (GeoDNS answers for all of them, the
    /// ECS scope). The prefix is `None` when the lookup failed (e.g. an IPv6 address in an
    /// IPv4-only database).
    pub fn locate_network(&self, ip: IpAddr) -> (Located, Option<u8>) {
        let Ok(found) = self.reader.lookup(ip) else {
            return (Located::default(), None);
        };
        let prefix = found.network().ok().map(|n| n.prefix());
        let record = found.decode::<Record>().ok().flatten();
        let Some(r) = record else {
            return (Located::default(), prefix);
        };
        let location = r.location.and_then(|l| match (l.latitude, l.longitude) {
            (Some(lat), Some(lon)) => Some(LatLon { lat, lon }),
            _ => None,
        });
        let located = Located {
            country: r.country.and_then(|c| c.iso_code),
            continent: r.continent.and_then(|c| c.code),
            location,
        };
        (located, prefix)
    }
}
