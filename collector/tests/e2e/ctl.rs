//! `etcd-monitor ctl` against real 3-member etcd clusters, compared with etcdctl 3.4 on the same
//! cluster; the safe operations (rolling defrag, NOSPACE recovery) proven from the members' own
//! status, not from our output; snapshot save → etcdctl restore → same keys and HashKV.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::Context;
use etcd_monitor_tests::{
    ClusterOptions, EtcdCluster, free_port, http, process::ChildGuard, wait_for,
};
use serde_json::Value;

use crate::defrag::{DropWatcher, db_sizes, fragment, member_id_hex, revision};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("not JSON: {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn ctl_at(endpoints: &str, args: &[&str]) -> anyhow::Result<Out> {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .arg("ctl")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=2s")
        .args(args)
        .env_remove("ENDPOINTS")
        .output()
        .context("run etcd-monitor ctl")?;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn ctl(cluster: &EtcdCluster, args: &[&str]) -> anyhow::Result<Out> {
    ctl_at(&cluster.endpoints(), args)
}

/// Runs ctl and requires exit code 0.
fn ctl_ok(cluster: &EtcdCluster, args: &[&str]) -> anyhow::Result<Out> {
    let out = ctl(cluster, args)?;
    anyhow::ensure!(
        out.code == 0,
        "ctl {args:?} exited {}: {}{}",
        out.code,
        out.stdout,
        out.stderr
    );
    Ok(out)
}

fn etcdctl_json(cluster: &EtcdCluster, args: &[&str]) -> anyhow::Result<Value> {
    let mut a = vec!["-w", "json"];
    a.extend_from_slice(args);
    let text = cluster.etcdctl(&a)?;
    serde_json::from_str(text.trim()).with_context(|| format!("etcdctl {args:?}: {text}"))
}

/// `etcdctl endpoint status` of one member: (dbSize, revision, raftIndex).

