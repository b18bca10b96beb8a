//! Delivering events to subscribers. Each subscriber has its own bounded buffer; when it is
//! full the event is dropped for that subscriber only, counted, and the next event it does get
//! says how many it missed (`Event.subscriber_lagged`). Publishing never waits.

use crate::model::sync;
use std::{
    collections::HashSet,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use etcd_monitor_proto::v1::{DiskOp, Event, SubscribeRequest, event::Payload};
use tokio::sync::mpsc::{self, error::TrySendError};

/// Payload kinds a subscriber can ask for.
pub const KINDS: [&str; 4] = ["disk", "net", "process", "watch"];

/// What one subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    member: String,
    cluster: String,
    kinds: HashSet<&'static str>,
    ops: HashSet<i32>,
    min_duration_nanos: u64,
}

impl Filter {
    /// Checks and converts a request; the error names the bad field.
    pub fn from_request(req: &SubscribeRequest) -> Result<Self, String> {
        let mut kinds = HashSet::new();
        for kind in &req.kinds {
            let known = KINDS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(kind))
                .ok_or_else(|| {
                    format!(
                        "kinds: unknown kind {kind:?} (expected one of {})",
                        KINDS.join(", ")
                    )
                })?;
            kinds.insert(*known);
        }
        let mut ops = HashSet::new();
        for op in &req.ops {
            match DiskOp::try_from(*op) {
                Ok(DiskOp::Unspecified) | Err(_) => {
                    return Err(format!("ops: unknown disk op {op}"));
                }
                Ok(_) => {
                    ops.insert(*op);
                }
            }
        }
        Ok(Self {
            member: req.member.clone(),
            cluster: req.cluster.clone(),
            kinds,
            ops,
            min_duration_nanos: req.min_duration_nanos,
        })
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        if !self.member.is_empty() && event.member != self.member {
            return false;
        }
        if !self.cluster.is_empty() && event.cluster != self.cluster {
            return false;
        }
        let Some(payload) = &event.payload else {
            return false;
        };
        let kind = match payload {
            Payload::Disk(_) => "disk",
            Payload::Net(_) => "net",
            Payload::Process(_) => "process",
            Payload::Watch(_) => "watch",
        };
        if !self.kinds.is_empty() && !self.kinds.contains(kind) {
            return false;
        }
        if let Payload::Disk(d) = payload {
            if d.duration_nanos < self.min_duration_nanos {
                return false;
            }
            if !self.ops.is_empty() && !self.ops.contains(&d.op) {
                return false;
            }
        }
        true
    }
}

struct Subscriber {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<Event>,
    /// Missed since the last delivered event.
    pending_lag: AtomicU64,
    stats: Arc<SubscriberCounters>,
}

/// Counters of one subscriber.
#[derive(Debug, Default)]
pub struct SubscriberCounters {
    /// Events delivered into its buffer.
    pub delivered: AtomicU64,
    /// Events it missed because its buffer was full.
    pub lagged: AtomicU64,
}

/// A subscriber as listed in stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStats {
    /// The subscriber's number: 1 for the first since the collector started, then counting up.
    pub id: u64,
    /// Events queued to it since it subscribed.
    pub delivered: u64,
    /// Events it missed because its queue was full (it fell behind).
    pub lagged: u64,
}

/// All subscribers.
pub struct Fanout {
    subscribers: RwLock<Vec<Subscriber>>,
    next_id: AtomicU64,
    capacity: usize,
    max_subscribers: usize,
    /// Events published.
    pub published: AtomicU64,
    /// Events missed by any subscriber, all time.
    pub lagged_total: AtomicU64,
    /// Subscribe calls refused because `--max-subscribers` were open.
    pub refused: AtomicU64,
    /// Subscribers removed after they went away.
    pub removed: AtomicU64,
}

/// `--max-subscribers` are already open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max} subscribers are already open (--max-subscribers); try again later")]
pub struct TooManySubscribers {
    /// The limit.
    pub max: usize,
}

impl Fanout {
    /// Fan-out with `capacity` events of buffer per subscriber and no practical cap on
    /// subscribers.
    pub fn new(capacity: usize) -> Self {
        Self::bounded(capacity, usize::MAX)
    }

    /// Fan-out with `capacity` events of buffer per subscriber and at most `max_subscribers`.
    pub fn bounded(capacity: usize, max_subscribers: usize) -> Self {
        Self {
            subscribers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            capacity: capacity.max(1),
            max_subscribers,
            published: AtomicU64::new(0),
            lagged_total: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        }
    }

