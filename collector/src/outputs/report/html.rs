//! The report as one self-contained HTML page: inline CSS and inline SVG charts, no script, no
//! font, no image and no stylesheet fetched from anywhere, so it renders offline and can be
//! mailed or attached to a ticket as it is.

use std::fmt::Write;

use super::markdown::{fmt_mib, utc};
use super::svg::{escape, line_chart};
use crate::analysis::report::{Grade, Report};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#1d1d1d;background:#fff;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.meta{color:#555}.summary{font-size:15px;line-height:1.5;background:#f4f6f8;padding:12px 16px;border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #ddd;padding:5px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
.grade{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.good{background:#1a7f37}.warning{background:#c77700}.critical{background:#c62828}.unknown{background:#8a8a8a}
.overall{font-size:16px;padding:4px 14px}li{margin:6px 0}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e0e0e0;border-radius:4px}.numbers{color:#555;font-size:12px}";

fn badge(g: Grade) -> String {
    format!(r#"<span class="grade {0}">{0}</span>"#, g.as_str())
}

/// The report as a complete HTML document.
pub fn to_html(r: &Report) -> String {
    let mut s = String::new();
    let title = format!("etcd performance report: {}", r.cluster);
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class="meta">Generated {} · history window {} · overall <span class="grade overall {g}">{g}</span></p><h2>Executive summary</h2><p class="summary">{}</p>"#,
        utc(r.generated_ms),
        humantime::format_duration(std::time::Duration::from_millis(r.window_ms)),
        escape(&r.summary),
        t = escape(&title),
        g = r.overall.as_str(),
    );
    areas(&mut s, r);
    findings(&mut s, r);
    recommendations(&mut s, r);
    consistency(&mut s, r);
    members(&mut s, r);
    trends(&mut s, r);
    benchmark(&mut s, r);
    s.push_str("</body></html>\n");
    s
}

fn areas(s: &mut String, r: &Report) {
    s.push_str("<h2>Grades</h2><table><tr><th>Area</th><th>Grade</th><th>Detail</th></tr>");
    for a in &r.areas {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.title),
            badge(a.grade),
            escape(&a.detail)
        );
    }
    s.push_str("</table>");
}

fn findings(s: &mut String, r: &Report) {
    s.push_str("<h2>Findings</h2>");
    if r.findings.is_empty() {
        s.push_str("<p>Nothing past a threshold.</p>");
        return;
    }
    s.push_str("<ul>");
    for f in &r.findings {
        let numbers: Vec<String> = f
            .numbers
            .iter()
            .map(|n| escape(format!("{} = {:.3} {}", n.name, n.value, n.unit).trim_end()))
            .collect();
        let _ = write!(
            s,
            r#"<li>{} <b>{}</b><br>{}<br><span class="numbers">{}</span></li>"#,
            badge(f.severity),
            escape(&f.title),
            escape(&f.detail),
            numbers.join(" · ")
        );
    }
    s.push_str("</ul>");
}

fn recommendations(s: &mut String, r: &Report) {
    s.push_str("<h2>Recommendations</h2>");
    if r.recommendations.is_empty() {
        s.push_str("<p>None: nothing in the evidence calls for a change.</p>");
        return;
    }
    s.push_str("<ol>");
    for x in &r.recommendations {
        let _ = write!(
            s,
            "<li>{} <b>{}</b><br>Because {}.{}</li>",
            badge(x.priority),
            escape(&x.action),
            escape(&x.because),
            x.command
                .as_ref()
                .map_or(String::new(), |c| format!("<br><code>{}</code>", escape(c)))
        );
    }
    s.push_str("</ol>");
}

fn consistency(s: &mut String, r: &Report) {
    let c = &r.consistency;
    let _ = write!(
        s,
        "<h2>Consistency</h2><table><tr><th>Cluster id</th><td>{}</td></tr><tr><th>Versions</th><td>{}</td></tr><tr><th>Revision spread</th><td>{}</td></tr><tr><th>Raft index spread</th><td>{}</td></tr>",
        escape(&c.cluster_ids.join(", ")),
        escape(&c.versions.join(", ")),
        c.revision_spread.map_or("n/a".into(), |v| v.to_string()),
        c.raft_index_spread.map_or("n/a".into(), |v| v.to_string()),
    );
    if let Some(h) = &c.hashkv {
        let _ = write!(
            s,
            "<tr><th>HashKV at revision {}</th><td>{}: {}</td></tr>",
            h.revision,
            c.hash_verdict(),
            escape(&h.answers_text())
        );
    }
    for p in &c.problems {
        let _ = write!(s, "<tr><th>Problem</th><td>{}</td></tr>", escape(p));
    }
    s.push_str("</table>");
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("–".into(), |v| format!("{v:.1} {unit}"))
}

fn members(s: &mut String, r: &Report) {
    s.push_str("<h2>Members</h2><table><tr><th>Member</th><th>Leader</th><th>Version</th><th>DB</th><th>WAL fsync p99</th><th>Commit p99</th><th>Peer RTT p99</th><th>CPU</th><th>Memory</th><th>Diagnosis</th></tr>");
    for m in &r.members {
        let f = &m.figures;
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.name),
            if m.is_leader { "yes" } else { "" },
            escape(m.version.as_deref().unwrap_or("–")),
            m.db_size_bytes.map_or("–".into(), fmt_mib),
            opt(f.wal_fsync_p99_ms, "ms"),
            opt(f.backend_commit_p99_ms, "ms"),
            opt(f.peer_rtt_p99_ms, "ms"),
            opt(f.cpu_percent, "%"),
            opt(f.memory_percent, "%"),
            escape(m.diagnosis.as_deref().unwrap_or("–")),
        );
    }
    s.push_str("</table>");
}

fn trends(s: &mut String, r: &Report) {
    let t = &r.trends;
    let _ = write!(
        s,
        "<h2>Trends</h2><p>History covered: {} · database growth: {} · leader changes: {} ({} a day)</p><div class=\"charts\">",
        humantime::format_duration(std::time::Duration::from_secs(t.covered_ms / 1000)),
        t.db_growth_bytes_per_day.map_or("n/a".into(), |g| format!(
            "{:.2} MiB a day",
            g / 1_048_576.0
        )),
        t.leader_changes,
        t.leader_changes_per_day
            .map_or("n/a".into(), |d| format!("{d:.1}")),
    );
    if t.charts.is_empty() {
        s.push_str("<p>No history in the window yet.</p>");
    }
    for c in &t.charts {
        s.push_str(&line_chart(c, 520.0, 220.0));
    }
    s.push_str("</div>");
}

fn benchmark(s: &mut String, r: &Report) {
    if let Some(b) = &r.benchmark {
        let _ = write!(
            s,
            "<h2>Benchmark</h2><p>{} {} — {} ok, {} failed, {:.0} requests/s, p50 {}, p99 {}</p>",
            badge(b.grade),
            escape(&b.verdict),
            b.run.succeeded,
            b.run.failed,
            b.run.requests_per_second,
            opt(b.run.p50_ms, "ms"),
            opt(b.run.p99_ms, "ms"),
        );
    }
    if r.past_benchmarks.is_empty() {
        return;
    }
    s.push_str("<h2>Earlier benchmark runs</h2><table><tr><th>Started</th><th>Workload</th><th>Requests/s</th><th>p99</th><th>Failed</th></tr>");
    for b in &r.past_benchmarks {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td></tr>",
            utc(b.started_ms),
            escape(&b.workload),
            b.requests_per_second,
            opt(b.p99_ms, "ms"),
            b.failed
        );
    }
    s.push_str("</table>");
}
