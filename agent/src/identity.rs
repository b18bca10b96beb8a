//! Which etcd member a process is: its `--name`, data and WAL dirs, client and peer URLs,
//! read from the command line, the `ETCD_*` environment and an optional `--config-file`
//! (with etcd's precedence: config file, then flags, then environment, then defaults).

use std::path::{Path, PathBuf};

/// The identity of one etcd member process, as the collector joins it to `MemberList`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberIdentity {
    /// `--name` (etcd's default is `default`).
    pub name: String,
    /// `--data-dir`, absolute.
    pub data_dir: PathBuf,
    /// `--wal-dir`, absolute, when the WAL lives outside the data dir.
    pub wal_dir: Option<PathBuf>,
    /// `--advertise-client-urls`.
    pub client_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: Vec<String>,
    /// `--listen-client-urls`: where the member accepts clients (may be 0.0.0.0).
    pub listen_client_urls: Vec<String>,
    /// `--listen-peer-urls`: where the member accepts raft peers.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-cluster` as (name, peer URL) pairs.
    pub initial_cluster: Vec<(String, String)>,
    /// The dirs as the kernel names the member's open files (see [`resolve_canonical`]).
    #[serde(skip)]
    pub canonical: CanonicalDirs,
}

/// The settings we read, by etcd flag name (without dashes).
const KEYS: [&str; 8] = [
    "name",
    "data-dir",
    "wal-dir",
    "advertise-client-urls",
    "initial-advertise-peer-urls",
    "listen-client-urls",
    "listen-peer-urls",
    "initial-cluster",
];

/// Raw settings from one source, by index into [`KEYS`].
type Settings = [Option<String>; KEYS.len()];

/// Parses etcd's command line. Accepts Go's flag forms: `--k=v`, `--k v`, `-k=v`, `-k v`.
/// Returns the settings and the `--config-file` path, if any.
fn from_args(args: &[String]) -> (Settings, Option<String>) {
    let mut settings: Settings = Default::default();
    let mut config_file = None;
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let (key, inline) = match flag.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (flag, None),
        };
        let wanted = KEYS.iter().position(|k| *k == key);
        if wanted.is_none() && key != "config-file" {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None if i < args.len() && !args[i].starts_with('-') => {
                i += 1;
                args[i - 1].clone()
            }
            None => continue,
        };
        match wanted {
            Some(index) => settings[index] = Some(value),
            None => config_file = Some(value),
        }
    }
    (settings, config_file)
}

/// Reads `ETCD_NAME`, `ETCD_DATA_DIR`, … from `KEY=VALUE` pairs.
fn from_env(env: &[(String, String)]) -> Settings {
    let mut settings: Settings = Default::default();
    for (index, key) in KEYS.iter().enumerate() {
        let var = format!("ETCD_{}", key.to_ascii_uppercase().replace('-', "_"));
        settings[index] = env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone());
    }
    settings
}

