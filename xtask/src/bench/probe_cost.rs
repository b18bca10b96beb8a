//! What each eBPF program costs in the kernel, from the kernel's own BPF statistics
//! (`kernel.bpf_stats_enabled=1`: `run_time_ns` and `run_cnt` per program).
//!
//! Three sets of programs are attached at once, so they see exactly the same events:
//! - the agent (every probe group),
//! - the floor: bpftrace with an empty action on every tracepoint the agent uses (a real BPF
//!   program that returns at once; what the kernel's tracepoint → BPF path costs by itself),
//! - bpftrace doing the agent's work on the same tracepoints (the agent-overhead benchmark's
//!   disk-path script, the receive family, and a run-queue latency script filtered on etcd).
//!
//! Two windows: etcd under put load (traced processes), then the node busy with an untraced
//! process only (two threads of this process ping-ponging over pipes: write, read, wakeup and a
//! context switch per hop) — the common case on a busy node, where every probe should cost
//! about as much as the floor.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Write},
    os::fd::FromRawFd,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_monitor_tests::{process::ChildGuard, wait_for};

use super::traced_cluster::{TracedCluster, build_agent};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Restores `kernel.bpf_stats_enabled` to what it was.
struct StatsGuard {
    old: String,
}

impl StatsGuard {
    fn enable() -> anyhow::Result<Self> {
        let old = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("read {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(STATS_SYSCTL, "1").with_context(|| format!("write 1 to {STATS_SYSCTL}"))?;
        Ok(Self { old })
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, &self.old) {
            eprintln!(
                "xtask: bench: could not restore {STATS_SYSCTL} to {}: {e}",
                self.old
            );
        }
    }
}

/// Who owns a program.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Owner {
    Agent,
    Floor,
    Bpftrace,
}

/// Cumulative statistics of one attached program.
#[derive(Clone, Copy, Default, Debug)]
struct Counters {
    run_cnt: u64,
    run_time_ns: u64,
}

/// (owner, tracepoint) → counters summed over the owner's programs on that tracepoint.
type Snapshot = BTreeMap<(Owner, String), Counters>;

fn bpftool_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("run bpftool")?;
    anyhow::ensure!(out.status.success(), "bpftool {args:?} failed");
    serde_json::from_slice(&out.stdout).with_context(|| format!("parse bpftool {args:?}"))
}

/// Program ids held by `pid` (its program and link fds' `prog_id:` lines). The agent attaches
/// through BPF links, which `bpftool perf show` does not list.
fn prog_ids_of(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// Reads every program's counters, keyed by owner (by pid) and tracepoint. bpftrace's
/// programs are found with `bpftool perf show` (perf event fds, which name the tracepoint); the
/// agent's through its fds, named by their (full, BTF) program name, which is the tracepoint's.
fn snapshot(owners: &[(u32, Owner)]) -> anyhow::Result<Snapshot> {
    let progs = bpftool_json(&["prog", "show", "-j"])?;
    let mut by_id: BTreeMap<u64, (String, Counters)> = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        if let Some(id) = p["id"].as_u64() {
            by_id.insert(
                id,
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    Counters {
                        run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                        run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                    },
                ),
            );
        }
    }
    let mut attached: Vec<(Owner, String, u64)> = Vec::new();
    let links = bpftool_json(&["perf", "show", "-j"])?;
    for l in links.as_array().into_iter().flatten() {
        let (Some(pid), Some(id), Some(tp)) = (
            l["pid"].as_u64(),
            l["prog_id"].as_u64(),
            l["tracepoint"].as_str(),
        ) else {
            continue;
        };
        if let Some((_, owner)) = owners.iter().find(|(p, _)| u64::from(*p) == pid) {
            attached.push((*owner, tp.to_string(), id));
        }
    }
    for (pid, owner) in owners {
        if *owner != Owner::Agent {
            continue;
        }
        for id in prog_ids_of(*pid) {
            if let Some((name, _)) = by_id.get(&id) {
                attached.push((*owner, name.clone(), id));
            }
        }
    }
    let mut out = Snapshot::new();
    for (owner, tp, id) in attached {
        let c = by_id.get(&id).map(|(_, c)| *c).unwrap_or_default();
        let e = out.entry((owner, tp)).or_default();
        e.run_cnt += c.run_cnt;
        e.run_time_ns += c.run_time_ns;
    }
    Ok(out)
}

