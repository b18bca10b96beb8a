//! `Config`: typed values under a prefix, and a watch that resumes from the last revision seen.

use std::{collections::VecDeque, time::Duration};

use etcd_client::{Client, EventType, GetOptions};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    error::{Error, EtcdContext, Result},
    queue,
    resume::ResumingWatch,
};

/// Configuration values stored as JSON at `<prefix>/<key>`.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> etcd_monitor_patterns::Result<()> {
/// use etcd_monitor_patterns::Config;
/// let config = Config::new(client, "/config/collector");
/// config.set("scrape_interval_s", &15u32).await?;
/// let interval: Option<u32> = config.get("scrape_interval_s").await?;
/// let mut watch = config.watch().await?;
/// let change = watch.next().await?; // resumes by itself across disconnects and etcd restarts
/// println!("{} changed at revision {}", change.key, change.revision);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    client: crate::queue::Etcd,
    prefix: String,
}

/// One change seen by [`ConfigWatch::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The key relative to the prefix.
    pub key: String,
    /// The new JSON value; `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The etcd revision of the change (several changes share one revision when a transaction
    /// wrote several keys).
    pub revision: i64,
}

impl ConfigChange {
    /// Decodes the new value as `T` (`None` when deleted).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.value
            .as_deref()
            .map(|bytes| {
                serde_json::from_slice(bytes).map_err(|source| Error::Json {
                    key: self.key.clone(),
                    source,
                })
            })
            .transpose()
    }
}

impl Config {
    /// Configuration under `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client: queue::Etcd(client),
            prefix: queue::dir(prefix),
        }
    }

    fn full_key(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(Error::InvalidArgument {
                field: "key",
                reason: "a config key is non-empty".to_string(),
            });
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// The value at `key` decoded as `T`, or `None` when absent.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.get_with_revision(key).await?.map(|(v, _)| v))
    }

    /// The value at `key` and its mod revision.
    pub async fn get_with_revision<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>> {
        let full = self.full_key(key)?;
        let resp = self
            .client
            .kv_client()
            .get(full.as_str(), None)
            .await
            .op("get config")?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                let value = serde_json::from_slice(kv.value())
                    .map_err(|source| Error::Json { key: full, source })?;
                Ok(Some((value, kv.mod_revision())))
            }
        }
    }

    /// Stores `value` as JSON at `key`; returns the revision of the write.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<i64> {
        let full = self.full_key(key)?;
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Json {
            key: full.clone(),
            source,
        })?;
        let resp = self
            .client
            .kv_client()
            .put(full, bytes, None)
            .await
            .op("set config")?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Deletes `key`; returns the revision of the delete.
    pub async fn delete(&self, key: &str) -> Result<i64> {
        let full = self.full_key(key)?;
        let resp = self
            .client
            .kv_client()
            .delete(full, None)
            .await
            .op("delete config")?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Every key under the prefix with its raw JSON value, and the revision read at.
    pub async fn list(&self) -> Result<(Vec<(String, Vec<u8>)>, i64)> {
        let resp = self
            .client
            .kv_client()
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .op("list config")?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key())
                        .trim_start_matches(self.prefix.as_str())
                        .to_string(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok((items, rev))
    }

    /// Watches changes made after now.
    pub async fn watch(&self) -> Result<ConfigWatch> {
        let (_, rev) = self.list().await?;
        Ok(self.watch_from(rev + 1))
    }

    /// Watches changes from `revision` on (inclusive), e.g. one past the last revision a
    /// previous run processed.
    pub fn watch_from(&self, revision: i64) -> ConfigWatch {
        ConfigWatch {
            watch: ResumingWatch::new(
                self.client.clone(),
                self.prefix.clone(),
                "watch config",
                true,
            ),
            next_rev: revision,
            pending: VecDeque::new(),
        }
    }
}

/// A watch on a [`Config`] prefix that survives disconnects and etcd restarts.
///
/// Every change is returned exactly once, in revision order: after a stream error the watch is
/// re-created with `start_revision` = one past the last revision whose events were all received
/// (etcd sends all events of one revision in one response), so nothing is missed and nothing
/// repeated. If etcd compacted those revisions meanwhile, [`ConfigWatch::next`] returns
/// [`Error::Compacted`]: re-read with [`Config::list`] and start again.
#[derive(Debug)]
pub struct ConfigWatch {
    watch: ResumingWatch,
    next_rev: i64,
    pending: VecDeque<ConfigChange>,
}

impl ConfigWatch {
    /// The revision the watch resumes from.
    pub fn next_revision(&self) -> i64 {
        self.next_rev
    }

    /// The next change; waits (retrying through errors) until there is one.
    pub async fn next(&mut self) -> Result<ConfigChange> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            match self.poll().await {
                Ok(()) => {}
                Err(error @ Error::Compacted { .. }) => return Err(error),
                Err(error) => {
                    tracing::info!(prefix = %self.watch.prefix(), from = self.next_rev, %error, "Config watch interrupted; resuming from the last revision seen.");
                    self.watch.interrupted(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn poll(&mut self) -> Result<()> {
        let resp = self.watch.message(self.next_rev).await?;
        let prefix = self.watch.prefix();
        let mut max_rev = 0;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            if kv.mod_revision() < self.next_rev {
                // Already delivered before a resume; never repeat.
                continue;
            }
            max_rev = max_rev.max(kv.mod_revision());
            self.pending.push_back(ConfigChange {
                key: String::from_utf8_lossy(kv.key())
                    .trim_start_matches(prefix)
                    .to_string(),
                value: match event.event_type() {
                    EventType::Put => Some(kv.value().to_vec()),
                    EventType::Delete => None,
                },
                revision: kv.mod_revision(),
            });
        }
        if max_rev > 0 {
            self.next_rev = max_rev + 1;
        }
        Ok(())
    }
}
