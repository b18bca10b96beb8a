//! The pipeline's series on the collector's /metrics: kernel histograms re-exported per joined
//! member (with its id and whether it leads), agent modes, drops by stage, peer network
//! figures, each member's resources (CPU, memory, data-dir filesystem, fds, connections) under
//! the agent's names, ingest and subscriber counters, watch counts.

use std::sync::atomic::Ordering;

use etcd_monitor_proto::v1::{AgentStatus, DiskOp, FileClass, MemberResources, NodeResources};
use prometheus::proto::MetricType;

use super::{Pipeline, join};
use crate::{
    model::cluster::ClusterState, model::cluster::Clusters, model::cluster::MemberState,
    model::exposition::Exposition,
};

/// The page being written, with the family's type passed alongside (counter or gauge).
struct Families<'a>(&'a mut Exposition);

impl Families<'_> {
    fn value(
        &mut self,
        name: &'static str,
        kind: MetricType,
        help: &'static str,
        labels: &[(&str, &str)],
        v: f64,
    ) {
        let labels = sorted(labels);
        if kind == MetricType::COUNTER {
            self.0.counter(name, help, &labels, v);
        } else {
            self.0.gauge(name, help, &labels, v);
        }
    }

    /// A Prometheus histogram (seconds) from log2 ns slots, in the shared model's exposition
    /// layout (the agent's own /metrics uses the same).
    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        slots: &[u64],
        sum_nanos: u64,
    ) {
        let slots = etcd_monitor_histogram::Log2Slots::new(0, sum_nanos, slots);
        self.0.histogram(
            name,
            help,
            &sorted(labels),
            &slots.exposition_buckets(),
            sum_nanos as f64 / 1e9,
            slots.slot_total(),
        );
    }
}

/// Label pairs sorted by name (this page's order since it was first written).
fn sorted<'a>(labels: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = labels.to_vec();
    pairs.sort_unstable_by_key(|(k, _)| *k);
    pairs
}

fn op_name(op: DiskOp) -> &'static str {
    match op {
        DiskOp::Fdatasync => "fdatasync",
        DiskOp::Fsync => "fsync",
        DiskOp::SyncFileRange => "sync_file_range",
        DiskOp::Write => "write",
        DiskOp::Pwrite64 => "pwrite64",
        DiskOp::Writev => "writev",
        DiskOp::Pwritev => "pwritev",
        DiskOp::Read => "read",
        DiskOp::Readv => "readv",
        DiskOp::Recvfrom => "recvfrom",
        DiskOp::Recvmsg => "recvmsg",
        DiskOp::Unspecified => "unspecified",
    }
}

fn file_name(file: FileClass) -> &'static str {
    match file {
        FileClass::Wal => "wal",
        FileClass::Db => "db",
        FileClass::Snap => "snap",
        FileClass::SocketClient => "socket_client",
        FileClass::SocketPeer => "socket_peer",
        FileClass::Socket => "socket",
        FileClass::Other => "other",
        FileClass::Unknown => "unknown",
        FileClass::Unspecified => "unspecified",
    }
}

const FSYNC_HELP: &str =
    "Kernel-measured duration of etcd's sync calls, from the member's node agent.";
const WRITE_HELP: &str =
    "Kernel-measured duration of etcd's write calls, from the member's node agent.";
const DROP_HELP: &str = "Events lost, by pipeline stage (kernel, agent_queue, grpc, collector).";

/// Adds the pipeline's families to the page.
pub fn render(clusters: &Clusters, pipeline: &Pipeline, out: &mut Exposition) {
    let mut f = Families(out);
    for cluster in clusters.iter() {
        let state = cluster.snapshot();
        for member in &state.members {
            member_families(&mut f, &state, member, pipeline);
        }
    }
    agent_families(&mut f, pipeline);
    ingest_families(&mut f, pipeline);
    registry_families(&mut f, pipeline);
    subscriber_and_watch_families(&mut f, pipeline);
}

