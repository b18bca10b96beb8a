//! Command-line flags and environment of `etcd-monitor-agent`, validated once at start-up.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::OnceLock,
    time::Duration,
};

use clap::{Parser, ValueEnum};

// Every default is written once, here: clap shows it in `--help` (and so in
// docs/configuration.md) from the same constant the agent runs with.

/// Default of `--listen`: `/metrics` and `/healthz` on every address, port 9465.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9465));
/// `--rescan-interval`.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// `--min-duration`.
pub const DEFAULT_MIN_DURATION: Duration = Duration::from_millis(1);
/// `--sync-min-duration`: every sync goes through.
pub const DEFAULT_SYNC_MIN_DURATION: Duration = Duration::ZERO;
/// `--ringbuf-bytes`: 4 MiB.
pub const DEFAULT_RINGBUF_BYTES: u32 = 1 << 22;
/// `--proc-root`.
pub const DEFAULT_PROC_ROOT: &str = "/proc";
/// `--batch-max-events`.
pub const DEFAULT_BATCH_MAX_EVENTS: u32 = 1024;
/// `--batch-interval`.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// `--queue-bytes`: 64 MiB.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;
/// `--status-interval`.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// The `[default: …]` text of a duration flag, formatted once (humantime) from its constant.
macro_rules! duration_default {
    ($d:expr) => {{
        static TEXT: OnceLock<String> = OnceLock::new();
        TEXT.get_or_init(|| humantime::format_duration($d).to_string())
            .as_str()
    }};
}

/// `--probes`' default: every group of [`crate::probes::ProbeGroup::ALL`], comma-separated.
fn default_probes() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        crate::probes::ProbeGroup::ALL
            .iter()
            .filter_map(|g| g.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// How much of the kernel side to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeRequest {
    /// Use eBPF when this kernel and these privileges allow it, else run client-only.
    Auto,
    /// Require eBPF; exit non-zero when it cannot be loaded.
    Ebpf,
    /// Never load eBPF: discover etcd processes and serve metrics only.
    ClientOnly,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for DaemonSet log pipelines).
    Json,
}

/// `etcd-monitor-agent` flags. Every flag can also be set by the environment variable named.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "etcd-monitor-agent",
    version,
    about = "Traces etcd's disk path with eBPF and exports it"
)]
pub struct Config {
    /// Collector gRPC endpoint(s) the agent ships events to; repeatable or comma-separated
    /// (at most 8). The agent ships every batch to each; a DNS name resolving to several
    /// addresses (a headless Service) is re-resolved every 30 s and shipped to each address.
    #[arg(long, env = "COLLECTOR", value_name = "URL", value_delimiter = ',')]
    pub collector: Vec<String>,

    /// Name of this node, sent with every batch (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// auto | ebpf | client-only.
    #[arg(long, env = "AGENT_MODE", value_enum, default_value_t = ModeRequest::Auto)]
    pub mode: ModeRequest,

    /// Regular expression matched against a process's full command line to find etcd processes
    /// (default: processes whose executable is named `etcd`).
    #[arg(long = "match", env = "MATCH", value_name = "REGEX")]
    pub match_pattern: Option<String>,

    /// Address for `/metrics` and `/healthz`.
    #[arg(long, env = "LISTEN", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// How often to rescan /proc for etcd processes (exec/exit events also trigger a rescan).
    #[arg(long, env = "RESCAN_INTERVAL", value_parser = humantime::parse_duration, default_value = duration_default!(DEFAULT_RESCAN_INTERVAL))]
    pub rescan_interval: Duration,

    /// Write-family events (write, pwrite64, writev, pwritev) shorter than this skip the ring
    /// buffer, so per-event detail costs little; histograms still count every call.
    #[arg(long, env = "MIN_DURATION", value_parser = humantime::parse_duration, default_value = duration_default!(DEFAULT_MIN_DURATION))]
    pub min_duration: Duration,

    /// The same threshold for the sync family (fdatasync, fsync, sync_file_range): by default
    /// every sync goes through.
    #[arg(long, env = "SYNC_MIN_DURATION", value_parser = humantime::parse_duration, default_value = duration_default!(DEFAULT_SYNC_MIN_DURATION))]
    pub sync_min_duration: Duration,

    /// Ring buffer size in bytes: a power of two and a multiple of the page size.
    #[arg(long, env = "RINGBUF_BYTES", default_value_t = DEFAULT_RINGBUF_BYTES)]
    pub ringbuf_bytes: u32,

