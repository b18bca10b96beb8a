//! Named signals the rules compare against thresholds: what the health loop (client side and
//! probes), the scraper (etcd's own /metrics) and the agents (kernel side) know about each
//! member and cluster, some of them over a time window (rates, histogram quantiles).
//!
//! [`SignalHistory`] keeps the raw cumulative series (histogram buckets, counters) of every
//! member at each evaluation, so windowed signals are computed like Prometheus'
//! `rate`/`histogram_quantile` over `[window]`: the difference between now and the oldest
//! snapshot inside the window.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    str::FromStr,
    time::Duration,
};

use crate::model::series::{CertificateKind, ServerSeries};
use etcd_monitor_histogram::{CumulativeBuckets, Log2Slots, delta};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    model::cluster::ClusterState, model::cluster::MemberState, sources::ingest::AgentRegistry,
    sources::ingest::join,
};

/// How long full-resolution snapshots are kept; older ones are thinned out.
const DENSE_FOR_MS: u64 = 15 * 60 * 1000;

/// Snapshots kept per member beyond the dense period, over the longest rule window.
const SPARSE_POINTS: u64 = 240;

/// A named signal. Member-scoped signals carry a `member` label (and `peer`, `alarm` or
/// `request` where said); cluster-scoped ones only `cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// 1 when a reachable member claims leadership (client side).
    ClusterHasLeader,
    /// 1 when enough voting members answer to form a quorum.
    ClusterQuorumOk,
    /// Members answering the collector.
    ClusterAvailableMembers,
    /// Members in the member list that do not answer.
    ClusterUnavailableMembers,
    /// 1 when members disagree on the leader within a term or on the cluster id.
    ClusterSplitBrain,
    /// Leader changes the collector saw within the window.
    LeaderChanges,
    /// 1 when the member answered the last health check (per member).
    MemberUp,
    /// 1 per alarm raised on the member (`alarm` label: NOSPACE, CORRUPT).
    MemberAlarm,
    /// The collector's probe latency p99, ms (`request` label: read, write).
    RequestLatencyP99Ms,
    /// `etcd_server_has_leader` of the member.
    MemberHasLeader,
    /// p99 of `etcd_disk_wal_fsync_duration_seconds` over the window, seconds.
    WalFsyncP99Seconds,
    /// p99 of `etcd_disk_backend_commit_duration_seconds` over the window, seconds.
    BackendCommitP99Seconds,
    /// p99 of `etcd_network_peer_round_trip_time_seconds` over the window, seconds.
    PeerRoundTripP99Seconds,
    /// p99 of `grpc_server_handling_seconds` (unary, not Defragment) over the window, seconds,
    /// per `method` (etcd exposes it with `--metrics=extensive`).
    GrpcRequestP99Seconds,
    /// Percentage of gRPC requests failed with a server-side code over the window.
    GrpcFailedPercent,
    /// `etcd_server_proposals_failed_total` per second over the window.
    ProposalsFailedPerSecond,
    /// `etcd_server_proposals_pending`.
    ProposalsPending,
    /// Database size, bytes (Status answer, else /metrics).
    DbSizeBytes,
    /// Database size / `etcd_server_quota_backend_bytes`.
    DbQuotaRatio,
    /// Database size in use / database size.
    DbInUseRatio,
    /// Database size in use, bytes.
    DbInUseBytes,
    /// Database size predicted four hours ahead / quota: a least-squares line through the
    /// database sizes of the window, as Prometheus' `predict_linear`.
    DbPredictedQuotaRatio,
    /// `process_resident_memory_bytes` of the member.
    MemoryRssBytes,
    /// p99 of the WAL `fdatasync` syscalls over the window, kernel-measured, seconds.
    KernelWalFsyncP99Seconds,
    /// etcd's WAL fsync p99 divided by the kernel's fdatasync p99 over the window.
    WalFsyncServerKernelRatio,
    /// TCP segments retransmitted to a peer per second over the window (`peer` label).
    PeerRetransmitsPerSecond,
    /// Events of the member's agent lost over the window (in the kernel, the agent's queue
    /// or in transit to the collector).
    AgentLostEvents,
    /// 1 when the member's agent traces it with eBPF, 0 when it runs client-only.
    AgentEbpf,
    /// Increase of `etcd_server_heartbeat_send_failures_total` over the window.
    HeartbeatSendFailures,
    /// Increase of `etcd_server_slow_apply_total` over the window.
    SlowApplies,
    /// Seconds until a certificate expires (negative once expired); `kind` (server, peer,
    /// client, ca) and `subject` labels, `member` for those seen in a member's handshake.
    CertificateExpirySeconds,
    /// Used share of the filesystem holding the member's data dir, as `df` counts it:
    /// used / (used + available to non-root), from the member's agent.
    DiskUsedRatio,
    /// The member's RSS over its memory limit (its cgroup's, else the node's memory), from
    /// the member's agent.
    MemoryUsedRatio,
}

