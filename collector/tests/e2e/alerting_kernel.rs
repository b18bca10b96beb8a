//! The kernel-side slow-fsync rule end to end: one etcd member's data directory sits on a loop
//! device whose writes the blkio cgroup throttles, the real agent traces every member's
//! fdatasync in the kernel, and only that member's KernelSlowWalFsync alert fires, with the
//! kernel p99 in its annotation. Needs root (eBPF, loop devices, mount, cgroups).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::common::{start_collector, tail};
use anyhow::Context;
use etcd_monitor_tests::{AgentProcess, ClusterOptions, EtcdCluster, binary, wait_for};

/// Write operations per second the slow member's device allows.
const WRITE_IOPS: u32 = 20;

/// A throttled filesystem: a file on tmpfs as a loop device, ext4, mounted, and a blkio cgroup
/// that limits writes to it. Torn down on drop.
struct SlowDisk {
    mount: PathBuf,
    device: String,
    cgroup: PathBuf,
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl SlowDisk {
    fn create(base: &Path) -> anyhow::Result<Self> {
        let image = base.join("slow.img");
        let mount = base.join("slow");
        std::fs::create_dir_all(&mount)?;
        run("truncate", &["-s", "512M", &image.display().to_string()])?;
        let device = run("losetup", &["-f", "--show", &image.display().to_string()])?;
        let cgroup = PathBuf::from(format!(
            "/sys/fs/cgroup/blkio/etcdmon-slow-{}",
            std::process::id()
        ));
        let disk = Self {
            mount: mount.clone(),
            device: device.clone(),
            cgroup: cgroup.clone(),
        };
        run("mkfs.ext4", &["-q", &device])?;
        run("mount", &[&device, &mount.display().to_string()])?;
        std::fs::create_dir_all(&cgroup).context("blkio cgroup (cgroup v1)")?;
        let majmin = run("lsblk", &["-dno", "MAJ:MIN", &device])?;
        std::fs::write(
            cgroup.join("blkio.throttle.write_iops_device"),
            format!("{} {WRITE_IOPS}", majmin.trim()),
        )?;
        Ok(disk)
    }

    /// Moves `pid` (all its threads) into the throttled cgroup.
    fn throttle(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string())?;
        Ok(())
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

#[test]
fn slow_disk_under_one_member_fires_the_kernel_rule_for_that_member_only() -> anyhow::Result<()> {
    if !etcd_monitor_tests::require_root(
        "slow_disk_under_one_member_fires_the_kernel_rule_for_that_member_only",
        "eBPF, loop devices, mount and cgroups",
    )? {
        return Ok(());
    }
    let agent_bin = binary("etcd-monitor-agent")?;
    // Everything on tmpfs (fast fsync) except the slow member's data dir.
    let base = tempfile::Builder::new()
        .prefix("etcdmon-alerts-kernel-")
        .tempdir_in("/dev/shm")?;
    let disk = SlowDisk::create(base.path())?;
    let slow = 2;
    let cluster = EtcdCluster::start(ClusterOptions {
        data_dirs: vec![
            Some(base.path().join("m0.etcd")),
            Some(base.path().join("m1.etcd")),
            Some(disk.mount.join("m2.etcd")),
        ],
        ..ClusterOptions::default()
    })?;
    // Only after the cluster formed: joining on a throttled disk would take long.
    disk.throttle(cluster.members[slow].pid())?;
    let slow_name = cluster.members[slow].name.clone();

    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yaml");
    // The built-in rule with a short window and no `for`, so the test is quick.
    std::fs::write(
        &rules,
        "rules:
  - name: KernelSlowWalFsync
    severity: critical
    expr: kernel_wal_fsync_p99_seconds[30s] > 0.01
    annotations:
      summary: WAL fdatasync p99 on {{ member }} is {{ kernel_p99_ms }} ms (kernel-measured).
      description: 'Cluster {{ cluster }}: kernel p99 {{ kernel_p99_ms }} ms over 30s.'
",
    )?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let rules_arg = format!("--rules={}", rules.display());
    let collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            &rules_arg,
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--dial-timeout=2s",
            "--diagnosis-window=8s",
            "--diagnosis-interval=1s",
        ],
    )?;
    let match_arg = format!("--match={}", base.path().display());
    let agent = AgentProcess::start(
        &agent_bin,
        &[
            &format!("--collector={}", collector.grpc_url),
            "--node-name=node-a",
            "--status-interval=500ms",
            "--rescan-interval=1s",
            "--mode=ebpf",
            &match_arg,
        ],
        dir.path(),
        |_| {},
    )?;
    let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    agent.wait_tracking(&pids, Duration::from_secs(30))?;

