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

fn workspace_root() -> &'static Path {
    // invariant: this crate lives at <root>/crates/meridian
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("the workspace root")
}

#[test]
fn outage_scenario_loses_no_sync_write_and_leaks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_dir = dir.path().join("report");
    let begun = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(workspace_root())
        .args([
            "lab",
            "run",
            "examples/lab/outage.toml",
            "--quiet",
            "--report",
        ])
        .arg(&report_dir)
        .output()
        .expect("run meridian lab run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let took = begun.elapsed();
    let text = std::fs::read_to_string(report_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let r: Value = serde_json::from_str(&text).expect("report.json is JSON");
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        out.status.success(),
        "exit {:?}; expectations: {}\n{context}",
        out.status.code(),
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(workspace_root())
        .args(["demo", "--duration", "30s", "--quiet", "--report"])
        .arg(&report_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start meridian demo");
    let world = report_dir.join("world");
    // Generous: a loaded CI machine builds nothing here but may start nine processes slowly.
    let deadline = Instant::now() + Duration::from_secs(90);
    // The world is up once its nine children run (node, app and edge per region).
    while world_processes(&world).len() < 9 {
        assert!(Instant::now() < deadline, "the world did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "meridian demo did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
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
