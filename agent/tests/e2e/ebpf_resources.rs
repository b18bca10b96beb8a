//! Per-member resource figures on the agent's `/metrics`, checked against `/proc` and
//! `statvfs` read independently here: a real etcd member with its data dir on a small loop
//! ext4 of its own and a CPU quota on its own cgroup, the real agent with real eBPF.
//!
//! Tolerances (the agent samples every 5 s, so its figures are up to one interval old): RSS
//! ±10 %, filesystem used/free ±1 % of the filesystem's size, size and inode total exact, open
//! fds ±5, CPU time within what the 0.2-core quota allows in one interval and a half.

use crate::common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_monitor_proto::v1::{
    AgentStatus, EventBatch, PushAck,
    agent_ingest_server::{AgentIngest, AgentIngestServer},
};
use tokio_stream::StreamExt;

use etcd_monitor_tests::{
    AgentProcess, free_port,
    http::prom_sum,
    inject::{CpuQuota, LoopDisk},
    process::ChildGuard,
    wait_for,
};

/// A stand-in collector that keeps the latest status snapshot the agent shipped.
#[derive(Clone, Default)]
struct LatestStatus(Arc<Mutex<Option<AgentStatus>>>);

#[tonic::async_trait]
impl AgentIngest for LatestStatus {
    async fn push(
        &self,
        request: tonic::Request<tonic::Streaming<EventBatch>>,
    ) -> Result<tonic::Response<PushAck>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut last = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            last = batch.sequence;
            if let (Some(status), Ok(mut latest)) = (batch.status, self.0.lock()) {
                *latest = Some(status);
            }
        }
        Ok(tonic::Response::new(PushAck {
            last_sequence: last,
            ..PushAck::default()
        }))
    }
}

fn serve(addr: SocketAddr, recorder: LatestStatus) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgentIngestServer::new(recorder))
            .serve(addr)
            .await;
    });
    Ok(runtime)
}

/// The CPU quota put on the member: 0.2 cores.
const QUOTA_US: u64 = 20_000;
const PERIOD_US: u64 = 100_000;
const QUOTA_CORES: f64 = QUOTA_US as f64 / PERIOD_US as f64;

/// `statvfs` of `path`, read by the test itself: (size, used, available, inodes total).
fn statvfs(path: &Path) -> anyhow::Result<(f64, f64, f64, f64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid path and a writable statvfs.
    anyhow::ensure!(
        unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } == 0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: statvfs succeeded.
    let s = unsafe { s.assume_init() };
    let f = s.f_frsize as f64;
    Ok((
        s.f_blocks as f64 * f,
        (s.f_blocks - s.f_bfree) as f64 * f,
        s.f_bavail as f64 * f,
        s.f_files as f64,
    ))
}

fn kib_field(path: &str, key: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(path)?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .ok_or_else(|| anyhow::anyhow!("{key} missing in {path}"))?;
    let kib: f64 = line.split_whitespace().next().unwrap_or_default().parse()?;
    Ok(kib * 1024.0)
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').unwrap_or(0) + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(f.len() > 13, "short stat");
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

struct Member {
    name: String,
    client_url: String,
    process: ChildGuard,
}

/// Starts one member with its data dir at `data_dir`; with `mount_first`, under
/// `unshare --mount` after running that shell command (a mount only its namespace has).
fn start_member(
    log_dir: &Path,
    tag: &str,
    data_dir: &Path,
    mount_first: Option<&str>,
) -> anyhow::Result<Member> {
    let name = format!("res-{tag}-{}", std::process::id());
    let (client, peer) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let etcd = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
    let args = [
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        "--logger=zap".to_string(),
    ];
    let cmd = match mount_first {
        None => {
            let mut cmd = Command::new(etcd);
            cmd.args(&args);
            cmd
        }
        Some(mount) => {
            // unshare execs sh, which execs etcd: one pid throughout.
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--propagation=private",
                "sh",
                "-c",
                &format!("{mount} && exec {etcd} {}", args.join(" ")),
            ]);
            cmd
        }
    };
    let log = log_dir.join(format!("{name}.log"));
    let process = ChildGuard::spawn(&name, cmd, &log)?;
    let member = Member {
        name,
        client_url,
        process,
    };
    wait_for("etcd healthy", Duration::from_secs(30), || {
        etcd_monitor_tests::http::get(&format!("{}/health", member.client_url))
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("true"))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
    Ok(member)
}

