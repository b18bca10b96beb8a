//! The alerting engine: evaluates [`rules`] over named [`signals`] of every cluster each
//! evaluation interval, drives the [`lifecycle`] (pending → firing → resolved, dedup,
//! [`silences`]), records everything in the store ([`persist`]) and hands firing and resolved
//! alerts to an [`AlertSink`] (the app wires it to the notification channels; alerting never
//! calls them itself).
//!
//! A cluster is evaluated only after its first health check, and an active alert whose signal
//! has no data (member unreachable, no scrape yet) keeps its state; so a collector restart
//! neither resolves nor re-notifies what was firing.

pub mod handover;
pub mod lifecycle;
pub mod persist;
pub mod rules;
pub mod signals;
pub mod silence_sync;
pub mod silences;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use lifecycle::{Alert, AlertState, Candidate, Lifecycle, Transition};
use rules::{Rule, RuleView, RulesError};
use signals::{Sample, Signal, SignalHistory};
use silences::{NewSilence, Silence};

use crate::{
    model::cluster::Clusters, model::config::Thresholds, model::time::now_ms,
    sources::ingest::AgentRegistry, store::Store, store::StoreError,
};
use crate::{model::sync::lock, model::sync::read, model::sync::write};

/// Why alerting could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// The rules file is invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request was invalid (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// A request was valid but a bound refuses it (e.g. `--max-silences`).
    #[error("{0}")]
    Refused(String),
    /// A dependency the request needs is unreachable (etcd, for shared silences).
    #[error("{0}")]
    Unavailable(String),
}

/// Where the engine hands each alert to deliver (a firing alert, or its resolution): the
/// notification channels in the running collector, [`DiscardAlerts`] in tests. Must not block:
/// it is called with the evaluation loop waiting.
pub trait AlertSink: Send + Sync {
    /// Queues `alert` (firing, or its resolution) for delivery.
    fn notify(&self, alert: &Alert);
    /// Re-sends a still-firing `alert` where the receiver forgets alerts not re-sent.
    fn refresh(&self, _alert: &Alert) {}
    /// Adds the sink's own Prometheus series (deliveries, failures, drops) to `out`.
    fn render(&self, _out: &mut crate::model::exposition::Exposition) {}
}

/// A sink that drops every alert (for an engine nobody is notified by).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardAlerts;

impl AlertSink for DiscardAlerts {
    fn notify(&self, _alert: &Alert) {}
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct AlertingSettings {
    /// `--rules`.
    pub rules_path: Option<PathBuf>,
    /// Seed thresholds.
    pub thresholds: Thresholds,
    /// Evaluation period.
    pub interval: Duration,
    /// Dedup window.
    pub dedup_window: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    evaluations: AtomicU64,
    reload_ok: AtomicU64,
    reload_failed: AtomicU64,
    store_failures: AtomicU64,
}

struct Inner {
    settings: AlertingSettings,
    rules: RwLock<Arc<Vec<Rule>>>,
    lifecycle: Mutex<Lifecycle>,
    silences: RwLock<Vec<Silence>>,
    history: Mutex<SignalHistory>,
    store: Option<Arc<Store>>,
    notifier: Arc<dyn AlertSink>,
    clusters: Clusters,
    registry: Option<Arc<AgentRegistry>>,
    counters: Counters,
    silence_seq: AtomicU64,
    last_refresh_ms: AtomicU64,
    /// Verdicts of the diagnosis engine, attached to the disk-path alerts.
    diagnoses: std::sync::OnceLock<Arc<crate::analysis::diagnosis::Diagnoses>>,
    /// The leader gate and the notification-state hand-over (`--ha-election`).
    handover: std::sync::OnceLock<handover::Handover>,
    /// Silences shared through etcd (`--ha-election`).
    silence_sync: std::sync::OnceLock<Arc<silence_sync::SilenceSync>>,
}

/// Rules about a slow WAL sync or backend commit: their alerts carry the member's diagnosis
/// (`annotations.diagnosis`, and `{{ diagnosis }}` in templates), so the page an operator gets
/// already says whether the disk, a neighbour, the CPU or the network is to blame.
pub const DIAGNOSED_RULES: &[&str] = &[
    "SlowWalFsync",
    "KernelSlowWalFsync",
    "FsyncSlowButKernelFast",
    "SlowBackendCommit",
    "etcdHighFsyncDurations",
    "etcdHighCommitDurations",
];

/// How often the evaluation loop looks for a finished health check.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// How often firing alerts are re-sent to Alertmanager (Prometheus re-sends every minute too).
const REFRESH_EVERY_MS: u64 = 60_000;

/// How often ended silences are forgotten (in memory and in the store).
const SILENCE_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The engine (cheap to clone).
#[derive(Clone)]
pub struct Alerting {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting")
            .field("rules", &self.rules().len())
            .finish()
    }
}

