//! `accept` / `accept4`: accepted connections inherit the listener's class in the kernel.
//! Optional: without them, user space classifies new connections a moment later.

use super::{Probe, ProbeGroup, syscall_pair};

const ACCEPT: [Probe; 2] =
    syscall_pair("sys_enter_accept", "sys_exit_accept", false, ProbeGroup::Fd);
const ACCEPT4: [Probe; 2] = syscall_pair(
    "sys_enter_accept4",
    "sys_exit_accept4",
    false,
    ProbeGroup::Fd,
);

/// The accept probes.
pub const PROBES: &[Probe] = &[ACCEPT[0], ACCEPT[1], ACCEPT4[0], ACCEPT4[1]];
