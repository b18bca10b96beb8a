//! One run: find the target members, check the prefix is empty, open `conns` gRPC connections
//! spread over shards (threads with one single-threaded runtime each), start `clients` request
//! loops that share them, pace them when a rate is set, record every request into the loop's
//! own [`Recorder`], then count and delete the prefix.
//!
//! Requests are numbered from one shared counter, so the loops split the work exactly and a
//! slow or failing member only slows the loops bound to it. Every request has a timeout, so a
//! stopped member shows up as errors by kind, never as a hang.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_client::Client;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::model::sync;
use crate::{
    model::config::ClusterConfig, model::time::now_ms, ops::bench::report::Recorder,
    ops::bench::report::Report, ops::bench::report::ReportHeader, ops::bench::safety,
    ops::bench::spec::BenchSpec, ops::bench::spec::Target, ops::bench::workload::Workload,
    sources::etcd::client::connect, sources::etcd::client::error_chain,
};

/// Why a run could not start (request failures are never errors: they are in the report).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    /// No endpoint answered, or none is the leader.
    #[error("cluster {cluster}: {message}")]
    Target {
        /// Cluster.
        cluster: String,
        /// What was tried.
        message: String,
    },
    /// The run's prefix already holds keys.
    #[error("prefix {prefix} already holds {count} keys; refusing to run")]
    PrefixNotEmpty {
        /// Prefix.
        prefix: String,
        /// Keys found.
        count: u64,
    },
    /// A safety check on the prefix failed.
    #[error("cannot check prefix {prefix}: {message}")]
    Prefix {
        /// Prefix.
        prefix: String,
        /// Cause.
        message: String,
    },
}

/// Live progress of a run, shared with whoever shows it; also the run's stop switch.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
    total_ops: u64,
    duration: Option<Duration>,
    started: Mutex<Option<Instant>>,
    cancel: watch::Sender<bool>,
}

/// A snapshot of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct ProgressSnapshot {
    /// Requests finished (succeeded or failed).
    pub done: u64,
    /// Requests failed.
    pub failed: u64,
    /// Most requests the run issues.
    pub total_ops: u64,
    /// Seconds since the first request.
    pub elapsed_seconds: f64,
    /// Share of the run done, 0..=1 (by time for timed runs).
    pub fraction: f64,
}

impl Progress {
    /// Progress of a run of `spec`.
    pub fn new(spec: &BenchSpec) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            total_ops: spec.ops,
            duration: spec.duration(),
            started: Mutex::new(None),
            cancel: watch::channel(false).0,
        })
    }

    /// Stops the run: no new request starts; the prefix is still cleaned up.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn started_at(&self) -> Option<Instant> {
        *sync::lock(&self.started)
    }

    /// The numbers now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self.started_at().map_or(Duration::ZERO, |s| s.elapsed());
        let by_ops = done as f64 / self.total_ops.max(1) as f64;
        let fraction = match self.duration {
            Some(d) => (elapsed.as_secs_f64() / d.as_secs_f64().max(1e-9)).max(by_ops),
            None => by_ops,
        };
        ProgressSnapshot {
            done,
            failed: self.failed.load(Ordering::Relaxed),
            total_ops: self.total_ops,
            elapsed_seconds: elapsed.as_secs_f64(),
            fraction: fraction.clamp(0.0, 1.0),
        }
    }
}

/// What the loops share.
struct Shared {
    workload: Workload,
    next: AtomicU64,
    limit: u64,
    /// Set by the first shard past the start line (after every shard has connected).
    start: OnceLock<Instant>,
    duration: Option<Duration>,
    rate: Option<f64>,
    timeout: Duration,
    progress: Arc<Progress>,
}

/// What one shard owns: connections `j` with `j % shards == shard`, and the clients bound to
/// them (client `c` uses connection `c % conns`).
struct ShardPlan {
    shard: usize,
    shards: usize,
    conns: usize,
    clients: usize,
    urls: Vec<String>,
    cluster: ClusterConfig,
}

/// Most shards a run uses: two per core.
fn max_shards() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

