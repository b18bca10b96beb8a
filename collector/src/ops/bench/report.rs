//! What a run measured, in the shape of etcd's `benchmark` tool's report (Summary, Response
//! time histogram, Latency distribution, Error distribution) plus JSON, a per-second CSV
//! series and an SLO verdict. Each client records into its own [`Recorder`] (no locks on the
//! request path); the recorders are merged once at the end.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ops::bench::spec::Slo;

/// Percentiles the report lists, like etcd's benchmark.
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];
/// Buckets of the response-time histogram (etcd's benchmark uses 10 + the slowest).
pub const HISTOGRAM_BUCKETS: usize = 10;
/// Highest latency the histogram holds (longer requests are clamped to it), µs.
const MAX_US: u64 = 3_600_000_000;

/// The verdict of one objective.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SloCheck {
    /// `p99_ms` or `min_rps`.
    pub name: String,
    /// Measured.
    pub measured: f64,
    /// Limit.
    pub limit: f64,
    /// Met.
    pub pass: bool,
}

/// The verdict of all objectives.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SloVerdict {
    /// Every objective met (and at least one request succeeded).
    pub pass: bool,
    /// Each objective.
    pub checks: Vec<SloCheck>,
}

/// Counts and latencies of one client (or of the merged run).
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    sum_us: f64,
    sum_sq_us: f64,
    reads_ok: u64,
    writes_ok: u64,
    errors: BTreeMap<String, u64>,
    seconds: Vec<SecondCounts>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SecondCounts {
    ok: u64,
    errors: u64,
    sum_us: f64,
    max_us: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            // 1 µs .. 1 h at 3 significant digits: every recorded value within 0.1 %.
            hist: Histogram::new_with_bounds(1, MAX_US, 3)
                .expect("1 µs .. 1 h at 3 significant digits are valid bounds"),
            sum_us: 0.0,
            sum_sq_us: 0.0,
            reads_ok: 0,
            writes_ok: 0,
            errors: BTreeMap::new(),
            seconds: Vec::new(),
        }
    }

    fn second(&mut self, second: usize) -> &mut SecondCounts {
        if self.seconds.len() <= second {
            self.seconds.resize(second + 1, SecondCounts::default());
        }
        &mut self.seconds[second]
    }

    /// A request that succeeded after `latency`, finished `second` seconds into the run.
    pub fn success(&mut self, second: usize, latency: Duration, wrote: bool) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_US);
        self.hist.saturating_record(us);
        let f = us as f64;
        self.sum_us += f;
        self.sum_sq_us += f * f;
        if wrote {
            self.writes_ok += 1;
        } else {
            self.reads_ok += 1;
        }
        let s = self.second(second);
        s.ok += 1;
        s.sum_us += f;
        s.max_us = s.max_us.max(us);
    }

    /// A request that failed with an error of `kind`.
    pub fn error(&mut self, second: usize, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
        self.second(second).errors += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.sum_us += other.sum_us;
        self.sum_sq_us += other.sum_sq_us;
        self.reads_ok += other.reads_ok;
        self.writes_ok += other.writes_ok;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        for (i, s) in other.seconds.iter().enumerate() {
            let t = self.second(i);
            t.ok += s.ok;
            t.errors += s.errors;
            t.sum_us += s.sum_us;
            t.max_us = t.max_us.max(s.max_us);
        }
    }

    /// Successful requests.
    pub fn succeeded(&self) -> u64 {
        self.hist.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report of a run that took `total`.
    pub fn report(&self, header: ReportHeader, total: Duration, slo: &Slo) -> Report {
        let n = self.hist.len();
        let total_s = total.as_secs_f64();
        let (fastest, slowest, average, stddev) = self.latency_stats();
        let rps = if total_s > 0.0 {
            n as f64 / total_s
        } else {
            0.0
        };
        let histogram = if n == 0 {
            Vec::new()
        } else {
            self.buckets(fastest, slowest)
        };
        let mut report = Report {
            header,
            summary: Summary {
                total_seconds: total_s,
                slowest_seconds: slowest,
                fastest_seconds: fastest,
                average_seconds: average,
                stddev_seconds: stddev,
                requests_per_second: rps,
                succeeded: n,
                failed: self.failed(),
                reads_succeeded: self.reads_ok,
                writes_succeeded: self.writes_ok,
            },
            histogram,
            percentiles: self.percentiles(),
            errors: self.error_counts(),
            series: self.second_series(),
            keys_before_cleanup: None,
            prefix_deleted: false,
            slo: None,
        };
        if slo.is_set() {
            report.slo = Some(report.judge(slo));
        }
        report
    }

    /// Fastest, slowest, mean and standard deviation of the latencies, in seconds (all zero
    /// without requests).
    fn latency_stats(&self) -> (f64, f64, f64, f64) {
        let n = self.hist.len();
        if n == 0 {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let secs = |us: f64| us / 1e6;
        let mean = self.sum_us / n as f64;
        let var = (self.sum_sq_us / n as f64 - mean * mean).max(0.0);
        (
            secs(self.hist.min() as f64),
            secs(self.hist.max() as f64),
            secs(mean),
            secs(var.sqrt()),
        )
    }

    /// The latency at each of [`PERCENTILES`], in seconds (empty without requests).
    fn percentiles(&self) -> Vec<Percentile> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        PERCENTILES
            .iter()
            .map(|p| Percentile {
                percentile: *p,
                seconds: self.hist.value_at_quantile(p / 100.0) as f64 / 1e6,
            })
            .collect()
    }

    /// Failures by kind, most frequent first (ties by kind).
    fn error_counts(&self) -> Vec<ErrorCount> {
        let mut errors: Vec<ErrorCount> = self
            .errors
            .iter()
            .map(|(k, v)| ErrorCount {
                kind: k.clone(),
                count: *v,
            })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
        errors
    }

    /// One sample per second of the run: successes, failures, mean and max latency.
    fn second_series(&self) -> Vec<SecondSample> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondSample {
                second: i as u64,
                ok: s.ok,
                errors: s.errors,
                avg_ms: if s.ok > 0 {
                    s.sum_us / s.ok as f64 / 1000.0
                } else {
                    0.0
                },
                max_ms: s.max_us as f64 / 1000.0,
            })
            .collect()
    }

    /// etcd's response-time histogram: 10 equal-width buckets from the fastest to the slowest,
    /// then the slowest itself; each bucket counts requests at most its bound (and above the
    /// previous one).
    fn buckets(&self, fastest: f64, slowest: f64) -> Vec<HistogramBucket> {
        let width = (slowest - fastest) / HISTOGRAM_BUCKETS as f64;
        let mut bounds: Vec<f64> = (0..HISTOGRAM_BUCKETS)
            .map(|i| fastest + width * i as f64)
            .collect();
        bounds.push(slowest);
        let mut counts = vec![0u64; bounds.len()];
        for v in self.hist.iter_recorded() {
            let s = self.hist.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            let idx = bounds
                .iter()
                .position(|b| s <= *b + 1e-12)
                .unwrap_or(bounds.len() - 1);
            counts[idx] += v.count_at_value();
        }
        bounds
            .into_iter()
            .zip(counts)
            .map(|(le_seconds, count)| HistogramBucket { le_seconds, count })
            .collect()
    }
}

