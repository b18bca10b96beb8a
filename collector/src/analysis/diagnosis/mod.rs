//! Diagnosis: say *why* a member is slow — disk, noisy neighbour, CPU starvation or peer
//! network — from the server view (etcd's WAL fsync histogram) and the kernel view its agent
//! ships (fdatasync, block service time and issuers, run-queue latency, cgroup throttling,
//! peer RTT).
//!
//! `sample` turns the cluster state and the agent status into one cumulative
//! [`sample::MemberSample`] per member; a task ([`run`]) takes one every `--diagnosis-interval`
//! and keeps the last `--diagnosis-window` of them; `engine` compares the window's first and
//! last samples and gives a [`engine::Verdict`]; [`Diagnoses`] holds the latest per member for
//! `GET /api/v1/diagnosis` (`api`), `etcdmon_diagnosis{cluster,member,cause}` (`metrics`) and
//! [`verdict_text`] (alert annotations).

pub mod engine;
pub mod leader_changes;
pub mod metrics;
pub mod sample;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::sync;
use crate::{model::cluster::Clusters, sources::ingest::Pipeline, store::Store};

pub use engine::{CAUSES, Verdict, diagnose};

/// `--diagnosis-*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DiagnosisArgs {
    /// Window each verdict looks back over.
    #[arg(long, env = "ETCD_MONITOR_DIAGNOSIS_WINDOW", default_value = crate::model::config::duration_default!(DiagnosisConfig::DEFAULT.window), value_parser = crate::model::time::parse_duration)]
    pub diagnosis_window: Duration,
    /// How often verdicts are recomputed.
    #[arg(long, env = "ETCD_MONITOR_DIAGNOSIS_INTERVAL", default_value = crate::model::config::duration_default!(DiagnosisConfig::DEFAULT.interval), value_parser = crate::model::time::parse_duration)]
    pub diagnosis_interval: Duration,
    /// A WAL sync is slow when etcd's or the kernel's p99 over the window exceeds this (ms).
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_SLOW_FSYNC_MS",
        default_value_t = DiagnosisConfig::DEFAULT.slow_fsync_ms
    )]
    pub diagnosis_slow_fsync_ms: f64,
    /// The quantile of WAL sync latency compared with --diagnosis-slow-fsync-ms.
    #[arg(long, env = "ETCD_MONITOR_DIAGNOSIS_QUANTILE", default_value_t = DiagnosisConfig::DEFAULT.quantile)]
    pub diagnosis_quantile: f64,
    /// The device is slow when its mean request service time exceeds this (ms).
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_SLOW_DEVICE_MS",
        default_value_t = DiagnosisConfig::DEFAULT.slow_device_ms
    )]
    pub diagnosis_slow_device_ms: f64,
    /// The member waits for CPU when its threads' run-queue p99 exceeds this (ms).
    #[arg(long, env = "ETCD_MONITOR_DIAGNOSIS_RUNQ_MS", default_value_t = DiagnosisConfig::DEFAULT.runq_ms)]
    pub diagnosis_runq_ms: f64,
    /// The member's cgroup is throttled when more than this fraction of its CFS periods were.
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_THROTTLE_RATIO",
        default_value_t = DiagnosisConfig::DEFAULT.throttle_ratio
    )]
    pub diagnosis_throttle_ratio: f64,
    /// A slow device is a noisy neighbour's doing when others issued more than this fraction of
    /// its I/O (bytes or bios, whichever share is larger).
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_NEIGHBOR_SHARE",
        default_value_t = DiagnosisConfig::DEFAULT.neighbor_share
    )]
    pub diagnosis_neighbor_share: f64,
    /// A peer is slow when its kernel smoothed RTT exceeds this (ms).
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_PEER_RTT_MS",
        default_value_t = DiagnosisConfig::DEFAULT.peer_rtt_ms
    )]
    pub diagnosis_peer_rtt_ms: f64,
    /// … or when it needed more than this many retransmits in the window.
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_PEER_RETRANSMITS",
        default_value_t = DiagnosisConfig::DEFAULT.peer_retransmits
    )]
    pub diagnosis_peer_retransmits: u64,
    /// Fewer WAL syncs than this in a window say nothing about their latency.
    #[arg(long, env = "ETCD_MONITOR_DIAGNOSIS_MIN_SYNCS", default_value_t = DiagnosisConfig::DEFAULT.min_syncs)]
    pub diagnosis_min_syncs: u64,
    /// A member's I/O cgroup is at its limit when what it got serviced on the data dir's device
    /// reaches this fraction of a blkio throttle / io.max limit.
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_IO_LIMIT_RATIO",
        default_value_t = DiagnosisConfig::DEFAULT.io_limit_ratio
    )]
    pub diagnosis_io_limit_ratio: f64,
    /// Pressure stall (PSI `some`) above this fraction of the window, in the member's own
    /// cgroup, counts as CPU starvation (cpu.pressure) or I/O throttling (io.pressure, with a
    /// limit set).
    #[arg(
        long,
        env = "ETCD_MONITOR_DIAGNOSIS_PRESSURE_SHARE",
        default_value_t = DiagnosisConfig::DEFAULT.pressure_share
    )]
    pub diagnosis_pressure_share: f64,
}

