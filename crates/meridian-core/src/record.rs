//! A stored value: one CRDT plus the last-writer-wins metadata every keyspace type carries,
//! and its versioned binary encoding.

use serde::{Deserialize, Serialize};

use crate::crdt::{LwwMap, LwwRegister, MvRegister, OrSet, PnCounter};
use crate::hlc::Timestamp;
use crate::version::Version;
use crate::{Error, KeyspaceType};

/// The format byte written in front of every encoded record by this build.
pub const FORMAT_V1: u8 = 1;

/// The value of a key: one variant per keyspace type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A `register` value.
    Register(LwwRegister),
    /// An `mvregister` value.
    MvRegister(MvRegister),
    /// A `counter` value.
    Counter(PnCounter),
    /// A `set` value.
    Set(OrSet),
    /// A `map` value.
    Map(LwwMap),
}

impl Value {
    /// The keyspace type this value belongs to.
    pub fn kind(&self) -> KeyspaceType {
        match self {
            Value::Register(_) => KeyspaceType::Register,
            Value::MvRegister(_) => KeyspaceType::MvRegister,
            Value::Counter(_) => KeyspaceType::Counter,
            Value::Set(_) => KeyspaceType::Set,
            Value::Map(_) => KeyspaceType::Map,
        }
    }

    /// Bytes of the data a client put in the live value — a register's or each sibling's
    /// value, each set member, each map field's name and JSON text; a counter holds none —
    /// which `[limits] max_value_bytes` bounds. Metadata (versions, dots, removed fields) is
    /// not counted.
    pub fn live_bytes(&self) -> usize {
        match self {
            Value::Register(r) => r.value.as_ref().map_or(0, |v| v.len()),
            Value::MvRegister(r) => r.siblings().map(|s| s.value.len()).sum(),
            Value::Counter(_) => 0,
            Value::Set(s) => s.members().map(str::len).sum(),
            Value::Map(m) => m.live_bytes(),
        }
    }

    /// The empty value of `kind` (never written; an empty register is a tombstone at
    /// `(Timestamp::ZERO, "")`, which every write beats).
    pub fn empty(kind: KeyspaceType) -> Value {
        match kind {
            KeyspaceType::Register => Value::Register(LwwRegister {
                value: None,
                content_type: String::new(),
                version: Version {
                    ts: Timestamp::ZERO,
                    origin: String::new(),
                },
            }),
            KeyspaceType::MvRegister => Value::MvRegister(MvRegister::default()),
            KeyspaceType::Counter => Value::Counter(PnCounter::default()),
            KeyspaceType::Set => Value::Set(OrSet::default()),
            KeyspaceType::Map => Value::Map(LwwMap::default()),
        }
    }

    /// Merges the CRDT of `other` into this one; [`Error::TypeMismatch`] (and no change) when
    /// the types differ.
    pub fn merge(&mut self, other: &Value) -> Result<(), Error> {
        match (self, other) {
            (Value::Register(a), Value::Register(b)) => a.merge(b),
            (Value::MvRegister(a), Value::MvRegister(b)) => a.merge(b),
            (Value::Counter(a), Value::Counter(b)) => a.merge(b),
            (Value::Set(a), Value::Set(b)) => a.merge(b),
            (Value::Map(a), Value::Map(b)) => a.merge(b),
            (a, b) => {
                return Err(Error::TypeMismatch {
                    expected: a.kind(),
                    found: b.kind(),
                });
            }
        }
        Ok(())
    }

    /// Whether the value holds nothing a reader would see (deleted or never written).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Register(r) => r.is_empty(),
            Value::MvRegister(r) => r.is_empty(),
            Value::Counter(c) => c.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::Map(m) => m.is_empty(),
        }
    }
}

/// A stored key's state: the CRDT value plus metadata merged by last writer wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The merged value.
    pub value: Value,
    /// The newest write merged into this record (maximum over merges); its ETag.
    pub version: Version,
    /// Absolute HLC expiry (`None`: never); taken from the side with the greater version.
    pub expires: Option<Timestamp>,
    /// Home region (`None`: none); taken from the side with the greater version.
    pub home: Option<String>,
}

