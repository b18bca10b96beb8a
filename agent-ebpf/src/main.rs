//! etcd-monitor's eBPF programs.
//!
//! Every program is a tracepoint (kprobes are not available everywhere). The syscall programs
//! first test the `TRACKED_BITS` bitmap, so processes that are not etcd cost one inlined array
//! lookup and produce nothing (see `filter`). Layout: `maps` declares every map, `syscall` holds the shared enter/exit logic, and
//! `probes/*` has one module per hooked event, mirrored by `agent/src/probes/*`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod filter;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod probes;
#[cfg(target_arch = "bpf")]
mod syscall;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path, so this is never called at run time.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Built for the host only so the workspace checks cleanly; the real object is built by
    // agent/build.rs for bpfel-unknown-none.
}
