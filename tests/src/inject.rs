//! Fault injection for the diagnosis tests: a filesystem on its own loop device (optionally one
//! whose backing store can be throttled, so the device itself becomes slow), a CPU quota on a
//! process through a new cgroup, and a process hammering a directory with synced writes.
//!
//! Everything is undone on drop. Needs root, `losetup`, `mkfs.ext4` and `mount`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;

use crate::process::ChildGuard;

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One loop device with an ext4 filesystem mounted on it.
struct Layer {
    image: PathBuf,
    device: String,
    mount: tempfile::TempDir,
}

impl Layer {
    fn new(image: PathBuf, size_mb: u64) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&image)
            .with_context(|| format!("creating {}", image.display()))?;
        file.set_len(size_mb << 20)?;
        drop(file);
        let image_str = image.to_string_lossy().into_owned();
        let device = run("losetup", &["-f", "--show", &image_str])?;
        let layer_mount = tempfile::Builder::new().prefix("etcdmon-disk-").tempdir()?;
        let layer = Self {
            image,
            device,
            mount: layer_mount,
        };
        // No lazy inode-table or journal initialisation: its background writes (the
        // ext4lazyinit kernel thread) would be a neighbour of their own on a fresh device.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &layer.device,
            ],
        )?;
        run(
            "mount",
            &[&layer.device, &layer.mount.path().to_string_lossy()],
        )?;
        Ok(layer)
    }

    fn numbers(&self) -> anyhow::Result<String> {
        let name = Path::new(&self.device)
            .file_name()
            .and_then(|n| n.to_str())
            .context("loop device name")?
            .to_string();
        Ok(std::fs::read_to_string(format!("/sys/block/{name}/dev"))?
            .trim()
            .to_string())
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A filesystem of its own for an etcd data dir, on a loop device backed by memory.
///
/// `LoopDisk::throttleable` stacks two loop devices: the data dir's device (`inner`) is backed
/// by a file on a second loop device (`outer`); throttling the outer device's write IOPS
/// (blkio, cgroup v1 root) makes every request on the inner device slow, so the device under
/// the data dir is genuinely slow as the block layer sees it.
pub struct LoopDisk {
    inner: Layer,
    outer: Option<Layer>,
    throttled: bool,
}

impl LoopDisk {
    /// A fast device: one loop device over a file in /dev/shm.
    pub fn fast(tag: &str) -> anyhow::Result<Self> {
        let image = PathBuf::from(format!("/dev/shm/etcdmon-{tag}-{}.img", std::process::id()));
        Ok(Self {
            inner: Layer::new(image, 256)?,
            outer: None,
            throttled: false,
        })
    }

    /// A device that [`LoopDisk::throttle_write_iops`] can slow down.
    pub fn throttleable(tag: &str) -> anyhow::Result<Self> {
        let outer_image = PathBuf::from(format!(
            "/dev/shm/etcdmon-{tag}-outer-{}.img",
            std::process::id()
        ));
        let outer = Layer::new(outer_image, 400)?;
        let inner = Layer::new(outer.mount.path().join("inner.img"), 256)?;
        Ok(Self {
            inner,
            outer: Some(outer),
            throttled: false,
        })
    }

    /// Where to put data (the mounted filesystem of the inner device).
    pub fn path(&self) -> &Path {
        self.inner.mount.path()
    }

    /// The kernel name of the device under [`LoopDisk::path`] (`loop3`).
    pub fn device_name(&self) -> String {
        self.inner.device.trim_start_matches("/dev/").to_string()
    }

    /// `major:minor` of the device under [`LoopDisk::path`].
    pub fn device_numbers(&self) -> anyhow::Result<String> {
        self.inner.numbers()
    }

    /// Limits writes to the backing device to `iops` per second (0 lifts the limit).
    pub fn throttle_write_iops(&mut self, iops: u64) -> anyhow::Result<()> {
        let outer = self
            .outer
            .as_ref()
            .context("only a throttleable disk can be throttled")?;
        let file = "/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device";
        anyhow::ensure!(
            Path::new(file).exists(),
            "{file} is missing: this host has no cgroup v1 blkio throttling"
        );
        std::fs::write(file, format!("{} {iops}", outer.numbers()?))
            .with_context(|| format!("writing {file}"))?;
        self.throttled = iops != 0;
        Ok(())
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.throttled {
            let _ = self.throttle_write_iops(0);
        }
        // The fields drop next, `inner` before `outer` (its image lives on the outer
        // filesystem).
    }
}

/// A CPU quota on one process: a new cgroup (v1 `cpu` hierarchy when the host has one, else
/// cgroup v2 `cpu.max`) with `quota_us` per `period_us`, the process moved into it.
pub struct CpuQuota {
    dir: PathBuf,
    root_procs: PathBuf,
    pid: u32,
}

impl CpuQuota {
    /// Moves `pid` (all its threads) into a new cgroup limited to `quota_us` per `period_us`.
    pub fn apply(pid: u32, quota_us: u64, period_us: u64) -> anyhow::Result<Self> {
        let name = format!("etcdmon-test-{}-{pid}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists();
        let (root, dir) = if v1 {
            let root = PathBuf::from("/sys/fs/cgroup/cpu");
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota_us.to_string())?;
            (root, dir)
        } else {
            let root = PathBuf::from("/sys/fs/cgroup");
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("cpu.max"), format!("{quota_us} {period_us}"))
                .context("writing cpu.max")?;
            (root, dir)
        };
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", dir.display()))?;
        Ok(Self {
            dir,
            root_procs: root.join("cgroup.procs"),
            pid,
        })
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.root_procs, self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// An I/O limit on one process: a new cgroup v1 `blkio` group whose
/// `blkio.throttle.write_iops_device` limits writes to one device, the process moved into it
/// (how container platforms cap a container's I/O). Undone on drop.
pub struct BlkioThrottle {
    dir: PathBuf,
    pid: u32,
}

impl BlkioThrottle {
    /// The v1 blkio hierarchy this needs.
    const ROOT: &'static str = "/sys/fs/cgroup/blkio";

    /// Moves `pid` into a new blkio cgroup that lets it write `iops` requests a second to
    /// `device` (`major:minor`).
    pub fn apply(pid: u32, device: &str, iops: u64) -> anyhow::Result<Self> {
        let root = Path::new(Self::ROOT);
        anyhow::ensure!(
            root.join("blkio.throttle.write_iops_device").exists(),
            "{} has no blkio throttling (cgroup v1 blkio is needed)",
            root.display()
        );
        let dir = root.join(format!("etcdmon-io-{}-{pid}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = Self { dir, pid };
        std::fs::write(
            guard.dir.join("blkio.throttle.write_iops_device"),
            format!("{device} {iops}"),
        )
        .context("writing blkio.throttle.write_iops_device")?;
        std::fs::write(guard.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", guard.dir.display()))?;
        Ok(guard)
    }

    /// The cgroup's path as `/proc/PID/cgroup` shows it (`/etcdmon-io-…`).
    pub fn cgroup(&self) -> String {
        format!(
            "/{}",
            self.dir
                .strip_prefix(Self::ROOT)
                .unwrap_or(&self.dir)
                .display()
        )
    }
}

impl Drop for BlkioThrottle {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Path::new(Self::ROOT).join("cgroup.procs"),
            self.pid.to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A `dd` process writing to a file in `dir` with every write synced (`oflag=dsync`) until
/// dropped: a noisy neighbour on the device under `dir`.
pub struct SyncWriter {
    child: ChildGuard,
}

impl SyncWriter {
    /// Starts hammering `dir` with `block_kb` KiB synced writes, up to 160 MiB in all (minutes
    /// of writing at synced speed; the filesystems here are 256 MiB).
    pub fn start(dir: &Path, block_kb: u32, log: &Path) -> anyhow::Result<Self> {
        let target = dir.join("noisy-neighbour.dat");
        let count = 160 * 1024 / block_kb.max(1);
        let mut cmd = Command::new("dd");
        cmd.arg("if=/dev/zero")
            .arg(format!("of={}", target.display()))
            .arg(format!("bs={block_kb}k"))
            .arg(format!("count={count}"))
            .arg("oflag=dsync");
        Ok(Self {
            child: ChildGuard::spawn("noisy-neighbour", cmd, log)?,
        })
    }

    /// Pid of the `dd` process.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

impl Drop for SyncWriter {
    fn drop(&mut self) {
        self.child.kill();
    }
}

/// Block I/O throttling of one process by its cgroup, the way container platforms cap I/O: a
/// new cgroup v1 `blkio` cgroup with `blkio.throttle.write_iops_device` on one device, the
/// process moved into it. The device itself stays fast; only that cgroup's writes wait.
pub struct IoThrottle {
    dir: PathBuf,
    pid: u32,
}

impl IoThrottle {
    /// Limits writes of `pid` (all its threads) to `device` (kernel name, `loop3`) to
    /// `write_iops` per second.
    pub fn apply(pid: u32, device: &str, write_iops: u64) -> anyhow::Result<Self> {
        let root = Path::new("/sys/fs/cgroup/blkio");
        anyhow::ensure!(
            root.join("blkio.throttle.write_iops_device").exists(),
            "{} has no blkio throttling (cgroup v1 blkio is needed)",
            root.display()
        );
        let numbers = std::fs::read_to_string(format!("/sys/block/{device}/dev"))
            .with_context(|| format!("reading the numbers of {device}"))?;
        let dir = root.join(format!("etcdmon-io-{}-{pid}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let throttle = Self { dir, pid };
        std::fs::write(
            throttle.dir.join("blkio.throttle.write_iops_device"),
            format!("{} {write_iops}", numbers.trim()),
        )
        .context("writing blkio.throttle.write_iops_device")?;
        std::fs::write(throttle.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", throttle.dir.display()))?;
        Ok(throttle)
    }

    /// The cgroup's path relative to the blkio hierarchy (`/etcdmon-io-…`).
    pub fn cgroup(&self) -> String {
        format!(
            "/{}",
            self.dir
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    }
}

impl Drop for IoThrottle {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/fs/cgroup/blkio/cgroup.procs", self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}
