//! Health decisions of the edge (DESIGN §3), as pure state machines: a backend's hysteresis
//! (`down_after` failures, `up_after` successes) plus passive ejection with backoff, a region's
//! health from its backends, a quorum over the views of several edges, and an EWMA of RTT.
//!
//! Time enters as `now: Duration` since an arbitrary origin chosen by the caller (a monotonic
//! clock); nothing here reads a clock.

use std::time::Duration;

/// The hysteresis state of one backend as decided by active probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Serving. Every backend starts here: health is derived from config at start.
    Up,
    /// Not serving until `up_after` consecutive successful probes.
    Down,
}

impl State {
    /// `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// Something observed about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An active probe answered with the expected status in time.
    ProbeOk,
    /// An active probe failed (connect error, timeout, unexpected status).
    ProbeFail,
    /// A real request was answered without a connect error, timeout or 5xx.
    TrafficOk,
    /// A real request failed with a connect error, timeout or 5xx.
    TrafficFail,
}

/// A change of a backend's availability, returned by [`BackendHealth::on_event`] so the caller
/// can log and count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Probes crossed `down_after`: the backend is now [`State::Down`].
    MarkedDown,
    /// Probes crossed `up_after`: the backend is now [`State::Up`].
    MarkedUp,
    /// Real traffic failed `eject_after` times in a row: the backend is skipped until `until`.
    Ejected {
        /// When the ejection ends (same origin as `now`).
        until: Duration,
    },
}

/// Thresholds of the backend state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive probe failures that mark an up backend down. At least 1 (0 is read as 1).
    pub down_after: u32,
    /// Consecutive probe successes that mark a down backend up. At least 1 (0 is read as 1).
    pub up_after: u32,
    /// Consecutive real-traffic failures that eject a backend. At least 1 (0 is read as 1).
    pub eject_after: u32,
    /// The first ejection's length; each further ejection without an intervening success
    /// doubles it.
    pub eject_base: Duration,
    /// The longest ejection.
    pub eject_max: Duration,
}

impl Thresholds {
    /// Thresholds from `[health]`: `down_after`/`up_after` as configured, ejection after
    /// `down_after` consecutive traffic failures, for `interval` doubling up to 30 × `interval`.
    pub fn from_config(h: &crate::config::Health) -> Self {
        Thresholds {
            down_after: h.down_after,
            up_after: h.up_after,
            eject_after: h.down_after,
            eject_base: h.interval,
            eject_max: h.interval * 30,
        }
    }
}

/// One backend's health: the probe hysteresis and the passive ejection.
///
/// Guarantees: starts [`State::Up`], not ejected; a change Up → Down needs `down_after`
/// consecutive [`Event::ProbeFail`]s since the last change, Down → Up needs `up_after`
/// consecutive [`Event::ProbeOk`]s; traffic events never change [`State`], they only eject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    state: State,
    probe_ok_run: u32,
    probe_fail_run: u32,
    traffic_fail_run: u32,
    ejections: u32,
    ejected_until: Option<Duration>,
}

impl Default for BackendHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendHealth {
    /// A backend as derived from config: up, not ejected.
    pub fn new() -> Self {
        BackendHealth {
            state: State::Up,
            probe_ok_run: 0,
            probe_fail_run: 0,
            traffic_fail_run: 0,
            ejections: 0,
            ejected_until: None,
        }
    }

    /// The probe-decided state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the current ejection ends, if one is in force at `now`.
    pub fn ejected_until(&self, now: Duration) -> Option<Duration> {
        self.ejected_until.filter(|&t| now < t)
    }

    /// Whether the backend may take traffic at `now`: up and not ejected.
    pub fn available(&self, now: Duration) -> bool {
        self.state == State::Up && self.ejected_until(now).is_none()
    }

