//! A small SVG writer for the report's charts: linear scales, "nice" ticks, axes, legends.
//!
//! Every number written into the document goes through [`num`], which turns a non-finite value
//! into `0`, and every text goes through [`escape`]: whatever the report holds, the output is
//! well-formed and free of `NaN` and `inf`.

use std::fmt::Write as _;

/// Escapes `&`, `<`, `>`, `"` and `'`, so the result is safe in HTML/SVG text and in quoted
/// attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate or length for an attribute: at most two decimals, trailing zeros dropped, and `0`
/// for NaN or an infinity (never `NaN`/`inf` in the document).
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_owned();
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// A value for a tick label, with as many decimals as the tick `step` needs (none for steps ≥ 1).
pub(crate) fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step.is_finite() && step > 0.0 && step < 1.0 {
        // Bounded: `step` is in (0, 1), so -log10 is positive and finite; 6 caps it.
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        0
    };
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".to_owned()
    } else {
        s
    }
}

/// A linear map from a domain of values to a range of pixels. A degenerate or non-finite domain
/// is widened to `[lo, lo + 1]`, so [`Linear::map`] is finite for every finite input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linear {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Linear {
    /// Maps `[d0, d1]` onto `[r0, r1]` (`r1 < r0` for a y axis pointing up).
    pub(crate) fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        let d0 = if d0.is_finite() { d0 } else { 0.0 };
        let d1 = if d1.is_finite() && d1 > d0 {
            d1
        } else {
            d0 + 1.0
        };
        Self { d0, d1, r0, r1 }
    }

    /// The pixel of value `v`; values outside the domain map outside the range.
    pub(crate) fn map(&self, v: f64) -> f64 {
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }
}

/// A tick step of 1, 2 or 5 × 10ⁿ that splits `span` into at most `count` intervals (1 for an
/// empty or non-finite span).
pub(crate) fn tick_step(span: f64, count: usize) -> f64 {
    if !span.is_finite() || span <= 0.0 {
        return 1.0;
    }
    let raw = span / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| span / step <= count.max(1) as f64 + 1e-9)
        .unwrap_or(10.0 * magnitude)
}

/// `hi` rounded up to a multiple of its tick step, so a y axis ends on a labelled tick; 1 when
/// `hi` is not positive and finite.
pub(crate) fn nice_max(hi: f64, count: usize) -> f64 {
    if !hi.is_finite() || hi <= 0.0 {
        return 1.0;
    }
    let step = tick_step(hi, count);
    (hi / step).ceil() * step
}

/// Ticks at multiples of [`tick_step`] from 0 up to `hi` inclusive, with the step.
pub(crate) fn ticks(hi: f64, count: usize) -> (Vec<f64>, f64) {
    let step = tick_step(hi, count);
    let n = if hi.is_finite() && hi > 0.0 {
        (hi / step + 1e-9).floor() as usize
    } else {
        1
    };
    ((0..=n).map(|i| i as f64 * step).collect(), step)
}

/// The plotting area of a chart panel, in pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    /// Left edge.
    pub(crate) left: f64,
    /// Top edge.
    pub(crate) top: f64,
    /// Width.
    pub(crate) width: f64,
    /// Height.
    pub(crate) height: f64,
}

impl Frame {
    /// The bottom edge.
    pub(crate) fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// The right edge.
    pub(crate) fn right(&self) -> f64 {
        self.left + self.width
    }
}

/// How a text is anchored at its point.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Anchor {
    /// The point is the text's start.
    Start,
    /// The point is the text's middle.
    Middle,
    /// The point is the text's end.
    End,
}

/// One entry of a legend: a line sample (or a square for `Swatch`) and its label.
#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    /// Colour of the sample.
    pub(crate) color: String,
    /// Label, plain text (escaped when written).
    pub(crate) label: String,
    /// The sample's shape.
    pub(crate) mark: Mark,
}

/// The sample drawn before a legend label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// A short solid line.
    Line,
    /// A short dashed line.
    Dashed,
    /// A filled square.
    Swatch,
    /// A filled circle.
    Dot,
}

/// An SVG document being written. The root carries `class="chart"`, the given `id`, a
/// `viewBox` of the given size, `width="100%"`, and a `<title>`.
pub(crate) struct Svg {
    out: String,
}