impl Signal {
    /// Every signal, for documentation and error messages.
    pub const ALL: [Signal; 33] = [
        Signal::ClusterHasLeader,
        Signal::ClusterQuorumOk,
        Signal::ClusterAvailableMembers,
        Signal::ClusterUnavailableMembers,
        Signal::ClusterSplitBrain,
        Signal::LeaderChanges,
        Signal::MemberUp,
        Signal::MemberAlarm,
        Signal::RequestLatencyP99Ms,
        Signal::MemberHasLeader,
        Signal::WalFsyncP99Seconds,
        Signal::BackendCommitP99Seconds,
        Signal::PeerRoundTripP99Seconds,
        Signal::GrpcRequestP99Seconds,
        Signal::GrpcFailedPercent,
        Signal::ProposalsFailedPerSecond,
        Signal::ProposalsPending,
        Signal::DbSizeBytes,
        Signal::DbQuotaRatio,
        Signal::DbInUseRatio,
        Signal::DbInUseBytes,
        Signal::DbPredictedQuotaRatio,
        Signal::MemoryRssBytes,
        Signal::KernelWalFsyncP99Seconds,
        Signal::WalFsyncServerKernelRatio,
        Signal::PeerRetransmitsPerSecond,
        Signal::AgentLostEvents,
        Signal::AgentEbpf,
        Signal::HeartbeatSendFailures,
        Signal::SlowApplies,
        Signal::CertificateExpirySeconds,
        Signal::DiskUsedRatio,
        Signal::MemoryUsedRatio,
    ];

    /// The name used in rule expressions.
    pub fn name(self) -> &'static str {
        match self {
            Signal::ClusterHasLeader => "cluster_has_leader",
            Signal::ClusterQuorumOk => "cluster_quorum_ok",
            Signal::ClusterAvailableMembers => "cluster_available_members",
            Signal::ClusterUnavailableMembers => "cluster_unavailable_members",
            Signal::ClusterSplitBrain => "cluster_split_brain",
            Signal::LeaderChanges => "leader_changes",
            Signal::MemberUp => "member_up",
            Signal::MemberAlarm => "member_alarm",
            Signal::RequestLatencyP99Ms => "request_latency_p99_ms",
            Signal::MemberHasLeader => "member_has_leader",
            Signal::WalFsyncP99Seconds => "wal_fsync_p99_seconds",
            Signal::BackendCommitP99Seconds => "backend_commit_p99_seconds",
            Signal::PeerRoundTripP99Seconds => "peer_round_trip_p99_seconds",
            Signal::GrpcRequestP99Seconds => "grpc_request_p99_seconds",
            Signal::GrpcFailedPercent => "grpc_failed_percent",
            Signal::ProposalsFailedPerSecond => "proposals_failed_per_second",
            Signal::ProposalsPending => "proposals_pending",
            Signal::DbSizeBytes => "db_size_bytes",
            Signal::DbQuotaRatio => "db_quota_ratio",
            Signal::DbInUseRatio => "db_in_use_ratio",
            Signal::DbInUseBytes => "db_in_use_bytes",
            Signal::DbPredictedQuotaRatio => "db_predicted_quota_ratio",
            Signal::MemoryRssBytes => "memory_rss_bytes",
            Signal::KernelWalFsyncP99Seconds => "kernel_wal_fsync_p99_seconds",
            Signal::WalFsyncServerKernelRatio => "wal_fsync_server_kernel_ratio",
            Signal::PeerRetransmitsPerSecond => "peer_retransmits_per_second",
            Signal::AgentLostEvents => "agent_lost_events",
            Signal::AgentEbpf => "agent_ebpf",
            Signal::HeartbeatSendFailures => "heartbeat_send_failures",
            Signal::SlowApplies => "slow_applies",
            Signal::CertificateExpirySeconds => "certificate_expiry_seconds",
            Signal::DiskUsedRatio => "disk_used_ratio",
            Signal::MemoryUsedRatio => "memory_used_ratio",
        }
    }

    /// Whether the signal is computed over a window (`signal[5m]`).
    pub fn windowed(self) -> bool {
        matches!(
            self,
            Signal::LeaderChanges
                | Signal::WalFsyncP99Seconds
                | Signal::BackendCommitP99Seconds
                | Signal::PeerRoundTripP99Seconds
                | Signal::GrpcRequestP99Seconds
                | Signal::GrpcFailedPercent
                | Signal::ProposalsFailedPerSecond
                | Signal::DbPredictedQuotaRatio
                | Signal::KernelWalFsyncP99Seconds
                | Signal::WalFsyncServerKernelRatio
                | Signal::PeerRetransmitsPerSecond
                | Signal::AgentLostEvents
                | Signal::HeartbeatSendFailures
                | Signal::SlowApplies
        )
    }

    /// Whether the value is a duration in seconds (templates then offer `value_ms`).
    pub fn is_seconds(self) -> bool {
        self.name().ends_with("_seconds")
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::ALL
            .iter()
            .copied()
            .find(|sig| sig.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
                format!("unknown signal {s:?}; known: {}", names.join(", "))
            })
    }
}

/// One value of a signal for one label set.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `cluster`, and `member`, `peer`, `alarm`, `request` where they apply.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
    /// Extra template values (`kernel_p99_ms`, `server_p99_ms`, `alarms`, …).
    pub context: BTreeMap<String, String>,
}

