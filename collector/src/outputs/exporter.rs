//! The Prometheus exposition on `/metrics`: the contract's series built fresh from each
//! cluster's state at scrape time (so a member that left leaves no stale series), followed by
//! the collector's self-metrics.

use crate::{
    model::cluster::ClusterHandle, model::cluster::ClusterState, model::cluster::Quantiles,
    model::exposition::Exposition, model::telemetry::Telemetry,
};

/// The page, written one family at a time from `(label values, value)` rows.
struct Families<'a> {
    out: &'a mut Exposition,
}

impl Families<'_> {
    fn gauge(&mut self, name: &str, help: &str, labels: &[&str], rows: &[(Vec<&str>, f64)]) {
        for (values, v) in rows {
            let pairs = sorted(labels, values);
            self.out.gauge(name, help, &pairs, *v);
        }
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[&str], rows: &[(Vec<&str>, f64)]) {
        for (values, v) in rows {
            let pairs = sorted(labels, values);
            self.out.counter(name, help, &pairs, v.max(0.0));
        }
    }
}

/// Label pairs sorted by name, as the `prometheus` crate's vectors wrote them.
fn sorted<'a>(names: &[&'a str], values: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    let mut pairs: Vec<(&str, &str)> = names.iter().copied().zip(values.iter().copied()).collect();
    pairs.sort_unstable_by_key(|(k, _)| *k);
    pairs
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// Adds every series of `clusters` plus `telemetry`'s self-metrics to the page.
pub fn render(
    clusters: &[std::sync::Arc<ClusterHandle>],
    telemetry: &Telemetry,
    out: &mut Exposition,
) {
    let states: Vec<ClusterState> = clusters.iter().map(|c| c.snapshot()).collect();
    let labels: Vec<Vec<String>> = states
        .iter()
        .map(|s| s.members.iter().map(ClusterState::member_label).collect())
        .collect();
    let mut f = Families { out };
    let cl = &["cluster"];
    let cm = &["cluster", "member"];

    let per_cluster = |get: &dyn Fn(&ClusterState) -> Option<f64>| -> Vec<(Vec<&str>, f64)> {
        states
            .iter()
            .filter(|s| s.updated_at_ms > 0)
            .filter_map(|s| Some((vec![s.cluster.as_str()], get(s)?)))
            .collect()
    };
    f.gauge(
        "etcd_cluster_healthy",
        "1 when the cluster has a leader, quorum, no split brain and no alarm.",
        cl,
        &per_cluster(&|s| Some(b(s.healthy))),
    );
    f.gauge(
        "etcd_cluster_has_leader",
        "1 when a reachable member claims leadership.",
        cl,
        &per_cluster(&|s| Some(b(s.has_leader))),
    );
    f.gauge(
        "etcd_cluster_member_count",
        "Members in the member list.",
        cl,
        &per_cluster(&|s| Some(s.member_count as f64)),
    );
    f.gauge(
        "etcd_cluster_available_members",
        "Members that answered the last health check.",
        cl,
        &per_cluster(&|s| Some(s.available_members as f64)),
    );
    f.gauge(
        "etcd_cluster_quorum_size",
        "Members needed for quorum.",
        cl,
        &per_cluster(&|s| Some(s.quorum_size as f64)),
    );
    f.gauge(
        "etcd_cluster_quorum_available",
        "1 when enough members answer to form a quorum.",
        cl,
        &per_cluster(&|s| Some(b(s.quorum_ok))),
    );
    f.gauge(
        "etcd_cluster_split_brain",
        "1 when members disagree on the leader in one term or on the cluster id.",
        cl,
        &per_cluster(&|s| Some(b(s.split_brain.detected))),
    );
    f.gauge(
        "etcd_cluster_revision_rate_per_second",
        "Writes per second from the revision's growth.",
        cl,
        &per_cluster(&|s| s.revision_rate_per_second),
    );
    f.counter(
        "etcd_cluster_leader_changes_total",
        "Leader changes seen by the collector since it started.",
        cl,
        &per_cluster(&|s| Some(s.leader_changes_total as f64)),
    );

    let alarm_rows: Vec<(Vec<&str>, f64)> = states
        .iter()
        .flat_map(|s| {
            s.alarms.iter().map(move |a| {
                (
                    vec![s.cluster.as_str(), a.member_id.as_str(), a.alarm.as_str()],
                    1.0,
                )
            })
        })
        .collect();
    f.gauge(
        "etcd_cluster_alarm",
        "Active alarms (NOSPACE, CORRUPT) by member id.",
        &["cluster", "member_id", "alarm"],
        &alarm_rows,
    );

    let per_member =
        |get: &dyn Fn(&crate::model::cluster::MemberState) -> Option<f64>| -> Vec<(Vec<&str>, f64)> {
            let mut rows = Vec::new();
            for (s, names) in states.iter().zip(&labels) {
                for (m, name) in s.members.iter().zip(names) {
                    if let Some(v) = get(m) {
                        rows.push((vec![s.cluster.as_str(), name.as_str()], v));
                    }
                }
            }
            rows
        };
    f.gauge(
        "etcd_member_up",
        "1 when the member answered the last health check.",
        cm,
        &per_member(&|m| Some(b(m.reachable))),
    );
    f.gauge(
        "etcd_member_is_leader",
        "1 for the leader.",
        cm,
        &per_member(&|m| Some(b(m.is_leader))),
    );
    f.gauge(
        "etcd_member_raft_term",
        "Raft term the member reports.",
        cm,
        &per_member(&|m| {
            m.status
                .as_ref()
                .filter(|_| m.reachable)
                .map(|s| s.raft_term as f64)
        }),
    );
    f.gauge(
        "etcd_member_raft_index",
        "Raft index the member reports.",
        cm,
        &per_member(&|m| {
            m.status
                .as_ref()
                .filter(|_| m.reachable)
                .map(|s| s.raft_index as f64)
        }),
    );

    let q = |pick: fn(&Quantiles) -> f64, read: bool| {
        move |m: &crate::model::cluster::MemberState| {
            let w = if read {
                m.latency.read
            } else {
                m.latency.write
            };
            w.as_ref().map(pick)
        }
    };
    for (read, kind) in [(true, "read"), (false, "write")] {
        for (pick, p) in [
            ((|q: &Quantiles| q.p50_ms) as fn(&Quantiles) -> f64, "50"),
            (|q: &Quantiles| q.p95_ms, "95"),
            (|q: &Quantiles| q.p99_ms, "99"),
        ] {
            let get = q(pick, read);
            f.gauge(
                &format!("etcd_request_{kind}_latency_p{p}_milliseconds"),
                &format!(
                    "p{p} of the collector's {kind} probe latency over the last 5 minutes, ms."
                ),
                cm,
                &per_member(&get),
            );
        }
    }
    f.gauge(
        "etcd_request_rate_per_second",
        "KV requests per second the member handled between scrapes.",
        cm,
        &per_member(&|m| m.server.as_ref().and_then(|s| s.request_rate_per_second)),
    );
    f.gauge(
        "etcd_mvcc_db_total_size_bytes",
        "Backend database size, bytes.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.db_total_size_bytes)),
    );
    f.gauge(
        "etcd_mvcc_db_total_size_in_use_bytes",
        "Backend database size in use, bytes.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.db_total_size_in_use_bytes)),
    );
    f.counter(
        "etcd_server_proposals_committed_total",
        "Consensus proposals committed.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.proposals_committed_total)),
    );
    f.counter(
        "etcd_server_proposals_applied_total",
        "Consensus proposals applied.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.proposals_applied_total)),
    );
    f.counter(
        "etcd_server_proposals_failed_total",
        "Failed proposals.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.proposals_failed_total)),
    );
    f.gauge(
        "etcd_server_proposals_pending",
        "Pending proposals.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.proposals_pending)),
    );
    f.counter(
        "etcd_server_leader_changes_seen_total",
        "Leader changes the member has seen.",
        cm,
        &per_member(&|m| m.server.as_ref().map(|s| s.leader_changes_seen_total)),
    );
    f.gauge(
        "etcd_disk_wal_fsync_duration_p95_milliseconds",
        "p95 of WAL fsync since the member started, ms.",
        cm,
        &per_member(&|m| m.server.as_ref().and_then(|s| s.wal_fsync_p95_ms)),
    );
    f.gauge(
        "etcd_disk_backend_commit_duration_p95_milliseconds",
        "p95 of backend commit since the member started, ms.",
        cm,
        &per_member(&|m| m.server.as_ref().and_then(|s| s.backend_commit_p95_ms)),
    );

    f.out.extend(telemetry.registry.gather());
}
