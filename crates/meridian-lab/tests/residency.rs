//! The residency audit end to end: two region nodes in different zones replicating through
//! capturing WAN relays. The audit must see a replicated (non-pinned) value on the link, decoded
//! from the compressed frames of the chunked stream, and must not find the pinned canary
//! anywhere outside its zone.

#[path = "common/node_ready.rs"]
mod node_ready;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_lab::audit::{Canary, audit, search_bytes};
use meridian_lab::wan::{Profile, Wan};
use meridian_node::{Node, NodeConfig, clock::SystemClock};
use meridian_store::{Store, StoreOptions};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

const TOPOLOGY: &str = r#"
[cluster]
name = "audit"

[zones]
eu = ["eu-west-1"]
us = ["us-east-1"]

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:1"

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:2"

[[keyspace]]
name = "reg"
type = "register"

[[keyspace]]
name = "eu_only"
type = "register"
residency = "eu"
"#;

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(
    region: &str,
    dir: &std::path::Path,
    listener: tokio::net::TcpListener,
    peer: (&str, SocketAddr),
) -> Running {
    let topology = meridian_core::config::parse("audit.toml", TOPOLOGY).expect("topology");
    let config = NodeConfig {
        secret: Some("audit-test-secret-0123456789abcdef".into()),
        peer_urls: [(peer.0.to_string(), format!("http://{}", peer.1))].into(),
        ..NodeConfig::default()
    };
    let store = Store::open(dir, StoreOptions::default()).expect("store");
    let node = Node::new(
        Arc::new(topology),
        region,
        store,
        Arc::new(SystemClock),
        config,
    )
    .expect("node");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        meridian_node::serve(node, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    Running { stop, done }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_values_are_seen_on_the_link_and_pinned_ones_never_leave_their_zone() {
    let mut profile = Profile::default();
    profile.set(US, EU, Duration::from_millis(2));
    profile.set(EU, US, Duration::from_millis(2));
    let wan = Wan::new(profile, 7);
    wan.enable_capture(64 << 20);
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let us_listener = tokio::net::TcpListener::bind(any).await.expect("bind");
    let eu_listener = tokio::net::TcpListener::bind(any).await.expect("bind");
    let us_addr = us_listener.local_addr().expect("addr");
    let eu_addr = eu_listener.local_addr().expect("addr");
    // us-east-1 pulls from eu-west-1 through the relay us → eu, and the other way round.
    let us_to_eu = wan.relay(US, EU, any, eu_addr).await.expect("relay");
    let eu_to_us = wan.relay(EU, US, any, us_addr).await.expect("relay");
    let us_dir = tempfile::tempdir().expect("tempdir");
    let eu_dir = tempfile::tempdir().expect("tempdir");
    let us = start(US, us_dir.path(), us_listener, (EU, us_to_eu.addr())).await;
    let eu = start(EU, eu_dir.path(), eu_listener, (US, eu_to_us.addr())).await;

    let client = reqwest::Client::new();
    // New stores join their peers before they serve.
    for addr in [us_addr, eu_addr] {
        node_ready::wait_ready(&format!("http://{addr}")).await;
    }
    let pinned = "CANARY-eu-passport-5d1c9e07b2";
    // Compressible, so its frame is LZ4-compressed and the value is not on the wire as is.
    let marker = "MARKER-replicated-0a9f4e-".repeat(24);
    let put = |addr: SocketAddr, path: &str, body: String| {
        client.put(format!("http://{addr}{path}")).body(body).send()
    };
    let r = put(eu_addr, "/v1/kv/eu_only/passport", pinned.to_string())
        .await
        .expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    let r = put(eu_addr, "/v1/kv/reg/marker", marker.clone())
        .await
        .expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    // Entries apply in order per origin: once the marker is in us-east-1, the pinned write
    // before it has been processed there too.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client
            .get(format!("http://{us_addr}/v1/kv/reg/marker"))
            .send()
            .await
            .expect("get");
        if r.status().is_success() && r.text().await.expect("body").contains(&marker) {
            break;
        }
        assert!(Instant::now() < deadline, "the marker never reached {US}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [us, eu] {
        let _ = n.stop.send(());
        n.done.await.expect("server task");
    }
    drop((us_to_eu, eu_to_us));

    let captures = wan.captures();
    let canaries = [
        Canary {
            zone: "eu".into(),
            key: "eu_only/passport".into(),
            needle: pinned.as_bytes().to_vec(),
            allowed: vec![EU.into()],
        },
        // Not pinned: expected everywhere; declared as if pinned to prove the search sees it.
        Canary {
            zone: "probe".into(),
            key: "reg/marker".into(),
            needle: marker.as_bytes().to_vec(),
            allowed: vec![EU.into()],
        },
    ];
    let dirs: Vec<(String, PathBuf)> = vec![
        (US.into(), us_dir.path().to_path_buf()),
        (EU.into(), eu_dir.path().to_path_buf()),
    ];
    let residency = audit(&canaries, &dirs, &captures).expect("audit");
    eprintln!("{residency:#?}");
    let link = format!("link {EU}→{US}");
    assert!(
        residency
            .findings
            .iter()
            .any(|f| f.key == "reg/marker" && f.place == link),
        "the replicated marker must be found on {link}"
    );
    assert!(
        !captures
            .iter()
            .any(|c| !search_bytes(&c.bytes, &[marker.as_bytes()]).is_empty()),
        "the marker is on the wire only compressed: the decoding found it"
    );
    assert!(
        residency.findings.iter().all(|f| f.zone != "eu"),
        "the pinned canary left its zone: {:?}",
        residency.findings
    );
    assert!(residency.searched.contains(&link));
    assert!(residency.bytes_searched > 0);
}