fn delta(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            (
                k.clone(),
                Counters {
                    run_cnt: a.run_cnt.saturating_sub(b.run_cnt),
                    run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                },
            )
        })
        .collect()
}

/// `category:name` of a tracepoint, found in tracefs.
fn category_of(tracepoint: &str) -> Option<String> {
    let events = if Path::new("/sys/kernel/tracing/events").exists() {
        Path::new("/sys/kernel/tracing/events")
    } else {
        Path::new("/sys/kernel/debug/tracing/events")
    };
    for dir in std::fs::read_dir(events).ok()?.flatten() {
        if dir.path().join(tracepoint).is_dir() {
            return Some(dir.file_name().to_string_lossy().into_owned());
        }
    }
    None
}

/// The bpftrace equivalent of the agent's work on the tracepoints it shares with it: syscall
/// latency histograms for etcd (the agent-overhead script's disk path plus the receive family)
/// and run-queue latency of etcd's threads.
fn bpftrace_script() -> String {
    let mut script = super::agent_overhead::bpftrace_script();
    let recv = ["read", "readv", "recvfrom", "recvmsg"];
    let enters: Vec<String> = recv
        .iter()
        .map(|o| format!("tracepoint:syscalls:sys_enter_{o}"))
        .collect();
    let exits: Vec<String> = recv
        .iter()
        .map(|o| format!("tracepoint:syscalls:sys_exit_{o}"))
        .collect();
    script.push_str(&format!(
        "{} /comm == \"etcd\"/ {{ @rstart[tid] = nsecs; }}\n{} /@rstart[tid]/ {{ @rlat[probe] = hist(nsecs - @rstart[tid]); delete(@rstart[tid]); }}\n",
        enters.join(",\n"),
        exits.join(",\n")
    ));
    script.push_str(
        "tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new /args->comm == \"etcd\"/ { @qtime[args->pid] = nsecs; }\n\
         tracepoint:sched:sched_switch {\n\
           if (args->prev_state == 0 && args->prev_comm == \"etcd\") { @qtime[args->prev_pid] = nsecs; }\n\
           if (args->next_comm == \"etcd\") { $ns = @qtime[args->next_pid]; if ($ns) { @runq = hist(nsecs - $ns); } delete(@qtime[args->next_pid]); }\n\
         }\n",
    );
    script
}

fn spawn_bpftrace(name: &str, script: &str, dir: &Path) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new("bpftrace");
    cmd.args(["-e", script]).stdin(Stdio::null());
    let log = dir.join(format!("{name}.log"));
    let guard = ChildGuard::spawn("bpftrace", cmd, &log)?;
    wait_for(
        &format!("{name} (bpftrace) to attach"),
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("Attaching"))
                .map(|_| ())
        },
    )?;
    // "Attaching N probes" comes before the last attach; let it finish.
    std::thread::sleep(Duration::from_secs(3));
    Ok(guard)
}

