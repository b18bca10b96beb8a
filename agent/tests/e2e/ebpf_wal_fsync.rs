//! The agent's kernel view of WAL fdatasync agrees with etcd's own histogram, member by member,
//! on a real 3-member cluster under load — while another process hammers fdatasync too.

use crate::common;

use std::time::Duration;

use etcd_monitor_tests::http::{bucket_delta, histogram_quantile, prom_buckets, prom_sum};

const PUTS: usize = 3000;

/// etcd's `etcd_disk_wal_fsync_duration_seconds` bucket bounds (seconds).
fn etcd_bucket_index(buckets: &[(f64, f64)], value: f64) -> usize {
    buckets
        .iter()
        .position(|(le, _)| value <= *le)
        .unwrap_or(buckets.len())
}

#[test]
fn agent_wal_fdatasync_counts_and_p99_match_etcd() -> anyhow::Result<()> {
    if !common::require_root("agent_wal_fdatasync_counts_and_p99_match_etcd")? {
        return Ok(());
    }
    let (cluster, agent) = common::cluster_with_agent()?;

    // A process that is not etcd doing fdatasync in a loop on the same disk.
    // (Outside the cluster dir, so `--match` does not pick it up.)
    let noise_dir = tempfile::tempdir()?;
    let noise_file = noise_dir.path().join("noise.bin");
    let mut noise = std::process::Command::new("python3")
        .args([
            "-c",
            "import os,sys\nfd=os.open(sys.argv[1], os.O_CREAT|os.O_WRONLY)\nfor _ in range(3000):\n    os.write(fd, b'x'*512)\n    os.fdatasync(fd)\n",
        ])
        .arg(&noise_file)
        .spawn()?;

    let wal = |text: &str, member: &str| {
        prom_sum(
            text,
            "etcdmon_fsync_duration_seconds_count",
            &[("member", member), ("file", "wal"), ("op", "fdatasync")],
        )
        .unwrap_or(0.0)
    };
    let mut before = Vec::new();
    for m in &cluster.members {
        let etcd_text = m.metrics()?;
        let agent_text = agent.metrics()?;
        before.push((
            prom_sum(
                &etcd_text,
                "etcd_disk_wal_fsync_duration_seconds_count",
                &[],
            )
            .unwrap_or(0.0),
            prom_buckets(&etcd_text, "etcd_disk_wal_fsync_duration_seconds", &[]),
            wal(&agent_text, &m.name),
            prom_buckets(
                &agent_text,
                "etcdmon_fsync_duration_seconds",
                &[("member", &m.name), ("file", "wal"), ("op", "fdatasync")],
            ),
        ));
    }

    cluster.put_many("/agent-e2e/", PUTS, 256)?;
    noise.wait()?;
    std::thread::sleep(Duration::from_millis(500)); // let the last syncs land

    let agent_text = agent.metrics()?;
    for (m, (etcd_before, etcd_buckets_before, agent_before, agent_buckets_before)) in
        cluster.members.iter().zip(before)
    {
        let etcd_text = m.metrics()?;
        let etcd_delta = prom_sum(
            &etcd_text,
            "etcd_disk_wal_fsync_duration_seconds_count",
            &[],
        )
        .unwrap_or(0.0)
            - etcd_before;
        let agent_delta = wal(&agent_text, &m.name) - agent_before;
        eprintln!(
            "{}: etcd WAL fsyncs +{etcd_delta}, agent WAL fdatasyncs +{agent_delta}",
            m.name
        );
        assert!(
            etcd_delta >= PUTS as f64 / 10.0,
            "{}: etcd synced only {etcd_delta} times for {PUTS} puts",
            m.name
        );
        let diff = (agent_delta - etcd_delta).abs() / etcd_delta;
        assert!(
            diff <= 0.02,
            "{}: agent {agent_delta} vs etcd {etcd_delta} differ by {:.2}%",
            m.name,
            diff * 100.0
        );

        let etcd_buckets = bucket_delta(
            &prom_buckets(&etcd_text, "etcd_disk_wal_fsync_duration_seconds", &[]),
            &etcd_buckets_before,
        );
        let agent_buckets = bucket_delta(
            &prom_buckets(
                &agent_text,
                "etcdmon_fsync_duration_seconds",
                &[("member", &m.name), ("file", "wal"), ("op", "fdatasync")],
            ),
            &agent_buckets_before,
        );
        let etcd_p99 = histogram_quantile(0.99, &etcd_buckets)
            .ok_or_else(|| anyhow::anyhow!("no etcd p99"))?;
        let agent_p99 = histogram_quantile(0.99, &agent_buckets)
            .ok_or_else(|| anyhow::anyhow!("no agent p99"))?;
        let (ei, ai) = (
            etcd_bucket_index(&etcd_buckets, etcd_p99),
            etcd_bucket_index(&etcd_buckets, agent_p99),
        );
        eprintln!(
            "{}: p99 etcd {:.3} ms (bucket {ei}), agent {:.3} ms (bucket {ai})",
            m.name,
            etcd_p99 * 1e3,
            agent_p99 * 1e3
        );
        assert!(
            ei.abs_diff(ai) <= 1,
            "{}: p99 etcd {etcd_p99} vs agent {agent_p99} more than one etcd bucket apart",
            m.name
        );
    }

    // Only the three members appear: the python process's fdatasyncs were never counted.
    let members: std::collections::BTreeSet<&str> = agent_text
        .lines()
        .filter(|l| l.starts_with("etcdmon_fsync_duration_seconds_count"))
        .filter_map(|l| l.split("member=\"").nth(1)?.split('"').next())
        .collect();
    let expected: std::collections::BTreeSet<&str> =
        cluster.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, expected);
    assert_eq!(
        prom_sum(&agent_text, "etcdmon_agent_tracked_processes", &[]),
        Some(3.0)
    );
    assert_eq!(
        prom_sum(
            &agent_text,
            "etcdmon_events_dropped_total",
            &[("stage", "kernel")]
        ),
        Some(0.0),
        "no drops at this rate"
    );
    Ok(())
}