#[test]
fn ctl_matches_etcdctl_on_the_same_cluster() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start3()?;

    // put / get: same keys, values, revisions as etcdctl reads them.
    ctl_ok(&cluster, &["put", "/p/a", "1"])?;
    ctl_ok(&cluster, &["put", "/p/b", "2"])?;
    ctl_ok(&cluster, &["put", "/p/c", "3"])?;
    cluster.etcdctl(&["put", "/p/a", "11"])?;
    for args in [
        vec!["get", "/p/", "--prefix"],
        vec!["get", "/p/a", "/p/c"],
        vec!["get", "/p/", "--prefix", "--limit=2"],
        vec!["get", "/p/", "--prefix", "--keys-only"],
        vec!["get", "/p/a", "--rev=2"],
    ] {
        let ours = ctl_ok(&cluster, &[&["-w", "json"], args.as_slice()].concat())?.json()?;
        let theirs = etcdctl_json(&cluster, &args)?;
        assert_eq!(ours["kvs"], theirs["kvs"], "{args:?}");
        assert_eq!(ours["count"], theirs["count"], "{args:?}");
        assert_eq!(ours["more"], theirs["more"], "{args:?}");
        assert_eq!(
            ours["header"]["revision"], theirs["header"]["revision"],
            "{args:?}"
        );
        assert_eq!(
            ours["header"]["cluster_id"], theirs["header"]["cluster_id"],
            "{args:?}"
        );
    }
    let counted = ctl_ok(
        &cluster,
        &["-w", "json", "get", "/p/", "--prefix", "--count-only"],
    )?
    .json()?;
    assert_eq!(
        counted["count"],
        etcdctl_json(&cluster, &["get", "/p/", "--prefix"])?["count"]
    );
    assert!(counted.get("kvs").is_none());
    let simple = ctl_ok(&cluster, &["get", "/p/", "--prefix"])?.stdout;
    assert_eq!(simple, cluster.etcdctl(&["get", "/p/", "--prefix"])?);

    // del, with its dry run first.
    let dry = ctl_ok(&cluster, &["-w", "json", "del", "/p/b", "--dry-run"])?.json()?;
    assert_eq!(dry["plan"]["matching_keys"], 1);
    assert_eq!(etcdctl_json(&cluster, &["get", "/p/b"])?["count"], 1);
    let del = ctl_ok(&cluster, &["-w", "json", "del", "/p/b"])?.json()?;
    assert_eq!(del["deleted"], 1);
    assert!(
        etcdctl_json(&cluster, &["get", "/p/b"])?
            .get("count")
            .is_none()
    );
    let dry_put = ctl_ok(&cluster, &["put", "/p/new", "x", "--dry-run"])?;
    assert!(dry_put.stdout.contains("dry-run"), "{}", dry_put.stdout);
    assert!(
        etcdctl_json(&cluster, &["get", "/p/new"])?
            .get("kvs")
            .is_none()
    );

    // txn compare-and-swap: success exits 0, a failed compare exits 3 and changes nothing.
    let ok = ctl_ok(
        &cluster,
        &[
            "-w",
            "json",
            "txn",
            "--if-value",
            "/p/a=11",
            "--then-put",
            "/p/a=cas",
        ],
    )?
    .json()?;
    assert_eq!(ok["succeeded"], true);
    let theirs = etcdctl_json(&cluster, &["get", "/p/a"])?;
    assert_eq!(theirs["kvs"][0]["value"], "Y2Fz"); // "cas"
    assert_eq!(theirs["header"]["revision"], ok["header"]["revision"]);
    let failed = ctl(
        &cluster,
        &[
            "txn",
            "--if-value",
            "/p/a=11",
            "--then-put",
            "/p/a=lost",
            "--else-get",
            "/p/a",
        ],
    )?;
    assert_eq!(failed.code, 3, "{}{}", failed.stdout, failed.stderr);
    assert!(failed.stdout.starts_with("FAILURE"), "{}", failed.stdout);
    assert_eq!(
        etcdctl_json(&cluster, &["get", "/p/a"])?["kvs"][0]["value"],
        "Y2Fz"
    );
    let create = ctl(
        &cluster,
        &[
            "txn",
            "--if-create-revision",
            "/p/absent=0",
            "--then-put",
            "/p/absent=1",
        ],
    )?;
    assert_eq!(create.code, 0, "{}", create.stderr);
    let bad = ctl(&cluster, &["txn", "--if-version", "/p/a=notanumber"])?;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--if-version"), "{}", bad.stderr);
    assert_eq!(ctl(&cluster, &["get"])?.code, 2);

    // watch from a revision: the same events etcdctl's history holds.
    let from = revision(&cluster)? + 1;
    cluster.etcdctl(&["put", "/w/x", "1"])?;
    cluster.etcdctl(&["del", "/w/x"])?;
    let w = ctl_ok(
        &cluster,
        &[
            "-w",
            "json",
            "watch",
            "/w/",
            "--prefix",
            &format!("--rev={from}"),
            "--max-events=2",
        ],
    )?;
    let events: Vec<Value> = w
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flat_map(|r| r["Events"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(events.len(), 2, "{}", w.stdout);
    assert_eq!(events[0]["kv"]["key"], "L3cveA==");
    assert_eq!(events[0]["kv"]["mod_revision"], from);
    assert_eq!(events[1]["type"], 1);
    assert_eq!(events[1]["kv"]["mod_revision"], from + 1);

    // member list: identical members.
    let sort = |v: &Value| {
        let mut m = v["members"].as_array().cloned().unwrap_or_default();
        m.sort_by_key(|x| x["ID"].as_u64());
        m
    };
    let ours = ctl_ok(&cluster, &["-w", "json", "member", "list"])?.json()?;
    let theirs = etcdctl_json(&cluster, &["member", "list"])?;
    assert_eq!(sort(&ours), sort(&theirs));
    assert_eq!(ours["header"]["cluster_id"], theirs["header"]["cluster_id"]);

    // member add (learner) / update / promote / remove, checked with etcdctl.
    let dry = ctl_ok(
        &cluster,
        &[
            "member",
            "add",
            "extra",
            "--peer-urls=http://127.0.0.1:1",
            "--learner",
            "--dry-run",
        ],
    )?;
    assert!(dry.stdout.contains("dry-run"));
    assert_eq!(sort(&etcdctl_json(&cluster, &["member", "list"])?).len(), 3);
    // etcd refuses reconfiguration until every member has been connected for 5 s.
    let added = wait_for("member add accepted", Duration::from_secs(30), || {
        ctl(
            &cluster,
            &[
                "-w",
                "json",
                "member",
                "add",
                "extra",
                "--peer-urls=http://127.0.0.1:1",
                "--learner",
            ],
        )
        .ok()
        .filter(|o| o.code == 0)
    })?
    .json()?;
    let new_id = added["member"]["ID"].as_u64().context("added ID")?;
    let listed = sort(&etcdctl_json(&cluster, &["member", "list"])?);
    let learner = listed
        .iter()
        .find(|m| m["ID"].as_u64() == Some(new_id))
        .context("learner listed")?;
    assert_eq!(learner["isLearner"], true);
    ctl_ok(
        &cluster,
        &[
            "member",
            "update",
            &format!("{new_id:x}"),
            "--peer-urls=http://127.0.0.1:2",
        ],
    )?;
    let listed = sort(&etcdctl_json(&cluster, &["member", "list"])?);
    let learner = listed
        .iter()
        .find(|m| m["ID"].as_u64() == Some(new_id))
        .context("learner listed")?;
    assert_eq!(learner["peerURLs"][0], "http://127.0.0.1:2");
    // A learner that never started is not in sync: etcd refuses, we exit 1.
    let promote = ctl(&cluster, &["member", "promote", &format!("{new_id:x}")])?;
    assert_eq!(promote.code, 1, "{}{}", promote.stdout, promote.stderr);
    ctl_ok(&cluster, &["member", "remove", &format!("{new_id:x}")])?;
    assert_eq!(
        sort(&etcdctl_json(&cluster, &["member", "list"])?),
        sort(&theirs)
    );

    // endpoint status / hashkv / health per member.
    let ours = ctl_ok(&cluster, &["-w", "json", "endpoint", "status"])?.json()?;
    let theirs = etcdctl_json(&cluster, &["endpoint", "status"])?;
    let by_member = |v: &Value| -> BTreeMap<u64, Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let s = e
                    .get("Status")
                    .or_else(|| e.get("HashKV"))
                    .cloned()
                    .unwrap_or_default();
                (s["header"]["member_id"].as_u64().unwrap_or(0), s)
            })
            .collect()
    };
    let (o, t) = (by_member(&ours), by_member(&theirs));
    assert_eq!(o.keys().collect::<Vec<_>>(), t.keys().collect::<Vec<_>>());
    for (id, s) in &o {
        for f in ["version", "leader", "raftTerm"] {
            assert_eq!(s[f], t[id][f], "{f} of {id:x}");
        }
    }
    let rev = revision(&cluster)?.to_string();
    let ours = by_member(
        &ctl_ok(
            &cluster,
            &["-w", "json", "endpoint", "hashkv", "--rev", &rev],
        )?
        .json()?,
    );
    let theirs = by_member(&etcdctl_json(
        &cluster,
        &["endpoint", "hashkv", "--rev", &rev],
    )?);
    assert_eq!(ours.len(), 3);
    for (id, h) in &ours {
        assert_eq!(h["hash"], theirs[id]["hash"], "hash of {id:x}");
    }
    let health = ctl_ok(&cluster, &["-w", "json", "endpoint", "health", "--cluster"])?.json()?;
    assert_eq!(health.as_array().map(Vec::len), Some(3));
    assert!(
        health
            .as_array()
            .into_iter()
            .flatten()
            .all(|h| h["health"] == true)
    );

    // leases: grant with ctl, read with etcdctl and the other way round.
    let granted = ctl_ok(&cluster, &["-w", "json", "lease", "grant", "600"])?.json()?;
    let id = granted["ID"].as_i64().context("lease ID")?;
    assert_eq!(granted["TTL"], 600);
    let hex_id = format!("{id:x}");
    ctl_ok(&cluster, &["put", "/l/k", "v", "--lease", &hex_id])?;
    let theirs = etcdctl_json(&cluster, &["lease", "timetolive", &hex_id, "--keys"])?;
    let ours = ctl_ok(
        &cluster,
        &["-w", "json", "lease", "timetolive", &hex_id, "--keys"],
    )?
    .json()?;
    assert_eq!(ours["id"], theirs["id"]);
    assert_eq!(ours["granted-ttl"], theirs["granted-ttl"]);
    assert_eq!(ours["keys"], theirs["keys"]);
    let diff = ours["ttl"].as_i64().unwrap_or(0) - theirs["ttl"].as_i64().unwrap_or(-100);
    assert!(diff.abs() <= 3, "ttl {} vs {}", ours["ttl"], theirs["ttl"]);
    let other = cluster.etcdctl(&["lease", "grant", "300"])?;
    let other_hex = other
        .split_whitespace()
        .nth(1)
        .context("etcdctl lease id")?
        .to_string();
    let ids = |v: &Value| -> Vec<i64> {
        let mut ids: Vec<i64> = v["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["id"].as_i64())
            .collect();
        ids.sort();
        ids
    };
    let ours = ctl_ok(&cluster, &["-w", "json", "lease", "list"])?.json()?;
    assert_eq!(
        ids(&ours),
        ids(&etcdctl_json(&cluster, &["lease", "list"])?)
    );
    assert_eq!(ids(&ours).len(), 2);
    let kept = ctl_ok(
        &cluster,
        &["-w", "json", "lease", "keep-alive", &other_hex, "--once"],
    )?
    .json()?;
    assert_eq!(kept["TTL"], 300);
    ctl_ok(&cluster, &["lease", "revoke", &hex_id])?;
    assert_eq!(
        etcdctl_json(&cluster, &["lease", "timetolive", &hex_id])?["ttl"],
        -1
    );
    assert!(
        etcdctl_json(&cluster, &["get", "/l/k"])?
            .get("kvs")
            .is_none()
    );

    // alarm list: none, as etcdctl says.
    assert!(
        ctl_ok(&cluster, &["alarm", "list"])?
            .stdout
            .trim()
            .is_empty()
    );
    assert!(cluster.etcdctl(&["alarm", "list"])?.trim().is_empty());

    // compact --retain: the old revision is gone for etcdctl too; dry run first changes nothing.
    ctl_ok(&cluster, &["compact", "--retain=2", "--dry-run"])?;
    cluster.etcdctl(&["get", "/p/a", "--rev=2"])?;
    ctl_ok(&cluster, &["compact", "--retain=2", "--physical"])?;
    assert!(cluster.etcdctl(&["get", "/p/a", "--rev=2"]).is_err());

    // move-leader: the member etcdctl then reports as leader is the one we named.
    let leader = cluster.leader_index().context("leader")?;
    let target = (leader + 1) % 3;
    let target_hex = member_id_hex(&cluster, target)?;
    ctl_ok(&cluster, &["move-leader", &target_hex, "--dry-run"])?;
    assert_eq!(cluster.leader_index(), Some(leader));
    ctl_ok(&cluster, &["move-leader", &target_hex])?;
    wait_for("leadership moved", Duration::from_secs(20), || {
        (cluster.leader_index() == Some(target)).then_some(())
    })?;
    Ok(())
}

