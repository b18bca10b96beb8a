//! The diagnosis evidence is real: the block service-time histogram of the device under a
//! member's data dir follows that device's speed, and the run-queue histogram and cgroup CPU
//! throttling of a member follow a CPU quota put on it.

use crate::common;

use std::time::Duration;

use etcd_monitor_tests::{
    AgentProcess, ClusterOptions, EtcdCluster,
    http::{bucket_delta, histogram_quantile, prom_buckets, prom_sum},
    inject::{CpuQuota, LoopDisk},
};

/// A 3-member cluster whose member0 keeps its data on `disk`, and an agent tracing exactly it.
fn cluster_on(disk: Option<&LoopDisk>) -> anyhow::Result<(EtcdCluster, AgentProcess)> {
    let mut options = ClusterOptions::default();
    if let Some(disk) = disk {
        options.data_dirs = vec![Some(disk.path().join("member0.etcd")), None, None];
    }
    let cluster = EtcdCluster::start(options)?;
    let pattern = match disk {
        Some(disk) => format!(
            "--match={}|{}",
            cluster.dir().display(),
            disk.path().display()
        ),
        None => format!("--match={}", cluster.dir().display()),
    };
    let agent = AgentProcess::start(
        common::agent_bin(),
        &["--rescan-interval=1s", "--mode=ebpf", &pattern],
        cluster.dir(),
        |_| {},
    )?;
    let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    agent
        .wait_tracking(&pids, Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    Ok((cluster, agent))
}

fn quantile_of_delta(
    after: &str,
    before: &str,
    metric: &str,
    labels: &[(&str, &str)],
    q: f64,
) -> Option<f64> {
    let delta = bucket_delta(
        &prom_buckets(after, metric, labels),
        &prom_buckets(before, metric, labels),
    );
    histogram_quantile(q, &delta)
}

/// Mean of a histogram over the interval between two scrapes, seconds.
fn mean_delta(after: &str, before: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sum = format!("{metric}_sum");
    let d = prom_sum(after, &sum, labels).unwrap_or(0.0)
        - prom_sum(before, &sum, labels).unwrap_or(0.0);
    let n = count_delta(after, before, metric, labels);
    (n > 0.0).then(|| d / n)
}

fn count_delta(after: &str, before: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let name = format!("{metric}_count");
    prom_sum(after, &name, labels).unwrap_or(0.0) - prom_sum(before, &name, labels).unwrap_or(0.0)
}

#[test]
fn block_service_time_follows_the_device() -> anyhow::Result<()> {
    if !common::require_root("block_service_time_follows_the_device")? {
        return Ok(());
    }
    let mut disk = LoopDisk::throttleable("blk")?;
    let (cluster, agent) = cluster_on(Some(&disk))?;
    let device = disk.device_name();
    let labels = [("member", "member0"), ("device", device.as_str())];
    const BLOCK: &str = "etcdmon_block_service_seconds";
    const FSYNC: &str = "etcdmon_fsync_duration_seconds";
    let wal = [("member", "member0"), ("file", "wal"), ("op", "fdatasync")];

    let t0 = agent.metrics()?;
    cluster.put_many("/blk-fast/", 300, 256)?;
    let t1 = agent.metrics()?;
    let fast_requests = count_delta(&t1, &t0, BLOCK, &labels);
    let fast_fsyncs = count_delta(&t1, &t0, FSYNC, &wal);
    let fast_mean = mean_delta(&t1, &t0, BLOCK, &labels)
        .ok_or_else(|| anyhow::anyhow!("no block requests seen on {device}:\n{t1}"))?;
    eprintln!(
        "fast {device}: {fast_requests} requests for {fast_fsyncs} WAL fdatasyncs, mean {:.3} ms",
        fast_mean * 1e3
    );
    // Every WAL fdatasync on ext4 reaches the device (a flush at least).
    assert!(
        fast_requests >= fast_fsyncs,
        "{fast_requests} requests for {fast_fsyncs} fdatasyncs"
    );

    disk.throttle_write_iops(40)?;
    cluster.put_many("/blk-slow/", 30, 256)?;
    let t2 = agent.metrics()?;
    // Writes into the backing file land in its page cache; the flushes wait for the throttled
    // device. The mean (what the diagnosis judges) carries them; the median need not.
    let slow_mean = mean_delta(&t2, &t1, BLOCK, &labels)
        .ok_or_else(|| anyhow::anyhow!("no block requests while throttled"))?;
    let slow_p99 = quantile_of_delta(&t2, &t1, BLOCK, &labels, 0.99).unwrap_or(0.0);
    let slow_fsync_p50 = quantile_of_delta(&t2, &t1, FSYNC, &wal, 0.5).unwrap_or(0.0);
    eprintln!(
        "throttled {device}: block mean {:.1} ms, p99 {:.1} ms, WAL fdatasync p50 {:.1} ms",
        slow_mean * 1e3,
        slow_p99 * 1e3,
        slow_fsync_p50 * 1e3
    );
    assert!(
        slow_mean > 0.005 && slow_mean > 5.0 * fast_mean,
        "mean service time {slow_mean}s while throttled vs {fast_mean}s before"
    );
    assert!(
        slow_p99 > 0.02,
        "the slowest requests wait for the throttle: p99 {slow_p99}s"
    );
    // The other members' devices are not this one.
    assert!(
        prom_sum(
            &t2,
            &format!("{BLOCK}_count"),
            &[("member", "member1"), ("device", device.as_str())]
        )
        .is_none(),
        "member1 is not on {device}"
    );
    Ok(())
}

#[test]
fn runqueue_latency_follows_a_cpu_quota() -> anyhow::Result<()> {
    if !common::require_root("runqueue_latency_follows_a_cpu_quota")? {
        return Ok(());
    }
    let (cluster, agent) = cluster_on(None)?;
    const RUNQ: &str = "etcdmon_runqueue_latency_seconds";
    let t0 = agent.metrics()?;
    cluster.put_many("/runq-free/", 300, 256)?;
    let t1 = agent.metrics()?;
    for m in &cluster.members {
        let n = count_delta(&t1, &t0, RUNQ, &[("member", m.name.as_str())]);
        assert!(n > 100.0, "{}: {n} run-queue samples under load", m.name);
    }
    let free_p99 = quantile_of_delta(&t1, &t0, RUNQ, &[("member", "member0")], 0.99).unwrap_or(0.0);

    // 5 ms of CPU per 100 ms for member0.
    let quota = CpuQuota::apply(cluster.members[0].pid(), 5_000, 100_000)?;
    cluster.put_many("/runq-starved/", 200, 256)?;
    let t2 = agent.metrics()?;
    drop(quota);
    let starved_p99 =
        quantile_of_delta(&t2, &t1, RUNQ, &[("member", "member0")], 0.99).unwrap_or(0.0);
    let other_p99 =
        quantile_of_delta(&t2, &t1, RUNQ, &[("member", "member1")], 0.99).unwrap_or(0.0);
    let throttled = prom_sum(
        &t2,
        "etcdmon_cpu_throttled_periods_total",
        &[("member", "member0")],
    )
    .unwrap_or(0.0)
        - prom_sum(
            &t1,
            "etcdmon_cpu_throttled_periods_total",
            &[("member", "member0")],
        )
        .unwrap_or(0.0);
    eprintln!(
        "member0 run-queue p99: {:.2} ms free, {:.2} ms under quota (member1 {:.2} ms); {throttled} throttled periods",
        free_p99 * 1e3,
        starved_p99 * 1e3,
        other_p99 * 1e3
    );
    assert!(throttled > 0.0, "the quota throttled member0's cgroup");
    assert!(
        starved_p99 > 0.02 && starved_p99 > 2.0 * other_p99,
        "starved member0 p99 {starved_p99}s vs member1 {other_p99}s"
    );
    Ok(())
}
