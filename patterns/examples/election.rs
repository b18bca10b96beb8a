//! Leader election with a leader-only task. Run it in two terminals: one leads and ticks, the
//! other waits; stop the leader (Ctrl-C, or `kill -9`) and the other takes over within the TTL.
//!
//! `cargo run -p etcd-monitor-patterns --example election -- --endpoints http://127.0.0.1:2379 --name a`

use std::time::Duration;

use clap::Parser;
use etcd_monitor_patterns::{Election, Session, connect};

#[derive(Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Election prefix.
    #[arg(long, default_value = "/etcdmon-examples/election")]
    election: String,
    /// This candidate's name (proclaimed as the leader's value).
    #[arg(long, default_value = "candidate")]
    name: String,
    /// Lease TTL in seconds: how long a dead leader blocks the next one.
    #[arg(long, default_value_t = 5)]
    ttl: u64,
    /// Resign after leading this many seconds (0 = lead until stopped).
    #[arg(long, default_value_t = 0)]
    lead_for: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = connect(&args.endpoints).await?;
    let observer_election = {
        let session = Session::new(client.clone(), Duration::from_secs(args.ttl)).await?;
        Election::new(&session, &args.election)
    };
    let mut observer = observer_election.observe();
    tokio::spawn(async move {
        loop {
            match observer.next().await {
                Some(leader) => println!(
                    "observer: leader is {} (term {})",
                    String::from_utf8_lossy(&leader.value),
                    leader.revision
                ),
                None => println!("observer: no leader"),
            }
        }
    });
    loop {
        let session = Session::new(client.clone(), Duration::from_secs(args.ttl)).await?;
        let election = Election::new(&session, &args.election);
        println!("{}: campaigning", args.name);
        let name = args.name.clone();
        let lead_for = args.lead_for;
        let outcome = election
            .run_while_leader(args.name.as_bytes(), |_lost| async move {
                println!("{name}: leading; the leader-only task runs");
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut ticks = 0u64;
                loop {
                    tick.tick().await;
                    ticks += 1;
                    println!("{name}: leader tick {ticks}");
                    if lead_for > 0 && ticks >= lead_for {
                        break;
                    }
                }
            })
            .await;
        match outcome {
            Ok(()) => {
                println!("{}: resigned", args.name);
                session.close().await?;
                return Ok(());
            }
            Err(error) => println!(
                "{}: leadership lost ({error}); campaigning again",
                args.name
            ),
        }
    }
}
