//! Scraping each member's Prometheus endpoint and deriving the contract's server series from
//! it (parsed with `prometheus-parse`). Histogram quantiles here are over the cumulative buckets
//! since the member started, by the shared histogram model's quantile rule
//! (`etcd_monitor_histogram::Histogram::quantile`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use etcd_monitor_histogram::CumulativeBuckets;
use prometheus_parse::{Scrape, Value};

use crate::{
    model::cluster::ClusterHandle, model::cluster::ClusterState, model::cluster::MemberState,
    model::cluster::Quantiles, model::cluster::ServerLatency, model::cluster::ServerMetrics,
    model::config::MetricsTarget, model::series::ServerSeries, model::telemetry::Telemetry,
    model::time::now_ms, model::window::FsyncWindows, sources::etcd::certs::CertChecks,
    sources::ingest::AgentRegistry, store::HistoryPoint, store::Store,
};

/// A scrape that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed.
    #[error("GET {url}: {message}")]
    Http {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The body is not Prometheus text, or lacks etcd's series.
    #[error("{url}: {message}")]
    Parse {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
}

fn scalar(v: &Value) -> Option<f64> {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

/// Sums every series of histogram `name` whose labels pass `keep` into one
/// [`CumulativeBuckets`]: the buckets bound by bound, and the `_sum` and `_count` series.
pub(crate) fn merged_buckets(
    scrape: &Scrape,
    name: &str,
    keep: impl Fn(&prometheus_parse::Labels) -> bool,
) -> CumulativeBuckets {
    let mut out = CumulativeBuckets::default();
    let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
    let mut count: Option<f64> = None;
    for s in scrape.samples.iter().filter(|s| keep(&s.labels)) {
        if s.metric == name
            && let Value::Histogram(buckets) = &s.value
        {
            out.merge(&CumulativeBuckets::from_pairs(
                buckets.iter().map(|b| (b.less_than, b.count)),
            ));
        } else if s.metric == sum_name {
            out.sum_seconds += scalar(&s.value).unwrap_or(0.0);
        } else if s.metric == count_name {
            *count.get_or_insert(0.0) += scalar(&s.value).unwrap_or(0.0);
        }
    }
    if let Some(count) = count {
        out.count = CumulativeBuckets::from_pairs([(f64::INFINITY, count)]).count;
    }
    out
}

fn quantiles_ms(buckets: &CumulativeBuckets) -> Option<Quantiles> {
    let h = buckets.histogram();
    Some(Quantiles {
        p50_ms: h.quantile_ms(0.50)?,
        p95_ms: h.quantile_ms(0.95)?,
        p99_ms: h.quantile_ms(0.99)?,
        samples: h.bucket_total(),
    })
}

/// Derives the contract's server series from one member's /metrics text.
pub fn derive(text: &str) -> Result<ServerMetrics, String> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("not Prometheus text: {e}"))?;
    let mut values: HashMap<&str, f64> = HashMap::new();
    let mut kv_total = 0.0;
    for s in &scrape.samples {
        if s.metric == "grpc_server_handled_total"
            && s.labels.get("grpc_service") == Some("etcdserverpb.KV")
        {
            kv_total += scalar(&s.value).unwrap_or(0.0);
            continue;
        }
        if let Some(v) = scalar(&s.value) {
            *values.entry(s.metric.as_str()).or_insert(0.0) += v;
        }
    }
    let get = |name: &str| values.get(name).copied();
    let committed = get("etcd_server_proposals_committed_total")
        .ok_or("no etcd_server_proposals_committed_total: not an etcd member's /metrics")?;
    let ms = |name: &str| {
        merged_buckets(&scrape, name, |_| true)
            .histogram()
            .quantile_ms(0.95)
    };
    let handling = |methods: &[&str]| {
        let b = merged_buckets(&scrape, "grpc_server_handling_seconds", |l| {
            l.get("grpc_service") == Some("etcdserverpb.KV")
                && l.get("grpc_method").is_some_and(|m| methods.contains(&m))
        });
        quantiles_ms(&b)
    };
    let has_handling = scrape
        .samples
        .iter()
        .any(|s| s.metric == "grpc_server_handling_seconds");
    Ok(ServerMetrics {
        scraped_at_ms: now_ms(),
        proposals_committed_total: committed,
        proposals_applied_total: get("etcd_server_proposals_applied_total").unwrap_or(0.0),
        proposals_pending: get("etcd_server_proposals_pending").unwrap_or(0.0),
        proposals_failed_total: get("etcd_server_proposals_failed_total").unwrap_or(0.0),
        db_total_size_bytes: get("etcd_mvcc_db_total_size_in_bytes")
            .or_else(|| get("etcd_debugging_mvcc_db_total_size_in_bytes"))
            .unwrap_or(0.0),
        db_total_size_in_use_bytes: get("etcd_mvcc_db_total_size_in_use_in_bytes").unwrap_or(0.0),
        wal_fsync_p95_ms: ms("etcd_disk_wal_fsync_duration_seconds"),
        backend_commit_p95_ms: ms("etcd_disk_backend_commit_duration_seconds"),
        leader_changes_seen_total: get("etcd_server_leader_changes_seen_total").unwrap_or(0.0),
        has_leader: get("etcd_server_has_leader").map(|v| v > 0.0),
        grpc_kv_requests_total: kv_total,
        request_rate_per_second: None,
        server_latency: has_handling.then(|| ServerLatency {
            read: handling(&["Range"]),
            write: handling(&["Put", "Txn", "DeleteRange"]),
        }),
        series: server_series(&scrape),
    })
}

