//! The report's three charts as inline SVG: latency and errors over time, replication lag over
//! time, and a map of regions, cities and egress links. Each returns one `<svg class="chart">`
//! with a fixed `id`, and is finite and well-formed for any report, empty ones included.

use super::format;
use super::model::{RegionInfo, Report};
use super::svg::{Anchor, Frame, LegendEntry, Linear, Mark, Svg, nice_max, ticks};

/// Colour of the median latency line.
const P50_COLOR: &str = "#60a5fa";
/// Colour of the 99th percentile latency line.
const P99_COLOR: &str = "#1d4ed8";
/// Colour of the error bars.
const ERROR_COLOR: &str = "#ef4444";
/// Colour of fault markers.
const FAULT_COLOR: &str = "#374151";
/// Colour of anything tied to a region the report does not list (e.g. `unserved`).
const UNKNOWN_REGION_COLOR: &str = "#9ca3af";
/// Region colours, by the region's position in [`Report::regions`] (cycling).
const REGION_COLORS: [&str; 8] = [
    "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#4b5563",
];
/// Lag line colours, by the series' position in [`Report::lag`] (cycling); none is a region's.
const LAG_COLORS: [&str; 8] = [
    "#0f766e", "#c2410c", "#7e22ce", "#be123c", "#4d7c0f", "#0369a1", "#a16207", "#475569",
];

/// Width of every chart, user units.
const WIDTH: f64 = 1000.0;
/// Left margin of the time charts (room for y tick labels).
const LEFT: f64 = 64.0;
/// Right margin of the time charts.
const RIGHT: f64 = 24.0;
/// Top band of the time charts, where fault labels go.
const TOP: f64 = 52.0;

/// The colour of region `name`: its position in the report's regions picks it, so it is the same
/// in every chart and table of one report.
pub(crate) fn region_color(report: &Report, name: &str) -> &'static str {
    report
        .regions
        .iter()
        .position(|r| r.name == name)
        .map_or(UNKNOWN_REGION_COLOR, |i| {
            REGION_COLORS[i % REGION_COLORS.len()]
        })
}

/// The colour of the lag series at position `i`.
pub(crate) fn lag_color(i: usize) -> &'static str {
    LAG_COLORS[i % LAG_COLORS.len()]
}

/// The end of the time axis: the run's duration, or later if a bucket, action or probe is later.
fn time_end(report: &Report) -> f64 {
    let buckets = report
        .timeline
        .iter()
        .map(|b| b.t_s + report.bucket_s.max(0.0));
    let faults = report.faults.iter().map(|f| f.at_s);
    let probes = report.lag.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    buckets
        .chain(faults)
        .chain(probes)
        .filter(|v| v.is_finite())
        .fold(report.duration_s, f64::max)
}

/// The time axis shared by both time charts, so their fault markers line up.
fn time_axis(report: &Report) -> (Linear, Vec<f64>, f64) {
    let end = time_end(report);
    let x = Linear::new(0.0, end, LEFT, WIDTH - RIGHT);
    let (t, step) = ticks(end, 12);
    (x, t, step)
}

/// Dashed vertical lines at each action, from the label band down to `bottom`, labelled with the
/// action (labels alternate between two rows so neighbours do not overlap).
fn fault_markers(svg: &mut Svg, report: &Report, x: &Linear, bottom: f64) {
    for (i, f) in report.faults.iter().enumerate() {
        let px = x.map(f.at_s);
        let label_y = 16.0 + (i % 2) as f64 * 16.0;
        svg.line(
            (px, label_y + 4.0),
            (px, bottom),
            FAULT_COLOR,
            1.2,
            Some("5 4"),
        );
        svg.text((px + 4.0, label_y), Anchor::Start, "fault", &f.action);
    }
}

