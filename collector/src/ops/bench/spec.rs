//! Benchmark parameters. [`RawSpec`] is what a caller gives (the REST body, or the CLI flags
//! mapped onto it); [`RawSpec::validate`] checks every value once and names the field it is
//! about, in the caller's own spelling (`clients` in JSON, `--benchmark-clients` on the CLI).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Operations a run never exceeds unless the caller raises the cap explicitly.
pub const DEFAULT_MAX_OPS: u64 = 1_000_000;
/// Operations when neither a count nor a duration is given.
pub const DEFAULT_OPS: u64 = 10_000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Requests in flight when `clients` / `--benchmark-clients` is not given.
pub const DEFAULT_CLIENTS: usize = 16;
/// gRPC connections when `conns` / `--benchmark-conns` is not given.
pub const DEFAULT_CONNS: usize = 4;
/// Key bytes after the run's prefix when `key_size` is not given.
pub const DEFAULT_KEY_SIZE: usize = 8;
/// Value bytes when `value_size` is not given (like etcd's benchmark).
pub const DEFAULT_VALUE_SIZE: usize = 8;
/// Distinct keys when `key_space` is not given.
pub const DEFAULT_KEY_SPACE: u64 = 100_000;
/// Share of reads in a mixed run when `read_ratio` is not given.
pub const DEFAULT_READ_RATIO: f64 = 0.7;
/// Workload when `type` / `--benchmark-type` is not given.
pub const DEFAULT_KIND: BenchmarkType = BenchmarkType::Mixed;
/// Key order when `key_order` is not given.
pub const DEFAULT_KEY_ORDER: KeyOrder = KeyOrder::Sequential;
/// Read consistency when `consistency` is not given.
pub const DEFAULT_CONSISTENCY: Consistency = Consistency::Linearizable;
/// Target when `target` is not given.
pub const DEFAULT_TARGET: Target = Target::Leader;

/// Read consistency of range requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Linearizable: goes through the leader's read index (etcd's `--consistency=l`).
    #[value(alias = "l")]
    Linearizable,
    /// Serializable: answered from the local member's store (`--consistency=s`).
    #[value(alias = "s")]
    Serializable,
}

/// Which members the connections go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every connection to the current leader.
    Leader,
    /// Connections spread round-robin over every endpoint.
    All,
}

/// How keys are chosen from the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrder {
    /// Request `i` uses key `i mod key_space`.
    Sequential,
    /// Uniformly random keys of the key space (deterministic per run).
    Random,
}

/// A parameter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {field}: {message}")]
pub struct SpecError {
    /// The field as the caller spelt it (`clients`, `--benchmark-clients`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Parameters as given; every field is optional and has a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// Cluster name (REST only); default the first configured.
    #[serde(default)]
    pub cluster: Option<String>,
    /// `write`, `read`, `mixed` or `txn-put` (default `mixed`, like `--benchmark-type`).
    #[serde(default, rename = "type")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<BenchmarkType>,
    /// Total operations (default 10000 unless `duration` is given).
    #[serde(default)]
    pub ops: Option<u64>,
    /// Run for this long instead of a count (`30s`, `2m`).
    #[serde(default)]
    pub duration: Option<String>,
    /// Concurrent requests in flight (default 16).
    #[serde(default)]
    pub clients: Option<usize>,
    /// gRPC connections the clients share (default 4).
    #[serde(default)]
    pub conns: Option<usize>,
    /// Bytes of each key after the run's prefix (default 8).
    #[serde(default)]
    pub key_size: Option<usize>,
    /// Bytes of each value (default 8, like etcd's benchmark).
    #[serde(default)]
    pub value_size: Option<usize>,
    /// Total requests per second across all clients; absent = as fast as possible.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Distinct keys (default 100000).
    #[serde(default)]
    pub key_space: Option<u64>,
    /// `sequential` (default) or `random`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub key_order: Option<KeyOrder>,
    /// Reads: `linearizable` (default) or `serializable`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
    /// Mixed: share of reads, 0..=1 (default 0.7).
    #[serde(default)]
    pub read_ratio: Option<f64>,
    /// `leader` (default) or `all`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub target: Option<Target>,
    /// Per-request timeout (default the cluster's dial timeout).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Fail (SLO verdict) when p99 latency exceeds this many milliseconds.
    #[serde(default)]
    pub slo_p99_ms: Option<f64>,
    /// Fail (SLO verdict) when successful requests per second fall below this.
    #[serde(default)]
    pub slo_min_rps: Option<f64>,
}

