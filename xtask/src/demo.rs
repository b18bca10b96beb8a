//! `cargo xtask demo`: a local 3-member etcd cluster (client ports 2379, 22379, 32379), the
//! agent with eBPF, the collector, Prometheus (scraping all of them with the project's scrape
//! config and rules) and a small write/read load, until Ctrl-C. Everything it starts is stopped
//! and its scratch directory removed on the way out.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use base64::Engine as _;
use etcd_monitor_tests::{process::ChildGuard, wait_for};

use crate::cmd::root;

const MEMBERS: [(&str, u16, u16); 3] = [
    ("etcd-1", 2379, 2380),
    ("etcd-2", 22379, 22380),
    ("etcd-3", 32379, 32380),
];

/// What the demo starts.
pub struct Options {
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// Run a small write/read load.
    pub load: bool,
    /// Start Prometheus.
    pub prometheus: bool,
}

/// Prometheus' port in the demo.
const PROMETHEUS_PORT: u16 = 9090;

/// `deploy/prometheus/prometheus.yml` (written for docker-compose host names) pointed at the
/// demo's loopback ports, with the rules file by absolute path and a 5 s scrape interval.
fn prometheus_config(root: &Path) -> anyhow::Result<String> {
    let path = root.join("deploy/prometheus/prometheus.yml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let rules = root.join("deploy/prometheus/etcd-monitor.rules.yml");
    let mut out = text
        .replace("scrape_interval: 10s", "scrape_interval: 5s")
        .replace("evaluation_interval: 10s", "evaluation_interval: 5s")
        .replace(
            "- etcd-monitor.rules.yml",
            &format!("- {}", rules.display()),
        )
        .replace("\"etcd-monitor:8080\"", "\"127.0.0.1:8080\"")
        .replace("\"agent:9465\"", "\"127.0.0.1:9465\"")
        .replace(
            "\"localhost:9090\"",
            &format!("\"127.0.0.1:{PROMETHEUS_PORT}\""),
        );
    for (i, (name, client, _)) in MEMBERS.iter().enumerate() {
        let compose = format!("etcd{}", i + 1);
        out = out
            .replace(
                &format!("\"{compose}:2379\""),
                &format!("\"127.0.0.1:{client}\""),
            )
            .replace(&format!("member: {compose}"), &format!("member: {name}"));
    }
    anyhow::ensure!(
        !out.contains("etcd1:") && out.contains("127.0.0.1:32379"),
        "{} no longer has the targets the demo rewrites (etcd1:2379 … agent:9465)",
        path.display()
    );
    Ok(out)
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn healthy(port: u16) -> bool {
    etcd_monitor_tests::http::get(&format!("http://127.0.0.1:{port}/health"))
        .map(|r| r.status == 200 && r.body.contains("true"))
        .unwrap_or(false)
}

fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("RUST_LOG", "info");
    // Should the demo itself be killed outright (no chance to clean up), its children die too.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ChildGuard::spawn(name, cmd, &dir.join(format!("{name}.log")))
}

/// Runs the demo until Ctrl-C (or for `duration`, when given).
pub fn run(options: Options) -> anyhow::Result<()> {
    let Options {
        duration,
        load: with_load,
        prometheus,
    } = options;
    crate::setup::run()?;
    crate::cmd::build_binaries(true, &[])?;
    check_ports_free(prometheus)?;
    let dir = tempfile::Builder::new()
        .prefix("etcd-monitor-demo-")
        .tempdir()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc_handler(move || stop.store(true, Ordering::Relaxed))?;
    }
    let mut children = start_etcd_members(dir.path())?;
    let endpoints = MEMBERS
        .iter()
        .map(|(_, c, _)| format!("http://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    children.push(start_collector(dir.path(), &endpoints)?);
    children.push(start_agent(dir.path())?);
    if prometheus {
        children.push(start_prometheus(dir.path())?);
    }
    print_banner(dir.path(), &endpoints, prometheus)?;
    put_load_until_stopped(&stop, duration, with_load);
    println!("Stopping…");
    for mut child in children.into_iter().rev() {
        let _ = child.terminate(Duration::from_secs(5));
    }
    let path = dir.path().to_path_buf();
    dir.close()
        .with_context(|| format!("removing {}", path.display()))?;
    println!("Stopped; removed {}.", path.display());
    Ok(())
}

/// Fails naming the first of the demo's fixed ports that is in use.
fn check_ports_free(prometheus: bool) -> anyhow::Result<()> {
    let mut ports = vec![2379, 2380, 22379, 22380, 32379, 32380, 8080, 9464, 9465];
    if prometheus {
        ports.push(PROMETHEUS_PORT);
    }
    for port in ports {
        anyhow::ensure!(
            port_free(port),
            "port {port} is in use; stop whatever holds it (another demo?) and try again"
        );
    }
    Ok(())
}

/// Starts the three etcd members (data under `dir`) and waits until each is healthy.
fn start_etcd_members(dir: &Path) -> anyhow::Result<Vec<ChildGuard>> {
    let cluster: Vec<String> = MEMBERS
        .iter()
        .map(|(n, _, p)| format!("{n}=http://127.0.0.1:{p}"))
        .collect();
    let mut children = Vec::new();
    for (name, client, peer) in MEMBERS {
        let args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", dir.join(name).display()),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster={}", cluster.join(",")),
            "--initial-cluster-token=etcd-monitor-demo".to_string(),
            "--initial-cluster-state=new".to_string(),
        ];
        children.push(spawn(name, Path::new("etcd"), &args, dir)?);
    }
    for (name, client, _) in MEMBERS {
        wait_for(&format!("{name} healthy"), Duration::from_secs(30), || {
            healthy(client).then_some(())
        })?;
    }
    Ok(children)
}