#[test]
fn rolling_defrag_goes_leader_last_refuses_when_unhealthy_and_dry_runs() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start3()?;
    fragment(&cluster)?;
    let leader = cluster.leader_index().context("leader")?;
    let before = db_sizes(&cluster)?;
    let rev = revision(&cluster)?;

    // Dry run: the plan, leader last; revision and sizes unchanged.
    let dry = ctl_ok(
        &cluster,
        &[
            "-w",
            "json",
            "defrag",
            "--rolling",
            "--if-fragmented=45%,1MB",
            "--dry-run",
        ],
    )?
    .json()?;
    let plan = dry["plan"].as_array().context("plan")?;
    assert_eq!(plan.len(), 3);
    assert_eq!(
        plan[2]["id"],
        member_id_hex(&cluster, leader)?.as_str(),
        "{dry}"
    );
    assert!(plan.iter().all(|s| s["action"] == "defrag"), "{dry}");
    assert_eq!(dry["members"].as_array().map(Vec::len), Some(0));
    // A threshold above the database size skips every member, and says why.
    let skip = ctl_ok(
        &cluster,
        &[
            "-w",
            "json",
            "defrag",
            "--rolling",
            "--if-fragmented=45%,10GB",
            "--dry-run",
        ],
    )?
    .json()?;
    assert!(
        skip["plan"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["action"] == "skip"
                && s["reason"].as_str().is_some_and(|r| r.contains("below"))),
        "{skip}"
    );
    assert_eq!(db_sizes(&cluster)?, before);
    assert_eq!(revision(&cluster)?, rev);

    // One follower stopped: refused before anything is touched.
    let stopped = (leader + 1) % 3;
    cluster.members[stopped].signal(libc::SIGSTOP)?;
    let refused = ctl(&cluster, &["defrag", "--rolling"]);
    cluster.members[stopped].signal(libc::SIGCONT)?;
    let refused = refused?;
    assert_eq!(refused.code, 4, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(&cluster.members[stopped].name),
        "{}",
        refused.stderr
    );
    wait_for(
        "stopped member healthy again",
        Duration::from_secs(30),
        || cluster.members[stopped].healthy().then_some(()),
    )?;
    assert_eq!(
        db_sizes(&cluster)?,
        before,
        "a refused run changed a database"
    );

    // The real run: every member shrinks, the leader last, as the members' own status shows.
    let watcher = DropWatcher::start(&cluster, &before);
    let run = ctl_ok(
        &cluster,
        &[
            "-w",
            "json",
            "defrag",
            "--rolling",
            "--if-fragmented=45%,1MB",
        ],
    )?;
    let drops = watcher.finish();
    let report = run.json()?;
    assert_eq!(
        drops.len(),
        3,
        "not every member shrank: {drops:?}\n{}",
        run.stdout
    );
    for (i, t) in &drops {
        if *i != leader {
            assert!(
                t < &drops[&leader],
                "member {i} shrank after the leader {leader}: {drops:?}"
            );
        }
    }
    let members = report["members"].as_array().context("members")?;
    eprintln!(
        "rolling defrag report: {}",
        serde_json::to_string_pretty(members)?
    );
    assert_eq!(members.len(), 3);
    assert_eq!(members[2]["id"], member_id_hex(&cluster, leader)?.as_str());
    for m in members {
        assert!(
            m["db_size_after"].as_i64() < m["db_size_before"].as_i64(),
            "{m}"
        );
        assert!(m["blocked_ms"].as_u64().is_some(), "{m}");
    }
    let after = db_sizes(&cluster)?;
    for (a, b) in after.iter().zip(&before) {
        assert!(a < b, "sizes {before:?} -> {after:?}");
    }

    // --move-leader: leadership goes to a follower first; the old leader is defragmented as a
    // follower, and etcd itself reports the new leader afterwards.
    fragment(&cluster)?;
    let old_leader = cluster.leader_index().context("leader")?;
    let old_hex = member_id_hex(&cluster, old_leader)?;
    let moved = ctl_ok(
        &cluster,
        &[
            "-w",
            "json",
            "defrag",
            "--move-leader",
            "--if-fragmented=45%,1MB",
        ],
    )?
    .json()?;
    assert_eq!(moved["leader_moved"]["from"], old_hex.as_str(), "{moved}");
    let new_leader = cluster.leader_index().context("leader")?;
    assert_ne!(new_leader, old_leader);
    assert_eq!(
        moved["leader_moved"]["to"],
        member_id_hex(&cluster, new_leader)?.as_str()
    );
    let members = moved["members"].as_array().context("members")?;
    assert_eq!(members.len(), 3);
    assert_eq!(members[2]["id"], old_hex.as_str());
    Ok(())
}

