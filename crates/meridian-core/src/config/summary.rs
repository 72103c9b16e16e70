//! `meridian check`'s readable view of a resolved topology.

use std::fmt::Write as _;

use super::model::{AllDown, AppProtocol, GeoMap, Residency, Topology, Writes};
use super::scalar::format_duration;

fn all_down(a: &AllDown) -> String {
    match a {
        AllDown::FailOpen => "fail-open".to_string(),
        AllDown::FailClosed => "fail-closed".to_string(),
        AllDown::Fallback(r) => format!("fallback:{r}"),
    }
}

impl Topology {
    /// A readable, resolved view for `meridian check`: every section with its defaults filled in,
    /// and for each keyspace the regions allowed to hold it. Deterministic (same topology, same
    /// text); not a stable machine format.
    pub fn render_summary(&self) -> String {
        let mut s = String::new();
        self.write_summary(&mut s)
            .expect("invariant: writing to a String cannot fail");
        s
    }

    fn write_summary(&self, s: &mut String) -> std::fmt::Result {
        writeln!(s, "cluster {}", self.cluster.name)?;
        match &self.cluster.secret_file {
            Some(p) => writeln!(s, "  secret_file {}", p.display())?,
            None => writeln!(s, "  secret_file (none: calls are not authenticated)")?,
        }
        writeln!(s, "\nregions ({})", self.regions.len())?;
        for r in &self.regions {
            let zone = self.zone_of(&r.name).unwrap_or("-");
            writeln!(
                s,
                "  {}  zone {zone}  node {}  capacity {}",
                r.name, r.node, r.capacity
            )?;
            if !r.app.is_empty() {
                let over = match r.app_protocol {
                    AppProtocol::Http1 => "",
                    AppProtocol::Http2 => "  (HTTP/2)",
                };
                writeln!(s, "    app {}{over}", r.app.join(", "))?;
            }
            if let Some(l) = r.location {
                writeln!(s, "    location {}, {}", l.lat, l.lon)?;
            }
            if !r.addresses.is_empty() {
                let a: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
                writeln!(s, "    addresses {}", a.join(", "))?;
            }
        }
        if !self.zones.is_empty() {
            writeln!(s, "\nzones")?;
            for z in &self.zones {
                writeln!(s, "  {} = {}", z.name, z.regions.join(", "))?;
            }
        }
        let r = &self.routing;
        let writes = match &r.writes {
            Writes::Any => "any".to_string(),
            Writes::Home => "home".to_string(),
            Writes::Primary(p) => format!("primary:{p}"),
        };
        writeln!(s, "\nrouting")?;
        writeln!(
            s,
            "  policy {}  writes {writes}  all_down {}  sticky {}  retry_budget {}%  \
             max_requests_per_backend {}",
            r.policy.as_str(),
            all_down(&r.all_down),
            r.sticky,
            r.retry_budget,
            r.max_requests_per_backend
        )?;
        let weights: Vec<String> = r
            .order
            .iter()
            .map(|n| format!("{n} {}%", r.weights.get(n).copied().unwrap_or(100)))
            .collect();
        writeln!(s, "  order/weights {}", weights.join(", "))?;
        if let Some(g) = geo(&r.geo) {
            writeln!(s, "  geo {g}")?;
        }
        for p in &r.pools {
            write!(
                s,
                "  pool {} ({}): {}",
                p.name,
                p.policy.as_str(),
                p.members.join(", ")
            )?;
            match geo(&p.geo) {
                Some(g) => writeln!(s, "  geo {g}")?,
                None => writeln!(s)?,
            }
        }
        writeln!(s, "\nkeyspaces ({})", self.keyspaces.len())?;
        for k in &self.keyspaces {
            let mut line = format!("  {}  {}  {}", k.name, k.kind, k.replication.as_str());
            if let Some(q) = k.quorum {
                let _ = write!(
                    line,
                    " quorum {q} timeout {}",
                    format_duration(k.sync_timeout)
                );
            }
            let _ = write!(line, "  writer {}", k.writer.as_str());
            if k.forward {
                line.push_str(" (forward)");
            }
            if let Some(t) = k.ttl {
                let _ = write!(line, "  ttl {}", format_duration(t));
            }
            let residency = match &k.residency {
                None => "anywhere".to_string(),
                Some(Residency::Regions(list)) => format!("[{}]", list.join(", ")),
                Some(Residency::Zone(z)) => format!("zone {z}"),
                Some(Residency::HomeZone) => "home-zone".to_string(),
            };
            let _ = write!(
                line,
                "  residency {residency} -> {}",
                self.allowed_regions(k).join(", ")
            );
            writeln!(s, "{line}")?;
        }
        writeln!(s, "\nedges ({})", self.edges.len())?;
        for e in &self.edges {
            writeln!(
                s,
                "  {}  listen {}  admin {}  max_connections {}",
                e.name, e.listen, e.admin, e.max_connections
            )?;
            if let Some(g) = &e.geoip {
                writeln!(s, "    geoip {}", g.display())?;
            }
            if let Some(a) = &e.access_log {
                writeln!(s, "    access_log {}", a.display())?;
            }
            if !e.trusted_proxies.is_empty() {
                writeln!(s, "    trusted_proxies {}", e.trusted_proxies.join(", "))?;
            }
        }
        let h = &self.health;
        writeln!(s, "\nhealth")?;
        writeln!(
            s,
            "  path {}  interval {}  timeout {}  down_after {}  up_after {}  expect {}",
            h.path,
            format_duration(h.interval),
            format_duration(h.timeout),
            h.down_after,
            h.up_after,
            h.expect
                .iter()
                .map(|&(lo, hi)| if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                })
                .collect::<Vec<_>>()
                .join(",")
        )?;
        if let Some(g) = &h.grpc_service {
            writeln!(
                s,
                "  HTTP/2 regions: grpc.health.v1 Check of service \"{g}\""
            )?;
        }
        if let Some(d) = &self.dns {
            writeln!(
                s,
                "\ndns zone {}  listen {}  ttl {}",
                d.zone,
                d.listen,
                format_duration(d.ttl)
            )?;
            writeln!(s, "  nameservers {}", d.nameservers.join(", "))?;
            for rec in &d.records {
                let answer = match rec.policy {
                    Some(p) => {
                        let ad = rec.all_down.as_ref().unwrap_or(&self.routing.all_down);
                        let mut a = format!("policy {}  all_down {}", p.as_str(), all_down(ad));
                        if let Some(z) = &rec.residency {
                            let _ = write!(a, "  residency {z}");
                        }
                        a
                    }
                    None => rec.values.join(", "),
                };
                writeln!(s, "  {} {} {answer}", rec.name, rec.kind.as_str())?;
            }
        }
        let l = &self.limits;
        writeln!(s, "\nlimits")?;
        writeln!(
            s,
            "  max_key_bytes {}  max_value_bytes {}  idempotency_ttl {}  session_wait {}  read_cache_bytes {}  max_pending_writes {}  max_connections {}",
            l.max_key_bytes,
            l.max_value_bytes,
            format_duration(l.idempotency_ttl),
            format_duration(l.session_wait),
            l.read_cache_bytes,
            l.max_pending_writes,
            l.max_connections
        )
    }
}

/// A geo map as `CODE->member, …, default->member`; `None` when empty.
fn geo(map: &GeoMap) -> Option<String> {
    if map.has_no_rules() && map.default.is_none() {
        return None;
    }
    let mut g: Vec<String> = map.rules().map(|(k, v)| format!("{k}->{v}")).collect();
    if let Some(d) = &map.default {
        g.push(format!("default->{d}"));
    }
    Some(g.join(", "))
}
