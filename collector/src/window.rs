//! Latency over the last interval, from two readings of a cumulative histogram.
//!
//! etcd's histograms and the agent's log2 slots count since their process started, so a
//! quantile over them barely moves once a member has run for a while. The history store and the
//! status page want "how slow were WAL syncs in the last interval": the difference of two
//! readings, bucket by bucket. A counter that went down (a restart) starts a new baseline.

use std::collections::HashMap;

use prometheus_parse::HistogramCount;

use crate::{ingest::join::slot_quantile_ms, scrape::histogram_quantile};

/// Previous readings per member id, for server (etcd) and kernel (agent) WAL fsync histograms.
#[derive(Debug, Default)]
pub struct FsyncWindows {
    server: HashMap<String, Vec<(f64, f64)>>,
    kernel: HashMap<String, Vec<u64>>,
}

/// WAL fsync p99 over the last interval, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowP99 {
    /// From etcd's `etcd_disk_wal_fsync_duration_seconds`.
    pub server_ms: Option<f64>,
    /// From the agent's in-kernel fdatasync histogram of WAL files.
    pub kernel_ms: Option<f64>,
}

impl FsyncWindows {
    /// Records the current readings of `member_id` and returns the p99 of what happened since
    /// the previous ones (`None` on the first reading, after a reset or with no calls).
    pub fn observe(
        &mut self,
        member_id: &str,
        server: Option<&[(f64, f64)]>,
        kernel: Option<&[u64]>,
    ) -> WindowP99 {
        let server_ms = server.and_then(|now| {
            let prev = self.server.insert(member_id.to_string(), now.to_vec())?;
            let delta = bucket_delta(&prev, now)?;
            histogram_quantile(0.99, &delta).map(|s| s * 1000.0)
        });
        let kernel_ms = kernel.and_then(|now| {
            let prev = self.kernel.insert(member_id.to_string(), now.to_vec())?;
            slot_quantile_ms(&slot_delta(&prev, now)?, 0.99)
        });
        WindowP99 {
            server_ms,
            kernel_ms,
        }
    }

    /// Forgets members no longer present.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.server.retain(|id, _| keep(id));
        self.kernel.retain(|id, _| keep(id));
    }
}

/// `now - prev` bucket by bucket (`(upper bound, cumulative count)`, as the scrape keeps them);
/// `None` when the bucket layout changed or a count fell.
pub fn bucket_delta(prev: &[(f64, f64)], now: &[(f64, f64)]) -> Option<Vec<HistogramCount>> {
    if prev.len() != now.len() {
        return None;
    }
    prev.iter()
        .zip(now)
        .map(|(&(ple, pc), &(nle, nc))| {
            (ple == nle && nc >= pc).then_some(HistogramCount {
                less_than: nle,
                count: nc - pc,
            })
        })
        .collect()
}

/// `now - prev` slot by slot; `None` when a count fell (the agent restarted).
pub fn slot_delta(prev: &[u64], now: &[u64]) -> Option<Vec<u64>> {
    let len = prev.len().max(now.len());
    (0..len)
        .map(|i| {
            let (p, n) = (
                prev.get(i).copied().unwrap_or(0),
                now.get(i).copied().unwrap_or(0),
            );
            n.checked_sub(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(counts: &[(f64, f64)]) -> Vec<(f64, f64)> {
        counts.to_vec()
    }

    fn as_counts(b: &[(f64, f64)]) -> Vec<HistogramCount> {
        b.iter()
            .map(|&(less_than, count)| HistogramCount { less_than, count })
            .collect()
    }

    #[test]
    fn the_window_sees_only_what_happened_since_the_last_reading() {
        let mut w = FsyncWindows::default();
        // 1000 fast syncs (< 1 ms) before the window.
        let before = buckets(&[(0.001, 1000.0), (0.1, 1000.0), (f64::INFINITY, 1000.0)]);
        assert_eq!(w.observe("a", Some(&before), None).server_ms, None);
        // Then 100 slow ones (10-100 ms): the cumulative p99 is still under 1 ms, the window's
        // is near 100 ms.
        let after = buckets(&[(0.001, 1000.0), (0.1, 1100.0), (f64::INFINITY, 1100.0)]);
        assert!(histogram_quantile(0.99, &as_counts(&after)).is_some_and(|s| s < 0.1));
        let p99 = w.observe("a", Some(&after), None).server_ms;
        assert!(p99.is_some_and(|ms| ms > 90.0), "{p99:?}");
        // Nothing since: no quantile rather than a stale one.
        assert_eq!(w.observe("a", Some(&after), None).server_ms, None);
    }

    #[test]
    fn a_reset_starts_a_new_baseline() {
        let mut w = FsyncWindows::default();
        w.observe("a", None, Some(&[0, 10, 5]));
        assert_eq!(w.observe("a", None, Some(&[0, 1])).kernel_ms, None);
        let mut later = vec![0; 22];
        later[1] = 1;
        later[21] = 5;
        let p99 = w.observe("a", None, Some(&later)).kernel_ms;
        assert!(p99.is_some_and(|ms| ms > 1.0), "{p99:?}");
    }
}
