//! `cargo xtask test` and `cargo xtask lint`.

use std::process::Command;

use crate::{
    cmd::{root, run_with},
    setup,
};

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root()).args(args);
    c
}

/// fmt --check and clippy with `-D warnings`, on the host and (for agent-ebpf) the BPF target.
pub fn lint() -> anyhow::Result<()> {
    run_with(&mut cargo(&["fmt", "--all", "--check"]))?;
    run_with(&mut cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        "xtask/full",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_with(
        cargo(&[
            "+nightly",
            "clippy",
            "-p",
            "etcd-monitor-agent-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ])
        .env("CARGO_TARGET_DIR", root().join("target").join("bpf-lint")),
    )?;
    Ok(())
}

/// Everything, in the order a failure is cheapest to find.
pub fn run(with_setup: bool) -> anyhow::Result<()> {
    if with_setup {
        setup::run()?;
    }
    crate::checks::run()?;
    lint()?;
    run_with(&mut cargo(&[
        "check",
        "--target",
        setup::WINDOWS_TARGET,
        "-p",
        "etcd-monitor-agent",
    ]))?;
    // The demo test runs `cargo xtask demo`, which uses release binaries and the `full` xtask:
    // build them now rather than inside a test while other tests run.
    crate::cmd::build_binaries(true, &[])?;
    run_with(&mut cargo(&["build", "-p", "xtask", "--features", "full"]))?;
    // The end-to-end tests start etcd clusters; two at a time is what two cores take.
    run_with(&mut cargo(&[
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--test-threads=2",
    ]))?;
    Ok(())
}
