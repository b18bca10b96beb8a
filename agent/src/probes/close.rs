//! `close`: the kernel forgets a closed fd's class so a reused number is classified afresh.

use super::{Probe, ProbeGroup};

/// The close probe. Required: without it a reused fd number would keep a stale class.
pub const PROBES: &[Probe] = &[Probe {
    program: "sys_enter_close",
    category: "syscalls",
    name: "sys_enter_close",
    required: true,
    group: ProbeGroup::Fd,
}];
