//! The safe operations: rolling defragmentation and NOSPACE recovery.
//!
//! One implementation for every caller (the CLI today; the REST admin API and automatic defrag
//! later): plain async functions taking a [`ClusterConfig`], options and a progress callback,
//! returning a structured report with per-member before/after figures. Nothing is changed
//! before the preflight passes: every member answers Status, no alarm is active (NOSPACE is
//! allowed for [`recover_nospace`]), there is one leader every member agrees on, no member's
//! applied index lags the leader's raft index by more than `max_lag`, and blocking one voting
//! member still leaves a quorum.

use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    time::{Duration, Instant},
};

use etcd_client::{AlarmAction, AlarmType, CompactionOptions};
use serde::Serialize;

use super::conn::{any_client, member_client};
use crate::model::config::ClusterConfig;

/// `--max-lag` default: how far (in raft entries) a member's applied index may trail the
/// leader's raft index and still count as caught up.
pub const DEFAULT_MAX_LAG: u64 = 100;
/// `--catch-up-timeout` default: how long to wait for a member to be healthy and caught up.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// `--defrag-timeout` default: how long one member's Defragment call may take.
pub const DEFAULT_DEFRAG_TIMEOUT: Duration = Duration::from_secs(600);
/// Prefix of the key `recover-nospace` writes and deletes to prove writes succeed.
pub const RESERVED_PREFIX: &str = "__etcd-monitor/";

/// Why a safe operation did not (fully) run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpError {
    /// The preflight (or a later guard) refused before changing anything further.
    #[error("refused: {}", reasons.join("; "))]
    Refused {
        /// Every reason found, each naming the member.
        reasons: Vec<String>,
    },
    /// etcd answered with an error or could not be reached.
    #[error("{endpoint}: {message}")]
    Etcd {
        /// The member's endpoint (empty when any member would do).
        endpoint: String,
        /// What failed.
        message: String,
    },
}

fn etcd_err(endpoint: &str, config: &ClusterConfig, e: &etcd_client::Error) -> OpError {
    OpError::Etcd {
        endpoint: endpoint.to_string(),
        message: crate::sources::etcd::client::explain(e, config.tls.as_ref()),
    }
}

/// `--if-fragmented=RATIO%,SIZE`: defragment a member only when its fragmentation
/// (1 − in-use/total) is at least `min_ratio` AND its database is at least `min_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fragmentation {
    /// 0.0–1.0.
    pub min_ratio: f64,
    /// Bytes of the database file.
    pub min_bytes: u64,
}

impl FromStr for Fragmentation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ratio, size) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: expected RATIO%,SIZE, e.g. 45%,100MB"))?;
        let ratio = ratio.trim();
        let min_ratio = match ratio.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => ratio.parse::<f64>(),
        }
        .map_err(|_| format!("{ratio:?}: not a percentage (e.g. 45%)"))?;
        if !(0.0..=1.0).contains(&min_ratio) {
            return Err(format!("{ratio:?}: must be between 0% and 100%"));
        }
        Ok(Self {
            min_ratio,
            min_bytes: parse_size(size)?,
        })
    }
}

/// Parses `100MB`, `1.5GiB`, `4096` (bytes). KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (e.g. 100MB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    Ok((n * mult).round() as u64)
}

/// How a rolling defragmentation runs.
#[derive(Debug, Clone)]
pub struct DefragOptions {
    /// Skip members below the threshold; `None` defragments every member.
    pub if_fragmented: Option<Fragmentation>,
    /// Move leadership to a healthy caught-up follower before defragmenting the leader.
    pub move_leader: bool,
    /// Raft entries a member may trail the leader and count as caught up.
    pub max_lag: u64,
    /// How long to wait for a member (or the cluster) to be healthy and caught up.
    pub catch_up_timeout: Duration,
    /// How long one Defragment call may take.
    pub defrag_timeout: Duration,
    /// Survey and plan only; change nothing.
    pub dry_run: bool,
}

impl Default for DefragOptions {
    fn default() -> Self {
        Self {
            if_fragmented: None,
            move_leader: false,
            max_lag: DEFAULT_MAX_LAG,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
            defrag_timeout: DEFAULT_DEFRAG_TIMEOUT,
            dry_run: false,
        }
    }
}

/// One member as the preflight saw it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// Member ID, hex as etcdctl prints it.
    pub id: String,
    /// `--name`.
    pub name: String,
    /// Client URL used to reach it.
    pub endpoint: String,
    /// Learners do not count toward quorum.
    pub is_learner: bool,
    /// Whether it is the leader now.
    pub is_leader: bool,
    /// Status figures, or why Status failed.
    #[serde(flatten)]
    pub status: Option<StatusFigures>,
    /// Why Status failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    raw_id: u64,
}

