//! The benchmark's command-line flags (flattened into the collector's `Cli`) and their
//! validation into a [`BenchPlan`] and the REST API's [`ApiSettings`].

use std::path::PathBuf;

use clap::{ArgAction, Args, ValueEnum};

use crate::{
    model::config::ConfigError, model::config::default_text, ops::bench::spec::BenchSpec,
    ops::bench::spec::BenchmarkType, ops::bench::spec::Consistency,
    ops::bench::spec::DEFAULT_CLIENTS, ops::bench::spec::DEFAULT_CONNS,
    ops::bench::spec::DEFAULT_CONSISTENCY, ops::bench::spec::DEFAULT_KEY_ORDER,
    ops::bench::spec::DEFAULT_KEY_SIZE, ops::bench::spec::DEFAULT_KEY_SPACE,
    ops::bench::spec::DEFAULT_MAX_OPS, ops::bench::spec::DEFAULT_READ_RATIO,
    ops::bench::spec::DEFAULT_TARGET, ops::bench::spec::DEFAULT_VALUE_SIZE,
    ops::bench::spec::KeyOrder, ops::bench::spec::RawSpec, ops::bench::spec::Target,
};

/// The command-line spelling of an enum default.
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Flags of `--run-benchmark` and of the benchmark REST API.
#[derive(Debug, Clone, Args)]
pub struct BenchFlags {
    /// Benchmark: concurrent requests in flight.
    #[arg(long, env = "BENCHMARK_CLIENTS", default_value = default_text!(DEFAULT_CLIENTS.to_string()))]
    pub benchmark_clients: Option<usize>,

    /// Benchmark: gRPC connections the clients share.
    #[arg(long, env = "BENCHMARK_CONNS", default_value = default_text!(DEFAULT_CONNS.to_string()))]
    pub benchmark_conns: Option<usize>,

    /// Benchmark: run this long (`30s`) instead of --benchmark-ops operations.
    #[arg(long, env = "BENCHMARK_DURATION")]
    pub benchmark_duration: Option<String>,

    /// Benchmark: total requests per second across all clients (default: unlimited).
    #[arg(long, env = "BENCHMARK_RATE")]
    pub benchmark_rate: Option<f64>,

    /// Benchmark: bytes of each key after the run's prefix.
    #[arg(long, env = "BENCHMARK_KEY_SIZE", default_value = default_text!(DEFAULT_KEY_SIZE.to_string()))]
    pub benchmark_key_size: Option<usize>,

    /// Benchmark: bytes of each value.
    #[arg(long, env = "BENCHMARK_VALUE_SIZE", default_value = default_text!(DEFAULT_VALUE_SIZE.to_string()))]
    pub benchmark_value_size: Option<usize>,

    /// Benchmark: distinct keys.
    #[arg(long, env = "BENCHMARK_KEY_SPACE", default_value = default_text!(DEFAULT_KEY_SPACE.to_string()))]
    pub benchmark_key_space: Option<u64>,

    /// Benchmark: key order.
    #[arg(long, env = "BENCHMARK_KEY_ORDER", value_enum, default_value = default_text!(value_name(DEFAULT_KEY_ORDER)))]
    pub benchmark_key_order: Option<KeyOrder>,

    /// Benchmark: read consistency (`linearizable`/`l` or `serializable`/`s`).
    #[arg(long, env = "BENCHMARK_CONSISTENCY", value_enum, default_value = default_text!(value_name(DEFAULT_CONSISTENCY)))]
    pub benchmark_consistency: Option<Consistency>,

    /// Benchmark: share of reads in a mixed run, 0..=1.
    #[arg(long, env = "BENCHMARK_READ_RATIO", default_value = default_text!(DEFAULT_READ_RATIO.to_string()))]
    pub benchmark_read_ratio: Option<f64>,

    /// Benchmark: send to the leader only, or spread over all endpoints.
    #[arg(long, env = "BENCHMARK_TARGET", value_enum, default_value = default_text!(value_name(DEFAULT_TARGET)))]
    pub benchmark_target: Option<Target>,

    /// Benchmark: per-request timeout (default --dial-timeout).
    #[arg(long, env = "BENCHMARK_TIMEOUT")]
    pub benchmark_timeout: Option<String>,

    /// Benchmark: cap on operations of one run (CLI and REST).
    #[arg(long, env = "BENCHMARK_MAX_OPS", default_value_t = DEFAULT_MAX_OPS)]
    pub benchmark_max_ops: u64,

    /// Benchmark: write the report as JSON to this file (`-` for stdout, after the text).
    #[arg(long, env = "BENCHMARK_JSON")]
    pub benchmark_json: Option<PathBuf>,

