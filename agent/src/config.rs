//! Command-line flags and environment of `etcd-monitor-agent`, validated once at start-up.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

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
    /// Collector gRPC endpoint the agent ships events to.
    #[arg(long, env = "COLLECTOR", value_name = "URL")]
    pub collector: Option<String>,

    /// Name of this node, sent with every batch (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// auto | ebpf | client-only.
    #[arg(long, env = "AGENT_MODE", value_enum, default_value = "auto")]
    pub mode: ModeRequest,

    /// Regular expression matched against a process's full command line to find etcd processes
    /// (default: processes whose executable is named `etcd`).
    #[arg(long = "match", env = "MATCH", value_name = "REGEX")]
    pub match_pattern: Option<String>,

    /// Address for `/metrics` and `/healthz`.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:9465")]
    pub listen: SocketAddr,

    /// How often to rescan /proc for etcd processes (exec/exit events also trigger a rescan).
    #[arg(long, env = "RESCAN_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub rescan_interval: Duration,

    /// Events shorter than this skip the ring buffer; histograms still count every call.
    #[arg(long, env = "MIN_DURATION", value_parser = humantime::parse_duration, default_value = "0s")]
    pub min_duration: Duration,

    /// Ring buffer size in bytes: a power of two and a multiple of the page size.
    #[arg(long, env = "RINGBUF_BYTES", default_value_t = 1 << 22)]
    pub ringbuf_bytes: u32,

    /// Root of the proc filesystem to read (a host mount in a container).
    #[arg(long, env = "PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,

    /// text | json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
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
    /// `--collector` is not an http(s) URL.
    #[error("--collector={0:?}: must start with http:// or https://")]
    Collector(String),
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
        if let Some(url) = &self.collector
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Collector(url.clone()));
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
    fn defaults_are_valid() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.mode, ModeRequest::Auto);
        assert_eq!(config.listen.port(), 9465);
        assert_eq!(config.rescan_interval, Duration::from_secs(5));
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
    }
}
