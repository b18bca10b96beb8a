//! REST handlers. Each reads a snapshot of one cluster (`?cluster=`, default the first
//! configured) and answers JSON; every response names its cluster.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, error::ApiError};
use crate::{
    model::cluster::ClusterHandle, model::cluster::ClusterState, model::cluster::LeaderChange,
    model::cluster::LeaderInfo, model::cluster::MemberState, model::cluster::MemberStatus,
    model::cluster::ProbeLatency, model::cluster::ServerLatency, model::cluster::ServerMetrics,
    model::time::now_ms, sources::ingest::join::KernelView, store::HistoryPoint,
    store::HistoryQuery,
};

/// Selects a cluster.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClusterParam {
    /// Cluster name; default the first configured (`default` for the flags' cluster).
    pub cluster: Option<String>,
}

/// Largest `limit` of `/api/v1/metrics/history`.
pub const HISTORY_LIMIT_MAX: usize = 100_000;

/// Query of `/api/v1/metrics/history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Cluster name.
    pub cluster: Option<String>,
    /// Only this member (name or hex id).
    pub member: Option<String>,
    /// Start: RFC 3339 time, Unix seconds, or a duration ago (`15m`). Default 1h ago. Moved
    /// forward to `until` minus the history retention when older (the response's `since_ms`).
    pub since: Option<String>,
    /// End: same forms as `since`. Default now. Before `since`: an empty range.
    pub until: Option<String>,
    /// Keep the last point per member in each step (`30s`, `5m`).
    pub step: Option<String>,
    /// At most this many points, newest kept (default 10000, at most 100000).
    pub limit: Option<usize>,
}

/// `/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` when every cluster is healthy, else `degraded`.
    pub status: String,
    /// Per cluster.
    pub clusters: Vec<ClusterHealth>,
}

/// One cluster in `/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterHealth {
    /// Name.
    pub cluster: String,
    /// Healthy.
    pub healthy: bool,
    /// Has a leader.
    pub has_leader: bool,
    /// Members answering / in the list.
    pub available_members: usize,
    /// Members in the list.
    pub member_count: usize,
    /// Last health check (Unix ms; 0 = none yet).
    pub updated_at_ms: u64,
}

/// `/api/v1/clusters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClustersResponse {
    /// Names, the default first.
    pub clusters: Vec<String>,
}

/// A member with what its node's agent reports about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// What the collector itself knows.
    #[serde(flatten)]
    pub member: MemberState,
    /// The agent's mode on this member's node: `ebpf`, `ebpf-partial`, `client-only`, or
    /// `none` when no agent reports this member.
    pub agent_mode: String,
    /// The kernel's view, when an agent reports this member.
    pub kernel: Option<KernelView>,
}

/// `/api/v1/cluster/members`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembersResponse {
    /// Cluster.
    pub cluster: String,
    /// Members.
    pub members: Vec<MemberView>,
}

/// One agent in `/api/v1/agents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Node name.
    pub node: String,
    /// Current boot id.
    pub boot_id: String,
    /// `ebpf`, `ebpf-partial` or `client-only` (empty before its first status).
    pub mode: String,
    /// Why not full eBPF.
    pub reason: String,
    /// etcd members it traces (agent-side names).
    pub members: Vec<String>,
    /// Open Push streams.
    pub connected_streams: u32,
    /// Batches accepted.
    pub batches: u64,
    /// Events accepted.
    pub events: u64,
    /// Events lost in transit (sequence gaps), counted exactly.
    pub lost_events: u64,
    /// Batches lost in transit.
    pub lost_batches: u64,
    /// Batches refused as malformed.
    pub rejected_batches: u64,
    /// Last batch (Unix ms).
    pub last_seen_ms: u64,
}

/// `/api/v1/agents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentsResponse {
    /// Every agent the collector has heard from.
    pub agents: Vec<AgentView>,
}

/// `/api/v1/cluster/leader`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderResponse {
    /// Cluster.
    pub cluster: String,
    /// Whether there is a leader.
    pub has_leader: bool,
    /// The leader.
    pub leader: Option<LeaderInfo>,
    /// Leader changes seen since the collector started.
    pub leader_changes_total: u64,
    /// The last (up to 100) changes, newest last.
    pub history: Vec<LeaderChangeView>,
}

