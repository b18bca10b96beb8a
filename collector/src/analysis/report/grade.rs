//! Grading: one [`AreaGrade`] per area from the members' figures, and a [`Finding`] for each
//! member past a threshold, with the diagnosis's cause when there is one.

use super::{
    AreaGrade, BenchmarkEvidence, BenchmarkSection, Consistency, Finding, Grade, Level,
    MemberInputs, Number, Recommendation, ReportInputs, ReportThresholds,
};
use crate::model::cluster::ClusterState;

/// What grading produced so far.
#[derive(Debug, Default)]
pub(super) struct Graded {
    pub areas: Vec<AreaGrade>,
    pub findings: Vec<Finding>,
    pub recommendations: Vec<Recommendation>,
}

/// A number with its unit, for findings.
pub(super) fn num(name: &str, value: f64, unit: &str) -> Number {
    Number {
        name: name.to_string(),
        value,
        unit: unit.to_string(),
    }
}

/// `12.3 ms`, `71 %`, `15.2 MiB`.
pub(super) fn fmt(value: f64, unit: &str) -> String {
    match unit {
        "bytes" => fmt_bytes(value),
        "%" => format!("{value:.0} %"),
        _ if value >= 100.0 => format!("{value:.0} {unit}"),
        _ => format!("{value:.1} {unit}"),
    }
}

/// Bytes in binary units.
pub(super) fn fmt_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// One metric area: how to read it and how to name it.
struct Metric {
    area: &'static str,
    title: &'static str,
    what: &'static str,
    unit: &'static str,
    cause: &'static str,
    value: fn(&MemberInputs) -> Option<f64>,
}

const METRICS: [Metric; 6] = [
    Metric {
        area: "disk",
        title: "Disk (WAL fsync p99)",
        what: "WAL fsync p99",
        unit: "ms",
        cause: "the storage under the WAL is slow: every write waits for this fsync",
        value: |m| m.wal_fsync_p99_ms,
    },
    Metric {
        area: "backend",
        title: "Backend commit p99",
        what: "backend commit p99",
        unit: "ms",
        cause: "the storage under the database file (bbolt) commits slowly",
        value: |m| m.backend_commit_p99_ms,
    },
    Metric {
        area: "cpu",
        title: "CPU",
        what: "CPU use",
        unit: "%",
        cause: "the process is close to the CPU it may use",
        value: |m| m.cpu_percent,
    },
    Metric {
        area: "memory",
        title: "Memory",
        what: "resident memory",
        unit: "%",
        cause: "the process is close to the memory it may use",
        value: |m| m.memory_percent,
    },
    Metric {
        area: "peer_network",
        title: "Peer latency (round trip p99)",
        what: "peer round-trip p99",
        unit: "ms",
        cause: "messages between members are slow: heartbeats and proposals wait on the network",
        value: |m| m.peer_rtt_p99_ms,
    },
    Metric {
        area: "network",
        title: "Network use",
        what: "network use",
        unit: "%",
        cause: "the link is close to saturation",
        value: |m| m.network_percent,
    },
];

fn level_of<'a>(t: &'a ReportThresholds, area: &str) -> &'a Level {
    match area {
        "disk" => &t.wal_fsync_p99_ms,
        "backend" => &t.backend_commit_p99_ms,
        "cpu" => &t.cpu_percent,
        "memory" => &t.memory_percent,
        "peer_network" => &t.peer_rtt_p99_ms,
        _ => &t.network_percent,
    }
}

/// Grades every area of `inputs`.
pub(super) fn grade(
    inputs: &ReportInputs,
    t: &ReportThresholds,
    consistency: &Consistency,
) -> Graded {
    let mut g = Graded::default();
    availability(inputs, &mut g);
    for m in &METRICS {
        metric_area(inputs, m, level_of(t, m.area), &mut g);
    }
    db_quota(inputs, t, &mut g);
    fragmentation(inputs, t, &mut g);
    consistency_area(consistency, &mut g);
    for a in inputs.alerts.iter().filter(|a| a.state == "firing") {
        let severity = match a.severity.as_str() {
            "critical" => Grade::Critical,
            "warning" => Grade::Warning,
            _ => continue,
        };
        g.findings.push(Finding {
            severity,
            area: "alerts".into(),
            member: a.member.clone(),
            title: format!("Alert {} is firing", a.name),
            detail: a.summary.clone(),
            numbers: vec![],
        });
    }
    g
}

/// The diagnosis of `member`, as a sentence, when it names a cause.
pub(super) fn diagnosis_of(inputs: &ReportInputs, member: &str) -> Option<(String, String)> {
    inputs
        .diagnoses
        .iter()
        .find(|d| d.member == member || d.member_id == member)
        .filter(|d| d.verdict.cause != "healthy" && d.verdict.cause != "inconclusive")
        .map(|d| (d.verdict.cause.clone(), d.verdict.summary.clone()))
}

