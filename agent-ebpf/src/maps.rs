//! Every map the programs share with user space (names in `etcd_monitor_agent_common::maps`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use etcd_monitor_agent_common::{
    diag::{
        DOFF_LEN, IoKey, Issuer, IssuerKey, MAX_BLOCK_DEVS, MAX_ISSUERS, MAX_RQ_IN_FLIGHT, MAX_TIDS,
    },
    maps::{
        BITMAP_WORDS, CONFIG_LEN, CommFilter, DEFAULT_RINGBUF_BYTES, DROPS_LEN, MAX_CONNS, MAX_FDS,
        MAX_IN_FLIGHT, MAX_OP_STATS, MAX_PORTS, MAX_SOCK_IO, MAX_TRACKED, PORT_BITMAP_WORDS,
    },
    net::{Churn, ConnKey, ConnStats, OFF_LEN},
    syscall::{FdKey, OpKey, OpStats, SockIo},
};

/// Per-record events for user space; its size is set by the agent at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Bit `tgid` set for every etcd process to trace: the first test of every syscall program.
#[map]
pub static TRACKED_BITS: Array<u64> = Array::with_max_entries(BITMAP_WORDS, 0);

/// Bit `tid` set for every thread in `TIDS`: the first test of the sched programs.
#[map]
pub static TID_BITS: Array<u64> = Array::with_max_entries(BITMAP_WORDS, 0);

/// Bit `port` set for every port in `PORTS`: the first test of the TCP programs.
#[map]
pub static PORT_BITS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

/// (tgid, fd) → `FileClass` discriminant, filled by user space, cleared on `close`.
#[map]
pub static FD_CLASS: HashMap<FdKey, u8> = HashMap::with_max_entries(MAX_FDS, 0);

/// Exact counters and log2 histogram per (tgid, op, class), per CPU.
#[map]
pub static OP_STATS: PerCpuHashMap<OpKey, OpStats> =
    PerCpuHashMap::with_max_entries(MAX_OP_STATS, 0);

/// Settings written by user space (`CONFIG_*` indices).
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_LEN, 0);

/// Loss counters (`DROP_*` indices).
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROPS_LEN, 0);

/// The comm whose exec is reported.
#[map]
pub static EXEC_COMM: Array<CommFilter> = Array::with_max_entries(1, 0);

/// A syscall in flight on one thread, between `sys_enter` and `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Start {
    /// `bpf_ktime_get_ns` at enter.
    pub ts_ns: u64,
    /// Bytes the call asked for (`sync_file_range`'s range; 0 otherwise).
    pub req_bytes: u64,
    /// The fd argument.
    pub fd: i32,
    /// `Op` discriminant.
    pub op: u8,
    /// Zero.
    pub _pad: [u8; 3],
}

/// pid_tgid → the call in flight. LRU so that a thread killed inside a syscall cannot leak.
#[map]
pub static STARTS: LruHashMap<u64, Start> = LruHashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Adds one to a `DROPS` counter.
#[inline(always)]
pub fn count_drop(index: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot owned by this CPU for the duration of the program.
        unsafe { *counter += 1 };
    }
}

/// pid_tgid → listening fd of an `accept`/`accept4` in flight.
#[map]
pub static ACCEPTS: LruHashMap<u64, i32> = LruHashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Port → role bits of the ports whose connections are traced.
#[map]
pub static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Per-connection TCP counters.
#[map]
pub static CONNS: LruHashMap<ConnKey, ConnStats> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Client connection churn per listening port.
#[map]
pub static CHURN: HashMap<u16, Churn> = HashMap::with_max_entries(MAX_PORTS, 0);

/// Tracepoint field offsets, written by user space from tracefs.
#[map]
pub static NET_OFFSETS: Array<[u32; OFF_LEN as usize]> = Array::with_max_entries(1, 0);

/// Bytes through each peer socket fd, per CPU.
#[map]
pub static SOCK_IO: LruPerCpuHashMap<FdKey, SockIo> =
    LruPerCpuHashMap::with_max_entries(MAX_SOCK_IO, 0);

/// Block and sched tracepoint field offsets, written by user space from tracefs.
#[map]
pub static DIAG_OFFSETS: Array<[u32; DOFF_LEN as usize]> = Array::with_max_entries(1, 0);

/// Kernel dev_t of the devices under the members' data dirs.
#[map]
pub static BLOCK_DEVS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_BLOCK_DEVS, 0);

/// Issue time of each request in flight on a watched device.
#[map]
pub static RQ_STARTS: LruHashMap<IoKey, u64> = LruHashMap::with_max_entries(MAX_RQ_IN_FLIGHT, 0);

/// Request service time per watched device, per CPU.
#[map]
pub static BLOCK_STATS: PerCpuHashMap<u32, OpStats> =
    PerCpuHashMap::with_max_entries(MAX_BLOCK_DEVS, 0);

/// I/O submitted per (device, process), per CPU.
#[map]
pub static IO_ISSUERS: LruPerCpuHashMap<IssuerKey, Issuer> =
    LruPerCpuHashMap::with_max_entries(MAX_ISSUERS, 0);

/// Threads of the tracked members: tid → tgid.
#[map]
pub static TIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TIDS, 0);

/// When a member thread became runnable.
#[map]
pub static WAKE_TS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_TIDS, 0);

/// Run-queue latency per tracked process, per CPU.
#[map]
pub static RUNQ_STATS: PerCpuHashMap<u32, OpStats> =
    PerCpuHashMap::with_max_entries(MAX_TRACKED, 0);
