//! Handing the notification state over between collectors (`--ha-election`).
//!
//! Every collector evaluates the rules, so every engine has the same firing set; only the
//! leader notifies. Before it queues a notification, the leader writes what receivers now know
//! to etcd, in a transaction fenced by its term (the leader key's create revision): a firing
//! notification puts `<--ha-prefix>/notified/<fingerprint>` (the alert, when, by whom), a
//! resolved one deletes it. A stale leader — paused, cut off, lease expired — cannot write,
//! so it does not notify.
//!
//! A collector that begins a term reads those keys and makes them its delivery state: an
//! alert receivers know as firing is not sent again; one that fires here but has no key
//! (the old leader died before notifying) is sent; a key whose alert is not firing here is an
//! *orphan*, resolved (one notification) as soon as this collector's own evaluation sees its
//! condition not holding — or after the stale window if it is never evaluated again.
//!
//! A notification is queued only after its state is in etcd: a leader that dies between the
//! write and the delivery loses that notification, it never sends one twice (the invariant the
//! single collector keeps with its SQLite store).

use std::collections::{HashMap, HashSet};

use etcd_client::TxnOp;
use serde::{Deserialize, Serialize};

use super::lifecycle::{Alert, AlertState, Delivered, Lifecycle};
use crate::{model::sync::lock, sources::ha::Leadership};

/// HELP of `etcdmon_ha_notifications_withheld_total` (the notifier adds its own reason).
pub const WITHHELD_HELP: &str = "Notifications not sent because this collector does not lead: its engine follows (follower), its term could not write the notification state (unfenced), or leadership ended before a channel queued it (not_leader).";

/// Operations in one fenced transaction (etcd allows 128 by default).
const OPS_PER_TXN: usize = 100;

/// What the leader wrote for an alert receivers were told is firing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notified {
    /// `firing` (resolved alerts have no key).
    pub state: AlertState,
    /// When the notification was queued (Unix ms).
    pub notified_at_ms: u64,
    /// The collector that sent it (`--ha-id`).
    pub by: String,
    /// Its term (fencing token).
    pub term: i64,
    /// The alert as sent.
    pub alert: Alert,
}

/// Whether this collector notifies this round, and what a new term read from etcd.
#[derive(Debug, Default)]
pub struct Gate {
    /// Notify this round.
    pub leading: bool,
    /// A term began: the notified state to make this engine's delivery state.
    pub takeover: Option<HashMap<String, Notified>>,
}

#[derive(Debug, Default)]
struct Counters {
    handover_firing: std::sync::atomic::AtomicU64,
    handover_resolved: std::sync::atomic::AtomicU64,
    withheld_follower: std::sync::atomic::AtomicU64,
    withheld_unfenced: std::sync::atomic::AtomicU64,
    state_failures: std::sync::atomic::AtomicU64,
}

/// An etcd-notified alert that is not firing in this engine.
#[derive(Debug, Clone)]
struct Orphan {
    alert: Alert,
    since_ms: u64,
}

/// The engine's side of HA: the gate and the state hand-over.
#[derive(Debug)]
pub struct Handover {
    leadership: Leadership,
    reconciled: std::sync::Mutex<Option<i64>>,
    orphans: std::sync::Mutex<HashMap<String, Orphan>>,
    handed_resolves: std::sync::Mutex<HashSet<String>>,
    counters: Counters,
}

