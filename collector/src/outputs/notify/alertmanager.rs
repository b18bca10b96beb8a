//! Prometheus Alertmanager v2 API (`POST /api/v2/alerts`): a list of one postable alert with
//! its labels and annotations; `endsAt` is set when the alert resolved.

use serde_json::json;

use super::rfc3339;
use crate::analysis::alerting::lifecycle::Alert;

/// The request body.
pub fn payload(alert: &Alert) -> serde_json::Value {
    let mut a = json!({
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.fired_at_ms.unwrap_or(alert.active_since_ms)),
    });
    if let Some(end) = alert.resolved_at_ms {
        a["endsAt"] = json!(rfc3339(end));
    }
    json!([a])
}
