//! `cargo xtask accuracy [--runs N] [--scenario NAME]`: how often the diagnosis names the right
//! cause, against real faults. One rig per scenario (`etcd_monitor_tests::diagrig`: three real
//! etcd members on their own loop devices, the agent with eBPF, the collector at the default
//! 30 s window), the fault applied and cleared N times. Each run records every member's
//! verdict, whether the expected verdicts held together (correct), whether a healthy member was
//! blamed on the way (wrong blame), and the time from fault start to the correct verdicts.
//! Writes the table to `docs/bench/accuracy.md` and prints it.

use std::time::{Duration, Instant};

use etcd_monitor_tests::{
    diagrig::{DiagRig, RigOptions, SHARED_MACHINE_THRESHOLDS},
    inject::{CpuQuota, IoThrottle, SyncWriter},
};

/// Causes that blame a member itself.
const SELF_BLAME: [&str; 5] = [
    "disk_slow",
    "noisy_neighbor",
    "cpu_starved",
    "io_throttled",
    "wal_write_slow",
];
/// How long a run waits for the correct verdicts (the 30 s window and then some).
const VERDICT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a run waits for the members to be healthy again before the next fault.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(120);

/// The injected fault.
#[derive(Clone, Copy)]
enum Fault {
    /// Nothing: one window is observed.
    None,
    /// Member 0's device throttled to 20 write IOPS.
    SlowDevice,
    /// Member 0's process in a blkio cgroup limited to 20 write IOPS on its device.
    IoThrottle,
    /// A CFS quota of 1 ms per 100 ms on this member.
    CpuQuota(usize),
    /// `dd oflag=dsync` on member 0's device (limited to 300 write IOPS for the whole run).
    Noisy,
    /// 30 % loss on the peer traffic of the member in its own network namespace (member 2).
    Loss,
}

/// One scenario: how the rig is built, the fault, and the verdicts that count as correct.
struct Scenario {
    name: &'static str,
    throttleable0: bool,
    symlinked0: bool,
    netns2: bool,
    fault: Fault,
    /// The impaired member.
    impaired: Option<usize>,
    /// Its correct causes; empty: anything that does not blame itself.
    impaired_causes: &'static [&'static str],
    /// What at least one healthy member must say about the impaired one: (cause, peer_cause).
    observer: Option<(&'static str, Option<&'static str>)>,
}

/// The table: every scenario and its expected verdicts.
const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "healthy",
        throttleable0: false,
        symlinked0: false,
        netns2: false,
        fault: Fault::None,
        impaired: None,
        impaired_causes: &[],
        observer: None,
    },
    Scenario {
        name: "slow_device",
        throttleable0: true,
        symlinked0: false,
        netns2: false,
        fault: Fault::SlowDevice,
        impaired: Some(0),
        impaired_causes: &["disk_slow"],
        observer: None,
    },
    Scenario {
        name: "io_throttled_cgroup",
        throttleable0: false,
        symlinked0: false,
        netns2: false,
        fault: Fault::IoThrottle,
        impaired: Some(0),
        impaired_causes: &["io_throttled"],
        observer: None,
    },
    Scenario {
        name: "cpu_starved",
        throttleable0: false,
        symlinked0: false,
        netns2: false,
        fault: Fault::CpuQuota(0),
        impaired: Some(0),
        impaired_causes: &["cpu_starved"],
        observer: None,
    },
    Scenario {
        name: "noisy_neighbor",
        throttleable0: true,
        symlinked0: false,
        netns2: false,
        fault: Fault::Noisy,
        impaired: Some(0),
        impaired_causes: &["noisy_neighbor"],
        observer: None,
    },
    Scenario {
        name: "lossy_peer_network",
        throttleable0: false,
        symlinked0: false,
        netns2: true,
        fault: Fault::Loss,
        impaired: Some(2),
        impaired_causes: &[],
        observer: Some(("peer_network_slow", None)),
    },
    Scenario {
        name: "starved_peer",
        throttleable0: false,
        symlinked0: false,
        netns2: false,
        fault: Fault::CpuQuota(2),
        impaired: Some(2),
        impaired_causes: &["cpu_starved"],
        observer: Some(("peer_unhealthy", Some("cpu_starved"))),
    },
    Scenario {
        name: "symlinked_slow_device",
        throttleable0: true,
        symlinked0: true,
        netns2: false,
        fault: Fault::SlowDevice,
        impaired: Some(0),
        impaired_causes: &["disk_slow"],
        observer: None,
    },
];

/// What one run gave.
struct RunResult {
    correct: bool,
    wrong_blame: bool,
    took: Option<Duration>,
    verdicts: String,
}

fn member(i: usize) -> String {
    format!("member{i}")
}