/// Validated diagnosis settings (see docs/design-notes.md for how the defaults were chosen).
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosisConfig {
    /// Look-back window.
    pub window: Duration,
    /// Recompute interval.
    pub interval: Duration,
    /// Slow WAL sync threshold (at `quantile`), ms.
    pub slow_fsync_ms: f64,
    /// Quantile of WAL sync latency that is compared with `slow_fsync_ms`.
    pub quantile: f64,
    /// Slow device threshold (mean service time), ms.
    pub slow_device_ms: f64,
    /// Run-queue p99 threshold, ms.
    pub runq_ms: f64,
    /// Throttled share of CFS periods.
    pub throttle_ratio: f64,
    /// Others' share of the device's bytes.
    pub neighbor_share: f64,
    /// Peer RTT threshold, ms.
    pub peer_rtt_ms: f64,
    /// Peer retransmits per window.
    pub peer_retransmits: u64,
    /// Minimum WAL syncs per window to judge their latency.
    pub min_syncs: u64,
    /// Serviced rate over an I/O cgroup limit at which the cgroup is at its limit.
    pub io_limit_ratio: f64,
    /// PSI `some` share of the window that counts as starvation or throttling.
    pub pressure_share: f64,
}

impl DiagnosisConfig {
    /// The defaults, written once: the `--diagnosis-*` flags show and use these (see
    /// ARCHITECTURE.md for how they were chosen).
    pub const DEFAULT: Self = Self {
        window: Duration::from_secs(30),
        interval: Duration::from_secs(5),
        slow_fsync_ms: 10.0,
        quantile: 0.99,
        slow_device_ms: 5.0,
        runq_ms: 10.0,
        throttle_ratio: 0.1,
        neighbor_share: 0.3,
        peer_rtt_ms: 50.0,
        peer_retransmits: 20,
        min_syncs: 5,
        io_limit_ratio: 0.8,
        pressure_share: 0.2,
    };
}