/// Loads the rules `settings` describe: the built-ins, merged with the file when given.
pub fn load_rules(settings: &AlertingSettings) -> Result<Vec<Rule>, RulesError> {
    match &settings.rules_path {
        Some(path) => rules::load(path, &settings.thresholds),
        None => Ok(rules::defaults(&settings.thresholds)),
    }
}

fn max_window(rules: &[Rule]) -> Duration {
    rules
        .iter()
        .flat_map(|r| r.expr.0.iter())
        .filter(|c| c.signal.windowed())
        .map(|c| c.window)
        .max()
        .unwrap_or(rules::DEFAULT_WINDOW)
}

/// A number for messages: integers as such, else three significant decimals.
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Samples of one cluster by (signal, window), computed once per evaluation.
type SampleCache = HashMap<(Signal, Duration), Vec<Sample>>;

/// The template context of `s` when the rest of `rule`'s conditions hold for the same member
/// (each adds its sample's context); `None` when one does not.
fn joined_context(
    rule: &Rule,
    s: &Sample,
    cache: &SampleCache,
) -> Option<BTreeMap<String, String>> {
    let mut context = s.context.clone();
    for c in &rule.expr.0[1..] {
        let others = cache.get(&(c.signal, c.window))?;
        let hit = others.iter().find(|o| {
            c.op.holds(o.value, c.threshold)
                && o.labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_none_or(|x| x == v))
        })?;
        context.extend(hit.context.clone());
    }
    Some(context)
}

/// Values templates may use: labels (bare and as `labels.<name>`), the samples' context,
/// `value` in several units, `threshold` and `for`.
fn template_vars(
    rule: &Rule,
    labels: &BTreeMap<String, String>,
    context: BTreeMap<String, String>,
    value: f64,
) -> BTreeMap<String, String> {
    let first = &rule.expr.0[0];
    let mut vars: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (format!("labels.{k}"), v.clone()))
        .collect();
    for (k, v) in labels {
        vars.insert(k.clone(), v.clone());
    }
    vars.extend(context);
    vars.insert("value".into(), fmt_value(value));
    vars.insert("value_ms".into(), format!("{:.1}", value * 1000.0));
    vars.insert("value_percent".into(), format!("{:.1}", value * 100.0));
    vars.insert("threshold".into(), fmt_value(first.threshold));
    vars.insert(
        "for".into(),
        humantime::format_duration(rule.for_).to_string(),
    );
    vars
}

/// One evaluation's outcome, between its steps.
struct Round {
    transitions: Vec<Transition>,
    notify: Vec<Alert>,
    changed: Vec<String>,
    active: HashMap<String, Alert>,
    delivered: HashMap<String, lifecycle::Delivered>,
    refresh: Vec<Alert>,
}

fn log_transitions(transitions: &[Transition]) {
    for t in transitions {
        tracing::info!(
            alertname = %t.alert.name,
            state = t.state.as_str(),
            cluster = %t.alert.cluster,
            member = t.alert.member.as_deref().unwrap_or(""),
            value = t.alert.value,
            silenced = t.alert.silenced_by.is_some(),
            "Alert transition."
        );
    }
}

