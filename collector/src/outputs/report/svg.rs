//! A small SVG line-chart writer for the report's trends: inline, no script, no external
//! resource, so the HTML report works offline and in a mail client.

use std::fmt::Write;

use crate::analysis::report::TrendChart;

/// Colours of the lines, in order (member 1, 2, …), distinguishable for colour-blind readers.
const PALETTE: [&str; 6] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
];

/// Escapes text for XML (element content and attribute values).
pub fn escape(s: &str) -> String {
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

/// Margins: left (value labels), right, top (title), bottom (time labels and legend).
const MARGIN: (f64, f64, f64, f64) = (56.0, 12.0, 24.0, 40.0);

/// The range of `chart`'s points: (t0, t1, v0, v1), widened so neither span is zero.
fn bounds(chart: &TrendChart) -> Option<(f64, f64, f64, f64)> {
    let points = chart.lines.iter().flat_map(|l| l.points.iter());
    let (mut t0, mut t1, mut v0, mut v1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points {
        t0 = t0.min(p[0]);
        t1 = t1.max(p[0]);
        v0 = v0.min(p[1]);
        v1 = v1.max(p[1]);
    }
    if t0 > t1 {
        return None;
    }
    // Values start at zero when all are positive: a latency chart should not exaggerate.
    if v0 > 0.0 {
        v0 = 0.0;
    }
    if v1 - v0 < 1e-9 {
        v1 = v0 + 1.0;
    }
    if t1 - t0 < 1.0 {
        t1 = t0 + 1.0;
    }
    Some((t0, t1, v0, v1))
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The clock time (UTC, `HH:MM`) of a Unix ms timestamp.
fn clock(ms: f64) -> String {
    let secs = (ms / 1000.0) as u64;
    format!("{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60)
}

/// `chart` as an `<svg>` element `width` × `height` pixels.
pub fn line_chart(chart: &TrendChart, width: f64, height: f64) -> String {
    let mut s = String::new();
    let title = format!("{} ({})", chart.title, chart.unit);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{t}"><title>{t}</title><rect width="{width}" height="{height}" fill="#ffffff"/><text x="{x}" y="16" font-size="13" font-weight="bold" fill="#222">{t}</text>"##,
        t = escape(&title),
        x = MARGIN.0,
    );
    let Some((t0, t1, v0, v1)) = bounds(chart) else {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="12" fill="#666">no data in the window</text></svg>"##,
            MARGIN.0,
            height / 2.0
        );
        return s;
    };
    let (l, r, t, b) = MARGIN;
    let (pw, ph) = (width - l - r, height - t - b);
    let x = |ts: f64| l + (ts - t0) / (t1 - t0) * pw;
    let y = |v: f64| t + ph - (v - v0) / (v1 - v0) * ph;
    axes(&mut s, (l, t, pw, ph), (t0, t1, v0, v1));
    for (i, line) in chart.lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1])))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let lx = l + i as f64 * 110.0;
        let ly = height - 8.0;
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{ly}" font-size="11" fill="#222">{}</text>"##,
            ly - 9.0,
            lx + 14.0,
            escape(&line.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// Frame, grid lines with value labels, and the first and last time.
fn axes(
    s: &mut String,
    (l, t, pw, ph): (f64, f64, f64, f64),
    (t0, t1, v0, v1): (f64, f64, f64, f64),
) {
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#bbb"/>"##
    );
    for k in 0..=4 {
        let v = v0 + (v1 - v0) * f64::from(k) / 4.0;
        let gy = t + ph - ph * f64::from(k) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            l + pw,
            l - 4.0,
            gy + 3.0,
            label(v)
        );
    }
    let ty = t + ph + 12.0;
    let _ = write!(
        s,
        r##"<text x="{l}" y="{ty}" font-size="10" fill="#555">{}</text><text x="{:.1}" y="{ty}" font-size="10" text-anchor="end" fill="#555">{} UTC</text>"##,
        clock(t0),
        l + pw,
        clock(t1)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::TrendLine;

    #[test]
    fn a_chart_has_one_polyline_per_member_and_escapes_labels() {
        let chart = TrendChart {
            key: "k".into(),
            title: "WAL <fsync>".into(),
            unit: "ms".into(),
            lines: vec![
                TrendLine {
                    label: "m&0".into(),
                    points: vec![[0.0, 1.0], [60_000.0, 3.0]],
                },
                TrendLine {
                    label: "m1".into(),
                    points: vec![[0.0, 2.0], [60_000.0, 2.0]],
                },
            ],
        };
        let svg = line_chart(&chart, 400.0, 200.0);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("WAL &lt;fsync&gt;"));
        assert!(svg.contains("m&amp;0"));
        assert!(!svg.contains("http://") || svg.matches("http://").count() == 1);
        let empty = TrendChart {
            lines: vec![],
            ..chart
        };
        assert!(line_chart(&empty, 400.0, 200.0).contains("no data"));
    }
}
