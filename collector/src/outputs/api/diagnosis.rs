//! `GET /api/v1/diagnosis`: every member's latest verdict with the numbers behind it, for one
//! cluster (default: all) or one member.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::analysis::diagnosis::MemberDiagnosis;
use crate::{outputs::api::AppState, outputs::api::error::ApiError};

/// Query of `/api/v1/diagnosis`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiagnosisParams {
    /// Cluster name; all clusters when absent.
    pub cluster: Option<String>,
    /// Member name or hex id; every member when absent.
    pub member: Option<String>,
}

/// Body of `/api/v1/diagnosis`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosisResponse {
    /// One verdict per member.
    pub members: Vec<MemberDiagnosis>,
}

/// Why each member is (or is not) slow: `healthy`, `disk_slow`, `noisy_neighbor`,
/// `cpu_starved`, `peer_network_slow` or `inconclusive`, with evidence.
#[utoipa::path(get, path = "/api/v1/diagnosis", params(DiagnosisParams),
    responses((status = 200, body = DiagnosisResponse), (status = 404, body = crate::outputs::api::error::ErrorBody)))]
pub async fn diagnosis(
    State(state): State<AppState>,
    Query(params): Query<DiagnosisParams>,
) -> Result<Json<DiagnosisResponse>, ApiError> {
    if let Some(cluster) = params.cluster.as_deref().filter(|c| !c.is_empty())
        && !state.clusters.iter().any(|c| c.name() == cluster)
    {
        let known: Vec<&str> = state.clusters.iter().map(|c| c.name()).collect();
        return Err(ApiError::NotFound(format!(
            "unknown cluster {cluster:?} (query field `cluster`); known: {}",
            known.join(", ")
        )));
    }
    let members: Vec<MemberDiagnosis> = state
        .diagnoses
        .all()
        .into_iter()
        .filter(|d| {
            params
                .cluster
                .as_deref()
                .is_none_or(|c| c.is_empty() || d.cluster == c)
        })
        .filter(|d| {
            params
                .member
                .as_deref()
                .is_none_or(|m| d.member == m || d.member_id == m)
        })
        .collect();
    if let Some(member) = params.member.as_deref()
        && members.is_empty()
    {
        return Err(ApiError::NotFound(format!(
            "no diagnosis for member {member:?} (query field `member`)"
        )));
    }
    Ok(Json(DiagnosisResponse { members }))
}
