//! The report as Markdown (GitHub-flavoured tables), for tickets, chat and terminals.

use std::fmt::Write;

use crate::analysis::report::{Grade, Report};

fn badge(g: Grade) -> &'static str {
    match g {
        Grade::Good => "🟢 good",
        Grade::Warning => "🟠 warning",
        Grade::Critical => "🔴 critical",
        Grade::Unknown => "⚪ unknown",
    }
}

/// A table cell: no pipe or newline breaks the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The report as Markdown.
pub fn to_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# etcd performance report: {}\n\nGenerated {} · history window {} · overall **{}**\n",
        r.cluster,
        utc(r.generated_ms),
        humantime::format_duration(std::time::Duration::from_millis(r.window_ms)),
        badge(r.overall)
    );
    let _ = writeln!(s, "## Executive summary\n\n{}\n", r.summary);
    areas(&mut s, r);
    findings(&mut s, r);
    recommendations(&mut s, r);
    consistency(&mut s, r);
    members(&mut s, r);
    trends(&mut s, r);
    benchmark(&mut s, r);
    s
}

fn areas(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Grades\n\n| Area | Grade | Detail |\n|---|---|---|");
    for a in &r.areas {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            a.title,
            badge(a.grade),
            cell(&a.detail)
        );
    }
    s.push('\n');
}

fn findings(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Findings\n");
    if r.findings.is_empty() {
        let _ = writeln!(s, "Nothing past a threshold.\n");
    }
    for f in &r.findings {
        let numbers: Vec<String> = f
            .numbers
            .iter()
            .map(|n| {
                format!("{} = {:.3} {}", n.name, n.value, n.unit)
                    .trim_end()
                    .to_string()
            })
            .collect();
        let _ = writeln!(
            s,
            "- **{}** {} — {}",
            f.severity.as_str(),
            f.title,
            f.detail
        );
        if !numbers.is_empty() {
            let _ = writeln!(s, "  - numbers: {}", numbers.join("; "));
        }
    }
    s.push('\n');
}

fn recommendations(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Recommendations\n");
    if r.recommendations.is_empty() {
        let _ = writeln!(s, "None: nothing in the evidence calls for a change.\n");
    }
    for (i, x) in r.recommendations.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}. **[{}]** {} — because {}.",
            i + 1,
            x.priority.as_str(),
            x.action,
            x.because
        );
        if let Some(c) = &x.command {
            let _ = writeln!(s, "   `{c}`");
        }
    }
    s.push('\n');
}

fn consistency(s: &mut String, r: &Report) {
    let c = &r.consistency;
    let _ = writeln!(
        s,
        "## Consistency\n\n- cluster id: {}\n- versions: {}\n- revision spread: {}\n- raft index spread: {}",
        c.cluster_ids.join(", "),
        c.versions.join(", "),
        c.revision_spread.map_or("n/a".into(), |v| v.to_string()),
        c.raft_index_spread.map_or("n/a".into(), |v| v.to_string()),
    );
    if let Some(h) = &c.hashkv {
        let _ = writeln!(
            s,
            "- HashKV at revision {}: {} ({})",
            h.revision,
            c.hash_verdict(),
            h.answers_text()
        );
    }
    for p in &c.problems {
        let _ = writeln!(s, "- problem: {p}");
    }
    s.push('\n');
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("–".into(), |v| {
        format!("{v:.1} {unit}").trim_end().to_string()
    })
}

fn members(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "## Members\n\n| Member | Leader | Version | DB | WAL fsync p99 | Commit p99 | Peer RTT p99 | CPU | Memory | Diagnosis |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for m in &r.members {
        let f = &m.figures;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&m.name),
            if m.is_leader { "yes" } else { "" },
            m.version.as_deref().unwrap_or("–"),
            m.db_size_bytes.map_or("–".into(), fmt_mib),
            opt(f.wal_fsync_p99_ms, "ms"),
            opt(f.backend_commit_p99_ms, "ms"),
            opt(f.peer_rtt_p99_ms, "ms"),
            opt(f.cpu_percent, "%"),
            opt(f.memory_percent, "%"),
            m.diagnosis.as_deref().unwrap_or("–"),
        );
    }
    s.push('\n');
}

/// Bytes as MiB.
pub fn fmt_mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / 1_048_576.0)
}

fn trends(s: &mut String, r: &Report) {
    let t = &r.trends;
    let _ = writeln!(
        s,
        "## Trends\n\n- history covered: {}\n- database growth: {}\n- leader changes: {} ({} a day)\n- worst WAL fsync p99 of an interval: {}\n- worst write probe p99: {}\n",
        humantime::format_duration(std::time::Duration::from_secs(t.covered_ms / 1000)),
        t.db_growth_bytes_per_day.map_or("n/a".into(), |g| format!(
            "{:.1} MiB a day",
            g / 1_048_576.0
        )),
        t.leader_changes,
        t.leader_changes_per_day
            .map_or("n/a".into(), |d| format!("{d:.1}")),
        opt(t.max_wal_fsync_window_p99_ms, "ms"),
        opt(t.max_write_p99_ms, "ms"),
    );
}

fn benchmark(s: &mut String, r: &Report) {
    if let Some(b) = &r.benchmark {
        let _ = writeln!(
            s,
            "## Benchmark\n\n{} — {} ({} ok, {} failed, {:.0} req/s, p50 {}, p99 {})\n",
            badge(b.grade),
            b.verdict,
            b.run.succeeded,
            b.run.failed,
            b.run.requests_per_second,
            opt(b.run.p50_ms, "ms"),
            opt(b.run.p99_ms, "ms"),
        );
    }
    if !r.past_benchmarks.is_empty() {
        let _ = writeln!(
            s,
            "## Earlier benchmark runs\n\n| Started | Workload | req/s | p99 | Failed |\n|---|---|---|---|---|"
        );
        for b in &r.past_benchmarks {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {} |",
                utc(b.started_ms),
                b.workload,
                b.requests_per_second,
                opt(b.p99_ms, "ms"),
                b.failed
            );
        }
        s.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
    }
}
