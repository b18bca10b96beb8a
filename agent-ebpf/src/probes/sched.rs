//! `sched:sched_wakeup`, `sched:sched_wakeup_new`, `sched:sched_switch`: how long a runnable
//! thread of a tracked member waited for a CPU (run-queue latency). A thread becomes runnable
//! when it is woken, or when it is switched out while still runnable (preempted, or throttled by
//! its cgroup's CPU quota); the wait ends when it is switched in.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use etcd_monitor_agent_common::diag::{
    DOFF_SWITCH_NEXT_PID, DOFF_SWITCH_PREV_PID, DOFF_SWITCH_PREV_STATE, DOFF_WAKEUP_PID,
    PREV_STATE_SLEEP_MASK,
};

use super::block::field;
use crate::{
    maps::{DIAG_OFFSETS, RUNQ_STATS, TIDS, TRACKED, WAKE_TS},
    syscall::record_stats,
};

#[inline(always)]
fn is_member_thread(tid: u32) -> bool {
    // SAFETY: read-only lookup.
    unsafe { TIDS.get(tid).is_some() }
}

#[inline(always)]
fn mark_runnable(tid: u32) {
    let _ = WAKE_TS.insert(tid, unsafe { bpf_ktime_get_ns() }, 0);
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(pid) = field::<i32>(&ctx, offsets, DOFF_WAKEUP_PID) else {
        return 0;
    };
    if is_member_thread(pid as u32) {
        mark_runnable(pid as u32);
    }
    0
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(pid) = field::<i32>(&ctx, offsets, DOFF_WAKEUP_PID) else {
        return 0;
    };
    // A new thread of a tracked process: learn it here, before user space's next rescan.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: read-only lookup.
    if unsafe { TRACKED.get(tgid) }.is_some() {
        let _ = TIDS.insert(pid as u32, tgid, 0);
        mark_runnable(pid as u32);
    }
    0
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(prev) = field::<i32>(&ctx, offsets, DOFF_SWITCH_PREV_PID) else {
        return 0;
    };
    let Some(next) = field::<i32>(&ctx, offsets, DOFF_SWITCH_NEXT_PID) else {
        return 0;
    };
    if is_member_thread(prev as u32) {
        let state = field::<i64>(&ctx, offsets, DOFF_SWITCH_PREV_STATE).unwrap_or(1);
        if state & PREV_STATE_SLEEP_MASK == 0 {
            mark_runnable(prev as u32);
        }
    }
    let next = next as u32;
    // SAFETY: copied out.
    let Some(tgid) = (unsafe { TIDS.get(next) }).copied() else {
        return 0;
    };
    // SAFETY: copied out before the entry is removed.
    let Some(since) = (unsafe { WAKE_TS.get(next) }).copied() else {
        return 0;
    };
    let _ = WAKE_TS.remove(next);
    let now = unsafe { bpf_ktime_get_ns() };
    record_stats(&RUNQ_STATS, &tgid, now.saturating_sub(since), 0, false);
    0
}
