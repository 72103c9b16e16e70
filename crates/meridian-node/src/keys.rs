//! How the node lays its records out in the store's tables. Keyspace names never contain a NUL
//! byte and user keys are refused when they do, so `keyspace \0 key` is unambiguous and a prefix
//! scan of `keyspace \0 prefix` sees exactly that keyspace.

use meridian_core::hlc::Timestamp;

/// `Table::Data` key of a user key.
pub fn data_key(keyspace: &str, key: &str) -> Vec<u8> {
    joined(keyspace, key)
}

/// `Table::Idempotency` key of an idempotency key within a keyspace.
pub fn idempotency_key(keyspace: &str, idem: &str) -> Vec<u8> {
    joined(keyspace, idem)
}

/// `Table::OpLog` key: origin region, NUL, sequence number big-endian (so scans are in order).
pub fn oplog_key(origin: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(origin.len() + 9);
    k.extend_from_slice(origin.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `Table::Meta` key holding the highest op-log sequence this region issued.
pub const META_LAST_SEQ: &[u8] = b"node/last_seq";
/// `Table::Meta` key holding what this region issued on any key (`meridian_core::op::Floor`):
/// its highest dot counter, then its highest counter totals `p` and `n`, each u64 BE.
pub const META_FLOOR: &[u8] = b"node/floor";

/// The stored form of a [`META_FLOOR`].
pub fn encode_floor(f: &meridian_core::op::Floor) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&f.dot.to_be_bytes());
    out[8..16].copy_from_slice(&f.count.p.to_be_bytes());
    out[16..].copy_from_slice(&f.count.n.to_be_bytes());
    out
}

/// A stored [`META_FLOOR`]; `None` when it is not 24 bytes.
pub fn decode_floor(v: &[u8]) -> Option<meridian_core::op::Floor> {
    if v.len() != 24 {
        return None;
    }
    Some(meridian_core::op::Floor {
        dot: decode_u64(&v[..8])?,
        count: meridian_core::crdt::PnEntry {
            p: decode_u64(&v[8..16])?,
            n: decode_u64(&v[16..])?,
        },
    })
}

/// `Table::Meta` key holding this store's incarnation: a random u64 chosen when the store was
/// created, by which peers tell a region's new store (a lost disk) from its old one.
pub const META_INCARNATION: &[u8] = b"node/incarnation";
/// `Table::Meta` key of the store's join state: [`JOINING`] from the creation of a store in a
/// topology with peers until it has learnt from them what it must hold, then [`JOINED`].
pub const META_JOIN: &[u8] = b"node/join";
/// `Table::Meta`, present once a peer answering this store's join held or knew writes of this
/// region (the store replaces a lost one): every later attempt of the join, after a crash too,
/// waits for every peer.
pub const META_JOIN_LOST: &[u8] = b"node/join_lost";
/// `Table::Meta`: the ranges of this region's sequence numbers whose writes were made by a lost
/// store of it and held by no peer when a new store joined (postcard `Vec<(u64, u64)>`, each
/// inclusive): an idempotency outcome naming one cannot be confirmed (see `write`).
pub const META_LOST_SEQS: &[u8] = b"node/lost_seqs";
/// [`META_JOIN`] of a store still to learn from its peers.
pub const JOINING: &[u8] = b"joining";
/// [`META_JOIN`] of a store that has.
pub const JOINED: &[u8] = b"joined";

/// `Table::Meta` key holding the highest HLC timestamp this region issued (restored at start).
pub const META_HLC: &[u8] = b"node/hlc";
/// `Table::Meta` prefix of the applied sequence per remote origin: `vv/<origin>` → u64 BE.
pub const META_VV_PREFIX: &[u8] = b"vv/";

/// `Table::Meta` key of the applied sequence of a remote origin.
pub fn vv_key(origin: &str) -> Vec<u8> {
    [META_VV_PREFIX, origin.as_bytes()].concat()
}

/// The (origin, sequence) of a `Table::OpLog` key.
pub fn parse_oplog_key(k: &[u8]) -> Option<(&str, u64)> {
    let nul = k.iter().position(|b| *b == 0)?;
    let origin = std::str::from_utf8(&k[..nul]).ok()?;
    Some((origin, decode_u64(&k[nul + 1..])?))
}

/// `Table::Meta` prefix of the register tombstones awaiting collection: `tomb/<data key>`.
pub const TOMB_PREFIX: &[u8] = b"tomb/";

/// `Table::Meta` prefix of the records a digest repair left dead or expiring before it could
/// tell which op to index them by: `reanchor/<data key>`, holding the record's ETag then (see
/// `crate::repl::gc`).
pub const REANCHOR_PREFIX: &[u8] = b"reanchor/";

/// `Table::Meta` prefix of the expiry index: `exp/` + expiry (big-endian) + kind + table key.
pub const EXPIRY_PREFIX: &[u8] = b"exp/";