    /// Root of the proc filesystem to read (a host mount in a container).
    #[arg(long, env = "PROC_ROOT", default_value = DEFAULT_PROC_ROOT)]
    pub proc_root: PathBuf,

    /// PEM CA bundle to verify the collector's certificate (enables TLS).
    #[arg(long, env = "COLLECTOR_CA_FILE")]
    pub collector_ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with the collector.
    #[arg(long, env = "COLLECTOR_CERT_FILE", requires = "collector_key_file")]
    pub collector_cert_file: Option<PathBuf>,

    /// PEM key of `--collector-cert-file`.
    #[arg(long, env = "COLLECTOR_KEY_FILE", requires = "collector_cert_file")]
    pub collector_key_file: Option<PathBuf>,

    /// TLS server name of the collector, when it differs from the URL's host.
    #[arg(long, env = "COLLECTOR_SERVER_NAME")]
    pub collector_server_name: Option<String>,

    /// File holding the bearer token the collector expects (the token is never logged).
    #[arg(long, env = "COLLECTOR_TOKEN_FILE")]
    pub collector_token_file: Option<PathBuf>,

    /// Send --collector-token-file's token over an `http://` collector URL (anyone on the path
    /// can read it); without this flag a token needs an `https://` URL.
    #[arg(long, env = "ALLOW_PLAINTEXT_TOKEN")]
    pub allow_plaintext_token: bool,

    /// Events per batch at most.
    #[arg(long, env = "BATCH_MAX_EVENTS", default_value_t = DEFAULT_BATCH_MAX_EVENTS, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub batch_max_events: u32,

    /// A batch leaves after this long even when not full.
    #[arg(long, env = "BATCH_INTERVAL", value_parser = humantime::parse_duration, default_value = duration_default!(DEFAULT_BATCH_INTERVAL))]
    pub batch_interval: Duration,

    /// Memory cap of the queue of batches waiting for the collector; the oldest are dropped
    /// (and counted) beyond it.
    #[arg(long, env = "QUEUE_BYTES", default_value_t = DEFAULT_QUEUE_BYTES, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub queue_bytes: u64,

    /// How often the exact kernel counters are sent to the collector.
    #[arg(long, env = "STATUS_INTERVAL", value_parser = humantime::parse_duration, default_value = duration_default!(DEFAULT_STATUS_INTERVAL))]
    pub status_interval: Duration,

    /// Probe groups to attach: sync (always), write, fd, process, net, recv, block, sched.
    /// Fewer groups cost etcd less and show less.
    #[arg(
        long,
        env = "PROBES",
        value_enum,
        value_delimiter = ',',
        default_value = default_probes()
    )]
    pub probes: Vec<crate::probes::ProbeGroup>,

    /// text | json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A flag value that parsed but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--ringbuf-bytes` is not a power of two of at least one page.
    #[error("--ringbuf-bytes={0}: must be a power of two and at least 4096")]
    RingbufBytes(u32),
    /// `--match` is not a valid regular expression.
    #[error("--match={pattern:?}: {source}")]
    Match {
        /// The pattern given.
        pattern: String,
        /// Why it does not compile.
        source: regex::Error,
    },
    /// A file flag names a file we cannot read.
    #[error("{flag}={path}: {source}")]
    File {
        /// The flag that names the file, e.g. `--ca-file`.
        flag: &'static str,
        /// The path given.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `--probes` lacks the sync group.
    #[error("--probes must include sync (the WAL and bbolt durability path)")]
    ProbesWithoutSync,
    /// A duration flag is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// A token would be sent in plaintext without consent.
    #[error(
        "--collector-token-file: the token would cross the network in plaintext to {0}; use an https:// --collector URL or pass --allow-plaintext-token"
    )]
    PlaintextToken(String),
    /// A `--collector` value is not an http(s) URL, or there are too many.
    #[error(transparent)]
    Collector(#[from] crate::ship::fanout::TargetError),
}

