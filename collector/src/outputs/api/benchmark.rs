//! `POST /api/v1/performance/benchmark` and `GET /api/v1/performance/benchmark/{id}`: start a
//! benchmark job and follow it. Both need `--enable-benchmark-api`; starting one needs the admin
//! role ([`RequireAdmin`]), following one is a read. The logic lives in `crate::ops::bench::jobs`.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, access::RequireAdmin, error::ApiError};
use crate::{ops::bench::RawSpec, ops::bench::jobs::JobError, ops::bench::jobs::JobView};

/// Answer of a started benchmark.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedResponse {
    /// Job id.
    pub id: String,
    /// Where progress and the report are.
    pub status_url: String,
    /// The prefix the keys live under (deleted afterwards).
    pub prefix: String,
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Forbidden(m) => ApiError::Forbidden(m),
            JobError::Busy(_) => ApiError::Conflict(e.to_string()),
            JobError::Spawn(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Starts a benchmark (disabled unless the collector runs with `--enable-benchmark-api`; needs
/// the admin role). Keys are written only under `/etcd-monitor-bench/<id>/` and deleted
/// afterwards; the job records the token's name as `created_by`.
#[utoipa::path(post, path = "/api/v1/performance/benchmark", request_body = RawSpec,
    security(("bearerAuth" = [])),
    responses((status = 202, body = StartedResponse), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    RequireAdmin(principal): RequireAdmin,
    body: Result<Json<RawSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<StartedResponse>), ApiError> {
    state.benchmarks.check_enabled()?;
    let Json(raw) = body?;
    let spec = raw
        .validate(&|f: &str| f.to_string(), state.benchmarks.max_ops())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cluster = match raw.cluster.as_deref() {
        None | Some("") => state.clusters.first(),
        Some(name) => state.clusters.iter().find(|c| c.name() == name),
    }
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "cluster: unknown cluster {:?}",
            raw.cluster.unwrap_or_default()
        ))
    })?;
    let id = state
        .benchmarks
        .start(cluster.config.clone(), spec, &principal.name)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedResponse {
            status_url: format!("/api/v1/performance/benchmark/{id}"),
            prefix: crate::ops::bench::safety::prefix(&id),
            id,
        }),
    ))
}

/// Progress and, when finished, the report of benchmark `id` (a read; 403 while the
/// benchmark API is disabled).
#[utoipa::path(get, path = "/api/v1/performance/benchmark/{id}",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    state.benchmarks.check_enabled()?;
    let jobs = state.benchmarks.clone();
    let lookup = id.clone();
    let view = tokio::task::spawn_blocking(move || jobs.get(&lookup))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    view.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no benchmark {id}")))
}