/// What an expiry index entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryKind {
    /// A record in `Table::Data`.
    Data = b'd' as isize,
    /// An outcome in `Table::Idempotency`.
    Idempotency = b'i' as isize,
}

/// The expiry index key of a table key that expires at `at`.
pub fn expiry_key(at: Timestamp, kind: ExpiryKind, table_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(EXPIRY_PREFIX.len() + 9 + table_key.len());
    k.extend_from_slice(EXPIRY_PREFIX);
    k.extend_from_slice(&at.0.to_be_bytes());
    k.push(kind as u8);
    k.extend_from_slice(table_key);
    k
}

/// Splits an expiry index key back into (expiry, kind, table key); `None` if it is not one.
pub fn parse_expiry_key(k: &[u8]) -> Option<(Timestamp, ExpiryKind, &[u8])> {
    let rest = k.strip_prefix(EXPIRY_PREFIX)?;
    let (at, rest) = rest.split_first_chunk::<8>()?;
    let (kind, table_key) = rest.split_first()?;
    let kind = match *kind {
        b'd' => ExpiryKind::Data,
        b'i' => ExpiryKind::Idempotency,
        _ => return None,
    };
    Some((Timestamp(u64::from_be_bytes(*at)), kind, table_key))
}

/// `Table::Meta` prefix of the expired records awaiting their reset (a map, set, counter or
/// mvregister of a replicated keyspace; see `crate::repl::gc`): `reset/` + expiry (big-endian)
/// + data key, so they sort by expiry.
pub const RESET_PREFIX: &[u8] = b"reset/";

/// The key of the record at `data_key`, expired at `at`, in the index of [`RESET_PREFIX`].
pub fn reset_key(at: Timestamp, data_key: &[u8]) -> Vec<u8> {
    [RESET_PREFIX, &at.0.to_be_bytes(), data_key].concat()
}

/// Splits a [`reset_key`] back into (expiry, data key); `None` if it is not one.
pub fn parse_reset_key(k: &[u8]) -> Option<(Timestamp, &[u8])> {
    let (at, data_key) = k.strip_prefix(RESET_PREFIX)?.split_first_chunk::<8>()?;
    Some((Timestamp(u64::from_be_bytes(*at)), data_key))
}

/// The user key of a `Table::Data` key of `keyspace`; `None` if it belongs elsewhere.
pub fn user_key<'a>(keyspace: &str, data_key: &'a [u8]) -> Option<&'a str> {
    split_data_key(data_key)
        .filter(|(ks, _)| *ks == keyspace)
        .map(|(_, key)| key)
}

/// A `Table::Data` key as (keyspace, user key); `None` if it is not one.
pub fn split_data_key(data_key: &[u8]) -> Option<(&str, &str)> {
    let nul = data_key.iter().position(|b| *b == 0)?;
    let keyspace = std::str::from_utf8(&data_key[..nul]).ok()?;
    let key = std::str::from_utf8(&data_key[nul + 1..]).ok()?;
    Some((keyspace, key))
}

/// A counter as the node keeps them in `Table::Meta` (and expiry index values): 8 bytes,
/// big-endian; `None` for anything else.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

fn joined(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_round_trip_and_sort_by_time() {
        let a = expiry_key(Timestamp(5), ExpiryKind::Data, b"ks\0k");
        let b = expiry_key(Timestamp(256), ExpiryKind::Idempotency, b"ks\0a");
        assert!(a < b, "index must sort by expiry");
        assert_eq!(
            parse_expiry_key(&a),
            Some((Timestamp(5), ExpiryKind::Data, &b"ks\0k"[..]))
        );
        assert_eq!(parse_expiry_key(b"exp/short"), None);
        let (r5, r256) = (
            reset_key(Timestamp(5), b"ks\0z"),
            reset_key(Timestamp(256), b"ks\0a"),
        );
        assert!(r5 < r256, "the reset index sorts by expiry");
        assert_eq!(parse_reset_key(&r5), Some((Timestamp(5), &b"ks\0z"[..])));
        assert_eq!(parse_reset_key(b"reset/short"), None);
    }

    #[test]
    fn user_key_only_matches_its_keyspace() {
        let k = data_key("orders", "a/b");
        assert_eq!(user_key("orders", &k), Some("a/b"));
        assert_eq!(user_key("order", &k), None);
        assert_eq!(split_data_key(&k), Some(("orders", "a/b")));
        assert_eq!(split_data_key(b"no-separator"), None);
        assert_eq!(decode_u64(&7u64.to_be_bytes()), Some(7));
        assert_eq!(decode_u64(b"short"), None);
    }

    #[test]
    fn oplog_keys_sort_by_sequence() {
        assert!(oplog_key("eu", 2) < oplog_key("eu", 256));
    }
}
