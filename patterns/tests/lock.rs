//! Mutex and RwLock against real etcd.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_monitor_patterns::{Error, Mutex, RwLock, Session, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_contenders_never_overlap_and_fencing_tokens_increase() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let endpoints = cluster.endpoints();
    let epoch = Instant::now();
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let endpoints = endpoints.clone();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            // One client and one session per contender, as separate processes would have.
            let session = Session::new(connect(&endpoints).await?, Duration::from_secs(10)).await?;
            let guard = Mutex::new(&session, "/test/lock").lock().await?;
            let start = epoch.elapsed();
            let others = inside.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            let end = epoch.elapsed();
            let token = guard.token();
            guard.unlock().await?;
            session.close().await?;
            anyhow::Ok((i, start, end, token, others))
        }));
    }
    let mut sections = Vec::new();
    for task in tasks {
        sections.push(task.await??);
    }
    sections.sort_by_key(|s| s.1);
    for s in &sections {
        assert_eq!(
            s.4, 0,
            "contender {} entered while {} other(s) were inside",
            s.0, s.4
        );
    }
    for pair in sections.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.2 <= b.1,
            "critical sections overlap: contender {} [{:?}, {:?}] and {} [{:?}, {:?}]",
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            b.2
        );
        assert!(
            a.3 < b.3,
            "fencing token did not increase: {} then {}",
            a.3,
            b.3
        );
    }
    println!(
        "20 contenders, fencing tokens {:?}",
        sections.iter().map(|s| s.3).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn try_lock_refuses_while_held_and_succeeds_after() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let client = connect(&cluster.endpoints()).await?;
    let a = Session::new(client.clone(), Duration::from_secs(10)).await?;
    let b = Session::new(client.clone(), Duration::from_secs(10)).await?;
    let held = Mutex::new(&a, "/test/try").lock().await?;
    match Mutex::new(&b, "/test/try").try_lock().await {
        Err(Error::Locked { .. }) => {}
        other => anyhow::bail!("try_lock while held gave {other:?}"),
    }
    let first = held.token();
    drop(held); // release on drop, in the background
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        match Mutex::new(&b, "/test/try").try_lock().await {
            Ok(guard) => break guard,
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    assert!(second.token() > first);
    // A refused try_lock left no key behind.
    let keys = cluster.etcdctl(&["get", "--prefix", "--keys-only", "/test/try/"])?;
    assert_eq!(
        keys.lines().filter(|l| !l.is_empty()).count(),
        1,
        "keys: {keys}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_holders_lock_is_freed_by_lease_expiry() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let endpoints = cluster.endpoints();
    let ttl_s = 3;
    let (mut holder, token) = common::ChildProc::start(
        &["lock", &endpoints, "/test/killed", &ttl_s.to_string()],
        "LOCKED",
    )?;
    let holder_token: i64 = token.parse()?;

    let session = Session::new(connect(&endpoints).await?, Duration::from_secs(10)).await?;
    let mutex = Mutex::new(&session, "/test/killed");
    let waiter = tokio::spawn(async move { mutex.lock().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiter.is_finished(),
        "the lock was taken while the holder process lives"
    );

    holder.kill9()?;
    let killed = Instant::now();
    let guard = tokio::time::timeout(Duration::from_secs(30), waiter).await???;
    let freed_after = killed.elapsed();
    println!("MEASURED lock freed {freed_after:?} after SIGKILL of the holder (TTL {ttl_s} s)");
    assert!(guard.token() > holder_token);
    assert!(
        freed_after <= Duration::from_secs(ttl_s + 10),
        "lock freed only after {freed_after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rwlock_readers_share_writer_excludes_in_revision_order() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let client = connect(&cluster.endpoints()).await?;
    let session = Session::new(client.clone(), Duration::from_secs(10)).await?;
    let other = Session::new(client.clone(), Duration::from_secs(10)).await?;
    let rw = RwLock::new(&session, "/test/rw");
    let r1 = rw.read().await?;
    let r2 = tokio::time::timeout(Duration::from_secs(10), rw.read()).await??;

    // A writer queues behind the readers…
    let writer = {
        let rw = RwLock::new(&other, "/test/rw");
        tokio::spawn(async move { rw.write().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "writer got in while readers hold");
    // …and a reader arriving after the writer waits behind it (fair, no writer starvation).
    let late_reader = {
        let rw = rw.clone();
        tokio::spawn(async move { rw.read().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !late_reader.is_finished(),
        "a later reader overtook the waiting writer"
    );

    r1.unlock().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "writer got in while one reader still holds"
    );
    r2.unlock().await?;
    let w = tokio::time::timeout(Duration::from_secs(10), writer).await???;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !late_reader.is_finished(),
        "reader got in while the writer holds"
    );
    w.unlock().await?;
    let late = tokio::time::timeout(Duration::from_secs(10), late_reader).await???;
    late.unlock().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_the_lock_key_tells_the_holder() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let session = Session::new(
        connect(&cluster.endpoints()).await?,
        Duration::from_secs(10),
    )
    .await?;
    let guard = Mutex::new(&session, "/test/deleted-lock").lock().await?;
    let lost = guard.lost();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!lost.is_cancelled());
    cluster.etcdctl(&["del", guard.key()])?;
    tokio::time::timeout(Duration::from_secs(10), lost.cancelled()).await?;
    assert!(
        session.is_alive(),
        "the session outlives a deleted lock key"
    );
    Ok(())
}
