//! `etcdmon_diagnosis{cluster,member,cause}`: 1 for each member's current cause, 0 for the
//! others, so `etcdmon_diagnosis{cause="disk_slow"} == 1` selects the members to act on; and
//! the window figures behind `io_throttled` and `cpu_starved{pressure}`:
//! `etcdmon_member_cgroup_io_limit_ratio` and `etcdmon_member_pressure_share`.

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
        window_figures(d, out);
    }
}

/// The I/O cgroup's serviced rate over its limit and the PSI shares, over the member's window.
fn window_figures(d: &super::MemberDiagnosis, out: &mut crate::model::exposition::Exposition) {
    let ev = &d.verdict.evidence;
    if let Some(io) = &ev.cgroup_io
        && let (Some(ratio), Some(device), Some(kind)) = (
            io.limit_ratio,
            io.device.as_deref(),
            io.limit_kind.as_deref(),
        )
    {
        out.gauge(
            "etcdmon_member_cgroup_io_limit_ratio",
            "What the member's I/O cgroup got serviced on its data dir's device over the diagnosis window, as a share of its limit (blkio throttle or io.max), for the limit closest to being reached.",
            &[
                ("cgroup", &io.cgroup),
                ("cluster", &d.cluster),
                ("device", device),
                ("kind", kind),
                ("member", &d.member),
            ],
            ratio,
        );
    }
    let Some(source) = ev.pressure_source.as_deref() else {
        return;
    };
    for (resource, share) in [("io", ev.io_pressure_share), ("cpu", ev.cpu_pressure_share)] {
        if let Some(share) = share {
            out.gauge(
                "etcdmon_member_pressure_share",
                "Share of the diagnosis window in which some task was stalled (PSI some), by resource; source cgroup is the member's own cgroup, system the node's.",
                &[
                    ("cluster", &d.cluster),
                    ("member", &d.member),
                    ("resource", resource),
                    ("source", source),
                ],
                share,
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
                evidence: Evidence {
                    cgroup_io: Some(crate::analysis::diagnosis::engine::CgroupIoEvidence {
                        cgroup: "/slow".into(),
                        device: Some("7:3".into()),
                        limit_kind: Some("write_iops".into()),
                        limit_ratio: Some(0.95),
                        ..Default::default()
                    }),
                    pressure_source: Some("system".into()),
                    io_pressure_share: Some(0.5),
                    ..Evidence::default()
                },
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
        assert!(text.contains("etcdmon_member_cgroup_io_limit_ratio{cgroup=\"/slow\",cluster=\"c\",device=\"7:3\",kind=\"write_iops\",member=\"m\\\"0\"} 0.95"), "{text}");
        assert!(text.contains("etcdmon_member_pressure_share{cluster=\"c\",member=\"m\\\"0\",resource=\"io\",source=\"system\"} 0.5"), "{text}");
        assert!(!text.contains("resource=\"cpu\""), "unknown, not 0");
    }
}
