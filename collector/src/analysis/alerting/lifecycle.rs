//! The alert lifecycle, pure (no I/O, time passed in): pending → firing → resolved per
//! (rule, labels), and which notifications to send.
//!
//! Deduplication: receivers are told about a key's state only when it differs from the last
//! state they were told, and at most twice (one firing, one resolved) within the dedup window
//! (5 minutes). A flapping alert therefore produces one firing and one resolved notification
//! per window; a change held back is sent once the window allows it, if it still holds, so
//! receivers always end up with the current state. Silenced alerts are not sent; a silence
//! that ends while the alert fires lets its firing notification through.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Default deduplication window.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Condition holds, `for` not yet elapsed.
    Pending,
    /// Condition held for `for`.
    Firing,
    /// Condition no longer holds.
    Resolved,
}

impl AlertState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert instance: a rule for one label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// Fingerprint of (rule, labels), hex.
    pub key: String,
    /// Rule name (`alertname`).
    pub name: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// Cluster.
    pub cluster: String,
    /// Member, when per member.
    pub member: Option<String>,
    /// All labels (alertname, severity, cluster, member, rule labels, …).
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations (summary, description, runbook_url).
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// Last value of the expression's first signal.
    pub value: f64,
    /// Since when the condition holds (Unix ms).
    pub active_since_ms: u64,
    /// When it fired (Unix ms).
    pub fired_at_ms: Option<u64>,
    /// When it resolved (Unix ms).
    pub resolved_at_ms: Option<u64>,
    /// Last evaluation that saw it (Unix ms).
    pub last_eval_ms: u64,
    /// Silence that mutes it, if any.
    pub silenced_by: Option<String>,
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    /// When (Unix ms).
    pub ts_ms: u64,
    /// New state (`firing` or `resolved`).
    pub state: AlertState,
    /// The alert after the change.
    pub alert: Alert,
}

/// What receivers were last told about a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    /// State they know.
    pub state: Option<AlertState>,
    /// Times of the notifications sent (Unix ms, recent ones only).
    pub sent_ms: Vec<u64>,
    /// A resolved alert whose notification is held back.
    pub held_resolved: Option<Alert>,
}

/// One evaluation result: a rule's condition holds for these labels.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The alert as it would look (state and times are filled in by the lifecycle).
    pub alert: Alert,
    /// The rule's `for`.
    pub for_: Duration,
}

/// What one step produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Firing and resolved transitions, to record.
    pub transitions: Vec<Transition>,
    /// Alerts to send (state firing or resolved).
    pub notify: Vec<Alert>,
    /// Keys whose persisted active alert changed (insert/update) or disappeared.
    pub changed: Vec<String>,
}

/// The lifecycle of every alert.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Active alerts (pending or firing) by key.
    pub active: HashMap<String, Alert>,
    /// Delivery state by key.
    pub delivered: HashMap<String, Delivered>,
    /// Dedup window.
    pub window: Duration,
}

