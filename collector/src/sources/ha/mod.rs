//! High availability: several collectors watch the same clusters, one elected leader acts.
//!
//! Every collector serves REST, `/metrics` and Subscribe. One of them, elected through an etcd
//! lease ([`etcd_monitor_patterns::Election`] under `--ha-prefix`), alone sends notifications
//! and runs scheduled work. [`Leadership`] is the one gate for that work:
//!
//! - `leadership.is_leader()` before each round of scheduled work (skip the round when false);
//! - `leadership.watch()` to wake up when leadership starts or ends;
//! - `leadership.term_token()` for work that must stop the moment leadership ends: `Some`
//!   token while leading, cancelled when the term ends;
//! - `leadership.fenced_txn(ops)` for etcd writes that must only happen under the current term
//!   (the transaction compares the leader key's create revision, so a stale leader — paused,
//!   cut off, its lease expired — cannot write).
//!
//! Without `--ha-election` the handle is [`Leadership::standalone`]: always the leader.
//!
//! A leader steps down the moment its session's local deadline passes (a tenth of the TTL
//! before etcd can expire its lease), so a leader cut off from etcd — or paused — stops acting
//! before a successor can be elected.

pub mod config;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use etcd_monitor_patterns::{CancellationToken, Election, Session};
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

pub use config::{HaArgs, HaConfig};

use crate::model::{sync::lock, time::now_ms};

/// Why an HA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The election is off (`--ha-election`): there is no term to fence with.
    #[error("--ha-election is off")]
    Disabled,
    /// This collector does not lead (any more).
    #[error("this collector is not the leader")]
    NotLeader,
    /// etcd did not answer before the term's local deadline.
    #[error("etcd did not answer before the leader's lease deadline")]
    Timeout,
    /// etcd refused or failed the request.
    #[error("etcd: {0}")]
    Etcd(String),
}

/// One term of leadership as the handle keeps it.
#[derive(Clone)]
struct Term {
    session: Arc<Session>,
    client: Client,
    key: String,
    revision: i64,
    lost: CancellationToken,
    since_ms: u64,
}

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    lost: AtomicU64,
    connect_failures: AtomicU64,
    campaign_failures: AtomicU64,
    fence_refused: AtomicU64,
}

struct Shared {
    config: Option<HaConfig>,
    id: String,
    leading: watch::Sender<bool>,
    term: Mutex<Option<Term>>,
    leader: Mutex<Option<String>>,
    counters: Counters,
}

/// Who leads, as `GET /api/v1/ha` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HaStatus {
    /// Whether `--ha-election` is on (off: this collector acts alone and always leads).
    pub enabled: bool,
    /// This collector's `--ha-id`.
    pub id: String,
    /// Whether this collector leads now.
    pub is_leader: bool,
    /// The leading collector's id as etcd has it (`null` while nobody leads).
    pub leader: Option<String>,
    /// This collector's current term (the leader key's create revision), when it leads.
    pub term: Option<i64>,
    /// Since when this collector leads (Unix ms).
    pub leader_since_ms: Option<u64>,
    /// Lease TTL, seconds: a dead leader is replaced within it.
    pub ttl_seconds: u64,
    /// Election key prefix.
    pub prefix: String,
    /// Terms this collector won.
    pub acquired: u64,
    /// Terms this collector lost (lease expired, cut off, resigned).
    pub lost: u64,
}

/// The leader gate every leader-only task uses (cheap to clone). See the module documentation.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("id", &self.inner.id)
            .field("is_leader", &self.is_leader())
            .finish()
    }
}

impl Leadership {
    /// A collector without the election: always the leader, no etcd.
    pub fn standalone() -> Self {
        Self::new(None, "standalone".to_string(), true)
    }

    fn new(config: Option<HaConfig>, id: String, leading: bool) -> Self {
        Self {
            inner: Arc::new(Shared {
                config,
                id,
                leading: watch::channel(leading).0,
                term: Mutex::new(None),
                leader: Mutex::new(None),
                counters: Counters::default(),
            }),
        }
    }

    /// Starts campaigning (in the background, for the process's lifetime) under `config`.
    pub fn start(config: HaConfig) -> Self {
        let me = Self::new(Some(config.clone()), config.id.clone(), false);
        tokio::spawn(run(me.clone(), config));
        me
    }

    /// Whether the election is on.
    pub fn is_enabled(&self) -> bool {
        self.inner.config.is_some()
    }

    /// This collector's id in the election.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Whether this collector leads now: a term is on and its lease's local deadline has not
    /// passed. Always `true` without the election.
    pub fn is_leader(&self) -> bool {
        if !self.is_enabled() {
            return true;
        }
        lock(&self.inner.term).as_ref().is_some_and(term_valid)
    }

