//! The agent's Prometheus registry: kernel-side histograms and counters, drop counters, and
//! the agent's own health.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use etcd_monitor_runtime::sync::lock;

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};

use crate::{mode::AgentMode, stats::OpTotals, tracker::Tracker};

/// Losses counted in user space, exported in `etcdmon_events_dropped_total` next to the
/// kernel's own.
#[derive(Debug, Default)]
pub struct AgentDrops {
    /// Events dropped because the queue to the shipper was full (oldest first).
    pub agent_queue: Arc<AtomicU64>,
    /// Ring-buffer records that did not decode.
    pub decode: AtomicU64,
}

/// Counters and gauges the agent updates as it runs.
pub struct AgentMetrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// Ring-buffer records read, by kind.
    pub events: IntCounterVec,
    /// Syscall events whose fd the kernel could not classify yet.
    pub unknown_fd_events: IntCounter,
    /// /proc rescans done.
    pub rescans: IntCounter,
    /// Processes traced now.
    pub tracked: IntGauge,
    /// 1 for the current mode, 0 for the others.
    pub mode: IntGaugeVec,
    /// Optional probes that failed to attach, by program.
    pub skipped_probes: IntGaugeVec,
    /// Member identity of each traced process.
    pub member_info: IntGaugeVec,
    /// Kernel map operations that failed.
    pub map_errors: IntCounter,
    /// Batches handed to the gRPC stream.
    pub batches_sent: IntCounter,
    /// Events put into batches for the collector (each either arrives or shows as a gap).
    pub events_batched: IntCounter,
    /// Reconnection attempts to the collector.
    pub reconnects: IntCounter,
    /// Streams to collector targets open now.
    pub connected: IntGauge,
    /// Batches waiting in the queue.
    pub queue_batches: IntGauge,
    /// Bytes waiting in the queue.
    pub queue_bytes: IntGauge,
    /// User-space drop counters.
    pub drops: Arc<AgentDrops>,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are static and unique in this module, so registration cannot collide.
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "Metric registration failed.");
    }
    c
}

/// (name, help) of the plain self-counters, in [`AgentMetrics::new`]'s order.
const COUNTERS: [(&str, &str); 6] = [
    (
        "etcdmon_agent_unknown_fd_events_total",
        "Syscall events on fds the kernel had not classified yet.",
    ),
    (
        "etcdmon_agent_rescans_total",
        "Scans of /proc for etcd processes.",
    ),
    (
        "etcdmon_agent_map_errors_total",
        "Failed eBPF map operations.",
    ),
    (
        "etcdmon_agent_batches_sent_total",
        "Event batches handed to the gRPC stream to the collector.",
    ),
    (
        "etcdmon_agent_events_batched_total",
        "Events put into batches for the collector; each arrives or is counted there as lost.",
    ),
    (
        "etcdmon_agent_reconnects_total",
        "Reconnection attempts to the collector.",
    ),
];

/// (name, help) of the plain self-gauges, in [`AgentMetrics::new`]'s order.
const GAUGES: [(&str, &str); 4] = [
    (
        "etcdmon_agent_tracked_processes",
        "etcd processes traced now.",
    ),
    (
        "etcdmon_agent_collector_connected",
        "Streams to collectors open now (1 with a single collector).",
    ),
    (
        "etcdmon_agent_queue_batches",
        "Batches waiting for the collector.",
    ),
    (
        "etcdmon_agent_queue_bytes",
        "Encoded bytes waiting for the collector.",
    ),
];

fn int_counters<const N: usize>(
    r: &Registry,
    specs: [(&str, &str); N],
) -> Result<[IntCounter; N], prometheus::Error> {
    let mut out = Vec::with_capacity(N);
    for (name, help) in specs {
        out.push(register(r, IntCounter::new(name, help)?));
    }
    out.try_into()
        .map_err(|_| prometheus::Error::Msg("counter count".to_string()))
}

fn int_gauges<const N: usize>(
    r: &Registry,
    specs: [(&str, &str); N],
) -> Result<[IntGauge; N], prometheus::Error> {
    let mut out = Vec::with_capacity(N);
    for (name, help) in specs {
        out.push(register(r, IntGauge::new(name, help)?));
    }
    out.try_into()
        .map_err(|_| prometheus::Error::Msg("gauge count".to_string()))
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    Ok(register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels)?,
    ))
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    Ok(register(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels)?,
    ))
}

