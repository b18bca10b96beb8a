//! Shared bits of the agent's end-to-end tests.

use std::path::Path;

/// The agent binary cargo built for these tests.
pub fn agent_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-monitor-agent"))
}

/// `Ok(true)` when eBPF tests can run (root); `Ok(false)` with a logged skip otherwise, and an
/// error (the test fails) under `CI=true`.
pub fn require_root(test: &str) -> anyhow::Result<bool> {
    etcd_monitor_tests::require_root(test, "loading eBPF programs")
}

/// A real 3-member cluster and the agent tracing exactly its members, in full eBPF mode.
pub fn cluster_with_agent() -> anyhow::Result<(
    etcd_monitor_tests::EtcdCluster,
    etcd_monitor_tests::AgentProcess,
)> {
    let cluster = etcd_monitor_tests::EtcdCluster::start3()?;
    // Only this test's members: other tests may run etcd on the same machine.
    let only_ours = format!("--match={}", cluster.dir().display());
    let agent = etcd_monitor_tests::AgentProcess::start(
        agent_bin(),
        &["--rescan-interval=1s", "--mode=ebpf", &only_ours],
        cluster.dir(),
        |_| {},
    )?;
    let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    agent
        .wait_tracking(&pids, std::time::Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    let health = agent.health()?;
    anyhow::ensure!(health["mode"] == "ebpf", "every probe attached: {health}");
    Ok((cluster, agent))
}
