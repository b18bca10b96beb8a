//! Network faults end to end: real etcd members (member2 in its own network namespace behind a
//! veth pair, the others on the host), the real agent with eBPF, the real collector. Packet
//! loss is injected for real with nftables on the link to member2, CPU starvation with a CFS
//! quota on member2's cgroup; `GET /api/v1/diagnosis` must name the right pair for the first,
//! must not blame the network for the second, and both must clear.
//!
//! Tests run one at a time (a lock): a CPU quota or lossy link on a shared 2-core machine would
//! disturb the others.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use etcd_monitor_tests::{
    diagrig::{DiagRig, RigOptions, SHARED_MACHINE_THRESHOLDS},
    inject::CpuQuota,
    netfault,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// The member behind the veth pair.
const IMPAIRED: &str = "member2";
/// Causes that blame a member itself.
const SELF_BLAME: [&str; 5] = [
    "disk_slow",
    "noisy_neighbor",
    "cpu_starved",
    "io_throttled",
    "wal_write_slow",
];

fn require(test: &str) -> anyhow::Result<bool> {
    if !etcd_monitor_tests::require_root(test, "eBPF, network namespaces and cgroups")? {
        return Ok(false);
    }
    let reason = netfault::tools_present().err().unwrap_or_default();
    etcd_monitor_tests::require(test, reason.is_empty(), &reason)
}

fn rig(tag: &str) -> anyhow::Result<DiagRig> {
    let mut collector_args = vec!["--diagnosis-window=10s".to_string()];
    collector_args.extend(SHARED_MACHINE_THRESHOLDS.iter().map(|s| s.to_string()));
    DiagRig::start(&RigOptions {
        tag: tag.to_string(),
        netns_member: Some(2),
        collector_args,
        ..RigOptions::default()
    })
}

fn line(v: &serde_json::Value) -> String {
    format!(
        "{} {} peer={} peer_cause={} — {}",
        v["member"].as_str().unwrap_or("?"),
        v["cause"],
        v["peer"],
        v["peer_cause"],
        v["summary"].as_str().unwrap_or_default()
    )
}

