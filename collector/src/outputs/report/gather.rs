//! Gathers a [`ReportInputs`] for one cluster from what the collector holds — its state, the
//! history store, diagnoses, active alerts, agent resources — plus one HashKV round asked of
//! every member at the same revision. The only etcd calls the report makes are here.

use std::{sync::Arc, time::Duration};

use etcd_monitor_proto::v1::MemberResources;

use crate::analysis::report::{
    ActiveAlert, BenchmarkEvidence, HashKvAnswer, HashKvRound, MemberInputs, ReportInputs,
};
use crate::model::cluster::{ClusterHandle, ClusterState, MemberState};
use crate::store::{HistoryPoint, HistoryQuery, Store};

/// The history window when the caller gives none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The span whose interval p99s make a member's "recent" WAL fsync p99.
pub const RECENT: Duration = Duration::from_secs(300);
/// History points read for the trends (all members together).
const HISTORY_POINTS: usize = 4000;
/// Earlier benchmark runs listed.
const PAST_BENCHMARKS: usize = 10;

/// What the report reads; the MCP server and the REST handler build one from their state.
#[derive(Clone)]
pub struct Sources {
    /// The cluster.
    pub cluster: Arc<ClusterHandle>,
    /// History (trends, recent p99s, leader changes, benchmark runs).
    pub store: Option<Arc<Store>>,
    /// Diagnoses.
    pub diagnoses: Arc<crate::analysis::diagnosis::Diagnoses>,
    /// Alerting (active alerts).
    pub alerting: Option<crate::analysis::alerting::Alerting>,
    /// Agents (CPU, memory, filesystem per member).
    pub registry: Option<Arc<crate::sources::ingest::AgentRegistry>>,
}

