//! The history store: an embedded SQLite file (`<data-dir>/history.db`, WAL mode) holding one
//! row per member per metrics interval and the leader changes; the alerting, the benchmark
//! jobs and the agent registry keep their own tables in the same file.
//! Retention by age and size. Calls are blocking; async callers use `spawn_blocking`.
//!
//! Two connections: writes (and the other modules' tables) go through one, under the store's
//! lock; history reads go through a second, read-only one, so a long history query never holds
//! the lock the writers need (WAL mode lets one writer and readers run side by side). History
//! reads are bounded in SQL: newest first through the `(cluster, ts_ms, member)` index, at most
//! `limit` points, never older than the maximum range.
//!
//! Failures are classified (`disk_full`, `corrupt`, `read_only`, `io`, `busy`, `other`), counted
//! in `etcdmon_store_errors_total{kind}` and logged once per change of state, not once per
//! statement. A file that is not a database or fails the integrity check at start-up is moved
//! aside (`history.db.corrupt-<unix seconds>`) and a fresh store is started
//! ([`Store::open_or_recover`]), so a corrupt file never turns into a crash loop.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rusqlite::ErrorCode;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::cluster::LeaderChange;
use crate::model::sync;

mod audit;
pub use audit::{AUDIT_QUERY_MAX, AuditRecord, DEFAULT_AUDIT_MAX_ROWS};

/// File name inside `--data-dir`.
pub const FILE_NAME: &str = "history.db";

