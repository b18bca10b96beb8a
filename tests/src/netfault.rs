//! Real network faults for end-to-end tests: one etcd member in its own network namespace,
//! joined to the host by a veth pair, with packet loss (nftables, `numgen random`) and rate
//! limits (`tc` tbf) on that link — the kernel's own tools; `netem` is not needed.
//!
//! Layout of one [`NetNs`] (index `i`, a /30 in 10.213.0.0/16):
//! ```text
//!  host netns                               etcdmon-nf-<i>
//!  enfh<i> 10.213.x.y+1/30  <== veth ==>  enfn<i> 10.213.x.y+2/30 (default route via +1)
//! ```
//! The member inside listens on the namespace address (`+2`); the members outside put their
//! peer URLs on the host end's address (`+1`), a local address of the host, so their traffic
//! among themselves still goes over `lo` and only traffic to and from the inside member
//! crosses the veth pair.
//!
//! Indices are claimed with an exclusive owner file in `/run/etcdmon-netfault/` (holding the
//! claiming process's pid), so tests in several processes can run at once. Everything is
//! removed on drop, also when the test panics; namespaces, veth pairs and owner files left by
//! a run that was killed (its pid is gone) are removed when the next one starts.
//! Needs root, `ip` (iproute2), `nft` (nftables) and `tc`.

use std::{
    fs::OpenOptions,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context;

/// Where one member listens and runs in an [`crate::EtcdCluster`] (`ClusterOptions::placement`).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Host of its client URLs instead of 127.0.0.1.
    pub client_host: Option<String>,
    /// Host of its peer URLs instead of 127.0.0.1.
    pub peer_host: Option<String>,
    /// A network namespace file (`/run/netns/NAME`) the process enters before it runs etcd.
    pub netns: Option<PathBuf>,
}

