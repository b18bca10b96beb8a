//! One health check's raw observations, and how they become the cluster's [`MemberState`]s,
//! quorum and availability. Pure functions: the health loop gathers, this module decides.

use crate::model::config::Thresholds;
use crate::{
    model::cluster::Alarm, model::cluster::ClusterState, model::cluster::EndpointState,
    model::cluster::MemberState, model::cluster::MemberStatus, model::time::hex_id,
    sources::etcd::leader,
};

/// A member from MemberList.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedMember {
    /// Member ID as etcd assigns it (printed in hex elsewhere).
    pub id: u64,
    /// The member's `--name`; empty for a member added but not started yet.
    pub name: String,
    /// Where the other members reach it for raft (its advertised peer URLs).
    pub peer_urls: Vec<String>,
    /// Where clients reach it (its advertised client URLs); empty until it has started.
    pub client_urls: Vec<String>,
    /// A learner: it replicates the log but does not vote or count towards quorum.
    pub is_learner: bool,
}

/// A Status answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReply {
    /// The member that answered.
    pub member_id: u64,
    /// Its view of the cluster and itself.
    pub status: MemberStatus,
}

/// What one health check saw.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The member list, if any member answered MemberList.
    pub member_list: Option<Vec<ListedMember>>,
    /// Status per polled URL.
    pub statuses: Vec<(String, Result<StatusReply, String>)>,
    /// Alarms `(member id, kind)`, if any member answered AlarmList.
    pub alarms: Option<Vec<(u64, String)>>,
}

/// Merges `obs` into `state`: member identities from the member list (or the previous one),
/// reachability and Status per member, endpoints, alarms, quorum, leader and split brain.
/// Fields other loops own (server metrics, probe latency) are kept.
pub fn apply(state: &mut ClusterState, obs: &Observation, thresholds: &Thresholds) {
    let listed = listed_members(state, obs);
    let alarms = current_alarms(state, obs);
    let mut members: Vec<MemberState> = listed
        .iter()
        .map(|l| member_state(state, obs, l, &alarms))
        .collect();
    let view = leader::evaluate(&members);
    for m in &mut members {
        m.is_leader = view.leader.as_ref().is_some_and(|l| l.id == m.id);
    }
    update_quorum(state, &members, thresholds);
    state.cluster_id = members
        .iter()
        .filter(|m| m.reachable)
        .find_map(|m| m.status.as_ref().map(|s| s.cluster_id.clone()))
        .or_else(|| state.cluster_id.clone());
    state.updated_at_ms = obs.at_ms;
    state.has_leader = view.leader.is_some();
    state.leader = view.leader;
    state.split_brain = view.split_brain;
    state.healthy =
        state.has_leader && state.quorum_ok && !state.split_brain.detected && alarms.is_empty();
    state.alarms = alarms;
    state.members = members;
    state.endpoints = endpoint_states(obs);
}

/// The members this check knows of: the member list it got, or else the previous members.
fn listed_members(state: &ClusterState, obs: &Observation) -> Vec<ListedMember> {
    match &obs.member_list {
        Some(list) => list.clone(),
        None => state
            .members
            .iter()
            .filter_map(|m| {
                Some(ListedMember {
                    id: u64::from_str_radix(&m.id, 16).ok()?,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: m.status.as_ref().is_some_and(|s| s.is_learner),
                })
            })
            .collect(),
    }
}

/// The alarms this check got, or else the previous ones.
fn current_alarms(state: &ClusterState, obs: &Observation) -> Vec<Alarm> {
    match &obs.alarms {
        Some(a) => a
            .iter()
            .map(|(id, kind)| Alarm {
                member_id: hex_id(*id),
                alarm: kind.clone(),
            })
            .collect(),
        None => state.alarms.clone(),
    }
}

