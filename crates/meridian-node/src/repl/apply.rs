//! The receiving side: applies a batch of entries in one store transaction — merge each delta,
//! keep the entry in this node's op log under its origin (so it can be forwarded), advance the
//! applied version vector — and only then acknowledges (via the `Heads` this node sends).

use std::collections::BTreeMap;

use meridian_core::KeyspaceType;
use meridian_core::record::Record;
use meridian_core::version::{Dot, VersionVector};
use meridian_core::wire::{Entry, LogBody, OpPayload, encode_log_body};
use meridian_store::{Table, Txn};

use super::digest::Changes;
use crate::state::{Change, Conflict, Node};
use crate::write::{StoredOutcome, put_idempotency};
use crate::{keys, metrics};

/// What a batch did once durable.
pub(crate) struct Applied {
    pub(crate) vv: VersionVector,
    pub(crate) changes: Vec<Change>,
    pub(crate) conflicts: Vec<Conflict>,
    /// The origin and HLC time (ms) of every op applied, in the order applied (so one origin's
    /// ops mostly run together), for the replication delay metric.
    pub(crate) written: Vec<(String, u64)>,
    /// An origin whose next entry was not the one expected: the stream must restart from the
    /// applied version vector.
    pub(crate) gap: Option<String>,
    /// An entry that could not be applied; those before it were (and are published).
    pub(crate) error: Option<String>,
}

/// Applies `entries` durably and publishes what was applied; the caller publishes the changes.
/// An entry that cannot be applied ends the batch with an error, after the entries before it
/// (which are durable) have been published.
pub(crate) async fn apply_batch(node: &Node, entries: Vec<Entry>) -> Result<Applied, String> {
    let n = node.clone();
    let applied = super::digest::transact(node, move |txn, digests| {
        apply_in_txn(&n, txn, digests, entries)
    })
    .await
    .map_err(|e| e.to_string())?;
    node.applied_remote(&applied.vv);
    let now = node.wall_ms();
    for run in applied.written.chunk_by(|a, b| a.0 == b.0) {
        metrics::repl_delay(&run[0].0, run.iter().map(|(_, ms)| *ms), now);
    }
    for c in &applied.conflicts {
        metrics::conflict(&c.keyspace);
        node.conflict(c.clone());
    }
    match applied.error.clone() {
        Some(e) => Err(e),
        None => Ok(applied),
    }
}

fn apply_in_txn(
    node: &Node,
    txn: &mut Txn<'_>,
    digests: &mut Changes,
    entries: Vec<Entry>,
) -> Applied {
    let mut at: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Applied {
        vv: VersionVector::default(),
        changes: Vec::new(),
        conflicts: Vec::new(),
        written: Vec::new(),
        gap: None,
        error: None,
    };
    for e in entries {
        if e.origin == node.region() {
            continue;
        }
        let cur = match at.get(&e.origin) {
            Some(c) => *c,
            None => match read_u64(txn, &keys::vv_key(&e.origin)) {
                Ok(c) => {
                    // What is durable is applied: this also heals an in-memory view that fell
                    // behind.
                    if c > 0 {
                        out.vv.add(&Dot {
                            origin: e.origin.clone(),
                            counter: c,
                        });
                    }
                    at.insert(e.origin.clone(), c);
                    c
                }
                Err(err) => {
                    out.error = Some(err);
                    break;
                }
            },
        };
        if e.seq <= cur {
            continue;
        }
        if e.seq != cur + 1 {
            out.gap = Some(e.origin.clone());
            break;
        }
        let stored_body = match e.body {
            LogBody::Op(p) => match apply_op(node, txn, digests, &e.origin, e.seq, &p, &mut out) {
                Ok(true) => LogBody::Op(p),
                Ok(false) => LogBody::Skip {
                    allowed: Vec::new(),
                },
                Err(err) => {
                    out.error = Some(err);
                    break;
                }
            },
            skip @ LogBody::Skip { .. } => skip,
        };
        txn.put(
            Table::OpLog,
            &keys::oplog_key(&e.origin, e.seq),
            &encode_log_body(&stored_body),
        );
        txn.put(Table::Meta, &keys::vv_key(&e.origin), &e.seq.to_be_bytes());
        at.insert(e.origin.clone(), e.seq);
        out.vv.add(&Dot {
            origin: e.origin,
            counter: e.seq,
        });
        metrics::repl_applied();
    }
    // A write made here after a restart must still be stamped after every write applied here
    // (a region that applied a delete and then collected it must not write the key under an
    // older version): the HLC restarts from what is stored, so store what it has seen.
    if !out.changes.is_empty() {
        crate::write::store_hlc(txn, node.with_hlc(|hlc, _| hlc.last()));
    }
    out
}

