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

/// Matchers a silence may have at most.
pub const MAX_MATCHERS: usize = 32;
/// Longest label name in a matcher, bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label value in a matcher, bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Longest comment, bytes.
pub const MAX_COMMENT_LEN: usize = 4096;

/// Bounds on silences (`--silence-max-duration`, `--max-silences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceLimits {
    /// Longest a silence may last.
    pub max_duration: std::time::Duration,
    /// Most silences active (not yet ended) at once.
    pub max_active: usize,
}

/// Default `--silence-max-duration`: 7 days.
pub const DEFAULT_MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// Default `--max-silences`.
pub const DEFAULT_MAX_ACTIVE: usize = 1000;

impl Default for SilenceLimits {
    fn default() -> Self {
        Self {
            max_duration: DEFAULT_MAX_DURATION,
            max_active: DEFAULT_MAX_ACTIVE,
        }
    }
}

/// Whether `name` is a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Body of `POST /api/v1/alerts/silences`. Who creates it is not part of the body: the
/// collector records the name of the token that authorised the request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Labels to match, all with equality (1 to 32; names are Prometheus label names of at
    /// most 128 bytes, values 1 to 1024 bytes), e.g.
    /// `{"alertname": "MemberUnavailable", "member": "m1"}`.
    pub matchers: BTreeMap<String, String>,
    /// How long (`30m`, `2h`; at most `--silence-max-duration`, default 7 days); or give
    /// `ends_at_ms`.
    #[serde(default)]
    pub duration: Option<String>,
    /// End (Unix ms), in the future and at most `--silence-max-duration` from now; or give
    /// `duration`.
    #[serde(default, deserialize_with = "integral_ms")]
    pub ends_at_ms: Option<u64>,
    /// Why (at most 4096 bytes).
    #[serde(default)]
    pub comment: Option<String>,
}

/// An optional Unix-ms time: an integer, or a number with no fractional part (JSON Schema
/// calls `1.0` an integer too); negative or fractional values are refused.
fn integral_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(v) = n.as_u64() {
        return Ok(Some(v));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "{n} is not a non-negative integer (Unix ms)"
        ))),
    }
}

