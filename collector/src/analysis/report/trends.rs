//! Trends over the history window: database growth and leader changes per day, the worst
//! interval p99s, and chart lines (one per member, at most [`MAX_POINTS`] points each).

use std::collections::BTreeMap;

use super::{ReportInputs, TrendChart, TrendLine, Trends};
use crate::store::HistoryPoint;

/// Points per chart line (evenly thinned, the last point always kept).
pub const MAX_POINTS: usize = 240;

const DAY_MS: f64 = 86_400_000.0;

/// Shortest span a per-day rate is extrapolated from.
const MIN_RATE_SPAN_MS: u64 = 60_000;

type Field = fn(&HistoryPoint) -> Option<f64>;

const CHARTS: [(&str, &str, &str, Field); 4] = [
    ("db_size", "Database size", "MiB", |p| {
        p.db_size_bytes.map(|b| b / 1_048_576.0)
    }),
    ("wal_fsync", "WAL fsync p99 per interval", "ms", |p| {
        p.wal_fsync_window_p99_ms
    }),
    ("write_p99", "Write probe p99", "ms", |p| p.write_p99_ms),
    ("request_rate", "KV requests per second", "req/s", |p| {
        p.request_rate_per_second
    }),
];

/// The trends of `inputs.history` and `inputs.leader_changes`.
pub(super) fn compute(inputs: &ReportInputs) -> Trends {
    let h = &inputs.history;
    let mut t = Trends::default();
    let (Some(first), Some(last)) = (h.first(), h.last()) else {
        return t;
    };
    t.covered_ms = last.ts_ms.saturating_sub(first.ts_ms);
    t.db_growth_bytes_per_day = db_growth(h);
    let since = inputs.generated_ms.saturating_sub(inputs.window_ms);
    t.leader_changes = inputs
        .leader_changes
        .iter()
        .filter(|c| c.at_ms >= since)
        .count() as u64;
    if t.covered_ms >= MIN_RATE_SPAN_MS {
        t.leader_changes_per_day = Some(t.leader_changes as f64 * DAY_MS / t.covered_ms as f64);
    }
    t.max_wal_fsync_window_p99_ms = h
        .iter()
        .filter_map(|p| p.wal_fsync_window_p99_ms)
        .max_by(f64::total_cmp);
    t.max_write_p99_ms = h
        .iter()
        .filter_map(|p| p.write_p99_ms)
        .max_by(f64::total_cmp);
    t.charts = CHARTS
        .iter()
        .map(|(key, title, unit, field)| chart(h, key, title, unit, *field))
        .filter(|c| !c.lines.is_empty())
        .collect();
    t
}

/// Growth of the largest member's database between the first and last point, per day.
fn db_growth(h: &[HistoryPoint]) -> Option<f64> {
    let mut per_member: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
    for p in h {
        if let Some(b) = p.db_size_bytes {
            per_member.entry(&p.member).or_default().push((p.ts_ms, b));
        }
    }
    per_member
        .values()
        .filter_map(|v| {
            let (t0, b0) = *v.first()?;
            let (t1, b1) = *v.last()?;
            let span = t1.saturating_sub(t0);
            (span >= MIN_RATE_SPAN_MS).then(|| (b1, (b1 - b0) * DAY_MS / span as f64))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, rate)| rate)
}

fn chart(h: &[HistoryPoint], key: &str, title: &str, unit: &str, field: Field) -> TrendChart {
    let mut lines: BTreeMap<&str, Vec<[f64; 2]>> = BTreeMap::new();
    for p in h {
        if let Some(v) = field(p).filter(|v| v.is_finite()) {
            lines
                .entry(&p.member)
                .or_default()
                .push([p.ts_ms as f64, v]);
        }
    }
    TrendChart {
        key: key.into(),
        title: title.into(),
        unit: unit.into(),
        lines: lines
            .into_iter()
            .map(|(label, points)| TrendLine {
                label: label.to_string(),
                points: thin(points, MAX_POINTS),
            })
            .collect(),
    }
}

/// At most `max` of `points`, evenly spaced, keeping the first and the last.
pub(super) fn thin(points: Vec<[f64; 2]>, max: usize) -> Vec<[f64; 2]> {
    if points.len() <= max || max < 2 {
        return points;
    }
    let n = points.len();
    (0..max).map(|i| points[i * (n - 1) / (max - 1)]).collect()
}
