//! `sched:sched_process_exec` and `sched:sched_process_exit`: tell user space at once when an
//! etcd process starts or a tracked one ends, instead of waiting for the next /proc rescan.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use etcd_monitor_agent_common::{EventKind, maps::DROP_RINGBUF_PROCESS, process::ProcessEvent};

use crate::{
    maps::{EVENTS, EXEC_COMM, count_drop},
    syscall,
};

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let Some(filter) = EXEC_COMM.get(0) else {
        return 0;
    };
    let len = filter.len as usize;
    if len == 0 || len > 16 {
        return 0;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    // Exact match: the first `len` bytes agree and the comm ends there (`etcdctl` is not
    // `etcd`).
    let mut i = 0;
    while i < 16 {
        if i < len {
            if comm[i] != filter.comm[i] {
                return 0;
            }
        } else {
            if comm[i] != 0 {
                return 0;
            }
            break;
        }
        i += 1;
    }
    emit(EventKind::Exec, comm);
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only the thread-group leader's exit means the process is gone.
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 || !syscall::current_is_tracked() {
        return 0;
    }
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    emit(EventKind::Exit, comm);
    0
}

#[inline(always)]
fn emit(kind: EventKind, comm: [u8; 16]) {
    match EVENTS.reserve::<ProcessEvent>(0) {
        Some(mut entry) => {
            entry.write(ProcessEvent {
                kind: kind as u8,
                _pad: [0; 3],
                tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
                ts_ns: unsafe { bpf_ktime_get_ns() },
                comm,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RINGBUF_PROCESS),
    }
}
