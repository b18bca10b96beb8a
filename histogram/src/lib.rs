//! One latency histogram model for etcd-monitor, shared by the agent and the collector.
//!
//! Two sources count durations:
//! - etcd's Prometheus histograms (`etcd_disk_wal_fsync_duration_seconds`, …): upper bounds in
//!   seconds with cumulative counts, a sum and a count — [`CumulativeBuckets`];
//! - the agent's in-kernel log2 histograms: slot `k` counts durations in `[2^k, 2^(k+1))`
//!   nanoseconds, the last slot everything longer — [`Log2Slots`].
//!
//! Both convert into one form, [`Histogram`] (ascending upper bounds in seconds, `+Inf` last,
//! with the count of each bucket), and everything a consumer asks is answered there, once:
//! - what happened over a window: [`delta`] (the one counter-reset rule is stated there);
//! - a quantile: [`Histogram::quantile`] (the one quantile rule is stated there);
//! - a mean: [`Histogram::mean_seconds`].
//!
//! So the status page, history, alerts, diagnosis and the exporters report the same p99 for the
//! same member and window. All counter arithmetic saturates: counters come from agents over the
//! network and may be anything up to `u64::MAX`.

use etcd_monitor_agent_common::hist::{HIST_SLOTS, slot_upper_bound_ns};

/// First log2 slot exposed as a Prometheus bucket of its own (`le` = 2^10 ns ≈ 1 µs); the
/// slots below fold into it.
pub const EXPOSED_FIRST_SLOT: usize = 9;

/// Last log2 slot exposed as a Prometheus bucket of its own (`le` = 2^35 ns ≈ 34 s); the
/// slots above count only in `+Inf`.
pub const EXPOSED_LAST_SLOT: usize = 34;

/// etcd's Prometheus histogram as scraped: cumulative counts per upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CumulativeBuckets {
    /// `(upper bound in seconds, observations at or below it)`, ascending by bound, `+Inf`
    /// last when the source had it.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observed durations, seconds (`_sum`; 0 when not scraped).
    pub sum_seconds: f64,
    /// Observations (`_count`, else the `+Inf` bucket).
    pub count: u64,
}

impl CumulativeBuckets {
    /// Buckets from `(upper bound, cumulative count)` pairs as Prometheus text gives them
    /// (counts are floats there; negative or NaN ones read as 0). The count is the `+Inf`
    /// bucket's (or the last one's); the sum is unknown (0).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut out = Self::default();
        for (le, count) in pairs {
            out.add_bucket(le, float_count(count));
        }
        out.count = out.buckets.last().map_or(0, |b| b.1);
        out
    }

    /// Whether there is no bucket at all (the series was not scraped).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Adds `count` to the bucket with upper bound `le`, creating it in order when missing.
    pub fn add_bucket(&mut self, le: f64, count: u64) {
        match self.buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 = b.1.saturating_add(count),
            None => {
                let at = self.buckets.partition_point(|b| b.0.total_cmp(&le).is_lt());
                self.buckets.insert(at, (le, count));
            }
        }
    }

    /// Adds another series of the same histogram (e.g. one per label set), bucket by bucket.
    pub fn merge(&mut self, other: &CumulativeBuckets) {
        for &(le, count) in &other.buckets {
            self.add_bucket(le, count);
        }
        self.sum_seconds += other.sum_seconds;
        self.count = self.count.saturating_add(other.count);
    }

    /// What happened since the `older` reading of the same series: [`delta`] of the two.
    pub fn since(&self, older: &CumulativeBuckets) -> Histogram {
        delta(&older.histogram(), &self.histogram())
    }

    /// The shared form. A missing `+Inf` bucket is added with the observations above the last
    /// bound (`count` minus the last cumulative count).
    pub fn histogram(&self) -> Histogram {
        let mut sorted = self.buckets.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bounds = Vec::with_capacity(sorted.len() + 1);
        let mut counts = Vec::with_capacity(sorted.len() + 1);
        let mut below = 0u64;
        for (le, cumulative) in sorted {
            bounds.push(le);
            counts.push(cumulative.saturating_sub(below));
            below = below.max(cumulative);
        }
        if bounds.last().is_none_or(|b| b.is_finite()) {
            bounds.push(f64::INFINITY);
            counts.push(self.count.saturating_sub(below));
        }
        Histogram {
            bounds,
            counts,
            sum_seconds: self.sum_seconds,
            count: self.count.max(below),
        }
    }
}

