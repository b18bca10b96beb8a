//! One member's cumulative evidence at one moment, taken from the scrape (server view) and its
//! agent's latest `AgentStatus` (kernel view). Windows are differences of two samples, taken
//! with the shared histogram model (`since`, i.e. `etcd_monitor_histogram::delta`).

use etcd_monitor_histogram::{CumulativeBuckets, Log2Slots};
use etcd_monitor_proto::v1::{
    AgentStatus, CgroupIoDevice, DiskOp, FileClass, IoIssuer, MemberIdentity, Pressure,
};

use crate::{model::cluster::MemberState, sources::ingest::AgentRegistry, sources::ingest::join};

/// A device under the member's data dir.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSample {
    /// Kernel name.
    pub name: String,
    /// `major:minor`.
    pub id: String,
    /// Request service time.
    pub service: Log2Slots,
    /// Issuers (cumulative bytes).
    pub issuers: Vec<IoIssuer>,
}

/// What the member's agent reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSample {
    /// The member's pid on its node.
    pub pid: u32,
    /// The agent's mode (`ebpf`, `ebpf-partial`, `client-only`).
    pub mode: String,
    /// Kernel-timed `fdatasync` on WAL files.
    pub wal_fdatasync: Log2Slots,
    /// Devices under the data dir (empty: no block probes, or no block device).
    pub devices: Vec<DeviceSample>,
    /// Run-queue latency; `None` without the sched probes.
    pub runq: Option<Log2Slots>,
    /// cgroup CPU bandwidth: (periods, throttled periods, throttled ns).
    pub throttle: Option<(u64, u64, u64)>,
    /// The member's CPU cgroup.
    pub cgroup: String,
    /// Peers: (name, smoothed RTT µs, retransmits).
    pub peers: Vec<(String, u32, u64)>,
    /// Kernel-timed WAL `write`/`pwrite64`/`writev`/`pwritev`.
    pub wal_write: Log2Slots,
    /// The `/proc/PID/stat` state letter at the agent's last resource sample (`T`: stopped);
    /// empty when unknown.
    pub process_state: String,
    /// The member's I/O cgroup limits and counters, and PSI.
    pub cgroup_io: Option<CgroupIoSample>,
}

/// A member's I/O cgroup evidence at one agent resource sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupIoSample {
    /// The cgroup the device figures are from.
    pub cgroup: String,
    /// Devices: limits (0 = none) and cumulative serviced counters.
    pub devices: Vec<CgroupIoDevice>,
    /// `cgroup` (the member's own v2 cgroup) or `system` (`/proc/pressure`); empty: no PSI.
    pub pressure_source: String,
    /// `io.pressure` (cumulative µs).
    pub io_pressure: Option<Pressure>,
    /// `cpu.pressure` (cumulative µs).
    pub cpu_pressure: Option<Pressure>,
    /// When the agent read them (Unix ms).
    pub sampled_at_ms: u64,
}

/// Everything known about one member at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberSample {
    /// When (Unix ms).
    pub at_ms: u64,
    /// Member name.
    pub name: String,
    /// Whether it answered the collector's last health check.
    pub reachable: bool,
    /// Whether it was the leader at the last health check.
    pub is_leader: bool,
    /// etcd's own `etcd_disk_wal_fsync_duration_seconds`, when scraped.
    pub server_wal: Option<CumulativeBuckets>,
    /// The kernel view, when an agent reports the member.
    pub agent: Option<AgentSample>,
}

/// Everything known about `member` now: its scraped WAL fsync buckets and, when an agent
/// reports it, the kernel part from that agent's last status.
pub fn member_sample(member: &MemberState, registry: &AgentRegistry, at_ms: u64) -> MemberSample {
    let agent = registry.find(member).and_then(|(record, identity)| {
        let (status, _) = record.status.as_ref()?;
        Some(agent_sample(status, &identity))
    });
    MemberSample {
        at_ms,
        name: member.name.clone(),
        reachable: member.reachable,
        is_leader: member.is_leader,
        server_wal: member
            .server
            .as_ref()
            .filter(|m| !m.series.wal_fsync.is_empty())
            .map(|m| m.series.wal_fsync.clone()),
        agent,
    }
}

