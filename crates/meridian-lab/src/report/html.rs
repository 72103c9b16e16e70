//! The report as one self-contained HTML page for a browser.

use std::fmt::Write as _;

use super::charts;
use super::format::{self, NONE};
use super::model::{LatencyRow, LostWrite, Report};
use super::svg::escape;

/// Lost writes listed per table; the rest are counted.
const MAX_LOST_LISTED: usize = 100;

/// Renders `report` as one HTML5 document that needs nothing else: inline CSS, no scripts, no
/// external resources. Every text taken from the report is HTML-escaped, and no number in it is
/// `NaN` or `inf`, whatever the report holds (empty series and zero durations included).
///
/// The page has a PASS/FAIL banner, the run's summary, three inline SVG charts with
/// `class="chart"` — `#chart-latency` (p50/p99 latency and errors per bucket over time),
/// `#chart-lag` (replication lag per pair over time), both with the timeline's actions marked,
/// and `#chart-map` (regions, cities and egress on a world map) — then the tables: latency by
/// city, region and operation, actions, recovery point, lag, residency, egress and expectations.
pub fn render(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{verdict} · {} · Meridian lab report</title>
<style>{CSS}</style></head><body><main>
"#,
        escape(&report.scenario)
    );
    header(&mut h, report);
    section(
        &mut h,
        "Latency and errors over time",
        &charts::latency(report),
    );
    section(&mut h, "Replication lag", &charts::lag(report));
    section(&mut h, "Regions, cities and egress", &charts::map(report));
    latency_tables(&mut h, report);
    faults(&mut h, report);
    rpo(&mut h, report);
    lag_table(&mut h, report);
    dns(&mut h, report);
    residency(&mut h, report);
    egress(&mut h, report);
    expectations(&mut h, report);
    h.push_str("</main></body></html>\n");
    h
}

