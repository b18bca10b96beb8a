//! Groups events into `EventBatch`es with per-boot sequence numbers and event offsets, so the
//! collector can count exactly what never arrived.

use std::sync::Arc;

use etcd_monitor_proto::v1::{AgentStatus, Event, EventBatch};

use super::BatchQueue;

/// Accumulates events and pushes full (or timed-out) batches into the queue.
pub struct Batcher {
    node: String,
    boot_id: String,
    next_sequence: u64,
    event_offset: u64,
    max_events: usize,
    events: Vec<Event>,
    status: Option<AgentStatus>,
    queue: Arc<BatchQueue>,
}

impl Batcher {
    /// A batcher for agent `node` / `boot_id` pushing into `queue`.
    pub fn new(node: String, boot_id: String, max_events: usize, queue: Arc<BatchQueue>) -> Self {
        Self {
            node,
            boot_id,
            next_sequence: 1,
            event_offset: 0,
            max_events: max_events.max(1),
            events: Vec::with_capacity(max_events.max(1)),
            status: None,
            queue,
        }
    }

    /// Adds an event; a full batch leaves at once.
    pub fn add(&mut self, event: Event) {
        self.events.push(event);
        if self.events.len() >= self.max_events {
            self.flush();
        }
    }

    /// Attaches a status snapshot to the next batch and sends it now.
    pub fn send_status(&mut self, status: AgentStatus) {
        self.status = Some(status);
        self.flush();
    }

    /// Sends what is pending (nothing when there is nothing).
    pub fn flush(&mut self) {
        if self.events.is_empty() && self.status.is_none() {
            return;
        }
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(self.max_events));
        let count = events.len() as u64;
        let batch = EventBatch {
            node: self.node.clone(),
            boot_id: self.boot_id.clone(),
            sequence: self.next_sequence,
            event_offset: self.event_offset,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            status: self.status.take(),
            events,
        };
        self.next_sequence += 1;
        self.event_offset += count;
        self.queue.push(batch);
    }

    /// Events put into batches so far.
    pub fn events_batched(&self) -> u64 {
        self.event_offset
    }
}

/// A random id for this agent run (kernel UUID, or time and pid when unreadable).
pub fn new_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{nanos:x}-{:x}", std::process::id())
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn batches_carry_sequences_and_offsets() {
        let queue = Arc::new(BatchQueue::new(1 << 20, Arc::new(AtomicU64::new(0))));
        let mut batcher = Batcher::new("n1".into(), "boot".into(), 3, queue.clone());
        for _ in 0..7 {
            batcher.add(Event::default());
        }
        batcher.flush();
        batcher.flush(); // nothing pending: no empty batch
        batcher.send_status(AgentStatus {
            mode: "ebpf".into(),
            ..Default::default()
        });
        let batches: Vec<EventBatch> = std::iter::from_fn(|| queue.try_pop()).collect();
        let shape: Vec<(u64, u64, usize, bool)> = batches
            .iter()
            .map(|b| {
                (
                    b.sequence,
                    b.event_offset,
                    b.events.len(),
                    b.status.is_some(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (1, 0, 3, false),
                (2, 3, 3, false),
                (3, 6, 1, false),
                (4, 7, 0, true)
            ]
        );
        assert!(
            batches
                .iter()
                .all(|b| b.node == "n1" && b.boot_id == "boot")
        );
        assert_eq!(batcher.events_batched(), 7);
    }
}
