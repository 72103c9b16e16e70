//! Properties of the hybrid logical clock under wall clocks that jump and go backwards.

use meridian_core::Error;
use meridian_core::hlc::{Hlc, Timestamp};
use proptest::prelude::*;

const START_MS: u64 = 1_700_000_000_000;
const MAX_OFFSET_MS: u64 = 500;

#[derive(Clone, Debug)]
enum Event {
    /// A local event after the wall clock moved by `skew` ms.
    Now { skew: i64 },
    /// A remote timestamp `offset` ms away from the local wall clock, with a logical counter.
    Observe {
        skew: i64,
        offset: i64,
        logical: u16,
    },
    /// Restart with a floor `ahead` ms past the last timestamp.
    Restore { ahead: u64 },
}

fn event() -> impl Strategy<Value = Event> {
    let skew = -1000i64..=1000;
    prop_oneof![
        4 => skew.clone().prop_map(|skew| Event::Now { skew }),
        3 => (skew, -2000i64..=2000, prop_oneof![Just(u16::MAX), Just(0u16), any::<u16>()])
            .prop_map(|(skew, offset, logical)| Event::Observe { skew, offset, logical }),
        1 => (0u64..=2000).prop_map(|ahead| Event::Restore { ahead }),
    ]
}

fn shift(ms: u64, by: i64) -> u64 {
    ms.saturating_add_signed(by)
}

proptest! {
    #[test]
    fn strictly_monotonic_and_rejects_skew(events in prop::collection::vec(event(), 1..200)) {
        let mut clock = Hlc::new(MAX_OFFSET_MS);
        let mut wall = START_MS;
        // The greatest timestamp issued, observed or restored so far.
        let mut high = Timestamp::ZERO;
        for e in events {
            match e {
                Event::Now { skew } => {
                    wall = shift(wall, skew);
                    let t = clock.now(wall);
                    prop_assert!(t > high, "now({wall}) = {t} <= {high}");
                    prop_assert!(t >= Timestamp::from_parts(wall, 0));
                    prop_assert!(clock.peek(wall) == t && clock.last() == t);
                    high = t;
                }
                Event::Observe { skew, offset, logical } => {
                    wall = shift(wall, skew);
                    let remote = Timestamp::from_parts(shift(wall, offset), logical);
                    let before = clock.last();
                    match clock.observe(remote, wall) {
                        Ok(t) => {
                            prop_assert!(remote.millis() <= wall + MAX_OFFSET_MS);
                            prop_assert!(t > high && t > remote, "observe gave {t}");
                            high = t;
                        }
                        Err(Error::ClockSkew { remote_ms, wall_ms, max_offset_ms }) => {
                            prop_assert!(remote.millis() > wall + MAX_OFFSET_MS);
                            prop_assert_eq!(
                                (remote_ms, wall_ms, max_offset_ms),
                                (remote.millis(), wall, MAX_OFFSET_MS)
                            );
                            prop_assert_eq!(clock.last(), before, "rejection changed the clock");
                        }
                        Err(other) => prop_assert!(false, "unexpected error {other}"),
                    }
                }
                Event::Restore { ahead } => {
                    let floor = high.saturating_add_millis(ahead).max(high);
                    clock.restore(floor);
                    prop_assert!(clock.now(wall) > floor);
                    high = clock.last();
                }
            }
        }
    }

    #[test]
    fn logical_overflow_spills_into_millis(millis in START_MS..START_MS + 10, logical: u16, k in 1u64..20) {
        let mut clock = Hlc::new(MAX_OFFSET_MS);
        let floor = Timestamp::from_parts(millis, logical);
        clock.restore(floor);
        let mut last = floor;
        // A frozen wall clock behind the floor: only the counter moves, spilling into millis.
        for _ in 0..k {
            let t = clock.now(millis - 5);
            prop_assert!(t > last);
            last = t;
        }
        prop_assert_eq!(last, Timestamp(floor.0 + k));
    }
}

proptest! {
    /// `now_after` is after both the clock's past and the given version, for any wall clock.
    #[test]
    fn now_after_supersedes_what_was_read(wall in 0u64..1u64 << 40, ahead in 0u64..100_000, earlier in 0u64..1u64 << 40) {
        let mut hlc = meridian_core::hlc::Hlc::new(1_000);
        let first = hlc.now(earlier);
        let read = meridian_core::hlc::Timestamp::from_parts(wall + ahead, 7);
        let t = hlc.now_after(read, wall);
        prop_assert!(t > read && t > first);
    }
}
