//! `cargo xtask bench pipeline`: events/s through the real shipping path (batcher, queue,
//! tonic stream) into the real collector, with zero drops, CPU per million events on each side;
//! and the kernel→user limit of the ring buffer on this machine.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_monitor_tests::{AgentProcess, CollectorProcess, http::prom_sum, wait_for};

use crate::cmd::root;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

struct Run {
    events: f64,
    seconds: f64,
    dropped: f64,
    agent_cpu: f64,
    received: f64,
    collector_cpu: f64,
}

fn load(collector: &CollectorProcess, seconds: u64, rate: Option<u64>) -> anyhow::Result<Run> {
    let received_before =
        prom_sum(&collector.metrics()?, "etcdmon_ingest_events_total", &[]).unwrap_or(0.0);
    let ticks_before = cpu_ticks(collector.process.pid());
    let mut cmd = Command::new(root().join("target/release/examples/pipeline_load"));
    cmd.arg(&collector.grpc_url).arg(seconds.to_string());
    if let Some(rate) = rate {
        cmd.arg(rate.to_string());
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("run pipeline_load")?;
    anyhow::ensure!(
        out.status.success(),
        "pipeline_load failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let events = report["events"].as_f64().unwrap_or(0.0);
    let received = wait_for(
        "the collector to take every event",
        Duration::from_secs(30),
        || {
            let now = prom_sum(
                &collector.metrics().ok()?,
                "etcdmon_ingest_events_total",
                &[],
            )? - received_before;
            (now >= events - report["dropped"].as_f64().unwrap_or(0.0)).then_some(now)
        },
    )
    .unwrap_or(0.0);
    Ok(Run {
        events,
        seconds: report["seconds"].as_f64().unwrap_or(1.0),
        dropped: report["dropped"].as_f64().unwrap_or(0.0),
        agent_cpu: report["cpu_seconds"].as_f64().unwrap_or(0.0),
        received,
        collector_cpu: (cpu_ticks(collector.process.pid()) - ticks_before) as f64 / 100.0,
    })
}

fn print(label: &str, r: &Run) {
    let rate = r.events / r.seconds;
    println!(
        "{label:<28} {:>12.0} ev/s {:>12.0} received {:>10.0} dropped {:>8.2} s CPU/M ev (agent) {:>8.2} s CPU/M ev (collector)",
        rate,
        r.received,
        r.dropped,
        r.agent_cpu / (r.events / 1e6),
        r.collector_cpu / (r.received.max(1.0) / 1e6)
    );
}

/// Kernel → user: a traced `dd` making one-byte writes as fast as it can.
fn ring_buffer_limit(dir: &std::path::Path) -> anyhow::Result<()> {
    if !crate::cmd::is_root() {
        println!("ring buffer limit: skipped (loading eBPF needs root)");
        return Ok(());
    }
    let marker = format!("etcdmon-pipeline-bench-{}", std::process::id());
    let agent = AgentProcess::start(
        &root().join("target/release/etcd-monitor-agent"),
        &[
            "--mode=ebpf",
            "--min-duration=0s",
            "--probes=sync,write",
            "--ringbuf-bytes=16777216",
            "--rescan-interval=100ms",
            &format!("--match={marker}"),
        ],
        dir,
        |_| {},
    )?;
    let out = dir.join(format!("{marker}.bin"));
    let script = format!(
        "read _go; exec dd if=/dev/zero of={} bs=1 count=2000000 status=none",
        out.display()
    );
    let mut dd = Command::new("sh")
        .args(["-c", &script, &marker])
        .stdin(Stdio::piped())
        .spawn()?;
    agent.wait_tracking(&[dd.id()], Duration::from_secs(10))?;
    let before = agent.metrics()?;
    let delivered0 = prom_sum(
        &before,
        "etcdmon_agent_events_total",
        &[("kind", "syscall")],
    )
    .unwrap_or(0.0);
    let ticks0 = cpu_ticks(agent.process.pid());
    let start = Instant::now();
    use std::io::Write as _;
    dd.stdin.take().context("stdin")?.write_all(b"go\n")?;
    dd.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let after = agent.metrics()?;
    let delivered = prom_sum(&after, "etcdmon_agent_events_total", &[("kind", "syscall")])
        .unwrap_or(0.0)
        - delivered0;
    let dropped = prom_sum(
        &after,
        "etcdmon_events_dropped_total",
        &[("stage", "kernel")],
    )
    .unwrap_or(0.0);
    let counted = prom_sum(
        &after,
        "etcdmon_write_duration_seconds_count",
        &[("op", "write")],
    )
    .unwrap_or(0.0);
    let cpu = (cpu_ticks(agent.process.pid()) - ticks0) as f64 / 100.0;
    println!(
        "ring buffer (kernel→agent)   {:>12.0} ev/s delivered over {seconds:.2} s; {delivered:.0} delivered, {dropped:.0} dropped, {counted:.0} counted in kernel; reader {:.2} s CPU/M ev",
        delivered / seconds,
        cpu / (delivered.max(1.0) / 1e6)
    );
    let _ = std::fs::remove_file(out);
    Ok(())
}

/// With `ETCDMON_BENCH_COLLECTORS=label=/path/to/etcd-monitor,label2=/path/...`: the same
/// load against each collector binary in turn, `ETCDMON_BENCH_ROUNDS` rounds (default 2)
/// back to back, so a before/after comparison sees the same machine load. Only the load
/// generator is built.
fn compare(spec: &str, seconds: u64) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    crate::cmd::run_with(Command::new(cargo).current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "etcd-monitor-agent",
        "--example",
        "pipeline_load",
    ]))?;
    let binaries: Vec<(&str, &str)> = spec
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    anyhow::ensure!(
        !binaries.is_empty(),
        "ETCDMON_BENCH_COLLECTORS: expected label=path[,label=path]"
    );
    let rounds: usize = std::env::var("ETCDMON_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    println!(
        "\npipeline comparison: synthetic disk events, batches of 1024, one gRPC stream, {seconds} s per run, {rounds} rounds"
    );
    for round in 1..=rounds {
        for (label, path) in &binaries {
            let dir = tempfile::tempdir()?;
            let collector = CollectorProcess::start(
                std::path::Path::new(path),
                &[
                    "--endpoints=http://127.0.0.1:9".to_string(),
                    format!("--data-dir={}", dir.path().display()),
                ],
                dir.path(),
            )?;
            let max = load(&collector, seconds, None)?;
            print(&format!("round {round} {label} unthrottled"), &max);
            let capacity = (max.received / max.seconds).max(1.0);
            let steady = load(&collector, seconds, Some((capacity * 0.9) as u64))?;
            print(&format!("round {round} {label} at 90 %"), &steady);
        }
    }
    Ok(())
}

/// Runs the benchmark.
pub fn run(seconds: u64) -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var("ETCDMON_BENCH_COLLECTORS") {
        return compare(&spec, seconds);
    }
    crate::cmd::build_binaries(true, &["--example", "pipeline_load"])?;
    let dir = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &root().join("target/release/etcd-monitor"),
        &[
            "--endpoints=http://127.0.0.1:9".to_string(),
            format!("--data-dir={}", dir.path().display()),
        ],
        dir.path(),
    )?;
    println!(
        "\npipeline: synthetic disk events, batches of 1024, one gRPC stream, release builds, {seconds} s per run"
    );
    let max = load(&collector, seconds, None)?;
    print("unthrottled", &max);
    let capacity = (max.received / max.seconds).max(1.0);
    let steady = load(&collector, seconds, Some((capacity * 0.9) as u64))?;
    print("at 90 % of that", &steady);
    println!(
        "sustained with zero drops: {} ({:.0} ev/s; generated {:.0}, received {:.0})",
        if steady.dropped == 0.0 && steady.received >= steady.events {
            "yes"
        } else {
            "NO"
        },
        steady.events / steady.seconds,
        steady.events,
        steady.received
    );
    ring_buffer_limit(dir.path())
}
