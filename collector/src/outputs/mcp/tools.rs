//! The tools. Each is a thin, bounded mapping of its arguments onto one REST call
//! ([`super::backend`]); the REST API checks the values and the caller's role, and its answer
//! is the tool's result (a REST error becomes a tool error that carries the status and the
//! REST message, so an assistant reads why).
//!
//! Read tools are in [`McpServer::read_tools`], admin tools in [`McpServer::admin_tools`]:
//! an admin tool calls a mutating REST route, which needs the admin role (`RequireAdmin`), so
//! it is refused exactly when REST would refuse that caller. Adding one is a method in the
//! admin block that checks its arguments (`check_len`, `check_count`, `refused`) and makes
//! its `RestCall::post` through `McpServer::rest`; a read tool is a method in the read block.
//! Either way its name joins `metrics::TOOLS` (a unit test holds the two lists equal).

use rmcp::{
    ErrorData,
    handler::server::wrapper::Parameters,
    model::{CallToolResult, ContentBlock, Extensions},
    schemars, tool, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    McpServer,
    backend::{RestAnswer, RestCall},
    metrics::{Outcome, OutcomeSlot},
};

/// Longest cluster or member name, benchmark id, time or step a tool accepts, characters.
pub const MAX_ARG_LEN: usize = 128;
/// Most history points one `metrics_history` call returns (REST allows more; an assistant's
/// context does not).
pub const MAX_HISTORY_POINTS: usize = 2_000;
/// `metrics_history`'s default `limit`.
pub const DEFAULT_HISTORY_POINTS: usize = 200;
/// Most alert transitions `alerts` adds when asked for history.
pub const MAX_ALERT_HISTORY: usize = 100;

/// Selects a cluster.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterArgs {
    /// Cluster name (see `list_clusters`); default the first configured.
    #[schemars(length(max = 128))]
    pub cluster: Option<String>,
}

/// Selects a cluster and, optionally, one member.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberArgs {
    /// Cluster name; default the first configured.
    #[schemars(length(max = 128))]
    pub cluster: Option<String>,
    /// Only this member (name or hex id).
    #[schemars(length(max = 128))]
    pub member: Option<String>,
}

/// Selects a cluster and the history window of the performance report.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportArgs {
    /// Cluster name; default the first configured.
    #[schemars(length(max = 128))]
    pub cluster: Option<String>,
    /// History window of the trends, e.g. `6h` (default `24h`, at most the history retention).
    #[schemars(length(max = 128))]
    pub window: Option<String>,
}

/// Active alerts, optionally with the latest transitions.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsArgs {
    /// Cluster name; default the first configured.
    #[schemars(length(max = 128))]
    pub cluster: Option<String>,
    /// Also return this many of the latest firing/resolved transitions (at most 100).
    #[schemars(range(min = 1, max = 100))]
    pub history: Option<usize>,
}

/// A range of the stored history.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// Cluster name; default the first configured.
    #[schemars(length(max = 128))]
    pub cluster: Option<String>,
    /// Only this member (name or hex id).
    #[schemars(length(max = 128))]
    pub member: Option<String>,
    /// Start: RFC 3339 UTC time, Unix seconds, or a duration ago (`15m`, `6h`). Default 1h ago.
    #[schemars(length(max = 128))]
    pub since: Option<String>,
    /// End, same forms. Default now.
    #[schemars(length(max = 128))]
    pub until: Option<String>,
    /// Keep one point per member per step (`30s`, `5m`): use it for long ranges.
    #[schemars(length(max = 128))]
    pub step: Option<String>,
    /// At most this many points, newest kept (default 200, at most 2000).
    #[schemars(range(min = 1, max = 2000))]
    pub limit: Option<usize>,
}

/// A benchmark job.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkIdArgs {
    /// The id `run_benchmark` returned.
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
}

