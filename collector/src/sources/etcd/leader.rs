//! Who leads: the leader claimed by the reachable members, leader changes over time, and
//! split-brain evidence (members that disagree on the leader within one term, more than one
//! member claiming leadership, or different cluster ids).

use std::collections::{BTreeMap, VecDeque};

use crate::{
    model::cluster::LEADER_HISTORY, model::cluster::LeaderChange, model::cluster::LeaderInfo,
    model::cluster::MemberState, model::cluster::SplitBrain,
};

/// The leader as the reachable members see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderView {
    /// The member that claims leadership (highest term wins), if any.
    pub leader: Option<LeaderInfo>,
    /// Split-brain evidence.
    pub split_brain: SplitBrain,
}

/// Reads leadership from the members' last Status answers (unreachable members are ignored).
pub fn evaluate(members: &[MemberState]) -> LeaderView {
    let reachable: Vec<&MemberState> = members
        .iter()
        .filter(|m| m.reachable && m.status.is_some())
        .collect();
    let mut claims: Vec<(&MemberState, u64)> = reachable
        .iter()
        .filter_map(|m| {
            let s = m.status.as_ref()?;
            (s.leader_id == m.id).then_some((*m, s.raft_term))
        })
        .collect();
    claims.sort_by_key(|(_, term)| std::cmp::Reverse(*term));
    let leader = claims.first().map(|(m, term)| LeaderInfo {
        id: m.id.clone(),
        name: m.name.clone(),
        term: *term,
    });

    let mut reasons = Vec::new();
    if claims.len() > 1 {
        let who: Vec<String> = claims
            .iter()
            .map(|(m, t)| format!("{} (term {t})", label(m)))
            .collect();
        reasons.push(format!(
            "{} members claim leadership: {}",
            claims.len(),
            who.join(", ")
        ));
    }
    let mut by_term: BTreeMap<u64, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for m in &reachable {
        if let Some(s) = &m.status
            && s.leader_id != "0"
        {
            by_term
                .entry(s.raft_term)
                .or_default()
                .entry(s.leader_id.clone())
                .or_default()
                .push(label(m));
        }
    }
    for (term, leaders) in &by_term {
        if leaders.len() > 1 {
            let views: Vec<String> = leaders
                .iter()
                .map(|(leader, who)| format!("{} say leader is {leader}", who.join("+")))
                .collect();
            reasons.push(format!(
                "members disagree on the leader in term {term}: {}",
                views.join("; ")
            ));
        }
    }
    let mut cluster_ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for m in &reachable {
        if let Some(s) = &m.status {
            cluster_ids
                .entry(s.cluster_id.as_str())
                .or_default()
                .push(label(m));
        }
    }
    if cluster_ids.len() > 1 {
        let views: Vec<String> = cluster_ids
            .iter()
            .map(|(id, who)| format!("{} report {id}", who.join("+")))
            .collect();
        reasons.push(format!("cluster IDs disagree: {}", views.join("; ")));
    }
    LeaderView {
        leader,
        split_brain: SplitBrain {
            detected: !reasons.is_empty(),
            reasons,
        },
    }
}

fn label(m: &MemberState) -> String {
    if m.name.is_empty() {
        m.id.clone()
    } else {
        m.name.clone()
    }
}

/// Remembers the last known leader and records each change.
#[derive(Debug, Clone, Default)]
pub struct LeaderTracker {
    last_known: Option<String>,
    /// Changes counted since the collector started.
    pub changes_total: u64,
    /// Last changes, newest last.
    pub history: VecDeque<LeaderChange>,
}

impl LeaderTracker {
    /// A tracker that continues from persisted history (the last entry's leader is the last
    /// known one, so a change that happened while the collector was down is still seen).
    pub fn resume(history: Vec<LeaderChange>) -> Self {
        let mut history: VecDeque<LeaderChange> = history.into();
        while history.len() > LEADER_HISTORY {
            history.pop_front();
        }
        Self {
            last_known: history.back().map(|c| c.new_leader.clone()),
            changes_total: 0,
            history,
        }
    }

