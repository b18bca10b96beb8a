//! The history store: an embedded SQLite file (`<data-dir>/history.db`, WAL mode) holding one
//! row per member per metrics interval and the leader changes; the alerting, the benchmark
//! jobs and the agent registry keep their own tables in the same file.
//! Retention by age and size. Calls are blocking; async callers use `spawn_blocking`.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use crate::cluster::LeaderChange;

/// File name inside `--data-dir`.
pub const FILE_NAME: &str = "history.db";

/// A store failure; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created.
    #[error("history store: cannot create directory {path}: {source}")]
    CreateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file could not be opened, is not a database, is corrupt or is read-only.
    #[error("history store {path}: {message}")]
    Open {
        /// File.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A statement failed.
    #[error("history store {path}: {source}")]
    Sql {
        /// File.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
}

/// One member at one point in time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Unix ms.
    pub ts_ms: u64,
    /// Cluster.
    pub cluster: String,
    /// Member name (or hex id).
    pub member: String,
    /// Member id (hex).
    pub member_id: String,
    /// Answered the last health check.
    pub reachable: bool,
    /// Was leader.
    pub is_leader: bool,
    /// Raft term.
    pub raft_term: Option<u64>,
    /// Raft index.
    pub raft_index: Option<u64>,
    /// Database size, bytes.
    pub db_size_bytes: Option<f64>,
    /// Database size in use, bytes.
    pub db_size_in_use_bytes: Option<f64>,
    /// Proposals committed.
    pub proposals_committed_total: Option<f64>,
    /// Proposals applied.
    pub proposals_applied_total: Option<f64>,
    /// Proposals pending.
    pub proposals_pending: Option<f64>,
    /// Proposals failed.
    pub proposals_failed_total: Option<f64>,
    /// WAL fsync p95, ms.
    pub wal_fsync_p95_ms: Option<f64>,
    /// Backend commit p95, ms.
    pub backend_commit_p95_ms: Option<f64>,
    /// Read probe p99, ms.
    pub read_p99_ms: Option<f64>,
    /// Write probe p99, ms.
    pub write_p99_ms: Option<f64>,
    /// KV requests per second.
    pub request_rate_per_second: Option<f64>,
    /// Leader changes the member has seen.
    pub leader_changes_seen_total: Option<f64>,
    /// WAL fsync p99 over the last interval as etcd measured it, ms.
    pub wal_fsync_window_p99_ms: Option<f64>,
    /// WAL fdatasync p99 over the last interval as the kernel measured it, ms.
    pub kernel_wal_fsync_window_p99_ms: Option<f64>,
}

/// Which history to read.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Cluster.
    pub cluster: String,
    /// Only this member (name or hex id).
    pub member: Option<String>,
    /// From (Unix ms, inclusive).
    pub since_ms: u64,
    /// To (Unix ms, inclusive).
    pub until_ms: u64,
    /// Keep the last point per member in each step.
    pub step: Option<Duration>,
    /// At most this many points (newest kept).
    pub limit: usize,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// Connection settings. The page cache is capped well below SQLite's 2 MiB default: the
