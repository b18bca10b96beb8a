//! Per-cluster state: what the health loop, the scraper and the probes learn about each member,
//! kept in one [`ClusterState`] per cluster behind a lock that REST and /metrics read.
//!
//! Later stages (agent join, alert rules) extend [`MemberState`] and [`ClusterState`]; readers
//! take a clone of the snapshot and never hold the lock across an await.

use std::{
    collections::VecDeque,
    sync::{Arc, RwLock},
};

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::config::ClusterConfig;
use crate::model::sync;

/// How many leader changes are kept per cluster.
pub const LEADER_HISTORY: usize = 100;

/// What one member said in its last Status response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct MemberStatus {
    /// The cluster id it reports (hex).
    pub cluster_id: String,
    /// Whom it believes is leader (hex member id; `0` = none).
    pub leader_id: String,
    /// Raft term.
    pub raft_term: u64,
    /// Raft index.
    pub raft_index: u64,
    /// Raft applied index.
    pub raft_applied_index: u64,
    /// Store revision from the response header.
    pub revision: i64,
    /// Backend database size, bytes.
    pub db_size_bytes: i64,
    /// Part of the backend database in use, bytes.
    pub db_size_in_use_bytes: i64,
    /// etcd version.
    pub version: String,
    /// Errors the member itself reports (e.g. alarms).
    pub errors: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// Figures derived from one member's Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ServerMetrics {
    /// When they were scraped (Unix ms).
    pub scraped_at_ms: u64,
    /// `etcd_server_proposals_committed_total`.
    pub proposals_committed_total: f64,
    /// `etcd_server_proposals_applied_total`.
    pub proposals_applied_total: f64,
    /// `etcd_server_proposals_pending`.
    pub proposals_pending: f64,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed_total: f64,
    /// `etcd_mvcc_db_total_size_in_bytes`.
    pub db_total_size_bytes: f64,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`.
    pub db_total_size_in_use_bytes: f64,
    /// p95 of `etcd_disk_wal_fsync_duration_seconds` since the member started, ms.
    pub wal_fsync_p95_ms: Option<f64>,
    /// p95 of `etcd_disk_backend_commit_duration_seconds` since the member started, ms.
    pub backend_commit_p95_ms: Option<f64>,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes_seen_total: f64,
    /// `etcd_server_has_leader`.
    pub has_leader: Option<bool>,
    /// KV requests handled (`grpc_server_handled_total{grpc_service="etcdserverpb.KV"}`).
    pub grpc_kv_requests_total: f64,
    /// KV requests per second since the previous scrape.
    pub request_rate_per_second: Option<f64>,
    /// Server-side KV latency, when the member exposes `grpc_server_handling_seconds`
    /// (`--metrics=extensive`).
    pub server_latency: Option<ServerLatency>,
    /// Raw cumulative series the alert rules compute windowed signals from (not serialised).
    #[serde(skip)]
    pub series: crate::model::series::ServerSeries,
}

/// Quantiles of the server's own gRPC handling histograms, since the member started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ServerLatency {
    /// Range requests.
    pub read: Option<Quantiles>,
    /// Put, Txn and DeleteRange requests.
    pub write: Option<Quantiles>,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct Quantiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Observations the quantiles come from.
    pub samples: u64,
}

/// The collector's own probe latency against one member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ProbeLatency {
    /// Linearizable reads of the probe key (recent window).
    pub read: Option<Quantiles>,
    /// Puts to the probe key (recent window).
    pub write: Option<Quantiles>,
    /// Last read probe error.
    pub read_error: Option<String>,
    /// Last write probe error.
    pub write_error: Option<String>,
}

/// Everything known about one member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct MemberState {
    /// Member id (hex).
    pub id: String,
    /// `--name` (empty until the member has started).
    pub name: String,
    /// Where the other members reach it for raft (advertised peer URLs).
    pub peer_urls: Vec<String>,
    /// Where clients reach it (advertised client URLs); empty until it has started.
    pub client_urls: Vec<String>,
    /// Whether the collector got a Status answer from it in the last health check.
    pub reachable: bool,
    /// Why it is unreachable.
    pub error: Option<String>,
    /// Whether it is the leader.
    pub is_leader: bool,
    /// Last time it answered (Unix ms).
    pub last_seen_ms: Option<u64>,
    /// Its last Status answer.
    pub status: Option<MemberStatus>,
    /// Figures from its /metrics.
    pub server: Option<ServerMetrics>,
    /// Why the last scrape of its /metrics failed.
    pub scrape_error: Option<String>,
    /// The collector's probe latency.
    pub latency: ProbeLatency,
    /// Alarms raised on this member (`NOSPACE`, `CORRUPT`).
    pub alarms: Vec<String>,
}

/// One endpoint the collector polls, and what happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct EndpointState {
    /// The endpoint, normalised to `scheme://host:port`.
    pub url: String,
    /// Whether Status answered.
    pub reachable: bool,
    /// The member that answered (hex).
    pub member_id: Option<String>,
    /// Error of the last attempt.
    pub error: Option<String>,
}

