//! The `cargo xtask bench` subcommands (parsed by the lean binary too, so `--help` lists them).

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
    /// wrk against the collector's /api/v1/cluster/status and /metrics while it watches a
    /// 3-member cluster, then a CPU/RSS soak.
    Collector {
        /// Soak length in seconds.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
    },
    /// Synthetic events through the agent's shipping code into the collector: events/s with
    /// zero drops, CPU per million events, and the ring buffer's own limit.
    Pipeline {
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}