/// One listed member's state: reachable when a Status answer came from it (else the errors
/// of its client URLs), its Status (kept from before while unreachable, so stale Status never
/// counts towards leadership or split brain), and the fields other loops own kept.
fn member_state(
    state: &ClusterState,
    obs: &Observation,
    l: &ListedMember,
    alarms: &[Alarm],
) -> MemberState {
    let id = hex_id(l.id);
    let previous = state.members.iter().find(|m| m.id == id);
    let reply = obs.statuses.iter().find_map(|(_, r)| match r {
        Ok(s) if s.member_id == l.id => Some(s),
        _ => None,
    });
    let error = if reply.is_some() {
        None
    } else {
        let errors: Vec<&str> = obs
            .statuses
            .iter()
            .filter(|(url, _)| l.client_urls.iter().any(|c| same_url(c, url)))
            .filter_map(|(_, r)| r.as_ref().err().map(String::as_str))
            .collect();
        Some(if errors.is_empty() {
            "no client URL of this member was polled".to_string()
        } else {
            errors.join("; ")
        })
    };
    let mut m = MemberState {
        id: id.clone(),
        name: l.name.clone(),
        peer_urls: l.peer_urls.clone(),
        client_urls: l.client_urls.clone(),
        reachable: reply.is_some(),
        error,
        is_leader: false,
        last_seen_ms: if reply.is_some() {
            Some(obs.at_ms)
        } else {
            previous.and_then(|p| p.last_seen_ms)
        },
        status: reply
            .map(|r| {
                let mut s = r.status.clone();
                s.is_learner = s.is_learner || l.is_learner;
                s
            })
            .or_else(|| previous.and_then(|p| p.status.clone())),
        server: previous.and_then(|p| p.server.clone()),
        scrape_error: previous.and_then(|p| p.scrape_error.clone()),
        latency: previous.map(|p| p.latency.clone()).unwrap_or_default(),
        alarms: alarms
            .iter()
            .filter(|a| a.member_id == id)
            .map(|a| a.alarm.clone())
            .collect(),
    };
    if !m.reachable {
        // Stale Status must not count towards leadership or split brain.
        m.status = previous.and_then(|p| p.status.clone());
    }
    m
}

/// Member count, quorum (of the voting members), availability and partition suspicion.
fn update_quorum(state: &mut ClusterState, members: &[MemberState], thresholds: &Thresholds) {
    let voting: Vec<&MemberState> = members
        .iter()
        .filter(|m| !m.status.as_ref().is_some_and(|s| s.is_learner))
        .collect();
    let quorum_size = if voting.is_empty() {
        0
    } else {
        voting.len() / 2 + 1
    };
    let available_voting = voting.iter().filter(|m| m.reachable).count();
    let available = members.iter().filter(|m| m.reachable).count();
    let unreachable: Vec<String> = members
        .iter()
        .filter(|m| !m.reachable)
        .map(ClusterState::member_label)
        .collect();
    state.member_count = members.len();
    state.available_members = available;
    state.quorum_size = quorum_size;
    state.quorum_ok = quorum_size > 0 && available_voting >= quorum_size;
    state.min_available_ok = available >= thresholds.min_available_nodes;
    state.possible_partition = !unreachable.is_empty() && available > 0;
    state.unreachable_members = unreachable;
}

/// Each polled URL: whether it answered, and which member or which error.
fn endpoint_states(obs: &Observation) -> Vec<EndpointState> {
    obs.statuses
        .iter()
        .map(|(url, r)| EndpointState {
            url: url.clone(),
            reachable: r.is_ok(),
            member_id: r.as_ref().ok().map(|s| hex_id(s.member_id)),
            error: r.as_ref().err().cloned(),
        })
        .collect()
}

/// Alarms `(member id, kind)` listed in the `errors` of the Status answers
/// (`memberID:<id> alarm:<KIND>`), deduplicated.
pub fn alarms_from_status(
    statuses: &[(String, Result<StatusReply, String>)],
) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for reply in statuses.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        for e in &reply.status.errors {
            if let Some(alarm) = parse_alarm(e)
                && !out.contains(&alarm)
            {
                out.push(alarm);
            }
        }
    }
    out
}

fn parse_alarm(text: &str) -> Option<(u64, String)> {
    let id_text = text.split("memberID:").nth(1)?;
    let id: u64 = id_text
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let kind = text
        .split("alarm:")
        .nth(1)?
        .trim_start()
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()?
        .to_string();
    (!kind.is_empty() && kind != "NONE").then_some((id, kind))
}