/// The kernel-side cumulative series of one member, from its agent's last status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelSeries {
    /// Agent boot id: counters restart with it.
    pub boot_id: String,
    /// Agent mode: `ebpf`, `ebpf-partial` or `client-only`.
    pub mode: String,
    /// WAL `fdatasync` durations, log2 slots.
    pub wal_fsync_slots: Log2Slots,
    /// Retransmits per peer.
    pub peer_retransmits: BTreeMap<String, u64>,
    /// Events lost: kernel ring buffer, agent queue, kernel other, and in transit.
    pub lost_events: u64,
    /// Data-dir filesystem (used bytes, bytes available to non-root), when the agent read it.
    pub fs_used_free: Option<(u64, u64)>,
    /// (RSS, memory limit, limit from the cgroup), when the agent read both.
    pub memory: Option<(u64, u64, bool)>,
}

/// One member at one evaluation.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    at_ms: u64,
    server: Option<ServerSeries>,
    db_size_bytes: Option<f64>,
    proposals_failed: Option<f64>,
    kernel: Option<KernelSeries>,
}

/// Per-member snapshots over time, per cluster.
#[derive(Debug, Default)]
pub struct SignalHistory {
    members: HashMap<(String, String), VecDeque<Snapshot>>,
    /// Longest window any rule asks for.
    pub max_window: Duration,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn kernel_series(registry: &AgentRegistry, member: &MemberState) -> Option<KernelSeries> {
    let (record, identity) = registry.find(member)?;
    let (status, _) = record.status.as_ref()?;
    let name = identity.name.as_str();
    let slots = join::wal_fsync_slots(status, name).unwrap_or_default();
    let mut peers = BTreeMap::new();
    for p in status.peers.iter().filter(|p| p.member == name) {
        let peer = if p.peer_member.is_empty() {
            p.peer_addr.clone()
        } else {
            p.peer_member.clone()
        };
        *peers.entry(peer).or_insert(0) += p.retransmits;
    }
    let drops = status
        .drops
        .as_ref()
        .map_or(0, |d| d.kernel_ringbuf + d.agent_queue + d.kernel_other);
    let resources = status.resources.iter().find(|r| r.member == name);
    Some(KernelSeries {
        boot_id: record.boot_id.clone(),
        mode: status.mode.clone(),
        wal_fsync_slots: slots,
        peer_retransmits: peers,
        lost_events: drops + record.lost_events,
        fs_used_free: resources
            .filter(|r| r.has_fs)
            .map(|r| (r.fs_used_bytes, r.fs_free_bytes)),
        memory: resources
            .filter(|r| r.has_rss && r.memory_limit_bytes > 0)
            .map(|r| {
                (
                    r.rss_bytes,
                    r.memory_limit_bytes,
                    r.memory_limit_from_cgroup,
                )
            }),
    })
}

impl SignalHistory {
    /// Records every member of `state` at `now_ms` and forgets what is too old.
    pub fn record(&mut self, state: &ClusterState, registry: Option<&AgentRegistry>, now_ms: u64) {
        let max_window = millis(self.max_window).max(DENSE_FOR_MS);
        let sparse_every = (max_window / SPARSE_POINTS).max(1);
        for m in &state.members {
            let label = ClusterState::member_label(m);
            let snap = Snapshot {
                at_ms: now_ms,
                server: m.server.as_ref().map(|s| s.series.clone()),
                db_size_bytes: db_size(m),
                proposals_failed: m.server.as_ref().map(|s| s.proposals_failed_total),
                kernel: registry.and_then(|r| kernel_series(r, m)),
            };
            let q = self
                .members
                .entry((state.cluster.clone(), label))
                .or_default();
            q.push_back(snap);
            // Thin out: keep everything of the last DENSE_FOR_MS, one per `sparse_every`
            // before, nothing older than the longest window.
            let mut kept: VecDeque<Snapshot> = VecDeque::with_capacity(q.len());
            let mut last_sparse: Option<u64> = None;
            for s in q.drain(..) {
                let age = now_ms.saturating_sub(s.at_ms);
                if age > max_window + sparse_every {
                    continue;
                }
                if age <= DENSE_FOR_MS {
                    kept.push_back(s);
                    continue;
                }
                if last_sparse.is_none_or(|t| s.at_ms.saturating_sub(t) >= sparse_every) {
                    last_sparse = Some(s.at_ms);
                    kept.push_back(s);
                }
            }
            *q = kept;
        }
        let names: Vec<String> = state
            .members
            .iter()
            .map(ClusterState::member_label)
            .collect();
        self.members
            .retain(|(c, m), _| c != &state.cluster || names.contains(m));
    }

    /// (oldest snapshot inside the window, newest snapshot) of a member.
    fn window(
        &self,
        cluster: &str,
        member: &str,
        window: Duration,
    ) -> Option<(&Snapshot, &Snapshot)> {
        let q = self
            .members
            .get(&(cluster.to_string(), member.to_string()))?;
        let last = q.back()?;
        let from = last.at_ms.saturating_sub(millis(window));
        let first = q.iter().find(|s| s.at_ms >= from)?;
        Some((first, last))
    }