/// The kernel part of a sample from an agent's status and the member's identity in it.
pub fn agent_sample(status: &AgentStatus, identity: &MemberIdentity) -> AgentSample {
    let name = identity.name.as_str();
    let wal = join::wal_fsync_slots(status, name).unwrap_or_default();
    let devices = status
        .devices
        .iter()
        .filter(|d| d.members.iter().any(|m| m == name))
        .map(|d| DeviceSample {
            name: d.name.clone(),
            id: d.device.clone(),
            service: Log2Slots::new(d.count, d.sum_nanos, &d.log2_slots),
            issuers: d.issuers.clone(),
        })
        .collect();
    let sched = status.sched.iter().find(|s| s.member == name);
    let runq = sched.map(|s| Log2Slots::new(s.runq_count, s.runq_sum_nanos, &s.runq_log2_slots));
    AgentSample {
        pid: identity.pid,
        mode: status.mode.clone(),
        wal_fdatasync: wal,
        devices,
        runq,
        throttle: sched
            .filter(|s| s.has_throttle)
            .map(|s| (s.nr_periods, s.nr_throttled, s.throttled_nanos)),
        cgroup: sched.map(|s| s.cgroup.clone()).unwrap_or_default(),
        peers: status
            .peers
            .iter()
            .filter(|p| p.member == name)
            .map(|p| {
                let peer = if p.peer_member.is_empty() {
                    p.peer_addr.clone()
                } else {
                    p.peer_member.clone()
                };
                (peer, p.srtt_micros, p.retransmits)
            })
            .collect(),
        wal_write: wal_write_slots(status, name),
        process_state: status
            .resources
            .iter()
            .find(|r| r.member == name && r.pid == identity.pid)
            .map(|r| r.process_state.clone())
            .unwrap_or_default(),
        cgroup_io: status
            .cgroup_io
            .iter()
            .find(|c| c.member == name)
            .map(|c| CgroupIoSample {
                cgroup: c.cgroup.clone(),
                devices: c.devices.clone(),
                pressure_source: c.pressure_source.clone(),
                io_pressure: c.io_pressure.filter(|_| c.has_io_pressure),
                cpu_pressure: c.cpu_pressure.filter(|_| c.has_cpu_pressure),
                sampled_at_ms: c.sampled_at_ms,
            }),
    }
}

/// The member's kernel-timed WAL writes, every write op summed.
fn wal_write_slots(status: &AgentStatus, member: &str) -> Log2Slots {
    let mut sum = Log2Slots::default();
    for h in status.histograms.iter().filter(|h| {
        h.member == member
            && h.file() == FileClass::Wal
            && matches!(
                h.op(),
                DiskOp::Write | DiskOp::Pwrite64 | DiskOp::Writev | DiskOp::Pwritev
            )
    }) {
        sum.add(h.count, h.sum_nanos, &h.log2_slots);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_windows_and_quantiles() {
        let mut slots = vec![0u64; 21];
        slots[20] = 10;
        let a = Log2Slots::new(10, 10_000_000, &slots);
        let mut b = a.clone();
        // 10 more in [2^23, 2^24) ns ≈ 8.4-16.8 ms
        let mut more = vec![0u64; 24];
        more[23] = 10;
        b.add(10, 120_000_000, &more);
        let w = b.since(&a);
        assert_eq!(w.count(), 10);
        let p50 = w.quantile_ms(0.5).unwrap_or_default();
        assert!((8.3..16.8).contains(&p50), "{p50}");
        assert_eq!(w.mean_ms(), Some(12.0));
        // A restart: the later sample alone.
        assert_eq!(a.since(&b), a.histogram());
    }

    #[test]
    fn bucket_windows_and_quantiles() {
        let a = CumulativeBuckets::from_pairs([(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)]);
        let b = CumulativeBuckets::from_pairs([(0.001, 10.0), (0.01, 20.0), (f64::INFINITY, 20.0)]);
        let w = b.since(&a);
        assert_eq!(w.count(), 10);
        let p99 = w.quantile_ms(0.99).unwrap_or_default();
        assert!((9.0..=10.0).contains(&p99), "{p99}");
    }
}
