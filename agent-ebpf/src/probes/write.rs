//! `write`, `pwrite64`, `writev`, `pwritev`: WAL appends, bbolt page writes and socket sends.

use etcd_monitor_agent_common::syscall::Op;

use super::syscall_pair;

syscall_pair!(sys_enter_write, sys_exit_write, Op::Write, |_ctx| 0);
syscall_pair!(
    sys_enter_pwrite64,
    sys_exit_pwrite64,
    Op::Pwrite64,
    |_ctx| 0
);
syscall_pair!(sys_enter_writev, sys_exit_writev, Op::Writev, |_ctx| 0);
syscall_pair!(sys_enter_pwritev, sys_exit_pwritev, Op::Pwritev, |_ctx| 0);
