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
    /// Adds one CPU's (or one process's) counters.
    pub fn add_stats(&mut self, stats: &OpStats) {
        self.count += stats.count;
        self.bytes += stats.bytes;
        self.errors += stats.errors;
        self.sum_ns += stats.sum_ns;
        for (total, slot) in self.slots.iter_mut().zip(stats.slots.iter()) {
            *total += slot;
        }
    }

    /// Adds another total.
    pub fn add(&mut self, other: &OpTotals) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.sum_ns += other.sum_ns;
        for (total, slot) in self.slots.iter_mut().zip(other.slots.iter()) {
            *total += slot;
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

    /// The duration below which `q` (0..=1) of the calls fell, as the upper bound of the log2
    /// slot holding that rank, in nanoseconds; `None` with no calls.
    pub fn quantile_upper_bound_ns(&self, q: f64) -> Option<u64> {
        let total: u64 = self.slots.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (slot, count) in self.slots.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(etcd_monitor_agent_common::hist::slot_upper_bound_ns(slot));
            }
        }
        None
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
    fn quantiles_use_slot_upper_bounds() {
        let mut totals = OpTotals::default();
        totals.slots[10] = 90; // < 2048 ns
        totals.slots[20] = 10; // < 2^21 ns
        assert_eq!(totals.quantile_upper_bound_ns(0.5), Some(2048));
        assert_eq!(totals.quantile_upper_bound_ns(0.9), Some(2048));
        assert_eq!(totals.quantile_upper_bound_ns(0.99), Some(1 << 21));
        assert_eq!(OpTotals::default().quantile_upper_bound_ns(0.99), None);
    }
}
