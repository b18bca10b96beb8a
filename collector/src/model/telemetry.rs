//! The collector's own health: every internal event is a method that both logs and bumps a
//! self-metric (scrape errors, probe failures, unreachable endpoints, loop durations, store
//! errors).

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Self-metrics, registered in their own registry and exported on /metrics.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The registry the metrics live in.
    pub registry: Registry,
    scrape_errors: IntCounterVec,
    probe_failures: IntCounterVec,
    status_errors: IntCounterVec,
    loop_duration: HistogramVec,
    store_errors: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    if let Err(e) = registry.register(Box::new(c.clone())) {
        panic!("metric {name} registered twice: {e}");
    }
    c
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Creates and registers every self-metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let scrape_errors = counter(
            &registry,
            "etcdmon_collector_scrape_errors_total",
            "Failed scrapes of a member's Prometheus endpoint.",
            &["cluster", "member"],
        );
        let probe_failures = counter(
            &registry,
            "etcdmon_collector_probe_failures_total",
            "Failed read or write probes against a member.",
            &["cluster", "member", "probe"],
        );
        let status_errors = counter(
            &registry,
            "etcdmon_collector_status_errors_total",
            "Status requests to an endpoint that failed or timed out.",
            &["cluster", "endpoint"],
        );
        let store_errors = counter(
            &registry,
            "etcdmon_collector_store_errors_total",
            "Failed writes or maintenance of the history store.",
            &["operation"],
        );
        let loop_duration = HistogramVec::new(
            HistogramOpts::new(
                "etcdmon_collector_loop_duration_seconds",
                "Duration of one round of a collector loop.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["cluster", "loop"],
        )
        .unwrap_or_else(|e| panic!("loop duration metric is malformed: {e}"));
        if let Err(e) = registry.register(Box::new(loop_duration.clone())) {
            panic!("loop duration metric registered twice: {e}");
        }
        Self {
            registry,
            scrape_errors,
            probe_failures,
            status_errors,
            loop_duration,
            store_errors,
        }
    }

    /// A member's /metrics could not be scraped.
    pub fn scrape_failed(&self, cluster: &str, member: &str, error: &str) {
        tracing::debug!(cluster, member, %error, "Scrape of member metrics failed.");
        self.scrape_errors
            .with_label_values(&[cluster, member])
            .inc();
    }

    /// A probe failed.
    pub fn probe_failed(&self, cluster: &str, member: &str, probe: &str, error: &str) {
        tracing::debug!(cluster, member, probe, %error, "Probe failed.");
        self.probe_failures
            .with_label_values(&[cluster, member, probe])
            .inc();
    }

    /// Status to an endpoint failed.
    pub fn status_failed(&self, cluster: &str, endpoint: &str, error: &str) {
        tracing::debug!(cluster, endpoint, %error, "Status request failed.");
        self.status_errors
            .with_label_values(&[cluster, endpoint])
            .inc();
    }

    /// The history store failed.
    pub fn store_failed(&self, operation: &str, error: &str) {
        tracing::warn!(operation, %error, "History store operation failed.");
        self.store_errors.with_label_values(&[operation]).inc();
    }

    /// One loop round took `took`.
    pub fn loop_round(&self, cluster: &str, name: &str, took: Duration) {
        self.loop_duration
            .with_label_values(&[cluster, name])
            .observe(took.as_secs_f64());
    }
}
