//! Pure decisions of a link: when a chunk may leave (token bucket) and when it arrives (delay,
//! jitter, never before an earlier chunk of the same connection). Time is passed in; nothing
//! here reads a clock or sleeps.

use std::time::{Duration, Instant};

use rand::Rng;

/// How one directed pair behaves. Default: no delay, no jitter, unlimited bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// One-way delay added to every chunk.
    pub delay: Duration,
    /// Each chunk's delay varies uniformly within `delay ± jitter` (never below zero), drawn
    /// from a seeded RNG; arrival order is kept regardless.
    pub jitter: Duration,
    /// Bytes per second this direction carries across all its connections; `None` = unlimited.
    pub bandwidth: Option<u64>,
}

/// A token bucket in bytes: `rate` bytes/s, holding at most `burst` bytes of credit. It
/// schedules rather than refuses: [`TokenBucket::reserve`] may go into debt and answers when
/// the bytes may leave, so a sender is paced exactly at `rate` after the first `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Credit in bytes; negative while bytes are scheduled beyond `at`.
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` bytes refilled at `rate` bytes/s (`rate` at least 1).
    pub fn new(rate: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            rate: rate.max(1),
            burst,
            tokens: burst as f64,
            at: None,
        }
    }

    /// The rate in bytes/s.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `bytes` at `now` (earlier instants than a previous call count as that call's) and
    /// returns when they may leave: `now` when the credit covers them, else when the refill
    /// will have paid the debt.
    pub fn reserve(&mut self, now: Instant, bytes: u64) -> Instant {
        let now = match self.at {
            Some(at) if at > now => at,
            _ => now,
        };
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate as f64;
            self.tokens = (self.tokens + refill).min(self.burst as f64);
        }
        self.at = Some(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

/// Arrival times of one direction of one connection: departure + delay ± jitter, but never
/// before the previous chunk's arrival, so bytes are never reordered.
#[derive(Debug, Clone, Default)]
pub struct DelaySchedule {
    last: Option<Instant>,
}

impl DelaySchedule {
    /// When a chunk leaving at `depart` arrives, given the delay and this chunk's signed
    /// jitter offset in nanoseconds (see [`jitter_offset`]).
    pub fn arrival(&mut self, depart: Instant, delay: Duration, jitter_ns: i64) -> Instant {
        let nanos = (delay.as_nanos() as i128 + i128::from(jitter_ns)).max(0);
        let due = depart + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let due = match self.last {
            Some(last) if last > due => last,
            _ => due,
        };
        self.last = Some(due);
        due
    }

    /// Pushes the schedule to at least `at` (used after a partition heals: held chunks arrive
    /// one delay after the heal).
    pub fn not_before(&mut self, at: Instant) -> Instant {
        let due = match self.last {
            Some(last) if last > at => last,
            _ => at,
        };
        self.last = Some(due);
        due
    }
}

/// A uniform offset in `[-jitter, +jitter]` nanoseconds (0 when `jitter` is zero).
pub fn jitter_offset(rng: &mut impl Rng, jitter: Duration) -> i64 {
    let j = i64::try_from(jitter.as_nanos()).unwrap_or(i64::MAX);
    if j == 0 { 0 } else { rng.random_range(-j..=j) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_paces_at_rate_after_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, 10_000);
        assert_eq!(b.reserve(t0, 10_000), t0, "the burst leaves at once");
        // 2 MB more at the same instant: the last byte leaves 2 s later.
        let mut last = t0;
        for _ in 0..200 {
            last = b.reserve(t0, 10_000);
        }
        assert_eq!(last - t0, Duration::from_secs(2));
        // After a long idle the credit is capped at the burst.
        let later = last + Duration::from_secs(60);
        assert_eq!(b.reserve(later, 10_000), later);
        assert!(b.reserve(later, 1_000) > later);
    }

    #[test]
    fn bucket_ignores_time_going_backwards() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 0);
        let a = b.reserve(t0 + ms(500), 100);
        let c = b.reserve(t0, 100);
        assert_eq!(a, t0 + ms(600));
        assert_eq!(c, t0 + ms(700));
    }

    #[test]
    fn schedule_adds_delay_and_never_reorders() {
        let t0 = Instant::now();
        let mut s = DelaySchedule::default();
        assert_eq!(s.arrival(t0, ms(40), 0), t0 + ms(40));
        // A later chunk with negative jitter may not overtake the first.
        assert_eq!(s.arrival(t0 + ms(1), ms(40), -5_000_000), t0 + ms(40));
        assert_eq!(s.arrival(t0 + ms(10), ms(40), 2_000_000), t0 + ms(52));
        // Jitter larger than the delay clamps at zero delay.
        let mut s = DelaySchedule::default();
        assert_eq!(s.arrival(t0, ms(1), -9_000_000), t0);
        assert_eq!(s.not_before(t0 + ms(100)), t0 + ms(100));
        assert_eq!(s.arrival(t0 + ms(2), ms(1), 0), t0 + ms(100));
    }

    #[test]
    fn jitter_is_bounded_and_seeded() {
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..1000)
                .map(|_| jitter_offset(&mut rng, ms(3)))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same jitter");
        assert!(a.iter().all(|j| j.abs() <= 3_000_000));
        assert!(a.iter().any(|j| *j > 1_000_000) && a.iter().any(|j| *j < -1_000_000));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(jitter_offset(&mut rng, Duration::ZERO), 0);
    }
}
