//! `etcdmon_diagnosis{cluster,member,cause}`: 1 for each member's current cause, 0 for the
//! others, so `etcdmon_diagnosis{cause="disk_slow"} == 1` selects the members to act on.

use std::fmt::Write as _;

use super::{CAUSES, Diagnoses};

/// Prometheus text of every member's verdict.
pub fn render(diagnoses: &Diagnoses) -> String {
    let all = diagnoses.all();
    let mut out = String::new();
    if all.is_empty() {
        return out;
    }
    out.push_str(
        "# HELP etcdmon_diagnosis Why a member is slow: 1 for its current diagnosis cause, 0 for the others.\n# TYPE etcdmon_diagnosis gauge\n",
    );
    for d in &all {
        for cause in CAUSES {
            let _ = writeln!(
                out,
                "etcdmon_diagnosis{{cause=\"{cause}\",cluster=\"{}\",member=\"{}\"}} {}",
                escape(&d.cluster),
                escape(&d.member),
                u8::from(d.verdict.cause == cause)
            );
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnosis::{MemberDiagnosis, Verdict, engine::Evidence};

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
                reason: None,
                neighbor: None,
                peer: None,
                missing: vec![],
                summary: String::new(),
                evidence: Evidence::default(),
            },
        });
        let text = render(&store);
        assert!(
            text.contains(
                "etcdmon_diagnosis{cause=\"disk_slow\",cluster=\"c\",member=\"m\\\"0\"} 1"
            )
        );
        assert_eq!(text.lines().filter(|l| l.ends_with(" 0")).count(), 5);
    }
}
