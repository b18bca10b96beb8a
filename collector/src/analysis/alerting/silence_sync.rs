//! Silences shared between collectors (`--ha-election`).
//!
//! The REST Service load-balances across replicas, so a silence may be created on a follower
//! while the leader notifies. With the election on, creating a silence on any collector first
//! writes it to etcd under `<--ha-prefix>/silences/<id>` (JSON, on a lease that ends with the
//! silence, so etcd forgets ended silences by itself); deleting one deletes its key. A create
//! or delete that etcd does not take is refused (503): no local-only silence.
//!
//! Every collector lists that prefix and then watches it from the next revision (re-listing
//! after any watch error, which also covers a compacted revision) and applies puts and deletes
//! to its own silence set and store, within `--max-silences` (refusals are counted).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};

use super::silences::Silence;
use crate::{model::sync::lock, sources::ha::Leadership};

/// How long a write to etcd may take before the request is answered 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What applying a synced silence did to the local set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A silence this collector did not have.
    Added,
    /// A silence it had (its own write coming back, or a change): replaced.
    Replaced,
    /// Already ended: ignored.
    Ended,
    /// `--max-silences` active silences already: refused.
    Refused,
}

/// Applies a silence read from etcd to `set` at `now`, keeping at most `max_active` active.
pub fn apply_put(set: &mut Vec<Silence>, silence: Silence, now: u64, max_active: usize) -> Applied {
    if silence.ends_at_ms <= now {
        return Applied::Ended;
    }
    if let Some(s) = set.iter_mut().find(|s| s.id == silence.id) {
        *s = silence;
        return Applied::Replaced;
    }
    if set.iter().filter(|s| s.ends_at_ms > now).count() >= max_active {
        return Applied::Refused;
    }
    set.push(silence);
    Applied::Added
}

/// Removes the silence `id` from `set`; whether it was there.
pub fn apply_delete(set: &mut Vec<Silence>, id: &str) -> bool {
    let before = set.len();
    set.retain(|s| s.id != id);
    before != set.len()
}

