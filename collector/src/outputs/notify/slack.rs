//! Slack incoming webhook: `text` (required by Slack) plus one attachment with the colour of
//! the state, the description and the labels as fields.

use serde_json::json;

use super::title;
use crate::{analysis::alerting::lifecycle::Alert, analysis::alerting::lifecycle::AlertState};

/// The message body.
pub fn payload(alert: &Alert) -> serde_json::Value {
    let color = match (alert.state, alert.severity.as_str()) {
        (AlertState::Resolved, _) => "#2eb886",
        (_, "critical") => "#d00000",
        _ => "#daa038",
    };
    let summary = alert
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_default();
    let mut fields = vec![
        json!({"title": "Cluster", "value": alert.cluster, "short": true}),
        json!({"title": "Severity", "value": alert.severity, "short": true}),
    ];
    if let Some(m) = &alert.member {
        fields.push(json!({"title": "Member", "value": m, "short": true}));
    }
    let mut attachment = json!({
        "color": color,
        "title": alert.name,
        "text": alert.annotations.get("description").cloned().unwrap_or_default(),
        "fields": fields,
        "footer": "etcd-monitor",
        "ts": alert.fired_at_ms.unwrap_or(alert.active_since_ms) / 1000,
    });
    if let Some(url) = alert.annotations.get("runbook_url") {
        attachment["title_link"] = json!(url);
    }
    json!({
        "text": format!("{} — {summary}", title(alert)),
        "attachments": [attachment],
    })
}
