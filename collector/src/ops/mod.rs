//! Layer 3: acting on etcd, each operation with guard rails: benchmarks ([`bench`](mod@bench))
//! and [`ctl`], which is `etcd-monitor ctl` (etcdctl parity) and the safe operations (rolling
//! defrag, NOSPACE recovery) that the CLI, and later the REST admin API and automatic defrag,
//! call.

pub mod admin;
pub mod bench;
pub mod ctl;
