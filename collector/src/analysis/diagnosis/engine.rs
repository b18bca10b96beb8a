//! The verdict: given the first and last sample of a window, decompose a slow WAL sync into
//! etcd-observed time (server histogram), syscall time (kernel fdatasync), device service time
//! and scheduling delay, and name the cause. Two phases: [`findings`] reads one member's
//! window and [`own_verdict`] judges it alone (what [`diagnose`] returns); [`resolve`] then
//! looks across the members of a cluster, so a member whose peer is itself unwell blames that
//! peer, not the network.
//!
//! Phase 1, one member, in this order:
//! 1. the agent reports the process stopped (`T`, SIGSTOP) → `stopped`;
//! 2. the WAL sync is slow (etcd's or the kernel's `quantile` — p99 by default — above
//!    `slow_fsync_ms`):
//!    - no agent → `inconclusive` (kernel evidence missing);
//!    - the member's I/O cgroup is serviced at `io_limit_ratio` of a limit (v1 blkio throttle,
//!      v2 `io.max`) on its data dir's device, or has such a limit and its own cgroup's I/O
//!      PSI is above `pressure_share` → `io_throttled{cgroup}`;
//!    - the device under the data dir is slow (mean request service time above
//!      `slow_device_ms`) → `noisy_neighbor` when other processes issued more than
//!      `neighbor_share` of its I/O (named: the one with the most bios), else `disk_slow`;
//!    - its cgroup was throttled in more than `throttle_ratio` of its CFS periods →
//!      `cpu_starved{throttled}`; its threads' run-queue p99 above `runq_ms` →
//!      `cpu_starved{runqueue}`; its own cgroup's CPU PSI above `pressure_share` →
//!      `cpu_starved{pressure}`;
//!    - otherwise `inconclusive`, saying which evidence is missing or that none explains it;
//! 3. the WAL sync is fast but its kernel-timed WAL `write()`s at the quantile are above
//!    `slow_fsync_ms` → `cpu_starved` or `io_throttled` when those explain it, else
//!    `wal_write_slow` (etcd-io/etcd#17615);
//! 4. its peers look slow (RTT above `peer_rtt_ms` or more than `peer_retransmits`
//!    retransmits) or the collector cannot reach it, and it is starved of CPU itself →
//!    `cpu_starved`; unreachable → `unreachable`; slow peers → `peer_network_slow{peer}`;
//!    else `healthy`.
//!
//! Phase 2, across the cluster ([`resolve`]): a member judged `healthy`, `inconclusive` or
//! `peer_network_slow` whose peer looks slow ([`symptomatic_peers`]: a lower bar than phase
//! 1's) and is itself unwell (its own verdict is a fault, or its cgroup's CFS throttling or
//! PSI, or its I/O cgroup at its limit: [`Findings::condition`]) → `peer_unhealthy{peer, peer_cause}`;
//! and a follower judged `inconclusive` or `peer_network_slow` — or `healthy`, when the leader's
//! own verdict is a fault — while the leader is unwell → `peer_unhealthy` naming the leader.
//! `peer_network_slow` is left only for a slow network between two members that are well.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DiagnosisConfig, sample::AgentSample, sample::CgroupIoSample, sample::MemberSample};

/// The causes a verdict can name, as in `etcdmon_diagnosis{cause}`.
pub const CAUSES: [&str; 11] = [
    "healthy",
    "disk_slow",
    "noisy_neighbor",
    "cpu_starved",
    "io_throttled",
    "wal_write_slow",
    "peer_network_slow",
    "peer_unhealthy",
    "stopped",
    "unreachable",
    "inconclusive",
];

/// Causes that are a member's own fault: a peer with one of these is unwell.
pub const FAULTS: [&str; 7] = [
    "disk_slow",
    "noisy_neighbor",
    "cpu_starved",
    "io_throttled",
    "wal_write_slow",
    "stopped",
    "unreachable",
];

/// The process named by a `noisy_neighbor` verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Neighbor {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Its cgroup (container).
    pub cgroup: String,
    /// Bytes it submitted to the device in the window.
    pub bytes: u64,
}

/// One peer's network figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerEvidence {
    /// Peer member (or address).
    pub peer: String,
    /// Latest kernel smoothed RTT, ms.
    pub rtt_ms: f64,
    /// Retransmits in the window.
    pub retransmits: u64,
}

/// The member's I/O cgroup against its limit over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CgroupIoEvidence {
    /// The cgroup whose limit it is (the member's or an ancestor's).
    pub cgroup: String,
    /// The limited device (`major:minor`) closest to its limit.
    pub device: Option<String>,
    /// Which limit: `read_bps`, `write_bps`, `read_iops` or `write_iops`.
    pub limit_kind: Option<String>,
    /// The limit (bytes or requests per second).
    pub limit: Option<f64>,
    /// What the cgroup got serviced on that device over the window, per second.
    pub rate: Option<f64>,
    /// `rate / limit`.
    pub limit_ratio: Option<f64>,
}

