//! A process the end-to-end tests SIGKILL: it takes a lock, a registration or leadership, prints
//! one line saying so, and holds it until killed.
//!
//! ```text
//! etcd-patterns-child lock     ENDPOINTS PREFIX TTL_S            -> "LOCKED <fencing token>"
//! etcd-patterns-child register ENDPOINTS PREFIX SERVICE ID TTL_S -> "REGISTERED <id>"
//! etcd-patterns-child lead     ENDPOINTS ELECTION TTL_S          -> "LEADING <revision>", then
//!                                                                    "LOST" when the term ends
//! ```

use std::{io::Write, time::Duration};

use etcd_monitor_patterns::{Election, Instance, Mutex, ServiceRegistry, Session, connect};

fn usage() -> ! {
    eprintln!(
        "usage: etcd-patterns-child lock ENDPOINTS PREFIX TTL_S | register ENDPOINTS PREFIX SERVICE ID TTL_S | lead ENDPOINTS ELECTION TTL_S"
    );
    std::process::exit(2)
}

fn ttl(arg: Option<&String>) -> Duration {
    match arg.and_then(|s| s.parse::<u64>().ok()) {
        Some(secs) if secs > 0 => Duration::from_secs(secs),
        _ => usage(),
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = run(&args).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> etcd_monitor_patterns::Result<()> {
    let (Some(mode), Some(endpoints)) = (args.first(), args.get(1)) else {
        usage()
    };
    let client = connect(endpoints).await?;
    match mode.as_str() {
        "lock" => {
            let prefix = args.get(2).unwrap_or_else(|| usage());
            let session = Session::new(client, ttl(args.get(3))).await?;
            let guard = Mutex::new(&session, prefix).lock().await?;
            say(format!("LOCKED {}", guard.token()));
            guard.lost().cancelled().await;
        }
        "register" => {
            let (Some(prefix), Some(service), Some(id)) = (args.get(2), args.get(3), args.get(4))
            else {
                usage()
            };
            let session = Session::new(client.clone(), ttl(args.get(5))).await?;
            let instance = Instance {
                id: id.clone(),
                addr: format!("127.0.0.1:{}", std::process::id()),
                metadata: Default::default(),
            };
            ServiceRegistry::new(client, prefix)
                .register(&session, service, &instance)
                .await?;
            say(format!("REGISTERED {id}"));
            session.lost().cancelled().await;
        }
        "lead" => {
            let name = args.get(2).unwrap_or_else(|| usage());
            let session = Session::new(client, ttl(args.get(3))).await?;
            let term = Election::new(&session, name)
                .campaign(format!("pid-{}", std::process::id()))
                .await?;
            say(format!("LEADING {}", term.revision()));
            term.lost().cancelled().await;
            say("LOST".to_string());
            std::future::pending::<()>().await;
        }
        _ => usage(),
    }
    Ok(())
}
