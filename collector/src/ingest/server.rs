//! The tonic services: `AgentIngest` for agents, `EventStream` for consumers, plus gRPC health
//! and server reflection, behind optional TLS / mutual TLS and an optional bearer token.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_monitor_proto::v1::{
    Event, EventBatch, PushAck, SubscribeRequest,
    agent_ingest_server::{AgentIngest, AgentIngestServer},
    event_stream_server::{EventStream, EventStreamServer},
};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

use super::{AgentRegistry, Fanout, fanout::Filter, registry::validate};
use crate::cluster::{ClusterState, Clusters};

/// Counters of the gRPC side, exported on /metrics.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Batches accepted.
    pub batches: AtomicU64,
    /// Events accepted.
    pub events: AtomicU64,
    /// Batches refused as malformed.
    pub rejected: AtomicU64,
    /// Events of etcd processes that join no member of a monitored cluster: kept off the
    /// Subscribe stream, which carries joined events only.
    pub unjoined: AtomicU64,
    /// Streams refused for missing or wrong credentials.
    pub unauthenticated: AtomicU64,
}

/// How the gRPC server runs.
#[derive(Debug, Clone, Default)]
pub struct IngestSettings {
    /// Largest encoded batch accepted, bytes.
    pub max_batch_bytes: usize,
    /// Bearer token every call must carry, when set.
    pub token: Option<String>,
    /// PEM certificate and key: serve TLS.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM CA: require client certificates it signed (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
}

/// What the services share.
#[derive(Clone)]
pub struct IngestState {
    /// Agents.
    pub registry: Arc<AgentRegistry>,
    /// Subscribers.
    pub fanout: Arc<Fanout>,
    /// Clusters, for the join.
    pub clusters: Clusters,
    /// Counters.
    pub counters: Arc<IngestCounters>,
}

/// Where an agent-side member name lands after the join.
#[derive(Debug, Clone)]
struct Joined {
    cluster: String,
    member_id: String,
    member: String,
    is_leader: bool,
}

/// Per-stream cache of the join, refreshed on status batches and every few seconds.
struct JoinCache {
    node: String,
    entries: HashMap<String, Option<Joined>>,
    refreshed: Instant,
}

impl JoinCache {
    const TTL: Duration = Duration::from_secs(5);

    fn lookup(&mut self, state: &IngestState, agent_member: &str) -> Option<Joined> {
        if self.refreshed.elapsed() > Self::TTL {
            self.entries.clear();
            self.refreshed = Instant::now();
        }
        if let Some(hit) = self.entries.get(agent_member) {
            return hit.clone();
        }
        let joined = state.clusters.iter().find_map(|cluster| {
            let snapshot: ClusterState = cluster.snapshot();
            let m = state
                .registry
                .member_for(&self.node, agent_member, &snapshot.members)?;
            Some(Joined {
                cluster: snapshot.cluster.clone(),
                member_id: m.id.clone(),
                member: ClusterState::member_label(&m),
                is_leader: m.is_leader,
            })
        });
        self.entries
            .insert(agent_member.to_string(), joined.clone());
        joined
    }

    /// Labels every event with its member; drops, and returns how many, the events of etcd
    /// processes that are no member of a monitored cluster (a stray `etcd` on the node, whose
    /// agent-side name such as etcd's default `default` is no member's name).
    fn enrich(&mut self, state: &IngestState, events: &mut Vec<Event>) -> u64 {
        let before = events.len();
        events.retain_mut(|e| {
            if e.node.is_empty() {
                e.node = self.node.clone();
            }
            let Some(j) = self.lookup(state, &e.member.clone()) else {
                return false;
            };
            e.cluster = j.cluster;
            e.member_id = j.member_id;
            e.member = j.member;
            e.is_leader = j.is_leader;
            true
        });
        (before - events.len()) as u64
    }
}

/// How many times `--grpc-max-batch-bytes` the transport accepts before cutting a stream.
const TRANSPORT_HEADROOM: usize = 4;

struct Ingest {
    state: IngestState,
    /// Largest batch taken (`--grpc-max-batch-bytes`); larger ones are refused one by one.
    max_batch_bytes: usize,
}

