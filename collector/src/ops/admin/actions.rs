//! The admin operations themselves. Each is a plain async function over a
//! [`ClusterConfig`]: the rolling defragmentation is the one in [`crate::ops::ctl::safe`]
//! (the CLI's), and the others are single etcd calls with the same guards the CLI has (a
//! compaction keeping `retain` revisions, a leadership transfer that waits until every member
//! agrees, a member removal that refuses to remove the last voting member). [`figures`] is
//! what the audit trail records before and after each of them.

use std::time::Duration;

use etcd_client::GetOptions;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    model::config::ClusterConfig,
    ops::admin::snapshots::SnapshotDir,
    ops::ctl::conn::any_client,
    ops::ctl::safe::{self, DefragOptions, OpError, ProgressFn},
};

/// Every operation name (the `op` label of `etcdmon_admin_operations_total`).
pub const OPS: [&str; 6] = [
    "defrag",
    "compact",
    "alarm_disarm",
    "move_leader",
    "snapshot",
    "member_remove",
];

/// How long a single-call operation (compact, disarm, move-leader, remove, one snapshot
/// message) may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a compaction stops: at `revision`, keeping the latest `retain` revisions, or (both
/// given) at whichever of the two is older.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompactTarget {
    /// No further than this revision.
    pub revision: Option<i64>,
    /// Keep at least this many latest revisions.
    pub retain: Option<i64>,
}

/// A validated admin operation.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// Rolling defragmentation ([`safe::rolling_defrag`]).
    Defrag(DefragOptions),
    /// Compaction, physical unless asked otherwise.
    Compact {
        /// Where it stops.
        target: CompactTarget,
        /// Wait until the compaction is applied to the backend.
        physical: bool,
    },
    /// Disarm every active alarm.
    AlarmDisarm,
    /// Move leadership to the member with this hex ID.
    MoveLeader {
        /// Member ID, hex.
        to: String,
    },
    /// Save a snapshot into the data directory.
    Snapshot,
    /// Remove the member with this ID.
    MemberRemove {
        /// Member ID.
        id: u64,
    },
}

impl AdminOp {
    /// The `op` label and audit name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Defrag(_) => OPS[0],
            Self::Compact { .. } => OPS[1],
            Self::AlarmDisarm => OPS[2],
            Self::MoveLeader { .. } => OPS[3],
            Self::Snapshot => OPS[4],
            Self::MemberRemove { .. } => OPS[5],
        }
    }

    /// The arguments, as the audit trail records them.
    pub fn args(&self) -> Value {
        match self {
            Self::Defrag(o) => json!({
                "if_fragmented": o.if_fragmented,
                "move_leader": o.move_leader,
                "dry_run": o.dry_run,
                "max_lag": o.max_lag,
                "catch_up_timeout_ms": o.catch_up_timeout.as_millis() as u64,
                "defrag_timeout_ms": o.defrag_timeout.as_millis() as u64,
            }),
            Self::Compact { target, physical } => json!({"target": target, "physical": physical}),
            Self::AlarmDisarm | Self::Snapshot => json!({}),
            Self::MoveLeader { to } => json!({"to": to}),
            Self::MemberRemove { id } => json!({"id": format!("{id:x}")}),
        }
    }
}

/// What an operation needs besides its cluster.
pub struct Context<'a> {
    /// The cluster.
    pub config: &'a ClusterConfig,
    /// The job's id (names a snapshot file).
    pub job_id: &'a str,
    /// Where snapshots go.
    pub snapshots: &'a SnapshotDir,
    /// Progress sink.
    pub progress: ProgressFn<'a>,
}

fn etcd(config: &ClusterConfig, endpoint: &str, e: &etcd_client::Error) -> OpError {
    OpError::Etcd {
        endpoint: endpoint.to_string(),
        message: crate::sources::etcd::client::explain(e, config.tls.as_ref()),
    }
}

fn refused(reason: String) -> OpError {
    OpError::Refused {
        reasons: vec![reason],
    }
}

async fn client(config: &ClusterConfig) -> Result<(String, etcd_client::Client), OpError> {
    any_client(config, OP_TIMEOUT)
        .await
        .map_err(|e| OpError::Etcd {
            endpoint: e.url,
            message: e.message,
        })
}

