//! Synthetic load for `cargo xtask bench pipeline`: makes disk events as fast as it can (or at
//! `--rate`) and ships them with the agent's own batcher, queue and gRPC client, so the
//! benchmark measures the real shipping path without a kernel in front of it.
//!
//! Usage: `pipeline_load <collector-url> <seconds> [events-per-second]`; prints one JSON line.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_monitor_agent::ship::{
    BatchQueue, Batcher,
    batcher::new_boot_id,
    client::{self, ShipperConfig, ShipperMetrics},
};
use etcd_monitor_proto::v1::{DiskEvent, DiskOp, Event, FileClass, event::Payload};

fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = text.rfind(')').map(|i| &text[i + 2..]).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15 (11 and 12 after the state field).
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("usage: pipeline_load URL SECONDS [RATE]"))?;
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let rate: Option<u64> = args.get(3).map(|s| s.parse()).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dropped = Arc::new(AtomicU64::new(0));
    let queue = Arc::new(BatchQueue::new(64 << 20, dropped.clone()));
    let batcher = Arc::new(Mutex::new(Batcher::new(
        "bench-node".into(),
        new_boot_id(),
        1024,
        queue.clone(),
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = ShipperMetrics {
        batches_sent: prometheus::IntCounter::new("b", "b")?,
        reconnects: prometheus::IntCounter::new("r", "r")?,
        connected: prometheus::IntGauge::new("c", "c")?,
        totals: None,
    };
    let connected = metrics.connected.clone();
    let config = ShipperConfig {
        url,
        ca_pem: None,
        identity: None,
        domain: None,
        token: None,
    };
    let shipper = runtime.spawn(client::run(config, queue.clone(), metrics, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected.get() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let template = Event {
        node: "bench-node".into(),
        member: "bench".into(),
        payload: Some(Payload::Disk(DiskEvent {
            op: DiskOp::Fdatasync as i32,
            file: FileClass::Wal as i32,
            fd: 7,
            pid: 4242,
            tid: 4243,
            duration_nanos: 1_500_000,
            ..DiskEvent::default()
        })),
        ..Event::default()
    };
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut made: u64 = 0;
    while Instant::now() < end {
        // Make events in slices of 1024, pacing to `rate` when given.
        if let Some(rate) = rate {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if made >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let mut b = batcher.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for i in 0..1024u64 {
            let mut e = template.clone();
            e.timestamp_unix_nanos = made + i;
            b.add(e);
        }
        made += 1024;
    }
    if let Ok(mut b) = batcher.lock() {
        b.flush();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the queue drain.
    let drain = Instant::now() + Duration::from_secs(30);
    while !queue.is_empty() && Instant::now() < drain {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    shipper.abort();
    println!(
        "{{\"events\": {made}, \"seconds\": {elapsed:.3}, \"dropped\": {}, \"cpu_seconds\": {cpu:.3}}}",
        dropped.load(Ordering::Relaxed)
    );
    Ok(())
}
