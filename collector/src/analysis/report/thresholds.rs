//! The report's two-tier thresholds (warning, critical) per area, their defaults (the
//! performance analyzer's and etcd's own guides), and `--report-threshold AREA=WARN,CRIT`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A warning and a critical bound: a value at or above `critical` is critical, at or above
/// `warning` a warning. For [`Direction::Below`] areas the comparison is reversed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Level {
    /// Warning from this value on.
    pub warning: f64,
    /// Critical from this value on.
    pub critical: f64,
}

impl Level {
    const fn new(warning: f64, critical: f64) -> Self {
        Self { warning, critical }
    }
}

/// Every threshold the report grades against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportThresholds {
    /// WAL fsync p99, ms (etcd's `etcd_disk_wal_fsync_duration_seconds`).
    pub wal_fsync_p99_ms: Level,
    /// Backend commit p99, ms (`etcd_disk_backend_commit_duration_seconds`).
    pub backend_commit_p99_ms: Level,
    /// Process CPU, % of the cores it may use (its cgroup quota, else the node's).
    pub cpu_percent: Level,
    /// Resident memory, % of the memory it may use (its cgroup limit, else the node's).
    pub memory_percent: Level,
    /// Peer round-trip p99, ms (`etcd_network_peer_round_trip_time_seconds`).
    pub peer_rtt_p99_ms: Level,
    /// Network use, % of the link (only graded when a measurement is supplied).
    pub network_percent: Level,
    /// Database size, % of `--quota-backend-bytes`.
    pub db_quota_percent: Level,
    /// Free pages in the database file (reclaimable by a defragmentation), % of its size.
    pub fragmentation_percent: Level,
    /// p99 of the report's benchmark (writes), ms.
    pub benchmark_p99_ms: Level,
}

impl ReportThresholds {
    /// The defaults: WAL fsync 5/10 ms, backend commit 15/25 ms, CPU and memory 70/85 %, peer
    /// latency 50/100 ms, network 70/85 %, database 80/95 % of its quota, fragmentation
    /// 50/75 %, benchmark p99 25/100 ms.
    pub const DEFAULT: Self = Self {
        wal_fsync_p99_ms: Level::new(5.0, 10.0),
        backend_commit_p99_ms: Level::new(15.0, 25.0),
        cpu_percent: Level::new(70.0, 85.0),
        memory_percent: Level::new(70.0, 85.0),
        peer_rtt_p99_ms: Level::new(50.0, 100.0),
        network_percent: Level::new(70.0, 85.0),
        db_quota_percent: Level::new(80.0, 95.0),
        fragmentation_percent: Level::new(50.0, 75.0),
        benchmark_p99_ms: Level::new(25.0, 100.0),
    };

    /// Area names, as `--report-threshold` spells them.
    pub const NAMES: [&'static str; 9] = [
        "wal_fsync_p99_ms",
        "backend_commit_p99_ms",
        "cpu_percent",
        "memory_percent",
        "peer_rtt_p99_ms",
        "network_percent",
        "db_quota_percent",
        "fragmentation_percent",
        "benchmark_p99_ms",
    ];

    fn slot(&mut self, name: &str) -> Option<&mut Level> {
        Some(match name {
            "wal_fsync_p99_ms" => &mut self.wal_fsync_p99_ms,
            "backend_commit_p99_ms" => &mut self.backend_commit_p99_ms,
            "cpu_percent" => &mut self.cpu_percent,
            "memory_percent" => &mut self.memory_percent,
            "peer_rtt_p99_ms" => &mut self.peer_rtt_p99_ms,
            "network_percent" => &mut self.network_percent,
            "db_quota_percent" => &mut self.db_quota_percent,
            "fragmentation_percent" => &mut self.fragmentation_percent,
            "benchmark_p99_ms" => &mut self.benchmark_p99_ms,
            _ => return None,
        })
    }

    /// Applies overrides `AREA=WARNING,CRITICAL`; the error says what is wrong with which one.
    pub fn with_overrides(mut self, specs: &[String]) -> Result<Self, String> {
        for spec in specs {
            let (name, values) = spec
                .split_once('=')
                .ok_or_else(|| format!("{spec:?}: expected AREA=WARNING,CRITICAL"))?;
            let name = name.trim();
            let level = self.slot(name).ok_or_else(|| {
                format!(
                    "{spec:?}: unknown area {name:?}; known: {}",
                    Self::NAMES.join(", ")
                )
            })?;
            let (w, c) = values
                .split_once(',')
                .ok_or_else(|| format!("{spec:?}: expected AREA=WARNING,CRITICAL"))?;
            let parse = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| format!("{spec:?}: {s:?} is not a positive number"))
            };
            let (warning, critical) = (parse(w)?, parse(c)?);
            if warning >= critical {
                return Err(format!(
                    "{spec:?}: the warning bound must be below the critical one"
                ));
            }
            if name.ends_with("_percent") && critical > 100.0 {
                return Err(format!("{spec:?}: a percentage is at most 100"));
            }
            *level = Level { warning, critical };
        }
        Ok(self)
    }
}

impl Default for ReportThresholds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `--report-threshold`: the report's thresholds.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportArgs {
    /// Report: override one area's thresholds, `AREA=WARNING,CRITICAL` (repeatable; several
    /// separated by `;`), e.g. `wal_fsync_p99_ms=8,20`. Areas: wal_fsync_p99_ms
    /// (5,10), backend_commit_p99_ms (15,25), cpu_percent (70,85), memory_percent (70,85),
    /// peer_rtt_p99_ms (50,100), network_percent (70,85), db_quota_percent (80,95),
    /// fragmentation_percent (50,75), benchmark_p99_ms (25,100).
    #[arg(long, env = "ETCD_MONITOR_REPORT_THRESHOLDS", value_delimiter = ';')]
    pub report_threshold: Vec<String>,
}

impl ReportArgs {
    /// The thresholds, or `(field, message)`.
    pub fn validate(&self) -> Result<ReportThresholds, (String, String)> {
        ReportThresholds::DEFAULT
            .with_overrides(&self.report_threshold)
            .map_err(|m| ("--report-threshold".to_string(), m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_bad_ones_are_named() {
        let t = ReportThresholds::DEFAULT
            .with_overrides(&["wal_fsync_p99_ms=8,20".into()])
            .expect("valid");
        assert_eq!(t.wal_fsync_p99_ms, Level::new(8.0, 20.0));
        assert_eq!(t.cpu_percent, Level::new(70.0, 85.0));
        for bad in [
            "wal_fsync=1,2",
            "cpu_percent=90,80",
            "cpu_percent=50",
            "cpu_percent=50,120",
            "peer_rtt_p99_ms=-1,3",
            "x",
        ] {
            let err = ReportThresholds::DEFAULT
                .with_overrides(&[bad.into()])
                .expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }
}
