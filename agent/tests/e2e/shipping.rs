//! Shipping to a collector, against a stand-in AgentIngest server in this test process: batches
//! carry contiguous sequence numbers and event offsets, status snapshots carry the same exact
//! counts as /metrics, and the agent reconnects by itself after the server goes away.

use crate::common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_monitor_proto::v1::{
    DiskOp, EventBatch, FileClass, PushAck,
    agent_ingest_server::{AgentIngest, AgentIngestServer},
};
use etcd_monitor_tests::{AgentProcess, ClusterOptions, EtcdCluster, http::prom_sum, wait_for};
use tokio_stream::StreamExt;

#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<EventBatch>>>,
}

#[tonic::async_trait]
impl AgentIngest for Recorder {
    async fn push(
        &self,
        request: tonic::Request<tonic::Streaming<EventBatch>>,
    ) -> Result<tonic::Response<PushAck>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut last = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            last = batch.sequence;
            self.batches.lock().expect("lock").push(batch);
        }
        Ok(tonic::Response::new(PushAck {
            last_sequence: last,
            ..PushAck::default()
        }))
    }
}

/// Serves `recorder` on `addr` in a runtime of its own; dropping the runtime kills every
/// connection at once, as a crashed collector would.
fn serve(addr: SocketAddr, recorder: Recorder) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgentIngestServer::new(recorder))
            .serve(addr)
            .await;
    });
    Ok(runtime)
}

fn wal_fdatasyncs_in_status(batches: &[EventBatch], member: &str) -> Option<u64> {
    batches
        .iter()
        .rev()
        .filter_map(|b| b.status.as_ref())
        .next()
        .map(|s| {
            s.histograms
                .iter()
                .filter(|h| {
                    h.member == member && h.op() == DiskOp::Fdatasync && h.file() == FileClass::Wal
                })
                .map(|h| h.count)
                .sum()
        })
}

#[test]
fn batches_are_sequenced_exact_and_survive_a_collector_restart() -> anyhow::Result<()> {
    if !common::require_root("batches_are_sequenced_exact_and_survive_a_collector_restart")? {
        return Ok(());
    }
    let port = etcd_monitor_tests::free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let recorder = Recorder::default();
    let server = serve(addr, recorder.clone())?;

    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "ship".into(),
        ..Default::default()
    })?;
    let member = cluster.members[0].name.clone();
    let agent = AgentProcess::start(
        common::agent_bin(),
        &[
            &format!("--collector=http://{addr}"),
            "--node-name=test-node",
            "--status-interval=300ms",
            "--batch-interval=50ms",
            "--rescan-interval=1s",
            "--mode=ebpf",
            &format!("--match={}", cluster.dir().display()),
        ],
        cluster.dir(),
        |_| {},
    )?;
    agent.wait_tracking(&[cluster.members[0].pid()], Duration::from_secs(20))?;
    cluster.put_many("/ship/", 300, 64)?;

    // The status snapshot carries the same exact count /metrics shows.
    wait_for(
        "status count to match /metrics",
        Duration::from_secs(15),
        || {
            let text = agent.metrics().ok()?;
            let metrics = prom_sum(
                &text,
                "etcdmon_fsync_duration_seconds_count",
                &[("member", &member), ("file", "wal"), ("op", "fdatasync")],
            )?;
            let shipped = wal_fdatasyncs_in_status(&recorder.batches.lock().ok()?, &member)?;
            // Concurrent puts share WAL syncs, so there are fewer syncs than puts.
            (metrics >= 30.0 && shipped as f64 == metrics).then_some(())
        },
    )
    .map_err(|e| {
        let text = agent.metrics().unwrap_or_default();
        let metrics = prom_sum(
            &text,
            "etcdmon_fsync_duration_seconds_count",
            &[("member", &member), ("file", "wal"), ("op", "fdatasync")],
        );
        let shipped = wal_fdatasyncs_in_status(&recorder.batches.lock().expect("lock"), &member);
        anyhow::anyhow!(
            "{e}: /metrics {metrics:?}, shipped {shipped:?}, {} batches\n{}",
            recorder.batches.lock().expect("lock").len(),
            agent.log_text()
        )
    })?;
    {
        let batches = recorder.batches.lock().expect("lock");
        assert!(
            batches
                .iter()
                .all(|b| b.node == "test-node" && !b.boot_id.is_empty())
        );
        for pair in batches.windows(2) {
            assert_eq!(
                pair[1].sequence,
                pair[0].sequence + 1,
                "contiguous sequences while connected"
            );
            assert_eq!(
                pair[1].event_offset,
                pair[0].event_offset + pair[0].events.len() as u64
            );
        }
        let shipped_syncs = batches
            .iter()
            .flat_map(|b| &b.events)
            .filter(|e| e.member == member)
            .filter(|e| matches!(&e.payload, Some(etcd_monitor_proto::v1::event::Payload::Disk(d)) if d.op() == DiskOp::Fdatasync && d.file() == FileClass::Wal))
            .count() as u64;
        let counted = wal_fdatasyncs_in_status(&batches, &member).unwrap_or(0);
        // Syncs before the stream opened are counted but were not all shipped as events.
        assert!(
            shipped_syncs + 10 >= counted && shipped_syncs <= counted,
            "{shipped_syncs} WAL sync events shipped for {counted} counted"
        );
        let status = batches
            .iter()
            .rev()
            .find_map(|b| b.status.as_ref())
            .expect("a status");
        assert_eq!(status.mode, "ebpf");
        assert_eq!(status.members.len(), 1);
        assert_eq!(status.members[0].name, member);
    }

    // The collector goes away; the agent keeps serving and queues.
    server.shutdown_background();
    std::thread::sleep(Duration::from_millis(500));
    let before_restart = recorder.batches.lock().expect("lock").len();
    cluster.put_many("/ship-offline/", 100, 64)?;
    assert_eq!(agent.health()?["status"], "ok");
    wait_for("a reconnect attempt", Duration::from_secs(10), || {
        prom_sum(
            &agent.metrics().ok()?,
            "etcdmon_agent_reconnects_total",
            &[],
        )
        .filter(|n| *n > 0.0)
    })?;

    // Back again on the same port: the agent reconnects by itself and what it queued arrives.
    let _server_again = serve(addr, recorder.clone())?;
    wait_for("batches after the restart", Duration::from_secs(20), || {
        let batches = recorder.batches.lock().ok()?;
        (batches.len() > before_restart + 2).then_some(())
    })?;
    let batches = recorder.batches.lock().expect("lock");
    let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[1] > w[0]),
        "sequences only go up: {sequences:?}"
    );
    // Lost events are computable exactly from offsets: received + gaps == offset of the last batch.
    let received: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
    let mut gap = 0;
    for pair in batches.windows(2) {
        gap += pair[1].event_offset - (pair[0].event_offset + pair[0].events.len() as u64);
    }
    let last = batches.last().expect("batches");
    assert_eq!(received + gap, last.event_offset + last.events.len() as u64);
    eprintln!(
        "{} batches, {received} events received, {gap} lost in the restart",
        batches.len()
    );
    let text = agent.metrics()?;
    assert!(prom_sum(&text, "etcdmon_agent_collector_connected", &[]) == Some(1.0));
    Ok(())
}