impl NewSilence {
    /// Checks the body against `limits`; errors name the field. `created_by` is the name of
    /// the principal that asked.
    pub fn validate(
        self,
        id: String,
        now: u64,
        created_by: &str,
        limits: &SilenceLimits,
    ) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err("matchers: at least one label is required".to_string());
        }
        if self.matchers.len() > MAX_MATCHERS {
            return Err(format!(
                "matchers: {} labels; at most {MAX_MATCHERS}",
                self.matchers.len()
            ));
        }
        for (k, v) in &self.matchers {
            if k.len() > MAX_NAME_LEN || !is_label_name(k) {
                return Err(format!(
                    "matchers: {:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_NAME_LEN} bytes)",
                    k.chars().take(64).collect::<String>()
                ));
            }
            if v.is_empty() || v.len() > MAX_VALUE_LEN {
                return Err(format!(
                    "matchers: {k:?}: the value must be 1 to {MAX_VALUE_LEN} bytes"
                ));
            }
        }
        let max_ms = u64::try_from(limits.max_duration.as_millis()).unwrap_or(u64::MAX);
        let max_text = humantime::format_duration(limits.max_duration);
        let ends_at_ms = match (&self.duration, self.ends_at_ms) {
            (Some(_), Some(_)) => {
                return Err("duration: give either duration or ends_at_ms".to_string());
            }
            (Some(d), None) => {
                let d =
                    crate::model::time::parse_duration(d).map_err(|e| format!("duration: {e}"))?;
                if d > limits.max_duration {
                    return Err(format!(
                        "duration: {} is longer than --silence-max-duration ({max_text})",
                        humantime::format_duration(d)
                    ));
                }
                now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            (None, Some(end)) if end <= now => {
                return Err(format!("ends_at_ms: {end} is not in the future"));
            }
            (None, Some(end)) if end - now > max_ms => {
                return Err(format!(
                    "ends_at_ms: {end} is more than --silence-max-duration ({max_text}) from now"
                ));
            }
            (None, Some(end)) => end,
            (None, None) => return Err("duration: required (or ends_at_ms)".to_string()),
        };
        let comment = self.comment.unwrap_or_default();
        if comment.len() > MAX_COMMENT_LEN {
            return Err(format!("comment: at most {MAX_COMMENT_LEN} bytes"));
        }
        Ok(Silence {
            id,
            matchers: self.matchers,
            starts_at_ms: now,
            ends_at_ms,
            created_by: created_by.to_string(),
            comment,
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
    use crate::analysis::alerting::lifecycle::AlertState;

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
            comment: None,
        }
    }

    #[test]
    fn matching_and_expiry() {
        let s = new(&[("member", "m1")], Some("1m"))
            .validate("s1".into(), 1_000, "ops", &SilenceLimits::default())
            .unwrap();
        assert_eq!(s.ends_at_ms, 61_000);
        assert_eq!(s.created_by, "ops");
        let silences = vec![s];
        assert!(muting(&silences, &alert(), 2_000).is_some());
        assert!(muting(&silences, &alert(), 61_000).is_none());
        let other = new(&[("member", "m2")], Some("1m"))
            .validate("s2".into(), 1_000, "ops", &SilenceLimits::default())
            .unwrap();
        assert!(muting(&[other], &alert(), 2_000).is_none());
    }

    #[test]
    fn ends_at_ms_may_be_written_as_a_float_with_no_fraction() {
        let body: NewSilence =
            serde_json::from_str(r#"{"matchers": {"a": "b"}, "ends_at_ms": 1796129252207.0}"#)
                .unwrap();
        assert_eq!(body.ends_at_ms, Some(1_796_129_252_207));
        for bad in ["1.5", "-1", "\"soon\""] {
            let err = serde_json::from_str::<NewSilence>(&format!(
                r#"{{"matchers": {{"a": "b"}}, "ends_at_ms": {bad}}}"#
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("non-negative integer") || err.contains("invalid type"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn too_many_matchers_and_the_body_never_names_the_creator() {
        let many: Vec<(String, String)> = (0..33).map(|i| (format!("l{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let err = new(&refs, Some("1m"))
            .validate("x".into(), 0, "ops", &SilenceLimits::default())
            .unwrap_err();
        assert!(err.starts_with("matchers"), "{err}");
        let err = serde_json::from_str::<NewSilence>(
            r#"{"matchers": {"a": "b"}, "duration": "1m", "created_by": "mallory"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("created_by"), "{err}");
    }

    #[test]
    fn invalid_bodies_name_the_field() {
        for (body, field) in [
            (new(&[], Some("1m")), "matchers"),
            (new(&[("member", "")], Some("1m")), "matchers"),
            (new(&[("member", "m1")], None), "duration"),
            (new(&[("member", "m1")], Some("soon")), "duration"),
            (new(&[("member", "m1")], Some("8d")), "duration"),
            (new(&[("", "m1")], Some("1m")), "matchers"),
            (new(&[("1member", "m1")], Some("1m")), "matchers"),
            (new(&[("mem-ber", "m1")], Some("1m")), "matchers"),
            (
                new(&[("member", &"x".repeat(1025))], Some("1m")),
                "matchers",
            ),
            (
                NewSilence {
                    ends_at_ms: Some(u64::MAX),
                    ..new(&[("member", "m1")], None)
                },
                "ends_at_ms",
            ),
            (
                NewSilence {
                    ends_at_ms: Some(1_000),
                    ..new(&[("member", "m1")], None)
                },
                "ends_at_ms",
            ),
            (
                NewSilence {
                    comment: Some("c".repeat(4097)),
                    ..new(&[("member", "m1")], Some("1m"))
                },
                "comment",
            ),
        ] {
            let err = body
                .validate("x".into(), 1_000_000, "ops", &SilenceLimits::default())
                .unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
    }
}
