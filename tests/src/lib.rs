//! Helpers for etcd-monitor's end-to-end tests: start real etcd clusters and the project's own
//! binaries as processes on loopback, talk HTTP to them, and clean everything up on drop.

pub mod agent;
pub mod cluster;
pub mod collector;
pub mod docs;
pub mod grafana;
pub mod http;
pub mod inject;
pub mod load;
pub mod process;
pub mod proxy;
pub mod tls;

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
