//! The setup the benchmarks share: build the agent, start a 3-member etcd cluster whose data
//! dirs share one prefix (agent-overhead, probe-cost, runner), start the agent on it (the
//! tracing benchmarks) and warm it up with put load.

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use etcd_monitor_tests::{AgentProcess, ClusterOptions, EtcdCluster};

use crate::cmd::{root, run_with, target_dir};

/// Concurrent put loops.
pub(super) const CLIENTS: usize = 32;
/// Value size in bytes.
pub(super) const VALUE_BYTES: usize = 256;
/// Distinct keys written.
pub(super) const KEY_SPACE: u64 = 10_000;

/// Builds the agent binary (`--release` or debug) and returns its path.
pub(super) fn build_agent(release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(["-p", "etcd-monitor-agent", "--bin", "etcd-monitor-agent"]);
    run_with(Command::new("cargo").current_dir(root()).args(&args))?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("etcd-monitor-agent"))
}

/// A 3-member etcd cluster whose members' data dirs are under one temporary directory.
pub(super) struct TracedCluster {
    pub cluster: EtcdCluster,
    /// The members' client URLs.
    pub endpoints: Vec<String>,
    /// The data dirs' common parent: no other process's command line holds it, so the agent's
    /// `--match` on it selects exactly these members.
    pub data_root: PathBuf,
    /// Declared last: the members stop before their data goes.
    _dir: tempfile::TempDir,
}

impl TracedCluster {
    /// Starts the cluster with its data under `/dev/shm` (tmpfs) or, with `on_disk`, under the
    /// default temporary directory; the directory's name starts with `prefix`.
    pub fn start(prefix: &str, on_disk: bool) -> anyhow::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let dir = if on_disk {
            builder.tempdir()?
        } else {
            builder.tempdir_in("/dev/shm")?
        };
        let cluster = EtcdCluster::start(ClusterOptions {
            data_dirs: (0..3)
                .map(|i| Some(dir.path().join(format!("m{i}"))))
                .collect(),
            ..ClusterOptions::default()
        })?;
        let endpoints = cluster
            .members
            .iter()
            .map(|m| m.client_url.clone())
            .collect();
        Ok(Self {
            cluster,
            endpoints,
            data_root: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Starts the agent in eBPF mode with these `--probes` groups on the cluster's members and
    /// waits (up to `within`) until it tracks all of them.
    pub fn start_agent(
        &self,
        agent_bin: &std::path::Path,
        probes: &str,
        within: Duration,
    ) -> anyhow::Result<AgentProcess> {
        let probes = format!("--probes={probes}");
        let match_flag = format!("--match={}", self.data_root.display());
        let agent = AgentProcess::start(
            agent_bin,
            &["--mode=ebpf", "--rescan-interval=2s", &probes, &match_flag],
            self.cluster.dir(),
            |_| {},
        )?;
        let pids: Vec<u32> = self.cluster.members.iter().map(|m| m.pid()).collect();
        agent.wait_tracking(&pids, within)?;
        Ok(agent)
    }

    /// Warms etcd up with 3 s of put load.
    pub fn warm_up(&self) -> anyhow::Result<()> {
        eprintln!("xtask: bench: warming up");
        put_load(&self.endpoints, Duration::from_secs(3))?;
        Ok(())
    }
}

/// Puts as fast as `CLIENTS` loops can for `duration`; returns ops/s.
pub(super) fn put_load(endpoints: &[String], duration: Duration) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = etcd_client::Client::connect(endpoints, None)
            .await
            .context("connect to etcd")?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let value = vec![b'v'; VALUE_BYTES];
        let mut tasks = Vec::new();
        let start = Instant::now();
        for c in 0..CLIENTS {
            let mut kv = client.kv_client();
            let (stop, done, value) = (stop.clone(), done.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = c as u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("/bench/agent-overhead/{}", i % KEY_SPACE);
                    if kv.put(key, value.clone(), None).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += CLIENTS as u64;
                }
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
    })
}
