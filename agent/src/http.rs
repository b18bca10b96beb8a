//! `/metrics` and `/healthz` on the agent's listen address.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::{identity::MemberIdentity, metrics::AgentMetrics, mode::AgentMode, tracker::Tracker};

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Registry and counters.
    pub metrics: Arc<AgentMetrics>,
    /// The traced set.
    pub tracker: Arc<Mutex<Tracker>>,
    /// Current mode and why.
    pub status: Arc<Mutex<ModeStatus>>,
    /// `--node-name`.
    pub node: String,
    /// The collector targets, when shipping.
    pub fanout: Option<Arc<crate::ship::fanout::FanOut>>,
}

/// The mode and the reason for it, as `/healthz` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeStatus {
    /// Current mode.
    pub mode: AgentMode,
    /// Why the agent is not in full eBPF mode (absent when it is).
    pub reason: Option<String>,
    /// Optional probes that did not attach, with the error.
    pub skipped_probes: Vec<String>,
    /// Probe groups asked for with `--probes` (empty in client-only mode).
    pub probe_groups: Vec<crate::probes::ProbeGroup>,
}

#[derive(serde::Serialize)]
struct TrackedView {
    pid: u32,
    identity: MemberIdentity,
}

#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    node: String,
    #[serde(flatten)]
    mode: ModeStatus,
    tracked: Vec<TrackedView>,
    /// Every collector address shipped to (empty without `--collector`).
    collectors: Vec<crate::ship::fanout::TargetView>,
}

/// The agent's HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "not found: try /metrics or /healthz"})),
            )
        })
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let metrics = state.metrics.clone();
    let body = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .unwrap_or_else(|e| format!("# render failed: {e}\n"));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    // The one place a poisoned lock is reported instead of recovered (see
    // `etcd_monitor_runtime::sync`): a task panicked while holding the agent's status, and the
    // liveness probe should see it.
    let mode = state.status.lock().map(|s| s.clone());
    let tracked = state
        .tracker
        .lock()
        .map(|t| {
            let mut v: Vec<TrackedView> = t
                .processes()
                .iter()
                .map(|(pid, p)| TrackedView {
                    pid: *pid,
                    identity: p.identity.clone(),
                })
                .collect();
            v.sort_by_key(|p| p.pid);
            v
        })
        .unwrap_or_default();
    match mode {
        Ok(mode) => (
            StatusCode::OK,
            Json(
                serde_json::to_value(Health {
                    status: "ok",
                    node: state.node.clone(),
                    mode,
                    tracked,
                    collectors: state.fanout.as_ref().map(|f| f.views()).unwrap_or_default(),
                })
                .unwrap_or_default(),
            ),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": "agent state is poisoned"})),
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{discovery::Matcher, procfs::ProcFs};

    fn state() -> HttpState {
        let tracker = Arc::new(Mutex::new(Tracker::new(
            ProcFs::new("/nonexistent"),
            Matcher::new(None),
            None,
        )));
        let metrics = Arc::new(AgentMetrics::new(tracker.clone()).expect("metrics"));
        metrics.set_mode(AgentMode::ClientOnly);
        HttpState {
            metrics,
            tracker,
            status: Arc::new(Mutex::new(ModeStatus {
                mode: AgentMode::ClientOnly,
                reason: Some("test".into()),
                skipped_probes: vec![],
                probe_groups: vec![],
            })),
            node: "n1".into(),
            fanout: None,
        }
    }

    async fn get_body(uri: &str) -> (StatusCode, String) {
        let response = router(state())
            .oneshot(
                axum::http::Request::get(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_json_404() {
        let (status, body) = get_body("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("etcdmon_agent_mode{mode=\"client-only\"} 1"),
            "{body}"
        );
        assert!(
            body.contains(
                "etcdmon_events_dropped_total{reason=\"ringbuf_full\",stage=\"kernel\"} 0"
            ),
            "{body}"
        );

        let (status, body) = get_body("/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["mode"], "client-only");
        assert_eq!(v["reason"], "test");
        assert_eq!(v["collectors"], serde_json::json!([]), "not shipping: {v}");

        let (status, body) = get_body("/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("error"));
    }
}
