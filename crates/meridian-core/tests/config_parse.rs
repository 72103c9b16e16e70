//! The topology file: the example and DESIGN §1's sample parse; every class of mistake is reported
//! at the right line and column with a useful message; `parse` never panics.

use std::time::Duration;

use meridian_core::KeyspaceType;
use meridian_core::config::{
    AllDown, AppProtocol, ConfigError, Diagnostic, Policy, RecordType, Replication, Residency,
    Writer, Writes, parse,
};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../examples/meridian.toml");
const DESIGN_SAMPLE: &str = include_str!("fixtures/config/design_sample.toml");
const DESIGN_SAMPLE_VERBATIM: &str = include_str!("fixtures/config/design_sample_verbatim.toml");

/// A small valid topology the error cases extend.
const BASE: &str = r#"[cluster]
name = "shop"

[zones]
eu = ["eu-west-1"]
us = ["us-east-1", "us-west-2"]

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:7601"
app = ["http://127.0.0.1:8601"]
addresses = ["192.0.2.1"]

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:7602"

[[region]]
name = "us-west-2"
node = "http://127.0.0.1:7603"
"#;

fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse("meridian.toml", text) {
        Ok(_) => panic!("expected errors, the file parsed:\n{text}"),
        Err(ConfigError { diagnostics }) => diagnostics,
    }
}

/// 1-based (line, column) of the `skip`-th character of the first occurrence of `needle`.
fn position(text: &str, needle: &str, skip: usize) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"))
        + skip;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Asserts one diagnostic points at `needle` (+`skip` characters) and its message contains `msg`;
/// returns it for further checks.
fn assert_diag(text: &str, needle: &str, skip: usize, msg: &str) -> Diagnostic {
    let (line, column) = position(text, needle, skip);
    let diags = errors(text);
    diags
        .iter()
        .find(|d| d.line == line && d.column == column && d.message.contains(msg))
        .cloned()
        .unwrap_or_else(|| {
            let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!(
                "no diagnostic at {line}:{column} containing {msg:?}; got:\n{}",
                all.join("\n")
            )
        })
}

fn hint(d: &Diagnostic) -> &str {
    d.hint.as_deref().unwrap_or("")
}

// ---- valid files ----------------------------------------------------------------------------

#[test]
fn example_parses_with_everything_resolved() {
    let t = parse("examples/meridian.toml", EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.cluster.name, "shop");
    assert_eq!(t.cluster.secret_file, None);
    let names: Vec<&str> = t.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["us-east-1", "eu-west-1", "ap-southeast-1"]);
    let zones: Vec<&str> = t.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(zones, ["eu", "us", "apac"]);
    assert_eq!(t.zone_of("ap-southeast-1"), Some("apac"));
    let us = t
        .region("us-east-1")
        .expect("invariant: defined in the example");
    assert_eq!(us.node_addr(), "127.0.0.1:7601");
    assert_eq!(us.capacity, 100);

    let sessions = t.keyspace("sessions").expect("invariant: defined");
    assert_eq!(sessions.kind, KeyspaceType::Register);
    assert_eq!(sessions.ttl, Some(Duration::from_secs(86_400)));
    assert_eq!(sessions.residency, Some(Residency::HomeZone));
    assert_eq!(t.allowed_regions(sessions).len(), 3);
    let orders = t.keyspace("orders").expect("invariant: defined");
    assert_eq!(
        (orders.replication, orders.quorum),
        (Replication::Sync, Some(2))
    );
    assert_eq!(orders.writer, Writer::Home);
    assert_eq!(orders.sync_timeout, Duration::from_secs(2));
    let kinds: Vec<KeyspaceType> = t.keyspaces.iter().map(|k| k.kind).collect();
    for k in KeyspaceType::ALL {
        assert!(
            kinds.contains(&k),
            "the example shows every type, {k} is missing"
        );
    }
    let scratch = t.keyspace("scratch").expect("invariant: defined");
    assert_eq!(
        (scratch.replication, scratch.quorum),
        (Replication::Local, None)
    );

    assert_eq!(t.edges.len(), 1);
    assert_eq!(t.health.timeout, Duration::from_millis(500));
    assert_eq!(t.limits.max_value_bytes, 1_048_576);
    let dns = t.dns.as_ref().expect("invariant: the example has [dns]");
    assert_eq!(dns.records[1].policy, Some(Policy::Geo));

    let summary = t.render_summary();
    for needle in [
        "us-east-1",
        "orders",
        "quorum 2",
        "home-zone",
        "edge-local",
        "max_key_bytes",
    ] {
        assert!(
            summary.contains(needle),
            "summary lacks {needle}:\n{summary}"
        );
    }
}

#[test]
fn design_sample_parses() {
    let t = parse("design_sample.toml", DESIGN_SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.cluster.secret_file.as_deref(),
        Some(std::path::Path::new("cluster.secret"))
    );
    assert_eq!(t.routing.policy, Policy::Latency);
    assert_eq!(t.routing.all_down, AllDown::FailClosed);
    assert_eq!(
        t.routing.geo.lookup(Some("FR"), Some("EU")),
        Some("eu-west-1")
    );
    assert_eq!(
        t.routing.geo.lookup(Some("BR"), Some("SA")),
        Some("us-east-1")
    );
    assert_eq!(t.routing.weights.get("eu-central-1"), Some(&100));
    assert_eq!(
        t.edges[0].geoip.as_deref(),
        Some(std::path::Path::new("GeoLite2-Country.mmdb"))
    );
    let dns = t.dns.as_ref().expect("invariant: the sample has [dns]");
    assert_eq!(dns.zone, "example.test.");
    assert_eq!(dns.records[0].kind, RecordType::A);
    assert_eq!(dns.records[1].all_down, Some(AllDown::FailClosed));
}

/// DESIGN §1 shows one `[[region]]` but names three: taken verbatim it fails, and only for that.
#[test]
fn design_sample_verbatim_only_lacks_regions() {
    let diags = errors(DESIGN_SAMPLE_VERBATIM);
    for d in &diags {
        let ok = d.message.contains("unknown region") || d.message.contains("may hold it");
        assert!(ok, "unexpected: {d}");
    }
}

