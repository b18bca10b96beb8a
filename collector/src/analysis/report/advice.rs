//! Recommendations that follow from the evidence, and the executive summary.
//!
//! The rules come from etcd's own guides: the tuning guide (heartbeat interval ≈ the largest
//! round trip between members, election timeout ≈ 10 × the heartbeat), the hardware guide
//! (≥ 50 sequential IOPS for the WAL, 500 for heavily loaded clusters), and the maintenance
//! guide (defragment to return free pages; NOSPACE needs compaction, defragmentation and a
//! disarm).

use super::grade::{
    Graded, MIN_DEFRAG_BYTES, capitalise, db_figures, fmt, fmt_bytes, nospace_members,
};
use super::{Consistency, Grade, Recommendation, ReportInputs, ReportThresholds, Trends};

/// etcd's default `--heartbeat-interval`, ms.
pub const DEFAULT_HEARTBEAT_MS: f64 = 100.0;
/// Sequential IOPS the hardware guide asks for at the least.
pub const MIN_IOPS: f64 = 50.0;
/// Sequential IOPS the hardware guide asks for under heavy load.
pub const HEAVY_IOPS: f64 = 500.0;
/// The largest quota etcd recommends.
const MAX_SUGGESTED_QUOTA: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0;

fn area_grade(g: &Graded, area: &str) -> Grade {
    g.areas
        .iter()
        .find(|a| a.area == area)
        .map_or(Grade::Unknown, |a| a.grade)
}

fn rec(
    priority: Grade,
    area: &str,
    member: Option<&str>,
    action: String,
    because: String,
    command: Option<String>,
) -> Recommendation {
    Recommendation {
        priority,
        area: area.into(),
        member: member.map(str::to_string),
        action,
        because,
        command,
    }
}

/// Adds the recommendations the evidence supports.
pub(super) fn recommend(
    inputs: &ReportInputs,
    t: &ReportThresholds,
    trends: &Trends,
    g: &mut Graded,
) {
    let mut out = Vec::new();
    disk_class(inputs, t, &mut out);
    timeouts(inputs, &mut out);
    space(inputs, t, g, trends, &mut out);
    diagnoses(inputs, &mut out);
    resources(inputs, t, g, &mut out);
    if area_grade(g, "consistency") >= Grade::Warning {
        out.push(rec(
            area_grade(g, "consistency"),
            "consistency",
            None,
            "Investigate the disagreement before anything else: stop writes to a diverged member, check it with `etcdctl endpoint hashkv --cluster`, and replace it from a healthy member's snapshot".into(),
            "members of one cluster disagree (see the consistency section)".into(),
            Some("etcd-monitor ctl endpoint hashkv --cluster".into()),
        ));
    }
    if let Some(per_day) = trends.leader_changes_per_day.filter(|d| *d > 24.0) {
        out.push(rec(
            Grade::Warning,
            "availability",
            None,
            "Find why leadership moves: slow WAL fsyncs and slow peer links both make followers miss heartbeats".into(),
            format!("{per_day:.0} leader changes a day in the window ({} seen); each one stalls writes for an election", trends.leader_changes),
            None,
        ));
    }
    g.recommendations.extend(out);
}

fn disk_class(inputs: &ReportInputs, t: &ReportThresholds, out: &mut Vec<Recommendation>) {
    for f in &inputs.members {
        let Some(p99) = f.wal_fsync_p99_ms.filter(|p| *p > 0.0) else {
            continue;
        };
        let grade = Grade::of(p99, &t.wal_fsync_p99_ms);
        if grade < Grade::Warning {
            continue;
        }
        // One fsync at a time: the sequential IOPS the WAL gets at its p99.
        let iops = 1000.0 / p99;
        let class = if iops < MIN_IOPS {
            format!("below etcd's minimum of {MIN_IOPS:.0} sequential IOPS")
        } else if iops < HEAVY_IOPS {
            format!(
                "enough for a light load, below the {HEAVY_IOPS:.0} IOPS etcd's hardware guide asks for under heavy load"
            )
        } else {
            "fast enough on average but with slow outliers".to_string()
        };
        out.push(rec(
            grade,
            "disk",
            Some(&f.name),
            format!("Move {}'s data dir (at least its WAL, --wal-dir) to a dedicated SSD or NVMe device with no other heavy writers", f.name),
            format!("WAL fsync p99 {} ≈ {iops:.0} sequential IOPS at p99: {class}", fmt(p99, "ms")),
            Some("--wal-dir=/path/on/ssd".into()),
        ));
    }
}

