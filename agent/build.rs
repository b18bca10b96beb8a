//! Builds `agent-ebpf` for the BPF target and places the object in `OUT_DIR`.
//!
//! Skipped (with a stub object) when the agent is not built for Linux, so `cargo check
//! --target x86_64-pc-windows-gnu` works without the BPF toolchain.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "etcd-monitor-agent-ebpf",
            root_dir: "../agent-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
