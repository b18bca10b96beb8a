//! `etcd-monitor ctl …`: etcdctl-parity commands and the safe operations, against any cluster.
//!
//! - [`cli`]: the clap command line, output in etcdctl's shapes (`-w simple|json`) and exit codes.
//! - [`safe`]: the ONE implementation of rolling defrag and NOSPACE recovery: a plain async API
//!   with progress reported through a callback and structured results (before/after figures),
//!   which the CLI calls today and the REST admin API and automatic defrag will call later.
//! - [`snapshot`]: `snapshot save` with a checksum sidecar and verification.
//! - [`conn`]: clients built from the collector's own [`crate::model::config::ClusterConfig`]
//!   (endpoint normalisation, TLS and auth are the collector's).

pub mod cli;
pub mod conn;
pub mod json;
pub mod safe;
pub mod snapshot;

/// Exit codes of `etcd-monitor ctl`, stable for scripts.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// etcd answered with an error or could not be reached.
    pub const ETCD_ERROR: u8 = 1;
    /// Bad flags or arguments (also clap's own usage errors).
    pub const USAGE: u8 = 2;
    /// `txn`: the comparisons failed (the else branch ran).
    pub const COMPARE_FAILED: u8 = 3;
    /// A safe operation refused before changing anything (unhealthy member, active alarm,
    /// lagging member, no quorum margin, data still over the quota).
    pub const REFUSED: u8 = 4;
    /// `snapshot save`: the file written fails verification.
    pub const VERIFY_FAILED: u8 = 5;
}
