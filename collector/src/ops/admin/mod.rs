//! Admin operations on a monitored cluster, for the REST admin API and automatic
//! defragmentation: [`actions`] (the operations; rolling defrag is
//! [`crate::ops::ctl::safe`]'s, the CLI's own), [`jobs`] (one operation per cluster at a time,
//! progress, the audit trail, `etcdmon_admin_operations_total`), [`snapshots`] (the bounded
//! snapshot directory), [`auto`] (the automatic-defrag scheduler, one gateable `tick`),
//! [`window`] (its maintenance window) and [`flags`].

pub mod actions;
pub mod auto;
pub mod flags;
pub mod jobs;
pub mod snapshots;
pub mod window;

pub use actions::{AdminOp, CompactTarget};
pub use jobs::{AdminError, AdminJobView, AdminJobs};
