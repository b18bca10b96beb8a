//! `etcd-monitor-agent`: the per-node daemon. See the library docs for the module map.

mod app;

use std::io::IsTerminal;

use clap::Parser;
use etcd_monitor_agent::config::{Config, LogFormat};

/// Colour escapes only when the logs go to a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>): never into a pipe, a file, journald or a JSON line.
fn colour(format: LogFormat, is_terminal: bool) -> bool {
    format == LogFormat::Text
        && is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(format, std::io::stderr().is_terminal()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        return std::process::ExitCode::from(2);
    }
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "The agent stopped.");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
