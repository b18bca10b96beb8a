//! `sched:sched_wakeup`, `sched:sched_wakeup_new`, `sched:sched_switch`: how long a runnable
//! thread of a tracked member waited for a CPU (run-queue latency). A thread becomes runnable
//! when it is woken, or when it is switched out while still runnable (preempted, or throttled by
//! its cgroup's CPU quota); the wait ends when it is switched in.
//!
//! `sched_switch` and `sched_wakeup` fire for every thread of the node. They read the pids with
//! direct context loads and test them in the `TID_BITS` bitmap (inlined array lookups) before
//! anything else, so a switch between two threads that are not etcd's costs about as much as an
//! empty program; the hash maps are touched only for member threads.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use etcd_monitor_agent_common::diag::{
    DOFF_SWITCH_NEXT_PID, DOFF_SWITCH_PREV_PID, DOFF_SWITCH_PREV_STATE, DOFF_WAKEUP_PID,
    PREV_STATE_SLEEP_MASK, SWITCH_NEXT_PID_AT, SWITCH_PREV_PID_AT, SWITCH_PREV_STATE_AT,
    WAKEUP_PID_AT,
};

use crate::{
    filter::{bit_is_set, field_at, set_bit},
    maps::{DIAG_OFFSETS, RUNQ_STATS, TID_BITS, TIDS, WAKE_TS},
    syscall::{is_tracked, record_stats},
};

#[inline(always)]
fn is_member_thread(tid: u32) -> bool {
    bit_is_set(&TID_BITS, tid)
}

/// Records when `tid` became runnable, reusing its entry when it has one (a store instead of an
/// LRU insert); 0 means "not waiting".
#[inline(always)]
fn mark_runnable(tid: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    match WAKE_TS.get_ptr_mut(tid) {
        // SAFETY: a pointer to the value, valid while the program runs.
        Some(slot) => unsafe { *slot = now },
        None => {
            let _ = WAKE_TS.insert(tid, now, 0);
        }
    }
}

/// Offset of field `index` in `DIAG_OFFSETS` (`OFF_MISSING` when unknown).
#[inline(always)]
fn offset(index: u32) -> Option<u32> {
    DIAG_OFFSETS.get(0)?.get(index as usize).copied()
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    let Some(pid) = offset(DOFF_WAKEUP_PID).and_then(|o| field_at::<i32, WAKEUP_PID_AT>(&ctx, o))
    else {
        return 0;
    };
    if is_member_thread(pid as u32) {
        mark_runnable(pid as u32);
    }
    0
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    // A new thread of a tracked process: learn it here, before user space's next rescan.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_tracked(tgid) {
        return 0;
    }
    let Some(pid) = offset(DOFF_WAKEUP_PID).and_then(|o| field_at::<i32, WAKEUP_PID_AT>(&ctx, o))
    else {
        return 0;
    };
    let _ = TIDS.insert(pid as u32, tgid, 0);
    set_bit(&TID_BITS, pid as u32);
    mark_runnable(pid as u32);
    0
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(prev) =
        field_at::<i32, SWITCH_PREV_PID_AT>(&ctx, offsets[DOFF_SWITCH_PREV_PID as usize])
    else {
        return 0;
    };
    let Some(next) =
        field_at::<i32, SWITCH_NEXT_PID_AT>(&ctx, offsets[DOFF_SWITCH_NEXT_PID as usize])
    else {
        return 0;
    };
    let (prev, next) = (prev as u32, next as u32);
    let prev_member = is_member_thread(prev);
    let next_member = is_member_thread(next);
    if !prev_member && !next_member {
        return 0;
    }
    if prev_member {
        let state =
            field_at::<i64, SWITCH_PREV_STATE_AT>(&ctx, offsets[DOFF_SWITCH_PREV_STATE as usize])
                .unwrap_or(1);
        if state & PREV_STATE_SLEEP_MASK == 0 {
            mark_runnable(prev);
        }
    }
    if !next_member {
        return 0;
    }
    // SAFETY: copied out.
    let Some(tgid) = (unsafe { TIDS.get(next) }).copied() else {
        return 0;
    };
    let Some(slot) = WAKE_TS.get_ptr_mut(next) else {
        return 0;
    };
    // SAFETY: a pointer to the value, valid while the program runs; consumed by zeroing it.
    let since = unsafe { *slot };
    if since == 0 {
        return 0;
    }
    unsafe { *slot = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    record_stats(&RUNQ_STATS, &tgid, now.saturating_sub(since), 0, false);
    0
}
