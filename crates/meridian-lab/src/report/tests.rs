//! Unit tests of the renderings on a small inline report; the realistic three-region fixture
//! lives in `tests/common/report_fixture.rs`.

use super::model::*;
use super::{html, terminal, write_all};
use crate::LabError;

fn row(name: &str, requests: u64, errors: u64, p50: f64) -> LatencyRow {
    LatencyRow {
        name: name.into(),
        requests,
        errors,
        p50_ms: p50,
        p95_ms: p50 * 2.0,
        p99_ms: p50 * 3.0,
    }
}

/// Two regions, two cities, five 1 s buckets, a kill at 2 s with one lost async write.
fn small() -> Report {
    let region = |name: &str, lat, lon| RegionInfo {
        name: name.into(),
        lat,
        lon,
        zone: None,
    };
    Report {
        scenario: "kill-eu".into(),
        seed: 7,
        started_at: "2025-01-01T00:00:00Z".into(),
        duration_s: 5.0,
        rate: 10.0,
        regions: vec![
            region("us-east-1", 38.9, -77.0),
            region("eu-west-1", 53.3, -6.3),
        ],
        cities: vec![CityInfo {
            name: "Dublin".into(),
            lat: 53.3,
            lon: -6.3,
            edge: "eu-west-1".into(),
            access_rtt_ms: 4.0,
        }],
        totals: Totals {
            requests: 50,
            ok: 46,
            errors: 4,
            pinned_refused: 0,
        },
        by_city: vec![row("Dublin", 50, 4, 12.5)],
        by_region: vec![
            row("us-east-1", 30, 0, 80.0),
            row("eu-west-1", 16, 0, 10.0),
            row("unserved", 4, 4, 0.0),
        ],
        by_operation: vec![row("get", 40, 3, 11.0)],
        timeline: (0..5)
            .map(|i| Bucket {
                t_s: f64::from(i),
                requests: 10,
                errors: if i == 2 { 4 } else { 0 },
                p50_ms: 12.0,
                p99_ms: 40.0,
            })
            .collect(),
        bucket_s: 1.0,
        faults: vec![FaultReport {
            at_s: 2.0,
            action: "kill eu-west-1".into(),
            kind: "kill".into(),
            detection_s: Some(0.9),
            rto_s: Some(1.4),
            errors: 4,
            convergence_s: None,
        }],
        rpo: Rpo {
            acknowledged: 20,
            acknowledged_sync: 5,
            reads: 40,
            async_lost: vec![LostWrite {
                keyspace: "carts".into(),
                key: "cart:9".into(),
                acked_by: "eu-west-1".into(),
                acked_at_s: 1.9,
                missing_in: vec!["us-east-1".into()],
            }],
            sync_lost: vec![],
            final_convergence_s: Some(0.5),
            converged: true,
        },
        lag: vec![LagSeries {
            from: "us-east-1".into(),
            to: "eu-west-1".into(),
            points: vec![(0.5, 70.0), (1.5, 75.0), (3.5, 900.0)],
            p50_ms: 75.0,
            p99_ms: 900.0,
            max_ms: 900.0,
            steady_p50_ms: 70.0,
            steady_p99_ms: 75.0,
        }],
        residency: Residency::default(),
        egress: Egress {
            price_per_gb: 0.02,
            links: vec![EgressLink {
                from: "us-east-1".into(),
                to: "eu-west-1".into(),
                bytes: 1_500_000,
                cost_usd: 0.00003,
            }],
            total_bytes: 1_500_000,
            total_cost_usd: 0.00003,
            monthly_cost_usd: 15.5,
        },
        dns: None,
        expectations: vec![ExpectationResult {
            name: "sync_writes_lost".into(),
            expected: "= 0".into(),
            actual: "0".into(),
            passed: true,
        }],
        passed: true,
    }
}

/// Words of `s` (split on anything but letters) equal to what Rust prints for non-finite floats.
fn non_finite_tokens(s: &str) -> Vec<&str> {
    s.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| *w == "NaN" || *w == "inf")
        .collect()
}

