//! `etcd-monitor mcp`: an MCP server on stdin/stdout that answers from a running collector's
//! REST API (`--url`, `--token-file`). stdout carries the protocol, so logs go to stderr
//! (`RUST_LOG`, default `warn`).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::outputs::mcp::{McpServer, backend::Backend, flags::McpFlags, serve_stdio};

/// Runs `etcd-monitor mcp` with `args` (`args[0]` is the program name); the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let flags = match McpFlags::try_parse_from(args) {
        Ok(f) => f,
        Err(e) => {
            // --help and --version print to stdout and succeed; errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let remote = match flags.remote() {
        Ok(r) => r,
        Err(err) => {
            eprintln!("etcd-monitor mcp: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(err) => {
            eprintln!("etcd-monitor mcp: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(url = %flags.url, "MCP over stdio, answering from the collector's REST API.");
    match runtime.block_on(serve_stdio(McpServer::new(Backend::Remote(remote)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("etcd-monitor mcp: {err}");
            ExitCode::FAILURE
        }
    }
}
