//! `cargo xtask bench defrag`: what defragmentation costs writers. A 3-member cluster is filled
//! to ~`--mb` MB and then mostly deleted and compacted (fragmentation ~90 %); while writers put
//! small keys at a steady pace, the database is defragmented either with the collector's
//! rolling defrag (`etcd-monitor ctl defrag --rolling`: followers one at a time, the leader
//! last, waiting for each to catch up) or on all members at once (three `Defragment` calls in
//! parallel, what `etcdctl defrag --cluster` does one after another without waiting). Both runs
//! happen in the same process on the same cluster, each on a freshly fragmented database, and
//! the write latency during each defragmentation is reported side by side in
//! `docs/bench/defrag.md`.
//!
//! Figures only: nothing here fails on a threshold except a run that cannot start.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_client::{Client, DeleteOptions, GetOptions};
use etcd_monitor_tests::{ClusterOptions, EtcdCluster};

use crate::cmd::root;

/// Writer tasks during a measurement.
const WRITERS: usize = 8;
/// Value size of the fill, bytes.
const FILL_VALUE: usize = 8 * 1024;
/// Share of the fill deleted again.
const DELETED: f64 = 0.9;

/// One defragmentation's figures.
struct Row {
    mode: &'static str,
    db_before_mb: f64,
    db_after_mb: f64,
    defrag_secs: f64,
    writes: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    baseline_p99_ms: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Fills `keys` keys of [`FILL_VALUE`] bytes, deletes [`DELETED`] of them and compacts.
async fn fragment(client: &mut Client, keys: usize) -> anyhow::Result<()> {
    let value = vec![b'v'; FILL_VALUE];
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (mut c, next, value) = (client.clone(), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), etcd_client::Error>(());
                }
                // A loaded machine times requests out now and then: retry a few times.
                let mut attempt = 0;
                loop {
                    match c
                        .put(format!("/defrag-bench/fill/{i:08}"), value.clone(), None)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if attempt >= 5 => return Err(e),
                        Err(_) => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let end = format!("/defrag-bench/fill/{:08}", (keys as f64 * DELETED) as usize);
    client
        .delete(
            "/defrag-bench/fill/",
            Some(DeleteOptions::new().with_range(end)),
        )
        .await?;
    let rev = client
        .get("\0", Some(GetOptions::new().with_count_only()))
        .await?
        .header()
        .map_or(0, |h| h.revision());
    client
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await?;
    Ok(())
}

/// Total database size over the members, bytes.
async fn db_total(endpoints: &[String]) -> anyhow::Result<i64> {
    let mut total = 0;
    for e in endpoints {
        let mut c = Client::connect([e.as_str()], None).await?;
        total += c.status().await?.db_size();
    }
    Ok(total)
}

/// Writers putting small keys as fast as they get answers; latencies with their start times.
struct Writers {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, f64)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(client: &Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (mut c, stop, samples) = (client.clone(), stop.clone(), samples.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let ok = c
                            .put(
                                format!("/defrag-bench/w/{w}/{}", i % 100),
                                "x".repeat(256),
                                None,
                            )
                            .await
                            .is_ok();
                        if ok && let Ok(mut s) = samples.lock() {
                            s.push((t, t.elapsed().as_secs_f64() * 1000.0));
                        }
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            samples,
            tasks,
        }
    }

