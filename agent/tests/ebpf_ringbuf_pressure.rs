//! With a one-page ring buffer and a flood of writes, events are dropped and counted, while
//! the in-kernel histogram still counts every single call.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use etcd_monitor_tests::{AgentProcess, http::prom_sum, wait_for};

const WRITES: u64 = 200_000;

#[test]
fn tiny_ring_buffer_drops_events_but_histograms_stay_exact() -> anyhow::Result<()> {
    if !common::require_root("tiny_ring_buffer_drops_events_but_histograms_stay_exact") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let marker = format!("etcdmon-flood-{}", std::process::id());
    let agent = AgentProcess::start(
        common::agent_bin(),
        &[
            "--ringbuf-bytes=4096",
            "--min-duration=0s",
            "--rescan-interval=200ms",
            "--mode=ebpf",
            &format!("--match={marker}"),
        ],
        dir.path(),
        |_| {},
    )?;

    // A shell (found by the marker in its argv) that waits for a line, then becomes dd doing
    // exactly WRITES one-byte write(2) calls. Same pid, so it stays traced across the exec.
    // The output name carries the marker too, so dd still matches after the exec.
    let out = dir.path().join(format!("{marker}.bin"));
    let script = format!(
        "read _go; exec dd if=/dev/zero of={} bs=1 count={WRITES} status=none",
        out.display()
    );
    let mut flood = Command::new("sh")
        .args(["-c", &script, &marker])
        .stdin(Stdio::piped())
        .spawn()?;
    agent.wait_tracking(&[flood.id()], Duration::from_secs(10))?;
    flood
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(b"go\n")?;
    let status = flood.wait()?;
    assert!(status.success(), "dd failed: {status}");

    // The exit (event or rescan) retires the process; its counts stay under member "default".
    agent.wait_tracking(&[], Duration::from_secs(10))?;
    let text = wait_for("write counts to settle", Duration::from_secs(5), || {
        let text = agent.metrics().ok()?;
        (prom_sum(
            &text,
            "etcdmon_write_duration_seconds_count",
            &[("op", "write")],
        ) == Some(WRITES as f64))
        .then_some(text)
    })
    .map_err(|e| {
        let got = agent.metrics().ok().and_then(|t| {
            prom_sum(
                &t,
                "etcdmon_write_duration_seconds_count",
                &[("op", "write")],
            )
        });
        anyhow::anyhow!("{e}: histogram counted {got:?} writes, dd made {WRITES}")
    })?;
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
    if !common::require_root("min_duration_cuts_events_but_not_histograms") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let marker = format!("etcdmon-quiet-{}", std::process::id());
    let agent = AgentProcess::start(
        common::agent_bin(),
        &[
            "--min-duration=10s",
            "--rescan-interval=200ms",
            "--mode=ebpf",
            &format!("--match={marker}"),
        ],
        dir.path(),
        |_| {},
    )?;
    let out = dir.path().join(format!("{marker}.bin"));
    let script = format!(
        "read _go; exec dd if=/dev/zero of={} bs=1 count=5000 status=none",
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
    assert!(writer.wait()?.success());
    agent.wait_tracking(&[], Duration::from_secs(10))?;
    let text = wait_for("5000 writes counted", Duration::from_secs(5), || {
        let text = agent.metrics().ok()?;
        (prom_sum(
            &text,
            "etcdmon_write_duration_seconds_count",
            &[("op", "write")],
        ) == Some(5000.0))
        .then_some(text)
    })?;
    let delivered =
        prom_sum(&text, "etcdmon_agent_events_total", &[("kind", "syscall")]).unwrap_or(0.0);
    // Only events on not-yet-classified fds pass the threshold (so the agent can learn them).
    assert!(
        delivered < 50.0,
        "{delivered} events passed a 10 s threshold"
    );
    Ok(())
}
