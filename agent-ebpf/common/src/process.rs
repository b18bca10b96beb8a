//! `sched:sched_process_exec` / `sched:sched_process_exit`: new and finished etcd processes.

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// An `exec` whose comm matched [`crate::maps::CommFilter`], or the exit of a tracked process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// [`crate::EventKind::Exec`] or [`crate::EventKind::Exit`].
    pub kind: u8,
    /// Zero.
    pub _pad: [u8; 3],
    /// Process (thread-group) id.
    pub tgid: u32,
    /// Kernel monotonic time of the event in nanoseconds.
    pub ts_ns: u64,
    /// The task's comm, zero padded.
    pub comm: [u8; COMM_LEN],
}
