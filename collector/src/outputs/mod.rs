//! Layer 4: what the collector shows and sends — REST ([`api`]), Prometheus /metrics
//! ([`exporter`]), notifications ([`notify`]), the status page ([`ui`]) and the MCP server for
//! AI assistants ([`mcp`]).

pub mod api;
pub mod exporter;
pub mod mcp;
pub mod notify;
pub mod ui;
