//! The raw cumulative series of one member's /metrics that windowed signals need, read from a
//! scrape (by [`crate::sources::scrape::server_series`]): what [`crate::model::cluster::MemberState`] carries for the alert rules and diagnosis.
//! Also the certificate expiries the collector sees ([`CertificateReport`], kept per cluster).

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
    /// Heartbeat failures, slow applies and watchers.
    pub counters: ServerCounters,
}

/// The counters and gauges of one member's /metrics that the operational rules read, besides
/// the histograms of [`ServerSeries`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerCounters {
    /// `etcd_server_heartbeat_send_failures_total`: heartbeats the leader could not send on
    /// time (it is starved, or its disk or network is slow).
    pub heartbeat_send_failures: Option<f64>,
    /// `etcd_server_slow_apply_total`: applies that took longer than 100 ms.
    pub slow_applies: Option<f64>,
    /// etcd's watcher gauge: `etcd_mvcc_watcher_total` (3.5+) or
    /// `etcd_debugging_mvcc_watcher_total` (3.4).
    pub watchers: Option<f64>,
}

/// What kind of certificate an expiry belongs to: a small closed set, so the
/// `etcdmon_certificate_expiry_seconds` label set stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertificateKind {
    /// A member's client-URL serving certificate, seen in the collector's TLS handshake.
    Server,
    /// A member's peer-URL certificate, seen in a TLS handshake with its peer URL.
    Peer,
    /// The collector's own client certificate (`--cert-file`).
    Client,
    /// A CA certificate of the configured bundle (`--ca-file`).
    Ca,
}

impl CertificateKind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateKind::Server => "server",
            CertificateKind::Peer => "peer",
            CertificateKind::Client => "client",
            CertificateKind::Ca => "ca",
        }
    }
}

/// One certificate's end of validity, as the collector last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// The member whose handshake showed it; empty for configured files.
    pub member: String,
    /// Which certificate.
    pub kind: CertificateKind,
    /// Subject common name (else the whole subject), at most [`MAX_SUBJECT_LEN`] bytes.
    pub subject: String,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// Longest `subject` label kept (longer ones are cut on a character boundary).
pub const MAX_SUBJECT_LEN: usize = 128;

/// Certificates kept per cluster: members × (server, peer) plus the configured files, bounded.
pub const MAX_CERTIFICATES: usize = 64;

/// What the certificate checks of one cluster found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CertificateReport {
    /// Certificates seen, at most [`MAX_CERTIFICATES`].
    pub certificates: Vec<CertificateExpiry>,
    /// Handshakes or files that yielded no certificate, by kind, since the collector started.
    pub failures: std::collections::BTreeMap<&'static str, u64>,
    /// Certificates left out because [`MAX_CERTIFICATES`] were kept already.
    pub refused: u64,
    /// When the last check ended (Unix ms); 0 before the first.
    pub checked_at_ms: u64,
}