/// collector appends a few rows per interval and reads history rarely, so a large cache only
/// makes the process grow with the database (a slow, linear climb seen in the soak benchmark)
/// without making anything faster. Temporary b-trees stay on disk for the same reason.
const PRAGMAS: &str = "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-256; PRAGMA temp_store=FILE;";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS member_samples (
    ts_ms INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    member TEXT NOT NULL,
    member_id TEXT NOT NULL,
    reachable INTEGER NOT NULL,
    is_leader INTEGER NOT NULL,
    raft_term INTEGER,
    raft_index INTEGER,
    db_size_bytes REAL,
    db_size_in_use_bytes REAL,
    proposals_committed_total REAL,
    proposals_applied_total REAL,
    proposals_pending REAL,
    proposals_failed_total REAL,
    wal_fsync_p95_ms REAL,
    backend_commit_p95_ms REAL,
    read_p99_ms REAL,
    write_p99_ms REAL,
    request_rate_per_second REAL,
    leader_changes_seen_total REAL,
    wal_fsync_window_p99_ms REAL,
    kernel_wal_fsync_window_p99_ms REAL
);
CREATE INDEX IF NOT EXISTS member_samples_by_time ON member_samples (cluster, ts_ms);
CREATE TABLE IF NOT EXISTS leader_changes (
    ts_ms INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    old_leader TEXT,
    new_leader TEXT NOT NULL,
    new_leader_name TEXT NOT NULL,
    term INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leader_changes_by_time ON leader_changes (cluster, ts_ms);
CREATE TABLE IF NOT EXISTS benchmark_runs (
    id TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    workload TEXT NOT NULL,
    state TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    report_json TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS agent_sequences (
    node TEXT PRIMARY KEY,
    boot_id TEXT NOT NULL,
    last_sequence INTEGER NOT NULL,
    expected_offset INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    events INTEGER NOT NULL,
    lost_events INTEGER NOT NULL,
    lost_batches INTEGER NOT NULL
);
";

/// An agent's sequence bookkeeping, kept so that a collector restart still counts the events
/// lost in transit exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSequence {
    /// Node name.
    pub node: String,
    /// Boot id of the agent run.
    pub boot_id: String,
    /// Highest sequence accepted.
    pub last_sequence: u64,
    /// Event offset the next batch should carry.
    pub expected_offset: u64,
    /// Batches accepted, all boots.
    pub batches: u64,
    /// Events accepted, all boots.
    pub events: u64,
    /// Events lost in transit, all boots.
    pub lost_events: u64,
    /// Batches lost in transit, all boots.
    pub lost_batches: u64,
}

/// One benchmark run as stored (the report as JSON, see `bench::report::Report`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BenchmarkRun {
    /// Run id.
    pub id: String,
    /// Cluster.
    pub cluster: String,
    /// Workload name.
    pub workload: String,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub finished_ms: Option<u64>,
    /// The report, JSON.
    pub report_json: Option<String>,
    /// Why the run failed.
    pub error: Option<String>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) `<dir>/history.db`, checks that it is a writable, intact
    /// SQLite database and switches it to WAL mode.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let open_err = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        let conn = Connection::open(&path).map_err(|e| open_err(format!("cannot open: {e}")))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| open_err(e.to_string()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| open_err(format!("not a usable SQLite database: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "cannot switch to WAL journal mode (got {mode})"
            )));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| open_err(format!("integrity check failed: {e}")))?;
        if check != "ok" {
            return Err(open_err(format!("database is corrupt: {check}")));
        }
        conn.execute_batch(PRAGMAS)
            .map_err(|e| open_err(e.to_string()))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| open_err(format!("cannot create tables: {e}")))?;
        migrate(&conn).map_err(|e| open_err(format!("cannot upgrade tables: {e}")))?;
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(|e| open_err(format!("not writable: {e}")))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection under the store's lock (for modules that keep their own
    /// tables in the same file, such as the alerting state).
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard).map_err(|source| StoreError::Sql {
            path: self.path.clone(),
            source,
        })
    }

    /// Records (or updates) a benchmark run.
    pub fn save_benchmark_run(&self, r: &BenchmarkRun) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO benchmark_runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET state = ?4, finished_ms = ?6, report_json = ?7,
                 error = ?8",
            )?
            .execute(params![
                r.id,
                r.cluster,
                r.workload,
                r.state,
                to_i64(r.started_ms),
                r.finished_ms.map(to_i64),
                r.report_json,
                r.error,
            ])?;
            Ok(())
        })
    }

    /// The benchmark run `id`.
    pub fn benchmark_run(&self, id: &str) -> Result<Option<BenchmarkRun>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT id, cluster, workload, state, started_ms, finished_ms, report_json, error
                 FROM benchmark_runs WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok(BenchmarkRun {
                    id: r.get(0)?,
                    cluster: r.get(1)?,
                    workload: r.get(2)?,
                    state: r.get(3)?,
                    started_ms: to_u64(r.get(4)?),
                    finished_ms: r.get::<_, Option<i64>>(5)?.map(to_u64),
                    report_json: r.get(6)?,
                    error: r.get(7)?,
                })
            })
            .optional()
        })
    }

    /// Records an agent's sequence bookkeeping (one row per node).
    pub fn save_agent_sequence(&self, a: &AgentSequence) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO agent_sequences VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(node) DO UPDATE SET boot_id = ?2, last_sequence = ?3,
                 expected_offset = ?4, batches = ?5, events = ?6, lost_events = ?7, lost_batches = ?8",
            )?
            .execute(rusqlite::params![
                a.node,
                a.boot_id,
                to_i64(a.last_sequence),
                to_i64(a.expected_offset),
                to_i64(a.batches),
                to_i64(a.events),
                to_i64(a.lost_events),
                to_i64(a.lost_batches),
            ])?;
            Ok(())
        })
    }

    /// Saves several agents' bookkeeping in one transaction (the ingest writer thread batches
    /// what queued up while the previous write ran).
    pub fn save_agent_sequences(&self, rows: &[AgentSequence]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO agent_sequences VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(node) DO UPDATE SET boot_id = ?2, last_sequence = ?3,
                     expected_offset = ?4, batches = ?5, events = ?6, lost_events = ?7, lost_batches = ?8",
                )?;
                for a in rows {
                    st.execute(rusqlite::params![
                        a.node,
                        a.boot_id,
                        to_i64(a.last_sequence),
                        to_i64(a.expected_offset),
                        to_i64(a.batches),
                        to_i64(a.events),
                        to_i64(a.lost_events),
                        to_i64(a.lost_batches),
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Every agent's saved bookkeeping.
    pub fn agent_sequences(&self) -> Result<Vec<AgentSequence>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT node, boot_id, last_sequence, expected_offset, batches, events, lost_events, lost_batches
                 FROM agent_sequences",
            )?;
            let rows = st.query_map([], |r| {
                Ok(AgentSequence {
                    node: r.get(0)?,
                    boot_id: r.get(1)?,
                    last_sequence: to_u64(r.get(2)?),
                    expected_offset: to_u64(r.get(3)?),
                    batches: to_u64(r.get(4)?),
                    events: to_u64(r.get(5)?),
                    lost_events: to_u64(r.get(6)?),
                    lost_batches: to_u64(r.get(7)?),
                })
            })?;
            rows.collect()
        })
    }

    /// Appends points in one transaction.
    pub fn insert_points(&self, points: &[HistoryPoint]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO member_samples VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                     ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
                )?;
                for p in points {
                    st.execute(params![
                        to_i64(p.ts_ms),
                        p.cluster,
                        p.member,
                        p.member_id,
                        p.reachable,
                        p.is_leader,
                        p.raft_term.map(to_i64),
                        p.raft_index.map(to_i64),
                        p.db_size_bytes,
                        p.db_size_in_use_bytes,
                        p.proposals_committed_total,
                        p.proposals_applied_total,
                        p.proposals_pending,
                        p.proposals_failed_total,
                        p.wal_fsync_p95_ms,
                        p.backend_commit_p95_ms,
                        p.read_p99_ms,
                        p.write_p99_ms,
                        p.request_rate_per_second,
                        p.leader_changes_seen_total,
                        p.wal_fsync_window_p99_ms,
                        p.kernel_wal_fsync_window_p99_ms,
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Points matching `q`, oldest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let rows = self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM member_samples
                 WHERE cluster = ?1 AND ts_ms >= ?2 AND ts_ms <= ?3
                   AND (?4 IS NULL OR member = ?4 OR member_id = ?4)
                 ORDER BY ts_ms, member",
            )?;
            let rows = st
                .query_map(
                    params![q.cluster, to_i64(q.since_ms), to_i64(q.until_ms), q.member],
                    |r| {
                        Ok(HistoryPoint {
                            ts_ms: to_u64(r.get(0)?),
                            cluster: r.get(1)?,
                            member: r.get(2)?,
                            member_id: r.get(3)?,
                            reachable: r.get(4)?,
                            is_leader: r.get(5)?,
                            raft_term: r.get::<_, Option<i64>>(6)?.map(to_u64),
                            raft_index: r.get::<_, Option<i64>>(7)?.map(to_u64),
                            db_size_bytes: r.get(8)?,
                            db_size_in_use_bytes: r.get(9)?,
                            proposals_committed_total: r.get(10)?,
                            proposals_applied_total: r.get(11)?,
                            proposals_pending: r.get(12)?,
                            proposals_failed_total: r.get(13)?,
                            wal_fsync_p95_ms: r.get(14)?,
                            backend_commit_p95_ms: r.get(15)?,
                            read_p99_ms: r.get(16)?,
                            write_p99_ms: r.get(17)?,
                            request_rate_per_second: r.get(18)?,
                            leader_changes_seen_total: r.get(19)?,
                            wal_fsync_window_p99_ms: r.get(20)?,
                            kernel_wal_fsync_window_p99_ms: r.get(21)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        Ok(downsample(rows, q.step, q.limit))
    }

    /// Records a leader change.
    pub fn insert_leader_change(
        &self,
        cluster: &str,
        change: &LeaderChange,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO leader_changes VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    to_i64(change.at_ms),
                    cluster,
                    change.old_leader,
                    change.new_leader,
                    change.new_leader_name,
                    to_i64(change.term)
                ],
            )
            .map(|_| ())
        })
    }

    /// The last `limit` leader changes of `cluster`, oldest first.
    pub fn leader_changes(
        &self,
        cluster: &str,
        limit: usize,
    ) -> Result<Vec<LeaderChange>, StoreError> {
        let mut rows = self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT ts_ms, old_leader, new_leader, new_leader_name, term FROM leader_changes
                 WHERE cluster = ?1 ORDER BY ts_ms DESC LIMIT ?2",
            )?;
            st.query_map(params![cluster, to_i64(limit as u64)], |r| {
                Ok(LeaderChange {
                    at_ms: to_u64(r.get(0)?),
                    old_leader: r.get(1)?,
                    new_leader: r.get(2)?,
                    new_leader_name: r.get(3)?,
                    term: to_u64(r.get(4)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.reverse();
        Ok(rows)
    }

    /// Bytes the data occupies (pages in use × page size).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(to_u64((pages - free) * size))
        })
    }

    /// Deletes rows older than `now_ms - max_age`, then the oldest samples while the data is
    /// larger than `max_bytes`. Returns the number of rows deleted.
    pub fn prune(&self, now_ms: u64, max_age: Duration, max_bytes: u64) -> Result<u64, StoreError> {
        let cutoff =
            to_i64(now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)));
        let mut deleted = self.with(|c| {
            let mut n = 0;
            for table in ["member_samples", "leader_changes"] {
                n += c.execute(&format!("DELETE FROM {table} WHERE ts_ms < ?1"), [cutoff])?;
            }
            n += c.execute("DELETE FROM benchmark_runs WHERE started_ms < ?1", [cutoff])?;
            Ok(n as u64)
        })?;
        for _ in 0..20 {
            if self.used_bytes()? <= max_bytes {
                break;
            }
            let n = self.with(|c| {
                let oldest: Option<i64> = c
                    .query_row("SELECT ts_ms FROM member_samples ORDER BY ts_ms LIMIT 1 OFFSET (SELECT COUNT(*) / 10 FROM member_samples)", [], |r| r.get(0))
                    .optional()?;
                match oldest {
                    Some(ts) => c.execute("DELETE FROM member_samples WHERE ts_ms <= ?1", [ts]),
                    None => Ok(0),
                }
            })?;
            if n == 0 {
                break;
            }
            deleted += n as u64;
        }
        Ok(deleted)
    }
}