    /// Benchmark: write the per-second series as CSV to this file.
    #[arg(long, env = "BENCHMARK_CSV")]
    pub benchmark_csv: Option<PathBuf>,

    /// Benchmark: leave the keys under the run's prefix (for verification; delete them yourself).
    #[arg(long, env = "BENCHMARK_KEEP_KEYS")]
    pub benchmark_keep_keys: bool,

    /// Benchmark: use this run id (keys under `/etcd-monitor-bench/<id>/`) instead of a fresh
    /// one; the run still refuses to start when that prefix holds keys.
    #[arg(long, env = "BENCHMARK_RUN_ID")]
    pub benchmark_run_id: Option<String>,

    /// Benchmark SLO: exit non-zero (FAIL) when p99 latency exceeds this many milliseconds.
    #[arg(long, env = "SLO_P99_MS")]
    pub slo_p99_ms: Option<f64>,

    /// Benchmark SLO: exit non-zero (FAIL) when successful requests/s fall below this.
    #[arg(long, env = "SLO_MIN_RPS")]
    pub slo_min_rps: Option<f64>,

    /// Allow `POST /api/v1/performance/benchmark` (admin role: a token from
    /// --admin-token-file, or loopback when no admin token is configured).
    #[arg(long, env = "ENABLE_BENCHMARK_API", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub enable_benchmark_api: bool,
}

/// A validated `--run-benchmark`.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// What to run.
    pub spec: BenchSpec,
    /// `--benchmark-json` (`-` = stdout).
    pub json: Option<PathBuf>,
    /// `--benchmark-csv`.
    pub csv: Option<PathBuf>,
    /// `--benchmark-run-id`.
    pub run_id: Option<String>,
}

/// The benchmark REST API's settings.
#[derive(Clone, Default)]
pub struct ApiSettings {
    /// `--enable-benchmark-api`.
    pub enabled: bool,
    /// `--benchmark-max-ops`.
    pub max_ops: u64,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("enabled", &self.enabled)
            .field("max_ops", &self.max_ops)
            .finish()
    }
}

/// The CLI flag of a [`RawSpec`] field.
pub fn flag_of(field: &str) -> String {
    match field {
        "type" => "--benchmark-type".to_string(),
        f if f.starts_with("slo_") => format!("--{}", f.replace('_', "-")),
        f => format!("--benchmark-{}", f.replace('_', "-")),
    }
}

impl BenchFlags {
    /// Validates the flags of a run of `kind` with `ops` operations (None = default).
    pub fn plan(&self, kind: BenchmarkType, ops: Option<u64>) -> Result<BenchPlan, ConfigError> {
        if self.benchmark_max_ops == 0 {
            return Err(ConfigError {
                field: "--benchmark-max-ops".into(),
                message: "must be at least 1".into(),
            });
        }
        let raw = RawSpec {
            cluster: None,
            kind: Some(kind),
            ops,
            duration: self.benchmark_duration.clone(),
            clients: self.benchmark_clients,
            conns: self.benchmark_conns,
            key_size: self.benchmark_key_size,
            value_size: self.benchmark_value_size,
            rate: self.benchmark_rate,
            key_space: self.benchmark_key_space,
            key_order: self.benchmark_key_order,
            consistency: self.benchmark_consistency,
            read_ratio: self.benchmark_read_ratio,
            target: self.benchmark_target,
            timeout: self.benchmark_timeout.clone(),
            slo_p99_ms: self.slo_p99_ms,
            slo_min_rps: self.slo_min_rps,
        };
        let mut spec = raw
            .validate(&flag_of, self.benchmark_max_ops)
            .map_err(|e| ConfigError {
                field: e.field,
                message: e.message,
            })?;
        spec.keep_keys = self.benchmark_keep_keys;
        if let Some(id) = &self.benchmark_run_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(ConfigError {
                field: "--benchmark-run-id".into(),
                message: format!("{id:?}: use 1..=64 letters, digits, '-', '_' or '.'"),
            });
        }
        Ok(BenchPlan {
            spec,
            json: self.benchmark_json.clone(),
            csv: self.benchmark_csv.clone(),
            run_id: self.benchmark_run_id.clone(),
        })
    }

    /// The REST API's settings.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            enabled: self.enable_benchmark_api,
            max_ops: self.benchmark_max_ops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named_in_errors() {
        assert_eq!(flag_of("clients"), "--benchmark-clients");
        assert_eq!(flag_of("key_size"), "--benchmark-key-size");
        assert_eq!(flag_of("slo_p99_ms"), "--slo-p99-ms");
        assert_eq!(flag_of("type"), "--benchmark-type");
    }
}
