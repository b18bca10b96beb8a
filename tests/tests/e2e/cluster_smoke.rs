//! The test harness itself: a 3-member cluster starts, takes writes and elects a leader.

use etcd_monitor_tests::EtcdCluster;

#[test]
fn three_member_cluster_starts_and_accepts_writes() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start3()?;
    cluster.put_many("/smoke/", 100, 16)?;
    let count = cluster.etcdctl(&["get", "/smoke/", "--prefix", "--keys-only", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&count)?;
    assert_eq!(v["count"], 100, "{count}");
    assert!(cluster.leader_index().is_some());
    Ok(())
}
