//! Shipping events to the collector: kernel records become `etcdmon.v1.Event`s (`convert`),
//! are grouped into sequenced batches (`batcher`), wait in a bounded drop-oldest queue
//! (`queue`), and are copied to every collector target (`fanout`), each over its own gRPC client
//! stream that reconnects by itself (`client`).
//! A periodic status snapshot (`status`) carries the exact kernel counters.
//!
//! Nothing here can block the ring-buffer reader: it only takes two short mutexes.

pub mod batcher;
pub mod client;
pub mod convert;
pub mod fanout;
pub mod queue;
pub mod status;

pub use batcher::Batcher;
pub use queue::BatchQueue;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use etcd_monitor_runtime::sync::lock;

use crate::{decode, tracker::Tracker};

/// Turns reader events into protobuf events for the batcher, naming each one's member.
pub struct Forwarder {
    batcher: Arc<Mutex<Batcher>>,
    tracker: Arc<Mutex<Tracker>>,
    members: HashMap<u32, String>,
    node: String,
    clock: convert::Clock,
}

impl Forwarder {
    /// A forwarder for `node`.
    pub fn new(batcher: Arc<Mutex<Batcher>>, tracker: Arc<Mutex<Tracker>>, node: String) -> Self {
        Self {
            batcher,
            tracker,
            members: HashMap::new(),
            node,
            clock: convert::Clock::now(),
        }
    }

    /// Queues one event (never blocks beyond two short locks).
    pub fn forward(&mut self, event: &decode::Event) {
        let pid = match event {
            decode::Event::Syscall(e) => e.tgid,
            decode::Event::Exec(e) | decode::Event::Exit(e) => e.tgid,
        };
        if !self.members.contains_key(&pid) {
            let name = lock(&self.tracker).member_of(pid).map(str::to_string);
            if let Some(name) = name {
                self.members.insert(pid, name);
            }
        }
        let member = self.members.get(&pid).map(String::as_str).unwrap_or("");
        let pb = convert::to_proto(event, &self.node, member, &self.clock);
        lock(&self.batcher).add(pb);
        if matches!(event, decode::Event::Exit(_)) {
            self.members.remove(&pid);
        }
    }
}
