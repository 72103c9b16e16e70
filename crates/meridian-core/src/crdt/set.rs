//! Add-wins observed-remove set of strings (ORSWOT style).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::context::DotContext;
use crate::Error;
use crate::version::Dot;

/// An add-wins observed-remove set: each member carries the dots of the adds that put it
/// there, and a remove deletes only the dots it observed, so an add concurrent with a remove
/// keeps the member. Invariants: no member has an empty dot set and every dot is in the
/// context. The default is the empty set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Repr")]
pub struct OrSet {
    members: BTreeMap<String, BTreeSet<Dot>>,
    context: DotContext,
}

#[derive(Deserialize)]
struct Repr {
    members: BTreeMap<String, BTreeSet<Dot>>,
    context: DotContext,
}

impl From<Repr> for OrSet {
    fn from(r: Repr) -> OrSet {
        let mut set = OrSet {
            members: r.members,
            context: r.context,
        };
        set.members.retain(|_, dots| !dots.is_empty());
        for dot in set.members.values().flatten() {
            set.context.insert(dot.clone());
        }
        set
    }
}

impl OrSet {
    /// The members, sorted.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// Whether `member` is in the set.
    pub fn contains(&self, member: &str) -> bool {
        self.members.contains_key(member)
    }

    /// Per member: the dots both sides hold, plus those of each side the other has not seen.
    pub fn merge(&mut self, other: &OrSet) {
        let none = BTreeSet::new();
        let names: BTreeSet<&String> = self.members.keys().chain(other.members.keys()).collect();
        let mut members = BTreeMap::new();
        for name in names {
            let mine = self.members.get(name).unwrap_or(&none);
            let theirs = other.members.get(name).unwrap_or(&none);
            let dots: BTreeSet<Dot> = mine
                .iter()
                .filter(|d| theirs.contains(d) || !other.context.contains(d))
                .chain(theirs.iter().filter(|d| !self.context.contains(d)))
                .cloned()
                .collect();
            if !dots.is_empty() {
                members.insert(name.clone(), dots);
            }
        }
        self.members = members;
        self.context.merge(&other.context);
    }

    /// The highest dot counter of `origin` this set has seen.
    pub fn max_counter(&self, origin: &str) -> u64 {
        self.context.max_counter(origin)
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The delta of adding `names` at `origin`: a new dot per distinct name, replacing the dots
    /// the name had here. (Dots are never shared between members: removing one member must not
    /// cover another.) Adding nothing is the empty delta.
    ///
    /// `floor` is the highest dot counter `origin` has issued on any key. When this set holds
    /// none of `origin`'s dots (a new key, or one whose tombstone was collected here) the new
    /// dots are numbered after it and the delta claims every dot of `origin` up to it as seen:
    /// a region still holding the collected tombstone has seen dots of the old key's life
    /// removed, and must not take the new ones for them. The claim removes nothing live, for
    /// every live dot of `origin` is in `origin`'s own state.
    pub(crate) fn add_delta(
        &self,
        origin: &str,
        names: &[String],
        floor: u64,
    ) -> Result<OrSet, Error> {
        let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut delta = OrSet {
            members: BTreeMap::new(),
            context: self.observed(names.iter().copied()),
        };
        let mut counter = self.context.max_counter(origin);
        if counter == 0 && floor > 0 && !names.is_empty() {
            counter = floor;
            delta.context.claim_through(origin, floor);
        }
        for name in names {
            counter = super::next_counter(counter)?;
            let dot = Dot {
                origin: origin.to_owned(),
                counter,
            };
            delta.context.insert(dot.clone());
            delta.members.insert(name.to_owned(), BTreeSet::from([dot]));
        }
        Ok(delta)
    }

    /// The delta of removing `names`: their observed dots, as context only.
    pub(crate) fn remove_delta<'a>(&self, names: impl Iterator<Item = &'a str>) -> OrSet {
        OrSet {
            members: BTreeMap::new(),
            context: self.observed(names),
        }
    }

    /// The delta of removing every member observed here.
    pub(crate) fn clear_delta(&self) -> OrSet {
        self.remove_delta(self.members())
    }

    fn observed<'a>(&self, names: impl Iterator<Item = &'a str>) -> DotContext {
        let mut context = DotContext::default();
        for dot in names.filter_map(|n| self.members.get(n)).flatten() {
            context.insert(dot.clone());
        }
        context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(s: &mut OrSet, origin: &str, names: &[&str]) -> OrSet {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let d = s.add_delta(origin, &names, 0).expect("counter fits");
        s.merge(&d);
        d
    }

    #[test]
    fn concurrent_add_wins_over_remove() {
        let mut eu = OrSet::default();
        let d = add(&mut eu, "eu", &["x", "y"]);
        let mut us = OrSet::default();
        us.merge(&d);
        let rm = us.remove_delta(["x"].into_iter());
        us.merge(&rm);
        let re_add = add(&mut eu, "eu", &["x"]);
        us.merge(&re_add);
        eu.merge(&rm);
        assert_eq!(eu, us);
        assert_eq!(eu.members().collect::<Vec<_>>(), vec!["x", "y"]);
        let clear = eu.clear_delta();
        us.merge(&clear);
        assert!(us.is_empty() && !us.contains("x"));
    }

    #[test]
    fn out_of_order_deltas_never_drop_unseen_adds() {
        let mut eu = OrSet::default();
        let first = add(&mut eu, "eu", &["a"]);
        let second = add(&mut eu, "eu", &["b"]);
        let mut us = OrSet::default();
        us.merge(&second);
        us.merge(&first);
        assert_eq!(us.members().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(us, eu);
    }

    /// A key collected at `eu` and added to again: with the floor (the highest dot `eu` ever
    /// issued) the new add survives a merge into the old tombstone another region still holds;
    /// numbered from scratch it would be taken for the removed one.
    #[test]
    fn an_add_after_a_collection_is_numbered_after_the_floor() {
        let mut eu = OrSet::default();
        add(&mut eu, "eu", &["x", "y"]);
        let clear = eu.clear_delta();
        eu.merge(&clear);
        assert!(eu.is_empty());
        let tombstone = eu.clone();
        let floor = tombstone.max_counter("eu");

        let collected = OrSet::default();
        let names = vec!["z".to_string()];
        for (floor, survives) in [(0, false), (floor, true)] {
            let d = collected.add_delta("eu", &names, floor).expect("fits");
            let mut elsewhere = tombstone.clone();
            elsewhere.merge(&d);
            assert_eq!(elsewhere.contains("z"), survives, "floor {floor}");
            let mut here = collected.clone();
            here.merge(&d);
            assert!(here.contains("z"));
            assert!(
                here.context.cloud_is_empty(),
                "the claim keeps the context a prefix"
            );
        }
    }

    /// The floor only numbers dots of a set that holds none of the origin's; otherwise the
    /// origin's own next counter is used, and the floor claims nothing.
    #[test]
    fn a_set_holding_the_origins_dots_ignores_the_floor() {
        let mut eu = OrSet::default();
        add(&mut eu, "eu", &["x"]);
        let d = eu.add_delta("eu", &["y".to_string()], 1_000).expect("fits");
        eu.merge(&d);
        assert_eq!(eu.max_counter("eu"), 2);
        assert_eq!(eu.members().collect::<Vec<_>>(), vec!["x", "y"]);
    }
}