    // Steady writes: every member fsyncs its WAL for each.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let endpoints = cluster.endpoints();
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = etcd_monitor_tests::load::put_many(
                    &endpoints,
                    &format!("/w/{round}/"),
                    16,
                    256,
                );
                round += 1;
            }
        })
    };
    let result = (|| -> anyhow::Result<()> {
        let alert = wait_for(
            "KernelSlowWalFsync on the slow member",
            Duration::from_secs(90),
            || {
                let (_, body) = collector.get_json("/api/v1/alerts").ok()?;
                body["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["name"] == "KernelSlowWalFsync"
                            && a["state"] == "firing"
                            && a["member"] == slow_name.as_str()
                    })
                    .cloned()
            },
        )
        .map_err(|e| {
            let members = collector
                .get_json("/api/v1/cluster/members")
                .map(|(_, b)| b)
                .unwrap_or_default();
            anyhow::anyhow!(
                "{e}\nmembers: {members}\ncollector:\n{}\nagent:\n{}",
                tail(&collector.log_text(), 30),
                tail(&agent.log_text(), 30)
            )
        })?;
        let p99_s = alert["value"].as_f64().unwrap_or_default();
        let p99_ms = format!("{:.1}", p99_s * 1000.0);
        eprintln!("kernel WAL fdatasync p99 of the throttled member: {p99_ms} ms");
        assert!(p99_s > 0.01, "{alert}");
        let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(
            summary.contains(&format!("{p99_ms} ms")),
            "kernel p99 in the annotation: {summary}"
        );
        assert!(summary.contains(&slow_name), "{summary}");
        // The diagnosis engine's verdict for that member rides along in the annotations
        // (which verdict depends on where this throttle sits; that it is there is the point).
        let diagnosis = wait_for("a diagnosis on the alert", Duration::from_secs(30), || {
            let (_, body) = collector.get_json("/api/v1/alerts").ok()?;
            body["alerts"].as_array()?.iter().find(|a| {
                    a["name"] == "KernelSlowWalFsync" && a["member"] == slow_name.as_str()
                })?["annotations"]["diagnosis"]
                    .as_str()
                    .map(str::to_string)
        })?;
        let (_, verdicts) = collector.get_json(&format!("/api/v1/diagnosis?member={slow_name}"))?;
        eprintln!("diagnosis annotation: {diagnosis}\nGET /api/v1/diagnosis: {verdicts}");
        let causes = [
            "io_throttled",
            "disk_slow",
            "noisy_neighbor",
            "cpu_starved",
            "peer_network_slow",
            "healthy",
            "inconclusive",
        ];
        assert!(
            causes.iter().any(|c| diagnosis.starts_with(c)),
            "{diagnosis}"
        );
        // Keep writing a while longer: the fast members never fire.
        std::thread::sleep(Duration::from_secs(5));
        let (_, body) = collector.get_json("/api/v1/alerts")?;
        let firing: Vec<String> = body["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["name"] == "KernelSlowWalFsync")
                    .filter_map(|a| a["member"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            firing,
            vec![slow_name.clone()],
            "only the slow member: {body}"
        );
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    drop(agent);
    drop(cluster);
    drop(disk);
    result
}
