//! What tracing costs etcd: put throughput on one 3-member cluster with no tracer, with the
//! agent, and with bpftrace on the same tracepoints, interleaved round by round.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use etcd_monitor_tests::{AgentProcess, process::ChildGuard, wait_for};

use super::traced_cluster::{CLIENTS, TracedCluster, VALUE_BYTES, build_agent, put_load};

/// Every probe group.
const FULL: &str = "sync,write,fd,process,net,recv,block,sched";
/// The groups before the diagnosis probes (recv, block, sched) were added.
const BEFORE_DIAG: &str = "sync,write,fd,process,net";

/// A tracer under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tracer {
    None,
    /// The agent with these `--probes` groups.
    Agent(&'static str),
    Bpftrace,
}

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "no tracer",
            Tracer::Agent(FULL) => "agent (all probes)",
            Tracer::Agent(probes) => probes,
            Tracer::Bpftrace => "bpftrace",
        }
    }
}

/// One measurement.
struct Sample {
    ops_per_sec: f64,
    /// Tracer CPU as a share of one core during the load.
    cpu_share: Option<f64>,
    /// Tracer peak RSS in KiB.
    peak_rss_kib: Option<u64>,
}

/// bpftrace program equivalent to the agent's disk path: the same 7 syscalls, filtered to etcd,
/// latency histograms in kernel.
pub(super) fn bpftrace_script() -> String {
    let ops = [
        "fdatasync",
        "fsync",
        "sync_file_range",
        "write",
        "pwrite64",
        "writev",
        "pwritev",
    ];
    let enters: Vec<String> = ops
        .iter()
        .map(|o| format!("tracepoint:syscalls:sys_enter_{o}"))
        .collect();
    let exits: Vec<String> = ops
        .iter()
        .map(|o| format!("tracepoint:syscalls:sys_exit_{o}"))
        .collect();
    format!(
        "{} /comm == \"etcd\"/ {{ @start[tid] = nsecs; }}\n{} /@start[tid]/ {{ @lat[probe] = hist(nsecs - @start[tid]); delete(@start[tid]); }}\n",
        enters.join(",\n"),
        exits.join(",\n")
    )
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn measure(
    tracer: Tracer,
    traced: &TracedCluster,
    agent_bin: &Path,
    seconds: u64,
) -> anyhow::Result<Sample> {
    let cluster = &traced.cluster;
    let (guard_pid, _agent, _bpftrace): (Option<u32>, Option<AgentProcess>, Option<ChildGuard>) =
        match tracer {
            Tracer::None => (None, None, None),
            Tracer::Agent(groups) => {
                let agent = traced.start_agent(agent_bin, groups, Duration::from_secs(20))?;
                (Some(agent.process.pid()), Some(agent), None)
            }
            Tracer::Bpftrace => {
                let mut cmd = Command::new("bpftrace");
                cmd.args(["-e", &bpftrace_script()]).stdin(Stdio::null());
                let log = cluster.dir().join("bpftrace.log");
                let guard = ChildGuard::spawn("bpftrace", cmd, &log)?;
                wait_for("bpftrace to attach", Duration::from_secs(60), || {
                    std::fs::read_to_string(&log)
                        .ok()
                        .filter(|t| t.contains("Attaching"))
                        .map(|_| ())
                })?;
                std::thread::sleep(Duration::from_secs(2));
                (Some(guard.pid()), None, Some(guard))
            }
        };
    let ticks_before = guard_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let ops_per_sec = put_load(&traced.endpoints, Duration::from_secs(seconds))?;
    let wall = started.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_share = match (guard_pid.and_then(cpu_ticks), ticks_before) {
        (Some(after), Some(before)) => Some((after - before) as f64 / hz / wall),
        _ => None,
    };
    let peak_rss_kib = guard_pid.and_then(peak_rss_kib);
    Ok(Sample {
        ops_per_sec,
        cpu_share,
        peak_rss_kib,
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Runs the benchmark and prints the table.
pub fn run(rounds: u32, seconds: u64, on_disk: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::cmd::is_root(),
        "the agent-overhead benchmark loads eBPF programs: run it as root"
    );
    let agent_bin = build_agent(true)?;
    // On tmpfs (the default) fdatasync costs nothing, etcd is CPU-bound, and every cycle a
    // tracer takes shows up as lost throughput: the worst case, and far less noisy than a disk
    // whose sync latency wanders from run to run.
    let traced = TracedCluster::start("etcdmon-bench-", on_disk)?;
    traced.warm_up()?;
    let results = measure_rounds(&traced, &agent_bin, rounds, seconds)?;
    print_table(&results, rounds, seconds, on_disk);
    Ok(())
}

/// Measures every tracer once per round, rotating the order each round; the samples by tracer,
/// the untraced baseline first.
fn measure_rounds(
    traced: &TracedCluster,
    agent_bin: &Path,
    rounds: u32,
    seconds: u64,
) -> anyhow::Result<Vec<(Tracer, Vec<Sample>)>> {
    let order = [
        Tracer::None,
        Tracer::Agent(FULL),
        Tracer::Agent(BEFORE_DIAG),
        Tracer::Agent("sync"),
        Tracer::Agent("sync,write,fd"),
        Tracer::Agent("sync,process,net"),
        Tracer::Agent("sync,recv"),
        Tracer::Agent("sync,block"),
        Tracer::Agent("sync,sched"),
        Tracer::Bpftrace,
    ];
    let mut results: Vec<(Tracer, Vec<Sample>)> = order.iter().map(|t| (*t, Vec::new())).collect();
    for round in 1..=rounds {
        // Rotate the order each round so drift (WAL growth, page cache) hits all alike.
        for k in 0..order.len() {
            let tracer = order[(k + round as usize) % order.len()];
            let sample = measure(tracer, traced, agent_bin, seconds)?;
            eprintln!(
                "xtask: bench: round {round} {:<20} {:>8.0} puts/s",
                tracer.name(),
                sample.ops_per_sec
            );
            if let Some((_, v)) = results.iter_mut().find(|(t, _)| *t == tracer) {
                v.push(sample);
            }
        }
    }
    Ok(results)
}

/// Prints each tracer's mean throughput against the untraced baseline, its CPU and peak RSS.
fn print_table(results: &[(Tracer, Vec<Sample>)], rounds: u32, seconds: u64, on_disk: bool) {
    let baseline = mean(
        &results[0]
            .1
            .iter()
            .map(|s| s.ops_per_sec)
            .collect::<Vec<_>>(),
    );
    println!(
        "\nagent-overhead: {rounds} rounds x {seconds}s, {CLIENTS} clients, {VALUE_BYTES} B values, 3-member etcd on loopback, data on {}",
        if on_disk { "disk" } else { "tmpfs" }
    );
    println!(
        "{:<20} {:>10} {:>12} {:>12} {:>14}",
        "tracer", "puts/s", "vs none", "tracer CPU", "tracer peak RSS"
    );
    for (tracer, samples) in results {
        let ops = mean(&samples.iter().map(|s| s.ops_per_sec).collect::<Vec<_>>());
        let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu_share).collect();
        let rss = samples.iter().filter_map(|s| s.peak_rss_kib).max();
        println!(
            "{:<20} {:>10.0} {:>11.1}% {:>12} {:>14}",
            tracer.name(),
            ops,
            (ops / baseline - 1.0) * 100.0,
            if cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}% core", mean(&cpu) * 100.0)
            },
            rss.map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }
}
