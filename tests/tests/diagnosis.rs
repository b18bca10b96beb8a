//! Diagnosis end to end: real etcd members on their own loop devices, the real agent (eBPF),
//! the real collector. Faults are injected for real — a throttled device under one member's
//! data dir, a CPU quota on one member's cgroup, a process hammering a member's device with
//! synced writes — and `GET /api/v1/diagnosis` must name the cause, several times in a row.
//!
//! Each scenario prints one line per run (`DIAGNOSIS <scenario> run <n>: <verdict> after <s>`),
//! the figures reported for accuracy and time to verdict. Scenarios run one at a time (a lock),
//! since a CPU quota or a throttled device on a shared 2-core machine would disturb the others.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_monitor_tests::{
    AgentProcess, ClusterOptions, CollectorProcess, EtcdCluster, binary,
    http::prom_sum,
    inject::{BlkioThrottle, CpuQuota, LoopDisk, SyncWriter},
    wait_for,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Diagnosis window of these tests (the default is 30 s; short windows make the tests
/// quicker and are what time-to-verdict is measured with).
const WINDOW: &str = "--diagnosis-window=8s";
/// Slow-sync rule of these tests: p90 above 40 ms instead of the default p99 above 10 ms. This
/// machine's two cores are shared with other builds (load average 10-15), where the journal
/// and loop-device kernel threads of a perfectly healthy member wait for CPU and its p99
/// reaches 30-100 ms while its p90 stays under 20 ms. The injected faults push p90 to hundreds
/// of milliseconds.
const SLOW_FSYNC: [&str; 2] = ["--diagnosis-slow-fsync-ms=40", "--diagnosis-quantile=0.9"];
/// Run-queue rule of these tests: p99 above 25 ms (default 10 ms); with a load average of
/// 10-20 on two cores every process here waits 10 ms for a CPU now and then.
const RUNQ: &str = "--diagnosis-runq-ms=25";

fn require_root(test: &str) -> anyhow::Result<bool> {
    etcd_monitor_tests::require_root(test, "loading eBPF programs, loop devices and cgroups")
}

/// A cluster whose members each have their own loop-device filesystem, with the agent and the
/// collector, and a steady trickle of puts.
struct Setup {
    load_stop: Arc<AtomicBool>,
    load: Option<std::thread::JoinHandle<()>>,
    collector: CollectorProcess,
    /// The collector's flags, to restart it on the same data dir and ports.
    collector_args: Vec<String>,
    _agent: AgentProcess,
    cluster: EtcdCluster,
    disks: Vec<LoopDisk>,
}

impl Setup {
    fn start(tag: &str, throttleable_member0: bool) -> anyhow::Result<Self> {
        Self::start_with(tag, throttleable_member0, &[])
    }

    /// [`Setup::start`] with more collector flags (one named here replaces the default).
    fn start_with(
        tag: &str,
        throttleable_member0: bool,
        collector_flags: &[&str],
    ) -> anyhow::Result<Self> {
        let mut disks = Vec::new();
        for i in 0..3 {
            let name = format!("{tag}{i}");
            disks.push(if i == 0 && throttleable_member0 {
                LoopDisk::throttleable(&name)?
            } else {
                LoopDisk::fast(&name)?
            });
        }
        let options = ClusterOptions {
            data_dirs: disks
                .iter()
                .enumerate()
                .map(|(i, d)| Some(d.path().join(format!("member{i}.etcd"))))
                .collect(),
            ..ClusterOptions::default()
        };
        let cluster = EtcdCluster::start(options)?;
        let data = cluster.dir().join("collector-data");
        std::fs::create_dir_all(&data)?;
        let collector_args: Vec<String> = [
            format!("--endpoints={}", cluster.endpoints()),
            "--health-check-interval=1s".to_string(),
            "--metrics-interval=1s".to_string(),
            format!("--data-dir={}", data.display()),
            WINDOW.to_string(),
            "--diagnosis-interval=1s".to_string(),
            SLOW_FSYNC[0].to_string(),
            SLOW_FSYNC[1].to_string(),
            RUNQ.to_string(),
        ]
        .into_iter()
        .filter(|f| {
            let name = f.split('=').next().unwrap_or_default();
            !collector_flags
                .iter()
                .any(|o| o.split('=').next() == Some(name))
        })
        .chain(collector_flags.iter().map(|f| f.to_string()))
        .collect();
        let collector =
            CollectorProcess::start(&binary("etcd-monitor")?, &collector_args, cluster.dir())?;
        let pattern = format!(
            "--match={}",
            disks
                .iter()
                .map(|d| d.path().display().to_string())
                .collect::<Vec<_>>()
                .join("|")
        );
        let args = [
            format!("--collector={}", collector.grpc_url),
            "--node-name=node-a".to_string(),
            "--status-interval=500ms".to_string(),
            "--rescan-interval=1s".to_string(),
            "--mode=ebpf".to_string(),
            pattern,
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent =
            AgentProcess::start(&binary("etcd-monitor-agent")?, &args, cluster.dir(), |_| {})?;
        let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
        agent.wait_tracking(&pids, Duration::from_secs(30))?;

        let load_stop = Arc::new(AtomicBool::new(false));
        let stop = load_stop.clone();
        let endpoints = cluster.endpoints();
        let load = std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // ~40 puts a second: enough WAL syncs per window, far from saturating.
                let _ = etcd_monitor_tests::load::put_many(
                    &endpoints,
                    &format!("/diag/{round}/"),
                    8,
                    256,
                );
                round += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let setup = Self {
            load_stop,
            load: Some(load),
            collector,
            collector_args,
            _agent: agent,
            cluster,
            disks,
        };
        // Every member has a verdict over a full window.
        wait_for(
            "first full-window verdicts",
            Duration::from_secs(60),
            || {
                let d = setup.diagnoses().ok()?;
                (d.len() == 3
                    && d.iter()
                        .all(|m| m["window_seconds"].as_f64().unwrap_or(0.0) >= 5.0))
                .then_some(())
            },
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}: {:?}\n{}",
                setup.diagnoses(),
                setup.collector.log_text()
            )
        })?;
        Ok(setup)
    }

    fn diagnoses(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let (status, body) = self.collector.get_json("/api/v1/diagnosis")?;
        anyhow::ensure!(status == 200, "diagnosis: {status} {body}");
        Ok(body["members"].as_array().cloned().unwrap_or_default())
    }

    fn verdict(&self, member: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self
            .collector
            .get_json(&format!("/api/v1/diagnosis?member={member}"))?;
        anyhow::ensure!(status == 200, "diagnosis of {member}: {status} {body}");
        Ok(body["members"][0].clone())
    }

    /// Waits until `member` shows no fault, so an injected fault starts from a clean verdict:
    /// `healthy`, or after 45 s also `inconclusive` (on this shared machine the nested loop
    /// device's journal threads sometimes wait for CPU long enough to make a window's p90 slow
    /// without the device or the member's scheduling explaining it). Up to 90 s: a throttle
    /// that was just lifted first drains its backlog.
    fn wait_baseline(&self, member: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        wait_for(
            &format!("{member} without a fault verdict"),
            Duration::from_secs(90),
            || {
                let v = self.verdict(member).ok()?;
                (v["cause"] == "healthy"
                    || (v["cause"] == "inconclusive" && start.elapsed() > Duration::from_secs(45)))
                .then_some(())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}: last verdict {:?}", self.verdict(member)))
    }

    /// Polls member `member` until its cause is `cause` (and `check` accepts the verdict);
    /// returns the verdict and the time it took. Every verdict seen on the way is passed to
    /// `forbid`, which fails the run if it returns an error.
    fn wait_cause(
        &self,
        member: &str,
        cause: &str,
        timeout: Duration,
        forbid: impl Fn(&serde_json::Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<(serde_json::Value, Duration)> {
        let start = Instant::now();
        loop {
            let v = self.verdict(member)?;
            forbid(&v)?;
            if v["cause"] == cause {
                return Ok((v, start.elapsed()));
            }
            if start.elapsed() > timeout {
                anyhow::bail!("{member} not {cause} after {timeout:?}; last verdict {v}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.load_stop.store(true, Ordering::Relaxed);
        if let Some(load) = self.load.take() {
            let _ = load.join();
        }
    }
}

fn report(scenario: &str, run: usize, verdict: &serde_json::Value, took: Duration) {
    eprintln!(
        "DIAGNOSIS {scenario} run {run}: {} after {:.1}s — {}\n  evidence {}",
        verdict["cause"],
        took.as_secs_f64(),
        verdict["summary"].as_str().unwrap_or_default(),
        verdict["evidence"]
    );
}

#[test]
fn healthy_cluster_under_load_stays_healthy() -> anyhow::Result<()> {
    if !require_root("healthy_cluster_under_load_stays_healthy")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::start("healthy", false)?;
    // Three back-to-back windows: every member healthy in every one.
    let mut checks = 0;
    for run in 1..=3 {
        std::thread::sleep(Duration::from_secs(8));
        for d in setup.diagnoses()? {
            checks += 1;
            assert_eq!(d["cause"], "healthy", "window {run}: false verdict {d}");
            assert!(
                d["evidence"]["etcd_wal_syncs"].as_u64().unwrap_or(0) >= 5,
                "window {run}: the load produced WAL syncs: {d}"
            );
        }
        eprintln!("DIAGNOSIS healthy window {run}: 3/3 members healthy");
    }
    assert_eq!(checks, 9);
    let metrics = setup.collector.metrics()?;
    for m in &setup.cluster.members {
        assert_eq!(
            prom_sum(
                &metrics,
                "etcdmon_diagnosis",
                &[("member", m.name.as_str()), ("cause", "healthy")]
            ),
            Some(1.0),
            "etcdmon_diagnosis for {}",
            m.name
        );
    }
    let (status, body) = setup.collector.get_json("/api/v1/diagnosis?cluster=nope")?;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cluster")
    );
    Ok(())
}

#[test]
fn slow_device_is_disk_slow_and_only_for_that_member() -> anyhow::Result<()> {
    if !require_root("slow_device_is_disk_slow_and_only_for_that_member")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut setup = Setup::start("slowdisk", true)?;
    for run in 1..=2 {
        setup
            .wait_baseline("member0")
            .map_err(|e| anyhow::anyhow!("before run {run}: {e}"))?;
        setup.disks[0].throttle_write_iops(20)?;
        let (v, took) = setup.wait_cause("member0", "disk_slow", Duration::from_secs(60), |v| {
            anyhow::ensure!(
                v["cause"] != "cpu_starved" && v["cause"] != "noisy_neighbor",
                "wrong verdict for a slow device: {v}"
            );
            Ok(())
        })?;
        report("disk_slow", run, &v, took);
        assert!(
            v["evidence"]["device_service_mean_ms"]
                .as_f64()
                .unwrap_or(0.0)
                > 5.0,
            "{v}"
        );
        for other in ["member1", "member2"] {
            let o = setup.verdict(other)?;
            assert_ne!(o["cause"], "disk_slow", "{other} is on a fast device: {o}");
            assert_ne!(o["cause"], "cpu_starved", "{other}: {o}");
        }
        setup.disks[0].throttle_write_iops(0)?;
    }
    Ok(())
}

#[test]
fn cpu_quota_is_cpu_starved_not_disk_slow() -> anyhow::Result<()> {
    if !require_root("cpu_quota_is_cpu_starved_not_disk_slow")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::start("cpu", false)?;
    let pid = setup.cluster.members[0].pid();
    for run in 1..=2 {
        setup
            .wait_baseline("member0")
            .map_err(|e| anyhow::anyhow!("before run {run}: {e}"))?;
        // 1 ms of CPU per 100 ms (the smallest quota cgroup v1 takes).
        let quota = CpuQuota::apply(pid, 1_000, 100_000)?;
        let (v, took) =
            setup.wait_cause("member0", "cpu_starved", Duration::from_secs(60), |v| {
                anyhow::ensure!(
                    v["cause"] != "disk_slow" && v["cause"] != "noisy_neighbor",
                    "a CPU-starved member on a fast disk diagnosed as {v}"
                );
                Ok(())
            })?;
        report("cpu_starved", run, &v, took);
        assert_eq!(v["reason"], "throttled", "{v}");
        // etcd's own fsync histogram says "slow disk" — the device says otherwise.
        let etcd_p99 = v["evidence"]["etcd_wal_fsync_p99_ms"]
            .as_f64()
            .unwrap_or(0.0);
        let device = v["evidence"]["device_service_mean_ms"]
            .as_f64()
            .unwrap_or(f64::MAX);
        eprintln!(
            "cpu_starved run {run}: etcd WAL fsync p99 {etcd_p99:.1} ms, device mean {device:.2} ms"
        );
        assert!(device < 5.0, "the device stayed fast: {v}");
        assert!(etcd_p99 > 40.0, "etcd's own histogram looked slow: {v}");
        drop(quota);
    }
    Ok(())
}

#[test]
fn synced_writer_on_the_same_device_is_a_noisy_neighbor() -> anyhow::Result<()> {
    if !require_root("synced_writer_on_the_same_device_is_a_noisy_neighbor")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut setup = Setup::start("noisy", true)?;
    // A device with a fixed I/O budget that etcd alone stays well within.
    setup.disks[0].throttle_write_iops(300)?;
    for run in 1..=2 {
        setup
            .wait_baseline("member0")
            .map_err(|e| anyhow::anyhow!("before run {run}: {e}"))?;
        let log = setup.cluster.dir().join(format!("noisy-{run}.log"));
        let writer = SyncWriter::start(setup.disks[0].path(), 16, &log)?;
        let (v, took) =
            setup.wait_cause("member0", "noisy_neighbor", Duration::from_secs(60), |v| {
                anyhow::ensure!(v["cause"] != "cpu_starved", "wrong verdict: {v}");
                Ok(())
            })?;
        report("noisy_neighbor", run, &v, took);
        assert_eq!(v["neighbor"]["comm"], "dd", "{v}");
        assert_eq!(
            v["neighbor"]["pid"].as_u64(),
            Some(u64::from(writer.pid())),
            "{v}"
        );
        drop(writer);
    }
    Ok(())
}

/// The leader's name, as the collector sees it.
fn leader_name(setup: &Setup) -> anyhow::Result<String> {
    wait_for("a leader", Duration::from_secs(30), || {
        let (status, body) = setup.collector.get_json("/api/v1/cluster/leader").ok()?;
        (status == 200)
            .then(|| body["leader"]["name"].as_str().map(str::to_string))
            .flatten()
    })
}

#[test]
fn starved_follower_seen_from_a_healthy_peer_is_peer_unhealthy_not_the_network()
-> anyhow::Result<()> {
    if !require_root("starved_follower_seen_from_a_healthy_peer_is_peer_unhealthy_not_the_network")?
    {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Only the CFS quota may starve a member here: with eight builds on two cores every
    // member's run-queue p99 reaches ~50 ms (measured), which would make the healthy peers
    // `cpu_starved` themselves. The quota is seen through `cpu.stat` (reason `throttled`).
    let setup = Setup::start_with("peerstarve", false, &["--diagnosis-runq-ms=250"])?;
    for run in 1..=2 {
        let leader = leader_name(&setup)?;
        let (index, starved) = setup
            .cluster
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| m.name != leader)
            .map(|(i, m)| (i, m.name.clone()))
            .ok_or_else(|| anyhow::anyhow!("no follower"))?;
        setup
            .wait_baseline(&starved)
            .map_err(|e| anyhow::anyhow!("before run {run}: {e}"))?;
        // The previous run's verdicts have left every window.
        wait_for(
            "no member saying peer_unhealthy",
            Duration::from_secs(90),
            || {
                let all = setup.diagnoses().ok()?;
                all.iter()
                    .all(|d| d["cause"] != "peer_unhealthy")
                    .then_some(())
            },
        )?;
        let quota = CpuQuota::apply(setup.cluster.members[index].pid(), 1_000, 100_000)?;
        let start = Instant::now();
        let (v, took) = loop {
            let all = setup.diagnoses()?;
            for d in &all {
                anyhow::ensure!(
                    !(d["cause"] == "peer_network_slow" && d["peer"] == starved.as_str()),
                    "a starved peer blamed on the network: {d}"
                );
            }
            let found = all.iter().find(|d| {
                d["member"] != starved.as_str()
                    && d["cause"] == "peer_unhealthy"
                    && d["peer"] == starved.as_str()
                    && d["peer_cause"] == "cpu_starved"
            });
            if let Some(d) = found {
                break (d.clone(), start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(90) {
                anyhow::bail!("no healthy member said peer_unhealthy({starved}) in 90 s: {all:#?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        report("peer_unhealthy", run, &v, took);
        let own = setup.verdict(&starved)?;
        assert_ne!(own["cause"], "peer_network_slow", "{own}");
        assert_ne!(own["cause"], "peer_unhealthy", "{own}");
        drop(quota);
    }
    Ok(())
}

#[test]
fn blkio_throttled_member_is_io_throttled_with_its_cgroup() -> anyhow::Result<()> {
    if !require_root("blkio_throttled_member_is_io_throttled_with_its_cgroup")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::start("iothrottle", false)?;
    let device = setup.disks[0].device_numbers()?;
    for run in 1..=2 {
        setup
            .wait_baseline("member0")
            .map_err(|e| anyhow::anyhow!("before run {run}: {e}"))?;
        let throttle = BlkioThrottle::apply(setup.cluster.members[0].pid(), &device, 20)?;
        let (v, took) =
            setup.wait_cause("member0", "io_throttled", Duration::from_secs(60), |v| {
                anyhow::ensure!(
                    !["disk_slow", "noisy_neighbor", "cpu_starved"]
                        .contains(&v["cause"].as_str().unwrap_or_default()),
                    "an I/O-throttled cgroup diagnosed as {v}"
                );
                Ok(())
            })?;
        report("io_throttled", run, &v, took);
        assert_eq!(v["cgroup"], throttle.cgroup().as_str(), "{v}");
        let io = &v["evidence"]["cgroup_io"];
        assert_eq!(io["device"], device.as_str(), "{v}");
        assert_eq!(io["limit_kind"], "write_iops", "{v}");
        assert!(io["limit_ratio"].as_f64().unwrap_or(0.0) >= 0.8, "{v}");
        assert!(
            v["evidence"]["device_service_mean_ms"]
                .as_f64()
                .unwrap_or(f64::MAX)
                < 5.0,
            "the device itself stayed fast: {v}"
        );
        let metrics = setup.collector.metrics()?;
        eprintln!(
            "io_throttled run {run}: collector series {}",
            metrics
                .lines()
                .filter(|l| l.starts_with("etcdmon_member_cgroup_io_limit"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        drop(throttle);
    }
    Ok(())
}

#[test]
fn stopped_leader_change_shows_the_previous_leaders_verdict() -> anyhow::Result<()> {
    if !require_root("stopped_leader_change_shows_the_previous_leaders_verdict")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut setup = Setup::start("leaderstop", false)?;
    let leader = leader_name(&setup)?;
    let index = setup
        .cluster
        .members
        .iter()
        .position(|m| m.name == leader)
        .ok_or_else(|| anyhow::anyhow!("leader {leader} is not a member"))?;
    let stopped_at = Instant::now();
    setup.cluster.members[index].signal(libc::SIGSTOP)?;
    let result = wait_for(
        "the leader change explained as stopped",
        Duration::from_secs(60),
        || {
            let (_, body) = setup.collector.get_json("/api/v1/cluster/leader").ok()?;
            let last = body["history"].as_array()?.last()?.clone();
            let x = &last["explanation"];
            (x["previous_leader_name"] == leader.as_str()
                && x["previous_leader"]["cause"] == "stopped")
                .then_some(last)
        },
    );
    let _ = setup.cluster.members[index].signal(libc::SIGCONT);
    let change = result.map_err(|e| {
        anyhow::anyhow!(
            "{e}: {:?}",
            setup.collector.get_json("/api/v1/cluster/leader")
        )
    })?;
    eprintln!(
        "DIAGNOSIS leader_change: explained after {:.1}s — {}\n  {}",
        stopped_at.elapsed().as_secs_f64(),
        change["explanation"]["summary"],
        change
    );
    assert_ne!(change["new_leader_name"], leader.as_str(), "{change}");
    assert_eq!(
        change["old_leader"].as_str().map(str::is_empty),
        Some(false)
    );
    let peers = change["explanation"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(peers.len(), 2, "the two other members' views: {change}");
    assert!(
        change["explanation"]["previous_leader"]["evidence"]["process_state"] == "T",
        "{change}"
    );

    // The explanation is kept in the store: a restarted collector still says why, although
    // the old leader is long running again.
    let port = |url: &str| -> anyhow::Result<u16> {
        Ok(url.rsplit(':').next().unwrap_or_default().parse()?)
    };
    let (api, grpc) = (
        port(&setup.collector.url)?,
        port(&setup.collector.grpc_url)?,
    );
    setup.collector.process.terminate(Duration::from_secs(10))?;
    setup.collector = CollectorProcess::start_on(
        &binary("etcd-monitor")?,
        &setup.collector_args,
        setup.cluster.dir(),
        api,
        grpc,
    )?;
    let after = wait_for(
        "the explanation after a collector restart",
        Duration::from_secs(30),
        || {
            let (_, body) = setup.collector.get_json("/api/v1/cluster/leader").ok()?;
            body["history"]
                .as_array()?
                .iter()
                .find(|c| c["at_ms"] == change["at_ms"] && c["new_leader"] == change["new_leader"])
                .filter(|c| !c["explanation"].is_null())
                .cloned()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", setup.collector.log_text()))?;
    assert_eq!(after["explanation"], change["explanation"], "{after}");
    Ok(())
}
