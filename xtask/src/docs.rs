//! `cargo xtask docs`: regenerates the configuration reference from the binaries' clap
//! definitions.

use etcd_monitor_tests::docs;

use crate::cmd::root;

/// Builds both binaries and writes `docs/configuration.md`.
pub fn run() -> anyhow::Result<()> {
    let bin_dir = crate::cmd::build_binaries(false, &[])?;
    let text = docs::generate(&bin_dir)?;
    let path = root().join(docs::CONFIG_REFERENCE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, text)?;
    println!("wrote {}", path.display());
    Ok(())
}
