//! REST for alerting: active alerts, transition history, rules in force, silences.

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    access::RequireAdmin,
    error::ApiError,
    routes::{ClusterParam, parse_time, pick},
};
use crate::{
    analysis::alerting::Alerting, analysis::alerting::AlertingError,
    analysis::alerting::lifecycle::Alert, analysis::alerting::lifecycle::Transition,
    analysis::alerting::rules::RuleView, analysis::alerting::silences::NewSilence,
    analysis::alerting::silences::Silence, model::time::now_ms,
};

/// Transitions `/api/v1/alerts/history` returns at most.
pub const HISTORY_MAX: usize = 1000;

/// `/api/v1/alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsResponse {
    /// Cluster.
    pub cluster: String,
    /// Active alerts (pending and firing), firing first.
    pub alerts: Vec<Alert>,
}

/// `/api/v1/alerts/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertHistoryResponse {
    /// Cluster.
    pub cluster: String,
    /// Firing and resolved transitions, newest first.
    pub transitions: Vec<Transition>,
}

/// Query of `/api/v1/alerts/history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertHistoryParams {
    /// Cluster name.
    pub cluster: Option<String>,
    /// Start (Unix ms, RFC 3339, or a duration ago such as `1h`). Default: all kept.
    pub since: Option<String>,
    /// At most this many transitions (default and maximum 1000).
    pub limit: Option<usize>,
}

/// `/api/v1/alerts/rules`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesResponse {
    /// Rules in force.
    pub rules: Vec<RuleView>,
}

/// `/api/v1/alerts/silences`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilencesResponse {
    /// Silences not yet expired.
    pub silences: Vec<Silence>,
}

fn engine(state: &AppState) -> Result<&Alerting, ApiError> {
    state
        .alerting
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("alerting is not running".to_string()))
}

impl From<AlertingError> for ApiError {
    fn from(e: AlertingError) -> Self {
        match e {
            AlertingError::Invalid(m) => ApiError::BadRequest(m),
            AlertingError::Refused(m) => ApiError::Conflict(m),
            AlertingError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Active alerts (pending and firing) of a cluster.
#[utoipa::path(get, path = "/api/v1/alerts", params(ClusterParam),
    responses((status = 200, body = AlertsResponse), (status = 404, body = super::error::ErrorBody)))]
pub async fn alerts(
    State(state): State<AppState>,
    q: Result<Query<ClusterParam>, QueryRejection>,
) -> Result<Json<AlertsResponse>, ApiError> {
    let Query(q) = q?;
    let cluster = pick(&state, q.cluster.as_deref())?;
    let alerts = state
        .alerting
        .as_ref()
        .map(|a| a.active(cluster.name()))
        .unwrap_or_default();
    Ok(Json(AlertsResponse {
        cluster: cluster.name().to_string(),
        alerts,
    }))
}

/// The last transitions (firing, resolved) of a cluster, newest first, from the store.
#[utoipa::path(get, path = "/api/v1/alerts/history", params(AlertHistoryParams),
    responses((status = 200, body = AlertHistoryResponse), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn alerts_history(
    State(state): State<AppState>,
    q: Result<Query<AlertHistoryParams>, QueryRejection>,
) -> Result<Json<AlertHistoryResponse>, ApiError> {
    let Query(q) = q?;
    let cluster = pick(&state, q.cluster.as_deref())?;
    let since = match &q.since {
        Some(s) => {
            parse_time(s, now_ms()).map_err(|e| ApiError::BadRequest(format!("since: {e}")))?
        }
        None => 0,
    };
    let limit = match q.limit {
        Some(0) => {
            return Err(ApiError::BadRequest(
                "limit: must be at least 1".to_string(),
            ));
        }
        Some(n) => n.min(HISTORY_MAX),
        None => HISTORY_MAX,
    };
    let transitions = match &state.alerting {
        Some(a) => a.history(cluster.name(), since, limit).await?,
        None => Vec::new(),
    };
    Ok(Json(AlertHistoryResponse {
        cluster: cluster.name().to_string(),
        transitions,
    }))
}

/// The rules in force (built-ins merged with `--rules`).
#[utoipa::path(get, path = "/api/v1/alerts/rules",
    responses((status = 200, body = RulesResponse), (status = 503, body = super::error::ErrorBody)))]
pub async fn alert_rules(State(state): State<AppState>) -> Result<Json<RulesResponse>, ApiError> {
    Ok(Json(RulesResponse {
        rules: engine(&state)?.rules(),
    }))
}

/// Silences not yet expired.
#[utoipa::path(get, path = "/api/v1/alerts/silences",
    responses((status = 200, body = SilencesResponse), (status = 503, body = super::error::ErrorBody)))]
pub async fn silences(State(state): State<AppState>) -> Result<Json<SilencesResponse>, ApiError> {
    Ok(Json(SilencesResponse {
        silences: engine(&state)?.silences(),
    }))
}

/// Creates a silence: alerts whose labels match every matcher are not notified until it ends.
/// Needs the admin role; `created_by` is the name of the token that authorised the request
/// (`loopback` when no admin token is configured), never taken from the body (a body naming
/// `created_by` is refused with 400).
#[utoipa::path(post, path = "/api/v1/alerts/silences", request_body = NewSilence,
    security(("bearerAuth" = [])),
    responses((status = 201, body = Silence), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 409, description = "--max-silences silences are already active", body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn create_silence(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.inspect_err(|_| state.access.silence_refused(false))?;
    let result = engine(&state)?
        .add_silence(body, &principal.name, &state.silence_limits)
        .await;
    match &result {
        Err(AlertingError::Refused(_)) => state.access.silence_refused(true),
        Err(AlertingError::Invalid(_)) => state.access.silence_refused(false),
        _ => {}
    }
    Ok((StatusCode::CREATED, Json(result?)).into_response())
}

/// Deletes a silence (needs the admin role).
#[utoipa::path(delete, path = "/api/v1/alerts/silences/{id}",
    params(("id" = String, Path, description = "Silence id")),
    security(("bearerAuth" = [])),
    responses((status = 204), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn delete_silence(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if engine(&state)?.delete_silence(&id).await? {
        tracing::info!(%id, by = %principal.name, "Silence deleted over REST.");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no silence with id {id:?}")))
    }
}