fn metric_area(inputs: &ReportInputs, m: &Metric, level: &Level, g: &mut Graded) {
    let values: Vec<(&MemberInputs, f64)> = inputs
        .members
        .iter()
        .filter_map(|f| (m.value)(f).map(|v| (f, v)))
        .collect();
    let worst = values.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    let Some(&(worst_member, worst_value)) = worst else {
        g.areas.push(AreaGrade {
            area: m.area.into(),
            title: m.title.into(),
            grade: Grade::Unknown,
            value: None,
            unit: m.unit.into(),
            member: None,
            thresholds: Some(*level),
            detail: format!("not measured: no member reports its {}", m.what),
        });
        return;
    };
    let grade = Grade::of(worst_value, level);
    let others: Vec<String> = values
        .iter()
        .filter(|(f, _)| f.id != worst_member.id)
        .map(|(f, v)| format!("{} {}", f.name, fmt(*v, m.unit)))
        .collect();
    g.areas.push(AreaGrade {
        area: m.area.into(),
        title: m.title.into(),
        grade,
        value: Some(worst_value),
        unit: m.unit.into(),
        member: Some(worst_member.name.clone()),
        thresholds: Some(*level),
        detail: format!(
            "worst {} {} (warning ≥ {}, critical ≥ {}){}",
            worst_member.name,
            fmt(worst_value, m.unit),
            fmt(level.warning, m.unit),
            fmt(level.critical, m.unit),
            if others.is_empty() {
                String::new()
            } else {
                format!("; {}", others.join(", "))
            }
        ),
    });
    for (f, v) in values {
        let severity = Grade::of(v, level);
        if severity < Grade::Warning {
            continue;
        }
        g.findings
            .push(metric_finding(inputs, m, level, f, v, severity));
    }
}

fn metric_finding(
    inputs: &ReportInputs,
    m: &Metric,
    level: &Level,
    f: &MemberInputs,
    v: f64,
    severity: Grade,
) -> Finding {
    let bound = if severity == Grade::Critical {
        level.critical
    } else {
        level.warning
    };
    let mut detail = format!("Likely cause: {}.", m.cause);
    if let Some((cause, summary)) = diagnosis_of(inputs, &f.name) {
        detail.push_str(&format!(" Diagnosis: {cause} — {summary}"));
    }
    if m.area == "disk" && !f.wal_fsync_source.is_empty() {
        detail.push_str(&format!(" (p99 from {}).", f.wal_fsync_source));
    }
    Finding {
        severity,
        area: m.area.into(),
        member: Some(f.name.clone()),
        title: format!(
            "{} on {} is {} ({} ≥ {})",
            capitalise(m.what),
            f.name,
            fmt(v, m.unit),
            severity.as_str(),
            fmt(bound, m.unit)
        ),
        detail,
        numbers: vec![
            num(m.what, v, m.unit),
            num("warning", level.warning, m.unit),
            num("critical", level.critical, m.unit),
        ],
    }
}

pub(super) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn availability(inputs: &ReportInputs, g: &mut Graded) {
    let s = &inputs.state;
    let (grade, detail) = if s.updated_at_ms == 0 {
        (
            Grade::Unknown,
            "no health check has finished yet".to_string(),
        )
    } else if !s.quorum_ok || !s.has_leader {
        (
            Grade::Critical,
            format!(
                "{} of {} members answer, quorum {}; {}",
                s.available_members,
                s.member_count,
                s.quorum_size,
                if s.has_leader {
                    "quorum lost"
                } else {
                    "no leader"
                }
            ),
        )
    } else if !s.unreachable_members.is_empty() {
        (
            Grade::Warning,
            format!(
                "{} unreachable: {} of {} members answer",
                s.unreachable_members.join(", "),
                s.available_members,
                s.member_count
            ),
        )
    } else {
        (
            Grade::Good,
            format!(
                "all {} members answer; leader {}",
                s.member_count,
                s.leader.as_ref().map_or("?", |l| l.name.as_str())
            ),
        )
    };
    if grade >= Grade::Warning {
        g.findings.push(Finding {
            severity: grade,
            area: "availability".into(),
            member: s.unreachable_members.first().cloned(),
            title: format!("Availability: {detail}"),
            detail: "Members that do not answer cannot serve or vote; without quorum the cluster refuses every write.".into(),
            numbers: vec![
                num("members", s.member_count as f64, ""),
                num("answering", s.available_members as f64, ""),
                num("quorum", s.quorum_size as f64, ""),
            ],
        });
    }
    g.areas.push(AreaGrade {
        area: "availability".into(),
        title: "Availability".into(),
        grade,
        value: Some(s.available_members as f64),
        unit: "members".into(),
        member: None,
        thresholds: None,
        detail,
    });
}

