//! `GET /api/v1/audit`: the admin audit trail (who did what to which cluster, with the
//! figures before and after), newest first, paged with `before`, at most
//! [`AUDIT_QUERY_MAX`] records per page. A read (viewer role when reads are closed).

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, error::ApiError, routes::pick};
use crate::store::{AUDIT_QUERY_MAX, AuditRecord};

/// Default page size.
pub const AUDIT_DEFAULT_LIMIT: usize = 100;

/// Query of `/api/v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this cluster (default: every cluster).
    pub cluster: Option<String>,
    /// At most this many records (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Only records older than this `seq` (the previous page's `next_before`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// `/api/v1/audit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    /// Records, newest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `before` for the next page (absent on the last page).
    pub next_before: Option<i64>,
}

/// The admin audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams),
    responses((status = 200, body = AuditResponse), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditResponse>, ApiError> {
    let Query(q) = q?;
    let cluster = match q.cluster.as_deref() {
        None | Some("") => None,
        Some(c) => Some(pick(&state, Some(c))?.name().to_string()),
    };
    let limit = q.limit.unwrap_or(AUDIT_DEFAULT_LIMIT);
    if !(1..=AUDIT_QUERY_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be 1-{AUDIT_QUERY_MAX}"
        )));
    }
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::BadRequest("before: must be at least 1".into()));
    }
    let store = state
        .admin
        .store()
        .cloned()
        .or_else(|| state.store.clone())
        .ok_or_else(|| ApiError::Unavailable("the history store is not open".into()))?;
    let records =
        tokio::task::spawn_blocking(move || store.audit(cluster.as_deref(), q.before, limit))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let next_before = (records.len() == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(Json(AuditResponse {
        records,
        next_before,
    }))
}
