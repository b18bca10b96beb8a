//! Running commands and finding the workspace.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where cargo puts builds: `CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the collector and agent binaries (`cargo build [--release] … extra`) and returns
/// the directory they are in.
pub fn build_binaries(release: bool, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend([
        "-p",
        "etcd-monitor",
        "-p",
        "etcd-monitor-agent",
        "--bin",
        "etcd-monitor",
        "--bin",
        "etcd-monitor-agent",
    ]);
    args.extend(extra);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run_with(Command::new(cargo).current_dir(root()).args(&args))?;
    let dir = target_dir().join(if release { "release" } else { "debug" });
    for name in ["etcd-monitor", "etcd-monitor-agent"] {
        anyhow::ensure!(
            dir.join(name).exists(),
            "{name} was not built in {}",
            dir.display()
        );
    }
    Ok(dir)
}

/// Prints and runs `program args`, failing unless it exits 0.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_with(Command::new(program).args(args))
}

/// Prints and runs a prepared command, failing unless it exits 0.
pub fn run_with(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", display(cmd));
    }
    Ok(())
}

/// Runs quietly and returns stdout when the command exits 0, `None` otherwise (or when the
/// program is missing).
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program args` as a shell-like line.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
