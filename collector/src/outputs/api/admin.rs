//! `/api/v1/admin/…`: operations on a monitored cluster — rolling defrag, compact, alarm
//! disarm, move-leader, snapshot (+ list and download), member remove. Every route needs the
//! admin role ([`RequireAdmin`]); each operation runs as a job (`202` with its id; follow it
//! at `GET /api/v1/admin/jobs/{id}`), at most one per cluster at a time (`409` naming the
//! running job), and is audited with the token's name (`GET /api/v1/audit`). Bad input is a
//! `400` naming the field. The logic lives in `crate::ops::admin`.

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use super::{AppState, access::RequireAdmin, error::ApiError, routes::pick};
use crate::ops::{
    admin::{AdminError, AdminJobView, AdminOp, CompactTarget, snapshots::SnapshotFile},
    ctl::safe::DefragOptions,
};

/// `RATIO%,SIZE` as the server accepts it.
pub const FRAGMENTATION_PATTERN: &str =
    r"^(100|[0-9]{1,2}(\.[0-9]{1,3})?)%,[0-9]{1,12}(B|KB|MB|GB|KiB|MiB|GiB)?$";
/// A member ID, hex.
pub const MEMBER_ID_PATTERN: &str = r"^[0-9a-fA-F]{1,16}$";
/// Largest `max_lag`.
pub const MAX_LAG_MAX: u64 = 1_000_000;

/// Answer of a started operation.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedJob {
    /// Job id.
    pub id: String,
    /// Operation.
    pub op: String,
    /// Cluster.
    pub cluster: String,
    /// Where progress and the report are.
    pub status_url: String,
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        ApiError::Conflict(e.to_string())
    }
}

/// `POST /api/v1/admin/defrag`: the CLI's `defrag --rolling` options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefragBody {
    /// Cluster name; default the first configured.
    pub cluster: Option<String>,
    /// Skip members below `RATIO%,SIZE` (e.g. `45%,100MB`); absent: every member.
    #[schema(pattern = r"^(100|[0-9]{1,2}(\.[0-9]{1,3})?)%,[0-9]{1,12}(B|KB|MB|GB|KiB|MiB|GiB)?$")]
    pub if_fragmented: Option<String>,
    /// Move leadership to a caught-up follower before defragmenting the leader.
    #[serde(default)]
    pub move_leader: bool,
    /// Survey and plan only.
    #[serde(default)]
    pub dry_run: bool,
    /// Raft entries a member may trail the leader and count as caught up (default 100).
    #[schema(minimum = 0, maximum = 1_000_000, value_type = Option<i64>)]
    #[serde(default, deserialize_with = "opt_int")]
    pub max_lag: Option<i64>,
}

/// `POST /api/v1/admin/compact`: `revision`, `retain`, or both (then the compaction stops at
/// whichever is older: it keeps at least `retain` revisions and goes no further than
/// `revision`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    /// Cluster name; default the first configured.
    pub cluster: Option<String>,
    /// Compact up to this revision.
    #[schema(minimum = 1, value_type = Option<i64>)]
    #[serde(default, deserialize_with = "opt_int")]
    pub revision: Option<i64>,
    /// Keep this many latest revisions.
    #[schema(minimum = 1, value_type = Option<i64>)]
    #[serde(default, deserialize_with = "opt_int")]
    pub retain: Option<i64>,
    /// Wait until the compaction reaches the backend (default true).
    pub physical: Option<bool>,
}

/// A body naming only the cluster (alarm disarm, snapshot).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterBody {
    /// Cluster name; default the first configured.
    pub cluster: Option<String>,
}

/// `POST /api/v1/admin/move-leader`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLeaderBody {
    /// Cluster name; default the first configured.
    pub cluster: Option<String>,
    /// The member to lead, hex ID.
    #[schema(pattern = r"^[0-9a-fA-F]{1,16}$")]
    pub to: String,
}