#[test]
fn recover_nospace_disarms_after_compacting_and_defragmenting() -> anyhow::Result<()> {
    let quota = 8 * 1024 * 1024;
    let cluster = EtcdCluster::start(ClusterOptions {
        quota_backend_bytes: Some(quota),
        ..ClusterOptions::default()
    })?;
    // Overwrite the same few keys until the history alone exceeds the quota.
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
    assert!(
        cluster.etcdctl(&["put", "/after", "x"]).is_err(),
        "writes should fail under NOSPACE"
    );
    let before = db_sizes(&cluster)?;

    // A plain rolling defrag refuses under an alarm.
    let refused = ctl(&cluster, &["defrag", "--rolling"])?;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("NOSPACE"), "{}", refused.stderr);
    // The dry run changes nothing.
    ctl_ok(&cluster, &["recover-nospace", "--retain=5", "--dry-run"])?;
    assert!(cluster.etcdctl(&["alarm", "list"])?.contains("NOSPACE"));
    // With a quota the data cannot fit under, it refuses to disarm and says why.
    let tight = ctl(
        &cluster,
        &["recover-nospace", "--retain=5", "--quota-bytes=4096"],
    )?;
    assert_eq!(tight.code, 4, "{}{}", tight.stdout, tight.stderr);
    assert!(
        tight.stderr.contains("still at or over the quota"),
        "{}",
        tight.stderr
    );
    assert!(cluster.etcdctl(&["alarm", "list"])?.contains("NOSPACE"));

    // The real recovery, quota read from the members' /metrics.
    let out = ctl_ok(&cluster, &["-w", "json", "recover-nospace", "--retain=5"])?;
    let report = out.json()?;
    assert_eq!(report["quota"]["bytes"], quota);
    assert!(report["write_revision"].as_i64().is_some(), "{report}");
    assert!(
        cluster.etcdctl(&["alarm", "list"])?.trim().is_empty(),
        "alarm still active"
    );
    cluster.etcdctl(&["put", "/after", "x"])?;
    let after = db_sizes(&cluster)?;
    for (a, b) in after.iter().zip(&before) {
        assert!(a < b, "database did not shrink: {before:?} -> {after:?}");
    }
    // The reserved key was deleted again.
    assert!(
        etcdctl_json(&cluster, &["get", "__etcd-monitor/", "--prefix"])?
            .get("kvs")
            .is_none()
    );
    Ok(())
}

