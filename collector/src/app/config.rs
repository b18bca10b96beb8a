//! Flags, environment variables and the optional YAML config file, validated once at start.
//!
//! [`Cli`] is what clap parses; [`Cli::into_config`] checks every value and returns a
//! [`Config`] the rest of the collector trusts. Every error names the flag (or the config-file
//! field) it is about.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::sources::ingest::registry::AgentLimits;
use clap::{ArgAction, Parser, ValueEnum};
use serde::Deserialize;

use crate::model::config::duration_default;

pub use crate::model::time::parse_duration;
pub use crate::ops::bench::spec::BenchmarkType;
pub use crate::{
    model::config::Auth, model::config::ClusterConfig, model::config::ConfigError,
    model::config::DEFAULT_SUBSCRIBER_BUFFER, model::config::MetricsTarget,
    model::config::Thresholds, model::config::TlsConfig,
};
pub use crate::{
    model::config::DEFAULT_CLUSTER, model::config::DEFAULT_DIAL_TIMEOUT,
    model::config::DEFAULT_ENDPOINT,
};
pub use crate::{
    sources::etcd::endpoint::RawCluster, sources::etcd::endpoint::field_name,
    sources::etcd::endpoint::normalize_endpoint, sources::etcd::endpoint::read_pem,
    sources::etcd::endpoint::validate_cluster,
};

// Every default below is written once: clap shows it in `--help` (and so in
// docs/configuration.md) and the engine uses the same constant.

/// `--api-host`.
pub const DEFAULT_API_HOST: &str = "0.0.0.0";
/// `--api-port`.
pub const DEFAULT_API_PORT: u16 = 8080;
/// `--health-check-interval`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// `--metrics-interval`.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// `--grpc-port`.
pub const DEFAULT_GRPC_PORT: u16 = 9464;
/// `--grpc-max-batch-bytes`.
pub const DEFAULT_GRPC_MAX_BATCH_BYTES: usize =
    crate::sources::ingest::server::DEFAULT_MAX_BATCH_BYTES;
/// `--grpc-max-concurrent-streams`.
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 256;
/// `--grpc-concurrency-per-connection`.
pub const DEFAULT_GRPC_CONCURRENCY_PER_CONNECTION: usize = 64;
/// `--max-subscribers`.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 256;
/// `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "etcd-monitor-data";
/// `--history-retention`.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// `--history-max-size-mb`.
pub const DEFAULT_HISTORY_MAX_SIZE_MB: u64 = 512;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `etcd-monitor`: watches etcd clusters and serves REST, Prometheus metrics and history.
/// `Debug` shows no flag value that could be a secret (see the impl).
#[derive(Clone, Parser)]
#[command(name = "etcd-monitor", version, about)]
pub struct Cli {
    /// etcd client URLs of the `default` cluster, comma-separated
    /// (`http://HOST:PORT`, `https://HOST:PORT`, or `HOST:PORT`). Default http://127.0.0.1:2379
    /// unless --config lists clusters.
    #[arg(long, env = "ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Option<Vec<String>>,

    /// Timeout for connecting to and each request to a member (e.g. `5s`, `500ms`).
    #[arg(long, env = "DIAL_TIMEOUT", default_value = duration_default!(DEFAULT_DIAL_TIMEOUT), value_parser = parse_duration)]
    pub dial_timeout: Duration,

    /// Client certificate (PEM) presented to etcd.
    #[arg(long, env = "CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// CA bundle (PEM) that signed the etcd members' server certificates.
    #[arg(long, env = "CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Use TLS but do not verify the members' server certificates.
    #[arg(long, env = "INSECURE_SKIP_TLS", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub insecure_skip_tls: bool,

    /// etcd user name (auth enabled clusters).
    #[arg(long, env = "ETCD_USERNAME")]
    pub username: Option<String>,

    /// Password of --username.
    #[arg(long, env = "ETCD_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Address the REST API and /metrics listen on.
    #[arg(long, env = "API_HOST", default_value = DEFAULT_API_HOST)]
    pub api_host: String,

    /// Port of the REST API and /metrics (0 picks a free port and logs it).
    #[arg(long, env = "API_PORT", default_value_t = DEFAULT_API_PORT)]
    pub api_port: u16,

    /// How often every member's Status, the member list and alarms are read.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = duration_default!(DEFAULT_HEALTH_CHECK_INTERVAL), value_parser = parse_duration)]
    pub health_check_interval: Duration,

    /// How often every member's Prometheus endpoint is scraped.
    #[arg(long, env = "METRICS_INTERVAL", default_value = duration_default!(DEFAULT_METRICS_INTERVAL), value_parser = parse_duration)]
    pub metrics_interval: Duration,

    /// Request latency (p99, milliseconds) above which latency counts as degraded.
    #[arg(long, env = "MAX_LATENCY_MS", default_value_t = Thresholds::DEFAULT.max_latency_ms)]
    pub max_latency_ms: u64,

    /// Deprecated and unused: kept so existing deployments still start. The database is now
    /// judged against etcd's own quota (etcdDatabaseQuotaLowSpace tiers) and DiskUsageHigh
    /// against the data dir's filesystem.
    #[arg(long, env = "MAX_DB_SIZE_MB", default_value_t = Thresholds::DEFAULT.max_db_size_mb)]
    pub max_db_size_mb: u64,

    /// Fewest members that must be reachable for the cluster to count as available.
    #[arg(long, env = "MIN_AVAILABLE_NODES", default_value_t = Thresholds::DEFAULT.min_available_nodes)]
    pub min_available_nodes: usize,

    /// Leader changes per hour above which leadership counts as unstable.
    #[arg(long, env = "MAX_LEADER_CHANGES", default_value_t = Thresholds::DEFAULT.max_leader_changes)]
    pub max_leader_changes: u64,

    /// Run a benchmark against the cluster and exit.
    #[arg(long, env = "RUN_BENCHMARK")]
    pub run_benchmark: bool,

    /// Operations of the benchmark.
    #[arg(long, env = "BENCHMARK_TYPE", value_enum, default_value_t = crate::ops::bench::spec::DEFAULT_KIND)]
    pub benchmark_type: BenchmarkType,

    /// Number of benchmark operations (the help text states the default from `DEFAULT_OPS`).
    #[arg(long, env = "BENCHMARK_OPS", help = benchmark_ops_help())]
    pub benchmark_ops: Option<u64>,

    /// The benchmark's other flags.
    #[command(flatten)]
    pub bench: crate::ops::bench::flags::BenchFlags,

    /// Port of the gRPC server (agent ingest, Subscribe stream).
    #[arg(long, env = "GRPC_PORT", default_value_t = DEFAULT_GRPC_PORT)]
    pub grpc_port: u16,

