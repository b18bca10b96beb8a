//! `cargo xtask bench runner`: is the benchmark runner the bottleneck? On one 3-member etcd
//! cluster (data on tmpfs, so etcd is as fast as this machine allows), the same concurrency is
//! driven by one `etcd-monitor --run-benchmark` process and by four processes splitting it, for
//! writes and for serializable reads; then `etcdctl check perf --load=m` and the runner with
//! the same load (200 clients, 1000 puts/s, 256-byte keys, 1 KiB values) side by side.
//!
//! Figures only: nothing here fails on a threshold except a run that cannot start.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, bail};
use etcd_monitor_tests::EtcdCluster;

use super::traced_cluster::TracedCluster;

use crate::cmd::{root, run_with};

/// One runner process's figures.
struct RunnerResult {
    ops_per_sec: f64,
    succeeded: u64,
    failed: u64,
    p99_ms: f64,
}

/// One configuration's figures (1 or 4 processes).
struct Row {
    workload: &'static str,
    processes: usize,
    clients: usize,
    ops_per_sec: f64,
    p99_ms: f64,
    failed: u64,
    cpu_per_10k: f64,
}

/// CPU seconds (user + system) of every child waited for so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn spawn_runner(
    binary: &Path,
    endpoints: &str,
    args: &[String],
    json: &Path,
    data: &Path,
) -> anyhow::Result<Child> {
    Command::new(binary)
        .arg(format!("--endpoints={endpoints}"))
        .arg("--run-benchmark")
        .arg(format!("--benchmark-json={}", json.display()))
        .arg(format!("--data-dir={}", data.display()))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))
}

fn read_result(json: &Path) -> anyhow::Result<RunnerResult> {
    let text = std::fs::read_to_string(json).with_context(|| format!("read {}", json.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let p99 = v["percentiles"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["percentile"] == 99.0))
        .and_then(|p| p["seconds"].as_f64())
        .unwrap_or(f64::NAN);
    Ok(RunnerResult {
        ops_per_sec: v["summary"]["requests_per_second"].as_f64().unwrap_or(0.0),
        succeeded: v["summary"]["succeeded"].as_u64().unwrap_or(0),
        failed: v["summary"]["failed"].as_u64().unwrap_or(0),
        p99_ms: p99 * 1000.0,
    })
}

/// Runs `processes` runners at once, each with `clients / processes` clients; waits for all.
fn measure(
    binary: &Path,
    endpoints: &str,
    scratch: &Path,
    workload: &'static str,
    base: &[String],
    clients: usize,
    processes: usize,
) -> anyhow::Result<Row> {
    let per = clients / processes;
    let conns = (per / 8).max(1);
    let cpu_before = children_cpu_seconds();
    let mut children = Vec::new();
    for i in 0..processes {
        let json = scratch.join(format!("{workload}-{processes}-{i}.json"));
        let _ = std::fs::remove_file(&json);
        let mut args = base.to_vec();
        args.push(format!("--benchmark-clients={per}"));
        args.push(format!("--benchmark-conns={conns}"));
        // Process i lists the endpoints rotated by i, so with `--benchmark-target=all` the
        // connections of four processes land on the members as those of one process do.
        let mut list: Vec<&str> = endpoints.split(',').collect();
        let len = list.len().max(1);
        list.rotate_left(i % len);
        let child = spawn_runner(binary, &list.join(","), &args, &json, &scratch.join("data"))?;
        children.push((child, json));
    }
    let mut results = Vec::new();
    for (child, json) in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "runner failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        results.push(read_result(&json)?);
    }
    let cpu = children_cpu_seconds() - cpu_before;
    let ops: u64 = results.iter().map(|r| r.succeeded + r.failed).sum();
    Ok(Row {
        workload,
        processes,
        clients,
        ops_per_sec: results.iter().map(|r| r.ops_per_sec).sum(),
        // Percentiles do not add up; the worst process's p99 bounds the combined one.
        p99_ms: results.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        failed: results.iter().map(|r| r.failed).sum(),
        cpu_per_10k: cpu / (ops.max(1) as f64 / 10_000.0),
    })
}

