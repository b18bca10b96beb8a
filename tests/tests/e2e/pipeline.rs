//! Agent → collector pipeline end to end: real etcd, the real agent with eBPF, the real
//! collector. The join, exact counts, peer attribution, Subscribe fan-out with a slow
//! subscriber, malformed and oversized batches, a collector restart mid-load, watch resumes
//! (after a restart and past a compaction), and credentials.

use std::{sync::Arc, time::Duration};

use etcd_monitor_proto::v1::{
    DiskOp, Event, EventBatch, ProcessEvent, SubscribeRequest,
    agent_ingest_client::AgentIngestClient, event::Payload, event_stream_client::EventStreamClient,
};
use etcd_monitor_tests::{
    AgentProcess, CollectorProcess, EtcdCluster, binary, free_port, http::prom_sum,
    proxy::TcpProxy, wait_for,
};

fn require_root(test: &str) -> anyhow::Result<bool> {
    etcd_monitor_tests::require_root(test, "loading eBPF programs")
}

fn collector_args(cluster: &EtcdCluster, data: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        format!("--endpoints={}", cluster.endpoints()),
        "--health-check-interval=1s".to_string(),
        "--metrics-interval=1s".to_string(),
        format!("--data-dir={}", data.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn agent(
    cluster: &EtcdCluster,
    collector_grpc: &str,
    extra: &[&str],
) -> anyhow::Result<AgentProcess> {
    let mut args = vec![
        format!("--collector={collector_grpc}"),
        "--node-name=node-a".to_string(),
        "--status-interval=300ms".to_string(),
        "--batch-interval=50ms".to_string(),
        "--rescan-interval=1s".to_string(),
        "--mode=ebpf".to_string(),
        format!("--match={}", cluster.dir().display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = AgentProcess::start(&binary("etcd-monitor-agent")?, &args, cluster.dir(), |_| {})?;
    let pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    agent.wait_tracking(&pids, Duration::from_secs(20))?;
    Ok(agent)
}

fn members(collector: &CollectorProcess) -> anyhow::Result<Vec<serde_json::Value>> {
    let (status, body) = collector.get_json("/api/v1/cluster/members")?;
    anyhow::ensure!(status == 200, "members: {status} {body}");
    Ok(body["members"].as_array().cloned().unwrap_or_default())
}

#[test]
fn members_join_counts_match_and_subscribers_get_joined_events() -> anyhow::Result<()> {
    if !require_root("members_join_counts_match_and_subscribers_get_joined_events")? {
        return Ok(());
    }
    let cluster = EtcdCluster::start3()?;
    let data = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &collector_args(&cluster, data.path(), &["--subscriber-buffer=2048"]),
        cluster.dir(),
    )?;
    let agent = agent(&cluster, &collector.grpc_url, &[])?;

    // Every member joined to its agent identity, in eBPF mode.
    wait_for("all members joined", Duration::from_secs(20), || {
        let m = members(&collector).ok()?;
        (m.len() == 3
            && m.iter()
                .all(|m| m["agent_mode"] == "ebpf" && m["kernel"]["pid"].as_u64().is_some()))
        .then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", members(&collector), collector.log_text()))?;

    // A fast subscriber for member0's WAL syncs, and one that never reads. Each has room for
    // two full agent batches (1024 events each), so only the one that never reads falls behind.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let member0 = cluster.members[0].name.clone();
    let grpc = collector.grpc_url.clone();
    let idle_since = std::time::Instant::now();
    let (fast_events, slow_stream) = runtime.block_on(async {
        let mut client = EventStreamClient::connect(grpc.clone()).await?;
        let fast = client
            .subscribe(SubscribeRequest {
                member: member0.clone(),
                kinds: vec!["disk".into()],
                ops: vec![DiskOp::Fdatasync as i32],
                ..Default::default()
            })
            .await?
            .into_inner();
        // The idle subscriber's own connection takes little in flight (16 KiB windows), so not
        // reading really backs up to the collector instead of into client-side buffers.
        let idle_channel = tonic::transport::Endpoint::from_shared(grpc.clone())?
            .initial_stream_window_size(Some(16 * 1024))
            .initial_connection_window_size(Some(16 * 1024))
            .http2_adaptive_window(false)
            .connect()
            .await?;
        let slow = EventStreamClient::new(idle_channel)
            .subscribe(SubscribeRequest::default())
            .await?
            .into_inner();
        let received = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            let mut fast = fast;
            while let Some(Ok(e)) = tokio_stream::StreamExt::next(&mut fast).await {
                if let Ok(mut v) = sink.lock() {
                    v.push(e);
                }
            }
        });
        anyhow::Ok((received, slow))
    })?;

    // member0's WAL syncs counted by the agent from now on: the fast subscriber must get them all.
    let wal0 = |text: &str| {
        prom_sum(
            text,
            "etcdmon_fsync_duration_seconds_count",
            &[("member", &member0), ("file", "wal"), ("op", "fdatasync")],
        )
        .unwrap_or(0.0)
    };
    let baseline = wal0(&agent.metrics()?);
    cluster.put_many("/pipeline/", 2000, 128)?;

    // The collector's per-member kernel WAL counts equal the agent's own.
    for m in &cluster.members {
        wait_for(
            &format!("{}: collector count == agent count", m.name),
            Duration::from_secs(15),
            || {
                let agent_count = prom_sum(
                    &agent.metrics().ok()?,
                    "etcdmon_fsync_duration_seconds_count",
                    &[("member", &m.name), ("file", "wal"), ("op", "fdatasync")],
                )?;
                let view = members(&collector)
                    .ok()?
                    .into_iter()
                    .find(|v| v["name"] == m.name.as_str())?;
                let collector_count = view["kernel"]["wal_fsync"]["count"].as_f64()?;
                (agent_count > 100.0 && collector_count == agent_count).then_some(())
            },
        )?;
    }
    // Peer traffic attributed to member pairs, next to server-side values.
    let names: Vec<&str> = cluster.members.iter().map(|m| m.name.as_str()).collect();
    let view = members(&collector)?;
    for m in &view {
        let me = m["name"].as_str().unwrap_or_default();
        let peers = m["kernel"]["peers"].as_array().cloned().unwrap_or_default();
        let bytes = |p: &serde_json::Value| {
            p["bytes_sent"].as_f64().unwrap_or(0.0) + p["bytes_received"].as_f64().unwrap_or(0.0)
        };
        for other in names.iter().filter(|n| **n != me) {
            assert!(
                peers
                    .iter()
                    .any(|p| p["peer"] == *other && p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0)),
                "{me} -> {other} missing: {peers:?}"
            );
        }
        // Connections that closed before both ends could be seen are named by address only
        // (never by an ephemeral port), and carry almost nothing.
        let total: f64 = peers.iter().map(bytes).sum();
        let named: f64 = peers
            .iter()
            .filter(|p| names.iter().any(|n| p["peer"] == *n))
            .map(bytes)
            .sum();
        for p in &peers {
            let label = p["peer"].as_str().unwrap_or_default();
            assert!(
                names.contains(&label) || !label.contains(':'),
                "{me}: peer label {label} carries a port"
            );
        }
        assert!(
            named >= 0.95 * total,
            "{me}: only {named} of {total} peer bytes attributed to members"
        );
    }
    let (_, latency) = collector.get_json("/api/v1/metrics/latency")?;
    for m in latency["members"].as_array().cloned().unwrap_or_default() {
        assert!(
            m["kernel"]["wal_fsync"]["p99_ms"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{m}"
        );
        assert!(
            m["server_wal_fsync_p95_ms"].as_f64().is_some(),
            "server-side value next to the kernel's: {m}"
        );
        assert_eq!(m["agent_mode"], "ebpf");
    }
    // Kernel series on the collector carry member id and leadership.
    let text = collector.metrics()?;
    let leader_series = text
        .lines()
        .filter(|l| {
            l.starts_with("etcdmon_fsync_duration_seconds_count{")
                && l.contains("file=\"wal\"")
                && l.contains("leader=\"true\"")
        })
        .count();
    assert_eq!(
        leader_series, 1,
        "exactly one member is the leader:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("etcdmon_fsync_duration_seconds_bucket{")
                && l.contains("member_id=\""))
    );

    // The fast subscriber got member0's syncs, joined; the slow one lags alone.
    let synced = wal0(&agent.metrics()?) - baseline;
    let got = wait_for(
        "every member0 WAL sync at the fast subscriber",
        Duration::from_secs(10),
        || {
            let v = fast_events.lock().ok()?;
            (v.len() as f64 >= synced && synced > 100.0).then(|| v.clone())
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: {synced} synced, {} received",
            fast_events.lock().map(|v| v.len()).unwrap_or(0)
        )
    })?;
    assert!(
        got.iter()
            .all(|e| e.member == member0 && e.cluster == "default" && !e.member_id.is_empty())
    );
    assert!(
        got.iter()
            .all(|e| matches!(&e.payload, Some(Payload::Disk(d)) if d.op() == DiskOp::Fdatasync))
    );
    // More load until the subscriber that never reads has missed events (its buffer holds 2048).
    let mut lagged = 0.0;
    for round in 0..10 {
        lagged = prom_sum(
            &collector.metrics()?,
            "etcdmon_subscriber_lagged_events_total",
            &[],
        )
        .unwrap_or(0.0);
        if lagged > 0.0 {
            break;
        }
        cluster.put_many(&format!("/pipeline-more-{round}/"), 1000, 128)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(lagged > 0.0, "the idle subscriber's lag is counted");
    assert_eq!(collector.get_json("/health")?.0, 200, "ingest goes on");

    // The idle subscriber stays idle for 30 s in all, under load: ingest keeps taking batches,
    // its lag keeps rising, and the fast subscriber still gets every member0 WAL sync.
    let ingested = |text: &str| prom_sum(text, "etcdmon_ingest_events_total", &[]).unwrap_or(0.0);
    let before = collector.metrics()?;
    let (ingested_before, wal_before) = (ingested(&before), wal0(&agent.metrics()?));
    let mut round = 0;
    while idle_since.elapsed() < Duration::from_secs(30) {
        cluster.put_many(&format!("/pipeline-idle-{round}/"), 300, 128)?;
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let synced_idle = wal0(&agent.metrics()?) - wal_before;
    let fast_before = got.len() as f64;
    wait_for(
        "every later member0 WAL sync at the fast subscriber",
        Duration::from_secs(10),
        || {
            let n = fast_events.lock().ok()?.len() as f64;
            (n >= fast_before + synced_idle).then_some(())
        },
    )?;
    let after = collector.metrics()?;
    let lagged_after =
        prom_sum(&after, "etcdmon_subscriber_lagged_events_total", &[]).unwrap_or(0.0);
    assert!(
        ingested(&after) > ingested_before,
        "ingest went on while a subscriber slept"
    );
    assert!(
        lagged_after > lagged,
        "the idle subscriber's lag keeps rising: {lagged} -> {lagged_after}"
    );
    eprintln!(
        "fast subscriber: {} events; idle subscriber missed {lagged_after} over {:?}",
        fast_events.lock().map(|v| v.len()).unwrap_or(0),
        idle_since.elapsed()
    );
    drop(slow_stream);
    Ok(())
}

#[test]
fn malformed_or_oversized_batches_are_refused_and_the_stream_stays_up() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let data = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &collector_args(&cluster, data.path(), &["--grpc-max-batch-bytes=65536"]),
        cluster.dir(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let event = || Event {
        payload: Some(Payload::Process(ProcessEvent::default())),
        ..Event::default()
    };
    let batch = |sequence: u64, offset: u64| EventBatch {
        node: "fake-node".into(),
        boot_id: "boot-1".into(),
        sequence,
        event_offset: offset,
        events: vec![event(), event()],
        ..EventBatch::default()
    };
    let mut bad = batch(2, 2);
    bad.events[1].payload = None;
    // Over --grpc-max-batch-bytes (64 KiB): the transport refuses it before decoding (its
    // decode limit is the batch limit), so that stream ends with OUT_OF_RANGE naming the flag.
    let mut oversized = batch(4, 6);
    oversized.events = (0..4000)
        .map(|i| Event {
            payload: Some(Payload::Process(ProcessEvent {
                comm: format!("oversized-{i:04}"),
                ..ProcessEvent::default()
            })),
            ..Event::default()
        })
        .collect();
    let (ack, refused, after) = runtime.block_on(async {
        let mut client = AgentIngestClient::connect(collector.grpc_url.clone()).await?;
        let ack = client
            .push(tokio_stream::iter(vec![batch(1, 0), bad, batch(3, 4)]))
            .await?
            .into_inner();
        let refused = client
            .push(tokio_stream::iter(vec![oversized]))
            .await
            .map(|_| ());
        // The agent reconnects and goes on; the collector took nothing of the refused batch.
        let after = client
            .push(tokio_stream::iter(vec![batch(5, 4006)]))
            .await?
            .into_inner();
        anyhow::Ok((ack, refused, after))
    })?;
    assert_eq!(ack.rejected_batches, 1);
    assert!(
        ack.last_rejection.starts_with("INVALID_ARGUMENT")
            && ack.last_rejection.contains("no payload"),
        "{}",
        ack.last_rejection
    );
    assert_eq!(
        ack.accepted_batches, 2,
        "the batch after the bad one was taken: the stream stays up"
    );
    let refused = refused.expect_err("an oversized batch is refused");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("more than") || refused.message().contains("larger than"),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--grpc-max-batch-bytes"),
        "the refusal names the flag: {refused:?}"
    );
    assert_eq!((after.accepted_batches, after.last_sequence), (1, 5));
    let log = collector.log_text();
    assert!(
        log.contains("no payload") && log.contains("--grpc-max-batch-bytes"),
        "both refusals are logged with their reason:\n{log}"
    );
    let text = collector.metrics()?;
    for reason in ["empty_event", "too_large"] {
        assert_eq!(
            prom_sum(&text, "etcdmon_ingest_refused_total", &[("reason", reason)]),
            Some(1.0),
            "{reason} counted"
        );
    }
    let (_, agents) = collector.get_json("/api/v1/agents")?;
    let a = &agents["agents"][0];
    assert_eq!(a["node"], "fake-node");
    assert_eq!(
        a["rejected_batches"], 1,
        "the oversized batch never reached the point where its node is known: {a}"
    );
    assert_eq!(a["lost_batches"], 2, "each refused batch is a gap: {a}");
    assert_eq!(a["lost_events"], 4002);
    Ok(())
}

#[test]
fn collector_restart_mid_load_loses_nothing_silently() -> anyhow::Result<()> {
    if !require_root("collector_restart_mid_load_loses_nothing_silently")? {
        return Ok(());
    }
    let cluster = EtcdCluster::start3()?;
    let data = tempfile::tempdir()?;
    let (port, grpc_port) = (free_port()?, free_port()?);
    let bin = binary("etcd-monitor")?;
    let args = collector_args(&cluster, data.path(), &[]);
    let collector = CollectorProcess::start_on(&bin, &args, cluster.dir(), port, grpc_port)?;
    let agent = agent(&cluster, &collector.grpc_url, &[])?;
    wait_for("agent connected", Duration::from_secs(15), || {
        let (_, a) = collector.get_json("/api/v1/agents").ok()?;
        (a["agents"][0]["connected_streams"] == 1).then_some(())
    })?;

    // Load in the background while the collector is killed and started again.
    let endpoints = cluster.endpoints();
    let load = std::thread::spawn(move || {
        etcd_monitor_tests::load::put_many(&endpoints, "/restart/", 3000, 64)
    });
    std::thread::sleep(Duration::from_millis(700));
    collector.process.signal(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        agent.health()?["status"],
        "ok",
        "the agent keeps going without a collector"
    );
    let collector = CollectorProcess::start_on(&bin, &args, cluster.dir(), port, grpc_port)?;
    load.join()
        .map_err(|_| anyhow::anyhow!("load panicked"))??;

    // Every event the agent batched either arrived (at either collector) or is counted lost.
    let (accounted, lost) = wait_for("all events accounted for", Duration::from_secs(30), || {
        let batched = prom_sum(
            &agent.metrics().ok()?,
            "etcdmon_agent_events_batched_total",
            &[],
        )?;
        let (_, a) = collector.get_json("/api/v1/agents").ok()?;
        let a = &a["agents"][0];
        let (events, lost) = (a["events"].as_f64()?, a["lost_events"].as_f64()?);
        (a["connected_streams"] == 1 && events + lost == batched && batched > 0.0)
            .then_some((events + lost, lost))
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: agent {:?}, collector {:?}",
            agent
                .metrics()
                .map(|t| prom_sum(&t, "etcdmon_agent_events_batched_total", &[])),
            collector.get_json("/api/v1/agents")
        )
    })?;
    let reconnects =
        prom_sum(&agent.metrics()?, "etcdmon_agent_reconnects_total", &[]).unwrap_or(0.0);
    assert!(reconnects >= 1.0, "the agent reconnected by itself");
    assert_eq!(
        prom_sum(
            &agent.metrics()?,
            "etcdmon_events_dropped_total",
            &[("stage", "agent_queue")]
        ),
        Some(0.0)
    );
    let text = collector.metrics()?;
    assert_eq!(
        prom_sum(
            &text,
            "etcdmon_events_dropped_total",
            &[("stage", "grpc"), ("node", "node-a")]
        ),
        Some(lost)
    );
    eprintln!(
        "{accounted} events accounted for across the restart, {lost} lost in transit (counted)"
    );
    Ok(())
}

#[test]
fn wrong_or_missing_token_is_unauthenticated() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let data = tempfile::tempdir()?;
    let token_file = data.path().join("token");
    std::fs::write(&token_file, "s3cret\n")?;
    let token_flag = format!("--grpc-token-file={}", token_file.display());
    // Without TLS a token needs explicit consent: without it the collector refuses to start.
    let refused = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &collector_args(&cluster, data.path(), &[&token_flag]),
        cluster.dir(),
    )
    .expect_err("a token over plaintext needs --grpc-allow-plaintext-token");
    assert!(
        refused.to_string().contains("--grpc-allow-plaintext-token"),
        "{refused:#}"
    );
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &collector_args(
            &cluster,
            data.path(),
            &[&token_flag, "--grpc-allow-plaintext-token"],
        ),
        cluster.dir(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (without, wrong, right) = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(collector.grpc_url.clone())?
            .connect()
            .await?;
        let subscribe = |token: Option<&'static str>| {
            let channel = channel.clone();
            async move {
                let mut req = tonic::Request::new(SubscribeRequest::default());
                if let Some(t) = token {
                    req.metadata_mut()
                        .insert("authorization", t.parse().expect("ascii"));
                }
                EventStreamClient::new(channel)
                    .subscribe(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            }
        };
        anyhow::Ok((
            subscribe(None).await,
            subscribe(Some("Bearer nope")).await,
            subscribe(Some("Bearer s3cret")).await,
        ))
    })?;
    assert_eq!(without, Err(tonic::Code::Unauthenticated));
    assert_eq!(wrong, Err(tonic::Code::Unauthenticated));
    assert_eq!(right, Ok(()));
    assert_eq!(
        prom_sum(
            &collector.metrics()?,
            "etcdmon_ingest_unauthenticated_total",
            &[]
        ),
        Some(2.0)
    );
    Ok(())
}

