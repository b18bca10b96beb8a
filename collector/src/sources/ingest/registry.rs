//! Every agent the collector has heard from: sequence bookkeeping (lost events counted exactly
//! from sequence numbers and event offsets) and the latest status.
//!
//! What an agent may introduce is bounded: a valid node name, at most `max_agents` agents,
//! bounded members, peers and histograms per status, short label values, and agents silent for
//! `expiry` are forgotten (their series leave /metrics). A member claimed by one live agent
//! cannot be claimed by another. A refused batch creates no record.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use etcd_monitor_proto::v1::{AgentStatus, EventBatch, MemberIdentity};

use super::join::{self, KernelView};
use crate::model::sync;
use crate::{
    model::cluster::MemberState, model::time::now_ms, store::AgentSequence, store::Store,
    store::StoreError,
};

/// One agent (by node name).
#[derive(Debug, Clone, Default)]
pub struct AgentRecord {
    /// Node name.
    pub node: String,
    /// Current boot id.
    pub boot_id: String,
    /// Highest sequence accepted in this boot.
    pub last_sequence: u64,
    /// The event offset the next batch should carry.
    pub expected_offset: u64,
    /// Batches accepted.
    pub batches: u64,
    /// Events accepted.
    pub events: u64,
    /// Events lost in transit (gaps in event offsets), all boots.
    pub lost_events: u64,
    /// Batches lost in transit (gaps in sequence numbers), all boots.
    pub lost_batches: u64,
    /// Batches that arrived twice or out of order (ignored).
    pub duplicate_batches: u64,
    /// Batches of a known agent refused (malformed, over a limit, conflicting claim).
    pub rejected_batches: u64,
    /// Last batch (Unix ms).
    pub last_seen_ms: u64,
    /// Last status and when it came.
    pub status: Option<(AgentStatus, u64)>,
    /// Open Push streams now.
    pub connected_streams: u32,
}

/// What accepting a batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    /// Events lost before this batch (0 when contiguous).
    pub lost_events: u64,
    /// Batches lost before this batch.
    pub lost_batches: u64,
    /// The batch was a duplicate or out of order and was ignored.
    pub duplicate: bool,
    /// The agent restarted (new boot id).
    pub new_boot: bool,
}

/// What an agent may introduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Most agents known at once (`--max-agents`).
    pub max_agents: usize,
    /// Most etcd members one agent may report (`--max-members-per-agent`).
    pub max_members: usize,
    /// Most peer entries per reported member (`--max-peers-per-member`).
    pub max_peers_per_member: usize,
    /// An agent silent this long is forgotten (`--agent-expiry`).
    pub expiry: Duration,
}

