//! (b) A fake agent — a tonic client speaking the real protocol — pushes what a buggy or
//! hostile agent would: 20,000 distinct node names, a status claiming 5,000 members, a 4 MiB
//! node name, `u64::MAX` counters and a 64 MiB batch of empty events. The real collector stays
//! up, its memory and `/metrics` stay under stated bounds, and every refusal is counted by
//! reason. (c) A second agent claiming a member a live agent already reports is refused while
//! the first keeps working. Agents that fall silent expire.

use std::time::Duration;

use etcd_monitor_proto::v1::{
    AgentStatus, DiskEvent, DiskOp, DropCounters, Event, EventBatch, FileClass, KernelHistogram,
    MemberIdentity, PushAck, agent_ingest_client::AgentIngestClient, event::Payload,
};
use etcd_monitor_tests::{CollectorProcess, EtcdCluster, http::prom_sum, wait_for};
use futures::StreamExt;
use prost::bytes::{self, Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::common::start_collector;

/// RSS of a process, KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// `/metrics` value of `name` with `labels`, 0 when absent.
pub fn metric(collector: &CollectorProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    collector
        .metrics()
        .ok()
        .and_then(|t| prom_sum(&t, name, labels))
        .unwrap_or(0.0)
}

/// A valid batch of `events` synthetic disk events from `node`.
pub fn batch(node: &str, sequence: u64, offset: u64, events: usize) -> EventBatch {
    EventBatch {
        node: node.to_string(),
        boot_id: "boot-1".into(),
        sequence,
        event_offset: offset,
        events: (0..events)
            .map(|i| Event {
                member: "m0".into(),
                payload: Some(Payload::Disk(DiskEvent {
                    op: DiskOp::Fdatasync as i32,
                    file: FileClass::Wal as i32,
                    duration_nanos: 1_000 + i as u64,
                    ..DiskEvent::default()
                })),
                ..Event::default()
            })
            .collect(),
        ..EventBatch::default()
    }
}

/// A realistic status: one member identified by its real peer and client URLs.
pub fn status_claiming(name: &str, peer_url: &str, client_url: &str) -> AgentStatus {
    AgentStatus {
        mode: "client-only".into(),
        members: vec![MemberIdentity {
            name: name.into(),
            pid: 4242,
            peer_urls: vec![peer_url.into()],
            client_urls: vec![client_url.into()],
            ..MemberIdentity::default()
        }],
        ..AgentStatus::default()
    }
}

/// A connection to the collector's gRPC port.
pub async fn channel(url: &str) -> Result<tonic::transport::Channel, tonic::Status> {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

/// Pushes `batches` on one stream of `channel`; the ack, or the status the collector ended
/// the stream with.
pub async fn push_on(
    channel: tonic::transport::Channel,
    batches: Vec<EventBatch>,
) -> Result<PushAck, tonic::Status> {
    AgentIngestClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .push(tokio_stream::iter(batches))
        .await
        .map(tonic::Response::into_inner)
}

/// Pushes `batches` on one stream of a new connection.
pub async fn push(url: &str, batches: Vec<EventBatch>) -> Result<PushAck, tonic::Status> {
    push_on(channel(url).await?, batches).await
}

/// Sends pre-encoded bytes as the message, to put on the wire what no `EventBatch` value
/// could be built for cheaply (32 million empty events).
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = PushAck;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PushAck>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        prost::Message::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = PushAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

async fn push_raw(url: &str, message: Bytes) -> Result<PushAck, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(url).await?);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/etcdmon.v1.AgentIngest/Push");
    grpc.client_streaming(
        tonic::Request::new(tokio_stream::iter(vec![message])),
        path,
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// An `EventBatch` of `events` empty events (2 bytes each on the wire), encoded by hand.
fn empty_events_batch(events: usize) -> Bytes {
    let head = EventBatch {
        node: "flood".into(),
        boot_id: "boot-1".into(),
        sequence: 1,
        ..EventBatch::default()
    };
    let mut buf = bytes::BytesMut::with_capacity(events * 2 + 64);
    prost::Message::encode(&head, &mut buf).expect("room");
    for _ in 0..events {
        buf.put_u8(7 << 3 | 2); // field 7 (events), length-delimited
        buf.put_u8(0); // length 0: an Event with every field at its default
    }
    buf.freeze()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Bounds this test holds the collector to (stated, and printed with what was measured).
const MAX_RSS_GROWTH_KIB: u64 = 96 * 1024;
/// `/metrics` lines one agent may add: dropped (grpc), connected, rejected, duplicate, and
/// the kernel and agent_queue drop series.
const LINES_PER_AGENT: usize = 6;

#[test]
fn a_hostile_agent_cannot_grow_the_collector_without_bound() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let mut collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            "--health-check-interval=1s",
            "--metrics-interval=1s",
        ],
    )?;
    let pid = collector.process.pid();
    let rt = runtime()?;
    let url = collector.grpc_url.clone();
    let m0 = &cluster.members[0];

    // A well-behaved agent first, so the collector's steady state is measured with one.
    let mut good = batch("node-good", 1, 0, 10);
    good.status = Some(status_claiming(&m0.name, &m0.peer_url, &m0.client_url));
    let ack = rt.block_on(push(&url, vec![good]))?;
    assert_eq!(ack.accepted_batches, 1, "{ack:?}");
    wait_for("the member's kernel view", Duration::from_secs(20), || {
        let (_, m) = collector.get_json("/api/v1/cluster/members").ok()?;
        (m["members"][0]["agent_mode"] == "client-only").then_some(())
    })?;
    let rss_before = rss_kib(pid)?;
    let lines_before = collector.metrics()?.lines().count();

    // u64::MAX counters everywhere an agent supplies one: nothing panics or wraps.
    let mut huge = batch("node-huge", u64::MAX, u64::MAX, 3);
    huge.status = Some(AgentStatus {
        histograms: vec![KernelHistogram {
            member: "max".into(),
            op: DiskOp::Fdatasync as i32,
            file: FileClass::Wal as i32,
            count: u64::MAX,
            sum_nanos: u64::MAX,
            bytes: u64::MAX,
            errors: u64::MAX,
            log2_slots: vec![u64::MAX; 64],
        }],
        drops: Some(DropCounters {
            kernel_ringbuf: u64::MAX,
            agent_queue: u64::MAX,
            kernel_other: u64::MAX,
        }),
        ..status_claiming("max", "http://192.0.2.1:2380", "http://192.0.2.1:2379")
    });
    let mut again = huge.clone();
    again.event_offset = 5;
    let ack = rt.block_on(push(&url, vec![huge, again]))?;
    assert_eq!(ack.accepted_batches, 2, "{ack:?}");
    let (_, agents) = collector.get_json("/api/v1/agents")?;
    let max = agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["node"] == "node-huge")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("node-huge missing: {agents}"))?;
    assert_eq!(
        max["events"], 3,
        "the duplicate u64::MAX sequence was ignored"
    );

    // A status claiming 5,000 members, a node name of 4 MiB and one of 254 characters.
    let mut crowd = batch("node-crowd", 1, 0, 1);
    crowd.status = Some(AgentStatus {
        members: (0..5000)
            .map(|i| MemberIdentity {
                name: format!("m{i}"),
                peer_urls: vec![format!("http://10.1.{}.{}:2380", i / 250, i % 250)],
                ..MemberIdentity::default()
            })
            .collect(),
        ..AgentStatus::default()
    });
    let ack = rt.block_on(push(&url, vec![crowd]))?;
    assert_eq!(ack.rejected_batches, 1, "{ack:?}");
    assert!(ack.last_rejection.contains("status.members"), "{ack:?}");
    let ack = rt.block_on(push(&url, vec![batch(&"a".repeat(254), 1, 0, 1)]))?;
    assert!(
        ack.last_rejection.contains("DNS-1123"),
        "a 254-character node name is refused: {ack:?}"
    );
    let giant = rt.block_on(push(&url, vec![batch(&"a".repeat(4 << 20), 1, 0, 1)]));
    let giant = giant.expect_err("a 4 MiB node name does not fit the 4 MiB batch limit");
    assert_eq!(giant.code(), tonic::Code::OutOfRange, "{giant:?}");
    assert!(
        giant.message().contains("--grpc-max-batch-bytes"),
        "{giant:?}"
    );

    // 64 MiB of empty events: refused by the transport before a single one is decoded.
    let flood = rt.block_on(push_raw(&url, empty_events_batch(32 << 20)));
    let flood = flood.expect_err("a 64 MiB batch is refused");
    assert_eq!(flood.code(), tonic::Code::OutOfRange, "{flood:?}");

    // Just under 4 MiB of empty events (2 million): within the byte limit, but counted on
    // the wire and refused before a single event is built.
    let under = rt.block_on(push_raw(&url, empty_events_batch(2_000_000)));
    let under = under.expect_err("2 million events are refused");
    assert_eq!(under.code(), tonic::Code::InvalidArgument, "{under:?}");
    assert!(under.message().contains("65536 allowed"), "{under:?}");

    // 20,000 distinct node names.
    let known = metric(&collector, "etcdmon_agents", &[]);
    let names = 20_000;
    let (accepted, refused) = rt.block_on(async {
        let shared = channel(&url).await?;
        let results: Vec<Result<PushAck, tonic::Status>> = futures::stream::iter(0..names)
            .map(|i| {
                let shared = shared.clone();
                async move { push_on(shared, vec![batch(&format!("n{i:05}"), 1, 0, 1)]).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut accepted = 0u64;
        let mut refused = 0u64;
        for r in results {
            let ack = r.map_err(|s| anyhow::anyhow!("push failed: {s:?}"))?;
            accepted += ack.accepted_batches;
            refused += ack.rejected_batches;
        }
        anyhow::Ok((accepted, refused))
    })?;
    let room = 1000 - known as u64;
    assert_eq!(
        (accepted, refused),
        (room, names - room),
        "the first {room} fill --max-agents (1000), the rest are refused"
    );

    // Still up, still serving, and bounded.
    assert!(
        collector.process.try_wait()?.is_none(),
        "the collector is still running"
    );
    let (code, agents) = collector.get_json("/api/v1/agents")?;
    assert_eq!(code, 200);
    assert_eq!(agents["agents"].as_array().map(Vec::len), Some(1000));
    let text = collector.metrics()?;
    let lines = text.lines().count();
    let rss_after = rss_kib(pid)?;
    eprintln!(
        "hostile agents: RSS {rss_before} KiB -> {rss_after} KiB, /metrics {lines_before} -> {lines} lines"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB (bound: {MAX_RSS_GROWTH_KIB} KiB)"
    );
    assert!(
        lines <= lines_before + 1000 * LINES_PER_AGENT,
        "/metrics grew from {lines_before} to {lines} lines (bound: {} per agent up to --max-agents)",
        LINES_PER_AGENT
    );

    // Every refusal counted by reason.
    let refused_by = |reason: &str| {
        prom_sum(&text, "etcdmon_ingest_refused_total", &[("reason", reason)]).unwrap_or(0.0)
    };
    assert_eq!(refused_by("too_many_entries"), 1.0);
    assert_eq!(refused_by("invalid_node"), 1.0);
    assert_eq!(
        refused_by("too_large"),
        2.0,
        "the 4 MiB name and the 64 MiB batch"
    );
    assert_eq!(refused_by("too_many_agents"), (names - room) as f64);
    assert_eq!(refused_by("too_many_events"), 1.0);
    assert_eq!(prom_sum(&text, "etcdmon_agents", &[]), Some(1000.0));
    // The saturated counters render as what they are, never as a wrapped small number.
    let kernel_drops = prom_sum(
        &text,
        "etcdmon_events_dropped_total",
        &[("stage", "kernel"), ("node", "node-huge")],
    );
    assert_eq!(kernel_drops, Some(u64::MAX as f64));
    // The well-behaved agent's member still has its kernel view.
    let (_, m) = collector.get_json("/api/v1/cluster/members")?;
    assert_eq!(m["members"][0]["kernel"]["node"], "node-good", "{m}");
    Ok(())
}

#[test]
fn a_second_agent_cannot_claim_a_member_a_live_agent_reports() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start3()?;
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            "--health-check-interval=1s",
            "--metrics-interval=1s",
        ],
    )?;
    let rt = runtime()?;
    let url = collector.grpc_url.clone();
    let m0 = &cluster.members[0];
    let claim = status_claiming(&m0.name, &m0.peer_url, &m0.client_url);

    // node-a streams: its Push stays open the whole test, like a real agent's.
    let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(16);
    let first = {
        let url = url.clone();
        rt.spawn(async move {
            let mut client = AgentIngestClient::connect(url).await?;
            let ack = client
                .push(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?;
            anyhow::Ok(ack.into_inner())
        })
    };
    let mut a1 = batch("node-a", 1, 0, 5);
    a1.status = Some(claim.clone());
    rt.block_on(tx.send(a1))?;
    wait_for("node-a's kernel view", Duration::from_secs(20), || {
        let (_, m) = collector.get_json("/api/v1/cluster/members").ok()?;
        m["members"]
            .as_array()?
            .iter()
            .any(|m| m["kernel"]["node"] == "node-a")
            .then_some(())
    })?;

    // node-b claims the same member (its peer URL is published by /api/v1/cluster/members).
    let mut rogue = batch("node-b", 1, 0, 5);
    let mut stolen = claim.clone();
    stolen.members[0].pid = 6666;
    rogue.status = Some(stolen);
    let ack = rt.block_on(push(&url, vec![rogue]))?;
    assert_eq!(
        (ack.accepted_batches, ack.rejected_batches),
        (0, 1),
        "{ack:?}"
    );
    assert!(
        ack.last_rejection.starts_with("INVALID_ARGUMENT")
            && ack
                .last_rejection
                .contains("already reported by the live agent on node node-a"),
        "{}",
        ack.last_rejection
    );
    assert_eq!(
        metric(&collector, "etcdmon_agent_conflicts_total", &[]),
        1.0
    );
    assert_eq!(
        metric(
            &collector,
            "etcdmon_ingest_refused_total",
            &[("reason", "conflict")]
        ),
        1.0
    );

    // node-a keeps working: its next batches are taken and the member stays its own.
    let mut a2 = batch("node-a", 2, 5, 7);
    a2.status = Some(claim.clone());
    rt.block_on(tx.send(a2))?;
    wait_for("node-a's second batch", Duration::from_secs(10), || {
        let (_, a) = collector.get_json("/api/v1/agents").ok()?;
        a["agents"]
            .as_array()?
            .iter()
            .any(|a| a["node"] == "node-a" && a["events"] == 12)
            .then_some(())
    })?;
    let (_, agents) = collector.get_json("/api/v1/agents")?;
    assert!(
        !agents["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["node"] == "node-b"),
        "a refused agent leaves no record: {agents}"
    );
    let (_, m) = collector.get_json("/api/v1/cluster/members")?;
    let owner = m["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == m0.name.as_str())
        .map(|m| m["kernel"]["pid"].clone());
    assert_eq!(owner, Some(serde_json::json!(4242)), "{m}");

    // node-b reporting another member is fine.
    let m1 = &cluster.members[1];
    let mut honest = batch("node-b", 2, 5, 1);
    honest.status = Some(status_claiming(&m1.name, &m1.peer_url, &m1.client_url));
    let ack = rt.block_on(push(&url, vec![honest]))?;
    assert_eq!(ack.accepted_batches, 1, "{ack:?}");
    drop(tx);
    let ack = rt.block_on(first)??;
    assert_eq!(ack.accepted_batches, 2, "{ack:?}");
    Ok(())
}

#[test]
fn silent_agents_expire_and_their_series_leave_metrics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = start_collector(
        dir.path(),
        &["--endpoints=http://127.0.0.1:9", "--agent-expiry=10s"],
    )?;
    let rt = runtime()?;
    let ack = rt.block_on(push(
        &collector.grpc_url,
        vec![batch("quiet-node", 1, 0, 2)],
    ))?;
    assert_eq!(ack.accepted_batches, 1);
    let has_series = |text: &str| text.contains("node=\"quiet-node\"");
    assert!(has_series(&collector.metrics()?));
    wait_for("quiet-node to expire", Duration::from_secs(40), || {
        let (_, a) = collector.get_json("/api/v1/agents").ok()?;
        let listed = a["agents"]
            .as_array()?
            .iter()
            .any(|a| a["node"] == "quiet-node");
        (!listed && !has_series(&collector.metrics().ok()?)).then_some(())
    })?;
    assert_eq!(metric(&collector, "etcdmon_agents_expired_total", &[]), 1.0);
    Ok(())
}
