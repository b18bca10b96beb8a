//! Helpers for etcd-monitor's end-to-end tests: start real etcd clusters and the project's own
//! binaries as processes on loopback, talk HTTP to them, and clean everything up on drop.

pub mod agent;
pub mod cluster;
pub mod collector;
pub mod diagrig;
pub mod docs;
pub mod grafana;
pub mod http;
pub mod inject;
pub mod load;
pub mod netfault;
pub mod process;
pub mod proxy;
pub mod tls;

pub use agent::AgentProcess;
pub use cluster::{ClientTls, ClusterOptions, EtcdCluster, Member};
pub use collector::CollectorProcess;

/// Whether the test process runs as root (eBPF tests need it). `ETCDMON_TEST_AS_NONROOT=1`
/// pretends it does not, to exercise the skip path by hand as root.
pub fn is_root() -> bool {
    if std::env::var_os(AS_NONROOT_ENV).is_some_and(|v| v == "1") {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Set to `1` to make [`is_root`] answer `false` (for trying the skip path as root).
pub const AS_NONROOT_ENV: &str = "ETCDMON_TEST_AS_NONROOT";

/// Names a file that every skipped test appends one line to; `cargo xtask test` sets it and
/// prints how many tests skipped and why.
pub const SKIP_LOG_ENV: &str = "ETCDMON_SKIP_LOG";

/// Every skip line (on stderr and in the skip log) starts with this: `SKIPPED: <test>: <reason>`.
pub const SKIP_MARKER: &str = "SKIPPED: ";

/// Whether the tests run in CI (`CI=true`), where a test that cannot run its real part fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `test` can run. When it cannot (`available` is false): under `CI=true` an error
/// naming the test and `reason` (the test fails); otherwise a `SKIPPED: <test>: <reason>` line
/// on stderr and in the file named by `ETCDMON_SKIP_LOG`, and `Ok(false)` (the test returns).
pub fn require(test: &str, available: bool, reason: &str) -> anyhow::Result<bool> {
    let log = std::env::var_os(SKIP_LOG_ENV).map(std::path::PathBuf::from);
    decide_skip(test, available, reason, in_ci(), log.as_deref())
}

/// [`require`] for eBPF tests: runs only as root.
pub fn require_root(test: &str, needs: &str) -> anyhow::Result<bool> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let reason = if is_root() && uid == 0 {
        String::new()
    } else if uid == 0 {
        format!("needs root for {needs}; {AS_NONROOT_ENV}=1 pretends otherwise")
    } else {
        format!("needs root for {needs}; this test runs as uid {uid}")
    };
    require(test, is_root(), &reason)
}

/// The decision behind [`require`], with the environment passed in.
pub fn decide_skip(
    test: &str,
    available: bool,
    reason: &str,
    ci: bool,
    log: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    if available {
        return Ok(true);
    }
    let reason = reason.replace('\n', " ");
    if ci {
        anyhow::bail!(
            "{test} cannot run its real part ({reason}), and CI=true: a test must not pass by skipping"
        );
    }
    let line = format!("{SKIP_MARKER}{test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = log {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("cannot append to the skip log {}: {e}", path.display());
        }
    }
    Ok(false)
}

/// Returns a TCP port on 127.0.0.1 that is free now and that this process has not handed out
/// before, taken from below the kernel's ephemeral range. Tests run two at a time in one
/// process: a port the kernel picks for `bind(0)` (a test's webhook receiver, an outgoing
/// connection) could otherwise be one another test was handed but had not bound yet — CI once
/// saw an etcd member fail with "address already in use" that way.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static ISSUED: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = port_range();
    let span = u32::from(high - low);
    // Different test binaries start at different places in the range.
    let offset = std::process::id() % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + u16::try_from((offset + step) % span)?;
        let fresh = ISSUED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port);
        if fresh && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port left in {low}..{high}")
}

/// Ports [`free_port`] hands out: from 10000 up to the start of the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768 by default), which `bind(0)` and outgoing
/// connections use.
fn port_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > 12_000 {
        (10_000, ephemeral_low)
    } else {
        // An unusual ephemeral range: use the ports above it instead.
        (61_000, 65_000)
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Path of a workspace binary built in the same profile as the running test
/// (`cargo test --workspace` builds every binary before it runs any test).
pub fn binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built; run `cargo build -p {name}` (or `cargo xtask test`, which builds the whole workspace) first",
        path.display()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_that_cannot_run_fails_in_ci_and_is_logged_otherwise() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("skips.log");
        assert!(decide_skip("t0", true, "", true, Some(&log))?);
        let err = decide_skip("t1", false, "needs root", true, Some(&log))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("t1") && err.contains("needs root") && err.contains("CI=true"),
            "{err}"
        );
        assert!(!log.exists(), "a failure is not a skip");
        assert!(!decide_skip("t2", false, "needs root", false, Some(&log))?);
        assert!(!decide_skip(
            "t3",
            false,
            "promtool\nis missing",
            false,
            Some(&log)
        )?);
        assert_eq!(
            std::fs::read_to_string(&log)?,
            "SKIPPED: t2: needs root\nSKIPPED: t3: promtool is missing\n"
        );
        Ok(())
    }
}
