//! `docs/configuration.md` is what the binaries' clap definitions say today.

use etcd_monitor_tests::{binary, docs};

#[test]
fn the_configuration_reference_is_current() -> anyhow::Result<()> {
    let bin_dir = binary("etcd-monitor")?
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("binary has no directory"))?;
    binary("etcd-monitor-agent")?;
    let want = docs::generate(&bin_dir)?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(docs::CONFIG_REFERENCE);
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    anyhow::ensure!(
        have == want,
        "{} is out of date with the flags; run `cargo xtask docs` and commit it",
        path.display()
    );
    for flag in [
        "--endpoints",
        "--health-check-interval",
        "--collector",
        "--mode",
    ] {
        anyhow::ensure!(want.contains(flag), "{flag} missing from the reference");
    }
    Ok(())
}
