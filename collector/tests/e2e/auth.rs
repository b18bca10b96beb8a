//! etcd with authentication on: the collector signs in with --username/--password; a wrong
//! password leaves every member unreachable with a message that says why. And the collector's
//! own REST access flags (token files, TLS pair) are checked at start.

use std::time::Duration;

use crate::common::{start_collector, wait_status};
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

/// Runs the collector with `args` expecting it to refuse to start; returns its stderr.
fn refused_at_start(dir: &std::path::Path, args: &[String]) -> anyhow::Result<String> {
    let out = std::process::Command::new(crate::common::collector_bin())
        .arg(format!("--data-dir={}", dir.join("refused").display()))
        .arg("--api-host=127.0.0.1")
        .arg(format!("--api-port={}", etcd_monitor_tests::free_port()?))
        .args(args)
        .output()?;
    anyhow::ensure!(!out.status.success(), "{args:?} was accepted");
    Ok(String::from_utf8_lossy(&out.stderr).to_string())
}

/// The REST access flags: a group-readable token file starts with a warning and a gauge; bad
/// token files or a half TLS pair refuse to start, naming the flag.
#[test]
fn rest_token_files_and_tls_flags_are_checked_at_start() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    // Nothing listens there: the collector runs, the cluster is simply unreachable.
    let endpoints = format!(
        "--endpoints=http://127.0.0.1:{}",
        etcd_monitor_tests::free_port()?
    );
    let loose = dir.path().join("loose.token");
    std::fs::write(&loose, "a-token-of-at-least-16-chars\n")?;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644))?;
    let token_flag = format!("--admin-token-file=ops={}", loose.display());
    let collector = start_collector(dir.path(), &[endpoints.as_str(), token_flag.as_str()])?;
    let gauge = crate::common::metric(&collector, "etcdmon_api_token_files_insecure", &[]);
    assert_eq!(gauge, Some(1.0));
    assert!(
        collector
            .log_text()
            .contains("Token file is readable by group or others"),
        "{}",
        collector.log_text()
    );
    drop(collector);

    let short = dir.path().join("short.token");
    std::fs::write(&short, "short\n")?;
    let cert = dir.path().join("cert.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n",
    )?;
    for (args, flag) in [
        (
            vec![format!("--admin-token-file={}", short.display())],
            "--admin-token-file",
        ),
        (
            vec![format!(
                "--viewer-token-file=v={}",
                dir.path().join("missing").display()
            )],
            "--viewer-token-file",
        ),
        (
            vec![
                format!("--admin-token-file=a={}", loose.display()),
                format!("--admin-token-file=a={}", loose.display()),
            ],
            "--admin-token-file",
        ),
        (
            vec![format!("--api-cert-file={}", cert.display())],
            "--api-key-file",
        ),
        (
            vec![
                format!("--api-cert-file={}", cert.display()),
                format!("--api-key-file={}", cert.display()),
            ],
            "--api-",
        ),
        (
            vec!["--silence-max-duration=30s".to_string()],
            "--silence-max-duration",
        ),
    ] {
        let mut all = vec![endpoints.clone()];
        all.extend(args.iter().cloned());
        let stderr = refused_at_start(dir.path(), &all)?;
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    Ok(())
}