impl Svg {
    /// Starts a chart `width` × `height` user units wide, described by `title`.
    pub(crate) fn new(id: &str, width: f64, height: f64, title: &str) -> Self {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" id="{}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{t}"><title>{t}</title>"#,
            escape(id),
            num(width),
            num(height),
            t = escape(title),
        );
        Self { out }
    }

    /// A straight line; `dash` is a `stroke-dasharray` value.
    pub(crate) fn line(
        &mut self,
        (x1, y1): (f64, f64),
        (x2, y2): (f64, f64),
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}"{}/>"#,
            num(x1),
            num(y1),
            num(x2),
            num(y2),
            escape(stroke),
            num(width),
            dash_attr(dash),
        );
    }

    /// One `<path>` of open polylines, one per segment (a segment of fewer than two points draws
    /// nothing); nothing at all is written when no segment has two points.
    pub(crate) fn polyline(
        &mut self,
        segments: &[Vec<(f64, f64)>],
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let mut d = String::new();
        for seg in segments.iter().filter(|s| s.len() >= 2) {
            for (i, (x, y)) in seg.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{},{} ",
                    if i == 0 { "M" } else { "L" },
                    num(*x),
                    num(*y)
                );
            }
        }
        if d.is_empty() {
            return;
        }
        let _ = write!(
            self.out,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round"{}/>"#,
            d.trim_end(),
            escape(stroke),
            num(width),
            dash_attr(dash),
        );
    }

    /// A filled rectangle; negative sizes are clamped to 0.
    pub(crate) fn rect(&mut self, (x, y): (f64, f64), (w, h): (f64, f64), fill: &str) {
        let _ = write!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>"#,
            num(x),
            num(y),
            num(w.max(0.0)),
            num(h.max(0.0)),
            escape(fill),
        );
    }

    /// A circle filled with `fill`, outlined with `stroke` (1.5 units) when given, with a
    /// tooltip `title` when non-empty.
    pub(crate) fn circle(
        &mut self,
        (cx, cy): (f64, f64),
        r: f64,
        fill: &str,
        stroke: Option<&str>,
        title: &str,
    ) {
        let stroke = stroke
            .map(|s| format!(r#" stroke="{}" stroke-width="1.5""#, escape(s)))
            .unwrap_or_default();
        let tip = if title.is_empty() {
            String::new()
        } else {
            format!("<title>{}</title>", escape(title))
        };
        let _ = write!(
            self.out,
            r#"<circle cx="{}" cy="{}" r="{}" fill="{}"{stroke}>{tip}</circle>"#,
            num(cx),
            num(cy),
            num(r.max(0.0)),
            escape(fill),
        );
    }

    /// A text at a point; `class` selects its style in the page's CSS.
    pub(crate) fn text(&mut self, (x, y): (f64, f64), anchor: Anchor, class: &str, content: &str) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = write!(
            self.out,
            r#"<text x="{}" y="{}" text-anchor="{anchor}" class="{}">{}</text>"#,
            num(x),
            num(y),
            escape(class),
            escape(content),
        );
    }

    /// A horizontal axis under `frame`: ticks and labels of `ticks` (values mapped by `x`) and
    /// the axis title centred below them.
    pub(crate) fn x_axis(
        &mut self,
        frame: &Frame,
        x: &Linear,
        ticks: &[f64],
        step: f64,
        title: &str,
    ) {
        let y = frame.bottom();
        self.line((frame.left, y), (frame.right(), y), AXIS, 1.0, None);
        for &t in ticks {
            let px = x.map(t);
            self.line((px, y), (px, y + 5.0), AXIS, 1.0, None);
            self.text((px, y + 18.0), Anchor::Middle, "tick", &tick_label(t, step));
        }
        self.text(
            (frame.left + frame.width / 2.0, y + 36.0),
            Anchor::Middle,
            "axis",
            title,
        );
    }

    /// A vertical axis on the left of `frame` (or its right with `right`), with labelled ticks,
    /// light grid lines across the frame (left axis only) and the title above the axis.
    pub(crate) fn y_axis(
        &mut self,
        frame: &Frame,
        y: &Linear,
        ticks: &[f64],
        step: f64,
        title: &str,
        right: bool,
    ) {
        let x = if right { frame.right() } else { frame.left };
        let (dx, anchor) = if right {
            (8.0, Anchor::Start)
        } else {
            (-8.0, Anchor::End)
        };
        self.line((x, frame.top), (x, frame.bottom()), AXIS, 1.0, None);
        for &t in ticks {
            let py = y.map(t);
            if !right {
                self.line((frame.left, py), (frame.right(), py), GRID, 1.0, None);
            }
            self.line((x, py), (x + dx / 2.0, py), AXIS, 1.0, None);
            self.text((x + dx, py + 4.0), anchor, "tick", &tick_label(t, step));
        }
        self.text(
            (x, frame.top - 10.0),
            if right { Anchor::End } else { Anchor::Start },
            "axis",
            title,
        );
    }

    /// A legend laid out left to right from `(x, y)`, wrapping before `max_x`.
    pub(crate) fn legend(&mut self, (x, y): (f64, f64), max_x: f64, entries: &[LegendEntry]) {
        let (mut cx, mut cy) = (x, y);
        for e in entries {
            // Approximate width of the label at the legend's 12px font.
            let w = 28.0 + 7.0 * e.label.chars().count() as f64 + 18.0;
            if cx + w > max_x && cx > x {
                cx = x;
                cy += 20.0;
            }
            match e.mark {
                Mark::Line => self.line((cx, cy), (cx + 22.0, cy), &e.color, 3.0, None),
                Mark::Dashed => self.line((cx, cy), (cx + 22.0, cy), &e.color, 1.5, Some("4 3")),
                Mark::Swatch => self.rect((cx + 5.0, cy - 6.0), (12.0, 12.0), &e.color),
                Mark::Dot => self.circle((cx + 11.0, cy), 5.0, &e.color, None, ""),
            }
            self.text((cx + 28.0, cy + 4.0), Anchor::Start, "legend", &e.label);
            cx += w;
        }
    }

    /// Closes the document.
    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

/// Colour of axes and ticks.
const AXIS: &str = "#6b7280";
/// Colour of grid lines.
const GRID: &str = "#e5e7eb";

fn dash_attr(dash: Option<&str>) -> String {
    dash.map(|d| format!(r#" stroke-dasharray="{}""#, escape(d)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_finite_and_short() {
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(f64::INFINITY), "0");
        assert_eq!(num(f64::NEG_INFINITY), "0");
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(-0.001), "0");
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(250.0, 50.0), "250");
        assert_eq!(tick_label(f64::NAN, f64::NAN), "0");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(tick_step(60.0, 6), 10.0);
        assert_eq!(tick_step(7.0, 5), 2.0);
        assert_eq!(tick_step(0.0, 5), 1.0);
        assert_eq!(nice_max(183.0, 5), 200.0);
        assert_eq!(nice_max(0.0, 5), 1.0);
        assert_eq!(nice_max(f64::NAN, 5), 1.0);
        let (t, step) = ticks(60.0, 6);
        assert_eq!(step, 10.0);
        assert_eq!(t, vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
    }

    #[test]
    fn a_degenerate_domain_still_maps_finitely() {
        let s = Linear::new(0.0, 0.0, 0.0, 100.0);
        assert_eq!(s.map(0.0), 0.0);
        assert_eq!(s.map(1.0), 100.0);
        let s = Linear::new(f64::NAN, f64::INFINITY, 100.0, 0.0);
        assert!(s.map(0.5).is_finite());
    }

    #[test]
    fn the_root_is_a_chart_and_text_is_escaped() {
        let mut svg = Svg::new("chart-x", 100.0, 50.0, "a <b>");
        svg.text((1.0, 2.0), Anchor::Start, "tick", "x & \"y\"");
        svg.polyline(&[vec![(0.0, 0.0)]], "#000", 1.0, None);
        let out = svg.finish();
        assert!(out.starts_with(r#"<svg class="chart" id="chart-x""#));
        assert!(out.contains("a &lt;b&gt;"));
        assert!(out.contains("x &amp; &quot;y&quot;"));
        assert!(!out.contains("<path"), "a one-point segment draws nothing");
    }
}
