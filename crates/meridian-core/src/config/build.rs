//! Reads every section of the file into the resolved model, checking types, values and
//! cross-references. Sections are read in dependency order (regions, then zones, then everything
//! that names them) so each error points at the value that is wrong, with its own span.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::Table;

use super::diag::{Cx, Span};
use super::model::{
    AllDown, AppProtocol, CONTINENT_CODES, Cluster, Dns, DnsRecord, EDGE_CLIENT_HEADER_TIMEOUT,
    EDGE_MAX_CONNECTIONS, EDGE_TUNNEL_IDLE_TIMEOUT, EDGE_UPSTREAM_TIMEOUT, Edge, GeoMap, Health,
    Keyspace, LatLon, Limits, MAX_REQUESTS_PER_BACKEND, Policy, RecordType, Region, Replication,
    Residency, Routing, Topology, Writer, Writes, Zone,
};
use super::read::{self, Sp, Tbl};
use super::scalar;
use crate::KeyspaceType;

mod pools;

const REGION_KEYS: &[&str] = &[
    "name",
    "location",
    "node",
    "app",
    "app_protocol",
    "addresses",
    "capacity",
];
/// The values of `[[region]] app_protocol`.
const APP_PROTOCOLS: &[&str] = &["http1", "http2"];
const ROUTING_KEYS: &[&str] = &[
    "policy",
    "writes",
    "all_down",
    "sticky",
    "geo",
    "weights",
    "order",
    "pool",
    "retry_budget",
    "max_requests_per_backend",
];
const EDGE_KEYS: &[&str] = &[
    "name",
    "listen",
    "admin",
    "location",
    "geoip",
    "trusted_proxies",
    "client_header_timeout",
    "tunnel_idle_timeout",
    "upstream_timeout",
    "access_log",
    "max_connections",
];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "down_after",
    "up_after",
    "expect",
    "grpc_service",
];
const KEYSPACE_KEYS: &[&str] = &[
    "name",
    "type",
    "replication",
    "quorum",
    "sync_timeout",
    "writer",
    "forward",
    "ttl",
    "residency",
];
const DNS_KEYS: &[&str] = &[
    "listen",
    "zone",
    "ttl",
    "nameservers",
    "record",
    "udp_threads",
];
const RECORD_KEYS: &[&str] = &[
    "name",
    "type",
    "values",
    "policy",
    "geo",
    "all_down",
    "residency",
];
const LIMITS_KEYS: &[&str] = &[
    "max_key_bytes",
    "max_value_bytes",
    "client_header_timeout",
    "idempotency_ttl",
    "session_wait",
    "read_cache_bytes",
    "max_pending_writes",
    "max_connections",
];
/// The range of a `client_header_timeout` (node or edge), both ends included.
const HEADER_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// The range of a `max_connections` (node or edge), both ends included.
const MAX_CONNECTIONS: (i64, i64) = (1, 1_000_000);
/// The range of an edge's `upstream_timeout`, both ends included.
const UPSTREAM_TIMEOUTS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// The range of an edge's `tunnel_idle_timeout`, both ends included.
const TUNNEL_IDLE_TIMEOUTS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));
const POLICIES: &[&str] = &["latency", "proximity", "geo", "weighted", "failover"];
const RECORD_TYPES: &[&str] = &["A", "AAAA", "CNAME", "TXT", "MX", "NS"];

/// Names defined so far, for cross-reference checks.
struct Known {
    /// Every `[[region]]` name written, valid or not (so one bad region does not cascade).
    regions: Vec<String>,
    zones: Vec<Zone>,
}

impl Known {
    /// Reports a reference to an undefined region as "{prefix} unknown region `x`"; true when
    /// the region exists.
    fn region(&self, cx: &mut Cx<'_>, prefix: &str, r: &Sp<String>) -> bool {
        if self.regions.contains(&r.v) {
            return true;
        }
        let defined = self
            .regions
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = match scalar::closest(&r.v, self.regions.iter().map(String::as_str)) {
            Some(near) => format!("did you mean `{near}`? regions defined: {defined}"),
            None if self.regions.is_empty() => "no `[[region]]` is defined".to_string(),
            None => format!("regions defined: {defined}"),
        };
        cx.error(
            &r.span,
            format!("{prefix} unknown region `{}`", r.v),
            Some(hint),
        );
        false
    }
}

/// A listening address claimed by some process of the topology.
struct Listener {
    addr: String,
    span: Span,
    owner: String,
}

/// Builds the topology; `None` only when a diagnostic has been recorded.
pub(super) fn build(cx: &mut Cx<'_>, doc: &Table) -> Option<Topology> {
    let root = read::root(doc);
    root.allow(cx, read::SECTIONS);
    let mut listeners = Vec::new();

    let cluster = cluster(cx, &root);
    let (regions, region_names) = regions(cx, &root, &mut listeners);
    let mut known = Known {
        regions: region_names,
        zones: Vec::new(),
    };
    known.zones = zones(cx, &root, &known);
    let limits = limits(cx, &root);
    let health = health(cx, &root);
    let routing = routing(cx, &root, &known, &regions);
    let edges = edges(cx, &root, &mut listeners);
    let keyspaces = keyspaces(cx, &root, &known);
    let dns = match root.has("dns") {
        true => Some(dns(
            cx,
            &root,
            &known,
            &regions,
            routing.as_ref(),
            &mut listeners,
        )?),
        false => None,
    };
    check_listeners(cx, &listeners);

    Some(Topology {
        cluster: cluster?,
        zones: known.zones,
        regions,
        routing: routing?,
        edges,
        health: health?,
        keyspaces,
        dns,
        limits: limits?,
    })
}

fn check_name(cx: &mut Cx<'_>, kind: &str, name: &Sp<String>, underscore: bool) -> bool {
    match scalar::name(&name.v, underscore) {
        Ok(()) => true,
        Err((msg, hint)) => {
            cx.error(&name.span, format!("{kind} {msg}"), Some(hint));
            false
        }
    }
}

/// Reports a name already used by an earlier entry of the same kind.
fn check_unique(cx: &mut Cx<'_>, kind: &str, seen: &mut HashMap<String, Span>, name: &Sp<String>) {
    if let Some(first) = seen.get(&name.v) {
        let line = cx.line_of(first);
        cx.error(
            &name.span,
            format!("{kind} `{}` is defined twice", name.v),
            Some(format!(
                "the first is at line {line}; {kind} names must be unique"
            )),
        );
    } else {
        seen.insert(name.v.clone(), name.span.clone());
    }
}

fn cluster(cx: &mut Cx<'_>, root: &Tbl<'_>) -> Option<Cluster> {
    if !root.has("cluster") {
        cx.error(
            &(0..0),
            "missing `[cluster]` section",
            Some("add `[cluster]` with `name = \"shop\"`".to_string()),
        );
        return None;
    }
    let t = root.table(cx, "cluster", "[cluster]".to_string())?;
    t.allow(cx, &["name", "secret_file"]);
    let name = t.req_str(cx, "name", "name = \"shop\"");
    let name_ok = name
        .as_ref()
        .is_some_and(|n| check_name(cx, "cluster", n, false));
    let secret_file = path(cx, &t, "secret_file");
    match (name, name_ok) {
        (Some(n), true) => Some(Cluster {
            name: n.v,
            secret_file,
        }),
        _ => None,
    }
}

/// An optional non-empty path.
fn path(cx: &mut Cx<'_>, t: &Tbl<'_>, key: &str) -> Option<PathBuf> {
    let s = t.str(cx, key)?;
    if s.v.trim().is_empty() {
        cx.error(
            &s.span,
            format!("{}: {key} must not be empty", t.label),
            Some(format!("give a file path, or remove `{key}`")),
        );
        return None;
    }
    Some(PathBuf::from(s.v))
}