/// (member name, database bytes, in-use bytes, quota bytes) of every member that reports them.
pub(super) fn db_figures(inputs: &ReportInputs) -> Vec<(String, f64, f64, Option<f64>)> {
    inputs
        .state
        .members
        .iter()
        .filter_map(|m| {
            let st = m.status.as_ref()?;
            let quota = inputs
                .members
                .iter()
                .find(|f| f.id == m.id)
                .and_then(|f| f.quota_backend_bytes)
                .filter(|q| *q > 0.0);
            Some((
                ClusterState::member_label(m),
                st.db_size_bytes as f64,
                st.db_size_in_use_bytes as f64,
                quota,
            ))
        })
        .collect()
}

/// Members with the NOSPACE alarm.
pub(super) fn nospace_members(inputs: &ReportInputs) -> Vec<String> {
    let s = &inputs.state;
    s.alarms
        .iter()
        .filter(|a| a.alarm == "NOSPACE")
        .map(|a| {
            s.member(&a.member_id)
                .map_or(a.member_id.clone(), ClusterState::member_label)
        })
        .collect()
}

fn db_quota(inputs: &ReportInputs, t: &ReportThresholds, g: &mut Graded) {
    let level = &t.db_quota_percent;
    let worst = db_figures(inputs)
        .into_iter()
        .filter_map(|(name, size, _, quota)| Some((name, size, quota?, 100.0 * size / quota?)))
        .max_by(|a, b| a.3.total_cmp(&b.3));
    let nospace = nospace_members(inputs);
    let mut area = AreaGrade {
        area: "db_quota".into(),
        title: "Database size vs quota".into(),
        grade: Grade::Unknown,
        value: None,
        unit: "%".into(),
        member: None,
        thresholds: Some(*level),
        detail: "not measured: no member reports etcd_server_quota_backend_bytes".into(),
    };
    if let Some((name, size, quota, pct)) = &worst {
        area.grade = Grade::of(*pct, level);
        area.value = Some(*pct);
        area.member = Some(name.clone());
        area.detail = format!(
            "largest {name}: {} of {} ({})",
            fmt_bytes(*size),
            fmt_bytes(*quota),
            fmt(*pct, "%")
        );
        if area.grade >= Grade::Warning {
            g.findings.push(Finding {
                severity: area.grade,
                area: "db_quota".into(),
                member: Some(name.clone()),
                title: format!("Database on {name} fills {} of its quota", fmt(*pct, "%")),
                detail: "When the database reaches --quota-backend-bytes etcd raises NOSPACE and refuses every write until space is reclaimed.".into(),
                numbers: vec![num("database", *size, "bytes"), num("quota", *quota, "bytes"), num("used", *pct, "%")],
            });
        }
    }
    if !nospace.is_empty() {
        area.grade = Grade::Critical;
        area.detail = format!("NOSPACE alarm on {}; {}", nospace.join(", "), area.detail);
        g.findings.push(Finding {
            severity: Grade::Critical,
            area: "db_quota".into(),
            member: nospace.first().cloned(),
            title: format!("NOSPACE alarm raised on {}: the cluster refuses writes", nospace.join(", ")),
            detail: "Cause: the database reached its space quota (--quota-backend-bytes). Reads still work; puts, txns and lease grants fail with \"etcdserver: mvcc: database space exceeded\" until space is reclaimed and the alarm disarmed.".into(),
            numbers: worst.iter().flat_map(|(_, s, q, p)| [num("database", *s, "bytes"), num("quota", *q, "bytes"), num("used", *p, "%")]).collect(),
        });
    }
    g.areas.push(area);
}

fn fragmentation(inputs: &ReportInputs, t: &ReportThresholds, g: &mut Graded) {
    let level = &t.fragmentation_percent;
    let worst = db_figures(inputs)
        .into_iter()
        .filter(|(_, size, _, _)| *size > 0.0)
        .map(|(name, size, in_use, _)| {
            let pct = 100.0 * (size - in_use).max(0.0) / size;
            (name, size, in_use, pct)
        })
        .max_by(|a, b| a.3.total_cmp(&b.3));
    let Some((name, size, in_use, pct)) = worst else {
        g.areas.push(AreaGrade {
            area: "fragmentation".into(),
            title: "Fragmentation".into(),
            grade: Grade::Unknown,
            value: None,
            unit: "%".into(),
            member: None,
            thresholds: Some(*level),
            detail: "not measured: no member reported its database size".into(),
        });
        return;
    };
    // A small file's free pages are not worth a defragmentation's pause.
    let grade = if size < MIN_DEFRAG_BYTES {
        Grade::Good
    } else {
        Grade::of(pct, level)
    };
    g.areas.push(AreaGrade {
        area: "fragmentation".into(),
        title: "Fragmentation".into(),
        grade,
        value: Some(pct),
        unit: "%".into(),
        member: Some(name.clone()),
        thresholds: Some(*level),
        detail: format!(
            "most fragmented {name}: {} free of {} ({})",
            fmt_bytes(size - in_use),
            fmt_bytes(size),
            fmt(pct, "%")
        ),
    });
    if grade >= Grade::Warning {
        g.findings.push(Finding {
            severity: grade,
            area: "fragmentation".into(),
            member: Some(name.clone()),
            title: format!("Database on {name} is {} free pages", fmt(pct, "%")),
            detail: "Compaction frees pages inside the file but never shrinks it; only a defragmentation returns them (and lowers the size counted against the quota).".into(),
            numbers: vec![num("file", size, "bytes"), num("in use", in_use, "bytes"), num("free", pct, "%")],
        });
    }
}

