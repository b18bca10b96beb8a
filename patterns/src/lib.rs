//! Distributed-systems patterns on etcd v3, for etcd-monitor and its users.
//!
//! Every pattern is built on three etcd primitives: leases (a key lives as long as its owner keeps
//! the lease alive), transactions (create a key only if absent, change it only if it is still
//! ours) and revisions (a total order of every change, used as queue position and fencing token).
//!
//! | pattern | type |
//! |---|---|
//! | lease kept alive with a local deadline | [`Session`] |
//! | mutual exclusion with a fencing token | [`Mutex`] |
//! | shared/exclusive lock, fair by revision | [`RwLock`] |
//! | leader election, leader-only task | [`Election`] |
//! | service discovery and load-balancing picks | [`ServiceRegistry`] |
//! | typed configuration with a resuming watch | [`Config`] |
//! | feature flags with stable percentage rollout | [`FeatureFlags`] |
//!
//! Retries, losses and resumes are counted in [`stats`].

mod config;
mod election;
mod error;
mod flags;
mod mutex;
mod queue;
mod registry;
mod resume;
mod rwlock;
mod session;
pub mod stats;

pub use config::{Config, ConfigChange, ConfigWatch};
pub use election::{Election, Leader, LeaderObserver, LeaderTerm};
pub use error::{Error, Result};
pub use flags::{FeatureFlags, Flag, rollout_bucket};
pub use mutex::{Mutex, MutexGuard};
pub use registry::{Instance, ServiceEvent, ServiceRegistry, ServiceWatcher};
pub use rwlock::{RwLock, RwLockGuard};
pub use session::Session;
pub use tokio_util::sync::CancellationToken;

/// Connects a client to comma-separated `endpoints` (e.g. `http://127.0.0.1:2379`), with HTTP/2
/// keep-alive pings so that a dead connection is noticed in seconds.
pub async fn connect(endpoints: &str) -> Result<etcd_client::Client> {
    let list: Vec<&str> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if list.is_empty() {
        return Err(Error::InvalidArgument {
            field: "endpoints",
            reason: "no endpoint given".to_string(),
        });
    }
    let options = etcd_client::ConnectOptions::new()
        .with_keep_alive(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(2),
        )
        .with_keep_alive_while_idle(true)
        .with_connect_timeout(std::time::Duration::from_secs(3));
    etcd_client::Client::connect(list, Some(options))
        .await
        .map_err(|source| Error::Etcd {
            op: "connect",
            source,
        })
}
