//! The lock helpers the collector uses everywhere, defined once for both binaries in
//! [`etcd_monitor_runtime::sync`]: a poisoned lock is recovered, never propagated.

pub use etcd_monitor_runtime::sync::{lock, read, write};
