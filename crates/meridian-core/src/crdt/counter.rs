//! PN-counter with observed-remove reset.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One origin's running totals: `p` sums its increments, `n` its decrements (as magnitudes).
/// Both only grow. The default is `(0, 0)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PnEntry {
    /// Sum of the origin's positive increments.
    pub p: u64,
    /// Sum of the magnitudes of the origin's negative increments.
    pub n: u64,
}

impl PnEntry {
    fn join(self, other: PnEntry) -> PnEntry {
        PnEntry {
            p: self.p.max(other.p),
            n: self.n.max(other.n),
        }
    }

    fn net(self) -> i128 {
        i128::from(self.p) - i128::from(self.n)
    }
}

/// A PN-counter whose delete is an observed reset: a delete records the entries it saw as
/// `base`, and the value counts only what was added on top of the bases, so increments
/// concurrent with a delete survive it. The default is the empty counter (value 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    entries: BTreeMap<String, PnEntry>,
    base: BTreeMap<String, PnEntry>,
}

impl PnCounter {
    /// `Σ(p - n) - Σ(base_p - base_n)`, saturating to the `i64` range.
    pub fn value(&self) -> i64 {
        let total: i128 = self.entries.values().map(|e| e.net()).sum::<i128>()
            - self.base.values().map(|e| e.net()).sum::<i128>();
        i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
    }

    /// Pointwise maximum of entries and of bases.
    pub fn merge(&mut self, other: &PnCounter) {
        max_into(&mut self.entries, &other.entries);
        max_into(&mut self.base, &other.base);
    }

    /// Whether nothing has been counted since the last observed reset: every entry equals its
    /// base (a counter that went +1 then -1 is not empty, though its value is 0).
    pub fn is_empty(&self) -> bool {
        self.entries
            .iter()
            .all(|(o, e)| self.base.get(o).copied().unwrap_or_default() == *e)
    }

    /// One origin's running totals (`(0, 0)` when it never counted).
    pub fn entry(&self, origin: &str) -> PnEntry {
        self.entries.get(origin).copied().unwrap_or_default()
    }

    /// The delta of adding `by` at `origin`: that origin's new totals, with its base (so a
    /// region that collected this key's tombstone counts only what came after the reset). When
    /// `origin` has no totals here (a new key, or one whose tombstone was collected here) they
    /// start from `floor`, the highest totals `origin` reached on any key, as both entry and
    /// base: a region still holding the old tombstone, whose entry and base for `origin` are at
    /// most that, then counts exactly `by`. Fails with [`Error::InvalidValue`] when a total
    /// would pass `u64::MAX`.
    pub(crate) fn incr_delta(
        &self,
        origin: &str,
        by: i64,
        floor: PnEntry,
    ) -> Result<PnCounter, Error> {
        let (mut e, base) = match self.entries.get(origin) {
            Some(e) => (*e, self.base.get(origin).copied().unwrap_or_default()),
            None => (floor, floor),
        };
        let total = if by >= 0 { &mut e.p } else { &mut e.n };
        *total = total
            .checked_add(by.unsigned_abs())
            .ok_or_else(|| Error::InvalidValue {
                message: format!(
                    "adding {by} would overflow the running total of region `{origin}` ({total})"
                ),
                hint: format!(
                    "each region's increments and decrements may each add up to at most {}; delete \
                 the key to reset it",
                    u64::MAX
                ),
            })?;
        let mut delta = PnCounter::default();
        if e != PnEntry::default() {
            delta.entries.insert(origin.to_owned(), e);
        }
        if base != PnEntry::default() {
            delta.base.insert(origin.to_owned(), base);
        }
        Ok(delta)
    }

    /// The delta of an observed reset: every entry seen becomes a base (the entries travel
    /// along so a replica never holds a base above its entries).
    pub(crate) fn reset_delta(&self) -> PnCounter {
        PnCounter {
            entries: self.entries.clone(),
            base: self.entries.clone(),
        }
    }
}

fn max_into(into: &mut BTreeMap<String, PnEntry>, from: &BTreeMap<String, PnEntry>) {
    for (origin, &e) in from {
        let slot = into.entry(origin.clone()).or_default();
        *slot = slot.join(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(c: &mut PnCounter, origin: &str, by: i64) {
        let d = c
            .incr_delta(origin, by, PnEntry::default())
            .expect("no overflow");
        c.merge(&d);
    }

    #[test]
    fn counts_every_increment_and_resets_only_what_it_saw() {
        let mut eu = PnCounter::default();
        let mut us = PnCounter::default();
        apply(&mut eu, "eu", 5);
        apply(&mut us, "us", -2);
        eu.merge(&us);
        assert_eq!(eu.value(), 3);
        let reset = eu.reset_delta();
        apply(&mut us, "us", 10); // concurrent with the reset
        us.merge(&reset);
        eu.merge(&reset);
        assert!(eu.is_empty());
        eu.merge(&us);
        assert_eq!((eu.value(), us.value()), (10, 10));
        assert!(!eu.is_empty());
    }

    #[test]
    fn extremes_do_not_panic() {
        let mut c = PnCounter::default();
        apply(&mut c, "a", i64::MIN);
        assert_eq!(c.value(), i64::MIN);
        let err = c
            .incr_delta("a", i64::MIN, PnEntry::default())
            .expect_err("n would be 2^64");
        assert!(err.to_string().contains("overflow"), "{err}");
        apply(&mut c, "a", 0);
        assert!(
            c.incr_delta("b", 0, PnEntry::default())
                .expect("zero is fine")
                .is_empty()
        );
        apply(&mut c, "a", i64::MAX);
        apply(&mut c, "a", i64::MAX);
        apply(&mut c, "a", 1);
        assert_eq!(c.value(), i64::MAX);
        assert!(c.incr_delta("a", 1, PnEntry::default()).is_err());
        for origin in ["b", "c"] {
            apply(&mut c, origin, i64::MAX);
        }
        assert_eq!(c.value(), i64::MAX, "saturates");
    }

    /// A counter reset everywhere and collected at `eu`, then counted again there: from the
    /// floor (the highest totals `eu` reached) a region still holding the tombstone counts
    /// exactly the new increment, and so does `eu`; from scratch the old tombstone would hide it.
    #[test]
    fn an_increment_after_a_collection_starts_from_the_floor() {
        let mut eu = PnCounter::default();
        apply(&mut eu, "eu", 50);
        apply(&mut eu, "eu", -3);
        let reset = eu.reset_delta();
        eu.merge(&reset);
        assert!(eu.is_empty());
        let tombstone = eu.clone();
        let floor = tombstone.entry("eu");
        for (floor, elsewhere_sees) in [(PnEntry::default(), 0), (floor, 7)] {
            let d = PnCounter::default()
                .incr_delta("eu", 7, floor)
                .expect("fits");
            let mut here = PnCounter::default();
            here.merge(&d);
            assert_eq!(here.value(), 7);
            let mut elsewhere = tombstone.clone();
            elsewhere.merge(&d);
            assert_eq!(elsewhere.value(), elsewhere_sees, "floor {floor:?}");
        }
    }

    /// An increment made where the reset is still held carries that origin's base, so a region
    /// that already collected the tombstone counts only the increment.
    #[test]
    fn an_increment_carries_its_origins_base() {
        let mut us = PnCounter::default();
        apply(&mut us, "us", 4);
        let reset = us.reset_delta();
        us.merge(&reset);
        let d = us.incr_delta("us", 2, PnEntry::default()).expect("fits");
        let mut collected = PnCounter::default();
        collected.merge(&d);
        assert_eq!(collected.value(), 2);
    }
}
