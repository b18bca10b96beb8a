//! Admin operations as jobs: at most one per cluster at a time (a second is refused, naming the
//! running job), each run as a task on the collector's runtime with its progress kept in
//! memory, and each recorded in the audit trail twice — when it starts and when it ends —
//! with its actor, arguments, result and the cluster's figures before and after. Outcomes are
//! counted in `etcdmon_admin_operations_total{op,result}`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    model::config::ClusterConfig,
    model::sync,
    model::time::now_ms,
    ops::admin::actions::{self, AdminOp, OPS},
    ops::admin::snapshots::SnapshotDir,
    ops::ctl::safe::{OpError, Progress},
    store::{AuditRecord, Store},
};

/// Jobs kept in memory (finished ones beyond this are forgotten, oldest first; the audit
/// trail still has them).
pub const MAX_JOBS: usize = 100;
/// Progress events kept per job (later ones are counted, not kept).
pub const MAX_PROGRESS: usize = 200;
/// Results of an operation: the `result` label.
pub const RESULTS: [&str; 3] = ["success", "failure", "refused"];

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Another admin operation runs on the cluster.
    #[error(
        "admin operation {op} (job {job}, started by {actor}) is still running on cluster {cluster}; wait for it to finish"
    )]
    Busy {
        /// The running job.
        job: String,
        /// Its operation.
        op: String,
        /// Who started it.
        actor: String,
        /// The cluster.
        cluster: String,
    },
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminJobView {
    /// Job id.
    pub id: String,
    /// Cluster.
    pub cluster: String,
    /// Operation.
    pub op: String,
    /// Who started it: a token's name, `loopback` or `auto-defrag`.
    pub actor: String,
    /// The validated arguments.
    #[schema(value_type = Object)]
    pub args: Value,
    /// `running`, `success`, `failure` or `refused`.
    pub state: String,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub finished_ms: Option<u64>,
    /// Progress events so far (absent for jobs read back from the audit trail).
    #[schema(value_type = Option<Vec<Object>>)]
    pub progress: Option<Vec<Value>>,
    /// Progress events not kept (beyond the bound).
    pub progress_dropped: u64,
    /// The report of a finished operation.
    #[schema(value_type = Option<Object>)]
    pub report: Option<Value>,
    /// Why it failed or was refused.
    pub error: Option<String>,
    /// Figures before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// Figures after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<String, AdminJobView>,
    order: VecDeque<String>,
    /// cluster → running job id.
    running: HashMap<String, String>,
}

