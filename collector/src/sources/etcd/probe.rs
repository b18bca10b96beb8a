//! The collector's own request probes: a linearizable read and a put to a reserved key
//! (`/etcd-monitor/probe/<member>`) on each member, timed, with quantiles over a recent window.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use etcd_client::Client;
use hdrhistogram::Histogram;

use crate::model::cluster::Quantiles;

/// Prefix of every key the collector writes.
pub const PROBE_PREFIX: &str = "/etcd-monitor/probe/";

/// The probe key of a member.
pub fn probe_key(member: &str) -> String {
    format!("{PROBE_PREFIX}{member}")
}

/// Latencies of the last `max_age` (at most `max_samples` of them).
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    samples: VecDeque<(Instant, Duration)>,
    max_age: Duration,
    max_samples: usize,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::new(Duration::from_secs(300), 1000)
    }
}

impl LatencyWindow {
    /// A window of `max_age` holding at most `max_samples`.
    pub fn new(max_age: Duration, max_samples: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            max_age,
            max_samples: max_samples.max(1),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, at: Instant, latency: Duration) {
        self.samples.push_back((at, latency));
        while self.samples.len() > self.max_samples {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > self.max_age)
        {
            self.samples.pop_front();
        }
    }

    /// p50/p95/p99 of the window, `None` when empty.
    pub fn quantiles(&self) -> Option<Quantiles> {
        if self.samples.is_empty() {
            return None;
        }
        // 1 µs .. 1 h at 3 significant digits.
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
        for (_, d) in &self.samples {
            let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
            h.saturating_record(us);
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Quantiles {
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            samples: h.len(),
        })
    }
}

/// Read and write windows of one member.
#[derive(Debug, Clone, Default)]
pub struct MemberProbes {
    /// Linearizable reads.
    pub read: LatencyWindow,
    /// Puts of the probe key.
    pub write: LatencyWindow,
}

/// Times a linearizable read of `key` through `client`.
pub async fn read(mut client: Client, key: &str, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, client.get(key, None)).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(crate::sources::etcd::client::error_chain(&e)),
        Err(_) => Err(format!("read probe timed out after {timeout:?}")),
    }
}

/// Times a put of the current time to `key` through `client`.
pub async fn write(mut client: Client, key: &str, timeout: Duration) -> Result<Duration, String> {
    let value = crate::model::time::now_ms().to_string();
    let start = Instant::now();
    match tokio::time::timeout(timeout, client.put(key, value, None)).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(crate::sources::etcd::client::error_chain(&e)),
        Err(_) => Err(format!("write probe timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_window() {
        let mut w = LatencyWindow::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        for i in 1..=100u64 {
            w.record(t0, Duration::from_millis(i));
        }
        let q = w.quantiles().unwrap_or_default();
        assert_eq!(q.samples, 100);
        assert!((q.p50_ms - 50.0).abs() < 0.1, "{q:?}");
        assert!((q.p95_ms - 95.0).abs() < 0.1, "{q:?}");
        assert!((q.p99_ms - 99.0).abs() < 0.1, "{q:?}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = LatencyWindow::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        w.record(t0, Duration::from_millis(500));
        w.record(t0 + Duration::from_secs(11), Duration::from_millis(1));
        assert_eq!(w.quantiles().map(|q| q.samples), Some(1));
        for _ in 0..5 {
            w.record(t0 + Duration::from_secs(12), Duration::from_millis(2));
        }
        assert_eq!(w.quantiles().map(|q| q.samples), Some(3));
        assert!(LatencyWindow::default().quantiles().is_none());
    }
}
