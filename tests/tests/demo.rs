//! The README's main command, run as a user runs it: `cargo xtask demo`, bounded, then Ctrl-C.
//! Every URL it prints answers; Prometheus scrapes every member, the collector and the agent
//! with the project's rules; every expression of the Grafana dashboard returns data from that
//! Prometheus; the status page renders live values in a real headless Chromium (with a
//! screenshot saved to `target/status-page.png`); and Ctrl-C leaves no process, port or
//! scratch directory behind.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, ensure};
use etcd_monitor_tests::{http, is_root, process::ChildGuard, wait_for};

const PORTS: [u16; 10] = [
    2379, 2380, 22379, 22380, 32379, 32380, 8080, 9464, 9465, 9090,
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn port_in_use(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `http://127.0.0.1:…` URLs in the demo's banner.
fn printed_urls(banner: &str) -> Vec<String> {
    banner
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| w.starts_with("http://127.0.0.1:"))
        .map(|w| w.trim_end_matches(['.', ';']).to_string())
        .collect()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    out
}

fn chromium(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            // Long enough for the page's first round of API calls to land.
            "--virtual-time-budget=8000",
        ])
        .args(args)
        .output()
        .context("run chromium (Debian package `chromium`; `cargo xtask setup` installs it)")?;
    ensure!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The demo process; on an early return it gets Ctrl-C (so it cleans up) before anything harsher.
struct Demo(ChildGuard);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.signal(libc::SIGINT);
            let _ = wait_for("the demo to stop", Duration::from_secs(30), || {
                self.0.try_wait().ok().flatten()
            });
        }
    }
}

impl std::ops::Deref for Demo {
    type Target = ChildGuard;
    fn deref(&self) -> &ChildGuard {
        &self.0
    }
}

impl std::ops::DerefMut for Demo {
    fn deref_mut(&mut self) -> &mut ChildGuard {
        &mut self.0
    }
}