/// Merges one write; `false` when this region may not hold it (it is then kept as a skip —
/// defence in depth, the sender should already have filtered it).
fn apply_op(
    node: &Node,
    txn: &mut Txn<'_>,
    digests: &mut Changes,
    origin: &str,
    seq: u64,
    p: &OpPayload,
    out: &mut Applied,
) -> Result<bool, String> {
    let delta = Record::decode(&p.delta).map_err(|e| format!("entry of {origin}: {e}"))?;
    let delta_version = delta.version.clone();
    if let Some(ks) = node.topology().keyspace(&p.keyspace) {
        let home = delta.home.as_deref().unwrap_or(origin);
        if let Some(allowed) = node.topology().regions_for_key(ks, home)
            && !allowed.contains(&node.region())
        {
            return Ok(false);
        }
    }
    let observed = node.with_hlc(|hlc, wall| hlc.observe(delta.version.ts, wall));
    if observed.is_err() {
        // Counted, and still passed: a write made here after this one must be stamped after
        // it, or a region that applied (and then collected) a delete from a clock further
        // ahead than the allowed offset could write the key again under an older version.
        metrics::clock_skew(origin);
        node.with_hlc(|hlc, _| hlc.restore(delta.version.ts));
    }
    let dk = keys::data_key(&p.keyspace, &p.key);
    let stored = txn.get(Table::Data, &dk).map_err(|e| e.to_string())?;
    let current = match &stored {
        Some(b) => Some(Record::decode(b).map_err(|e| format!("stored `{}`: {e}", p.key))?),
        None => None,
    };
    let now = node.now();
    if let Some(c) = current.as_ref().filter(|c| c.is_live(now))
        && let Some(conflict) = concurrent_overwrite(c, &delta, p, now)
    {
        out.conflicts.push(conflict);
    }
    let held_values = current.as_ref().is_some_and(|c| !c.value.is_empty());
    let new = match current {
        Some(mut c) => {
            c.merge(&delta)
                .map_err(|e| merge_failed(origin, seq, p, &e))?;
            c
        }
        None => delta,
    };
    digests.put(txn, &dk, stored.as_deref(), &new.encode());
    // A record left with nothing is indexed for collection by the op that gave it its version,
    // or by one that emptied it under a newer version: an older change arriving after a delete
    // (or reset) that had seen it — the delete removed only what its region still held.
    if new.version == delta_version || held_values {
        super::gc::index_tombstone(txn, &dk, &new, origin, seq);
    }
    // An expiry the delta did not set is already indexed with the op that set it.
    if let Some(exp) = new.expires.filter(|_| new.version == delta_version) {
        crate::expiry::index(txn, &dk, exp, seq);
    }
    if let Some((idem, bytes)) = &p.idempotency
        && let Ok(stored) = StoredOutcome::decode(bytes)
    {
        put_idempotency(txn, &keys::idempotency_key(&p.keyspace, idem), &stored);
    }
    // A reset of an expired record is stamped at the expiry, long before it is made: not a
    // delay.
    if !delta_version.origin.is_empty() {
        out.written
            .push((origin.to_string(), delta_version.ts.millis()));
    }
    out.changes.push(Change {
        keyspace: p.keyspace.clone(),
        key: p.key.clone(),
        op: "replicate",
        etag: Some(new.version.etag()),
        live: new.is_live(now),
        region: origin.to_string(),
    });
    Ok(true)
}

/// Why entry `seq` of `origin` could not be merged: a type mismatch means the two regions'
/// topologies give the keyspace different types, and replication from `origin` cannot pass
/// this entry until they agree.
fn merge_failed(origin: &str, seq: u64, p: &OpPayload, e: &meridian_core::Error) -> String {
    let at = format!("entry {seq} of {origin} for `{}/{}`", p.keyspace, p.key);
    match e {
        meridian_core::Error::TypeMismatch { .. } => format!(
            "{at}: {e}; {origin} and this region define keyspace `{}` with different types \
             (see `topology` of this peer in /v1/admin/status): replication from {origin} \
             stops at this entry until every region runs the same topology file",
            p.keyspace
        ),
        _ => format!("{at}: {e}"),
    }
}

/// A last-writer-wins overwrite between writes that did not see each other: the incoming write
/// replaced `prev` at its origin, but this region holds a different, newer-than-`prev` version
/// the origin had not seen. Only registers overwrite; the other types merge without loss.
fn concurrent_overwrite(
    local: &Record,
    delta: &Record,
    p: &OpPayload,
    now: meridian_core::hlc::Timestamp,
) -> Option<Conflict> {
    if local.kind() != KeyspaceType::Register || local.version == delta.version {
        return None;
    }
    let saw_local = p.prev.as_ref().is_some_and(|prev| *prev >= local.version);
    if saw_local {
        return None;
    }
    let (winner, loser) = if delta.version > local.version {
        (&delta.version, &local.version)
    } else {
        (&local.version, &delta.version)
    };
    Some(Conflict {
        keyspace: p.keyspace.clone(),
        key: p.key.clone(),
        winner: winner.etag(),
        loser: loser.etag(),
        detected_ms: now.millis(),
    })
}

