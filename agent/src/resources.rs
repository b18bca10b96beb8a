//! Resource evidence per traced member, read from `/proc`, the cgroup filesystem and
//! `statvfs`: CPU (cores used over the last sampling interval, and the share of the member's
//! cgroup quota or of the node's cores), RSS (and the share of its cgroup memory limit or of
//! the node's memory), the data dir's filesystem (size, used, free, inodes), open fds and
//! established client connections; and the node's memory.
//!
//! A [`ResourceSampler`] keeps the previous CPU reading of each process so the CPU figure is a
//! rate over the sampler's own interval (not over whatever happened to read last). Every reader
//! here returns `None` on error: processes come and go while we read.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Instant,
};

pub use crate::cgroups::{CgroupRoots, ProcCgroups, parse_proc_cgroup};
use crate::{
    cgroups::ancestors,
    identity::{MemberIdentity, url_port},
    procfs::ProcFs,
};

/// v1 `memory.limit_in_bytes` at or above this is "no limit" (the kernel reports
/// `PAGE_COUNTER_MAX` pages, 0x7FFF_FFFF_FFFF_F000 on 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// TCP state ESTABLISHED in `/proc/net/tcp`.
const TCP_ESTABLISHED: u8 = 1;

/// The node's memory, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// `MemTotal`, bytes.
    pub total_bytes: u64,
    /// `MemAvailable`, bytes: what can be allocated without swapping.
    pub available_bytes: u64,
}

/// The data dir's filesystem as `statvfs` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Total size (`f_blocks * f_frsize`).
    pub size_bytes: u64,
    /// Used, as `df` counts it (`(f_blocks - f_bfree) * f_frsize`).
    pub used_bytes: u64,
    /// Available to an unprivileged process such as etcd (`f_bavail * f_frsize`): the
    /// root-reserved blocks are neither used nor free.
    pub free_bytes: u64,
    /// Inodes in all (`f_files`).
    pub inodes_total: u64,
    /// Inodes free (`f_ffree`).
    pub inodes_free: u64,
}

impl FsUsage {
    /// Used share as `df` prints it: used / (used + available), 0..=1.
    pub fn used_ratio(&self) -> f64 {
        let denominator = self.used_bytes + self.free_bytes;
        if denominator == 0 {
            0.0
        } else {
            self.used_bytes as f64 / denominator as f64
        }
    }
}

/// A limit and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// The limit (cores for CPU, bytes for memory).
    pub value: f64,
    /// `true` when a cgroup set it; `false` when the node's capacity is the limit.
    pub from_cgroup: bool,
}

/// The resource figures of one member at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberResources {
    /// Member name.
    pub member: String,
    /// Its process id.
    pub pid: u32,
    /// CPU time used since the process started (utime + stime), seconds.
    pub cpu_seconds_total: f64,
    /// Cores used on average over the last sampling interval; `None` on the first reading.
    pub cpu_cores: Option<f64>,
    /// The CPU the member may use: its cgroup quota (smallest over its cgroup's ancestors),
    /// else the node's online cores.
    pub cpu_limit: Limit,
    /// Resident set size (`VmRSS`), bytes.
    pub rss_bytes: Option<u64>,
    /// The memory the member may use: its cgroup limit (smallest over the ancestors, capped
    /// at the node's memory), else the node's `MemTotal`.
    pub memory_limit: Option<Limit>,
    /// The data dir's filesystem, resolved in the member's own root.
    pub fs: Option<FsUsage>,
    /// Entries of `/proc/PID/fd`.
    pub open_fds: Option<u64>,
    /// ESTABLISHED TCP sockets the member owns on its client listen ports.
    pub client_connections: Option<u64>,
    /// The process state letter of `/proc/PID/stat` (`R`, `S`, `D`, `T` stopped, `t`
    /// traced…).
    pub state: Option<char>,
    /// Its I/O cgroup limits and counters, and PSI (see `cgroup_io`).
    pub cgroup_io: Option<crate::cgroup_io::CgroupIo>,
    /// When this sample was read (Unix ms): the collector's rates are over these.
    pub sampled_at_ms: u64,
}