    /// File holding the bearer token agents and subscribers must send on gRPC (never logged);
    /// stands for both roles unless --grpc-ingest-token-file / --grpc-subscribe-token-file
    /// set their own.
    #[arg(long, env = "GRPC_TOKEN_FILE")]
    pub grpc_token_file: Option<PathBuf>,

    /// File holding the bearer token agents must send on AgentIngest.Push (never logged).
    #[arg(long, env = "GRPC_INGEST_TOKEN_FILE")]
    pub grpc_ingest_token_file: Option<PathBuf>,

    /// File holding the bearer token consumers must send on EventStream.Subscribe (never
    /// logged).
    #[arg(long, env = "GRPC_SUBSCRIBE_TOKEN_FILE")]
    pub grpc_subscribe_token_file: Option<PathBuf>,

    /// Accept gRPC tokens without TLS (anyone on the path can read them); without this flag a
    /// token needs --grpc-cert-file/--grpc-key-file.
    #[arg(long, env = "GRPC_ALLOW_PLAINTEXT_TOKEN")]
    pub grpc_allow_plaintext_token: bool,

    /// Address the gRPC server listens on: an IP address or a host name resolved at start-up
    /// (default: --api-host).
    #[arg(long, env = "GRPC_HOST")]
    pub grpc_host: Option<String>,

    /// Most concurrent HTTP/2 streams one gRPC connection may open.
    #[arg(long, env = "GRPC_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_GRPC_MAX_CONCURRENT_STREAMS)]
    pub grpc_max_concurrent_streams: u32,

    /// Most gRPC calls one connection may have in progress at once.
    #[arg(long, env = "GRPC_CONCURRENCY_PER_CONNECTION", default_value_t = DEFAULT_GRPC_CONCURRENCY_PER_CONNECTION)]
    pub grpc_concurrency_per_connection: usize,

    /// Most open Subscribe streams; more are refused with RESOURCE_EXHAUSTED (counted).
    #[arg(long, env = "MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Most agents known at once; batches from more nodes are refused (counted).
    #[arg(long, env = "MAX_AGENTS", default_value_t = AgentLimits::DEFAULT.max_agents)]
    pub max_agents: usize,

    /// Most etcd members one agent may report in its status.
    #[arg(long, env = "MAX_MEMBERS_PER_AGENT", default_value_t = AgentLimits::DEFAULT.max_members)]
    pub max_members_per_agent: usize,

    /// Most peer entries per member in an agent's status.
    #[arg(long, env = "MAX_PEERS_PER_MEMBER", default_value_t = AgentLimits::DEFAULT.max_peers_per_member)]
    pub max_peers_per_member: usize,

    /// An agent silent this long is forgotten: its series leave /metrics and /api/v1/agents.
    #[arg(long, env = "AGENT_EXPIRY", default_value = duration_default!(AgentLimits::DEFAULT.expiry), value_parser = parse_duration)]
    pub agent_expiry: Duration,

    /// PEM certificate of the gRPC server (serve TLS; needs --grpc-key-file).
    #[arg(long, env = "GRPC_CERT_FILE")]
    pub grpc_cert_file: Option<PathBuf>,

    /// PEM key of --grpc-cert-file.
    #[arg(long, env = "GRPC_KEY_FILE")]
    pub grpc_key_file: Option<PathBuf>,

    /// PEM CA: gRPC clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "GRPC_CLIENT_CA_FILE")]
    pub grpc_client_ca_file: Option<PathBuf>,

    /// Largest agent batch accepted, bytes; the gRPC transport refuses larger messages before
    /// decoding them (64 KiB to 64 MiB).
    #[arg(long, env = "GRPC_MAX_BATCH_BYTES", default_value_t = DEFAULT_GRPC_MAX_BATCH_BYTES)]
    pub grpc_max_batch_bytes: usize,

    /// Events buffered per Subscribe stream before that subscriber starts missing events.
    #[arg(long, env = "SUBSCRIBER_BUFFER", default_value_t = DEFAULT_SUBSCRIBER_BUFFER)]
    pub subscriber_buffer: usize,

    /// Key prefixes to watch in every cluster and publish on the Subscribe stream
    /// (comma-separated; none by default — watching a whole Kubernetes keyspace is costly).
    #[arg(long = "watch-prefix", env = "WATCH_PREFIXES", value_delimiter = ',')]
    pub watch_prefixes: Vec<String>,

    /// Include previous values in watch events.
    #[arg(long, env = "WATCH_PREV_KV")]
    pub watch_prev_kv: bool,

    /// Alert rules (YAML file).
    #[arg(long, env = "RULES")]
    pub rules: Option<PathBuf>,

