//! `close`: forget the class of a closed fd, so a reused fd number is classified afresh.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use etcd_monitor_agent_common::syscall::FdKey;

use crate::{maps::FD_CLASS, syscall};

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    if !syscall::current_is_tracked() {
        return 0;
    }
    let key = FdKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: syscall::arg::<0>(&ctx) as i32,
    };
    let _ = FD_CLASS.remove(key);
    0
}
