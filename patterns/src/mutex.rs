//! `Mutex`: a distributed lock with a fencing token.

use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, Result},
    queue,
    session::Session,
};

/// A distributed mutual-exclusion lock under a key prefix, held on behalf of a [`Session`].
///
/// **How.** `lock` puts `<prefix>/<lease>-<nonce>` attached to the session's lease (a transaction
/// that creates it only if absent) and waits until every key under the prefix with a lower create
/// revision is deleted: owners are served strictly in the order their keys were created. This is
/// the algorithm of etcd's own `clientv3/concurrency` mutex (the v3lock service runs it server-side);
/// running it client-side keeps every wait cancellable by the session's local deadline, so a
/// client cut off from etcd never believes it still holds a lock etcd has already handed on.
///
/// **Fencing token.** [`MutexGuard::token`] is the create revision of the holder's key. Holders
/// are served in create-revision order and a new key always gets a higher revision than every
/// existing one, so tokens strictly increase from one holder to the next, across processes. Pass
/// the token to the protected resource and have it reject writes carrying a lower token than the
/// highest it has seen: that is what makes a paused holder (GC, SIGSTOP) that wakes after its
/// lease expired harmless.
///
/// **Failure.** If the holder dies its lease expires after the TTL and the key goes with it. If
/// the session is lost or the key deleted while holding, [`MutexGuard::lost`] is cancelled.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> etcd_monitor_patterns::Result<()> {
/// use std::time::Duration;
/// use etcd_monitor_patterns::{Mutex, Session};
/// let session = Session::new(client, Duration::from_secs(10)).await?;
/// let mutex = Mutex::new(&session, "/locks/defrag");
/// let guard = mutex.lock().await?;
/// println!("holding with fencing token {}", guard.token());
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Mutex {
    client: crate::queue::Etcd,
    lease_id: i64,
    lost: CancellationToken,
    prefix: String,
}

impl Mutex {
    /// A mutex under `prefix` whose keys are attached to `session`'s lease.
    pub fn new(session: &Session, prefix: &str) -> Self {
        Self {
            client: queue::Etcd(session.client()),
            lease_id: session.lease_id(),
            lost: session.lost(),
            prefix: queue::dir(prefix),
        }
    }

    /// Waits until the lock is held. Fails with [`Error::SessionLost`] if the session is lost
    /// while waiting. Dropping the future while it waits withdraws from the queue.
    pub async fn lock(&self) -> Result<MutexGuard> {
        let owned = self.enqueue().await?;
        queue::unless_lost(
            &self.lost,
            self.lease_id,
            queue::wait_deletes(&self.client, &self.prefix, owned.rev()),
        )
        .await?;
        Ok(self.guard(owned))
    }

    /// Takes the lock if nobody holds it or waits for it; fails with [`Error::Locked`] otherwise
    /// (never waits).
    pub async fn try_lock(&self) -> Result<MutexGuard> {
        let mut owned = self.enqueue().await?;
        let (before, _) = queue::last_before(&self.client, &self.prefix, owned.rev()).await?;
        if before.is_some() {
            owned.release().await?;
            return Err(Error::Locked {
                key: self.prefix.clone(),
            });
        }
        Ok(self.guard(owned))
    }

    async fn enqueue(&self) -> Result<queue::OwnedKey> {
        let key = format!("{}{:x}-{:016x}", self.prefix, self.lease_id, queue::nonce());
        let (rev, _) = queue::unless_lost(
            &self.lost,
            self.lease_id,
            queue::create_key(&self.client, &key, Vec::new(), self.lease_id),
        )
        .await?;
        Ok(queue::OwnedKey::new(self.client.clone(), key, rev))
    }

    fn guard(&self, owned: queue::OwnedKey) -> MutexGuard {
        let lost = self.lost.child_token();
        queue::cancel_on_delete(
            self.client.clone(),
            owned.key().to_string(),
            owned.rev(),
            lost.clone(),
        );
        MutexGuard { owned, lost }
    }
}

/// A held [`Mutex`]. Dropping it releases the lock (best effort, in the background; if that
/// fails the lease still frees it); [`MutexGuard::unlock`] releases it and reports errors.
#[derive(Debug)]
pub struct MutexGuard {
    owned: queue::OwnedKey,
    lost: CancellationToken,
}

impl MutexGuard {
    /// The fencing token: the create revision of the holder's key, strictly increasing from one
    /// holder to the next.
    pub fn token(&self) -> i64 {
        self.owned.rev()
    }

    /// The holder's key in etcd.
    pub fn key(&self) -> &str {
        self.owned.key()
    }

    /// Cancelled when the lock is lost — the session behind it is lost, or the lock key was
    /// deleted (e.g. by an operator) — and when the guard is released: stop using the resource.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Releases the lock.
    pub async fn unlock(mut self) -> Result<()> {
        self.lost.cancel();
        self.owned.release().await
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        // Ends the key watcher; the owned key deletes itself.
        self.lost.cancel();
    }
}
