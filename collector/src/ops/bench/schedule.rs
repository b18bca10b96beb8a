//! Scheduled benchmarks (`--benchmark-schedule=1h`, or the original `BENCHMARK_ENABLED=true`
//! with `BENCHMARK_INTERVAL=1h`): every interval, a small, rate-limited write load
//! ([`small_spec`]) against each cluster, through the same job runner as REST-started runs —
//! keys only under `/etcd-monitor-bench/<id>/` and deleted after, the result in the history
//! store and in the `etcdmon_benchmark_*` series, and in the performance report.
//!
//! One task, one gate: before each run the [`Scheduler`] asks its busy hooks (an alert firing
//! on the cluster; an admin operation in progress; later, "not the leader collector"), and a
//! benchmark job already running is busy too. A skipped run is counted by reason in
//! `etcdmon_benchmark_schedule_skipped_total`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::model::{cluster::Clusters, config::ConfigError, sync};
use crate::ops::bench::{
    jobs::{BenchJobs, JobError},
    spec::{BenchSpec, BenchmarkType, RawSpec},
};

/// Operations of a scheduled (and of the report's) run.
pub const SMALL_OPS: u64 = 1000;
/// Requests per second of a scheduled run, all clients together.
pub const SMALL_RATE: f64 = 200.0;
/// Concurrent requests of a scheduled run.
pub const SMALL_CLIENTS: usize = 8;
/// Value bytes of a scheduled run (etcd's `check perf` writes 256-byte values).
pub const SMALL_VALUE_SIZE: usize = 256;
/// Shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// `BENCHMARK_INTERVAL` when `BENCHMARK_ENABLED=true` and no interval is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest a scheduled run is waited for.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// The small write load: [`SMALL_OPS`] puts of [`SMALL_VALUE_SIZE`] bytes at [`SMALL_RATE`]
/// requests per second from [`SMALL_CLIENTS`] clients on one connection, to the leader.
pub fn small_spec() -> Result<BenchSpec, crate::ops::bench::SpecError> {
    RawSpec {
        kind: Some(BenchmarkType::Write),
        ops: Some(SMALL_OPS),
        clients: Some(SMALL_CLIENTS),
        conns: Some(1),
        value_size: Some(SMALL_VALUE_SIZE),
        rate: Some(SMALL_RATE),
        ..RawSpec::default()
    }
    .validate(&|f: &str| f.to_string(), SMALL_OPS)
}

/// Why a scheduled run was skipped (the `reason` label: a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// An alert is firing on the cluster.
    AlertFiring,
    /// An admin operation is running.
    AdminOperation,
    /// A benchmark job (REST-started or the previous scheduled one) is still running.
    BenchmarkRunning,
    /// This collector is not the one that runs scheduled work.
    NotLeader,
}

impl SkipReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlertFiring => "alert_firing",
            Self::AdminOperation => "admin_operation",
            Self::BenchmarkRunning => "benchmark_running",
            Self::NotLeader => "not_leader",
        }
    }
}

/// A busy check: given a cluster name, why a run must not start now (None = go).
pub type BusyHook = Arc<dyn Fn(&str) -> Option<SkipReason> + Send + Sync>;

/// `--benchmark-schedule`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScheduleArgs {
    /// Run a small, rate-limited write benchmark (1000 puts at 200/s under
    /// `/etcd-monitor-bench/`) against every cluster at this interval (`1h`; `off` = never).
    /// Skipped while an alert fires on the cluster or an admin operation runs. Wins over the
    /// BENCHMARK_ENABLED / BENCHMARK_INTERVAL environment variables. Default: off.
    #[arg(long)]
    pub benchmark_schedule: Option<String>,
}

/// A validated schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Time between runs.
    pub interval: Duration,
}

fn interval(field: &str, value: &str) -> Result<Duration, ConfigError> {
    let d =
        crate::model::time::parse_duration(value.trim()).map_err(|e| ConfigError::new(field, e))?;
    if d < MIN_INTERVAL {
        return Err(ConfigError::new(
            field,
            format!("{value:?} is shorter than {MIN_INTERVAL:?}"),
        ));
    }
    Ok(d)
}