/// Latency (p50 and p99 of each bucket's successful requests) over time, above the errors of
/// each bucket as bars on an aligned time axis, with a marker at each action. A bucket without a
/// successful request breaks the latency lines instead of dropping them to 0.
pub(crate) fn latency(report: &Report) -> String {
    const HEIGHT: f64 = 520.0;
    let mut svg = Svg::new(
        "chart-latency",
        WIDTH,
        HEIGHT,
        "Latency (p50, p99) and errors per bucket over time",
    );
    let width = WIDTH - LEFT - RIGHT;
    let lat = Frame {
        left: LEFT,
        top: TOP,
        width,
        height: 260.0,
    };
    let err = Frame {
        left: LEFT,
        top: lat.bottom() + 36.0,
        width,
        height: 90.0,
    };
    let (x, x_ticks, x_step) = time_axis(report);

    let max_ms = report
        .timeline
        .iter()
        .map(|b| b.p99_ms.max(b.p50_ms))
        .fold(0.0, f64::max);
    let y_max = nice_max(max_ms, 5);
    let y = Linear::new(0.0, y_max, lat.bottom(), lat.top);
    let (y_ticks, y_step) = ticks(y_max, 5);
    svg.y_axis(&lat, &y, &y_ticks, y_step, "latency, ms", false);
    svg.line(
        (lat.left, lat.bottom()),
        (lat.right(), lat.bottom()),
        "#6b7280",
        1.0,
        None,
    );

    let max_err = report.timeline.iter().map(|b| b.errors).max().unwrap_or(0) as f64;
    let e_max = nice_max(max_err, 2);
    let ey = Linear::new(0.0, e_max, err.bottom(), err.top);
    let (e_ticks, e_step) = ticks(e_max, 2);
    svg.y_axis(
        &err,
        &ey,
        &e_ticks,
        e_step.max(1.0),
        "errors / bucket",
        false,
    );
    svg.x_axis(&err, &x, &x_ticks, x_step, "seconds since load start");

    let half = report.bucket_s.max(0.0) / 2.0;
    let mut p50: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    let mut p99: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for b in &report.timeline {
        let px = x.map(b.t_s + half);
        if b.requests > b.errors {
            push_point(&mut p50, (px, y.map(b.p50_ms)));
            push_point(&mut p99, (px, y.map(b.p99_ms)));
        } else {
            p50.push(Vec::new());
            p99.push(Vec::new());
        }
        if b.errors > 0 {
            let x0 = x.map(b.t_s);
            let w = (x.map(b.t_s + report.bucket_s) - x0 - 1.0).max(1.5);
            let top = ey.map(b.errors as f64);
            svg.rect((x0, top), (w, err.bottom() - top), ERROR_COLOR);
        }
    }
    // A bucket standing alone between gaps is drawn as a dot-sized segment, not lost.
    for segs in [&mut p50, &mut p99] {
        for s in segs.iter_mut().filter(|s| s.len() == 1) {
            let (px, py) = s[0];
            s.push((px + 0.5, py));
        }
    }
    svg.polyline(&p50, P50_COLOR, 2.0, None);
    svg.polyline(&p99, P99_COLOR, 2.5, None);
    if report.timeline.is_empty() {
        let c = (lat.left + lat.width / 2.0, lat.top + lat.height / 2.0);
        svg.text(c, Anchor::Middle, "empty", "no requests were recorded");
    }
    fault_markers(&mut svg, report, &x, err.bottom());
    svg.legend(
        (LEFT, HEIGHT - 18.0),
        WIDTH - RIGHT,
        &[
            entry(P50_COLOR, "p50 latency", Mark::Line),
            entry(P99_COLOR, "p99 latency", Mark::Line),
            entry(ERROR_COLOR, "errors per bucket", Mark::Swatch),
            entry(FAULT_COLOR, "timeline action", Mark::Dashed),
        ],
    );
    svg.finish()
}

