//! Feature flags: an on/off switch and a percentage rollout by stable hash.
//!
//! `cargo run -p etcd-monitor-patterns --example feature_flags -- --endpoints http://127.0.0.1:2379`

use clap::Parser;
use etcd_monitor_patterns::{FeatureFlags, Flag, connect, rollout_bucket};

#[derive(Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Flags prefix.
    #[arg(long, default_value = "/etcdmon-examples/flags")]
    prefix: String,
    /// Rollout percentage of the `new-dashboard` flag.
    #[arg(long, default_value_t = 25)]
    percentage: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let flags = FeatureFlags::new(connect(&args.endpoints).await?, &args.prefix);
    flags
        .set(
            "maintenance-mode",
            Flag {
                enabled: false,
                percentage: 100,
            },
        )
        .await?;
    flags
        .set(
            "new-dashboard",
            Flag {
                enabled: true,
                percentage: args.percentage,
            },
        )
        .await?;
    println!(
        "maintenance-mode for anyone: {}",
        flags.is_enabled("maintenance-mode", "anyone").await?
    );
    let mut on = 0;
    for i in 0..20 {
        let user = format!("user-{i}");
        let enabled = flags.is_enabled("new-dashboard", &user).await?;
        on += usize::from(enabled);
        println!(
            "new-dashboard for {user:8} (bucket {:4}/10000): {enabled}",
            rollout_bucket("new-dashboard", &user)
        );
    }
    println!("{on}/20 users get new-dashboard at {} %", args.percentage);
    Ok(())
}
