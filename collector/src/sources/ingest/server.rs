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

use super::{
    AgentRegistry, Fanout,
    fanout::Filter,
    registry::{AgentLimits, BatchError, RefusalCounters, validate_with},
};
use crate::{model::cluster::ClusterState, model::cluster::Clusters};

/// Counters of the gRPC side, exported on /metrics.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Batches accepted.
    pub batches: AtomicU64,
    /// Events accepted.
    pub events: AtomicU64,
    /// Batches refused (malformed, over a limit, conflicting), all reasons.
    pub rejected: AtomicU64,
    /// Events of etcd processes that join no member of a monitored cluster: kept off the
    /// Subscribe stream, which carries joined events only.
    pub unjoined: AtomicU64,
    /// Refusals by reason (`etcdmon_ingest_refused_total{reason}`).
    pub refused: RefusalCounters,
    /// Streams refused for missing or wrong credentials.
    pub unauthenticated: AtomicU64,
}

impl IngestCounters {
    /// Counts one refused batch under its reason.
    pub fn refuse(&self, e: &BatchError) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.refused.count(e);
    }
}

/// Default largest batch, bytes (`--grpc-max-batch-bytes`); also the transport's decode limit.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;

/// How the gRPC server runs. Its `Debug` output never shows the tokens or the key.
#[derive(Clone, Default)]
pub struct IngestSettings {
    /// Largest encoded batch accepted, bytes; the transport refuses larger messages before
    /// decoding them (0 = [`DEFAULT_MAX_BATCH_BYTES`]).
    pub max_batch_bytes: usize,
    /// Bearer token agents must send on `AgentIngest`, when set.
    pub ingest_token: Option<String>,
    /// Bearer token consumers must send on `EventStream`, when set.
    pub subscribe_token: Option<String>,
    /// Most concurrent HTTP/2 streams per connection (0 = the transport's default).
    pub max_concurrent_streams: u32,
    /// Most requests served at once per connection (0 = unlimited).
    pub concurrency_per_connection: usize,
    /// PEM certificate and key: serve TLS.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM CA: require client certificates it signed (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for IngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSettings")
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field(
                "ingest_token",
                &self.ingest_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "subscribe_token",
                &self.subscribe_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field(
                "concurrency_per_connection",
                &self.concurrency_per_connection,
            )
            .field("tls", &self.tls_identity.is_some())
            .field("mutual_tls", &self.client_ca.is_some())
            .finish()
    }
}

/// What the services share.
#[derive(Clone)]
pub struct IngestState {
    /// Every agent seen: its node, sequence and what it reports.
    pub registry: Arc<AgentRegistry>,
    /// The Subscribe streams events are published to.
    pub fanout: Arc<Fanout>,
    /// Clusters, for the join.
    pub clusters: Clusters,
    /// Batches, events, refusals and unjoined events, for `/metrics`.
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

struct Ingest {
    state: IngestState,
    /// Largest batch taken (`--grpc-max-batch-bytes`); the transport refuses larger ones.
    max_batch_bytes: usize,
    /// Mutual TLS: the node name must be one the client certificate names.
    check_certificate: bool,
}

/// DNS names (SAN) and common names of the first client certificate.
fn certified_names(request: &Request<Streaming<EventBatch>>) -> Vec<String> {
    let Some(certs) = request.peer_certs() else {
        return Vec::new();
    };
    let Some(der) = certs.first() else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(cn.to_string());
        }
    }
    names
}

impl Ingest {
    /// Counts and reports a refused batch; the stream stays up.
    /// Why a batch is refused before the registry sees it, with the node to blame: too large or
    /// malformed, a node its client certificate does not name (`certified`), or another node
    /// than the one this stream started as (`stream_node`).
    fn precheck(
        &self,
        batch: &EventBatch,
        limits: &AgentLimits,
        certified: Option<&[String]>,
        stream_node: Option<&str>,
    ) -> Result<(), (BatchError, String)> {
        validate_with(batch, self.max_batch_bytes, limits).map_err(|e| (e, batch.node.clone()))?;
        if let Some(names) = certified
            && !names.iter().any(|n| n == &batch.node)
        {
            let err = BatchError::NodeMismatch {
                node: batch.node.clone(),
                certified: names.to_vec(),
            };
            return Err((err, batch.node.clone()));
        }
        if let Some(node) = stream_node
            && node != batch.node
        {
            let err = BatchError::InvalidNode(format!(
                "{:?}: this stream started as node {node:?}; one stream carries one node",
                batch.node
            ));
            return Err((err, node.to_string()));
        }
        Ok(())
    }

