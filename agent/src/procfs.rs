//! Small readers over `/proc` (or a host mount of it), each returning `None`/empty on any error:
//! processes come and go while we read, and some files need privileges we may not have.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// A view of the proc filesystem rooted at `root` (normally `/proc`).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

/// One TCP socket of a process, from `/proc/PID/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The port on this host's side of the socket.
    pub local_port: u16,
    /// Remote port (0 for a listener).
    pub remote_port: u16,
    /// Kernel TCP state (1 = ESTABLISHED, 10 = LISTEN, ...).
    pub state: u8,
}

impl ProcFs {
    /// A view rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root itself (`/proc`): node-wide files such as `pressure/` live there.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<pid>/<rest>`.
    pub fn path(&self, pid: u32, rest: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rest)
    }

    /// Every numeric entry of the root: the running processes.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// argv, split on NULs.
    pub fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
        let raw = std::fs::read(self.path(pid, "cmdline")).ok()?;
        if raw.is_empty() {
            return None; // kernel thread or zombie
        }
        Some(
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )
    }

    /// The environment as (key, value) pairs; empty when unreadable (needs ptrace access).
    pub fn environ(&self, pid: u32) -> Vec<(String, String)> {
        let Ok(raw) = std::fs::read(self.path(pid, "environ")) else {
            return Vec::new();
        };
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The task's `comm`.
    pub fn comm(&self, pid: u32) -> Option<String> {
        std::fs::read_to_string(self.path(pid, "comm"))
            .ok()
            .map(|s| s.trim_end().to_string())
    }

    /// Base name of `/proc/PID/exe`'s target, when readable.
    pub fn exe_name(&self, pid: u32) -> Option<String> {
        let target = std::fs::read_link(self.path(pid, "exe")).ok()?;
        let name = target.file_name()?.to_str()?;
        Some(name.trim_end_matches(" (deleted)").to_string())
    }

    /// The working directory, when readable.
    pub fn cwd(&self, pid: u32) -> Option<PathBuf> {
        std::fs::read_link(self.path(pid, "cwd")).ok()
    }

    /// Reads a file as the process sees it (through `/proc/PID/root`).
    pub fn read_in_root(&self, pid: u32, path: &Path) -> Option<String> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        std::fs::read_to_string(self.path(pid, "root").join(relative)).ok()
    }

    /// Field 22 of `/proc/PID/stat`: start time in clock ticks since boot; tells a reused pid
    /// from the process we knew.
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        Some(self.stat(pid)?.start_time)
    }

    /// `/proc/PID/stat`, parsed (read as bytes: `comm` need not be UTF-8).
    pub fn stat(&self, pid: u32) -> Option<Stat> {
        parse_stat(&std::fs::read(self.path(pid, "stat")).ok()?)
    }

    /// The open fds and their link targets; empty when unreadable.
    pub fn fds(&self, pid: u32) -> Vec<(i32, String)> {
        let Ok(entries) = std::fs::read_dir(self.path(pid, "fd")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// The link target of one fd.
    pub fn fd_target(&self, pid: u32, fd: i32) -> Option<String> {
        std::fs::read_link(self.path(pid, &format!("fd/{fd}")))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// TCP sockets in the process's network namespace, by inode.
    pub fn tcp_sockets(&self, pid: u32) -> HashMap<u64, TcpSocket> {
        let mut sockets = HashMap::new();
        for file in ["net/tcp", "net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(self.path(pid, file)) {
                sockets.extend(parse_tcp_table(&text));
            }
        }
        sockets
    }
}

/// The fields of `/proc/PID/stat` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: u32,
    /// Field 2 without its parentheses: up to 15 arbitrary bytes, spaces and `)` included.
    pub comm: Vec<u8>,
    /// Field 3 (`R`, `S`, `D`, `Z`, …).
    pub state: u8,
    /// Field 9: `PF_*` flags (`PF_KTHREAD` marks a kernel thread).
    pub flags: u64,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses one `/proc/PID/stat` line. `comm` may hold spaces, parentheses and any byte, so it
/// runs from the first `(` to the *last* `)`: nothing after it can contain one. `None` when
/// the line is malformed; never panics.
pub fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(raw.get(..open)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = raw.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = match fields.first()?.as_bytes() {
        [s] => *s,
        _ => return None,
    };
    Some(Stat {
        pid,
        comm,
        state,
        flags: fields.get(6)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Parses the text of `/proc/net/tcp` or `tcp6` into inode → socket.
pub fn parse_tcp_table(text: &str) -> Vec<(u64, TcpSocket)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok();
            let local_port = port(fields.get(1)?)?;
            let remote_port = port(fields.get(2)?)?;
            let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            Some((
                inode,
                TcpSocket {
                    local_port,
                    remote_port,
                    state,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_tables() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:094B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:C350 0100007F:094C 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        let sockets = parse_tcp_table(text);
        assert_eq!(sockets.len(), 2);
        assert_eq!(
            sockets[0],
            (
                31337,
                TcpSocket {
                    local_port: 2379,
                    remote_port: 0,
                    state: 0x0A
                }
            )
        );
        assert_eq!(
            sockets[1],
            (
                4242,
                TcpSocket {
                    local_port: 50000,
                    remote_port: 2380,
                    state: 1
                }
            )
        );
    }

    fn stat_line(pid: u32, comm: &[u8], state: u8, flags: u64, start: u64) -> Vec<u8> {
        let mut line = format!("{pid} (").into_bytes();
        line.extend_from_slice(comm);
        line.extend_from_slice(b") ");
        line.push(state);
        line.extend_from_slice(
            format!(
                " 1 {pid} {pid} 0 -1 {flags} 120 0 0 0 7 3 0 0 20 0 1 0 {start} 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
            )
            .as_bytes(),
        );
        line
    }

    #[test]
    fn stat_comm_may_hold_spaces_parentheses_and_end_in_a_parenthesis() {
        for comm in [
            &b"etcd"[..],
            b"a b) c (d",
            b"x)",
            b")",
            b"))) ) (",
            b"",
            b"\xff\xfe ) 9 9",
        ] {
            let line = stat_line(42, comm, b'S', 0x0020_0040, 123_456);
            assert_eq!(
                parse_stat(&line),
                Some(Stat {
                    pid: 42,
                    comm: comm.to_vec(),
                    state: b'S',
                    flags: 0x0020_0040,
                    start_time: 123_456,
                }),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
        for bad in [
            &b""[..],
            b"1 (x",
            b"1 x) S",
            b"1 (x)",
            b"1 (x) S 1",
            b") 1 (",
            b"1 (x)\xff",
        ] {
            assert_eq!(parse_stat(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        #[test]
        fn stat_parsing_never_panics(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_stat(&raw);
        }

        #[test]
        fn stat_parsing_finds_every_field_for_any_comm(
            pid in 1u32..=4_194_304,
            comm in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::num::u8::ANY,
                    proptest::strategy::Just(b')'),
                    proptest::strategy::Just(b'('),
                    proptest::strategy::Just(b' '),
                ],
                0..=32,
            ),
            state in proptest::sample::select(b"RSDZTtXIWPK".to_vec()),
            flags: u64,
            start: u64,
        ) {
            let line = stat_line(pid, &comm, state, flags, start);
            proptest::prop_assert_eq!(
                parse_stat(&line),
                Some(Stat { pid, comm, state, flags, start_time: start })
            );
        }
    }

    #[test]
    fn reads_this_process() {
        let proc = ProcFs::new("/proc");
        let me = std::process::id();
        assert!(proc.pids().contains(&me));
        assert!(proc.cmdline(me).is_some_and(|argv| !argv.is_empty()));
        assert!(proc.start_time(me).is_some());
        assert_eq!(proc.stat(me).map(|s| s.pid), Some(me));
        assert!(!proc.fds(me).is_empty());
    }
}
