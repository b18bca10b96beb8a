//! Per-member totals of the kernel's exact per-(tgid, op, class) counters.
//!
//! The kernel keeps one `OpStats` per CPU per (tgid, op, class). The agent sums the CPUs, maps
//! the tgid to its member, and keeps the final counts of processes that exited (`retired`), so
//! a member's counters only go up across etcd restarts.

use std::collections::BTreeMap;

use etcd_monitor_agent_common::{
    hist::HIST_SLOTS,
    syscall::{FileClass, Op, OpStats},
};
use etcd_monitor_histogram::Log2Slots;

/// Counters of one (member, op, class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTotals {
    /// Completed calls.
    pub count: u64,
    /// Bytes written or synced.
    pub bytes: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Sum of durations in nanoseconds.
    pub sum_ns: u64,
    /// Log2 histogram of durations (see `etcd_monitor_agent_common::hist`).
    pub slots: [u64; HIST_SLOTS],
}

impl Default for OpTotals {
    fn default() -> Self {
        Self {
            count: 0,
            bytes: 0,
            errors: 0,
            sum_ns: 0,
            slots: [0; HIST_SLOTS],
        }
    }
}

impl OpTotals {
    /// Adds one CPU's (or one process's) counters, saturating (a corrupted map entry must not
    /// overflow into a small number).
    pub fn add_stats(&mut self, stats: &OpStats) {
        self.add_parts(
            stats.count,
            stats.bytes,
            stats.errors,
            stats.sum_ns,
            &stats.slots,
        );
    }

    /// Adds another total, saturating.
    pub fn add(&mut self, other: &OpTotals) {
        self.add_parts(
            other.count,
            other.bytes,
            other.errors,
            other.sum_ns,
            &other.slots,
        );
    }

    fn add_parts(&mut self, count: u64, bytes: u64, errors: u64, sum_ns: u64, slots: &[u64]) {
        self.count = self.count.saturating_add(count);
        self.bytes = self.bytes.saturating_add(bytes);
        self.errors = self.errors.saturating_add(errors);
        self.sum_ns = self.sum_ns.saturating_add(sum_ns);
        for (total, slot) in self.slots.iter_mut().zip(slots) {
            *total = total.saturating_add(*slot);
        }
    }

    /// Sums the per-CPU values of one map entry.
    pub fn from_per_cpu<'a>(values: impl IntoIterator<Item = &'a OpStats>) -> Self {
        let mut totals = Self::default();
        for v in values {
            totals.add_stats(v);
        }
        totals
    }

    /// The durations as the shared histogram model's log2 slots: quantiles, windows and the
    /// Prometheus buckets come from there, under the rules the collector uses too.
    pub fn log2(&self) -> Log2Slots {
        Log2Slots::new(self.count, self.sum_ns, &self.slots)
    }
}

/// (op, class) → totals, for one member.
pub type MemberOps = BTreeMap<(Op, FileClass), OpTotals>;

/// member name → its ops.
pub type Snapshot = BTreeMap<String, MemberOps>;

/// Adds `totals` under `(member, op, class)` in `snapshot`.
pub fn accumulate(
    snapshot: &mut Snapshot,
    member: &str,
    op: Op,
    class: FileClass,
    totals: &OpTotals,
) {
    snapshot
        .entry(member.to_string())
        .or_default()
        .entry((op, class))
        .or_default()
        .add(totals);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(count: u64, slot: usize) -> OpStats {
        let mut s = OpStats::ZERO;
        s.count = count;
        s.bytes = count * 10;
        s.slots[slot] = count;
        s
    }

    #[test]
    fn sums_cpus_and_processes() {
        let per_cpu = [stats(3, 10), stats(5, 12)];
        let totals = OpTotals::from_per_cpu(per_cpu.iter());
        assert_eq!(totals.count, 8);
        assert_eq!(totals.bytes, 80);
        assert_eq!(totals.slots[10], 3);
        assert_eq!(totals.slots[12], 5);

        let mut snapshot = Snapshot::new();
        accumulate(&mut snapshot, "m0", Op::Fdatasync, FileClass::Wal, &totals);
        accumulate(&mut snapshot, "m0", Op::Fdatasync, FileClass::Wal, &totals);
        assert_eq!(snapshot["m0"][&(Op::Fdatasync, FileClass::Wal)].count, 16);
    }

    #[test]
    fn quantiles_follow_the_shared_rule() {
        let mut slots = [0; HIST_SLOTS];
        slots[10] = 90; // [1024, 2048) ns
        slots[20] = 10; // [2^20, 2^21) ns
        let totals = OpTotals {
            count: 100,
            slots,
            ..OpTotals::default()
        };
        let h = totals.log2().histogram();
        // rank 50 of 90 inside [1024, 2048): interpolated, not the slot's upper bound.
        let p50 = h.quantile(0.5).unwrap_or_default() * 1e9;
        assert!(
            (p50 - (1024.0 + 1024.0 * 50.0 / 90.0)).abs() < 1e-6,
            "{p50}"
        );
        // rank 99 of 100: 9th of the 10 in [2^20, 2^21).
        let p99 = h.quantile(0.99).unwrap_or_default() * 1e9;
        let lo = (1u64 << 20) as f64;
        assert!((p99 - (lo + lo * 0.9)).abs() < 1e-3, "{p99}");
        assert_eq!(OpTotals::default().log2().histogram().quantile(0.99), None);
    }

    #[test]
    fn sums_saturate() {
        let mut slots = [0; HIST_SLOTS];
        slots[0] = u64::MAX;
        let mut totals = OpTotals {
            count: u64::MAX,
            slots,
            ..OpTotals::default()
        };
        let copy = totals;
        totals.add(&copy);
        assert_eq!(totals.count, u64::MAX);
        assert_eq!(totals.slots[0], u64::MAX);
    }
}
