//! `cargo xtask docs`: regenerates the configuration reference from the binaries' clap
//! definitions.

use std::process::Command;

use etcd_monitor_tests::docs;

use crate::cmd::{root, run_with};

/// Builds both binaries and writes `docs/configuration.md`.
pub fn run() -> anyhow::Result<()> {
    run_with(Command::new("cargo").current_dir(root()).args([
        "build",
        "-p",
        "etcd-monitor",
        "-p",
        "etcd-monitor-agent",
        "--bin",
        "etcd-monitor",
        "--bin",
        "etcd-monitor-agent",
    ]))?;
    let text = docs::generate(&root().join("target/debug"))?;
    let path = root().join(docs::CONFIG_REFERENCE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, text)?;
    println!("wrote {}", path.display());
    Ok(())
}