fn header(h: &mut String, r: &Report) {
    let (class, verdict) = if r.passed {
        ("pass", "PASS")
    } else {
        ("fail", "FAIL")
    };
    let failed = r.expectations.iter().filter(|e| !e.passed).count();
    let detail = if r.expectations.is_empty() {
        "no expectations".to_owned()
    } else {
        format!(
            "{} of {} expectations held",
            r.expectations.len() - failed,
            r.expectations.len()
        )
    };
    let _ = write!(
        h,
        r#"<header class="banner {class}"><div><div class="kicker">Meridian lab report</div><h1>{}</h1>
<div class="meta">started {} · seed {} · {} of load at {} req/s</div></div>
<div class="verdict"><span>{verdict}</span><small>{}</small></div></header>
"#,
        escape(&r.scenario),
        escape(&r.started_at),
        r.seed,
        escape(&format::secs(r.duration_s)),
        escape(&format::rate(r.rate)),
        escape(&detail),
    );
    let t = &r.totals;
    let lost_sync = r.rpo.sync_lost.len();
    let cards = [
        ("requests", t.requests.to_string(), ""),
        ("ok", t.ok.to_string(), ""),
        (
            "errors",
            format!("{} ({})", t.errors, format::percent(t.errors, t.requests)),
            "",
        ),
        ("pinned refused", t.pinned_refused.to_string(), ""),
        ("acknowledged writes", r.rpo.acknowledged.to_string(), ""),
        (
            "sync lost",
            lost_sync.to_string(),
            if lost_sync > 0 { "bad" } else { "good" },
        ),
        ("async lost", r.rpo.async_lost.len().to_string(), ""),
        (
            "egress",
            format!(
                "{} · {}",
                format::bytes(r.egress.total_bytes),
                format::usd(r.egress.total_cost_usd)
            ),
            "",
        ),
    ];
    h.push_str(r#"<section class="cards">"#);
    for (label, value, class) in cards {
        let _ = write!(
            h,
            r#"<div class="card {class}"><div class="label">{}</div><div class="value">{}</div></div>"#,
            escape(label),
            escape(&value)
        );
    }
    h.push_str("</section>\n");
}

fn section(h: &mut String, title: &str, body: &str) {
    let _ = writeln!(h, "<section><h2>{}</h2>{body}</section>", escape(title));
}

/// A table: `head` names the columns (a leading `#` marks a numeric, right-aligned one), each row
/// holds already-escaped cell HTML and a row class.
fn table(h: &mut String, head: &[&str], rows: &[(String, Vec<String>)]) {
    h.push_str("<table><thead><tr>");
    for c in head {
        let (class, name) = match c.strip_prefix('#') {
            Some(n) => (r#" class="num""#, n),
            None => ("", *c),
        };
        let _ = write!(h, "<th{class}>{}</th>", escape(name));
    }
    h.push_str("</tr></thead><tbody>");
    for (row_class, cells) in rows {
        let _ = write!(h, r#"<tr class="{}">"#, escape(row_class));
        for (c, cell) in head.iter().zip(cells) {
            let class = if c.starts_with('#') {
                r#" class="num""#
            } else {
                ""
            };
            let _ = write!(h, "<td{class}>{cell}</td>");
        }
        h.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            h,
            r#"<tr><td colspan="{}" class="none">none</td></tr>"#,
            head.len()
        );
    }
    h.push_str("</tbody></table>\n");
}

fn swatch(color: &str) -> String {
    format!(
        r#"<span class="swatch" style="background:{}"></span>"#,
        escape(color)
    )
}

fn latency_cells(row: &LatencyRow) -> Vec<String> {
    vec![
        row.requests.to_string(),
        row.errors.to_string(),
        format::percent(row.errors, row.requests),
        escape(&format::ms(row.p50_ms)),
        escape(&format::ms(row.p95_ms)),
        escape(&format::ms(row.p99_ms)),
    ]
}

fn err_class(row: &LatencyRow) -> String {
    if row.errors > 0 {
        "warn".to_owned()
    } else {
        String::new()
    }
}

fn latency_tables(h: &mut String, r: &Report) {
    const STATS: [&str; 6] = [
        "#requests",
        "#errors",
        "#error rate",
        "#p50 ms",
        "#p95 ms",
        "#p99 ms",
    ];
    h.push_str("<section><h2>Latency by city</h2>");
    let rows: Vec<_> = r
        .by_city
        .iter()
        .map(|row| {
            let city = r.cities.iter().find(|c| c.name == row.name);
            let edge = city.map_or_else(
                || NONE.to_owned(),
                |c| {
                    format!(
                        "{}{}",
                        swatch(charts::region_color(r, &c.edge)),
                        escape(&c.edge)
                    )
                },
            );
            let rtt =
                city.map_or_else(|| NONE.to_owned(), |c| escape(&format::ms(c.access_rtt_ms)));
            let mut cells = vec![escape(&row.name), edge, rtt];
            cells.extend(latency_cells(row));
            (err_class(row), cells)
        })
        .collect();
    let head: Vec<&str> = ["city", "edge", "#access RTT ms"]
        .into_iter()
        .chain(STATS)
        .collect();
    table(h, &head, &rows);
    h.push_str("</section>\n<section><h2>Latency by serving region</h2>");
    let rows: Vec<_> = r
        .by_region
        .iter()
        .map(|row| {
            let zone = r
                .regions
                .iter()
                .find(|g| g.name == row.name)
                .and_then(|g| g.zone.as_deref())
                .map_or_else(|| NONE.to_owned(), escape);
            let name = format!(
                "{}{}",
                swatch(charts::region_color(r, &row.name)),
                escape(&row.name)
            );
            let mut cells = vec![name, zone];
            cells.extend(latency_cells(row));
            (err_class(row), cells)
        })
        .collect();
    let head: Vec<&str> = ["region", "zone"].into_iter().chain(STATS).collect();
    table(h, &head, &rows);
    h.push_str("</section>\n<section><h2>Latency by operation</h2>");
    let rows: Vec<_> = r
        .by_operation
        .iter()
        .map(|row| {
            let mut cells = vec![escape(&row.name)];
            cells.extend(latency_cells(row));
            (err_class(row), cells)
        })
        .collect();
    let head: Vec<&str> = ["operation"].into_iter().chain(STATS).collect();
    table(h, &head, &rows);
    h.push_str("</section>\n");
}

fn faults(h: &mut String, r: &Report) {
    h.push_str("<section><h2>Timeline actions</h2>");
    let rows: Vec<_> = r
        .faults
        .iter()
        .map(|f| {
            let cells = vec![
                escape(&format::secs(f.at_s)),
                format!("<code>{}</code>", escape(&f.action)),
                escape(&f.kind),
                escape(&format::opt_secs(f.detection_s)),
                escape(&format::opt_secs(f.rto_s)),
                f.errors.to_string(),
                escape(&format::opt_secs(f.convergence_s)),
            ];
            (String::new(), cells)
        })
        .collect();
    let head = [
        "#at",
        "action",
        "kind",
        "#detection",
        "#RTO",
        "#errors",
        "#convergence",
    ];
    table(h, &head, &rows);
    h.push_str(
        r#"<p class="note">Detection: until every edge marked the region down. RTO: until requests succeeded again at the normal rate. Convergence: until every write acknowledged before it was visible everywhere. — means it did not happen (or does not apply).</p></section>
"#,
    );
}

fn rpo(h: &mut String, r: &Report) {
    let p = &r.rpo;
    let converged = if p.converged {
        format!(
            "yes, {} after the last heal",
            format::opt_secs(p.final_convergence_s)
        )
    } else {
        "no".to_owned()
    };
    let _ = write!(
        h,
        r#"<section><h2>Recovery point</h2><dl class="facts">
<dt>acknowledged writes</dt><dd>{}</dd><dt>of which sync</dt><dd>{}</dd><dt>read-backs</dt><dd>{}</dd>
<dt>sync lost</dt><dd class="{}">{}</dd><dt>async lost</dt><dd>{}</dd><dt>converged</dt><dd>{}</dd></dl>
"#,
        p.acknowledged,
        p.acknowledged_sync,
        p.reads,
        if p.sync_lost.is_empty() {
            "good"
        } else {
            "bad"
        },
        p.sync_lost.len(),
        p.async_lost.len(),
        escape(&converged),
    );
    lost_table(h, "Sync writes lost (must be none)", &p.sync_lost, "bad");
    lost_table(h, "Async writes lost", &p.async_lost, "warn");
    h.push_str("</section>\n");
}

fn lost_table(h: &mut String, title: &str, lost: &[LostWrite], class: &str) {
    let _ = write!(h, "<h3>{}</h3>", escape(title));
    let rows: Vec<_> = lost
        .iter()
        .take(MAX_LOST_LISTED)
        .map(|w| {
            let cells = vec![
                escape(&w.keyspace),
                format!("<code>{}</code>", escape(&w.key)),
                escape(&w.acked_by),
                escape(&format::secs(w.acked_at_s)),
                escape(&w.missing_in.join(", ")),
            ];
            (class.to_owned(), cells)
        })
        .collect();
    table(
        h,
        &["keyspace", "key", "acknowledged by", "#at", "missing in"],
        &rows,
    );
    if lost.len() > MAX_LOST_LISTED {
        let _ = write!(
            h,
            r#"<p class="note">… and {} more.</p>"#,
            lost.len() - MAX_LOST_LISTED
        );
    }
}

fn lag_table(h: &mut String, r: &Report) {
    h.push_str("<section><h2>Replication lag per pair</h2>");
    let rows: Vec<_> = r
        .lag
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let cells = vec![
                format!(
                    "{}{} → {}",
                    swatch(charts::lag_color(i)),
                    escape(&s.from),
                    escape(&s.to)
                ),
                s.points.len().to_string(),
                escape(&format::ms(s.steady_p50_ms)),
                escape(&format::ms(s.steady_p99_ms)),
                escape(&format::ms(s.p50_ms)),
                escape(&format::ms(s.p99_ms)),
                escape(&format::ms(s.max_ms)),
            ];
            (String::new(), cells)
        })
        .collect();
    table(
        h,
        &[
            "pair",
            "#probes",
            "#steady p50 ms",
            "#steady p99 ms",
            "#p50 ms",
            "#p99 ms",
            "#max ms",
        ],
        &rows,
    );
    h.push_str("</section>\n");
}

