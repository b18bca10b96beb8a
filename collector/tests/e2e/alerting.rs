//! Alerting end to end: real etcd members, the real collector, real receivers (Prometheus
//! Alertmanager from Debian, a STARTTLS SMTP sink, HTTP receivers standing in for Slack,
//! PagerDuty and a webhook), faults injected into the members.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{collector_bin, start_collector, tail};
use anyhow::Context;
use etcd_monitor_tests::{
    ClusterOptions, CollectorProcess, EtcdCluster, free_port, http, process::ChildGuard, wait_for,
};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

type Inbox = Arc<Mutex<Vec<Received>>>;

fn inbox_of(inbox: &Inbox, path: &str) -> Vec<Received> {
    inbox
        .lock()
        .map(|v| {
            v.iter()
                .filter(|r| r.path.starts_with(path))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// HTTP receivers on one port: `/webhook`, `/slack/...`, `/pagerduty` record and answer like
/// the services do; `/broken` answers 500 after 3 s.
fn start_receivers(rt: &tokio::runtime::Runtime) -> anyhow::Result<(u16, Inbox)> {
    use axum::{
        body::Bytes,
        http::{HeaderMap, Uri},
        response::IntoResponse,
    };
    let inbox: Inbox = Arc::new(Mutex::new(Vec::new()));
    let record = {
        let inbox = inbox.clone();
        move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let inbox = inbox.clone();
            async move {
                let path = uri.path().to_string();
                if path == "/broken" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
                }
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                if let Ok(mut v) = inbox.lock() {
                    v.push(Received {
                        path: path.clone(),
                        headers,
                        body: body.to_vec(),
                    });
                }
                if path.starts_with("/slack") {
                    "ok".into_response()
                } else if path == "/pagerduty" {
                    (
                        axum::http::StatusCode::ACCEPTED,
                        axum::Json(
                            serde_json::json!({"status": "success", "message": "Event processed"}),
                        ),
                    )
                        .into_response()
                } else {
                    axum::http::StatusCode::NO_CONTENT.into_response()
                }
            }
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(record));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, app).await });
    Ok((port, inbox))
}

/// A local SMTP server that requires STARTTLS before it accepts mail; records each message.
fn start_smtp_sink(
    rt: &tokio::runtime::Runtime,
    cert_pem: &Path,
    key_pem: &Path,
) -> anyhow::Result<(u16, Arc<Mutex<Vec<String>>>)> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert_pem)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key_pem)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mails = Arc::new(Mutex::new(Vec::new()));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let sink = mails.clone();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let sink = sink.clone();
            tokio::spawn(async move {
                if let Err(e) = smtp_session(tcp, acceptor, sink).await {
                    eprintln!("smtp sink: {e:#}");
                }
            });
        }
    });
    Ok((port, mails))
}

async fn smtp_session(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    sink: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut plain = BufReader::new(tcp);
    plain.get_mut().write_all(b"220 sink ESMTP\r\n").await?;
    loop {
        let mut line = String::new();
        if plain.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-sink\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
        } else if cmd == "STARTTLS" {
            plain.get_mut().write_all(b"220 go ahead\r\n").await?;
            break;
        } else if cmd == "QUIT" {
            plain.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"530 must issue STARTTLS first\r\n"
        };
        plain.get_mut().write_all(reply).await?;
    }
    let tls = acceptor.accept(plain.into_inner()).await?;
    let mut s = BufReader::new(tls);
    let mut message = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            s.get_mut()
                .write_all(b"250-sink\r\n250 8BITMIME\r\n")
                .await?;
        } else if cmd == "DATA" {
            s.get_mut().write_all(b"354 end with .\r\n").await?;
            loop {
                let mut l = String::new();
                if s.read_line(&mut l).await? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                message.push_str(&l);
            }
            if let Ok(mut v) = sink.lock() {
                v.push(std::mem::take(&mut message));
            }
            s.get_mut().write_all(b"250 queued\r\n").await?;
        } else if cmd == "QUIT" {
            s.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if cmd.starts_with("MAIL")
            || cmd.starts_with("RCPT")
            || cmd == "RSET"
            || cmd == "NOOP"
        {
            s.get_mut().write_all(b"250 ok\r\n").await?;
        } else {
            s.get_mut().write_all(b"502 not implemented\r\n").await?;
        }
    }
}

