//! `meridian edge` and `meridian ctl` as real processes: startup, admin calls, SIGHUP reload.

mod support;

use support::dns::{Kill, edge_command, free_port, start_edge};

use std::process::Command;
use std::time::{Duration, Instant};

fn ctl(admin: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["ctl", "--admin", admin, "--token-file", token])
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(policy: &str, listen: u16, admin: u16, app: u16) -> String {
    format!(
        "[cluster]\nname = \"t\"\nsecret_file = \"secret\"\n\
         [[region]]\nname = \"r1\"\nnode = \"http://127.0.0.1:1\"\napp = [\"http://127.0.0.1:{app}\"]\n\
         [[region]]\nname = \"r2\"\nnode = \"http://127.0.0.1:2\"\napp = [\"http://127.0.0.1:{}\"]\n\
         [routing]\npolicy = \"{policy}\"\n\
         [[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:{listen}\"\nadmin = \"127.0.0.1:{admin}\"\n",
        app + 1
    )
}

/// `meridian edge` as a child process (killed on drop) with the `failover` topology of
/// [`config`] in a temporary directory, and the admin token written beside it.
struct RunningEdge {
    _dir: tempfile::TempDir,
    _child: Kill,
    listen: u16,
    admin: u16,
    app: u16,
    cfg: std::path::PathBuf,
    token: String,
    pid: String,
    admin_url: String,
}

impl RunningEdge {
    fn start() -> RunningEdge {
        let dir = tempfile::tempdir().expect("tempdir");
        let (listen, admin, app) = (free_port(), free_port(), free_port());
        let cfg = dir.path().join("m.toml");
        let token = dir.path().join("secret");
        std::fs::write(&token, "0123456789abcdef0123\n").expect("write");
        std::fs::write(&cfg, config("failover", listen, admin, app)).expect("write");
        let child = start_edge(&cfg);
        RunningEdge {
            pid: child.0.id().to_string(),
            _child: child,
            token: token.to_str().expect("utf8").to_string(),
            _dir: dir,
            listen,
            admin,
            app,
            cfg,
            admin_url: format!("http://127.0.0.1:{admin}"),
        }
    }
}