fn location(cx: &mut Cx<'_>, t: &Tbl<'_>) -> Option<LatLon> {
    let loc = t.table(cx, "location", format!("{}: location", t.label))?;
    loc.allow(cx, &["lat", "lon"]);
    let example = "location = { lat = 38.9, lon = -77.4 }";
    let mut coord = |key: &str, max: f64| {
        if !loc.has(key) {
            loc.missing(cx, key, example);
        }
        let v = loc.number(cx, key)?;
        if !(-max..=max).contains(&v.v) {
            cx.error(
                &v.span,
                format!("{}: {key} = {} is out of range", loc.label, v.v),
                Some(format!("{key} is in degrees, between -{max} and {max}")),
            );
            return None;
        }
        Some(v.v)
    };
    let lat = coord("lat", 90.0);
    let lon = coord("lon", 180.0);
    Some(LatLon {
        lat: lat?,
        lon: lon?,
    })
}

/// Normalizes a `host:port` so equal listeners compare equal; `None` for wildcard binds
/// (`0.0.0.0`, `[::]`), which name no particular host and so cannot clash across machines.
fn listener_key(host_port: &str) -> Option<String> {
    match host_port.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => None,
        Ok(a) => Some(a.to_string()),
        Err(_) => Some(host_port.to_ascii_lowercase()),
    }
}

fn listen(listeners: &mut Vec<Listener>, host_port: &str, span: &Span, owner: String) {
    if let Some(addr) = listener_key(host_port) {
        listeners.push(Listener {
            addr,
            span: span.clone(),
            owner,
        });
    }
}

fn check_listeners(cx: &mut Cx<'_>, listeners: &[Listener]) {
    for (i, l) in listeners.iter().enumerate() {
        if let Some(first) = listeners[..i].iter().find(|f| f.addr == l.addr) {
            let line = cx.line_of(&first.span);
            cx.error(
                &l.span,
                format!(
                    "{} uses {}, which {} already uses",
                    l.owner, l.addr, first.owner
                ),
                Some(format!(
                    "the other is at line {line}; give every listener its own address or port"
                )),
            );
        }
    }
}

fn socket_addr(cx: &mut Cx<'_>, t: &Tbl<'_>, key: &str, example: &str) -> Option<Sp<SocketAddr>> {
    let s = t.req_str(cx, key, example)?;
    match s.v.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            cx.error(
                &s.span,
                format!("{}: {key} = \"{}\" has port 0", t.label, s.v),
                Some(format!("give a fixed port, like `{example}`")),
            );
            None
        }
        Ok(a) => Some(Sp { v: a, span: s.span }),
        Err(_) => {
            cx.error(
                &s.span,
                format!(
                    "{}: {key} = \"{}\" is not an IP address and port",
                    t.label, s.v
                ),
                Some(format!(
                    "write it as `ip:port`, like `{example}` (IPv6: `[::1]:8080`)"
                )),
            );
            None
        }
    }
}

fn regions(
    cx: &mut Cx<'_>,
    root: &Tbl<'_>,
    listeners: &mut Vec<Listener>,
) -> (Vec<Region>, Vec<String>) {
    if !root.has("region") {
        cx.error(
            &(0..0),
            "no `[[region]]` is defined",
            Some(
                "a topology needs at least one region: add `[[region]]` with `name` and `node`"
                    .to_string(),
            ),
        );
    }
    let mut out = Vec::new();
    let mut names = Vec::new();
    let mut seen = HashMap::new();
    for mut t in root.tables(cx, "region", |i| format!("[[region]] #{}", i + 1)) {
        let name = t.req_str(cx, "name", "name = \"us-east-1\"");
        let mut ok = true;
        if let Some(n) = &name {
            t.label = format!("region `{}`", n.v);
            ok &= check_name(cx, "region", n, false);
            check_unique(cx, "region", &mut seen, n);
            names.push(n.v.clone());
        }
        t.allow(cx, REGION_KEYS);
        let location = if t.has("location") {
            let l = location(cx, &t);
            ok &= l.is_some();
            l
        } else {
            None
        };
        let node = t
            .req_str(cx, "node", "node = \"http://127.0.0.1:7601\"")
            .and_then(|n| match scalar::http_url(&n.v, false) {
                Ok(addr) => {
                    listen(listeners, &addr, &n.span, format!("{} node", t.label));
                    Some(n.v)
                }
                Err(e) => {
                    cx.error(
                        &n.span,
                        format!("{}: node: {e}", t.label),
                        Some(
                            "the node is `http://host:port`, like `http://127.0.0.1:7601`"
                                .to_string(),
                        ),
                    );
                    None
                }
            });
        let mut app = Vec::new();
        for a in t.str_array(cx, "app").map(|a| a.v).unwrap_or_default() {
            match scalar::http_url(&a.v, true) {
                Ok(addr) => {
                    listen(
                        listeners,
                        &addr,
                        &a.span,
                        format!("{} app backend", t.label),
                    );
                    app.push(a.v);
                }
                Err(e) => {
                    ok = false;
                    cx.error(
                        &a.span,
                        format!("{}: app: {e}", t.label),
                        Some(
                            "an app backend is `http://host:port` or `https://host:port`, like \
                             `http://127.0.0.1:8601`"
                                .to_string(),
                        ),
                    );
                }
            }
        }
        let mut addresses = Vec::new();
        for a in t
            .str_array(cx, "addresses")
            .map(|a| a.v)
            .unwrap_or_default()
        {
            match a.v.parse::<IpAddr>() {
                Ok(ip) => addresses.push(ip),
                Err(_) => {
                    ok = false;
                    cx.error(
                        &a.span,
                        format!("{}: addresses: `{}` is not an IP address", t.label, a.v),
                        Some("give IPv4 or IPv6 addresses, like `192.0.2.10`".to_string()),
                    );
                }
            }
        }
        let capacity = match t.int_in(cx, "capacity", 1, 1_000_000, "relative capacity") {
            Some(c) => u32::try_from(c.v).ok(),
            None if t.has("capacity") => None,
            None => Some(100),
        };
        let app_protocol = match t.str(cx, "app_protocol") {
            Some(s) => match s.v.as_str() {
                "http1" => Some(AppProtocol::Http1),
                "http2" => Some(AppProtocol::Http2),
                _ => {
                    one_of(cx, &t, "app_protocol", &s, APP_PROTOCOLS);
                    None
                }
            },
            None if t.has("app_protocol") => None,
            None => Some(AppProtocol::Http1),
        };
        if let (Some(name), Some(node), Some(capacity), Some(app_protocol), true) =
            (name, node, capacity, app_protocol, ok)
        {
            out.push(Region {
                name: name.v,
                location,
                node,
                app,
                app_protocol,
                addresses,
                capacity,
            });
        }
    }
    (out, names)
}

fn zones(cx: &mut Cx<'_>, root: &Tbl<'_>, known: &Known) -> Vec<Zone> {
    let Some(t) = root.table(cx, "zones", "[zones]".to_string()) else {
        return Vec::new();
    };
    let mut out: Vec<Zone> = Vec::new();
    let mut zone_of: HashMap<String, String> = HashMap::new();
    for (key, key_span, node) in t.keys() {
        let zone_name = Sp {
            v: key.to_string(),
            span: key_span.clone(),
        };
        check_name(cx, "zone", &zone_name, false);
        let value_span = t.span_of(key);
        let label = format!("zone `{key}`");
        let Some(members) = read::node_str_array(cx, node, &value_span, &label) else {
            continue;
        };
        if members.is_empty() {
            cx.error(
                &value_span,
                format!("zone `{key}` lists no regions"),
                Some(format!(
                    "list the regions in it, like `{key} = [\"eu-west-1\"]`, or remove it"
                )),
            );
            continue;
        }
        let mut regions = Vec::new();
        for m in members {
            if !known.region(cx, &format!("{label} lists"), &m) {
                continue;
            }
            if regions.contains(&m.v) {
                cx.error(
                    &m.span,
                    format!("zone `{key}` lists region `{}` twice", m.v),
                    None,
                );
                continue;
            }
            if let Some(other) = zone_of.get(&m.v) {
                cx.error(
                    &m.span,
                    format!("region `{}` is in two zones, `{other}` and `{key}`", m.v),
                    Some("a region belongs to at most one zone; remove it from one".to_string()),
                );
                continue;
            }
            zone_of.insert(m.v.clone(), key.to_string());
            regions.push(m.v);
        }
        out.push(Zone {
            name: key.to_string(),
            regions,
        });
    }
    out
}