/// Escapes a Prometheus label value.
impl Alerting {
    /// Loads the rules (an invalid file fails here, naming the line), restores the persisted
    /// state and returns the engine; [`Alerting::spawn`] starts it.
    pub fn new(
        settings: AlertingSettings,
        clusters: Clusters,
        registry: Option<Arc<AgentRegistry>>,
        store: Option<Arc<Store>>,
        notifier: Arc<dyn AlertSink>,
    ) -> Result<Self, AlertingError> {
        let rules = load_rules(&settings)?;
        let mut lifecycle = Lifecycle::new(settings.dedup_window);
        let mut silences = Vec::new();
        if let Some(store) = &store {
            persist::init(store)?;
            let saved = persist::load(store)?;
            lifecycle.active = saved.active;
            lifecycle.delivered = saved.delivered;
            silences = saved.silences;
            if !lifecycle.active.is_empty() {
                tracing::info!(
                    active = lifecycle.active.len(),
                    "Active alerts restored from the store."
                );
            }
        }
        let mut history = SignalHistory::default();
        history.max_window = max_window(&rules);
        tracing::info!(rules = rules.len(), file = ?settings.rules_path, "Alert rules loaded.");
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                rules: RwLock::new(Arc::new(rules)),
                lifecycle: Mutex::new(lifecycle),
                silences: RwLock::new(silences),
                history: Mutex::new(history),
                store,
                notifier,
                clusters,
                registry,
                counters: Counters::default(),
                silence_seq: AtomicU64::new(0),
                last_refresh_ms: AtomicU64::new(now_ms()),
                diagnoses: std::sync::OnceLock::new(),
                handover: std::sync::OnceLock::new(),
                silence_sync: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Starts the evaluation loop and, on Unix, the SIGHUP reload handler.
    pub fn spawn(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            // Evaluate as soon as a health check has published new state (so an alert fires
            // one health round after the fault, not one round plus an interval), and at least
            // every interval for the scraped and kernel-side signals.
            let interval = me.inner.settings.interval;
            let mut tick = tokio::time::interval(POLL_EVERY.min(interval));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = 0u64;
            let mut last: Option<std::time::Instant> = None;
            let mut pruned = std::time::Instant::now();
            loop {
                tick.tick().await;
                if pruned.elapsed() >= SILENCE_PRUNE_EVERY {
                    pruned = std::time::Instant::now();
                    me.prune_silences().await;
                }
                let newest = me
                    .inner
                    .clusters
                    .iter()
                    .map(|c| c.update(|s| s.updated_at_ms))
                    .max()
                    .unwrap_or(0);
                if newest != seen || last.is_none_or(|t| t.elapsed() >= interval) {
                    seen = newest;
                    last = Some(std::time::Instant::now());
                    me.evaluate().await;
                }
            }
        });
        #[cfg(unix)]
        {
            let me = self.clone();
            tokio::spawn(async move {
                let mut hup = match tokio::signal::unix::signal(
                    tokio::signal::unix::SignalKind::hangup(),
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot listen for SIGHUP; rules reload disabled.");
                        return;
                    }
                };
                while hup.recv().await.is_some() {
                    let _ = me.reload();
                }
            });
        }
    }

    /// Reloads the rules file; on error the old rules stay and the error is logged and
    /// counted.
    pub fn reload(&self) -> Result<usize, RulesError> {
        match load_rules(&self.inner.settings) {
            Ok(rules) => {
                let n = rules.len();
                lock(&self.inner.history).max_window = max_window(&rules);
                *write(&self.inner.rules) = Arc::new(rules);
                self.inner
                    .counters
                    .reload_ok
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(rules = n, "Alert rules reloaded.");
                Ok(n)
            }
            Err(e) => {
                self.inner
                    .counters
                    .reload_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "Alert rules reload failed; keeping the previous rules.");
                Err(e)
            }
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<RuleView> {
        read(&self.inner.rules).iter().map(RuleView::from).collect()
    }

    /// Evaluates every rule once, records and notifies (only the leader notifies under
    /// `--ha-election`; see [`handover`]).
    pub async fn evaluate(&self) {
        let now = now_ms();
        let mut gate = match self.inner.handover.get() {
            Some(h) => h.begin().await,
            None => handover::Gate {
                leading: true,
                takeover: None,
            },
        };
        let mut round = self.step(now, &mut gate);
        self.inner
            .counters
            .evaluations
            .fetch_add(1, Ordering::Relaxed);
        log_transitions(&round.transitions);
        if let Some(h) = self.inner.handover.get() {
            round.notify = h
                .commit(&gate, std::mem::take(&mut round.notify), now)
                .await;
            if !gate.leading {
                round.refresh.clear();
            }
        }
        // Persist before notifying: a crash in between can lose a notification but never
        // send one twice.
        self.persist(&round).await;
        for alert in &round.notify {
            self.inner.notifier.notify(alert);
        }
        for alert in &round.refresh {
            self.inner.notifier.refresh(alert);
        }
    }

    /// Evaluates the rules and advances the lifecycle (a new term's notified state applied
    /// first); returns what to record and send.
    fn step(&self, now: u64, gate: &mut handover::Gate) -> Round {
        let rules = read(&self.inner.rules).clone();
        let (candidates, mut known) = self.candidates(&rules, now);
        let names: HashSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let silences = read(&self.inner.silences).clone();
        let mut lc = lock(&self.inner.lifecycle);
        for (k, a) in &lc.active {
            if !names.contains(a.name.as_str()) {
                known.insert(k.clone());
            }
        }
        let stale = max_window(&rules).max(Duration::from_secs(300));
        if let (Some(h), true) = (self.inner.handover.get(), gate.leading) {
            if let Some(notified) = gate.takeover.take() {
                h.apply(&mut lc, notified, now);
                gate.takeover = Some(HashMap::new());
            }
            let holding: HashSet<String> = candidates.iter().map(|c| c.alert.key.clone()).collect();
            h.settle(&mut lc, &holding, &known, now, lifecycle::ms(stale));
        }
        let out = lc.step(now, candidates, &known, stale, |a| {
            silences::muting(&silences, a, now).map(|s| s.id.clone())
        });
        let refresh = self.due_refresh(&lc, &out.notify, now);
        Round {
            transitions: out.transitions,
            notify: out.notify,
            changed: out.changed,
            active: lc.active.clone(),
            delivered: lc.delivered.clone(),
            refresh,
        }
    }

    /// Firing alerts to re-send to Alertmanager, once every [`REFRESH_EVERY_MS`].
    fn due_refresh(&self, lc: &Lifecycle, notify: &[Alert], now: u64) -> Vec<Alert> {
        let last = self.inner.last_refresh_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < REFRESH_EVERY_MS {
            return Vec::new();
        }
        self.inner.last_refresh_ms.store(now, Ordering::Relaxed);
        lc.active
            .iter()
            .filter(|(k, a)| {
                a.state == AlertState::Firing
                    && a.silenced_by.is_none()
                    && lc.delivered.get(*k).and_then(|d| d.state) == Some(AlertState::Firing)
                    && !notify.iter().any(|n| &n.key == *k)
            })
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Records a round in the store (active alerts, delivery state, transitions).
    async fn persist(&self, round: &Round) {
        let Some(store) = &self.inner.store else {
            return;
        };
        if round.changed.is_empty() && round.transitions.is_empty() && round.notify.is_empty() {
            return;
        }
        let store = store.clone();
        let (changed, active, delivered, transitions) = (
            round.changed.clone(),
            round.active.clone(),
            round.delivered.clone(),
            round.transitions.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            persist::save_step(&store, &changed, &active, &delivered, &transitions)
        })
        .await;
        let failed = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failed {
            self.inner
                .counters
                .store_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "Cannot record alert state.");
        }
    }

    /// Makes notifications and scheduled re-sends leader-only (`--ha-election`): followers
    /// evaluate and record, the leader alone notifies, handing its state over through etcd.
    pub fn attach_leadership(&self, leadership: crate::sources::ha::Leadership) {
        let _ = self.inner.handover.set(handover::Handover::new(leadership));
    }

    /// The leader gate attached with [`Alerting::attach_leadership`], if any.
    pub fn leadership(&self) -> Option<&crate::sources::ha::Leadership> {
        self.inner
            .handover
            .get()
            .map(handover::Handover::leadership)
    }

    /// Attaches the diagnosis engine's verdicts (see [`DIAGNOSED_RULES`]).
    pub fn attach_diagnoses(&self, diagnoses: Arc<crate::analysis::diagnosis::Diagnoses>) {
        let _ = self.inner.diagnoses.set(diagnoses);
    }

    /// The member's verdict for an alert of `rule`, when the rule is about the disk path; the
    /// newest leader change explained, when it is a leader-change rule.
    fn diagnosis_for(
        &self,
        rule: &str,
        cluster: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        let diagnoses = self.inner.diagnoses.get()?;
        if let Some(text) = crate::analysis::diagnosis::leader_change_text(diagnoses, rule, cluster)
        {
            return Some(text);
        }
        if !DIAGNOSED_RULES.contains(&rule) {
            return None;
        }
        let member = labels.get("member")?;
        crate::analysis::diagnosis::verdict_text(diagnoses, cluster, member)
    }

    /// Candidates whose conditions hold, and every key that was evaluated.
    fn candidates(&self, rules: &[Rule], now: u64) -> (Vec<Candidate>, HashSet<String>) {
        let mut out = Vec::new();
        let mut known = HashSet::new();
        let mut history = lock(&self.inner.history);
        for cluster in self.inner.clusters.iter() {
            let state = cluster.snapshot();
            if state.updated_at_ms == 0 {
                continue;
            }
            history.record(&state, self.inner.registry.as_deref(), now);
            let mut cache: SampleCache = HashMap::new();
            for rule in rules {
                for c in &rule.expr.0 {
                    cache.entry((c.signal, c.window)).or_insert_with(|| {
                        signals::samples(c.signal, c.window, &state, &history, now)
                    });
                }
                self.rule_candidates(rule, &state.cluster, &cache, now, &mut out, &mut known);
            }
        }
        (out, known)
    }

    /// One rule over one cluster's samples: every sample's key is known; those where every
    /// condition holds are candidates.
    fn rule_candidates(
        &self,
        rule: &Rule,
        cluster: &str,
        cache: &SampleCache,
        now: u64,
        out: &mut Vec<Candidate>,
        known: &mut HashSet<String>,
    ) {
        let first = &rule.expr.0[0];
        let Some(samples) = cache.get(&(first.signal, first.window)) else {
            return;
        };
        for s in samples {
            let mut labels = BTreeMap::new();
            labels.insert("alertname".to_string(), rule.name.clone());
            labels.insert("severity".to_string(), rule.severity.as_str().to_string());
            labels.extend(s.labels.clone());
            labels.extend(rule.labels.clone());
            let key = lifecycle::fingerprint(&labels);
            known.insert(key.clone());
            if !first.op.holds(s.value, first.threshold) {
                continue;
            }
            let Some(context) = joined_context(rule, s, cache) else {
                continue;
            };
            out.push(self.candidate(rule, cluster, s, labels, context, now));
        }
    }

    /// The candidate of `rule` for sample `s`: labels, rendered annotations, diagnosis.
    fn candidate(
        &self,
        rule: &Rule,
        cluster: &str,
        s: &Sample,
        labels: BTreeMap<String, String>,
        context: BTreeMap<String, String>,
        now: u64,
    ) -> Candidate {
        let key = lifecycle::fingerprint(&labels);
        let mut vars = template_vars(rule, &labels, context, s.value);
        let diagnosis = self.diagnosis_for(&rule.name, cluster, &labels);
        if let Some(text) = &diagnosis {
            vars.insert("diagnosis".into(), text.clone());
        }
        let mut annotations: BTreeMap<String, String> = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.render(&vars)))
            .collect();
        if let Some(text) = diagnosis {
            annotations.entry("diagnosis".into()).or_insert(text);
        }
        Candidate {
            alert: Alert {
                key,
                name: rule.name.clone(),
                severity: rule.severity.as_str().to_string(),
                cluster: cluster.to_string(),
                member: s.labels.get("member").cloned(),
                labels,
                annotations,
                state: AlertState::Pending,
                value: s.value,
                active_since_ms: now,
                fired_at_ms: None,
                resolved_at_ms: None,
                last_eval_ms: now,
                silenced_by: None,
            },
            for_: rule.for_,
        }
    }

    /// Active alerts (pending and firing) of `cluster`, firing first, then by name.
    pub fn active(&self, cluster: &str) -> Vec<Alert> {
        let mut v: Vec<Alert> = lock(&self.inner.lifecycle)
            .active
            .values()
            .filter(|a| a.cluster == cluster)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (b.state == AlertState::Firing)
                .cmp(&(a.state == AlertState::Firing))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.member.cmp(&b.member))
        });
        v
    }

    /// The last `limit` transitions of `cluster` since `since_ms`, newest first.
    pub async fn history(
        &self,
        cluster: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Transition>, AlertingError> {
        let Some(store) = self.inner.store.clone() else {
            return Ok(Vec::new());
        };
        let cluster = cluster.to_string();
        tokio::task::spawn_blocking(move || persist::history(&store, &cluster, since_ms, limit))
            .await
            .map_err(|e| AlertingError::Invalid(e.to_string()))?
            .map_err(AlertingError::from)
    }

    /// Silences in effect or not yet expired.
    pub fn silences(&self) -> Vec<Silence> {
        let now = now_ms();
        read(&self.inner.silences)
            .iter()
            .filter(|s| s.ends_at_ms > now)
            .cloned()
            .collect()
    }

    /// Adds a silence on behalf of `created_by`, within `limits`.
    pub async fn add_silence(
        &self,
        body: NewSilence,
        created_by: &str,
        limits: &silences::SilenceLimits,
    ) -> Result<Silence, AlertingError> {
        let now = now_ms();
        let seq = self.inner.silence_seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{:04x}", now, seq & 0xffff);
        let silence = body
            .validate(id, now, created_by, limits)
            .map_err(AlertingError::Invalid)?;
        {
            let all = read(&self.inner.silences);
            let active = all.iter().filter(|s| s.ends_at_ms > now).count();
            if active >= limits.max_active {
                return Err(AlertingError::Refused(format!(
                    "matchers: {active} silences are active, the most --max-silences allows; delete one or wait until one ends"
                )));
            }
        }
        if let Some(sync) = self.inner.silence_sync.get() {
            sync.publish(&silence, now)
                .await
                .map_err(AlertingError::Unavailable)?;
        }
        if let Some(store) = self.inner.store.clone() {
            let s = silence.clone();
            tokio::task::spawn_blocking(move || persist::put_silence(&store, &s, now))
                .await
                .map_err(|e| AlertingError::Invalid(e.to_string()))??;
        }
        let mut all = write(&self.inner.silences);
        all.retain(|s| s.ends_at_ms > now);
        all.push(silence.clone());
        tracing::info!(id = %silence.id, matchers = ?silence.matchers, ends_at_ms = silence.ends_at_ms, created_by = %silence.created_by, "Silence added.");
        Ok(silence)
    }

    /// Forgets the silences that have ended, in memory and in the store.
    pub async fn prune_silences(&self) {
        let now = now_ms();
        write(&self.inner.silences).retain(|s| s.ends_at_ms > now);
        if let Some(store) = self.inner.store.clone() {
            match tokio::task::spawn_blocking(move || persist::prune_silences(&store, now)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(silences = n, "Ended silences pruned."),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.inner
                        .counters
                        .store_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Ended silences not pruned from the store.");
                }
                Err(e) => tracing::warn!(error = %e, "Ended silences not pruned from the store."),
            }
        }
    }

    /// Deletes a silence; whether it existed.
    pub async fn delete_silence(&self, id: &str) -> Result<bool, AlertingError> {
        // Shared: etcd's delete comes back through the watch (possibly before the local
        // delete below), so a silence etcd had counts as existing.
        let mut shared = false;
        if let Some(sync) = self.inner.silence_sync.get() {
            shared = sync.retract(id).await.map_err(AlertingError::Unavailable)?;
        }
        let here = {
            let mut all = write(&self.inner.silences);
            let before = all.len();
            all.retain(|s| s.id != id);
            before != all.len()
        };
        let existed = here || shared;
        if let Some(store) = self.inner.store.clone() {
            let id = id.to_string();
            tokio::task::spawn_blocking(move || persist::delete_silence(&store, &id))
                .await
                .map_err(|e| AlertingError::Invalid(e.to_string()))??;
        }
        if existed {
            tracing::info!(%id, "Silence deleted.");
        }
        Ok(existed)
    }

    /// `ALERTS`, `etcdmon_alerts_firing`, rule and channel counters.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        let active: Vec<Alert> = lock(&self.inner.lifecycle)
            .active
            .values()
            .cloned()
            .collect();
        let mut sorted = active.clone();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for a in &sorted {
            let mut labels: Vec<(&str, &str)> = a
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.push(("alertstate", a.state.as_str()));
            labels.sort_unstable();
            out.gauge(
                "ALERTS",
                "Active alerts (pending or firing), as Prometheus' own ALERTS series.",
                &labels,
                1.0,
            );
        }
        for cluster in self.inner.clusters.iter() {
            for sev in ["critical", "warning", "info"] {
                let n = active
                    .iter()
                    .filter(|a| {
                        a.cluster == cluster.name()
                            && a.severity == sev
                            && a.state == AlertState::Firing
                    })
                    .count();
                out.gauge(
                    "etcdmon_alerts_firing",
                    "Alerts firing now, by cluster and severity.",
                    &[("cluster", cluster.name()), ("severity", sev)],
                    n as f64,
                );
            }
        }
        let c = &self.inner.counters;
        out.gauge(
            "etcdmon_alert_rules",
            "Alert rules in force.",
            &[],
            read(&self.inner.rules).len() as f64,
        );
        for (result, n) in [("success", &c.reload_ok), ("failure", &c.reload_failed)] {
            out.counter(
                "etcdmon_alert_rules_reloads_total",
                "Rules reloads (SIGHUP) by result; a failed reload keeps the previous rules.",
                &[("result", result)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        out.counter(
            "etcdmon_alert_evaluations_total",
            "Rule evaluation rounds.",
            &[],
            c.evaluations.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "etcdmon_alert_store_failures_total",
            "Alert state writes to the store that failed.",
            &[],
            c.store_failures.load(Ordering::Relaxed) as f64,
        );
        self.inner.notifier.render(out);
        if let Some(h) = self.inner.handover.get() {
            h.render(out);
        }
        if let Some(s) = self.inner.silence_sync.get() {
            s.render(out);
        }
    }

    /// With `--ha-election` (the leadership attached): shares silences through etcd and
    /// applies every collector's to this engine, within `max_active` (see [`silence_sync`]).
    pub fn share_silences(&self, max_active: usize) {
        let Some(sync) = self.leadership().and_then(silence_sync::SilenceSync::new) else {
            return;
        };
        let sync = Arc::new(sync);
        let _ = self.inner.silence_sync.set(sync.clone());
        let (me, again) = (self.clone(), self.clone());
        let counted = sync.clone();
        tracing::info!(prefix = %sync.prefix(), "Silences shared through etcd.");
        tokio::spawn(sync.run(
            move |id, silence| me.apply_synced(&counted, id, silence, max_active),
            move |ids| {
                let gone: Vec<String> = read(&again.inner.silences)
                    .iter()
                    .filter(|s| !ids.contains(&s.id))
                    .map(|s| s.id.clone())
                    .collect();
                for id in gone {
                    again.forget_silence(&id);
                }
            },
        ));
    }

    /// Applies one silence change read from etcd to memory and the store.
    fn apply_synced(
        &self,
        sync: &silence_sync::SilenceSync,
        id: &str,
        silence: Option<Silence>,
        max_active: usize,
    ) {
        let Some(silence) = silence else {
            if self.forget_silence(id) {
                sync.count_in(silence_sync::Applied::Replaced);
            }
            return;
        };
        let now = now_ms();
        let applied = silence_sync::apply_put(
            &mut write(&self.inner.silences),
            silence.clone(),
            now,
            max_active,
        );
        sync.count_in(applied);
        match applied {
            silence_sync::Applied::Added | silence_sync::Applied::Replaced => {
                if let Some(store) = self.inner.store.clone() {
                    tokio::task::spawn_blocking(move || {
                        if let Err(error) = persist::put_silence(&store, &silence, now) {
                            tracing::warn!(%error, "Shared silence not recorded in the store.");
                        }
                    });
                }
            }
            silence_sync::Applied::Refused => {
                tracing::warn!(%id, max_active, "Shared silence refused: --max-silences silences are active.")
            }
            silence_sync::Applied::Ended => {}
        }
    }

    /// Removes silence `id` from memory and the store (a delete read from etcd); whether it
    /// was in memory.
    fn forget_silence(&self, id: &str) -> bool {
        let existed = silence_sync::apply_delete(&mut write(&self.inner.silences), id);
        if let Some(store) = self.inner.store.clone() {
            let id = id.to_string();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = persist::delete_silence(&store, &id) {
                    tracing::warn!(%error, "Shared silence not deleted from the store.");
                }
            });
        }
        if existed {
            tracing::info!(%id, "Silence deleted (shared through etcd).");
        }
        existed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ClusterConfig;
    use crate::{model::cluster::ClusterHandle, model::cluster::MemberState};

    fn thresholds() -> Thresholds {
        Thresholds {
            max_latency_ms: 100,
            max_db_size_mb: 8192,
            min_available_nodes: 2,
            max_leader_changes: 3,
        }
    }

    fn cluster(reachable: [bool; 3]) -> Clusters {
        let c = ClusterHandle::new(ClusterConfig {
            name: "default".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            tls: None,
            auth: None,
            metrics_urls: vec![],
            dial_timeout: Duration::from_secs(1),
        });
        c.update(|s| {
            s.updated_at_ms = 1;
            s.has_leader = true;
            s.quorum_ok = true;
            s.member_count = 3;
            s.available_members = reachable.iter().filter(|r| **r).count();
            s.members = (0..3)
                .map(|i| MemberState {
                    id: format!("{i}"),
                    name: format!("m{i}"),
                    reachable: reachable[i],
                    ..MemberState::default()
                })
                .collect();
        });
        Arc::new(vec![c])
    }

    #[tokio::test]
    async fn windowed_server_signals_and_joined_conditions() {
        use crate::model::cluster::ServerMetrics;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.yaml");
        std::fs::write(
            &rules,
            "include_defaults: false\nrules:\n  - name: SlowWalFsync\n    severity: critical\n    expr: wal_fsync_p99_seconds[1m] > 0.01\n    annotations: {summary: '{{ member }} {{ value_ms }} ms'}\n  - name: SlowAndBacklogged\n    severity: warning\n    expr: wal_fsync_p99_seconds[1m] > 0.01 and proposals_pending > 3\n",
        )
        .unwrap();
        let clusters = cluster([true, true, true]);
        let engine = Alerting::new(
            AlertingSettings {
                rules_path: Some(rules),
                thresholds: thresholds(),
                interval: Duration::from_secs(1),
                dedup_window: lifecycle::DEDUP_WINDOW,
            },
            clusters.clone(),
            None,
            None,
            Arc::new(DiscardAlerts),
        )
        .unwrap();
        let set = |slow: [f64; 3], pending: [f64; 3]| {
            clusters[0].update(|s| {
                for (i, m) in s.members.iter_mut().enumerate() {
                    let mut server = ServerMetrics {
                        proposals_pending: pending[i],
                        ..ServerMetrics::default()
                    };
                    // 1000 fast fsyncs before, `slow[i]` of 50-100 ms after.
                    server.series.wal_fsync =
                        etcd_monitor_histogram::CumulativeBuckets::from_pairs([
                            (0.001, 1000.0),
                            (0.1, 1000.0 + slow[i]),
                            (f64::INFINITY, 1000.0 + slow[i]),
                        ]);
                    m.server = Some(server);
                }
            });
        };
        set([0.0; 3], [0.0; 3]);
        engine.evaluate().await;
        assert!(
            engine.active("default").is_empty(),
            "nothing in the window yet"
        );
        set([100.0, 100.0, 0.0], [5.0, 0.0, 5.0]);
        engine.evaluate().await;
        let active = engine.active("default");
        let members = |name: &str| {
            let mut m: Vec<String> = active
                .iter()
                .filter(|a| a.name == name && a.state == AlertState::Firing)
                .filter_map(|a| a.member.clone())
                .collect();
            m.sort();
            m
        };
        // Only the 100 slow calls in the window count: p99 falls in the (1 ms, 100 ms] bucket.
        assert_eq!(members("SlowWalFsync"), vec!["m0", "m1"]);
        assert_eq!(members("SlowAndBacklogged"), vec!["m0"]);
        let a = active.iter().find(|a| a.name == "SlowWalFsync").unwrap();
        assert!(a.value > 0.01 && a.value <= 0.1, "{}", a.value);
        assert!(
            a.annotations["summary"].ends_with(" ms"),
            "{:?}",
            a.annotations
        );
    }

    #[tokio::test]
    async fn an_unreachable_member_fires_and_shows_in_metrics_and_a_restart_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let settings = AlertingSettings {
            rules_path: None,
            thresholds: thresholds(),
            interval: Duration::from_secs(1),
            dedup_window: lifecycle::DEDUP_WINDOW,
        };
        let clusters = cluster([true, false, true]);
        let engine = Alerting::new(
            settings.clone(),
            clusters.clone(),
            None,
            Some(store.clone()),
            Arc::new(DiscardAlerts),
        )
        .unwrap();
        engine.evaluate().await;
        let active = engine.active("default");
        let a = active
            .iter()
            .find(|a| a.name == "MemberUnavailable")
            .expect("MemberUnavailable");
        assert_eq!(a.state, AlertState::Firing, "for: 0s");
        assert_eq!(a.member.as_deref(), Some("m1"));
        assert_eq!(
            a.annotations.get("summary").map(String::as_str),
            Some("etcd member m1 does not answer.")
        );
        assert!(!active.iter().any(|a| a.member.as_deref() == Some("m0")));
        let mut page = crate::model::exposition::Exposition::new();
        engine.render(&mut page);
        let text = page.encode();
        assert!(text.contains("alertname=\"MemberUnavailable\""), "{text}");
        assert!(
            text.contains("etcdmon_alerts_firing{cluster=\"default\",severity=\"critical\"} 1"),
            "{text}"
        );
        let history = engine.history("default", 0, 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].state, AlertState::Firing);

        // A second engine on the same store (a restart) has it active before any evaluation.
        let again = Alerting::new(
            settings,
            clusters.clone(),
            None,
            Some(store),
            Arc::new(DiscardAlerts),
        )
        .unwrap();
        assert!(
            again
                .active("default")
                .iter()
                .any(|a| a.name == "MemberUnavailable")
        );
        clusters[0].update(|s| {
            s.members[1].reachable = true;
            s.available_members = 3;
        });
        again.evaluate().await;
        assert!(
            !again
                .active("default")
                .iter()
                .any(|a| a.name == "MemberUnavailable")
        );
        let history = again.history("default", 0, 10).await.unwrap();
        assert_eq!(history[0].state, AlertState::Resolved);

        // Silences survive a restart too; deleting one is remembered.
        let body: NewSilence =
            serde_json::from_str(r#"{"matchers": {"member": "m2"}, "duration": "1h"}"#).unwrap();
        let silence = again
            .add_silence(body, "ops", &silences::SilenceLimits::default())
            .await
            .unwrap();
        assert_eq!(silence.created_by, "ops");
        let third = Alerting::new(
            again.inner.settings.clone(),
            clusters.clone(),
            None,
            again.inner.store.clone(),
            Arc::new(DiscardAlerts),
        )
        .unwrap();
        assert_eq!(third.silences(), vec![silence.clone()]);
        assert!(third.delete_silence(&silence.id).await.unwrap());
        assert!(!third.delete_silence(&silence.id).await.unwrap());
        let fourth = Alerting::new(
            third.inner.settings.clone(),
            clusters,
            None,
            third.inner.store.clone(),
            Arc::new(DiscardAlerts),
        )
        .unwrap();
        assert!(fourth.silences().is_empty());
    }

    #[tokio::test]
    async fn silences_are_bounded_in_count_and_ended_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let engine = Alerting::new(
            AlertingSettings {
                rules_path: None,
                thresholds: thresholds(),
                interval: Duration::from_secs(1),
                dedup_window: lifecycle::DEDUP_WINDOW,
            },
            cluster([true, true, true]),
            None,
            Some(store.clone()),
            Arc::new(DiscardAlerts),
        )
        .unwrap();
        let limits = silences::SilenceLimits {
            max_active: 2,
            ..silences::SilenceLimits::default()
        };
        let body = |m: &str| -> NewSilence {
            serde_json::from_str(&format!(
                r#"{{"matchers": {{"member": "{m}"}}, "duration": "1h"}}"#
            ))
            .unwrap()
        };
        engine
            .add_silence(body("m0"), "ops", &limits)
            .await
            .unwrap();
        let second = engine
            .add_silence(body("m1"), "ops", &limits)
            .await
            .unwrap();
        let err = engine
            .add_silence(body("m2"), "ops", &limits)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AlertingError::Refused(m) if m.contains("--max-silences")),
            "{err}"
        );
        // Deleting one makes room.
        assert!(engine.delete_silence(&second.id).await.unwrap());
        engine
            .add_silence(body("m2"), "ops", &limits)
            .await
            .unwrap();
        // An ended silence is forgotten by the pruning pass, in memory and in the store.
        {
            let mut all = write(&engine.inner.silences);
            all[0].ends_at_ms = 1;
            persist::put_silence(&store, &all[0], 0).unwrap();
        }
        engine.prune_silences().await;
        assert_eq!(read(&engine.inner.silences).len(), 1);
        assert_eq!(persist::load(&store).unwrap().silences.len(), 1);
    }
}