/// A benchmark run: the REST API's body (`POST /api/v1/performance/benchmark`), the commonly
/// used fields. Keys are written only under `/etcd-monitor-bench/<id>/` and deleted after.
#[derive(Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkArgs {
    /// Cluster name; default the first configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub cluster: Option<String>,
    /// Workload: `write`, `read`, `mixed` or `txn-put` (default mixed).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub kind: Option<String>,
    /// Operations (at most the collector's --benchmark-max-ops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<u64>,
    /// Run for this long instead of a count (`30s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub duration: Option<String>,
    /// Requests in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    /// gRPC connections the clients share (at most one per client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conns: Option<usize>,
    /// Value bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_size: Option<usize>,
    /// Requests per second, all clients together (unset: as fast as possible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// Refuses a string argument longer than [`MAX_ARG_LEN`]; the message names the field.
fn check_len(field: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.chars().count() > MAX_ARG_LEN => Err(format!(
            "{field}: longer than {MAX_ARG_LEN} characters ({})",
            v.chars().count()
        )),
        _ => Ok(()),
    }
}

/// Refuses a count outside `1..=max`; the message names the field.
fn check_count(field: &str, value: Option<usize>, max: usize) -> Result<(), String> {
    match value {
        Some(n) if n == 0 || n > max => Err(format!("{field}: {n} is not in 1..={max}")),
        _ => Ok(()),
    }
}

