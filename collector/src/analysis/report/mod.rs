//! The performance report: from what the collector already knows about one cluster (its state,
//! history, diagnoses, alerts, a HashKV round and benchmark runs — gathered by the caller into
//! [`ReportInputs`]), a grade per area and overall, an executive summary, findings with the
//! numbers behind them, recommendations that follow from them, consistency checks and trends.
//!
//! [`build`] is a pure function: no I/O, no clock. Rendering (Markdown, HTML with SVG charts)
//! lives in `crate::outputs::report`, gathering the inputs in the same place.

mod advice;
mod consistency;
mod grade;
pub mod thresholds;
mod trends;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use thresholds::{Level, ReportArgs, ReportThresholds};

use crate::analysis::diagnosis::MemberDiagnosis;
use crate::model::cluster::{ClusterState, LeaderChange};
use crate::store::HistoryPoint;

/// How an area (or the whole cluster) fares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// Not measured (no data for this area).
    Unknown,
    /// Within the warning threshold.
    Good,
    /// Past the warning threshold.
    Warning,
    /// Past the critical threshold.
    Critical,
}

impl Grade {
    /// `good`, `warning`, `critical` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Good => "good",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The grade of `value` against `level` (higher is worse).
    pub fn of(value: f64, level: &Level) -> Self {
        if value >= level.critical {
            Self::Critical
        } else if value >= level.warning {
            Self::Warning
        } else {
            Self::Good
        }
    }
}

/// Figures of one member the caller measured (from etcd's /metrics, the history and the agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberInputs {
    /// Member id (hex).
    pub id: String,
    /// Member name (or hex id).
    pub name: String,
    /// WAL fsync p99, ms.
    pub wal_fsync_p99_ms: Option<f64>,
    /// Where `wal_fsync_p99_ms` comes from (`recent windows` or `since start`).
    pub wal_fsync_source: String,
    /// WAL fsyncs the member has counted since it started.
    pub wal_fsyncs: u64,
    /// Backend commit p99 since the member started, ms.
    pub backend_commit_p99_ms: Option<f64>,
    /// Peer round-trip p99 since the member started, ms (all peers).
    pub peer_rtt_p99_ms: Option<f64>,
    /// `etcd_server_quota_backend_bytes`.
    pub quota_backend_bytes: Option<f64>,
    /// Process CPU, % of its limit (agent).
    pub cpu_percent: Option<f64>,
    /// Cores in use (agent).
    pub cpu_cores: Option<f64>,
    /// RSS, % of its limit (agent).
    pub memory_percent: Option<f64>,
    /// RSS, bytes (agent, else etcd's `process_resident_memory_bytes`).
    pub rss_bytes: Option<f64>,
    /// Network use, % of the link, when something measures it.
    pub network_percent: Option<f64>,
    /// Data-dir filesystem used, % (agent).
    pub fs_used_percent: Option<f64>,
}

/// An alert active on the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActiveAlert {
    /// Rule name.
    pub name: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// `firing` or `pending`.
    pub state: String,
    /// Member, when per member.
    pub member: Option<String>,
    /// Its summary annotation.
    pub summary: String,
}

/// One member's answer to HashKV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HashKvAnswer {
    /// Member name.
    pub member: String,
    /// The hash, when it answered.
    pub hash: Option<u32>,
    /// Its compact revision.
    pub compact_revision: Option<i64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// HashKV asked of every member at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HashKvRound {
    /// The revision every member hashed.
    pub revision: i64,
    /// Answers.
    pub answers: Vec<HashKvAnswer>,
}