fn bump(c: &std::sync::atomic::AtomicU64, n: usize) {
    c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

impl Handover {
    /// The hand-over of `leadership`'s collector.
    pub fn new(leadership: Leadership) -> Self {
        Self {
            leadership,
            reconciled: std::sync::Mutex::new(None),
            orphans: std::sync::Mutex::new(HashMap::new()),
            handed_resolves: std::sync::Mutex::new(HashSet::new()),
            counters: Counters::default(),
        }
    }

    /// The leader gate.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    fn prefix(&self) -> Option<String> {
        self.leadership.config().map(|c| c.notified_key())
    }

    /// Before a round: whether to notify, and on a new term the notified state from etcd
    /// (a failed read makes this round a follower's; it is retried next round).
    pub async fn begin(&self) -> Gate {
        let Some(prefix) = self.prefix() else {
            return Gate {
                leading: true,
                takeover: None,
            };
        };
        let Some(term) = self.leadership.term() else {
            *lock(&self.reconciled) = None;
            lock(&self.orphans).clear();
            return Gate::default();
        };
        if *lock(&self.reconciled) == Some(term) {
            return Gate {
                leading: true,
                takeover: None,
            };
        }
        match self.leadership.read_prefix(&prefix).await {
            Ok(kvs) => {
                let notified: HashMap<String, Notified> = kvs
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice::<Notified>(v).ok())
                    .map(|n| (n.alert.key.clone(), n))
                    .collect();
                tracing::info!(
                    term,
                    notified = notified.len(),
                    "New term: notification state read from etcd."
                );
                *lock(&self.reconciled) = Some(term);
                Gate {
                    leading: true,
                    takeover: Some(notified),
                }
            }
            Err(error) => {
                bump(&self.counters.state_failures, 1);
                tracing::warn!(%error, "Cannot read the notification state; not notifying this round.");
                Gate::default()
            }
        }
    }

    /// Makes etcd's notified state the lifecycle's delivery state (a new term). Keys notified
    /// as firing whose alert does not fire here become orphans.
    pub fn apply(&self, lc: &mut Lifecycle, notified: HashMap<String, Notified>, now: u64) {
        let mut orphans = lock(&self.orphans);
        orphans.clear();
        lc.delivered = notified
            .iter()
            .map(|(k, n)| {
                let d = Delivered {
                    state: Some(AlertState::Firing),
                    sent_ms: vec![n.notified_at_ms],
                    held_resolved: None,
                };
                (k.clone(), d)
            })
            .collect();
        for (key, n) in notified {
            let firing_here = lc
                .active
                .get(&key)
                .is_some_and(|a| a.state == AlertState::Firing);
            if !firing_here {
                let alert = n.alert;
                orphans.insert(
                    key,
                    Orphan {
                        alert,
                        since_ms: now,
                    },
                );
            }
        }
    }

    /// Before the lifecycle step (leader only): orphans this round shows not holding (or not
    /// evaluated for `stale_ms`) are held back as resolved, so the step sends their resolution;
    /// orphans that fire here now are the lifecycle's.
    pub fn settle(
        &self,
        lc: &mut Lifecycle,
        holding: &HashSet<String>,
        known: &HashSet<String>,
        now: u64,
        stale_ms: u64,
    ) {
        let mut orphans = lock(&self.orphans);
        let mut handed = lock(&self.handed_resolves);
        orphans.retain(|key, o| {
            if lc
                .active
                .get(key)
                .is_some_and(|a| a.state == AlertState::Firing)
            {
                return false;
            }
            let cleared = known.contains(key) && !holding.contains(key);
            if !cleared && now.saturating_sub(o.since_ms) < stale_ms {
                return true;
            }
            let mut alert = o.alert.clone();
            alert.state = AlertState::Resolved;
            alert.resolved_at_ms = Some(now);
            let d = lc.delivered.entry(key.clone()).or_default();
            d.state = Some(AlertState::Firing);
            d.held_resolved = Some(alert);
            handed.insert(key.clone());
            false
        });
    }

    /// After the step: a follower withholds `notify`; the leader writes its notified state,
    /// fenced by its term, and keeps only what was written (`takeover`: this is the first
    /// round of a term, counted as hand-over notifications).
    pub async fn commit(&self, gate: &Gate, notify: Vec<Alert>, now: u64) -> Vec<Alert> {
        let Some(prefix) = self.prefix() else {
            return notify;
        };
        if !gate.leading {
            bump(&self.counters.withheld_follower, notify.len());
            return Vec::new();
        }
        let term = self.leadership.term().unwrap_or_default();
        let mut sent = Vec::with_capacity(notify.len());
        for chunk in notify.chunks(OPS_PER_TXN) {
            let ops = chunk
                .iter()
                .map(|a| self.op(&prefix, a, term, now))
                .collect();
            match self.leadership.fenced_txn(ops).await {
                Ok(()) => sent.extend_from_slice(chunk),
                Err(error) => {
                    bump(&self.counters.state_failures, 1);
                    bump(&self.counters.withheld_unfenced, notify.len() - sent.len());
                    tracing::warn!(%error, withheld = notify.len() - sent.len(), "Notification state not written; not notifying (the next term re-reads it).");
                    *lock(&self.reconciled) = None;
                    break;
                }
            }
        }
        self.count_handover(gate.takeover.is_some(), &sent);
        sent
    }

    fn op(&self, prefix: &str, alert: &Alert, term: i64, now: u64) -> TxnOp {
        let key = format!("{prefix}{}", alert.key);
        if alert.state != AlertState::Firing {
            return TxnOp::delete(key, None);
        }
        let n = Notified {
            state: AlertState::Firing,
            notified_at_ms: now,
            by: self.leadership.id().to_string(),
            term,
            alert: alert.clone(),
        };
        TxnOp::put(key, serde_json::to_vec(&n).unwrap_or_default(), None)
    }

    fn count_handover(&self, takeover: bool, sent: &[Alert]) {
        let mut handed = lock(&self.handed_resolves);
        for a in sent {
            let resolved = a.state == AlertState::Resolved;
            if takeover || (resolved && handed.contains(&a.key)) {
                tracing::info!(alertname = %a.name, state = a.state.as_str(), "Hand-over notification: a transition the previous leader had not notified.");
                if resolved {
                    bump(&self.counters.handover_resolved, 1);
                } else {
                    bump(&self.counters.handover_firing, 1);
                }
            }
            handed.remove(&a.key);
        }
    }

    /// The hand-over counters and the leader gauge.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        self.leadership.render(out);
        if !self.leadership.is_enabled() {
            return;
        }
        let c = &self.counters;
        let get =
            |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed) as f64;
        for (state, n) in [
            ("firing", &c.handover_firing),
            ("resolved", &c.handover_resolved),
        ] {
            out.counter(
                "etcdmon_ha_handover_notifications_total",
                "Notifications a new leader sent for transitions the previous leader had not notified.",
                &[("state", state)],
                get(n),
            );
        }
        for (reason, n) in [
            ("follower", &c.withheld_follower),
            ("unfenced", &c.withheld_unfenced),
        ] {
            out.counter(
                "etcdmon_ha_notifications_withheld_total",
                WITHHELD_HELP,
                &[("reason", reason)],
                get(n),
            );
        }
        out.counter(
            "etcdmon_ha_notification_state_failures_total",
            "Reads and writes of the notification state in etcd that failed (retried next round).",
            &[],
            get(&c.state_failures),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::analysis::alerting::lifecycle::{Candidate, DEDUP_WINDOW, fingerprint};

    fn alert(member: &str) -> Alert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "MemberUnavailable".to_string());
        labels.insert("member".to_string(), member.to_string());
        Alert {
            key: fingerprint(&labels),
            name: "MemberUnavailable".into(),
            severity: "critical".into(),
            cluster: "default".into(),
            member: Some(member.into()),
            labels,
            annotations: BTreeMap::new(),
            state: AlertState::Firing,
            value: 0.0,
            active_since_ms: 0,
            fired_at_ms: Some(0),
            resolved_at_ms: None,
            last_eval_ms: 0,
            silenced_by: None,
        }
    }

    fn notified(member: &str) -> (String, Notified) {
        let a = alert(member);
        let n = Notified {
            state: AlertState::Firing,
            notified_at_ms: 500,
            by: "old-leader".into(),
            term: 7,
            alert: a.clone(),
        };
        (a.key, n)
    }

    fn cand(member: &str) -> Candidate {
        Candidate {
            alert: alert(member),
            for_: Duration::ZERO,
        }
    }

    const STALE: Duration = Duration::from_secs(600);

    /// One leader round as the engine runs it: settle orphans, then step.
    fn round(
        h: &Handover,
        lc: &mut Lifecycle,
        now: u64,
        holding: &[&str],
        known: &[&str],
    ) -> Vec<(String, AlertState)> {
        let keys = |m: &[&str]| m.iter().map(|m| alert(m).key).collect::<HashSet<_>>();
        let known = keys(known);
        h.settle(lc, &keys(holding), &known, now, 600_000);
        let out = lc.step(
            now,
            holding.iter().map(|m| cand(m)).collect(),
            &known,
            STALE,
            |_| None,
        );
        out.notify
            .into_iter()
            .map(|a| (a.member.unwrap_or_default(), a.state))
            .collect()
    }

    fn sorted(mut v: Vec<(String, AlertState)>) -> Vec<(String, AlertState)> {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn a_new_term_sends_only_what_the_old_leader_had_not() {
        let h = Handover::new(Leadership::standalone());
        let mut lc = Lifecycle::new(DEDUP_WINDOW);
        let all = ["m1", "m2", "m3", "m4"];
        // This engine (a follower until now) has m1, m2 and m3 firing, as if it had told them.
        round(&h, &mut lc, 1_000, &["m1", "m2", "m3"], &all);
        // The old leader told m1 (still firing) and m4 (resolved meanwhile, firing nowhere
        // here), never m2 or m3 (it died first).
        let etcd: HashMap<_, _> = [notified("m1"), notified("m4")].into_iter().collect();
        h.apply(&mut lc, etcd, 2_000);
        let sent = sorted(round(&h, &mut lc, 2_000, &["m1", "m2", "m3"], &all));
        assert_eq!(
            sent,
            vec![
                ("m2".to_string(), AlertState::Firing),
                ("m3".to_string(), AlertState::Firing),
                ("m4".to_string(), AlertState::Resolved),
            ]
        );
        // Nothing more next round.
        assert!(round(&h, &mut lc, 3_000, &["m1", "m2", "m3"], &all).is_empty());
    }

    #[test]
    fn an_orphan_waits_for_data_and_is_resolved_once_or_adopted() {
        let h = Handover::new(Leadership::standalone());
        let mut lc = Lifecycle::new(DEDUP_WINDOW);
        let etcd: HashMap<_, _> = [notified("m1"), notified("m2")].into_iter().collect();
        h.apply(&mut lc, etcd, 1_000);
        // No data about either yet: nothing is sent.
        assert!(round(&h, &mut lc, 1_000, &[], &[]).is_empty());
        // m1 fires here too: adopted, not sent again. m2 is evaluated and clear: resolved once.
        let sent = round(&h, &mut lc, 2_000, &["m1"], &["m1", "m2"]);
        assert_eq!(sent, vec![("m2".to_string(), AlertState::Resolved)]);
        assert!(round(&h, &mut lc, 3_000, &["m1"], &["m1", "m2"]).is_empty());
        // m1 then resolves through the lifecycle: one resolve.
        let sent = round(&h, &mut lc, 4_000, &[], &["m1", "m2"]);
        assert_eq!(sent, vec![("m1".to_string(), AlertState::Resolved)]);
    }

    #[test]
    fn an_orphan_never_evaluated_again_is_resolved_after_the_stale_window() {
        let h = Handover::new(Leadership::standalone());
        let mut lc = Lifecycle::new(DEDUP_WINDOW);
        h.apply(&mut lc, [notified("gone")].into_iter().collect(), 1_000);
        assert!(round(&h, &mut lc, 2_000, &[], &[]).is_empty());
        let sent = round(&h, &mut lc, 1_000 + 600_000, &[], &[]);
        assert_eq!(sent, vec![("gone".to_string(), AlertState::Resolved)]);
    }
}
