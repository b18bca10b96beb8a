//! The agent's own in-kernel cost: run time and run count of each loaded program, as the kernel
//! counts them while BPF statistics are on (`kernel.bpf_stats_enabled=1`), exported as
//! `etcdmon_probe_run_seconds_total{program}` and `etcdmon_probe_runs_total{program}`.
//!
//! The kernel keeps the counters in each program's `fdinfo` (`run_time_ns`, `run_cnt`); they
//! only grow while statistics are on, so the series appear once any program has been counted.

use std::sync::Arc;

use prometheus::{
    core::{Collector, Desc},
    proto,
};

/// One program's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRun {
    /// Program name (as in `agent-ebpf/src/probes/`).
    pub program: &'static str,
    /// Nanoseconds spent running it.
    pub run_time_ns: u64,
    /// Times it ran.
    pub run_count: u64,
}

/// Reads `run_time_ns` and `run_cnt` from the text of a BPF program's `/proc/PID/fdinfo/FD`.
/// `None` when either is missing (a kernel older than 5.1).
pub fn parse_fdinfo(text: &str) -> Option<(u64, u64)> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((value("run_time_ns:")?, value("run_cnt:")?))
}

/// Where the counters come from (the loaded programs; a fixed list in tests).
pub type RunSource = Arc<dyn Fn() -> Vec<ProbeRun> + Send + Sync>;

const RUN_SECONDS: &str = "etcdmon_probe_run_seconds_total";
const RUNS: &str = "etcdmon_probe_runs_total";

/// Builds both families at scrape time.
pub struct ProbeRunCollector {
    source: RunSource,
    descs: Vec<Desc>,
}

impl ProbeRunCollector {
    /// A collector over `source`.
    pub fn new(source: RunSource) -> Result<Self, prometheus::Error> {
        let descs = vec![
            Desc::new(
                RUN_SECONDS.into(),
                "Time the agent's eBPF program ran in the kernel (kernel BPF statistics; only while kernel.bpf_stats_enabled=1).".into(),
                vec!["program".into()],
                Default::default(),
            )?,
            Desc::new(
                RUNS.into(),
                "Times the agent's eBPF program ran (kernel BPF statistics; only while kernel.bpf_stats_enabled=1).".into(),
                vec!["program".into()],
                Default::default(),
            )?,
        ];
        Ok(Self { source, descs })
    }
}

fn counter_family(name: &str, help: &str, points: Vec<(&'static str, f64)>) -> proto::MetricFamily {
    let mut family = proto::MetricFamily::default();
    family.set_name(name.into());
    family.set_help(help.into());
    family.set_field_type(proto::MetricType::COUNTER);
    for (program, value) in points {
        let mut label = proto::LabelPair::default();
        label.set_name("program".into());
        label.set_value(program.into());
        let mut counter = proto::Counter::default();
        counter.set_value(value);
        let mut metric = proto::Metric::default();
        metric.set_label(vec![label]);
        metric.set_counter(counter);
        family.mut_metric().push(metric);
    }
    family
}

impl Collector for ProbeRunCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let runs = (self.source)();
        // Counters that never moved mean statistics were never on: no series rather than zeros
        // that look like a free program.
        if runs.iter().all(|r| r.run_count == 0) {
            return Vec::new();
        }
        vec![
            counter_family(
                RUN_SECONDS,
                &self.descs[0].help,
                runs.iter()
                    .map(|r| (r.program, r.run_time_ns as f64 / 1e9))
                    .collect(),
            ),
            counter_family(
                RUNS,
                &self.descs[1].help,
                runs.iter()
                    .map(|r| (r.program, r.run_count as f64))
                    .collect(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_counters_are_parsed() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2070\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\tab\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t99\n";
        assert_eq!(parse_fdinfo(text), Some((123_456, 789)));
        assert_eq!(parse_fdinfo("prog_id:\t1\n"), None);
    }

    #[test]
    fn series_appear_only_once_something_was_counted() {
        let zero: RunSource = Arc::new(|| {
            vec![ProbeRun {
                program: "sched_switch",
                run_time_ns: 0,
                run_count: 0,
            }]
        });
        assert!(ProbeRunCollector::new(zero).unwrap().collect().is_empty());
        let some: RunSource = Arc::new(|| {
            vec![ProbeRun {
                program: "sched_switch",
                run_time_ns: 2_500_000_000,
                run_count: 10,
            }]
        });
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(ProbeRunCollector::new(some).unwrap()))
            .unwrap();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("etcdmon_probe_run_seconds_total{program=\"sched_switch\"} 2.5"),
            "{text}"
        );
        assert!(
            text.contains("etcdmon_probe_runs_total{program=\"sched_switch\"} 10"),
            "{text}"
        );
    }
}