/// An alarm raised in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Alarm {
    /// Member (hex id).
    pub member_id: String,
    /// `NOSPACE` or `CORRUPT`.
    pub alarm: String,
}

/// A change of leader seen by the collector.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LeaderChange {
    /// When it was seen (Unix ms).
    pub at_ms: u64,
    /// Previous leader (hex), if one was known.
    pub old_leader: Option<String>,
    /// New leader (hex).
    pub new_leader: String,
    /// Name of the new leader.
    pub new_leader_name: String,
    /// Raft term of the new leader.
    pub term: u64,
}

/// The current leader.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LeaderInfo {
    /// Member id (hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Raft term.
    pub term: u64,
}

/// Split-brain evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct SplitBrain {
    /// Whether any evidence was found.
    pub detected: bool,
    /// What was seen.
    pub reasons: Vec<String>,
}

/// The state of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ClusterState {
    /// Cluster name (`default` for the flags' cluster).
    pub cluster: String,
    /// Cluster id (hex), from the members' answers.
    pub cluster_id: Option<String>,
    /// When the last health check ended (Unix ms); 0 before the first.
    pub updated_at_ms: u64,
    /// Healthy: a leader, quorum, no split brain and no alarm.
    pub healthy: bool,
    /// A reachable member claims leadership.
    pub has_leader: bool,
    /// The member a majority agrees leads (none without quorum or during an election).
    pub leader: Option<LeaderInfo>,
    /// Members in the member list.
    pub member_count: usize,
    /// Members that answered.
    pub available_members: usize,
    /// Majority of `member_count` (learners excluded).
    pub quorum_size: usize,
    /// Whether enough voting members answer to form a quorum.
    pub quorum_ok: bool,
    /// Whether at least `--min-available-nodes` members answer.
    pub min_available_ok: bool,
    /// Names (or ids) of members the collector cannot reach.
    pub unreachable_members: Vec<String>,
    /// Some members are unreachable from the collector while others answer: a network
    /// partition between the collector and part of the cluster, or dead members.
    pub possible_partition: bool,
    /// Split-brain evidence.
    pub split_brain: SplitBrain,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// Leader changes seen by this collector since it started.
    pub leader_changes_total: u64,
    /// Last leader changes (newest last, at most 100).
    #[schema(value_type = Vec<LeaderChange>)]
    pub leader_history: VecDeque<LeaderChange>,
    /// Writes per second from the revision's growth between health checks.
    pub revision_rate_per_second: Option<f64>,
    /// Every member of the member list, in its order.
    pub members: Vec<MemberState>,
    /// Endpoints polled.
    pub endpoints: Vec<EndpointState>,
    /// Certificate expiries seen in TLS handshakes and configured files (not serialised).
    #[serde(skip)]
    pub certificates: crate::model::series::CertificateReport,
}

impl ClusterState {
    /// The member with hex id `id`.
    pub fn member(&self, id: &str) -> Option<&MemberState> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Label for a member in metrics and messages: its name, else its hex id.
    pub fn member_label(m: &MemberState) -> String {
        if m.name.is_empty() {
            m.id.clone()
        } else {
            m.name.clone()
        }
    }
}

/// One monitored cluster: its configuration and its state.
#[derive(Debug)]
pub struct ClusterHandle {
    /// The cluster's connection settings, fixed at start.
    pub config: ClusterConfig,
    state: RwLock<ClusterState>,
}

impl ClusterHandle {
    /// A cluster with no observations yet.
    pub fn new(config: ClusterConfig) -> Arc<Self> {
        let state = ClusterState {
            cluster: config.name.clone(),
            ..ClusterState::default()
        };
        Arc::new(Self {
            config,
            state: RwLock::new(state),
        })
    }

    /// The cluster's name: `default` from flags, else the file's `clusters[i].name`.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> ClusterState {
        sync::read(&self.state).clone()
    }

    /// Changes the state under the lock.
    pub fn update<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        f(&mut sync::write(&self.state))
    }
}

/// Every monitored cluster, in configuration order.
pub type Clusters = Arc<Vec<Arc<ClusterHandle>>>;
