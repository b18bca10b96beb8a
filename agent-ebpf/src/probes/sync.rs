//! `fdatasync`, `fsync` and `sync_file_range`: the calls that make etcd's WAL and bbolt durable.

use etcd_monitor_agent_common::syscall::Op;

use super::syscall_pair;

syscall_pair!(
    sys_enter_fdatasync,
    sys_exit_fdatasync,
    Op::Fdatasync,
    |_ctx| 0
);
syscall_pair!(sys_enter_fsync, sys_exit_fsync, Op::Fsync, |_ctx| 0);
// sync_file_range(fd, offset, nbytes, flags): record nbytes.
syscall_pair!(
    sys_enter_sync_file_range,
    sys_exit_sync_file_range,
    Op::SyncFileRange,
    |ctx| crate::syscall::arg::<2>(&ctx)
);