#[test]
fn snapshot_restores_to_the_same_keys_and_hash() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start3()?;
    cluster.put_many("/snap/", 400, 256)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("backup.db");
    let file_s = file.to_string_lossy().into_owned();
    let saved = ctl_ok(&cluster, &["-w", "json", "snapshot", "save", &file_s])?.json()?;
    let rev = revision(&cluster)?;
    assert_eq!(saved["revision"], rev);
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("backup.db.meta.json"),
    )?)?;
    assert_eq!(meta["revision"], rev);
    assert_eq!(meta["size"], std::fs::metadata(&file)?.len());
    ctl_ok(&cluster, &["snapshot", "verify", &file_s])?;
    // etcdctl reads the same file.
    let status: Value = serde_json::from_str(
        cluster
            .etcdctl(&["-w", "json", "snapshot", "status", &file_s])?
            .trim(),
    )?;
    assert_eq!(status["revision"], rev);

    // Restore into a fresh member and start it.
    let (client, peer) = (free_port()?, free_port()?);
    let data = dir.path().join("restored.etcd");
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", &file_s, "--name=r0"])
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--initial-cluster=r0=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .output()?;
    anyhow::ensure!(
        restore.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let mut cmd = Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string()));
    cmd.args([
        "--name=r0".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=r0=http://127.0.0.1:{peer}"),
    ]);
    let _restored = ChildGuard::spawn("etcd r0", cmd, &dir.path().join("r0.log"))?;
    let url = format!("http://127.0.0.1:{client}");
    wait_for("restored member healthy", Duration::from_secs(30), || {
        http::get(&format!("{url}/health"))
            .ok()
            .filter(|r| r.body.contains("true"))
            .map(|_| ())
    })?;

    let count = |endpoints: &str| -> anyhow::Result<Value> {
        Ok(ctl_at(
            endpoints,
            &["-w", "json", "get", "", "--from-key", "--count-only"],
        )?
        .json()?["count"]
            .clone())
    };
    assert_eq!(count(&url)?, count(&cluster.endpoints())?);
    assert_eq!(count(&url)?, 400);
    let hash = |endpoints: &str| -> anyhow::Result<Value> {
        let v = ctl_at(
            endpoints,
            &[
                "-w",
                "json",
                "endpoint",
                "hashkv",
                "--rev",
                &rev.to_string(),
            ],
        )?
        .json()?;
        Ok(v[0]["HashKV"]["hash"].clone())
    };
    assert_eq!(hash(&url)?, hash(&cluster.members[0].client_url)?);
    assert!(hash(&url)?.as_u64().is_some());

    // A damaged copy fails verification with its own exit code.
    let mut bytes = std::fs::read(&file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes)?;
    let bad = ctl(&cluster, &["snapshot", "verify", &file_s])?;
    assert_eq!(bad.code, 5, "{}", bad.stderr);
    assert!(Path::new(&file).exists());
    Ok(())
}

