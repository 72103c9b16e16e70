//! The write path. Every mutation runs as one store transaction on the writer thread: check the
//! idempotency record, read the current record, check preconditions, home and residency, stamp
//! an HLC version, compute the CRDT delta, merge, and write record + op-log entry + expiry index
//! + idempotency outcome together. The caller hears back only once all of it is on disk.

use axum::http::StatusCode;
use meridian_core::config::{Keyspace, Replication, Residency, Writer};
use meridian_core::hlc::Timestamp;
use meridian_core::op::{self, Op, WriteMeta};
use meridian_core::record::Record;
use meridian_core::version::{Dot, Version};
use meridian_core::wire::{LogBody, OpPayload, encode_log_body};
use meridian_store::{Table, Txn};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::input::{IfMatch, WriteHeaders};
use crate::render;
use crate::repl::digest::Changes;
use crate::state::{Change, Node};
use crate::{keys, metrics};

/// The answer to a mutating call; also what an idempotency record stores and replays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status.
    pub status: u16,
    /// ETag of the key after the write, without quotes.
    pub etag: Option<String>,
    /// Session token covering this write.
    pub session: Option<String>,
    /// Content type of `body`.
    pub content_type: Option<String>,
    /// Response body.
    pub body: Vec<u8>,
}

/// An idempotency record: the first outcome of a request, kept for `[limits] idempotency_ttl`.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredOutcome {
    pub(crate) fingerprint: u128,
    pub(crate) expires: Timestamp,
    pub(crate) outcome: Outcome,
    /// The op-log sequence of the write at its origin (`None` when nothing was written).
    pub(crate) seq: Option<(String, u64)>,
}

impl StoredOutcome {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // invariant: postcard serialization of plain structs into a Vec cannot fail
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredOutcome, ApiError> {
        postcard::from_bytes(bytes)
            .map_err(|e| ApiError::internal(format!("idempotency record unreadable: {e}")))
    }
}

/// A validated mutation, ready for the writer.
pub struct Mutation {
    /// Keyspace config.
    pub keyspace: Keyspace,
    /// The key.
    pub key: String,
    /// What to do.
    pub op: Op,
    /// Validated headers.
    pub headers: WriteHeaders,
    /// Hash of everything that makes this request what it is, for idempotency.
    pub fingerprint: u128,
}

/// What a committed write reports back.
pub struct Written {
    /// The HTTP outcome.
    pub outcome: Outcome,
    /// True when the outcome was replayed from an idempotency record.
    pub replayed: bool,
}

enum TxnResult {
    Done {
        outcome: Outcome,
        change: Option<Change>,
        seq: Option<u64>,
        home: Option<String>,
    },
    Replayed {
        outcome: Outcome,
        seq: Option<(String, u64)>,
    },
}

/// Hash of a request for idempotency: method, path, body and every header that changes meaning.
pub fn fingerprint(parts: &[&[u8]]) -> u128 {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
        buf.extend_from_slice(p);
    }
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// Runs a mutation durably and returns its outcome. For a `sync` keyspace the answer also
/// waits for the quorum (see [`crate::repl::wait_quorum`]); a replayed outcome waits for it too,
/// so a retry after `quorum_unavailable` reports the truth.
pub async fn write(node: &Node, m: Mutation) -> Result<Written, ApiError> {
    let n = node.clone();
    let session_in = m.headers.session.clone();
    let keyspace = m.keyspace.clone();
    let op_name = m.op.name();
    if let Some(conflict) = node.sequence_conflict() {
        return Err(crate::api::sequence_conflict(conflict));
    }
    let Some(place) = node.admit_write() else {
        metrics::write_shed(&keyspace.name);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "{} writes are already waiting for this node's store ([limits] \
                 max_pending_writes), so this one was refused and changed nothing",
                node.topology().limits.max_pending_writes
            ),
            "retry after the Retry-After delay (with the same Idempotency-Key if it has one), \
             with backoff; a client that keeps this many writes in flight should send fewer",
        )
        .with_header("retry-after", "1"));
    };
    let result = crate::repl::digest::transact(node, move |txn, digests| {
        // The place is given back once the store has run the write, even if its client has
        // stopped waiting: the bound is on the store's queue, not on the callers.
        let _place = place;
        apply_in_txn(&n, txn, digests, m)
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            node.reload_seq();
            return Err(e.into());
        }
    };
    let (mut outcome, replayed, seq, home) = match result? {
        TxnResult::Replayed { outcome, seq } => {
            metrics::idempotent_replay(&keyspace.name);
            (outcome, true, seq, None)
        }
        TxnResult::Done {
            outcome,
            change,
            seq,
            home,
        } => {
            node.published(change, seq);
            metrics::write(&keyspace.name, op_name);
            (
                outcome,
                false,
                seq.map(|s| (node.region().to_string(), s)),
                home,
            )
        }
    };
    if let Some((origin, seq)) = &seq {
        let mut vv = session_in.unwrap_or_default();
        vv.add(&Dot {
            origin: origin.clone(),
            counter: *seq,
        });
        outcome.session = Some(vv.to_token());
        if keyspace.replication == Replication::Sync && origin == node.region() {
            crate::repl::wait_quorum(node, &keyspace, home.as_deref(), *seq).await?;
        }
    }
    Ok(Written { outcome, replayed })
}