    /// YAML config file listing clusters (name, endpoints, TLS, auth, metrics URLs).
    #[arg(long, env = "ETCD_MONITOR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory of the history store (`history.db`).
    #[arg(
        long,
        env = "ETCD_MONITOR_DATA_DIR",
        default_value = DEFAULT_DATA_DIR
    )]
    pub data_dir: PathBuf,

    /// How long history is kept.
    #[arg(long, env = "ETCD_MONITOR_HISTORY_RETENTION", default_value = duration_default!(DEFAULT_HISTORY_RETENTION), value_parser = parse_duration)]
    pub history_retention: Duration,

    /// Size (MiB) above which the oldest history is deleted.
    #[arg(long, env = "ETCD_MONITOR_HISTORY_MAX_SIZE_MB", default_value_t = DEFAULT_HISTORY_MAX_SIZE_MB)]
    pub history_max_size_mb: u64,

    /// Members' Prometheus URLs, comma-separated: `NAME=URL` for a member by name, or a bare URL
    /// for the --endpoints entry at the same position. Default: `<client URL>/metrics`.
    #[arg(long, env = "ETCD_MONITOR_METRICS_URLS", value_delimiter = ',')]
    pub metrics_urls: Vec<String>,

    /// Origins allowed by CORS, comma-separated; `*` allows any. CORS allows reads only; a
    /// change whose `Origin` is neither this server nor listed here (`*` does not count) is
    /// refused. Empty disables CORS.
    #[arg(long, env = "ETCD_MONITOR_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    // --- REST access control, TLS and silence bounds (see `RestConfig`) ---
    /// Admin token file, `NAME=PATH` (repeatable, or comma-separated); a bare `PATH` is named
    /// `admin`. Changes (silences, benchmarks) need `Authorization: Bearer <token>`; the name is
    /// recorded as `created_by`. Without any, changes are accepted from loopback only.
    #[arg(
        long = "admin-token-file",
        env = "ADMIN_TOKEN_FILE",
        value_delimiter = ','
    )]
    pub admin_token_files: Vec<String>,

    /// Viewer token file, `NAME=PATH` (repeatable, or comma-separated). When any is given,
    /// reads (every route but /health, the OpenAPI document and the status page's files) need
    /// a viewer or admin token too; Prometheus scrapes /metrics with one as bearer token.
    #[arg(
        long = "viewer-token-file",
        env = "VIEWER_TOKEN_FILE",
        value_delimiter = ','
    )]
    pub viewer_token_files: Vec<String>,

    /// PEM certificate chain of the REST API and /metrics: serve HTTPS (needs --api-key-file).
    #[arg(long, env = "API_CERT_FILE")]
    pub api_cert_file: Option<PathBuf>,

    /// PEM private key of --api-cert-file.
    #[arg(long, env = "API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Longest a silence may last.
    #[arg(long, env = "SILENCE_MAX_DURATION", default_value = "7d", value_parser = parse_duration)]
    pub silence_max_duration: Duration,

    /// Most silences active at once; further ones are refused (409) until one ends.
    #[arg(long, env = "MAX_SILENCES", default_value_t = crate::analysis::alerting::silences::DEFAULT_MAX_ACTIVE)]
    pub max_silences: usize,
    // --- end of REST access control ---
    /// Measure read latency with a linearizable read on every member each health check.
    #[arg(long, env = "ETCD_MONITOR_PROBE_READ", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub probe_read: bool,

    /// Measure write latency with a put to `/etcd-monitor/probe/<member>` each health check.
    #[arg(long, env = "ETCD_MONITOR_PROBE_WRITE", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub probe_write: bool,

    /// Diagnosis windows and thresholds (`--diagnosis-*`).
    #[command(flatten)]
    pub diagnosis: crate::analysis::diagnosis::DiagnosisArgs,

    /// Leader election between collectors (`--ha-*`).
    #[command(flatten)]
    pub ha: crate::sources::ha::HaArgs,
    /// Admin operations: `--auto-defrag*`, snapshot and audit bounds.
    #[command(flatten)]
    pub admin: crate::ops::admin::flags::AdminFlags,
    /// The performance report's thresholds (`--report-threshold`).
    #[command(flatten)]
    pub report: crate::analysis::report::ReportArgs,

    /// Scheduled benchmarks (`--benchmark-schedule`, `BENCHMARK_ENABLED`, `BENCHMARK_INTERVAL`).
    #[command(flatten)]
    pub benchmark_schedule: crate::ops::bench::schedule::ScheduleArgs,

    /// Log format.
    #[arg(
        long,
        env = "ETCD_MONITOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// `--benchmark-ops`' help, its default written from [`crate::ops::bench::spec::DEFAULT_OPS`].
fn benchmark_ops_help() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "Number of benchmark operations (default {}, or the cap with --benchmark-duration)",
            crate::ops::bench::spec::DEFAULT_OPS
        )
    })
}

/// A benchmark requested on the command line.
#[derive(Debug, Clone)]
pub struct BenchmarkRequest {
    /// Operations.
    pub kind: BenchmarkType,
    /// Count (the cap in a timed run).
    pub ops: u64,
    /// Every parameter, validated.
    pub plan: crate::ops::bench::flags::BenchPlan,
}

/// Validated configuration of the whole collector.
#[derive(Debug, Clone)]
pub struct Config {
    /// Clusters, in order; the first is the one REST answers for without `?cluster=`.
    pub clusters: Vec<ClusterConfig>,
    /// REST and /metrics listen host.
    pub api_host: String,
    /// REST and /metrics listen port.
    pub api_port: u16,
    /// Health check period.
    pub health_interval: Duration,
    /// Scrape period.
    pub metrics_interval: Duration,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// gRPC port (agent ingest and Subscribe).
    pub grpc_port: u16,
    /// gRPC security, limits and watches.
    pub ingest: IngestConfig,
    /// Rules file.
    pub rules: Option<PathBuf>,
    /// Alert notification channels (the config file's `notifiers:`; console always).
    pub notifiers: Vec<crate::outputs::notify::ChannelConfig>,
    /// History store directory.
    pub data_dir: PathBuf,
    /// History retention by age.
    pub history_retention: Duration,
    /// History retention by size, bytes.
    pub history_max_bytes: u64,
    /// CORS origins (`*` = any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// REST access control, TLS and silence bounds.
    pub rest: RestConfig,
    /// Read probe on.
    pub probe_read: bool,
    /// Write probe on.
    pub probe_write: bool,
    /// `--run-benchmark`.
    pub benchmark: Option<BenchmarkRequest>,
    /// The benchmark REST API.
    pub benchmark_api: crate::ops::bench::flags::ApiSettings,
    /// Log format.
    pub log_format: LogFormat,
    /// Diagnosis windows and thresholds.
    pub diagnosis: crate::analysis::diagnosis::DiagnosisConfig,
    /// The leader election (`--ha-election`), `None` when off.
    pub ha: Option<crate::sources::ha::HaConfig>,
    /// Admin operations: automatic defrag, snapshot and audit bounds.
    pub admin: crate::ops::admin::flags::AdminConfig,
    /// The performance report's thresholds.
    pub report_thresholds: crate::analysis::report::ReportThresholds,
    /// Scheduled benchmarks (None = off).
    pub benchmark_schedule: Option<crate::ops::bench::schedule::ScheduleConfig>,
}

/// The REST API's access control, TLS and silence bounds, files already read.
#[derive(Debug, Clone, Default)]
pub struct RestConfig {
    /// Named tokens (secrets kept as digests only).
    pub tokens: Vec<crate::outputs::api::access::ApiToken>,
    /// Token files readable by group or others (warned about at start, and a gauge).
    pub insecure_token_files: Vec<PathBuf>,
    /// PEM certificate chain and key to serve HTTPS.
    pub tls: Option<RestTls>,
    /// `--silence-max-duration`, `--max-silences`.
    pub silences: crate::analysis::alerting::silences::SilenceLimits,
}

/// PEM files of the REST server's TLS.
#[derive(Clone)]
pub struct RestTls {
    /// Certificate chain.
    pub cert_pem: Vec<u8>,
    /// Private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for RestTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestTls")
            .field("cert_bytes", &self.cert_pem.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Whether a token name is usable: 1 to 64 of `[A-Za-z0-9_.@-]`.
fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
}

/// Whether `path` can be read by group or others.
#[cfg(unix)]
fn loosely_readable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}

#[cfg(not(unix))]
fn loosely_readable(_meta: &std::fs::Metadata) -> bool {
    false
}