/// Two threads of this (untraced) process bouncing a byte over a pair of pipes until `stop`.
fn untraced_ping_pong(duration: Duration) -> anyhow::Result<u64> {
    fn pipe() -> anyhow::Result<(File, File)> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        anyhow::ensure!(
            unsafe { libc::pipe(fds.as_mut_ptr()) } == 0,
            "pipe: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: both fds are fresh and owned by nothing else.
        Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
    }
    let (mut a_rx, mut a_tx) = pipe()?;
    let (mut b_rx, mut b_tx) = pipe()?;
    let stop = Arc::new(AtomicBool::new(false));
    let hops = Arc::new(AtomicU64::new(0));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                if a_rx.read_exact(&mut byte).is_err() || b_tx.write_all(&byte).is_err() {
                    break;
                }
            }
        })
    };
    let deadline = Instant::now() + duration;
    let mut byte = [1u8; 1];
    while Instant::now() < deadline {
        a_tx.write_all(&byte)?;
        b_rx.read_exact(&mut byte)?;
        hops.fetch_add(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    a_tx.write_all(&byte)?;
    drop(a_tx);
    let _ = echo.join();
    Ok(hops.load(Ordering::Relaxed))
}

/// One window's per-tracepoint figures.
struct Window {
    title: String,
    seconds: f64,
    counters: Snapshot,
}

fn ns_per_call(c: Option<&Counters>) -> Option<f64> {
    c.filter(|c| c.run_cnt > 0)
        .map(|c| c.run_time_ns as f64 / c.run_cnt as f64)
}

fn share(c: Option<&Counters>, seconds: f64) -> f64 {
    c.map_or(0.0, |c| c.run_time_ns as f64 / (seconds * 1e9) * 100.0)
}

fn fmt_opt(v: Option<f64>, precision: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.precision$}"))
}

/// Renders one window as a markdown table.
fn render(w: &Window) -> String {
    let mut out = format!("\n### {} ({:.0} s)\n\n", w.title, w.seconds);
    out.push_str("| tracepoint | calls/s | floor ns | agent ns | agent/floor | bpftrace ns | agent % core | bpftrace % core |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let tracepoints: Vec<&String> = {
        let mut v: Vec<&String> = w
            .counters
            .keys()
            .filter(|(o, _)| *o == Owner::Agent)
            .map(|(_, t)| t)
            .collect();
        v.sort();
        v
    };
    let get = |o: Owner, t: &String| w.counters.get(&(o, t.clone()));
    let (mut agent_total, mut bt_total, mut agent_on_bt, mut floor_total) = (0.0, 0.0, 0.0, 0.0);
    let mut untraced_worst: Option<(f64, String)> = None;
    for t in &tracepoints {
        let agent = get(Owner::Agent, t);
        let floor = get(Owner::Floor, t);
        let bt = get(Owner::Bpftrace, t);
        let calls = floor
            .or(agent)
            .map_or(0.0, |c| c.run_cnt as f64 / w.seconds);
        let ratio = match (ns_per_call(agent), ns_per_call(floor)) {
            (Some(a), Some(f)) if f > 0.0 => Some(a / f),
            _ => None,
        };
        if calls >= 100.0
            && let Some(r) = ratio
            && untraced_worst.as_ref().is_none_or(|(worst, _)| r > *worst)
        {
            untraced_worst = Some((r, (*t).clone()));
        }
        agent_total += share(agent, w.seconds);
        floor_total += share(floor, w.seconds);
        if bt.is_some() {
            bt_total += share(bt, w.seconds);
            agent_on_bt += share(agent, w.seconds);
        }
        if calls < 0.05 {
            continue;
        }
        out.push_str(&format!(
            "| {t} | {calls:.0} | {} | {} | {} | {} | {:.3} | {} |\n",
            fmt_opt(ns_per_call(floor), 0),
            fmt_opt(ns_per_call(agent), 0),
            fmt_opt(ratio, 2),
            fmt_opt(ns_per_call(bt), 0),
            share(agent, w.seconds),
            bt.map_or("-".to_string(), |_| format!("{:.3}", share(bt, w.seconds))),
        ));
    }
    out.push_str(&format!(
        "\nIn-kernel CPU, % of one core: agent (all programs) {agent_total:.2}; agent on bpftrace's tracepoints {agent_on_bt:.2}; bpftrace {bt_total:.2}; empty programs on the agent's tracepoints {floor_total:.2}.\n"
    ));
    if let Some((r, t)) = untraced_worst {
        out.push_str(&format!(
            "Highest agent/floor ratio on a tracepoint with ≥ 100 calls/s: {r:.2} ({t}).\n"
        ));
    }
    out
}

