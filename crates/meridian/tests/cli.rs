//! The binary's command line: exit codes and messages of `check` and `region`.

use std::process::Command;

fn meridian(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example() -> String {
    format!(
        "{}/../../examples/meridian.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn check_accepts_the_example_and_prints_the_topology() {
    let (code, out, err) = meridian(&["check", "--config", &example()]);
    assert_eq!(code, 0, "stderr: {err}");
    for region in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
        assert!(out.contains(region), "summary lacks {region}:\n{out}");
    }
    assert!(out.contains("orders"), "summary lacks keyspaces:\n{out}");
}

#[test]
fn check_reports_bad_config_with_position_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.toml");
    let text = "[cluster]\nname = \"x\"\n\n[[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\napp = []\n\n[[keyspace]]\nname = \"o\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 4\n";
    std::fs::write(&f, text).expect("write");
    let (code, _, err) = meridian(&["check", "--config", f.to_str().expect("utf8")]);
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("bad.toml:13:"), "no file:line:col in: {err}");
    assert!(err.contains("quorum"), "{err}");
}

/// `check` reads what every role reads at start, so a file it passes cannot fail a process:
/// the cluster secret and each edge's GeoIP database.
#[test]
fn check_reads_the_secret_and_geoip_files_the_topology_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("m.toml");
    let config = |extra: &str| {
        let text = format!(
            "[cluster]\nname = \"x\"\nsecret_file = \"cluster.secret\"\n\n[[region]]\nname = \"a\"\n\
             node = \"http://127.0.0.1:1\"\n\n[[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:2\"\n\
             admin = \"127.0.0.1:3\"\n{extra}"
        );
        std::fs::write(&f, text).expect("write");
        meridian(&["check", "--config", f.to_str().expect("utf8")])
    };
    let (code, _, err) = config("");
    assert_eq!(code, 2, "stderr: {err}");
    assert!(
        err.contains("cluster.secret") && err.contains("openssl rand"),
        "{err}"
    );
    std::fs::write(dir.path().join("cluster.secret"), "short\n").expect("write");
    let (code, _, err) = config("");
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("at least 16"), "{err}");
    std::fs::write(dir.path().join("cluster.secret"), "0123456789abcdef0123\n").expect("write");
    let (code, _, err) = config("geoip = \"missing.mmdb\"\n");
    assert_eq!(code, 2, "stderr: {err}");
    assert!(
        err.contains("missing.mmdb") && err.contains("GeoIP"),
        "{err}"
    );
    let (code, out, err) = config("");
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn missing_file_and_unknown_region_exit_2() {
    let (code, _, err) = meridian(&["check", "--config", "/nonexistent/m.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/m.toml"), "{err}");
    let (code, _, err) = meridian(&["region", "--config", &example(), "--region", "mars-1"]);
    assert_eq!(code, 2);
    assert!(err.contains("mars-1") && err.contains("us-east-1"), "{err}");
    let (code, _, _) = meridian(&["frobnicate"]);
    assert_eq!(code, 2, "bad usage is exit 2");
}