impl Default for DiagnosisConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl DiagnosisArgs {
    /// Checks the flags; the error names the flag.
    pub fn validate(&self) -> Result<DiagnosisConfig, (&'static str, String)> {
        let positive = |flag: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err((flag, format!("{v} must be a positive number")))
            }
        };
        let fraction = |flag: &'static str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(v)
            } else {
                Err((flag, format!("{v} must be in [0, 1)")))
            }
        };
        if self.diagnosis_interval > self.diagnosis_window {
            return Err((
                "--diagnosis-interval",
                format!(
                    "{:?} is longer than --diagnosis-window {:?}",
                    self.diagnosis_interval, self.diagnosis_window
                ),
            ));
        }
        Ok(DiagnosisConfig {
            window: self.diagnosis_window,
            interval: self.diagnosis_interval,
            slow_fsync_ms: positive("--diagnosis-slow-fsync-ms", self.diagnosis_slow_fsync_ms)?,
            quantile: if self.diagnosis_quantile > 0.0 && self.diagnosis_quantile <= 1.0 {
                self.diagnosis_quantile
            } else {
                return Err((
                    "--diagnosis-quantile",
                    format!("{} must be in (0, 1]", self.diagnosis_quantile),
                ));
            },
            slow_device_ms: positive("--diagnosis-slow-device-ms", self.diagnosis_slow_device_ms)?,
            runq_ms: positive("--diagnosis-runq-ms", self.diagnosis_runq_ms)?,
            throttle_ratio: fraction("--diagnosis-throttle-ratio", self.diagnosis_throttle_ratio)?,
            neighbor_share: fraction("--diagnosis-neighbor-share", self.diagnosis_neighbor_share)?,
            peer_rtt_ms: positive("--diagnosis-peer-rtt-ms", self.diagnosis_peer_rtt_ms)?,
            peer_retransmits: self.diagnosis_peer_retransmits,
            min_syncs: self.diagnosis_min_syncs.max(1),
            io_limit_ratio: positive("--diagnosis-io-limit-ratio", self.diagnosis_io_limit_ratio)?,
            pressure_share: fraction("--diagnosis-pressure-share", self.diagnosis_pressure_share)?,
        })
    }
}

/// One member's latest verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberDiagnosis {
    /// Cluster name.
    pub cluster: String,
    /// Member name.
    pub member: String,
    /// Member id (hex).
    pub member_id: String,
    /// When the verdict was computed (Unix ms).
    pub evaluated_at_ms: u64,
    /// Since when the same cause has been given without interruption (Unix ms).
    pub cause_since_ms: u64,
    /// Seconds between the window's first and last sample.
    pub window_seconds: f64,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The latest verdict per (cluster, member), shared by the task, REST and `/metrics`, and the
/// leader changes explained.
#[derive(Debug, Default)]
pub struct Diagnoses {
    latest: RwLock<BTreeMap<(String, String), MemberDiagnosis>>,
    leader_changes: RwLock<leader_changes::Explanations>,
}

impl Diagnoses {
    /// The explanation of one leader change of `cluster`, once the diagnosis has seen it.
    pub fn leader_change(
        &self,
        cluster: &str,
        change: &crate::model::cluster::LeaderChange,
    ) -> Option<leader_changes::LeaderChangeExplanation> {
        sync::read(&self.leader_changes).get(cluster, change)
    }

    /// The newest leader change of `cluster` explained.
    pub fn latest_leader_change(
        &self,
        cluster: &str,
    ) -> Option<leader_changes::LeaderChangeExplanation> {
        sync::read(&self.leader_changes).latest(cluster)
    }

    /// Every verdict, ordered by cluster and member.
    pub fn all(&self) -> Vec<MemberDiagnosis> {
        sync::read(&self.latest).values().cloned().collect()
    }

    /// One member's verdict (by name or hex id).
    pub fn get(&self, cluster: &str, member: &str) -> Option<MemberDiagnosis> {
        self.all()
            .into_iter()
            .find(|d| d.cluster == cluster && (d.member == member || d.member_id == member))
    }

    /// Stores a verdict, keeping `cause_since_ms` while the cause stays the same.
    pub fn put(&self, mut d: MemberDiagnosis) {
        let mut g = sync::write(&self.latest);
        let key = (d.cluster.clone(), d.member.clone());
        if let Some(old) = g.get(&key)
            && old.verdict.cause == d.verdict.cause
            && old.verdict.reason == d.verdict.reason
        {
            d.cause_since_ms = old.cause_since_ms;
        }
        g.insert(key, d);
    }

