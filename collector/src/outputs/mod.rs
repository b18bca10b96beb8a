//! Layer 4: what the collector shows and sends — REST ([`api`]), Prometheus /metrics
//! ([`exporter`]), notifications ([`notify`]), the status page ([`ui`]), the MCP server for
//! AI assistants ([`mcp`]) and the performance report's renderers ([`report`]).

pub mod api;
pub mod exporter;
pub mod mcp;
pub mod notify;
pub mod report;
pub mod ui;