#[test]
fn ctl_uses_the_collectors_tls_flags() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = etcd_monitor_tests::tls::make_tls(dir.path(), "ctl")?;
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        tls: Some(tls.clone()),
        ..ClusterOptions::default()
    })?;
    let ca = format!("--ca-file={}", tls.ca_file.display());
    let cert = format!("--cert-file={}", tls.client_cert_file.display());
    let key = format!("--key-file={}", tls.client_key_file.display());
    ctl_ok(&cluster, &[&ca, &cert, &key, "put", "/tls/k", "v"])?;
    let ours = ctl_ok(&cluster, &[&ca, &cert, &key, "-w", "json", "get", "/tls/k"])?.json()?;
    assert_eq!(
        ours["kvs"],
        etcdctl_json(&cluster, &["get", "/tls/k"])?["kvs"]
    );
    // Without the client certificate the member refuses: an etcd error naming the endpoint.
    let refused = ctl(&cluster, &[&ca, "get", "/tls/k"])?;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&cluster.members[0].client_url),
        "{}",
        refused.stderr
    );
    // A certificate without its key is a usage error naming the flag.
    let usage = ctl(&cluster, &[&ca, &cert, "get", "/tls/k"])?;
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("--key-file"), "{}", usage.stderr);
    Ok(())
}