impl AgentMetrics {
    /// Creates the registry with every self-metric and the kernel collector over `tracker`.
    pub fn new(tracker: Arc<Mutex<Tracker>>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let drops = Arc::new(AgentDrops::default());
        registry.register(Box::new(KernelCollector::new(tracker, drops.clone())?))?;
        let r = &registry;
        let [
            unknown_fd_events,
            rescans,
            map_errors,
            batches_sent,
            events_batched,
            reconnects,
        ] = int_counters(r, COUNTERS)?;
        let [tracked, connected, queue_batches, queue_bytes] = int_gauges(r, GAUGES)?;
        Ok(Self {
            events: counter_vec(
                r,
                "etcdmon_agent_events_total",
                "Ring-buffer records read, by kind.",
                &["kind"],
            )?,
            mode: gauge_vec(
                r,
                "etcdmon_agent_mode",
                "1 for the agent's current mode (ebpf, ebpf-partial, client-only).",
                &["mode"],
            )?,
            skipped_probes: gauge_vec(
                r,
                "etcdmon_agent_probe_skipped",
                "1 for each optional probe that failed to attach.",
                &["program"],
            )?,
            member_info: gauge_vec(
                r,
                "etcdmon_agent_member_info",
                "Identity of each traced etcd process.",
                &["member", "pid", "data_dir", "client_url", "peer_url"],
            )?,
            unknown_fd_events,
            rescans,
            tracked,
            map_errors,
            batches_sent,
            events_batched,
            reconnects,
            connected,
            queue_batches,
            queue_bytes,
            drops,
            registry,
        })
    }

    /// Sets the mode gauge.
    pub fn set_mode(&self, current: AgentMode) {
        for mode in AgentMode::ALL {
            self.mode
                .with_label_values(&[mode.label()])
                .set(i64::from(mode == current));
        }
    }

    /// Adds `etcdmon_probe_run_seconds_total` / `etcdmon_probe_runs_total` read from `source`
    /// at scrape time (the loaded programs' kernel statistics).
    pub fn register_probe_runs(&self, source: crate::probes::runs::RunSource) {
        let registered = crate::probes::runs::ProbeRunCollector::new(source)
            .and_then(|collector| self.registry.register(Box::new(collector)));
        if let Err(e) = registered {
            tracing::error!(error = %e, "Metric registration failed.");
        }
    }

    /// Adds the per-member resource series (and the node's memory), read at scrape time from
    /// the latest sample in `source`.
    pub fn register_resources(&self, source: crate::resources::SharedResources) {
        let registered = ResourceCollector::new(source)
            .and_then(|collector| self.registry.register(Box::new(collector)));
        if let Err(e) = registered {
            tracing::error!(error = %e, "Metric registration failed.");
        }
    }

