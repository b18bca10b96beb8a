//! With a one-page ring buffer and a flood of writes, events are dropped and counted, while
//! the in-kernel histogram still counts every single call.

use crate::common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use etcd_monitor_tests::{AgentProcess, http::prom_sum, wait_for};

const WRITES: u64 = 200_000;

/// Starts an agent with `flags` tracing a process that makes exactly `writes` one-byte
/// write(2) calls, and returns the agent's metrics once the histogram has counted them all.
///
/// The process is a shell found by a marker in its argv; it waits for a line, then becomes
/// `dd` (same pid, so it stays traced across the exec; the output file name carries the marker
/// too, so `dd` still matches).
fn traced_writes(tag: &str, flags: &[&str], writes: u64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let marker = format!("etcdmon-{tag}-{}", std::process::id());
    let match_flag = format!("--match={marker}");
    let mut args = vec![
        "--rescan-interval=200ms",
        "--mode=ebpf",
        match_flag.as_str(),
    ];
    args.extend_from_slice(flags);
    let agent = AgentProcess::start(common::agent_bin(), &args, dir.path(), |_| {})?;
    let out = dir.path().join(format!("{marker}.bin"));
    let script = format!(
        "read _go; exec dd if=/dev/zero of={} bs=1 count={writes} status=none",
        out.display()
    );
    let mut writer = Command::new("sh")
        .args(["-c", &script, &marker])
        .stdin(Stdio::piped())
        .spawn()?;
    agent.wait_tracking(&[writer.id()], Duration::from_secs(10))?;
    writer
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(b"go\n")?;
    let status = writer.wait()?;
    anyhow::ensure!(status.success(), "dd failed: {status}");
    // The exit (event or rescan) retires the process; its counts stay under member "default".
    agent.wait_tracking(&[], Duration::from_secs(10))?;
    let counted = |text: &str| {
        prom_sum(
            text,
            "etcdmon_write_duration_seconds_count",
            &[("op", "write")],
        )
    };
    wait_for("write counts to settle", Duration::from_secs(5), || {
        let text = agent.metrics().ok()?;
        (counted(&text) == Some(writes as f64)).then_some(text)
    })
    .map_err(|e| {
        let got = agent.metrics().ok().and_then(|t| counted(&t));
        anyhow::anyhow!("{e}: histogram counted {got:?} writes, dd made {writes}")
    })
}

#[test]
fn tiny_ring_buffer_drops_events_but_histograms_stay_exact() -> anyhow::Result<()> {
    if !common::require_root("tiny_ring_buffer_drops_events_but_histograms_stay_exact")? {
        return Ok(());
    }
    let text = traced_writes(
        "flood",
        &["--ringbuf-bytes=4096", "--min-duration=0s"],
        WRITES,
    )?;
    let dropped = prom_sum(
        &text,
        "etcdmon_events_dropped_total",
        &[("stage", "kernel"), ("reason", "ringbuf_full")],
    )
    .unwrap_or(0.0);
    let delivered =
        prom_sum(&text, "etcdmon_agent_events_total", &[("kind", "syscall")]).unwrap_or(0.0);
    let bytes = prom_sum(&text, "etcdmon_write_bytes_total", &[("op", "write")]).unwrap_or(0.0);
    eprintln!("writes {WRITES}: delivered {delivered}, dropped {dropped}, bytes {bytes}");
    assert!(
        dropped > 0.0,
        "a 4 KiB ring buffer should overflow under {WRITES} writes"
    );
    assert!(
        delivered + dropped >= WRITES as f64,
        "every event is either delivered or counted as dropped"
    );
    assert_eq!(bytes, WRITES as f64, "one byte per write");
    Ok(())
}

#[test]
fn min_duration_cuts_events_but_not_histograms() -> anyhow::Result<()> {
    if !common::require_root("min_duration_cuts_events_but_not_histograms")? {
        return Ok(());
    }
    let text = traced_writes("quiet", &["--min-duration=10s"], 5000)?;
    let delivered =
        prom_sum(&text, "etcdmon_agent_events_total", &[("kind", "syscall")]).unwrap_or(0.0);
    // Only events on not-yet-classified fds pass the threshold (so the agent can learn them).
    assert!(
        delivered < 50.0,
        "{delivered} events passed a 10 s threshold"
    );
    Ok(())
}