fn limits(cx: &mut Cx<'_>, root: &Tbl<'_>) -> Option<Limits> {
    let d = Limits::default();
    if !root.has("limits") {
        return Some(d);
    }
    let t = root.table(cx, "limits", "[limits]".to_string())?;
    t.allow(cx, LIMITS_KEYS);
    let max_key_bytes = count_in(
        cx,
        &t,
        "max_key_bytes",
        (1, 65_536),
        "bytes",
        d.max_key_bytes,
    );
    let max_value_bytes = count_in(
        cx,
        &t,
        "max_value_bytes",
        (1, 64 * 1024 * 1024),
        "bytes",
        d.max_value_bytes,
    );
    let read_cache_bytes = count_in(
        cx,
        &t,
        "read_cache_bytes",
        (0, 64 << 30),
        "bytes",
        d.read_cache_bytes,
    );
    let max_pending_writes = count_in(
        cx,
        &t,
        "max_pending_writes",
        (1, 1_000_000),
        "writes",
        d.max_pending_writes,
    );
    let max_connections = count_in(
        cx,
        &t,
        "max_connections",
        MAX_CONNECTIONS,
        "connections",
        d.max_connections,
    );
    let client_header_timeout = duration_in(
        cx,
        &t,
        "client_header_timeout",
        HEADER_TIMEOUTS,
        d.client_header_timeout,
    );
    let idempotency_ttl = duration_in(
        cx,
        &t,
        "idempotency_ttl",
        (Duration::from_secs(1), Duration::from_secs(30 * 86_400)),
        d.idempotency_ttl,
    );
    let session_wait = duration_in(
        cx,
        &t,
        "session_wait",
        (Duration::ZERO, Duration::from_secs(60)),
        d.session_wait,
    );
    Some(Limits {
        max_key_bytes: max_key_bytes?,
        max_value_bytes: max_value_bytes?,
        idempotency_ttl: idempotency_ttl?,
        session_wait: session_wait?,
        read_cache_bytes: read_cache_bytes?,
        client_header_timeout: client_header_timeout?,
        max_pending_writes: max_pending_writes?,
        max_connections: max_connections?,
    })
}

/// The count at `key` of `t` (bytes, writes, connections: `what`), within `lo..=hi` (both
/// included); `default` when absent; `None`, with an error at the value, when it is not an
/// integer in range.
fn count_in(
    cx: &mut Cx<'_>,
    t: &Tbl<'_>,
    key: &str,
    (lo, hi): (i64, i64),
    what: &str,
    default: usize,
) -> Option<usize> {
    match t.int_in(cx, key, lo, hi, what) {
        Some(v) => usize::try_from(v.v).ok(),
        None if t.has(key) => None,
        None => Some(default),
    }
}

/// The duration at `key` of `t`, within `lo..=hi` (both included); `default` when absent; an
/// error at the value when it is out of range.
fn duration_in(
    cx: &mut Cx<'_>,
    t: &Tbl<'_>,
    key: &str,
    (lo, hi): (Duration, Duration),
    default: Duration,
) -> Option<Duration> {
    let Some(v) = t.duration(cx, key) else {
        return if t.has(key) { None } else { Some(default) };
    };
    if v.v < lo || v.v > hi {
        cx.error(
            &v.span,
            format!(
                "{}: {key} = {} is out of range",
                t.label,
                scalar::format_duration(v.v)
            ),
            Some(format!(
                "{key} must be between {} and {}",
                scalar::format_duration(lo),
                scalar::format_duration(hi)
            )),
        );
        return None;
    }
    Some(v.v)
}

fn health(cx: &mut Cx<'_>, root: &Tbl<'_>) -> Option<Health> {
    let d = Health::default();
    if !root.has("health") {
        return Some(d);
    }
    let t = root.table(cx, "health", "[health]".to_string())?;
    t.allow(cx, HEALTH_KEYS);
    let path = match t.str(cx, "path") {
        Some(p) if p.v.starts_with('/') && !p.v.contains(char::is_whitespace) => Some(p.v),
        Some(p) => {
            cx.error(
                &p.span,
                format!(
                    "{}: path `{}` must start with `/` and contain no spaces",
                    t.label, p.v
                ),
                Some("like `path = \"/health/ready\"`".to_string()),
            );
            None
        }
        None if t.has("path") => None,
        None => Some(d.path.clone()),
    };
    let interval = t.nonzero_duration(cx, "interval");
    let timeout = t.nonzero_duration(cx, "timeout");
    if let (Some(i), Some(to)) = (&interval, &timeout)
        && to.v > i.v
    {
        cx.error(
            &to.span,
            format!(
                "{}: timeout = {} is longer than interval = {}",
                t.label,
                scalar::format_duration(to.v),
                scalar::format_duration(i.v)
            ),
            Some(format!(
                "a probe must end before the next one starts: set timeout to at most {}",
                scalar::format_duration(i.v)
            )),
        );
    }
    let interval_v = pick(&t, "interval", interval.map(|i| i.v), d.interval);
    let timeout_v = pick(&t, "timeout", timeout.map(|i| i.v), d.timeout);
    if t.has("timeout") != t.has("interval")
        && let (Some(i), Some(to)) = (interval_v, timeout_v)
        && to > i
    {
        let key = if t.has("timeout") {
            "timeout"
        } else {
            "interval"
        };
        cx.error(
            &t.span_of(key),
            format!(
                "{}: timeout = {} is longer than interval = {}",
                t.label,
                scalar::format_duration(to),
                scalar::format_duration(i)
            ),
            Some("set both `interval` and `timeout`, with timeout at most interval".to_string()),
        );
    }
    let count = |cx: &mut Cx<'_>, key: &str, default: u32| match t.int_in(
        cx,
        key,
        1,
        1000,
        "consecutive probes",
    ) {
        Some(v) => u32::try_from(v.v).ok(),
        None if t.has(key) => None,
        None => Some(default),
    };
    let down_after = count(cx, "down_after", d.down_after);
    let up_after = count(cx, "up_after", d.up_after);
    let expect = match t.str(cx, "expect") {
        Some(e) => match scalar::status_ranges(&e.v) {
            Ok(r) => Some(r),
            Err(why) => {
                cx.error(
                    &e.span,
                    format!("{}: expect = \"{}\": {why}", t.label, e.v),
                    Some(
                        "status codes and inclusive ranges between 100 and 599, comma-separated, like `expect = \"200-299,304\"`"
                            .to_string(),
                    ),
                );
                None
            }
        },
        None if t.has("expect") => None,
        None => Some(d.expect.clone()),
    };
    let grpc_service = match t.str(cx, "grpc_service") {
        Some(g)
            if g.v.len() <= 256 && !g.v.contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            Some(Some(g.v))
        }
        Some(g) => {
            cx.error(
                &g.span,
                format!(
                    "{}: grpc_service `{}` is not a gRPC service name",
                    t.label, g.v
                ),
                Some(
                    "a fully qualified service, like `grpc_service = \"shop.Cart\"`, or `\"\"` for the whole server (at most 256 bytes, no spaces)"
                        .to_string(),
                ),
            );
            None
        }
        None if t.has("grpc_service") => None,
        None => Some(None),
    };
    Some(Health {
        path: path?,
        interval: interval_v?,
        timeout: timeout_v?,
        down_after: down_after?,
        up_after: up_after?,
        expect: expect?,
        grpc_service: grpc_service?,
    })
}