/// The numbers behind a verdict, over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// The quantile the slow-sync decision uses (`--diagnosis-quantile`).
    pub quantile: f64,
    /// etcd's WAL fsync at that quantile, ms.
    pub etcd_wal_fsync_at_quantile_ms: Option<f64>,
    /// Kernel WAL fdatasync at that quantile, ms.
    pub syscall_fdatasync_at_quantile_ms: Option<f64>,
    /// WAL syncs etcd observed (server histogram).
    pub etcd_wal_syncs: u64,
    /// etcd's own WAL fsync p99 (`etcd_disk_wal_fsync_duration_seconds`), ms.
    pub etcd_wal_fsync_p99_ms: Option<f64>,
    /// Kernel-timed WAL `fdatasync` calls.
    pub syscall_fdatasyncs: u64,
    /// Their p99, ms.
    pub syscall_fdatasync_p99_ms: Option<f64>,
    /// Their mean, ms.
    pub syscall_fdatasync_mean_ms: Option<f64>,
    /// Kernel-timed WAL `write`/`pwrite64`/`writev`/`pwritev` calls.
    pub syscall_wal_writes: u64,
    /// Their latency at the quantile, ms.
    pub syscall_wal_write_at_quantile_ms: Option<f64>,
    /// Their p99, ms.
    pub syscall_wal_write_p99_ms: Option<f64>,
    /// The device under the data dir.
    pub device: Option<String>,
    /// Requests completed on it.
    pub device_requests: u64,
    /// Their mean service time, ms.
    pub device_service_mean_ms: Option<f64>,
    /// Their p99 service time, ms.
    pub device_service_p99_ms: Option<f64>,
    /// Share of the device's I/O submitted by processes other than this member, in bytes or
    /// in bios, whichever is larger (kernel threads such as journals excluded).
    pub other_io_share: Option<f64>,
    /// Run-queue latency p99 of the member's threads, ms.
    pub runq_p99_ms: Option<f64>,
    /// Its mean, ms.
    pub runq_mean_ms: Option<f64>,
    /// CFS periods of the member's cgroup in the window.
    pub cfs_periods: Option<u64>,
    /// Periods in which it was throttled.
    pub cfs_throttled_periods: Option<u64>,
    /// Time it was throttled, ms.
    pub cfs_throttled_ms: Option<f64>,
    /// The member's I/O cgroup against its limit, when it has one.
    pub cgroup_io: Option<CgroupIoEvidence>,
    /// Where the PSI figures come from: `cgroup` (the member's own v2 cgroup) or `system`
    /// (the node's `/proc/pressure`; shown, but not used to blame the member).
    pub pressure_source: Option<String>,
    /// Share of the window in which some task was stalled on I/O (PSI `some`).
    pub io_pressure_share: Option<f64>,
    /// Share of the window in which some task waited for a CPU (PSI `some`).
    pub cpu_pressure_share: Option<f64>,
    /// The process state the agent last read (`T`: stopped).
    pub process_state: Option<String>,
    /// Whether the collector reached the member at its last health check.
    pub reachable: bool,
    /// Per-peer network figures.
    pub peers: Vec<PeerEvidence>,
}

/// A member's verdict for one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    /// One of [`CAUSES`].
    pub cause: String,
    /// `throttled`, `runqueue` or `pressure` for `cpu_starved`.
    pub reason: Option<String>,
    /// For `noisy_neighbor`.
    pub neighbor: Option<Neighbor>,
    /// For `peer_network_slow` and `peer_unhealthy`: the peer member.
    pub peer: Option<String>,
    /// For `peer_unhealthy`: the peer's own cause (`cpu_starved`, `disk_slow`, `stopped`…).
    pub peer_cause: Option<String>,
    /// For `io_throttled`: the cgroup whose I/O limit is reached.
    pub cgroup: Option<String>,
    /// For `inconclusive`: the evidence that is missing.
    pub missing: Vec<String>,
    /// One line for people (alert annotations, the status page).
    pub summary: String,
    /// The numbers.
    pub evidence: Evidence,
}

impl Verdict {
    fn new(cause: &str, summary: String, evidence: &Evidence) -> Self {
        Self {
            cause: cause.to_string(),
            summary,
            evidence: evidence.clone(),
            ..Self::default()
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} ms"))
}

/// What one member's window shows, before any verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// The numbers.
    pub ev: Evidence,
    /// Whether the server view (scrape) was there.
    pub has_server: bool,
    /// Whether an agent reported the member at both ends of the window.
    pub has_kernel: bool,
    /// Block-device evidence was there.
    pub has_device: bool,
    /// Scheduler evidence was there.
    pub has_sched: bool,
    /// The device under the data dir is slow.
    pub device_slow: bool,
    /// The busiest other issuer on that device.
    pub neighbor: Option<Neighbor>,
    /// `throttled`, `runqueue` or `pressure` when the member is starved of CPU.
    pub cpu: Option<&'static str>,
    /// The member's I/O cgroup is at its limit.
    pub io_limited: bool,
    /// The agent reports the process stopped.
    pub stopped: bool,
    /// The WAL sync is slow.
    pub slow_sync: bool,
    /// The kernel-timed WAL writes are slow.
    pub slow_write: bool,
    /// The member's CPU cgroup.
    pub cpu_cgroup: String,
}

impl Findings {
    /// The member's own trouble, whether or not it shows in its WAL sync yet: what a peer
    /// that finds it slow should blame (`None`: nothing wrong with it).
    pub fn condition(&self, own: &Verdict) -> Option<String> {
        if FAULTS.contains(&own.cause.as_str()) {
            return Some(own.cause.clone());
        }
        // Only evidence that is the member's own: its cgroup's CFS throttling or PSI, its I/O
        // cgroup at its limit. A long run queue alone is not (on a loaded node every member
        // has one: a healthy cluster here measured run-queue p99s of 20-50 ms).
        let cause = if self.stopped {
            "stopped"
        } else if matches!(self.cpu, Some("throttled" | "pressure")) {
            "cpu_starved"
        } else if self.io_limited {
            "io_throttled"
        } else if !self.ev.reachable {
            "unreachable"
        } else {
            return None;
        };
        Some(cause.to_string())
    }
}

/// The verdict for the window from `first` to `last`, judging the member alone.
pub fn diagnose(first: &MemberSample, last: &MemberSample, cfg: &DiagnosisConfig) -> Verdict {
    own_verdict(&findings(first, last, cfg), cfg)
}

/// Reads one member's window.
pub fn findings(first: &MemberSample, last: &MemberSample, cfg: &DiagnosisConfig) -> Findings {
    let mut f = Findings {
        ev: Evidence {
            quantile: cfg.quantile,
            reachable: last.reachable,
            ..Evidence::default()
        },
        ..Findings::default()
    };
    if let (Some(a), Some(b)) = (&first.server_wal, &last.server_wal) {
        let w = b.since(a);
        f.has_server = true;
        f.ev.etcd_wal_syncs = w.count();
        f.ev.etcd_wal_fsync_p99_ms = w.quantile_ms(0.99);
        f.ev.etcd_wal_fsync_at_quantile_ms = w.quantile_ms(cfg.quantile);
    }
    if let (Some(a), Some(b)) = (&first.agent, &last.agent) {
        f.has_kernel = true;
        syscalls(&mut f, a, b, cfg);
        devices(&mut f, a, b, cfg);
        scheduling(&mut f, a, b, cfg);
        cgroup_io(&mut f, a, b, cfg);
        peers(&mut f.ev, a, b);
        f.stopped = matches!(b.process_state.as_str(), "T" | "t");
        f.ev.process_state = (!b.process_state.is_empty()).then(|| b.process_state.clone());
        f.cpu_cgroup = b.cgroup.clone();
    }
    let enough = |n: u64| n >= cfg.min_syncs;
    let slow = |p: Option<f64>| p.is_some_and(|p| p > cfg.slow_fsync_ms);
    f.slow_sync = (enough(f.ev.etcd_wal_syncs) && slow(f.ev.etcd_wal_fsync_at_quantile_ms))
        || (enough(f.ev.syscall_fdatasyncs) && slow(f.ev.syscall_fdatasync_at_quantile_ms));
    f.slow_write = enough(f.ev.syscall_wal_writes) && slow(f.ev.syscall_wal_write_at_quantile_ms);
    f
}

