//! Every event on the Subscribe stream says whose it is: a joined agent event names a member
//! of the monitored cluster (as MemberList does), a collector-made event (a watch) has an empty
//! member. Real etcd, the real agent with eBPF, the real collector.
//!
//! The node also runs a stray etcd that is no member of the monitored cluster, started without
//! `--name` (so etcd calls it `default`, like the collector's cluster): the agent traces it, and
//! its events must not reach the stream under that name.

use std::{process::Command, sync::Arc, time::Duration};

use etcd_monitor_proto::v1::{
    Event, SubscribeRequest, event::Payload, event_stream_client::EventStreamClient,
};
use etcd_monitor_tests::{
    AgentProcess, CollectorProcess, EtcdCluster, binary, free_port, http::prom_sum, is_root,
    process::ChildGuard, wait_for,
};

/// `Ok(false)` when the test cannot run here (no root for eBPF); fails under `CI=true`.
fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "stream_labels loads eBPF programs and needs root; CI=true forbids skipping"
    );
    eprintln!("SKIPPED: stream_labels loads eBPF programs and needs root");
    false
}

/// A single etcd started the way a quick local try does: no `--name` (so `default`).
fn stray_etcd(dir: &std::path::Path) -> anyhow::Result<(ChildGuard, String)> {
    let client = format!("http://127.0.0.1:{}", free_port()?);
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new("etcd");
    cmd.arg(format!("--data-dir={}", dir.join("stray.etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"));
    let process = ChildGuard::spawn("stray etcd", cmd, &dir.join("stray.log"))?;
    wait_for("stray etcd healthy", Duration::from_secs(30), || {
        etcdctl(&client, &["endpoint", "health"]).then_some(())
    })?;
    Ok((process, client))
}

fn etcdctl(endpoint: &str, args: &[&str]) -> bool {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_streamed_event_names_a_member_or_is_collector_made() -> anyhow::Result<()> {
    if !require_root() {
        return Ok(());
    }
    let cluster = EtcdCluster::start3()?;
    let (stray, stray_url) = stray_etcd(cluster.dir())?;
    let data = tempfile::tempdir()?;
    let collector = CollectorProcess::start(
        &binary("etcd-monitor")?,
        &[
            format!("--endpoints={}", cluster.endpoints()),
            "--health-check-interval=1s".to_string(),
            "--metrics-interval=1s".to_string(),
            "--watch-prefix=/labels/".to_string(),
            format!("--data-dir={}", data.path().display()),
        ],
        cluster.dir(),
    )?;
    // The agent traces every etcd under the test's directory: the members and the stray one.
    let agent = AgentProcess::start(
        &binary("etcd-monitor-agent")?,
        &[
            &format!("--collector={}", collector.grpc_url),
            "--node-name=node-a",
            "--status-interval=300ms",
            "--batch-interval=50ms",
            "--rescan-interval=1s",
            "--mode=ebpf",
            &format!("--match={}", cluster.dir().display()),
        ],
        cluster.dir(),
        |_| {},
    )?;
    let mut pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    pids.push(stray.pid());
    agent.wait_tracking(&pids, Duration::from_secs(30))?;

    // MemberList as the collector serves it, once every member is joined to the agent.
    let members = wait_for("all members joined", Duration::from_secs(30), || {
        let (status, body) = collector.get_json("/api/v1/cluster/members").ok()?;
        let members = body["members"].as_array()?.clone();
        (status == 200
            && members.len() == 3
            && members
                .iter()
                .all(|m| m["kernel"]["pid"].as_u64().is_some()))
        .then_some(members)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_text()))?;
    let names: Vec<String> = members
        .iter()
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect();
    let ids: Vec<String> = members
        .iter()
        .filter_map(|m| m["id"].as_str().map(String::from))
        .collect();

    // Everything on the stream, unfiltered, for ~10 s of writes to the cluster (watched) and
    // to the stray etcd.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let received = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
    let sink = received.clone();
    let grpc = collector.grpc_url.clone();
    runtime.block_on(async {
        let mut client = EventStreamClient::connect(grpc).await?;
        let mut stream = client
            .subscribe(SubscribeRequest::default())
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
    let unjoined = |c: &CollectorProcess| {
        c.metrics()
            .ok()
            .and_then(|t| prom_sum(&t, "etcdmon_ingest_unjoined_events_total", &[]))
            .unwrap_or(0.0)
    };
    let unjoined_before = unjoined(&collector);
    let start = std::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(10) {
        cluster.put_many(&format!("/labels/{round}/"), 20, 64)?;
        for i in 0..10 {
            anyhow::ensure!(
                etcdctl(&stray_url, &["put", &format!("/stray/{round}/{i}"), "x"]),
                "put to the stray etcd failed"
            );
        }
        round += 1;
    }
    // The stray etcd's syncs reached the collector (and were refused), so the check below is
    // not vacuous.
    wait_for(
        "the stray etcd's events counted as unjoined",
        Duration::from_secs(20),
        || (unjoined(&collector) > unjoined_before).then_some(()),
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_text()))?;
    std::thread::sleep(Duration::from_secs(1));
    let events = received.lock().map(|v| v.clone()).unwrap_or_default();

    let mut joined = 0;
    let mut watches = 0;
    let mut wrong = Vec::new();
    for e in &events {
        let is_watch = matches!(e.payload, Some(Payload::Watch(_)));
        if e.member.is_empty() {
            if is_watch && e.node.is_empty() && e.cluster == "default" {
                watches += 1;
            } else {
                wrong.push(e);
            }
        } else if !is_watch
            && e.cluster == "default"
            && ids.contains(&e.member_id)
            && names.contains(&e.member)
        {
            joined += 1;
        } else {
            wrong.push(e);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} events neither name a member of {names:?} nor are collector-made, e.g. {:?}",
        wrong.len(),
        events.len(),
        wrong.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        watches >= 20 && joined > 0,
        "the stream carried {watches} watch events and {joined} joined events"
    );
    eprintln!(
        "{} events in {:?}: {joined} joined, {watches} watches; unjoined refused: {}",
        events.len(),
        start.elapsed(),
        unjoined(&collector) - unjoined_before
    );
    Ok(())
}