fn round_up(ms: f64, step: f64) -> f64 {
    (ms / step).ceil() * step
}

fn timeouts(inputs: &ReportInputs, out: &mut Vec<Recommendation>) {
    let max = |f: fn(&super::MemberInputs) -> Option<f64>| {
        inputs.members.iter().filter_map(f).max_by(f64::total_cmp)
    };
    let rtt = max(|m| m.peer_rtt_p99_ms);
    let fsync = max(|m| m.wal_fsync_p99_ms);
    // A heartbeat leaves the leader after its own WAL sync and crosses one round trip.
    let needed = rtt.unwrap_or(0.0) + fsync.unwrap_or(0.0);
    if needed <= DEFAULT_HEARTBEAT_MS {
        return;
    }
    let heartbeat = round_up(needed, 50.0);
    let election = 10.0 * heartbeat;
    out.push(rec(
        Grade::Warning,
        "timeouts",
        None,
        format!("Raise --heartbeat-interval to {heartbeat:.0} ms and --election-timeout to {election:.0} ms on every member"),
        format!(
            "measured peer round trip p99 {} and WAL fsync p99 {}: a heartbeat needs ~{needed:.0} ms, more than the default {DEFAULT_HEARTBEAT_MS:.0} ms, so followers call elections (etcd tuning guide: heartbeat ≈ max RTT, election ≈ 10 × heartbeat)",
            rtt.map_or("n/a".into(), |v| fmt(v, "ms")),
            fsync.map_or("n/a".into(), |v| fmt(v, "ms")),
        ),
        Some(format!("--heartbeat-interval={heartbeat:.0} --election-timeout={election:.0}")),
    ));
}

fn space(
    inputs: &ReportInputs,
    t: &ReportThresholds,
    g: &Graded,
    trends: &Trends,
    out: &mut Vec<Recommendation>,
) {
    let figures = db_figures(inputs);
    let nospace = nospace_members(inputs);
    if !nospace.is_empty() {
        out.push(rec(
            Grade::Critical,
            "db_quota",
            nospace.first().map(String::as_str),
            "Recover from NOSPACE now: compact old revisions, defragment every member, disarm the alarm, then stop the growth or raise the quota".into(),
            format!("NOSPACE is raised on {}: every write is refused", nospace.join(", ")),
            Some("etcd-monitor ctl recover-nospace".into()),
        ));
    }
    if nospace.is_empty() {
        quota(&figures, t, area_grade(g, "db_quota"), out);
    }
    if area_grade(g, "fragmentation") >= Grade::Warning
        && let Some((name, size, in_use, _)) = figures
            .iter()
            .filter(|f| f.1 >= MIN_DEFRAG_BYTES)
            .max_by(|a, b| (1.0 - a.2 / a.1).total_cmp(&(1.0 - b.2 / b.1)))
    {
        let pct = 100.0 * (size - in_use) / size;
        out.push(rec(
            area_grade(g, "fragmentation"),
            "fragmentation",
            Some(name),
            format!(
                "Defragment, member by member (followers first), to return {} on {name}",
                fmt_bytes(size - in_use)
            ),
            format!(
                "{} of the database file on {name} is free pages",
                fmt(pct, "%")
            ),
            Some(format!(
                "etcd-monitor ctl defrag --rolling --if-fragmented={:.0}%,1MB",
                t.fragmentation_percent.warning
            )),
        ));
    }
    growth(&figures, trends, out);
}