    /// Turns `true` when a term begins and `false` when it ends (always `true` standalone).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.leading.subscribe()
    }

    /// While leading: a token cancelled the moment this term ends. `None` when not leading.
    /// Standalone: a token never cancelled.
    pub fn term_token(&self) -> Option<CancellationToken> {
        if !self.is_enabled() {
            return Some(CancellationToken::new());
        }
        lock(&self.inner.term)
            .as_ref()
            .filter(|t| term_valid(t))
            .map(|t| t.lost.clone())
    }

    /// The current term's fencing token (the leader key's create revision; 0 standalone).
    pub fn term(&self) -> Option<i64> {
        if !self.is_enabled() {
            return Some(0);
        }
        self.current().map(|t| t.revision)
    }

    /// The election's settings (`None` standalone).
    pub fn config(&self) -> Option<&HaConfig> {
        self.inner.config.as_ref()
    }

    fn current(&self) -> Option<Term> {
        lock(&self.inner.term).clone().filter(term_valid)
    }

    /// Runs `ops` in one etcd transaction only if this collector still holds the leader key of
    /// its term; a refusal ends the term. Waits at most until the term's local deadline.
    pub async fn fenced_txn(&self, ops: Vec<TxnOp>) -> Result<(), HaError> {
        if !self.is_enabled() {
            return Err(HaError::Disabled);
        }
        let term = self.current().ok_or(HaError::NotLeader)?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                term.key.as_str(),
                CompareOp::Equal,
                term.revision,
            )])
            .and_then(ops);
        let mut kv = term.client.kv_client();
        match tokio::time::timeout_at(term.session.deadline(), kv.txn(txn)).await {
            Err(_) => Err(HaError::Timeout),
            Ok(Err(e)) => Err(HaError::Etcd(e.to_string())),
            Ok(Ok(resp)) if !resp.succeeded() => {
                self.inner
                    .counters
                    .fence_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %term.key, "Fenced write refused: the leader key is gone; stepping down.");
                term.lost.cancel();
                Err(HaError::NotLeader)
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Every key under `prefix` and its value, read by the leader (waits at most until the
    /// term's local deadline).
    pub async fn read_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, HaError> {
        if !self.is_enabled() {
            return Err(HaError::Disabled);
        }
        let term = self.current().ok_or(HaError::NotLeader)?;
        let mut kv = term.client.kv_client();
        let get = kv.get(prefix, Some(GetOptions::new().with_prefix()));
        let resp = tokio::time::timeout_at(term.session.deadline(), get)
            .await
            .map_err(|_| HaError::Timeout)?
            .map_err(|e| HaError::Etcd(e.to_string()))?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    /// Who leads, for the REST API and the status page.
    pub fn status(&self) -> HaStatus {
        let term = self.current();
        let is_leader = self.is_leader();
        let leader = if !self.is_enabled() {
            Some(self.inner.id.clone())
        } else {
            lock(&self.inner.leader).clone()
        };
        let c = &self.inner.counters;
        HaStatus {
            enabled: self.is_enabled(),
            id: self.inner.id.clone(),
            is_leader,
            leader,
            term: term.as_ref().map(|t| t.revision),
            leader_since_ms: term.as_ref().map(|t| t.since_ms),
            ttl_seconds: self.config().map_or(0, |c| c.ttl.as_secs()),
            prefix: self.config().map(|c| c.prefix.clone()).unwrap_or_default(),
            acquired: c.acquired.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        }
    }

    /// `etcdmon_collector_leader` and the election's counters.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        out.gauge(
            "etcdmon_collector_leader",
            "1 when this collector is the elected leader (sends notifications, runs scheduled work); always 1 without --ha-election.",
            &[],
            if self.is_leader() { 1.0 } else { 0.0 },
        );
        let c = &self.inner.counters;
        for (direction, n) in [("acquired", &c.acquired), ("lost", &c.lost)] {
            out.counter(
                "etcdmon_collector_leadership_transitions_total",
                "Leadership terms this collector began (acquired) and ended (lost).",
                &[("direction", direction)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        for (op, n) in [
            ("connect", &c.connect_failures),
            ("campaign", &c.campaign_failures),
            ("fence", &c.fence_refused),
        ] {
            out.counter(
                "etcdmon_collector_election_failures_total",
                "Election failures, retried: etcd unreachable (connect), a session or campaign that failed (campaign), a fenced write refused because the term had ended (fence).",
                &[("op", op)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
    }

    fn begin(&self, term: Term) {
        *lock(&self.inner.term) = Some(term);
        self.inner.counters.acquired.fetch_add(1, Ordering::Relaxed);
        self.inner.leading.send_replace(true);
    }

    fn end(&self) {
        let had = lock(&self.inner.term).take().is_some();
        if had {
            self.inner.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.leading.send_replace(false);
    }
}

fn term_valid(t: &Term) -> bool {
    !t.lost.is_cancelled() && tokio::time::Instant::now() < t.session.deadline()
}

/// Campaigns for the process's lifetime: connect, open a session, campaign, lead until the
/// term ends, start over. Resigns on SIGINT/SIGTERM so a follower takes over at once.
async fn run(me: Leadership, config: HaConfig) {
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            etcd_monitor_runtime::shutdown_signal().await;
            shutdown.cancel();
        });
    }
    let mut backoff =
        etcd_monitor_runtime::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    tracing::info!(id = %config.id, prefix = %config.prefix, ttl_s = config.ttl.as_secs(), endpoints = ?config.etcd.endpoints, "Leader election on.");
    while !shutdown.is_cancelled() {
        match one_session(&me, &config, &shutdown).await {
            Ok(()) => backoff.reset(),
            Err(error) => {
                tracing::warn!(%error, "Leader election: retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
}

/// Connects to the first election endpoint that answers.
async fn connect_any(me: &Leadership, config: &HaConfig) -> Result<Client, String> {
    let mut last = String::from("no endpoint");
    for url in &config.etcd.endpoints {
        match crate::sources::etcd::client::connect(&config.etcd, url).await {
            Ok(client) => return Ok(client),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    me.inner
        .counters
        .connect_failures
        .fetch_add(1, Ordering::Relaxed);
    Err(last)
}

/// One session: campaign, lead until the term ends, then revoke the lease.
async fn one_session(
    me: &Leadership,
    config: &HaConfig,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let client = connect_any(me, config).await?;
    let session = match Session::new(client.clone(), config.ttl).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            me.inner
                .counters
                .campaign_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(e.to_string());
        }
    };
    let election = Election::new(&session, &config.election_key());
    let observer = tokio::spawn(observe(me.clone(), election.clone()));
    let result = lead(me, config, &election, &session, client, shutdown).await;
    observer.abort();
    if let Ok(session) = Arc::try_unwrap(session) {
        // Revoking deletes the leader key at once (a follower takes over without waiting for
        // the TTL); when etcd is unreachable the lease simply expires.
        let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
    }
    result
}

/// Campaigns, then holds the term until it is lost or the process shuts down.
async fn lead(
    me: &Leadership,
    config: &HaConfig,
    election: &Election,
    session: &Arc<Session>,
    client: Client,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let term = tokio::select! {
        t = election.campaign(config.id.clone()) => t.map_err(|e| {
            me.inner.counters.campaign_failures.fetch_add(1, Ordering::Relaxed);
            e.to_string()
        })?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let lost = term.lost();
    me.begin(Term {
        session: session.clone(),
        client,
        key: format!("{}/{:x}", config.election_key(), session.lease_id()),
        revision: term.revision(),
        lost: lost.clone(),
        since_ms: now_ms(),
    });
    tracing::info!(id = %config.id, term = term.revision(), "This collector leads: it sends notifications and runs scheduled work.");
    // The term also ends when the lease's local deadline passes (a paused process wakes up
    // past it); `is_leader` checks that on every call, this loop notices within 100 ms.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = lost.cancelled() => break,
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if !me.is_leader() {
                    lost.cancel();
                    break;
                }
            }
        }
    }
    me.end();
    tracing::warn!(id = %config.id, term = term.revision(), "This collector no longer leads.");
    if shutdown.is_cancelled() {
        let _ = tokio::time::timeout(Duration::from_secs(2), term.resign()).await;
    }
    Ok(())
}

/// Keeps the observed leader's id for the status page.
async fn observe(me: Leadership, election: Election) {
    let mut observer = election.observe();
    loop {
        let leader = observer.next().await;
        *lock(&me.inner.leader) = leader.map(|l| String::from_utf8_lossy(&l.value).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_always_leads_and_has_no_etcd() {
        let l = Leadership::standalone();
        assert!(l.is_leader());
        assert!(*l.watch().borrow());
        assert!(l.term_token().is_some_and(|t| !t.is_cancelled()));
        assert_eq!(l.term(), Some(0));
        let s = l.status();
        assert!(!s.enabled && s.is_leader);
        let mut page = crate::model::exposition::Exposition::new();
        l.render(&mut page);
        assert!(page.encode().contains("etcdmon_collector_leader 1"));
        assert!(matches!(l.fenced_txn(vec![]).await, Err(HaError::Disabled)));
    }
}