fn apply_in_txn(
    node: &Node,
    txn: &mut Txn<'_>,
    digests: &mut Changes,
    m: Mutation,
) -> Result<TxnResult, ApiError> {
    let region = node.region().to_string();
    let now = node.now();
    let idem_key = m
        .headers
        .idempotency_key
        .as_deref()
        .map(|k| keys::idempotency_key(&m.keyspace.name, k));
    if let Some(ik) = &idem_key
        && let Some(bytes) = txn.get(Table::Idempotency, ik)?
    {
        let stored = StoredOutcome::decode(&bytes)?;
        if stored.expires > now {
            if stored.fingerprint != m.fingerprint {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different request",
                    "use a new Idempotency-Key for a new request; reuse one only to retry the identical request",
                ));
            }
            // A sync write's replay claims a quorum: not for a write no other region got.
            // (An async one's claims it is durable here, which the copy that brought the
            // outcome made true.)
            if m.keyspace.replication == Replication::Sync
                && let Some((origin, seq)) = &stored.seq
                && *origin == region
                && lost_seq(txn, *seq)?
            {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_lost",
                    format!(
                        "the write under this Idempotency-Key was made by this region's store \
                         before its data was lost (write {seq}), and no other region received \
                         it: whether it took effect cannot be confirmed, and retrying under \
                         this key will not change that"
                    ),
                    "read the key to see what it holds; send the write again under a new \
                     Idempotency-Key if it is still wanted",
                ));
            }
            return Ok(TxnResult::Replayed {
                outcome: stored.outcome,
                seq: stored.seq,
            });
        }
    }

    let dk = keys::data_key(&m.keyspace.name, &m.key);
    let stored_bytes = txn.get(Table::Data, &dk)?;
    let current = match &stored_bytes {
        Some(bytes) => Some(Record::decode(bytes).map_err(|e| {
            ApiError::internal(format!("stored record of `{}` is unreadable: {e}", m.key))
        })?),
        None => None,
    };
    // The stored record goes to `apply` even when deleted or expired: it carries the per-origin
    // counters that keep the new write's dots fresh (core resets an expired value itself).
    let live = current.as_ref().filter(|r| r.is_live(now));

    // Placement before preconditions: outside the key's home (or its residency) this copy may
    // be older than the home's, so a precondition judged on it could refuse what the home
    // would accept — the request is sent where it can be judged instead.
    let home = live
        .and_then(|r| r.home.clone())
        .or_else(|| new_key_home(node, &m.keyspace, &m.key, m.headers.home.clone()));
    check_placement(node, &m.keyspace, home.as_deref())?;
    check_preconditions(&m, live)?;

    if matches!(m.op, Op::Delete { .. }) && live.is_none() {
        let outcome = Outcome {
            status: 204,
            etag: None,
            session: None,
            content_type: None,
            body: Vec::new(),
        };
        if let Some(ik) = &idem_key {
            let stored = stored_outcome(node, &m, now, &outcome, None);
            put_idempotency(txn, ik, &stored);
        }
        return Ok(TxnResult::Done {
            outcome,
            change: None,
            seq: None,
            home: None,
        });
    }

    let new = node.with_hlc(|hlc, wall| -> Result<(Record, Record), ApiError> {
        // After the version this write read, even if it came from a clock beyond the skew bound.
        let read = current.as_ref().map(|r| r.version.ts).unwrap_or_default();
        let ts = hlc.now_after(read, wall);
        let meta = WriteMeta {
            version: Version {
                ts,
                origin: region.clone(),
            },
            expires: expiry(&m, live, ts),
            home: home.clone(),
            floor: node.floor(),
        };
        let delta =
            op::apply(m.keyspace.kind, current.as_ref(), &m.op, &meta).map_err(core_error)?;
        let mut new = current.clone().unwrap_or_else(|| delta.clone());
        new.merge(&delta).map_err(core_error)?;
        Ok((delta, new))
    });
    let (delta, new) = new?;
    check_size(
        node,
        &m,
        live.map_or(0, |r| r.value.live_bytes()),
        new.value.live_bytes(),
    )?;

    // Nothing below can fail: a refusal above staged nothing and consumed no sequence number.
    let now_live = new.is_live(now);
    let status = match (&m.op, live.is_some()) {
        (Op::Delete { .. }, _) => 204,
        (Op::Put { .. }, false) => 201,
        _ => 200,
    };
    let (content_type, body) = if matches!(m.op, Op::Put { .. } | Op::Delete { .. }) {
        (None, Vec::new())
    } else {
        let (ct, body) = render::representation(&new);
        (Some(ct), body)
    };
    let etag = Some(new.version.etag());
    let outcome = Outcome {
        status,
        etag: etag.clone(),
        session: None,
        content_type,
        body,
    };

    let seq = node.next_seq();
    let stored = idem_key.as_ref().map(|ik| {
        let stored = stored_outcome(node, &m, now, &outcome, Some((region.clone(), seq)));
        put_idempotency(txn, ik, &stored);
        stored.encode()
    });
    digests.put(txn, &dk, stored_bytes.as_deref(), &new.encode());
    crate::repl::gc::index_tombstone(txn, &dk, &new, &region, seq);
    if let Some(exp) = new.expires {
        crate::expiry::index(txn, &dk, exp, seq);
    }
    let payload = OpPayload {
        keyspace: m.keyspace.name.clone(),
        key: m.key.clone(),
        delta: delta.encode(),
        prev: current.as_ref().map(|r| r.version.clone()),
        idempotency: m.headers.idempotency_key.clone().zip(stored),
    };
    log_own_op(txn, &region, seq, payload, new.version.ts);
    if let Some(floor) = node.raise_floor(&new) {
        txn.put(Table::Meta, keys::META_FLOOR, &keys::encode_floor(&floor));
    }

    let change = Change {
        keyspace: m.keyspace.name.clone(),
        key: m.key.clone(),
        op: m.op.name(),
        etag,
        live: now_live,
        region,
    };
    Ok(TxnResult::Done {
        outcome,
        change: Some(change),
        seq: Some(seq),
        home: new.home,
    })
}

