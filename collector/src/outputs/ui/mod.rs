//! The built-in status page at `/`: static HTML, CSS and JavaScript compiled into the binary
//! (no build step, nothing to install). The page reads the same REST API everyone else does.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Routes of the status page (`/`, `/ui/app.js`, `/ui/style.css`), for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types() {
        for (path, kind, needle) in [
            ("/", "text/html", "<script src=\"/ui/app.js\">"),
            ("/ui/app.js", "text/javascript", "/api/v1/cluster/status"),
            ("/ui/style.css", "text/css", ".cards"),
        ] {
            let response = routes::<()>()
                .oneshot(
                    axum::http::Request::get(path)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response");
            assert_eq!(response.status(), 200, "{path}");
            let ct = response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii");
            assert!(ct.starts_with(kind), "{path}: {ct}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
        }
    }
}
