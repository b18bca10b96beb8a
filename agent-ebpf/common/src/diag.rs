//! Diagnosis evidence: the block layer under the members' data dirs and the scheduler's view of
//! the members' threads.
//!
//! `block:block_rq_issue` → `block:block_rq_complete` times every request on a watched device
//! (`BLOCK_DEVS`, filled by user space with the devices under the members' data dirs) into a
//! per-device histogram; `block:block_bio_queue` counts which process (tgid, comm, cgroup id)
//! submitted I/O to that device. `sched:sched_wakeup(_new)` and `sched:sched_switch` time how long
//! a member's runnable thread waited for a CPU (`TIDS`, filled by user space from
//! `/proc/PID/task` and by the kernel on `sched_wakeup_new`) into a per-tgid histogram. Field
//! offsets come from tracefs (`DOFF_*` indices into `DIAG_OFFSETS`).

/// `DIAG_OFFSETS` index: `block_rq_issue.dev`.
pub const DOFF_RQI_DEV: u32 = 0;
/// `DIAG_OFFSETS` index: `block_rq_issue.sector`.
pub const DOFF_RQI_SECTOR: u32 = 1;
/// `DIAG_OFFSETS` index: `block_rq_issue.bytes`.
pub const DOFF_RQI_BYTES: u32 = 2;
/// `DIAG_OFFSETS` index: `block_rq_complete.dev`.
pub const DOFF_RQC_DEV: u32 = 3;
/// `DIAG_OFFSETS` index: `block_rq_complete.sector`.
pub const DOFF_RQC_SECTOR: u32 = 4;
/// `DIAG_OFFSETS` index: `block_rq_complete.error`.
pub const DOFF_RQC_ERROR: u32 = 5;
/// `DIAG_OFFSETS` index: `block_bio_queue.dev`.
pub const DOFF_BIO_DEV: u32 = 6;
/// `DIAG_OFFSETS` index: `block_bio_queue.nr_sector`.
pub const DOFF_BIO_NR_SECTOR: u32 = 7;
/// `DIAG_OFFSETS` index: `sched_wakeup.pid` (also `sched_wakeup_new`, same template).
pub const DOFF_WAKEUP_PID: u32 = 8;
/// `DIAG_OFFSETS` index: `sched_switch.prev_pid`.
pub const DOFF_SWITCH_PREV_PID: u32 = 9;
/// `DIAG_OFFSETS` index: `sched_switch.prev_state`.
pub const DOFF_SWITCH_PREV_STATE: u32 = 10;
/// `DIAG_OFFSETS` index: `sched_switch.next_pid`.
pub const DOFF_SWITCH_NEXT_PID: u32 = 11;
/// Number of `DIAG_OFFSETS` slots.
pub const DOFF_LEN: u32 = 12;

/// `sched_switch.prev_state` bits below this mask are a sleeping state; a task switched out
/// with none of them set (0, or `TASK_REPORT_MAX` for a preempted task) is still runnable and
/// waits on the run queue from that moment.
pub const PREV_STATE_SLEEP_MASK: i64 = 0xff;

/// `Array<[u32; DOFF_LEN]>`: tracepoint field offsets for the block and sched programs.
pub const DIAG_OFFSETS: &str = "DIAG_OFFSETS";
/// `HashMap<u32 dev, u8>`: kernel `dev_t` (`major << 20 | minor`) of the watched devices.
pub const BLOCK_DEVS: &str = "BLOCK_DEVS";
/// `LruHashMap<IoKey, u64>`: issue time of each request in flight on a watched device.
pub const RQ_STARTS: &str = "RQ_STARTS";
/// `PerCpuHashMap<u32 dev, OpStats>`: request service time per watched device.
pub const BLOCK_STATS: &str = "BLOCK_STATS";
/// `LruPerCpuHashMap<IssuerKey, Issuer>`: I/O submitted per (device, process).
pub const IO_ISSUERS: &str = "IO_ISSUERS";
/// `HashMap<u32 tid, u32 tgid>`: threads of the tracked members.
pub const TIDS: &str = "TIDS";
/// `LruHashMap<u32 tid, u64>`: when a member thread became runnable.
pub const WAKE_TS: &str = "WAKE_TS";
/// `PerCpuHashMap<u32 tgid, OpStats>`: run-queue latency per tracked process.
pub const RUNQ_STATS: &str = "RUNQ_STATS";
/// `Array<u64>` of `maps::BITMAP_WORDS` words: bit `tid` is set for every thread in `TIDS`.
/// `sched_switch` and `sched_wakeup` fire for every thread of the node; they test this bitmap
/// (two inlined array lookups) before touching any hash map.
pub const TID_BITS: &str = "TID_BITS";

/// Offsets these fields have had in every kernel since 4.x (tracefs `format`). When tracefs
/// agrees, the programs read them with a direct context load (no helper call); otherwise they
/// fall back to `bpf_probe_read_kernel` at the tracefs offset.
pub const SWITCH_PREV_PID_AT: usize = 24;
/// See [`SWITCH_PREV_PID_AT`].
pub const SWITCH_PREV_STATE_AT: usize = 32;
/// See [`SWITCH_PREV_PID_AT`].
pub const SWITCH_NEXT_PID_AT: usize = 56;
/// See [`SWITCH_PREV_PID_AT`]: `sched_wakeup.pid`.
pub const WAKEUP_PID_AT: usize = 24;
/// See [`SWITCH_PREV_PID_AT`]: `dev` of `block_rq_issue`, `block_rq_complete`, `block_bio_queue`.
pub const BLOCK_DEV_AT: usize = 8;

/// Capacity of `BLOCK_DEVS`.
pub const MAX_BLOCK_DEVS: u32 = 64;
/// Capacity of `RQ_STARTS`.
pub const MAX_RQ_IN_FLIGHT: u32 = 16_384;
/// Capacity of `IO_ISSUERS` (LRU: the least recent issuers are forgotten first).
pub const MAX_ISSUERS: u32 = 4_096;
/// Capacity of `TIDS`.
pub const MAX_TIDS: u32 = 32_768;

/// A request in flight: device and start sector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoKey {
    /// Kernel `dev_t`.
    pub dev: u32,
    /// Zero.
    pub _pad: u32,
    /// Start sector.
    pub sector: u64,
}

/// Who submitted I/O to a watched device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerKey {
    /// Kernel `dev_t`.
    pub dev: u32,
    /// Submitting process (thread-group) id; kernel threads have their own.
    pub tgid: u32,
}

/// I/O one process submitted to one device, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issuer {
    /// Bytes submitted (`nr_sector * 512`).
    pub bytes: u64,
    /// Bios submitted.
    pub ios: u64,
    /// cgroup v2 id of the submitter (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// The submitting thread's comm.
    pub comm: [u8; 16],
}

/// Kernel `dev_t` encoding used in block tracepoints (`MKDEV`: 12-bit major, 20-bit minor).
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all three): `repr(C)`, `Copy`, no pointers, no implicit padding.
    unsafe impl aya::Pod for super::IoKey {}
    unsafe impl aya::Pod for super::IssuerKey {}
    unsafe impl aya::Pod for super::Issuer {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<IoKey>(), 16);
        assert_eq!(core::mem::size_of::<IssuerKey>(), 8);
        assert_eq!(core::mem::size_of::<Issuer>(), 40);
    }

    #[test]
    fn kernel_dev_matches_mkdev() {
        assert_eq!(kernel_dev(7, 2), (7 << 20) | 2);
        assert_eq!(kernel_dev(253, 0), 253 << 20);
    }
}