/// Replaces the alarms (`(member id, kind)`) and recomputes health.
pub fn apply_alarms(state: &mut ClusterState, alarms: &[(u64, String)]) {
    state.alarms = alarms
        .iter()
        .map(|(id, kind)| Alarm {
            member_id: hex_id(*id),
            alarm: kind.clone(),
        })
        .collect();
    for m in &mut state.members {
        m.alarms = state
            .alarms
            .iter()
            .filter(|a| a.member_id == m.id)
            .map(|a| a.alarm.clone())
            .collect();
    }
    state.healthy = state.has_leader
        && state.quorum_ok
        && !state.split_brain.detected
        && state.alarms.is_empty();
}

/// Whether two URLs name the same endpoint (ignoring a trailing slash).
pub fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            max_latency_ms: 100,
            max_db_size_mb: 8192,
            min_available_nodes: 2,
            max_leader_changes: 3,
        }
    }

    fn listed(n: u64) -> Vec<ListedMember> {
        (1..=n)
            .map(|i| ListedMember {
                id: i,
                name: format!("m{i}"),
                peer_urls: vec![format!("http://p{i}")],
                client_urls: vec![format!("http://c{i}")],
                is_learner: false,
            })
            .collect()
    }

    fn reply(id: u64, leader: u64) -> Result<StatusReply, String> {
        Ok(StatusReply {
            member_id: id,
            status: MemberStatus {
                cluster_id: "cc".into(),
                leader_id: hex_id(leader),
                raft_term: 2,
                ..MemberStatus::default()
            },
        })
    }

    #[test]
    fn one_member_down_keeps_quorum() {
        let mut s = ClusterState::default();
        let obs = Observation {
            at_ms: 5,
            member_list: Some(listed(3)),
            statuses: vec![
                ("http://c1".into(), reply(1, 2)),
                ("http://c2".into(), reply(2, 2)),
                ("http://c3".into(), Err("timed out".into())),
            ],
            alarms: Some(vec![]),
        };
        apply(&mut s, &obs, &thresholds());
        assert_eq!(s.member_count, 3);
        assert_eq!(s.quorum_size, 2);
        assert_eq!(s.available_members, 2);
        assert!(s.quorum_ok && s.has_leader && s.healthy);
        assert_eq!(s.unreachable_members, vec!["m3"]);
        assert!(s.possible_partition);
        assert_eq!(s.members[2].error.as_deref(), Some("timed out"));
        assert!(s.members[1].is_leader);
    }

    #[test]
    fn two_members_down_lose_quorum_and_leader() {
        let mut s = ClusterState::default();
        let obs = Observation {
            at_ms: 5,
            member_list: Some(listed(3)),
            statuses: vec![
                ("http://c1".into(), reply(1, 2)),
                ("http://c2".into(), Err("timed out".into())),
                ("http://c3".into(), Err("refused".into())),
            ],
            alarms: None,
        };
        apply(&mut s, &obs, &thresholds());
        assert!(!s.quorum_ok && !s.has_leader && !s.healthy && !s.min_available_ok);
        // Without a fresh member list the previous one is kept.
        let again = Observation {
            member_list: None,
            ..obs
        };
        apply(&mut s, &again, &thresholds());
        assert_eq!(s.member_count, 3);
    }

    #[test]
    fn alarms_are_read_from_status_errors() {
        let mut r = reply(1, 1);
        if let Ok(s) = &mut r {
            s.status.errors = vec![
                "memberID:10276657743932975437 alarm:NOSPACE ".into(),
                "etcdserver: no leader".into(),
            ];
        }
        let statuses = vec![("a".to_string(), r.clone()), ("b".to_string(), r)];
        assert_eq!(
            alarms_from_status(&statuses),
            vec![(10276657743932975437, "NOSPACE".to_string())]
        );
    }

    #[test]
    fn alarms_make_the_cluster_unhealthy() {
        let mut s = ClusterState::default();
        let obs = Observation {
            at_ms: 5,
            member_list: Some(listed(1)),
            statuses: vec![("http://c1".into(), reply(1, 1))],
            alarms: Some(vec![(1, "NOSPACE".into())]),
        };
        apply(&mut s, &obs, &thresholds());
        assert!(s.has_leader && s.quorum_ok && !s.healthy);
        assert_eq!(s.members[0].alarms, vec!["NOSPACE"]);
        apply_alarms(&mut s, &[]);
        assert!(s.healthy && s.members[0].alarms.is_empty());
        apply_alarms(&mut s, &[(1, "CORRUPT".into())]);
        assert!(!s.healthy && s.members[0].alarms == vec!["CORRUPT"]);
    }
}
