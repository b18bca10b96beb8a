//! The benchmark runner against real 3-member etcd clusters, through the real binary: every
//! workload, keys written versus the report, the prefix rails, a rate-limited run, the SLO exit
//! code, a stopped member, and the REST API (disabled, token, bad input, a job whose client-side
//! percentiles are compared with the collector's server-side view of the same requests).

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::common::{collector_bin, member_json, start_collector, tail};
use anyhow::Context;
use etcd_monitor_tests::{ClusterOptions, EtcdCluster, http, wait_for};

/// One 3-member cluster at a time: the machine is shared and small.
static SERIAL: Mutex<()> = Mutex::new(());

/// Keys under `prefix`, from etcdctl (the `count` of a one-key range).
fn etcd_count(cluster: &EtcdCluster, prefix: &str) -> anyhow::Result<u64> {
    let out = cluster.etcdctl(&["get", prefix, "--prefix", "--limit=1", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["count"].as_u64().unwrap_or(0))
}

struct CliRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `etcd-monitor --run-benchmark` with `args`; kills it and fails after `timeout`.
fn run_cli(dir: &Path, args: &[String], timeout: Duration) -> anyhow::Result<CliRun> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = dir.join(format!("cli-{n}.out"));
    let err_path = out_path.with_extension("err");
    let start = Instant::now();
    let mut child = Command::new(collector_bin())
        .arg("--run-benchmark")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .context("spawn etcd-monitor")?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "etcd-monitor {args:?} still running after {timeout:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(CliRun {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path)?,
        stderr: std::fs::read_to_string(&err_path)?,
        elapsed: start.elapsed(),
    })
}