    /// Forgets members that are gone.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut g = sync::write(&self.latest);
        g.retain(|(c, m), _| keep(c, m));
    }
}

/// A member's verdict as one line for an alert annotation, e.g. `cpu_starved (throttled): CPU
/// starved: cgroup /x throttled in 80 of 100 periods …`. `None` before the first verdict.
pub fn verdict_text(diagnoses: &Diagnoses, cluster: &str, member: &str) -> Option<String> {
    let d = diagnoses.get(cluster, member)?;
    let v = &d.verdict;
    let head = match (&v.reason, &v.neighbor, &v.peer, &v.cgroup) {
        (Some(r), ..) => format!("{} ({r})", v.cause),
        (_, Some(n), ..) => format!("{} (pid {} {})", v.cause, n.pid, n.comm),
        (_, _, Some(p), _) => match &v.peer_cause {
            Some(c) => format!("{} (peer {p}: {c})", v.cause),
            None => format!("{} (peer {p})", v.cause),
        },
        (_, _, _, Some(c)) => format!("{} (cgroup {c})", v.cause),
        _ => v.cause.clone(),
    };
    Some(format!("{head}: {}", v.summary))
}

/// The text a leader-change alert of `rule` carries (`annotations.diagnosis`): the newest
/// change of `cluster` explained. `None` for other rules or before any change was explained.
pub fn leader_change_text(diagnoses: &Diagnoses, rule: &str, cluster: &str) -> Option<String> {
    if !leader_changes::LEADER_CHANGE_RULES.contains(&rule) {
        return None;
    }
    Some(diagnoses.latest_leader_change(cluster)?.summary)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sample rings per (cluster, member id), each the last window of samples.
pub type History = HashMap<(String, String), VecDeque<sample::MemberSample>>;

/// Takes one sample of every member of every cluster and recomputes the verdicts: per member
/// (phase 1), then across each cluster's members (phase 2), then the leader changes. Returns
/// the leader-change explanations that are new or refreshed, by cluster, for the store.
pub fn tick(
    clusters: &Clusters,
    pipeline: &Pipeline,
    diagnoses: &Diagnoses,
    cfg: &DiagnosisConfig,
    history: &mut History,
) -> Vec<(String, leader_changes::LeaderChangeExplanation)> {
    let now = now_ms();
    let mut seen = Vec::new();
    let mut explained = Vec::new();
    for cluster in clusters.iter() {
        let state = cluster.snapshot();
        let mut judged = Vec::new();
        for member in state.members.iter().filter(|m| !m.name.is_empty()) {
            seen.push((cluster.name().to_string(), member.name.clone()));
            let s = sample::member_sample(member, &pipeline.registry, now);
            let key = (cluster.name().to_string(), member.id.clone());
            let ring = push_sample(history.entry(key).or_default(), s, now, cfg);
            let (Some(first), Some(last)) = (ring.front(), ring.back()) else {
                continue;
            };
            judged.push((member.id.clone(), judge(first, last, ring.len(), cfg)));
        }
        let mut phase2: Vec<engine::Judged> = judged.iter().map(|(_, (j, _))| j.clone()).collect();
        engine::resolve(&mut phase2, cfg);
        let mut verdicts = Vec::new();
        for ((id, (_, window_seconds)), j) in judged.into_iter().zip(phase2) {
            let d = MemberDiagnosis {
                cluster: cluster.name().to_string(),
                member: j.name,
                member_id: id,
                evaluated_at_ms: now,
                cause_since_ms: now,
                window_seconds,
                verdict: j.verdict,
            };
            log_change(diagnoses, &d);
            diagnoses.put(d.clone());
            verdicts.push(d);
        }
        let changes: Vec<_> = state.leader_history.iter().cloned().collect();
        let fresh = sync::write(&diagnoses.leader_changes).observe(
            cluster.name(),
            &changes,
            &verdicts,
            now,
        );
        explained.extend(fresh.into_iter().map(|e| (cluster.name().to_string(), e)));
    }
    diagnoses.retain(|c, m| seen.iter().any(|(sc, sm)| sc == c && sm == m));
    // Explanations are kept while the cluster is configured, even when no member answers.
    sync::write(&diagnoses.leader_changes).retain(|c| clusters.iter().any(|h| h.name() == c));
    history.retain(|(c, _), ring| {
        seen.iter().any(|(sc, _)| sc == c) && ring.back().is_some_and(|b| b.at_ms == now)
    });
    explained
}

/// Leader-change explanations kept in the history store, so that after a collector restart
/// `GET /api/v1/cluster/leader` still says why each change in its history happened.
struct LeaderChangeStore {
    store: Arc<Store>,
    loaded: HashSet<String>,
}

impl LeaderChangeStore {
    /// Loads, once per cluster, the explanations a previous run saved.
    fn load_new_clusters(&mut self, clusters: &Clusters, diagnoses: &Diagnoses) {
        for cluster in clusters.iter() {
            let name = cluster.name();
            if self.loaded.contains(name) {
                continue;
            }
            let rows = match self
                .store
                .leader_change_explanations(name, crate::model::cluster::LEADER_HISTORY)
            {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(cluster = %name, error = %err, "Cannot read the saved leader-change explanations; will retry.");
                    continue;
                }
            };
            let parsed = rows
                .into_iter()
                .filter_map(|(at_ms, _, body)| match serde_json::from_str(&body) {
                    Ok(e) => Some(e),
                    Err(err) => {
                        tracing::warn!(cluster = %name, at_ms, error = %err, "A saved leader-change explanation does not parse; skipped.");
                        None
                    }
                })
                .collect();
            sync::write(&diagnoses.leader_changes).load(name, parsed);
            self.loaded.insert(name.to_string());
        }
    }

    /// Saves new or refreshed explanations (a failed write is logged and counted by the store).
    fn save(&self, explained: &[(String, leader_changes::LeaderChangeExplanation)]) {
        for (cluster, e) in explained {
            let saved = serde_json::to_string(e)
                .map_err(|err| err.to_string())
                .and_then(|body| {
                    self.store
                        .save_leader_change_explanation(cluster, e.at_ms, &e.new_leader, &body)
                        .map_err(|err| err.to_string())
                });
            if let Err(err) = saved {
                tracing::warn!(cluster = %cluster, at_ms = e.at_ms, error = %err, "Cannot save a leader-change explanation.");
            }
        }
    }
}

