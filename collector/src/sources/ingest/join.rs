//! Matching agents' process identities to MemberList entries, and the per-member kernel view.

use etcd_monitor_histogram::Log2Slots;
use etcd_monitor_proto::v1::{AgentStatus, DiskOp, FileClass, KernelHistogram, MemberIdentity};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::cluster::MemberState;

/// Kernel-measured latency of one kind of call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct KernelLatency {
    /// Calls counted since the agent started.
    pub count: u64,
    /// Median since the agent started, ms (the shared histogram model's quantile rule:
    /// interpolated inside the log2 slot).
    pub p50_ms: f64,
    /// 99th percentile since the agent started, ms (same rule).
    pub p99_ms: f64,
    /// Mean since the agent started, ms (sum over count, exact).
    pub mean_ms: f64,
}

/// One peer of a member as the kernel sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct PeerView {
    /// Peer member name (or `ip:port` when unknown).
    pub peer: String,
    /// Smoothed RTT, ms.
    pub rtt_ms: f64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Bytes sent (acknowledged by the peer).
    pub bytes_sent: u64,
    /// Bytes received from the peer.
    pub bytes_received: u64,
}

/// What the agent on a member's node reports about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct KernelView {
    /// Agent mode: `ebpf`, `ebpf-partial` or `client-only`.
    pub agent_mode: String,
    /// Why the agent is not in full eBPF mode.
    pub agent_reason: String,
    /// Node the agent runs on.
    pub node: String,
    /// etcd process id on that node.
    pub pid: u32,
    /// When the last status arrived (Unix ms).
    pub last_status_ms: u64,
    /// WAL `fdatasync`.
    pub wal_fsync: Option<KernelLatency>,
    /// bbolt `fdatasync` (backend commit).
    pub db_fsync: Option<KernelLatency>,
    /// Writes to the WAL and the database (write, pwrite64, writev, pwritev).
    pub disk_write: Option<KernelLatency>,
    /// Bytes written to the WAL and the database.
    pub bytes_written: u64,
    /// Per-peer network figures.
    pub peers: Vec<PeerView>,
    /// Established client connections.
    pub client_connections: Option<u64>,
    /// Events of this agent lost on the way to the collector (sequence gaps).
    pub events_lost_in_transit: u64,
}

/// Whether an agent-reported identity is this MemberList entry: peer URLs in common (what
/// MemberList lists), else the same name and a client URL in common.
pub fn matches(identity: &MemberIdentity, member: &MemberState) -> bool {
    let overlap = |a: &[String], b: &[String]| a.iter().any(|x| b.iter().any(|y| same_url(x, y)));
    if !member.peer_urls.is_empty() && overlap(&identity.peer_urls, &member.peer_urls) {
        return true;
    }
    !member.name.is_empty()
        && identity.name == member.name
        && (overlap(&identity.client_urls, &member.client_urls)
            || overlap(&identity.listen_client_urls, &member.client_urls))
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Sums the log2 histograms of `hists` (several processes, files or ops of one member).
fn log2_sum<'a>(hists: impl Iterator<Item = &'a KernelHistogram>) -> Option<Log2Slots> {
    let mut sum: Option<Log2Slots> = None;
    for h in hists {
        sum.get_or_insert_default()
            .add(h.count, h.sum_nanos, &h.log2_slots);
    }
    sum
}

/// Count, p50, p99 and mean of cumulative log2 histograms, by the shared model's rules.
pub fn latency(slots: &Log2Slots) -> Option<KernelLatency> {
    let h = slots.histogram();
    if h.count() == 0 {
        return None;
    }
    Some(KernelLatency {
        count: h.count(),
        p50_ms: h.quantile_ms(0.5)?,
        p99_ms: h.quantile_ms(0.99)?,
        mean_ms: h.mean_ms()?,
    })
}

fn latency_of<'a>(hists: impl Iterator<Item = &'a KernelHistogram>) -> Option<KernelLatency> {
    latency(&log2_sum(hists)?)
}

fn is_write(op: DiskOp) -> bool {
    matches!(
        op,
        DiskOp::Write | DiskOp::Pwrite64 | DiskOp::Writev | DiskOp::Pwritev
    )
}

/// The agent's cumulative WAL `fdatasync` histogram for `member` (agent-side name): the one
/// place the collector picks it out of an `AgentStatus` (status page, history, alerts and
/// diagnosis all read it through here).
pub fn wal_fsync_slots(status: &AgentStatus, member: &str) -> Option<Log2Slots> {
    log2_sum(status.histograms.iter().filter(|h| {
        h.member == member && h.op() == DiskOp::Fdatasync && h.file() == FileClass::Wal
    }))
}

