//! `fdatasync`, `fsync`, `sync_file_range`: etcd's WAL sync and bbolt's commit.

use super::{Probe, ProbeGroup, syscall_pair};

const FDATASYNC: [Probe; 2] = syscall_pair(
    "sys_enter_fdatasync",
    "sys_exit_fdatasync",
    true,
    ProbeGroup::Sync,
);
const FSYNC: [Probe; 2] = syscall_pair("sys_enter_fsync", "sys_exit_fsync", true, ProbeGroup::Sync);
const SYNC_FILE_RANGE: [Probe; 2] = syscall_pair(
    "sys_enter_sync_file_range",
    "sys_exit_sync_file_range",
    false,
    ProbeGroup::Sync,
);

/// The sync probes.
pub const PROBES: &[Probe] = &[
    FDATASYNC[0],
    FDATASYNC[1],
    FSYNC[0],
    FSYNC[1],
    SYNC_FILE_RANGE[0],
    SYNC_FILE_RANGE[1],
];
