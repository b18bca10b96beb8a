//! The Prometheus exposition on `/metrics`: the contract's series built fresh from each
//! cluster's state at scrape time (so a member that left leaves no stale series), followed by
//! the collector's self-metrics.

use crate::{
    model::cluster::ClusterHandle, model::cluster::ClusterState, model::cluster::MemberState,
    model::cluster::Quantiles, model::cluster::ServerMetrics, model::exposition::Exposition,
    model::telemetry::Telemetry,
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
    let members = Members {
        states: &states,
        labels: &labels,
    };
    let mut f = Families { out };
    cluster_families(&mut f, &states);
    member_families(&mut f, &members);
    latency_families(&mut f, &members);
    server_families(&mut f, &members);
    certificate_families(&mut f, &states);
    f.out.extend(telemetry.registry.gather());
}

const CL: &[&str] = &["cluster"];
const CM: &[&str] = &["cluster", "member"];

/// Every member of every cluster, with its label.
struct Members<'a> {
    states: &'a [ClusterState],
    labels: &'a [Vec<String>],
}

impl<'a> Members<'a> {
    /// `(cluster, member)` rows of the members `get` has a value for.
    fn rows(&self, get: &dyn Fn(&MemberState) -> Option<f64>) -> Vec<(Vec<&'a str>, f64)> {
        let mut rows = Vec::new();
        for (s, names) in self.states.iter().zip(self.labels) {
            for (m, name) in s.members.iter().zip(names) {
                if let Some(v) = get(m) {
                    rows.push((vec![s.cluster.as_str(), name.as_str()], v));
                }
            }
        }
        rows
    }
}

/// `(cluster)` rows of the clusters checked at least once.
fn per_cluster<'a>(
    states: &'a [ClusterState],
    get: &dyn Fn(&ClusterState) -> Option<f64>,
) -> Vec<(Vec<&'a str>, f64)> {
    states
        .iter()
        .filter(|s| s.updated_at_ms > 0)
        .filter_map(|s| Some((vec![s.cluster.as_str()], get(s)?)))
        .collect()
}

/// The cluster-wide series and the alarms.
fn cluster_families(f: &mut Families<'_>, states: &[ClusterState]) {
    type Get = fn(&ClusterState) -> Option<f64>;
    let gauges: [(&str, &str, Get); 8] = [
        (
            "etcd_cluster_healthy",
            "1 when the cluster has a leader, quorum, no split brain and no alarm.",
            |s| Some(b(s.healthy)),
        ),
        (
            "etcd_cluster_has_leader",
            "1 when a reachable member claims leadership.",
            |s| Some(b(s.has_leader)),
        ),
        (
            "etcd_cluster_member_count",
            "Members in the member list.",
            |s| Some(s.member_count as f64),
        ),
        (
            "etcd_cluster_available_members",
            "Members that answered the last health check.",
            |s| Some(s.available_members as f64),
        ),
        (
            "etcd_cluster_quorum_size",
            "Members needed for quorum.",
            |s| Some(s.quorum_size as f64),
        ),
        (
            "etcd_cluster_quorum_available",
            "1 when enough members answer to form a quorum.",
            |s| Some(b(s.quorum_ok)),
        ),
        (
            "etcd_cluster_split_brain",
            "1 when members disagree on the leader in one term or on the cluster id.",
            |s| Some(b(s.split_brain.detected)),
        ),
        (
            "etcd_cluster_revision_rate_per_second",
            "Writes per second from the revision's growth.",
            |s| s.revision_rate_per_second,
        ),
    ];
    for (name, help, get) in gauges {
        f.gauge(name, help, CL, &per_cluster(states, &get));
    }
    f.counter(
        "etcd_cluster_leader_changes_total",
        "Leader changes seen by the collector since it started.",
        CL,
        &per_cluster(states, &|s| Some(s.leader_changes_total as f64)),
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
}

/// Up, leader, raft term and index per member.
fn member_families(f: &mut Families<'_>, members: &Members<'_>) {
    f.gauge(
        "etcd_member_up",
        "1 when the member answered the last health check.",
        CM,
        &members.rows(&|m| Some(b(m.reachable))),
    );
    f.gauge(
        "etcd_member_is_leader",
        "1 for the leader.",
        CM,
        &members.rows(&|m| Some(b(m.is_leader))),
    );
    f.gauge(
        "etcd_member_raft_term",
        "Raft term the member reports.",
        CM,
        &members.rows(&|m| {
            m.status
                .as_ref()
                .filter(|_| m.reachable)
                .map(|s| s.raft_term as f64)
        }),
    );
    f.gauge(
        "etcd_member_raft_index",
        "Raft index the member reports.",
        CM,
        &members.rows(&|m| {
            m.status
                .as_ref()
                .filter(|_| m.reachable)
                .map(|s| s.raft_index as f64)
        }),
    );
}

/// The collector's probe latency quantiles per member.
fn latency_families(f: &mut Families<'_>, members: &Members<'_>) {
    let q = |pick: fn(&Quantiles) -> f64, read: bool| {
        move |m: &MemberState| {
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
                CM,
                &members.rows(&get),
            );
        }
    }
}