/// One leader change and, once the diagnosis has seen it, why it happened.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderChangeView {
    /// The change.
    #[serde(flatten)]
    pub change: LeaderChange,
    /// The previous leader's verdict and evidence at the change, and its peers' view; absent
    /// for changes from before the collector started or not yet diagnosed.
    pub explanation: Option<crate::analysis::diagnosis::leader_changes::LeaderChangeExplanation>,
}

/// One member in `/api/v1/metrics/current`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberMetrics {
    /// Name (or hex id).
    pub member: String,
    /// Hex id.
    pub id: String,
    /// Answering.
    pub reachable: bool,
    /// Leader.
    pub is_leader: bool,
    /// Last Status.
    pub status: Option<MemberStatus>,
    /// From /metrics.
    pub server: Option<ServerMetrics>,
    /// Last scrape error.
    pub scrape_error: Option<String>,
    /// Probe latency.
    pub latency: ProbeLatency,
}

/// `/api/v1/metrics/current`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentMetricsResponse {
    /// Cluster.
    pub cluster: String,
    /// Last health check (Unix ms).
    pub updated_at_ms: u64,
    /// Writes per second from the revision.
    pub revision_rate_per_second: Option<f64>,
    /// Members.
    pub members: Vec<MemberMetrics>,
}

/// One member in `/api/v1/metrics/latency`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberLatency {
    /// Name (or hex id).
    pub member: String,
    /// Hex id.
    pub id: String,
    /// The collector's probes (last 5 minutes).
    pub probe: ProbeLatency,
    /// The server's own handling histograms, when exposed.
    pub server: Option<ServerLatency>,
    /// Probe p99 above `--max-latency-ms`.
    pub degraded: bool,
    /// etcd's own WAL fsync p95 (ms), from its histogram.
    pub server_wal_fsync_p95_ms: Option<f64>,
    /// etcd's own backend commit p95 (ms), from its histogram.
    pub server_backend_commit_p95_ms: Option<f64>,
    /// Agent mode on the member's node (`none` without an agent).
    pub agent_mode: String,
    /// Kernel-measured WAL/DB sync and write latency, bytes, peer RTT and retransmits.
    pub kernel: Option<KernelView>,
}

/// `/api/v1/metrics/latency`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyResponse {
    /// Cluster.
    pub cluster: String,
    /// `--max-latency-ms`.
    pub max_latency_ms: u64,
    /// Members.
    pub members: Vec<MemberLatency>,
}

/// `/api/v1/metrics/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    /// Cluster.
    pub cluster: String,
    /// From (Unix ms).
    pub since_ms: u64,
    /// To (Unix ms).
    pub until_ms: u64,
    /// Step (ms), if downsampled.
    pub step_ms: Option<u64>,
    /// Points, oldest first.
    pub points: Vec<HistoryPoint>,
}

pub(crate) fn pick(state: &AppState, name: Option<&str>) -> Result<Arc<ClusterHandle>, ApiError> {
    match name {
        None | Some("") => state
            .clusters
            .first()
            .cloned()
            .ok_or_else(|| ApiError::NotFound("no cluster is configured".to_string())),
        Some(n) => state
            .clusters
            .iter()
            .find(|c| c.name() == n)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = state.clusters.iter().map(|c| c.name()).collect();
                ApiError::NotFound(format!(
                    "unknown cluster {n:?}; known: {}",
                    known.join(", ")
                ))
            }),
    }
}

/// Parses `s` as RFC 3339, Unix seconds, or a duration before `now_ms`.
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{s:?} is not a valid time"));
        }
        return Ok((secs * 1000.0) as u64);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|_| format!("{s:?} is before 1970"));
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        let ago_ms = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.saturating_sub(ago_ms));
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339 (2024-01-02T03:04:05Z), Unix seconds, or a duration ago (15m)"
    ))
}

/// Liveness of the collector and the health of each cluster.
#[utoipa::path(get, path = "/health", responses((status = 200, body = HealthResponse)))]
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    let clusters: Vec<ClusterHealth> = state
        .clusters
        .iter()
        .map(|c| {
            let s = c.snapshot();
            ClusterHealth {
                cluster: s.cluster,
                healthy: s.healthy,
                has_leader: s.has_leader,
                available_members: s.available_members,
                member_count: s.member_count,
                updated_at_ms: s.updated_at_ms,
            }
        })
        .collect();
    let all_healthy = clusters.iter().all(|c| c.healthy);
    Json(HealthResponse {
        status: if all_healthy { "ok" } else { "degraded" }.to_string(),
        clusters,
    })
}

