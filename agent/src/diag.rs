//! Diagnosis evidence in user space: which block devices hold each member's data dir, which
//! threads each member has, who else issues I/O to those devices, and the CPU throttling of each
//! member's cgroup (`cpu.stat`, cgroup v1 or v2).
//!
//! The kernel side (`agent-ebpf/src/probes/{block,sched}.rs`) aggregates in maps; this module
//! tells it what to watch (`BLOCK_DEVS`, `TIDS`) and turns its counters into a [`DiagSnapshot`].

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use etcd_monitor_agent_common::diag::{self as abi, Issuer, IssuerKey, kernel_dev};

use crate::{procfs::ProcFs, stats::OpTotals};

/// Issuers shipped per device: the most active since the previous snapshot.
pub const TOP_ISSUERS: usize = 16;

/// `PF_KTHREAD` in `/proc/PID/stat` flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Reads the block and sched tracepoint field offsets from tracefs; missing fields are
/// `OFF_MISSING` and the programs skip those events.
pub fn read_offsets(tracefs: &Path) -> [u32; abi::DOFF_LEN as usize] {
    let mut offsets = [etcd_monitor_agent_common::net::OFF_MISSING; abi::DOFF_LEN as usize];
    let wanted: [(&str, &[(u32, &str)]); 5] = [
        (
            "events/block/block_rq_issue/format",
            &[
                (abi::DOFF_RQI_DEV, "dev"),
                (abi::DOFF_RQI_SECTOR, "sector"),
                (abi::DOFF_RQI_BYTES, "bytes"),
            ],
        ),
        (
            "events/block/block_rq_complete/format",
            &[
                (abi::DOFF_RQC_DEV, "dev"),
                (abi::DOFF_RQC_SECTOR, "sector"),
                (abi::DOFF_RQC_ERROR, "error"),
            ],
        ),
        (
            "events/block/block_bio_queue/format",
            &[
                (abi::DOFF_BIO_DEV, "dev"),
                (abi::DOFF_BIO_NR_SECTOR, "nr_sector"),
            ],
        ),
        (
            "events/sched/sched_wakeup/format",
            &[(abi::DOFF_WAKEUP_PID, "pid")],
        ),
        (
            "events/sched/sched_switch/format",
            &[
                (abi::DOFF_SWITCH_PREV_PID, "prev_pid"),
                (abi::DOFF_SWITCH_PREV_STATE, "prev_state"),
                (abi::DOFF_SWITCH_NEXT_PID, "next_pid"),
            ],
        ),
    ];
    crate::net::fill_offsets(tracefs, &wanted, &mut offsets);
    offsets
}

/// A block device: its numbers and kernel name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockDevice {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Kernel name (`loop2`, `nvme0n1p1`), or `major:minor` when sysfs does not say.
    pub name: String,
}

impl BlockDevice {
    /// The `dev_t` as the block tracepoints report it.
    pub fn kernel_dev(&self) -> u32 {
        kernel_dev(self.major, self.minor)
    }

    /// `major:minor`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The device `major:minor`, named from sysfs (`sys` is normally `/sys`).
    pub fn from_numbers(sys: &Path, major: u32, minor: u32) -> Self {
        let uevent = std::fs::read_to_string(sys.join(format!("dev/block/{major}:{minor}/uevent")))
            .unwrap_or_default();
        let name = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map_or_else(|| format!("{major}:{minor}"), str::to_string);
        Self { major, minor, name }
    }
}

/// The block devices under `path`: the device of its filesystem and, for a partition, the whole
/// disk (requests are issued against the disk, bios against the partition). Empty for
/// filesystems without a block device (tmpfs, overlay without a resolvable source).
#[cfg(unix)]
pub fn devices_under(path: &Path, sys: &Path) -> Vec<BlockDevice> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let (major, minor) = split_dev(meta.dev());
    if major == 0 {
        return Vec::new();
    }
    let mut out = vec![BlockDevice::from_numbers(sys, major, minor)];
    let block = sys.join(format!("dev/block/{major}:{minor}"));
    if block.join("partition").exists()
        && let Ok(parent) = std::fs::read_to_string(block.join("../dev"))
        && let Some((ma, mi)) = parent.trim().split_once(':')
        && let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse())
    {
        out.push(BlockDevice::from_numbers(sys, ma, mi));
    }
    out
}