/// What Status says about a member's database and raft progress.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatusFigures {
    /// Database file size.
    pub db_size: i64,
    /// Bytes in use inside it.
    pub db_size_in_use: i64,
    /// 1 − in-use/total.
    pub fragmentation: f64,
    /// Raft index.
    pub raft_index: u64,
    /// Applied index.
    pub raft_applied_index: u64,
    /// Leader ID the member believes in.
    pub leader: u64,
    /// Revision of the header.
    pub revision: i64,
}

fn figures(s: &etcd_client::StatusResponse) -> StatusFigures {
    let db = s.db_size();
    let used = s.raft_used_db_size();
    StatusFigures {
        db_size: db,
        db_size_in_use: used,
        fragmentation: if db > 0 {
            (1.0 - used as f64 / db as f64).max(0.0)
        } else {
            0.0
        },
        raft_index: s.raft_index(),
        raft_applied_index: s.raft_applied_index(),
        leader: s.leader(),
        revision: s.header().map_or(0, |h| h.revision()),
    }
}

/// The cluster as the preflight saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// Every member, in member-list order.
    pub members: Vec<MemberView>,
    /// Active alarms as `(member id hex, NOSPACE|CORRUPT)`.
    pub alarms: Vec<(String, String)>,
    /// The leader every member agrees on, hex.
    pub leader: Option<String>,
}

impl Survey {
    fn leader_view(&self) -> Option<&MemberView> {
        self.members.iter().find(|m| m.is_leader)
    }
}

fn alarm_name(t: AlarmType) -> &'static str {
    match t {
        AlarmType::Nospace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
        AlarmType::None => "NONE",
    }
}

async fn status_of(
    config: &ClusterConfig,
    url: &str,
) -> Result<etcd_client::StatusResponse, String> {
    let mut client = member_client(config, url, config.dial_timeout)
        .await
        .map_err(|e| e.message)?;
    match tokio::time::timeout(config.dial_timeout, client.status()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(crate::sources::etcd::client::explain(
            &e,
            config.tls.as_ref(),
        )),
        Err(_) => Err(format!("no answer within {:?}", config.dial_timeout)),
    }
}

/// Asks every member for its Status and the cluster for its alarms. Each member is reached at
/// the `--endpoints` entry that answers with its ID, else at its first advertised client URL.
pub async fn survey(config: &ClusterConfig) -> Result<Survey, OpError> {
    let (any_url, mut client) =
        any_client(config, config.dial_timeout)
            .await
            .map_err(|e| OpError::Etcd {
                endpoint: e.url,
                message: e.message,
            })?;
    let list = client
        .member_list()
        .await
        .map_err(|e| etcd_err(&any_url, config, &e))?;
    let members = member_urls(config, &list).await;
    let statuses = futures::future::join_all(members.iter().map(|(_, _, _, url)| async move {
        match url {
            Some(u) => status_of(config, u).await,
            None => Err("not started (no client URL)".to_string()),
        }
    }))
    .await;
    let mut views: Vec<MemberView> = members
        .into_iter()
        .zip(statuses)
        .map(|(member, status)| member_view(member, status))
        .collect();
    let leader = agreed_leader(&mut views);
    let alarms = active_alarms(&mut client)
        .await
        .map_err(|e| etcd_err(&any_url, config, &e))?;
    Ok(Survey {
        members: views,
        alarms,
        leader: leader.map(|l| format!("{l:x}")),
    })
}

/// A member as listed: (id, name, learner, the URL to reach it at).
type ListedMember = (u64, String, bool, Option<String>);

/// Every listed member with the `--endpoints` entry that answers with its ID, else its first
/// advertised client URL.
async fn member_urls(
    config: &ClusterConfig,
    list: &etcd_client::MemberListResponse,
) -> Vec<ListedMember> {
    let given = futures::future::join_all(
        config
            .endpoints
            .iter()
            .map(|url| async move { (url.clone(), status_of(config, url).await) }),
    )
    .await;
    let mut by_id: BTreeMap<u64, String> = BTreeMap::new();
    for (url, s) in &given {
        if let Ok(s) = s
            && let Some(h) = s.header()
        {
            by_id.entry(h.member_id()).or_insert_with(|| url.clone());
        }
    }
    list.members()
        .iter()
        .map(|m| {
            let url = by_id
                .get(&m.id())
                .cloned()
                .or_else(|| m.client_urls().first().cloned());
            (m.id(), m.name().to_string(), m.is_learner(), url)
        })
        .collect()
}

