//! etcd-monitor, the collector: watches etcd clusters through the v3 API (each member asked
//! directly) and their Prometheus endpoints, keeps per-member state and history, and serves it
//! as REST, Prometheus metrics and an OpenAPI document.
//!
//! Module map: [`config`] (flags, env, YAML) → [`app`] (wiring) → per cluster
//! [`cluster::health`] (Status, MemberList, AlarmList, [`probe`]s) and [`scrape`] (member
//! /metrics) write [`cluster::ClusterState`]; [`api`] and [`exporter`] read it; [`store`] keeps
//! history; [`telemetry`] counts the collector's own failures; [`alerting`] evaluates the
//! rules over that state and [`notify`] delivers the alerts.

pub mod alerting;
pub mod api;
pub mod app;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod diagnosis;
pub mod exporter;
pub mod ingest;
pub mod model;
pub mod notify;
pub mod probe;
pub mod scrape;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod window;

#[cfg(test)]
mod histogram_agreement;
