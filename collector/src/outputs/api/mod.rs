//! The REST API and `/metrics` (axum): [`router`] builds the whole service from an
//! [`AppState`], so handlers are tested with `tower::ServiceExt::oneshot` and served for real
//! by the binary. The OpenAPI document is generated from the handler annotations (utoipa), then
//! given the bounds the server enforces ([`document`]). Who may call what is [`access`].

pub mod access;
pub mod admin;
pub mod alerts;
pub mod audit;
pub mod benchmark;
pub mod diagnosis;
pub mod error;
pub mod ha;
pub mod report;
pub mod routes;
pub mod tls;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, Method},
    middleware,
    routing::{get, post},
};
use serde_json::{Value, json};
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use utoipa::OpenApi;

use crate::{
    analysis::alerting::silences, analysis::alerting::silences::SilenceLimits,
    model::cluster::Clusters, model::config::Thresholds, model::telemetry::Telemetry,
    model::time::now_ms, store::Store,
};

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
    /// Allowed CORS origins (`*` = any, for reads only; empty = none).
    pub cors_origins: Vec<String>,
    /// Agents, subscribers and watches (the gRPC side).
    pub pipeline: crate::sources::ingest::Pipeline,
    /// The latest diagnosis of every member (written by the diagnosis task).
    pub diagnoses: Arc<crate::analysis::diagnosis::Diagnoses>,
    /// The alerting engine (None in tests that do not need it).
    pub alerting: Option<crate::analysis::alerting::Alerting>,
    /// Benchmark jobs started over REST.
    pub benchmarks: crate::ops::bench::jobs::BenchJobs,
    /// Tokens, roles and the refusal counters.
    pub access: access::Access,
    /// `--silence-max-duration` and `--max-silences`.
    pub silence_limits: SilenceLimits,
    /// Which collector leads (`--ha-election`); standalone: this one.
    pub leadership: crate::sources::ha::Leadership,
    /// Admin operations (jobs, audit, snapshots).
    pub admin: crate::ops::admin::AdminJobs,
    /// The performance report's thresholds and the scheduled benchmarks.
    pub report: crate::outputs::report::ReportSettings,
}

/// The OpenAPI document, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "etcd-monitor",
        description = "etcd cluster monitor: health, members, leader, metrics, history. Reads are open unless viewer tokens are configured; every change needs the admin role (bearer token, or loopback when no admin token is configured)."
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
        crate::outputs::api::diagnosis::diagnosis,
        ha::ha,
        admin::defrag,
        admin::compact,
        admin::alarm_disarm,
        admin::move_leader,
        admin::snapshot,
        admin::member_remove,
        admin::job,
        admin::snapshots,
        admin::snapshot_download,
        audit::audit,
        report::report,
    ),
    components(schemas(error::ErrorBody))
)]
pub struct ApiDoc;

/// How long the `ends_at_ms` bounds of a served document stay valid, ms: the minimum is this
/// far after the document was served, the maximum this far before the longest silence ends.
const DOC_VALIDITY_MS: u64 = 600_000;

/// Forms of a time in `since`/`until`: Unix seconds, an RFC 3339 UTC time, or a duration ago.
const TIME_PATTERN: &str = r"^([0-9]{1,10}|(19[7-9][0-9]|20[0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z|[1-9][0-9]{0,3}(s|m|h|d))$";

/// A step or duration (`30s`, `5m`).
const STEP_PATTERN: &str = r"^[1-9][0-9]{0,3}(ms|s|m|h)$";

/// A regex alternation of the integers `1..=n`.
fn one_to(n: u64) -> String {
    (1..=n.max(1))
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("|")
}

/// The durations a silence may have under `limits` (whole minutes, hours or days).
fn silence_duration_pattern(limits: &SilenceLimits) -> String {
    let secs = limits.max_duration.as_secs();
    let mut forms = vec![format!("({})m", one_to((secs / 60).min(59)))];
    if secs >= 3600 {
        forms.push(format!("({})h", one_to((secs / 3600).min(23))));
    }
    if secs >= 86_400 {
        forms.push(format!("({})d", one_to((secs / 86_400).min(99))));
    }
    format!("^({})$", forms.join("|"))
}