fn member_view(
    (id, name, learner, url): ListedMember,
    status: Result<etcd_client::StatusResponse, String>,
) -> MemberView {
    // Status lists active alarms among its errors; those are judged from AlarmList.
    let errors = |s: &etcd_client::StatusResponse| -> Vec<String> {
        s.errors()
            .iter()
            .filter(|e| !e.contains("alarm:"))
            .cloned()
            .collect()
    };
    let (status, error) = match status {
        Ok(s) if !errors(&s).is_empty() => (Some(figures(&s)), Some(errors(&s).join(", "))),
        Ok(s) => (Some(figures(&s)), None),
        Err(e) => (None, Some(e)),
    };
    MemberView {
        id: format!("{id:x}"),
        name,
        endpoint: url.unwrap_or_default(),
        is_learner: learner,
        is_leader: false,
        status,
        error,
        raw_id: id,
    }
}

/// The leader every answering member agrees on (marked in `views`), if there is one.
fn agreed_leader(views: &mut [MemberView]) -> Option<u64> {
    let leaders: std::collections::BTreeSet<u64> = views
        .iter()
        .filter_map(|v| v.status.map(|s| s.leader))
        .collect();
    let leader = if leaders.len() == 1 {
        leaders.into_iter().next().filter(|l| *l != 0)
    } else {
        None
    };
    for v in views.iter_mut() {
        v.is_leader = Some(v.raw_id) == leader;
    }
    leader
}

/// Active alarms as `(member id hex, NOSPACE|CORRUPT)`.
async fn active_alarms(
    client: &mut etcd_client::Client,
) -> Result<Vec<(String, String)>, etcd_client::Error> {
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await?;
    Ok(alarms
        .alarms()
        .iter()
        .map(|a| {
            (
                format!("{:x}", a.member_id()),
                alarm_name(a.alarm()).to_string(),
            )
        })
        .collect())
}

/// The reasons not to block any member now (empty: safe). `allow_nospace` lets an active
/// NOSPACE alarm pass (the recovery needs to defragment under it).
pub fn preflight(survey: &Survey, max_lag: u64, allow_nospace: bool) -> Vec<String> {
    let mut reasons = Vec::new();
    for m in &survey.members {
        if let Some(e) = &m.error {
            reasons.push(format!(
                "member {} ({}) is unhealthy: {e}",
                m.name, m.endpoint
            ));
        }
    }
    for (id, alarm) in &survey.alarms {
        if !(allow_nospace && alarm == "NOSPACE") {
            let name = survey
                .members
                .iter()
                .find(|m| &m.id == id)
                .map_or(id.as_str(), |m| m.name.as_str());
            reasons.push(format!("alarm {alarm} is active on member {name}"));
        }
    }
    match survey.leader_view() {
        None => reasons.push("the members do not agree on one leader".to_string()),
        Some(leader) => {
            let leader_index = leader.status.map_or(0, |s| s.raft_index);
            for m in &survey.members {
                if let Some(s) = m.status
                    && leader_index.saturating_sub(s.raft_applied_index) > max_lag
                {
                    reasons.push(format!(
                        "member {} lags: applied index {} vs leader raft index {leader_index} (more than {max_lag} behind)",
                        m.name, s.raft_applied_index
                    ));
                }
            }
        }
    }
    let voters: Vec<&MemberView> = survey.members.iter().filter(|m| !m.is_learner).collect();
    let quorum = voters.len() / 2 + 1;
    let healthy = voters.iter().filter(|m| m.error.is_none()).count();
    if healthy.saturating_sub(1) < quorum {
        reasons.push(format!(
            "quorum margin: {healthy} of {} voting members healthy, quorum {quorum}; blocking one would lose quorum",
            voters.len()
        ));
    }
    reasons
}

/// What the plan does with one member.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    /// Member ID, hex.
    pub id: String,
    /// `--name`.
    pub name: String,
    /// Client URL.
    pub endpoint: String,
    /// `defrag`, `move-leader-then-defrag` or `skip`.
    pub action: String,
    /// Why it is skipped, or that it is the leader and goes last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Size figures at planning time.
    pub db_size: i64,
    /// In use at planning time.
    pub db_size_in_use: i64,
    /// Fragmentation at planning time.
    pub fragmentation: f64,
}

