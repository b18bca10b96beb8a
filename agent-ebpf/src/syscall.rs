//! Shared enter/exit logic of the syscall tracepoints.
//!
//! Both halves first test the caller's tgid in the `TRACKED_BITS` bitmap and return at once for
//! every other process (the common case on a busy node): one helper call for the tgid and one
//! inlined array lookup, nothing read from the record, no hash lookup. `sys_enter_*` then
//! records the start time in `STARTS`; `sys_exit_*`
//! computes the latency, updates `OP_STATS` (always) and emits a `SyscallEvent` (when it is at
//! least the configured minimum duration, or when the fd is not yet classified so user space can
//! learn it).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use etcd_monitor_agent_common::{
    EventKind,
    hist::log2_slot,
    maps::{
        CONFIG_MIN_DURATION_NS, CONFIG_SYNC_MIN_DURATION_NS, CONFIG_WAKEUP_BYTES,
        DROP_RINGBUF_SYSCALL, DROP_START_MAP, DROP_STATS_MAP,
    },
    syscall::{FLAG_CLASS_UNKNOWN, FdKey, FileClass, Op, OpKey, OpStats, SockIo, SyscallEvent},
};

use crate::{
    filter::{bit_is_set, load},
    maps::{CONFIG, EVENTS, FD_CLASS, OP_STATS, SOCK_IO, STARTS, Start, TRACKED_BITS, count_drop},
};

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record.
const ARG0: usize = 16;
/// Offset of `ret` in a `syscalls:sys_exit_*` record.
const RET: usize = 16;

/// Whether process `tgid` is one user space asked us to trace.
#[inline(always)]
pub fn is_tracked(tgid: u32) -> bool {
    bit_is_set(&TRACKED_BITS, tgid)
}

/// Whether the current process is one user space asked us to trace.
#[inline(always)]
pub fn current_is_tracked() -> bool {
    is_tracked((bpf_get_current_pid_tgid() >> 32) as u32)
}

/// Reads syscall argument `N` (0-based) of a `sys_enter` record: a direct context load (every
/// `sys_enter` record has its arguments as 8-byte words from offset 16).
#[inline(always)]
pub fn arg<const N: usize>(ctx: &TracePointContext) -> u64 {
    const { assert!(N < 6) };
    match N {
        0 => load::<u64, { ARG0 }>(ctx),
        1 => load::<u64, { ARG0 + 8 }>(ctx),
        2 => load::<u64, { ARG0 + 16 }>(ctx),
        3 => load::<u64, { ARG0 + 24 }>(ctx),
        4 => load::<u64, { ARG0 + 32 }>(ctx),
        _ => load::<u64, { ARG0 + 40 }>(ctx),
    }
}

/// Reads `ret` of a `sys_exit` record (a direct context load; `long ret` is at offset 16).
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    load::<i64, RET>(ctx)
}

