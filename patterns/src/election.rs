//! `Election`: leader election with proclaim, resign, observe and a leader-only task.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    sync::Arc,
    time::Duration,
};

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, EtcdContext, Result},
    queue,
    session::Session,
};

/// The current leader of an election as etcd has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's candidate key.
    pub key: String,
    /// The value the leader proclaimed (e.g. its address).
    pub value: Vec<u8>,
    /// The create revision of the leader's key: the term's fencing token.
    pub revision: i64,
}

/// Leader election under a key prefix (etcd's `clientv3/concurrency` election, client-side).
///
/// Candidates put `<prefix>/<lease>` attached to their session's lease; the candidate with the
/// lowest create revision leads. A campaign waits until every earlier candidate's key is gone.
///
/// A term ends — [`LeaderTerm::lost`] is cancelled and [`Election::is_leader`] turns `false` —
/// when the leader key is deleted (resign, lease expiry, an operator's `etcdctl del`) or when the
/// session is lost: lease expired, or no keep-alive succeeded for the TTL (the local deadline, see
/// [`Session`]). Because the local deadline passes before etcd can expire the lease, a leader cut
/// off from etcd stops before a successor can win.
///
/// ```no_run
/// # async fn demo(session: &etcd_monitor_patterns::Session) -> etcd_monitor_patterns::Result<()> {
/// use etcd_monitor_patterns::Election;
/// let election = Election::new(session, "/election/collector");
/// // Campaigns, runs the task while leading, drops it the moment leadership is lost.
/// let outcome = election
///     .run_while_leader("collector-a", |lost| async move {
///         while !lost.is_cancelled() {
///             // send notifications, run scheduled work…
///             tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///         }
///     })
///     .await;
/// match outcome {
///     Ok(()) => println!("task finished; resigned"),
///     Err(error) => println!("no longer leader: {error}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    client: crate::queue::Etcd,
    lease_id: i64,
    session_lost: CancellationToken,
    prefix: String,
    state: Arc<watch::Sender<bool>>,
}

impl Election {
    /// An election under `name` (a key prefix) for candidates of `session`.
    pub fn new(session: &Session, name: &str) -> Self {
        Self {
            client: queue::Etcd(session.client()),
            lease_id: session.lease_id(),
            session_lost: session.lost(),
            prefix: queue::dir(name),
            state: Arc::new(watch::channel(false).0),
        }
    }

    /// Whether this candidate leads now; changes as terms begin and end (e.g. for a gauge).
    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Waits until this candidate leads, then proclaims `value`. Dropping the future while it
    /// waits withdraws the candidacy.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<LeaderTerm> {
        let value = value.into();
        let key = format!("{}{:x}", self.prefix, self.lease_id);
        let (rev, _) = queue::unless_lost(
            &self.session_lost,
            self.lease_id,
            queue::create_key(&self.client, &key, value.clone(), self.lease_id),
        )
        .await?;
        let owned = queue::OwnedKey::new(self.client.clone(), key, rev);
        queue::unless_lost(
            &self.session_lost,
            self.lease_id,
            queue::wait_deletes(&self.client, &self.prefix, rev),
        )
        .await?;
        let term = LeaderTerm {
            election: self.clone(),
            owned: Some(owned),
            lost: self.session_lost.child_token(),
        };
        // Re-campaigning with the key left from an earlier term keeps the old value: set it.
        term.proclaim(value).await?;
        tokio::spawn(watch_term(
            self.client.clone(),
            term.owned_key().to_string(),
            rev,
            term.lost.clone(),
            self.session_lost.clone(),
            self.state.clone(),
        ));
        self.state.send_replace(true);
        tracing::info!(election = %self.prefix, revision = rev, "Leadership acquired.");
        Ok(term)
    }

    /// Campaigns, then runs `task` while leading. `task` gets a token cancelled when leadership
    /// is lost (for spawned sub-work); its future is also dropped at that moment. Returns the
    /// task's output after resigning, or [`Error::NotLeader`] / [`Error::SessionLost`] when
    /// leadership was lost first.
    pub async fn run_while_leader<F, Fut, T>(&self, value: impl Into<Vec<u8>>, task: F) -> Result<T>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T>,
    {
        let term = self.campaign(value).await?;
        let lost = term.lost();
        let fut = task(lost.clone());
        tokio::select! {
            biased;
            _ = lost.cancelled() => {
                if self.session_lost.is_cancelled() {
                    Err(Error::SessionLost { lease_id: self.lease_id })
                } else {
                    Err(Error::NotLeader { name: self.prefix.clone() })
                }
            }
            out = fut => {
                term.resign().await?;
                Ok(out)
            }
        }
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let (first, _) = queue::first_key(&self.client, &self.prefix).await?;
        Ok(first.map(|(key, value, revision)| Leader {
            key,
            value,
            revision,
        }))
    }

    /// A stream of leader changes: the first [`LeaderObserver::next`] returns the current
    /// leader, later calls wait for a different leader, a new proclaimed value, or a vacancy
    /// (`None`).
    pub fn observe(&self) -> LeaderObserver {
        LeaderObserver {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            candidates: BTreeMap::new(),
            next_rev: 0,
            stream: None,
            pending: VecDeque::new(),
            last: None,
        }
    }
}