/// Kernel-timed WAL fdatasync and write.
fn syscalls(f: &mut Findings, a: &AgentSample, b: &AgentSample, cfg: &DiagnosisConfig) {
    let wal = b.wal_fdatasync.since(&a.wal_fdatasync);
    f.ev.syscall_fdatasyncs = wal.count();
    f.ev.syscall_fdatasync_p99_ms = wal.quantile_ms(0.99);
    f.ev.syscall_fdatasync_at_quantile_ms = wal.quantile_ms(cfg.quantile);
    f.ev.syscall_fdatasync_mean_ms = wal.mean_ms();
    let writes = b.wal_write.since(&a.wal_write);
    f.ev.syscall_wal_writes = writes.count();
    f.ev.syscall_wal_write_p99_ms = writes.quantile_ms(0.99);
    f.ev.syscall_wal_write_at_quantile_ms = writes.quantile_ms(cfg.quantile);
}

/// The slowest device under the data dir, and who else wrote to it.
fn devices(f: &mut Findings, a: &AgentSample, b: &AgentSample, cfg: &DiagnosisConfig) {
    for d in &b.devices {
        let before = a.devices.iter().find(|x| x.name == d.name);
        let w = d
            .service
            .since(&before.map(|x| x.service.clone()).unwrap_or_default());
        f.has_device = true;
        let mean = w.mean_ms();
        if f.ev.device.is_some() && mean <= f.ev.device_service_mean_ms {
            continue;
        }
        f.ev.device = Some(d.name.clone());
        f.ev.device_requests = w.count();
        f.ev.device_service_mean_ms = mean;
        f.ev.device_service_p99_ms = w.quantile_ms(0.99);
        let (share, top) = issuers(d, before, b.pid);
        f.ev.other_io_share = share;
        f.neighbor = top;
    }
    f.device_slow =
        f.ev.device_service_mean_ms
            .is_some_and(|m| m > cfg.slow_device_ms);
}

/// Others' share of a device's I/O in the window (bytes or bios, whichever is larger; kernel
/// threads excluded) and the busiest other issuer by bios.
fn issuers(
    d: &super::sample::DeviceSample,
    before: Option<&super::sample::DeviceSample>,
    own_pid: u32,
) -> (Option<f64>, Option<Neighbor>) {
    let delta = |pid: u32, bytes: u64, ios: u64| {
        let old = before.and_then(|x| x.issuers.iter().find(|i| i.pid == pid));
        (
            bytes.saturating_sub(old.map_or(0, |i| i.bytes)),
            ios.saturating_sub(old.map_or(0, |i| i.ios)),
        )
    };
    let (mut own, mut others) = ((0u64, 0u64), (0u64, 0u64));
    let mut top: Option<(u64, Neighbor)> = None;
    for i in d.issuers.iter().filter(|i| !i.kernel_thread) {
        let (bytes, ios) = delta(i.pid, i.bytes, i.ios);
        if i.pid == own_pid {
            own = (own.0 + bytes, own.1 + ios);
            continue;
        }
        others = (others.0 + bytes, others.1 + ios);
        if top.as_ref().is_none_or(|(t, _)| ios > *t) {
            let n = Neighbor {
                pid: i.pid,
                comm: i.comm.clone(),
                cgroup: i.cgroup.clone(),
                bytes,
            };
            top = Some((ios, n));
        }
    }
    // A device is shared by requests (IOPS) and by bandwidth: whichever share of the two the
    // others hold is larger.
    let share =
        |own: u64, others: u64| (own + others > 0).then(|| others as f64 / (own + others) as f64);
    let share = match (share(own.0, others.0), share(own.1, others.1)) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    (share, top.map(|(_, n)| n))
}

/// Run-queue latency and CFS throttling.
fn scheduling(f: &mut Findings, a: &AgentSample, b: &AgentSample, cfg: &DiagnosisConfig) {
    if let (Some(ra), Some(rb)) = (&a.runq, &b.runq) {
        f.has_sched = true;
        let w = rb.since(ra);
        f.ev.runq_p99_ms = w.quantile_ms(0.99);
        f.ev.runq_mean_ms = w.mean_ms();
    }
    if let (Some(ta), Some(tb)) = (a.throttle, b.throttle) {
        f.has_sched = true;
        let periods = tb.0.saturating_sub(ta.0);
        let throttled = tb.1.saturating_sub(ta.1);
        f.ev.cfs_periods = Some(periods);
        f.ev.cfs_throttled_periods = Some(throttled);
        f.ev.cfs_throttled_ms = Some(tb.2.saturating_sub(ta.2) as f64 / 1e6);
        if periods > 0 && throttled as f64 / periods as f64 > cfg.throttle_ratio {
            f.cpu = Some("throttled");
        }
    }
    if f.cpu.is_none() && f.ev.runq_p99_ms.is_some_and(|p| p > cfg.runq_ms) {
        f.cpu = Some("runqueue");
    }
}

/// The I/O cgroup against its limits, and PSI, between two agent resource samples.
fn cgroup_io(f: &mut Findings, a: &AgentSample, b: &AgentSample, cfg: &DiagnosisConfig) {
    let data_devices: Vec<&str> = b.devices.iter().map(|d| d.id.as_str()).collect();
    let (Some(a), Some(b)) = (a.cgroup_io.as_ref(), b.cgroup_io.as_ref()) else {
        return;
    };
    let seconds = b.sampled_at_ms.saturating_sub(a.sampled_at_ms) as f64 / 1e3;
    if seconds <= 0.0 {
        return;
    }
    if !b.pressure_source.is_empty() {
        f.ev.pressure_source = Some(b.pressure_source.clone());
        let share = |x: Option<&etcd_monitor_proto::v1::Pressure>,
                     y: Option<&etcd_monitor_proto::v1::Pressure>| {
            let (x, y) = (x?, y?);
            Some(y.some_micros.saturating_sub(x.some_micros) as f64 / (seconds * 1e6))
        };
        f.ev.io_pressure_share = share(a.io_pressure.as_ref(), b.io_pressure.as_ref());
        f.ev.cpu_pressure_share = share(a.cpu_pressure.as_ref(), b.cpu_pressure.as_ref());
    }
    let own_pressure = |share: Option<f64>| {
        b.pressure_source == "cgroup" && share.is_some_and(|s| s > cfg.pressure_share)
    };
    if f.cpu.is_none() && own_pressure(f.ev.cpu_pressure_share) {
        f.cpu = Some("pressure");
    }
    let closest = closest_limit(a, b, seconds, data_devices);
    if let Some(e) = closest {
        f.io_limited = e.limit_ratio.is_some_and(|r| r >= cfg.io_limit_ratio)
            || own_pressure(f.ev.io_pressure_share);
        f.ev.cgroup_io = Some(e);
    }
}

