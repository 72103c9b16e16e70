//! Hybrid logical clock: 64-bit timestamps that follow wall time but never go backwards, and
//! that order every event a region has issued or observed. The wall clock is an argument: this
//! module never reads a clock.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Number of low bits holding the logical counter.
const LOGICAL_BITS: u32 = 16;
/// Largest representable millisecond value (48 bits, about the year 10889).
const MAX_MILLIS: u64 = u64::MAX >> LOGICAL_BITS;

/// A hybrid logical timestamp: the upper 48 bits are milliseconds since the Unix epoch, the lower
/// 16 bits a logical counter. The derived order is the order of the raw `u64`, i.e. by
/// milliseconds, then by counter. The default is [`Timestamp::ZERO`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp (epoch, counter 0); no clock ever issues it.
    pub const ZERO: Timestamp = Timestamp(0);

    /// The largest timestamp; clocks saturate here (about the year 10889).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Builds a timestamp; `millis` beyond 48 bits saturates to the largest representable value.
    pub fn from_parts(millis: u64, logical: u16) -> Timestamp {
        Timestamp((millis.min(MAX_MILLIS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Milliseconds since the Unix epoch (upper 48 bits).
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter (lower 16 bits).
    pub fn logical(self) -> u16 {
        // Truncation keeps exactly the lower 16 bits, which is the counter.
        (self.0 & u64::from(u16::MAX)) as u16
    }

    /// `(millis + ms, logical 0)`, saturating at the largest representable millisecond: the
    /// absolute expiry of a value written at `self` with a TTL of `ms`.
    pub fn saturating_add_millis(self, ms: u64) -> Timestamp {
        Timestamp::from_parts(self.millis().saturating_add(ms), 0)
    }

    /// The next timestamp: a logical counter overflow spills into the milliseconds, so the
    /// result is strictly greater unless `self` is [`Timestamp::MAX`].
    fn successor(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.millis(), self.logical())
    }
}

/// A hybrid logical clock. Every timestamp it issues is strictly greater than every timestamp
/// it issued, observed or was restored to before (until [`Timestamp::MAX`], which needs a wall
/// clock in the year 10889). Starts at [`Timestamp::ZERO`].
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_offset_ms: u64,
}

impl Hlc {
    /// A clock that rejects remote timestamps more than `max_offset_ms` ahead of the wall clock.
    pub fn new(max_offset_ms: u64) -> Hlc {
        Hlc {
            last: Timestamp::ZERO,
            max_offset_ms,
        }
    }

    /// Issues a timestamp for a local event at wall time `wall_ms`: `(wall_ms, 0)` when that is
    /// ahead of everything seen, otherwise the successor of the last timestamp (a wall clock
    /// going backwards never makes the clock go backwards).
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        self.last = self.peek(wall_ms).max(self.last.successor());
        self.last
    }

    /// Takes a remote timestamp into account and issues a timestamp strictly greater than both
    /// it and everything before. Fails with [`Error::ClockSkew`], leaving the clock unchanged,
    /// when `remote` is more than the maximum offset ahead of `wall_ms`.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<Timestamp, Error> {
        if remote.millis() > wall_ms.saturating_add(self.max_offset_ms) {
            return Err(Error::ClockSkew {
                remote_ms: remote.millis(),
                wall_ms,
                max_offset_ms: self.max_offset_ms,
            });
        }
        let seen = self.last.max(remote);
        self.last = Timestamp::from_parts(wall_ms, 0).max(seen.successor());
        Ok(self.last)
    }

    /// `max(last, (wall_ms, 0))` without advancing the clock: the "current time" for reads and
    /// expiry checks.
    pub fn peek(&self, wall_ms: u64) -> Timestamp {
        self.last.max(Timestamp::from_parts(wall_ms, 0))
    }

    /// The last timestamp issued, observed or restored ([`Timestamp::ZERO`] for a new clock).
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// After a restart: never issue a timestamp `<= floor` (e.g. the newest persisted one).
    pub fn restore(&mut self, floor: Timestamp) {
        self.last = self.last.max(floor);
    }

    /// A fresh timestamp strictly after both every earlier one and `after`, whatever the wall
    /// clock says: a write stamps itself after the version it read, so it supersedes what it
    /// saw even when that version came from a clock further ahead than `max_offset_ms` (where
    /// [`Hlc::observe`] refuses to move the clock).
    pub fn now_after(&mut self, after: Timestamp, wall_ms: u64) -> Timestamp {
        self.restore(after);
        self.now(wall_ms)
    }

    /// The configured maximum offset of remote timestamps, in milliseconds.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_saturate() {
        let t = Timestamp::from_parts(1_700_000_000_000, 7);
        assert_eq!((t.millis(), t.logical()), (1_700_000_000_000, 7));
        assert_eq!(Timestamp::from_parts(u64::MAX, 3).millis(), MAX_MILLIS);
        assert_eq!(
            t.saturating_add_millis(5),
            Timestamp::from_parts(1_700_000_000_005, 0)
        );
        assert_eq!(t.saturating_add_millis(u64::MAX).millis(), MAX_MILLIS);
    }

    #[test]
    fn now_follows_wall_and_never_repeats() {
        let mut c = Hlc::new(500);
        assert_eq!(c.now(1000), Timestamp::from_parts(1000, 0));
        assert_eq!(c.now(1000), Timestamp::from_parts(1000, 1));
        assert_eq!(c.now(900), Timestamp::from_parts(1000, 2));
        assert_eq!(c.now(1001), Timestamp::from_parts(1001, 0));
        assert_eq!(c.now(0), Timestamp::from_parts(1001, 1));
    }

    #[test]
    fn logical_overflow_spills_into_millis() {
        let mut c = Hlc::new(0);
        c.restore(Timestamp::from_parts(50, u16::MAX));
        assert_eq!(c.now(10), Timestamp::from_parts(51, 0));
    }

    #[test]
    fn observe_moves_past_remote_and_rejects_skew() {
        let mut c = Hlc::new(100);
        let t = c
            .observe(Timestamp::from_parts(1050, 9), 1000)
            .expect("within offset");
        assert_eq!(t, Timestamp::from_parts(1050, 10));
        let before = c.last();
        let err = c
            .observe(Timestamp::from_parts(1101, 0), 1000)
            .expect_err("too far ahead");
        assert!(matches!(
            err,
            Error::ClockSkew {
                remote_ms: 1101,
                wall_ms: 1000,
                max_offset_ms: 100
            }
        ));
        assert_eq!(c.last(), before);
    }

    #[test]
    fn peek_does_not_advance_and_restore_sets_floor() {
        let mut c = Hlc::new(0);
        assert_eq!(c.peek(5), Timestamp::from_parts(5, 0));
        assert_eq!(c.last(), Timestamp::ZERO);
        c.restore(Timestamp::from_parts(99, 4));
        assert_eq!(c.now(10), Timestamp::from_parts(99, 5));
        assert_eq!(Timestamp::from_parts(99, 5).to_string(), "99.5");
    }
}
