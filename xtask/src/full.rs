//! The lean `cargo xtask` (pure-Rust dependencies only, so it builds on a bare machine) hands
//! `demo` and `bench` to a build of itself with the `full` feature, after `setup` has installed
//! what that build needs (protoc for the etcd client, clang and bpf-linker for the agent).

use std::process::Command;

use crate::{cmd::root, setup};

/// Runs setup, then replaces this process with `cargo run -p xtask --features full` and the
/// same arguments, so Ctrl-C reaches the demo directly.
pub fn reexec() -> anyhow::Result<()> {
    setup::run()?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(["run", "--quiet", "-p", "xtask", "--features", "full", "--"])
        .args(std::env::args_os().skip(1));
    exec(cmd)
}

#[cfg(unix)]
fn exec(mut cmd: Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(anyhow::anyhow!("could not run {cmd:?}: {err}"))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "{cmd:?} failed with {status}");
    Ok(())
}
