//! etcd-monitor, the collector: watches etcd clusters through the v3 API (each member asked
//! directly) and their Prometheus endpoints, keeps per-member state and history, evaluates alert
//! rules and diagnoses, and serves it all as REST, Prometheus metrics, notifications and a
//! status page.
//!
//! The modules below are layers, listed lowest first: a file may use its own layer and the
//! layers before it, never a later one. `cargo xtask test` checks this order (`LAYERED` in
//! `xtask/src/checks.rs`) and fails on any import cycle.

// 0. Data and pure helpers: cluster state, series, config data, time, locks. No I/O.
pub mod model;

// 0. Leaf: the SQLite history; depends on `model` only.
pub mod store;

// 1. Reads the world: etcd client, health loop and probes, member /metrics, agent ingest.
pub mod sources;

// 2. Judges: signals, alert rules and lifecycle, diagnosis; hands alerts to a sink.
pub mod analysis;

// 3. Acts on etcd: benchmarks (and etcdctl parity).
pub mod ops;

// 4. Shows and sends: REST, the /metrics exporter, notifiers, the status page.
pub mod outputs;

// 5. Flags, env and YAML into one Config; the wiring that starts everything.
pub mod app;

#[cfg(test)]
mod histogram_agreement;