/// `etcdctl check perf --load=m`: its verdict lines and its CPU per 10k puts.
fn check_perf(cluster: &EtcdCluster) -> anyhow::Result<(Vec<String>, f64)> {
    let cpu_before = children_cpu_seconds();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .args(["check", "perf", "--load=m"])
        .output()
        .context("run etcdctl check perf (apt-get install etcd-client)")?;
    let cpu = children_cpu_seconds() - cpu_before;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap_or(l).trim().to_string())
        // etcdctl 3.4 prints "Slowest request took too long" without a FAIL prefix.
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL") || l.contains("Slowest"))
        .collect();
    if lines.is_empty() {
        bail!("etcdctl check perf printed no verdict: {text}");
    }
    // check perf issues about 1000 puts/s for 60 s at --load=m.
    let throughput = lines
        .iter()
        .find_map(|l| l.split("Throughput is ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(1000.0);
    Ok((lines, cpu / (throughput * 60.0 / 10_000.0)))
}

/// Builds the collector in release mode and returns the binary.
pub(super) fn build() -> anyhow::Result<PathBuf> {
    run_with(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "etcd-monitor",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .unwrap_or_else(|| root().join("target"));
    let binary = target.join("release").join("etcd-monitor");
    anyhow::ensure!(binary.exists(), "{} was not built", binary.display());
    Ok(binary)
}

/// Runs the benchmark: `seconds` per measurement, `clients` in total, `perf_seconds` for the
/// runner's copy of check perf's load (0 skips check perf and its copy).
pub fn run(seconds: u64, clients: usize, perf_seconds: u64, on_disk: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        clients >= 4 && clients.is_multiple_of(4),
        "--clients must be a multiple of 4"
    );
    let binary = build()?;
    let traced = TracedCluster::start("etcdmon-bench-runner-", on_disk)?;
    let endpoints = traced.cluster.endpoints();
    let scratch = tempfile::Builder::new()
        .prefix("etcdmon-bench-runner-out-")
        .tempdir()?;
    let run = RunnerRun {
        binary: &binary,
        endpoints: &endpoints,
        scratch: scratch.path(),
    };
    let workloads = workloads(seconds);
    let rows = run.measure_workloads(&workloads, clients, seconds)?;
    let perf = if perf_seconds > 0 {
        Some(run.compare_with_check_perf(&traced.cluster, perf_seconds)?)
    } else {
        None
    };
    print_rows(&rows, &workloads, clients, seconds, on_disk);
    if let Some(perf) = perf {
        perf.print(perf_seconds);
    }
    drop(traced);
    Ok(())
}

/// The workloads measured, by name: `--benchmark-*` flags for runs of `seconds`.
fn workloads(seconds: u64) -> [(&'static str, Vec<String>); 2] {
    let duration = format!("--benchmark-duration={seconds}s");
    // Reads first: once a write run's prefix has been deleted, etcd 3.4 answers ranges ~10x
    // slower until the next compaction (measured here: 11k/s → 1k/s after deleting 20k keys),
    // which would measure etcd's tombstones instead of the runner.
    [
        (
            "serializable read",
            vec![
                "--benchmark-type=read".into(),
                "--benchmark-consistency=serializable".into(),
                "--benchmark-target=all".into(),
                duration.clone(),
            ],
        ),
        (
            "write",
            vec!["--benchmark-type=write".into(), duration.clone()],
        ),
    ]
}

/// What every runner process of the benchmark shares: the binary, the cluster, the output dir.
struct RunnerRun<'a> {
    binary: &'a Path,
    endpoints: &'a str,
    scratch: &'a Path,
}

impl RunnerRun<'_> {
    /// Warms up, then measures each workload with one and with four processes, alternating.
    fn measure_workloads(
        &self,
        workloads: &[(&'static str, Vec<String>)],
        clients: usize,
        seconds: u64,
    ) -> anyhow::Result<Vec<Row>> {
        eprintln!("xtask: bench runner: warming up");
        self.measure("warmup", &workloads[0].1, clients, 1)?;
        let mut rows = Vec::new();
        for (name, args) in workloads {
            // Alternate the order so drift (WAL growth, page cache) does not favour one side.
            for processes in [1, 4, 4, 1] {
                eprintln!("xtask: bench runner: {name}, {processes} process(es), {seconds} s");
                rows.push(self.measure(name, args, clients, processes)?);
            }
        }
        Ok(rows)
    }

    fn measure(
        &self,
        workload: &'static str,
        base: &[String],
        clients: usize,
        processes: usize,
    ) -> anyhow::Result<Row> {
        measure(
            self.binary,
            self.endpoints,
            self.scratch,
            workload,
            base,
            clients,
            processes,
        )
    }

    /// Runs `etcdctl check perf --load=m`, then the runner with the same load for
    /// `perf_seconds`.
    fn compare_with_check_perf(
        &self,
        cluster: &EtcdCluster,
        perf_seconds: u64,
    ) -> anyhow::Result<PerfComparison> {
        eprintln!("xtask: bench runner: etcdctl check perf --load=m (60 s)");
        let (lines, cpu) = check_perf(cluster)?;
        eprintln!("xtask: bench runner: the runner with check perf's load ({perf_seconds} s)");
        let load: Vec<String> = [
            "--benchmark-type=write",
            "--benchmark-rate=1000",
            "--benchmark-key-size=256",
            "--benchmark-value-size=1024",
            "--benchmark-key-order=random",
            "--benchmark-key-space=100000000",
            // check perf's verdicts: ≥ 90 % of the rate, slowest request < 500 ms.
            "--slo-min-rps=900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--benchmark-duration={perf_seconds}s")])
        .collect();
        let mut args = load.clone();
        args.push("--benchmark-clients=200".into());
        args.push("--benchmark-conns=200".into());
        let json = self.scratch.join("perf.json");
        let cpu_before = children_cpu_seconds();
        let child = spawn_runner(
            self.binary,
            self.endpoints,
            &args,
            &json,
            &self.scratch.join("data"),
        )?;
        let out = child.wait_with_output()?;
        let runner_cpu = children_cpu_seconds() - cpu_before;
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok(PerfComparison {
            lines,
            cpu,
            report,
            runner_cpu,
            code: out.status.code(),
        })
    }
}

