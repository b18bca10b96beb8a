//! History across a restart, write probes, bad input, several clusters from one collector (one
//! of them never answering), and start-up validation, with the real binary.

use std::{net::TcpListener, process::Command, time::Duration};

use crate::common::{collector_bin, member_json, start_collector, wait_status};
use etcd_monitor_tests::{ClusterOptions, EtcdCluster, http, wait_for};

fn history(
    c: &etcd_monitor_tests::CollectorProcess,
    query: &str,
) -> anyhow::Result<serde_json::Value> {
    let (code, body) = c.get_json(&format!("/api/v1/metrics/history?{query}"))?;
    anyhow::ensure!(code == 200, "history answered {code}: {body}");
    Ok(body)
}

#[test]
fn history_survives_a_restart_and_bad_input_is_rejected() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "hist".to_string(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let data = format!("--data-dir={}", dir.path().join("data").display());
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let args = [
        endpoints.as_str(),
        data.as_str(),
        "--health-check-interval=1s",
        "--metrics-interval=1s",
        "--dial-timeout=1s",
    ];
    let mut first = start_collector(dir.path(), &args)?;

    // Points accumulate, with server figures and write-probe latency.
    let before = wait_for(
        "three history points with probe latency",
        Duration::from_secs(30),
        || {
            let body = history(&first, "since=1h").ok()?;
            let points = body["points"].as_array()?;
            (points.len() >= 3 && points.iter().any(|p| p["write_p99_ms"].as_f64().is_some()))
                .then(|| points.clone())
        },
    )?;
    let p = &before[before.len() - 1];
    assert_eq!(p["cluster"], "default");
    assert_eq!(p["member"], "hist0");
    assert_eq!(p["reachable"], true);
    assert_eq!(p["is_leader"], true);
    assert!(p["db_size_bytes"].as_f64().is_some_and(|v| v > 0.0), "{p}");
    // The write probe writes only under its reserved prefix.
    let keys = cluster.etcdctl(&["get", "/", "--prefix", "--keys-only"])?;
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, vec!["/etcd-monitor/probe/hist0"]);
    let (_, latency) = first.get_json("/api/v1/metrics/latency")?;
    let m = member_json(&latency, "hist0").ok_or_else(|| anyhow::anyhow!("{latency}"))?;
    assert!(
        m["probe"]["write"]["p99_ms"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{latency}"
    );
    assert!(
        m["probe"]["read"]["p50_ms"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{latency}"
    );

    // Restart: the points written before are still served.
    let status = first.process.terminate(Duration::from_secs(10))?;
    assert!(status.success(), "collector exited with {status}");
    let second = start_collector(dir.path(), &args)?;
    let after = history(&second, "since=1h")?;
    let after_ts: Vec<u64> = after["points"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["ts_ms"].as_u64()).collect())
        .unwrap_or_default();
    for p in &before {
        let ts = p["ts_ms"].as_u64().unwrap_or(0);
        assert!(
            after_ts.contains(&ts),
            "point at {ts} lost across the restart: {after_ts:?}"
        );
    }
    // Time filters and downsampling.
    let first_ts = before[0]["ts_ms"].as_u64().unwrap_or(0);
    let last_ts = before[before.len() - 1]["ts_ms"].as_u64().unwrap_or(0);
    let window = history(
        &second,
        &format!(
            "since={}&until={}",
            first_ts as f64 / 1000.0,
            last_ts as f64 / 1000.0
        ),
    )?;
    assert_eq!(
        window["points"].as_array().map(Vec::len),
        Some(before.len())
    );
    let stepped = history(&second, "since=1h&step=1h")?;
    assert_eq!(
        stepped["points"].as_array().map(Vec::len),
        Some(1),
        "{stepped}"
    );

    // Bad input: 400 with a message; unknown routes and clusters: 404 JSON.
    for (path, code, needle) in [
        ("/api/v1/metrics/history?limit=abc", 400, "limit"),
        ("/api/v1/metrics/history?since=last-tuesday", 400, "since"),
        ("/api/v1/metrics/history?step=0s", 400, "step"),
        (
            "/api/v1/cluster/status?cluster=nope",
            404,
            "unknown cluster",
        ),
        ("/api/v1/nothing-here", 404, "no route"),
    ] {
        let r = http::get(&format!("{}{path}", second.url))?;
        assert_eq!(r.status, code, "{path}: {}", r.body);
        let body = r.json()?;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{path}: {body}");
    }
    let r = http::request(
        "DELETE",
        &format!("{}/api/v1/cluster/status", second.url),
        None,
    )?;
    assert_eq!(r.status, 405);
    assert!(r.json()?["error"].is_string());
    let r = http::post_json(
        &format!("{}/api/v1/performance/benchmark", second.url),
        "{}",
    )?;
    // The benchmark API is off unless --enable-benchmark-api (see tests/benchmark.rs).
    assert_eq!(r.status, 403, "{}", r.body);
    // `until` before `since` is an empty range, not an error: the OpenAPI document cannot tie
    // two parameters, and the server never refuses what the document allows.
    let (code, empty) = second.get_json("/api/v1/metrics/history?since=100&until=50")?;
    assert_eq!(code, 200, "{empty}");
    assert_eq!(empty["points"].as_array().map(Vec::len), Some(0), "{empty}");
    let (code, doc) = second.get_json("/api/v1/openapi.json")?;
    assert_eq!(code, 200);
    assert!(doc["paths"]["/api/v1/metrics/history"]["get"].is_object());
    Ok(())
}

