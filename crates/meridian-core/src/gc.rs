//! When replicated garbage may be collected, as pure decisions over version vectors.
//!
//! An op-log entry may go once every region has applied it. A register tombstone needs more:
//! a write that was concurrent with the delete and not yet delivered somewhere would, once the
//! tombstone is gone, arrive to find nothing to lose against and bring the value back. So a
//! tombstone goes in two phases: once every region has applied the delete, note the newest
//! state any region reported (each region's report covers every write it made before it applied
//! the delete); once every region has applied all of that, no such write can still be in
//! flight anywhere, and the tombstone can go.

use crate::version::{Dot, VersionVector};

/// The pointwise minimum of `applied` over `origins`: what every one of these regions has
/// applied. Empty when `applied` is empty.
pub fn stable<'a>(
    applied: impl IntoIterator<Item = &'a VersionVector>,
    origins: &[&str],
) -> VersionVector {
    let all: Vec<&VersionVector> = applied.into_iter().collect();
    let mut out = VersionVector::default();
    if all.is_empty() {
        return out;
    }
    for origin in origins {
        let min = all.iter().map(|vv| vv.get(origin)).min().unwrap_or(0);
        if min > 0 {
            out.add(&Dot {
                origin: (*origin).to_string(),
                counter: min,
            });
        }
    }
    out
}

/// The pointwise maximum of `applied`: the newest state any of them reported.
pub fn newest<'a>(applied: impl IntoIterator<Item = &'a VersionVector>) -> VersionVector {
    let mut out = VersionVector::default();
    for vv in applied {
        out.merge(vv);
    }
    out
}

/// What to do next with a tombstone written by op `seq` of `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TombstoneStep {
    /// Not every region has applied the delete (or what phase one noted) yet.
    Wait,
    /// Phase one done: remember this snapshot and wait until every region has applied it.
    Note(VersionVector),
    /// Both phases done: the tombstone may be removed.
    Collect,
}

/// The next step for a tombstone, given what every region has applied (`stable`), the newest
/// state any region reported (`newest`), and the snapshot phase one noted, if any.
pub fn tombstone_step(
    origin: &str,
    seq: u64,
    noted: Option<&VersionVector>,
    stable: &VersionVector,
    newest: &VersionVector,
) -> TombstoneStep {
    match noted {
        None if stable.get(origin) >= seq => TombstoneStep::Note(newest.clone()),
        None => TombstoneStep::Wait,
        Some(snapshot) if stable.dominates(snapshot) => TombstoneStep::Collect,
        Some(_) => TombstoneStep::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(s: &str) -> VersionVector {
        VersionVector::parse_token(s).expect("token")
    }

    #[test]
    fn stable_is_the_pointwise_minimum_and_newest_the_maximum() {
        let a = vv("a:5,b:2");
        let b = vv("a:3,b:4,c:1");
        assert_eq!(stable([&a, &b], &["a", "b", "c"]), vv("a:3,b:2"));
        assert_eq!(newest([&a, &b]), vv("a:5,b:4,c:1"));
        assert_eq!(stable([], &["a"]), VersionVector::default());
    }

    #[test]
    fn a_tombstone_waits_for_both_phases() {
        // Not applied everywhere: wait.
        assert_eq!(
            tombstone_step("a", 5, None, &vv("a:4"), &vv("a:9")),
            TombstoneStep::Wait
        );
        // Applied everywhere: note the newest state reported.
        let step = tombstone_step("a", 5, None, &vv("a:5,b:1"), &vv("a:9,b:3"));
        assert_eq!(step, TombstoneStep::Note(vv("a:9,b:3")));
        // Until every region has applied that snapshot, a concurrent write may be in flight.
        let noted = vv("a:9,b:3");
        assert_eq!(
            tombstone_step("a", 5, Some(&noted), &vv("a:9,b:2"), &vv("")),
            TombstoneStep::Wait
        );
        assert_eq!(
            tombstone_step("a", 5, Some(&noted), &vv("a:9,b:3"), &vv("")),
            TombstoneStep::Collect
        );
    }
}