impl Cli {
    /// Reads the token files, the REST TLS files and the silence bounds.
    fn rest_config(&self) -> Result<RestConfig, ConfigError> {
        let mut rest = RestConfig::default();
        self.read_api_tokens(&mut rest)?;
        rest.tls = self.rest_tls()?;
        rest.silences = self.silence_limits()?;
        Ok(rest)
    }

    /// Reads `--admin-token-file` and `--viewer-token-file` into `rest`'s tokens, refusing a
    /// short token, a name or a token used twice; notes files others can read.
    fn read_api_tokens(&self, rest: &mut RestConfig) -> Result<(), ConfigError> {
        use crate::{outputs::api::access::ApiToken, outputs::api::access::Role};
        let mut secrets: Vec<(String, String)> = Vec::new();
        for (flag, role, entries) in [
            ("--admin-token-file", Role::Admin, &self.admin_token_files),
            (
                "--viewer-token-file",
                Role::Viewer,
                &self.viewer_token_files,
            ),
        ] {
            for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
                let TokenFile {
                    name,
                    path,
                    loose,
                    secret,
                } = read_token_file(flag, role.as_str(), entry)?;
                if rest.tokens.iter().any(|t| t.name == name) {
                    return Err(ConfigError::new(
                        flag,
                        format!("the token name {name:?} is used twice; use NAME=PATH"),
                    ));
                }
                if secrets.iter().any(|(_, s)| *s == secret) {
                    return Err(ConfigError::new(
                        flag,
                        format!("{}: the same token is in two files", path.display()),
                    ));
                }
                if loose {
                    rest.insecure_token_files.push(path.clone());
                }
                rest.tokens.push(ApiToken::new(name.clone(), role, &secret));
                secrets.push((name, secret));
            }
        }
        Ok(())
    }

    /// Reads `--api-cert-file` and `--api-key-file` (both or neither) and checks they make a
    /// server configuration.
    fn rest_tls(&self) -> Result<Option<RestTls>, ConfigError> {
        match (&self.api_cert_file, &self.api_key_file) {
            (Some(cert), Some(key)) => {
                let tls = RestTls {
                    cert_pem: read_pem("", "api-cert-file", cert)?,
                    key_pem: read_pem("", "api-key-file", key)?,
                };
                crate::outputs::api::tls::server_config(&tls.cert_pem, &tls.key_pem).map_err(
                    |e| {
                        let text = e.to_string();
                        let (field, message) =
                            text.split_once(": ").unwrap_or(("--api-cert-file", &text));
                        ConfigError::new(field, message)
                    },
                )?;
                Ok(Some(tls))
            }
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::new(
                "--api-key-file",
                "is required with --api-cert-file",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "--api-cert-file",
                "is required with --api-key-file",
            )),
        }
    }

    /// Checks `--silence-max-duration` and `--max-silences`.
    fn silence_limits(
        &self,
    ) -> Result<crate::analysis::alerting::silences::SilenceLimits, ConfigError> {
        if self.silence_max_duration < Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "--silence-max-duration",
                "must be at least 1h",
            ));
        }
        if self.silence_max_duration > Duration::from_secs(366 * 86_400) {
            return Err(ConfigError::new(
                "--silence-max-duration",
                "must be at most 366d",
            ));
        }
        if self.max_silences == 0 || self.max_silences > 100_000 {
            return Err(ConfigError::new("--max-silences", "must be 1..=100000"));
        }
        Ok(crate::analysis::alerting::silences::SilenceLimits {
            max_duration: self.silence_max_duration,
            max_active: self.max_silences,
        })
    }
}

/// One REST token file read: the token's name, its path, whether others can read it, and the
/// secret.
struct TokenFile {
    name: String,
    path: PathBuf,
    loose: bool,
    secret: String,
}

/// Reads one `[NAME=]PATH` entry of `flag`; without a name the token is named `default_name`
/// (its role).
fn read_token_file(flag: &str, default_name: &str, entry: &str) -> Result<TokenFile, ConfigError> {
    let (name, path) = match entry.split_once('=') {
        Some((name, path)) if valid_token_name(name) => (name.to_string(), path),
        Some((name, _)) if !name.contains('/') => {
            return Err(ConfigError::new(
                flag,
                format!("{name:?} is not a token name (1 to 64 of A-Z a-z 0-9 _ . @ -)"),
            ));
        }
        _ => (default_name.to_string(), entry),
    };
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path)
        .map_err(|e| ConfigError::new(flag, format!("{}: {e}", path.display())))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new(flag, format!("{}: {e}", path.display())))?;
    let secret = text.trim().to_string();
    if secret.len() < 16 {
        return Err(ConfigError::new(
            flag,
            format!(
                "{}: the token must be at least 16 characters (e.g. `openssl rand -hex 32`)",
                path.display()
            ),
        ));
    }
    Ok(TokenFile {
        name,
        loose: loosely_readable(&meta),
        path,
        secret,
    })
}

/// The gRPC side's settings. `Debug` shows whether a token and TLS key are set, never them.
#[derive(Clone)]
pub struct IngestConfig {
    /// Bearer token required on AgentIngest calls.
    pub ingest_token: Option<String>,
    /// Bearer token required on EventStream calls.
    pub subscribe_token: Option<String>,
    /// Listen host (`--grpc-host`, else `--api-host`), resolved when the server starts.
    pub host: String,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Most calls in progress per connection.
    pub concurrency_per_connection: usize,
    /// Most open Subscribe streams.
    pub max_subscribers: usize,
    /// What agents may introduce.
    pub agent_limits: crate::sources::ingest::registry::AgentLimits,
    /// PEM certificate and key to serve TLS.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM CA for client certificates (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
    /// Largest batch, bytes.
    pub max_batch_bytes: usize,
    /// Events buffered per subscriber.
    pub subscriber_buffer: usize,
    /// Watched prefixes.
    pub watch_prefixes: Vec<String>,
    /// Previous values in watch events.
    pub watch_prev_kv: bool,
}

impl Default for IngestConfig {
    /// No security, no watches, and the flags' default limits.
    fn default() -> Self {
        Self {
            ingest_token: None,
            subscribe_token: None,
            host: DEFAULT_API_HOST.to_string(),
            max_concurrent_streams: DEFAULT_GRPC_MAX_CONCURRENT_STREAMS,
            concurrency_per_connection: DEFAULT_GRPC_CONCURRENCY_PER_CONNECTION,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            agent_limits: AgentLimits::DEFAULT,
            tls_identity: None,
            client_ca: None,
            max_batch_bytes: DEFAULT_GRPC_MAX_BATCH_BYTES,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            watch_prefixes: Vec::new(),
            watch_prev_kv: false,
        }
    }
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field(
                "ingest_token",
                &self.ingest_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "subscribe_token",
                &self.subscribe_token.as_ref().map(|_| "<redacted>"),
            )
            .field("host", &self.host)
            .field("tls", &self.tls_identity.is_some())
            .field("mutual_tls", &self.client_ca.is_some())
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field(
                "concurrency_per_connection",
                &self.concurrency_per_connection,
            )
            .field("max_subscribers", &self.max_subscribers)
            .field("agent_limits", &self.agent_limits)
            .field("subscriber_buffer", &self.subscriber_buffer)
            .field("watch_prefixes", &self.watch_prefixes)
            .field("watch_prev_kv", &self.watch_prev_kv)
            .finish()
    }
}