/// A tool error the caller reads, counted as refused arguments.
fn refused(ext: &Extensions, message: String) -> CallToolResult {
    set_outcome(ext, Outcome::InvalidArguments);
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// Tells [`McpServer`]'s `call_tool` how this call ended (it counts it once the tool returns).
fn set_outcome(ext: &Extensions, outcome: Outcome) {
    if let Some(slot) = ext.get::<OutcomeSlot>() {
        slot.set(outcome);
    }
}

/// The tool result of a REST answer, and its outcome: its JSON on success; else an error
/// naming the status and carrying REST's message.
fn result_of(answer: RestAnswer) -> (CallToolResult, Outcome) {
    if (200..300).contains(&answer.status) {
        let result = match answer.body {
            v @ Value::Object(_) => CallToolResult::structured(v),
            other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
        };
        return (result, Outcome::Ok);
    }
    let outcome = if matches!(answer.status, 401 | 403) {
        Outcome::Refused
    } else {
        Outcome::Error
    };
    let message = answer.body["error"]
        .as_str()
        .map_or_else(|| answer.body.to_string(), str::to_string);
    let result = CallToolResult::structured_error(json!({
        "status": answer.status,
        "error": message,
    }));
    (result, outcome)
}

impl McpServer {
    /// Makes `call` on behalf of the request whose context is `ext`.
    async fn rest(&self, call: RestCall, ext: &Extensions) -> Result<CallToolResult, ErrorData> {
        let caller = ext.get::<http::request::Parts>();
        let (result, outcome) = match self.backend.call(call, caller).await {
            Ok(answer) => result_of(answer),
            Err(e) => (
                CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
                Outcome::Error,
            ),
        };
        set_outcome(ext, outcome);
        Ok(result)
    }
}

#[tool_router(router = read_tools, vis = "pub")]
impl McpServer {
    #[tool(
        description = "The names of the monitored etcd clusters, the default first: the values the other tools' `cluster` argument takes.",
        annotations(read_only_hint = true)
    )]
    async fn list_clusters(&self, ext: Extensions) -> Result<CallToolResult, ErrorData> {
        self.rest(RestCall::get("/api/v1/clusters", &[]), &ext)
            .await
    }

    #[tool(
        description = "One cluster's status: healthy, leader, quorum, and every member with its reachability, raft term/index, DB size and latency.",
        annotations(read_only_hint = true)
    )]
    async fn cluster_status(
        &self,
        Parameters(a): Parameters<ClusterArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(m) = check_len("cluster", a.cluster.as_deref()) {
            return Ok(refused(&ext, m));
        }
        let call = RestCall::get("/api/v1/cluster/status", &[("cluster", a.cluster)]);
        self.rest(call, &ext).await
    }

    #[tool(
        description = "One cluster's members: name, id, peer and client URLs, leader, learner, reachable, and the kernel view when an agent reports it.",
        annotations(read_only_hint = true)
    )]
    async fn cluster_members(
        &self,
        Parameters(a): Parameters<ClusterArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(m) = check_len("cluster", a.cluster.as_deref()) {
            return Ok(refused(&ext, m));
        }
        let call = RestCall::get("/api/v1/cluster/members", &[("cluster", a.cluster)]);
        self.rest(call, &ext).await
    }

    #[tool(
        description = "Why a member is slow: the latest diagnosis of every member (or one), with the cause (disk, CPU, network, neighbour) and the evidence behind it.",
        annotations(read_only_hint = true)
    )]
    async fn diagnosis(
        &self,
        Parameters(a): Parameters<MemberArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        for (field, v) in [("cluster", &a.cluster), ("member", &a.member)] {
            if let Err(m) = check_len(field, v.as_deref()) {
                return Ok(refused(&ext, m));
            }
        }
        let query = [("cluster", a.cluster), ("member", a.member)];
        let call = RestCall::get("/api/v1/diagnosis", &query);
        self.rest(call, &ext).await
    }

    #[tool(
        description = "The graded performance report of a cluster: a grade per area (disk, backend commit, CPU, memory, peers, quota, fragmentation, consistency) and overall, a plain-words summary, findings with their numbers, and recommendations (defragment, quota, timeouts, disk class, noisy neighbour).",
        annotations(read_only_hint = true)
    )]
    async fn report(
        &self,
        Parameters(a): Parameters<ReportArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        for (field, v) in [("cluster", &a.cluster), ("window", &a.window)] {
            if let Err(m) = check_len(field, v.as_deref()) {
                return Ok(refused(&ext, m));
            }
        }
        let query = [
            ("cluster", a.cluster),
            ("window", a.window),
            ("format", Some("json".to_string())),
        ];
        self.rest(RestCall::get("/api/v1/report", &query), &ext)
            .await
    }

    #[tool(
        description = "Active alerts (pending and firing) of a cluster, each with its rule, severity, labels, value and since when; with `history`, also the latest firing/resolved transitions.",
        annotations(read_only_hint = true)
    )]
    async fn alerts(
        &self,
        Parameters(a): Parameters<AlertsArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(m) = check_len("cluster", a.cluster.as_deref())
            .and_then(|()| check_count("history", a.history, MAX_ALERT_HISTORY))
        {
            return Ok(refused(&ext, m));
        }
        let call = RestCall::get("/api/v1/alerts", &[("cluster", a.cluster.clone())]);
        let active = self.rest(call, &ext).await?;
        let Some(n) = a.history else {
            return Ok(active);
        };
        if active.is_error == Some(true) {
            return Ok(active);
        }
        let query = [("cluster", a.cluster), ("limit", Some(n.to_string()))];
        let history = self
            .rest(RestCall::get("/api/v1/alerts/history", &query), &ext)
            .await?;
        if history.is_error == Some(true) {
            return Ok(history);
        }
        let mut merged = active.structured_content.unwrap_or_else(|| json!({}));
        merged["history"] = history
            .structured_content
            .map_or(Value::Null, |mut h| h["transitions"].take());
        Ok(CallToolResult::structured(merged))
    }

    #[tool(
        description = "Stored history of a cluster's per-member figures (latency, DB size, leader, raft index, fsync and commit p99s) over a time range; use `step` to thin long ranges.",
        annotations(read_only_hint = true)
    )]
    async fn metrics_history(
        &self,
        Parameters(a): Parameters<HistoryArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let strings = [
            ("cluster", &a.cluster),
            ("member", &a.member),
            ("since", &a.since),
            ("until", &a.until),
            ("step", &a.step),
        ];
        for (field, v) in strings {
            if let Err(m) = check_len(field, v.as_deref()) {
                return Ok(refused(&ext, m));
            }
        }
        if let Err(m) = check_count("limit", a.limit, MAX_HISTORY_POINTS) {
            return Ok(refused(&ext, m));
        }
        let limit = a.limit.unwrap_or(DEFAULT_HISTORY_POINTS);
        let query = [
            ("cluster", a.cluster),
            ("member", a.member),
            ("since", a.since),
            ("until", a.until),
            ("step", a.step),
            ("limit", Some(limit.to_string())),
        ];
        let call = RestCall::get("/api/v1/metrics/history", &query);
        self.rest(call, &ext).await
    }

    #[tool(
        description = "Progress and, when finished, the report (throughput, latency percentiles, errors, SLO verdict) of a benchmark started with run_benchmark.",
        annotations(read_only_hint = true)
    )]
    async fn benchmark_status(
        &self,
        Parameters(a): Parameters<BenchmarkIdArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(m) = check_len("id", Some(&a.id)) {
            return Ok(refused(&ext, m));
        }
        let path = format!(
            "/api/v1/performance/benchmark/{}",
            super::backend::encode(&a.id)
        );
        self.rest(RestCall::get(&path, &[]), &ext).await
    }
}

