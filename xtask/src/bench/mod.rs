//! `cargo xtask bench <which>`: figures reported as ratios measured in one run.

mod agent_overhead;

use clap::Subcommand;

/// The benchmarks.
#[derive(Subcommand, Clone, Copy)]
pub enum Which {
    /// etcd put throughput with no tracer, with the agent, and with bpftrace on the same
    /// tracepoints, interleaved; plus the agent's CPU and peak memory.
    AgentOverhead {
        /// Rounds of the three configurations.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of load per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Keep etcd's data on disk instead of tmpfs (adds the disk's noise).
        #[arg(long)]
        on_disk: bool,
    },
}

/// Runs one benchmark.
pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::AgentOverhead {
            rounds,
            seconds,
            on_disk,
        } => agent_overhead::run(rounds, seconds, on_disk),
    }
}
