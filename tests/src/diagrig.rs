//! A diagnosis rig: a 3-member etcd cluster whose members each have their own loop-device
//! filesystem (member 0's optionally throttleable, or reached through a symlink; one member
//! optionally in its own network namespace), the real agent with eBPF, the real collector and
//! a steady trickle of puts. Used by `tests/tests/network_faults.rs` and `cargo xtask
//! accuracy`; torn down on drop.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    AgentProcess, ClusterOptions, CollectorProcess, EtcdCluster, binary,
    inject::LoopDisk,
    netfault::{NetNs, Placement},
    wait_for,
};

/// Rules for this shared 2-core machine: slow sync as in `tests/tests/diagnosis.rs` (p90 above
/// 40 ms instead of the default p99 above 10 ms), and run-queue p99 above 60 ms (default 10):
/// at a load average of 15-20 from other builds every process here waits 30 ms for a CPU now
/// and then. A CFS quota is still seen at once (`throttled`, not the run queue).
pub const SHARED_MACHINE_THRESHOLDS: [&str; 3] = [
    "--diagnosis-slow-fsync-ms=40",
    "--diagnosis-quantile=0.9",
    "--diagnosis-runq-ms=60",
];

/// How to build a [`DiagRig`].
#[derive(Debug, Clone, Default)]
pub struct RigOptions {
    /// Short name used in file and device names.
    pub tag: String,
    /// Member 0's device can be throttled ([`LoopDisk::throttle_write_iops`]).
    pub throttleable0: bool,
    /// Member 0's `--data-dir` is a symlink to a directory on its device.
    pub symlinked0: bool,
    /// This member runs in its own network namespace behind a veth pair.
    pub netns_member: Option<usize>,
    /// Collector flags besides endpoints, intervals and data dir (window, thresholds).
    pub collector_args: Vec<String>,
}

/// A running rig.
pub struct DiagRig {
    load_stop: Arc<AtomicBool>,
    load: Option<std::thread::JoinHandle<()>>,
    /// The collector.
    pub collector: CollectorProcess,
    /// The agent.
    pub agent: AgentProcess,
    /// The cluster (members `member0`..`member2`).
    pub cluster: EtcdCluster,
    /// Each member's device, by index.
    pub disks: Vec<LoopDisk>,
    /// The namespace of [`RigOptions::netns_member`].
    pub netns: Option<NetNs>,
    _links: Option<tempfile::TempDir>,
}

impl DiagRig {
    /// Starts everything and waits until every member has a verdict over most of a window.
    pub fn start(options: &RigOptions) -> anyhow::Result<Self> {
        let mut disks = Vec::new();
        for i in 0..3 {
            let name = format!("{}{i}", options.tag);
            disks.push(if i == 0 && options.throttleable0 {
                LoopDisk::throttleable(&name)?
            } else {
                LoopDisk::fast(&name)?
            });
        }
        let netns = options.netns_member.map(|_| NetNs::create()).transpose()?;
        let links = options
            .symlinked0
            .then(|| tempfile::Builder::new().prefix("etcdmon-link-").tempdir())
            .transpose()?;
        let mut data_dirs: Vec<Option<PathBuf>> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| Some(d.path().join(format!("member{i}.etcd"))))
            .collect();
        if let Some(links) = &links {
            let real = disks[0].path().join("real-data");
            std::fs::create_dir_all(&real)?;
            let link = links.path().join("member0.etcd");
            std::os::unix::fs::symlink(&real, &link)?;
            data_dirs[0] = Some(link);
        }
        let placement = match (&netns, options.netns_member) {
            (Some(ns), Some(inside)) => (0..3)
                .map(|i| {
                    if i == inside {
                        ns.inside()
                    } else {
                        ns.outside()
                    }
                })
                .collect(),
            _ => Vec::<Placement>::new(),
        };
        let cluster = EtcdCluster::start(ClusterOptions {
            data_dirs,
            placement,
            ..ClusterOptions::default()
        })?;
        let collector = start_collector(&cluster, &options.collector_args)?;
        let mut matched: Vec<String> = disks
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        if let Some(links) = &links {
            matched.push(links.path().display().to_string());
        }
        let agent = start_agent(&cluster, &collector, &matched)?;
        let (load_stop, load) = start_load(cluster.endpoints());
        let rig = Self {
            load_stop,
            load: Some(load),
            collector,
            agent,
            cluster,
            disks,
            netns,
            _links: links,
        };
        rig.wait_first_verdicts()?;
        Ok(rig)
    }

    fn wait_first_verdicts(&self) -> anyhow::Result<()> {
        wait_for(
            "first full-window verdicts",
            Duration::from_secs(120),
            || {
                let d = self.diagnoses().ok()?;
                (d.len() == 3
                    && d.iter()
                        .all(|m| m["window_seconds"].as_f64().unwrap_or(0.0) >= 5.0))
                .then_some(())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", self.diagnoses(), self.collector.log_text()))
    }

    /// Every member's latest verdict (`GET /api/v1/diagnosis`).
    pub fn diagnoses(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let (status, body) = self.collector.get_json("/api/v1/diagnosis")?;
        anyhow::ensure!(status == 200, "diagnosis: {status} {body}");
        Ok(body["members"].as_array().cloned().unwrap_or_default())
    }

    /// Member name → latest verdict.
    pub fn verdicts(&self) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        Ok(self
            .diagnoses()?
            .into_iter()
            .filter_map(|d| Some((d["member"].as_str()?.to_string(), d)))
            .collect())
    }

    /// The peer ports of every member (what a lossy peer link should hit).
    pub fn peer_ports(&self) -> Vec<u16> {
        self.cluster
            .members
            .iter()
            .filter_map(|m| m.peer_url.rsplit_once(':')?.1.parse().ok())
            .collect()
    }
}

impl Drop for DiagRig {
    fn drop(&mut self) {
        self.load_stop.store(true, Ordering::Relaxed);
        if let Some(load) = self.load.take() {
            let _ = load.join();
        }
    }
}

fn start_collector(cluster: &EtcdCluster, extra: &[String]) -> anyhow::Result<CollectorProcess> {
    let data = cluster.dir().join("collector-data");
    std::fs::create_dir_all(&data)?;
    let mut args = vec![
        format!("--endpoints={}", cluster.endpoints()),
        "--health-check-interval=1s".to_string(),
        "--metrics-interval=1s".to_string(),
        format!("--data-dir={}", data.display()),
        "--diagnosis-interval=1s".to_string(),
    ];
    args.extend(extra.iter().cloned());
    CollectorProcess::start(&binary("etcd-monitor")?, &args, cluster.dir())
}

fn start_agent(
    cluster: &EtcdCluster,
    collector: &CollectorProcess,
    matched: &[String],
) -> anyhow::Result<AgentProcess> {
    let args = [
        format!("--collector={}", collector.grpc_url),
        "--node-name=node-a".to_string(),
        "--status-interval=500ms".to_string(),
        "--rescan-interval=1s".to_string(),
        "--mode=ebpf".to_string(),
        format!("--match={}", matched.join("|")),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = AgentProcess::start(&binary("etcd-monitor-agent")?, &args, cluster.dir(), |_| {})?;
    let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    agent
        .wait_tracking(&pids, Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.log_text()))?;
    Ok(agent)
}

/// About 40 puts a second through every member: enough WAL syncs per window, far from
/// saturating.
fn start_load(endpoints: String) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let mut round = 0u64;
        while !flag.load(Ordering::Relaxed) {
            let _ = crate::load::put_many(&endpoints, &format!("/diag/{round}/"), 8, 256);
            round += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    (stop, load)
}
