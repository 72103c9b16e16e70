//! GeoDNS end to end: the real `meridian edge` binary with a `[dns]` section and the MaxMind
//! City test database, asked by a real client (`dig`, Debian `dnsutils`) over UDP and TCP:
//! every record type, negative answers, Client Subnet answers and scopes, truncation and TCP
//! fallback, and a region whose app goes down and comes back.
//!
//! Without `dig`: skipped with a notice, or failed with install advice when `CI` is set.

mod support;

use support::dns::{App, dig, dig_available, free_port, start_edge};

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository's copy of MaxMind's City test database (`testdata/geoip/`).
fn city_db() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip/GeoIP2-City-Test.mmdb")
}

fn config(dns: u16, listen: u16, admin: u16, apps: [u16; 3], geoip: &str) -> String {
    let long = "x".repeat(200);
    format!(
        r#"
[cluster]
name = "t"

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:1"
app = ["http://127.0.0.1:{us}"]
addresses = ["192.0.2.10", "2001:db8::10"]

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:2"
app = ["http://127.0.0.1:{eu}"]
addresses = ["192.0.2.20"]

[[region]]
name = "ap-southeast-1"
node = "http://127.0.0.1:3"
app = ["http://127.0.0.1:{ap}"]
addresses = ["192.0.2.30"]

[routing]
policy = "failover"
order = ["us-east-1", "eu-west-1", "ap-southeast-1"]

[routing.geo]
EU = "eu-west-1"
AS = "ap-southeast-1"
NA = "us-east-1"
default = "us-east-1"

[health]
interval = "200ms"
timeout = "150ms"
down_after = 2
up_after = 2

[[edge]]
name = "e"
listen = "127.0.0.1:{listen}"
admin = "127.0.0.1:{admin}"
geoip = "{geoip}"

[dns]
listen = "127.0.0.1:{dns}"
zone = "example.test."
ttl = "60s"
nameservers = ["ns1.example.test."]

[[dns.record]]
name = "ns1"
type = "A"
values = ["192.0.2.53"]

[[dns.record]]
name = "www"
type = "A"
values = ["192.0.2.1"]

[[dns.record]]
name = "alias"
type = "CNAME"
values = ["www"]

[[dns.record]]
name = "@"
type = "TXT"
values = ["v=spf1 -all"]

[[dns.record]]
name = "@"
type = "MX"
values = ["10 mail"]

[[dns.record]]
name = "big"
type = "TXT"
values = ["{long}1", "{long}2", "{long}3"]

[[dns.record]]
name = "geo"
type = "A"
policy = "geo"

[[dns.record]]
name = "app"
type = "A"
policy = "failover"
all_down = "fail-closed"

[[dns.record]]
name = "app"
type = "AAAA"
policy = "failover"
"#,
        us = apps[0],
        eu = apps[1],
        ap = apps[2],
    )
}

