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
    // The end-to-end tests start etcd clusters; two at a time is what two cores take. Every test
    // that skips appends `SKIPPED: <test>: <reason>` to the skip log (etcd_monitor_tests::require).
    let skip_log = crate::cmd::target_dir().join("skipped-tests.log");
    if let Some(parent) = skip_log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&skip_log, "")?;
    let tested = run_with(
        cargo(&[
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--test-threads=2",
        ])
        .env(SKIP_LOG_ENV, &skip_log),
    );
    let log = std::fs::read_to_string(&skip_log).unwrap_or_default();
    eprintln!("{}", skip_summary(&log));
    tested
}

/// The variable `etcd_monitor_tests::SKIP_LOG_ENV` names (xtask's lean build has not the crate).
const SKIP_LOG_ENV: &str = "ETCDMON_SKIP_LOG";

/// The marker of a skip line (`etcd_monitor_tests::SKIP_MARKER`).
const SKIP_MARKER: &str = "SKIPPED: ";

/// "N tests skipped", then one line per reason with its count and tests, from the skip log.
pub fn skip_summary(log: &str) -> String {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> =
        std::collections::BTreeMap::new();
    let mut total = 0;
    for line in log.lines() {
        let Some(rest) = line.trim().strip_prefix(SKIP_MARKER) else {
            continue;
        };
        let (test, reason) = rest.split_once(": ").unwrap_or((rest, "no reason given"));
        by_reason.entry(reason).or_default().push(test);
        total += 1;
    }
    if total == 0 {
        return "xtask: 0 tests skipped: every test ran its real part.".to_string();
    }
    let mut out = format!(
        "xtask: {total} test{} skipped (under CI=true they fail instead):",
        if total == 1 { "" } else { "s" }
    );
    for (reason, tests) in by_reason {
        out.push_str(&format!(
            "\n  {} × {reason}\n      {}",
            tests.len(),
            tests.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::skip_summary;

    #[test]
    fn the_summary_counts_skips_by_reason() {
        assert_eq!(
            skip_summary(""),
            "xtask: 0 tests skipped: every test ran its real part."
        );
        let log = "SKIPPED: a: needs root for loading eBPF programs; this test runs as uid 1000\n\
                   noise\n\
                   SKIPPED: b: promtool is missing\n\
                   SKIPPED: c: needs root for loading eBPF programs; this test runs as uid 1000\n";
        let s = skip_summary(log);
        assert!(s.starts_with("xtask: 3 tests skipped"), "{s}");
        assert!(
            s.contains(
                "2 × needs root for loading eBPF programs; this test runs as uid 1000\n      a, c"
            ),
            "{s}"
        );
        assert!(s.contains("1 × promtool is missing\n      b"), "{s}");
        assert!(skip_summary("SKIPPED: only: why").starts_with("xtask: 1 test skipped"));
    }
}