/// Where owner files live.
const STATE_DIR: &str = "/run/etcdmon-netfault";
/// Namespace names are this plus the index.
const NS_PREFIX: &str = "etcdmon-nf-";
/// How many /30 subnets fit in 10.213.0.0/16.
const SLOTS: u32 = 16_384;
/// The nftables table holding the loss rules (inside the namespace).
const TABLE: &str = "etcdmon_fault";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup`)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `nft -f -` inside namespace `ns` with `script` on stdin.
fn nft_script(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed? `cargo xtask setup`)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Whether the tools this module runs are on `PATH` (for [`crate::require`]).
pub fn tools_present() -> Result<(), String> {
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")] {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(tool).is_file());
        if !found {
            return Err(format!(
                "`{tool}` is missing (Debian package {package}; `cargo xtask setup` installs it)"
            ));
        }
    }
    Ok(())
}

/// Makes `cmd`'s child enter the network namespace file `ns` (e.g. `/run/netns/NAME`) before it
/// executes. The returned file must stay open until the command is spawned.
pub fn enter_on_exec(cmd: &mut Command, ns: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::{fd::AsRawFd, unix::process::CommandExt};
    let file = std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: the closure only calls setns, which is async-signal-safe, on a descriptor the
    // parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(file)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what killed runs left: namespaces (and their veth pairs) whose owner process is
/// gone, and namespaces with this module's prefix that have no owner file at all.
pub fn sweep_leftovers() {
    let mut owned = Vec::new();
    if let Ok(entries) = std::fs::read_dir(STATE_DIR) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(index) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let owner = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match owner {
                Some(pid) if alive(pid) => owned.push(index),
                // Claimed a moment ago, pid not written yet: leave it.
                None if std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() < 10) =>
                {
                    owned.push(index)
                }
                _ => {
                    remove_links(index);
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(index) = name
                .strip_prefix(NS_PREFIX)
                .and_then(|s| s.parse::<u32>().ok())
                && !owned.contains(&index)
            {
                remove_links(index);
            }
        }
    }
}

fn remove_links(index: u32) {
    let _ = Command::new("ip")
        .args(["netns", "del", &format!("{NS_PREFIX}{index}")])
        .output();
    let _ = Command::new("ip")
        .args(["link", "del", &format!("enfh{index}")])
        .output();
}

/// One network namespace joined to the host by a veth pair, removed on drop.
#[derive(Debug)]
pub struct NetNs {
    index: u32,
    name: String,
    host_if: String,
    ns_if: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
    claim: PathBuf,
}

impl NetNs {
    /// Claims a free index, creates the namespace and the veth pair, addresses both ends and
    /// routes the namespace through the host end. Leftovers of killed runs are removed first.
    pub fn create() -> anyhow::Result<Self> {
        if let Err(missing) = tools_present() {
            anyhow::bail!("{missing}");
        }
        sweep_leftovers();
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
        let start =
            (std::process::id().wrapping_mul(97) + NEXT.fetch_add(1, Ordering::Relaxed)) % SLOTS;
        for k in 0..SLOTS {
            let index = (start + k) % SLOTS;
            if let Some(ns) = Self::claim(index)? {
                ns.build()?;
                return Ok(ns);
            }
        }
        anyhow::bail!("no free network-namespace slot in 10.213.0.0/16")
    }

    /// Takes `index` when its owner file can be created and its namespace name is free.
    fn claim(index: u32) -> anyhow::Result<Option<Self>> {
        let claim = Path::new(STATE_DIR).join(format!("{index}.owner"));
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&claim) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("creating {}", claim.display())),
        };
        writeln!(file, "{}", std::process::id())?;
        let (name, host_if) = (format!("{NS_PREFIX}{index}"), format!("enfh{index}"));
        if Path::new("/run/netns").join(&name).exists()
            || Path::new("/sys/class/net").join(&host_if).exists()
        {
            // In use without an owner file we could read: not ours to remove here.
            let _ = std::fs::remove_file(&claim);
            return Ok(None);
        }
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + index * 4;
        Ok(Some(Self {
            index,
            name,
            host_if,
            ns_if: format!("enfn{index}"),
            host_addr: Ipv4Addr::from(base + 1),
            ns_addr: Ipv4Addr::from(base + 2),
            claim,
        }))
    }

    fn build(&self) -> anyhow::Result<()> {
        let (ns, host_if, ns_if) = (self.name.as_str(), &self.host_if, &self.ns_if);
        let host_cidr = format!("{}/30", self.host_addr);
        let ns_cidr = format!("{}/30", self.ns_addr);
        let host_addr = self.host_addr.to_string();
        run("ip", &["netns", "add", ns])?;
        run(
            "ip",
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns,
            ],
        )?;
        run("ip", &["addr", "add", &host_cidr, "dev", host_if])?;
        run("ip", &["link", "set", host_if, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &ns_cidr, "dev", ns_if])?;
        run("ip", &["-n", ns, "link", "set", ns_if, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", ns, "route", "add", "default", "via", &host_addr],
        )?;
        Ok(())
    }

    /// The namespace's name (`ip netns exec NAME …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file a process enters (`/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// The host end's address (a local address of the host).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The namespace end's address.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// The veth interface on the host side.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// Placement of a member inside: client and peer URLs on the namespace address.
    pub fn inside(&self) -> Placement {
        Placement {
            client_host: Some(self.ns_addr.to_string()),
            peer_host: Some(self.ns_addr.to_string()),
            netns: Some(self.path()),
        }
    }

    /// Placement of a member outside that the inside one must reach: clients on 127.0.0.1,
    /// peer URLs on the host end's address.
    pub fn outside(&self) -> Placement {
        Placement {
            client_host: None,
            peer_host: Some(self.host_addr.to_string()),
            netns: None,
        }
    }

    /// Drops `percent` % of the TCP packets to or from any of `ports` crossing the link, in
    /// each direction (inside the namespace, on output and input). Empty `ports`: every
    /// packet. Replaces an earlier loss rule.
    pub fn set_loss(&self, percent: u32, ports: &[u16]) -> anyhow::Result<()> {
        anyhow::ensure!(percent <= 100, "loss percent {percent} is above 100");
        let set = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let drop = if percent == 100 {
            "counter drop".to_string()
        } else {
            format!("numgen random mod 100 < {percent} counter drop")
        };
        let rules = if ports.is_empty() {
            format!("meta nfproto ipv4 {drop};")
        } else {
            format!("tcp dport {{ {set} }} {drop}; tcp sport {{ {set} }} {drop};")
        };
        let script = format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\
             chain out {{ type filter hook output priority 0; policy accept; {rules} }}\n\
             chain in {{ type filter hook input priority 0; policy accept; {rules} }}\n}}\n"
        );
        nft_script(&self.name, &script)
    }

    /// Packets the loss rules dropped so far (0 without loss rules).
    pub fn dropped_packets(&self) -> u64 {
        let Ok(text) = run(
            "ip",
            &[
                "netns", "exec", &self.name, "nft", "list", "table", "inet", TABLE,
            ],
        ) else {
            return 0;
        };
        text.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// Limits each direction of the link to `kbit` kbit/s with a token bucket (`tc` tbf on
    /// both veth ends; packets that would wait longer than `latency_ms` are dropped).
    pub fn set_rate(&self, kbit: u32, latency_ms: u32) -> anyhow::Result<()> {
        let rate = format!("{kbit}kbit");
        let latency = format!("{latency_ms}ms");
        let tbf = ["tbf", "rate", &rate, "burst", "4kb", "latency", &latency];
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if, "root"];
        host.extend(tbf);
        run("tc", &host)?;
        let mut inside = vec![
            "-n",
            &self.name,
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
        ];
        inside.extend(tbf);
        run("tc", &inside)?;
        Ok(())
    }

    /// Removes every loss rule and rate limit.
    pub fn clear(&self) -> anyhow::Result<()> {
        let script = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
        nft_script(&self.name, &script)?;
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", &self.host_if, "root"])
            .output();
        let _ = Command::new("tc")
            .args(["-n", &self.name, "qdisc", "del", "dev", &self.ns_if, "root"])
            .output();
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        remove_links(self.index);
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// Serialises this file's two tests: one plants a dead run's namespace on purpose, and the
/// other's `NetNs::create` sweeps such leftovers — run side by side, the sweep removed the
/// planted namespace while `ip netns add` was still creating it.
#[cfg(test)]
static NETNS_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_reachable_and_loss_drops_packets_and_nothing_is_left() -> anyhow::Result<()> {
        let _serial = NETNS_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let test = "netfault::namespace_is_reachable_and_loss_drops_packets_and_nothing_is_left";
        if !crate::require_root(test, "network namespaces")? {
            return Ok(());
        }
        let reason = tools_present().err().unwrap_or_default();
        if !crate::require(test, reason.is_empty(), &reason)? {
            return Ok(());
        }
        let ns = NetNs::create()?;
        let (name, host_if) = (ns.name().to_string(), ns.host_if().to_string());
        // host -> namespace: a listener inside, a connection from the host.
        let listener = std::net::TcpListener::bind((ns.host_addr(), 0))?;
        let port = listener.local_addr()?.port();
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            &format!("exec 3<>/dev/tcp/{}/{port} && echo hi >&3", ns.host_addr()),
        ]);
        let _file = enter_on_exec(&mut cmd, &ns.path())?;
        let status = cmd.status()?;
        assert!(status.success(), "bash inside could not reach the host end");
        let (_, peer) = listener.accept()?;
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(ns.ns_addr()),
            "came over the veth"
        );
        // 100 % loss on that port: the next connection attempt fails and packets are counted.
        ns.set_loss(100, &[port])?;
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            &format!(
                "timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{port}'",
                ns.host_addr()
            ),
        ]);
        let _file = enter_on_exec(&mut cmd, &ns.path())?;
        assert!(!cmd.status()?.success(), "connected through 100 % loss");
        assert!(ns.dropped_packets() >= 1, "no packet counted as dropped");
        ns.clear()?;
        assert_eq!(ns.dropped_packets(), 0, "the loss table is gone");
        ns.set_rate(512, 200)?;
        let qdisc = run("tc", &["qdisc", "show", "dev", &host_if])?;
        assert!(qdisc.contains("tbf"), "{qdisc}");
        drop(ns);
        assert!(!Path::new("/run/netns").join(&name).exists(), "{name} left");
        assert!(
            !Path::new("/sys/class/net").join(&host_if).exists(),
            "{host_if} left"
        );
        Ok(())
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn leftovers_of_a_killed_run_are_removed() -> anyhow::Result<()> {
        let _serial = NETNS_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let test = "netfault::leftovers_of_a_killed_run_are_removed";
        if !crate::require_root(test, "network namespaces")? {
            return Ok(());
        }
        let reason = tools_present().err().unwrap_or_default();
        if !crate::require(test, reason.is_empty(), &reason)? {
            return Ok(());
        }
        // A namespace and veth pair whose owner file names a pid that no longer exists.
        let mut child = Command::new("true").spawn()?;
        let dead = child.id();
        child.wait()?;
        let index = SLOTS - 1;
        let name = format!("{NS_PREFIX}{index}");
        std::fs::create_dir_all(STATE_DIR)?;
        let claim = Path::new(STATE_DIR).join(format!("{index}.owner"));
        if claim.exists() {
            // Slot in use by a live run on this machine: nothing to prove here.
            return Ok(());
        }
        std::fs::write(&claim, format!("{dead}\n"))?;
        run("ip", &["netns", "add", &name])?;
        let host_if = format!("enfh{index}");
        let ns_if = format!("enfn{index}");
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name,
            ],
        )?;
        sweep_leftovers();
        assert!(!Path::new("/run/netns").join(&name).exists(), "{name} left");
        assert!(
            !Path::new("/sys/class/net").join(&host_if).exists(),
            "{host_if} left"
        );
        assert!(!claim.exists(), "owner file left");
        Ok(())
    }
}
