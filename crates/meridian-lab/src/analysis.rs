//! Pure measurement: turns what the users and observers recorded into the report's figures.
//! No I/O here, so every definition (RTO, detection, convergence, lag) is unit-tested on
//! hand-made inputs.
//!
//! Definitions:
//! - **detection** of a kill at `t`: the first poll at or after `t` at which every edge reports
//!   the region down, minus `t`;
//! - **RTO** of a fault at `t`: among requests started between `t` and the next action (or the
//!   end), the start of the last failure plus [`RECOVERY_QUIET`] of failure-free requests must
//!   fit before the next action; RTO is that last failure's start minus `t` (0 when nothing
//!   failed). Otherwise the fault did not recover in its window: `None`. Residency refusals
//!   (correct behaviour) are not failures;
//! - **convergence** after a heal or restart at `t`: for every ordered pair of running regions,
//!   the earliest time the destination had a probe its origin acknowledged at or after `t`; the
//!   latest of those, minus `t`;
//! - **lag**: per probe, the time from its acknowledgement by the origin to its announcement on
//!   the destination's feed.

use std::collections::{BTreeMap, BTreeSet};

use crate::observe::Observations;
use crate::report::model::{Bucket, ExpectationResult, FaultReport, LagSeries, LatencyRow};
use crate::scenario::{Action, Expectations, Step};
use crate::workload::{Outcome, Record};

/// Failure-free time that must follow the last failure for a fault to count as recovered, s.
pub const RECOVERY_QUIET: f64 = 1.0;

/// An action of the timeline as it was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// When, s since load start.
    pub at_s: f64,
    /// The step.
    pub step: Step,
}

/// The `q` quantile (0..=1) of sorted values by nearest rank; 0 for none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(name: String, records: &[&Record]) -> LatencyRow {
    let mut ok: Vec<f64> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .map(|r| r.latency_ms)
        .collect();
    ok.sort_by(f64::total_cmp);
    LatencyRow {
        name,
        requests: records.len() as u64,
        errors: records
            .iter()
            .filter(|r| r.outcome == Outcome::Error)
            .count() as u64,
        p50_ms: quantile(&ok, 0.50),
        p95_ms: quantile(&ok, 0.95),
        p99_ms: quantile(&ok, 0.99),
    }
}

/// Latency rows grouped by `key`, in key order.
pub fn rows_by(records: &[Record], key: impl Fn(&Record) -> String) -> Vec<LatencyRow> {
    let mut groups: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry(key(r)).or_default().push(r);
    }
    groups.into_iter().map(|(k, v)| row(k, &v)).collect()
}

/// Requests over time in buckets of `bucket_s` covering `[0, duration_s)`.
pub fn timeline(records: &[Record], duration_s: f64, bucket_s: f64) -> Vec<Bucket> {
    let n = (duration_s / bucket_s).ceil().max(0.0) as usize;
    let mut groups: Vec<Vec<&Record>> = vec![Vec::new(); n];
    for r in records {
        let i = (r.t_s / bucket_s).floor();
        if i >= 0.0 && (i as usize) < n {
            groups[i as usize].push(r);
        }
    }
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let r = row(String::new(), g);
            Bucket {
                t_s: i as f64 * bucket_s,
                requests: r.requests,
                errors: r.errors,
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
            }
        })
        .collect()
}

/// Fault windows `[start, end)`, s: from each kill, partition or cut until the restart of its
/// region or the heal of its link plus that action's convergence (or `end_s` when it never
/// recovered). Lag of probes acknowledged inside them measures the fault, not the world.
pub fn fault_windows(applied: &[Applied], faults: &[FaultReport], end_s: f64) -> Vec<(f64, f64)> {
    let mut windows = Vec::new();
    for (i, a) in applied.iter().enumerate() {
        let ends = |later: &Action| match (&a.step.action, later) {
            (Action::Kill(r), Action::Restart(s, _)) => r == s,
            (Action::Partition(x, y), Action::Heal(Some((p, q))))
            | (Action::Cut(x, y), Action::Heal(Some((p, q)))) => {
                (x == p && y == q) || (x == q && y == p)
            }
            (Action::Partition(..) | Action::Cut(..), Action::Heal(None)) => true,
            _ => false,
        };
        if !matches!(
            a.step.action,
            Action::Kill(_) | Action::Partition(..) | Action::Cut(..)
        ) {
            continue;
        }
        let end = applied
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, later)| ends(&later.step.action))
            .map_or(end_s, |(j, later)| {
                later.at_s + faults.get(j).and_then(|f| f.convergence_s).unwrap_or(0.0)
            });
        windows.push((a.at_s, end));
    }
    windows
}