/// The same on hosts without block devices: nothing to watch.
#[cfg(not(unix))]
pub fn devices_under(_path: &Path, _sys: &Path) -> Vec<BlockDevice> {
    Vec::new()
}

/// Major and minor of a user-space `dev_t` (glibc's encoding).
pub const fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// CPU bandwidth figures of a cgroup (`cpu.stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuThrottle {
    /// Enforcement periods elapsed.
    pub nr_periods: u64,
    /// Periods in which the group was throttled.
    pub nr_throttled: u64,
    /// Total time the group was throttled, nanoseconds.
    pub throttled_ns: u64,
    /// Whether the figures came from cgroup v2.
    pub v2: bool,
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Default)]
pub struct CgroupMounts {
    /// The cgroup v2 mount, when there is one.
    pub v2: Option<PathBuf>,
    /// The cgroup v1 hierarchy holding the `cpu` controller, when there is one.
    pub v1_cpu: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Parses a mountinfo text.
    pub fn parse(text: &str) -> Self {
        let mut mounts = Self::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut r = right.split_whitespace();
            let fstype = r.next().unwrap_or_default();
            let _source = r.next();
            let options = r.next().unwrap_or_default();
            if fstype == "cgroup2" && mounts.v2.is_none() {
                mounts.v2 = Some(PathBuf::from(mount_point));
            } else if fstype == "cgroup" && options.split(',').any(|o| o == "cpu") {
                mounts.v1_cpu = Some(PathBuf::from(mount_point));
            }
        }
        mounts
    }

    /// The `cpu.stat` of `pid`'s CPU cgroup and its path, v1 `cpu` controller first (on a
    /// hybrid host v2 has no cpu controller), else v2.
    pub fn cpu_stat_path(&self, proc: &ProcFs, pid: u32) -> Option<(PathBuf, String, bool)> {
        let text = std::fs::read_to_string(proc.path(pid, "cgroup")).ok()?;
        if let Some(root) = &self.v1_cpu {
            for line in text.lines() {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                if controllers.split(',').any(|c| c == "cpu") {
                    let dir = root.join(path.trim_start_matches('/'));
                    return Some((dir.join("cpu.stat"), path.to_string(), false));
                }
            }
        }
        let root = self.v2.as_ref()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = root.join(path.trim_start_matches('/'));
        Some((dir.join("cpu.stat"), path.to_string(), true))
    }
}

/// Parses `cpu.stat` (v1: `throttled_time` in ns; v2: `throttled_usec`). `None` when the file
/// has no bandwidth figures (no cpu controller on that cgroup).
pub fn parse_cpu_stat(text: &str, v2: bool) -> Option<CpuThrottle> {
    let mut values = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(' ')
            && let Ok(v) = v.trim().parse::<u64>()
        {
            values.insert(k, v);
        }
    }
    let throttled_ns = if v2 {
        values.get("throttled_usec")?.saturating_mul(1000)
    } else {
        *values.get("throttled_time")?
    };
    Some(CpuThrottle {
        nr_periods: *values.get("nr_periods")?,
        nr_throttled: *values.get("nr_throttled")?,
        throttled_ns,
        v2,
    })
}

/// The cgroup a process is in, for display: the v2 path when it is not the root, else the
/// first non-root v1 path among blkio, cpu, memory.
pub fn cgroup_label(proc: &ProcFs, pid: u32) -> String {
    let Ok(text) = std::fs::read_to_string(proc.path(pid, "cgroup")) else {
        return String::new();
    };
    let mut v1: BTreeMap<usize, String> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() && path != "/" {
            return path.to_string();
        }
        for (rank, wanted) in ["blkio", "cpu", "memory"].iter().enumerate() {
            if path != "/" && controllers.split(',').any(|c| c == *wanted) {
                v1.entry(rank).or_insert_with(|| path.to_string());
            }
        }
    }
    v1.into_values().next().unwrap_or_else(|| "/".to_string())
}