/// A store failure; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created.
    #[error("history store: cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory meant to hold the database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be opened, is not a database, is corrupt or is read-only.
    #[error("history store {path}: {message}")]
    Open {
        /// The SQLite database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file is not a SQLite database or fails the integrity check.
    #[error("history store {path}: {message}")]
    Corrupt {
        /// The SQLite database file.
        path: PathBuf,
        /// What the check found.
        message: String,
    },
    /// A corrupt file could not be moved aside.
    #[error("history store {path}: cannot move the corrupt file aside to {to}: {source}")]
    MoveAside {
        /// The SQLite database file.
        path: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A statement failed.
    #[error("history store {path}: {source}")]
    Sql {
        /// The SQLite database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

/// One member at one point in time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Unix ms.
    pub ts_ms: u64,
    /// The monitored cluster: `default` from flags, else the file's `clusters[i].name`.
    pub cluster: String,
    /// Member name (or hex id).
    pub member: String,
    /// Member id (hex).
    pub member_id: String,
    /// Answered the last health check.
    pub reachable: bool,
    /// Was leader.
    pub is_leader: bool,
    /// Raft term the member reported.
    pub raft_term: Option<u64>,
    /// Raft log index the member reported.
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
    /// The monitored cluster: `default` from flags, else the file's `clusters[i].name`.
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

/// The SQLite history database: member history, leader changes and benchmark runs.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Read-only connection for history queries; never takes `conn`'s lock.
    reader: Mutex<Connection>,
    /// History queries never reach further back than this before their `until` (ms).
    max_range_ms: AtomicU64,
    health: Mutex<Option<&'static str>>,
    metrics: StoreMetrics,
    /// Bound on the admin audit trail's rows.
    audit_max_rows: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The store's own series, registered into the collector's self-metrics registry.
#[derive(Clone)]
struct StoreMetrics {
    errors: IntCounterVec,
    failing: IntGauge,
    moved_aside: IntCounter,
    pruned: IntCounterVec,
}

impl StoreMetrics {
    fn new() -> Self {
        let errors = IntCounterVec::new(
            Opts::new(
                "etcdmon_store_errors_total",
                "Failed statements on the history store, by kind (disk_full, corrupt, read_only, io, busy, other).",
            ),
            &["kind"],
        )
        .unwrap_or_else(|e| panic!("store error metric is malformed: {e}"));
        for kind in ERROR_KINDS {
            errors.with_label_values(&[kind]);
        }
        let failing = IntGauge::new(
            "etcdmon_store_failing",
            "1 while the last write to the history store failed (disk full, read-only, I/O error), else 0.",
        )
        .unwrap_or_else(|e| panic!("store failing metric is malformed: {e}"));
        let moved_aside = IntCounter::new(
            "etcdmon_store_corrupt_files_moved_total",
            "Corrupt history files moved aside at start-up (a fresh store was started instead).",
        )
        .unwrap_or_else(|e| panic!("store moved-aside metric is malformed: {e}"));
        let pruned = IntCounterVec::new(
            Opts::new(
                "etcdmon_store_pruned_rows_total",
                "Rows deleted by the retention tick, by table.",
            ),
            &["table"],
        )
        .unwrap_or_else(|e| panic!("store pruned metric is malformed: {e}"));
        Self {
            errors,
            failing,
            moved_aside,
            pruned,
        }
    }
}

/// Every value of the `kind` label of `etcdmon_store_errors_total`.
pub const ERROR_KINDS: [&str; 6] = ["disk_full", "corrupt", "read_only", "io", "busy", "other"];

/// The `kind` of a failed statement.
pub fn error_kind(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "disk_full",
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => "corrupt",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => "read_only",
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => "io",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "busy",
        _ => "other",
    }
}

/// Default maximum range of a history query (the default `--history-retention`).
pub const DEFAULT_MAX_RANGE: Duration = Duration::from_secs(7 * 24 * 3600);

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
CREATE INDEX IF NOT EXISTS member_samples_by_time_member ON member_samples (cluster, ts_ms, member);
DROP INDEX IF EXISTS member_samples_by_time;
CREATE TABLE IF NOT EXISTS leader_changes (
    ts_ms INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    old_leader TEXT,
    new_leader TEXT NOT NULL,
    new_leader_name TEXT NOT NULL,
    term INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leader_changes_by_time ON leader_changes (cluster, ts_ms);
CREATE TABLE IF NOT EXISTS leader_change_explanations (
    ts_ms INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    new_leader TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (cluster, ts_ms, new_leader)
);
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
    lost_batches INTEGER NOT NULL,
    updated_ms INTEGER
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
    /// The monitored cluster: `default` from flags, else the file's `clusters[i].name`.
    pub cluster: String,
    /// Workload name.
    pub workload: String,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub finished_ms: Option<u64>,
    /// The benchmark report as JSON, once the run finished.
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
        let corrupt_or = |e: rusqlite::Error, what: &str| {
            if error_kind(&e) == "corrupt" {
                StoreError::Corrupt {
                    path: path.clone(),
                    message: format!("{what}: {e}"),
                }
            } else {
                open_err(format!("{what}: {e}"))
            }
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| corrupt_or(e, "not a usable SQLite database"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "cannot switch to WAL journal mode (got {mode})"
            )));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt_or(e, "integrity check failed"))?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: path.clone(),
                message: format!("database is corrupt: {check}"),
            });
        }
        conn.execute_batch(PRAGMAS)
            .map_err(|e| open_err(e.to_string()))?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(audit::SCHEMA))
            .map_err(|e| corrupt_or(e, "cannot create tables"))?;
        migrate(&conn).map_err(|e| corrupt_or(e, "cannot upgrade tables"))?;
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(|e| open_err(format!("not writable: {e}")))?;
        let reader = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(format!("cannot open a reader: {e}")))?;
        reader
            .busy_timeout(Duration::from_secs(5))
            .and_then(|()| reader.execute_batch(PRAGMAS))
            .map_err(|e| open_err(format!("cannot set up the reader: {e}")))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            max_range_ms: AtomicU64::new(duration_ms(DEFAULT_MAX_RANGE)),
            health: Mutex::new(None),
            metrics: StoreMetrics::new(),
            audit_max_rows: AtomicU64::new(DEFAULT_AUDIT_MAX_ROWS),
        })
    }

    /// Opens the store like [`Store::open`]; when the file is not a database or fails the
    /// integrity check, moves it (and its `-wal`/`-shm` files) aside as
    /// `history.db.corrupt-<unix seconds>`, logs an error, counts it in
    /// `etcdmon_store_corrupt_files_moved_total` and starts a fresh store. Any other failure
    /// (permissions, a full disk, a second corrupt file) is returned: one attempt, no loop.
    pub fn open_or_recover(dir: &Path) -> Result<Self, StoreError> {
        match Self::open(dir) {
            Err(StoreError::Corrupt { path, message }) => {
                let secs = crate::model::time::now_ms() / 1000;
                let to = path.with_file_name(format!("{FILE_NAME}.corrupt-{secs}"));
                std::fs::rename(&path, &to).map_err(|source| StoreError::MoveAside {
                    path: path.clone(),
                    to: to.clone(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let side = path.with_file_name(format!("{FILE_NAME}{suffix}"));
                    if side.exists() {
                        let side_to =
                            path.with_file_name(format!("{FILE_NAME}.corrupt-{secs}{suffix}"));
                        if let Err(e) = std::fs::rename(&side, &side_to) {
                            tracing::warn!(path = %side.display(), error = %e, "Cannot move a corrupt store's side file aside.");
                        }
                    }
                }
                tracing::error!(
                    path = %path.display(),
                    moved_to = %to.display(),
                    %message,
                    "History store is corrupt; moved it aside and started a fresh one (the old history is in the moved file)."
                );
                let store = Self::open(dir)?;
                store.metrics.moved_aside.inc();
                store.metrics.errors.with_label_values(&["corrupt"]).inc();
                Ok(store)
            }
            other => other,
        }
    }

    /// Registers the store's series (`etcdmon_store_*`) in `registry`.
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.metrics.errors.clone()))?;
        registry.register(Box::new(self.metrics.failing.clone()))?;
        registry.register(Box::new(self.metrics.moved_aside.clone()))?;
        registry.register(Box::new(self.metrics.pruned.clone()))?;
        Ok(())
    }

    /// Sets how far back a history query may reach before its `until` (the retention).
    pub fn set_max_range(&self, range: Duration) {
        self.max_range_ms
            .store(duration_ms(range).max(1), Ordering::Relaxed);
    }

    /// How far back a history query may reach before its `until`.
    pub fn max_range(&self) -> Duration {
        Duration::from_millis(self.max_range_ms.load(Ordering::Relaxed))
    }

    /// Whether the last write failed (and with which kind), for tests and `/health`-style reports.
    pub fn failing(&self) -> Option<&'static str> {
        *sync::lock(&self.health)
    }

    /// Counts a failed statement and logs when the store goes from working to failing (or
    /// changes kind), not on every failure.
    fn record_failure(&self, e: &rusqlite::Error) {
        let kind = error_kind(e);
        self.metrics.errors.with_label_values(&[kind]).inc();
        if kind == "busy" || kind == "other" {
            return;
        }
        let mut health = sync::lock(&self.health);
        if *health != Some(kind) {
            *health = Some(kind);
            self.metrics.failing.set(1);
            tracing::error!(
                path = %self.path.display(),
                kind,
                error = %e,
                "History store writes are failing; the collector keeps serving from memory and retries on the next write."
            );
        }
    }

    /// Notes a successful write: logs the recovery once after failures.
    fn record_write_ok(&self) {
        let mut health = sync::lock(&self.health);
        if let Some(kind) = health.take() {
            self.metrics.failing.set(0);
            tracing::info!(path = %self.path.display(), was = kind, "History store writes work again.");
        }
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
        let mut guard = sync::lock(&self.conn);
        let before = guard.total_changes();
        let result = f(&mut guard);
        let wrote = guard.total_changes() != before;
        drop(guard);
        match result {
            Ok(r) => {
                if wrote {
                    self.record_write_ok();
                }
                Ok(r)
            }
            Err(source) => {
                self.record_failure(&source);
                Err(StoreError::Sql {
                    path: self.path.clone(),
                    source,
                })
            }
        }
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

    /// The last `limit` benchmark runs of `cluster` started at or after `since_ms`, newest
    /// first (the performance report's benchmark history).
    pub fn benchmark_runs(
        &self,
        cluster: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<BenchmarkRun>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, cluster, workload, state, started_ms, finished_ms, report_json, error
                 FROM benchmark_runs WHERE cluster = ?1 AND started_ms >= ?2
                 ORDER BY started_ms DESC LIMIT ?3",
            )?;
            st.query_map(
                params![cluster, to_i64(since_ms), to_i64(limit as u64)],
                |r| {
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
                },
            )?
            .collect()
        })
    }

    /// Records an agent's sequence bookkeeping (one row per node), stamped with the time so
    /// that the retention tick forgets agents silent for longer than the retention.
    pub fn save_agent_sequence(&self, a: &AgentSequence) -> Result<(), StoreError> {
        self.save_agent_sequences(std::slice::from_ref(a))
    }

    /// Records several agents' bookkeeping in one transaction (for batched writers).
    pub fn save_agent_sequences(&self, all: &[AgentSequence]) -> Result<(), StoreError> {
        let now = to_i64(crate::model::time::now_ms());
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO agent_sequences (node, boot_id, last_sequence, expected_offset,
                     batches, events, lost_events, lost_batches, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT(node) DO UPDATE SET boot_id = ?2, last_sequence = ?3,
                     expected_offset = ?4, batches = ?5, events = ?6, lost_events = ?7,
                     lost_batches = ?8, updated_ms = ?9",
                )?;
                for a in all {
                    st.execute(rusqlite::params![
                        a.node,
                        a.boot_id,
                        to_i64(a.last_sequence),
                        to_i64(a.expected_offset),
                        to_i64(a.batches),
                        to_i64(a.events),
                        to_i64(a.lost_events),
                        to_i64(a.lost_batches),
                        now,
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

    /// Points matching `q`, oldest first: the newest `q.limit` (after `q.step` downsampling),
    /// never older than [`Store::max_range`] before `q.until_ms`. Read newest first through the
    /// `(cluster, ts_ms, member)` index and stopped as soon as `limit` points are kept, on the
    /// read-only connection, so neither memory nor the writers' lock depends on the range.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let since = self.effective_since(q.since_ms, q.until_ms);
        let limit = q.limit.max(1);
        let step_ms = q.step.map(duration_ms).filter(|&ms| ms > 0);
        let reader = sync::lock(&self.reader);
        let result = (|| {
            // Without a step, SQL applies the limit; with one, rows stream until `limit`
            // buckets are filled.
            let sql_limit = if step_ms.is_some() {
                -1
            } else {
                to_i64(limit as u64)
            };
            let mut st = reader.prepare_cached(HISTORY_SQL)?;
            let rows = st.query_map(
                params![
                    q.cluster,
                    to_i64(since),
                    to_i64(q.until_ms),
                    q.member,
                    sql_limit
                ],
                point_from_row,
            )?;
            newest_per_bucket(rows, step_ms, limit)
        })();
        drop(reader);
        result.map_err(|source| {
            self.record_failure(&source);
            StoreError::Sql {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// `since_ms`, moved forward so the range is at most [`Store::max_range`].
    pub fn effective_since(&self, since_ms: u64, until_ms: u64) -> u64 {
        since_ms.max(until_ms.saturating_sub(self.max_range_ms.load(Ordering::Relaxed)))
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

    /// Records, or replaces while it is still settling, the explanation of the leader change of
    /// `cluster` at `at_ms` to `new_leader`; `body` is the diagnosis' JSON, opaque here.
    pub fn save_leader_change_explanation(
        &self,
        cluster: &str,
        at_ms: u64,
        new_leader: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO leader_change_explanations VALUES (?1, ?2, ?3, ?4)",
                params![to_i64(at_ms), cluster, new_leader, body],
            )
            .map(|_| ())
        })
    }

    /// The explanations of `cluster`'s last `limit` leader changes as (time, new leader, body),
    /// oldest first.
    pub fn leader_change_explanations(
        &self,
        cluster: &str,
        limit: usize,
    ) -> Result<Vec<(u64, String, String)>, StoreError> {
        let mut rows = self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT ts_ms, new_leader, body FROM leader_change_explanations
                 WHERE cluster = ?1 ORDER BY ts_ms DESC LIMIT ?2",
            )?;
            st.query_map(params![cluster, to_i64(limit as u64)], |r| {
                Ok((to_u64(r.get(0)?), r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.reverse();
        Ok(rows)
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
            for table in [
                "member_samples",
                "leader_changes",
                "leader_change_explanations",
            ] {
                n += c.execute(&format!("DELETE FROM {table} WHERE ts_ms < ?1"), [cutoff])?;
            }
            n += c.execute("DELETE FROM benchmark_runs WHERE started_ms < ?1", [cutoff])?;
            Ok(n as u64)
        })?;
        self.metrics
            .pruned
            .with_label_values(&["history"])
            .inc_by(deleted);
        let agents = self.prune_agent_sequences(cutoff)?;
        self.metrics
            .pruned
            .with_label_values(&["agent_sequences"])
            .inc_by(agents);
        let silences = self.prune_silences(to_i64(now_ms))?;
        self.metrics
            .pruned
            .with_label_values(&["alert_silences"])
            .inc_by(silences);
        deleted += agents + silences;
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
            self.metrics
                .pruned
                .with_label_values(&["history"])
                .inc_by(n as u64);
        }
        Ok(deleted)
    }

    /// Forgets the sequence bookkeeping of agents not heard from since `cutoff_ms` (rows from
    /// before the `updated_ms` column are stamped now and age from here).
    fn prune_agent_sequences(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let now = to_i64(crate::model::time::now_ms());
        self.with(|c| {
            c.execute(
                "UPDATE agent_sequences SET updated_ms = ?1 WHERE updated_ms IS NULL",
                [now],
            )?;
            let n = c.execute(
                "DELETE FROM agent_sequences WHERE updated_ms < ?1",
                [cutoff_ms],
            )?;
            Ok(n as u64)
        })
    }

    /// Deletes the silences that ended before `now_ms` (the alerting keeps them in
    /// `alert_silences`; absent when alerting never opened this store).
    fn prune_silences(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.with(|c| {
            let exists = c
                .prepare_cached(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_silences'",
                )?
                .exists([])?;
            if !exists {
                return Ok(0);
            }
            let n = c.execute("DELETE FROM alert_silences WHERE ends_at_ms < ?1", [now_ms])?;
            Ok(n as u64)
        })
    }
}

/// The history read: newest first, through `member_samples_by_time_member` (no sort step),
/// `?5` rows at most (`-1`: no limit).
const HISTORY_SQL: &str = "SELECT * FROM member_samples
     WHERE cluster = ?1 AND ts_ms >= ?2 AND ts_ms <= ?3
       AND (?4 IS NULL OR member = ?4 OR member_id = ?4)
     ORDER BY ts_ms DESC, member DESC LIMIT ?5";

fn point_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryPoint> {
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
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Columns added after the first release, for stores created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("member_samples", "wal_fsync_window_p99_ms", "REAL"),
    ("member_samples", "kernel_wal_fsync_window_p99_ms", "REAL"),
    ("agent_sequences", "updated_ms", "INTEGER"),
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

/// From rows newest first: keeps the newest point per member in each `step_ms` bucket (every
/// point without a step) and stops once `limit` points are kept. Returns them oldest first.
fn newest_per_bucket(
    rows: impl Iterator<Item = rusqlite::Result<HistoryPoint>>,
    step_ms: Option<u64>,
    limit: usize,
) -> rusqlite::Result<Vec<HistoryPoint>> {
    let mut out: Vec<HistoryPoint> = Vec::new();
    let mut seen: std::collections::HashSet<(String, u64)> = std::collections::HashSet::new();
    for row in rows {
        if out.len() >= limit {
            break;
        }
        let p = row?;
        if let Some(step) = step_ms
            && !seen.insert((p.member_id.clone(), p.ts_ms / step))
        {
            continue;
        }
        out.push(p);
    }
    out.reverse();
    Ok(out)
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
    fn leader_change_explanations_are_replaced_kept_across_reopening_and_pruned()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let s = Store::open(dir.path())?;
            s.save_leader_change_explanation("c", 1_000, "2", r#"{"v":1}"#)?;
            s.save_leader_change_explanation("c", 1_000, "2", r#"{"v":2}"#)?;
            s.save_leader_change_explanation("c", 5_000, "3", r#"{"v":3}"#)?;
            s.save_leader_change_explanation("other", 2_000, "9", "{}")?;
        }
        let s = Store::open(dir.path())?;
        let rows = s.leader_change_explanations("c", 10)?;
        assert_eq!(
            rows,
            vec![
                (1_000, "2".to_string(), r#"{"v":2}"#.to_string()),
                (5_000, "3".to_string(), r#"{"v":3}"#.to_string()),
            ]
        );
        assert_eq!(s.leader_change_explanations("c", 1)?.len(), 1);
        s.prune(10_000, Duration::from_millis(6_000), u64::MAX)?;
        assert_eq!(s.leader_change_explanations("c", 10)?.len(), 1);
        assert!(s.leader_change_explanations("other", 10)?.is_empty());
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
    fn step_keeps_the_last_point_per_member_and_bucket() -> rusqlite::Result<()> {
        // Newest first, as the store reads them.
        let rows = vec![
            point(1000, "a"),
            point(900, "b"),
            point(500, "a"),
            point(0, "a"),
        ];
        let out = newest_per_bucket(rows.clone().into_iter().map(Ok), Some(1000), 100)?;
        let ts: Vec<(u64, &str)> = out.iter().map(|p| (p.ts_ms, p.member.as_str())).collect();
        assert_eq!(ts, vec![(500, "a"), (900, "b"), (1000, "a")]);
        let newest = newest_per_bucket(rows.into_iter().map(Ok), None, 1)?;
        assert_eq!(newest, vec![point(1000, "a")]);
        Ok(())
    }

    /// Builds `n` rows for members a, b, c quickly (one transaction of plain SQL).
    fn bulk(s: &Store, n: u64) -> Result<(), StoreError> {
        s.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO member_samples (ts_ms, cluster, member, member_id, reachable, is_leader, db_size_bytes)
                     VALUES (?1, 'c', ?2, ?3, 1, 0, ?4)",
                )?;
                for i in 0..n {
                    let m = ["a", "b", "c"][(i % 3) as usize];
                    st.execute(params![to_i64(i), m, format!("id-{m}"), i as f64])?;
                }
            }
            tx.commit()
        })
    }

    #[test]
    fn history_uses_the_index_newest_first_without_sorting() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(dir.path())?;
        let reader = s.reader.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut st = reader.prepare(&format!("EXPLAIN QUERY PLAN {HISTORY_SQL}"))?;
        let plan: Vec<String> = st
            .query_map(params!["c", 0, 10, None::<String>, 5], |r| {
                r.get::<_, String>(3)
            })?
            .collect::<rusqlite::Result<_>>()?;
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX member_samples_by_time_member"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
        assert!(
            !plan.contains("SCAN member_samples"),
            "no table scan: {plan}"
        );
        Ok(())
    }

    #[test]
    fn history_is_bounded_by_limit_and_by_the_maximum_range() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(dir.path())?;
        bulk(&s, 300_000)?;
        let got = s.history(&HistoryQuery {
            limit: 1000,
            ..query(0, 500_000_000)
        })?;
        assert_eq!(got.len(), 1000);
        assert_eq!(got.last().map(|p| p.ts_ms), Some(299_999));
        assert_eq!(got.first().map(|p| p.ts_ms), Some(299_000));
        assert!(got.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
        // A step keeps at most `limit` buckets, newest first.
        let stepped = s.history(&HistoryQuery {
            limit: 10,
            step: Some(Duration::from_millis(300)),
            member: Some("a".into()),
            ..query(0, 500_000_000)
        })?;
        assert_eq!(stepped.len(), 10);
        assert!(stepped.iter().all(|p| p.member == "a"));
        assert_eq!(stepped.last().map(|p| p.ts_ms), Some(299_997));
        // since=0 is clamped to the maximum range before `until`.
        s.set_max_range(Duration::from_millis(100));
        assert_eq!(s.effective_since(0, 200_000), 199_900);
        let clamped = s.history(&query(0, 200_000))?;
        assert_eq!(clamped.len(), 101);
        assert_eq!(clamped.first().map(|p| p.ts_ms), Some(199_900));
        Ok(())
    }

    #[test]
    fn old_agent_sequences_and_expired_silences_are_pruned() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(dir.path())?;
        // No alerting table yet: pruning still works.
        s.prune(
            crate::model::time::now_ms(),
            Duration::from_secs(3600),
            u64::MAX,
        )?;
        s.save_agent_sequences(&[
            AgentSequence {
                node: "old".into(),
                ..AgentSequence::default()
            },
            AgentSequence {
                node: "fresh".into(),
                ..AgentSequence::default()
            },
        ])?;
        let now = crate::model::time::now_ms();
        s.with(|c| {
            c.execute(
                "UPDATE agent_sequences SET updated_ms = ?1 WHERE node = 'old'",
                [to_i64(now - 7_200_000)],
            )?;
            c.execute_batch(
                "CREATE TABLE alert_silences (id TEXT PRIMARY KEY, ends_at_ms INTEGER NOT NULL, json TEXT NOT NULL);",
            )?;
            c.execute(
                "INSERT INTO alert_silences VALUES ('ended', ?1, '{}'), ('running', ?2, '{}')",
                [to_i64(now - 1), to_i64(now + 60_000)],
            )?;
            Ok(())
        })?;
        let deleted = s.prune(now, Duration::from_secs(3600), u64::MAX)?;
        assert_eq!(deleted, 2);
        let nodes: Vec<String> = s.agent_sequences()?.into_iter().map(|a| a.node).collect();
        assert_eq!(nodes, vec!["fresh".to_string()]);
        let left: Vec<String> = s.with(|c| {
            c.prepare("SELECT id FROM alert_silences")?
                .query_map([], |r| r.get(0))?
                .collect()
        })?;
        assert_eq!(left, vec!["running".to_string()]);
        let registry = Registry::new();
        s.register_metrics(&registry)?;
        let text = render(&registry);
        assert!(
            text.contains("etcdmon_store_pruned_rows_total{table=\"agent_sequences\"} 1"),
            "{text}"
        );
        Ok(())
    }

    /// The store's counters as `/metrics` writes them.
    fn render(registry: &Registry) -> String {
        let mut page = crate::model::exposition::Exposition::new();
        page.extend(registry.gather());
        page.encode()
    }

    #[test]
    fn a_full_disk_is_counted_logged_once_and_recovers() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(dir.path())?;
        let registry = Registry::new();
        s.register_metrics(&registry)?;
        let pages: i64 = s.with(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0)))?;
        // SQLite reports SQLITE_FULL once the file would pass max_page_count: a full disk.
        s.with(|c| {
            c.query_row(
                &format!("PRAGMA max_page_count = {}", pages + 2),
                [],
                |_| Ok(()),
            )
        })?;
        let mut failures = 0;
        for i in 0..200 {
            let batch: Vec<HistoryPoint> = (0..50).map(|j| point(i * 100 + j, "a")).collect();
            if let Err(e) = s.insert_points(&batch) {
                assert!(e.to_string().contains(FILE_NAME), "{e}");
                failures += 1;
            }
        }
        assert!(failures > 0, "the insert never hit the page limit");
        assert_eq!(s.failing(), Some("disk_full"));
        let text = render(&registry);
        assert!(
            text.contains(&format!(
                "etcdmon_store_errors_total{{kind=\"disk_full\"}} {failures}"
            )),
            "{text}"
        );
        assert!(text.contains("etcdmon_store_failing 1"), "{text}");
        // Reads still answer while writes fail.
        assert!(!s.history(&query(0, 500_000_000))?.is_empty());
        assert_eq!(s.failing(), Some("disk_full"));
        // Space again: the next write succeeds and the state clears.
        s.with(|c| c.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(())))?;
        s.insert_points(&[point(1, "b")])?;
        assert_eq!(s.failing(), None);
        assert!(render(&registry).contains("etcdmon_store_failing 0"));
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_a_fresh_store_started() -> anyhow::Result<()> {
        // Garbage: not a database at all.
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 8192])?;
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
        let s = Store::open_or_recover(dir.path())?;
        s.insert_points(&[point(1, "a")])?;
        assert_eq!(s.history(&query(0, 10))?.len(), 1);
        let moved: Vec<String> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("history.db.corrupt-"))
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&moved[0]))?,
            vec![b'x'; 8192],
            "the old file is kept, untouched"
        );
        let registry = Registry::new();
        s.register_metrics(&registry)?;
        assert!(render(&registry).contains("etcdmon_store_corrupt_files_moved_total 1"));
        drop(s);

        // A real database with damaged pages fails the integrity check the same way.
        let dir = tempfile::tempdir()?;
        {
            let s = Store::open(dir.path())?;
            bulk(&s, 20_000)?;
            s.with(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))?;
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path)?;
        let len = bytes.len();
        for b in &mut bytes[len / 3..len / 3 + 4096 * 4] {
            *b = 0xA5;
        }
        std::fs::write(&path, bytes)?;
        let s = Store::open_or_recover(dir.path())?;
        assert!(s.history(&query(0, 500_000_000))?.is_empty());

        // Permissions or a missing directory are not corruption: nothing is moved.
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"")?;
        assert!(matches!(
            Store::open_or_recover(&file),
            Err(StoreError::CreateDir { .. })
        ));
        Ok(())
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
        let left = s.history(&query(0, 500_000_000))?;
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
