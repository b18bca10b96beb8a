//! `CollectorProcess`: the real `etcd-monitor` binary on a free loopback port, killed on drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{free_port, http, process::ChildGuard, wait_for};

/// A running collector.
#[derive(Debug)]
pub struct CollectorProcess {
    /// `http://127.0.0.1:PORT` of its REST API and `/metrics`.
    pub url: String,
    /// `http://127.0.0.1:PORT` of its gRPC ingest and event stream.
    pub grpc_url: String,
    /// The process.
    pub process: ChildGuard,
    /// Its log file.
    pub log: PathBuf,
}

impl CollectorProcess {
    /// Starts `binary` with `args` plus `--api-host=127.0.0.1 --api-port=<free>` (and
    /// `--grpc-port=<free>`), logging into `dir`, and waits until `/health` answers.
    pub fn start(binary: &Path, args: &[String], dir: &Path) -> anyhow::Result<Self> {
        Self::start_on(binary, args, dir, free_port()?, free_port()?)
    }

    /// Like [`Self::start`] on given ports (to restart a collector where agents expect it).
    pub fn start_on(
        binary: &Path,
        args: &[String],
        dir: &Path,
        port: u16,
        grpc_port: u16,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.arg("--api-host=127.0.0.1")
            .arg(format!("--api-port={port}"))
            .arg(format!("--grpc-port={grpc_port}"))
            .args(args)
            .env("RUST_LOG", "info");
        let log = dir.join(format!("collector-{port}.log"));
        let process = ChildGuard::spawn("etcd-monitor", cmd, &log)?;
        let mut collector = Self {
            url: format!("http://127.0.0.1:{port}"),
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
            process,
            log,
        };
        let ready = wait_for("collector /health", Duration::from_secs(30), || {
            if let Ok(Some(status)) = collector.process.try_wait() {
                return Some(Err(anyhow::anyhow!("collector exited with {status}")));
            }
            http::get(&format!("{}/health", collector.url))
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(collector),
            Ok(Err(e)) | Err(e) => Err(anyhow::anyhow!(
                "{e}\ncollector log:\n{}",
                collector.log_text()
            )),
        }
    }

    /// `GET path` parsed as JSON, with the status code.
    pub fn get_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = http::get(&format!("{}{path}", self.url))?;
        Ok((r.status, r.json()?))
    }

    /// `GET /api/v1/cluster/status` (optionally `?cluster=`).
    pub fn status(&self, cluster: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let path = match cluster {
            Some(c) => format!("/api/v1/cluster/status?cluster={c}"),
            None => "/api/v1/cluster/status".to_string(),
        };
        let (code, body) = self.get_json(&path)?;
        anyhow::ensure!(code == 200, "status answered {code}: {body}");
        Ok(body)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(http::get(&format!("{}/metrics", self.url))?.body)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