/// The /metrics URL of `member`: an explicit `--metrics-urls` entry, else its first client URL.
pub fn metrics_url(
    member: &MemberState,
    endpoints: &[(String, String)],
    explicit: &[(MetricsTarget, String)],
) -> Option<String> {
    for (target, url) in explicit {
        match target {
            MetricsTarget::Member(name) if *name == member.name => return Some(url.clone()),
            MetricsTarget::Endpoint(endpoint) => {
                let answered_as_member = endpoints
                    .iter()
                    .any(|(url, id)| url == endpoint && *id == member.id);
                let listed = member
                    .client_urls
                    .iter()
                    .any(|c| crate::sources::etcd::members::same_url(c, endpoint));
                if answered_as_member || listed {
                    return Some(url.clone());
                }
            }
            MetricsTarget::Member(_) => {}
        }
    }
    member
        .client_urls
        .first()
        .map(|u| format!("{}/metrics", u.trim_end_matches('/')))
}

/// Scrapes every member of one cluster each `interval` and writes a history point per member.
pub struct ScrapeLoop {
    cluster: Arc<ClusterHandle>,
    http: reqwest::Client,
    telemetry: Telemetry,
    store: Option<Arc<Store>>,
    previous: HashMap<String, (f64, u64)>,
    registry: Option<Arc<AgentRegistry>>,
    windows: FsyncWindows,
    certs: CertChecks,
}

impl ScrapeLoop {
    /// A loop for `cluster`.
    pub fn new(
        cluster: Arc<ClusterHandle>,
        http: reqwest::Client,
        telemetry: Telemetry,
        store: Option<Arc<Store>>,
    ) -> Self {
        Self {
            cluster,
            http,
            telemetry,
            store,
            previous: HashMap::new(),
            registry: None,
            windows: FsyncWindows::default(),
            certs: CertChecks::default(),
        }
    }

    /// Also records each member's in-kernel WAL fsync latency (from its agent) in history.
    pub fn with_registry(mut self, registry: Arc<AgentRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Runs forever.
    pub async fn run(mut self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let start = std::time::Instant::now();
            self.round().await;
            self.telemetry
                .loop_round(self.cluster.name(), "scrape", start.elapsed());
        }
    }