#[tonic::async_trait]
impl AgentIngest for Ingest {
    async fn push(
        &self,
        request: Request<Streaming<EventBatch>>,
    ) -> Result<Response<PushAck>, Status> {
        let peer = request.remote_addr();
        let mut stream = request.into_inner();
        let mut ack = PushAck::default();
        let mut cache: Option<JoinCache> = None;
        let result = loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            };
            if let Err(err) = validate(&batch, self.max_batch_bytes) {
                ack.rejected_batches += 1;
                ack.last_rejection = format!("INVALID_ARGUMENT: batch {}: {err}", batch.sequence);
                self.state.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.state.registry.reject(&batch.node);
                tracing::warn!(?peer, error = %err, "Refused a malformed batch; the stream stays up.");
                continue;
            }
            let cache = cache.get_or_insert_with(|| {
                self.state.registry.stream(&batch.node, true);
                tracing::info!(node = %batch.node, ?peer, "Agent connected.");
                JoinCache {
                    node: batch.node.clone(),
                    entries: HashMap::new(),
                    refreshed: Instant::now(),
                }
            });
            let accepted = self.state.registry.accept(&batch);
            if accepted.lost_events > 0 || accepted.lost_batches > 0 {
                tracing::warn!(node = %batch.node, lost_events = accepted.lost_events, lost_batches = accepted.lost_batches, "Sequence gap: events lost between agent and collector.");
            }
            ack.last_sequence = batch.sequence;
            ack.accepted_batches += 1;
            if accepted.duplicate {
                continue;
            }
            if batch.status.is_some() {
                cache.entries.clear();
            }
            self.state.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.state
                .counters
                .events
                .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
            if !self.state.fanout.is_empty() {
                let mut events = batch.events;
                let unjoined = cache.enrich(&self.state, &mut events);
                self.state
                    .counters
                    .unjoined
                    .fetch_add(unjoined, Ordering::Relaxed);
                self.state.fanout.publish(&events);
            }
        };
        if let Some(cache) = &cache {
            self.state.registry.stream(&cache.node, false);
            tracing::info!(node = %cache.node, "Agent stream closed.");
        }
        result.map(|()| Response::new(ack))
    }
}

struct Stream {
    state: IngestState,
}

#[tonic::async_trait]
impl EventStream for Stream {
    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::from_request(request.get_ref()).map_err(Status::invalid_argument)?;
        let (id, rx, _) = self.state.fanout.subscribe(filter);
        tracing::info!(subscriber = id, request = ?request.get_ref(), "Subscriber joined.");
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

/// Why the gRPC server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS material was rejected.
    #[error("gRPC TLS settings: {0}")]
    Tls(tonic::transport::Error),
    /// The port could not be bound.
    #[error("--grpc-port: cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Reflection could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// Checks the bearer token on every call, when one is configured.
#[derive(Clone)]
struct TokenCheck {
    expected: Option<Arc<str>>,
    counters: Arc<IngestCounters>,
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            Ok(request)
        } else {
            self.counters
                .unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds `addr` and serves until `shutdown` completes. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    settings: IngestSettings,
    state: IngestState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(20)));
    if let Some((cert, key)) = &settings.tls_identity {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &settings.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let check = TokenCheck {
        expected: settings.token.as_deref().map(Arc::from),
        counters: state.counters.clone(),
    };
    let max = if settings.max_batch_bytes == 0 {
        crate::config::DEFAULT_GRPC_MAX_BATCH_BYTES
    } else {
        settings.max_batch_bytes
    };
    // The transport's own limit sits well above the batch limit: a batch between the two is
    // decoded and refused on its own (INVALID_ARGUMENT in the ack, the stream stays up); only
    // a message beyond the transport limit ends the stream (OUT_OF_RANGE), so memory per
    // message stays bounded.
    let ingest = AgentIngestServer::new(Ingest {
        state: state.clone(),
        max_batch_bytes: max,
    })
    .max_decoding_message_size(max.saturating_mul(TRANSPORT_HEADROOM));
    let stream = EventStreamServer::new(Stream { state });
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentIngestServer<Ingest>>()
        .await;
    health_reporter
        .set_serving::<EventStreamServer<Stream>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etcd_monitor_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let router = builder
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ingest,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            stream, check,
        ))
        .add_service(health)
        .add_service(reflection);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(error = %e, "gRPC server stopped.");
        }
    });
    tracing::info!(addr = %bound, "gRPC ingest and event stream listening.");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
