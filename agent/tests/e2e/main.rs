//! The agent's end-to-end tests, in one test binary: real etcd members, the real agent binary
//! and, in the `ebpf_*` modules, real eBPF programs in the running kernel. One binary links the
//! library and the test helpers once, instead of once per suite. Run one suite with
//! `cargo test -p etcd-monitor-agent --test e2e -- ebpf_network::` (the module path is the filter).

mod common;
mod degradation;
mod ebpf_canonical_dirs;
mod ebpf_diag;
mod ebpf_network;
mod ebpf_probe_runs;
mod ebpf_resources;
mod ebpf_ringbuf_pressure;
mod ebpf_wal_fsync;
mod shipping;
