//! Malformed DNS input against the real `meridian edge` binary: every packet of the fixed
//! corpus in `testdata/dns-malformed/` (made by its `make.py`; also the fuzz target's seeds)
//! is sent over UDP and over TCP, and abusive TCP framing (empty frames, a frame cut short and
//! left open, idle connections) is tried. The server must answer each packet it answers with a
//! well-formed reply to that query, never crash, and keep answering valid queries throughout.

mod support;

use support::dns::{App, Kill, free_port, start_edge};

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/dns-malformed");
    let mut cases: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read case"))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    cases
}

fn config(dns: u16, listen: u16, admin: u16, app: u16) -> String {
    let long = "x".repeat(200);
    format!(
        r#"
[cluster]
name = "t"
[[region]]
name = "us-east-1"
node = "http://127.0.0.1:1"
app = ["http://127.0.0.1:{app}"]
addresses = ["192.0.2.10"]
[[edge]]
name = "e"
listen = "127.0.0.1:{listen}"
admin = "127.0.0.1:{admin}"
[dns]
listen = "127.0.0.1:{dns}"
zone = "example.test."
nameservers = ["ns1.example.test."]
[[dns.record]]
name = "www"
type = "A"
values = ["192.0.2.1"]
[[dns.record]]
name = "big"
type = "TXT"
values = ["{long}1", "{long}2", "{long}3"]
[[dns.record]]
name = "app"
type = "A"
policy = "latency"
"#
    )
}

/// A valid query for `www.example.test. A` with the given ID.
fn valid_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x03www\x07example\x04test\x00\x00\x01\x00\x01");
    q
}

/// The reply to `query` on a fresh UDP socket, if one comes within `wait`.
fn udp_ask(port: u16, query: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.send_to(query, ("127.0.0.1", port)).expect("send");
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The reply to `query` framed on a fresh TCP connection, if one comes within `wait`.
fn tcp_ask(port: u16, query: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    let len = u16::try_from(query.len()).expect("fits a TCP frame");
    s.write_all(&len.to_be_bytes()).ok()?;
    s.write_all(query).ok()?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut reply).ok()?;
    Some(reply)
}

/// The reply's response code (header RCODE, low 4 bits).
fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

/// A reply must be a response to the query: a full header, QR set, the query's ID.
fn check_reply(case: &str, transport: &str, query: &[u8], reply: &[u8]) {
    assert!(
        reply.len() >= 12,
        "{case} over {transport}: reply of {} bytes",
        reply.len()
    );
    assert!(reply[2] & 0x80 != 0, "{case} over {transport}: QR not set");
    if query.len() >= 2 {
        assert_eq!(
            reply[..2],
            query[..2],
            "{case} over {transport}: another ID"
        );
    }
    if transport == "udp" {
        assert!(
            reply.len() <= 1232,
            "{case}: {} bytes over UDP",
            reply.len()
        );
    }
}

/// Valid queries over UDP and TCP are answered at once (NOERROR, one answer).
fn assert_alive(port: u16, child: &mut Kill, after: &str) {
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the server exited after {after}"
    );
    let q = valid_query(0xbeef);
    for (transport, reply) in [
        ("udp", udp_ask(port, &q, Duration::from_secs(2))),
        ("tcp", tcp_ask(port, &q, Duration::from_secs(2))),
    ] {
        let reply = reply.unwrap_or_else(|| panic!("no {transport} answer after {after}"));
        check_reply("valid query", transport, &q, &reply);
        assert_eq!(rcode(&reply), 0, "after {after}");
        assert_eq!(reply[7], 1, "one answer after {after}");
    }
}

#[test]
fn malformed_packets_never_crash_or_stall_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app_port = free_port();
    let _app = App::start(app_port);
    let (dns, listen, admin) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, config(dns, listen, admin, app_port)).expect("write config");
    let mut child = start_edge(&cfg);
    let started = Instant::now();
    while udp_ask(dns, &valid_query(1), Duration::from_millis(100)).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "GeoDNS never answered"
        );
    }

    let mut rcodes = std::collections::BTreeMap::new();
    for (i, (case, bytes)) in corpus().iter().enumerate() {
        if let Some(reply) = udp_ask(dns, bytes, Duration::from_millis(150)) {
            check_reply(case, "udp", bytes, &reply);
            rcodes.insert(case.clone(), rcode(&reply));
        }
        if bytes.len() <= usize::from(u16::MAX)
            && let Some(reply) = tcp_ask(dns, bytes, Duration::from_millis(300))
        {
            check_reply(case, "tcp", bytes, &reply);
        }
        if i % 8 == 7 {
            assert_alive(dns, &mut child, case);
        }
    }
    let of = |case: &str| rcodes.get(&format!("{case}.bin")).copied();
    assert_eq!(of("no-question"), Some(1), "FORMERR: {rcodes:?}");
    assert_eq!(of("two-questions"), Some(1), "FORMERR: {rcodes:?}");
    assert_eq!(of("opcode-update"), Some(4), "NOTIMP: {rcodes:?}");
    assert_eq!(of("outside-zone"), Some(5), "REFUSED: {rcodes:?}");
    assert_eq!(
        of("mixed-case"),
        Some(0),
        "names are case-insensitive: {rcodes:?}"
    );
    for case in [
        "ecs-host-bits-set",
        "ecs-address-too-long",
        "ecs-address-too-short",
    ] {
        assert_eq!(of(case), Some(1), "RFC 7871 §6, {case}: {rcodes:?}");
    }
    assert_eq!(
        of("response-bit-set"),
        None,
        "a response is never answered: {rcodes:?}"
    );
    assert_alive(dns, &mut child, "the whole corpus");

    // Abusive TCP: an empty frame, a length cut in half, a frame announced long and left
    // unfinished, and idle connections — all held open while valid queries are asked.
    let mut held = Vec::new();
    for opening in [
        &b"\x00\x00"[..],
        b"\x01",
        b"\x01\x2c\x12\x34\x00\x00\x00\x01",
        b"",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", dns)).expect("connect");
        s.write_all(opening).expect("write");
        held.push(s);
    }
    for _ in 0..16 {
        held.push(TcpStream::connect(("127.0.0.1", dns)).expect("connect"));
    }
    assert_alive(dns, &mut child, "stalled TCP connections");
    drop(held);
    assert_alive(dns, &mut child, "stalled TCP connections closed");
}
