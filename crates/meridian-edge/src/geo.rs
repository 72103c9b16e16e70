//! GeoIP: locating a client address with a MaxMind database (Country or City), read once at
//! start into memory. Each thread keeps the records it decoded (by database and record
//! offset: the addresses of a database share far fewer records than they are), so a lookup
//! of an address whose record this thread has seen walks the tree but decodes nothing.
//!
//! For GeoDNS, [`GeoIp::scopes`] cuts the address space into the widest runs over which a set
//! of geo maps picks the same members ([`meridian_core::scope`]), from every network of the
//! database, on a thread of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use meridian_core::config::{GeoMap, LatLon};
use meridian_core::scope::{Blocks, BlocksBuilder};
use serde::Deserialize;

use crate::Error;

/// A MaxMind database in memory.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
    /// Unique per opened database in this process: the key of its decoded records.
    id: u64,
    /// The scope maps asked for so far, by the geo maps they are for.
    scopes: Mutex<Vec<(Vec<GeoMap>, Arc<GeoScopes>)>>,
}

/// The widest ECS scopes of one database for one list of geo maps: empty until built (see
/// [`GeoIp::scopes`]), then complete for each address family the database holds.
#[derive(Debug, Default)]
pub struct GeoScopes {
    v4: OnceLock<Blocks>,
    v6: OnceLock<Blocks>,
}

impl meridian_dns::GeoScopes for GeoScopes {
    fn widest(&self, ip: IpAddr) -> Option<u8> {
        let found = match ip {
            IpAddr::V4(a) => self.v4.get()?.widest(u128::from(a.to_bits())),
            IpAddr::V6(a) => self.v6.get()?.widest(a.to_bits()),
        };
        found.map(|(_, prefix)| prefix)
    }
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
            scopes: Mutex::new(Vec::new()),
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
        let located = Record::decode(&found);
        DECODED.with_borrow_mut(|d| {
            if d.len() >= DECODED_RECORDS {
                d.clear();
            }
            d.insert(key, located.clone());
        });
        (located, prefix)
    }
}

impl GeoIp {
    /// The widest-scope map of this database for clients told apart only by what `levels`
    /// look up for them (a routing's [`meridian_core::config::Routing::geo_levels`]): the
    /// same one for the same maps, built once on a thread of its own from every network of
    /// the database (an empty map answers nothing until it is ready — GeoDNS then answers the
    /// network's prefix; a database whose networks cannot all be read leaves that family
    /// empty, with a warning).
    pub fn scopes(self: &Arc<Self>, levels: Vec<GeoMap>) -> Arc<GeoScopes> {
        let mut memo = self
            .scopes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, s)) = memo.iter().find(|(l, _)| *l == levels) {
            return s.clone();
        }
        let scopes = Arc::new(GeoScopes::default());
        memo.push((levels.clone(), scopes.clone()));
        let (db, out) = (self.clone(), scopes.clone());
        let spawned = std::thread::Builder::new()
            .name("geoip-scopes".into())
            .spawn(move || db.build_scopes(&levels, &out));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start building GeoDNS scopes; answering network prefixes");
        }
        scopes
    }

    /// Fills `out` for `levels` (see [`GeoIp::scopes`]).
    fn build_scopes(&self, levels: &[GeoMap], out: &GeoScopes) {
        let started = Instant::now();
        let mut picks: HashMap<Vec<Option<String>>, u32> = HashMap::new();
        let mut key_of = |l: &Located| {
            let pick = levels
                .iter()
                .map(|g| {
                    g.lookup(l.country.as_deref(), l.continent.as_deref())
                        .map(str::to_string)
                })
                .collect();
            let next = u32::try_from(picks.len()).unwrap_or(u32::MAX);
            *picks.entry(pick).or_insert(next)
        };
        let gap = key_of(&Located::default());
        let mut by_record: HashMap<usize, u32> = HashMap::new();
        let families = [
            (32, IpAddr::from([0u8; 4]), &out.v4),
            (128, IpAddr::from([0u8; 16]), &out.v6),
        ];
        for (bits, zero, cell) in families {
            if bits == 128 && self.reader.metadata().ip_version != 6 {
                continue;
            }
            let mut blocks = BlocksBuilder::new(bits, gap);
            let mut add = |found: maxminddb::LookupResult<'_, Vec<u8>>| -> Result<(), String> {
                let net = found.network().map_err(|e| e.to_string())?;
                let key = match found.offset() {
                    Some(offset) => *by_record
                        .entry(offset)
                        .or_insert_with(|| key_of(&Record::decode(&found))),
                    None => gap,
                };
                // The IPv6 tree holds the IPv4 space at ::/96; its networks come as IPv4.
                let (start, prefix) = match net.network() {
                    IpAddr::V4(a) if bits == 128 => (u128::from(a.to_bits()), net.prefix() + 96),
                    IpAddr::V4(a) => (u128::from(a.to_bits()), net.prefix()),
                    IpAddr::V6(a) => (a.to_bits(), net.prefix()),
                };
                if blocks.push(start, prefix, key) {
                    Ok(())
                } else {
                    Err(format!("network {net} out of address order"))
                }
            };
            let read = ipnetwork::IpNetwork::new(zero, 0)
                .map_err(|e| e.to_string())
                .and_then(|everything| {
                    let options = maxminddb::WithinOptions::default();
                    let networks = self.reader.within(everything, options);
                    networks.map_err(|e| e.to_string())
                })
                .and_then(|networks| {
                    networks
                        .into_iter()
                        .try_for_each(|found| add(found.map_err(|e| e.to_string())?))
                });
            if let Err(e) = read {
                tracing::warn!(path = %self.path.display(), bits, error = %e, "cannot read every network of the GeoIP database; GeoDNS answers its network prefixes");
                continue;
            }
            let blocks = blocks.finish();
            tracing::info!(path = %self.path.display(), bits, runs = blocks.runs(), ms = started.elapsed().as_millis(), "GeoDNS scopes ready");
            let _ = cell.set(blocks);
        }
    }
}