/// Everything the member's agent reports about it: mode, kernel histograms, peers, resources.
fn member_families(
    f: &mut Families<'_>,
    state: &ClusterState,
    member: &MemberState,
    pipeline: &Pipeline,
) {
    let Some((record, identity)) = pipeline.registry.find(member) else {
        return;
    };
    let Some((status, _)) = &record.status else {
        return;
    };
    let name = ClusterState::member_label(member);
    let base = [
        ("cluster", state.cluster.as_str()),
        ("member", name.as_str()),
        ("member_id", member.id.as_str()),
    ];
    f.value(
        "etcdmon_agent_mode",
        MetricType::GAUGE,
        "1 for the mode of the agent tracing each member (ebpf, ebpf-partial, client-only).",
        &[
            base[0],
            base[1],
            ("node", record.node.as_str()),
            ("mode", status.mode.as_str()),
        ],
        1.0,
    );
    let leader = if member.is_leader { "true" } else { "false" };
    histogram_families(f, status, &identity.name, &base, leader);
    let view = join::kernel_view(&record.node, status, &identity, 0, record.lost_events);
    peer_families(f, &view, &base);
    if let Some(r) = status.resources.iter().find(|r| r.member == identity.name) {
        resource_families(f, r, &base[..2]);
    }
}

/// The kernel's syscall histograms of one member.
fn histogram_families(
    f: &mut Families<'_>,
    status: &AgentStatus,
    member: &str,
    base: &[(&str, &str); 3],
    leader: &str,
) {
    for h in status.histograms.iter().filter(|h| h.member == member) {
        let op = h.op();
        let sync = matches!(
            op,
            DiskOp::Fdatasync | DiskOp::Fsync | DiskOp::SyncFileRange
        );
        let labels = [
            base[0],
            base[1],
            base[2],
            ("leader", leader),
            ("file", file_name(h.file())),
            ("op", op_name(op)),
        ];
        if matches!(
            op,
            DiskOp::Read | DiskOp::Readv | DiskOp::Recvfrom | DiskOp::Recvmsg
        ) {
            f.histogram(
                "etcdmon_receive_duration_seconds",
                "Kernel-measured duration of etcd's socket receives, from the member's node agent.",
                &labels,
                &h.log2_slots,
                h.sum_nanos,
            );
            f.value(
                "etcdmon_received_bytes_total",
                MetricType::COUNTER,
                "Bytes etcd received on its sockets, by member, socket class and op.",
                &labels,
                h.bytes as f64,
            );
            continue;
        }
        if sync {
            f.histogram(
                "etcdmon_fsync_duration_seconds",
                FSYNC_HELP,
                &labels,
                &h.log2_slots,
                h.sum_nanos,
            );
        } else {
            f.histogram(
                "etcdmon_write_duration_seconds",
                WRITE_HELP,
                &labels,
                &h.log2_slots,
                h.sum_nanos,
            );
        }
        f.value(
            "etcdmon_write_bytes_total",
            MetricType::COUNTER,
            "Bytes etcd wrote, by member, file and op.",
            &labels,
            h.bytes as f64,
        );
    }
}

/// Kernel figures of a member's connections to its peers and clients.
fn peer_families(f: &mut Families<'_>, view: &join::KernelView, base: &[(&str, &str); 3]) {
    for p in &view.peers {
        let labels = [base[0], base[1], ("peer", p.peer.as_str())];
        if p.rtt_ms > 0.0 {
            f.value(
                "etcdmon_peer_rtt_seconds",
                MetricType::GAUGE,
                "Kernel smoothed RTT from a member to a peer.",
                &labels,
                p.rtt_ms / 1e3,
            );
        }
        f.value(
            "etcdmon_peer_retransmits_total",
            MetricType::COUNTER,
            "TCP retransmits between a member and a peer.",
            &labels,
            p.retransmits as f64,
        );
        f.value(
            "etcdmon_peer_bytes_total",
            MetricType::COUNTER,
            "Bytes between a member and a peer.",
            &[labels[0], labels[1], labels[2], ("direction", "sent")],
            p.bytes_sent as f64,
        );
        f.value(
            "etcdmon_peer_bytes_total",
            MetricType::COUNTER,
            "Bytes between a member and a peer.",
            &[labels[0], labels[1], labels[2], ("direction", "received")],
            p.bytes_received as f64,
        );
    }
    if let Some(open) = view.client_connections {
        f.value(
            "etcdmon_client_connections",
            MetricType::GAUGE,
            "Established client connections of a member.",
            &base[..2],
            open as f64,
        );
    }
}

