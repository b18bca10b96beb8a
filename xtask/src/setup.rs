//! `cargo xtask setup`: install what a fresh Debian 12 machine lacks, idempotently.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, bail};

use crate::cmd::{self, output, run_with};

/// Debian packages the build, the tests, the demo and the benchmarks use.
pub const APT_PACKAGES: &[&str] = &[
    // bpf-linker against LLVM 22
    "llvm-22-dev",
    "libclang-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    // real etcd for the tests and the demo
    "etcd-server",
    "etcd-client",
    // gRPC code generation (libprotobuf-dev: google/protobuf/*.proto that etcd-client imports)
    "protobuf-compiler",
    "libprotobuf-dev",
    // eBPF inspection, Prometheus stack
    "bpftool",
    "prometheus",
    "prometheus-alertmanager",
    // benchmarks: HTTP load and the bpftrace baseline
    "wrk",
    "bpftrace",
    // test helpers: the status page is checked in a real headless browser
    "chromium",
    // the non-Linux compile check: ring (TLS) builds C for the Windows target
    "gcc-mingw-w64-x86-64",
    "python3",
    // PyPI test tools (PYPI_PACKAGES) are installed with pip
    "python3-pip",
    "util-linux",
    // alerting and diagnosis e2e: throttled ext4 filesystems on loop devices
    "e2fsprogs",
    // network-fault e2e and accuracy scenarios: a member in its own network namespace behind
    // a veth pair, packet loss with nftables, rate limits with tc (netem may be absent)
    "nftables",
    "iproute2",
];

/// PyPI tools the tests run: (requirement, command and arguments that succeed once it is
/// installed). Schemathesis checks the collector's OpenAPI document against the live server
/// (`collector/tests/e2e/schemathesis.rs`; its CLI flags are those of major version 4). The
/// official MCP client SDK drives the collector's MCP server over HTTP and stdio
/// (`collector/tests/e2e/mcp.rs`, `mcp_client.py`; its client API is that of major version 2).
pub const PYPI_PACKAGES: &[(&str, &[&str])] = &[
    ("schemathesis>=4,<5", &["schemathesis", "--version"]),
    ("mcp>=2,<3", &["python3", "-c", "import mcp"]),
];

/// Installs the missing [`PYPI_PACKAGES`] with `python3 -m pip` (retrying with
/// `--break-system-packages` where the system Python is marked externally managed, as on
/// Debian 12; the tools are test-only).
fn pypi_packages() -> anyhow::Result<()> {
    for (requirement, probe) in PYPI_PACKAGES {
        let present = || output(probe[0], &probe[1..]).is_some();
        if present() {
            eprintln!("xtask: setup: {requirement} present");
            continue;
        }
        eprintln!("xtask: setup: installing {requirement} from PyPI");
        let base = [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            requirement,
        ];
        if run_with(Command::new("python3").args(base)).is_err() {
            run_with(
                Command::new("python3")
                    .args(base)
                    .arg("--break-system-packages"),
            )
            .with_context(|| format!("pip install {requirement}"))?;
        }
        if !present() {
            bail!(
                "{requirement} was installed but `{}` still fails",
                probe.join(" ")
            );
        }
    }
    Ok(())
}

/// The nightly toolchain aya-build compiles eBPF with.
const NIGHTLY: &str = "nightly";
/// Target of the non-Linux compile check.
pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

fn installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.contains("install ok installed"))
}

/// Runs `apt-get install` for the missing packages.
fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: setup: Debian packages present");
        return Ok(());
    }
    eprintln!(
        "xtask: setup: installing Debian packages: {}",
        missing.join(" ")
    );
    let sudo = !cmd::is_root();
    if sudo && output("sudo", &["-n", "true"]).is_none() {
        bail!("missing Debian packages {missing:?}; run as root or with passwordless sudo");
    }
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        run_with(&mut c)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    apt(&args)
}

fn rust_parts() -> anyhow::Result<()> {
    let toolchains = output("rustup", &["toolchain", "list"]).context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with(NIGHTLY)) {
        eprintln!("xtask: setup: installing the {NIGHTLY} toolchain");
        cmd::run(
            "rustup",
            &[
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ],
        )?;
    }
    let components = output(
        "rustup",
        &["component", "list", "--toolchain", NIGHTLY, "--installed"],
    )
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: setup: adding rust-src to {NIGHTLY}");
        cmd::run(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", NIGHTLY],
        )?;
    }
    let targets = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !targets.lines().any(|l| l.trim() == WINDOWS_TARGET) {
        eprintln!("xtask: setup: adding the {WINDOWS_TARGET} target (non-Linux compile check)");
        cmd::run("rustup", &["target", "add", WINDOWS_TARGET])?;
    }
    for component in ["clippy", "rustfmt"] {
        let installed = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
        if !installed.lines().any(|l| l.starts_with(component)) {
            cmd::run("rustup", &["component", "add", component])?;
        }
    }
    if output("bpf-linker", &["--version"]).is_none() {
        eprintln!("xtask: setup: building bpf-linker against LLVM 22 (a few minutes, once)");
        run_with(
            Command::new("cargo")
                .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                .args([
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ]),
        )?;
    } else {
        eprintln!("xtask: setup: bpf-linker present");
    }
    // `cargo xtask test` fails on unused dependencies with it (about 3 minutes to build, once).
    if output("cargo-machete", &["--version"]).is_none() {
        eprintln!("xtask: setup: installing cargo-machete");
        cmd::run("cargo", &["install", "cargo-machete", "--locked"])?;
    }
    Ok(())
}

/// Mounts tracefs when it is missing (tracepoint attach reads event ids there).
fn tracefs() {
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    if !cmd::is_root() {
        eprintln!(
            "xtask: setup: tracefs is not mounted and we are not root; eBPF tests will fail to attach"
        );
        return;
    }
    eprintln!("xtask: setup: mounting tracefs at /sys/kernel/tracing");
    if let Err(e) = cmd::run("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"]) {
        eprintln!("xtask: setup: {e:#}");
    }
}

/// Installs everything that is missing.
pub fn run() -> anyhow::Result<()> {
    let start = Instant::now();
    apt_packages()?;
    rust_parts()?;
    pypi_packages()?;
    crate::setup_deploy::ensure()?;
    tracefs();
    eprintln!(
        "xtask: setup: done in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
