//! Watching configured key prefixes and publishing PUT/DELETE events on the Subscribe stream.
//!
//! A watch that breaks (connection lost, member gone, server cancel) resumes at the revision
//! after the last one seen, so nothing is delivered twice and nothing is skipped. If etcd has
//! compacted past that revision the history is gone: the watch resumes at the compaction
//! revision and the skipped span is counted (`etcdmon_watch_gaps_total`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{EventType, WatchOptions};
use etcd_monitor_proto::v1::{Event, WatchEvent, event::Payload, watch_event};

use super::Fanout;
use crate::model::sync;
use crate::{model::cluster::ClusterHandle, sources::etcd::client::connect};

/// Per (cluster, prefix) counts.
#[derive(Debug, Default)]
pub struct WatchCounters {
    inner: Mutex<BTreeMap<(String, String), PrefixCounts>>,
}

/// Counts of one watched prefix.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCounts {
    /// PUT events.
    pub puts: u64,
    /// DELETE events.
    pub deletes: u64,
    /// Times the watch resumed after breaking.
    pub resumes: u64,
    /// Times compaction made a resume skip history.
    pub gaps: u64,
    /// Last revision seen.
    pub last_revision: i64,
}

impl WatchCounters {
    fn update(&self, cluster: &str, prefix: &str, f: impl FnOnce(&mut PrefixCounts)) {
        let mut inner = sync::lock(&self.inner);
        f(inner
            .entry((cluster.to_string(), prefix.to_string()))
            .or_default());
    }

    /// Every prefix's counts.
    pub fn snapshot(&self) -> Vec<((String, String), PrefixCounts)> {
        let inner = sync::lock(&self.inner);
        inner.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Converts one etcd watch event.
pub fn to_event(
    cluster: &str,
    prefix: &str,
    e: &etcd_client::Event,
    with_prev: bool,
) -> Option<Event> {
    let kv = e.kv()?;
    let kind = match e.event_type() {
        EventType::Put => watch_event::Type::Put,
        EventType::Delete => watch_event::Type::Delete,
    };
    Some(Event {
        cluster: cluster.to_string(),
        timestamp_unix_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        payload: Some(Payload::Watch(WatchEvent {
            r#type: kind as i32,
            key: kv.key().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
            value_size: kv.value().len() as u64,
            prev_value: if with_prev {
                e.prev_kv().map(|p| p.value().to_vec()).unwrap_or_default()
            } else {
                Vec::new()
            },
            prefix: prefix.to_string(),
        })),
        ..Event::default()
    })
}

/// Watches `prefix` in `cluster` until the task is dropped, resuming after every break.
pub async fn run(
    cluster: Arc<ClusterHandle>,
    prefix: String,
    prev_kv: bool,
    fanout: Arc<Fanout>,
    counters: Arc<WatchCounters>,
) {
    let mut w = Watcher {
        name: cluster.name().to_string(),
        prefix,
        prev_kv,
        counters,
        next_revision: 0, // 0: from now
    };
    let mut attempt: u32 = 0;
    loop {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
        }
        attempt += 1;
        let Some(url) = cluster
            .config
            .endpoints
            .get(attempt as usize % cluster.config.endpoints.len().max(1))
            .cloned()
        else {
            return;
        };
        let Some(mut stream) = w.open(&cluster, &url).await else {
            continue;
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(cluster = %w.name, prefix = %w.prefix, error = %e, "Watch stream broke; resuming.");
                    break;
                }
            };
            attempt = 0;
            let Some(events) = w.take(&response) else {
                break;
            };
            fanout.publish(&events);
        }
    }
}

/// One watch of a prefix across its restarts: where to resume, and its counters.
struct Watcher {
    name: String,
    prefix: String,
    prev_kv: bool,
    counters: Arc<WatchCounters>,
    /// The first revision not yet delivered; 0 before the first answer (watch from now).
    next_revision: i64,
}

impl Watcher {
    /// Connects to `url` and starts the watch at `next_revision` (counted as a resume when it
    /// is not the first start); `None` (logged) when either fails.
    async fn open(&self, cluster: &ClusterHandle, url: &str) -> Option<etcd_client::WatchStream> {
        let (name, prefix) = (&self.name, &self.prefix);
        let mut client = match connect(&cluster.config, url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(cluster = %name, %prefix, error = %e, "Watch connect failed; retrying.");
                return None;
            }
        };
        let mut options = WatchOptions::new().with_prefix().with_progress_notify();
        if self.prev_kv {
            options = options.with_prev_key();
        }
        if self.next_revision > 0 {
            options = options.with_start_revision(self.next_revision);
        }
        let stream = match client.watch(prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(cluster = %name, %prefix, error = %e, "Watch failed to start; retrying.");
                return None;
            }
        };
        if self.next_revision > 0 {
            self.counters.update(name, prefix, |c| c.resumes += 1);
            tracing::info!(cluster = %name, %prefix, from = self.next_revision, "Watch resumed.");
        }
        Some(stream)
    }

    /// The events of one answer (counted), moving `next_revision` past them, past a progress
    /// notification or, for a new watch, past its creation revision; `None` when etcd canceled
    /// the watch (after a compaction past `next_revision`: the gap is counted and skipped).
    fn take(&mut self, response: &etcd_client::WatchResponse) -> Option<Vec<Event>> {
        let (name, prefix) = (&self.name, &self.prefix);
        if response.canceled() {
            let compacted = response.compact_revision();
            if compacted > 0 && compacted > self.next_revision {
                self.counters.update(name, prefix, |c| c.gaps += 1);
                tracing::warn!(cluster = %name, %prefix, from = self.next_revision, compacted, "Watch history compacted; events in between are lost.");
                self.next_revision = compacted;
            }
            return None;
        }
        let mut events = Vec::new();
        for e in response.events() {
            if let Some(kv) = e.kv() {
                self.next_revision = self.next_revision.max(kv.mod_revision() + 1);
            }
            if let Some(event) = to_event(name, prefix, e, self.prev_kv) {
                let is_put = matches!(e.event_type(), EventType::Put);
                let last = self.next_revision - 1;
                self.counters.update(name, prefix, |c| {
                    if is_put {
                        c.puts += 1
                    } else {
                        c.deletes += 1
                    }
                    c.last_revision = last;
                });
                events.push(event);
            }
        }
        if let Some(header) = response.header()
            && events.is_empty()
        {
            if response.created() {
                // Started "from now": history begins after the creation revision. A resumed
                // watch may still owe us events up to it, so it does not move.
                if self.next_revision == 0 {
                    self.next_revision = header.revision() + 1;
                }
            } else {
                // A progress notification: every event up to this revision was sent.
                self.next_revision = self.next_revision.max(header.revision() + 1);
            }
        }
        Some(events)
    }
}
