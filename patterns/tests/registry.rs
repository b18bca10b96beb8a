//! Service registry against real etcd: discovery, picks, a killed instance disappearing.

mod common;

use std::time::{Duration, Instant};

use etcd_monitor_patterns::{Instance, ServiceEvent, ServiceRegistry, Session, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_instance_disappears_within_ttl_and_watchers_see_it() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let endpoints = cluster.endpoints();
    let client = connect(&endpoints).await?;
    let registry = ServiceRegistry::new(client.clone(), "/test/services");
    let session = Session::new(client.clone(), Duration::from_secs(10)).await?;
    let a = Instance {
        id: "a".into(),
        addr: "127.0.0.1:1".into(),
        metadata: Default::default(),
    };
    registry.register(&session, "api", &a).await?;
    let ttl_s = 3;
    let (mut b, _) = common::ChildProc::start(
        &[
            "register",
            &endpoints,
            "/test/services",
            "api",
            "b",
            &ttl_s.to_string(),
        ],
        "REGISTERED",
    )?;

    let mut watcher = registry.watch("api").await?;
    let ids: Vec<String> = watcher.instances().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["a", "b"]);
    let picks: Vec<String> = (0..4)
        .filter_map(|_| watcher.pick_round_robin().map(|i| i.id))
        .collect();
    assert_eq!(picks, ["a", "b", "a", "b"]);
    for _ in 0..20 {
        let pick = watcher.pick_random().map(|i| i.id);
        assert!(matches!(pick.as_deref(), Some("a" | "b")));
    }

    b.kill9()?;
    let killed = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(30), watcher.next()).await??;
    let gone_after = killed.elapsed();
    assert_eq!(event, ServiceEvent::Down { id: "b".into() });
    println!("MEASURED killed instance disappeared {gone_after:?} after SIGKILL (TTL {ttl_s} s)");
    assert!(gone_after <= Duration::from_secs(ttl_s + 10));
    let ids: Vec<String> = registry
        .discover("api")
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["a"]);
    assert_eq!(
        watcher.pick_round_robin().map(|i| i.id).as_deref(),
        Some("a")
    );

    // A new registration shows up as Up.
    let c = Instance {
        id: "c".into(),
        addr: "127.0.0.1:3".into(),
        metadata: Default::default(),
    };
    registry.register(&session, "api", &c).await?;
    let event = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await??;
    assert_eq!(event, ServiceEvent::Up(c));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_service_names_are_refused() -> anyhow::Result<()> {
    let cluster = common::one_member()?;
    let client = connect(&cluster.endpoints()).await?;
    let registry = ServiceRegistry::new(client, "/test/services");
    let err = registry.discover("a/b").await.err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("service")));
    Ok(())
}