/// Whether this region's write number `seq` was made by a lost store of it and held by no peer
/// when the present store joined ([`keys::META_LOST_SEQS`]).
fn lost_seq(txn: &Txn<'_>, seq: u64) -> Result<bool, ApiError> {
    let Some(bytes) = txn.get(Table::Meta, keys::META_LOST_SEQS)? else {
        return Ok(false);
    };
    let ranges: Vec<(u64, u64)> = postcard::from_bytes(&bytes).unwrap_or_default();
    Ok(ranges.iter().any(|(from, to)| (*from..=*to).contains(&seq)))
}

/// Stages this region's op number `seq` in the transaction that writes its record: its op-log
/// entry, the last sequence number, and `ts`, the HLC time it advanced the clock to (restored
/// at start, so no later write is stamped before it).
pub(crate) fn log_own_op(
    txn: &mut Txn<'_>,
    region: &str,
    seq: u64,
    payload: OpPayload,
    ts: Timestamp,
) {
    txn.put(
        Table::OpLog,
        &keys::oplog_key(region, seq),
        &encode_log_body(&LogBody::Op(payload)),
    );
    txn.put(Table::Meta, keys::META_LAST_SEQ, &seq.to_be_bytes());
    store_hlc(txn, ts);
}

/// Stages `ts`, a time the HLC was advanced to, as the one it restarts from: no write after
/// a restart is stamped before it.
pub(crate) fn store_hlc(txn: &mut Txn<'_>, ts: Timestamp) {
    txn.put(Table::Meta, keys::META_HLC, &ts.0.to_be_bytes());
}

