//! The admin operations' flags (flattened into the collector's `Cli`) and their validation.

use std::{path::Path, time::Duration};

use clap::Args;

use crate::{
    model::config::{ConfigError, duration_default},
    model::time::parse_duration,
    ops::admin::{
        auto::{AutoDefragConfig, DEFAULT_INTERVAL},
        snapshots::{DEFAULT_MAX_SNAPSHOT_MB, DEFAULT_MAX_SNAPSHOTS, SnapshotDir},
    },
    store::DEFAULT_AUDIT_MAX_ROWS,
};

/// `--auto-defrag*`, the snapshot bounds and the audit bound.
#[derive(Debug, Clone, Args)]
pub struct AdminFlags {
    /// Automatic rolling defragmentation of members at least this fragmented and this large,
    /// `RATIO%,SIZE` (e.g. `45%,100MB`); off unless given. Needs --auto-defrag-window. Never
    /// starts while an alert fires on the cluster or another admin operation runs there.
    #[arg(long, env = "AUTO_DEFRAG")]
    pub auto_defrag: Option<String>,

    /// When automatic defragmentation may start, UTC: `[DAYS ]HH:MM-HH:MM`, e.g.
    /// `02:00-04:00` or `Sat,Sun 01:30-05:00` (an end before the start wraps past midnight).
    #[arg(long, env = "AUTO_DEFRAG_WINDOW")]
    pub auto_defrag_window: Option<String>,

    /// How often automatic defragmentation checks the clusters.
    #[arg(long, env = "AUTO_DEFRAG_INTERVAL", default_value = duration_default!(DEFAULT_INTERVAL), value_parser = parse_duration)]
    pub auto_defrag_interval: Duration,

    /// Snapshots kept in `<data-dir>/snapshots` (`POST /api/v1/admin/snapshot`); the oldest
    /// beyond this are deleted.
    #[arg(long, env = "ADMIN_MAX_SNAPSHOTS", default_value_t = DEFAULT_MAX_SNAPSHOTS)]
    pub admin_max_snapshots: usize,

    /// Total MiB the kept snapshots may take; the oldest beyond this are deleted, and a
    /// snapshot of a database larger than this is refused.
    #[arg(long, env = "ADMIN_SNAPSHOT_MAX_SIZE_MB", default_value_t = DEFAULT_MAX_SNAPSHOT_MB)]
    pub admin_snapshot_max_size_mb: u64,

    /// Admin audit records kept in the store (`GET /api/v1/audit`); the oldest beyond this
    /// are deleted (counted in `etcdmon_store_pruned_rows_total{table="admin_audit"}`).
    #[arg(long, env = "AUDIT_MAX_RECORDS", default_value_t = DEFAULT_AUDIT_MAX_ROWS)]
    pub audit_max_records: u64,
}

/// Validated admin settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Automatic defragmentation, when on.
    pub auto_defrag: Option<AutoDefragConfig>,
    /// `--admin-max-snapshots`.
    pub max_snapshots: usize,
    /// `--admin-snapshot-max-size-mb`, bytes.
    pub snapshot_max_bytes: u64,
    /// `--audit-max-records`.
    pub audit_max_records: u64,
}

impl AdminConfig {
    /// The snapshot directory under `data_dir` with these bounds.
    pub fn snapshot_dir(&self, data_dir: &Path) -> SnapshotDir {
        SnapshotDir::new(data_dir, self.max_snapshots, self.snapshot_max_bytes)
    }
}

impl AdminFlags {
    /// Checks the flags; each error names its flag.
    pub fn validate(&self) -> Result<AdminConfig, ConfigError> {
        let auto_defrag = match (&self.auto_defrag, &self.auto_defrag_window) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "--auto-defrag-window",
                    "needs --auto-defrag=RATIO%,SIZE (e.g. 45%,100MB)",
                ));
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "--auto-defrag-window",
                    "required with --auto-defrag: when runs may start, UTC, e.g. 02:00-04:00 or Sat 02:00-04:00",
                ));
            }
            (Some(t), Some(w)) => Some(AutoDefragConfig {
                threshold: t
                    .parse()
                    .map_err(|e: String| ConfigError::new("--auto-defrag", e))?,
                window: w
                    .parse()
                    .map_err(|e: String| ConfigError::new("--auto-defrag-window", e))?,
                interval: self.auto_defrag_interval,
            }),
        };
        if self.auto_defrag_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "--auto-defrag-interval",
                "must be at least 1s",
            ));
        }
        if self.admin_max_snapshots == 0 {
            return Err(ConfigError::new(
                "--admin-max-snapshots",
                "must be at least 1",
            ));
        }
        if self.admin_snapshot_max_size_mb == 0 {
            return Err(ConfigError::new(
                "--admin-snapshot-max-size-mb",
                "must be at least 1",
            ));
        }
        if self.audit_max_records == 0 {
            return Err(ConfigError::new(
                "--audit-max-records",
                "must be at least 1",
            ));
        }
        Ok(AdminConfig {
            auto_defrag,
            max_snapshots: self.admin_max_snapshots,
            snapshot_max_bytes: self.admin_snapshot_max_size_mb.saturating_mul(1024 * 1024),
            audit_max_records: self.audit_max_records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        admin: AdminFlags,
    }

    fn check(args: &[&str]) -> Result<AdminConfig, ConfigError> {
        let mut all = vec!["t"];
        all.extend_from_slice(args);
        T::try_parse_from(all).expect("parses").admin.validate()
    }

    #[test]
    fn auto_defrag_is_off_by_default_and_bad_flags_are_named() {
        assert!(check(&[]).unwrap().auto_defrag.is_none());
        let on = check(&[
            "--auto-defrag=45%,100MB",
            "--auto-defrag-window=Sat 02:00-04:00",
        ])
        .unwrap();
        let auto = on.auto_defrag.unwrap();
        assert_eq!(auto.threshold.min_bytes, 100_000_000);
        assert_eq!(auto.window.to_string(), "Sat 02:00-04:00 UTC");
        for (args, flag) in [
            (vec!["--auto-defrag=45%,100MB"], "--auto-defrag-window"),
            (
                vec!["--auto-defrag-window=02:00-04:00"],
                "--auto-defrag-window",
            ),
            (
                vec!["--auto-defrag=45%", "--auto-defrag-window=02:00-04:00"],
                "--auto-defrag",
            ),
            (
                vec!["--auto-defrag=45%,1MB", "--auto-defrag-window=2am"],
                "--auto-defrag-window",
            ),
            (vec!["--admin-max-snapshots=0"], "--admin-max-snapshots"),
        ] {
            let err = check(&args).unwrap_err();
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
