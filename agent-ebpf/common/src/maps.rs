//! Map names and indices both sides agree on.

/// Ring buffer of [`crate::syscall::SyscallEvent`] and [`crate::process::ProcessEvent`] records.
pub const EVENTS: &str = "EVENTS";
/// `HashMap<u32 tgid, u32 flags>`: the etcd processes to trace. User space fills it.
pub const TRACKED: &str = "TRACKED";
/// `HashMap<FdKey, u8 FileClass>`: file class of each open fd of a tracked process.
pub const FD_CLASS: &str = "FD_CLASS";
/// `PerCpuHashMap<OpKey, OpStats>`: exact per-(tgid, op, class) counts and log2 histogram.
pub const OP_STATS: &str = "OP_STATS";
/// `Array<u64>` of settings, indexed by the `CONFIG_*` constants.
pub const CONFIG: &str = "CONFIG";
/// `PerCpuArray<u64>` of loss counters, indexed by the `DROP_*` constants.
pub const DROPS: &str = "DROPS";
/// `Array<CommFilter>` with one entry: the `comm` whose `exec` is reported.
pub const EXEC_COMM: &str = "EXEC_COMM";

/// `CONFIG` index: write-family events shorter than this many nanoseconds skip the ring
/// buffer (the histograms still count them). 0 sends every event.
pub const CONFIG_MIN_DURATION_NS: u32 = 0;
/// `CONFIG` index: the same for the sync family (fdatasync, fsync, sync_file_range).
pub const CONFIG_SYNC_MIN_DURATION_NS: u32 = 1;
/// `CONFIG` index: wake the reader only once this many bytes wait in the ring buffer (the
/// reader also polls on a short timer), so a busy etcd does not cost a wakeup per event.
pub const CONFIG_WAKEUP_BYTES: u32 = 2;
/// Number of `CONFIG` entries.
pub const CONFIG_LEN: u32 = 4;

/// `DROPS` index: syscall events lost because the ring buffer was full.
pub const DROP_RINGBUF_SYSCALL: u32 = 0;
/// `DROPS` index: process events lost because the ring buffer was full.
pub const DROP_RINGBUF_PROCESS: u32 = 1;
/// `DROPS` index: syscalls not timed because the per-thread start map refused the entry.
pub const DROP_START_MAP: u32 = 2;
/// `DROPS` index: syscalls not counted because the stats map was full.
pub const DROP_STATS_MAP: u32 = 3;
/// Number of `DROPS` entries.
pub const DROPS_LEN: u32 = 4;

/// Capacity of `TRACKED`.
pub const MAX_TRACKED: u32 = 256;
/// Capacity of `FD_CLASS`.
pub const MAX_FDS: u32 = 65_536;
/// Capacity of the per-thread start map.
pub const MAX_IN_FLIGHT: u32 = 16_384;
/// Capacity of `OP_STATS`: tracked processes × ops × classes, with room to spare.
pub const MAX_OP_STATS: u32 = 8_192;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RINGBUF_BYTES: u32 = 1 << 22;

/// The `comm` (first 16 bytes of the executable name) whose `exec` is reported to user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommFilter {
    /// Number of significant bytes in `comm`; 0 reports no exec.
    pub len: u32,
    /// The prefix to match, zero padded.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: `CommFilter` is `repr(C)`, `Copy` and has no padding or pointers.
unsafe impl aya::Pod for CommFilter {}

/// `HashMap<u16 port, u8 role bits>`: the ports whose TCP connections are traced.
pub const PORTS: &str = "PORTS";
/// `LruHashMap<ConnKey, ConnStats>`: per-connection TCP counters.
pub const CONNS: &str = "CONNS";
/// `HashMap<u16 port, Churn>`: client connections opened/closed per listening port.
pub const CHURN: &str = "CHURN";
/// `Array<u32>`: tracepoint field offsets (see `net::OFF_*`).
pub const NET_OFFSETS: &str = "NET_OFFSETS";
/// Capacity of `PORTS`.
pub const MAX_PORTS: u32 = 1024;
/// Capacity of `CONNS`.
pub const MAX_CONNS: u32 = 16_384;

/// `LruPerCpuHashMap<FdKey, SockIo>`: bytes through each peer socket fd of a tracked process.
pub const SOCK_IO: &str = "SOCK_IO";
/// Capacity of `SOCK_IO` (peer sockets only: a few per member pair).
pub const MAX_SOCK_IO: u32 = 4_096;