/// One cluster in the YAML config file. `Debug` redacts the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    /// Name.
    pub name: String,
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// CA bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip server certificate verification.
    #[serde(default)]
    pub insecure_skip_tls: bool,
    /// User.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// Prometheus URLs (same syntax as `--metrics-urls`).
    #[serde(default)]
    pub metrics_urls: Vec<String>,
    /// Dial timeout (humantime); default `--dial-timeout`.
    #[serde(default)]
    pub dial_timeout: Option<String>,
}

/// Only flags that are never secret, and whether a password was given: the other flags carry
/// no secret values (secrets come as files), but a flag added later may, so the list is
/// opt-in.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FileCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCluster")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("insecure_skip_tls", &self.insecure_skip_tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("metrics_urls", &self.metrics_urls)
            .field("dial_timeout", &self.dial_timeout)
            .finish()
    }
}

/// The YAML config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Clusters to monitor besides (or instead of) the one the flags describe.
    #[serde(default)]
    pub clusters: Vec<FileCluster>,
    /// Alert notification channels (see [`crate::outputs::notify::config`]); checked field by field
    /// in [`Cli::into_config`].
    #[serde(default)]
    pub notifiers: Vec<serde_yaml_ng::Value>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        serde_yaml_ng::from_str(&text)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))
    }
}

impl Cli {
    /// Checks and loads the gRPC settings.
    fn ingest_config(&self) -> Result<IngestConfig, ConfigError> {
        let (ingest_token, subscribe_token) = self.grpc_tokens()?;
        let (tls_identity, client_ca) = self.grpc_tls()?;
        self.check_plaintext_token(
            tls_identity.is_some(),
            ingest_token.is_some() || subscribe_token.is_some(),
        )?;
        let host = self.check_grpc_limits()?;
        let watch_prefixes: Vec<String> = self
            .watch_prefixes
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(IngestConfig {
            ingest_token,
            subscribe_token,
            host,
            max_concurrent_streams: self.grpc_max_concurrent_streams,
            concurrency_per_connection: self.grpc_concurrency_per_connection,
            max_subscribers: self.max_subscribers,
            agent_limits: crate::sources::ingest::registry::AgentLimits {
                max_agents: self.max_agents,
                max_members: self.max_members_per_agent,
                max_peers_per_member: self.max_peers_per_member,
                expiry: self.agent_expiry,
            },
            tls_identity,
            client_ca,
            max_batch_bytes: self.grpc_max_batch_bytes,
            subscriber_buffer: self.subscriber_buffer,
            watch_prefixes,
            watch_prev_kv: self.watch_prev_kv,
        })
    }

    /// The AgentIngest and EventStream tokens: each its own file, else `--grpc-token-file`.
    fn grpc_tokens(&self) -> Result<(Option<String>, Option<String>), ConfigError> {
        let both = read_grpc_token("--grpc-token-file", &self.grpc_token_file)?;
        let ingest_token =
            read_grpc_token("--grpc-ingest-token-file", &self.grpc_ingest_token_file)?
                .or_else(|| both.clone());
        let subscribe_token = read_grpc_token(
            "--grpc-subscribe-token-file",
            &self.grpc_subscribe_token_file,
        )?
        .or(both);
        Ok((ingest_token, subscribe_token))
    }

    /// The gRPC server's certificate and key (both or neither) and the client CA (only with
    /// them).
    fn grpc_tls(&self) -> Result<GrpcTls, ConfigError> {
        let tls_identity = match (&self.grpc_cert_file, &self.grpc_key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem("", "grpc-cert-file", cert)?,
                read_pem("", "grpc-key-file", key)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "--grpc-key-file",
                    "is required with --grpc-cert-file",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "--grpc-cert-file",
                    "is required with --grpc-key-file",
                ));
            }
        };
        let client_ca = match &self.grpc_client_ca_file {
            Some(_) if tls_identity.is_none() => {
                return Err(ConfigError::new(
                    "--grpc-client-ca-file",
                    "needs --grpc-cert-file and --grpc-key-file",
                ));
            }
            Some(path) => Some(read_pem("", "grpc-client-ca-file", path)?),
            None => None,
        };
        Ok((tls_identity, client_ca))
    }

    /// Refuses a gRPC token served without TLS unless `--grpc-allow-plaintext-token`.
    fn check_plaintext_token(&self, tls: bool, any_token: bool) -> Result<(), ConfigError> {
        if !tls && !self.grpc_allow_plaintext_token && any_token {
            let flag = if self.grpc_token_file.is_some() {
                "--grpc-token-file"
            } else if self.grpc_ingest_token_file.is_some() {
                "--grpc-ingest-token-file"
            } else {
                "--grpc-subscribe-token-file"
            };
            return Err(ConfigError::new(
                flag,
                "a token sent without TLS can be read by anyone on the path: serve TLS \
                 (--grpc-cert-file, --grpc-key-file) or accept the risk with \
                 --grpc-allow-plaintext-token",
            ));
        }
        Ok(())
    }

    /// Checks the batch size, the listen host and the ingest bounds; returns the listen host
    /// (`--grpc-host`, else `--api-host`).
    fn check_grpc_limits(&self) -> Result<String, ConfigError> {
        if !(64 * 1024..=64 << 20).contains(&self.grpc_max_batch_bytes) {
            return Err(ConfigError::new(
                "--grpc-max-batch-bytes",
                "must be 65536 to 67108864 (64 KiB to 64 MiB)",
            ));
        }
        let host = self
            .grpc_host
            .as_deref()
            .unwrap_or(&self.api_host)
            .trim()
            .to_string();
        if host.is_empty() {
            return Err(ConfigError::new("--grpc-host", "must not be empty"));
        }
        for (flag, value) in [
            (
                "--grpc-max-concurrent-streams",
                self.grpc_max_concurrent_streams as usize,
            ),
            (
                "--grpc-concurrency-per-connection",
                self.grpc_concurrency_per_connection,
            ),
            ("--max-subscribers", self.max_subscribers),
            ("--max-agents", self.max_agents),
            ("--max-members-per-agent", self.max_members_per_agent),
            ("--max-peers-per-member", self.max_peers_per_member),
        ] {
            if value == 0 {
                return Err(ConfigError::new(flag, "must be at least 1"));
            }
        }
        if self.agent_expiry < Duration::from_secs(10) {
            return Err(ConfigError::new("--agent-expiry", "must be at least 10s"));
        }
        if self.subscriber_buffer == 0 {
            return Err(ConfigError::new(
                "--subscriber-buffer",
                "must be at least 1",
            ));
        }
        Ok(host)
    }
}