impl HashKvRound {
    /// Every member's answer in words (`m1=123`, `m2: timed out`), for the renderers.
    pub fn answers_text(&self) -> String {
        self.answers
            .iter()
            .map(|a| match (a.hash, &a.error) {
                (Some(hash), _) => format!("{}={hash}", a.member),
                (None, Some(e)) => format!("{}: {e}", a.member),
                (None, None) => format!("{}: no answer", a.member),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A benchmark run, reduced to what the report grades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BenchmarkEvidence {
    /// Run id.
    pub run_id: String,
    /// Workload.
    pub workload: String,
    /// `on demand` (this report) or `history`.
    pub origin: String,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// Requests that succeeded.
    pub succeeded: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// The rate asked for, when limited.
    pub target_rate: Option<f64>,
    /// Median latency, ms.
    pub p50_ms: Option<f64>,
    /// p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Everything the report is built from, gathered by the caller.
#[derive(Debug, Clone, Default)]
pub struct ReportInputs {
    /// When (Unix ms).
    pub generated_ms: u64,
    /// The history window trends cover, ms.
    pub window_ms: u64,
    /// The cluster's state now.
    pub state: ClusterState,
    /// Per-member figures.
    pub members: Vec<MemberInputs>,
    /// Diagnoses of the cluster's members.
    pub diagnoses: Vec<MemberDiagnosis>,
    /// Active alerts.
    pub alerts: Vec<ActiveAlert>,
    /// HashKV round (None when it could not be run).
    pub hashkv: Option<HashKvRound>,
    /// Why the HashKV round could not run.
    pub hashkv_error: Option<String>,
    /// History points of the window, oldest first.
    pub history: Vec<HistoryPoint>,
    /// Leader changes (from the store), oldest first.
    pub leader_changes: Vec<LeaderChange>,
    /// The benchmark run for this report (`--with-benchmark`).
    pub benchmark: Option<BenchmarkEvidence>,
    /// Earlier benchmark runs (scheduled or started over REST), newest first.
    pub past_benchmarks: Vec<BenchmarkEvidence>,
}

/// One number behind a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Number {
    /// What it is.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit (`ms`, `%`, `bytes`, …).
    pub unit: String,
}

/// The grade of one area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AreaGrade {
    /// Key (`disk`, `backend`, `cpu`, `memory`, `peer_network`, `network`, `db_quota`,
    /// `consistency`, `availability`, `benchmark`).
    pub area: String,
    /// Title for people.
    pub title: String,
    /// Grade.
    pub grade: Grade,
    /// The worst value measured, if any.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// The member with the worst value.
    pub member: Option<String>,
    /// The thresholds used.
    pub thresholds: Option<Level>,
    /// One line for people.
    pub detail: String,
}

/// Something the evidence shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    /// How bad.
    pub severity: Grade,
    /// Area key.
    pub area: String,
    /// Member concerned.
    pub member: Option<String>,
    /// Headline.
    pub title: String,
    /// Explanation with the cause when known.
    pub detail: String,
    /// The numbers behind it.
    pub numbers: Vec<Number>,
}

/// What to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Recommendation {
    /// Urgency (the grade of the finding it answers).
    pub priority: Grade,
    /// Area key.
    pub area: String,
    /// Member concerned.
    pub member: Option<String>,
    /// The action, imperative.
    pub action: String,
    /// Why, with the numbers.
    pub because: String,
    /// A command or setting to apply, when one fits.
    pub command: Option<String>,
}

/// Whether the members agree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Consistency {
    /// Cluster ids reported (one when they agree).
    pub cluster_ids: Vec<String>,
    /// etcd versions reported.
    pub versions: Vec<String>,
    /// Highest minus lowest store revision.
    pub revision_spread: Option<i64>,
    /// Highest minus lowest raft index.
    pub raft_index_spread: Option<u64>,
    /// The HashKV round.
    pub hashkv: Option<HashKvRound>,
    /// Whether every answering member gave the same hash.
    pub hashes_agree: Option<bool>,
    /// What disagrees, in words.
    pub problems: Vec<String>,
}

impl Consistency {
    /// The HashKV verdict in one word: `agree`, `DISAGREE` or `not compared`.
    pub fn hash_verdict(&self) -> &'static str {
        match self.hashes_agree {
            Some(true) => "agree",
            Some(false) => "DISAGREE",
            None => "not compared",
        }
    }
}

/// One line of a trend chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrendLine {
    /// Member.
    pub label: String,
    /// `[unix_ms, value]` pairs, oldest first.
    pub points: Vec<[f64; 2]>,
}

/// One chart of the trends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrendChart {
    /// Key.
    pub key: String,
    /// Title.
    pub title: String,
    /// Unit of the values.
    pub unit: String,
    /// One line per member.
    pub lines: Vec<TrendLine>,
}

/// Trends over the history window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trends {
    /// Span the history covers, ms.
    pub covered_ms: u64,
    /// Database growth (largest member), bytes per day.
    pub db_growth_bytes_per_day: Option<f64>,
    /// Leader changes per day in the window.
    pub leader_changes_per_day: Option<f64>,
    /// Leader changes in the window.
    pub leader_changes: u64,
    /// Highest WAL fsync p99 of a history interval, ms.
    pub max_wal_fsync_window_p99_ms: Option<f64>,
    /// Highest write probe p99, ms.
    pub max_write_p99_ms: Option<f64>,
    /// Charts.
    pub charts: Vec<TrendChart>,
}