/// What the report is about.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportHeader {
    /// Run id (also the last element of the prefix).
    pub run_id: String,
    /// Cluster name.
    pub cluster: String,
    /// The prefix every key lives under.
    pub prefix: String,
    /// The validated parameters.
    pub spec: crate::ops::bench::spec::BenchSpec,
    /// The endpoints the connections went to.
    pub endpoints: Vec<String>,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// Stopped early by Ctrl-C or a shutdown.
    pub interrupted: bool,
}

/// etcd benchmark's Summary block.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Summary {
    /// Wall time of the run.
    pub total_seconds: f64,
    /// Slowest successful request.
    pub slowest_seconds: f64,
    /// Fastest successful request.
    pub fastest_seconds: f64,
    /// Mean of successful requests.
    pub average_seconds: f64,
    /// Standard deviation of successful requests.
    pub stddev_seconds: f64,
    /// Successful requests per second of wall time.
    pub requests_per_second: f64,
    /// Successful requests.
    pub succeeded: u64,
    /// Failed requests.
    pub failed: u64,
    /// Successful reads.
    pub reads_succeeded: u64,
    /// Successful writes (puts and txn-puts).
    pub writes_succeeded: u64,
}

/// One bar of the response-time histogram.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistogramBucket {
    /// Upper bound, seconds.
    pub le_seconds: f64,
    /// Requests in this bucket (not cumulative).
    pub count: u64,
}

/// One line of the latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Percentile {
    /// Percentile (e.g. 99.9).
    pub percentile: f64,
    /// Latency at it, seconds.
    pub seconds: f64,
}