async fn shard_main(
    plan: ShardPlan,
    shared: Arc<Shared>,
    ready: Arc<tokio::sync::Barrier>,
) -> Recorder {
    let timeout = shared.timeout;
    let mut conns: Vec<(usize, Result<Client, String>)> = Vec::new();
    for j in (plan.shard..plan.conns).step_by(plan.shards) {
        let url = &plan.urls[j % plan.urls.len()];
        let c = match tokio::time::timeout(timeout, connect(&plan.cluster, url)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("connect {url}: {e}")),
            Err(_) => Err(format!("connect {url}: no answer within {timeout:?}")),
        };
        conns.push((j, c));
    }
    ready.wait().await;
    let start = *shared.start.get_or_init(Instant::now);
    *sync::lock(&shared.progress.started) = Some(start);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..plan.clients {
        let j = c % plan.conns;
        if j % plan.shards != plan.shard {
            continue;
        }
        let conn = conns
            .iter()
            .find(|(k, _)| *k == j)
            .map_or_else(|| Err("no connection".to_string()), |(_, c)| c.clone());
        tasks.spawn(client_loop(shared.clone(), conn));
    }
    let mut total = Recorder::new();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(rec) => total.merge(&rec),
            Err(e) => total.error(0, &format!("client task failed: {e}")),
        }
    }
    total
}

/// Pause of a loop after its member could not be reached.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

/// Whether `err` means the member could not be reached at all (as opposed to a request it
/// answered with an error).
fn unreachable(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// The kind of a failed request, as the error distribution lists it.
pub fn error_kind(err: &etcd_client::Error) -> String {
    let text = match err {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => error_chain(other),
    };
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 160 {
        let cut: String = line.chars().take(160).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// Connects to each endpoint and asks its status; returns `(url, client, is_leader)` of those
/// that answered and the errors of those that did not.
async fn probe_endpoints(
    cluster: &ClusterConfig,
    timeout: Duration,
) -> (Vec<(String, Client, bool)>, Vec<String>) {
    let results = futures::future::join_all(cluster.endpoints.iter().map(|url| async move {
        let attempt = async {
            let mut client = connect(cluster, url).await?;
            let status = client.status().await.map_err(|e| error_kind(&e))?;
            let is_leader = status
                .header()
                .is_some_and(|h| h.member_id() == status.leader());
            Ok::<_, String>((client, is_leader))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((client, leader))) => Ok((url.clone(), client, leader)),
            Ok(Err(e)) => Err(format!("{url}: {e}")),
            Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        }
    }))
    .await;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => failed.push(e),
        }
    }
    (ok, failed)
}

/// Runs `spec` against `cluster` under the prefix of `run_id`, reporting into `progress`.
pub async fn run(
    cluster: &ClusterConfig,
    spec: &BenchSpec,
    run_id: &str,
    progress: Arc<Progress>,
) -> Result<Report, BenchError> {
    let timeout = if spec.timeout_ms > 0 {
        Duration::from_millis(spec.timeout_ms)
    } else {
        cluster.dial_timeout
    };
    let prefix = safety::prefix(run_id);
    let targets = choose_targets(cluster, spec, timeout).await?;
    let mut control_kv = targets.control.kv_client();
    check_prefix_empty(&mut control_kv, &prefix, &targets.control_url, timeout).await?;

    let started_ms = now_ms();
    let shared = Arc::new(Shared {
        workload: Workload::new(
            spec,
            &prefix,
            crate::ops::bench::workload::splitmix64(started_ms),
        ),
        next: AtomicU64::new(0),
        limit: spec.ops,
        start: OnceLock::new(),
        duration: spec.duration(),
        rate: spec.rate,
        timeout,
        progress: progress.clone(),
    });
    let receivers = spawn_shards(cluster, spec, &targets.urls, &shared);
    let total = collect_shards(receivers).await;
    let start = *shared.start.get_or_init(Instant::now);
    let elapsed = start.elapsed();

    let header = ReportHeader {
        run_id: run_id.to_string(),
        cluster: cluster.name.clone(),
        prefix: prefix.clone(),
        spec: spec.clone(),
        endpoints: targets.urls,
        started_ms,
        interrupted: progress.is_cancelled(),
    };
    let mut report = total.report(header, elapsed, &spec.slo);
    report.keys_before_cleanup =
        match tokio::time::timeout(timeout, safety::count(&mut control_kv, &prefix)).await {
            Ok(Ok(n)) => Some(n),
            _ => None,
        };
    report.prefix_deleted = !spec.keep_keys && cleanup(&mut control_kv, &prefix, timeout).await;
    Ok(report)
}

