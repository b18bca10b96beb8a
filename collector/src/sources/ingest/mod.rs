//! The collector's gRPC side: agents push batches (`AgentIngest.Push`), any consumer
//! subscribes to the joined event stream (`EventStream.Subscribe`).
//!
//! `server` holds the tonic services (TLS, bearer token, health, reflection); `registry` keeps
//! each agent's sequence bookkeeping (gaps counted exactly) and its latest status; `join`
//! matches an agent's process identities to MemberList entries and derives the per-member
//! kernel view; `fanout` delivers events to subscribers, each behind its own bounded buffer;
//! `watch` turns etcd watch responses on configured prefixes into events on the same stream.

pub mod fanout;
pub mod join;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod watch;

pub use fanout::Fanout;
pub use registry::AgentRegistry;

use std::sync::Arc;

/// Everything the gRPC side shares with REST and /metrics.
#[derive(Clone)]
pub struct Pipeline {
    /// Agents and their latest status.
    pub registry: Arc<AgentRegistry>,
    /// Subscribers.
    pub fanout: Arc<Fanout>,
    /// Ingest counters.
    pub counters: Arc<server::IngestCounters>,
    /// Watch counters.
    pub watches: Arc<watch::WatchCounters>,
}

impl Pipeline {
    /// A pipeline whose subscribers get `subscriber_buffer` events of buffer each.
    pub fn new(subscriber_buffer: usize) -> Self {
        Self::with_registry(subscriber_buffer, AgentRegistry::new())
    }

    /// The same, around an existing registry (e.g. one restored from the store).
    pub fn with_registry(subscriber_buffer: usize, registry: AgentRegistry) -> Self {
        Self::bounded(subscriber_buffer, usize::MAX, registry)
    }

    /// At most `max_subscribers` subscribers, around an existing registry.
    pub fn bounded(
        subscriber_buffer: usize,
        max_subscribers: usize,
        registry: AgentRegistry,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            fanout: Arc::new(Fanout::bounded(subscriber_buffer, max_subscribers)),
            counters: Arc::new(server::IngestCounters::default()),
            watches: Arc::new(watch::WatchCounters::default()),
        }
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new(crate::model::config::DEFAULT_SUBSCRIBER_BUFFER)
    }
}
