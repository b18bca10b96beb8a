//! Benchmarks started over REST. Each job runs on its own thread with its own Tokio runtime,
//! so the collector's health and scrape loops (on the main runtime) keep their timing while
//! the benchmark saturates its workers. One job at a time; results go to the history store
//! and to `/metrics`; a collector shutdown stops running jobs and waits for their cleanup.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::sync;
use crate::{
    model::config::ClusterConfig, model::time::now_ms, ops::bench::Report,
    ops::bench::flags::ApiSettings, ops::bench::runner, ops::bench::runner::Progress,
    ops::bench::runner::ProgressSnapshot, ops::bench::safety, ops::bench::spec::BenchSpec,
    store::BenchmarkRun, store::Store,
};

/// Why a job was not started or cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The API is off, or the token is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// Another benchmark is running.
    #[error("benchmark {0} is still running; wait for it to finish")]
    Busy(String),
    /// The job thread could not start.
    #[error("cannot start the benchmark thread: {0}")]
    Spawn(String),
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Job id (the run id; the keys lived under `/etcd-monitor-bench/<id>/`).
    pub id: String,
    /// Cluster.
    pub cluster: String,
    /// Workload.
    pub workload: String,
    /// Name of the token that started it (`loopback` without admin tokens); absent for runs
    /// read back from the store.
    pub created_by: Option<String>,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub finished_ms: Option<u64>,
    /// Progress (absent for runs read back from the store).
    pub progress: Option<ProgressSnapshot>,
    /// The final report.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// Why the run failed.
    pub error: Option<String>,
}

struct Job {
    cluster: String,
    workload: String,
    created_by: String,
    started_ms: u64,
    finished_ms: Option<u64>,
    progress: Arc<Progress>,
    result: Option<Result<Report, String>>,
}

impl Job {
    fn state(&self) -> &'static str {
        match &self.result {
            None => "running",
            Some(Err(_)) => "failed",
            Some(Ok(r)) if r.header.interrupted => "interrupted",
            Some(Ok(_)) => "succeeded",
        }
    }
}