/// Near the quota without NOSPACE: defragment when that reclaims enough, else raise the quota.
fn quota(
    figures: &[(String, f64, f64, Option<f64>)],
    t: &ReportThresholds,
    quota_grade: Grade,
    out: &mut Vec<Recommendation>,
) {
    for (name, size, in_use, quota) in figures {
        let Some(quota) = quota else { continue };
        let pct = 100.0 * size / quota;
        let free = (size - in_use).max(0.0);
        if Grade::of(pct, &t.db_quota_percent) >= Grade::Warning {
            let (action, command) = if free / size >= 0.2 {
                (
                    format!(
                        "Defragment {name} to reclaim {} of free pages",
                        fmt_bytes(free)
                    ),
                    Some("etcd-monitor ctl defrag --rolling".to_string()),
                )
            } else {
                let suggested = (quota * 2.0).min(MAX_SUGGESTED_QUOTA);
                (
                    format!(
                        "Raise --quota-backend-bytes to {} (or delete and compact data: only {} of the file is free)",
                        fmt_bytes(suggested),
                        fmt_bytes(free)
                    ),
                    Some(format!("--quota-backend-bytes={suggested:.0}")),
                )
            };
            out.push(rec(
                quota_grade.max(Grade::Warning),
                "db_quota",
                Some(name),
                action,
                format!(
                    "the database on {name} is {} of {} ({})",
                    fmt_bytes(*size),
                    fmt_bytes(*quota),
                    fmt(pct, "%")
                ),
                command,
            ));
        }
    }
}

fn growth(
    figures: &[(String, f64, f64, Option<f64>)],
    trends: &Trends,
    out: &mut Vec<Recommendation>,
) {
    let Some(rate) = trends.db_growth_bytes_per_day.filter(|r| *r > 0.0) else {
        return;
    };
    let Some((name, size, _, Some(quota))) = figures.iter().max_by(|a, b| a.1.total_cmp(&b.1))
    else {
        return;
    };
    let days = (quota - size).max(0.0) / rate;
    if days < 7.0 {
        out.push(rec(
            if days < 1.0 { Grade::Critical } else { Grade::Warning },
            "db_quota",
            Some(name),
            "Stop the growth before it reaches the quota: enable --auto-compaction-retention, delete what is no longer needed, or raise the quota".into(),
            format!("the database grows {} a day; at that rate {name} reaches its quota in {days:.1} days", fmt_bytes(rate)),
            Some("--auto-compaction-mode=periodic --auto-compaction-retention=1h".into()),
        ));
    }
}

fn diagnoses(inputs: &ReportInputs, out: &mut Vec<Recommendation>) {
    for d in &inputs.diagnoses {
        let v = &d.verdict;
        match v.cause.as_str() {
            "noisy_neighbor" => {
                let who = v.neighbor.as_ref().map_or("another process".to_string(), |n| {
                    format!("{} (pid {}, cgroup {})", n.comm, n.pid, n.cgroup)
                });
                out.push(rec(
                    Grade::Warning,
                    "disk",
                    Some(&d.member),
                    format!("Move etcd on {} away from {who}, or that workload away from etcd's disk", d.member),
                    format!("diagnosis: {}", v.summary),
                    None,
                ));
            }
            "cpu_starved" => out.push(rec(
                Grade::Warning,
                "cpu",
                Some(&d.member),
                format!("Give {} more CPU (raise or drop its CPU limit; etcd needs to run on time to send heartbeats)", d.member),
                format!("diagnosis: {}", v.summary),
                None,
            )),
            "peer_network_slow" => out.push(rec(
                Grade::Warning,
                "peer_network",
                Some(&d.member),
                format!("Check the network between {} and {}", d.member, v.peer.as_deref().unwrap_or("its peers")),
                format!("diagnosis: {}", v.summary),
                None,
            )),
            "io_throttled" => out.push(rec(
                Grade::Warning,
                "disk",
                Some(&d.member),
                format!("Raise or remove the I/O limit (blkio throttle or io.max) of cgroup {} on {}: etcd's WAL is held at the limit", v.cgroup.as_deref().unwrap_or("?"), d.member),
                format!("diagnosis: {}", v.summary),
                None,
            )),
            "wal_write_slow" => out.push(rec(
                Grade::Warning,
                "disk",
                Some(&d.member),
                format!("WAL write() calls on {} are slow while fdatasync is fast: check memory pressure (page cache, dirty limits) and the filesystem, as in etcd-io/etcd#17615", d.member),
                format!("diagnosis: {}", v.summary),
                None,
            )),
            "stopped" => out.push(rec(
                Grade::Critical,
                "availability",
                Some(&d.member),
                format!("The etcd process of {} is stopped (SIGSTOP or a frozen cgroup): resume it (kill -CONT) or restart it", d.member),
                format!("diagnosis: {}", v.summary),
                None,
            )),
            _ => {}
        }
    }
}

