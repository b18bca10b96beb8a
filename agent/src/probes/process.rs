//! `sched_process_exec` / `sched_process_exit`: react at once to etcd starting or ending.
//! Optional: the periodic /proc rescan finds the same processes, only later.

use super::{Probe, ProbeGroup};

/// The process lifecycle probes.
pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_process_exec",
        category: "sched",
        name: "sched_process_exec",
        required: false,
        group: ProbeGroup::Process,
    },
    Probe {
        program: "sched_process_exit",
        category: "sched",
        name: "sched_process_exit",
        required: false,
        group: ProbeGroup::Process,
    },
];
