//! The periodic `AgentStatus` snapshot: mode, members and the exact kernel counters.

use etcd_monitor_proto::v1::{
    AgentStatus, CgroupIoDevice, CgroupIoStats, ClientConnStats, DeviceStats, DropCounters,
    IoIssuer, KernelHistogram, MemberIdentity, MemberResources, NodeResources, PeerStats, Pressure,
    SchedStats,
};

use super::convert::{disk_op, file_class};
use crate::{
    http::ModeStatus, kernel::KernelDrops, resources::ResourceSnapshot, stats::Snapshot,
    tracker::Tracker,
};

/// Builds a status message from the tracker's current view and the latest resource sample.
pub fn snapshot(
    tracker: &mut Tracker,
    mode: &ModeStatus,
    agent_queue_drops: u64,
    resources: &ResourceSnapshot,
) -> AgentStatus {
    let stats = tracker.snapshot().unwrap_or_default();
    let drops = tracker.kernel_drops().unwrap_or_default();
    let net = tracker.net_snapshot().unwrap_or_default();
    let diag = tracker.diag_snapshot(true).unwrap_or_default();
    let mut status = build(tracker, mode, &stats, &drops, agent_queue_drops);
    status.devices = diag.devices.iter().map(device_stats).collect();
    status.sched = diag.sched.iter().map(sched_stats).collect();
    status.peers = peer_stats(&net);
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
    status.resources = resources.members.iter().map(member_resources).collect();
    status.cgroup_io = resources
        .members
        .iter()
        .filter_map(|m| Some(cgroup_io_stats(m, m.cgroup_io.as_ref()?)))
        .collect();
    status.node = Some(NodeResources {
        memory_total_bytes: resources.node_memory.map_or(0, |m| m.total_bytes),
        memory_available_bytes: resources.node_memory.map_or(0, |m| m.available_bytes),
        cpus: resources.node_cpus,
    });
    status
}

