//! Finding etcd processes in `/proc`.

use regex::Regex;

use crate::{
    identity::{self, MemberIdentity},
    procfs::ProcFs,
};

/// Decides which processes are etcd members.
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: Option<Regex>,
    own_pid: u32,
}

impl Matcher {
    /// Matches the executable name `etcd`, or `pattern` against the whole command line.
    /// The agent's own process never matches.
    pub fn new(pattern: Option<Regex>) -> Self {
        Self {
            pattern,
            own_pid: std::process::id(),
        }
    }

    /// Whether `pid` is an etcd process to trace.
    pub fn matches(&self, proc: &ProcFs, pid: u32) -> bool {
        if pid == self.own_pid {
            return false;
        }
        match &self.pattern {
            Some(re) => proc
                .cmdline(pid)
                .is_some_and(|argv| re.is_match(&argv.join(" "))),
            None => {
                proc.comm(pid).as_deref() == Some("etcd")
                    || proc.exe_name(pid).as_deref() == Some("etcd")
            }
        }
    }
}

/// An etcd process found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdProcess {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (with `pid`, identifies the process).
    pub start_time: u64,
    /// Who it is.
    pub identity: MemberIdentity,
}

/// Reads the identity of process `pid`.
pub fn describe(proc: &ProcFs, pid: u32) -> Option<EtcdProcess> {
    let argv = proc.cmdline(pid)?;
    let start_time = proc.start_time(pid)?;
    let env = proc.environ(pid);
    let cwd = proc.cwd(pid).unwrap_or_else(|| "/".into());
    #[allow(unused_mut, reason = "only Linux resolves the canonical dirs")]
    let mut identity = identity::parse(&argv, &env, &cwd, |path| proc.read_in_root(pid, path));
    #[cfg(target_os = "linux")]
    identity::resolve_canonical(&mut identity, &proc.path(pid, ""));
    Some(EtcdProcess {
        pid,
        start_time,
        identity,
    })
}

/// Every etcd process running now.
pub fn scan(proc: &ProcFs, matcher: &Matcher) -> Vec<EtcdProcess> {
    proc.pids()
        .into_iter()
        .filter(|pid| matcher.matches(proc, *pid))
        .filter_map(|pid| describe(proc, pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_command_lines_but_never_ourselves() {
        let proc = ProcFs::new("/proc");
        let marker = format!("etcdmon-discovery-test-{}", std::process::id());
        // `read` is a shell builtin, so the shell never forks a child that would briefly show
        // the same command line.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read _", &marker])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let matcher = Matcher::new(Some(Regex::new(&marker).expect("regex")));
        // Between fork and exec the child still shows our command line: poll briefly.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = scan(&proc, &matcher);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id());
        assert_eq!(found[0].identity.name, "default");

        let everything = Matcher::new(Some(Regex::new(".").expect("regex")));
        assert!(
            !scan(&proc, &everything)
                .iter()
                .any(|p| p.pid == std::process::id())
        );
    }
}