impl Record {
    /// What a lookup's record says; nothing when it has none or is malformed.
    fn decode(found: &maxminddb::LookupResult<'_, Vec<u8>>) -> Located {
        found
            .decode::<Record>()
            .ok()
            .flatten()
            .map(Record::located)
            .unwrap_or_default()
    }

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
    use meridian_core::config::GeoMap;

    fn city() -> GeoIp {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip");
        GeoIp::open(&root.join("GeoIP2-City-Test.mmdb")).unwrap()
    }

    /// The continent map of the gdnsd comparison (crates/meridian/tests/dns_gdnsd.rs).
    fn continents() -> Vec<GeoMap> {
        let rules = [
            ("NA", "us-east"),
            ("SA", "sa-east"),
            ("EU", "eu-central"),
            ("AS", "ap-southeast"),
            ("OC", "ap-southeast"),
        ];
        vec![GeoMap {
            countries: Default::default(),
            continents: rules
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            default: Some("us-east".into()),
        }]
    }

    #[test]
    fn scopes_are_the_runs_of_one_pick_and_built_once() {
        use meridian_dns::GeoScopes as _;
        let db = Arc::new(city());
        let scopes = db.scopes(continents());
        assert!(
            Arc::ptr_eq(&scopes, &db.scopes(continents())),
            "one map per geo maps"
        );
        let started = Instant::now();
        while scopes.v4.get().is_none() || scopes.v6.get().is_none() {
            assert!(started.elapsed().as_secs() < 10, "scopes not built in 10 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let widest = |ip: &str| scopes.widest(ip.parse().unwrap());
        // US (us-east, as the default): merged with its neighbours, as gdnsd answers.
        assert_eq!(widest("149.101.100.0"), Some(3));
        // GB (eu-central): no wider than a run of EU networks, at least as wide as its own.
        let gb = widest("81.2.69.160").unwrap();
        assert!(gb <= 27, "/{gb}");
        // An IPv6 network of the database, and the IPv4 space inside the IPv6 tree is not
        // taken for IPv6 addresses.
        assert!(widest("2001:218::").is_some());
        assert!(widest("::1.1.1.1").is_some());
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