/// Validated parameters of one run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BenchSpec {
    /// Workload.
    #[schema(value_type = String)]
    pub kind: BenchmarkType,
    /// Most operations issued (the count asked for, or the cap in duration mode).
    pub ops: u64,
    /// Run length, when the run is timed.
    pub duration_ms: Option<u64>,
    /// Concurrent requests.
    pub clients: usize,
    /// gRPC connections.
    pub conns: usize,
    /// Key bytes after the prefix.
    pub key_size: usize,
    /// Value bytes.
    pub value_size: usize,
    /// Requests per second, all clients together.
    pub rate: Option<f64>,
    /// Distinct keys.
    pub key_space: u64,
    /// Key order.
    #[schema(value_type = String)]
    pub key_order: KeyOrder,
    /// Read consistency.
    #[schema(value_type = String)]
    pub consistency: Consistency,
    /// Share of reads in a mixed run.
    pub read_ratio: f64,
    /// Member selection.
    #[schema(value_type = String)]
    pub target: Target,
    /// Per-request timeout, ms (0 = the cluster's dial timeout).
    pub timeout_ms: u64,
    /// Leave the keys in place after the run (CLI `--benchmark-keep-keys`, for verification).
    pub keep_keys: bool,
    /// The SLO to judge the run by.
    pub slo: Slo,
}

impl BenchSpec {
    /// The run length, when timed.
    pub fn duration(&self) -> Option<Duration> {
        self.duration_ms.map(Duration::from_millis)
    }

    /// The workload's name as the CLI and JSON spell it.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind)
    }
}

/// `write`, `read`, `mixed` or `txn-put`.
pub fn kind_name(kind: BenchmarkType) -> &'static str {
    match kind {
        BenchmarkType::Write => "write",
        BenchmarkType::Read => "read",
        BenchmarkType::Mixed => "mixed",
        BenchmarkType::TxnPut => "txn-put",
    }
}

/// Builds the error for a field (by its JSON name) of a spec.
type FieldError<'a> = dyn Fn(&str, String) -> SpecError + 'a;

impl RawSpec {
    /// Checks every value; `field` maps a JSON field name to the caller's spelling of it, and
    /// `max_ops` is the cap on operations.
    pub fn validate(
        &self,
        field: &dyn Fn(&str) -> String,
        max_ops: u64,
    ) -> Result<BenchSpec, SpecError> {
        let err = |name: &str, message: String| SpecError {
            field: field(name),
            message,
        };
        let duration = self.checked_duration(&err)?;
        let ops = self.checked_ops(duration, max_ops, &err)?;
        let (clients, conns) = self.checked_connections(&err)?;
        let (key_space, key_size) = self.checked_keys(&err)?;
        let (value_size, read_ratio) = self.checked_load(&err)?;
        let timeout_ms = self.checked_timeout_ms(&err)?;
        self.check_slo(&err)?;
        Ok(BenchSpec {
            kind: self.kind.unwrap_or(DEFAULT_KIND),
            ops,
            duration_ms: duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            clients,
            conns,
            key_size,
            value_size,
            rate: self.rate,
            key_space,
            key_order: self.key_order.unwrap_or(DEFAULT_KEY_ORDER),
            consistency: self.consistency.unwrap_or(DEFAULT_CONSISTENCY),
            read_ratio,
            target: self.target.unwrap_or(DEFAULT_TARGET),
            timeout_ms,
            keep_keys: false,
            slo: Slo {
                p99_ms: self.slo_p99_ms,
                min_rps: self.slo_min_rps,
            },
        })
    }

    /// The run's duration, when given: parsed and at most [`MAX_DURATION`].
    fn checked_duration(&self, err: &FieldError<'_>) -> Result<Option<Duration>, SpecError> {
        let Some(d) = &self.duration else {
            return Ok(None);
        };
        let d = crate::model::time::parse_duration(d).map_err(|e| err("duration", e))?;
        if d > MAX_DURATION {
            return Err(err(
                "duration",
                format!("{d:?} is longer than {MAX_DURATION:?}"),
            ));
        }
        Ok(Some(d))
    }

    /// The number of operations: given (1..=`max_ops`), the cap for a timed run, or the default.
    fn checked_ops(
        &self,
        duration: Option<Duration>,
        max_ops: u64,
        err: &FieldError<'_>,
    ) -> Result<u64, SpecError> {
        match (self.ops, duration) {
            (Some(0), _) => Err(err("ops", "must be at least 1".into())),
            (Some(n), _) if n > max_ops => Err(err(
                "ops",
                format!("{n} is above the cap of {max_ops} operations"),
            )),
            (Some(n), _) => Ok(n),
            (None, Some(_)) => Ok(max_ops),
            (None, None) => Ok(DEFAULT_OPS.min(max_ops)),
        }
    }

    /// Clients and connections: in range, and no more connections than clients.
    fn checked_connections(&self, err: &FieldError<'_>) -> Result<(usize, usize), SpecError> {
        let clients = self.clients.unwrap_or(DEFAULT_CLIENTS);
        if !(1..=10_000).contains(&clients) {
            return Err(err("clients", format!("{clients} is not in 1..=10000")));
        }
        let conns = self.conns.unwrap_or(DEFAULT_CONNS);
        if !(1..=1000).contains(&conns) {
            return Err(err("conns", format!("{conns} is not in 1..=1000")));
        }
        if conns > clients {
            return Err(err(
                "conns",
                format!("{conns} connections for {clients} clients; use at most one per client"),
            ));
        }
        Ok((clients, conns))
    }