    /// Text exposition of everything.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Builds the kernel-side families at scrape time from the tracker's exact counters.
struct KernelCollector {
    tracker: Arc<Mutex<Tracker>>,
    drops: Arc<AgentDrops>,
    descs: Vec<Desc>,
}

const FSYNC: &str = "etcdmon_fsync_duration_seconds";
const WRITE: &str = "etcdmon_write_duration_seconds";
const BYTES: &str = "etcdmon_write_bytes_total";
const ERRORS: &str = "etcdmon_syscall_errors_total";
const DROPPED: &str = "etcdmon_events_dropped_total";
const PEER_RTT: &str = "etcdmon_peer_rtt_seconds";
const PEER_RETRANS: &str = "etcdmon_peer_retransmits_total";
const PEER_BYTES: &str = "etcdmon_peer_bytes_total";
const CLIENT_CONNS: &str = "etcdmon_client_connections";
const CLIENT_OPENED: &str = "etcdmon_client_connections_opened_total";
const CLIENT_CLOSED: &str = "etcdmon_client_connections_closed_total";
const NETNS_REFUSED: &str = "etcdmon_netns_refused_total";
const RECEIVE: &str = "etcdmon_receive_duration_seconds";
const RECEIVED: &str = "etcdmon_received_bytes_total";
const PEER_SYSCALL_BYTES: &str = "etcdmon_peer_syscall_bytes_total";
const BLOCK_SERVICE: &str = "etcdmon_block_service_seconds";
const RUNQ: &str = "etcdmon_runqueue_latency_seconds";
const THROTTLED_PERIODS: &str = "etcdmon_cpu_throttled_periods_total";
const CPU_PERIODS: &str = "etcdmon_cpu_periods_total";
const THROTTLED_SECONDS: &str = "etcdmon_cpu_throttled_seconds_total";

const HELP: [(&str, &str); 20] = [
    (
        RECEIVE,
        "Kernel-measured duration of etcd's read/readv/recvfrom/recvmsg calls on sockets, by member, socket class and op.",
    ),
    (
        RECEIVED,
        "Bytes etcd received on its sockets (client, peer), by member, socket class and op.",
    ),
    (
        PEER_SYSCALL_BYTES,
        "Bytes a member's send (write/writev) and receive (read/readv/recvfrom/recvmsg) syscalls moved on peer sockets, by peer.",
    ),
    (
        BLOCK_SERVICE,
        "Request service time (block_rq_issue to block_rq_complete) of the device under the member's data dir.",
    ),
    (
        RUNQ,
        "Time the member's runnable threads waited for a CPU (sched_wakeup or preemption to sched_switch).",
    ),
    (
        THROTTLED_PERIODS,
        "CFS bandwidth periods in which the member's cgroup was throttled (cpu.stat nr_throttled).",
    ),
    (
        CPU_PERIODS,
        "CFS bandwidth periods of the member's cgroup (cpu.stat nr_periods).",
    ),
    (
        THROTTLED_SECONDS,
        "Time the member's cgroup was throttled by its CPU quota (cpu.stat throttled time).",
    ),
    (
        PEER_RTT,
        "Kernel smoothed RTT (tcp_probe srtt) to each peer member, highest over the pair's open connections.",
    ),
    (
        PEER_RETRANS,
        "TCP segments retransmitted on connections between a member and a peer.",
    ),
    (
        PEER_BYTES,
        "Bytes between a member and a peer: received (payload) or sent (acknowledged by the peer).",
    ),
    (
        CLIENT_CONNS,
        "Established client connections on the member's client ports.",
    ),
    (
        CLIENT_OPENED,
        "Client connections established since the agent started.",
    ),
    (
        CLIENT_CLOSED,
        "Client connections that ended since the agent started.",
    ),
    (
        NETNS_REFUSED,
        "Network namespaces of traced members whose TCP tables were not read (over the per-refresh bound), summed over refreshes.",
    ),
    (
        FSYNC,
        "Kernel-measured duration of etcd's fdatasync/fsync/sync_file_range calls, by member, file class and op.",
    ),
    (
        WRITE,
        "Kernel-measured duration of etcd's write/pwrite64/writev/pwritev calls, by member, file class and op.",
    ),
    (
        BYTES,
        "Bytes etcd wrote (or asked to sync), by member, file class and op.",
    ),
    (
        ERRORS,
        "Traced syscalls that returned an error, by member, file class and op.",
    ),
    (
        DROPPED,
        "Events lost, by pipeline stage and reason; the in-kernel histograms still count every call.",
    ),
];

impl KernelCollector {
    fn new(
        tracker: Arc<Mutex<Tracker>>,
        drops: Arc<AgentDrops>,
    ) -> Result<Self, prometheus::Error> {
        let mut descs = Vec::new();
        for (name, help) in HELP {
            let labels: Vec<String> = match name {
                DROPPED => vec!["stage".into(), "reason".into()],
                PEER_RTT | PEER_RETRANS => vec!["member".into(), "peer".into()],
                PEER_BYTES | PEER_SYSCALL_BYTES => {
                    vec!["member".into(), "peer".into(), "direction".into()]
                }
                CLIENT_CONNS | CLIENT_OPENED | CLIENT_CLOSED | RUNQ | THROTTLED_PERIODS
                | CPU_PERIODS | THROTTLED_SECONDS => vec!["member".into()],
                BLOCK_SERVICE => vec!["member".into(), "device".into()],
                _ => vec!["member".into(), "file".into(), "op".into()],
            };
            descs.push(Desc::new(name.into(), help.into(), labels, HashMap::new())?);
        }
        Ok(Self {
            tracker,
            drops,
            descs,
        })
    }
}

/// Label pairs sorted by name, as the registry's own metrics are.
fn labels(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    let mut pairs = pairs.to_vec();
    pairs.sort_unstable_by_key(|(k, _)| *k);
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = proto::LabelPair::default();
            l.set_name((*k).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

fn family(name: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(
        HELP.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h.to_string())
            .unwrap_or_default(),
    );
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

/// A counter with a fractional value (seconds).
fn gauge_counter(pairs: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

/// A Prometheus histogram (seconds) from log2 nanosecond slots, with the bucket layout of the
/// shared histogram model (`Log2Slots::exposition_buckets`), the same the collector re-exports.
pub fn histogram(totals: &OpTotals) -> proto::Histogram {
    let slots = totals.log2();
    let mut h = proto::Histogram::default();
    h.set_sample_count(slots.slot_total());
    h.set_sample_sum(totals.sum_ns as f64 / 1e9);
    let buckets = slots
        .exposition_buckets()
        .into_iter()
        .map(|(le, cumulative)| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(le);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    h.set_bucket(buckets);
    h
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (snapshot, kernel_drops, net, diag) = {
            let mut tracker = lock(&self.tracker);
            (
                tracker.snapshot().unwrap_or_default(),
                tracker.kernel_drops().unwrap_or_default(),
                tracker.net_snapshot().unwrap_or_default(),
                tracker.diag_snapshot(false).unwrap_or_default(),
            )
        };
        let mut families = syscall_families(&snapshot);
        families.push(self.dropped(&kernel_drops));
        families.extend(net_families(&net));
        families.extend(diag_families(&diag));
        families
    }
}

impl KernelCollector {
    /// `etcdmon_events_dropped_total`: the kernel's and the agent's own drops.
    fn dropped(&self, kernel_drops: &crate::kernel::KernelDrops) -> MetricFamily {
        let d = &self.drops;
        let dropped = vec![
            counter(
                &[("stage", "kernel"), ("reason", "ringbuf_full")],
                kernel_drops.ringbuf_syscall + kernel_drops.ringbuf_process,
            ),
            counter(
                &[("stage", "kernel"), ("reason", "start_map_full")],
                kernel_drops.start_map,
            ),
            counter(
                &[("stage", "kernel"), ("reason", "stats_map_full")],
                kernel_drops.stats_map,
            ),
            counter(
                &[("stage", "agent_queue"), ("reason", "queue_full")],
                d.agent_queue.load(Ordering::Relaxed),
            ),
            counter(
                &[("stage", "agent_queue"), ("reason", "undecodable")],
                d.decode.load(Ordering::Relaxed),
            ),
        ];
        family(DROPPED, MetricType::COUNTER, dropped)
    }
}

/// Per (member, op, file): the syscall histograms, bytes and errors.
fn syscall_families(snapshot: &crate::stats::Snapshot) -> Vec<MetricFamily> {
    let (mut fsync, mut write, mut bytes, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut receive, mut received) = (Vec::new(), Vec::new());
    for (member, ops) in snapshot {
        for ((op, class), totals) in ops {
            let pairs = [
                ("member", member.as_str()),
                ("file", class.name()),
                ("op", op.name()),
            ];
            let mut m = proto::Metric::from_label(labels(&pairs));
            m.set_histogram(histogram(totals));
            if op.is_receive() {
                receive.push(m);
                received.push(counter(&pairs, totals.bytes));
                errors.push(counter(&pairs, totals.errors));
                continue;
            }
            if op.is_sync() {
                fsync.push(m)
            } else {
                write.push(m)
            }
            bytes.push(counter(&pairs, totals.bytes));
            errors.push(counter(&pairs, totals.errors));
        }
    }
    vec![
        family(RECEIVE, MetricType::HISTOGRAM, receive),
        family(RECEIVED, MetricType::COUNTER, received),
        family(FSYNC, MetricType::HISTOGRAM, fsync),
        family(WRITE, MetricType::HISTOGRAM, write),
        family(BYTES, MetricType::COUNTER, bytes),
        family(ERRORS, MetricType::COUNTER, errors),
    ]
}

/// Per (member, peer) and per member: TCP figures, syscall bytes and client connections.
fn net_families(net: &crate::net::NetSnapshot) -> Vec<MetricFamily> {
    let (mut rtt, mut retrans, mut peer_bytes) = (Vec::new(), Vec::new(), Vec::new());
    for ((member, peer), t) in &net.peers {
        let pair = [("member", member.as_str()), ("peer", peer.as_str())];
        if t.srtt_us > 0 {
            rtt.push(gauge(&pair, f64::from(t.srtt_us) / 1e6));
        }
        retrans.push(counter(&pair, t.retransmits));
        peer_bytes.push(counter(
            &[pair[0], pair[1], ("direction", "received")],
            t.rx_bytes,
        ));
        peer_bytes.push(counter(
            &[pair[0], pair[1], ("direction", "sent")],
            t.tx_bytes,
        ));
    }
    let (mut open, mut opened, mut closed) = (Vec::new(), Vec::new(), Vec::new());
    for (member, c) in &net.clients {
        let m = [("member", member.as_str())];
        open.push(gauge(&m, c.open as f64));
        opened.push(counter(&m, c.opened));
        closed.push(counter(&m, c.closed));
    }
    let mut peer_syscall = Vec::new();
    for ((member, peer), b) in &net.syscall {
        let pair = [("member", member.as_str()), ("peer", peer.as_str())];
        peer_syscall.push(counter(
            &[pair[0], pair[1], ("direction", "received")],
            b.received,
        ));
        peer_syscall.push(counter(&[pair[0], pair[1], ("direction", "sent")], b.sent));
    }
    vec![
        family(PEER_SYSCALL_BYTES, MetricType::COUNTER, peer_syscall),
        family(PEER_RTT, MetricType::GAUGE, rtt),
        family(PEER_RETRANS, MetricType::COUNTER, retrans),
        family(PEER_BYTES, MetricType::COUNTER, peer_bytes),
        family(CLIENT_CONNS, MetricType::GAUGE, open),
        family(CLIENT_OPENED, MetricType::COUNTER, opened),
        family(CLIENT_CLOSED, MetricType::COUNTER, closed),
        family(
            NETNS_REFUSED,
            MetricType::COUNTER,
            vec![counter(&[], net.netns_refused)],
        ),
    ]
}

/// Per device and per member: block service time, run-queue latency and CFS throttling.
fn diag_families(diag: &crate::diag::DiagSnapshot) -> Vec<MetricFamily> {
    let mut block = Vec::new();
    for d in &diag.devices {
        for member in &d.members {
            let mut m = proto::Metric::from_label(labels(&[
                ("member", member.as_str()),
                ("device", d.device.name.as_str()),
            ]));
            m.set_histogram(histogram(&d.service));
            block.push(m);
        }
    }
    let (mut runq, mut throttled, mut periods, mut throttled_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in &diag.sched {
        let m = [("member", s.member.as_str())];
        let mut h = proto::Metric::from_label(labels(&m));
        h.set_histogram(histogram(&s.runq));
        runq.push(h);
        if let Some(t) = s.throttle {
            throttled.push(counter(&m, t.nr_throttled));
            periods.push(counter(&m, t.nr_periods));
            throttled_s.push(gauge_counter(&m, t.throttled_ns as f64 / 1e9));
        }
    }
    vec![
        family(BLOCK_SERVICE, MetricType::HISTOGRAM, block),
        family(RUNQ, MetricType::HISTOGRAM, runq),
        family(THROTTLED_PERIODS, MetricType::COUNTER, throttled),
        family(CPU_PERIODS, MetricType::COUNTER, periods),
        family(THROTTLED_SECONDS, MetricType::COUNTER, throttled_s),
    ]
}

/// The resource series: one gauge family per figure, from the sampler's latest snapshot.
struct ResourceCollector {
    source: crate::resources::SharedResources,
    descs: Vec<Desc>,
}

const READ_FAILURES: &str = "etcdmon_agent_resource_read_failures_total";
const CGROUP_IO_LIMIT: &str = "etcdmon_member_cgroup_io_limit";
const CGROUP_IO_IOS: &str = "etcdmon_member_cgroup_io_serviced_total";
const CGROUP_IO_BYTES: &str = "etcdmon_member_cgroup_io_serviced_bytes_total";
const PRESSURE: &str = "etcdmon_member_pressure_stall_seconds_total";

/// (name, help, per member) of every resource family, in exposition order.
const RESOURCE_FAMILIES: [(&str, &str, bool); 22] = [
    (
        "etcd_server_memory_usage_bytes",
        "Resident set size (VmRSS) of the member's process.",
        true,
    ),
    (
        "etcd_server_disk_usage_bytes",
        "Used bytes of the filesystem holding the member's data dir (statvfs, as df counts them).",
        true,
    ),
    (
        "etcd_server_active_connections",
        "ESTABLISHED TCP connections the member's process holds on its client listen ports (kernel socket table).",
        true,
    ),
    (
        "etcdmon_member_cpu_seconds_total",
        "CPU time (user + system) the member's process used since it started.",
        true,
    ),
    (
        "etcdmon_member_cpu_cores",
        "Cores the member's process used on average over the agent's last resource interval.",
        true,
    ),
    (
        "etcdmon_member_cpu_limit_cores",
        "The member's CPU limit in cores: its cgroup quota, else the node's online cores (see source).",
        true,
    ),
    (
        "etcdmon_member_cpu_limit_ratio",
        "Cores used over the CPU limit (cgroup quota, else the node's cores), 0..1 (can exceed 1 briefly).",
        true,
    ),
    (
        "etcdmon_member_memory_limit_bytes",
        "The member's memory limit: its cgroup limit, else the node's MemTotal (see source).",
        true,
    ),
    (
        "etcdmon_member_memory_limit_ratio",
        "RSS over the memory limit (cgroup limit, else the node's MemTotal), 0..1.",
        true,
    ),
    (
        "etcdmon_member_fs_size_bytes",
        "Size of the filesystem holding the member's data dir.",
        true,
    ),
    (
        "etcdmon_member_fs_used_bytes",
        "Used bytes of the filesystem holding the member's data dir (blocks - bfree).",
        true,
    ),
    (
        "etcdmon_member_fs_free_bytes",
        "Bytes a non-root process can still write on the member's data-dir filesystem (bavail).",
        true,
    ),
    (
        "etcdmon_member_fs_inodes_total",
        "Inodes of the filesystem holding the member's data dir.",
        true,
    ),
    (
        "etcdmon_member_fs_inodes_free",
        "Free inodes of the filesystem holding the member's data dir.",
        true,
    ),
    (
        "etcdmon_member_open_fds",
        "Open file descriptors of the member's process.",
        true,
    ),
    (
        CGROUP_IO_LIMIT,
        "A limit the member's I/O cgroup (v1 blkio throttle or v2 io.max, its own or the innermost ancestor's that sets one) puts on a device, by kind: read_bps, write_bps, read_iops, write_iops.",
        true,
    ),
    (
        CGROUP_IO_IOS,
        "I/O requests the member's I/O cgroup got serviced on a device (v1 blkio.throttle.io_serviced, v2 io.stat), by direction.",
        true,
    ),
    (
        CGROUP_IO_BYTES,
        "Bytes the member's I/O cgroup got serviced on a device (v1 blkio.throttle.io_service_bytes, v2 io.stat), by direction.",
        true,
    ),
    (
        PRESSURE,
        "Pressure stall time (PSI total) by resource (cpu, io) and kind (some, full); source cgroup is the member's own v2 cgroup, system the node's /proc/pressure.",
        true,
    ),
    (
        READ_FAILURES,
        "Resource reads that failed (the figure is left out, not reported as zero), by figure: meminfo, process, cgroup, rss, fs, fds, cgroup_io.",
        false,
    ),
    (
        "etcdmon_node_memory_total_bytes",
        "The node's memory (/proc/meminfo MemTotal).",
        false,
    ),
    (
        "etcdmon_node_memory_available_bytes",
        "The node's memory available without swapping (/proc/meminfo MemAvailable).",
        false,
    ),
];

impl ResourceCollector {
    fn new(source: crate::resources::SharedResources) -> Result<Self, prometheus::Error> {
        let mut descs = Vec::new();
        for (name, help, per_member) in RESOURCE_FAMILIES {
            let labels = match (per_member, name) {
                (false, READ_FAILURES) => vec!["figure".to_string()],
                (false, _) => Vec::new(),
                (true, "etcdmon_member_cpu_limit_cores" | "etcdmon_member_memory_limit_bytes") => {
                    vec!["member".to_string(), "source".to_string()]
                }
                (true, CGROUP_IO_LIMIT) => ["member", "cgroup", "device", "kind"]
                    .map(String::from)
                    .to_vec(),
                (true, CGROUP_IO_IOS | CGROUP_IO_BYTES) => {
                    ["member", "cgroup", "device", "direction"]
                        .map(String::from)
                        .to_vec()
                }
                (true, PRESSURE) => ["member", "resource", "kind", "source"]
                    .map(String::from)
                    .to_vec(),
                (true, _) => vec!["member".to_string()],
            };
            descs.push(Desc::new(name.into(), help.into(), labels, HashMap::new())?);
        }
        Ok(Self { source, descs })
    }
}

impl Collector for ResourceCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = lock(&self.source).clone();
        let mut by_name: HashMap<&str, Vec<proto::Metric>> = HashMap::new();
        let mut put =
            |name: &'static str, m: proto::Metric| by_name.entry(name).or_default().push(m);
        for r in &snapshot.members {
            member_resource_series(r, &mut put);
            if let Some(io) = &r.cgroup_io {
                cgroup_io_series(&r.member, io, &mut put);
            }
        }
        if let Some(node) = snapshot.node_memory {
            put(
                "etcdmon_node_memory_total_bytes",
                gauge(&[], node.total_bytes as f64),
            );
            put(
                "etcdmon_node_memory_available_bytes",
                gauge(&[], node.available_bytes as f64),
            );
        }
        for (figure, count) in &snapshot.read_failures {
            put(READ_FAILURES, counter(&[("figure", figure)], *count));
        }
        RESOURCE_FAMILIES
            .iter()
            .filter_map(|(name, help, _)| {
                let metrics = by_name.remove(name)?;
                let mut f = MetricFamily::default();
                f.set_name((*name).to_string());
                f.set_help((*help).to_string());
                let counter = name.ends_with("_seconds_total")
                    || [READ_FAILURES, CGROUP_IO_IOS, CGROUP_IO_BYTES].contains(name);
                f.set_field_type(if counter {
                    MetricType::COUNTER
                } else {
                    MetricType::GAUGE
                });
                f.set_metric(metrics);
                Some(f)
            })
            .collect()
    }
}

/// The per-member figures of one resource sample (unknown ones left out).
fn member_resource_series(
    r: &crate::resources::MemberResources,
    put: &mut impl FnMut(&'static str, proto::Metric),
) {
    let member = [("member", r.member.as_str())];
    let source = |cgroup: bool| if cgroup { "cgroup" } else { "node" };
    put(
        "etcdmon_member_cpu_seconds_total",
        gauge_counter(&member, r.cpu_seconds_total),
    );
    if let Some(cores) = r.cpu_cores {
        put("etcdmon_member_cpu_cores", gauge(&member, cores));
    }
    put(
        "etcdmon_member_cpu_limit_cores",
        gauge(
            &[member[0], ("source", source(r.cpu_limit.from_cgroup))],
            r.cpu_limit.value,
        ),
    );
    if let Some(ratio) = r.cpu_limit_ratio() {
        put("etcdmon_member_cpu_limit_ratio", gauge(&member, ratio));
    }
    if let Some(rss) = r.rss_bytes {
        put("etcd_server_memory_usage_bytes", gauge(&member, rss as f64));
    }
    if let Some(limit) = r.memory_limit {
        let labels = [member[0], ("source", source(limit.from_cgroup))];
        put(
            "etcdmon_member_memory_limit_bytes",
            gauge(&labels, limit.value),
        );
    }
    if let Some(ratio) = r.memory_limit_ratio() {
        put("etcdmon_member_memory_limit_ratio", gauge(&member, ratio));
    }
    if let Some(fs) = r.fs {
        for (name, value) in [
            ("etcd_server_disk_usage_bytes", fs.used_bytes),
            ("etcdmon_member_fs_size_bytes", fs.size_bytes),
            ("etcdmon_member_fs_used_bytes", fs.used_bytes),
            ("etcdmon_member_fs_free_bytes", fs.free_bytes),
            ("etcdmon_member_fs_inodes_total", fs.inodes_total),
            ("etcdmon_member_fs_inodes_free", fs.inodes_free),
        ] {
            put(name, gauge(&member, value as f64));
        }
    }
    if let Some(fds) = r.open_fds {
        put("etcdmon_member_open_fds", gauge(&member, fds as f64));
    }
    if let Some(conns) = r.client_connections {
        put(
            "etcd_server_active_connections",
            gauge(&member, conns as f64),
        );
    }
}

/// A member's I/O cgroup limits and counters, and its PSI.
fn cgroup_io_series(
    member: &str,
    io: &crate::cgroup_io::CgroupIo,
    put: &mut impl FnMut(&'static str, proto::Metric),
) {
    for d in &io.devices {
        let at = [
            ("member", member),
            ("cgroup", io.cgroup.as_str()),
            ("device", d.device.as_str()),
        ];
        let l = d.limits;
        for (kind, limit) in [
            ("read_bps", l.read_bps),
            ("write_bps", l.write_bps),
            ("read_iops", l.read_iops),
            ("write_iops", l.write_iops),
        ] {
            if let Some(limit) = limit {
                let labels = [at[0], at[1], at[2], ("kind", kind)];
                put(CGROUP_IO_LIMIT, gauge(&labels, limit as f64));
            }
        }
        let c = d.counters;
        for (direction, ios, bytes) in [
            ("read", c.read_ios, c.read_bytes),
            ("write", c.write_ios, c.write_bytes),
        ] {
            let labels = [at[0], at[1], at[2], ("direction", direction)];
            put(CGROUP_IO_IOS, counter(&labels, ios));
            put(CGROUP_IO_BYTES, counter(&labels, bytes));
        }
    }
    let Some(source) = io.pressure_source.map(|s| s.label()) else {
        return;
    };
    for (resource, p) in [("io", io.io_pressure), ("cpu", io.cpu_pressure)] {
        let Some(p) = p else { continue };
        for (kind, us) in [("some", Some(p.some_us)), ("full", p.full_us)] {
            if let Some(us) = us {
                let labels = [
                    ("member", member),
                    ("resource", resource),
                    ("kind", kind),
                    ("source", source),
                ];
                put(PRESSURE, gauge_counter(&labels, us as f64 / 1e6));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_series_escape_member_names_and_skip_unknown_figures() {
        use crate::resources::{FsUsage, Limit, MemberResources, NodeMemory, ResourceSnapshot};
        let member = |name: &str, cores: Option<f64>| MemberResources {
            member: name.to_string(),
            pid: 1,
            cpu_seconds_total: 12.5,
            cpu_cores: cores,
            cpu_limit: Limit {
                value: 0.5,
                from_cgroup: true,
            },
            rss_bytes: Some(100),
            memory_limit: Some(Limit {
                value: 400.0,
                from_cgroup: false,
            }),
            fs: Some(FsUsage {
                size_bytes: 1000,
                used_bytes: 850,
                free_bytes: 100,
                inodes_total: 64,
                inodes_free: 60,
            }),
            open_fds: Some(7),
            client_connections: None,
            state: Some('S'),
            cgroup_io: Some(crate::cgroup_io::CgroupIo {
                cgroup: "/slow".into(),
                v2: false,
                devices: vec![crate::cgroup_io::DeviceIo {
                    device: "7:3".into(),
                    limits: crate::cgroup_io::IoLimits {
                        write_iops: Some(20),
                        ..Default::default()
                    },
                    counters: crate::cgroup_io::IoCounters {
                        write_ios: 40,
                        ..Default::default()
                    },
                }],
                pressure_source: Some(crate::cgroup_io::PressureSource::System),
                io_pressure: Some(crate::cgroup_io::Pressure {
                    some_us: 2_500_000,
                    full_us: None,
                }),
                cpu_pressure: None,
            }),
            sampled_at_ms: 1,
        };
        let shared = crate::resources::SharedResources::default();
        *shared.lock().expect("lock") = ResourceSnapshot {
            node_memory: Some(NodeMemory {
                total_bytes: 4096,
                available_bytes: 1024,
            }),
            node_cpus: 2,
            members: vec![member("we\"ird\\name\n", Some(0.25)), member("fresh", None)],
            read_failures: [("fs", 3)].into_iter().collect(),
        };
        let registry = Registry::new();
        registry
            .register(Box::new(ResourceCollector::new(shared).expect("collector")))
            .expect("register");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode");
        let weird = r#"member="we\"ird\\name\n""#;
        for line in [
            format!("etcdmon_member_cpu_limit_ratio{{{weird}}} 0.5"),
            format!("etcdmon_member_cpu_limit_cores{{{weird},source=\"cgroup\"}} 0.5"),
            format!("etcdmon_member_memory_limit_ratio{{{weird}}} 0.25"),
            format!("etcdmon_member_memory_limit_bytes{{{weird},source=\"node\"}} 400"),
            format!("etcd_server_memory_usage_bytes{{{weird}}} 100"),
            format!("etcd_server_disk_usage_bytes{{{weird}}} 850"),
            format!("etcdmon_member_fs_free_bytes{{{weird}}} 100"),
            format!("etcdmon_member_open_fds{{{weird}}} 7"),
            format!("etcdmon_member_cpu_seconds_total{{{weird}}} 12.5"),
            "etcdmon_node_memory_total_bytes 4096".to_string(),
            "etcdmon_agent_resource_read_failures_total{figure=\"fs\"} 3".to_string(),
            "# TYPE etcdmon_agent_resource_read_failures_total counter".to_string(),
            "etcdmon_node_memory_available_bytes 1024".to_string(),
            "# TYPE etcdmon_member_cpu_seconds_total counter".to_string(),
            "# TYPE etcdmon_member_fs_inodes_total gauge".to_string(),
            r#"etcdmon_member_cgroup_io_limit{cgroup="/slow",device="7:3",kind="write_iops",member="fresh"} 20"#.to_string(),
            r#"etcdmon_member_cgroup_io_serviced_total{cgroup="/slow",device="7:3",direction="write",member="fresh"} 40"#.to_string(),
            r#"etcdmon_member_pressure_stall_seconds_total{kind="some",member="fresh",resource="io",source="system"} 2.5"#.to_string(),
            "# TYPE etcdmon_member_cgroup_io_limit gauge".to_string(),
            "# TYPE etcdmon_member_pressure_stall_seconds_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // No rate yet: no cores and no ratio for that member, rather than a made-up zero.
        assert!(!text.contains(r#"etcdmon_member_cpu_cores{member="fresh"}"#));
        assert!(!text.contains(r#"etcdmon_member_cpu_limit_ratio{member="fresh"}"#));
        assert!(
            !text.contains("etcd_server_active_connections"),
            "unknown, not 0"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_seconds() {
        let mut totals = OpTotals::default();
        totals.slots[3] = 2; // folds into the first bucket
        totals.slots[20] = 5; // [2^20, 2^21) ns ≈ 1-2 ms
        totals.slots[39] = 1; // beyond the last bucket: only in +Inf (the count)
        totals.sum_ns = 10_000_000;
        let h = histogram(&totals);
        assert_eq!(h.get_sample_count(), 8);
        assert!((h.get_sample_sum() - 0.01).abs() < 1e-12);
        let buckets = h.get_bucket();
        assert_eq!(
            buckets.len(),
            etcd_monitor_histogram::EXPOSED_LAST_SLOT - etcd_monitor_histogram::EXPOSED_FIRST_SLOT
                + 1
        );
        assert_eq!(buckets[0].cumulative_count(), 2);
        assert!((buckets[0].upper_bound() - 1.024e-6).abs() < 1e-15);
        let ms2 = buckets
            .iter()
            .find(|b| (b.upper_bound() - (1u64 << 21) as f64 / 1e9).abs() < 1e-12)
            .expect("2ms bucket");
        assert_eq!(ms2.cumulative_count(), 7);
        assert_eq!(buckets.last().map(|b| b.cumulative_count()), Some(7));
    }
}