impl Scenario {
    fn rig(&self) -> anyhow::Result<DiagRig> {
        DiagRig::start(&RigOptions {
            tag: format!("acc{}", &self.name[..self.name.len().min(6)]),
            throttleable0: self.throttleable0,
            symlinked0: self.symlinked0,
            netns_member: self.netns2.then_some(2),
            collector_args: SHARED_MACHINE_THRESHOLDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })
    }

    /// Whether a member that is not the impaired one is blamed by `v`.
    fn wrong_blame(&self, v: &serde_json::Value) -> bool {
        let cause = v["cause"].as_str().unwrap_or_default();
        let impaired = self.impaired.map(member);
        let names_impaired = impaired.as_deref().is_some_and(|m| v["peer"] == m);
        match cause {
            c if SELF_BLAME.contains(&c) => true,
            "peer_network_slow" => {
                !(names_impaired && self.observer.is_some_and(|(c, _)| c == "peer_network_slow"))
            }
            "peer_unhealthy" => !names_impaired,
            _ => false,
        }
    }

    /// Whether the expected verdicts hold together in `all` (member name → verdict).
    fn correct(&self, all: &std::collections::BTreeMap<String, serde_json::Value>) -> bool {
        let Some(impaired) = self.impaired else {
            return all.len() == 3 && all.values().all(|v| v["cause"] == "healthy");
        };
        let name = member(impaired);
        let Some(own) = all.get(&name) else {
            return false;
        };
        let own_cause = own["cause"].as_str().unwrap_or_default();
        let own_ok = if self.impaired_causes.is_empty() {
            !SELF_BLAME.contains(&own_cause)
        } else {
            self.impaired_causes.contains(&own_cause)
        };
        let observed = self.observer.is_none_or(|(cause, peer_cause)| {
            all.iter().any(|(m, v)| {
                *m != name
                    && v["cause"] == cause
                    && v["peer"] == name.as_str()
                    && peer_cause.is_none_or(|pc| v["peer_cause"] == pc)
            })
        });
        own_ok && observed
    }
}

/// A fault in place; dropping it (after [`Active::clear`]) lifts it.
enum Active {
    Nothing,
    Throttled,
    Io(IoThrottle),
    Quota(CpuQuota),
    Writer(SyncWriter),
    Loss,
}

impl Active {
    fn apply(fault: Fault, rig: &mut DiagRig, run: usize) -> anyhow::Result<Self> {
        let pid = |i: usize| rig.cluster.members[i].pid();
        Ok(match fault {
            Fault::None => Self::Nothing,
            Fault::SlowDevice => {
                rig.disks[0].throttle_write_iops(20)?;
                Self::Throttled
            }
            Fault::IoThrottle => {
                Self::Io(IoThrottle::apply(pid(0), &rig.disks[0].device_name(), 20)?)
            }
            Fault::CpuQuota(i) => Self::Quota(CpuQuota::apply(pid(i), 1_000, 100_000)?),
            Fault::Noisy => {
                let log = rig.cluster.dir().join(format!("noisy-{run}.log"));
                Self::Writer(SyncWriter::start(rig.disks[0].path(), 16, &log)?)
            }
            Fault::Loss => {
                let ports = rig.peer_ports();
                rig.netns
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("the loss scenario needs a netns"))?
                    .set_loss(30, &ports)?;
                Self::Loss
            }
        })
    }

    fn clear(self, rig: &mut DiagRig) -> anyhow::Result<()> {
        match self {
            Self::Throttled => rig.disks[0].throttle_write_iops(0)?,
            Self::Loss => {
                if let Some(ns) = &rig.netns {
                    ns.clear()?;
                }
            }
            Self::Io(throttle) => drop(throttle),
            Self::Quota(quota) => drop(quota),
            Self::Writer(writer) => drop(writer),
            Self::Nothing => {}
        }
        Ok(())
    }
}

