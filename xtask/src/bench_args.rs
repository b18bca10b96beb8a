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
    /// In-kernel cost of every agent eBPF program per invocation (kernel BPF statistics), next
    /// to an empty program on the same tracepoint and to bpftrace doing the same work, under
    /// etcd load and under untraced load only.
    ProbeCost {
        /// Seconds per load window.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// wrk against the collector's /api/v1/cluster/status and /metrics while it watches a
    /// 3-member cluster, then a CPU/RSS soak.
    Collector {
        /// Soak length in seconds.
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
    },
    /// The benchmark runner: one `etcd-monitor --run-benchmark` process against four splitting
    /// the same concurrency (write, serializable read), then `etcdctl check perf --load=m` and
    /// the runner with the same load side by side.
    Runner {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        /// Concurrent clients in total (a multiple of 4).
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds of the runner's copy of check perf's load; 0 skips check perf and its copy.
        #[arg(long, default_value_t = 60)]
        perf_seconds: u64,
        /// Keep etcd's data on disk instead of tmpfs.
        #[arg(long)]
        on_disk: bool,
    },
    /// Synthetic events through the agent's shipping code into the collector: events/s with
    /// zero drops, CPU per million events, and the ring buffer's own limit.
    Pipeline {
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Write latency (p99) while a ~200 MB fragmented database is defragmented with the
    /// collector's rolling defrag and on all members at once, side by side; writes
    /// docs/bench/defrag.md.
    Defrag {
        /// MB written per member before 90 % is deleted again.
        #[arg(long, default_value_t = 200)]
        mb: usize,
    },
    /// Alert latency: SIGSTOP one etcd member at a time (5-member cluster) and time the
    /// MemberUnavailable alert to the engine and to a webhook receiver, and the resolve.
    Alerting {
        /// Rounds (one member each, at most 5).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// The collector's health-check interval, ms.
        #[arg(long, default_value_t = 1000)]
        health_ms: u64,
    },
}