    /// Every snapshot of a member inside the window, oldest first.
    fn points(&self, cluster: &str, member: &str, window: Duration) -> Vec<&Snapshot> {
        let Some(q) = self.members.get(&(cluster.to_string(), member.to_string())) else {
            return Vec::new();
        };
        let Some(last) = q.back() else {
            return Vec::new();
        };
        let from = last.at_ms.saturating_sub(millis(window));
        q.iter().filter(|s| s.at_ms >= from).collect()
    }
}

fn db_size(m: &MemberState) -> Option<f64> {
    m.status
        .as_ref()
        .map(|s| s.db_size_bytes as f64)
        .filter(|v| *v > 0.0)
        .or_else(|| m.server.as_ref().map(|s| s.db_total_size_bytes))
}

/// `histogram_quantile(q, increase(buckets[window]))` in seconds, by the shared histogram
/// model's reset and quantile rules; `None` without observations in the window.
pub fn bucket_quantile(q: f64, first: &CumulativeBuckets, last: &CumulativeBuckets) -> Option<f64> {
    delta(&first.histogram(), &last.histogram()).quantile(q)
}

/// The `q` quantile of the kernel's log2 slots over the window, seconds, by the shared model's
/// rules; `first` is `None` when the agent restarted (new boot id) inside the window, so the
/// window is what the new agent counted. `None` without calls.
pub fn slots_quantile(q: f64, first: Option<&Log2Slots>, last: &Log2Slots) -> Option<f64> {
    let last = last.histogram();
    match first {
        Some(first) => delta(&first.histogram(), &last).quantile(q),
        None => last.quantile(q),
    }
}

fn rate(first: f64, last: f64, seconds: f64) -> Option<f64> {
    if seconds <= 0.0 {
        return None;
    }
    let inc = if last < first { last } else { last - first };
    Some(inc / seconds)
}

/// Formats milliseconds for messages.
pub fn fmt_ms(seconds: f64) -> String {
    format!("{:.1}", seconds * 1000.0)
}

/// Computes `signal` over `window` for every member (or the cluster) of `state`.
pub fn samples(
    signal: Signal,
    window: Duration,
    state: &ClusterState,
    history: &SignalHistory,
    now_ms: u64,
) -> Vec<Sample> {
    if let Some(s) = cluster_samples(signal, window, state, now_ms) {
        return s;
    }
    if signal == Signal::CertificateExpirySeconds {
        return certificate_samples(state, now_ms);
    }
    let mut out = Vec::new();
    for m in &state.members {
        let member = ClusterState::member_label(m);
        let mut labels = cluster_labels(state);
        labels.insert("member".to_string(), member.clone());
        let mut context = BTreeMap::new();
        if !m.alarms.is_empty() {
            context.insert("alarms".to_string(), m.alarms.join(", "));
        }
        let win = history.window(&state.cluster, &member, window);
        let at = At {
            m,
            win,
            seconds: win.map_or(0.0, |(a, b)| {
                b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0
            }),
            labels,
            context,
        };
        let found = match signal {
            Signal::DbPredictedQuotaRatio => {
                predicted_quota_ratio(at, &history.points(&state.cluster, &member, window))
            }
            _ => member_samples(signal, at),
        };
        out.extend(found.into_iter().filter(|s| s.value.is_finite()));
    }
    out
}

fn cluster_labels(state: &ClusterState) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("cluster".to_string(), state.cluster.clone());
    l
}

fn bool_f(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The cluster-scoped signals; `None` for a member-scoped one.
fn cluster_samples(
    signal: Signal,
    window: Duration,
    state: &ClusterState,
    now_ms: u64,
) -> Option<Vec<Sample>> {
    let one = |value: f64, context: BTreeMap<String, String>| {
        vec![Sample {
            labels: cluster_labels(state),
            value,
            context,
        }]
    };
    let none = BTreeMap::new;
    let with = |k: &str, v: String| BTreeMap::from([(k.to_string(), v)]);
    Some(match signal {
        Signal::ClusterHasLeader => one(bool_f(state.has_leader), none()),
        Signal::ClusterQuorumOk => one(bool_f(state.quorum_ok), none()),
        Signal::ClusterAvailableMembers => one(state.available_members as f64, none()),
        Signal::ClusterUnavailableMembers => one(
            state.member_count.saturating_sub(state.available_members) as f64,
            with("unreachable_members", state.unreachable_members.join(", ")),
        ),
        Signal::ClusterSplitBrain => one(
            bool_f(state.split_brain.detected),
            with("reasons", state.split_brain.reasons.join("; ")),
        ),
        Signal::LeaderChanges => {
            let from = now_ms.saturating_sub(millis(window));
            let n = state
                .leader_history
                .iter()
                .filter(|c| c.at_ms >= from)
                .count();
            one(n as f64, none())
        }
        _ => return None,
    })
}

/// Seconds until each certificate of the cluster's last check expires.
fn certificate_samples(state: &ClusterState, now_ms: u64) -> Vec<Sample> {
    let now = (now_ms / 1000) as i64;
    state
        .certificates
        .certificates
        .iter()
        .map(|c| {
            let mut labels = cluster_labels(state);
            if !c.member.is_empty() {
                labels.insert("member".into(), c.member.clone());
            }
            labels.insert("kind".into(), c.kind.as_str().to_string());
            labels.insert("subject".into(), c.subject.clone());
            let left = c.not_after_unix.saturating_sub(now);
            let days = left as f64 / 86_400.0;
            let source = match c.kind {
                CertificateKind::Client => "the collector's --cert-file".to_string(),
                CertificateKind::Ca => "the collector's --ca-file".to_string(),
                CertificateKind::Server | CertificateKind::Peer => {
                    format!("presented by member {}", c.member)
                }
            };
            let context = BTreeMap::from([
                ("expires_in".to_string(), format!("{days:.1} days")),
                ("certificate_source".to_string(), source),
            ]);
            Sample {
                labels,
                value: left as f64,
                context,
            }
        })
        .collect()
}

/// One member at one evaluation: its state, its window of snapshots, its labels.
struct At<'a> {
    m: &'a MemberState,
    win: Option<(&'a Snapshot, &'a Snapshot)>,
    seconds: f64,
    labels: BTreeMap<String, String>,
    context: BTreeMap<String, String>,
}

