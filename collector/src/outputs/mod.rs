//! Layer 4: what the collector shows and sends — REST ([`api`]), Prometheus /metrics
//! ([`exporter`]), notifications ([`notify`]), the status page ([`ui`]) and the performance
//! report's renderers ([`report`]).

pub mod api;
pub mod exporter;
pub mod notify;
pub mod report;
pub mod ui;