/// Gathers the inputs of a report over `window` ending at `now_ms`.
pub async fn gather(src: &Sources, window: Duration, now_ms: u64) -> ReportInputs {
    let state = src.cluster.snapshot();
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let (history, recent, leader_changes, past) =
        read_store(src, &state.cluster, now_ms, window_ms).await;
    let members = state
        .members
        .iter()
        .map(|m| member_inputs(m, &recent, src.registry.as_deref()))
        .collect();
    let diagnoses = src
        .diagnoses
        .all()
        .into_iter()
        .filter(|d| d.cluster == state.cluster)
        .collect();
    let alerts = src
        .alerting
        .as_ref()
        .map(|a| a.active(&state.cluster))
        .unwrap_or_default()
        .into_iter()
        .map(|a| ActiveAlert {
            summary: a.annotations.get("summary").cloned().unwrap_or_default(),
            name: a.name,
            severity: a.severity,
            state: a.state.as_str().to_string(),
            member: a.member,
        })
        .collect();
    let (hashkv, hashkv_error) = match hashkv_round(&src.cluster, &state).await {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    ReportInputs {
        generated_ms: now_ms,
        window_ms,
        members,
        diagnoses,
        alerts,
        hashkv,
        hashkv_error,
        history,
        leader_changes,
        benchmark: None,
        past_benchmarks: past,
        state,
    }
}

/// Trend points, the last [`RECENT`] of points (every one), leader changes, benchmark runs.
type StoreRead = (
    Vec<HistoryPoint>,
    Vec<HistoryPoint>,
    Vec<crate::model::cluster::LeaderChange>,
    Vec<BenchmarkEvidence>,
);

async fn read_store(src: &Sources, cluster: &str, now_ms: u64, window_ms: u64) -> StoreRead {
    let Some(store) = src.store.clone() else {
        return (vec![], vec![], vec![], vec![]);
    };
    let cluster = cluster.to_string();
    let members = src.cluster.snapshot().members.len().max(1);
    let read = tokio::task::spawn_blocking(move || {
        let since = now_ms.saturating_sub(window_ms);
        // One point per member per step, so every member's line spans the window.
        let per_member = (HISTORY_POINTS / members).max(2) as u64;
        let step = Duration::from_millis((window_ms / per_member).max(1));
        let query = |step| {
            store
                .history(&HistoryQuery {
                    cluster: cluster.clone(),
                    member: None,
                    since_ms: since,
                    until_ms: now_ms,
                    step,
                    limit: HISTORY_POINTS,
                })
                .unwrap_or_default()
        };
        let mut history = query(Some(step));
        // A collector younger than one step has one point per member: take every point.
        if history.len() <= members {
            history = query(None);
        }
        let recent = store
            .history(&HistoryQuery {
                cluster: cluster.clone(),
                member: None,
                since_ms: now_ms.saturating_sub(RECENT.as_millis() as u64),
                until_ms: now_ms,
                step: None,
                limit: HISTORY_POINTS,
            })
            .unwrap_or_default();
        let changes = store.leader_changes(&cluster, 1000).unwrap_or_default();
        let runs = store
            .benchmark_runs(&cluster, since, PAST_BENCHMARKS)
            .unwrap_or_default();
        let runs = runs.iter().filter_map(benchmark_of_run).collect();
        (history, recent, changes, runs)
    })
    .await;
    read.unwrap_or_default()
}

/// A stored run as report evidence (its report is read as JSON: only the figures graded).
pub fn benchmark_of_run(run: &crate::store::BenchmarkRun) -> Option<BenchmarkEvidence> {
    let report: serde_json::Value = serde_json::from_str(run.report_json.as_deref()?).ok()?;
    let pct = |p: f64| {
        report["percentiles"].as_array()?.iter().find_map(|x| {
            (x["percentile"].as_f64()? == p).then(|| x["seconds"].as_f64().map(|s| s * 1000.0))?
        })
    };
    Some(BenchmarkEvidence {
        run_id: run.id.clone(),
        workload: run.workload.clone(),
        origin: "history".into(),
        started_ms: run.started_ms,
        succeeded: report["summary"]["succeeded"].as_u64().unwrap_or(0),
        failed: report["summary"]["failed"].as_u64().unwrap_or(0),
        requests_per_second: report["summary"]["requests_per_second"]
            .as_f64()
            .unwrap_or(0.0),
        target_rate: report["header"]["spec"]["rate"].as_f64(),
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        error: run.error.clone(),
    })
}

/// The median of `member`'s interval WAL fsync p99s in `recent` (the last [`RECENT`]).
fn recent_wal_p99(recent: &[HistoryPoint], member: &MemberState) -> Option<f64> {
    let mut v: Vec<f64> = recent
        .iter()
        .filter(|p| p.member_id == member.id)
        .filter_map(|p| p.wal_fsync_window_p99_ms)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn member_inputs(
    m: &MemberState,
    recent: &[HistoryPoint],
    registry: Option<&crate::sources::ingest::AgentRegistry>,
) -> MemberInputs {
    let series = m.server.as_ref().map(|s| &s.series);
    let p99 = |h: &etcd_monitor_histogram::CumulativeBuckets| h.histogram().quantile_ms(0.99);
    let since_start = series.and_then(|s| p99(&s.wal_fsync));
    let recent = recent_wal_p99(recent, m);
    let mut f = MemberInputs {
        id: m.id.clone(),
        name: ClusterState::member_label(m),
        wal_fsync_p99_ms: recent.or(since_start),
        wal_fsync_source: match (recent, since_start) {
            (Some(_), _) => "the median of the last 5 minutes' interval p99s".into(),
            (None, Some(_)) => "etcd's histogram since the member started".into(),
            _ => String::new(),
        },
        wal_fsyncs: series.map_or(0, |s| s.wal_fsync.histogram().count()),
        backend_commit_p99_ms: series.and_then(|s| p99(&s.backend_commit)),
        peer_rtt_p99_ms: series.and_then(|s| p99(&s.peer_round_trip)),
        quota_backend_bytes: series.and_then(|s| s.quota_backend_bytes),
        rss_bytes: series.and_then(|s| s.resident_memory_bytes),
        ..MemberInputs::default()
    };
    if let Some(r) = registry.and_then(|reg| agent_resources(reg, m)) {
        apply_resources(&mut f, &r);
    }
    f
}

fn agent_resources(
    registry: &crate::sources::ingest::AgentRegistry,
    m: &MemberState,
) -> Option<MemberResources> {
    let (record, identity) = registry.find(m)?;
    let (status, _) = record.status.as_ref()?;
    status
        .resources
        .iter()
        .find(|r| r.member == identity.name)
        .cloned()
}

fn apply_resources(f: &mut MemberInputs, r: &MemberResources) {
    if r.has_cpu_cores {
        f.cpu_cores = Some(r.cpu_cores);
        if r.cpu_limit_cores > 0.0 {
            f.cpu_percent = Some(100.0 * r.cpu_cores / r.cpu_limit_cores);
        }
    }
    if r.has_rss {
        f.rss_bytes = Some(r.rss_bytes as f64);
        if r.memory_limit_bytes > 0 {
            f.memory_percent = Some(100.0 * r.rss_bytes as f64 / r.memory_limit_bytes as f64);
        }
    }
    let df_total = r.fs_used_bytes + r.fs_free_bytes;
    if r.has_fs && df_total > 0 {
        f.fs_used_percent = Some(100.0 * r.fs_used_bytes as f64 / df_total as f64);
    }
}

/// HashKV of every reachable member at the lowest revision any of them reported, so that all
/// hash the same history.
async fn hashkv_round(
    cluster: &ClusterHandle,
    state: &ClusterState,
) -> Result<HashKvRound, String> {
    let targets: Vec<(String, String, i64)> = state
        .members
        .iter()
        .filter(|m| m.reachable)
        .filter_map(|m| {
            Some((
                ClusterState::member_label(m),
                m.client_urls.first()?.clone(),
                m.status.as_ref()?.revision,
            ))
        })
        .collect();
    let revision = targets
        .iter()
        .map(|t| t.2)
        .min()
        .ok_or("no reachable member reported a revision")?;
    let timeout = cluster.config.dial_timeout.max(Duration::from_secs(1));
    let asks = targets.into_iter().map(|(member, url, _)| async move {
        let answer = tokio::time::timeout(timeout, async {
            let mut c = crate::sources::etcd::client::connect(&cluster.config, &url).await?;
            c.hash_kv(revision).await.map_err(|e| e.to_string())
        })
        .await;
        match answer {
            Ok(Ok(h)) => HashKvAnswer {
                member,
                hash: Some(h.hash()),
                compact_revision: Some(h.compact_version()),
                error: None,
            },
            Ok(Err(e)) => HashKvAnswer {
                member,
                hash: None,
                compact_revision: None,
                error: Some(e),
            },
            Err(_) => HashKvAnswer {
                member,
                hash: None,
                compact_revision: None,
                error: Some(format!("no answer within {timeout:?}")),
            },
        }
    });
    Ok(HashKvRound {
        revision,
        answers: futures::future::join_all(asks).await,
    })
}
