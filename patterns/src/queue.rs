//! The revision-ordered queue under lock, read-write lock and election: every owner puts a key
//! under a prefix, attached to its session's lease; the key's create revision is its place in the
//! queue, and an owner proceeds once every blocking key with a lower create revision is gone.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, EtcdContext, Result};

/// Runs `fut` unless `lost` is cancelled first.
pub(crate) async fn unless_lost<T>(
    lost: &CancellationToken,
    lease_id: i64,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        biased;
        _ = lost.cancelled() => Err(Error::SessionLost { lease_id }),
        r = fut => r,
    }
}

/// Creates `key` with `value` attached to `lease_id` unless it exists; returns its create
/// revision and the header revision of the transaction.
pub(crate) async fn create_key(
    client: &Client,
    key: &str,
    value: Vec<u8>,
    lease_id: i64,
) -> Result<(i64, i64)> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease_id)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let resp = client.kv_client().txn(txn).await.op("create queue key")?;
    let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    if resp.succeeded() {
        return Ok((header_rev, header_rev));
    }
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op
            && let Some(kv) = get.kvs().first()
        {
            return Ok((kv.create_revision(), header_rev));
        }
    }
    Err(Error::InvalidArgument {
        field: "key",
        reason: format!("{key} vanished while it was being created"),
    })
}

/// Deletes `key` if it still has create revision `rev` (never someone else's later key).
pub(crate) async fn delete_own(client: &Client, key: &str, rev: i64) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
    client.kv_client().txn(txn).await.op("delete queue key")?;
    Ok(())
}

/// Best-effort delete from a `Drop`: spawned when a runtime is there, counted when it fails.
pub(crate) fn delete_own_detached(client: Client, key: String, rev: i64) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                if let Err(error) = delete_own(&client, &key, rev).await {
                    crate::stats::cleanup_failure();
                    tracing::warn!(%key, %error, "Releasing a key failed; its lease will free it.");
                }
            });
        }
        Err(_) => crate::stats::cleanup_failure(),
    }
}

/// The highest-create-revision key under `prefix` created before `before`, if any.
pub(crate) async fn last_before(
    client: &Client,
    prefix: &str,
    before: i64,
) -> Result<(Option<String>, i64)> {
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1)
        .with_keys_only()
        .with_max_create_revision(before - 1);
    let resp = client
        .kv_client()
        .get(prefix, Some(opts))
        .await
        .op("list waiters")?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    let key = resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned());
    Ok((key, rev))
}

/// Waits until no key under `prefix` has a create revision lower than `before`.
pub(crate) async fn wait_deletes(client: &Client, prefix: &str, before: i64) -> Result<()> {
    // Errors are retried: the caller bounds the wait by its session, which is lost when etcd
    // stays unreachable for the TTL.
    loop {
        let step = async {
            let (key, rev) = last_before(client, prefix, before).await?;
            match key {
                None => Ok(true),
                Some(key) => wait_delete(client, &key, rev + 1).await.map(|()| false),
            }
        };
        match step.await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(%prefix, %error, "Waiting in the queue failed; retrying.");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until `key` is deleted at or after revision `from`.
pub(crate) async fn wait_delete(client: &Client, key: &str, from: i64) -> Result<()> {
    let mut stream = client
        .watch_client()
        .watch(key, Some(WatchOptions::new().with_start_revision(from)))
        .await
        .op("watch queue key")?;
    loop {
        match stream.message().await.op("watch queue key")? {
            Some(resp) => {
                if resp.canceled() {
                    // Compacted past `from`, or the member refused; re-check from a fresh read.
                    return Ok(());
                }
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

/// The first key (lowest create revision) under `prefix`, with its value and create revision.
pub(crate) async fn first_key(
    client: &Client,
    prefix: &str,
) -> Result<(Option<(String, Vec<u8>, i64)>, i64)> {
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let resp = client
        .kv_client()
        .get(prefix, Some(opts))
        .await
        .op("get first key")?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((
        resp.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
                kv.create_revision(),
            )
        }),
        rev,
    ))
}

/// A random suffix that makes each acquisition's key unique within a session.
pub(crate) fn nonce() -> u64 {
    rand::random()
}

/// `prefix` with exactly one trailing `/`.
pub(crate) fn dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

/// A queue key this process owns: deleted when dropped (best effort, in the background; the
/// lease frees it if that fails), or explicitly by [`OwnedKey::release`].
#[derive(Debug)]
pub(crate) struct OwnedKey {
    client: crate::queue::Etcd,
    key: Option<String>,
    rev: i64,
}

impl OwnedKey {
    pub(crate) fn new(client: Etcd, key: String, rev: i64) -> Self {
        Self {
            client,
            key: Some(key),
            rev,
        }
    }

    pub(crate) fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }

    pub(crate) fn rev(&self) -> i64 {
        self.rev
    }

    pub(crate) async fn release(&mut self) -> Result<()> {
        match self.key.take() {
            Some(key) => delete_own(&self.client, &key, self.rev).await,
            None => Ok(()),
        }
    }
}

impl Drop for OwnedKey {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            delete_own_detached(self.client.0.clone(), key, self.rev);
        }
    }
}

/// `etcd_client::Client` with a `Debug` impl, so the patterns' types can derive `Debug`.
#[derive(Clone)]
pub(crate) struct Etcd(pub(crate) Client);

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("etcd_client::Client")
    }
}

impl std::ops::Deref for Etcd {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

/// Returns once `key` (created at `rev`) is deleted or replaced; retries through stream errors
/// (re-watching from the last revision seen, and checking the key directly after each break).
pub(crate) async fn until_deleted(client: &Client, key: &str, rev: i64) {
    let mut from = rev;
    loop {
        let attempt = async {
            let mut stream = client
                .watch_client()
                .watch(key, Some(WatchOptions::new().with_start_revision(from)))
                .await
                .op("watch owned key")?;
            while let Some(resp) = stream.message().await.op("watch owned key")? {
                if resp.canceled() {
                    break;
                }
                for event in resp.events() {
                    if let Some(kv) = event.kv() {
                        from = from.max(kv.mod_revision() + 1);
                    }
                    if event.event_type() == EventType::Delete {
                        return Ok::<bool, Error>(true);
                    }
                }
            }
            Ok(false)
        };
        match attempt.await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(%key, %error, "Watching an owned key failed; retrying.");
            }
        }
        crate::stats::watch_resume();
        // The stream ended: ask etcd directly whether the key is still ours.
        if let Ok(resp) = client.kv_client().get(key, None).await
            && resp.kvs().first().map(|kv| kv.create_revision()) != Some(rev)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Cancels `lost` when `key` is deleted; ends when `lost` is cancelled for another reason.
pub(crate) fn cancel_on_delete(client: Etcd, key: String, rev: i64, lost: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = lost.cancelled() => {}
            _ = until_deleted(&client, &key, rev) => {
                tracing::warn!(%key, "An owned key was deleted by someone else.");
                lost.cancel();
            }
        }
    });
}
