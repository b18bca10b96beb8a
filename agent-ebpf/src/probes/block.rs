//! `block:block_rq_issue` / `block:block_rq_complete`: service time of every request on the
//! devices under the members' data dirs; `block:block_bio_queue`: who submits I/O to them (the
//! submitter's context, unlike issue, which may run in a kworker).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use etcd_monitor_agent_common::{
    diag::{
        BLOCK_DEV_AT, DOFF_BIO_DEV, DOFF_BIO_NR_SECTOR, DOFF_LEN, DOFF_RQC_DEV, DOFF_RQC_ERROR,
        DOFF_RQC_SECTOR, DOFF_RQI_DEV, DOFF_RQI_SECTOR, IoKey, Issuer, IssuerKey,
    },
    net::OFF_MISSING,
};

use crate::{
    filter::field_at,
    maps::{BLOCK_DEVS, BLOCK_STATS, DIAG_OFFSETS, IO_ISSUERS, RQ_STARTS},
    syscall::record_stats,
};

/// Reads a field whose offset user space stored at `index` in `DIAG_OFFSETS`.
#[inline(always)]
pub fn field<T>(
    ctx: &TracePointContext,
    offsets: &[u32; DOFF_LEN as usize],
    index: u32,
) -> Option<T> {
    let offset = *offsets.get(index as usize)?;
    if offset == OFF_MISSING {
        return None;
    }
    // SAFETY: the offset comes from this kernel's tracefs format for this tracepoint.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

#[inline(always)]
fn watched(dev: u32) -> bool {
    // SAFETY: read-only lookup.
    unsafe { BLOCK_DEVS.get(dev).is_some() }
}

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(dev) = field_at::<u32, BLOCK_DEV_AT>(&ctx, offsets[DOFF_RQI_DEV as usize]) else {
        return 0;
    };
    if !watched(dev) {
        return 0;
    }
    let Some(sector) = field::<u64>(&ctx, offsets, DOFF_RQI_SECTOR) else {
        return 0;
    };
    let key = IoKey {
        dev,
        _pad: 0,
        sector,
    };
    let _ = RQ_STARTS.insert(key, unsafe { bpf_ktime_get_ns() }, 0);
    0
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(dev) = field_at::<u32, BLOCK_DEV_AT>(&ctx, offsets[DOFF_RQC_DEV as usize]) else {
        return 0;
    };
    if !watched(dev) {
        return 0;
    }
    let Some(sector) = field::<u64>(&ctx, offsets, DOFF_RQC_SECTOR) else {
        return 0;
    };
    let key = IoKey {
        dev,
        _pad: 0,
        sector,
    };
    // SAFETY: copied out before the entry is removed.
    let Some(start) = (unsafe { RQ_STARTS.get(key) }).copied() else {
        return 0;
    };
    let _ = RQ_STARTS.remove(key);
    let now = unsafe { bpf_ktime_get_ns() };
    let error = field::<i32>(&ctx, offsets, DOFF_RQC_ERROR).unwrap_or(0);
    // `bytes` is not in the completion record; the issue side's is kept out of the key so a
    // partial completion still matches. Bytes per device come from the issuers.
    record_stats(&BLOCK_STATS, &dev, now.saturating_sub(start), 0, error != 0);
    0
}

#[tracepoint]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    let Some(offsets) = DIAG_OFFSETS.get(0) else {
        return 0;
    };
    let Some(dev) = field_at::<u32, BLOCK_DEV_AT>(&ctx, offsets[DOFF_BIO_DEV as usize]) else {
        return 0;
    };
    if !watched(dev) {
        return 0;
    }
    let sectors = field::<u32>(&ctx, offsets, DOFF_BIO_NR_SECTOR).unwrap_or(0);
    let key = IssuerKey {
        dev,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
    };
    let mut issuer = IO_ISSUERS.get_ptr_mut(key);
    if issuer.is_none() {
        let fresh = Issuer {
            bytes: 0,
            ios: 0,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
        if IO_ISSUERS.insert(key, fresh, 0).is_err() {
            return 0;
        }
        issuer = IO_ISSUERS.get_ptr_mut(key);
    }
    let Some(issuer) = issuer else {
        return 0;
    };
    // SAFETY: per-CPU value owned by this CPU while the program runs.
    unsafe {
        (*issuer).bytes += u64::from(sectors) * 512;
        (*issuer).ios += 1;
    }
    0
}