/// Lag per directed pair from the probes; the steady figures leave out probes acknowledged
/// inside `windows`.
pub fn lag_series(obs: &Observations, windows: &[(f64, f64)]) -> Vec<LagSeries> {
    let writes: BTreeMap<&str, (&str, f64)> = obs
        .writes
        .iter()
        .map(|w| (w.etag.as_str(), (w.from.as_str(), w.acked_s)))
        .collect();
    let mut pairs: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for s in &obs.seen {
        if let Some((from, acked)) = writes.get(s.etag.as_str())
            && *from != s.at
        {
            let lag_ms = ((s.seen_s - acked) * 1000.0).max(0.0);
            pairs
                .entry((from.to_string(), s.at.clone()))
                .or_default()
                .push((*acked, lag_ms));
        }
    }
    pairs
        .into_iter()
        .map(|((from, to), mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut lags: Vec<f64> = points.iter().map(|p| p.1).collect();
            lags.sort_by(f64::total_cmp);
            let mut steady: Vec<f64> = points
                .iter()
                .filter(|(t, _)| !windows.iter().any(|(a, b)| t >= a && t < b))
                .map(|p| p.1)
                .collect();
            steady.sort_by(f64::total_cmp);
            LagSeries {
                from,
                to,
                p50_ms: quantile(&lags, 0.5),
                p99_ms: quantile(&lags, 0.99),
                max_ms: lags.last().copied().unwrap_or(0.0),
                steady_p50_ms: quantile(&steady, 0.5),
                steady_p99_ms: quantile(&steady, 0.99),
                points,
            }
        })
        .collect()
}

/// Seconds after `t` until every ordered pair of `running` regions had a probe acknowledged at
/// or after `t`; `None` if some pair never did.
pub fn convergence_after(obs: &Observations, t: f64, running: &[String]) -> Option<f64> {
    let writes: BTreeMap<&str, (&str, f64)> = obs
        .writes
        .iter()
        .map(|w| (w.etag.as_str(), (w.from.as_str(), w.acked_s)))
        .collect();
    let mut first: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for s in &obs.seen {
        if let Some((from, acked)) = writes.get(s.etag.as_str())
            && *acked >= t
        {
            let e = first.entry((from, s.at.as_str())).or_insert(f64::INFINITY);
            *e = e.min(s.seen_s);
        }
    }
    let mut worst: f64 = 0.0;
    for a in running {
        for b in running {
            if a != b {
                let seen = first.get(&(a.as_str(), b.as_str()))?;
                worst = worst.max(seen - t);
            }
        }
    }
    Some(worst.max(0.0))
}

/// Seconds after `t` until every edge reported `region` down; `None` if they never all did.
pub fn detection(obs: &Observations, region: &str, t: f64) -> Option<f64> {
    let edges: BTreeSet<&str> = obs.views.iter().map(|v| v.edge.as_str()).collect();
    let mut latest: BTreeMap<&str, bool> = BTreeMap::new();
    let mut views: Vec<_> = obs
        .views
        .iter()
        .filter(|v| v.region == region && v.t_s >= t)
        .collect();
    views.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    for v in views {
        latest.insert(v.edge.as_str(), v.up);
        if latest.len() == edges.len() && latest.values().all(|up| !up) {
            return Some(v.t_s - t);
        }
    }
    None
}