impl AgentLimits {
    /// The flags' defaults: 1,000 agents, 16 members each, 32 peers per member, 10 minutes.
    pub const DEFAULT: Self = Self {
        max_agents: 1000,
        max_members: 16,
        max_peers_per_member: 32,
        expiry: Duration::from_secs(600),
    };
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Longest value of a field that becomes a label (member names, mode, peer, device, comm).
pub const MAX_LABEL_BYTES: usize = 128;
/// Longest value of any other agent-supplied string (reason, URLs, cgroup paths, boot id).
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest node name (a DNS-1123 subdomain).
pub const MAX_NODE_BYTES: usize = 253;
/// Most log2 slots a histogram may carry (one per bit of a u64).
pub const MAX_SLOTS: usize = 64;
/// Histograms allowed per reported member.
pub const MAX_HISTOGRAMS_PER_MEMBER: usize = 128;
/// Block devices per status, and I/O issuers per device.
pub const MAX_DEVICES: usize = 64;
/// URLs per member identity.
pub const MAX_URLS: usize = 16;
/// How long after its last batch a closed agent still holds its claim on members.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);

/// Why a batch is refused. [`BatchError::reason`] is the `reason` label of
/// `etcdmon_ingest_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No node name.
    #[error("batch has no node name")]
    NoNode,
    /// The node name is not a DNS-1123 subdomain of at most 253 characters.
    #[error("node: {0}")]
    InvalidNode(String),
    /// The batch from this node has an empty `boot_id`.
    #[error("batch from {0} has no boot id")]
    NoBootId(String),
    /// Sequence 0.
    #[error("batch from {0} has sequence 0 (sequences start at 1)")]
    ZeroSequence(String),
    /// More events in one batch than the agent limits allow.
    #[error("batch from {node} has {events} events, more than the {max} allowed")]
    TooManyEvents {
        /// The agent's node name, as the batch states it.
        node: String,
        /// Events in the batch.
        events: usize,
        /// The bound it exceeds.
        max: usize,
    },
    /// Larger than `--grpc-max-batch-bytes`.
    #[error(
        "batch from {node} is {bytes} bytes, more than the {max} allowed (--grpc-max-batch-bytes)"
    )]
    TooLarge {
        /// The agent's node name, as the batch states it.
        node: String,
        /// Encoded size.
        bytes: usize,
        /// The bound it exceeds.
        max: usize,
    },
    /// An event without a payload.
    #[error("batch from {node}: event {index} has no payload")]
    EmptyEvent {
        /// The agent's node name, as the batch states it.
        node: String,
        /// Index in the batch.
        index: usize,
    },
    /// A status list longer than its limit.
    #[error("batch from {node}: status.{field} has {count} entries, more than the {max} allowed")]
    TooManyEntries {
        /// The agent's node name, as the batch states it.
        node: String,
        /// Field, e.g. `members`.
        field: &'static str,
        /// How many entries it has.
        count: usize,
        /// The bound it exceeds.
        max: usize,
    },
    /// A string longer than its limit.
    #[error("batch from {node}: {field} is {bytes} bytes, more than the {max} allowed")]
    TooLong {
        /// The agent's node name, as the batch states it.
        node: String,
        /// The field that is over its bound.
        field: &'static str,
        /// Its length in bytes.
        bytes: usize,
        /// The bound it exceeds.
        max: usize,
    },
    /// More log2 slots than a u64 has bits.
    #[error("batch from {node}: {field} has {count} log2 slots, more than {MAX_SLOTS}")]
    BadSlots {
        /// The agent's node name, as the batch states it.
        node: String,
        /// The field that is over its bound.
        field: &'static str,
        /// How many log2 slots it has.
        count: usize,
    },
    /// `--max-agents` reached.
    #[error("node {node}: {max} agents are already known (--max-agents); refused")]
    TooManyAgents {
        /// The agent's node name, as the batch states it.
        node: String,
        /// The bound it exceeds.
        max: usize,
    },
    /// A member already claimed by another live agent.
    #[error(
        "node {node}: member {member:?} is already reported by the live agent on node {owner}; refused"
    )]
    Conflict {
        /// Node of the refused agent.
        node: String,
        /// Member (agent-side name).
        member: String,
        /// Node of the agent holding the claim.
        owner: String,
    },
    /// With mutual TLS, the node name does not match the client certificate.
    #[error("node {node}: the client certificate names {certified:?}, not this node; refused")]
    NodeMismatch {
        /// Node in the batch.
        node: String,
        /// DNS names and CN of the certificate.
        certified: Vec<String>,
    },
    /// The stream broke while decoding a batch (e.g. over the transport limit).
    #[error("{0}")]
    Transport(String),
}

impl BatchError {
    /// Every reason, in the order of [`BatchError::index`].
    pub const REASONS: [&'static str; 15] = [
        "no_node",
        "invalid_node",
        "no_boot_id",
        "zero_sequence",
        "too_many_events",
        "too_large",
        "empty_event",
        "too_many_entries",
        "label_too_long",
        "bad_slots",
        "too_many_agents",
        "conflict",
        "node_mismatch",
        "transport",
        "unused",
    ];

    /// Position of this error's reason in [`BatchError::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            Self::NoNode => 0,
            Self::InvalidNode(_) => 1,
            Self::NoBootId(_) => 2,
            Self::ZeroSequence(_) => 3,
            Self::TooManyEvents { .. } => 4,
            Self::TooLarge { .. } => 5,
            Self::EmptyEvent { .. } => 6,
            Self::TooManyEntries { .. } => 7,
            Self::TooLong { .. } => 8,
            Self::BadSlots { .. } => 9,
            Self::TooManyAgents { .. } => 10,
            Self::Conflict { .. } => 11,
            Self::NodeMismatch { .. } => 12,
            Self::Transport(_) => 13,
        }
    }

    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}

/// Refusals counted by reason.
#[derive(Debug, Default)]
pub struct RefusalCounters {
    counts: [AtomicU64; 15],
}

impl RefusalCounters {
    /// Counts one refusal.
    pub fn count(&self, e: &BatchError) {
        self.counts[e.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason, count)` for every reason (unused slots left out).
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        BatchError::REASONS
            .iter()
            .zip(&self.counts)
            .filter(|(r, _)| **r != "unused")
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.load(Ordering::Relaxed)))
    }
}

/// Most events one batch may carry (the agent sends ≤ 65,536).
pub const MAX_EVENTS_PER_BATCH: usize = 65_536;

/// Whether `name` is a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`, each label
/// starting and ending alphanumeric) of at most 253 characters; the error says what is wrong.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NODE_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_NODE_BYTES} a DNS-1123 subdomain may have",
            name.len()
        ));
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let ok = !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-';
        if !ok {
            let shown: String = name.chars().take(64).collect();
            return Err(format!(
                "{shown:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each label starting and ending with a letter or digit)"
            ));
        }
    }
    Ok(())
}

fn cap(node: &str, field: &'static str, value: &str, max: usize) -> Result<(), BatchError> {
    if value.len() > max {
        return Err(BatchError::TooLong {
            node: node.to_string(),
            field,
            bytes: value.len(),
            max,
        });
    }
    Ok(())
}