/// The kernel's log2 histogram as the agent's eBPF maps produce it (see
/// `etcd_monitor_agent_common::hist`): slot `k` counts durations in `[2^k, 2^(k+1))` ns, slot 0
/// also 0 ns, and slot `HIST_SLOTS - 1` everything from `2^(HIST_SLOTS - 1)` ns up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log2Slots {
    /// Count per slot; shorter than `HIST_SLOTS` means the missing slots are 0, and slots past
    /// `HIST_SLOTS - 1` count as the last one.
    pub slots: Vec<u64>,
    /// Sum of the durations, ns.
    pub sum_ns: u64,
    /// Calls, as the kernel counted them.
    pub count: u64,
}

impl Log2Slots {
    /// Slots with a count and a sum.
    pub fn new(count: u64, sum_ns: u64, slots: &[u64]) -> Self {
        Self {
            slots: slots.to_vec(),
            sum_ns,
            count,
        }
    }

    /// Adds one more reading of the same kind (another CPU, process, or file), saturating.
    pub fn add(&mut self, count: u64, sum_ns: u64, slots: &[u64]) {
        self.count = self.count.saturating_add(count);
        self.sum_ns = self.sum_ns.saturating_add(sum_ns);
        if self.slots.len() < slots.len() {
            self.slots.resize(slots.len(), 0);
        }
        for (total, v) in self.slots.iter_mut().zip(slots) {
            *total = total.saturating_add(*v);
        }
    }

    /// Adds another histogram, saturating.
    pub fn merge(&mut self, other: &Log2Slots) {
        self.add(other.count, other.sum_ns, &other.slots);
    }

    /// Calls counted in the slots (saturating sum).
    pub fn slot_total(&self) -> u64 {
        self.slots.iter().fold(0u64, |a, v| a.saturating_add(*v))
    }

    /// What happened since the `older` reading of the same series: [`delta`] of the two.
    pub fn since(&self, older: &Log2Slots) -> Histogram {
        delta(&older.histogram(), &self.histogram())
    }

    /// The shared form: one bucket per slot, upper bound `2^(k+1)` ns, the last slot `+Inf`.
    pub fn histogram(&self) -> Histogram {
        let mut counts = vec![0u64; HIST_SLOTS];
        for (slot, v) in self.slots.iter().enumerate() {
            let at = slot.min(HIST_SLOTS - 1);
            counts[at] = counts[at].saturating_add(*v);
        }
        Histogram {
            bounds: log2_bounds(),
            counts,
            sum_seconds: self.sum_ns as f64 / 1e9,
            count: self.count,
        }
    }

    /// The Prometheus buckets the agent and the collector expose for these slots:
    /// `(upper bound seconds, cumulative count)` for slots `EXPOSED_FIRST_SLOT..=
    /// EXPOSED_LAST_SLOT` (bound `2^(k+1)` ns; slots below fold into the first), without the
    /// `+Inf` bucket (the encoder writes it from the sample count, [`Self::slot_total`]).
    pub fn exposition_buckets(&self) -> Vec<(f64, u64)> {
        let mut cumulative = 0u64;
        let mut out = Vec::with_capacity(EXPOSED_LAST_SLOT - EXPOSED_FIRST_SLOT + 1);
        for slot in 0..=EXPOSED_LAST_SLOT {
            cumulative = cumulative.saturating_add(self.slots.get(slot).copied().unwrap_or(0));
            if slot >= EXPOSED_FIRST_SLOT {
                out.push((slot_upper_bound_ns(slot) as f64 / 1e9, cumulative));
            }
        }
        out
    }
}