impl Config {
    /// Checks the values clap cannot check by type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ringbuf_bytes < 4096 || !self.ringbuf_bytes.is_power_of_two() {
            return Err(ConfigError::RingbufBytes(self.ringbuf_bytes));
        }
        if let Some(pattern) = &self.match_pattern {
            regex::Regex::new(pattern).map_err(|source| ConfigError::Match {
                pattern: pattern.clone(),
                source,
            })?;
        }
        if !self.collector.is_empty() {
            crate::ship::fanout::parse_targets(&self.collector)?;
        }
        if !self.probes.contains(&crate::probes::ProbeGroup::Sync) {
            return Err(ConfigError::ProbesWithoutSync);
        }
        for (flag, value) in [
            ("--batch-interval", self.batch_interval),
            ("--status-interval", self.status_interval),
            ("--rescan-interval", self.rescan_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(flag));
            }
        }
        if let (Some(_), Some(url)) = (
            &self.collector_token_file,
            self.collector.iter().find(|u| u.starts_with("http://")),
        ) && !self.allow_plaintext_token
        {
            return Err(ConfigError::PlaintextToken(url.clone()));
        }
        for (flag, path) in [
            ("--collector-ca-file", &self.collector_ca_file),
            ("--collector-cert-file", &self.collector_cert_file),
            ("--collector-key-file", &self.collector_key_file),
            ("--collector-token-file", &self.collector_token_file),
        ] {
            if let Some(path) = path {
                std::fs::metadata(path).map_err(|source| ConfigError::File {
                    flag,
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// The node name: `--node-name`, else the host name, else `unknown`.
    pub fn node_name(&self) -> String {
        if let Some(name) = &self.node_name {
            return name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["etcd-monitor-agent"];
        all.extend_from_slice(args);
        let config = Config::try_parse_from(all).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn collectors_are_repeatable_comma_separated_and_bounded() {
        let config = parse(&[
            "--collector=http://a:1,http://b:2",
            "--collector=https://c:3",
        ])
        .expect("three collectors");
        assert_eq!(config.collector.len(), 3);
        let nine = (0..9)
            .map(|i| format!("http://c{i}:1"))
            .collect::<Vec<_>>()
            .join(",");
        let err = parse(&[&format!("--collector={nine}")]).expect_err("nine collectors");
        assert!(
            err.contains("--collector") && err.contains("at most 8"),
            "{err}"
        );
        let err = parse(&["--collector=http://a:1,b:2"]).expect_err("second is not a URL");
        assert!(err.contains("--collector=\"b:2\""), "{err}");
    }

    #[test]
    fn a_token_over_plaintext_needs_consent() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret").map_err(|e| e.to_string())?;
        let token_flag = format!("--collector-token-file={}", token.display());
        let refused = parse(&["--collector=http://c:9464", &token_flag])
            .expect_err("a token over http:// is refused");
        assert!(refused.contains("--allow-plaintext-token"), "{refused}");
        parse(&[
            "--collector=http://c:9464",
            &token_flag,
            "--allow-plaintext-token",
        ])?;
        parse(&["--collector=https://c:9464", &token_flag])?;
        Ok(())
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.mode, ModeRequest::Auto);
        assert_eq!(config.listen.port(), 9465);
        assert_eq!(config.rescan_interval, DEFAULT_RESCAN_INTERVAL);
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.sync_min_duration, Duration::ZERO);
        assert_eq!(config.batch_interval, DEFAULT_BATCH_INTERVAL);
        assert_eq!(config.queue_bytes, DEFAULT_QUEUE_BYTES);
        assert_eq!(config.probes, crate::probes::ProbeGroup::ALL.to_vec());
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(
            parse(&["--ringbuf-bytes=5000"])
                .unwrap_err()
                .contains("--ringbuf-bytes")
        );
        assert!(parse(&["--match=("]).unwrap_err().contains("--match"));
        assert!(
            parse(&["--collector=grpc://x"])
                .unwrap_err()
                .contains("--collector")
        );
        assert!(parse(&["--mode=fast"]).unwrap_err().contains("--mode"));
        assert!(
            parse(&["--rescan-interval=soon"])
                .unwrap_err()
                .contains("--rescan-interval")
        );
        for (args, flag) in [
            (&["--batch-interval=0s"][..], "--batch-interval"),
            (
                &["--collector-ca-file=/nonexistent/ca.pem"][..],
                "--collector-ca-file",
            ),
            (&["--batch-max-events=0"][..], "--batch-max-events"),
            (&["--queue-bytes=10"][..], "--queue-bytes"),
            (&["--probes=write,net"][..], "--probes"),
            (&["--probes=sync,disk"][..], "--probes"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