/// Runs the benchmark and prints the tables (markdown).
pub fn run(seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::cmd::is_root(),
        "the probe-cost benchmark loads eBPF programs and sets kernel.bpf_stats_enabled: run it as root"
    );
    // The eBPF object is always built optimised (aya-build); the agent's own build profile does
    // not change what runs in the kernel, so the faster debug build is enough.
    let agent_bin = build_agent(false)?;
    let traced = TracedCluster::start("etcdmon-probe-cost-", false)?;
    let _stats = StatsGuard::enable()?;
    let agent = traced.start_agent(
        &agent_bin,
        "sync,write,fd,process,net,recv,block,sched",
        Duration::from_secs(30),
    )?;
    let agent_pid = agent.process.pid();
    let floor = spawn_floor(agent_pid, traced.cluster.dir())?;
    let bpftrace = spawn_bpftrace("bpftrace", &bpftrace_script(), traced.cluster.dir())?;
    let owners = [
        (agent_pid, Owner::Agent),
        (floor.pid(), Owner::Floor),
        (bpftrace.pid(), Owner::Bpftrace),
    ];
    traced.warm_up()?;
    let windows = measure_windows(&traced.endpoints, &owners, seconds)?;
    print_report(&windows);
    drop((floor, bpftrace, agent));
    Ok(())
}

/// The floor: bpftrace with an empty program on every tracepoint the agent (`agent_pid`)
/// attached.
fn spawn_floor(agent_pid: u32, dir: &Path) -> anyhow::Result<ChildGuard> {
    let attached = snapshot(&[(agent_pid, Owner::Agent)])?;
    let mut floor_points = Vec::new();
    for (_, tp) in attached.keys() {
        let category = category_of(tp).with_context(|| format!("tracepoint {tp} in tracefs"))?;
        floor_points.push(format!("tracepoint:{category}:{tp}"));
    }
    anyhow::ensure!(
        !floor_points.is_empty(),
        "the agent attached no tracepoint programs"
    );
    spawn_bpftrace(
        "floor",
        &format!("{} {{ }}\n", floor_points.join(",\n")),
        dir,
    )
}

/// Two windows of program statistics: etcd under put load (traced), then an untraced process
/// busy while etcd is idle.
fn measure_windows(
    endpoints: &[String],
    owners: &[(u32, Owner)],
    seconds: u64,
) -> anyhow::Result<Vec<Window>> {
    let mut windows = Vec::new();
    let before = snapshot(owners)?;
    let started = Instant::now();
    let puts = super::traced_cluster::put_load(endpoints, Duration::from_secs(seconds))?;
    let wall = started.elapsed().as_secs_f64();
    windows.push(Window {
        title: format!("etcd under put load: {puts:.0} puts/s, 3 members on tmpfs (traced)"),
        seconds: wall,
        counters: delta(&before, &snapshot(owners)?),
    });

    // Let etcd settle, then only the untraced process is busy.
    std::thread::sleep(Duration::from_secs(2));
    let before = snapshot(owners)?;
    let started = Instant::now();
    let hops = untraced_ping_pong(Duration::from_secs(seconds))?;
    let wall = started.elapsed().as_secs_f64();
    windows.push(Window {
        title: format!(
            "untraced load only: pipe ping-pong, {:.0} round trips/s, etcd idle",
            hops as f64 / wall
        ),
        seconds: wall,
        counters: delta(&before, &snapshot(owners)?),
    });
    Ok(windows)
}

/// Prints the kernel, the legend and each window's table.
fn print_report(windows: &[Window]) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "## probe-cost: per-invocation cost from kernel.bpf_stats_enabled, kernel {}, {} CPUs\n",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "floor = bpftrace with an empty action on the same tracepoint; bpftrace = the same work in bpftrace (syscall latency for comm etcd, run-queue latency of etcd threads); % core = run_time_ns / wall time."
    );
    for w in windows {
        print!("{}", render(w));
    }
}
