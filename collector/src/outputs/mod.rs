//! Layer 4: what the collector shows and sends — REST ([`api`]), Prometheus /metrics
//! ([`exporter`]), notifications ([`notify`]) and the status page ([`ui`]).

pub mod api;
pub mod exporter;
pub mod notify;
pub mod ui;
