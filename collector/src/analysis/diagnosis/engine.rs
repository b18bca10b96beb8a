//! The verdict: given the first and last sample of a window, decompose a slow WAL sync into
//! etcd-observed time (server histogram), syscall time (kernel fdatasync), device service time
//! and scheduling delay, and name the cause.
//!
//! Order of reasoning, when the WAL sync is slow (etcd's or the kernel's `quantile` — p99 by
//! default — above `slow_fsync_ms`):
//! 1. no agent → `inconclusive` (kernel evidence missing);
//! 2. the device under the data dir is slow (mean request service time above
//!    `slow_device_ms`) → `noisy_neighbor` when other processes issued more than
//!    `neighbor_share` of the device's I/O (bytes or bios) in the window (named: the one with
//!    the most bios), else
//!    `disk_slow`;
//! 3. the member's cgroup was throttled in more than `throttle_ratio` of its CFS periods →
//!    `cpu_starved{throttled}`; its threads' run-queue p99 is above `runq_ms` →
//!    `cpu_starved{runqueue}`;
//! 4. otherwise `inconclusive`, saying which evidence is missing or that none explains it.
//!
//! When the WAL sync is not slow: a peer with RTT above `peer_rtt_ms` or more than
//! `peer_retransmits` retransmits in the window → `peer_network_slow{peer}`, else `healthy`.

use serde::Serialize;
use utoipa::ToSchema;

use super::{DiagnosisConfig, sample::MemberSample};

/// The causes a verdict can name, as in `etcdmon_diagnosis{cause}`.
pub const CAUSES: [&str; 6] = [
    "healthy",
    "disk_slow",
    "noisy_neighbor",
    "cpu_starved",
    "peer_network_slow",
    "inconclusive",
];

/// The process named by a `noisy_neighbor` verdict.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PeerEvidence {
    /// Peer member (or address).
    pub peer: String,
    /// Latest kernel smoothed RTT, ms.
    pub rtt_ms: f64,
    /// Retransmits in the window.
    pub retransmits: u64,
}

/// The numbers behind a verdict, over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
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
    /// Per-peer network figures.
    pub peers: Vec<PeerEvidence>,
}

/// A member's verdict for one window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Verdict {
    /// One of [`CAUSES`].
    pub cause: String,
    /// `throttled` or `runqueue` for `cpu_starved`.
    pub reason: Option<String>,
    /// For `noisy_neighbor`.
    pub neighbor: Option<Neighbor>,
    /// For `peer_network_slow`.
    pub peer: Option<String>,
    /// For `inconclusive`: the evidence that is missing.
    pub missing: Vec<String>,
    /// One line for people (alert annotations, the status page).
    pub summary: String,
    /// The numbers.
    pub evidence: Evidence,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} ms"))
}

