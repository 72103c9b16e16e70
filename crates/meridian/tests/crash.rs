//! Crash safety of the real binary: concurrent clients write, the node is killed with SIGKILL
//! mid-load, restarted on the same data directory, and every acknowledged write must be there —
//! whole: no half-applied multi-field write is ever visible.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

const TOPOLOGY: &str = r#"
[cluster]
name = "crash"

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:17701"
app = ["http://127.0.0.1:18701"]

[[keyspace]]
name = "reg"
type = "register"

[[keyspace]]
name = "docs"
type = "map"

[[keyspace]]
name = "cnt"
type = "counter"
"#;

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn start(config: &Path, data: &Path, addr: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["region", "--config"])
        .arg(config)
        .args(["--region", "us-east-1", "--data"])
        .arg(data)
        .args(["--listen", addr])
        .env("MERIDIAN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meridian")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node at {base} not ready within 20 s");
}

#[derive(Default)]
struct Acks {
    registers: Vec<(String, String)>,
    maps: Vec<(String, u64)>,
    incr_acked: i64,
    incr_sent: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    std::fs::write(&config, TOPOLOGY).expect("write config");
    let data = dir.path().join("data");
    let addr = free_addr();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let mut child = start(&config, &data, &addr);
    wait_ready(&client, &base).await;

    let acks = Arc::new(Mutex::new(Acks::default()));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let client = client.clone();
        let base = base.clone();
        let acks = Arc::clone(&acks);
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded in time and count; runs on past the kill so writes are in flight then.
            while Instant::now() < stop_at + Duration::from_millis(500) && i < 100_000 {
                i += 1;
                let key = format!("k-{w}-{i}");
                let value = format!("value-{w}-{i}-{}", "x".repeat(200));
                let r = client
                    .put(format!("{base}/v1/kv/reg/{key}"))
                    .body(value.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => acks.lock().await.registers.push((key, value)),
                    Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                    Err(_) => break,
                }
                let m = format!("m-{w}-{i}");
                let r = client
                    .patch(format!("{base}/v1/kv/docs/{m}"))
                    .body(json!({"a": i, "b": i, "c": i}).to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acks.lock().await.maps.push((m, i)),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break,
                }
                acks.lock().await.incr_sent += 1;
                match client
                    .post(format!("{base}/v1/kv/cnt/total/incr"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acks.lock().await.incr_acked += 1,
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    child.kill().expect("SIGKILL the node");
    child.wait().expect("reap");
    for t in tasks {
        t.await.expect("writer task");
    }

    let acks = acks.lock().await;
    assert!(
        acks.registers.len() > 100,
        "too few writes before the kill: {}",
        acks.registers.len()
    );

    let mut child = start(&config, &data, &addr);
    wait_ready(&client, &base).await;
    let mut lost = Vec::new();
    for (key, value) in &acks.registers {
        let r = client
            .get(format!("{base}/v1/kv/reg/{key}"))
            .send()
            .await
            .expect("get");
        if r.status() != 200 || r.text().await.expect("body") != *value {
            lost.push(key.clone());
        }
    }
    for (m, i) in &acks.maps {
        let r = client
            .get(format!("{base}/v1/kv/docs/{m}"))
            .send()
            .await
            .expect("get");
        let v: Value = r.json().await.expect("json");
        if v != json!({"a": i, "b": i, "c": i}) {
            lost.push(format!("{m} = {v}"));
        }
    }
    // Unacknowledged maps may or may not be there, but never half-written.
    let page: Value = client
        .get(format!("{base}/v1/kv/docs?limit=1000&values=true"))
        .send()
        .await
        .expect("scan")
        .json()
        .await
        .expect("json");
    for item in page["items"].as_array().expect("items") {
        let v = &item["value"];
        assert!(
            v["a"] == v["b"] && v["b"] == v["c"],
            "half-written map {item}"
        );
    }
    let total: i64 = client
        .get(format!("{base}/v1/kv/cnt/total"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("number");
    child.kill().expect("stop");
    child.wait().expect("reap");
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after SIGKILL: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        total >= acks.incr_acked && total <= acks.incr_sent,
        "counter {total} outside [acked {}, sent {}]",
        acks.incr_acked,
        acks.incr_sent
    );
}
