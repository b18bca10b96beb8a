//! `sched:sched_wakeup`, `sched:sched_wakeup_new`, `sched:sched_switch`: run-queue latency of
//! the members' threads. Optional.

use super::{Probe, ProbeGroup};

const fn sched(name: &'static str) -> Probe {
    Probe {
        program: name,
        category: "sched",
        name,
        required: false,
        group: ProbeGroup::Sched,
    }
}

/// The scheduler probes.
pub const PROBES: &[Probe] = &[
    sched("sched_wakeup"),
    sched("sched_wakeup_new"),
    sched("sched_switch"),
];
