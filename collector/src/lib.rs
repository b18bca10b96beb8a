//! etcd-monitor, the collector: watches etcd clusters through the v3 API (each member asked
//! directly) and their Prometheus endpoints, keeps per-member state and history, evaluates alert
//! rules and diagnoses, and serves it all as REST, Prometheus metrics, notifications and a
//! status page.
//!
//! The modules are layers; each uses only the layers listed before it (checked by
//! `cargo xtask test`, which also fails on any import cycle).

pub mod analysis; // 2. signals, alert rules and lifecycle, diagnosis; hands alerts to a sink.
pub mod app;
pub mod model; // 0. data and pure helpers: cluster state, series, config data, time, locks; no I/O.
pub mod ops; // 3. acts on etcd: benchmarks (and etcdctl parity).
pub mod outputs; // 4. REST, /metrics exporter, notifiers, status page.
pub mod sources; // 1. reads the world: etcd client/health/probes, member /metrics, agent ingest.
pub mod store; // 0. leaf: SQLite history; depends on model only. // 5. flags/env/YAML into one Config, and the wiring that starts everything.

#[cfg(test)]
mod histogram_agreement;
