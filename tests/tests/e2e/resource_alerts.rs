//! DiskUsageHigh on the real data-dir filesystem, end to end: a real etcd member with its data
//! dir on a small loop ext4 of its own, the real agent with real eBPF shipping the member's
//! resources, the real collector re-exporting them and alerting. Another file fills the
//! filesystem past 80 %: the alert fires; the file is removed: it resolves. The collector's
//! re-exported figures are checked against `statvfs` and `/proc` read here.
//!
//! Tolerances (the agent samples every 5 s and ships its status every 300 ms, so a figure is up
//! to one sample old): filesystem used/free ±1 % of its size, size exact, RSS ±10 %, fds ±5.

use std::{path::Path, process::Command, time::Duration};

use etcd_monitor_tests::{
    AgentProcess, ClusterOptions, CollectorProcess, EtcdCluster, binary, http::prom_sum,
    inject::LoopDisk, wait_for,
};

/// `statvfs` of `path`, read by the test itself: (size, used, available).
fn statvfs(path: &Path) -> anyhow::Result<(f64, f64, f64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid path and a writable statvfs.
    anyhow::ensure!(
        unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } == 0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: statvfs succeeded.
    let s = unsafe { s.assume_init() };
    let f = s.f_frsize as f64;
    Ok((
        s.f_blocks as f64 * f,
        (s.f_blocks - s.f_bfree) as f64 * f,
        s.f_bavail as f64 * f,
    ))
}

fn within(what: &str, got: f64, want: f64, tolerance: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (got - want).abs() <= tolerance,
        "{what}: collector {got}, /proc or statvfs {want}, tolerance {tolerance}"
    );
    Ok(())
}

fn alerts(collector: &CollectorProcess) -> Vec<serde_json::Value> {
    collector
        .get_json("/api/v1/alerts")
        .ok()
        .and_then(|(_, b)| b["alerts"].as_array().cloned())
        .unwrap_or_default()
}

fn disk_alert(collector: &CollectorProcess, member: &str) -> Option<serde_json::Value> {
    alerts(collector)
        .into_iter()
        .find(|a| a["name"] == "DiskUsageHigh" && a["member"] == member && a["state"] == "firing")
}

/// The collector's re-export of the member's figures, with `cluster` and `member` labels.
fn figure(text: &str, name: &str, member: &str) -> Option<f64> {
    prom_sum(text, name, &[("cluster", "default"), ("member", member)])
}

#[test]
fn disk_usage_high_fires_on_a_full_data_dir_filesystem_and_resolves() -> anyhow::Result<()> {
    if !etcd_monitor_tests::require_root(
        "disk_usage_high_fires_on_a_full_data_dir_filesystem_and_resolves",
        "loading eBPF programs and mounting a loop device",
    )? {
        return Ok(());
    }
    let disk = LoopDisk::fast("diskalert")?;
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        data_dirs: vec![Some(disk.path().join("data"))],
        name_prefix: format!("diskalert{}-", std::process::id()),
        ..ClusterOptions::default()
    })?;
    let member = &cluster.members[0];
    let name = member.name.as_str();
    let pid = member.pid();
    let data = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &[
            format!("--endpoints={}", cluster.endpoints()),
            "--health-check-interval=1s".to_string(),
            "--metrics-interval=1s".to_string(),
            format!("--data-dir={}", data.path().display()),
        ],
        cluster.dir(),
    )?;
    let args = [
        format!("--collector={}", collector.grpc_url),
        "--node-name=node-disk".to_string(),
        "--status-interval=300ms".to_string(),
        "--rescan-interval=1s".to_string(),
        "--mode=ebpf".to_string(),
        format!("--match=--name={name}( |$)"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = AgentProcess::start(&binary("etcd-monitor-agent")?, &args, cluster.dir(), |_| {})?;
    agent.wait_tracking(&[pid], Duration::from_secs(20))?;
    let context = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e}\nalerts: {:?}\ncollector log:\n{}\nagent log:\n{}",
            alerts(&collector),
            collector.log_text(),
            agent.log_text()
        )
    };

    // The collector re-exports the agent's figures: compare with statvfs and /proc now.
    let text = wait_for(
        "the member's resources on the collector",
        Duration::from_secs(60),
        || {
            let text = collector.metrics().ok()?;
            figure(&text, "etcdmon_member_fs_size_bytes", name)?;
            figure(&text, "etcd_server_memory_usage_bytes", name)?;
            Some(text)
        },
    )
    .map_err(context)?;
    let (size, used, free) = statvfs(disk.path())?;
    let got = |n: &str| figure(&text, n, name).unwrap_or(-1.0);
    within("fs size", got("etcdmon_member_fs_size_bytes"), size, 0.0)?;
    within(
        "fs used",
        got("etcdmon_member_fs_used_bytes"),
        used,
        size * 0.01,
    )?;
    within(
        "disk usage",
        got("etcd_server_disk_usage_bytes"),
        used,
        size * 0.01,
    )?;
    within(
        "fs free",
        got("etcdmon_member_fs_free_bytes"),
        free,
        size * 0.01,
    )?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    let rss = rss_kib * 1024.0;
    within(
        "rss",
        got("etcd_server_memory_usage_bytes"),
        rss,
        rss * 0.10,
    )?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64;
    within("open fds", got("etcdmon_member_open_fds"), fds, 5.0)?;
    let base = used / (used + free);
    anyhow::ensure!(
        base < 0.75,
        "the fresh filesystem is already {base:.3} full"
    );
    anyhow::ensure!(
        disk_alert(&collector, name).is_none(),
        "DiskUsageHigh before filling"
    );

    // Another file fills the filesystem past 80 % (as df counts it): the alert fires.
    let filler = disk.path().join("filler.dat");
    let want = (0.87 * (used + free) - used).max(0.0) as u64;
    let ok = Command::new("fallocate")
        .args(["-l", &want.to_string()])
        .arg(&filler)
        .status()?
        .success();
    anyhow::ensure!(ok, "fallocate -l {want} {}", filler.display());
    let (_, used_full, free_full) = statvfs(disk.path())?;
    let full = used_full / (used_full + free_full);
    anyhow::ensure!(full > 0.8, "filled to {full:.3}");
    let alert = wait_for("DiskUsageHigh firing", Duration::from_secs(60), || {
        disk_alert(&collector, name)
    })
    .map_err(context)?;
    let value = alert["value"].as_f64().unwrap_or(-1.0);
    within("alert value (used share)", value, full, 0.01)?;
    assert_eq!(alert["severity"], "warning");
    println!("filesystem {base:.3} used, {full:.3} with the filler; alert value {value:.3}");

    // The file is removed: the alert resolves.
    std::fs::remove_file(&filler)?;
    wait_for("DiskUsageHigh resolved", Duration::from_secs(60), || {
        disk_alert(&collector, name).is_none().then_some(())
    })
    .map_err(context)?;
    let history = collector
        .get_json("/api/v1/alerts/history")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    assert!(history.contains("DiskUsageHigh"), "{history}");
    Ok(())
}
