//! Kernel records → `etcdmon.v1` messages.

use etcd_monitor_agent_common::{
    process::ProcessEvent as KernelProcessEvent,
    syscall::{FileClass, Op, SyscallEvent},
};
use etcd_monitor_proto::v1::{self as pb, DiskEvent, Event, event::Payload, process_event};

use crate::decode;

/// Converts kernel monotonic nanoseconds (`bpf_ktime_get_ns`) to Unix-epoch nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Realtime minus monotonic, nanoseconds.
    offset_ns: i128,
}

impl Clock {
    /// Measures the offset now.
    pub fn now() -> Self {
        Self {
            offset_ns: realtime_ns() - monotonic_ns(),
        }
    }

    /// A clock with a fixed offset (tests).
    pub const fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Unix-epoch nanoseconds of a kernel timestamp.
    pub fn to_unix_nanos(&self, monotonic: u64) -> u64 {
        u64::try_from(i128::from(monotonic) + self.offset_ns).unwrap_or(0)
    }
}

fn realtime_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_ns() -> i128 {
    0
}

/// The protobuf op of a kernel op.
pub fn disk_op(op: Op) -> pb::DiskOp {
    match op {
        Op::Fdatasync => pb::DiskOp::Fdatasync,
        Op::Fsync => pb::DiskOp::Fsync,
        Op::SyncFileRange => pb::DiskOp::SyncFileRange,
        Op::Write => pb::DiskOp::Write,
        Op::Pwrite64 => pb::DiskOp::Pwrite64,
        Op::Writev => pb::DiskOp::Writev,
        Op::Pwritev => pb::DiskOp::Pwritev,
        Op::Read => pb::DiskOp::Read,
        Op::Readv => pb::DiskOp::Readv,
        Op::Recvfrom => pb::DiskOp::Recvfrom,
        Op::Recvmsg => pb::DiskOp::Recvmsg,
    }
}

/// The protobuf file class of a kernel class.
pub fn file_class(class: FileClass) -> pb::FileClass {
    match class {
        FileClass::Unknown => pb::FileClass::Unknown,
        FileClass::Wal => pb::FileClass::Wal,
        FileClass::Db => pb::FileClass::Db,
        FileClass::Snap => pb::FileClass::Snap,
        FileClass::SocketClient => pb::FileClass::SocketClient,
        FileClass::SocketPeer => pb::FileClass::SocketPeer,
        FileClass::Socket => pb::FileClass::Socket,
        FileClass::Other => pb::FileClass::Other,
    }
}

fn disk(e: &SyscallEvent, clock: &Clock) -> DiskEvent {
    DiskEvent {
        op: Op::from_u8(e.op).map_or(pb::DiskOp::Unspecified, disk_op) as i32,
        file: FileClass::from_u8(e.class).map_or(pb::FileClass::Unspecified, file_class) as i32,
        fd: e.fd,
        pid: e.tgid,
        tid: e.tid,
        start_unix_nanos: clock.to_unix_nanos(e.start_ns),
        duration_nanos: e.duration_ns,
        ret: e.ret,
        bytes: e.bytes,
    }
}

fn process(e: &KernelProcessEvent, kind: process_event::Kind) -> pb::ProcessEvent {
    let end = e.comm.iter().position(|b| *b == 0).unwrap_or(e.comm.len());
    pb::ProcessEvent {
        kind: kind as i32,
        pid: e.tgid,
        comm: String::from_utf8_lossy(&e.comm[..end]).into_owned(),
    }
}

/// Converts one decoded record, stamped with `node` and `member`.
pub fn to_proto(event: &decode::Event, node: &str, member: &str, clock: &Clock) -> Event {
    let (timestamp, payload) = match event {
        decode::Event::Syscall(e) => (e.start_ns + e.duration_ns, Payload::Disk(disk(e, clock))),
        decode::Event::Exec(e) => (
            e.ts_ns,
            Payload::Process(process(e, process_event::Kind::Exec)),
        ),
        decode::Event::Exit(e) => (
            e.ts_ns,
            Payload::Process(process(e, process_event::Kind::Exit)),
        ),
    };
    Event {
        node: node.to_string(),
        member: member.to_string(),
        cluster: String::new(),
        timestamp_unix_nanos: clock.to_unix_nanos(timestamp),
        member_id: String::new(),
        subscriber_lagged: 0,
        is_leader: false,
        payload: Some(payload),
    }
}

#[cfg(test)]
mod tests {
    use etcd_monitor_agent_common::EventKind;

    use super::*;

    #[test]
    fn syscall_becomes_disk_event_with_wall_clock() {
        let e = SyscallEvent {
            kind: EventKind::Syscall as u8,
            op: Op::Fdatasync as u8,
            class: FileClass::Wal as u8,
            flags: 0,
            fd: 9,
            tgid: 42,
            tid: 43,
            start_ns: 1_000,
            duration_ns: 500,
            ret: 0,
            bytes: 0,
        };
        let clock = Clock::with_offset(1_700_000_000_000_000_000);
        let pb = to_proto(&decode::Event::Syscall(e), "node-a", "m0", &clock);
        assert_eq!(pb.member, "m0");
        assert_eq!(pb.timestamp_unix_nanos, 1_700_000_000_000_001_500);
        let Some(Payload::Disk(d)) = pb.payload else {
            panic!("not a disk event")
        };
        assert_eq!(d.op(), pb::DiskOp::Fdatasync);
        assert_eq!(d.file(), pb::FileClass::Wal);
        assert_eq!(d.start_unix_nanos, 1_700_000_000_000_001_000);
        assert_eq!((d.pid, d.tid, d.fd, d.duration_nanos), (42, 43, 9, 500));
    }

    #[test]
    fn every_kernel_value_has_a_protobuf_value() {
        for op in Op::ALL {
            assert_ne!(disk_op(op), pb::DiskOp::Unspecified);
        }
        for byte in 0..etcd_monitor_agent_common::syscall::CLASS_COUNT as u8 {
            let class = FileClass::from_u8(byte).expect("class");
            assert_ne!(file_class(class), pb::FileClass::Unspecified);
        }
    }

    #[test]
    fn clock_offset_is_plausible() {
        let clock = Clock::now();
        let unix = clock.to_unix_nanos(0);
        assert!(unix > 0);
    }
}
