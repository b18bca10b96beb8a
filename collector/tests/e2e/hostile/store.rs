//! The history store under hostile conditions, with the real collector binary: (e) a history
//! query with `since=0` over one million rows answers with at most `limit` points while agents
//! keep pushing at their rate; a corrupt `history.db` is moved aside and the collector serves;
//! a full disk is counted and logged once, the collector keeps serving, and recovers.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use etcd_monitor::{store::FILE_NAME, store::Store};
use etcd_monitor_proto::v1::{
    Event, EventBatch, ProcessEvent, agent_ingest_client::AgentIngestClient, event::Payload,
};
use etcd_monitor_tests::{
    ClusterOptions, CollectorProcess, EtcdCluster, free_port, http, http::prom_sum, wait_for,
};

use crate::common::collector_bin;

const ROWS: u64 = 1_000_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One million `member_samples` rows over the last ~28 hours, three members, in one SQL
/// statement inside one transaction (seconds, not minutes).
fn million_rows(dir: &Path) -> anyhow::Result<()> {
    let store = Store::open(dir)?;
    let newest = now_ms() - 60_000;
    store.with(|c| {
        let tx = c.transaction()?;
        tx.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO member_samples (ts_ms, cluster, member, member_id, reachable, is_leader,
                                         db_size_bytes, wal_fsync_p95_ms)
             SELECT ?2 - (?1 - i) * 100, 'default', 'm' || (i % 3), 'id' || (i % 3), 1, i % 3 = 0,
                    i * 8.0, 1.5
             FROM n",
            rusqlite_params(ROWS - 1, newest),
        )?;
        tx.commit()
    })?;
    let n: u64 =
        store.with(|c| c.query_row("SELECT COUNT(*) FROM member_samples", [], |r| r.get(0)))?;
    anyhow::ensure!(n == ROWS, "built {n} rows");
    Ok(())
}

fn rusqlite_params(last: u64, newest: u64) -> [i64; 2] {
    [last as i64, newest as i64]
}

fn agent_batch(sequence: u64) -> EventBatch {
    EventBatch {
        node: "store-test-node".into(),
        boot_id: "boot-store".into(),
        sequence,
        event_offset: (sequence - 1) * 2,
        events: (0..2)
            .map(|_| Event {
                payload: Some(Payload::Process(ProcessEvent::default())),
                ..Event::default()
            })
            .collect(),
        ..EventBatch::default()
    }
}