/// Figures from each member's own /metrics.
fn server_families(f: &mut Families<'_>, members: &Members<'_>) {
    type Get = fn(&ServerMetrics) -> Option<f64>;
    let gauges: [(&str, &str, Get); 7] = [
        (
            "etcd_request_rate_per_second",
            "KV requests per second the member handled between scrapes.",
            |s| s.request_rate_per_second,
        ),
        (
            "etcd_mvcc_db_total_size_bytes",
            "Backend database size, bytes.",
            |s| Some(s.db_total_size_bytes),
        ),
        (
            "etcd_mvcc_db_total_size_in_use_bytes",
            "Backend database size in use, bytes.",
            |s| Some(s.db_total_size_in_use_bytes),
        ),
        ("etcd_server_proposals_pending", "Pending proposals.", |s| {
            Some(s.proposals_pending)
        }),
        (
            "etcd_disk_wal_fsync_duration_p95_milliseconds",
            "p95 of WAL fsync since the member started, ms.",
            |s| s.wal_fsync_p95_ms,
        ),
        (
            "etcd_disk_backend_commit_duration_p95_milliseconds",
            "p95 of backend commit since the member started, ms.",
            |s| s.backend_commit_p95_ms,
        ),
        (
            "etcd_server_watchers",
            "Watchers open on the member: etcd's own watcher gauge (etcd_mvcc_watcher_total, etcd_debugging_mvcc_watcher_total in 3.4).",
            |s| s.series.counters.watchers,
        ),
    ];
    let counters: [(&str, &str, Get); 4] = [
        (
            "etcd_server_proposals_committed_total",
            "Consensus proposals committed.",
            |s| Some(s.proposals_committed_total),
        ),
        (
            "etcd_server_proposals_applied_total",
            "Consensus proposals applied.",
            |s| Some(s.proposals_applied_total),
        ),
        (
            "etcd_server_proposals_failed_total",
            "Failed proposals.",
            |s| Some(s.proposals_failed_total),
        ),
        (
            "etcd_server_leader_changes_seen_total",
            "Leader changes the member has seen.",
            |s| Some(s.leader_changes_seen_total),
        ),
    ];
    for (name, help, get) in gauges {
        f.gauge(
            name,
            help,
            CM,
            &members.rows(&|m| m.server.as_ref().and_then(get)),
        );
    }
    for (name, help, get) in counters {
        f.counter(
            name,
            help,
            CM,
            &members.rows(&|m| m.server.as_ref().and_then(get)),
        );
    }
}

/// Seconds until each certificate the collector saw expires, and the checks that failed.
fn certificate_families(f: &mut Families<'_>, states: &[ClusterState]) {
    let now = (crate::model::time::now_ms() / 1000) as i64;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut refused = Vec::new();
    for s in states {
        let report = &s.certificates;
        for c in &report.certificates {
            let left = c.not_after_unix.saturating_sub(now) as f64;
            rows.push((
                vec![
                    s.cluster.as_str(),
                    c.member.as_str(),
                    c.kind.as_str(),
                    c.subject.as_str(),
                ],
                left,
            ));
        }
        for (kind, n) in &report.failures {
            failures.push((vec![s.cluster.as_str(), *kind], *n as f64));
        }
        if report.checked_at_ms > 0 {
            refused.push((vec![s.cluster.as_str()], report.refused as f64));
        }
    }
    f.gauge(
        "etcdmon_certificate_expiry_seconds",
        "Seconds until a certificate expires (negative once expired): members' server and peer certificates seen in the collector's TLS handshakes, its own client certificate and CA bundle.",
        &["cluster", "member", "kind", "subject"],
        &rows,
    );
    f.counter(
        "etcdmon_certificate_check_failures_total",
        "Certificate checks that yielded no certificate (handshake failed, file unreadable), by kind.",
        &["cluster", "kind"],
        &failures,
    );
    f.counter(
        "etcdmon_certificates_refused_total",
        "Certificates left out of etcdmon_certificate_expiry_seconds because 64 were kept for the cluster already.",
        CL,
        &refused,
    );
}
