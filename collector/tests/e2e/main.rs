//! The collector's end-to-end tests, in one test binary: every module starts real etcd members
//! and the real collector binary (some also the real agent with real eBPF), and checks what
//! they do from the outside. One binary links the library and the test helpers once, instead
//! of once per suite. Run one suite with `cargo test -p etcd-monitor --test e2e -- alerting::`
//! (the module path is the filter), or one test by its full name, e.g. `hostile::rest::`.

mod admin;
mod alerting;
mod alerting_kernel;
mod alerting_ops;
mod auth;
mod benchmark;
mod cluster_failures;
mod common;
mod ctl;
mod defrag;
mod ha;
mod history_api;
mod hostile;
mod mcp;
mod report;
mod schemathesis;
mod tls;