/// The limited device whose serviced rate comes closest to its limit; only the devices under
/// the data dir when those are known (a limit elsewhere does not slow the WAL).
fn closest_limit(
    a: &CgroupIoSample,
    b: &CgroupIoSample,
    seconds: f64,
    data_devices: Vec<&str>,
) -> Option<CgroupIoEvidence> {
    let mut best: Option<CgroupIoEvidence> = None;
    let wanted = |d: &str| data_devices.is_empty() || data_devices.contains(&d);
    for d in b.devices.iter().filter(|d| wanted(&d.device)) {
        let old = a.devices.iter().find(|x| x.device == d.device);
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / seconds;
        let o = old.cloned().unwrap_or_default();
        for (kind, limit, r) in [
            (
                "read_bps",
                d.read_bps_limit,
                rate(d.read_bytes, o.read_bytes),
            ),
            (
                "write_bps",
                d.write_bps_limit,
                rate(d.write_bytes, o.write_bytes),
            ),
            ("read_iops", d.read_iops_limit, rate(d.read_ios, o.read_ios)),
            (
                "write_iops",
                d.write_iops_limit,
                rate(d.write_ios, o.write_ios),
            ),
        ] {
            if limit == 0 {
                continue;
            }
            let ratio = r / limit as f64;
            if best
                .as_ref()
                .is_none_or(|x| x.limit_ratio.is_none_or(|br| ratio > br))
            {
                best = Some(CgroupIoEvidence {
                    cgroup: b.cgroup.clone(),
                    device: Some(d.device.clone()),
                    limit_kind: Some(kind.to_string()),
                    limit: Some(limit as f64),
                    rate: Some(r),
                    limit_ratio: Some(ratio),
                });
            }
        }
    }
    best
}

/// Per-peer RTT and retransmits in the window.
fn peers(ev: &mut Evidence, a: &AgentSample, b: &AgentSample) {
    for (peer, rtt_us, retrans) in &b.peers {
        let old = a.peers.iter().find(|p| &p.0 == peer).map_or(0, |p| p.2);
        ev.peers.push(PeerEvidence {
            peer: peer.clone(),
            rtt_ms: f64::from(*rtt_us) / 1e3,
            retransmits: retrans.saturating_sub(old),
        });
    }
}

/// The peers over the RTT or retransmit threshold, worst RTT first.
pub fn slow_peers<'a>(ev: &'a Evidence, cfg: &DiagnosisConfig) -> Vec<&'a PeerEvidence> {
    let mut slow: Vec<&PeerEvidence> = ev
        .peers
        .iter()
        .filter(|p| p.rtt_ms > cfg.peer_rtt_ms || p.retransmits > cfg.peer_retransmits)
        .collect();
    slow.sort_by(|a, b| b.rtt_ms.total_cmp(&a.rtt_ms));
    slow
}

/// The key figures in one line.
fn numbers(ev: &Evidence) -> String {
    format!(
        "etcd WAL fsync p99 {}, syscall p99 {}, device {} service mean {}, run-queue p99 {}",
        ms(ev.etcd_wal_fsync_p99_ms),
        ms(ev.syscall_fdatasync_p99_ms),
        ev.device.as_deref().unwrap_or("n/a"),
        ms(ev.device_service_mean_ms),
        ms(ev.runq_p99_ms),
    )
}

/// Phase 1: the member judged alone.
pub fn own_verdict(f: &Findings, cfg: &DiagnosisConfig) -> Verdict {
    let ev = &f.ev;
    if f.stopped {
        return Verdict::new(
            "stopped",
            format!(
                "stopped: the process is in state {} (SIGSTOP or a debugger); it does no work",
                ev.process_state.as_deref().unwrap_or("T")
            ),
            ev,
        );
    }
    if !f.has_server && !f.has_kernel {
        let mut v = if ev.reachable {
            Verdict::new(
                "inconclusive",
                "no server metrics and no agent for this member".to_string(),
                ev,
            )
        } else {
            unreachable(ev)
        };
        v.missing = vec![
            "server metrics (etcd /metrics scrape)".to_string(),
            "an agent on the member's node".to_string(),
        ];
        return v;
    }
    if f.slow_sync {
        return slow_sync_verdict(f, cfg);
    }
    if f.slow_write {
        return slow_write_verdict(f, cfg);
    }
    let slow = slow_peers(ev, cfg);
    if (!slow.is_empty() || !ev.reachable)
        && let Some(reason) = f.cpu
    {
        let mut v = cpu_verdict(f, reason);
        v.summary = format!(
            "{} — its own starvation makes its peers look slow",
            v.summary
        );
        return v;
    }
    if !ev.reachable {
        return unreachable(ev);
    }
    if let Some(p) = slow.first() {
        let mut v = Verdict::new(
            "peer_network_slow",
            format!(
                "peer network slow to {}: RTT {:.1} ms, {} retransmits in the window; WAL sync fine ({})",
                p.peer,
                p.rtt_ms,
                p.retransmits,
                numbers(ev)
            ),
            ev,
        );
        v.peer = Some(p.peer.clone());
        return v;
    }
    Verdict::new(
        "healthy",
        format!(
            "WAL sync within {:.0} ms ({})",
            cfg.slow_fsync_ms,
            numbers(ev)
        ),
        ev,
    )
}

fn unreachable(ev: &Evidence) -> Verdict {
    Verdict::new(
        "unreachable",
        "unreachable: the member did not answer the collector's last health check".to_string(),
        ev,
    )
}

