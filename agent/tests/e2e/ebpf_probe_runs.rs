//! With the kernel's BPF statistics on, the agent exports its own programs' run time and run
//! count (`etcdmon_probe_run_seconds_total{program}`, `etcdmon_probe_runs_total{program}`), and
//! they grow with the traced etcd's syscalls.

use crate::common;

use std::time::Duration;

use etcd_monitor_tests::{http::prom_sum, wait_for};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns `kernel.bpf_stats_enabled` on and puts the old value back on drop.
struct StatsOn {
    old: String,
}

impl StatsOn {
    fn enable() -> anyhow::Result<Self> {
        let old = std::fs::read_to_string(STATS_SYSCTL)?.trim().to_string();
        std::fs::write(STATS_SYSCTL, "1")?;
        Ok(Self { old })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, &self.old);
    }
}

#[test]
fn probe_run_time_is_exported_while_bpf_stats_are_on() -> anyhow::Result<()> {
    if !common::require_root("probe_run_time_is_exported_while_bpf_stats_are_on")? {
        return Ok(());
    }
    let _stats = StatsOn::enable()?;
    let (cluster, agent) = common::cluster_with_agent()?;
    cluster.put_many("/probe-runs/", 300, 128)?;

    let series = |text: &str, name: &str, program: &str| {
        prom_sum(text, name, &[("program", program)]).unwrap_or(0.0)
    };
    let text = wait_for(
        "the agent's probe run series to count etcd's fdatasyncs",
        Duration::from_secs(30),
        || {
            let text = agent.metrics().ok()?;
            (series(&text, "etcdmon_probe_runs_total", "sys_exit_fdatasync") >= 300.0)
                .then_some(text)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.metrics().unwrap_or_default()))?;
    for program in [
        "sys_enter_fdatasync",
        "sys_exit_fdatasync",
        "sys_enter_write",
        "sys_exit_write",
        "sched_switch",
    ] {
        let runs = series(&text, "etcdmon_probe_runs_total", program);
        let seconds = series(&text, "etcdmon_probe_run_seconds_total", program);
        assert!(runs > 0.0, "{program}: runs {runs}\n{text}");
        assert!(seconds > 0.0, "{program}: run seconds {seconds}\n{text}");
        // Nanoseconds to microseconds per run: a real program, not a unit mix-up.
        let per_run = seconds / runs;
        assert!(
            per_run > 1e-9 && per_run < 1e-3,
            "{program}: {per_run} s per run\n{text}"
        );
    }

    // The counters keep growing with more load.
    let before = series(&text, "etcdmon_probe_runs_total", "sys_exit_fdatasync");
    cluster.put_many("/probe-runs-2/", 100, 128)?;
    wait_for(
        "the run count to grow with more puts",
        Duration::from_secs(30),
        || {
            let text = agent.metrics().ok()?;
            (series(&text, "etcdmon_probe_runs_total", "sys_exit_fdatasync") >= before + 100.0)
                .then_some(())
        },
    )?;
    Ok(())
}
