//! Shared bits of the agent's end-to-end tests.

use std::path::Path;

/// The agent binary cargo built for these tests.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use every helper"
)]
pub fn agent_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-monitor-agent"))
}

/// `true` when eBPF tests can run (root). Prints why they skip otherwise.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use every helper"
)]
pub fn require_root(test: &str) -> bool {
    if etcd_monitor_tests::is_root() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: loading eBPF programs needs root; this test runs as uid {}",
        unsafe { libc::geteuid() }
    );
    false
}