/// The read value, the default when the key is absent, or `None` when it was present but bad.
fn pick<T>(t: &Tbl<'_>, key: &str, read: Option<T>, default: T) -> Option<T> {
    match read {
        Some(v) => Some(v),
        None if t.has(key) => None,
        None => Some(default),
    }
}

fn one_of(cx: &mut Cx<'_>, t: &Tbl<'_>, key: &str, s: &Sp<String>, allowed: &[&str]) {
    let list = allowed
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match scalar::closest(&s.v, allowed.iter().copied()) {
        Some(near) => format!("did you mean `{near}`? {key} is one of {list}"),
        None => format!("{key} is one of {list}"),
    };
    cx.error(
        &s.span,
        format!("{}: {key} = \"{}\" is not known", t.label, s.v),
        Some(hint),
    );
}

fn policy(cx: &mut Cx<'_>, t: &Tbl<'_>) -> Option<Sp<Policy>> {
    let s = t.str(cx, "policy")?;
    let p = match s.v.as_str() {
        "latency" => Policy::Latency,
        "proximity" => Policy::Proximity,
        "geo" => Policy::Geo,
        "weighted" => Policy::Weighted,
        "failover" => Policy::Failover,
        _ => {
            one_of(cx, t, "policy", &s, POLICIES);
            return None;
        }
    };
    Some(Sp { v: p, span: s.span })
}

fn all_down(cx: &mut Cx<'_>, t: &Tbl<'_>, known: &Known) -> Option<AllDown> {
    let s = t.str(cx, "all_down")?;
    match s.v.as_str() {
        "fail-open" => Some(AllDown::FailOpen),
        "fail-closed" => Some(AllDown::FailClosed),
        other => match other.strip_prefix("fallback:") {
            Some(r) => {
                let r = Sp {
                    v: r.to_string(),
                    span: s.span.clone(),
                };
                known
                    .region(cx, &format!("{}: all_down names", t.label), &r)
                    .then_some(AllDown::Fallback(r.v))
            }
            None => {
                one_of(
                    cx,
                    t,
                    "all_down",
                    &s,
                    &["fail-open", "fail-closed", "fallback:<region>"],
                );
                None
            }
        },
    }
}

/// Checks that a value names something its level may name, reporting why not. Called with
/// the message prefix and the name.
type MemberCheck<'f> = dyn Fn(&mut Cx<'_>, &str, &Sp<String>) -> bool + 'f;

/// Reads a country/continent map whose values `check` accepts (members of one tree level).
fn geo_map(cx: &mut Cx<'_>, g: &Tbl<'_>, check: &MemberCheck<'_>) -> Option<GeoMap> {
    let mut map = GeoMap::default();
    let mut ok = true;
    for (key, key_span, node) in g.keys() {
        let span = g.span_of(key);
        let Some(region) = read::node_str(cx, node, &span, &format!("{}: `{key}`", g.label)) else {
            ok = false;
            continue;
        };
        let region = Sp { v: region, span };
        ok &= check(cx, &format!("{}: `{key}` names", g.label), &region);
        if key == "default" {
            map.default = Some(region.v);
            continue;
        }
        let (rules, code) = match geo_key(key) {
            Ok(GeoKey::Country(code)) => (&mut map.countries, code),
            Ok(GeoKey::Continent(code)) => (&mut map.continents, code),
            Err(hint) => {
                ok = false;
                cx.error(
                    &key_span,
                    format!("{}: `{key}` is not a country or continent code", g.label),
                    Some(hint),
                );
                continue;
            }
        };
        if let Some(first) = rules.insert(code.to_string(), region.v) {
            ok = false;
            cx.error(
                &key_span,
                format!(
                    "{}: `{key}` is the same rule as an earlier key (which names `{first}`)",
                    g.label
                ),
                Some("write each country and each continent once".to_string()),
            );
        }
    }
    ok.then_some(map)
}

/// What a geo map key (other than `default`) is a rule for.
#[derive(Debug, PartialEq, Eq)]
enum GeoKey<'k> {
    Country(&'k str),
    Continent(&'k str),
}

/// Reads a geo map key: `DE` (a country), one of [`CONTINENT_CODES`] (a continent),
/// `country:NA` or `continent:EU`. A key that is none of these gets the hint to show.
fn geo_key(key: &str) -> Result<GeoKey<'_>, String> {
    let two_upper = |c: &str| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase());
    let continents = CONTINENT_CODES.join("`, `");
    if let Some(code) = key.strip_prefix("country:") {
        return if two_upper(code) {
            Ok(GeoKey::Country(code))
        } else {
            Err(format!(
                "after `country:` comes a two-letter upper-case ISO 3166 code, such as `country:NA` (Namibia){}",
                upper_hint(code, "country:")
            ))
        };
    }
    if let Some(code) = key.strip_prefix("continent:") {
        return if CONTINENT_CODES.contains(&code) {
            Ok(GeoKey::Continent(code))
        } else {
            Err(format!(
                "after `continent:` comes one of `{continents}`{}",
                upper_hint(code, "continent:")
            ))
        };
    }
    if CONTINENT_CODES.contains(&key) {
        return Ok(GeoKey::Continent(key));
    }
    if two_upper(key) {
        return Ok(GeoKey::Country(key));
    }
    Err(format!(
        "keys are two-letter upper-case ISO country codes (`DE`), the continent codes `{continents}`, \
         `country:NA` for a country whose code is a continent's, or `default`{}",
        upper_hint(key, "")
    ))
}

/// `; did you mean …?` when `code` is two letters, not all upper-case.
fn upper_hint(code: &str, prefix: &str) -> String {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        format!("; did you mean `{prefix}{}`?", code.to_ascii_uppercase())
    } else {
        String::new()
    }
}