/// The kernel view of `identity` from its agent's `status`.
pub fn kernel_view(
    node: &str,
    status: &AgentStatus,
    identity: &MemberIdentity,
    received_ms: u64,
    lost: u64,
) -> KernelView {
    let name = identity.name.as_str();
    let mine = || status.histograms.iter().filter(move |h| h.member == name);
    let disk = |h: &&KernelHistogram| matches!(h.file(), FileClass::Wal | FileClass::Db);
    KernelView {
        agent_mode: status.mode.clone(),
        agent_reason: status.reason.clone(),
        node: node.to_string(),
        pid: identity.pid,
        last_status_ms: received_ms,
        wal_fsync: wal_fsync_slots(status, name).and_then(|s| latency(&s)),
        db_fsync: latency_of(
            mine().filter(|h| h.op() == DiskOp::Fdatasync && h.file() == FileClass::Db),
        ),
        disk_write: latency_of(mine().filter(|h| is_write(h.op())).filter(disk)),
        bytes_written: mine()
            .filter(|h| is_write(h.op()))
            .filter(disk)
            .fold(0u64, |a, h| a.saturating_add(h.bytes)),
        peers: status
            .peers
            .iter()
            .filter(|p| p.member == name)
            .map(|p| PeerView {
                peer: if p.peer_member.is_empty() {
                    p.peer_addr.clone()
                } else {
                    p.peer_member.clone()
                },
                rtt_ms: f64::from(p.srtt_micros) / 1e3,
                retransmits: p.retransmits,
                bytes_sent: p.bytes_sent,
                bytes_received: p.bytes_received,
            })
            .collect(),
        client_connections: status
            .clients
            .iter()
            .find(|c| c.member == name)
            .map(|c| c.open_connections),
        events_lost_in_transit: lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, peer: &str, client: &str) -> MemberState {
        MemberState {
            id: "8e9e05c52164694d".into(),
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![client.into()],
            ..MemberState::default()
        }
    }

    fn identity(name: &str, peer: &str, client: &str) -> MemberIdentity {
        MemberIdentity {
            name: name.into(),
            pid: 7,
            peer_urls: vec![peer.into()],
            client_urls: vec![client.into()],
            ..MemberIdentity::default()
        }
    }

    #[test]
    fn joins_by_peer_url_then_by_name_and_client_url() {
        let m = member("m0", "http://10.0.0.1:2380", "http://10.0.0.1:2379");
        assert!(matches(
            &identity("other-name", "http://10.0.0.1:2380/", "x"),
            &m
        ));
        assert!(matches(
            &identity("m0", "http://127.0.0.1:2380", "http://10.0.0.1:2379"),
            &m
        ));
        assert!(!matches(
            &identity("m0", "http://127.0.0.1:2380", "http://127.0.0.1:2379"),
            &m
        ));
        assert!(!matches(
            &identity("m1", "http://10.0.0.2:2380", "http://10.0.0.2:2379"),
            &m
        ));
    }

    #[test]
    fn quantiles_from_log2_slots() {
        let mut slots = vec![0u64; 40];
        slots[20] = 99; // [1.05, 2.1) ms
        slots[23] = 1; // [8.4, 16.8) ms
        let l = latency(&Log2Slots::new(100, 100_000_000, &slots)).expect("latency");
        // Interpolated inside the slot (the shared rule), not the slot's upper bound.
        let lo = (1u64 << 20) as f64 / 1e6;
        assert!((l.p50_ms - (lo + lo * 50.0 / 99.0)).abs() < 1e-9, "{l:?}");
        assert!((l.p99_ms - 2.0 * lo).abs() < 1e-9, "{l:?}");
        assert!((l.mean_ms - 1.0).abs() < 1e-9);
        assert_eq!(latency(&Log2Slots::new(0, 0, &[0; 40])), None);
    }

    #[test]
    fn kernel_view_sums_the_members_histograms() {
        let mut slots = vec![0u64; 40];
        slots[21] = 10;
        let h = |op: DiskOp, file: FileClass, count: u64, bytes: u64| KernelHistogram {
            member: "m0".into(),
            op: op as i32,
            file: file as i32,
            count,
            sum_nanos: count * 3_000_000,
            bytes,
            errors: 0,
            log2_slots: slots.iter().map(|s| s * count / 10).collect(),
        };
        let status = AgentStatus {
            mode: "ebpf".into(),
            histograms: vec![
                h(DiskOp::Fdatasync, FileClass::Wal, 10, 0),
                h(DiskOp::Fdatasync, FileClass::Db, 20, 0),
                h(DiskOp::Write, FileClass::Wal, 10, 1000),
                h(DiskOp::Pwrite64, FileClass::Db, 10, 4096),
                h(DiskOp::Write, FileClass::SocketClient, 10, 99),
            ],
            ..AgentStatus::default()
        };
        let view = kernel_view("n1", &status, &identity("m0", "p", "c"), 5, 3);
        assert_eq!(view.wal_fsync.map(|l| l.count), Some(10));
        assert_eq!(view.db_fsync.map(|l| l.count), Some(20));
        assert_eq!(
            view.disk_write.map(|l| l.count),
            Some(20),
            "socket writes excluded"
        );
        assert_eq!(view.bytes_written, 5096);
        assert!((view.wal_fsync.expect("wal").mean_ms - 3.0).abs() < 1e-9);
        assert_eq!(view.events_lost_in_transit, 3);
        assert_eq!(view.agent_mode, "ebpf");
    }
}