impl MemberResources {
    /// Cores used as a share of the CPU limit.
    pub fn cpu_limit_ratio(&self) -> Option<f64> {
        let cores = self.cpu_cores?;
        (self.cpu_limit.value > 0.0).then(|| cores / self.cpu_limit.value)
    }

    /// RSS as a share of the memory limit.
    pub fn memory_limit_ratio(&self) -> Option<f64> {
        let rss = self.rss_bytes? as f64;
        let limit = self.memory_limit?.value;
        (limit > 0.0).then(|| rss / limit)
    }
}

/// Everything the sampler read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSnapshot {
    /// The node's memory, when `/proc/meminfo` was readable.
    pub node_memory: Option<NodeMemory>,
    /// The node's online CPUs.
    pub node_cpus: u32,
    /// Per member, sorted by name.
    pub members: Vec<MemberResources>,
    /// Reads that failed since the agent started, by what was being read (`meminfo`,
    /// `process` — the member vanished or its pid was reused mid-sample —, `cgroup`, `rss`,
    /// `fs`, `fds`); the figure is then left out rather than reported as zero.
    pub read_failures: BTreeMap<&'static str, u64>,
}

/// The latest sample, shared between the sampling task, `/metrics` and the status sender.
pub type SharedResources = std::sync::Arc<std::sync::Mutex<ResourceSnapshot>>;

/// How often the agent samples resources; CPU cores are averaged over this interval.
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// One process to sample: what the tracker knows about it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Process id.
    pub pid: u32,
    /// Start time (clock ticks since boot), to tell a reused pid apart.
    pub start_time: u64,
    /// Who it is.
    pub identity: MemberIdentity,
}

/// utime + stime (fields 14 and 15) of `/proc/PID/stat`, clock ticks.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // comm may contain spaces and parentheses: fields restart after the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// The state letter (field 3) of `/proc/PID/stat`.
pub fn parse_stat_state(text: &str) -> Option<char> {
    text.get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// `VmRSS` of `/proc/PID/status`, bytes.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    kib_field(text, "VmRSS:")
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<NodeMemory> {
    Some(NodeMemory {
        total_bytes: kib_field(text, "MemTotal:")?,
        available_bytes: kib_field(text, "MemAvailable:")?,
    })
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    let mut words = line.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value.saturating_mul(1024)),
        Some(_) => None,
    }
}

/// cgroup v2 `cpu.max` ("max 100000" or "50000 100000"): the quota in cores, `None` when
/// unlimited or unreadable.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    let period: f64 = words.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then(|| quota / period)
}

/// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`: the quota in cores, `None` when
/// unlimited (-1) or unreadable.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`: bytes, `None` when unlimited.
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    let value: u64 = text.parse().ok()?;
    (value < V1_UNLIMITED).then_some(value)
}

/// Smallest value `read` finds in `dirs`.
fn min_over<T: PartialOrd + Copy>(
    dirs: &[PathBuf],
    read: impl Fn(&Path) -> Option<T>,
) -> Option<T> {
    dirs.iter()
        .filter_map(|d| read(d))
        .fold(None, |best, v| match best {
            Some(b) if b <= v => Some(b),
            _ => Some(v),
        })
}

/// Now as Unix milliseconds (0 if the clock is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn read(path: PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A positive `sysconf` value.
#[cfg(unix)]
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Reads the resource figures of traced members.
#[derive(Debug)]
pub struct ResourceSampler {
    proc: ProcFs,
    roots: CgroupRoots,
    clock_ticks: f64,
    node_cpus: u32,
    /// pid → (start time, CPU ticks, when read).
    previous: HashMap<u32, (u64, u64, Instant)>,
    /// Failed reads by figure, cumulative.
    failures: BTreeMap<&'static str, u64>,
}