/// One watched device in the wire form.
fn device_stats(d: &crate::diag::DeviceView) -> DeviceStats {
    DeviceStats {
        device: d.device.id(),
        name: d.device.name.clone(),
        members: d.members.clone(),
        count: d.service.count,
        sum_nanos: d.service.sum_ns,
        errors: d.service.errors,
        log2_slots: d.service.slots.to_vec(),
        issuers: d
            .issuers
            .iter()
            .map(|i| IoIssuer {
                pid: i.pid,
                comm: i.comm.clone(),
                cgroup: i.cgroup.clone(),
                bytes: i.bytes,
                ios: i.ios,
                kernel_thread: i.kernel_thread,
                member: i.member.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// One member's scheduler figures in the wire form.
fn sched_stats(s: &crate::diag::SchedView) -> SchedStats {
    let t = s.throttle.unwrap_or_default();
    SchedStats {
        member: s.member.clone(),
        runq_count: s.runq.count,
        runq_sum_nanos: s.runq.sum_ns,
        runq_log2_slots: s.runq.slots.to_vec(),
        cgroup: s.cgroup.clone(),
        has_throttle: s.throttle.is_some(),
        nr_periods: t.nr_periods,
        nr_throttled: t.nr_throttled,
        throttled_nanos: t.throttled_ns,
        cgroup_v2: t.v2,
    }
}

/// Per (member, peer): TCP figures and syscall bytes, including pairs only the syscalls saw
/// (no TCP sample yet).
fn peer_stats(net: &crate::net::NetSnapshot) -> Vec<PeerStats> {
    let peer_member = |peer: &str| {
        if peer.contains(':') {
            String::new()
        } else {
            peer.to_string()
        }
    };
    let mut peers: Vec<PeerStats> = net
        .peers
        .iter()
        .map(|((member, peer), t)| {
            let bytes = net.syscall.get(&(member.clone(), peer.clone()));
            PeerStats {
                member: member.clone(),
                peer_addr: peer.clone(),
                peer_member: peer_member(peer),
                srtt_micros: t.srtt_us,
                retransmits: t.retransmits,
                bytes_sent: t.tx_bytes,
                bytes_received: t.rx_bytes,
                syscall_bytes_sent: bytes.map_or(0, |b| b.sent),
                syscall_bytes_received: bytes.map_or(0, |b| b.received),
            }
        })
        .collect();
    for ((member, peer), b) in &net.syscall {
        if !net.peers.contains_key(&(member.clone(), peer.clone())) {
            peers.push(PeerStats {
                member: member.clone(),
                peer_addr: peer.clone(),
                peer_member: peer_member(peer),
                syscall_bytes_sent: b.sent,
                syscall_bytes_received: b.received,
                ..PeerStats::default()
            });
        }
    }
    peers
}

/// One member's I/O cgroup evidence and PSI in the wire form (limits: 0 = none).
pub fn cgroup_io_stats(
    r: &crate::resources::MemberResources,
    io: &crate::cgroup_io::CgroupIo,
) -> CgroupIoStats {
    let pressure = |p: crate::cgroup_io::Pressure| Pressure {
        some_micros: p.some_us,
        has_full: p.full_us.is_some(),
        full_micros: p.full_us.unwrap_or_default(),
    };
    CgroupIoStats {
        member: r.member.clone(),
        cgroup: io.cgroup.clone(),
        cgroup_v2: io.v2,
        devices: io
            .devices
            .iter()
            .map(|d| CgroupIoDevice {
                device: d.device.clone(),
                read_bps_limit: d.limits.read_bps.unwrap_or(0),
                write_bps_limit: d.limits.write_bps.unwrap_or(0),
                read_iops_limit: d.limits.read_iops.unwrap_or(0),
                write_iops_limit: d.limits.write_iops.unwrap_or(0),
                read_bytes: d.counters.read_bytes,
                write_bytes: d.counters.write_bytes,
                read_ios: d.counters.read_ios,
                write_ios: d.counters.write_ios,
            })
            .collect(),
        pressure_source: io.pressure_source.map_or("", |s| s.label()).to_string(),
        has_io_pressure: io.io_pressure.is_some(),
        io_pressure: io.io_pressure.map(pressure),
        has_cpu_pressure: io.cpu_pressure.is_some(),
        cpu_pressure: io.cpu_pressure.map(pressure),
        sampled_at_ms: r.sampled_at_ms,
    }
}

/// One member's resource figures in the wire form.
pub fn member_resources(r: &crate::resources::MemberResources) -> MemberResources {
    let fs = r.fs.unwrap_or_default();
    MemberResources {
        member: r.member.clone(),
        pid: r.pid,
        cpu_seconds_total: r.cpu_seconds_total,
        has_cpu_cores: r.cpu_cores.is_some(),
        cpu_cores: r.cpu_cores.unwrap_or_default(),
        cpu_limit_cores: r.cpu_limit.value,
        cpu_limit_from_cgroup: r.cpu_limit.from_cgroup,
        has_rss: r.rss_bytes.is_some(),
        rss_bytes: r.rss_bytes.unwrap_or_default(),
        memory_limit_bytes: r.memory_limit.map_or(0, |l| l.value as u64),
        memory_limit_from_cgroup: r.memory_limit.is_some_and(|l| l.from_cgroup),
        has_fs: r.fs.is_some(),
        fs_size_bytes: fs.size_bytes,
        fs_used_bytes: fs.used_bytes,
        fs_free_bytes: fs.free_bytes,
        fs_inodes_total: fs.inodes_total,
        fs_inodes_free: fs.inodes_free,
        has_open_fds: r.open_fds.is_some(),
        open_fds: r.open_fds.unwrap_or_default(),
        has_client_connections: r.client_connections.is_some(),
        client_connections: r.client_connections.unwrap_or_default(),
        process_state: r.state.map(String::from).unwrap_or_default(),
    }
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
        devices: Vec::new(),
        sched: Vec::new(),
        resources: Vec::new(),
        node: None,
        cgroup_io: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Limit, MemberResources as Sampled};

    #[test]
    fn unknown_figures_ship_with_their_has_flag_off() {
        let sampled = Sampled {
            member: "m0".into(),
            pid: 9,
            cpu_seconds_total: 3.0,
            cpu_cores: None,
            cpu_limit: Limit {
                value: 2.0,
                from_cgroup: false,
            },
            rss_bytes: Some(4096),
            memory_limit: None,
            fs: None,
            open_fds: Some(12),
            client_connections: Some(0),
            state: Some('T'),
            cgroup_io: None,
            sampled_at_ms: 5,
        };
        let wire = member_resources(&sampled);
        assert!(!wire.has_cpu_cores && !wire.has_fs);
        assert!(wire.has_rss && wire.has_open_fds && wire.has_client_connections);
        assert_eq!((wire.rss_bytes, wire.open_fds), (4096, 12));
        assert_eq!(wire.memory_limit_bytes, 0, "unknown limit");
        assert!(!wire.cpu_limit_from_cgroup && (wire.cpu_limit_cores - 2.0).abs() < 1e-12);
        assert_eq!(wire.process_state, "T");
    }

    #[test]
    fn cgroup_io_ships_limits_as_zero_when_unset_and_psi_with_its_source() {
        use crate::cgroup_io::{
            CgroupIo, DeviceIo, IoCounters, IoLimits, Pressure as P, PressureSource,
        };
        let sampled = Sampled {
            member: "m0".into(),
            pid: 9,
            cpu_seconds_total: 0.0,
            cpu_cores: None,
            cpu_limit: Limit {
                value: 1.0,
                from_cgroup: false,
            },
            rss_bytes: None,
            memory_limit: None,
            fs: None,
            open_fds: None,
            client_connections: None,
            state: None,
            cgroup_io: None,
            sampled_at_ms: 1234,
        };
        let io = CgroupIo {
            cgroup: "/slow".into(),
            v2: false,
            devices: vec![DeviceIo {
                device: "7:3".into(),
                limits: IoLimits {
                    write_iops: Some(20),
                    ..IoLimits::default()
                },
                counters: IoCounters {
                    write_ios: 99,
                    ..IoCounters::default()
                },
            }],
            pressure_source: Some(PressureSource::System),
            io_pressure: Some(P {
                some_us: 10,
                full_us: Some(3),
            }),
            cpu_pressure: None,
        };
        let wire = cgroup_io_stats(&sampled, &io);
        assert_eq!(
            (wire.member.as_str(), wire.cgroup.as_str()),
            ("m0", "/slow")
        );
        let d = &wire.devices[0];
        assert_eq!(
            (d.write_iops_limit, d.read_iops_limit, d.write_ios),
            (20, 0, 99)
        );
        assert_eq!(wire.pressure_source, "system");
        assert!(wire.has_io_pressure && !wire.has_cpu_pressure);
        assert_eq!(
            wire.io_pressure.map(|p| (p.some_micros, p.full_micros)),
            Some((10, 3))
        );
        assert_eq!(wire.sampled_at_ms, 1234);
    }
}
