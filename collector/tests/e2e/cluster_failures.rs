//! The collector against a real 3-member etcd cluster: state and derived metrics equal what etcd
//! itself reports, then through a stopped member, a killed leader and a lost quorum.

use std::time::{Duration, Instant};

use crate::common::{endpoint_status, hex, member_json, metric, start_collector, wait_status};
use etcd_monitor_tests::{ClusterOptions, EtcdCluster, http, wait_for};

/// Health interval of this test; "within two health intervals" is measured against it.
const HEALTH: Duration = Duration::from_secs(2);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn collector_tracks_a_real_cluster_through_failures() -> anyhow::Result<()> {
    let mut cluster = EtcdCluster::start(ClusterOptions {
        extra_args: vec!["--metrics=extensive".to_string()],
        ..ClusterOptions::default()
    })?;
    cluster.put_many("/load/", 300, 128)?;
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    // No write probe here: a quiet cluster lets every derived value equal etcd's exactly.
    let collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            "--health-check-interval=2s",
            "--metrics-interval=1s",
            "--dial-timeout=700ms",
            "--probe-write=false",
        ],
    )?;

    // 1. Status, members and leader are right.
    let status = wait_status(
        &collector,
        "a healthy 3-member view",
        Duration::from_secs(20),
        |s| s["healthy"] == true && s["available_members"] == 3,
    )?;
    assert_eq!(status["cluster"], "default");
    assert_eq!(status["member_count"], 3);
    assert_eq!(status["quorum_size"], 2);
    assert_eq!(status["has_leader"], true);
    assert_eq!(status["split_brain"]["detected"], false);
    let truth: Vec<serde_json::Value> = cluster
        .members
        .iter()
        .map(|m| endpoint_status(m, None))
        .collect::<anyhow::Result<_>>()?;
    let leader_hex = hex(&truth[0]["leader"]);
    assert_eq!(status["leader"]["id"], leader_hex.as_str(), "{status}");
    assert_eq!(
        status["cluster_id"],
        hex(&truth[0]["header"]["cluster_id"]).as_str()
    );
    let leader_index = cluster
        .leader_index()
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    assert_eq!(
        status["leader"]["name"],
        cluster.members[leader_index].name.as_str()
    );
    for (m, t) in cluster.members.iter().zip(&truth) {
        let cm = member_json(&status, &m.name)
            .ok_or_else(|| anyhow::anyhow!("{} missing: {status}", m.name))?;
        assert_eq!(cm["id"], hex(&t["header"]["member_id"]).as_str());
        assert_eq!(cm["reachable"], true);
        assert_eq!(cm["client_urls"][0], m.client_url.as_str());
        assert_eq!(cm["is_leader"], t["leader"] == t["header"]["member_id"]);
        assert_eq!(cm["status"]["version"], t["version"]);
        assert_eq!(cm["status"]["raft_term"], t["raftTerm"]);
        assert_eq!(cm["status"]["leader_id"], leader_hex.as_str());
    }
    let (code, members) = collector.get_json("/api/v1/cluster/members")?;
    assert_eq!(code, 200);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));
    let (code, leader) = collector.get_json("/api/v1/cluster/leader")?;
    assert_eq!(code, 200);
    assert_eq!(leader["leader"]["id"], leader_hex.as_str());

    // 2. Every derived value equals the one read from etcd at the same moment.
    let mut last_diff = String::new();
    wait_for(
        "collector's figures to equal etcd's",
        Duration::from_secs(30),
        || {
            last_diff.clear();
            let (_, current) = collector.get_json("/api/v1/metrics/current").ok()?;
            let (_, status) = collector.get_json("/api/v1/cluster/status").ok()?;
            let exported = collector.metrics().ok()?;
            for m in &cluster.members {
                let text = m.metrics().ok()?;
                let truth = endpoint_status(m, None).ok()?;
                let cm = member_json(&current, &m.name)?;
                let sm = member_json(&status, &m.name)?;
                let server = &cm["server"];
                let direct = |name: &str| http::prom_sum(&text, name, &[]);
                let labels = [("cluster", "default"), ("member", m.name.as_str())];
                let p95 = |name: &str| {
                    http::histogram_quantile(0.95, &http::prom_buckets(&text, name, &[]))
                        .map(|s| s * 1000.0)
                };
                let checks: Vec<(&str, Option<f64>, Option<f64>)> = vec![
                    (
                        "proposals committed",
                        server["proposals_committed_total"].as_f64(),
                        direct("etcd_server_proposals_committed_total"),
                    ),
                    (
                        "proposals applied",
                        server["proposals_applied_total"].as_f64(),
                        direct("etcd_server_proposals_applied_total"),
                    ),
                    (
                        "proposals pending",
                        server["proposals_pending"].as_f64(),
                        direct("etcd_server_proposals_pending"),
                    ),
                    (
                        "proposals failed",
                        server["proposals_failed_total"].as_f64(),
                        direct("etcd_server_proposals_failed_total"),
                    ),
                    (
                        "db size",
                        server["db_total_size_bytes"].as_f64(),
                        direct("etcd_mvcc_db_total_size_in_bytes"),
                    ),
                    (
                        "db in use",
                        server["db_total_size_in_use_bytes"].as_f64(),
                        direct("etcd_mvcc_db_total_size_in_use_in_bytes"),
                    ),
                    (
                        "leader changes seen",
                        server["leader_changes_seen_total"].as_f64(),
                        direct("etcd_server_leader_changes_seen_total"),
                    ),
                    (
                        "wal fsync p95",
                        server["wal_fsync_p95_ms"].as_f64(),
                        p95("etcd_disk_wal_fsync_duration_seconds"),
                    ),
                    (
                        "backend commit p95",
                        server["backend_commit_p95_ms"].as_f64(),
                        p95("etcd_disk_backend_commit_duration_seconds"),
                    ),
                    (
                        "server write p99",
                        server["server_latency"]["write"]["p99_ms"].as_f64(),
                        http::histogram_quantile(
                            0.99,
                            &http::prom_buckets(
                                &text,
                                "grpc_server_handling_seconds",
                                &[("grpc_method", "Put")],
                            ),
                        )
                        .map(|s| s * 1000.0),
                    ),
                    (
                        "status db size",
                        sm["status"]["db_size_bytes"].as_f64(),
                        truth["dbSize"].as_f64(),
                    ),
                    (
                        "status db in use",
                        sm["status"]["db_size_in_use_bytes"].as_f64(),
                        truth["dbSizeInUse"].as_f64(),
                    ),
                    (
                        "status raft index",
                        sm["status"]["raft_index"].as_f64(),
                        truth["raftIndex"].as_f64(),
                    ),
                    (
                        "status raft applied",
                        sm["status"]["raft_applied_index"].as_f64(),
                        truth["raftAppliedIndex"].as_f64(),
                    ),
                    (
                        "exported db size",
                        http::prom_sum(&exported, "etcd_mvcc_db_total_size_bytes", &labels),
                        direct("etcd_mvcc_db_total_size_in_bytes"),
                    ),
                    (
                        "exported db in use",
                        http::prom_sum(&exported, "etcd_mvcc_db_total_size_in_use_bytes", &labels),
                        direct("etcd_mvcc_db_total_size_in_use_in_bytes"),
                    ),
                    (
                        "exported committed",
                        http::prom_sum(&exported, "etcd_server_proposals_committed_total", &labels),
                        direct("etcd_server_proposals_committed_total"),
                    ),
                    (
                        "exported applied",
                        http::prom_sum(&exported, "etcd_server_proposals_applied_total", &labels),
                        direct("etcd_server_proposals_applied_total"),
                    ),
                    (
                        "exported failed",
                        http::prom_sum(&exported, "etcd_server_proposals_failed_total", &labels),
                        direct("etcd_server_proposals_failed_total"),
                    ),
                    (
                        "exported pending",
                        http::prom_sum(&exported, "etcd_server_proposals_pending", &labels),
                        direct("etcd_server_proposals_pending"),
                    ),
                    (
                        "exported wal p95",
                        http::prom_sum(
                            &exported,
                            "etcd_disk_wal_fsync_duration_p95_milliseconds",
                            &labels,
                        ),
                        p95("etcd_disk_wal_fsync_duration_seconds"),
                    ),
                    (
                        "exported commit p95",
                        http::prom_sum(
                            &exported,
                            "etcd_disk_backend_commit_duration_p95_milliseconds",
                            &labels,
                        ),
                        p95("etcd_disk_backend_commit_duration_seconds"),
                    ),
                ];
                for (what, got, want) in checks {
                    match (got, want) {
                        (Some(g), Some(w)) if close(g, w) => {}
                        _ => last_diff.push_str(&format!(
                            "{} {what}: collector {got:?}, etcd {want:?}\n",
                            m.name
                        )),
                    }
                }
                // KV requests: the read probe adds a few between the two reads, never fewer.
                let kv_direct: f64 = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("grpc_server_handled_total")
                            && l.contains("grpc_service=\"etcdserverpb.KV\"")
                    })
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum();
                let kv = server["grpc_kv_requests_total"].as_f64().unwrap_or(-1.0);
                if !(kv > 0.0 && kv <= kv_direct && kv_direct - kv <= 20.0) {
                    last_diff.push_str(&format!(
                        "{} kv requests: collector {kv}, etcd {kv_direct}\n",
                        m.name
                    ));
                }
            }
            last_diff.is_empty().then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{last_diff}"))?;

    // Cluster series and probe/rate series are exported with the contract's names.
    let cl = [("cluster", "default")];
    assert_eq!(
        metric(&collector, "etcd_cluster_member_count", &cl),
        Some(3.0)
    );
    assert_eq!(
        metric(&collector, "etcd_cluster_quorum_size", &cl),
        Some(2.0)
    );
    assert_eq!(
        metric(&collector, "etcd_cluster_has_leader", &cl),
        Some(1.0)
    );
    assert_eq!(metric(&collector, "etcd_cluster_healthy", &cl), Some(1.0));
    assert_eq!(
        metric(&collector, "etcd_cluster_leader_changes_total", &cl),
        Some(0.0)
    );
    for m in &cluster.members {
        let labels = [("cluster", "default"), ("member", m.name.as_str())];
        wait_for(
            "read probe and request rate series",
            Duration::from_secs(15),
            || {
                let text = collector.metrics().ok()?;
                let p50 =
                    http::prom_sum(&text, "etcd_request_read_latency_p50_milliseconds", &labels)?;
                let p99 =
                    http::prom_sum(&text, "etcd_request_read_latency_p99_milliseconds", &labels)?;
                let rate = http::prom_sum(&text, "etcd_request_rate_per_second", &labels)?;
                (p50 > 0.0 && p99 >= p50 && rate > 0.0).then_some(())
            },
        )?;
        // The write probe is off: no write latency series.
        assert_eq!(
            metric(
                &collector,
                "etcd_request_write_latency_p99_milliseconds",
                &labels
            ),
            None
        );
    }

    // 3. A stopped follower is unavailable while quorum holds; killed, it stays so; restarted, it returns.
    let follower = (0..3).find(|i| *i != leader_index).unwrap_or(0);
    let follower_name = cluster.members[follower].name.clone();
    cluster.members[follower].signal(libc::SIGSTOP)?;
    let s = wait_status(
        &collector,
        "stopped follower unavailable, quorum held",
        Duration::from_secs(15),
        |s| {
            member_json(s, &follower_name).is_some_and(|m| m["reachable"] == false)
                && s["quorum_ok"] == true
                && s["has_leader"] == true
                && s["available_members"] == 2
        },
    )?;
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["possible_partition"], true);
    assert_eq!(s["unreachable_members"][0], follower_name.as_str());
    let err = member_json(&s, &follower_name)
        .and_then(|m| m["error"].as_str())
        .unwrap_or_default();
    assert!(err.contains("no answer"), "{err}");
    assert_eq!(
        metric(
            &collector,
            "etcd_member_up",
            &[("cluster", "default"), ("member", &follower_name)]
        ),
        Some(0.0)
    );

    cluster.members[follower].kill();
    wait_status(
        &collector,
        "killed follower refused, quorum held",
        Duration::from_secs(15),
        |s| {
            member_json(s, &follower_name).is_some_and(|m| {
                m["reachable"] == false
                    && m["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("refused") || e.contains("connect"))
            }) && s["quorum_ok"] == true
        },
    )?;
    cluster.members[follower].restart()?;
    wait_status(
        &collector,
        "restarted follower back",
        Duration::from_secs(30),
        |s| s["available_members"] == 3 && s["healthy"] == true,
    )?;

    // 4. Killing the leader: a new leader appears and the change counter rises by exactly one.
    let before = metric(&collector, "etcd_cluster_leader_changes_total", &cl).unwrap_or(-1.0);
    let old_leader = cluster
        .leader_index()
        .ok_or_else(|| anyhow::anyhow!("no leader before kill"))?;
    let old_id = hex(&endpoint_status(&cluster.members[old_leader], None)?["header"]["member_id"]);
    cluster.members[old_leader].kill();
    let s = wait_status(&collector, "a new leader", Duration::from_secs(30), |s| {
        s["has_leader"] == true && s["leader"]["id"] != old_id.as_str()
    })?;
    let new_id = s["leader"]["id"].as_str().unwrap_or_default().to_string();
    let truth_leader = wait_for(
        "etcd to agree on the new leader",
        Duration::from_secs(10),
        || cluster.leader_index(),
    )?;
    assert_eq!(
        s["leader"]["name"],
        cluster.members[truth_leader].name.as_str()
    );
    wait_for("leader change counted", Duration::from_secs(10), || {
        (metric(&collector, "etcd_cluster_leader_changes_total", &cl)? == before + 1.0)
            .then_some(())
    })?;
    let (_, leader) = collector.get_json("/api/v1/cluster/leader")?;
    let last = &leader["history"][leader["history"]
        .as_array()
        .map_or(0, Vec::len)
        .saturating_sub(1)];
    assert_eq!(last["old_leader"], old_id.as_str(), "{leader}");
    assert_eq!(last["new_leader"], new_id.as_str(), "{leader}");
    assert_eq!(leader["leader_changes_total"], before as u64 + 1);

    // 5. Two of three stopped: has_leader and healthy fall to 0 within two health intervals.
    let new_leader = truth_leader;
    cluster.members[new_leader].signal(libc::SIGSTOP)?;
    let stopped_at = Instant::now();
    wait_for("has_leader and healthy at 0", HEALTH * 3, || {
        let text = collector.metrics().ok()?;
        let has_leader = http::prom_sum(&text, "etcd_cluster_has_leader", &cl)?;
        let healthy = http::prom_sum(&text, "etcd_cluster_healthy", &cl)?;
        (has_leader == 0.0 && healthy == 0.0).then_some(())
    })?;
    let took = stopped_at.elapsed();
    assert!(
        took <= HEALTH * 2,
        "took {took:?}, more than two health intervals"
    );
    let s = collector.status(None)?;
    assert_eq!(s["quorum_ok"], false, "{s}");
    assert_eq!(s["available_members"], 1, "{s}");
    assert_eq!(
        metric(&collector, "etcd_cluster_leader_changes_total", &cl),
        Some(before + 1.0)
    );
    Ok(())
}
