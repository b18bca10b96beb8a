//! `cargo xtask bench collector`: the collector (release build) watches a real 3-member etcd
//! cluster on loopback; `wrk` loads `/api/v1/cluster/status` and `/metrics` (requests/s, p99);
//! then a soak samples the collector's CPU and RSS from /proc so memory growth shows.
//!
//! Figures only: nothing here fails on a threshold except a collector that dies.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use etcd_monitor_tests::{CollectorProcess, EtcdCluster, wait_for};

/// One wrk run.
struct WrkResult {
    path: &'static str,
    requests_per_sec: f64,
    p50: String,
    p99: String,
    errors: String,
}

/// One /proc sample of the collector.
struct Sample {
    at: Duration,
    cpu_ticks: u64,
    rss_kib: u64,
}

/// Runs the benchmark from the workspace at `root`, with a soak of `soak`.
pub fn run(soak: Duration) -> anyhow::Result<()> {
    let binary = crate::cmd::build_binaries(true, &[])?.join("etcd-monitor");
    eprintln!("xtask: bench collector: starting a 3-member etcd cluster");
    let cluster = EtcdCluster::start3()?;
    let scratch = tempfile_dir()?;
    let collector = start_collector(&binary, &cluster, &scratch)?;

    let mut wrk = Vec::new();
    for path in ["/api/v1/cluster/status", "/metrics"] {
        eprintln!("xtask: bench collector: wrk {path}");
        wrk.push(run_wrk(&collector.url, path, Duration::from_secs(20))?);
    }
    let samples = soak_samples(&collector, soak)?;

    println!();
    println!("collector benchmark (3-member etcd 3.4 on loopback, health and metrics every 1 s)");
    print_wrk(&wrk);
    print_soak(&samples)?;
    drop(collector);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Starts the collector on the cluster and waits until it sees the cluster healthy.
fn start_collector(
    binary: &std::path::Path,
    cluster: &EtcdCluster,
    scratch: &std::path::Path,
) -> anyhow::Result<CollectorProcess> {
    let args = vec![
        format!("--endpoints={}", cluster.endpoints()),
        "--health-check-interval=1s".to_string(),
        "--metrics-interval=1s".to_string(),
        format!("--data-dir={}", scratch.join("data").display()),
    ];
    let collector = CollectorProcess::start(binary, &args, scratch)?;
    wait_for(
        "collector to see a healthy cluster",
        Duration::from_secs(30),
        || {
            collector
                .status(None)
                .ok()
                .filter(|s| s["healthy"] == true && s["available_members"] == 3)
        },
    )?;
    Ok(collector)
}

/// Samples the collector every 10 s for `soak` while polling its API like a dashboard; fails
/// when the cluster is unhealthy afterwards.
fn soak_samples(collector: &CollectorProcess, soak: Duration) -> anyhow::Result<Vec<Sample>> {
    let pid = collector.process.pid();
    eprintln!("xtask: bench collector: soak for {soak:?} (sampling every 10 s)");
    let start = Instant::now();
    let mut samples = vec![sample(pid, start)?];
    while start.elapsed() < soak {
        std::thread::sleep(
            Duration::from_secs(10)
                .min(soak.saturating_sub(start.elapsed()))
                .max(Duration::from_millis(100)),
        );
        // Keep the API in use during the soak, like a dashboard polling every 10 s.
        let _ = collector.status(None);
        let _ = collector.metrics();
        samples.push(sample(pid, start)?);
    }
    let status = collector.status(None)?;
    anyhow::ensure!(
        status["healthy"] == true,
        "cluster unhealthy after the soak: {status}"
    );
    Ok(samples)
}

/// Prints the wrk results (markdown).
fn print_wrk(wrk: &[WrkResult]) {
    println!();
    println!("| endpoint | requests/s | p50 | p99 | errors |");
    println!("|---|---:|---:|---:|---|");
    for r in wrk {
        println!(
            "| {} | {:.0} | {} | {} | {} |",
            r.path, r.requests_per_sec, r.p50, r.p99, r.errors
        );
    }
}

/// Prints the soak's CPU and RSS figures, the RSS trend and the samples.
fn print_soak(samples: &[Sample]) -> anyhow::Result<()> {
    let tick = ticks_per_second();
    let (first, last) = match (samples.first(), samples.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("no samples"),
    };
    let wall = (last.at - first.at).as_secs_f64().max(0.001);
    let cpu = (last.cpu_ticks - first.cpu_ticks) as f64 / tick / wall * 100.0;
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    println!();
    println!("| soak | CPU (avg, % of one core) | RSS start | RSS end | RSS peak | RSS change |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {:.0} s | {:.2} | {} KiB | {} KiB | {} KiB | {:+.1} % |",
        wall,
        cpu,
        first.rss_kib,
        last.rss_kib,
        peak,
        (last.rss_kib as f64 - first.rss_kib as f64) / (first.rss_kib.max(1) as f64) * 100.0
    );
    // Flat means no trend once warmed up: the least-squares slope of the second half.
    let half = &samples[samples.len() / 2..];
    println!();
    println!(
        "RSS slope over the second half of the soak: {:+.1} KiB/min ({} samples)",
        rss_slope_kib_per_min(half),
        half.len()
    );
    println!();
    println!(
        "RSS samples (s, KiB): {}",
        samples
            .iter()
            .map(|s| format!("{}:{}", s.at.as_secs(), s.rss_kib))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Least-squares slope of RSS over time, KiB per minute (0 with fewer than two samples).
fn rss_slope_kib_per_min(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let xs: Vec<f64> = samples.iter().map(|s| s.at.as_secs_f64() / 60.0).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    xs.iter()
        .zip(&ys)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>()
        / sxx
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("etcdmon-bench-collector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn run_wrk(base: &str, path: &'static str, duration: Duration) -> anyhow::Result<WrkResult> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{}s", duration.as_secs()),
            "--latency",
        ])
        .arg(format!("{base}{path}"))
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let requests_per_sec = field("Requests/sec:").parse().unwrap_or(0.0);
    let errors = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(WrkResult {
        path,
        requests_per_sec,
        p50: field("50%"),
        p99: field("99%"),
        errors: if errors.is_empty() {
            "none".to_string()
        } else {
            errors
        },
    })
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn sample(pid: u32, start: Instant) -> anyhow::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("collector (pid {pid}) is gone"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_ticks = ticks(11) + ticks(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        at: start.elapsed(),
        cpu_ticks,
        rss_kib,
    })
}