fn routing(cx: &mut Cx<'_>, root: &Tbl<'_>, known: &Known, regions: &[Region]) -> Option<Routing> {
    let all_regions: Vec<String> = known.regions.clone();
    let mut r = Routing {
        policy: Policy::Latency,
        writes: Writes::Any,
        all_down: AllDown::FailOpen,
        sticky: true,
        geo: GeoMap::default(),
        weights: all_regions.iter().map(|n| (n.clone(), 100)).collect(),
        order: all_regions.clone(),
        retry_budget: 20,
        max_requests_per_backend: MAX_REQUESTS_PER_BACKEND,
        pools: Vec::new(),
        residency: None,
    };
    if !root.has("routing") {
        return Some(r);
    }
    let t = root.table(cx, "routing", "[routing]".to_string())?;
    t.allow(cx, ROUTING_KEYS);
    let mut ok = true;
    // Read first (everything else names pools), kept aside until `r` is complete.
    let mut pool_list = Vec::new();
    if t.has("pool") {
        match t
            .table(cx, "pool", "[routing.pool]".to_string())
            .and_then(|p| pools::read(cx, &p, known, regions))
        {
            Some(p) => pool_list = p,
            None => ok = false,
        }
    }
    let top = pools::top_level(&pool_list, &all_regions);
    let top_member = |cx: &mut Cx<'_>, what: &str, n: &Sp<String>| {
        pools::member(cx, known, &pool_list, what, n, None)
    };
    let pol = policy(cx, &t);
    ok &= pol.is_some() || !t.has("policy");
    if let Some(p) = &pol {
        r.policy = p.v;
    }
    if let Some(w) = t.str(cx, "writes") {
        match w.v.as_str() {
            "any" => r.writes = Writes::Any,
            "home" => r.writes = Writes::Home,
            other => match other.strip_prefix("primary:") {
                Some(name) => {
                    let name = Sp {
                        v: name.to_string(),
                        span: w.span.clone(),
                    };
                    ok &= known.region(cx, &format!("{}: writes names", t.label), &name);
                    r.writes = Writes::Primary(name.v);
                }
                None => {
                    ok = false;
                    one_of(cx, &t, "writes", &w, &["any", "home", "primary:<region>"]);
                }
            },
        }
    } else {
        ok &= !t.has("writes");
    }
    match all_down(cx, &t, known) {
        Some(a) => r.all_down = a,
        None => ok &= !t.has("all_down"),
    }
    match t.bool(cx, "sticky") {
        Some(s) => r.sticky = s.v,
        None => ok &= !t.has("sticky"),
    }
    match t.int_in(
        cx,
        "retry_budget",
        0,
        100,
        "percent of requests that may be retried",
    ) {
        Some(b) => r.retry_budget = u8::try_from(b.v).unwrap_or(100),
        None => ok &= !t.has("retry_budget"),
    }
    match t.int_in(
        cx,
        "max_requests_per_backend",
        1,
        1_000_000,
        "requests in flight to one backend",
    ) {
        Some(m) => r.max_requests_per_backend = usize::try_from(m.v).unwrap_or(1_000_000),
        None => ok &= !t.has("max_requests_per_backend"),
    }
    if t.has("geo") {
        match t
            .table(cx, "geo", "[routing.geo]".to_string())
            .and_then(|g| geo_map(cx, &g, &top_member))
        {
            Some(g) => r.geo = g,
            None => ok = false,
        }
    }
    if let Some(w) = t.table(cx, "weights", "[routing.weights]".to_string()) {
        for (key, key_span, node) in w.keys() {
            let name = Sp {
                v: key.to_string(),
                span: key_span,
            };
            ok &= if pool_list.iter().any(|p| p.name == name.v) {
                true
            } else {
                known.region(cx, &format!("{}: a weight is set for", w.label), &name)
            };
            let span = w.span_of(key);
            match read::node_int(cx, node, &span, &format!("{}: `{key}`", w.label)) {
                Some(pct @ 0..=100) => {
                    r.weights
                        .insert(key.to_string(), u8::try_from(pct).unwrap_or(100));
                }
                Some(pct) => {
                    ok = false;
                    cx.error(
                        &span,
                        format!("{}: weight of `{key}` = {pct} is out of range", w.label),
                        Some("weights are percentages, 0 to 100 (0 drains the region)".to_string()),
                    );
                }
                None => ok = false,
            }
        }
        if ok && all_regions.iter().all(|n| r.weights.get(n) == Some(&0)) {
            ok = false;
            cx.error(
                &w.span,
                format!(
                    "{}: every region has weight 0, so no traffic can be routed",
                    w.label
                ),
                Some("give at least one region a weight above 0".to_string()),
            );
        }
    }
    if let Some(order) = t.str_array(cx, "order") {
        let mut listed: Vec<String> = Vec::new();
        for o in order.v {
            if !top_member(cx, &format!("{}: order names", t.label), &o) {
                ok = false;
            } else if listed.contains(&o.v) {
                ok = false;
                cx.error(
                    &o.span,
                    format!("{}: order lists `{}` twice", t.label, o.v),
                    None,
                );
            } else {
                listed.push(o.v);
            }
        }
        let rest: Vec<String> = top
            .iter()
            .filter(|n| !listed.contains(n))
            .cloned()
            .collect();
        listed.extend(rest);
        r.order = listed;
    } else {
        ok &= !t.has("order");
        r.order = top;
    }
    if let Some(p) = &pol {
        match p.v {
            Policy::Geo if r.geo.default.is_none() => {
                ok = false;
                cx.error(
                    &p.span,
                    format!("{}: policy = \"geo\" needs a `default` region in [routing.geo]", t.label),
                    Some("add `[routing.geo]` with `default = \"<region>\"` for clients no rule matches".to_string()),
                );
            }
            Policy::Proximity => {
                let missing: Vec<String> = regions
                    .iter()
                    .filter(|r| r.location.is_none())
                    .map(|r| format!("`{}`", r.name))
                    .collect();
                if !missing.is_empty() {
                    ok = false;
                    cx.error(
                        &p.span,
                        format!(
                            "{}: policy = \"proximity\" needs every region's location, but {} has none",
                            t.label,
                            missing.join(", ")
                        ),
                        Some("add `location = { lat = …, lon = … }` to those regions".to_string()),
                    );
                }
            }
            _ => {}
        }
    }
    r.pools = pool_list;
    ok.then_some(r)
}

fn edges(cx: &mut Cx<'_>, root: &Tbl<'_>, listeners: &mut Vec<Listener>) -> Vec<Edge> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for mut t in root.tables(cx, "edge", |i| format!("[[edge]] #{}", i + 1)) {
        let name = t.req_str(cx, "name", "name = \"edge-eu\"");
        let mut ok = true;
        if let Some(n) = &name {
            t.label = format!("edge `{}`", n.v);
            ok &= check_name(cx, "edge", n, false);
            check_unique(cx, "edge", &mut seen, n);
        }
        t.allow(cx, EDGE_KEYS);
        let listen_addr = socket_addr(cx, &t, "listen", "listen = \"127.0.0.1:8080\"");
        let admin = socket_addr(cx, &t, "admin", "admin = \"127.0.0.1:9080\"");
        for (a, what) in [(&listen_addr, "listen"), (&admin, "admin")] {
            if let Some(a) = a {
                listen(
                    listeners,
                    &a.v.to_string(),
                    &a.span,
                    format!("{} {what}", t.label),
                );
            }
        }
        let location = if t.has("location") {
            let l = location(cx, &t);
            ok &= l.is_some();
            l
        } else {
            None
        };
        let geoip = path(cx, &t, "geoip");
        ok &= geoip.is_some() || !t.has("geoip");
        let access_log = path(cx, &t, "access_log");
        ok &= access_log.is_some() || !t.has("access_log");
        let mut trusted_proxies = Vec::new();
        for p in t
            .str_array(cx, "trusted_proxies")
            .map(|a| a.v)
            .unwrap_or_default()
        {
            match scalar::cidr(&p.v) {
                Ok(()) => trusted_proxies.push(p.v),
                Err(e) => {
                    ok = false;
                    cx.error(
                        &p.span,
                        format!("{}: trusted_proxies: {e}", t.label),
                        Some(
                            "give CIDR prefixes like `10.0.0.0/8` or single addresses".to_string(),
                        ),
                    );
                }
            }
        }
        let client_header_timeout = duration_in(
            cx,
            &t,
            "client_header_timeout",
            HEADER_TIMEOUTS,
            EDGE_CLIENT_HEADER_TIMEOUT,
        );
        let tunnel_idle_timeout = duration_in(
            cx,
            &t,
            "tunnel_idle_timeout",
            TUNNEL_IDLE_TIMEOUTS,
            EDGE_TUNNEL_IDLE_TIMEOUT,
        );
        let upstream_timeout = duration_in(
            cx,
            &t,
            "upstream_timeout",
            UPSTREAM_TIMEOUTS,
            EDGE_UPSTREAM_TIMEOUT,
        );
        let max_connections = count_in(
            cx,
            &t,
            "max_connections",
            MAX_CONNECTIONS,
            "connections",
            EDGE_MAX_CONNECTIONS,
        );
        if let (
            Some(name),
            Some(l),
            Some(a),
            Some(timeout),
            Some(tunnel_idle_timeout),
            Some(upstream_timeout),
            Some(max_connections),
            true,
        ) = (
            name,
            listen_addr,
            admin,
            client_header_timeout,
            tunnel_idle_timeout,
            upstream_timeout,
            max_connections,
            ok,
        ) {
            out.push(Edge {
                name: name.v,
                listen: l.v,
                admin: a.v,
                location,
                geoip,
                trusted_proxies,
                client_header_timeout: timeout,
                tunnel_idle_timeout,
                upstream_timeout,
                access_log,
                max_connections,
            });
        }
    }
    out
}

