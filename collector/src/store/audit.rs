//! The admin audit trail: one row per admin action (REST or automatic), written when the
//! action starts (`result = running`) and updated when it ends, so a crash mid-operation still
//! leaves its start on record. Bounded by count: each insert keeps the newest
//! [`Store::set_audit_max_rows`] rows and counts what it deletes in
//! `etcdmon_store_pruned_rows_total{table="admin_audit"}`.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Store, StoreError, to_i64, to_u64};

/// The table, created with the others at open.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS admin_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    cluster TEXT NOT NULL,
    actor TEXT NOT NULL,
    op TEXT NOT NULL,
    args_json TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    result TEXT NOT NULL,
    error TEXT,
    before_json TEXT,
    after_json TEXT
);
CREATE INDEX IF NOT EXISTS admin_audit_by_cluster ON admin_audit (cluster, seq);
";

/// Default bound on kept audit rows.
pub const DEFAULT_AUDIT_MAX_ROWS: u64 = 10_000;

/// Most rows one audit query returns.
pub const AUDIT_QUERY_MAX: usize = 500;

/// One admin action as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the trail (increasing); page with `before=<seq>`.
    pub seq: i64,
    /// The job that ran it.
    pub job_id: String,
    /// Cluster acted on.
    pub cluster: String,
    /// Who: the admin token's name, `loopback`, or `auto-defrag`.
    pub actor: String,
    /// `defrag`, `compact`, `alarm_disarm`, `move_leader`, `snapshot` or `member_remove`.
    pub op: String,
    /// The validated arguments.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms (absent while running, or when the collector stopped mid-operation).
    pub finished_ms: Option<u64>,
    /// `running`, `success`, `failure` or `refused`.
    pub result: String,
    /// Why it failed or was refused.
    pub error: Option<String>,
    /// Figures before: per-member database size and in-use bytes, revision, alarms.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The same figures after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

fn json_text(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(serde_json::Value::to_string)
}

fn parse(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        job_id: r.get(1)?,
        cluster: r.get(2)?,
        actor: r.get(3)?,
        op: r.get(4)?,
        args: parse(r.get(5)?).unwrap_or(serde_json::Value::Null),
        started_ms: to_u64(r.get(6)?),
        finished_ms: r.get::<_, Option<i64>>(7)?.map(to_u64),
        result: r.get(8)?,
        error: r.get(9)?,
        before: parse(r.get(10)?),
        after: parse(r.get(11)?),
    })
}

const COLUMNS: &str = "seq, job_id, cluster, actor, op, args_json, started_ms, finished_ms, \
                       result, error, before_json, after_json";

impl Store {
    /// Bounds the audit trail to its newest `rows` rows (at least 1).
    pub fn set_audit_max_rows(&self, rows: u64) {
        self.audit_max_rows
            .store(rows.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Records an action (insert, or update of the row with the same `job_id`), then deletes
    /// the rows beyond the bound; returns how many it deleted.
    pub fn save_audit(&self, a: &AuditRecord) -> Result<u64, StoreError> {
        let keep = to_i64(
            self.audit_max_rows
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let pruned = self.with(|c| {
            c.prepare_cached(
                "INSERT INTO admin_audit (job_id, cluster, actor, op, args_json, started_ms,
                 finished_ms, result, error, before_json, after_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(job_id) DO UPDATE SET finished_ms = ?7, result = ?8, error = ?9,
                 before_json = coalesce(?10, before_json), after_json = ?11",
            )?
            .execute(params![
                a.job_id,
                a.cluster,
                a.actor,
                a.op,
                a.args.to_string(),
                to_i64(a.started_ms),
                a.finished_ms.map(to_i64),
                a.result,
                a.error,
                json_text(&a.before),
                json_text(&a.after),
            ])?;
            let n = c.execute(
                "DELETE FROM admin_audit WHERE seq <= (SELECT MAX(seq) FROM admin_audit) - ?1",
                [keep],
            )?;
            Ok(n as u64)
        })?;
        self.metrics
            .pruned
            .with_label_values(&["admin_audit"])
            .inc_by(pruned);
        Ok(pruned)
    }

    /// The newest `limit` (at most [`AUDIT_QUERY_MAX`]) actions, newest first, of `cluster`
    /// (all clusters when `None`), older than `before` (a `seq`) when given.
    pub fn audit(
        &self,
        cluster: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = limit.clamp(1, AUDIT_QUERY_MAX) as i64;
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM admin_audit
                 WHERE (?1 IS NULL OR cluster = ?1) AND (?2 IS NULL OR seq < ?2)
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![cluster, before, limit], record_from_row)?;
            rows.collect()
        })
    }

    /// The action run by job `job_id`.
    pub fn audit_by_job(&self, job_id: &str) -> Result<Option<AuditRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM admin_audit WHERE job_id = ?1"
            ))?
            .query_row([job_id], record_from_row)
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, result: &str) -> AuditRecord {
        AuditRecord {
            job_id: job.into(),
            cluster: "c".into(),
            actor: "ops".into(),
            op: "compact".into(),
            args: serde_json::json!({"retain": 5}),
            started_ms: 1,
            result: result.into(),
            before: Some(serde_json::json!({"revision": 10})),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn audit_rows_update_in_place_and_stay_bounded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        store.set_audit_max_rows(3);
        store.save_audit(&record("j1", "running"))?;
        let mut done = record("j1", "success");
        done.finished_ms = Some(2);
        done.before = None;
        done.after = Some(serde_json::json!({"revision": 11}));
        store.save_audit(&done)?;
        let got = store.audit_by_job("j1")?.expect("j1 recorded");
        assert_eq!(got.result, "success");
        assert_eq!(got.before, Some(serde_json::json!({"revision": 10})));
        assert_eq!(got.after, Some(serde_json::json!({"revision": 11})));
        assert_eq!(got.args["retain"], 5);
        let mut pruned = 0;
        for i in 2..=5 {
            pruned += store.save_audit(&record(&format!("j{i}"), "success"))?;
        }
        assert_eq!(pruned, 2);
        let all = store.audit(None, None, 100)?;
        let jobs: Vec<&str> = all.iter().map(|a| a.job_id.as_str()).collect();
        assert_eq!(jobs, ["j5", "j4", "j3"]);
        let page = store.audit(Some("c"), Some(all[0].seq), 1)?;
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].job_id, "j4");
        assert!(store.audit(Some("other"), None, 10)?.is_empty());
        Ok(())
    }
}