impl ScheduleArgs {
    /// The schedule, from the flag or else from `env` (`BENCHMARK_ENABLED`,
    /// `BENCHMARK_INTERVAL`); None when off. The error names the flag or variable.
    pub fn validate(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ScheduleConfig>, ConfigError> {
        if let Some(flag) = &self.benchmark_schedule {
            if matches!(flag.trim(), "off" | "0" | "false") {
                return Ok(None);
            }
            return Ok(Some(ScheduleConfig {
                interval: interval("--benchmark-schedule", flag)?,
            }));
        }
        let enabled = match env("BENCHMARK_ENABLED").as_deref().map(str::trim) {
            None | Some("") => false,
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(other) => {
                return Err(ConfigError::new(
                    "BENCHMARK_ENABLED",
                    format!("{other:?}: use true or false"),
                ));
            }
        };
        let every = match env("BENCHMARK_INTERVAL").filter(|v| !v.trim().is_empty()) {
            Some(v) => interval("BENCHMARK_INTERVAL", &v)?,
            None => DEFAULT_INTERVAL,
        };
        Ok(enabled.then_some(ScheduleConfig { interval: every }))
    }
}

#[derive(Default)]
struct Counts {
    runs: BTreeMap<(String, String), u64>,
    skipped: BTreeMap<(String, SkipReason), u64>,
}

/// The scheduled-benchmark task of one collector.
pub struct Scheduler {
    config: ScheduleConfig,
    clusters: Clusters,
    jobs: BenchJobs,
    hooks: Mutex<Vec<BusyHook>>,
    counts: Mutex<Counts>,
}

impl Scheduler {
    /// A scheduler over `clusters` that starts its runs through `jobs`.
    pub fn new(config: ScheduleConfig, clusters: Clusters, jobs: BenchJobs) -> Arc<Self> {
        Arc::new(Self {
            config,
            clusters,
            jobs,
            hooks: Mutex::new(Vec::new()),
            counts: Mutex::default(),
        })
    }

    /// Adds a busy check consulted before every run (alerts, admin operations, leadership).
    pub fn add_busy_hook(&self, hook: BusyHook) {
        sync::lock(&self.hooks).push(hook);
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    /// The gate: why `cluster` must not be benchmarked now.
    pub fn busy(&self, cluster: &str) -> Option<SkipReason> {
        let hooks: Vec<BusyHook> = sync::lock(&self.hooks).clone();
        hooks.iter().find_map(|h| h(cluster))
    }

    fn skipped(&self, cluster: &str, reason: SkipReason) {
        tracing::info!(
            cluster,
            reason = reason.as_str(),
            "Scheduled benchmark skipped."
        );
        *sync::lock(&self.counts)
            .skipped
            .entry((cluster.to_string(), reason))
            .or_insert(0) += 1;
    }

    fn ran(&self, cluster: &str, result: &str) {
        *sync::lock(&self.counts)
            .runs
            .entry((cluster.to_string(), result.to_string()))
            .or_insert(0) += 1;
    }

    /// Runs forever: the first run one interval after the start, then every interval.
    pub async fn run(self: Arc<Self>) {
        let spec = match small_spec() {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "Scheduled benchmarks disabled: invalid spec.");
                return;
            }
        };
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.interval,
            self.config.interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for cluster in self.clusters.iter() {
                self.run_once(cluster.name(), &cluster.config, &spec).await;
            }
        }
    }

    /// One scheduled run against `cluster` (or its skip); waits until it has finished.
    pub async fn run_once(
        &self,
        name: &str,
        config: &crate::model::config::ClusterConfig,
        spec: &BenchSpec,
    ) {
        if let Some(reason) = self.busy(name) {
            self.skipped(name, reason);
            return;
        }
        let id = match self.jobs.start(config.clone(), spec.clone(), "schedule") {
            Ok(id) => id,
            Err(JobError::Busy(_)) => return self.skipped(name, SkipReason::BenchmarkRunning),
            Err(error) => {
                tracing::warn!(cluster = name, %error, "Scheduled benchmark not started.");
                return self.ran(name, "failed");
            }
        };
        let state = wait_finished(&self.jobs, &id, RUN_DEADLINE).await;
        tracing::info!(cluster = name, %id, %state, "Scheduled benchmark done.");
        self.ran(name, &state);
    }

    /// `etcdmon_benchmark_schedule_*`.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        out.gauge(
            "etcdmon_benchmark_schedule_interval_seconds",
            "Interval of scheduled benchmarks (absent when off).",
            &[],
            self.config.interval.as_secs_f64(),
        );
        let counts = sync::lock(&self.counts);
        for ((cluster, result), n) in &counts.runs {
            out.counter(
                "etcdmon_benchmark_schedule_runs_total",
                "Scheduled benchmark runs, by result (succeeded, failed, interrupted, running = still running at the deadline).",
                &[("cluster", cluster), ("result", result)],
                *n as f64,
            );
        }
        for ((cluster, reason), n) in &counts.skipped {
            out.counter(
                "etcdmon_benchmark_schedule_skipped_total",
                "Scheduled benchmark runs skipped, by reason (alert_firing, admin_operation, benchmark_running, not_leader).",
                &[("cluster", cluster), ("reason", reason.as_str())],
                *n as f64,
            );
        }
    }
}

