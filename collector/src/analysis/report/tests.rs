use super::*;
use crate::analysis::diagnosis::{MemberDiagnosis, engine::Verdict};
use crate::model::cluster::{Alarm, LeaderInfo, MemberState, MemberStatus};

fn member(i: usize, db: i64, in_use: i64) -> MemberState {
    MemberState {
        id: format!("a{i}"),
        name: format!("m{i}"),
        reachable: true,
        is_leader: i == 0,
        status: Some(MemberStatus {
            cluster_id: "c1".into(),
            version: "3.4.27".into(),
            revision: 100,
            raft_index: 200 + i as u64,
            db_size_bytes: db,
            db_size_in_use_bytes: in_use,
            ..MemberStatus::default()
        }),
        ..MemberState::default()
    }
}

fn healthy() -> ReportInputs {
    let mut state = ClusterState {
        cluster: "default".into(),
        updated_at_ms: 1,
        healthy: true,
        has_leader: true,
        member_count: 3,
        available_members: 3,
        quorum_size: 2,
        quorum_ok: true,
        leader: Some(LeaderInfo {
            id: "a0".into(),
            name: "m0".into(),
            term: 2,
        }),
        ..ClusterState::default()
    };
    state.members = (0..3).map(|i| member(i, 1 << 20, 1 << 20)).collect();
    ReportInputs {
        generated_ms: 10_000_000,
        window_ms: 3_600_000,
        members: (0..3)
            .map(|i| MemberInputs {
                id: format!("a{i}"),
                name: format!("m{i}"),
                wal_fsync_p99_ms: Some(1.5),
                backend_commit_p99_ms: Some(3.0),
                peer_rtt_p99_ms: Some(0.8),
                quota_backend_bytes: Some(2.0 * 1024.0 * 1024.0 * 1024.0),
                ..MemberInputs::default()
            })
            .collect(),
        hashkv: Some(HashKvRound {
            revision: 100,
            answers: (0..3)
                .map(|i| HashKvAnswer {
                    member: format!("m{i}"),
                    hash: Some(42),
                    compact_revision: Some(0),
                    error: None,
                })
                .collect(),
        }),
        state,
        ..ReportInputs::default()
    }
}

fn area(r: &Report, key: &str) -> Grade {
    r.areas
        .iter()
        .find(|a| a.area == key)
        .map(|a| a.grade)
        .unwrap_or_else(|| panic!("no area {key}"))
}

#[test]
fn a_healthy_cluster_grades_good_with_no_recommendation() {
    let r = build(&healthy(), &ReportThresholds::DEFAULT);
    assert_eq!(r.overall, Grade::Good, "{:#?}", r.areas);
    assert_eq!(area(&r, "disk"), Grade::Good);
    assert_eq!(area(&r, "cpu"), Grade::Unknown);
    assert_eq!(area(&r, "consistency"), Grade::Good);
    assert_eq!(r.consistency.hashes_agree, Some(true));
    assert!(r.recommendations.is_empty(), "{:#?}", r.recommendations);
    assert!(r.summary.contains("good health"), "{}", r.summary);
}

#[test]
fn a_slow_wal_is_critical_names_the_member_cause_and_actions() {
    let mut inputs = healthy();
    inputs.members[1].wal_fsync_p99_ms = Some(80.0);
    inputs.members[1].peer_rtt_p99_ms = Some(40.0);
    inputs.diagnoses.push(MemberDiagnosis {
        cluster: "default".into(),
        member: "m1".into(),
        member_id: "a1".into(),
        evaluated_at_ms: 1,
        cause_since_ms: 1,
        window_seconds: 60.0,
        verdict: Verdict {
            cause: "disk_slow".into(),
            reason: None,
            neighbor: None,
            peer: None,
            peer_cause: None,
            cgroup: None,
            missing: vec![],
            summary: "the device is slow".into(),
            evidence: Default::default(),
        },
    });
    let r = build(&inputs, &ReportThresholds::DEFAULT);
    assert_eq!(r.overall, Grade::Critical);
    assert_eq!(area(&r, "disk"), Grade::Critical);
    let f = &r.findings[0];
    assert_eq!(f.member.as_deref(), Some("m1"));
    assert!(f.detail.contains("disk_slow"), "{f:?}");
    let disk = r
        .recommendations
        .iter()
        .find(|x| x.area == "disk")
        .expect("disk advice");
    assert!(disk.because.contains("12 sequential IOPS"), "{disk:?}");
    assert!(disk.because.contains("minimum of 50"), "{disk:?}");
    let timeouts = r
        .recommendations
        .iter()
        .find(|x| x.area == "timeouts")
        .expect("timeout advice");
    // 80 ms fsync + 40 ms RTT → 150 ms heartbeat, 1500 ms election.
    assert!(timeouts.action.contains("150 ms"), "{timeouts:?}");
    assert!(timeouts.action.contains("1500 ms"), "{timeouts:?}");
    assert!(r.summary.contains("m1"), "{}", r.summary);
}

