//! A bounded queue of batches that drops the oldest when full and counts what it drops.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use etcd_monitor_runtime::sync::lock;

use etcd_monitor_proto::v1::EventBatch;
use prost::Message;

/// Batches waiting for the gRPC stream, capped in bytes.
pub struct BatchQueue {
    inner: Mutex<Inner>,
    ready: tokio::sync::Notify,
    max_bytes: usize,
    dropped_events: Arc<AtomicU64>,
    dropped_batches: AtomicU64,
}

#[derive(Default)]
struct Inner {
    batches: VecDeque<(EventBatch, usize)>,
    bytes: usize,
}

impl BatchQueue {
    /// A queue holding at most `max_bytes` of encoded batches; dropped events are added to
    /// `dropped_events`.
    pub fn new(max_bytes: usize, dropped_events: Arc<AtomicU64>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: tokio::sync::Notify::new(),
            max_bytes,
            dropped_events,
            dropped_batches: AtomicU64::new(0),
        }
    }

    /// Adds a batch, first dropping the oldest ones while it would not fit. Never blocks
    /// beyond a short lock.
    pub fn push(&self, batch: EventBatch) {
        let size = batch.encoded_len();
        let mut inner = lock(&self.inner);
        while inner.bytes + size > self.max_bytes {
            let Some((old, old_size)) = inner.batches.pop_front() else {
                break;
            };
            inner.bytes -= old_size;
            self.dropped_events
                .fetch_add(old.events.len() as u64, Ordering::Relaxed);
            self.dropped_batches.fetch_add(1, Ordering::Relaxed);
        }
        inner.bytes += size;
        inner.batches.push_back((batch, size));
        drop(inner);
        self.ready.notify_one();
    }

    /// Takes the oldest batch, if any.
    pub fn try_pop(&self) -> Option<EventBatch> {
        let mut inner = lock(&self.inner);
        let (batch, size) = inner.batches.pop_front()?;
        inner.bytes -= size;
        Some(batch)
    }

    /// Waits for and takes the oldest batch.
    pub async fn pop(&self) -> EventBatch {
        loop {
            if let Some(batch) = self.try_pop() {
                return batch;
            }
            self.ready.notified().await;
        }
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        lock(&self.inner).batches.len()
    }

    /// Whether no batch waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded bytes waiting.
    pub fn bytes(&self) -> usize {
        lock(&self.inner).bytes
    }

    /// Batches dropped so far.
    pub fn dropped_batches(&self) -> u64 {
        self.dropped_batches.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use etcd_monitor_proto::v1::Event;

    use super::*;

    fn batch(sequence: u64, events: usize) -> EventBatch {
        EventBatch {
            sequence,
            events: (0..events)
                .map(|_| Event {
                    member: "m".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn drops_oldest_when_full_and_counts_events() {
        let dropped = Arc::new(AtomicU64::new(0));
        let one = batch(1, 10).encoded_len();
        let queue = BatchQueue::new(one * 3, dropped.clone());
        for seq in 1..=5 {
            queue.push(batch(seq, 10));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(dropped.load(Ordering::Relaxed), 20);
        assert_eq!(queue.dropped_batches(), 2);
        assert_eq!(
            queue.try_pop().map(|b| b.sequence),
            Some(3),
            "oldest kept is 3"
        );
        assert!(queue.bytes() <= one * 2);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let queue = Arc::new(BatchQueue::new(1 << 20, Arc::new(AtomicU64::new(0))));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.sequence }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        queue.push(batch(7, 1));
        assert_eq!(waiter.await.expect("join"), 7);
    }
}