    async fn finish(self) -> Vec<(Instant, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn defrag_all_at_once(endpoints: &[String]) -> anyhow::Result<()> {
    let calls = endpoints.iter().cloned().map(|e| async move {
        let mut c = Client::connect([e.as_str()], None).await?;
        c.defragment().await?;
        Ok::<(), etcd_client::Error>(())
    });
    for r in futures_join(calls).await {
        r?;
    }
    Ok(())
}

/// Joins futures without another dependency.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn defrag_rolling(binary: &Path, endpoints: &str) -> anyhow::Result<()> {
    let out = Command::new(binary)
        .args([
            "ctl",
            &format!("--endpoints={endpoints}"),
            "defrag",
            "--rolling",
        ])
        .output()
        .context("run etcd-monitor ctl defrag --rolling")?;
    anyhow::ensure!(
        out.status.success(),
        "rolling defrag failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn measure(
    mode: &'static str,
    cluster: &EtcdCluster,
    binary: &Path,
    keys: usize,
) -> anyhow::Result<Row> {
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let mut client = Client::connect(endpoints.clone(), None).await?;
    eprintln!(
        "{mode}: filling {keys} keys of {FILL_VALUE} B and deleting {:.0} %…",
        DELETED * 100.0
    );
    fragment(&mut client, keys).await?;
    let before = db_total(&endpoints).await?;
    let writers = Writers::start(&client);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    eprintln!(
        "{mode}: defragmenting {:.0} MB in total…",
        before as f64 / 1e6
    );
    match mode {
        "rolling" => {
            let (binary, list) = (binary.to_path_buf(), endpoints.join(","));
            tokio::task::spawn_blocking(move || defrag_rolling(&binary, &list)).await??
        }
        _ => defrag_all_at_once(&endpoints).await?,
    }
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = writers.finish().await;
    let after = db_total(&endpoints).await?;
    let mut during: Vec<f64> = samples
        .iter()
        .filter(|(t, ms)| *t + Duration::from_secs_f64(ms / 1000.0) >= started && *t <= ended)
        .map(|(_, ms)| *ms)
        .collect();
    let mut baseline: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t < started)
        .map(|(_, ms)| *ms)
        .collect();
    during.sort_by(f64::total_cmp);
    baseline.sort_by(f64::total_cmp);
    client
        .delete("/defrag-bench/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    Ok(Row {
        mode,
        db_before_mb: before as f64 / 1e6,
        db_after_mb: after as f64 / 1e6,
        defrag_secs: (ended - started).as_secs_f64(),
        writes: during.len(),
        p50_ms: quantile(&during, 0.5),
        p99_ms: quantile(&during, 0.99),
        max_ms: during.last().copied().unwrap_or(f64::NAN),
        baseline_p99_ms: quantile(&baseline, 0.99),
    })
}

fn markdown(rows: &[Row], mb: usize, on_disk: bool) -> String {
    let mut s = String::from(
        "# Rolling vs all-at-once defragmentation: write latency\n\n\
         Measured by `cargo xtask bench defrag` (xtask/src/bench/defrag.rs). A 3-member etcd 3.4 \
         cluster on this machine is filled, then 90 % of the keys are deleted and the history \
         compacted, so every member's database is mostly free pages. While 8 writers put 256-byte \
         values (each pausing 5 ms between puts, spread over the members), the database is \
         defragmented either by `etcd-monitor ctl defrag --rolling` (followers one at a time, the \
         leader last, waiting until each is healthy and caught up) or by three `Defragment` calls \
         at once. Both runs use the same cluster, each on a freshly fragmented database. Latency \
         is client-side, over the puts that overlapped the defragmentation.\n\n",
    );
    s.push_str(&format!(
        "Fill: about {mb} MB per member before deletion; data on {}.\n\n",
        if on_disk {
            "disk"
        } else {
            "the default temporary directory"
        }
    ));
    s.push_str("| mode | db before (all members) | db after | defrag time | writes during | p50 | p99 | max | p99 before defrag |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.0} MB | {:.0} MB | {:.2} s | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            r.mode, r.db_before_mb, r.db_after_mb, r.defrag_secs, r.writes, r.p50_ms, r.p99_ms, r.max_ms, r.baseline_p99_ms
        ));
    }
    s.push_str(
        "\nRolling takes longer in total (it waits for each member to catch up) but never blocks \
         more than one member: writes answered by the others continue. All at once is shorter \
         but every member blocks together, so every write in flight waits for the slowest \
         member's defragmentation. The machine is shared and loaded: compare the rows of one run, \
         not runs on different days.\n",
    );
    s
}

/// Runs the benchmark with a fill of about `mb` MB.
pub fn run(mb: usize) -> anyhow::Result<()> {
    // `ETCD_MONITOR_BIN` reuses a binary already built (the release build takes long on a
    // shared machine); the rolling defrag's time is etcd's, not the binary's.
    let binary = match std::env::var_os("ETCD_MONITOR_BIN") {
        Some(b) => std::path::PathBuf::from(b),
        None => super::runner::build()?,
    };
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 3,
        name_prefix: "defrag".into(),
        ..ClusterOptions::default()
    })?;
    let keys = mb * 1_000_000 / FILL_VALUE;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let rolling = measure("rolling", &cluster, &binary, keys).await?;
        let at_once = measure("all at once", &cluster, &binary, keys).await?;
        Ok::<_, anyhow::Error>(vec![rolling, at_once])
    })?;
    let text = markdown(&rows, mb, false);
    print!("{text}");
    let out = root().join("docs/bench/defrag.md");
    std::fs::write(&out, text).with_context(|| format!("write {}", out.display()))?;
    eprintln!("Wrote {}.", out.display());
    Ok(())
}