/// Where a run sends its load and its safety operations.
struct Targets {
    /// The endpoints the load goes to.
    urls: Vec<String>,
    /// The member safety operations (count, cleanup) go to: the leader when there is one.
    control_url: String,
    control: Client,
}

/// Probes the endpoints and picks the load's targets and the control member.
async fn choose_targets(
    cluster: &ClusterConfig,
    spec: &BenchSpec,
    timeout: Duration,
) -> Result<Targets, BenchError> {
    let target_err = |message: String| BenchError::Target {
        cluster: cluster.name.clone(),
        message,
    };
    let (answered, failed) = probe_endpoints(cluster, timeout).await;
    let urls: Vec<String> = match spec.target {
        Target::Leader => match answered.iter().find(|(_, _, leader)| *leader) {
            Some((url, _, _)) => vec![url.clone()],
            None => {
                return Err(target_err(format!(
                    "no endpoint is the leader (answered: {:?}; failed: {failed:?})",
                    answered.iter().map(|a| &a.0).collect::<Vec<_>>()
                )));
            }
        },
        Target::All => cluster.endpoints.clone(),
    };
    // Safety operations go to a member that answered (the leader when there is one).
    let Some((control_url, control, _)) = answered
        .iter()
        .find(|(_, _, leader)| *leader)
        .or_else(|| answered.first())
        .cloned()
    else {
        return Err(target_err(format!("no endpoint answered: {failed:?}")));
    };
    Ok(Targets {
        urls,
        control_url,
        control,
    })
}

/// Refuses to start when the run's prefix already holds keys (or cannot be counted).
async fn check_prefix_empty(
    control_kv: &mut etcd_client::KvClient,
    prefix: &str,
    control_url: &str,
    timeout: Duration,
) -> Result<(), BenchError> {
    let prefix_err = |message: String| BenchError::Prefix {
        prefix: prefix.to_string(),
        message,
    };
    match tokio::time::timeout(timeout, safety::count(control_kv, prefix)).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(count)) => Err(BenchError::PrefixNotEmpty {
            prefix: prefix.to_string(),
            count,
        }),
        Ok(Err(e)) => Err(prefix_err(format!("{control_url}: {}", error_kind(&e)))),
        Err(_) => Err(prefix_err(format!(
            "{control_url}: no answer within {timeout:?}"
        ))),
    }
}

/// Starts the shards: each a thread with its own single-threaded runtime, owning a share of the
/// connections and the clients bound to them, so a request's wakeups never cross threads (one
/// process then scales like several processes splitting the load). One receiver per shard gets
/// its recorder.
fn spawn_shards(
    cluster: &ClusterConfig,
    spec: &BenchSpec,
    urls: &[String],
    shared: &Arc<Shared>,
) -> Vec<tokio::sync::oneshot::Receiver<Recorder>> {
    let shards = spec.conns.min(max_shards()).max(1);
    let ready = Arc::new(tokio::sync::Barrier::new(shards));
    (0..shards)
        .map(|shard| {
            let plan = ShardPlan {
                shard,
                shards,
                conns: spec.conns,
                clients: spec.clients,
                urls: urls.to_vec(),
                cluster: cluster.clone(),
            };
            spawn_shard(plan, shared.clone(), ready.clone())
        })
        .collect()
}

