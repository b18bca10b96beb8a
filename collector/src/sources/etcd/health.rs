//! The health loop of one cluster: every `--health-check-interval`, Status from every member
//! (each asked directly), MemberList and AlarmList from the first member that answers, the read
//! and write probes, then [`members::apply`] and the leader tracker. Every request has the dial
//! timeout, so an unreachable member delays a round by at most that; other clusters have their
//! own loops and never wait for this one.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{AlarmAction, AlarmType, Client};

use crate::{
    model::cluster::ClusterHandle, model::cluster::LeaderChange, model::cluster::MemberStatus,
    model::time::hex_id, model::time::now_ms, sources::etcd::client::ClientPool,
    sources::etcd::client::explain, sources::etcd::leader::LeaderTracker, sources::etcd::members,
    sources::etcd::members::ListedMember, sources::etcd::members::Observation,
    sources::etcd::members::StatusReply,
};
use crate::{
    model::config::Thresholds, model::config::TlsConfig, model::telemetry::Telemetry,
    sources::etcd::probe, sources::etcd::probe::MemberProbes, store::Store,
};

/// Settings of the health loop.
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// Time between two health checks of the cluster.
    pub interval: Duration,
    /// Limits the cluster's health is judged against (latency, DB size, members available).
    pub thresholds: Thresholds,
    /// Read probe on.
    pub probe_read: bool,
    /// Write probe on.
    pub probe_write: bool,
}

/// The health loop of one cluster.
pub struct HealthLoop {
    cluster: Arc<ClusterHandle>,
    pool: ClientPool,
    settings: HealthSettings,
    telemetry: Telemetry,
    store: Option<Arc<Store>>,
    tracker: LeaderTracker,
    probes: HashMap<String, MemberProbes>,
    previous_revision: Option<(i64, u64)>,
    reported_down: bool,
    rounds: u64,
}

/// AlarmList is asked on the first round and every this many rounds after.
const ALARM_LIST_EVERY: u64 = 10;

impl HealthLoop {
    /// A loop for `cluster`, continuing the leader history from `store` when there is one.
    pub fn new(
        cluster: Arc<ClusterHandle>,
        settings: HealthSettings,
        telemetry: Telemetry,
        store: Option<Arc<Store>>,
    ) -> Self {
        let history = store
            .as_ref()
            .and_then(|s| {
                s.leader_changes(cluster.name(), crate::model::cluster::LEADER_HISTORY)
                    .map_err(|e| telemetry.store_failed("leader_changes", &e.to_string()))
                    .ok()
            })
            .unwrap_or_default();
        let tracker = LeaderTracker::resume(history);
        cluster.update(|s| s.leader_history = tracker.history.clone());
        let max_backoff = (settings.interval * 4).min(Duration::from_secs(30));
        Self {
            pool: ClientPool::new(cluster.config.clone(), max_backoff),
            cluster,
            settings,
            telemetry,
            store,
            tracker,
            probes: HashMap::new(),
            previous_revision: None,
            reported_down: false,
            rounds: 0,
        }
    }