/// One member's row in the report's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberRow {
    /// Name.
    pub name: String,
    /// Id (hex).
    pub id: String,
    /// Reachable.
    pub reachable: bool,
    /// Leader.
    pub is_leader: bool,
    /// Version.
    pub version: Option<String>,
    /// Database size, bytes.
    pub db_size_bytes: Option<i64>,
    /// Measured figures.
    #[serde(flatten)]
    pub figures: MemberInputs,
    /// Diagnosis cause.
    pub diagnosis: Option<String>,
}

/// The benchmark section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BenchmarkSection {
    /// Grade of the run.
    pub grade: Grade,
    /// The run.
    pub run: BenchmarkEvidence,
    /// Why that grade.
    pub verdict: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// Cluster.
    pub cluster: String,
    /// When (Unix ms).
    pub generated_ms: u64,
    /// History window, ms.
    pub window_ms: u64,
    /// The worst graded area.
    pub overall: Grade,
    /// The executive summary, in plain words.
    pub summary: String,
    /// Per area.
    pub areas: Vec<AreaGrade>,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// Recommendations, most urgent first.
    pub recommendations: Vec<Recommendation>,
    /// Consistency checks.
    pub consistency: Consistency,
    /// Trends.
    pub trends: Trends,
    /// Members.
    pub members: Vec<MemberRow>,
    /// The benchmark of this report, when asked for.
    pub benchmark: Option<BenchmarkSection>,
    /// Earlier benchmark runs, newest first.
    pub past_benchmarks: Vec<BenchmarkEvidence>,
    /// Active alerts.
    pub alerts: Vec<ActiveAlert>,
    /// The thresholds used.
    pub thresholds: ReportThresholds,
}

/// Builds the report of `inputs` under `thresholds`.
pub fn build(inputs: &ReportInputs, thresholds: &ReportThresholds) -> Report {
    let consistency = consistency::check(inputs);
    let trends = trends::compute(inputs);
    let mut graded = grade::grade(inputs, thresholds, &consistency);
    let benchmark = inputs
        .benchmark
        .as_ref()
        .map(|run| grade::benchmark(run, thresholds, &mut graded));
    advice::recommend(inputs, thresholds, &trends, &mut graded);
    let overall = graded
        .areas
        .iter()
        .map(|a| a.grade)
        .filter(|g| *g != Grade::Unknown)
        .max()
        .unwrap_or(Grade::Unknown);
    graded
        .findings
        .sort_by_key(|f| (std::cmp::Reverse(f.severity), urgency(&f.area)));
    graded
        .recommendations
        .sort_by_key(|r| (std::cmp::Reverse(r.priority), urgency(&r.area)));
    let summary = advice::summary(inputs, overall, &graded, &consistency, &trends);
    Report {
        cluster: inputs.state.cluster.clone(),
        generated_ms: inputs.generated_ms,
        window_ms: inputs.window_ms,
        overall,
        summary,
        areas: graded.areas,
        findings: graded.findings,
        recommendations: graded.recommendations,
        consistency,
        trends,
        members: member_rows(inputs),
        benchmark,
        past_benchmarks: inputs.past_benchmarks.clone(),
        alerts: inputs.alerts.clone(),
        thresholds: *thresholds,
    }
}

/// Among equal grades, what stops the cluster first: lost quorum, refused writes, diverged
/// data, then the rest.
fn urgency(area: &str) -> u8 {
    match area {
        "availability" => 0,
        "db_quota" => 1,
        "consistency" => 2,
        _ => 3,
    }
}

fn member_rows(inputs: &ReportInputs) -> Vec<MemberRow> {
    inputs
        .state
        .members
        .iter()
        .map(|m| {
            let name = ClusterState::member_label(m);
            MemberRow {
                figures: inputs
                    .members
                    .iter()
                    .find(|f| f.id == m.id)
                    .cloned()
                    .unwrap_or_default(),
                diagnosis: inputs
                    .diagnoses
                    .iter()
                    .find(|d| d.member_id == m.id || d.member == name)
                    .map(|d| d.verdict.cause.clone()),
                name,
                id: m.id.clone(),
                reachable: m.reachable,
                is_leader: m.is_leader,
                version: m.status.as_ref().map(|s| s.version.clone()),
                db_size_bytes: m.status.as_ref().map(|s| s.db_size_bytes),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