fn count(node: &str, field: &'static str, n: usize, max: usize) -> Result<(), BatchError> {
    if n > max {
        return Err(BatchError::TooManyEntries {
            node: node.to_string(),
            field,
            count: n,
            max,
        });
    }
    Ok(())
}

fn slots(node: &str, field: &'static str, n: usize) -> Result<(), BatchError> {
    if n > MAX_SLOTS {
        return Err(BatchError::BadSlots {
            node: node.to_string(),
            field,
            count: n,
        });
    }
    Ok(())
}

fn validate_status(node: &str, s: &AgentStatus, limits: &AgentLimits) -> Result<(), BatchError> {
    let members = s.members.len();
    count(node, "members", members, limits.max_members)?;
    let per_member = members.max(1);
    count(
        node,
        "histograms",
        s.histograms.len(),
        per_member * MAX_HISTOGRAMS_PER_MEMBER,
    )?;
    count(
        node,
        "peers",
        s.peers.len(),
        per_member * limits.max_peers_per_member,
    )?;
    count(node, "clients", s.clients.len(), per_member)?;
    count(node, "devices", s.devices.len(), MAX_DEVICES)?;
    count(node, "sched", s.sched.len(), per_member)?;
    cap(node, "status.mode", &s.mode, MAX_LABEL_BYTES)?;
    cap(node, "status.reason", &s.reason, MAX_TEXT_BYTES)?;
    for m in &s.members {
        cap(node, "members.name", &m.name, MAX_LABEL_BYTES)?;
        cap(node, "members.data_dir", &m.data_dir, MAX_TEXT_BYTES)?;
        for (field, urls) in [
            ("members.client_urls", &m.client_urls),
            ("members.peer_urls", &m.peer_urls),
            ("members.listen_client_urls", &m.listen_client_urls),
            ("members.listen_peer_urls", &m.listen_peer_urls),
        ] {
            count(node, field, urls.len(), MAX_URLS)?;
            for u in urls {
                cap(node, field, u, MAX_TEXT_BYTES)?;
            }
        }
    }
    for h in &s.histograms {
        cap(node, "histograms.member", &h.member, MAX_LABEL_BYTES)?;
        slots(node, "histograms.log2_slots", h.log2_slots.len())?;
    }
    let mut peers_of: HashMap<&str, usize> = HashMap::new();
    for p in &s.peers {
        cap(node, "peers.member", &p.member, MAX_LABEL_BYTES)?;
        cap(node, "peers.peer_addr", &p.peer_addr, MAX_LABEL_BYTES)?;
        cap(node, "peers.peer_member", &p.peer_member, MAX_LABEL_BYTES)?;
        let n = peers_of.entry(p.member.as_str()).or_default();
        *n += 1;
        count(
            node,
            "peers (of one member)",
            *n,
            limits.max_peers_per_member,
        )?;
    }
    for c in &s.clients {
        cap(node, "clients.member", &c.member, MAX_LABEL_BYTES)?;
    }
    for d in &s.devices {
        cap(node, "devices.device", &d.device, MAX_LABEL_BYTES)?;
        cap(node, "devices.name", &d.name, MAX_LABEL_BYTES)?;
        count(node, "devices.members", d.members.len(), limits.max_members)?;
        for m in &d.members {
            cap(node, "devices.members", m, MAX_LABEL_BYTES)?;
        }
        slots(node, "devices.log2_slots", d.log2_slots.len())?;
        count(node, "devices.issuers", d.issuers.len(), MAX_DEVICES)?;
        for i in &d.issuers {
            cap(node, "devices.issuers.comm", &i.comm, MAX_LABEL_BYTES)?;
            cap(node, "devices.issuers.cgroup", &i.cgroup, MAX_TEXT_BYTES)?;
            cap(node, "devices.issuers.member", &i.member, MAX_LABEL_BYTES)?;
        }
    }
    for s in &s.sched {
        cap(node, "sched.member", &s.member, MAX_LABEL_BYTES)?;
        cap(node, "sched.cgroup", &s.cgroup, MAX_TEXT_BYTES)?;
        slots(node, "sched.runq_log2_slots", s.runq_log2_slots.len())?;
    }
    Ok(())
}