#[derive(Default)]
struct Inner {
    settings: ApiSettings,
    store: Option<Arc<Store>>,
    jobs: Mutex<HashMap<String, Job>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The benchmark jobs of one collector.
#[derive(Clone, Default)]
pub struct BenchJobs {
    inner: Arc<Inner>,
}

/// Worker threads of a job's runtime.
const JOB_WORKERS: usize = 2;

impl BenchJobs {
    /// Jobs under `settings`, stored in `store`.
    pub fn new(settings: ApiSettings, store: Option<Arc<Store>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                store,
                ..Inner::default()
            }),
        }
    }

    /// Cap on operations of a REST-started run.
    pub fn max_ops(&self) -> u64 {
        self.inner.settings.max_ops.max(1)
    }

    /// Checks that the API is on (`--enable-benchmark-api`); who may call it is the access
    /// policy's business (`crate::outputs::api::access`).
    pub fn check_enabled(&self) -> Result<(), JobError> {
        if self.inner.settings.enabled {
            Ok(())
        } else {
            Err(JobError::Forbidden(
                "the benchmark API is disabled; start the collector with --enable-benchmark-api"
                    .into(),
            ))
        }
    }

    /// Starts `spec` against `cluster` on behalf of `created_by`; returns the job id.
    pub fn start(
        &self,
        cluster: ClusterConfig,
        spec: BenchSpec,
        created_by: &str,
    ) -> Result<String, JobError> {
        let id = safety::new_run_id();
        let progress = Progress::new(&spec);
        {
            let mut jobs = self.lock_jobs();
            if let Some((running, _)) = jobs.iter().find(|(_, j)| j.result.is_none()) {
                return Err(JobError::Busy(running.clone()));
            }
            jobs.insert(
                id.clone(),
                Job {
                    cluster: cluster.name.clone(),
                    workload: spec.kind_name().to_string(),
                    created_by: created_by.to_string(),
                    started_ms: now_ms(),
                    finished_ms: None,
                    progress: progress.clone(),
                    result: None,
                },
            );
        }
        self.persist(&id);
        let this = self.clone();
        let job_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bench-{id}"))
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(JOB_WORKERS)
                    .thread_name("bench-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt
                        .block_on(runner::run(&cluster, &spec, &job_id, progress))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("cannot start the benchmark runtime: {e}")),
                };
                match &result {
                    Ok(r) => tracing::info!(
                        id = %job_id,
                        requests_per_second = r.summary.requests_per_second,
                        failed = r.summary.failed,
                        "Benchmark finished."
                    ),
                    Err(error) => tracing::warn!(id = %job_id, %error, "Benchmark failed."),
                }
                this.finish(&job_id, result);
            });
        match spawned {
            Ok(handle) => {
                let mut threads = sync::lock(&self.inner.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
                tracing::info!(%id, %created_by, "Benchmark started.");
                Ok(id)
            }
            Err(e) => {
                self.finish(&id, Err(e.to_string()));
                Err(JobError::Spawn(e.to_string()))
            }
        }
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        sync::lock(&self.inner.jobs)
    }

    fn finish(&self, id: &str, result: Result<Report, String>) {
        if let Some(job) = self.lock_jobs().get_mut(id) {
            job.finished_ms = Some(now_ms());
            job.result = Some(result);
        }
        self.persist(id);
    }

    fn persist(&self, id: &str) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let Some(run) = self.lock_jobs().get(id).map(|j| BenchmarkRun {
            id: id.to_string(),
            cluster: j.cluster.clone(),
            workload: j.workload.clone(),
            state: j.state().to_string(),
            started_ms: j.started_ms,
            finished_ms: j.finished_ms,
            report_json: match &j.result {
                Some(Ok(r)) => serde_json::to_string(r).ok(),
                _ => None,
            },
            error: match &j.result {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
        }) else {
            return;
        };
        if let Err(error) = store.save_benchmark_run(&run) {
            tracing::warn!(%id, %error, "Benchmark result not stored.");
        }
    }

    /// The job `id`, from memory or (after a restart, or for CLI runs) from the store.
    pub fn get(&self, id: &str) -> Option<JobView> {
        if let Some(j) = self.lock_jobs().get(id) {
            let (report, error) = match &j.result {
                Some(Ok(r)) => (serde_json::to_value(r).ok(), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, None),
            };
            return Some(JobView {
                id: id.to_string(),
                cluster: j.cluster.clone(),
                workload: j.workload.clone(),
                created_by: Some(j.created_by.clone()),
                state: j.state().to_string(),
                started_ms: j.started_ms,
                finished_ms: j.finished_ms,
                progress: Some(j.progress.snapshot()),
                report,
                error,
            });
        }
        let run = self.inner.store.as_ref()?.benchmark_run(id).ok()??;
        Some(JobView {
            id: run.id,
            cluster: run.cluster,
            workload: run.workload,
            created_by: None,
            state: run.state,
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
            progress: None,
            report: run.report_json.and_then(|j| serde_json::from_str(&j).ok()),
            error: run.error,
        })
    }

    /// Stops running jobs and waits (at most `timeout`) until they have cleaned up.
    pub async fn shutdown(&self, timeout: Duration) {
        let running: Vec<Arc<Progress>> = self
            .lock_jobs()
            .values()
            .filter(|j| j.result.is_none())
            .map(|j| j.progress.clone())
            .collect();
        if running.is_empty() {
            return;
        }
        tracing::info!(
            jobs = running.len(),
            "Stopping benchmarks and deleting their keys."
        );
        for p in &running {
            p.cancel();
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.lock_jobs().values().any(|j| j.result.is_none()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The series of the jobs this collector ran. Cluster and workload names are label values,
    /// escaped by the exposition like every other.
    pub fn render_metrics(&self, out: &mut crate::model::exposition::Exposition) {
        let jobs = self.lock_jobs();
        let running = jobs.values().filter(|j| j.result.is_none()).count();
        out.gauge(
            "etcdmon_benchmark_running",
            "Benchmarks running now (REST-started).",
            &[],
            running as f64,
        );
        // Latest finished run per (cluster, workload), and totals over all runs.
        let mut latest: std::collections::BTreeMap<(String, String), &Report> =
            std::collections::BTreeMap::new();
        let mut runs: std::collections::BTreeMap<(String, String, &'static str), u64> =
            std::collections::BTreeMap::new();
        let mut requests: std::collections::BTreeMap<(String, String, &'static str), u64> =
            std::collections::BTreeMap::new();
        let mut finished: Vec<&Job> = jobs.values().filter(|j| j.result.is_some()).collect();
        finished.sort_by_key(|j| j.started_ms);
        for j in finished {
            let key = (j.cluster.clone(), j.workload.clone());
            *runs
                .entry((key.0.clone(), key.1.clone(), j.state()))
                .or_insert(0) += 1;
            if let Some(Ok(r)) = &j.result {
                *requests
                    .entry((key.0.clone(), key.1.clone(), "success"))
                    .or_insert(0) += r.summary.succeeded;
                *requests
                    .entry((key.0.clone(), key.1.clone(), "error"))
                    .or_insert(0) += r.summary.failed;
                latest.insert(key, r);
            }
        }
        for ((c, w, result), n) in &runs {
            out.counter(
                "etcdmon_benchmark_runs_total",
                "Benchmark runs this collector finished, by result.",
                &[("cluster", c), ("workload", w), ("result", result)],
                *n as f64,
            );
        }
        for ((c, w, outcome), n) in &requests {
            out.counter(
                "etcdmon_benchmark_requests_total",
                "Requests of finished benchmark runs, by outcome.",
                &[("cluster", c), ("workload", w), ("outcome", outcome)],
                *n as f64,
            );
        }
        render_latest(out, &latest);
    }
}

/// The gauges of the latest finished run per (cluster, workload): requests per second, latency
/// percentiles and, for runs with an SLO, whether it was met.
fn render_latest(
    out: &mut crate::model::exposition::Exposition,
    latest: &std::collections::BTreeMap<(String, String), &Report>,
) {
    for ((c, w), r) in latest {
        out.gauge(
            "etcdmon_benchmark_last_requests_per_second",
            "Successful requests per second of the latest run.",
            &[("cluster", c), ("workload", w)],
            r.summary.requests_per_second,
        );
    }
    for ((c, w), r) in latest {
        for p in &r.percentiles {
            out.gauge(
                "etcdmon_benchmark_last_latency_seconds",
                "Client-side latency percentiles of the latest run.",
                &[
                    ("cluster", c),
                    ("workload", w),
                    ("quantile", &(p.percentile / 100.0).to_string()),
                ],
                p.seconds,
            );
        }
    }
    for ((c, w), r) in latest {
        if let Some(v) = &r.slo {
            out.gauge(
                "etcdmon_benchmark_last_slo_pass",
                "1 when the latest run met its SLO (only for runs with one).",
                &[("cluster", c), ("workload", w)],
                if v.pass { 1.0 } else { 0.0 },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_unless_enabled() {
        let off = BenchJobs::default();
        assert!(
            matches!(off.check_enabled(), Err(JobError::Forbidden(m)) if m.contains("--enable-benchmark-api"))
        );
        let on = BenchJobs::new(
            ApiSettings {
                enabled: true,
                max_ops: 10,
            },
            None,
        );
        assert!(on.check_enabled().is_ok());
        let mut page = crate::model::exposition::Exposition::new();
        on.render_metrics(&mut page);
        assert!(page.encode().contains("etcdmon_benchmark_running 0"));
    }
}