#[test]
fn wan_rejects_bad_links_and_unknown_delays_with_exit_2() {
    let (code, _, err) = meridian(&["wan", "--link", "us-east-1:eu-west-1:9701"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FROM:TO:LISTEN_PORT:UPSTREAM_PORT"), "{err}");
    let (code, _, err) = meridian(&["wan", "--profile", "/nonexistent.csv", "--link", "a:b:0:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.csv"), "{err}");
    let (code, _, err) = meridian(&["wan", "--link", "mars-1:b:0:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mars-1"), "{err}");
}

/// `meridian wan` end to end: a delayed relay, a partition switched on the control port, the
/// heal delivering what was held, and the byte counters.
#[test]
fn wan_relays_with_delay_and_obeys_its_control_port() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up_port = upstream.local_addr().expect("addr").port();
    let (relay_port, control_port) = (free(), free());
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "wan",
            "--delay",
            "us-east-1:eu-west-1:30",
            "--link",
            &format!("us-east-1:eu-west-1:{relay_port}:{up_port}"),
            "--control",
            &format!("127.0.0.1:{control_port}"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn meridian wan");
    let connect = |port: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("port {port}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    let control = connect(control_port);
    let mut answers = BufReader::new(control.try_clone().expect("clone"));
    let mut command = |line: &str| {
        (&control)
            .write_all(format!("{line}\n").as_bytes())
            .expect("send command");
        let mut answer = String::new();
        answers.read_line(&mut answer).expect("answer");
        answer
    };
    let mut client = connect(relay_port);
    let (mut server, _) = upstream.accept().expect("relay connects upstream");
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 4];
    let sent = Instant::now();
    client.write_all(b"ping").expect("send");
    server.read_exact(&mut buf).expect("delivered");
    assert!(
        sent.elapsed() >= Duration::from_millis(29),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(command("partition us-east-1 eu-west-1"), "ok\n");
    client.write_all(b"held").expect("send");
    assert!(
        server.read_exact(&mut buf).is_err(),
        "nothing passes a partition"
    );
    assert_eq!(command("heal"), "ok\n");
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    server
        .read_exact(&mut buf)
        .expect("held bytes delivered after the heal");
    assert_eq!(&buf, b"held");
    let bytes = command("bytes");
    assert!(bytes.contains("us-east-1>eu-west-1=8"), "{bytes}");
    child.kill().expect("kill");
    let _ = child.wait();
}

#[test]
fn demo_app_teaches_its_usage_and_refuses_bad_arguments_with_exit_2() {
    let (code, out, err) = meridian(&["demo-app", "--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    for word in [
        "--region",
        "--node",
        "--listen",
        "Example:",
        "orders",
        "Meridian-Replay",
    ] {
        assert!(out.contains(word), "help lacks {word}:\n{out}");
    }
    let ok = [
        "demo-app",
        "--region",
        "us-east-1",
        "--node",
        "http://127.0.0.1:7601",
    ];
    let (code, _, err) = meridian(&[&ok[..], &["--listen", "nonsense"]].concat());
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("nonsense"), "{err}");
    let (code, _, err) = meridian(&[
        "demo-app",
        "--region",
        "us-east-1",
        "--node",
        "127.0.0.1:7601",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("http://"), "{err}");
    let (code, _, err) = meridian(&[
        "demo-app",
        "--region",
        "US East",
        "--node",
        "http://127.0.0.1:7601",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "stderr: {err}");
}

/// The status line of `GET path` on `addr` over HTTP/1.0, or `None` if nothing answers.
fn http_status_line(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines().next().map(str::to_string)
}

#[test]
fn demo_app_serves_and_is_not_ready_without_its_node() {
    // Two distinct free ports: both held until both are known.
    let held: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addr = |i: usize| held[i].local_addr().expect("addr").to_string();
    let (listen, node) = (addr(0), addr(1));
    drop(held);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["demo-app", "--region", "us-east-1", "--listen", &listen])
        .args(["--node", &format!("http://{node}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let live = loop {
        if let Some(line) = http_status_line(&listen, "/health/live") {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo-app never listened on {listen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let ready = http_status_line(&listen, "/health/ready");
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(live.contains(" 200 "), "{live}");
    assert!(
        ready.as_deref().is_some_and(|l| l.contains(" 503 ")),
        "{ready:?}"
    );
}

#[test]
fn bad_admin_urls_and_short_demos_are_refused_with_exit_2() {
    for bad in [
        "notaurl",
        "ftp://127.0.0.1:9080",
        "http://127.0.0.1:9080/v1",
    ] {
        let (code, _, err) = meridian(&["ctl", "--admin", bad, "status"]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains("expected the edge's admin URL, e.g. http://127.0.0.1:9080"),
            "{bad}: {err}"
        );
    }
    let (code, _, err) = meridian(&["demo", "--duration", "10s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 30s"), "{err}");
}

#[test]
fn an_unparsable_log_filter_is_named_and_the_default_used() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config", &example()])
        .env("MERIDIAN_LOG", "info,=[")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("MERIDIAN_LOG is not a log filter"),
        "no warning about the filter: {err}"
    );
}

#[test]
fn check_gives_advice_on_a_valid_but_risky_topology() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("risky.toml");
    let text = "[cluster]\nname = \"x\"\n\
        [[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\n\
        [[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\n\
        [[keyspace]]\nname = \"o\"\ntype = \"register\"\nreplication = \"sync\"\n";
    std::fs::write(&f, text).expect("write");
    let (code, out, err) = meridian(&["check", "--config", f.to_str().expect("utf8")]);
    assert_eq!(code, 0, "advice does not fail the check: {err}");
    assert!(out.contains("advice (1: valid, but consider)"), "{out}");
    assert!(
        out.contains("keyspace `o`: quorum 2 is every one of the 2 regions"),
        "{out}"
    );
    let (_, out, _) = meridian(&["check", "--config", &example()]);
    assert!(!out.contains("advice"), "the example needs none:\n{out}");
}
