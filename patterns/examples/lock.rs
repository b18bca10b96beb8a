//! Distributed lock with a fencing token: several workers in this process (each with its own
//! session, as separate processes would have) take turns on one lock.
//!
//! `cargo run -p etcd-monitor-patterns --example lock -- --endpoints http://127.0.0.1:2379`

use std::time::Duration;

use clap::Parser;
use etcd_monitor_patterns::{Mutex, RwLock, Session, connect};

#[derive(Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Lock prefix.
    #[arg(long, default_value = "/etcdmon-examples/lock")]
    prefix: String,
    /// Workers contending for the lock.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = connect(&args.endpoints).await?;
    let mut tasks = Vec::new();
    for worker in 0..args.workers {
        let client = client.clone();
        let prefix = args.prefix.clone();
        let ttl = Duration::from_secs(args.ttl);
        tasks.push(tokio::spawn(async move {
            let session = Session::new(client, ttl).await?;
            let mutex = Mutex::new(&session, &prefix);
            let guard = mutex.lock().await?;
            println!(
                "worker {worker}: holding the lock, fencing token {}",
                guard.token()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            guard.unlock().await?;
            println!("worker {worker}: released");
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    // Read-write lock: two readers share, the writer waits for both.
    let session = Session::new(client, Duration::from_secs(args.ttl)).await?;
    let rw = RwLock::new(&session, &format!("{}-rw", args.prefix));
    let r1 = rw.read().await?;
    let r2 = rw.read().await?;
    println!("two readers hold the read lock at once");
    let writer = {
        let rw = rw.clone();
        tokio::spawn(async move {
            let w = rw.write().await?;
            println!("writer: exclusive now");
            w.unlock().await?;
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("releasing the readers; the writer goes next");
    r1.unlock().await?;
    r2.unlock().await?;
    writer.await??;
    session.close().await?;
    Ok(())
}