fn log2_bounds() -> Vec<f64> {
    (0..HIST_SLOTS)
        .map(|slot| {
            if slot + 1 < HIST_SLOTS {
                slot_upper_bound_ns(slot) as f64 / 1e9
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

/// A Prometheus float count as an integer: NaN and negatives are 0, huge values saturate.
fn float_count(v: f64) -> u64 {
    if v.is_nan() || v <= 0.0 {
        0
    } else {
        // `as` saturates at u64::MAX.
        v.round() as u64
    }
}

/// The one internal form: ascending upper bounds in seconds (`+Inf` last, the lower bound of
/// the first bucket is 0), the observations inside each bucket (not cumulative), their sum and
/// count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum_seconds: f64,
    count: u64,
}

impl From<&CumulativeBuckets> for Histogram {
    fn from(b: &CumulativeBuckets) -> Self {
        b.histogram()
    }
}

impl From<&Log2Slots> for Histogram {
    fn from(s: &Log2Slots) -> Self {
        s.histogram()
    }
}

impl Histogram {
    /// Observations as the source counted them (etcd's `_count`, the kernel's call count).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Observations inside the buckets, which the quantiles come from (saturating sum).
    pub fn bucket_total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, v| a.saturating_add(*v))
    }

    /// Sum of the observed durations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// `(upper bound seconds, observations in the bucket)`, ascending, `+Inf` last.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds.iter().copied().zip(self.counts.iter().copied())
    }

    /// Mean duration, seconds; `None` without observations.
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds / self.count as f64)
    }

    /// [`Self::mean_seconds`] in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        self.mean_seconds().map(|s| s * 1e3)
    }

    /// The `q` quantile in seconds; `None` when no bucket holds an observation or `q` is NaN.
    ///
    /// **The quantile rule** (the only one in etcd-monitor): as Prometheus'
    /// `histogram_quantile` — `q` is clamped to `[0, 1]`, the rank is `q` × the observations
    /// in the buckets, the first non-empty bucket whose cumulative count reaches the rank holds
    /// it, and the value is interpolated linearly between that bucket's lower bound (the
    /// previous bucket's upper bound; 0 for the first bucket, so a log2 slot `k ≥ 1` starts at
    /// `2^k` ns) and its upper bound. A rank in the `+Inf` bucket returns the largest finite
    /// bound.
    ///
    /// Why: etcd's own dashboards and alerts run `histogram_quantile` on these very buckets, so
    /// a number here can be checked against Prometheus; a slot's upper bound instead would
    /// report up to twice the real latency for log2 slots, and a p99 could not tell 1.1 ms
    /// from 2 ms. The same rule on both sources keeps the etcd and kernel p99 comparable.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if q.is_nan() {
            return None;
        }
        let total = self.bucket_total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        let mut largest_finite = 0.0;
        for (upper, n) in self.buckets() {
            let reached = below.saturating_add(n);
            if n > 0 && reached as f64 >= rank {
                if upper.is_infinite() {
                    return Some(largest_finite);
                }
                let frac = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * frac);
            }
            below = reached;
            lower = upper;
            if upper.is_finite() {
                largest_finite = upper;
            }
        }
        // Only reached through float rounding of the rank: the top of the data.
        Some(largest_finite)
    }

    /// [`Self::quantile`] in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile(q).map(|s| s * 1e3)
    }
}

