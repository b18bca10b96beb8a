//! `etcd-monitor report`: fetches the performance report from a running collector's REST API
//! (`GET /api/v1/report`) and writes it to stdout or a file; and the wiring of scheduled
//! benchmarks ([`start_schedule`]).
//!
//! The CLI asks a collector rather than a cluster: the trends, diagnoses, alerts and
//! benchmark history a report stands on live in the collector's store and memory, so a report
//! built from a bare cluster would be missing most of its evidence.

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::analysis::alerting::{Alerting, lifecycle::AlertState};
use crate::model::cluster::Clusters;
use crate::ops::bench::{
    jobs::BenchJobs,
    schedule::{Scheduler, SkipReason},
};
use crate::outputs::report::GRADE_HEADER;

/// Exit codes of `etcd-monitor report`.
pub mod exit {
    /// The request failed (network, HTTP error, file).
    pub const ERROR: u8 = 1;
    /// Bad flags.
    pub const USAGE: u8 = 2;
    /// The overall grade reached `--fail-on`.
    pub const GRADE: u8 = 3;
}

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliFormat {
    /// The report object as JSON.
    Json,
    /// Markdown.
    Markdown,
    /// One self-contained HTML page (inline SVG charts, works offline).
    Html,
}

/// The grade `--fail-on` compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 3 when the overall grade is warning or critical.
    Warning,
    /// Exit 3 when the overall grade is critical.
    Critical,
}

/// `etcd-monitor report`: the graded performance report of one cluster, from a running
/// collector. Exit codes: 0 ok, 1 request failed, 2 usage, 3 overall grade at or above
/// --fail-on.
#[derive(Debug, Parser)]
#[command(name = "etcd-monitor report", version)]
pub struct ReportCli {
    /// The collector's REST API.
    #[arg(
        long,
        env = "ETCD_MONITOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// File holding a bearer token (viewer for a report, admin with --with-benchmark).
    #[arg(long, env = "ETCD_MONITOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to verify an https collector.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Cluster name (default: the collector's first).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: CliFormat,
    /// History window of the trends (`24h`; at most the collector's history retention).
    #[arg(long)]
    pub window: Option<String>,
    /// Run a small rate-limited write benchmark first and grade it (admin token; the collector
    /// needs --enable-benchmark-api).
    #[arg(long)]
    pub with_benchmark: bool,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Exit 3 when the overall grade is at least this.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
    /// How long to wait for the collector (a benchmark adds its own run time).
    #[arg(long, default_value = "60s", value_parser = crate::model::time::parse_duration)]
    pub timeout: Duration,
}

/// Runs `etcd-monitor report` with `args` (the program name first).
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match ReportCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(exit::USAGE));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-monitor report: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(fetch(&cli)) {
        Ok((body, grade)) => finish(&cli, &body, grade.as_deref()),
        Err(e) => {
            eprintln!("etcd-monitor report: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn finish(cli: &ReportCli, body: &str, grade: Option<&str>) -> ExitCode {
    let written = match &cli.output {
        Some(path) => {
            std::fs::write(path, body).with_context(|| format!("--output {}", path.display()))
        }
        None => std::io::stdout()
            .lock()
            .write_all(body.as_bytes())
            .context("stdout"),
    };
    if let Err(e) = written {
        eprintln!("etcd-monitor report: {e:#}");
        return ExitCode::from(exit::ERROR);
    }
    let failing = matches!(
        (cli.fail_on, grade),
        (Some(FailOn::Warning), Some("warning" | "critical"))
            | (Some(FailOn::Critical), Some("critical"))
    );
    if failing {
        eprintln!(
            "etcd-monitor report: overall grade {}",
            grade.unwrap_or("?")
        );
        return ExitCode::from(exit::GRADE);
    }
    ExitCode::SUCCESS
}

fn client(cli: &ReportCli) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(cli.timeout);
    if let Some(ca) = &cli.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("--ca-file {}", ca.display()))?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("--ca-file {}", ca.display()))?,
        );
    }
    Ok(b.build()?)
}

/// The report's body and the overall grade the collector sent with it.
async fn fetch(cli: &ReportCli) -> anyhow::Result<(String, Option<String>)> {
    let format = match cli.format {
        CliFormat::Json => "json",
        CliFormat::Markdown => "markdown",
        CliFormat::Html => "html",
    };
    let mut query = vec![("format", format.to_string())];
    if let Some(c) = &cli.cluster {
        query.push(("cluster", c.clone()));
    }
    if let Some(w) = &cli.window {
        query.push(("window", w.clone()));
    }
    if cli.with_benchmark {
        query.push(("with_benchmark", "true".into()));
    }
    let url = format!("{}/api/v1/report", cli.url.trim_end_matches('/'));
    let mut req = client(cli)?.get(&url).query(&query);
    if let Some(path) = &cli.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file {}", path.display()))?;
        req = req.bearer_auth(token.trim());
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let grade = resp
        .headers()
        .get(GRADE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("GET {url}: {status}: {message}");
    }
    Ok((body, grade))
}

/// Starts the scheduled benchmarks when `config` asks for them; their handle (for /metrics).
/// The gate skips a cluster while one of its alerts fires; admin operations and leadership
/// add their own hooks with [`Scheduler::add_busy_hook`].
pub fn start_schedule(
    config: &crate::app::config::Config,
    clusters: &Clusters,
    jobs: &BenchJobs,
    alerting: &Alerting,
    admin: &crate::ops::admin::AdminJobs,
    leadership: &crate::sources::ha::Leadership,
) -> Option<Arc<Scheduler>> {
    let schedule = config.benchmark_schedule?;
    let scheduler = Scheduler::new(schedule, clusters.clone(), jobs.clone());
    let alerts = alerting.clone();
    scheduler.add_busy_hook(Arc::new(move |cluster: &str| {
        alerts
            .active(cluster)
            .iter()
            .any(|a| a.state == AlertState::Firing)
            .then_some(SkipReason::AlertFiring)
    }));
    let admin = admin.clone();
    scheduler.add_busy_hook(Arc::new(move |cluster: &str| {
        admin.running(cluster).map(|_| SkipReason::AdminOperation)
    }));
    // Under --ha-election only the elected collector runs scheduled work.
    let leadership = leadership.clone();
    scheduler.add_busy_hook(Arc::new(move |_cluster: &str| {
        (!leadership.is_leader()).then_some(SkipReason::NotLeader)
    }));
    tracing::info!(
        interval = %humantime::format_duration(schedule.interval),
        "Scheduled benchmarks on."
    );
    tokio::spawn(scheduler.clone().run());
    Some(scheduler)
}
