//! The ring-buffer reader: a dedicated thread that drains `EVENTS` as fast as the kernel fills
//! it, so nothing downstream can slow it. Unknown fds are classified on the spot; exec and exit
//! events keep the traced set current between rescans.

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use etcd_monitor_runtime::sync::lock;

use aya::maps::{MapData, RingBuf};
use etcd_monitor_agent_common::syscall::FLAG_CLASS_UNKNOWN;

use crate::{
    decode::{Event, decode},
    metrics::AgentMetrics,
    tracker::Tracker,
};

/// What the reader works with.
pub struct ReaderContext {
    /// The traced set (for fd classification and exits).
    pub tracker: Arc<Mutex<Tracker>>,
    /// The agent's counters: events read, dropped and lost, for `/metrics`.
    pub metrics: Arc<AgentMetrics>,
    /// Woken on exec events to rescan /proc at once.
    pub rescan: Arc<tokio::sync::Notify>,
    /// Called with every decoded event (the shipper's queue).
    pub sink: Box<dyn FnMut(&Event) + Send>,
}

/// Stops the reader thread when asked or dropped.
pub struct ReaderHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReaderHandle {
    /// Asks the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ReaderHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the reader thread.
pub fn spawn_reader(ring: RingBuf<MapData>, ctx: ReaderContext) -> std::io::Result<ReaderHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("ringbuf-reader".into())
        .spawn({
            let stop = stop.clone();
            move || run(ring, ctx, &stop)
        })?;
    Ok(ReaderHandle {
        stop,
        thread: Some(thread),
    })
}

/// Poll timeout: the longest an event waits when the kernel does not wake us (it wakes us only
/// once the ring is a quarter full).
const POLL_MS: i32 = 20;

fn run(mut ring: RingBuf<MapData>, mut ctx: ReaderContext, stop: &AtomicBool) {
    let fd = ring.as_raw_fd();
    let syscalls = ctx.metrics.events.with_label_values(&["syscall"]);
    let execs = ctx.metrics.events.with_label_values(&["exec"]);
    let exits = ctx.metrics.events.with_label_values(&["exit"]);
    while !stop.load(Ordering::Relaxed) {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pollfd, 1, POLL_MS) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %err, "Polling the ring buffer failed; the reader stops.");
                return;
            }
            continue;
        }
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(mut event) => {
                    match &mut event {
                        Event::Syscall(e) => {
                            syscalls.inc();
                            if e.flags & FLAG_CLASS_UNKNOWN != 0 {
                                ctx.metrics.unknown_fd_events.inc();
                                let learned = lock(&ctx.tracker).learn_fd(e.tgid, e.fd);
                                if let Some(class) = learned {
                                    e.class = class as u8;
                                }
                            }
                        }
                        Event::Exec(_) => {
                            execs.inc();
                            ctx.rescan.notify_one();
                        }
                        Event::Exit(e) => {
                            exits.inc();
                            let retired = lock(&ctx.tracker).retire(e.tgid);
                            if let Err(err) = retired {
                                ctx.metrics.map_errors.inc();
                                tracing::warn!(error = %err, pid = e.tgid, "Retiring an exited process failed.");
                            }
                            ctx.rescan.notify_one();
                        }
                    }
                    (ctx.sink)(&event);
                }
                Err(err) => {
                    ctx.metrics.drops.decode.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %err, "Undecodable ring-buffer record.");
                }
            }
        }
    }
}
