//! `read`, `readv`, `recvfrom`, `recvmsg`: what etcd receives on its client and peer sockets.
//! The exit half counts only socket fds (see `syscall::exit`), so WAL and db reads are not
//! network traffic.

use etcd_monitor_agent_common::syscall::Op;

use super::syscall_pair;

syscall_pair!(sys_enter_read, sys_exit_read, Op::Read, |_ctx| 0);
syscall_pair!(sys_enter_readv, sys_exit_readv, Op::Readv, |_ctx| 0);
syscall_pair!(
    sys_enter_recvfrom,
    sys_exit_recvfrom,
    Op::Recvfrom,
    |_ctx| 0
);
syscall_pair!(sys_enter_recvmsg, sys_exit_recvmsg, Op::Recvmsg, |_ctx| 0);