/// The Debian `prometheus-alertmanager` on a free port, gossip off.
fn start_alertmanager(dir: &Path) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: sink\n  group_wait: 1s\nreceivers:\n  - name: sink\n",
    )?;
    let mut cmd = Command::new("prometheus-alertmanager");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=");
    let guard = ChildGuard::spawn("alertmanager", cmd, &dir.join("alertmanager.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for("alertmanager ready", Duration::from_secs(30), || {
        http::get(&format!("{url}/-/ready"))
            .ok()
            .filter(|r| r.status == 200)
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{}",
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
        )
    })?;
    Ok((guard, url))
}

/// Active alerts of the default cluster.
fn active(collector: &CollectorProcess) -> Vec<serde_json::Value> {
    collector
        .get_json("/api/v1/alerts")
        .ok()
        .and_then(|(_, b)| b["alerts"].as_array().cloned())
        .unwrap_or_default()
}

fn find_alert(
    alerts: &[serde_json::Value],
    name: &str,
    member: Option<&str>,
    state: &str,
) -> Option<serde_json::Value> {
    alerts
        .iter()
        .find(|a| {
            a["name"] == name && a["state"] == state && member.is_none_or(|m| a["member"] == m)
        })
        .cloned()
}

fn wait_alert(
    collector: &CollectorProcess,
    name: &str,
    member: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    wait_for(&format!("{name} firing"), timeout, || {
        find_alert(&active(collector), name, member, "firing")
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nactive: {:?}\ncollector log tail:\n{}",
            active(collector),
            tail(&collector.log_text(), 40)
        )
    })
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Webhook deliveries for `name`/`member` in `status`.
fn webhooks(inbox: &Inbox, name: &str, member: &str, status: &str) -> Vec<serde_json::Value> {
    inbox_of(inbox, "/webhook")
        .iter()
        .map(Received::json)
        .filter(|j| {
            j["status"] == status && j["alert"]["name"] == name && j["alert"]["member"] == member
        })
        .collect()
}