/// The verdict for the window from `first` to `last`.
pub fn diagnose(first: &MemberSample, last: &MemberSample, cfg: &DiagnosisConfig) -> Verdict {
    let mut ev = Evidence {
        quantile: cfg.quantile,
        ..Evidence::default()
    };
    if let (Some(a), Some(b)) = (&first.server_wal, &last.server_wal) {
        let w = b.since(a);
        ev.etcd_wal_syncs = w.count();
        ev.etcd_wal_fsync_p99_ms = w.quantile_ms(0.99);
        ev.etcd_wal_fsync_at_quantile_ms = w.quantile_ms(cfg.quantile);
    }
    let kernel = match (&first.agent, &last.agent) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let mut device_slow = None;
    let mut cpu = None;
    let mut has_device = false;
    let mut has_sched = false;
    let mut neighbor: Option<Neighbor> = None;
    if let Some((a, b)) = kernel {
        let wal = b.wal_fdatasync.since(&a.wal_fdatasync);
        ev.syscall_fdatasyncs = wal.count();
        ev.syscall_fdatasync_p99_ms = wal.quantile_ms(0.99);
        ev.syscall_fdatasync_at_quantile_ms = wal.quantile_ms(cfg.quantile);
        ev.syscall_fdatasync_mean_ms = wal.mean_ms();
        // The slowest device under the data dir.
        for d in &b.devices {
            let before = a
                .devices
                .iter()
                .find(|x| x.name == d.name)
                .map(|x| x.service.clone())
                .unwrap_or_default();
            let w = d.service.since(&before);
            has_device = true;
            let mean = w.mean_ms();
            if ev.device.is_none() || mean > ev.device_service_mean_ms {
                ev.device = Some(d.name.clone());
                ev.device_requests = w.count();
                ev.device_service_mean_ms = mean;
                ev.device_service_p99_ms = w.quantile_ms(0.99);
                // Who wrote to it in the window, in bytes and in bios.
                let delta = |pid: u32, bytes: u64, ios: u64| {
                    let old = a
                        .devices
                        .iter()
                        .find(|x| x.name == d.name)
                        .and_then(|x| x.issuers.iter().find(|i| i.pid == pid));
                    (
                        bytes.saturating_sub(old.map_or(0, |i| i.bytes)),
                        ios.saturating_sub(old.map_or(0, |i| i.ios)),
                    )
                };
                let (mut own, mut others) = ((0u64, 0u64), (0u64, 0u64));
                let mut top: Option<(u64, Neighbor)> = None;
                for i in d.issuers.iter().filter(|i| !i.kernel_thread) {
                    let (bytes, ios) = delta(i.pid, i.bytes, i.ios);
                    if i.pid == b.pid {
                        own = (own.0 + bytes, own.1 + ios);
                        continue;
                    }
                    others = (others.0 + bytes, others.1 + ios);
                    if top.as_ref().is_none_or(|(t, _)| ios > *t) {
                        top = Some((
                            ios,
                            Neighbor {
                                pid: i.pid,
                                comm: i.comm.clone(),
                                cgroup: i.cgroup.clone(),
                                bytes,
                            },
                        ));
                    }
                }
                // A device is shared by requests (IOPS) and by bandwidth: whichever share of
                // the two the others hold is larger.
                let share = |own: u64, others: u64| {
                    (own + others > 0).then(|| others as f64 / (own + others) as f64)
                };
                ev.other_io_share = match (share(own.0, others.0), share(own.1, others.1)) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
                let top = top.map(|(_, n)| n);
                neighbor = top;
            }
        }
        if let Some(mean) = ev.device_service_mean_ms {
            device_slow = Some(mean > cfg.slow_device_ms);
        }
        if let (Some(ra), Some(rb)) = (&a.runq, &b.runq) {
            has_sched = true;
            let w = rb.since(ra);
            ev.runq_p99_ms = w.quantile_ms(0.99);
            ev.runq_mean_ms = w.mean_ms();
        }
        if let (Some(ta), Some(tb)) = (a.throttle, b.throttle) {
            has_sched = true;
            let periods = tb.0.saturating_sub(ta.0);
            let throttled = tb.1.saturating_sub(ta.1);
            ev.cfs_periods = Some(periods);
            ev.cfs_throttled_periods = Some(throttled);
            ev.cfs_throttled_ms = Some(tb.2.saturating_sub(ta.2) as f64 / 1e6);
            if periods > 0 && throttled as f64 / periods as f64 > cfg.throttle_ratio {
                cpu = Some("throttled");
            }
        }
        if cpu.is_none() && ev.runq_p99_ms.is_some_and(|p| p > cfg.runq_ms) {
            cpu = Some("runqueue");
        }
        for (peer, rtt_us, retrans) in &b.peers {
            let old = a.peers.iter().find(|p| &p.0 == peer).map_or(0, |p| p.2);
            ev.peers.push(PeerEvidence {
                peer: peer.clone(),
                rtt_ms: f64::from(*rtt_us) / 1e3,
                retransmits: retrans.saturating_sub(old),
            });
        }
    }

    let enough = |n: u64| n >= cfg.min_syncs;
    let slow = |p: Option<f64>| p.is_some_and(|p| p > cfg.slow_fsync_ms);
    let slow_sync = (enough(ev.etcd_wal_syncs) && slow(ev.etcd_wal_fsync_at_quantile_ms))
        || (enough(ev.syscall_fdatasyncs) && slow(ev.syscall_fdatasync_at_quantile_ms));
    let numbers = format!(
        "etcd WAL fsync p99 {}, syscall p99 {}, device {} service mean {}, run-queue p99 {}",
        ms(ev.etcd_wal_fsync_p99_ms),
        ms(ev.syscall_fdatasync_p99_ms),
        ev.device.as_deref().unwrap_or("n/a"),
        ms(ev.device_service_mean_ms),
        ms(ev.runq_p99_ms),
    );
    let verdict = |cause: &str, summary: String| Verdict {
        cause: cause.to_string(),
        reason: None,
        neighbor: None,
        peer: None,
        missing: Vec::new(),
        summary,
        evidence: ev.clone(),
    };

    if first.server_wal.is_none() && kernel.is_none() {
        let mut v = verdict(
            "inconclusive",
            "no server metrics and no agent for this member".to_string(),
        );
        v.missing = vec![
            "server metrics (etcd /metrics scrape)".to_string(),
            "an agent on the member's node".to_string(),
        ];
        return v;
    }
    if !slow_sync {
        let worst = ev
            .peers
            .iter()
            .filter(|p| p.rtt_ms > cfg.peer_rtt_ms || p.retransmits > cfg.peer_retransmits)
            .max_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms));
        if let Some(p) = worst {
            let mut v = verdict(
                "peer_network_slow",
                format!(
                    "peer network slow to {}: RTT {:.1} ms, {} retransmits in the window; WAL sync fine ({numbers})",
                    p.peer, p.rtt_ms, p.retransmits
                ),
            );
            v.peer = Some(p.peer.clone());
            return v;
        }
        return verdict(
            "healthy",
            format!("WAL sync within {:.0} ms ({numbers})", cfg.slow_fsync_ms),
        );
    }
    let Some((_, last_agent)) = kernel else {
        let mut v = verdict(
            "inconclusive",
            format!("WAL sync slow but no kernel evidence ({numbers})"),
        );
        v.missing = vec!["an agent on the member's node (kernel evidence)".to_string()];
        return v;
    };
    if device_slow == Some(true) {
        if ev.other_io_share.is_some_and(|s| s > cfg.neighbor_share)
            && let Some(n) = neighbor
        {
            let mut v = verdict(
                "noisy_neighbor",
                format!(
                    "noisy neighbour: {} (pid {}, cgroup {}) issued {:.0} % of the I/O on {} ({numbers})",
                    n.comm,
                    n.pid,
                    n.cgroup,
                    ev.other_io_share.unwrap_or(0.0) * 100.0,
                    ev.device.as_deref().unwrap_or("the device"),
                ),
            );
            v.neighbor = Some(n);
            return v;
        }
        return verdict(
            "disk_slow",
            format!(
                "disk slow: the device under the data dir takes {} per request ({numbers})",
                ms(ev.device_service_mean_ms)
            ),
        );
    }
    if let Some(reason) = cpu {
        let mut v = verdict(
            "cpu_starved",
            match reason {
                "throttled" => format!(
                    "CPU starved: cgroup {} throttled in {} of {} periods ({} throttled); disk fast ({numbers})",
                    last_agent.cgroup,
                    ev.cfs_throttled_periods.unwrap_or(0),
                    ev.cfs_periods.unwrap_or(0),
                    ms(ev.cfs_throttled_ms),
                ),
                _ => format!(
                    "CPU starved: threads wait {} (p99) for a CPU; disk fast ({numbers})",
                    ms(ev.runq_p99_ms)
                ),
            },
        );
        v.reason = Some(reason.to_string());
        return v;
    }
    let mut missing = Vec::new();
    if !has_device {
        missing.push(
            "block device evidence (probe group block, or a data dir on a block device)"
                .to_string(),
        );
    }
    if !has_sched {
        missing.push("scheduler evidence (probe group sched)".to_string());
    }
    let mut v = verdict(
        "inconclusive",
        if missing.is_empty() {
            format!(
                "WAL sync slow, but neither the device nor the scheduler explains it ({numbers})"
            )
        } else {
            format!("WAL sync slow; missing {} ({numbers})", missing.join(", "))
        },
    );
    v.missing = missing;
    v
}

#[cfg(test)]
mod tests {
    use etcd_monitor_proto::v1::IoIssuer;

    use super::*;
    use crate::{
        analysis::diagnosis::sample::AgentSample, analysis::diagnosis::sample::DeviceSample,
    };
    use etcd_monitor_histogram::{CumulativeBuckets, Log2Slots};

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
            server_wal: Some(server(fsyncs as f64, fsync_ns > 10_000_000)),
            agent: Some(AgentSample {
                pid: 100,
                mode: "ebpf".into(),
                wal_fdatasync: log2(fsyncs, fsync_ns),
                devices: vec![DeviceSample {
                    name: "loop3".into(),
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
}