/// The WAL sync is slow: the cgroup, the device, the CPU, or nothing known.
fn slow_sync_verdict(f: &Findings, cfg: &DiagnosisConfig) -> Verdict {
    let ev = &f.ev;
    if !f.has_kernel {
        let mut v = Verdict::new(
            "inconclusive",
            format!("WAL sync slow but no kernel evidence ({})", numbers(ev)),
            ev,
        );
        v.missing = vec!["an agent on the member's node (kernel evidence)".to_string()];
        return v;
    }
    if f.io_limited {
        return io_throttled_verdict(f, "WAL sync slow");
    }
    if f.device_slow {
        if ev.other_io_share.is_some_and(|s| s > cfg.neighbor_share)
            && let Some(n) = &f.neighbor
        {
            let mut v = Verdict::new(
                "noisy_neighbor",
                format!(
                    "noisy neighbour: {} (pid {}, cgroup {}) issued {:.0} % of the I/O on {} ({})",
                    n.comm,
                    n.pid,
                    n.cgroup,
                    ev.other_io_share.unwrap_or(0.0) * 100.0,
                    ev.device.as_deref().unwrap_or("the device"),
                    numbers(ev)
                ),
                ev,
            );
            v.neighbor = Some(n.clone());
            return v;
        }
        return Verdict::new(
            "disk_slow",
            format!(
                "disk slow: the device under the data dir takes {} per request ({})",
                ms(ev.device_service_mean_ms),
                numbers(ev)
            ),
            ev,
        );
    }
    if let Some(reason) = f.cpu {
        return cpu_verdict(f, reason);
    }
    inconclusive(f)
}

/// WAL writes slow while fdatasync is fast.
fn slow_write_verdict(f: &Findings, cfg: &DiagnosisConfig) -> Verdict {
    if let Some(reason) = f.cpu {
        return cpu_verdict(f, reason);
    }
    if f.io_limited {
        return io_throttled_verdict(f, "WAL write() slow");
    }
    let ev = &f.ev;
    Verdict::new(
        "wal_write_slow",
        format!(
            "WAL write() slow: {} at p{:.0} over {} writes while fdatasync p99 is {} (above {:.0} ms; page cache, dirty throttling or filesystem locks, not the device flush) ({})",
            ms(ev.syscall_wal_write_at_quantile_ms),
            ev.quantile * 100.0,
            ev.syscall_wal_writes,
            ms(ev.syscall_fdatasync_p99_ms),
            cfg.slow_fsync_ms,
            numbers(ev)
        ),
        ev,
    )
}

fn io_throttled_verdict(f: &Findings, what: &str) -> Verdict {
    let ev = &f.ev;
    let io = ev.cgroup_io.clone().unwrap_or_default();
    let pressure = match (ev.io_pressure_share, ev.pressure_source.as_deref()) {
        (Some(s), Some(src)) => format!(", I/O pressure {:.0} % ({src})", s * 100.0),
        _ => String::new(),
    };
    let mut v = Verdict::new(
        "io_throttled",
        format!(
            "I/O throttled: {what}; cgroup {} is serviced {:.1}/s against its {} limit {:.0} on device {}{pressure} ({})",
            io.cgroup,
            io.rate.unwrap_or(0.0),
            io.limit_kind.as_deref().unwrap_or("?"),
            io.limit.unwrap_or(0.0),
            io.device.as_deref().unwrap_or("?"),
            numbers(ev)
        ),
        ev,
    );
    v.cgroup = Some(io.cgroup);
    v
}

fn cpu_verdict(f: &Findings, reason: &str) -> Verdict {
    let ev = &f.ev;
    let summary = match reason {
        "throttled" => format!(
            "CPU starved: cgroup {} throttled in {} of {} periods ({} throttled); disk fast ({})",
            f.cpu_cgroup,
            ev.cfs_throttled_periods.unwrap_or(0),
            ev.cfs_periods.unwrap_or(0),
            ms(ev.cfs_throttled_ms),
            numbers(ev)
        ),
        "pressure" => format!(
            "CPU starved: its cgroup's tasks waited for a CPU {:.0} % of the window (PSI); disk fast ({})",
            ev.cpu_pressure_share.unwrap_or(0.0) * 100.0,
            numbers(ev)
        ),
        _ => format!(
            "CPU starved: threads wait {} (p99) for a CPU; disk fast ({})",
            ms(ev.runq_p99_ms),
            numbers(ev)
        ),
    };
    let mut v = Verdict::new("cpu_starved", summary, ev);
    v.reason = Some(reason.to_string());
    v
}

fn inconclusive(f: &Findings) -> Verdict {
    let mut missing = Vec::new();
    if !f.has_device {
        missing.push(
            "block device evidence (probe group block, or a data dir on a block device)"
                .to_string(),
        );
    }
    if !f.has_sched {
        missing.push("scheduler evidence (probe group sched)".to_string());
    }
    let n = numbers(&f.ev);
    let summary = if missing.is_empty() {
        format!("WAL sync slow, but neither the device nor the scheduler explains it ({n})")
    } else {
        format!("WAL sync slow; missing {} ({n})", missing.join(", "))
    };
    let mut v = Verdict::new("inconclusive", summary, &f.ev);
    v.missing = missing;
    v
}

/// One member of a cluster between the two phases.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Member name.
    pub name: String,
    /// Whether it leads.
    pub is_leader: bool,
    /// Its own trouble ([`Findings::condition`]).
    pub condition: Option<String>,
    /// Its verdict: phase 1's, then phase 2's.
    pub verdict: Verdict,
}

impl Judged {
    /// Phase 1 for one member.
    pub fn new(f: &Findings, sample: &MemberSample, cfg: &DiagnosisConfig) -> Self {
        let verdict = own_verdict(f, cfg);
        Self {
            name: sample.name.clone(),
            is_leader: sample.is_leader,
            condition: f.condition(&verdict),
            verdict,
        }
    }
}

