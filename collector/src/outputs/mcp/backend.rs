//! Where a tool's answer comes from: the REST API, always. In the collector (`/mcp`) a tool
//! calls the REST router in memory, with the MCP request's `Authorization`, `Origin`, `Host`
//! and peer address, so the access policy, its refusal counters and every bound are REST's
//! own; `etcd-monitor mcp` (stdio) calls a collector's REST API over the network with the
//! token of `--token-file`. A tool never reads collector state by another path.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{HeaderMap, HeaderValue, Method, Request, header, request::Parts};
use serde_json::Value;
use tower::ServiceExt;

/// Largest REST answer a tool passes on, bytes: more is refused with advice to narrow the
/// query (an assistant's context is small, and a collector's memory is not for this).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Headers of the MCP request that the in-memory REST call carries: who the caller is and
/// where the request came from (the admin check refuses foreign origins).
const FORWARDED: [header::HeaderName; 3] = [header::AUTHORIZATION, header::ORIGIN, header::HOST];

/// One REST request a tool makes.
#[derive(Debug, Clone, PartialEq)]
pub struct RestCall {
    /// `GET` for reads, `POST` for admin operations.
    pub method: Method,
    /// Path and query, already percent-encoded (`/api/v1/cluster/status?cluster=a`).
    pub path_and_query: String,
    /// JSON body of a `POST`.
    pub body: Option<Value>,
}

impl RestCall {
    /// A `GET` of `path` with the query pairs whose value is set.
    pub fn get(path: &str, query: &[(&str, Option<String>)]) -> Self {
        Self {
            method: Method::GET,
            path_and_query: with_query(path, query),
            body: None,
        }
    }

    /// A `POST` of `body` to `path`.
    pub fn post(path: &str, body: Value) -> Self {
        Self {
            method: Method::POST,
            path_and_query: path.to_string(),
            body: Some(body),
        }
    }
}

/// The REST API's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RestAnswer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (a string when the body was not JSON).
    pub body: Value,
}

/// Why a REST call gave no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The collector could not be reached or the request failed on the way.
    #[error("the collector's REST API at {url} did not answer: {message}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The answer exceeded [`MAX_ANSWER_BYTES`].
    #[error(
        "the answer is larger than {MAX_ANSWER_BYTES} bytes: narrow the query (a shorter range, a larger step, a smaller limit, one member)"
    )]
    TooLarge,
}

/// Where tools send their REST calls.
#[derive(Clone)]
pub enum Backend {
    /// The collector's own REST router, called in memory (the `/mcp` route).
    InProcess(Router),
    /// A collector's REST API over HTTP(S) (`etcd-monitor mcp`).
    Remote(Remote),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(_) => f.write_str("Backend::InProcess"),
            Self::Remote(r) => f.debug_tuple("Backend::Remote").field(r).finish(),
        }
    }
}

/// A collector's REST API, reached over the network with one bearer token.
#[derive(Clone)]
pub struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Remote {
    /// A client of the REST API at `base` (`http://host:8080`), sending `token` when given,
    /// trusting `ca_pem` (besides the system's roots) for `https://`, giving up on a request
    /// after `timeout`.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)));
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    async fn call(&self, call: RestCall) -> Result<RestAnswer, BackendError> {
        let unreachable = |e: reqwest::Error| BackendError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        };
        let url = format!("{}{}", self.base, call.path_and_query);
        let mut request = self.client.request(call.method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(BackendError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(RestAnswer {
            status,
            body: parse_body(&bytes),
        })
    }
}

impl Backend {
    /// Makes `call` on behalf of the MCP request whose HTTP head is `caller` (None over stdio).
    pub async fn call(
        &self,
        call: RestCall,
        caller: Option<&Parts>,
    ) -> Result<RestAnswer, BackendError> {
        match self {
            Self::InProcess(router) => in_process(router.clone(), call, caller).await,
            Self::Remote(remote) => remote.call(call).await,
        }
    }
}

/// The request `call` as the REST router sees it: the caller's identity headers and peer
/// address carried over (no peer: never trusted as loopback).
fn request_for(call: RestCall, caller: Option<&Parts>) -> Request<Body> {
    let body = match &call.body {
        Some(v) => Body::from(v.to_string()),
        None => Body::empty(),
    };
    let mut request = Request::new(body);
    *request.method_mut() = call.method;
    *request.uri_mut() = call
        .path_and_query
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    let headers: &mut HeaderMap = request.headers_mut();
    if call.body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some(parts) = caller {
        for name in FORWARDED {
            if let Some(v) = parts.headers.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        if let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            request.extensions_mut().insert(*peer);
        }
    }
    request
}

async fn in_process(
    router: Router,
    call: RestCall,
    caller: Option<&Parts>,
) -> Result<RestAnswer, BackendError> {
    let request = request_for(call, caller);
    let response = match router.oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|_| BackendError::TooLarge)?;
    Ok(RestAnswer {
        status,
        body: parse_body(&bytes),
    })
}

fn parse_body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `path` with `query`'s set pairs, percent-encoded.
pub fn with_query(path: &str, query: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = query
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_unset_pairs_left_out() {
        assert_eq!(
            with_query(
                "/api/v1/metrics/history",
                &[
                    ("cluster", Some("a b&c".into())),
                    ("member", None),
                    ("since", Some("2026-01-01T00:00:00Z".into())),
                ],
            ),
            "/api/v1/metrics/history?cluster=a%20b%26c&since=2026-01-01T00%3A00%3A00Z"
        );
        assert_eq!(with_query("/x", &[("a", None)]), "/x");
    }

    #[test]
    fn identity_headers_and_peer_are_carried_over() {
        let mut outer = Request::builder()
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .header(header::HOST, "collector:8080")
            .header("x-other", "dropped")
            .body(())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        outer.extensions_mut().insert(ConnectInfo(peer));
        let (parts, ()) = outer.into_parts();
        let inner = request_for(
            RestCall::post(
                "/api/v1/performance/benchmark",
                serde_json::json!({"ops": 1}),
            ),
            Some(&parts),
        );
        assert_eq!(inner.method(), Method::POST);
        assert_eq!(inner.headers()[header::AUTHORIZATION], "Bearer s3cret");
        assert_eq!(inner.headers()[header::HOST], "collector:8080");
        assert_eq!(inner.headers()[header::CONTENT_TYPE], "application/json");
        assert!(inner.headers().get("x-other").is_none());
        assert_eq!(
            inner
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            Some(peer)
        );
        // Over stdio there is no caller: nothing is forwarded, no peer is trusted.
        let bare = request_for(RestCall::get("/health", &[]), None);
        assert!(bare.headers().get(header::AUTHORIZATION).is_none());
        assert!(bare.extensions().get::<ConnectInfo<SocketAddr>>().is_none());
    }
}
