//! Service discovery: registers an instance, lists and watches the service, picks instances
//! round-robin and at random. Run it twice with different `--id`s and kill one: the other sees
//! it go within the TTL.
//!
//! `cargo run -p etcd-monitor-patterns --example registry -- --endpoints http://127.0.0.1:2379 --id api-1`

use std::time::Duration;

use clap::Parser;
use etcd_monitor_patterns::{Instance, ServiceRegistry, Session, connect};

#[derive(Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Registry prefix.
    #[arg(long, default_value = "/etcdmon-examples/services")]
    prefix: String,
    /// Service name.
    #[arg(long, default_value = "api")]
    service: String,
    /// This instance's id.
    #[arg(long, default_value = "api-1")]
    id: String,
    /// This instance's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u64,
    /// Exit after this many seconds (0 = run until stopped).
    #[arg(long, default_value_t = 0)]
    run_for: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = connect(&args.endpoints).await?;
    let session = Session::new(client.clone(), Duration::from_secs(args.ttl)).await?;
    let registry = ServiceRegistry::new(client, &args.prefix);
    let me = Instance {
        id: args.id.clone(),
        addr: args.addr.clone(),
        metadata: [("pid".to_string(), std::process::id().to_string())].into(),
    };
    registry.register(&session, &args.service, &me).await?;
    println!("registered {} at {}", me.id, me.addr);
    println!("discovered: {:?}", registry.discover(&args.service).await?);
    let mut watcher = registry.watch(&args.service).await?;
    for _ in 0..3 {
        println!(
            "round-robin pick: {:?}",
            watcher.pick_round_robin().map(|i| i.id)
        );
    }
    println!("random pick: {:?}", watcher.pick_random().map(|i| i.id));
    let deadline =
        (args.run_for > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(args.run_for));
    loop {
        let event = match deadline {
            Some(d) => match tokio::time::timeout_at(d, watcher.next()).await {
                Ok(event) => event?,
                Err(_) => break,
            },
            None => watcher.next().await?,
        };
        println!(
            "change: {event:?}; now {} instance(s)",
            watcher.instances().len()
        );
    }
    session.close().await?;
    Ok(())
}