/// (name, help) of the per-member resource families, as the agent names them.
const RESOURCE_HELP: [(&str, &str); 15] = [
    (
        "etcd_server_memory_usage_bytes",
        "Resident set size (VmRSS) of the member's process, from its agent.",
    ),
    (
        "etcd_server_disk_usage_bytes",
        "Used bytes of the filesystem holding the member's data dir (statvfs, as df counts them), from its agent.",
    ),
    (
        "etcd_server_active_connections",
        "ESTABLISHED TCP connections the member's process holds on its client listen ports (kernel socket table), from its agent.",
    ),
    (
        "etcdmon_member_cpu_seconds_total",
        "CPU time (user + system) the member's process used since it started, from its agent.",
    ),
    (
        "etcdmon_member_cpu_cores",
        "Cores the member's process used on average over its agent's last resource interval.",
    ),
    (
        "etcdmon_member_cpu_limit_cores",
        "The member's CPU limit in cores: its cgroup quota, else the node's online cores (see source).",
    ),
    (
        "etcdmon_member_cpu_limit_ratio",
        "Cores used over the CPU limit (cgroup quota, else the node's cores).",
    ),
    (
        "etcdmon_member_memory_limit_bytes",
        "The member's memory limit: its cgroup limit, else the node's MemTotal (see source).",
    ),
    (
        "etcdmon_member_memory_limit_ratio",
        "RSS over the memory limit (cgroup limit, else the node's MemTotal), 0..1.",
    ),
    (
        "etcdmon_member_fs_size_bytes",
        "Size of the filesystem holding the member's data dir.",
    ),
    (
        "etcdmon_member_fs_used_bytes",
        "Used bytes of the filesystem holding the member's data dir (blocks - bfree).",
    ),
    (
        "etcdmon_member_fs_free_bytes",
        "Bytes a non-root process can still write on the member's data-dir filesystem (bavail).",
    ),
    (
        "etcdmon_member_fs_inodes_total",
        "Inodes of the filesystem holding the member's data dir.",
    ),
    (
        "etcdmon_member_fs_inodes_free",
        "Free inodes of the filesystem holding the member's data dir.",
    ),
    (
        "etcdmon_member_open_fds",
        "Open file descriptors of the member's process.",
    ),
];

fn resource_help(name: &str) -> &'static str {
    RESOURCE_HELP
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, h)| h)
}

/// The member's resource figures from its agent's last status, re-exported under the agent's
/// names with `cluster` and `member` labels; a figure the agent could not read is left out.
fn resource_families(f: &mut Families<'_>, r: &MemberResources, labels: &[(&str, &str)]) {
    let mut gauge = |name: &'static str, v: f64| {
        f.value(name, MetricType::GAUGE, resource_help(name), labels, v);
    };
    let source = |cgroup: bool| if cgroup { "cgroup" } else { "node" };
    if r.has_rss {
        gauge("etcd_server_memory_usage_bytes", r.rss_bytes as f64);
    }
    if r.has_fs {
        gauge("etcd_server_disk_usage_bytes", r.fs_used_bytes as f64);
        gauge("etcdmon_member_fs_size_bytes", r.fs_size_bytes as f64);
        gauge("etcdmon_member_fs_used_bytes", r.fs_used_bytes as f64);
        gauge("etcdmon_member_fs_free_bytes", r.fs_free_bytes as f64);
        gauge("etcdmon_member_fs_inodes_total", r.fs_inodes_total as f64);
        gauge("etcdmon_member_fs_inodes_free", r.fs_inodes_free as f64);
    }
    if r.has_client_connections {
        gauge(
            "etcd_server_active_connections",
            r.client_connections as f64,
        );
    }
    if r.has_open_fds {
        gauge("etcdmon_member_open_fds", r.open_fds as f64);
    }
    if r.has_cpu_cores {
        gauge("etcdmon_member_cpu_cores", r.cpu_cores);
        if r.cpu_limit_cores > 0.0 {
            gauge(
                "etcdmon_member_cpu_limit_ratio",
                r.cpu_cores / r.cpu_limit_cores,
            );
        }
    }
    if r.has_rss && r.memory_limit_bytes > 0 {
        gauge(
            "etcdmon_member_memory_limit_ratio",
            r.rss_bytes as f64 / r.memory_limit_bytes as f64,
        );
    }
    let with_source = |cgroup: bool| {
        let mut l = labels.to_vec();
        l.push(("source", source(cgroup)));
        l
    };
    if r.cpu_limit_cores > 0.0 {
        let name = "etcdmon_member_cpu_limit_cores";
        let l = with_source(r.cpu_limit_from_cgroup);
        f.value(
            name,
            MetricType::GAUGE,
            resource_help(name),
            &l,
            r.cpu_limit_cores,
        );
    }
    if r.memory_limit_bytes > 0 {
        let name = "etcdmon_member_memory_limit_bytes";
        let l = with_source(r.memory_limit_from_cgroup);
        let v = r.memory_limit_bytes as f64;
        f.value(name, MetricType::GAUGE, resource_help(name), &l, v);
    }
    let name = "etcdmon_member_cpu_seconds_total";
    f.value(
        name,
        MetricType::COUNTER,
        resource_help(name),
        labels,
        r.cpu_seconds_total,
    );
}

