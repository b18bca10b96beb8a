//! Log2 latency buckets, computed the same way in the kernel and in user space.

/// Number of log2 slots kept per (process, op, file class). Slot `k` counts durations in
/// `[2^k, 2^(k+1))` nanoseconds; the last slot also takes everything longer (≥ 2^39 ns ≈ 9 min).
pub const HIST_SLOTS: usize = 40;

/// Index of the log2 slot for a duration in nanoseconds, clamped to `HIST_SLOTS - 1`.
///
/// Written as a fixed sequence of comparisons (no loop, no leading-zero intrinsic) so the eBPF
/// verifier accepts it on any kernel.
#[inline(always)]
pub const fn log2_slot(ns: u64) -> usize {
    let mut v = ns;
    let mut r: usize = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    if r >= HIST_SLOTS { HIST_SLOTS - 1 } else { r }
}

/// Exclusive upper bound of slot `slot` in nanoseconds (`2^(slot+1)`).
pub const fn slot_upper_bound_ns(slot: usize) -> u64 {
    1u64 << (slot + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_powers_of_two() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 0);
        assert_eq!(log2_slot(2), 1);
        assert_eq!(log2_slot(3), 1);
        assert_eq!(log2_slot(4), 2);
        assert_eq!(log2_slot(1023), 9);
        assert_eq!(log2_slot(1024), 10);
        assert_eq!(log2_slot(1_000_000), 19); // 1 ms lies in [2^19, 2^20) ns
        assert_eq!(log2_slot(u64::MAX), HIST_SLOTS - 1);
    }

    #[test]
    fn every_duration_lies_below_its_slot_bound() {
        for shift in 0..63u32 {
            for ns in [1u64 << shift, (1u64 << shift) + 1, (2u64 << shift) - 1] {
                let slot = log2_slot(ns);
                if slot < HIST_SLOTS - 1 {
                    assert!(ns < slot_upper_bound_ns(slot), "{ns} in slot {slot}");
                    assert!(slot == 0 || ns >= slot_upper_bound_ns(slot - 1));
                }
            }
        }
    }
}