    /// Counts an accepted, new batch and publishes its events, joined to members, to the
    /// subscribers (if any); a status batch (an agent restart) empties the join cache first.
    fn deliver(&self, cache: &mut JoinCache, batch: EventBatch) {
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
    }

    fn refuse(&self, ack: &mut PushAck, sequence: u64, node: &str, err: &BatchError) {
        ack.rejected_batches = ack.rejected_batches.saturating_add(1);
        ack.last_rejection = format!("INVALID_ARGUMENT: batch {sequence}: {err}");
        self.state.counters.refuse(err);
        self.state.registry.reject(node);
        tracing::warn!(reason = err.reason(), error = %err, "Refused a batch; the stream stays up.");
    }

    /// The transport's error for a message it could not take, counted.
    fn transport_error(&self, status: Status) -> Status {
        match status.code() {
            tonic::Code::OutOfRange => {
                let err = BatchError::Transport(format!(
                    "batch larger than the {} bytes allowed (--grpc-max-batch-bytes), refused before decoding: {}",
                    self.max_batch_bytes,
                    status.message()
                ));
                self.state.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.state.counters.refused.count(&BatchError::TooLarge {
                    node: String::new(),
                    bytes: 0,
                    max: self.max_batch_bytes,
                });
                tracing::warn!(error = %err, "Refused an oversized batch; the stream ends.");
                Status::out_of_range(err.to_string())
            }
            // INVALID_ARGUMENT comes from the prescan, which counted it already.
            tonic::Code::Internal => {
                let err = BatchError::Transport(status.message().to_string());
                self.state.counters.refuse(&err);
                tracing::warn!(error = %err, "Refused an undecodable batch; the stream ends.");
                status
            }
            _ => status,
        }
    }
}

#[tonic::async_trait]
impl AgentIngest for Ingest {
    async fn push(
        &self,
        request: Request<Streaming<EventBatch>>,
    ) -> Result<Response<PushAck>, Status> {
        let peer = request.remote_addr();
        let certified = if self.check_certificate {
            Some(certified_names(&request))
        } else {
            None
        };
        let mut stream = request.into_inner();
        let mut ack = PushAck::default();
        let mut cache: Option<JoinCache> = None;
        let limits = *self.state.registry.limits();
        let result = loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break Ok(()),
                Err(status) => break Err(self.transport_error(status)),
            };
            let stream_node = cache.as_ref().map(|c| c.node.as_str());
            if let Err((err, node)) =
                self.precheck(&batch, &limits, certified.as_deref(), stream_node)
            {
                self.refuse(&mut ack, batch.sequence, &node, &err);
                continue;
            }
            let accepted = match self.state.registry.accept(&batch) {
                Ok(accepted) => accepted,
                Err(err) => {
                    self.refuse(&mut ack, batch.sequence, &batch.node, &err);
                    continue;
                }
            };
            let cache = cache.get_or_insert_with(|| {
                self.state.registry.stream(&batch.node, true);
                tracing::info!(node = %batch.node, ?peer, "Agent connected.");
                JoinCache {
                    node: batch.node.clone(),
                    entries: HashMap::new(),
                    refreshed: Instant::now(),
                }
            });
            if accepted.lost_events > 0 || accepted.lost_batches > 0 {
                tracing::warn!(node = %batch.node, lost_events = accepted.lost_events, lost_batches = accepted.lost_batches, "Sequence gap: events lost between agent and collector.");
            }
            ack.last_sequence = batch.sequence;
            ack.accepted_batches = ack.accepted_batches.saturating_add(1);
            if accepted.duplicate {
                continue;
            }
            self.deliver(cache, batch);
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
        let (id, rx, _) = self
            .state
            .fanout
            .subscribe(filter)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
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
        /// The `--grpc-port` address it tried.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reflection could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// Checks the bearer token on every call of one service, when one is configured.
#[derive(Clone)]
struct TokenCheck {
    expected: Option<Arc<str>>,
    counters: Arc<IngestCounters>,
    /// Which token is missing, for the refusal (`ingest` or `subscribe`).
    role: &'static str,
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
            Err(Status::unauthenticated(format!(
                "missing or wrong bearer token (this call needs the {} token)",
                self.role
            )))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Most entries of any one list in a status the decoder lets through (the configured limits,
/// checked after decoding, are smaller): bounds what a status can materialise.
const MAX_STATUS_ENTRIES: usize = 65_536;

/// Walks an encoded `EventBatch` without building it and refuses one that would materialise
/// more events (or status entries) than allowed: a batch of 2-byte empty events within the
/// byte limit would otherwise decode into millions of 264-byte structs.
fn prescan(mut buf: &[u8], max_events: usize) -> Result<(), BatchError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let bad = |e: prost::DecodeError| BatchError::Transport(format!("undecodable batch: {e}"));
    let mut events = 0usize;
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).map_err(bad)?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(bad)?;
            }
            WireType::SixtyFourBit if buf.len() >= 8 => buf = &buf[8..],
            WireType::ThirtyTwoBit if buf.len() >= 4 => buf = &buf[4..],
            WireType::LengthDelimited => {
                let len =
                    usize::try_from(decode_varint(&mut buf).map_err(bad)?).unwrap_or(usize::MAX);
                if len > buf.len() {
                    return Err(BatchError::Transport("undecodable batch: truncated".into()));
                }
                let (body, rest) = buf.split_at(len);
                buf = rest;
                if field == 7 {
                    events += 1;
                    if events > max_events {
                        return Err(BatchError::TooManyEvents {
                            node: String::new(),
                            events,
                            max: max_events,
                        });
                    }
                } else if field == 6 {
                    prescan_status(body)?;
                }
            }
            _ => {
                return Err(BatchError::Transport(format!(
                    "undecodable batch: field {field} has an unexpected wire type"
                )));
            }
        }
    }
    Ok(())
}