/// Followers in name order, then the leader; members below `--if-fragmented` are skipped.
pub fn plan(survey: &Survey, options: &DefragOptions) -> Vec<PlanStep> {
    let mut order: Vec<&MemberView> = survey.members.iter().collect();
    order.sort_by(|a, b| (a.is_leader, &a.name).cmp(&(b.is_leader, &b.name)));
    order
        .into_iter()
        .map(|m| {
            let s = m.status.unwrap_or(StatusFigures {
                db_size: 0,
                db_size_in_use: 0,
                fragmentation: 0.0,
                raft_index: 0,
                raft_applied_index: 0,
                leader: 0,
                revision: 0,
            });
            let skip = options.if_fragmented.and_then(|t| {
                let low_ratio = s.fragmentation < t.min_ratio;
                let small = (s.db_size.max(0) as u64) < t.min_bytes;
                (low_ratio || small).then(|| {
                    format!(
                        "below --if-fragmented: fragmentation {:.1}% (threshold {:.1}%), size {} B (threshold {} B)",
                        s.fragmentation * 100.0,
                        t.min_ratio * 100.0,
                        s.db_size,
                        t.min_bytes
                    )
                })
            });
            let (action, reason) = match (skip, m.is_leader) {
                (Some(r), _) => ("skip", Some(r)),
                (None, true) if options.move_leader => (
                    "move-leader-then-defrag",
                    Some("leader: leadership moves to a caught-up follower first".to_string()),
                ),
                (None, true) => ("defrag", Some("leader: last".to_string())),
                (None, false) => ("defrag", None),
            };
            PlanStep {
                id: m.id.clone(),
                name: m.name.clone(),
                endpoint: m.endpoint.clone(),
                action: action.to_string(),
                reason,
                db_size: s.db_size,
                db_size_in_use: s.db_size_in_use,
                fragmentation: s.fragmentation,
            }
        })
        .collect()
}

/// What happened to one member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberOutcome {
    /// Member ID, hex.
    pub id: String,
    /// `--name`.
    pub name: String,
    /// Client URL.
    pub endpoint: String,
    /// Why it was skipped (then the figures are the planning-time ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Database size before.
    pub db_size_before: i64,
    /// Database size after.
    pub db_size_after: i64,
    /// In-use bytes before.
    pub db_size_in_use_before: i64,
    /// In-use bytes after.
    pub db_size_in_use_after: i64,
    /// How long the Defragment call blocked the member.
    pub blocked_ms: u64,
    /// How long until the member was healthy and caught up again.
    pub caught_up_ms: u64,
}

/// A leadership transfer the run made.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderMove {
    /// Old leader, hex.
    pub from: String,
    /// New leader, hex.
    pub to: String,
}

/// The result of a rolling defragmentation.
#[derive(Debug, Clone, Serialize)]
pub struct DefragReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The preflight's view.
    pub survey: Survey,
    /// The plan (order, skips).
    pub plan: Vec<PlanStep>,
    /// Members in the order they were handled (empty on a dry run).
    pub members: Vec<MemberOutcome>,
    /// Leadership transfer, with `--move-leader`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_moved: Option<LeaderMove>,
}

/// Progress of a safe operation, reported as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// The plan, after the preflight passed.
    Planned {
        /// Steps in order.
        plan: Vec<PlanStep>,
    },
    /// A member's Defragment call starts.
    Defragmenting {
        /// Member name.
        name: String,
        /// Endpoint.
        endpoint: String,
    },
    /// A member is done (or skipped).
    MemberDone(MemberOutcome),
    /// Leadership moved.
    LeaderMoved(LeaderMove),
    /// Compaction done.
    Compacted {
        /// Compacted up to this revision.
        revision: i64,
    },
    /// An alarm was disarmed.
    Disarmed {
        /// Member ID, hex.
        member: String,
        /// Alarm name.
        alarm: String,
    },
    /// The test write went through.
    WriteProven {
        /// Revision of the put.
        revision: i64,
    },
}

/// Where progress goes (a closure printing lines, a job's progress channel, …).
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Send + Sync);

/// Rolling defragmentation: the preflight, then followers one at a time and the leader last
/// (or after moving leadership away), waiting after each member until it is healthy and caught
/// up. With `dry_run`, returns the survey and plan and changes nothing. Refuses
/// ([`OpError::Refused`]) before touching anything when the preflight fails.
pub async fn rolling_defrag(
    config: &ClusterConfig,
    options: &DefragOptions,
    progress: ProgressFn<'_>,
) -> Result<DefragReport, OpError> {
    rolling(config, options, false, progress).await
}

