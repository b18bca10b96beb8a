//! The MCP server, driven by the official Python MCP client SDK (PyPI `mcp`, installed by
//! `cargo xtask setup`) against a real collector watching three real etcd members, one of them
//! stopped so an alert really fires. `mcp_client.py` connects over streamable HTTP (`/mcp`) and
//! over stdio (`etcd-monitor mcp --url … --token-file …`), lists the tools, calls each and checks
//! their content, reads a runbook, and is refused the admin tool with the viewer token (and
//! without any token, refused the session) and allowed it with the admin token. This test then
//! checks that the refusals were counted by REST and by the MCP tool counter.

use std::{process::Command, time::Duration};

use anyhow::Context;
use etcd_monitor_tests::{ClusterOptions, EtcdCluster, http, wait_for};

use crate::common::{collector_bin, start_collector};

const ADMIN: &str = "mcp-admin-token-0123456789";
const VIEWER: &str = "mcp-viewer-token-0123456789";

/// Whether `python3` can import the MCP SDK (its version when it can).
fn mcp_sdk() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, mcp; print(m.version('mcp'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn get_as(url: &str, token: &str) -> anyhow::Result<http::Response> {
    http::request_with(
        "GET",
        url,
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    )
}

#[test]
fn python_sdk_over_http_and_stdio_reads_every_tool_and_needs_admin_for_benchmarks()
-> anyhow::Result<()> {
    let sdk = mcp_sdk();
    if !etcd_monitor_tests::require(
        "mcp::python_sdk",
        sdk.is_some(),
        "the Python MCP SDK is not installed (cargo xtask setup installs it)",
    )? {
        return Ok(());
    }
    eprintln!("python mcp {}", sdk.unwrap_or_default());
    let mut cluster = EtcdCluster::start(ClusterOptions {
        members: 3,
        name_prefix: "mcp".into(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let (admin, viewer) = (
        dir.path().join("admin.token"),
        dir.path().join("viewer.token"),
    );
    std::fs::write(&admin, ADMIN)?;
    std::fs::write(&viewer, VIEWER)?;
    for f in [&admin, &viewer] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600))?;
    }
    let collector = start_collector(
        dir.path(),
        &[
            &format!("--endpoints={}", cluster.endpoints()),
            &format!("--admin-token-file=ops={}", admin.display()),
            &format!("--viewer-token-file=assistant={}", viewer.display()),
            "--enable-benchmark-api",
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--probe-write=false",
        ],
    )?;
    let members: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    // History of every member first, then a follower stops (the leader stays, so no election
    // races the checks) and MemberUnavailable fires.
    wait_for("history of three members", Duration::from_secs(60), || {
        let r = get_as(
            &format!("{}/api/v1/metrics/history?since=5m", collector.url),
            VIEWER,
        )
        .ok()?;
        let points = r.json().ok()?["points"].as_array()?.clone();
        let seen: std::collections::BTreeSet<_> = points
            .iter()
            .filter_map(|p| p["member"].as_str().map(str::to_string))
            .collect();
        (seen.len() == 3).then_some(())
    })?;
    let status = get_as(&format!("{}/api/v1/cluster/status", collector.url), VIEWER)?.json()?;
    let follower = status["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["is_leader"] == false))
        .and_then(|m| m["name"].as_str())
        .with_context(|| format!("no follower in {status}"))?
        .to_string();
    let index = members
        .iter()
        .position(|m| *m == follower)
        .context("follower")?;
    cluster.members[index].kill();
    let down = follower;
    wait_for("MemberUnavailable firing", Duration::from_secs(60), || {
        let r = get_as(&format!("{}/api/v1/alerts", collector.url), VIEWER).ok()?;
        let body = r.json().ok()?;
        body["alerts"]
            .as_array()?
            .iter()
            .any(|a| {
                a["name"] == "MemberUnavailable"
                    && a["member"] == down.as_str()
                    && a["state"] == "firing"
            })
            .then_some(())
    })
    .with_context(|| crate::common::tail(&collector.log_text(), 40))?;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/mcp_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("--url={}", collector.url))
        .arg(format!("--binary={}", collector_bin().display()))
        .arg(format!("--viewer-token-file={}", viewer.display()))
        .arg(format!("--admin-token-file={}", admin.display()))
        .arg(format!("--members={}", members.join(",")))
        .arg(format!("--down={down}"))
        .output()
        .context("run python3 mcp_client.py")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\n{stdout}\n{stderr}\ncollector log tail:\n{}",
        out.status,
        crate::common::tail(&collector.log_text(), 40)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .with_context(|| format!("no JSON summary:\n{stdout}\n{stderr}"))?;
    eprintln!("{summary:#}");
    for transport in ["http_admin", "stdio_admin"] {
        let job = summary[transport]["benchmark"].as_str().unwrap_or_default();
        assert!(!job.is_empty(), "{transport}: no benchmark ran: {summary}");
        // The job records who started it: the admin token's name, through MCP as through REST.
        let view = get_as(
            &format!("{}/api/v1/performance/benchmark/{job}", collector.url),
            VIEWER,
        )?
        .json()?;
        assert_eq!(view["created_by"], "ops", "{view}");
        assert_eq!(view["state"], "succeeded", "{view}");
    }
    assert!(summary["http_no_token"].as_str().is_some(), "{summary}");

    // Every refusal is counted: by REST's access policy and by the MCP tool counter.
    let metrics = get_as(&format!("{}/metrics", collector.url), VIEWER)?.body;
    let count = |name: &str, labels: &[(&str, &str)]| http::prom_sum(&metrics, name, labels);
    let not_admin = count(
        "etcdmon_api_auth_refusals_total",
        &[("reason", "not_admin")],
    );
    assert!(not_admin >= Some(2.0), "not_admin refusals {not_admin:?}");
    let missing = count(
        "etcdmon_api_auth_refusals_total",
        &[("reason", "missing_token")],
    );
    assert!(missing >= Some(1.0), "missing_token refusals {missing:?}");
    // /mcp counts only its own calls (stdio's went to REST as plain requests).
    let refused = count(
        "etcdmon_mcp_tool_calls_total",
        &[("tool", "run_benchmark"), ("outcome", "refused")],
    );
    assert_eq!(refused, Some(1.0), "{metrics}");
    let ok = count(
        "etcdmon_mcp_tool_calls_total",
        &[("tool", "cluster_members"), ("outcome", "ok")],
    );
    assert_eq!(ok, Some(2.0), "one per HTTP session:\n{metrics}");
    let invalid = count(
        "etcdmon_mcp_tool_calls_total",
        &[("outcome", "invalid_arguments")],
    );
    assert_eq!(
        invalid,
        Some(6.0),
        "three refused arguments per HTTP session (too long, out of range, wrong type)"
    );
    let unknown = count(
        "etcdmon_mcp_tool_calls_total",
        &[("tool", "unknown"), ("outcome", "unknown_tool")],
    );
    assert_eq!(unknown, Some(2.0), "one unknown tool per HTTP session");
    Ok(())
}

/// One JSON-RPC conversation with `etcd-monitor mcp` over its stdin/stdout.
struct Stdio {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Stdio {
    fn start(args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(collector_bin())
            .arg("mcp")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut me = Self { child, lines };
        let init = me.ask(
            1,
            "initialize",
            serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"}}),
        )?;
        anyhow::ensure!(
            init["result"]["serverInfo"]["name"] == "etcd-monitor",
            "{init}"
        );
        me.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(me)
    }

    fn send(&mut self, message: &serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        writeln!(stdin, "{message}")?;
        Ok(stdin.flush()?)
    }

    fn ask(
        &mut self,
        id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.send(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )?;
        loop {
            let line = self
                .lines
                .next()
                .context("etcd-monitor mcp closed stdout")??;
            let v: serde_json::Value = serde_json::from_str(&line)?;
            if v["id"] == id {
                return Ok(v);
            }
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https_collector(
    dir: &std::path::Path,
    endpoints: &str,
    tls: &etcd_monitor_tests::ClientTls,
) -> anyhow::Result<(etcd_monitor_tests::process::ChildGuard, String)> {
    let port = etcd_monitor_tests::free_port()?;
    let mut cmd = Command::new(collector_bin());
    cmd.arg("--api-host=127.0.0.1")
        .arg(format!("--api-port={port}"))
        .arg(format!("--grpc-port={}", etcd_monitor_tests::free_port()?))
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!(
            "--api-cert-file={}",
            tls.server_cert_file.display()
        ))
        .arg(format!("--api-key-file={}", tls.server_key_file.display()))
        .args(["--probe-write=false", "--health-check-interval=1s"]);
    let log = dir.join("collector.log");
    let child = etcd_monitor_tests::process::ChildGuard::spawn("etcd-monitor", cmd, &log)?;
    let url = format!("https://127.0.0.1:{port}");
    wait_for(
        "the HTTPS collector's /health",
        Duration::from_secs(30),
        || {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "5", "--cacert"])
                .arg(&tls.ca_file)
                .arg(format!("{url}/health"))
                .output()
                .ok()?;
            out.status.success().then_some(())
        },
    )
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    Ok((child, url))
}

/// `etcd-monitor mcp` against an HTTPS collector, spoken to as a plain JSON-RPC client: with
/// `--ca-file` its tools answer with the real members; without it the tool error says the
/// collector did not answer (the certificate is not trusted) and the session goes on.
#[test]
fn stdio_client_reaches_an_https_collector_with_its_ca() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "mcptls".into(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let tls = crate::common::make_tls(dir.path(), "mcp")?;
    let (_collector, url) = https_collector(dir.path(), &cluster.endpoints(), &tls)?;
    let name = cluster.members[0].name.clone();
    let mut trusted = Stdio::start(&[
        format!("--url={url}"),
        format!("--ca-file={}", tls.ca_file.display()),
    ])?;
    let mut id = 10;
    let members = wait_for(
        "cluster_members over stdio",
        Duration::from_secs(30),
        || {
            id += 1;
            let v = trusted
                .ask(
                    id,
                    "tools/call",
                    serde_json::json!({"name": "cluster_members", "arguments": {}}),
                )
                .ok()?;
            let members = v["result"]["structuredContent"]["members"]
                .as_array()?
                .clone();
            (!members.is_empty()).then_some(members)
        },
    )?;
    assert_eq!(members[0]["name"], name.as_str(), "{members:?}");
    let runbook = trusted.ask(
        99,
        "resources/read",
        serde_json::json!({"uri": "etcd-monitor://runbooks/EtcdAlarm"}),
    )?;
    let text = runbook["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("### EtcdAlarm"), "{runbook}");

    let mut untrusted = Stdio::start(&[format!("--url={url}")])?;
    let v = untrusted.ask(
        2,
        "tools/call",
        serde_json::json!({"name": "cluster_status", "arguments": {}}),
    )?;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("did not answer") && text.contains(&url),
        "{v}"
    );
    // The session survives a failed call.
    let listed = untrusted.ask(3, "tools/list", serde_json::json!({}))?;
    assert!(
        listed["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.len() >= 8),
        "{listed}"
    );
    Ok(())
}

#[test]
fn mcp_subcommand_names_a_bad_flag_and_exits_2() -> anyhow::Result<()> {
    for (args, field) in [
        (vec!["mcp", "--url=ftp://nowhere"], "--url"),
        (
            vec!["mcp", "--token-file=/nonexistent/token"],
            "--token-file",
        ),
        (vec!["mcp", "--timeout=never"], "--timeout"),
        (vec!["mcp", "--ca-file=/nonexistent/ca.pem"], "--ca-file"),
    ] {
        let out = Command::new(collector_bin()).args(&args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(field), "{args:?}: {stderr}");
    }
    Ok(())
}
