//! `AgentProcess`: the real `etcd-monitor-agent` binary on a free port, killed on drop.

use std::{path::Path, process::Command, time::Duration};

use crate::{free_port, http, process::ChildGuard, wait_for};

/// A running agent.
#[derive(Debug)]
pub struct AgentProcess {
    /// `http://127.0.0.1:PORT` of its `/metrics` and `/healthz`.
    pub url: String,
    /// The process.
    pub process: ChildGuard,
    /// Its log file.
    pub log: std::path::PathBuf,
}

impl AgentProcess {
    /// Starts `binary` with `args` (plus `--listen` on a free port), logging into `dir`.
    /// `configure` may change the command further (e.g. drop privileges).
    pub fn start(
        binary: &Path,
        args: &[&str],
        dir: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--listen=127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "info");
        configure(&mut cmd);
        let log = dir.join(format!("agent-{port}.log"));
        let process = ChildGuard::spawn("etcd-monitor-agent", cmd, &log)?;
        let agent = Self {
            url: format!("http://127.0.0.1:{port}"),
            process,
            log,
        };
        wait_for("agent /healthz", Duration::from_secs(30), || {
            http::get(&format!("{}/healthz", agent.url))
                .ok()
                .filter(|r| r.status == 200)
        })
        .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.log_text()))?;
        Ok(agent)
    }

    /// `/healthz` as JSON.
    pub fn health(&self) -> anyhow::Result<serde_json::Value> {
        http::get(&format!("{}/healthz", self.url))?.json()
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(http::get(&format!("{}/metrics", self.url))?.body)
    }

    /// Pids the agent traces now.
    pub fn tracked_pids(&self) -> Vec<u64> {
        self.health()
            .ok()
            .and_then(|h| {
                h["tracked"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t["pid"].as_u64()).collect())
            })
            .unwrap_or_default()
    }

    /// Waits until the agent traces exactly `pids` (in any order).
    pub fn wait_tracking(&self, pids: &[u32], timeout: Duration) -> anyhow::Result<()> {
        let mut want: Vec<u64> = pids.iter().map(|p| u64::from(*p)).collect();
        want.sort_unstable();
        wait_for(&format!("agent to trace {want:?}"), timeout, || {
            let mut got = self.tracked_pids();
            got.sort_unstable();
            (got == want).then_some(())
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