/// Cancels the term when its key is deleted; marks the election not led when the term ends.
async fn watch_term(
    client: crate::queue::Etcd,
    key: String,
    rev: i64,
    lost: CancellationToken,
    session_lost: CancellationToken,
    state: Arc<watch::Sender<bool>>,
) {
    let deleted = crate::queue::until_deleted(&client, &key, rev);
    let by_delete = tokio::select! {
        biased;
        _ = lost.cancelled() => false,
        _ = deleted => true,
    };
    lost.cancel();
    if by_delete {
        tracing::warn!(%key, "Leader key deleted; leadership lost.");
    }
    if by_delete || session_lost.is_cancelled() {
        crate::stats::leadership_lost();
    }
    state.send_replace(false);
}

/// One term of leadership, returned by [`Election::campaign`].
#[derive(Debug)]
pub struct LeaderTerm {
    election: Election,
    owned: Option<queue::OwnedKey>,
    lost: CancellationToken,
}

impl LeaderTerm {
    /// The create revision of the leader key: the term's fencing token, higher for every later
    /// term.
    pub fn revision(&self) -> i64 {
        self.owned.as_ref().map(queue::OwnedKey::rev).unwrap_or(0)
    }

    fn owned_key(&self) -> &str {
        self.owned
            .as_ref()
            .map(queue::OwnedKey::key)
            .unwrap_or_default()
    }

    /// Cancelled the moment leadership is lost (key deleted, session lost, resigned).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the term is still on.
    pub fn is_leader(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Replaces the leader's value, only if this term still holds the leader key.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let key = self.owned_key().to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                self.revision(),
            )])
            .and_then([TxnOp::put(
                key.as_str(),
                value.into(),
                Some(PutOptions::new().with_lease(self.election.lease_id)),
            )]);
        let resp = queue::unless_lost(&self.lost, self.election.lease_id, async {
            self.election
                .client
                .kv_client()
                .txn(txn)
                .await
                .op("proclaim")
        })
        .await?;
        if !resp.succeeded() {
            self.lost.cancel();
            return Err(Error::NotLeader {
                name: self.election.prefix.clone(),
            });
        }
        Ok(())
    }

    /// Gives up leadership: deletes the leader key so the next candidate takes over at once.
    pub async fn resign(mut self) -> Result<()> {
        self.lost.cancel();
        self.election.state.send_replace(false);
        match self.owned.take() {
            Some(mut owned) => owned.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for LeaderTerm {
    fn drop(&mut self) {
        // The owned key (if still here) is deleted in the background by its own Drop.
        self.lost.cancel();
        if self.owned.is_some() {
            self.election.state.send_replace(false);
        }
    }
}

/// Leader changes of an election, from [`Election::observe`], in revision order.
///
/// The observer keeps the election's candidate keys in a local map, fed by one watch on the
/// prefix, and reports the leader (lowest create revision) every time it changes: no change is
/// skipped, however short a term. After a stream error it resumes from the last revision seen;
/// if that was compacted it re-reads the candidates.
#[derive(Debug)]
pub struct LeaderObserver {
    client: crate::queue::Etcd,
    prefix: String,
    candidates: BTreeMap<String, (i64, Vec<u8>)>,
    next_rev: i64,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<Option<Leader>>,
    last: Option<Option<Leader>>,
}

impl LeaderObserver {
    /// The next leader (`None` for a vacancy) that differs from the last one returned; the
    /// first call returns the current state. Errors are retried; the call returns with a change.
    pub async fn next(&mut self) -> Option<Leader> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return change;
            }
            let step = if self.last.is_none() || self.next_rev == 0 {
                self.resync().await
            } else {
                self.poll().await
            };
            if let Err(error) = step {
                crate::stats::watch_resume();
                tracing::debug!(prefix = %self.prefix, %error, "Observing the election failed; resuming.");
                self.stream = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn current(&self) -> Option<Leader> {
        self.candidates
            .iter()
            .min_by_key(|(_, (create, _))| *create)
            .map(|(key, (create, value))| Leader {
                key: key.clone(),
                value: value.clone(),
                revision: *create,
            })
    }

    fn emit_if_changed(&mut self) {
        let now = self.current();
        if self.last.as_ref() != Some(&now) {
            self.last = Some(now.clone());
            self.pending.push_back(now);
        }
    }

    async fn resync(&mut self) -> Result<()> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .op("observe election")?;
        self.candidates = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    (kv.create_revision(), kv.value().to_vec()),
                )
            })
            .collect();
        self.next_rev = resp.header().map(|h| h.revision()).unwrap_or(0) + 1;
        self.stream = None;
        self.emit_if_changed();
        Ok(())
    }

    async fn poll(&mut self) -> Result<()> {
        if self.stream.is_none() {
            let stream = self
                .client
                .watch_client()
                .watch(
                    self.prefix.as_str(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(self.next_rev),
                    ),
                )
                .await
                .op("observe election")?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let Some(resp) = stream.message().await.op("observe election")? else {
            self.stream = None;
            return Ok(());
        };
        if resp.canceled() {
            // Compacted or refused: start over from a fresh read.
            self.next_rev = 0;
            self.stream = None;
            return Ok(());
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.next_rev = self.next_rev.max(kv.mod_revision() + 1);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    self.candidates
                        .insert(key, (kv.create_revision(), kv.value().to_vec()));
                }
                EventType::Delete => {
                    self.candidates.remove(&key);
                }
            }
            self.emit_if_changed();
        }
        Ok(())
    }
}
