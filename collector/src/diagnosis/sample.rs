//! One member's cumulative evidence at one moment, taken from the scrape (server view) and its
//! agent's latest `AgentStatus` (kernel view). Windows are differences of two samples.

use etcd_monitor_proto::v1::{AgentStatus, DiskOp, FileClass, IoIssuer, MemberIdentity};

/// A log2 histogram (slot `k` counts durations in `[2^k, 2^(k+1))` ns), cumulative.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log2 {
    /// Samples.
    pub count: u64,
    /// Sum of durations, ns.
    pub sum_ns: u64,
    /// Slots.
    pub slots: Vec<u64>,
}

impl Log2 {
    /// Adds another histogram.
    pub fn add(&mut self, count: u64, sum_ns: u64, slots: &[u64]) {
        // Agent-supplied counters: saturate rather than wrap or panic.
        self.count = self.count.saturating_add(count);
        self.sum_ns = self.sum_ns.saturating_add(sum_ns);
        if self.slots.len() < slots.len() {
            self.slots.resize(slots.len(), 0);
        }
        for (a, b) in self.slots.iter_mut().zip(slots) {
            *a = a.saturating_add(*b);
        }
    }

    /// `self - earlier`; when a counter went down (an agent or process restart), `self` alone.
    pub fn since(&self, earlier: &Log2) -> Log2 {
        if self.count < earlier.count || self.sum_ns < earlier.sum_ns {
            return self.clone();
        }
        Log2 {
            count: self.count - earlier.count,
            sum_ns: self.sum_ns - earlier.sum_ns,
            slots: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, v)| v.saturating_sub(earlier.slots.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The `q` quantile in milliseconds, linear inside the log2 slot; `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.slots.iter().fold(0u64, |a, s| a.saturating_add(*s));
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (slot, n) in self.slots.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= rank {
                let lo = if slot == 0 {
                    0.0
                } else {
                    (1u64 << slot) as f64
                };
                let hi = (1u64 << (slot + 1)) as f64;
                let ns = lo + (hi - lo) * ((rank - seen) / n).clamp(0.0, 1.0);
                return Some(ns / 1e6);
            }
            seen += n;
        }
        None
    }

    /// Mean in milliseconds; `None` without samples.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1e6)
    }
}

/// Cumulative Prometheus buckets `(upper bound seconds, count)`, `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// `self - earlier`, bucket by bucket (a restart: `self` alone).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let total = |b: &Buckets| b.0.last().map_or(0.0, |x| x.1);
        if total(self) < total(earlier) {
            return self.clone();
        }
        Buckets(
            self.0
                .iter()
                .map(|(le, v)| {
                    let old = earlier.0.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
                    (*le, (v - old).max(0.0))
                })
                .collect(),
        )
    }

    /// Observations.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |x| x.1)
    }

    /// The `q` quantile in milliseconds as Prometheus' `histogram_quantile` computes it.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut prev_le, mut prev) = (0.0, 0.0);
        for (le, count) in &self.0 {
            if *count >= rank {
                if le.is_infinite() {
                    return Some(prev_le * 1e3);
                }
                let inside = count - prev;
                let frac = if inside > 0.0 {
                    (rank - prev) / inside
                } else {
                    1.0
                };
                return Some((prev_le + (le - prev_le) * frac) * 1e3);
            }
            prev_le = *le;
            prev = *count;
        }
        Some(prev_le * 1e3)
    }
}

/// A device under the member's data dir.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSample {
    /// Kernel name.
    pub name: String,
    /// Request service time.
    pub service: Log2,
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
    pub wal_fdatasync: Log2,
    /// Devices under the data dir (empty: no block probes, or no block device).
    pub devices: Vec<DeviceSample>,
    /// Run-queue latency; `None` without the sched probes.
    pub runq: Option<Log2>,
    /// cgroup CPU bandwidth: (periods, throttled periods, throttled ns).
    pub throttle: Option<(u64, u64, u64)>,
    /// The member's CPU cgroup.
    pub cgroup: String,
    /// Peers: (name, smoothed RTT µs, retransmits).
    pub peers: Vec<(String, u32, u64)>,
}

/// Everything known about one member at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberSample {
    /// When (Unix ms).
    pub at_ms: u64,
    /// etcd's own `etcd_disk_wal_fsync_duration_seconds`, when scraped.
    pub server_wal: Option<Buckets>,
    /// The kernel view, when an agent reports the member.
    pub agent: Option<AgentSample>,
}

/// The kernel part of a sample from an agent's status and the member's identity in it.
pub fn agent_sample(status: &AgentStatus, identity: &MemberIdentity) -> AgentSample {
    let name = identity.name.as_str();
    let mut wal = Log2::default();
    for h in status
        .histograms
        .iter()
        .filter(|h| h.member == name && h.op() == DiskOp::Fdatasync && h.file() == FileClass::Wal)
    {
        wal.add(h.count, h.sum_nanos, &h.log2_slots);
    }
    let devices = status
        .devices
        .iter()
        .filter(|d| d.members.iter().any(|m| m == name))
        .map(|d| {
            let mut service = Log2::default();
            service.add(d.count, d.sum_nanos, &d.log2_slots);
            DeviceSample {
                name: d.name.clone(),
                service,
                issuers: d.issuers.clone(),
            }
        })
        .collect();
    let sched = status.sched.iter().find(|s| s.member == name);
    let runq = sched.map(|s| {
        let mut h = Log2::default();
        h.add(s.runq_count, s.runq_sum_nanos, &s.runq_log2_slots);
        h
    });
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_windows_and_quantiles() {
        let mut a = Log2::default();
        a.add(
            10,
            10_000_000,
            &[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10,
            ],
        );
        let mut b = a.clone();
        // 10 more in [2^23, 2^24) ns ≈ 8.4-16.8 ms
        let mut more = vec![0u64; 24];
        more[23] = 10;
        b.add(10, 120_000_000, &more);
        let w = b.since(&a);
        assert_eq!(w.count, 10);
        let p50 = w.quantile_ms(0.5).unwrap_or_default();
        assert!((8.3..16.8).contains(&p50), "{p50}");
        assert_eq!(w.mean_ms(), Some(12.0));
        // A restart: the later sample alone.
        assert_eq!(a.since(&b), a);
    }

    #[test]
    fn bucket_windows_and_quantiles() {
        let a = Buckets(vec![(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)]);
        let b = Buckets(vec![(0.001, 10.0), (0.01, 20.0), (f64::INFINITY, 20.0)]);
        let w = b.since(&a);
        assert_eq!(w.count(), 10.0);
        let p99 = w.quantile_ms(0.99).unwrap_or_default();
        assert!((9.0..=10.0).contains(&p99), "{p99}");
    }
}