/// `POST /api/v1/admin/member/remove`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRemoveBody {
    /// Cluster name; default the first configured.
    pub cluster: Option<String>,
    /// The member to remove, hex ID.
    #[schema(pattern = r"^[0-9a-fA-F]{1,16}$")]
    pub id: String,
}

/// An optional integer that also accepts an integral JSON float (`5.0`), as JSON Schema's
/// `integer` does.
fn opt_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    v.map(|n| {
        n.as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer")))
    })
    .transpose()
}

/// Parses a JSON body (an empty one is `T::default()`); errors name the field.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Json::<T>::from_bytes(bytes)
        .map(|Json(t)| t)
        .map_err(|r| ApiError::BadRequest(r.body_text()))
}

fn member_id(value: &str, field: &str) -> Result<u64, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.len() > 16 {
        return Err(ApiError::BadRequest(format!(
            "{field}: {value:?} is not a member ID (1-16 hex digits)"
        )));
    }
    u64::from_str_radix(v, 16).map_err(|_| {
        ApiError::BadRequest(format!(
            "{field}: {value:?} is not a member ID (1-16 hex digits)"
        ))
    })
}

fn start(
    state: &AppState,
    cluster: Option<&str>,
    op: AdminOp,
    actor: &str,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let cluster = pick(state, cluster)?;
    let name = op.name().to_string();
    let id = state.admin.start(cluster.config.clone(), op, actor)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedJob {
            status_url: format!("/api/v1/admin/jobs/{id}"),
            id,
            op: name,
            cluster: cluster.name().to_string(),
        }),
    ))
}

/// Rolling defragmentation: followers one at a time, the leader last (or after moving
/// leadership away); refused in the job, before anything is touched, when a member is
/// unhealthy, an alarm is active, a member lags or the quorum margin would reach zero.
#[utoipa::path(post, path = "/api/v1/admin/defrag", request_body = DefragBody,
    responses((status = 202, body = StartedJob), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn defrag(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let b: DefragBody = body(&bytes)?;
    let if_fragmented = match &b.if_fragmented {
        Some(t) => Some(
            t.parse()
                .map_err(|e| ApiError::BadRequest(format!("if_fragmented: {e}")))?,
        ),
        None => None,
    };
    let max_lag = match b.max_lag {
        None => crate::ops::ctl::safe::DEFAULT_MAX_LAG,
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_LAG_MAX)
            .ok_or_else(|| ApiError::BadRequest(format!("max_lag: must be 0-{MAX_LAG_MAX}")))?,
    };
    let options = DefragOptions {
        if_fragmented,
        move_leader: b.move_leader,
        dry_run: b.dry_run,
        max_lag,
        ..DefragOptions::default()
    };
    start(
        &state,
        b.cluster.as_deref(),
        AdminOp::Defrag(options),
        &principal.name,
    )
}

