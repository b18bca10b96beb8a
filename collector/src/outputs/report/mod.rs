//! The performance report's outputs: gathering its inputs ([`gather`]), the optional benchmark
//! section ([`run_benchmark`]), and renderers — JSON (the [`Report`] itself),
//! [`to_markdown`], [`to_html`] with inline SVG charts ([`svg`]). The REST route is
//! `crate::outputs::api::report`; the CLI is `etcd-monitor report` (`crate::app::report`).
//!
//! ```text
//! let inputs = gather::gather(&sources, window, now_ms()).await;
//! let report = crate::analysis::report::build(&inputs, &thresholds);
//! let html = to_html(&report);
//! ```

pub mod gather;
pub mod html;
pub mod markdown;
pub mod svg;

use std::{sync::Arc, time::Duration};

pub use crate::analysis::report::{Report, ReportThresholds, build};
pub use html::to_html;
pub use markdown::to_markdown;

use crate::analysis::report::BenchmarkEvidence;
use crate::ops::bench::{jobs::BenchJobs, schedule};

/// The response header carrying the overall grade, whatever the format (`good`, `warning`,
/// `critical`, `unknown`).
pub const GRADE_HEADER: &str = "x-etcd-monitor-grade";

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The [`Report`] as JSON.
    Json,
    /// Markdown.
    Markdown,
    /// One self-contained HTML page.
    Html,
}

impl Format {
    /// `json`, `markdown` (or `md`) or `html`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "markdown" | "md" => Some(Self::Markdown),
            "html" => Some(Self::Html),
            _ => None,
        }
    }

    /// The Content-Type of the rendered report.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Markdown => "text/markdown; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

/// `report` rendered as `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode the report: {e}\"}}")),
        Format::Markdown => to_markdown(report),
        Format::Html => to_html(report),
    }
}

/// What the report route needs beyond the API's state.
#[derive(Clone, Default)]
pub struct ReportSettings {
    /// `--report-threshold`.
    pub thresholds: ReportThresholds,
    /// The scheduled benchmarks, when on (their metrics are on /metrics).
    pub scheduler: Option<Arc<schedule::Scheduler>>,
}

/// Why the report's benchmark did not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// Another benchmark runs.
    #[error("benchmark {0} is still running; try again when it has finished")]
    Busy(String),
    /// It could not start.
    #[error("{0}")]
    Start(String),
}

/// Runs the small write load ([`schedule::small_spec`]) against `cluster` through `jobs` (so
/// it is stored and exported like every run) and returns its evidence.
pub async fn run_benchmark(
    jobs: &BenchJobs,
    cluster: &crate::model::config::ClusterConfig,
    created_by: &str,
) -> Result<BenchmarkEvidence, BenchmarkError> {
    let spec = schedule::small_spec().map_err(|e| BenchmarkError::Start(e.to_string()))?;
    let id = jobs
        .start(cluster.clone(), spec, created_by)
        .map_err(|e| match e {
            crate::ops::bench::jobs::JobError::Busy(id) => BenchmarkError::Busy(id),
            other => BenchmarkError::Start(other.to_string()),
        })?;
    schedule::wait_finished(jobs, &id, Duration::from_secs(120)).await;
    let view = jobs
        .get(&id)
        .ok_or_else(|| BenchmarkError::Start(format!("benchmark {id} vanished")))?;
    let run = crate::store::BenchmarkRun {
        id: view.id.clone(),
        cluster: view.cluster.clone(),
        workload: view.workload.clone(),
        state: view.state.clone(),
        started_ms: view.started_ms,
        finished_ms: view.finished_ms,
        report_json: view.report.as_ref().map(|r| r.to_string()),
        error: view.error.clone(),
    };
    let mut evidence = gather::benchmark_of_run(&run).unwrap_or(BenchmarkEvidence {
        run_id: view.id,
        workload: view.workload,
        origin: String::new(),
        started_ms: view.started_ms,
        succeeded: 0,
        failed: 0,
        requests_per_second: 0.0,
        target_rate: Some(schedule::SMALL_RATE),
        p50_ms: None,
        p99_ms: None,
        error: Some(
            view.error
                .unwrap_or_else(|| format!("ended {}", view.state)),
        ),
    });
    evidence.origin = "on demand".into();
    Ok(evidence)
}
