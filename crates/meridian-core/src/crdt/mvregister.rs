//! Multi-value register: a dotted version vector set.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::version::{Dot, VersionVector};

/// One concurrent value of a multi-value register.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that produced this value; unique per register.
    pub dot: Dot,
    /// The value.
    pub value: Bytes,
    /// The content type given with the value.
    pub content_type: String,
}

/// A multi-value register (dotted version vector set): concurrent writes are all kept as
/// siblings; a write carrying the context a client read removes exactly the siblings that
/// context covers. Invariants: siblings are sorted by dot, unique, and every sibling's dot is
/// covered by the context. The default is the empty register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Repr")]
pub struct MvRegister {
    siblings: Vec<Sibling>,
    context: VersionVector,
}

#[derive(Deserialize)]
struct Repr {
    siblings: Vec<Sibling>,
    context: VersionVector,
}

impl From<Repr> for MvRegister {
    fn from(r: Repr) -> MvRegister {
        let mut context = r.context;
        for s in &r.siblings {
            context.add(&s.dot);
        }
        MvRegister {
            siblings: normalize(r.siblings.iter()),
            context,
        }
    }
}

/// Sorted by dot, one sibling per dot (the greatest, should two ever differ).
fn normalize<'a>(siblings: impl Iterator<Item = &'a Sibling>) -> Vec<Sibling> {
    let mut by_dot: BTreeMap<&Dot, &Sibling> = BTreeMap::new();
    for s in siblings {
        let slot = by_dot.entry(&s.dot).or_insert(s);
        *slot = (*slot).max(s);
    }
    by_dot.into_values().cloned().collect()
}

impl MvRegister {
    /// The current values, sorted by dot; more than one means concurrent writes.
    pub fn siblings(&self) -> impl Iterator<Item = &Sibling> {
        self.siblings.iter()
    }

    /// Every write this state has seen; hand it to clients so their next write can resolve
    /// the siblings they read.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// Keeps siblings both sides hold, plus those of each side the other has not seen.
    pub fn merge(&mut self, other: &MvRegister) {
        let has = |r: &MvRegister, d: &Dot| r.siblings.binary_search_by(|s| s.dot.cmp(d)).is_ok();
        let mine = self
            .siblings
            .iter()
            .filter(|s| has(other, &s.dot) || !other.context.contains(&s.dot));
        let theirs = other
            .siblings
            .iter()
            .filter(|s| !self.context.contains(&s.dot));
        self.siblings = normalize(mine.chain(theirs));
        self.context.merge(&other.context);
    }

    /// Whether no sibling is left (deleted or never written).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// The state after removing the siblings `seen` covers (all of them when `None`): a valid
    /// delta, since it carries this state's whole context. Dots in `seen` that this state has
    /// not seen are ignored, so a client can never drop a write it did not read.
    pub(crate) fn resolve(&self, seen: Option<&VersionVector>) -> MvRegister {
        let siblings = match seen {
            None => Vec::new(),
            Some(seen) => self
                .siblings
                .iter()
                .filter(|s| !seen.contains(&s.dot))
                .cloned()
                .collect(),
        };
        MvRegister {
            siblings,
            context: self.context.clone(),
        }
    }

    /// The delta of writing `value` at `origin`: the siblings `seen` does not cover (all when
    /// `None`) plus a new sibling with the next dot of `origin`. When this register holds no dot
    /// of `origin` (a new key, or one whose tombstone was collected here) the dot comes after
    /// `floor`, the highest dot counter `origin` issued on any key, and the context then covers
    /// every lower dot of `origin`: a region still holding the old tombstone has seen those
    /// deleted. No live sibling has one: every live dot of `origin` is in `origin`'s own state.
    pub(crate) fn put_delta(
        &self,
        origin: &str,
        value: Bytes,
        content_type: String,
        seen: Option<&VersionVector>,
        floor: u64,
    ) -> Result<MvRegister, Error> {
        let last = match self.context.get(origin) {
            0 => floor,
            mine => mine,
        };
        let dot = Dot {
            origin: origin.to_owned(),
            counter: super::next_counter(last)?,
        };
        let mut delta = match seen {
            None => self.clone(),
            Some(_) => self.resolve(seen),
        };
        delta.context.add(&dot);
        delta.siblings = normalize(delta.siblings.iter().chain([&Sibling {
            dot,
            value,
            content_type,
        }]));
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(
        r: &MvRegister,
        origin: &str,
        v: &'static str,
        seen: Option<&VersionVector>,
    ) -> MvRegister {
        r.put_delta(
            origin,
            Bytes::from_static(v.as_bytes()),
            "text/plain".into(),
            seen,
            0,
        )
        .expect("counter fits")
    }

    fn values(r: &MvRegister) -> Vec<&[u8]> {
        r.siblings().map(|s| s.value.as_ref()).collect()
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_context_write_resolves_them() {
        let mut eu = MvRegister::default();
        let mut us = MvRegister::default();
        let d1 = put(&eu, "eu", "a", None);
        eu.merge(&d1);
        let d2 = put(&us, "us", "b", None);
        us.merge(&d2);
        eu.merge(&us);
        us.merge(&eu);
        assert_eq!(values(&eu), vec![b"a".as_ref(), b"b"]);
        assert_eq!(eu, us);
        let seen = eu.context().clone();
        let d3 = put(&eu, "eu", "c", Some(&seen));
        let d4 = put(&us, "us", "d", None); // concurrent with d3, keeps "a" and "b"
        eu.merge(&d3);
        us.merge(&d4);
        eu.merge(&us);
        us.merge(&d3);
        assert_eq!(eu, us);
        assert_eq!(values(&eu), vec![b"c".as_ref(), b"d"]);
    }

    #[test]
    fn a_context_covers_only_what_this_state_saw() {
        let mut r = MvRegister::default();
        let d = put(&r, "eu", "a", None);
        r.merge(&d);
        let mut forged = VersionVector::default();
        forged.add(&Dot {
            origin: "us".into(),
            counter: 100,
        });
        forged.add(&Dot {
            origin: "eu".into(),
            counter: 1,
        });
        let d = r.resolve(Some(&forged));
        assert!(d.is_empty());
        assert_eq!(
            d.context().to_token(),
            "eu:1",
            "never ships dots it did not see"
        );
        r.merge(&d);
        assert!(r.is_empty());
        let later = put(&r, "eu", "b", None);
        assert_eq!(later.siblings().next().map(|s| s.dot.counter), Some(2));
    }

    /// A key collected at `eu` and written again: with the floor the new sibling survives a
    /// merge into the old tombstone another region still holds; from scratch it would not.
    #[test]
    fn a_write_after_a_collection_is_numbered_after_the_floor() {
        let mut eu = MvRegister::default();
        let d = put(&eu, "eu", "a", None);
        eu.merge(&d);
        let tombstone = eu.resolve(None);
        assert!(tombstone.is_empty());
        let floor = tombstone.context().get("eu");
        for (floor, survives) in [(0, false), (floor, true)] {
            let d = MvRegister::default()
                .put_delta(
                    "eu",
                    Bytes::from_static(b"b"),
                    "text/plain".into(),
                    None,
                    floor,
                )
                .expect("fits");
            let mut elsewhere = tombstone.clone();
            elsewhere.merge(&d);
            assert_eq!(!elsewhere.is_empty(), survives, "floor {floor}");
        }
    }
}
