//! Leader changes explained: on every change the health round records
//! (`sources::etcd::leader`), the diagnosis task keeps the previous leader's verdict and
//! evidence at that moment and what each other member saw of it (its own verdict, and its RTT
//! and retransmits to the old leader). `GET /api/v1/cluster/leader` joins them to its history,
//! the status page shows them, and the leader-change alerts carry the newest one
//! (`annotations.diagnosis`, through `super::leader_change_text`).
//!
//! "At that moment" is the first diagnosis tick after the change; while the old leader's
//! cause is not yet a fault more specific than `unreachable` (the agent samples process state
//! every few seconds) the explanation is refreshed for up to [`SETTLE_MS`], then frozen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{MemberDiagnosis, engine::FAULTS};
use crate::model::cluster::{LEADER_HISTORY, LeaderChange};

/// How long after a change its explanation may still be refreshed while it names no fault.
pub const SETTLE_MS: u64 = 15_000;

/// The rules whose alerts carry the latest explanation (`annotations.diagnosis`, and
/// `{{ diagnosis }}` in their templates).
pub const LEADER_CHANGE_RULES: &[&str] = &["HighLeaderChangeRate", "etcdHighNumberOfLeaderChanges"];

/// What one other member saw of the previous leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    /// Member name.
    pub member: String,
    /// Its own verdict's cause then.
    pub cause: String,
    /// For `peer_unhealthy`/`peer_network_slow`: whom it blamed.
    pub peer: Option<String>,
    /// For `peer_unhealthy`: the cause it gave the peer.
    pub peer_cause: Option<String>,
    /// Its kernel smoothed RTT to the previous leader, ms (its agent's view).
    pub rtt_to_previous_leader_ms: Option<f64>,
    /// Its retransmits to the previous leader in the window.
    pub retransmits_to_previous_leader: Option<u64>,
}

/// Why a leader changed, as far as the diagnosis could tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaderChangeExplanation {
    /// The change's time (Unix ms), as in the history entry.
    pub at_ms: u64,
    /// The new leader (hex), as in the history entry.
    pub new_leader: String,
    /// Name of the previous leader, when it is still a member.
    pub previous_leader_name: Option<String>,
    /// The previous leader's verdict and evidence at the change (first tick after it).
    pub previous_leader: Option<MemberDiagnosis>,
    /// What the other members saw then.
    pub peers: Vec<PeerView>,
    /// One line for people.
    pub summary: String,
}

/// Explanations per cluster, keyed by (time, new leader); at most [`LEADER_HISTORY`] each.
#[derive(Debug, Default)]
pub struct Explanations {
    by_cluster: BTreeMap<String, BTreeMap<(u64, String), LeaderChangeExplanation>>,
}

impl Explanations {
    /// The explanation of one change.
    pub fn get(&self, cluster: &str, change: &LeaderChange) -> Option<LeaderChangeExplanation> {
        self.by_cluster
            .get(cluster)?
            .get(&(change.at_ms, change.new_leader.clone()))
            .cloned()
    }

    /// The newest explanation of `cluster`.
    pub fn latest(&self, cluster: &str) -> Option<LeaderChangeExplanation> {
        self.by_cluster.get(cluster)?.values().next_back().cloned()
    }

    /// Takes back the explanations a previous run kept in the history store (written by the
    /// diagnosis task from what [`Explanations::observe`] returns); one already known is kept.
    pub fn load(&mut self, cluster: &str, explanations: Vec<LeaderChangeExplanation>) {
        let known = self.by_cluster.entry(cluster.to_string()).or_default();
        for e in explanations {
            known.entry((e.at_ms, e.new_leader.clone())).or_insert(e);
        }
        bound(known);
    }