/// The silence id a key under `prefix` names (`None` for a key that is not a silence's).
pub fn id_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The lease TTL (seconds) of a silence ending at `ends_at_ms`, seen at `now`: its remaining
/// time rounded up, plus a second.
pub fn lease_ttl(ends_at_ms: u64, now: u64) -> i64 {
    let secs = ends_at_ms
        .saturating_sub(now)
        .div_ceil(1000)
        .saturating_add(1);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[derive(Debug, Default)]
struct Counters {
    out: AtomicU64,
    inbound: AtomicU64,
    refused: AtomicU64,
    publish_failures: AtomicU64,
    watch_failures: AtomicU64,
    parse_failures: AtomicU64,
}

/// The etcd side of shared silences (see the module documentation).
pub struct SilenceSync {
    leadership: Leadership,
    prefix: String,
    client: std::sync::Mutex<Option<Client>>,
    counters: Counters,
}

impl std::fmt::Debug for SilenceSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SilenceSync")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl SilenceSync {
    /// Shares silences under `leadership`'s `--ha-prefix`; `None` without the election.
    pub fn new(leadership: &Leadership) -> Option<Self> {
        let prefix = format!("{}/silences/", leadership.config()?.prefix);
        Some(Self {
            leadership: leadership.clone(),
            prefix,
            client: std::sync::Mutex::new(None),
            counters: Counters::default(),
        })
    }

    /// The key prefix silences live under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn client(&self) -> Result<Client, String> {
        if let Some(c) = lock(&self.client).clone() {
            return Ok(c);
        }
        let config = self.leadership.config().ok_or("--ha-election is off")?;
        let mut last = String::from("no endpoint");
        for url in &config.etcd.endpoints {
            match crate::sources::etcd::client::connect(&config.etcd, url).await {
                Ok(client) => {
                    *lock(&self.client) = Some(client.clone());
                    return Ok(client);
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(last)
    }

    fn failed(&self, what: &str, error: String) -> String {
        bump(&self.counters.publish_failures);
        *lock(&self.client) = None;
        tracing::warn!(%error, what, "Silence not shared through etcd.");
        format!(
            "etcd is unreachable, the silence was not {what} (with --ha-election silences are shared through etcd): {error}"
        )
    }

    /// Writes `silence` under its key on a lease ending with it. The error says why (503).
    pub async fn publish(&self, silence: &Silence, now: u64) -> Result<(), String> {
        let value = serde_json::to_vec(silence).map_err(|e| e.to_string())?;
        let key = format!("{}{}", self.prefix, silence.id);
        let ttl = lease_ttl(silence.ends_at_ms, now);
        let write = async {
            let client = self.client().await?;
            let lease = client
                .lease_client()
                .grant(ttl, None)
                .await
                .map_err(|e| e.to_string())?;
            let options = PutOptions::new().with_lease(lease.id());
            client
                .kv_client()
                .put(key, value, Some(options))
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(_)) => {
                bump(&self.counters.out);
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed("created", e)),
            Err(_) => Err(self.failed("created", "timed out".to_string())),
        }
    }

    /// Deletes the key of silence `id`; whether etcd had it. The error says why (503).
    pub async fn retract(&self, id: &str) -> Result<bool, String> {
        let key = format!("{}{id}", self.prefix);
        let delete = async {
            let client = self.client().await?;
            client
                .kv_client()
                .delete(key, None)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(WRITE_TIMEOUT, delete).await {
            Ok(Ok(resp)) => {
                bump(&self.counters.out);
                Ok(resp.deleted() > 0)
            }
            Ok(Err(e)) => Err(self.failed("deleted", e)),
            Err(_) => Err(self.failed("deleted", "timed out".to_string())),
        }
    }

    /// Counts a silence applied from etcd (`applied`).
    pub fn count_in(&self, applied: Applied) {
        match applied {
            Applied::Added | Applied::Replaced => bump(&self.counters.inbound),
            Applied::Refused => bump(&self.counters.refused),
            Applied::Ended => {}
        }
    }

    /// Lists the prefix, then watches it, handing every change to `sink` (a put: `Some`
    /// silence; a delete: `None`), for the process's lifetime. Each list is a full state: ids
    /// not in it are handed over as deletes through `resync`.
    pub async fn run<F, R>(self: std::sync::Arc<Self>, mut sink: F, mut resync: R)
    where
        F: FnMut(&str, Option<Silence>),
        R: FnMut(&std::collections::HashSet<String>),
    {
        let mut backoff =
            etcd_monitor_runtime::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.watch_once(&mut sink, &mut resync).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    bump(&self.counters.watch_failures);
                    *lock(&self.client) = None;
                    tracing::warn!(%error, "Silence watch interrupted; re-listing.");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn watch_once<F, R>(&self, sink: &mut F, resync: &mut R) -> Result<(), String>
    where
        F: FnMut(&str, Option<Silence>),
        R: FnMut(&std::collections::HashSet<String>),
    {
        let client = self.client().await?;
        let list = client
            .kv_client()
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let revision = list.header().map_or(0, |h| h.revision());
        let mut ids = std::collections::HashSet::new();
        for kv in list.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let Some(id) = id_of(&self.prefix, &key) else {
                continue;
            };
            match parse(kv.value()) {
                Ok(s) => {
                    ids.insert(id.to_string());
                    sink(id, Some(s));
                }
                Err(e) => {
                    bump(&self.counters.parse_failures);
                    tracing::warn!(%id, error = %e, "Shared silence ignored: not a silence.");
                }
            }
        }
        resync(&ids);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = client
            .watch_client()
            .watch(self.prefix.as_str(), Some(options))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(resp) = stream.message().await.map_err(|e| e.to_string())? {
            if resp.canceled() {
                return Err(format!("watch canceled: {}", resp.cancel_reason()));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let Some(id) = id_of(&self.prefix, &key) else {
                    continue;
                };
                match event.event_type() {
                    EventType::Put => match parse(kv.value()) {
                        Ok(s) => sink(id, Some(s)),
                        Err(e) => {
                            bump(&self.counters.parse_failures);
                            tracing::warn!(%id, error = %e, "Shared silence ignored: not a silence.")
                        }
                    },
                    EventType::Delete => sink(id, None),
                }
            }
        }
        Err("watch stream ended".to_string())
    }

    /// `etcdmon_silences_synced_total`, `etcdmon_silence_sync_failures_total`,
    /// `etcdmon_silence_sync_refused_total`.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        let c = &self.counters;
        for (direction, n) in [("out", &c.out), ("in", &c.inbound)] {
            out.counter(
                "etcdmon_silences_synced_total",
                "Silence changes shared through etcd (--ha-election): written by this collector (out), applied from etcd (in).",
                &[("direction", direction)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        for (op, n) in [
            ("write", &c.publish_failures),
            ("watch", &c.watch_failures),
            ("parse", &c.parse_failures),
        ] {
            out.counter(
                "etcdmon_silence_sync_failures_total",
                "Silence sharing failures: a create or delete etcd did not take (answered 503), a watch interrupted (re-listed), a shared value that is not a silence (ignored).",
                &[("op", op)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        out.counter(
            "etcdmon_silence_sync_refused_total",
            "Silences from etcd not applied because --max-silences silences are already active here.",
            &[],
            c.refused.load(Ordering::Relaxed) as f64,
        );
    }
}

/// A silence as stored in etcd (JSON).
pub fn parse(value: &[u8]) -> Result<Silence, serde_json::Error> {
    serde_json::from_slice(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(id: &str, ends_at_ms: u64) -> Silence {
        Silence {
            id: id.to_string(),
            matchers: [("alertname".to_string(), "MemberUnavailable".to_string())].into(),
            starts_at_ms: 0,
            ends_at_ms,
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn a_silence_round_trips_through_its_json() {
        let s = silence("a1", 5_000);
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(parse(&bytes).unwrap(), s);
        assert!(parse(b"{\"id\": 1}").is_err());
        assert_eq!(id_of("/m/silences/", "/m/silences/a1"), Some("a1"));
        assert_eq!(id_of("/m/silences/", "/m/silences/"), None);
        assert_eq!(id_of("/m/silences/", "/m/silences/a/b"), None);
        assert_eq!(id_of("/m/silences/", "/m/notified/a"), None);
    }

    #[test]
    fn apply_adds_replaces_refuses_and_deletes() {
        let mut set = vec![silence("a", 10_000)];
        assert_eq!(
            apply_put(&mut set, silence("b", 10_000), 1_000, 3),
            Applied::Added
        );
        let mut changed = silence("a", 20_000);
        changed.comment = "longer".into();
        assert_eq!(apply_put(&mut set, changed, 1_000, 3), Applied::Replaced);
        assert_eq!(set[0].ends_at_ms, 20_000);
        assert_eq!(
            apply_put(&mut set, silence("c", 500), 1_000, 3),
            Applied::Ended
        );
        assert_eq!(
            apply_put(&mut set, silence("c", 9_000), 1_000, 2),
            Applied::Refused
        );
        assert_eq!(set.len(), 2);
        assert!(apply_delete(&mut set, "a"));
        assert!(!apply_delete(&mut set, "a"));
        assert_eq!(set.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn the_lease_outlives_the_silence_by_at_most_two_seconds() {
        assert_eq!(lease_ttl(61_000, 1_000), 61);
        assert_eq!(lease_ttl(61_001, 1_000), 62);
        assert_eq!(lease_ttl(0, 1_000), 1);
    }

    #[tokio::test]
    async fn standalone_shares_nothing() {
        assert!(SilenceSync::new(&Leadership::standalone()).is_none());
    }
}