fn keyspaces(cx: &mut Cx<'_>, root: &Tbl<'_>, known: &Known) -> Vec<Keyspace> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for mut t in root.tables(cx, "keyspace", |i| format!("[[keyspace]] #{}", i + 1)) {
        let name = t.req_str(cx, "name", "name = \"orders\"");
        let mut ok = true;
        if let Some(n) = &name {
            t.label = format!("keyspace `{}`", n.v);
            ok &= check_name(cx, "keyspace", n, true);
            check_unique(cx, "keyspace", &mut seen, n);
        }
        t.allow(cx, KEYSPACE_KEYS);
        let kind = t.req_str(cx, "type", "type = \"register\"").and_then(|s| {
            let found = KeyspaceType::ALL.into_iter().find(|k| k.as_str() == s.v);
            if found.is_none() {
                let names: Vec<&str> = KeyspaceType::ALL.iter().map(|k| k.as_str()).collect();
                one_of(cx, &t, "type", &s, &names);
            }
            found
        });
        let replication = match t.str(cx, "replication") {
            Some(s) => match s.v.as_str() {
                "async" => Some(Replication::Async),
                "sync" => Some(Replication::Sync),
                "local" => Some(Replication::Local),
                _ => {
                    one_of(cx, &t, "replication", &s, &["async", "sync", "local"]);
                    None
                }
            },
            None if t.has("replication") => None,
            None => Some(Replication::Async),
        };
        let writer = match t.str(cx, "writer") {
            Some(s) => match s.v.as_str() {
                "any" => Some(Writer::Any),
                "home" => Some(Writer::Home),
                _ => {
                    one_of(cx, &t, "writer", &s, &["any", "home"]);
                    None
                }
            },
            None if t.has("writer") => None,
            None => Some(Writer::Any),
        };
        let forward = pick(
            &t,
            "forward",
            t.bool(cx, "forward"),
            Sp {
                v: false,
                span: 0..0,
            },
        );
        if let (Some(f), Some(Writer::Any)) = (&forward, writer)
            && f.v
        {
            ok = false;
            cx.error(
                &f.span,
                format!("{}: forward = true needs writer = \"home\"", t.label),
                Some("with writer = \"any\" every region accepts writes, so there is nothing to forward; remove `forward` or set writer = \"home\"".to_string()),
            );
        }
        let ttl = t.nonzero_duration(cx, "ttl");
        ok &= ttl.is_some() || !t.has("ttl");
        let sync_timeout = pick(
            &t,
            "sync_timeout",
            t.nonzero_duration(cx, "sync_timeout").map(|d| d.v),
            Duration::from_secs(2),
        );
        let residency = residency(cx, &t, known);
        ok &= residency.is_some() || !t.has("residency");
        let quorum = quorum(cx, &t, known, replication, residency.as_ref().map(|r| &r.v));
        ok &= quorum.is_some() || !t.has("quorum");
        if replication.is_some_and(|r| r != Replication::Sync) && t.has("sync_timeout") {
            ok = false;
            cx.error(
                &t.span_of("sync_timeout"),
                format!(
                    "{}: sync_timeout is only meaningful with replication = \"sync\"",
                    t.label
                ),
                Some("remove `sync_timeout`, or set replication = \"sync\"".to_string()),
            );
        }
        if let (
            Some(name),
            Some(kind),
            Some(replication),
            Some(writer),
            Some(forward),
            Some(sync_timeout),
            true,
        ) = (name, kind, replication, writer, forward, sync_timeout, ok)
        {
            out.push(Keyspace {
                name: name.v,
                kind,
                replication,
                quorum: quorum.flatten(),
                sync_timeout,
                writer,
                forward: forward.v,
                ttl: ttl.map(|t| t.v),
                residency: residency.map(|r| r.v),
            });
        }
    }
    out
}

fn residency(cx: &mut Cx<'_>, t: &Tbl<'_>, known: &Known) -> Option<Sp<Residency>> {
    let span = t.span_of("residency");
    if t.is_array("residency")
        && let Some(list) = t.array(cx, "residency")
    {
        let mut regions: Vec<String> = Vec::new();
        let mut ok = true;
        for (s, node) in list.v {
            let Some(r) = read::node_str(
                cx,
                node,
                &s,
                &format!("{}: every element of residency", t.label),
            ) else {
                ok = false;
                continue;
            };
            let r = Sp { v: r, span: s };
            if !known.region(cx, &format!("{}: residency names", t.label), &r) {
                ok = false;
            } else if regions.contains(&r.v) {
                ok = false;
                cx.error(
                    &r.span,
                    format!("{}: residency lists `{}` twice", t.label, r.v),
                    None,
                );
            } else {
                regions.push(r.v);
            }
        }
        if regions.is_empty() && ok {
            cx.error(
                &span,
                format!(
                    "{}: residency is an empty list, so no region may hold it",
                    t.label
                ),
                Some("list at least one region, or remove `residency`".to_string()),
            );
            return None;
        }
        return ok.then_some(Sp {
            v: Residency::Regions(regions),
            span,
        });
    }
    // Not an array: a zone name or "home-zone" (a wrong type is reported here, once).
    if !t.has("residency") {
        return None;
    }
    let s = match t.peek_str("residency") {
        Some(s) => s,
        None => {
            cx.error(
                &span,
                format!("{}: residency must be a list of regions, a zone name or \"home-zone\"", t.label),
                Some("like `residency = [\"eu-west-1\"]`, `residency = \"eu\"` or `residency = \"home-zone\"`".to_string()),
            );
            return None;
        }
    };
    if s == "home-zone" {
        if known.zones.is_empty() {
            cx.error(
                &span,
                format!(
                    "{}: residency = \"home-zone\" but no zones are defined",
                    t.label
                ),
                Some(
                    "define zones in `[zones]`, or pin the keyspace with a list of regions"
                        .to_string(),
                ),
            );
            return None;
        }
        return Some(Sp {
            v: Residency::HomeZone,
            span,
        });
    }
    if known.zones.iter().any(|z| z.name == s) {
        return Some(Sp {
            v: Residency::Zone(s),
            span,
        });
    }
    let zones: Vec<&str> = known.zones.iter().map(|z| z.name.as_str()).collect();
    let hint = if known.regions.contains(&s) {
        format!("`{s}` is a region; to pin to it write `residency = [\"{s}\"]`")
    } else if let Some(near) = scalar::closest(&s, zones.iter().copied().chain(["home-zone"])) {
        format!("did you mean `{near}`?")
    } else if zones.is_empty() {
        "no zones are defined; list regions instead, like `residency = [\"eu-west-1\"]`".to_string()
    } else {
        format!(
            "zones defined: {}; or write \"home-zone\" or a list of regions",
            zones.join(", ")
        )
    };
    cx.error(
        &span,
        format!("{}: residency names unknown zone `{s}`", t.label),
        Some(hint),
    );
    None
}

