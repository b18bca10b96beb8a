//! Who may call what on the REST API.
//!
//! Reads stay open, like Prometheus, unless viewer tokens are configured
//! (`--viewer-token-file`); then every route except `/health`, the OpenAPI document and the
//! status page's static files needs a viewer or admin token. Every mutating route takes a
//! [`RequireAdmin`] argument: the request needs a bearer token with the `admin` role, or, when
//! no admin token is configured at all, must come from a loopback peer. A mutating request
//! whose `Origin` is neither the server itself nor listed in `--cors-origins` is refused even
//! with a token (defence in depth against cross-site requests from a browser).
//!
//! Tokens are named; the name of the token that authorised a change is what the change
//! records as `created_by`. Secrets are kept only as SHA-256 digests and compared in
//! constant time. Every refusal is counted in `etcdmon_api_auth_refusals_total{reason}`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use super::{AppState, error::ApiError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read routes only (needed only when viewer tokens close reads).
    Viewer,
    /// Reads and every mutating route.
    Admin,
}

impl Role {
    /// `viewer` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }
}

/// A named bearer token; only the SHA-256 digest of its secret is kept.
#[derive(Clone)]
pub struct ApiToken {
    /// Recorded as `created_by` on what the token changes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    digest: [u8; 32],
}

impl ApiToken {
    /// A token named `name` with secret `secret`.
    pub fn new(name: impl Into<String>, role: Role, secret: &str) -> Self {
        Self {
            name: name.into(),
            role,
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, or [`LOOPBACK_PRINCIPAL`].
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The principal of an unauthenticated mutation from loopback when no admin token exists.
pub const LOOPBACK_PRINCIPAL: &str = "loopback";

/// Why a request was refused: the `reason` label of `etcdmon_api_auth_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header where one is needed (401).
    MissingToken,
    /// A bearer token that matches no configured token (401).
    InvalidToken,
    /// A valid token without the admin role on a mutating route (403).
    NotAdmin,
    /// A mutation from a non-loopback peer while no admin token is configured (403).
    NotLoopback,
    /// A mutation whose `Origin` is neither this server nor in `--cors-origins` (403).
    ForeignOrigin,
    /// A tokenless loopback mutation whose `Host` is not a loopback name: a browser page on a
    /// DNS name rebound to 127.0.0.1 (403).
    ForeignHost,
}

impl Refusal {
    const ALL: [Self; 6] = [
        Self::MissingToken,
        Self::InvalidToken,
        Self::NotAdmin,
        Self::NotLoopback,
        Self::ForeignOrigin,
        Self::ForeignHost,
    ];

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::NotAdmin => "not_admin",
            Self::NotLoopback => "not_loopback",
            Self::ForeignOrigin => "foreign_origin",
            Self::ForeignHost => "foreign_host",
        }
    }
}

#[derive(Default)]
struct Inner {
    tokens: Vec<ApiToken>,
    /// Origins listed in `--cors-origins` (the wildcard excluded: it never allows mutations).
    trusted_origins: Vec<String>,
    refusals: [AtomicU64; Refusal::ALL.len()],
    insecure_token_files: u64,
    silence_refusals_limit: AtomicU64,
    silence_refusals_invalid: AtomicU64,
    tls_handshake_failures: Arc<AtomicU64>,
}

/// The access policy of one collector (cheap to clone).
#[derive(Clone, Default)]
pub struct Access {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.inner.tokens)
            .field("trusted_origins", &self.inner.trusted_origins)
            .finish()
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn is_loopback(peer: Option<SocketAddr>) -> bool {
    match peer.map(|p| p.ip()) {
        Some(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Some(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        // Without the peer address (in-memory tests) nothing is trusted as loopback.
        None => false,
    }
}

/// The `Host` header of a request when it names something other than a loopback host.
/// Without a token, a loopback peer alone is not enough: a browser page on `evil.example`
/// whose DNS name was rebound to 127.0.0.1 reaches us from loopback with `Host: evil.example`.
fn foreign_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?;
    let host = host.to_str().unwrap_or("<not text>").to_ascii_lowercase();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _port)| name),
    };
    let loopback = name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some(host)
}