/// RTO of a fault at `t` whose window ends at `end`, and the failures in the window.
pub fn rto(records: &[Record], t: f64, end: f64) -> (Option<f64>, u64) {
    let failures: Vec<f64> = records
        .iter()
        .filter(|r| r.t_s >= t && r.t_s < end && r.outcome == Outcome::Error)
        .map(|r| r.t_s)
        .collect();
    let Some(last) = failures.iter().copied().reduce(f64::max) else {
        return (Some(0.0), 0);
    };
    let recovered = last + RECOVERY_QUIET <= end;
    (recovered.then_some(last - t), failures.len() as u64)
}

/// The regions killed and not restarted just after the actions up to and including `upto`.
fn dead_after(applied: &[Applied], upto: usize) -> BTreeSet<String> {
    let mut dead = BTreeSet::new();
    for a in &applied[..=upto] {
        match &a.step.action {
            Action::Kill(r) => {
                dead.insert(r.clone());
            }
            Action::Restart(r, _) => {
                dead.remove(r);
            }
            _ => {}
        }
    }
    dead
}

/// The report of every applied action.
pub fn faults(
    applied: &[Applied],
    records: &[Record],
    obs: &Observations,
    regions: &[String],
    end_s: f64,
) -> Vec<FaultReport> {
    applied
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let window_end = applied.get(i + 1).map_or(end_s, |n| n.at_s);
            let (rto_s, errors) = rto(records, a.at_s, window_end);
            let breaks = matches!(
                a.step.action,
                Action::Kill(_)
                    | Action::Partition(..)
                    | Action::Cut(..)
                    | Action::Latency(..)
                    | Action::Drain(_)
                    | Action::Weight(..)
            );
            let detection_s = match &a.step.action {
                Action::Kill(r) => detection(obs, r, a.at_s),
                _ => None,
            };
            let convergence_s = match a.step.action {
                Action::Heal(_) | Action::Restart(..) => {
                    let dead = dead_after(applied, i);
                    let running: Vec<String> = regions
                        .iter()
                        .filter(|r| !dead.contains(*r))
                        .cloned()
                        .collect();
                    convergence_after(obs, a.at_s, &running)
                }
                _ => None,
            };
            FaultReport {
                at_s: a.at_s,
                action: a.step.text.clone(),
                kind: a.step.action.kind().to_string(),
                detection_s,
                rto_s: if breaks { rto_s } else { None },
                errors,
                convergence_s,
            }
        })
        .collect()
}

/// The measured figures expectations are checked against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Acknowledged sync writes lost.
    pub sync_lost: u64,
    /// Acknowledged async writes lost.
    pub async_lost: u64,
    /// Residency findings.
    pub residency_findings: u64,
    /// Whether every region converged at the end.
    pub converged: bool,
    /// Failed requests / requests.
    pub error_rate: f64,
}

