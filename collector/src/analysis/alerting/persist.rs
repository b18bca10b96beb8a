//! The alerting state in the history store (its own tables in `history.db`): active alerts,
//! the transitions (history), what receivers were told (so a restart does not notify twice)
//! and the silences. Blocking calls; the engine runs them on the blocking pool.

use std::collections::HashMap;

use rusqlite::params;

use super::{
    lifecycle::{Alert, Delivered, Transition},
    silences::Silence,
};
use crate::{store::Store, store::StoreError};

/// Transitions kept in the store (the API shows the last 1000).
pub const TRANSITIONS_KEPT: i64 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_active (key TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alert_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_transitions_by_cluster ON alert_transitions (cluster, id);
CREATE TABLE IF NOT EXISTS alert_delivered (key TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alert_silences (
    id TEXT PRIMARY KEY,
    ends_at_ms INTEGER NOT NULL,
    json TEXT NOT NULL
);
";

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What was persisted.
#[derive(Debug, Default)]
pub struct Saved {
    /// Active alerts.
    pub active: HashMap<String, Alert>,
    /// Delivery state.
    pub delivered: HashMap<String, Delivered>,
    /// Silences.
    pub silences: Vec<Silence>,
}

/// Creates the tables.
pub fn init(store: &Store) -> Result<(), StoreError> {
    store.with(|c| c.execute_batch(SCHEMA))
}

/// Reads everything back (rows that no longer parse are skipped).
pub fn load(store: &Store) -> Result<Saved, StoreError> {
    store.with(|c| {
        let mut saved = Saved::default();
        let mut st = c.prepare("SELECT key, json FROM alert_active")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (k, j) = row?;
            if let Ok(a) = serde_json::from_str::<Alert>(&j) {
                saved.active.insert(k, a);
            }
        }
        let mut st = c.prepare("SELECT key, json FROM alert_delivered")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (k, j) = row?;
            if let Ok(d) = serde_json::from_str::<Delivered>(&j) {
                saved.delivered.insert(k, d);
            }
        }
        let mut st = c.prepare("SELECT json FROM alert_silences")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            if let Ok(s) = serde_json::from_str::<Silence>(&row?) {
                saved.silences.push(s);
            }
        }
        Ok(saved)
    })
}

/// Writes one evaluation's changes in one transaction: the active alerts in `changed`
/// (present in `active` = upsert, absent = delete), the whole delivery state, transitions.
pub fn save_step(
    store: &Store,
    changed: &[String],
    active: &HashMap<String, Alert>,
    delivered: &HashMap<String, Delivered>,
    transitions: &[Transition],
) -> Result<(), StoreError> {
    store.with(|c| {
        let tx = c.transaction()?;
        for key in changed {
            match active.get(key) {
                Some(a) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO alert_active (key, json) VALUES (?1, ?2)",
                        params![key, serde_json::to_string(a).map_err(json_err)?],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM alert_active WHERE key = ?1", [key])?;
                }
            }
        }
        tx.execute("DELETE FROM alert_delivered", [])?;
        for (k, d) in delivered {
            tx.execute(
                "INSERT INTO alert_delivered (key, json) VALUES (?1, ?2)",
                params![k, serde_json::to_string(d).map_err(json_err)?],
            )?;
        }
        for t in transitions {
            tx.execute(
                "INSERT INTO alert_transitions (ts_ms, cluster, json) VALUES (?1, ?2, ?3)",
                params![
                    to_i64(t.ts_ms),
                    t.alert.cluster,
                    serde_json::to_string(t).map_err(json_err)?
                ],
            )?;
        }
        if !transitions.is_empty() {
            tx.execute(
                "DELETE FROM alert_transitions WHERE id <= (SELECT MAX(id) FROM alert_transitions) - ?1",
                [TRANSITIONS_KEPT],
            )?;
        }
        tx.commit()
    })
}

/// The last `limit` transitions of `cluster` since `since_ms`, newest first.
pub fn history(
    store: &Store,
    cluster: &str,
    since_ms: u64,
    limit: usize,
) -> Result<Vec<Transition>, StoreError> {
    store.with(|c| {
        let mut st = c.prepare_cached(
            "SELECT json FROM alert_transitions WHERE cluster = ?1 AND ts_ms >= ?2
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![
                cluster,
                to_i64(since_ms),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| r.get::<_, String>(0),
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(t) = serde_json::from_str::<Transition>(&row?) {
                out.push(t);
            }
        }
        Ok(out)
    })
}

/// Saves a silence and forgets the ones that ended before `now_ms`.
pub fn put_silence(store: &Store, s: &Silence, now_ms: u64) -> Result<(), StoreError> {
    store.with(|c| {
        c.execute(
            "DELETE FROM alert_silences WHERE ends_at_ms < ?1",
            [to_i64(now_ms)],
        )?;
        c.execute(
            "INSERT OR REPLACE INTO alert_silences (id, ends_at_ms, json) VALUES (?1, ?2, ?3)",
            params![
                s.id,
                to_i64(s.ends_at_ms),
                serde_json::to_string(s).map_err(json_err)?
            ],
        )
        .map(|_| ())
    })
}

/// Forgets the silences that ended before `now_ms`; how many.
pub fn prune_silences(store: &Store, now_ms: u64) -> Result<usize, StoreError> {
    store.with(|c| {
        c.execute(
            "DELETE FROM alert_silences WHERE ends_at_ms < ?1",
            [to_i64(now_ms)],
        )
    })
}

/// Deletes a silence; whether it existed.
pub fn delete_silence(store: &Store, id: &str) -> Result<bool, StoreError> {
    store.with(|c| {
        c.execute("DELETE FROM alert_silences WHERE id = ?1", [id])
            .map(|n| n > 0)
    })
}
