//! Collector HA end to end: two real collectors with `--ha-election` on a separate real etcd,
//! the monitored cluster's member stopped to make `MemberUnavailable` fire, and a webhook
//! receiver counting what both collectors send. The leader is SIGKILLed (failover measured) or
//! SIGSTOPped (it must step down and not notify as a stale leader when it wakes up).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{start_collector, tail};
use etcd_monitor_tests::{ClusterOptions, CollectorProcess, EtcdCluster, http, wait_for};

/// Lease TTL of the election in these tests: 5 s, or `ETCDMON_HA_TEST_TTL_S` seconds (e.g. 10,
/// the default of `--ha-ttl`, to measure failover at the default).
fn ttl() -> Duration {
    let secs = std::env::var("ETCDMON_HA_TEST_TTL_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

type Inbox = Arc<Mutex<Vec<serde_json::Value>>>;

/// A webhook receiver recording every JSON body it gets.
fn start_webhook(rt: &tokio::runtime::Runtime) -> anyhow::Result<(u16, Inbox)> {
    let inbox: Inbox = Arc::new(Mutex::new(Vec::new()));
    let record = {
        let inbox = inbox.clone();
        move |body: axum::body::Bytes| {
            let inbox = inbox.clone();
            async move {
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                if let Ok(mut v) = inbox.lock() {
                    v.push(json);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(record));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, app).await });
    Ok((port, inbox))
}

/// Webhook deliveries of `MemberUnavailable` for `member` in `status`.
fn count(inbox: &Inbox, member: &str, status: &str) -> usize {
    inbox.lock().map_or(0, |v| {
        v.iter()
            .filter(|j| {
                j["status"] == status
                    && j["alert"]["name"] == "MemberUnavailable"
                    && j["alert"]["member"] == member
            })
            .count()
    })
}

/// Everything one HA test runs against.
struct Setup {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    monitored: EtcdCluster,
    _ha_etcd: EtcdCluster,
    inbox: Inbox,
    collectors: Vec<CollectorProcess>,
}

fn setup() -> anyhow::Result<Setup> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let (port, inbox) = start_webhook(&rt)?;
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("notifiers:\n  - type: webhook\n    url: http://127.0.0.1:{port}/hook\n"),
    )?;
    let monitored = EtcdCluster::start3()?;
    // The election's own etcd: stopping a monitored member must not disturb the election.
    let ha_etcd = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "ha".into(),
        ..ClusterOptions::default()
    })?;
    let mut collectors = Vec::new();
    for id in ["collector-a", "collector-b"] {
        let data = dir.path().join(id);
        let args = [
            format!("--endpoints={}", monitored.endpoints()),
            "--health-check-interval=1s".into(),
            "--metrics-interval=1s".into(),
            "--dial-timeout=500ms".into(),
            format!("--config={}", config.display()),
            format!("--data-dir={}", data.display()),
            "--ha-election".into(),
            format!("--ha-endpoints={}", ha_etcd.endpoints()),
            format!("--ha-ttl={}s", ttl().as_secs()),
            format!("--ha-id={id}"),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        collectors.push(start_collector(dir.path(), &argv)?);
    }
    Ok(Setup {
        rt,
        _dir: dir,
        monitored,
        _ha_etcd: ha_etcd,
        inbox,
        collectors,
    })
}

/// `etcdmon_collector_leader` of a collector (`None`: no answer within a second).
async fn leader_gauge(client: &reqwest::Client, url: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    http::prom_sum(&text, "etcdmon_collector_leader", &[])
}

/// Samples every collector's leader gauge until stopped; counts samples where two collectors
/// report 1 (read A, B, then A again, so a hand-over between two reads is not counted).
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicU64>,
    overlaps: Arc<AtomicU64>,
}

impl Sampler {
    fn start(rt: &tokio::runtime::Runtime, urls: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicU64::new(0));
        let overlaps = Arc::new(AtomicU64::new(0));
        let (s, n, o) = (stop.clone(), samples.clone(), overlaps.clone());
        rt.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .no_proxy()
                .build()
                .expect("HTTP client");
            while !s.load(Ordering::Relaxed) {
                let a = leader_gauge(&client, &urls[0]).await == Some(1.0);
                let b = leader_gauge(&client, &urls[1]).await == Some(1.0);
                let a2 = leader_gauge(&client, &urls[0]).await == Some(1.0);
                n.fetch_add(1, Ordering::Relaxed);
                if a && b && a2 {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            stop,
            samples,
            overlaps,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.samples.load(Ordering::Relaxed),
            self.overlaps.load(Ordering::Relaxed),
        )
    }
}

