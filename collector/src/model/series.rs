//! The raw cumulative series of one member's /metrics that windowed signals need, read from a
//! scrape: what [`crate::model::cluster::MemberState`] carries for the alert rules and diagnosis.

use std::collections::BTreeMap;

use etcd_monitor_histogram::CumulativeBuckets;
use prometheus_parse::{Scrape, Value};

/// The raw cumulative series of one member's /metrics that windowed signals need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSeries {
    /// `etcd_disk_wal_fsync_duration_seconds`.
    pub wal_fsync: CumulativeBuckets,
    /// `etcd_disk_backend_commit_duration_seconds`.
    pub backend_commit: CumulativeBuckets,
    /// `etcd_network_peer_round_trip_time_seconds`, all peers.
    pub peer_round_trip: CumulativeBuckets,
    /// `grpc_server_handling_seconds` (unary, not Defragment) per method.
    pub grpc_handling: BTreeMap<String, CumulativeBuckets>,
    /// `grpc_server_handled_total` (unary).
    pub grpc_handled: f64,
    /// `grpc_server_handled_total` (unary) with a server-side failure code.
    pub grpc_failed: f64,
    /// `etcd_server_quota_backend_bytes`.
    pub quota_backend_bytes: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub resident_memory_bytes: Option<f64>,
}

/// gRPC codes the etcd mixin counts as failures.
pub const FAILED_CODES: [&str; 7] = [
    "Unknown",
    "FailedPrecondition",
    "ResourceExhausted",
    "Internal",
    "Unavailable",
    "DataLoss",
    "DeadlineExceeded",
];

pub fn merged(scrape: &Scrape, name: &str) -> CumulativeBuckets {
    crate::sources::scrape::merged_buckets(scrape, name, |_| true)
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
            _ => {}
        }
    }
    out
}