#[test]
fn watched_prefixes_reach_subscribers_once_across_an_etcd_restart() -> anyhow::Result<()> {
    let mut cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let data = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &collector_args(
            &cluster,
            data.path(),
            &["--watch-prefix=/watched/", "--watch-prev-kv"],
        ),
        cluster.dir(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let received = subscribe_to_watch_events(&runtime, &collector)?;
    // Let the watch start before writing.
    wait_for("the watch to start", Duration::from_secs(10), || {
        collector
            .log_text()
            .contains("Watching prefix")
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    cluster.etcdctl(&["put", "/watched/a", "one"])?;
    cluster.etcdctl(&["put", "/watched/a", "two"])?;
    cluster.etcdctl(&["put", "/other/b", "ignored"])?;
    cluster.etcdctl(&["del", "/watched/a"])?;
    wait_for("3 watch events", Duration::from_secs(10), || {
        (received.lock().ok()?.len() >= 3).then_some(())
    })?;

    // etcd restarts: the watch breaks and resumes after the last revision it saw.
    cluster.members[0].restart()?;
    wait_for("etcd back", Duration::from_secs(30), || {
        cluster.members[0].healthy().then_some(())
    })?;
    for i in 0..5 {
        cluster.etcdctl(&["put", &format!("/watched/k{i}"), "v"])?;
    }
    let events = wait_for("8 watch events", Duration::from_secs(20), || {
        let v = received.lock().ok()?;
        (v.len() >= 8).then(|| v.clone())
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: got {:?}\n{}",
            received.lock().map(|v| v.len()),
            collector.log_text()
        )
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let events_now = received.lock().map(|v| v.len()).unwrap_or(0);
    assert_eq!(events_now, 8, "no duplicates after the resume");
    let watch: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Watch(w)) => Some(w.clone()),
            _ => None,
        })
        .collect();
    let revisions: Vec<i64> = watch.iter().map(|w| w.mod_revision).collect();
    assert!(
        revisions.windows(2).all(|r| r[1] > r[0]),
        "revisions strictly increase: {revisions:?}"
    );
    assert!(
        watch
            .iter()
            .all(|w| w.key.starts_with(b"/watched/") && w.prefix == "/watched/")
    );
    assert_eq!(
        watch[1].prev_value,
        b"one".to_vec(),
        "previous value on request"
    );
    assert_eq!(
        watch[2].r#type,
        etcd_monitor_proto::v1::watch_event::Type::Delete as i32
    );
    assert!(events.iter().all(|e| e.cluster == "default"));
    let text = collector.metrics()?;
    assert_eq!(
        prom_sum(
            &text,
            "etcdmon_watch_events_total",
            &[("prefix", "/watched/"), ("type", "put")]
        ),
        Some(7.0)
    );
    assert_eq!(
        prom_sum(
            &text,
            "etcdmon_watch_events_total",
            &[("prefix", "/watched/"), ("type", "delete")]
        ),
        Some(1.0)
    );
    assert!(prom_sum(&text, "etcdmon_watch_resumes_total", &[]).is_some_and(|n| n >= 1.0));
    Ok(())
}

#[test]
fn agents_ship_over_mutual_tls_and_uncertified_ones_are_refused() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let data = tempfile::tempdir()?;
    let tls = etcd_monitor_tests::tls::make_tls(data.path(), "grpc")?;
    let server = [
        format!("--grpc-cert-file={}", tls.server_cert_file.display()),
        format!("--grpc-key-file={}", tls.server_key_file.display()),
        format!("--grpc-client-ca-file={}", tls.ca_file.display()),
    ];
    let server: Vec<&str> = server.iter().map(String::as_str).collect();
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &collector_args(&cluster, data.path(), &server),
        cluster.dir(),
    )?;
    let https = collector.grpc_url.replace("http://", "https://");
    let client_only = |node: &str, extra: Vec<String>| -> anyhow::Result<AgentProcess> {
        let mut args = vec![
            format!("--collector={https}"),
            format!("--node-name={node}"),
            "--mode=client-only".to_string(),
            "--status-interval=300ms".to_string(),
            format!("--collector-ca-file={}", tls.ca_file.display()),
            format!("--match={}", cluster.dir().display()),
        ];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        AgentProcess::start(&binary("etcd-monitor-agent")?, &args, cluster.dir(), |_| {})
    };
    // With mutual TLS the node name must be one the client certificate names (the test
    // certificate's SAN is `localhost`).
    let certified = || {
        vec![
            format!("--collector-cert-file={}", tls.client_cert_file.display()),
            format!("--collector-key-file={}", tls.client_key_file.display()),
        ]
    };
    let trusted = client_only("localhost", certified())?;
    let impostor = client_only("impostor", certified())?;
    let stranger = client_only("stranger", vec![])?;
    wait_for(
        "the trusted agent's status",
        Duration::from_secs(15),
        || {
            let (_, a) = collector.get_json("/api/v1/agents").ok()?;
            a["agents"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["node"] == "localhost"
                        && a["mode"] == "client-only"
                        && a["connected_streams"] == 1
                })
                .then_some(())
        },
    )?;
    wait_for("the stranger to retry", Duration::from_secs(15), || {
        prom_sum(
            &stranger.metrics().ok()?,
            "etcdmon_agent_reconnects_total",
            &[],
        )
        .filter(|n| *n >= 2.0)
    })?;
    let (_, a) = collector.get_json("/api/v1/agents")?;
    assert!(
        !a["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["node"] == "stranger" || a["node"] == "impostor"),
        "no certificate, or one naming another node: no entry: {a}"
    );
    wait_for("the impostor refused", Duration::from_secs(15), || {
        prom_sum(
            &collector.metrics().ok()?,
            "etcdmon_ingest_refused_total",
            &[("reason", "node_mismatch")],
        )
        .filter(|n| *n >= 1.0)
    })?;
    drop(impostor);
    assert_eq!(
        prom_sum(
            &trusted.metrics()?,
            "etcdmon_agent_collector_connected",
            &[]
        ),
        Some(1.0)
    );
    // With TLS 1.3 the client finishes its handshake before the server checks the client
    // certificate, so between a retry and the refusal the stranger's gauge may read 1 for a
    // moment; what matters is that it settles at 0 and the collector never took a batch.
    wait_for(
        "the stranger to read disconnected",
        Duration::from_secs(15),
        || {
            (prom_sum(
                &stranger.metrics().ok()?,
                "etcdmon_agent_collector_connected",
                &[],
            )? == 0.0)
                .then_some(())
        },
    )?;
    // The member list shows the trusted agent's mode for the member it found.
    wait_for("member agent mode", Duration::from_secs(10), || {
        (members(&collector).ok()?.first()?["agent_mode"] == "client-only").then_some(())
    })?;
    Ok(())
}