async fn rolling(
    config: &ClusterConfig,
    options: &DefragOptions,
    allow_nospace: bool,
    progress: ProgressFn<'_>,
) -> Result<DefragReport, OpError> {
    let first = survey(config).await?;
    let reasons = preflight(&first, options.max_lag, allow_nospace);
    if !reasons.is_empty() {
        return Err(OpError::Refused { reasons });
    }
    let steps = plan(&first, options);
    progress(&Progress::Planned {
        plan: steps.clone(),
    });
    let mut report = DefragReport {
        dry_run: options.dry_run,
        survey: first,
        plan: steps.clone(),
        members: Vec::new(),
        leader_moved: None,
    };
    if options.dry_run {
        return Ok(report);
    }
    let mut pending: Vec<PlanStep> = Vec::new();
    for step in steps {
        if let Some(reason) = &step.reason
            && step.action == "skip"
        {
            let outcome = MemberOutcome {
                id: step.id.clone(),
                name: step.name.clone(),
                endpoint: step.endpoint.clone(),
                skipped: Some(reason.clone()),
                db_size_before: step.db_size,
                db_size_after: step.db_size,
                db_size_in_use_before: step.db_size_in_use,
                db_size_in_use_after: step.db_size_in_use,
                blocked_ms: 0,
                caught_up_ms: 0,
            };
            progress(&Progress::MemberDone(outcome.clone()));
            report.members.push(outcome);
        } else {
            pending.push(step);
        }
    }
    let mut done: Vec<String> = Vec::new();
    while !pending.is_empty() {
        // The cluster must be healthy and caught up before each member is blocked.
        let now = wait_healthy(config, options, allow_nospace).await?;
        let leader_id = now.leader.clone().unwrap_or_default();
        // Leader last, even if leadership moved during the run.
        let pick = pending.iter().position(|s| s.id != leader_id).unwrap_or(0);
        let step = pending.remove(pick);
        if step.id == leader_id && options.move_leader {
            let moved = move_leader_away(config, options, &now, &done).await?;
            progress(&Progress::LeaderMoved(moved.clone()));
            report.leader_moved = Some(moved);
            wait_healthy(config, options, allow_nospace).await?;
        }
        let outcome = defrag_one(config, options, &step, allow_nospace, progress).await?;
        done.push(step.id.clone());
        progress(&Progress::MemberDone(outcome.clone()));
        report.members.push(outcome);
    }
    Ok(report)
}

