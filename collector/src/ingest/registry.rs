//! Every agent the collector has heard from: sequence bookkeeping (lost events counted exactly
//! from sequence numbers and event offsets) and the latest status.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use etcd_monitor_proto::v1::{AgentStatus, EventBatch, MemberIdentity};

use super::join::{self, KernelView};
use crate::{
    cluster::{MemberState, now_ms},
    store::{AgentSequence, Store, StoreError},
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
    /// Batches rejected as malformed.
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

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No node name.
    #[error("batch has no node name")]
    NoNode,
    /// No boot id.
    #[error("batch from {0} has no boot id")]
    NoBootId(String),
    /// Sequence 0.
    #[error("batch from {0} has sequence 0 (sequences start at 1)")]
    ZeroSequence(String),
    /// Too many events.
    #[error("batch from {node} has {events} events, more than the {max} allowed")]
    TooManyEvents {
        /// Node.
        node: String,
        /// Events in the batch.
        events: usize,
        /// Limit.
        max: usize,
    },
    /// Larger than `--grpc-max-batch-bytes`.
    #[error(
        "batch from {node} is {bytes} bytes, more than the {max} allowed (--grpc-max-batch-bytes)"
    )]
    TooLarge {
        /// Node.
        node: String,
        /// Encoded size.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// An event without a payload.
    #[error("batch from {node}: event {index} has no payload")]
    EmptyEvent {
        /// Node.
        node: String,
        /// Index in the batch.
        index: usize,
    },
}

/// Most events one batch may carry (the agent sends ≤ 65,536).
pub const MAX_EVENTS_PER_BATCH: usize = 65_536;

/// Checks a batch's shape and size (`max_bytes` encoded; 0 = no limit) before it touches any
/// state.
pub fn validate(batch: &EventBatch, max_bytes: usize) -> Result<(), BatchError> {
    if batch.node.is_empty() {
        return Err(BatchError::NoNode);
    }
    if batch.boot_id.is_empty() {
        return Err(BatchError::NoBootId(batch.node.clone()));
    }
    if batch.sequence == 0 {
        return Err(BatchError::ZeroSequence(batch.node.clone()));
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
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(BatchError::TooManyEvents {
            node: batch.node.clone(),
            events: batch.events.len(),
            max: MAX_EVENTS_PER_BATCH,
        });
    }
    if let Some(index) = batch.events.iter().position(|e| e.payload.is_none()) {
        return Err(BatchError::EmptyEvent {
            node: batch.node.clone(),
            index,
        });
    }
    Ok(())
}

/// All agents.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    agents: RwLock<HashMap<String, AgentRecord>>,
    store: Option<Arc<Store>>,
}