    /// Records or refreshes the explanations of `history`'s changes: new ones, and those still
    /// settling (see [`SETTLE_MS`]). `verdicts` are the cluster's verdicts of this tick.
    /// Returns the explanations that are new or differ from what was known, for the store.
    pub fn observe(
        &mut self,
        cluster: &str,
        history: &[LeaderChange],
        verdicts: &[MemberDiagnosis],
        now_ms: u64,
    ) -> Vec<LeaderChangeExplanation> {
        let mut changed = Vec::new();
        let known = self.by_cluster.entry(cluster.to_string()).or_default();
        for change in history.iter().filter(|c| c.at_ms <= now_ms) {
            let key = (change.at_ms, change.new_leader.clone());
            let settled = known
                .get(&key)
                .is_some_and(|e| now_ms.saturating_sub(change.at_ms) > SETTLE_MS || names_fault(e));
            // A change older than the settling time that was never seen (history loaded at
            // start-up) is not explained with today's verdicts.
            let stale =
                !known.contains_key(&key) && now_ms.saturating_sub(change.at_ms) > SETTLE_MS;
            if settled || stale {
                continue;
            }
            let explanation = explain(change, verdicts);
            if known.get(&key) != Some(&explanation) {
                changed.push(explanation.clone());
                known.insert(key, explanation);
            }
        }
        bound(known);
        changed
    }

    /// Forgets clusters that are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_cluster.retain(|c, _| keep(c));
    }
}

/// Keeps the newest [`LEADER_HISTORY`] explanations of one cluster.
fn bound(known: &mut BTreeMap<(u64, String), LeaderChangeExplanation>) {
    while known.len() > LEADER_HISTORY {
        known.pop_first();
    }
}

/// Whether the explanation names a fault more specific than `unreachable` (which a stopped
/// or starved member first looks like, until its agent's next resource sample).
fn names_fault(e: &LeaderChangeExplanation) -> bool {
    e.previous_leader.as_ref().is_some_and(|d| {
        let cause = d.verdict.cause.as_str();
        cause != "unreachable" && FAULTS.contains(&cause)
    })
}

/// The explanation of `change` from this tick's verdicts.
pub fn explain(change: &LeaderChange, verdicts: &[MemberDiagnosis]) -> LeaderChangeExplanation {
    let old = change
        .old_leader
        .as_deref()
        .and_then(|id| verdicts.iter().find(|d| d.member_id == id));
    let name = old.map(|d| d.member.clone());
    let peers: Vec<PeerView> = verdicts
        .iter()
        .filter(|d| Some(&d.member_id) != change.old_leader.as_ref())
        .map(|d| {
            let to_old = name
                .as_deref()
                .and_then(|n| d.verdict.evidence.peers.iter().find(|p| p.peer == n));
            PeerView {
                member: d.member.clone(),
                cause: d.verdict.cause.clone(),
                peer: d.verdict.peer.clone(),
                peer_cause: d.verdict.peer_cause.clone(),
                rtt_to_previous_leader_ms: to_old.map(|p| p.rtt_ms),
                retransmits_to_previous_leader: to_old.map(|p| p.retransmits),
            }
        })
        .collect();
    let summary = summary(change, old, &peers);
    LeaderChangeExplanation {
        at_ms: change.at_ms,
        new_leader: change.new_leader.clone(),
        previous_leader_name: name,
        previous_leader: old.cloned(),
        peers,
        summary,
    }
}