/// Waits until job `id` has left `running` (at most `deadline`); its final state.
pub async fn wait_finished(jobs: &BenchJobs, id: &str, deadline: Duration) -> String {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let state = jobs.get(id).map_or("failed".to_string(), |j| j.state);
        if state != "running" || tokio::time::Instant::now() >= end {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flag_wins_env_enables_and_bad_values_are_named() {
        let none = ScheduleArgs::default();
        assert_eq!(none.validate(&env(&[])).expect("ok"), None);
        let on = none
            .validate(&env(&[("BENCHMARK_ENABLED", "true")]))
            .expect("ok");
        assert_eq!(on.map(|c| c.interval), Some(DEFAULT_INTERVAL));
        let every = none
            .validate(&env(&[
                ("BENCHMARK_ENABLED", "true"),
                ("BENCHMARK_INTERVAL", "5m"),
            ]))
            .expect("ok");
        assert_eq!(every.map(|c| c.interval), Some(Duration::from_secs(300)));
        let flag = ScheduleArgs {
            benchmark_schedule: Some("5s".into()),
        };
        let won = flag
            .validate(&env(&[
                ("BENCHMARK_ENABLED", "false"),
                ("BENCHMARK_INTERVAL", "bogus"),
            ]))
            .expect("flag wins");
        assert_eq!(won.map(|c| c.interval), Some(Duration::from_secs(5)));
        let off = ScheduleArgs {
            benchmark_schedule: Some("off".into()),
        };
        assert_eq!(
            off.validate(&env(&[("BENCHMARK_ENABLED", "true")]))
                .expect("ok"),
            None
        );
        let bad = none
            .validate(&env(&[("BENCHMARK_ENABLED", "maybe")]))
            .expect_err("bad");
        assert_eq!(bad.field, "BENCHMARK_ENABLED");
        let bad = none
            .validate(&env(&[
                ("BENCHMARK_ENABLED", "true"),
                ("BENCHMARK_INTERVAL", "soon"),
            ]))
            .expect_err("bad");
        assert_eq!(bad.field, "BENCHMARK_INTERVAL");
        let short = ScheduleArgs {
            benchmark_schedule: Some("10ms".into()),
        };
        assert_eq!(
            short.validate(&env(&[])).expect_err("short").field,
            "--benchmark-schedule"
        );
    }

    #[test]
    fn the_small_spec_is_small_and_rate_limited() {
        let s = small_spec().expect("valid");
        assert_eq!(s.ops, SMALL_OPS);
        assert_eq!(s.rate, Some(SMALL_RATE));
        assert_eq!(s.kind_name(), "write");
    }

    #[tokio::test]
    async fn a_busy_cluster_is_skipped_and_counted() {
        let s = Scheduler::new(
            ScheduleConfig {
                interval: Duration::from_secs(60),
            },
            Arc::new(vec![]),
            BenchJobs::default(),
        );
        s.add_busy_hook(Arc::new(|c: &str| {
            (c == "busy").then_some(SkipReason::AlertFiring)
        }));
        assert_eq!(s.busy("idle"), None);
        let config = crate::model::config::ClusterConfig {
            name: "busy".into(),
            endpoints: vec!["http://127.0.0.1:1".into()],
            tls: None,
            auth: None,
            metrics_urls: vec![],
            dial_timeout: Duration::from_millis(100),
        };
        s.run_once("busy", &config, &small_spec().expect("spec"))
            .await;
        let mut page = crate::model::exposition::Exposition::default();
        s.render(&mut page);
        let text = page.encode();
        assert!(
            text.contains(
                "etcdmon_benchmark_schedule_skipped_total{cluster=\"busy\",reason=\"alert_firing\"} 1"
            ),
            "{text}"
        );
    }
}
