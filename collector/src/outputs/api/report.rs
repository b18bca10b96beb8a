//! `GET /api/v1/report`: the graded performance report of one cluster as JSON, Markdown or
//! HTML. A read (viewer role); `with_benchmark=true` also runs a small write load first, which
//! writes, so it needs the admin role and `--enable-benchmark-api`.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{ConnectInfo, Query, State, rejection::QueryRejection},
    http::{header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{AppState, error::ApiError, routes::pick};
use crate::outputs::report::{self, Format, gather};

/// Shortest history window.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);

/// Query of `/api/v1/report`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Cluster name; default the first configured.
    pub cluster: Option<String>,
    /// `json` (default), `markdown` or `html`.
    #[param(pattern = "^(json|markdown|html)?$")]
    pub format: Option<String>,
    /// History window of the trends (`24h` default; a longer one than the history retention
    /// is cut to it).
    #[param(pattern = "^([1-9][0-9]{0,3}(m|h|d))?$")]
    pub window: Option<String>,
    /// `true` runs a small rate-limited write benchmark first and grades it (admin role,
    /// `--enable-benchmark-api`).
    #[param(pattern = "^(true|false)?$")]
    pub with_benchmark: Option<String>,
}

/// The validated query.
struct Checked {
    format: Format,
    window: Duration,
    with_benchmark: bool,
}

fn check(q: &ReportParams, max_window: Duration) -> Result<Checked, ApiError> {
    let format = match q.format.as_deref() {
        None | Some("") => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid value for format: {f:?}; use json, markdown or html"
            ))
        })?,
    };
    let window = match q.window.as_deref() {
        None | Some("") => gather::DEFAULT_WINDOW.min(max_window),
        Some(w) => {
            let d = crate::model::time::parse_duration(w)
                .map_err(|e| ApiError::BadRequest(format!("invalid value for window: {e}")))?;
            if d < MIN_WINDOW {
                return Err(ApiError::BadRequest(format!(
                    "invalid value for window: {w:?}; use at least {MIN_WINDOW:?}"
                )));
            }
            // Nothing older than the retention is kept: a longer window is the whole history.
            d.min(max_window)
        }
    };
    let with_benchmark = match q.with_benchmark.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid value for with_benchmark: {other:?}; use true or false"
            )));
        }
    };
    Ok(Checked {
        format,
        window,
        with_benchmark,
    })
}

/// The performance report: a grade per area (disk, backend, CPU, memory, peer latency,
/// network, database quota, fragmentation, consistency, availability) and overall, an
/// executive summary, findings with their numbers, recommendations, consistency checks
/// (cluster id, versions, revision and raft index spread, HashKV) and trends over the history
/// window (inline SVG charts in HTML).
#[utoipa::path(get, path = "/api/v1/report", params(ReportParams),
    responses((status = 200, description = "The report as JSON (a Report object), Markdown or HTML", content_type = "application/json"),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    parts: Parts,
    q: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let max_window = state
        .store
        .as_ref()
        .map_or(gather::DEFAULT_WINDOW, |s| s.max_range());
    let checked = check(&q, max_window)?;
    let cluster = pick(&state, q.cluster.as_deref())?;
    let benchmark = if checked.with_benchmark {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let principal = state.access.check_admin(&parts.headers, peer)?;
        state.benchmarks.check_enabled()?;
        Some(
            report::run_benchmark(&state.benchmarks, &cluster.config, &principal.name)
                .await
                .map_err(|e| match e {
                    report::BenchmarkError::Busy(_) => ApiError::Conflict(e.to_string()),
                    report::BenchmarkError::Start(_) => ApiError::Internal(e.to_string()),
                })?,
        )
    } else {
        None
    };
    let sources = gather::Sources {
        cluster,
        store: state.store.clone(),
        diagnoses: state.diagnoses.clone(),
        alerting: state.alerting.clone(),
        registry: Some(state.pipeline.registry.clone()),
    };
    let mut inputs = gather::gather(&sources, checked.window, crate::model::time::now_ms()).await;
    inputs.benchmark = benchmark;
    let built = report::build(&inputs, &state.report.thresholds);
    let body = report::render(&built, checked.format);
    Ok((
        [
            (header::CONTENT_TYPE, checked.format.content_type()),
            (
                header::HeaderName::from_static(report::GRADE_HEADER),
                built.overall.as_str(),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_named() {
        let max = Duration::from_secs(7 * 86_400);
        let bad = |q: ReportParams| match check(&q, max) {
            Err(ApiError::BadRequest(m)) => m,
            _ => panic!("accepted"),
        };
        assert!(
            bad(ReportParams {
                format: Some("pdf".into()),
                ..Default::default()
            })
            .contains("format")
        );
        assert!(
            bad(ReportParams {
                window: Some("30s".into()),
                ..Default::default()
            })
            .contains("window")
        );
        // Longer than the retention: the whole history, not an error.
        let long = ReportParams {
            window: Some("30d".into()),
            ..Default::default()
        };
        assert!(check(&long, max).is_ok_and(|c| c.window == max));
        assert!(
            bad(ReportParams {
                with_benchmark: Some("yes please".into()),
                ..Default::default()
            })
            .contains("with_benchmark")
        );
        let ok = check(
            &ReportParams {
                format: Some("md".into()),
                window: Some("1h".into()),
                with_benchmark: Some("true".into()),
                ..Default::default()
            },
            max,
        )
        .expect("valid");
        assert_eq!(ok.format, Format::Markdown);
        assert!(ok.with_benchmark);
    }
}