/// Checks a batch's shape and size (`max_bytes` encoded; 0 = no limit) and everything its
/// status introduces against `limits`, before it touches any state.
pub fn validate_with(
    batch: &EventBatch,
    max_bytes: usize,
    limits: &AgentLimits,
) -> Result<(), BatchError> {
    if batch.node.is_empty() {
        return Err(BatchError::NoNode);
    }
    validate_node_name(&batch.node).map_err(BatchError::InvalidNode)?;
    if batch.boot_id.is_empty() {
        return Err(BatchError::NoBootId(batch.node.clone()));
    }
    cap(&batch.node, "boot_id", &batch.boot_id, MAX_LABEL_BYTES)?;
    cap(
        &batch.node,
        "agent_version",
        &batch.agent_version,
        MAX_LABEL_BYTES,
    )?;
    if batch.sequence == 0 {
        return Err(BatchError::ZeroSequence(batch.node.clone()));
    }
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(BatchError::TooManyEvents {
            node: batch.node.clone(),
            events: batch.events.len(),
            max: MAX_EVENTS_PER_BATCH,
        });
    }
    if max_bytes > 0 {
        let bytes = prost::Message::encoded_len(batch);
        if bytes > max_bytes {
            return Err(BatchError::TooLarge {
                node: batch.node.clone(),
                bytes,
                max: max_bytes,
            });
        }
    }
    if let Some(index) = batch.events.iter().position(|e| e.payload.is_none()) {
        return Err(BatchError::EmptyEvent {
            node: batch.node.clone(),
            index,
        });
    }
    if let Some(status) = &batch.status {
        validate_status(&batch.node, status, limits)?;
    }
    Ok(())
}

/// [`validate_with`] under the default [`AgentLimits`].
pub fn validate(batch: &EventBatch, max_bytes: usize) -> Result<(), BatchError> {
    validate_with(batch, max_bytes, &AgentLimits::default())
}

/// Whether two agent-reported identities are the same etcd member: a peer URL in common, or
/// the same name and a client URL in common.
fn same_member(a: &MemberIdentity, b: &MemberIdentity) -> bool {
    let overlap = |x: &[String], y: &[String]| {
        x.iter().any(|u| {
            y.iter()
                .any(|v| u.trim_end_matches('/') == v.trim_end_matches('/'))
        })
    };
    overlap(&a.peer_urls, &b.peer_urls)
        || (!a.name.is_empty() && a.name == b.name && overlap(&a.client_urls, &b.client_urls))
}

/// How many sequence rows the writer may have queued before new ones are dropped (counted).
const WRITE_QUEUE: usize = 4096;

/// Counters of the registry, exported on /metrics.
#[derive(Debug, Default)]
pub struct RegistryCounters {
    /// Agents forgotten after `--agent-expiry` of silence.
    pub expired: AtomicU64,
    /// Batches refused because they claimed a member another live agent reports.
    pub conflicts: AtomicU64,
    /// Sequence rows dropped because the writer's queue was full.
    pub writes_dropped: AtomicU64,
    /// Sequence rows written to the store.
    pub writes: AtomicU64,
    /// Store writes that failed.
    pub write_errors: AtomicU64,
}

/// All agents.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    agents: RwLock<HashMap<String, AgentRecord>>,
    writer: Option<SyncSender<AgentSequence>>,
    limits: AgentLimits,
    /// Refusals and evictions of agents, for `/metrics`.
    pub counters: Arc<RegistryCounters>,
}

