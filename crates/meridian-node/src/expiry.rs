//! TTL expiry. Reads never serve an expired record (they compare its HLC expiry with the
//! node's clock); this sweeper only reclaims the space, walking the expiry index in time order.

use std::time::Duration;

use meridian_core::record::Record;
use meridian_store::Table;

use crate::keys::{self, ExpiryKind};
use crate::metrics;
use crate::state::{Change, Node};

/// How many index entries one sweep transaction handles at most.
pub const SWEEP_BATCH: usize = 512;

/// Sweeps expired records and idempotency outcomes every `every`, until the task is dropped.
pub async fn run(node: Node, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
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
    let due: Vec<Vec<u8>> = node
        .store()
        .scan(Table::Meta, keys::EXPIRY_PREFIX, None, SWEEP_BATCH)?
        .into_iter()
        .map(|(k, _)| k)
        .take_while(|k| keys::parse_expiry_key(k).is_some_and(|(at, _, _)| at <= now))
        .collect();
    let handled = due.len();
    if handled == 0 {
        return Ok(0);
    }
    let region = node.region().to_string();
    let expired = node
        .store()
        .transact(move |txn| -> Result<Vec<Change>, meridian_store::Error> {
            let mut changes = Vec::new();
            for k in due {
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
                            txn.delete(Table::Data, table_key);
                            let mut parts = table_key.splitn(2, |b| *b == 0);
                            let ks = String::from_utf8_lossy(parts.next().unwrap_or_default());
                            let key = String::from_utf8_lossy(parts.next().unwrap_or_default());
                            changes.push(Change {
                                keyspace: ks.into_owned(),
                                key: key.into_owned(),
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
        })
        .await??;
    for c in expired {
        metrics::expired(&c.keyspace, 1);
        node.publish_change(c);
    }
    Ok(handled)
}
