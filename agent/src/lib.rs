//! etcd-monitor-agent: finds etcd processes on this node, traces their disk path with eBPF
//! tracepoints, and exports what it sees.
//!
//! Map of the crate: `config` (flags) · `procfs`, `identity`, `discovery` (which processes
//! are etcd, and which member) · `fdclass` (WAL/DB/SNAP/socket) · `tracker` (the traced set,
//! mirrored into the kernel through the `kernel::Kernel` trait) · `ebpf` (Linux: load, attach,
//! maps, ring-buffer reader) · `probes` (what attaches where) · `decode` (ring-buffer records)
//! · `stats` + `metrics` (exact kernel counters → Prometheus) · `http` · `mode` · `sockio`
//! (syscall bytes per peer socket) · `diag` (block devices, threads, cgroup CPU throttling) ·
//! `resources` (per-member CPU, memory, data-dir filesystem, fds, process state; node memory)
//! · `cgroup_io` (a member's I/O cgroup limits and counters, PSI).

pub mod cgroup_io;
pub mod cgroups;
pub mod config;
pub mod decode;
pub mod diag;
pub mod discovery;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod fdclass;
pub mod http;
pub mod identity;
pub mod kernel;
pub mod metrics;
pub mod mode;
pub mod net;
pub mod probes;
pub mod procfs;
pub mod resources;
pub mod ship;
pub mod sockio;
pub mod stats;
pub mod tracker;