/// Pushes batches on one stream for `window`, returning (batches accepted, batches per second).
fn push_for(
    runtime: &tokio::runtime::Runtime,
    grpc_url: &str,
    first_sequence: u64,
    window: Duration,
) -> anyhow::Result<(u64, f64)> {
    runtime.block_on(async {
        let mut client = AgentIngestClient::connect(grpc_url.to_string()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let started = Instant::now();
        let producer = tokio::spawn(async move {
            let mut seq = first_sequence;
            while started.elapsed() < window {
                if tx.send(agent_batch(seq)).await.is_err() {
                    break;
                }
                seq += 1;
            }
        });
        let ack = client
            .push(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        producer.await?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(ack.rejected_batches == 0, "refused: {}", ack.last_rejection);
        Ok((ack.accepted_batches, ack.accepted_batches as f64 / secs))
    })
}

#[test]
fn history_since_zero_over_a_million_rows_is_bounded_and_ingest_keeps_its_rate()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let built = Instant::now();
    million_rows(&data)?;
    eprintln!("built {ROWS} rows in {:?}", built.elapsed());
    // No etcd is needed for history: the cluster is unreachable, the store is what is tested.
    let endpoints = format!("--endpoints=http://127.0.0.1:{}", free_port()?);
    let collector = CollectorProcess::start(
        collector_bin(),
        &[
            endpoints,
            format!("--data-dir={}", data.display()),
            "--health-check-interval=1s".into(),
            "--metrics-interval=1s".into(),
            "--dial-timeout=500ms".into(),
        ],
        dir.path(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Ingest's rate alone, then while history queries over every row run back to back.
    let window = Duration::from_secs(4);
    let (alone, alone_rate) = push_for(&runtime, &collector.grpc_url, 1, window)?;
    anyhow::ensure!(alone > 0, "no batch accepted");
    // The default limit (10000): the API's own bound, which the query must honour in SQL.
    let url = format!("{}/api/v1/metrics/history?since=0", collector.url);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let querier = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<Vec<(Duration, usize)>> {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let r = http::get(&url)?;
                anyhow::ensure!(r.status == 200, "history answered {}: {}", r.status, r.body);
                let points = r.json()?["points"].as_array().map_or(0, Vec::len);
                answers.push((started.elapsed(), points));
            }
            Ok(answers)
        })
    };
    let (during, during_rate) = push_for(&runtime, &collector.grpc_url, alone + 1, window)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = querier
        .join()
        .map_err(|_| anyhow::anyhow!("the query thread panicked"))??;
    eprintln!(
        "ingest alone: {alone} batches ({alone_rate:.0}/s); during {} history queries of \
         10000 points: {during} batches ({during_rate:.0}/s); query times {:?}",
        answers.len(),
        answers.iter().map(|(t, _)| *t).collect::<Vec<_>>()
    );
    anyhow::ensure!(!answers.is_empty(), "no history query finished");
    for (took, points) in &answers {
        anyhow::ensure!(
            *points == 10_000,
            "a query returned {points} points, not its limit"
        );
        anyhow::ensure!(*took < Duration::from_secs(60), "a query took {took:?}");
    }
    // Reads run on their own connection: ingest is not starved by them. Generous on a loaded
    // machine: a store lock held for each query would stall it outright.
    anyhow::ensure!(
        during_rate >= alone_rate / 4.0,
        "ingest slowed from {alone_rate:.0}/s to {during_rate:.0}/s during history queries"
    );

    // The largest answer the API allows is bounded the same way.
    let started = Instant::now();
    let (code, body) = collector.get_json("/api/v1/metrics/history?since=0&limit=100000")?;
    anyhow::ensure!(code == 200, "{body}");
    assert_eq!(body["points"].as_array().map_or(0, Vec::len), 100_000);
    eprintln!("since=0&limit=100000 answered in {:?}", started.elapsed());

    // The answer: the newest `limit` points, oldest first, since clamped to the retention.
    let (code, body) = collector.get_json("/api/v1/metrics/history?since=0&limit=500")?;
    anyhow::ensure!(code == 200, "{body}");
    let points = body["points"].as_array().cloned().unwrap_or_default();
    assert_eq!(points.len(), 500);
    let ts: Vec<u64> = points.iter().filter_map(|p| p["ts_ms"].as_u64()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let until = body["until_ms"].as_u64().unwrap_or_default();
    let since = body["since_ms"].as_u64().unwrap_or_default();
    assert_eq!(
        until - since,
        7 * 24 * 3600 * 1000,
        "since=0 reads back as far as the retention (7d), no further"
    );
    // Ingested batches were accounted while all this ran.
    let metrics = collector.metrics()?;
    let accepted = prom_sum(&metrics, "etcdmon_ingest_batches_total", &[]).unwrap_or(0.0);
    assert!(
        accepted >= (alone + during) as f64,
        "batches counted: {accepted} of {}",
        alone + during
    );
    Ok(())
}

#[test]
fn a_corrupt_database_is_moved_aside_and_the_collector_serves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.join(FILE_NAME), &garbage)?;
    let endpoints = format!("--endpoints=http://127.0.0.1:{}", free_port()?);
    let collector = CollectorProcess::start(
        collector_bin(),
        &[
            endpoints,
            format!("--data-dir={}", data.display()),
            "--dial-timeout=500ms".into(),
        ],
        dir.path(),
    )?;
    // It serves, the history API included, from a fresh file.
    let (code, body) = collector.get_json("/api/v1/metrics/history?since=0")?;
    assert_eq!(code, 200, "{body}");
    let metrics = collector.metrics()?;
    assert_eq!(
        prom_sum(&metrics, "etcdmon_store_corrupt_files_moved_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    let log = collector.log_text();
    assert_eq!(
        log.matches("History store is corrupt; moved it aside")
            .count(),
        1,
        "{log}"
    );
    let moved: Vec<_> = std::fs::read_dir(&data)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("history.db.corrupt-"))
        })
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        std::fs::read(&moved[0])?,
        garbage,
        "the old file is kept as it was"
    );
    assert!(
        log.contains(&moved[0].display().to_string()),
        "the log names where it went"
    );
    Ok(())
}

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system says it is full.
fn fill(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

#[test]
fn a_full_disk_is_counted_logged_once_and_the_collector_keeps_serving() -> anyhow::Result<()> {
    if !etcd_monitor_tests::require_root(
        "a_full_disk_is_counted_logged_once_and_the_collector_keeps_serving",
        "mounting a small tmpfs",
    )? {
        return Ok(());
    }
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "full".to_string(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let fs = SmallFs::mount(&data, "8m")?;
    let collector = CollectorProcess::start(
        collector_bin(),
        &[
            format!("--endpoints={}", cluster.endpoints()),
            format!("--data-dir={}", data.display()),
            "--health-check-interval=1s".into(),
            "--metrics-interval=1s".into(),
            "--dial-timeout=1s".into(),
        ],
        dir.path(),
    )?;
    wait_for("history points", Duration::from_secs(30), || {
        let (_, body) = collector
            .get_json("/api/v1/metrics/history?since=1h")
            .ok()?;
        (body["points"].as_array()?.len() >= 2).then_some(())
    })?;
    let filler = data.join("filler");
    let filled = fill(&filler)?;
    eprintln!("filled the tmpfs with {filled} bytes");

    let errors = |m: &str| prom_sum(m, "etcdmon_store_errors_total", &[("kind", "disk_full")]);
    let text = wait_for(
        "three disk_full store errors",
        Duration::from_secs(90),
        || {
            let m = collector.metrics().ok()?;
            (errors(&m)? >= 3.0).then_some(m)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_text()))?;
    assert_eq!(prom_sum(&text, "etcdmon_store_failing", &[]), Some(1.0));
    // Still serving: health, live status, history reads.
    for path in [
        "/health",
        "/api/v1/cluster/status",
        "/api/v1/metrics/history?since=1h",
    ] {
        let r = http::get(&format!("{}{path}", collector.url))?;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let log = collector.log_text();
    assert_eq!(
        log.matches("History store writes are failing").count(),
        1,
        "one log line per change of state, not per failed write:\n{log}"
    );
    assert!(log.contains("disk_full"), "{log}");

    // Space again: writes resume, the state clears, logged once.
    std::fs::remove_file(&filler)?;
    wait_for("the store to recover", Duration::from_secs(60), || {
        let m = collector.metrics().ok()?;
        (prom_sum(&m, "etcdmon_store_failing", &[]) == Some(0.0)).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_text()))?;
    assert_eq!(
        collector
            .log_text()
            .matches("History store writes work again.")
            .count(),
        1
    );
    drop(collector);
    drop(fs);
    Ok(())
}
