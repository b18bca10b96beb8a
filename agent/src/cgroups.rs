//! Where a process's cgroups are: the hierarchies' mount points in the agent's mount
//! namespace, a process's `/proc/PID/cgroup` paths, and the directories from a cgroup up to
//! its root. Shared by the resource sampler (CPU and memory limits) and `cgroup_io` (I/O
//! limits and PSI).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// Where the cgroup hierarchies are mounted in the agent's mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupRoots {
    /// The cgroup v2 mount.
    pub v2: Option<PathBuf>,
    /// cgroup v1 mounts by controller (`cpu`, `memory`, `blkio`).
    pub v1: HashMap<String, PathBuf>,
}

impl CgroupRoots {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Parses a mountinfo text: the first `cgroup2` mount, and each v1 mount's controllers
    /// (from its super options).
    pub fn parse(text: &str) -> Self {
        let mut roots = Self::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut r = right.split_whitespace();
            let (Some(fstype), Some(_source), Some(options)) = (r.next(), r.next(), r.next())
            else {
                continue;
            };
            if fstype == "cgroup2" && roots.v2.is_none() {
                roots.v2 = Some(PathBuf::from(mount_point));
            } else if fstype == "cgroup" {
                for controller in ["cpu", "memory", "blkio"] {
                    if options.split(',').any(|o| o == controller) {
                        roots
                            .v1
                            .entry(controller.to_string())
                            .or_insert_with(|| PathBuf::from(mount_point));
                    }
                }
            }
        }
        roots
    }
}

/// A process's cgroup membership (`/proc/PID/cgroup`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    /// The v2 (unified) path, from the `0::` line.
    pub v2: Option<String>,
    /// v1 paths by controller.
    pub v1: HashMap<String, String>,
}

/// Parses `/proc/PID/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut out = ProcCgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            out.v2 = Some(path.to_string());
            continue;
        }
        for c in controllers.split(',') {
            out.v1.insert(c.to_string(), path.to_string());
        }
    }
    out
}

/// The directories of `path` and its ancestors under `root`, innermost first.
pub(crate) fn ancestors(root: &Path, path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return Vec::new(); // outside the agent's cgroup namespace: not reachable from here
    }
    let mut dirs = Vec::new();
    let mut current = root.join(relative);
    loop {
        dirs.push(current.clone());
        if current == root || !current.pop() || !current.starts_with(root) {
            break;
        }
    }
    dirs
}