/// One figure of the member from a scrape.
fn figure(text: &str, name: &str, member: &str) -> Option<f64> {
    prom_sum(text, name, &[("member", member)])
}

fn within(what: &str, got: f64, want: f64, tolerance: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (got - want).abs() <= tolerance,
        "{what}: agent {got}, /proc or statvfs {want}, tolerance {tolerance}"
    );
    Ok(())
}

/// df's used share: used / (used + available).
fn used_ratio(text: &str, member: &str) -> Option<f64> {
    let used = figure(text, "etcdmon_member_fs_used_bytes", member)?;
    let free = figure(text, "etcdmon_member_fs_free_bytes", member)?;
    Some(used / (used + free))
}

#[test]
fn member_resources_follow_proc_statvfs_and_cgroup_quota() -> anyhow::Result<()> {
    if !common::require_root("member_resources_follow_proc_statvfs_and_cgroup_quota")? {
        return Ok(());
    }
    let logs = tempfile::tempdir()?;
    let disk = LoopDisk::fast("resources")?;
    let data_dir: PathBuf = disk.path().join("data");
    let member = start_member(logs.path(), "loop", &data_dir, None)?;
    let pid = member.process.pid();
    let _quota = CpuQuota::apply(pid, QUOTA_US, PERIOD_US)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let shipped = LatestStatus::default();
    let _server = serve(addr, shipped.clone())?;
    let agent = AgentProcess::start(
        common::agent_bin(),
        &[
            &format!("--collector=http://{addr}"),
            "--status-interval=500ms",
            "--rescan-interval=1s",
            "--mode=ebpf",
            &format!("--match=--name={}( |$)", member.name),
        ],
        logs.path(),
        |_| {},
    )?;
    agent
        .wait_tracking(&[pid], Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    let name = member.name.as_str();

    // A client connection held open (a watch), and some load under the quota.
    let mut watch = Command::new("etcdctl")
        .args([
            &format!("--endpoints={}", member.client_url),
            "watch",
            "/res/",
            "--prefix",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut load = Command::new("sh")
        .args([
            "-c",
            &format!(
                "while :; do etcdctl --endpoints={} put /res/k v >/dev/null 2>&1; done",
                member.client_url
            ),
        ])
        .spawn()?;
    let result = (|| -> anyhow::Result<()> {
        // The CPU figures relative to the quota, once a sample with a rate exists.
        let text = wait_for(
            "CPU limit from the member's cgroup and a CPU rate",
            Duration::from_secs(60),
            || {
                let text = agent.metrics().ok()?;
                let limit = prom_sum(
                    &text,
                    "etcdmon_member_cpu_limit_cores",
                    &[("member", name), ("source", "cgroup")],
                )?;
                let cores = figure(&text, "etcdmon_member_cpu_cores", name)?;
                let active = figure(&text, "etcd_server_active_connections", name)?;
                ((limit - QUOTA_CORES).abs() < 1e-9 && cores > 0.0 && active >= 1.0).then_some(text)
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.metrics().unwrap_or_default()))?;
        let cores = figure(&text, "etcdmon_member_cpu_cores", name).unwrap_or(-1.0);
        let ratio = figure(&text, "etcdmon_member_cpu_limit_ratio", name).unwrap_or(-1.0);
        within("cpu limit ratio", ratio, cores / QUOTA_CORES, 1e-9)?;
        anyhow::ensure!(
            cores <= QUOTA_CORES * 1.3,
            "{cores} cores used under a {QUOTA_CORES}-core quota"
        );
        println!("cpu: {cores:.3} cores, {ratio:.2} of the 0.2-core quota");

        // CPU time, RSS, fds, node memory against /proc read now.
        let before = cpu_seconds(pid)?;
        let text = agent.metrics()?;
        let after = cpu_seconds(pid)?;
        let agent_cpu = figure(&text, "etcdmon_member_cpu_seconds_total", name).unwrap_or(-1.0);
        // The agent's reading is at most one sampling interval (5 s) old; under the quota the
        // member uses at most 0.2 cores meanwhile (1.5x for scheduling slack).
        anyhow::ensure!(
            agent_cpu <= after + 0.011 && agent_cpu >= before - 5.0 * QUOTA_CORES * 1.5,
            "cpu seconds: agent {agent_cpu}, /proc {before}..{after}"
        );
        let rss = kib_field(&format!("/proc/{pid}/status"), "VmRSS:")?;
        let agent_rss = figure(&text, "etcd_server_memory_usage_bytes", name).unwrap_or(-1.0);
        within("rss", agent_rss, rss, rss * 0.10)?;
        let limit = prom_sum(
            &text,
            "etcdmon_member_memory_limit_bytes",
            &[("member", name)],
        )
        .unwrap_or(-1.0);
        let mem_ratio = figure(&text, "etcdmon_member_memory_limit_ratio", name).unwrap_or(-1.0);
        within("memory limit ratio", mem_ratio, agent_rss / limit, 1e-9)?;
        let total = kib_field("/proc/meminfo", "MemTotal:")?;
        let node_total = prom_sum(&text, "etcdmon_node_memory_total_bytes", &[]).unwrap_or(-1.0);
        within("node MemTotal", node_total, total, 0.0)?;
        anyhow::ensure!(
            limit > 0.0 && limit <= total,
            "memory limit {limit} of {total}"
        );
        let available = prom_sum(&text, "etcdmon_node_memory_available_bytes", &[]).unwrap_or(-1.0);
        anyhow::ensure!(
            available > 0.0 && available <= total,
            "available {available}"
        );
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64;
        let agent_fds = figure(&text, "etcdmon_member_open_fds", name).unwrap_or(-1.0);
        within("open fds", agent_fds, fds, 5.0)?;
        println!(
            "rss {rss} (agent {agent_rss}), fds {fds} (agent {agent_fds}), memory limit {limit}"
        );

        // The data dir's filesystem against statvfs of the loop mount.
        let (size, used, free, inodes) = statvfs(disk.path())?;
        let agent_size = figure(&text, "etcdmon_member_fs_size_bytes", name).unwrap_or(-1.0);
        within("fs size", agent_size, size, 0.0)?;
        within(
            "fs used",
            figure(&text, "etcdmon_member_fs_used_bytes", name).unwrap_or(-1.0),
            used,
            size * 0.01,
        )?;
        within(
            "etcd_server_disk_usage_bytes",
            figure(&text, "etcd_server_disk_usage_bytes", name).unwrap_or(-1.0),
            used,
            size * 0.01,
        )?;
        within(
            "fs free",
            figure(&text, "etcdmon_member_fs_free_bytes", name).unwrap_or(-1.0),
            free,
            size * 0.01,
        )?;
        within(
            "fs inodes",
            figure(&text, "etcdmon_member_fs_inodes_total", name).unwrap_or(-1.0),
            inodes,
            0.0,
        )?;
        let base_ratio = used / (used + free);

        // The same figures travel in the agent's status to the collector.
        let status = wait_for(
            "a shipped status with the member's resources and a CPU rate",
            Duration::from_secs(30),
            || {
                let status = shipped.0.lock().ok()?.clone()?;
                status
                    .resources
                    .iter()
                    .any(|r| r.member == name && r.has_cpu_cores)
                    .then_some(status)
            },
        )?;
        let r = status
            .resources
            .iter()
            .find(|r| r.member == name)
            .ok_or_else(|| anyhow::anyhow!("no resources for {name}"))?;
        anyhow::ensure!(r.pid == pid, "pid {} in the status, {pid} here", r.pid);
        anyhow::ensure!(
            r.cpu_limit_from_cgroup && (r.cpu_limit_cores - QUOTA_CORES).abs() < 1e-9,
            "shipped CPU limit {} (cgroup: {})",
            r.cpu_limit_cores,
            r.cpu_limit_from_cgroup
        );
        anyhow::ensure!(r.has_rss && r.has_fs && r.has_open_fds, "{r:?}");
        within("shipped rss", r.rss_bytes as f64, rss, rss * 0.10)?;
        within("shipped fs size", r.fs_size_bytes as f64, size, 0.0)?;
        within("shipped fs used", r.fs_used_bytes as f64, used, size * 0.01)?;
        within("shipped fds", r.open_fds as f64, fds, 5.0)?;
        anyhow::ensure!(
            r.has_client_connections && r.client_connections >= 1,
            "the watch's connection: {r:?}"
        );
        let node = status
            .node
            .ok_or_else(|| anyhow::anyhow!("no node resources"))?;
        within(
            "shipped MemTotal",
            node.memory_total_bytes as f64,
            total,
            0.0,
        )?;

        // etcd preallocates 64 MiB WAL segments (the live one and the next): over half of the
        // 256 MiB filesystem is used before any filler.
        anyhow::ensure!(
            base_ratio < 0.75,
            "the fresh filesystem is {base_ratio} full"
        );

        // Another file fills the filesystem past 80 %: the agent's used share follows.
        let filler = disk.path().join("filler.dat");
        let want = (0.87 * (used + free) - used).max(0.0) as u64;
        let status = Command::new("fallocate")
            .args(["-l", &want.to_string()])
            .arg(&filler)
            .status()?;
        anyhow::ensure!(status.success(), "fallocate failed");
        let (_, used_full, free_full, _) = statvfs(disk.path())?;
        let full = used_full / (used_full + free_full);
        anyhow::ensure!(full > 0.8, "filled to {full}");
        let seen = wait_for(
            "agent sees the filesystem > 80 % used",
            Duration::from_secs(30),
            || used_ratio(&agent.metrics().ok()?, name).filter(|r| *r > 0.8),
        )?;
        within("used share when full", seen, full, 0.01)?;
        println!("filesystem {base_ratio:.3} used, {full:.3} with the filler; agent saw {seen:.3}");

        std::fs::remove_file(&filler)?;
        let back = wait_for(
            "agent sees the filesystem back under 80 %",
            Duration::from_secs(30),
            || used_ratio(&agent.metrics().ok()?, name).filter(|r| *r < 0.8),
        )?;
        within(
            "used share after deleting the filler",
            back,
            base_ratio,
            0.02,
        )?;
        Ok(())
    })();
    let _ = load.kill();
    let _ = load.wait();
    let _ = watch.kill();
    let _ = watch.wait();
    result.map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.log_text()))
}

#[test]
fn data_dir_filesystem_is_read_in_the_members_mount_namespace() -> anyhow::Result<()> {
    if !common::require_root("data_dir_filesystem_is_read_in_the_members_mount_namespace")? {
        return Ok(());
    }
    let logs = tempfile::tempdir()?;
    // Only the member's namespace has a 192 MiB tmpfs on `mnt`; in the agent's (and this
    // test's) namespace `mnt` is a plain directory of the host filesystem.
    let mountpoint = std::fs::canonicalize(logs.path())?.join("mnt");
    std::fs::create_dir_all(&mountpoint)?;
    let tmpfs_bytes: u64 = 192 << 20;
    let member = start_member(
        logs.path(),
        "ns",
        &mountpoint.join("etcd"),
        Some(&format!(
            "mount -t tmpfs -o size={tmpfs_bytes} etcdmon-res {}",
            mountpoint.display()
        )),
    )?;
    let pid = member.process.pid();
    let (host_size, ..) = statvfs(&mountpoint)?;
    anyhow::ensure!(
        host_size as u64 != tmpfs_bytes,
        "the test's own view must not have the tmpfs"
    );
    let agent = AgentProcess::start(
        common::agent_bin(),
        &[
            "--rescan-interval=1s",
            "--mode=ebpf",
            &format!("--match=--name={}( |$)", member.name),
        ],
        logs.path(),
        |_| {},
    )?;
    agent
        .wait_tracking(&[pid], Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    let size = wait_for(
        "the data dir's filesystem size",
        Duration::from_secs(30),
        || {
            figure(
                &agent.metrics().ok()?,
                "etcdmon_member_fs_size_bytes",
                &member.name,
            )
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    // Read independently through the member's root: the same tmpfs.
    let (own_view, used, ..) = statvfs(
        &Path::new(&format!("/proc/{pid}/root"))
            .join(mountpoint.strip_prefix("/").unwrap_or(&mountpoint)),
    )?;
    within(
        "fs size in the member's namespace",
        size,
        tmpfs_bytes as f64,
        0.0,
    )?;
    within(
        "fs size through /proc/PID/root",
        own_view,
        tmpfs_bytes as f64,
        0.0,
    )?;
    // etcd's preallocated WAL segments are on the tmpfs.
    anyhow::ensure!(used >= (64 << 20) as f64, "tmpfs used {used}");
    Ok(())
}
