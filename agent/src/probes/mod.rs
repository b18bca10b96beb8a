//! The tracepoints the agent attaches, one module per hooked event, named as in
//! `agent-ebpf/src/probes/`.

pub mod accept;
pub mod block;
pub mod close;
pub mod process;
pub mod receive;
pub mod runs;
pub mod sched;
pub mod sync;
pub mod tcp;
pub mod write;

/// Probes an operator can turn off together (`--probes`), to trade detail for overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeGroup {
    /// fdatasync, fsync, sync_file_range: the WAL and bbolt durability path. Always on.
    Sync,
    /// write, pwrite64, writev, pwritev: WAL appends, page writes, socket sends.
    Write,
    /// close and accept: keep the in-kernel fd classes exact.
    Fd,
    /// exec/exit of etcd processes: react before the next /proc rescan.
    Process,
    /// TCP state, retransmits and RTT on the members' ports.
    Net,
    /// read, readv, recvfrom, recvmsg on the members' sockets: bytes received.
    Recv,
    /// Block requests on the devices under the members' data dirs, and who issues them.
    Block,
    /// Run-queue latency of the members' threads (sched_wakeup, sched_switch).
    Sched,
}

impl ProbeGroup {
    /// Every group.
    pub const ALL: [ProbeGroup; 8] = [
        ProbeGroup::Sync,
        ProbeGroup::Write,
        ProbeGroup::Fd,
        ProbeGroup::Process,
        ProbeGroup::Net,
        ProbeGroup::Recv,
        ProbeGroup::Block,
        ProbeGroup::Sched,
    ];
}

/// One eBPF program and where it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    /// Tracepoint category (`syscalls`, `sched`, …).
    pub category: &'static str,
    /// Tracepoint name within the category.
    pub name: &'static str,
    /// Whether the agent cannot do its job without it. A required probe that fails to
    /// attach turns eBPF off; an optional one only narrows what is seen.
    pub required: bool,
    /// The `--probes` group it belongs to.
    pub group: ProbeGroup,
}

/// A `syscalls:sys_enter_<name>` / `sys_exit_<name>` pair, whose programs are named the same.
pub(crate) const fn syscall_pair(
    enter: &'static str,
    exit: &'static str,
    required: bool,
    group: ProbeGroup,
) -> [Probe; 2] {
    [
        Probe {
            program: enter,
            category: "syscalls",
            name: enter,
            required,
            group,
        },
        Probe {
            program: exit,
            category: "syscalls",
            name: exit,
            required,
            group,
        },
    ]
}

/// Every probe, in attach order: optional bookkeeping first, then the timed syscalls.
pub fn all() -> Vec<Probe> {
    let mut probes = Vec::new();
    probes.extend_from_slice(accept::PROBES);
    probes.extend_from_slice(close::PROBES);
    probes.extend_from_slice(process::PROBES);
    probes.extend_from_slice(sync::PROBES);
    probes.extend_from_slice(write::PROBES);
    probes.extend_from_slice(tcp::PROBES);
    probes.extend_from_slice(receive::PROBES);
    probes.extend_from_slice(block::PROBES);
    probes.extend_from_slice(sched::PROBES);
    probes
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_names_are_unique_and_cover_every_op() {
        let probes = super::all();
        let mut names: Vec<_> = probes.iter().map(|p| p.program).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), probes.len());
        for op in etcd_monitor_agent_common::syscall::Op::ALL {
            for side in ["enter", "exit"] {
                let program = format!("sys_{side}_{}", op.name());
                assert!(names.contains(&program.as_str()), "{program} missing");
            }
        }
    }
}
