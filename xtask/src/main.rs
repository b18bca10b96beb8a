//! `cargo xtask`: what cargo alone cannot do — install prerequisites, run every check, run the
//! demo, run benchmarks.

#[cfg(feature = "full")]
mod accuracy;
#[cfg(feature = "full")]
mod bench;
mod bench_args;
mod checks;
mod cmd;
#[cfg(feature = "full")]
mod demo;
#[cfg(feature = "full")]
mod docs;
#[cfg(not(feature = "full"))]
mod full;
mod setup;
mod setup_deploy;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "etcd-monitor project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker, the
    /// Windows check target) and mount tracefs. Idempotent; fast when all is present.
    Setup,
    /// setup, then fmt --check, clippy -D warnings, every unit/integration/end-to-end test,
    /// and the non-Linux build check.
    Test {
        /// Skip the setup step.
        #[arg(long)]
        no_setup: bool,
    },
    /// fmt --check and clippy -D warnings (host and BPF target).
    Lint,
    /// A local 3-member etcd cluster (client ports 2379, 22379, 32379), the agent with eBPF,
    /// the collector and a small load, until Ctrl-C; prints the URLs.
    Demo {
        /// Stop by itself after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// No background load.
        #[arg(long)]
        no_load: bool,
        /// Do not start Prometheus.
        #[arg(long)]
        no_prometheus: bool,
    },
    /// Regenerate docs/configuration.md from the binaries' --help (the test run checks it).
    Docs,
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: bench_args::Which,
    },
    /// Diagnosis accuracy against real faults (healthy, slow device, I/O-throttled cgroup, CPU
    /// starvation, noisy neighbour, lossy peer network, starved peer, symlinked data dir on a
    /// slow device); writes docs/bench/accuracy.md. Needs root.
    Accuracy {
        /// Runs (fault applied and cleared) per scenario.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Only these scenarios (comma-separated names).
        #[arg(long)]
        scenario: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Test { no_setup } => test::run(!no_setup),
        Command::Lint => test::lint(),
        #[cfg(feature = "full")]
        Command::Demo {
            seconds,
            no_load,
            no_prometheus,
        } => demo::run(demo::Options {
            duration: seconds.map(std::time::Duration::from_secs),
            load: !no_load,
            prometheus: !no_prometheus,
        }),
        #[cfg(feature = "full")]
        Command::Bench { which } => bench::run(which),
        #[cfg(feature = "full")]
        Command::Docs => docs::run(),
        #[cfg(feature = "full")]
        Command::Accuracy { runs, scenario } => accuracy::run(runs, scenario),
        #[cfg(not(feature = "full"))]
        Command::Demo { .. } | Command::Bench { .. } | Command::Docs => full::reexec(),
        #[cfg(not(feature = "full"))]
        Command::Accuracy { .. } => full::reexec(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