/// Compaction up to `revision`, or keeping the latest `retain` revisions.
#[utoipa::path(post, path = "/api/v1/admin/compact", request_body = CompactBody,
    responses((status = 202, body = StartedJob), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn compact(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let b: CompactBody = body(&bytes)?;
    if b.revision.is_some_and(|r| r < 1) {
        return Err(ApiError::BadRequest("revision: must be at least 1".into()));
    }
    if b.retain.is_some_and(|n| n < 1) {
        return Err(ApiError::BadRequest("retain: must be at least 1".into()));
    }
    if b.revision.is_none() && b.retain.is_none() {
        return Err(ApiError::BadRequest(
            "revision/retain: give revision, retain or both".into(),
        ));
    }
    let target = CompactTarget {
        revision: b.revision,
        retain: b.retain,
    };
    let op = AdminOp::Compact {
        target,
        physical: b.physical.unwrap_or(true),
    };
    start(&state, b.cluster.as_deref(), op, &principal.name)
}

/// Disarms every active alarm (NOSPACE, CORRUPT).
#[utoipa::path(post, path = "/api/v1/admin/alarm/disarm", request_body = ClusterBody,
    responses((status = 202, body = StartedJob), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn alarm_disarm(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let b: ClusterBody = body(&bytes)?;
    start(
        &state,
        b.cluster.as_deref(),
        AdminOp::AlarmDisarm,
        &principal.name,
    )
}

/// Moves leadership to member `to` and waits until every member agrees.
#[utoipa::path(post, path = "/api/v1/admin/move-leader", request_body = MoveLeaderBody,
    responses((status = 202, body = StartedJob), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn move_leader(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let b: MoveLeaderBody = body(&bytes)?;
    let to = format!("{:x}", member_id(&b.to, "to")?);
    start(
        &state,
        b.cluster.as_deref(),
        AdminOp::MoveLeader { to },
        &principal.name,
    )
}

/// Saves a verified snapshot into `<data-dir>/snapshots` (bounded by
/// `--admin-max-snapshots` and `--admin-snapshot-max-size-mb`); the job's report has its
/// download URL.
#[utoipa::path(post, path = "/api/v1/admin/snapshot", request_body = ClusterBody,
    responses((status = 202, body = StartedJob), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn snapshot(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let b: ClusterBody = body(&bytes)?;
    start(
        &state,
        b.cluster.as_deref(),
        AdminOp::Snapshot,
        &principal.name,
    )
}

/// Removes member `id` (refused for the last voting member).
#[utoipa::path(post, path = "/api/v1/admin/member/remove", request_body = MemberRemoveBody,
    responses((status = 202, body = StartedJob), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn member_remove(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    bytes: Bytes,
) -> Result<(StatusCode, Json<StartedJob>), ApiError> {
    let b: MemberRemoveBody = body(&bytes)?;
    let id = member_id(&b.id, "id")?;
    start(
        &state,
        b.cluster.as_deref(),
        AdminOp::MemberRemove { id },
        &principal.name,
    )
}

/// An admin job: progress while it runs, then its result, report and before/after figures
/// (from the audit trail once the collector no longer holds it in memory).
#[utoipa::path(get, path = "/api/v1/admin/jobs/{id}",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = AdminJobView), (status = 404, body = super::error::ErrorBody)))]
pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AdminJobView>, ApiError> {
    let admin = state.admin.clone();
    let lookup = id.clone();
    tokio::task::spawn_blocking(move || admin.get(&lookup))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no admin job {id:?}")))
}

/// The kept snapshots, newest first (admin role: a snapshot holds every key).
#[utoipa::path(get, path = "/api/v1/admin/snapshots",
    security(("bearerAuth" = [])),
    responses((status = 200, body = Vec<SnapshotFile>)))]
pub async fn snapshots(
    State(state): State<AppState>,
    RequireAdmin(_admin): RequireAdmin,
) -> Json<Vec<SnapshotFile>> {
    Json(state.admin.snapshots().list())
}

/// Downloads a kept snapshot, streamed (admin role: a snapshot holds every key). The file
/// is etcd's snapshot format (`etcdctl snapshot status/restore` read it).
#[utoipa::path(get, path = "/api/v1/admin/snapshots/{name}",
    security(("bearerAuth" = [])),
    params(("name" = String, Path, description = "Snapshot file name, from the list")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn snapshot_download(
    State(state): State<AppState>,
    RequireAdmin(_admin): RequireAdmin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no snapshot {name:?}"));
    let path = state.admin.snapshots().find(&name).ok_or_else(not_found)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
        .len();
    let stream = futures::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut f = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err::<Bytes, std::io::Error>(e), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Declares what the derive cannot: a compaction needs `revision`, `retain` or both.
pub fn document(doc: &mut serde_json::Value) {
    let compact = &mut doc["components"]["schemas"]["CompactBody"];
    if compact.is_object() {
        compact["anyOf"] = serde_json::json!([
            {"required": ["revision"], "properties": {"revision": {"type": "integer", "minimum": 1}}},
            {"required": ["retain"], "properties": {"retain": {"type": "integer", "minimum": 1}}}
        ]);
    }
}