/// The expiry of a write: its `Meridian-TTL`, else the keyspace's default TTL, else — for an
/// in-place change (incr, add, remove, patch) of a live key — the expiry it already had. A PUT
/// or DELETE without either TTL clears it, as a fresh value.
fn expiry(m: &Mutation, live: Option<&Record>, ts: Timestamp) -> Option<Timestamp> {
    match m.headers.ttl.or(m.keyspace.ttl) {
        Some(ttl) => {
            Some(ts.saturating_add_millis(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
        }
        None if matches!(m.op, Op::Put { .. } | Op::Delete { .. }) => None,
        None => live.and_then(|r| r.expires),
    }
}

fn check_preconditions(m: &Mutation, live: Option<&Record>) -> Result<(), ApiError> {
    let conditional = m.headers.if_match.is_some() || m.headers.if_none_match;
    if conditional && m.keyspace.writer != Writer::Home {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cas_not_supported",
            format!(
                "keyspace `{}` accepts writes in every region, so a compare-and-set could succeed in two regions at once",
                m.keyspace.name
            ),
            "drop If-Match/If-None-Match, or set writer = \"home\" on the keyspace to get safe compare-and-set",
        ));
    }
    let failed = |msg: String| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            msg,
            "read the key again and retry with its current ETag",
        )
    };
    if m.headers.if_none_match
        && let Some(r) = live
    {
        return Err(failed(format!(
            "If-None-Match: * but the key exists at version \"{}\"",
            r.version.etag()
        ))
        .with_header("etag", format!("\"{}\"", r.version.etag())));
    }
    match (&m.headers.if_match, live) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(failed("If-Match given but the key does not exist".into())),
        (Some(IfMatch::Any), Some(_)) => Ok(()),
        (Some(IfMatch::Versions(vs)), Some(r)) => {
            let cur = r.version.etag();
            if vs.contains(&cur) {
                Ok(())
            } else {
                Err(failed(format!(
                    "the key is at version \"{cur}\", not the one given in If-Match"
                ))
                .with_header("etag", format!("\"{cur}\"")))
            }
        }
    }
}

/// The home of a key with no live record here, as a write made here gives it: `named` (the
/// request's `Meridian-Home`) when given; else, in a `writer = "home"` keyspace, the
/// topology's default home of the key (the same in every region, so no two regions take the
/// same new key); else, in a `home-zone` keyspace, this region; else none.
pub fn new_key_home(
    node: &Node,
    ks: &Keyspace,
    key: &str,
    named: Option<String>,
) -> Option<String> {
    named
        .or_else(|| node.topology().default_home(ks, key).map(str::to_string))
        .or_else(|| {
            matches!(ks.residency, Some(Residency::HomeZone)).then(|| node.region().to_string())
        })
}

/// Refuses a write that would make the value hold more than `[limits] max_value_bytes` of data
/// ([`meridian_core::record::Value::live_bytes`]: a map grown by PATCH, a set by `add`, an
/// mvregister by siblings) with 413 `value_too_large`, unless it shrinks a value already over
/// the limit — concurrent writes in several regions can merge past it, and trimming such a
/// value must stay possible.
fn check_size(node: &Node, m: &Mutation, before: usize, after: usize) -> Result<(), ApiError> {
    let max = node.topology().limits.max_value_bytes;
    if size_fits(max, before, after) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
        format!(
            "this {} would make `{}` hold {after} bytes of data; the limit is {max} bytes",
            m.op.name(),
            m.key
        ),
        match m.keyspace.kind {
            meridian_core::KeyspaceType::Map => {
                "remove fields (PATCH them to null) first, keep large objects elsewhere with a reference here, or raise [limits] max_value_bytes"
            }
            meridian_core::KeyspaceType::Set => {
                "remove members first, split the set over several keys, or raise [limits] max_value_bytes"
            }
            _ => {
                "resolve the siblings (write with the Meridian-Context you read), keep large objects elsewhere, or raise [limits] max_value_bytes"
            }
        },
    ))
}