    /// Key space and key size: the keys must be long enough to number the whole space.
    fn checked_keys(&self, err: &FieldError<'_>) -> Result<(u64, usize), SpecError> {
        let key_space = self.key_space.unwrap_or(DEFAULT_KEY_SPACE);
        if key_space == 0 {
            return Err(err("key_space", "must be at least 1".into()));
        }
        let key_size = self.key_size.unwrap_or(DEFAULT_KEY_SIZE);
        let digits = digits(key_space - 1);
        if key_size < digits || key_size > 4096 {
            return Err(err(
                "key_size",
                format!(
                    "{key_size} is not in {digits}..=4096 (key space {key_space} needs {digits} digits)"
                ),
            ));
        }
        Ok((key_space, key_size))
    }

    /// Value size (at most 1 MiB), rate (positive when given) and read ratio (0..=1).
    fn checked_load(&self, err: &FieldError<'_>) -> Result<(usize, f64), SpecError> {
        let value_size = self.value_size.unwrap_or(DEFAULT_VALUE_SIZE);
        if value_size > 1 << 20 {
            return Err(err(
                "value_size",
                format!("{value_size} is above 1 MiB (etcd's default request limit)"),
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(err("rate", format!("{rate} is not a positive number")));
        }
        let read_ratio = self.read_ratio.unwrap_or(DEFAULT_READ_RATIO);
        if !(0.0..=1.0).contains(&read_ratio) {
            return Err(err("read_ratio", format!("{read_ratio} is not in 0..=1")));
        }
        Ok((value_size, read_ratio))
    }

    /// The per-request timeout in ms (at least 1), or 0 when not given.
    fn checked_timeout_ms(&self, err: &FieldError<'_>) -> Result<u64, SpecError> {
        Ok(match &self.timeout {
            Some(t) => {
                let t = crate::model::time::parse_duration(t).map_err(|e| err("timeout", e))?;
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
            }
            None => 0,
        })
    }

    /// The service-level objectives, when given, are positive numbers.
    fn check_slo(&self, err: &FieldError<'_>) -> Result<(), SpecError> {
        for (name, v) in [
            ("slo_p99_ms", self.slo_p99_ms),
            ("slo_min_rps", self.slo_min_rps),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(err(name, format!("{v} is not a positive number")));
            }
        }
        Ok(())
    }
}

/// Service-level objectives a run is judged by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Slo {
    /// Highest acceptable p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Lowest acceptable successful requests per second.
    pub min_rps: Option<f64>,
}

impl Slo {
    /// Whether any objective is set.
    pub fn is_set(&self) -> bool {
        self.p99_ms.is_some() || self.min_rps.is_some()
    }
}

/// Which kind of operations `--run-benchmark` issues.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BenchmarkType {
    /// Puts only.
    Write,
    /// Reads only (linearizable unless --benchmark-consistency=serializable).
    Read,
    /// Reads and puts, 70 % reads unless --benchmark-read-ratio says otherwise.
    Mixed,
    /// Transactions of one put each.
    #[serde(rename = "txn-put")]
    TxnPut,
}

/// Decimal digits of `n` (at least 1).
pub fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Result<BenchSpec, String> {
        let raw: RawSpec = serde_json::from_str(s).map_err(|e| e.to_string())?;
        raw.validate(&|f: &str| f.to_string(), DEFAULT_MAX_OPS)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_names() -> Result<(), String> {
        let s = json(r#"{"type":"txn-put"}"#)?;
        assert_eq!(s.kind, BenchmarkType::TxnPut);
        assert_eq!(s.ops, DEFAULT_OPS);
        assert_eq!(
            (s.clients, s.conns, s.key_size, s.value_size),
            (16, 4, 8, 8)
        );
        assert_eq!(s.target, Target::Leader);
        let s = json(r#"{"type":"read","consistency":"serializable","duration":"5s"}"#)?;
        assert_eq!(s.consistency, Consistency::Serializable);
        assert_eq!(s.ops, DEFAULT_MAX_OPS);
        assert_eq!(s.duration_ms, Some(5000));
        Ok(())
    }

    #[test]
    fn bad_values_name_the_field() {
        for (body, field) in [
            (r#"{"ops":0}"#, "ops"),
            (r#"{"ops":5000000}"#, "ops"),
            (r#"{"clients":0}"#, "clients"),
            (r#"{"clients":2,"conns":3}"#, "conns"),
            (r#"{"key_space":1000000,"key_size":3}"#, "key_size"),
            (r#"{"rate":-1}"#, "rate"),
            (r#"{"read_ratio":1.5}"#, "read_ratio"),
            (r#"{"duration":"soon"}"#, "duration"),
            (r#"{"slo_p99_ms":0}"#, "slo_p99_ms"),
            (r#"{"opps":1}"#, "opps"),
        ] {
            match json(body) {
                Ok(s) => panic!("{body} accepted: {s:?}"),
                Err(e) => assert!(e.contains(field), "{body}: {e}"),
            }
        }
    }
}
