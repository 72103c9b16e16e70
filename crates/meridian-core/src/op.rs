//! What a client asks for at the origin region, and the delta each request produces.

use bytes::Bytes;

use crate::crdt::{LwwMap, LwwRegister, PnEntry};
use crate::hlc::Timestamp;
use crate::record::{Record, Value};
use crate::version::{Version, VersionVector};
use crate::{Error, KeyspaceType};

/// One client request against one key.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Write a whole value: bytes for registers, a JSON array of strings for a set, a JSON
    /// object for a map. `context` (mvregister only; ignored elsewhere) is what the client
    /// read: the siblings it covers are replaced.
    Put {
        /// The body.
        value: Bytes,
        /// The body's content type (kept by registers).
        content_type: String,
        /// The causal context the client read (`Meridian-Context`), if any.
        context: Option<VersionVector>,
    },
    /// Delete the value (observed delete for the CRDT types, a tombstone for a register).
    Delete {
        /// mvregister only: remove just the siblings this context covers; `None` removes all.
        context: Option<VersionVector>,
    },
    /// Add `by` (may be negative or zero) to a counter.
    Incr {
        /// The amount.
        by: i64,
    },
    /// Add members to a set.
    Add {
        /// The members to add.
        members: Vec<String>,
    },
    /// Remove members from a set (only the adds this region has observed).
    Remove {
        /// The members to remove.
        members: Vec<String>,
    },
    /// Apply a JSON merge patch (RFC 7386, top level) to a map: `null` removes a field.
    Patch {
        /// Field name to new value (`null`: remove).
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

impl Op {
    /// The operation's name in errors and metrics: `put`, `delete`, `incr`, `add`, `remove`,
    /// `patch`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Incr { .. } => "incr",
            Op::Add { .. } => "add",
            Op::Remove { .. } => "remove",
            Op::Patch { .. } => "patch",
        }
    }
}

/// The metadata of one write, decided by the origin region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMeta {
    /// The write's version: a fresh HLC timestamp of the origin and the origin's name (which
    /// also names the dots the write creates).
    pub version: Version,
    /// Absolute expiry of the written record (`None`: never).
    pub expires: Option<Timestamp>,
    /// Home region of the written record (`None`: none).
    pub home: Option<String>,
    /// What the origin has issued on any key; see [`Floor`].
    pub floor: Floor,
}

/// What an origin has issued on any key: its highest dot counter (sets, mvregisters) and its
/// highest running totals (counters). A write to a key that holds nothing of the origin's — a
/// new key, or one whose tombstone was collected here — numbers its dots, or starts its totals,
/// above these, so a region still holding the collected tombstone never takes the new write
/// for one it saw deleted. The default (nothing issued) numbers from scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Floor {
    /// The highest dot counter.
    pub dot: u64,
    /// The highest running totals of a counter.
    pub count: PnEntry,
}

/// Which operations each type takes, for [`Error::OpNotSupported`].
fn hint(kind: KeyspaceType) -> &'static str {
    match kind {
        KeyspaceType::Register => "a register takes PUT and DELETE",
        KeyspaceType::MvRegister => {
            "an mvregister takes PUT (with `Meridian-Context` to resolve siblings) and DELETE"
        }
        KeyspaceType::Counter => "a counter takes POST .../incr with {\"by\": n} and DELETE",
        KeyspaceType::Set => {
            "a set takes POST .../add and .../remove with {\"members\": [...]}, PUT of a JSON \
             array of strings, and DELETE"
        }
        KeyspaceType::Map => {
            "a map takes PATCH with a JSON merge patch, PUT of a JSON object, and DELETE"
        }
    }
}

