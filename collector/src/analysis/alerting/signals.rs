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

use crate::model::series::ServerSeries;
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
    /// Database size predicted four hours ahead (linear over the window) / quota.
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
}

impl Signal {
    /// Every signal, for documentation and error messages.
    pub const ALL: [Signal; 28] = [
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
    Some(KernelSeries {
        boot_id: record.boot_id.clone(),
        mode: status.mode.clone(),
        wal_fsync_slots: slots,
        peer_retransmits: peers,
        lost_events: drops + record.lost_events,
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
    let cluster_labels = || {
        let mut l = BTreeMap::new();
        l.insert("cluster".to_string(), state.cluster.clone());
        l
    };
    let cluster_sample = |value: f64| {
        vec![Sample {
            labels: cluster_labels(),
            value,
            context: BTreeMap::new(),
        }]
    };
    let bool_f = |b: bool| if b { 1.0 } else { 0.0 };
    match signal {
        Signal::ClusterHasLeader => return cluster_sample(bool_f(state.has_leader)),
        Signal::ClusterQuorumOk => return cluster_sample(bool_f(state.quorum_ok)),
        Signal::ClusterAvailableMembers => {
            return cluster_sample(state.available_members as f64);
        }
        Signal::ClusterUnavailableMembers => {
            let mut s =
                cluster_sample(state.member_count.saturating_sub(state.available_members) as f64);
            s[0].context.insert(
                "unreachable_members".into(),
                state.unreachable_members.join(", "),
            );
            return s;
        }
        Signal::ClusterSplitBrain => {
            let mut s = cluster_sample(bool_f(state.split_brain.detected));
            s[0].context
                .insert("reasons".into(), state.split_brain.reasons.join("; "));
            return s;
        }
        Signal::LeaderChanges => {
            let from = now_ms.saturating_sub(millis(window));
            let n = state
                .leader_history
                .iter()
                .filter(|c| c.at_ms >= from)
                .count();
            return cluster_sample(n as f64);
        }
        _ => {}
    }
    let mut out = Vec::new();
    for m in &state.members {
        let member = ClusterState::member_label(m);
        let mut labels = cluster_labels();
        labels.insert("member".to_string(), member.clone());
        let mut context = BTreeMap::new();
        if !m.alarms.is_empty() {
            context.insert("alarms".to_string(), m.alarms.join(", "));
        }
        let win = history.window(&state.cluster, &member, window);
        let seconds = win.map_or(0.0, |(a, b)| {
            b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0
        });
        let push = |out: &mut Vec<Sample>,
                    labels: BTreeMap<String, String>,
                    value: f64,
                    context: BTreeMap<String, String>| {
            if value.is_finite() {
                out.push(Sample {
                    labels,
                    value,
                    context,
                });
            }
        };
        match signal {
            Signal::MemberUp => push(&mut out, labels, bool_f(m.reachable), context),
            Signal::MemberAlarm => {
                for alarm in &m.alarms {
                    let mut l = labels.clone();
                    l.insert("alarm".to_string(), alarm.clone());
                    push(&mut out, l, 1.0, context.clone());
                }
            }
            Signal::RequestLatencyP99Ms => {
                for (kind, q) in [("read", &m.latency.read), ("write", &m.latency.write)] {
                    if let Some(q) = q {
                        let mut l = labels.clone();
                        l.insert("request".to_string(), kind.to_string());
                        push(&mut out, l, q.p99_ms, context.clone());
                    }
                }
            }
            Signal::MemberHasLeader => {
                if let Some(h) = m.server.as_ref().and_then(|s| s.has_leader) {
                    push(&mut out, labels, bool_f(h), context);
                }
            }
            Signal::WalFsyncP99Seconds
            | Signal::BackendCommitP99Seconds
            | Signal::PeerRoundTripP99Seconds => {
                let pick = |s: &ServerSeries| match signal {
                    Signal::WalFsyncP99Seconds => s.wal_fsync.clone(),
                    Signal::BackendCommitP99Seconds => s.backend_commit.clone(),
                    _ => s.peer_round_trip.clone(),
                };
                if let Some((a, b)) = win
                    && let (Some(sa), Some(sb)) = (&a.server, &b.server)
                    && let Some(v) = bucket_quantile(0.99, &pick(sa), &pick(sb))
                {
                    push(&mut out, labels, v, context);
                }
            }
            Signal::GrpcRequestP99Seconds => {
                if let Some((a, b)) = win
                    && let (Some(sa), Some(sb)) = (&a.server, &b.server)
                {
                    for (method, last) in &sb.grpc_handling {
                        let empty = CumulativeBuckets::default();
                        let first = sa.grpc_handling.get(method).unwrap_or(&empty);
                        if let Some(v) = bucket_quantile(0.99, first, last) {
                            let mut l = labels.clone();
                            l.insert("method".to_string(), method.clone());
                            push(&mut out, l, v, context.clone());
                        }
                    }
                }
            }
            Signal::AgentEbpf => {
                if let Some((_, b)) = win
                    && let Some(k) = &b.kernel
                {
                    context.insert("agent_mode".into(), k.mode.clone());
                    push(
                        &mut out,
                        labels,
                        bool_f(k.mode.starts_with("ebpf")),
                        context,
                    );
                }
            }
            Signal::GrpcFailedPercent => {
                if let Some((a, b)) = win
                    && let (Some(sa), Some(sb)) = (&a.server, &b.server)
                {
                    let reset = sb.grpc_handled < sa.grpc_handled;
                    let (h0, f0) = if reset {
                        (0.0, 0.0)
                    } else {
                        (sa.grpc_handled, sa.grpc_failed)
                    };
                    let handled = sb.grpc_handled - h0;
                    if handled > 0.0 {
                        push(
                            &mut out,
                            labels,
                            100.0 * (sb.grpc_failed - f0) / handled,
                            context,
                        );
                    }
                }
            }
            Signal::ProposalsFailedPerSecond => {
                if let Some((a, b)) = win
                    && let (Some(fa), Some(fb)) = (a.proposals_failed, b.proposals_failed)
                    && let Some(r) = rate(fa, fb, seconds)
                {
                    push(&mut out, labels, r, context);
                }
            }
            Signal::ProposalsPending => {
                if let Some(s) = &m.server {
                    push(&mut out, labels, s.proposals_pending, context);
                }
            }
            Signal::DbSizeBytes => {
                if let Some(v) = db_size(m) {
                    push(&mut out, labels, v, context);
                }
            }
            Signal::DbQuotaRatio => {
                if let (Some(size), Some(quota)) = (
                    db_size(m),
                    m.server.as_ref().and_then(|s| s.series.quota_backend_bytes),
                ) && quota > 0.0
                {
                    context.insert("quota_bytes".into(), format!("{quota:.0}"));
                    push(&mut out, labels, size / quota, context);
                }
            }
            Signal::DbInUseRatio | Signal::DbInUseBytes => {
                let in_use = m
                    .status
                    .as_ref()
                    .map(|s| s.db_size_in_use_bytes as f64)
                    .filter(|v| *v > 0.0)
                    .or_else(|| m.server.as_ref().map(|s| s.db_total_size_in_use_bytes));
                if let (Some(in_use), Some(size)) = (in_use, db_size(m)) {
                    let v = if signal == Signal::DbInUseBytes {
                        in_use
                    } else if size > 0.0 {
                        in_use / size
                    } else {
                        continue;
                    };
                    push(&mut out, labels, v, context);
                }
            }
            Signal::DbPredictedQuotaRatio => {
                if let Some((a, b)) = win
                    && let (Some(sa), Some(sb)) = (a.db_size_bytes, b.db_size_bytes)
                    && let Some(quota) =
                        m.server.as_ref().and_then(|s| s.series.quota_backend_bytes)
                    && quota > 0.0
                    && seconds > 0.0
                {
                    let predicted = sb + (sb - sa) / seconds * 4.0 * 3600.0;
                    push(&mut out, labels, predicted / quota, context);
                }
            }
            Signal::MemoryRssBytes => {
                if let Some(v) = m
                    .server
                    .as_ref()
                    .and_then(|s| s.series.resident_memory_bytes)
                {
                    push(&mut out, labels, v, context);
                }
            }
            Signal::KernelWalFsyncP99Seconds | Signal::WalFsyncServerKernelRatio => {
                let Some((a, b)) = win else { continue };
                let (Some(ka), Some(kb)) = (&a.kernel, &b.kernel) else {
                    continue;
                };
                let first = (ka.boot_id == kb.boot_id).then_some(&ka.wal_fsync_slots);
                let Some(kernel) = slots_quantile(0.99, first, &kb.wal_fsync_slots) else {
                    continue;
                };
                context.insert("kernel_p99_ms".into(), fmt_ms(kernel));
                if signal == Signal::KernelWalFsyncP99Seconds {
                    push(&mut out, labels, kernel, context);
                } else if let (Some(sa), Some(sb)) = (&a.server, &b.server)
                    && let Some(server) = bucket_quantile(0.99, &sa.wal_fsync, &sb.wal_fsync)
                    && kernel > 0.0
                {
                    context.insert("server_p99_ms".into(), fmt_ms(server));
                    push(&mut out, labels, server / kernel, context);
                }
            }
            Signal::PeerRetransmitsPerSecond => {
                if let Some((a, b)) = win
                    && let (Some(ka), Some(kb)) = (&a.kernel, &b.kernel)
                {
                    for (peer, now) in &kb.peer_retransmits {
                        let before = if ka.boot_id == kb.boot_id {
                            ka.peer_retransmits.get(peer).copied().unwrap_or(0)
                        } else {
                            0
                        };
                        if let Some(r) = rate(before as f64, *now as f64, seconds) {
                            let mut l = labels.clone();
                            l.insert("peer".to_string(), peer.clone());
                            push(&mut out, l, r, context.clone());
                        }
                    }
                }
            }
            Signal::AgentLostEvents => {
                if let Some((a, b)) = win
                    && let (Some(ka), Some(kb)) = (&a.kernel, &b.kernel)
                {
                    let lost = if ka.boot_id == kb.boot_id && kb.lost_events >= ka.lost_events {
                        kb.lost_events - ka.lost_events
                    } else {
                        kb.lost_events
                    };
                    push(&mut out, labels, lost as f64, context);
                }
            }
            Signal::ClusterHasLeader
            | Signal::ClusterQuorumOk
            | Signal::ClusterAvailableMembers
            | Signal::ClusterUnavailableMembers
            | Signal::ClusterSplitBrain
            | Signal::LeaderChanges => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