/// A duration in whole milliseconds (saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Lifecycle {
    /// An empty lifecycle with `window` deduplication.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// Advances every alert.
    ///
    /// `holding`: candidates whose condition holds now. `known`: keys whose condition was
    /// evaluated (holding or not); an active alert with a key outside it had no data this
    /// time and keeps its state until `stale` has passed since it was last seen.
    /// `silenced`: gives the silence muting an alert, if any.
    pub fn step(
        &mut self,
        now: u64,
        holding: Vec<Candidate>,
        known: &std::collections::HashSet<String>,
        stale: Duration,
        silenced: impl Fn(&Alert) -> Option<String>,
    ) -> StepOutput {
        let mut out = StepOutput::default();
        let seen = self.advance_holding(now, holding, &mut out);
        self.resolve_gone(now, &seen, known, stale, &mut out);
        // Silences, then deliveries.
        for alert in self.active.values_mut() {
            alert.silenced_by = silenced(alert);
        }
        let mut to_send = self.firing_to_send(now);
        to_send.extend(self.resolved_to_send(now, &silenced));
        self.forget_told(now);
        to_send.sort_by(|a, b| a.key.cmp(&b.key));
        out.notify = to_send;
        out
    }

    /// Candidates holding now: new ones go pending, pending ones past their `for` fire.
    /// Returns their keys.
    fn advance_holding(
        &mut self,
        now: u64,
        holding: Vec<Candidate>,
        out: &mut StepOutput,
    ) -> std::collections::HashSet<String> {
        let mut seen = std::collections::HashSet::new();
        for c in holding {
            let key = c.alert.key.clone();
            seen.insert(key.clone());
            let mut alert = match self.active.remove(&key) {
                Some(mut a) => {
                    a.value = c.alert.value;
                    a.annotations = c.alert.annotations;
                    a.last_eval_ms = now;
                    a
                }
                None => {
                    let mut a = c.alert;
                    a.state = AlertState::Pending;
                    a.active_since_ms = now;
                    a.fired_at_ms = None;
                    a.resolved_at_ms = None;
                    a.last_eval_ms = now;
                    a
                }
            };
            if alert.state == AlertState::Pending
                && now.saturating_sub(alert.active_since_ms) >= ms(c.for_)
            {
                alert.state = AlertState::Firing;
                alert.fired_at_ms = Some(now);
                out.transitions.push(Transition {
                    ts_ms: now,
                    state: AlertState::Firing,
                    alert: alert.clone(),
                });
            }
            out.changed.push(key.clone());
            self.active.insert(key, alert);
        }
        seen
    }

    /// Active alerts evaluated and not holding (or stale) end; a firing one resolves and its
    /// resolution is held for delivery when receivers know it as firing.
    fn resolve_gone(
        &mut self,
        now: u64,
        seen: &std::collections::HashSet<String>,
        known: &std::collections::HashSet<String>,
        stale: Duration,
        out: &mut StepOutput,
    ) {
        let gone: Vec<String> = self
            .active
            .iter()
            .filter(|(k, a)| {
                !seen.contains(*k)
                    && (known.contains(*k) || now.saturating_sub(a.last_eval_ms) > ms(stale))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(mut alert) = self.active.remove(&key) else {
                continue;
            };
            out.changed.push(key.clone());
            if alert.state == AlertState::Firing {
                alert.state = AlertState::Resolved;
                alert.resolved_at_ms = Some(now);
                out.transitions.push(Transition {
                    ts_ms: now,
                    state: AlertState::Resolved,
                    alert: alert.clone(),
                });
                let d = self.delivered.entry(key).or_default();
                if d.state == Some(AlertState::Firing) {
                    d.held_resolved = Some(alert);
                }
            }
        }
    }

    /// Firing, unsilenced alerts receivers do not know as firing, within the dedup budget.
    fn firing_to_send(&mut self, now: u64) -> Vec<Alert> {
        let window = ms(self.window);
        let mut to_send = Vec::new();
        for (key, alert) in &self.active {
            if alert.state != AlertState::Firing || alert.silenced_by.is_some() {
                continue;
            }
            let d = self.delivered.entry(key.clone()).or_default();
            if d.state == Some(AlertState::Firing) {
                continue;
            }
            d.sent_ms.retain(|t| now.saturating_sub(*t) < window);
            if d.sent_ms.len() >= 2 {
                continue;
            }
            d.state = Some(AlertState::Firing);
            d.sent_ms.push(now);
            d.held_resolved = None;
            to_send.push(alert.clone());
        }
        to_send
    }

    /// Held resolutions of alerts no longer firing, unsilenced, within the dedup budget.
    fn resolved_to_send(
        &mut self,
        now: u64,
        silenced: &impl Fn(&Alert) -> Option<String>,
    ) -> Vec<Alert> {
        let window = ms(self.window);
        let mut to_send = Vec::new();
        for (key, d) in self.delivered.iter_mut() {
            if self
                .active
                .get(key)
                .is_some_and(|a| a.state == AlertState::Firing)
            {
                continue;
            }
            let Some(held) = d.held_resolved.clone() else {
                continue;
            };
            if d.state != Some(AlertState::Firing) || silenced(&held).is_some() {
                continue;
            }
            d.sent_ms.retain(|t| now.saturating_sub(*t) < window);
            if d.sent_ms.len() >= 2 {
                continue;
            }
            d.state = Some(AlertState::Resolved);
            d.sent_ms.push(now);
            d.held_resolved = None;
            to_send.push(held);
        }
        to_send
    }

    /// Forgets delivery state of keys resolved and told long ago.
    fn forget_told(&mut self, now: u64) {
        let window = ms(self.window);
        let active = &self.active;
        self.delivered.retain(|k, d| {
            active.contains_key(k)
                || d.held_resolved.is_some()
                || d.sent_ms.iter().any(|t| now.saturating_sub(*t) < window)
        });
    }
}