/// The delta `op` produces at its origin against `current`, the key's stored record — pass it
/// even when it is deleted or expired (`None` only when the key has no record at all): the
/// CRDT types number their writes from it, and a delta computed without it can lose against
/// the tombstone. The new state is `current.merge(&delta)` (or the delta itself when there is
/// no record); merging a delta twice, or deltas in any order, is safe.
///
/// The delta's `version`, `expires` and `home` are those of `meta`. A record expired at
/// `meta.version.ts` is reset first (as by a delete that observed it), so the write starts from
/// an empty value. Fails with [`Error::TypeMismatch`] when `current` is not of `kind`,
/// [`Error::OpNotSupported`] when `kind` does not take `op`, and [`Error::InvalidValue`] for a
/// body of the wrong shape or a counter total overflowing `u64`.
pub fn apply(
    kind: KeyspaceType,
    current: Option<&Record>,
    op: &Op,
    meta: &WriteMeta,
) -> Result<Record, Error> {
    let empty;
    let (state, expired) = match current {
        Some(r) if r.kind() != kind => {
            return Err(Error::TypeMismatch {
                expected: kind,
                found: r.kind(),
            });
        }
        Some(r) => (&r.value, r.is_expired(meta.version.ts)),
        None => {
            empty = Value::empty(kind);
            (&empty, false)
        }
    };
    let value = if expired {
        let mut reset = reset_delta(state, &meta.version);
        let mut fresh = state.clone();
        fresh.merge(&reset)?;
        reset.merge(&op_delta(&fresh, op, meta)?)?;
        reset
    } else {
        op_delta(state, op, meta)?
    };
    Ok(Record {
        value,
        version: meta.version.clone(),
        expires: meta.expires,
        home: meta.home.clone(),
    })
}

/// The write that ends an expired record of a type a later write merges into — every type but
/// `register`, whose expiry is a tombstone already: a delete of everything `record` holds,
/// stamped `(expires, "")`, after every write made before the expiry and before every write
/// made at or after it; with no expiry and `record`'s home. `None` when `record` is a register,
/// does not expire, or its version is not before its expiry (a write at or after the expiry
/// has reset it already).
///
/// Computed where `record` holds every write made anywhere before its expiry, it removes all of
/// them and nothing else: merged in any order with writes made at or after the expiry (which
/// reset what they saw first, see [`apply`]), it leaves exactly what those added — so the
/// record it leaves is empty where there are none, and can be collected as a tombstone.
pub fn expiry_reset(record: &Record) -> Option<Record> {
    let expires = record.expires?;
    if record.kind() == KeyspaceType::Register || record.version.ts >= expires {
        return None;
    }
    let version = Version {
        ts: expires,
        origin: String::new(),
    };
    Some(Record {
        value: reset_delta(&record.value, &version),
        version,
        expires: None,
        home: record.home.clone(),
    })
}

/// The delta of deleting everything `state` holds, at `version`.
fn reset_delta(state: &Value, version: &Version) -> Value {
    match state {
        Value::Register(_) => Value::Register(LwwRegister {
            value: None,
            content_type: String::new(),
            version: version.clone(),
        }),
        Value::MvRegister(r) => Value::MvRegister(r.resolve(None)),
        Value::Counter(c) => Value::Counter(c.reset_delta()),
        Value::Set(s) => Value::Set(s.clear_delta()),
        Value::Map(_) => Value::Map(LwwMap::clear_delta(version)),
    }
}