/// Replication lag over time: one line per directed pair (`from → to`), each probe a point in
/// acknowledgement order, broken where probes stopped (see [`split_at_gaps`]), with a marker at
/// each action.
pub(crate) fn lag(report: &Report) -> String {
    let rows = legend_rows(report.lag.len());
    let height = TOP + 240.0 + 70.0 + rows as f64 * 20.0;
    let mut svg = Svg::new(
        "chart-lag",
        WIDTH,
        height,
        "Replication lag per region pair over time",
    );
    let frame = Frame {
        left: LEFT,
        top: TOP,
        width: WIDTH - LEFT - RIGHT,
        height: 240.0,
    };
    let (x, x_ticks, x_step) = time_axis(report);
    let max_lag = report
        .lag
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_max = nice_max(max_lag, 5);
    let y = Linear::new(0.0, y_max, frame.bottom(), frame.top);
    let (y_ticks, y_step) = ticks(y_max, 5);
    svg.y_axis(&frame, &y, &y_ticks, y_step, "lag, ms", false);
    svg.x_axis(&frame, &x, &x_ticks, x_step, "seconds since load start");

    let mut legend = Vec::new();
    for (i, series) in report.lag.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = series.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let segments: Vec<Vec<(f64, f64)>> = split_at_gaps(&points)
            .iter()
            .map(|seg| seg.iter().map(|&(t, l)| (x.map(t), y.map(l))).collect())
            .collect();
        svg.polyline(&segments, lag_color(i), 2.5, None);
        legend.push(entry(
            lag_color(i),
            &format!("{} → {}", series.from, series.to),
            Mark::Line,
        ));
    }
    if report.lag.iter().all(|s| s.points.is_empty()) {
        let c = (
            frame.left + frame.width / 2.0,
            frame.top + frame.height / 2.0,
        );
        svg.text(c, Anchor::Middle, "empty", "no lag probes were recorded");
    }
    fault_markers(&mut svg, report, &x, frame.bottom());
    legend.push(entry(FAULT_COLOR, "timeline action", Mark::Dashed));
    svg.legend((LEFT, frame.bottom() + 62.0), WIDTH - RIGHT, &legend);
    svg.finish()
}

/// Splits time-ordered probes where the time between two exceeds three times the median spacing
/// (no probe got through, e.g. while a region was down), so the line does not bridge the gap.
fn split_at_gaps(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut gaps: Vec<f64> = points.windows(2).map(|w| w[1].0 - w[0].0).collect();
    gaps.sort_by(f64::total_cmp);
    let limit = gaps
        .get(gaps.len() / 2)
        .map_or(f64::INFINITY, |median| 3.0 * median);
    let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (i, &p) in points.iter().enumerate() {
        if i > 0 && p.0 - points[i - 1].0 > limit {
            segments.push(Vec::new());
        }
        push_point(&mut segments, p);
    }
    segments
}

/// Rows the lag legend needs: about three pair labels fit a row, plus the action entry.
fn legend_rows(series: usize) -> usize {
    (series + 1).div_ceil(3).max(1)
}

/// Southern and northern edge of the map, degrees: the inhabited latitudes.
const MAP_LAT: (f64, f64) = (-60.0, 75.0);

