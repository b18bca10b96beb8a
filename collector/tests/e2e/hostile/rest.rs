//! (a) The REST access model against a real collector and a real etcd member: silences and
//! benchmark jobs without a token, with a viewer token, with a foreign `Origin`, and from a
//! non-loopback peer (a network namespace this test creates, joined by a veth pair) while no
//! token is configured, are refused with 401/403 naming the reason and counted; with the admin
//! token they succeed and record the token's name as `created_by`. Also: a silence that would
//! never end is refused, and the API is served over HTTPS with `--api-cert-file`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use etcd_monitor_tests::{
    ClusterOptions, EtcdCluster, free_port, http, is_root, process::ChildGuard, wait_for,
};

use crate::common::{collector_bin, start_collector};

const ADMIN: &str = "admin-secret-0123456789abcdef";
const VIEWER: &str = "viewer-secret-0123456789abcdef";

/// `curl` one request (inside `netns` when given); returns the status and the body.
fn curl(
    netns: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    cacert: Option<&Path>,
) -> anyhow::Result<(u16, String)> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(ca) = cacert {
        cmd.arg("--cacert").arg(ca);
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(url).output().context("run curl")?;
    if !out.status.success() {
        bail!(
            "curl {method} {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').context("no status from curl")?;
    Ok((code.trim().parse()?, body.to_string()))
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<no error field in {body:?}>"))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A network namespace joined to the host by a veth pair; deleted on drop.
struct Netns {
    name: String,
    host_ip: String,
}

impl Netns {
    fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let name = format!("emrest{pid}");
        let (host_if, ns_if) = (format!("emr{pid}h"), format!("emr{pid}n"));
        let octet = 1 + pid % 250;
        let host_ip = format!("10.213.{octet}.1");
        let ns_ip = format!("10.213.{octet}.2");
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("ip").args(args).output().context("run ip")?;
            anyhow::ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name])?;
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name,
        ])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Starts the collector on `host` with `args`; waits until `/health` answers over `scheme`.
