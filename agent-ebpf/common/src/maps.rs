//! Map names and indices both sides agree on.

/// Ring buffer of [`crate::syscall::SyscallEvent`] and [`crate::process::ProcessEvent`] records.
pub const EVENTS: &str = "EVENTS";
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

/// Most processes traced at once (capacity of the per-process maps).
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

/// `Array<u64>` of [`BITMAP_WORDS`] words: bit `tgid` is set for every etcd process to trace.
/// User space alone writes it.
/// The syscall programs test it before anything else: an array lookup the verifier inlines,
/// no hashing, so an untraced process costs little more than an empty program.
pub const TRACKED_BITS: &str = "TRACKED_BITS";
/// `Array<u64>` of [`PORT_BITMAP_WORDS`] words: bit `port` is set for every port in `PORTS`.
pub const PORT_BITS: &str = "PORT_BITS";
/// Words of a pid-indexed bitmap: `PID_MAX_LIMIT` on 64-bit Linux is 2^22, so 2^16 words
/// (512 KiB) cover every possible pid.
pub const BITMAP_WORDS: u32 = 1 << 16;
/// Words of a port-indexed bitmap (2^16 ports).
pub const PORT_BITMAP_WORDS: u32 = 1 << 10;

/// Word index and bit mask of `id` in a bitmap of `u64` words.
#[inline(always)]
pub const fn bit_position(id: u32) -> (u32, u64) {
    (id >> 6, 1u64 << (id & 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_cover_every_pid_and_port() {
        assert_eq!(bit_position(0), (0, 1));
        assert_eq!(bit_position(63), (0, 1 << 63));
        assert_eq!(bit_position(64), (1, 1));
        // PID_MAX_LIMIT - 1 and the largest port land in the last word.
        assert_eq!(bit_position((1 << 22) - 1).0, BITMAP_WORDS - 1);
        assert_eq!(bit_position(u32::from(u16::MAX)).0, PORT_BITMAP_WORDS - 1);
    }
}
