//! `ServiceRegistry`: service discovery with lease-backed registrations and client-side picking.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use etcd_client::{Client, EventType, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, EtcdContext, Result},
    queue,
    resume::ResumingWatch,
    session::Session,
};

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the service (e.g. the pod name).
    pub id: String,
    /// Where to reach it, e.g. `10.0.0.7:8080`.
    pub addr: String,
    /// Free-form labels (zone, version, …).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A change seen by [`ServiceWatcher::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// An instance registered or changed.
    Up(Instance),
    /// An instance deregistered or its lease expired (its process died).
    Down {
        /// The instance id.
        id: String,
    },
}

/// Service discovery under a key prefix: instances live at `<prefix>/<service>/<id>` as JSON,
/// attached to their session's lease, so a dead instance disappears within the TTL.
///
/// ```no_run
/// # async fn demo(session: &etcd_monitor_patterns::Session) -> etcd_monitor_patterns::Result<()> {
/// use etcd_monitor_patterns::{Instance, ServiceRegistry};
/// let registry = ServiceRegistry::new(session.client(), "/services");
/// let me = Instance { id: "api-1".into(), addr: "10.0.0.7:8080".into(), metadata: Default::default() };
/// registry.register(session, "api", &me).await?;
/// let mut watcher = registry.watch("api").await?;
/// println!("{:?}", watcher.pick_round_robin());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceRegistry {
    client: crate::queue::Etcd,
    prefix: String,
}