impl Record {
    /// The keyspace type of the value.
    pub fn kind(&self) -> KeyspaceType {
        self.value.kind()
    }

    /// State-based merge: the CRDTs merge, `version` becomes the maximum, and `expires` and
    /// `home` come from the side with the greater version (equal versions: the greater
    /// `(expires, home)`, so merge stays commutative). [`Error::TypeMismatch`] and no change
    /// when the kinds differ.
    pub fn merge(&mut self, other: &Record) -> Result<(), Error> {
        self.value.merge(&other.value)?;
        if (&other.version, &other.expires, &other.home)
            > (&self.version, &self.expires, &self.home)
        {
            self.version = other.version.clone();
            self.expires = other.expires;
            self.home = other.home.clone();
        }
        Ok(())
    }

    /// Whether a reader at `now` sees the record: not expired (`expires > now`) and not empty.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.is_expired(now) && !self.value.is_empty()
    }

    /// Whether the record's expiry has passed at `now` (`expires <= now`).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// The stored form: the format byte [`FORMAT_V1`] followed by the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![FORMAT_V1])
            .expect("invariant: postcard can encode a Record (no unsized sequences) into a Vec")
    }

    /// Reads what [`Record::encode`] wrote. Fails with [`Error::Decode`] naming an unknown
    /// format byte, the postcard error, or trailing bytes; never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Record, Error> {
        let Some((&format, body)) = bytes.split_first() else {
            return Err(Error::Decode {
                message: format!("empty input; expected format byte {FORMAT_V1} and a record"),
            });
        };
        if format != FORMAT_V1 {
            return Err(Error::Decode {
                message: format!(
                    "unknown format byte {format}; this build reads format {FORMAT_V1} (was the \
                     record written by a newer version?)"
                ),
            });
        }
        crate::wire::from_postcard_exact(body, &format!("format {FORMAT_V1} record"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reg(ts: u64, origin: &str, expires: Option<u64>, home: Option<&str>) -> Record {
        let version = Version {
            ts: Timestamp(ts),
            origin: origin.into(),
        };
        Record {
            value: Value::Register(LwwRegister {
                value: Some(Bytes::from_static(b"v")),
                content_type: "text/plain".into(),
                version: version.clone(),
            }),
            version,
            expires: expires.map(Timestamp),
            home: home.map(str::to_owned),
        }
    }

    #[test]
    fn meta_follows_the_greater_version() {
        let (a, b) = (
            reg(1, "eu", Some(100), Some("eu")),
            reg(2, "us", None, None),
        );
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b).expect("same kind");
        ba.merge(&a).expect("same kind");
        assert_eq!(ab, ba);
        assert_eq!((ab.expires, ab.home), (None, None));
        assert_eq!(ab.version, b.version);
    }

    #[test]
    fn liveness_and_type_mismatch() {
        let r = reg(1, "eu", Some(10), None);
        assert!(r.is_live(Timestamp(9)) && !r.is_live(Timestamp(10)));
        let mut c = r.clone();
        c.value = Value::empty(KeyspaceType::Counter);
        let mut before = r.clone();
        let err = before.merge(&c).expect_err("kinds differ");
        assert!(matches!(
            err,
            Error::TypeMismatch {
                expected: KeyspaceType::Register,
                found: KeyspaceType::Counter
            }
        ));
        assert_eq!(before, r);
        assert!(!c.is_live(Timestamp(0)));
    }

    #[test]
    fn encoding_is_versioned_and_strict() {
        let r = reg(7, "eu", Some(9), Some("eu"));
        let bytes = r.encode();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(Record::decode(&bytes).expect("round trip"), r);
        let mut future = bytes.clone();
        future[0] = 2;
        let err = Record::decode(&future)
            .expect_err("unknown format")
            .to_string();
        assert!(err.contains("unknown format byte 2"), "{err}");
        assert!(
            Record::decode(&[])
                .expect_err("empty")
                .to_string()
                .contains("empty input")
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(
            Record::decode(&long)
                .expect_err("trailing")
                .to_string()
                .contains("1 unexpected")
        );
        let err = Record::decode(&bytes[..bytes.len() - 1])
            .expect_err("short")
            .to_string();
        assert!(err.contains("malformed"), "{err}");
    }
}
