//! The configuration reference (`docs/configuration.md`), generated from the binaries' own
//! clap definitions (their `--help`), so it cannot drift from the code: `cargo xtask docs`
//! writes it and the test run checks it is current.

use std::{path::Path, process::Command};

use anyhow::Context;

/// Where the reference lives, relative to the workspace root.
pub const CONFIG_REFERENCE: &str = "docs/configuration.md";

/// `program --help`, as clap prints it.
pub fn help(program: &Path) -> anyhow::Result<String> {
    help_of(program, &[])
}

/// The `--help` text of `program`'s subcommand `args` (e.g. `["mcp"]`), environment cleared.
pub fn help_of(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .arg("--help")
        // clap shows the value of each flag's environment variable when set: none are.
        .env_clear()
        .output()
        .with_context(|| format!("run {} --help", program.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} --help failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// The reference's text from the collector's and the agent's `--help`.
pub fn render(collector_help: &str, agent_help: &str) -> String {
    format!(
        "# Configuration reference\n\n\
         Generated from the binaries' clap definitions by `cargo xtask docs`; the test run fails \
         when this file is out of date. Every flag also reads the environment variable shown \
         with it; a config file (`--config`) may add clusters and settings, and flags win.\n\n\
         ## `etcd-monitor` (collector)\n\n```text\n{collector_help}\n```\n\n\
         ## `etcd-monitor-agent`\n\n```text\n{agent_help}\n```\n"
    )
}

/// The reference as the binaries in `bin_dir` describe themselves.
pub fn generate(bin_dir: &Path) -> anyhow::Result<String> {
    Ok(render(
        &help(&bin_dir.join("etcd-monitor"))?,
        &help(&bin_dir.join("etcd-monitor-agent"))?,
    ))
}