/// What happened between two readings of one cumulative histogram: `newer - older`, bucket by
/// bucket.
///
/// **The counter-reset rule** (the only one in etcd-monitor): if the bucket layouts differ, or
/// any bucket's count, the count or the sum went down, the process that counts (etcd or the
/// agent) restarted inside the window, and the delta is `newer` alone — everything it counted
/// since it restarted, which all happened inside the window. This is how Prometheus' `rate()` and
/// `increase()` treat a counter reset.
///
/// Why: returning nothing would blind the status page, alerts and diagnosis for a whole window
/// after every etcd restart — exactly when a slow disk matters most — and taking only the
/// older reading, or mixing the two, would count observations from before the window. `newer`
/// alone undercounts only what the dead process saw between `older` and its death.
pub fn delta(older: &Histogram, newer: &Histogram) -> Histogram {
    let reset = older.bounds != newer.bounds
        || older.count > newer.count
        || older.sum_seconds > newer.sum_seconds
        || older.counts.iter().zip(&newer.counts).any(|(o, n)| o > n);
    if reset {
        return newer.clone();
    }
    Histogram {
        bounds: newer.bounds.clone(),
        counts: newer
            .counts
            .iter()
            .zip(&older.counts)
            .map(|(n, o)| n.saturating_sub(*o))
            .collect(),
        sum_seconds: (newer.sum_seconds - older.sum_seconds).max(0.0),
        count: newer.count.saturating_sub(older.count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12 * b.abs().max(1.0))
    }

    #[test]
    fn cumulative_quantile_is_prometheus_histogram_quantile() {
        let b = CumulativeBuckets::from_pairs([
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        let h = b.histogram();
        // rank 95 in (0.002, 0.004]: 0.002 + 0.002 × 5/10.
        assert!(close(h.quantile(0.95), 0.003));
        // rank 25 in the first bucket, which starts at 0.
        assert!(close(h.quantile(0.25), 0.0005));
        assert_eq!(h.count(), 100);
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(h.quantile(f64::NAN), None);
        assert!(close(h.quantile(7.0), 0.004), "q clamped to 1");
    }

    #[test]
    fn the_inf_bucket_returns_the_largest_finite_bound() {
        let h = CumulativeBuckets::from_pairs([(1.0, 1.0), (f64::INFINITY, 10.0)]).histogram();
        assert_eq!(h.quantile(0.99), Some(1.0));
        let mut slots = vec![0u64; HIST_SLOTS];
        slots[HIST_SLOTS - 1] = 3;
        let h = Log2Slots::new(3, 0, &slots).histogram();
        assert_eq!(
            h.quantile(0.5),
            Some(slot_upper_bound_ns(HIST_SLOTS - 2) as f64 / 1e9)
        );
    }

    #[test]
    fn missing_inf_bucket_is_added_from_the_count() {
        let mut b = CumulativeBuckets::from_pairs([(0.1, 10.0)]);
        b.count = 20;
        let h = b.histogram();
        assert_eq!(h.buckets().last(), Some((f64::INFINITY, 10)));
        assert_eq!(h.quantile(0.99), Some(0.1));
    }

    #[test]
    fn log2_quantile_interpolates_from_the_slot_lower_bound() {
        let mut slots = vec![0u64; 24];
        slots[20] = 99; // [2^20, 2^21) ns
        slots[23] = 1; // [2^23, 2^24) ns
        let h = Log2Slots::new(100, 0, &slots).histogram();
        // rank 50 of 99 in slot 20: 2^20 + 2^20 × 50/99 ns.
        let lo = (1u64 << 20) as f64;
        assert!(close(h.quantile(0.5), (lo + lo * 50.0 / 99.0) / 1e9));
        // rank 99 is the slot's last: its upper bound.
        assert!(close(h.quantile(0.99), (1u64 << 21) as f64 / 1e9));
        assert!(close(h.quantile(1.0), (1u64 << 24) as f64 / 1e9));
        // Slot 0 starts at 0.
        let h = Log2Slots::new(2, 0, &[2]).histogram();
        assert!(close(h.quantile(0.5), 1e-9));
    }

    #[test]
    fn delta_keeps_the_window_only() {
        let a = CumulativeBuckets::from_pairs([
            (0.001, 1000.0),
            (0.1, 1000.0),
            (f64::INFINITY, 1000.0),
        ]);
        let b = CumulativeBuckets::from_pairs([
            (0.001, 1000.0),
            (0.1, 1100.0),
            (f64::INFINITY, 1100.0),
        ]);
        assert!(b.histogram().quantile(0.99).is_some_and(|s| s < 0.1));
        let w = delta(&a.histogram(), &b.histogram());
        assert_eq!(w.count(), 100);
        assert!(close(w.quantile(0.99), 0.001 + 0.099 * 0.99));
        assert_eq!(delta(&b.histogram(), &b.histogram()).quantile(0.99), None);
    }

    #[test]
    fn a_reset_gives_the_newer_reading_alone() {
        let mut old = vec![0u64; HIST_SLOTS];
        old[10] = 1000;
        let mut new = vec![0u64; 30];
        new[25] = 4;
        let older = Log2Slots::new(1000, 5_000_000, &old).histogram();
        let newer = Log2Slots::new(4, 400_000_000, &new).histogram();
        assert_eq!(delta(&older, &newer), newer);
        // A changed etcd bucket layout is a restart too.
        let a = CumulativeBuckets::from_pairs([(0.1, 1.0), (f64::INFINITY, 1.0)]).histogram();
        let b = CumulativeBuckets::from_pairs([(0.2, 5.0), (f64::INFINITY, 5.0)]).histogram();
        assert_eq!(delta(&a, &b), b);
        // Only the sum going down (bucket counts equal) is a reset as well.
        let mut s1 = Log2Slots::new(1, 900, &[0, 1]);
        let s2 = Log2Slots::new(1, 100, &[0, 1]);
        assert_eq!(delta(&s1.histogram(), &s2.histogram()), s2.histogram());
        s1.sum_ns = 50;
        assert_eq!(delta(&s1.histogram(), &s2.histogram()).count(), 0);
    }

    #[test]
    fn counters_saturate() {
        let mut s = Log2Slots::new(u64::MAX, u64::MAX, &[u64::MAX, u64::MAX]);
        s.add(u64::MAX, 1, &[1, 1, u64::MAX]);
        assert_eq!(s.count, u64::MAX);
        assert_eq!(s.slot_total(), u64::MAX);
        let h = s.histogram();
        assert_eq!(h.bucket_total(), u64::MAX);
        assert!(h.quantile(0.99).is_some());
        assert_eq!(delta(&h, &h).bucket_total(), 0);
        let c = CumulativeBuckets::from_pairs([(1.0, f64::MAX), (f64::INFINITY, 1e300)]);
        assert_eq!(c.count, u64::MAX);
        assert!(c.histogram().quantile(0.5).is_some());
        let mut m = c.clone();
        m.merge(&c);
        assert_eq!(m.count, u64::MAX);
    }

    #[test]
    fn slots_past_the_layout_fold_into_the_last() {
        let mut slots = vec![0u64; HIST_SLOTS + 3];
        slots[HIST_SLOTS + 2] = 7;
        let h = Log2Slots::new(7, 0, &slots).histogram();
        assert_eq!(h.buckets().last(), Some((f64::INFINITY, 7)));
    }

    #[test]
    fn merge_sums_series_bucket_by_bucket() {
        let mut a = CumulativeBuckets::from_pairs([(0.1, 1.0), (f64::INFINITY, 2.0)]);
        a.sum_seconds = 0.5;
        let mut b = CumulativeBuckets::from_pairs([(0.05, 1.0), (0.1, 3.0), (f64::INFINITY, 3.0)]);
        b.sum_seconds = 0.25;
        a.merge(&b);
        assert_eq!(a.buckets, vec![(0.05, 1), (0.1, 4), (f64::INFINITY, 5)]);
        assert_eq!(a.count, 5);
        assert_eq!(a.sum_seconds, 0.75);
    }

    #[test]
    fn exposition_buckets_fold_the_ends() {
        let mut slots = vec![0u64; HIST_SLOTS];
        slots[3] = 2; // folds into the first bucket
        slots[20] = 5;
        slots[39] = 1; // beyond the last bucket: only in +Inf
        let s = Log2Slots::new(8, 0, &slots);
        let b = s.exposition_buckets();
        assert_eq!(b.len(), EXPOSED_LAST_SLOT - EXPOSED_FIRST_SLOT + 1);
        assert_eq!(b[0], (1.024e-6, 2));
        assert_eq!(b.last().map(|x| x.1), Some(7));
        assert_eq!(s.slot_total(), 8);
        // Prometheus' histogram_quantile over the exposed buckets agrees with ours inside them.
        let mut exposed = CumulativeBuckets::default();
        for (le, c) in &b {
            exposed.add_bucket(*le, *c);
        }
        exposed.add_bucket(f64::INFINITY, s.slot_total());
        exposed.count = s.slot_total();
        assert_eq!(
            exposed.histogram().quantile(0.6),
            s.histogram().quantile(0.6)
        );
    }
}
