//! Do the members agree? Cluster id, version, revision and raft index spread (from their last
//! Status answers) and HashKV at one revision (asked by the caller), as etcd-diagnosis checks.

use std::collections::BTreeSet;

use super::{Consistency, ReportInputs};
use crate::model::cluster::ClusterState;

/// Raft index spread above which members are called behind (the answers of one health round
/// are taken within milliseconds of each other).
pub(super) const RAFT_INDEX_SPREAD_WARNING: u64 = 1000;

/// Checks agreement among the members of `inputs`.
pub(super) fn check(inputs: &ReportInputs) -> Consistency {
    let statuses: Vec<(String, &crate::model::cluster::MemberStatus)> = inputs
        .state
        .members
        .iter()
        .filter(|m| m.reachable)
        .filter_map(|m| Some((ClusterState::member_label(m), m.status.as_ref()?)))
        .collect();
    let mut c = Consistency::default();
    if statuses.is_empty() {
        return c;
    }
    let ids: BTreeSet<&str> = statuses
        .iter()
        .map(|(_, s)| s.cluster_id.as_str())
        .collect();
    c.cluster_ids = ids.iter().map(|s| s.to_string()).collect();
    let versions: BTreeSet<&str> = statuses.iter().map(|(_, s)| s.version.as_str()).collect();
    c.versions = versions.iter().map(|s| s.to_string()).collect();
    let revs = statuses.iter().map(|(_, s)| s.revision);
    c.revision_spread = revs.clone().max().zip(revs.min()).map(|(a, b)| a - b);
    let idx = statuses.iter().map(|(_, s)| s.raft_index);
    c.raft_index_spread = idx.clone().max().zip(idx.min()).map(|(a, b)| a - b);
    if c.cluster_ids.len() > 1 {
        let who: Vec<String> = statuses
            .iter()
            .map(|(n, s)| format!("{n}={}", s.cluster_id))
            .collect();
        c.problems
            .push(format!("cluster ids differ ({})", who.join(", ")));
    }
    if c.versions.len() > 1 {
        let who: Vec<String> = statuses
            .iter()
            .map(|(n, s)| format!("{n}={}", s.version))
            .collect();
        c.problems.push(format!(
            "versions differ ({}): finish the upgrade",
            who.join(", ")
        ));
    }
    if let Some(spread) = c
        .raft_index_spread
        .filter(|s| *s > RAFT_INDEX_SPREAD_WARNING)
    {
        let behind = statuses
            .iter()
            .min_by_key(|(_, s)| s.raft_index)
            .map_or(String::new(), |(n, _)| n.clone());
        c.problems.push(format!(
            "raft index spread {spread} (> {RAFT_INDEX_SPREAD_WARNING}): {behind} is behind"
        ));
    }
    hashes(inputs, &mut c);
    c
}

fn hashes(inputs: &ReportInputs, c: &mut Consistency) {
    let Some(round) = &inputs.hashkv else {
        return;
    };
    c.hashkv = Some(round.clone());
    let answered: Vec<(&str, u32)> = round
        .answers
        .iter()
        .filter_map(|a| Some((a.member.as_str(), a.hash?)))
        .collect();
    if answered.len() < 2 {
        return;
    }
    let distinct: BTreeSet<u32> = answered.iter().map(|(_, h)| *h).collect();
    c.hashes_agree = Some(distinct.len() == 1);
    if distinct.len() > 1 {
        let who: Vec<String> = answered.iter().map(|(m, h)| format!("{m}={h}")).collect();
        c.problems.push(format!(
            "HashKV differs at revision {} ({}): a member's data diverged",
            round.revision,
            who.join(", ")
        ));
    }
}