/// An equirectangular map (longitude and latitude linear in x and y, −180…180° by −60…75°) with
/// a 30°/15° graticule, each region a labelled circle in its colour, each city a dot joined to its
/// edge region, and a line between every pair of regions that exchanged bytes, as wide as the
/// square root of their share of the busiest pair, labelled with the bytes both ways.
pub(crate) fn map(report: &Report) -> String {
    let frame = Frame {
        left: 40.0,
        top: 16.0,
        width: WIDTH - 64.0,
        height: 0.0,
    };
    let frame = Frame {
        height: frame.width * (MAP_LAT.1 - MAP_LAT.0) / 360.0,
        ..frame
    };
    let height = frame.bottom() + 64.0;
    let mut svg = Svg::new(
        "chart-map",
        WIDTH,
        height,
        "Regions, cities and inter-region egress",
    );
    let x = Linear::new(-180.0, 180.0, frame.left, frame.right());
    let y = Linear::new(MAP_LAT.0, MAP_LAT.1, frame.bottom(), frame.top);
    let at = |lat: f64, lon: f64| {
        (
            x.map(lon.clamp(-180.0, 180.0)),
            y.map(lat.clamp(MAP_LAT.0, MAP_LAT.1)),
        )
    };

    svg.rect(
        (frame.left, frame.top),
        (frame.width, frame.height),
        "#f1f5f9",
    );
    for lon in (-180..=180).step_by(30).map(f64::from) {
        let px = x.map(lon);
        svg.line((px, frame.top), (px, frame.bottom()), "#d8dee6", 1.0, None);
        let label = match lon {
            l if l < 0.0 => format!("{}°W", -l),
            l if l > 0.0 => format!("{l}°E"),
            _ => "0°".to_owned(),
        };
        svg.text((px, frame.bottom() + 16.0), Anchor::Middle, "tick", &label);
    }
    for lat in (-60..=75).step_by(15).map(f64::from) {
        let py = y.map(lat);
        let (color, w) = if lat == 0.0 {
            ("#b6c0cc", 1.5)
        } else {
            ("#d8dee6", 1.0)
        };
        svg.line((frame.left, py), (frame.right(), py), color, w, None);
        let label = match lat {
            l if l < 0.0 => format!("{}°S", -l),
            l if l > 0.0 => format!("{l}°N"),
            _ => "0°".to_owned(),
        };
        svg.text((frame.left - 6.0, py + 4.0), Anchor::End, "tick", &label);
    }

    let region =
        |name: &str| -> Option<&RegionInfo> { report.regions.iter().find(|r| r.name == name) };

    // Egress both ways between each unordered pair, in first-seen order.
    let mut pairs: Vec<(&str, &str, u64)> = Vec::new();
    for l in &report.egress.links {
        let found = pairs
            .iter_mut()
            .find(|(a, b, _)| (*a == l.from && *b == l.to) || (*a == l.to && *b == l.from));
        match found {
            Some(p) => p.2 = p.2.saturating_add(l.bytes),
            None => pairs.push((&l.from, &l.to, l.bytes)),
        }
    }
    let busiest = pairs.iter().map(|p| p.2).max().unwrap_or(0).max(1) as f64;
    for (a, b, bytes) in &pairs {
        let (Some(ra), Some(rb)) = (region(a), region(b)) else {
            continue;
        };
        let (pa, pb) = (at(ra.lat, ra.lon), at(rb.lat, rb.lon));
        let w = 1.0 + 9.0 * (*bytes as f64 / busiest).sqrt();
        svg.line(pa, pb, "#64748b", w, None);
        let mid = ((pa.0 + pb.0) / 2.0, (pa.1 + pb.1) / 2.0 - w / 2.0 - 4.0);
        svg.text(mid, Anchor::Middle, "link", &format::bytes(*bytes));
    }

    for c in &report.cities {
        let pc = at(c.lat, c.lon);
        if let Some(edge) = region(&c.edge) {
            svg.line(
                pc,
                at(edge.lat, edge.lon),
                region_color(report, &c.edge),
                1.0,
                Some("2 2"),
            );
        }
        let tip = format!(
            "{} → {} ({} ms access RTT)",
            c.name,
            c.edge,
            format::ms(c.access_rtt_ms)
        );
        svg.circle(pc, 3.5, "#334155", None, &tip);
        svg.text((pc.0 + 6.0, pc.1 + 4.0), Anchor::Start, "city", &c.name);
    }

    for r in &report.regions {
        let pr = at(r.lat, r.lon);
        let tip = match &r.zone {
            Some(z) => format!("{} (zone {z})", r.name),
            None => r.name.clone(),
        };
        svg.circle(
            pr,
            10.0,
            region_color(report, &r.name),
            Some("#ffffff"),
            &tip,
        );
        svg.text((pr.0, pr.1 - 15.0), Anchor::Middle, "region", &tip);
    }

    let mut legend: Vec<LegendEntry> = report
        .regions
        .iter()
        .map(|r| entry(region_color(report, &r.name), &r.name, Mark::Dot))
        .collect();
    legend.push(entry("#334155", "city (dashed to its edge)", Mark::Dot));
    legend.push(entry("#64748b", "egress (width ∝ √bytes)", Mark::Line));
    svg.legend((frame.left, frame.bottom() + 44.0), WIDTH - 24.0, &legend);
    svg.finish()
}

fn entry(color: &str, label: &str, mark: Mark) -> LegendEntry {
    LegendEntry {
        color: color.to_owned(),
        label: label.to_owned(),
        mark,
    }
}

/// Appends a point to the last segment.
fn push_point(segments: &mut Vec<Vec<(f64, f64)>>, p: (f64, f64)) {
    match segments.last_mut() {
        Some(last) => last.push(p),
        None => segments.push(vec![p]),
    }
}

#[cfg(test)]
mod tests {
    use super::split_at_gaps;

    #[test]
    fn lag_lines_break_where_probes_stopped() {
        let points = [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (10.0, 5.0), (11.0, 1.0)];
        let segs = split_at_gaps(&points);
        assert_eq!(segs, vec![points[..3].to_vec(), points[3..].to_vec()]);
        assert_eq!(split_at_gaps(&[(1.0, 2.0)]), vec![vec![(1.0, 2.0)]]);
        assert_eq!(split_at_gaps(&[]), vec![Vec::<(f64, f64)>::new()]);
    }
}