/// `sys_enter` half: remember when `op` started on this thread. The caller has checked
/// [`current_is_tracked`] before computing `req_bytes`.
#[inline(always)]
pub fn enter(ctx: &TracePointContext, op: Op, req_bytes: u64) -> u32 {
    let start = Start {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        req_bytes,
        fd: arg::<0>(ctx) as i32,
        op: op as u8,
        _pad: [0; 3],
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // A thread's entry is reused from call to call (one lookup and a store), so the LRU map
    // allocates only for a thread's first traced call.
    match STARTS.get_ptr_mut(pid_tgid) {
        // SAFETY: a pointer to this thread's value, valid while the program runs.
        Some(slot) => unsafe { *slot = start },
        None => {
            if STARTS.insert(pid_tgid, start, 0).is_err() {
                count_drop(DROP_START_MAP);
            }
        }
    }
    0
}

/// `sys_exit` half: account the finished call.
#[inline(always)]
pub fn exit(ctx: &TracePointContext, op: Op) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_tracked((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(start) = take_start(pid_tgid, op) else {
        return 0;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let duration_ns = now.saturating_sub(start.ts_ns);
    let ret = ret(ctx);
    let tgid = (pid_tgid >> 32) as u32;

    let fd_key = FdKey { tgid, fd: start.fd };
    let (class, flags) = fd_class(&fd_key);
    let is_receive = op.is_receive();
    if is_receive && !is_network(class, flags) {
        // A read of the WAL, the db, a pipe…: not network traffic, not counted.
        return 0;
    }
    let bytes = bytes_moved(op, &start, ret);

    if class == FileClass::SocketPeer as u8 && bytes > 0 {
        record_sock_io(&fd_key, bytes, is_receive);
    }

    record_stats(
        &OP_STATS,
        &OpKey {
            tgid,
            op: op as u8,
            class,
            _pad: [0; 2],
        },
        duration_ns,
        bytes,
        ret < 0,
    );

    if duration_ns < min_event_duration_ns(op) && flags & FLAG_CLASS_UNKNOWN == 0 {
        return 0;
    }
    emit_event(SyscallEvent {
        kind: EventKind::Syscall as u8,
        op: op as u8,
        class,
        flags,
        fd: start.fd,
        tgid,
        tid: pid_tgid as u32,
        start_ns: start.ts_ns,
        duration_ns,
        ret,
        bytes,
    });
    0
}

/// Takes this thread's pending start of `op` out of `STARTS`: `None` when there is none, or when
/// it is of another op (a missed exit left a stale entry, e.g. the agent attached mid-call).
#[inline(always)]
fn take_start(pid_tgid: u64, op: Op) -> Option<Start> {
    let slot = STARTS.get_ptr_mut(pid_tgid)?;
    // SAFETY: a pointer to this thread's value, valid while the program runs; the call is
    // copied out, then marked consumed (ts 0) instead of deleted, which is far cheaper in an LRU
    // map and lets the next enter reuse the entry.
    let start = unsafe { *slot };
    if start.ts_ns == 0 {
        return None;
    }
    unsafe { (*slot).ts_ns = 0 };
    if start.op != op as u8 {
        return None;
    }
    Some(start)
}

/// The class user space gave the fd, and the event flags: `FLAG_CLASS_UNKNOWN` (class
/// `Unknown`) when it has none yet.
#[inline(always)]
fn fd_class(fd_key: &FdKey) -> (u8, u8) {
    // SAFETY: read-only lookup of a u8.
    match unsafe { FD_CLASS.get(*fd_key) } {
        Some(class) => (*class, 0u8),
        None => (FileClass::Unknown as u8, FLAG_CLASS_UNKNOWN),
    }
}

/// Whether a receive on an fd of this class counts as network traffic: a socket, or not yet
/// classified (so user space can learn it).
#[inline(always)]
fn is_network(class: u8, flags: u8) -> bool {
    flags & FLAG_CLASS_UNKNOWN != 0
        || class == FileClass::SocketClient as u8
        || class == FileClass::SocketPeer as u8
        || class == FileClass::Socket as u8
}

/// Bytes the call moved: the requested range for a sync, what `ret` says otherwise.
#[inline(always)]
fn bytes_moved(op: Op, start: &Start, ret: i64) -> u64 {
    if op.is_sync() {
        start.req_bytes
    } else if ret > 0 {
        ret as u64
    } else {
        0
    }
}

/// The configured minimum duration of an emitted event of `op` (syncs have their own).
#[inline(always)]
fn min_event_duration_ns(op: Op) -> u64 {
    let threshold = if op.is_sync() {
        CONFIG_SYNC_MIN_DURATION_NS
    } else {
        CONFIG_MIN_DURATION_NS
    };
    CONFIG.get(threshold).copied().unwrap_or(0)
}

/// Sends the event to user space, counting a drop when the ring buffer is full.
#[inline(always)]
fn emit_event(event: SyscallEvent) {
    match EVENTS.reserve::<SyscallEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(wakeup_flags());
        }
        None => count_drop(DROP_RINGBUF_SYSCALL),
    }
}

/// `bpf_ringbuf_query` flag: bytes not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;
/// `bpf_ringbuf_submit` flag: do not wake the reader.
const BPF_RB_NO_WAKEUP: u64 = 1;
/// `bpf_ringbuf_submit` flag: wake the reader now.
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Submit flags that wake the reader only when enough data waits (or when no threshold is
/// set). The reader's short poll timeout collects the rest.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let threshold = CONFIG.get(CONFIG_WAKEUP_BYTES).copied().unwrap_or(0);
    if threshold == 0 || EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Adds a send or receive to the per-CPU `SOCK_IO` entry of a peer socket fd.
#[inline(always)]
fn record_sock_io(key: &FdKey, bytes: u64, receive: bool) {
    let mut io = SOCK_IO.get_ptr_mut(key);
    if io.is_none() {
        if SOCK_IO.insert(key, SockIo::default(), 0).is_err() {
            return;
        }
        io = SOCK_IO.get_ptr_mut(key);
    }
    let Some(io) = io else {
        return;
    };
    // SAFETY: per-CPU value owned by this CPU while the program runs.
    unsafe {
        if receive {
            (*io).rx_bytes += bytes;
            (*io).rx_calls += 1;
        } else {
            (*io).tx_bytes += bytes;
            (*io).tx_calls += 1;
        }
    }
}

/// Adds one sample to the per-CPU `OpStats` entry of `key` in `map`, creating it when missing.
#[inline(always)]
pub fn record_stats<K>(
    map: &PerCpuHashMap<K, OpStats>,
    key: &K,
    duration_ns: u64,
    bytes: u64,
    failed: bool,
) {
    let mut stats = map.get_ptr_mut(key);
    if stats.is_none() {
        if map.insert(key, OpStats::ZERO, 0).is_err() {
            count_drop(DROP_STATS_MAP);
            return;
        }
        stats = map.get_ptr_mut(key);
    }
    let Some(stats) = stats else {
        count_drop(DROP_STATS_MAP);
        return;
    };
    let slot = log2_slot(duration_ns);
    // SAFETY: per-CPU value owned by this CPU while the program runs; `slot` is clamped.
    unsafe {
        (*stats).count += 1;
        (*stats).bytes += bytes;
        (*stats).sum_ns += duration_ns;
        if failed {
            (*stats).errors += 1;
        }
        if let Some(bucket) = (*stats).slots.get_mut(slot) {
            *bucket += 1;
        }
    }
}