/// Names of the monitored clusters.
#[utoipa::path(get, path = "/api/v1/clusters", responses((status = 200, body = ClustersResponse)))]
pub async fn clusters(State(state): State<AppState>) -> Json<ClustersResponse> {
    Json(ClustersResponse {
        clusters: state
            .clusters
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
    })
}

/// The whole state of one cluster: health, quorum, leader, split brain, alarms, members.
#[utoipa::path(get, path = "/api/v1/cluster/status", params(ClusterParam),
    responses((status = 200, body = ClusterState), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn cluster_status(
    State(state): State<AppState>,
    q: Result<Query<ClusterParam>, QueryRejection>,
) -> Result<Json<ClusterState>, ApiError> {
    let Query(q) = q?;
    Ok(Json(pick(&state, q.cluster.as_deref())?.snapshot()))
}

/// The members of one cluster.
#[utoipa::path(get, path = "/api/v1/cluster/members", params(ClusterParam),
    responses((status = 200, body = MembersResponse), (status = 404, body = super::error::ErrorBody)))]
pub async fn cluster_members(
    State(state): State<AppState>,
    q: Result<Query<ClusterParam>, QueryRejection>,
) -> Result<Json<MembersResponse>, ApiError> {
    let Query(q) = q?;
    let s = pick(&state, q.cluster.as_deref())?.snapshot();
    let registry = &state.pipeline.registry;
    Ok(Json(MembersResponse {
        cluster: s.cluster,
        members: s
            .members
            .into_iter()
            .map(|member| {
                let kernel = registry.kernel_view(&member);
                MemberView {
                    agent_mode: kernel
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |k| k.agent_mode.clone()),
                    kernel,
                    member,
                }
            })
            .collect(),
    }))
}

/// Every agent the collector has heard from, with its transit bookkeeping.
#[utoipa::path(get, path = "/api/v1/agents", responses((status = 200, body = AgentsResponse)))]
pub async fn agents(State(state): State<AppState>) -> Json<AgentsResponse> {
    let agents = state
        .pipeline
        .registry
        .snapshot()
        .into_iter()
        .map(|r| {
            let (mode, reason, members) = match &r.status {
                Some((s, _)) => (
                    s.mode.clone(),
                    s.reason.clone(),
                    s.members.iter().map(|m| m.name.clone()).collect(),
                ),
                None => (String::new(), String::new(), Vec::new()),
            };
            AgentView {
                node: r.node,
                boot_id: r.boot_id,
                mode,
                reason,
                members,
                connected_streams: r.connected_streams,
                batches: r.batches,
                events: r.events,
                lost_events: r.lost_events,
                lost_batches: r.lost_batches,
                rejected_batches: r.rejected_batches,
                last_seen_ms: r.last_seen_ms,
            }
        })
        .collect();
    Json(AgentsResponse { agents })
}

/// The leader of one cluster and its last changes.
#[utoipa::path(get, path = "/api/v1/cluster/leader", params(ClusterParam),
    responses((status = 200, body = LeaderResponse), (status = 404, body = super::error::ErrorBody)))]
pub async fn cluster_leader(
    State(state): State<AppState>,
    q: Result<Query<ClusterParam>, QueryRejection>,
) -> Result<Json<LeaderResponse>, ApiError> {
    let Query(q) = q?;
    let s = pick(&state, q.cluster.as_deref())?.snapshot();
    let cluster = s.cluster.clone();
    Ok(Json(LeaderResponse {
        cluster: s.cluster,
        has_leader: s.has_leader,
        leader: s.leader,
        leader_changes_total: s.leader_changes_total,
        history: s
            .leader_history
            .into_iter()
            .map(|change| LeaderChangeView {
                explanation: state.diagnoses.leader_change(&cluster, &change),
                change,
            })
            .collect(),
    }))
}

/// Current server and probe figures per member.
#[utoipa::path(get, path = "/api/v1/metrics/current", params(ClusterParam),
    responses((status = 200, body = CurrentMetricsResponse), (status = 404, body = super::error::ErrorBody)))]