/// Runs a benchmark with `--benchmark-json=-` and returns the parsed report.
fn run_json(
    dir: &Path,
    endpoints: &str,
    args: &[&str],
) -> anyhow::Result<(CliRun, serde_json::Value)> {
    let mut all = vec![
        format!("--endpoints={endpoints}"),
        "--benchmark-json=-".to_string(),
        "--dial-timeout=5s".to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let run = run_cli(dir, &all, Duration::from_secs(180))?;
    let start = run
        .stdout
        .find("\n{")
        .map(|i| i + 1)
        .with_context(|| format!("no JSON in stdout:\n{}\n{}", run.stdout, run.stderr))?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout[start..])
        .with_context(|| format!("bad JSON:\n{}", run.stdout))?;
    Ok((run, json))
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

#[test]
fn cli_workloads_rails_rate_slo_and_a_stopped_member() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = EtcdCluster::start3()?;
    let dir = tempfile::tempdir()?;
    let endpoints = cluster.endpoints();

    // Every workload runs; the keys counted under the prefix just before the cleanup equal the
    // successful writes; the prefix is empty afterwards.
    for (kind, extra, writes) in [
        ("write", vec![], 300),
        ("read", vec!["--benchmark-consistency=s"], 0),
        ("read", vec![], 0),
        ("mixed", vec![], 90),
        ("txn-put", vec![], 300),
    ] {
        let ty = format!("--benchmark-type={kind}");
        let mut args = vec![
            ty.as_str(),
            "--benchmark-ops=300",
            "--benchmark-clients=8",
            "--benchmark-conns=2",
        ];
        args.extend(extra.iter().copied());
        let (run, r) = run_json(dir.path(), &endpoints, &args)?;
        assert_eq!(run.code, Some(0), "{kind}: {}\n{}", run.stdout, run.stderr);
        let s = &r["summary"];
        assert_eq!(u(&s["succeeded"]), 300, "{kind}: {s}");
        assert_eq!(u(&s["failed"]), 0, "{kind}: {}", r["errors"]);
        assert_eq!(u(&s["writes_succeeded"]), writes, "{kind}: {s}");
        assert_eq!(r["keys_before_cleanup"], writes, "{kind}");
        assert_eq!(r["prefix_deleted"], true);
        assert_eq!(r["percentiles"].as_array().map(Vec::len), Some(8));
        for needle in [
            "Summary:",
            "Requests/sec:",
            "Response time histogram:",
            "Latency distribution:",
            "99.9% in",
        ] {
            assert!(run.stdout.contains(needle), "{needle}:\n{}", run.stdout);
        }
        assert_eq!(etcd_count(&cluster, "/etcd-monitor-bench/")?, 0, "{kind}");
    }

    // --benchmark-keep-keys: etcd itself (a count-only range through etcdctl) holds exactly as
    // many keys under the run's prefix as the report's successful writes. The CSV series adds
    // up to the same count; the run is stored in the history store.
    let csv = dir.path().join("series.csv");
    let csv_flag = format!("--benchmark-csv={}", csv.display());
    let (run, r) = run_json(
        dir.path(),
        &endpoints,
        &[
            "--benchmark-type=write",
            "--benchmark-ops=500",
            "--benchmark-key-order=random",
            "--benchmark-key-space=1000000",
            "--benchmark-keep-keys",
            &csv_flag,
        ],
    )?;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let prefix = r["header"]["prefix"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let written = etcd_count(&cluster, &prefix)?;
    assert_eq!(u(&r["summary"]["succeeded"]), 500);
    // Random keys may collide; the report's count-only range and etcd agree all the same.
    assert_eq!(Some(written), r["keys_before_cleanup"].as_u64());
    assert!(written > 450, "{written}");
    assert_eq!(r["prefix_deleted"], false);
    let text = std::fs::read_to_string(&csv)?;
    assert!(
        text.starts_with("second,ok,errors,avg_ms,max_ms\n"),
        "{text}"
    );
    let csv_ok: u64 = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(csv_ok, 500);
    let run_id = r["header"]["run_id"].as_str().unwrap_or_default();
    let stored = etcd_monitor::store::Store::open(&dir.path().join("data"))?
        .benchmark_run(run_id)?
        .context("CLI run not stored")?;
    assert_eq!(stored.state, "succeeded");
    assert!(stored.report_json.is_some_and(|j| j.contains(run_id)));
    cluster.etcdctl(&["del", &prefix, "--prefix"])?;

    // A prefix that already holds keys: refused, and the foreign key is left alone.
    cluster.etcdctl(&["put", "/etcd-monitor-bench/taken/x", "1"])?;
    let refused = run_cli(
        dir.path(),
        &[
            format!("--endpoints={endpoints}"),
            "--benchmark-run-id=taken".to_string(),
            "--benchmark-ops=10".to_string(),
        ],
        Duration::from_secs(60),
    )?;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("already holds 1 keys"),
        "{}",
        refused.stderr
    );
    assert_eq!(etcd_count(&cluster, "/etcd-monitor-bench/taken/")?, 1);
    cluster.etcdctl(&["del", "/etcd-monitor-bench/", "--prefix"])?;

    // Bad flags exit 2 naming the flag.
    for (flag, value) in [
        ("--benchmark-clients", "0"),
        ("--benchmark-ops", "2000000"),
        ("--benchmark-read-ratio", "2"),
    ] {
        let bad = run_cli(
            dir.path(),
            &[
                format!("--endpoints={endpoints}"),
                format!("{flag}={value}"),
            ],
            Duration::from_secs(30),
        )?;
        assert_eq!(bad.code, Some(2), "{flag}: {}", bad.stderr);
        assert!(bad.stderr.contains(flag), "{flag}: {}", bad.stderr);
    }

    // A rate-limited run stays within 5 % of its rate.
    let (run, r) = run_json(
        dir.path(),
        &endpoints,
        &[
            "--benchmark-type=write",
            "--benchmark-ops=500",
            "--benchmark-rate=100",
            "--benchmark-clients=8",
        ],
    )?;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let rps = r["summary"]["requests_per_second"].as_f64().unwrap_or(0.0);
    assert!((rps - 100.0).abs() <= 5.0, "rate 100/s measured {rps}/s");

    // SLO: a met objective exits 0 with PASS, a missed one exits 1 with FAIL.
    let (pass, _) = run_json(
        dir.path(),
        &endpoints,
        &[
            "--benchmark-ops=200",
            "--slo-min-rps=1",
            "--slo-p99-ms=60000",
        ],
    )?;
    assert_eq!(pass.code, Some(0), "{}", pass.stdout);
    assert!(pass.stdout.contains("\nPASS\n"), "{}", pass.stdout);
    let (fail, r) = run_json(
        dir.path(),
        &endpoints,
        &["--benchmark-ops=200", "--slo-p99-ms=0.001"],
    )?;
    assert_eq!(fail.code, Some(1), "{}", fail.stdout);
    assert!(fail.stdout.contains("FAIL"), "{}", fail.stdout);
    assert_eq!(r["slo"]["pass"], false);
    assert_eq!(etcd_count(&cluster, "/etcd-monitor-bench/")?, 0);

    // A stopped member: the run finishes, the errors are listed by kind, the rest succeeds.
    let stopped = cluster
        .leader_index()
        .map_or(2, |l| (l + 1) % cluster.members.len());
    cluster.members[stopped].kill();
    let (run, r) = run_json(
        dir.path(),
        &endpoints,
        &[
            "--benchmark-type=write",
            "--benchmark-target=all",
            "--benchmark-conns=3",
            "--benchmark-clients=6",
            "--benchmark-ops=300",
            "--benchmark-timeout=1s",
        ],
    )?;
    assert!(
        run.elapsed < Duration::from_secs(120),
        "took {:?}",
        run.elapsed
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let failed = u(&r["summary"]["failed"]);
    let ok = u(&r["summary"]["succeeded"]);
    assert!(
        failed > 0 && ok > 0 && failed + ok == 300,
        "{}",
        r["summary"]
    );
    let kinds = r["errors"].as_array().cloned().unwrap_or_default();
    assert!(!kinds.is_empty());
    assert_eq!(kinds.iter().map(|e| u(&e["count"])).sum::<u64>(), failed);
    assert!(run.stdout.contains("Error distribution:"), "{}", run.stdout);
    eprintln!("stopped member {stopped}: errors by kind: {}", r["errors"]);
    assert_eq!(u(&r["keys_before_cleanup"]), ok);
    assert_eq!(etcd_count(&cluster, "/etcd-monitor-bench/")?, 0);
    Ok(())
}

/// The Prometheus bucket index holding `seconds` (first upper bound ≥ it).
fn bucket_index(bounds: &[f64], seconds: f64) -> usize {
    bounds
        .iter()
        .position(|b| seconds <= *b + 1e-12)
        .unwrap_or(bounds.len())
}

fn api(
    c: &etcd_monitor_tests::CollectorProcess,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = http::request_with(method, &format!("{}{path}", c.url), body, &headers)?;
    Ok((r.status, r.json()?))
}

#[test]
fn rest_jobs_token_bad_input_and_the_server_side_view() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Extensive metrics: etcd exports grpc_server_handling_seconds, the server-side view.
    let cluster = EtcdCluster::start(ClusterOptions {
        extra_args: vec!["--metrics=extensive".to_string()],
        name_prefix: "bench".to_string(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let endpoints = format!("--endpoints={}", cluster.endpoints());

    // Disabled by default: 403 with a message, even with a token.
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir)?;
    let plain = start_collector(&plain_dir, &[endpoints.as_str()])?;
    let (code, body) = api(
        &plain,
        "POST",
        "/api/v1/performance/benchmark",
        Some("{}"),
        Some("x"),
    )?;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--enable-benchmark-api")),
        "{body}"
    );
    drop(plain);

    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n")?;
    let token_flag = format!("--admin-token-file=bench-ops={}", token_file.display());
    let mut collector = start_collector(
        dir.path(),
        &[
            endpoints.as_str(),
            "--enable-benchmark-api",
            token_flag.as_str(),
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--probe-read=false",
            "--probe-write=false",
        ],
    )?;
    let post = |body: &str, token: Option<&str>| {
        api(
            &collector,
            "POST",
            "/api/v1/performance/benchmark",
            Some(body),
            token,
        )
    };
    // Without the token, or with a wrong one: 401.
    let (code, body) = post(r#"{"ops":10}"#, None)?;
    assert_eq!(code, 401, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("Bearer")),
        "{body}"
    );
    let (code, _) = post(r#"{"ops":10}"#, Some("wrong"))?;
    assert_eq!(code, 401);
    // Bad parameters: 400 naming the field.
    for (bad, field) in [
        (r#"{"ops":0}"#, "ops"),
        (r#"{"clients":"many"}"#, "clients"),
        (r#"{"type":"delete"}"#, "type"),
        (r#"{"read_ratio":3}"#, "read_ratio"),
        (r#"{"duration":"forever"}"#, "duration"),
        (r#"{"opps":10}"#, "opps"),
        (r#"{"ops":99999999}"#, "ops"),
    ] {
        let (code, body) = post(bad, Some("s3cret-token-0123456789"))?;
        assert_eq!(code, 400, "{bad}: {body}");
        let e = body["error"].as_str().unwrap_or_default();
        assert!(e.contains(field), "{bad}: {e}");
    }
    let (code, body) = post(r#"{"cluster":"nope"}"#, Some("s3cret-token-0123456789"))?;
    assert_eq!(code, 404, "{body}");

    // A timed write job on the leader.
    let before = collector.status(None)?["updated_at_ms"]
        .as_u64()
        .unwrap_or(0);
    let (code, started) = post(
        r#"{"type":"write","duration":"5s","clients":4,"conns":2}"#,
        Some("s3cret-token-0123456789"),
    )?;
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().unwrap_or_default().to_string();
    let path = format!("/api/v1/performance/benchmark/{id}");
    // A second job while one runs: 409.
    let (code, _) = post(r#"{"ops":10}"#, Some("s3cret-token-0123456789"))?;
    assert_eq!(code, 409);
    // Progress while running, and monitoring goes on meanwhile.
    let mut health_ticks = std::collections::BTreeSet::new();
    let job = wait_for(
        "the benchmark job to finish",
        Duration::from_secs(120),
        || {
            let (_, v) = api(
                &collector,
                "GET",
                &path,
                None,
                Some("s3cret-token-0123456789"),
            )
            .ok()?;
            if v["state"] == "running" {
                if let Ok(s) = collector.status(None) {
                    health_ticks.insert(s["updated_at_ms"].as_u64().unwrap_or(0));
                }
                None
            } else {
                Some(v)
            }
        },
    )?;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["created_by"], "bench-ops", "{job}");
    assert!(
        health_ticks.iter().filter(|t| **t > before).count() >= 2,
        "health checks did not go on during the benchmark: {health_ticks:?}"
    );
    // Following a job is a read: open while no viewer token is configured.
    let (code, _) = api(&collector, "GET", &path, None, None)?;
    assert_eq!(code, 200);
    let report = &job["report"];
    let succeeded = u(&report["summary"]["succeeded"]);
    assert!(succeeded > 100, "{}", report["summary"]);
    assert_eq!(report["keys_before_cleanup"].as_u64(), Some(succeeded));
    assert_eq!(report["prefix_deleted"], true);
    assert_eq!(etcd_count(&cluster, "/etcd-monitor-bench/")?, 0);

    // The collector's server-side view of the same requests: the leader's
    // grpc_server_handling_seconds for Put/Txn/DeleteRange, scraped after the run. The client
    // sees the server's time plus the network and client stack, so on loopback each client
    // percentile must fall in the same Prometheus bucket as the server's, or the next one.
    let leader_url = report["header"]["endpoints"][0]
        .as_str()
        .unwrap_or_default();
    let leader = cluster
        .members
        .iter()
        .find(|m| m.client_url == leader_url)
        .context("leader not in the cluster")?;
    let latency = wait_for("a scrape that saw the run", Duration::from_secs(30), || {
        let (_, v) = collector.get_json("/api/v1/metrics/latency").ok()?;
        let m = member_json(&v, &leader.name)?.clone();
        (u(&m["server"]["write"]["samples"]) >= succeeded
            && u(&m["server"]["write"]["samples"]) != u64::MAX)
            .then_some(m)
    })?;
    let bounds = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let mut compared = Vec::new();
    for (p, key) in [(50.0, "p50_ms"), (99.0, "p99_ms")] {
        let client = report["percentiles"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["percentile"] == p))
            .and_then(|x| x["seconds"].as_f64())
            .context("percentile missing")?;
        let server = latency["server"]["write"][key].as_f64().unwrap_or(f64::NAN) / 1000.0;
        let (cb, sb) = (bucket_index(&bounds, client), bucket_index(&bounds, server));
        compared.push(format!(
            "p{p}: client {client:.4}s (bucket {cb}) server {server:.4}s (bucket {sb})"
        ));
        assert!(
            cb.abs_diff(sb) <= 1,
            "{}\nserver view: {latency}",
            compared.join("; ")
        );
    }
    eprintln!("client vs server: {}", compared.join("; "));

    // Exported on /metrics and stored.
    let metrics = collector.metrics()?;
    for needle in [
        "etcdmon_benchmark_running 0",
        "etcdmon_benchmark_runs_total{cluster=\"default\",workload=\"write\",result=\"succeeded\"} 1",
        "etcdmon_benchmark_last_requests_per_second{cluster=\"default\",workload=\"write\"}",
        "etcdmon_benchmark_last_latency_seconds{cluster=\"default\",workload=\"write\",quantile=\"0.99\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing:\n{}",
            tail(&metrics, 40)
        );
    }
    let stored = etcd_monitor::store::Store::open(&dir.path().join("data"))?
        .benchmark_run(&id)?
        .context("REST run not stored")?;
    assert_eq!(stored.state, "succeeded");

    // A collector stopped mid-benchmark deletes the run's keys before it exits.
    let (code, started) = post(
        r#"{"type":"write","duration":"60s","clients":4}"#,
        Some("s3cret-token-0123456789"),
    )?;
    assert_eq!(code, 202, "{started}");
    let path = format!(
        "/api/v1/performance/benchmark/{}",
        started["id"].as_str().unwrap_or_default()
    );
    wait_for("the second job to write", Duration::from_secs(30), || {
        let (_, v) = api(
            &collector,
            "GET",
            &path,
            None,
            Some("s3cret-token-0123456789"),
        )
        .ok()?;
        (u(&v["progress"]["done"]) > 50 && u(&v["progress"]["done"]) != u64::MAX).then_some(())
    })?;
    assert!(etcd_count(&cluster, "/etcd-monitor-bench/")? > 0);
    let status = collector.process.terminate(Duration::from_secs(60))?;
    assert!(
        status.success(),
        "collector exited with {status}: {}",
        tail(&collector.log_text(), 20)
    );
    assert_eq!(etcd_count(&cluster, "/etcd-monitor-bench/")?, 0);
    Ok(())
}
