//! Plain configuration data more than one layer reads (what a cluster is, how to reach it,
//! the thresholds rules start from), the shared configuration error, and the `--help` default
//! helpers. The flags, the YAML file and their validation live in [`crate::app::config`].

use std::time::Duration;

/// `--subscriber-buffer`.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 4096;

/// A flag's `[default: …]` text computed once from the constant the engine uses (for values
/// `default_value_t` cannot show: durations, and defaults of `Option` flags).
macro_rules! default_text {
    ($text:expr) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| $text).as_str()
    }};
}
pub(crate) use default_text;

/// The `[default: …]` text of a duration flag, formatted (humantime) from its `Duration`
/// constant, so `--help` cannot state another value.
macro_rules! duration_default {
    ($d:expr) => {
        crate::model::config::default_text!(humantime::format_duration($d).to_string())
    };
}
pub(crate) use duration_default;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {field}: {message}")]
pub struct ConfigError {
    /// The flag or config-file field, e.g. `--ca-file` or `clusters[1].endpoints`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// TLS settings of one cluster, files already read.
#[derive(Clone)]
pub struct TlsConfig {
    /// PEM of the CA bundle, if one was given.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate and of its key, if given.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Do not verify server certificates.
    pub insecure_skip_verify: bool,
    /// Where the CA came from, for error messages.
    pub ca_source: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca_source)
            .field("client_identity", &self.identity.is_some())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// User and password for an auth-enabled cluster.
#[derive(Clone)]
pub struct Auth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which member a `--metrics-urls` entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsTarget {
    /// The member with this `--name`.
    Member(String),
    /// The member reached at this endpoint.
    Endpoint(String),
}

/// One monitored cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Name carried by every series and REST response.
    pub name: String,
    /// Client URLs, normalised to `http(s)://host:port`.
    pub endpoints: Vec<String>,
    /// TLS, when the endpoints are https.
    pub tls: Option<TlsConfig>,
    /// Auth, when enabled on the cluster.
    pub auth: Option<Auth>,
    /// Explicit Prometheus URLs.
    pub metrics_urls: Vec<(MetricsTarget, String)>,
    /// Connect and per-request timeout.
    pub dial_timeout: Duration,
}

/// Thresholds the alert rules start from.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// `--max-latency-ms`.
    pub max_latency_ms: u64,
    /// `--max-db-size-mb`: deprecated, drives nothing since DiskUsageHigh moved to the
    /// data dir's filesystem; kept so existing flags and config files still parse.
    pub max_db_size_mb: u64,
    /// `--min-available-nodes`.
    pub min_available_nodes: usize,
    /// `--max-leader-changes` per hour.
    pub max_leader_changes: u64,
}

impl Thresholds {
    /// The flags' defaults: p99 100 ms, 8 GiB database, 2 members, 3 leader changes an hour.
    pub const DEFAULT: Self = Self {
        max_latency_ms: 100,
        max_db_size_mb: 8192,
        min_available_nodes: 2,
        max_leader_changes: 3,
    };
}

impl Default for Thresholds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Name of the cluster the command-line flags describe.
pub const DEFAULT_CLUSTER: &str = "default";

/// Endpoint used when neither `--endpoints` nor a config file names one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// `--dial-timeout`.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
