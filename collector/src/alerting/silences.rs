//! Silences: label matchers with an end time; a silenced alert is still evaluated, shown and
//! recorded, but not sent to any channel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::lifecycle::Alert;

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    /// Id.
    pub id: String,
    /// Labels an alert must all have, with these values (`alertname`, `cluster`, `member`,
    /// `severity`, rule labels).
    pub matchers: BTreeMap<String, String>,
    /// Start (Unix ms).
    pub starts_at_ms: u64,
    /// End (Unix ms).
    pub ends_at_ms: u64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether it is in effect at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.starts_at_ms <= now && now < self.ends_at_ms
    }

    /// Whether it mutes `alert`.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.matchers
            .iter()
            .all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

/// Body of `POST /api/v1/alerts/silences`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Labels to match (at least one), e.g. `{"alertname": "MemberUnavailable", "member": "m1"}`.
    pub matchers: BTreeMap<String, String>,
    /// How long (`30m`, `2h`); or give `ends_at_ms`.
    #[serde(default)]
    pub duration: Option<String>,
    /// End (Unix ms); or give `duration`.
    #[serde(default)]
    pub ends_at_ms: Option<u64>,
    /// Who creates it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Why.
    #[serde(default)]
    pub comment: Option<String>,
}

impl NewSilence {
    /// Checks the body; errors name the field.
    pub fn validate(self, id: String, now: u64) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err("matchers: at least one label is required".to_string());
        }
        for (k, v) in &self.matchers {
            if k.trim().is_empty() || v.is_empty() {
                return Err(format!(
                    "matchers: {k:?}: names and values must not be empty"
                ));
            }
        }
        let ends_at_ms = match (&self.duration, self.ends_at_ms) {
            (Some(_), Some(_)) => {
                return Err("duration: give either duration or ends_at_ms".to_string());
            }
            (Some(d), None) => {
                let d = crate::config::parse_duration(d).map_err(|e| format!("duration: {e}"))?;
                now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            (None, Some(end)) if end > now => end,
            (None, Some(end)) => {
                return Err(format!("ends_at_ms: {end} is not in the future"));
            }
            (None, None) => return Err("duration: required (or ends_at_ms)".to_string()),
        };
        Ok(Silence {
            id,
            matchers: self.matchers,
            starts_at_ms: now,
            ends_at_ms,
            created_by: self.created_by.unwrap_or_default(),
            comment: self.comment.unwrap_or_default(),
        })
    }
}

/// The silence that mutes `alert` at `now`, if any.
pub fn muting<'a>(silences: &'a [Silence], alert: &Alert, now: u64) -> Option<&'a Silence> {
    silences.iter().find(|s| s.active(now) && s.matches(alert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::lifecycle::AlertState;

    fn alert() -> Alert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "MemberUnavailable".to_string());
        labels.insert("member".to_string(), "m1".to_string());
        Alert {
            key: "k".into(),
            name: "MemberUnavailable".into(),
            severity: "critical".into(),
            cluster: "default".into(),
            member: Some("m1".into()),
            labels,
            annotations: BTreeMap::new(),
            state: AlertState::Firing,
            value: 0.0,
            active_since_ms: 0,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_eval_ms: 0,
            silenced_by: None,
        }
    }

    fn new(matchers: &[(&str, &str)], duration: Option<&str>) -> NewSilence {
        NewSilence {
            matchers: matchers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            duration: duration.map(str::to_string),
            ends_at_ms: None,
            created_by: None,
            comment: None,
        }
    }

    #[test]
    fn matching_and_expiry() {
        let s = new(&[("member", "m1")], Some("1m"))
            .validate("s1".into(), 1_000)
            .unwrap();
        assert_eq!(s.ends_at_ms, 61_000);
        let silences = vec![s];
        assert!(muting(&silences, &alert(), 2_000).is_some());
        assert!(muting(&silences, &alert(), 61_000).is_none());
        let other = new(&[("member", "m2")], Some("1m"))
            .validate("s2".into(), 1_000)
            .unwrap();
        assert!(muting(&[other], &alert(), 2_000).is_none());
    }

    #[test]
    fn invalid_bodies_name_the_field() {
        for (body, field) in [
            (new(&[], Some("1m")), "matchers"),
            (new(&[("member", "")], Some("1m")), "matchers"),
            (new(&[("member", "m1")], None), "duration"),
            (new(&[("member", "m1")], Some("soon")), "duration"),
        ] {
            let err = body.validate("x".into(), 0).unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
    }
}
