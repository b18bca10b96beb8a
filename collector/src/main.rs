//! `etcd-monitor`: parse and validate the configuration, then run the collector.

use std::io::IsTerminal;

use clap::Parser;
use etcd_monitor::{app::config::Cli, app::config::LogFormat};
use tracing_subscriber::EnvFilter;

/// Colour escapes only when the logs go to a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>): never into a pipe, a file, journald or a JSON line.
fn colour(format: LogFormat, is_terminal: bool) -> bool {
    format == LogFormat::Text
        && is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(format: LogFormat) {
    // rmcp logs every stateless /mcp request's session start and end at info: warn and up.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    // The logs go to stdout (tracing_subscriber's default writer).
    let ansi = colour(format, std::io::stdout().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> std::process::ExitCode {
    // `etcd-monitor ctl …` operates a cluster (etcdctl parity, safe defrag); it has its own
    // flags, parsed by `ops::ctl::cli`, and logs only on request (RUST_LOG).
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "ctl") {
        args.remove(1);
        if let Some(first) = args.first_mut() {
            *first = "etcd-monitor ctl".into();
        }
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        return etcd_monitor::ops::ctl::cli::main(args);
    }
    // `etcd-monitor mcp …`: MCP over stdio for an AI assistant, a client of a collector's REST
    // API; its own flags (`outputs::mcp::flags`), logs on stderr.
    if args.get(1).is_some_and(|a| a == "mcp") {
        args.remove(1);
        if let Some(first) = args.first_mut() {
            *first = "etcd-monitor mcp".into();
        }
        return etcd_monitor::app::mcp::main(args);
    }
    // `etcd-monitor report …` fetches the performance report from a running collector.
    if args.get(1).is_some_and(|a| a == "report") {
        args.remove(1);
        if let Some(first) = args.first_mut() {
            *first = "etcd-monitor report".into();
        }
        return etcd_monitor::app::report::main(args);
    }
    let cli = Cli::parse_from(args);
    init_tracing(cli.log_format);
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("etcd-monitor: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if config.benchmark.is_some() {
        return etcd_monitor::app::bench::main(config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(err) => {
            eprintln!("etcd-monitor: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let running = etcd_monitor::app::start(config).await?;
        running.wait().await?;
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("etcd-monitor: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