#[test]
fn stopped_member_fires_notifies_every_channel_survives_restart_and_resolves() -> anyhow::Result<()>
{
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let (http_port, inbox) = start_receivers(&rt)?;
    let tls = etcd_monitor_tests::tls::make_tls(dir.path(), "smtp")?;
    let (smtp_port, mails) = start_smtp_sink(&rt, &tls.server_cert_file, &tls.server_key_file)?;
    let (_am, am_url) = start_alertmanager(dir.path())?;

    let hmac_key = "hmac-key-never-logged";
    let slack_token = "T000/B000/slacksecrettoken";
    let routing_key = "pd-routing-key-never-logged";
    std::fs::write(dir.path().join("hmac"), format!("{hmac_key}\n"))?;
    std::fs::write(
        dir.path().join("slack-url"),
        format!("http://127.0.0.1:{http_port}/slack/{slack_token}\n"),
    )?;
    std::fs::write(dir.path().join("pd-key"), routing_key)?;
    let d = dir.path().display();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "notifiers:
  - type: console
  - type: webhook
    url: http://127.0.0.1:{http_port}/webhook
    hmac_key: {{file: {d}/hmac}}
  - type: slack
    url: {{file: {d}/slack-url}}
  - type: pagerduty
    url: http://127.0.0.1:{http_port}/pagerduty
    routing_key: {{file: {d}/pd-key}}
  - type: email
    smtp_host: 127.0.0.1
    smtp_port: {smtp_port}
    tls: starttls
    ca_file: {ca}
    from: etcd-monitor <alerts@example.test>
    to: [oncall@example.test]
  - type: alertmanager
    url: {am_url}
  - type: webhook
    name: broken
    url: http://127.0.0.1:{http_port}/broken
    timeout: 1s
    retries: 2
    backoff: 200ms
",
            ca = tls.ca_file.display()
        ),
    )?;

    let cluster = EtcdCluster::start3()?;
    let health = Duration::from_secs(2);
    let args: Vec<String> = vec![
        format!("--endpoints={}", cluster.endpoints()),
        format!("--health-check-interval={}s", health.as_secs()),
        "--metrics-interval=1s".into(),
        "--dial-timeout=500ms".into(),
        format!("--config={}", config.display()),
        format!("--data-dir={}", dir.path().join("data").display()),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let collector = start_collector(dir.path(), &argv)?;
    crate::common::wait_status(
        &collector,
        "3 members answer",
        Duration::from_secs(30),
        |s| s["available_members"] == 3,
    )?;

    // Silences over REST: created, listed, deleted; bad bodies name the field.
    let url = format!("{}/api/v1/alerts/silences", collector.url);
    let r = http::post_json(
        &url,
        r#"{"matchers": {"alertname": "NoSuchAlert"}, "duration": "1h", "comment": "test"}"#,
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()?["id"].as_str().unwrap_or_default().to_string();
    let (_, list) = collector.get_json("/api/v1/alerts/silences")?;
    assert!(
        list["silences"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["id"] == id.as_str())),
        "{list}"
    );
    let r = http::post_json(&url, r#"{"matchers": {}, "duration": "1h"}"#)?;
    assert_eq!(r.status, 400);
    assert!(
        r.json()?["error"]
            .as_str()
            .unwrap_or_default()
            .contains("matchers")
    );
    let r = http::post_json(&url, r#"{"matchers": {"a": "b"}, "duration": "soon"}"#)?;
    assert_eq!(r.status, 400);
    assert!(
        r.json()?["error"]
            .as_str()
            .unwrap_or_default()
            .contains("duration")
    );
    assert_eq!(
        http::request("DELETE", &format!("{url}/{id}"), None)?.status,
        204
    );
    assert_eq!(
        http::request("DELETE", &format!("{url}/{id}"), None)?.status,
        404
    );

    // 1. SIGSTOP a follower: MemberUnavailable fires within two health intervals.
    let leader = cluster.leader_index().context("a leader")?;
    let victim = (leader + 1) % 3;
    let name = cluster.members[victim].name.clone();
    let stopped_at = etcd_monitor::model::time::now_ms();
    cluster.members[victim].signal(libc::SIGSTOP)?;
    let started = Instant::now();
    let alert = wait_alert(
        &collector,
        "MemberUnavailable",
        Some(&name),
        Duration::from_secs(20),
    )?;
    let fired_at = alert["fired_at_ms"].as_u64().unwrap_or_default();
    let latency_ms = fired_at.saturating_sub(stopped_at);
    eprintln!(
        "MemberUnavailable fired {latency_ms} ms after SIGSTOP (health interval {} ms; seen by the test after {:?})",
        health.as_millis(),
        started.elapsed()
    );
    assert!(
        latency_ms <= 2 * u64::try_from(health.as_millis())?,
        "fired {latency_ms} ms after SIGSTOP, more than two health intervals"
    );
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["labels"]["cluster"], "default");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains(&name),
        "{alert}"
    );
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://")
    );

    // Every channel got the firing notification, in its own format.
    wait_for("the firing webhook", Duration::from_secs(15), || {
        (!webhooks(&inbox, "MemberUnavailable", &name, "firing").is_empty()).then_some(())
    })?;
    for r in inbox_of(&inbox, "/webhook") {
        assert_eq!(
            r.headers.get("x-etcdmon-signature"),
            Some(&hmac_hex(hmac_key, &r.body)),
            "HMAC over the exact body"
        );
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    let hook = &webhooks(&inbox, "MemberUnavailable", &name, "firing")[0];
    assert_eq!(hook["version"], "1");
    assert_eq!(hook["alert"]["labels"]["alertname"], "MemberUnavailable");
    assert!(
        hook["starts_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{hook}"
    );
    let slack = wait_for("the Slack message", Duration::from_secs(15), || {
        inbox_of(&inbox, "/slack")
            .iter()
            .map(Received::json)
            .find(|j| {
                j["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("[FIRING] MemberUnavailable") && t.contains(&name))
            })
    })?;
    assert_eq!(
        inbox_of(&inbox, "/slack")[0].path,
        format!("/slack/{slack_token}")
    );
    assert_eq!(slack["attachments"][0]["color"], "#d00000");
    assert_eq!(slack["attachments"][0]["title"], "MemberUnavailable");
    assert!(
        slack["attachments"][0]["fields"]
            .as_array()
            .is_some_and(|f| f
                .iter()
                .any(|f| f["title"] == "Member" && f["value"] == name.as_str()))
    );
    let pd = wait_for("the PagerDuty trigger", Duration::from_secs(15), || {
        inbox_of(&inbox, "/pagerduty")
            .iter()
            .map(Received::json)
            .find(|j| {
                j["event_action"] == "trigger" && j["payload"]["class"] == "MemberUnavailable"
            })
    })?;
    assert_eq!(pd["routing_key"], routing_key);
    assert_eq!(pd["dedup_key"], alert["key"]);
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(pd["payload"]["source"], format!("default/{name}"));
    assert!(
        pd["payload"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.len() <= 1024)
    );
    assert!(
        pd["payload"]["timestamp"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    let mail = wait_for("the email", Duration::from_secs(15), || {
        mails
            .lock()
            .ok()?
            .iter()
            .find(|m| m.contains("[FIRING] MemberUnavailable"))
            .cloned()
    })?;
    assert!(mail.contains("To: oncall@example.test"), "{mail}");
    assert!(mail.contains(&name), "{mail}");
    let am_alert = wait_for("the alert in Alertmanager", Duration::from_secs(15), || {
        let r = http::get(&format!("{am_url}/api/v2/alerts")).ok()?;
        r.json()
            .ok()?
            .as_array()?
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "MemberUnavailable"
                    && a["labels"]["member"] == name.as_str()
            })
            .cloned()
    })?;
    assert_eq!(am_alert["status"]["state"], "active", "{am_alert}");
    assert_eq!(am_alert["labels"]["severity"], "critical");

    // ALERTS series and the firing gauge.
    let metrics = collector.metrics()?;
    assert!(
        metrics.lines().any(|l| l.starts_with("ALERTS{")
            && l.contains("alertname=\"MemberUnavailable\"")
            && l.contains("alertstate=\"firing\"")
            && l.contains(&format!("member=\"{name}\""))),
        "no ALERTS series"
    );
    assert!(
        http::prom_sum(
            &metrics,
            "etcdmon_alerts_firing",
            &[("cluster", "default"), ("severity", "critical")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // The broken channel failed (and was retried) without holding the others back.
    wait_for(
        "the broken channel to give up",
        Duration::from_secs(30),
        || {
            let m = collector.metrics().ok()?;
            (http::prom_sum(
                &m,
                "etcdmon_alert_notifications_total",
                &[("channel", "broken"), ("result", "failed")],
            )? >= 1.0)
                .then_some(m)
        },
    )?;
    let m = collector.metrics()?;
    assert!(
        http::prom_sum(
            &m,
            "etcdmon_alert_notification_failures_total",
            &[("channel", "broken")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert!(
        http::prom_sum(
            &m,
            "etcdmon_alert_notifications_total",
            &[("channel", "webhook"), ("result", "sent")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // 2. Restart the collector while the alert fires: still active, not notified twice.
    let port: u16 = collector
        .url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .parse()?;
    let grpc: u16 = collector
        .grpc_url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .parse()?;
    let first_log = collector.log_text();
    drop(collector);
    let collector = CollectorProcess::start_on(collector_bin(), &args, dir.path(), port, grpc)?;
    let again = wait_alert(
        &collector,
        "MemberUnavailable",
        Some(&name),
        Duration::from_secs(20),
    )?;
    assert_eq!(
        again["fired_at_ms"], alert["fired_at_ms"],
        "the same alert, restored from the store"
    );
    // Let several evaluations and health checks pass after the restart.
    std::thread::sleep(health * 3);
    assert!(
        find_alert(
            &active(&collector),
            "MemberUnavailable",
            Some(&name),
            "firing"
        )
        .is_some()
    );
    assert_eq!(
        webhooks(&inbox, "MemberUnavailable", &name, "firing").len(),
        1,
        "notified twice"
    );
    assert_eq!(
        inbox_of(&inbox, "/pagerduty")
            .iter()
            .map(Received::json)
            .filter(
                |j| j["event_action"] == "trigger" && j["payload"]["class"] == "MemberUnavailable"
            )
            .count(),
        1
    );

    // 3. SIGCONT: resolved notifications everywhere.
    cluster.members[victim].signal(libc::SIGCONT)?;
    wait_for("the resolved webhook", Duration::from_secs(30), || {
        (!webhooks(&inbox, "MemberUnavailable", &name, "resolved").is_empty()).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&collector.log_text(), 40)))?;
    assert!(
        find_alert(
            &active(&collector),
            "MemberUnavailable",
            Some(&name),
            "firing"
        )
        .is_none()
    );
    let resolved = &webhooks(&inbox, "MemberUnavailable", &name, "resolved")[0];
    assert!(
        resolved["ends_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    wait_for("the PagerDuty resolve", Duration::from_secs(15), || {
        inbox_of(&inbox, "/pagerduty")
            .iter()
            .map(Received::json)
            .find(|j| j["event_action"] == "resolve" && j["dedup_key"] == alert["key"])
    })?;
    wait_for(
        "the resolved Slack message",
        Duration::from_secs(15),
        || {
            inbox_of(&inbox, "/slack")
                .iter()
                .map(Received::json)
                .find(|j| {
                    j["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("[RESOLVED] MemberUnavailable"))
                        && j["attachments"][0]["color"] == "#2eb886"
                })
        },
    )?;
    wait_for("the resolved email", Duration::from_secs(15), || {
        mails
            .lock()
            .ok()?
            .iter()
            .find(|m| m.contains("[RESOLVED] MemberUnavailable"))
            .cloned()
    })?;
    wait_for(
        "Alertmanager to drop the resolved alert",
        Duration::from_secs(15),
        || {
            let r = http::get(&format!("{am_url}/api/v2/alerts")).ok()?;
            let list = r.json().ok()?;
            (!list.as_array()?.iter().any(|a| {
                a["labels"]["alertname"] == "MemberUnavailable"
                    && a["labels"]["member"] == name.as_str()
            }))
            .then_some(())
        },
    )?;
    let (code, history) = collector.get_json("/api/v1/alerts/history")?;
    assert_eq!(code, 200);
    let ours: Vec<&serde_json::Value> = history["transitions"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|t| {
                    t["alert"]["name"] == "MemberUnavailable"
                        && t["alert"]["member"] == name.as_str()
                })
                .collect()
        })
        .unwrap_or_default();
    let states: Vec<&str> = ours.iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(
        states,
        vec!["resolved", "firing"],
        "newest first: {history}"
    );

    // Secrets never reach the logs.
    let logs = format!("{first_log}{}", collector.log_text());
    for secret in [hmac_key, "slacksecrettoken", routing_key] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
    Ok(())
}

#[test]
fn leader_change_rule_fires_at_the_configured_count_and_not_before() -> anyhow::Result<()> {
    let mut cluster = EtcdCluster::start3()?;
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--dial-timeout=500ms",
            "--max-leader-changes=2",
        ],
    )?;
    crate::common::wait_status(&collector, "a leader", Duration::from_secs(30), |s| {
        s["has_leader"] == true && s["available_members"] == 3
    })?;
    let changes = |c: &CollectorProcess| {
        c.status(None)
            .ok()
            .and_then(|s| s["leader_changes_total"].as_u64())
            .unwrap_or(0)
    };
    let mut seen = changes(&collector);
    while seen < 3 {
        let leader = cluster.leader_index().context("a leader")?;
        cluster.members[leader].kill();
        let before = seen;
        seen = wait_for(
            "the collector to see a new leader",
            Duration::from_secs(30),
            || {
                let n = changes(&collector);
                (n > before).then_some(n)
            },
        )?;
        cluster.members[leader].restart()?;
        crate::common::wait_status(
            &collector,
            "3 members again",
            Duration::from_secs(30),
            |s| s["available_members"] == 3 && s["has_leader"] == true,
        )?;
        let firing = find_alert(&active(&collector), "HighLeaderChangeRate", None, "firing");
        if seen <= 2 {
            // At or below the threshold: the rule must stay quiet (a few evaluations pass).
            std::thread::sleep(Duration::from_secs(2));
            let now = changes(&collector);
            if now <= 2 {
                assert!(
                    find_alert(&active(&collector), "HighLeaderChangeRate", None, "firing")
                        .is_none(),
                    "fired at {now} leader changes with --max-leader-changes=2"
                );
            }
            seen = now;
        } else {
            let alert = match firing {
                Some(a) => a,
                None => wait_alert(
                    &collector,
                    "HighLeaderChangeRate",
                    None,
                    Duration::from_secs(10),
                )?,
            };
            assert_eq!(alert["severity"], "critical");
            // A rejoining member may force one more election meanwhile (etcd 3.4 runs without
            // pre-vote), so the value is between what triggered it and what the collector saw.
            let value = alert["value"].as_f64().unwrap_or_default();
            let now = changes(&collector) as f64;
            assert!(
                value >= 3.0 && value <= now,
                "value {value}, changes {now}: {alert}"
            );
            assert!(
                alert["annotations"]["description"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("threshold 2"),
                "{alert}"
            );
        }
    }
    Ok(())
}

#[test]
fn quota_rule_fires_and_the_nospace_alarm_is_named() -> anyhow::Result<()> {
    let quota: u64 = 4 * 1024 * 1024;
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        quota_backend_bytes: Some(quota),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let collector = start_collector(
        dir.path(),
        &[
            &endpoints,
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--dial-timeout=1s",
            "--probe-write=false",
        ],
    )?;
    crate::common::wait_status(&collector, "the member", Duration::from_secs(30), |s| {
        s["available_members"] == 1
    })?;
    // Fill until etcd refuses: the NOSPACE alarm.
    let mut filled = false;
    for round in 0..40 {
        if etcd_monitor_tests::load::put_many(
            &cluster.endpoints(),
            &format!("/fill/{round}/"),
            16,
            64 * 1024,
        )
        .is_err()
        {
            filled = true;
            break;
        }
    }
    anyhow::ensure!(filled, "etcd never refused a put with a {quota}-byte quota");
    let alarm = wait_alert(&collector, "EtcdAlarm", None, Duration::from_secs(30))?;
    assert_eq!(alarm["labels"]["alarm"], "NOSPACE", "{alarm}");
    assert!(
        alarm["annotations"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("NOSPACE")
    );
    let q = wait_alert(
        &collector,
        "DatabaseQuotaNearlyFull",
        None,
        Duration::from_secs(30),
    )?;
    assert!(q["value"].as_f64().unwrap_or(0.0) > 0.8, "{q}");
    let description = q["annotations"]["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("NOSPACE"),
        "the alarm surfaced by name: {description}"
    );
    assert!(description.contains(&quota.to_string()), "{description}");
    Ok(())
}

#[test]
fn invalid_rules_fail_at_start_and_sighup_keeps_the_old_rules() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yaml");
    let data = format!("--data-dir={}", dir.path().join("data").display());
    let rules_arg = format!("--rules={}", rules.display());
    std::fs::write(
        &rules,
        "rules:\n  - name: Mine\n    severity: warning\n    expr: member_up == 0 and nosuch_signal > 1\n",
    )?;
    let out = Command::new(collector_bin())
        .args([
            "--endpoints=http://127.0.0.1:9",
            "--api-host=127.0.0.1",
            "--api-port=0",
            &data,
            &rules_arg,
        ])
        .arg(format!("--grpc-port={}", free_port()?))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an invalid rules file");
    assert!(
        stderr.contains("--rules")
            && stderr.contains("line 4")
            && stderr.contains("unknown signal \"nosuch_signal\""),
        "{stderr}"
    );

    std::fs::write(
        &rules,
        "rules:\n  - name: Mine\n    severity: warning\n    expr: proposals_pending > 1000\n    for: 1m\n",
    )?;
    let collector = start_collector(
        dir.path(),
        &["--endpoints=http://127.0.0.1:9", &rules_arg, &data],
    )?;
    let names = |c: &CollectorProcess| -> Vec<String> {
        c.get_json("/api/v1/alerts/rules")
            .ok()
            .and_then(|(_, b)| {
                b["rules"].as_array().map(|r| {
                    r.iter()
                        .filter_map(|r| r["name"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    let before = names(&collector);
    assert!(
        before.iter().any(|n| n == "Mine") && before.iter().any(|n| n == "MemberUnavailable"),
        "{before:?}"
    );
    let reloads = |result: &str| {
        crate::common::metric(
            &collector,
            "etcdmon_alert_rules_reloads_total",
            &[("result", result)],
        )
        .unwrap_or(-1.0)
    };

    std::fs::write(&rules, "rules:\n  - name: Other\n    severity: sideways\n")?;
    collector.process.signal(libc::SIGHUP)?;
    wait_for(
        "the failed reload to be counted",
        Duration::from_secs(10),
        || (reloads("failure") == 1.0).then_some(()),
    )?;
    assert_eq!(names(&collector), before, "old rules kept");
    assert!(
        collector.log_text().contains("line 3"),
        "{}",
        tail(&collector.log_text(), 10)
    );

    std::fs::write(
        &rules,
        "include_defaults: false\nrules:\n  - name: Other\n    severity: info\n    expr: member_up == 0\n",
    )?;
    collector.process.signal(libc::SIGHUP)?;
    wait_for("the reload", Duration::from_secs(10), || {
        (reloads("success") == 1.0).then_some(())
    })?;
    assert_eq!(names(&collector), vec!["Other".to_string()]);
    Ok(())
}
