//! `cargo xtask bench <which>`: figures reported as ratios measured in one run.

mod agent_overhead;
mod alerting;
mod collector;
mod defrag;
mod pipeline;
mod probe_cost;
mod runner;
mod traced_cluster;

pub use crate::bench_args::Which;

/// Runs one benchmark.
pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::AgentOverhead {
            rounds,
            seconds,
            on_disk,
        } => agent_overhead::run(rounds, seconds, on_disk),
        Which::Pipeline { seconds } => pipeline::run(seconds),
        Which::ProbeCost { seconds } => probe_cost::run(seconds),
        Which::Alerting { rounds, health_ms } => {
            alerting::run(rounds, std::time::Duration::from_millis(health_ms))
        }
        Which::Runner {
            seconds,
            clients,
            perf_seconds,
            on_disk,
        } => runner::run(seconds, clients, perf_seconds, on_disk),
        Which::Collector { soak_secs } => collector::run(std::time::Duration::from_secs(soak_secs)),
        Which::Defrag { mb } => defrag::run(mb),
    }
}