#[test]
fn one_collector_watches_several_clusters_and_a_dead_one_stalls_nothing() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "multi".to_string(),
        ..ClusterOptions::default()
    })?;
    // Accepts TCP connections and never answers: every request to it runs into the timeout.
    let blackhole = TcpListener::bind("127.0.0.1:0")?;
    let hole = blackhole.local_addr()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("clusters.yaml");
    std::fs::write(
        &config,
        format!(
            "clusters:\n  - name: live\n    endpoints: [{}]\n  - name: dead\n    endpoints: [http://{hole}]\n    dial_timeout: 3s\n",
            cluster.endpoints()
        ),
    )?;
    let config_arg = format!("--config={}", config.display());
    let c = start_collector(
        dir.path(),
        &[
            &config_arg,
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--dial-timeout=1s",
        ],
    )?;
    let (_, names) = c.get_json("/api/v1/clusters")?;
    assert_eq!(names["clusters"], serde_json::json!(["live", "dead"]));
    wait_status(&c, "live cluster healthy", Duration::from_secs(20), |s| {
        s["healthy"] == true
    })?;
    // The live cluster keeps being checked every second while the dead one hangs for 3 s.
    let t0 = c.status(Some("live"))?["updated_at_ms"]
        .as_u64()
        .unwrap_or(0);
    wait_for("live cluster updated again", Duration::from_secs(3), || {
        let t = c.status(Some("live")).ok()?["updated_at_ms"].as_u64()?;
        (t > t0).then_some(())
    })?;
    let dead = wait_for("dead cluster reported", Duration::from_secs(20), || {
        let s = c.status(Some("dead")).ok()?;
        (s["updated_at_ms"].as_u64()? > 0).then_some(s)
    })?;
    assert_eq!(dead["cluster"], "dead");
    assert_eq!(dead["healthy"], false);
    assert_eq!(dead["endpoints"][0]["reachable"], false);
    let error = dead["endpoints"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no answer"), "{error}");
    let text = c.metrics()?;
    assert_eq!(
        http::prom_sum(&text, "etcd_cluster_healthy", &[("cluster", "live")]),
        Some(1.0)
    );
    assert_eq!(
        http::prom_sum(&text, "etcd_cluster_healthy", &[("cluster", "dead")]),
        Some(0.0)
    );
    assert_eq!(
        http::prom_sum(
            &text,
            "etcd_member_up",
            &[("cluster", "live"), ("member", "multi0")]
        ),
        Some(1.0)
    );
    assert!(
        http::prom_sum(
            &text,
            "etcdmon_collector_status_errors_total",
            &[("cluster", "dead")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    drop(blackhole);
    Ok(())
}

#[test]
fn bad_flags_and_unusable_stores_exit_naming_the_problem() -> anyhow::Result<()> {
    // A corrupt history.db is not among them: it is moved aside and the collector serves
    // (tests/hostile/store.rs).
    let dir = tempfile::tempdir()?;
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"")?;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--health-check-interval=soon".into()],
            "--health-check-interval",
        ),
        (vec!["--metrics-interval=0s".into()], "--metrics-interval"),
        (vec!["--api-port=99999".into()], "--api-port"),
        (
            vec![
                "--endpoints=https://127.0.0.1:1".into(),
                "--ca-file=/nonexistent/ca.pem".into(),
            ],
            "--ca-file",
        ),
        (vec!["--endpoints=ftp://127.0.0.1:1".into()], "--endpoints"),
        (vec!["--benchmark-type=delete".into()], "--benchmark-type"),
        (
            vec![
                "--cert-file=/x.pem".into(),
                "--endpoints=https://127.0.0.1:1".into(),
                "--insecure-skip-tls".into(),
            ],
            "--key-file",
        ),
        (
            vec!["--min-available-nodes=0".into()],
            "--min-available-nodes",
        ),
        (vec!["--grpc-port=0".into()], "--grpc-port"),
        (
            vec![
                "--run-benchmark".into(),
                format!("--data-dir={}", dir.path().join("d").display()),
            ],
            // A benchmark against a cluster that never answers fails at once, saying so.
            "no endpoint is the leader",
        ),
        (
            vec![format!("--data-dir={}", not_a_dir.display())],
            "plain-file",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(collector_bin())
            .args(&args)
            .args(
                [
                    "--api-host=127.0.0.1",
                    "--api-port=0",
                    "--endpoints=http://127.0.0.1:1",
                ]
                .iter()
                .filter(|a| {
                    // Keep the test's own --endpoints/--api-port when it sets them.
                    let flag = a.split('=').next().unwrap_or_default();
                    !args.iter().any(|x| x.starts_with(flag))
                }),
            )
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr does not name {needle}: {stderr}"
        );
    }
    Ok(())
}
