//! `EtcdCluster`: N real etcd members on free loopback ports, killed on drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;

use crate::{free_port, netfault::Placement, process::ChildGuard, wait_for};

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of members.
    pub members: usize,
    /// `--quota-backend-bytes`, when set.
    pub quota_backend_bytes: Option<u64>,
    /// Per-member data dir override (index → path), e.g. on a slow device.
    pub data_dirs: Vec<Option<PathBuf>>,
    /// Extra flags for every member.
    pub extra_args: Vec<String>,
    /// Name prefix of the members (`<prefix>0`, `<prefix>1`, …).
    pub name_prefix: String,
    /// Serve clients over TLS (https client URLs, `--client-cert-auth`) with these files.
    pub tls: Option<ClientTls>,
    /// Per-member (index → placement) addresses and network namespace; a missing entry is
    /// 127.0.0.1 in the test's own namespace.
    pub placement: Vec<Placement>,
}

/// PEM files of a TLS-serving cluster: the CA, the server certificate every member uses, and a
/// client certificate signed by the same CA (for `etcdctl` and readiness checks).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA bundle.
    pub ca_file: PathBuf,
    /// Server certificate (valid for 127.0.0.1 and localhost).
    pub server_cert_file: PathBuf,
    /// Server key.
    pub server_key_file: PathBuf,
    /// Client certificate.
    pub client_cert_file: PathBuf,
    /// Client key.
    pub client_key_file: PathBuf,
}

impl ClientTls {
    /// `etcdctl` flags that present the client certificate and trust the CA.
    pub fn etcdctl_args(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca_file.display()),
            format!("--cert={}", self.client_cert_file.display()),
            format!("--key={}", self.client_key_file.display()),
        ]
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            members: 3,
            quota_backend_bytes: None,
            data_dirs: Vec::new(),
            extra_args: Vec::new(),
            name_prefix: "member".to_string(),
            tls: None,
            placement: Vec::new(),
        }
    }
}

/// One etcd member of an [`EtcdCluster`].
#[derive(Debug)]
pub struct Member {
    /// `--name`.
    pub name: String,
    /// `http://127.0.0.1:PORT` clients use.
    pub client_url: String,
    /// `http://127.0.0.1:PORT` peers use.
    pub peer_url: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Log file of the process.
    pub log: PathBuf,
    process: Option<ChildGuard>,
    args: Vec<String>,
    netns: Option<PathBuf>,
}

impl Member {
    /// The process id, 0 when stopped.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(ChildGuard::pid).unwrap_or(0)
    }

    /// `host:port` of the client URL.
    pub fn client_addr(&self) -> &str {
        self.client_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }

    /// Sends a signal to the member's process.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        self.process
            .as_ref()
            .context("member is not running")?
            .signal(signal)
    }

    /// Kills the process (SIGKILL); the data dir stays.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the process again with the same flags and data dir (joins as existing member).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut args = self.args.clone();
        for a in args.iter_mut() {
            if a == "--initial-cluster-state=new" {
                *a = "--initial-cluster-state=existing".to_string();
            }
        }
        self.process = Some(spawn_etcd(
            &self.name,
            &args,
            &self.log,
            self.netns.as_deref(),
        )?);
        Ok(())
    }

    /// Whether `/health` answers `"health":"true"`.
    pub fn healthy(&self) -> bool {
        crate::http::get(&format!("{}/health", self.client_url))
            .map(|r| r.status == 200 && r.body.contains("true"))
            .unwrap_or(false)
    }

    /// The member's own `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(crate::http::get(&format!("{}/metrics", self.client_url))?.body)
    }
}

/// A running etcd cluster; every member is killed and its data removed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in start order.
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
    /// TLS files, when clients are served over TLS.
    pub tls: Option<ClientTls>,
}

impl EtcdCluster {
    /// Starts a 3-member cluster and waits until every member is healthy.
    pub fn start3() -> anyhow::Result<Self> {
        Self::start(ClusterOptions::default())
    }