/// Databases smaller than this are never called fragmented.
pub(super) const MIN_DEFRAG_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

fn consistency_area(c: &Consistency, g: &mut Graded) {
    let hash_split = c.hashes_agree == Some(false);
    let grade = if c.cluster_ids.is_empty() {
        Grade::Unknown
    } else if hash_split || c.cluster_ids.len() > 1 {
        Grade::Critical
    } else if !c.problems.is_empty() {
        Grade::Warning
    } else {
        Grade::Good
    };
    let detail = if c.problems.is_empty() {
        let hash = match (&c.hashkv, c.hashes_agree) {
            (Some(h), Some(true)) => format!("HashKV agrees at revision {}", h.revision),
            _ => "HashKV not compared".to_string(),
        };
        format!(
            "one cluster id, version {}; revision spread {}, raft index spread {}; {hash}",
            c.versions.join("/"),
            c.revision_spread.unwrap_or(0),
            c.raft_index_spread.unwrap_or(0)
        )
    } else {
        c.problems.join("; ")
    };
    for p in &c.problems {
        g.findings.push(Finding {
            severity: grade,
            area: "consistency".into(),
            member: None,
            title: format!("Members disagree: {p}"),
            detail: "Members of one cluster must share one cluster id and, at one revision, one key-value hash.".into(),
            numbers: vec![],
        });
    }
    g.areas.push(AreaGrade {
        area: "consistency".into(),
        title: "Consistency".into(),
        grade,
        value: None,
        unit: String::new(),
        member: None,
        thresholds: None,
        detail,
    });
}

/// Grades the report's own benchmark run, with its area and finding.
pub(super) fn benchmark(
    run: &BenchmarkEvidence,
    t: &ReportThresholds,
    g: &mut Graded,
) -> BenchmarkSection {
    let level = &t.benchmark_p99_ms;
    let mut reasons = Vec::new();
    let mut grade = match (&run.error, run.p99_ms) {
        (Some(e), _) => {
            reasons.push(format!("the run failed: {e}"));
            Grade::Critical
        }
        (None, Some(p99)) => {
            reasons.push(format!(
                "p99 {} (warning ≥ {}, critical ≥ {})",
                fmt(p99, "ms"),
                fmt(level.warning, "ms"),
                fmt(level.critical, "ms")
            ));
            Grade::of(p99, level)
        }
        (None, None) => Grade::Unknown,
    };
    if run.failed > 0 {
        reasons.push(format!(
            "{} of {} requests failed",
            run.failed,
            run.failed + run.succeeded
        ));
        grade = grade.max(Grade::Warning);
    }
    // etcdctl check perf's rule: at least 90 % of the asked throughput.
    if let Some(target) = run.target_rate.filter(|r| *r > 0.0)
        && run.error.is_none()
        && run.requests_per_second < 0.9 * target
    {
        reasons.push(format!(
            "{:.0} requests/s of the {target:.0} asked (< 90 %)",
            run.requests_per_second
        ));
        grade = grade.max(Grade::Warning);
    }
    let verdict = reasons.join("; ");
    if grade >= Grade::Warning {
        g.findings.push(Finding {
            severity: grade,
            area: "benchmark".into(),
            member: None,
            title: format!("Benchmark {}: {verdict}", run.workload),
            detail: "A small rate-limited write load, like `etcdctl check perf`, measured from the collector.".into(),
            numbers: run.p99_ms.iter().map(|p| num("p99", *p, "ms")).chain([num("requests/s", run.requests_per_second, "")]).collect(),
        });
    }
    g.areas.push(AreaGrade {
        area: "benchmark".into(),
        title: "Benchmark".into(),
        grade,
        value: run.p99_ms,
        unit: "ms".into(),
        member: None,
        thresholds: Some(*level),
        detail: verdict.clone(),
    });
    BenchmarkSection {
        grade,
        run: run.clone(),
        verdict,
    }
}
