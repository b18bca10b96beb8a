//! `read`, `readv`, `recvfrom`, `recvmsg`: bytes etcd receives on its sockets. Optional: without
//! them only the receive side of the socket figures is missing.

use super::{Probe, ProbeGroup, syscall_pair};

const READ: [Probe; 2] = syscall_pair("sys_enter_read", "sys_exit_read", false, ProbeGroup::Recv);
const READV: [Probe; 2] =
    syscall_pair("sys_enter_readv", "sys_exit_readv", false, ProbeGroup::Recv);
const RECVFROM: [Probe; 2] = syscall_pair(
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    false,
    ProbeGroup::Recv,
);
const RECVMSG: [Probe; 2] = syscall_pair(
    "sys_enter_recvmsg",
    "sys_exit_recvmsg",
    false,
    ProbeGroup::Recv,
);

/// The receive probes.
pub const PROBES: &[Probe] = &[
    READ[0],
    READ[1],
    READV[0],
    READV[1],
    RECVFROM[0],
    RECVFROM[1],
    RECVMSG[0],
    RECVMSG[1],
];
