//! The REST admin API (`/api/v1/admin/…`), its audit trail and automatic defragmentation,
//! against real 3-member etcd clusters and the real collector binary. Orders and sizes are
//! proven from the members' own status, not from our reports.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use anyhow::Context;
use etcd_monitor_tests::{ClusterOptions, CollectorProcess, EtcdCluster, http, wait_for};
use serde_json::Value;

use crate::{
    common::{start_collector, tail},
    defrag::{DropWatcher, db_sizes, fragment, member_id_hex},
};

const ADMIN: &str = "admin-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";

/// `--admin-token-file=ops=…` and `--viewer-token-file=grafana=…` (mode 600).
fn token_flags(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut flags = Vec::new();
    for (flag, name, secret) in [
        ("--admin-token-file", "ops", ADMIN),
        ("--viewer-token-file", "grafana", VIEWER),
    ] {
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, secret)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        flags.push(format!("{flag}={name}={}", file.display()));
    }
    Ok(flags)
}

fn collector(
    dir: &Path,
    cluster: &EtcdCluster,
    extra: &[&str],
) -> anyhow::Result<CollectorProcess> {
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let mut args: Vec<String> = vec![
        endpoints,
        "--health-check-interval=1s".into(),
        "--metrics-interval=1s".into(),
        "--dial-timeout=3s".into(),
        // No write probe: a NOSPACE cluster must see no writes but ours.
        "--probe-write=false".into(),
    ];
    args.extend(token_flags(dir)?);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    start_collector(dir, &refs)
}

fn call(
    c: &CollectorProcess,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<http::Response> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http::request_with(method, &format!("{}{path}", c.url), body, &headers)
}

/// Starts an operation as `ops` and returns the job id (202 required).
fn start_op(c: &CollectorProcess, path: &str, body: &str) -> anyhow::Result<String> {
    let r = call(c, "POST", path, Some(body), Some(ADMIN))?;
    anyhow::ensure!(
        r.status == 202,
        "POST {path} {body}: {} {}",
        r.status,
        r.body
    );
    Ok(r.json()?["id"].as_str().context("id")?.to_string())
}

/// Polls the job until it is no longer running.
fn finished(c: &CollectorProcess, id: &str) -> anyhow::Result<Value> {
    let result = wait_for("admin job finished", Duration::from_secs(240), || {
        let r = call(
            c,
            "GET",
            &format!("/api/v1/admin/jobs/{id}"),
            None,
            Some(VIEWER),
        )
        .ok()?;
        let v = r.json().ok()?;
        (v["state"] != "running").then_some(v)
    });
    result.map_err(|e| anyhow::anyhow!("{e}\ncollector log:\n{}", tail(&c.log_text(), 40)))
}

fn succeeded(c: &CollectorProcess, path: &str, body: &str) -> anyhow::Result<Value> {
    let id = start_op(c, path, body)?;
    let job = finished(c, &id)?;
    anyhow::ensure!(job["state"] == "success", "{path} {body}: {job:#}");
    Ok(job)
}

/// A sample from `/metrics` (read with the viewer token: viewer tokens close reads).
fn metric(c: &CollectorProcess, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let r = call(c, "GET", "/metrics", None, Some(VIEWER)).ok()?;
    http::prom_sum(&r.body, name, labels)
}

/// The audit records (viewer token), newest first.
fn audit(c: &CollectorProcess) -> anyhow::Result<Vec<Value>> {
    let r = call(c, "GET", "/api/v1/audit?limit=50", None, Some(VIEWER))?;
    anyhow::ensure!(r.status == 200, "audit: {} {}", r.status, r.body);
    Ok(r.json()?["records"].as_array().cloned().unwrap_or_default())
}