/// The gRPC server's PEM certificate and key, and the PEM CA of client certificates.
type GrpcTls = (Option<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>);

/// Reads a gRPC bearer token from `path`: non-empty, printable ASCII (a header value).
fn read_grpc_token(flag: &str, path: &Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read(path)
        .map_err(|e| ConfigError::new(flag, format!("{}: {e}", path.display())))?;
    let token = String::from_utf8(text)
        .map_err(|_| ConfigError::new(flag, "is not UTF-8"))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(ConfigError::new(
            flag,
            format!("{} is empty", path.display()),
        ));
    }
    if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(ConfigError::new(
            flag,
            format!(
                "{} holds characters a gRPC header cannot carry (printable ASCII only)",
                path.display()
            ),
        ));
    }
    Ok(Some(token))
}

impl Cli {
    /// Validates every value (reading the config file and TLS files) into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let clusters = self.clusters_config(&file)?;
        self.check_thresholds_and_ports()?;
        let ingest = self.ingest_config()?;
        let bench_plan = self.bench.plan(self.benchmark_type, self.benchmark_ops)?;
        let benchmark_api = self.bench.api_settings();
        let rest = self.rest_config()?;
        self.check_history_and_rules()?;
        let notifiers = notifiers_config(&file)?;
        self.check_cors_origins()?;
        let subsystems = self.subsystems_config(&clusters)?;
        Ok(Config {
            ha: subsystems.ha,
            admin: subsystems.admin,
            diagnosis: subsystems.diagnosis,
            report_thresholds: subsystems.report_thresholds,
            benchmark_schedule: subsystems.benchmark_schedule,
            clusters,
            api_host: self.api_host,
            api_port: self.api_port,
            health_interval: self.health_check_interval,
            metrics_interval: self.metrics_interval,
            thresholds: Thresholds {
                max_latency_ms: self.max_latency_ms,
                max_db_size_mb: self.max_db_size_mb,
                min_available_nodes: self.min_available_nodes,
                max_leader_changes: self.max_leader_changes,
            },
            grpc_port: self.grpc_port,
            ingest,
            rules: self.rules,
            notifiers,
            data_dir: self.data_dir,
            history_retention: self.history_retention,
            history_max_bytes: self.history_max_size_mb.saturating_mul(1024 * 1024),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            rest,
            probe_read: self.probe_read,
            probe_write: self.probe_write,
            benchmark: self.run_benchmark.then_some(BenchmarkRequest {
                kind: self.benchmark_type,
                ops: bench_plan.spec.ops,
                plan: bench_plan,
            }),
            benchmark_api,
            log_format: self.log_format,
        })
    }

    /// The clusters: the one the flags describe (when `--endpoints` is given or the file has
    /// none) and the file's others; names must be unique.
    fn clusters_config(&self, file: &FileConfig) -> Result<Vec<ClusterConfig>, ConfigError> {
        let mut clusters = Vec::new();
        let flags_describe_cluster = self.endpoints.is_some() || file.clusters.is_empty();
        if flags_describe_cluster {
            let endpoints = self
                .endpoints
                .clone()
                .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]);
            clusters.push(validate_cluster(RawCluster {
                field: String::new(),
                name: DEFAULT_CLUSTER.to_string(),
                endpoints,
                ca_file: self.ca_file.as_deref(),
                cert_file: self.cert_file.as_deref(),
                key_file: self.key_file.as_deref(),
                insecure: self.insecure_skip_tls,
                username: self.username.clone(),
                password: self.password.clone(),
                metrics_urls: &self.metrics_urls,
                dial_timeout: self.dial_timeout,
            })?);
        }
        for (i, c) in file.clusters.iter().enumerate() {
            let field = format!("clusters[{i}].");
            if flags_describe_cluster && c.name == DEFAULT_CLUSTER {
                // Flags win over the file for the cluster they describe.
                continue;
            }
            let dial_timeout = match &c.dial_timeout {
                Some(s) => parse_duration(s)
                    .map_err(|e| ConfigError::new(format!("{field}dial_timeout"), e))?,
                None => self.dial_timeout,
            };
            clusters.push(validate_cluster(RawCluster {
                field,
                name: c.name.clone(),
                endpoints: c.endpoints.clone(),
                ca_file: c.ca_file.as_deref(),
                cert_file: c.cert_file.as_deref(),
                key_file: c.key_file.as_deref(),
                insecure: c.insecure_skip_tls,
                username: c.username.clone(),
                password: c.password.clone(),
                metrics_urls: &c.metrics_urls,
                dial_timeout,
            })?);
        }
        for (i, c) in clusters.iter().enumerate() {
            if clusters[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::new(
                    "--config",
                    format!("cluster name {:?} appears twice", c.name),
                ));
            }
        }
        Ok(clusters)
    }

    /// Checks the alert thresholds, the ports and `--api-host`.
    fn check_thresholds_and_ports(&self) -> Result<(), ConfigError> {
        if self.min_available_nodes == 0 {
            return Err(ConfigError::new(
                "--min-available-nodes",
                "must be at least 1",
            ));
        }
        if self.max_latency_ms == 0 {
            return Err(ConfigError::new("--max-latency-ms", "must be at least 1"));
        }
        if self.max_db_size_mb == 0 {
            return Err(ConfigError::new("--max-db-size-mb", "must be at least 1"));
        }
        if self.grpc_port == 0 {
            return Err(ConfigError::new("--grpc-port", "must be 1..65535"));
        }
        if self.api_port != 0 && self.grpc_port == self.api_port {
            return Err(ConfigError::new(
                "--grpc-port",
                format!("{} is also --api-port", self.grpc_port),
            ));
        }
        if self.api_host.trim().is_empty() {
            return Err(ConfigError::new("--api-host", "must not be empty"));
        }
        Ok(())
    }

    /// Checks `--history-max-size-mb` and that the `--rules` file exists.
    fn check_history_and_rules(&self) -> Result<(), ConfigError> {
        if self.history_max_size_mb == 0 {
            return Err(ConfigError::new(
                "--history-max-size-mb",
                "must be at least 1",
            ));
        }
        if let Some(rules) = &self.rules
            && let Err(e) = std::fs::metadata(rules)
        {
            return Err(ConfigError::new(
                "--rules",
                format!("{}: {e}", rules.display()),
            ));
        }
        Ok(())
    }

    /// Checks each `--cors-origins` value is `*` or a valid header value.
    fn check_cors_origins(&self) -> Result<(), ConfigError> {
        for origin in &self.cors_origins {
            let origin = origin.trim();
            if origin != "*" && origin.parse::<http::HeaderValue>().is_err() {
                return Err(ConfigError::new(
                    "--cors-origins",
                    format!("{origin:?} is not a valid origin"),
                ));
            }
        }
        Ok(())
    }

    /// Validates the configuration each subsystem owns (diagnosis, HA, admin, report,
    /// benchmark schedule).
    fn subsystems_config(&self, clusters: &[ClusterConfig]) -> Result<Subsystems, ConfigError> {
        let diagnosis = self
            .diagnosis
            .validate()
            .map_err(|(field, message)| ConfigError::new(field, message))?;
        let ha = self.ha.validate(clusters)?;
        let admin = self.admin.validate()?;
        let report_thresholds = self
            .report
            .validate()
            .map_err(|(field, message)| ConfigError::new(field, message))?;
        let benchmark_schedule = self
            .benchmark_schedule
            .validate(&|name| std::env::var(name).ok())?;
        Ok(Subsystems {
            diagnosis,
            ha,
            admin,
            report_thresholds,
            benchmark_schedule,
        })
    }
}