impl ResourceSampler {
    /// A sampler over `proc`, with the cgroup mounts of the agent's namespace.
    pub fn new(proc: ProcFs) -> Self {
        Self::with_roots(proc, CgroupRoots::detect())
    }

    /// A sampler with given cgroup mounts.
    pub fn with_roots(proc: ProcFs, roots: CgroupRoots) -> Self {
        #[cfg(unix)]
        let (ticks, cpus) = (
            sysconf(libc::_SC_CLK_TCK),
            sysconf(libc::_SC_NPROCESSORS_ONLN),
        );
        #[cfg(not(unix))]
        let (ticks, cpus): (Option<u64>, Option<u64>) = (
            None,
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u64),
        );
        Self {
            proc,
            roots,
            clock_ticks: ticks.map_or(100.0, |t| t as f64),
            node_cpus: cpus.and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
            previous: HashMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// Reads every target now.
    pub fn sample(&mut self, targets: &[Target]) -> ResourceSnapshot {
        let node_memory = read(PathBuf::from("/proc/meminfo")).and_then(|t| parse_meminfo(&t));
        if node_memory.is_none() {
            self.failed("meminfo");
        }
        let now = Instant::now();
        let mut members: Vec<MemberResources> = targets
            .iter()
            .filter_map(|t| self.member(t, node_memory, now))
            .collect();
        members.sort_by(|a, b| a.member.cmp(&b.member).then(a.pid.cmp(&b.pid)));
        self.previous
            .retain(|pid, _| targets.iter().any(|t| t.pid == *pid));
        ResourceSnapshot {
            node_memory,
            node_cpus: self.node_cpus,
            members,
            read_failures: self.failures.clone(),
        }
    }

    fn failed(&mut self, figure: &'static str) {
        *self.failures.entry(figure).or_default() += 1;
    }

    /// `value`, counting a failure of `figure` when it is `None`.
    fn counted<T>(&mut self, figure: &'static str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.failed(figure);
        }
        value
    }

    fn member(
        &mut self,
        target: &Target,
        node_memory: Option<NodeMemory>,
        now: Instant,
    ) -> Option<MemberResources> {
        let pid = target.pid;
        // A process that is gone (or a reused pid) is not sampled.
        let stat = read(self.proc.path(pid, "stat"));
        let ticks = stat.as_deref().and_then(parse_stat_cpu_ticks);
        let Some(ticks) = ticks.filter(|_| self.proc.start_time(pid) == Some(target.start_time))
        else {
            self.failed("process");
            return None;
        };
        let cpu_cores = match self.previous.insert(pid, (target.start_time, ticks, now)) {
            Some((start, before, then)) if start == target.start_time => {
                let seconds = now.duration_since(then).as_secs_f64();
                (seconds > 0.0)
                    .then(|| ticks.saturating_sub(before) as f64 / self.clock_ticks / seconds)
            }
            _ => None,
        };
        let cgroups = read(self.proc.path(pid, "cgroup")).map(|t| parse_proc_cgroup(&t));
        let cgroups = self.counted("cgroup", cgroups).unwrap_or_default();
        let open_fds = std::fs::read_dir(self.proc.path(pid, "fd"))
            .ok()
            .map(|d| d.count() as u64);
        let open_fds = self.counted("fds", open_fds);
        let client_connections = self.client_connections(target);
        let rss_bytes = read(self.proc.path(pid, "status")).and_then(|t| parse_status_rss(&t));
        let rss_bytes = self.counted("rss", rss_bytes);
        let fs = data_dir_usage(&self.proc.path(pid, "root"), &target.identity.data_dir);
        let fs = self.counted("fs", fs);
        let cgroup_io = crate::cgroup_io::read_member(&self.roots, &cgroups, self.proc.root());
        let cgroup_io = self.counted("cgroup_io", cgroup_io);
        Some(MemberResources {
            member: target.identity.name.clone(),
            pid,
            cpu_seconds_total: ticks as f64 / self.clock_ticks,
            cpu_cores,
            cpu_limit: self.cpu_limit(pid, &cgroups),
            rss_bytes,
            memory_limit: self.memory_limit_or_node(pid, &cgroups, node_memory),
            fs,
            open_fds,
            client_connections,
            state: stat.as_deref().and_then(parse_stat_state),
            cgroup_io,
            sampled_at_ms: unix_ms(),
        })
    }