impl ServiceRegistry {
    /// A registry under `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client: queue::Etcd(client),
            prefix: queue::dir(prefix),
        }
    }

    fn service_dir(&self, service: &str) -> Result<String> {
        if service.is_empty() || service.contains('/') {
            return Err(Error::InvalidArgument {
                field: "service",
                reason: format!("{service:?} must be non-empty and contain no '/'"),
            });
        }
        Ok(format!("{}{service}/", self.prefix))
    }

    /// Registers `instance` under `service` for as long as `session` lives.
    pub async fn register(
        &self,
        session: &Session,
        service: &str,
        instance: &Instance,
    ) -> Result<()> {
        if instance.id.is_empty() || instance.id.contains('/') {
            return Err(Error::InvalidArgument {
                field: "instance.id",
                reason: format!("{:?} must be non-empty and contain no '/'", instance.id),
            });
        }
        let key = format!("{}{}", self.service_dir(service)?, instance.id);
        let value = serde_json::to_vec(instance).map_err(|source| Error::Json {
            key: key.clone(),
            source,
        })?;
        queue::unless_lost(&session.lost(), session.lease_id(), async {
            self.client
                .kv_client()
                .put(
                    key.as_str(),
                    value,
                    Some(PutOptions::new().with_lease(session.lease_id())),
                )
                .await
                .op("register instance")
        })
        .await?;
        Ok(())
    }

    /// Removes an instance at once (instead of waiting for its lease).
    pub async fn deregister(&self, service: &str, id: &str) -> Result<()> {
        let key = format!("{}{id}", self.service_dir(service)?);
        self.client
            .kv_client()
            .delete(key, None)
            .await
            .op("deregister instance")?;
        Ok(())
    }

    /// The instances registered now, by id, and the revision read at.
    pub async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        Ok(self.snapshot(service).await?.0.into_values().collect())
    }

    async fn snapshot(&self, service: &str) -> Result<(BTreeMap<String, Instance>, i64)> {
        let dir = self.service_dir(service)?;
        let resp = self
            .client
            .kv_client()
            .get(dir.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .op("discover")?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut map = BTreeMap::new();
        for kv in resp.kvs() {
            if let Ok(instance) = serde_json::from_slice::<Instance>(kv.value()) {
                map.insert(instance.id.clone(), instance);
            } else {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "Skipping a registry entry that is not an instance.");
            }
        }
        Ok((map, rev))
    }

    /// Watches `service`: the watcher starts from the current instances and follows changes,
    /// resuming after stream errors from the last revision it saw.
    pub async fn watch(&self, service: &str) -> Result<ServiceWatcher> {
        let (instances, rev) = self.snapshot(service).await?;
        let dir = self.service_dir(service)?;
        Ok(ServiceWatcher {
            client: self.client.clone(),
            watch: ResumingWatch::new(self.client.clone(), dir.clone(), "watch service", false),
            dir,
            instances,
            next_rev: rev + 1,
            pending: Default::default(),
            cursor: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// A live view of one service's instances, with load-balancing picks over it.
#[derive(Debug)]
pub struct ServiceWatcher {
    client: crate::queue::Etcd,
    dir: String,
    instances: BTreeMap<String, Instance>,
    watch: ResumingWatch,
    next_rev: i64,
    pending: std::collections::VecDeque<ServiceEvent>,
    cursor: Arc<AtomicUsize>,
}

impl ServiceWatcher {
    /// The instances as of the last event applied, ordered by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances.values().cloned().collect()
    }

    /// Round-robin over the current instances (ordered by id); `None` when there are none.
    pub fn pick_round_robin(&self) -> Option<Instance> {
        if self.instances.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.instances.len();
        self.instances.values().nth(i).cloned()
    }

    /// A uniformly random current instance; `None` when there are none.
    pub fn pick_random(&self) -> Option<Instance> {
        if self.instances.is_empty() {
            return None;
        }
        let i = rand::random_range(0..self.instances.len());
        self.instances.values().nth(i).cloned()
    }

    /// Waits for the next change and applies it to [`ServiceWatcher::instances`]. Stream errors
    /// are retried from the last revision seen, so no change is missed.
    pub async fn next(&mut self) -> Result<ServiceEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                match &event {
                    ServiceEvent::Up(instance) => {
                        self.instances.insert(instance.id.clone(), instance.clone());
                    }
                    ServiceEvent::Down { id } => {
                        self.instances.remove(id);
                    }
                }
                return Ok(event);
            }
            match self.poll_stream().await {
                Ok(()) => {}
                Err(Error::Compacted { .. }) => {
                    // Too far behind to replay: resynchronise from a fresh snapshot.
                    self.resync().await?;
                }
                Err(error) => {
                    tracing::debug!(dir = %self.dir, %error, "Registry watch failed; resuming.");
                    self.watch.interrupted(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn poll_stream(&mut self) -> Result<()> {
        let resp = self.watch.message(self.next_rev).await?;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.next_rev = self.next_rev.max(kv.mod_revision() + 1);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let id = key.trim_start_matches(self.dir.as_str()).to_string();
            match event.event_type() {
                EventType::Put => match serde_json::from_slice::<Instance>(kv.value()) {
                    Ok(instance) => self.pending.push_back(ServiceEvent::Up(instance)),
                    Err(_) => {
                        tracing::warn!(%key, "Skipping a registry entry that is not an instance.")
                    }
                },
                EventType::Delete => self.pending.push_back(ServiceEvent::Down { id }),
            }
        }
        Ok(())
    }

    async fn resync(&mut self) -> Result<()> {
        let resp = self
            .client
            .kv_client()
            .get(self.dir.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .op("discover")?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut fresh = BTreeMap::new();
        for kv in resp.kvs() {
            if let Ok(instance) = serde_json::from_slice::<Instance>(kv.value()) {
                fresh.insert(instance.id.clone(), instance);
            }
        }
        for id in self.instances.keys() {
            if !fresh.contains_key(id) {
                self.pending
                    .push_back(ServiceEvent::Down { id: id.clone() });
            }
        }
        for (id, instance) in &fresh {
            if self.instances.get(id) != Some(instance) {
                self.pending.push_back(ServiceEvent::Up(instance.clone()));
            }
        }
        self.next_rev = rev + 1;
        Ok(())
    }
}
