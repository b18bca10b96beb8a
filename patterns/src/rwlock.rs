//! `RwLock`: readers share, a writer excludes, served in revision order.

use tokio_util::sync::CancellationToken;

use crate::{error::Result, queue, session::Session};

/// A distributed read-write lock under a key prefix (etcd's `contrib/recipes` RWMutex).
///
/// Readers put `<prefix>/read/<lease>-<nonce>`, writers `<prefix>/write/<lease>-<nonce>`, attached
/// to the session's lease. A reader proceeds when no *write* key was created before its own; a
/// writer when no key at all was. So readers share, a writer excludes everyone, and the queue is
/// fair: a waiting writer blocks readers that arrive after it (no writer starvation).
///
/// ```no_run
/// # async fn demo(session: &etcd_monitor_patterns::Session) -> etcd_monitor_patterns::Result<()> {
/// use etcd_monitor_patterns::RwLock;
/// let lock = RwLock::new(session, "/locks/schema");
/// let read = lock.read().await?;   // shared with other readers
/// drop(read);
/// let write = lock.write().await?; // alone
/// write.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RwLock {
    client: crate::queue::Etcd,
    lease_id: i64,
    lost: CancellationToken,
    prefix: String,
}

impl RwLock {
    /// A read-write lock under `prefix` whose keys are attached to `session`'s lease.
    pub fn new(session: &Session, prefix: &str) -> Self {
        Self {
            client: queue::Etcd(session.client()),
            lease_id: session.lease_id(),
            lost: session.lost(),
            prefix: queue::dir(prefix),
        }
    }

    /// Waits for a shared (read) hold.
    pub async fn read(&self) -> Result<RwLockGuard> {
        let blockers = format!("{}write/", self.prefix);
        self.acquire("read/", &blockers).await
    }

    /// Waits for an exclusive (write) hold.
    pub async fn write(&self) -> Result<RwLockGuard> {
        let blockers = self.prefix.clone();
        self.acquire("write/", &blockers).await
    }

    async fn acquire(&self, kind: &str, blockers: &str) -> Result<RwLockGuard> {
        let key = format!(
            "{}{kind}{:x}-{:016x}",
            self.prefix,
            self.lease_id,
            queue::nonce()
        );
        let (rev, _) = queue::unless_lost(
            &self.lost,
            self.lease_id,
            queue::create_key(&self.client, &key, Vec::new(), self.lease_id),
        )
        .await?;
        // From here on the guard owns the key: dropping it (or this future) deletes it.
        let guard = RwLockGuard {
            owned: queue::OwnedKey::new(self.client.clone(), key, rev),
            lost: self.lost.child_token(),
        };
        queue::unless_lost(
            &self.lost,
            self.lease_id,
            queue::wait_deletes(&self.client, blockers, rev),
        )
        .await?;
        Ok(guard)
    }
}

/// A held read or write lock; released on drop (best effort) or by [`RwLockGuard::unlock`].
#[derive(Debug)]
pub struct RwLockGuard {
    owned: queue::OwnedKey,
    lost: CancellationToken,
}

impl RwLockGuard {
    /// The create revision of this hold's key (its place in the queue).
    pub fn revision(&self) -> i64 {
        self.owned.rev()
    }

    /// Cancelled when the session behind the lock is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Releases the hold.
    pub async fn unlock(mut self) -> Result<()> {
        self.owned.release().await
    }
}