pub async fn metrics_current(
    State(state): State<AppState>,
    q: Result<Query<ClusterParam>, QueryRejection>,
) -> Result<Json<CurrentMetricsResponse>, ApiError> {
    let Query(q) = q?;
    let s = pick(&state, q.cluster.as_deref())?.snapshot();
    Ok(Json(CurrentMetricsResponse {
        cluster: s.cluster,
        updated_at_ms: s.updated_at_ms,
        revision_rate_per_second: s.revision_rate_per_second,
        members: s
            .members
            .into_iter()
            .map(|m| MemberMetrics {
                member: ClusterState::member_label(&m),
                id: m.id,
                reachable: m.reachable,
                is_leader: m.is_leader,
                status: m.status,
                server: m.server,
                scrape_error: m.scrape_error,
                latency: m.latency,
            })
            .collect(),
    }))
}

/// Read and write latency per member: the collector's probes and the server's histograms.
#[utoipa::path(get, path = "/api/v1/metrics/latency", params(ClusterParam),
    responses((status = 200, body = LatencyResponse), (status = 404, body = super::error::ErrorBody)))]
pub async fn metrics_latency(
    State(state): State<AppState>,
    q: Result<Query<ClusterParam>, QueryRejection>,
) -> Result<Json<LatencyResponse>, ApiError> {
    let Query(q) = q?;
    let s = pick(&state, q.cluster.as_deref())?.snapshot();
    let max = state.thresholds.max_latency_ms as f64;
    Ok(Json(LatencyResponse {
        cluster: s.cluster,
        max_latency_ms: state.thresholds.max_latency_ms,
        members: s
            .members
            .into_iter()
            .map(|m| {
                let kernel = state.pipeline.registry.kernel_view(&m);
                MemberLatency {
                    member: ClusterState::member_label(&m),
                    degraded: [m.latency.read, m.latency.write]
                        .iter()
                        .flatten()
                        .any(|q| q.p99_ms > max),
                    server_wal_fsync_p95_ms: m.server.as_ref().and_then(|s| s.wal_fsync_p95_ms),
                    server_backend_commit_p95_ms: m
                        .server
                        .as_ref()
                        .and_then(|s| s.backend_commit_p95_ms),
                    agent_mode: kernel
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |k| k.agent_mode.clone()),
                    kernel,
                    id: m.id,
                    probe: m.latency,
                    server: m.server.and_then(|s| s.server_latency),
                }
            })
            .collect(),
    }))
}

/// Stored points per member, from the history store.
#[utoipa::path(get, path = "/api/v1/metrics/history", params(HistoryParams),
    responses((status = 200, body = HistoryResponse), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)))]