/// The node's memory, once per agent.
fn node_families(f: &mut Families<'_>, node: &NodeResources, name: &str) {
    f.value(
        "etcdmon_node_memory_total_bytes",
        MetricType::GAUGE,
        "The node's memory (/proc/meminfo MemTotal), from its agent.",
        &[("node", name)],
        node.memory_total_bytes as f64,
    );
    f.value(
        "etcdmon_node_memory_available_bytes",
        MetricType::GAUGE,
        "The node's memory available without swapping (/proc/meminfo MemAvailable), from its agent.",
        &[("node", name)],
        node.memory_available_bytes as f64,
    );
}

/// Per agent: drops by stage, the node's memory and the ingest stream's counters.
fn agent_families(f: &mut Families<'_>, pipeline: &Pipeline) {
    for record in pipeline.registry.snapshot() {
        let node = [("node", record.node.as_str())];
        f.value(
            "etcdmon_events_dropped_total",
            MetricType::COUNTER,
            DROP_HELP,
            &[("stage", "grpc"), node[0]],
            record.lost_events as f64,
        );
        if let Some((status, _)) = &record.status
            && let Some(d) = &status.drops
        {
            f.value(
                "etcdmon_events_dropped_total",
                MetricType::COUNTER,
                DROP_HELP,
                &[("stage", "kernel"), node[0]],
                d.kernel_ringbuf.saturating_add(d.kernel_other) as f64,
            );
            f.value(
                "etcdmon_events_dropped_total",
                MetricType::COUNTER,
                DROP_HELP,
                &[("stage", "agent_queue"), node[0]],
                d.agent_queue as f64,
            );
        }
        if let Some((status, _)) = &record.status
            && let Some(n) = status.node.as_ref().filter(|n| n.memory_total_bytes > 0)
        {
            node_families(f, n, record.node.as_str());
        }
        f.value(
            "etcdmon_ingest_agent_connected",
            MetricType::GAUGE,
            "Open Push streams per agent.",
            &node,
            f64::from(record.connected_streams),
        );
        f.value(
            "etcdmon_ingest_rejected_batches_total",
            MetricType::COUNTER,
            "Batches refused as malformed, per agent.",
            &node,
            record.rejected_batches as f64,
        );
        f.value(
            "etcdmon_ingest_duplicate_batches_total",
            MetricType::COUNTER,
            "Batches received twice or out of order (ignored), per agent.",
            &node,
            record.duplicate_batches as f64,
        );
    }
    f.value(
        "etcdmon_events_dropped_total",
        MetricType::COUNTER,
        DROP_HELP,
        &[("stage", "collector"), ("node", "")],
        pipeline.fanout.lagged_total.load(Ordering::Relaxed) as f64,
    );
}

