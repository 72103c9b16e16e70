//! What the unit tests share: in-memory nodes driven by a clock the test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meridian_store::{Store, StoreOptions};

use crate::clock::Clock;
use crate::input::WriteHeaders;
use crate::write::Mutation;
use crate::{Node, NodeConfig};

/// Regions `a` and `b` and one replicated register keyspace, `rep`.
pub(crate) const TWO_REGIONS: &str = "[cluster]\nname = \"t\"\n\n[[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\n\n[[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\n\n[[keyspace]]\nname = \"rep\"\ntype = \"register\"\n";

/// A wall clock that reads what the test stored.
pub(crate) struct FakeClock(pub(crate) Arc<AtomicU64>);

impl Clock for FakeClock {
    fn wall_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A node of `region` in `topology` (TOML), with an in-memory store and its wall clock at `clock`.
pub(crate) fn node(topology: &str, region: &str, clock: &Arc<AtomicU64>) -> Node {
    let t = Arc::new(meridian_core::config::parse("t.toml", topology).expect("topology"));
    Node::new(
        t,
        region,
        Store::in_memory(StoreOptions::default()),
        Arc::new(FakeClock(clock.clone())),
        NodeConfig::default(),
    )
    .expect("node")
}

/// A PUT of `v` (text/plain) to `key` of keyspace `ks` on `node`.
pub(crate) fn put(node: &Node, ks: &str, key: &str, headers: WriteHeaders) -> Mutation {
    let op = meridian_core::op::Op::Put {
        value: bytes::Bytes::from_static(b"v"),
        content_type: "text/plain".into(),
        context: None,
    };
    mutation(node, ks, key, op, headers)
}

/// `op` on `key` of keyspace `ks` on `node`.
pub(crate) fn mutation(
    node: &Node,
    ks: &str,
    key: &str,
    op: meridian_core::op::Op,
    headers: WriteHeaders,
) -> Mutation {
    Mutation {
        keyspace: node.topology().keyspace(ks).expect("keyspace").clone(),
        key: key.into(),
        op,
        headers,
        fingerprint: 1,
    }
}

/// A node of region `a` of [`TWO_REGIONS`] holding keys `k000`, `k001`, ... (`n` of them) in
/// keyspace `rep`, written one after another (op-log sequence numbers 1 to `n`).
pub(crate) async fn node_with_keys(n: usize) -> Node {
    let node = node(
        TWO_REGIONS,
        "a",
        &Arc::new(AtomicU64::new(1_700_000_000_000)),
    );
    for i in 0..n {
        let key = format!("k{i:03}");
        crate::write::write(&node, put(&node, "rep", &key, WriteHeaders::default()))
            .await
            .expect("write");
    }
    node
}

/// The value of the sample of `metric` in the Prometheus exposition `text` whose labels include
/// every one of `labels` (`name="value"`; none: also a sample without labels), if there is one.
pub(crate) fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<u64> {
    let (open, bare) = (format!("{metric}{{"), format!("{metric} "));
    text.lines()
        .find(|l| {
            (l.starts_with(&open) && labels.iter().all(|label| l.contains(label)))
                || (labels.is_empty() && l.starts_with(&bare))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