impl At<'_> {
    fn one(self, value: f64) -> Vec<Sample> {
        vec![Sample {
            labels: self.labels,
            value,
            context: self.context,
        }]
    }

    /// One sample with an extra label.
    fn labelled(&self, key: &str, value: &str, v: f64) -> Sample {
        let mut labels = self.labels.clone();
        labels.insert(key.to_string(), value.to_string());
        Sample {
            labels,
            value: v,
            context: self.context.clone(),
        }
    }

    /// The server series at both ends of the window.
    fn servers(&self) -> Option<(&ServerSeries, &ServerSeries)> {
        let (a, b) = self.win?;
        Some((a.server.as_ref()?, b.server.as_ref()?))
    }

    /// The kernel series at both ends of the window.
    fn kernels(&self) -> Option<(&KernelSeries, &KernelSeries)> {
        let (a, b) = self.win?;
        Some((a.kernel.as_ref()?, b.kernel.as_ref()?))
    }

    /// The newest kernel series.
    fn kernel(&self) -> Option<&KernelSeries> {
        self.win?.1.kernel.as_ref()
    }

    fn quota(&self) -> Option<f64> {
        self.m
            .server
            .as_ref()
            .and_then(|s| s.series.quota_backend_bytes)
            .filter(|q| *q > 0.0)
    }
}

/// The member-scoped signals, by family.
fn member_samples(signal: Signal, at: At<'_>) -> Vec<Sample> {
    match signal {
        Signal::MemberUp => {
            let up = bool_f(at.m.reachable);
            at.one(up)
        }
        Signal::MemberAlarm => {
            at.m.alarms
                .iter()
                .map(|alarm| at.labelled("alarm", alarm, 1.0))
                .collect()
        }
        Signal::RequestLatencyP99Ms => {
            [("read", &at.m.latency.read), ("write", &at.m.latency.write)]
                .into_iter()
                .filter_map(|(kind, q)| Some(at.labelled("request", kind, q.as_ref()?.p99_ms)))
                .collect()
        }
        Signal::MemberHasLeader => match at.m.server.as_ref().and_then(|s| s.has_leader) {
            Some(h) => at.one(bool_f(h)),
            None => Vec::new(),
        },
        Signal::ProposalsPending => match &at.m.server {
            Some(s) => {
                let v = s.proposals_pending;
                at.one(v)
            }
            None => Vec::new(),
        },
        Signal::WalFsyncP99Seconds
        | Signal::BackendCommitP99Seconds
        | Signal::PeerRoundTripP99Seconds
        | Signal::GrpcRequestP99Seconds
        | Signal::GrpcFailedPercent
        | Signal::ProposalsFailedPerSecond
        | Signal::HeartbeatSendFailures
        | Signal::SlowApplies => server_window_samples(signal, at),
        Signal::DbSizeBytes
        | Signal::DbQuotaRatio
        | Signal::DbInUseRatio
        | Signal::DbInUseBytes
        | Signal::MemoryRssBytes => database_samples(signal, at),
        Signal::KernelWalFsyncP99Seconds
        | Signal::WalFsyncServerKernelRatio
        | Signal::PeerRetransmitsPerSecond
        | Signal::AgentLostEvents
        | Signal::AgentEbpf
        | Signal::DiskUsedRatio
        | Signal::MemoryUsedRatio => kernel_samples(signal, at),
        Signal::ClusterHasLeader
        | Signal::ClusterQuorumOk
        | Signal::ClusterAvailableMembers
        | Signal::ClusterUnavailableMembers
        | Signal::ClusterSplitBrain
        | Signal::LeaderChanges
        | Signal::CertificateExpirySeconds
        | Signal::DbPredictedQuotaRatio => Vec::new(),
    }
}

/// Increase of a counter over the window (a reset takes the new value as the increase).
fn increase(first: f64, last: f64) -> f64 {
    if last < first { last } else { last - first }
}

/// Signals over etcd's own series across the window.
fn server_window_samples(signal: Signal, at: At<'_>) -> Vec<Sample> {
    let Some((sa, sb)) = at.servers() else {
        return Vec::new();
    };
    let value = match signal {
        Signal::WalFsyncP99Seconds => bucket_quantile(0.99, &sa.wal_fsync, &sb.wal_fsync),
        Signal::BackendCommitP99Seconds => {
            bucket_quantile(0.99, &sa.backend_commit, &sb.backend_commit)
        }
        Signal::PeerRoundTripP99Seconds => {
            bucket_quantile(0.99, &sa.peer_round_trip, &sb.peer_round_trip)
        }
        Signal::GrpcRequestP99Seconds => return grpc_p99_samples(&at, sa, sb),
        Signal::GrpcFailedPercent => grpc_failed_percent(sa, sb),
        Signal::ProposalsFailedPerSecond => {
            let (a, b) = at
                .win
                .map(|(a, b)| (a.proposals_failed, b.proposals_failed))
                .unwrap_or_default();
            a.zip(b).and_then(|(fa, fb)| rate(fa, fb, at.seconds))
        }
        Signal::HeartbeatSendFailures => sa
            .counters
            .heartbeat_send_failures
            .zip(sb.counters.heartbeat_send_failures)
            .map(|(a, b)| increase(a, b)),
        Signal::SlowApplies => sa
            .counters
            .slow_applies
            .zip(sb.counters.slow_applies)
            .map(|(a, b)| increase(a, b)),
        _ => None,
    };
    match value {
        Some(v) => at.one(v),
        None => Vec::new(),
    }
}

