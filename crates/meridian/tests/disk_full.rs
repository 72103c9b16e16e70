//! A region node whose disk fills up, as a real process on a real (small tmpfs) filesystem:
//! the write that no longer fits is refused with 503 and not acknowledged, the store stops
//! writing (fail-stop) and both health calls say so, reads go on; restarted after space is
//! freed, every acknowledged write is there, whole, and the node takes writes again.
//!
//! The filesystem is mounted in a mount namespace of the node's own (`unshare -rm`, user
//! namespaces or root), so the test needs no privileges and leaves no mount behind.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOPOLOGY: &str = r#"
[cluster]
name = "disk-full"

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:17801"
app = ["http://127.0.0.1:18801"]

[[keyspace]]
name = "reg"
type = "register"
"#;

/// Mounts a 64 MiB tmpfs on `$1`, fills 40 MiB of it, runs a node on `$1/data` until it is
/// killed (its pid in `$5`), frees the 40 MiB and runs the node again on the same data.
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o size=64m meridian-disk-full "$1"
head -c 40M /dev/zero > "$1/filler"
"$2" region --config "$3" --region us-east-1 --data "$1/data" --listen "$4" &
echo $! > "$5"
wait $! || true
rm "$1/filler"
exec "$2" region --config "$3" --region us-east-1 --data "$1/data" --listen "$4"
"#;

/// The first node (a child of the script, not the script itself), killed when the test ends
/// before it did so: the script wrote its pid to this file, which the test removes once it has
/// killed the node, so a reused pid is never killed.
struct FirstNode(PathBuf);

impl Drop for FirstNode {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

/// The last lines the node logged, for failure messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn status_of(client: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

async fn wait_ready(client: &reqwest::Client, base: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some((200, _)) = status_of(client, &format!("{base}/health/ready")).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node at {base} not ready within 30 s:\n{}", log_tail(log));
}

/// A 30 KB value that names its key, so a value under the wrong key or a torn one shows.
fn value_of(key: &str) -> String {
    let mut v = format!("{key}:");
    while v.len() < 30_000 {
        v.push_str(key);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_writes_and_loses_no_acknowledged_one() {
    let probe = Command::new("unshare").args(["-rm", "true"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test mounts a small tmpfs in its own mount namespace: it needs `unshare` \
         (util-linux) and user namespaces, or root"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    std::fs::write(&config, TOPOLOGY).expect("write config");
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).expect("mount point");
    let pid_file = dir.path().join("first.pid");
    let log = dir.path().join("node.log");
    let addr = format!("127.0.0.1:{}", support::dns::free_port());
    let base = format!("http://{addr}");
    let child = Command::new("unshare")
        .args(["-rm", "sh", "-c", SCRIPT, "sh"])
        .arg(&mount)
        .arg(env!("CARGO_BIN_EXE_meridian"))
        .arg(&config)
        .arg(&addr)
        .arg(&pid_file)
        .env("MERIDIAN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn unshare");
    // Killed when the test ends, passed or not: the script (the second node, once it
    // `exec`s) and the first node.
    let _script = support::dns::Kill(child);
    let _first = FirstNode(pid_file.clone());
    let client = reqwest::Client::new();
    wait_ready(&client, &base, &log).await;

    // Write until the disk is full: 24 MiB are free, so well before 3,000 writes of 30 KB.
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..3_000 {
        let key = format!("k{i}");
        let r = client
            .put(format!("{base}/v1/kv/reg/{key}"))
            .body(value_of(&key))
            .send()
            .await
            .expect("the node answers");
        match r.status().as_u16() {
            201 => acked.push(key),
            503 => {
                let body: Value = r.json().await.expect("a JSON error");
                refused = Some((key, body));
                break;
            }
            other => panic!("PUT {key}: unexpected {other}:\n{}", log_tail(&log)),
        }
    }
    let (refused_key, body) = refused.unwrap_or_else(|| {
        panic!(
            "3,000 writes of 30 KB fitted on 24 MiB:\n{}",
            log_tail(&log)
        )
    });
    assert!(acked.len() > 50, "only {} writes fitted", acked.len());
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");

    // Fail-stop: health says so, even a tiny write is refused, reads go on.
    for path in ["/health/ready", "/health/live"] {
        let (status, body) = status_of(&client, &format!("{base}{path}"))
            .await
            .expect("health answers");
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error"]["code"], "store_failed", "{path}: {body}");
        let hint = body["error"]["hint"].as_str().unwrap_or_default();
        assert!(hint.contains("restart"), "{path}: {body}");
    }
    let r = client
        .put(format!("{base}/v1/kv/reg/tiny"))
        .body("x")
        .send()
        .await
        .expect("the node answers");
    assert_eq!(r.status(), 503, "a write after the failure is refused");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.lines().any(|l| l == "meridian_store_failed 1"),
        "{metrics}"
    );
    let last = acked.last().expect("writes were acknowledged");
    let r = client
        .get(format!("{base}/v1/kv/reg/{last}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "reads are served after the failure");
    assert_eq!(r.text().await.expect("body"), value_of(last));

    // Kill the node the hard way; the script frees space and starts it again.
    let first = std::fs::read_to_string(&pid_file).expect("the first node's pid");
    let killed = Command::new("kill")
        .args(["-KILL", first.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // Its pid may be another process's soon: the guard must not kill it again.
    std::fs::remove_file(&pid_file).expect("forget the first node's pid");
    // The old process may still hold the port for a moment: wait for the new one's readiness.
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_ready(&client, &base, &log).await;

    for key in &acked {
        let r = client
            .get(format!("{base}/v1/kv/reg/{key}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(
            r.status(),
            200,
            "acknowledged {key} lost:\n{}",
            log_tail(&log)
        );
        assert_eq!(r.text().await.expect("body"), value_of(key), "{key}");
    }
    // The refused write's outcome was unknown; if it survived, it is whole.
    let r = client
        .get(format!("{base}/v1/kv/reg/{refused_key}"))
        .send()
        .await
        .expect("GET");
    if r.status() == 200 {
        assert_eq!(r.text().await.expect("body"), value_of(&refused_key));
    } else {
        assert_eq!(r.status(), 404);
    }
    let r = client
        .put(format!("{base}/v1/kv/reg/after"))
        .body("back")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "writes work after the restart");
    let (status, _) = status_of(&client, &format!("{base}/health/live"))
        .await
        .expect("live");
    assert_eq!(status, 200);
}