/// The resolved quorum: `Some(Some(n))` for sync, `Some(None)` otherwise, `None` when invalid.
fn quorum(
    cx: &mut Cx<'_>,
    t: &Tbl<'_>,
    known: &Known,
    replication: Option<Replication>,
    residency: Option<&Residency>,
) -> Option<Option<usize>> {
    let given = t.int(cx, "quorum");
    if t.has("quorum") && given.is_none() {
        return None;
    }
    let replication = replication?;
    if replication != Replication::Sync {
        if let Some(q) = given {
            cx.error(
                &q.span,
                format!(
                    "{}: quorum is only meaningful with replication = \"sync\" (this one is \"{}\")",
                    t.label,
                    replication.as_str()
                ),
                Some("remove `quorum`, or set replication = \"sync\"".to_string()),
            );
            return None;
        }
        return Some(None);
    }
    // How many regions may hold one key, and what to call that set in messages.
    let (holders, scope): (usize, String) = match residency {
        None => (known.regions.len(), String::new()),
        Some(Residency::Regions(list)) => (list.len(), String::new()),
        Some(Residency::Zone(z)) => (
            known
                .zones
                .iter()
                .find(|k| k.name == *z)
                .map_or(0, |k| k.regions.len()),
            format!(" (zone `{z}`)"),
        ),
        Some(Residency::HomeZone) => match known.zones.iter().min_by_key(|z| z.regions.len()) {
            Some(z) => (
                z.regions.len(),
                format!(" in its smallest home zone `{}`", z.name),
            ),
            None => (0, String::new()),
        },
    };
    if t.has("residency") && residency.is_none() {
        return None;
    }
    let Some(q) = given else {
        return Some(Some(holders / 2 + 1));
    };
    let widen = if t.has("residency") {
        "widen `residency`"
    } else {
        "add regions"
    };
    if q.v < 1 {
        cx.error(
            &q.span,
            format!(
                "{}: quorum = {} but at least 1 region must apply a write",
                t.label, q.v
            ),
            Some(format!("set quorum between 1 and {holders}")),
        );
        return None;
    }
    if usize::try_from(q.v).map_or(true, |n| n > holders) {
        let regions = if holders == 1 { "region" } else { "regions" };
        cx.error(
            &q.span,
            format!(
                "{}: quorum = {} but only {holders} {regions} may hold it{scope}",
                t.label, q.v
            ),
            Some(format!("set quorum to at most {holders}, or {widen}")),
        );
        return None;
    }
    usize::try_from(q.v).ok().map(Some)
}

fn dns(
    cx: &mut Cx<'_>,
    root: &Tbl<'_>,
    known: &Known,
    regions: &[Region],
    routing: Option<&Routing>,
    listeners: &mut Vec<Listener>,
) -> Option<Dns> {
    let t = root.table(cx, "dns", "[dns]".to_string())?;
    t.allow(cx, DNS_KEYS);
    let mut ok = true;
    let listen_addr = socket_addr(cx, &t, "listen", "listen = \"127.0.0.1:5353\"");
    if let Some(a) = &listen_addr {
        listen(
            listeners,
            &a.v.to_string(),
            &a.span,
            "[dns] listen".to_string(),
        );
    }
    let zone =
        t.req_str(cx, "zone", "zone = \"example.test.\"")
            .and_then(|z| match scalar::dns_name(&z.v) {
                Ok(()) if z.v.ends_with('.') => Some(z.v),
                Ok(()) => {
                    cx.error(
                        &z.span,
                        format!("{}: zone `{}` must end with `.`", t.label, z.v),
                        Some(format!("write the absolute name: `{}.`", z.v)),
                    );
                    None
                }
                Err(e) => {
                    cx.error(
                        &z.span,
                        format!("{}: zone: {e}", t.label),
                        Some("like `example.test.`".to_string()),
                    );
                    None
                }
            });
    let ttl = pick(
        &t,
        "ttl",
        t.nonzero_duration(cx, "ttl").map(|d| d.v),
        Duration::from_secs(30),
    );
    let udp_threads = match t.int_in(cx, "udp_threads", 1, 64, "threads answering UDP") {
        Some(n) => usize::try_from(n.v).ok(),
        None if t.has("udp_threads") => {
            ok = false;
            None
        }
        None => None,
    };
    let mut nameservers = Vec::new();
    match t.str_array(cx, "nameservers") {
        Some(ns) if ns.v.is_empty() && t.has("nameservers") => {
            ok = false;
            cx.error(
                &ns.span,
                format!("{}: nameservers is empty", t.label),
                Some(
                    "list the zone's name servers, like `nameservers = [\"ns1.example.test.\"]`"
                        .to_string(),
                ),
            );
        }
        Some(ns) => {
            for n in ns.v {
                match scalar::dns_name(&n.v) {
                    Ok(()) => nameservers.push(n.v),
                    Err(e) => {
                        ok = false;
                        cx.error(&n.span, format!("{}: nameservers: {e}", t.label), None);
                    }
                }
            }
        }
        None if t.has("nameservers") => ok = false,
        None => {
            ok = false;
            t.missing(cx, "nameservers", "nameservers = [\"ns1.example.test.\"]");
        }
    }
    let mut records = Vec::new();
    let mut seen: Vec<(String, RecordType, Span)> = Vec::new();
    for mut r in t.tables(cx, "record", |i| format!("[[dns.record]] #{}", i + 1)) {
        let Some(rec) = record(cx, &mut r, known, regions, routing) else {
            ok = false;
            continue;
        };
        let name_span = r.span_of("name");
        if let Some((_, _, first)) = seen
            .iter()
            .find(|(n, k, _)| *n == rec.name && *k == rec.kind)
        {
            ok = false;
            let line = cx.line_of(first);
            cx.error(
                &name_span,
                format!(
                    "dns record `{}` {} is defined twice",
                    rec.name,
                    rec.kind.as_str()
                ),
                Some(format!(
                    "the first is at line {line}; put all values in one record"
                )),
            );
        } else if let Some((_, _, first)) = seen.iter().find(|(n, k, _)| {
            *n == rec.name && (*k == RecordType::Cname) != (rec.kind == RecordType::Cname)
        }) {
            ok = false;
            let line = cx.line_of(first);
            cx.error(
                &name_span,
                format!(
                    "dns record `{}`: a CNAME cannot share its name with other records",
                    rec.name
                ),
                Some(format!(
                    "the other record is at line {line}; rename one of them"
                )),
            );
        }
        seen.push((rec.name.clone(), rec.kind, name_span));
        records.push(rec);
    }
    match (listen_addr, zone, ttl, ok) {
        (Some(l), Some(zone), Some(ttl), true) => Some(Dns {
            listen: l.v,
            zone,
            ttl,
            nameservers,
            records,
            udp_threads,
        }),
        _ => None,
    }
}

