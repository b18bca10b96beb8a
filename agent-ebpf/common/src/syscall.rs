//! The traced syscalls on etcd's disk path and the records they produce.

use crate::hist::HIST_SLOTS;

/// A traced syscall.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `fdatasync(2)`: etcd's WAL sync and bbolt's commit.
    Fdatasync = 0,
    /// `fsync(2)`: directory syncs and snapshot files.
    Fsync = 1,
    /// `sync_file_range(2)`.
    SyncFileRange = 2,
    /// `write(2)`.
    Write = 3,
    /// `pwrite64(2)`: bbolt page writes.
    Pwrite64 = 4,
    /// `writev(2)`.
    Writev = 5,
    /// `pwritev(2)`.
    Pwritev = 6,
    /// `read(2)` on a socket (reads of other fds are not counted).
    Read = 7,
    /// `readv(2)` on a socket.
    Readv = 8,
    /// `recvfrom(2)` on a socket.
    Recvfrom = 9,
    /// `recvmsg(2)` on a socket.
    Recvmsg = 10,
}

/// Number of [`Op`] variants.
pub const OP_COUNT: usize = 11;

impl Op {
    /// Every op, in discriminant order.
    pub const ALL: [Op; OP_COUNT] = [
        Op::Fdatasync,
        Op::Fsync,
        Op::SyncFileRange,
        Op::Write,
        Op::Pwrite64,
        Op::Writev,
        Op::Pwritev,
        Op::Read,
        Op::Readv,
        Op::Recvfrom,
        Op::Recvmsg,
    ];

    /// Decodes a discriminant.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Op::Fdatasync),
            1 => Some(Op::Fsync),
            2 => Some(Op::SyncFileRange),
            3 => Some(Op::Write),
            4 => Some(Op::Pwrite64),
            5 => Some(Op::Writev),
            6 => Some(Op::Pwritev),
            7 => Some(Op::Read),
            8 => Some(Op::Readv),
            9 => Some(Op::Recvfrom),
            10 => Some(Op::Recvmsg),
            _ => None,
        }
    }

    /// The syscall's name, as in `syscalls:sys_enter_<name>` and the `op` label.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Fdatasync => "fdatasync",
            Op::Fsync => "fsync",
            Op::SyncFileRange => "sync_file_range",
            Op::Write => "write",
            Op::Pwrite64 => "pwrite64",
            Op::Writev => "writev",
            Op::Pwritev => "pwritev",
            Op::Read => "read",
            Op::Readv => "readv",
            Op::Recvfrom => "recvfrom",
            Op::Recvmsg => "recvmsg",
        }
    }

    /// Whether the op receives from a socket (`etcdmon_receive_duration_seconds`). Receive
    /// ops are only counted on socket fds: the kernel skips them on WAL, db and other files.
    pub const fn is_receive(self) -> bool {
        matches!(self, Op::Read | Op::Readv | Op::Recvfrom | Op::Recvmsg)
    }

    /// Whether the op makes data durable (`etcdmon_fsync_duration_seconds`) rather than
    /// writing it (`etcdmon_write_duration_seconds`).
    pub const fn is_sync(self) -> bool {
        matches!(self, Op::Fdatasync | Op::Fsync | Op::SyncFileRange)
    }
}

/// What an fd of an etcd process points at. User space classifies fds from `/proc/PID/fd`
/// and tells the kernel through the `FD_CLASS` map.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileClass {
    /// The kernel had no class for the fd when the syscall ran (not yet classified).
    Unknown = 0,
    /// A write-ahead-log segment (`member/wal/*.wal`) or the WAL directory.
    Wal = 1,
    /// The bbolt database (`member/snap/db`).
    Db = 2,
    /// A raft snapshot (`member/snap/*.snap`) or the snap directory.
    Snap = 3,
    /// A TCP socket on the member's client port.
    SocketClient = 4,
    /// A TCP socket on the member's peer port.
    SocketPeer = 5,
    /// Any other socket.
    Socket = 6,
    /// Anything else (logs, pipes, files outside the data dir).
    Other = 7,
}

impl FileClass {
    /// Whether the class is a socket (client, peer or other).
    pub const fn is_socket(self) -> bool {
        matches!(
            self,
            FileClass::SocketClient | FileClass::SocketPeer | FileClass::Socket
        )
    }
}

/// Number of [`FileClass`] variants.
pub const CLASS_COUNT: usize = 8;