/// The configuration the subsystems validate themselves, for [`Config`].
struct Subsystems {
    diagnosis: crate::analysis::diagnosis::DiagnosisConfig,
    ha: Option<crate::sources::ha::HaConfig>,
    admin: crate::ops::admin::flags::AdminConfig,
    report_thresholds: crate::analysis::report::ReportThresholds,
    benchmark_schedule: Option<crate::ops::bench::schedule::ScheduleConfig>,
}

/// Parses and validates the config file's `notifiers`.
fn notifiers_config(
    file: &FileConfig,
) -> Result<Vec<crate::outputs::notify::ChannelConfig>, ConfigError> {
    crate::outputs::notify::config::parse(&file.notifiers)
        .and_then(|specs| crate::outputs::notify::config::validate(&specs))
        .map_err(|e| {
            let (field, message) = e.split_once(": ").unwrap_or(("notifiers", e.as_str()));
            ConfigError::new(field, message)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_in_any_debug_output() -> anyhow::Result<()> {
        const SECRET: &str = "hunter2-s3cr3t";
        let dir = tempfile::tempdir()?;
        let token = dir.path().join("token");
        std::fs::write(&token, SECRET)?;
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            format!(
                "clusters:\n- name: a\n  endpoints: [http://127.0.0.1:1]\n  username: root\n  password: {SECRET}\n"
            ),
        )?;
        let cli = Cli::try_parse_from([
            "etcd-monitor".to_string(),
            format!("--password={SECRET}"),
            "--username=root".to_string(),
            format!("--grpc-token-file={}", token.display()),
            "--grpc-allow-plaintext-token".to_string(),
            format!("--config={}", file.display()),
        ])?;
        let cli_debug = format!("{cli:?}");
        let config = cli.into_config()?;
        assert_eq!(
            config.ingest.ingest_token.as_deref(),
            Some(SECRET),
            "the token was read"
        );
        let ingest = IngestConfig {
            tls_identity: Some((b"CERT".to_vec(), SECRET.as_bytes().to_vec())),
            ..config.ingest.clone()
        };
        let file_config = FileConfig::load(&file)?;
        for text in [
            cli_debug,
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{ingest:?}"),
            format!("{file_config:?}"),
            format!("{:?}", config.clusters),
        ] {
            assert!(!text.contains(SECRET), "a secret in Debug output: {text}");
        }
        assert!(format!("{ingest:?}").contains("<redacted>"));
        Ok(())
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["etcd-monitor"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_contract() -> Result<(), String> {
        let c = parse(&[])?;
        assert_eq!(c.api_host, "0.0.0.0");
        assert_eq!(c.api_port, 8080);
        assert_eq!(c.health_interval, Duration::from_secs(30));
        assert_eq!(c.metrics_interval, Duration::from_secs(10));
        assert_eq!(c.thresholds.max_latency_ms, 100);
        assert_eq!(c.thresholds.max_db_size_mb, 8192);
        assert_eq!(c.thresholds.min_available_nodes, 2);
        assert_eq!(c.thresholds.max_leader_changes, 3);
        assert_eq!(c.grpc_port, 9464);
        assert_eq!(c.clusters.len(), 1);
        assert_eq!(c.clusters[0].name, DEFAULT_CLUSTER);
        assert_eq!(c.clusters[0].endpoints, vec![DEFAULT_ENDPOINT]);
        assert!(c.probe_read && c.probe_write);
        Ok(())
    }

    /// The flags' defaults are the engine's: what `--help` says is what runs.
    #[test]
    fn flag_defaults_are_the_config_types_defaults() -> Result<(), String> {
        let c = parse(&[])?;
        assert_eq!(
            c.diagnosis,
            crate::analysis::diagnosis::DiagnosisConfig::default()
        );
        assert_eq!(c.diagnosis.neighbor_share, 0.3);
        let t = Thresholds::default();
        assert_eq!(
            (
                c.thresholds.max_latency_ms,
                c.thresholds.max_db_size_mb,
                c.thresholds.min_available_nodes,
                c.thresholds.max_leader_changes
            ),
            (
                t.max_latency_ms,
                t.max_db_size_mb,
                t.min_available_nodes,
                t.max_leader_changes
            )
        );
        let i = IngestConfig::default();
        assert_eq!(c.ingest.max_batch_bytes, i.max_batch_bytes);
        assert_eq!(c.ingest.subscriber_buffer, i.subscriber_buffer);
        assert_eq!(c.history_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.clusters[0].dial_timeout, DEFAULT_DIAL_TIMEOUT);
        Ok(())
    }

    #[test]
    fn endpoints_are_normalised() -> Result<(), String> {
        let c = parse(&["--endpoints", "127.0.0.1:2379,http://localhost:2380/"])?;
        assert_eq!(
            c.clusters[0].endpoints,
            vec!["http://127.0.0.1:2379", "http://localhost:2380"]
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (
                vec!["--health-check-interval", "soon"],
                "--health-check-interval",
            ),
            (vec!["--metrics-interval", "0s"], "--metrics-interval"),
            (vec!["--api-port", "70000"], "--api-port"),
            (vec!["--endpoints", "ftp://x:1"], "--endpoints"),
            (vec!["--endpoints", "https://x:1"], "--ca-file"),
            (
                vec![
                    "--endpoints",
                    "https://x:1",
                    "--ca-file",
                    "/nonexistent/ca.pem",
                ],
                "--ca-file",
            ),
            (vec!["--min-available-nodes", "0"], "--min-available-nodes"),
            (vec!["--benchmark-type", "delete"], "--benchmark-type"),
            (vec!["--benchmark-ops", "0"], "--benchmark-ops"),
            (vec!["--benchmark-clients", "0"], "--benchmark-clients"),
            (vec!["--benchmark-duration", "soon"], "--benchmark-duration"),
            (vec!["--slo-p99-ms", "0"], "--slo-p99-ms"),
            (
                vec!["--admin-token-file", "/nonexistent/token"],
                "--admin-token-file",
            ),
            (
                vec!["--viewer-token-file", "bad name=/x"],
                "--viewer-token-file",
            ),
            (vec!["--api-cert-file", "/x.pem"], "--api-key-file"),
            (vec!["--api-key-file", "/x.pem"], "--api-cert-file"),
            (
                vec![
                    "--api-cert-file",
                    "/nonexistent/c.pem",
                    "--api-key-file",
                    "/x",
                ],
                "--api-cert-file",
            ),
            (
                vec!["--silence-max-duration", "1m"],
                "--silence-max-duration",
            ),
            (vec!["--max-silences", "0"], "--max-silences"),
            (vec!["--grpc-port", "0"], "--grpc-port"),
            (vec!["--grpc-host", " "], "--grpc-host"),
            (
                vec!["--grpc-max-batch-bytes", "1000"],
                "--grpc-max-batch-bytes",
            ),
            (vec!["--max-agents", "0"], "--max-agents"),
            (vec!["--max-subscribers", "0"], "--max-subscribers"),
            (vec!["--agent-expiry", "1s"], "--agent-expiry"),
            (vec!["--username", "root"], "--password"),
            (vec!["--rules", "/nonexistent/rules.yaml"], "--rules"),
            (vec!["--metrics-urls", "a,b"], "--metrics-urls"),
        ] {
            match parse(&args) {
                Ok(_) => panic!("{args:?} was accepted"),
                Err(e) => assert!(e.contains(flag), "{args:?}: {e}"),
            }
        }
    }

    #[test]
    fn named_token_files() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let admin = dir.path().join("ops-token");
        let viewer = dir.path().join("grafana-token");
        std::fs::write(&admin, "0123456789abcdef-admin\n").map_err(|e| e.to_string())?;
        std::fs::write(&viewer, "0123456789abcdef-viewer\n").map_err(|e| e.to_string())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            std::fs::set_permissions(&viewer, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
        let a = format!("ops={}", admin.display());
        let v = format!("grafana={}", viewer.display());
        let c = parse(&["--admin-token-file", &a, "--viewer-token-file", &v])?;
        let names: Vec<_> = c.rest.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["ops", "grafana"]);
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        #[cfg(unix)]
        assert_eq!(c.rest.insecure_token_files, vec![viewer.clone()]);
        // The single-path form of earlier releases: named `admin`.
        let bare = admin.display().to_string();
        let c = parse(&["--admin-token-file", &bare])?;
        assert_eq!(c.rest.tokens[0].name, "admin");
        // One secret under two names, or a short secret, is refused.
        let err = parse(&[
            "--admin-token-file",
            &a,
            "--viewer-token-file",
            &format!("x={}", admin.display()),
        ])
        .err()
        .unwrap_or_default();
        assert!(err.contains("--viewer-token-file"), "{err}");
        std::fs::write(&viewer, "short").map_err(|e| e.to_string())?;
        let err = parse(&["--viewer-token-file", &v])
            .err()
            .unwrap_or_default();
        assert!(err.contains("at least 16"), "{err}");
        Ok(())
    }

    #[test]
    fn metrics_urls_by_name_and_position() -> Result<(), String> {
        let c = parse(&[
            "--endpoints",
            "http://a:1,http://b:2",
            "--metrics-urls",
            "http://a:9/metrics,m2=http://c:3/metrics",
        ])?;
        assert_eq!(
            c.clusters[0].metrics_urls,
            vec![
                (
                    MetricsTarget::Endpoint("http://a:1".into()),
                    "http://a:9/metrics".into()
                ),
                (
                    MetricsTarget::Member("m2".into()),
                    "http://c:3/metrics".into()
                ),
            ]
        );
        Ok(())
    }

    #[test]
    fn config_file_adds_clusters_and_flags_win() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "clusters:\n  - name: default\n    endpoints: [http://ignored:1]\n  - name: east\n    endpoints: [http://e:2379]\n    dial_timeout: 2s\n",
        )
        .map_err(|e| e.to_string())?;
        let path_str = path.display().to_string();
        let c = parse(&["--config", &path_str, "--endpoints", "http://d:2379"])?;
        let names: Vec<_> = c.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["default", "east"]);
        assert_eq!(c.clusters[0].endpoints, vec!["http://d:2379"]);
        assert_eq!(c.clusters[1].dial_timeout, Duration::from_secs(2));
        let only_file = parse(&["--config", &path_str])?;
        assert_eq!(only_file.clusters.len(), 2);
        assert_eq!(only_file.clusters[0].endpoints, vec!["http://ignored:1"]);

        std::fs::write(&path, "clusters:\n  - name: x\n    endpoint: [a]\n")
            .map_err(|e| e.to_string())?;
        let err = parse(&["--config", &path_str]).err().unwrap_or_default();
        assert!(err.contains("--config") && err.contains("c.yaml"), "{err}");
        Ok(())
    }

    #[test]
    fn grpc_tokens_split_by_role_and_plaintext_needs_consent() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let write = |name: &str, text: &str| -> Result<String, String> {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
            Ok(path.display().to_string())
        };
        let both = write("both", "b0th\n")?;
        let ingest = write("ingest", "ingest-token")?;
        let err = parse(&["--grpc-token-file", &both])
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("--grpc-token-file") && err.contains("--grpc-allow-plaintext-token"),
            "{err}"
        );
        let c = parse(&[
            "--grpc-token-file",
            &both,
            "--grpc-ingest-token-file",
            &ingest,
            "--grpc-allow-plaintext-token",
        ])?;
        assert_eq!(c.ingest.ingest_token.as_deref(), Some("ingest-token"));
        assert_eq!(c.ingest.subscribe_token.as_deref(), Some("b0th"));
        assert!(
            !format!("{:?}", c.ingest).contains("b0th"),
            "tokens stay out of Debug"
        );
        let c = parse(&["--api-host", "::1"])?;
        assert_eq!(c.ingest.host, "::1", "--grpc-host defaults to --api-host");
        assert_eq!(c.ingest.max_batch_bytes, 4 << 20);
        Ok(())
    }
}