fn summary(change: &LeaderChange, old: Option<&MemberDiagnosis>, peers: &[PeerView]) -> String {
    let new = if change.new_leader_name.is_empty() {
        change.new_leader.as_str()
    } else {
        change.new_leader_name.as_str()
    };
    let Some(old) = old else {
        return format!(
            "leader changed to {new} (term {}); the previous leader {} has no verdict",
            change.term,
            change.old_leader.as_deref().unwrap_or("unknown")
        );
    };
    let blamed = peers
        .iter()
        .filter(|p| p.peer.as_deref() == Some(old.member.as_str()))
        .map(|p| p.member.as_str())
        .collect::<Vec<_>>();
    let seen = if blamed.is_empty() {
        String::new()
    } else {
        format!("; {} blamed it", blamed.join(", "))
    };
    format!(
        "leader changed from {} to {new} (term {}): previous leader was {} — {}{seen}",
        old.member, change.term, old.verdict.cause, old.verdict.summary
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnosis::{Verdict, engine::Evidence, engine::PeerEvidence};

    fn d(member: &str, id: &str, cause: &str, peers: Vec<PeerEvidence>) -> MemberDiagnosis {
        MemberDiagnosis {
            cluster: "c".into(),
            member: member.into(),
            member_id: id.into(),
            evaluated_at_ms: 1,
            cause_since_ms: 1,
            window_seconds: 8.0,
            verdict: Verdict {
                cause: cause.into(),
                summary: format!("{member} is {cause}"),
                peer: (cause == "peer_unhealthy").then(|| "m0".to_string()),
                evidence: Evidence {
                    peers,
                    ..Evidence::default()
                },
                ..Verdict::default()
            },
        }
    }

    fn change(at: u64) -> LeaderChange {
        LeaderChange {
            at_ms: at,
            old_leader: Some("a0".into()),
            new_leader: "b1".into(),
            new_leader_name: "m1".into(),
            term: 7,
        }
    }

    #[test]
    fn records_the_old_leaders_verdict_and_the_peers_view_then_freezes_it() {
        let mut e = Explanations::default();
        let rtt = PeerEvidence {
            peer: "m0".into(),
            rtt_ms: 80.0,
            retransmits: 30,
        };
        let first = [
            d("m0", "a0", "unreachable", vec![]),
            d("m1", "b1", "healthy", vec![rtt.clone()]),
        ];
        assert_eq!(e.observe("c", &[change(1000)], &first, 2000).len(), 1);
        // The same verdicts again: nothing new for the store.
        assert!(e.observe("c", &[change(1000)], &first, 2500).is_empty());
        let x = e.get("c", &change(1000)).expect("explained");
        assert_eq!(x.previous_leader_name.as_deref(), Some("m0"));
        assert_eq!(x.peers.len(), 1);
        assert_eq!(x.peers[0].rtt_to_previous_leader_ms, Some(80.0));
        // A fault seen within the settling time replaces "unreachable"…
        let later = [
            d("m0", "a0", "stopped", vec![]),
            d("m1", "b1", "peer_unhealthy", vec![rtt]),
        ];
        e.observe("c", &[change(1000)], &later, 6000);
        let x = e.latest("c").expect("explained");
        assert_eq!(
            x.previous_leader.as_ref().map(|p| p.verdict.cause.as_str()),
            Some("stopped")
        );
        assert!(
            x.summary.contains("previous leader was stopped"),
            "{}",
            x.summary
        );
        assert!(x.summary.contains("m1 blamed it"), "{}", x.summary);
        // …and then it stays.
        assert!(e.observe("c", &[change(1000)], &first, 7000).is_empty());
        assert_eq!(
            e.latest("c")
                .and_then(|x| x.previous_leader)
                .map(|p| p.verdict.cause),
            Some("stopped".to_string())
        );
    }

    #[test]
    fn old_history_is_not_explained_with_todays_verdicts_and_is_bounded() {
        let mut e = Explanations::default();
        let now = 1_000_000;
        e.observe("c", &[change(1)], &[d("m0", "a0", "healthy", vec![])], now);
        assert!(e.latest("c").is_none());
        let history: Vec<LeaderChange> = (0..150).map(|i| change(now - 100 + i)).collect();
        e.observe("c", &history, &[], now + 100);
        assert_eq!(e.by_cluster["c"].len(), LEADER_HISTORY);
        assert!(
            e.latest("c")
                .is_some_and(|x| x.summary.contains("has no verdict"))
        );
    }

    #[test]
    fn loaded_explanations_survive_a_restart_and_are_not_re_explained() {
        let mut before = Explanations::default();
        let stopped = [d("m0", "a0", "stopped", vec![])];
        let saved = before.observe("c", &[change(1000)], &stopped, 2000);
        let body = serde_json::to_string(&saved[0]).expect("serialises");
        let back: LeaderChangeExplanation = serde_json::from_str(&body).expect("parses");
        assert_eq!(back, saved[0]);

        // A restarted collector loads it, then sees the same change (from the history table)
        // long after it settled, with verdicts that no longer say "stopped".
        let mut after = Explanations::default();
        after.load("c", vec![back]);
        let fresh = after.observe(
            "c",
            &[change(1000)],
            &[d("m0", "a0", "healthy", vec![])],
            60_000,
        );
        assert!(fresh.is_empty());
        assert_eq!(after.get("c", &change(1000)).as_ref(), Some(&saved[0]));
    }
}
