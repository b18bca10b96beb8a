//! The benchmark runner: write, read, mixed and txn-put workloads against one cluster, with
//! etcd's own `benchmark` tool's report shape, safety rails and an SLO verdict.
//!
//! Module map: [`spec`] (parameters, validated once for the CLI and the REST body alike) →
//! [`runner`] (connections, clients, pacing; latencies into per-client HDR histograms) using
//! [`workload`] (which operation and key the i-th request is) and [`safety`] (the run's prefix:
//! refuse when it holds keys, delete it afterwards) → [`report`] (summary, histogram,
//! percentiles, errors, per-second series, SLO). [`crate::app::bench`] is `--run-benchmark`; [`jobs`] runs
//! REST-started benchmarks on their own runtime thread and exports their results.

pub mod flags;
pub mod jobs;
pub mod report;
pub mod runner;
pub mod safety;
pub mod schedule;
pub mod spec;
pub mod workload;

pub use report::{Report, SloVerdict};
pub use runner::{BenchError, Progress, run};
pub use spec::{BenchSpec, Consistency, KeyOrder, RawSpec, Slo, SpecError, Target};