impl FileClass {
    /// Decodes a discriminant.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(FileClass::Unknown),
            1 => Some(FileClass::Wal),
            2 => Some(FileClass::Db),
            3 => Some(FileClass::Snap),
            4 => Some(FileClass::SocketClient),
            5 => Some(FileClass::SocketPeer),
            6 => Some(FileClass::Socket),
            7 => Some(FileClass::Other),
            _ => None,
        }
    }

    /// The `file` label value.
    pub const fn name(self) -> &'static str {
        match self {
            FileClass::Unknown => "unknown",
            FileClass::Wal => "wal",
            FileClass::Db => "db",
            FileClass::Snap => "snap",
            FileClass::SocketClient => "socket_client",
            FileClass::SocketPeer => "socket_peer",
            FileClass::Socket => "socket",
            FileClass::Other => "other",
        }
    }
}

/// `SyscallEvent::flags` bit: the kernel did not know the fd's class.
pub const FLAG_CLASS_UNKNOWN: u8 = 1;

/// One completed syscall of a tracked process, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEvent {
    /// [`crate::EventKind::Syscall`].
    pub kind: u8,
    /// [`Op`] discriminant.
    pub op: u8,
    /// [`FileClass`] discriminant the kernel saw (`Unknown` when the fd was not classified).
    pub class: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The fd argument.
    pub fd: i32,
    /// Process (thread-group) id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Kernel monotonic time at `sys_enter`, nanoseconds.
    pub start_ns: u64,
    /// `sys_exit` minus `sys_enter`, nanoseconds.
    pub duration_ns: u64,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Bytes written or received (writes and receives: the return value when positive;
    /// `sync_file_range`: the range).
    pub bytes: u64,
}

/// Size of a [`SyscallEvent`] record in bytes.
pub const SYSCALL_EVENT_LEN: usize = core::mem::size_of::<SyscallEvent>();

/// Key of an fd in the `FD_CLASS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    /// Process id.
    pub tgid: u32,
    /// File descriptor.
    pub fd: i32,
}

/// Key of the `OP_STATS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpKey {
    /// Process id.
    pub tgid: u32,
    /// [`Op`] discriminant.
    pub op: u8,
    /// [`FileClass`] discriminant.
    pub class: u8,
    /// Zero.
    pub _pad: [u8; 2],
}

/// Exact per-CPU counters of one (tgid, op, class), kept in the kernel whatever the ring buffer
/// does.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpStats {
    /// Completed calls.
    pub count: u64,
    /// Bytes written or synced (see [`SyscallEvent::bytes`]).
    pub bytes: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Sum of durations, nanoseconds.
    pub sum_ns: u64,
    /// Log2 duration histogram (see [`crate::hist`]).
    pub slots: [u64; HIST_SLOTS],
}

impl OpStats {
    /// All counters zero.
    pub const ZERO: OpStats = OpStats {
        count: 0,
        bytes: 0,
        errors: 0,
        sum_ns: 0,
        slots: [0; HIST_SLOTS],
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all three): `repr(C)`, `Copy`, no pointers, no implicit padding.
    unsafe impl aya::Pod for super::FdKey {}
    unsafe impl aya::Pod for super::OpKey {}
    unsafe impl aya::Pod for super::OpStats {}
    unsafe impl aya::Pod for super::SockIo {}
}

/// Bytes moved through one peer socket fd by the traced syscalls (sends and receives),
/// per CPU; user space resolves the fd to its connection and so to a (member, peer) pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockIo {
    /// Bytes received (read/readv/recvfrom/recvmsg return values).
    pub rx_bytes: u64,
    /// Bytes sent (write/writev return values).
    pub tx_bytes: u64,
    /// Receive calls that returned data.
    pub rx_calls: u64,
    /// Send calls that wrote data.
    pub tx_calls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_stable() {
        assert_eq!(SYSCALL_EVENT_LEN, 48);
        assert_eq!(core::mem::size_of::<OpKey>(), 8);
        assert_eq!(core::mem::size_of::<FdKey>(), 8);
        assert_eq!(core::mem::size_of::<OpStats>(), 32 + 8 * HIST_SLOTS);
    }

    #[test]
    fn discriminants_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_u8(op as u8), Some(op));
        }
        assert_eq!(Op::from_u8(OP_COUNT as u8), None);
        for byte in 0..CLASS_COUNT as u8 {
            assert_eq!(FileClass::from_u8(byte).map(|c| c as u8), Some(byte));
        }
        assert_eq!(FileClass::from_u8(CLASS_COUNT as u8), None);
    }
}