fn op_delta(state: &Value, op: &Op, meta: &WriteMeta) -> Result<Value, Error> {
    let version = &meta.version;
    let origin = version.origin.as_str();
    Ok(match (state, op) {
        (
            Value::Register(_),
            Op::Put {
                value,
                content_type,
                ..
            },
        ) => Value::Register(LwwRegister {
            value: Some(value.clone()),
            content_type: content_type.clone(),
            version: version.clone(),
        }),
        (
            Value::MvRegister(r),
            Op::Put {
                value,
                content_type,
                context,
            },
        ) => Value::MvRegister(r.put_delta(
            origin,
            value.clone(),
            content_type.clone(),
            context.as_ref(),
            meta.floor.dot,
        )?),
        (Value::MvRegister(r), Op::Delete { context }) => {
            Value::MvRegister(r.resolve(context.as_ref()))
        }
        (Value::Counter(c), Op::Incr { by }) => {
            Value::Counter(c.incr_delta(origin, *by, meta.floor.count)?)
        }
        (Value::Set(s), Op::Add { members }) => {
            Value::Set(s.add_delta(origin, members, meta.floor.dot)?)
        }
        (Value::Set(s), Op::Remove { members }) => {
            Value::Set(s.remove_delta(members.iter().map(String::as_str)))
        }
        (Value::Set(s), Op::Put { value, .. }) => {
            let members: Vec<String> =
                serde_json::from_slice(value).map_err(|e| Error::InvalidValue {
                    message: format!("a set value must be a JSON array of strings ({e})"),
                    hint: "send e.g. [\"a\",\"b\"], or change members with POST .../add and \
                           .../remove"
                        .into(),
                })?;
            let mut delta = s.clear_delta();
            delta.merge(&s.add_delta(origin, &members, meta.floor.dot)?);
            Value::Set(delta)
        }
        (Value::Map(_), Op::Patch { fields }) => Value::Map(LwwMap::patch_delta(fields, version)),
        (Value::Map(_), Op::Put { value, .. }) => {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value)
                .map_err(|e| Error::InvalidValue {
                    message: format!("a map value must be a JSON object ({e})"),
                    hint: "send e.g. {\"field\": 1}, or change single fields with PATCH".into(),
                })?;
            Value::Map(LwwMap::replace_delta(&object, version))
        }
        (
            Value::Register(_) | Value::Counter(_) | Value::Set(_) | Value::Map(_),
            Op::Delete { .. },
        ) => reset_delta(state, version),
        (state, op) => {
            let kind = state.kind();
            return Err(Error::OpNotSupported {
                op: op.name(),
                kind,
                hint: hint(kind),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(ts: u64, origin: &str) -> WriteMeta {
        WriteMeta {
            version: Version {
                ts: Timestamp(ts),
                origin: origin.into(),
            },
            expires: None,
            home: None,
            floor: Floor::default(),
        }
    }

    /// Applies `op` at the origin and returns the new state.
    fn run(kind: KeyspaceType, cur: Option<Record>, op: Op, m: &WriteMeta) -> Record {
        let delta = apply(kind, cur.as_ref(), &op, m).expect("op applies");
        assert_eq!(delta.version, m.version);
        match cur {
            Some(mut c) => {
                c.merge(&delta).expect("same kind");
                c
            }
            None => delta,
        }
    }

    fn put(body: &str, context: Option<VersionVector>) -> Op {
        Op::Put {
            value: Bytes::from(body.to_owned()),
            content_type: "application/json".into(),
            context,
        }
    }

    #[test]
    fn register_put_and_delete() {
        let r = run(KeyspaceType::Register, None, put("a", None), &meta(1, "eu"));
        assert!(r.is_live(Timestamp(1)));
        let r = run(
            KeyspaceType::Register,
            Some(r),
            Op::Delete { context: None },
            &meta(2, "eu"),
        );
        assert!(!r.is_live(Timestamp(2)));
        assert_eq!(r.version.ts, Timestamp(2));
    }

    /// `live_bytes` counts what a client put in and can read back: values, members, field
    /// names and JSON texts — not what was removed, and nothing of a counter.
    #[test]
    fn live_bytes_counts_the_readable_data() {
        let r = run(
            KeyspaceType::Register,
            None,
            put("abc", None),
            &meta(1, "eu"),
        );
        assert_eq!(r.value.live_bytes(), 3);
        let r = run(
            KeyspaceType::Register,
            Some(r),
            Op::Delete { context: None },
            &meta(2, "eu"),
        );
        assert_eq!(r.value.live_bytes(), 0);

        let k = KeyspaceType::Set;
        let members = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = run(
            k,
            None,
            Op::Add {
                members: members(&["ab", "cde"]),
            },
            &meta(1, "eu"),
        );
        assert_eq!(s.value.live_bytes(), 5);
        let s = run(
            k,
            Some(s),
            Op::Remove {
                members: members(&["ab"]),
            },
            &meta(2, "eu"),
        );
        assert_eq!(s.value.live_bytes(), 3);

        let k = KeyspaceType::Map;
        let patch = |j: serde_json::Value| Op::Patch {
            fields: j.as_object().expect("object").clone(),
        };
        let m = run(
            k,
            None,
            patch(serde_json::json!({"a": "xy", "bb": 12})),
            &meta(1, "eu"),
        );
        // `a` + `"xy"`, `bb` + `12`
        assert_eq!(m.value.live_bytes(), 1 + 4 + 2 + 2);
        let m = run(
            k,
            Some(m),
            patch(serde_json::json!({"a": null})),
            &meta(2, "eu"),
        );
        assert_eq!(m.value.live_bytes(), 4);

        let k = KeyspaceType::MvRegister;
        let a = run(k, None, put("12345", None), &meta(1, "eu"));
        let b = run(k, None, put("678", None), &meta(1, "us"));
        assert_eq!(merged(&[&a, &b]).value.live_bytes(), 8, "both siblings");

        let c = run(
            KeyspaceType::Counter,
            None,
            Op::Incr { by: 41 },
            &meta(1, "eu"),
        );
        assert_eq!(c.value.live_bytes(), 0);
    }

    /// What a reader of `r` sees, whatever its type (registers aside).
    fn visible(r: &Record) -> String {
        match &r.value {
            Value::Set(s) => s.members().collect::<Vec<_>>().join(","),
            Value::Map(m) => serde_json::Value::Object(m.to_json()).to_string(),
            Value::Counter(c) => c.value().to_string(),
            Value::MvRegister(m) => m
                .siblings()
                .map(|s| String::from_utf8_lossy(&s.value).into_owned())
                .collect::<Vec<_>>()
                .join(","),
            Value::Register(_) => unreachable!("registers are not reset"),
        }
    }

    fn merged(records: &[&Record]) -> Record {
        let mut out = records[0].clone();
        for r in &records[1..] {
            out.merge(r).expect("same kind");
        }
        out
    }

    /// The reset of an expired record, computed where every write before the expiry is held,
    /// leaves in every merge order exactly what a write after the expiry added — though that
    /// write was made in a region that had not seen one of the writes before the expiry.
    #[test]
    fn an_expiry_reset_removes_what_came_before_the_expiry_and_nothing_after() {
        let e = 100;
        for kind in [
            KeyspaceType::Set,
            KeyspaceType::Map,
            KeyspaceType::Counter,
            KeyspaceType::MvRegister,
        ] {
            let op = |i: u32| match kind {
                KeyspaceType::Set => Op::Add {
                    members: vec![format!("m{i}")],
                },
                KeyspaceType::Map => Op::Patch {
                    fields: json!({ format!("f{i}"): i })
                        .as_object()
                        .cloned()
                        .expect("object"),
                },
                KeyspaceType::Counter => Op::Incr { by: 1 << i },
                _ => put(&format!("v{i}"), None),
            };
            let until_e = |ts: u64, origin: &str| {
                let mut m = meta(ts, origin);
                m.expires = Some(Timestamp(e));
                m
            };
            let d = |cur: Option<&Record>, i: u32, m: &WriteMeta| {
                apply(kind, cur, &op(i), m).expect("op applies")
            };
            // eu writes twice before the expiry; us once, unseen by eu.
            let d1 = d(None, 1, &until_e(10, "eu"));
            let d2 = d(Some(&d1), 2, &until_e(20, "eu"));
            let d3 = d(None, 3, &until_e(30, "us"));
            // After the expiry eu writes again, still without us's write.
            let at_eu = merged(&[&d1, &d2]);
            let after = d(Some(&at_eu), 4, &meta(e + 5, "eu"));
            let everything_before = merged(&[&d1, &d2, &d3]);
            let reset = expiry_reset(&everything_before).expect("an expired record resets");
            assert_eq!(reset.version.ts, Timestamp(e), "{kind:?}");
            assert!(reset.version.origin.is_empty());
            assert_eq!(reset.expires, None);
            assert!(
                merged(&[&everything_before, &reset]).value.is_empty(),
                "{kind:?}: nothing is left without a write after the expiry"
            );
            let want = visible(&d(None, 4, &meta(e + 5, "eu")));
            let all = [&d1, &d2, &d3, &after, &reset];
            let mut first: Option<Record> = None;
            for perm in permutations(all.len()) {
                let order: Vec<&Record> = perm.iter().map(|i| all[*i]).collect();
                let got = merged(&order);
                assert_eq!(visible(&got), want, "{kind:?} in order {perm:?}");
                assert!(got.is_live(Timestamp(e + 6)));
                match &first {
                    Some(f) => assert_eq!(&got, f, "{kind:?}: merge order matters"),
                    None => first = Some(got),
                }
            }
            // Once written after its expiry, or not expiring, a record has nothing to reset.
            assert_eq!(expiry_reset(&merged(&[&everything_before, &after])), None);
            assert_eq!(expiry_reset(&d(None, 5, &meta(10, "eu"))), None);
        }
        let reg = run(KeyspaceType::Register, None, put("a", None), &{
            let mut m = meta(10, "eu");
            m.expires = Some(Timestamp(e));
            m
        });
        assert_eq!(
            expiry_reset(&reg),
            None,
            "a register's expiry is a tombstone"
        );
    }

    /// Every order of `0..n`.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn counter_incr_delete_and_expiry_reset() {
        let k = KeyspaceType::Counter;
        let r = run(k, None, Op::Incr { by: 5 }, &meta(1, "eu"));
        let r = run(k, Some(r), Op::Incr { by: i64::MIN }, &meta(2, "eu"));
        let Value::Counter(c) = &r.value else {
            panic!("counter")
        };
        assert_eq!(c.value(), 5 + i64::MIN);
        let r = run(k, Some(r), Op::Delete { context: None }, &meta(3, "eu"));
        assert!(!r.is_live(Timestamp(3)));
        let mut m = meta(4, "eu");
        m.expires = Some(Timestamp(10));
        let r = run(k, Some(r), Op::Incr { by: 2 }, &m);
        let r = run(k, Some(r), Op::Incr { by: 0 }, &meta(11, "eu"));
        let Value::Counter(c) = &r.value else {
            panic!("counter")
        };
        assert_eq!(
            c.value(),
            0,
            "expired at 10, so the write at 11 starts from zero"
        );
        assert_eq!(r.expires, None);
        let err = apply(k, Some(&r), &put("1", None), &meta(12, "eu")).expect_err("no put");
        assert!(err.to_string().contains("POST .../incr"), "{err}");
    }

    #[test]
    fn set_add_remove_replace() {
        let k = KeyspaceType::Set;
        let add = |m: &[&str]| Op::Add {
            members: m.iter().map(|s| s.to_string()).collect(),
        };
        let r = run(k, None, add(&["a", "b", "a"]), &meta(1, "eu"));
        let r = run(
            k,
            Some(r),
            Op::Remove {
                members: vec!["a".into()],
            },
            &meta(2, "eu"),
        );
        let r = run(k, Some(r), put(r#"["c","d"]"#, None), &meta(3, "eu"));
        let Value::Set(s) = &r.value else {
            panic!("set")
        };
        assert_eq!(s.members().collect::<Vec<_>>(), vec!["c", "d"]);
        let err = apply(k, Some(&r), &put(r#"{"a":1}"#, None), &meta(4, "eu")).expect_err("shape");
        assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
        let r = run(k, Some(r), Op::Delete { context: None }, &meta(5, "eu"));
        assert!(!r.is_live(Timestamp(5)));
    }

    #[test]
    fn map_patch_put_delete() {
        let k = KeyspaceType::Map;
        let patch = |v: serde_json::Value| match v {
            serde_json::Value::Object(fields) => Op::Patch { fields },
            _ => panic!("object"),
        };
        let r = run(k, None, patch(json!({"a": 1, "b": 2})), &meta(1, "eu"));
        let r = run(k, Some(r), patch(json!({"a": null})), &meta(2, "eu"));
        let Value::Map(m) = &r.value else {
            panic!("map")
        };
        assert_eq!(serde_json::Value::Object(m.to_json()), json!({"b": 2}));
        let r = run(k, Some(r), put(r#"{"c":[1]}"#, None), &meta(3, "eu"));
        let Value::Map(m) = &r.value else {
            panic!("map")
        };
        assert_eq!(serde_json::Value::Object(m.to_json()), json!({"c": [1]}));
        assert!(apply(k, Some(&r), &put("[1]", None), &meta(4, "eu")).is_err());
        let r = run(k, Some(r), Op::Delete { context: None }, &meta(5, "eu"));
        assert!(!r.is_live(Timestamp(5)));
    }

    #[test]
    fn mvregister_context_write_resolves_siblings() {
        let k = KeyspaceType::MvRegister;
        let a = run(k, None, put("a", None), &meta(1, "eu"));
        let b = run(k, Some(a.clone()), put("b", None), &meta(2, "eu"));
        let Value::MvRegister(reg) = &b.value else {
            panic!("mvregister")
        };
        assert_eq!(reg.siblings().count(), 2);
        let ctx = reg.context().clone();
        let c = run(k, Some(b), put("c", Some(ctx)), &meta(3, "eu"));
        let Value::MvRegister(reg) = &c.value else {
            panic!("mvregister")
        };
        assert_eq!(
            reg.siblings().map(|s| s.value.as_ref()).collect::<Vec<_>>(),
            vec![b"c"]
        );
        let d = run(k, Some(c), Op::Delete { context: None }, &meta(4, "eu"));
        assert!(!d.is_live(Timestamp(4)));
    }

    #[test]
    fn a_write_after_expiry_starts_from_an_empty_value() {
        let ttl = |ts: u64| WriteMeta {
            expires: Some(Timestamp(ts + 10)),
            ..meta(ts, "eu")
        };
        let later = meta(100, "us");
        let set = run(
            KeyspaceType::Set,
            None,
            Op::Add {
                members: vec!["x".into()],
            },
            &ttl(1),
        );
        let set = run(
            KeyspaceType::Set,
            Some(set),
            Op::Add {
                members: vec!["y".into()],
            },
            &later,
        );
        let Value::Set(s) = &set.value else {
            panic!("set")
        };
        assert_eq!(s.members().collect::<Vec<_>>(), vec!["y"]);
        let mv = run(KeyspaceType::MvRegister, None, put("a", None), &ttl(1));
        let mv = run(KeyspaceType::MvRegister, Some(mv), put("b", None), &later);
        let Value::MvRegister(r) = &mv.value else {
            panic!("mvregister")
        };
        assert_eq!(
            r.siblings().map(|s| s.value.as_ref()).collect::<Vec<_>>(),
            vec![b"b"]
        );
        let patch = |v: serde_json::Value| Op::Patch {
            fields: v.as_object().cloned().expect("obj"),
        };
        let map = run(KeyspaceType::Map, None, patch(json!({"a": 1})), &ttl(1));
        let map = run(KeyspaceType::Map, Some(map), patch(json!({"b": 2})), &later);
        let Value::Map(m) = &map.value else {
            panic!("map")
        };
        assert_eq!(serde_json::Value::Object(m.to_json()), json!({"b": 2}));
        assert!(map.is_live(Timestamp(100)) && map.expires.is_none());
    }

    #[test]
    fn refusals_name_the_problem() {
        let counter = run(
            KeyspaceType::Counter,
            None,
            Op::Incr { by: 1 },
            &meta(1, "eu"),
        );
        let err = apply(
            KeyspaceType::Set,
            Some(&counter),
            &Op::Incr { by: 1 },
            &meta(2, "eu"),
        )
        .expect_err("kinds differ");
        assert!(matches!(
            err,
            Error::TypeMismatch {
                expected: KeyspaceType::Set,
                found: KeyspaceType::Counter
            }
        ));
        let err = apply(
            KeyspaceType::Register,
            None,
            &Op::Incr { by: 1 },
            &meta(2, "eu"),
        )
        .expect_err("no incr on a register");
        assert_eq!(
            err.to_string(),
            "operation `incr` is not supported on a register keyspace; a register takes PUT and \
             DELETE"
        );
        for op in [
            Op::Add { members: vec![] },
            Op::Patch {
                fields: Default::default(),
            },
        ] {
            assert!(apply(KeyspaceType::MvRegister, None, &op, &meta(1, "eu")).is_err());
        }
    }
}
