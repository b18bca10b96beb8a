//! Latency over the last interval, from two readings of a cumulative histogram.
//!
//! etcd's histograms and the agent's log2 slots count since their process started, so a
//! quantile over them barely moves once a member has run for a while. The history store and the
//! status page want "how slow were WAL syncs in the last interval": the difference of two
//! readings, taken — with its counter-reset rule and its quantile rule — from the shared
//! histogram model (`etcd_monitor_histogram::delta`, `Histogram::quantile`).

use std::collections::HashMap;

use etcd_monitor_histogram::{CumulativeBuckets, Histogram, Log2Slots, delta};

/// Previous readings per member id, for server (etcd) and kernel (agent) WAL fsync histograms.
#[derive(Debug, Default)]
pub struct FsyncWindows {
    server: HashMap<String, Histogram>,
    kernel: HashMap<String, Histogram>,
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
    /// the previous ones (`None` on the first reading or with no calls since; after a restart,
    /// the calls counted since the restart).
    pub fn observe(
        &mut self,
        member_id: &str,
        server: Option<&CumulativeBuckets>,
        kernel: Option<&Log2Slots>,
    ) -> WindowP99 {
        WindowP99 {
            server_ms: server
                .and_then(|now| window_p99_ms(&mut self.server, member_id, now.histogram())),
            kernel_ms: kernel
                .and_then(|now| window_p99_ms(&mut self.kernel, member_id, now.histogram())),
        }
    }

    /// Forgets members no longer present.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.server.retain(|id, _| keep(id));
        self.kernel.retain(|id, _| keep(id));
    }
}

fn window_p99_ms(
    previous: &mut HashMap<String, Histogram>,
    member_id: &str,
    now: Histogram,
) -> Option<f64> {
    let prev = previous.insert(member_id.to_string(), now.clone())?;
    delta(&prev, &now).quantile_ms(0.99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_sees_only_what_happened_since_the_last_reading() {
        let mut w = FsyncWindows::default();
        // 1000 fast syncs (< 1 ms) before the window.
        let before = CumulativeBuckets::from_pairs([
            (0.001, 1000.0),
            (0.1, 1000.0),
            (f64::INFINITY, 1000.0),
        ]);
        assert_eq!(w.observe("a", Some(&before), None).server_ms, None);
        // Then 100 slow ones (10-100 ms): the cumulative p99 is still under 1 ms, the window's
        // is near 100 ms.
        let after = CumulativeBuckets::from_pairs([
            (0.001, 1000.0),
            (0.1, 1100.0),
            (f64::INFINITY, 1100.0),
        ]);
        assert!(after.histogram().quantile(0.99).is_some_and(|s| s < 0.1));
        let p99 = w.observe("a", Some(&after), None).server_ms;
        assert!(p99.is_some_and(|ms| ms > 90.0), "{p99:?}");
        // Nothing since: no quantile rather than a stale one.
        assert_eq!(w.observe("a", Some(&after), None).server_ms, None);
    }

    #[test]
    fn a_reset_gives_what_was_counted_since_the_restart() {
        let mut w = FsyncWindows::default();
        w.observe("a", None, Some(&Log2Slots::new(15, 0, &[0, 10, 5])));
        // The agent restarted: 1 call in slot 1 ([2, 4) ns) since.
        let p99 = w
            .observe("a", None, Some(&Log2Slots::new(1, 3, &[0, 1])))
            .kernel_ms;
        assert!(p99.is_some_and(|ms| ms > 2e-6 && ms <= 4e-6), "{p99:?}");
        let mut later = vec![0; 22];
        later[1] = 1;
        later[21] = 5;
        let p99 = w
            .observe("a", None, Some(&Log2Slots::new(6, 3, &later)))
            .kernel_ms;
        assert!(p99.is_some_and(|ms| ms > 2.0), "{p99:?}");
    }
}