/// The ingest service's own counters and the registry's.
fn ingest_families(f: &mut Families<'_>, pipeline: &Pipeline) {
    let c = &pipeline.counters;
    f.value(
        "etcdmon_ingest_batches_total",
        MetricType::COUNTER,
        "Agent batches accepted.",
        &[],
        c.batches.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_ingest_events_total",
        MetricType::COUNTER,
        "Agent events accepted.",
        &[],
        c.events.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_ingest_unjoined_events_total",
        MetricType::COUNTER,
        "Agent events of etcd processes that are no member of a monitored cluster, kept off the Subscribe stream (counted while anyone subscribes).",
        &[],
        c.unjoined.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_ingest_unauthenticated_total",
        MetricType::COUNTER,
        "gRPC calls refused for missing or wrong credentials.",
        &[],
        c.unauthenticated.load(Ordering::Relaxed) as f64,
    );
    for (reason, n) in c.refused.snapshot() {
        f.value(
            "etcdmon_ingest_refused_total",
            MetricType::COUNTER,
            "Agent batches refused, by reason (malformed, over a limit, conflicting claim, oversized on the wire).",
            &[("reason", reason)],
            n as f64,
        );
    }
}

/// The agent registry's counters.
fn registry_families(f: &mut Families<'_>, pipeline: &Pipeline) {
    let r = &pipeline.registry.counters;
    f.value(
        "etcdmon_agent_conflicts_total",
        MetricType::COUNTER,
        "Batches refused because they claimed an etcd member another live agent reports.",
        &[],
        r.conflicts.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_agents_expired_total",
        MetricType::COUNTER,
        "Agents forgotten after --agent-expiry without a batch.",
        &[],
        r.expired.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_agents",
        MetricType::GAUGE,
        "Agents known (bounded by --max-agents).",
        &[],
        pipeline.registry.len() as f64,
    );
    f.value(
        "etcdmon_agent_sequence_writes_total",
        MetricType::COUNTER,
        "Agent sequence rows written to the store by the writer thread.",
        &[],
        r.writes.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_agent_sequence_writes_dropped_total",
        MetricType::COUNTER,
        "Agent sequence rows dropped because the writer's queue was full (ingest never waits on the store).",
        &[],
        r.writes_dropped.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_agent_sequence_write_errors_total",
        MetricType::COUNTER,
        "Batched agent sequence writes the store refused.",
        &[],
        r.write_errors.load(Ordering::Relaxed) as f64,
    );
}

/// Subscribers and watches.
fn subscriber_and_watch_families(f: &mut Families<'_>, pipeline: &Pipeline) {
    f.value(
        "etcdmon_subscribers_refused_total",
        MetricType::COUNTER,
        "Subscribe calls refused because --max-subscribers streams were open.",
        &[],
        pipeline.fanout.refused.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_subscribers_removed_total",
        MetricType::COUNTER,
        "Subscribers removed after their stream went away.",
        &[],
        pipeline.fanout.removed.load(Ordering::Relaxed) as f64,
    );
    f.value(
        "etcdmon_subscribers",
        MetricType::GAUGE,
        "Open Subscribe streams.",
        &[],
        pipeline.fanout.len() as f64,
    );
    for s in pipeline.fanout.stats() {
        let id = s.id.to_string();
        f.value(
            "etcdmon_subscriber_lagged_events_total",
            MetricType::COUNTER,
            "Events a subscriber missed because it read too slowly.",
            &[("subscriber", id.as_str())],
            s.lagged as f64,
        );
    }
    for ((cluster, prefix), counts) in pipeline.watches.snapshot() {
        let l = [("cluster", cluster.as_str()), ("prefix", prefix.as_str())];
        f.value(
            "etcdmon_watch_events_total",
            MetricType::COUNTER,
            "Watch events per prefix and type.",
            &[l[0], l[1], ("type", "put")],
            counts.puts as f64,
        );
        f.value(
            "etcdmon_watch_events_total",
            MetricType::COUNTER,
            "Watch events per prefix and type.",
            &[l[0], l[1], ("type", "delete")],
            counts.deletes as f64,
        );
        f.value(
            "etcdmon_watch_resumes_total",
            MetricType::COUNTER,
            "Watches resumed after breaking.",
            &l,
            counts.resumes as f64,
        );
        f.value(
            "etcdmon_watch_gaps_total",
            MetricType::COUNTER,
            "Watch resumes that skipped compacted history.",
            &l,
            counts.gaps as f64,
        );
    }
}