/// Subscribes to the collector's watch events; they pile up in the returned list.
fn subscribe_to_watch_events(
    runtime: &tokio::runtime::Runtime,
    collector: &CollectorProcess,
) -> anyhow::Result<Arc<std::sync::Mutex<Vec<Event>>>> {
    let received = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
    let sink = received.clone();
    let grpc = collector.grpc_url.clone();
    runtime.block_on(async {
        let mut client = EventStreamClient::connect(grpc).await?;
        let mut stream = client
            .subscribe(SubscribeRequest {
                kinds: vec!["watch".into()],
                ..Default::default()
            })
            .await?
            .into_inner();
        tokio::spawn(async move {
            while let Some(Ok(e)) = tokio_stream::StreamExt::next(&mut stream).await {
                if let Ok(mut v) = sink.lock() {
                    v.push(e);
                }
            }
        });
        anyhow::Ok(())
    })?;
    Ok(received)
}

/// The revision etcd is at now.
fn revision(cluster: &EtcdCluster) -> anyhow::Result<i64> {
    let out = cluster.etcdctl(&["get", "/", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["header"]["revision"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no revision in {out}"))
}

#[test]
fn a_watch_cut_off_past_a_compaction_resumes_at_the_compaction_and_counts_the_gap()
-> anyhow::Result<()> {
    let cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let target: std::net::SocketAddr = cluster.members[0]
        .client_url
        .trim_start_matches("http://")
        .parse()?;
    // The collector reaches etcd only through a proxy the test can cut.
    let proxy = TcpProxy::start(target)?;
    let data = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &[
            format!("--endpoints=http://{}", proxy.addr()),
            "--health-check-interval=1s".to_string(),
            "--metrics-interval=1s".to_string(),
            format!("--data-dir={}", data.path().display()),
            "--watch-prefix=/c/".to_string(),
        ],
        cluster.dir(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let received = subscribe_to_watch_events(&runtime, &collector)?;
    wait_for("the watch to start", Duration::from_secs(10), || {
        collector
            .log_text()
            .contains("Watching prefix")
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    cluster.etcdctl(&["put", "/c/a", "1"])?;
    wait_for("the first event", Duration::from_secs(10), || {
        (received.lock().ok()?.len() == 1).then_some(())
    })?;

    // Partition: while the collector cannot reach etcd, /c/b is written and then compacted
    // away; /c/c sits at the compaction revision and /c/d after it.
    proxy.cut();
    std::thread::sleep(Duration::from_millis(500));
    cluster.etcdctl(&["put", "/c/b", "2"])?;
    cluster.etcdctl(&["put", "/c/c", "3"])?;
    let compacted = revision(&cluster)?;
    cluster.etcdctl(&["compact", &compacted.to_string()])?;
    cluster.etcdctl(&["put", "/c/d", "4"])?;
    proxy.restore();

    let events = wait_for("the resumed events", Duration::from_secs(30), || {
        let v = received.lock().ok()?;
        (v.len() >= 3).then(|| v.clone())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_text()))?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        received.lock().map(|v| v.len()).unwrap_or(0),
        3,
        "no duplicates after the resume"
    );
    let keys: Vec<(String, i64)> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Watch(w)) => {
                Some((String::from_utf8_lossy(&w.key).into_owned(), w.mod_revision))
            }
            _ => None,
        })
        .collect();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["/c/a", "/c/c", "/c/d"],
        "/c/b was compacted away; everything from the compaction revision on arrives"
    );
    assert_eq!(keys[1].1, compacted);
    let log = collector.log_text();
    assert!(
        log.contains("Watch history compacted"),
        "the loss is logged:\n{log}"
    );
    let text = collector.metrics()?;
    assert_eq!(
        prom_sum(&text, "etcdmon_watch_gaps_total", &[("prefix", "/c/")]),
        Some(1.0),
        "the compaction gap is counted once"
    );
    assert_eq!(
        prom_sum(
            &text,
            "etcdmon_watch_events_total",
            &[("prefix", "/c/"), ("type", "put")]
        ),
        Some(3.0)
    );
    Ok(())
}