fn ha(c: &CollectorProcess) -> serde_json::Value {
    c.get_json("/api/v1/ha")
        .map(|(_, b)| b)
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until exactly one collector leads and the other names it; its index.
fn wait_one_leader(collectors: &[CollectorProcess]) -> anyhow::Result<usize> {
    wait_for("exactly one leader", Duration::from_secs(30), || {
        let states: Vec<serde_json::Value> = collectors.iter().map(ha).collect();
        let leaders: Vec<usize> = (0..states.len())
            .filter(|i| states[*i]["is_leader"] == true)
            .collect();
        let named = states
            .iter()
            .all(|s| leaders.len() == 1 && s["leader"] == states[leaders[0]]["id"]);
        (leaders.len() == 1 && named).then(|| leaders[0])
    })
}

/// Stops a follower of the monitored cluster and waits for the single firing notification.
fn fire(s: &Setup) -> anyhow::Result<(usize, String)> {
    for c in &s.collectors {
        crate::common::wait_status(c, "3 members answer", Duration::from_secs(30), |st| {
            st["available_members"] == 3
        })?;
    }
    let leader = s
        .monitored
        .leader_index()
        .ok_or_else(|| anyhow::anyhow!("no etcd leader"))?;
    let victim = (leader + 1) % 3;
    let name = s.monitored.members[victim].name.clone();
    s.monitored.members[victim].signal(libc::SIGSTOP)?;
    wait_for("the firing notification", Duration::from_secs(30), || {
        (count(&s.inbox, &name, "firing") >= 1).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    // Both engines see it firing (the follower evaluates too).
    for c in &s.collectors {
        wait_for("firing on every collector", Duration::from_secs(20), || {
            let (_, body) = c.get_json("/api/v1/alerts").ok()?;
            body["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["name"] == "MemberUnavailable"
                        && a["member"] == name.as_str()
                        && a["state"] == "firing"
                })
                .then_some(())
        })?;
    }
    Ok((victim, name))
}

fn logs(collectors: &[CollectorProcess]) -> String {
    collectors
        .iter()
        .map(|c| format!("--- {}\n{}", c.url, tail(&c.log_text(), 30)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits a while and checks the webhook got exactly one firing and one resolved.
fn exactly_once(s: &Setup, name: &str) -> anyhow::Result<()> {
    wait_for("the resolved notification", Duration::from_secs(40), || {
        (count(&s.inbox, name, "resolved") >= 1).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    // Long enough for a duplicate from any collector to arrive.
    std::thread::sleep(ttl() + Duration::from_secs(3));
    let (firing, resolved) = (
        count(&s.inbox, name, "firing"),
        count(&s.inbox, name, "resolved"),
    );
    anyhow::ensure!(
        firing == 1 && resolved == 1,
        "webhook got {firing} firing and {resolved} resolved notifications, want 1 and 1\n{}",
        logs(&s.collectors)
    );
    Ok(())
}

#[test]
fn sigkilled_leader_is_replaced_and_notifications_are_sent_exactly_once() -> anyhow::Result<()> {
    let s = setup()?;
    let urls = s.collectors.iter().map(|c| c.url.clone()).collect();
    let sampler = Sampler::start(&s.rt, urls);
    let leader = wait_one_leader(&s.collectors)?;
    let (victim, name) = fire(&s)?;

    // Kill the leader; the member answers again while nobody leads, so the resolution
    // happens in the gap and must be sent by the new leader.
    let killed_at = Instant::now();
    s.collectors[leader].process.signal(libc::SIGKILL)?;
    s.monitored.members[victim].signal(libc::SIGCONT)?;
    let survivor = 1 - leader;
    wait_for("the survivor leads", Duration::from_secs(60), || {
        (ha(&s.collectors[survivor])["is_leader"] == true).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    let failover = killed_at.elapsed();
    eprintln!(
        "HA failover after SIGKILL of the leader: {} ms (lease TTL {} ms)",
        failover.as_millis(),
        ttl().as_millis()
    );
    exactly_once(&s, &name)?;
    let text = s.collectors[survivor].metrics()?;
    let handed = http::prom_sum(
        &text,
        "etcdmon_ha_handover_notifications_total",
        &[("state", "resolved")],
    );
    assert_eq!(
        handed,
        Some(1.0),
        "the resolve was a hand-over notification:\n{text}"
    );
    assert_eq!(
        http::prom_sum(&text, "etcdmon_collector_leader", &[]),
        Some(1.0)
    );
    let (samples, overlaps) = sampler.finish();
    eprintln!("Leader gauge sampled {samples} times on both collectors; both 1 in {overlaps}.");
    assert!(samples > 10, "the gauge was sampled ({samples})");
    assert_eq!(
        overlaps, 0,
        "two collectors reported etcdmon_collector_leader 1 at once"
    );
    // Generous: the lease TTL plus the election's and the test's polling, on a loaded machine.
    assert!(
        failover < ttl() * 3,
        "failover took {failover:?}, more than three lease TTLs"
    );
    Ok(())
}

#[test]
fn paused_leader_steps_down_and_does_not_notify_when_it_wakes() -> anyhow::Result<()> {
    let s = setup()?;
    let urls = s.collectors.iter().map(|c| c.url.clone()).collect();
    let sampler = Sampler::start(&s.rt, urls);
    let leader = wait_one_leader(&s.collectors)?;
    let (victim, name) = fire(&s)?;
    let other = 1 - leader;

    // Pause the leader past its lease: the other collector takes over.
    let paused_at = Instant::now();
    s.collectors[leader].process.signal(libc::SIGSTOP)?;
    wait_for("the other collector leads", Duration::from_secs(60), || {
        (ha(&s.collectors[other])["is_leader"] == true).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    eprintln!(
        "HA failover after SIGSTOP of the leader: {} ms (lease TTL {} ms)",
        paused_at.elapsed().as_millis(),
        ttl().as_millis()
    );
    // The alert resolves while the old leader sleeps; the new leader sends the resolution.
    s.monitored.members[victim].signal(libc::SIGCONT)?;
    wait_for("the resolved notification", Duration::from_secs(30), || {
        (count(&s.inbox, &name, "resolved") >= 1).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    // Wake the old leader: its own engine now sees the resolution it had not sent. As a stale
    // leader it must not send it, and it must report that it follows.
    s.collectors[leader].process.signal(libc::SIGCONT)?;
    wait_for("the old leader follows", Duration::from_secs(20), || {
        let st = ha(&s.collectors[leader]);
        (st["is_leader"] == false && st["leader"] == ha(&s.collectors[other])["id"]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    exactly_once(&s, &name)?;
    let text = s.collectors[leader].metrics()?;
    assert_eq!(
        http::prom_sum(&text, "etcdmon_collector_leader", &[]),
        Some(0.0)
    );
    let lost = http::prom_sum(
        &text,
        "etcdmon_collector_leadership_transitions_total",
        &[("direction", "lost")],
    );
    assert_eq!(lost, Some(1.0), "{text}");
    // Its engine did produce the resolution, and the gate withheld it.
    let withheld = http::prom_sum(&text, "etcdmon_ha_notifications_withheld_total", &[]);
    assert!(withheld.is_some_and(|n| n >= 1.0), "{text}");
    let (samples, overlaps) = sampler.finish();
    eprintln!("Leader gauge sampled {samples} times on both collectors; both 1 in {overlaps}.");
    assert_eq!(
        overlaps, 0,
        "two collectors reported etcdmon_collector_leader 1 at once"
    );
    Ok(())
}

#[test]
fn bad_ha_flags_exit_non_zero_naming_the_flag() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (flag, field) in [
        ("--ha-ttl=1s", "--ha-ttl"),
        ("--ha-prefix=relative", "--ha-prefix"),
        ("--ha-id=two words", "--ha-id"),
        ("--ha-endpoints=ftp://x:1", "--ha-endpoints"),
    ] {
        let out = std::process::Command::new(crate::common::collector_bin())
            .args(["--ha-election", flag])
            .arg(format!("--data-dir={}", dir.path().display()))
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: started");
        assert!(stderr.contains(field), "{flag}: {stderr}");
    }
    Ok(())
}

/// The ids of the silences a collector lists.
fn silence_ids(c: &CollectorProcess) -> Vec<String> {
    c.get_json("/api/v1/alerts/silences")
        .ok()
        .and_then(|(_, b)| {
            b["silences"].as_array().map(|v| {
                v.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn a_silence_created_on_the_follower_mutes_the_leader_and_deletes_everywhere() -> anyhow::Result<()>
{
    let s = setup()?;
    let leader = wait_one_leader(&s.collectors)?;
    let (lc, fc) = (&s.collectors[leader], &s.collectors[1 - leader]);
    for c in &s.collectors {
        crate::common::wait_status(c, "3 members answer", Duration::from_secs(30), |st| {
            st["available_members"] == 3
        })?;
    }
    let etcd_leader = s
        .monitored
        .leader_index()
        .ok_or_else(|| anyhow::anyhow!("no etcd leader"))?;
    let victim = (etcd_leader + 1) % 3;
    let name = s.monitored.members[victim].name.clone();

    // Created on the follower (the REST Service may route there): both collectors list it.
    let body = format!(
        r#"{{"matchers": {{"alertname": "MemberUnavailable", "member": "{name}"}}, "duration": "10m", "comment": "maintenance"}}"#
    );
    let r = http::post_json(&format!("{}/api/v1/alerts/silences", fc.url), &body)?;
    anyhow::ensure!(
        r.status == 201,
        "create on the follower: {} {}",
        r.status,
        r.body
    );
    let id = r.json()?["id"].as_str().unwrap_or_default().to_string();
    for c in &s.collectors {
        wait_for("the silence listed", Duration::from_secs(20), || {
            silence_ids(c).contains(&id).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    }

    // The alert fires; the leader's engine has it silenced by that id and sends nothing.
    s.monitored.members[victim].signal(libc::SIGSTOP)?;
    wait_for(
        "firing and silenced on the leader",
        Duration::from_secs(40),
        || {
            let (_, body) = lc.get_json("/api/v1/alerts").ok()?;
            body["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["name"] == "MemberUnavailable"
                        && a["member"] == name.as_str()
                        && a["state"] == "firing"
                        && a["silenced_by"] == id.as_str()
                })
                .then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    std::thread::sleep(Duration::from_secs(5));
    let firing = count(&s.inbox, &name, "firing");
    anyhow::ensure!(
        firing == 0,
        "the silenced alert was notified {firing} times\n{}",
        logs(&s.collectors)
    );
    let metrics = http::get(&format!("{}/metrics", lc.url))?.body;
    let synced_in = http::prom_sum(
        &metrics,
        "etcdmon_silences_synced_total",
        &[("direction", "in")],
    );
    anyhow::ensure!(synced_in >= Some(1.0), "leader synced in: {synced_in:?}");

    // Deleted on the leader: the follower's list drops it.
    let r = http::request(
        "DELETE",
        &format!("{}/api/v1/alerts/silences/{id}", lc.url),
        None,
    )?;
    anyhow::ensure!(
        r.status == 204,
        "delete on the leader: {} {}",
        r.status,
        r.body
    );
    wait_for(
        "the follower drops the silence",
        Duration::from_secs(20),
        || (!silence_ids(fc).contains(&id)).then_some(()),
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&s.collectors)))?;
    s.monitored.members[victim].signal(libc::SIGCONT)?;

    // etcd unreachable: the create is refused with 503, no local-only silence.
    for m in &s._ha_etcd.members {
        m.signal(libc::SIGSTOP)?;
    }
    let r = http::post_json(&format!("{}/api/v1/alerts/silences", fc.url), &body);
    for m in &s._ha_etcd.members {
        m.signal(libc::SIGCONT)?;
    }
    let r = r?;
    anyhow::ensure!(
        r.status == 503,
        "create with etcd stopped: {} {}",
        r.status,
        r.body
    );
    anyhow::ensure!(r.body.contains("etcd"), "{}", r.body);
    anyhow::ensure!(
        silence_ids(fc).is_empty(),
        "a local-only silence was created"
    );
    Ok(())
}