fn record(
    cx: &mut Cx<'_>,
    r: &mut Tbl<'_>,
    known: &Known,
    regions: &[Region],
    routing: Option<&Routing>,
) -> Option<DnsRecord> {
    let name = r.req_str(cx, "name", "name = \"www\"");
    let mut ok = true;
    if let Some(n) = &name {
        r.label = format!("dns record `{}`", n.v);
        if n.v != "@" {
            let err = if n.v.ends_with('.') {
                Some("names are relative to the zone: write `www`, or `@` for the apex".to_string())
            } else {
                scalar::dns_name(&n.v).err()
            };
            if let Some(e) = err {
                ok = false;
                cx.error(&n.span, format!("{}: bad name", r.label), Some(e));
            }
        }
    }
    r.allow(cx, RECORD_KEYS);
    let kind = r.req_str(cx, "type", "type = \"A\"").and_then(|s| {
        let k = match s.v.as_str() {
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            "CNAME" => Some(RecordType::Cname),
            "TXT" => Some(RecordType::Txt),
            "MX" => Some(RecordType::Mx),
            "NS" => Some(RecordType::Ns),
            _ => None,
        };
        if k.is_none() {
            one_of(cx, r, "type", &s, RECORD_TYPES);
        }
        k
    });
    let policy = policy(cx, r);
    ok &= policy.is_some() || !r.has("policy");
    let values = r.str_array(cx, "values");
    ok &= values.is_some() || !r.has("values");
    let geo = match r.table(cx, "geo", format!("{}: geo", r.label)) {
        Some(g) => {
            let pools = routing.map_or(&[][..], |r| &r.pools);
            let check = |cx: &mut Cx<'_>, what: &str, n: &Sp<String>| {
                pools::member(cx, known, pools, what, n, None)
            };
            let m = geo_map(cx, &g, &check);
            ok &= m.is_some();
            m
        }
        None => {
            ok &= !r.has("geo");
            None
        }
    };
    let all_down_v = all_down(cx, r, known);
    ok &= all_down_v.is_some() || !r.has("all_down");
    let residency = r.str(cx, "residency");
    if let Some(z) = &residency
        && !known.zones.iter().any(|k| k.name == z.v)
    {
        ok = false;
        let zones: Vec<&str> = known.zones.iter().map(|k| k.name.as_str()).collect();
        let hint = match scalar::closest(&z.v, zones.iter().copied()) {
            Some(near) => format!("did you mean `{near}`? zones defined: {}", zones.join(", ")),
            None if zones.is_empty() => "define the zone in `[zones]` first".to_string(),
            None => format!("zones defined: {}", zones.join(", ")),
        };
        cx.error(
            &z.span,
            format!("{}: residency names unknown zone `{}`", r.label, z.v),
            Some(hint),
        );
    }
    ok &= residency.is_some() || !r.has("residency");
    let (Some(name), Some(kind)) = (name, kind) else {
        return None;
    };

    match &policy {
        Some(p) => {
            let v4 = match kind {
                RecordType::A => true,
                RecordType::Aaaa => false,
                _ => {
                    cx.error(
                        &p.span,
                        format!("{}: policy only applies to A and AAAA records", r.label),
                        Some("remove `policy`, or make this an A or AAAA record".to_string()),
                    );
                    return None;
                }
            };
            if values.as_ref().is_some_and(|v| !v.v.is_empty()) {
                ok = false;
                cx.error(
                    &r.span_of("values"),
                    format!("{}: values and policy cannot both be set", r.label),
                    Some("a policy record answers with the chosen regions' `addresses`; remove `values`".to_string()),
                );
            }
            if !regions
                .iter()
                .any(|g| g.addresses.iter().any(|a| a.is_ipv4() == v4))
            {
                ok = false;
                cx.error(
                    &p.span,
                    format!(
                        "{}: policy answers with region addresses, but no region has an {} address",
                        r.label,
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                    Some(
                        "add `addresses = [...]` to the regions this record should answer with"
                            .to_string(),
                    ),
                );
            }
            let geo_default = geo
                .as_ref()
                .or(routing.map(|r| &r.geo))
                .and_then(|g| g.default.as_ref());
            if p.v == Policy::Geo && geo_default.is_none() && routing.is_some() {
                ok = false;
                cx.error(
                    &p.span,
                    format!("{}: policy = \"geo\" needs a geo map with a `default` region", r.label),
                    Some("add `geo = { EU = \"…\", default = \"…\" }` here, or a `default` in [routing.geo]".to_string()),
                );
            }
            if p.v != Policy::Geo && r.has("geo") {
                ok = false;
                cx.error(
                    &r.span_of("geo"),
                    format!("{}: geo is only meaningful with policy = \"geo\"", r.label),
                    Some("remove `geo`, or set policy = \"geo\"".to_string()),
                );
            }
            if let Some(z) = &residency
                && let Some(zone) = known.zones.iter().find(|k| k.name == z.v)
            {
                let answers = |name: &String| {
                    regions
                        .iter()
                        .any(|g| &g.name == name && g.addresses.iter().any(|a| a.is_ipv4() == v4))
                };
                if !zone.regions.iter().any(answers) {
                    ok = false;
                    cx.error(
                        &z.span,
                        format!(
                            "{}: no region of zone `{}` has an {} address, so every answer would be empty",
                            r.label,
                            z.v,
                            if v4 { "IPv4" } else { "IPv6" }
                        ),
                        Some(format!("add `addresses` to a region of `{}`: {}", z.v, zone.regions.join(", "))),
                    );
                }
                let fallback = match &all_down_v {
                    Some(AllDown::Fallback(f)) => Some(f),
                    None => match routing.map(|r| &r.all_down) {
                        Some(AllDown::Fallback(f)) => Some(f),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(f) = fallback
                    && !zone.regions.contains(f)
                {
                    ok = false;
                    cx.error(
                        &z.span,
                        format!(
                            "{}: all_down falls back to `{f}`, outside residency zone `{}`",
                            r.label, z.v
                        ),
                        Some(format!(
                            "set `all_down` on this record to fail-closed, fail-open or a fallback inside the zone ({})",
                            zone.regions.join(", ")
                        )),
                    );
                }
            }
        }
        None => {
            for key in ["geo", "all_down", "residency"] {
                if r.has(key) {
                    ok = false;
                    cx.error(
                        &r.span_of(key),
                        format!("{}: {key} is only meaningful with a `policy`", r.label),
                        Some(format!("remove `{key}`, or set `policy`")),
                    );
                }
            }
            match &values {
                Some(v) if !v.v.is_empty() => {
                    if kind == RecordType::Cname && v.v.len() > 1 {
                        ok = false;
                        cx.error(
                            &v.span,
                            format!("{}: a CNAME has exactly one value", r.label),
                            Some("keep one target name".to_string()),
                        );
                    }
                    for value in &v.v {
                        if let Err(e) = record_value(kind, &value.v) {
                            ok = false;
                            cx.error(
                                &value.span,
                                format!(
                                    "{}: `{}` is not a valid {} value: {e}",
                                    r.label,
                                    value.v,
                                    kind.as_str()
                                ),
                                Some(record_hint(kind).to_string()),
                            );
                        }
                    }
                }
                Some(v) => {
                    ok = false;
                    cx.error(
                        &v.span,
                        format!("{}: values is empty", r.label),
                        Some(format!("give at least one value: {}", record_hint(kind))),
                    );
                }
                None if r.has("values") => ok = false,
                None => {
                    ok = false;
                    r.missing(cx, "values", "values = [\"192.0.2.1\"]` (or a `policy`");
                }
            }
            if kind == RecordType::Cname && name.v == "@" {
                ok = false;
                cx.error(
                    &name.span,
                    format!("{}: a CNAME cannot be at the zone apex", r.label),
                    Some("the apex has SOA and NS records; use A/AAAA records there".to_string()),
                );
            }
        }
    }
    ok.then(|| DnsRecord {
        name: name.v,
        kind,
        values: values
            .map(|v| v.v.into_iter().map(|s| s.v).collect())
            .unwrap_or_default(),
        policy: policy.map(|p| p.v),
        geo,
        all_down: all_down_v,
        residency: residency.map(|z| z.v),
    })
}

fn record_value(kind: RecordType, v: &str) -> Result<(), String> {
    match kind {
        RecordType::A => v
            .parse::<std::net::Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| "not an IPv4 address".to_string()),
        RecordType::Aaaa => v
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "not an IPv6 address".to_string()),
        RecordType::Cname | RecordType::Ns => scalar::dns_name(v),
        RecordType::Txt if v.len() > 255 => Err(format!("{} bytes, more than 255", v.len())),
        RecordType::Txt => Ok(()),
        RecordType::Mx => {
            let (pref, host) = v.split_once(' ').ok_or("expected `<preference> <host>`")?;
            pref.parse::<u16>()
                .map_err(|_| format!("`{pref}` is not a preference (0-65535)"))?;
            scalar::dns_name(host.trim())
        }
    }
}

fn record_hint(kind: RecordType) -> &'static str {
    match kind {
        RecordType::A => "A values are IPv4 addresses, like `192.0.2.1`",
        RecordType::Aaaa => "AAAA values are IPv6 addresses, like `2001:db8::1`",
        RecordType::Cname => "a CNAME value is one host name, like `www.example.test.`",
        RecordType::Txt => "TXT values are strings of at most 255 bytes each",
        RecordType::Mx => "MX values are `<preference> <host>`, like `10 mail.example.test.`",
        RecordType::Ns => "NS values are host names, like `ns1.example.test.`",
    }
}