/// Starts the collector (release build) on `endpoints` and waits for its health route.
fn start_collector(dir: &Path, endpoints: &str) -> anyhow::Result<ChildGuard> {
    let child = spawn(
        "collector",
        &root().join("target/release").join("etcd-monitor"),
        &[
            format!("--endpoints={endpoints}"),
            "--health-check-interval=5s".to_string(),
            "--metrics-interval=5s".to_string(),
            // Verdicts within seconds rather than the default 30 s window.
            "--diagnosis-window=15s".to_string(),
            "--diagnosis-interval=5s".to_string(),
            format!("--data-dir={}", dir.join("collector").display()),
        ],
        dir,
    )?;
    wait_for("collector", Duration::from_secs(30), || {
        etcd_monitor_tests::http::get("http://127.0.0.1:8080/health")
            .ok()
            .filter(|r| r.status == 200)
    })?;
    Ok(child)
}

/// Starts the agent (release build) on the members under `dir` and waits for its health route.
fn start_agent(dir: &Path) -> anyhow::Result<ChildGuard> {
    let child = spawn(
        "agent",
        &root().join("target/release").join("etcd-monitor-agent"),
        &[
            "--collector=http://127.0.0.1:9464".to_string(),
            "--node-name=demo-node".to_string(),
            format!("--match={}", dir.display()),
        ],
        dir,
    )?;
    wait_for("agent", Duration::from_secs(30), || {
        etcd_monitor_tests::http::get("http://127.0.0.1:9465/healthz")
            .ok()
            .filter(|r| r.status == 200)
    })?;
    Ok(child)
}

/// Starts Prometheus scraping the demo and waits until it is ready.
fn start_prometheus(dir: &Path) -> anyhow::Result<ChildGuard> {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&root())?)?;
    let child = spawn(
        "prometheus",
        Path::new("prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("prometheus").display()),
            format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
        ],
        dir,
    )?;
    wait_for("prometheus", Duration::from_secs(60), || {
        etcd_monitor_tests::http::get(&format!("http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"))
            .ok()
            .filter(|r| r.status == 200)
    })?;
    Ok(child)
}

/// Prints where everything the demo started listens.
fn print_banner(dir: &Path, endpoints: &str, prometheus: bool) -> anyhow::Result<()> {
    let mode =
        etcd_monitor_tests::http::get("http://127.0.0.1:9465/healthz")?.json()?["mode"].clone();
    println!("\netcd-monitor demo is running (agent mode: {mode}); Ctrl-C stops everything.\n");
    println!("  status page         http://127.0.0.1:8080/");
    println!("  etcd members        {endpoints}");
    println!(
        "  collector REST      http://127.0.0.1:8080/api/v1/cluster/status   (OpenAPI: /api/v1/openapi.json)"
    );
    println!("  members + kernel    http://127.0.0.1:8080/api/v1/cluster/members");
    println!("  collector metrics   http://127.0.0.1:8080/metrics");
    println!("  agent               http://127.0.0.1:9465/metrics  and /healthz");
    println!(
        "  event stream (gRPC) 127.0.0.1:9464  (grpcurl -plaintext 127.0.0.1:9464 etcdmon.v1.EventStream/Subscribe)"
    );
    if prometheus {
        println!(
            "  Prometheus          http://127.0.0.1:{PROMETHEUS_PORT}/   (targets: /targets, alerts: /alerts)"
        );
    }
    println!("  logs                {}\n", dir.display());
    Ok(())
}

/// Until `stop` (or `duration`): with `with_load`, writes through every member in turn and reads
/// each key back.
fn put_load_until_stopped(stop: &AtomicBool, duration: Option<Duration>, with_load: bool) {
    let started = std::time::Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) && duration.is_none_or(|d| started.elapsed() < d) {
        if with_load {
            // Writes through every member in turn, and a read of a recent key after each.
            let (_, port, _) = MEMBERS[(i % 3) as usize];
            let key =
                base64::engine::general_purpose::STANDARD.encode(format!("/demo/key-{}", i % 1000));
            let put = etcd_monitor_tests::http::post_json(
                &format!("http://127.0.0.1:{port}/v3/kv/put"),
                &format!(r#"{{"key":"{key}","value":"ZGVtbw=="}}"#),
            );
            let read = etcd_monitor_tests::http::post_json(
                &format!("http://127.0.0.1:{port}/v3/kv/range"),
                &format!(r#"{{"key":"{key}"}}"#),
            );
            if put.is_err() || read.is_err() {
                std::thread::sleep(Duration::from_millis(200));
            }
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `f` on SIGINT or SIGTERM.
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            f();
        });
    });
    Ok(())
}