    /// The member's cgroup CPU quota when below the node's cores, else the node's cores.
    fn cpu_limit(&self, pid: u32, cgroups: &ProcCgroups) -> Limit {
        let node_cores = f64::from(self.node_cpus);
        match self.cpu_quota(pid, cgroups) {
            Some(q) if q < node_cores => Limit {
                value: q,
                from_cgroup: true,
            },
            _ => Limit {
                value: node_cores,
                from_cgroup: false,
            },
        }
    }

    /// The member's cgroup memory limit capped at the node's memory, else the node's memory.
    fn memory_limit_or_node(
        &self,
        pid: u32,
        cgroups: &ProcCgroups,
        node_memory: Option<NodeMemory>,
    ) -> Option<Limit> {
        let node_total = node_memory.map(|m| m.total_bytes);
        match (self.memory_limit(pid, cgroups), node_total) {
            (Some(l), Some(total)) if l < total => Some(Limit {
                value: l as f64,
                from_cgroup: true,
            }),
            (Some(l), None) => Some(Limit {
                value: l as f64,
                from_cgroup: true,
            }),
            (_, Some(total)) => Some(Limit {
                value: total as f64,
                from_cgroup: false,
            }),
            (None, None) => None,
        }
    }

    /// Files of `controller` for `pid`: its cgroup and every ancestor in the agent's view; when
    /// that path is not reachable from here (another cgroup namespace), the process's own view
    /// of its cgroup (`/proc/PID/root/sys/fs/cgroup[/controller]`).
    fn cgroup_dirs(&self, pid: u32, cgroups: &ProcCgroups, controller: &str) -> Vec<PathBuf> {
        let (mount, path, own_view) =
            match (self.roots.v1.get(controller), cgroups.v1.get(controller)) {
                (Some(root), Some(path)) => (
                    Some(root.clone()),
                    Some(path.clone()),
                    self.proc.path(pid, "root/sys/fs/cgroup").join(controller),
                ),
                _ => (
                    self.roots.v2.clone(),
                    cgroups.v2.clone(),
                    self.proc.path(pid, "root/sys/fs/cgroup"),
                ),
            };
        let dirs = match (mount, path) {
            (Some(root), Some(path)) => ancestors(&root, &path),
            _ => Vec::new(),
        };
        if dirs.first().is_some_and(|d| d.is_dir()) {
            dirs
        } else {
            vec![own_view]
        }
    }

    fn cpu_quota(&self, pid: u32, cgroups: &ProcCgroups) -> Option<f64> {
        let dirs = self.cgroup_dirs(pid, cgroups, "cpu");
        min_over(&dirs, |d| {
            match (
                read(d.join("cpu.cfs_quota_us")),
                read(d.join("cpu.cfs_period_us")),
            ) {
                (Some(q), Some(p)) => parse_cfs_quota(&q, &p),
                _ => read(d.join("cpu.max")).and_then(|t| parse_cpu_max(&t)),
            }
        })
    }

    fn memory_limit(&self, pid: u32, cgroups: &ProcCgroups) -> Option<u64> {
        let dirs = self.cgroup_dirs(pid, cgroups, "memory");
        min_over(&dirs, |d| {
            read(d.join("memory.limit_in_bytes"))
                .or_else(|| read(d.join("memory.max")))
                .and_then(|t| parse_memory_limit(&t))
        })
    }