/// Phase 2: every member's verdict in the light of its peers' (see the module doc).
pub fn resolve(members: &mut [Judged], cfg: &DiagnosisConfig) {
    let view: Vec<(String, bool, Option<String>, String)> = members
        .iter()
        .map(|m| {
            let own = m.verdict.cause.clone();
            (m.name.clone(), m.is_leader, m.condition.clone(), own)
        })
        .collect();
    let leader = view.iter().find(|(_, l, c, _)| *l && c.is_some());
    for m in members.iter_mut() {
        let cause = m.verdict.cause.as_str();
        if !matches!(cause, "healthy" | "inconclusive" | "peer_network_slow") {
            continue;
        }
        let unwell = |name: &str| {
            view.iter()
                .find(|(n, _, c, _)| n == name && c.is_some() && n != &m.name)
        };
        let slow = symptomatic_peers(&m.verdict.evidence, cfg);
        let mut blamed = slow
            .iter()
            .filter_map(|p| unwell(&p.peer))
            .max_by_key(|(_, is_leader, _, _)| *is_leader)
            .map(|(n, _, c, _)| {
                (
                    n.clone(),
                    c.clone().unwrap_or_default(),
                    slow_detail(&slow, n),
                )
            });
        if blamed.is_none()
            && !m.is_leader
            && let Some((n, _, Some(c), own)) = leader
            && (cause != "healthy" || FAULTS.contains(&own.as_str()))
        {
            blamed = Some((n.clone(), c.clone(), "it leads".to_string()));
        }
        if let Some((peer, peer_cause, detail)) = blamed {
            m.verdict.summary = format!(
                "peer {peer} is unwell ({peer_cause}), not the network: {detail}; this member's own {}",
                m.verdict.summary
            );
            m.verdict.cause = "peer_unhealthy".to_string();
            m.verdict.peer = Some(peer);
            m.verdict.peer_cause = Some(peer_cause);
            m.verdict.missing.clear();
        }
    }
}

/// The peers that look slow when the peer is independently known to be unwell: a lower bar
/// than [`slow_peers`] — an RTT above a fifth of `peer_rtt_ms` or more than a quarter of
/// `peer_retransmits` — since the peer's own evidence already says what is wrong. (A CPU-starved follower measured here
/// raised its leader's RTT to it from 0.5 ms to 28 ms, with no retransmits.)
pub fn symptomatic_peers<'a>(ev: &'a Evidence, cfg: &DiagnosisConfig) -> Vec<&'a PeerEvidence> {
    let mut slow: Vec<&PeerEvidence> = ev
        .peers
        .iter()
        .filter(|p| p.rtt_ms > cfg.peer_rtt_ms / 5.0 || p.retransmits > cfg.peer_retransmits / 4)
        .collect();
    slow.sort_by(|a, b| b.rtt_ms.total_cmp(&a.rtt_ms));
    slow
}

/// "RTT 40.0 ms, 78 retransmits" for `peer`, when it is among the slow ones.
fn slow_detail(slow: &[&PeerEvidence], peer: &str) -> String {
    slow.iter()
        .find(|p| p.peer == peer)
        .map_or_else(String::new, |p| {
            format!(
                "RTT {:.1} ms, {} retransmits to it",
                p.rtt_ms, p.retransmits
            )
        })
}

#[cfg(test)]
mod tests {
    use etcd_monitor_proto::v1::IoIssuer;

    use super::*;
    use crate::{
        analysis::diagnosis::sample::AgentSample, analysis::diagnosis::sample::CgroupIoSample,
        analysis::diagnosis::sample::DeviceSample,
    };
    use etcd_monitor_histogram::{CumulativeBuckets, Log2Slots};
    use etcd_monitor_proto::v1::{CgroupIoDevice, Pressure};

    fn log2(count: u64, each_ns: u64) -> Log2Slots {
        let mut slots = vec![0u64; 40];
        slots[63 - each_ns.leading_zeros() as usize] = count;
        Log2Slots {
            count,
            sum_ns: count * each_ns,
            slots,
        }
    }

    fn server(count: f64, slow: bool) -> CumulativeBuckets {
        let fast = if slow { 0.0 } else { count };
        CumulativeBuckets::from_pairs([(0.004, fast), (0.256, count), (f64::INFINITY, count)])
    }

    fn sample(at: u64, fsyncs: u64, fsync_ns: u64, device_ns: u64) -> MemberSample {
        MemberSample {
            at_ms: at,
            name: "member0".into(),
            reachable: true,
            is_leader: false,
            server_wal: Some(server(fsyncs as f64, fsync_ns > 10_000_000)),
            agent: Some(AgentSample {
                pid: 100,
                mode: "ebpf".into(),
                wal_fdatasync: log2(fsyncs, fsync_ns),
                devices: vec![DeviceSample {
                    name: "loop3".into(),
                    id: "7:3".into(),
                    service: log2(fsyncs * 3, device_ns),
                    issuers: vec![IoIssuer {
                        pid: 100,
                        comm: "etcd".into(),
                        bytes: fsyncs * 4096,
                        ..IoIssuer::default()
                    }],
                }],
                runq: Some(log2(fsyncs * 10, 20_000)),
                throttle: Some((fsyncs, 0, 0)),
                cgroup: "/".into(),
                peers: vec![("member1".into(), 100, 0)],
                wal_write: log2(fsyncs, 10_000),
                process_state: "S".into(),
                cgroup_io: None,
            }),
        }
    }

    fn cfg() -> DiagnosisConfig {
        DiagnosisConfig::default()
    }

    #[test]
    fn fast_everything_is_healthy() {
        let v = diagnose(
            &sample(0, 0, 1, 1),
            &sample(1, 100, 1_000_000, 100_000),
            &cfg(),
        );
        assert_eq!(v.cause, "healthy", "{v:?}");
    }