/// Whether a write taking a value from `before` to `after` bytes of data may be made under a
/// limit of `max`: it ends within the limit, or shrinks a value that was over it.
fn size_fits(max: usize, before: usize, after: usize) -> bool {
    after <= max || after < before
}

/// Refuses a write this region may not take: a `writer = "home"` key homed elsewhere, or a
/// pinned key whose allowed regions exclude this one. Both answer 421 naming where to go.
pub fn check_placement(node: &Node, ks: &Keyspace, home: Option<&str>) -> Result<(), ApiError> {
    if ks.writer == Writer::Home
        && let Some(h) = home.filter(|h| *h != node.region())
    {
        return Err(wrong_region(ks, h));
    }
    check_residency(node, ks, home)
}

/// Refuses a request for a pinned key whose allowed regions — for `home-zone`, those of the
/// zone of `home` (this region when `None`) — exclude this one: 421 `residency` naming an
/// allowed region in `Meridian-Allowed-Region`.
pub fn check_residency(node: &Node, ks: &Keyspace, home: Option<&str>) -> Result<(), ApiError> {
    let region = node.region();
    if let Some(allowed) = node.topology().regions_for_key(ks, home.unwrap_or(region))
        && !allowed.contains(&region)
    {
        let target = allowed.first().map(|t| t.to_string());
        let hint = match &target {
            Some(t) => format!(
                "send the request to region `{t}` (allowed: {})",
                allowed.join(", ")
            ),
            None => {
                "give the key a home region that belongs to a zone with Meridian-Home".to_string()
            }
        };
        let mut err = ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "residency",
            format!(
                "keys of keyspace `{}` may not be held in region `{region}`",
                ks.name
            ),
            hint,
        );
        if let Some(t) = target {
            err = err.with_header("meridian-allowed-region", t);
        }
        return Err(err);
    }
    Ok(())
}

/// 421 `wrong_region`: keys of `ks` are written (and read with `consistency=strong`) only in
/// their home region, which is `home`; `Meridian-Home` names it.
pub fn wrong_region(ks: &Keyspace, home: &str) -> ApiError {
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "wrong_region",
        format!(
            "keyspace `{}` takes writes and strong reads only in a key's home region, and this key's home is `{home}`",
            ks.name
        ),
        format!("send the request to region `{home}`"),
    )
    .with_header("meridian-home", home)
}

