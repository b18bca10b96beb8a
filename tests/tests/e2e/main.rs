//! The end-to-end tests of `etcd-monitor-tests`, in one test binary: each module is one suite
//! (real etcd members, the real collector and agent as processes, the real deployment tools).
//! One binary links the helpers and their dependencies once, instead of once per suite. Run one
//! suite with `cargo test -p etcd-monitor-tests --test e2e -- pipeline::` (the module path is
//! the filter). Three suites stay binaries of their own, so that nothing else of this crate runs
//! beside them (cargo runs test binaries one after another): `demo` takes fixed ports and runs
//! `cargo xtask demo`; `diagnosis` and `network_faults` inject faults (a throttled device, a CPU
//! quota, a disk hammer, a lossy or rate-limited veth) and judge whether the diagnosis names
//! them, which other suites' load would skew.

mod cluster_smoke;
mod config_reference;
mod defaults;
mod deploy_assets;
mod fanout;
mod logs;
mod netns_attribution;
mod pipeline;
mod resource_alerts;
mod stream_labels;