/// Appends `s` and drops what fell out of the window.
fn push_sample<'a>(
    ring: &'a mut VecDeque<sample::MemberSample>,
    s: sample::MemberSample,
    now: u64,
    cfg: &DiagnosisConfig,
) -> &'a VecDeque<sample::MemberSample> {
    let window_ms = cfg.window.as_millis() as u64;
    ring.push_back(s);
    while ring
        .front()
        .is_some_and(|f| now.saturating_sub(f.at_ms) > window_ms)
    {
        ring.pop_front();
    }
    ring
}

/// Phase 1 for one member's window, and the window's length in seconds.
fn judge(
    first: &sample::MemberSample,
    last: &sample::MemberSample,
    samples: usize,
    cfg: &DiagnosisConfig,
) -> (engine::Judged, f64) {
    let window_seconds = last.at_ms.saturating_sub(first.at_ms) as f64 / 1e3;
    if samples < 2 {
        let verdict = Verdict {
            cause: "inconclusive".into(),
            missing: vec!["a second sample (the window is filling)".into()],
            summary: "collecting the first window".into(),
            ..Verdict::default()
        };
        let j = engine::Judged {
            name: last.name.clone(),
            is_leader: last.is_leader,
            condition: None,
            verdict,
        };
        return (j, window_seconds);
    }
    let f = engine::findings(first, last, cfg);
    (engine::Judged::new(&f, last, cfg), window_seconds)
}