/// Prints the runs' table and each workload's one-process share of four processes' throughput.
fn print_rows(
    rows: &[Row],
    workloads: &[(&'static str, Vec<String>)],
    clients: usize,
    seconds: u64,
    on_disk: bool,
) {
    println!();
    println!(
        "benchmark runner (3-member etcd 3.4 on loopback, data on {}, {clients} clients in total, {seconds} s per run)",
        if on_disk { "disk" } else { "tmpfs" }
    );
    println!();
    println!(
        "| workload | processes | clients each | ops/s | p99 (worst process) | errors | client CPU s / 10k ops |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {} | {:.3} |",
            r.workload,
            r.processes,
            r.clients / r.processes,
            r.ops_per_sec,
            r.p99_ms,
            r.failed,
            r.cpu_per_10k
        );
    }
    println!();
    for (name, _) in workloads {
        let mean = |p: usize| {
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| r.workload == *name && r.processes == p)
                .map(|r| r.ops_per_sec)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let (one, four) = (mean(1), mean(4));
        println!(
            "{name}: one process {one:.0} ops/s = {:.1} % of four processes' {four:.0} ops/s (target ≥ 95 %)",
            one / four.max(1e-9) * 100.0
        );
    }
}

/// `etcdctl check perf` against the runner with the same load.
struct PerfComparison {
    /// check perf's output lines.
    lines: Vec<String>,
    /// check perf's CPU seconds.
    cpu: f64,
    /// The runner's JSON report (null when it wrote none).
    report: serde_json::Value,
    /// The runner's CPU seconds.
    runner_cpu: f64,
    /// The runner's exit code.
    code: Option<i32>,
}

impl PerfComparison {
    /// Prints the two tools side by side (markdown).
    fn print(&self, perf_seconds: u64) {
        let (lines, v) = (&self.lines, &self.report);
        let s = &v["summary"];
        let ops = s["succeeded"].as_u64().unwrap_or(0) + s["failed"].as_u64().unwrap_or(0);
        let p99 = v["percentiles"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["percentile"] == 99.0))
            .and_then(|p| p["seconds"].as_f64())
            .unwrap_or(f64::NAN);
        println!();
        println!(
            "check perf's load (--load=m: 200 clients, 1000 puts/s, 256 B keys, 1 KiB values)"
        );
        println!();
        println!(
            "| tool | throughput | slowest | stddev | p99 | client CPU s / 10k ops | verdict |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|");
        let find = |needle: &str| {
            lines
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
                .unwrap_or_default()
        };
        println!(
            "| etcdctl check perf (60 s) | {} | {} | {} | n/a | {:.3} | {} |",
            find("Throughput"),
            find("Slowest"),
            find("Stddev"),
            self.cpu,
            lines.last().cloned().unwrap_or_default()
        );
        println!(
            "| etcd-monitor --run-benchmark ({perf_seconds} s) | {:.0} writes/s | {:.4} s | {:.4} s | {:.4} s | {:.3} | {} |",
            s["requests_per_second"].as_f64().unwrap_or(0.0),
            s["slowest_seconds"].as_f64().unwrap_or(0.0),
            s["stddev_seconds"].as_f64().unwrap_or(0.0),
            p99,
            self.runner_cpu / (ops.max(1) as f64 / 10_000.0),
            match (self.code, v["slo"]["pass"].as_bool()) {
                (Some(0), Some(true)) => "PASS (≥ 900 req/s)",
                (_, Some(false)) => "FAIL (< 900 req/s)",
                _ => "did not finish",
            }
        );
    }
}