/// Reads the same keys from an etcd YAML config file.
fn from_config_file(text: &str) -> Settings {
    let mut settings: Settings = Default::default();
    let Ok(serde_yaml_ng::Value::Mapping(map)) =
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
    else {
        return settings;
    };
    for (index, key) in KEYS.iter().enumerate() {
        settings[index] = match map.get(*key) {
            Some(serde_yaml_ng::Value::String(s)) => Some(s.clone()),
            Some(serde_yaml_ng::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
    }
    settings
}

fn split_urls(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn absolute(path: &str, cwd: &Path) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

/// Works out a member's identity.
///
/// `args` is the process's argv, `env` its environment, `cwd` its working directory (for a
/// relative `--data-dir`), and `read_file` reads a path as the process sees it (for
/// `--config-file`; it may fail, e.g. without privileges, and the file is then ignored).
pub fn parse(
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    read_file: impl Fn(&Path) -> Option<String>,
) -> MemberIdentity {
    let (flags, config_file) = from_args(args);
    let env_settings = from_env(env);
    let config_file = config_file.or_else(|| {
        env.iter()
            .find(|(k, _)| k == "ETCD_CONFIG_FILE")
            .map(|(_, v)| v.clone())
    });
    let file_settings = config_file
        .and_then(|path| read_file(&absolute(&path, cwd)))
        .map(|text| from_config_file(&text))
        .unwrap_or_default();
    let get = |index: usize| -> Option<String> {
        file_settings[index]
            .clone()
            .or_else(|| flags[index].clone())
            .or_else(|| env_settings[index].clone())
    };
    let name = get(0).unwrap_or_else(|| "default".to_string());
    let data_dir = absolute(&get(1).unwrap_or_else(|| format!("{name}.etcd")), cwd);
    let wal_dir = get(2).filter(|s| !s.is_empty()).map(|w| absolute(&w, cwd));
    let listen_client_urls = match get(5) {
        Some(v) => split_urls(Some(&v)),
        None => vec!["http://localhost:2379".to_string()],
    };
    let listen_peer_urls = match get(6) {
        Some(v) => split_urls(Some(&v)),
        None => vec!["http://localhost:2380".to_string()],
    };
    let client_urls = match get(3) {
        Some(v) => split_urls(Some(&v)),
        None => listen_client_urls.clone(),
    };
    let peer_urls = match get(4) {
        Some(v) => split_urls(Some(&v)),
        None => listen_peer_urls.clone(),
    };
    let initial_cluster = split_urls(get(7).as_ref())
        .into_iter()
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(n, u)| (n.to_string(), u.to_string()))
        })
        .collect();
    MemberIdentity {
        name,
        data_dir,
        wal_dir,
        client_urls,
        peer_urls,
        listen_client_urls,
        listen_peer_urls,
        initial_cluster,
        canonical: CanonicalDirs::default(),
    }
}

/// A member's directories as the kernel names them when the agent reads `/proc/PID/fd/N`: the
/// argv paths resolved inside the member's own root and mount namespace, symlinks followed.
/// Empty until [`resolve_canonical`] ran (and for a path that could not be resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalDirs {
    /// `--data-dir` with every symlink resolved.
    pub data_dir: Option<PathBuf>,
    /// The WAL dir (`--wal-dir`, else `<data dir>/member/wal`).
    pub wal_dir: Option<PathBuf>,
    /// `<data dir>/member/snap`.
    pub snap_dir: Option<PathBuf>,
}

/// Fills `identity.canonical` from the process's view: each dir is opened through
/// `process_dir/root` (`/proc/PID/root`) with `openat2(RESOLVE_IN_ROOT)`, so absolute symlinks
/// resolve in the member's root and bind mounts of its mount namespace are crossed, and the
/// kernel's name for the result is read back from the agent's own fd. A dir that does not exist
/// yet (etcd creates `member/wal` after start) is resolved through its deepest existing
/// ancestor. Relative argv paths were made absolute with the process's cwd by [`parse`].
#[cfg(target_os = "linux")]
pub fn resolve_canonical(identity: &mut MemberIdentity, process_dir: &Path) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let Ok(root) = std::ffi::CString::new(process_dir.join("root").as_os_str().as_encoded_bytes())
    else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let root = unsafe { OwnedFd::from_raw_fd(fd) };
    let member = identity.data_dir.join("member");
    let wal = identity
        .wal_dir
        .clone()
        .unwrap_or_else(|| member.join("wal"));
    identity.canonical = CanonicalDirs {
        data_dir: resolve_in_root(root.as_raw_fd(), &identity.data_dir),
        wal_dir: resolve_in_root(root.as_raw_fd(), &wal),
        snap_dir: resolve_in_root(root.as_raw_fd(), &member.join("snap")),
    };
}