fn spawn_collector(
    dir: &Path,
    host: &str,
    scheme: &str,
    args: &[String],
    cacert: Option<&Path>,
) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let mut cmd = Command::new(collector_bin());
    cmd.arg(format!("--api-host={host}"))
        .arg(format!("--api-port={port}"))
        .arg(format!("--grpc-port={}", free_port()?))
        .arg(format!(
            "--data-dir={}",
            dir.join(format!("data-{port}")).display()
        ))
        .args(args)
        .env("RUST_LOG", "info");
    let log = dir.join(format!("collector-{port}.log"));
    let mut child = ChildGuard::spawn("etcd-monitor", cmd, &log)?;
    let url = format!("{scheme}://{host}:{port}");
    let ready = wait_for("collector /health", Duration::from_secs(30), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(anyhow::anyhow!("collector exited with {status}")));
        }
        curl(None, "GET", &format!("{url}/health"), None, &[], cacert)
            .ok()
            .filter(|(code, _)| *code == 200)
            .map(|_| Ok(()))
    });
    match ready {
        Ok(Ok(())) => Ok((child, url)),
        Ok(Err(e)) | Err(e) => Err(anyhow::anyhow!(
            "{e}\ncollector log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )),
    }
}

fn write_token(dir: &Path, name: &str, secret: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(path)
}

const SILENCE: &str = r#"{"matchers": {"alertname": "MemberUnavailable"}, "duration": "1h", "comment": "hostile test"}"#;
const BENCH: &str = r#"{"type": "write", "ops": 20, "clients": 2, "conns": 1}"#;

#[test]
fn changes_need_the_admin_role_and_record_its_name() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "hrest".into(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let admin_file = write_token(dir.path(), "ops.token", ADMIN)?;
    let viewer_file = write_token(dir.path(), "grafana.token", VIEWER)?;
    let collector = start_collector(
        dir.path(),
        &[
            &format!("--endpoints={}", cluster.endpoints()),
            &format!("--admin-token-file=ops={}", admin_file.display()),
            &format!("--viewer-token-file=grafana={}", viewer_file.display()),
            "--enable-benchmark-api",
            "--cors-origins=https://dash.example",
            "--health-check-interval=1s",
            "--probe-write=false",
        ],
    )?;
    let url = &collector.url;
    let admin = bearer(ADMIN);
    let viewer = bearer(VIEWER);
    let silences = format!("{url}/api/v1/alerts/silences");
    let bench = format!("{url}/api/v1/performance/benchmark");

    // Reads are closed by the viewer token, except /health.
    let (code, body) = curl(None, "GET", &silences, None, &[], None)?;
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(
        None,
        "GET",
        &silences,
        None,
        &[("Authorization", &viewer)],
        None,
    )?;
    assert_eq!(code, 200, "{body}");

    // No token, a wrong token, a viewer token, a foreign origin: refused, each saying why.
    for (target, body) in [(&silences, SILENCE), (&bench, BENCH)] {
        for (headers, status, reason) in [
            (vec![], 401, "Bearer"),
            (
                vec![("Authorization", "Bearer not-a-token-at-all")],
                401,
                "matches no configured token",
            ),
            (vec![("Authorization", viewer.as_str())], 403, "viewer role"),
            (
                vec![
                    ("Authorization", admin.as_str()),
                    ("Origin", "https://evil.example"),
                ],
                403,
                "Origin",
            ),
        ] {
            let (code, answer) = curl(None, "POST", target, Some(body), &headers, None)?;
            assert_eq!(code, status, "POST {target} {headers:?}: {answer}");
            let e = error_of(&answer);
            assert!(e.contains(reason), "POST {target} {headers:?}: {e}");
        }
    }

    // With the admin token: created, and created_by is the token's name.
    let (code, answer) = curl(
        None,
        "POST",
        &silences,
        Some(SILENCE),
        &[
            ("Authorization", &admin),
            ("Origin", "https://dash.example"),
        ],
        None,
    )?;
    assert_eq!(code, 201, "{answer}");
    let silence: serde_json::Value = serde_json::from_str(&answer)?;
    assert_eq!(silence["created_by"], "ops", "{silence}");
    let id = silence["id"].as_str().unwrap_or_default().to_string();

    // The body never names the creator; a silence that never ends is refused, naming the field.
    let (code, answer) = curl(
        None,
        "POST",
        &silences,
        Some(r#"{"matchers": {"alertname": "X"}, "duration": "1h", "created_by": "mallory"}"#),
        &[("Authorization", &admin)],
        None,
    )?;
    assert_eq!(code, 400, "{answer}");
    assert!(error_of(&answer).contains("created_by"), "{answer}");
    let (code, answer) = curl(
        None,
        "POST",
        &silences,
        Some(r#"{"matchers": {"alertname": "X"}, "ends_at_ms": 18446744073709551615}"#),
        &[("Authorization", &admin)],
        None,
    )?;
    assert_eq!(code, 400, "{answer}");
    assert!(error_of(&answer).contains("ends_at_ms"), "{answer}");

    // DELETE: the same wall; the admin deletes.
    let one = format!("{silences}/{id}");
    let (code, answer) = curl(None, "DELETE", &one, None, &[], None)?;
    assert_eq!(code, 401, "{answer}");
    let (code, answer) = curl(
        None,
        "DELETE",
        &one,
        None,
        &[("Authorization", &viewer)],
        None,
    )?;
    assert_eq!(code, 403, "{answer}");
    assert!(error_of(&answer).contains("viewer role"), "{answer}");
    let (code, answer) = curl(
        None,
        "DELETE",
        &one,
        None,
        &[("Authorization", &admin)],
        None,
    )?;
    assert_eq!(code, 204, "{answer}");

    // A benchmark job started by the admin records its name.
    let (code, answer) = curl(
        None,
        "POST",
        &bench,
        Some(BENCH),
        &[("Authorization", &admin)],
        None,
    )?;
    assert_eq!(code, 202, "{answer}");
    let started: serde_json::Value = serde_json::from_str(&answer)?;
    let job_url = format!(
        "{url}{}",
        started["status_url"].as_str().unwrap_or_default()
    );
    let job = wait_for(
        "the benchmark job to finish",
        Duration::from_secs(60),
        || {
            let (code, body) = curl(
                None,
                "GET",
                &job_url,
                None,
                &[("Authorization", &viewer)],
                None,
            )
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["state"] != "running").then_some(v)
        },
    )?;
    assert_eq!(job["created_by"], "ops", "{job}");

    // Every refusal is counted by reason.
    let r = http::request_with(
        "GET",
        &format!("{url}/metrics"),
        None,
        &[("Authorization", &viewer)],
    )?;
    assert_eq!(r.status, 200);
    for (reason, at_least) in [
        ("missing_token", 4.0),
        ("invalid_token", 2.0),
        ("not_admin", 3.0),
        ("foreign_origin", 2.0),
    ] {
        let n = http::prom_sum(
            &r.body,
            "etcdmon_api_auth_refusals_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0);
        assert!(n >= at_least, "{reason}: {n}\n{}", r.body);
    }
    assert_eq!(
        http::prom_sum(
            &r.body,
            "etcdmon_silences_refused_total",
            &[("reason", "invalid")]
        ),
        Some(2.0),
        "{}",
        r.body
    );
    assert_eq!(
        http::prom_sum(&r.body, "etcdmon_api_token_files_insecure", &[]),
        Some(0.0)
    );
    Ok(())
}

#[test]
fn without_tokens_changes_come_from_loopback_only() -> anyhow::Result<()> {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root to create a network namespace"
        );
        eprintln!("SKIPPED: needs root to create a network namespace and a veth pair");
        return Ok(());
    }
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "hrestns".into(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let netns = Netns::create()?;
    let (_collector, url) = spawn_collector(
        dir.path(),
        &netns.host_ip,
        "http",
        &[
            format!("--endpoints={}", cluster.endpoints()),
            "--enable-benchmark-api".to_string(),
            "--probe-write=false".to_string(),
        ],
        None,
    )?;
    let silences = format!("{url}/api/v1/alerts/silences");
    let bench = format!("{url}/api/v1/performance/benchmark");
    let ns = Some(netns.name.as_str());

    // From another host (the namespace): reads are open, every change is refused with how to
    // enable it, even with a made-up token.
    let (code, body) = curl(ns, "GET", &silences, None, &[], None)?;
    assert_eq!(code, 200, "{body}");
    for (method, target, body) in [
        ("POST", silences.clone(), Some(SILENCE)),
        ("DELETE", format!("{silences}/x"), None),
        ("POST", bench.clone(), Some(BENCH)),
    ] {
        for headers in [
            vec![],
            vec![("Authorization", "Bearer made-up-token-123456")],
        ] {
            let (code, answer) = curl(ns, method, &target, body, &headers, None)?;
            assert_eq!(code, 403, "{method} {target}: {answer}");
            let e = error_of(&answer);
            assert!(
                e.contains("loopback") && e.contains("--admin-token-file"),
                "{method} {target}: {e}"
            );
        }
    }
    let (_, metrics) = curl(ns, "GET", &format!("{url}/metrics"), None, &[], None)?;
    assert_eq!(
        http::prom_sum(
            &metrics,
            "etcdmon_api_auth_refusals_total",
            &[("reason", "not_loopback")]
        ),
        Some(6.0),
        "{metrics}"
    );
    let (_, list) = curl(None, "GET", &silences, None, &[], None)?;
    assert!(list.contains("\"silences\":[]"), "{list}");
    Ok(())
}

#[test]
fn loopback_without_tokens_and_https() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "hresttls".into(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let tls = crate::common::make_tls(dir.path(), "rest")?;
    let (_collector, url) = spawn_collector(
        dir.path(),
        "127.0.0.1",
        "https",
        &[
            format!("--endpoints={}", cluster.endpoints()),
            format!("--api-cert-file={}", tls.server_cert_file.display()),
            format!("--api-key-file={}", tls.server_key_file.display()),
            "--probe-write=false".to_string(),
        ],
        Some(&tls.ca_file),
    )?;
    assert!(url.starts_with("https://"));
    // Loopback without any admin token configured: accepted, recorded as `loopback`.
    let (code, answer) = curl(
        None,
        "POST",
        &format!("{url}/api/v1/alerts/silences"),
        Some(SILENCE),
        &[],
        Some(&tls.ca_file),
    )?;
    assert_eq!(code, 201, "{answer}");
    let silence: serde_json::Value = serde_json::from_str(&answer)?;
    assert_eq!(silence["created_by"], "loopback", "{silence}");
    // Plain HTTP to the HTTPS port gets no answer, and the failed handshake is counted.
    let plain = url.replacen("https://", "http://", 1);
    assert!(http::get(&format!("{plain}/health")).map_or(true, |r| r.status != 200));
    wait_for(
        "a counted TLS handshake failure",
        Duration::from_secs(10),
        || {
            let (code, metrics) = curl(
                None,
                "GET",
                &format!("{url}/metrics"),
                None,
                &[],
                Some(&tls.ca_file),
            )
            .ok()?;
            let failures =
                http::prom_sum(&metrics, "etcdmon_api_tls_handshake_failures_total", &[]);
            (code == 200 && failures.is_some_and(|n| n >= 1.0)).then_some(())
        },
    )?;
    Ok(())
}