fn grpc_p99_samples(at: &At<'_>, sa: &ServerSeries, sb: &ServerSeries) -> Vec<Sample> {
    let empty = CumulativeBuckets::default();
    sb.grpc_handling
        .iter()
        .filter_map(|(method, last)| {
            let first = sa.grpc_handling.get(method).unwrap_or(&empty);
            let v = bucket_quantile(0.99, first, last)?;
            Some(at.labelled("method", method, v))
        })
        .collect()
}

fn grpc_failed_percent(sa: &ServerSeries, sb: &ServerSeries) -> Option<f64> {
    let reset = sb.grpc_handled < sa.grpc_handled;
    let (h0, f0) = if reset {
        (0.0, 0.0)
    } else {
        (sa.grpc_handled, sa.grpc_failed)
    };
    let handled = sb.grpc_handled - h0;
    (handled > 0.0).then(|| 100.0 * (sb.grpc_failed - f0) / handled)
}

/// Database and memory figures of the member's latest answers.
fn database_samples(signal: Signal, mut at: At<'_>) -> Vec<Sample> {
    let m = at.m;
    let in_use = || {
        m.status
            .as_ref()
            .map(|s| s.db_size_in_use_bytes as f64)
            .filter(|v| *v > 0.0)
            .or_else(|| m.server.as_ref().map(|s| s.db_total_size_in_use_bytes))
    };
    let value = match signal {
        Signal::DbSizeBytes => db_size(m),
        Signal::DbQuotaRatio => match (db_size(m), at.quota()) {
            (Some(size), Some(quota)) => {
                at.context
                    .insert("quota_bytes".into(), format!("{quota:.0}"));
                Some(size / quota)
            }
            _ => None,
        },
        Signal::DbInUseBytes => in_use().filter(|_| db_size(m).is_some()),
        Signal::DbInUseRatio => in_use()
            .zip(db_size(m).filter(|s| *s > 0.0))
            .map(|(u, s)| u / s),
        Signal::MemoryRssBytes => m
            .server
            .as_ref()
            .and_then(|s| s.series.resident_memory_bytes),
        _ => None,
    };
    match value {
        Some(v) => at.one(v),
        None => Vec::new(),
    }
}

/// `predict_linear(db_size[window], 4h) / quota`: the least-squares line through the
/// window's database sizes, evaluated four hours after the newest one.
fn predicted_quota_ratio(mut at: At<'_>, points: &[&Snapshot]) -> Vec<Sample> {
    let Some(quota) = at.quota() else {
        return Vec::new();
    };
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|s| Some((s.at_ms as f64 / 1000.0, s.db_size_bytes?)))
        .collect();
    let Some((last_t, _)) = xy.last().copied() else {
        return Vec::new();
    };
    let Some((slope, intercept)) = least_squares(&xy, last_t) else {
        return Vec::new();
    };
    let predicted = intercept + slope * 4.0 * 3600.0;
    at.context
        .insert("quota_bytes".into(), format!("{quota:.0}"));
    at.context.insert(
        "growth_bytes_per_hour".into(),
        format!("{:.0}", slope * 3600.0),
    );
    at.one(predicted / quota)
}