/// Opens `path` (absolute, in the root `root` stands for) with `openat2(RESOLVE_IN_ROOT)`:
/// absolute symlinks and `..` resolve inside that root, never outside it, and magic links
/// (`/proc/PID/fd/N`) are refused. The fd is `O_PATH`: good for `fstatvfs` and for reading its
/// name back, not for I/O.
#[cfg(target_os = "linux")]
pub(crate) fn open_in_root(
    root: std::os::fd::RawFd,
    path: &Path,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};

    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;

    let relative = path.strip_prefix("/").unwrap_or(path);
    let target = if relative.as_os_str().is_empty() {
        std::ffi::CString::new(".")
    } else {
        std::ffi::CString::new(relative.as_os_str().as_encoded_bytes())
    }
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid pointers to a NUL-terminated path and an `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            target.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `path` (absolute, in the root `root` stands for) as the kernel names it from here; a path
/// that does not exist yet resolves through its deepest existing ancestor.
#[cfg(target_os = "linux")]
fn resolve_in_root(root: std::os::fd::RawFd, path: &Path) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;

    let mut missing = Vec::new();
    let mut existing = path.to_path_buf();
    loop {
        match open_in_root(root, &existing) {
            Ok(fd) => {
                let mut resolved =
                    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
                for name in missing.iter().rev() {
                    resolved.push(name);
                }
                return Some(resolved);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(_) => return None,
        }
        let name = existing.file_name()?.to_os_string();
        missing.push(name);
        if !existing.pop() {
            return None;
        }
    }
}

/// The TCP port of a URL like `http://127.0.0.1:2379`, if it has one.
pub fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn no_file(_: &Path) -> Option<String> {
        None
    }

    #[test]
    fn reads_every_flag_form() {
        let id = parse(
            &args(
                "etcd --name=m1 -data-dir /var/lib/etcd --listen-client-urls http://127.0.0.1:2379,http://10.0.0.1:2379 -initial-advertise-peer-urls=http://10.0.0.1:2380 --initial-cluster m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380 --wal-dir=wal",
            ),
            &[],
            Path::new("/work"),
            no_file,
        );
        assert_eq!(id.name, "m1");
        assert_eq!(id.data_dir, PathBuf::from("/var/lib/etcd"));
        assert_eq!(id.wal_dir, Some(PathBuf::from("/work/wal")));
        assert_eq!(id.listen_client_urls.len(), 2);
        assert_eq!(
            id.client_urls, id.listen_client_urls,
            "advertise defaults to listen"
        );
        assert_eq!(id.peer_urls, vec!["http://10.0.0.1:2380"]);
        assert_eq!(id.listen_peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(
            id.initial_cluster[1],
            ("m2".to_string(), "http://10.0.0.2:2380".to_string())
        );
    }

    #[test]
    fn defaults_match_etcd() {
        let id = parse(&args("/usr/bin/etcd"), &[], Path::new("/srv"), no_file);
        assert_eq!(id.name, "default");
        assert_eq!(id.data_dir, PathBuf::from("/srv/default.etcd"));
        assert_eq!(id.client_urls, vec!["http://localhost:2379"]);
        assert!(id.initial_cluster.is_empty());
    }

    #[test]
    fn flags_beat_environment_and_config_file_beats_flags() {
        let env = vec![
            ("ETCD_NAME".to_string(), "from-env".to_string()),
            ("ETCD_DATA_DIR".to_string(), "/env/dir".to_string()),
        ];
        let id = parse(
            &args("etcd --name from-flag"),
            &env,
            Path::new("/"),
            no_file,
        );
        assert_eq!(id.name, "from-flag");
        assert_eq!(id.data_dir, PathBuf::from("/env/dir"));

        let id = parse(
            &args("etcd --name from-flag --config-file /etc/etcd.yaml"),
            &env,
            Path::new("/"),
            |path| {
                (path == Path::new("/etc/etcd.yaml")).then(|| {
                    "name: from-file\nlisten-client-urls: http://1.2.3.4:4000\n".to_string()
                })
            },
        );
        assert_eq!(id.name, "from-file");
        assert_eq!(id.listen_client_urls, vec!["http://1.2.3.4:4000"]);
        assert_eq!(id.data_dir, PathBuf::from("/env/dir"));
    }

    #[test]
    fn ports_come_from_urls() {
        assert_eq!(url_port("http://127.0.0.1:2379"), Some(2379));
        assert_eq!(url_port("https://[::1]:22380/"), Some(22380));
        assert_eq!(url_port("http://localhost"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn canonical_dirs_follow_symlinks_and_missing_tails() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("member/snap")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        let mut id = parse(
            &["etcd".to_string(), format!("--data-dir={}", link.display())],
            &[],
            Path::new("/"),
            |_| None,
        );
        resolve_canonical(&mut id, Path::new("/proc/self"));
        assert_eq!(id.canonical.data_dir, Some(real.clone()));
        assert_eq!(id.canonical.snap_dir, Some(real.join("member/snap")));
        // member/wal does not exist yet: resolved through its deepest existing ancestor.
        assert_eq!(id.canonical.wal_dir, Some(real.join("member/wal")));
    }
}