fn set_param(doc: &mut Value, path: &str, method: &str, name: &str, schema: Value) {
    if let Some(params) = doc["paths"][path][method]["parameters"].as_array_mut() {
        for p in params {
            if p["name"] == name {
                p["schema"] = schema.clone();
            }
        }
    }
}

/// The OpenAPI document with the bounds the server enforces at `now` under `limits`: query
/// formats and ranges, the silence body's constraints, the security scheme of the mutating
/// routes and the 401/403 every route may answer.
pub fn document(limits: &SilenceLimits, now: u64) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    doc["components"]["securitySchemes"]["bearerAuth"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "A token from --admin-token-file (changes) or --viewer-token-file (reads, when viewer tokens are configured)."
    });
    document_query_bounds(&mut doc);
    document_new_silence(&mut doc, limits, now);
    admin::document(&mut doc);
    document_security(&mut doc);
    doc
}

/// Formats and ranges of the history routes' query parameters.
fn document_query_bounds(doc: &mut Value) {
    let time = json!({"type": "string", "pattern": TIME_PATTERN});
    let step = json!({"type": "string", "pattern": STEP_PATTERN});
    set_param(doc, "/api/v1/metrics/history", "get", "since", time.clone());
    set_param(doc, "/api/v1/metrics/history", "get", "until", time.clone());
    set_param(doc, "/api/v1/metrics/history", "get", "step", step);
    set_param(
        doc,
        "/api/v1/metrics/history",
        "get",
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": routes::HISTORY_LIMIT_MAX}),
    );
    set_param(doc, "/api/v1/alerts/history", "get", "since", time);
    set_param(
        doc,
        "/api/v1/alerts/history",
        "get",
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": alerts::HISTORY_MAX}),
    );
}

/// The silence body's schema, with `ends_at_ms` bounded from `now` under `limits`.
fn document_new_silence(doc: &mut Value, limits: &SilenceLimits, now: u64) {
    let max_ms = u64::try_from(limits.max_duration.as_millis()).unwrap_or(u64::MAX);
    let earliest = now.saturating_add(DOC_VALIDITY_MS);
    let latest = now
        .saturating_add(max_ms.saturating_sub(DOC_VALIDITY_MS))
        .max(earliest);
    doc["components"]["schemas"]["NewSilence"] = json!({
        "type": "object",
        "description": "A silence: alerts whose labels match every matcher are not notified until it ends. Give exactly one of duration and ends_at_ms. created_by is not accepted: the collector records the token's name.",
        "additionalProperties": false,
        "required": ["matchers"],
        "properties": {
            "matchers": {
                "type": "object",
                "description": "Labels an alert must all have, with these values.",
                "minProperties": 1,
                "maxProperties": silences::MAX_MATCHERS,
                "propertyNames": {"pattern": format!("^[a-zA-Z_][a-zA-Z0-9_]{{0,{}}}$", silences::MAX_NAME_LEN - 1)},
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": silences::MAX_VALUE_LEN}
            },
            "duration": {
                "type": "string",
                "description": "How long, at most --silence-max-duration (the pattern lists whole minutes, hours and days; other humantime forms are accepted too).",
                "pattern": silence_duration_pattern(limits)
            },
            "ends_at_ms": {
                "type": "integer",
                "format": "int64",
                "description": "End (Unix ms): in the future and at most --silence-max-duration from now (the bounds here were computed when this document was served).",
                "minimum": earliest,
                "maximum": latest
            },
            "comment": {"type": "string", "maxLength": silences::MAX_COMMENT_LEN}
        },
        "oneOf": [{"required": ["duration"]}, {"required": ["ends_at_ms"]}]
    });
}

/// The bearer security of every route but `/health` (required for mutating ones, optional
/// for reads) and the 401/403 each may answer.
fn document_security(doc: &mut Value) {
    let error = json!({
        "description": "Refused by the access policy",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                let mutating = matches!(method.as_str(), "post" | "put" | "patch" | "delete");
                if path == "/health" {
                    continue;
                }
                if mutating {
                    op["security"] = json!([{"bearerAuth": []}]);
                } else {
                    // Open unless viewer tokens are configured.
                    op["security"] = json!([{}, {"bearerAuth": []}]);
                }
                for code in ["401", "403"] {
                    if op["responses"][code].is_null() {
                        op["responses"][code] = error.clone();
                    }
                }
            }
        }
    }
}