    /// ESTABLISHED sockets in the member's network namespace whose local port is one of its
    /// client listen ports and whose inode is one of its own fds.
    fn client_connections(&self, target: &Target) -> Option<u64> {
        let ports: Vec<u16> = target
            .identity
            .listen_client_urls
            .iter()
            .filter_map(|u| url_port(u))
            .collect();
        if ports.is_empty() {
            return None;
        }
        let owned: std::collections::HashSet<u64> = self
            .proc
            .fds(target.pid)
            .iter()
            .filter_map(|(_, t)| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
            .collect();
        let sockets = self.proc.tcp_sockets(target.pid);
        Some(
            sockets
                .iter()
                .filter(|(inode, s)| {
                    s.state == TCP_ESTABLISHED
                        && ports.contains(&s.local_port)
                        && owned.contains(inode)
                })
                .count() as u64,
        )
    }
}

/// `statvfs` of `data_dir` as the member sees it: opened inside `process_root`
/// (`/proc/PID/root`) with `openat2(RESOLVE_IN_ROOT)`, so absolute symlinks resolve in the
/// member's root and its own mounts count; the nearest existing ancestor when the dir is not
/// there yet.
#[cfg(target_os = "linux")]
pub fn data_dir_usage(process_root: &Path, data_dir: &Path) -> Option<FsUsage> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let root = std::ffi::CString::new(process_root.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let root = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut path = data_dir.to_path_buf();
    loop {
        match crate::identity::open_in_root(root.as_raw_fd(), &path) {
            Ok(fd) => return fstatvfs(fd.as_raw_fd()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && path.pop() => {}
            Err(_) => return None,
        }
    }
}

/// Without Linux there is no `/proc/PID/root`: nothing to read.
#[cfg(not(target_os = "linux"))]
pub fn data_dir_usage(_process_root: &Path, _data_dir: &Path) -> Option<FsUsage> {
    None
}

/// `fstatvfs` of an open fd (an `O_PATH` fd is enough).
#[cfg(target_os = "linux")]
fn fstatvfs(fd: std::os::fd::RawFd) -> Option<FsUsage> {
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `s` is a writable statvfs; `fd` is open.
    if unsafe { libc::fstatvfs(fd, s.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstatvfs succeeded and filled it.
    let s = unsafe { s.assume_init() };
    Some(usage_from_statvfs(&s))
}

/// The figures of one `statvfs` result.
#[cfg(unix)]
#[allow(
    clippy::unnecessary_cast,
    reason = "the statvfs field types are u32 on some targets"
)]
pub fn usage_from_statvfs(s: &libc::statvfs) -> FsUsage {
    let frsize = if s.f_frsize > 0 {
        s.f_frsize as u64
    } else {
        s.f_bsize as u64
    };
    let blocks = s.f_blocks as u64;
    let bfree = s.f_bfree as u64;
    FsUsage {
        size_bytes: blocks.saturating_mul(frsize),
        used_bytes: blocks.saturating_sub(bfree).saturating_mul(frsize),
        free_bytes: (s.f_bavail as u64).saturating_mul(frsize),
        inodes_total: s.f_files as u64,
        inodes_free: s.f_ffree as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_skip_a_comm_with_spaces_and_parens() {
        let stat = "4242 (etcd (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 9876 1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("4242 (etcd) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_and_meminfo_in_bytes() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nThreads:\t12\n";
        assert_eq!(parse_status_rss(status), Some(51200 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), None);
        let meminfo = "MemTotal:       24684000 kB\nMemFree:          441000 kB\nMemAvailable:   23385000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some(NodeMemory {
                total_bytes: 24_684_000 * 1024,
                available_bytes: 23_385_000 * 1024
            })
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None, "no MemAvailable");
    }