    async fn fetch(http: &reqwest::Client, url: &str) -> Result<ServerMetrics, ScrapeError> {
        let http_err = |e: reqwest::Error| ScrapeError::Http {
            url: url.to_string(),
            message: crate::sources::etcd::client::error_chain(&e),
        };
        let resp = http.get(url).send().await.map_err(http_err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ScrapeError::Http {
                url: url.to_string(),
                message: format!("HTTP {status}"),
            });
        }
        let text = resp.text().await.map_err(http_err)?;
        derive(&text).map_err(|message| ScrapeError::Parse {
            url: url.to_string(),
            message,
        })
    }

    /// One scrape of every member, then one history point per member, then (when due) the
    /// certificate checks.
    pub async fn round(&mut self) {
        let targets = self.targets();
        let results = self.fetch_all(&targets).await;
        let updates = self.rates_and_failures(targets, results);
        let snapshot = self.cluster.update(|s| {
            for (id, result) in updates {
                if let Some(m) = s.members.iter_mut().find(|m| m.id == id) {
                    match result {
                        Ok(metrics) => {
                            m.server = Some(metrics);
                            m.scrape_error = None;
                        }
                        Err(e) => m.scrape_error = Some(e),
                    }
                }
            }
            s.clone()
        });
        self.write_history(&snapshot).await;
        self.certs.check_if_due(&self.cluster, &snapshot).await;
    }

    /// (member id, label, /metrics URL) of every member.
    fn targets(&self) -> Vec<(String, String, Option<String>)> {
        let state = self.cluster.snapshot();
        let endpoints: Vec<(String, String)> = state
            .endpoints
            .iter()
            .filter_map(|e| Some((e.url.clone(), e.member_id.clone()?)))
            .collect();
        state
            .members
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    ClusterState::member_label(m),
                    metrics_url(m, &endpoints, &self.cluster.config.metrics_urls),
                )
            })
            .collect()
    }

    /// Scrapes every target at once.
    async fn fetch_all(
        &self,
        targets: &[(String, String, Option<String>)],
    ) -> Vec<Result<ServerMetrics, ScrapeError>> {
        futures::future::join_all(targets.iter().map(|(_, _, url)| {
            let http = self.http.clone();
            async move {
                match url {
                    Some(url) => Self::fetch(&http, url).await,
                    None => Err(ScrapeError::Http {
                        url: String::new(),
                        message: "member has no client URL yet".to_string(),
                    }),
                }
            }
        }))
        .await
    }

    /// Fills each scrape's request rate from the previous one and counts the failures.
    fn rates_and_failures(
        &mut self,
        targets: Vec<(String, String, Option<String>)>,
        results: Vec<Result<ServerMetrics, ScrapeError>>,
    ) -> Vec<(String, Result<ServerMetrics, String>)> {
        let name = self.cluster.name().to_string();
        let mut updates = Vec::new();
        for ((id, label, _), result) in targets.into_iter().zip(results) {
            match result {
                Ok(mut m) => {
                    if let Some((prev_total, prev_at)) = self.previous.get(&id)
                        && m.scraped_at_ms > *prev_at
                        && m.grpc_kv_requests_total >= *prev_total
                    {
                        let dt = (m.scraped_at_ms - prev_at) as f64 / 1000.0;
                        m.request_rate_per_second =
                            Some((m.grpc_kv_requests_total - prev_total) / dt);
                    }
                    self.previous
                        .insert(id.clone(), (m.grpc_kv_requests_total, m.scraped_at_ms));
                    updates.push((id, Ok(m)));
                }
                Err(e) => {
                    let e = e.to_string();
                    self.telemetry.scrape_failed(&name, &label, &e);
                    updates.push((id, Err(e)));
                }
            }
        }
        updates
    }

    /// One history point per member, with the interval's server and kernel WAL p99.
    async fn write_history(&mut self, snapshot: &ClusterState) {
        let Some(store) = &self.store else { return };
        if snapshot.updated_at_ms == 0 {
            return;
        }
        let mut points = history_points(snapshot, now_ms());
        self.windows
            .retain(|id| snapshot.members.iter().any(|m| m.id == id));
        for (point, member) in points.iter_mut().zip(&snapshot.members) {
            let server = member
                .server
                .as_ref()
                .map(|s| &s.series.wal_fsync)
                .filter(|b| !b.is_empty());
            let kernel = self
                .registry
                .as_ref()
                .and_then(|r| r.wal_fsync_slots(member));
            let window = self.windows.observe(&member.id, server, kernel.as_ref());
            point.wal_fsync_window_p99_ms = window.server_ms;
            point.kernel_wal_fsync_window_p99_ms = window.kernel_ms;
        }
        let store = store.clone();
        let telemetry = self.telemetry.clone();
        let joined = tokio::task::spawn_blocking(move || store.insert_points(&points)).await;
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => telemetry.store_failed("insert_points", &e.to_string()),
            Err(e) => telemetry.store_failed("insert_points", &e.to_string()),
        }
    }
}

