//! Shared helpers of the patterns' end-to-end tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context;
use etcd_monitor_tests::{ClusterOptions, EtcdCluster};

/// A one-member cluster (most tests need no more).
pub fn one_member() -> anyhow::Result<EtcdCluster> {
    EtcdCluster::start(ClusterOptions {
        members: 1,
        ..Default::default()
    })
}

/// The `etcd-patterns-child` helper process, SIGKILLed and reaped on drop.
pub struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    /// Starts the helper with `args` and waits for its first stdout line, which must start with
    /// `expect`; returns the rest of that line.
    pub fn start(args: &[&str], expect: &str) -> anyhow::Result<(Self, String)> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-patterns-child"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn etcd-patterns-child")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let proc = Self { child, lines };
        let line = proc
            .lines
            .recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("child {args:?} never printed {expect}"))?;
        let rest = line
            .strip_prefix(expect)
            .with_context(|| format!("child printed {line:?}, expected {expect}"))?
            .trim()
            .to_string();
        Ok((proc, rest))
    }

    /// The next stdout line, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        anyhow::ensure!(rc == 0, "kill -{signal} {} failed", self.child.id());
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        anyhow::ensure!(rc == 0, "kill -9 {} failed", self.child.id());
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