impl AgentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that saves every agent's sequence bookkeeping in `store` and starts from
    /// what it saved before, so a collector restart still counts transit losses exactly.
    pub fn persistent(store: Arc<Store>) -> Result<Self, StoreError> {
        let mut agents = HashMap::new();
        for saved in store.agent_sequences()? {
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
                    ..AgentRecord::default()
                },
            );
        }
        Ok(Self {
            agents: RwLock::new(agents),
            store: Some(store),
        })
    }

    fn save(&self, r: &AgentRecord) {
        if let Some(store) = &self.store {
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
            if let Err(e) = store.save_agent_sequence(&row) {
                tracing::warn!(error = %e, node = %r.node, "Saving agent sequence state failed.");
            }
        }
    }

    fn write<R>(&self, f: impl FnOnce(&mut HashMap<String, AgentRecord>) -> R) -> R {
        match self.agents.write() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = match self.agents.read() {
            Ok(g) => g.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// Records a valid batch; returns what its sequence numbers say about losses.
    pub fn accept(&self, batch: &EventBatch) -> Accepted {
        let now = now_ms();
        let (out, saved) = self.write(|agents| {
            let record = agents
                .entry(batch.node.clone())
                .or_insert_with(|| AgentRecord {
                    node: batch.node.clone(),
                    ..AgentRecord::default()
                });
            let mut out = Accepted::default();
            if record.boot_id != batch.boot_id {
                // A new agent run: its numbering starts over. What the old run still had queued
                // is unknowable, so only gaps inside a run are counted.
                out.new_boot = !record.boot_id.is_empty();
                record.boot_id = batch.boot_id.clone();
                record.last_sequence = batch.sequence - 1;
                record.expected_offset = batch.event_offset;
            }
            if batch.sequence <= record.last_sequence {
                record.duplicate_batches += 1;
                out.duplicate = true;
                return (out, None);
            }
            out.lost_batches = batch.sequence - record.last_sequence - 1;
            out.lost_events = batch.event_offset.saturating_sub(record.expected_offset);
            record.lost_batches += out.lost_batches;
            record.lost_events += out.lost_events;
            record.last_sequence = batch.sequence;
            record.expected_offset = batch.event_offset + batch.events.len() as u64;
            record.batches += 1;
            record.events += batch.events.len() as u64;
            record.last_seen_ms = now;
            if let Some(status) = &batch.status {
                record.status = Some((status.clone(), now));
            }
            (out, Some(record.clone()))
        });
        // Saved outside the lock: a slow disk never blocks readers of the registry.
        if let Some(saved) = saved {
            self.save(&saved);
        }
        out
    }

    /// Counts a rejected batch against its node (when it names one).
    pub fn reject(&self, node: &str) {
        if node.is_empty() {
            return;
        }
        self.write(|agents| {
            agents
                .entry(node.to_string())
                .or_insert_with(|| AgentRecord {
                    node: node.to_string(),
                    ..AgentRecord::default()
                })
                .rejected_batches += 1;
        });
    }

    /// Marks a Push stream of `node` opened (+1) or closed (-1).
    pub fn stream(&self, node: &str, opened: bool) {
        self.write(|agents| {
            let r = agents
                .entry(node.to_string())
                .or_insert_with(|| AgentRecord {
                    node: node.to_string(),
                    ..AgentRecord::default()
                });
            if opened {
                r.connected_streams += 1;
            } else {
                r.connected_streams = r.connected_streams.saturating_sub(1);
            }
        });
    }

    /// The agent identity that is this member, with the status it came in.
    pub fn find(&self, member: &MemberState) -> Option<(AgentRecord, MemberIdentity)> {
        let agents = match self.agents.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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
        let agents = match self.agents.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (status, _) = agents.get(node)?.status.as_ref()?;
        let identity = status.members.iter().find(|id| id.name == agent_member)?;
        members.iter().find(|m| join::matches(identity, m)).cloned()
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

    #[test]
    fn gaps_are_counted_exactly() {
        let reg = AgentRegistry::new();
        assert_eq!(reg.accept(&batch("a", 1, 0, 10)), Accepted::default());
        assert_eq!(reg.accept(&batch("a", 2, 10, 5)), Accepted::default());
        // Batches 3 and 4 (7 + 8 events) never arrive.
        let got = reg.accept(&batch("a", 5, 30, 1));
        assert_eq!((got.lost_batches, got.lost_events), (2, 15));
        assert!(reg.accept(&batch("a", 5, 30, 1)).duplicate);
        // The agent restarts: numbering starts over, no false gap.
        let got = reg.accept(&batch("b", 1, 0, 4));
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
    }

    #[test]
    fn a_restarted_agent_that_lost_its_first_batches_is_still_counted() {
        let reg = AgentRegistry::new();
        let got = reg.accept(&batch("a", 3, 40, 1));
        assert_eq!(
            got.lost_events, 0,
            "what came before the collector heard of the agent is unknown"
        );
        let got = reg.accept(&batch("a", 5, 50, 1));
        assert_eq!((got.lost_batches, got.lost_events), (1, 9));
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
}