/// Checks each expectation; absent ones are not listed.
pub fn check(
    expect: &Expectations,
    m: &Measured,
    faults: &[FaultReport],
) -> Vec<ExpectationResult> {
    let mut out = Vec::new();
    let mut at_most = |name: &str, limit: u64, actual: u64| {
        out.push(ExpectationResult {
            name: name.into(),
            expected: format!("≤ {limit}"),
            actual: actual.to_string(),
            passed: actual <= limit,
        });
    };
    if let Some(l) = expect.sync_writes_lost {
        at_most("sync_writes_lost", l, m.sync_lost);
    }
    if let Some(l) = expect.async_writes_lost {
        at_most("async_writes_lost", l, m.async_lost);
    }
    if let Some(l) = expect.residency_findings {
        at_most("residency_findings", l, m.residency_findings);
    }
    let secs = |v: Option<f64>| v.map_or("never".to_string(), |s| format!("{s:.2}s"));
    let mut worst = |name: &str, limit: std::time::Duration, values: Vec<(String, Option<f64>)>| {
        let limit_s = limit.as_secs_f64();
        let bad = values
            .iter()
            .find(|(_, v)| v.is_none_or(|v| v > limit_s))
            .cloned();
        let max = values
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        out.push(ExpectationResult {
            name: name.into(),
            expected: format!("≤ {limit_s}s"),
            actual: match &bad {
                Some((action, v)) => format!("{} after `{action}`", secs(*v)),
                None if values.is_empty() => "no such action".into(),
                None => format!("max {}", secs(max)),
            },
            passed: bad.is_none(),
        });
    };
    if let Some(l) = expect.rto_max {
        let v = faults
            .iter()
            .filter(|f| matches!(f.kind.as_str(), "kill" | "partition" | "cut"))
            .map(|f| (f.action.clone(), f.rto_s))
            .collect();
        worst("rto_max", l, v);
    }
    if let Some(l) = expect.detection_max {
        let v = faults
            .iter()
            .filter(|f| f.kind == "kill")
            .map(|f| (f.action.clone(), f.detection_s))
            .collect();
        worst("detection_max", l, v);
    }
    if let Some(l) = expect.convergence_max {
        let v = faults
            .iter()
            .filter(|f| matches!(f.kind.as_str(), "heal" | "restart"))
            .map(|f| (f.action.clone(), f.convergence_s))
            .collect();
        worst("convergence_max", l, v);
    }
    if let Some(want) = expect.converged {
        out.push(ExpectationResult {
            name: "converged".into(),
            expected: want.to_string(),
            actual: m.converged.to_string(),
            passed: m.converged == want,
        });
    }
    if let Some(l) = expect.error_rate_max {
        out.push(ExpectationResult {
            name: "error_rate_max".into(),
            expected: format!("≤ {:.2}%", l * 100.0),
            actual: format!("{:.2}%", m.error_rate * 100.0),
            passed: m.error_rate <= l,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{EdgeView, ProbeSeen, ProbeWrite};
    use crate::scenario::Operation;
    use std::time::Duration;

    fn rec(t_s: f64, outcome: Outcome, latency_ms: f64) -> Record {
        Record {
            t_s,
            city: 0,
            op: Operation::ConversationRead,
            status: if outcome == Outcome::Ok { 200 } else { 502 },
            latency_ms,
            region: Some("us-east-1".into()),
            entry: "us-east-1".into(),
            outcome,
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn rto_is_the_last_failure_if_quiet_follows() {
        let mut rs: Vec<Record> = (0..100)
            .map(|i| rec(i as f64 * 0.1, Outcome::Ok, 5.0))
            .collect();
        rs[22].outcome = Outcome::Error; // 2.2 s
        rs[35].outcome = Outcome::Error; // 3.5 s
        rs[40].outcome = Outcome::PinnedRefused; // not a failure
        let (rto_s, errors) = rto(&rs, 2.0, 10.0);
        assert!((rto_s.expect("recovered") - 1.5).abs() < 1e-9);
        assert_eq!(errors, 2);
        assert_eq!(rto(&rs, 5.0, 10.0), (Some(0.0), 0));
        // a failure right before the window's end: not recovered within it
        assert_eq!(rto(&rs, 2.0, 4.0).0, None);
    }

    fn obs() -> Observations {
        let w = |from: &str, etag: &str, acked_s: f64| ProbeWrite {
            from: from.into(),
            etag: etag.into(),
            acked_s,
        };
        let s = |at: &str, etag: &str, seen_s: f64| ProbeSeen {
            at: at.into(),
            etag: etag.into(),
            seen_s,
        };
        Observations {
            writes: vec![
                w("a", "a1", 1.0),
                w("a", "a2", 2.0),
                w("b", "b1", 1.0),
                w("b", "b2", 2.1),
            ],
            seen: vec![
                s("b", "a1", 1.05),
                s("b", "a2", 4.0),
                s("a", "b1", 1.04),
                s("a", "b2", 2.15),
            ],
            views: Vec::new(),
        }
    }

    #[test]
    fn lag_joins_probes_by_version() {
        let series = lag_series(&obs(), &[(1.5, 3.0)]);
        assert_eq!(series.len(), 2);
        let ab = &series[0];
        assert_eq!((ab.from.as_str(), ab.to.as_str()), ("a", "b"));
        assert_eq!(ab.points.len(), 2);
        assert!((ab.points[0].1 - 50.0).abs() < 1e-6);
        assert!((ab.max_ms - 2000.0).abs() < 1e-6);
        // the 2 s probe was acknowledged inside the fault window: not steady
        assert!((ab.steady_p99_ms - 50.0).abs() < 1e-6);
    }

    #[test]
    fn convergence_waits_for_the_slowest_pair() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let c = convergence_after(&obs(), 1.5, &regions).expect("converged");
        assert!((c - 2.5).abs() < 1e-9, "{c}");
        assert_eq!(convergence_after(&obs(), 3.0, &regions), None);
        assert_eq!(convergence_after(&obs(), 3.0, &regions[..1]), Some(0.0));
    }

    #[test]
    fn detection_needs_every_edge() {
        let v = |t_s: f64, edge: &str, up: bool| EdgeView {
            t_s,
            edge: edge.into(),
            region: "r".into(),
            up,
        };
        let o = Observations {
            views: vec![
                v(0.0, "e1", true),
                v(0.0, "e2", true),
                v(1.2, "e1", false),
                v(1.4, "e2", true),
                v(1.6, "e2", false),
            ],
            ..Observations::default()
        };
        assert!((detection(&o, "r", 1.0).expect("detected") - 0.6).abs() < 1e-9);
        assert_eq!(detection(&o, "other", 1.0), None);
    }

    #[test]
    fn faults_report_rto_for_breaking_actions_and_convergence_for_heals() {
        let step = |text: &str| Step {
            at: Duration::ZERO,
            action: Action::parse(text, &["a".to_string(), "b".to_string()]).expect("action"),
            text: text.into(),
        };
        let applied = vec![
            Applied {
                at_s: 1.5,
                step: step("partition a b"),
            },
            Applied {
                at_s: 1.9,
                step: step("heal"),
            },
        ];
        let rs: Vec<Record> = (0..40)
            .map(|i| rec(i as f64 * 0.1, Outcome::Ok, 5.0))
            .collect();
        let f = faults(
            &applied,
            &rs,
            &obs(),
            &["a".to_string(), "b".to_string()],
            4.0,
        );
        assert_eq!(f[0].rto_s, Some(0.0));
        assert_eq!(f[0].convergence_s, None);
        assert_eq!(f[1].rto_s, None);
        let c = f[1].convergence_s.expect("converged");
        assert!((c - 2.1).abs() < 1e-9, "{c}");
    }

    #[test]
    fn fault_windows_run_until_the_recovery_converged() {
        let regions = ["a".to_string(), "b".to_string(), "c".to_string()];
        let step = |text: &str| Step {
            at: Duration::ZERO,
            action: Action::parse(text, &regions).expect("action"),
            text: text.into(),
        };
        let applied = vec![
            Applied {
                at_s: 1.0,
                step: step("kill a"),
            },
            Applied {
                at_s: 2.0,
                step: step("partition b c"),
            },
            Applied {
                at_s: 4.0,
                step: step("restart a"),
            },
            Applied {
                at_s: 6.0,
                step: step("heal"),
            },
            Applied {
                at_s: 7.0,
                step: step("cut a b"),
            },
        ];
        let mut f = faults(&applied, &[], &Observations::default(), &regions, 9.0);
        f[2].convergence_s = Some(0.5);
        f[3].convergence_s = Some(0.25);
        let w = fault_windows(&applied, &f, 9.0);
        assert_eq!(w, vec![(1.0, 4.5), (2.0, 6.25), (7.0, 9.0)]);
    }

    #[test]
    fn expectations_pass_and_fail() {
        let expect = Expectations {
            sync_writes_lost: Some(0),
            rto_max: Some(Duration::from_secs(10)),
            converged: Some(true),
            ..Expectations::default()
        };
        let fault = |rto_s| FaultReport {
            at_s: 1.0,
            action: "kill a".into(),
            kind: "kill".into(),
            detection_s: Some(1.0),
            rto_s,
            errors: 3,
            convergence_s: None,
        };
        let m = Measured {
            converged: true,
            ..Measured::default()
        };
        let r = check(&expect, &m, &[fault(Some(3.0))]);
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|e| e.passed), "{r:?}");
        let r = check(
            &expect,
            &Measured {
                sync_lost: 1,
                ..m.clone()
            },
            &[fault(None)],
        );
        assert!(!r[0].passed);
        assert!(!r[1].passed);
        assert!(r[1].actual.contains("never"), "{}", r[1].actual);
    }
}