/// Polls the survey until the preflight passes or `catch_up_timeout` ends.
async fn wait_healthy(
    config: &ClusterConfig,
    options: &DefragOptions,
    allow_nospace: bool,
) -> Result<Survey, OpError> {
    let deadline = Instant::now() + options.catch_up_timeout;
    loop {
        let last = match survey(config).await {
            Ok(s) => {
                let reasons = preflight(&s, options.max_lag, allow_nospace);
                if reasons.is_empty() {
                    return Ok(s);
                }
                reasons
            }
            Err(e) => vec![e.to_string()],
        };
        if Instant::now() >= deadline {
            let mut reasons = vec![format!(
                "the cluster was not healthy and caught up within {:?}; stopped",
                options.catch_up_timeout
            )];
            reasons.extend(last);
            return Err(OpError::Refused { reasons });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn move_leader_away(
    config: &ClusterConfig,
    options: &DefragOptions,
    now: &Survey,
    done: &[String],
) -> Result<LeaderMove, OpError> {
    // A healthy voting follower with the highest applied index, preferring one already
    // defragmented (it will not be blocked again in this run).
    let target = now
        .members
        .iter()
        .filter(|m| !m.is_leader && !m.is_learner && m.error.is_none())
        .max_by_key(|m| {
            (
                done.contains(&m.id),
                m.status.map_or(0, |s| s.raft_applied_index),
            )
        })
        .ok_or_else(|| OpError::Refused {
            reasons: vec!["no healthy voting follower to take leadership".to_string()],
        })?;
    transfer_leadership(config, now, &target.id, options.catch_up_timeout).await
}

/// Moves leadership from the current leader (in `now`) to the voting, healthy member `to`
/// (hex ID), then waits up to `timeout` until every member agrees on the new leader.
pub async fn transfer_leadership(
    config: &ClusterConfig,
    now: &Survey,
    to: &str,
    timeout: Duration,
) -> Result<LeaderMove, OpError> {
    let refuse = |r: String| OpError::Refused { reasons: vec![r] };
    let leader = now
        .leader_view()
        .ok_or_else(|| refuse("no leader to move".to_string()))?;
    let target = now
        .members
        .iter()
        .find(|m| m.id == to)
        .ok_or_else(|| refuse(format!("{to}: no such member")))?;
    if target.is_leader {
        return Err(refuse(format!(
            "member {} is already the leader",
            target.name
        )));
    }
    if target.is_learner || target.error.is_some() {
        return Err(refuse(format!(
            "member {} cannot take leadership: it is a learner or unhealthy",
            target.name
        )));
    }
    let mut client = member_client(config, &leader.endpoint, config.dial_timeout)
        .await
        .map_err(|e| OpError::Etcd {
            endpoint: e.url,
            message: e.message,
        })?;
    client
        .move_leader(target.raw_id)
        .await
        .map_err(|e| etcd_err(&leader.endpoint, config, &e))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = survey(config).await
            && s.leader.as_deref() == Some(target.id.as_str())
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(OpError::Etcd {
                endpoint: leader.endpoint.clone(),
                message: format!("leadership did not move to {} in time", target.name),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(LeaderMove {
        from: leader.id.clone(),
        to: target.id.clone(),
    })
}

async fn defrag_one(
    config: &ClusterConfig,
    options: &DefragOptions,
    step: &PlanStep,
    allow_nospace: bool,
    progress: ProgressFn<'_>,
) -> Result<MemberOutcome, OpError> {
    let before = status_of(config, &step.endpoint)
        .await
        .map_err(|message| OpError::Etcd {
            endpoint: step.endpoint.clone(),
            message,
        })?;
    let before = figures(&before);
    let mut client = member_client(config, &step.endpoint, options.defrag_timeout)
        .await
        .map_err(|e| OpError::Etcd {
            endpoint: e.url,
            message: e.message,
        })?;
    progress(&Progress::Defragmenting {
        name: step.name.clone(),
        endpoint: step.endpoint.clone(),
    });
    tracing::info!(member = %step.name, endpoint = %step.endpoint, db_size = before.db_size, "Defragmenting member.");
    let started = Instant::now();
    let result = tokio::time::timeout(options.defrag_timeout, client.defragment()).await;
    let blocked = started.elapsed();
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(etcd_err(&step.endpoint, config, &e)),
        Err(_) => {
            return Err(OpError::Etcd {
                endpoint: step.endpoint.clone(),
                message: format!(
                    "defragment did not finish within {:?}",
                    options.defrag_timeout
                ),
            });
        }
    }
    // Healthy and caught up again before anything else is touched.
    let waited = Instant::now();
    let after_survey = wait_healthy(config, options, allow_nospace).await?;
    let after = after_survey
        .members
        .iter()
        .find(|m| m.id == step.id)
        .and_then(|m| m.status)
        .unwrap_or(before);
    Ok(MemberOutcome {
        id: step.id.clone(),
        name: step.name.clone(),
        endpoint: step.endpoint.clone(),
        skipped: None,
        db_size_before: before.db_size,
        db_size_after: after.db_size,
        db_size_in_use_before: before.db_size_in_use,
        db_size_in_use_after: after.db_size_in_use,
        blocked_ms: blocked.as_millis() as u64,
        caught_up_ms: waited.elapsed().as_millis() as u64,
    })
}

/// How `recover-nospace` runs.
#[derive(Debug, Clone)]
pub struct RecoverOptions {
    /// Revisions kept by the compaction.
    pub retain: i64,
    /// The backend quota; `None` reads `etcd_server_quota_backend_bytes` from the members'
    /// `/metrics` (the smallest one wins).
    pub quota_bytes: Option<u64>,
    /// The rolling defragmentation (its `if_fragmented` is ignored: every member is done).
    pub defrag: DefragOptions,
}

/// Where the quota came from.
#[derive(Debug, Clone, Serialize)]
pub struct Quota {
    /// Bytes.
    pub bytes: u64,
    /// `--quota-bytes` or the member whose /metrics said so.
    pub source: String,
}

/// The result of `recover-nospace`.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Revision before.
    pub revision: i64,
    /// Compacted up to (none when fewer than `retain` revisions exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted_to: Option<i64>,
    /// The rolling defragmentation.
    pub defrag: DefragReport,
    /// The quota checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Alarms disarmed, `(member hex, alarm)`.
    pub disarmed: Vec<(String, String)>,
    /// Revision of the proving put.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_revision: Option<i64>,
}

/// NOSPACE recovery: compact keeping `retain` revisions, rolling defrag (allowed under the
/// NOSPACE alarm), refuse if any member's database is still at or over the quota, disarm
/// every NOSPACE alarm, then prove a write succeeds (put + delete under [`RESERVED_PREFIX`]).
pub async fn recover_nospace(
    config: &ClusterConfig,
    options: &RecoverOptions,
    progress: ProgressFn<'_>,
) -> Result<RecoverReport, OpError> {
    let (first, revision, compacted_to) = recover_preflight(config, options).await?;
    let mut defrag_options = options.defrag.clone();
    defrag_options.if_fragmented = None;
    if options.defrag.dry_run {
        let defrag = rolling(config, &defrag_options, true, progress).await?;
        let quota = quota(config, &first, options.quota_bytes).await.ok();
        return Ok(RecoverReport {
            dry_run: true,
            revision,
            compacted_to,
            defrag,
            quota,
            disarmed: first.alarms.clone(),
            write_revision: None,
        });
    }
    // Known before anything changes, so a missing quota refuses up front.
    let quota = quota(config, &first, options.quota_bytes)
        .await
        .map_err(|r| OpError::Refused { reasons: vec![r] })?;
    let (url, mut client) = any_client(config, options.defrag.defrag_timeout)
        .await
        .map_err(|e| OpError::Etcd {
            endpoint: e.url,
            message: e.message,
        })?;
    if let Some(to) = compacted_to {
        compact_physical(&mut client, to)
            .await
            .map_err(|e| etcd_err(&url, config, &e))?;
        progress(&Progress::Compacted { revision: to });
    }
    let defrag = rolling(config, &defrag_options, true, progress).await?;
    fits_quota(&defrag, &quota)?;
    let disarmed = disarm_all(&mut client, Some(AlarmType::Nospace), progress)
        .await
        .map_err(|e| etcd_err(&url, config, &e))?;
    let write_revision = prove_write(&mut client)
        .await
        .map_err(|e| etcd_err(&url, config, &e))?;
    if let Some(revision) = write_revision {
        progress(&Progress::WriteProven { revision });
    }
    Ok(RecoverReport {
        dry_run: false,
        revision,
        compacted_to,
        defrag,
        quota: Some(quota),
        disarmed,
        write_revision,
    })
}

/// The survey (refusing when unsafe), the current revision and the compaction target.
async fn recover_preflight(
    config: &ClusterConfig,
    options: &RecoverOptions,
) -> Result<(Survey, i64, Option<i64>), OpError> {
    if options.retain < 1 {
        return Err(OpError::Refused {
            reasons: vec!["--retain must be at least 1".to_string()],
        });
    }
    let first = survey(config).await?;
    let reasons = preflight(&first, options.defrag.max_lag, true);
    if !reasons.is_empty() {
        return Err(OpError::Refused { reasons });
    }
    let revision = first
        .members
        .iter()
        .filter_map(|m| m.status.map(|s| s.revision))
        .max()
        .unwrap_or(0);
    let compact_to = revision - options.retain;
    Ok((first, revision, (compact_to > 0).then_some(compact_to)))
}

/// A physical compaction up to `to`; one that is already compacted counts as done.
pub async fn compact_physical(
    client: &mut etcd_client::Client,
    to: i64,
) -> Result<(), etcd_client::Error> {
    match client
        .compact(to, Some(CompactionOptions::new().with_physical()))
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.to_string()
                .contains("required revision has been compacted") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Refuses when a member's database is still at or over the quota after defragmentation.
fn fits_quota(defrag: &DefragReport, quota: &Quota) -> Result<(), OpError> {
    let over: Vec<String> = defrag
        .members
        .iter()
        .filter(|m| m.db_size_after.max(0) as u64 >= quota.bytes)
        .map(|m| {
            format!(
                "member {}: database {} B after defragmentation is still at or over the quota {} B ({}); delete data or raise --quota-backend-bytes",
                m.name, m.db_size_after, quota.bytes, quota.source
            )
        })
        .collect();
    if over.is_empty() {
        Ok(())
    } else {
        Err(OpError::Refused { reasons: over })
    }
}

/// Disarms every active alarm of type `only` (every alarm when `None`); returns what it
/// disarmed as `(member hex, alarm)`.
pub async fn disarm_all(
    client: &mut etcd_client::Client,
    only: Option<AlarmType>,
    progress: ProgressFn<'_>,
) -> Result<Vec<(String, String)>, etcd_client::Error> {
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await?;
    let mut disarmed = Vec::new();
    for a in alarms.alarms() {
        if only.is_some_and(|t| a.alarm() != t) || a.alarm() == AlarmType::None {
            continue;
        }
        let mut opts = etcd_client::AlarmOptions::new();
        opts.with_member(a.member_id());
        client
            .alarm(AlarmAction::Deactivate, a.alarm(), Some(opts))
            .await?;
        let member = format!("{:x}", a.member_id());
        let alarm = alarm_name(a.alarm()).to_string();
        progress(&Progress::Disarmed {
            member: member.clone(),
            alarm: alarm.clone(),
        });
        disarmed.push((member, alarm));
    }
    Ok(disarmed)
}

/// Puts and deletes a key under [`RESERVED_PREFIX`]; returns the put's revision.
async fn prove_write(client: &mut etcd_client::Client) -> Result<Option<i64>, etcd_client::Error> {
    let key = format!(
        "{RESERVED_PREFIX}recover-nospace/{}",
        crate::model::time::now_ms()
    );
    let put = client.put(key.as_str(), "ok", None).await?;
    client.delete(key.as_str(), None).await?;
    Ok(put.header().map(|h| h.revision()))
}

/// The quota: `given`, else the smallest `etcd_server_quota_backend_bytes` the members' own
/// `/metrics` report.
async fn quota(
    config: &ClusterConfig,
    survey: &Survey,
    given: Option<u64>,
) -> Result<Quota, String> {
    if let Some(bytes) = given {
        return Ok(Quota {
            bytes,
            source: "--quota-bytes".to_string(),
        });
    }
    let http = crate::sources::etcd::client::http_client(config)?;
    let mut best: Option<Quota> = None;
    let mut errors = Vec::new();
    for m in &survey.members {
        let url = format!("{}/metrics", m.endpoint.trim_end_matches('/'));
        let text = match http.get(&url).send().await {
            Ok(r) => match r.text().await {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{url}: {e}"));
                    continue;
                }
            },
            Err(e) => {
                errors.push(format!("{url}: {e}"));
                continue;
            }
        };
        let value = text.lines().find_map(|l| {
            l.strip_prefix("etcd_server_quota_backend_bytes ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let Some(v) = value {
            let bytes = v as u64;
            if best.as_ref().is_none_or(|b| bytes < b.bytes) {
                best = Some(Quota {
                    bytes,
                    source: format!("etcd_server_quota_backend_bytes of {}", m.name),
                });
            }
        }
    }
    best.ok_or_else(|| {
        format!(
            "the quota is unknown (no member's /metrics has etcd_server_quota_backend_bytes{}); pass --quota-bytes",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join(", "))
            }
        )
    })
}

impl fmt::Display for PlanStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}, {}): size {} B, in use {} B, fragmentation {:.1}%",
            self.action,
            self.name,
            self.id,
            self.endpoint,
            self.db_size,
            self.db_size_in_use,
            self.fragmentation * 100.0
        )?;
        if let Some(r) = &self.reason {
            write!(f, " — {r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_threshold_parses_percent_and_size() {
        let f: Fragmentation = "45%,100MB".parse().unwrap();
        assert!((f.min_ratio - 0.45).abs() < 1e-9);
        assert_eq!(f.min_bytes, 100_000_000);
        let f: Fragmentation = "0.5,1MiB".parse().unwrap();
        assert!((f.min_ratio - 0.5).abs() < 1e-9);
        assert_eq!(f.min_bytes, 1 << 20);
        assert!("45%".parse::<Fragmentation>().is_err());
        assert!("150%,1MB".parse::<Fragmentation>().is_err());
        assert!("45%,10XB".parse::<Fragmentation>().is_err());
    }

    fn view(name: &str, id: u64, leader: u64, ok: bool, applied: u64) -> MemberView {
        MemberView {
            id: format!("{id:x}"),
            name: name.to_string(),
            endpoint: format!("http://{name}"),
            is_learner: false,
            is_leader: id == leader,
            status: ok.then_some(StatusFigures {
                db_size: 1000,
                db_size_in_use: 400,
                fragmentation: 0.6,
                raft_index: 500,
                raft_applied_index: applied,
                leader,
                revision: 10,
            }),
            error: (!ok).then(|| "down".to_string()),
            raw_id: id,
        }
    }

    #[test]
    fn preflight_refuses_unhealthy_lagging_and_alarmed_clusters() {
        let healthy = Survey {
            members: vec![
                view("a", 1, 2, true, 500),
                view("b", 2, 2, true, 500),
                view("c", 3, 2, true, 480),
            ],
            alarms: vec![],
            leader: Some("2".to_string()),
        };
        assert!(preflight(&healthy, 100, false).is_empty());
        let mut down = healthy.clone();
        down.members[0] = view("a", 1, 2, false, 0);
        let r = preflight(&down, 100, false);
        assert!(r.iter().any(|r| r.contains("member a")), "{r:?}");
        assert!(r.iter().any(|r| r.contains("quorum")), "{r:?}");
        let mut lag = healthy.clone();
        lag.members[2] = view("c", 3, 2, true, 100);
        assert!(
            preflight(&lag, 100, false)
                .iter()
                .any(|r| r.contains("lags"))
        );
        let mut alarm = healthy.clone();
        alarm.alarms.push(("1".to_string(), "NOSPACE".to_string()));
        assert_eq!(preflight(&alarm, 100, false).len(), 1);
        assert!(preflight(&alarm, 100, true).is_empty());
    }

    #[test]
    fn plan_puts_the_leader_last_and_skips_below_threshold() {
        let mut s = Survey {
            members: vec![
                view("a", 1, 1, true, 500),
                view("b", 2, 1, true, 500),
                view("c", 3, 1, true, 500),
            ],
            alarms: vec![],
            leader: Some("1".to_string()),
        };
        let p = plan(&s, &DefragOptions::default());
        let names: Vec<&str> = p.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
        if let Some(st) = s.members[1].status.as_mut() {
            st.fragmentation = 0.1;
        }
        let p = plan(
            &s,
            &DefragOptions {
                if_fragmented: Some("45%,500B".parse().unwrap()),
                move_leader: true,
                ..DefragOptions::default()
            },
        );
        assert_eq!(p[0].action, "skip");
        assert_eq!(p[1].action, "defrag");
        assert_eq!(p[2].action, "move-leader-then-defrag");
    }
}
