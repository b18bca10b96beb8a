//! (d) 1,000 subscribers of which 900 never read: the collector's memory stays bounded (each
//! subscriber owns at most `--subscriber-buffer` events), the events the sleepers miss are
//! counted, the 1,001st subscriber is refused, and subscribers that went away are removed even
//! though their filter never matched anything.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_monitor_proto::v1::{SubscribeRequest, event_stream_client::EventStreamClient};
use etcd_monitor_tests::{EtcdCluster, wait_for};

use super::agents::{batch, channel, metric, push_on, rss_kib, status_claiming};
use crate::common::start_collector;

/// Stated bound: 1,000 subscribers × 128 buffered events each, plus HTTP/2 buffers.
const MAX_RSS_GROWTH_KIB: u64 = 160 * 1024;

#[test]
fn a_thousand_subscribers_most_asleep_stay_bounded_and_counted() -> anyhow::Result<()> {
    // A real member for the fake agent's events to join: the stream carries joined events only.
    let cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let m0 = &cluster.members[0];
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            "--health-check-interval=1s",
            "--max-subscribers=1000",
            "--subscriber-buffer=128",
        ],
    )?;
    let pid = collector.process.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = collector.grpc_url.clone();

    // The agent says which member its events are from ("m0" on its side, the member's real
    // URLs), and the collector joins it before any event flows.
    let mut hello = batch("busy-node", 1, 0, 0);
    hello.status = Some(status_claiming("m0", &m0.peer_url, &m0.client_url));
    rt.block_on(async {
        let ack = push_on(channel(&url).await?, vec![hello]).await?;
        anyhow::ensure!(ack.accepted_batches == 1, "{ack:?}");
        anyhow::Ok(())
    })?;
    wait_for(
        "the agent joined to the member",
        Duration::from_secs(30),
        || {
            let (_, m) = collector.get_json("/api/v1/cluster/members").ok()?;
            (m["members"][0]["agent_mode"] == "client-only").then_some(())
        },
    )?;
    let rss_before = rss_kib(pid)?;

    // Sleepers: 900 streams on 9 connections, opened and never read.
    let (sleepers, readers, received) = rt.block_on(async {
        let mut sleepers = Vec::new();
        for _ in 0..9 {
            let ch = channel(&url).await?;
            for _ in 0..100 {
                let stream = EventStreamClient::new(ch.clone())
                    .subscribe(SubscribeRequest::default())
                    .await?
                    .into_inner();
                sleepers.push(stream);
            }
        }
        // Readers: 100 streams on their own connection, drained as fast as they come.
        let received = Arc::new(AtomicU64::new(0));
        let ch = channel(&url).await?;
        let mut readers = Vec::new();
        for _ in 0..100 {
            let mut stream = EventStreamClient::new(ch.clone())
                .subscribe(SubscribeRequest::default())
                .await?
                .into_inner();
            let received = received.clone();
            readers.push(tokio::spawn(async move {
                while let Ok(Some(_)) = stream.message().await {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        anyhow::Ok((sleepers, readers, received))
    })?;
    wait_for("1000 subscribers", Duration::from_secs(30), || {
        (metric(&collector, "etcdmon_subscribers", &[]) == 1000.0).then_some(())
    })?;

    // The 1,001st is refused and counted.
    let refused = rt.block_on(async {
        EventStreamClient::new(channel(&url).await?)
            .subscribe(SubscribeRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| s.code())
            .map_err(|c| anyhow::anyhow!("{c:?}"))
    });
    assert_eq!(
        refused.map_err(|e| e.to_string()),
        Err("ResourceExhausted".to_string())
    );
    assert_eq!(
        metric(&collector, "etcdmon_subscribers_refused_total", &[]),
        1.0
    );

    // 100 batches of 1,000 events: far more than a sleeper's buffer.
    rt.block_on(async {
        let ch = channel(&url).await?;
        let batches: Vec<_> = (0..100u64)
            .map(|i| batch("busy-node", i + 2, i * 1000, 1000))
            .collect();
        let ack = push_on(ch, batches).await?;
        anyhow::ensure!(ack.accepted_batches == 100, "{ack:?}");
        anyhow::Ok(())
    })?;
    wait_for("the readers to get events", Duration::from_secs(30), || {
        (received.load(Ordering::Relaxed) >= 100 * 1000).then_some(())
    })
    .ok();
    let rss_loaded = rss_kib(pid)?;
    let lagged = metric(
        &collector,
        "etcdmon_events_dropped_total",
        &[("stage", "collector")],
    );
    let per_subscriber = metric(&collector, "etcdmon_subscriber_lagged_events_total", &[]);
    eprintln!(
        "subscribers: RSS {rss_before} KiB -> {rss_loaded} KiB; readers got {} events; {lagged} missed in all",
        received.load(Ordering::Relaxed)
    );
    assert!(
        received.load(Ordering::Relaxed) > 0,
        "the readers get events while 900 others sleep"
    );
    // Each sleeper takes at most its buffer plus what the transport holds; the rest is lag.
    assert!(
        lagged >= 900.0 * 90_000.0,
        "the sleepers' missed events are counted: {lagged}"
    );
    assert_eq!(lagged, per_subscriber, "per-subscriber lag adds up");
    assert!(
        rss_loaded.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "RSS grew from {rss_before} KiB to {rss_loaded} KiB (bound: {MAX_RSS_GROWTH_KIB} KiB)"
    );

    // The sleepers hang up; nothing matches them any more, yet they are removed.
    drop(sleepers);
    wait_for(
        "closed subscribers removed",
        Duration::from_secs(30),
        || (metric(&collector, "etcdmon_subscribers", &[]) == 100.0).then_some(()),
    )?;
    assert!(metric(&collector, "etcdmon_subscribers_removed_total", &[]) >= 900.0);
    for r in readers {
        r.abort();
    }
    Ok(())
}
