//! An exact causal context: a version vector plus the dots seen beyond its contiguous prefix,
//! so deltas that arrive out of order never claim to cover dots they have not seen.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::version::{Dot, VersionVector};

/// The set of dots a replica has seen: `vv` covers each origin's contiguous prefix, `cloud`
/// holds the other dots. Always compact: no cloud dot is covered by or adjacent to `vv`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Repr")]
pub(crate) struct DotContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

#[derive(Deserialize)]
struct Repr {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl From<Repr> for DotContext {
    fn from(r: Repr) -> DotContext {
        let mut c = DotContext {
            vv: r.vv,
            cloud: r.cloud,
        };
        c.compact();
        c
    }
}

impl DotContext {
    pub(crate) fn contains(&self, dot: &Dot) -> bool {
        self.vv.contains(dot) || self.cloud.contains(dot)
    }

    pub(crate) fn insert(&mut self, dot: Dot) {
        if !self.vv.contains(&dot) {
            self.cloud.insert(dot);
            self.compact();
        }
    }

    pub(crate) fn merge(&mut self, other: &DotContext) {
        self.vv.merge(&other.vv);
        self.cloud.extend(other.cloud.iter().cloned());
        self.compact();
    }

    /// The highest counter of `origin` seen.
    pub(crate) fn max_counter(&self, origin: &str) -> u64 {
        let in_cloud = self
            .cloud
            .iter()
            .filter(|d| d.origin == origin)
            .map(|d| d.counter)
            .max();
        in_cloud.unwrap_or(0).max(self.vv.get(origin))
    }

    /// Whether every dot seen is in the contiguous prefix.
    #[cfg(test)]
    pub(crate) fn cloud_is_empty(&self) -> bool {
        self.cloud.is_empty()
    }

    /// Marks every dot of `origin` up to `counter` as seen.
    pub(crate) fn claim_through(&mut self, origin: &str, counter: u64) {
        if counter > self.vv.get(origin) {
            self.vv.add(&Dot {
                origin: origin.to_owned(),
                counter,
            });
            self.compact();
        }
    }

    /// Moves every cloud dot that extends the contiguous prefix into `vv`; drops covered ones.
    fn compact(&mut self) {
        // The cloud is sorted by (origin, counter), so one pass fills every prefix.
        for dot in std::mem::take(&mut self.cloud) {
            let have = self.vv.get(&dot.origin);
            if dot.counter == have + 1 {
                self.vv.add(&dot);
            } else if dot.counter > have {
                self.cloud.insert(dot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(origin: &str, counter: u64) -> Dot {
        Dot {
            origin: origin.into(),
            counter,
        }
    }

    #[test]
    fn out_of_order_dots_stay_exact_until_the_gap_fills() {
        let mut c = DotContext::default();
        c.insert(d("a", 3));
        assert!(c.contains(&d("a", 3)) && !c.contains(&d("a", 2)));
        assert_eq!(c.max_counter("a"), 3);
        c.insert(d("a", 1));
        let mut other = DotContext::default();
        other.insert(d("a", 2));
        c.merge(&other);
        let mut expect = DotContext::default();
        for i in 1..=3 {
            expect.insert(d("a", i));
        }
        assert_eq!(c, expect);
        assert!(c.cloud.is_empty());
    }
}
