//! `etcdmon_diagnosis{cluster,member,cause}`: 1 for each member's current cause, 0 for the
//! others, so `etcdmon_diagnosis{cause="disk_slow"} == 1` selects the members to act on.

use super::{CAUSES, Diagnoses};

/// Every member's verdict. Cluster and member names are escaped by the exposition.
pub fn render(diagnoses: &Diagnoses, out: &mut crate::model::exposition::Exposition) {
    for d in &diagnoses.all() {
        for cause in CAUSES {
            out.gauge(
                "etcdmon_diagnosis",
                "Why a member is slow: 1 for its current diagnosis cause, 0 for the others.",
                &[
                    ("cause", cause),
                    ("cluster", &d.cluster),
                    ("member", &d.member),
                ],
                f64::from(u8::from(d.verdict.cause == cause)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::diagnosis::MemberDiagnosis, analysis::diagnosis::Verdict,
        analysis::diagnosis::engine::Evidence,
    };

    #[test]
    fn one_cause_is_set_per_member() {
        let store = Diagnoses::default();
        store.put(MemberDiagnosis {
            cluster: "c".into(),
            member: "m\"0".into(),
            member_id: "1".into(),
            evaluated_at_ms: 1,
            cause_since_ms: 1,
            window_seconds: 1.0,
            verdict: Verdict {
                cause: "disk_slow".into(),
                evidence: Evidence::default(),
                ..Verdict::default()
            },
        });
        let mut page = crate::model::exposition::Exposition::new();
        render(&store, &mut page);
        let text = page.encode();
        assert!(
            text.contains(
                "etcdmon_diagnosis{cause=\"disk_slow\",cluster=\"c\",member=\"m\\\"0\"} 1"
            )
        );
        assert_eq!(
            text.lines().filter(|l| l.ends_with(" 0")).count(),
            CAUSES.len() - 1
        );
    }
}
