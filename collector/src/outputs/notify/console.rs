//! The console channel: one structured log line per notification.

use crate::{analysis::alerting::lifecycle::Alert, analysis::alerting::lifecycle::AlertState};

/// Logs `alert` (warn when firing, info when resolved) with its labels and annotations as
/// fields.
pub fn log(alert: &Alert) {
    let labels = serde_json::to_string(&alert.labels).unwrap_or_default();
    let summary = alert.annotations.get("summary").map_or("", String::as_str);
    let description = alert
        .annotations
        .get("description")
        .map_or("", String::as_str);
    match alert.state {
        AlertState::Firing | AlertState::Pending => tracing::warn!(
            target: "etcd_monitor::alert",
            alertname = %alert.name,
            severity = %alert.severity,
            state = alert.state.as_str(),
            cluster = %alert.cluster,
            member = alert.member.as_deref().unwrap_or(""),
            value = alert.value,
            %labels,
            %summary,
            %description,
            "Alert firing."
        ),
        AlertState::Resolved => tracing::info!(
            target: "etcd_monitor::alert",
            alertname = %alert.name,
            severity = %alert.severity,
            state = alert.state.as_str(),
            cluster = %alert.cluster,
            member = alert.member.as_deref().unwrap_or(""),
            value = alert.value,
            %labels,
            %summary,
            "Alert resolved."
        ),
    }
}