    /// Applies one observation at `now` and returns the transition it caused, if any.
    pub fn on_event(&mut self, t: &Thresholds, now: Duration, event: Event) -> Option<Transition> {
        match event {
            Event::ProbeOk => {
                self.probe_fail_run = 0;
                self.probe_ok_run = self.probe_ok_run.saturating_add(1);
                if self.state == State::Down && self.probe_ok_run >= t.up_after.max(1) {
                    self.state = State::Up;
                    self.probe_ok_run = 0;
                    self.ejections = 0;
                    self.ejected_until = None;
                    self.traffic_fail_run = 0;
                    return Some(Transition::MarkedUp);
                }
                None
            }
            Event::ProbeFail => {
                self.probe_ok_run = 0;
                self.probe_fail_run = self.probe_fail_run.saturating_add(1);
                if self.state == State::Up && self.probe_fail_run >= t.down_after.max(1) {
                    self.state = State::Down;
                    self.probe_fail_run = 0;
                    return Some(Transition::MarkedDown);
                }
                None
            }
            Event::TrafficOk => {
                self.traffic_fail_run = 0;
                if self.ejected_until(now).is_none() {
                    self.ejections = 0;
                }
                None
            }
            Event::TrafficFail => {
                if self.ejected_until(now).is_some() {
                    return None;
                }
                self.traffic_fail_run = self.traffic_fail_run.saturating_add(1);
                if self.traffic_fail_run < t.eject_after.max(1) {
                    return None;
                }
                self.traffic_fail_run = 0;
                let factor = 1u32 << self.ejections.min(16);
                let length = t.eject_base.saturating_mul(factor).min(t.eject_max);
                self.ejections = self.ejections.saturating_add(1);
                let until = now.saturating_add(length);
                self.ejected_until = Some(until);
                Some(Transition::Ejected { until })
            }
        }
    }
}

/// Whether a region is up given how many of its `total` backends are available: at least
/// `min_available` (at least 1) of them. A region without backends is never up.
pub fn region_up(available: usize, total: usize, min_available: usize) -> bool {
    total > 0 && available >= min_available.max(1)
}

/// One edge's view of a region, as shared between edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Whether that edge sees the region up.
    pub up: bool,
    /// When the view was received (same origin as `now`).
    pub at: Duration,
}

/// Whether this edge treats a region as down, combining its own view with its peers'.
///
/// Views older than `max_age` at `now` are ignored (a dead peer has no vote). The region is down
/// only when this edge sees it down *and* a strict majority of the live views (this edge's
/// included) see it down. So a lone edge decides alone, and one edge whose network to a region
/// is broken does not fail the region over while most others still reach it.
pub fn quorum_down(local_up: bool, peers: &[PeerView], now: Duration, max_age: Duration) -> bool {
    if local_up {
        return false;
    }
    let live: Vec<&PeerView> = peers
        .iter()
        .filter(|p| now.saturating_sub(p.at) <= max_age)
        .collect();
    let voters = live.len() + 1;
    let down = live.iter().filter(|p| !p.up).count() + 1;
    down * 2 > voters
}

