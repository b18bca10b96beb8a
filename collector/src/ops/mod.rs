//! Acting on etcd (layer 3): operations that change a cluster, each with guard rails.
//!
//! [`ctl`] is `etcd-monitor ctl` (etcdctl parity) and the safe operations (rolling defrag,
//! NOSPACE recovery) the CLI, and later the REST admin API and automatic defrag, call.

pub mod ctl;
