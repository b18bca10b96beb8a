//! The cheapest tests the kernel allows, run before any other work: bitmap lookups (array maps,
//! which the verifier inlines into a bounds check and an address computation — no helper call,
//! no hashing) and direct context loads of tracepoint fields at offsets known at compile time.

use aya_ebpf::{EbpfContext, maps::Array, programs::TracePointContext};
use etcd_monitor_agent_common::{maps::bit_position, net::OFF_MISSING};

/// Whether bit `id` is set in a bitmap of `u64` words. An id past the end is not set.
#[inline(always)]
pub fn bit_is_set(map: &Array<u64>, id: u32) -> bool {
    let (word, mask) = bit_position(id);
    map.get(word).is_some_and(|w| *w & mask != 0)
}

/// Sets bit `id` (a plain read-modify-write: a bit lost to a concurrent update of the same word
/// is restored by user space's next rewrite of the bitmap).
#[inline(always)]
pub fn set_bit(map: &Array<u64>, id: u32) {
    let (word, mask) = bit_position(id);
    if let Some(w) = map.get_ptr_mut(word) {
        // SAFETY: a pointer into the array's value, valid while the program runs.
        unsafe { *w |= mask };
    }
}

/// Reads a `T` at the constant offset `AT` of the record with a direct context load.
#[inline(always)]
pub fn load<T: Copy, const AT: usize>(ctx: &TracePointContext) -> T {
    // SAFETY: the verifier checks the load against the tracepoint's context (read-only, in
    // bounds, aligned); `AT` is a compile-time constant, as it requires.
    unsafe { *(ctx.as_ptr().cast::<u8>().add(AT).cast::<T>()) }
}

/// Reads a field at `offset` (from tracefs): a direct load when it is the usual offset `AT`,
/// else `bpf_probe_read_kernel`; `None` when this kernel lacks the field.
#[inline(always)]
pub fn field_at<T: Copy, const AT: usize>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset as usize == AT {
        return Some(load::<T, AT>(ctx));
    }
    if offset == OFF_MISSING {
        return None;
    }
    // SAFETY: the offset comes from this kernel's tracefs format for this tracepoint.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}
