//! The set of traced etcd processes, kept in step with `/proc` and with the kernel's maps.
//!
//! `rescan` adds new etcd processes (tracking them in the kernel and classifying their open
//! fds) and retires gone ones (moving their final counters into per-member totals). `learn_fd`
//! classifies an fd the kernel reported as unknown. `snapshot` gives per-member totals.

use std::collections::{BTreeMap, HashMap};

use etcd_monitor_agent_common::syscall::{FileClass, Op};

use crate::{
    diag::{self, CgroupMounts, DeviceView, DiagSnapshot, DiagState, SchedView},
    discovery::{self, EtcdProcess, Matcher},
    fdclass::{self, PortRoles},
    identity::MemberIdentity,
    kernel::{Kernel, KernelDrops, KernelError},
    net::{self, NetSnapshot, NetState, Resolver},
    procfs::{ProcFs, TcpSocket},
    sockio::SockIoState,
    stats::{self, Snapshot},
};

/// A process being traced.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// Start time, to tell a reused pid apart.
    pub start_time: u64,
    /// The member it is.
    pub identity: MemberIdentity,
    roles: PortRoles,
    sockets: HashMap<u64, TcpSocket>,
}

/// What a rescan changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RescanReport {
    /// Newly tracked pids.
    pub added: Vec<u32>,
    /// Pids no longer tracked.
    pub removed: Vec<u32>,
    /// Kernel map errors met on the way (the rescan carries on).
    pub errors: Vec<String>,
}

/// Traced processes and the kernel maps that mirror them.
pub struct Tracker {
    proc: ProcFs,
    matcher: Matcher,
    processes: HashMap<u32, Tracked>,
    retired: Snapshot,
    net: NetState,
    sockio: SockIoState,
    diag: DiagState,
    cgroups: CgroupMounts,
    /// kernel dev_t → (device, members on it), refreshed on every rescan.
    devices: BTreeMap<u32, (diag::BlockDevice, Vec<String>)>,
    kernel: Option<Box<dyn Kernel>>,
}

impl Tracker {
    /// A tracker over `proc`; `kernel` is `None` in client-only mode.
    pub fn new(proc: ProcFs, matcher: Matcher, kernel: Option<Box<dyn Kernel>>) -> Self {
        Self {
            proc,
            matcher,
            processes: HashMap::new(),
            retired: Snapshot::new(),
            net: NetState::default(),
            sockio: SockIoState::default(),
            diag: DiagState::default(),
            cgroups: CgroupMounts::detect(),
            devices: BTreeMap::new(),
            kernel,
        }
    }

    /// Whether the kernel side is loaded.
    pub fn has_kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// The traced processes by pid.
    pub fn processes(&self) -> &HashMap<u32, Tracked> {
        &self.processes
    }

    /// Brings the traced set in line with `/proc`.
    pub fn rescan(&mut self) -> RescanReport {
        let found = discovery::scan(&self.proc, &self.matcher);
        let mut report = self.apply(found);
        if let Err(e) = self.sync_diag() {
            report.errors.push(e.to_string());
        }
        report
    }

