//! `etcd-monitor --run-benchmark`: runs one benchmark against the first cluster, shows progress
//! (a bar on a terminal, a line per second otherwise), prints etcd's report shape, writes the
//! JSON and CSV outputs, stores the run, and turns the SLO verdict into the exit code.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use crate::{
    app::config::BenchmarkRequest, app::config::Config, model::time::now_ms, ops::bench::Progress,
    ops::bench::Report, ops::bench::runner, ops::bench::safety, store::BenchmarkRun, store::Store,
};

/// Exit code of an interrupted run (128 + SIGINT, like a shell).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs the benchmark `config` asks for; the process's exit code.
pub fn main(config: Config) -> ExitCode {
    let Some(request) = config.benchmark.clone() else {
        eprintln!("etcd-monitor: --run-benchmark was not given");
        return ExitCode::FAILURE;
    };
    let Some(cluster) = config.clusters.first().cloned() else {
        eprintln!("etcd-monitor: --run-benchmark: no cluster is configured");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(err) => {
            eprintln!("etcd-monitor: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let spec = request.plan.spec.clone();
    let run_id = request
        .plan
        .run_id
        .clone()
        .unwrap_or_else(safety::new_run_id);
    let progress = Progress::new(&spec);
    let result = runtime.block_on(async {
        let watcher = progress.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\netcd-monitor: interrupted; stopping and deleting the benchmark keys");
                watcher.cancel();
            }
        });
        let shown = progress.clone();
        let display = tokio::spawn(show_progress(shown));
        let result = runner::run(&cluster, &spec, &run_id, progress.clone()).await;
        display.abort();
        let _ = display.await;
        result
    });
    drop(runtime);
    let report = match result {
        Ok(r) => r,
        Err(err) => {
            eprintln!("etcd-monitor: --run-benchmark: {err}");
            return ExitCode::FAILURE;
        }
    };
    finish(&config, &request, &report)
}

/// Prints and saves `report`; the exit code it deserves.
fn finish(config: &Config, request: &BenchmarkRequest, report: &Report) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{}", report.to_text());
    let mut code = ExitCode::SUCCESS;
    match serde_json::to_string_pretty(report) {
        Ok(json) => match &request.plan.json {
            Some(p) if p.as_os_str() == "-" => {
                let _ = writeln!(stdout, "{json}");
            }
            Some(p) => {
                if let Err(e) = std::fs::write(p, json) {
                    eprintln!("etcd-monitor: --benchmark-json {}: {e}", p.display());
                    code = ExitCode::FAILURE;
                }
            }
            None => {}
        },
        Err(e) => eprintln!("etcd-monitor: cannot encode the report: {e}"),
    }
    let _ = stdout.flush();
    if let Some(p) = &request.plan.csv
        && let Err(e) = std::fs::write(p, report.to_csv())
    {
        eprintln!("etcd-monitor: --benchmark-csv {}: {e}", p.display());
        code = ExitCode::FAILURE;
    }
    match Store::open(&config.data_dir) {
        Ok(store) => {
            let run = BenchmarkRun {
                id: report.header.run_id.clone(),
                cluster: report.header.cluster.clone(),
                workload: report.header.spec.kind_name().to_string(),
                state: if report.header.interrupted {
                    "interrupted"
                } else {
                    "succeeded"
                }
                .to_string(),
                started_ms: report.header.started_ms,
                finished_ms: Some(now_ms()),
                report_json: serde_json::to_string(report).ok(),
                error: None,
            };
            if let Err(e) = store.save_benchmark_run(&run) {
                eprintln!("etcd-monitor: benchmark not stored: {e}");
            }
        }
        Err(e) => eprintln!("etcd-monitor: benchmark not stored: {e}"),
    }
    if request.plan.spec.keep_keys {
        eprintln!(
            "etcd-monitor: --benchmark-keep-keys: {} keys left under {}",
            report
                .keys_before_cleanup
                .map_or("?".to_string(), |n| n.to_string()),
            report.header.prefix
        );
    } else if !report.prefix_deleted {
        eprintln!(
            "etcd-monitor: could not delete {}; delete it with `etcdctl del --prefix {}`",
            report.header.prefix, report.header.prefix
        );
        code = ExitCode::FAILURE;
    }
    if report.header.interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    if report.slo.as_ref().is_some_and(|v| !v.pass) {
        eprintln!("etcd-monitor: SLO missed: FAIL");
        return ExitCode::FAILURE;
    }
    code
}

/// A progress bar on a terminal, a line per second otherwise (both on stderr).
async fn show_progress(progress: Arc<Progress>) {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            let s = progress.snapshot();
            bar.set_position((s.fraction * 1000.0) as u64);
            bar.set_message(format!(
                "{} ops, {} errors, {:.0} ops/s",
                s.done,
                s.failed,
                s.done as f64 / s.elapsed_seconds.max(1e-3)
            ));
            // The task is aborted when the run ends; the bar keeps its last state.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = progress.snapshot();
            eprintln!(
                "benchmark: {}/{} ops, {} errors, {:.1} s, {:.0} ops/s",
                s.done,
                s.total_ops,
                s.failed,
                s.elapsed_seconds,
                s.done as f64 / s.elapsed_seconds.max(1e-3)
            );
        }
    }
}