/// Starts one shard's thread; when the thread cannot start, the receiver gets a recorder with
/// that error and a task takes the shard's place at the start line.
fn spawn_shard(
    plan: ShardPlan,
    shared: Arc<Shared>,
    ready: Arc<tokio::sync::Barrier>,
) -> tokio::sync::oneshot::Receiver<Recorder> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ready_in_thread = ready.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("bench-shard-{}", plan.shard))
        .spawn(move || {
            let rec = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(shard_main(plan, shared, ready_in_thread)),
                Err(e) => {
                    futures::executor::block_on(ready_in_thread.wait());
                    let mut rec = Recorder::new();
                    rec.error(0, &format!("benchmark shard runtime: {e}"));
                    rec
                }
            };
            let _ = tx.send(rec);
        });
    match spawned {
        Ok(_) => rx,
        Err(e) => {
            // Take the shard's place at the start line so the others do not wait forever.
            tokio::spawn(async move {
                ready.wait().await;
            });
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut rec = Recorder::new();
            rec.error(0, &format!("benchmark shard thread: {e}"));
            let _ = tx.send(rec);
            rx
        }
    }
}

/// Waits for every shard and merges their recorders.
async fn collect_shards(receivers: Vec<tokio::sync::oneshot::Receiver<Recorder>>) -> Recorder {
    let mut total = Recorder::new();
    for rx in receivers {
        match rx.await {
            Ok(rec) => total.merge(&rec),
            Err(_) => total.error(0, "benchmark shard thread failed"),
        }
    }
    total
}

/// Deletes the prefix, retrying a few times; whether it is gone.
async fn cleanup(kv: &mut etcd_client::KvClient, prefix: &str, timeout: Duration) -> bool {
    for attempt in 1..=5u32 {
        match tokio::time::timeout(timeout, safety::delete(kv, prefix)).await {
            Ok(Ok(deleted)) => {
                tracing::info!(%prefix, deleted, "Benchmark prefix deleted.");
                return true;
            }
            Ok(Err(e)) => {
                tracing::warn!(%prefix, attempt, error = %error_kind(&e), "Benchmark prefix delete failed.");
            }
            Err(_) => {
                tracing::warn!(%prefix, attempt, "Benchmark prefix delete timed out.");
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    false
}

async fn client_loop(shared: Arc<Shared>, conn: Result<Client, String>) -> Recorder {
    let mut rec = Recorder::new();
    let mut cancel = shared.progress.cancel.subscribe();
    let mut kv = conn.as_ref().ok().map(Client::kv_client);
    let start = *shared.start.get_or_init(Instant::now);
    let deadline = shared.duration.map(|d| start + d);
    let second = |at: Instant| at.saturating_duration_since(start).as_secs() as usize;
    loop {
        if *cancel.borrow() {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.limit {
            break;
        }
        if let Some(rate) = shared.rate {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            if at > Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    _ = cancel.wait_for(|c| *c) => break,
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(kv) = kv.as_mut() else {
            let message = conn.as_ref().err().cloned().unwrap_or_default();
            rec.error(second(Instant::now()), &message);
            shared.progress.failed.fetch_add(1, Ordering::Relaxed);
            shared.progress.done.fetch_add(1, Ordering::Relaxed);
            // A member that cannot be reached is not retried in a tight loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let t0 = Instant::now();
        let result = tokio::time::timeout(shared.timeout, shared.workload.execute(kv, i)).await;
        let t1 = Instant::now();
        match result {
            Ok(Ok(kind)) => rec.success(second(t1), t1 - t0, kind.writes()),
            Ok(Err(e)) => {
                rec.error(second(t1), &error_kind(&e));
                shared.progress.failed.fetch_add(1, Ordering::Relaxed);
                if unreachable(&e) {
                    // A member that refuses connections fails in microseconds; a loop bound to
                    // it backs off instead of burning the run's operations in a tight loop.
                    tokio::time::sleep(UNREACHABLE_BACKOFF.min(shared.timeout)).await;
                }
            }
            Err(_) => {
                rec.error(
                    second(t1),
                    &format!("timeout: no answer within {:?}", shared.timeout),
                );
                shared.progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.progress.done.fetch_add(1, Ordering::Relaxed);
    }
    rec
}