fn read_u64(txn: &Txn<'_>, key: &[u8]) -> Result<u64, String> {
    Ok(txn
        .get(Table::Meta, key)
        .map_err(|e| e.to_string())?
        .as_deref()
        .and_then(keys::decode_u64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use meridian_core::version::VersionVector;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    use crate::input::WriteHeaders;
    use crate::testing::{TWO_REGIONS as TOPOLOGY, node, put, sample};
    use crate::write::write;

    /// Node `b` (its clock, at T) after applying `a`'s write (returned), made with `a`'s clock
    /// `ahead_ms` ahead of `b`'s.
    async fn applied_from_ahead(
        ahead_ms: u64,
    ) -> (crate::Node, Arc<AtomicU64>, crate::write::Written) {
        let t0 = 1_700_000_000_000;
        let (at_a, at_b) = (
            Arc::new(AtomicU64::new(t0 + ahead_ms)),
            Arc::new(AtomicU64::new(t0)),
        );
        let (a, b) = (node(TOPOLOGY, "a", &at_a), node(TOPOLOGY, "b", &at_b));
        let theirs = write(&a, put(&a, "rep", "k", WriteHeaders::default()))
            .await
            .expect("write");
        crate::repl::exchange(&a, &b, 10).await.expect("exchange");
        (b, at_b, theirs)
    }

    /// Asserts that write `ours` is stamped after write `theirs`.
    fn assert_stamped_after(ours: &crate::write::Written, theirs: &crate::write::Written) {
        let version = |w: &crate::write::Written| {
            meridian_core::version::Version::parse_etag(w.outcome.etag.as_deref().expect("etag"))
                .expect("etag")
        };
        assert!(
            version(ours).ts > version(theirs).ts,
            "{:?} must come after {:?}",
            version(ours),
            version(theirs)
        );
    }

    /// A node stamps its writes after every write it applied, also once restarted: the HLC it
    /// observed while applying is stored with the batch. `a`'s clock runs 500 ms ahead of
    /// `b`'s; after `b` applies `a`'s write and restarts, its next write is stamped later.
    #[tokio::test]
    async fn a_restarted_node_stamps_its_writes_after_what_it_applied() {
        let (b, at_b, theirs) = applied_from_ahead(500).await;
        let restarted = crate::Node::new(
            Arc::new(b.topology().clone()),
            "b",
            b.store().clone(),
            Arc::new(crate::testing::FakeClock(at_b.clone())),
            crate::NodeConfig::default(),
        )
        .expect("restart");
        drop(b);
        let ours = write(
            &restarted,
            put(&restarted, "rep", "other", WriteHeaders::default()),
        )
        .await
        .expect("write");
        assert_stamped_after(&ours, &theirs);
    }

    /// A write applied from a clock further ahead than the allowed offset still orders what
    /// this node writes next: `a` runs 1.5 s ahead of `b` (the offset allows 1 s).
    #[tokio::test]
    async fn a_write_from_a_clock_too_far_ahead_still_orders_the_next_one() {
        let (b, _, theirs) = applied_from_ahead(1_500).await;
        let ours = write(&b, put(&b, "rep", "other", WriteHeaders::default()))
            .await
            .expect("write");
        assert_stamped_after(&ours, &theirs);
    }

    /// The delay metric measures from the write's HLC time at its origin to the durable apply
    /// here: a write made at T and applied at T + 120 ms lands in the (110, 120] ms bucket.
    #[tokio::test]
    async fn applying_records_the_delay_since_the_write_at_its_origin() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(super::metrics::REPL_DELAY.into()),
                &meridian_telemetry::REPL_DELAY_BUCKETS,
            )
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);

        let t0 = 1_700_000_000_000;
        let (at_a, at_b) = (Arc::new(AtomicU64::new(t0)), Arc::new(AtomicU64::new(t0)));
        let (a, b) = (node(TOPOLOGY, "a", &at_a), node(TOPOLOGY, "b", &at_b));
        write(&a, put(&a, "rep", "k", WriteHeaders::default()))
            .await
            .expect("write");
        let entries =
            crate::repl::serve::collect(&a, "b", &mut VersionVector::default(), 10, |_| true)
                .expect("collect");
        assert_eq!(entries.len(), 1);

        at_b.store(t0 + 120, Ordering::SeqCst);
        let applied = super::apply_batch(&b, entries).await.expect("apply");
        assert_eq!(applied.written.len(), 1);
        let text = handle.render();
        let bucket = |le: &str| {
            let le = format!("le=\"{le}\"");
            sample(
                &text,
                "meridian_repl_delay_seconds_bucket",
                &["origin=\"a\"", &le],
            )
        };
        assert_eq!(
            (bucket("0.11"), bucket("0.12")),
            (Some(0), Some(1)),
            "{text}"
        );
    }
}
