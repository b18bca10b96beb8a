//! `GET /api/v1/ha`: which collector leads (`--ha-election`).

use axum::{Json, extract::State};

use super::AppState;
use crate::sources::ha::HaStatus;

/// Which collector leads: this collector's id and whether it leads, the leader's id as etcd
/// has it, the current term. Without `--ha-election`, `enabled` is false and this collector
/// leads.
#[utoipa::path(
    get,
    path = "/api/v1/ha",
    responses((status = 200, description = "Leader election state", body = HaStatus))
)]
pub async fn ha(State(state): State<AppState>) -> Json<HaStatus> {
    Json(state.leadership.status())
}
