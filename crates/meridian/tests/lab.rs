//! The lab end to end: `meridian lab run` on a short outage scenario (real child processes, a
//! SIGKILLed region, a partition), asserting on the JSON report it writes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Processes of the lab world in `world` (they carry `MERIDIAN_LAB_WORLD=<world>`; read from
/// /proc).
fn world_processes(world: &Path) -> Vec<String> {
    let marker = format!("MERIDIAN_LAB_WORLD={}", world.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{}: {}",
                name.to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

/// A `meridian demo` or `meridian lab run` as a child process. [`Run::interrupt`] stops it as
/// Ctrl-C does; dropped while it still runs — a failed assertion — it is interrupted the same
/// way and killed if it outlives 20 s, so no test leaves a world running.
struct Run(std::process::Child);

impl Run {
    /// Sends SIGINT and waits at most `within` for the exit; panics saying `what` past that.
    fn interrupt(&mut self, within: Duration, what: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(sent.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.0.try_wait().expect("wait") {
                return exit;
            }
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Appends the lines `printed` carries to `out` until `out` holds `needle`; false once
/// `deadline` has passed without it.
fn read_until(
    printed: &std::sync::mpsc::Receiver<String>,
    out: &mut String,
    needle: &str,
    deadline: Instant,
) -> bool {
    while !out.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = printed.recv_timeout(left) else {
            return false;
        };
        out.push_str(&line);
        out.push('\n');
    }
    true
}

fn workspace_root() -> &'static Path {
    // invariant: this crate lives at <root>/crates/meridian
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("the workspace root")
}

/// What `--keep` printed about one region of the world it leaves running.
struct KeptRegion {
    edge: String,
    node: String,
    admin: String,
}

/// Parses `  NAME: edge URL  app URL  node URL  edge admin URL` lines.
fn kept_regions(stdout: &str) -> Vec<KeptRegion> {
    stdout
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [
                    _,
                    "edge",
                    edge,
                    "app",
                    _,
                    "node",
                    node,
                    "edge",
                    "admin",
                    admin,
                ] => Some(KeptRegion {
                    edge: (*edge).to_string(),
                    node: (*node).to_string(),
                    admin: (*admin).to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// While `--keep` holds the world: every region's edge, node and edge admin answer (the
/// admin with the token file it printed).
fn check_kept_world(stdout: &str) {
    let regions = kept_regions(stdout);
    assert_eq!(regions.len(), 3, "{stdout}");
    let token_file = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin token: "))
        .unwrap_or_else(|| panic!("no admin token line: {stdout}"));
    let token = std::fs::read_to_string(token_file).expect("the admin token file");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        for r in &regions {
            let edge = client
                .get(format!("{}/health/ready", r.edge))
                .send()
                .await
                .expect("the kept edge answers");
            assert_eq!(edge.status(), 200, "{}", r.edge);
            assert!(edge.headers().contains_key("meridian-region"), "{}", r.edge);
            let node = client
                .get(format!("{}/health/ready", r.node))
                .send()
                .await
                .expect("the kept node answers");
            assert_eq!(node.status(), 200, "{}", r.node);
            let admin = client
                .get(format!("{}/v1/status", r.admin))
                .bearer_auth(token.trim())
                .send()
                .await
                .expect("the kept edge's admin answers");
            assert_eq!(admin.status(), 200, "{}", r.admin);
        }
    });
}

/// The outage scenario with `--keep`: the report is written, the world stays up (checked),
/// Ctrl-C stops it and the run exits as its expectations say.
#[test]
fn outage_scenario_loses_no_sync_write_and_leaks_nothing() {
    use std::io::{BufRead as _, Read as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let report_dir = dir.path().join("report");
    let begun = Instant::now();
    let mut run = Run(Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(workspace_root())
        .args([
            "lab",
            "run",
            "examples/lab/outage.toml",
            "--quiet",
            "--keep",
            "--report",
        ])
        .arg(&report_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run meridian lab run"));
    let (lines, printed) = std::sync::mpsc::channel();
    let out = run.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            // The test may have stopped listening after a failure; nothing to do then.
            let _ = lines.send(line);
        }
    });
    let mut err = run.0.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    // Everything up to the Ctrl-C prompt, within a bound.
    let mut stdout = String::new();
    let prompt = read_until(
        &printed,
        &mut stdout,
        "Ctrl-C stops it",
        begun + Duration::from_secs(150),
    );
    assert!(prompt, "no `--keep` prompt within 150 s:\n{stdout}");
    let took = begun.elapsed();
    // The admin-token line follows the prompt and the region lines.
    let token = read_until(
        &printed,
        &mut stdout,
        "admin token:",
        Instant::now() + Duration::from_secs(5),
    );
    assert!(token, "no admin token line:\n{stdout}");
    check_kept_world(&stdout);
    let status = run.interrupt(
        Duration::from_secs(20),
        "the kept world did not stop on Ctrl-C",
    );
    reader.join().expect("stdout reader");
    while let Ok(line) = printed.try_recv() {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let stderr = err_reader.join().expect("stderr reader");
    let text = std::fs::read_to_string(report_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let r: Value = serde_json::from_str(&text).expect("report.json is JSON");
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        status.success(),
        "exit {:?}; expectations: {}\n{context}",
        status.code(),
        r["expectations"]
    );
    assert!(took < Duration::from_secs(120), "took {took:?}");

    // Load: about rate × duration requests, most of them answered.
    let requests = r["totals"]["requests"].as_u64().expect("requests");
    assert!(
        (1300..=1500).contains(&requests),
        "{requests} requests\n{context}"
    );
    let ok = r["totals"]["ok"].as_u64().expect("ok");
    assert!(
        ok * 100 >= requests * 90,
        "{ok} of {requests} ok\n{context}"
    );
    assert!(r["by_city"].as_array().expect("cities").len() >= 8);

    // RPO: sync writes were acknowledged and none is lost; every region converged.
    assert!(
        r["rpo"]["acknowledged_sync"].as_u64().expect("sync") > 50,
        "{}",
        r["rpo"]
    );
    assert_eq!(
        r["rpo"]["sync_lost"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r["rpo"]
    );
    assert_eq!(r["rpo"]["converged"], Value::Bool(true), "{}", r["rpo"]);

    // Faults: the kill was detected by every edge and recovered within the bound.
    let faults = r["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 4, "{faults:?}");
    let kill = &faults[0];
    assert_eq!(kill["kind"], "kill");
    let detection = kill["detection_s"].as_f64().expect("kill detected");
    assert!(detection > 0.0 && detection < 5.0, "{kill}");
    let rto = kill["rto_s"].as_f64().expect("kill recovered");
    assert!(rto <= 10.0, "{kill}");
    let heal = &faults[3];
    assert!(heal["convergence_s"].as_f64().is_some(), "{heal}");

    // Residency: canaries were written, searched in dirs and on links, never found outside.
    let res = &r["residency"];
    assert!(res["canaries"].as_u64().expect("canaries") > 20, "{res}");
    assert_eq!(res["findings"].as_array().map(Vec::len), Some(0), "{res}");
    let searched: Vec<&str> = res["searched"]
        .as_array()
        .expect("searched")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        searched.iter().any(|p| p.starts_with("link ")),
        "{searched:?}"
    );
    assert!(searched.iter().any(|p| p.contains("data")), "{searched:?}");

    // Lag was measured on every directed pair; egress was counted.
    assert_eq!(r["lag"].as_array().map(Vec::len), Some(6), "{}", r["lag"]);
    assert!(r["egress"]["total_bytes"].as_u64().expect("bytes") > 100_000);

    // Nothing of the world is left running.
    let left = world_processes(&report_dir.join("world"));
    assert!(left.is_empty(), "still running: {left:?}");

    // The other renderings exist.
    let html = std::fs::read_to_string(report_dir.join("report.html")).expect("report.html");
    assert!(html.contains("chart-latency") && html.contains("chart-map"));
    assert!(stdout.contains("PASS"), "{stdout}");
}

/// The lost-disk scenario: eu-west-1 restarted on an empty data directory joins its peers;
/// no sync write is lost, and the async writes the run reports lost are what only that region
/// held when it was killed: profiles pinned to its one-region zone, and writes acknowledged
/// there in the last second before the kill (async: possibly not shipped yet).
#[test]
fn a_region_restarted_on_an_empty_disk_loses_only_what_it_alone_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_dir = dir.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(workspace_root())
        .args([
            "lab",
            "run",
            "examples/lab/lost-disk.toml",
            "--quiet",
            "--report",
        ])
        .arg(&report_dir)
        .output()
        .expect("run meridian lab run");
    let context = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(report_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json ({e})\n{context}"));
    let r: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert!(
        out.status.success(),
        "expectations: {}\n{context}",
        r["expectations"]
    );
    let kinds: Vec<&str> = r["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["kill", "restart-empty"], "{context}");
    assert_eq!(r["rpo"]["sync_lost"].as_array().map(Vec::len), Some(0));
    let lost = r["rpo"]["async_lost"].as_array().expect("async_lost");
    assert!(
        !lost.is_empty(),
        "the profiles only eu-west-1 held are gone\n{context}"
    );
    for w in lost {
        assert_eq!(w["acked_by"], "eu-west-1", "{w}");
        // The kill is at 8 s: what was acknowledged after the restart is kept.
        let at = w["acked_at_s"].as_f64().expect("acked_at_s");
        assert!(at < 8.0, "{w}");
        assert!(
            w["keyspace"] == "profiles" || at > 7.0,
            "{w}: only pinned profiles, or writes not shipped before the kill, may be lost"
        );
    }
}

#[test]
fn a_bad_scenario_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"x\"\nduration = \"10s\"\nrate = 10\nregions = [\"us-east-1\", \"eu-west-1\"]\n\
         [[timeline]]\nat = \"2s\"\naction = \"restart eu-west-1\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["lab", "run"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not killed before"), "{stderr}");
}

#[test]
fn ctrl_c_stops_every_process_of_the_world() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_dir = dir.path().join("report");
    let mut run = Run(Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(workspace_root())
        .args(["demo", "--duration", "30s", "--quiet", "--report"])
        .arg(&report_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start meridian demo"));
    let world = report_dir.join("world");
    // Generous: a loaded CI machine builds nothing here but may start nine processes slowly.
    let deadline = Instant::now() + Duration::from_secs(90);
    // The world is up once its nine children run (node, app and edge per region).
    while world_processes(&world).len() < 9 {
        assert!(Instant::now() < deadline, "the world did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = run.interrupt(
        Duration::from_secs(15),
        "meridian demo did not stop on SIGINT",
    );
    let mut stderr = String::new();
    if let Some(mut e) = run.0.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(exit.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Children die with their parent's world: give the kernel a moment to reap them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = world_processes(&world);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after Ctrl-C: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
