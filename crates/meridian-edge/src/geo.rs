//! GeoIP: locating a client address with a MaxMind database (Country or City), read once at
//! start into memory. Each thread keeps the records it decoded (by database and record
//! offset: the addresses of a database share far fewer records than they are), so a lookup
//! of an address whose record this thread has seen walks the tree but decodes nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use meridian_core::config::LatLon;
use serde::Deserialize;

use crate::Error;

/// A MaxMind database in memory.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
    /// Unique per opened database in this process: the key of its decoded records.
    id: u64,
}

/// The next [`GeoIp::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Most records one thread keeps decoded; when full it starts over.
const DECODED_RECORDS: usize = 16_384;

thread_local! {
    /// Records this thread decoded, by database id and record offset.
    static DECODED: RefCell<HashMap<(u64, usize), Located>> = RefCell::new(HashMap::new());
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
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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
        let Some(offset) = found.offset() else {
            return (Located::default(), prefix);
        };
        let key = (self.id, offset);
        if let Some(l) = DECODED.with_borrow(|d| d.get(&key).cloned()) {
            return (l, prefix);
        }
        let located = found
            .decode::<Record>()
            .ok()
            .flatten()
            .map(Record::located)
            .unwrap_or_default();
        DECODED.with_borrow_mut(|d| {
            if d.len() >= DECODED_RECORDS {
                d.clear();
            }
            d.insert(key, located.clone());
        });
        (located, prefix)
    }
}

impl Record {
    fn located(self) -> Located {
        let r = self;
        let location = r.location.and_then(|l| match (l.latitude, l.longitude) {
            (Some(lat), Some(lon)) => Some(LatLon { lat, lon }),
            _ => None,
        });
        Located {
            country: r.country.and_then(|c| c.iso_code),
            continent: r.continent.and_then(|c| c.code),
            location,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city() -> GeoIp {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip");
        GeoIp::open(&root.join("GeoIP2-City-Test.mmdb")).unwrap()
    }

    #[test]
    fn decoded_records_are_kept_per_database() {
        let (a, b) = (city(), city());
        let ip: IpAddr = "81.2.69.160".parse().unwrap();
        let first = a.locate_network(ip);
        assert_eq!(first.0.country.as_deref(), Some("GB"));
        assert!(first.0.location.is_some());
        assert_eq!(
            a.locate_network(ip),
            first,
            "the kept record is the decoded one"
        );
        // What this thread keeps for `a`'s record is what `a` answers; `b`, the same file
        // opened again, decodes its own.
        let offset = a.reader.lookup(ip).unwrap().offset().unwrap();
        let marked = Located {
            country: Some("XX".into()),
            ..Located::default()
        };
        DECODED.with_borrow_mut(|d| d.insert((a.id, offset), marked.clone()));
        assert_eq!(a.locate_network(ip).0, marked);
        assert_eq!(b.locate_network(ip), first);
    }
}
