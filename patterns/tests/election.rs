//! Election against real etcd: hand-over without overlap, failover times, a cut-off leader.

mod common;

use std::{
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use etcd_monitor_patterns::{Election, Session, connect};
use etcd_monitor_tests::EtcdCluster;

/// Start and end of one leader-only task, by the test's clock.
#[derive(Debug, Default, Clone, Copy)]
struct Span {
    start: Option<Instant>,
    end: Option<Instant>,
}

/// Records the end of a task when its future is dropped (cancelled) or finishes.
struct EndOnDrop(Arc<StdMutex<Span>>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Ok(mut span) = self.0.lock() {
            span.end = Some(Instant::now());
        }
    }
}

fn span() -> Arc<StdMutex<Span>> {
    Arc::new(StdMutex::new(Span::default()))
}

fn read(span: &Arc<StdMutex<Span>>) -> Span {
    span.lock().map(|s| *s).unwrap_or_default()
}

/// Campaigns on `election` and runs a task that records its span and runs until cancelled, or
/// for `lead_for` when given.
fn leader_task(
    election: Election,
    name: &'static str,
    record: Arc<StdMutex<Span>>,
    lead_for: Option<Duration>,
) -> tokio::task::JoinHandle<etcd_monitor_patterns::Result<()>> {
    tokio::spawn(async move {
        election
            .run_while_leader(name, move |_lost| async move {
                if let Ok(mut span) = record.lock() {
                    span.start = Some(Instant::now());
                }
                let _end = EndOnDrop(record.clone());
                match lead_for {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            })
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resign_hands_over_without_overlap_and_observers_follow() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let endpoints = cluster.endpoints();
    let sa = Session::new(connect(&endpoints).await?, Duration::from_secs(5)).await?;
    let sb = Session::new(connect(&endpoints).await?, Duration::from_secs(5)).await?;
    let so = Session::new(connect(&endpoints).await?, Duration::from_secs(5)).await?;
    let ea = Election::new(&sa, "/test/election");
    let eb = Election::new(&sb, "/test/election");
    let mut observer = Election::new(&so, "/test/election").observe();
    let mut a_leading = ea.is_leader();

    let term = ea.campaign("a").await?;
    assert!(*a_leading.borrow_and_update());
    let seen = tokio::time::timeout(Duration::from_secs(10), observer.next()).await?;
    assert_eq!(seen.map(|l| l.value), Some(b"a".to_vec()));
    term.proclaim("a2").await?;
    let seen = tokio::time::timeout(Duration::from_secs(10), observer.next()).await?;
    assert_eq!(seen.as_ref().map(|l| l.value.clone()), Some(b"a2".to_vec()));
    let a_revision = term.revision();
    term.resign().await?;
    assert!(!*a_leading.borrow_and_update());

    // Now the task hand-over: A leads for 1 s then resigns; B waits and takes over.
    let a_span = span();
    let b_span = span();
    let a = leader_task(
        ea.clone(),
        "a",
        a_span.clone(),
        Some(Duration::from_secs(1)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = leader_task(
        eb.clone(),
        "b",
        b_span.clone(),
        Some(Duration::from_millis(200)),
    );
    a.await??;
    b.await??;
    let (a_span, b_span) = (read(&a_span), read(&b_span));
    let (a_end, b_start) = (
        a_span.end.ok_or_else(|| anyhow::anyhow!("A never ended"))?,
        b_span
            .start
            .ok_or_else(|| anyhow::anyhow!("B never started"))?,
    );
    assert!(a_end <= b_start, "A's task ended after B's began");
    println!(
        "MEASURED election failover on resign: {:?}",
        b_start.duration_since(a_end)
    );
    // The observer saw B lead with a later term.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = tokio::time::timeout_at(deadline.into(), observer.next()).await?;
        if let Some(leader) = seen
            && leader.value == b"b"
        {
            assert!(leader.revision > a_revision);
            break;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_leader_process_is_replaced_within_ttl() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let endpoints = cluster.endpoints();
    let ttl_s = 3;
    let (mut leader, rev) = common::ChildProc::start(
        &[
            "lead",
            &endpoints,
            "/test/kill-election",
            &ttl_s.to_string(),
        ],
        "LEADING",
    )?;
    let leader_rev: i64 = rev.parse()?;
    let sb = Session::new(connect(&endpoints).await?, Duration::from_secs(5)).await?;
    let eb = Election::new(&sb, "/test/kill-election");
    let b_span = span();
    let b = leader_task(eb, "b", b_span.clone(), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        read(&b_span).start.is_none(),
        "B led while the leader process lives"
    );
    leader.kill9()?;
    let killed = Instant::now();
    let started =
        etcd_monitor_tests::wait_for("B to lead", Duration::from_secs(30), || read(&b_span).start)?;
    let failover = started.duration_since(killed);
    println!(
        "MEASURED election failover after SIGKILL of the leader process: {failover:?} (TTL {ttl_s} s)"
    );
    assert!(failover <= Duration::from_secs(ttl_s + 10));
    let leader_now = Election::new(&sb, "/test/kill-election").leader().await?;
    assert!(leader_now.is_some_and(|l| l.revision > leader_rev && l.value == b"b"));
    b.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_cut_off_from_etcd_steps_down_before_the_successor_starts() -> anyhow::Result<()> {
    // Three members. A talks only to a follower member; B to another. SIGSTOP of A's member cuts
    // A off from etcd while the rest of the cluster (and B) carries on: A must stop its task
    // within its TTL, and before B starts.
    let cluster = EtcdCluster::start3()?;
    let raft_leader =
        etcd_monitor_tests::wait_for("a raft leader", Duration::from_secs(30), || {
            cluster.leader_index()
        })?;
    let a_member = (raft_leader + 1) % 3;
    let b_member = (raft_leader + 2) % 3;
    let ttl = Duration::from_secs(4);
    let sa = Session::new(connect(&cluster.members[a_member].client_url).await?, ttl).await?;
    let sb = Session::new(connect(&cluster.members[b_member].client_url).await?, ttl).await?;
    let ea = Election::new(&sa, "/test/cutoff");
    let eb = Election::new(&sb, "/test/cutoff");
    let mut a_leading = ea.is_leader();
    let (a_span, b_span) = (span(), span());
    let a = leader_task(ea, "a", a_span.clone(), None);
    etcd_monitor_tests::wait_for("A to lead", Duration::from_secs(30), || read(&a_span).start)?;
    let b = leader_task(eb, "b", b_span.clone(), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(read(&b_span).start.is_none());

    cluster.members[a_member].signal(libc::SIGSTOP)?;
    let stopped = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), a).await??;
    let a_end = read(&a_span)
        .end
        .ok_or_else(|| anyhow::anyhow!("A's task never ended"))?;
    let step_down = a_end.duration_since(stopped);
    println!(
        "MEASURED cut-off leader stepped down {step_down:?} after its etcd member was stopped (TTL {ttl:?}); outcome {outcome:?}"
    );
    assert!(
        outcome.is_err(),
        "A's term ended without an error: {outcome:?}"
    );
    assert!(!*a_leading.borrow_and_update());
    assert!(
        step_down <= ttl + Duration::from_secs(3),
        "stepped down after {step_down:?}"
    );

    let b_start =
        etcd_monitor_tests::wait_for("B to lead", Duration::from_secs(60), || read(&b_span).start)?;
    println!(
        "MEASURED failover with the leader cut off: {:?} from SIGSTOP to the new leader's task; gap after the old task ended {:?}",
        b_start.duration_since(stopped),
        b_start.duration_since(a_end)
    );
    assert!(a_end <= b_start, "B's task started before A's ended");
    cluster.members[a_member].signal(libc::SIGCONT)?;
    b.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_process_steps_down_when_it_resumes() -> anyhow::Result<()> {
    // The leader itself is frozen (SIGSTOP), as in a long GC pause or a stopped container: etcd
    // expires its lease, B takes over; when the old leader resumes it must notice at once that its
    // term is over (its local deadline passed), without needing etcd to tell it.
    let cluster = common::one_member()?;
    let endpoints = cluster.endpoints();
    let ttl_s = 3;
    let (leader, _) = common::ChildProc::start(
        &["lead", &endpoints, "/test/paused", &ttl_s.to_string()],
        "LEADING",
    )?;
    let sb = Session::new(connect(&endpoints).await?, Duration::from_secs(5)).await?;
    let b_span = span();
    let b = leader_task(
        Election::new(&sb, "/test/paused"),
        "b",
        b_span.clone(),
        None,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    leader.signal(libc::SIGSTOP)?;
    let stopped = Instant::now();
    let b_start =
        etcd_monitor_tests::wait_for("B to lead", Duration::from_secs(30), || read(&b_span).start)?;
    println!(
        "MEASURED failover from a frozen leader process: {:?} (TTL {ttl_s} s)",
        b_start.duration_since(stopped)
    );
    leader.signal(libc::SIGCONT)?;
    let resumed = Instant::now();
    let line = tokio::task::spawn_blocking(move || {
        let line = leader.next_line(Duration::from_secs(10));
        (line, leader)
    })
    .await?;
    let noticed = resumed.elapsed();
    assert_eq!(
        line.0.as_deref(),
        Some("LOST"),
        "the resumed old leader did not step down"
    );
    println!("MEASURED resumed old leader stepped down {noticed:?} after SIGCONT");
    assert!(noticed <= Duration::from_secs(5));
    b.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_the_leader_key_cancels_the_leader_task() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let sa = Session::new(
        connect(&cluster.endpoints()).await?,
        Duration::from_secs(10),
    )
    .await?;
    let ea = Election::new(&sa, "/test/deleted");
    let mut leading = ea.is_leader();
    let a_span = span();
    let a = leader_task(ea.clone(), "a", a_span.clone(), None);
    etcd_monitor_tests::wait_for("A to lead", Duration::from_secs(30), || read(&a_span).start)?;
    let key = ea
        .leader()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader key"))?
        .key;
    let deleted = Instant::now();
    cluster.etcdctl(&["del", &key])?;
    let outcome = tokio::time::timeout(Duration::from_secs(10), a).await??;
    assert!(
        matches!(outcome, Err(etcd_monitor_patterns::Error::NotLeader { .. })),
        "{outcome:?}"
    );
    let ended = read(&a_span)
        .end
        .ok_or_else(|| anyhow::anyhow!("A's task never ended"))?;
    println!(
        "MEASURED leader task cancelled {:?} after its key was deleted",
        ended.duration_since(deleted)
    );
    assert!(!*leading.borrow_and_update());
    // The session outlives the term: the same candidate can campaign again.
    assert!(sa.is_alive());
    let term = tokio::time::timeout(Duration::from_secs(10), ea.campaign("a-again")).await??;
    assert!(term.is_leader());
    Ok(())
}
