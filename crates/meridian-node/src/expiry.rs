//! TTL expiry. Reads never serve an expired record (they compare its HLC expiry with the
//! node's clock); this sweeper only reclaims the space, walking the expiry index in time order.
//!
//! It removes expired records at once only where they never leave this region (a `local`
//! keyspace, or a topology of one region). A replicated expired register is handed to the
//! tombstone rule of replicated garbage collection (removing it early would let a late write it
//! superseded come back here alone). A replicated expired record of another type is indexed for
//! its reset (`crate::repl::gc`): it still holds its values, which a write after the expiry
//! resets, so it is emptied by a replicated write before it is collected.

use std::time::Duration;

use meridian_core::hlc::Timestamp;
use meridian_core::record::Record;
use meridian_store::Table;

use crate::keys::{self, ExpiryKind};
use crate::metrics;
use crate::state::{Change, Node};

/// Indexes a record's expiry `at` for the sweep, in the transaction that writes the record;
/// `seq` is the op that wrote the record's version (replicated garbage collection waits for it).
pub(crate) fn index(txn: &mut meridian_store::Txn<'_>, data_key: &[u8], at: Timestamp, seq: u64) {
    txn.put(
        Table::Meta,
        &keys::expiry_key(at, ExpiryKind::Data, data_key),
        &seq.to_be_bytes(),
    );
}

/// How many index entries one sweep transaction handles at most.
pub const SWEEP_BATCH: usize = 512;

/// Sweeps expired records and idempotency outcomes every `every`, until the task is dropped.
pub async fn run(node: Node, every: Duration) {
    node.joined().await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // As for garbage collection: a failed store is reported once, not by each sweep.
        if node.store().failure().is_some() {
            continue;
        }
        loop {
            match sweep_once(&node).await {
                Ok(n) if n == SWEEP_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed; will retry");
                    break;
                }
            }
        }
    }
}

/// One pass over at most [`SWEEP_BATCH`] due index entries; returns how many it handled.
pub async fn sweep_once(node: &Node) -> Result<usize, meridian_store::Error> {
    let now = node.now();
    let due: Vec<(Vec<u8>, Vec<u8>)> = node
        .store()
        .scan(Table::Meta, keys::EXPIRY_PREFIX, None, SWEEP_BATCH)?
        .into_iter()
        .take_while(|(k, _)| keys::parse_expiry_key(k).is_some_and(|(at, _, _)| at <= now))
        .collect();
    let handled = due.len();
    if handled == 0 {
        return Ok(0);
    }
    let region = node.region().to_string();
    let node_for_txn = node.clone();
    let expired = crate::repl::digest::transact(
        node,
        move |txn, digests| -> Result<Vec<Change>, meridian_store::Error> {
            let mut changes = Vec::new();
            for (k, index_value) in due {
                txn.delete(Table::Meta, &k);
                let Some((at, kind, table_key)) = keys::parse_expiry_key(&k) else {
                    continue;
                };
                match kind {
                    ExpiryKind::Data => {
                        let Some(bytes) = txn.get(Table::Data, table_key)? else {
                            continue;
                        };
                        // Only if the record still carries this expiry: a later write may have
                        // moved it (and indexed the new one).
                        let Ok(rec) = Record::decode(&bytes) else {
                            continue;
                        };
                        if rec.expires == Some(at) {
                            if reclaimable(&node_for_txn, table_key) {
                                digests.delete(txn, table_key, &bytes);
                            } else if let Some(seq) = keys::decode_u64(&index_value) {
                                // Replicated: collected by the tombstone rule once no write it
                                // superseded can still arrive anywhere.
                                crate::repl::gc::index_expired(txn, table_key, &rec, seq);
                            }
                            let (ks, key) = keys::split_data_key(table_key).unwrap_or_default();
                            changes.push(Change {
                                keyspace: ks.to_string(),
                                key: key.to_string(),
                                op: "expire",
                                etag: None,
                                live: false,
                                region: region.clone(),
                            });
                        }
                    }
                    ExpiryKind::Idempotency => txn.delete(Table::Idempotency, table_key),
                }
            }
            Ok(changes)
        },
    )
    .await??;
    for c in expired {
        metrics::expired(&c.keyspace, 1);
        node.publish_change(c);
    }
    Ok(handled)
}

/// Whether an expired record at `data_key` may be removed: it never leaves this region.
fn reclaimable(node: &Node, data_key: &[u8]) -> bool {
    if node.topology().regions.len() == 1 {
        return true;
    }
    let Some((ks, _)) = keys::split_data_key(data_key) else {
        return false;
    };
    node.topology()
        .keyspace(ks)
        .is_some_and(|k| k.replication == meridian_core::config::Replication::Local)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use meridian_store::Table;

    use crate::input::WriteHeaders;
    use crate::keys;
    use crate::testing::{node, put};
    use crate::write::write;

    const TOPOLOGY: &str = "[cluster]\nname = \"t\"\n\n[[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\n\n[[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\n\n[[keyspace]]\nname = \"rep\"\ntype = \"register\"\n\n[[keyspace]]\nname = \"loc\"\ntype = \"register\"\nreplication = \"local\"\n";

    /// Expired records are swept where they never leave the region; where they replicate they
    /// stay (invisible) until the tombstone rule collects them. Both announce the expiry.
    #[tokio::test]
    async fn sweeps_only_what_never_leaves_the_region() {
        let now = Arc::new(AtomicU64::new(1_700_000_000_000));
        let node = node(TOPOLOGY, "a", &now);
        let mut feed = node.subscribe();
        for ks in ["rep", "loc"] {
            let headers = WriteHeaders {
                ttl: Some(std::time::Duration::from_secs(1)),
                ..WriteHeaders::default()
            };
            let m = put(&node, ks, "k", headers);
            write(&node, m).await.expect("write");
        }
        assert_eq!(
            super::sweep_once(&node).await.expect("sweep"),
            0,
            "nothing due yet"
        );
        now.fetch_add(1_500, Ordering::SeqCst);
        assert_eq!(super::sweep_once(&node).await.expect("sweep"), 2);
        let get = |ks: &str| {
            node.store()
                .get(Table::Data, &keys::data_key(ks, "k"))
                .expect("get")
        };
        assert!(get("loc").is_none(), "a local expired record is reclaimed");
        assert!(get("rep").is_some(), "a replicated expired record is kept");
        let mut expired = Vec::new();
        while let Ok(c) = feed.try_recv() {
            if c.op == "expire" {
                expired.push(c.keyspace);
            }
        }
        expired.sort();
        assert_eq!(expired, ["loc", "rep"]);
        assert_eq!(
            super::sweep_once(&node).await.expect("sweep"),
            0,
            "the index entries are gone"
        );

        // The replicated one goes by the tombstone rule: nothing while the peer is unheard of,
        // then two passes once the peer has applied everything.
        let gc = crate::repl::gc::collect;
        assert_eq!(gc(&node).await.expect("gc").tombstones, 0);
        let everything = meridian_core::version::VersionVector::parse_token("a:2").expect("vv");
        node.peer_heads("b", None, &everything);
        assert_eq!(
            gc(&node).await.expect("gc").tombstones,
            0,
            "phase one only notes"
        );
        assert_eq!(
            gc(&node).await.expect("gc").tombstones,
            1,
            "phase two collects"
        );
        assert!(
            get("rep").is_none(),
            "the replicated expired record is reclaimed"
        );
    }
}
