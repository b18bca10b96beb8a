//! A member's WAL fdatasyncs are counted as `file="wal"` however its dirs are spelled: through a
//! symlink, relative to its cwd, with a separate `--wal-dir`, or inside its own mount namespace
//! on a bind mount the agent's namespace does not have. Real etcd, real agent, real eBPF.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use etcd_monitor_tests::{AgentProcess, free_port, http::prom_sum, process::ChildGuard, wait_for};

/// Puts that each end in at least one WAL fdatasync.
const PUTS: usize = 40;

/// One etcd member started the way a test asks.
struct Member {
    name: String,
    client_url: String,
    process: ChildGuard,
}

/// How to start the member.
struct Start<'a> {
    /// `--data-dir` exactly as given on the command line.
    data_dir: &'a str,
    /// Extra flags (`--wal-dir`).
    extra: Vec<String>,
    /// Working directory of the process.
    cwd: &'a Path,
    /// Run `sh -c "<prefix> exec etcd …"` under `unshare -m` (own mount namespace).
    unshare_prefix: Option<String>,
}

fn start_member(dir: &Path, test: &str, start: Start<'_>) -> anyhow::Result<Member> {
    let name = format!("canon-{test}-{}", std::process::id());
    let (client, peer) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", start.data_dir),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        "--logger=zap".to_string(),
    ];
    args.extend(start.extra);
    let etcd = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
    let mut cmd = match &start.unshare_prefix {
        None => {
            let mut cmd = Command::new(&etcd);
            cmd.args(&args);
            cmd
        }
        Some(prefix) => {
            // unshare execs sh, which execs etcd: one pid throughout.
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--propagation=private",
                "sh",
                "-c",
                &format!("{prefix} exec {etcd} {}", args.join(" ")),
            ]);
            cmd
        }
    };
    cmd.current_dir(start.cwd);
    let process = ChildGuard::spawn(&name, cmd, &dir.join(format!("{name}.log")))?;
    let member = Member {
        name,
        client_url,
        process,
    };
    wait_for(
        &format!("etcd {} healthy", member.name),
        Duration::from_secs(30),
        || {
            etcd_monitor_tests::http::get(&format!("{}/health", member.client_url))
                .ok()
                .filter(|r| r.status == 200 && r.body.contains("true"))
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{}",
            std::fs::read_to_string(dir.join(format!("{}.log", member.name))).unwrap_or_default()
        )
    })?;
    Ok(member)
}

/// Starts the agent on exactly this member, makes `PUTS` writes and waits until the agent
/// counts at least as many WAL fdatasyncs for it.
fn assert_wal_fdatasyncs_counted(dir: &Path, member: &Member) -> anyhow::Result<()> {
    let agent = AgentProcess::start(
        common::agent_bin(),
        &[
            "--rescan-interval=1s",
            "--mode=ebpf",
            &format!("--match=--name={}( |$)", member.name),
        ],
        dir,
        |_| {},
    )?;
    let pid = member.process.pid();
    agent
        .wait_tracking(&[pid], Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_text()))?;
    let wal = |text: &str| {
        prom_sum(
            text,
            "etcdmon_fsync_duration_seconds_count",
            &[
                ("member", &member.name),
                ("file", "wal"),
                ("op", "fdatasync"),
            ],
        )
        .unwrap_or(0.0)
    };
    let before = wal(&agent.metrics()?);
    let status = Command::new("sh")
        .args([
            "-c",
            &format!(
                "for i in $(seq 1 {PUTS}); do etcdctl --endpoints={} put /canon/$i v >/dev/null || exit 1; done",
                member.client_url
            ),
        ])
        .status()?;
    anyhow::ensure!(status.success(), "etcdctl put failed");
    wait_for(
        &format!(
            "{PUTS} WAL fdatasyncs of {} counted as file=\"wal\"",
            member.name
        ),
        Duration::from_secs(30),
        || (wal(&agent.metrics().ok()?) >= before + PUTS as f64).then_some(()),
    )
    .map_err(|e| {
        let text = agent.metrics().unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("etcdmon_fsync_duration_seconds_count"))
            .collect();
        anyhow::anyhow!("{e}\n{}\n{}", lines.join("\n"), agent.log_text())
    })?;
    Ok(())
}

fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[test]
fn symlinked_data_dir() -> anyhow::Result<()> {
    if !common::require_root("symlinked_data_dir")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let volume = real(dir.path()).join("volume");
    std::fs::create_dir_all(&volume)?;
    let link = dir.path().join("etcd-link");
    std::os::unix::fs::symlink(&volume, &link)?;
    let member = start_member(
        dir.path(),
        "symlink",
        Start {
            data_dir: &link.display().to_string(),
            extra: vec![],
            cwd: dir.path(),
            unshare_prefix: None,
        },
    )?;
    assert!(
        volume.join("member/wal").is_dir(),
        "etcd wrote through the link"
    );
    assert_wal_fdatasyncs_counted(dir.path(), &member)
}

#[test]
fn relative_data_dir() -> anyhow::Result<()> {
    if !common::require_root("relative_data_dir")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let member = start_member(
        dir.path(),
        "relative",
        Start {
            data_dir: "rel.etcd",
            extra: vec![],
            cwd: dir.path(),
            unshare_prefix: None,
        },
    )?;
    assert!(dir.path().join("rel.etcd/member/wal").is_dir());
    assert_wal_fdatasyncs_counted(dir.path(), &member)
}

#[test]
fn separate_wal_dir_behind_a_symlink() -> anyhow::Result<()> {
    if !common::require_root("separate_wal_dir_behind_a_symlink")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let fast = real(dir.path()).join("fast-wal");
    std::fs::create_dir_all(&fast)?;
    let wal_link = dir.path().join("wal-link");
    std::os::unix::fs::symlink(&fast, &wal_link)?;
    let data = dir.path().join("data.etcd");
    let member = start_member(
        dir.path(),
        "waldir",
        Start {
            data_dir: &data.display().to_string(),
            extra: vec![format!("--wal-dir={}", wal_link.join("wal").display())],
            cwd: dir.path(),
            unshare_prefix: None,
        },
    )?;
    assert!(
        fast.join("wal").is_dir(),
        "the WAL lives in the separate dir"
    );
    assert_wal_fdatasyncs_counted(dir.path(), &member)
}

#[test]
fn own_mount_namespace_with_a_bind_mounted_data_dir() -> anyhow::Result<()> {
    if !common::require_root("own_mount_namespace_with_a_bind_mounted_data_dir")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let base = real(dir.path());
    let volume = base.join("volume");
    let mountpoint = base.join("mnt");
    std::fs::create_dir_all(&volume)?;
    std::fs::create_dir_all(&mountpoint)?;
    // Only the member's namespace has the bind mount; in the agent's, `mnt` stays empty.
    let member = start_member(
        dir.path(),
        "mountns",
        Start {
            data_dir: &mountpoint.join("etcd").display().to_string(),
            extra: vec![],
            cwd: dir.path(),
            unshare_prefix: Some(format!(
                "mount --bind {} {} &&",
                volume.display(),
                mountpoint.display()
            )),
        },
    )?;
    assert!(
        volume.join("etcd/member/wal").is_dir(),
        "etcd wrote into the bind-mounted volume"
    );
    assert!(
        !mountpoint.join("etcd").exists(),
        "the bind mount is private to the member's namespace"
    );
    assert_wal_fdatasyncs_counted(dir.path(), &member)
}
