//! Agent fan-out to every collector: the real agent with eBPF ships to TWO real collectors;
//! both get the members' kernel series; a SIGSTOPped collector does not hold up the other
//! (its drops and retries are counted per target), and after SIGCONT it catches up.

use std::{process::Command, time::Duration};

use etcd_monitor_tests::{
    AgentProcess, CollectorProcess, EtcdCluster, binary, http::prom_sum, wait_for,
};

/// Sends SIGCONT on drop, so a failing test never leaves a stopped collector behind.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> anyhow::Result<Self> {
        signal("-STOP", pid)?;
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
    Ok(())
}

fn collector(cluster: &EtcdCluster, data: &std::path::Path) -> anyhow::Result<CollectorProcess> {
    let args = vec![
        format!("--endpoints={}", cluster.endpoints()),
        "--health-check-interval=1s".to_string(),
        "--metrics-interval=1s".to_string(),
        format!("--data-dir={}", data.display()),
    ];
    CollectorProcess::start(&binary("etcd-monitor")?, &args, cluster.dir())
}

/// The kernel WAL fsync count `collector` shows for `member`.
fn collector_wal(collector: &CollectorProcess, member: &str) -> Option<f64> {
    let (status, body) = collector.get_json("/api/v1/cluster/members").ok()?;
    (status == 200).then_some(())?;
    body["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == member)?["kernel"]["wal_fsync"]["count"]
        .as_f64()
}

fn agent_wal(agent: &AgentProcess, member: &str) -> Option<f64> {
    prom_sum(
        &agent.metrics().ok()?,
        "etcdmon_fsync_duration_seconds_count",
        &[("member", member), ("file", "wal"), ("op", "fdatasync")],
    )
}

/// Waits until `collector`'s kernel WAL count of every member equals the agent's.
fn wait_caught_up(
    what: &str,
    cluster: &EtcdCluster,
    agent: &AgentProcess,
    collector: &CollectorProcess,
    timeout: Duration,
) -> anyhow::Result<()> {
    for m in &cluster.members {
        wait_for(&format!("{what}: {}", m.name), timeout, || {
            let a = agent_wal(agent, &m.name)?;
            let c = collector_wal(collector, &m.name)?;
            (a > 0.0 && a == c).then_some(())
        })?;
    }
    Ok(())
}

#[test]
fn agent_ships_to_every_collector_and_a_stopped_one_blocks_nothing() -> anyhow::Result<()> {
    if !etcd_monitor_tests::require_root(
        "agent_ships_to_every_collector_and_a_stopped_one_blocks_nothing",
        "loading eBPF programs",
    )? {
        return Ok(());
    }
    let cluster = EtcdCluster::start3()?;
    let (data_a, data_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = collector(&cluster, data_a.path())?;
    let b = collector(&cluster, data_b.path())?;
    let collectors = format!("--collector={},{}", a.grpc_url, b.grpc_url);
    let matcher = format!("--match={}", cluster.dir().display());
    let args = [
        collectors.as_str(),
        "--node-name=node-a",
        "--status-interval=300ms",
        "--batch-interval=50ms",
        "--rescan-interval=1s",
        "--mode=ebpf",
        // Room for a few seconds of this test's load per target on a busy 2-core CI machine:
        // with 64 KiB, collector A (running, merely slow to be scheduled) lost a batch once.
        // B's trouble still shows within seconds: the HTTP/2 keep-alive (10 s + 5 s) ends
        // its stalled stream, and the retries are counted.
        "--queue-bytes=4194304",
        matcher.as_str(),
    ];
    let agent = AgentProcess::start(&binary("etcd-monitor-agent")?, &args, cluster.dir(), |_| {})?;
    let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    agent.wait_tracking(&pids, Duration::from_secs(20))?;
    let target = |c: &CollectorProcess| c.grpc_url.trim_start_matches("http://").to_string();
    let (ta, tb) = (target(&a), target(&b));

    // Both collectors get every member's kernel series, and the agent says both are connected.
    cluster.put_many("/fanout/", 500, 128)?;
    wait_caught_up("collector A", &cluster, &agent, &a, Duration::from_secs(30))?;
    wait_caught_up("collector B", &cluster, &agent, &b, Duration::from_secs(30))?;
    wait_for("both targets connected", Duration::from_secs(15), || {
        let text = agent.metrics().ok()?;
        let per = |t: &str| {
            prom_sum(
                &text,
                "etcdmon_agent_collector_target_connected",
                &[("target", t)],
            )
        };
        let total = prom_sum(&text, "etcdmon_agent_collector_connected", &[])?;
        (per(&ta)? == 1.0 && per(&tb)? == 1.0 && total == 2.0).then_some(())
    })?;
    // /healthz names both targets, connected.
    let health = agent.health()?;
    let mut listed: Vec<(String, bool)> = health["collectors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let target = c["target"].as_str().unwrap_or_default().to_string();
                    (target, c["connected"] == true)
                })
                .collect()
        })
        .unwrap_or_default();
    listed.sort();
    let mut expected = vec![(ta.clone(), true), (tb.clone(), true)];
    expected.sort();
    assert_eq!(listed, expected, "/healthz collectors: {health}");

    // B stops: A keeps receiving, the agent stays healthy and counts B's drops and retries.
    let stopped = Stopped::stop(b.process.pid())?;
    let mut round = 0;
    wait_for(
        "drops or retries counted for B",
        Duration::from_secs(90),
        || {
            round += 1;
            cluster
                .put_many(&format!("/fanout/stopped{round}/"), 1000, 512)
                .ok()?;
            let text = agent.metrics().ok()?;
            let b_trouble = prom_sum(
                &text,
                "etcdmon_agent_collector_target_dropped_events_total",
                &[("target", &tb)],
            )
            .unwrap_or(0.0)
                + prom_sum(
                    &text,
                    "etcdmon_agent_collector_target_reconnects_total",
                    &[("target", &tb)],
                )
                .unwrap_or(0.0);
            (b_trouble > 0.0).then_some(())
        },
    )?;
    assert_eq!(agent.health()?["status"], "ok", "the agent is not blocked");
    wait_caught_up(
        "collector A while B is stopped",
        &cluster,
        &agent,
        &a,
        Duration::from_secs(30),
    )?;
    let text = agent.metrics()?;
    let per = |name: &str, t: &str| prom_sum(&text, name, &[("target", t)]).unwrap_or(0.0);
    let dropped = "etcdmon_agent_collector_target_dropped_events_total";
    let retries = "etcdmon_agent_collector_target_reconnects_total";
    eprintln!(
        "while B was stopped ({round} rounds): A dropped {}, B dropped {} and retried {}",
        per(dropped, &ta),
        per(dropped, &tb),
        per(retries, &tb)
    );
    assert_eq!(
        per(dropped, &ta),
        0.0,
        "A's queue lost nothing while B was stopped"
    );

    // B resumes: it catches up (the status snapshots carry the exact counters).
    drop(stopped);
    cluster.put_many("/fanout/after/", 200, 128)?;
    wait_caught_up(
        "collector B after SIGCONT",
        &cluster,
        &agent,
        &b,
        Duration::from_secs(60),
    )?;
    wait_caught_up(
        "collector A at the end",
        &cluster,
        &agent,
        &a,
        Duration::from_secs(30),
    )?;
    Ok(())
}