    /// Runs forever.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let start = Instant::now();
            self.round().await;
            self.telemetry
                .loop_round(self.cluster.name(), "health", start.elapsed());
        }
    }

    /// URLs to ask: the configured endpoints and every member's client URLs.
    fn targets(&self) -> Vec<String> {
        let mut urls: Vec<String> = self.cluster.config.endpoints.clone();
        for m in self.cluster.snapshot().members {
            for u in m.client_urls {
                let u = u.trim_end_matches('/').to_string();
                if !urls.iter().any(|x| members::same_url(x, &u)) {
                    urls.push(u);
                }
            }
        }
        urls
    }

    async fn status(
        client: Client,
        url: &str,
        timeout: Duration,
        tls: Option<&TlsConfig>,
    ) -> Result<StatusReply, String> {
        let mut maintenance = client.maintenance_client();
        match tokio::time::timeout(timeout, maintenance.status()).await {
            Err(_) => Err(format!("no answer from {url} within {timeout:?}")),
            Ok(Err(e)) => Err(format!("{url}: {}", explain(&e, tls))),
            Ok(Ok(r)) => {
                let header = r.header();
                Ok(StatusReply {
                    member_id: header.map_or(0, |h| h.member_id()),
                    status: MemberStatus {
                        cluster_id: hex_id(header.map_or(0, |h| h.cluster_id())),
                        leader_id: hex_id(r.leader()),
                        raft_term: r.raft_term(),
                        raft_index: r.raft_index(),
                        raft_applied_index: r.raft_applied_index(),
                        revision: header.map_or(0, |h| h.revision()),
                        db_size_bytes: r.db_size(),
                        db_size_in_use_bytes: r.raft_used_db_size(),
                        version: r.version().to_string(),
                        errors: r.errors().to_vec(),
                        is_learner: r.is_learner(),
                    },
                })
            }
        }
    }

    async fn member_list(client: Client, timeout: Duration) -> Option<Vec<ListedMember>> {
        let mut c = client.cluster_client();
        let r = tokio::time::timeout(timeout, c.member_list())
            .await
            .ok()?
            .ok()?;
        Some(
            r.members()
                .iter()
                .map(|m| ListedMember {
                    id: m.id(),
                    name: m.name().to_string(),
                    peer_urls: m.peer_urls().to_vec(),
                    client_urls: m.client_urls().to_vec(),
                    is_learner: m.is_learner(),
                })
                .collect(),
        )
    }

    async fn alarms(client: Client, timeout: Duration) -> Option<Vec<(u64, String)>> {
        let mut c = client.maintenance_client();
        let r = tokio::time::timeout(timeout, c.alarm(AlarmAction::Get, AlarmType::None, None))
            .await
            .ok()?
            .ok()?;
        Some(
            r.alarms()
                .iter()
                .map(|a| (a.member_id(), a.alarm().as_str_name().to_string()))
                .collect(),
        )
    }

    /// One health check.
    pub async fn round(&mut self) {
        let name = self.cluster.name().to_string();
        let timeout = self.cluster.config.dial_timeout;
        let (statuses, answering) = self.poll_statuses(&name, timeout).await;
        // MemberList is answered locally; AlarmList goes through raft in etcd 3.4 and hangs
        // without quorum, so it is read after the rest of the state is published.
        let mut member_list = None;
        for (_, c) in answering.iter().take(2) {
            member_list = Self::member_list(c.clone(), timeout).await;
            if member_list.is_some() {
                break;
            }
        }
        let obs = Observation {
            at_ms: now_ms(),
            member_list,
            statuses,
            alarms: None,
        };
        let revision_rate = self.revision_rate(&obs);
        let thresholds = self.settings.thresholds;
        let tracker = &mut self.tracker;
        let (change, snapshot) = self.cluster.update(|s| {
            members::apply(s, &obs, &thresholds);
            if revision_rate.is_some() {
                s.revision_rate_per_second = revision_rate;
            }
            let change = tracker.observe(s.leader.as_ref(), obs.at_ms);
            s.leader_changes_total = tracker.changes_total;
            s.leader_history = tracker.history.clone();
            (change, (s.available_members, s.member_count, s.has_leader))
        });
        self.refresh_alarms(&obs, &answering, timeout).await;
        // Probes run after the state is published: a probe that hangs on a cluster without
        // quorum must not delay what the health check already knows.
        self.run_probes(&name, &answering, obs.member_list.as_deref(), timeout)
            .await;
        self.log_reachability(&name, snapshot);
        if let Some(change) = change {
            tracing::info!(
                cluster = %name,
                old = ?change.old_leader,
                new = %change.new_leader,
                term = change.term,
                "Leader changed."
            );
            self.store_leader_change(&name, change).await;
        }
    }

    /// Asks every target URL for its Status (in parallel): each URL's answer or error (failures
    /// counted; an auth failure drops the pooled client), and one client per member that
    /// answered, in the order they answered.
    async fn poll_statuses(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> (
        Vec<(String, Result<StatusReply, String>)>,
        Vec<(u64, Client)>,
    ) {
        let urls = self.targets();
        let clients: Vec<(String, Result<Client, String>)> = urls
            .iter()
            .cloned()
            .zip(
                self.pool
                    .get_many(&urls)
                    .await
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string())),
            )
            .collect();
        let tls = self.pool.tls().cloned();
        let results = futures::future::join_all(clients.iter().map(|(url, c)| {
            let tls = tls.as_ref();
            async move {
                match c {
                    Ok(client) => Self::status(client.clone(), url, timeout, tls).await,
                    Err(e) => Err(e.clone()),
                }
            }
        }))
        .await;
        let mut statuses = Vec::with_capacity(results.len());
        let mut answering: Vec<(u64, Client)> = Vec::new();
        for ((url, client), result) in clients.into_iter().zip(results) {
            match &result {
                Ok(reply) => {
                    if let Ok(c) = client
                        && !answering.iter().any(|(id, _)| *id == reply.member_id)
                    {
                        answering.push((reply.member_id, c));
                    }
                }
                Err(e) => {
                    self.telemetry.status_failed(name, &url, e);
                    if e.contains("auth") {
                        self.pool.reset(&url);
                    }
                }
            }
            statuses.push((url, result));
        }
        (statuses, answering)
    }

    /// The cluster's revision rate (revisions per second) since the previous round, from the
    /// highest revision any member reported; remembers this round's revision.
    fn revision_rate(&mut self, obs: &Observation) -> Option<f64> {
        let revision = obs
            .statuses
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|s| s.status.revision))
            .max();
        let revision_rate = match (revision, self.previous_revision) {
            (Some(rev), Some((prev, at))) if obs.at_ms > at && rev >= prev => {
                Some((rev - prev) as f64 / ((obs.at_ms - at) as f64 / 1000.0))
            }
            _ => None,
        };
        if let Some(rev) = revision {
            self.previous_revision = Some((rev, obs.at_ms));
        }
        revision_rate
    }

    /// Alarms come from the Status answers (etcd lists active alarms in `errors`); every few
    /// rounds AlarmList itself is asked too. It is not asked every round because in etcd 3.4 it
    /// is a raft proposal (one log entry per call) and hangs without quorum.
    async fn refresh_alarms(
        &mut self,
        obs: &Observation,
        answering: &[(u64, Client)],
        timeout: Duration,
    ) {
        let mut alarms = members::alarms_from_status(&obs.statuses);
        self.rounds += 1;
        if self.rounds % ALARM_LIST_EVERY == 1
            && let Some((_, c)) = answering.first()
            && let Some(listed) = Self::alarms(c.clone(), timeout).await
        {
            alarms = listed;
        }
        self.cluster.update(|s| members::apply_alarms(s, &alarms));
    }

    /// Logs once when no member answers any more, and once when one answers again.
    fn log_reachability(
        &mut self,
        name: &str,
        (available, count, has_leader): (usize, usize, bool),
    ) {
        if available == 0 && !self.reported_down {
            tracing::warn!(cluster = %name, "No member of the cluster answers.");
            self.reported_down = true;
        } else if available > 0 && self.reported_down {
            tracing::info!(cluster = %name, available, count, has_leader, "Cluster answers again.");
            self.reported_down = false;
        }
    }

    /// Records a leader change in the history store (when there is one); a failure is counted.
    async fn store_leader_change(&self, name: &str, change: LeaderChange) {
        if let Some(store) = &self.store {
            let store = store.clone();
            let cluster = name.to_string();
            let telemetry = self.telemetry.clone();
            let joined =
                tokio::task::spawn_blocking(move || store.insert_leader_change(&cluster, &change))
                    .await;
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => telemetry.store_failed("insert_leader_change", &e.to_string()),
                Err(e) => telemetry.store_failed("insert_leader_change", &e.to_string()),
            }
        }
    }

    async fn run_probes(
        &mut self,
        cluster: &str,
        answering: &[(u64, Client)],
        list: Option<&[ListedMember]>,
        timeout: Duration,
    ) {
        if !self.settings.probe_read && !self.settings.probe_write {
            return;
        }
        let names: HashMap<u64, String> = list
            .unwrap_or_default()
            .iter()
            .map(|m| (m.id, m.name.clone()))
            .collect();
        let (read_on, write_on) = (self.settings.probe_read, self.settings.probe_write);
        let results = futures::future::join_all(answering.iter().map(|(id, client)| {
            let label = names
                .get(id)
                .filter(|n| !n.is_empty())
                .cloned()
                .unwrap_or_else(|| hex_id(*id));
            let key = probe::probe_key(&label);
            let client = client.clone();
            async move {
                let read = if read_on {
                    Some(probe::read(client.clone(), &key, timeout).await)
                } else {
                    None
                };
                let write = if write_on {
                    Some(probe::write(client, &key, timeout).await)
                } else {
                    None
                };
                (*id, label, read, write)
            }
        }))
        .await;
        let now = Instant::now();
        let mut errors: Vec<(String, Option<String>, Option<String>)> = Vec::new();
        for (id, label, read, write) in results {
            let hex = hex_id(id);
            let windows = self.probes.entry(hex.clone()).or_default();
            let mut read_error = None;
            let mut write_error = None;
            match read {
                Some(Ok(d)) => windows.read.record(now, d),
                Some(Err(e)) => {
                    self.telemetry.probe_failed(cluster, &label, "read", &e);
                    read_error = Some(e);
                }
                None => {}
            }
            match write {
                Some(Ok(d)) => windows.write.record(now, d),
                Some(Err(e)) => {
                    self.telemetry.probe_failed(cluster, &label, "write", &e);
                    write_error = Some(e);
                }
                None => {}
            }
            errors.push((hex, read_error, write_error));
        }
        let probes = &self.probes;
        self.cluster.update(|s| {
            for m in &mut s.members {
                if let Some(p) = probes.get(&m.id) {
                    m.latency.read = p.read.quantiles();
                    m.latency.write = p.write.quantiles();
                }
            }
            for (id, r, w) in errors {
                if let Some(m) = s.members.iter_mut().find(|m| m.id == id) {
                    m.latency.read_error = r;
                    m.latency.write_error = w;
                }
            }
        });
    }
}
