//! The raw cumulative series of one member's /metrics that windowed signals need, read from a
//! scrape (by [`crate::sources::scrape::server_series`]): what [`crate::model::cluster::MemberState`] carries for the alert rules and diagnosis.

use std::collections::BTreeMap;

use etcd_monitor_histogram::CumulativeBuckets;

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