/// Polls every member's verdict each 500 ms until `done` accepts them or `timeout` passes;
/// every set seen on the way goes through `forbid` first. Returns the time it took.
fn wait_verdicts(
    rig: &DiagRig,
    what: &str,
    timeout: Duration,
    forbid: impl Fn(&serde_json::Value) -> anyhow::Result<()>,
    done: impl Fn(&std::collections::BTreeMap<String, serde_json::Value>) -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let verdicts = rig.verdicts()?;
        for v in verdicts.values() {
            forbid(v)?;
        }
        if verdicts.len() == 3 && done(&verdicts) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let all: Vec<String> = verdicts.values().map(line).collect();
            anyhow::bail!(
                "{what}: not after {timeout:?}; last verdicts:\n{}",
                all.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every member without a fault verdict (`healthy`).
fn wait_all_healthy(rig: &DiagRig, what: &str) -> anyhow::Result<Duration> {
    wait_verdicts(
        rig,
        what,
        Duration::from_secs(120),
        |_| Ok(()),
        |all| all.values().all(|v| v["cause"] == "healthy"),
    )
}

/// The agent's peer figures involving `member` (what its TCP tracepoints attributed).
fn agent_peer_lines(rig: &DiagRig, member: &str) -> Vec<String> {
    rig.agent
        .metrics()
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            (l.starts_with("etcdmon_peer_retransmits_total")
                || l.starts_with("etcdmon_peer_rtt_seconds"))
                && l.contains(&format!("\"{member}\""))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn lossy_link_to_one_member_is_peer_network_slow_naming_that_member() -> anyhow::Result<()> {
    let test = "lossy_link_to_one_member_is_peer_network_slow_naming_that_member";
    if !require(test)? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rig = rig("netloss")?;
    let ns = rig
        .netns
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no netns"))?;
    wait_all_healthy(&rig, "baseline: every member healthy")?;
    // 30 % of the peer traffic to and from member2 dropped, each way; client traffic untouched.
    ns.set_loss(30, &rig.peer_ports())?;
    let took = wait_verdicts(
        &rig,
        "a healthy member's peer_network_slow naming member2",
        Duration::from_secs(120),
        |v| {
            anyhow::ensure!(
                !SELF_BLAME.contains(&v["cause"].as_str().unwrap_or_default()),
                "a lossy link blamed on a member itself: {}",
                line(v)
            );
            if v["member"] != IMPAIRED && v["cause"] == "peer_network_slow" {
                anyhow::ensure!(
                    v["peer"] == IMPAIRED,
                    "a healthy member blames the link to a healthy peer: {}",
                    line(v)
                );
            }
            Ok(())
        },
        |all| {
            all.iter().any(|(name, v)| {
                name != IMPAIRED && v["cause"] == "peer_network_slow" && v["peer"] == IMPAIRED
            })
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nagent peer figures:\n{}",
            agent_peer_lines(&rig, IMPAIRED).join("\n")
        )
    })?;
    let dropped = ns.dropped_packets();
    let verdicts = rig.verdicts()?;
    eprintln!(
        "NETFAULT loss 30 %: peer_network_slow -> {IMPAIRED} after {:.1}s, {dropped} packets dropped",
        took.as_secs_f64()
    );
    for v in verdicts.values() {
        eprintln!("  {}", line(v));
    }
    // What the agent's TCP tracepoints attributed across the namespace boundary.
    for l in agent_peer_lines(&rig, IMPAIRED) {
        eprintln!("  agent: {l}");
    }
    assert!(dropped > 0, "the loss rules dropped nothing");
    ns.clear()?;
    let took = wait_all_healthy(&rig, "every member healthy after the loss is lifted")?;
    eprintln!(
        "NETFAULT loss lifted: all healthy after {:.1}s",
        took.as_secs_f64()
    );
    Ok(())
}

#[test]
fn starved_peer_seen_from_a_healthy_member_is_not_blamed_on_the_network() -> anyhow::Result<()> {
    let test = "starved_peer_seen_from_a_healthy_member_is_not_blamed_on_the_network";
    if !require(test)? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rig = rig("netcpu")?;
    wait_all_healthy(&rig, "baseline: every member healthy")?;
    let pid = rig.cluster.members[2].pid();
    // 1 ms of CPU per 100 ms: member2 is starved; the link to it is fine.
    let quota = CpuQuota::apply(pid, 1_000, 100_000)?;
    let took = wait_verdicts(
        &rig,
        "member2 cpu_starved and a healthy member's peer_unhealthy{member2, cpu_starved}",
        Duration::from_secs(120),
        |v| {
            if v["member"] != IMPAIRED {
                anyhow::ensure!(
                    v["cause"] != "peer_network_slow",
                    "a starved peer blamed on the network: {}",
                    line(v)
                );
                // The run queue of a healthy member on this loaded machine is noise, not the
                // fault; it is printed, not failed on.
                if v["cause"] == "cpu_starved" {
                    eprintln!("NETFAULT note: a healthy member CPU-starved: {}", line(v));
                } else {
                    anyhow::ensure!(
                        !SELF_BLAME.contains(&v["cause"].as_str().unwrap_or_default()),
                        "a healthy member blamed: {}",
                        line(v)
                    );
                }
            }
            Ok(())
        },
        |all| {
            all.get(IMPAIRED)
                .is_some_and(|v| v["cause"] == "cpu_starved")
                && all.iter().any(|(name, v)| {
                    name != IMPAIRED
                        && v["cause"] == "peer_unhealthy"
                        && v["peer"] == IMPAIRED
                        && v["peer_cause"] == "cpu_starved"
                })
        },
    )?;
    eprintln!(
        "NETFAULT starved peer: peer_unhealthy{{{IMPAIRED}, cpu_starved}} after {:.1}s",
        took.as_secs_f64()
    );
    for v in rig.verdicts()?.values() {
        eprintln!("  {}", line(v));
    }
    drop(quota);
    let took = wait_all_healthy(&rig, "every member healthy after the quota is lifted")?;
    eprintln!(
        "NETFAULT quota lifted: all healthy after {:.1}s",
        took.as_secs_f64()
    );
    Ok(())
}