fn stored_outcome(
    node: &Node,
    m: &Mutation,
    now: Timestamp,
    outcome: &Outcome,
    seq: Option<(String, u64)>,
) -> StoredOutcome {
    let ttl = node.topology().limits.idempotency_ttl;
    let expires = now.saturating_add_millis(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    StoredOutcome {
        fingerprint: m.fingerprint,
        expires,
        outcome: outcome.clone(),
        seq,
    }
}

/// Writes an idempotency record and its expiry index entry.
pub(crate) fn put_idempotency(txn: &mut Txn<'_>, table_key: &[u8], stored: &StoredOutcome) {
    txn.put(Table::Idempotency, table_key, &stored.encode());
    txn.put(
        Table::Meta,
        &keys::expiry_key(stored.expires, keys::ExpiryKind::Idempotency, table_key),
        b"",
    );
}

/// Maps a refusal of the merge rules to the HTTP answer.
pub fn core_error(e: meridian_core::Error) -> ApiError {
    use meridian_core::Error as E;
    match e {
        E::OpNotSupported { op, kind, hint } => ApiError::new(
            StatusCode::CONFLICT,
            "wrong_type",
            format!("`{op}` is not an operation of a {kind} keyspace"),
            hint,
        ),
        E::InvalidValue { message, hint } => ApiError::bad_request("invalid_value", message, hint),
        E::BadToken { message } => ApiError::bad_request(
            "bad_header",
            message,
            "send the token exactly as a response gave it",
        ),
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::input::WriteHeaders;
    use crate::testing::{TWO_REGIONS, node, put};

    /// A `sync` write's outcome that names a write of this region's lost store (a number the
    /// join recorded as held by no peer) is not replayed: 503 `outcome_lost`. An `async`
    /// one's is, and so is one of a number outside the lost ranges.
    #[tokio::test]
    async fn a_lost_stores_sync_outcome_is_not_replayed() {
        let topology = format!(
            "{TWO_REGIONS}\n[[keyspace]]\nname = \"orders\"\ntype = \"register\"\n\
             replication = \"sync\"\nquorum = 1\n"
        );
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let node = node(&topology, "a", &clock);
        let keyed = |k: &str| WriteHeaders {
            idempotency_key: Some(k.into()),
            ..Default::default()
        };
        for (ks, key) in [("orders", "lost"), ("rep", "lost"), ("orders", "kept")] {
            let m = put(&node, ks, key, keyed(key));
            super::write(&node, m).await.expect("first write");
        }
        // The store as a join leaves it when its writes 1..=2 were the lost store's.
        let lost = postcard::to_stdvec(&vec![(1u64, 2u64)]).expect("encode");
        node.store()
            .transact(move |txn| txn.put(super::Table::Meta, super::keys::META_LOST_SEQS, &lost))
            .await
            .expect("store");
        let err = super::write(&node, put(&node, "orders", "lost", keyed("lost")))
            .await
            .err()
            .expect("refused");
        assert_eq!((err.status.as_u16(), err.code), (503, "outcome_lost"));
        let replayed = super::write(&node, put(&node, "rep", "lost", keyed("lost")))
            .await
            .expect("an async outcome");
        assert!(replayed.replayed);
        let replayed = super::write(&node, put(&node, "orders", "kept", keyed("kept")))
            .await
            .expect("write 3 is no lost one");
        assert!(replayed.replayed);
    }

    /// An Idempotency-Key's stored outcome is replayed, and a different request under the key
    /// refused, until `[limits] idempotency_ttl` (24 h by default) has passed; after that the
    /// key is free and a request under it is carried out as new.
    #[tokio::test]
    async fn idempotency_outcomes_are_kept_for_the_ttl_and_then_forgotten() {
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        let node = node(TWO_REGIONS, "a", &clock);
        let ttl = node.topology().limits.idempotency_ttl;
        assert_eq!(ttl, std::time::Duration::from_secs(24 * 3600));
        let keyed = || WriteHeaders {
            idempotency_key: Some("retry-1".into()),
            ..WriteHeaders::default()
        };
        let different = || {
            let mut m = put(&node, "rep", "x", keyed());
            m.fingerprint = 2;
            m
        };
        let first = super::write(&node, put(&node, "rep", "x", keyed()))
            .await
            .expect("write");
        assert!(!first.replayed);
        clock.fetch_add(ttl.as_millis() as u64 - 1_000, Ordering::SeqCst);
        let again = super::write(&node, put(&node, "rep", "x", keyed()))
            .await
            .expect("replay");
        assert!(again.replayed, "within the TTL the outcome is replayed");
        assert_eq!(again.outcome.etag, first.outcome.etag);
        let refused = super::write(&node, different())
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.code, "idempotency_key_reused");
        clock.fetch_add(2_000, Ordering::SeqCst);
        let fresh = super::write(&node, different()).await.expect("a new write");
        assert!(!fresh.replayed, "past the TTL the key is free");
        assert_ne!(fresh.outcome.etag, first.outcome.etag);
    }

    /// Within the limit always; past it only when shrinking what merges took past it.
    #[test]
    fn a_value_over_the_limit_may_only_shrink() {
        use super::size_fits;
        assert!(size_fits(1024, 0, 1024));
        assert!(!size_fits(1024, 0, 1025));
        assert!(!size_fits(1024, 1000, 1025));
        assert!(size_fits(1024, 3000, 2999), "trimming a merged value");
        assert!(!size_fits(1024, 3000, 3000));
        assert!(!size_fits(1024, 3000, 3001));
    }
}