/// Whether `pid` is a kernel thread (jbd2, kworker…), whose I/O is done on behalf of others.
pub fn is_kernel_thread(proc: &ProcFs, pid: u32) -> bool {
    proc.stat(pid)
        .is_some_and(|stat| stat.flags & PF_KTHREAD != 0)
}

/// Thread ids of `pid` (`/proc/PID/task`).
pub fn threads(proc: &ProcFs, pid: u32) -> Vec<u32> {
    std::fs::read_dir(proc.path(pid, "task"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One process that issued I/O to a watched device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerView {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// cgroup (see [`cgroup_label`]); the kernel's cgroup id when the process is gone.
    pub cgroup: String,
    /// Bytes submitted since the agent started watching the device.
    pub bytes: u64,
    /// Bios submitted.
    pub ios: u64,
    /// A kernel thread (its I/O is on behalf of others, e.g. a filesystem journal).
    pub kernel_thread: bool,
    /// The traced member this pid is, if any.
    pub member: Option<String>,
}

/// One watched device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    /// The block device (major:minor, name) a member's data dir lives on.
    pub device: BlockDevice,
    /// Members whose data dir is on it.
    pub members: Vec<String>,
    /// Request service time (`block_rq_issue` → `block_rq_complete`).
    pub service: OpTotals,
    /// The most active issuers since the previous snapshot (cumulative counts).
    pub issuers: Vec<IssuerView>,
}

/// Scheduler figures of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedView {
    /// Member name.
    pub member: String,
    /// Run-queue latency of its threads.
    pub runq: OpTotals,
    /// Its CPU cgroup path.
    pub cgroup: String,
    /// Its cgroup's bandwidth figures, when the cgroup has a cpu controller.
    pub throttle: Option<CpuThrottle>,
}

/// Everything the diagnosis needs from this node, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiagSnapshot {
    /// Devices under the members' data dirs.
    pub devices: Vec<DeviceView>,
    /// Per-member scheduler figures.
    pub sched: Vec<SchedView>,
}

/// State carried between snapshots (to rank issuers by recent activity).
#[derive(Debug, Default)]
pub struct DiagState {
    previous: HashMap<IssuerKey, u64>,
    /// Pids seen to be kernel threads while they lived (short-lived ones such as
    /// `ext4lazyinit` are gone from /proc by the time their I/O is ranked).
    kthreads: std::collections::HashSet<u32>,
}

impl DiagState {
    /// Ranks each device's issuers by bytes since the previous call and keeps the top
    /// [`TOP_ISSUERS`] (with their cumulative counts).
    pub fn issuers(
        &mut self,
        raw: &[(IssuerKey, Issuer)],
        proc: &ProcFs,
        member_of: impl Fn(u32) -> Option<String>,
    ) -> BTreeMap<u32, Vec<IssuerView>> {
        let mut by_dev: BTreeMap<u32, Vec<(u64, IssuerKey, Issuer)>> = BTreeMap::new();
        for (key, issuer) in raw {
            let before = self.previous.get(key).copied().unwrap_or(0);
            by_dev.entry(key.dev).or_default().push((
                issuer.bytes.saturating_sub(before),
                *key,
                *issuer,
            ));
        }
        // Only processes that issued I/O since the last call are looked up in /proc.
        for (key, issuer) in raw {
            let active = self.previous.get(key) != Some(&issuer.bytes);
            if active && !self.kthreads.contains(&key.tgid) && is_kernel_thread(proc, key.tgid) {
                self.kthreads.insert(key.tgid);
            }
        }
        self.previous = raw.iter().map(|(k, i)| (*k, i.bytes)).collect();
        self.kthreads
            .retain(|pid| raw.iter().any(|(k, _)| k.tgid == *pid));
        let kthreads = &self.kthreads;
        by_dev
            .into_iter()
            .map(|(dev, mut list)| {
                list.sort_by(|a, b| b.0.cmp(&a.0).then(b.2.bytes.cmp(&a.2.bytes)));
                list.truncate(TOP_ISSUERS);
                let views = list
                    .into_iter()
                    .map(|(_, key, issuer)| {
                        let comm_len = issuer.comm.iter().position(|b| *b == 0).unwrap_or(16);
                        let cgroup = match cgroup_label(proc, key.tgid) {
                            c if c.is_empty() => format!("id:{}", issuer.cgroup_id),
                            c => c,
                        };
                        IssuerView {
                            pid: key.tgid,
                            comm: String::from_utf8_lossy(&issuer.comm[..comm_len]).into_owned(),
                            cgroup,
                            bytes: issuer.bytes,
                            ios: issuer.ios,
                            kernel_thread: kthreads.contains(&key.tgid),
                            member: member_of(key.tgid),
                        }
                    })
                    .collect();
                (dev, views)
            })
            .collect()
    }
}