#[test]
fn dig_against_the_edge() {
    if !dig_available() {
        let advice = "dig is missing: install it with `apt-get install dnsutils` (Debian), \
                      or run .ci/run, which installs it";
        assert!(std::env::var_os("CI").is_none(), "{advice}");
        eprintln!("SKIPPED dig_against_the_edge: {advice}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = [free_port(), free_port(), free_port()];
    let mut apps: Vec<App> = ports.iter().map(|p| App::start(*p)).collect();
    let (dns, listen, admin) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("m.toml");
    let db = city_db();
    std::fs::write(
        &cfg,
        config(dns, listen, admin, ports, db.to_str().expect("utf8")),
    )
    .expect("write");
    let _guard = start_edge(&cfg);

    let started = Instant::now();
    let soa = loop {
        let d = dig(dns, &["example.test.", "SOA"]);
        if d.status == "NOERROR" {
            break d;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no DNS answer: {}",
            d.raw
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(soa.flags.contains("aa"), "{}", soa.raw);
    assert!(soa.data()[0].starts_with("ns1.example.test. hostmaster.example.test."));

    let d = dig(dns, &["example.test.", "NS"]);
    assert_eq!(d.data(), ["ns1.example.test."]);
    let d = dig(dns, &["www.example.test.", "A"]);
    assert_eq!(d.data(), ["192.0.2.1"]);
    assert_eq!(d.answer[0].1, 60);
    let d = dig(dns, &["alias.example.test.", "CNAME"]);
    assert_eq!(d.data(), ["www.example.test."]);
    let d = dig(dns, &["alias.example.test.", "A"]);
    assert_eq!(d.data(), ["www.example.test.", "192.0.2.1"]);
    let d = dig(dns, &["example.test.", "TXT"]);
    assert_eq!(d.data(), ["\"v=spf1 -all\""]);
    let d = dig(dns, &["example.test.", "MX"]);
    assert_eq!(d.data(), ["10 mail.example.test."]);
    let d = dig(dns, &["nope.example.test.", "A"]);
    assert_eq!(d.status, "NXDOMAIN");
    assert_eq!(d.authority[0].2, "SOA", "{}", d.raw);
    let d = dig(dns, &["www.example.test.", "MX"]);
    assert_eq!((d.status.as_str(), d.answer.len()), ("NOERROR", 0));
    assert_eq!(d.authority[0].2, "SOA", "NODATA: {}", d.raw);
    let d = dig(dns, &["www.example.org.", "A"]);
    assert_eq!(d.status, "REFUSED");

    // Truncation over UDP, then dig's own retry over TCP gets it all.
    let d = dig(dns, &["+noedns", "+ignore", "big.example.test.", "TXT"]);
    assert!(d.flags.contains("tc"), "{}", d.raw);
    let d = dig(dns, &["+noedns", "big.example.test.", "TXT"]);
    assert_eq!(d.answer.len(), 3, "{}", d.raw);
    let d = dig(dns, &["+tcp", "www.example.test.", "A"]);
    assert_eq!(d.data(), ["192.0.2.1"]);

    // Client Subnet: networks of the City test database, answered with the widest scope over
    // which the geo map picks the same region: a network's own prefix when its neighbours go
    // elsewhere; for the US network (us-east-1, which is also the default for every address
    // GeoIP does not know) the /5 of us-east-1 networks and unknown space around it.
    for (subnet, want, scope) in [
        ("81.2.69.160/28", "192.0.2.20", 27),   // GB, EU → eu-west-1
        ("89.160.20.128/25", "192.0.2.20", 25), // SE, EU
        ("175.16.199.0/24", "192.0.2.30", 24),  // CN, AS → ap-southeast-1
        ("214.0.0.0/24", "192.0.2.30", 24),     // SG, AS
        ("216.160.83.56/29", "192.0.2.10", 5),  // US, NA → us-east-1
    ] {
        let d = dig(
            dns,
            &[&format!("+subnet={subnet}"), "geo.example.test.", "A"],
        );
        assert_eq!(d.data(), [want], "{subnet}: {}", d.raw);
        let ecs = d.ecs.as_deref().expect("an ECS option in the answer");
        assert_eq!(ecs, format!("{subnet}/{scope}"), "{}", d.raw);
    }
    let d = dig(dns, &["+subnet=81.2.69.160/28", "app.example.test.", "A"]);
    assert_eq!(d.data(), ["192.0.2.10"]);
    assert_eq!(
        d.ecs.as_deref(),
        Some("81.2.69.160/28/0"),
        "failover does not depend on the client"
    );
    let d = dig(dns, &["geo.example.test.", "A"]);
    assert_eq!(d.data(), ["192.0.2.10"], "127.0.0.1 is nowhere: default");
    assert_eq!(d.ecs, None);
    let d = dig(dns, &["app.example.test.", "AAAA"]);
    assert_eq!(d.data(), ["2001:db8::10"]);

    // us-east-1's app goes down: gone from the answers within one probe cycle + margin.
    let probe = Duration::from_millis(200);
    let marked_down = probe * 2;
    apps[0].stop();
    let stopped = Instant::now();
    let took = loop {
        let d = dig(dns, &["app.example.test.", "A"]);
        if d.data() == ["192.0.2.20"] {
            assert!(
                d.answer[0].1 <= 5,
                "TTL shrinks after a transition: {}",
                d.raw
            );
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < marked_down + probe + Duration::from_secs(2),
            "us-east-1 still answered: {}",
            d.raw
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "us-east-1 left the answers {} ms after its app stopped",
        took.as_millis()
    );
    let d = dig(dns, &["+subnet=216.160.83.56/29", "geo.example.test.", "A"]);
    assert_eq!(d.data(), ["192.0.2.20"], "geo: the mapped region is down");
    let d = dig(dns, &["app.example.test.", "AAAA"]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(
        d.data(),
        ["2001:db8::10"],
        "AAAA: the only IPv6 region is down, fail-open (routing's default) answers it"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "ctl",
            "--admin",
            &format!("http://127.0.0.1:{admin}"),
            "explain-dns",
            "app",
            "--ip",
            "203.0.113.5",
        ])
        .output()
        .expect("ctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("down, skipped: us-east-1"), "{text}");
    assert!(text.contains("192.0.2.20"), "{text}");

    // Back up: the app returns, after up_after successes it is answered again.
    apps[0] = App::start(ports[0]);
    let back = Instant::now();
    loop {
        let d = dig(dns, &["app.example.test.", "A"]);
        if d.data() == ["192.0.2.10"] {
            break;
        }
        assert!(
            back.elapsed() < probe * 2 + probe + Duration::from_secs(3),
            "us-east-1 never came back: {}",
            d.raw
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Every region down: the fail-closed record answers NODATA.
    for a in &mut apps {
        a.stop();
    }
    let all = Instant::now();
    loop {
        let d = dig(dns, &["app.example.test.", "A"]);
        if d.status == "NOERROR" && d.answer.is_empty() {
            assert_eq!(d.authority[0].2, "SOA");
            break;
        }
        assert!(all.elapsed() < Duration::from_secs(4), "{}", d.raw);
        std::thread::sleep(Duration::from_millis(20));
    }

    let metrics = http_get(&format!("http://127.0.0.1:{admin}/metrics"));
    assert!(
        metrics.contains("meridian_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("meridian_dns_answers_total{region=\"eu-west-1\"}"));
    assert!(metrics.contains("meridian_dns_ecs_total"));
}

/// A GET with a plain TCP exchange (the test crate has no blocking HTTP client).
fn http_get(url: &str) -> String {
    {
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest.split_once('/').expect("path");
        let mut s = std::net::TcpStream::connect(host).expect("connect");
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }
}
