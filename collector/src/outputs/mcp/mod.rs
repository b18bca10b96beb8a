//! The MCP server (Model Context Protocol, the official Rust SDK `rmcp`): lets an AI assistant
//! ask a collector about its clusters — status, members, diagnosis, alerts, history — read the
//! runbooks, and, with the admin token, start a benchmark.
//!
//! Two transports, one server ([`McpServer`]):
//! - **Streamable HTTP at `/mcp`** on the REST port ([`http_service`]): stateless (no session
//!   is kept between requests, so nothing grows with clients), JSON answers. Tools call the
//!   collector's own REST router in memory with the caller's token and peer address.
//! - **stdio** (`etcd-monitor mcp --url … --token-file …`, [`serve_stdio`]): a thin client of a
//!   running collector's REST API, so an assistant on a laptop can attach to an in-cluster
//!   collector through a port-forward.
//!
//! Either way every answer comes from the REST API ([`backend`]): access (viewer tokens for
//! reads when configured; the admin role for admin tools, or loopback when no admin token
//! exists), its refusal counters and its bounds are REST's; this module adds bounds of its own
//! on tool arguments and answer sizes, counted in `etcdmon_mcp_tool_calls_total` ([`metrics`]).

pub mod backend;
pub mod flags;
pub mod metrics;
pub mod resources;
pub mod tools;

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, ListResourcesResult,
        PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
        ReadResourceResult, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    tool_handler,
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::never::NeverSessionManager,
    },
};

use backend::Backend;
use metrics::{Outcome, OutcomeSlot, record};

/// Largest MCP message accepted, bytes: an HTTP request body at `/mcp`, a line on stdio. Tool
/// arguments are a few short strings and numbers.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

const INSTRUCTIONS: &str = "etcd-monitor watches etcd clusters from the client side (v3 API, /metrics) and, with its agent, the kernel side (eBPF). Call list_clusters first; cluster_status and alerts tell what is wrong now, diagnosis why a member is slow, metrics_history how it got there. Each alert has a runbook resource (etcd-monitor://runbooks/<alert>). run_benchmark needs the admin token.";

/// The MCP server: the tools of [`tools`] over a [`Backend`], and the runbooks.
#[derive(Clone, Debug)]
pub struct McpServer {
    backend: Backend,
    tools: ToolRouter<Self>,
}

impl McpServer {
    /// A server whose tools answer through `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            tools: Self::read_tools() + Self::admin_tools(),
        }
    }
}

#[tool_handler(router = self.tools)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "etcd-monitor",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = metrics::tool_label(&request.name);
        let known = self.tools.has_route(&request.name);
        let slot = OutcomeSlot::default();
        context.extensions.insert(slot.clone());
        let result = self
            .tools
            .call(ToolCallContext::new(self, request, context))
            .await;
        let outcome = match &result {
            Err(_) if !known => Outcome::UnknownTool,
            // Arguments that do not deserialise into the tool's type: the SDK answers before the
            // tool runs, so the tool left no outcome.
            Err(_) => Outcome::InvalidArguments,
            Ok(_) => slot.get().unwrap_or(Outcome::InvalidArguments),
        };
        record(tool, outcome);
        if outcome != Outcome::Ok {
            let error = match &result {
                Err(e) => e.message.to_string(),
                Ok(CallToolResponse::Complete(r)) => r
                    .content
                    .first()
                    .and_then(|c| c.as_text())
                    .map_or_else(String::new, |t| t.text.clone()),
                Ok(_) => String::new(),
            };
            tracing::info!(tool, outcome = outcome.label(), %error, "MCP tool call failed.");
        }
        result
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.chars().take(512).collect::<String>();
        match resources::read(&request.uri) {
            Some(contents) => Ok(ReadResourceResult::new(vec![contents]).into()),
            None => Err(ErrorData::resource_not_found(
                format!("no resource {uri:?}: resources/list names the runbooks"),
                None,
            )),
        }
    }
}

/// The `/mcp` service: streamable HTTP, stateless, JSON answers, bodies bounded by
/// [`MAX_MESSAGE_BYTES`]. `rest` is the REST router the tools call in memory. Any `Host` is
/// accepted (the collector is reached by service names and port-forwards; DNS rebinding gains
/// nothing without a token, and admin tools from a browser are refused by REST's `Origin`
/// check).
pub fn http_service(rest: axum::Router) -> StreamableHttpService<McpServer, NeverSessionManager> {
    let server = McpServer::new(Backend::InProcess(rest));
    StreamableHttpService::new(
        move || Ok(server.clone()),
        std::sync::Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .disable_allowed_hosts()
            .with_max_request_body_bytes(MAX_MESSAGE_BYTES),
    )
}

/// The `/mcp` route for any router state: [`http_service`] with its refusals counted
/// (`etcdmon_mcp_requests_refused_total`). The caller adds its access guard as a route layer.
pub fn routes<S: Clone + Send + Sync + 'static>(rest: axum::Router) -> axum::Router<S> {
    axum::Router::new()
        .route_service("/mcp", http_service(rest))
        .layer(axum::middleware::map_response(
            |response: axum::response::Response| async move {
                metrics::record_response(response.status().as_u16());
                response
            },
        ))
}

/// Why serving over stdio stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// The client's `initialize` failed or stdin closed before it.
    #[error("the MCP session did not start: {0}")]
    Start(#[from] Box<rmcp::service::ServerInitializeError>),
    /// The session's task panicked or was cancelled.
    #[error("the MCP session ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Serves `server` on this process's stdin/stdout until the client closes them; lines longer
/// than [`MAX_MESSAGE_BYTES`] are dropped by the transport.
pub async fn serve_stdio(server: McpServer) -> Result<(), StdioError> {
    use rmcp::ServiceExt;
    let (stdin, stdout) = rmcp::transport::stdio();
    let transport =
        rmcp::transport::async_rw::AsyncRwTransport::<RoleServer, _, _>::new(stdin, stdout)
            .with_max_line_length(MAX_MESSAGE_BYTES);
    let running = server.serve(transport).await.map_err(Box::new)?;
    let reason = running.waiting().await?;
    tracing::info!(reason = ?reason, "MCP session over stdio ended.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_labels_list_exactly_the_served_tools() {
        let server = McpServer::new(Backend::InProcess(axum::Router::new()));
        let mut served: Vec<String> = server
            .tools
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        served.sort();
        assert_eq!(served, metrics::TOOLS);
    }

    fn refused(reason: &str) -> f64 {
        let mut page = crate::model::exposition::Exposition::new();
        metrics::render(&mut page);
        let text = page.encode();
        let line = format!("etcdmon_mcp_requests_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    }

    #[tokio::test]
    async fn oversized_and_off_protocol_requests_are_refused_and_counted() {
        use tower::ServiceExt;
        let app: axum::Router = routes(axum::Router::new());
        let send = |req: http::Request<axum::body::Body>| app.clone().oneshot(req);
        let (big, protocol) = (refused("too_large"), refused("protocol"));
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        let resp = send(
            http::Request::post("/mcp")
                .header("host", "127.0.0.1:8080")
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refused("too_large") >= big + 1.0);
        let resp = send(
            http::Request::post("/mcp")
                .header("host", "127.0.0.1:8080")
                .header("content-type", "text/plain")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
        assert!(refused("protocol") >= protocol + 1.0);
    }
}
