//! Shared by `ctl::` and `admin::`: a member's own status (etcdctl), fragmenting a cluster,
//! and watching each member's database shrink (the order a rolling defrag took, proven from
//! the members themselves).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_monitor_tests::{EtcdCluster, http, wait_for};
use serde_json::Value;

/// `etcdctl endpoint status` of member `i`: its own `Status`.
pub fn member_status(cluster: &EtcdCluster, i: usize) -> anyhow::Result<Value> {
    crate::common::endpoint_status(&cluster.members[i], None)
}

/// Every member's database size in bytes.
pub fn db_sizes(cluster: &EtcdCluster) -> anyhow::Result<Vec<i64>> {
    (0..cluster.members.len())
        .map(|i| Ok(member_status(cluster, i)?["dbSize"].as_i64().unwrap_or(0)))
        .collect()
}

/// The cluster's current revision, as member 0 reports it.
pub fn revision(cluster: &EtcdCluster) -> anyhow::Result<i64> {
    Ok(member_status(cluster, 0)?["header"]["revision"]
        .as_i64()
        .unwrap_or(0))
}

/// Member `i`'s id in hex, the form `ctl` and the REST API take.
pub fn member_id_hex(cluster: &EtcdCluster, i: usize) -> anyhow::Result<String> {
    let id = member_status(cluster, i)?["header"]["member_id"]
        .as_u64()
        .context("member_id")?;
    Ok(format!("{id:x}"))
}

/// Writes and deletes enough to leave every member's database more than half free.
pub fn fragment(cluster: &EtcdCluster) -> anyhow::Result<()> {
    cluster.put_many("/frag/", 1500, 4096)?;
    cluster.etcdctl(&["del", "/frag/", "--prefix"])?;
    let rev = revision(cluster)?.to_string();
    cluster.etcdctl(&["compact", &rev, "--physical"])?;
    // In-use bytes settle once the compaction's freed pages are counted.
    wait_for("fragmentation over 45 %", Duration::from_secs(30), || {
        (0..cluster.members.len())
            .map(|i| member_status(cluster, i).ok())
            .collect::<Option<Vec<_>>>()
            .filter(|all| {
                all.iter().all(|s| {
                    let total = s["dbSize"].as_f64().unwrap_or(0.0);
                    let used = s["dbSizeInUse"].as_f64().unwrap_or(total);
                    total > 0.0 && 1.0 - used / total > 0.45
                })
            })
            .map(|_| ())
    })
}

/// Polls every member's own Status (the JSON gateway, in one thread per member) and records
/// when its database first shrank below `before`.
pub struct DropWatcher {
    stop: Arc<AtomicBool>,
    drops: Arc<Mutex<BTreeMap<usize, Instant>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DropWatcher {
    /// Starts one polling thread per member; `before[i]` is member i's size before.
    pub fn start(cluster: &EtcdCluster, before: &[i64]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let drops = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = cluster
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let url = format!("{}/v3/maintenance/status", m.client_url);
                let (stop, drops, before) = (stop.clone(), drops.clone(), before[i]);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let size = http::post_json(&url, "{}")
                            .ok()
                            .and_then(|r| r.json().ok())
                            .and_then(|v| v["dbSize"].as_str().and_then(|s| s.parse::<i64>().ok()));
                        if let Some(s) = size
                            && s < before
                            && let Ok(mut d) = drops.lock()
                        {
                            d.entry(i).or_insert_with(Instant::now);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            stop,
            drops,
            threads,
        }
    }

    /// Stops the threads; when each member first shrank, by member index.
    pub fn finish(self) -> BTreeMap<usize, Instant> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.drops.lock().map(|d| d.clone()).unwrap_or_default()
    }
}