impl AgentRegistry {
    /// An empty registry under the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same registry under `limits`.
    pub fn with_limits(mut self, limits: AgentLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &AgentLimits {
        &self.limits
    }

    /// A registry that saves every agent's sequence bookkeeping in `store` and starts from
    /// what it saved before, so a collector restart still counts transit losses exactly.
    /// Writes go through a bounded queue to a dedicated thread that batches them: accepting a
    /// batch never waits on the store.
    pub fn persistent(store: Arc<Store>, limits: AgentLimits) -> Result<Self, StoreError> {
        let mut agents = HashMap::new();
        let now = now_ms();
        for saved in store.agent_sequences()? {
            if agents.len() >= limits.max_agents || validate_node_name(&saved.node).is_err() {
                continue;
            }
            agents.insert(
                saved.node.clone(),
                AgentRecord {
                    node: saved.node,
                    boot_id: saved.boot_id,
                    last_sequence: saved.last_sequence,
                    expected_offset: saved.expected_offset,
                    batches: saved.batches,
                    events: saved.events,
                    lost_events: saved.lost_events,
                    lost_batches: saved.lost_batches,
                    // Restored agents get a full expiry period to come back.
                    last_seen_ms: now,
                    ..AgentRecord::default()
                },
            );
        }
        let counters = Arc::new(RegistryCounters::default());
        let (tx, rx) = sync_channel(WRITE_QUEUE);
        {
            let counters = counters.clone();
            let path = store.path().to_path_buf();
            std::thread::Builder::new()
                .name("agent-seq-writer".into())
                .spawn(move || write_sequences(&store, &rx, &counters))
                .map_err(|e| StoreError::Open {
                    path,
                    message: format!("cannot start the agent sequence writer: {e}"),
                })?;
        }
        Ok(Self {
            agents: RwLock::new(agents),
            writer: Some(tx),
            limits,
            counters,
        })
    }

    fn save(&self, r: &AgentRecord) {
        let Some(writer) = &self.writer else {
            return;
        };
        let row = AgentSequence {
            node: r.node.clone(),
            boot_id: r.boot_id.clone(),
            last_sequence: r.last_sequence,
            expected_offset: r.expected_offset,
            batches: r.batches,
            events: r.events,
            lost_events: r.lost_events,
            lost_batches: r.lost_batches,
        };
        match writer.try_send(row) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.writes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn write<R>(&self, f: impl FnOnce(&mut HashMap<String, AgentRecord>) -> R) -> R {
        f(&mut sync::write(&self.agents))
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = sync::read(&self.agents).values().cloned().collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// Number of agents known.
    pub fn len(&self) -> usize {
        sync::read(&self.agents).len()
    }

    /// Whether no agent is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a batch already checked by [`validate_with`]; returns what its sequence numbers
    /// say about losses, or why it is refused (agent cap, conflicting claim). A refused batch
    /// of an agent not yet known creates no record.
    pub fn accept(&self, batch: &EventBatch) -> Result<Accepted, BatchError> {
        let now = now_ms();
        let limits = self.limits;
        let (out, saved) = self.write(|agents| {
            if !agents.contains_key(&batch.node) && agents.len() >= limits.max_agents {
                return Err(BatchError::TooManyAgents {
                    node: batch.node.clone(),
                    max: limits.max_agents,
                });
            }
            if let Some(status) = &batch.status {
                let claim_ms = CLAIM_TTL.as_millis() as u64;
                for other in agents.values() {
                    if other.node == batch.node {
                        continue;
                    }
                    let live = other.connected_streams > 0
                        || now.saturating_sub(other.last_seen_ms) < claim_ms;
                    let Some((theirs, _)) = other.status.as_ref().filter(|_| live) else {
                        continue;
                    };
                    if let Some(m) = status
                        .members
                        .iter()
                        .find(|m| theirs.members.iter().any(|t| same_member(m, t)))
                    {
                        self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                        let err = BatchError::Conflict {
                            node: batch.node.clone(),
                            member: m.name.clone(),
                            owner: other.node.clone(),
                        };
                        return Err(err);
                    }
                }
            }
            let record = agents
                .entry(batch.node.clone())
                .or_insert_with(|| AgentRecord {
                    node: batch.node.clone(),
                    ..AgentRecord::default()
                });
            let mut out = Accepted::default();
            record.last_seen_ms = now;
            if record.boot_id != batch.boot_id {
                // A new agent run: its numbering starts over. What the old run still had queued
                // is unknowable, so only gaps inside a run are counted.
                out.new_boot = !record.boot_id.is_empty();
                record.boot_id = batch.boot_id.clone();
                record.last_sequence = batch.sequence.saturating_sub(1);
                record.expected_offset = batch.event_offset;
            }
            if batch.sequence <= record.last_sequence {
                record.duplicate_batches = record.duplicate_batches.saturating_add(1);
                out.duplicate = true;
                return Ok((out, None));
            }
            let events = batch.events.len() as u64;
            out.lost_batches = batch.sequence - record.last_sequence - 1;
            out.lost_events = batch.event_offset.saturating_sub(record.expected_offset);
            record.lost_batches = record.lost_batches.saturating_add(out.lost_batches);
            record.lost_events = record.lost_events.saturating_add(out.lost_events);
            record.last_sequence = batch.sequence;
            record.expected_offset = batch.event_offset.saturating_add(events);
            record.batches = record.batches.saturating_add(1);
            record.events = record.events.saturating_add(events);
            if let Some(status) = &batch.status {
                record.status = Some((status.clone(), now));
            }
            Ok((out, Some(record.clone())))
        })?;
        // Queued outside the lock for the writer thread: a slow disk never blocks ingest.
        if let Some(saved) = saved {
            self.save(&saved);
        }
        Ok(out)
    }

    /// Counts a refused batch against its node, when that node is already known (a refused
    /// batch never creates a record).
    pub fn reject(&self, node: &str) {
        self.write(|agents| {
            if let Some(r) = agents.get_mut(node) {
                r.rejected_batches = r.rejected_batches.saturating_add(1);
            }
        });
    }

    /// Marks a Push stream of a known `node` opened (+1) or closed (-1).
    pub fn stream(&self, node: &str, opened: bool) {
        self.write(|agents| {
            if let Some(r) = agents.get_mut(node) {
                if opened {
                    r.connected_streams = r.connected_streams.saturating_add(1);
                } else {
                    r.connected_streams = r.connected_streams.saturating_sub(1);
                }
            }
        });
    }

    /// Forgets agents silent for longer than the expiry; returns their node names.
    pub fn expire(&self, now_ms: u64) -> Vec<String> {
        let expiry = self.limits.expiry.as_millis() as u64;
        let gone = self.write(|agents| {
            let gone: Vec<String> = agents
                .values()
                .filter(|r| now_ms.saturating_sub(r.last_seen_ms) > expiry)
                .map(|r| r.node.clone())
                .collect();
            for node in &gone {
                agents.remove(node);
            }
            gone
        });
        self.counters
            .expired
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        gone
    }

    /// The agent identity that is this member, with the status it came in.
    pub fn find(&self, member: &MemberState) -> Option<(AgentRecord, MemberIdentity)> {
        let agents = sync::read(&self.agents);
        agents.values().find_map(|record| {
            let (status, _) = record.status.as_ref()?;
            let identity = status.members.iter().find(|id| join::matches(id, member))?;
            Some((record.clone(), identity.clone()))
        })
    }

    /// The kernel view of `member`, when an agent reports it.
    pub fn kernel_view(&self, member: &MemberState) -> Option<KernelView> {
        let (record, identity) = self.find(member)?;
        let (status, at) = record.status.as_ref()?;
        Some(join::kernel_view(
            &record.node,
            status,
            &identity,
            *at,
            record.lost_events,
        ))
    }

    /// Cumulative in-kernel WAL `fdatasync` histogram of `member`, when an agent reports it.
    pub fn wal_fsync_slots(
        &self,
        member: &MemberState,
    ) -> Option<etcd_monitor_histogram::Log2Slots> {
        let (record, identity) = self.find(member)?;
        let (status, _) = record.status.as_ref()?;
        join::wal_fsync_slots(status, &identity.name)
    }

    /// The member name an agent-side name maps to in `members` (for events).
    pub fn member_for(
        &self,
        node: &str,
        agent_member: &str,
        members: &[MemberState],
    ) -> Option<MemberState> {
        let agents = sync::read(&self.agents);
        let (status, _) = agents.get(node)?.status.as_ref()?;
        let identity = status.members.iter().find(|id| id.name == agent_member)?;
        members.iter().find(|m| join::matches(identity, m)).cloned()
    }
}

/// The writer thread: takes what is queued, keeps the newest row per node and writes them in
/// one transaction, until the registry is dropped.
fn write_sequences(store: &Store, rx: &Receiver<AgentSequence>, counters: &RegistryCounters) {
    while let Ok(first) = rx.recv() {
        let mut latest: HashMap<String, AgentSequence> = HashMap::new();
        latest.insert(first.node.clone(), first);
        while let Ok(row) = rx.try_recv() {
            latest.insert(row.node.clone(), row);
            if latest.len() >= 1024 {
                break;
            }
        }
        let rows: Vec<AgentSequence> = latest.into_values().collect();
        match store.save_agent_sequences(&rows) {
            Ok(()) => {
                counters
                    .writes
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, rows = rows.len(), "Saving agent sequence state failed.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use etcd_monitor_proto::v1::{Event, ProcessEvent, event::Payload};

    use super::*;

    fn batch(boot: &str, sequence: u64, event_offset: u64, events: usize) -> EventBatch {
        EventBatch {
            node: "n1".into(),
            boot_id: boot.into(),
            sequence,
            event_offset,
            events: (0..events)
                .map(|_| Event {
                    payload: Some(Payload::Process(ProcessEvent::default())),
                    ..Event::default()
                })
                .collect(),
            ..EventBatch::default()
        }
    }

    fn status(peer: &str) -> AgentStatus {
        AgentStatus {
            mode: "ebpf".into(),
            members: vec![MemberIdentity {
                name: "m0".into(),
                peer_urls: vec![peer.into()],
                ..MemberIdentity::default()
            }],
            ..AgentStatus::default()
        }
    }

    #[test]
    fn gaps_are_counted_exactly() -> Result<(), BatchError> {
        let reg = AgentRegistry::new();
        assert_eq!(reg.accept(&batch("a", 1, 0, 10))?, Accepted::default());
        assert_eq!(reg.accept(&batch("a", 2, 10, 5))?, Accepted::default());
        // Batches 3 and 4 (7 + 8 events) never arrive.
        let got = reg.accept(&batch("a", 5, 30, 1))?;
        assert_eq!((got.lost_batches, got.lost_events), (2, 15));
        assert!(reg.accept(&batch("a", 5, 30, 1))?.duplicate);
        // The agent restarts: numbering starts over, no false gap.
        let got = reg.accept(&batch("b", 1, 0, 4))?;
        assert!(got.new_boot);
        assert_eq!(got.lost_events, 0);
        let r = &reg.snapshot()[0];
        assert_eq!(
            (
                r.batches,
                r.events,
                r.lost_events,
                r.lost_batches,
                r.duplicate_batches
            ),
            (4, 20, 15, 2, 1)
        );
        Ok(())
    }

    #[test]
    fn a_restarted_agent_that_lost_its_first_batches_is_still_counted() -> Result<(), BatchError> {
        let reg = AgentRegistry::new();
        let got = reg.accept(&batch("a", 3, 40, 1))?;
        assert_eq!(
            got.lost_events, 0,
            "what came before the collector heard of the agent is unknown"
        );
        let got = reg.accept(&batch("a", 5, 50, 1))?;
        assert_eq!((got.lost_batches, got.lost_events), (1, 9));
        Ok(())
    }

    #[test]
    fn counters_near_u64_max_saturate() -> Result<(), BatchError> {
        let reg = AgentRegistry::new();
        reg.accept(&batch("a", u64::MAX - 1, u64::MAX - 1, 3))?;
        let got = reg.accept(&batch("a", u64::MAX, u64::MAX, 3))?;
        assert_eq!(got.lost_batches, 0);
        let r = &reg.snapshot()[0];
        assert_eq!(r.expected_offset, u64::MAX);
        Ok(())
    }

    #[test]
    fn malformed_batches_are_named() {
        let mut b = batch("a", 1, 0, 1);
        b.node.clear();
        assert_eq!(validate(&b, 0), Err(BatchError::NoNode));
        let mut b = batch("a", 0, 0, 1);
        assert!(
            validate(&b, 0)
                .unwrap_err()
                .to_string()
                .contains("sequence 0")
        );
        b.sequence = 1;
        b.events[0].payload = None;
        assert!(
            validate(&b, 0)
                .unwrap_err()
                .to_string()
                .contains("event 0 has no payload")
        );
        assert!(validate(&batch("a", 1, 0, 3), 0).is_ok());
        let big = batch("a", 1, 0, 3);
        let size = prost::Message::encoded_len(&big);
        assert!(validate(&big, size).is_ok());
        let err = validate(&big, size - 1).unwrap_err().to_string();
        assert!(err.contains("--grpc-max-batch-bytes"), "{err}");
    }

    #[test]
    fn node_names_are_dns_1123_subdomains() {
        for ok in ["node-a", "n1", "ip-10-0-0-1.ec2.internal", &"a".repeat(63)] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Node-A",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a b",
            "é",
            &"a.".repeat(127),
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
        let mut b = batch("a", 1, 0, 1);
        b.node = "x".repeat(4 << 20);
        assert_eq!(validate(&b, 0).map_err(|e| e.reason()), Err("invalid_node"));
    }

    #[test]
    fn statuses_over_the_limits_are_refused_by_field() {
        let mut b = batch("a", 1, 0, 1);
        let mut s = status("http://10.0.0.1:2380");
        s.members = vec![MemberIdentity::default(); 5000];
        b.status = Some(s);
        let err = validate(&b, 0).unwrap_err();
        assert_eq!(err.reason(), "too_many_entries");
        assert!(err.to_string().contains("status.members"), "{err}");
        let mut s = status("p");
        s.mode = "x".repeat(MAX_LABEL_BYTES + 1);
        b.status = Some(s);
        assert_eq!(
            validate(&b, 0).map_err(|e| e.reason()),
            Err("label_too_long")
        );
        let mut s = status("p");
        s.histograms = vec![etcd_monitor_proto::v1::KernelHistogram {
            log2_slots: vec![1; 65],
            ..Default::default()
        }];
        b.status = Some(s);
        assert_eq!(validate(&b, 0).map_err(|e| e.reason()), Err("bad_slots"));
    }

    #[test]
    fn refused_agents_leave_no_record_and_the_cap_holds() {
        let reg = AgentRegistry::new().with_limits(AgentLimits {
            max_agents: 2,
            ..AgentLimits::default()
        });
        reg.reject("never-seen");
        assert!(reg.is_empty(), "a refused batch creates no record");
        for node in ["a", "b", "c"] {
            let mut b = batch("x", 1, 0, 1);
            b.node = node.into();
            let got = reg.accept(&b);
            assert_eq!(got.is_ok(), node != "c", "{node}: {got:?}");
        }
        assert_eq!(reg.len(), 2);
        // Expiry frees room.
        assert_eq!(reg.expire(now_ms() + 601_000).len(), 2);
        assert!(reg.is_empty());
        assert_eq!(reg.counters.expired.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_member_claimed_by_a_live_agent_cannot_be_claimed_by_another() -> Result<(), BatchError> {
        let reg = AgentRegistry::new();
        let mut first = batch("x", 1, 0, 1);
        first.node = "node-a".into();
        first.status = Some(status("http://10.0.0.1:2380"));
        reg.accept(&first)?;
        let mut rogue = batch("y", 1, 0, 1);
        rogue.node = "rogue".into();
        rogue.status = Some(status("http://10.0.0.1:2380/"));
        let err = reg.accept(&rogue).unwrap_err();
        assert_eq!(err.reason(), "conflict");
        assert!(err.to_string().contains("node-a"), "{err}");
        assert_eq!(reg.len(), 1, "the refused agent has no record");
        first.sequence = 2;
        assert!(reg.accept(&first).is_ok(), "the first keeps working");
        // Another member is fine.
        rogue.status = Some(status("http://10.0.0.2:2380"));
        assert!(reg.accept(&rogue).is_ok());
        assert_eq!(reg.counters.conflicts.load(Ordering::Relaxed), 1);
        Ok(())
    }

    mod property {
        use etcd_monitor_proto::v1::{KernelHistogram, PeerStats};
        use proptest::prelude::*;

        use super::*;

        fn arb_status() -> impl Strategy<Value = AgentStatus> {
            (
                ".{0,140}",
                proptest::collection::vec(
                    (
                        prop_oneof!["m[0-9]", ".{0,150}"],
                        proptest::collection::vec("http://10\\.0\\.0\\.[0-9]:2380", 0..3),
                    ),
                    0..24,
                ),
                proptest::collection::vec(
                    (
                        "m[0-9]",
                        any::<u64>(),
                        proptest::collection::vec(any::<u64>(), 0..70),
                    ),
                    0..8,
                ),
                proptest::collection::vec(("m[0-9]", ".{0,140}"), 0..40),
            )
                .prop_map(|(mode, members, hists, peers)| AgentStatus {
                    mode,
                    members: members
                        .into_iter()
                        .map(|(name, peer_urls)| MemberIdentity {
                            name,
                            peer_urls,
                            ..MemberIdentity::default()
                        })
                        .collect(),
                    histograms: hists
                        .into_iter()
                        .map(|(member, count, log2_slots)| KernelHistogram {
                            member,
                            count,
                            sum_nanos: count,
                            log2_slots,
                            ..KernelHistogram::default()
                        })
                        .collect(),
                    peers: peers
                        .into_iter()
                        .map(|(member, peer_addr)| PeerStats {
                            member,
                            peer_addr,
                            ..PeerStats::default()
                        })
                        .collect(),
                    ..AgentStatus::default()
                })
        }

        fn arb_batch() -> impl Strategy<Value = EventBatch> {
            (
                prop_oneof!["n[0-3]", "[a-z0-9][a-z0-9.-]{0,30}", ".{0,300}"],
                prop_oneof![Just("boot".to_string()), ".{0,140}"],
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<bool>(), 0..40),
                proptest::option::of(arb_status()),
            )
                .prop_map(|(node, boot_id, sequence, event_offset, events, status)| {
                    EventBatch {
                        node,
                        boot_id,
                        sequence: sequence % 4,
                        event_offset,
                        events: events
                            .into_iter()
                            .map(|payload| Event {
                                payload: payload.then(|| Payload::Process(ProcessEvent::default())),
                                ..Event::default()
                            })
                            .collect(),
                        status,
                        ..EventBatch::default()
                    }
                })
        }

        proptest! {
            #[test]
            fn random_batches_never_panic_and_accepted_ones_hold_the_invariants(
                batches in proptest::collection::vec(arb_batch(), 1..12)
            ) {
                let limits = AgentLimits { max_agents: 3, ..AgentLimits::default() };
                let reg = AgentRegistry::new().with_limits(limits);
                for b in &batches {
                    let known = reg.snapshot().iter().any(|r| r.node == b.node);
                    match validate_with(b, 1 << 20, &limits) {
                        Err(e) => {
                            prop_assert!(BatchError::REASONS.contains(&e.reason()));
                            prop_assert!(!e.to_string().is_empty());
                            reg.reject(&b.node);
                            prop_assert_eq!(
                                reg.snapshot().iter().any(|r| r.node == b.node),
                                known,
                                "a refused batch creates no record"
                            );
                        }
                        Ok(()) => {
                            prop_assert!(validate_node_name(&b.node).is_ok());
                            prop_assert!(b.node.len() <= MAX_NODE_BYTES);
                            prop_assert!(b.sequence >= 1 && !b.boot_id.is_empty());
                            prop_assert!(b.events.iter().all(|e| e.payload.is_some()));
                            prop_assert!(prost::Message::encoded_len(b) <= 1 << 20);
                            if let Some(s) = &b.status {
                                prop_assert!(s.members.len() <= limits.max_members);
                                prop_assert!(s.mode.len() <= MAX_LABEL_BYTES);
                                prop_assert!(s.members.iter().all(|m| m.name.len() <= MAX_LABEL_BYTES));
                                prop_assert!(s.histograms.iter().all(|h| h.log2_slots.len() <= MAX_SLOTS));
                                prop_assert!(s.peers.iter().all(|p| p.peer_addr.len() <= MAX_LABEL_BYTES));
                            }
                            match reg.accept(b) {
                                Ok(_) => {
                                    let r = reg.snapshot().into_iter().find(|r| r.node == b.node);
                                    prop_assert!(r.is_some());
                                    let r = r.unwrap_or_default();
                                    prop_assert!(r.last_sequence >= 1);
                                    prop_assert!(r.batches >= 1);
                                }
                                Err(e) => {
                                    prop_assert!(matches!(e.reason(), "too_many_agents" | "conflict"));
                                    prop_assert_eq!(
                                        reg.snapshot().iter().any(|r| r.node == b.node),
                                        known
                                    );
                                }
                            }
                            prop_assert!(reg.len() <= limits.max_agents);
                            // The kernel view and quantiles of whatever was accepted never
                            // panic, whatever the counters.
                            if let Some(s) = &b.status {
                                for m in &s.members {
                                    let _ = join::kernel_view(&b.node, s, m, 0, u64::MAX);
                                    let _ = join::wal_fsync_slots(s, &m.name);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