pub async fn metrics_history(
    State(state): State<AppState>,
    q: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let Query(q) = q?;
    let cluster = pick(&state, q.cluster.as_deref())?;
    let now = now_ms();
    let since_ms = match &q.since {
        Some(s) => parse_time(s, now).map_err(|e| ApiError::BadRequest(format!("since: {e}")))?,
        None => now.saturating_sub(3_600_000),
    };
    let until_ms = match &q.until {
        Some(s) => parse_time(s, now).map_err(|e| ApiError::BadRequest(format!("until: {e}")))?,
        None => now,
    };
    // `since` after `until` is an empty range: no points (OpenAPI cannot state a bound that
    // ties two parameters, so the server does not refuse what the document allows).
    let step = match &q.step {
        Some(s) => Some(
            crate::model::time::parse_duration(s)
                .map_err(|e| ApiError::BadRequest(format!("step: {e}")))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(10_000);
    if limit == 0 || limit > HISTORY_LIMIT_MAX {
        return Err(ApiError::BadRequest(format!(
            "limit: {limit} is not in 1..={HISTORY_LIMIT_MAX}"
        )));
    }
    let store = state
        .store
        .clone()
        .ok_or_else(|| ApiError::Unavailable("the history store is not open".to_string()))?;
    // The range is capped at the retention (`since=0` reads from `until - retention`).
    let since_ms = store.effective_since(since_ms, until_ms);
    let query = HistoryQuery {
        cluster: cluster.name().to_string(),
        member: q.member.clone(),
        since_ms,
        until_ms,
        step,
        limit,
    };
    let points = tokio::task::spawn_blocking(move || store.history(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(HistoryResponse {
        cluster: cluster.name().to_string(),
        since_ms,
        until_ms,
        step_ms: step.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        points,
    }))
}

/// Prometheus exposition of every cluster plus self-metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Every producer adds its families to one page, encoded (and escaped) once.
    let mut page = crate::model::exposition::Exposition::new();
    crate::outputs::exporter::render(&state.clusters, &state.telemetry, &mut page);
    crate::sources::ingest::metrics::render(&state.clusters, &state.pipeline, &mut page);
    if let Some(alerting) = &state.alerting {
        alerting.render(&mut page);
    }
    state.benchmarks.render_metrics(&mut page);
    state.access.render(&mut page);
    state.admin.render(&mut page);
    crate::analysis::diagnosis::metrics::render(&state.diagnoses, &mut page);
    crate::outputs::mcp::metrics::render(&mut page);
    if let Some(scheduler) = &state.report.scheduler {
        scheduler.render(&mut page);
    }
    let text = page.encode();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Unknown route.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// Known route, wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_form() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time("15m", now), Ok(now - 900_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("-5", now).is_err());
    }
}

/// The whole `/metrics` page, through the router, with label values from outside (a member
/// name etcd reports, a channel name) that need escaping; checked by two parsers.
#[cfg(test)]
mod exposition_tests {
    use std::{sync::Arc, time::Duration};

    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::{
        analysis::alerting::Alerting, analysis::alerting::AlertingSettings,
        analysis::diagnosis::MemberDiagnosis, analysis::diagnosis::Verdict,
        analysis::diagnosis::engine::Evidence, model::cluster::ClusterHandle,
        model::cluster::MemberState, model::config::ClusterConfig, model::config::Thresholds,
        model::telemetry::Telemetry, outputs::api::AppState, outputs::api::SilenceLimits,
        outputs::api::access::Access, outputs::api::router, outputs::notify::Notifier,
        outputs::notify::config::ChannelConfig, outputs::notify::config::ChannelKind,
    };

    /// A member name etcd accepts (`--name` is free text) and a channel name, both needing
    /// every escape of the exposition format.
    const MEMBER: &str = "m\"0\\x\ny";
    const CHANNEL: &str = "ops\"\\\npager";

    fn thresholds() -> Thresholds {
        Thresholds {
            max_latency_ms: 100,
            max_db_size_mb: 8192,
            min_available_nodes: 2,
            max_leader_changes: 3,
        }
    }

    #[test]
    fn a_config_file_cannot_name_a_channel_with_quotes_backslashes_or_newlines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notifiers.yaml");
        std::fs::write(&path, "- type: console\n  name: \"ops\\\"\\\\\\npager\"\n")
            .expect("write config");
        let text = std::fs::read_to_string(&path).expect("read config");
        let entries: Vec<serde_yaml_ng::Value> =
            serde_yaml_ng::from_str(&text).expect("YAML parses");
        let specs = crate::outputs::notify::config::parse(&entries).expect("fields are known");
        let err = crate::outputs::notify::config::validate(&specs).expect_err("name refused");
        assert!(err.starts_with("notifiers[0].name:"), "{err}");
    }

    #[tokio::test]
    async fn whole_metrics_page_parses_and_escapes_outside_names() {
        let cluster = ClusterHandle::new(ClusterConfig {
            name: "default".into(),
            endpoints: vec!["http://127.0.0.1:1".into()],
            tls: None,
            auth: None,
            metrics_urls: vec![],
            dial_timeout: Duration::from_secs(1),
        });
        cluster.update(|s| {
            s.updated_at_ms = 1;
            s.has_leader = true;
            s.member_count = 2;
            s.quorum_size = 2;
            s.available_members = 1;
            s.members = vec![
                MemberState {
                    id: "a1".into(),
                    name: MEMBER.into(),
                    reachable: false,
                    ..MemberState::default()
                },
                MemberState {
                    id: "a2".into(),
                    name: "m1".into(),
                    reachable: true,
                    is_leader: true,
                    ..MemberState::default()
                },
            ];
        });
        let clusters = Arc::new(vec![cluster]);
        // The config validation refuses such a name (test above); the exposition must escape
        // it anyway, so a relaxed rule could never break the page.
        let notifier = Notifier::start(vec![ChannelConfig {
            name: CHANNEL.into(),
            kind: ChannelKind::Console,
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::from_millis(10),
            send_resolved: false,
        }]);
        let alerting = Alerting::new(
            AlertingSettings {
                rules_path: None,
                thresholds: thresholds(),
                interval: Duration::from_secs(1),
                dedup_window: Duration::from_secs(60),
            },
            clusters.clone(),
            None,
            None,
            std::sync::Arc::new(notifier),
        )
        .expect("default rules load");
        alerting.evaluate().await;
        let telemetry = Telemetry::new();
        telemetry.scrape_failed("default", MEMBER, "refused");
        let pipeline = crate::sources::ingest::Pipeline::default();
        let diagnoses = std::sync::Arc::new(crate::analysis::diagnosis::Diagnoses::default());
        diagnoses.put(MemberDiagnosis {
            cluster: "default".into(),
            member: MEMBER.into(),
            member_id: "a1".into(),
            evaluated_at_ms: 1,
            cause_since_ms: 1,
            window_seconds: 1.0,
            verdict: Verdict {
                cause: "disk_slow".into(),
                evidence: Evidence::default(),
                ..Verdict::default()
            },
        });
        let state = AppState {
            clusters,
            store: None,
            telemetry,
            thresholds: thresholds(),
            cors_origins: vec![],
            pipeline,
            diagnoses,
            alerting: Some(alerting),
            benchmarks: crate::ops::bench::jobs::BenchJobs::default(),
            access: Access::new(vec![], &[], 0),
            silence_limits: SilenceLimits::default(),
            leadership: crate::sources::ha::Leadership::standalone(),
            admin: crate::ops::admin::AdminJobs::default(),
            report: Default::default(),
        };
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .expect("request");
        let resp = router(state).oneshot(req).await.expect("response");
        assert_eq!(resp.status(), http::StatusCode::OK);
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");

        // Every family is announced once.
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let n = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), n, "a family announced twice:\n{text}");

        // The escaped forms are on the page, no raw newline inside a label value.
        assert!(
            text.contains("channel=\"ops\\\"\\\\\\npager\""),
            "channel not escaped:\n{text}"
        );
        assert!(text.contains("member=\"m\\\"0\\\\x\\ny\""), "{text}");

        // prometheus-parse reads every sample line (it skips what it cannot parse, so count)
        // and finds the escaped names on every producer's series; it keeps label values as
        // written, without unescaping.
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("prometheus-parse reads the page");
        let sample_lines = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(scrape.samples.len(), sample_lines, "{text}");
        const MEMBER_ESCAPED: &str = "m\\\"0\\\\x\\ny";
        const CHANNEL_ESCAPED: &str = "ops\\\"\\\\\\npager";
        let with = |metric: &str, label: &str, value: &str| {
            scrape
                .samples
                .iter()
                .any(|s| s.metric == metric && s.labels.get(label) == Some(value))
        };
        for metric in [
            "etcd_member_up",
            "ALERTS",
            "etcdmon_diagnosis",
            "etcdmon_collector_scrape_errors_total",
        ] {
            assert!(with(metric, "member", MEMBER_ESCAPED), "{metric}:\n{text}");
        }
        for metric in [
            "etcdmon_alert_notifications_total",
            "etcdmon_alert_notification_failures_total",
        ] {
            assert!(
                with(metric, "channel", CHANNEL_ESCAPED),
                "{metric}:\n{text}"
            );
        }
        for metric in [
            "etcdmon_benchmark_running",
            "etcdmon_api_auth_refusals_total",
            "etcdmon_alert_rules",
        ] {
            assert!(
                scrape.samples.iter().any(|s| s.metric == metric),
                "{metric}:\n{text}"
            );
        }

        // promtool, Prometheus' own parser and linter (installed by `cargo xtask setup`).
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (cargo xtask setup)");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(text.as_bytes()).expect("write to promtool");
        }
        let out = child.wait_with_output().expect("promtool runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Exit 1 is a parse error; 3 is lint findings only. The one finding allowed is on a
        // contract name that predates the lint and that dashboards and rules use.
        const KNOWN_LINT: &str = "etcd_cluster_member_count non-histogram and non-summary metrics should not have \"_count\" suffix";
        let findings: Vec<&str> = report
            .lines()
            .filter(|l| !l.trim().is_empty() && *l != KNOWN_LINT)
            .collect();
        assert!(
            findings.is_empty() && matches!(out.status.code(), Some(0 | 3)),
            "promtool ({:?}): {findings:?}\n{text}",
            out.status.code()
        );
    }
}
