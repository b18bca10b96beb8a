//! The REST API and `/metrics` (axum): [`router`] builds the whole service from an
//! [`AppState`], so handlers are tested with `tower::ServiceExt::oneshot` and served for real
//! by the binary. The OpenAPI document is generated from the handler annotations (utoipa).

pub mod alerts;
pub mod benchmark;
pub mod error;
pub mod routes;

use std::sync::Arc;

use axum::{
    Json, Router,
    http::{HeaderValue, Method},
    routing::{get, post},
};
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use utoipa::OpenApi;

use crate::{cluster::Clusters, config::Thresholds, store::Store, telemetry::Telemetry};

/// What handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Monitored clusters.
    pub clusters: Clusters,
    /// History store (None only in tests that do not need it).
    pub store: Option<Arc<Store>>,
    /// Self-metrics.
    pub telemetry: Telemetry,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// Allowed CORS origins (`*` = any; empty = none).
    pub cors_origins: Vec<String>,
    /// Agents, subscribers and watches (the gRPC side).
    pub pipeline: crate::ingest::Pipeline,
    /// The alerting engine (None in tests that do not need it).
    pub alerting: Option<crate::alerting::Alerting>,
    /// Benchmark jobs started over REST.
    pub benchmarks: crate::bench::jobs::BenchJobs,
}

/// The OpenAPI document, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "etcd-monitor",
        description = "etcd cluster monitor: health, members, leader, metrics, history."
    ),
    paths(
        routes::health,
        routes::clusters,
        routes::cluster_status,
        routes::cluster_members,
        routes::agents,
        routes::cluster_leader,
        routes::metrics_current,
        routes::metrics_latency,
        routes::metrics_history,
        alerts::alerts,
        alerts::alerts_history,
        alerts::alert_rules,
        alerts::silences,
        alerts::create_silence,
        alerts::delete_silence,
        benchmark::start,
        benchmark::get,
        routes::metrics,
        crate::diagnosis::api::diagnosis,
    ),
    components(schemas(error::ErrorBody))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers(Any),
    )
}