/// One history point per member of `state` at `ts_ms`.
pub fn history_points(state: &ClusterState, ts_ms: u64) -> Vec<HistoryPoint> {
    state
        .members
        .iter()
        .map(|m| {
            let server = m.server.as_ref();
            let status = m.status.as_ref();
            HistoryPoint {
                ts_ms,
                cluster: state.cluster.clone(),
                member: ClusterState::member_label(m),
                member_id: m.id.clone(),
                reachable: m.reachable,
                is_leader: m.is_leader,
                raft_term: status.map(|s| s.raft_term),
                raft_index: status.map(|s| s.raft_index),
                db_size_bytes: server
                    .map(|s| s.db_total_size_bytes)
                    .or_else(|| status.map(|s| s.db_size_bytes as f64)),
                db_size_in_use_bytes: server
                    .map(|s| s.db_total_size_in_use_bytes)
                    .or_else(|| status.map(|s| s.db_size_in_use_bytes as f64)),
                proposals_committed_total: server.map(|s| s.proposals_committed_total),
                proposals_applied_total: server.map(|s| s.proposals_applied_total),
                proposals_pending: server.map(|s| s.proposals_pending),
                proposals_failed_total: server.map(|s| s.proposals_failed_total),
                wal_fsync_p95_ms: server.and_then(|s| s.wal_fsync_p95_ms),
                backend_commit_p95_ms: server.and_then(|s| s.backend_commit_p95_ms),
                read_p99_ms: m.latency.read.map(|q| q.p99_ms),
                write_p99_ms: m.latency.write.map(|q| q.p99_ms),
                request_rate_per_second: server.and_then(|s| s.request_rate_per_second),
                leader_changes_seen_total: server.map(|s| s.leader_changes_seen_total),
                // Filled by the scrape loop, which keeps the previous readings.
                wal_fsync_window_p99_ms: None,
                kernel_wal_fsync_window_p99_ms: None,
            }
        })
        .collect()
}

/// gRPC codes the etcd mixin counts as failures.
const FAILED_CODES: [&str; 7] = [
    "Unknown",
    "FailedPrecondition",
    "ResourceExhausted",
    "Internal",
    "Unavailable",
    "DataLoss",
    "DeadlineExceeded",
];

fn merged(scrape: &Scrape, name: &str) -> CumulativeBuckets {
    merged_buckets(scrape, name, |_| true)
}