#[test]
fn admin_rest_needs_the_role_runs_rolling_defrag_leader_last_and_audits_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = EtcdCluster::start3()?;
    fragment(&cluster)?;
    let c = collector(dir.path(), &cluster, &[])?;
    let body = r#"{"if_fragmented":"45%,1MB"}"#;

    // Without a token 401, with the viewer token 403; nothing starts.
    let r = call(&c, "POST", "/api/v1/admin/defrag", Some(body), None)?;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(&c, "POST", "/api/v1/admin/defrag", Some(body), Some(VIEWER))?;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(call(&c, "GET", "/api/v1/audit", None, None)?.status, 401);
    // Bad input: 400 naming the field.
    for (path, bad, field) in [
        (
            "/api/v1/admin/defrag",
            r#"{"if_fragmented":"lots"}"#,
            "if_fragmented",
        ),
        ("/api/v1/admin/defrag", r#"{"bogus":1}"#, "bogus"),
        ("/api/v1/admin/compact", r#"{"retain":0}"#, "retain"),
        ("/api/v1/admin/compact", r#"{"physical":true}"#, "revision"),
        ("/api/v1/admin/move-leader", r#"{"to":"xyz"}"#, "to"),
        ("/api/v1/admin/member/remove", r#"{"id":""}"#, "id"),
    ] {
        let r = call(&c, "POST", path, Some(bad), Some(ADMIN))?;
        assert_eq!(r.status, 400, "{path} {bad}: {}", r.body);
        assert!(r.body.contains(field), "{path} {bad}: {}", r.body);
    }
    assert!(audit(&c)?.is_empty());

    // The admin token runs it; a second operation on the cluster meanwhile is refused (409)
    // naming the running job.
    let leader = cluster.leader_index().context("leader")?;
    let leader_hex = member_id_hex(&cluster, leader)?;
    let before = db_sizes(&cluster)?;
    let watcher = DropWatcher::start(&cluster, &before);
    let id = start_op(&c, "/api/v1/admin/defrag", body)?;
    let busy = call(
        &c,
        "POST",
        "/api/v1/admin/compact",
        Some(r#"{"retain":1}"#),
        Some(ADMIN),
    )?;
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert!(busy.body.contains(&id), "{}", busy.body);
    let job = finished(&c, &id)?;
    let drops = watcher.finish();
    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["actor"], "ops");

    // Leader last, from the members' own status.
    assert_eq!(drops.len(), 3, "not every member shrank: {drops:?}");
    for (i, t) in &drops {
        if *i != leader {
            assert!(
                t < &drops[&leader],
                "member {i} shrank after the leader {leader}: {drops:?}"
            );
        }
    }
    let members = job["report"]["members"].as_array().context("members")?;
    assert_eq!(members.len(), 3, "{job:#}");
    assert_eq!(members[2]["id"], leader_hex.as_str());
    let after = db_sizes(&cluster)?;
    for (a, b) in after.iter().zip(&before) {
        assert!(a < b, "sizes {before:?} -> {after:?}");
    }

    // Audited: the token's name, the arguments, before/after sizes; counted.
    let records = audit(&c)?;
    let rec = records
        .iter()
        .find(|r| r["job_id"] == id.as_str())
        .with_context(|| format!("{records:#?}"))?;
    assert_eq!(rec["actor"], "ops");
    assert_eq!(rec["op"], "defrag");
    assert_eq!(rec["result"], "success");
    assert_eq!(rec["args"]["if_fragmented"]["min_bytes"], 1_000_000);
    assert!(rec["finished_ms"].as_u64() >= rec["started_ms"].as_u64());
    let size = |side: &str, i: usize| rec[side]["members"][i]["db_size"].as_i64().unwrap_or(0);
    for i in 0..3 {
        assert!(size("after", i) < size("before", i), "{rec:#}");
    }
    assert_eq!(
        metric(
            &c,
            "etcdmon_admin_operations_total",
            &[("op", "defrag"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&c, "etcdmon_admin_operations_refused_busy_total", &[]),
        Some(1.0)
    );
    Ok(())
}

#[test]
fn compact_disarm_and_defrag_over_rest_recover_nospace_and_a_snapshot_downloads()
-> anyhow::Result<()> {
    let quota = 8 * 1024 * 1024;
    let cluster = EtcdCluster::start(ClusterOptions {
        quota_backend_bytes: Some(quota),
        ..ClusterOptions::default()
    })?;
    let mut round = 0;
    while cluster.etcdctl(&["alarm", "list"])?.trim().is_empty() {
        round += 1;
        anyhow::ensure!(round < 200, "no NOSPACE after {round} rounds");
        if cluster.put_many("/fill/", 16, 64 * 1024).is_err() {
            break;
        }
    }
    wait_for("NOSPACE alarm", Duration::from_secs(20), || {
        cluster
            .etcdctl(&["alarm", "list"])
            .ok()
            .filter(|a| a.contains("NOSPACE"))
            .map(|_| ())
    })?;
    let before = db_sizes(&cluster)?;
    let dir = tempfile::tempdir()?;
    let c = collector(dir.path(), &cluster, &[])?;

    // A rolling defrag refuses under the alarm, and says why (audited as refused).
    let id = start_op(&c, "/api/v1/admin/defrag", "{}")?;
    let refused = finished(&c, &id)?;
    assert_eq!(refused["state"], "refused", "{refused:#}");
    assert!(
        refused["error"].as_str().unwrap_or("").contains("NOSPACE"),
        "{refused:#}"
    );

    // compact → disarm → defrag, each a job.
    let compacted = succeeded(&c, "/api/v1/admin/compact", r#"{"retain":5}"#)?;
    assert!(
        compacted["report"]["compacted_to"].as_i64().is_some(),
        "{compacted:#}"
    );
    let disarmed = succeeded(&c, "/api/v1/admin/alarm/disarm", "")?;
    assert!(
        disarmed["report"]["disarmed"]
            .to_string()
            .contains("NOSPACE"),
        "{disarmed:#}"
    );
    assert!(disarmed["before"]["alarms"].to_string().contains("NOSPACE"));
    assert_eq!(disarmed["after"]["alarms"], serde_json::json!([]));
    succeeded(&c, "/api/v1/admin/defrag", "{}")?;
    assert!(cluster.etcdctl(&["alarm", "list"])?.trim().is_empty());
    cluster.etcdctl(&["put", "/after", "x"])?;
    let after = db_sizes(&cluster)?;
    for (a, b) in after.iter().zip(&before) {
        assert!(a < b, "database did not shrink: {before:?} -> {after:?}");
    }
    let ops: Vec<String> = audit(&c)?
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["op"].as_str().unwrap_or(""),
                r["result"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            "defrag:success",
            "alarm_disarm:success",
            "compact:success",
            "defrag:refused"
        ]
    );
    assert_eq!(
        metric(
            &c,
            "etcdmon_admin_operations_total",
            &[("op", "defrag"), ("result", "refused")]
        ),
        Some(1.0)
    );

    // Snapshot into the data dir, listed, downloaded (admin only), read by etcdctl.
    let snap = succeeded(&c, "/api/v1/admin/snapshot", r#"{"cluster":"default"}"#)?;
    let url = snap["report"]["download_url"]
        .as_str()
        .context("download_url")?
        .to_string();
    let list = call(&c, "GET", "/api/v1/admin/snapshots", None, Some(ADMIN))?.json()?;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(call(&c, "GET", &url, None, Some(VIEWER))?.status, 403);
    let file = dir.path().join("downloaded.db");
    let status = Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&file)
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .arg(format!("{}{url}", c.url))
        .status()?;
    assert!(status.success(), "download failed");
    let meta_size = snap["report"]["meta"]["size"].as_u64().context("size")?;
    assert_eq!(std::fs::metadata(&file)?.len(), meta_size);
    let st: Value = serde_json::from_str(
        cluster
            .etcdctl(&["-w", "json", "snapshot", "status", &file.to_string_lossy()])?
            .trim(),
    )?;
    assert!(st["totalKey"].as_u64().is_some_and(|n| n > 0), "{st}");
    assert!(
        st["revision"].as_i64() >= snap["report"]["meta"]["revision"].as_i64(),
        "{st} vs {snap:#}"
    );
    Ok(())
}

#[test]
fn auto_defrag_holds_while_an_alert_fires_and_runs_in_its_window() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start3()?;
    let dir = tempfile::tempdir()?;
    let auto = [
        "--auto-defrag=45%,1MB",
        "--auto-defrag-window=00:00-24:00",
        "--auto-defrag-interval=1s",
    ];

    // A rule that fires whenever members are up: no automatic run may start.
    let firing = dir.path().join("firing.yml");
    std::fs::write(
        &firing,
        "include_defaults: false\nrules:\n  - name: AlwaysFiring\n    severity: warning\n    expr: member_up == 1\n",
    )?;
    let held_dir = dir.path().join("held");
    std::fs::create_dir_all(&held_dir)?;
    let rules = format!("--rules={}", firing.display());
    let mut args = auto.to_vec();
    args.push(&rules);
    let held = collector(&held_dir, &cluster, &args)?;
    wait_for("the alert fires", Duration::from_secs(60), || {
        let r = call(&held, "GET", "/api/v1/alerts", None, Some(VIEWER)).ok()?;
        r.body.contains("\"firing\"").then_some(())
    })?;
    // Fragment only now, so that no check before the alert fired could have started a run.
    fragment(&cluster)?;
    let sizes = db_sizes(&cluster)?;
    let held_count = |c: &CollectorProcess| {
        metric(
            c,
            "etcdmon_auto_defrag_checks_total",
            &[("outcome", "alert_firing")],
        )
        .unwrap_or(0.0)
    };
    let base = held_count(&held);
    wait_for("checks held by the alert", Duration::from_secs(60), || {
        (held_count(&held) >= base + 3.0).then_some(())
    })?;
    assert_eq!(
        metric(
            &held,
            "etcdmon_auto_defrag_checks_total",
            &[("outcome", "started")]
        ),
        None,
        "{}",
        tail(&held.log_text(), 30)
    );
    assert!(audit(&held)?.is_empty());
    drop(held);
    for (a, b) in db_sizes(&cluster)?.iter().zip(&sizes) {
        assert!(a >= b, "a member was defragmented while an alert fired");
    }

    // No alert: it runs in its window, the rolling code, audited as auto-defrag.
    let quiet = dir.path().join("quiet.yml");
    std::fs::write(
        &quiet,
        "include_defaults: false\nrules:\n  - name: NeverFiring\n    severity: warning\n    expr: member_up == 2\n",
    )?;
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir)?;
    let rules = format!("--rules={}", quiet.display());
    let mut args = auto.to_vec();
    args.push(&rules);
    let runner = collector(&run_dir, &cluster, &args)?;
    let rec = wait_for(
        "an automatic run finished",
        Duration::from_secs(240),
        || {
            audit(&runner)
                .ok()?
                .into_iter()
                .find(|r| r["actor"] == "auto-defrag" && r["result"] != "running")
        },
    )?;
    assert_eq!(rec["result"], "success", "{rec:#}");
    assert_eq!(rec["op"], "defrag");
    for (a, b) in db_sizes(&cluster)?.iter().zip(&sizes) {
        assert!(a < b, "not defragmented: {sizes:?}");
    }
    assert_eq!(
        metric(
            &runner,
            "etcdmon_admin_operations_total",
            &[("op", "defrag"), ("result", "success")]
        ),
        Some(1.0)
    );
    // Defragmented members are below the threshold now: later checks start nothing.
    wait_for("a below-threshold check", Duration::from_secs(60), || {
        metric(
            &runner,
            "etcdmon_auto_defrag_checks_total",
            &[("outcome", "below_threshold")],
        )
        .filter(|n| *n >= 1.0)
    })?;
    Ok(())
}
