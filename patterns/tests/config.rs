//! Config watch against real etcd: resumes after a member restart without missing or repeating
//! a revision.

mod common;

use std::time::Duration;

use etcd_monitor_patterns::{Config, ConfigWatch, connect, stats};
use etcd_monitor_tests::{EtcdCluster, wait_for};

async fn collect(watch: &mut ConfigWatch, n: usize) -> anyhow::Result<Vec<(String, i64, u32)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let change = tokio::time::timeout(Duration::from_secs(60), watch.next()).await??;
        let value: u32 = change
            .decode()?
            .ok_or_else(|| anyhow::anyhow!("{} deleted", change.key))?;
        out.push((change.key, change.revision, value));
    }
    Ok(out)
}

async fn assert_quiet(watch: &mut ConfigWatch) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
        Err(_) => Ok(()),
        Ok(change) => anyhow::bail!("unexpected extra change (a repeat?): {change:?}"),
    }
}

/// Waits until a linearizable read through `config`'s member succeeds: the cluster has a leader.
async fn wait_for_leader(config: &Config) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while config.get::<u32>("k0").await.is_err() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no leader for 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_resumes_after_member_restart_with_writes_while_it_was_down() -> anyhow::Result<()> {
    // The watcher talks only to member 0; the writer only to member 1. Member 0 is killed, keys are
    // written while it is down, it restarts from the same data dir: the watcher gets every
    // revision exactly once.
    let mut cluster = EtcdCluster::start3()?;
    let watcher_config = Config::new(
        connect(&cluster.members[0].client_url).await?,
        "/test/config",
    );
    let writer = Config::new(
        connect(&cluster.members[1].client_url).await?,
        "/test/config",
    );
    let mut watch = watcher_config.watch().await?;
    let resumes_before = stats::snapshot().watch_resumes;

    let mut expected = Vec::new();
    for i in 0..5u32 {
        let key = format!("k{i}");
        expected.push((key.clone(), writer.set(&key, &i).await?, i));
    }
    let mut seen = collect(&mut watch, 5).await?;

    cluster.members[0].kill();
    // Member 0 may have been the leader: writing during the election can time out with an
    // ambiguous outcome, so wait for a leader first.
    wait_for_leader(&writer).await?;
    for i in 5..10u32 {
        let key = format!("k{i}");
        expected.push((key.clone(), writer.set(&key, &i).await?, i));
    }
    // Give the watcher time to notice and retry against the dead member.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.members[0].restart()?;
    wait_for("member 0 healthy again", Duration::from_secs(60), || {
        cluster.members[0].healthy().then_some(())
    })?;
    // A rejoining member can force an election (etcd 3.4 has no pre-vote by default).
    wait_for_leader(&writer).await?;
    for i in 10..15u32 {
        let key = format!("k{i}");
        expected.push((key.clone(), writer.set(&key, &i).await?, i));
    }
    seen.extend(collect(&mut watch, 10).await?);
    assert_quiet(&mut watch).await?;
    assert_eq!(seen, expected);
    assert!(
        stats::snapshot().watch_resumes > resumes_before,
        "the watch never had to resume"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_resumes_after_single_member_etcd_restart() -> anyhow::Result<()> {
    let mut cluster = common::one_member()?;
    let config = Config::new(connect(&cluster.endpoints()).await?, "/test/config1");
    let mut watch = config.watch().await?;
    let mut expected = Vec::new();
    for i in 0..3u32 {
        let key = format!("k{i}");
        expected.push((key.clone(), config.set(&key, &i).await?, i));
    }
    let mut seen = collect(&mut watch, 3).await?;
    cluster.members[0].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.members[0].restart()?;
    wait_for("etcd healthy again", Duration::from_secs(60), || {
        cluster.members[0].healthy().then_some(())
    })?;
    for i in 3..6u32 {
        let key = format!("k{i}");
        expected.push((key.clone(), config.set(&key, &i).await?, i));
    }
    seen.extend(collect(&mut watch, 3).await?);
    assert_quiet(&mut watch).await?;
    assert_eq!(seen, expected);
    // Typed get after the restart.
    assert_eq!(config.get::<u32>("k5").await?, Some(5));
    assert!(
        config.get::<String>("k5").await.is_err(),
        "a u32 decoded as a String"
    );
    Ok(())
}
