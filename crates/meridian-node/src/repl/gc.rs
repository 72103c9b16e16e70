//! Garbage collection of replicated state, by the rules of `meridian_core::gc`: op-log entries
//! every region has applied, and dead records (`collectable`: deleted ones, and expired
//! registers) once no write they superseded can still be in flight anywhere. Nothing is
//! collected while any peer's applied state is unknown (a peer down since this node started,
//! however long), so a delete never comes back.
//!
//! An expired map, set, counter or mvregister still holds its values (the expiry only hides
//! them), so it is first emptied by a replicated write: once every peer's watermark is past the
//! expiry ([`super::watermark`]) — no write made before it can still arrive — the region that
//! made the record's last write issues `meridian_core::op::expiry_reset`, a delete of all of it
//! stamped at the expiry; what it leaves is a deleted record, which the tombstone rule collects.
//! Each pass first takes a new watermark of this node (when it has peers).
//!
//! A pass deletes in transactions of at most [`CHUNK`] keys, one after another, so the writer
//! interleaves them with the writes and applies queued meanwhile: collecting thousands of
//! entries never holds a commit group (and the replication delay behind it) for long.

use meridian_core::KeyspaceType;
use meridian_core::gc::{TombstoneStep, newest, stable, tombstone_step};
use meridian_core::hlc::Timestamp;
use meridian_core::record::Record;
use meridian_core::version::VersionVector;
use meridian_core::wire::OpPayload;
use meridian_store::{Table, Txn};
use serde::{Deserialize, Serialize};

use super::digest::Changes;
use crate::state::Node;
use crate::{keys, metrics};

/// Most entries one pass examines per origin's op log, and per tombstone index.
pub const PASS_LIMIT: usize = 8_192;
/// Most keys one collection transaction deletes or updates.
pub const CHUNK: usize = 256;

/// A dead record awaiting collection: `Meta` `tomb/<data key>`. It may go once every region has
/// applied op `seq` of `origin` and, after that, everything any region had applied by then.
#[derive(Serialize, Deserialize)]
struct Tombstone {
    origin: String,
    seq: u64,
    etag: String,
    noted: Option<String>,
}

/// Whether `record` is dead in a way that collecting it can never bring anything back, in any
/// region that still holds it when a later write arrives:
/// - a register, deleted or expired: a later write replaces it whole;
/// - a deleted map (no live field): fields written before the delete are gone from the record
///   already, and a later write's fields beat the delete by their HLC versions;
/// - a deleted set, mvregister or counter: their writes are numbered per origin (dots, running
///   totals), and a region writing a key that holds nothing of its own numbers them above
///   everything it ever issued on any key ([`crate::state::Node::floor`]), so a later write is
///   never one the tombstone saw deleted; a counter's increments carry their origin's base, so
///   a region that collected the reset counts only what came after it.
///
/// An expired map, set, mvregister or counter still holds its values (the expiry hides them): a
/// write to the expired record resets them, but a write to a collected key finds nothing to
/// reset, and its delta would show them again where the record was not collected yet. Those
/// are emptied first, by a replicated reset (see the module documentation).
pub(crate) fn collectable(record: &Record, now: Timestamp) -> bool {
    match record.kind() {
        KeyspaceType::Register => !record.is_live(now),
        _ => record.value.is_empty(),
    }
}

/// Indexes `record` for collection if the write that gave it its version (op `seq` of
/// `origin`) left it deleted (nothing a reader would see; every deleted record is
/// [`collectable`]). Called in the transaction that writes it.
pub(crate) fn index_tombstone(
    txn: &mut Txn<'_>,
    data_key: &[u8],
    record: &Record,
    origin: &str,
    seq: u64,
) {
    if record.value.is_empty() {
        index(txn, data_key, record, origin, seq);
    }
}

/// Indexes a record a digest repair merged, by op `seq` of `origin` (see
/// `super::digest::repair_anchor`): for collection if it is deleted, for the sweep if it
/// expires.
pub(crate) fn index_repaired(
    txn: &mut Txn<'_>,
    data_key: &[u8],
    record: &Record,
    origin: &str,
    seq: u64,
) {
    index_tombstone(txn, data_key, record, origin, seq);
    if let Some(exp) = record.expires {
        crate::expiry::index(txn, data_key, exp, seq);
    }
}

/// Notes a record a digest repair merged, deleted or expiring, whose op to index it by is not
/// known yet; [`reanchor`] indexes it once it is.
pub(crate) fn reanchor_later(txn: &mut Txn<'_>, data_key: &[u8], record: &Record) {
    if record.value.is_empty() || record.expires.is_some() {
        let key = [keys::REANCHOR_PREFIX, data_key].concat();
        txn.put(Table::Meta, &key, record.version.etag().as_bytes());
    }
}

