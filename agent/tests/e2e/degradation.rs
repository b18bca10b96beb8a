//! The degradation ladder: client-only on request, client-only when unprivileged (exit 0,
//! metrics still served), and a clear failure when eBPF is demanded but impossible.

use crate::common;

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use etcd_monitor_tests::{AgentProcess, ClusterOptions, EtcdCluster, http::prom_sum};

const NOBODY: u32 = 65534;

fn single_member() -> anyhow::Result<EtcdCluster> {
    EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "solo".into(),
        ..Default::default()
    })
}

#[test]
fn client_only_mode_discovers_etcd_and_serves_metrics() -> anyhow::Result<()> {
    let cluster = single_member()?;
    let only_ours = format!("--match={}", cluster.dir().display());
    let mut agent = AgentProcess::start(
        common::agent_bin(),
        &["--mode=client-only", "--rescan-interval=1s", &only_ours],
        cluster.dir(),
        |_| {},
    )?;
    agent.wait_tracking(&[cluster.members[0].pid()], Duration::from_secs(10))?;
    let health = agent.health()?;
    assert_eq!(health["mode"], "client-only");
    assert!(
        health["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--mode=client-only")),
        "{health}"
    );
    assert_eq!(health["tracked"][0]["identity"]["name"], "solo0");
    let text = agent.metrics()?;
    assert_eq!(
        prom_sum(&text, "etcdmon_agent_mode", &[("mode", "client-only")]),
        Some(1.0)
    );
    assert_eq!(
        prom_sum(&text, "etcdmon_agent_mode", &[("mode", "ebpf")]),
        Some(0.0)
    );
    assert_eq!(
        prom_sum(&text, "etcdmon_agent_member_info", &[("member", "solo0")]),
        Some(1.0)
    );
    assert!(
        !text.contains("etcdmon_fsync_duration_seconds_count"),
        "no kernel series without eBPF"
    );
    let status = agent.process.terminate(Duration::from_secs(10))?;
    assert!(status.success(), "agent exited with {status}");
    Ok(())
}

#[test]
fn unprivileged_agent_degrades_to_client_only_and_says_why() -> anyhow::Result<()> {
    let cluster = single_member()?;
    let only_ours = format!("--match={}", cluster.dir().display());
    let drop_privileges = |cmd: &mut Command| {
        if etcd_monitor_tests::is_root() {
            cmd.uid(NOBODY).gid(NOBODY);
        }
    };
    let mut agent = AgentProcess::start(
        common::agent_bin(),
        &["--rescan-interval=1s", &only_ours],
        cluster.dir(),
        drop_privileges,
    )?;
    let health = agent.health()?;
    assert_eq!(health["mode"], "client-only", "{health}");
    let reason = health["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("root or CAP_BPF"),
        "reason should name the missing privilege: {reason}"
    );
    let text = agent.metrics()?;
    assert_eq!(
        prom_sum(&text, "etcdmon_agent_mode", &[("mode", "client-only")]),
        Some(1.0)
    );
    // The reason is logged once, plainly.
    let log = agent.log_text();
    assert_eq!(log.matches("eBPF is off").count(), 1, "{log}");
    let status = agent.process.terminate(Duration::from_secs(10))?;
    assert!(status.success(), "agent exited with {status}");
    Ok(())
}

#[test]
fn demanding_ebpf_without_privileges_fails_clearly() -> anyhow::Result<()> {
    let mut cmd = Command::new(common::agent_bin());
    cmd.args(["--mode=ebpf", "--listen=127.0.0.1:0"]);
    if etcd_monitor_tests::is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = cmd.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--mode=ebpf must fail without privileges"
    );
    assert!(
        stderr.contains("--mode=ebpf") && stderr.contains("CAP_BPF"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() -> anyhow::Result<()> {
    for (flag, name) in [
        ("--ringbuf-bytes=5000", "--ringbuf-bytes"),
        ("--match=(", "--match"),
        ("--mode=turbo", "--mode"),
        ("--listen=nowhere", "--listen"),
        ("--min-duration=fast", "--min-duration"),
    ] {
        let out = Command::new(common::agent_bin()).arg(flag).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(name), "{flag}: {stderr}");
    }
    Ok(())
}