fn summary_line(all: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    all.iter()
        .map(|(m, v)| {
            let mut s = format!("{m}={}", v["cause"].as_str().unwrap_or("?"));
            if let Some(peer) = v["peer"].as_str() {
                s.push_str(&format!("({peer}"));
                if let Some(pc) = v["peer_cause"].as_str() {
                    s.push_str(&format!(",{pc}"));
                }
                s.push(')');
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until no member is blamed (all `healthy`, or `inconclusive` after half the timeout).
fn wait_baseline(rig: &DiagRig) -> bool {
    let start = Instant::now();
    while start.elapsed() < BASELINE_TIMEOUT {
        if let Ok(all) = rig.verdicts()
            && all.len() == 3
            && all.values().all(|v| {
                v["cause"] == "healthy"
                    || (v["cause"] == "inconclusive" && start.elapsed() > BASELINE_TIMEOUT / 2)
            })
        {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

/// One run: fault, poll until the expected verdicts hold (or time out), clear.
fn one_run(sc: &Scenario, rig: &mut DiagRig, run: usize) -> anyhow::Result<RunResult> {
    if !wait_baseline(rig) {
        eprintln!(
            "xtask: accuracy: {} run {run}: members not healthy before the fault: {}",
            sc.name,
            rig.verdicts().map(|a| summary_line(&a)).unwrap_or_default()
        );
    }
    let active = Active::apply(sc.fault, rig, run)?;
    let start = Instant::now();
    // The healthy scenario watches one full window; the others stop at the verdict.
    let timeout = match sc.fault {
        Fault::None => Duration::from_secs(30),
        _ => VERDICT_TIMEOUT,
    };
    let mut wrong_blame = false;
    let mut result = None;
    let mut last = String::new();
    while start.elapsed() < timeout {
        let all = rig.verdicts()?;
        let impaired = sc.impaired.map(member);
        for (m, v) in &all {
            if Some(m) != impaired.as_ref() && sc.wrong_blame(v) {
                if !wrong_blame {
                    eprintln!(
                        "xtask: accuracy: {} run {run}: wrong blame: {m} {v}",
                        sc.name
                    );
                }
                wrong_blame = true;
            }
        }
        last = summary_line(&all);
        if !matches!(sc.fault, Fault::None) && sc.correct(&all) {
            result = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let correct = match sc.fault {
        Fault::None => !wrong_blame && sc.correct(&rig.verdicts()?),
        _ => result.is_some(),
    };
    active.clear(rig)?;
    Ok(RunResult {
        correct,
        wrong_blame,
        took: result,
        verdicts: last,
    })
}

/// Figures of one scenario's runs.
struct Row {
    name: &'static str,
    runs: Vec<RunResult>,
    error: Option<String>,
}

fn run_scenario(sc: &Scenario, runs: usize) -> Row {
    let started = Instant::now();
    eprintln!("xtask: accuracy: {}: starting its rig", sc.name);
    let mut results = Vec::new();
    let error = (|| -> anyhow::Result<()> {
        let mut rig = sc.rig()?;
        if matches!(sc.fault, Fault::Noisy) {
            // A device with a fixed I/O budget that etcd alone stays well within.
            rig.disks[0].throttle_write_iops(300)?;
        }
        for run in 1..=runs {
            let r = one_run(sc, &mut rig, run)?;
            eprintln!(
                "xtask: accuracy: {} run {run}: {} in {} — {}",
                sc.name,
                if r.correct { "correct" } else { "WRONG" },
                r.took
                    .map_or_else(|| "-".to_string(), |d| format!("{:.1}s", d.as_secs_f64())),
                r.verdicts
            );
            results.push(r);
        }
        Ok(())
    })()
    .err()
    .map(|e| format!("{e:#}"));
    eprintln!(
        "xtask: accuracy: {}: done in {:.0}s",
        sc.name,
        started.elapsed().as_secs_f64()
    );
    Row {
        name: sc.name,
        runs: results,
        error,
    }
}

fn expected(sc: &Scenario) -> String {
    let mut parts = Vec::new();
    match sc.impaired {
        None => parts.push("every member `healthy`".to_string()),
        Some(i) if sc.impaired_causes.is_empty() => {
            parts.push(format!("member{i} not blamed itself"));
        }
        Some(i) => parts.push(format!("member{i} `{}`", sc.impaired_causes.join("`/`"))),
    }
    if let (Some((cause, peer_cause)), Some(i)) = (sc.observer, sc.impaired) {
        let pc = peer_cause.map_or_else(String::new, |pc| format!(", peer_cause {pc}"));
        parts.push(format!("a healthy member `{cause}` (peer member{i}{pc})"));
    }
    parts.join("; ")
}

fn seconds(d: Option<&Duration>) -> String {
    d.map_or_else(|| "—".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The Markdown table of `rows`.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | expected verdicts | runs | correct | wrong blame on healthy members \
         | median time to verdict | max time to verdict | last verdicts seen |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let sc = SCENARIOS.iter().find(|s| s.name == row.name);
        let n = row.runs.len();
        let correct = row.runs.iter().filter(|r| r.correct).count();
        let blamed = row.runs.iter().filter(|r| r.wrong_blame).count();
        let mut times: Vec<Duration> = row.runs.iter().filter_map(|r| r.took).collect();
        times.sort();
        let pct = if n == 0 {
            "—".to_string()
        } else {
            format!("{:.0} % ({correct}/{n})", correct as f64 * 100.0 / n as f64)
        };
        let last = match (&row.error, row.runs.last()) {
            (Some(e), _) => format!("error: {}", e.lines().next().unwrap_or_default()),
            (None, Some(r)) => format!("`{}`", r.verdicts),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {n} | {pct} | {blamed} of {n} runs | {} | {} | {} |\n",
            row.name,
            sc.map(expected).unwrap_or_default(),
            seconds(times.get(times.len() / 2)),
            seconds(times.last()),
            last.replace('|', "/"),
        ));
    }
    out
}

fn page(rows: &[Row], runs: usize, took: Duration) -> String {
    let commit = crate::cmd::output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    format!(
        "# Diagnosis accuracy\n\n\
         `cargo xtask accuracy --runs {runs}` at commit `{}`, {:.0} min in all, on the shared \
         2-core development VM.\n\n\
         Each scenario: one rig (three real etcd members on their own loop-device filesystems, \
         member2 in its own network namespace behind a veth pair for the network scenario; the \
         agent with eBPF; the collector at the default 30 s diagnosis window, verdicts every \
         1 s, and the rules `{}` for this loaded machine), ~40 puts/s, the fault applied and \
         cleared {runs} time(s). A run is correct when the expected verdicts hold together \
         within {} s of the fault; time to verdict is from the fault to that moment. Wrong \
         blame: a member other than the impaired one blamed itself (`disk_slow`, \
         `noisy_neighbor`, `cpu_starved`, `io_throttled`, `wal_write_slow`), the network to a \
         peer that is not impaired, or a peer that is not impaired, at any moment of the run.\n\n\
         {}\n\
         Scenarios whose verdict does not exist yet in the engine (`io_throttled`, \
         `peer_unhealthy`) score 0 until it does.\n",
        commit.trim(),
        took.as_secs_f64() / 60.0,
        SHARED_MACHINE_THRESHOLDS.join(" "),
        VERDICT_TIMEOUT.as_secs(),
        table(rows)
    )
}

/// Runs `runs` runs of every scenario (or only `only`), prints the table and writes
/// docs/bench/accuracy.md.
pub fn run(runs: usize, only: Option<String>) -> anyhow::Result<()> {
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|o| o.trim() == s.name))
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        anyhow::bail!(
            "--scenario {:?} names no scenario; the scenarios are {}",
            only.unwrap_or_default(),
            names.join(", ")
        );
    }
    anyhow::ensure!(
        crate::cmd::is_root(),
        "the accuracy scenarios need root (eBPF, loop devices, cgroups, network namespaces)"
    );
    crate::cmd::build_binaries(false, &[])?;
    let start = Instant::now();
    let rows: Vec<Row> = chosen.iter().map(|sc| run_scenario(sc, runs)).collect();
    let text = page(&rows, runs, start.elapsed());
    println!("{text}");
    let path = crate::cmd::root().join("docs/bench/accuracy.md");
    std::fs::write(&path, &text)?;
    eprintln!("xtask: accuracy: wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(
        list: &[(&str, serde_json::Value)],
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        list.iter()
            .map(|(m, v)| (m.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn the_table_judges_verdicts_as_documented() {
        let by = |n: &str| SCENARIOS.iter().find(|s| s.name == n).expect("scenario");
        let healthy = serde_json::json!({"cause": "healthy"});
        let starved = by("starved_peer");
        let net = serde_json::json!({"cause": "peer_network_slow", "peer": "member2"});
        let unhealthy = serde_json::json!({"cause": "peer_unhealthy", "peer": "member2", "peer_cause": "cpu_starved"});
        let cpu = serde_json::json!({"cause": "cpu_starved"});
        assert!(
            starved.wrong_blame(&net),
            "a starved peer blamed on the network"
        );
        assert!(!starved.wrong_blame(&unhealthy));
        assert!(!starved.correct(&verdicts(&[
            ("member0", net.clone()),
            ("member1", healthy.clone()),
            ("member2", cpu.clone())
        ])));
        assert!(starved.correct(&verdicts(&[
            ("member0", unhealthy),
            ("member1", healthy.clone()),
            ("member2", cpu.clone())
        ])));
        let lossy = by("lossy_peer_network");
        assert!(!lossy.wrong_blame(&net));
        assert!(
            lossy
                .wrong_blame(&serde_json::json!({"cause": "peer_network_slow", "peer": "member1"}))
        );
        assert!(lossy.correct(&verdicts(&[
            ("member0", net),
            ("member1", healthy.clone()),
            ("member2", healthy.clone())
        ])));
        assert!(!lossy.correct(&verdicts(&[
            ("member0", healthy.clone()),
            ("member1", healthy.clone()),
            ("member2", cpu)
        ])));
        assert!(by("healthy").correct(&verdicts(&[
            ("member0", healthy.clone()),
            ("member1", healthy.clone()),
            ("member2", healthy)
        ])));
    }
}