fn prescan_status(mut buf: &[u8]) -> Result<(), BatchError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let bad = |e: prost::DecodeError| BatchError::Transport(format!("undecodable status: {e}"));
    let mut counts = [0usize; 16];
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).map_err(bad)?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(bad)?;
            }
            WireType::SixtyFourBit if buf.len() >= 8 => buf = &buf[8..],
            WireType::ThirtyTwoBit if buf.len() >= 4 => buf = &buf[4..],
            WireType::LengthDelimited => {
                let len =
                    usize::try_from(decode_varint(&mut buf).map_err(bad)?).unwrap_or(usize::MAX);
                if len > buf.len() {
                    return Err(BatchError::Transport(
                        "undecodable status: truncated".into(),
                    ));
                }
                buf = &buf[len..];
                let slot = &mut counts[(field as usize).min(15)];
                *slot += 1;
                if *slot > MAX_STATUS_ENTRIES {
                    return Err(BatchError::TooManyEntries {
                        node: String::new(),
                        field: "status (before decoding)",
                        count: *slot,
                        max: MAX_STATUS_ENTRIES,
                    });
                }
            }
            _ => {
                return Err(BatchError::Transport(format!(
                    "undecodable status: field {field} has an unexpected wire type"
                )));
            }
        }
    }
    Ok(())
}

/// The Push codec: acks encoded by prost, batches prescanned ([`prescan`]) then decoded.
#[derive(Clone)]
struct BatchCodec {
    counters: Arc<IngestCounters>,
}

struct AckEncoder;

struct BatchDecoder {
    counters: Arc<IngestCounters>,
}

impl tonic::codec::Encoder for AckEncoder {
    type Item = PushAck;
    type Error = Status;

    fn encode(
        &mut self,
        item: PushAck,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for BatchDecoder {
    type Item = EventBatch;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<EventBatch>, Status> {
        use prost::bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        if let Err(err) = prescan(&bytes, super::registry::MAX_EVENTS_PER_BATCH) {
            self.counters.refuse(&err);
            tracing::warn!(reason = err.reason(), error = %err, "Refused a batch before decoding it; the stream ends.");
            return Err(Status::invalid_argument(err.to_string()));
        }
        prost::Message::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable batch: {e}")))
    }
}

impl tonic::codec::Codec for BatchCodec {
    type Encode = PushAck;
    type Decode = EventBatch;
    type Encoder = AckEncoder;
    type Decoder = BatchDecoder;

    fn encoder(&mut self) -> AckEncoder {
        AckEncoder
    }

    fn decoder(&mut self) -> BatchDecoder {
        BatchDecoder {
            counters: self.counters.clone(),
        }
    }
}

/// `AgentIngest` served with [`BatchCodec`] (the generated server always uses the plain
/// prost codec, which would build every event before anything could count them).
#[derive(Clone)]
struct BoundedIngest {
    inner: Arc<Ingest>,
    max_decoding: usize,
}

impl tonic::server::NamedService for BoundedIngest {
    const NAME: &'static str = "etcdmon.v1.AgentIngest";
}

struct PushSvc(Arc<Ingest>);

impl tonic::server::ClientStreamingService<EventBatch> for PushSvc {
    type Response = PushAck;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<PushAck>, Status>> + Send>,
    >;

    fn call(&mut self, request: Request<Streaming<EventBatch>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.push(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for BoundedIngest
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let max = self.max_decoding;
        if req.uri().path() != "/etcdmon.v1.AgentIngest/Push" {
            return Box::pin(
                async move { Ok(Status::unimplemented("unknown method").into_http()) },
            );
        }
        Box::pin(async move {
            let codec = BatchCodec {
                counters: inner.state.counters.clone(),
            };
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.client_streaming(PushSvc(inner), req).await)
        })
    }
}

/// How often subscribers that went away are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Removes subscribers that went away and forgets agents silent past their expiry.
fn spawn_housekeeping(state: IngestState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            let removed = state.fanout.sweep();
            if removed > 0 {
                tracing::debug!(removed, "Removed subscribers that went away.");
            }
            for node in state.registry.expire(crate::model::time::now_ms()) {
                tracing::info!(%node, "Agent expired after --agent-expiry of silence; its series are gone.");
            }
        }
    });
}

