//! Typed configuration with a watch that resumes from the last revision seen. Run it, then change
//! a value from another terminal (`etcdctl put /etcdmon-examples/config/scrape_interval_s 30`),
//! or restart etcd: the watch picks up where it stopped.
//!
//! `cargo run -p etcd-monitor-patterns --example config -- --endpoints http://127.0.0.1:2379`

use clap::Parser;
use etcd_monitor_patterns::{Config, connect};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Config prefix.
    #[arg(long, default_value = "/etcdmon-examples/config")]
    prefix: String,
    /// Stop after this many changes (0 = run until stopped).
    #[arg(long, default_value_t = 0)]
    changes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Retention {
    days: u32,
    compress: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::new(connect(&args.endpoints).await?, &args.prefix);
    config.set("scrape_interval_s", &15u32).await?;
    config
        .set(
            "retention",
            &Retention {
                days: 14,
                compress: true,
            },
        )
        .await?;
    let interval: Option<u32> = config.get("scrape_interval_s").await?;
    let retention: Option<Retention> = config.get("retention").await?;
    println!("scrape_interval_s = {interval:?}, retention = {retention:?}");
    let mut watch = config.watch().await?;
    println!("watching from revision {}", watch.next_revision());
    let mut seen = 0;
    loop {
        let change = watch.next().await?;
        let value = change
            .value
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        println!("revision {}: {} = {value:?}", change.revision, change.key);
        seen += 1;
        if args.changes > 0 && seen >= args.changes {
            return Ok(());
        }
    }
}