#[test]
fn the_demo_shows_everything_and_ctrl_c_leaves_nothing_behind() -> anyhow::Result<()> {
    let busy: Vec<u16> = PORTS.into_iter().filter(|p| port_in_use(*p)).collect();
    ensure!(
        busy.is_empty(),
        "the demo's ports {busy:?} are in use; stop whatever holds them"
    );
    let scratch = tempfile::tempdir()?;
    let log = scratch.path().join("demo.log");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["xtask", "demo", "--seconds", "1200"]);
    let mut demo = Demo(ChildGuard::spawn("demo", cmd, &log)?);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Setup and the release build come first; on a warm machine they take seconds.
    let banner = wait_for("the demo's banner", Duration::from_secs(1200), || {
        let text = read_log();
        if let Ok(Some(status)) = demo.try_wait() {
            return Some(Err(anyhow::anyhow!("demo exited with {status}:\n{text}")));
        }
        text.contains("Ctrl-C stops everything").then_some(Ok(text))
    })??;
    let logs_dir = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("logs"))
        .map(|d| PathBuf::from(d.trim()))
        .context("no logs directory in the banner")?;
    ensure!(logs_dir.is_dir(), "{} does not exist", logs_dir.display());

    // Every URL it printed answers (etcd's client URLs on /health).
    let urls = printed_urls(&banner);
    ensure!(urls.len() >= 8, "too few URLs in the banner: {urls:?}");
    for url in &urls {
        let probe = if [":2379", ":22379", ":32379"]
            .iter()
            .any(|p| url.ends_with(p))
        {
            format!("{url}/health")
        } else {
            url.clone()
        };
        let r = http::get(&probe)?;
        ensure!(
            (200..400).contains(&r.status),
            "{probe} answered {}",
            r.status
        );
    }

    // Prometheus scrapes all three members, the collector and the agent, and has the rules.
    let targets = wait_for(
        "every Prometheus target up",
        Duration::from_secs(60),
        || {
            let v = http::get("http://127.0.0.1:9090/api/v1/targets")
                .ok()?
                .json()
                .ok()?;
            let active = v["data"]["activeTargets"].as_array()?.clone();
            let up = |job: &str| {
                active
                    .iter()
                    .filter(|t| t["labels"]["job"] == job && t["health"] == "up")
                    .count()
            };
            // Prometheus' own job too: every target up, not only the ones named here.
            let all_up = active.iter().all(|t| t["health"] == "up");
            (all_up && up("etcd") == 3 && up("etcd-monitor") == 1 && up("etcd-monitor-agent") == 1)
                .then_some(active)
        },
    )?;
    ensure!(targets.iter().all(|t| t["health"] == "up"), "{targets:?}");
    let rules = http::get("http://127.0.0.1:9090/api/v1/rules")?.json()?;
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        !groups.is_empty(),
        "Prometheus loaded no rule groups: {rules}"
    );

    // The status page renders live values in a real browser.
    let dom = wait_for(
        "the status page to show members",
        Duration::from_secs(60),
        || {
            let dom = chromium(&["--dump-dom", "http://127.0.0.1:8080/"]).ok()?;
            // Both sides of the fsync chart need two metrics intervals of samples.
            let kernel_series = !is_root() || dom.contains("data-kind=\"kernel\"");
            // Every member has a diagnosis verdict (with an agent, a real one).
            let causes = [
                "healthy",
                "inconclusive",
                "disk_slow",
                "noisy_neighbor",
                "cpu_starved",
                "peer_network_slow",
            ];
            let verdicts = dom
                .split("class=\"diagnosis ")
                .skip(1)
                .filter_map(|cell| cell.split_once('>')?.1.split('<').next())
                .filter(|text| causes.iter().any(|c| text.starts_with(c)))
                .count();
            (dom.matches("class=\"num raft-index\">").count() >= 3
                && dom.contains("data-kind=\"etcd\"")
                && kernel_series
                && verdicts >= 3)
                .then_some(dom)
        },
    )?;
    ensure!(dom.contains("id=\"cluster-health\">healthy<"), "{dom}");
    for member in ["etcd-1", "etcd-2", "etcd-3"] {
        ensure!(
            dom.contains(&format!("data-member=\"{member}\"")),
            "{member} missing"
        );
    }
    let raft: Vec<u64> = dom
        .split("class=\"num raft-index\">")
        .skip(1)
        .filter_map(|s| s.split('<').next()?.parse().ok())
        .collect();
    ensure!(
        raft.len() == 3 && raft.iter().all(|i| *i > 0),
        "raft indexes {raft:?}"
    );
    if is_root() {
        ensure!(
            dom.matches("agent-mode ok\">ebpf<").count() == 3,
            "every member's agent in eBPF mode:\n{dom}"
        );
    }
    let shot = root().join("target/status-page.png");
    chromium(&[
        "--window-size=1400,1000",
        &format!("--screenshot={}", shot.display()),
        "http://127.0.0.1:8080/",
    ])?;
    let size = std::fs::metadata(&shot)?.len();
    ensure!(size > 20_000, "screenshot is only {size} bytes");

    // Every dashboard expression returns data from the demo's Prometheus.
    let dashboard = etcd_monitor_tests::grafana::dashboard(&root())?;
    let exprs = etcd_monitor_tests::grafana::exprs(&dashboard);
    ensure!(exprs.len() >= 20, "only {} expressions", exprs.len());
    let mut empty = Vec::new();
    wait_for(
        "every dashboard expression to return data",
        Duration::from_secs(120),
        || {
            empty.clear();
            for (title, expr) in &exprs {
                let url = format!("http://127.0.0.1:9090/api/v1/query?query={}", encode(expr));
                let ok = http::get(&url)
                    .ok()
                    .and_then(|r| r.json().ok())
                    .is_some_and(|v| {
                        v["status"] == "success"
                            && v["data"]["result"]
                                .as_array()
                                .is_some_and(|r| !r.is_empty())
                    });
                if !ok {
                    empty.push(format!("{title}: {expr}"));
                }
            }
            empty.is_empty().then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; without data:\n{}", empty.join("\n")))?;

    // Ctrl-C: everything stops and the scratch directory goes.
    demo.signal(libc::SIGINT)?;
    let status = wait_for("the demo to exit", Duration::from_secs(60), || {
        demo.try_wait().ok().flatten()
    })?;
    ensure!(
        status.success(),
        "demo exited with {status}:\n{}",
        read_log()
    );
    ensure!(
        !logs_dir.exists(),
        "{} is still there after Ctrl-C",
        logs_dir.display()
    );
    let left = processes_mentioning(&logs_dir.display().to_string());
    ensure!(left.is_empty(), "processes left behind: {left:?}");
    let busy: Vec<u16> = PORTS.into_iter().filter(|p| port_in_use(*p)).collect();
    ensure!(busy.is_empty(), "ports still held after Ctrl-C: {busy:?}");
    Ok(())
}