/// Keeps the last point per member in each `step` bucket, then the newest `limit` points.
/// Columns added after the first release, for stores created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("member_samples", "wal_fsync_window_p99_ms", "REAL"),
    ("member_samples", "kernel_wal_fsync_window_p99_ms", "REAL"),
];

/// Adds the columns an older store lacks (SQLite appends them, so `SELECT *` order holds).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        let mut st = conn.prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?;
        if !st.exists([column])? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
        }
    }
    Ok(())
}

fn downsample(rows: Vec<HistoryPoint>, step: Option<Duration>, limit: usize) -> Vec<HistoryPoint> {
    let mut out: Vec<HistoryPoint> = match step {
        Some(step) if step.as_millis() > 0 => {
            let step_ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
            let mut out: Vec<HistoryPoint> = Vec::new();
            let mut index: std::collections::HashMap<(String, u64), usize> =
                std::collections::HashMap::new();
            for p in rows {
                let key = (p.member_id.clone(), p.ts_ms / step_ms);
                match index.get(&key) {
                    Some(&i) => out[i] = p,
                    None => {
                        index.insert(key, out.len());
                        out.push(p);
                    }
                }
            }
            out
        }
        _ => rows,
    };
    if out.len() > limit {
        out.drain(..out.len() - limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: u64, member: &str) -> HistoryPoint {
        HistoryPoint {
            ts_ms: ts,
            cluster: "c".into(),
            member: member.into(),
            member_id: format!("id-{member}"),
            reachable: true,
            db_size_bytes: Some(ts as f64),
            ..HistoryPoint::default()
        }
    }

    fn query(since: u64, until: u64) -> HistoryQuery {
        HistoryQuery {
            cluster: "c".into(),
            member: None,
            since_ms: since,
            until_ms: until,
            step: None,
            limit: 10_000,
        }
    }

    #[test]
    fn points_survive_reopening() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|source| StoreError::CreateDir {
            path: PathBuf::new(),
            source,
        })?;
        {
            let s = Store::open(dir.path())?;
            s.insert_points(&[point(1000, "a"), point(1000, "b"), point(2000, "a")])?;
            s.insert_leader_change(
                "c",
                &LeaderChange {
                    at_ms: 1500,
                    old_leader: Some("1".into()),
                    new_leader: "2".into(),
                    new_leader_name: "b".into(),
                    term: 7,
                },
            )?;
        }
        let s = Store::open(dir.path())?;
        let all = s.history(&query(0, 3000))?;
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], point(2000, "a"));
        let only_b = s.history(&HistoryQuery {
            member: Some("b".into()),
            ..query(0, 3000)
        })?;
        assert_eq!(only_b.len(), 1);
        assert_eq!(s.history(&query(1500, 3000))?.len(), 1);
        let changes = s.leader_changes("c", 100)?;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].term, 7);
        Ok(())
    }

    #[test]
    fn a_store_from_before_the_window_columns_is_upgraded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let old_schema = SCHEMA.replace(
                ",\n    wal_fsync_window_p99_ms REAL,\n    kernel_wal_fsync_window_p99_ms REAL",
                "",
            );
            assert_ne!(old_schema, SCHEMA);
            let c = Connection::open(dir.path().join(FILE_NAME))?;
            c.execute_batch(&old_schema)?;
        }
        let s = Store::open(dir.path())?;
        let p = HistoryPoint {
            kernel_wal_fsync_window_p99_ms: Some(4.5),
            ..point(1000, "a")
        };
        s.insert_points(std::slice::from_ref(&p))?;
        assert_eq!(s.history(&query(0, 3000))?, vec![p]);
        Ok(())
    }

    #[test]
    fn step_keeps_the_last_point_per_member_and_bucket() {
        let rows = vec![
            point(0, "a"),
            point(500, "a"),
            point(900, "b"),
            point(1000, "a"),
        ];
        let out = downsample(rows, Some(Duration::from_secs(1)), 100);
        let ts: Vec<(u64, &str)> = out.iter().map(|p| (p.ts_ms, p.member.as_str())).collect();
        assert_eq!(ts, vec![(500, "a"), (900, "b"), (1000, "a")]);
        assert_eq!(downsample(out, None, 1).len(), 1);
    }

    #[test]
    fn retention_by_age_and_size() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|source| StoreError::CreateDir {
            path: PathBuf::new(),
            source,
        })?;
        let s = Store::open(dir.path())?;
        let points: Vec<HistoryPoint> = (0..5000).map(|i| point(i * 10, "a")).collect();
        s.insert_points(&points)?;
        let deleted = s.prune(50_000, Duration::from_secs(25), u64::MAX)?;
        assert_eq!(deleted, 2500);
        let before = s.used_bytes()?;
        s.prune(50_000, Duration::from_secs(3600), before / 2)?;
        assert!(s.used_bytes()? <= before / 2);
        let left = s.history(&query(0, u64::MAX / 2))?;
        assert!(!left.is_empty() && left.len() < 2500);
        assert_eq!(left.last().map(|p| p.ts_ms), Some(49_990));
        Ok(())
    }

    #[test]
    fn corrupt_or_unwritable_files_name_the_path() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 8192])?;
        let err = Store::open(dir.path())
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(FILE_NAME) && err.contains("not a usable SQLite database"),
            "{err}"
        );

        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"")?;
        let err = Store::open(&file).map(|_| ()).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("plain-file") && err.contains("cannot create directory"),
            "{err}"
        );
        Ok(())
    }
}
