//! The zone compiled from the topology's `[dns]` section: owner names, static record sets,
//! policy record sets, empty non-terminals and delegations, ready for lookups.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use meridian_core::config::{self, Routing, Topology};
use meridian_core::geodns::{self, Family};

use crate::{Error, GeoScopes};

/// One record set at an owner name.
#[derive(Clone, Debug)]
pub(crate) enum RecordSet {
    /// Fixed data from `values` (or the apex SOA/NS).
    Static {
        /// The type of every item.
        rtype: RecordType,
        /// The data, in file order.
        data: Vec<RData>,
    },
    /// A/AAAA answered by a routing decision.
    Policy {
        /// A or AAAA.
        family: Family,
        /// The record's routing rules ([`geodns::record_routing`]).
        routing: Box<Routing>,
        /// Widest ECS scopes of its decision, when it is located by geo maps only and the
        /// backend has them ([`Zone::with_scopes`]).
        scopes: Option<Arc<dyn GeoScopes>>,
    },
}

impl RecordSet {
    pub(crate) fn rtype(&self) -> RecordType {
        match self {
            RecordSet::Static { rtype, .. } => *rtype,
            RecordSet::Policy {
                family: Family::V4, ..
            } => RecordType::A,
            RecordSet::Policy {
                family: Family::V6, ..
            } => RecordType::AAAA,
        }
    }
}

/// What a name is in the zone.
#[derive(Debug)]
pub(crate) enum Found<'z> {
    /// The name owns records (possibly through a wildcard).
    Node(&'z [RecordSet]),
    /// The name exists only because names below it do: NODATA for every type.
    EmptyNonTerminal,
    /// The name is at or below a delegation: refer to the child zone's servers.
    Referral {
        /// The delegation point.
        cut: &'z Name,
        /// Its NS names.
        ns: &'z [RecordSet],
    },
    /// No such name.
    NxDomain,
}

/// An authoritative zone built from a topology's `[dns]` section. Immutable; rebuilt when the
/// topology changes.
#[derive(Debug)]
pub struct Zone {
    topology: Arc<Topology>,
    origin: Name,
    ttl: u32,
    soa: Record,
    nodes: BTreeMap<Name, Vec<RecordSet>>,
    empty_non_terminals: BTreeSet<Name>,
    cuts: BTreeSet<Name>,
    /// Some policy record ranks by `proximity`: answers may depend on the client's coordinates.
    coordinates: bool,
}

/// SOA timers (seconds): refresh, retry, expire. Informational: this server has no secondaries.
const SOA_TIMERS: (i32, i32, i32) = (3600, 600, 86400);

impl Zone {
    /// Compiles the `[dns]` section of `topology`. Fails when there is none, or a name the
    /// validator accepted is still not a DNS name hickory can encode.
    ///
    /// Names in `values` (CNAME, NS, MX hosts) ending with `.` are absolute; others are
    /// relative to the zone, as in a zone file. Every static record has the `[dns] ttl`.
    pub fn new(topology: Arc<Topology>) -> Result<Zone, Error> {
        let dns = topology.dns.as_ref().ok_or(Error::NoZone)?;
        let origin = absolute(&dns.zone, &Name::root())?;
        let ttl = u32::try_from(dns.ttl.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut nodes: BTreeMap<Name, Vec<RecordSet>> = BTreeMap::new();

        let mut apex_ns = Vec::new();
        for n in &dns.nameservers {
            apex_ns.push(RData::NS(NS(absolute(n, &origin)?)));
        }
        let mname = match apex_ns.first() {
            Some(RData::NS(NS(n))) => n.clone(),
            _ => origin.clone(),
        };
        let rname = absolute("hostmaster", &origin)?;
        let (refresh, retry, expire) = SOA_TIMERS;
        let soa_data = SOA::new(mname, rname, serial(dns), refresh, retry, expire, ttl);
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa_data.clone()));

        for rec in &dns.records {
            let owner = if rec.name == "@" {
                origin.clone()
            } else {
                absolute(&rec.name, &origin)?
            };
            let set = match geodns::record_routing(&topology, rec) {
                Some(routing) => RecordSet::Policy {
                    family: if rec.kind == config::RecordType::Aaaa {
                        Family::V6
                    } else {
                        Family::V4
                    },
                    routing: Box::new(routing),
                    scopes: None,
                },
                None => static_set(rec, &origin)?,
            };
            if owner == origin
                && let RecordSet::Static {
                    rtype: RecordType::NS,
                    data,
                } = &set
            {
                for d in data {
                    if !apex_ns.contains(d) {
                        apex_ns.push(d.clone());
                    }
                }
                continue;
            }
            nodes.entry(owner.to_lowercase()).or_default().push(set);
        }
        let apex = nodes.entry(origin.to_lowercase()).or_default();
        apex.insert(
            0,
            RecordSet::Static {
                rtype: RecordType::SOA,
                data: vec![RData::SOA(soa_data)],
            },
        );
        apex.insert(
            1,
            RecordSet::Static {
                rtype: RecordType::NS,
                data: apex_ns,
            },
        );

