//! The report as a compact plain-text summary for a terminal.

use std::fmt::Write as _;

use super::format::{self, NONE};
use super::model::{LatencyRow, Report};

/// Async lost writes listed by key; the rest are counted.
const MAX_LOST_LISTED: usize = 10;

/// Renders `report` as aligned plain text without colours; same as `render_with(report, false)`.
pub fn render(report: &Report) -> String {
    render_with(report, false)
}

/// Renders `report` as aligned plain text, about 60 lines for a three-region run: header with
/// the verdict, totals, latency per city and per serving region, the timeline's actions, recovery
/// point (up to 10 async lost writes listed by key), lag per pair, residency, egress and the
/// expectations. With `color`, the verdict, ✓/✗ and losses are coloured with ANSI escapes
/// (alignment is unchanged); without it the output contains no escape sequence.
pub fn render_with(report: &Report, color: bool) -> String {
    let paint = Paint(color);
    let r = report;
    let mut o = String::new();
    let verdict = if r.passed {
        paint.green("PASS")
    } else {
        paint.red("FAIL")
    };
    let _ = writeln!(
        o,
        "{} {}",
        paint.bold("Meridian lab ·"),
        paint.bold(&r.scenario)
    );
    let _ = writeln!(
        o,
        "{} of load at {} req/s · seed {} · started {} · {verdict}",
        format::secs(r.duration_s),
        format::rate(r.rate),
        r.seed,
        r.started_at,
    );
    let t = &r.totals;
    let _ = writeln!(
        o,
        "requests {} · ok {} · errors {} ({}) · pinned refused {}",
        t.requests,
        t.ok,
        t.errors,
        format::percent(t.errors, t.requests),
        t.pinned_refused,
    );

    for (group, rows) in [("city", &r.by_city), ("region", &r.by_region)] {
        let head = [
            group,
            "#requests",
            "#errors",
            "#p50 ms",
            "#p95 ms",
            "#p99 ms",
        ];
        o.push('\n');
        o.push_str(&table(
            &head,
            &rows.iter().map(latency_cells).collect::<Vec<_>>(),
        ));
    }
    if let Some(d) = &r.dns {
        o.push('\n');
        o.push_str(&dns_summary(d));
    }

    let rows: Vec<_> = r
        .faults
        .iter()
        .map(|f| {
            vec![
                format::secs(f.at_s),
                f.action.clone(),
                format::opt_secs(f.detection_s),
                format::opt_secs(f.rto_s),
                f.errors.to_string(),
                format::opt_secs(f.convergence_s),
            ]
        })
        .collect();
    o.push('\n');
    let head = [
        "#at",
        "action",
        "#detection",
        "#RTO",
        "#errors",
        "#convergence",
    ];
    o.push_str(&table(&head, &rows));

    let p = &r.rpo;
    let converged = if p.converged {
        format!(
            "converged {} after the last heal",
            format::opt_secs(p.final_convergence_s)
        )
    } else {
        "did not converge".to_owned()
    };
    let sync_lost = p.sync_lost.len().to_string();
    let sync_lost = if p.sync_lost.is_empty() {
        sync_lost
    } else {
        paint.red(&sync_lost)
    };
    let _ = writeln!(
        o,
        "\nRPO: acknowledged {} ({} sync) · sync lost {sync_lost} · async lost {} · {converged}",
        p.acknowledged,
        p.acknowledged_sync,
        p.async_lost.len(),
    );
    for w in p
        .sync_lost
        .iter()
        .chain(p.async_lost.iter().take(MAX_LOST_LISTED))
    {
        let _ = writeln!(
            o,
            "  lost {}/{} acked by {} at {}, missing in {}",
            w.keyspace,
            w.key,
            w.acked_by,
            format::secs(w.acked_at_s),
            w.missing_in.join(", "),
        );
    }
    if p.async_lost.len() > MAX_LOST_LISTED {
        let _ = writeln!(
            o,
            "  … and {} more async",
            p.async_lost.len() - MAX_LOST_LISTED
        );
    }

    let rows: Vec<_> = r
        .lag
        .iter()
        .map(|s| {
            vec![
                format!("{} → {}", s.from, s.to),
                format::ms(s.steady_p50_ms),
                format::ms(s.steady_p99_ms),
                format::ms(s.p99_ms),
                format::ms(s.max_ms),
            ]
        })
        .collect();
    o.push('\n');
    o.push_str(&table(
        &[
            "lag",
            "#steady p50",
            "#steady p99",
            "#all p99 ms",
            "#max ms",
        ],
        &rows,
    ));

    let res = &r.residency;
    let findings = res.findings.len().to_string();
    let findings = if res.findings.is_empty() {
        findings
    } else {
        paint.red(&findings)
    };
    let _ = writeln!(
        o,
        "\nResidency: {} canaries · {} places searched ({}) · findings {findings}",
        res.canaries,
        res.searched.len(),
        format::bytes(res.bytes_searched),
    );
    for f in &res.findings {
        let _ = writeln!(o, "  {} canary {} found in {}", f.zone, f.key, f.place);
    }

    let e = &r.egress;
    let mut rows: Vec<_> = e
        .links
        .iter()
        .map(|l| {
            vec![
                format!("{} → {}", l.from, l.to),
                format::bytes(l.bytes),
                format::usd(l.cost_usd),
            ]
        })
        .collect();
    rows.push(vec![
        "total".to_owned(),
        format::bytes(e.total_bytes),
        format::usd(e.total_cost_usd),
    ]);
    rows.push(vec![
        "per month".to_owned(),
        String::new(),
        format::usd(e.monthly_cost_usd),
    ]);
    o.push('\n');
    let egress_head = format!("egress at {}/GB", format::usd(e.price_per_gb));
    o.push_str(&table(&[&egress_head, "#bytes", "#cost"], &rows));

    o.push_str("\nExpectations\n");
    if r.expectations.is_empty() {
        let _ = writeln!(o, "  {NONE}");
    }
    let width = r
        .expectations
        .iter()
        .map(|e| e.name.chars().count())
        .max()
        .unwrap_or(0);
    for x in &r.expectations {
        let mark = if x.passed {
            paint.green("✓")
        } else {
            paint.red("✗")
        };
        let _ = writeln!(
            o,
            "  {mark} {}{}  expected {}, got {}",
            x.name,
            " ".repeat(width - x.name.chars().count()),
            x.expected,
            x.actual,
        );
    }
    o
}