/// Sums the per-CPU values of one `IO_ISSUERS` entry.
pub fn sum_issuer<'a>(values: impl IntoIterator<Item = &'a Issuer>) -> Option<Issuer> {
    let mut total: Option<Issuer> = None;
    for v in values {
        match total.as_mut() {
            None => total = Some(*v),
            Some(t) => {
                t.bytes += v.bytes;
                t.ios += v.ios;
                if t.comm[0] == 0 {
                    t.comm = v.comm;
                    t.cgroup_id = v.cgroup_id;
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_dev_numbers() {
        assert_eq!(split_dev(0x0702), (7, 2));
        assert_eq!(split_dev((259 << 8) | 1), (259, 1));
        assert_eq!(split_dev(0x0100_0701), (7, 0x1001));
    }

    #[test]
    fn cpu_stat_v1_and_v2() {
        let v1 = "nr_periods 10\nnr_throttled 4\nthrottled_time 123456\nnr_bursts 0\n";
        assert_eq!(
            parse_cpu_stat(v1, false),
            Some(CpuThrottle {
                nr_periods: 10,
                nr_throttled: 4,
                throttled_ns: 123_456,
                v2: false
            })
        );
        let v2 = "usage_usec 100\nuser_usec 50\nsystem_usec 50\nnr_periods 7\nnr_throttled 3\nthrottled_usec 20\n";
        assert_eq!(
            parse_cpu_stat(v2, true).map(|t| (t.nr_throttled, t.throttled_ns)),
            Some((3, 20_000))
        );
        // A v2 cgroup without the cpu controller has only usage figures.
        assert_eq!(parse_cpu_stat("usage_usec 100\n", true), None);
    }

    #[test]
    fn finds_cgroup_mounts() {
        let text = "35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    36 25 0:31 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
                    40 25 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let m = CgroupMounts::parse(text);
        assert_eq!(m.v1_cpu.as_deref(), Some(Path::new("/sys/fs/cgroup/cpu")));
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        let pure_v2 = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = CgroupMounts::parse(pure_v2);
        assert!(m.v1_cpu.is_none());
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn issuers_are_ranked_by_recent_bytes() {
        let issuer = |bytes: u64, comm: &[u8]| {
            let mut c = [0u8; 16];
            c[..comm.len()].copy_from_slice(comm);
            Issuer {
                bytes,
                ios: 1,
                cgroup_id: 1,
                comm: c,
            }
        };
        let proc = ProcFs::new("/nonexistent");
        let mut state = DiagState::default();
        let old = IssuerKey { dev: 1, tgid: 10 };
        let new = IssuerKey { dev: 1, tgid: 20 };
        state.issuers(&[(old, issuer(1_000_000, b"old"))], &proc, |_| None);
        let ranked = state.issuers(
            &[
                (old, issuer(1_000_100, b"old")),
                (new, issuer(5_000, b"dd")),
            ],
            &proc,
            |_| None,
        );
        let list = &ranked[&1];
        assert_eq!(
            list[0].comm, "dd",
            "most bytes since the last snapshot first"
        );
        assert_eq!(list[1].bytes, 1_000_100, "cumulative counts are shipped");
    }
}
