//! `Session`: a lease kept alive in the background, with a local deadline.

use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, EtcdContext, Result};

/// A lease that a background task keeps alive, and the token that is cancelled the moment the
/// lease can no longer be trusted.
///
/// Everything the patterns put on behalf of an owner (lock keys, candidate keys, service
/// instances) is attached to a session's lease, so a process that dies frees them within the TTL.
///
/// The session is **lost** — [`Session::lost`] is cancelled, for good — when any of these happen:
/// - etcd answers a keep-alive with TTL 0 (the lease expired or was revoked);
/// - no keep-alive has succeeded for the TTL: the local deadline is `sent + ttl - margin`, where
///   `sent` is when the last *successful* keep-alive request left this process and `margin` is a
///   tenth of the TTL (at least 500 ms, at most half of it). etcd started that lease period no
///   earlier than `sent`, so the local deadline passes before etcd can expire the lease and hand
///   what it protected to someone else; the margin absorbs a loaded scheduler and clock-rate
///   drift between the hosts. This is what makes a holder cut off from etcd stop acting before a
///   successor can start.
///
/// ```no_run
/// # async fn demo() -> Result<(), etcd_monitor_patterns::Error> {
/// use std::time::Duration;
/// use etcd_monitor_patterns::Session;
/// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await
///     .map_err(|source| etcd_monitor_patterns::Error::Etcd { op: "connect", source })?;
/// let session = Session::new(client, Duration::from_secs(10)).await?;
/// let lost = session.lost();
/// tokio::select! {
///     _ = lost.cancelled() => eprintln!("lease gone; stop acting on it"),
///     _ = tokio::time::sleep(Duration::from_secs(1)) => {}
/// }
/// session.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Session {
    client: crate::queue::Etcd,
    lease_id: i64,
    ttl: Duration,
    lost: CancellationToken,
    deadline: watch::Receiver<Instant>,
    stop: CancellationToken,
}

impl Session {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and starts keeping it alive.
    pub async fn new(client: Client, ttl: Duration) -> Result<Self> {
        let secs = ttl.as_secs();
        if secs == 0 {
            return Err(Error::InvalidArgument {
                field: "ttl",
                reason: "a lease TTL is at least one second".to_string(),
            });
        }
        let sent = Instant::now();
        let grant = client
            .lease_client()
            .grant(secs as i64, None)
            .await
            .op("grant lease")?;
        let lease_id = grant.id();
        let granted = Duration::from_secs(grant.ttl().max(1) as u64);
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let (deadline_tx, deadline) = watch::channel(sent + granted - safety_margin(granted));
        tokio::spawn(keep_alive_loop(
            client.clone(),
            lease_id,
            granted,
            sent + granted - safety_margin(granted),
            lost.clone(),
            stop.clone(),
            deadline_tx,
        ));
        tracing::debug!(
            lease_id,
            ttl_s = granted.as_secs(),
            "Session lease granted."
        );
        Ok(Self {
            client: crate::queue::Etcd(client),
            lease_id,
            ttl: granted,
            lost,
            deadline,
            stop,
        })
    }

    /// The lease id every key of this session is attached to.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The client the session was made with (clones share one connection).
    pub fn client(&self) -> Client {
        self.client.0.clone()
    }

    /// A token cancelled when the session is lost (see the type's documentation). Cheap to clone.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lease is still trusted.
    pub fn is_alive(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// The local deadline: the instant after which the lease may have expired in etcd.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// Stops the keep-alive and revokes the lease, which deletes every key attached to it.
    pub async fn close(self) -> Result<()> {
        self.stop.cancel();
        self.lost.cancel();
        self.client
            .lease_client()
            .revoke(self.lease_id)
            .await
            .op("revoke lease")?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The keep-alive stops; the lease expires within its TTL unless `close` revoked it.
        self.stop.cancel();
        self.lost.cancel();
    }
}

/// How long before the lease can expire in etcd the session gives up locally.
fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(500)).min(ttl / 2)
}

async fn keep_alive_loop(
    client: Client,
    lease_id: i64,
    ttl: Duration,
    mut deadline: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
    deadline_tx: watch::Sender<Instant>,
) {
    let interval = (ttl / 3).max(Duration::from_millis(200));
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let attempt = async {
            match stream.as_mut() {
                Some((keeper, responses)) => {
                    keeper.keep_alive().await?;
                    responses.message().await.map(|r| r.map(|r| r.ttl()))
                }
                None => {
                    // `keep_alive` sends the first request and waits for its answer.
                    let (keeper, responses) = client.lease_client().keep_alive(lease_id).await?;
                    stream = Some((keeper, responses));
                    Ok(Some(ttl.as_secs() as i64))
                }
            }
        };
        let wait = deadline.saturating_duration_since(sent).min(interval);
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(wait, attempt) => r,
        };
        match outcome {
            Ok(Ok(Some(left))) if left > 0 => {
                let left = Duration::from_secs(left as u64);
                deadline = sent + left - safety_margin(left);
                deadline_tx.send_replace(deadline);
                next = sent + interval;
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease_id, "Session lease expired in etcd.");
                break;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(reason)))
                if reason.contains("not found") =>
            {
                tracing::warn!(lease_id, "Session lease no longer exists in etcd.");
                break;
            }
            other => {
                crate::stats::keepalive_failure();
                let error = match other {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(None)) => "keep-alive stream closed".to_string(),
                    _ => "keep-alive timed out".to_string(),
                };
                tracing::debug!(lease_id, %error, "Session keep-alive failed; retrying.");
                stream = None;
                next = Instant::now() + Duration::from_millis(200);
            }
        }
    }
    crate::stats::session_lost();
    tracing::warn!(lease_id, "Session lost: its lease is no longer kept alive.");
    lost.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_margin_is_a_tenth_within_bounds() {
        assert_eq!(
            safety_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(3)),
            Duration::from_millis(500)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(60)),
            Duration::from_secs(6)
        );
    }
}