#[tool_router(router = admin_tools, vis = "pub")]
impl McpServer {
    #[tool(
        description = "ADMIN: start a benchmark against a cluster (needs the admin token, and a collector started with --enable-benchmark-api). Writes only under /etcd-monitor-bench/<id>/ and deletes it after. Returns the job id; follow it with benchmark_status.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn run_benchmark(
        &self,
        Parameters(a): Parameters<BenchmarkArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let strings = [
            ("cluster", &a.cluster),
            ("type", &a.kind),
            ("duration", &a.duration),
        ];
        for (field, v) in strings {
            if let Err(m) = check_len(field, v.as_deref()) {
                return Ok(refused(&ext, m));
            }
        }
        let body = serde_json::to_value(&a).unwrap_or_else(|_| json!({}));
        let call = RestCall::post("/api/v1/performance/benchmark", body);
        self.rest(call, &ext).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arguments_and_out_of_range_counts_are_refused_by_name() {
        assert!(check_len("cluster", Some("a")).is_ok());
        assert!(check_len("cluster", None).is_ok());
        let long = "x".repeat(MAX_ARG_LEN + 1);
        let e = check_len("member", Some(&long)).unwrap_err();
        assert!(e.starts_with("member: longer than 128"), "{e}");
        assert!(check_count("limit", Some(MAX_HISTORY_POINTS), MAX_HISTORY_POINTS).is_ok());
        let e = check_count("limit", Some(0), MAX_HISTORY_POINTS).unwrap_err();
        assert!(e.contains("limit: 0 is not in 1..=2000"), "{e}");
        assert!(check_count("limit", Some(2001), MAX_HISTORY_POINTS).is_err());
    }

    #[test]
    fn rest_errors_become_tool_errors_that_carry_status_and_message() {
        let (r, outcome) = result_of(RestAnswer {
            status: 403,
            body: json!({"error": "changes need the admin role"}),
        });
        assert_eq!(outcome, Outcome::Refused);
        assert_eq!(r.is_error, Some(true));
        let s = r.structured_content.unwrap();
        assert_eq!(s["status"], 403);
        assert_eq!(s["error"], "changes need the admin role");
        let (ok, good) = result_of(RestAnswer {
            status: 200,
            body: json!({"cluster": "a"}),
        });
        assert_eq!(good, Outcome::Ok);
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(ok.structured_content.unwrap()["cluster"], "a");
    }

    #[test]
    fn the_benchmark_body_uses_the_rest_field_names() {
        let a = BenchmarkArgs {
            kind: Some("put".into()),
            ops: Some(100),
            ..BenchmarkArgs::default()
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"type": "put", "ops": 100})
        );
    }
}
