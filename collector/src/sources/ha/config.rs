//! The HA flags (`--ha-*`, flattened into the collector's `Cli`) and their validation.

use std::time::Duration;

use clap::{ArgAction, Args};

use crate::model::config::{ClusterConfig, ConfigError, duration_default};

/// `--ha-prefix`.
pub const DEFAULT_PREFIX: &str = "/etcd-monitor/ha";
/// `--ha-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Longest `--ha-id`.
pub const MAX_ID_LEN: usize = 128;

/// Flags of the leader election between collectors.
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// Run as one of several collectors: all serve REST, /metrics and Subscribe; the one elected
    /// leader (an etcd lease-backed election) alone sends notifications and runs scheduled work.
    #[arg(long, env = "ETCD_MONITOR_HA_ELECTION", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub ha_election: bool,

    /// etcd endpoints of the election, comma-separated (default: the first configured
    /// cluster's endpoints, with its TLS and auth settings).
    #[arg(long, env = "ETCD_MONITOR_HA_ENDPOINTS", value_delimiter = ',')]
    pub ha_endpoints: Vec<String>,

    /// Key prefix of the election and of the notification state the leader hands over.
    #[arg(long, env = "ETCD_MONITOR_HA_PREFIX", default_value = DEFAULT_PREFIX)]
    pub ha_prefix: String,

    /// Lease TTL of the leader: a dead leader is replaced within it (whole seconds, 2s to 5m).
    #[arg(long, env = "ETCD_MONITOR_HA_TTL", default_value = duration_default!(DEFAULT_TTL),
          value_parser = crate::model::time::parse_duration)]
    pub ha_ttl: Duration,

    /// This collector's name in the election (default: hostname-pid; the pod name in Kubernetes).
    #[arg(long, env = "ETCD_MONITOR_HA_ID")]
    pub ha_id: Option<String>,
}

/// The election's settings, validated.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Connection settings (endpoints, TLS, auth, dial timeout) of the election's etcd.
    pub etcd: ClusterConfig,
    /// Key prefix, without a trailing `/`.
    pub prefix: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// This collector's name.
    pub id: String,
}

impl HaConfig {
    /// The election's key prefix.
    pub fn election_key(&self) -> String {
        format!("{}/election", self.prefix)
    }

    /// The prefix of the notified-state keys.
    pub fn notified_key(&self) -> String {
        format!("{}/notified/", self.prefix)
    }
}

/// `hostname-pid`.
pub fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "collector".to_string());
    format!("{host}-{}", std::process::id())
}

impl HaArgs {
    /// Checks the flags against the configured clusters (the first one gives the default
    /// endpoints and the TLS/auth settings); `None` when the election is off. The error names
    /// the flag.
    pub fn validate(&self, clusters: &[ClusterConfig]) -> Result<Option<HaConfig>, ConfigError> {
        if !self.ha_election {
            return Ok(None);
        }
        let secs = self.ha_ttl.as_secs();
        if self.ha_ttl.subsec_nanos() != 0 || !(2..=300).contains(&secs) {
            return Err(ConfigError::new(
                "--ha-ttl",
                format!(
                    "{:?} must be whole seconds from 2s to 5m (an etcd lease TTL)",
                    self.ha_ttl
                ),
            ));
        }
        let prefix = self.ha_prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "--ha-prefix",
                format!(
                    "{:?} must be an absolute key prefix such as {DEFAULT_PREFIX}",
                    self.ha_prefix
                ),
            ));
        }
        let id = self.ha_id.clone().unwrap_or_else(default_id);
        if id.is_empty()
            || id.len() > MAX_ID_LEN
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
        {
            return Err(ConfigError::new(
                "--ha-id",
                format!("{id:?} must be 1 to {MAX_ID_LEN} characters of [A-Za-z0-9-_.:@]"),
            ));
        }
        let Some(first) = clusters.first() else {
            return Err(ConfigError::new(
                "--ha-endpoints",
                "no cluster is configured to take the election's endpoints from",
            ));
        };
        let mut etcd = first.clone();
        if !self.ha_endpoints.is_empty() {
            let tls = etcd.tls.is_some();
            etcd.endpoints = self
                .ha_endpoints
                .iter()
                .map(|e| {
                    crate::sources::etcd::endpoint::normalize_endpoint(e.trim(), tls)
                        .map_err(|m| ConfigError::new("--ha-endpoints", format!("{e:?}: {m}")))
                })
                .collect::<Result<_, _>>()?;
        }
        etcd.name = "ha".to_string();
        Ok(Some(HaConfig {
            etcd,
            prefix: prefix.to_string(),
            ttl: self.ha_ttl,
            id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> HaArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            ha: HaArgs,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(extra);
        <Cli as clap::Parser>::try_parse_from(argv)
            .map(|c| c.ha)
            .expect("flags parse")
    }

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            name: "default".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            tls: None,
            auth: None,
            metrics_urls: vec![],
            dial_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn off_by_default_and_defaults_when_on() {
        assert!(args(&[]).validate(&[cluster()]).expect("valid").is_none());
        let c = args(&["--ha-election"])
            .validate(&[cluster()])
            .expect("valid")
            .expect("on");
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.etcd.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert!(
            c.id.ends_with(&format!("-{}", std::process::id())),
            "{}",
            c.id
        );
        let c = args(&[
            "--ha-election",
            "--ha-endpoints=10.0.0.1:2379",
            "--ha-id=a",
            "--ha-prefix=/x/",
        ])
        .validate(&[cluster()])
        .expect("valid")
        .expect("on");
        assert_eq!(c.etcd.endpoints, vec!["http://10.0.0.1:2379".to_string()]);
        assert_eq!((c.id.as_str(), c.prefix.as_str()), ("a", "/x"));
        assert_eq!(c.notified_key(), "/x/notified/");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flags, field) in [
            (&["--ha-election", "--ha-ttl=1s"][..], "--ha-ttl"),
            (&["--ha-election", "--ha-ttl=1500ms"][..], "--ha-ttl"),
            (
                &["--ha-election", "--ha-prefix=relative"][..],
                "--ha-prefix",
            ),
            (&["--ha-election", "--ha-prefix=/"][..], "--ha-prefix"),
            (&["--ha-election", "--ha-id=a b"][..], "--ha-id"),
            (
                &["--ha-election", "--ha-endpoints=ftp://x:1"][..],
                "--ha-endpoints",
            ),
        ] {
            let err = args(flags).validate(&[cluster()]).expect_err("invalid");
            assert_eq!(err.field, field, "{flags:?}: {}", err.message);
        }
    }
}