/// An exponentially weighted moving average of round-trip times, for the `latency` policy.
///
/// Guarantees: empty until the first sample; then `value = alpha × sample + (1 − alpha) × value`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    /// An empty average with smoothing factor `alpha`, clamped into 0.01..=1 (default used by
    /// the edge: 0.3).
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_finite() {
            alpha.clamp(0.01, 1.0)
        } else {
            1.0
        };
        Ewma { alpha, value: None }
    }

    /// Adds one sample.
    pub fn observe(&mut self, sample: Duration) {
        let s = sample.as_secs_f64();
        self.value = Some(match self.value {
            None => s,
            Some(v) => self.alpha * s + (1.0 - self.alpha) * v,
        });
    }

    /// The current average, `None` before any sample.
    pub fn value(&self) -> Option<Duration> {
        self.value.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn th(down: u32, up: u32) -> Thresholds {
        Thresholds {
            down_after: down,
            up_after: up,
            eject_after: 2,
            eject_base: Duration::from_secs(1),
            eject_max: Duration::from_secs(8),
        }
    }

    #[test]
    fn starts_up_and_needs_thresholds() {
        let t = th(3, 2);
        let mut b = BackendHealth::new();
        let now = Duration::ZERO;
        assert!(b.available(now));
        assert_eq!(b.on_event(&t, now, Event::ProbeFail), None);
        assert_eq!(b.on_event(&t, now, Event::ProbeFail), None);
        assert_eq!(
            b.on_event(&t, now, Event::ProbeFail),
            Some(Transition::MarkedDown)
        );
        assert!(!b.available(now));
        assert_eq!(b.on_event(&t, now, Event::ProbeOk), None);
        assert_eq!(b.on_event(&t, now, Event::ProbeFail), None);
        assert_eq!(b.on_event(&t, now, Event::ProbeOk), None);
        assert_eq!(
            b.on_event(&t, now, Event::ProbeOk),
            Some(Transition::MarkedUp)
        );
        assert!(b.available(now));
    }

    #[test]
    fn ejection_backs_off_and_expires() {
        let t = th(3, 2);
        let mut b = BackendHealth::new();
        let s = Duration::from_secs;
        assert_eq!(b.on_event(&t, s(0), Event::TrafficFail), None);
        assert_eq!(
            b.on_event(&t, s(0), Event::TrafficFail),
            Some(Transition::Ejected { until: s(1) })
        );
        assert!(!b.available(s(0)));
        assert!(b.available(s(1)));
        b.on_event(&t, s(1), Event::TrafficFail);
        assert_eq!(
            b.on_event(&t, s(1), Event::TrafficFail),
            Some(Transition::Ejected { until: s(3) })
        );
        for i in 0..10 {
            b.on_event(&t, s(100 + 10 * i), Event::TrafficFail);
            b.on_event(&t, s(100 + 10 * i), Event::TrafficFail);
        }
        assert_eq!(b.ejected_until(s(190)), Some(s(198)), "capped at eject_max");
        b.on_event(&t, s(200), Event::TrafficOk);
        b.on_event(&t, s(200), Event::TrafficFail);
        assert_eq!(
            b.on_event(&t, s(200), Event::TrafficFail),
            Some(Transition::Ejected { until: s(201) }),
            "a success resets the backoff"
        );
        assert_eq!(
            b.state(),
            State::Up,
            "traffic never changes the probe state"
        );
    }

    #[test]
    fn quorum_needs_majority_of_live_views() {
        let now = Duration::from_secs(100);
        let age = Duration::from_secs(5);
        let v = |up, at| PeerView {
            up,
            at: Duration::from_secs(at),
        };
        assert!(
            quorum_down(false, &[], now, age),
            "a lone edge decides alone"
        );
        assert!(
            !quorum_down(false, &[v(true, 99)], now, age),
            "1 of 2 is no majority"
        );
        assert!(quorum_down(false, &[v(false, 99), v(true, 99)], now, age));
        assert!(!quorum_down(false, &[v(true, 99), v(true, 98)], now, age));
        assert!(
            quorum_down(false, &[v(true, 10)], now, age),
            "stale views have no vote"
        );
        assert!(!quorum_down(true, &[v(false, 99), v(false, 99)], now, age));
    }

    #[test]
    fn ewma_smooths() {
        let mut e = Ewma::new(0.5);
        assert_eq!(e.value(), None);
        e.observe(Duration::from_millis(100));
        e.observe(Duration::from_millis(200));
        let v = e.value().unwrap().as_secs_f64();
        assert!((v - 0.150).abs() < 1e-9, "{v}");
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::ProbeOk),
            Just(Event::ProbeFail),
            Just(Event::TrafficOk),
            Just(Event::TrafficFail)
        ]
    }

    proptest! {
        /// Between two state changes there are at least `down_after` (resp. `up_after`)
        /// probe results, all of the deciding kind at the end; traffic never flips the state.
        #[test]
        fn hysteresis_never_flaps_faster_than_thresholds(
            down in 1u32..6, up in 1u32..6,
            events in proptest::collection::vec(event(), 0..300),
        ) {
            let t = th(down, up);
            let mut b = BackendHealth::new();
            let mut since_change: Vec<Event> = Vec::new();
            for (i, e) in events.iter().enumerate() {
                let before = b.state();
                let tr = b.on_event(&t, Duration::from_millis(i as u64 * 100), *e);
                let after = b.state();
                since_change.push(*e);
                if before != after {
                    let probes: Vec<&Event> = since_change
                        .iter()
                        .filter(|e| matches!(e, Event::ProbeOk | Event::ProbeFail))
                        .collect();
                    let (need, kind) = match after {
                        State::Down => (down as usize, Event::ProbeFail),
                        State::Up => (up as usize, Event::ProbeOk),
                    };
                    prop_assert!(probes.len() >= need);
                    prop_assert!(probes[probes.len() - need..].iter().all(|e| **e == kind));
                    prop_assert!(matches!(e, Event::ProbeOk | Event::ProbeFail));
                    prop_assert!(matches!(tr, Some(Transition::MarkedDown | Transition::MarkedUp)));
                    since_change.clear();
                }
            }
        }
    }
}