    #[test]
    fn cgroup_limits() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("250000 100000"), Some(2.5));
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("20000\n", "100000\n"), Some(0.2));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_memory_limit("junk"), None);
    }

    #[test]
    fn proc_cgroup_v1_and_v2_lines() {
        let text = "12:cpu,cpuacct:/kubepods/pod1/abc\n4:memory:/kubepods/pod1/abc\n1:name=systemd:/x\n0::/kubepods.slice/abc\n";
        let c = parse_proc_cgroup(text);
        assert_eq!(c.v2.as_deref(), Some("/kubepods.slice/abc"));
        assert_eq!(c.v1["cpu"], "/kubepods/pod1/abc");
        assert_eq!(c.v1["cpuacct"], "/kubepods/pod1/abc");
        assert_eq!(c.v1["memory"], "/kubepods/pod1/abc");
    }

    #[test]
    fn cgroup_mounts_by_controller() {
        let text = "35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    40 25 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let r = CgroupRoots::parse(text);
        assert_eq!(r.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(r.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(r.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn ancestors_walk_up_to_the_mount_and_not_out_of_it() {
        let root = Path::new("/sys/fs/cgroup/cpu");
        assert_eq!(
            ancestors(root, "/a/b"),
            vec![root.join("a/b"), root.join("a"), root.to_path_buf()]
        );
        assert_eq!(ancestors(root, "/"), vec![root.to_path_buf()]);
        assert!(ancestors(root, "/../../x").is_empty());
    }

    #[test]
    fn limits_are_the_smallest_over_ancestors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let leaf = root.join("pod/ctr");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        std::fs::write(root.join("pod/cpu.max"), "50000 100000\n").expect("write");
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").expect("write");
        std::fs::write(root.join("pod/memory.max"), "max\n").expect("write");
        std::fs::write(leaf.join("memory.max"), "1048576\n").expect("write");
        let roots = CgroupRoots {
            v2: Some(root),
            v1: HashMap::new(),
        };
        let sampler = ResourceSampler::with_roots(ProcFs::new("/nonexistent"), roots);
        let cgroups = parse_proc_cgroup("0::/pod/ctr\n");
        assert_eq!(sampler.cpu_quota(1, &cgroups), Some(0.5));
        assert_eq!(sampler.memory_limit(1, &cgroups), Some(1 << 20));
    }

    #[test]
    fn samples_this_process() {
        let proc = ProcFs::new("/proc");
        let me = std::process::id();
        let start_time = proc.start_time(me).expect("start time");
        let here = std::env::current_dir().expect("cwd");
        let target = Target {
            pid: me,
            start_time,
            identity: crate::identity::parse(
                &[
                    "etcd".to_string(),
                    "--name=self".to_string(),
                    format!("--data-dir={}", here.display()),
                ],
                &[],
                &here,
                |_| None,
            ),
        };
        let mut sampler = ResourceSampler::new(proc);
        let first = sampler.sample(std::slice::from_ref(&target));
        let m = &first.members[0];
        assert_eq!(m.cpu_cores, None, "no rate on the first reading");
        assert!(m.cpu_limit.value > 0.0 && m.cpu_limit.value <= f64::from(first.node_cpus));
        assert!(m.rss_bytes.is_some_and(|r| r > 0));
        assert!(m.open_fds.is_some_and(|n| n >= 3));
        let fs = m.fs.expect("statvfs of the cwd");
        assert!(fs.size_bytes > 0 && fs.used_bytes <= fs.size_bytes);
        assert!(
            first
                .node_memory
                .is_some_and(|n| n.available_bytes <= n.total_bytes)
        );
        // Burn some CPU so the next reading has a rate.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 200 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let second = sampler.sample(std::slice::from_ref(&target));
        let cores = second.members[0].cpu_cores.expect("a rate");
        assert!(cores > 0.0, "{cores}");
        let wrong_start = Target {
            start_time: start_time + 1,
            ..target
        };
        let reused = sampler.sample(&[wrong_start]);
        assert!(reused.members.is_empty(), "a reused pid is not sampled");
        assert_eq!(reused.read_failures.get("process"), Some(&1));
    }
}
