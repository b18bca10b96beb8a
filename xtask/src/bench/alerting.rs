//! `cargo xtask bench alerting`: how fast an alert reaches a receiver. A 5-member etcd
//! cluster on loopback, the collector (release build) with a webhook channel pointing at a
//! receiver in this process; each round SIGSTOPs a different member and measures
//! SIGSTOP → `fired_at_ms` (engine), SIGSTOP → webhook received (delivery), and
//! SIGCONT → resolved webhook received.
//!
//! Figures only: nothing here fails on a threshold except a round that never alerts.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etcd_monitor_tests::{ClusterOptions, CollectorProcess, EtcdCluster, wait_for};

type Inbox = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A minimal HTTP/1.1 receiver: records each POST body with its arrival time, answers 204.
fn receiver() -> anyhow::Result<(u16, Inbox)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let inbox: Inbox = Arc::new(Mutex::new(Vec::new()));
    let sink = inbox.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice(&body)
                && let Ok(mut v) = sink.lock()
            {
                v.push((Instant::now(), json));
            }
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    Ok((port, inbox))
}

fn received(inbox: &Inbox, member: &str, status: &str) -> Option<Instant> {
    inbox.lock().ok()?.iter().find_map(|(at, j)| {
        (j["status"] == status
            && j["alert"]["name"] == "MemberUnavailable"
            && j["alert"]["member"] == member)
            .then_some(*at)
    })
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let max = v.last().copied().unwrap_or(f64::NAN);
    let all: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
    println!(
        "  {name:<44} median {median:>6.0} ms   max {max:>6.0} ms   [{}]",
        all.join(", ")
    );
}

/// Runs `rounds` stop/continue rounds (at most 5, one per member) with `health` as the
/// collector's health interval.
pub fn run(rounds: usize, health: Duration) -> anyhow::Result<()> {
    let binary = crate::cmd::build_binaries(true, &[])?.join("etcd-monitor");
    let (port, inbox) = receiver()?;
    eprintln!("xtask: bench alerting: starting a 5-member etcd cluster");
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 5,
        ..ClusterOptions::default()
    })?;
    let scratch =
        std::env::temp_dir().join(format!("etcdmon-bench-alerting-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let config = scratch.join("config.yaml");
    std::fs::write(
        &config,
        format!("notifiers:\n  - type: webhook\n    url: http://127.0.0.1:{port}/hook\n"),
    )?;
    let args = vec![
        format!("--endpoints={}", cluster.endpoints()),
        format!("--health-check-interval={}ms", health.as_millis()),
        "--metrics-interval=1s".to_string(),
        "--dial-timeout=500ms".to_string(),
        format!("--config={}", config.display()),
        format!("--data-dir={}", scratch.join("data").display()),
    ];
    let collector = CollectorProcess::start(&binary, &args, &scratch)?;
    wait_for("5 members answer", Duration::from_secs(60), || {
        collector
            .status(None)
            .ok()
            .filter(|s| s["available_members"] == 5)
    })?;
    let (mut engine, mut delivery, mut resolve) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.min(5) {
        let member = &cluster.members[round];
        let stopped_ms = now_ms();
        let stopped = Instant::now();
        member.signal(libc::SIGSTOP)?;
        let got = wait_for("the firing webhook", Duration::from_secs(60), || {
            received(&inbox, &member.name, "firing")
        })?;
        delivery.push(got.duration_since(stopped).as_secs_f64() * 1000.0);
        let (_, alerts) = collector.get_json("/api/v1/alerts")?;
        if let Some(fired) = alerts["alerts"].as_array().and_then(|a| {
            a.iter()
                .find(|a| a["name"] == "MemberUnavailable" && a["member"] == member.name.as_str())
                .and_then(|a| a["fired_at_ms"].as_u64())
        }) {
            engine.push(fired.saturating_sub(stopped_ms) as f64);
        }
        let continued = Instant::now();
        member.signal(libc::SIGCONT)?;
        let got = wait_for("the resolved webhook", Duration::from_secs(60), || {
            received(&inbox, &member.name, "resolved")
        })?;
        resolve.push(got.duration_since(continued).as_secs_f64() * 1000.0);
        wait_for("5 members answer again", Duration::from_secs(60), || {
            collector
                .status(None)
                .ok()
                .filter(|s| s["available_members"] == 5)
        })?;
    }
    println!(
        "bench alerting: 5-member cluster, health interval {} ms, dial timeout 500 ms, {} rounds",
        health.as_millis(),
        engine.len()
    );
    summary("SIGSTOP -> MemberUnavailable fired (engine)", engine);
    summary("SIGSTOP -> firing webhook received", delivery);
    summary("SIGCONT -> resolved webhook received", resolve);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
