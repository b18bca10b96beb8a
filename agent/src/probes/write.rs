//! `write`, `pwrite64`, `writev`, `pwritev`: WAL appends, bbolt page writes, socket sends.

use super::{Probe, ProbeGroup, syscall_pair};

const WRITE: [Probe; 2] =
    syscall_pair("sys_enter_write", "sys_exit_write", true, ProbeGroup::Write);
const PWRITE64: [Probe; 2] = syscall_pair(
    "sys_enter_pwrite64",
    "sys_exit_pwrite64",
    true,
    ProbeGroup::Write,
);
const WRITEV: [Probe; 2] = syscall_pair(
    "sys_enter_writev",
    "sys_exit_writev",
    false,
    ProbeGroup::Write,
);
const PWRITEV: [Probe; 2] = syscall_pair(
    "sys_enter_pwritev",
    "sys_exit_pwritev",
    false,
    ProbeGroup::Write,
);

/// The write probes.
pub const PROBES: &[Probe] = &[
    WRITE[0],
    WRITE[1],
    PWRITE64[0],
    PWRITE64[1],
    WRITEV[0],
    WRITEV[1],
    PWRITEV[0],
    PWRITEV[1],
];