#[test]
fn terminal_has_every_section_and_no_escape_codes() {
    let text = terminal::render(&small());
    for needle in [
        "kill-eu",
        "PASS",
        "requests 50 · ok 46 · errors 4 (8.00%)",
        "Dublin",
        "unserved",
        "kill eu-west-1",
        "async lost 1",
        "lost carts/cart:9 acked by eu-west-1 at 1.9s, missing in us-east-1",
        "us-east-1 → eu-west-1",
        "1.50 MB",
        "$15.50",
        "✓ sync_writes_lost",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let fault = text
        .lines()
        .find(|l| l.contains("kill eu-west-1"))
        .expect("fault row");
    assert!(
        fault.ends_with('—'),
        "no convergence is shown as a dash: {fault:?}"
    );
    assert!(!text.contains('\x1b'));
    assert!(text.lines().count() <= 60, "{} lines", text.lines().count());
}

#[test]
fn terminal_columns_line_up() {
    let text = terminal::render(&small());
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("region"))
        .expect("region table");
    let widths: Vec<usize> = lines[start..start + 4]
        .iter()
        .map(|l| l.chars().count())
        .collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}\n{text}");
}

#[test]
fn terminal_colours_only_when_asked() {
    let mut report = small();
    report.passed = false;
    let text = terminal::render_with(&report, true);
    assert!(text.contains("\x1b[31mFAIL\x1b[0m"));
    assert!(terminal::render(&report).contains("FAIL"));
}

#[test]
fn html_is_self_contained_with_three_charts() {
    let page = html::render(&small());
    assert!(page.starts_with("<!DOCTYPE html>"));
    for id in ["chart-latency", "chart-lag", "chart-map"] {
        assert!(
            page.contains(&format!(r#"<svg class="chart" id="{id}""#)),
            "{id}"
        );
    }
    assert!(!page.contains("<script"));
    assert!(!page.contains("src="), "no external resources");
    assert!(!page.contains("href="), "no external resources");
    assert!(!page.contains("url("), "no external resources");
    assert!(!page.contains("<link"), "no external stylesheet");
    assert!(page.contains("kill eu-west-1"));
    assert!(page.contains("cart:9"));
    assert!(non_finite_tokens(&page).is_empty());
}

#[test]
fn html_escapes_report_text() {
    let mut report = small();
    report.scenario = "<script>alert('x')</script>".into();
    report.faults[0].action = "kill <b>".into();
    let page = html::render(&report);
    assert!(!page.contains("<script>"), "scenario not escaped");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(!page.contains("kill <b>"));
}

#[test]
fn html_of_an_empty_report_has_no_non_finite_numbers() {
    let page = html::render(&Report::default());
    assert!(
        non_finite_tokens(&page).is_empty(),
        "{:?}",
        non_finite_tokens(&page)
    );
    assert!(page.contains("FAIL"));
    assert!(page.contains("no requests were recorded"));
    assert!(page.contains("no lag probes were recorded"));
    assert!(non_finite_tokens(&terminal::render(&Report::default())).is_empty());
}

#[test]
fn html_of_degenerate_values_has_no_non_finite_numbers() {
    let mut report = small();
    report.duration_s = 0.0;
    report.bucket_s = 0.0;
    report.timeline[1].p99_ms = f64::NAN;
    report.timeline[3].p50_ms = f64::INFINITY;
    report.lag[0].points.push((f64::NAN, f64::INFINITY));
    report.lag.push(LagSeries {
        from: "eu-west-1".into(),
        to: "us-east-1".into(),
        points: vec![],
        p50_ms: f64::NAN,
        p99_ms: 0.0,
        max_ms: 0.0,
        steady_p50_ms: f64::NAN,
        steady_p99_ms: f64::INFINITY,
    });
    report.by_city[0].p99_ms = f64::NEG_INFINITY;
    report.faults[0].at_s = f64::NAN;
    report.cities[0].lat = f64::NAN;
    let page = html::render(&report);
    assert!(
        non_finite_tokens(&page).is_empty(),
        "{:?}",
        non_finite_tokens(&page)
    );
    let text = terminal::render(&report);
    assert!(non_finite_tokens(&text).is_empty(), "{text}");
}

#[test]
fn write_all_writes_three_files_and_json_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nested/run-1");
    let report = small();
    let paths = write_all(&report, &out).expect("write_all");
    assert_eq!(paths.json, out.join("report.json"));
    let json = std::fs::read_to_string(&paths.json).expect("json");
    let back: Report = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, report);
    let page = std::fs::read_to_string(&paths.html).expect("html");
    assert_eq!(page, html::render(&report));
    let text = std::fs::read_to_string(&paths.text).expect("text");
    assert_eq!(text, terminal::render(&report));
}

#[test]
fn write_all_reports_the_failing_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let err = write_all(&small(), &file.join("sub")).expect_err("parent is a file");
    let LabError::Io { what, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(what.contains("a-file"), "{what}");
}