        let origin_lower = origin.to_lowercase();
        let mut empty_non_terminals = BTreeSet::new();
        let mut cuts = BTreeSet::new();
        for (owner, sets) in &nodes {
            if *owner != origin_lower && sets.iter().any(|s| s.rtype() == RecordType::NS) {
                cuts.insert(owner.clone());
            }
            let mut up = owner.base_name();
            while up.num_labels() > origin_lower.num_labels() {
                if !nodes.contains_key(&up) {
                    empty_non_terminals.insert(up.clone());
                }
                up = up.base_name();
            }
        }
        let coordinates = nodes.values().flatten().any(
            |set| matches!(set, RecordSet::Policy { routing, .. } if routing.uses_coordinates()),
        );
        Ok(Zone {
            topology,
            coordinates,
            origin: origin_lower,
            ttl,
            soa,
            nodes,
            empty_non_terminals,
            cuts,
        })
    }

    /// The zone with each policy record located by geo maps only (no `proximity`) given its
    /// widest-scope map from `scopes` (see [`crate::Backend::geo_scopes`]).
    pub fn with_scopes(mut self, scopes: impl Fn(&Routing) -> Option<Arc<dyn GeoScopes>>) -> Zone {
        for set in self.nodes.values_mut().flatten() {
            if let RecordSet::Policy {
                routing, scopes: s, ..
            } = set
                && routing.located()
                && !routing.uses_coordinates()
            {
                *s = scopes(routing);
            }
        }
        self
    }

    /// The zone's name, lower case and absolute.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The topology the zone was built from.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The configured TTL in seconds (at least 1).
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Whether some policy record's answer may depend on the client's coordinates (its
    /// routing ranks by `proximity` at some level), not only on its country and continent.
    pub fn uses_coordinates(&self) -> bool {
        self.coordinates
    }

    /// The SOA record (owner: the origin).
    pub(crate) fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether `name` is the zone's name or below it.
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(&name.to_lowercase())
    }

    /// What `name` (in the zone) is: delegations first, then exact owners, empty
    /// non-terminals, and finally a wildcard at the closest encloser (RFC 4592).
    pub(crate) fn find(&self, name: &Name) -> Found<'_> {
        let name = name.to_lowercase();
        for cut in &self.cuts {
            if cut.zone_of(&name) {
                let ns = self.nodes.get(cut).map_or(&[][..], Vec::as_slice);
                return Found::Referral { cut, ns };
            }
        }
        if let Some(sets) = self.nodes.get(&name) {
            return Found::Node(sets);
        }
        if self.empty_non_terminals.contains(&name) {
            return Found::EmptyNonTerminal;
        }
        let mut encloser = name.base_name();
        while encloser.num_labels() > self.origin.num_labels()
            && !self.nodes.contains_key(&encloser)
            && !self.empty_non_terminals.contains(&encloser)
        {
            encloser = encloser.base_name();
        }
        let wildcard = Name::from_ascii("*")
            .and_then(|star| star.append_domain(&encloser))
            .ok();
        match wildcard.and_then(|w| self.nodes.get(&w)) {
            Some(sets) => Found::Node(sets),
            None => Found::NxDomain,
        }
    }

    /// The static addresses of `name` of the given type (glue for NS and MX targets).
    pub(crate) fn static_addresses(&self, name: &Name, rtype: RecordType) -> &[RData] {
        self.nodes
            .get(&name.to_lowercase())
            .and_then(|sets| {
                sets.iter().find_map(|s| match s {
                    RecordSet::Static { rtype: t, data } if *t == rtype => Some(data.as_slice()),
                    _ => None,
                })
            })
            .unwrap_or(&[])
    }
}

fn static_set(rec: &config::DnsRecord, origin: &Name) -> Result<RecordSet, Error> {
    let bad = |v: &str, why: String| Error::Record {
        name: rec.name.clone(),
        value: v.to_string(),
        reason: why,
    };
    let mut data = Vec::new();
    for v in &rec.values {
        let d = match rec.kind {
            config::RecordType::A => RData::A(A(v
                .parse()
                .map_err(|e: std::net::AddrParseError| bad(v, e.to_string()))?)),
            config::RecordType::Aaaa => RData::AAAA(AAAA(
                v.parse()
                    .map_err(|e: std::net::AddrParseError| bad(v, e.to_string()))?,
            )),
            config::RecordType::Cname => RData::CNAME(CNAME(absolute(v, origin)?)),
            config::RecordType::Ns => RData::NS(NS(absolute(v, origin)?)),
            config::RecordType::Txt => RData::TXT(TXT::new(vec![v.clone()])),
            config::RecordType::Mx => {
                let (pref, host) = v
                    .split_once(' ')
                    .ok_or_else(|| bad(v, "expected `<preference> <host>`".to_string()))?;
                let pref: u16 = pref.parse().map_err(|_| bad(v, "bad preference".into()))?;
                RData::MX(MX::new(pref, absolute(host.trim(), origin)?))
            }
        };
        data.push(d);
    }
    let rtype = match rec.kind {
        config::RecordType::A => RecordType::A,
        config::RecordType::Aaaa => RecordType::AAAA,
        config::RecordType::Cname => RecordType::CNAME,
        config::RecordType::Ns => RecordType::NS,
        config::RecordType::Txt => RecordType::TXT,
        config::RecordType::Mx => RecordType::MX,
    };
    Ok(RecordSet::Static { rtype, data })
}

/// `text` as an absolute name: as is when it ends with `.`, else relative to `origin`.
pub(crate) fn absolute(text: &str, origin: &Name) -> Result<Name, Error> {
    let bad = |e: hickory_proto::ProtoError| Error::Name {
        name: text.to_string(),
        reason: e.to_string(),
    };
    let name = Name::from_ascii(text).map_err(bad)?;
    if text.ends_with('.') {
        Ok(name)
    } else {
        name.append_domain(origin).map_err(bad)
    }
}

/// The SOA serial: an FNV-1a hash of the `[dns]` section, so it changes when the zone does.
fn serial(dns: &config::Dns) -> u32 {
    let text = format!("{dns:?}");
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The addresses as A or AAAA data.
pub(crate) fn address_data(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}