impl Access {
    /// A policy with `tokens`, trusting the origins of `cors_origins` for mutations, and
    /// reporting `insecure_token_files` token files readable by group or others.
    pub fn new(tokens: Vec<ApiToken>, cors_origins: &[String], insecure_token_files: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                tokens,
                trusted_origins: cors_origins
                    .iter()
                    .filter(|o| o.as_str() != "*")
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
                insecure_token_files,
                ..Inner::default()
            }),
        }
    }

    /// Whether any admin token is configured (else mutations are loopback-only).
    pub fn has_admin_tokens(&self) -> bool {
        self.inner.tokens.iter().any(|t| t.role == Role::Admin)
    }

    /// Whether reads need a token (some viewer token is configured).
    pub fn reads_closed(&self) -> bool {
        self.inner.tokens.iter().any(|t| t.role == Role::Viewer)
    }

    fn refuse(&self, why: Refusal, message: String) -> ApiError {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.inner.refusals[i].fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            reason = why.reason(),
            error = %message,
            "REST request refused."
        );
        match why {
            Refusal::MissingToken | Refusal::InvalidToken => ApiError::Unauthorized(message),
            _ => ApiError::Forbidden(message),
        }
    }

    /// The token `headers` carry (`Ok(None)` without an `Authorization` header); refusals
    /// are counted.
    fn bearer(&self, headers: &HeaderMap) -> Result<Option<&ApiToken>, ApiError> {
        self.lookup(headers)
            .map_err(|message| self.refuse(Refusal::InvalidToken, message))
    }

    /// Like [`Self::bearer`], without counting; the error is the refusal's message.
    fn lookup(&self, headers: &HeaderMap) -> Result<Option<&ApiToken>, String> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(given) = given else {
            return Err("Authorization: expected `Bearer <token>`".to_string());
        };
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Compare with every token so the time taken does not say which one matched.
        let mut found = None;
        for t in &self.inner.tokens {
            if constant_time_eq(&t.digest, &digest) {
                found = Some(t);
            }
        }
        found.map(Some).ok_or_else(|| {
            "Authorization: the bearer token matches no configured token".to_string()
        })
    }

    /// Checks a read: open unless viewer tokens are configured, then any valid token.
    pub fn check_read(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        if !self.reads_closed() {
            return Ok(None);
        }
        match self.bearer(headers)? {
            Some(t) => Ok(Some(Principal {
                name: t.name.clone(),
                role: t.role,
            })),
            None => Err(self.refuse(
                Refusal::MissingToken,
                "reads need a token (viewer tokens are configured): send Authorization: Bearer <token from --viewer-token-file or --admin-token-file>".to_string(),
            )),
        }
    }

    /// Checks a mutation from `peer` (None = unknown, never trusted as loopback).
    pub fn check_admin(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            if !self.origin_trusted(origin, headers) {
                return Err(self.refuse(
                    Refusal::ForeignOrigin,
                    format!(
                        "Origin {origin:?} may not change anything: only this server's own origin and those listed in --cors-origins may"
                    ),
                ));
            }
        }
        if !self.has_admin_tokens() {
            // Only viewer tokens exist: one of them never grants a change, even from loopback.
            if let Ok(Some(t)) = self.lookup(headers) {
                return Err(self.refuse(
                    Refusal::NotAdmin,
                    format!(
                        "the token {:?} has the viewer role; changes need the admin role",
                        t.name
                    ),
                ));
            }
            if is_loopback(peer) {
                if let Some(host) = foreign_host(headers) {
                    return Err(self.refuse(
                        Refusal::ForeignHost,
                        format!(
                            "no admin token is configured, so changes are accepted from loopback only, addressed to a loopback host (localhost, 127.0.0.1, [::1]); Host {host:?} is not a loopback name (as with a DNS name rebound to loopback): use a loopback address or --admin-token-file"
                        ),
                    ));
                }
                return Ok(Principal {
                    name: LOOPBACK_PRINCIPAL.to_string(),
                    role: Role::Admin,
                });
            }
            return Err(self.refuse(
                Refusal::NotLoopback,
                format!(
                    "no admin token is configured, so changes are accepted from loopback only (peer {}); start the collector with --admin-token-file=NAME=PATH and send Authorization: Bearer <token>",
                    peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string())
                ),
            ));
        }
        match self.bearer(headers)? {
            Some(t) if t.role == Role::Admin => Ok(Principal {
                name: t.name.clone(),
                role: Role::Admin,
            }),
            Some(t) => Err(self.refuse(
                Refusal::NotAdmin,
                format!(
                    "the token {:?} has the viewer role; changes need the admin role",
                    t.name
                ),
            )),
            None => Err(self.refuse(
                Refusal::MissingToken,
                "changes need the admin role: send Authorization: Bearer <token from --admin-token-file>".to_string(),
            )),
        }
    }

    fn origin_trusted(&self, origin: &str, headers: &HeaderMap) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.inner.trusted_origins.contains(&origin) {
            return true;
        }
        // Same origin: the browser's page was served by this collector.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        host.is_some_and(|h| {
            origin.strip_prefix("http://") == Some(h.as_str())
                || origin.strip_prefix("https://") == Some(h.as_str())
        })
    }

    /// The counter of failed TLS handshakes, for [`super::tls::TlsListener`].
    pub fn tls_handshake_failures(&self) -> Arc<AtomicU64> {
        self.inner.tls_handshake_failures.clone()
    }

    /// Counts a refused silence: `limit` (too many active) or `invalid` (bad body).
    pub fn silence_refused(&self, limit: bool) {
        if limit {
            self.inner
                .silence_refusals_limit
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner
                .silence_refusals_invalid
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The refusals and the token files' permissions.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        for (r, n) in Refusal::ALL.iter().zip(&self.inner.refusals) {
            out.counter(
                "etcdmon_api_auth_refusals_total",
                "REST requests refused by the access policy, by reason.",
                &[("reason", r.reason())],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        out.gauge(
            "etcdmon_api_token_files_insecure",
            "Token files (--admin-token-file, --viewer-token-file) readable by group or others.",
            &[],
            self.inner.insecure_token_files as f64,
        );
        for (reason, n) in [
            ("limit", &self.inner.silence_refusals_limit),
            ("invalid", &self.inner.silence_refusals_invalid),
        ] {
            out.counter(
                "etcdmon_silences_refused_total",
                "Silences refused, by reason (limit: --max-silences reached; invalid: bad body).",
                &[("reason", reason)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        out.counter(
            "etcdmon_api_tls_handshake_failures_total",
            "REST TLS handshakes that failed or timed out.",
            &[],
            self.inner.tls_handshake_failures.load(Ordering::Relaxed) as f64,
        );
    }
}

/// The admin role, as a handler argument: every mutating route takes one, and the principal's
/// name is what the change records as `created_by`.
#[derive(Debug, Clone)]
pub struct RequireAdmin(pub Principal);

impl FromRequestParts<AppState> for RequireAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        state.access.check_admin(&parts.headers, peer).map(Self)
    }
}

/// Middleware of the read routes: refuses without a valid token when reads are closed.
pub async fn require_viewer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.access.check_read(req.headers()) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn without_admin_tokens_only_loopback_mutates() {
        let access = Access::new(vec![], &[], 0);
        let p = access
            .check_admin(&headers(&[]), peer("127.0.0.1"))
            .unwrap();
        assert_eq!(p.name, LOOPBACK_PRINCIPAL);
        assert!(access.check_admin(&headers(&[]), peer("::1")).is_ok());
        let err = access
            .check_admin(&headers(&[]), peer("10.1.2.3"))
            .unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("--admin-token-file"), "{err}");
        assert!(access.check_admin(&headers(&[]), None).is_err());
        assert!(access.check_read(&headers(&[])).is_ok());
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "localhost",
        ] {
            let h = headers(&[("host", host)]);
            assert!(access.check_admin(&h, peer("127.0.0.1")).is_ok(), "{host}");
        }
    }

    #[test]
    fn without_admin_tokens_a_rebound_dns_name_is_refused() {
        let access = Access::new(vec![], &[], 0);
        // A page on evil.example rebound to 127.0.0.1: same-origin, loopback peer, foreign Host.
        let h = headers(&[
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ]);
        let err = access.check_admin(&h, peer("127.0.0.1")).unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("evil.example"), "{err}");
        let mut page = crate::model::exposition::Exposition::new();
        access.render(&mut page);
        assert!(
            page.encode()
                .contains("etcdmon_api_auth_refusals_total{reason=\"foreign_host\"} 1"),
            "{}",
            page.encode()
        );
    }

    fn policy() -> Access {
        Access::new(
            vec![
                ApiToken::new("ops", Role::Admin, "a-secret"),
                ApiToken::new("grafana", Role::Viewer, "v-secret"),
            ],
            &["https://ui.example".to_string(), "*".to_string()],
            1,
        )
    }

    #[test]
    fn tokens_roles_and_reasons() {
        let access = policy();
        let lo = peer("127.0.0.1");
        let p = access
            .check_admin(&headers(&[("authorization", "Bearer a-secret")]), lo)
            .unwrap();
        assert_eq!(p.name, "ops");
        for (h, status, reason) in [
            (vec![], 401, "missing_token"),
            (vec![("authorization", "Bearer nope")], 401, "invalid_token"),
            (vec![("authorization", "Basic eDp5")], 401, "invalid_token"),
            (vec![("authorization", "Bearer v-secret")], 403, "not_admin"),
            (
                vec![
                    ("authorization", "Bearer a-secret"),
                    ("origin", "https://evil.example"),
                ],
                403,
                "foreign_origin",
            ),
        ] {
            let access = policy();
            let err = access.check_admin(&headers(&h), lo).unwrap_err();
            assert_eq!(err.status(), status, "{h:?}: {err}");
            let mut page = crate::model::exposition::Exposition::new();
            access.render(&mut page);
            let text = page.encode();
            assert!(
                text.contains(&format!(
                    "etcdmon_api_auth_refusals_total{{reason=\"{reason}\"}} 1"
                )),
                "{text}"
            );
        }
        // Listed and same origins may mutate; the wildcard trusts nobody.
        assert!(
            access
                .check_admin(
                    &headers(&[
                        ("authorization", "Bearer a-secret"),
                        ("origin", "https://ui.example")
                    ]),
                    lo
                )
                .is_ok()
        );
        assert!(
            access
                .check_admin(
                    &headers(&[
                        ("authorization", "Bearer a-secret"),
                        ("origin", "http://10.0.0.1:8080"),
                        ("host", "10.0.0.1:8080")
                    ]),
                    lo
                )
                .is_ok()
        );
        // Reads are closed because a viewer token exists; both roles read.
        assert_eq!(access.check_read(&headers(&[])).unwrap_err().status(), 401);
        assert!(
            access
                .check_read(&headers(&[("authorization", "Bearer v-secret")]))
                .is_ok()
        );
        assert!(
            access
                .check_read(&headers(&[("authorization", "bearer a-secret")]))
                .is_ok()
        );
        let mut page = crate::model::exposition::Exposition::new();
        access.render(&mut page);
        let text = page.encode();
        assert!(
            text.contains("etcdmon_api_token_files_insecure 1"),
            "{text}"
        );
        assert!(!format!("{access:?}").contains("secret\""), "{access:?}");
    }
}
