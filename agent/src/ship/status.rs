//! The periodic `AgentStatus` snapshot: mode, members and the exact kernel counters.

use etcd_monitor_proto::v1::{
    AgentStatus, ClientConnStats, DropCounters, KernelHistogram, MemberIdentity, PeerStats,
};

use super::convert::{disk_op, file_class};
use crate::{http::ModeStatus, kernel::KernelDrops, stats::Snapshot, tracker::Tracker};

/// Builds a status message from the tracker's current view.
pub fn snapshot(tracker: &mut Tracker, mode: &ModeStatus, agent_queue_drops: u64) -> AgentStatus {
    let stats = tracker.snapshot().unwrap_or_default();
    let drops = tracker.kernel_drops().unwrap_or_default();
    let net = tracker.net_snapshot().unwrap_or_default();
    let mut status = build(tracker, mode, &stats, &drops, agent_queue_drops);
    status.peers = net
        .peers
        .iter()
        .map(|((member, peer), t)| PeerStats {
            member: member.clone(),
            peer_addr: peer.clone(),
            peer_member: if peer.contains(':') {
                String::new()
            } else {
                peer.clone()
            },
            srtt_micros: t.srtt_us,
            retransmits: t.retransmits,
            bytes_sent: t.tx_bytes,
            bytes_received: t.rx_bytes,
        })
        .collect();
    status.clients = net
        .clients
        .iter()
        .map(|(member, c)| ClientConnStats {
            member: member.clone(),
            open_connections: c.open,
            opened_total: c.opened,
            closed_total: c.closed,
        })
        .collect();
    status
}

fn build(
    tracker: &Tracker,
    mode: &ModeStatus,
    stats: &Snapshot,
    drops: &KernelDrops,
    agent_queue: u64,
) -> AgentStatus {
    let mut members: Vec<MemberIdentity> = tracker
        .processes()
        .iter()
        .map(|(pid, p)| MemberIdentity {
            name: p.identity.name.clone(),
            pid: *pid,
            data_dir: p.identity.data_dir.to_string_lossy().into_owned(),
            client_urls: p.identity.client_urls.clone(),
            peer_urls: p.identity.peer_urls.clone(),
            listen_client_urls: p.identity.listen_client_urls.clone(),
            listen_peer_urls: p.identity.listen_peer_urls.clone(),
        })
        .collect();
    members.sort_by_key(|m| m.pid);
    let histograms = stats
        .iter()
        .flat_map(|(member, ops)| {
            ops.iter().map(move |((op, class), t)| KernelHistogram {
                member: member.clone(),
                op: disk_op(*op) as i32,
                file: file_class(*class) as i32,
                count: t.count,
                sum_nanos: t.sum_ns,
                bytes: t.bytes,
                errors: t.errors,
                log2_slots: t.slots.to_vec(),
            })
        })
        .collect();
    AgentStatus {
        mode: mode.mode.label().to_string(),
        reason: mode.reason.clone().unwrap_or_default(),
        members,
        histograms,
        drops: Some(DropCounters {
            kernel_ringbuf: drops.ringbuf_syscall + drops.ringbuf_process,
            agent_queue,
            kernel_other: drops.start_map + drops.stats_map,
        }),
        peers: Vec::new(),
        clients: Vec::new(),
    }
}