    /// Adds a subscriber; events arrive on the receiver until it is dropped. Subscribers that
    /// went away are removed first; refused (and counted) when `max_subscribers` remain open.
    pub fn subscribe(
        &self,
        filter: Filter,
    ) -> Result<(u64, mpsc::Receiver<Event>, Arc<SubscriberCounters>), TooManySubscribers> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(SubscriberCounters::default());
        let sub = Subscriber {
            id,
            filter,
            tx,
            pending_lag: AtomicU64::new(0),
            stats: stats.clone(),
        };
        let mut subs = sync::write(&self.subscribers);
        if subs.len() >= self.max_subscribers {
            let before = subs.len();
            subs.retain(|s| !s.tx.is_closed());
            self.removed
                .fetch_add((before - subs.len()) as u64, Ordering::Relaxed);
        }
        if subs.len() >= self.max_subscribers {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(TooManySubscribers {
                max: self.max_subscribers,
            });
        }
        subs.push(sub);
        Ok((id, rx, stats))
    }

    /// Removes every subscriber that went away (its stream closed), whether or not an event
    /// matched its filter since; returns how many.
    pub fn sweep(&self) -> usize {
        let closed = {
            let subs = sync::read(&self.subscribers);
            subs.iter().any(|s| s.tx.is_closed())
        };
        if !closed {
            return 0;
        }
        let mut subs = sync::write(&self.subscribers);
        let before = subs.len();
        subs.retain(|s| !s.tx.is_closed());
        let gone = before - subs.len();
        self.removed.fetch_add(gone as u64, Ordering::Relaxed);
        gone
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        sync::read(&self.subscribers).len()
    }

    /// Whether nobody subscribes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per-subscriber counters.
    pub fn stats(&self) -> Vec<SubscriberStats> {
        let subs = sync::read(&self.subscribers);
        subs.iter()
            .map(|s| SubscriberStats {
                id: s.id,
                delivered: s.stats.delivered.load(Ordering::Relaxed),
                lagged: s.stats.lagged.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Offers `events` to every subscriber without waiting.
    pub fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut gone = Vec::new();
        {
            let subs = sync::read(&self.subscribers);
            for sub in subs.iter() {
                if sub.tx.is_closed() {
                    gone.push(sub.id);
                    continue;
                }
                for event in events {
                    if !sub.filter.matches(event) {
                        continue;
                    }
                    let missed = sub.pending_lag.swap(0, Ordering::Relaxed);
                    let result = if missed == 0 {
                        sub.tx.try_send(event.clone())
                    } else {
                        let mut e = event.clone();
                        e.subscriber_lagged = missed;
                        sub.tx.try_send(e)
                    };
                    match result {
                        Ok(()) => {
                            sub.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Full(_)) => {
                            sub.pending_lag.fetch_add(missed + 1, Ordering::Relaxed);
                            sub.stats.lagged.fetch_add(1, Ordering::Relaxed);
                            self.lagged_total.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Closed(_)) => {
                            gone.push(sub.id);
                            break;
                        }
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut subs = sync::write(&self.subscribers);
            let before = subs.len();
            subs.retain(|s| !gone.contains(&s.id));
            self.removed
                .fetch_add((before - subs.len()) as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use etcd_monitor_proto::v1::{DiskEvent, WatchEvent};

    use super::*;

    fn disk(member: &str, nanos: u64) -> Event {
        Event {
            member: member.into(),
            payload: Some(Payload::Disk(DiskEvent {
                op: DiskOp::Fdatasync as i32,
                duration_nanos: nanos,
                ..DiskEvent::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn filters_by_member_kind_op_and_duration() {
        let f = Filter::from_request(&SubscribeRequest {
            member: "m0".into(),
            kinds: vec!["DISK".into()],
            min_duration_nanos: 1_000,
            ops: vec![DiskOp::Fdatasync as i32],
            ..SubscribeRequest::default()
        })
        .expect("valid");
        assert!(f.matches(&disk("m0", 5_000)));
        assert!(!f.matches(&disk("m0", 500)));
        assert!(!f.matches(&disk("m1", 5_000)));
        let watch = Event {
            member: "m0".into(),
            payload: Some(Payload::Watch(WatchEvent::default())),
            ..Event::default()
        };
        assert!(!f.matches(&watch));
        assert!(
            Filter::from_request(&SubscribeRequest {
                kinds: vec!["bogus".into()],
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("kinds:")
        );
        assert!(
            Filter::from_request(&SubscribeRequest {
                ops: vec![99],
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("ops:")
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_alone_and_learns_how_much_it_missed() {
        let fanout = Fanout::new(4);
        let (_, mut slow, slow_stats) = fanout.subscribe(Filter::default()).expect("room");
        let (_, mut fast, _) = fanout.subscribe(Filter::default()).expect("room");
        let mut fast_got = 0;
        for i in 0..10 {
            fanout.publish(&[disk("m0", i)]);
            while fast.try_recv().is_ok() {
                fast_got += 1;
            }
        }
        assert_eq!(fast_got, 10, "the fast subscriber misses nothing");
        assert_eq!(slow_stats.lagged.load(Ordering::Relaxed), 6);
        let mut slow_got = Vec::new();
        while let Ok(e) = slow.try_recv() {
            slow_got.push(e);
        }
        assert_eq!(slow_got.len(), 4);
        fanout.publish(&[disk("m0", 99)]);
        let next = slow.try_recv().expect("room again");
        assert_eq!(
            next.subscriber_lagged, 6,
            "the next event carries the count it missed"
        );
        drop(slow);
        fanout.publish(&[disk("m0", 100)]);
        assert_eq!(fanout.len(), 1, "a closed subscriber is removed");
    }

    #[test]
    fn closed_subscribers_are_removed_even_when_nothing_matches_and_the_cap_holds() {
        let fanout = Fanout::bounded(4, 2);
        let only_m9 = Filter::from_request(&SubscribeRequest {
            member: "m9".into(),
            ..SubscribeRequest::default()
        })
        .expect("valid");
        let (_, gone, _) = fanout.subscribe(only_m9.clone()).expect("room");
        let (_, _kept, _) = fanout.subscribe(only_m9.clone()).expect("room");
        assert_eq!(
            fanout.subscribe(only_m9.clone()).map(|_| ()),
            Err(TooManySubscribers { max: 2 })
        );
        assert_eq!(fanout.refused.load(Ordering::Relaxed), 1);
        drop(gone);
        fanout.publish(&[disk("m0", 1)]);
        assert_eq!(fanout.len(), 1, "removed though its filter never matched");
        assert_eq!(fanout.sweep(), 0);
        assert!(fanout.subscribe(only_m9).is_ok(), "room again");
        assert_eq!(fanout.removed.load(Ordering::Relaxed), 1);
    }
}
