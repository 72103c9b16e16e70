//! The renderings of a realistic three-region report: the rows a person looks for are there, and
//! `write_all`'s JSON reads back to the same report.

#[path = "common/report_fixture.rs"]
mod report_fixture;

use meridian_lab::report::{self, Report, html, terminal};

#[test]
fn terminal_summary_has_the_expected_rows() {
    let r = report_fixture::sample();
    let text = terminal::render(&r);
    println!("{text}");
    assert!(text.lines().count() <= 64, "{} lines", text.lines().count());
    let first = text.lines().next().expect("header");
    assert!(first.contains(report_fixture::SCENARIO));
    assert!(text.lines().nth(1).expect("second line").ends_with("PASS"));
    for c in &r.cities {
        let line = text
            .lines()
            .find(|l| l.starts_with(&c.name))
            .expect("city row");
        assert!(
            line.contains("375"),
            "each city sent 375 requests: {line:?}"
        );
    }
    for name in ["us-east-1", "eu-west-1", "ap-southeast-1", "unserved"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "region row {name}"
        );
    }
    let kill = text
        .lines()
        .find(|l| l.contains("kill eu-west-1"))
        .expect("kill row");
    for cell in ["20.0s", "2.1s", "4.0s", "99", "—"] {
        assert!(kill.contains(cell), "{cell:?} in {kill:?}");
    }
    let restart = text
        .lines()
        .find(|l| l.contains("restart eu-west-1"))
        .expect("restart row");
    assert!(restart.trim_end().ends_with("3.2s"), "{restart:?}");
    assert!(text.contains("sync lost 0 · async lost 1"));
    assert!(text.contains("sessions/session:4f2a#cart acked by eu-west-1 at 19.8s"));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" → ") && l.contains(" ms"))
            .count(),
        0
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" → ") && l.contains('$'))
            .count(),
        6,
        "six egress links"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" → ") && !l.contains('$'))
            .count(),
        6,
        "six lag pairs"
    );
    assert!(text.contains("Residency: 24 canaries · 6 places searched (48.3 MB) · findings 0"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("total") && l.contains("MB"))
    );
    assert_eq!(text.matches('✓').count(), 5);
    assert!(!text.contains('✗'));
}

#[test]
fn html_page_has_the_expected_rows() {
    let r = report_fixture::sample();
    let page = html::render(&r);
    assert!(page.contains(&format!("<h1>{}</h1>", report_fixture::SCENARIO)));
    assert!(page.contains(r#"<header class="banner pass">"#));
    for c in &r.cities {
        assert!(page.contains(&format!("<td>{}</td>", c.name)), "{}", c.name);
    }
    assert!(page.contains("<code>kill eu-west-1</code>"));
    assert!(page.contains("<code>session:4f2a#cart</code>"));
    assert!(page.contains("us-east-1, ap-southeast-1"));
    assert_eq!(page.matches(r#"<tr class="pass">"#).count(), 5);
    // Six lag lines plus the p50 and p99 lines.
    let chart = |id: &str| {
        let start = page.find(&format!(r#"id="{id}""#)).expect("chart");
        let end = start + page[start..].find("</svg>").expect("svg end");
        page[start..end].to_owned()
    };
    assert_eq!(chart("chart-lag").matches("<path d=\"M").count(), 6);
    assert_eq!(chart("chart-latency").matches("<path d=\"M").count(), 2);
    // One bar per bucket with errors, and the legend's swatch.
    assert_eq!(chart("chart-latency").matches("<rect").count(), 4 + 1);
    assert_eq!(
        chart("chart-map").matches("<circle").count(),
        3 + 8 + 3 + 1,
        "regions, cities, legend dots"
    );
}

#[test]
fn json_written_by_write_all_round_trips() {
    let r = report_fixture::sample();
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = report::write_all(&r, dir.path()).expect("write_all");
    let back: Report =
        serde_json::from_slice(&std::fs::read(&paths.json).expect("read json")).expect("parse");
    assert_eq!(back, r);
    assert!(
        std::fs::read_to_string(&paths.html)
            .expect("html")
            .contains("chart-map")
    );
    assert!(
        std::fs::read_to_string(&paths.text)
            .expect("text")
            .contains("PASS")
    );
}