    /// Starts a cluster as described and waits until every member is healthy.
    pub fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("etcdmon-cluster-")
            .tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..options.members {
            ports.push((free_port()?, free_port()?));
        }
        let names: Vec<String> = (0..options.members)
            .map(|i| format!("{}{i}", options.name_prefix))
            .collect();
        let place = |i: usize| options.placement.get(i).cloned().unwrap_or_default();
        let host = |h: Option<String>| h.unwrap_or_else(|| "127.0.0.1".to_string());
        let initial_cluster = names
            .iter()
            .zip(&ports)
            .enumerate()
            .map(|(i, (name, (_, peer)))| {
                format!("{name}=http://{}:{peer}", host(place(i).peer_host))
            })
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("etcdmon-{}", std::process::id());
        let mut members = Vec::new();
        for (i, (name, (client, peer))) in names.iter().zip(&ports).enumerate() {
            let data_dir = options
                .data_dirs
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| dir.path().join(format!("{name}.etcd")));
            let client_scheme = if options.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let placement = place(i);
            let client_url = format!("{client_scheme}://{}:{client}", host(placement.client_host));
            let peer_url = format!("http://{}:{peer}", host(placement.peer_host));
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".to_string(),
                "--logger=zap".to_string(),
            ];
            if let Some(tls) = &options.tls {
                args.push(format!("--cert-file={}", tls.server_cert_file.display()));
                args.push(format!("--key-file={}", tls.server_key_file.display()));
                args.push(format!("--trusted-ca-file={}", tls.ca_file.display()));
                args.push("--client-cert-auth".to_string());
            }
            if let Some(q) = options.quota_backend_bytes {
                args.push(format!("--quota-backend-bytes={q}"));
            }
            args.extend(options.extra_args.iter().cloned());
            let log = dir.path().join(format!("{name}.log"));
            let process = spawn_etcd(name, &args, &log, placement.netns.as_deref())?;
            members.push(Member {
                name: name.clone(),
                client_url,
                peer_url,
                data_dir,
                log,
                process: Some(process),
                args,
                netns: placement.netns,
            });
        }
        let cluster = Self {
            members,
            dir,
            tls: options.tls.clone(),
        };
        for m in &cluster.members {
            wait_for(
                &format!("etcd member {} healthy", m.name),
                Duration::from_secs(30),
                || match &cluster.tls {
                    None => m.healthy().then_some(()),
                    Some(tls) => etcdctl_health(&m.client_url, tls).then_some(()),
                },
            )
            .with_context(|| cluster.logs_tail())?;
        }
        Ok(cluster)
    }

    /// Comma-separated client URLs of every member.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The scratch directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `etcdctl` against the cluster and returns stdout.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .args(self.tls.iter().flat_map(ClientTls::etcdctl_args))
            .args(args)
            .output()
            .context("run etcdctl")?;
        anyhow::ensure!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Puts `count` keys `<prefix><i>` with `value_size`-byte values through every member's
    /// JSON gateway (see [`crate::load::put_many`]).
    pub fn put_many(&self, prefix: &str, count: usize, value_size: usize) -> anyhow::Result<()> {
        crate::load::put_many(&self.endpoints(), prefix, count, value_size)
    }

    /// Index of the member that is leader now, if any, from `etcdctl endpoint status`.
    pub fn leader_index(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.pid() == 0 {
                continue;
            }
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", m.client_url))
                .args(self.tls.iter().flat_map(ClientTls::etcdctl_args))
                .args(["endpoint", "status", "-w", "json"])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let status = &v.get(0)?["Status"];
            if status["leader"] == status["header"]["member_id"] {
                return Some(i);
            }
        }
        None
    }

    /// The last lines of every member's log, for error messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            out.push_str(&format!("--- {} ---\n", m.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Whether `etcdctl endpoint health` succeeds against `url` over TLS.
fn etcdctl_health(url: &str, tls: &ClientTls) -> bool {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(tls.etcdctl_args())
        .args(["--command-timeout=2s", "endpoint", "health"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn spawn_etcd(
    name: &str,
    args: &[String],
    log: &Path,
    netns: Option<&Path>,
) -> anyhow::Result<ChildGuard> {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
    let mut cmd = Command::new(bin);
    cmd.args(args);
    // Held open until the child has entered it (after spawn).
    let _netns = netns
        .map(|ns| crate::netfault::enter_on_exec(&mut cmd, ns))
        .transpose()?;
    ChildGuard::spawn(&format!("etcd {name}"), cmd, log)
}