/// Fingerprint of a label set (FNV-1a over sorted `name=value` pairs), hex.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
            state: AlertState::Pending,
            value: 0.0,
            active_since_ms: 0,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_eval_ms: 0,
            silenced_by: None,
        }
    }

    fn cand(member: &str, for_s: u64) -> Candidate {
        Candidate {
            alert: alert(member),
            for_: Duration::from_secs(for_s),
        }
    }

    fn known(members: &[&str]) -> HashSet<String> {
        members.iter().map(|m| alert(m).key).collect()
    }

    const STALE: Duration = Duration::from_secs(600);

    #[test]
    fn pending_then_firing_then_resolved_with_notifications() {
        let mut l = Lifecycle::new(DEDUP_WINDOW);
        let k = known(&["m1"]);
        let o = l.step(1_000, vec![cand("m1", 10)], &k, STALE, |_| None);
        assert!(o.transitions.is_empty() && o.notify.is_empty());
        assert_eq!(
            l.active.values().next().map(|a| a.state),
            Some(AlertState::Pending)
        );
        let o = l.step(5_000, vec![cand("m1", 10)], &k, STALE, |_| None);
        assert!(o.notify.is_empty());
        let o = l.step(11_000, vec![cand("m1", 10)], &k, STALE, |_| None);
        assert_eq!(o.transitions.len(), 1);
        assert_eq!(o.transitions[0].state, AlertState::Firing);
        assert_eq!(o.notify.len(), 1);
        assert_eq!(o.notify[0].state, AlertState::Firing);
        // Still firing: nothing new.
        let o = l.step(12_000, vec![cand("m1", 10)], &k, STALE, |_| None);
        assert!(o.transitions.is_empty() && o.notify.is_empty());
        // Condition gone.
        let o = l.step(13_000, vec![], &k, STALE, |_| None);
        assert_eq!(o.transitions[0].state, AlertState::Resolved);
        assert_eq!(o.notify.len(), 1);
        assert_eq!(o.notify[0].state, AlertState::Resolved);
        assert!(l.active.is_empty());
    }

    #[test]
    fn pending_that_clears_is_not_recorded() {
        let mut l = Lifecycle::new(DEDUP_WINDOW);
        let k = known(&["m1"]);
        l.step(1_000, vec![cand("m1", 60)], &k, STALE, |_| None);
        let o = l.step(2_000, vec![], &k, STALE, |_| None);
        assert!(o.transitions.is_empty() && o.notify.is_empty());
        assert!(l.active.is_empty());
    }

    #[test]
    fn missing_data_keeps_state_until_stale() {
        let mut l = Lifecycle::new(DEDUP_WINDOW);
        let k = known(&["m1"]);
        l.step(1_000, vec![cand("m1", 0)], &k, STALE, |_| None);
        let none = HashSet::new();
        let o = l.step(2_000, vec![], &none, STALE, |_| None);
        assert!(o.transitions.is_empty());
        assert_eq!(l.active.len(), 1);
        let o = l.step(1_000 + 601_000, vec![], &none, STALE, |_| None);
        assert_eq!(o.transitions[0].state, AlertState::Resolved);
    }

    #[test]
    fn flapping_is_deduplicated_within_the_window_and_catches_up() {
        let mut l = Lifecycle::new(DEDUP_WINDOW);
        let k = known(&["m1"]);
        let mut sent = Vec::new();
        let mut t = 0;
        for i in 0..6 {
            t = 1_000 + i * 10_000;
            let holding = if i % 2 == 0 {
                vec![cand("m1", 0)]
            } else {
                vec![]
            };
            let o = l.step(t, holding, &k, STALE, |_| None);
            sent.extend(o.notify.into_iter().map(|a| a.state));
        }
        // Six flips in 60 s: only the first firing and the first resolved went out.
        assert_eq!(sent, vec![AlertState::Firing, AlertState::Resolved]);
        // The last flip left it resolved (i = 5), which receivers already know; fire again
        // and wait out the window: the firing goes out then.
        let o = l.step(t + 1_000, vec![cand("m1", 0)], &k, STALE, |_| None);
        assert!(o.notify.is_empty());
        let o = l.step(1_000 + 300_000, vec![cand("m1", 0)], &k, STALE, |_| None);
        assert_eq!(o.notify.len(), 1);
        assert_eq!(o.notify[0].state, AlertState::Firing);
    }

    #[test]
    fn silenced_alerts_are_not_sent_until_the_silence_ends() {
        let mut l = Lifecycle::new(DEDUP_WINDOW);
        let k = known(&["m1", "m2"]);
        let mute_m1 = |a: &Alert| (a.member.as_deref() == Some("m1")).then(|| "s1".to_string());
        let o = l.step(
            1_000,
            vec![cand("m1", 0), cand("m2", 0)],
            &k,
            STALE,
            mute_m1,
        );
        assert_eq!(o.transitions.len(), 2, "both fire and are recorded");
        assert_eq!(o.notify.len(), 1);
        assert_eq!(o.notify[0].member.as_deref(), Some("m2"));
        let m1 = alert("m1").key;
        assert_eq!(l.active[&m1].silenced_by.as_deref(), Some("s1"));
        let o = l.step(2_000, vec![cand("m1", 0), cand("m2", 0)], &k, STALE, |_| {
            None
        });
        assert_eq!(o.notify.len(), 1);
        assert_eq!(o.notify[0].member.as_deref(), Some("m1"));
        assert_eq!(l.active[&m1].silenced_by, None);
    }

    #[test]
    fn a_silenced_alert_that_resolves_sends_nothing() {
        let mut l = Lifecycle::new(DEDUP_WINDOW);
        let k = known(&["m1"]);
        let o = l.step(1_000, vec![cand("m1", 0)], &k, STALE, |_| Some("s".into()));
        assert!(o.notify.is_empty());
        let o = l.step(2_000, vec![], &k, STALE, |_| None);
        assert_eq!(o.transitions.len(), 1);
        assert!(o.notify.is_empty());
    }

    #[test]
    fn fingerprints_depend_on_every_label() {
        let a = alert("m1");
        let b = alert("m2");
        assert_ne!(a.key, b.key);
        assert_eq!(a.key, fingerprint(&a.labels));
    }
}