/// Slope (per second) and the line's value at `at_t` of the least-squares fit through `xy`;
/// `None` with fewer than two distinct times.
pub fn least_squares(xy: &[(f64, f64)], at_t: f64) -> Option<(f64, f64)> {
    let n = xy.len() as f64;
    if xy.len() < 2 {
        return None;
    }
    // Centre the times on `at_t` to keep the sums small.
    let (sx, sy) = xy
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + (x - at_t), sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in xy {
        let dx = x - at_t - mx;
        sxy += dx * (y - my);
        sxx += dx * dx;
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// Signals from the member's agent.
fn kernel_samples(signal: Signal, mut at: At<'_>) -> Vec<Sample> {
    match signal {
        Signal::AgentEbpf => {
            let Some(mode) = at.kernel().map(|k| k.mode.clone()) else {
                return Vec::new();
            };
            let ebpf = bool_f(mode.starts_with("ebpf"));
            at.context.insert("agent_mode".into(), mode);
            at.one(ebpf)
        }
        Signal::DiskUsedRatio => {
            let Some((used, free)) = at.kernel().and_then(|k| k.fs_used_free) else {
                return Vec::new();
            };
            let total = used.saturating_add(free);
            if total == 0 {
                return Vec::new();
            }
            at.context.insert("used_bytes".into(), used.to_string());
            at.one(used as f64 / total as f64)
        }
        Signal::MemoryUsedRatio => {
            let Some((rss, limit, cgroup)) = at.kernel().and_then(|k| k.memory) else {
                return Vec::new();
            };
            at.context.insert("limit_bytes".into(), limit.to_string());
            let source = if cgroup {
                "cgroup limit"
            } else {
                "node memory"
            };
            at.context.insert("limit_source".into(), source.to_string());
            at.one(rss as f64 / limit as f64)
        }
        Signal::KernelWalFsyncP99Seconds | Signal::WalFsyncServerKernelRatio => {
            kernel_fsync_samples(signal, at)
        }
        Signal::PeerRetransmitsPerSecond => retransmit_samples(&at),
        Signal::AgentLostEvents => {
            let Some((ka, kb)) = at.kernels() else {
                return Vec::new();
            };
            let lost = if ka.boot_id == kb.boot_id && kb.lost_events >= ka.lost_events {
                kb.lost_events - ka.lost_events
            } else {
                kb.lost_events
            };
            at.one(lost as f64)
        }
        _ => Vec::new(),
    }
}

fn kernel_fsync_samples(signal: Signal, mut at: At<'_>) -> Vec<Sample> {
    let Some((ka, kb)) = at.kernels() else {
        return Vec::new();
    };
    let first = (ka.boot_id == kb.boot_id).then_some(&ka.wal_fsync_slots);
    let Some(kernel) = slots_quantile(0.99, first, &kb.wal_fsync_slots) else {
        return Vec::new();
    };
    let server = at
        .servers()
        .and_then(|(sa, sb)| bucket_quantile(0.99, &sa.wal_fsync, &sb.wal_fsync));
    at.context.insert("kernel_p99_ms".into(), fmt_ms(kernel));
    if signal == Signal::KernelWalFsyncP99Seconds {
        return at.one(kernel);
    }
    match server {
        Some(server) if kernel > 0.0 => {
            at.context.insert("server_p99_ms".into(), fmt_ms(server));
            at.one(server / kernel)
        }
        _ => Vec::new(),
    }
}

fn retransmit_samples(at: &At<'_>) -> Vec<Sample> {
    let Some((ka, kb)) = at.kernels() else {
        return Vec::new();
    };
    kb.peer_retransmits
        .iter()
        .filter_map(|(peer, now)| {
            let before = if ka.boot_id == kb.boot_id {
                ka.peer_retransmits.get(peer).copied().unwrap_or(0)
            } else {
                0
            };
            let r = rate(before as f64, *now as f64, at.seconds)?;
            Some(at.labelled("peer", peer, r))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::{
        cluster::ServerMetrics,
        series::{CertificateExpiry, ServerCounters},
    };

    /// A cluster `c` of one member `m0` whose scrape says `quota` and a history of `snaps`.
    fn one_member(quota: Option<f64>, snaps: Vec<Snapshot>) -> (ClusterState, SignalHistory) {
        let mut server = ServerMetrics::default();
        server.series.quota_backend_bytes = quota;
        let state = ClusterState {
            cluster: "c".into(),
            members: vec![MemberState {
                id: "a1".into(),
                name: "m0".into(),
                server: Some(server),
                ..MemberState::default()
            }],
            ..ClusterState::default()
        };
        let mut history = SignalHistory::default();
        history
            .members
            .insert(("c".into(), "m0".into()), snaps.into_iter().collect());
        (state, history)
    }

    fn values(
        signal: Signal,
        window: Duration,
        state: &ClusterState,
        h: &SignalHistory,
    ) -> Vec<f64> {
        samples(signal, window, state, h, 0)
            .iter()
            .map(|s| s.value)
            .collect()
    }

    #[test]
    fn least_squares_is_predict_linear() {
        // y = 100 + 5 t, read at t = 0, 60, 120: slope 5/s, 700 at t = 120.
        let xy = [(0.0, 100.0), (60.0, 400.0), (120.0, 700.0)];
        let (slope, at) = least_squares(&xy, 120.0).unwrap_or_default();
        assert!(
            (slope - 5.0).abs() < 1e-9 && (at - 700.0).abs() < 1e-6,
            "{slope} {at}"
        );
        assert_eq!(least_squares(&xy[..1], 0.0), None);
        assert_eq!(least_squares(&[(5.0, 1.0), (5.0, 2.0)], 5.0), None);
    }

    #[test]
    fn growth_prediction_fits_every_point_of_the_window() {
        // 1 MB a minute for an hour, but the newest reading dips (a defrag on one point):
        // two points would see almost no growth, the fit sees the trend.
        let mut snaps: Vec<Snapshot> = (0..=60u64)
            .map(|i| Snapshot {
                at_ms: i * 60_000,
                db_size_bytes: Some(100e6 + i as f64 * 1e6),
                ..Snapshot::default()
            })
            .collect();
        if let Some(last) = snaps.last_mut() {
            last.db_size_bytes = Some(101e6);
        }
        let (state, h) = one_member(Some(1e9), snaps);
        let v = values(
            Signal::DbPredictedQuotaRatio,
            Duration::from_secs(4 * 3600),
            &state,
            &h,
        );
        assert_eq!(v.len(), 1);
        // Slope ≈ 1 MB/min ⇒ ~240 MB more in 4 h on top of ~150 MB.
        assert!(v[0] > 0.3 && v[0] < 0.5, "{v:?}");
        let (state, _) = one_member(None, Vec::new());
        assert!(
            values(
                Signal::DbPredictedQuotaRatio,
                Duration::from_secs(60),
                &state,
                &h
            )
            .is_empty()
        );
    }

    #[test]
    fn heartbeat_failures_and_slow_applies_are_increases() {
        let snap = |at_ms, hb, slow| Snapshot {
            at_ms,
            server: Some(ServerSeries {
                counters: ServerCounters {
                    heartbeat_send_failures: Some(hb),
                    slow_applies: Some(slow),
                    watchers: None,
                },
                ..ServerSeries::default()
            }),
            ..Snapshot::default()
        };
        let w = Duration::from_secs(900);
        let (state, h) = one_member(None, vec![snap(0, 3.0, 10.0), snap(60_000, 10.0, 2.0)]);
        assert_eq!(values(Signal::HeartbeatSendFailures, w, &state, &h), [7.0]);
        // etcd restarted: the new count is the increase.
        assert_eq!(values(Signal::SlowApplies, w, &state, &h), [2.0]);
    }

    #[test]
    fn disk_and_memory_ratios_come_from_the_agent() {
        let kernel = KernelSeries {
            fs_used_free: Some((850, 150)),
            memory: Some((900, 1000, true)),
            ..KernelSeries::default()
        };
        let snap = Snapshot {
            kernel: Some(kernel),
            ..Snapshot::default()
        };
        let w = Duration::from_secs(60);
        let (state, h) = one_member(None, vec![snap]);
        assert_eq!(values(Signal::DiskUsedRatio, w, &state, &h), [0.85]);
        assert_eq!(values(Signal::MemoryUsedRatio, w, &state, &h), [0.9]);
        let s = samples(Signal::MemoryUsedRatio, w, &state, &h, 0);
        assert_eq!(s[0].context["limit_source"], "cgroup limit");
        // No agent, no figure (and so no alert).
        let (state, h) = one_member(None, vec![Snapshot::default()]);
        assert!(values(Signal::DiskUsedRatio, w, &state, &h).is_empty());
    }

    #[test]
    fn certificate_expiry_counts_down_per_certificate() {
        let (mut state, h) = one_member(None, Vec::new());
        state.certificates.certificates = vec![
            CertificateExpiry {
                member: "m0".into(),
                kind: CertificateKind::Server,
                subject: "etcd server".into(),
                not_after_unix: 1_000 + 3 * 86_400,
            },
            CertificateExpiry {
                member: String::new(),
                kind: CertificateKind::Client,
                subject: "collector".into(),
                not_after_unix: 500,
            },
        ];
        let s = samples(
            Signal::CertificateExpirySeconds,
            Duration::from_secs(300),
            &state,
            &h,
            1_000_000,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].value, 3.0 * 86_400.0);
        assert_eq!(s[0].labels["kind"], "server");
        assert_eq!(s[0].labels["member"], "m0");
        assert_eq!(s[0].context["expires_in"], "3.0 days");
        // Expired: negative; a configured file has no member label.
        assert_eq!(s[1].value, -500.0);
        assert!(!s[1].labels.contains_key("member"));
        assert_eq!(
            s[1].context["certificate_source"],
            "the collector's --cert-file"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in Signal::ALL {
            assert_eq!(s.name().parse::<Signal>(), Ok(s));
        }
        assert!(
            "nope"
                .parse::<Signal>()
                .is_err_and(|e| e.contains("member_up"))
        );
    }

    #[test]
    fn bucket_quantile_uses_the_window_only() {
        let first =
            CumulativeBuckets::from_pairs([(0.001, 100.0), (0.1, 100.0), (f64::INFINITY, 100.0)]);
        let last =
            CumulativeBuckets::from_pairs([(0.001, 100.0), (0.1, 200.0), (f64::INFINITY, 200.0)]);
        let q = bucket_quantile(0.99, &first, &last).unwrap_or_default();
        assert!(q > 0.09 && q <= 0.1, "{q}");
        assert_eq!(bucket_quantile(0.99, &last, &last), None);
        // A counter reset takes the new counts as they are.
        let reset =
            CumulativeBuckets::from_pairs([(0.001, 10.0), (0.1, 10.0), (f64::INFINITY, 10.0)]);
        assert!(bucket_quantile(0.99, &last, &reset).unwrap_or(1.0) <= 0.001);
    }

    #[test]
    fn kernel_slots_quantile() {
        // 2^26 ns ≈ 67 ms slot: 100 calls there after 1000 fast ones before the window.
        let mut first = vec![0u64; 30];
        first[10] = 1000;
        let mut last = first.clone();
        last[26] = 100;
        let (first, last) = (
            Log2Slots::new(1000, 0, &first),
            Log2Slots::new(1100, 0, &last),
        );
        let q = slots_quantile(0.99, Some(&first), &last).unwrap_or_default();
        // Rank 99 of the window's 100, interpolated inside [2^26, 2^27) ns.
        let lo = (1u64 << 26) as f64 / 1e9;
        assert!((q - (lo + lo * 0.99)).abs() < 1e-9, "{q}");
        // A new agent (no first reading): its own counts since it started.
        let q = slots_quantile(0.99, None, &first).unwrap_or_default();
        assert!(q > 1e-6 && q <= 2.048e-6, "{q}");
    }
}