fn dns(h: &mut String, r: &Report) {
    let Some(d) = &r.dns else { return };
    let _ = writeln!(
        h,
        r#"<section><h2>GeoDNS</h2><dl class="facts"><dt>lookups</dt><dd>{}</dd><dt>failed</dt><dd>{}</dd></dl>"#,
        d.lookups, d.failures
    );
    let rows: Vec<_> = d
        .entries
        .iter()
        .map(|e| {
            (
                String::new(),
                vec![escape(&e.city), escape(&e.region), e.requests.to_string()],
            )
        })
        .collect();
    table(
        h,
        &["city", "entered by (region's edge)", "#requests"],
        &rows,
    );
    h.push_str("</section>");
}

fn residency(h: &mut String, r: &Report) {
    let res = &r.residency;
    let class = if res.findings.is_empty() {
        "good"
    } else {
        "bad"
    };
    let _ = write!(
        h,
        r#"<section><h2>Residency</h2><dl class="facts"><dt>canaries written</dt><dd>{}</dd>
<dt>places searched</dt><dd>{}</dd><dt>bytes searched</dt><dd>{}</dd><dt>findings</dt><dd class="{class}">{}</dd></dl>
"#,
        res.canaries,
        res.searched.len(),
        escape(&format::bytes(res.bytes_searched)),
        res.findings.len(),
    );
    if !res.searched.is_empty() {
        h.push_str(r#"<details><summary>Places searched</summary><ul class="places">"#);
        for place in &res.searched {
            let _ = write!(h, "<li><code>{}</code></li>", escape(place));
        }
        h.push_str("</ul></details>");
    }
    h.push_str("<h3>Findings (must be none)</h3>");
    let rows: Vec<_> = res
        .findings
        .iter()
        .map(|f| {
            let cells = vec![
                escape(&f.zone),
                format!("<code>{}</code>", escape(&f.key)),
                escape(&f.place),
            ];
            ("bad".to_owned(), cells)
        })
        .collect();
    table(h, &["zone", "key", "found in"], &rows);
    h.push_str("</section>\n");
}

fn egress(h: &mut String, r: &Report) {
    let e = &r.egress;
    let _ = write!(
        h,
        "<section><h2>Inter-region egress</h2><p class=\"note\">Priced at {} per GB.</p>",
        escape(&format::usd(e.price_per_gb))
    );
    let mut rows: Vec<_> = e
        .links
        .iter()
        .map(|l| {
            let cells = vec![
                format!(
                    "{}{}",
                    swatch(charts::region_color(r, &l.from)),
                    escape(&l.from)
                ),
                format!(
                    "{}{}",
                    swatch(charts::region_color(r, &l.to)),
                    escape(&l.to)
                ),
                escape(&format::bytes(l.bytes)),
                escape(&format::usd(l.cost_usd)),
            ];
            (String::new(), cells)
        })
        .collect();
    let total = |label: &str, bytes: String, cost: f64| {
        let cells = vec![
            escape(label),
            String::new(),
            bytes,
            escape(&format::usd(cost)),
        ];
        ("total".to_owned(), cells)
    };
    rows.push(total(
        "total",
        escape(&format::bytes(e.total_bytes)),
        e.total_cost_usd,
    ));
    rows.push(total(
        "per month at this rate",
        String::new(),
        e.monthly_cost_usd,
    ));
    table(h, &["from", "to", "#bytes", "#cost"], &rows);
    h.push_str("</section>\n");
}

fn expectations(h: &mut String, r: &Report) {
    h.push_str("<section><h2>Expectations</h2>");
    let rows: Vec<_> = r
        .expectations
        .iter()
        .map(|e| {
            let (class, mark) = if e.passed {
                ("pass", "✓ pass")
            } else {
                ("fail", "✗ fail")
            };
            let cells = vec![
                mark.to_owned(),
                format!("<code>{}</code>", escape(&e.name)),
                escape(&e.expected),
                escape(&e.actual),
            ];
            (class.to_owned(), cells)
        })
        .collect();
    table(h, &["", "expectation", "expected", "actual"], &rows);
    h.push_str("</section>\n");
}

const CSS: &str = r#"
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--pass:#15803d;--fail:#b91c1c}
*{box-sizing:border-box}
body{margin:0;background:#f8fafc;color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px}
h1{margin:0;font-size:28px;line-height:1.2}
h2{font-size:19px;margin:0 0 12px}
h3{font-size:15px;margin:16px 0 6px;color:#374151}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:16px 0}
.banner{display:flex;justify-content:space-between;align-items:center;gap:24px;padding:22px 28px;border-radius:12px;color:#fff}
.banner.pass{background:linear-gradient(135deg,#166534,#16a34a)}
.banner.fail{background:linear-gradient(135deg,#7f1d1d,#dc2626)}
.kicker{text-transform:uppercase;letter-spacing:.08em;font-size:12px;opacity:.85}
.meta{opacity:.9;margin-top:4px}
.verdict{text-align:right}
.verdict span{display:block;font-size:44px;font-weight:800;letter-spacing:.06em;line-height:1}
.verdict small{opacity:.9}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px;background:none;border:0;padding:0}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:20px;font-weight:650;font-variant-numeric:tabular-nums}
.card.bad .value,dd.bad{color:var(--fail)}
.card.good .value,dd.good{color:var(--pass)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
.num{text-align:right}
tr.warn td{background:#fffbeb}
tr.bad td,tr.fail td{background:#fef2f2;color:var(--fail)}
tr.pass td:first-child{color:var(--pass);font-weight:600}
tr.fail td:first-child{font-weight:600}
tr.total td{font-weight:600;border-top:2px solid var(--line)}
td.none{color:var(--muted);font-style:italic}
.swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:7px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.note{color:var(--muted);font-size:13px}
dl.facts{display:grid;grid-template-columns:max-content auto max-content auto max-content auto;gap:4px 14px;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
ul.places{columns:3;font-size:13px}
svg.chart{display:block;max-width:100%;height:auto;font-family:inherit}
svg .tick{font-size:11px;fill:#6b7280}
svg .axis{font-size:12px;fill:#374151;font-weight:600}
svg .legend{font-size:12px;fill:#374151}
svg .fault{font-size:11px;fill:#111827;font-weight:600}
svg .empty{font-size:14px;fill:#9ca3af}
svg .city{font-size:10px;fill:#334155}
svg .region{font-size:12px;fill:#111827;font-weight:700;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg .link{font-size:10px;fill:#475569;paint-order:stroke;stroke:#f1f5f9;stroke-width:3px}
"#;
