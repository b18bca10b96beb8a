//! Tools the deployment-asset tests (`tests/tests/e2e/deploy_assets.rs`) run, installed when
//! missing: promtool (Debian `prometheus`), docker-compose's offline `config` check (Debian
//! `docker-compose`) and the Kubernetes JSON schemas of the PyPI package
//! `kubernetes-validate`. Idempotent and quiet when everything is there.
//!
//! kustomize is the one tool no registry this project reaches carries in a usable version:
//! Debian's `kubernetes-client` (1.20) embeds kustomize v2.0.3, which cannot build overlays
//! that list directories in `resources`. The tests use a standalone `kustomize`, or
//! `kubectl kustomize` when kubectl embeds kustomize v4 or later; this only reports which.

use std::process::Command;

use anyhow::{Context, bail};

use crate::cmd::{self, output, run_with};

/// The PyPI package with the offline Kubernetes schemas, pinned.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `apt-get install -y` for `packages`, through `sudo -n` when not root.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!(
        "xtask: setup: installing Debian packages: {}",
        packages.join(" ")
    );
    let sudo = !cmd::is_root();
    if sudo && output("sudo", &["-n", "true"]).is_none() {
        bail!("missing Debian packages {packages:?}; run as root or with passwordless sudo");
    }
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        run_with(&mut c)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    apt(&args)
}

/// Which kustomize the tests will use, if any.
fn kustomize() -> Option<String> {
    if on_path("kustomize") {
        return Some("kustomize".into());
    }
    let version = output("kubectl", &["version", "--client"])?;
    let v = version
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))?;
    let major: u32 = v.split('.').next()?.parse().ok()?;
    (major >= 4).then(|| format!("kubectl kustomize (kustomize v{v})"))
}

/// Installs what the deployment-asset tests need and is missing.
pub fn ensure() -> anyhow::Result<()> {
    let mut apt = Vec::new();
    if !on_path("promtool") {
        apt.push("prometheus");
    }
    if !on_path("docker-compose") && !succeeds("docker", &["compose", "version"]) {
        apt.push("docker-compose");
    }
    if !on_path("python3") {
        apt.extend(["python3", "python3-pip"]);
    }
    if !apt.is_empty() {
        apt_install(&apt)?;
    }

    if succeeds("python3", &["-c", "import kubernetes_validate"]) {
        eprintln!("xtask: setup: kubernetes-validate present");
    } else {
        eprintln!("xtask: setup: installing {KUBERNETES_VALIDATE} (PyPI)");
        let pip = |extra: &[&str]| {
            run_with(
                Command::new("python3")
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(extra)
                    .arg(KUBERNETES_VALIDATE),
            )
        };
        // Debian's own python3 refuses system-wide pip installs (PEP 668); a pyenv or venv
        // python3 takes the plain form.
        pip(&[])
            .or_else(|_| pip(&["--user", "--break-system-packages"]))
            .context("pip install kubernetes-validate")?;
    }

    match kustomize() {
        Some(tool) => eprintln!("xtask: setup: deploy tests render overlays with {tool}"),
        None => eprintln!(
            "xtask: setup: WARNING: no kustomize (nor kubectl with kustomize v4+) on PATH; \
             the Kubernetes manifest test fails under CI=true and skips otherwise"
        ),
    }
    Ok(())
}
