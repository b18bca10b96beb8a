//! PagerDuty Events API v2: `trigger` when firing, `resolve` when resolved, with the alert's
//! fingerprint as `dedup_key` so both reach the same incident.

use serde_json::json;

use super::{rfc3339, title};
use crate::{analysis::alerting::lifecycle::Alert, analysis::alerting::lifecycle::AlertState};

/// The event body.
pub fn payload(alert: &Alert, routing_key: &str) -> serde_json::Value {
    if alert.state == AlertState::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert.key,
        });
    }
    let severity = match alert.severity.as_str() {
        "critical" => "critical",
        "warning" => "warning",
        _ => "info",
    };
    let source = match &alert.member {
        Some(m) => format!("{}/{m}", alert.cluster),
        None => alert.cluster.clone(),
    };
    let summary = format!(
        "{} — {}",
        title(alert),
        alert
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_default()
    );
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.key,
        "client": "etcd-monitor",
        "payload": {
            "summary": summary.chars().take(1024).collect::<String>(),
            "source": source,
            "severity": severity,
            "timestamp": rfc3339(alert.fired_at_ms.unwrap_or(alert.active_since_ms)),
            "component": "etcd",
            "group": alert.cluster,
            "class": alert.name,
            "custom_details": {
                "labels": alert.labels,
                "annotations": alert.annotations,
                "value": alert.value,
            },
        },
    });
    if let Some(url) = alert.annotations.get("runbook_url") {
        body["links"] = json!([{"href": url, "text": "Runbook"}]);
    }
    body
}
