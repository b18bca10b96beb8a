//! etcd with authentication on: the collector signs in with --username/--password; a wrong
//! password leaves every member unreachable with a message that says why.

mod common;

use std::time::Duration;

use common::{start_collector, wait_status};
use etcd_monitor_tests::{ClusterOptions, EtcdCluster};

#[test]
fn monitors_an_auth_enabled_cluster_and_explains_a_wrong_password() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "auth".into(),
        ..ClusterOptions::default()
    })?;
    cluster.etcdctl(&["user", "add", "root:rootpw"])?;
    cluster.etcdctl(&["user", "add", "monitor:monitorpw"])?;
    cluster.etcdctl(&["user", "grant-role", "monitor", "root"])?;
    cluster.etcdctl(&["auth", "enable"])?;

    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let common = [
        "--health-check-interval=1s",
        "--metrics-interval=1s",
        "--dial-timeout=2s",
    ];
    let good_dir = dir.path().join("good");
    std::fs::create_dir_all(&good_dir)?;
    let mut args = vec![
        endpoints.as_str(),
        "--username=monitor",
        "--password=monitorpw",
    ];
    args.extend(common);
    let good = start_collector(&good_dir, &args)?;
    wait_status(
        &good,
        "healthy with credentials",
        Duration::from_secs(20),
        |s| s["healthy"] == true && s["available_members"] == 1,
    )?;
    // The write probe works with the granted role.
    wait_status(&good, "a write probe", Duration::from_secs(20), |s| {
        s["members"][0]["latency"]["write"]["samples"]
            .as_u64()
            .is_some_and(|n| n > 0)
    })?;

    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_dir)?;
    let mut args = vec![endpoints.as_str(), "--username=monitor", "--password=wrong"];
    args.extend(common);
    let bad = start_collector(&bad_dir, &args)?;
    let status = wait_status(
        &bad,
        "unreachable with a reason",
        Duration::from_secs(20),
        |s| s["updated_at_ms"].as_u64().is_some_and(|t| t > 0) && s["available_members"] == 0,
    )?;
    let reason = status["endpoints"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        reason.contains("auth") || reason.contains("password") || reason.contains("credential"),
        "reason: {reason}\n{status}"
    );
    Ok(())
}
