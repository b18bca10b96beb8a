//! Helpers shared by the collector's end-to-end tests.

use std::{path::Path, process::Command, time::Duration};

use anyhow::Context;
use etcd_monitor_tests::{ClientTls, CollectorProcess, Member, http, wait_for};

/// The collector binary cargo built for these tests.
pub fn collector_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-monitor"))
}

/// Starts the collector with `args` (strings) and a data dir under `dir`.
pub fn start_collector(dir: &Path, args: &[&str]) -> anyhow::Result<CollectorProcess> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if !args.iter().any(|a| a.starts_with("--data-dir")) {
        all.push(format!("--data-dir={}", dir.join("data").display()));
    }
    CollectorProcess::start(collector_bin(), &all, dir)
}

/// `etcdctl endpoint status -w json` of one member: the ground truth.
pub fn endpoint_status(
    member: &Member,
    tls: Option<&ClientTls>,
) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", member.client_url))
        .args(tls.map(ClientTls::etcdctl_args).unwrap_or_default())
        .args(["--command-timeout=3s", "endpoint", "status", "-w", "json"])
        .output()
        .context("run etcdctl")?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl endpoint status {}: {}",
        member.client_url,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["Status"].clone())
}

/// A decimal id from etcdctl's JSON as the collector's hex form.
pub fn hex(v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(n) => format!("{n:x}"),
        None => format!("<not a u64: {v}>"),
    }
}

/// The collector member entry named `name` in a status/members JSON.
pub fn member_json<'a>(body: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    body["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name || m["member"] == name)
}

/// Waits until `check(status)` holds on `/api/v1/cluster/status`; the error shows the last body.
pub fn wait_status(
    collector: &CollectorProcess,
    what: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    let result = wait_for(what, timeout, || {
        let body = collector.status(None).ok()?;
        if check(&body) {
            Some(body)
        } else {
            last = body;
            None
        }
    });
    result.map_err(|e| {
        anyhow::anyhow!(
            "{e}\nlast status: {}\ncollector log tail:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            tail(&collector.log_text(), 30)
        )
    })
}

/// A Prometheus sample from the collector's /metrics.
pub fn metric(collector: &CollectorProcess, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    http::prom_sum(&collector.metrics().ok()?, name, labels)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub use etcd_monitor_tests::tls::make_tls;