fn log_change(diagnoses: &Diagnoses, d: &MemberDiagnosis) {
    let changed = diagnoses
        .get(&d.cluster, &d.member)
        .is_none_or(|old| old.verdict.cause != d.verdict.cause);
    if changed {
        tracing::info!(
            cluster = %d.cluster,
            member = %d.member,
            cause = %d.verdict.cause,
            summary = %d.verdict.summary,
            "Diagnosis changed."
        );
    }
}

/// Recomputes the verdicts every `cfg.interval`, for as long as the collector runs.
/// Writes them to `diagnoses`, which REST, /metrics and alert notifications read, and the
/// leader-change explanations also to `store`.
pub async fn run(
    clusters: Clusters,
    pipeline: Pipeline,
    diagnoses: Arc<Diagnoses>,
    cfg: DiagnosisConfig,
    store: Arc<Store>,
) {
    let mut history = HashMap::new();
    let mut saved = LeaderChangeStore {
        store,
        loaded: HashSet::new(),
    };
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        saved.load_new_clusters(&clusters, &diagnoses);
        let explained = tick(&clusters, &pipeline, &diagnoses, &cfg, &mut history);
        saved.save(&explained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(cause: &str) -> Verdict {
        Verdict {
            cause: cause.into(),
            reason: (cause == "cpu_starved").then(|| "throttled".to_string()),
            summary: "s".into(),
            ..Verdict::default()
        }
    }

    fn d(at: u64, cause: &str) -> MemberDiagnosis {
        MemberDiagnosis {
            cluster: "c".into(),
            member: "m0".into(),
            member_id: "abc".into(),
            evaluated_at_ms: at,
            cause_since_ms: at,
            window_seconds: 10.0,
            verdict: verdict(cause),
        }
    }

    #[test]
    fn cause_since_survives_repeats_and_resets_on_change() {
        let store = Diagnoses::default();
        store.put(d(1, "healthy"));
        store.put(d(2, "healthy"));
        assert_eq!(store.get("c", "m0").map(|d| d.cause_since_ms), Some(1));
        store.put(d(3, "cpu_starved"));
        assert_eq!(store.get("c", "abc").map(|d| d.cause_since_ms), Some(3));
        assert_eq!(
            verdict_text(&store, "c", "m0").as_deref(),
            Some("cpu_starved (throttled): s")
        );
        assert!(verdict_text(&store, "c", "other").is_none());
    }

    #[test]
    fn flags_are_validated_by_name() {
        let args = DiagnosisArgs {
            diagnosis_window: Duration::from_secs(10),
            diagnosis_interval: Duration::from_secs(20),
            diagnosis_slow_fsync_ms: 10.0,
            diagnosis_quantile: 0.99,
            diagnosis_slow_device_ms: 5.0,
            diagnosis_runq_ms: 10.0,
            diagnosis_throttle_ratio: 0.1,
            diagnosis_neighbor_share: 0.5,
            diagnosis_peer_rtt_ms: 50.0,
            diagnosis_peer_retransmits: 20,
            diagnosis_min_syncs: 5,
            diagnosis_io_limit_ratio: 0.8,
            diagnosis_pressure_share: 0.2,
        };
        assert_eq!(
            args.validate().map_err(|e| e.0),
            Err("--diagnosis-interval")
        );
        let args = DiagnosisArgs {
            diagnosis_interval: Duration::from_secs(1),
            diagnosis_neighbor_share: 1.5,
            ..args
        };
        assert_eq!(
            args.validate().map_err(|e| e.0),
            Err("--diagnosis-neighbor-share")
        );
        let args = DiagnosisArgs {
            diagnosis_neighbor_share: 0.5,
            ..args
        };
        assert!(args.validate().is_ok());
    }
}