#[test]
fn edge_serves_admin_via_ctl_and_reloads_on_sighup() {
    let e = RunningEdge::start();
    let (listen, admin, app) = (e.listen, e.admin, e.app);
    let (cfg, pid, admin_url) = (&e.cfg, e.pid.as_str(), e.admin_url.as_str());
    let token = e.token.as_str();
    let started = Instant::now();
    let status = loop {
        let (code, out, _) = ctl(admin_url, token, &["status"]);
        if code == 0 {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "edge never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.contains("policy failover") && status.contains("r1"),
        "{status}"
    );
    assert!(status.contains("in flight    0"), "{status}");

    let (code, out, err) = ctl(admin_url, token, &["drain", "r1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("r1: weight 0"), "{out}");
    let (code, out, _) = ctl(admin_url, token, &["explain", "--ip", "203.0.113.5"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("drained") && out.contains("[\"r2\",\"r1\"]"),
        "{out}"
    );
    // The token file may come from the environment instead.
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["ctl", "--admin", admin_url, "status"])
        .env("MERIDIAN_TOKEN_FILE", token)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = ctl(admin_url, "/dev/null", &["status"]);
    assert_eq!(code, 2, "a missing token is refused as bad usage");
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("hint: send `Authorization: Bearer"), "{err}");
    let (code, _, err) = ctl(admin_url, token, &["drain", "mars-1"]);
    assert_eq!(code, 2, "an unknown region is bad usage: {err}");
    assert!(err.contains("400") && err.contains("hint:"), "{err}");
    let (code, out, err) = ctl(admin_url, token, &["weight", "r1", "40"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("r1: weight 40"), "{out}");
    let (code, out, err) = ctl(
        admin_url,
        token,
        &[
            "explain",
            "--ip",
            "203.0.113.5",
            "--method",
            "POST",
            "--path",
            "/orders",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "client POST /orders from 203.0.113.5 (never retried once it may have reached the app)"
        ),
        "{out}"
    );
    for bad in ["101", "-1", "x"] {
        let (code, _, err) = ctl(admin_url, token, &["weight", "r1", bad]);
        assert_eq!(code, 2, "bad usage: {bad}: {err}");
        assert!(err.contains("PCT") || err.contains("<PCT>"), "{err}");
    }

    std::fs::write(cfg, "[cluster]\nname = \"t\"\n[[region]]\n").expect("write");
    Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, _) = ctl(admin_url, token, &["status"]);
    assert_eq!(
        code, 0,
        "a bad config is refused and the edge keeps serving"
    );
    assert!(out.contains("policy failover"), "{out}");

    std::fs::write(cfg, config("weighted", listen, admin, app)).expect("write");
    Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .expect("kill");
    let started = Instant::now();
    loop {
        let (_, out, _) = ctl(admin_url, token, &["status"]);
        if out.contains("policy weighted") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "reload not applied: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tiny keep-alive HTTP/1.1 app answering `ok` to every request, on its own threads.
fn tiny_app(port: u16) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind app");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if out.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The whole answer (the edge closes) to `GET /x` of the edge proxying at `addr`, asked
/// again every 100 ms until one comes, for up to 10 s.
fn first_answer(addr: &str) -> String {
    first_answer_to(
        addr,
        b"GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
}

/// [`first_answer`] to `request`.
fn first_answer_to(addr: &str, request: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let started = Instant::now();
    loop {
        let got = std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.write_all(request)?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        if let Ok(text) = got
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edge never answered on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn edge_on_one_thread_proxies_and_zero_threads_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, app) = (free_port(), free_port(), free_port());
    tiny_app(app);
    let cfg = dir.path().join("m.toml");
    std::fs::write(dir.path().join("secret"), "0123456789abcdef0123\n").expect("write");
    std::fs::write(&cfg, config("failover", listen, admin, app)).expect("write");
    let edge = |threads: &str| {
        edge_command(&cfg)
            .args(["--threads", threads])
            .spawn()
            .expect("spawn")
    };
    let status = edge("0").wait().expect("wait");
    assert_eq!(status.code(), Some(2), "--threads 0 is bad usage");

    let _guard = Kill(edge("1"));
    let answer = first_answer(&format!("127.0.0.1:{listen}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("meridian-region: r1"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}

/// SIGHUP re-reads the GeoIP database the topology names: adding `geoip` locates clients,
/// a missing database file refuses the whole reload and keeps the last good state.
#[test]
fn sighup_reloads_the_geoip_database() {
    let e = RunningEdge::start();
    let (listen, admin, app) = (e.listen, e.admin, e.app);
    let (cfg, pid, admin_url) = (&e.cfg, e.pid.as_str(), e.admin_url.as_str());
    let token = e.token.as_str();
    // `ctl explain` starts with "client GET / from 81.2.69.160 (…): country GB continent EU"
    // (or "not located").
    let country = || {
        let (code, out, _) = ctl(admin_url, token, &["explain", "--ip", "81.2.69.160"]);
        (code == 0).then(|| out.lines().next().unwrap_or_default().to_string())
    };
    let started = Instant::now();
    let first = loop {
        if let Some(c) = country() {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "edge never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(first.ends_with("not located"), "no database yet: {first}");

    let db = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/geoip/GeoIP2-City-Test.mmdb");
    let with_geoip = |path: &std::path::Path| {
        config("failover", listen, admin, app).replace(
            "[[edge]]\nname = \"e\"\n",
            &format!("[[edge]]\nname = \"e\"\ngeoip = \"{}\"\n", path.display()),
        )
    };
    std::fs::write(cfg, with_geoip(&db)).expect("write");
    let hup = || {
        Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .expect("kill");
    };
    hup();
    let started = Instant::now();
    let located = |line: &Option<String>| {
        line.as_deref().is_some_and(|l| {
            l.starts_with("client GET / from 81.2.69.160 (")
                && l.ends_with("): country GB continent EU")
        })
    };
    while !located(&country()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "GeoIP not reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    std::fs::write(cfg, with_geoip(&cfg.with_file_name("missing.mmdb"))).expect("write");
    hup();
    std::thread::sleep(Duration::from_millis(300));
    let line = country();
    assert!(located(&line), "the last good database stays: {line:?}");
}

/// `client_header_timeout` of the `[[edge]]` reaches the running edge: a connection that sends
/// nothing is closed after it, not after the default 30 s.
#[test]
fn the_edge_closes_idle_connections_after_its_configured_header_timeout() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, app) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("m.toml");
    std::fs::write(dir.path().join("secret"), "0123456789abcdef0123\n").expect("write");
    let text = config("failover", listen, admin, app) + "client_header_timeout = \"1s\"\n";
    std::fs::write(&cfg, text).expect("write");
    let _edge = start_edge(&cfg);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", listen)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the edge does not listen: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let after = started.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
}

/// `--listen`, `--admin-listen` and `--dns-listen` bind the proxy, the admin API and GeoDNS
/// on other addresses than the topology's (a container's, behind NAT), which stay unbound;
/// `--dns-listen` without a `[dns]` section is bad usage.
#[test]
fn edge_binds_the_addresses_given_on_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, app, dns) = (free_port(), free_port(), free_port(), free_port());
    tiny_app(app);
    let cfg = dir.path().join("m.toml");
    std::fs::write(dir.path().join("secret"), "0123456789abcdef0123\n").expect("write");
    let zone = format!(
        "[dns]\nlisten = \"127.0.0.1:{dns}\"\nzone = \"example.test.\"\nttl = \"60s\"\n\
         nameservers = [\"ns1.example.test.\"]\n"
    );
    std::fs::write(&cfg, config("failover", listen, admin, app)).expect("write");
    let status = edge_command(&cfg)
        .args(["--dns-listen", "127.0.0.2:1"])
        .status()
        .expect("run");
    assert_eq!(status.code(), Some(2), "--dns-listen without [dns]");

    std::fs::write(&cfg, config("failover", listen, admin, app) + &zone).expect("write");
    // The same ports on 127.0.0.2: free there, since only 127.0.0.1's were taken.
    let bound = |port: u16| format!("127.0.0.2:{port}");
    let _guard = Kill(
        edge_command(&cfg)
            .args(["--listen", &bound(listen)])
            .args(["--admin-listen", &bound(admin)])
            .args(["--dns-listen", &bound(dns)])
            .spawn()
            .expect("spawn"),
    );
    let answer = first_answer(&bound(listen));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let token = dir.path().join("secret");
    let (code, out, err) = ctl(
        &format!("http://{}", bound(admin)),
        token.to_str().expect("utf8"),
        &["status"],
    );
    assert_eq!(code, 0, "admin on --admin-listen: {out} {err}");
    assert!(
        std::net::TcpStream::connect(bound(dns)).is_ok(),
        "GeoDNS over TCP on --dns-listen"
    );
    for port in [listen, admin, dns] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the topology's 127.0.0.1:{port} is bound too"
        );
    }
}

/// `[[edge]] access_log` (relative to the topology file) gets a JSON line per request; after
/// logrotate moves the file, SIGHUP makes the edge write to a new one at the path. A path the
/// edge cannot append to is bad config (exit 2).
#[test]
fn access_log_is_written_and_reopened_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, app) = (free_port(), free_port(), free_port());
    tiny_app(app);
    let cfg = dir.path().join("m.toml");
    std::fs::write(dir.path().join("secret"), "0123456789abcdef0123\n").expect("write");
    let with_log =
        |log: &str| config("failover", listen, admin, app) + &format!("access_log = \"{log}\"\n");
    std::fs::write(&cfg, with_log("no-such-dir/access.log")).expect("write");
    let status = edge_command(&cfg).status().expect("run");
    assert_eq!(
        status.code(),
        Some(2),
        "an access log that cannot be opened"
    );

    std::fs::write(&cfg, with_log("access.log")).expect("write");
    let edge = Kill(edge_command(&cfg).spawn().expect("spawn"));
    let pid = edge.0.id().to_string();
    let addr = format!("127.0.0.1:{listen}");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    // Lines reach the file within the flush tick: the first answer, then one more line.
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(first_answer(&addr).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    while lines(&log) == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "no line logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::rename(&log, &rotated).expect("rotate");
    Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_millis(300));
    assert!(first_answer(&addr).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    while lines(&log) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nothing written to the new file after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .expect("read")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("JSON");
    assert_eq!(line["path"], "/x");
    assert_eq!(line["region"], "r1");
    assert!(
        lines(&rotated) >= 1,
        "the old lines stay in the rotated file"
    );
}

/// `[[edge]] upstream_timeout` bounds the wait for a backend's answer: a backend that accepts
/// and never answers costs a client the configured second, then a 504 — not the 30 s default.
#[test]
fn upstream_timeout_from_the_topology_bounds_a_silent_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, app) = (free_port(), free_port(), free_port());
    // Accepts and reads, never answers (the connections are kept until the test ends).
    let silent = std::net::TcpListener::bind(("127.0.0.1", app)).expect("bind app");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let cfg = dir.path().join("m.toml");
    std::fs::write(dir.path().join("secret"), "0123456789abcdef0123\n").expect("write");
    std::fs::write(
        &cfg,
        config("failover", listen, admin, app) + "upstream_timeout = \"1s\"\n",
    )
    .expect("write");
    let _edge = start_edge(&cfg);
    let addr = format!("127.0.0.1:{listen}");
    // A POST is not retried elsewhere: the timeout is the answer.
    let started = Instant::now();
    let answer = first_answer_to(
        &addr,
        b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("within 1s"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

/// `--token-public-key` takes an identity provider's key of any supported kind, repeated for
/// a rotation; a key that verifies no supported token is bad config (exit 2), named with why.
#[test]
fn token_public_keys_of_each_kind_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, app) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("m.toml");
    std::fs::write(dir.path().join("secret"), "0123456789abcdef0123\n").expect("write");
    std::fs::write(&cfg, config("failover", listen, admin, app)).expect("write");
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../meridian-edge/tests/keys");
    for (file, why) in [
        ("rsa1024.pub", "RSA key of 1024 bits"),
        ("p384.pub", "other than P-256"),
        ("rsa2048.key", "not a PEM public key"),
    ] {
        let out = edge_command(&cfg)
            .arg("--token-public-key")
            .arg(keys.join(file))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(why) && err.contains(file), "{file}: {err}");
    }
    let edge = Kill(
        edge_command(&cfg)
            .arg("--token-public-key")
            .arg(keys.join("rsa2048.pub"))
            .arg("--token-public-key")
            .arg(keys.join("p256.pub"))
            .spawn()
            .expect("spawn"),
    );
    let addr = format!("127.0.0.1:{admin}");
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edge with two keys did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(edge);
}

/// A topology for the identity-provider token tests, in a temporary directory: the
/// `failover` one of [`config`] with region r2 in zone `us` (so a verified token's zone shows
/// in an explanation), and the admin secret beside it.
struct TokenWorld {
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    secret: std::path::PathBuf,
    admin_url: String,
    /// The test keys of `meridian-edge` (tests/keys/README.md).
    keys: std::path::PathBuf,
    /// An RS256 token of `{"zone":"us"}`, signed by `keys/rsa2048.key`, naming no `kid`.
    token: String,
}

impl TokenWorld {
    fn new() -> TokenWorld {
        let dir = tempfile::tempdir().expect("tempdir");
        let (listen, admin, app) = (free_port(), free_port(), free_port());
        let cfg = dir.path().join("m.toml");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123\n").expect("write");
        let text = config("failover", listen, admin, app)
            .replace("[routing]", "[zones]\nus = [\"r2\"]\n[routing]");
        std::fs::write(&cfg, text).expect("write");
        let keys =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../meridian-edge/tests/keys");
        let token = std::fs::read_to_string(keys.join("rs256-zone-us.jwt")).expect("token");
        TokenWorld {
            dir,
            cfg,
            secret,
            admin_url: format!("http://127.0.0.1:{admin}"),
            keys,
            token: token.trim().to_string(),
        }
    }

    /// `meridian ctl explain` of [`TokenWorld::token`] from a client IP: (exit code, stdout,
    /// stderr).
    fn explain(&self) -> (i32, String, String) {
        ctl(
            &self.admin_url,
            self.secret.to_str().expect("utf8"),
            &["explain", "--ip", "203.0.113.5", "--token", &self.token],
        )
    }

    /// [`TokenWorld::explain`]'s output once the edge answers (it may still be starting;
    /// 10 s at most).
    fn explain_when_up(&self) -> String {
        let started = Instant::now();
        loop {
            let (code, out, _) = self.explain();
            if code == 0 {
                return out;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the edge did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGHUP re-reads the `--token-public-key` files: a provider's new key is accepted without a
/// restart, and a file that no longer holds a usable key leaves the old keys in place.
#[test]
fn token_public_keys_are_reread_on_sighup() {
    let w = TokenWorld::new();
    let (cfg, keys) = (&w.cfg, &w.keys);
    let key = w.dir.path().join("idp.pem");
    std::fs::copy(keys.join("p256.pub"), &key).expect("copy");
    let edge = Kill(
        edge_command(cfg)
            .arg("--token-public-key")
            .arg(&key)
            .spawn()
            .expect("spawn"),
    );
    let pid = edge.0.id().to_string();
    let zone = || w.explain();
    let out = w.explain_when_up();
    assert!(
        !out.contains("residency zone `us`"),
        "a P-256 key verified an RS256 token: {out}"
    );
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        std::thread::sleep(Duration::from_millis(300));
    };
    std::fs::copy(keys.join("rsa2048.pub"), &key).expect("copy");
    hup();
    let (code, out, err) = zone();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("residency zone `us`"),
        "the new key was not taken: {out}"
    );
    std::fs::write(&key, "not a key").expect("write");
    hup();
    let (code, out, err) = zone();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("residency zone `us`"),
        "a bad file replaced the keys: {out}"
    );
    drop(edge);
}

/// `--token-jwks` with a JWKS file: its keys verify an identity provider's tokens (the token
/// names no `kid`, so any key of its `alg` may), `--token-issuer` and `--token-audience` make
/// a token without those claims count for nothing, and a file that is no key set, a missing
/// file, a URL without a host and a refresh period under 30 s are bad config (exit 2).
#[test]
fn token_jwks_files_issuer_audience_and_refusals() {
    let w = TokenWorld::new();
    let cfg = &w.cfg;
    let jwks = w.keys.join("idp.jwks.json");
    let garbage = w.dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"keys\": 7}").expect("write");
    let missing = w.dir.path().join("missing.json");
    for (args, why) in [
        (
            vec!["--token-jwks", garbage.to_str().expect("utf8")],
            "not a JSON Web Key Set",
        ),
        (
            vec!["--token-jwks", missing.to_str().expect("utf8")],
            "give a JWKS file or an https:// URL",
        ),
        (vec!["--token-jwks", "https://"], "--token-jwks https://"),
        (
            vec![
                "--token-jwks-refresh",
                "5s",
                "--token-jwks",
                "https://idp.test/jwks",
            ],
            "at least 30s",
        ),
    ] {
        let out = edge_command(cfg)
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let explained = |extra: &[&str]| {
        let _edge = Kill(
            edge_command(cfg)
                .arg("--token-jwks")
                .arg(&jwks)
                .args(extra)
                .spawn()
                .expect("spawn"),
        );
        w.explain_when_up()
    };
    let out = explained(&[]);
    assert!(
        out.contains("residency zone `us`"),
        "the JWKS file's RSA key did not verify the token: {out}"
    );
    for extra in [
        &["--token-issuer", "https://idp.test"][..],
        &["--token-audience", "meridian"],
    ] {
        let out = explained(extra);
        assert!(
            !out.contains("residency zone `us`"),
            "{extra:?}: a token without the claim counted: {out}"
        );
    }
}
