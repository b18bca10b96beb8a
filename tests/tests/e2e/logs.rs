//! Both binaries' logs carry colour escapes only on a terminal: not into a pipe (`| tee`,
//! systemd, a file), never in JSON, and not when `NO_COLOR` is set (<https://no-color.org>).
//! The real binaries run for a few seconds under `timeout`, which stops them.

use std::process::Command;

use etcd_monitor_tests::{binary, free_port};

const ESC: &str = "\x1b[";

/// How long each run lasts before `timeout` stops it.
const RUN_SECONDS: &str = "10";

/// The collector's command line: an unreachable member, so it logs warnings too.
fn collector_argv(format: &str, data: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        binary("etcd-monitor")?.display().to_string(),
        format!("--endpoints=http://127.0.0.1:{}", free_port()?),
        "--api-host=127.0.0.1".into(),
        "--api-port=0".into(),
        format!("--grpc-port={}", free_port()?),
        format!("--data-dir={}", data.display()),
        "--health-check-interval=1s".into(),
        format!("--log-format={format}"),
    ])
}

/// The agent's: client-only (no eBPF needed), tracing nothing.
fn agent_argv(format: &str) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        binary("etcd-monitor-agent")?.display().to_string(),
        "--mode=client-only".into(),
        format!("--listen=127.0.0.1:{}", free_port()?),
        "--match=^no-such-etcd-process$".into(),
        format!("--log-format={format}"),
    ])
}

/// Runs `argv` for [`RUN_SECONDS`] with its output into pipes; returns stdout and stderr.
fn run_piped(argv: &[String], no_color: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "TERM", RUN_SECONDS])
        .args(argv)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Runs `argv` the same way but on a terminal (`script` gives it a pseudo-terminal).
fn run_on_terminal(argv: &[String], no_color: Option<&str>) -> anyhow::Result<String> {
    let line = std::iter::once(format!("timeout -s TERM {RUN_SECONDS}"))
        .chain(argv.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-f", "-c", &line, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn log_lines(out: &str) -> usize {
    out.lines()
        .filter(|l| l.contains("INFO") || l.contains("WARN") || l.contains("\"level\""))
        .count()
}

#[test]
fn logs_into_a_pipe_have_no_colour() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (name, argv) in [
        ("collector", collector_argv("text", dir.path())?),
        ("agent", agent_argv("text")?),
    ] {
        let out = run_piped(&argv, None)?;
        assert!(log_lines(&out) > 0, "{name} logged nothing:\n{out}");
        assert!(!out.contains(ESC), "{name} coloured a pipe:\n{out}");
    }
    Ok(())
}

#[test]
fn json_logs_are_plain_json_lines() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (name, argv) in [
        ("collector", collector_argv("json", dir.path())?),
        ("agent", agent_argv("json")?),
    ] {
        // On a terminal too: JSON is for machines, colour never belongs in it.
        for out in [run_piped(&argv, None)?, run_on_terminal(&argv, None)?] {
            assert!(!out.contains(ESC), "{name} coloured JSON:\n{out}");
            let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
            assert!(!lines.is_empty(), "{name} logged no JSON:\n{out}");
            for l in lines {
                serde_json::from_str::<serde_json::Value>(l.trim_end())
                    .map_err(|e| anyhow::anyhow!("{name}: {e}: {l}"))?;
            }
        }
    }
    Ok(())
}

/// The other side, so the checks above could fail: on a terminal the text logs are coloured,
/// unless `NO_COLOR` is set to something.
#[test]
fn a_terminal_gets_colour_unless_no_color() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (name, argv) in [
        ("collector", collector_argv("text", dir.path())?),
        ("agent", agent_argv("text")?),
    ] {
        let coloured = run_on_terminal(&argv, None)?;
        assert!(coloured.contains(ESC), "{name} on a terminal:\n{coloured}");
        let plain = run_on_terminal(&argv, Some("1"))?;
        assert!(log_lines(&plain) > 0, "{name} logged nothing:\n{plain}");
        assert!(!plain.contains(ESC), "{name} with NO_COLOR=1:\n{plain}");
    }
    Ok(())
}