    #[test]
    fn slow_device_is_disk_slow() {
        let first = sample(0, 0, 1, 1);
        let last = sample(1, 100, 60_000_000, 20_000_000);
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "disk_slow", "{v:?}");
        assert!(v.evidence.device_service_mean_ms.is_some_and(|m| m > 5.0));
    }

    #[test]
    fn slow_device_with_a_busy_neighbour_names_it() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 60_000_000, 20_000_000);
        if let Some(agent) = last.agent.as_mut() {
            agent.devices[0].issuers.push(IoIssuer {
                pid: 777,
                comm: "dd".into(),
                cgroup: "/noisy".into(),
                bytes: 100 << 20,
                ..IoIssuer::default()
            });
            agent.devices[0].issuers.push(IoIssuer {
                pid: 5,
                comm: "jbd2/loop3-8".into(),
                bytes: 500 << 20,
                kernel_thread: true,
                ..IoIssuer::default()
            });
        }
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "noisy_neighbor", "{v:?}");
        let n = v.neighbor.expect("neighbour named");
        assert_eq!(
            (n.pid, n.comm.as_str(), n.cgroup.as_str()),
            (777, "dd", "/noisy")
        );
    }

    #[test]
    fn throttled_cgroup_on_a_fast_disk_is_cpu_starved_not_disk() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 60_000_000, 100_000);
        if let Some(agent) = last.agent.as_mut() {
            agent.throttle = Some((100, 80, 4_000_000_000));
        }
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "cpu_starved", "{v:?}");
        assert_eq!(v.reason.as_deref(), Some("throttled"));
    }

    #[test]
    fn run_queue_delay_is_cpu_starved() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 60_000_000, 100_000);
        if let Some(agent) = last.agent.as_mut() {
            agent.runq = Some(log2(1000, 50_000_000));
        }
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "cpu_starved", "{v:?}");
        assert_eq!(v.reason.as_deref(), Some("runqueue"));
    }

    #[test]
    fn slow_sync_without_an_agent_is_inconclusive() {
        let mut first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 60_000_000, 100_000);
        first.agent = None;
        last.agent = None;
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "inconclusive");
        assert!(v.missing[0].contains("agent"), "{:?}", v.missing);
    }

    #[test]
    fn slow_peer_with_fast_disk_is_peer_network_slow() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 1_000_000, 100_000);
        if let Some(agent) = last.agent.as_mut() {
            agent.peers = vec![("member2".into(), 120_000, 3)];
        }
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "peer_network_slow", "{v:?}");
        assert_eq!(v.peer.as_deref(), Some("member2"));
    }
    fn agent(s: &mut MemberSample) -> &mut AgentSample {
        s.agent.as_mut().expect("an agent sample")
    }

    /// A window of `name` judged alone (phase 1), ready for phase 2.
    fn judged(name: &str, leader: bool, first: &MemberSample, last: &MemberSample) -> Judged {
        let mut last = last.clone();
        last.name = name.to_string();
        last.is_leader = leader;
        Judged::new(&findings(first, &last, &cfg()), &last, &cfg())
    }

    /// A member with a fast disk whose agent sees `peers` as (name, RTT µs, retransmits).
    fn with_peers(peers: Vec<(&str, u32, u64)>) -> (MemberSample, MemberSample) {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 1_000_000, 100_000);
        agent(&mut last).peers = peers
            .into_iter()
            .map(|(p, r, t)| (p.into(), r, t))
            .collect();
        (first, last)
    }

    /// A member on a fast disk whose cgroup was throttled in 80 of 100 periods, WAL sync
    /// still fine.
    fn starved() -> (MemberSample, MemberSample) {
        let (first, mut last) = with_peers(vec![("member0", 90_000, 40)]);
        agent(&mut last).throttle = Some((100, 80, 4_000_000_000));
        (first, last)
    }

    #[test]
    fn a_starved_peer_seen_from_a_healthy_member_is_peer_unhealthy_not_the_network() {
        let (f0, l0) = with_peers(vec![("member2", 45_000, 78)]);
        let (f1, l1) = with_peers(vec![("member2", 200, 0)]);
        let (f2, l2) = starved();
        let mut members = vec![
            judged("member0", true, &f0, &l0),
            judged("member1", false, &f1, &l1),
            judged("member2", false, &f2, &l2),
        ];
        assert_eq!(
            members[0].verdict.cause, "peer_network_slow",
            "phase 1 alone"
        );
        assert_eq!(
            members[2].verdict.cause, "cpu_starved",
            "its slow peers are its own doing"
        );
        assert_eq!(members[2].condition.as_deref(), Some("cpu_starved"));
        resolve(&mut members, &cfg());
        let v = &members[0].verdict;
        assert_eq!(v.cause, "peer_unhealthy", "{v:?}");
        assert_eq!(v.peer.as_deref(), Some("member2"));
        assert_eq!(v.peer_cause.as_deref(), Some("cpu_starved"));
        assert!(v.summary.contains("not the network"), "{}", v.summary);
        assert_eq!(members[1].verdict.cause, "healthy", "no symptom, no blame");
        assert_eq!(members[2].verdict.cause, "cpu_starved");
        // Measured: the leader's RTT to a starved follower rose to 28 ms, no retransmits —
        // under phase 1's bar, over phase 2's.
        let (f1, l1) = with_peers(vec![("member2", 28_000, 0)]);
        let mut members = vec![
            judged("member1", true, &f1, &l1),
            judged("member2", false, &f2, &l2),
        ];
        assert_eq!(members[0].verdict.cause, "healthy");
        resolve(&mut members, &cfg());
        assert_eq!(
            members[0].verdict.peer_cause.as_deref(),
            Some("cpu_starved")
        );
    }

    #[test]
    fn a_peer_waiting_in_a_busy_run_queue_is_not_blamed() {
        // Measured on a loaded node: a healthy member's run-queue p99 at 23 ms and one
        // retransmit to it from a peer must not make that peer `peer_unhealthy`.
        let (f0, mut l0) = with_peers(vec![("member1", 200, 0)]);
        agent(&mut l0).runq = Some(log2(1000, 30_000_000));
        let (f1, l1) = with_peers(vec![("member0", 1_800, 1)]);
        let mut members = vec![
            judged("member0", false, &f0, &l0),
            judged("member1", true, &f1, &l1),
        ];
        assert_eq!(members[0].condition, None);
        resolve(&mut members, &cfg());
        assert_eq!(members[1].verdict.cause, "healthy");
    }

    #[test]
    fn a_slow_network_between_well_members_stays_peer_network_slow() {
        let (f0, l0) = with_peers(vec![("member1", 120_000, 3)]);
        let (f1, l1) = with_peers(vec![("member0", 120_000, 3)]);
        let mut members = vec![
            judged("member0", true, &f0, &l0),
            judged("member1", false, &f1, &l1),
        ];
        resolve(&mut members, &cfg());
        for m in &members {
            assert_eq!(m.verdict.cause, "peer_network_slow", "{:?}", m.verdict);
            assert_eq!(m.verdict.peer_cause, None);
        }
    }

    #[test]
    fn a_leader_with_a_fault_is_weighed_into_its_followers_verdicts() {
        let first = sample(0, 0, 1, 1);
        let slow_disk = sample(1, 100, 60_000_000, 20_000_000);
        let fine = sample(1, 100, 1_000_000, 100_000);
        let mut members = vec![
            judged("member0", true, &first, &slow_disk),
            judged("member1", false, &first, &fine),
        ];
        resolve(&mut members, &cfg());
        assert_eq!(members[0].verdict.cause, "disk_slow");
        let v = &members[1].verdict;
        assert_eq!(
            (v.cause.as_str(), v.peer.as_deref(), v.peer_cause.as_deref()),
            ("peer_unhealthy", Some("member0"), Some("disk_slow")),
            "{v:?}"
        );
        // A follower's fault is not blamed on its fellow followers or the leader.
        let mut members = vec![
            judged("member0", true, &first, &fine),
            judged("member1", false, &first, &slow_disk),
            judged("member2", false, &first, &fine),
        ];
        resolve(&mut members, &cfg());
        let causes: Vec<&str> = members.iter().map(|m| m.verdict.cause.as_str()).collect();
        assert_eq!(causes, ["healthy", "disk_slow", "healthy"]);
    }

    #[test]
    fn a_stopped_process_is_stopped_and_its_slow_peers_say_so() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 1_000_000, 100_000);
        last.reachable = false;
        agent(&mut last).process_state = "T".into();
        let (f1, l1) = with_peers(vec![("member0", 300_000, 25)]);
        let mut members = vec![
            judged("member0", false, &first, &last),
            judged("member1", true, &f1, &l1),
        ];
        assert_eq!(
            members[0].verdict.cause, "stopped",
            "{:?}",
            members[0].verdict
        );
        resolve(&mut members, &cfg());
        let v = &members[1].verdict;
        assert_eq!(
            (v.cause.as_str(), v.peer.as_deref(), v.peer_cause.as_deref()),
            ("peer_unhealthy", Some("member0"), Some("stopped"))
        );
    }

    #[test]
    fn an_unreachable_member_is_unreachable_unless_it_is_starved() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 1_000_000, 100_000);
        last.reachable = false;
        assert_eq!(diagnose(&first, &last, &cfg()).cause, "unreachable");
        agent(&mut last).throttle = Some((100, 80, 4_000_000_000));
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(
            (v.cause.as_str(), v.reason.as_deref()),
            ("cpu_starved", Some("throttled")),
            "{v:?}"
        );
    }

    fn cgroup_io(at_ms: u64, device: &str, write_ios: u64, limit: u64) -> CgroupIoSample {
        CgroupIoSample {
            cgroup: "/etcd-slow-io".into(),
            devices: vec![CgroupIoDevice {
                device: device.into(),
                write_iops_limit: limit,
                write_ios,
                ..CgroupIoDevice::default()
            }],
            pressure_source: "system".into(),
            io_pressure: Some(Pressure {
                some_micros: at_ms * 500,
                ..Pressure::default()
            }),
            cpu_pressure: None,
            sampled_at_ms: at_ms,
        }
    }

    #[test]
    fn slow_sync_with_the_cgroup_at_its_io_limit_is_io_throttled() {
        let mut first = sample(0, 0, 1, 1);
        let mut last = sample(10_000, 200, 60_000_000, 100_000);
        agent(&mut first).cgroup_io = Some(cgroup_io(0, "7:3", 0, 20));
        agent(&mut last).cgroup_io = Some(cgroup_io(10_000, "7:3", 195, 20));
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "io_throttled", "{v:?}");
        assert_eq!(v.cgroup.as_deref(), Some("/etcd-slow-io"));
        let io = v.evidence.cgroup_io.expect("cgroup evidence");
        assert_eq!(io.limit_kind.as_deref(), Some("write_iops"));
        assert!(io.rate.is_some_and(|r| (r - 19.5).abs() < 1e-9), "{io:?}");
        assert_eq!(v.evidence.pressure_source.as_deref(), Some("system"));
        assert!(
            v.evidence
                .io_pressure_share
                .is_some_and(|s| (s - 0.5).abs() < 1e-9)
        );
        // Well under the limit: not the cgroup's doing (the device is fast: inconclusive).
        agent(&mut last).cgroup_io = Some(cgroup_io(10_000, "7:3", 50, 20));
        assert_eq!(diagnose(&first, &last, &cfg()).cause, "inconclusive");
        // A limit on another device than the data dir's does not slow the WAL.
        agent(&mut first).cgroup_io = Some(cgroup_io(0, "8:0", 0, 20));
        agent(&mut last).cgroup_io = Some(cgroup_io(10_000, "8:0", 200, 20));
        assert_eq!(diagnose(&first, &last, &cfg()).cause, "inconclusive");
    }

    #[test]
    fn own_cgroup_cpu_pressure_is_cpu_starved_but_the_nodes_is_not() {
        let mut first = sample(0, 0, 1, 1);
        let mut last = sample(10_000, 100, 60_000_000, 100_000);
        let psi = |at: u64, source: &str| CgroupIoSample {
            pressure_source: source.into(),
            cpu_pressure: Some(Pressure {
                some_micros: at * 400,
                ..Pressure::default()
            }),
            sampled_at_ms: at,
            ..CgroupIoSample::default()
        };
        agent(&mut first).cgroup_io = Some(psi(0, "system"));
        agent(&mut last).cgroup_io = Some(psi(10_000, "system"));
        assert_eq!(diagnose(&first, &last, &cfg()).cause, "inconclusive");
        agent(&mut first).cgroup_io = Some(psi(0, "cgroup"));
        agent(&mut last).cgroup_io = Some(psi(10_000, "cgroup"));
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(
            (v.cause.as_str(), v.reason.as_deref()),
            ("cpu_starved", Some("pressure")),
            "{v:?}"
        );
        assert!(
            v.evidence
                .cpu_pressure_share
                .is_some_and(|s| (s - 0.4).abs() < 1e-9)
        );
    }

    #[test]
    fn slow_wal_writes_with_fast_fdatasync_are_wal_write_slow() {
        let first = sample(0, 0, 1, 1);
        let mut last = sample(1, 100, 1_000_000, 100_000);
        agent(&mut last).wal_write = log2(100, 50_000_000);
        let v = diagnose(&first, &last, &cfg());
        assert_eq!(v.cause, "wal_write_slow", "{v:?}");
        assert_eq!(v.evidence.syscall_wal_writes, 100);
        assert!(
            v.evidence
                .syscall_wal_write_at_quantile_ms
                .is_some_and(|p| p > 10.0)
        );
        // Too few writes say nothing.
        agent(&mut last).wal_write = log2(3, 50_000_000);
        assert_eq!(diagnose(&first, &last, &cfg()).cause, "healthy");
        // Slow writes of a starved member are its starvation.
        agent(&mut last).wal_write = log2(100, 50_000_000);
        agent(&mut last).throttle = Some((100, 80, 4_000_000_000));
        assert_eq!(diagnose(&first, &last, &cfg()).cause, "cpu_starved");
    }
}