/// The whole HTTP service.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    let router = Router::new()
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/clusters", get(routes::clusters))
        .route("/api/v1/cluster/status", get(routes::cluster_status))
        .route("/api/v1/cluster/members", get(routes::cluster_members))
        .route("/api/v1/agents", get(routes::agents))
        .route("/api/v1/cluster/leader", get(routes::cluster_leader))
        .route("/api/v1/metrics/current", get(routes::metrics_current))
        .route("/api/v1/metrics/history", get(routes::metrics_history))
        .route("/api/v1/metrics/latency", get(routes::metrics_latency))
        .route("/api/v1/alerts", get(alerts::alerts))
        .route("/api/v1/alerts/history", get(alerts::alerts_history))
        .route("/api/v1/alerts/rules", get(alerts::alert_rules))
        .route(
            "/api/v1/alerts/silences",
            get(alerts::silences).post(alerts::create_silence),
        )
        .route(
            "/api/v1/alerts/silences/{id}",
            axum::routing::delete(alerts::delete_silence),
        )
        .route("/api/v1/performance/benchmark", post(benchmark::start))
        .route("/api/v1/performance/benchmark/{id}", get(benchmark::get))
        .route("/api/v1/diagnosis", get(crate::diagnosis::api::diagnosis))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(crate::ui::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        );
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterHandle, MemberState, MemberStatus};
    use crate::config::ClusterConfig;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(store: Option<Arc<Store>>) -> AppState {
        let mk = |name: &str| {
            ClusterHandle::new(ClusterConfig {
                name: name.into(),
                endpoints: vec!["http://127.0.0.1:2379".into()],
                tls: None,
                auth: None,
                metrics_urls: vec![],
                dial_timeout: std::time::Duration::from_secs(1),
            })
        };
        let a = mk("default");
        a.update(|s| {
            s.updated_at_ms = 1;
            s.healthy = true;
            s.has_leader = true;
            s.member_count = 1;
            s.quorum_size = 1;
            s.members = vec![MemberState {
                id: "a1".into(),
                name: "m0".into(),
                reachable: true,
                is_leader: true,
                status: Some(MemberStatus {
                    leader_id: "a1".into(),
                    raft_term: 2,
                    ..MemberStatus::default()
                }),
                ..MemberState::default()
            }];
        });
        let b = mk("east");
        AppState {
            clusters: Arc::new(vec![a, b]),
            store,
            telemetry: Telemetry::new(),
            thresholds: crate::config::Thresholds {
                max_latency_ms: 100,
                max_db_size_mb: 8192,
                min_available_nodes: 2,
                max_leader_changes: 3,
            },
            cors_origins: vec!["http://ui.example".into()],
            pipeline: crate::ingest::Pipeline::default(),
            alerting: None,
            benchmarks: crate::bench::jobs::BenchJobs::default(),
        }
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
    ) -> (StatusCode, serde_json::Value, http::HeaderMap) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("origin", "http://ui.example")
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json, headers)
    }

    #[tokio::test]
    async fn status_defaults_to_the_first_cluster_and_selects_by_name() {
        let app = router(state(None));
        let (code, body, headers) = call(app.clone(), "GET", "/api/v1/cluster/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["cluster"], "default");
        assert_eq!(body["healthy"], true);
        assert_eq!(body["members"][0]["name"], "m0");
        assert_eq!(
            headers
                .get("access-control-allow-origin")
                .map(|v| v.as_bytes()),
            Some(&b"http://ui.example"[..])
        );
        let (code, body, _) = call(app.clone(), "GET", "/api/v1/cluster/leader?cluster=east").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["cluster"], "east");
        assert_eq!(body["has_leader"], false);
        let (code, body, _) = call(app, "GET", "/api/v1/cluster/members?cluster=nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("unknown cluster")
        );
    }

    #[tokio::test]
    async fn errors_are_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let app = router(state(Some(store)));
        for (method, uri, code) in [
            ("GET", "/nope", StatusCode::NOT_FOUND),
            (
                "DELETE",
                "/api/v1/cluster/status",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "GET",
                "/api/v1/metrics/history?limit=abc",
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/metrics/history?since=yesterday",
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/metrics/history?since=10&until=5",
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/metrics/history?step=fast",
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/performance/benchmark",
                StatusCode::FORBIDDEN,
            ),
            (
                "GET",
                "/api/v1/performance/benchmark/x",
                StatusCode::FORBIDDEN,
            ),
        ] {
            let (got, body, _) = call(app.clone(), method, uri).await;
            assert_eq!(got, code, "{method} {uri}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{method} {uri}: {body}"
            );
        }
        let (code, body, _) = call(app, "GET", "/api/v1/metrics/history?since=1h").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["points"].as_array().map(Vec::len), Some(0));
    }

    #[tokio::test]
    async fn openapi_lists_every_route_and_metrics_has_contract_names() {
        let app = router(state(None));
        let (code, doc, _) = call(app.clone(), "GET", "/api/v1/openapi.json").await;
        assert_eq!(code, StatusCode::OK);
        for path in [
            "/health",
            "/api/v1/cluster/status",
            "/api/v1/cluster/members",
            "/api/v1/cluster/leader",
            "/api/v1/metrics/current",
            "/api/v1/metrics/history",
            "/api/v1/metrics/latency",
            "/api/v1/alerts",
            "/api/v1/alerts/history",
            "/api/v1/alerts/rules",
            "/api/v1/alerts/silences",
            "/api/v1/alerts/silences/{id}",
            "/api/v1/performance/benchmark",
            "/metrics",
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} missing from OpenAPI"
            );
        }
        assert!(doc["components"]["schemas"]["ClusterState"].is_object());
        let (code, text, _) = call(app, "GET", "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        let text = text.as_str().unwrap_or_default().to_string();
        assert!(
            text.contains("etcd_cluster_healthy{cluster=\"default\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("etcd_cluster_quorum_size{cluster=\"default\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("etcd_member_is_leader{cluster=\"default\",member=\"m0\"} 1"),
            "{text}"
        );
        // A cluster without a health check yet has no series.
        assert!(!text.contains("cluster=\"east\""), "{text}");
    }
}