#[derive(Default)]
struct Inner {
    store: Option<Arc<Store>>,
    snapshots: SnapshotDir,
    jobs: Mutex<Jobs>,
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    busy_refusals: AtomicU64,
    audit_failures: AtomicU64,
    auto: Mutex<BTreeMap<(String, &'static str), u64>>,
    next: AtomicU64,
}

/// The admin jobs of one collector (cheap to clone).
#[derive(Clone, Default)]
pub struct AdminJobs {
    inner: Arc<Inner>,
}

/// Outcomes of an automatic-defrag check (the `outcome` label).
pub const AUTO_OUTCOMES: [&str; 7] = [
    "started",
    "not_leader",
    "outside_window",
    "alert_firing",
    "busy",
    "below_threshold",
    "survey_failed",
];

impl AdminJobs {
    /// Jobs recorded in `store`, snapshots kept in `snapshots`.
    pub fn new(store: Option<Arc<Store>>, snapshots: SnapshotDir) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                snapshots,
                ..Inner::default()
            }),
        }
    }

    /// The snapshot directory.
    pub fn snapshots(&self) -> &SnapshotDir {
        &self.inner.snapshots
    }

    /// The store (for the audit read).
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.inner.store.as_ref()
    }

    /// The job running on `cluster`, as `(id, op)`.
    pub fn running(&self, cluster: &str) -> Option<(String, String)> {
        let jobs = sync::lock(&self.inner.jobs);
        let id = jobs.running.get(cluster)?;
        let op = jobs.by_id.get(id).map(|j| j.op.clone()).unwrap_or_default();
        Some((id.clone(), op))
    }

    /// Starts `op` on `cluster` on behalf of `actor`; refused while another admin operation
    /// runs on that cluster. Returns the job id.
    pub fn start(
        &self,
        cluster: ClusterConfig,
        op: AdminOp,
        actor: &str,
    ) -> Result<String, AdminError> {
        let id = format!(
            "adm-{:x}-{}",
            now_ms(),
            self.inner.next.fetch_add(1, Ordering::Relaxed)
        );
        self.claim(&cluster.name, &id, &op, actor)?;
        tracing::info!(%id, cluster = %cluster.name, op = op.name(), %actor, "Admin operation started.");
        let this = self.clone();
        let job = id.clone();
        tokio::spawn(async move { this.execute(cluster, op, job).await });
        Ok(id)
    }

    /// Registers the job, or refuses when the cluster is busy.
    fn claim(&self, cluster: &str, id: &str, op: &AdminOp, actor: &str) -> Result<(), AdminError> {
        let mut jobs = sync::lock(&self.inner.jobs);
        if let Some(running) = jobs.running.get(cluster) {
            let view = jobs.by_id.get(running);
            self.inner.busy_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(AdminError::Busy {
                job: running.clone(),
                op: view.map(|j| j.op.clone()).unwrap_or_default(),
                actor: view.map(|j| j.actor.clone()).unwrap_or_default(),
                cluster: cluster.to_string(),
            });
        }
        jobs.running.insert(cluster.to_string(), id.to_string());
        jobs.by_id.insert(
            id.to_string(),
            AdminJobView {
                id: id.to_string(),
                cluster: cluster.to_string(),
                op: op.name().to_string(),
                actor: actor.to_string(),
                args: op.args(),
                state: "running".to_string(),
                started_ms: now_ms(),
                finished_ms: None,
                progress: Some(Vec::new()),
                progress_dropped: 0,
                report: None,
                error: None,
                before: None,
                after: None,
            },
        );
        jobs.order.push_back(id.to_string());
        while jobs.order.len() > MAX_JOBS {
            let Some(pos) = jobs
                .order
                .iter()
                .position(|j| !jobs.running.values().any(|r| r == j))
            else {
                break;
            };
            if let Some(old) = jobs.order.remove(pos) {
                jobs.by_id.remove(&old);
            }
        }
        Ok(())
    }

    async fn execute(&self, cluster: ClusterConfig, op: AdminOp, id: String) {
        let before = actions::figures(&cluster).await;
        self.update(&id, |j| j.before = Some(before));
        self.audit(&id).await;
        let progress = |p: &Progress| self.push_progress(&id, p);
        let ctx = actions::Context {
            config: &cluster,
            job_id: &id,
            snapshots: &self.inner.snapshots,
            progress: &progress,
        };
        let result = actions::run(&op, &ctx).await;
        let after = actions::figures(&cluster).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(OpError::Refused { .. }) => "refused",
            Err(OpError::Etcd { .. }) => "failure",
        };
        match &result {
            Ok(_) => tracing::info!(%id, op = op.name(), "Admin operation succeeded."),
            Err(error) => {
                tracing::warn!(%id, op = op.name(), result = outcome, %error, "Admin operation did not succeed.")
            }
        }
        *sync::lock(&self.inner.counts)
            .entry((op.name(), outcome))
            .or_insert(0) += 1;
        self.update(&id, |j| {
            j.state = outcome.to_string();
            j.finished_ms = Some(now_ms());
            j.after = Some(after);
            match result {
                Ok(report) => j.report = Some(report),
                Err(e) => j.error = Some(e.to_string()),
            }
        });
        self.audit(&id).await;
        let mut jobs = sync::lock(&self.inner.jobs);
        if jobs.running.get(&cluster.name) == Some(&id) {
            jobs.running.remove(&cluster.name);
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut AdminJobView)) {
        if let Some(j) = sync::lock(&self.inner.jobs).by_id.get_mut(id) {
            f(j);
        }
    }

    fn push_progress(&self, id: &str, p: &Progress) {
        let value = serde_json::to_value(p).unwrap_or(Value::Null);
        self.update(id, |j| match j.progress.as_mut() {
            Some(v) if v.len() < MAX_PROGRESS => v.push(value),
            _ => j.progress_dropped += 1,
        });
    }

    /// Writes the job's audit row (insert at start, update at the end).
    async fn audit(&self, id: &str) {
        let Some(store) = self.inner.store.clone() else {
            return;
        };
        let Some(record) = sync::lock(&self.inner.jobs)
            .by_id
            .get(id)
            .map(|j| AuditRecord {
                seq: 0,
                job_id: j.id.clone(),
                cluster: j.cluster.clone(),
                actor: j.actor.clone(),
                op: j.op.clone(),
                args: j.args.clone(),
                started_ms: j.started_ms,
                finished_ms: j.finished_ms,
                result: j.state.clone(),
                error: j.error.clone(),
                before: j.before.clone(),
                after: j.after.clone(),
            })
        else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || store.save_audit(&record)).await;
        let error = match written {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.inner.audit_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%id, %error, "Admin audit record not written (counted in etcdmon_admin_audit_write_failures_total).");
    }

    /// Job `id`, from memory or, once forgotten or after a restart, from the audit trail.
    pub fn get(&self, id: &str) -> Option<AdminJobView> {
        if let Some(j) = sync::lock(&self.inner.jobs).by_id.get(id) {
            return Some(j.clone());
        }
        let a = self.inner.store.as_ref()?.audit_by_job(id).ok()??;
        Some(AdminJobView {
            id: a.job_id,
            cluster: a.cluster,
            op: a.op,
            actor: a.actor,
            args: a.args,
            state: a.result,
            started_ms: a.started_ms,
            finished_ms: a.finished_ms,
            progress: None,
            progress_dropped: 0,
            report: None,
            error: a.error,
            before: a.before,
            after: a.after,
        })
    }

    /// Counts one automatic-defrag check of `cluster` with `outcome` (one of
    /// [`AUTO_OUTCOMES`]; clusters are the configured ones, so the label set is bounded).
    pub fn count_auto(&self, cluster: &str, outcome: &'static str) {
        *sync::lock(&self.inner.auto)
            .entry((cluster.to_string(), outcome))
            .or_insert(0) += 1;
    }

    /// `etcdmon_admin_*` and `etcdmon_auto_defrag_checks_total`.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        let counts = sync::lock(&self.inner.counts).clone();
        for op in OPS {
            for result in RESULTS {
                out.counter(
                    "etcdmon_admin_operations_total",
                    "Admin operations (REST and automatic defrag) that finished, by operation and result.",
                    &[("op", op), ("result", result)],
                    counts.get(&(op, result)).copied().unwrap_or(0) as f64,
                );
            }
        }
        let running = sync::lock(&self.inner.jobs).running.len();
        out.gauge(
            "etcdmon_admin_operations_running",
            "Admin operations running now (at most one per cluster).",
            &[],
            running as f64,
        );
        out.counter(
            "etcdmon_admin_operations_refused_busy_total",
            "Admin operations refused (409) because another one ran on the same cluster.",
            &[],
            self.inner.busy_refusals.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "etcdmon_admin_audit_write_failures_total",
            "Admin audit records that could not be written to the store.",
            &[],
            self.inner.audit_failures.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "etcdmon_admin_snapshots_pruned_total",
            "Snapshots deleted from <data-dir>/snapshots by the count or size bound.",
            &[],
            self.inner.snapshots.pruned() as f64,
        );
        for ((cluster, outcome), n) in sync::lock(&self.inner.auto).iter() {
            out.counter(
                "etcdmon_auto_defrag_checks_total",
                "Automatic-defrag checks, by cluster and outcome (started, or why not).",
                &[("cluster", cluster), ("outcome", outcome)],
                *n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            endpoints: vec!["http://127.0.0.1:1".into()],
            tls: None,
            auth: None,
            metrics_urls: vec![],
            dial_timeout: std::time::Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn one_operation_per_cluster_and_every_outcome_audited() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(Store::open(dir.path())?);
        let jobs = AdminJobs::new(
            Some(store.clone()),
            SnapshotDir::new(dir.path(), 2, 1 << 20),
        );
        let id = jobs.start(config("a"), AdminOp::AlarmDisarm, "ops")?;
        let busy = jobs
            .start(config("a"), AdminOp::AlarmDisarm, "other")
            .unwrap_err();
        assert!(busy.to_string().contains(&id), "{busy}");
        assert!(busy.to_string().contains("alarm_disarm"), "{busy}");
        // Another cluster is not blocked.
        let other = jobs.start(config("b"), AdminOp::Snapshot, "ops")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while (jobs.running("a").is_some() || jobs.running("b").is_some())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Nothing listens on port 1: both failed, and say why.
        let view = jobs.get(&id).expect("job");
        assert_eq!(view.state, "failure", "{view:?}");
        assert!(view.error.is_some());
        let audit = store.audit(None, None, 10)?;
        assert_eq!(audit.len(), 2);
        assert!(
            audit
                .iter()
                .any(|a| a.job_id == other && a.op == "snapshot")
        );
        assert!(
            audit
                .iter()
                .all(|a| a.result == "failure" && a.before.is_some())
        );
        let mut page = crate::model::exposition::Exposition::new();
        jobs.render(&mut page);
        let text = page.encode();
        assert!(
            text.contains(
                r#"etcdmon_admin_operations_total{op="alarm_disarm",result="failure"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("etcdmon_admin_operations_refused_busy_total 1"),
            "{text}"
        );
        Ok(())
    }
}