fn latency_cells(row: &LatencyRow) -> Vec<String> {
    vec![
        row.name.clone(),
        row.requests.to_string(),
        row.errors.to_string(),
        format::ms(row.p50_ms),
        format::ms(row.p95_ms),
        format::ms(row.p99_ms),
    ]
}

/// Aligned columns separated by two spaces: `head` names them (a leading `#` right-aligns a
/// column), widths count characters, not bytes; an empty table gets a `—` row.
/// One line: lookups, and for each city the regions its users entered by (most used first).
fn dns_summary(d: &crate::report::model::DnsReport) -> String {
    let mut by_city: Vec<(&str, Vec<(&str, u64)>)> = Vec::new();
    for e in &d.entries {
        match by_city.iter_mut().find(|(c, _)| *c == e.city) {
            Some((_, v)) => v.push((&e.region, e.requests)),
            None => by_city.push((&e.city, vec![(&e.region, e.requests)])),
        }
    }
    let cities: Vec<String> = by_city
        .into_iter()
        .map(|(city, mut v)| {
            v.sort_by_key(|e| std::cmp::Reverse(e.1));
            let parts: Vec<String> = v.iter().map(|(r, n)| format!("{r} {n}")).collect();
            format!("{city}: {}", parts.join(", "))
        })
        .collect();
    format!(
        "GeoDNS: {} lookups, {} failed · entered by {}\n",
        d.lookups,
        d.failures,
        cities.join(" · ")
    )
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let names: Vec<&str> = head
        .iter()
        .map(|h| h.strip_prefix('#').unwrap_or(h))
        .collect();
    let right: Vec<bool> = head.iter().map(|h| h.starts_with('#')).collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            if i > 0 {
                s.push_str("  ");
            }
            if right[i] {
                s.push_str(&pad);
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&pad);
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&names);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    if rows.is_empty() {
        out.push_str(&line(&[NONE]));
    }
    out
}

/// ANSI styling, or none.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
}
