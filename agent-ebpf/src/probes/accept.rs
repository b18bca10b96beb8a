//! `accept` / `accept4`: an accepted connection inherits its listener's class (client or peer
//! socket) in the kernel, so even its first write is attributed without waiting for user space.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use etcd_monitor_agent_common::syscall::FdKey;

use crate::{
    maps::{ACCEPTS, FD_CLASS},
    syscall,
};

#[inline(always)]
fn enter(ctx: &TracePointContext) -> u32 {
    if !syscall::current_is_tracked() {
        return 0;
    }
    let listener = syscall::arg::<0>(ctx) as i32;
    let _ = ACCEPTS.insert(bpf_get_current_pid_tgid(), listener, 0);
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !syscall::is_tracked((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: the value is copied before the entry is removed.
    let Some(listener) = (unsafe { ACCEPTS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACCEPTS.remove(pid_tgid);
    let ret = syscall::ret(ctx);
    if ret < 0 {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: read-only lookup of a u8.
    if let Some(class) = unsafe { FD_CLASS.get(FdKey { tgid, fd: listener }) }.copied() {
        let _ = FD_CLASS.insert(
            FdKey {
                tgid,
                fd: ret as i32,
            },
            class,
            0,
        );
    }
    0
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter(&ctx)
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    enter(&ctx)
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}