#[test]
fn nospace_and_fragmentation_lead_to_recovery_and_defrag() {
    let mut inputs = healthy();
    let quota = 16.0 * 1024.0 * 1024.0;
    for m in &mut inputs.members {
        m.quota_backend_bytes = Some(quota);
    }
    for m in &mut inputs.state.members {
        if let Some(s) = &mut m.status {
            s.db_size_bytes = 16 * 1024 * 1024;
            s.db_size_in_use_bytes = 15 * 1024 * 1024;
        }
    }
    inputs.state.alarms.push(Alarm {
        member_id: "a2".into(),
        alarm: "NOSPACE".into(),
    });
    let r = build(&inputs, &ReportThresholds::DEFAULT);
    assert_eq!(area(&r, "db_quota"), Grade::Critical);
    let top = &r.recommendations[0];
    assert_eq!(top.priority, Grade::Critical);
    assert!(top.action.contains("NOSPACE"), "{top:?}");
    assert_eq!(top.member.as_deref(), Some("m2"));
    assert!(r.findings.iter().any(|f| f.title.contains("NOSPACE")));

    // Half free pages, no alarm: defragment.
    let mut frag = healthy();
    for m in &mut frag.state.members {
        if let Some(s) = &mut m.status {
            s.db_size_bytes = 64 * 1024 * 1024;
            s.db_size_in_use_bytes = 20 * 1024 * 1024;
        }
    }
    let r = build(&frag, &ReportThresholds::DEFAULT);
    assert_eq!(area(&r, "fragmentation"), Grade::Warning);
    assert!(
        r.recommendations
            .iter()
            .any(|x| x.action.starts_with("Defragment")),
        "{:#?}",
        r.recommendations
    );
}

#[test]
fn diverged_hashes_are_critical() {
    let mut inputs = healthy();
    if let Some(h) = &mut inputs.hashkv {
        h.answers[2].hash = Some(7);
    }
    let r = build(&inputs, &ReportThresholds::DEFAULT);
    assert_eq!(area(&r, "consistency"), Grade::Critical);
    assert_eq!(r.consistency.hashes_agree, Some(false));
    assert!(r.consistency.problems[0].contains("m2=7"));
}

#[test]
fn trends_compute_growth_and_thin_lines() {
    let mut inputs = healthy();
    for i in 0..1000u64 {
        inputs.history.push(crate::store::HistoryPoint {
            ts_ms: i * 1000,
            cluster: "default".into(),
            member: "m0".into(),
            db_size_bytes: Some((1_000_000 + i * 100) as f64),
            wal_fsync_window_p99_ms: Some(1.0),
            ..Default::default()
        });
    }
    let r = build(&inputs, &ReportThresholds::DEFAULT);
    // 99 900 bytes over 999 s → 8 640 000 bytes a day.
    let g = r.trends.db_growth_bytes_per_day.expect("growth");
    assert!((g - 8_640_000.0).abs() < 1.0, "{g}");
    let line = &r.trends.charts[0].lines[0];
    assert_eq!(line.points.len(), trends::MAX_POINTS);
    assert_eq!(line.points.last().map(|p| p[0]), Some(999_000.0));
}

#[test]
fn a_failed_or_slow_benchmark_is_graded() {
    let mut inputs = healthy();
    inputs.benchmark = Some(BenchmarkEvidence {
        run_id: "r".into(),
        workload: "write".into(),
        origin: "on demand".into(),
        started_ms: 1,
        succeeded: 900,
        failed: 0,
        requests_per_second: 50.0,
        target_rate: Some(200.0),
        p50_ms: Some(2.0),
        p99_ms: Some(150.0),
        error: None,
    });
    let r = build(&inputs, &ReportThresholds::DEFAULT);
    let b = r.benchmark.expect("section");
    assert_eq!(b.grade, Grade::Critical);
    assert!(b.verdict.contains("< 90 %"), "{}", b.verdict);
    assert_eq!(r.overall, Grade::Critical);
}