    /// Tells the kernel which devices (those under the members' data dirs) and which threads
    /// (the members') the block and sched programs watch.
    fn sync_diag(&mut self) -> Result<(), KernelError> {
        let mut devices: BTreeMap<u32, (diag::BlockDevice, Vec<String>)> = BTreeMap::new();
        let mut tids = HashMap::new();
        for (pid, t) in &self.processes {
            let data_dir = if t.identity.data_dir.is_absolute() {
                self.proc.path(*pid, "root").join(
                    t.identity
                        .data_dir
                        .strip_prefix("/")
                        .unwrap_or(&t.identity.data_dir),
                )
            } else {
                t.identity.data_dir.clone()
            };
            for device in diag::devices_under(&data_dir, std::path::Path::new("/sys")) {
                let entry = devices
                    .entry(device.kernel_dev())
                    .or_insert_with(|| (device, Vec::new()));
                if !entry.1.contains(&t.identity.name) {
                    entry.1.push(t.identity.name.clone());
                }
            }
            for tid in diag::threads(&self.proc, *pid) {
                tids.insert(tid, *pid);
            }
        }
        let devs: Vec<u32> = devices.keys().copied().collect();
        self.devices = devices;
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.set_block_devs(&devs)?;
            kernel.set_tids(&tids)?;
        }
        Ok(())
    }

    /// Block-device and scheduler evidence for the diagnosis. `with_issuers` ranks each
    /// device's issuers by activity since the previous ranking (the shipping path does; a
    /// `/metrics` scrape does not, so it does not disturb that ranking).
    pub fn diag_snapshot(&mut self, with_issuers: bool) -> Result<DiagSnapshot, KernelError> {
        let Some(kernel) = self.kernel.as_ref() else {
            return Ok(DiagSnapshot::default());
        };
        let block = kernel.block_stats()?;
        let issuers = if with_issuers {
            kernel.issuers()?
        } else {
            Vec::new()
        };
        let runq = kernel.runq_stats()?;
        let names: HashMap<u32, String> = self
            .processes
            .iter()
            .map(|(pid, t)| (*pid, t.identity.name.clone()))
            .collect();
        let mut by_dev = if with_issuers {
            self.diag
                .issuers(&issuers, &self.proc, |pid| names.get(&pid).cloned())
        } else {
            BTreeMap::new()
        };
        let devices = self
            .devices
            .iter()
            .map(|(dev, (device, members))| DeviceView {
                device: device.clone(),
                members: members.clone(),
                service: block
                    .iter()
                    .find(|(d, _)| d == dev)
                    .map(|(_, t)| *t)
                    .unwrap_or_default(),
                issuers: by_dev.remove(dev).unwrap_or_default(),
            })
            .collect();
        let mut sched: Vec<SchedView> = self
            .processes
            .iter()
            .map(|(pid, t)| {
                let (cgroup, throttle) = match self.cgroups.cpu_stat_path(&self.proc, *pid) {
                    Some((file, path, v2)) => (
                        path,
                        std::fs::read_to_string(file)
                            .ok()
                            .and_then(|text| diag::parse_cpu_stat(&text, v2)),
                    ),
                    None => (String::new(), None),
                };
                SchedView {
                    member: t.identity.name.clone(),
                    runq: runq
                        .iter()
                        .find(|(tgid, _)| tgid == pid)
                        .map(|(_, t)| *t)
                        .unwrap_or_default(),
                    cgroup,
                    throttle,
                }
            })
            .collect();
        sched.sort_by(|a, b| a.member.cmp(&b.member));
        Ok(DiagSnapshot { devices, sched })
    }

    /// Brings the traced set in line with `found`.
    pub fn apply(&mut self, found: Vec<EtcdProcess>) -> RescanReport {
        let mut report = RescanReport::default();
        let gone: Vec<u32> = self
            .processes
            .iter()
            .filter(|(pid, t)| {
                !found
                    .iter()
                    .any(|p| p.pid == **pid && p.start_time == t.start_time)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Err(e) = self.retire(pid) {
                report.errors.push(e.to_string());
            }
            report.removed.push(pid);
        }
        for process in found {
            if self.processes.contains_key(&process.pid) {
                continue;
            }
            if let Err(e) = self.track(process.clone()) {
                report.errors.push(e.to_string());
                continue;
            }
            report.added.push(process.pid);
        }
        if (!report.added.is_empty() || !report.removed.is_empty())
            && let Err(e) = self.sync_ports()
        {
            report.errors.push(e.to_string());
        }
        report
    }

    /// Tells the kernel which ports' connections to watch: every traced member's.
    fn sync_ports(&mut self) -> Result<(), KernelError> {
        let ports = net::port_roles(self.processes.values().map(|t| &t.identity));
        match self.kernel.as_mut() {
            Some(kernel) => kernel.set_ports(&ports),
            None => Ok(()),
        }
    }

    /// Per-peer and per-member network figures; connections that closed are counted and
    /// then forgotten by the kernel.
    pub fn net_snapshot(&mut self) -> Result<NetSnapshot, KernelError> {
        let Some(kernel) = self.kernel.as_ref() else {
            return Ok(NetSnapshot::default());
        };
        let conns = kernel.conns()?;
        let churn = kernel.churn()?;
        let members: Vec<(u32, &MemberIdentity)> = self
            .processes
            .iter()
            .map(|(pid, t)| (*pid, &t.identity))
            .collect();
        let resolver = Resolver::new(&self.proc, members);
        let (mut snapshot, closed) = self.net.harvest(&conns, &churn, &resolver);
        let sock_io = kernel.sock_io()?;
        let (syscall, gone_fds) = self.sockio.harvest(&sock_io, &self.proc, &resolver);
        snapshot.syscall = syscall;
        if let Some(kernel) = self.kernel.as_mut() {
            for key in closed {
                let _ = kernel.remove_conn(&key);
            }
            for key in gone_fds {
                let _ = kernel.remove_sock_io(&key);
            }
        }
        Ok(snapshot)
    }

    fn track(&mut self, process: EtcdProcess) -> Result<(), KernelError> {
        let pid = process.pid;
        let roles = PortRoles::of(&process.identity);
        let mut tracked = Tracked {
            start_time: process.start_time,
            identity: process.identity,
            roles,
            sockets: self.proc.tcp_sockets(pid),
        };
        if let Some(kernel) = self.kernel.as_mut() {
            // Classify first, then track, so the first traced call already has its class.
            for (fd, target) in self.proc.fds(pid) {
                let class =
                    fdclass::classify(&target, &tracked.identity, &tracked.roles, &tracked.sockets);
                kernel.set_fd_class(pid, fd, class)?;
            }
            kernel.track(pid)?;
        }
        tracked.sockets.shrink_to_fit();
        self.processes.insert(pid, tracked);
        Ok(())
    }

    /// Stops tracing `pid`, keeping its final counts under its member.
    pub fn retire(&mut self, pid: u32) -> Result<(), KernelError> {
        let Some(tracked) = self.processes.remove(&pid) else {
            return Ok(());
        };
        if let Some(kernel) = self.kernel.as_mut() {
            for (key, totals) in kernel.op_stats()? {
                if key.tgid != pid {
                    continue;
                }
                if let (Some(op), Some(class)) =
                    (Op::from_u8(key.op), FileClass::from_u8(key.class))
                {
                    stats::accumulate(
                        &mut self.retired,
                        &tracked.identity.name,
                        op,
                        class,
                        &totals,
                    );
                }
            }
            kernel.untrack(pid)?;
        }
        self.sync_ports()
    }

    /// Classifies fd `fd` of `pid` (reported by the kernel as unknown) and tells the kernel.
    /// Returns the class, or `None` when the pid is not traced or the fd is already closed.
    pub fn learn_fd(&mut self, pid: u32, fd: i32) -> Option<FileClass> {
        let target = self.proc.fd_target(pid, fd)?;
        let tracked = self.processes.get_mut(&pid)?;
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            && inode
                .parse::<u64>()
                .is_ok_and(|i| !tracked.sockets.contains_key(&i))
        {
            tracked.sockets = self.proc.tcp_sockets(pid);
        }
        let class = fdclass::classify(&target, &tracked.identity, &tracked.roles, &tracked.sockets);
        if let Some(kernel) = self.kernel.as_mut() {
            // The fd may have been closed meanwhile; a failed insert only costs another event.
            let _ = kernel.set_fd_class(pid, fd, class);
        }
        Some(class)
    }

    /// The member name of a traced pid.
    pub fn member_of(&self, pid: u32) -> Option<&str> {
        self.processes.get(&pid).map(|t| t.identity.name.as_str())
    }

    /// Per-member totals: retired processes plus the live kernel counters.
    pub fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let mut snapshot = self.retired.clone();
        if let Some(kernel) = self.kernel.as_ref() {
            for (key, totals) in kernel.op_stats()? {
                let Some(member) = self.member_of(key.tgid) else {
                    continue; // harvested or not ours
                };
                if let (Some(op), Some(class)) =
                    (Op::from_u8(key.op), FileClass::from_u8(key.class))
                {
                    stats::accumulate(&mut snapshot, member, op, class, &totals);
                }
            }
        }
        Ok(snapshot)
    }

    /// The kernel's loss counters (zero without a kernel).
    pub fn kernel_drops(&self) -> Result<KernelDrops, KernelError> {
        match self.kernel.as_ref() {
            Some(kernel) => kernel.drops(),
            None => Ok(KernelDrops::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use etcd_monitor_agent_common::syscall::{OpKey, OpStats};

    use super::*;
    use crate::stats::OpTotals;

    /// An in-memory stand-in for the kernel maps.
    #[derive(Default)]
    struct FakeKernel {
        tracked: Vec<u32>,
        classes: BTreeMap<(u32, i32), FileClass>,
        stats: Vec<(OpKey, OpTotals)>,
    }

    impl Kernel for std::sync::Arc<std::sync::Mutex<FakeKernel>> {
        fn track(&mut self, tgid: u32) -> Result<(), KernelError> {
            self.lock().expect("lock").tracked.push(tgid);
            Ok(())
        }
        fn untrack(&mut self, tgid: u32) -> Result<(), KernelError> {
            let mut k = self.lock().expect("lock");
            k.tracked.retain(|t| *t != tgid);
            k.stats.retain(|(key, _)| key.tgid != tgid);
            k.classes.retain(|(t, _), _| *t != tgid);
            Ok(())
        }
        fn set_fd_class(
            &mut self,
            tgid: u32,
            fd: i32,
            class: FileClass,
        ) -> Result<(), KernelError> {
            self.lock().expect("lock").classes.insert((tgid, fd), class);
            Ok(())
        }
        fn op_stats(&self) -> Result<Vec<(OpKey, OpTotals)>, KernelError> {
            Ok(self.lock().expect("lock").stats.clone())
        }
        fn drops(&self) -> Result<KernelDrops, KernelError> {
            Ok(KernelDrops::default())
        }
    }

    fn process(pid: u32, start_time: u64, name: &str) -> EtcdProcess {
        EtcdProcess {
            pid,
            start_time,
            identity: crate::identity::parse(
                &["etcd".to_string(), format!("--name={name}")],
                &[],
                Path::new("/"),
                |_| None,
            ),
        }
    }

    fn wal_fsyncs(count: u64) -> OpTotals {
        OpTotals::from_per_cpu([&OpStats {
            count,
            ..OpStats::ZERO
        }])
    }

    #[test]
    fn counters_survive_a_member_restart() {
        let kernel = std::sync::Arc::new(std::sync::Mutex::new(FakeKernel::default()));
        let mut tracker = Tracker::new(
            ProcFs::new("/nonexistent-proc"),
            Matcher::new(None),
            Some(Box::new(kernel.clone())),
        );
        let report = tracker.apply(vec![process(100, 1, "m0"), process(101, 1, "m1")]);
        assert_eq!(report.added.len(), 2);
        assert_eq!(kernel.lock().expect("lock").tracked, vec![100, 101]);

        let key = |tgid| OpKey {
            tgid,
            op: Op::Fdatasync as u8,
            class: FileClass::Wal as u8,
            _pad: [0; 2],
        };
        kernel
            .lock()
            .expect("lock")
            .stats
            .push((key(100), wal_fsyncs(7)));
        // m0 restarts: same pid number reused with a new start time.
        let report = tracker.apply(vec![process(100, 2, "m0"), process(101, 1, "m1")]);
        assert_eq!(report.removed, vec![100]);
        assert_eq!(report.added, vec![100]);
        kernel
            .lock()
            .expect("lock")
            .stats
            .push((key(100), wal_fsyncs(5)));

        let snapshot = tracker.snapshot().expect("snapshot");
        assert_eq!(snapshot["m0"][&(Op::Fdatasync, FileClass::Wal)].count, 12);
        assert!(!snapshot.contains_key("m1"), "no counters yet for m1");
    }

    #[test]
    fn client_only_tracks_without_a_kernel() {
        let mut tracker = Tracker::new(ProcFs::new("/nonexistent-proc"), Matcher::new(None), None);
        let report = tracker.apply(vec![process(5, 1, "solo")]);
        assert_eq!(report.added, vec![5]);
        assert_eq!(tracker.member_of(5), Some("solo"));
        assert!(tracker.snapshot().expect("snapshot").is_empty());
    }
}
