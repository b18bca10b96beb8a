//! The setup the benchmarks share: build the agent, start a 3-member etcd cluster whose data
//! dirs share one prefix (agent-overhead, probe-cost, runner), start the agent on it (the
//! tracing benchmarks) and warm it up with put load.

use std::{path::PathBuf, process::Command, time::Duration};

use etcd_monitor_tests::{AgentProcess, ClusterOptions, EtcdCluster};

use crate::cmd::{root, run_with, target_dir};

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
        super::agent_overhead::put_load(&self.endpoints, Duration::from_secs(3))?;
        Ok(())
    }
}