fn resources(
    inputs: &ReportInputs,
    t: &ReportThresholds,
    g: &Graded,
    out: &mut Vec<Recommendation>,
) {
    for f in &inputs.members {
        if let Some(p) = f
            .cpu_percent
            .filter(|p| Grade::of(*p, &t.cpu_percent) >= Grade::Warning)
        {
            out.push(rec(
                Grade::of(p, &t.cpu_percent),
                "cpu",
                Some(&f.name),
                format!(
                    "Raise {}'s CPU limit or reduce its load (expensive ranges, many watchers)",
                    f.name
                ),
                format!("CPU use {} of its limit", fmt(p, "%")),
                None,
            ));
        }
        if let Some(p) = f
            .memory_percent
            .filter(|p| Grade::of(*p, &t.memory_percent) >= Grade::Warning)
        {
            out.push(rec(Grade::of(p, &t.memory_percent), "memory", Some(&f.name), format!("Raise {}'s memory limit before the OOM killer acts, and look for large ranges or many watchers", f.name), format!("resident memory {} of its limit", fmt(p, "%")), None));
        }
    }
    if area_grade(g, "peer_network") >= Grade::Warning
        && !inputs
            .diagnoses
            .iter()
            .any(|d| d.verdict.cause == "peer_network_slow")
    {
        out.push(rec(area_grade(g, "peer_network"), "peer_network", None, "Put the members on a faster, less loaded network (same region, no shared saturated links)".into(), "peer round trips are past their threshold (see the peer latency area)".into(), None));
    }
}

/// The executive summary: the verdict, what is wrong and where, and the first thing to do.
pub(super) fn summary(
    inputs: &ReportInputs,
    overall: Grade,
    g: &Graded,
    consistency: &Consistency,
    trends: &Trends,
) -> String {
    let s = &inputs.state;
    let bad: Vec<&super::AreaGrade> = g
        .areas
        .iter()
        .filter(|a| a.grade >= Grade::Warning)
        .collect();
    let mut out = format!(
        "Cluster {} is {}: {} members, {} answering",
        s.cluster,
        match overall {
            Grade::Good => "in good health".to_string(),
            Grade::Unknown => "not yet measured".to_string(),
            g => format!("in {} condition", g.as_str().to_uppercase()),
        },
        s.member_count,
        s.available_members,
    );
    match &s.leader {
        Some(l) => out.push_str(&format!(", leader {}.", l.name)),
        None => out.push_str(", no leader."),
    }
    if bad.is_empty() {
        out.push_str(" Every measured area is within its thresholds.");
    }
    for a in &bad {
        out.push_str(&format!(
            " {} is {}: {}.",
            a.title,
            a.grade.as_str(),
            a.detail
        ));
    }
    for f in g
        .findings
        .iter()
        .filter(|f| f.severity == Grade::Critical && f.area != "alerts")
        .take(3)
    {
        if let Some(m) = &f.member
            && let Some((cause, _)) = super::grade::diagnosis_of(inputs, m)
        {
            out.push_str(&format!(" Diagnosis for {m}: {cause}."));
        }
    }
    match consistency.hashes_agree {
        Some(true) => out.push_str(" Members agree on cluster id and data (HashKV)."),
        Some(false) => out.push_str(" Members DISAGREE on their data (HashKV)."),
        None => {}
    }
    if let Some(rate) = trends.db_growth_bytes_per_day {
        out.push_str(&format!(" The database grows {} a day.", fmt_bytes(rate)));
    }
    if let Some(first) = g.recommendations.first() {
        out.push_str(&format!(" First action: {}.", capitalise(&first.action)));
    }
    out
}