/// Indexes the records [`reanchor_later`] noted whose op is now known (the origin's confirmed
/// watermark is past their version: that op is applied here, at or before the origin's
/// applied sequence), unless the record is already indexed under its version (applying the
/// op did it); drops the notes of records written or collected since (a later write indexes
/// itself). In transactions of at most [`CHUNK`] notes.
async fn reanchor(node: &Node) -> Result<(), String> {
    let pending = node
        .store()
        .scan(Table::Meta, keys::REANCHOR_PREFIX, None, PASS_LIMIT)
        .map_err(|e| e.to_string())?;
    for chunk in pending.chunks(CHUNK) {
        let (n, chunk) = (node.clone(), chunk.to_vec());
        node.store()
            .transact(move |txn| {
                for (note, etag) in chunk {
                    reanchor_one(&n, txn, &note, &etag)?;
                }
                Ok::<_, meridian_store::Error>(())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Resolves one note of [`reanchor`]: `note` is its key, `etag` the version it was noted at.
fn reanchor_one(
    node: &Node,
    txn: &mut Txn<'_>,
    note: &[u8],
    etag: &[u8],
) -> Result<(), meridian_store::Error> {
    let data_key = &note[keys::REANCHOR_PREFIX.len()..];
    let record = txn
        .get(Table::Data, data_key)?
        .and_then(|b| Record::decode(&b).ok())
        .filter(|r| r.version.etag().as_bytes() == etag);
    let Some(record) = record else {
        txn.delete(Table::Meta, note);
        return Ok(());
    };
    let Some((origin, seq)) = super::digest::repair_anchor(node, &record) else {
        return Ok(());
    };
    let tomb = [keys::TOMB_PREFIX, data_key].concat();
    let indexed = txn
        .get(Table::Meta, &tomb)?
        .and_then(|b| postcard::from_bytes::<Tombstone>(&b).ok())
        .is_some_and(|t| t.etag.as_bytes() == etag);
    if !indexed {
        index_repaired(txn, data_key, &record, &origin, seq);
    }
    txn.delete(Table::Meta, note);
    Ok(())
}

/// Indexes a record that has just expired, in the expiry sweep's transaction; `seq` is the op
/// that wrote its version. A register — an expiry is a delete at a known instant — goes to the
/// tombstone rule; any other type waits for its reset (see the module documentation).
pub(crate) fn index_expired(txn: &mut Txn<'_>, data_key: &[u8], record: &Record, seq: u64) {
    match record.expires {
        _ if record.kind() == KeyspaceType::Register => {
            index(txn, data_key, record, &record.version.origin, seq);
        }
        Some(at) => txn.put(Table::Meta, &keys::reset_key(at, data_key), &[]),
        None => {}
    }
}

fn index(txn: &mut Txn<'_>, data_key: &[u8], record: &Record, origin: &str, seq: u64) {
    let t = Tombstone {
        origin: origin.to_string(),
        seq,
        etag: record.version.etag(),
        noted: None,
    };
    // invariant: postcard serialization of a plain struct into a Vec cannot fail
    let bytes = postcard::to_stdvec(&t).unwrap_or_default();
    txn.put(Table::Meta, &[keys::TOMB_PREFIX, data_key].concat(), &bytes);
}

/// The highest sequence of `region`'s writes that a pending tombstone collection waits for
/// every region to apply (its noted snapshot), 0 when none does. A join of `region`'s new
/// store numbers its writes past it (see `join`), so a snapshot noted while its lost store
/// reported writes no other region received is still reached.
pub(crate) fn noted_max(node: &Node, region: &str) -> Result<u64, String> {
    let mut max = 0;
    node.store()
        .scan_each(Table::Meta, keys::TOMB_PREFIX, None, |_, v| {
            let noted = postcard::from_bytes::<Tombstone>(v)
                .ok()
                .and_then(|t| t.noted)
                .and_then(|n| VersionVector::parse_token(&n).ok());
            if let Some(snapshot) = noted {
                max = max.max(snapshot.get(region));
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    Ok(max)
}

/// Where each origin's op log starts, as far as this process knows: the sequence number after
/// the last entry a pass deleted (every entry below it is gone). A deleted entry stays in the
/// LSM tree as a tombstone until compaction drops it, so a seek from the start of an origin's
/// keys would walk over every entry collected so far, each pass; a seek from here does not.
/// Unknown after a restart: the first pass seeks from the start once.
#[derive(Debug, Default)]
pub(crate) struct OpLogStart(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl OpLogStart {
    /// The first sequence number of `origin` that may still be in the op log (0: unknown).
    fn get(&self, origin: &str) -> u64 {
        let starts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        starts.get(origin).copied().unwrap_or(0)
    }

    /// Records that every entry of `origin` below `next` is deleted.
    fn advance(&self, origin: &str, next: u64) {
        let mut starts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = starts.entry(origin.to_string()).or_default();
        *start = (*start).max(next);
    }
}

/// What one pass collected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Op-log entries deleted.
    pub oplog: usize,
    /// Tombstones (deleted records) deleted.
    pub tombstones: usize,
    /// Expired records this region emptied with a replicated reset (collected later as
    /// tombstones).
    pub expired: usize,
}

/// One collection pass, after taking a new watermark of this node (when it has peers). Does
/// nothing until every peer has reported what it applied.
pub async fn collect(node: &Node) -> Result<Collected, String> {
    if node.topology().regions.len() > 1 {
        super::watermark::advance(node)
            .await
            .map_err(|e| e.to_string())?;
    }
    reanchor(node).await?;
    // What waits, read first so it is counted also while nothing can be collected.
    let tombstones = node
        .store()
        .scan(Table::Meta, keys::TOMB_PREFIX, None, PASS_LIMIT)
        .map_err(|e| e.to_string())?;
    let expired: Vec<Vec<u8>> = node
        .store()
        .scan(Table::Meta, keys::RESET_PREFIX, None, PASS_LIMIT)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    metrics::gc_pending(tombstones.len(), expired.len());
    let acked = node.acked().borrow().clone();
    let own = node.applied().borrow().clone();
    let regions: Vec<&str> = node
        .topology()
        .regions
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let mut reports: Vec<&VersionVector> = vec![&own];
    let mut unheard = 0;
    for r in regions.iter().filter(|r| **r != node.region()) {
        match acked.get(*r) {
            Some(vv) => reports.push(vv),
            None => unheard += 1,
        }
    }
    metrics::gc_peers_unheard(unheard);
    if unheard > 0 {
        return Ok(Collected::default());
    }
    let stable = stable(reports.iter().copied(), &regions);
    let newest = newest(reports.iter().copied());

    let mut done = Collected::default();
    for origin in &regions {
        let floor = stable.get(origin);
        if floor == 0 {
            continue;
        }
        // An origin's entries are contiguous from the oldest kept: one seek (from where the
        // last pass stopped) finds where they start, and the keys to delete follow from the
        // sequence numbers — no scan.
        let prefix = [origin.as_bytes(), &[0]].concat();
        let after = node
            .oplog_start()
            .get(origin)
            .checked_sub(1)
            .map(|seq| keys::oplog_key(origin, seq));
        let oldest = node
            .store()
            .scan(Table::OpLog, &prefix, after.as_deref(), 1)
            .map_err(|e| e.to_string())?
            .first()
            .and_then(|(k, _)| keys::parse_oplog_key(k))
            .map(|(_, seq)| seq);
        let Some(first) = oldest.filter(|first| *first <= floor) else {
            continue;
        };
        let last = floor.min(first.saturating_add(PASS_LIMIT as u64 - 1));
        for from in (first..=last).step_by(CHUNK) {
            let to = last.min(from.saturating_add(CHUNK as u64 - 1));
            let owned = origin.to_string();
            node.store()
                .transact(move |txn| {
                    for seq in from..=to {
                        txn.delete(Table::OpLog, &keys::oplog_key(&owned, seq));
                    }
                })
                .await
                .map_err(|e| e.to_string())?;
            node.oplog_start().advance(origin, to.saturating_add(1));
            done.oplog += (to - from + 1) as usize;
        }
    }

    let now = node.now();
    let mut steps: Vec<Pending> = tombstones
        .into_iter()
        .filter_map(|(index_key, entry)| {
            let step = next_step(&entry, &stable, &newest)?;
            Some(Pending {
                index_key,
                entry,
                step,
            })
        })
        .collect();
    while !steps.is_empty() {
        let chunk: Vec<_> = steps.drain(..steps.len().min(CHUNK)).collect();
        done.tombstones += super::digest::transact(node, move |txn, digests| {
            take_steps(txn, digests, chunk, now)
        })
        .await
        .map_err(|e| e.to_string())?;
    }

    let peers: Vec<&str> = regions
        .iter()
        .copied()
        .filter(|r| *r != node.region())
        .collect();
    if let Some(cutoff) = node.watermarks().cutoff(&peers, &own) {
        done.expired = reset_expired(node, expired, cutoff).await?;
    }
    metrics::gc_collected(done.oplog, done.tombstones, done.expired);
    Ok(done)
}

/// Of `indexed` (keys of the reset index, in order), empties the expired records whose expiry
/// is at or before `cutoff` — before which every peer's writes are applied here — and that this
/// region wrote last (each region resets the ones it wrote last; a record rewritten since its
/// expiry has nothing to reset). Returns how many it reset. None while the node has a
/// sequence conflict: a reset is a write of this region, numbered like the clients' writes
/// the node refuses then (`Node::sequence_conflict`).
async fn reset_expired(
    node: &Node,
    indexed: Vec<Vec<u8>>,
    cutoff: Timestamp,
) -> Result<usize, String> {
    if node.sequence_conflict().is_some() {
        return Ok(0);
    }
    let due: Vec<Vec<u8>> = indexed
        .into_iter()
        .take_while(|k| keys::parse_reset_key(k).is_some_and(|(at, _)| at <= cutoff))
        .collect();
    let mut reset = 0;
    for chunk in due.chunks(CHUNK) {
        let (n, chunk) = (node.clone(), chunk.to_vec());
        let written = super::digest::transact(node, move |txn, digests| {
            // A read error ends the chunk; the resets before it are written, and published.
            let mut seqs = Vec::new();
            for index_key in &chunk {
                match reset_one(&n, txn, digests, index_key) {
                    Ok(seq) => seqs.extend(seq),
                    Err(e) => return (seqs, Some(e)),
                }
            }
            (seqs, None)
        })
        .await;
        let (seqs, failed) = match written {
            Ok(w) => w,
            Err(e) => {
                node.reload_seq();
                return Err(e.to_string());
            }
        };
        reset += seqs.len();
        for seq in seqs {
            node.published(None, Some(seq));
        }
        if let Some(e) = failed {
            return Err(e.to_string());
        }
    }
    Ok(reset)
}

/// Drops one entry of the reset index and, if the record it names is still expired at that
/// time and was last written here, writes its reset as this region's next op; the op's
/// sequence number, if it wrote one.
fn reset_one(
    node: &Node,
    txn: &mut Txn<'_>,
    digests: &mut Changes,
    index_key: &[u8],
) -> Result<Option<u64>, meridian_store::Error> {
    let Some((at, data_key)) = keys::parse_reset_key(index_key) else {
        txn.delete(Table::Meta, index_key);
        return Ok(None);
    };
    // Read before staging anything: an error leaves the entry for a later pass.
    let stored = txn.get(Table::Data, data_key)?;
    txn.delete(Table::Meta, index_key);
    let Some(bytes) = stored else {
        return Ok(None);
    };
    let Ok(record) = Record::decode(&bytes) else {
        return Ok(None);
    };
    if record.expires != Some(at) || record.version.origin != node.region() {
        return Ok(None);
    }
    let Some(delta) = meridian_core::op::expiry_reset(&record) else {
        return Ok(None);
    };
    let Some((keyspace, key)) = keys::split_data_key(data_key) else {
        return Ok(None);
    };
    let mut new = record.clone();
    if new.merge(&delta).is_err() {
        return Ok(None);
    }
    // Every later write of this region is stamped after the expiry, even after a restart.
    let ts = node.with_hlc(|hlc, wall| hlc.now_after(at, wall));
    let seq = node.next_seq();
    digests.put(txn, data_key, Some(&bytes), &new.encode());
    index_tombstone(txn, data_key, &new, node.region(), seq);
    let payload = OpPayload {
        keyspace: keyspace.to_string(),
        key: key.to_string(),
        delta: delta.encode(),
        prev: Some(record.version),
        idempotency: None,
    };
    crate::write::log_own_op(txn, node.region(), seq, payload, ts);
    Ok(Some(seq))
}

/// A step decided from an index entry as a pass read it.
struct Pending {
    index_key: Vec<u8>,
    /// The entry the step was decided from: a write may index the key anew before the step's
    /// transaction runs, and then the step no longer applies.
    entry: Vec<u8>,
    step: Step,
}

/// What a pass does with one indexed tombstone.
enum Step {
    /// The index entry is unreadable: drop it.
    Drop,
    /// Phase one done: store the entry with its noted snapshot.
    Note(Vec<u8>),
    /// Both phases done: remove the record if it is still this dead version, and the entry.
    Collect { etag: String },
}

/// The step an index entry takes now; `None` while it waits.
fn next_step(entry: &[u8], stable: &VersionVector, newest: &VersionVector) -> Option<Step> {
    let Ok(mut t) = postcard::from_bytes::<Tombstone>(entry) else {
        return Some(Step::Drop);
    };
    let noted = t
        .noted
        .as_deref()
        .and_then(|s| VersionVector::parse_token(s).ok());
    match tombstone_step(&t.origin, t.seq, noted.as_ref(), stable, newest) {
        TombstoneStep::Wait => None,
        TombstoneStep::Note(snapshot) => {
            t.noted = Some(snapshot.to_token());
            // invariant: postcard serialization of a plain struct into a Vec cannot fail
            Some(Step::Note(postcard::to_stdvec(&t).unwrap_or_default()))
        }
        TombstoneStep::Collect => Some(Step::Collect { etag: t.etag }),
    }
}

/// Takes `steps` in one transaction, each only if its index entry is still the one it was
/// decided from (an entry written since — a record dead again under a newer version — waits for
/// the next pass); returns how many records it removed.
fn take_steps(
    txn: &mut Txn<'_>,
    digests: &mut Changes,
    steps: Vec<Pending>,
    now: Timestamp,
) -> usize {
    let mut removed = 0;
    for Pending {
        index_key,
        entry,
        step,
    } in steps
    {
        if !matches!(txn.get(Table::Meta, &index_key), Ok(Some(current)) if current == entry) {
            continue;
        }
        match step {
            Step::Drop => txn.delete(Table::Meta, &index_key),
            Step::Note(entry) => txn.put(Table::Meta, &index_key, &entry),
            Step::Collect { etag } => {
                let data_key = &index_key[keys::TOMB_PREFIX.len()..];
                if let Some(dead) = still_dead(txn, data_key, &etag, now) {
                    digests.delete(txn, data_key, &dead);
                    removed += 1;
                }
                txn.delete(Table::Meta, &index_key);
            }
        }
    }
    removed
}

/// The stored record at `data_key` if it is still dead (deleted or expired) at this version (a
/// later write changes the version, and then there is nothing to collect).
fn still_dead(txn: &Txn<'_>, data_key: &[u8], etag: &str, now: Timestamp) -> Option<Vec<u8>> {
    let bytes = txn.get(Table::Data, data_key).ok()??;
    let record = Record::decode(&bytes).ok()?;
    (collectable(&record, now) && record.version.etag() == etag).then_some(bytes)
}

/// Runs [`collect`] every `every` until the task is dropped.
pub async fn run(node: Node, every: std::time::Duration) {
    node.joined().await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failed store refuses every write until a restart; that is reported once (the
        // writer's log, the health calls, `meridian_store_failed`), not by a failing pass a tick.
        if node.store().failure().is_some() {
            continue;
        }
        match collect(&node).await {
            Ok(c) if c != Collected::default() => {
                tracing::debug!(
                    oplog = c.oplog,
                    tombstones = c.tombstones,
                    "garbage collected"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "garbage collection failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use meridian_core::version::VersionVector;
    use meridian_store::Table;

    use super::{Collected, Record, collect};
    use crate::input::WriteHeaders;
    use crate::testing::{TWO_REGIONS as TOPOLOGY, mutation, node, node_with_keys, put};
    use crate::write::write;

    fn applied(token: &str) -> VersionVector {
        VersionVector::parse_token(token).expect("token")
    }

    /// A peer that reports writes of this region past any this store made (a new store that
    /// took its start for the cluster's first) stops its writes: they would reuse numbers the
    /// peer has applied, and it would ignore them.
    #[tokio::test]
    async fn a_peer_ahead_of_this_store_stops_its_writes() {
        let a = node_with_keys(10).await;
        a.peer_heads("b", None, &applied("a:10"));
        assert!(a.sequence_conflict().is_none(), "caught up is not ahead");
        a.peer_heads("b", None, &applied("a:12"));
        let why = a.sequence_conflict().expect("a conflict");
        assert!(why.contains("`b`") && why.contains("12"), "{why}");
        let refused = write(&a, put(&a, "rep", "k", WriteHeaders::default()))
            .await
            .err()
            .expect("the write is refused");
        assert_eq!(refused.code, "sequence_conflict");
    }

    /// A peer that names a new store incarnation (its disk was lost) has applied only what the
    /// new store reports: what the old one had acknowledged no longer lets anything go.
    #[tokio::test]
    async fn a_peers_new_store_holds_back_what_its_old_one_had_applied() {
        let a = node_with_keys(10).await;
        a.peer_heads("b", Some(7), &applied("a:4,b:6"));
        assert_eq!(a.lost_claim("b"), 0, "b's store is the one it knew");
        a.peer_heads("b", Some(8), &applied(""));
        assert_eq!(
            collect(&a).await.expect("gc").oplog,
            0,
            "b's new store has nothing"
        );
        assert_eq!(a.lost_claim("b"), 6, "what b's old store said it made");
        a.peer_heads("b", Some(9), &applied(""));
        assert_eq!(a.lost_claim("b"), 6, "kept across a second replacement");
        a.peer_heads("b", Some(8), &applied("a:3"));
        assert_eq!(collect(&a).await.expect("gc").oplog, 3);
        a.peer_heads("b", None, &applied("a:2"));
        a.peer_heads("b", Some(8), &applied("a:1"));
        assert_eq!(
            collect(&a).await.expect("gc").oplog,
            0,
            "the same store's heads only grow"
        );
    }

    /// Op-log entries go exactly up to what every region applied, oldest first, and nothing
    /// goes before every peer has reported.
    #[tokio::test]
    async fn collects_the_op_log_up_to_what_every_region_applied() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let unheard =
            |text: &str| crate::testing::sample(text, crate::metrics::GC_PEERS_UNHEARD, &[]);
        let a = node_with_keys(10).await;
        let seqs = || -> Vec<u64> {
            a.store()
                .scan(Table::OpLog, b"a\0", None, usize::MAX)
                .expect("scan")
                .iter()
                .filter_map(|(k, _)| crate::keys::parse_oplog_key(k).map(|(_, s)| s))
                .collect()
        };
        assert_eq!(collect(&a).await.expect("gc"), Collected::default());
        assert_eq!(seqs(), (1..=10).collect::<Vec<_>>(), "b has not reported");
        assert_eq!(unheard(&handle.render()), Some(1), "b is unheard");

        a.peer_heads("b", None, &applied("a:6"));
        assert_eq!(collect(&a).await.expect("gc").oplog, 6);
        assert_eq!(seqs(), (7..=10).collect::<Vec<_>>());
        assert_eq!(a.oplog_start().get("a"), 7, "the next pass seeks from a:7");
        assert_eq!(collect(&a).await.expect("gc").oplog, 0, "nothing twice");

        a.peer_heads("b", None, &applied("a:10"));
        assert_eq!(collect(&a).await.expect("gc").oplog, 4);
        assert!(seqs().is_empty());
        let text = handle.render();
        assert_eq!(unheard(&text), Some(0));

        let collected = crate::testing::sample(&text, crate::metrics::GC_COLLECTED, &["oplog"]);
        assert_eq!(collected, Some(10), "{text}");
    }

    /// More entries than one transaction deletes go in several, all in one pass, and the next
    /// pass seeks from after the last.
    #[tokio::test]
    async fn collects_more_than_a_chunk_in_one_pass() {
        let n = super::CHUNK * 2 + 3;
        let a = node_with_keys(n).await;
        a.peer_heads("b", None, &applied(&format!("a:{n}")));
        assert_eq!(collect(&a).await.expect("gc").oplog, n);
        let left = a
            .store()
            .scan(Table::OpLog, b"a\0", None, usize::MAX)
            .expect("scan");
        assert!(left.is_empty(), "{} entries left", left.len());
        assert_eq!(a.oplog_start().get("a"), n as u64 + 1);
    }

    /// Writes `rep/k` on `a`, then deletes it.
    async fn put_then_delete(a: &crate::state::Node) {
        write(a, put(a, "rep", "k", WriteHeaders::default()))
            .await
            .expect("put");
        let delete = meridian_core::op::Op::Delete { context: None };
        write(a, mutation(a, "rep", "k", delete, WriteHeaders::default()))
            .await
            .expect("delete");
    }

    /// A register tombstone goes in two passes once every region applied the delete, and
    /// only then; the op log goes with it.
    #[tokio::test]
    async fn collects_a_tombstone_in_two_passes_after_every_region_applied_it() {
        let a = node(TOPOLOGY, "a", &Arc::new(AtomicU64::new(1_700_000_000_000)));
        put_then_delete(&a).await;
        let data = || stored(&a, "rep", "k");
        assert!(data().is_some(), "a tombstone is stored");

        let expect = |oplog, tombstones| Collected {
            oplog,
            tombstones,
            expired: 0,
        };
        a.peer_heads("b", None, &applied("a:1"));
        let c = collect(&a).await.expect("gc");
        assert_eq!(c, expect(1, 0), "b has not applied the delete");
        a.peer_heads("b", None, &applied("a:2"));
        let c = collect(&a).await.expect("gc");
        assert_eq!(c, expect(1, 0), "phase one notes what was reported");
        assert!(data().is_some());
        let c = collect(&a).await.expect("gc");
        assert_eq!(c.tombstones, 1, "phase two collects");
        assert!(data().is_none());
        assert_eq!(collect(&a).await.expect("gc"), Collected::default());
    }

    /// A step decided from an index entry is not taken once the key was indexed anew between
    /// the pass's read and its transaction (here: the key written and deleted again, dead under
    /// a newer version): the new entry stays for a later pass, which collects the record.
    #[tokio::test]
    async fn a_step_decided_from_a_replaced_entry_is_not_taken() {
        let a = node(TOPOLOGY, "a", &Arc::new(AtomicU64::new(1_700_000_000_000)));
        put_then_delete(&a).await;
        let index_key = [super::keys::TOMB_PREFIX, &super::keys::data_key("rep", "k")].concat();
        let entry = || a.store().get(Table::Meta, &index_key).expect("get");
        let read = entry().expect("indexed");
        let etag = postcard::from_bytes::<super::Tombstone>(&read)
            .expect("entry")
            .etag;
        let stale = super::Pending {
            index_key: index_key.clone(),
            entry: read.clone(),
            step: super::Step::Collect { etag },
        };
        put_then_delete(&a).await;
        assert_ne!(entry(), Some(read), "indexed anew");
        let now = a.now();
        let removed = super::super::digest::transact(&a, move |txn, digests| {
            super::take_steps(txn, digests, vec![stale], now)
        })
        .await
        .expect("transact");
        assert_eq!(removed, 0);
        assert!(entry().is_some(), "the new entry stays");
        a.peer_heads("b", None, &applied("a:4"));
        for _ in 0..2 {
            collect(&a).await.expect("gc");
        }
        assert_eq!(stored(&a, "rep", "k"), None, "collected by a later pass");
    }

    /// [`TOPOLOGY`] plus a map keyspace `m`, a set keyspace `s` and a counter keyspace `c`.
    fn more_types() -> String {
        let more = ["m", "map", "s", "set", "c", "counter"];
        let mut t = TOPOLOGY.to_string();
        for kind in more.chunks(2) {
            t.push_str(&format!(
                "\n[[keyspace]]\nname = \"{}\"\ntype = \"{}\"\n",
                kind[0], kind[1]
            ));
        }
        t
    }

    fn patch(fields: serde_json::Value) -> meridian_core::op::Op {
        meridian_core::op::Op::Patch {
            fields: fields.as_object().cloned().expect("an object"),
        }
    }

    /// The record stored at `key` of keyspace `ks` on `a`, if any.
    fn stored(a: &crate::state::Node, ks: &str, key: &str) -> Option<Record> {
        a.store()
            .get(Table::Data, &crate::keys::data_key(ks, key))
            .expect("get")
            .map(|b| Record::decode(&b).expect("record"))
    }

    /// Deleted maps, sets and counters go by the same two phases as a register. A write to a
    /// collected set or counter starts above everything this region issued, so a region still
    /// holding the old tombstone reads it the same: the new member, exactly the new count.
    #[tokio::test]
    async fn collects_deleted_values_and_a_later_write_reads_the_same_everywhere() {
        let a = node(
            &more_types(),
            "a",
            &Arc::new(AtomicU64::new(1_700_000_000_000)),
        );
        let delete = || meridian_core::op::Op::Delete { context: None };
        let add = |m: &str| meridian_core::op::Op::Add {
            members: vec![m.into()],
        };
        let incr = |by: i64| meridian_core::op::Op::Incr { by };
        let h = WriteHeaders::default;
        let ops = [
            ("m", patch(serde_json::json!({"f": 1}))),
            ("m", delete()),
            ("s", add("x")),
            ("s", delete()),
            ("c", incr(5)),
            ("c", delete()),
        ];
        for (ks, op) in ops {
            write(&a, mutation(&a, ks, "k", op, h())).await.expect(ks);
        }
        let record = |ks: &str| stored(&a, ks, "k");
        let (old_set, old_counter) = (record("s").expect("set"), record("c").expect("counter"));

        a.peer_heads("b", None, &applied("a:6"));
        assert_eq!(collect(&a).await.expect("gc").tombstones, 0, "phase one");
        assert_eq!(collect(&a).await.expect("gc").tombstones, 3, "phase two");
        assert!(record("m").is_none() && record("s").is_none() && record("c").is_none());

        write(&a, mutation(&a, "s", "k", add("y"), h()))
            .await
            .expect("add after the collection");
        write(&a, mutation(&a, "c", "k", incr(2), h()))
            .await
            .expect("increment after the collection");
        let elsewhere = |mut old: Record, ks: &str| {
            old.merge(&record(ks).expect("written")).expect("merge");
            old.value
        };
        let meridian_core::record::Value::Set(set) = elsewhere(old_set, "s") else {
            panic!("a set")
        };
        assert!(
            set.contains("y"),
            "the new add is kept where the tombstone is"
        );
        let meridian_core::record::Value::Counter(c) = elsewhere(old_counter, "c") else {
            panic!("a counter")
        };
        assert_eq!(
            c.value(),
            2,
            "exactly the new increment where the tombstone is"
        );
        let meridian_core::record::Value::Counter(c) = record("c").expect("c").value else {
            panic!("a counter")
        };
        assert_eq!(c.value(), 2, "and here");
    }

    /// Two nodes of [`more_types`], `a` and `b`, with their clocks at `clock`.
    fn pair(clock: &Arc<AtomicU64>) -> (crate::state::Node, crate::state::Node) {
        (
            node(&more_types(), "a", clock),
            node(&more_types(), "b", clock),
        )
    }

    /// An add of `member` to a set.
    fn add(member: &str) -> meridian_core::op::Op {
        meridian_core::op::Op::Add {
            members: vec![member.into()],
        }
    }

    /// A write's headers with a TTL of one second.
    fn ttl() -> WriteHeaders {
        WriteHeaders {
            ttl: Some(std::time::Duration::from_secs(1)),
            ..WriteHeaders::default()
        }
    }

    /// Everything `from` has that `to` lacks, with `from`'s heads and watermark.
    async fn deliver(from: &crate::state::Node, to: &crate::state::Node) {
        crate::repl::exchange(from, to, usize::MAX)
            .await
            .expect("exchange");
    }

    /// A node with a sequence conflict issues no reset (a write of its own, numbered like the
    /// clients' writes it refuses); the expired record waits in the reset index.
    #[tokio::test]
    async fn a_sequence_conflict_stops_the_resets_too() {
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let (a, b) = pair(&clock);
        let op = meridian_core::op::Op::Incr { by: 5 };
        write(&a, mutation(&a, "c", "k", op, ttl()))
            .await
            .expect("incr");
        deliver(&a, &b).await;
        clock.fetch_add(1_500, std::sync::atomic::Ordering::SeqCst);
        crate::expiry::sweep_once(&a).await.expect("sweep");
        crate::expiry::sweep_once(&b).await.expect("sweep");
        // Each pass takes its node's watermark: once b's reaches a, a would reset (the test
        // above), but for the conflict.
        collect(&a).await.expect("gc");
        collect(&b).await.expect("gc");
        deliver(&b, &a).await;
        a.peer_heads("b", None, &applied("a:1000"));
        assert!(a.sequence_conflict().is_some());
        assert_eq!(collect(&a).await.expect("gc").expired, 0);
        let indexed = a
            .store()
            .scan(Table::Meta, crate::keys::RESET_PREFIX, None, usize::MAX)
            .expect("scan")
            .len();
        assert_eq!(indexed, 1, "still waiting");
    }

    /// An expired map, set and counter are emptied by a reset from the region that wrote them
    /// last, once every peer's watermark is past the expiry — not before — and then collected
    /// everywhere like deleted records; an expired register goes by the tombstone rule.
    #[tokio::test]
    async fn expired_records_are_reset_by_their_last_writer_then_collected_everywhere() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let pending = |what: &str| {
            let label = format!("what=\"{what}\"");
            crate::testing::sample(&handle.render(), crate::metrics::GC_PENDING, &[&label])
        };
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let (a, b) = pair(&clock);
        let ops = [
            ("m", patch(serde_json::json!({"f": 1}))),
            (
                "s",
                meridian_core::op::Op::Add {
                    members: vec!["x".into()],
                },
            ),
            ("c", meridian_core::op::Op::Incr { by: 5 }),
        ];
        for (ks, op) in ops {
            write(&a, mutation(&a, ks, "k", op, ttl())).await.expect(ks);
        }
        write(&a, put(&a, "rep", "k", ttl())).await.expect("put");
        deliver(&a, &b).await;
        clock.fetch_add(1_500, std::sync::atomic::Ordering::SeqCst);
        for n in [&a, &b] {
            assert_eq!(crate::expiry::sweep_once(n).await.expect("sweep"), 4);
        }
        let resets = |n: &crate::state::Node| {
            n.store()
                .scan(Table::Meta, crate::keys::RESET_PREFIX, None, usize::MAX)
                .expect("scan")
                .len()
        };
        assert_eq!((resets(&a), resets(&b)), (3, 3), "all but the register");

        assert_eq!(
            collect(&a).await.expect("gc").expired,
            0,
            "b's watermark unknown"
        );
        assert_eq!(pending("expired"), Some(3), "waiting for b's watermark");
        assert_eq!(
            collect(&b).await.expect("gc").expired,
            0,
            "a's watermark unknown"
        );
        deliver(&b, &a).await;
        assert_eq!(
            collect(&a).await.expect("gc").expired,
            3,
            "a wrote them last"
        );
        let b_at_a = &crate::repl::peer_status(&a)["b"];
        assert_eq!(
            (b_at_a.unacked_ops, b_at_a.lag_seconds),
            (3, 0.0),
            "resets, stamped at the expiry 0.5 s ago, are not lag"
        );
        for ks in ["m", "s", "c"] {
            let r = stored(&a, ks, "k").expect("still stored");
            assert!(r.value.is_empty() && r.expires.is_none(), "{ks}: {r:?}");
        }
        deliver(&a, &b).await;
        deliver(&b, &a).await;
        assert_eq!(
            collect(&b).await.expect("gc").expired,
            0,
            "b did not write them"
        );
        assert_eq!(resets(&b), 0, "b drops its entries once past the expiry");
        for _ in 0..3 {
            for (x, y) in [(&a, &b), (&b, &a)] {
                collect(x).await.expect("gc");
                deliver(x, y).await;
            }
        }
        for n in [&a, &b] {
            for ks in ["m", "s", "c", "rep"] {
                assert_eq!(stored(n, ks, "k"), None, "{ks} in {}", n.region());
            }
        }
        collect(&b).await.expect("gc");
        assert_eq!(
            (pending("tombstones"), pending("expired")),
            (Some(0), Some(0))
        );
    }

    /// A peer's watermark counts only once the writes it covers are applied: a region that has
    /// the watermark but not the peer's later write (made before the expiry) does not reset a
    /// record it only thinks it wrote last — that would leave the peer's values without an
    /// expiry. The peer, the real last writer, resets it once it has the other's watermark.
    #[tokio::test]
    async fn a_reset_waits_for_the_writes_a_watermark_covers() {
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let (a, b) = pair(&clock);
        write(&a, mutation(&a, "s", "k", add("x"), ttl()))
            .await
            .expect("add at a");
        clock.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
        write(&b, mutation(&b, "s", "k", add("y"), ttl()))
            .await
            .expect("add at b, later");
        clock.fetch_add(1_500, std::sync::atomic::Ordering::SeqCst);
        crate::expiry::sweep_once(&a).await.expect("sweep");
        collect(&b).await.expect("b takes its watermark");
        crate::repl::exchange(&b, &a, 0)
            .await
            .expect("heads and watermark only");
        assert_eq!(
            collect(&a).await.expect("gc").expired,
            0,
            "a lacks b's write, which b's watermark covers"
        );
        for _ in 0..4 {
            for (x, y) in [(&a, &b), (&b, &a)] {
                deliver(x, y).await;
                crate::expiry::sweep_once(x).await.expect("sweep");
                collect(x).await.expect("gc");
            }
        }
        for n in [&a, &b] {
            assert_eq!(stored(n, "s", "k"), None, "in {}", n.region());
        }
    }

    /// A delete that reaches a region before an older change it had seen — here a's add,
    /// which b's PUT replaced and c deleted after seeing the PUT — leaves the record live there
    /// until that change arrives and empties it under the delete's newer version. The record is
    /// indexed then, by the change that emptied it, and collected like any tombstone.
    #[tokio::test]
    async fn a_record_emptied_by_an_older_change_is_collected() {
        let topology = format!(
            "{}\n[[region]]\nname = \"c\"\nnode = \"http://127.0.0.1:3\"\n",
            more_types()
        );
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let [a, b, c] = ["a", "b", "c"].map(|r| node(&topology, r, &clock));
        let h = WriteHeaders::default;
        write(&a, mutation(&a, "s", "k", add("x"), h()))
            .await
            .expect("add at a");
        deliver(&a, &b).await;
        deliver(&a, &c).await;
        let put = meridian_core::op::Op::Put {
            value: bytes::Bytes::from_static(b"[\"y\"]"),
            content_type: "application/json".into(),
            context: None,
        };
        write(&b, mutation(&b, "s", "k", put, h()))
            .await
            .expect("put at b");
        deliver(&b, &c).await;
        let delete = meridian_core::op::Op::Delete { context: None };
        write(&c, mutation(&c, "s", "k", delete, h()))
            .await
            .expect("delete at c");
        // a gets c's delete first, then b's PUT.
        for origin in ["c", "b"] {
            let mut sent = a.applied().borrow().clone();
            let entries =
                crate::repl::serve::collect(&c, "a", &mut sent, usize::MAX, |o| o == origin)
                    .expect("entries");
            super::super::apply::apply_batch(&a, entries)
                .await
                .expect("apply");
            let live = stored(&a, "s", "k").expect("stored").is_live(a.now());
            assert_eq!(live, origin == "c", "after {origin}'s entries");
        }
        let tomb = [crate::keys::TOMB_PREFIX, &crate::keys::data_key("s", "k")].concat();
        let indexed = a.store().get(Table::Meta, &tomb).expect("get");
        assert!(indexed.is_some(), "the emptied record is indexed");
        for _ in 0..3 {
            for (x, y) in [(&a, &b), (&b, &c), (&c, &a), (&a, &c), (&c, &b), (&b, &a)] {
                deliver(x, y).await;
                collect(x).await.expect("gc");
            }
        }
        for n in [&a, &b, &c] {
            assert_eq!(stored(n, "s", "k"), None, "in {}", n.region());
        }
    }

    /// A write made after the expiry in a region the reset's author had not heard from yet is
    /// not removed by the reset: both regions end with exactly what it added.
    #[tokio::test]
    async fn a_write_after_the_expiry_survives_a_reset_that_did_not_see_it() {
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let (a, b) = pair(&clock);
        write(&a, mutation(&a, "s", "k", add("x"), ttl()))
            .await
            .expect("add");
        deliver(&a, &b).await;
        clock.fetch_add(1_500, std::sync::atomic::Ordering::SeqCst);
        for n in [&a, &b] {
            crate::expiry::sweep_once(n).await.expect("sweep");
        }
        collect(&b).await.expect("gc");
        deliver(&b, &a).await;
        write(
            &b,
            mutation(&b, "s", "k", add("y"), WriteHeaders::default()),
        )
        .await
        .expect("add after the expiry");
        assert_eq!(collect(&a).await.expect("gc").expired, 1);
        for _ in 0..3 {
            for (x, y) in [(&a, &b), (&b, &a)] {
                deliver(x, y).await;
                collect(x).await.expect("gc");
            }
        }
        let now = a.now();
        for n in [&a, &b] {
            let r = stored(n, "s", "k").expect("stored");
            assert!(r.is_live(now), "{r:?}");
            let meridian_core::record::Value::Set(set) = &r.value else {
                panic!("a set")
            };
            assert_eq!(
                set.members().collect::<Vec<_>>(),
                ["y"],
                "in {}",
                n.region()
            );
        }
        assert_eq!(stored(&a, "s", "k"), stored(&b, "s", "k"));
    }

    /// The highest dot this region issued survives a restart, and a store from before it was
    /// kept finds it by a scan: a key collected before the restart still gets fresh dots.
    #[tokio::test]
    async fn the_dot_floor_survives_a_restart_and_is_found_in_an_older_store() {
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let a = node(&more_types(), "a", &clock);
        let add = meridian_core::op::Op::Add {
            members: vec!["x".into(), "y".into(), "z".into()],
        };
        write(&a, mutation(&a, "s", "k", add, WriteHeaders::default()))
            .await
            .expect("add");
        assert_eq!(a.floor().dot, 3);
        let reopen = |store: meridian_store::Store| {
            let t =
                Arc::new(meridian_core::config::parse("t.toml", &more_types()).expect("topology"));
            let clock = Arc::new(crate::testing::FakeClock(clock.clone()));
            crate::state::Node::new(t, "a", store, clock, crate::NodeConfig::default())
                .expect("node")
        };
        assert_eq!(reopen(a.store().clone()).floor().dot, 3, "stored");
        a.store()
            .transact(|txn| txn.delete(Table::Meta, crate::keys::META_FLOOR))
            .await
            .expect("forget it");
        assert_eq!(reopen(a.store().clone()).floor().dot, 3, "scanned");
    }
}