/// Extracts the [`ServerSeries`] of a parsed /metrics page (called by the scraper).
pub fn server_series(scrape: &Scrape) -> ServerSeries {
    let mut out = ServerSeries {
        wal_fsync: merged(scrape, "etcd_disk_wal_fsync_duration_seconds"),
        backend_commit: merged(scrape, "etcd_disk_backend_commit_duration_seconds"),
        peer_round_trip: merged(scrape, "etcd_network_peer_round_trip_time_seconds"),
        ..ServerSeries::default()
    };
    for s in &scrape.samples {
        if s.metric == "grpc_server_handling_seconds"
            && s.labels.get("grpc_type") == Some("unary")
            && let Some(method) = s.labels.get("grpc_method")
            && method != "Defragment"
            && let Value::Histogram(buckets) = &s.value
        {
            out.grpc_handling
                .entry(method.to_string())
                .or_default()
                .merge(&CumulativeBuckets::from_pairs(
                    buckets.iter().map(|b| (b.less_than, b.count)),
                ));
            continue;
        }
        let v = match &s.value {
            Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
            _ => continue,
        };
        match s.metric.as_str() {
            "grpc_server_handled_total" if s.labels.get("grpc_type") == Some("unary") => {
                out.grpc_handled += v;
                if s.labels
                    .get("grpc_code")
                    .is_some_and(|c| FAILED_CODES.contains(&c))
                {
                    out.grpc_failed += v;
                }
            }
            "etcd_server_quota_backend_bytes" => out.quota_backend_bytes = Some(v),
            "process_resident_memory_bytes" => out.resident_memory_bytes = Some(v),
            "etcd_server_heartbeat_send_failures_total" => {
                out.counters.heartbeat_send_failures = Some(v);
            }
            "etcd_server_slow_apply_total" => out.counters.slow_applies = Some(v),
            // 3.5+ name first; 3.4 only has the debugging one.
            "etcd_mvcc_watcher_total" => out.counters.watchers = Some(v),
            "etcd_debugging_mvcc_watcher_total" => {
                out.counters.watchers.get_or_insert(v);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP etcd_server_proposals_committed_total The total number of consensus proposals committed.
# TYPE etcd_server_proposals_committed_total gauge
etcd_server_proposals_committed_total 42
# TYPE etcd_server_proposals_applied_total gauge
etcd_server_proposals_applied_total 41
# TYPE etcd_server_proposals_pending gauge
etcd_server_proposals_pending 1
# TYPE etcd_server_proposals_failed_total counter
etcd_server_proposals_failed_total 2
# TYPE etcd_mvcc_db_total_size_in_bytes gauge
etcd_mvcc_db_total_size_in_bytes 32768
# TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge
etcd_mvcc_db_total_size_in_use_in_bytes 16384
# TYPE etcd_server_leader_changes_seen_total counter
etcd_server_leader_changes_seen_total 3
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 50
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 90
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 100
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 100
etcd_disk_wal_fsync_duration_seconds_sum 0.1
etcd_disk_wal_fsync_duration_seconds_count 100
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5
grpc_server_handled_total{grpc_code="OK",grpc_method="Status",grpc_service="etcdserverpb.Maintenance",grpc_type="unary"} 100
"#;

    #[test]
    fn derives_the_contract_series() -> Result<(), String> {
        let m = derive(SAMPLE)?;
        assert_eq!(m.proposals_committed_total, 42.0);
        assert_eq!(m.proposals_applied_total, 41.0);
        assert_eq!(m.proposals_pending, 1.0);
        assert_eq!(m.proposals_failed_total, 2.0);
        assert_eq!(m.db_total_size_bytes, 32768.0);
        assert_eq!(m.db_total_size_in_use_bytes, 16384.0);
        assert_eq!(m.leader_changes_seen_total, 3.0);
        assert_eq!(m.has_leader, Some(true));
        assert_eq!(m.grpc_kv_requests_total, 12.0);
        // rank 95 of 100 falls in (0.002, 0.004]: 0.002 + 0.002 * 5/10 = 0.003 s.
        let p95 = m.wal_fsync_p95_ms.unwrap_or_default();
        assert!((p95 - 3.0).abs() < 1e-9, "{p95}");
        assert_eq!(m.backend_commit_p95_ms, None);
        assert_eq!(m.server_latency, None);
        Ok(())
    }

    #[test]
    fn rejects_text_that_is_not_etcd() {
        assert!(derive("some_other_metric 1\n").is_err());
    }

    #[test]
    fn merged_buckets_sum_the_series_with_their_sum_and_count() -> Result<(), String> {
        let text = format!(
            "{SAMPLE}etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"0.001\",x=\"b\"}} 1\n"
        );
        let scrape =
            Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).map_err(|e| e.to_string())?;
        let b = merged_buckets(&scrape, "etcd_disk_wal_fsync_duration_seconds", |_| true);
        assert_eq!(b.buckets[0], (0.001, 51));
        assert_eq!(b.buckets.last(), Some(&(f64::INFINITY, 100)));
        assert_eq!(b.count, 100);
        assert!((b.sum_seconds - 0.1).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn metrics_url_prefers_explicit_entries() {
        let m = MemberState {
            id: "a1".into(),
            name: "m0".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
            ..MemberState::default()
        };
        assert_eq!(
            metrics_url(&m, &[], &[]).as_deref(),
            Some("http://127.0.0.1:2379/metrics")
        );
        let explicit = vec![(MetricsTarget::Member("m0".into()), "http://x:1/m".into())];
        assert_eq!(
            metrics_url(&m, &[], &explicit).as_deref(),
            Some("http://x:1/m")
        );
        let by_endpoint = vec![(
            MetricsTarget::Endpoint("http://localhost:2379".into()),
            "http://y:2/m".into(),
        )];
        let answered = vec![("http://localhost:2379".to_string(), "a1".to_string())];
        assert_eq!(
            metrics_url(&m, &answered, &by_endpoint).as_deref(),
            Some("http://y:2/m")
        );
    }
}