#[test]
fn defaults_are_filled_in() {
    let t = parse("m.toml", &with("[[keyspace]]\nname = \"k\"\ntype = \"set\"\n\n[[keyspace]]\nname = \"s\"\ntype = \"counter\"\nreplication = \"sync\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let k = t.keyspace("k").expect("invariant: defined");
    assert_eq!(
        (k.replication, k.writer, k.forward, k.ttl),
        (Replication::Async, Writer::Any, false, None)
    );
    // Majority of the three regions that may hold it.
    assert_eq!(t.keyspace("s").expect("invariant: defined").quorum, Some(2));
    assert_eq!(t.routing.policy, Policy::Latency);
    assert_eq!(t.routing.writes, Writes::Any);
    assert_eq!(t.routing.all_down, AllDown::FailOpen);
    assert!(t.routing.sticky);
    assert_eq!(t.routing.order, ["us-east-1", "eu-west-1", "us-west-2"]);
    assert_eq!(t.routing.retry_budget, 20);
    assert_eq!(t.health.path, "/health/ready");
    assert_eq!(t.health.expect, [(200, 299)]);
    assert!(t.health.expects(204) && !t.health.expects(301) && !t.health.expects(503));
    assert_eq!(
        (t.health.interval, t.health.down_after, t.health.up_after),
        (Duration::from_secs(1), 3, 5)
    );
    assert_eq!(t.limits.max_key_bytes, 1024);
    assert_eq!(t.limits.idempotency_ttl, Duration::from_secs(86_400));
    assert_eq!(t.limits.session_wait, Duration::from_secs(2));
    assert_eq!(t.limits.read_cache_bytes, 64 << 20);
    assert_eq!(t.limits.max_pending_writes, 10_000);
    assert_eq!(t.limits.max_connections, 10_000);
    assert_eq!(t.limits.client_header_timeout, Duration::from_secs(60));
    assert!(t.dns.is_none());
    assert!(t.edges.is_empty());
    assert!(
        t.regions
            .iter()
            .all(|r| r.app_protocol == AppProtocol::Http1)
    );
    assert_eq!(t.health.grpc_service, None);
}

/// `app_protocol` picks HTTP/2 to a region's app backends; an unknown value is named with the
/// allowed ones at its position.
#[test]
fn app_protocol_is_http1_or_http2() {
    let text = BASE.replace(
        "app = [\"http://127.0.0.1:8601\"]\n",
        "app = [\"http://127.0.0.1:8601\"]\napp_protocol = \"http2\"\n",
    );
    let t = parse("m.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let us = t.region("us-east-1").expect("invariant: defined");
    assert_eq!(us.app_protocol, AppProtocol::Http2);
    assert!(t.render_summary().contains("(HTTP/2)"));
    let text = text.replace("\"http2\"", "\"http3\"");
    let d = assert_diag(
        &text,
        "\"http3\"",
        0,
        "region `us-east-1`: app_protocol = \"http3\" is not known",
    );
    assert!(hint(&d).contains("`http1`, `http2`"), "{d}");
}

/// `[health] grpc_service` names the service gRPC probes check (`""`: the whole server); a
/// name with spaces is refused at its position.
#[test]
fn health_grpc_service_is_a_service_name() {
    for (given, want) in [("shop.Cart", "shop.Cart"), ("", "")] {
        let t = parse(
            "m.toml",
            &with(&format!("[health]\ngrpc_service = \"{given}\"\n")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.health.grpc_service.as_deref(), Some(want));
    }
    let text = with("[health]\ngrpc_service = \"shop Cart\"\n");
    let d = assert_diag(
        &text,
        "\"shop Cart\"",
        0,
        "[health]: grpc_service `shop Cart` is not a gRPC service name",
    );
    assert!(hint(&d).contains("shop.Cart"), "{d}");
}

#[test]
fn allowed_regions_follow_residency() {
    let t = parse(
        "m.toml",
        &with(
            "[[keyspace]]\nname = \"a\"\ntype = \"map\"\nresidency = \"us\"\n\n\
             [[keyspace]]\nname = \"b\"\ntype = \"map\"\nresidency = [\"eu-west-1\"]\n\n\
             [[keyspace]]\nname = \"c\"\ntype = \"map\"\nresidency = \"home-zone\"\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let allowed = |n: &str| t.allowed_regions(t.keyspace(n).expect("invariant: defined"));
    assert_eq!(allowed("a"), ["us-east-1", "us-west-2"]);
    assert_eq!(allowed("b"), ["eu-west-1"]);
    assert_eq!(allowed("c"), ["us-east-1", "eu-west-1", "us-west-2"]);
    assert_eq!(t.zone_of("eu-west-1"), Some("eu"));
}

/// A topology of `regions` (in this order) with `writer = "home"` keyspaces `any_region` and
/// `us_only` (pinned to the zone `us`), and a multi-writer `multi`.
fn homed_topology(regions: &[&str]) -> meridian_core::config::Topology {
    let mut text = String::from(
        "[cluster]\nname = \"shop\"\n\n[zones]\nus = [\"us-east-1\", \"us-west-2\"]\n",
    );
    for (i, r) in regions.iter().enumerate() {
        text += &format!(
            "\n[[region]]\nname = \"{r}\"\nnode = \"http://127.0.0.1:{}\"\n",
            7601 + i
        );
    }
    text += "\n[[keyspace]]\nname = \"any_region\"\ntype = \"register\"\nwriter = \"home\"\n\n\
             [[keyspace]]\nname = \"us_only\"\ntype = \"register\"\nwriter = \"home\"\nresidency = \"us\"\n\n\
             [[keyspace]]\nname = \"multi\"\ntype = \"register\"\n";
    parse("m.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

const THREE: [&str; 3] = ["us-east-1", "eu-west-1", "us-west-2"];

#[test]
fn default_home_is_only_for_home_keyspaces_and_spreads_keys() {
    let t = homed_topology(&THREE);
    let ks = |n: &str| t.keyspace(n).expect("invariant: defined");
    assert_eq!(t.default_home(ks("multi"), "k"), None);
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..3000 {
        let home = t
            .default_home(ks("any_region"), &format!("user-{i}"))
            .unwrap();
        *counts.entry(home).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| (850..=1150).contains(&n)),
        "{counts:?}"
    );
}

proptest! {
    /// Every region computes the same home for a key, whatever the order of `[[region]]`; it is
    /// one the keyspace may be held in; removing a region moves only the keys that region won.
    #[test]
    fn default_home_is_the_same_everywhere_and_stable(key in "\\PC{0,40}") {
        let t = homed_topology(&THREE);
        let reordered = homed_topology(&["us-west-2", "us-east-1", "eu-west-1"]);
        let without_eu = homed_topology(&["us-east-1", "us-west-2"]);
        for name in ["any_region", "us_only"] {
            let home = t.default_home(t.keyspace(name).unwrap(), &key).unwrap();
            let other = reordered.default_home(reordered.keyspace(name).unwrap(), &key).unwrap();
            prop_assert_eq!(home, other);
            prop_assert!(t.allowed_regions(t.keyspace(name).unwrap()).contains(&home));
            let fewer = without_eu.default_home(without_eu.keyspace(name).unwrap(), &key).unwrap();
            if home != "eu-west-1" {
                prop_assert_eq!(home, fewer);
            }
        }
    }
}

// ---- one case per class of mistake ----------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let text = BASE.replace("name = \"shop\"", "name = shop");
    let d = assert_diag(&text, "shop", 0, "invalid TOML");
    assert_eq!(errors(&text).len(), 1);
    assert!(
        d.to_string().starts_with("meridian.toml:2:8: invalid TOML"),
        "{d}"
    );
}

#[test]
fn unknown_key_suggests_the_near_one() {
    let text = with(
        "[[keyspace]]\nname = \"orders\"\ntype = \"register\"\nreplication = \"sync\"\nquorom = 2\n",
    );
    let d = assert_diag(
        &text,
        "quorom",
        0,
        "keyspace `orders`: unknown key `quorom`",
    );
    assert!(hint(&d).contains("did you mean `quorum`?"), "{d}");
    assert!(
        hint(&d).contains("`sync_timeout`"),
        "lists the allowed keys: {d}"
    );
    // A section key written under another table's header: say why it is unknown there.
    let text = BASE.replace("name = \"shop\"\n", "name = \"shop\"\nkeyspace = []\n");
    let d = assert_diag(
        &text,
        "keyspace = []",
        0,
        "[cluster]: unknown key `keyspace`",
    );
    assert!(hint(&d).contains("move it above the first header"), "{d}");
    let text = with("[helth]\npath = \"/\"\n");
    let d = assert_diag(&text, "helth", 0, "unknown key `helth`");
    assert!(hint(&d).contains("did you mean `health`?"), "{d}");
}

#[test]
fn wrong_types() {
    let text = BASE.replace(
        "node = \"http://127.0.0.1:7602\"",
        "node = \"http://127.0.0.1:7602\"\ncapacity = \"100\"",
    );
    assert_diag(
        &text,
        "\"100\"",
        0,
        "region `eu-west-1`: `capacity` must be an integer, found a string",
    );
    let text = with("[routing]\nsticky = \"yes\"\n");
    assert_diag(&text, "\"yes\"", 0, "`sticky` must be a boolean");
    let text = with("[health]\ninterval = 5\n");
    let d = assert_diag(
        &text,
        "5\n",
        0,
        "`interval` must be a duration string, found an integer",
    );
    assert!(hint(&d).contains("\"30s\""), "{d}");
}

#[test]
fn missing_required_keys() {
    let text = BASE.replace("node = \"http://127.0.0.1:7603\"\n", "");
    let d = assert_diag(
        &text,
        "[[region]]\nname = \"us-west-2\"",
        0,
        "region `us-west-2`: missing required key `node`",
    );
    assert!(hint(&d).contains("node = \"http://"), "{d}");
    let text = BASE.replace("[cluster]\nname = \"shop\"\n", "");
    assert_diag(&text, "", 0, "missing `[cluster]` section");
}

#[test]
fn duplicate_names() {
    let text = BASE.replace("name = \"us-west-2\"", "name = \"eu-west-1\"");
    let d = errors(&text);
    let (line, column) = position(&text, "\"eu-west-1\"\nnode = \"http://127.0.0.1:7603", 0);
    assert!(d.iter().any(|d| d.line == line
        && d.column == column
        && d.message == "region `eu-west-1` is defined twice"));
    let text = with(
        "[[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n[[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:3\"\nadmin = \"127.0.0.1:4\"\n",
    );
    let d = assert_diag(
        &text,
        "\"e\"\nlisten = \"127.0.0.1:3",
        0,
        "edge `e` is defined twice",
    );
    assert!(hint(&d).contains("line"), "{d}");
    let text = with(
        "[[keyspace]]\nname = \"k\"\ntype = \"set\"\n[[keyspace]]\nname = \"k\"\ntype = \"map\"\n",
    );
    assert_diag(
        &text,
        "\"k\"\ntype = \"map\"",
        0,
        "keyspace `k` is defined twice",
    );
    // A zone is a key of [zones]: TOML itself rejects the duplicate.
    let text = BASE.replace("us = [", "eu = [");
    assert_diag(&text, "eu = [\"us-east-1", 0, "duplicate key");
}

#[test]
fn bad_names() {
    let text = BASE.replace("\"us-west-2\"", "\"US West\"");
    let d = assert_diag(
        &text,
        "\"US West\"\nnode",
        0,
        "region name `US West` must match [a-z0-9][a-z0-9-]*",
    );
    assert!(hint(&d).contains("did you mean `us-west`?"), "{d}");
    // Keyspaces may use `_`, not lead with it.
    let text = with(
        "[[keyspace]]\nname = \"user_sessions\"\ntype = \"set\"\n[[keyspace]]\nname = \"_x\"\ntype = \"set\"\n",
    );
    let diags = errors(&text);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_diag(
        &text,
        "\"_x\"",
        0,
        "keyspace name `_x` must match [a-z0-9][a-z0-9_-]*",
    );
    let text = BASE.replace("eu = [", "Eu = [");
    assert_diag(&text, "Eu = [", 0, "zone name `Eu`");
}

#[test]
fn zone_naming_unknown_region() {
    let text = BASE.replace(
        "eu = [\"eu-west-1\"]",
        "eu = [\"eu-west-1\", \"eu-west-2\"]",
    );
    let d = assert_diag(
        &text,
        "\"eu-west-2\"",
        0,
        "zone `eu` lists unknown region `eu-west-2`",
    );
    assert!(hint(&d).contains("did you mean `eu-west-1`?"), "{d}");
}

#[test]
fn region_in_two_zones() {
    let text = BASE.replace(
        "eu = [\"eu-west-1\"]",
        "eu = [\"eu-west-1\", \"us-west-2\"]",
    );
    assert_diag(
        &text,
        "\"us-west-2\"]\n\n",
        0,
        "region `us-west-2` is in two zones, `eu` and `us`",
    );
}

#[test]
fn residency_naming_unknown_region_or_zone() {
    let text = with("[[keyspace]]\nname = \"k\"\ntype = \"set\"\nresidency = [\"eu-west-9\"]\n");
    assert_diag(
        &text,
        "\"eu-west-9\"",
        0,
        "keyspace `k`: residency names unknown region `eu-west-9`",
    );
    let text = with("[[keyspace]]\nname = \"k\"\ntype = \"set\"\nresidency = \"asia\"\n");
    assert_diag(
        &text,
        "\"asia\"",
        0,
        "keyspace `k`: residency names unknown zone `asia`",
    );
    let text = with("[[keyspace]]\nname = \"k\"\ntype = \"set\"\nresidency = \"eu-west-1\"\n");
    let d = assert_diag(
        &text,
        "residency = \"eu-west-1\"",
        12,
        "unknown zone `eu-west-1`",
    );
    assert!(hint(&d).contains("residency = [\"eu-west-1\"]"), "{d}");
}

#[test]
fn home_zone_without_zones() {
    let text = with("[[keyspace]]\nname = \"k\"\ntype = \"set\"\nresidency = \"home-zone\"\n")
        .replace(
            "[zones]\neu = [\"eu-west-1\"]\nus = [\"us-east-1\", \"us-west-2\"]\n",
            "",
        );
    assert_diag(
        &text,
        "\"home-zone\"",
        0,
        "residency = \"home-zone\" but no zones are defined",
    );
}

#[test]
fn quorum_rules() {
    let text = with("[[keyspace]]\nname = \"likes\"\ntype = \"counter\"\nquorum = 2\n");
    let d = assert_diag(
        &text,
        "2\n",
        0,
        "keyspace `likes`: quorum is only meaningful with replication = \"sync\"",
    );
    assert!(hint(&d).contains("remove `quorum`"), "{d}");
    let text = with(
        "[[keyspace]]\nname = \"orders\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 0\n",
    );
    assert_diag(&text, "0\n", 0, "keyspace `orders`: quorum = 0");
    let text = with(
        "[[keyspace]]\nname = \"orders\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 4\n",
    );
    let d = assert_diag(
        &text,
        "quorum = 4",
        9,
        "keyspace `orders`: quorum = 4 but only 3 regions may hold it",
    );
    assert_eq!(hint(&d), "set quorum to at most 3, or add regions");
    let text = with(
        "[[keyspace]]\nname = \"orders\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 2\nresidency = \"eu\"\n",
    );
    let d = assert_diag(
        &text,
        "quorum = 2",
        9,
        "keyspace `orders`: quorum = 2 but only 1 region may hold it",
    );
    assert!(hint(&d).contains("widen `residency`"), "{d}");
    // home-zone: bounded by the smallest zone.
    let text = with(
        "[[keyspace]]\nname = \"o\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 2\nresidency = \"home-zone\"\n",
    );
    assert_diag(
        &text,
        "quorum = 2",
        9,
        "quorum = 2 but only 1 region may hold it in its smallest home zone `eu`",
    );
}

#[test]
fn bad_durations() {
    for bad in ["1.5s", "30 s", "30", "s", "5w"] {
        let text = with(&format!("[health]\ninterval = \"{bad}\"\n"));
        let d = assert_diag(
            &text,
            &format!("\"{bad}\""),
            0,
            "expected a number followed by ms, s, m, h or d, like `500ms`",
        );
        assert!(d.message.starts_with("[health]: interval: "), "{d}");
    }
    for good in ["500ms", "30s", "5m", "24h", "7d"] {
        let text = with(&format!(
            "[[keyspace]]\nname = \"k\"\ntype = \"set\"\nttl = \"{good}\"\n"
        ));
        assert!(parse("m.toml", &text).is_ok(), "{good}");
    }
}

#[test]
fn zero_durations() {
    let text = with("[[keyspace]]\nname = \"k\"\ntype = \"set\"\nttl = \"0s\"\n");
    assert_diag(&text, "\"0s\"", 0, "keyspace `k`: ttl must not be zero");
    let text = with("[health]\ninterval = \"0ms\"\n");
    assert_diag(&text, "\"0ms\"", 0, "[health]: interval must not be zero");
}

#[test]
fn health_timeout_longer_than_interval() {
    let text = with("[health]\ninterval = \"1s\"\ntimeout = \"2s\"\n");
    let d = assert_diag(
        &text,
        "\"2s\"",
        0,
        "[health]: timeout = 2s is longer than interval = 1s",
    );
    assert!(hint(&d).contains("at most 1s"), "{d}");
}

#[test]
fn health_counts_must_be_positive() {
    let text = with("[health]\ndown_after = 0\nup_after = 0\n");
    assert_diag(
        &text,
        "0\nup",
        0,
        "[health]: down_after = 0 is out of range",
    );
    assert_diag(&text, "0\n", 0, "down_after");
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn bad_addresses() {
    let text = BASE.replace("\"http://127.0.0.1:7602\"", "\"127.0.0.1:7602\"");
    let d = assert_diag(
        &text,
        "\"127.0.0.1:7602\"",
        0,
        "region `eu-west-1`: node: `127.0.0.1:7602` must start with `http://`",
    );
    assert!(hint(&d).contains("http://127.0.0.1:7601"), "{d}");
    let text = BASE.replace("\"http://127.0.0.1:8601\"", "\"http://127.0.0.1\"");
    assert_diag(&text, "\"http://127.0.0.1\"", 0, "a port is required");
    let text = BASE.replace("\"http://127.0.0.1:8601\"", "\"ftp://127.0.0.1:8601\"");
    let d = assert_diag(
        &text,
        "\"ftp://127.0.0.1:8601\"",
        0,
        "region `us-east-1`: app: `ftp://127.0.0.1:8601` must start with `http://` or `https://`",
    );
    assert!(hint(&d).contains("https://host:port"), "{d}");
    let text = BASE.replace("\"http://127.0.0.1:8601\"", "\"https://127.0.0.1:8601\"");
    assert!(
        parse("m.toml", &text).is_ok(),
        "https:// app backends are accepted"
    );
    let text = BASE.replace("\"192.0.2.1\"", "\"192.0.2.300\"");
    assert_diag(
        &text,
        "\"192.0.2.300\"",
        0,
        "`192.0.2.300` is not an IP address",
    );
    let text = with(
        "[[edge]]\nname = \"e\"\nlisten = \"localhost:8080\"\nadmin = \"127.0.0.1:9080\"\ntrusted_proxies = [\"10.0.0.1/8\", \"10.0.0.0/40\"]\n",
    );
    assert_diag(
        &text,
        "\"localhost:8080\"",
        0,
        "edge `e`: listen = \"localhost:8080\" is not an IP address and port",
    );
    let d = assert_diag(&text, "\"10.0.0.1/8\"", 0, "has host bits set");
    assert!(d.message.contains("did you mean `10.0.0.0/8`?"), "{d}");
    assert_diag(&text, "\"10.0.0.0/40\"", 0, "prefix length must be 0 to 32");
}

#[test]
fn listeners_on_the_same_address() {
    let text =
        with("[[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:7601\"\n");
    let d = assert_diag(
        &text,
        "\"127.0.0.1:7601\"\n",
        0,
        "edge `e` admin uses 127.0.0.1:7601, which region `us-east-1` node already uses",
    );
    assert!(hint(&d).contains("line 10"), "{d}");
    let text = with(
        "[dns]\nlisten = \"127.0.0.1:8601\"\nzone = \"x.test.\"\nnameservers = [\"ns1.x.test.\"]\n",
    );
    assert_diag(
        &text,
        "\"127.0.0.1:8601\"\nzone",
        0,
        "[dns] listen uses 127.0.0.1:8601",
    );
    // Wildcard binds name no host: two edges on different machines may both use 0.0.0.0:443.
    let text = with(
        "[[edge]]\nname = \"a\"\nlisten = \"0.0.0.0:443\"\nadmin = \"127.0.0.1:1\"\n[[edge]]\nname = \"b\"\nlisten = \"0.0.0.0:443\"\nadmin = \"127.0.0.1:2\"\n",
    );
    assert!(parse("m.toml", &text).is_ok());
}

#[test]
fn routing_naming_unknown_regions() {
    let text = with(
        "[routing]\nwrites = \"primary:us-east-2\"\nall_down = \"fallback:mars\"\n\n[routing.geo]\nEU = \"eu-west-2\"\ndefault = \"us-east-1\"\n\n[routing.weights]\n\"ap-south-1\" = 10\n",
    );
    let d = assert_diag(
        &text,
        "\"primary:us-east-2\"",
        0,
        "[routing]: writes names unknown region `us-east-2`",
    );
    assert!(hint(&d).contains("did you mean `us-east-1`?"), "{d}");
    assert_diag(
        &text,
        "\"fallback:mars\"",
        0,
        "all_down names unknown region `mars`",
    );
    assert_diag(
        &text,
        "\"eu-west-2\"",
        0,
        "[routing.geo]: `EU` names unknown region `eu-west-2`",
    );
    assert_diag(
        &text,
        "\"ap-south-1\"",
        0,
        "[routing.weights]: a weight is set for unknown region `ap-south-1`",
    );
    assert_eq!(errors(&text).len(), 4);
}

#[test]
fn routing_values() {
    let text = with("[routing]\npolicy = \"latncy\"\n");
    let d = assert_diag(
        &text,
        "\"latncy\"",
        0,
        "[routing]: policy = \"latncy\" is not known",
    );
    assert!(hint(&d).contains("did you mean `latency`?"), "{d}");
    let text = with("[routing.weights]\n\"us-east-1\" = 150\n");
    let d = assert_diag(
        &text,
        "150",
        0,
        "weight of `us-east-1` = 150 is out of range",
    );
    assert!(hint(&d).contains("0 to 100"), "{d}");
    let text = with("[routing]\npolicy = \"geo\"\n");
    assert_diag(
        &text,
        "\"geo\"",
        0,
        "policy = \"geo\" needs a `default` region",
    );
    let text = with("[routing]\npolicy = \"proximity\"\n");
    assert_diag(
        &text,
        "\"proximity\"",
        0,
        "`us-east-1`, `eu-west-1`, `us-west-2` has none",
    );
    let text = with("[routing.geo]\neu = \"eu-west-1\"\n");
    let d = assert_diag(
        &text,
        "eu = \"eu-west-1\"\n",
        0,
        "`eu` is not a country or continent code",
    );
    assert!(hint(&d).contains("did you mean `EU`?"), "{d}");
}

/// Continent codes always mean the continent, so `NA = …` (North America) does not catch a
/// client in Namibia (country `NA`, continent `AF`); `country:NA` is how Namibia is named.
#[test]
fn geo_keys_keep_countries_and_continents_apart() {
    let text = with(
        "[routing]\npolicy = \"geo\"\n\n[routing.geo]\nNA = \"us-east-1\"\nAF = \"eu-west-1\"\n\
         \"country:SA\" = \"us-west-2\"\n\"continent:AS\" = \"us-west-2\"\nDE = \"eu-west-1\"\ndefault = \"us-east-1\"\n",
    );
    let t = parse("meridian.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let geo = &t.routing.geo;
    // Namibia: no rule for the country; its continent is Africa.
    assert_eq!(geo.lookup(Some("NA"), Some("AF")), Some("eu-west-1"));
    // Afghanistan (AF, Asia): the `AF` rule is Africa's, so Asia's applies.
    assert_eq!(geo.lookup(Some("AF"), Some("AS")), Some("us-west-2"));
    // Mexico: North America.
    assert_eq!(geo.lookup(Some("MX"), Some("NA")), Some("us-east-1"));
    // Saudi Arabia by its own rule, Germany by its own, Brazil by the default.
    assert_eq!(geo.lookup(Some("SA"), Some("AS")), Some("us-west-2"));
    assert_eq!(geo.lookup(Some("DE"), Some("EU")), Some("eu-west-1"));
    assert_eq!(geo.lookup(Some("BR"), Some("SA")), Some("us-east-1"));
    let rules: Vec<(String, &str)> = geo.rules().collect();
    let keys: Vec<&str> = rules.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["DE", "country:SA", "AF", "AS", "NA"]);
    assert!(
        t.render_summary().contains("country:SA->us-west-2"),
        "{}",
        t.render_summary()
    );

    let text = with("[routing.geo]\n\"country:na\" = \"eu-west-1\"\n");
    let d = assert_diag(
        &text,
        "\"country:na\"",
        0,
        "`country:na` is not a country or continent code",
    );
    assert!(hint(&d).contains("did you mean `country:NA`?"), "{d}");
    let text = with("[routing.geo]\n\"continent:DE\" = \"eu-west-1\"\n");
    let d = assert_diag(
        &text,
        "\"continent:DE\"",
        0,
        "is not a country or continent code",
    );
    assert!(
        hint(&d).contains("`AF`, `AN`, `AS`, `EU`, `NA`, `OC`, `SA`"),
        "{d}"
    );
    let text = with("[routing.geo]\nEU = \"eu-west-1\"\n\"continent:EU\" = \"us-east-1\"\n");
    assert_diag(
        &text,
        "\"continent:EU\"",
        0,
        "`continent:EU` is the same rule as an earlier key (which names `eu-west-1`)",
    );
}

proptest! {
    /// A rule for a continent never matches by a country code, nor a country rule by a
    /// continent code: the looked-up region is the country's rule, else the continent's, else
    /// the default.
    #[test]
    fn geo_lookup_reads_each_namespace_once(
        country in "(AF|AS|NA|SA|DE|US|BR)",
        continent in "(AF|AS|NA|SA|EU)",
        keys in proptest::collection::btree_map("(AF|AS|NA|SA|EU|DE|US|BR|country:AF|country:NA|country:SA)", 0usize..3, 0..6),
    ) {
        let regions = ["us-east-1", "eu-west-1", "us-west-2"];
        let mut geo = String::from("[routing.geo]\ndefault = \"us-east-1\"\n");
        for (k, r) in &keys {
            geo.push_str(&format!("\"{k}\" = \"{}\"\n", regions[*r]));
        }
        let text = with(&geo);
        let t = parse("meridian.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let continents = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];
        let country_rule = keys.iter().find(|(k, _)| {
            k.strip_prefix("country:") == Some(country.as_str())
                || (k.as_str() == country && !continents.contains(&k.as_str()))
        });
        let continent_rule = keys.iter().find(|(k, _)| k.as_str() == continent);
        let want = country_rule.or(continent_rule).map_or("us-east-1", |(_, r)| regions[*r]);
        prop_assert_eq!(t.routing.geo.lookup(Some(&country), Some(&continent)), Some(want));
    }
}

#[test]
fn dns_mistakes() {
    let dns = "[dns]\nlisten = \"127.0.0.1:5353\"\nzone = \"example.test\"\nnameservers = [\"ns1.example.test.\"]\n\n\
               [[dns.record]]\nname = \"www\"\ntype = \"A\"\nvalues = [\"not-an-ip\"]\n\n\
               [[dns.record]]\nname = \"mail\"\ntype = \"MX\"\nvalues = [\"mail.example.test.\"]\n\n\
               [[dns.record]]\nname = \"v6\"\ntype = \"AAAA\"\nvalues = [\"192.0.2.1\"]\n\n\
               [[dns.record]]\nname = \"@\"\ntype = \"CNAME\"\nvalues = [\"www\"]\n\n\
               [[dns.record]]\nname = \"api\"\ntype = \"TXT\"\npolicy = \"geo\"\n";
    let text = with(dns);
    let d = assert_diag(
        &text,
        "\"example.test\"",
        0,
        "[dns]: zone `example.test` must end with `.`",
    );
    assert!(hint(&d).contains("`example.test.`"), "{d}");
    let d = assert_diag(
        &text,
        "\"not-an-ip\"",
        0,
        "dns record `www`: `not-an-ip` is not a valid A value",
    );
    assert!(hint(&d).contains("IPv4"), "{d}");
    assert_diag(
        &text,
        "\"mail.example.test.\"",
        0,
        "is not a valid MX value",
    );
    assert_diag(
        &text,
        "\"192.0.2.1\"]\n\n[[dns.record]]\nname = \"@\"",
        0,
        "not a valid AAAA value",
    );
    assert_diag(&text, "\"@\"", 0, "a CNAME cannot be at the zone apex");
    assert_diag(
        &text,
        "\"geo\"\n",
        0,
        "policy only applies to A and AAAA records",
    );
    let text = with(
        "[dns]\nlisten = \"127.0.0.1:5353\"\nzone = \"x.test.\"\nnameservers = [\"ns1.x.test.\"]\n[[dns.record]]\nname = \"a\"\ntype = \"A\"\nvalues = [\"192.0.2.1\"]\n[[dns.record]]\nname = \"a\"\ntype = \"A\"\nvalues = [\"192.0.2.2\"]\n",
    );
    assert_diag(
        &text,
        "\"a\"\ntype = \"A\"\nvalues = [\"192.0.2.2",
        0,
        "dns record `a` A is defined twice",
    );
}

#[test]
fn at_least_one_region() {
    let d = assert_diag(
        "[cluster]\nname = \"x\"\n",
        "",
        0,
        "no `[[region]]` is defined",
    );
    assert!(hint(&d).contains("at least one region"), "{d}");
}

#[test]
fn limits_out_of_range() {
    let text = with(
        "[limits]\nmax_key_bytes = 0\nmax_value_bytes = 1000000000\nidempotency_ttl = \"60d\"\nsession_wait = \"5m\"\nread_cache_bytes = -1\nmax_pending_writes = 0\nmax_connections = 0\n",
    );
    assert_diag(
        &text,
        "0\n",
        0,
        "[limits]: max_key_bytes = 0 is out of range",
    );
    assert_diag(
        &text,
        "1000000000",
        0,
        "max_value_bytes = 1000000000 is out of range",
    );
    let d = assert_diag(&text, "\"60d\"", 0, "idempotency_ttl = 60d is out of range");
    assert!(hint(&d).contains("between 1s and 30d"), "{d}");
    assert_diag(&text, "\"5m\"", 0, "session_wait = 5m is out of range");
    assert_diag(&text, "= -1", 2, "read_cache_bytes = -1 is out of range");
    let d = assert_diag(
        &text,
        "max_pending_writes = 0",
        21,
        "max_pending_writes = 0 is out of range",
    );
    assert!(hint(&d).contains("between 1 and 1000000 (writes)"), "{d}");
    let d = assert_diag(
        &text,
        "max_connections = 0",
        18,
        "max_connections = 0 is out of range",
    );
    assert!(
        hint(&d).contains("between 1 and 1000000 (connections)"),
        "{d}"
    );
    let t = parse("meridian.toml", &with("[limits]\nread_cache_bytes = 0\n"))
        .expect("0 turns the cache off");
    assert_eq!(t.limits.read_cache_bytes, 0);
}

/// The test file with one `[[edge]]` named `e` holding `extra` keys.
fn edge(extra: &str) -> String {
    with(&format!(
        "[[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9080\"\n{extra}"
    ))
}

#[test]
fn client_header_timeouts_of_nodes_and_edges() {
    let t = parse("m.toml", &edge("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].client_header_timeout, Duration::from_secs(30));
    let t = parse("m.toml", &edge("client_header_timeout = \"5s\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].client_header_timeout, Duration::from_secs(5));
    let text = edge("client_header_timeout = \"2h\"\n");
    let d = assert_diag(
        &text,
        "\"2h\"",
        0,
        "edge `e`: client_header_timeout = 2h is out of range",
    );
    assert!(hint(&d).contains("between 1s and 1h"), "{d}");
    let t = parse(
        "m.toml",
        &with("[limits]\nclient_header_timeout = \"90s\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.limits.client_header_timeout, Duration::from_secs(90));
    let text = with("[limits]\nclient_header_timeout = \"500ms\"\n");
    assert_diag(
        &text,
        "\"500ms\"",
        0,
        "[limits]: client_header_timeout = 500ms is out of range",
    );
}

#[test]
fn tunnel_idle_timeout_of_edges() {
    let t = parse("m.toml", &edge("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].tunnel_idle_timeout, Duration::from_secs(3600));
    let t =
        parse("m.toml", &edge("tunnel_idle_timeout = \"90s\"\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].tunnel_idle_timeout, Duration::from_secs(90));
    let d = assert_diag(
        &edge("tunnel_idle_timeout = \"2d\"\n"),
        "\"2d\"",
        0,
        "edge `e`: tunnel_idle_timeout = 2d is out of range",
    );
    assert!(hint(&d).contains("between 1s and 1d"), "{d}");
}

#[test]
fn upstream_timeout_and_access_log_of_edges() {
    let t = parse("m.toml", &edge("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].upstream_timeout, Duration::from_secs(30));
    assert_eq!(t.edges[0].access_log, None);
    let t = parse(
        "m.toml",
        &edge("upstream_timeout = \"2500ms\"\naccess_log = \"-\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].upstream_timeout, Duration::from_millis(2500));
    assert_eq!(
        t.edges[0].access_log.as_deref(),
        Some(std::path::Path::new("-"))
    );
    let d = assert_diag(
        &edge("upstream_timeout = \"50ms\"\n"),
        "\"50ms\"",
        0,
        "edge `e`: upstream_timeout = 50ms is out of range",
    );
    assert!(hint(&d).contains("between 100ms and 1h"), "{d}");
    assert_diag(
        &edge("access_log = \" \"\n"),
        "\" \"",
        0,
        "edge `e`: access_log must not be empty",
    );
}

#[test]
fn max_connections_of_edges() {
    let t = parse("m.toml", &edge("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].max_connections, 10_000);
    let t = parse("m.toml", &edge("max_connections = 2\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.edges[0].max_connections, 2);
    for bad in ["0", "1000001", "\"many\""] {
        let text = edge(&format!("max_connections = {bad}\n"));
        let all: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|d| d.contains("max_connections")),
            "{bad}: {all:?}"
        );
    }
    let d = assert_diag(
        &edge("max_connections = 0\n"),
        "0\n",
        0,
        "edge `e`: max_connections = 0 is out of range",
    );
    assert!(
        hint(&d).contains("between 1 and 1000000 (connections)"),
        "{d}"
    );
}

#[test]
fn keyspace_policy_combinations() {
    let text = with(
        "[[keyspace]]\nname = \"k\"\ntype = \"registr\"\nforward = true\nsync_timeout = \"1s\"\n",
    );
    let d = assert_diag(
        &text,
        "\"registr\"",
        0,
        "keyspace `k`: type = \"registr\" is not known",
    );
    assert!(hint(&d).contains("did you mean `register`?"), "{d}");
    assert_diag(&text, "true", 0, "forward = true needs writer = \"home\"");
    assert_diag(
        &text,
        "\"1s\"",
        0,
        "sync_timeout is only meaningful with replication = \"sync\"",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = with(
        "[health]\ninterval = \"fast\"\n\n[[keyspace]]\nname = \"Bad\"\ntype = \"tree\"\nqourum = 1\n",
    );
    let diags = errors(&text);
    assert_eq!(diags.len(), 4, "{diags:#?}");
    assert!(
        diags
            .windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column))
    );
    let rendered = ConfigError { diagnostics: diags }.to_string();
    assert!(rendered.ends_with("4 problems found"), "{rendered}");
}

#[test]
fn display_shows_source_line_caret_and_hint() {
    let text = with(
        "[[keyspace]]\nname = \"orders\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 4\n",
    );
    let d = assert_diag(&text, "quorum = 4", 9, "quorum = 4");
    let (line, _) = position(&text, "quorum = 4", 0);
    assert_eq!(
        d.to_string(),
        format!(
            "meridian.toml:{line}:10: keyspace `orders`: quorum = 4 but only 3 regions may hold it\n  \
             | quorum = 4\n  |          ^\n  = hint: set quorum to at most 3, or add regions"
        )
    );
}

// ---- robustness -----------------------------------------------------------------------------

fn check_positions(text: &str) {
    if let Err(e) = parse("fuzz.toml", text) {
        assert!(!e.diagnostics.is_empty());
        let lines: Vec<&str> = text.split('\n').collect();
        for d in &e.diagnostics {
            assert!(
                d.line >= 1 && d.line <= lines.len(),
                "{d:?} outside {} lines",
                lines.len()
            );
            let width = lines[d.line - 1].chars().count();
            assert!(
                d.column >= 1 && d.column <= width + 1,
                "{d:?} outside a line of {width}"
            );
            let _ = d.to_string();
        }
    }
}

/// Fragments that make mutations land on interesting syntax.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\n".to_string()),
        Just("\"".to_string()),
        Just("[[keyspace]]\n".to_string()),
        Just("quorum = 9\n".to_string()),
        Just("= [".to_string()),
        Just("{ lat = 1 }".to_string()),
        Just("\"0s\"".to_string()),
        Just("é\t".to_string()),
        "[a-z_=\\[\\]{}\" .:0-9\n-]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        check_positions(&text);
    }

    #[test]
    fn never_panics_on_toml_like_text(text in "([a-z\\[\\]]{0,8}( = )?(\"[a-z0-9:./-]{0,10}\"|[0-9]{1,3}|true|\\[\\]|\\{\\})?\n){0,12}") {
        check_positions(&text);
    }

    #[test]
    fn never_panics_on_mutated_example(cut in 0usize..EXAMPLE.len(), len in 0usize..40, insert in fragment()) {
        let mut start = cut;
        while !EXAMPLE.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len).min(EXAMPLE.len());
        while !EXAMPLE.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{}{}", &EXAMPLE[..start], insert, &EXAMPLE[end..]);
        check_positions(&text);
    }
}

#[test]
fn regions_for_key_follow_residency() {
    let text = with(
        r#"
[[keyspace]]
name = "free"
type = "register"

[[keyspace]]
name = "listed"
type = "register"
residency = ["eu-west-1", "us-west-2"]

[[keyspace]]
name = "zoned"
type = "register"
residency = "us"

[[keyspace]]
name = "homed"
type = "register"
residency = "home-zone"
"#,
    );
    let t = parse("meridian.toml", &text).expect("valid");
    let ks = |n: &str| t.keyspace(n).expect("keyspace").clone();
    assert_eq!(t.regions_for_key(&ks("free"), "us-east-1"), None);
    assert_eq!(
        t.regions_for_key(&ks("listed"), "us-east-1"),
        Some(vec!["eu-west-1", "us-west-2"])
    );
    assert_eq!(
        t.regions_for_key(&ks("zoned"), "eu-west-1"),
        Some(vec!["us-east-1", "us-west-2"])
    );
    assert_eq!(
        t.regions_for_key(&ks("homed"), "eu-west-1"),
        Some(vec!["eu-west-1"])
    );
    assert_eq!(
        t.regions_for_key(&ks("homed"), "us-west-2"),
        Some(vec!["us-east-1", "us-west-2"])
    );
    assert_eq!(t.regions_for_key(&ks("homed"), "nowhere"), Some(vec![]));
}

#[test]
fn routing_pools_compose_a_tree() {
    let text = with(
        "[routing]\npolicy = \"geo\"\norder = [\"eu-west-1\"]\n\n[routing.geo]\nNA = \"us\"\ndefault = \"eu-west-1\"\n\n\
         [routing.weights]\nus = 40\n\n\
         [routing.pool.us]\nmembers = [\"us-west-2\", \"us-east-1\"]\npolicy = \"geo\"\ngeo = { CA = \"us-west-2\", default = \"us-east-1\" }\n",
    );
    let t = parse("meridian.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let r = &t.routing;
    assert_eq!(
        r.order,
        ["eu-west-1", "us"],
        "top level: pools stand in for their regions"
    );
    assert_eq!(r.pools.len(), 1);
    assert_eq!(r.pools[0].members, ["us-west-2", "us-east-1"]);
    assert_eq!(r.pools[0].policy, Policy::Geo);
    assert_eq!(r.pools[0].geo.default.as_deref(), Some("us-east-1"));
    assert_eq!(r.weights["us"], 40);
    assert_eq!(
        r.parent_of("us-east-1").map(|p| p.name.as_str()),
        Some("us")
    );
    assert!(r.located());
    let summary = t.render_summary();
    assert!(
        summary.contains("pool us (geo): us-west-2, us-east-1"),
        "{summary}"
    );
}

#[test]
fn routing_pool_mistakes() {
    let pool = |body: &str| with(&format!("[routing]\npolicy = \"latency\"\n\n{body}"));
    let text = pool("[routing.pool.us]\nmembers = [\"us-east-1\", \"us-wset-2\"]\n");
    let d = assert_diag(
        &text,
        "\"us-wset-2\"",
        0,
        "pool `us`: members name unknown region or pool `us-wset-2`",
    );
    assert!(hint(&d).contains("did you mean `us-west-2`?"), "{d}");
    let text = pool(
        "[routing.pool.a]\nmembers = [\"us-east-1\"]\n[routing.pool.b]\nmembers = [\"us-east-1\", \"a\"]\n",
    );
    assert_diag(
        &text,
        "\"us-east-1\", \"a\"",
        0,
        "`us-east-1` is a member of two pools, `a` and `b`",
    );
    let text = pool(
        "[routing.pool.a]\nmembers = [\"b\"]\n[routing.pool.b]\nmembers = [\"a\", \"us-east-1\"]\n",
    );
    assert_diag(&text, "a]", 0, "pool `a` contains itself: a → b → a");
    let text = pool("[routing.pool.eu-west-1]\nmembers = [\"us-east-1\"]\n");
    assert_diag(
        &text,
        "eu-west-1]",
        0,
        "pool `eu-west-1` has the name of a region",
    );
    let text = pool("[routing.pool.us]\nmembers = []\n");
    assert_diag(&text, "[]", 0, "pool `us`: members is empty");
    let text = pool("[routing.pool.us]\npolicy = \"latency\"\n");
    assert_diag(
        &text,
        "[routing.pool.us]",
        0,
        "pool `us`: missing required key `members`",
    );
    let text =
        pool("[routing.pool.us]\nmembers = [\"us-east-1\", \"us-west-2\"]\npolicy = \"geo\"\n");
    assert_diag(
        &text,
        "\"geo\"\n",
        0,
        "pool `us`: policy = \"geo\" needs a geo map with a `default` member",
    );
    let text = pool(
        "[routing.pool.us]\nmembers = [\"us-east-1\", \"us-west-2\"]\npolicy = \"geo\"\ngeo = { CA = \"eu-west-1\", default = \"us-east-1\" }\n",
    );
    let d = assert_diag(
        &text,
        "\"eu-west-1\", default",
        0,
        "`CA` names `eu-west-1`, which is at the top level",
    );
    assert!(
        hint(&d).contains("members of pool `us`: us-east-1, us-west-2"),
        "{d}"
    );
    let text = with(
        "[routing]\npolicy = \"failover\"\norder = [\"us-west-2\"]\n[routing.geo]\nEU = \"us-east-1\"\n\
         [routing.pool.us]\nmembers = [\"us-east-1\", \"us-west-2\"]\n",
    );
    let d = assert_diag(
        &text,
        "\"us-west-2\"]\n[routing.geo]",
        0,
        "[routing]: order names `us-west-2`, which is a member of pool `us`",
    );
    assert!(hint(&d).contains("name `us` here"), "{d}");
    assert_diag(
        &text,
        "\"us-east-1\"\n[routing.pool",
        0,
        "[routing.geo]: `EU` names `us-east-1`, which is a member of pool `us`",
    );
    let text = with(
        "[routing.weights]\n\"us-east-1\" = 0\n\"eu-west-1\" = 0\n\"us-west-2\" = 0\nus = 50\n\
         [routing.pool.us]\nmembers = [\"us-east-1\", \"us-west-2\"]\n",
    );
    assert_diag(&text, "[routing.weights]", 0, "every region has weight 0");
}

#[test]
fn dns_residency_pins_a_record_to_a_zone() {
    let dns = |record: &str| {
        with(&format!(
            "[dns]\nlisten = \"127.0.0.1:5353\"\nzone = \"x.test.\"\nnameservers = [\"ns1.x.test.\"]\n\
             [[dns.record]]\nname = \"api\"\ntype = \"A\"\npolicy = \"latency\"\n{record}"
        ))
    };
    let t = parse("meridian.toml", &dns("residency = \"us\"\n")).unwrap_or_else(|e| panic!("{e}"));
    let rec = &t.dns.as_ref().unwrap().records[0];
    assert_eq!(rec.residency.as_deref(), Some("us"));
    let routing = meridian_core::geodns::record_routing(&t, rec).unwrap();
    assert_eq!(routing.residency.as_deref(), Some("us"));
    let text = dns("residency = \"ue\"\n");
    let d = assert_diag(
        &text,
        "\"ue\"",
        0,
        "dns record `api`: residency names unknown zone `ue`",
    );
    assert!(hint(&d).contains("did you mean `us`?"), "{d}");
    assert_diag(
        &dns("residency = \"eu\"\n"),
        "\"eu\"\n",
        0,
        "no region of zone `eu` has an IPv4 address",
    );
    assert_diag(
        &dns("residency = \"us\"\nall_down = \"fallback:eu-west-1\"\n"),
        "\"us\"\n",
        0,
        "all_down falls back to `eu-west-1`, outside residency zone `us`",
    );
    let text = with(
        "[dns]\nlisten = \"127.0.0.1:5353\"\nzone = \"x.test.\"\nnameservers = [\"ns1.x.test.\"]\n\
         [[dns.record]]\nname = \"www\"\ntype = \"A\"\nvalues = [\"192.0.2.9\"]\nresidency = \"us\"\n",
    );
    assert_diag(
        &text,
        "residency = \"us\"",
        12,
        "residency is only meaningful with a `policy`",
    );
}

#[test]
fn expected_status_and_retry_budget() {
    let t = parse(
        "meridian.toml",
        &with("[routing]\nretry_budget = 5\n[health]\nexpect = \"200-299,301\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.routing.retry_budget, 5);
    assert!(t.health.expects(301) && !t.health.expects(302));
    let text = with("[health]\nexpect = \"200-2999\"\n");
    let d = assert_diag(
        &text,
        "\"200-2999\"",
        0,
        "[health]: expect = \"200-2999\": 2999 is not an HTTP status code (100-599)",
    );
    assert!(hint(&d).contains("200-299,304"), "{d}");
    let text = with("[routing]\nretry_budget = 150\n");
    assert_diag(
        &text,
        "150",
        0,
        "[routing]: retry_budget = 150 is out of range",
    );
}

#[test]
fn max_requests_per_backend() {
    let t = parse("meridian.toml", &with("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.routing.max_requests_per_backend, 1024);
    let t = parse(
        "meridian.toml",
        &with("[routing]\nmax_requests_per_backend = 3\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.routing.max_requests_per_backend, 3);
    let d = assert_diag(
        &with("[routing]\nmax_requests_per_backend = 0\n"),
        "0\n",
        0,
        "[routing]: max_requests_per_backend = 0 is out of range",
    );
    assert!(hint(&d).contains("between 1 and 1000000"), "{d}");
}

#[test]
fn dns_udp_threads() {
    let dns = |extra: &str| {
        with(&format!(
            "[dns]\nlisten = \"127.0.0.1:5353\"\nzone = \"x.test.\"\nnameservers = [\"ns1.x.test.\"]\n{extra}"
        ))
    };
    let t = parse("m.toml", &dns("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.dns.map(|d| d.udp_threads), Some(None));
    let t = parse("m.toml", &dns("udp_threads = 3\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.dns.map(|d| d.udp_threads), Some(Some(3)));
    let d = assert_diag(
        &dns("udp_threads = 0\n"),
        "0\n",
        0,
        "[dns]: udp_threads = 0 is out of range",
    );
    assert!(hint(&d).contains("between 1 and 64"), "{d}");
}