/// The gRPC server's transport settings: HTTP/2 keep-alive, stream and per-connection
/// concurrency limits (0: unlimited), and TLS (with client certificates when a CA is given).
fn server_builder(settings: &IngestSettings) -> Result<Server, ServeError> {
    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(20)));
    if settings.max_concurrent_streams > 0 {
        builder = builder.max_concurrent_streams(Some(settings.max_concurrent_streams));
    }
    if settings.concurrency_per_connection > 0 {
        builder = builder.concurrency_limit_per_connection(settings.concurrency_per_connection);
    }
    if let Some((cert, key)) = &settings.tls_identity {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &settings.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    Ok(builder)
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
    let mut builder = server_builder(&settings)?;
    let ingest_check = TokenCheck {
        expected: settings.ingest_token.as_deref().map(Arc::from),
        counters: state.counters.clone(),
        role: "ingest",
    };
    let subscribe_check = TokenCheck {
        expected: settings.subscribe_token.as_deref().map(Arc::from),
        counters: state.counters.clone(),
        role: "subscribe",
    };
    let max = if settings.max_batch_bytes == 0 {
        DEFAULT_MAX_BATCH_BYTES
    } else {
        settings.max_batch_bytes
    };
    // The transport refuses a message over the batch limit before decoding it (OUT_OF_RANGE,
    // the stream ends, counted as `too_large`): a batch of tiny events can never be decoded
    // into more structs than its bytes allow. Batches under it are checked one by one and a
    // bad one is refused alone (INVALID_ARGUMENT in the ack, the stream stays up).
    let ingest = BoundedIngest {
        inner: Arc::new(Ingest {
            state: state.clone(),
            max_batch_bytes: max,
            check_certificate: settings.client_ca.is_some(),
        }),
        max_decoding: max,
    };
    let stream = EventStreamServer::new(Stream {
        state: state.clone(),
    })
    .max_decoding_message_size(64 << 10);
    spawn_housekeeping(state.clone());
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
            ingest_check,
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            stream,
            subscribe_check,
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
    fn the_prescan_counts_events_and_status_entries_without_decoding() {
        use etcd_monitor_proto::v1::{AgentStatus, MemberIdentity};
        let mut batch = EventBatch {
            node: "n".into(),
            events: vec![Event::default(); 10],
            status: Some(AgentStatus {
                members: vec![MemberIdentity::default(); 3],
                ..AgentStatus::default()
            }),
            ..EventBatch::default()
        };
        let bytes = prost::Message::encode_to_vec(&batch);
        assert!(prescan(&bytes, 10).is_ok());
        assert_eq!(
            prescan(&bytes, 9).map_err(|e| e.reason()),
            Err("too_many_events")
        );
        batch.events.clear();
        batch.status = Some(AgentStatus {
            members: vec![MemberIdentity::default(); MAX_STATUS_ENTRIES + 1],
            ..AgentStatus::default()
        });
        let bytes = prost::Message::encode_to_vec(&batch);
        assert_eq!(
            prescan(&bytes, 10).map_err(|e| e.reason()),
            Err("too_many_entries")
        );
        assert_eq!(
            prescan(&bytes[..bytes.len() - 1], 10).map_err(|e| e.reason()),
            Err("transport")
        );
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
