//! Helpers for etcd-monitor's end-to-end tests: start real etcd clusters and the project's own
//! binaries as processes on loopback, talk HTTP to them, and clean everything up on drop.

pub mod agent;
pub mod cluster;
pub mod collector;
pub mod http;
pub mod load;
pub mod process;

pub use agent::AgentProcess;
pub use cluster::{ClientTls, ClusterOptions, EtcdCluster, Member};
pub use collector::CollectorProcess;

/// Whether the test process runs as root (eBPF tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