/// One line of the error distribution.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorCount {
    /// gRPC code and message, `timeout`, or `connect: ...`.
    pub kind: String,
    /// Requests that failed so.
    pub count: u64,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SecondSample {
    /// Seconds since the start.
    pub second: u64,
    /// Successful requests that finished in this second.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Mean latency of the successful ones, ms.
    pub avg_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Report {
    /// What was run.
    pub header: ReportHeader,
    /// Summary.
    pub summary: Summary,
    /// Response time histogram.
    pub histogram: Vec<HistogramBucket>,
    /// Latency distribution.
    pub percentiles: Vec<Percentile>,
    /// Error distribution, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// Per-second series.
    pub series: Vec<SecondSample>,
    /// Keys under the prefix just before the cleanup (count-only range).
    pub keys_before_cleanup: Option<u64>,
    /// The prefix was deleted after the run (false with `keep_keys` or when deleting failed).
    pub prefix_deleted: bool,
    /// The SLO verdict, when objectives were set.
    pub slo: Option<SloVerdict>,
}

impl Report {
    /// Latency at percentile `p` (one of [`PERCENTILES`]), seconds.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|x| (x.percentile - p).abs() < 1e-9)
            .map(|x| x.seconds)
    }

    /// Judges the run by `slo`.
    pub fn judge(&self, slo: &Slo) -> SloVerdict {
        let mut checks = Vec::new();
        if let Some(limit) = slo.p99_ms {
            let measured = self.percentile(99.0).map_or(f64::INFINITY, |s| s * 1000.0);
            checks.push(SloCheck {
                name: "p99_ms".into(),
                measured,
                limit,
                pass: measured <= limit,
            });
        }
        if let Some(limit) = slo.min_rps {
            let measured = self.summary.requests_per_second;
            checks.push(SloCheck {
                name: "min_rps".into(),
                measured,
                limit,
                pass: measured >= limit,
            });
        }
        SloVerdict {
            pass: self.summary.succeeded > 0 && checks.iter().all(|c| c.pass),
            checks,
        }
    }

    /// The report as etcd's benchmark prints it, plus the SLO verdict.
    pub fn to_text(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nBenchmark {} ({} ops, {} clients, {} conns) on cluster {} under {}",
            self.header.spec.kind_name(),
            s.succeeded + s.failed,
            self.header.spec.clients,
            self.header.spec.conns,
            self.header.cluster,
            self.header.prefix
        );
        if self.header.interrupted {
            let _ = writeln!(out, "(interrupted before the end)");
        }
        let _ = writeln!(out, "\nSummary:");
        let _ = writeln!(out, "  Total:\t{:.4} secs.", s.total_seconds);
        let _ = writeln!(out, "  Slowest:\t{:.4} secs.", s.slowest_seconds);
        let _ = writeln!(out, "  Fastest:\t{:.4} secs.", s.fastest_seconds);
        let _ = writeln!(out, "  Average:\t{:.4} secs.", s.average_seconds);
        let _ = writeln!(out, "  Stddev:\t{:.4} secs.", s.stddev_seconds);
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", s.requests_per_second);
        if !self.histogram.is_empty() {
            let _ = writeln!(out, "\nResponse time histogram:");
            let max = self
                .histogram
                .iter()
                .map(|b| b.count)
                .max()
                .unwrap_or(1)
                .max(1);
            for b in &self.histogram {
                let bar = (b.count * 40).div_ceil(max) as usize;
                let _ = writeln!(
                    out,
                    "  {:.4} [{}]\t|{}",
                    b.le_seconds,
                    b.count,
                    "∎".repeat(if b.count == 0 { 0 } else { bar })
                );
            }
        }
        if !self.percentiles.is_empty() {
            let _ = writeln!(out, "\nLatency distribution:");
            for p in &self.percentiles {
                let _ = writeln!(out, "  {}% in {:.4} secs.", p.percentile, p.seconds);
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for e in &self.errors {
                let _ = writeln!(out, "  [{}]\t{}", e.count, e.kind);
            }
        }
        if let Some(v) = &self.slo {
            let _ = writeln!(out, "\nSLO:");
            for c in &v.checks {
                let (cmp, unit) = if c.name == "p99_ms" {
                    ("<=", " ms")
                } else {
                    (">=", " req/s")
                };
                let _ = writeln!(
                    out,
                    "  {}: {:.2}{unit} (must be {cmp} {}{unit}) {}",
                    c.name,
                    c.measured,
                    c.limit,
                    if c.pass { "PASS" } else { "FAIL" }
                );
            }
            let _ = writeln!(out, "{}", if v.pass { "PASS" } else { "FAIL" });
        }
        out
    }

    /// The per-second series as CSV.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("second,ok,errors,avg_ms,max_ms\n");
        for s in &self.series {
            let _ = writeln!(
                out,
                "{},{},{},{:.3},{:.3}",
                s.second, s.ok, s.errors, s.avg_ms, s.max_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ops::bench::spec::DEFAULT_MAX_OPS, ops::bench::spec::RawSpec};

    fn header() -> ReportHeader {
        let raw = RawSpec::default();
        ReportHeader {
            run_id: "r".into(),
            cluster: "default".into(),
            prefix: "/etcd-monitor-bench/r/".into(),
            spec: raw
                .validate(&|f: &str| f.to_string(), DEFAULT_MAX_OPS)
                .unwrap(),
            endpoints: vec![],
            started_ms: 0,
            interrupted: false,
        }
    }

    #[test]
    fn summary_math_matches_the_definition() {
        // Latencies 1..=100 ms over two clients, 10 s run.
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for ms in 1..=100u64 {
            let r = if ms % 2 == 0 { &mut a } else { &mut b };
            r.success((ms / 20) as usize, Duration::from_millis(ms), ms % 4 == 0);
        }
        a.error(0, "Unavailable: x");
        b.error(1, "Unavailable: x");
        b.error(1, "timeout");
        a.merge(&b);
        let r = a.report(header(), Duration::from_secs(10), &Slo::default());
        let s = &r.summary;
        assert_eq!(s.succeeded, 100);
        assert_eq!(s.failed, 3);
        assert_eq!(s.writes_succeeded, 25);
        assert_eq!(s.reads_succeeded, 75);
        assert!((s.requests_per_second - 10.0).abs() < 1e-9);
        assert!(
            (s.average_seconds - 0.0505).abs() < 1e-9,
            "{}",
            s.average_seconds
        );
        // Population stddev of 1..=100 ms is sqrt((100²-1)/12) ms.
        let want = ((100.0f64 * 100.0 - 1.0) / 12.0).sqrt() / 1000.0;
        assert!(
            (s.stddev_seconds - want).abs() < 1e-6,
            "{}",
            s.stddev_seconds
        );
        assert!((s.fastest_seconds - 0.001).abs() < 1e-6);
        assert!((s.slowest_seconds - 0.100).abs() < 0.0001);
        // Percentiles within HDR's 0.1 %.
        for (p, want) in [(10.0, 0.010), (50.0, 0.050), (99.0, 0.099), (99.9, 0.100)] {
            let got = r.percentile(p).unwrap();
            assert!((got - want).abs() <= want * 0.001 + 1e-9, "p{p}: {got}");
        }
        // Histogram: 11 bounds from fastest to slowest, every request counted once.
        assert_eq!(r.histogram.len(), HISTOGRAM_BUCKETS + 1);
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 100);
        assert_eq!(r.histogram[0].count, 1);
        assert_eq!(r.errors[0].kind, "Unavailable: x");
        assert_eq!(r.errors[0].count, 2);
        // Series: second 0 holds ms 1..=19 and one error.
        assert_eq!(r.series[0].ok, 19);
        assert_eq!(r.series[0].errors, 1);
        assert!(
            r.to_csv()
                .starts_with("second,ok,errors,avg_ms,max_ms\n0,19,1,10.000,19.000\n")
        );
        let text = r.to_text();
        for needle in [
            "Summary:",
            "Requests/sec:\t10.0000",
            "99.9% in 0.1000 secs.",
            "[2]\tUnavailable: x",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
    }

    #[test]
    fn slo_verdicts() {
        let mut rec = Recorder::new();
        for _ in 0..100 {
            rec.success(0, Duration::from_millis(20), true);
        }
        let pass = rec.report(
            header(),
            Duration::from_secs(1),
            &Slo {
                p99_ms: Some(25.0),
                min_rps: Some(50.0),
            },
        );
        assert!(pass.slo.as_ref().is_some_and(|v| v.pass), "{:?}", pass.slo);
        let fail = rec.report(
            header(),
            Duration::from_secs(1),
            &Slo {
                p99_ms: Some(10.0),
                min_rps: Some(50.0),
            },
        );
        let v = fail.slo.clone().unwrap();
        assert!(!v.pass);
        assert!(!v.checks[0].pass && v.checks[1].pass);
        assert!(fail.to_text().trim_end().ends_with("FAIL"));
        // No successes never passes.
        let empty = Recorder::new().report(
            header(),
            Duration::from_secs(1),
            &Slo {
                p99_ms: Some(10.0),
                min_rps: None,
            },
        );
        assert!(!empty.slo.unwrap().pass);
    }
}
