//! The one error type of the crate.

/// What can go wrong in a pattern.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An etcd RPC failed (transport error, gRPC status, closed stream).
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// The operation that failed, e.g. `"put lock key"`.
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The session's lease expired, was revoked, or etcd was unreachable for longer than the
    /// lease TTL (the local deadline passed). Whatever the session held is gone.
    #[error(
        "session lost: lease {lease_id:x} expired or etcd was unreachable for longer than its TTL"
    )]
    SessionLost {
        /// The lease of the lost session.
        lease_id: i64,
    },
    /// `try_lock` found the lock held by someone else.
    #[error("lock {key} is held by another owner")]
    Locked {
        /// The lock's prefix.
        key: String,
    },
    /// Leadership was lost (key deleted, session lost) while acting as leader.
    #[error("leadership of election {name} was lost")]
    NotLeader {
        /// The election's name (key prefix).
        name: String,
    },
    /// A value could not be encoded or decoded as JSON.
    #[error("config value at {key} is not valid JSON for the requested type: {source}")]
    Json {
        /// The etcd key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The watch cannot resume: the revisions it needs were compacted away.
    #[error(
        "watch on {prefix} cannot resume from revision {wanted}: compacted up to {compact_revision}"
    )]
    Compacted {
        /// The watched prefix.
        prefix: String,
        /// The revision the watch needed.
        wanted: i64,
        /// The compaction revision etcd reported.
        compact_revision: i64,
    },
    /// An argument was rejected before anything was sent to etcd.
    #[error("invalid argument {field}: {reason}")]
    InvalidArgument {
        /// The argument's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait EtcdContext<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> EtcdContext<T> for std::result::Result<T, etcd_client::Error> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Etcd { op, source })
    }
}