/// Runs `op`; the report is JSON (a refusal or etcd error is an [`OpError`]).
pub async fn run(op: &AdminOp, ctx: &Context<'_>) -> Result<Value, OpError> {
    let config = ctx.config;
    match op {
        AdminOp::Defrag(options) => {
            let report = safe::rolling_defrag(config, options, ctx.progress).await?;
            Ok(serde_json::to_value(report).unwrap_or(Value::Null))
        }
        AdminOp::Compact { target, physical } => compact(config, *target, *physical).await,
        AdminOp::AlarmDisarm => {
            let (url, mut c) = client(config).await?;
            let disarmed = safe::disarm_all(&mut c, None, ctx.progress)
                .await
                .map_err(|e| etcd(config, &url, &e))?;
            Ok(json!({"disarmed": disarmed}))
        }
        AdminOp::MoveLeader { to } => {
            let now = safe::survey(config).await?;
            let moved = safe::transfer_leadership(config, &now, to, OP_TIMEOUT).await?;
            Ok(json!({"leader_moved": moved}))
        }
        AdminOp::Snapshot => snapshot(ctx).await,
        AdminOp::MemberRemove { id } => member_remove(config, *id).await,
    }
}

async fn compact(
    config: &ClusterConfig,
    target: CompactTarget,
    physical: bool,
) -> Result<Value, OpError> {
    let (url, mut c) = client(config).await?;
    let current = c
        .get("\0", Some(GetOptions::new().with_count_only()))
        .await
        .map_err(|e| etcd(config, &url, &e))?
        .header()
        .map_or(0, |h| h.revision());
    if let Some(r) = target.revision
        && r > current
    {
        return Err(refused(format!(
            "revision {r} is in the future (the current revision is {current})"
        )));
    }
    let to = target
        .revision
        .unwrap_or(i64::MAX)
        .min(target.retain.map_or(i64::MAX, |n| current - n));
    if to < 1 {
        return Ok(json!({"revision": current, "compacted_to": null,
            "note": format!("nothing to compact: revision {current}")}));
    }
    if physical {
        safe::compact_physical(&mut c, to).await
    } else {
        c.compact(to, None).await.map(|_| ())
    }
    .map_err(|e| etcd(config, &url, &e))?;
    Ok(json!({"revision": current, "compacted_to": to, "physical": physical}))
}

async fn snapshot(ctx: &Context<'_>) -> Result<Value, OpError> {
    let now = safe::survey(ctx.config).await?;
    let largest = now
        .members
        .iter()
        .filter_map(|m| m.status.map(|s| s.db_size.max(0) as u64))
        .max()
        .unwrap_or(0);
    if largest > ctx.snapshots.max_bytes() {
        return Err(refused(format!(
            "the database ({largest} B) is larger than --admin-snapshot-max-size-mb allows ({} B)",
            ctx.snapshots.max_bytes()
        )));
    }
    let path = ctx
        .snapshots
        .path_for(&ctx.config.name, ctx.job_id)
        .map_err(|e| OpError::Etcd {
            endpoint: String::new(),
            message: format!("snapshot directory: {e}"),
        })?;
    let meta = crate::ops::ctl::snapshot::save(ctx.config, &path, OP_TIMEOUT)
        .await
        .map_err(|e| OpError::Etcd {
            endpoint: String::new(),
            message: e.to_string(),
        })?;
    let pruned = ctx.snapshots.prune(&meta.file);
    Ok(json!({
        "name": meta.file,
        "download_url": format!("/api/v1/admin/snapshots/{}", meta.file),
        "meta": meta,
        "older_snapshots_deleted": pruned,
    }))
}

async fn member_remove(config: &ClusterConfig, id: u64) -> Result<Value, OpError> {
    let (url, mut c) = client(config).await?;
    let list = c.member_list().await.map_err(|e| etcd(config, &url, &e))?;
    let Some(member) = list.members().iter().find(|m| m.id() == id) else {
        return Err(refused(format!("id: no member {id:x} in this cluster")));
    };
    let voters = list.members().iter().filter(|m| !m.is_learner()).count();
    if !member.is_learner() && voters <= 1 {
        return Err(refused(format!(
            "member {} is the last voting member",
            member.name()
        )));
    }
    let name = member.name().to_string();
    let r = c
        .member_remove(id)
        .await
        .map_err(|e| etcd(config, &url, &e))?;
    Ok(json!({
        "removed": {"id": format!("{id:x}"), "name": name},
        "members_left": r.members().len(),
    }))
}

/// Figures the audit trail records before and after an operation: each member's database
/// size and in-use bytes, the revision, the leader and the active alarms (or why they could
/// not be read).
pub async fn figures(config: &ClusterConfig) -> Value {
    match safe::survey(config).await {
        Ok(s) => json!({
            "revision": s.members.iter().filter_map(|m| m.status.map(|st| st.revision)).max(),
            "leader": s.leader,
            "alarms": s.alarms,
            "members": s.members.iter().map(|m| json!({
                "id": m.id,
                "name": m.name,
                "db_size": m.status.map(|st| st.db_size),
                "db_size_in_use": m.status.map(|st| st.db_size_in_use),
                "error": m.error,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"error": e.to_string()}),
    }
}