    /// Feeds the current leader (None while there is none); returns the change, if this is one.
    /// The first leader ever seen is not a change; a period without a leader is not either:
    /// only a different leader than the last known one counts.
    pub fn observe(&mut self, leader: Option<&LeaderInfo>, at_ms: u64) -> Option<LeaderChange> {
        let leader = leader?;
        match &self.last_known {
            Some(last) if *last == leader.id => None,
            None => {
                self.last_known = Some(leader.id.clone());
                None
            }
            Some(last) => {
                let change = LeaderChange {
                    at_ms,
                    old_leader: Some(last.clone()),
                    new_leader: leader.id.clone(),
                    new_leader_name: leader.name.clone(),
                    term: leader.term,
                };
                self.last_known = Some(leader.id.clone());
                self.changes_total += 1;
                self.history.push_back(change.clone());
                while self.history.len() > LEADER_HISTORY {
                    self.history.pop_front();
                }
                Some(change)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::MemberStatus;

    fn member(id: &str, leader: &str, term: u64, cluster: &str) -> MemberState {
        MemberState {
            id: id.into(),
            name: format!("m{id}"),
            reachable: true,
            status: Some(MemberStatus {
                cluster_id: cluster.into(),
                leader_id: leader.into(),
                raft_term: term,
                ..MemberStatus::default()
            }),
            ..MemberState::default()
        }
    }

    #[test]
    fn agreeing_members_have_one_leader() {
        let ms = vec![
            member("a", "b", 3, "c1"),
            member("b", "b", 3, "c1"),
            member("c", "b", 3, "c1"),
        ];
        let v = evaluate(&ms);
        assert_eq!(v.leader.as_ref().map(|l| l.id.as_str()), Some("b"));
        assert!(!v.split_brain.detected, "{:?}", v.split_brain);
    }

    #[test]
    fn unreachable_leader_is_no_leader() {
        let mut ms = vec![member("a", "b", 3, "c1"), member("b", "b", 3, "c1")];
        ms[1].reachable = false;
        assert_eq!(evaluate(&ms).leader, None);
    }

    #[test]
    fn disagreement_in_one_term_is_split_brain() {
        let ms = vec![
            member("a", "a", 3, "c1"),
            member("b", "b", 3, "c1"),
            member("c", "0", 3, "c1"),
        ];
        let v = evaluate(&ms);
        assert!(v.split_brain.detected);
        assert_eq!(
            v.split_brain.reasons.len(),
            2,
            "{:?}",
            v.split_brain.reasons
        );
        assert!(v.split_brain.reasons[1].contains("term 3"));
    }

    #[test]
    fn different_cluster_ids_are_split_brain() {
        let ms = vec![member("a", "a", 3, "c1"), member("b", "a", 3, "c2")];
        let v = evaluate(&ms);
        assert!(v.split_brain.detected);
        assert!(v.split_brain.reasons[0].contains("cluster IDs disagree"));
    }

    #[test]
    fn tracker_counts_only_real_changes() {
        let mut t = LeaderTracker::default();
        let a = LeaderInfo {
            id: "a".into(),
            name: "ma".into(),
            term: 2,
        };
        let b = LeaderInfo {
            id: "b".into(),
            name: "mb".into(),
            term: 3,
        };
        assert!(t.observe(Some(&a), 1).is_none());
        assert!(t.observe(None, 2).is_none());
        assert!(t.observe(Some(&a), 3).is_none());
        let c = t.observe(Some(&b), 4);
        assert_eq!(
            c.map(|c| (c.old_leader, c.new_leader, c.term)),
            Some((Some("a".into()), "b".into(), 3))
        );
        assert_eq!(t.changes_total, 1);
        for i in 0..200 {
            let l = if i % 2 == 0 { &a } else { &b };
            t.observe(Some(l), 10 + i);
        }
        assert_eq!(t.history.len(), LEADER_HISTORY);
        let resumed = LeaderTracker::resume(t.history.iter().cloned().collect());
        assert_eq!(resumed.last_known.as_deref(), Some("b"));
    }
}