async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.silence_limits, now_ms()))
}

/// CORS for the configured origins: reads only. No foreign origin is ever allowed to change
/// anything (the browser refuses the preflight, and [`access::RequireAdmin`] refuses the
/// request itself when a foreign `Origin` is present).
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
            .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
            .allow_headers(Any),
    )
}

/// The whole HTTP service. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// without the peer address no request counts as loopback.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    // Everything but /health, the OpenAPI document and the status page's files: closed to
    // callers without a token when viewer tokens are configured.
    let guarded = Router::new()
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
        .route(
            "/api/v1/diagnosis",
            get(crate::outputs::api::diagnosis::diagnosis),
        )
        .route("/api/v1/ha", get(ha::ha))
        .route("/api/v1/admin/defrag", post(admin::defrag))
        .route("/api/v1/admin/compact", post(admin::compact))
        .route("/api/v1/admin/alarm/disarm", post(admin::alarm_disarm))
        .route("/api/v1/admin/move-leader", post(admin::move_leader))
        .route("/api/v1/admin/snapshot", post(admin::snapshot))
        .route("/api/v1/admin/member/remove", post(admin::member_remove))
        .route("/api/v1/admin/jobs/{id}", get(admin::job))
        .route("/api/v1/admin/snapshots", get(admin::snapshots))
        .route(
            "/api/v1/admin/snapshots/{name}",
            get(admin::snapshot_download),
        )
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/report", get(report::report))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::require_viewer,
        ));
    // MCP (streamable HTTP) at /mcp, guarded like the reads; its tools call the routes above
    // in memory with the caller's token and peer, so access and refusals are REST's.
    let rest = guarded.clone().fallback(routes::not_found);
    let mcp = crate::outputs::mcp::routes(rest.with_state(state.clone()));
    let guarded = guarded.merge(mcp.route_layer(middleware::from_fn_with_state(
        state.clone(),
        access::require_viewer,
    )));
    let router = Router::new()
        .route("/health", get(routes::health))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(guarded)
        .merge(crate::outputs::ui::routes())
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
    use crate::model::config::ClusterConfig;
    use crate::{
        model::cluster::ClusterHandle, model::cluster::MemberState, model::cluster::MemberStatus,
    };
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
            thresholds: crate::model::config::Thresholds {
                max_latency_ms: 100,
                max_db_size_mb: 8192,
                min_available_nodes: 2,
                max_leader_changes: 3,
            },
            cors_origins: vec!["http://ui.example".into()],
            pipeline: crate::sources::ingest::Pipeline::default(),
            diagnoses: Arc::default(),
            alerting: None,
            benchmarks: crate::ops::bench::jobs::BenchJobs::default(),
            access: access::Access::new(vec![], &["http://ui.example".into()], 0),
            silence_limits: SilenceLimits::default(),
            leadership: crate::sources::ha::Leadership::standalone(),
            admin: crate::ops::admin::AdminJobs::default(),
            report: Default::default(),
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

    /// Every change the document lists is refused to a caller that is neither an admin nor on
    /// loopback, and declares bearerAuth and 401/403: a new mutating route that forgets
    /// [`access::RequireAdmin`] fails here.
    #[tokio::test]
    async fn every_mutating_route_needs_the_admin_role() {
        let doc = document(&SilenceLimits::default(), 1_700_000_000_000);
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if !matches!(method.as_str(), "post" | "put" | "patch" | "delete") {
                    continue;
                }
                assert_eq!(
                    op["security"],
                    json!([{"bearerAuth": []}]),
                    "{method} {path}"
                );
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
                assert!(op["responses"]["403"].is_object(), "{method} {path}");
                let uri = path.replace("{id}", "x");
                for peer in [None, Some("10.9.8.7:5000")] {
                    let mut req = Request::builder()
                        .method(method.to_uppercase().as_str())
                        .uri(&uri)
                        .header("content-type", "application/json")
                        .body(Body::from("{}"))
                        .unwrap();
                    if let Some(p) = peer {
                        req.extensions_mut().insert(axum::extract::ConnectInfo(
                            p.parse::<std::net::SocketAddr>().unwrap(),
                        ));
                    }
                    let resp = router(state(None)).oneshot(req).await.unwrap();
                    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
                    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert!(
                        body["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("--admin-token-file")),
                        "{method} {path}: {body}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked >= 3, "{checked}");
        // The silence body's bounds are declared.
        let s = &doc["components"]["schemas"]["NewSilence"];
        assert_eq!(s["properties"]["matchers"]["minProperties"], 1);
        assert!(s["properties"]["created_by"].is_null());
        assert_eq!(
            doc["paths"]["/api/v1/metrics/history"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "limit")
                .unwrap()["schema"]["minimum"],
            1
        );
        let pattern = silence_duration_pattern(&SilenceLimits::default());
        assert!(pattern.ends_with("|7)d)$"), "{pattern}");
    }

    #[tokio::test]
    async fn cors_never_lets_a_page_change_anything() {
        let app = router(state(None));
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/api/v1/alerts/silences")
            .header("origin", "http://ui.example")
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let methods = resp
            .headers()
            .get("access-control-allow-methods")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(methods.contains("GET"), "{methods}");
        assert!(
            !methods.contains("POST") && !methods.contains("DELETE"),
            "{methods}"
        );
    }

    #[tokio::test]
    async fn viewer_tokens_close_reads_but_not_health() {
        let mut st = state(None);
        st.access = access::Access::new(
            vec![access::ApiToken::new(
                "grafana",
                access::Role::Viewer,
                "viewer-secret-0123",
            )],
            &[],
            0,
        );
        let app = router(st);
        let (code, body, headers) = call(app.clone(), "GET", "/api/v1/cluster/status").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
        assert!(headers.get("www-authenticate").is_some());
        let (code, _, _) = call(app.clone(), "GET", "/metrics").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _, _) = call(app.clone(), "GET", "/health").await;
        assert_eq!(code, StatusCode::OK);
        let req = Request::builder()
            .uri("/api/v1/cluster/status")
            .header("authorization", "Bearer viewer-secret-0123")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
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

    /// `/mcp`'s admin tool is refused exactly as REST refuses its route: with no admin token,
    /// a non-loopback peer is refused and a loopback one passes (to the benchmark API's own
    /// "disabled" answer here); the peer address reaches the in-memory REST call.
    #[tokio::test]
    async fn mcp_admin_tools_follow_the_rest_access_policy() {
        let call = |peer: &'static str, host: &'static str| async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "run_benchmark", "arguments": {"ops": 10}}});
            let mut req = Request::post("/mcp")
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("host", host)
                .body(Body::from(body.to_string()))
                .unwrap();
            req.extensions_mut().insert(axum::extract::ConnectInfo(
                peer.parse::<std::net::SocketAddr>().unwrap(),
            ));
            let resp = router(state(None)).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{peer}");
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["result"]["isError"], true, "{v}");
            v["result"]["structuredContent"].clone()
        };
        let remote = call("10.1.2.3:5000", "collector:8080").await;
        assert_eq!(remote["status"], 403, "{remote}");
        assert!(
            remote["error"]
                .as_str()
                .unwrap_or_default()
                .contains("loopback only"),
            "{remote}"
        );
        // From loopback, but addressed to a DNS name (rebinding): refused like REST.
        let rebound = call("127.0.0.1:5000", "collector:8080").await;
        assert_eq!(rebound["status"], 403, "{rebound}");
        assert!(
            rebound["error"]
                .as_str()
                .unwrap_or_default()
                .contains("not a loopback name"),
            "{rebound}"
        );
        let local = call("127.0.0.1:5000", "127.0.0.1:8080").await;
        assert_eq!(local["status"], 403, "{local}");
        assert!(
            local["error"]
                .as_str()
                .unwrap_or_default()
                .contains("benchmark API is disabled"),
            "{local}"
        );
    }
}
